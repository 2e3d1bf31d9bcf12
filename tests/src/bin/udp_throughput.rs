//! One-way throughput of a UDP channel over loopback: a publisher thread
//! offers COUNT 32-byte messages as fast as it can, a subscriber thread
//! polls them (checking order). Prints messages/s and, from the namespace's
//! `/proc/net/snmp`, datagrams/s (run it in a fresh network namespace,
//! `ip netns exec NS udp_throughput ...`, for exact datagram counts).
//!
//! Usage: `udp_throughput [COUNT] [OPTIONS]`, OPTIONS appended to both URIs
//! (e.g. `driver=uring&linger=20us`).

use std::thread;
use std::time::{Duration, Instant};

use conduit::{Error, Publication, Subscription};

fn udp_out_datagrams() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = s.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "OutDatagrams")?;
    values.get(i)?.parse().ok()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args
        .next()
        .map(|s| s.parse().expect("COUNT"))
        .unwrap_or(10_000_000);
    let extra = args.next().unwrap_or_default();
    let _watchdog = conduit_system_tests::watchdog("udp_throughput", 300);
    let port = conduit_system_tests::free_udp_port();
    let sub_uri = format!("udp://127.0.0.1:{port}?{extra}");
    let pub_uri = format!("udp://127.0.0.1:{port}?{extra}");
    let mut sub = Subscription::open(&sub_uri).expect("subscription");
    let (tx, rx) = std::sync::mpsc::channel();
    let publisher = thread::spawn(move || {
        let mut p = Publication::open(&pub_uri).expect("publication");
        while !p.is_connected() {
            thread::yield_now();
        }
        tx.send(()).expect("signal");
        let mut seq = 0u64;
        let mut msg = [0u8; 32];
        let mut back_pressured = 0u64;
        while seq < count {
            msg[..8].copy_from_slice(&seq.to_le_bytes());
            match p.offer(1, &msg) {
                Ok(_) => seq += 1,
                Err(Error::BackPressured) => back_pressured += 1,
                Err(e) => panic!("offer: {e}"),
            }
        }
        p.flush(Duration::from_secs(60)).expect("flush");
        (p.counters(), back_pressured)
    });
    let d0 = udp_out_datagrams();
    let mut next = 0u64;
    let mut start = None;
    let mut bad = None;
    let mut connected = false;
    while next < count {
        if !connected && rx.try_recv().is_ok() {
            connected = true;
        }
        sub.poll(
            |m| {
                let seq = u64::from_le_bytes(m.payload()[..8].try_into().expect("len"));
                if seq != next && bad.is_none() {
                    bad = Some((next, seq));
                }
                next += 1;
            },
            1 << 16,
        )
        .expect("poll");
        if let Some((want, got)) = bad {
            eprintln!(
                "udp_throughput: expected {want}, got {got}; subscriber {:?}",
                sub.counters()
            );
            std::process::exit(1);
        }
        if start.is_none() && next > 0 {
            start = Some(Instant::now());
        }
    }
    let secs = start.map(|s| s.elapsed().as_secs_f64()).unwrap_or(1e-9);
    let d1 = udp_out_datagrams();
    let (pc, bp) = publisher.join().expect("publisher");
    let sc = sub.counters();
    let rate = count as f64 / secs;
    print!(
        "udp_throughput {extra:?} driver={} msgs={count} secs={secs:.3} msgs_per_s={:.2}M",
        sc.driver.unwrap_or("-"),
        rate / 1e6
    );
    if let (Some(a), Some(b)) = (d0, d1) {
        let dg = (b - a) as f64;
        print!(
            " datagrams={} datagrams_per_s={:.0}k msgs_per_datagram={:.1}",
            b - a,
            dg / secs / 1e3,
            count as f64 / dg.max(1.0)
        );
    }
    println!(
        " retransmitted={} naks={} back_pressured={bp}",
        pc.retransmitted, sc.naks_sent
    );
}
