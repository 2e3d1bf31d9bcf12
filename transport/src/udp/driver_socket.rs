//! The socket driver: a non-blocking UDP socket driven with `recvmmsg` and
//! `sendmmsg`, with UDP GSO on send and GRO on receive where the kernel
//! supports them. Only its own system calls are here (`recvmmsg`,
//! `sendmmsg`, `recv`/`recvfrom`/`recvmsg`, `poll`); the socket, headers and
//! control messages come from `sys.rs`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use zerocopy::IntoBytes;

use super::driver::{Driver, DriverConfig, DriverKind, Transmit, Wait};
use super::logging::log_once;
use super::packet_tx::PacketTx;
use super::sys::{
    configure_socket, deliver, gro_segment, parse_sockaddr, recv_msghdr, send_one_to_peer,
    setsockopt_int, socket_beside, CmsgBuf, NameBuf, Socket, TxSlot, CMSG_BUF, NAME_LEN,
};

/// Most transmits handed to one `sendmmsg` call.
const TX_BATCH: usize = 64;

/// While a peer is followed, the bound socket (strangers, a restarted
/// sender) is read on every this many receive calls; the followed peer's
/// socket on every call.
const LISTEN_EVERY: u32 = 16;

/// A socket bound to the driver's local address and connected to the peer
/// it follows (see [`Driver::follow`]).
struct Followed {
    /// Owns the descriptor.
    _sock: UdpSocket,
    fd: RawFd,
    peer: SocketAddr,
    /// Whether its queue was found empty once since it was connected.
    /// Before that it may hold datagrams that reached it between its
    /// `bind` and its `connect`, from anyone: they are read with their
    /// source addresses.
    settled: bool,
    /// The socket bound to a joined multicast group (a group subscription):
    /// read on every call, always with source addresses (many senders may
    /// send to a group), never sent from, never replaced by `follow`.
    group: bool,
}

/// What one receive attempt on one socket found.
enum Rx {
    /// This many datagrams were handed out (0 when all were dropped).
    Got(usize),
    /// Nothing waiting.
    Empty,
    /// A signal interrupted the call.
    Interrupted,
}

/// Non-blocking socket with `recvmmsg`/`sendmmsg`.
pub(crate) struct SocketDriver {
    sock: Socket,
    /// The bound socket's descriptor.
    fd: RawFd,
    /// Whether GRO is on (fixed at open).
    gro: bool,
    slot: usize,
    /// The receive slots, `slot` bytes each; `u64`s so that every slot
    /// starts 8-aligned.
    rx_data: Box<[u64]>,
    /// Where GRO segments that are not 8-aligned are copied.
    scratch: Vec<u64>,
    /// Datagrams larger than a slot, cut by the kernel and dropped.
    oversized: u64,
    rx_names: Box<[NameBuf]>,
    rx_ctrl: Box<[CmsgBuf]>,
    rx_iov: Box<[libc::iovec]>,
    rx_hdrs: Box<[libc::mmsghdr]>,
    /// Datagrams the last receive call got: 0 or 1 selects the single
    /// `recvmsg` latency path, more the `recvmmsg` batch path.
    last_rx: usize,
    /// What each header of a `sendmmsg` batch points at.
    tx_slots: Box<[TxSlot]>,
    tx_hdrs: Vec<libc::mmsghdr>,
    /// Socket options for a followed peer's socket (GRO as on this one).
    cfg: DriverConfig,
    followed: Option<Followed>,
    /// Receive calls since the bound socket was last read, while following.
    since_listen: u32,
    /// A group publication's sending socket (see [`GroupTx`]).
    group_tx: Option<GroupTx>,
    /// A group publication's packet socket (`tx=packet`).
    packet_tx: Option<PacketTx>,
}

/// A group publication's second socket: bound beside the bound socket (the
/// same address and port, so receivers answer the bound one) and connected
/// to the group, so a single datagram goes out with a plain `send` instead
/// of a `sendmsg` that carries the group's address (the kernel still looks
/// the multicast route up on every send either way). Never read: a socket
/// connected to a group hears only datagrams from the group address, which
/// no sender has.
struct GroupTx {
    /// Owns the descriptor.
    _sock: UdpSocket,
    fd: RawFd,
    group: SocketAddr,
}

impl GroupTx {
    /// The socket beside `sock`'s bound one, for `m` (not joined).
    fn open(sock: &Socket, m: &super::sys::Multicast, cfg: &DriverConfig) -> io::Result<GroupTx> {
        let local = sock.local_addr()?;
        // An interface named by its IPv4 address, the bound socket on the
        // wildcard: bound to that address (the source of every datagram),
        // and `IP_MULTICAST_IF` set as well. Bound alone (no outgoing
        // interface), the kernel takes its "source address picks the
        // interface" path, which builds and frees an uncached route on
        // every send; with the interface set, the send finds the group's
        // route and its cached destination.
        let by_addr = match (m.iface, local) {
            (Some(super::sys::MulticastIface::Addr(a)), SocketAddr::V4(l))
                if l.ip().is_unspecified() =>
            {
                Some(SocketAddr::from((a, l.port())))
            }
            _ => None,
        };
        // As in `follow`: `SO_REUSEPORT` is on for the one bind beside.
        setsockopt_int(sock.fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        let beside = socket_beside(by_addr.unwrap_or(local));
        let cleared = setsockopt_int(sock.fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 0);
        let beside = beside?;
        cleared?;
        let fd = beside.as_raw_fd();
        super::sys::multicast_sender(fd, m)?;
        configure_socket(&beside, cfg)?;
        beside.connect(m.group)?;
        Ok(GroupTx {
            _sock: beside,
            fd,
            group: m.group,
        })
    }
}

// SAFETY: the raw pointers inside the `iovec`/`mmsghdr` arrays point only
// into heap allocations owned by this same struct (boxed slices that never
// move or reallocate), or are rebuilt before each send; moving the struct to
// another thread moves their owner with them.
unsafe impl Send for SocketDriver {}

impl SocketDriver {
    /// Binds a socket and allocates the receive batch.
    ///
    /// # Errors
    /// Bind or socket option errors.
    pub(crate) fn open(bind: SocketAddr, cfg: &DriverConfig) -> io::Result<SocketDriver> {
        let sock = Socket::bind(bind, cfg)?;
        let (fd, gro) = (sock.fd(), sock.gro());
        let mut cfg = cfg.clone();
        cfg.gro = gro;
        let slot = cfg.rx_slot_size();
        let n = cfg.rx_batch.clamp(1, 1024);
        let mut rx_data = vec![0u64; n * slot / 8].into_boxed_slice();
        let mut rx_names = vec![NameBuf([0; NAME_LEN]); n].into_boxed_slice();
        let mut rx_ctrl = vec![CmsgBuf::new(); n].into_boxed_slice();
        let mut rx_iov: Box<[libc::iovec]> = (0..n)
            .map(|i| libc::iovec {
                iov_base: rx_data[i * slot / 8..].as_mut_ptr().cast(),
                iov_len: slot,
            })
            .collect();
        let rx_hdrs: Box<[libc::mmsghdr]> = (0..n)
            .map(|i| libc::mmsghdr {
                msg_hdr: recv_msghdr(
                    &mut rx_names[i],
                    &mut rx_iov[i],
                    gro.then_some(&mut rx_ctrl[i]),
                ),
                msg_len: 0,
            })
            .collect();
        // A group subscription: the bound socket (an ephemeral unicast
        // port) sends status and NAKs and hears the sender's unicast setups;
        // the group's datagrams arrive on a second socket joined to it.
        let followed = match cfg.multicast.filter(|m| m.join) {
            Some(m) => {
                let g = super::sys::group_socket(&m, &cfg)?;
                Some(Followed {
                    fd: g.as_raw_fd(),
                    _sock: g,
                    peer: m.group,
                    settled: false,
                    group: true,
                })
            }
            None => None,
        };
        // A group publication: single datagrams go out connected. Without
        // the second socket they still go, by `sendmsg`.
        // `tx=packet`: the group's datagrams go by the packet socket instead
        // (an error here is the user's to see: the option was asked for).
        let packet_tx = match cfg.multicast.filter(|m| !m.join && m.packet) {
            Some(m) => Some(PacketTx::open(&m, sock.local_addr()?, cfg.sndbuf)?),
            None => None,
        };
        let group_tx = match cfg.multicast.filter(|m| !m.join && !m.packet) {
            Some(m) => GroupTx::open(&sock, &m, &cfg)
                .inspect_err(|e| {
                    log_once!(debug, "conduit: no connected socket for the group: {e}");
                })
                .ok(),
            None => None,
        };
        Ok(SocketDriver {
            sock,
            fd,
            gro,
            slot,
            rx_data,
            scratch: Vec::new(),
            oversized: 0,
            rx_names,
            rx_ctrl,
            rx_iov,
            rx_hdrs,
            last_rx: 0,
            tx_slots: (0..TX_BATCH).map(|_| TxSlot::new()).collect(),
            tx_hdrs: Vec::with_capacity(TX_BATCH),
            cfg,
            followed,
            since_listen: 0,
            group_tx,
            packet_tx,
        })
    }

    /// Waits until a socket (the bound one, a followed peer's) is readable
    /// or `timeout` passes; says which have something (a datagram or a
    /// pending error), or `None` when the time ran out.
    fn wait_readable(&self, timeout: std::time::Duration) -> io::Result<Option<Ready>> {
        let pfd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut pfds = [
            pfd(self.fd),
            pfd(self.followed.as_ref().map_or(-1, |f| f.fd)),
        ];
        let n: libc::nfds_t = if self.followed.is_some() { 2 } else { 1 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // Round sub-millisecond waits up so a short timeout still sleeps.
        let ms = if ms == 0 && !timeout.is_zero() { 1 } else { ms };
        // SAFETY: `pfds` is a live array of two pollfds and `n` is at most 2.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), n, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(e);
        }
        // Any event counts: POLLIN, and POLLERR for an error (an ICMP port
        // unreachable) that only a read clears.
        Ok((rc > 0).then_some(Ready {
            bound: pfds[0].revents != 0,
            followed: pfds[1].revents != 0,
        }))
    }

    // Inlined: it is open across a system call (see "The latency path"
    // in the `udp` module docs).
    #[inline(always)]
    fn send_batch(&mut self, batch: &[Transmit<'_>]) -> io::Result<usize> {
        if let [t] = batch {
            if let Some(r) = self.sock.send_to_peer(t) {
                return r;
            }
            if t.segments() == 1 {
                if let Some(g) = self.group_tx.as_ref().filter(|g| g.group == t.dest) {
                    return send_one_to_peer(g.fd, t);
                }
                if let Some(f) = self
                    .followed
                    .as_ref()
                    .filter(|f| f.peer == t.dest && !f.group)
                {
                    return send_one_to_peer(f.fd, t);
                }
            }
        }
        // `tx=packet`: a batch that starts with the group's datagrams (one or
        // many) goes by the packet socket.
        if let Some(p) = self
            .packet_tx
            .as_mut()
            .filter(|p| batch.first().is_some_and(|t| t.dest == p.group))
        {
            return p.send(batch);
        }
        let n = batch.len().min(TX_BATCH);
        let peer = self.sock.peer();
        self.tx_hdrs.clear();
        for (slot, t) in self.tx_slots.iter_mut().zip(&batch[..n]) {
            self.tx_hdrs.push(libc::mmsghdr {
                msg_hdr: slot.prepare(t, peer == Some(t.dest)),
                msg_len: 0,
            });
        }
        let rc = if n == 1 {
            // SAFETY: as below, for the single header.
            let r = unsafe { libc::sendmsg(self.fd, &self.tx_hdrs[0].msg_hdr, libc::MSG_DONTWAIT) };
            if r < 0 {
                -1
            } else {
                1
            }
        } else {
            // SAFETY: every header points at a live name, iovec and control
            // buffer in `tx_slots` (a boxed slice, not touched until the call
            // returns) and at the caller's payload slices, which outlive the
            // call; the kernel only reads them.
            unsafe {
                libc::sendmmsg(
                    self.fd,
                    self.tx_hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            }
        };
        if rc < 0 {
            return self.sock.send_failed(io::Error::last_os_error(), &batch[0]);
        }
        Ok(rc as usize)
    }
}

impl Driver for SocketDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Socket
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    fn max_segments(&self) -> usize {
        // With `tx=packet` too: a batch may also go to one receiver by the
        // bound socket, which takes several segments only with GSO.
        self.sock.max_segments().min(super::packet_tx::BATCH)
    }

    fn connect(&mut self, peer: SocketAddr) -> io::Result<()> {
        self.sock.connect(peer)
    }

    // Inlined: it is open across a system call (see "The latency path"
    // in the `udp` module docs).
    #[inline(always)]
    fn send(&mut self, batch: &[Transmit<'_>]) -> io::Result<usize> {
        self.sock.check_batch(batch)?;
        let mut done = 0;
        while done < batch.len() {
            match self.send_batch(&batch[done..]) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) if done > 0 => {
                    // Report what went out; the error repeats on the next call.
                    let _ = e;
                    break;
                }
                // GSO refused by the route's device is already off (see
                // `Socket::send_failed`).
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn oversized(&self) -> u64 {
        self.oversized
    }

    fn follow(&mut self, peer: SocketAddr) -> io::Result<()> {
        // A connected socket (a publication's) hears only its peer anyway.
        if self.sock.peer().is_some()
            || self
                .followed
                .as_ref()
                .is_some_and(|f| f.peer == peer || f.group)
        {
            return Ok(());
        }
        // The previous sender's socket goes: its session was replaced.
        self.followed = None;
        let local = self.sock.local_addr()?;
        if local.is_ipv4() != peer.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "peer of another address family",
            ));
        }
        // Two sockets share the address only through `SO_REUSEPORT`, which
        // the kernel grants to sockets of the same effective uid, and only
        // while it is on for both: it is on for the one bind of the
        // peer's socket and off again before anything else happens. A
        // socket of another user can never join, with or without
        // `SO_REUSEADDR` (never set on our sockets); after a failure the
        // bound socket is alone on the address again.
        setsockopt_int(self.fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        let sock = socket_beside(local);
        let cleared = setsockopt_int(self.fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 0);
        let sock = sock?;
        cleared?;
        sock.connect(peer)?;
        configure_socket(&sock, &self.cfg)?;
        self.followed = Some(Followed {
            fd: sock.as_raw_fd(),
            _sock: sock,
            peer,
            settled: false,
            group: false,
        });
        // Read the bound socket on the next call: the peer's datagrams that
        // arrived before the switch wait there.
        self.since_listen = LISTEN_EVERY;
        Ok(())
    }

    fn unfollow(&mut self) {
        if self.followed.as_ref().is_some_and(|f| !f.group) {
            self.followed = None;
        }
    }

    // Inlined: it is open across a system call (see "The latency path"
    // in the `udp` module docs).
    #[inline(always)]
    fn recv<F: FnMut(SocketAddr, &[u8])>(
        &mut self,
        wait: Wait,
        max: usize,
        mut f: F,
    ) -> io::Result<usize> {
        // After a wait: the sockets it found readable, the only ones read.
        let mut woken: Option<Ready> = None;
        loop {
            let mut got = 0;
            let mut listen = true;
            if let Some(fl) = &self.followed {
                let (fd, known) = (fl.fd, fl.settled.then_some(fl.peer));
                if woken.is_none_or(|r| r.followed) {
                    match self.recv_on(fd, known, max, &mut f)? {
                        Rx::Got(n) => got = n,
                        Rx::Empty => {
                            if let Some(fl) = self.followed.as_mut().filter(|f| !f.group) {
                                fl.settled = true;
                            }
                        }
                        Rx::Interrupted => return Ok(0),
                    }
                }
                self.since_listen += 1;
                // Before a wait the bound socket need not be read: the wait
                // watches it too.
                listen = match woken {
                    Some(r) => r.bound,
                    None => self.since_listen >= LISTEN_EVERY,
                };
            }
            if listen && got < max {
                self.since_listen = 0;
                match self.recv_on(self.fd, None, max - got, &mut f)? {
                    Rx::Got(n) => got += n,
                    Rx::Empty => {}
                    Rx::Interrupted => return Ok(got),
                }
            }
            if got > 0 {
                return Ok(got);
            }
            match wait {
                Wait::Timeout(t) if woken.is_none() => match self.wait_readable(t)? {
                    Some(r) => woken = Some(r),
                    None => return Ok(0),
                },
                _ => return Ok(0),
            }
        }
    }
}

/// Which of a socket driver's sockets a wait found readable.
#[derive(Clone, Copy, Debug)]
struct Ready {
    /// The bound socket.
    bound: bool,
    /// The followed peer's socket.
    followed: bool,
}

impl SocketDriver {
    /// One receive call on `fd`: the bound socket, or a followed peer's
    /// (`known` is then its peer, once its queue has settled: the source
    /// is not asked of the kernel).
    // Inlined: it is open across a system call (see "The latency path"
    // in the `udp` module docs).
    #[inline(always)]
    fn recv_on<F: FnMut(SocketAddr, &[u8])>(
        &mut self,
        fd: RawFd,
        known: Option<SocketAddr>,
        max: usize,
        f: &mut F,
    ) -> io::Result<Rx> {
        loop {
            let rc = if (self.last_rx <= 1 || max <= 1) && !self.gro {
                // Latency path: nothing or a single datagram came last time,
                // so one `recv`/`recvfrom` is enough (cheaper than `recvmsg`,
                // which copies and checks a msghdr and iovec per call).
                let len = self.slot;
                let mut namelen = NAME_LEN as libc::socklen_t;
                let flags = libc::MSG_DONTWAIT | libc::MSG_TRUNC;
                let buf = self.rx_data.as_mut_ptr().cast();
                let r = if known.is_some() {
                    namelen = 0;
                    // SAFETY: the first data slot holds `slot` bytes, owned
                    // by this driver; the kernel writes at most `len`.
                    unsafe { libc::recv(fd, buf, len, flags) }
                } else {
                    // SAFETY: the first data slot holds `slot` bytes and the
                    // first name buffer NAME_LEN bytes, both owned by this
                    // driver; the kernel writes at most those lengths.
                    unsafe {
                        libc::recvfrom(
                            fd,
                            buf,
                            len,
                            flags,
                            self.rx_names[0].0.as_mut_ptr().cast(),
                            &mut namelen,
                        )
                    }
                };
                if r >= 0 {
                    let h = &mut self.rx_hdrs[0];
                    h.msg_len = r.min(u32::MAX as isize) as libc::c_uint;
                    h.msg_hdr.msg_namelen = namelen;
                    h.msg_hdr.msg_flags = if r as usize > len { libc::MSG_TRUNC } else { 0 };
                    self.last_rx = 2;
                    1
                } else {
                    -1
                }
            } else if self.last_rx <= 1 || max <= 1 {
                // As above, with GRO: `recvmsg` to get the segment size.
                // SAFETY: the first header points into this driver's own
                // buffers, as for `recvmmsg` below.
                let r =
                    unsafe { libc::recvmsg(fd, &mut self.rx_hdrs[0].msg_hdr, libc::MSG_DONTWAIT) };
                if r >= 0 {
                    self.rx_hdrs[0].msg_len = r as libc::c_uint;
                    self.last_rx = 2;
                    1
                } else {
                    -1
                }
            } else {
                let vlen = self.rx_hdrs.len().min(max) as libc::c_uint;
                // SAFETY: each header points into this driver's own name,
                // control, iovec and data buffers, sized as the header says;
                // the kernel writes at most those lengths, and nothing else
                // borrows the buffers during the call.
                let r = unsafe {
                    libc::recvmmsg(
                        fd,
                        self.rx_hdrs.as_mut_ptr(),
                        vlen,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                self.last_rx = r.max(0) as usize;
                r
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(Rx::Empty),
                    Some(libc::EINTR) => Ok(Rx::Interrupted),
                    // An ICMP error queued by an earlier send (port
                    // unreachable): the peer is not there yet; try again.
                    Some(libc::ECONNREFUSED) => continue,
                    _ => Err(e),
                };
            }
            let got = rc as usize;
            let mut delivered = 0;
            for i in 0..got {
                let h = &mut self.rx_hdrs[i];
                let len = (h.msg_len as usize).min(self.slot);
                let namelen = (h.msg_hdr.msg_namelen as usize).min(NAME_LEN);
                let ctrllen = if self.gro {
                    h.msg_hdr.msg_controllen.min(CMSG_BUF)
                } else {
                    0
                };
                let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                // Reset what the kernel overwrote, for the next call.
                h.msg_hdr.msg_namelen = NAME_LEN as libc::socklen_t;
                h.msg_hdr.msg_controllen = if self.gro { CMSG_BUF } else { 0 };
                h.msg_hdr.msg_flags = 0;
                if truncated {
                    self.oversized += 1;
                    continue;
                }
                let from = match known {
                    // A connected socket receives only from its peer.
                    Some(peer) => peer,
                    None => match parse_sockaddr(&self.rx_names[i].0[..namelen]) {
                        Some(a) => a,
                        None => continue,
                    },
                };
                let seg = if ctrllen > 0 {
                    gro_segment(&self.rx_ctrl[i].0[..ctrllen])
                } else {
                    None
                };
                let payload = &self.rx_data.as_bytes()[i * self.slot..i * self.slot + len];
                delivered += deliver(from, payload, seg, &mut self.scratch, &mut *f);
            }
            // The iovecs are never changed by the kernel for recvmmsg, but
            // keep the binding alive: the headers point at them.
            let _ = &self.rx_iov;
            return Ok(Rx::Got(delivered));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sys::RawAddr;
    use super::*;
    use crate::udp::driver::test_support::segmented_roundtrip;
    use std::os::fd::FromRawFd;
    use std::time::Duration;

    fn pair(cfg: &DriverConfig) -> (SocketDriver, SocketDriver) {
        let a = SocketDriver::open("127.0.0.1:0".parse().unwrap(), cfg).unwrap();
        let b = SocketDriver::open("127.0.0.1:0".parse().unwrap(), cfg).unwrap();
        (a, b)
    }

    #[test]
    fn batch_roundtrip_with_and_without_gso() {
        for gso in [false, true] {
            let cfg = DriverConfig {
                gso,
                gro: gso,
                ..DriverConfig::default()
            };
            let (mut a, mut b) = pair(&cfg);
            segmented_roundtrip(&mut a, &mut b, 1000);
        }
    }

    /// A group publication's driver sends single datagrams through its
    /// connected socket beside the bound one: the same local address, so the
    /// receivers' unicast answers still reach the bound socket, read by
    /// `recv`; a sent datagram that the group does not take is no error.
    #[test]
    fn a_group_publication_sends_connected_and_hears_answers_on_its_port() {
        let group: SocketAddr = "239.255.77.1:9".parse().unwrap();
        let cfg = DriverConfig {
            gro: false,
            multicast: Some(super::super::sys::Multicast {
                group,
                iface: Some(super::super::sys::MulticastIface::Addr(
                    std::net::Ipv4Addr::LOCALHOST,
                )),
                ttl: 0,
                join: false,
                packet: false,
            }),
            ..DriverConfig::default()
        };
        let mut publ = SocketDriver::open("0.0.0.0:0".parse().unwrap(), &cfg).unwrap();
        let g = publ.group_tx.as_ref().expect("the connected group socket");
        let local = publ.local_addr().unwrap();
        // Connected, its address is the one the route picked: the port is
        // the bound socket's.
        assert_eq!(g._sock.local_addr().unwrap().port(), local.port());
        let t = Transmit {
            dest: group,
            contents: b"to the group",
            segment_size: 12,
        };
        assert_eq!(publ.send(&[t]).unwrap(), 1);
        let answer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = SocketAddr::new("127.0.0.1".parse().unwrap(), local.port());
        let mut got = Vec::new();
        for i in 0..32u8 {
            answer.send_to(&[i], to).unwrap();
            while got.len() <= usize::from(i) {
                publ.recv(Wait::Timeout(Duration::from_secs(5)), 64, |src, d| {
                    got.push((src, d.to_vec()))
                })
                .unwrap();
            }
        }
        let from = answer.local_addr().unwrap();
        let want: Vec<_> = (0..32u8).map(|i| (from, vec![i])).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_followed_peer_gets_its_own_socket_and_the_address_stays_exclusive() {
        follow_case("127.0.0.1", "127.0.0.1:0");
        follow_case("127.0.0.1", "0.0.0.0:0");
        follow_case("::1", "[::1]:0");
        follow_case("::1", "[::]:0");
    }

    /// `b` bound to `bind` follows `a`; `a` and a stranger are on `host`.
    fn follow_case(host: &str, bind: &str) {
        let cfg = DriverConfig {
            gro: false,
            ..DriverConfig::default()
        };
        let on_host = |port: u16| SocketAddr::new(host.parse().unwrap(), port);
        let mut a = SocketDriver::open(on_host(0), &cfg).unwrap();
        let mut stranger = SocketDriver::open(on_host(0), &cfg).unwrap();
        let mut b = SocketDriver::open(bind.parse().unwrap(), &cfg).unwrap();
        let b_bound = b.local_addr().unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), on_host(b_bound.port()));
        fn one(dest: SocketAddr, d: &[u8]) -> Transmit<'_> {
            Transmit {
                dest,
                contents: d,
                segment_size: d.len(),
            }
        }
        let recv_all = |b: &mut SocketDriver, n: usize| {
            let mut got = Vec::new();
            while got.len() < n {
                b.recv(Wait::Timeout(Duration::from_secs(5)), 64, |src, d| {
                    got.push((src, d.to_vec()))
                })
                .unwrap();
            }
            got
        };
        assert_eq!(a.send(&[one(b_addr, b"before")]).unwrap(), 1);
        b.follow(a_addr).unwrap();
        assert_eq!(recv_all(&mut b, 1), vec![(a_addr, b"before".to_vec())]);

        // The peer's datagrams reach the followed socket, a stranger's the
        // bound one; each with its own source.
        let followed = b.followed.as_ref().unwrap().fd;
        assert_eq!(a.send(&[one(b_addr, b"peer")]).unwrap(), 1);
        assert_eq!(stranger.send(&[one(b_addr, b"stranger")]).unwrap(), 1);
        let mut f = |_: SocketAddr, _: &[u8]| {};
        std::thread::sleep(Duration::from_millis(20));
        assert!(matches!(
            b.recv_on(followed, None, 64, &mut f).unwrap(),
            Rx::Got(1)
        ));
        assert!(matches!(
            b.recv_on(b.fd, None, 64, &mut f).unwrap(),
            Rx::Got(1)
        ));
        assert!(matches!(
            b.recv_on(b.fd, None, 64, &mut f).unwrap(),
            Rx::Empty
        ));
        assert_eq!(a.send(&[one(b_addr, b"peer")]).unwrap(), 1);
        assert_eq!(stranger.send(&[one(b_addr, b"stranger")]).unwrap(), 1);
        let mut got = recv_all(&mut b, 2);
        got.sort();
        let s_addr = stranger.local_addr().unwrap();
        let mut want = vec![(a_addr, b"peer".to_vec()), (s_addr, b"stranger".to_vec())];
        want.sort();
        assert_eq!(got, want);

        // Replies to the peer leave from the same address.
        let reply = Transmit {
            dest: a_addr,
            contents: b"reply",
            segment_size: 5,
        };
        assert_eq!(b.send(&[reply]).unwrap(), 1);
        let mut from = None;
        while from.is_none() {
            a.recv(Wait::Timeout(Duration::from_secs(5)), 1, |src, _| {
                from = Some(src)
            })
            .unwrap();
        }
        assert_eq!(from, Some(b_addr));

        // Nobody can join the address, even asking to share it.
        assert_exclusive(b_bound);
        // Following another peer replaces the socket, and again the
        // address stays exclusive.
        b.follow(s_addr).unwrap();
        assert_eq!(b.followed.as_ref().unwrap().peer, s_addr);
        assert_exclusive(b_bound);
    }

    /// A configuration without GRO and three drivers on 127.0.0.1 made with
    /// it: a peer, a receiver that will follow it, and a stranger.
    fn peer_receiver_stranger() -> (DriverConfig, SocketDriver, SocketDriver, SocketDriver) {
        let cfg = DriverConfig {
            gro: false,
            ..DriverConfig::default()
        };
        let (a, b) = pair(&cfg);
        let (stranger, _) = pair(&cfg);
        (cfg, a, b, stranger)
    }

    /// A receive blocked while following a peer wakes for a datagram on
    /// either socket and returns it from that one call: the peer's on the
    /// followed socket, a stranger's (or a restarted peer's) on the bound
    /// one. A peer gone away (ICMP port unreachable pending on the followed
    /// socket) ends the call without an error and without a datagram.
    #[test]
    fn a_blocked_receive_wakes_for_either_socket() {
        let (_, mut a, mut b, mut stranger) = peer_receiver_stranger();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        b.follow(a_addr).unwrap();
        // Settle the followed socket: it reads its first empty state.
        assert_eq!(b.recv(Wait::NoWait, 64, |_, _| {}).unwrap(), 0);
        let s_addr = stranger.local_addr().unwrap();
        for (from, by_peer) in [(a_addr, true), (s_addr, false), (a_addr, true)] {
            let sender = if by_peer { &mut a } else { &mut stranger };
            let got = std::thread::scope(|scope| {
                let sent = scope.spawn(|| {
                    // Late enough that the receiver is usually asleep.
                    std::thread::sleep(Duration::from_millis(50));
                    let t = Transmit {
                        dest: b_addr,
                        contents: b"wake",
                        segment_size: 4,
                    };
                    sender.send(&[t]).unwrap()
                });
                let mut got = Vec::new();
                let n = b
                    .recv(Wait::Timeout(Duration::from_secs(60)), 64, |src, d| {
                        got.push((src, d.to_vec()))
                    })
                    .unwrap();
                assert_eq!(sent.join().unwrap(), 1);
                assert_eq!(n, got.len());
                got
            });
            assert_eq!(got, vec![(from, b"wake".to_vec())]);
        }
        // The peer goes away; a datagram to it (sent from another handle of
        // the followed socket) leaves an error there while the receive is
        // blocked: the receive wakes, clears it and returns empty.
        drop(a);
        let fd = b.followed.as_ref().unwrap().fd;
        // SAFETY: `fd` is the followed socket, open for the whole test.
        let dup = unsafe { libc::dup(fd) };
        assert!(dup >= 0, "dup: {}", io::Error::last_os_error());
        // SAFETY: `dup` is a fresh descriptor nothing else owns; `other`
        // closes it.
        let other = unsafe { UdpSocket::from_raw_fd(dup) };
        let n = std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                other.send(b"gone?").unwrap();
            });
            b.recv(Wait::Timeout(Duration::from_secs(5)), 64, |_, _| {})
                .unwrap()
        });
        assert_eq!(n, 0);
        assert!(!error_pending(fd), "the error is still pending");
    }

    /// Whether a socket error is pending on `fd`, seen with `poll`, which
    /// does not clear it (a read of SO_ERROR would).
    fn error_pending(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        };
        // SAFETY: `p` is one live pollfd; a zero timeout does not block.
        let rc = unsafe { libc::poll(&mut p, 1, 0) };
        assert!(rc >= 0);
        p.revents & libc::POLLERR != 0
    }

    /// A datagram that reaches a followed peer's socket between its `bind`
    /// and its `connect` may come from anyone: it is handed out with its
    /// real source, not as the peer's.
    #[test]
    fn a_stranger_caught_before_connect_keeps_its_source() {
        let (cfg, mut a, mut b, mut stranger) = peer_receiver_stranger();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let s_addr = stranger.local_addr().unwrap();
        // What `follow` does, with a stranger's datagram in the middle.
        setsockopt_int(b.fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1).unwrap();
        let second = socket_beside(b_addr).unwrap();
        setsockopt_int(b.fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 0).unwrap();
        let msg = |d: &'static [u8]| Transmit {
            dest: b_addr,
            contents: d,
            segment_size: d.len(),
        };
        assert_eq!(stranger.send(&[msg(b"early stranger")]).unwrap(), 1);
        std::thread::sleep(Duration::from_millis(20));
        second.connect(a_addr).unwrap();
        configure_socket(&second, &cfg).unwrap();
        b.followed = Some(Followed {
            fd: second.as_raw_fd(),
            _sock: second,
            peer: a_addr,
            settled: false,
            group: false,
        });
        assert_eq!(a.send(&[msg(b"peer")]).unwrap(), 1);
        let mut got = Vec::new();
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while got.len() < 2 && std::time::Instant::now() < end {
            b.recv(Wait::Timeout(Duration::from_millis(100)), 64, |src, d| {
                got.push((src, d.to_vec()))
            })
            .unwrap();
        }
        got.sort();
        let mut want = vec![
            (a_addr, b"peer".to_vec()),
            (s_addr, b"early stranger".to_vec()),
        ];
        want.sort();
        assert_eq!(got, want);
    }

    /// A UDP socket bound to `addr` with the option `opt` (`SO_REUSEADDR`
    /// or `SO_REUSEPORT`) on, or `None` when the bind fails. Makes no
    /// allocation, so that a forked child may call it.
    fn try_bind(addr: &RawAddr, opt: libc::c_int) -> Option<std::os::fd::OwnedFd> {
        use std::os::fd::OwnedFd;
        let domain = match addr {
            RawAddr::V4(_) => libc::AF_INET,
            RawAddr::V6(_) => libc::AF_INET6,
        };
        // SAFETY: a plain socket(2) call; the result is checked below.
        let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is a fresh socket owned by nothing else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        setsockopt_int(fd, libc::SOL_SOCKET, opt, 1).ok()?;
        // SAFETY: `addr` holds a sockaddr of `addr.len()` bytes for the call.
        (unsafe { libc::bind(fd, addr.as_ptr(), addr.len()) } == 0).then_some(owned)
    }

    /// No other socket can bind `addr`, asking to share it or not.
    fn assert_exclusive(addr: SocketAddr) {
        let raw = RawAddr::new(&addr);
        for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            assert!(try_bind(&raw, opt).is_none(), "bound {addr} with {opt}");
        }
        assert!(UdpSocket::bind(addr).is_err());
    }

    /// Another process hammering `bind` on one address.
    struct StrangerProcess {
        pid: libc::pid_t,
        /// Gets a byte when a bind succeeded.
        result: std::os::fd::OwnedFd,
    }

    impl StrangerProcess {
        /// Forks a child that binds `addr` with `opt` on, as `uid` when
        /// given, in a loop until it succeeds (it then reports it and
        /// holds the address) or is killed.
        fn spawn(addr: SocketAddr, opt: libc::c_int, uid: Option<libc::uid_t>) -> Self {
            use std::os::fd::OwnedFd;
            let raw = RawAddr::new(&addr);
            let mut fds = [0; 2];
            // SAFETY: `fds` is a live array of two descriptors.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: the child only makes system calls (no allocation, no
            // lock another thread may hold) and ends with `_exit`.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
            if pid == 0 {
                // SAFETY: system calls on plain values and on `fds`, which
                // this process owns; `_exit` never returns.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if let Some(u) = uid {
                        if libc::setgroups(0, std::ptr::null())
                            + libc::setresgid(u, u, u)
                            + libc::setresuid(u, u, u)
                            != 0
                        {
                            libc::_exit(3);
                        }
                    }
                    loop {
                        if let Some(held) = try_bind(&raw, opt) {
                            libc::write(fds[1], b"1".as_ptr().cast(), 1);
                            loop {
                                libc::pause();
                                let _ = &held;
                            }
                        }
                    }
                }
            }
            // SAFETY: both ends are fresh descriptors of this process.
            let (read, _write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            StrangerProcess { pid, result: read }
        }

        /// Whether the child bound the address at least once. Kills it.
        fn bound(self) -> bool {
            // SAFETY: kill and waitpid on our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
            let mut b = [0u8; 1];
            // SAFETY: `b` is one live byte; the descriptor is ours. The
            // child, the only writer, is gone: the read cannot block.
            unsafe { libc::read(self.result.as_raw_fd(), b.as_mut_ptr().cast(), 1) == 1 }
        }
    }

    /// A thread of this process hammering `bind` with `SO_REUSEADDR` on
    /// `addr` until `stop`; returns every socket that got the address.
    fn stranger_thread(
        addr: SocketAddr,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> std::thread::JoinHandle<Vec<std::os::fd::OwnedFd>> {
        std::thread::spawn(move || {
            let raw = RawAddr::new(&addr);
            let mut held = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                held.extend(try_bind(&raw, libc::SO_REUSEADDR));
            }
            held
        })
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// Finding: while a receiver followed a sender, its address was open to
    /// any socket with `SO_REUSEADDR`, another user's included, which then
    /// received its datagrams and kept the address after it closed. Here
    /// the receiver switches between two peers thousands of times while
    /// strangers bind in a loop: a thread of this process and other
    /// processes, as this user and as `nobody`, with `SO_REUSEADDR` and
    /// (as another user) `SO_REUSEPORT`. None ever gets the address, and
    /// it is free again once the receiver is gone.
    #[test]
    fn nobody_else_can_bind_the_address_while_peers_are_followed() {
        let (_, mut a, mut b, mut c) = peer_receiver_stranger();
        let b_addr = b.local_addr().unwrap();
        let (a_addr, c_addr) = (a.local_addr().unwrap(), c.local_addr().unwrap());
        let mut procs = vec![(
            "same user, SO_REUSEADDR",
            StrangerProcess::spawn(b_addr, libc::SO_REUSEADDR, None),
        )];
        if is_root() {
            procs.push((
                "nobody, SO_REUSEADDR",
                StrangerProcess::spawn(b_addr, libc::SO_REUSEADDR, Some(65534)),
            ));
            procs.push((
                "nobody, SO_REUSEPORT",
                StrangerProcess::spawn(b_addr, libc::SO_REUSEPORT, Some(65534)),
            ));
        } else {
            println!("not root: no stranger of another user");
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = stranger_thread(b_addr, stop.clone());
        let mut got = 0;
        for i in 0..4000 {
            let (peer, sender) = if i % 2 == 0 {
                (a_addr, &mut a)
            } else {
                (c_addr, &mut c)
            };
            b.follow(peer).unwrap();
            if i % 100 == 0 {
                let t = Transmit {
                    dest: b_addr,
                    contents: b"x",
                    segment_size: 1,
                };
                assert_eq!(sender.send(&[t]).unwrap(), 1);
                // A watchdog: a datagram a stranger took never comes.
                for _ in 0..20 {
                    if got > i / 100 {
                        break;
                    }
                    b.recv(Wait::Timeout(Duration::from_millis(250)), 64, |_, _| {
                        got += 1
                    })
                    .unwrap();
                }
                assert!(got > i / 100, "datagram {} lost", i / 100);
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let held = thread.join().unwrap();
        let bound: Vec<&str> = procs
            .into_iter()
            .filter_map(|(who, p)| p.bound().then_some(who))
            .collect();
        assert!(
            held.is_empty() && bound.is_empty(),
            "bound by this process: {}, by {bound:?}",
            held.len()
        );
        drop(b);
        assert!(UdpSocket::bind(b_addr).is_ok());
    }

    /// A follow that fails (here `connect` refuses the broadcast address)
    /// leaves the receiver as it was, working on its bound socket, the
    /// address its own; once it is gone the address can be bound again.
    #[test]
    fn a_failed_follow_leaves_the_address_ours_and_then_free() {
        let (_, mut a, mut b, _) = peer_receiver_stranger();
        let b_addr = b.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = stranger_thread(b_addr, stop.clone());
        let bad: SocketAddr = "255.255.255.255:9".parse().unwrap();
        for _ in 0..2000 {
            assert!(b.follow(bad).is_err());
            assert!(b.followed.is_none());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let held = thread.join().unwrap();
        let t = Transmit {
            dest: b_addr,
            contents: b"still here",
            segment_size: 10,
        };
        assert_eq!(a.send(&[t]).unwrap(), 1);
        let mut got = Vec::new();
        // A watchdog: a datagram a stranger took never comes.
        for _ in 0..20 {
            if !got.is_empty() {
                break;
            }
            b.recv(Wait::Timeout(Duration::from_millis(250)), 64, |_, d| {
                got.push(d.to_vec())
            })
            .unwrap();
        }
        assert_eq!(got, vec![b"still here".to_vec()]);
        drop(b);
        assert!(
            UdpSocket::bind(b_addr).is_ok(),
            "a stranger holds the address: {} binds",
            held.len()
        );
    }

    /// Finding: receive slots spaced by an MTU that is not a multiple of
    /// 8 left most datagrams of a batch misaligned. Batches of full-size
    /// datagrams at MTU 1410 and 8972, with GRO and without: every
    /// datagram handed out starts 8-aligned.
    #[test]
    fn batched_datagrams_start_aligned_whatever_the_mtu() {
        for (mtu, gro) in [(1410, false), (8972, false), (1410, true), (8972, true)] {
            let cfg = DriverConfig {
                max_datagram: mtu,
                gro,
                ..DriverConfig::default()
            };
            let mut b = SocketDriver::open("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
            let to = b.local_addr().unwrap();
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let d = vec![7u8; mtu];
            let (mut got, mut misaligned) = (0, 0);
            for _ in 0..20 {
                for _ in 0..50 {
                    sock.send_to(&d, to).unwrap();
                }
                std::thread::sleep(Duration::from_millis(5));
                for _ in 0..100 {
                    b.recv(Wait::NoWait, 64, |_, p| {
                        got += 1;
                        assert_eq!(p.len(), mtu);
                        misaligned += usize::from(p.as_ptr().align_offset(8) != 0);
                    })
                    .unwrap();
                }
            }
            // A GSO super-datagram reaches a GRO socket whole (loopback):
            // its segments, 1410 or 8972 bytes apart, are split out.
            if gro {
                let mut a = SocketDriver::open("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
                if a.max_segments() > 1 {
                    let segs = (60_000 / mtu).min(8);
                    let big = vec![7u8; mtu * segs];
                    let t = Transmit {
                        dest: to,
                        contents: &big,
                        segment_size: mtu,
                    };
                    assert_eq!(a.send(&[t]).unwrap(), 1);
                    let before = got;
                    for _ in 0..50 {
                        if got - before >= segs {
                            break;
                        }
                        b.recv(Wait::Timeout(Duration::from_millis(100)), 64, |_, p| {
                            got += 1;
                            assert_eq!(p.len(), mtu);
                            misaligned += usize::from(p.as_ptr().align_offset(8) != 0);
                        })
                        .unwrap();
                    }
                    assert_eq!(got - before, segs, "mtu {mtu}: GSO segments lost");
                }
            }
            assert!(got > 100, "mtu {mtu} gro {gro}: only {got} received");
            assert_eq!(
                misaligned, 0,
                "mtu {mtu} gro {gro}: {misaligned} of {got} misaligned"
            );
        }
    }

    #[test]
    fn recv_nowait_is_empty() {
        let (_, mut b) = pair(&DriverConfig::default());
        assert_eq!(b.recv(Wait::NoWait, 64, |_, _| panic!()).unwrap(), 0);
        assert_eq!(
            b.recv(Wait::Timeout(Duration::from_millis(5)), 64, |_, _| panic!())
                .unwrap(),
            0
        );
    }
}
