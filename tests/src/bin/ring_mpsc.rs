//! Helper process for the multi-publisher ring tests (tests/ring_mpsc.rs).
//!
//! ```text
//! ring_mpsc publish NAME DIR ID COUNT NSUBS  # attach, wait for NSUBS subscribers,
//!                                            # send COUNT messages, exit 0
//! ring_mpsc steady NAME DIR ID [HISTORY]     # attach (a ring created with HISTORY
//!                                            # bytes of history), print "ready",
//!                                            # send paced messages until killed
//! ring_mpsc victim NAME DIR ID               # attach, print "ready", send messages
//!                                            # holding each claim a while, until killed
//! ring_mpsc subscribe NAME DIR NPUBS COUNT   # print "ready"; verify that each of
//!                                            # publishers 0..NPUBS sends 0..COUNT in
//!                                            # order, intact; print "ok", exit 0
//! ```
//!
//! A message is `[id u32][len u32][seq u64][checksum u64][stamp u64][filler]`,
//! 32 to 80 bytes; `stamp` is the wall clock in nanoseconds (comparable
//! across processes) just before the publisher commits it, which the kill
//! test uses to measure how long a committed message waits for delivery.
//! `steady` also prints `claim-wait NS` each time a claim took longer than
//! any before (from the first attempt to the claim: a dead publisher
//! holding the claim lock shows there). Every mode has a watchdog. Rings
//! have 4 publisher slots.

use conduit_ringbuf::{OfferError, Publisher, Retention, RingConfig, Subscriber};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Publisher slots of the test rings.
const PUBLISHERS: u32 = 4;

fn check(id: u32, seq: u64, len: usize, sent: u64) -> u64 {
    (seq ^ ((len as u64) << 56) ^ (u64::from(id) << 40) ^ sent.rotate_left(17))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29)
}

fn message_len(seq: u64) -> usize {
    32 + (seq % 7) as usize * 8
}

/// Wall-clock nanoseconds (the same clock in every process).
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn fill_head(id: u32, seq: u64, buf: &mut [u8]) {
    buf[..4].copy_from_slice(&id.to_le_bytes());
    let len = buf.len() as u32;
    buf[4..8].copy_from_slice(&len.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
}

fn fill_tail(id: u32, seq: u64, sent: u64, buf: &mut [u8]) {
    let sum = check(id, seq, buf.len(), sent);
    buf[16..24].copy_from_slice(&sum.to_le_bytes());
    buf[24..32].copy_from_slice(&sent.to_le_bytes());
    for (k, b) in buf[32..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(k as u8);
    }
}

/// Checks one message; returns (publisher id, sequence number).
fn verify(p: &[u8]) -> Result<(u32, u64), String> {
    if p.len() < 32 {
        return Err(format!("message of {} bytes", p.len()));
    }
    let word = |r: std::ops::Range<usize>| {
        p[r].iter()
            .rev()
            .fold(0u64, |a, b| (a << 8) | u64::from(*b))
    };
    let id = word(0..4) as u32;
    let len = word(4..8) as usize;
    let seq = word(8..16);
    let sum = word(16..24);
    let sent = word(24..32);
    if len != p.len() || len != message_len(seq) || sum != check(id, seq, len, sent) {
        return Err(format!(
            "publisher {id} message {seq}: bad length {} or checksum (torn)",
            p.len()
        ));
    }
    for (k, b) in p[32..].iter().enumerate() {
        if *b != (seq as u8).wrapping_add(k as u8) {
            return Err(format!("publisher {id} message {seq}: bad filler byte {k}"));
        }
    }
    Ok((id, seq))
}

fn watchdog(secs: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        eprintln!("ring_mpsc: watchdog fired after {secs} s");
        std::process::exit(124);
    });
}

fn config(dir: PathBuf) -> RingConfig {
    RingConfig {
        capacity: 1 << 16,
        max_message_len: 1024,
        max_subscribers: 8,
        max_publishers: PUBLISHERS,
        dir: Some(dir),
        mode: 0o600,
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn attach(name: &str, dir: PathBuf, history: u64) -> Publisher {
    let start = Instant::now();
    let retention = Retention {
        history,
        ..Default::default()
    };
    loop {
        match Publisher::create_with(name, &config(dir.clone()), &retention) {
            Ok(p) => return p,
            // The slot of a publisher killed a moment ago may still look
            // taken; the test bounds the wait with its watchdog.
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                eprintln!("ring_mpsc: attach: {e}; retrying");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => {
                eprintln!("ring_mpsc: attach: {e}");
                std::process::exit(2);
            }
        }
    }
}

/// Sends message `seq`, retrying while back-pressured; `hold` spins that
/// many iterations between the two halves of the write (inside the claim).
/// Returns how long the claim took.
fn send(p: &mut Publisher, id: u32, seq: u64, hold: u32) -> Duration {
    let len = message_len(seq);
    let t0 = Instant::now();
    loop {
        match p.try_claim(1, len) {
            Ok(mut c) => {
                let waited = t0.elapsed();
                let buf = c.as_mut_slice();
                fill_head(id, seq, buf);
                for _ in 0..hold {
                    std::hint::spin_loop();
                }
                fill_tail(id, seq, now_ns(), buf);
                c.commit();
                return waited;
            }
            Err(OfferError::BackPressured | OfferError::NotConnected) => std::thread::yield_now(),
            Err(e) => {
                eprintln!("ring_mpsc: publisher {id}: {e}");
                std::process::exit(3);
            }
        }
    }
}

fn publish(name: &str, dir: PathBuf, id: u32, count: u64, nsubs: usize) {
    watchdog(600);
    let mut p = attach(name, dir, 0);
    while p.subscriber_count() < nsubs {
        std::thread::sleep(Duration::from_millis(1));
    }
    for seq in 0..count {
        send(&mut p, id, seq, 0);
    }
    say("done");
}

fn forever(name: &str, dir: PathBuf, id: u32, victim: bool, history: u64) {
    watchdog(600);
    let mut p = attach(name, dir, history);
    say("ready");
    let mut seq = 0u64;
    let mut longest = Duration::ZERO;
    loop {
        if victim {
            // Most of the time is spent inside a claim, so that a kill lands
            // mid-claim often.
            send(&mut p, id, seq, 2000 + (seq % 5) as u32 * 1000);
        } else {
            let waited = send(&mut p, id, seq, 0);
            if waited > longest {
                longest = waited;
                say(&format!("claim-wait {}", waited.as_nanos()));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        seq += 1;
    }
}

fn subscribe(name: &str, dir: PathBuf, npubs: u32, count: u64) {
    watchdog(600);
    let mut s = Subscriber::open(name, Some(&dir)).unwrap_or_else(|e| {
        eprintln!("ring_mpsc: subscribe: {e}");
        std::process::exit(2);
    });
    say("ready");
    let mut next = vec![0u64; npubs as usize];
    let mut error = None;
    while next.iter().any(|n| *n < count) {
        let r = s.poll(
            |_, payload| {
                if error.is_some() {
                    return;
                }
                match verify(payload) {
                    Ok((id, seq)) if (id as usize) < next.len() && next[id as usize] == seq => {
                        next[id as usize] += 1;
                    }
                    Ok((id, seq)) => {
                        error = Some(format!(
                            "publisher {id}: message {seq} where {:?} was expected",
                            next.get(id as usize)
                        ))
                    }
                    Err(e) => error = Some(e),
                }
            },
            1024,
        );
        if let Some(e) = error.take() {
            eprintln!("ring_mpsc: {e}");
            std::process::exit(4);
        }
        match r {
            Ok(0) => std::thread::yield_now(),
            Ok(_) => {}
            Err(e) => {
                eprintln!("ring_mpsc: poll: {e}");
                std::process::exit(5);
            }
        }
    }
    say("ok");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or("") };
    let num = |i: usize| -> u64 { arg(i).parse().unwrap_or(0) };
    let (name, dir) = (arg(2), PathBuf::from(arg(3)));
    match arg(1) {
        "publish" => publish(name, dir, num(4) as u32, num(5), num(6) as usize),
        "steady" => forever(name, dir, num(4) as u32, false, num(5)),
        "victim" => forever(name, dir, num(4) as u32, true, 0),
        "subscribe" => subscribe(name, dir, num(4) as u32, num(5)),
        other => {
            eprintln!("ring_mpsc: unknown mode {other:?}");
            std::process::exit(1);
        }
    }
}
