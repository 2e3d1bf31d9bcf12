//! `shm` and `shm-mpsc`: conduit over shared memory (`shm:NAME`), busy-spinning, between two
//! processes. The endpoints live in [`super::conduit_api`]; this module only
//! names the rings.

use super::{conduit_api, ping_pair_with_peer, unique_name, Channel, PeerArgs};
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

/// Runs `shm-mpsc` and `shm` interleaved in the same two processes
/// (blocks of [`crate::latency::PAIR_BLOCK`] round trips each in turn), so
/// that both meet the same vCPU placement: the multi-writer claim path's
/// cost against the single writer's, free of the drift between separate
/// runs. Returns (`shm-mpsc`, `shm`).
///
/// # Errors
/// See [`conduit_api::latency`].
pub fn mpsc_vs_shm(cfg: &LatencyConfig) -> Result<(LatencyResult, LatencyResult)> {
    let name = unique_name("shm-pair");
    let ends = |c: Channel| {
        let tag = if c == Channel::ShmMpsc { "m" } else { "s" };
        (
            uri(c, &format!("{name}-{tag}-a2b"), cfg.size),
            uri(c, &format!("{name}-{tag}-b2a"), cfg.size),
        )
    };
    let (m_a2b, m_b2a) = ends(Channel::ShmMpsc);
    let (s_a2b, s_b2a) = ends(Channel::Shm);
    let m_ping = conduit_api::open_ping(&m_a2b, &m_b2a, cfg.size, false)?;
    let s_ping = conduit_api::open_ping(&s_a2b, &s_b2a, cfg.size, false)?;
    let param = format!("{m_a2b}|{m_b2a}|{s_a2b}|{s_b2a}");
    let names = (Channel::ShmMpsc.name(), Channel::Shm.name());
    ping_pair_with_peer(names, cfg, &param, move |_| {
        let m_ping = conduit_api::attach(m_ping)?;
        Ok((m_ping, conduit_api::attach(s_ping)?))
    })
}

/// The pong side of [`mpsc_vs_shm`] (`param` is `A2B|B2A|A2B|B2A`,
/// `shm-mpsc` first).
///
/// # Errors
/// Bad parameter, a ring cannot be opened, or the run failed.
pub fn pong_pair(args: &PeerArgs, ready: impl FnOnce(&str)) -> Result<()> {
    conduit_api::pong_two(args, false, ready)
}

/// Runs the `shm` one-way throughput test (sender in another process).
///
/// # Errors
/// See [`conduit_api::throughput`].
pub fn throughput(channel: Channel, size: usize, messages: u64) -> Result<ThroughputResult> {
    let name = unique_name(&format!("{}-tput", channel.name()));
    conduit_api::throughput(channel, size, messages, &uri(channel, &name, size))
}
