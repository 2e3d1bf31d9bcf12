//! The datagram driver interface: move batches of datagrams between a UDP
//! socket and the protocol, and nothing else.
//!
//! Two implementations exist:
//! - `SocketDriver` (`driver_socket.rs`): a non-blocking socket with
//!   `recvmmsg`/`sendmmsg`, UDP GSO (`UDP_SEGMENT`) and GRO (`UDP_GRO`)
//!   where the kernel has them;
//! - `UringDriver` (`driver_uring.rs`, cargo feature `uring`): io_uring
//!   with a multishot `RecvMsgMulti` over a provided-buffer ring and batched
//!   `SendMsg` submissions (many datagrams per `io_uring_enter`).
//!
//! Both keep only their own system calls; the socket, addresses, headers,
//! control messages and error classification they share live in
//! `sys.rs`.
//!
//! [`open_driver`] picks one: the choice comes from the URI (`driver=`), else
//! the environment variable `CONDUIT_UDP_DRIVER`, else [`DEFAULT_DRIVER`].
//! `prefer-uring` (and `auto`, were the default io_uring) uses io_uring when
//! its setup succeeds and the socket driver when it fails as unavailable
//! (ENOSYS, EPERM from `kernel.io_uring_disabled` or a seccomp filter,
//! EINVAL from a kernel without these features) or when this build has no
//! io_uring (the `uring` feature off); each channel's
//! [`Counters::driver`](crate::Counters::driver) names the driver it got.
//! `uring` forced fails instead: with the io_uring
//! error, or `ErrorKind::Unsupported` when the feature is off. The driver in
//! use is logged once per process and kind (through the `log` crate, with
//! the `log` feature) and can be queried with [`Driver::kind`].
//!
//! Received datagrams are handed to a callback as slices that borrow the
//! driver's own receive buffers (the socket's `recvmmsg` array or the io_uring
//! buffer ring) for the duration of the call: no copy is made, and the
//! buffers are reused as soon as the callback returns.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::driver_socket::SocketDriver;
#[cfg(feature = "uring")]
use super::driver_uring::UringDriver;
use super::logging::log_once;

/// Name of the environment variable that forces a driver (`socket` or `uring`).
pub(crate) const DRIVER_ENV: &str = "CONDUIT_UDP_DRIVER";

/// Largest number of GSO segments sent in one super-datagram.
pub(crate) const MAX_GSO_SEGMENTS: usize = 64;

/// Largest UDP payload the kernel accepts in one (super-)datagram.
pub(crate) const MAX_UDP_PAYLOAD: usize = 65_507;

/// Which driver moves the datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DriverKind {
    /// io_uring.
    // Named (and a possible default) even in a build without io_uring.
    #[cfg_attr(not(feature = "uring"), allow(dead_code))]
    Uring,
    /// Plain non-blocking socket system calls.
    Socket,
}

impl DriverKind {
    /// The name used in URIs, counters and logs (`"uring"`, `"socket"`).
    pub(crate) fn name(self) -> &'static str {
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
    pub(crate) fn parse(s: &str) -> Option<DriverChoice> {
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
pub(crate) enum Wait {
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
    /// A multicast group to send to or join (`udp://GROUP:PORT`).
    pub multicast: Option<super::sys::Multicast>,
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
            multicast: None,
        }
    }
}

impl DriverConfig {
    /// Bytes of user-space receive buffer the driver will allocate: one slot per
    /// batch entry, each large enough for a GRO super-datagram when GRO is on.
    pub(crate) fn rx_buffer_bytes(&self) -> usize {
        self.rx_batch * self.rx_slot_size()
    }

    /// Size of one receive slot, a multiple of 8: slots lie end to end in
    /// an 8-aligned allocation, so every datagram starts 8-aligned and the
    /// messages in it keep the alignment the sender gave them, whatever
    /// the MTU.
    pub(crate) fn rx_slot_size(&self) -> usize {
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
pub(crate) struct Transmit<'a> {
    /// Where to send.
    pub(crate) dest: SocketAddr,
    /// The bytes: `contents.len() / segment_size` full segments, then possibly
    /// a shorter last one.
    pub(crate) contents: &'a [u8],
    /// Size of each datagram; `>= contents.len()` for a single datagram.
    pub(crate) segment_size: usize,
}

impl Transmit<'_> {
    /// Number of datagrams this transmit puts on the wire.
    pub(crate) fn segments(&self) -> usize {
        if self.segment_size == 0 || self.contents.len() <= self.segment_size {
            1
        } else {
            self.contents.len().div_ceil(self.segment_size)
        }
    }
}

/// Moves batches of datagrams.
pub(crate) trait Driver {
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

    /// Stops following a sender (a second session joined: every sender's
    /// datagrams go through the bound socket again, so none is read first).
    /// Datagrams still queued on the followed socket are dropped with it;
    /// the protocol repairs them. A joined multicast group stays. The
    /// default does nothing.
    fn unfollow(&mut self) {}

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
pub(crate) enum AnyDriver {
    /// The io_uring driver.
    #[cfg(feature = "uring")]
    Uring(UringDriver),
    /// The socket driver.
    Socket(SocketDriver),
}

impl std::fmt::Debug for AnyDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AnyDriver").field(&self.kind()).finish()
    }
}

/// Calls `$body` with `$d` bound to the driver inside `$self`.
macro_rules! each {
    ($self:expr, $d:ident => $body:expr) => {
        match $self {
            #[cfg(feature = "uring")]
            AnyDriver::Uring($d) => $body,
            AnyDriver::Socket($d) => $body,
        }
    };
}

impl Driver for AnyDriver {
    fn kind(&self) -> DriverKind {
        each!(self, d => d.kind())
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        each!(self, d => d.local_addr())
    }
    fn max_segments(&self) -> usize {
        each!(self, d => d.max_segments())
    }
    fn connect(&mut self, peer: SocketAddr) -> io::Result<()> {
        each!(self, d => d.connect(peer))
    }
    fn follow(&mut self, peer: SocketAddr) -> io::Result<()> {
        each!(self, d => d.follow(peer))
    }
    fn unfollow(&mut self) {
        each!(self, d => d.unfollow())
    }
    fn oversized(&self) -> u64 {
        each!(self, d => d.oversized())
    }
    #[inline]
    fn send(&mut self, batch: &[Transmit<'_>]) -> io::Result<usize> {
        each!(self, d => d.send(batch))
    }
    #[inline]
    fn recv<F: FnMut(SocketAddr, &[u8])>(
        &mut self,
        wait: Wait,
        max: usize,
        f: F,
    ) -> io::Result<usize> {
        each!(self, d => d.recv(wait, max, f))
    }
}

/// The driver the environment asks for, if any.
///
/// # Errors
/// `InvalidInput` naming the variable when its value is not `auto`, `uring`
/// or `socket`.
pub(crate) fn env_choice() -> io::Result<Option<DriverChoice>> {
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
#[cfg(feature = "uring")]
pub(crate) fn is_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS | libc::EPERM | libc::EACCES | libc::EINVAL | libc::EOPNOTSUPP)
    )
}

/// The default driver. Measured on loopback (see the module docs of
/// [`crate::udp`]): the socket driver's spin on `recvmmsg` has the lower
/// latency and the higher throughput with GSO/GRO, so it is the default for
/// both the busy-poll and the blocking mode; io_uring is opt-in.
pub(crate) const DEFAULT_DRIVER: DriverKind = DriverKind::Socket;

/// Whether this build and this host can run the io_uring driver
/// (`driver=uring`): the cargo feature `uring` is on and the kernel lets
/// this thread set up an io_uring instance with a provided-buffer ring.
/// Each call tries afresh (a seccomp filter may differ between threads).
///
/// ```
/// let uri = if conduit::udp::uring_available() {
///     "udp://127.0.0.1:0?driver=uring"
/// } else {
///     "udp://127.0.0.1:0?driver=socket"
/// };
/// let _sub = conduit::Subscription::open(uri)?;
/// // `prefer-uring` takes io_uring where it can; the counters name the driver a channel got.
/// let sub = conduit::Subscription::open("udp://127.0.0.1:0?driver=prefer-uring")?;
/// let got = if conduit::udp::uring_available() { "uring" } else { "socket" };
/// assert_eq!(sub.counters().driver, Some(got));
/// # Ok::<(), conduit::Error>(())
/// ```
pub fn uring_available() -> bool {
    #[cfg(feature = "uring")]
    {
        UringDriver::open(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &DriverConfig::default(),
        )
        .is_ok()
    }
    #[cfg(not(feature = "uring"))]
    {
        false
    }
}

/// The error of `driver=uring` in a build without io_uring.
#[cfg(not(feature = "uring"))]
fn uring_not_built() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "driver=uring: this build of conduit has no io_uring (cargo feature `uring` is off)",
    )
}

/// Opens a driver bound to `bind`, choosing the kind as described in the
/// module docs. The URI's choice wins over the environment's.
///
/// # Errors
/// Socket errors (bind), an invalid environment value, or io_uring errors
/// when io_uring was forced (`ErrorKind::Unsupported` in a build without
/// the `uring` feature).
pub(crate) fn open_driver(bind: SocketAddr, cfg: &DriverConfig) -> io::Result<AnyDriver> {
    let choice = match cfg.choice {
        DriverChoice::Auto => env_choice()?.unwrap_or(DriverChoice::Auto),
        c => c,
    };
    let choice = match (choice, DEFAULT_DRIVER) {
        (DriverChoice::Auto, DriverKind::Socket) => DriverChoice::Socket,
        (DriverChoice::Auto, DriverKind::Uring) => DriverChoice::PreferUring,
        (c, _) => c,
    };
    if cfg.multicast.is_some_and(|m| m.join || m.packet) {
        // Joining a group needs the socket driver's second socket, and
        // `tx=packet` its packet socket.
        if choice == DriverChoice::Uring {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the io_uring driver does not join multicast groups or send with tx=packet yet (driver=socket does)",
            ));
        }
        return Ok(AnyDriver::Socket(SocketDriver::open(bind, cfg)?));
    }
    let driver = match choice {
        #[cfg(feature = "uring")]
        DriverChoice::Uring => AnyDriver::Uring(UringDriver::open(bind, cfg)?),
        #[cfg(not(feature = "uring"))]
        DriverChoice::Uring => return Err(uring_not_built()),
        #[cfg(feature = "uring")]
        DriverChoice::PreferUring => match UringDriver::open(bind, cfg) {
            Ok(d) => AnyDriver::Uring(d),
            Err(e) if is_unavailable(&e) => {
                let d = AnyDriver::Socket(SocketDriver::open(bind, cfg)?);
                fell_back(&e);
                d
            }
            Err(e) => return Err(e),
        },
        #[cfg(not(feature = "uring"))]
        DriverChoice::PreferUring => {
            let d = AnyDriver::Socket(SocketDriver::open(bind, cfg)?);
            fell_back(&uring_not_built());
            d
        }
        DriverChoice::Socket | DriverChoice::Auto => {
            AnyDriver::Socket(SocketDriver::open(bind, cfg)?)
        }
    };
    match driver.kind() {
        DriverKind::Uring => log_once!(info, "conduit: udp driver uring"),
        DriverKind::Socket => log_once!(info, "conduit: udp driver socket"),
    }
    Ok(driver)
}

/// Says once per process that a `prefer-uring` open got the socket driver.
fn fell_back(why: &io::Error) {
    log_once!(
        warn,
        "conduit: io_uring unavailable, udp driver socket instead: {why}"
    );
}

/// Test helpers shared by the drivers' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::time::Duration;

    /// Sends `len` bytes from `a` to `b` as 100-byte datagrams (with GSO, in
    /// transmits of ten segments) and checks that `b` gets them all, in order
    /// and from `a`, each as one 100-byte datagram.
    pub(crate) fn segmented_roundtrip(a: &mut impl Driver, b: &mut impl Driver, len: u32) {
        let dest = b.local_addr().unwrap();
        let from = a.local_addr().unwrap();
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let segment = if a.max_segments() > 1 { 1000 } else { 100 };
        let batch: Vec<Transmit<'_>> = data
            .chunks(segment)
            .map(|c| Transmit {
                dest,
                contents: c,
                segment_size: 100,
            })
            .collect();
        assert_eq!(a.send(&batch).unwrap(), batch.len());
        let mut got = Vec::new();
        while got.len() < data.len() {
            b.recv(
                Wait::Timeout(Duration::from_secs(5)),
                usize::MAX,
                |src, d| {
                    assert_eq!(src, from);
                    assert_eq!(d.len(), 100);
                    got.extend_from_slice(d);
                },
            )
            .unwrap();
        }
        assert_eq!(got, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Without the `uring` feature, forcing io_uring is a clear error and
    /// preferring it falls back to the socket driver, counted.
    #[cfg(not(feature = "uring"))]
    #[test]
    fn without_the_uring_feature_uring_is_refused_and_prefer_falls_back() {
        let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(!uring_available());
        let forced = DriverConfig {
            choice: DriverChoice::Uring,
            ..DriverConfig::default()
        };
        let e = open_driver(bind, &forced).expect_err("no io_uring in this build");
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("feature `uring`"), "{e}");
        let prefer = DriverConfig {
            choice: DriverChoice::PreferUring,
            ..DriverConfig::default()
        };
        let d = open_driver(bind, &prefer).unwrap();
        assert_eq!(d.kind(), DriverKind::Socket);
    }

    /// With the `uring` feature, the probe agrees with opening the driver.
    #[cfg(feature = "uring")]
    #[test]
    fn the_uring_probe_agrees_with_open() {
        let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let forced = DriverConfig {
            choice: DriverChoice::Uring,
            ..DriverConfig::default()
        };
        assert_eq!(uring_available(), open_driver(bind, &forced).is_ok());
    }
}
