//! `udp`, `udp-uring`, `udp-socket`: conduit over UDP on 127.0.0.1
//! (`udp://127.0.0.1:PORT`, with `?driver=uring|socket` for the forced
//! variants), busy-spinning, between two processes. The endpoints live in
//! [`super::conduit_api`]; this module only picks ports and URIs.

use std::net::UdpSocket;

#[cfg(feature = "conduit")]
use super::conduit_api;
use super::Channel;
use crate::error::{BenchError, Result};
use crate::latency::LatencyConfig;
use crate::report::{LatencyResult, ThroughputResult};

/// A loopback port that was free a moment ago (the kernel picks it).
fn free_port() -> Result<u16> {
    let s = UdpSocket::bind("127.0.0.1:0")
        .map_err(|e| BenchError(format!("cannot bind a UDP socket on 127.0.0.1: {e}")))?;
    Ok(s.local_addr()?.port())
}

fn uri(channel: Channel, port: u16) -> String {
    match channel {
        Channel::UdpUring => format!("udp://127.0.0.1:{port}?driver=uring"),
        Channel::UdpSocket => format!("udp://127.0.0.1:{port}?driver=socket"),
        _ => format!("udp://127.0.0.1:{port}"),
    }
}

/// Runs a conduit UDP latency test.
///
/// # Errors
/// See [`conduit_api::latency`].
pub fn latency(channel: Channel, cfg: &LatencyConfig) -> Result<LatencyResult> {
    let a2b = uri(channel, free_port()?);
    let b2a = uri(channel, free_port()?);
    conduit_api::latency(channel, cfg, &a2b, &b2a)
}

/// Options of the throughput runs: batch for up to 50 µs into datagrams of up
/// to 60 KiB (loopback's MTU is 64 KiB) within a 16 MiB window. With the
/// defaults (`linger=0`) every offer is sent at once, one datagram per
/// message, which is right for latency and wrong for bulk transfer.
pub const THROUGHPUT_OPTIONS: &str = "linger=50us&window=16m&mtu=60k";

/// Runs a conduit UDP one-way throughput test (sender in another process),
/// with [`THROUGHPUT_OPTIONS`].
///
/// # Errors
/// See [`conduit_api::throughput`].
pub fn throughput(channel: Channel, size: usize, messages: u64) -> Result<ThroughputResult> {
    let base = uri(channel, free_port()?);
    let sep = if base.contains('?') { '&' } else { '?' };
    let uri = format!("{base}{sep}{THROUGHPUT_OPTIONS}");
    conduit_api::throughput(channel, size, messages, &uri)
}
