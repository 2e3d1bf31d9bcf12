//! `proto`, `proto-loss`: conduit's reliable-UDP protocol core alone, sender
//! to receiver in memory on one core, without and with 1 % random loss.

use crate::error::{BenchError, Result};
use crate::report::ThroughputResult;

/// Runs the protocol-core throughput test with `loss` (0.0..1.0) random loss.
///
/// # Errors
/// Not available in this build yet.
pub fn throughput(size: usize, messages: u64, loss: f64) -> Result<ThroughputResult> {
    let _ = (size, messages, loss);
    Err(BenchError::msg(
        "not yet available: the protocol core has no in-memory benchmark entry point in this build",
    ))
}
