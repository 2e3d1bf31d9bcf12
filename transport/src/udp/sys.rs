//! The system-call layer both UDP drivers share: socket addresses in the
//! kernel's layout, `msghdr` construction, control messages (encoded and
//! decoded through `libc`'s `CMSG_*` functions, never hard-coded offsets),
//! the one classification of send errors, the GSO probe, socket options,
//! and the bound socket itself (bind, connect, local address, the
//! single-datagram send).
//!
//! The drivers keep only their own system calls: `recvmmsg`/`sendmmsg`
//! (`driver_socket.rs`) and io_uring submissions (`driver_uring.rs`).
//! The control-message code follows quinn-udp's `cmsg` module: an encoder
//! that walks `CMSG_FIRSTHDR`/`CMSG_NXTHDR` over a header's control buffer,
//! and a decoder that walks received control bytes the same way.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use super::driver::{DriverConfig, Transmit, MAX_GSO_SEGMENTS};

/// A socket address in the kernel's layout, ready to pass to `sendmsg`.
#[derive(Clone, Copy)]
pub(crate) enum RawAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl RawAddr {
    pub(crate) fn new(addr: &SocketAddr) -> RawAddr {
        match addr {
            SocketAddr::V4(a) => RawAddr::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => RawAddr::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            }),
        }
    }

    pub(crate) fn as_ptr(&self) -> *const libc::sockaddr {
        match self {
            RawAddr::V4(a) => (a as *const libc::sockaddr_in).cast(),
            RawAddr::V6(a) => (a as *const libc::sockaddr_in6).cast(),
        }
    }

    pub(crate) fn len(&self) -> libc::socklen_t {
        match self {
            RawAddr::V4(_) => size_of::<libc::sockaddr_in>() as libc::socklen_t,
            RawAddr::V6(_) => size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        }
    }
}

/// Room for a received socket address (`sockaddr_in6` is the largest we take).
pub(crate) const NAME_LEN: usize = 32;
const _: () = assert!(NAME_LEN >= size_of::<libc::sockaddr_in6>());

/// A received name, aligned for `sockaddr_in6`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct NameBuf(pub(crate) [u8; NAME_LEN]);

/// Decodes a socket address written by the kernel, from its bytes (native
/// endian family, big endian port and address). `None` for another family or
/// a truncated name.
pub(crate) fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    if family == libc::AF_INET as u16 {
        let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    } else if family == libc::AF_INET6 as u16 {
        let flow = u32::from_ne_bytes(b.get(4..8)?.try_into().ok()?);
        let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
        let scope = u32::from_ne_bytes(b.get(24..28)?.try_into().ok()?);
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            flow,
            scope,
        )))
    } else {
        None
    }
}

/// Size of a control buffer: room for one `UDP_GRO`/`UDP_SEGMENT` message
/// plus slack for a second one.
pub(crate) const CMSG_BUF: usize = 64;
// SAFETY: CMSG_SPACE is a pure size computation.
const _: () =
    assert!(CMSG_BUF >= 2 * unsafe { libc::CMSG_SPACE(size_of::<i32>() as u32) } as usize);

/// A control-message buffer aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct CmsgBuf(pub(crate) [u8; CMSG_BUF]);
const _: () = assert!(align_of::<CmsgBuf>() >= align_of::<libc::cmsghdr>());

impl CmsgBuf {
    pub(crate) const fn new() -> CmsgBuf {
        CmsgBuf([0; CMSG_BUF])
    }
}

/// Writes control messages into the control buffer of a `msghdr`, one
/// after the other, as `CMSG_FIRSTHDR`/`CMSG_NXTHDR` lay them out; `finish`
/// sets `msg_controllen` to what was written (and the buffer to null when
/// nothing was).
struct Encoder<'a> {
    hdr: &'a mut libc::msghdr,
    cmsg: *mut libc::cmsghdr,
    len: usize,
}

impl<'a> Encoder<'a> {
    /// Starts encoding into `ctrl`, which `hdr` is pointed at (whole).
    fn new(hdr: &'a mut libc::msghdr, ctrl: &'a mut CmsgBuf) -> Encoder<'a> {
        hdr.msg_control = ctrl.0.as_mut_ptr().cast();
        hdr.msg_controllen = CMSG_BUF as _;
        // SAFETY: `hdr` points at `ctrl`, CMSG_BUF live bytes aligned for
        // cmsghdr (asserted above); CMSG_FIRSTHDR only reads the header.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
        Encoder { hdr, cmsg, len: 0 }
    }

    /// Appends one control message carrying `value`. Returns `false`, and
    /// writes nothing, when the buffer has no room left for it.
    fn push<T: Copy>(&mut self, level: libc::c_int, ty: libc::c_int, value: T) -> bool {
        const { assert!(align_of::<T>() <= align_of::<libc::cmsghdr>()) };
        // SAFETY: CMSG_SPACE and CMSG_LEN are pure size computations.
        let (space, len) = unsafe {
            (
                libc::CMSG_SPACE(size_of::<T>() as u32) as usize,
                libc::CMSG_LEN(size_of::<T>() as u32) as usize,
            )
        };
        if self.cmsg.is_null() || self.len + space > CMSG_BUF {
            return false;
        }
        // SAFETY: `cmsg` was returned by CMSG_FIRSTHDR/CMSG_NXTHDR for this
        // header, so it is aligned and lies in the control buffer, and the
        // check above keeps the whole message (header and data, `space`
        // bytes) inside it. `T` is no more aligned than the header, and
        // CMSG_DATA is aligned for it; the buffer is ours to write.
        unsafe {
            let c = &mut *self.cmsg;
            c.cmsg_level = level;
            c.cmsg_type = ty;
            c.cmsg_len = len as _;
            std::ptr::write(libc::CMSG_DATA(self.cmsg).cast::<T>(), value);
            self.len += space;
            // CMSG_NXTHDR reads the next header's length to bound it: make
            // it a well-defined zero first when there is room for a header.
            let next = self.cmsg.cast::<u8>().add(space).cast::<libc::cmsghdr>();
            if self.len + size_of::<libc::cmsghdr>() <= CMSG_BUF {
                std::ptr::write_bytes(next, 0, 1);
                self.cmsg = libc::CMSG_NXTHDR(self.hdr, self.cmsg);
            } else {
                self.cmsg = std::ptr::null_mut();
            }
        }
        true
    }

    /// Sets the header's control length to what was written.
    fn finish(self) {
        if self.len == 0 {
            self.hdr.msg_control = std::ptr::null_mut();
        }
        self.hdr.msg_controllen = self.len as _;
    }
}

/// Control messages received with a datagram, decoded one by one with
/// `CMSG_FIRSTHDR`/`CMSG_NXTHDR`. Each message's length is checked against
/// the bytes the kernel wrote before its data is read.
struct Decoder {
    /// A header whose control buffer is the received bytes.
    hdr: libc::msghdr,
    cmsg: *const libc::cmsghdr,
}

impl Decoder {
    /// Decodes `ctrl`, which must stay borrowed while the decoder is used.
    fn new(ctrl: &[u8]) -> Decoder {
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        let aligned = ctrl.as_ptr().align_offset(align_of::<libc::cmsghdr>()) == 0;
        if aligned {
            hdr.msg_control = ctrl.as_ptr().cast_mut().cast();
            hdr.msg_controllen = ctrl.len() as _;
        }
        // SAFETY: the header describes `ctrl` (or nothing, when `ctrl` is not
        // aligned for cmsghdr); CMSG_FIRSTHDR only compares the length.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
        Decoder { hdr, cmsg }
    }

    /// The next message's level and type, and its data when it holds at
    /// least a `T`.
    // The lengths are `size_t` with glibc, `socklen_t` with musl.
    #[allow(clippy::unnecessary_cast)]
    fn next<T: Copy>(&mut self) -> Option<(libc::c_int, libc::c_int, Option<T>)> {
        if self.cmsg.is_null() {
            return None;
        }
        let end = self.hdr.msg_control as usize + self.hdr.msg_controllen as usize;
        // SAFETY: `cmsg` came from CMSG_FIRSTHDR/CMSG_NXTHDR over the
        // borrowed control bytes: aligned, and its header lies inside them.
        let c = unsafe { &*self.cmsg };
        let len = c.cmsg_len as usize;
        // SAFETY: a pure size computation.
        let want = unsafe { libc::CMSG_LEN(size_of::<T>() as u32) } as usize;
        if len < size_of::<libc::cmsghdr>() || len > end - self.cmsg as usize {
            // A length that points outside the bytes written: stop.
            self.cmsg = std::ptr::null();
            return None;
        }
        let value = (len >= want).then(|| {
            // SAFETY: the message lies inside the control bytes (checked
            // above) and holds at least `size_of::<T>()` bytes of data;
            // they are read unaligned.
            unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(self.cmsg).cast::<T>()) }
        });
        let out = (c.cmsg_level, c.cmsg_type, value);
        // SAFETY: the header describes the borrowed bytes and `cmsg` is one
        // of its messages; CMSG_NXTHDR returns null past the end.
        self.cmsg = unsafe { libc::CMSG_NXTHDR(&self.hdr, self.cmsg) };
        Some(out)
    }
}

/// The `SOL_UDP`/`UDP_GRO` segment size among received control bytes.
pub(crate) fn gro_segment(ctrl: &[u8]) -> Option<usize> {
    if ctrl.as_ptr().align_offset(align_of::<libc::cmsghdr>()) != 0 {
        // Not where the kernel puts control data; decode a copy.
        let mut copy = CmsgBuf::new();
        let n = ctrl.len().min(CMSG_BUF);
        copy.0[..n].copy_from_slice(&ctrl[..n]);
        return gro_segment(&copy.0[..n]);
    }
    let mut d = Decoder::new(ctrl);
    while let Some((level, ty, v)) = d.next::<libc::c_int>() {
        if level == libc::SOL_UDP && ty == libc::UDP_GRO {
            return v.and_then(|v| usize::try_from(v).ok()).filter(|&v| v > 0);
        }
    }
    None
}

/// Everything one `sendmsg` points at besides the payload, kept at a fixed
/// address until the kernel has read it.
pub(crate) struct TxSlot {
    name: RawAddr,
    iov: libc::iovec,
    ctrl: CmsgBuf,
}

impl TxSlot {
    pub(crate) fn new() -> TxSlot {
        TxSlot {
            name: RawAddr::new(&SocketAddr::from(([0, 0, 0, 0], 0))),
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            ctrl: CmsgBuf::new(),
        }
    }

    /// Fills the slot for `t` and returns the header that sends it: no name
    /// when the socket is connected to `t.dest` (`connected`), a
    /// `UDP_SEGMENT` control message when `t` has several segments.
    ///
    /// The header points into this slot and at `t.contents`: both must stay
    /// where they are until the send has completed.
    pub(crate) fn prepare(&mut self, t: &Transmit<'_>, connected: bool) -> libc::msghdr {
        self.iov = libc::iovec {
            iov_base: t.contents.as_ptr().cast_mut().cast(),
            iov_len: t.contents.len(),
        };
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        if !connected {
            self.name = RawAddr::new(&t.dest);
            hdr.msg_name = self.name.as_ptr().cast_mut().cast();
            hdr.msg_namelen = self.name.len();
        }
        hdr.msg_iov = &mut self.iov;
        hdr.msg_iovlen = 1;
        let mut enc = Encoder::new(&mut hdr, &mut self.ctrl);
        if t.segments() > 1 {
            // A u16 segment size; `segment_size` below 64 KiB is the
            // caller's contract (MAX_UDP_PAYLOAD bounds the whole transmit).
            let seg = t.segment_size.min(u16::MAX as usize) as u16;
            let pushed = enc.push(libc::SOL_UDP, libc::UDP_SEGMENT, seg);
            debug_assert!(pushed, "CMSG_BUF holds a UDP_SEGMENT message");
        }
        enc.finish();
        hdr
    }
}

/// A receive header over one name buffer, one iovec and, with GRO, one
/// control buffer, all owned by the caller at fixed addresses.
pub(crate) fn recv_msghdr(
    name: &mut NameBuf,
    iov: &mut libc::iovec,
    ctrl: Option<&mut CmsgBuf>,
) -> libc::msghdr {
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = name.0.as_mut_ptr().cast();
    hdr.msg_namelen = NAME_LEN as libc::socklen_t;
    hdr.msg_iov = iov;
    hdr.msg_iovlen = 1;
    if let Some(c) = ctrl {
        hdr.msg_control = c.0.as_mut_ptr().cast();
        hdr.msg_controllen = CMSG_BUF as _;
    }
    hdr
}

/// A failed send of one transmit, classified: the one place that decides
/// what each errno means for both drivers.
#[derive(Debug)]
pub(crate) enum SendFailure {
    /// No room in the socket buffer (`EAGAIN`, `ENOBUFS`), interrupted
    /// (`EINTR`) or cancelled with its linked batch (`ECANCELED`): nothing
    /// went out; retry later.
    Retry,
    /// A queued ICMP error from an earlier datagram (`ECONNREFUSED`: the
    /// peer's port is closed): this datagram is lost, as on the wire, and
    /// counts as sent.
    Lost,
    /// The route's device refused a GSO super-datagram (`EIO`, `EINVAL` on
    /// a multi-segment transmit): stop using GSO.
    GsoRefused(io::Error),
    /// Anything else.
    Failed(io::Error),
}

/// Classifies the failure `e` of sending a transmit of `segments` segments.
pub(crate) fn classify_send_error(e: io::Error, segments: usize) -> SendFailure {
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR | libc::ECANCELED) => SendFailure::Retry,
        Some(libc::ECONNREFUSED) => SendFailure::Lost,
        Some(libc::EIO | libc::EINVAL) if segments > 1 => SendFailure::GsoRefused(e),
        _ => SendFailure::Failed(e),
    }
}

/// Sets an integer socket option.
pub(crate) fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    setsockopt_val(fd, level, name, &value)
}

/// Whether the kernel has UDP GSO: setting a zero segment size is accepted
/// by kernels that know `UDP_SEGMENT` (and turns nothing on).
pub(crate) fn probe_gso(fd: RawFd) -> bool {
    setsockopt_int(fd, libc::SOL_UDP, libc::UDP_SEGMENT, 0).is_ok()
}

/// Makes `sock` non-blocking and applies the buffer sizes and GRO of `cfg`;
/// returns whether GRO is on.
pub(crate) fn configure_socket(sock: &UdpSocket, cfg: &DriverConfig) -> io::Result<bool> {
    sock.set_nonblocking(true)?;
    let fd = sock.as_raw_fd();
    if cfg.rcvbuf > 0 {
        let v = cfg.rcvbuf.min(i32::MAX as usize) as libc::c_int;
        // FORCE needs CAP_NET_ADMIN; the plain option is capped by rmem_max.
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v).is_err() {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, v);
        }
    }
    if cfg.sndbuf > 0 {
        let v = cfg.sndbuf.min(i32::MAX as usize) as libc::c_int;
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v).is_err() {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, v);
        }
    }
    Ok(cfg.gro && setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok())
}

/// A UDP socket bound to `local`, which another socket of this process
/// holds with `SO_REUSEPORT` on for the moment (see
/// [`Driver::follow`](super::driver::Driver::follow)); the option is off on
/// the new socket when it is returned.
pub(crate) fn socket_beside(local: SocketAddr) -> io::Result<UdpSocket> {
    let sock = reusing_socket(local, &[libc::SO_REUSEPORT])?;
    setsockopt_int(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 0)?;
    Ok(sock)
}

/// A UDP socket (close-on-exec) bound to `addr`, with the `SOL_SOCKET`
/// options `reuse` (`SO_REUSEADDR`, `SO_REUSEPORT`) on before the bind.
fn reusing_socket(addr: SocketAddr, reuse: &[libc::c_int]) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: a plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket just created and owned by nothing else; the
    // `UdpSocket` takes ownership and closes it.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    for &name in reuse {
        setsockopt_int(fd, libc::SOL_SOCKET, name, 1)?;
    }
    let raw = RawAddr::new(&addr);
    // SAFETY: `raw` holds a sockaddr of `raw.len()` bytes that lives for the
    // call; the kernel only reads it.
    if unsafe { libc::bind(fd, raw.as_ptr(), raw.len()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// A multicast group of a `udp://GROUP:PORT` channel: a publication sends to
/// it, a subscription joins it (`join`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Multicast {
    /// The group address and port.
    pub group: SocketAddr,
    /// The interface (`iface=`): its IPv4 address, or its index (from a name;
    /// IPv6 needs one). None: the kernel's choice by route.
    pub iface: Option<MulticastIface>,
    /// Hops the datagrams may take (`ttl=`, IPv4 TTL or IPv6 hop limit).
    pub ttl: u8,
    /// Join the group (subscription) rather than send to it (publication).
    pub join: bool,
    /// A publication writes its group datagrams through a packet socket
    /// (`tx=packet`, see `packet_tx`).
    pub packet: bool,
}

/// The interface of a [`Multicast`] group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MulticastIface {
    /// The interface with this IPv4 address.
    Addr(Ipv4Addr),
    /// The interface with this index.
    Index(u32),
}

/// Sets a socket option from a plain struct.
fn setsockopt_val<T: Copy>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is a live `T` and the length passed is its size; the
    // kernel only reads from the pointer during the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The index of the interface named `name`, if there is one.
pub(crate) fn interface_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a NUL-terminated string that lives for the call; the
    // kernel only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

fn mreqn(group: Ipv4Addr, iface: Option<MulticastIface>) -> libc::ip_mreqn {
    let (addr, index) = match iface {
        Some(MulticastIface::Addr(a)) => (a, 0),
        Some(MulticastIface::Index(i)) => (Ipv4Addr::UNSPECIFIED, i),
        None => (Ipv4Addr::UNSPECIFIED, 0),
    };
    libc::ip_mreqn {
        imr_multiaddr: libc::in_addr {
            s_addr: u32::from_ne_bytes(group.octets()),
        },
        imr_address: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        imr_ifindex: index as libc::c_int,
    }
}

fn v6_index(iface: Option<MulticastIface>) -> io::Result<u32> {
    match iface {
        None => Ok(0),
        Some(MulticastIface::Index(i)) => Ok(i),
        Some(MulticastIface::Addr(_)) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an IPv6 group needs iface= as an interface name",
        )),
    }
}

/// A publication's socket sends to `m`'s group: on its interface, with its
/// TTL, looped back to subscriptions of this host.
pub(crate) fn multicast_sender(fd: RawFd, m: &Multicast) -> io::Result<()> {
    let ttl = libc::c_int::from(m.ttl);
    match m.group {
        SocketAddr::V4(g) => {
            setsockopt_val(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                &mreqn(*g.ip(), m.iface),
            )?;
            setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, ttl)?;
            setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, 1)
        }
        SocketAddr::V6(_) => {
            let index = v6_index(m.iface)? as libc::c_int;
            setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, index)?;
            setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, ttl)?;
            setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, 1)
        }
    }
}

/// A socket bound to `m`'s group address and port, member of the group on
/// its interface, configured from `cfg`. Several subscriptions of one host
/// share the port: `SO_REUSEADDR` is on (every socket bound to a group gets
/// a copy of each of its datagrams; a group is open to every host that joins
/// it anyway). Not `SO_REUSEPORT`: it adds nothing to sharing a group among
/// sockets that all set `SO_REUSEADDR`, and it puts the socket in a
/// reuseport group, which costs on every datagram received.
pub(crate) fn group_socket(m: &Multicast, cfg: &DriverConfig) -> io::Result<UdpSocket> {
    let sock = reusing_socket(m.group, &[libc::SO_REUSEADDR])?;
    let fd = sock.as_raw_fd();
    match m.group {
        SocketAddr::V4(g) => setsockopt_val(
            fd,
            libc::IPPROTO_IP,
            libc::IP_ADD_MEMBERSHIP,
            &mreqn(*g.ip(), m.iface),
        )?,
        SocketAddr::V6(g) => {
            let req = libc::ipv6_mreq {
                ipv6mr_multiaddr: libc::in6_addr {
                    s6_addr: g.ip().octets(),
                },
                ipv6mr_interface: v6_index(m.iface)?,
            };
            setsockopt_val(fd, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &req)?;
        }
    }
    configure_socket(&sock, cfg)?;
    Ok(sock)
}

/// One datagram to the peer `fd` is connected to: plain `send`, as a
/// bare socket does (no message header, name or control data to build
/// or copy in). Returns 1 when it left (or was lost to a queued ICMP error,
/// as on the wire), 0 when the socket had no room.
// Inlined: it is open across a system call (see "The latency path"
// in the `udp` module docs).
#[inline(always)]
pub(crate) fn send_one_to_peer(fd: RawFd, t: &Transmit<'_>) -> io::Result<usize> {
    // SAFETY: `contents` is a live slice for the duration of the call; the
    // kernel only reads `contents.len()` bytes from it.
    let r = unsafe {
        libc::send(
            fd,
            t.contents.as_ptr().cast(),
            t.contents.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        return match classify_send_error(io::Error::last_os_error(), 1) {
            SendFailure::Retry => Ok(0),
            SendFailure::Lost => Ok(1),
            SendFailure::GsoRefused(e) | SendFailure::Failed(e) => Err(e),
        };
    }
    Ok(1)
}

/// The bound UDP socket of a driver: non-blocking, its buffer sizes, GRO
/// and GSO set up, and the peer it is connected to, if any.
pub(crate) struct Socket {
    sock: UdpSocket,
    fd: RawFd,
    peer: Option<SocketAddr>,
    gro: bool,
    gso: bool,
}

impl Socket {
    /// Binds a socket to `bind` and configures it from `cfg`.
    ///
    /// # Errors
    /// Bind or socket option errors.
    pub(crate) fn bind(bind: SocketAddr, cfg: &DriverConfig) -> io::Result<Socket> {
        let sock = UdpSocket::bind(bind)?;
        let gro = configure_socket(&sock, cfg)?;
        let fd = sock.as_raw_fd();
        if let Some(m) = cfg.multicast.filter(|m| !m.join) {
            multicast_sender(fd, &m)?;
        }
        let gso = cfg.gso && probe_gso(fd);
        Ok(Socket {
            sock,
            fd,
            peer: None,
            gro,
            gso,
        })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    pub(crate) fn gro(&self) -> bool {
        self.gro
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// The peer the socket is connected to.
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Connects the socket to its only peer.
    pub(crate) fn connect(&mut self, peer: SocketAddr) -> io::Result<()> {
        self.sock.connect(peer)?;
        self.peer = Some(peer);
        Ok(())
    }

    /// Largest number of segments in one transmit (1 without GSO).
    pub(crate) fn max_segments(&self) -> usize {
        if self.gso {
            MAX_GSO_SEGMENTS
        } else {
            1
        }
    }

    /// Refuses a batch with a multi-segment transmit when GSO is off.
    pub(crate) fn check_batch(&self, batch: &[Transmit<'_>]) -> io::Result<()> {
        if !self.gso && batch.iter().any(|t| t.segments() > 1) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "multi-segment transmit without GSO",
            ));
        }
        Ok(())
    }

    /// The latency path: `t` alone, one datagram, to the connected peer,
    /// sent with a plain `send`. `None` when `t` is not that.
    #[inline(always)]
    pub(crate) fn send_to_peer(&self, t: &Transmit<'_>) -> Option<io::Result<usize>> {
        (t.segments() == 1 && self.peer == Some(t.dest)).then(|| send_one_to_peer(self.fd, t))
    }

    /// What a driver's `send` returns when sending `first` (the front of
    /// the batch) failed with `e`: `Ok(0)` to retry later, `Ok(1)` for a
    /// datagram lost as on the wire, else the error (after turning GSO off
    /// when the device refused it).
    pub(crate) fn send_failed(&mut self, e: io::Error, first: &Transmit<'_>) -> io::Result<usize> {
        match classify_send_error(e, first.segments()) {
            SendFailure::Retry => Ok(0),
            SendFailure::Lost => Ok(1),
            SendFailure::GsoRefused(e) => {
                // The caller re-sends as single datagrams.
                self.gso = false;
                Err(e)
            }
            SendFailure::Failed(e) => Err(e),
        }
    }
}

/// Hands `payload` to `f`, split into `seg`-sized datagrams when GRO
/// coalesced several. Returns the number of datagrams.
///
/// `payload` starts 8-aligned (a receive slot); a segment that does not
/// (the segment size is not a multiple of 8) is copied to `scratch`
/// first, so that every datagram handed out is 8-aligned.
#[inline]
pub(crate) fn deliver<F: FnMut(SocketAddr, &[u8])>(
    from: SocketAddr,
    payload: &[u8],
    seg: Option<usize>,
    scratch: &mut Vec<u64>,
    f: &mut F,
) -> usize {
    match seg {
        Some(s) if s < payload.len() => {
            let mut n = 0;
            for chunk in payload.chunks(s) {
                if chunk.as_ptr().align_offset(8) == 0 {
                    f(from, chunk);
                } else {
                    f(from, aligned_copy(scratch, chunk));
                }
                n += 1;
            }
            n
        }
        _ => {
            f(from, payload);
            1
        }
    }
}

/// `b` copied to the front of `scratch` (grown as needed), 8-aligned.
fn aligned_copy<'a>(scratch: &'a mut Vec<u64>, b: &[u8]) -> &'a [u8] {
    use zerocopy::IntoBytes;
    let words = b.len().div_ceil(8);
    if scratch.len() < words {
        scratch.resize(words, 0);
    }
    let out = &mut scratch.as_mut_bytes()[..b.len()];
    out.copy_from_slice(b);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_roundtrip_through_bytes() {
        for a in ["127.0.0.1:4000", "[::1]:5000", "10.9.8.7:65535"] {
            let a: SocketAddr = a.parse().unwrap();
            let raw = RawAddr::new(&a);
            let mut bytes = [0u8; NAME_LEN];
            match raw {
                RawAddr::V4(s) => {
                    bytes[0..2].copy_from_slice(&s.sin_family.to_ne_bytes());
                    bytes[2..4].copy_from_slice(&s.sin_port.to_ne_bytes());
                    bytes[4..8].copy_from_slice(&s.sin_addr.s_addr.to_ne_bytes());
                }
                RawAddr::V6(s) => {
                    bytes[0..2].copy_from_slice(&s.sin6_family.to_ne_bytes());
                    bytes[2..4].copy_from_slice(&s.sin6_port.to_ne_bytes());
                    bytes[8..24].copy_from_slice(&s.sin6_addr.s6_addr);
                }
            }
            assert_eq!(parse_sockaddr(&bytes), Some(a));
        }
        assert_eq!(parse_sockaddr(&[1, 2]), None);
        assert_eq!(parse_sockaddr(&[0; 32]), None);
    }

    /// A header's control length (`size_t` with glibc, `socklen_t` with musl).
    #[allow(clippy::unnecessary_cast)]
    fn controllen(hdr: &libc::msghdr) -> usize {
        hdr.msg_controllen as usize
    }

    /// The control bytes of a prepared header.
    fn control_of(hdr: &libc::msghdr) -> &[u8] {
        if hdr.msg_control.is_null() {
            return &[];
        }
        // SAFETY: `prepare` points the header at the slot's control
        // buffer, `msg_controllen` bytes of it written, alive with `hdr`.
        unsafe { std::slice::from_raw_parts(hdr.msg_control.cast::<u8>(), controllen(hdr)) }
    }

    #[test]
    fn a_multi_segment_transmit_carries_udp_segment() {
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let data = [0u8; 3000];
        let mut slot = TxSlot::new();
        let t = Transmit {
            dest,
            contents: &data,
            segment_size: 1400,
        };
        let hdr = slot.prepare(&t, false);
        // SAFETY: a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(2) } as usize;
        assert_eq!(controllen(&hdr), space);
        assert_eq!(hdr.msg_namelen, RawAddr::new(&dest).len());
        let mut d = Decoder::new(control_of(&hdr));
        assert_eq!(
            d.next::<u16>(),
            Some((libc::SOL_UDP, libc::UDP_SEGMENT, Some(1400)))
        );
        assert_eq!(d.next::<u16>(), None);
        // A GRO message is laid out the same way, with an int.
        assert_eq!(gro_segment(control_of(&hdr)), None);

        // One segment, connected: no name, no control data.
        let one = Transmit {
            dest,
            contents: &data[..100],
            segment_size: 100,
        };
        let hdr = slot.prepare(&one, true);
        assert!(hdr.msg_name.is_null() && hdr.msg_namelen == 0);
        assert!(hdr.msg_control.is_null() && hdr.msg_controllen == 0);
    }

    /// Control bytes as the kernel writes them, built with the encoder.
    fn encoded(msgs: &[(libc::c_int, libc::c_int, libc::c_int)]) -> (CmsgBuf, usize) {
        let mut buf = CmsgBuf::new();
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut enc = Encoder::new(&mut hdr, &mut buf);
        for &(l, t, v) in msgs {
            assert!(enc.push(l, t, v));
        }
        enc.finish();
        let n = controllen(&hdr);
        (buf, n)
    }

    #[test]
    fn gro_segment_is_found_among_control_messages() {
        let (b, n) = encoded(&[(libc::SOL_UDP, libc::UDP_GRO, 1400)]);
        assert_eq!(gro_segment(&b.0[..n]), Some(1400));
        let (b, n) = encoded(&[
            (libc::SOL_SOCKET, libc::SO_MARK, 7),
            (libc::SOL_UDP, libc::UDP_GRO, 8972),
        ]);
        assert_eq!(gro_segment(&b.0[..n]), Some(8972));
        // Misaligned bytes are decoded from an aligned copy.
        let mut shifted = [0u8; CMSG_BUF + 1];
        shifted[1..n + 1].copy_from_slice(&b.0[..n]);
        assert_eq!(gro_segment(&shifted[1..n + 1]), Some(8972));
        // Zero or negative sizes, garbage, truncation: nothing.
        let (b, n) = encoded(&[(libc::SOL_UDP, libc::UDP_GRO, 0)]);
        assert_eq!(gro_segment(&b.0[..n]), None);
        let (b, n) = encoded(&[(libc::SOL_UDP, libc::UDP_GRO, -5)]);
        assert_eq!(gro_segment(&b.0[..n]), None);
        let ff = CmsgBuf([0xff; CMSG_BUF]);
        assert_eq!(gro_segment(&ff.0), None);
        let (b, n) = encoded(&[(libc::SOL_UDP, libc::UDP_GRO, 1400)]);
        for cut in 0..n {
            let got = gro_segment(&b.0[..cut]);
            assert!(got.is_none() || got == Some(1400), "cut {cut}: {got:?}");
        }
        assert_eq!(gro_segment(&[]), None);
    }

    #[test]
    fn the_encoder_refuses_what_does_not_fit() {
        let mut buf = CmsgBuf::new();
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut enc = Encoder::new(&mut hdr, &mut buf);
        let mut n = 0;
        while enc.push(libc::SOL_UDP, libc::UDP_GRO, 1i32) {
            n += 1;
            assert!(n <= CMSG_BUF, "never full");
        }
        enc.finish();
        // SAFETY: a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(4) } as usize;
        assert_eq!(n, CMSG_BUF / space);
        assert_eq!(controllen(&hdr), n * space);
    }

    #[test]
    fn send_errors_are_classified_once() {
        let c = |errno, segs| classify_send_error(io::Error::from_raw_os_error(errno), segs);
        for errno in [libc::EAGAIN, libc::ENOBUFS, libc::EINTR, libc::ECANCELED] {
            assert!(matches!(c(errno, 1), SendFailure::Retry));
        }
        assert!(matches!(c(libc::ECONNREFUSED, 1), SendFailure::Lost));
        assert!(matches!(c(libc::EIO, 4), SendFailure::GsoRefused(_)));
        assert!(matches!(c(libc::EINVAL, 2), SendFailure::GsoRefused(_)));
        assert!(matches!(c(libc::EINVAL, 1), SendFailure::Failed(_)));
        assert!(matches!(c(libc::EBADF, 1), SendFailure::Failed(_)));
    }

    #[test]
    fn a_refused_gso_is_turned_off() {
        let cfg = DriverConfig::default();
        let mut s = Socket::bind("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
        if s.max_segments() == 1 {
            return; // no GSO in this kernel: nothing to turn off
        }
        let data = [0u8; 200];
        let t = Transmit {
            dest: "127.0.0.1:9".parse().unwrap(),
            contents: &data,
            segment_size: 100,
        };
        assert!(s.check_batch(&[t]).is_ok());
        let e = io::Error::from_raw_os_error(libc::EIO);
        assert!(s.send_failed(e, &t).is_err());
        assert_eq!(s.max_segments(), 1);
        assert!(s.check_batch(&[t]).is_err());
    }
}
