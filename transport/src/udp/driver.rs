//! The datagram driver interface: move batches of datagrams between a UDP
//! socket and the protocol, and nothing else.
//!
//! Two implementations exist:
//! - [`super::driver_socket::SocketDriver`]: a non-blocking
//!   socket with `recvmmsg`/`sendmmsg`, UDP GSO (`UDP_SEGMENT`) and GRO
//!   (`UDP_GRO`) where the kernel has them;
//! - [`super::driver_uring::UringDriver`]: io_uring with a
//!   multishot `RecvMsgMulti` over a provided-buffer ring and batched
//!   `SendMsg` submissions (many datagrams per `io_uring_enter`).
//!
//! [`open_driver`] picks one: the choice comes from the URI (`driver=`), else
//! the environment variable `CONDUIT_UDP_DRIVER`, else [`DEFAULT_DRIVER`].
//! `prefer-uring` (and `auto`, were the default io_uring) uses io_uring when
//! its setup succeeds and the socket driver when it fails as unavailable
//! (ENOSYS, EPERM from `kernel.io_uring_disabled` or a seccomp filter,
//! EINVAL from a kernel without these features); `uring` forced fails
//! instead. The driver in use is logged once per process and kind (one line
//! on stderr) and can be queried with [`Driver::kind`].
//!
//! Received datagrams are handed to a callback as slices that borrow the
//! driver's own receive buffers (the socket's `recvmmsg` array or the io_uring
//! buffer ring) for the duration of the call: no copy is made, and the
//! buffers are reused as soon as the callback returns.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::driver_socket::SocketDriver;
use super::driver_uring::UringDriver;

/// Name of the environment variable that forces a driver (`socket` or `uring`).
pub const DRIVER_ENV: &str = "CONDUIT_UDP_DRIVER";

/// Largest number of GSO segments sent in one super-datagram.
pub const MAX_GSO_SEGMENTS: usize = 64;

/// Largest UDP payload the kernel accepts in one (super-)datagram.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Which driver moves the datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring.
    Uring,
    /// Plain non-blocking socket system calls.
    Socket,
}

impl DriverKind {
    /// The name used in URIs, counters and logs (`"uring"`, `"socket"`).
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Uring => "uring",
            DriverKind::Socket => "socket",
        }
    }
}

/// The requested driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriverChoice {
    /// The default for the mode, falling back to the socket driver when
    /// io_uring is unavailable.
    #[default]
    Auto,
    /// io_uring, or an error when it cannot be set up.
    Uring,
    /// io_uring when it can be set up, else the socket driver.
    PreferUring,
    /// The socket driver.
    Socket,
}

impl DriverChoice {
    /// Parses `"auto"`, `"uring"`, `"prefer-uring"` or `"socket"`.
    pub fn parse(s: &str) -> Option<DriverChoice> {
        match s {
            "auto" => Some(DriverChoice::Auto),
            "uring" | "io_uring" => Some(DriverChoice::Uring),
            "prefer-uring" => Some(DriverChoice::PreferUring),
            "socket" => Some(DriverChoice::Socket),
            _ => None,
        }
    }
}

/// How long a receive call may wait for the first datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Return at once with whatever is already there (busy-poll mode).
    NoWait,
    /// Block up to this long for the first datagram (blocking mode).
    Timeout(Duration),
}

/// Settings for opening a driver.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Which driver to use.
    pub choice: DriverChoice,
    /// Largest datagram to receive (without GRO), in bytes.
    pub max_datagram: usize,
    /// How many datagrams one receive call can take in (the receive ring size).
    pub rx_batch: usize,
    /// Ask for UDP GRO on receive (coalesced same-size datagrams).
    pub gro: bool,
    /// Use UDP GSO on send when the kernel has it.
    pub gso: bool,
    /// Only one thread will ever use the driver (enables io_uring
    /// `SINGLE_ISSUER`/`DEFER_TASKRUN`).
    pub single_thread: bool,
    /// Socket receive buffer to request, in bytes (0: kernel default).
    pub rcvbuf: usize,
    /// Socket send buffer to request, in bytes (0: kernel default).
    pub sndbuf: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            choice: DriverChoice::Auto,
            max_datagram: 2048,
            rx_batch: 64,
            gro: true,
            gso: true,
            single_thread: true,
            rcvbuf: 4 << 20,
            sndbuf: 4 << 20,
        }
    }
}

impl DriverConfig {
    /// Bytes of user-space receive buffer the driver will allocate: one slot per
    /// batch entry, each large enough for a GRO super-datagram when GRO is on.
    pub fn rx_buffer_bytes(&self) -> usize {
        self.rx_batch * self.rx_slot_size()
    }

    /// Size of one receive slot, a multiple of 8: slots lie end to end in
    /// an 8-aligned allocation, so every datagram starts 8-aligned and the
    /// messages in it keep the alignment the sender gave them, whatever
    /// the MTU.
    pub fn rx_slot_size(&self) -> usize {
        let slot = if self.gro {
            MAX_UDP_PAYLOAD + 29
        } else {
            self.max_datagram.clamp(64, MAX_UDP_PAYLOAD)
        };
        slot.next_multiple_of(8)
    }
}

/// One datagram, or several same-size datagrams for one destination sent as
/// a GSO super-datagram.
#[derive(Debug, Clone, Copy)]
pub struct Transmit<'a> {
    /// Where to send.
    pub dest: SocketAddr,
    /// The bytes: `contents.len() / segment_size` full segments, then possibly
    /// a shorter last one.
    pub contents: &'a [u8],
    /// Size of each datagram; `>= contents.len()` for a single datagram.
    pub segment_size: usize,
}

impl Transmit<'_> {
    /// Number of datagrams this transmit puts on the wire.
    pub fn segments(&self) -> usize {
        if self.segment_size == 0 || self.contents.len() <= self.segment_size {
            1
        } else {
            self.contents.len().div_ceil(self.segment_size)
        }
    }
}

/// Moves batches of datagrams.
pub trait Driver {
    /// The driver kind.
    fn kind(&self) -> DriverKind;

    /// The bound local address.
    ///
    /// # Errors
    /// The socket's error.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Largest number of segments in one [`Transmit`] (1 without GSO).
    fn max_segments(&self) -> usize;

    /// Connects the socket to its only peer: sends to `peer` skip the route
    /// lookup, and datagrams from other sources are dropped by the kernel.
    ///
    /// # Errors
    /// The socket's `connect` error.
    fn connect(&mut self, peer: SocketAddr) -> io::Result<()>;

    /// Datagrams from `peer` are expected from now on (a receiver's current
    /// sender). A driver may give them a path of their own: the socket
    /// driver receives them on a second socket, bound to the same local
    /// address and connected to `peer`, so that the kernel matches them by
    /// their full address and no source address is copied out per datagram.
    /// Datagrams from anyone else still arrive, through the bound socket.
    /// The address is never open to another user's socket: the two share
    /// it through `SO_REUSEPORT` (which the kernel grants only to sockets
    /// of the same effective uid), set for the one bind of the second
    /// socket and cleared on both before anything else; `SO_REUSEADDR` is
    /// never set. A process of the same user can still join during that
    /// one bind (as it could debug this process); no one else can. The
    /// default does nothing.
    ///
    /// # Errors
    /// The second socket cannot be set up; the driver then goes on as
    /// before (everything through the bound socket).
    fn follow(&mut self, peer: SocketAddr) -> io::Result<()> {
        let _ = peer;
        Ok(())
    }

    /// Datagrams dropped so far because they were larger than a receive
    /// slot (the kernel cut them: `MSG_TRUNC`, a truncated completion).
    /// The default counts none.
    fn oversized(&self) -> u64 {
        0
    }

    /// Sends a batch. Returns how many transmits, from the front, went out;
    /// fewer than `batch.len()` when the socket buffer is full (the rest was
    /// not sent and may be retried).
    ///
    /// # Errors
    /// A socket error other than "would block" on the first transmit.
    fn send(&mut self, batch: &[Transmit<'_>]) -> io::Result<usize>;

    /// Receives what is available (waiting as `wait` says for the first
    /// datagram), up to about `max` datagrams, and hands each datagram to
    /// `f`, with its source. Returns the number of datagrams handed out. GRO
    /// super-datagrams are split (and may exceed `max`).
    ///
    /// # Errors
    /// A socket or io_uring error (timeouts and interruptions are `Ok(0)`).
    fn recv<F: FnMut(SocketAddr, &[u8])>(
        &mut self,
        wait: Wait,
        max: usize,
        f: F,
    ) -> io::Result<usize>;
}

/// Either driver, chosen at run time.
// One driver per channel, never moved on a hot path: the size difference
// does not matter, and no indirection sits on the datagram path.
#[allow(clippy::large_enum_variant)]
pub enum AnyDriver {
    /// The io_uring driver.
    Uring(UringDriver),
    /// The socket driver.
    Socket(SocketDriver),
}

impl std::fmt::Debug for AnyDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AnyDriver").field(&self.kind()).finish()
    }
}

impl Driver for AnyDriver {
    fn kind(&self) -> DriverKind {
        match self {
            AnyDriver::Uring(_) => DriverKind::Uring,
            AnyDriver::Socket(_) => DriverKind::Socket,
        }
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            AnyDriver::Uring(d) => d.local_addr(),
            AnyDriver::Socket(d) => d.local_addr(),
        }
    }
    fn max_segments(&self) -> usize {
        match self {
            AnyDriver::Uring(d) => d.max_segments(),
            AnyDriver::Socket(d) => d.max_segments(),
        }
    }
    fn connect(&mut self, peer: SocketAddr) -> io::Result<()> {
        match self {
            AnyDriver::Uring(d) => d.connect(peer),
            AnyDriver::Socket(d) => d.connect(peer),
        }
    }
    fn follow(&mut self, peer: SocketAddr) -> io::Result<()> {
        match self {
            AnyDriver::Uring(d) => d.follow(peer),
            AnyDriver::Socket(d) => d.follow(peer),
        }
    }
    fn oversized(&self) -> u64 {
        match self {
            AnyDriver::Uring(d) => d.oversized(),
            AnyDriver::Socket(d) => d.oversized(),
        }
    }
    #[inline]
    fn send(&mut self, batch: &[Transmit<'_>]) -> io::Result<usize> {
        match self {
            AnyDriver::Uring(d) => d.send(batch),
            AnyDriver::Socket(d) => d.send(batch),
        }
    }
    #[inline]
    fn recv<F: FnMut(SocketAddr, &[u8])>(
        &mut self,
        wait: Wait,
        max: usize,
        f: F,
    ) -> io::Result<usize> {
        match self {
            AnyDriver::Uring(d) => d.recv(wait, max, f),
            AnyDriver::Socket(d) => d.recv(wait, max, f),
        }
    }
}

/// The driver the environment asks for, if any.
///
/// # Errors
/// `InvalidInput` naming the variable when its value is not `auto`, `uring`
/// or `socket`.
pub fn env_choice() -> io::Result<Option<DriverChoice>> {
    parse_env_choice(std::env::var(DRIVER_ENV).ok().as_deref())
}

fn parse_env_choice(v: Option<&str>) -> io::Result<Option<DriverChoice>> {
    match v {
        None | Some("") => Ok(None),
        Some(v) => DriverChoice::parse(v).map(Some).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{DRIVER_ENV}={v:?}: expected auto, uring, prefer-uring or socket"),
            )
        }),
    }
}

/// Whether an io_uring setup error means "io_uring is not available here"
/// (fall back) rather than a real failure.
pub fn is_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS | libc::EPERM | libc::EACCES | libc::EINVAL | libc::EOPNOTSUPP)
    )
}

/// The default driver. Measured on loopback (see the module docs of
/// [`crate::udp`]): the socket driver's spin on `recvmmsg` has the lower
/// latency and the higher throughput with GSO/GRO, so it is the default for
/// both the busy-poll and the blocking mode; io_uring is opt-in.
pub const DEFAULT_DRIVER: DriverKind = DriverKind::Socket;

/// Opens a driver bound to `bind`, choosing the kind as described in the
/// module docs. The URI's choice wins over the environment's.
///
/// # Errors
/// Socket errors (bind), an invalid environment value, or io_uring errors
/// when io_uring was forced.
pub fn open_driver(bind: SocketAddr, cfg: &DriverConfig) -> io::Result<AnyDriver> {
    let choice = match cfg.choice {
        DriverChoice::Auto => env_choice()?.unwrap_or(DriverChoice::Auto),
        c => c,
    };
    let choice = match (choice, DEFAULT_DRIVER) {
        (DriverChoice::Auto, DriverKind::Socket) => DriverChoice::Socket,
        (DriverChoice::Auto, DriverKind::Uring) => DriverChoice::PreferUring,
        (c, _) => c,
    };
    let (driver, note) = match choice {
        DriverChoice::Uring => (AnyDriver::Uring(UringDriver::open(bind, cfg)?), None),
        DriverChoice::PreferUring => match UringDriver::open(bind, cfg) {
            Ok(d) => (AnyDriver::Uring(d), None),
            Err(e) if is_unavailable(&e) => (
                AnyDriver::Socket(SocketDriver::open(bind, cfg)?),
                Some(format!(" (io_uring unavailable: {e})")),
            ),
            Err(e) => return Err(e),
        },
        DriverChoice::Socket | DriverChoice::Auto => {
            (AnyDriver::Socket(SocketDriver::open(bind, cfg)?), None)
        }
    };
    log_once(driver.kind(), note.as_deref().unwrap_or(""));
    Ok(driver)
}

static LOGGED_URING: AtomicBool = AtomicBool::new(false);
static LOGGED_SOCKET: AtomicBool = AtomicBool::new(false);

/// Prints `conduit: udp driver <kind>` once per process and kind.
fn log_once(kind: DriverKind, note: &str) {
    let flag = match kind {
        DriverKind::Uring => &LOGGED_URING,
        DriverKind::Socket => &LOGGED_SOCKET,
    };
    print_once(
        flag,
        format_args!("conduit: udp driver {}{note}", kind.name()),
    );
}

/// Prints `line` on stderr unless `flag` was already set (once per process
/// and flag).
pub(crate) fn print_once(flag: &AtomicBool, line: std::fmt::Arguments<'_>) {
    // Relaxed: the flag only deduplicates a log line, it guards no data.
    if !flag.swap(true, Ordering::Relaxed) {
        eprintln!("{line}");
    }
}

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

/// Size of the control buffer: room for one `UDP_GRO`/`UDP_SEGMENT` message
/// plus slack for a second one.
pub(crate) const CMSG_BUF: usize = 64;

/// A control-message buffer aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct CmsgBuf(pub(crate) [u8; CMSG_BUF]);

const CMSG_HDR: usize = size_of::<libc::cmsghdr>();

/// Writes one `SOL_UDP`/`UDP_SEGMENT` control message carrying `seg` into
/// `buf`; returns the control length to put in `msg_controllen`.
pub(crate) fn write_udp_segment(buf: &mut CmsgBuf, seg: u16) -> usize {
    let data_len = size_of::<u16>();
    let cmsg_len = CMSG_HDR + data_len;
    let b = &mut buf.0;
    b[..CMSG_BUF].fill(0);
    b[..size_of::<usize>()].copy_from_slice(&cmsg_len.to_ne_bytes());
    let lvl = size_of::<usize>();
    b[lvl..lvl + 4].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
    b[lvl + 4..lvl + 8].copy_from_slice(&libc::UDP_SEGMENT.to_ne_bytes());
    b[CMSG_HDR..CMSG_HDR + data_len].copy_from_slice(&seg.to_ne_bytes());
    (cmsg_len + 7) & !7
}

/// Finds a `SOL_UDP`/`UDP_GRO` control message in received control bytes
/// and returns its segment size.
pub(crate) fn find_gro_segment(ctrl: &[u8]) -> Option<usize> {
    let mut off = 0usize;
    while off + CMSG_HDR <= ctrl.len() {
        let len = usize::from_ne_bytes(ctrl[off..off + 8].try_into().ok()?);
        let level = i32::from_ne_bytes(ctrl[off + 8..off + 12].try_into().ok()?);
        let ty = i32::from_ne_bytes(ctrl[off + 12..off + 16].try_into().ok()?);
        if len < CMSG_HDR || off + len > ctrl.len() {
            return None;
        }
        if level == libc::SOL_UDP && ty == libc::UDP_GRO && len >= CMSG_HDR + 4 {
            let v = i32::from_ne_bytes(ctrl[off + CMSG_HDR..off + CMSG_HDR + 4].try_into().ok()?);
            return usize::try_from(v).ok().filter(|&v| v > 0);
        }
        off += (len + 7) & !7;
    }
    None
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

/// One datagram to the peer `fd` is connected to: plain `send`, as a
/// bare socket does (no message header, name or control data to build
/// or copy in). Returns 1 when it left (or was lost to a queued ICMP error,
/// as on the wire), 0 when the socket had no room.
// Inlined: it is open across a system call (see "The latency path"
// in the `udp` module docs).
#[inline(always)]
pub(crate) fn send_one_to_peer(fd: std::os::fd::RawFd, t: &Transmit<'_>) -> io::Result<usize> {
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
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => Ok(0),
            Some(libc::ECONNREFUSED) => Ok(1),
            _ => Err(e),
        };
    }
    Ok(1)
}

/// Sets an integer socket option.
pub(crate) fn setsockopt_int(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and the length passed is its size; the
    // kernel only reads from the pointer during the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Binds a non-blocking UDP socket and applies the buffer sizes and GRO.
/// Returns the socket and whether GRO is on.
pub(crate) fn bind_socket(
    bind: SocketAddr,
    cfg: &DriverConfig,
) -> io::Result<(std::net::UdpSocket, bool)> {
    let sock = std::net::UdpSocket::bind(bind)?;
    let gro = configure_socket(&sock, cfg)?;
    Ok((sock, gro))
}

/// Makes `sock` non-blocking and applies the buffer sizes and GRO of `cfg`;
/// returns whether GRO is on.
pub(crate) fn configure_socket(sock: &std::net::UdpSocket, cfg: &DriverConfig) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
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

    #[test]
    fn cmsg_segment_roundtrip() {
        let mut b = CmsgBuf([0; CMSG_BUF]);
        let n = write_udp_segment(&mut b, 1400);
        assert_eq!(n, 24);
        // A GRO message has the same layout with an i32 payload.
        let mut g = [0u8; 24];
        g[..8].copy_from_slice(&20usize.to_ne_bytes());
        g[8..12].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
        g[12..16].copy_from_slice(&libc::UDP_GRO.to_ne_bytes());
        g[16..20].copy_from_slice(&1400i32.to_ne_bytes());
        assert_eq!(find_gro_segment(&g), Some(1400));
        assert_eq!(find_gro_segment(&b.0[..n]), None);
        assert_eq!(find_gro_segment(&[0xff; 40]), None);
    }

    #[test]
    fn environment_choice_is_validated() {
        assert_eq!(parse_env_choice(None).unwrap(), None);
        assert_eq!(parse_env_choice(Some("")).unwrap(), None);
        assert_eq!(
            parse_env_choice(Some("uring")).unwrap(),
            Some(DriverChoice::Uring)
        );
        assert_eq!(
            parse_env_choice(Some("prefer-uring")).unwrap(),
            Some(DriverChoice::PreferUring)
        );
        let e = parse_env_choice(Some("dpdk")).unwrap_err().to_string();
        assert!(e.contains(DRIVER_ENV) && e.contains("dpdk"), "{e}");
    }

    #[test]
    fn transmit_segments() {
        let d: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let t = Transmit {
            dest: d,
            contents: &[0; 100],
            segment_size: 40,
        };
        assert_eq!(t.segments(), 3);
        let t = Transmit {
            dest: d,
            contents: &[0; 100],
            segment_size: 100,
        };
        assert_eq!(t.segments(), 1);
    }
}
