//! `crossbeam`: crossbeam-channel between two threads of one process, what a
//! Rust program uses in-process today. Messages are `[u8; N]` arrays moved
//! through bounded channels of [`super::BUFFER_BYTES`] (the bytes of
//! conduit's default ring: 32 768 slots of 32 B); the sender spins on
//! `try_send`, the receiver on `try_recv`, and the receiver checks every
//! sequence number as conduit's runs do.

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};

use super::cpus;
use crate::error::{BenchError, Result};
use crate::hist::{Percentiles, RawHistogram};
use crate::latency::Stop;
use crate::latency::{run_ping, run_pong, seq_of, LatencyConfig, PingEnd, PongEnd};
use crate::pin;
use crate::report::{LatencyResult, ThroughputResult};
use crate::rss::{peak_rss_kib, reset_peak};
use crate::spawn::PeerWatch;
use crate::throughput::{run_rx, run_tx, RxEnd, TxEnd};

/// Slots of `N`-byte messages in the same bytes as conduit's default ring.
const fn slots<const N: usize>() -> usize {
    super::BUFFER_BYTES / N
}

/// Message sizes this channel supports (payloads are fixed-size arrays).
const SIZES: &str = "8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096";

macro_rules! by_size {
    ($size:expr, $f:ident ( $($arg:expr),* )) => {
        match $size {
            8 => $f::<8>($($arg),*),
            16 => $f::<16>($($arg),*),
            32 => $f::<32>($($arg),*),
            64 => $f::<64>($($arg),*),
            128 => $f::<128>($($arg),*),
            256 => $f::<256>($($arg),*),
            512 => $f::<512>($($arg),*),
            1024 => $f::<1024>($($arg),*),
            2048 => $f::<2048>($($arg),*),
            4096 => $f::<4096>($($arg),*),
            s => Err(BenchError(format!(
                "size {s} is not supported by crossbeam (supported: {SIZES})"
            ))),
        }
    };
}

fn to_array<const N: usize>(msg: &[u8]) -> Result<[u8; N]> {
    msg.try_into()
        .map_err(|_| BenchError(format!("message of {} bytes where {N} expected", msg.len())))
}

fn send_spin<const N: usize>(tx: &Sender<[u8; N]>, mut a: [u8; N]) -> Result<()> {
    loop {
        match tx.try_send(a) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(back)) => {
                a = back;
                std::hint::spin_loop();
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(BenchError::msg("the other thread hung up"))
            }
        }
    }
}

struct Ping<const N: usize> {
    tx: Sender<[u8; N]>,
    rx: Receiver<[u8; N]>,
}

impl<const N: usize> PingEnd for Ping<N> {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        send_spin(&self.tx, to_array::<N>(msg)?)
    }

    fn try_recv(&mut self) -> Result<Option<u64>> {
        match self.rx.try_recv() {
            Ok(a) => seq_of(&a, N).map(Some),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(BenchError::msg("pong thread hung up")),
        }
    }
}

struct Pong<const N: usize> {
    tx: Sender<[u8; N]>,
    rx: Receiver<[u8; N]>,
}

impl<const N: usize> PongEnd for Pong<N> {
    fn try_echo(&mut self) -> Result<Option<u64>> {
        match self.rx.try_recv() {
            Ok(a) => {
                let seq = seq_of(&a, N)?;
                send_spin(&self.tx, a)?;
                Ok(Some(seq))
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(BenchError::msg("ping thread hung up")),
        }
    }
}

/// Runs the `crossbeam` latency test (two threads).
///
/// # Errors
/// Unsupported size, a thread could not start, or the run failed.
pub fn latency(cfg: &LatencyConfig) -> Result<LatencyResult> {
    by_size!(cfg.size, latency_n(cfg))
}

fn latency_n<const N: usize>(cfg: &LatencyConfig) -> Result<LatencyResult> {
    reset_peak();
    // Each direction gets the bytes of a conduit ring, as `shm` has: the
    // round trips walk through them as conduit's do through its ring.
    let (tx_ab, rx_ab) = bounded::<[u8; N]>(slots::<N>());
    let (tx_ba, rx_ba) = bounded::<[u8; N]>(slots::<N>());
    let cpus = cpus();
    let total = cfg.total();
    let pong = std::thread::Builder::new()
        .name("pong".into())
        .spawn(move || -> Result<()> {
            pin::pin_optional(cpus.map(|c| c.1))?;
            let mut p = Pong {
                tx: tx_ba,
                rx: rx_ab,
            };
            run_pong(&mut p, total)
        })
        .map_err(|e| BenchError(format!("cannot start pong thread: {e}")))?;
    pin::pin_optional(cpus.map(|c| c.0))?;
    let mut ping = Ping::<N> {
        tx: tx_ab,
        rx: rx_ba,
    };
    let hist = run_ping(&mut ping, cfg, "crossbeam", &PeerWatch::none());
    // Hang up first, so a pong still waiting sees the disconnect at once.
    drop(ping);
    let pong_result = pong
        .join()
        .map_err(|_| BenchError::msg("pong thread panicked"))?;
    // A pong failure explains a ping failure (the hang-up), so report it first.
    pong_result?;
    let hist = hist.map_err(stop_error)?;
    Ok(LatencyResult {
        channel: "crossbeam".to_string(),
        size: cfg.size,
        messages: cfg.messages,
        warmup: cfg.warmup,
        rate: cfg.rate,
        pct: Percentiles::of(&hist),
        rss_ping_kib: peak_rss_kib(),
        rss_pong_kib: None,
        cpus,
        processes: false,
        driver: None,
        histogram: RawHistogram(hist),
    })
}

fn stop_error(s: Stop) -> BenchError {
    match s {
        Stop::Failed(e) => e,
        Stop::PeerGone => BenchError::msg("the other thread is gone"),
    }
}

struct Tx<const N: usize>(Sender<[u8; N]>);

impl<const N: usize> TxEnd for Tx<N> {
    fn try_send(&mut self, msg: &[u8]) -> Result<bool> {
        match self.0.try_send(to_array::<N>(msg)?) {
            Ok(()) => Ok(true),
            Err(TrySendError::Full(_)) => Ok(false),
            Err(TrySendError::Disconnected(_)) => Err(BenchError::msg("receiver hung up")),
        }
    }
}

struct Rx<const N: usize>(Receiver<[u8; N]>);

impl<const N: usize> RxEnd for Rx<N> {
    fn poll<F: FnMut(&[u8]) -> Result<()>>(&mut self, mut on_msg: F) -> Result<usize> {
        let mut n = 0;
        while n < 256 {
            match self.0.try_recv() {
                Ok(a) => {
                    on_msg(&a)?;
                    n += 1;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if n == 0 {
                        return Err(BenchError::msg("sender hung up"));
                    }
                    break;
                }
            }
        }
        Ok(n)
    }
}

/// Runs the `crossbeam` one-way throughput test (two threads).
///
/// # Errors
/// Unsupported size, a thread could not start, or the run failed.
pub fn throughput(size: usize, messages: u64) -> Result<ThroughputResult> {
    by_size!(size, throughput_n(messages))
}

fn throughput_n<const N: usize>(messages: u64) -> Result<ThroughputResult> {
    reset_peak();
    let (tx, rx) = bounded::<[u8; N]>(slots::<N>());
    let cpus = cpus();
    let sender = std::thread::Builder::new()
        .name("sender".into())
        .spawn(move || -> Result<()> {
            pin::pin_optional(cpus.map(|c| c.1))?;
            run_tx(&mut Tx::<N>(tx), N, messages)
        })
        .map_err(|e| BenchError(format!("cannot start sender thread: {e}")))?;
    pin::pin_optional(cpus.map(|c| c.0))?;
    let mut rx = Rx::<N>(rx);
    let r = run_rx(&mut rx, N, messages, "crossbeam", &PeerWatch::none());
    drop(rx);
    let sent = sender
        .join()
        .map_err(|_| BenchError::msg("sender thread panicked"))?;
    sent?;
    let (elapsed, timed) = r.map_err(stop_error)?;
    Ok(ThroughputResult {
        channel: "crossbeam".to_string(),
        size: N,
        messages,
        timed_messages: timed,
        elapsed,
        rss_rx_kib: peak_rss_kib(),
        rss_tx_kib: None,
        processes: false,
        extra: Vec::new(),
        driver: None,
    })
}
