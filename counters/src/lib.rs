//! The per-process counters file of conduit: its byte layout, and a safe
//! reader that treats every byte as untrusted.
//!
//! Every process that opens a conduit channel handle (while
//! `CONDUIT_STATS` is not `0`) keeps one file,
//! `$CONDUIT_SHM_DIR/conduit-stats/<pid>.stats` (`/dev/shm` when the
//! variable is unset), with one [`Slot`] per open handle. `conduit-stat`
//! and other tools read it with [`parse`].
//!
//! # Changes to the contract of this round
//!
//! Against the first description of the layout (for readers built at the
//! same time):
//! * The header's reserved `u32` after `pid` is [`FileHeader::handles_without_slot`]:
//!   handles of the process that found every slot taken (they work, but
//!   publish no counters).
//! * The process has a fixed number of slots, [`DEFAULT_SLOT_COUNT`] (256);
//!   the file does not grow. A reader takes `slot_count` from the header.
//! * The slot header's reserved `u32` is [`Slot::ring_slot`], reserved for
//!   an `shm:` subscription's subscriber slot index in the ring file;
//!   conduit writes [`NO_RING_SLOT`] there today (unknown).
//! * **`shm:` positions come from the ring file.** To keep the `shm:` data
//!   path at two relaxed stores per offer or poll batch (`messages` and
//!   `bytes`), `shm:` handles write `position`, `peer_position`,
//!   `subscriber_slots_in_use`, `evictions` and `heartbeat_unix_ns` only on
//!   cold paths (open, a refused offer, `is_connected`, `flush`, `wait`, a
//!   failed poll): they may be stale. The live positions of an `shm:`
//!   channel are in its ring file (the publisher block's tail, each
//!   subscriber slot's position and pid), which a reader should use for
//!   lag; `peer_position` of `shm:` handles is 0. UDP handles refresh every
//!   counter at most every millisecond while they make progress, and
//!   `heartbeat_unix_ns` with them.
//! * The counters block ([`SlotCounters`], 448 bytes at slot offset 320)
//!   adds `datagrams_sent` and `datagrams_received` (UDP) after
//!   `heartbeat_unix_ns`, then one reserved word.
//! * Strings (`uri`, `driver`, `process_name`) must hold a NUL: a string
//!   without one makes the whole file [`ParseError::BadString`] (the
//!   writer always writes one, and writes the strings before it publishes
//!   the slot, so a reader never sees a half-written one in a slot in use).
//!
//! # Layout (version 1)
//!
//! All fields are little-endian. The file is a [`FileHeader`]
//! (`header_size` bytes, 64 in version 1) followed by `slot_count` slots of
//! `slot_size` bytes (1024 in version 1). A reader of version 1 reads the
//! version-1 prefix of a larger header or slot (size-first layout): fields
//! are only ever added at the end, in reserved space or by growing the
//! sizes.
//!
//! ```text
//! offset  size  header
//! 0       8     magic "CDTSTAT\0"
//! 8       4     layout_version (1)
//! 12      4     header_size (64)
//! 16      4     slot_size (1024)
//! 20      4     slot_count
//! 24      4     pid
//! 28      4     handles_without_slot
//! 32      8     start_time_unix_ns (the first handle's open)
//! 40      16    process_name (NUL-terminated, /proc/self/comm)
//! 56      8     reserved
//!
//! offset  size  slot (at header_size + i * slot_size)
//! 0       4     state: 0 free, 1 in use
//! 4       4     kind: 1 shm publication, 2 shm subscription, 3 udp publication, 4 udp subscription
//! 8       4     generation (bumped each time the slot is handed out)
//! 12      4     ring_slot (reserved: shm subscription's ring slot; u32::MAX = unknown)
//! 16      8     open_time_unix_ns
//! 24      256   uri (NUL-terminated, truncated at a character boundary)
//! 280     16    driver ("ring", "socket", "uring"; NUL-terminated)
//! 296     24    reserved
//! 320     448   counters block (SlotCounters, u64 each)
//! 768     256   reserved
//! ```
//!
//! # Concurrency
//!
//! Only the owning handle writes its slot, with plain (relaxed) stores; the
//! file is read by other processes without any lock. The writer fills a
//! slot (kind, generation, strings, counters zeroed) while its `state` is
//! 0 and release-stores `state = 1` last; on close it stores `state = 0`
//! first. A reader copies the file (a plain `read`) and then parses the
//! copy: it may see a counters block torn between two updates (each
//! counter is one aligned 8-byte store, so each value is one the writer
//! wrote, but two counters may come from different moments), and it may
//! miss a slot opened or closed during the copy. A slot in use it reads
//! has its strings written, unless the slot was closed and reused during
//! the copy; the generation changes then, and the next read is whole.
//!
//! # Drop reasons
//!
//! `drops[i]` counts datagrams dropped for reason `i`, where `i` is
//! `conduit_proto::DropReason as u8`; [`DROP_REASON_NAMES`] lists the names
//! in that order (21 used, 32 places).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use core::fmt;
use std::path::{Path, PathBuf};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Magic bytes at offset 0 of a counters file.
pub const MAGIC: [u8; 8] = *b"CDTSTAT\0";
/// The layout version this crate writes and reads.
pub const LAYOUT_VERSION: u32 = 1;
/// Size of [`FileHeader`] in version 1.
pub const HEADER_SIZE: u32 = 64;
/// Size of [`Slot`] in version 1.
pub const SLOT_SIZE: u32 = 1024;
/// Slots in a file written by conduit: the most handles of one process that
/// publish counters (further handles count in
/// [`FileHeader::handles_without_slot`]).
pub const DEFAULT_SLOT_COUNT: u32 = 256;
/// Capacity of [`Slot::uri`] including its NUL.
pub const URI_LEN: usize = 256;
/// Capacity of [`Slot::driver`] including its NUL.
pub const DRIVER_LEN: usize = 16;
/// Capacity of [`FileHeader::process_name`] including its NUL.
pub const PROCESS_NAME_LEN: usize = 16;
/// Places in [`SlotCounters::drops`].
pub const DROP_SLOTS: usize = 32;
/// Largest file a reader should read (the header and 65536 slots); larger
/// files are not written by conduit.
pub const MAX_FILE_LEN: u64 = HEADER_SIZE as u64 + 65536 * SLOT_SIZE as u64;

/// Slot state: free.
pub const STATE_FREE: u32 = 0;
/// Slot state: owned by an open handle (release-stored last on open).
pub const STATE_IN_USE: u32 = 1;

/// Slot kind: `shm:` publication.
pub const KIND_SHM_PUBLICATION: u32 = 1;
/// Slot kind: `shm:` subscription.
pub const KIND_SHM_SUBSCRIPTION: u32 = 2;
/// Slot kind: `udp:` publication.
pub const KIND_UDP_PUBLICATION: u32 = 3;
/// Slot kind: `udp:` subscription.
pub const KIND_UDP_SUBSCRIPTION: u32 = 4;

/// [`Slot::ring_slot`] of a handle that has no subscriber slot in a ring.
pub const NO_RING_SLOT: u32 = u32::MAX;

/// Name of the subdirectory of the shm directory that holds counters files.
pub const STATS_DIR_NAME: &str = "conduit-stats";
/// Suffix of a counters file name (`<pid>.stats`).
pub const FILE_SUFFIX: &str = ".stats";

/// Names of the drop reasons, indexed like [`SlotCounters::drops`]
/// (`conduit_proto::DropReason as u8`). Places 21 to 31 are unused.
pub const DROP_REASON_NAMES: [&str; 21] = [
    "truncated",
    "bad_version",
    "unknown_type",
    "bad_length",
    "checksum",
    "out_of_window",
    "duplicate",
    "wrong_session",
    "wrong_stream",
    "wrong_source",
    "unexpected",
    "message_too_large",
    "nak_suppressed",
    "auth_failed",
    "replay",
    "plaintext",
    "encrypted",
    "bad_cookie",
    "session_refused",
    "mtu_mismatch",
    "oversized",
];

/// The file header, at offset 0.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, Clone)]
pub struct FileHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub layout_version: U32,
    /// Size of the header; at least [`HEADER_SIZE`].
    pub header_size: U32,
    /// Size of each slot; at least [`SLOT_SIZE`].
    pub slot_size: U32,
    /// Number of slots after the header.
    pub slot_count: U32,
    /// Pid of the writing process (also the file name).
    pub pid: U32,
    /// Handles of this process that got no slot (every slot was taken).
    pub handles_without_slot: U32,
    /// When the file was created (unix time, ns).
    pub start_time_unix_ns: U64,
    /// The process name (`/proc/self/comm`), NUL-terminated.
    pub process_name: [u8; PROCESS_NAME_LEN],
    /// Reserved, zero.
    pub reserved: [u8; 8],
}
const _: () = assert!(core::mem::size_of::<FileHeader>() == HEADER_SIZE as usize);

/// The counters of one handle: one 8-byte word each, written only by the
/// handle with relaxed stores.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, Clone)]
pub struct SlotCounters {
    /// Messages sent (publication) or delivered (subscription).
    pub messages: U64,
    /// Payload bytes sent or delivered.
    pub bytes: U64,
    /// Offers refused for back-pressure.
    pub back_pressure: U64,
    /// Offers refused because no subscriber was connected.
    pub not_connected: U64,
    /// Publication: its stream or ring position; subscription: its read position.
    pub position: U64,
    /// Publication: the slowest subscriber's position (shm) or the acked
    /// position (UDP); subscription: the publisher position it knows.
    pub peer_position: U64,
    /// NAKs sent (UDP subscription).
    pub naks_sent: U64,
    /// NAKs received (UDP publication).
    pub naks_received: U64,
    /// Data datagrams retransmitted (UDP publication).
    pub retransmits: U64,
    /// Stream bytes retransmitted (UDP publication).
    pub retransmitted_bytes: U64,
    /// Smoothed round-trip time in ns (UDP), 0 when unknown.
    pub rtt_ns: U64,
    /// UDP subscription: live sessions; UDP publication: receivers known.
    pub sessions: U64,
    /// Sum of [`SlotCounters::drops`].
    pub drops_total: U64,
    /// Drops by reason, indexed as [`DROP_REASON_NAMES`].
    pub drops: [U64; DROP_SLOTS],
    /// Gaps in the stream detected (UDP subscription).
    pub gaps_detected: U64,
    /// Gaps filled by retransmissions.
    pub gaps_repaired: U64,
    /// Gaps declared lost.
    pub gaps_unrecoverable: U64,
    /// When the last gap was detected (unix ns), 0 if never.
    pub last_gap_unix_ns: U64,
    /// When the last gap was declared lost (unix ns), 0 if never.
    pub last_unrecoverable_unix_ns: U64,
    /// Subscribers evicted (`shm:` publication with `slow=evict`).
    pub evictions: U64,
    /// Subscriber slots in use in the ring (`shm:` publication).
    pub subscriber_slots_in_use: U64,
    /// When the handle last updated its counters (unix ns). UDP handles
    /// refresh it with their counters (at most every millisecond while they
    /// make progress); `shm:` handles write it at open and on their cold
    /// paths only (their data path reads no clock).
    pub heartbeat_unix_ns: U64,
    /// Datagrams sent (UDP).
    pub datagrams_sent: U64,
    /// Datagrams received (UDP).
    pub datagrams_received: U64,
    /// Reserved, zero.
    pub reserved: U64,
}
/// Size of [`SlotCounters`].
pub const COUNTERS_SIZE: usize = 448;
const _: () = assert!(core::mem::size_of::<SlotCounters>() == COUNTERS_SIZE);

/// One slot: the description of a handle and its counters.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, Clone)]
pub struct Slot {
    /// [`STATE_FREE`] or [`STATE_IN_USE`].
    pub state: U32,
    /// One of the `KIND_*` constants.
    pub kind: U32,
    /// Bumped each time the slot is handed out.
    pub generation: U32,
    /// Reserved for an `shm:` subscription's subscriber slot in the ring
    /// file; [`NO_RING_SLOT`] when unknown (always, today).
    pub ring_slot: U32,
    /// When the handle was opened (unix ns).
    pub open_time_unix_ns: U64,
    /// The channel URI, NUL-terminated.
    pub uri: [u8; URI_LEN],
    /// The I/O driver, NUL-terminated.
    pub driver: [u8; DRIVER_LEN],
    /// Reserved, zero (aligns the counters block to a cache line).
    pub reserved: [u8; 24],
    /// The counters, at offset 320.
    pub counters: SlotCounters,
    /// Reserved, zero.
    pub reserved_tail: [u8; 256],
}
const _: () = assert!(core::mem::size_of::<Slot>() == SLOT_SIZE as usize);
const _: () = assert!(core::mem::offset_of!(Slot, counters) == 320);
const _: () = assert!(core::mem::offset_of!(Slot, counters) % 64 == 0);
const _: () = assert!(DROP_REASON_NAMES.len() <= DROP_SLOTS);

/// Writes `s` into `dst` NUL-terminated, truncated at a character boundary so
/// that the NUL fits; the rest of `dst` is zeroed. Returns the bytes of `s`
/// written.
///
/// ```
/// let mut b = [0xffu8; 8];
/// assert_eq!(conduit_counters::encode_str(&mut b, "shm:abcdefgh"), 7);
/// assert_eq!(&b, b"shm:abc\0");
/// ```
pub fn encode_str(dst: &mut [u8], s: &str) -> usize {
    let Some(cap) = dst.len().checked_sub(1) else {
        return 0;
    };
    let mut n = s.len().min(cap);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
    dst[n..].fill(0);
    n
}

impl FileHeader {
    /// A version-1 header for `pid` with `slot_count` slots.
    ///
    /// ```
    /// use conduit_counters::FileHeader;
    /// let h = FileHeader::new(42, 4, 1_000, "app");
    /// assert_eq!(h.pid.get(), 42);
    /// ```
    pub fn new(
        pid: u32,
        slot_count: u32,
        start_time_unix_ns: u64,
        process_name: &str,
    ) -> FileHeader {
        let mut h = FileHeader::new_zeroed();
        h.magic = MAGIC;
        h.layout_version.set(LAYOUT_VERSION);
        h.header_size.set(HEADER_SIZE);
        h.slot_size.set(SLOT_SIZE);
        h.slot_count.set(slot_count);
        h.pid.set(pid);
        h.start_time_unix_ns.set(start_time_unix_ns);
        encode_str(&mut h.process_name, process_name);
        h
    }
}

impl Slot {
    /// A slot in use of `kind` for `uri`, with zero counters.
    ///
    /// ```
    /// use conduit_counters::{Slot, KIND_SHM_PUBLICATION};
    /// let s = Slot::new(KIND_SHM_PUBLICATION, 1, 5, "shm:a", "ring");
    /// assert_eq!(s.state.get(), conduit_counters::STATE_IN_USE);
    /// ```
    pub fn new(
        kind: u32,
        generation: u32,
        open_time_unix_ns: u64,
        uri: &str,
        driver: &str,
    ) -> Slot {
        let mut s = Slot::new_zeroed();
        s.state.set(STATE_IN_USE);
        s.kind.set(kind);
        s.generation.set(generation);
        s.ring_slot.set(NO_RING_SLOT);
        s.open_time_unix_ns.set(open_time_unix_ns);
        encode_str(&mut s.uri, uri);
        encode_str(&mut s.driver, driver);
        s
    }
}

/// Builds the bytes of a whole file (tests and tools; the writer in
/// `conduit` maps the file and stores into it).
///
/// ```
/// use conduit_counters::{build_file, parse, FileHeader, Slot, KIND_UDP_PUBLICATION};
/// let bytes = build_file(&FileHeader::new(7, 2, 0, "x"), &[Slot::new(KIND_UDP_PUBLICATION, 1, 0, "udp://h:1", "socket")]);
/// assert_eq!(parse(&bytes).unwrap().slots.len(), 1);
/// ```
pub fn build_file(header: &FileHeader, slots: &[Slot]) -> Vec<u8> {
    let mut h = header.clone();
    let count = (slots.len() as u32).max(h.slot_count.get());
    h.slot_count.set(count);
    let mut out = h.as_bytes().to_vec();
    for s in slots {
        out.extend_from_slice(s.as_bytes());
    }
    for _ in slots.len()..count as usize {
        out.extend_from_slice(Slot::new_zeroed().as_bytes());
    }
    out
}

/// The kind of handle a slot describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// `shm:` publication.
    ShmPublication,
    /// `shm:` subscription.
    ShmSubscription,
    /// `udp:` publication.
    UdpPublication,
    /// `udp:` subscription.
    UdpSubscription,
    /// A kind this reader does not know (a newer writer).
    Unknown(u32),
}

impl Kind {
    /// The kind of a raw `kind` field.
    ///
    /// ```
    /// use conduit_counters::Kind;
    /// assert_eq!(Kind::from_raw(3), Kind::UdpPublication);
    /// assert_eq!(Kind::from_raw(9), Kind::Unknown(9));
    /// ```
    pub fn from_raw(v: u32) -> Kind {
        match v {
            KIND_SHM_PUBLICATION => Kind::ShmPublication,
            KIND_SHM_SUBSCRIPTION => Kind::ShmSubscription,
            KIND_UDP_PUBLICATION => Kind::UdpPublication,
            KIND_UDP_SUBSCRIPTION => Kind::UdpSubscription,
            other => Kind::Unknown(other),
        }
    }

    /// The raw `kind` field.
    ///
    /// ```
    /// assert_eq!(conduit_counters::Kind::ShmSubscription.raw(), 2);
    /// ```
    pub fn raw(self) -> u32 {
        match self {
            Kind::ShmPublication => KIND_SHM_PUBLICATION,
            Kind::ShmSubscription => KIND_SHM_SUBSCRIPTION,
            Kind::UdpPublication => KIND_UDP_PUBLICATION,
            Kind::UdpSubscription => KIND_UDP_SUBSCRIPTION,
            Kind::Unknown(v) => v,
        }
    }

    /// `"publication"`, `"subscription"` or `"unknown"`.
    ///
    /// ```
    /// assert_eq!(conduit_counters::Kind::UdpSubscription.role(), "subscription");
    /// ```
    pub fn role(self) -> &'static str {
        match self {
            Kind::ShmPublication | Kind::UdpPublication => "publication",
            Kind::ShmSubscription | Kind::UdpSubscription => "subscription",
            Kind::Unknown(_) => "unknown",
        }
    }

    /// `"shm"`, `"udp"` or `"unknown"`.
    ///
    /// ```
    /// assert_eq!(conduit_counters::Kind::ShmPublication.transport(), "shm");
    /// ```
    pub fn transport(self) -> &'static str {
        match self {
            Kind::ShmPublication | Kind::ShmSubscription => "shm",
            Kind::UdpPublication | Kind::UdpSubscription => "udp",
            Kind::Unknown(_) => "unknown",
        }
    }
}

/// The counters of a slot, as plain numbers (see [`SlotCounters`] for the
/// meaning of each). With the `serde` feature it implements
/// `serde::Serialize`, as an object of these fields by name, `drops` left out
/// (by index it means nothing without [`DROP_REASON_NAMES`]; see
/// [`drops_by_reason`](Self::drops_by_reason)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CounterValues {
    /// Messages sent or delivered.
    pub messages: u64,
    /// Payload bytes sent or delivered.
    pub bytes: u64,
    /// Offers refused for back-pressure.
    pub back_pressure: u64,
    /// Offers refused for no subscriber.
    pub not_connected: u64,
    /// The handle's position.
    pub position: u64,
    /// The peer's position (see [`SlotCounters::peer_position`]).
    pub peer_position: u64,
    /// NAKs sent.
    pub naks_sent: u64,
    /// NAKs received.
    pub naks_received: u64,
    /// Data datagrams retransmitted.
    pub retransmits: u64,
    /// Stream bytes retransmitted.
    pub retransmitted_bytes: u64,
    /// Smoothed RTT in ns, 0 when unknown.
    pub rtt_ns: u64,
    /// Live sessions or receivers known.
    pub sessions: u64,
    /// All drops.
    pub drops_total: u64,
    /// Drops by reason, indexed as [`DROP_REASON_NAMES`].
    #[cfg_attr(feature = "serde", serde(skip))]
    pub drops: [u64; DROP_SLOTS],
    /// Gaps detected.
    pub gaps_detected: u64,
    /// Gaps repaired.
    pub gaps_repaired: u64,
    /// Gaps declared lost.
    pub gaps_unrecoverable: u64,
    /// Last gap detected (unix ns), 0 if never.
    pub last_gap_unix_ns: u64,
    /// Last gap declared lost (unix ns), 0 if never.
    pub last_unrecoverable_unix_ns: u64,
    /// Subscribers evicted.
    pub evictions: u64,
    /// Subscriber slots in use.
    pub subscriber_slots_in_use: u64,
    /// Last update of the counters (unix ns).
    pub heartbeat_unix_ns: u64,
    /// Datagrams sent (UDP).
    pub datagrams_sent: u64,
    /// Datagrams received (UDP).
    pub datagrams_received: u64,
}

impl CounterValues {
    /// `(name, count)` for every known drop reason.
    ///
    /// ```
    /// let v = conduit_counters::CounterValues::default();
    /// assert_eq!(v.drops_by_reason().next(), Some(("truncated", 0)));
    /// ```
    pub fn drops_by_reason(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DROP_REASON_NAMES
            .iter()
            .zip(self.drops.iter())
            .map(|(n, v)| (*n, *v))
    }
}

impl From<&SlotCounters> for CounterValues {
    fn from(c: &SlotCounters) -> CounterValues {
        let mut drops = [0u64; DROP_SLOTS];
        for (d, s) in drops.iter_mut().zip(c.drops.iter()) {
            *d = s.get();
        }
        CounterValues {
            messages: c.messages.get(),
            bytes: c.bytes.get(),
            back_pressure: c.back_pressure.get(),
            not_connected: c.not_connected.get(),
            position: c.position.get(),
            peer_position: c.peer_position.get(),
            naks_sent: c.naks_sent.get(),
            naks_received: c.naks_received.get(),
            retransmits: c.retransmits.get(),
            retransmitted_bytes: c.retransmitted_bytes.get(),
            rtt_ns: c.rtt_ns.get(),
            sessions: c.sessions.get(),
            drops_total: c.drops_total.get(),
            drops,
            gaps_detected: c.gaps_detected.get(),
            gaps_repaired: c.gaps_repaired.get(),
            gaps_unrecoverable: c.gaps_unrecoverable.get(),
            last_gap_unix_ns: c.last_gap_unix_ns.get(),
            last_unrecoverable_unix_ns: c.last_unrecoverable_unix_ns.get(),
            evictions: c.evictions.get(),
            subscriber_slots_in_use: c.subscriber_slots_in_use.get(),
            heartbeat_unix_ns: c.heartbeat_unix_ns.get(),
            datagrams_sent: c.datagrams_sent.get(),
            datagrams_received: c.datagrams_received.get(),
        }
    }
}

/// One slot in use, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlotSnapshot {
    /// Index of the slot in the file.
    pub index: u32,
    /// The kind of handle.
    pub kind: Kind,
    /// The slot's generation (changes when the slot is reused).
    pub generation: u32,
    /// Reserved: an `shm:` subscription's subscriber slot in the ring;
    /// [`NO_RING_SLOT`] when unknown.
    pub ring_slot: u32,
    /// When the handle was opened (unix ns).
    pub open_time_unix_ns: u64,
    /// The channel URI (lossy UTF-8, at most 255 bytes).
    pub uri: String,
    /// The driver (lossy UTF-8, at most 15 bytes).
    pub driver: String,
    /// The counters.
    pub counters: CounterValues,
}

/// A decoded counters file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The file's layout version.
    pub layout_version: u32,
    /// The header size in the file.
    pub header_size: u32,
    /// The slot size in the file.
    pub slot_size: u32,
    /// Number of slots in the file.
    pub slot_count: u32,
    /// The writer's pid.
    pub pid: u32,
    /// Handles of the process that got no slot.
    pub handles_without_slot: u32,
    /// When the file was created (unix ns).
    pub start_time_unix_ns: u64,
    /// The process name (lossy UTF-8).
    pub process_name: String,
    /// The slots in use, in file order.
    pub slots: Vec<SlotSnapshot>,
}

/// Why a counters file was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Shorter than its header, or than the slots its header declares.
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes there.
        len: u64,
    },
    /// Not a counters file.
    BadMagic,
    /// A layout version this reader does not know (skip the file).
    UnsupportedVersion {
        /// The file's version.
        version: u32,
    },
    /// A header or slot size smaller than this version's.
    BadSize {
        /// `"header_size"` or `"slot_size"`.
        field: &'static str,
        /// The value in the file.
        value: u32,
    },
    /// A string field of a slot in use (or of the header) with no NUL.
    BadString {
        /// The slot, or `None` for the header.
        slot: Option<u32>,
        /// `"uri"`, `"driver"` or `"process_name"`.
        field: &'static str,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Truncated { needed, len } => {
                write!(f, "truncated counters file: {len} bytes, {needed} needed")
            }
            ParseError::BadMagic => f.write_str("not a conduit counters file (bad magic)"),
            ParseError::UnsupportedVersion { version } => write!(
                f,
                "counters file layout version {version}, this reader knows {LAYOUT_VERSION}"
            ),
            ParseError::BadSize { field, value } => {
                write!(f, "counters file {field} {value} is too small")
            }
            ParseError::BadString {
                slot: Some(i),
                field,
            } => {
                write!(f, "counters file slot {i}: {field} is not NUL-terminated")
            }
            ParseError::BadString { slot: None, field } => {
                write!(f, "counters file header: {field} is not NUL-terminated")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Decodes a NUL-terminated string, lossily.
fn decode_str(b: &[u8], slot: Option<u32>, field: &'static str) -> Result<String, ParseError> {
    let n = b
        .iter()
        .position(|&c| c == 0)
        .ok_or(ParseError::BadString { slot, field })?;
    Ok(String::from_utf8_lossy(&b[..n]).into_owned())
}

/// Decodes a counters file (a copy of its bytes), checking everything.
///
/// # Errors
/// [`ParseError`] for a file that is truncated, not a counters file, of
/// another layout version, with sizes smaller than version 1's, or whose
/// slots in use hold a string without a NUL. Never panics.
///
/// ```
/// use conduit_counters::{build_file, parse, FileHeader, Kind, ParseError, Slot, KIND_SHM_PUBLICATION};
/// let mut slot = Slot::new(KIND_SHM_PUBLICATION, 1, 0, "shm:prices", "ring");
/// slot.counters.messages.set(10);
/// let bytes = build_file(&FileHeader::new(42, 8, 0, "app"), &[slot]);
/// let snap = parse(&bytes).unwrap();
/// assert_eq!((snap.pid, snap.slots[0].kind), (42, Kind::ShmPublication));
/// assert_eq!(snap.slots[0].counters.messages, 10);
/// assert!(matches!(parse(&bytes[..100]), Err(ParseError::Truncated { .. })));
/// ```
pub fn parse(bytes: &[u8]) -> Result<Snapshot, ParseError> {
    let len = bytes.len() as u64;
    let Ok((h, _)) = FileHeader::ref_from_prefix(bytes) else {
        return Err(ParseError::Truncated {
            needed: HEADER_SIZE as u64,
            len,
        });
    };
    if h.magic != MAGIC {
        return Err(ParseError::BadMagic);
    }
    let version = h.layout_version.get();
    if version != LAYOUT_VERSION {
        return Err(ParseError::UnsupportedVersion { version });
    }
    let header_size = h.header_size.get();
    if header_size < HEADER_SIZE {
        return Err(ParseError::BadSize {
            field: "header_size",
            value: header_size,
        });
    }
    let slot_size = h.slot_size.get();
    if slot_size < SLOT_SIZE {
        return Err(ParseError::BadSize {
            field: "slot_size",
            value: slot_size,
        });
    }
    let slot_count = h.slot_count.get();
    // u32 * u32 + u32 fits in u64.
    let needed = header_size as u64 + slot_count as u64 * slot_size as u64;
    if needed > len {
        return Err(ParseError::Truncated { needed, len });
    }
    let process_name = decode_str(&h.process_name, None, "process_name")?;
    let mut slots = Vec::new();
    for i in 0..slot_count {
        // In bounds: checked against `needed` above.
        let at = (header_size as u64 + i as u64 * slot_size as u64) as usize;
        let Ok((s, _)) = Slot::ref_from_prefix(&bytes[at..]) else {
            return Err(ParseError::Truncated { needed, len });
        };
        if s.state.get() != STATE_IN_USE {
            continue;
        }
        slots.push(SlotSnapshot {
            index: i,
            kind: Kind::from_raw(s.kind.get()),
            generation: s.generation.get(),
            ring_slot: s.ring_slot.get(),
            open_time_unix_ns: s.open_time_unix_ns.get(),
            uri: decode_str(&s.uri, Some(i), "uri")?,
            driver: decode_str(&s.driver, Some(i), "driver")?,
            counters: CounterValues::from(&s.counters),
        });
    }
    Ok(Snapshot {
        layout_version: version,
        header_size,
        slot_size,
        slot_count,
        pid: h.pid.get(),
        handles_without_slot: h.handles_without_slot.get(),
        start_time_unix_ns: h.start_time_unix_ns.get(),
        process_name,
        slots,
    })
}

/// The directory of counters files under the shm directory `shm_dir`.
///
/// ```
/// use std::path::Path;
/// assert_eq!(conduit_counters::stats_dir(Path::new("/dev/shm")), Path::new("/dev/shm/conduit-stats"));
/// ```
pub fn stats_dir(shm_dir: &Path) -> PathBuf {
    shm_dir.join(STATS_DIR_NAME)
}

/// The shm directory: `$CONDUIT_SHM_DIR` when set and not empty, else `/dev/shm`
/// (the same rule as the rings').
///
/// ```
/// let d = conduit_counters::default_shm_dir();
/// assert!(d.is_absolute() || std::env::var_os("CONDUIT_SHM_DIR").is_some());
/// ```
pub fn default_shm_dir() -> PathBuf {
    std::env::var_os("CONDUIT_SHM_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"))
}

/// The file name of `pid`'s counters file.
///
/// ```
/// assert_eq!(conduit_counters::file_name(42), "42.stats");
/// ```
pub fn file_name(pid: u32) -> String {
    format!("{pid}{FILE_SUFFIX}")
}

/// The pid a counters file name stands for (`"42.stats"` → 42); `None` for
/// any other name (temporary files, foreign files).
///
/// ```
/// use conduit_counters::pid_from_file_name;
/// assert_eq!(pid_from_file_name("42.stats"), Some(42));
/// assert_eq!(pid_from_file_name(".42.stats.tmp"), None);
/// assert_eq!(pid_from_file_name("+42.stats"), None);
/// ```
pub fn pid_from_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(FILE_SUFFIX)?;
    if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests;
