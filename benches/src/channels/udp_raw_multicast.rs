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
//!
//! `udp-raw-multicast-veth`: the same between two namespaces joined by a
//! veth pair ([`super::veth`]), each side joined and sending on its own
//! veth address, so no sender's namespace has a member of the group it
//! sends to; [`multicast_vs_unicast`] runs it interleaved with
//! `udp-raw-veth`. The sending sockets set `IP_MULTICAST_IF` and keep
//! `IP_MULTICAST_LOOP` on, as conduit's do.

use std::net::{Ipv4Addr, UdpSocket};

use super::udp_raw::{self, MAX_DATAGRAM};
use super::{ping_pair_with_peer, ping_with_peer, veth, Channel, PeerArgs};
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

/// The interface addresses of ping's and pong's sides on `channel`:
/// 127.0.0.1 for both, or the two ends of the veth pair for
/// `udp-raw-multicast-veth`.
fn ifaces(channel: Channel) -> (Ipv4Addr, Ipv4Addr) {
    if channel == Channel::UdpRawMulticastVeth {
        (veth::PING_ADDR, veth::PONG_ADDR)
    } else {
        (Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST)
    }
}

/// The bare unicast channel interleaved with `channel`.
fn unicast_of(channel: Channel) -> Channel {
    if channel == Channel::UdpRawMulticastVeth {
        Channel::UdpRawVeth
    } else {
        Channel::UdpRaw(super::Wait::Spin)
    }
}

/// A non-blocking socket bound to `group` (a port the kernel picks) and
/// joined to it on the interface of address `iface`; returns it and its
/// port.
fn join(group: Ipv4Addr, iface: Ipv4Addr) -> Result<(UdpSocket, u16)> {
    let s = UdpSocket::bind((group, 0))
        .map_err(|e| BenchError(format!("cannot bind a UDP socket on {group}: {e}")))?;
    s.join_multicast_v4(&group, &iface)
        .map_err(|e| BenchError(format!("cannot join {group} on {iface}: {e}")))?;
    s.set_nonblocking(true)?;
    let port = s.local_addr()?.port();
    Ok((s, port))
}

/// Sets `IP_MULTICAST_IF` on `s` to the interface of address `iface`, as
/// conduit's group publications do: bound to an address alone, the kernel
/// builds and frees a route on every send to a group.
fn set_multicast_if(s: &UdpSocket, iface: Ipv4Addr) -> Result<()> {
    use std::os::fd::AsRawFd;
    let req = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr {
            s_addr: u32::from_ne_bytes(iface.octets()),
        },
        imr_ifindex: 0,
    };
    // SAFETY: `req` is a live, initialised `ip_mreqn` for the duration of
    // the call, and the length passed is its size; the descriptor is
    // `s`'s, open while `s` is borrowed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            std::ptr::from_ref(&req).cast(),
            std::mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    super::os_result(rc).map_err(|e| BenchError(format!("IP_MULTICAST_IF {iface}: {e}")))
}

impl End {
    /// `rx` with a sending socket on `iface` connected to `group:port` (the
    /// peer's).
    fn connect(
        rx: UdpSocket,
        iface: Ipv4Addr,
        group: Ipv4Addr,
        port: &str,
        size: usize,
    ) -> Result<End> {
        let port: u16 = port
            .trim()
            .parse()
            .map_err(|_| BenchError(format!("the peer sent a bad port `{port}`")))?;
        let tx = UdpSocket::bind((iface, 0))?;
        set_multicast_if(&tx, iface)?;
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

/// Runs the `udp-raw-multicast` or `udp-raw-multicast-veth` latency test.
/// Call it inside the namespace ([`super::netns::run`], or
/// [`veth::run`] for the veth channel).
///
/// # Errors
/// Sockets cannot be set up, or the run failed.
pub fn latency(channel: Channel, cfg: &LatencyConfig) -> Result<LatencyResult> {
    udp_raw::check_size(cfg.size)?;
    let (iface, _) = ifaces(channel);
    let (rx, port) = join(PING_GROUP, iface)?;
    ping_with_peer(channel.name(), cfg, &port.to_string(), move |ready| {
        End::connect(rx, iface, PONG_GROUP, ready, cfg.size)
    })
}

/// Runs `udp-raw-multicast` and `udp-raw` (or `udp-raw-multicast-veth` and
/// `udp-raw-veth`) in the same two processes, alternating blocks of round
/// trips between them. Call it inside the namespace ([`super::netns::run`],
/// or [`veth::run`]). Returns (multicast, unicast); each counts about half
/// of `cfg.messages`.
///
/// # Errors
/// Sockets cannot be set up, the peer failed, or the run failed.
pub fn multicast_vs_unicast(
    channel: Channel,
    cfg: &LatencyConfig,
) -> Result<(LatencyResult, LatencyResult)> {
    udp_raw::check_size(cfg.size)?;
    let unicast = unicast_of(channel);
    let (iface, _) = ifaces(channel);
    let (ping_addr, pong_addr) = udp_raw::addrs(unicast);
    let (rx, port) = join(PING_GROUP, iface)?;
    let (sock, raw_port) = udp_raw::ping_socket_on(ping_addr, cfg.size, false)?;
    let param = format!("{port}|{raw_port}");
    ping_pair_with_peer(
        (channel.name(), unicast.name()),
        cfg,
        &param,
        move |ready| {
            let (m, u) = ready
                .split_once('|')
                .ok_or_else(|| BenchError(format!("pong sent bad ports `{ready}`")))?;
            let multicast = End::connect(rx, iface, PONG_GROUP, m, cfg.size)?;
            Ok((
                multicast,
                udp_raw::connect_ping_to(sock, pong_addr, u, cfg.size)?,
            ))
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
    let (_, iface) = ifaces(args.channel);
    let (rx, port) = join(PONG_GROUP, iface)?;
    if !pair {
        let mut end = End::connect(rx, iface, PING_GROUP, &args.param, args.size)?;
        ready(&port.to_string());
        return run_pong(&mut end, args.count);
    }
    let (m, u) = args
        .param
        .split_once('|')
        .ok_or_else(|| BenchError(format!("bad parameter `{}`", args.param)))?;
    let mut multicast = End::connect(rx, iface, PING_GROUP, m, args.size)?;
    let (ping_addr, pong_addr) = udp_raw::addrs(unicast_of(args.channel));
    let (mut unicast, raw_port) =
        udp_raw::open_pong_on((pong_addr, ping_addr), u, args.size, false)?;
    ready(&format!("{port}|{raw_port}"));
    run_pong_pair(&mut multicast, &mut unicast, args.count)
}
