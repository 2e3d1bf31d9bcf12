//! Loopback ping-pong of 32-byte messages: bare std sockets (a
//! non-blocking `recv` spin loop, connected or not, and a blocking `recv`)
//! against conduit's UDP channels with either driver.
//!
//! Usage: `udp_pingpong [ROUNDS] [MODE...]`, modes: raw, raw-unconn,
//! raw-block, conduit-socket, conduit-uring (default: all, raw repeated
//! first and last to expose placement drift).

use std::net::UdpSocket;
use std::thread;
use std::time::{Duration, Instant};

const LEN: usize = 32;

fn percentiles(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize] as f64 / 1000.0;
    format!(
        "p50 {:6.2} us  p90 {:6.2}  p99 {:6.2}  p99.9 {:7.2}  max {:8.2}",
        p(0.5),
        p(0.9),
        p(0.99),
        p(0.999),
        p(1.0)
    )
}

fn raw(rounds: usize, connected: bool) -> Vec<u64> {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let aa = a.local_addr().unwrap();
    let bb = b.local_addr().unwrap();
    if connected {
        b.connect(aa).unwrap();
        a.connect(bb).unwrap();
    }
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..rounds {
            loop {
                if let Ok((n, from)) = b.recv_from(&mut buf) {
                    if connected {
                        b.send(&buf[..n]).unwrap();
                    } else {
                        b.send_to(&buf[..n], from).unwrap();
                    }
                    break;
                }
            }
        }
    });
    let mut out = Vec::with_capacity(rounds);
    let msg = [7u8; LEN];
    let mut buf = [0u8; 64];
    for _ in 0..rounds {
        let t = Instant::now();
        if connected {
            a.send(&msg).unwrap();
        } else {
            a.send_to(&msg, bb).unwrap();
        }
        loop {
            if a.recv_from(&mut buf).is_ok() {
                break;
            }
        }
        out.push(t.elapsed().as_nanos() as u64);
    }
    echo.join().unwrap();
    out
}

/// The bare-socket baseline of a blocking wait: both sides sleep in
/// `recv` on a blocking, connected socket.
fn raw_block(rounds: usize) -> Vec<u64> {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    b.connect(a.local_addr().unwrap()).unwrap();
    let timeout = Some(Duration::from_secs(10));
    a.set_read_timeout(timeout).unwrap();
    b.set_read_timeout(timeout).unwrap();
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..rounds {
            let n = b.recv(&mut buf).expect("echo: no datagram in 10 s");
            b.send(&buf[..n]).unwrap();
        }
    });
    let msg = [7u8; LEN];
    let mut buf = [0u8; 64];
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        a.send(&msg).unwrap();
        a.recv(&mut buf).expect("no reply in 10 s");
        out.push(t.elapsed().as_nanos() as u64);
    }
    echo.join().unwrap();
    out
}

/// Ping-pong through conduit's public API: two channels, each side polls
/// its subscription and offers on its publication.
fn conduit_api(rounds: usize, driver: &str) -> Vec<u64> {
    use conduit::{Publication, Subscription};
    let [pa, pb] = conduit_system_tests::free_udp_ports();
    let o = format!("driver={driver}");
    let mut sub_a = Subscription::open(&format!("udp://127.0.0.1:{pa}?{o}")).unwrap();
    let ob = o.clone();
    let echo = thread::spawn(move || {
        let mut sub_b = Subscription::open(&format!("udp://127.0.0.1:{pb}?{ob}")).unwrap();
        let mut pub_b = Publication::open(&format!("udp://127.0.0.1:{pa}?{ob}")).unwrap();
        let mut done = 0;
        let mut buf = [0u8; LEN];
        while done < rounds + 1 {
            let mut got = 0;
            while got == 0 {
                got = sub_b
                    .poll(|m| buf.copy_from_slice(&m.payload()[..LEN]), 16)
                    .unwrap();
            }
            while pub_b.offer(1, &buf).is_err() {
                sub_b.poll(|_| {}, 16).unwrap();
            }
            done += got;
        }
    });
    let mut pub_a = Publication::open(&format!("udp://127.0.0.1:{pb}?{o}")).unwrap();
    let msg = [7u8; LEN];
    // Connect both directions with one warm-up round trip.
    while pub_a.offer(1, &msg).is_err() {
        sub_a.poll(|_| {}, 16).unwrap();
    }
    while sub_a.poll(|_| {}, 16).unwrap() == 0 {
        pub_a.is_connected();
    }
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let s = Instant::now();
        while pub_a.offer(1, &msg).is_err() {}
        while sub_a.poll(|_| {}, 16).unwrap() == 0 {}
        out.push(s.elapsed().as_nanos() as u64);
    }
    echo.join().unwrap();
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args
        .next()
        .map(|s| s.parse().expect("ROUNDS"))
        .unwrap_or(50_000);
    let mut modes: Vec<String> = args.collect();
    if modes.is_empty() {
        modes = [
            "raw",
            "conduit-socket",
            "raw-unconn",
            "conduit-uring",
            "raw",
            "raw-block",
            "raw",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
    }
    for m in modes {
        let v = match m.as_str() {
            "raw" => raw(rounds, true),
            "raw-unconn" => raw(rounds, false),
            "raw-block" => raw_block(rounds),
            "conduit-socket" => conduit_api(rounds, "socket"),
            "conduit-uring" if !conduit::udp::uring_available() => {
                println!("{m:13} skipped: io_uring unavailable");
                continue;
            }
            "conduit-uring" => conduit_api(rounds, "uring"),
            other => panic!("unknown mode {other}"),
        };
        let skip = v.len() / 10;
        println!("{m:13} {}", percentiles(v[skip..].to_vec()));
    }
}
