//! `shm`: conduit over shared memory (`shm:NAME`), busy-spinning, between two
//! processes. The endpoints live in [`super::conduit_api`]; this module only
//! names the rings.

use super::{conduit_api, unique_name, Channel};
use crate::error::Result;
use crate::latency::LatencyConfig;
use crate::report::{LatencyResult, ThroughputResult};

/// The URI of ring `name` able to carry `size`-byte messages.
fn uri(name: &str, size: usize) -> String {
    // The default ring (1 MiB, messages up to 128 KiB) fits every size up to
    // 128 KiB; bigger messages get a ring eight times their size.
    if size <= 128 * 1024 {
        format!("shm:{name}?wait=spin")
    } else {
        let cap = (size * 8).next_power_of_two();
        format!("shm:{name}?wait=spin&capacity={cap}&max_msg={size}")
    }
}

/// Runs the `shm` latency test.
///
/// # Errors
/// See [`conduit_api::latency`].
pub fn latency(cfg: &LatencyConfig) -> Result<LatencyResult> {
    let name = unique_name("shm");
    let a2b = uri(&format!("{name}-a2b"), cfg.size);
    let b2a = uri(&format!("{name}-b2a"), cfg.size);
    conduit_api::latency(Channel::Shm, cfg, &a2b, &b2a)
}

/// Runs the `shm` one-way throughput test (sender in another process).
///
/// # Errors
/// See [`conduit_api::throughput`].
pub fn throughput(size: usize, messages: u64) -> Result<ThroughputResult> {
    let name = unique_name("shm-tput");
    conduit_api::throughput(Channel::Shm, size, messages, &uri(&name, size))
}
