//! `udp-raw`: two processes ping-ponging datagrams over plain non-blocking UDP
//! sockets on 127.0.0.1, each spinning on `recv` — the kernel's limit for UDP
//! on this machine, the baseline for conduit's UDP channels. `udp-raw-block`:
//! the same with blocking sockets, each side asleep in `recv` until a
//! datagram arrives — the baseline for conduit's blocking (`wait=block`)
//! channels.

use std::io::ErrorKind;
use std::net::UdpSocket;

use super::{ping_with_peer, Channel, PeerArgs};
use crate::error::{BenchError, Result};
use crate::latency::{run_pong, seq_of, LatencyConfig, PingEnd, PongEnd, BLOCK_SLICE};
use crate::report::LatencyResult;

/// Largest UDP payload over IPv4.
pub(crate) const MAX_DATAGRAM: usize = 65_507;

/// A socket on 127.0.0.1: non-blocking, or (`block`) blocking in `recv` for
/// up to [`BLOCK_SLICE`] at a time.
fn bind(block: bool) -> Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")
        .map_err(|e| BenchError(format!("cannot bind a UDP socket on 127.0.0.1: {e}")))?;
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

/// Runs the `udp-raw` or `udp-raw-block` latency test.
///
/// # Errors
/// Sockets cannot be set up, or the run failed (a lost datagram shows up as
/// the ping side's idle timeout).
pub fn latency(channel: Channel, cfg: &LatencyConfig) -> Result<LatencyResult> {
    let (sock, port) = ping_socket(cfg.size, channel.blocks())?;
    ping_with_peer(channel.name(), cfg, &port.to_string(), move |ready| {
        connect_ping(sock, ready, cfg.size)
    })
}

/// Ping's socket, bound (blocking in `recv` if `block`), and its port (for
/// pong).
///
/// # Errors
/// `size` does not fit a datagram, or the socket cannot be bound.
pub(crate) fn ping_socket(size: usize, block: bool) -> Result<(UdpSocket, u16)> {
    check_size(size)?;
    let sock = bind(block)?;
    let port = port_of(&sock)?;
    Ok((sock, port))
}

/// Connects ping's socket to pong's port (the text pong sent).
///
/// # Errors
/// Bad port text, or the connect failed.
pub(crate) fn connect_ping(sock: UdpSocket, pong_port: &str, size: usize) -> Result<Ping> {
    let peer_port: u16 = pong_port
        .trim()
        .parse()
        .map_err(|_| BenchError(format!("pong sent a bad port `{pong_port}`")))?;
    sock.connect(("127.0.0.1", peer_port))?;
    Ok(Ping::new(sock, size))
}

/// The pong side of `udp-raw` and `udp-raw-block`: `param` is the ping
/// socket's port.
///
/// # Errors
/// Bad port, socket setup failed, or the run failed.
pub fn pong(args: &PeerArgs, ready: impl FnOnce(&str)) -> Result<()> {
    let (mut pong, port) = open_pong(&args.param, args.size, args.channel.blocks())?;
    ready(&port.to_string());
    run_pong(&mut pong, args.count)
}

/// Pong's socket (blocking in `recv` if `block`), connected to ping's port
/// (`ping_port`, as text), and its own port.
///
/// # Errors
/// Bad port, or the socket cannot be set up.
pub(crate) fn open_pong(ping_port: &str, size: usize, block: bool) -> Result<(Pong, u16)> {
    check_size(size)?;
    let ping_port: u16 = ping_port
        .parse()
        .map_err(|_| BenchError(format!("bad port `{ping_port}`")))?;
    let sock = bind(block)?;
    sock.connect(("127.0.0.1", ping_port))?;
    let port = port_of(&sock)?;
    Ok((Pong::new(sock, size), port))
}
