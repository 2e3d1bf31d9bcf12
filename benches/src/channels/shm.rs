//! `shm` and `shm-mpsc`: conduit over shared memory (`shm:NAME`), busy-spinning, between two
//! processes. The endpoints live in [`super::conduit_api`]; this module only
//! names the rings.

use super::{conduit_api, unique_name, Channel};
use crate::error::Result;
use crate::latency::LatencyConfig;
use crate::report::{LatencyResult, ThroughputResult};

/// The URI of ring `name` able to carry `size`-byte messages; `shm-mpsc`
/// opens it for four publishers.
fn uri(channel: Channel, name: &str, size: usize) -> String {
    let extra = if channel == Channel::ShmMpsc {
        "&publishers=4"
    } else {
        ""
    };
    // The default ring (1 MiB, messages up to 128 KiB) fits every size up to
    // 128 KiB; bigger messages get a ring eight times their size.
    if size <= 128 * 1024 {
        format!("shm:{name}?wait=spin{extra}")
    } else {
        let cap = (size * 8).next_power_of_two();
        format!("shm:{name}?wait=spin&capacity={cap}&max_msg={size}{extra}")
    }
}

/// Runs the `shm` latency test.
///
/// # Errors
/// See [`conduit_api::latency`].
pub fn latency(channel: Channel, cfg: &LatencyConfig) -> Result<LatencyResult> {
    let name = unique_name(channel.name());
    let a2b = uri(channel, &format!("{name}-a2b"), cfg.size);
    let b2a = uri(channel, &format!("{name}-b2a"), cfg.size);
    conduit_api::latency(channel, cfg, &a2b, &b2a)
}

/// Runs the `shm` one-way throughput test (sender in another process).
///
/// # Errors
/// See [`conduit_api::throughput`].
pub fn throughput(channel: Channel, size: usize, messages: u64) -> Result<ThroughputResult> {
    let name = unique_name(&format!("{}-tput", channel.name()));
    conduit_api::throughput(channel, size, messages, &uri(channel, &name, size))
}
