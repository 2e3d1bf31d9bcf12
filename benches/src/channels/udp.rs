//! `udp`, `udp-uring`, `udp-socket`: conduit over UDP on 127.0.0.1
//! (`udp://127.0.0.1:PORT`, with `?driver=uring|socket` for the forced
//! variants), busy-spinning, between two processes; `udp-block`,
//! `udp-uring-block`, `udp-socket-block`: the same with `wait=block`, each
//! subscription waiting in the kernel; `udp-aead`: `udp` with a pre-shared
//! key (`key=PATH`, a fresh 32-byte 0600 file in the temporary directory for
//! each run, removed after it), so every datagram is encrypted and
//! authenticated. The endpoints live in
//! [`super::conduit_api`]; this module picks ports and URIs, and runs a
//! conduit channel interleaved with `udp-raw` in the same two processes
//! ([`latency_vs_raw`]).

use std::io::Read;
use std::net::UdpSocket;
use std::path::PathBuf;

#[cfg(feature = "conduit")]
use super::conduit_api;
use super::{ping_pair_with_peer, udp_raw, unique_name, Channel, PeerArgs};
use crate::error::{BenchError, Result};
use crate::latency::{run_pong_pair, LatencyConfig};
use crate::report::{LatencyResult, ThroughputResult};

/// A loopback port that was free a moment ago (the kernel picks it).
fn free_port() -> Result<u16> {
    let s = UdpSocket::bind("127.0.0.1:0")
        .map_err(|e| BenchError(format!("cannot bind a UDP socket on 127.0.0.1: {e}")))?;
    Ok(s.local_addr()?.port())
}

/// The key file of a keyed run: 32 bytes from the OS random source in a
/// new file only its owner can read (conduit refuses any other), removed
/// when dropped, after both processes have opened their channels.
struct RunKey(PathBuf);

impl RunKey {
    /// A key file for `channel` when it is keyed.
    ///
    /// # Errors
    /// The random source cannot be read or the file cannot be written.
    fn for_channel(channel: Channel) -> Result<Option<RunKey>> {
        if channel != Channel::UdpAead {
            return Ok(None);
        }
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(|e| BenchError(format!("cannot read /dev/urandom: {e}")))?;
        let path = std::env::temp_dir().join(unique_name("aead.key"));
        conduit_test_util::write_key_file(&path, &key)
            .map_err(|e| BenchError(format!("cannot write key file {}: {e}", path.display())))?;
        Ok(Some(RunKey(path)))
    }
}

impl Drop for RunKey {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn uri(channel: Channel, port: u16, key: Option<&RunKey>) -> String {
    let mut options = Vec::new();
    match channel {
        Channel::UdpUring | Channel::UdpUringBlock => options.push("driver=uring".to_string()),
        Channel::UdpSocket | Channel::UdpSocketBlock => options.push("driver=socket".to_string()),
        _ => {}
    }
    if channel.blocks() {
        options.push("wait=block".to_string());
    }
    if let Some(k) = key {
        options.push(format!("key={}", k.0.display()));
    }
    if options.is_empty() {
        format!("udp://127.0.0.1:{port}")
    } else {
        format!("udp://127.0.0.1:{port}?{}", options.join("&"))
    }
}

/// Runs a conduit UDP latency test.
///
/// # Errors
/// See [`conduit_api::latency`].
pub fn latency(channel: Channel, cfg: &LatencyConfig) -> Result<LatencyResult> {
    let key = RunKey::for_channel(channel)?;
    let a2b = uri(channel, free_port()?, key.as_ref());
    let b2a = uri(channel, free_port()?, key.as_ref());
    conduit_api::latency(channel, cfg, &a2b, &b2a)
}

/// Runs conduit over UDP and the bare socket in the same wait mode
/// (`udp-raw` or `udp-raw-block`) in the same two processes, alternating
/// blocks of round trips between them
/// ([`crate::latency::run_ping_pair`]): both see the same vCPU placement
/// and the same neighbours, so their ratio does not carry the drift between
/// two separate runs. Returns (conduit, bare socket); each counts about half
/// of `cfg.messages`.
///
/// # Errors
/// As [`latency`] and [`udp_raw::latency`].
pub fn latency_vs_raw(
    channel: Channel,
    cfg: &LatencyConfig,
) -> Result<(LatencyResult, LatencyResult)> {
    let key = RunKey::for_channel(channel)?;
    let a2b = uri(channel, free_port()?, key.as_ref());
    let b2a = uri(channel, free_port()?, key.as_ref());
    let block = channel.blocks();
    let ping = conduit_api::open_ping(&a2b, &b2a, cfg.size, block)?;
    let (sock, raw_port) = udp_raw::ping_socket(cfg.size, block)?;
    let param = format!("{raw_port}|{a2b}|{b2a}");
    ping_pair_with_peer(
        (channel.name(), channel.raw_baseline().name()),
        cfg,
        &param,
        move |ready| {
            let raw = udp_raw::connect_ping(sock, ready, cfg.size)?;
            Ok((conduit_api::attach(ping)?, raw))
        },
    )
}

/// The pong side of [`latency_vs_raw`]: `param` is `RAW_PORT|A2B|B2A`.
///
/// # Errors
/// Bad parameter, a channel or socket cannot be opened, or the run failed.
pub fn pong_vs_raw(args: &PeerArgs, ready: impl FnOnce(&str)) -> Result<()> {
    let (raw_port, uris) = args
        .param
        .split_once('|')
        .ok_or_else(|| BenchError(format!("bad parameter `{}`", args.param)))?;
    let block = args.channel.blocks();
    let mut conduit = conduit_api::open_pong(uris, args.size, block)?;
    let (mut raw, port) = udp_raw::open_pong(raw_port, args.size, block)?;
    ready(&port.to_string());
    run_pong_pair(&mut conduit, &mut raw, args.count)
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
    let key = RunKey::for_channel(channel)?;
    let base = uri(channel, free_port()?, key.as_ref());
    let sep = if base.contains('?') { '&' } else { '?' };
    let uri = format!("{base}{sep}{THROUGHPUT_OPTIONS}");
    conduit_api::throughput(channel, size, messages, &uri)
}
