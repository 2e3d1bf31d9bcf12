//! Late-join history: `history=BYTES` on the ring, [`Start::History`] on a
//! subscriber.
//!
//! The publisher never overwrites data without being asked to: with no
//! subscriber holding it back, it writes (and zeroes) at most
//! `max(2 × record_len(max_message_len) + 8, ZERO_AHEAD)` bytes ahead of its
//! tail, so the last `capacity` less that many bytes behind the tail stay
//! intact. [`layout::max_history`] bounds `history` by that (and a margin
//! for the marks below), so the most recent `history` bytes are always
//! readable.
//!
//! A joiner must start on a record boundary. The publisher picks every
//! joiner's start position itself (see "Joining" in the crate docs), at a
//! moment when it is not writing; for a slot whose `start` word says
//! [`layout::START_HISTORY`] it picks the first record that starts at or
//! after `tail - history`, instead of `tail`. To find it the publisher keeps,
//! in its own memory, a mark per `capacity / 64` bytes of stream: the start
//! of a record it committed there (taken on the zeroing-ahead path, about
//! every kilobyte, so the hot path does no extra work). From the last mark at
//! or before `tail - history` it walks the records forward, validating each
//! commit word and length as a subscriber would; anything odd, or no usable
//! mark, falls back to a later mark or to the tail. The joiner is activated
//! with that position in the same scan, so from then on it holds the
//! publisher back like any subscriber: it reads whole records only, and
//! nothing it has yet to read is overwritten.
//!
//! ## Several publishers
//!
//! On a multi-writer ring the marks live in shared memory (the mark block
//! after the publisher slots, see [`layout`]), since any publisher may be
//! the one that activates a joiner: the claim-lock holder marks the shared
//! tail (the start of its claim, always a record boundary) whenever it
//! zeroes ahead, and joiners are activated by the lock holder, so the lock
//! orders both. The marks are untrusted: a mark must be 32-aligned and lie
//! between the oldest intact byte and the tail, and the walk checks every
//! record (Acquire on its commit word, since another process wrote it;
//! the writer's tag masked off `len`; skip records passed). A record in the
//! walk that is still claimed but not committed (a slow or dead writer)
//! ends the walk, and the joiner starts at the oldest mark inside the
//! window instead: still a record boundary, where it waits for that record
//! (or skips a dead publisher's claim) as any subscriber does, so it never
//! sees a torn message.
//!
//! A joiner started behind the tail must also hold back the publishers that
//! did not activate it: each caches a `limit` from its last scan, which may
//! lie up to a lap past the joiner's start. So the activating publisher
//! bumps `history_joins` in the publisher block, and every publisher that
//! sees that word change (under the claim lock, before it claims) rescans.

use crate::layout::{self, LEN_MASK, PADDING_LEN, RECORD_ALIGN, SKIP_LEN};
use crate::mapping::{DataArea, MarkBlock};
use std::sync::atomic::Ordering;

/// Where a subscriber starts when it joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// At the publisher's tail: records committed after the join (the default).
    #[default]
    Live,
    /// At the oldest whole record within the ring's history window (the
    /// publication's `history`; with none, as [`Start::Live`]).
    History,
}

impl Start {
    /// The slot's `start` word.
    pub(crate) fn word(self) -> u32 {
        match self {
            Start::Live => layout::START_LIVE,
            Start::History => layout::START_HISTORY,
        }
    }
}

/// Marks taken per lap.
pub(crate) const MARKS: usize = 64;

/// The publisher's record-boundary marks.
#[derive(Debug)]
pub(crate) struct Marks {
    /// Bytes kept readable.
    history: u64,
    /// log2 of the bytes per mark.
    shift: u32,
    /// `position + 1` of the last record start marked in each chunk, 0 if none.
    marks: [u64; MARKS],
}

impl Marks {
    /// Marks for a ring of `capacity` keeping `history` bytes (`None` for 0).
    pub(crate) fn new(capacity: u64, history: u64) -> Option<Marks> {
        if history == 0 {
            return None;
        }
        let mut marks = [0; MARKS];
        // Position 0 starts the first record.
        marks[0] = 1;
        Some(Marks {
            history,
            shift: (capacity / MARKS as u64).trailing_zeros(),
            marks,
        })
    }

    /// `pos` starts a committed record.
    #[inline]
    pub(crate) fn mark(&mut self, pos: u64) {
        self.marks[(pos >> self.shift) as usize % MARKS] = pos + 1;
    }

    /// Multi-writer rings: `pos` starts a record (a claim); with the claim
    /// lock held.
    #[inline]
    pub(crate) fn mark_shared(&self, shared: &MarkBlock, pos: u64) {
        // Ordered by the claim lock (the reader is a later holder).
        shared.marks[(pos >> self.shift) as usize % MARKS].store(pos + 1, Ordering::Relaxed);
    }

    /// Multi-writer rings: the marks in shared memory, loaded (with the
    /// claim lock held) into our copy for [`Marks::start`].
    pub(crate) fn load_shared(&mut self, shared: &MarkBlock) {
        for (m, s) in self.marks.iter_mut().zip(shared.marks.iter()) {
            *m = s.load(Ordering::Relaxed);
        }
    }

    /// Multi-writer rings: the first mark of a new ring (position 0).
    pub(crate) fn init_shared(shared: &MarkBlock) {
        shared.marks[0].store(1, Ordering::Relaxed);
    }

    /// Start position of a history joiner: the first record starting at or
    /// after `tail - history`. The publisher has touched nothing at or past
    /// `zeroed`, nor past `tail + 2 × record_len(max_len) + 8` (an aborted
    /// claim after padding), so data from the larger of those less
    /// `capacity` on is intact.
    /// `multi`: a multi-writer ring (marks from shared memory, tagged
    /// lengths, skip records).
    pub(crate) fn start(
        &self,
        data: DataArea,
        tail: u64,
        zeroed: u64,
        capacity: u64,
        max_len: u64,
        multi: bool,
    ) -> u64 {
        let target = layout::align_up(tail.saturating_sub(self.history), RECORD_ALIGN as u64);
        let touched = zeroed.max(tail + 2 * layout::record_len(max_len) + 8);
        let intact = touched.saturating_sub(capacity);
        let marks = || {
            self.marks
                .iter()
                .filter(|m| **m != 0 && (**m - 1) % RECORD_ALIGN as u64 == 0)
                .map(|m| *m - 1)
        };
        let before = marks().filter(|m| (intact..=target).contains(m)).max();
        if let Some(from) = before {
            if let Some(pos) = walk(data, from, target, tail, capacity, max_len, multi) {
                return pos;
            }
        }
        // No usable mark before the window: the oldest marked record inside it.
        marks()
            .filter(|m| (target..=tail).contains(m))
            .min()
            .unwrap_or(tail)
    }
}

/// Walks records from `from` (a record start) to the first one starting at
/// or after `target`; `None` if a record is not committed (yet), breaks the
/// layout (a hostile writer) or the walk passes `tail`.
fn walk(
    data: DataArea,
    from: u64,
    target: u64,
    tail: u64,
    cap: u64,
    max_len: u64,
    multi: bool,
) -> Option<u64> {
    let mut pos = from;
    // Every record is at least RECORD_ALIGN bytes, so this bounds the walk.
    let steps = (target - from) / RECORD_ALIGN as u64 + 2;
    for _ in 0..steps {
        if pos >= target {
            return (pos <= tail).then_some(pos);
        }
        // Acquire partner: the writer's Release store of the commit word
        // (another process's, on a multi-writer ring).
        // SAFETY: `pos` is 32-aligned (marks and record lengths are); the
        // mapping outlives the publisher's call.
        let commit = unsafe { data.commit(pos) }.load(Ordering::Acquire);
        if commit != pos + 1 {
            return None;
        }
        // SAFETY: as above.
        let (len_w, type_w) = unsafe { data.len_type(pos) };
        let raw = len_w.load(Ordering::Relaxed);
        let len = if multi { raw & LEN_MASK } else { raw };
        let off = data.offset(pos);
        if raw == PADDING_LEN {
            if off == 0 {
                return None;
            }
            pos += cap - off;
        } else if multi && raw == SKIP_LEN {
            let bytes = u64::from(type_w.load(Ordering::Relaxed));
            if bytes == 0 || bytes % RECORD_ALIGN as u64 != 0 || off + bytes > cap {
                return None;
            }
            pos += bytes;
        } else if u64::from(len) > max_len || off + layout::record_len(u64::from(len)) > cap {
            return None;
        } else {
            pos += layout::record_len(u64::from(len));
        }
    }
    None
}
