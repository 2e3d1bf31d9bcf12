//! The publisher: creates the ring file and appends records.

use crate::error::{OfferError, RingError};
use crate::evict::{Evictor, Retention, SlowPolicy};
use crate::history::Marks;
use crate::layout::{
    self, Geometry, ATTENTION_MEMBERSHIP, FENCE_MEMBARRIER, FENCE_PUBLISHER, PADDING_LEN,
    RECORD_ALIGN, SLOT_ACTIVE, SLOT_EVICTED, SLOT_FREE, SLOT_JOINING, ZERO_AHEAD,
};
use crate::liveness::{self, PUBLISHER_LOCK, SLOT_LOCK_BASE};
use crate::mapping::{DataArea, Mapping};
use crate::{file, futex, ring_dir, validate_name, RingConfig};
use crate::{BACKPRESSURE_REAP_INTERVAL, REAP_INTERVAL};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{compiler_fence, fence, Ordering};
use std::time::Instant;
use zerocopy::{FromBytes, IntoBytes};

mod multi;
use multi::Multi;

/// Zeroing ahead starts again when fewer bytes than this are zeroed.
const ZERO_LOW_WATER: u64 = 512;

/// How often `is_connected` and friends check subscriber liveness.
const QUERY_REAP_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1);

/// The single writer of a ring.
pub struct Publisher {
    // Field order: `map` must drop before `file` releases the lock (Drop
    // handles the file explicitly anyway).
    map: Mapping,
    /// The lock file; holds our publisher lock.
    lock: File,
    lock_path: PathBuf,
    path: PathBuf,
    dev_ino: (u64, u64),
    data: DataArea,
    geometry: Geometry,
    capacity: u64,
    max_message_len: usize,
    /// Position after the last committed record.
    tail: u64,
    /// `min(active subscriber positions) + capacity` at the last scan.
    limit: u64,
    /// Every byte in `[tail, zeroed)` is known to be zero (zeroed ahead).
    zeroed: u64,
    /// Active subscribers at the last scan.
    active: u32,
    /// The publisher must fence after each commit (no membarrier).
    fence: bool,
    offers: u32,
    last_reap: Instant,
    last_bp_reap: Option<Instant>,
    /// `FUTEX_WAKE` calls made.
    wakes: u64,
    /// `slow=evict`: measures how long subscribers hold us back.
    evictor: Option<Evictor>,
    /// `history`: record-boundary marks for history joiners.
    marks: Option<Marks>,
    /// The multi-writer state; `None` on a single-writer ring.
    multi: Option<Multi>,
}

// SAFETY: all state is owned; the mapping is shared memory accessed through
// atomics, and the raw pointers in `DataArea` point into `map`, which moves
// with the publisher.
unsafe impl Send for Publisher {}

/// A claimed, writable record in ring memory: fill it, then `commit` (dropping aborts).
pub struct Claim<'a> {
    p: &'a mut Publisher,
    /// Position of the padding record to write first, if any.
    pad_at: Option<u64>,
    /// Position of the record.
    start: u64,
    len: usize,
    type_id: u32,
    /// A claim on a multi-writer ring (its commit and abort differ).
    multi: bool,
}

impl Publisher {
    /// Creates the ring file `name` (or replaces a stale one left by a dead publisher).
    ///
    /// Creation takes no lock another user could hold, so it ends after a
    /// bounded number of steps. The new ring and its lock file (see
    /// `liveness`) are built under fresh names with random parts, the lock
    /// file's publisher byte already locked and the memory reserved
    /// (`posix_fallocate`). Then:
    /// * nothing under the name: the ring is renamed into place with
    ///   `RENAME_NOREPLACE` (or `link`), which fails if another creator got
    ///   there first (we then look again);
    /// * a ring whose publisher is dead: we take the write lock on the old
    ///   ring's publisher byte ourselves, check that the name still refers
    ///   to that old file, and rename over it. Two creators replacing the
    ///   same stale ring exclude each other through that lock: the one that
    ///   gets it second finds the name changed and looks again (and then
    ///   finds a live publisher);
    /// * a live publisher: [`RingError::PublisherAlive`].
    ///
    /// A file under the name owned by another uid is never touched:
    /// [`RingError::ForeignOwner`] names its owner. A temporary file
    /// `.{name}.{pid}.{random}.tmp` left by a creator killed before the
    /// rename is removed by the next creation of the same name once its pid
    /// is gone (best effort; files of live processes, of other names and of
    /// any other pattern are left alone).
    ///
    /// # Errors
    /// [`RingError::InvalidName`], [`RingError::InvalidConfig`];
    /// [`RingError::PublisherAlive`] if a live publisher owns the name;
    /// [`RingError::ForeignOwner`] if another uid owns the file under the
    /// name; [`RingError::NotARing`] if the name is taken by something that
    /// is not a ring file (it is left alone); [`RingError::Io`] for system
    /// call failures, with `ENOSPC` when the directory has no room for the
    /// ring.
    pub fn create(name: &str, config: &RingConfig) -> Result<Publisher, RingError> {
        Self::create_with(name, config, &Retention::default())
    }

    /// As [`Publisher::create`], with a slow-subscriber policy and a
    /// history window (see [`Retention`]).
    ///
    /// ```no_run
    /// use conduit_ringbuf::{Publisher, RingConfig, Retention, SlowPolicy};
    /// use std::time::Duration;
    /// let retention = Retention {
    ///     slow: SlowPolicy::Evict { after: Duration::from_millis(50) },
    ///     history: 64 << 10,
    /// };
    /// let p = Publisher::create_with("quotes", &RingConfig::default(), &retention)?;
    /// # Ok::<(), conduit_ringbuf::RingError>(())
    /// ```
    ///
    /// # Errors
    /// As for [`Publisher::create`]; [`RingError::InvalidConfig`] for an
    /// eviction time outside 1 ns to one hour or a history above
    /// [`layout::max_history`].
    pub fn create_with(
        name: &str,
        config: &RingConfig,
        retention: &Retention,
    ) -> Result<Publisher, RingError> {
        validate_name(name)?;
        let geometry = Geometry::new(
            config.capacity,
            config.max_message_len,
            config.max_subscribers,
            config.max_publishers,
        )?;
        if geometry.max_publishers > 1 {
            return multi::create_or_attach(name, config, geometry, retention);
        }
        Self::create_new(name, config, geometry, retention)
    }

    /// Builds a new ring and puts it under `name` (see [`Publisher::create`]).
    fn create_new(
        name: &str,
        config: &RingConfig,
        geometry: Geometry,
        retention: &Retention,
    ) -> Result<Publisher, RingError> {
        let (slow_policy, evict_after_ns) = retention
            .policy_fields()
            .map_err(|reason| RingError::config("evict_after", reason))?;
        let max_history = layout::max_history(geometry.capacity, geometry.max_message_len);
        if retention.history > max_history {
            return Err(RingError::config(
                "history",
                format!(
                    "{} exceeds {max_history} bytes, the most a ring of capacity {} with messages up to {} bytes can keep",
                    retention.history, geometry.capacity, geometry.max_message_len
                ),
            ));
        }
        if config.mode & 0o600 != 0o600 || config.mode > 0o777 {
            return Err(RingError::config(
                "mode",
                format!(
                    "{:o} is not octal file permissions including owner rw (e.g. 600, 660)",
                    config.mode
                ),
            ));
        }
        let dir = ring_dir(config.dir.as_deref());
        let path = dir.join(name);
        sweep_stale_temps(&dir, name);

        let pid = std::process::id();
        let rnd =
            |what: &str| file::random_u64().map_err(|e| RingError::io(format!("random {what}"), e));
        let incarnation = rnd("incarnation")?;
        let lock_path = dir.join(liveness::lock_name(name, incarnation));
        let lock = build_lock(&lock_path, config.mode)?;
        let tmp = dir.join(format!(".{name}.{pid}.{:016x}.tmp", rnd("name")?));
        let mut header = geometry.header(pid, incarnation);
        header.slow_policy = slow_policy.into();
        header.evict_after_ns = evict_after_ns.into();
        header.history = retention.history.into();
        let placed = build(&tmp, &geometry, &header, config.mode)
            .and_then(|(file, map)| place(&dir, name, &tmp).map(|()| (file, map)));
        let (file, map) = match placed {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_file(&lock_path);
                return Err(e);
            }
        };
        let md = file
            .metadata()
            .map_err(|e| RingError::io("stat of the new ring", e))?;
        let data = DataArea::new(&map, &geometry);
        Ok(Publisher {
            fence: map.publisher().fence_mode.load(Ordering::Relaxed) != FENCE_MEMBARRIER,
            map,
            lock,
            lock_path,
            path,
            dev_ino: (md.dev(), md.ino()),
            data,
            capacity: geometry.capacity,
            max_message_len: geometry.max_message_len as usize,
            geometry,
            tail: 0,
            limit: geometry.capacity,
            // The file starts zeroed.
            zeroed: geometry.capacity,
            active: 0,
            offers: 0,
            last_reap: Instant::now(),
            last_bp_reap: None,
            wakes: 0,
            evictor: match retention.slow {
                SlowPolicy::Block => None,
                SlowPolicy::Evict { after } => Some(Evictor::new(after)),
            },
            marks: Marks::new(geometry.capacity, retention.history),
            multi: None,
        })
    }

    /// Subscribers evicted so far (`slow=evict`; 0 otherwise).
    ///
    /// ```no_run
    /// # let p = conduit_ringbuf::Publisher::create("q", &Default::default())?;
    /// assert_eq!(p.evictions(), 0);
    /// # Ok::<(), conduit_ringbuf::RingError>(())
    /// ```
    pub fn evictions(&self) -> u64 {
        self.evictor.as_ref().map_or(0, |e| e.evicted)
    }

    /// Test hook: behaves as if the process died now (its locks are dropped
    /// by closing the lock file; nothing else is cleaned up).
    #[cfg(test)]
    pub(crate) fn die(mut self) {
        let null = File::open("/dev/null").expect("opening /dev/null");
        drop(std::mem::replace(&mut self.lock, null));
        std::mem::forget(self);
    }

    /// `FUTEX_WAKE` calls this publisher has made (diagnostics): it grows
    /// only while some subscriber is asleep in `WaitStrategy::Block`.
    pub fn wake_calls(&self) -> u64 {
        self.wakes
    }

    /// Sleepers counted in the signal block (test builds only).
    #[cfg(test)]
    pub(crate) fn sleepers(&self) -> u32 {
        self.map.signal().attention.load(Ordering::Relaxed) as u32
    }

    /// Copies `data` into a new record with `type_id`; returns the position after it.
    ///
    /// # Errors
    /// [`OfferError::BackPressured`] when the slowest subscriber has not made
    /// room, [`OfferError::NotConnected`] with no subscriber,
    /// [`OfferError::TooLarge`], [`OfferError::Corrupt`] if shared memory
    /// breaks the layout's invariants.
    #[inline(always)]
    pub fn offer(&mut self, type_id: u32, data: &[u8]) -> Result<u64, OfferError> {
        let mut claim = self.try_claim(type_id, data.len())?;
        copy(claim.as_mut_slice(), data);
        Ok(claim.commit())
    }

    /// Reserves a record of `len` bytes, lets `fill` write it in place (in
    /// ring memory) and publishes it: a claim and its commit in one call.
    /// `fill` gets exactly `len` bytes, zeroed or holding an old lap's data.
    ///
    /// # Errors
    /// As for [`Publisher::offer`]; `fill` is not called then.
    #[inline(always)]
    pub fn offer_with<F: FnOnce(&mut [u8])>(
        &mut self,
        type_id: u32,
        len: usize,
        fill: F,
    ) -> Result<u64, OfferError> {
        let mut claim = self.try_claim(type_id, len)?;
        fill(claim.as_mut_slice());
        Ok(claim.commit())
    }

    /// Reserves a record of `len` bytes to be written in place.
    ///
    /// # Errors
    /// As for [`Publisher::offer`].
    #[inline(always)]
    pub fn try_claim(&mut self, type_id: u32, len: usize) -> Result<Claim<'_>, OfferError> {
        if len > self.max_message_len {
            return Err(OfferError::TooLarge {
                len,
                max: self.max_message_len,
            });
        }
        if self.multi.is_some() {
            return self.try_claim_multi(type_id, len);
        }
        let att = self.map.signal().attention.load(Ordering::Relaxed);
        // After the first access to shared memory: if the file was truncated,
        // that access faulted and the SIGBUS handler set the flag. (A record
        // whose data pages alone were cut off is reported by the next offer.)
        if self.map.truncated() {
            return Err(truncated());
        }
        if att >= ATTENTION_MEMBERSHIP {
            self.scan()?;
        }
        if self.active == 0 {
            return Err(OfferError::NotConnected);
        }
        self.offers = self.offers.wrapping_add(1);
        if self.offers % 1024 == 0 && self.last_reap.elapsed() >= REAP_INTERVAL {
            self.reap()?;
            if self.active == 0 {
                return Err(OfferError::NotConnected);
            }
        }
        let rec = layout::record_len(len as u64);
        let off = self.data.offset(self.tail);
        let (pad_at, start) = if off + rec > self.capacity {
            (Some(self.tail), self.tail + (self.capacity - off))
        } else {
            (None, self.tail)
        };
        // The record, plus the commit word after it that is zeroed ahead.
        let needed = start + rec + 8;
        if needed > self.limit && !self.make_room(needed)? {
            return Err(if self.active == 0 {
                OfferError::NotConnected
            } else {
                OfferError::BackPressured
            });
        }
        Ok(Claim {
            p: self,
            pad_at,
            start,
            len,
            type_id,
            multi: false,
        })
    }

    /// Rescans the slots, and reaps dead subscribers (rate-limited) if that is
    /// not enough. True if `needed` fits now.
    #[cold]
    fn make_room(&mut self, needed: u64) -> Result<bool, OfferError> {
        self.scan()?;
        if needed <= self.limit {
            self.last_bp_reap = None;
            return Ok(true);
        }
        let now = Instant::now();
        let evicted = match &mut self.evictor {
            Some(e) => {
                e.held_back(self.tail, now)
                    && e.evict(
                        &self.map,
                        self.geometry.max_subscribers,
                        self.capacity,
                        needed,
                    ) > 0
            }
            None => false,
        };
        if evicted {
            self.scan()?;
            if needed <= self.limit {
                return Ok(true);
            }
        }
        if self
            .last_bp_reap
            .is_none_or(|t| now.duration_since(t) >= BACKPRESSURE_REAP_INTERVAL)
        {
            self.last_bp_reap = Some(now);
            self.reap()?;
        }
        Ok(needed <= self.limit && self.active > 0)
    }

    /// Processes membership requests and recomputes `limit` and `active`.
    fn scan(&mut self) -> Result<(), OfferError> {
        let signal = self.map.signal();
        // Take the pending requests first: a request posted after this RMW
        // stays pending and triggers the next scan. Acquire partner: the
        // subscriber's Release increment after its JOINING/FREE store.
        let att = signal.attention.load(Ordering::Relaxed);
        let requests = att & !(ATTENTION_MEMBERSHIP - 1);
        if requests != 0 {
            signal.attention.fetch_sub(requests, Ordering::Acquire);
        }
        let mut min = self.tail;
        let mut active = 0;
        for i in 0..self.geometry.max_subscribers {
            let slot = self.map.slot(i);
            // Acquire partner: the subscriber's Release stores of JOINING/FREE.
            match slot.state.load(Ordering::Acquire) {
                SLOT_FREE => {}
                SLOT_JOINING => {
                    let start = if self.marks.is_some()
                        && slot.start.load(Ordering::Relaxed) == layout::START_HISTORY
                    {
                        self.history_start()
                    } else {
                        self.tail
                    };
                    let slot = self.map.slot(i);
                    min = min.min(start);
                    slot.position.store(start, Ordering::Relaxed);
                    slot.generation.fetch_add(1, Ordering::Relaxed);
                    // Release partner: the subscriber's Acquire load of ACTIVE,
                    // after which it reads `position`.
                    if slot
                        .state
                        .compare_exchange(
                            SLOT_JOINING,
                            SLOT_ACTIVE,
                            Ordering::Release,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        active += 1;
                    }
                }
                SLOT_ACTIVE => {
                    // Acquire partner: the subscriber's Release store of its
                    // position after its handler read the records before it.
                    let pos = slot.position.load(Ordering::Acquire);
                    if pos > self.tail
                        || self.tail - pos > self.capacity
                        || pos % RECORD_ALIGN as u64 != 0
                    {
                        return Err(OfferError::Corrupt(format!(
                            "subscriber slot {i} holds position {pos}, outside [{}, {}] or misaligned",
                            self.tail.saturating_sub(self.capacity),
                            self.tail
                        )));
                    }
                    min = min.min(pos);
                    active += 1;
                }
                // Attached but cut loose (`slow=evict`): not waited for.
                SLOT_EVICTED if self.evictor.is_some() => active += 1,
                other => {
                    return Err(OfferError::Corrupt(format!(
                        "subscriber slot {i} holds unknown state {other}"
                    )))
                }
            }
        }
        self.limit = min + self.capacity;
        self.active = active;
        Ok(())
    }

    /// Start position of a `from=history` joiner (see `history.rs`).
    #[cold]
    fn history_start(&mut self) -> u64 {
        let g = self.geometry;
        let multi = self.multi.is_some();
        let Some(m) = self.marks.as_mut() else {
            return self.tail;
        };
        if multi {
            m.load_shared(self.map.marks(g.max_subscribers, g.max_publishers));
        }
        let start = m.start(
            self.data,
            self.tail,
            self.zeroed,
            g.capacity,
            g.max_message_len,
            multi,
        );
        if multi && start < self.tail {
            // Under the claim lock, which orders it for the other
            // publishers: they rescan before their next claim.
            self.map
                .publisher()
                .history_joins
                .fetch_add(1, Ordering::Relaxed);
        }
        start
    }

    /// Frees the slots of dead subscribers, then rescans.
    #[cold]
    fn reap(&mut self) -> Result<(), OfferError> {
        self.last_reap = Instant::now();
        for i in 0..self.geometry.max_subscribers {
            let slot = self.map.slot(i);
            let s = slot.state.load(Ordering::Relaxed);
            if s == SLOT_FREE {
                continue;
            }
            match liveness::is_locked(&self.lock, SLOT_LOCK_BASE + i64::from(i)) {
                Ok(true) => {}
                Ok(false) => {
                    reclaim_waiter(&self.map, slot);
                    // Fails harmlessly if a new owner took the slot meanwhile
                    // (it CASes the state to JOINING while holding the lock).
                    let _ = slot.state.compare_exchange(
                        s,
                        SLOT_FREE,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                Err(e) => {
                    return Err(OfferError::Corrupt(format!(
                        "cannot check subscriber slot {i}'s lock: {e}"
                    )))
                }
            }
        }
        self.scan()
    }

    /// Processes requests, and reaps at most every millisecond.
    fn refresh(&mut self) {
        if self.multi.is_some() {
            return self.refresh_multi();
        }
        let r = if self.last_reap.elapsed() >= QUERY_REAP_INTERVAL {
            self.reap()
        } else {
            self.scan()
        };
        if r.is_err() {
            // A corrupt slot: report no connection rather than guess.
            self.active = 0;
        }
    }

    /// True while at least one live subscriber is attached (reaps dead ones).
    pub fn is_connected(&mut self) -> bool {
        self.refresh();
        self.active > 0
    }

    /// Live subscribers attached (reaps dead ones; an evicted subscriber
    /// counts until it leaves: it rejoins at its next poll).
    ///
    /// ```no_run
    /// # let mut p = conduit_ringbuf::Publisher::create("q", &Default::default())?;
    /// println!("{} subscribers", p.subscriber_count());
    /// # Ok::<(), conduit_ringbuf::RingError>(())
    /// ```
    pub fn subscriber_count(&mut self) -> usize {
        self.refresh();
        self.active as usize
    }

    /// True when every attached subscriber has consumed everything committed.
    pub fn all_consumed(&mut self) -> bool {
        self.refresh();
        self.limit == self.tail + self.capacity
    }

    /// Position (bytes) after the last committed record.
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// Largest payload this ring accepts.
    pub fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// Path of the ring file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Zeroes the data ahead of the tail, up to [`ZERO_AHEAD`] bytes but never
    /// past `limit` (data a subscriber may still read). Runs after a commit,
    /// so these stores never delay the visibility of a record.
    /// `record` is the start of the record just committed: a history mark.
    #[cold]
    #[inline(never)]
    fn zero_ahead(&mut self, record: u64) {
        if let Some(m) = &mut self.marks {
            m.mark(record);
        }
        self.zero_range((self.tail + ZERO_AHEAD).min(self.limit));
    }

    /// Zeroes `[max(zeroed, tail), target)` and moves `zeroed` to `target`.
    /// The caller makes sure that `target <= limit` and that nobody else
    /// writes there: the single writer, or the claim-lock holder (positions
    /// past the shared tail are nobody's claim yet).
    fn zero_range(&mut self, target: u64) {
        let mut from = self.zeroed.max(self.tail);
        while from < target {
            let off = self.data.offset(from);
            let n = (target - from).min(self.capacity - off);
            // SAFETY: [off, off + n) lies inside the data area (n ≤ capacity -
            // off); positions [from, target) are past the tail (uncommitted, no
            // reader looks at them, no other writer claimed them: see above)
            // and below `limit`, so no subscriber still needs the bytes there;
            // the mapping lives as long as `self`.
            unsafe { std::ptr::write_bytes(self.data.at(from), 0, n as usize) };
            from += n;
        }
        self.zeroed = self.zeroed.max(target);
    }

    /// Wake-up step (c) with a sleeper counted: bumps the futex word and
    /// wakes ONE sleeper, whatever their number; the woken sleeper passes
    /// the wake-up on (the cascade, see the crate docs and `wait.rs`).
    #[cold]
    fn wake(&mut self) {
        self.wakes += 1;
        let signal = self.map.signal();
        // Release partner: the sleeper's Acquire load of the futex word.
        signal.futex.fetch_add(1, Ordering::Release);
        futex::wake_one(&signal.futex);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.multi.is_some() && !self.leave_multi() {
            // Other publishers remain: the ring stays open.
            return;
        }
        self.map
            .publisher()
            .tail
            .store(self.tail, Ordering::Relaxed);
        // Release partner: the subscriber's Acquire load of `closed`, after
        // which it re-checks for records (all committed before this store).
        self.map.publisher().closed.store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.map.signal().attention.load(Ordering::Relaxed) as u32 != 0 {
            self.wakes += 1;
            let signal = self.map.signal();
            // Release partner: the sleeper's Acquire load of the futex word.
            signal.futex.fetch_add(1, Ordering::Release);
            // Closing is rare: every sleeper at once, no cascade needed.
            futex::wake_all(&signal.futex);
        }
        // Nobody can put another file under the name meanwhile: replacing
        // this ring needs our publisher lock, released only below.
        if let Ok(md) = std::fs::symlink_metadata(&self.path) {
            if (md.dev(), md.ino()) == self.dev_ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
        let _ = std::fs::remove_file(&self.lock_path);
        liveness::unlock(&self.lock, PUBLISHER_LOCK);
    }
}

impl Claim<'_> {
    /// The writable payload, `len` bytes, 16-byte aligned.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let p = self.p.data.payload_ptr(self.start);
        // SAFETY: `start` is 32-aligned and the record fits before the end of
        // the data area (try_claim), so [p, p + len) lies in the mapping, which
        // the publisher (borrowed mutably by this claim) keeps alive; the range
        // is beyond every subscriber's unread data (checked against `limit`) and
        // not yet committed, so no reader looks at it; the claim borrows the
        // publisher mutably, so this is the only slice.
        unsafe { std::slice::from_raw_parts_mut(p, self.len) }
    }

    /// The payload as written so far, `len` bytes, 16-byte aligned.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        let p = self.p.data.payload_ptr(self.start);
        // SAFETY: as in `as_mut_slice`: [p, p + len) lies in the live mapping,
        // beyond every subscriber's unread data and not yet committed; the
        // claim borrows the publisher mutably and `&self` excludes a
        // concurrent `&mut` slice from this claim.
        unsafe { std::slice::from_raw_parts(p, self.len) }
    }

    /// The record's type id.
    pub fn type_id(&self) -> u32 {
        self.type_id
    }

    /// Publishes the record; returns the position after it.
    #[inline(always)]
    pub fn commit(self) -> u64 {
        let mut this = std::mem::ManuallyDrop::new(self);
        if this.multi {
            return this.commit_multi();
        }
        let this = &mut *this;
        let p = &mut *this.p;
        let d = p.data;
        let end = this.start + layout::record_len(this.len as u64);
        // SAFETY: every view below is at a 32-aligned position (start, end, the
        // padding position) and the mapping is alive while `p` is borrowed.
        unsafe {
            let (len_w, type_w) = d.len_type(this.start);
            len_w.store(this.len as u32, Ordering::Relaxed);
            type_w.store(this.type_id, Ordering::Relaxed);
            // The next record's commit word must not show an old lap's bytes
            // to a reader that follows this record: it is zeroed before this
            // commit, normally by an earlier `zero_ahead`.
            if p.zeroed < end + 8 {
                d.commit(end).store(0, Ordering::Relaxed);
                p.zeroed = end + 8;
            }
            // Release partner: the subscriber's Acquire load of the commit word.
            d.commit(this.start)
                .store(this.start + 1, Ordering::Release);
            if let Some(pad) = this.pad_at {
                let (len_w, type_w) = d.len_type(pad);
                len_w.store(PADDING_LEN, Ordering::Relaxed);
                type_w.store(0, Ordering::Relaxed);
                // Release partner: the subscriber's Acquire load; the record at
                // the start of the lap, committed above, is visible with it.
                d.commit(pad).store(pad + 1, Ordering::Release);
            }
        }
        p.tail = end;
        if p.zeroed - end < ZERO_LOW_WATER {
            p.zero_ahead(this.start);
        }
        // Wake-up protocol step (b): a full barrier between the commit store
        // and the load of `attention` (see the crate docs). With membarrier,
        // the sleeper's system call provides it; the compiler must still not
        // hoist the load above the store.
        compiler_fence(Ordering::SeqCst);
        if p.fence {
            fence(Ordering::SeqCst);
        }
        if p.map.signal().attention.load(Ordering::Relaxed) as u32 != 0 {
            p.wake();
        }
        end
    }

    /// Releases the claim without publishing anything. On a multi-writer
    /// ring the claimed space becomes a skip record that subscribers pass
    /// (later claims may already be committed after it). Dropping a claim
    /// aborts it.
    pub fn abort(self) {}
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.multi {
            self.abort_multi();
        }
    }
}

/// Copies `src` into `dst` (same length); small payloads are copied with
/// inline 8-byte moves instead of a call to `memcpy`.
#[inline(always)]
fn copy(dst: &mut [u8], src: &[u8]) {
    if src.len() <= 64 {
        let mut d = dst.chunks_exact_mut(8);
        let mut s = src.chunks_exact(8);
        for (d, s) in (&mut d).zip(&mut s) {
            d.copy_from_slice(s);
        }
        d.into_remainder().copy_from_slice(s.remainder());
    } else {
        dst.copy_from_slice(src);
    }
}

/// Attempts at putting a new ring under its name before giving up (each
/// failed attempt means another creator changed the name meanwhile).
const PLACE_ATTEMPTS: u32 = 16;

/// Publisher lock byte of layout version 1, in the ring file itself.
const LEGACY_PUBLISHER_LOCK: i64 = 1 << 40;

/// Puts the finished ring `tmp` under `name` in `dir` (see
/// [`Publisher::create`]).
fn place(dir: &Path, name: &str, tmp: &Path) -> Result<(), RingError> {
    let path = dir.join(name);
    let me = file::euid();
    for _ in 0..PLACE_ATTEMPTS {
        let (old, md) = match file::open_existing(&path) {
            Ok(Some(v)) => v,
            Ok(None) => match rename_noreplace(tmp, &path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(RingError::io(
                        format!("renaming ring into {}", path.display()),
                        e,
                    ))
                }
            },
            Err(e) => {
                // Not a regular file: name its owner if it is someone else.
                if let Ok(md) = std::fs::symlink_metadata(&path) {
                    file::check_owner(&path, &md, &[me])?;
                }
                return Err(e);
            }
        };
        file::check_owner(&path, &md, &[me])?;
        let mut head = [0u8; layout::HEADER_LEN];
        let n = read_prefix(&old, &mut head)
            .map_err(|e| RingError::io(format!("reading {}", path.display()), e))?;
        let Ok((h, _)) = layout::Header::ref_from_prefix(&head[..n]) else {
            return Err(RingError::NotARing { path });
        };
        if h.magic != layout::MAGIC {
            return Err(RingError::NotARing { path });
        }
        let pid = h.creator_pid.get();
        // Layout version 1 kept its publisher lock on byte 2^40 of the ring
        // file itself: never replace a live ring of an older library.
        if h.layout_version.get() == 1
            && liveness::is_locked(&old, LEGACY_PUBLISHER_LOCK).map_err(|e| {
                RingError::io(format!("checking the publisher of {}", path.display()), e)
            })?
        {
            return Err(RingError::PublisherAlive { path, pid });
        }
        let old_lock_path = dir.join(liveness::lock_name(name, h.incarnation.get()));
        let old_lock = match file::create_new(&old_lock_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match file::open_existing(&old_lock_path)? {
                    Some((f, lmd)) => {
                        file::check_owner(&old_lock_path, &lmd, &[me])?;
                        f
                    }
                    None => continue,
                }
            }
            Err(e) => {
                return Err(RingError::io(
                    format!("opening {}", old_lock_path.display()),
                    e,
                ))
            }
        };
        let got = liveness::try_lock(&old_lock, PUBLISHER_LOCK)
            .map_err(|e| RingError::io(format!("locking {}", old_lock_path.display()), e))?;
        if !got {
            return Err(RingError::PublisherAlive { path, pid });
        }
        // We hold the old ring's publisher lock: nobody else can replace it
        // now. Is it still the file under the name?
        match std::fs::symlink_metadata(&path) {
            Ok(now) if (now.dev(), now.ino()) == (md.dev(), md.ino()) => {}
            _ => continue,
        }
        std::fs::rename(tmp, &path)
            .map_err(|e| RingError::io(format!("renaming ring into {}", path.display()), e))?;
        let _ = std::fs::remove_file(&old_lock_path);
        return Ok(());
    }
    Err(RingError::Io(io::Error::other(format!(
        "{}: the name kept changing while the ring was being put in place",
        path.display()
    ))))
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists` then).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths, relative to the cwd.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
        return Err(e);
    }
    // The file system cannot do RENAME_NOREPLACE: link fails if `to` exists.
    std::fs::hard_link(from, to)?;
    let _ = std::fs::remove_file(from);
    Ok(())
}

/// Creates the lock file of a new ring, holding the publisher lock, with
/// the mode [`liveness::lock_mode`] gives for the ring's `mode`.
fn build_lock(path: &Path, mode: u32) -> Result<File, RingError> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let lock = file::create_new(path).map_err(|e| RingError::io(ctx("creating"), e))?;
    let locked = liveness::try_lock(&lock, PUBLISHER_LOCK);
    let done = match locked {
        Ok(true) => lock
            .set_permissions(std::fs::Permissions::from_mode(liveness::lock_mode(mode)))
            .map_err(|e| RingError::io(ctx("chmod of"), e)),
        Ok(false) => Err(RingError::Io(io::Error::other(ctx("cannot lock fresh")))),
        Err(e) => Err(RingError::io(ctx("locking"), e)),
    };
    if let Err(e) = done {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(lock)
}

/// The error of every offer once the mapping was replaced after a truncation.
#[cold]
fn truncated() -> OfferError {
    OfferError::Corrupt("the ring file was truncated by another process".into())
}

/// Takes a dead (or departed) owner's sleeper count away from `attention`
/// (or the caller's own, on waking). Returns how many sleepers are still
/// counted after that (the low half of `attention`; a hint, which a corrupt
/// peer can only make wrong, costing a needless or a missing cascade hop).
pub(crate) fn reclaim_waiter(map: &Mapping, slot: &crate::mapping::Slot) -> u32 {
    let attention = &map.signal().attention;
    // Acquire partner: the sleeper's SeqCst store of `waiting` after its count
    // (wait.rs); taking the flag with a swap makes the count come
    // off exactly once, by whichever reclaimer or sleeper gets it.
    if slot.waiting.swap(0, Ordering::AcqRel) == 1 {
        let before = attention.fetch_sub(layout::ATTENTION_WAITER, Ordering::Relaxed);
        (before as u32).wrapping_sub(1)
    } else {
        attention.load(Ordering::Relaxed) as u32
    }
}

/// Reads up to `buf.len()` bytes from offset 0.
pub(crate) fn read_prefix(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Removes the temporary files of ring `name` in `dir` left by creators that
/// died before renaming them (see [`Publisher::create`]); best effort. A
/// live creator's file is never removed: its pid exists.
fn sweep_stale_temps(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|f| temp_file_pid(f, name)) else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_file()) || !process_is_gone(pid) {
            continue;
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

/// The pid in `file` if it is exactly a temporary file name of ring `name`:
/// `.{name}.{pid}.{r}.tmp` with `pid` in decimal as `create` writes it (no
/// sign, no leading zeros), a positive `pid_t`, and `r` 16 lowercase hex
/// digits.
fn temp_file_pid(file: &str, name: &str) -> Option<i32> {
    let rest = file
        .strip_prefix('.')?
        .strip_prefix(name)?
        .strip_prefix('.')?
        .strip_suffix(".tmp")?;
    let (pid, n) = rest.split_once('.')?;
    let decimal = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
    };
    let hex = n.len() == 16 && n.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !decimal(pid) || !hex {
        return None;
    }
    let pid = pid.parse::<i32>().ok()?;
    (pid > 0).then_some(pid)
}

/// True only if no process `pid` exists (`kill(pid, 0)` fails with `ESRCH`).
fn process_is_gone(pid: i32) -> bool {
    debug_assert!(pid > 0);
    // SAFETY: signal 0 sends nothing, it only checks that the process exists;
    // `pid` is positive, so it names one process, never a group or all.
    let r = unsafe { libc::kill(pid, 0) };
    r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Creates and initialises the ring in the temporary file `tmp`, its
/// memory reserved.
fn build(
    tmp: &Path,
    g: &Geometry,
    header: &layout::Header,
    mode: u32,
) -> Result<(File, Mapping), RingError> {
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let file = file::create_new(tmp).map_err(|e| RingError::io(ctx("creating"), e))?;
    file.set_len(g.file_len)
        .map_err(|e| RingError::io(ctx("sizing"), e))?;
    let len = libc::off_t::try_from(g.file_len).map_err(|_| {
        RingError::config(
            "capacity",
            format!("{} makes the file too large", g.capacity),
        )
    })?;
    // Reserve the memory now: on a full tmpfs this fails here with ENOSPC
    // instead of a SIGBUS at the first touch of a page.
    // SAFETY: a valid fd and a range inside the file.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if r != 0 {
        return Err(RingError::io(
            ctx("reserving memory for"),
            io::Error::from_raw_os_error(r),
        ));
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| RingError::io(ctx("chmod of"), e))?;
    let map = Mapping::map(&file, g.file_len).map_err(|e| RingError::io(ctx("mapping"), e))?;
    let mut bytes = [0u8; layout::HEADER_LEN];
    bytes.copy_from_slice(header.as_bytes());
    map.write_header(&bytes);
    let mode = if futex::register_global_expedited() {
        FENCE_MEMBARRIER
    } else {
        FENCE_PUBLISHER
    };
    map.publisher().fence_mode.store(mode, Ordering::Relaxed);
    Ok((file, map))
}
