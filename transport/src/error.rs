//! The one error type of conduit, and the stable status codes it maps to.

use std::fmt;

/// Everything that can go wrong on a channel.
///
/// [`Error::BackPressured`] and [`Error::NotConnected`] are not failures:
/// nothing was lost, and the same call may be retried. Every variant maps to
/// a negative status code ([`Error::code`]) shared with the C ABI.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The receiver has not made room yet; retry later. Nothing was lost.
    BackPressured,
    /// No subscriber (or peer) is attached yet.
    NotConnected,
    /// The handle, or the peer's stream, was closed cleanly.
    Closed,
    /// A caller passed a value that cannot be used.
    InvalidArgument(String),
    /// A channel URI or one of its parameters is malformed.
    InvalidUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A message is longer than the channel allows.
    MessageTooLarge {
        /// The length asked for.
        len: usize,
        /// The channel's maximum.
        max: usize,
    },
    /// The peer's process died or stopped answering within the liveness timeout.
    PeerGone,
    /// Shared memory or a peer's stream breaks the layout's invariants.
    Corrupt(String),
    /// The operating system refused an operation.
    Io(std::io::Error),
    /// The two sides speak no common protocol version.
    VersionMismatch {
        /// The versions this side speaks (lowest, highest).
        local: (u16, u16),
        /// The versions the peer speaks (lowest, highest).
        remote: (u16, u16),
    },
    /// A wait ran out before its condition was met.
    TimedOut,
    /// Stream data between these positions can no longer be recovered.
    UnrecoverableLoss {
        /// First lost position.
        from: u64,
        /// Position after the last lost byte.
        to: u64,
    },
    /// A bug in conduit: please report it.
    Internal(String),
    /// The subscription refused this publication's session: another live publisher owns
    /// it. The publication keeps asking and takes over once that publisher is gone; nothing
    /// offered while refused was accepted.
    SessionRefused,
    /// A restarted publisher's new session replaced the old one (reported once by the
    /// subscription's poll); data of the old session not yet delivered is lost.
    SessionReplaced {
        /// The old session id.
        old: u32,
        /// The new session id.
        new: u32,
    },
    /// The publication's datagrams would be larger than the subscription receives; both
    /// ends report it and the publication stops. Use the same `mtu` on both ends.
    MtuMismatch {
        /// This end's MTU.
        local: usize,
        /// The peer's MTU.
        remote: usize,
    },
    /// One end of a UDP stream has a key and the other none, or the keys
    /// differ: the ends cannot talk (see `key=` in [`crate::udp::options`]).
    KeyMismatch,
    /// A shared-memory ring file under the channel's name is owned by a uid
    /// that is not allowed: for a subscription, neither its own uid nor one
    /// named by `owners=`; for a publication, any other uid (the name is
    /// squatted).
    ForeignOwner {
        /// The owner of the file.
        uid: u32,
    },
    /// A `shm:` publication: a live publisher (another process, or another
    /// handle in this one) already owns the channel's name.
    PublisherAlive {
        /// The process id recorded by that publisher.
        pid: u32,
    },
    /// A `shm:` subscription: every subscriber slot of the ring is taken by a
    /// live subscriber (the publication's `subscribers=` sets how many).
    NoFreeSlot {
        /// Subscriber slots in the ring.
        max: u32,
    },
    /// The `shm:` ring file under the name has another layout version: it was
    /// made by an incompatible version of conduit.
    LayoutVersion {
        /// The version in the file.
        found: u32,
        /// The version this library speaks.
        expected: u32,
    },
    /// The file under the `shm:` channel's name is not a conduit ring (wrong
    /// magic, or not a regular file); it is left alone.
    NotAChannel,
    /// `shm:` with `slow=evict`: this subscription held the publisher back
    /// for longer than `evict_after` and was cut loose; it continues from
    /// the live position. Reported once by a poll; the messages in between
    /// are lost to this subscription only.
    Evicted {
        /// Stream bytes this subscription skipped.
        missed: u64,
    },
    /// Every publisher slot of a `shm:` channel opened with `publishers=N` is
    /// taken by a live publisher (a dead publisher's slot is reclaimed).
    TooManyPublishers {
        /// The channel's publisher slots.
        max: u32,
    },
}

/// Status codes, as returned by the C ABI (`CONDUIT_*` in `conduit.h`).
pub mod code {
    /// Success.
    pub const OK: i32 = 0;
    /// See [`crate::Error::BackPressured`].
    pub const BACK_PRESSURED: i32 = -1;
    /// See [`crate::Error::NotConnected`].
    pub const NOT_CONNECTED: i32 = -2;
    /// See [`crate::Error::Closed`].
    pub const CLOSED: i32 = -3;
    /// See [`crate::Error::InvalidArgument`] and [`crate::Error::InvalidUri`].
    pub const INVALID_ARGUMENT: i32 = -4;
    /// See [`crate::Error::MessageTooLarge`].
    pub const MESSAGE_TOO_LARGE: i32 = -5;
    /// See [`crate::Error::PeerGone`].
    pub const PEER_GONE: i32 = -6;
    /// See [`crate::Error::Corrupt`].
    pub const CORRUPT: i32 = -7;
    /// See [`crate::Error::Io`].
    pub const IO_ERROR: i32 = -8;
    /// See [`crate::Error::VersionMismatch`].
    pub const VERSION_MISMATCH: i32 = -9;
    /// See [`crate::Error::TimedOut`].
    pub const TIMED_OUT: i32 = -10;
    /// See [`crate::Error::Internal`].
    pub const INTERNAL: i32 = -11;
    /// See [`crate::Error::UnrecoverableLoss`].
    pub const UNRECOVERABLE_LOSS: i32 = -12;
    /// See [`crate::Error::SessionRefused`].
    pub const SESSION_REFUSED: i32 = -13;
    /// See [`crate::Error::SessionReplaced`].
    pub const SESSION_REPLACED: i32 = -14;
    /// See [`crate::Error::MtuMismatch`].
    pub const MTU_MISMATCH: i32 = -17;
    /// See [`crate::Error::KeyMismatch`].
    pub const KEY_MISMATCH: i32 = -15;
    /// See [`crate::Error::ForeignOwner`].
    pub const FOREIGN_OWNER: i32 = -16;
    /// See [`crate::Error::PublisherAlive`].
    pub const PUBLISHER_ALIVE: i32 = -18;
    /// See [`crate::Error::NoFreeSlot`].
    pub const NO_FREE_SLOT: i32 = -19;
    /// See [`crate::Error::LayoutVersion`].
    pub const LAYOUT_VERSION: i32 = -20;
    /// See [`crate::Error::NotAChannel`].
    pub const NOT_A_CHANNEL: i32 = -21;
    /// See [`crate::Error::Evicted`].
    pub const EVICTED: i32 = -23;
    /// See [`crate::Error::TooManyPublishers`].
    pub const TOO_MANY_PUBLISHERS: i32 = -22;
}

impl Error {
    /// The negative status code for this error (see [`code`]).
    ///
    /// ```
    /// let e = conduit::Error::NoFreeSlot { max: 64 };
    /// assert_eq!(e.code(), conduit::code::NO_FREE_SLOT);
    /// ```
    pub fn code(&self) -> i32 {
        match self {
            Error::BackPressured => code::BACK_PRESSURED,
            Error::NotConnected => code::NOT_CONNECTED,
            Error::Closed => code::CLOSED,
            Error::InvalidArgument(_) | Error::InvalidUri { .. } => code::INVALID_ARGUMENT,
            Error::MessageTooLarge { .. } => code::MESSAGE_TOO_LARGE,
            Error::PeerGone => code::PEER_GONE,
            Error::Corrupt(_) => code::CORRUPT,
            Error::Io(_) => code::IO_ERROR,
            Error::VersionMismatch { .. } => code::VERSION_MISMATCH,
            Error::TimedOut => code::TIMED_OUT,
            Error::UnrecoverableLoss { .. } => code::UNRECOVERABLE_LOSS,
            Error::Internal(_) => code::INTERNAL,
            Error::SessionRefused => code::SESSION_REFUSED,
            Error::SessionReplaced { .. } => code::SESSION_REPLACED,
            Error::MtuMismatch { .. } => code::MTU_MISMATCH,
            Error::KeyMismatch => code::KEY_MISMATCH,
            Error::ForeignOwner { .. } => code::FOREIGN_OWNER,
            Error::PublisherAlive { .. } => code::PUBLISHER_ALIVE,
            Error::NoFreeSlot { .. } => code::NO_FREE_SLOT,
            Error::LayoutVersion { .. } => code::LAYOUT_VERSION,
            Error::NotAChannel => code::NOT_A_CHANNEL,
            Error::Evicted { .. } => code::EVICTED,
            Error::TooManyPublishers { .. } => code::TOO_MANY_PUBLISHERS,
        }
    }

    /// True for the outcomes after which the same call may simply be retried
    /// ([`Error::BackPressured`], [`Error::NotConnected`]).
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-retryable-{}", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// match publ.offer(1, b"early") {
    ///     Err(e) if e.is_retryable() => {} // no subscriber yet: try again later
    ///     Err(e) => return Err(e),
    ///     Ok(_) => {}
    /// }
    /// # Ok(()) }
    /// ```
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::BackPressured | Error::NotConnected)
    }

    pub(crate) fn invalid_uri(uri: &str, reason: impl Into<String>) -> Error {
        Error::InvalidUri {
            uri: uri.to_owned(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BackPressured => {
                f.write_str("back-pressured: the receiver has not made room yet")
            }
            Error::NotConnected => f.write_str("not connected: no subscriber is attached"),
            Error::Closed => f.write_str("closed"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::InvalidUri { uri, reason } => write!(f, "invalid channel URI {uri:?}: {reason}"),
            Error::MessageTooLarge { len, max } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the channel's maximum of {max} bytes"
                )
            }
            Error::PeerGone => f.write_str("peer gone: its process died or stopped answering"),
            Error::Corrupt(m) => write!(f, "corrupt channel: {m}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::VersionMismatch { local, remote } => write!(
                f,
                "no common protocol version: this side speaks {}..={}, the peer {}..={}",
                local.0, local.1, remote.0, remote.1
            ),
            Error::TimedOut => f.write_str("timed out"),
            Error::UnrecoverableLoss { from, to } => {
                write!(f, "unrecoverable loss of stream bytes {from}..{to}")
            }
            Error::Internal(m) => write!(f, "internal error (a bug in conduit): {m}"),
            Error::SessionRefused => f.write_str(
                "session refused: another live publisher owns the subscription (retrying)",
            ),
            Error::SessionReplaced { old, new } => write!(
                f,
                "session {old:#010x} replaced by session {new:#010x} of a restarted publisher"
            ),
            Error::MtuMismatch { local, remote } => write!(
                f,
                "mtu mismatch: this side's mtu is {local}, the peer's {remote}; the subscription must take the publication's datagrams (use the same mtu on both)"
            ),
            Error::KeyMismatch => f.write_str(
                "key mismatch: one end has a key and the other none, or the keys differ",
            ),
            Error::ForeignOwner { uid } => write!(
                f,
                "the shared-memory ring is owned by uid {uid}, which is not an allowed owner (see owners=)"
            ),
            Error::PublisherAlive { pid } => write!(
                f,
                "a live publisher (pid {pid}) already owns the channel's name"
            ),
            Error::NoFreeSlot { max } => write!(
                f,
                "no free subscriber slot: all {max} are taken by live subscribers (see subscribers=)"
            ),
            Error::LayoutVersion { found, expected } => write!(
                f,
                "the ring file has layout version {found}, this library speaks {expected}"
            ),
            Error::NotAChannel => {
                f.write_str("the file under the channel's name is not a conduit ring")
            }
            Error::Evicted { missed } => write!(
                f,
                "evicted for holding the publisher back longer than evict_after; {missed} bytes skipped"
            ),
            Error::TooManyPublishers { max } => write!(
                f,
                "all {max} publisher slots of the channel are taken by live publishers"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// A ring error as the channel API reports it: the conditions a program acts
/// on keep their own variants ([`Error::PublisherAlive`], [`Error::NoFreeSlot`],
/// [`Error::LayoutVersion`], [`Error::NotAChannel`], [`Error::ForeignOwner`]).
impl From<conduit_ringbuf::RingError> for Error {
    fn from(e: conduit_ringbuf::RingError) -> Self {
        use conduit_ringbuf::RingError as R;
        match e {
            R::Io(io) => Error::Io(io),
            R::PublisherAlive { pid, .. } => Error::PublisherAlive { pid },
            R::NoFreeSlot { max, .. } => Error::NoFreeSlot { max },
            R::LayoutVersion {
                found, expected, ..
            } => Error::LayoutVersion { found, expected },
            R::NotARing { .. } => Error::NotAChannel,
            R::ForeignOwner { uid, .. } => Error::ForeignOwner { uid },
            R::TooManyPublishers { max, .. } => Error::TooManyPublishers { max },
            e @ (R::Truncated { .. } | R::CapacityMismatch { .. } | R::InvalidHeader { .. }) => {
                Error::Corrupt(e.to_string())
            }
            other => Error::InvalidArgument(other.to_string()),
        }
    }
}
