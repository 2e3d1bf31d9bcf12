//! Byte layout of a ring file, and validation of its header.
//!
//! All offsets are from the start of the file; every multi-byte field is
//! little-endian (the atomics are native-endian, and rings only ever cross
//! processes of one host).
//!
//! ```text
//! offset            size              what
//! 0                 128               Header (immutable after creation, see [`Header`])
//! 128               128               publisher block: closed u32, fence_mode u32, tail u64;
//!                                     at 64 (multi-writer rings): claim_lock, claim_tail,
//!                                     zeroed, history_joins, claim_wanted (u64 each)
//! 256               128               signal block: attention u64, futex u32
//! 384               128 × S           subscriber slots: state u32, pid u32, position u64,
//!                                     generation u64, waiting u32, start u32
//!                                     (S = max_subscribers)
//! 384 + 128 × S     128 × P           publisher slots (only when P = max_publishers > 1):
//!                                     state u32, pid u32, at 64: pending_start u64, pending_end u64,
//!                                     busy u32
//! 384 + 128 × (S+P) 512               history marks (only when P > 1): 64 × u64, the
//!                                     position + 1 of a record start in each 1/64 of the
//!                                     lap (see `history.rs`), written by the claim-lock holder
//! data_offset       capacity          records (data_offset = 384 + 128 × (S + P') rounded up
//!                                     to 4096, P' = P + 4 if P > 1, else 0)
//! ```
//!
//! Layout version 4 added the publisher slot's `busy` word and the claim
//! lock's solo bit (a publisher alone on a multi-writer ring keeps the lock
//! between claims; see `publisher/multi.rs`): a version-3 writer would not
//! know to take the lock over from a solo keeper.
//!
//! Layout version 3 took the first 8 reserved header bytes for
//! `max_publishers` (0 or 1: one publisher, the single-writer protocol; more:
//! the multi-writer protocol of the crate docs) and added the publisher
//! slots; it added the slow-subscriber policy and the history window to the
//! header (`slow_policy`, `evict_after_ns`, `history`), the [`SLOT_EVICTED`]
//! state and the slot's `start` word (`from=history`).
//!
//! Layout version 2 added `waiting` to the slots and moved the liveness
//! locks from bytes past the end of the ring file to a separate lock file
//! (see `liveness.rs`); the header's `incarnation` is random and names that
//! lock file. The file's memory is reserved at creation.
//!
//! Every mutable shared word sits in its own 128-byte block, so the publisher's
//! hot words, the waiters' words and each subscriber's position never share a
//! cache line (nor an adjacent-line prefetch pair).
//!
//! ## Records
//!
//! A record starts at a position that is a multiple of [`RECORD_ALIGN`] (32)
//! and is laid out as
//!
//! ```text
//! +0   commit  u64   position of the record + 1, release-stored LAST
//! +8   len     u32   payload length, or PADDING_LEN for a padding record
//! +12  type_id u32   the application's type id
//! +16  payload       len bytes, 16-byte aligned in memory
//! ```
//!
//! and occupies `align_up(16 + len, 32)` bytes. A record never wraps: when one
//! does not fit before the end of the data area, the publisher first writes a
//! padding record that runs to the end, and the real record starts the next lap
//! at offset 0.
//!
//! ## Commit protocol
//!
//! The publisher writes `len`, `type_id` and the payload, then
//! release-stores `commit = position + 1`. A subscriber waiting at position
//! `p` acquire-loads the commit word at `p & mask`: `p + 1` means a complete
//! record (the load makes header and payload visible), 0 means not yet
//! written.
//!
//! Zeroing ahead: the publisher keeps the bytes from its tail up to a mark
//! `zeroed` at zero. After a commit, when fewer than 512 bytes ahead are
//! zeroed, it zeroes up to 1 KiB more (never past its `limit`, so never a byte
//! a subscriber may still read); if a record would end past the mark anyway,
//! it zeroes the next commit word itself before the commit. So the commit word
//! after every record is zero before that record is committed (and the file
//! starts zeroed): the word a reader looks at can never hold bytes of an
//! earlier lap. Any value other than `p + 1` or 0 is corrupt; one that reads
//! `p + 1 + k·capacity` says the record was overwritten (the subscriber was
//! lapped). Zeroing in batches after a commit keeps the ownership transfers of
//! those lines off the path that makes a record visible. A record's header and
//! (for small payloads) its payload sit in one cache line, so a reader sees a
//! new record by touching one line.
//!
//! Space: the publisher writes (and zeroes) `[tail, end)` only while
//! `end + 8 <= min(subscriber position) + capacity`, so it never touches a
//! record a subscriber has yet to read.

use crate::error::RingError;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Magic bytes at offset 0 of every ring file.
pub const MAGIC: [u8; 8] = *b"CNDTRING";
/// Version of this layout; a file with another version is refused.
pub const LAYOUT_VERSION: u32 = 4;
/// Size of [`Header`].
pub const HEADER_LEN: usize = 128;
/// Size of every shared block (publisher, signal, each subscriber slot).
pub const BLOCK_LEN: usize = 128;
/// Offset of the publisher block.
pub const PUBLISHER_BLOCK: usize = 128;
/// Offset, in the publisher block, of the claim words of a multi-writer
/// ring (claim lock u64, claim tail u64, zeroed u64, history joins u64,
/// claim wanted u64), on the block's second cache line: the first holds
/// what subscribers read (`closed`, `fence_mode`, `tail`).
pub const CLAIM_WORDS_OFFSET: usize = 64;
/// Offset of the signal block (waiters, membership requests, futex word).
pub const SIGNAL_BLOCK: usize = 256;
/// Offset of subscriber slot 0.
pub const SLOTS_OFFSET: usize = 384;
/// Size of a record header.
pub const RECORD_HEADER_LEN: usize = 16;
/// Alignment of records (and so of positions).
pub const RECORD_ALIGN: usize = 32;
/// `len` value that marks a padding record running to the end of the data area.
pub const PADDING_LEN: u32 = u32::MAX;
/// Largest position a subscriber accepts as its start (2^62 bytes: centuries
/// at memory speed), so position arithmetic can never overflow.
pub const MAX_POSITION: u64 = 1 << 62;
/// Smallest data capacity.
pub const MIN_CAPACITY: usize = 256;
/// Largest data capacity (64 GiB).
pub const MAX_CAPACITY: usize = 1 << 36;
/// Most subscriber slots a ring may have.
pub const MAX_SUBSCRIBERS: u32 = 1024;
/// Alignment of the data area in the file.
pub const DATA_ALIGN: usize = 4096;

/// Most publishers a ring may have.
pub const MAX_PUBLISHERS: u32 = 64;
/// Largest payload of a ring with several publishers: the high 8 bits of a
/// record's `len` word carry the index + 1 of the publisher that wrote it,
/// and the masked length of a skip record ([`SKIP_LEN`]) must exceed every
/// valid length, so that it takes the reader's cold path.
pub const MAX_MULTI_MESSAGE_LEN: u64 = (1 << 24) - 256;
/// Mask of the length bits of a multi-writer record's `len` word.
pub const LEN_MASK: u32 = (1 << 24) - 1;
/// Shift of the publisher index + 1 in a multi-writer record's `len` word.
pub const SOURCE_SHIFT: u32 = 24;
/// `len` value of a skip record (multi-writer rings only): an aborted claim
/// or one a publisher died holding; `type_id` holds the bytes to skip (a
/// multiple of 32 that stays inside the lap).
pub const SKIP_LEN: u32 = u32::MAX - 1;
/// 128-byte blocks of the history marks of a multi-writer ring (64 × u64),
/// after its publisher slots.
pub const MARK_BLOCKS: u32 = 4;
/// Publisher slot state: unused.
pub const PUB_FREE: u32 = 0;
/// Publisher slot state: owned by a publisher (whose lock byte tells whether
/// it is alive).
pub const PUB_ATTACHED: u32 = 1;
/// Publisher slot state: just taken by a new owner (who holds its lock
/// byte) that has not yet resolved a claim the previous, dead owner may
/// have left: subscribers treat such a claim as a dead publisher's.
pub const PUB_RECLAIMING: u32 = 2;

/// Slot state: unused.
pub const SLOT_FREE: u32 = 0;
/// Slot state: a subscriber owns the slot and waits for the publisher to
/// assign its start position.
pub const SLOT_JOINING: u32 = 1;
/// Slot state: the subscriber reads from its position; it holds the publisher back.
pub const SLOT_ACTIVE: u32 = 2;
/// Slot state: the publisher cut the subscriber loose (`slow=evict`): it no
/// longer holds the publisher back, and rejoins at the live position.
pub const SLOT_EVICTED: u32 = 3;

/// `slow_policy`: the slowest subscriber back-pressures the publisher.
pub const SLOW_BLOCK: u32 = 0;
/// `slow_policy`: a subscriber holding the publisher back for longer than
/// `evict_after_ns` is evicted.
pub const SLOW_EVICT: u32 = 1;
/// Largest `evict_after_ns` (one hour).
pub const MAX_EVICT_AFTER_NS: u64 = 3_600_000_000_000;

/// Slot `start` value: join at the publisher's tail (the default).
pub const START_LIVE: u32 = 0;
/// Slot `start` value: join at the oldest whole record of the history window.
pub const START_HISTORY: u32 = 1;

/// `fence_mode`: the publisher fences after each commit; sleepers need nothing more.
pub const FENCE_PUBLISHER: u32 = 0;
/// `fence_mode`: the publisher's process is registered for
/// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`; a sleeper issues it.
pub const FENCE_MEMBARRIER: u32 = 1;

/// One sleeping waiter in the signal block's `attention` word (low 32 bits).
pub const ATTENTION_WAITER: u64 = 1;
/// One membership request (join or leave) in `attention` (high 32 bits).
pub const ATTENTION_MEMBERSHIP: u64 = 1 << 32;

/// The immutable header at offset 0.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, Clone)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub layout_version: U32,
    /// [`HEADER_LEN`].
    pub header_len: U32,
    /// Data capacity in bytes, a power of two.
    pub capacity: U64,
    /// Largest payload in bytes.
    pub max_message_len: U64,
    /// Number of subscriber slots.
    pub max_subscribers: U32,
    /// Pid of the process that created the file.
    pub creator_pid: U32,
    /// Offset of the data area.
    pub data_offset: U64,
    /// Total length of the file.
    pub file_len: U64,
    /// Reserved flags, 0.
    pub flags: U64,
    /// 64 random bits per created file: tells a new ring from an old one
    /// even when the file system reuses the inode number, and names the
    /// ring's lock file.
    pub incarnation: U64,
    /// Most concurrent publishers (multi-writer rings).
    pub max_publishers: U32,
    /// Reserved for multi-writer rings, zero.
    pub reserved_mpsc: U32,
    /// What the publisher does with a subscriber that holds it back:
    /// [`SLOW_BLOCK`] or [`SLOW_EVICT`].
    pub slow_policy: U32,
    /// Reserved, zero.
    pub reserved_slow: U32,
    /// With [`SLOW_EVICT`]: nanoseconds a subscriber may hold the publisher
    /// back before it is evicted (1 ns to [`MAX_EVICT_AFTER_NS`]); else 0.
    pub evict_after_ns: U64,
    /// Bytes of the most recent records the ring keeps readable for
    /// `from=history` joiners (at most [`max_history`] of the capacity).
    pub history: U64,
    /// Reserved, zero.
    pub reserved: [u8; 24],
}
const _: () = assert!(core::mem::size_of::<Header>() == HEADER_LEN);

/// Geometry of a ring, computed from a validated header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Data capacity in bytes (power of two).
    pub capacity: u64,
    /// Largest payload.
    pub max_message_len: u64,
    /// Subscriber slots.
    pub max_subscribers: u32,
    /// Publisher slots: 1 means the single-writer protocol (no slots).
    pub max_publishers: u32,
    /// Offset of the data area.
    pub data_offset: u64,
    /// Length of the file.
    pub file_len: u64,
}

/// Rounds `v` up to a multiple of `a` (a power of two).
#[inline]
pub const fn align_up(v: u64, a: u64) -> u64 {
    (v + a - 1) & !(a - 1)
}

/// Bytes a record with a payload of `len` bytes occupies.
#[inline]
pub const fn record_len(len: u64) -> u64 {
    align_up(RECORD_HEADER_LEN as u64 + len, RECORD_ALIGN as u64)
}

/// Largest `max_message_len` for a capacity: `capacity / 2 - 16`, so that a
/// largest record plus the padding before it always fits in an empty ring.
pub const fn max_message_limit(capacity: u64) -> u64 {
    capacity / 2 - RECORD_HEADER_LEN as u64
}

/// Offset of the data area for `max_subscribers` subscriber slots and
/// `max_publishers` publishers (slots only when more than one).
pub const fn data_offset(max_subscribers: u32, max_publishers: u32) -> u64 {
    let p = if max_publishers > 1 {
        max_publishers + MARK_BLOCKS
    } else {
        0
    };
    align_up(
        (SLOTS_OFFSET + BLOCK_LEN * (max_subscribers + p) as usize) as u64,
        DATA_ALIGN as u64,
    )
}

/// Offset of publisher slot `j` of a ring with `max_subscribers` subscriber slots.
pub const fn pub_slot_offset(max_subscribers: u32, j: u32) -> usize {
    SLOTS_OFFSET + BLOCK_LEN * (max_subscribers + j) as usize
}

/// Offset of the history marks of a multi-writer ring with
/// `max_subscribers` subscriber slots and `max_publishers` publishers.
pub const fn marks_offset(max_subscribers: u32, max_publishers: u32) -> usize {
    pub_slot_offset(max_subscribers, max_publishers)
}

/// Offset of subscriber slot `i`.
pub const fn slot_offset(i: u32) -> usize {
    SLOTS_OFFSET + BLOCK_LEN * i as usize
}

impl Geometry {
    /// Geometry of a new ring; checks the configuration (the one place its
    /// limits are checked: callers such as the `shm:` URI only parse).
    ///
    /// # Errors
    /// [`RingError::InvalidConfig`] naming the [`RingConfig`](crate::RingConfig)
    /// field out of range.
    pub fn new(
        capacity: usize,
        max_message_len: usize,
        max_subscribers: u32,
        max_publishers: u32,
    ) -> Result<Geometry, RingError> {
        if !(1..=MAX_PUBLISHERS).contains(&max_publishers) {
            return Err(RingError::config(
                "max_publishers",
                format!("{max_publishers} is not 1 to {MAX_PUBLISHERS}"),
            ));
        }
        if max_publishers > 1 && max_message_len as u64 > MAX_MULTI_MESSAGE_LEN {
            return Err(RingError::config(
                "max_message_len",
                format!("{max_message_len} exceeds {MAX_MULTI_MESSAGE_LEN}, the limit of a ring with several publishers"),
            ));
        }
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(RingError::config(
                "capacity",
                format!("{capacity} is not a power of two from {MIN_CAPACITY} to {MAX_CAPACITY}"),
            ));
        }
        if max_message_len > max_message_limit(capacity as u64) as usize {
            return Err(RingError::config(
                "max_message_len",
                format!(
                    "{max_message_len} exceeds half the capacity less the record header ({})",
                    max_message_limit(capacity as u64)
                ),
            ));
        }
        if !(1..=MAX_SUBSCRIBERS).contains(&max_subscribers) {
            return Err(RingError::config(
                "max_subscribers",
                format!("{max_subscribers} is not 1 to {MAX_SUBSCRIBERS}"),
            ));
        }
        let data_offset = data_offset(max_subscribers, max_publishers);
        Ok(Geometry {
            capacity: capacity as u64,
            max_message_len: max_message_len as u64,
            max_subscribers,
            max_publishers,
            data_offset,
            file_len: data_offset + capacity as u64,
        })
    }

    /// The header describing this geometry.
    pub fn header(&self, creator_pid: u32, incarnation: u64) -> Header {
        Header {
            magic: MAGIC,
            layout_version: U32::new(LAYOUT_VERSION),
            header_len: U32::new(HEADER_LEN as u32),
            capacity: U64::new(self.capacity),
            max_message_len: U64::new(self.max_message_len),
            max_subscribers: U32::new(self.max_subscribers),
            creator_pid: U32::new(creator_pid),
            data_offset: U64::new(self.data_offset),
            file_len: U64::new(self.file_len),
            flags: U64::new(0),
            incarnation: U64::new(incarnation),
            max_publishers: U32::new(self.max_publishers),
            reserved_mpsc: U32::new(0),
            slow_policy: U32::new(SLOW_BLOCK),
            reserved_slow: U32::new(0),
            evict_after_ns: U64::new(0),
            history: U64::new(0),
            reserved: [0; 24],
        }
    }
}

/// What is wrong with a ring file's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than a header, or shorter than the header says.
    Truncated {
        /// Bytes present.
        len: u64,
        /// Bytes needed.
        expected: u64,
    },
    /// Wrong magic.
    NotARing,
    /// Another layout version.
    Version {
        /// Version in the file.
        found: u32,
    },
    /// The capacity does not match the file's size or its other fields.
    CapacityMismatch {
        /// Capacity in the header.
        header: u64,
        /// Capacity implied by the file.
        file: u64,
    },
    /// Any other field out of range.
    Invalid(String),
}

/// Validates the header at the start of `bytes` against a file of `file_len` bytes.
pub fn validate(bytes: &[u8], file_len: u64) -> Result<(Header, Geometry), HeaderError> {
    let Ok((h, _)) = Header::ref_from_prefix(bytes) else {
        if bytes.len() >= MAGIC.len() && bytes[..MAGIC.len()] != MAGIC {
            return Err(HeaderError::NotARing);
        }
        return Err(HeaderError::Truncated {
            len: file_len,
            expected: HEADER_LEN as u64,
        });
    };
    if h.magic != MAGIC {
        return Err(HeaderError::NotARing);
    }
    if h.layout_version.get() != LAYOUT_VERSION {
        return Err(HeaderError::Version {
            found: h.layout_version.get(),
        });
    }
    if h.header_len.get() as usize != HEADER_LEN {
        return Err(HeaderError::Invalid(format!(
            "header length {} where {HEADER_LEN} was expected",
            h.header_len.get()
        )));
    }
    let subs = h.max_subscribers.get();
    if !(1..=MAX_SUBSCRIBERS).contains(&subs) {
        return Err(HeaderError::Invalid(format!(
            "max_subscribers {subs} outside 1..={MAX_SUBSCRIBERS}"
        )));
    }
    let pubs = h.max_publishers.get().max(1);
    if pubs > MAX_PUBLISHERS {
        return Err(HeaderError::Invalid(format!(
            "max_publishers {pubs} outside 1..={MAX_PUBLISHERS}"
        )));
    }
    let expected_data = data_offset(subs, pubs);
    if h.data_offset.get() != expected_data {
        return Err(HeaderError::Invalid(format!(
            "data offset {} where {expected_data} was expected for {subs} subscribers and {pubs} publishers",
            h.data_offset.get()
        )));
    }
    let cap = h.capacity.get();
    let file_cap = h.file_len.get().wrapping_sub(expected_data);
    if !cap.is_power_of_two()
        || !(MIN_CAPACITY as u64..=MAX_CAPACITY as u64).contains(&cap)
        || h.file_len.get() < expected_data
        || file_cap != cap
    {
        return Err(HeaderError::CapacityMismatch {
            header: cap,
            file: file_cap,
        });
    }
    let max = h.max_message_len.get();
    if pubs > 1 && max > MAX_MULTI_MESSAGE_LEN {
        return Err(HeaderError::Invalid(format!(
            "max message length {max} exceeds {MAX_MULTI_MESSAGE_LEN} with {pubs} publishers"
        )));
    }
    if max > max_message_limit(cap) {
        return Err(HeaderError::Invalid(format!(
            "max message length {max} exceeds {} for capacity {cap}",
            max_message_limit(cap)
        )));
    }
    if file_len < h.file_len.get() {
        return Err(HeaderError::Truncated {
            len: file_len,
            expected: h.file_len.get(),
        });
    }
    check_retention(h, max)?;
    let g = Geometry {
        capacity: cap,
        max_message_len: max,
        max_subscribers: subs,
        max_publishers: pubs,
        data_offset: expected_data,
        file_len: h.file_len.get(),
    };
    Ok((h.clone(), g))
}

/// Most bytes the publisher may write (or zero) ahead of its tail: its
/// zeroing-ahead batch.
pub const ZERO_AHEAD: u64 = 1024;

/// Largest `history` for a ring: the capacity less what the publisher may
/// touch ahead of its tail (a padding record and a largest record plus the
/// next commit word, or a zeroing batch) and less 1/32 of the capacity
/// (the publisher finds record boundaries in that window from marks it
/// takes every `capacity / 64` bytes). 0 when the capacity leaves no room.
pub const fn max_history(capacity: u64, max_message_len: u64) -> u64 {
    let rec = record_len(max_message_len);
    let ahead = if 2 * rec + 8 > ZERO_AHEAD {
        2 * rec + 8
    } else {
        ZERO_AHEAD
    };
    capacity.saturating_sub(ahead + capacity / 32)
}

/// Checks the slow-subscriber and history fields of a header.
fn check_retention(h: &Header, max_message_len: u64) -> Result<(), HeaderError> {
    let evict = h.evict_after_ns.get();
    match h.slow_policy.get() {
        SLOW_BLOCK if evict == 0 => {}
        SLOW_EVICT if (1..=MAX_EVICT_AFTER_NS).contains(&evict) => {}
        p => {
            return Err(HeaderError::Invalid(format!(
                "slow policy {p} with evict_after {evict} ns (policy 0 with 0, or 1 with 1 to {MAX_EVICT_AFTER_NS})"
            )))
        }
    }
    let cap = h.capacity.get();
    let history = h.history.get();
    if history > max_history(cap, max_message_len) {
        return Err(HeaderError::Invalid(format!(
            "history {history} exceeds {} for capacity {cap}",
            max_history(cap, max_message_len)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_errors() {
        let g = Geometry::new(1 << 16, 1 << 13, 8, 1).unwrap();
        assert_eq!(max_message_limit(1 << 16), (1 << 15) - 16);
        let h = g.header(42, 7);
        let bytes = h.as_bytes().to_vec();
        let (h2, g2) = validate(&bytes, g.file_len).unwrap();
        assert_eq!(g2, g);
        assert_eq!(h2.creator_pid.get(), 42);
        assert_eq!(
            validate(&bytes[..10], 10).unwrap_err(),
            HeaderError::Truncated {
                len: 10,
                expected: 128
            }
        );
        assert_eq!(
            validate(&bytes, g.file_len - 1).unwrap_err(),
            HeaderError::Truncated {
                len: g.file_len - 1,
                expected: g.file_len
            }
        );
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(
            validate(&bad, g.file_len).unwrap_err(),
            HeaderError::NotARing
        );
        let mut bad = bytes.clone();
        bad[8] = 9;
        assert_eq!(
            validate(&bad, g.file_len).unwrap_err(),
            HeaderError::Version { found: 9 }
        );
        let mut bad = h.clone();
        bad.capacity = U64::new(1 << 17);
        assert!(matches!(
            validate(bad.as_bytes(), g.file_len).unwrap_err(),
            HeaderError::CapacityMismatch { .. }
        ));
        let mut bad = h.clone();
        bad.max_message_len = U64::new(1 << 16);
        assert!(matches!(
            validate(bad.as_bytes(), g.file_len).unwrap_err(),
            HeaderError::Invalid(_)
        ));
    }

    #[test]
    fn config_limits() {
        assert!(Geometry::new(1000, 10, 1, 1).is_err());
        assert!(Geometry::new(1 << 10, 1 << 9, 1, 1).is_err());
        assert!(Geometry::new(1 << 10, (1 << 9) - 16, 1, 1).is_ok());
        assert!(Geometry::new(1 << 10, 1 << 9, 0, 1).is_err());
        assert!(Geometry::new(1 << 10, 0, 1, 1).is_ok());
        assert_eq!(record_len(0), 32);
        assert_eq!(record_len(16), 32);
        assert_eq!(record_len(17), 64);
    }
}
