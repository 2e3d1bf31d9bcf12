//! The ping-pong round-trip loop shared by every channel.
//!
//! Ping writes a payload of `size` bytes whose first 8 bytes are a sequence
//! number, pong echoes it, ping checks the echoed number and records the
//! round trip in a histogram. With a fixed `rate`, each round trip is measured
//! from its *intended* send time, so a stall that delays later sends is
//! charged to them too (coordinated-omission correction).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::error::{BenchError, Result};
use crate::hist::new_histogram;
use crate::progress::Progress;
use crate::spawn::PeerWatch;

/// How long ping waits for one echo before declaring the run dead.
pub const PING_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long pong waits for the next message before giving up.
pub const PONG_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a blocking end (`udp-raw-block`, `udp-block`, ...) waits in the
/// kernel per receive call before returning empty-handed: the idle-timeout
/// and peer checks, made every 4096 empty calls, then come within seconds.
pub const BLOCK_SLICE: Duration = Duration::from_millis(1);

/// What a latency run does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyConfig {
    /// Payload bytes per message (at least 8: the sequence number).
    pub size: usize,
    /// Measured round trips.
    pub messages: u64,
    /// Round trips before measuring starts (not recorded).
    pub warmup: u64,
    /// Fixed send rate in messages per second; `None` sends back to back.
    pub rate: Option<f64>,
}

impl LatencyConfig {
    /// Round trips in total, warm-up included.
    pub fn total(&self) -> u64 {
        self.warmup + self.messages
    }
}

/// The ping side of a channel.
pub trait PingEnd {
    /// Sends `msg` (blocking/spinning until the channel accepts it).
    ///
    /// # Errors
    /// The channel failed.
    fn send(&mut self, msg: &[u8]) -> Result<()>;

    /// Polls once for the echo; returns its sequence number if one arrived.
    ///
    /// # Errors
    /// The channel failed, or the echo has the wrong length.
    fn try_recv(&mut self) -> Result<Option<u64>>;

    /// The I/O driver the channel used, if it has a choice (conduit UDP).
    fn driver(&self) -> Option<&'static str> {
        None
    }
}

/// The pong side of a channel.
pub trait PongEnd {
    /// Polls once; if a message arrived, sends it straight back and returns
    /// its sequence number.
    ///
    /// # Errors
    /// The channel failed, or the message has the wrong length.
    fn try_echo(&mut self) -> Result<Option<u64>>;
}

/// Reads the sequence number at the start of a payload, checking its length.
///
/// # Errors
/// The payload is not `size` bytes long.
pub fn seq_of(payload: &[u8], size: usize) -> Result<u64> {
    if payload.len() != size || size < 8 {
        return Err(BenchError(format!(
            "received {} bytes where {size} were sent",
            payload.len()
        )));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&payload[..8]);
    Ok(u64::from_le_bytes(b))
}

/// A payload template: a recognisable byte pattern after the sequence number.
pub fn payload_template(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// Writes `seq` into the first 8 bytes of `msg`.
pub fn stamp(msg: &mut [u8], seq: u64) {
    msg[..8].copy_from_slice(&seq.to_le_bytes());
}

/// Why [`run_ping`] or [`crate::throughput::run_rx`] stopped early.
#[derive(Debug)]
pub enum Stop {
    /// The peer process went away; ask it why.
    PeerGone,
    /// Anything else.
    Failed(BenchError),
}

impl From<BenchError> for Stop {
    fn from(e: BenchError) -> Self {
        Stop::Failed(e)
    }
}

/// Sends `msg` (stamped `seq`) and spins until its echo is back.
#[inline(always)]
fn round_trip<P: PingEnd>(
    p: &mut P,
    msg: &[u8],
    seq: u64,
    t0: Instant,
    peer: &PeerWatch,
) -> std::result::Result<(), Stop> {
    p.send(msg)?;
    let mut spins: u32 = 0;
    loop {
        if let Some(got) = p.try_recv()? {
            if got != seq {
                return Err(Stop::Failed(BenchError(format!(
                    "sequence mismatch: sent {seq}, echo carried {got}"
                ))));
            }
            return Ok(());
        }
        spins = spins.wrapping_add(1);
        if spins % 4096 == 0 {
            if peer.gone() {
                return Err(Stop::PeerGone);
            }
            if t0.elapsed() > PING_IDLE_TIMEOUT {
                return Err(Stop::Failed(BenchError(format!(
                    "no echo for message {seq} within {PING_IDLE_TIMEOUT:?}"
                ))));
            }
        }
        std::hint::spin_loop();
    }
}

/// Runs the ping side: `cfg.total()` round trips, the last `cfg.messages`
/// recorded in ns.
///
/// # Errors
/// The channel failed, an echo carried the wrong sequence number, no echo
/// came within [`PING_IDLE_TIMEOUT`], or the peer (per `peer`) went away.
pub fn run_ping<P: PingEnd>(
    p: &mut P,
    cfg: &LatencyConfig,
    label: &str,
    peer: &PeerWatch,
) -> std::result::Result<Histogram<u64>, Stop> {
    let mut hist = new_histogram()?;
    let mut msg = payload_template(cfg.size);
    let total = cfg.total();
    let interval_ns = cfg.rate.map(|r| 1e9 / r);
    let mut progress = Progress::new(label, total);
    let start = Instant::now();
    for seq in 0..total {
        let t0 = match interval_ns {
            Some(ns) => {
                let intended = start + Duration::from_nanos((seq as f64 * ns) as u64);
                while Instant::now() < intended {
                    std::hint::spin_loop();
                }
                intended
            }
            None => Instant::now(),
        };
        stamp(&mut msg, seq);
        round_trip(p, &msg, seq, t0, peer)?;
        let rtt = t0.elapsed();
        if seq >= cfg.warmup {
            hist.saturating_record(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX));
        }
        if seq % 65_536 == 0 {
            progress.update(seq);
        }
    }
    progress.done();
    Ok(hist)
}

/// Runs the pong side: echoes `total` messages, checking they arrive in order.
///
/// # Errors
/// The channel failed, a message was out of order, or nothing arrived within
/// [`PONG_IDLE_TIMEOUT`].
pub fn run_pong<P: PongEnd>(p: &mut P, total: u64) -> Result<()> {
    for expected in 0..total {
        echo_one(p, expected)?;
    }
    Ok(())
}

/// Spins until message `expected` arrived and was echoed.
#[inline(always)]
fn echo_one<P: PongEnd>(p: &mut P, expected: u64) -> Result<()> {
    let mut spins: u32 = 0;
    // Set once this message has been waited for a while: the clock is
    // only read on the slow path, never per message.
    let mut waiting_since: Option<Instant> = None;
    loop {
        if let Some(got) = p.try_echo()? {
            if got != expected {
                return Err(BenchError(format!(
                    "pong: expected message {expected}, got {got}"
                )));
            }
            return Ok(());
        }
        spins = spins.wrapping_add(1);
        if spins % 4096 == 0
            && waiting_since.get_or_insert_with(Instant::now).elapsed() > PONG_IDLE_TIMEOUT
        {
            return Err(BenchError(format!(
                "pong: no message {expected} within {PONG_IDLE_TIMEOUT:?}"
            )));
        }
        std::hint::spin_loop();
    }
}

/// Round trips per block in an interleaved run ([`run_ping_pair`]): small
/// enough that both channels see the same machine state (vCPU placement,
/// neighbours' load), large enough that switching costs little.
pub const PAIR_BLOCK: u64 = 1000;

/// Whether round trip `seq` of an interleaved run goes over the second
/// channel: blocks of [`PAIR_BLOCK`] alternate, the first channel first.
pub fn pair_uses_b(seq: u64) -> bool {
    (seq / PAIR_BLOCK) % 2 == 1
}

/// Runs two channels in the same pair of processes, alternating blocks of
/// [`PAIR_BLOCK`] round trips (A, B, A, ...): `cfg.total()` round trips in
/// all, the last `cfg.messages` recorded, each in its channel's histogram.
/// Back to back only (`cfg.rate` is not used).
///
/// # Errors
/// As [`run_ping`].
pub fn run_ping_pair<A: PingEnd, B: PingEnd>(
    a: &mut A,
    b: &mut B,
    cfg: &LatencyConfig,
    label: &str,
    peer: &PeerWatch,
) -> std::result::Result<(Histogram<u64>, Histogram<u64>), Stop> {
    let mut hist_a = new_histogram()?;
    let mut hist_b = new_histogram()?;
    let mut msg = payload_template(cfg.size);
    let total = cfg.total();
    let mut progress = Progress::new(label, total);
    for seq in 0..total {
        stamp(&mut msg, seq);
        let on_b = pair_uses_b(seq);
        let t0 = Instant::now();
        if on_b {
            round_trip(b, &msg, seq, t0, peer)?;
        } else {
            round_trip(a, &msg, seq, t0, peer)?;
        }
        let rtt = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if seq >= cfg.warmup {
            if on_b {
                hist_b.saturating_record(rtt);
            } else {
                hist_a.saturating_record(rtt);
            }
        }
        if seq % 65_536 == 0 {
            progress.update(seq);
        }
    }
    progress.done();
    Ok((hist_a, hist_b))
}

/// The pong side of [`run_ping_pair`]: echoes `total` messages, each on the
/// channel the schedule gives it.
///
/// # Errors
/// As [`run_pong`].
#[cfg_attr(not(feature = "conduit"), allow(dead_code))]
pub fn run_pong_pair<A: PongEnd, B: PongEnd>(a: &mut A, b: &mut B, total: u64) -> Result<()> {
    run_pong_pair_from(a, b, 0, total)
}

/// [`run_pong_pair`] from round trip `first` on (the ones before it were
/// echoed already).
///
/// # Errors
/// As [`run_pong`].
#[cfg_attr(not(feature = "conduit"), allow(dead_code))]
pub fn run_pong_pair_from<A: PongEnd, B: PongEnd>(
    a: &mut A,
    b: &mut B,
    first: u64,
    total: u64,
) -> Result<()> {
    for expected in first..total {
        if pair_uses_b(expected) {
            echo_one(b, expected)?;
        } else {
            echo_one(a, expected)?;
        }
    }
    Ok(())
}
