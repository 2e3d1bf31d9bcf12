//! Error types of the ring.

use crate::layout::{HeaderError, LAYOUT_VERSION};
use std::fmt;
use std::path::PathBuf;

/// Errors opening or creating a ring.
#[derive(Debug)]
#[non_exhaustive]
pub enum RingError {
    /// A system call failed.
    Io(std::io::Error),
    /// The ring name is not usable as a file name.
    InvalidName(String),
    /// A [`RingConfig`](crate::RingConfig) field is out of range.
    InvalidConfig {
        /// The field: `capacity`, `max_message_len`, `max_subscribers` or `mode`.
        field: &'static str,
        /// What is wrong with its value (the value first).
        reason: String,
    },
    /// The file does not start with the ring magic.
    NotARing {
        /// The file.
        path: PathBuf,
    },
    /// The file has another layout version.
    LayoutVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Version this library speaks.
        expected: u32,
    },
    /// The file is shorter than its header requires.
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes present.
        len: u64,
        /// Bytes needed.
        expected: u64,
    },
    /// The header's capacity does not match the file.
    CapacityMismatch {
        /// The file.
        path: PathBuf,
        /// Capacity in the header.
        header: u64,
        /// Capacity implied by the file's length fields.
        file: u64,
    },
    /// Another header field is out of range.
    InvalidHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A live publisher already owns the ring.
    PublisherAlive {
        /// The file.
        path: PathBuf,
        /// Pid recorded by that publisher.
        pid: u32,
    },
    /// Every subscriber slot is taken by a live subscriber.
    NoFreeSlot {
        /// The file.
        path: PathBuf,
        /// Slots in the ring.
        max: u32,
    },
    /// The file under the name belongs to a uid that is not an allowed owner
    /// (a subscriber's own uid and those it names; a publisher's own uid).
    ForeignOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Every publisher slot of a multi-writer ring is taken by a live publisher.
    TooManyPublishers {
        /// The file.
        path: PathBuf,
        /// Publisher slots in the ring.
        max: u32,
    },
}

impl RingError {
    pub(crate) fn from_header(path: PathBuf, e: HeaderError) -> RingError {
        match e {
            HeaderError::Truncated { len, expected } => RingError::Truncated {
                path,
                len,
                expected,
            },
            HeaderError::NotARing => RingError::NotARing { path },
            HeaderError::Version { found } => RingError::LayoutVersion {
                path,
                found,
                expected: LAYOUT_VERSION,
            },
            HeaderError::CapacityMismatch { header, file } => {
                RingError::CapacityMismatch { path, header, file }
            }
            HeaderError::Invalid(reason) => RingError::InvalidHeader { path, reason },
        }
    }

    pub(crate) fn config(field: &'static str, reason: String) -> RingError {
        RingError::InvalidConfig { field, reason }
    }

    pub(crate) fn io(context: impl fmt::Display, e: std::io::Error) -> RingError {
        RingError::Io(std::io::Error::new(e.kind(), format!("{context}: {e}")))
    }
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::Io(e) => write!(f, "{e}"),
            RingError::InvalidName(m) => write!(f, "invalid ring name: {m}"),
            RingError::InvalidConfig { field, reason } => {
                write!(f, "invalid ring configuration: {field} {reason}")
            }
            RingError::NotARing { path } => {
                write!(f, "{} is not a conduit ring file (bad magic)", path.display())
            }
            RingError::LayoutVersion {
                path,
                found,
                expected,
            } => write!(
                f,
                "{}: layout version {found} where {expected} was expected",
                path.display()
            ),
            RingError::Truncated {
                path,
                len,
                expected,
            } => write!(
                f,
                "{}: truncated: {len} bytes, expected {expected}",
                path.display()
            ),
            RingError::CapacityMismatch { path, header, file } => write!(
                f,
                "{}: capacity mismatch: the header says {header} bytes, the file layout gives {file}",
                path.display()
            ),
            RingError::InvalidHeader { path, reason } => {
                write!(f, "{}: invalid header: {reason}", path.display())
            }
            RingError::PublisherAlive { path, pid } => write!(
                f,
                "a live publisher (pid {pid}) already owns {}",
                path.display()
            ),
            RingError::NoFreeSlot { path, max } => write!(
                f,
                "{}: all {max} subscriber slots are taken by live subscribers",
                path.display()
            ),
            RingError::ForeignOwner { path, uid } => write!(
                f,
                "{} is owned by uid {uid}, which is not an allowed owner",
                path.display()
            ),
            RingError::TooManyPublishers { path, max } => write!(
                f,
                "{}: all {max} publisher slots are taken by live publishers",
                path.display()
            ),
        }
    }
}

impl std::error::Error for RingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RingError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for RingError {
    fn from(e: std::io::Error) -> Self {
        RingError::Io(e)
    }
}

/// Why an offer or claim did not go through. None of these lose data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferError {
    /// The slowest subscriber has not made room yet; try again.
    BackPressured,
    /// No subscriber is attached.
    NotConnected,
    /// The payload exceeds the ring's maximum message length.
    TooLarge {
        /// Requested length.
        len: usize,
        /// The ring's maximum.
        max: usize,
    },
    /// Shared memory holds values this process never wrote.
    Corrupt(String),
}

impl fmt::Display for OfferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OfferError::BackPressured => write!(
                f,
                "back-pressured: the slowest subscriber has not made room yet"
            ),
            OfferError::NotConnected => write!(f, "no subscriber is attached"),
            OfferError::TooLarge { len, max } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the ring's maximum of {max}"
                )
            }
            OfferError::Corrupt(m) => write!(f, "corrupt ring: {m}"),
        }
    }
}

impl std::error::Error for OfferError {}

/// Outcome of a poll other than messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollError {
    /// The publisher closed the ring cleanly; all its messages were delivered.
    PublisherClosed,
    /// The publisher's process died; all committed messages were delivered.
    PublisherGone,
    /// Shared memory holds values that break the layout's invariants.
    Corrupt(String),
    /// The ring file now under the name (a new publisher's, looked for after
    /// the last one closed or died, or before any existed) belongs to a uid
    /// that is not allowed; it is not attached. Polls keep looking.
    ForeignOwner {
        /// The owner of the file.
        uid: u32,
    },
    /// `slow=evict`: this subscriber held the publisher back for longer than
    /// the ring's `evict_after` and was cut loose; it has rejoined at the
    /// live position. Reported once; later polls deliver live records.
    Evicted {
        /// Stream bytes skipped (padding included).
        missed: u64,
    },
}

impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PollError::PublisherClosed => write!(f, "the publisher closed the ring"),
            PollError::PublisherGone => write!(f, "the publisher's process died"),
            PollError::Corrupt(m) => write!(f, "corrupt ring: {m}"),
            PollError::ForeignOwner { uid } => write!(
                f,
                "the ring file under the name is owned by uid {uid}, which is not an allowed owner"
            ),
            PollError::Evicted { missed } => write!(
                f,
                "evicted for holding the publisher back; {missed} bytes were skipped"
            ),
        }
    }
}

impl std::error::Error for PollError {}
