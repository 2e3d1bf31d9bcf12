//! The subscriber: attaches to a ring (now or when it appears) and reads records.

use crate::error::{PollError, RingError};
use crate::history::Start;
use crate::layout::{
    self, ATTENTION_MEMBERSHIP, PADDING_LEN, RECORD_ALIGN, RECORD_HEADER_LEN, SLOT_ACTIVE,
    SLOT_EVICTED, SLOT_FREE, SLOT_JOINING, SLOW_EVICT,
};
use crate::liveness::{self, PUBLISHER_LOCK, SLOT_LOCK_BASE};
use crate::mapping::{DataArea, Mapping, Slot};
use crate::publisher::{read_prefix, reclaim_waiter};
use crate::{file, ring_dir, validate_name, PUBLISHER_CHECK_INTERVAL};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Empty polls between checks for a close, a dead publisher or corruption.
const IDLE_CHECK_EVERY: u32 = 32;

/// How often a detached subscriber looks for a (new) ring file.
pub(crate) const ATTACH_INTERVAL: Duration = Duration::from_millis(1);

/// One reader of a ring.
pub struct Subscriber {
    path: PathBuf,
    dir: PathBuf,
    name: String,
    /// Uids whose rings this subscriber attaches to (its own first).
    owners: Vec<u32>,
    pub(crate) conn: Option<Conn>,
    /// (dev, ino, incarnation) of a file whose publisher is gone or closed:
    /// not attached again.
    stale: Option<FileId>,
    last_attach: Option<Instant>,
    /// Where this subscriber starts in each ring it joins.
    start: Start,
}

/// Identity of a ring file: device, inode and the header's incarnation.
type FileId = (u64, u64, u64);

/// An attachment to one ring file.
pub(crate) struct Conn {
    pub(crate) map: Mapping,
    /// The ring's lock file; holds our slot lock.
    lock: File,
    id: FileId,
    header: [u8; layout::HEADER_LEN],
    pub(crate) data: DataArea,
    slot: u32,
    pub(crate) capacity: u64,
    pub(crate) max_len: u64,
    /// The ring evicts slow subscribers: read through `copy_buf`.
    pub(crate) evict: bool,
    /// Payload copies of an evicting ring (16-byte aligned, grown on demand
    /// up to the maximum message length).
    pub(crate) copy_buf: Vec<u128>,
    /// Our position when we were evicted, until the rejoin is reported.
    pub(crate) evicted_from: Option<u64>,
    /// Next position to read.
    pub(crate) pos: u64,
    /// The publisher has assigned our start position.
    pub(crate) active: bool,
    empty: u32,
    last_check: Instant,
    /// Found by a health check, reported once the ring is drained.
    pub(crate) pending: Option<PollError>,
}

// SAFETY: the raw pointers in `DataArea` point into `map`, which the Conn owns
// and moves with it; all shared accesses are atomics.
unsafe impl Send for Conn {}

enum Attach {
    /// No usable ring under the name (yet).
    Absent,
    Failed(RingError),
}

impl From<RingError> for Attach {
    fn from(e: RingError) -> Self {
        Attach::Failed(e)
    }
}

impl Conn {
    #[inline]
    pub(crate) fn slot(&self) -> &Slot {
        self.map.slot(self.slot)
    }

    /// Index of our slot.
    pub(crate) fn slot_index(&self) -> u32 {
        self.slot
    }

    /// Corruption at the current position, given the commit word seen.
    #[cold]
    pub(crate) fn bad_commit(&self, commit: u64) -> PollError {
        let pos = self.pos;
        if commit > pos + 1 && (commit - 1) % self.capacity == pos % self.capacity {
            PollError::Corrupt(format!(
                "record at position {pos} was overwritten by position {} (subscriber lapped)",
                commit - 1
            ))
        } else {
            PollError::Corrupt(format!(
                "commit word {commit:#x} at position {pos} where {} or 0 was expected",
                pos + 1
            ))
        }
    }

    /// Checks the header, our slot and the publisher's lock; records any
    /// problem in `pending`.
    #[cold]
    pub(crate) fn health_check(&mut self) {
        self.last_check = Instant::now();
        if self.pending.is_some() {
            return;
        }
        if self.map.truncated() {
            self.pending = Some(truncated());
            return;
        }
        if self.map.header_bytes() != self.header {
            self.pending = Some(PollError::Corrupt(
                "the ring header changed after it was opened".into(),
            ));
            return;
        }
        let state = self.slot().state.load(Ordering::Acquire);
        let expected = if self.active {
            SLOT_ACTIVE
        } else {
            SLOT_JOINING
        };
        // A joiner may already have been activated; an evicting ring's
        // subscriber may have been evicted (its next poll rejoins).
        if state != expected
            && (self.active || state != SLOT_ACTIVE)
            && !(self.evict && state == SLOT_EVICTED)
        {
            self.pending = Some(PollError::Corrupt(format!(
                "subscriber slot {} holds state {state} where {expected} was expected",
                self.slot
            )));
            return;
        }
        if self.map.publisher().closed.load(Ordering::Acquire) != 0 {
            self.pending = Some(PollError::PublisherClosed);
            return;
        }
        match liveness::is_locked(&self.lock, PUBLISHER_LOCK) {
            Ok(true) => {}
            Ok(false) => self.pending = Some(PollError::PublisherGone),
            Err(e) => {
                self.pending = Some(PollError::Corrupt(format!(
                    "cannot check the publisher's lock: {e}"
                )))
            }
        }
    }

    /// Rate-limited [`Conn::health_check`].
    #[inline]
    pub(crate) fn maybe_health_check(&mut self, now: Instant) {
        if now.duration_since(self.last_check) >= PUBLISHER_CHECK_INTERVAL {
            self.health_check();
        }
    }

    /// True if a record (or a bad word) waits at the current position.
    #[inline]
    pub(crate) fn has_data(&self) -> bool {
        // SAFETY: `pos` is 32-aligned (validated at activation, advanced by
        // record lengths); the mapping lives as long as `self`.
        unsafe { self.data.commit(self.pos) }.load(Ordering::Acquire) != 0
    }

    /// JOINING -> ACTIVE once the publisher has assigned our position.
    fn try_activate(&mut self) -> Result<bool, PollError> {
        let slot = self.slot();
        // Acquire partner: the publisher's Release CAS to ACTIVE after it
        // wrote `position`.
        match slot.state.load(Ordering::Acquire) {
            SLOT_JOINING => Ok(false),
            SLOT_ACTIVE => {
                let pos = slot.position.load(Ordering::Relaxed);
                if pos % RECORD_ALIGN as u64 != 0 || pos > layout::MAX_POSITION {
                    return Err(PollError::Corrupt(format!(
                        "start position {pos} assigned to slot {} is misaligned or beyond 2^62",
                        self.slot
                    )));
                }
                self.pos = pos;
                self.active = true;
                Ok(true)
            }
            // Activated, then evicted before we ever polled: rejoin.
            SLOT_EVICTED if self.evict => {
                let pos = slot.position.load(Ordering::Relaxed);
                if pos % RECORD_ALIGN as u64 == 0 && pos <= layout::MAX_POSITION {
                    self.pos = pos;
                }
                self.rejoin()?;
                Ok(false)
            }
            other => Err(PollError::Corrupt(format!(
                "subscriber slot {} holds state {other} while joining",
                self.slot
            ))),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let slot = self.slot();
        // Release partner: the publisher's Acquire load of the state in its
        // scan; our reads of records happen before it may overwrite them.
        slot.state.store(SLOT_FREE, Ordering::Release);
        // Release partner: the publisher's Acquire RMW on `attention`.
        self.map
            .signal()
            .attention
            .fetch_add(ATTENTION_MEMBERSHIP, Ordering::Release);
        liveness::unlock(&self.lock, SLOT_LOCK_BASE + i64::from(self.slot));
    }
}

/// What a handle reports once its mapping was replaced after a truncation.
#[cold]
fn truncated() -> PollError {
    PollError::Corrupt("the ring file was truncated by another process".into())
}

impl Subscriber {
    /// Opens a subscriber to ring `name`; if no publisher exists yet it
    /// attaches when one appears (polls return 0 until then). Only rings
    /// owned by this process's effective uid are attached to (see
    /// [`Subscriber::open_with_owners`]).
    ///
    /// # Errors
    /// [`RingError::InvalidName`]; for an existing file with a live publisher,
    /// what is wrong with it ([`RingError::NotARing`],
    /// [`RingError::ForeignOwner`], [`RingError::LayoutVersion`],
    /// [`RingError::Truncated`], [`RingError::CapacityMismatch`],
    /// [`RingError::InvalidHeader`]), or [`RingError::NoFreeSlot`];
    /// [`RingError::Io`] for system call failures.
    pub fn open(name: &str, dir: Option<&Path>) -> Result<Subscriber, RingError> {
        Self::open_with_owners(name, dir, &[])
    }

    /// As [`Subscriber::open_with_owners`], joining every ring at `start`:
    /// [`Start::History`] begins at the oldest whole record within the
    /// ring's history window (see `history.rs`).
    ///
    /// ```no_run
    /// use conduit_ringbuf::{Start, Subscriber};
    /// let s = Subscriber::open_from("quotes", None, &[], Start::History)?;
    /// # Ok::<(), conduit_ringbuf::RingError>(())
    /// ```
    ///
    /// # Errors
    /// As for [`Subscriber::open`].
    pub fn open_from(
        name: &str,
        dir: Option<&Path>,
        owners: &[u32],
        start: Start,
    ) -> Result<Subscriber, RingError> {
        validate_name(name)?;
        let mut s = Self::detached(name, dir, owners);
        s.start = start;
        match s.attach() {
            Ok(()) | Err(Attach::Absent) => Ok(s),
            Err(Attach::Failed(e)) => Err(e),
        }
    }

    fn detached(name: &str, dir: Option<&Path>, owners: &[u32]) -> Subscriber {
        let dir = ring_dir(dir);
        let me = file::euid();
        let mut allowed = vec![me];
        allowed.extend(owners.iter().copied().filter(|u| *u != me));
        Subscriber {
            path: dir.join(name),
            dir,
            name: name.to_owned(),
            owners: allowed,
            conn: None,
            stale: None,
            last_attach: None,
            start: Start::Live,
        }
    }

    /// As [`Subscriber::open`], also attaching to rings owned by the uids in
    /// `owners`. A ring file (or its lock file) owned by any other uid is
    /// [`RingError::ForeignOwner`]: whoever owns a ring controls every byte a
    /// subscriber reads, so a ring under a well-known name that another user
    /// created (or re-created) is refused rather than trusted.
    ///
    /// # Errors
    /// As for [`Subscriber::open`].
    pub fn open_with_owners(
        name: &str,
        dir: Option<&Path>,
        owners: &[u32],
    ) -> Result<Subscriber, RingError> {
        validate_name(name)?;
        let mut s = Self::detached(name, dir, owners);
        match s.attach() {
            Ok(()) | Err(Attach::Absent) => Ok(s),
            Err(Attach::Failed(e)) => Err(e),
        }
    }

    /// Path of the ring file this subscriber reads (or waits for).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tries to attach to the file at the path.
    fn attach(&mut self) -> Result<(), Attach> {
        self.last_attach = Some(Instant::now());
        let path = &self.path;
        let (file, md) = match file::open_existing(path) {
            Ok(Some(v)) => v,
            Ok(None) => return Err(Attach::Absent),
            Err(e) => {
                // Not openable or not a regular file: name its owner if
                // that is who is wrong.
                if let Ok(md) = std::fs::symlink_metadata(path) {
                    file::check_owner(path, &md, &self.owners)?;
                }
                return Err(e.into());
            }
        };
        file::check_owner(path, &md, &self.owners)?;
        let mut header = [0u8; layout::HEADER_LEN];
        let n = read_prefix(&file, &mut header)
            .map_err(|e| RingError::io(format!("reading {}", path.display()), e))?;
        let (h, g) = layout::validate(&header[..n], md.len())
            .map_err(|e| RingError::from_header(path.clone(), e))?;
        let id = (md.dev(), md.ino(), h.incarnation.get());
        if self.stale == Some(id) {
            return Err(Attach::Absent);
        }
        let lock_path = self
            .dir
            .join(liveness::lock_name(&self.name, h.incarnation.get()));
        let lock = match file::open_existing(&lock_path)? {
            Some((lock, lmd)) => {
                file::check_owner(&lock_path, &lmd, &self.owners)?;
                Some(lock)
            }
            None => None,
        };
        let map = Mapping::map(&file, g.file_len)
            .map_err(|e| RingError::io(format!("mapping {}", path.display()), e))?;
        drop(file);
        let alive = match &lock {
            Some(lock) => liveness::is_locked(lock, PUBLISHER_LOCK).map_err(|e| {
                RingError::io(format!("checking the publisher of {}", path.display()), e)
            })?,
            // The publisher removes its lock file last: it is gone.
            None => false,
        };
        // Acquire partner: the publisher's Release store of `closed`.
        let (Some(lock), true) = (
            lock,
            alive && map.publisher().closed.load(Ordering::Acquire) == 0,
        ) else {
            self.stale = Some(id);
            return Err(Attach::Absent);
        };
        let mut chosen = None;
        // Free slots first, then any (one left by a dead subscriber).
        'search: for pass in 0..2 {
            for i in 0..g.max_subscribers {
                if pass == 0 && map.slot(i).state.load(Ordering::Relaxed) != SLOT_FREE {
                    continue;
                }
                let got =
                    liveness::try_lock(&lock, SLOT_LOCK_BASE + i64::from(i)).map_err(|e| {
                        RingError::io(format!("locking a slot of {}", path.display()), e)
                    })?;
                if got {
                    chosen = Some(i);
                    break 'search;
                }
            }
        }
        let Some(slot_idx) = chosen else {
            return Err(RingError::NoFreeSlot {
                path: path.clone(),
                max: g.max_subscribers,
            }
            .into());
        };
        let slot = map.slot(slot_idx);
        // We hold the slot's lock, so any earlier owner is dead: take its
        // sleeper count away if it died asleep.
        reclaim_waiter(&map, slot);
        slot.pid.store(std::process::id(), Ordering::Relaxed);
        // Published by the Release CAS to JOINING below.
        slot.start.store(self.start.word(), Ordering::Relaxed);
        // We hold the slot's lock, so only the publisher may still change the
        // state (reaping ACTIVE/JOINING -> FREE once); the loop is bounded.
        let mut joined = false;
        for _ in 0..16 {
            let s = slot.state.load(Ordering::Relaxed);
            // Release partner: the publisher's Acquire load in its scan.
            if slot
                .state
                .compare_exchange(s, SLOT_JOINING, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                joined = true;
                break;
            }
        }
        if !joined {
            liveness::unlock(&lock, SLOT_LOCK_BASE + i64::from(slot_idx));
            return Err(RingError::InvalidHeader {
                path: path.clone(),
                reason: format!("subscriber slot {slot_idx}'s state keeps changing"),
            }
            .into());
        }
        // Release partner: the publisher's Acquire RMW on `attention` before
        // its scan.
        map.signal()
            .attention
            .fetch_add(ATTENTION_MEMBERSHIP, Ordering::Release);
        let data = DataArea::new(&map, &g);
        self.conn = Some(Conn {
            map,
            lock,
            id,
            header,
            data,
            slot: slot_idx,
            capacity: g.capacity,
            max_len: g.max_message_len,
            evict: h.slow_policy.get() == SLOW_EVICT,
            copy_buf: Vec::new(),
            evicted_from: None,
            pos: 0,
            active: false,
            empty: 0,
            last_check: Instant::now(),
            pending: None,
        });
        Ok(())
    }

    /// Rate-limited attach attempt while detached.
    #[cold]
    pub(crate) fn try_reattach(&mut self) -> Result<(), PollError> {
        if self
            .last_attach
            .is_some_and(|t| t.elapsed() < ATTACH_INTERVAL)
        {
            return Ok(());
        }
        match self.attach() {
            Ok(()) | Err(Attach::Absent) => Ok(()),
            Err(Attach::Failed(RingError::Io(_)))
            | Err(Attach::Failed(RingError::NoFreeSlot { .. })) => Ok(()),
            Err(Attach::Failed(RingError::ForeignOwner { uid, .. })) => {
                Err(PollError::ForeignOwner { uid })
            }
            Err(Attach::Failed(e)) => Err(PollError::Corrupt(e.to_string())),
        }
    }

    /// Drops the attachment; the file is not attached to again.
    fn detach(&mut self) {
        if let Some(c) = self.conn.take() {
            self.stale = Some(c.id);
        }
        self.last_attach = Some(Instant::now());
    }

    /// Hands up to `limit` records to `handler(type_id, payload)`; payloads are
    /// 16-byte aligned and borrowed from ring memory.
    ///
    /// # Errors
    /// [`PollError::PublisherClosed`] or [`PollError::PublisherGone`] once,
    /// after every committed record was delivered (later polls look for a new
    /// publisher); [`PollError::Corrupt`] when shared memory breaks the
    /// layout's invariants; [`PollError::ForeignOwner`] while the file under
    /// the name belongs to a uid that is not allowed.
    #[inline]
    pub fn poll<F: FnMut(u32, &[u8])>(
        &mut self,
        mut handler: F,
        limit: usize,
    ) -> Result<usize, PollError> {
        self.poll_at(|_, type_id, payload| handler(type_id, payload), limit)
    }

    /// [`poll`](Self::poll), handing each record's position too:
    /// `handler(position, type_id, payload)`.
    ///
    /// # Errors
    /// As [`poll`](Self::poll).
    #[inline]
    pub fn poll_at<F: FnMut(u64, u32, &[u8])>(
        &mut self,
        mut handler: F,
        limit: usize,
    ) -> Result<usize, PollError> {
        let Some(c) = self.conn.as_mut() else {
            self.try_reattach()?;
            return Ok(0);
        };
        if !c.active {
            if !c.try_activate()? {
                return self.idle_joining();
            }
            if let Some(old) = c.evicted_from.take() {
                return Err(PollError::Evicted {
                    missed: c.pos.saturating_sub(old),
                });
            }
        }
        if c.evict {
            let n = c.poll_evictable(&mut handler, limit)?;
            if n > 0 || !c.active {
                return Ok(n);
            }
            c.empty = c.empty.wrapping_add(1);
            if c.empty % IDLE_CHECK_EVERY != 0 && c.pending.is_none() {
                return Ok(0);
            }
            return self.idle_active();
        }
        let d = c.data;
        let cap = c.capacity;
        let start = c.pos;
        let mut pos = start;
        let mut n = 0;
        while n < limit && pos - start < cap {
            // SAFETY: `pos` is 32-aligned; the mapping lives as long as `c`.
            let commit = unsafe { d.commit(pos) }.load(Ordering::Acquire);
            // Acquire partner: the publisher's Release store of the commit word.
            if commit != pos + 1 {
                if commit == 0 {
                    break;
                }
                c.pos = pos;
                return Err(c.bad_commit(commit));
            }
            // SAFETY: as above.
            let (len_w, type_w) = unsafe { d.len_type(pos) };
            let len = len_w.load(Ordering::Relaxed);
            let off = d.offset(pos);
            if len == PADDING_LEN {
                if off == 0 {
                    return Err(PollError::Corrupt(format!(
                        "padding record at the start of the ring (position {pos})"
                    )));
                }
                pos += cap - off;
                continue;
            }
            if u64::from(len) > c.max_len || off + RECORD_HEADER_LEN as u64 + u64::from(len) > cap {
                return Err(PollError::Corrupt(format!(
                    "record at position {pos} has length {len}; the maximum is {} and {} bytes remain before the end",
                    c.max_len,
                    cap - off - RECORD_HEADER_LEN as u64
                )));
            }
            // SAFETY: the payload lies inside the data area (checked just above)
            // of a mapping that outlives this call; the handler's borrow cannot
            // escape the call (higher-ranked lifetime). A hostile writer may
            // change the bytes meanwhile, which yields wrong bytes, nothing worse.
            let payload = unsafe { std::slice::from_raw_parts(d.payload_ptr(pos), len as usize) };
            handler(pos, type_w.load(Ordering::Relaxed), payload);
            pos += layout::record_len(u64::from(len));
            n += 1;
        }
        if pos != start {
            // Release partner: the publisher's Acquire load of the position in
            // its scan; the handler's reads above happen before it.
            c.slot().position.store(pos, Ordering::Release);
            c.pos = pos;
            return Ok(n);
        }
        c.empty = c.empty.wrapping_add(1);
        if c.empty % IDLE_CHECK_EVERY != 0 && c.pending.is_none() {
            return Ok(0);
        }
        self.idle_active()
    }

    /// Does what an empty [`poll`](Self::poll) would do, if that is all a
    /// poll would do now: true when attached and active, nothing waits at
    /// the current position, no problem is pending and no periodic check is
    /// due (the empty poll is counted, as `poll` counts it). False means
    /// "call `poll`". For callers that pay per call, such as the C ABI, so
    /// that spinning on an empty channel stays a few instructions.
    #[inline]
    pub fn poll_idle(&mut self) -> bool {
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        if !c.active || c.pending.is_some() || c.has_data() {
            return false;
        }
        let e = c.empty.wrapping_add(1);
        if e % IDLE_CHECK_EVERY == 0 {
            return false;
        }
        c.empty = e;
        true
    }

    /// The empty path of an active subscriber, every [`IDLE_CHECK_EVERY`]
    /// empty polls: clean close, liveness (rate-limited), corruption.
    #[cold]
    #[inline(never)]
    fn idle_active(&mut self) -> Result<usize, PollError> {
        let Some(c) = self.conn.as_mut() else {
            return Ok(0);
        };
        // Acquire partner: the publisher's Release store of `closed`, made
        // after its last commit.
        if c.pending.is_none() && c.map.truncated() {
            c.pending = Some(truncated());
        }
        if c.pending.is_none() && c.map.publisher().closed.load(Ordering::Acquire) != 0 {
            c.pending = Some(PollError::PublisherClosed);
        }
        if c.pending.is_none() {
            c.maybe_health_check(Instant::now());
        }
        match c.pending.clone() {
            None => Ok(0),
            Some(e) => {
                if c.has_data() {
                    // Deliver what was committed before reporting.
                    return Ok(0);
                }
                if !matches!(e, PollError::Corrupt(_)) {
                    self.detach();
                }
                Err(e)
            }
        }
    }

    /// A joining subscriber with nothing to read: watch the publisher.
    #[cold]
    fn idle_joining(&mut self) -> Result<usize, PollError> {
        let Some(c) = self.conn.as_mut() else {
            return Ok(0);
        };
        c.maybe_health_check(Instant::now());
        match c.pending.clone() {
            None => Ok(0),
            Some(PollError::Corrupt(m)) => Err(PollError::Corrupt(m)),
            // Gone or closed before we were ever activated: nothing was
            // promised; look for the next publisher silently.
            Some(_) => {
                self.detach();
                Ok(0)
            }
        }
    }

    /// True while attached to a live publisher.
    pub fn is_connected(&mut self) -> bool {
        let Some(c) = self.conn.as_mut() else {
            let _ = self.try_reattach();
            return false;
        };
        // An evicted subscriber's rejoin is completed (and reported) by `poll`.
        if !c.active && (c.evicted_from.is_some() || !matches!(c.try_activate(), Ok(true))) {
            return false;
        }
        c.maybe_health_check(Instant::now());
        c.pending.is_none()
    }

    /// Next position this subscriber reads (0 when not attached).
    pub fn position(&self) -> u64 {
        self.conn.as_ref().map_or(0, |c| c.pos)
    }
}
