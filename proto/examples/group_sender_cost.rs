//! The group sender's own work per message with 1 and with 4 receivers, on a lossless
//! in-memory network: only the time spent inside the sender's calls (offer, poll_transmit,
//! handle_datagram, handle_timeout) is counted. A figure for comparing changes of the group
//! path, not a benchmark of the machine.
//!
//! `cargo run --release -p conduit-proto --example group_sender_cost [MESSAGES]`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conduit_proto::{Config, OfferError, Receiver, Sender};

fn run(n: usize, total: u64) -> (Duration, u64) {
    let group: SocketAddr = "239.1.2.3:7000".parse().unwrap();
    let sender: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let rx_addr = |i: usize| SocketAddr::from(([10, 0, 1, 1 + i as u8], 7000));
    let mut now = Instant::now();
    let mut tx = Sender::new(Config::default(), group, now, 1).unwrap();
    let mut rxs: Vec<Receiver> = (0..n)
        .map(|i| Receiver::new(Config::default(), now, 100 + i as u64).unwrap())
        .collect();
    let mut buf = vec![0u8; 64 * 1500];
    let mut rbuf = vec![0u8; 1500];
    let mut spent = Duration::ZERO;
    let mut statuses = 0u64;
    let mut seq = 0u64;
    let mut got = vec![0u64; n];
    let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let mut up: Vec<(usize, Vec<u8>)> = Vec::new();
    while got.iter().any(|&g| g < total) {
        let t0 = Instant::now();
        while seq < total {
            match tx.offer(1, &seq.to_le_bytes()) {
                Ok(_) => seq += 1,
                Err(OfferError::BackPressured | OfferError::NotConnected) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        if tx.poll_timeout().is_some_and(|t| t <= now) {
            tx.handle_timeout(now);
        }
        while let Some(t) = tx.poll_transmit(now, 16, &mut buf) {
            for d in buf[..t.len].chunks(t.segment_size) {
                out.push((t.destination, d.to_vec()));
            }
        }
        while tx.poll_event().is_some() {}
        spent += t0.elapsed();
        for (to, d) in out.drain(..) {
            for (i, rx) in rxs.iter_mut().enumerate() {
                if to == group || to == rx_addr(i) {
                    rx.handle_datagram(now, sender, &d, |_, _| got[i] += 1);
                }
            }
        }
        for (i, rx) in rxs.iter_mut().enumerate() {
            if rx.poll_timeout().is_some_and(|t| t <= now) {
                rx.handle_timeout(now);
            }
            while let Some(t) = rx.poll_transmit(now, 1, &mut rbuf) {
                up.push((i, rbuf[..t.len].to_vec()));
            }
            while rx.poll_event().is_some() {}
        }
        let t0 = Instant::now();
        for (i, d) in up.drain(..) {
            statuses += 1;
            tx.handle_datagram(now, rx_addr(i), &d);
        }
        spent += t0.elapsed();
        now += Duration::from_micros(20);
    }
    (spent, statuses)
}

fn main() {
    let total: u64 = std::env::args()
        .nth(1)
        .map_or(2_000_000, |a| a.parse().expect("MESSAGES"));
    // Warm up.
    run(1, total / 10);
    for round in 0..3 {
        let (one, s1) = run(1, total);
        let (four, s4) = run(4, total);
        let per = |d: Duration| d.as_nanos() as f64 / total as f64;
        println!(
            "round {round}: sender ns/message: 1 receiver {:.1} ({s1} datagrams in), 4 receivers {:.1} ({s4} in): {:.2}x",
            per(one),
            per(four),
            per(four) / per(one)
        );
    }
}
