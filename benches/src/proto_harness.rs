//! Throughput of the protocol alone: a sender and a receiver in memory on one thread, the
//! datagrams between them passed by copy, optionally lost at random. Used by `conduit-bench`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conduit_proto::{Config, Receiver, Rng, Sender};

/// Result of [`throughput`].
#[derive(Debug, Clone)]
pub struct ThroughputReport {
    /// Messages delivered.
    pub messages: u64,
    /// Wall time from the first offer to the last delivery.
    pub elapsed: Duration,
    /// Data-path datagrams sent by the sender (including retransmissions).
    pub datagrams: u64,
    /// Retransmitted datagrams.
    pub retransmits: u64,
    /// Whether every message arrived exactly once and in order.
    pub in_order: bool,
}

/// Sends `messages` messages of `msg_size` bytes (a sequence number in the first 8 bytes when
/// they fit) through a link losing each datagram with probability `loss` (both ways).
pub fn throughput(msg_size: usize, messages: u64, loss: f64, seed: u64) -> ThroughputReport {
    throughput_with(Config::default(), msg_size, messages, loss, seed)
}

/// [`throughput`] with a given configuration.
pub fn throughput_with(
    config: Config,
    msg_size: usize,
    messages: u64,
    loss: f64,
    seed: u64,
) -> ThroughputReport {
    let a: SocketAddr = ([127, 0, 0, 1], 40_001).into();
    let b: SocketAddr = ([127, 0, 0, 1], 40_002).into();
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let mut tx = Sender::new(config.clone(), b, start, seed).expect("valid config");
    let mut rx = Receiver::new(config, start, seed + 1).expect("valid config");
    let mut buf = vec![0u64; 65_536 / 8];
    let mut rbuf = vec![0u8; 65_536];
    let mut payload = vec![0u8; msg_size];
    let mut offered = 0u64;
    let mut delivered = 0u64;
    let mut in_order = true;
    let mut began = None;
    let mut now = start;
    let mut spins = 0u32;
    while delivered < messages {
        spins = spins.wrapping_add(1);
        now = Instant::now();
        if tx.is_connected() {
            if began.is_none() {
                began = Some(now);
            }
            while offered < messages {
                if msg_size >= 8 {
                    payload[..8].copy_from_slice(&offered.to_le_bytes());
                }
                if tx.offer(1, &payload).is_err() {
                    break;
                }
                offered += 1;
            }
        }
        let dbuf = zerocopy::IntoBytes::as_mut_bytes(buf.as_mut_slice());
        while let Some(t) = tx.poll_transmit(now, 1, dbuf) {
            if loss > 0.0 && rng.chance(loss) {
                continue;
            }
            rx.handle_datagram(now, a, &dbuf[..t.len], |_, p| {
                if p.len() >= 8 {
                    let seq = u64::from_le_bytes(p[..8].try_into().unwrap_or([0; 8]));
                    in_order &= seq == delivered;
                }
                delivered += 1;
            });
        }
        while let Some(t) = rx.poll_transmit(now, 1, &mut rbuf) {
            if loss > 0.0 && rng.chance(loss) {
                continue;
            }
            tx.handle_datagram(now, b, &rbuf[..t.len]);
        }
        if tx.poll_timeout().is_some_and(|t| t <= now) {
            tx.handle_timeout(now);
        }
        if rx.poll_timeout().is_some_and(|t| t <= now) {
            rx.handle_timeout(now);
        }
        while tx.poll_event().is_some() {}
        while rx.poll_event().is_some() {}
        if now.duration_since(start) > Duration::from_secs(120) {
            in_order = false;
            break;
        }
    }
    let _ = spins;
    let c = tx.counters();
    ThroughputReport {
        messages: delivered,
        elapsed: now.duration_since(began.unwrap_or(start)),
        datagrams: c.datagrams_sent,
        retransmits: c.retransmitted,
        in_order: in_order && delivered == messages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_hook_delivers_in_order() {
        let r = throughput(32, 200_000, 0.0, 1);
        assert!(r.in_order && r.messages == 200_000, "{r:?}");
        let r = throughput(32, 200_000, 0.01, 2);
        assert!(
            r.in_order && r.messages == 200_000 && r.retransmits > 0,
            "{r:?}"
        );
        let r = throughput(3000, 2_000, 0.01, 3);
        assert!(r.in_order && r.messages == 2_000, "{r:?}");
    }
}
