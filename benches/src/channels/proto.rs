//! `proto`, `proto-loss`: conduit's reliable-UDP protocol core alone, sender
//! to receiver in memory on one core (no sockets), without and with 1 %
//! random loss of datagrams in both directions.

use crate::error::{BenchError, Result};
use crate::report::ThroughputResult;
use crate::rss::{peak_rss_kib, reset_peak};

/// Seed of the loss pattern (fixed, so runs are comparable).
const SEED: u64 = 0x00C0_FFEE;

/// Runs the protocol-core throughput test with `loss` (0.0..1.0) random loss.
///
/// # Errors
/// A message was lost, duplicated or reordered.
pub fn throughput(size: usize, messages: u64, loss: f64) -> Result<ThroughputResult> {
    reset_peak();
    let r = crate::proto_harness::throughput(size, messages, loss, SEED);
    if !r.in_order || r.messages != messages {
        return Err(BenchError(format!(
            "protocol delivered {} of {messages} messages (in order: {})",
            r.messages, r.in_order
        )));
    }
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    Ok(ThroughputResult {
        channel: if loss > 0.0 { "proto-loss" } else { "proto" }.to_string(),
        size,
        messages,
        timed_messages: r.messages,
        elapsed: r.elapsed,
        rss_rx_kib: peak_rss_kib(),
        rss_tx_kib: None,
        processes: false,
        driver: None,
        extra: vec![
            ("loss_percent".to_string(), loss * 100.0),
            ("datagrams_per_sec".to_string(), r.datagrams as f64 / secs),
            ("retransmits".to_string(), r.retransmits as f64),
        ],
    })
}
