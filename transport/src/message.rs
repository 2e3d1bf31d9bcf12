//! Typed zero-copy messages.
//!
//! A message is a `#[repr(C)]` struct that zerocopy can view in place, with a
//! 32-bit type id. Nothing is serialised: the sender writes the struct's bytes
//! into the ring (or the send buffer), and the receiver reads them where they
//! lie.
//!
//!
//! The rule for evolving message structs is on [`Message`].

use std::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A `#[repr(C)]` struct sent and received in place, with a 32-bit type id.
///
/// # Evolving a message: the append-only rule
///
/// Fields are only ever **appended** to a message struct, never removed,
/// reordered or retyped, and its `TYPE_ID` never changes. Then:
///
/// - a reader built against an older, shorter struct accepts a longer payload
///   from a newer writer and sees the prefix it knows;
/// - a payload *shorter* than the reader's struct (an older writer) is refused
///   with [`ViewError::TooShort`], never read as garbage. A reader that wants
///   to accept older writers checks [`Received::payload`]'s length itself and
///   views the older struct.
///
/// Give appended fields explicit types and explicit padding so the layout is
/// the same on every platform, and keep the alignment at most 8: payloads are
/// 8-byte aligned on every channel.
///
/// ```
/// use conduit::Message;
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
///
/// #[repr(C)]
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug)]
/// struct Order {
///     id: u64,
///     price: i64,
///     qty: u32,
///     side: u8,
///     _pad: [u8; 3],
/// }
///
/// impl Message for Order {
///     const TYPE_ID: u32 = 1;
/// }
/// ```
///
/// # Alignment
///
/// A message type's alignment is at most 8 ([`MAX_ALIGN`]), the alignment
/// every channel guarantees for payloads. A type aligned more strictly could
/// be sent but never viewed in place by a receiver, so it is refused at
/// compile time by [`Publication::send`](crate::Publication::send),
/// [`Publication::claim`](crate::Publication::claim) and [`Received::get`]:
///
/// ```compile_fail,E0080
/// use conduit::{Message, Publication};
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
///
/// #[repr(C, align(64))]
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
/// struct CacheLine { bytes: [u8; 64] }
/// impl Message for CacheLine { const TYPE_ID: u32 = 9; }
///
/// fn main() {
///     let mut p = Publication::open("shm:cache-lines").unwrap();
///     let _ = p.send(&CacheLine { bytes: [0; 64] }); // error: alignment 64 exceeds 8
/// }
/// ```
///
/// The error comes when the code is built (`cargo build`, `cargo test`);
/// `cargo check` does not evaluate it.
pub trait Message: FromBytes + IntoBytes + KnownLayout + Immutable {
    /// The id written beside every message of this type. Never reuse or change it.
    const TYPE_ID: u32;
}

/// The largest alignment of a [`Message`] type: payloads are 8-byte aligned
/// on every channel.
pub const MAX_ALIGN: usize = 8;

/// Fails to compile (when instantiated) for a `T` aligned above [`MAX_ALIGN`].
struct AlignCheck<T>(std::marker::PhantomData<T>);

impl<T> AlignCheck<T> {
    const OK: () = assert!(
        align_of::<T>() <= MAX_ALIGN,
        "a conduit Message type's alignment must be at most 8 (payloads are 8-byte aligned)"
    );
}

/// Refuses, at compile time, a message type no receiver could view in place.
#[inline(always)]
pub(crate) const fn assert_alignment<T: Message>() {
    #[allow(clippy::let_unit_value)]
    let () = AlignCheck::<T>::OK;
}

/// Why a received payload could not be viewed as a `T`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewError {
    /// The message carries another type id.
    WrongType {
        /// The id the reader asked for.
        expected: u32,
        /// The id the message carries.
        found: u32,
    },
    /// The payload is shorter than the reader's struct (an older writer, or a bug).
    TooShort {
        /// The reader's struct size.
        need: usize,
        /// The payload's length.
        found: usize,
    },
    /// The payload is not aligned for `T` (its alignment exceeds 8).
    Misaligned,
}

impl fmt::Display for ViewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViewError::WrongType { expected, found } => {
                write!(f, "message has type id {found}, expected {expected}")
            }
            ViewError::TooShort { need, found } => write!(
                f,
                "payload of {found} bytes is shorter than the {need}-byte struct"
            ),
            ViewError::Misaligned => f.write_str("payload is not aligned for the struct"),
        }
    }
}

impl std::error::Error for ViewError {}

/// Who sent a message, where the channel knows.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A publisher of a `shm:` channel: its publisher slot index and process id.
    Shm {
        /// The publisher's slot index in the ring.
        index: u16,
        /// The publisher's process id.
        pid: u32,
    },
    /// A UDP publisher session: its address and session id.
    Udp {
        /// The publisher's address.
        addr: std::net::SocketAddr,
        /// The session id.
        session: u32,
    },
}

/// Why a publisher session of a subscription ended ([`SessionEvent::Gone`]).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GoneReason {
    /// The publisher closed it.
    Closed,
    /// The publisher was silent past the liveness timeout (`liveness=`); if it
    /// comes back, the session resumes and joins again.
    TimedOut,
    /// Its stream failed on unrecoverable loss (`gap=fail`).
    Failed,
}

/// A change in the set of publisher sessions a subscription serves, from
/// [`Subscription::poll_session_event`](crate::Subscription::poll_session_event).
///
/// ```
/// # fn main() -> Result<(), conduit::Error> {
/// let mut sub = conduit::Subscription::open("udp://127.0.0.1:0")?;
/// sub.poll(|_| {}, 16)?;
/// while let Some(e) = sub.poll_session_event() {
///     match e {
///         conduit::SessionEvent::Joined { source } => println!("joined: {source:?}"),
///         conduit::SessionEvent::Gone { source, reason } => println!("gone: {source:?} ({reason:?})"),
///         conduit::SessionEvent::Replaced { addr, old, new } => println!("{addr} restarted: {old} -> {new}"),
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionEvent {
    /// A publisher session was accepted (or resumed after it timed out).
    Joined {
        /// The session ([`Source::Udp`]).
        source: Source,
    },
    /// A publisher session ended.
    Gone {
        /// The session ([`Source::Udp`]).
        source: Source,
        /// Why.
        reason: GoneReason,
    },
    /// A publisher restarted at the same address (IP and port): its new
    /// session replaced the old one.
    Replaced {
        /// The publisher's address.
        addr: std::net::SocketAddr,
        /// The old session id.
        old: u32,
        /// The new session id.
        new: u32,
    },
}

/// A received message, borrowed from ring memory or the receive buffer.
///
/// Handed to the handler of [`Subscription::poll`](crate::Subscription::poll);
/// it lives for that call only.
#[derive(Clone, Copy)]
pub struct Received<'a> {
    type_id: u32,
    payload: &'a [u8],
    position: u64,
    origin: Origin<'a>,
}

/// Where [`Received::source`] comes from.
#[derive(Clone, Copy)]
enum Origin<'a> {
    /// Known when the message was handed out (UDP: the session's address).
    Known(Option<Source>),
    /// A ring record's publisher, whose pid is read only when asked for.
    /// On a ring with several publishers that is a load from the
    /// publisher's slot; made for every message, it cost the round trip of
    /// `shm-mpsc` several per cent (`conduit-bench compare`, the
    /// interleaved pair).
    Ring(Option<conduit_ringbuf::PublisherRef<'a>>),
}

impl fmt::Debug for Received<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Received")
            .field("type_id", &self.type_id)
            .field("len", &self.payload.len())
            .field("position", &self.position)
            .field("source", &self.source())
            .finish()
    }
}

impl<'a> Received<'a> {
    /// Wraps a payload handed out by a transport (position 0, no source).
    pub(crate) fn new(type_id: u32, payload: &'a [u8]) -> Self {
        Received {
            type_id,
            payload,
            position: 0,
            origin: Origin::Known(None),
        }
    }

    /// Sets the stream position and the sender.
    #[inline]
    pub(crate) fn with_origin(mut self, position: u64, source: Option<Source>) -> Self {
        self.position = position;
        self.origin = Origin::Known(source);
        self
    }

    /// Sets the stream position and the sender from a ring record.
    #[inline]
    pub(crate) fn with_record(mut self, record: conduit_ringbuf::RecordInfo<'a>) -> Self {
        self.position = record.position();
        self.origin = Origin::Ring(record.publisher_ref());
        self
    }

    /// The stream position of the message: where its record starts in the
    /// channel's stream of bytes. Positions grow with every message, so two
    /// messages of one stream compare in the order they were sent; the gap
    /// between them includes headers and padding, so it is not a count of
    /// messages.
    ///
    /// Over `shm:` this is the record's position in the ring (the values
    /// [`Publication::offer`](crate::Publication::offer) returns are the
    /// positions *after* each message). Over `udp:` it is the position in
    /// its publisher session's stream (each session has its own, starting
    /// at a random offset).
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let name = format!("doc-received-position-{}", std::process::id());
    /// let mut sub = conduit::Subscription::open(&format!("shm:{name}"))?;
    /// let mut publ = conduit::Publication::open(&format!("shm:{name}?capacity=64k"))?;
    /// while !publ.is_connected() {
    ///     sub.poll(|_| {}, 1)?; // attaches
    /// }
    /// let after_first = publ.offer(1, b"first")?;
    /// publ.offer(1, b"second")?;
    /// let mut positions = Vec::new();
    /// sub.poll(|m| positions.push(m.position()), 8)?;
    /// assert_eq!(positions.len(), 2);
    /// assert_eq!(positions[1], after_first);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Who sent the message, where the channel knows: over `shm:`,
    /// [`Source::Shm`] (the publisher's slot index, 0 on a single-publisher
    /// channel, and its pid); over `udp:`, [`Source::Udp`] (the publisher's
    /// address and session id).
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let name = format!("doc-received-source-{}", std::process::id());
    /// let mut sub = conduit::Subscription::open(&format!("shm:{name}"))?;
    /// let mut publ = conduit::Publication::open(&format!("shm:{name}?capacity=64k"))?;
    /// while !publ.is_connected() {
    ///     sub.poll(|_| {}, 1)?;
    /// }
    /// publ.offer(1, b"hello")?;
    /// sub.poll(|m| {
    ///     if let Some(source) = m.source() {
    ///         println!("from {source:?}");
    ///     }
    /// }, 8)?;
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn source(&self) -> Option<Source> {
        match self.origin {
            Origin::Known(source) => source,
            Origin::Ring(publisher) => publisher.map(|p| {
                let (index, pid) = p.get();
                Source::Shm { index, pid }
            }),
        }
    }

    /// The message's type id.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-received-type-id-{}?capacity=64k", std::process::id());
    /// # let mut publ = conduit::Publication::open(&uri)?;
    /// # let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// publ.offer(42, b"")?;
    /// sub.poll(|m| assert_eq!(m.type_id(), 42), 1)?;
    /// # Ok(()) }
    /// ```
    pub fn type_id(&self) -> u32 {
        self.type_id
    }

    /// The raw payload, 8-byte aligned, borrowed for the handler call.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-received-payload-{}?capacity=64k", std::process::id());
    /// # let mut publ = conduit::Publication::open(&uri)?;
    /// # let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// publ.offer(1, b"raw bytes")?;
    /// let mut copy = Vec::new();
    /// sub.poll(|m| copy.extend_from_slice(m.payload()), 1)?;
    /// assert_eq!(copy, b"raw bytes");
    /// # Ok(()) }
    /// ```
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// True if the message carries `T`'s type id.
    ///
    /// ```
    /// use conduit::Message;
    /// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
    ///
    /// #[repr(C)]
    /// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
    /// struct Ping { seq: u64 }
    /// impl Message for Ping { const TYPE_ID: u32 = 1; }
    ///
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-received-is-{}?capacity=64k", std::process::id());
    /// # let mut publ = conduit::Publication::open(&uri)?;
    /// # let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// publ.send(&Ping { seq: 5 })?;
    /// publ.offer(2, b"other")?;
    /// let mut pings = 0;
    /// sub.poll(|m| if m.is::<Ping>() { pings += 1 }, 8)?;
    /// assert_eq!(pings, 1);
    /// # Ok(()) }
    /// ```
    pub fn is<T: Message>(&self) -> bool {
        self.type_id == T::TYPE_ID
    }

    /// Views the payload as a `T` in place, with no copy.
    ///
    /// ```
    /// use conduit::Message;
    /// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
    ///
    /// #[repr(C)]
    /// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
    /// struct Ping { seq: u64 }
    /// impl Message for Ping { const TYPE_ID: u32 = 1; }
    ///
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-received-get-{}?capacity=64k", std::process::id());
    /// # let mut publ = conduit::Publication::open(&uri)?;
    /// # let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// publ.send(&Ping { seq: 5 })?;
    /// sub.poll(|m| match m.get::<Ping>() {
    ///     Ok(ping) => assert_eq!(ping.seq, 5),
    ///     Err(e) => eprintln!("not a ping: {e}"),
    /// }, 1)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ViewError::WrongType`] if the type id differs, [`ViewError::TooShort`]
    /// if the payload is shorter than `T` (a longer one is accepted: see the
    /// append-only rule on [`Message`]), [`ViewError::Misaligned`]
    /// if `T`'s alignment exceeds the payload's.
    pub fn get<T: Message>(&self) -> Result<&'a T, ViewError> {
        assert_alignment::<T>();
        if self.type_id != T::TYPE_ID {
            return Err(ViewError::WrongType {
                expected: T::TYPE_ID,
                found: self.type_id,
            });
        }
        let need = size_of::<T>();
        if self.payload.len() < need {
            return Err(ViewError::TooShort {
                need,
                found: self.payload.len(),
            });
        }
        T::ref_from_prefix(self.payload)
            .map(|(t, _rest)| t)
            .map_err(|_| ViewError::Misaligned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C)]
    #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, PartialEq)]
    struct V1 {
        id: u64,
        qty: u32,
        _pad: u32,
    }
    impl Message for V1 {
        const TYPE_ID: u32 = 42;
    }

    /// V1 with a field appended: what a newer writer sends.
    #[repr(C)]
    #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, PartialEq)]
    struct V2 {
        id: u64,
        qty: u32,
        _pad: u32,
        venue: u64,
    }
    impl Message for V2 {
        const TYPE_ID: u32 = 42;
    }

    /// An 8-aligned buffer, as every channel hands out.
    #[repr(C, align(8))]
    struct Aligned([u8; 64]);

    #[test]
    fn older_reader_accepts_longer_payload() {
        let mut buf = Aligned([0; 64]);
        let v2 = V2 {
            id: 7,
            qty: 3,
            _pad: 0,
            venue: 9,
        };
        buf.0[..24].copy_from_slice(v2.as_bytes());
        let r = Received::new(42, &buf.0[..24]);
        let v1 = r.get::<V1>().unwrap();
        assert_eq!((v1.id, v1.qty), (7, 3));
        assert_eq!(r.get::<V2>().unwrap(), &v2);
    }

    #[test]
    fn shorter_payload_and_wrong_type_are_errors() {
        let buf = Aligned([0; 64]);
        let r = Received::new(42, &buf.0[..16]);
        assert_eq!(
            r.get::<V2>().unwrap_err(),
            ViewError::TooShort {
                need: 24,
                found: 16
            }
        );
        let r = Received::new(43, &buf.0[..24]);
        assert_eq!(
            r.get::<V1>().unwrap_err(),
            ViewError::WrongType {
                expected: 42,
                found: 43
            }
        );
        assert!(!r.is::<V1>());
        let r = Received::new(42, &buf.0[1..25]);
        assert_eq!(r.get::<V1>().unwrap_err(), ViewError::Misaligned);
    }
}
