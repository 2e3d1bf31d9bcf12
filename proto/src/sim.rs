//! A seeded simulated network with virtual time, for tests and benchmarks: latency and
//! jitter, random and burst loss, duplication, reordering, corruption, MTU drops and
//! partitions. Not part of the stable API.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::rng::Rng;

/// Impairments of the simulated network (both directions).
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// One-way base latency.
    pub latency: Duration,
    /// Extra uniform random delay up to this (reorders datagrams when large).
    pub jitter: Duration,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram starts a loss burst.
    pub burst_start: f64,
    /// Longest loss burst (datagrams).
    pub burst_len: u32,
    /// Probability a datagram is duplicated.
    pub duplicate: f64,
    /// Probability a datagram is held back by `reorder_delay` (reordering).
    pub reorder: f64,
    /// Extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// Probability a datagram has bytes flipped.
    pub corrupt: f64,
    /// Largest datagram carried; larger ones are dropped.
    pub mtu: usize,
}

impl LinkConfig {
    /// A perfect link with `latency`.
    pub fn perfect(latency: Duration) -> LinkConfig {
        LinkConfig {
            latency,
            jitter: Duration::ZERO,
            loss: 0.0,
            burst_start: 0.0,
            burst_len: 0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            corrupt: 0.0,
            mtu: 65_535,
        }
    }

    /// A hostile link drawn from `rng`.
    pub fn hostile(rng: &mut Rng, mtu: usize) -> LinkConfig {
        let latency = Duration::from_micros(5 + rng.below(2000));
        LinkConfig {
            latency,
            jitter: latency.mul_f64(rng.below(100) as f64 / 100.0),
            loss: rng.below(100) as f64 / 1000.0,
            burst_start: rng.below(10) as f64 / 1000.0,
            burst_len: 1 + rng.below(20) as u32,
            duplicate: rng.below(50) as f64 / 1000.0,
            reorder: rng.below(100) as f64 / 1000.0,
            reorder_delay: Duration::from_micros(rng.below(3000)),
            corrupt: rng.below(20) as f64 / 1000.0,
            mtu,
        }
    }
}

/// What the network did.
#[derive(Debug, Clone, Default)]
pub struct NetStats {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Lost at random or in bursts.
    pub lost: u64,
    /// Dropped for exceeding the MTU.
    pub over_mtu: u64,
    /// Dropped by a partition.
    pub partitioned: u64,
    /// Duplicated.
    pub duplicated: u64,
    /// Corrupted.
    pub corrupted: u64,
    /// Held back (reordered).
    pub reordered: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Packet {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// The simulated network: datagrams in flight ordered by arrival time.
#[derive(Debug)]
pub struct Network {
    /// Impairments.
    pub link: LinkConfig,
    rng: Rng,
    queue: BinaryHeap<Reverse<Packet>>,
    seq: u64,
    burst: u32,
    partitions: Vec<(Instant, Instant)>,
    /// Statistics.
    pub stats: NetStats,
}

impl Network {
    /// A network with `link` impairments, decisions drawn from `seed`.
    pub fn new(link: LinkConfig, seed: u64) -> Network {
        Network {
            link,
            rng: Rng::new(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            burst: 0,
            partitions: Vec::new(),
            stats: NetStats::default(),
        }
    }

    /// Drops everything sent during `[from, until)`.
    pub fn partition(&mut self, from: Instant, until: Instant) {
        self.partitions.push((from, until));
    }

    /// Datagrams in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Sends a datagram at `now`.
    pub fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.stats.sent += 1;
        if bytes.len() > self.link.mtu {
            self.stats.over_mtu += 1;
            return;
        }
        if self.partitions.iter().any(|&(a, b)| a <= now && now < b) {
            self.stats.partitioned += 1;
            return;
        }
        if self.burst > 0 {
            self.burst -= 1;
            self.stats.lost += 1;
            return;
        }
        if self.rng.chance(self.link.burst_start) {
            self.burst = self.link.burst_len.saturating_sub(1);
            self.stats.lost += 1;
            return;
        }
        if self.rng.chance(self.link.loss) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.chance(self.link.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut b = bytes.to_vec();
            if !b.is_empty() && self.rng.chance(self.link.corrupt) {
                self.stats.corrupted += 1;
                let flips = 1 + self.rng.below(3);
                for _ in 0..flips {
                    let i = self.rng.below(b.len() as u64) as usize;
                    b[i] ^= 1 << self.rng.below(8);
                }
            }
            let mut at = now + self.link.latency;
            if !self.link.jitter.is_zero() {
                at += Duration::from_nanos(self.rng.below(self.link.jitter.as_nanos() as u64 + 1));
            }
            if self.rng.chance(self.link.reorder) {
                self.stats.reordered += 1;
                at += self.link.reorder_delay;
            }
            self.seq += 1;
            self.queue.push(Reverse(Packet {
                at,
                seq: self.seq,
                from,
                to,
                bytes: b,
            }));
        }
    }

    /// Arrival time of the next datagram.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.queue.peek().map(|p| p.0.at)
    }

    /// The next datagram that has arrived by `now`: `(from, to, bytes)`.
    pub fn receive(&mut self, now: Instant) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        if self.queue.peek()?.0.at > now {
            return None;
        }
        let p = self.queue.pop()?.0;
        Some((p.from, p.to, p.bytes))
    }
}
