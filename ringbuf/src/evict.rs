//! Slow subscribers: `slow=block` (the default) and `slow=evict`.
//!
//! With [`SlowPolicy::Evict`], a subscriber that holds the publisher back
//! for longer than `after` is cut loose, as Aeron's untethered
//! subscriptions are: the publisher's back-pressured offers measure how long
//! its tail has been stuck (from the first back-pressured offer at that
//! tail), and once that reaches `after` every active slot whose position
//! still blocks the record is moved ACTIVE → EVICTED by CAS. An EVICTED slot no longer counts in
//! the publisher's limit (it is still attached: `subscriber_count` counts
//! it), so neither the publisher nor the other subscribers wait longer than
//! `after` (plus one rescan) for it.
//!
//! ## Race-free reading
//!
//! Once evicted, the subscriber's unread records may be overwritten at any
//! moment, also while it reads them. So on an evicting ring a subscriber
//! never hands out ring memory: it copies each payload into its own buffer,
//! then (Acquire fence) re-loads its slot state, and hands the copy to the
//! handler only if the slot is still ACTIVE, seqlock-style. The publisher
//! CASes the state to EVICTED and then runs a Release fence before any
//! later write to the data area. If the reader's copy saw any byte written
//! after that fence, the fence pair makes the EVICTED store visible to the
//! reader's re-load, and the copy is discarded. (The loom model
//! `loom_eviction_never_delivers_overwritten` checks this ordering.)
//!
//! The copy itself races with those writes by design, so it is made of
//! relaxed atomic 8-byte loads (the payload is 16-aligned, and the record's
//! 32-byte granule covers the rounding up), never a plain `memcpy`: the
//! compiler may then neither assume the bytes stable (and re-read or
//! split a load) nor treat the race as undefined, and each word read is
//! some value a writer stored, as in a seqlock reader. The publisher writes
//! with plain stores; it runs in another process, so only the reader's
//! side is code this crate's compiler sees racing.
//!
//! ## Several publishers
//!
//! On a multi-writer ring the publisher that evicts is whichever claimer
//! found the ring held back for `after` (each measures its own wait, from
//! its first back-pressured claim at the shared tail), with the claim lock
//! held. The other publishers write data only after taking that lock
//! (Acquire, after the evicter's Release unlock), and each runs a Release
//! fence right after taking it on an evicting ring, before any data write
//! (zeroing included): so an EVICTED store of any earlier holder happens
//! before every byte any publisher writes later, and the reader's fence
//! pair works as with one publisher. A publisher whose `limit` predates the
//! eviction only holds a lower, safe one. (The loom model
//! `loom_eviction_by_another_publisher` checks this chain.)
//!
//! ## After an eviction
//!
//! The subscriber that finds its slot EVICTED (at its next poll: a commit
//! word that is not its own, a zero word, or the re-check above) rejoins:
//! EVICTED → JOINING and a membership request, as a new subscriber does, so
//! the publisher gives it its current tail at its next offer (or
//! `subscriber_count`, `is_connected`, ...). The poll that sees the
//! activation returns [`PollError::Evicted`] with the bytes it missed (new
//! start − old position, padding included), once; later polls deliver live
//! records. Polls in between return `Ok(0)`.
//!
//! `slow=block` rings keep the zero-copy read path; the policy is a header
//! field, fixed at creation.

use crate::error::PollError;
use crate::layout::{
    self, ATTENTION_MEMBERSHIP, PADDING_LEN, RECORD_HEADER_LEN, SKIP_LEN, SLOT_ACTIVE,
    SLOT_EVICTED, SLOT_JOINING,
};
use crate::mapping::{DataArea, Mapping, Slot};
use crate::subscriber::{skip_len, Conn, RecordInfo};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the publisher does with a subscriber that holds it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowPolicy {
    /// Nothing is overwritten; the slowest subscriber back-pressures the
    /// publisher (the default).
    #[default]
    Block,
    /// A subscriber that has held the publisher back for longer than
    /// `after` is evicted: it gets [`PollError::Evicted`] once and rejoins
    /// at the live position. `after` is 1 ns to one hour.
    Evict {
        /// How long a subscriber may hold the publisher back.
        after: Duration,
    },
}

/// How a created ring treats slow subscribers and late joiners (beyond the
/// sizes in [`crate::RingConfig`]); see [`crate::Publisher::create_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// The slow-subscriber policy.
    pub slow: SlowPolicy,
    /// Bytes of the most recent records kept readable for subscribers that
    /// join with [`crate::Start::History`]: at most
    /// [`layout::max_history`] of the capacity and largest message.
    pub history: u64,
}

impl Retention {
    /// `(slow_policy, evict_after_ns)` header fields; checks the range.
    pub(crate) fn policy_fields(&self) -> Result<(u32, u64), String> {
        match self.slow {
            SlowPolicy::Block => Ok((layout::SLOW_BLOCK, 0)),
            SlowPolicy::Evict { after } => {
                let ns = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
                if !(1..=layout::MAX_EVICT_AFTER_NS).contains(&ns) {
                    return Err(format!(
                        "evict_after {after:?} must be from 1 ns to one hour"
                    ));
                }
                Ok((layout::SLOW_EVICT, ns))
            }
        }
    }
}

/// The publisher's measure of how long it has been held back.
#[derive(Debug)]
pub(crate) struct Evictor {
    after: Duration,
    /// The tail at which the publisher is stuck, and since when.
    stuck: Option<(u64, Instant)>,
    /// Subscribers evicted so far.
    pub(crate) evicted: u64,
}

impl Evictor {
    pub(crate) fn new(after: Duration) -> Evictor {
        Evictor {
            after,
            stuck: None,
            evicted: 0,
        }
    }

    /// A back-pressured offer at `tail` at `now`: true when the tail has
    /// been stuck there for `after`, so the blocking subscribers are to be
    /// evicted.
    pub(crate) fn held_back(&mut self, tail: u64, now: Instant) -> bool {
        match self.stuck {
            Some((t, since)) if t == tail => now.duration_since(since) >= self.after,
            _ => {
                self.stuck = Some((tail, now));
                false
            }
        }
    }

    /// Evicts every ACTIVE slot whose position keeps a record ending at
    /// `needed` from fitting (`position + capacity < needed`); returns how
    /// many. The caller rescans afterwards.
    pub(crate) fn evict(&mut self, map: &Mapping, slots: u32, capacity: u64, needed: u64) -> u32 {
        let mut n = 0;
        for i in 0..slots {
            let slot = map.slot(i);
            if slot.state.load(Ordering::Relaxed) != SLOT_ACTIVE {
                continue;
            }
            // The scan before validated positions; a value changed since
            // only decides whether this slot is evicted.
            let pos = slot.position.load(Ordering::Relaxed);
            if pos.saturating_add(capacity) >= needed {
                continue;
            }
            // Fails harmlessly if the subscriber left meanwhile (FREE).
            if slot
                .state
                .compare_exchange(
                    SLOT_ACTIVE,
                    SLOT_EVICTED,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                n += 1;
            }
        }
        if n > 0 {
            // Release partner: the evicted reader's Acquire fence after its
            // copy (`copy_checked`): every write the publisher makes to the
            // data area from here on comes after the EVICTED stores.
            fence(Ordering::Release);
            self.evicted += u64::from(n);
        }
        n
    }
}

/// Copies the `len`-byte payload of the record at `pos` into `buf` (at
/// least `len` bytes) with relaxed atomic 8-byte loads: a publisher may be
/// overwriting it (see "Race-free reading").
#[inline]
fn copy_racy(d: DataArea, pos: u64, len: usize, buf: &mut [u128]) {
    debug_assert!(buf.len() * 16 >= len);
    let src = d.payload_ptr(pos).cast::<AtomicU64>();
    let dst = buf.as_mut_ptr().cast::<u64>();
    for k in 0..len.div_ceil(8).min(buf.len() * 2) {
        // SAFETY: the payload starts 16-aligned (data area page-aligned,
        // records 32-aligned, header 16 bytes) and the caller checked that
        // `off + 16 + len <= capacity`; rounding `len` up to 8 stays inside
        // the record's 32-byte granule, so every word lies in the live
        // mapping. `dst` has `buf.len() * 2` u64 places (bounded above).
        // AtomicU64 is valid for any bits.
        unsafe { *dst.add(k) = (*src.add(k)).load(Ordering::Relaxed) };
    }
}

/// True if our slot was evicted (read after the Acquire fence of a copy or
/// on an anomaly).
#[inline]
fn is_evicted(slot: &Slot) -> bool {
    slot.state.load(Ordering::Relaxed) == SLOT_EVICTED
}

/// What the copying read loop found.
enum Step {
    /// Stop: no record (yet) at the position.
    Empty,
    /// Our slot was evicted: rejoin.
    Evicted,
}

impl Conn {
    /// The read loop of an evicting ring: like `Subscriber::poll`, but each
    /// payload is copied out and handed over only after the slot is seen
    /// still ACTIVE (see the module docs).
    pub(crate) fn poll_evictable<F: FnMut(RecordInfo<'_>, &[u8])>(
        &mut self,
        handler: &mut F,
        limit: usize,
    ) -> Result<usize, PollError> {
        let d = self.data;
        let cap = self.capacity;
        let me = self.slot_index();
        let start = self.pos;
        let mut pos = start;
        let mut n = 0;
        let step = loop {
            if n >= limit || pos - start >= cap {
                break Step::Empty;
            }
            // SAFETY: `pos` is 32-aligned; the mapping lives as long as `self`.
            let commit = unsafe { d.commit(pos) }.load(Ordering::Acquire);
            // Acquire partner: the publisher's Release store of the commit word.
            if commit != pos + 1 {
                if is_evicted(self.slot()) {
                    break Step::Evicted;
                }
                if commit == 0 {
                    break Step::Empty;
                }
                self.pos = pos;
                return Err(self.bad_commit(commit));
            }
            // SAFETY: as above.
            let (len_w, type_w) = unsafe { d.len_type(pos) };
            let raw = len_w.load(Ordering::Relaxed);
            let len = raw & self.len_mask;
            let type_id = type_w.load(Ordering::Relaxed);
            let off = d.offset(pos);
            if raw == SKIP_LEN && self.pubs > 1 {
                // An aborted claim, or a dead publisher's (multi-writer).
                match skip_len(pos, off, type_id, cap) {
                    Ok(b) => {
                        pos += b;
                        continue;
                    }
                    Err(_) if is_evicted(self.slot()) => break Step::Evicted,
                    Err(e) => {
                        self.pos = pos;
                        return Err(e);
                    }
                }
            }
            let bad = if raw == PADDING_LEN {
                off == 0
            } else {
                u64::from(len) > self.max_len
                    || off + RECORD_HEADER_LEN as u64 + u64::from(len) > cap
            };
            if bad {
                if is_evicted(self.slot()) {
                    break Step::Evicted;
                }
                return Err(PollError::Corrupt(format!(
                    "record at position {pos} has length {len} (maximum {}, {} bytes before the end)",
                    self.max_len,
                    cap - off
                )));
            }
            if raw == PADDING_LEN {
                pos += cap - off;
                continue;
            }
            let len = len as usize;
            if self.copy_buf.len() * 16 < len {
                // Bounded by the ring's maximum message length.
                self.copy_buf.resize(len.div_ceil(16), 0);
            }
            copy_racy(d, pos, len, &mut self.copy_buf);
            // Acquire partner: the publisher's Release fence after its
            // EVICTED CAS (`Evictor::evict`).
            fence(Ordering::Acquire);
            if self.map.slot(me).state.load(Ordering::Relaxed) != SLOT_ACTIVE {
                break Step::Evicted;
            }
            // SAFETY: the buffer holds at least `len` initialised bytes
            // (zeroed when grown, then copied into).
            let copy =
                unsafe { std::slice::from_raw_parts(self.copy_buf.as_ptr().cast::<u8>(), len) };
            handler(RecordInfo::new(type_id, pos, raw, self), copy);
            pos += layout::record_len(len as u64);
            n += 1;
        };
        match step {
            Step::Empty => {
                if pos != start {
                    // Release partner: the publisher's Acquire load of the
                    // position in its scan; the copies above happen before it.
                    self.slot().position.store(pos, Ordering::Release);
                    self.pos = pos;
                }
                Ok(n)
            }
            Step::Evicted => {
                // Records before `pos` were delivered; the rest is missed.
                self.pos = pos;
                self.rejoin()?;
                Ok(n)
            }
        }
    }

    /// Our slot was evicted: EVICTED → JOINING and a membership request; the
    /// next activation reports [`PollError::Evicted`].
    #[cold]
    pub(crate) fn rejoin(&mut self) -> Result<(), PollError> {
        let slot = self.slot();
        // Release partner: the publisher's Acquire load in its scan.
        if slot
            .state
            .compare_exchange(
                SLOT_EVICTED,
                SLOT_JOINING,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return Err(PollError::Corrupt(format!(
                "subscriber slot {} changed state while being evicted",
                self.slot_index()
            )));
        }
        // Release partner: the publisher's Acquire RMW on `attention`.
        self.map
            .signal()
            .attention
            .fetch_add(ATTENTION_MEMBERSHIP, Ordering::Release);
        // Evicted again before the first eviction was reported: the bytes
        // missed count from the first.
        self.evicted_from.get_or_insert(self.pos);
        self.active = false;
        Ok(())
    }
}
