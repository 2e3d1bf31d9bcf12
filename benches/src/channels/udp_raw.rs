//! `udp-raw`: two processes ping-ponging datagrams over plain non-blocking UDP
//! sockets on 127.0.0.1, each spinning on `recv` — the kernel's limit for UDP
//! on this machine, the baseline for conduit's UDP channels. `udp-raw-block`:
//! the same with blocking sockets, each side asleep in `recv` until a
//! datagram arrives — the baseline for conduit's blocking (`wait=block`)
//! channels. `udp-raw-veth`: `udp-raw` between two network namespaces
//! joined by a veth pair ([`super::veth`]), ping on [`super::veth::PING_ADDR`],
//! pong on [`super::veth::PONG_ADDR`].

use std::io::ErrorKind;
use std::net::{Ipv4Addr, UdpSocket};

use super::{ping_with_peer, veth, Channel, PeerArgs};
use crate::error::{BenchError, Result};
use crate::latency::{run_pong, seq_of, LatencyConfig, PingEnd, PongEnd, BLOCK_SLICE};
use crate::report::LatencyResult;

/// Largest UDP payload over IPv4.
pub(crate) const MAX_DATAGRAM: usize = 65_507;

/// The addresses of ping's and pong's sockets on `channel`: 127.0.0.1 for
/// both, or the two ends of the veth pair for `udp-raw-veth`.
pub(crate) fn addrs(channel: Channel) -> (Ipv4Addr, Ipv4Addr) {
    if channel == Channel::UdpRawVeth {
        (veth::PING_ADDR, veth::PONG_ADDR)
    } else {
        (Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST)
    }
}

/// A socket on `addr`: non-blocking, or (`block`) blocking in `recv` for
/// up to [`BLOCK_SLICE`] at a time.
fn bind(addr: Ipv4Addr, block: bool) -> Result<UdpSocket> {
    let s = UdpSocket::bind((addr, 0))
        .map_err(|e| BenchError(format!("cannot bind a UDP socket on {addr}: {e}")))?;
    if block {
        s.set_read_timeout(Some(BLOCK_SLICE))?;
    } else {
        s.set_nonblocking(true)?;
    }
    Ok(s)
}

fn port_of(s: &UdpSocket) -> Result<u16> {
    Ok(s.local_addr()?.port())
}

pub(crate) fn send_spin(s: &UdpSocket, msg: &[u8]) -> Result<()> {
    loop {
        match s.send(msg) {
            Ok(n) if n == msg.len() => return Ok(()),
            Ok(n) => return Err(BenchError(format!("sent {n} of {} bytes", msg.len()))),
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(BenchError(format!("send: {e}"))),
        }
    }
}

pub(crate) fn try_recv(s: &UdpSocket, buf: &mut [u8]) -> Result<Option<usize>> {
    match s.recv(buf) {
        Ok(n) => Ok(Some(n)),
        // A blocking socket's read timeout is EAGAIN too.
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
        Err(e) => Err(BenchError(format!("recv: {e}"))),
    }
}

/// The ping end: a socket connected to pong's.
pub(crate) struct Ping {
    sock: UdpSocket,
    buf: Vec<u8>,
    size: usize,
}

impl Ping {
    fn new(sock: UdpSocket, size: usize) -> Ping {
        Ping {
            sock,
            buf: vec![0; MAX_DATAGRAM + 1],
            size,
        }
    }
}

impl PingEnd for Ping {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        send_spin(&self.sock, msg)
    }

    fn try_recv(&mut self) -> Result<Option<u64>> {
        match try_recv(&self.sock, &mut self.buf)? {
            Some(n) => seq_of(&self.buf[..n], self.size).map(Some),
            None => Ok(None),
        }
    }
}

/// The pong end: a socket connected to ping's.
pub(crate) struct Pong {
    sock: UdpSocket,
    buf: Vec<u8>,
    size: usize,
}

impl Pong {
    fn new(sock: UdpSocket, size: usize) -> Pong {
        Pong {
            sock,
            buf: vec![0; MAX_DATAGRAM + 1],
            size,
        }
    }
}

impl PongEnd for Pong {
    fn try_echo(&mut self) -> Result<Option<u64>> {
        match try_recv(&self.sock, &mut self.buf)? {
            Some(n) => {
                let seq = seq_of(&self.buf[..n], self.size)?;
                send_spin(&self.sock, &self.buf[..n])?;
                Ok(Some(seq))
            }
            None => Ok(None),
        }
    }
}

pub(crate) fn check_size(size: usize) -> Result<()> {
    if size > MAX_DATAGRAM {
        return Err(BenchError(format!(
            "size {size} exceeds the largest UDP datagram ({MAX_DATAGRAM})"
        )));
    }
    Ok(())
}

/// Runs the `udp-raw`, `udp-raw-block` or `udp-raw-veth` latency test
/// (`udp-raw-veth` inside [`veth::run`]).
///
/// # Errors
/// Sockets cannot be set up, or the run failed (a lost datagram shows up as
/// the ping side's idle timeout).
pub fn latency(channel: Channel, cfg: &LatencyConfig) -> Result<LatencyResult> {
    let (ping_addr, pong_addr) = addrs(channel);
    let (sock, port) = ping_socket_on(ping_addr, cfg.size, channel.blocks())?;
    ping_with_peer(channel.name(), cfg, &port.to_string(), move |ready| {
        connect_ping_to(sock, pong_addr, ready, cfg.size)
    })
}

/// Ping's socket, bound on 127.0.0.1 (blocking in `recv` if `block`), and
/// its port (for pong).
///
/// # Errors
/// `size` does not fit a datagram, or the socket cannot be bound.
#[cfg_attr(not(feature = "conduit"), allow(dead_code))]
pub(crate) fn ping_socket(size: usize, block: bool) -> Result<(UdpSocket, u16)> {
    ping_socket_on(Ipv4Addr::LOCALHOST, size, block)
}

/// [`ping_socket`] on `addr`.
///
/// # Errors
/// As [`ping_socket`].
pub(crate) fn ping_socket_on(addr: Ipv4Addr, size: usize, block: bool) -> Result<(UdpSocket, u16)> {
    check_size(size)?;
    let sock = bind(addr, block)?;
    let port = port_of(&sock)?;
    Ok((sock, port))
}

/// Connects ping's socket to pong's port (the text pong sent) on 127.0.0.1.
///
/// # Errors
/// Bad port text, or the connect failed.
#[cfg_attr(not(feature = "conduit"), allow(dead_code))]
pub(crate) fn connect_ping(sock: UdpSocket, pong_port: &str, size: usize) -> Result<Ping> {
    connect_ping_to(sock, Ipv4Addr::LOCALHOST, pong_port, size)
}

/// [`connect_ping`] to pong's port on `pong_addr`.
///
/// # Errors
/// As [`connect_ping`].
pub(crate) fn connect_ping_to(
    sock: UdpSocket,
    pong_addr: Ipv4Addr,
    pong_port: &str,
    size: usize,
) -> Result<Ping> {
    let peer_port: u16 = pong_port
        .trim()
        .parse()
        .map_err(|_| BenchError(format!("pong sent a bad port `{pong_port}`")))?;
    sock.connect((pong_addr, peer_port))?;
    Ok(Ping::new(sock, size))
}

/// The pong side of `udp-raw`, `udp-raw-block` and `udp-raw-veth`:
/// `param` is the ping socket's port.
///
/// # Errors
/// Bad port, socket setup failed, or the run failed.
pub fn pong(args: &PeerArgs, ready: impl FnOnce(&str)) -> Result<()> {
    let (ping_addr, pong_addr) = addrs(args.channel);
    let (mut pong, port) = open_pong_on(
        (pong_addr, ping_addr),
        &args.param,
        args.size,
        args.channel.blocks(),
    )?;
    ready(&port.to_string());
    run_pong(&mut pong, args.count)
}

/// Pong's socket (blocking in `recv` if `block`), connected to ping's port
/// (`ping_port`, as text), and its own port.
///
/// # Errors
/// Bad port, or the socket cannot be set up.
#[cfg_attr(not(feature = "conduit"), allow(dead_code))]
pub(crate) fn open_pong(ping_port: &str, size: usize, block: bool) -> Result<(Pong, u16)> {
    let lo = Ipv4Addr::LOCALHOST;
    open_pong_on((lo, lo), ping_port, size, block)
}

/// [`open_pong`] with pong's socket on `addrs.0`, connected to ping's port
/// on `addrs.1`.
///
/// # Errors
/// As [`open_pong`].
pub(crate) fn open_pong_on(
    addrs: (Ipv4Addr, Ipv4Addr),
    ping_port: &str,
    size: usize,
    block: bool,
) -> Result<(Pong, u16)> {
    check_size(size)?;
    let ping_port: u16 = ping_port
        .parse()
        .map_err(|_| BenchError(format!("bad port `{ping_port}`")))?;
    let sock = bind(addrs.0, block)?;
    sock.connect((addrs.1, ping_port))?;
    let port = port_of(&sock)?;
    Ok((Pong::new(sock, size), port))
}
