//! The publisher: creates the ring file and appends records.

use crate::error::{OfferError, RingError};
use crate::layout::{
    self, Geometry, ATTENTION_MEMBERSHIP, FENCE_MEMBARRIER, FENCE_PUBLISHER, PADDING_LEN,
    RECORD_ALIGN, SLOT_ACTIVE, SLOT_FREE, SLOT_JOINING,
};
use crate::liveness::{self, DirLock, PUBLISHER_LOCK, SLOT_LOCK_BASE};
use crate::mapping::{DataArea, Mapping};
use crate::{futex, ring_dir, validate_name, RingConfig};
use crate::{BACKPRESSURE_REAP_INTERVAL, REAP_INTERVAL};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{compiler_fence, fence, AtomicU64, Ordering};
use std::time::Instant;
use zerocopy::IntoBytes;

/// Bytes zeroed ahead of the tail in one go.
const ZERO_AHEAD: u64 = 1024;
/// Zeroing ahead starts again when fewer bytes than this are zeroed.
const ZERO_LOW_WATER: u64 = 512;

/// How often `is_connected` and friends check subscriber liveness.
const QUERY_REAP_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1);

/// The single writer of a ring.
pub struct Publisher {
    // Field order: `map` must drop before `file` releases the lock (Drop
    // handles the file explicitly anyway).
    map: Mapping,
    file: File,
    path: PathBuf,
    dir: PathBuf,
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
}

impl Publisher {
    /// Creates the ring file `name` (or reuses a stale one left by a dead publisher).
    ///
    /// The ring is built in a temporary file `.{name}.{pid}.{n}.tmp` in the
    /// same directory and renamed into place. A creator killed between the two
    /// leaves that file behind, so creation first removes, best effort (errors
    /// are ignored), every file named exactly `.{name}.{pid}.{n}.tmp` for this
    /// `name` whose process no longer exists (`kill(pid, 0)` fails with
    /// `ESRCH`). Files of live processes, of other names and of any other
    /// pattern are left alone. This happens under the directory lock, so no
    /// creator can be between creating and renaming such a file meanwhile.
    ///
    /// # Errors
    /// [`RingError::InvalidName`], [`RingError::InvalidConfig`];
    /// [`RingError::PublisherAlive`] if a live publisher owns the name;
    /// [`RingError::NotARing`] if the name is taken by a file that is not a
    /// ring (it is left alone); [`RingError::Io`] for system call failures.
    pub fn create(name: &str, config: &RingConfig) -> Result<Publisher, RingError> {
        validate_name(name)?;
        let geometry = Geometry::new(
            config.capacity,
            config.max_message_len,
            config.max_subscribers,
        )
        .map_err(RingError::InvalidConfig)?;
        if config.mode & 0o600 != 0o600 || config.mode > 0o777 {
            return Err(RingError::InvalidConfig(format!(
                "mode {:o} must be file permissions including owner read-write",
                config.mode
            )));
        }
        let dir = ring_dir(config.dir.as_deref());
        let path = dir.join(name);
        let _dir_lock = DirLock::lock(&dir)
            .map_err(|e| RingError::io(format!("locking {}", dir.display()), e))?;
        sweep_stale_temps(&dir, name);
        check_existing(&path)?;

        let pid = std::process::id();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = dir.join(format!(
            ".{name}.{pid}.{}.tmp",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let built = build(&tmp, &geometry, config.mode, pid);
        let (file, map) = match built {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(RingError::io(
                format!("renaming ring into {}", path.display()),
                e,
            ));
        }
        let md = file
            .metadata()
            .map_err(|e| RingError::io("stat of the new ring", e))?;
        let data = DataArea::new(&map, &geometry);
        Ok(Publisher {
            fence: map.publisher().fence_mode.load(Ordering::Relaxed) != FENCE_MEMBARRIER,
            map,
            file,
            path,
            dir,
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
        })
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
        let att = self.map.signal().attention.load(Ordering::Relaxed);
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
                    slot.position.store(self.tail, Ordering::Relaxed);
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
            match liveness::is_locked(&self.file, SLOT_LOCK_BASE + i64::from(i)) {
                Ok(true) => {}
                Ok(false) => {
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

    /// Live subscribers attached.
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
    #[cold]
    #[inline(never)]
    fn zero_ahead(&mut self) {
        let target = (self.tail + ZERO_AHEAD).min(self.limit);
        let mut from = self.zeroed.max(self.tail);
        while from < target {
            let off = self.data.offset(from);
            let n = (target - from).min(self.capacity - off);
            // SAFETY: [off, off + n) lies inside the data area (n ≤ capacity -
            // off); positions [from, target) are past the tail (uncommitted, no
            // reader looks at them) and below `limit`, so no subscriber still
            // needs the bytes there; the mapping lives as long as `self`.
            unsafe { std::ptr::write_bytes(self.data.at(from), 0, n as usize) };
            from += n;
        }
        self.zeroed = self.zeroed.max(target);
    }

    #[cold]
    fn wake(&self) {
        let signal = self.map.signal();
        // Release partner: the sleeper's Acquire load of the futex word.
        signal.futex.fetch_add(1, Ordering::Release);
        futex::wake_all(&signal.futex);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.map
            .publisher()
            .tail
            .store(self.tail, Ordering::Relaxed);
        // Release partner: the subscriber's Acquire load of `closed`, after
        // which it re-checks for records (all committed before this store).
        self.map.publisher().closed.store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.map.signal().attention.load(Ordering::Relaxed) as u32 != 0 {
            self.wake();
        }
        if let Ok(_lock) = DirLock::lock(&self.dir) {
            if let Ok(md) = std::fs::metadata(&self.path) {
                if (md.dev(), md.ino()) == self.dev_ino {
                    let _ = std::fs::remove_file(&self.path);
                }
            }
        }
        liveness::unlock(&self.file, PUBLISHER_LOCK);
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
        let p = &mut *self.p;
        let d = p.data;
        let end = self.start + layout::record_len(self.len as u64);
        // SAFETY: every view below is at a 32-aligned position (start, end, the
        // padding position) and the mapping is alive while `p` is borrowed.
        unsafe {
            let (len_w, type_w) = d.len_type(self.start);
            len_w.store(self.len as u32, Ordering::Relaxed);
            type_w.store(self.type_id, Ordering::Relaxed);
            // The next record's commit word must not show an old lap's bytes
            // to a reader that follows this record: it is zeroed before this
            // commit, normally by an earlier `zero_ahead`.
            if p.zeroed < end + 8 {
                d.commit(end).store(0, Ordering::Relaxed);
                p.zeroed = end + 8;
            }
            // Release partner: the subscriber's Acquire load of the commit word.
            d.commit(self.start)
                .store(self.start + 1, Ordering::Release);
            if let Some(pad) = self.pad_at {
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
            p.zero_ahead();
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

    /// Releases the claim without publishing anything.
    pub fn abort(self) {}
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

/// Fails if `path` is owned by a live publisher or is not a ring file.
fn check_existing(path: &Path) -> Result<(), RingError> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(RingError::io(format!("opening {}", path.display()), e)),
    };
    let mut head = [0u8; layout::HEADER_LEN];
    let n = read_prefix(&file, &mut head)
        .map_err(|e| RingError::io(format!("reading {}", path.display()), e))?;
    if n < layout::MAGIC.len() || head[..layout::MAGIC.len()] != layout::MAGIC {
        return Err(RingError::NotARing {
            path: path.to_path_buf(),
        });
    }
    let alive = liveness::is_locked(&file, PUBLISHER_LOCK).map_err(|e| {
        RingError::io(
            format!("checking the publisher lock of {}", path.display()),
            e,
        )
    })?;
    if alive {
        let pid = if n == layout::HEADER_LEN {
            u32::from_le_bytes([head[36], head[37], head[38], head[39]])
        } else {
            0
        };
        return Err(RingError::PublisherAlive {
            path: path.to_path_buf(),
            pid,
        });
    }
    Ok(())
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
/// died before renaming them (see [`Publisher::create`]); best effort. The
/// caller holds the directory lock.
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
/// `.{name}.{pid}.{n}.tmp` with `pid` and `n` in decimal as `create` writes
/// them (no sign, no leading zeros) and `pid` a positive `pid_t`.
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
    if !decimal(pid) || !decimal(n) {
        return None;
    }
    n.parse::<u64>().ok()?;
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

/// Creates and initialises the ring in the temporary file `tmp`.
fn build(tmp: &Path, g: &Geometry, mode: u32, pid: u32) -> Result<(File, Mapping), RingError> {
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC)
        .open(tmp)
        .map_err(|e| RingError::io(ctx("creating"), e))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| RingError::io(ctx("chmod of"), e))?;
    file.set_len(g.file_len)
        .map_err(|e| RingError::io(ctx("sizing"), e))?;
    if !liveness::try_lock(&file, PUBLISHER_LOCK).map_err(|e| RingError::io(ctx("locking"), e))? {
        return Err(RingError::Io(io::Error::other(ctx(
            "cannot lock fresh file",
        ))));
    }
    let map = Mapping::map(&file, g.file_len).map_err(|e| RingError::io(ctx("mapping"), e))?;
    let mut bytes = [0u8; layout::HEADER_LEN];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    bytes.copy_from_slice(g.header(pid, now ^ (u64::from(pid) << 48)).as_bytes());
    map.write_header(&bytes);
    let mode = if futex::register_global_expedited() {
        FENCE_MEMBARRIER
    } else {
        FENCE_PUBLISHER
    };
    map.publisher().fence_mode.store(mode, Ordering::Relaxed);
    Ok((file, map))
}
