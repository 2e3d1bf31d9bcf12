//! A seeded simulated network with virtual time, for tests and benchmarks: latency and
//! jitter, random and burst loss, duplication, reordering, corruption, MTU drops,
//! partitions and stalls (heavy-tailed scheduling delay). Not part of the stable API.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
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
    /// Mean time between stalls (exponential); zero: no stalls. A stall emulates the
    /// receiving process not being scheduled: a datagram that would arrive during one
    /// arrives when it ends, in order with the others held by it.
    pub stall_interval: Duration,
    /// Shortest stall: stall lengths are Pareto distributed with this scale and shape 1.5
    /// (mean three times it, a heavy tail), cut at `stall_max`.
    pub stall_min: Duration,
    /// Longest stall.
    pub stall_max: Duration,
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
            stall_interval: Duration::ZERO,
            stall_min: Duration::ZERO,
            stall_max: Duration::ZERO,
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
            stall_interval: Duration::ZERO,
            stall_min: Duration::ZERO,
            stall_max: Duration::ZERO,
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
    /// Delayed by a stall.
    pub stalled: u64,
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
    /// Stall decisions, apart from the others: a link with and without stalls loses,
    /// duplicates and delays the same datagrams otherwise.
    stalls: Stalls,
    /// Statistics.
    pub stats: NetStats,
}

impl Network {
    /// A network with `link` impairments, decisions drawn from `seed`.
    pub fn new(link: LinkConfig, seed: u64) -> Network {
        let stalls = Stalls::new(
            link.stall_interval,
            link.stall_min,
            link.stall_max,
            seed ^ 0x57A1_157A_11ED,
        );
        Network {
            link,
            rng: Rng::new(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            burst: 0,
            partitions: Vec::new(),
            stalls,
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
            if let Some(end) = self.stalled_until(now, at) {
                self.stats.stalled += 1;
                at = end;
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

    /// The end of the stall that covers arrival time `at` (`now` is the send time), if any.
    fn stalled_until(&mut self, now: Instant, at: Instant) -> Option<Instant> {
        if self.link.stall_interval.is_zero() {
            return None;
        }
        self.stalls.at(now, at)
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

/// A seeded schedule of stalls: intervals when a process is not scheduled (or a link holds
/// its datagrams), about every `interval` (exponential gaps), of Pareto lengths (scale `min`,
/// shape 1.5: mean three times `min`, a heavy tail) cut at `max`. Drawn lazily as time
/// passes; the stalls of one schedule never overlap.
#[derive(Debug)]
pub struct Stalls {
    interval: Duration,
    min: Duration,
    max: Duration,
    rng: Rng,
    /// Stalls `[start, end)` not over at the last query, in order.
    pending: VecDeque<(Instant, Instant)>,
    /// Start of the next stall to draw.
    next: Option<Instant>,
}

impl Stalls {
    /// A schedule; a zero `interval` never stalls.
    pub fn new(interval: Duration, min: Duration, max: Duration, seed: u64) -> Stalls {
        Stalls {
            interval,
            min,
            max: max.max(min),
            rng: Rng::new(seed),
            pending: VecDeque::new(),
            next: None,
        }
    }

    /// The end of the stall covering `at`, if any; `now` (at most `at`, never decreasing
    /// between calls) lets the stalls over before it be forgotten.
    pub fn at(&mut self, now: Instant, at: Instant) -> Option<Instant> {
        if self.interval.is_zero() {
            return None;
        }
        while self.pending.front().is_some_and(|s| s.1 <= now) {
            self.pending.pop_front();
        }
        let mut next = match self.next {
            Some(t) => t,
            None => now + self.gap(),
        };
        while next <= at {
            let end = next + self.length();
            self.pending.push_back((next, end));
            next = end + self.gap();
        }
        self.next = Some(next);
        self.pending
            .iter()
            .find(|s| s.0 <= at && at < s.1)
            .map(|s| s.1)
    }

    /// Exponential with mean `interval`.
    fn gap(&mut self) -> Duration {
        let u = self.uniform();
        self.interval.mul_f64(-(1.0 - u).ln())
    }

    /// Pareto with scale `min` and shape 1.5, at most `max`.
    fn length(&mut self) -> Duration {
        let u = self.uniform();
        let x = (1.0 - u).powf(-1.0 / 1.5);
        self.min.mul_f64(x.min(1e6)).min(self.max)
    }

    /// Uniform in `[0, 1)`.
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_are_seeded_bounded_and_hold_datagrams_in_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(
            Stalls::new(Duration::ZERO, ms(1), ms(2), 1).at(t0, t0 + ms(99)),
            None
        );
        let mut a = Stalls::new(ms(5), ms(1), ms(30), 7);
        let mut b = Stalls::new(ms(5), ms(1), ms(30), 7);
        let (mut stalled, mut longest) = (0, Duration::ZERO);
        for i in 0..10_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i) * 100);
            let end = a.at(now, now);
            assert_eq!(end, b.at(now, now), "same seed, same stalls");
            if let Some(end) = end {
                assert!(end > now);
                stalled += 1;
                longest = longest.max(end - now);
            }
        }
        // Mean stall 3 ms every 5 + 3 ms: about 3/8 of the time.
        assert!((2_500..5_000).contains(&stalled), "{stalled}");
        assert!(longest <= ms(30));

        let link = LinkConfig {
            stall_interval: ms(5),
            stall_min: ms(1),
            stall_max: ms(30),
            ..LinkConfig::perfect(Duration::from_micros(100))
        };
        let mut net = Network::new(link, 3);
        let (x, y) = (
            SocketAddr::from(([10, 0, 0, 1], 1)),
            SocketAddr::from(([10, 0, 0, 2], 2)),
        );
        for i in 0..10_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i) * 10);
            net.send(now, x, y, &i.to_le_bytes());
        }
        assert!(net.stats.stalled > 0);
        let mut next = 0u32;
        while let Some((_, _, b)) = net.receive(t0 + ms(1000)) {
            assert_eq!(u32::from_le_bytes(b.try_into().unwrap()), next, "in order");
            next += 1;
        }
        assert_eq!(next, 10_000);
    }
}
