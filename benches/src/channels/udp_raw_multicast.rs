//! `udp-raw-multicast`: two processes ping-ponging datagrams over bare
//! non-blocking sockets through one IPv4 multicast group each way, on `lo`
//! of a private network namespace ([`super::netns`]), each spinning on
//! `recv`: the kernel's floor for conduit's `udp-multicast`, as `udp-raw`
//! is for `udp`.
//!
//! Each side receives on a socket bound to its own group and port and
//! joined to the group on 127.0.0.1, and sends from a second socket
//! connected to the other side's group and port (a connected socket skips
//! the route lookup of `sendto`, as `udp-raw`'s do). [`multicast_vs_unicast`]
//! runs it interleaved with `udp-raw` in the same two processes of one
//! namespace, so their ratio is what the kernel's multicast loopback costs
//! against its unicast loopback.

use std::net::{Ipv4Addr, UdpSocket};

use super::udp_raw::{self, MAX_DATAGRAM};
use super::{ping_pair_with_peer, ping_with_peer, Channel, PeerArgs};
use crate::error::{BenchError, Result};
use crate::latency::{run_pong, run_pong_pair, seq_of, LatencyConfig, PingEnd, PongEnd};
use crate::report::LatencyResult;

/// The group ping receives on.
const PING_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 1, 1);
/// The group pong receives on.
const PONG_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 1, 2);

/// One side: the socket joined to its own group, and the one connected to
/// the other side's.
pub(crate) struct End {
    rx: UdpSocket,
    tx: UdpSocket,
    buf: Vec<u8>,
    size: usize,
}

/// A non-blocking socket bound to `group` (a port the kernel picks) and
/// joined to it on 127.0.0.1; returns it and its port.
fn join(group: Ipv4Addr) -> Result<(UdpSocket, u16)> {
    let s = UdpSocket::bind((group, 0))
        .map_err(|e| BenchError(format!("cannot bind a UDP socket on {group}: {e}")))?;
    s.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST)
        .map_err(|e| BenchError(format!("cannot join {group} on 127.0.0.1: {e}")))?;
    s.set_nonblocking(true)?;
    let port = s.local_addr()?.port();
    Ok((s, port))
}

impl End {
    /// `rx` with a sending socket connected to `group:port` (the peer's).
    fn connect(rx: UdpSocket, group: Ipv4Addr, port: &str, size: usize) -> Result<End> {
        let port: u16 = port
            .trim()
            .parse()
            .map_err(|_| BenchError(format!("the peer sent a bad port `{port}`")))?;
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        tx.set_multicast_loop_v4(true)?;
        tx.set_nonblocking(true)?;
        tx.connect((group, port))?;
        Ok(End {
            rx,
            tx,
            buf: vec![0; MAX_DATAGRAM + 1],
            size,
        })
    }

    fn recv(&mut self) -> Result<Option<u64>> {
        match udp_raw::try_recv(&self.rx, &mut self.buf)? {
            Some(n) => seq_of(&self.buf[..n], self.size).map(Some),
            None => Ok(None),
        }
    }
}

impl PingEnd for End {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        udp_raw::send_spin(&self.tx, msg)
    }

    fn try_recv(&mut self) -> Result<Option<u64>> {
        self.recv()
    }
}

impl PongEnd for End {
    fn try_echo(&mut self) -> Result<Option<u64>> {
        let Some(seq) = self.recv()? else {
            return Ok(None);
        };
        let n = self.size;
        udp_raw::send_spin(&self.tx, &self.buf[..n])?;
        Ok(Some(seq))
    }
}

/// Runs the `udp-raw-multicast` latency test. Call it inside the namespace
/// ([`super::netns::run`]).
///
/// # Errors
/// Sockets cannot be set up, or the run failed.
pub fn latency(cfg: &LatencyConfig) -> Result<LatencyResult> {
    udp_raw::check_size(cfg.size)?;
    let (rx, port) = join(PING_GROUP)?;
    ping_with_peer(
        Channel::UdpRawMulticast.name(),
        cfg,
        &port.to_string(),
        move |ready| End::connect(rx, PONG_GROUP, ready, cfg.size),
    )
}

/// Runs `udp-raw-multicast` and `udp-raw` in the same two processes of one
/// namespace, alternating blocks of round trips between them. Call it
/// inside the namespace ([`super::netns::run`]). Returns (multicast,
/// unicast); each counts about half of `cfg.messages`.
///
/// # Errors
/// Sockets cannot be set up, the peer failed, or the run failed.
pub fn multicast_vs_unicast(cfg: &LatencyConfig) -> Result<(LatencyResult, LatencyResult)> {
    udp_raw::check_size(cfg.size)?;
    let (rx, port) = join(PING_GROUP)?;
    let (sock, raw_port) = udp_raw::ping_socket(cfg.size, false)?;
    let param = format!("{port}|{raw_port}");
    ping_pair_with_peer(
        (
            Channel::UdpRawMulticast.name(),
            Channel::UdpRaw(super::Wait::Spin).name(),
        ),
        cfg,
        &param,
        move |ready| {
            let (m, u) = ready
                .split_once('|')
                .ok_or_else(|| BenchError(format!("pong sent bad ports `{ready}`")))?;
            let multicast = End::connect(rx, PONG_GROUP, m, cfg.size)?;
            Ok((multicast, udp_raw::connect_ping(sock, u, cfg.size)?))
        },
    )
}

/// The pong side of [`latency`] (`param` is ping's group port) and of
/// [`multicast_vs_unicast`] (`role` `__pong-pair`, `param` is
/// `GROUP_PORT|RAW_PORT`).
///
/// # Errors
/// Bad parameter, socket setup failed, or the run failed.
pub fn pong(args: &PeerArgs, pair: bool, ready: impl FnOnce(&str)) -> Result<()> {
    udp_raw::check_size(args.size)?;
    let (rx, port) = join(PONG_GROUP)?;
    if !pair {
        let mut end = End::connect(rx, PING_GROUP, &args.param, args.size)?;
        ready(&port.to_string());
        return run_pong(&mut end, args.count);
    }
    let (m, u) = args
        .param
        .split_once('|')
        .ok_or_else(|| BenchError(format!("bad parameter `{}`", args.param)))?;
    let mut multicast = End::connect(rx, PING_GROUP, m, args.size)?;
    let (mut unicast, raw_port) = udp_raw::open_pong(u, args.size, false)?;
    ready(&format!("{port}|{raw_port}"));
    run_pong_pair(&mut multicast, &mut unicast, args.count)
}
