//! The subscriber: attaches to a ring (now or when it appears) and reads records.

use crate::error::{PollError, RingError};
use crate::history::Start;
use crate::layout::{
    self, ATTENTION_MEMBERSHIP, LEN_MASK, PADDING_LEN, PUB_RECLAIMING, RECORD_ALIGN,
    RECORD_HEADER_LEN, SKIP_LEN, SLOT_ACTIVE, SLOT_EVICTED, SLOT_FREE, SLOT_JOINING, SLOW_EVICT,
    SOURCE_SHIFT,
};
use crate::liveness::{self, PUBLISHER_LOCK, PUB_LOCK_BASE, SLOT_LOCK_BASE};
use crate::mapping::{DataArea, Mapping, PubSlot, Slot};
use crate::publisher::{read_prefix, reclaim_waiter};
use crate::{file, ring_dir, validate_name, PUBLISHER_CHECK_INTERVAL};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Empty polls between checks for a close, a dead publisher or corruption.
const IDLE_CHECK_EVERY: u32 = 32;

/// How long a subscriber of a multi-writer ring waits at an uncommitted
/// record that later claims have passed before it checks whether the
/// publisher holding that claim is alive (and again every as often).
pub const DEAD_CLAIM_CHECK: Duration = Duration::from_millis(1);

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
    /// Publisher slots (1: a single-writer ring, none in the file).
    pub(crate) pubs: u32,
    /// Subscriber slots (the publisher slots follow them).
    subs: u32,
    /// Mask of the length bits of a record's `len` word.
    pub(crate) len_mask: u32,
    /// Pid in the header (the publisher of a single-writer ring).
    creator_pid: u32,
    /// Multi-writer rings: the position we found uncommitted with later
    /// claims past it, and when (for [`DEAD_CLAIM_CHECK`]).
    stuck: Option<(u64, Instant)>,
}

/// What a subscriber knows about a record besides its payload.
#[derive(Clone, Copy)]
pub struct RecordInfo<'a> {
    type_id: u32,
    position: u64,
    raw_len: u32,
    conn: &'a Conn,
}

impl<'a> RecordInfo<'a> {
    /// The view of a record read by `conn` at `position`.
    #[inline]
    pub(crate) fn new(type_id: u32, position: u64, raw_len: u32, conn: &'a Conn) -> Self {
        RecordInfo {
            type_id,
            position,
            raw_len,
            conn,
        }
    }

    /// The record's type id.
    #[inline]
    pub fn type_id(&self) -> u32 {
        self.type_id
    }

    /// Stream position of the record (its first byte).
    #[inline]
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The publisher that wrote the record: its slot index and the pid of
    /// the slot's owner (read now; a slot is reused only after its owner
    /// died). A single-writer ring's publisher is index 0 with the pid in
    /// the header. `None` when the record carries no valid index.
    pub fn publisher(&self) -> Option<(u16, u32)> {
        self.publisher_ref().map(|p| p.get())
    }

    /// Where [`RecordInfo::publisher`] reads the record's publisher from,
    /// without reading it yet: for a caller that hands records on and reads
    /// the pid only when asked (a load from the publisher's slot per record
    /// is not free on a multi-writer ring). Unlike a `RecordInfo`, it may
    /// cross threads.
    ///
    /// ```no_run
    /// use conduit_ringbuf::Subscriber;
    /// let mut s = Subscriber::open("orders", None)?;
    /// s.poll_records(
    ///     |r, _payload| {
    ///         // Cheap: no shared memory is read here ...
    ///         let from = r.publisher_ref();
    ///         // ... only when the pid is wanted.
    ///         if let Some((index, pid)) = from.map(|p| p.get()) {
    ///             println!("from publisher {index} (pid {pid})");
    ///         }
    ///     },
    ///     64,
    /// )?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn publisher_ref(&self) -> Option<PublisherRef<'a>> {
        let c = self.conn;
        if c.pubs <= 1 {
            return Some(PublisherRef {
                index: 0,
                pid: Pid::Known(c.creator_pid),
            });
        }
        let tag = self.raw_len >> SOURCE_SHIFT;
        if tag == 0 || tag > c.pubs {
            return None;
        }
        Some(PublisherRef {
            index: (tag - 1) as u16,
            pid: Pid::Slot(c.map.pub_slot(c.subs, tag - 1)),
        })
    }
}

/// A record's publisher, read on demand ([`RecordInfo::publisher_ref`]).
#[derive(Clone, Copy)]
pub struct PublisherRef<'a> {
    index: u16,
    pid: Pid<'a>,
}

#[derive(Clone, Copy)]
enum Pid<'a> {
    /// A single-writer ring's creator.
    Known(u32),
    /// The owner of a multi-writer ring's publisher slot (read when asked).
    Slot(&'a PubSlot),
}

impl PublisherRef<'_> {
    /// The publisher's slot index and the pid of the slot's owner (read
    /// now; a slot is reused only after its owner died).
    #[inline]
    pub fn get(&self) -> (u16, u32) {
        let pid = match self.pid {
            Pid::Known(pid) => pid,
            Pid::Slot(slot) => slot.pid.load(Ordering::Relaxed),
        };
        (self.index, pid)
    }
}

impl std::fmt::Debug for PublisherRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (index, pid) = self.get();
        f.debug_struct("PublisherRef")
            .field("index", &index)
            .field("pid", &pid)
            .finish()
    }
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

    /// True while a publisher holds the ring's publisher lock (on a
    /// multi-writer ring: any of its publishers, who share it).
    fn publisher_alive(&self) -> std::io::Result<bool> {
        if self.pubs > 1 {
            liveness::is_any_locked(&self.lock, PUBLISHER_LOCK)
        } else {
            liveness::is_locked(&self.lock, PUBLISHER_LOCK)
        }
    }

    /// Multi-writer rings: when the record at our position stays uncommitted
    /// while later claims were made past it, and the publisher whose pending
    /// claim covers it is dead, skips that claim (a record it committed
    /// before dying is read, not skipped). Checks at most every
    /// [`DEAD_CLAIM_CHECK`]. True if the position moved or a record appeared.
    #[cold]
    pub(crate) fn skip_dead_claim(&mut self, now: Instant) -> Result<bool, PollError> {
        if self.pubs <= 1 || !self.active {
            return Ok(false);
        }
        let pos = self.pos;
        if self.has_data() {
            self.stuck = None;
            return Ok(false);
        }
        // The shared tail is read only once our position has stood still for
        // DEAD_CLAIM_CHECK: reading it on every idle check would pull the
        // claimers' cache line away from them on every message.
        match self.stuck {
            Some((p, since)) if p == pos => {
                if now.duration_since(since) < DEAD_CLAIM_CHECK {
                    return Ok(false);
                }
            }
            _ => {
                self.stuck = Some((pos, now));
                return Ok(false);
            }
        }
        self.stuck = Some((pos, now));
        // Acquire partner: the claimer's Release store of `claim_tail`, made
        // after it recorded its pending claim.
        let tail = self.map.publisher().claim_tail.load(Ordering::Acquire);
        if tail <= pos {
            return Ok(false);
        }
        let cap = self.capacity;
        let span = 2 * layout::record_len(self.max_len);
        for j in 0..self.pubs {
            let slot = self.map.pub_slot(self.subs, j);
            let pe = slot.pending_end.load(Ordering::Acquire);
            let ps = slot.pending_start.load(Ordering::Relaxed);
            if pe == 0 || !(ps <= pos && pos < pe) {
                continue;
            }
            if ps % RECORD_ALIGN as u64 != 0 || pe % RECORD_ALIGN as u64 != 0 || pe - ps > span {
                return Err(PollError::Corrupt(format!(
                    "publisher slot {j} holds a pending claim [{ps}, {pe}) that is misaligned or longer than {span} bytes"
                )));
            }
            // A new owner that has not yet resolved the claim its dead
            // predecessor left (it holds the lock byte meanwhile). A claim
            // of the new owner's own is never seen with this state: it
            // stores ATTACHED before it claims, and the claim tail we
            // loaded (Acquire) covers the claim (`pe <= tail`).
            // Acquire partner: the attacher's Release store of RECLAIMING.
            let reclaiming = slot.state.load(Ordering::Acquire) == PUB_RECLAIMING && pe <= tail;
            match liveness::is_locked(&self.lock, PUB_LOCK_BASE + i64::from(j)) {
                Ok(true) if !reclaiming => return Ok(false),
                Ok(true) => {}
                Ok(false) => {}
                Err(e) => {
                    return Err(PollError::Corrupt(format!(
                        "cannot check publisher {j}'s lock: {e}"
                    )))
                }
            }
            // It may have committed (or someone resolved the claim) before
            // we looked at its lock.
            if self.has_data() {
                return Ok(true);
            }
            let off = self.data.offset(pos);
            self.pos = if pos == ps && off + (pe - ps) > cap {
                // Its padding: the record at the start of the next lap may
                // have been committed before it died.
                pos + (cap - off)
            } else {
                pe
            };
            // Release partner: the publisher's Acquire load in its scan.
            self.slot().position.store(self.pos, Ordering::Release);
            self.stuck = None;
            return Ok(true);
        }
        Ok(false)
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
        match self.publisher_alive() {
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

/// Bytes a skip record at `pos` (offset `off` in the lap) covers, checked:
/// a non-zero multiple of 32 that stays inside the lap.
#[cold]
pub(crate) fn skip_len(pos: u64, off: u64, bytes: u32, cap: u64) -> Result<u64, PollError> {
    let b = u64::from(bytes);
    if b == 0 || b % RECORD_ALIGN as u64 != 0 || off + b > cap {
        return Err(PollError::Corrupt(format!(
            "skip record at position {pos} covers {b} bytes: zero, misaligned or past the end of the lap"
        )));
    }
    Ok(b)
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
            Some(lock) if g.max_publishers > 1 => liveness::is_any_locked(lock, PUBLISHER_LOCK)
                .map_err(|e| {
                    RingError::io(format!("checking the publishers of {}", path.display()), e)
                })?,
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
            pubs: g.max_publishers,
            subs: g.max_subscribers,
            len_mask: if g.max_publishers > 1 {
                LEN_MASK
            } else {
                u32::MAX
            },
            creator_pid: h.creator_pid.get(),
            stuck: None,
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
        self.poll_records(|r, payload| handler(r.type_id(), payload), limit)
    }

    /// As [`Subscriber::poll`], handing each record's [`RecordInfo`] (type
    /// id, position, publisher) with its payload.
    ///
    /// # Errors
    /// As for [`Subscriber::poll`].
    #[inline]
    pub fn poll_records<F: FnMut(RecordInfo<'_>, &[u8])>(
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
            let raw = len_w.load(Ordering::Relaxed);
            let len = raw & c.len_mask;
            let off = d.offset(pos);
            if raw == PADDING_LEN {
                if off == 0 {
                    return Err(PollError::Corrupt(format!(
                        "padding record at the start of the ring (position {pos})"
                    )));
                }
                pos += cap - off;
                continue;
            }
            if u64::from(len) > c.max_len || off + RECORD_HEADER_LEN as u64 + u64::from(len) > cap {
                if raw == SKIP_LEN && c.pubs > 1 {
                    pos += skip_len(pos, off, type_w.load(Ordering::Relaxed), cap)?;
                    continue;
                }
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
            let info = RecordInfo {
                type_id: type_w.load(Ordering::Relaxed),
                position: pos,
                raw_len: raw,
                conn: c,
            };
            handler(info, payload);
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
            let now = Instant::now();
            if c.pubs > 1 {
                match c.skip_dead_claim(now) {
                    Ok(true) => return Ok(0),
                    Ok(false) => {}
                    Err(e) => return Err(e),
                }
            }
            c.maybe_health_check(now);
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
