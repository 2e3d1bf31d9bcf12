//! Wire format: one frame per datagram, every field little-endian, every struct `#[repr(C)]`
//! with a compile-time size check.
//!
//! Every frame starts with a [`Header`] (16 bytes). A data frame continues with the stream
//! position of its first record, then records: an 8-byte [`RecordHeader`] followed by the
//! payload padded to 8 bytes. Records never straddle a datagram, and every payload starts at a
//! multiple of 8 from the start of the datagram, so a `#[repr(C)]` struct with alignment up to 8
//! can be read in place from an 8-aligned receive buffer.
//!
//! # Session setup (version 2)
//! A [`Setup`] and a [`SetupReply`] are 72 bytes; their first 40 bytes keep the version 1
//! layout, so a version 1 peer still reads the version range and gets a clear version
//! mismatch. The extra 32 bytes are a 16-byte nonce (the sender's, or on an accepting reply
//! the receiver's, fresh random per session) and a 16-byte cookie.
//!
//! A receiver answers a setup without a valid cookie with [`FLAG_RETRY`] and a cookie: a MAC
//! (HMAC-SHA256 under a secret of the receiver) of the setup's source address, session id,
//! stream id, nonce and a one-second time bucket. The sender sends its setup again at once
//! with that cookie. Only a setup that echoes a cookie of the current or previous bucket
//! (it proves the sender receives at the address it claims) can start, replace or resume a
//! session, and the receiver keeps no state for a setup until then. A proven setup is refused
//! with [`FLAG_BUSY`] when another live session owns the receiver, and with
//! [`FLAG_REJECT`] | [`FLAG_MTU`] when the sender's MTU exceeds the receiver's.
//!
//! On a keyed endpoint every frame travels sealed inside a
//! [`CryptoHeader`](super::crypto::CryptoHeader) (32 bytes more), except the plaintext
//! [`FLAG_REJECT`] | [`FLAG_KEY`] reply that tells a peer of another key state.

use core::mem::size_of;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::counters::DropReason;

/// Kind of a frame, the second byte of every datagram.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(transparent)]
pub struct FrameKind(pub u8);

impl FrameKind {
    /// Sender to receiver: open a session (version range, join position, MTU, nonce, cookie).
    pub const SETUP: FrameKind = FrameKind(1);
    /// Receiver to sender: accept (chosen version, window, nonce), challenge ([`FLAG_RETRY`]),
    /// refuse ([`FLAG_BUSY`]) or reject ([`FLAG_REJECT`]).
    pub const SETUP_REPLY: FrameKind = FrameKind(2);
    /// Sender to receiver: records.
    pub const DATA: FrameKind = FrameKind(3);
    /// Sender to receiver: latest position when idle, and the oldest position still held.
    pub const HEARTBEAT: FrameKind = FrameKind(4);
    /// Receiver to sender: ranges to retransmit.
    pub const NAK: FrameKind = FrameKind(5);
    /// Receiver to sender: position and window (flow control, releases retransmit buffer).
    pub const STATUS: FrameKind = FrameKind(6);
    /// Either way: RTT probe, echoed with [`FLAG_REPLY`].
    pub const RTT: FrameKind = FrameKind(7);
    /// Either way: the stream is closed.
    pub const CLOSE: FrameKind = FrameKind(8);
}

/// Header flag on [`FrameKind::SETUP_REPLY`]: no common version.
pub const FLAG_REJECT: u16 = 1;
/// Header flag on [`FrameKind::RTT`]: this is the echo.
pub const FLAG_REPLY: u16 = 2;
/// Header flag on [`FrameKind::STATUS`]: the receiver does not know this session; set it up.
pub const FLAG_NEED_SETUP: u16 = 4;
/// Header flag on [`FrameKind::SETUP_REPLY`]: a cookie challenge; send the setup again with
/// the reply's `cookie`.
pub const FLAG_RETRY: u16 = 8;
/// Header flag on [`FrameKind::SETUP_REPLY`]: refused, another live session owns the
/// receiver; try again later.
pub const FLAG_BUSY: u16 = 16;
/// Header flag on [`FrameKind::SETUP_REPLY`] (with [`FLAG_REJECT`]): a key is required, or
/// the keys differ.
pub const FLAG_KEY: u16 = 32;
/// Header flag on [`FrameKind::SETUP_REPLY`] (with [`FLAG_REJECT`]): the sender's MTU exceeds
/// the receiver's, which is in the reply's `mtu`.
pub const FLAG_MTU: u16 = 64;

/// Length of a session nonce.
pub const NONCE_LEN: usize = 16;
/// Length of a setup cookie.
pub const COOKIE_LEN: usize = 16;
/// Length of the version 1 part of [`Setup`] and [`SetupReply`], which every version keeps.
pub const SETUP_V1_LEN: usize = 40;
/// Header flag on [`FrameKind::HEARTBEAT`]: the answer to a NAK for data the sender no longer
/// holds; [`Heartbeat::nonce`] echoes that NAK's [`NakHeader::nonce`]. Only such a heartbeat
/// makes a receiver declare loss, so a forger who has not seen the NAK cannot end a stream.
pub const FLAG_LOSS: u16 = 128;
/// Header flag on [`FrameKind::SETUP`] (version 3): the sender's destination is a group
/// (multicast); the receiver delays its NAKs at random and declares its tag in
/// [`StatusV3`] (see [Groups](super#groups)).
pub const FLAG_GROUP: u16 = 256;
/// Header flag on [`FrameKind::NAK`] sent by a group's sender to the group (version 3): the
/// echo of NAK ranges it is repairing; a receiver missing the same ranges suppresses its own
/// NAK for them.
pub const FLAG_ECHO: u16 = 512;

/// Every stream position on the wire is below this (2^63); frames with a position at or
/// beyond it are dropped. Senders start below 2^62, so a stream has at least 2^62 bytes ahead
/// of it, and position arithmetic (a position plus a window, a length or a span) never
/// overflows a `u64`.
pub const MAX_POSITION: u64 = 1 << 63;

/// Common header of every frame.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    /// Negotiated protocol version (the sender's highest on setup frames).
    pub version: u8,
    /// Frame kind.
    pub kind: FrameKind,
    /// Kind-specific flags.
    pub flags: U16,
    /// The sender's random session id.
    pub session_id: U32,
    /// Stream id.
    pub stream_id: U32,
    /// Checksum of the datagram with this field as zero (0 when checksums are off).
    pub checksum: U32,
}
const _: () = assert!(size_of::<Header>() == 16);

/// Data frame header; records follow.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DataHeader {
    /// Common header.
    pub header: Header,
    /// Stream position of the first record.
    pub position: U64,
}
const _: () = assert!(size_of::<DataHeader>() == 24);
/// Length of [`DataHeader`].
pub const DATA_HEADER_LEN: usize = size_of::<DataHeader>();

/// Record flag: first fragment of a message.
pub const REC_BEGIN: u8 = 0x80;
/// Record flag: last fragment of a message.
pub const REC_END: u8 = 0x40;
/// Record flag: padding to the end of the sender's ring; only the header is sent, `len` bytes
/// of stream are skipped.
pub const REC_PAD: u8 = 0x20;

/// Header of one record in the sender's log and in a data frame.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RecordHeader {
    /// Payload length (for padding: payload bytes skipped).
    pub len: U16,
    /// [`REC_BEGIN`], [`REC_END`], [`REC_PAD`].
    pub flags: u8,
    /// Zero.
    pub reserved: u8,
    /// Application type id of the message.
    pub type_id: U32,
}
const _: () = assert!(size_of::<RecordHeader>() == 8);
/// Length of [`RecordHeader`].
pub const RECORD_HEADER_LEN: usize = size_of::<RecordHeader>();

/// Bytes a record with `len` payload bytes occupies in the log.
#[inline]
pub const fn record_size(len: usize) -> usize {
    RECORD_HEADER_LEN + ((len + 7) & !7)
}

/// One record of a data frame, as yielded by [`Records`].
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Its header.
    pub header: &'a RecordHeader,
    /// Its payload, `header.len` bytes; empty for padding (whose skipped bytes are not sent).
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// Whether this is a padding record ([`REC_PAD`]).
    ///
    /// ```
    /// use conduit_proto::frame::{Records, REC_PAD};
    /// // A padding record skipping 16 bytes of stream: only its header is sent.
    /// let pad = [16, 0, REC_PAD, 0, 0, 0, 0, 0];
    /// let r = Records::new(&pad).next().unwrap().unwrap();
    /// assert!(r.is_padding() && r.payload.is_empty());
    /// ```
    pub fn is_padding(&self) -> bool {
        self.header.flags & REC_PAD != 0
    }

    /// Stream bytes the record spans: [`record_size`] of its payload, or for padding its
    /// header and the `len` bytes it skips.
    ///
    /// ```
    /// use conduit_proto::frame::{Records, REC_BEGIN, REC_END, REC_PAD};
    /// let msg = [3, 0, REC_BEGIN | REC_END, 0, 7, 0, 0, 0, b'a', b'b', b'c', 0, 0, 0, 0, 0];
    /// assert_eq!(Records::new(&msg).next().unwrap().unwrap().span(), 16);
    /// let pad = [16, 0, REC_PAD, 0, 0, 0, 0, 0];
    /// assert_eq!(Records::new(&pad).next().unwrap().unwrap().span(), 24);
    /// ```
    pub fn span(&self) -> u64 {
        let len = usize::from(self.header.len.get());
        if self.is_padding() {
            (RECORD_HEADER_LEN + len) as u64
        } else {
            record_size(len) as u64
        }
    }
}

/// The records of one data frame (the bytes after its [`DataHeader`]), in order.
///
/// Each record is checked as the receiver checks it before using any of it: a whole header
/// ([`DropReason::Truncated`] otherwise), flags of a message record among [`REC_BEGIN`] and
/// [`REC_END`], a payload (padded to 8) within the bytes, and a padding record only as the
/// last header, with exactly [`REC_PAD`] and a length that is a multiple of 8
/// ([`DropReason::BadLength`] otherwise). The first malformed record yields one `Err` and ends
/// the walk; a padding record ends it too. Whatever the bytes, it never panics and takes at
/// most `len / 8` steps.
///
/// ```
/// use conduit_proto::frame::{Records, REC_BEGIN, REC_END};
/// use conduit_proto::DropReason;
/// // Two messages: type 7 "abc" and type 9 with an empty payload.
/// let mut bytes = vec![3, 0, REC_BEGIN | REC_END, 0, 7, 0, 0, 0];
/// bytes.extend_from_slice(b"abc\0\0\0\0\0");
/// bytes.extend_from_slice(&[0, 0, REC_BEGIN | REC_END, 0, 9, 0, 0, 0]);
/// let got: Vec<_> = Records::new(&bytes)
///     .map(|r| r.map(|r| (r.header.type_id.get(), r.payload)))
///     .collect();
/// assert_eq!(got, [Ok((7, &b"abc"[..])), Ok((9, &b""[..]))]);
/// // Cut short: the first record is still whole, the second is not.
/// let mut cut = Records::new(&bytes[..20]);
/// assert!(cut.next().unwrap().is_ok());
/// assert!(matches!(cut.next(), Some(Err(DropReason::Truncated))));
/// assert!(cut.next().is_none());
/// ```
#[derive(Debug, Clone)]
pub struct Records<'a> {
    bytes: &'a [u8],
    /// Offset of the next record; `bytes.len()` once the walk has ended.
    off: usize,
    /// Whether a padding record's skipped bytes follow its header (the sender's log).
    in_log: bool,
}

impl<'a> Records<'a> {
    /// Walks the records in `records`, the bytes of a data frame after its [`DataHeader`].
    ///
    /// ```
    /// use conduit_proto::frame::Records;
    /// assert_eq!(Records::new(&[]).count(), 0);
    /// ```
    pub fn new(records: &'a [u8]) -> Records<'a> {
        Records {
            bytes: records,
            off: 0,
            in_log: false,
        }
    }

    /// Walks records as the sender's log holds them: the same checks as [`new`](Self::new),
    /// except that a padding record's `len` skipped bytes follow its header, up to the end of
    /// `records` (padding runs to the end of the log's ring). The sender builds its data
    /// frames with this walk; a frame carries a padding record's header only.
    pub(crate) fn in_log(records: &'a [u8]) -> Records<'a> {
        Records {
            bytes: records,
            off: 0,
            in_log: true,
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, DropReason>;

    fn next(&mut self) -> Option<Self::Item> {
        let n = self.bytes.len();
        let at = self.off;
        let rest = self.bytes.get(at..).filter(|r| !r.is_empty())?;
        // An error or a padding record ends the walk.
        self.off = n;
        let Ok((header, body)) = RecordHeader::ref_from_prefix(rest) else {
            return Some(Err(DropReason::Truncated));
        };
        let len = usize::from(header.len.get());
        if header.flags & REC_PAD != 0 {
            let skipped = if self.in_log { len } else { 0 };
            if len % 8 != 0 || body.len() != skipped || header.flags != REC_PAD {
                return Some(Err(DropReason::BadLength));
            }
            return Some(Ok(Record {
                header,
                payload: &[],
            }));
        }
        if header.flags & !(REC_BEGIN | REC_END) != 0 {
            return Some(Err(DropReason::BadLength));
        }
        let size = record_size(len);
        let Some(payload) = body.get(..len).filter(|_| size <= rest.len()) else {
            return Some(Err(DropReason::BadLength));
        };
        self.off = at + size;
        Some(Ok(Record { header, payload }))
    }
}

impl core::iter::FusedIterator for Records<'_> {}

/// Sender to receiver: open or re-open a session.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Setup {
    /// Common header.
    pub header: Header,
    /// Lowest version the sender speaks.
    pub min_version: U16,
    /// Highest version the sender speaks.
    pub max_version: U16,
    /// The sender's MTU.
    pub mtu: U16,
    /// Zero.
    pub reserved: U16,
    /// Largest message the sender will send.
    pub max_message_len: U32,
    /// Zero.
    pub reserved2: U32,
    /// Position where the receiver starts (the oldest data the sender still holds).
    pub join_position: U64,
    /// The sender's fresh random for this session (version 2).
    pub nonce: [u8; NONCE_LEN],
    /// Zero on a first setup; the cookie of a [`FLAG_RETRY`] reply when sent again
    /// (version 2).
    pub cookie: [u8; COOKIE_LEN],
}
const _: () = assert!(size_of::<Setup>() == 72);

/// The version 1 part of a [`Setup`]: enough to negotiate the version with any peer.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SetupPrefix {
    /// Common header.
    pub header: Header,
    /// Lowest version the sender speaks.
    pub min_version: U16,
    /// Highest version the sender speaks.
    pub max_version: U16,
}
const _: () = assert!(size_of::<SetupPrefix>() == 20);

/// Receiver to sender: accept or reject a setup.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SetupReply {
    /// Common header (session id of the setup being answered).
    pub header: Header,
    /// Chosen version (0 when rejected).
    pub version: U16,
    /// Lowest version the receiver speaks.
    pub min_version: U16,
    /// Highest version the receiver speaks.
    pub max_version: U16,
    /// The receiver's MTU (version 2; zero in version 1).
    pub mtu: U16,
    /// The receiver's random id (changes when the receiver restarts).
    pub receiver_id: U32,
    /// The receiver's window.
    pub window: U32,
    /// The receiver's position.
    pub position: U64,
    /// On an accepting reply: the receiver's fresh random for this session (version 2).
    pub nonce: [u8; NONCE_LEN],
    /// With [`FLAG_RETRY`]: the cookie to echo in the next setup (version 2).
    pub cookie: [u8; COOKIE_LEN],
}
const _: () = assert!(size_of::<SetupReply>() == 72);

/// The first fields of a [`SetupReply`], the same in every version: enough to read a
/// rejection from any peer.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SetupReplyPrefix {
    /// Common header.
    pub header: Header,
    /// Chosen version (0 when rejected).
    pub version: U16,
    /// Lowest version the receiver speaks.
    pub min_version: U16,
    /// Highest version the receiver speaks.
    pub max_version: U16,
    /// The receiver's MTU (zero from a version 1 peer).
    pub mtu: U16,
}
const _: () = assert!(size_of::<SetupReplyPrefix>() == 24);

/// Sender to receiver when idle: where the stream ends and what the sender still holds.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Heartbeat {
    /// Common header.
    pub header: Header,
    /// End of the data sent so far.
    pub position: U64,
    /// Oldest position the sender can still retransmit.
    pub retained_from: U64,
    /// With [`FLAG_LOSS`]: the nonce of the NAK this answers; otherwise zero.
    pub nonce: U32,
    /// Zero.
    pub reserved: U32,
}
const _: () = assert!(size_of::<Heartbeat>() == 40);

/// One range of a NAK, `[from, to)`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct NakRange {
    /// First missing position.
    pub from: U64,
    /// End of the missing range (exclusive).
    pub to: U64,
}
const _: () = assert!(size_of::<NakRange>() == 16);

/// Receiver to sender: missing ranges. `count` [`NakRange`]s follow.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct NakHeader {
    /// Common header.
    pub header: Header,
    /// Number of ranges that follow.
    pub count: U16,
    /// Zero.
    pub reserved: U16,
    /// The receiver's fresh random number for this NAK (non-zero), echoed by a
    /// [`FLAG_LOSS`] heartbeat when the sender no longer holds what it asks for.
    pub nonce: U32,
}
const _: () = assert!(size_of::<NakHeader>() == 24);
/// Most ranges in one NAK.
pub const MAX_NAK_RANGES: usize = 32;

/// A NAK (or a group sender's NAK echo) read from `bytes`: its header and its 1 to
/// [`MAX_NAK_RANGES`] ranges ([`DropReason::BadLength`] for another count,
/// [`DropReason::Truncated`] when the bytes end first).
pub(crate) fn nak_ranges(bytes: &[u8]) -> Result<(&NakHeader, &[NakRange]), DropReason> {
    let (n, rest) = NakHeader::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
    let count = usize::from(n.count.get());
    if count == 0 || count > MAX_NAK_RANGES {
        return Err(DropReason::BadLength);
    }
    let (ranges, _) =
        <[NakRange]>::ref_from_prefix_with_elems(rest, count).map_err(|_| DropReason::Truncated)?;
    Ok((n, ranges))
}

/// Receiver to sender: flow control.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Status {
    /// Common header.
    pub header: Header,
    /// Everything before this position has been received.
    pub position: U64,
    /// Bytes beyond `position` the receiver accepts.
    pub window: U32,
    /// The receiver's random id.
    pub receiver_id: U32,
}
const _: () = assert!(size_of::<Status>() == 32);

/// Status flag of [`StatusV3::status_flags`]: the receiver declares [`StatusV3::tag`].
pub const STATUS_TAGGED: u32 = 1;

/// Receiver to sender on a group session (version 3): a [`Status`] and the receiver's tag,
/// which [`FlowStrategy::Tagged`](super::FlowStrategy::Tagged) selects on. A sender reads the
/// [`Status`] prefix of any status, and the tag only when the datagram is this long.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct StatusV3 {
    /// The version 2 status.
    pub status: Status,
    /// The receiver's tag (meaningful with [`STATUS_TAGGED`]).
    pub tag: U32,
    /// [`STATUS_TAGGED`], other bits zero.
    pub status_flags: U32,
}
const _: () = assert!(size_of::<StatusV3>() == 40);

/// RTT probe or its echo ([`FLAG_REPLY`]).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Rtt {
    /// Common header.
    pub header: Header,
    /// The prober's clock in nanoseconds, echoed unchanged.
    pub timestamp: U64,
}
const _: () = assert!(size_of::<Rtt>() == 24);

/// The stream is closed; `position` is the final position for a sender.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Close {
    /// Common header.
    pub header: Header,
    /// Final position.
    pub position: U64,
}
const _: () = assert!(size_of::<Close>() == 24);

/// Builds a header.
pub fn header(version: u8, kind: FrameKind, flags: u16, session_id: u32, stream_id: u32) -> Header {
    Header {
        version,
        kind,
        flags: U16::new(flags),
        session_id: U32::new(session_id),
        stream_id: U32::new(stream_id),
        checksum: U32::new(0),
    }
}

/// Writes `frame` at the start of `buf`, returning its length, or `None` when `buf` is short.
pub fn write<T: IntoBytes + Immutable>(buf: &mut [u8], frame: &T) -> Option<usize> {
    let bytes = frame.as_bytes();
    buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
    Some(bytes.len())
}

const K0: u64 = 0x9E37_79B9_7F4A_7C15;
const K1: u64 = 0xC2B2_AE3D_27D4_EB4F;

#[inline]
fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(K0).rotate_left(29)
}

#[inline]
fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
}

/// The little-endian word at `b[i..i + 8]`, bytes past the end taken as zero
/// (no call to `memcpy` for the short ones: datagrams are often small).
#[inline(always)]
fn word_at(b: &[u8], i: usize) -> u64 {
    match b.get(i..i + 8) {
        Some(w) => word(w),
        None => b
            .get(i..)
            .unwrap_or(&[])
            .iter()
            .enumerate()
            .fold(0, |w, (k, &x)| w | u64::from(x) << (8 * k)),
    }
}

/// Checksum of a datagram, its checksum field (bytes 12..16) taken as zero.
///
/// Four independent multiply-rotate lanes over the little-endian 64-bit words. Each step is a
/// bijection of the lane state, so any change confined to one word is always detected; the
/// rotation keeps high-bit differences from cancelling; other corruptions escape with
/// probability about 2^-32 (the final fold to 32 bits).
///
/// The words: bytes 0..8; bytes 8..12 (the checksum field as zero); then the rest in rounds of
/// 32 bytes, one word per lane; then one more round over the last (up to 31) bytes, zero-padded.
pub fn checksum(bytes: &[u8]) -> u32 {
    let n = bytes.len();
    let mut lanes = [K1, K1 ^ 1, K1 ^ 2, K1 ^ 3];
    lanes[0] = mix(lanes[0], word_at(bytes, 0));
    lanes[1] = mix(lanes[1], word_at(bytes, 8) & 0xFFFF_FFFF);
    let rest = bytes.get(16..).unwrap_or(&[]);
    let mut chunks = rest.chunks_exact(32);
    for c in &mut chunks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            *lane = mix(*lane, word(&c[i * 8..i * 8 + 8]));
        }
    }
    let tail = chunks.remainder();
    for (i, lane) in lanes.iter_mut().enumerate() {
        *lane = mix(*lane, word_at(tail, i * 8));
    }
    let mut h = (n as u64).wrapping_mul(K1);
    for lane in lanes {
        h = mix(h, lane);
    }
    h ^= h >> 32;
    h as u32
}

/// Stores the checksum of `datagram` in its header (or zero when `enabled` is false).
pub fn seal(datagram: &mut [u8], enabled: bool) {
    let sum = if enabled { checksum(datagram) } else { 0 };
    if let Some(field) = datagram.get_mut(12..16) {
        field.copy_from_slice(&sum.to_le_bytes());
    }
}

/// The checks every end makes of a datagram's [`Header`] `h`: its checksum when `checksum_on`
/// is true (unkeyed; a keyed datagram's tag covers it instead), then its stream.
pub(crate) fn check_header(
    h: &Header,
    datagram: &[u8],
    checksum_on: bool,
    stream_id: u32,
) -> Result<(), DropReason> {
    if checksum_on && h.checksum.get() != checksum(datagram) {
        return Err(DropReason::Checksum);
    }
    if h.stream_id.get() != stream_id {
        return Err(DropReason::WrongStream);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_walk_passes_padding_and_its_skipped_bytes() {
        // A message, then padding that skips the last 8 bytes of the ring.
        let mut log = vec![3, 0, REC_BEGIN | REC_END, 0, 7, 0, 0, 0];
        log.extend_from_slice(b"abc\0\0\0\0\0");
        log.extend_from_slice(&[8, 0, REC_PAD, 0, 0, 0, 0, 0]);
        log.extend_from_slice(&[0xee; 8]);
        let spans: Vec<_> = Records::in_log(&log).map(|r| r.unwrap().span()).collect();
        assert_eq!(spans, [16, 16]);
        // A datagram never carries the skipped bytes.
        assert!(Records::new(&log[16..]).next().unwrap().is_err());
    }

    /// The records check as the receiver wrote it before [`Records`]: the reference that the
    /// walk must agree with.
    fn validate_reference(records: &[u8]) -> Result<u64, DropReason> {
        let n = records.len();
        let mut off = 0;
        let mut span = 0u64;
        while off < n {
            let (h, _) = RecordHeader::ref_from_prefix(&records[off..])
                .map_err(|_| DropReason::Truncated)?;
            let len = usize::from(h.len.get());
            if h.flags & REC_PAD != 0 {
                if len % 8 != 0 || off + RECORD_HEADER_LEN != n || h.flags != REC_PAD {
                    return Err(DropReason::BadLength);
                }
                span += (RECORD_HEADER_LEN + len) as u64;
                break;
            }
            if h.flags & !(REC_BEGIN | REC_END) != 0 {
                return Err(DropReason::BadLength);
            }
            let size = record_size(len);
            if off + size > n {
                return Err(DropReason::BadLength);
            }
            off += size;
            span += size as u64;
        }
        Ok(span)
    }

    /// Random records, mostly well formed, with a random flag, length or cut now and then.
    fn random_records(rng: &mut crate::Rng) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..rng.below(6) {
            let len = match rng.below(4) {
                0 => rng.below(64) as u16,
                1 => rng.next_u32() as u16,
                _ => rng.below(24) as u16 * 8,
            };
            let flags = match rng.below(8) {
                0 => REC_PAD,
                1 => rng.next_u32() as u8,
                2 => REC_BEGIN,
                3 => REC_END,
                4 => 0,
                _ => REC_BEGIN | REC_END,
            };
            let h = RecordHeader {
                len: U16::new(len),
                flags,
                reserved: 0,
                type_id: U32::new(rng.next_u32()),
            };
            out.extend_from_slice(h.as_bytes());
            if flags & REC_PAD == 0 {
                let body = record_size(usize::from(len)) - RECORD_HEADER_LEN;
                out.extend((0..body.min(2048)).map(|i| i as u8));
            }
        }
        if rng.chance(0.2) && !out.is_empty() {
            let cut = rng.below(out.len() as u64) as usize;
            out.truncate(cut);
        }
        out
    }

    #[test]
    fn records_agree_with_the_receivers_check_and_never_panic() {
        let mut rng = crate::Rng::new(0x5EED);
        let (mut ok, mut bad) = (0, 0);
        for _ in 0..200_000 {
            let bytes = random_records(&mut rng);
            let mut walk = Records::new(&bytes);
            let mut span = 0u64;
            let mut covered = 0usize;
            let mut got = Ok(());
            let mut steps = 0;
            for r in walk.by_ref() {
                steps += 1;
                match r {
                    Ok(r) => {
                        span += r.span();
                        let len = usize::from(r.header.len.get());
                        if r.is_padding() {
                            assert!(r.payload.is_empty());
                            covered += RECORD_HEADER_LEN;
                        } else {
                            assert_eq!(r.payload.len(), len);
                            covered += record_size(len);
                        }
                    }
                    Err(e) => got = Err(e),
                }
            }
            assert!(steps <= bytes.len() / RECORD_HEADER_LEN + 1);
            assert!(walk.next().is_none(), "the walk is fused");
            let mine = got.map(|()| span);
            assert_eq!(mine, validate_reference(&bytes), "{bytes:?}");
            if mine.is_ok() {
                assert_eq!(covered, bytes.len());
                ok += 1;
            } else {
                bad += 1;
            }
        }
        assert!(
            ok > 10_000 && bad > 10_000,
            "{ok} well formed, {bad} malformed"
        );
    }

    #[test]
    fn records_stop_at_the_first_malformed_record() {
        let rec = |len: u16, flags: u8| RecordHeader {
            len: U16::new(len),
            flags,
            reserved: 0,
            type_id: U32::new(5),
        };
        // A message, then padding that is not the last header: one Ok, one Err, then None.
        let mut b = Vec::new();
        b.extend_from_slice(rec(8, REC_BEGIN | REC_END).as_bytes());
        b.extend_from_slice(&[1; 8]);
        b.extend_from_slice(rec(16, REC_PAD).as_bytes());
        b.extend_from_slice(rec(0, REC_BEGIN | REC_END).as_bytes());
        let mut w = Records::new(&b);
        assert_eq!(
            w.next().map(|r| r.map(|r| r.payload)),
            Some(Ok(&[1u8; 8][..]))
        );
        assert!(matches!(w.next(), Some(Err(DropReason::BadLength))));
        assert!(w.next().is_none());
        // A payload running past the bytes.
        let mut b = rec(9, REC_BEGIN).as_bytes().to_vec();
        b.extend_from_slice(&[0; 8]);
        assert!(matches!(
            Records::new(&b).next(),
            Some(Err(DropReason::BadLength))
        ));
        // Unknown flags, padding with other flags or an unaligned length.
        for (len, flags) in [(0, 0x01), (8, REC_PAD | REC_END), (12, REC_PAD)] {
            let b = rec(len, flags);
            let got = Records::new(b.as_bytes()).next();
            assert!(
                matches!(got, Some(Err(DropReason::BadLength))),
                "{len} {flags:#x}"
            );
        }
        // Half a header.
        assert!(matches!(
            Records::new(&[0; 5]).next(),
            Some(Err(DropReason::Truncated))
        ));
    }

    #[test]
    fn checksum_ignores_its_field_and_sees_bit_flips() {
        let mut d: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
        let c = checksum(&d);
        d[13] ^= 0xff;
        assert_eq!(checksum(&d), c);
        for byte in [0usize, 5, 16, 40, 100, 199] {
            for bit in 0..8 {
                let mut e = d.clone();
                e[byte] ^= 1 << bit;
                assert_ne!(checksum(&e), c, "flip at {byte}:{bit} not seen");
            }
        }
        assert_ne!(checksum(&d[..199]), c);
        // Two flips of the same bit in words of the same lane must not cancel.
        for bit in [0u32, 7, 31, 63] {
            for (i, j) in [(16usize, 48usize), (24, 88), (16, 176)] {
                let mut e = d.clone();
                e[i + bit as usize / 8] ^= 1 << (bit % 8);
                e[j + bit as usize / 8] ^= 1 << (bit % 8);
                assert_ne!(
                    checksum(&e),
                    c,
                    "double flip of bit {bit} at {i},{j} not seen"
                );
            }
        }
    }

    /// The first implementation (byte buffers for the head and the tail), kept to pin the wire
    /// value of the checksum.
    fn checksum_reference(bytes: &[u8]) -> u32 {
        let n = bytes.len();
        let mut head = [0u8; 16];
        let h = n.min(16);
        head[..h].copy_from_slice(&bytes[..h]);
        head[12..16].fill(0);
        let mut lanes = [K1, K1 ^ 1, K1 ^ 2, K1 ^ 3];
        lanes[0] = mix(lanes[0], word(&head[..8]));
        lanes[1] = mix(lanes[1], word(&head[8..]));
        let rest = bytes.get(16..).unwrap_or(&[]);
        let mut chunks = rest.chunks_exact(32);
        for c in &mut chunks {
            for (i, lane) in lanes.iter_mut().enumerate() {
                *lane = mix(*lane, word(&c[i * 8..i * 8 + 8]));
            }
        }
        let tail = chunks.remainder();
        let mut last = [0u8; 32];
        last[..tail.len()].copy_from_slice(tail);
        for (i, lane) in lanes.iter_mut().enumerate() {
            *lane = mix(*lane, word(&last[i * 8..i * 8 + 8]));
        }
        let mut h = (n as u64).wrapping_mul(K1);
        for lane in lanes {
            h = mix(h, lane);
        }
        h ^= h >> 32;
        h as u32
    }

    #[test]
    fn checksum_matches_the_reference_for_every_length() {
        let mut x = 0x1234_5678_9abc_def0_u64;
        let data: Vec<u8> = (0..400)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for len in 0..data.len() {
            for start in [0, 1, 3] {
                let b = &data[start..(start + len).min(data.len())];
                assert_eq!(checksum(b), checksum_reference(b), "length {}", b.len());
            }
        }
    }

    #[test]
    fn record_sizes_keep_payloads_aligned() {
        assert_eq!(record_size(0), 8);
        assert_eq!(record_size(1), 16);
        assert_eq!(record_size(32), 40);
        assert_eq!(DATA_HEADER_LEN % 8, 0);
    }
}
