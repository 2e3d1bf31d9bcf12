//! The one-way throughput loop shared by every channel.
//!
//! The sender offers `count` messages of `size` bytes as fast as the channel
//! takes them, each carrying its sequence number; the receiver checks that
//! every message arrives once, in order, with the right length, and times the
//! stream from the first message to the last.

use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};
use crate::latency::{payload_template, seq_of, stamp, Stop};
use crate::progress::Progress;
use crate::spawn::PeerWatch;

/// How long either side may make no progress before the run is declared dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The sending side of a channel.
pub trait TxEnd {
    /// Offers `msg` once; `Ok(false)` means the channel is full (or has no
    /// receiver yet) and the caller retries.
    ///
    /// # Errors
    /// The channel failed.
    fn try_send(&mut self, msg: &[u8]) -> Result<bool>;
}

/// The receiving side of a channel.
pub trait RxEnd {
    /// Polls once and calls `on_msg` with each available payload.
    ///
    /// # Errors
    /// The channel failed, or `on_msg` did.
    fn poll<F: FnMut(&[u8]) -> Result<()>>(&mut self, on_msg: F) -> Result<usize>;

    /// The I/O driver the channel used, if it has a choice (conduit UDP).
    fn driver(&self) -> Option<&'static str> {
        None
    }

    /// (datagrams, messages) received so far, for a datagram transport.
    fn datagrams(&self) -> Option<(u64, u64)> {
        None
    }
}

/// Sends `count` messages of `size` bytes.
///
/// # Errors
/// The channel failed or stayed full for [`IDLE_TIMEOUT`].
pub fn run_tx<T: TxEnd>(tx: &mut T, size: usize, count: u64) -> Result<()> {
    let mut msg = payload_template(size);
    for seq in 0..count {
        stamp(&mut msg, seq);
        let mut spins: u32 = 0;
        let mut waiting_since: Option<Instant> = None;
        while !tx.try_send(&msg)? {
            spins = spins.wrapping_add(1);
            if spins % 4096 == 0
                && waiting_since.get_or_insert_with(Instant::now).elapsed() > IDLE_TIMEOUT
            {
                return Err(BenchError(format!(
                    "sender: channel refused message {seq} for {IDLE_TIMEOUT:?}"
                )));
            }
            std::hint::spin_loop();
        }
    }
    Ok(())
}

/// Receives `count` messages of `size` bytes, in order. Returns the time from
/// the first poll that delivered anything to the last message's arrival, and
/// how many messages arrived in that time (the first batch is not counted).
///
/// # Errors
/// The channel failed, a message was lost, duplicated, reordered or had the
/// wrong length, nothing arrived for [`IDLE_TIMEOUT`], or the peer (per
/// `peer`) went away.
pub fn run_rx<R: RxEnd>(
    rx: &mut R,
    size: usize,
    count: u64,
    label: &str,
    peer: &PeerWatch,
) -> std::result::Result<(Duration, u64), Stop> {
    let mut expected: u64 = 0;
    let mut first: Option<(Instant, u64)> = None;
    let mut progress = Progress::new(label, count);
    let mut idle_polls: u32 = 0;
    let mut waiting_since: Option<Instant> = None;
    while expected < count {
        let n = rx.poll(|payload| {
            let seq = seq_of(payload, size)?;
            if seq != expected {
                return Err(BenchError(format!(
                    "receiver: expected message {expected}, got {seq}"
                )));
            }
            expected += 1;
            Ok(())
        })?;
        if n == 0 {
            idle_polls = idle_polls.wrapping_add(1);
            if idle_polls % 4096 == 0 {
                if peer.gone() {
                    return Err(Stop::PeerGone);
                }
                if waiting_since.get_or_insert_with(Instant::now).elapsed() > IDLE_TIMEOUT {
                    return Err(Stop::Failed(BenchError(format!(
                        "receiver: no message {expected} within {IDLE_TIMEOUT:?}"
                    ))));
                }
            }
            std::hint::spin_loop();
            continue;
        }
        waiting_since = None;
        if first.is_none() {
            first = Some((Instant::now(), expected));
        }
        if expected % 65_536 < n as u64 {
            progress.update(expected);
        }
    }
    progress.done();
    Ok(first.map_or((Duration::ZERO, 0), |(t, n)| (t.elapsed(), count - n)))
}
