//! Arbitrary bytes against the decoder and against live endpoints: random datagrams and
//! mutations of real ones (bit flips, truncation, extreme field values), with and without
//! checksums. Nothing may panic, hang, or grow memory beyond the configured bounds.
//!
//! `CONDUIT_FUZZ_ITERS=<n>` scales the number of inputs.

mod proto_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conduit_proto::sim::LinkConfig;
use conduit_proto::{Config, Receiver, Rng, Sender};
use proto_common::{watchdog, Gen, Pair, RX, TX};

fn iters(default: u64) -> u64 {
    std::env::var("CONDUIT_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn random_bytes(rng: &mut Rng, max: usize) -> Vec<u8> {
    let len = rng.below(max as u64 + 1) as usize;
    (0..len).map(|_| rng.next_u32() as u8).collect()
}

/// Mutates a real datagram: flips, truncation, extension, extreme values in fields.
fn mutate(rng: &mut Rng, src: &[u8]) -> Vec<u8> {
    let mut b = src.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len() as u64) as usize;
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let n = rng.below(b.len() as u64) as usize;
                b.truncate(n);
            }
            2 => b.extend((0..rng.below(64)).map(|_| rng.next_u32() as u8)),
            3 if b.len() >= 8 => {
                // An extreme 16/32/64-bit value at an aligned offset.
                let i = (rng.below(b.len() as u64 - 7) as usize) & !1;
                let v: u64 =
                    [0, 1, u64::MAX, u64::MAX / 2, 0xFFFF, 0x8000_0000, 7][rng.below(7) as usize];
                let w = [2usize, 4, 8][rng.below(3) as usize].min(b.len() - i);
                b[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
            }
            4 if b.len() >= 2 => b[1] = rng.below(12) as u8,
            5 if !b.is_empty() => {
                let i = rng.below(b.len() as u64) as usize;
                b[i] = rng.next_u32() as u8;
            }
            _ => {}
        }
    }
    b
}

fn reseal(b: &mut [u8], on: bool) {
    if on && b.len() >= 16 {
        conduit_proto::frame::seal(b, true);
    }
}

#[test]
fn decoder_survives_random_bytes() {
    let _watchdog = watchdog("decoder_survives_random_bytes", 300);
    let mut rng = Rng::new(1);
    let now = Instant::now();
    for checksum in [false, true] {
        let cfg = Config {
            checksum,
            ..Config::default()
        };
        let mut rx = Receiver::new(cfg.clone(), now, 1).unwrap();
        let mut tx = Sender::new(cfg.clone(), RX, now, 2).unwrap();
        let mut buf = vec![0u8; 2048];
        for i in 0..iters(100_000) {
            let mut b = random_bytes(&mut rng, 1600);
            if b.len() >= 2 && rng.chance(0.7) {
                b[0] = 1;
                b[1] = 1 + rng.below(8) as u8;
            }
            if b.len() >= 12 && rng.chance(0.7) {
                b[8..12].copy_from_slice(&1u32.to_le_bytes());
            }
            reseal(&mut b, checksum && rng.chance(0.8));
            let t = now + Duration::from_micros(i);
            let from: SocketAddr = if rng.chance(0.5) {
                TX
            } else {
                "10.1.1.1:9".parse().unwrap()
            };
            rx.handle_datagram(t, from, &b, |_, _| {});
            tx.handle_datagram(t, if rng.chance(0.5) { RX } else { from }, &b);
            rx.handle_timeout(t);
            tx.handle_timeout(t);
            for _ in 0..64 {
                if rx.poll_transmit(t, 1, &mut buf).is_none() {
                    break;
                }
            }
            for _ in 0..64 {
                if tx.poll_transmit(t, 1, &mut buf).is_none() {
                    break;
                }
            }
            while rx.poll_event().is_some() {}
            while tx.poll_event().is_some() {}
            assert!(rx.buffered() <= cfg.window as u64);
        }
        assert!(rx.counters().dropped_total() > 0);
        assert!(tx.counters().dropped_total() > 0);
    }
}

/// Captures real datagrams of a lossy stream, then replays mutations of them into live
/// endpoints mid-stream from the right source (and re-sealed, so they pass the checksum).
#[test]
fn live_endpoints_survive_mutated_datagrams() {
    let _watchdog = watchdog("live_endpoints_survive_mutated_datagrams", 300);
    for seed in 0..iters(300_000) / 10_000 {
        let mut rng = Rng::new(seed + 100);
        for checksum in [true, false] {
            let cfg = Config {
                checksum,
                ..Config::default()
            };
            let mut link = LinkConfig::perfect(Duration::from_micros(50));
            link.loss = 0.02;
            link.jitter = Duration::from_micros(100);
            let mut pair = Pair::new(seed, cfg.clone(), cfg.clone(), link);
            let mut gen = Gen::new(seed, 0, 3000, true);
            let mut corpus: Vec<(bool, Vec<u8>)> = Vec::new();
            let mut buf = vec![0u8; 2048];
            let mut injected = 0u64;
            let start = pair.now;
            while pair.now - start < Duration::from_secs(5) {
                let _ = gen.offer(&mut pair.tx, 32);
                // Capture what both sides send, then send it on.
                while let Some(t) = pair.tx.poll_transmit(pair.now, 1, &mut buf) {
                    if corpus.len() < 512 {
                        corpus.push((true, buf[..t.len].to_vec()));
                    }
                    pair.net.send(pair.now, TX, t.destination, &buf[..t.len]);
                }
                while let Some(t) = pair.rx.poll_transmit(pair.now, 1, &mut buf) {
                    if corpus.len() < 512 {
                        corpus.push((false, buf[..t.len].to_vec()));
                    }
                    pair.net.send(pair.now, RX, t.destination, &buf[..t.len]);
                }
                if !corpus.is_empty() {
                    for _ in 0..4 {
                        let (to_rx, src) = &corpus[rng.below(corpus.len() as u64) as usize];
                        let mut m = mutate(&mut rng, src);
                        reseal(&mut m, checksum && rng.chance(0.9));
                        injected += 1;
                        if *to_rx {
                            pair.rx.handle_datagram(pair.now, TX, &m, |_, _| {});
                        } else {
                            pair.tx.handle_datagram(pair.now, RX, &m);
                        }
                    }
                }
                while pair.tx.poll_event().is_some() {}
                while pair.rx.poll_event().is_some() {}
                pair.check_bounds().unwrap();
                if !pair.advance(Some(pair.now + Duration::from_millis(1))) {
                    break;
                }
                assert!(
                    pair.steps < 5_000_000,
                    "seed {seed}: endpoint loop does not end"
                );
            }
            assert!(injected > 0);
            let c = pair.rx.counters();
            assert!(c.dropped_total() > 0, "seed {seed}: nothing dropped? {c:?}");
        }
    }
}
