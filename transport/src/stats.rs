//! The writer of the per-process counters file (the layout and a reader are
//! in the `conduit-counters` crate).
//!
//! The first handle a process opens creates
//! `$CONDUIT_SHM_DIR/conduit-stats/<pid>.stats` (`/dev/shm` when the
//! variable is unset; the directory is created with mode 01777 like
//! `/tmp`, the file with 0644): a temporary file is filled and renamed over
//! that name, so a stale file of a dead process that had our pid is
//! replaced atomically. The file has a fixed number of slots,
//! [`conduit_counters::DEFAULT_SLOT_COUNT`] (256); it never grows. A handle
//! that finds every slot taken works as usual and publishes nothing; the
//! header's `handles_without_slot` counts it. Statistics are best-effort:
//! when the file cannot be created, no handle publishes and every open
//! succeeds. `CONDUIT_STATS=0` (read once, at the first open) turns them off.
//! A child made by `fork` makes its own file at its first open.
//!
//! The mapping (`conduit_ringbuf::shared_words`) stays until the process
//! exits, and so does the file: a dead process's file is removed by
//! `conduit-stat --clean`, or replaced by the next process with its pid.
//!
//! **Slots.** A handle's slot is filled while its `state` is 0 (kind,
//! generation, strings, zeroed counters), then `state = 1` is
//! release-stored last. There is no Acquire partner in Rust: the reader
//! (`conduit_counters::parse`) parses a copy made by `read(2)`. On x86-64
//! the copy sees the stores in order, so a slot in use has its strings; a
//! weakly ordered CPU may let a reader see `state = 1` before them, and the
//! reader then sees a previous, still NUL-terminated URI (or none) and
//! catches up at its next read. On close, `state = 0` is stored first.
//! Counter words are single relaxed 8-byte stores: a reader may see a
//! counters block torn between two updates, never a torn word.
//!
//! **Cost.** `shm:` handles keep their totals in the handle (as before) and
//! store them into their slot's counters cache line, which no other handle
//! writes: per offer (or claim) of a publication, the total of bytes is
//! added in the handle and `messages` and `bytes` are stored with two relaxed
//! stores; per non-empty poll batch of a subscription, the payload lengths
//! are summed in the handler and the same two stores follow. No load from
//! shared memory, no read-modify-write, no system call, no clock. Their
//! positions, back-pressure and subscriber counts are stored on cold paths
//! only (an offer refused, `is_connected`, `flush`, `wait`, close): the live
//! positions of an `shm:` channel are in the ring file itself (the
//! publisher's tail and each subscriber slot's position), where readers
//! should take them. UDP handles copy the protocol's counters into their
//! slot at most once per millisecond, from the transmit path, which already
//! has the time, and when they close.

use conduit_counters as layout;
use conduit_counters::{FileHeader, Slot, SlotCounters};
use conduit_ringbuf::shared_words::SharedWords;
use std::fs;
use std::io::{self, Write};
use std::mem::offset_of;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zerocopy::IntoBytes;

/// Words in a slot's counters block.
pub(crate) const WORDS: usize = layout::COUNTERS_SIZE / 8;

/// Index of a counter in the counters block.
macro_rules! word {
    ($field:ident) => {
        offset_of!(SlotCounters, $field) / 8
    };
}
pub(crate) const MESSAGES: usize = word!(messages);
pub(crate) const BYTES: usize = word!(bytes);
pub(crate) const BACK_PRESSURE: usize = word!(back_pressure);
pub(crate) const NOT_CONNECTED: usize = word!(not_connected);
pub(crate) const POSITION: usize = word!(position);
pub(crate) const PEER_POSITION: usize = word!(peer_position);
pub(crate) const NAKS_SENT: usize = word!(naks_sent);
pub(crate) const NAKS_RECEIVED: usize = word!(naks_received);
pub(crate) const RETRANSMITS: usize = word!(retransmits);
pub(crate) const RETRANSMITTED_BYTES: usize = word!(retransmitted_bytes);
pub(crate) const RTT_NS: usize = word!(rtt_ns);
pub(crate) const SESSIONS: usize = word!(sessions);
pub(crate) const DROPS_TOTAL: usize = word!(drops_total);
pub(crate) const DROPS: usize = word!(drops);
pub(crate) const GAPS_DETECTED: usize = word!(gaps_detected);
pub(crate) const GAPS_REPAIRED: usize = word!(gaps_repaired);
pub(crate) const GAPS_UNRECOVERABLE: usize = word!(gaps_unrecoverable);
pub(crate) const LAST_GAP: usize = word!(last_gap_unix_ns);
pub(crate) const LAST_UNRECOVERABLE: usize = word!(last_unrecoverable_unix_ns);
pub(crate) const EVICTIONS: usize = word!(evictions);
pub(crate) const SUBSCRIBER_SLOTS: usize = word!(subscriber_slots_in_use);
pub(crate) const HEARTBEAT: usize = word!(heartbeat_unix_ns);
pub(crate) const DATAGRAMS_SENT: usize = word!(datagrams_sent);
pub(crate) const DATAGRAMS_RECEIVED: usize = word!(datagrams_received);

/// Offset of `handles_without_slot` in the header.
const HANDLES_WITHOUT_SLOT: usize = offset_of!(FileHeader, handles_without_slot);

/// Where the handles without a slot write: nobody reads it.
static NOWHERE: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

/// Unix time in ns.
pub(crate) fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

/// `at` as unix ns (0 for `None`), from the clocks read now.
pub(crate) fn instant_unix_ns(at: Option<Instant>, now: Instant, now_unix: u64) -> u64 {
    match at {
        None => 0,
        Some(t) if t <= now => now_unix.saturating_sub(nanos(now - t)),
        Some(t) => now_unix.saturating_add(nanos(t - now)),
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// The counters block of one handle's slot (or of nowhere): relaxed
/// stores only, by the one handle that owns it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Writer(&'static [AtomicU64; WORDS]);

impl Writer {
    /// A writer whose stores go nowhere.
    pub(crate) fn nowhere() -> Writer {
        Writer(&NOWHERE)
    }

    /// Stores counter `i`.
    #[inline(always)]
    pub(crate) fn set(self, i: usize, v: u64) {
        self.0[i].store(v.to_le(), Ordering::Relaxed);
    }

    /// Reads back counter `i` (the owner's own value).
    #[inline(always)]
    pub(crate) fn get(self, i: usize) -> u64 {
        u64::from_le(self.0[i].load(Ordering::Relaxed))
    }

    /// Adds one to counter `i` (a load and a store: only the owner writes).
    #[inline]
    pub(crate) fn bump(self, i: usize) {
        self.set(i, self.get(i).wrapping_add(1));
    }

    /// The data path: the handle's totals of messages and bytes.
    #[inline(always)]
    pub(crate) fn traffic(self, messages: u64, bytes: u64) {
        self.set(MESSAGES, messages);
        self.set(BYTES, bytes);
    }

    /// Stamps the time of this update.
    pub(crate) fn heartbeat(self) {
        self.set(HEARTBEAT, unix_ns());
    }
}

/// A handle's slot: its writer, and the slot freed on drop.
#[derive(Debug)]
pub(crate) struct StatsSlot {
    writer: Writer,
    /// The file and the slot index, when the handle got one.
    owner: Option<(&'static StatsFile, u32)>,
}

impl StatsSlot {
    /// A slot of the process's counters file for a handle of `kind` on
    /// `uri` with `driver`; a slot writing nowhere when statistics are off,
    /// unavailable, or every slot is taken.
    pub(crate) fn open(kind: u32, uri: &str, driver: &str) -> StatsSlot {
        match global() {
            Some(f) => f.open_slot(kind, uri, driver),
            None => StatsSlot::nowhere(),
        }
    }

    /// A slot writing nowhere.
    pub(crate) fn nowhere() -> StatsSlot {
        StatsSlot {
            writer: Writer::nowhere(),
            owner: None,
        }
    }

    /// The writer of this slot.
    pub(crate) fn writer(&self) -> Writer {
        self.writer
    }

    /// The slot index in the file, if the handle got one.
    #[cfg(test)]
    pub(crate) fn index(&self) -> Option<u32> {
        self.owner.map(|(_, i)| i)
    }
}

impl Drop for StatsSlot {
    fn drop(&mut self) {
        if let Some((file, index)) = self.owner.take() {
            file.close_slot(index);
        }
    }
}

/// This process's counters file, mapped.
#[derive(Debug)]
pub(crate) struct StatsFile {
    path: PathBuf,
    /// The process the file is for.
    pid: u32,
    words: &'static SharedWords,
    /// Which slots are taken.
    used: Mutex<Vec<bool>>,
}

/// The process's file, with the pid it was made for, once the first handle
/// asked for it (`None` inside: statistics off or unavailable).
static GLOBAL: Mutex<Option<(u32, Option<&'static StatsFile>)>> = Mutex::new(None);

/// The process's file: created at the first call, `None` when statistics
/// are off (`CONDUIT_STATS=0`) or the file cannot be created. A child made
/// by `fork` has another pid: its first handle makes its own file (the
/// parent's mapping stays, unused).
fn global() -> Option<&'static StatsFile> {
    let pid = std::process::id();
    let mut g = GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
    match *g {
        Some((p, file)) if p == pid => file,
        _ => {
            let file = if std::env::var_os("CONDUIT_STATS").is_some_and(|v| v == "0") {
                None
            } else {
                let dir = layout::stats_dir(&layout::default_shm_dir());
                StatsFile::create(&dir, pid, layout::DEFAULT_SLOT_COUNT)
                    .ok()
                    .map(|f| &*Box::leak(Box::new(f)))
            };
            *g = Some((pid, file));
            file
        }
    }
}

/// The path of this process's counters file, once a handle created it;
/// `None` before that, with `CONDUIT_STATS=0`, or when it could not be
/// created.
pub(crate) fn file_path() -> Option<&'static Path> {
    let g = GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
    match *g {
        Some((pid, Some(f))) if pid == std::process::id() => Some(f.path.as_path()),
        _ => None,
    }
}

/// The counters file of this process (`conduit-stats/<pid>.stats` under
/// `$CONDUIT_SHM_DIR` or `/dev/shm`), where every open handle publishes its
/// counters for `conduit-stat`; created by the first handle. `None` with
/// `CONDUIT_STATS=0` or when the file could not be created (statistics are
/// best-effort: opening a handle never fails for them). The layout and a
/// reader are in the `conduit-counters` crate.
///
/// ```
/// # fn main() -> Result<(), conduit::Error> {
/// let _publ = conduit::Publication::open(&format!("shm:doc-stats-{}", std::process::id()))?;
/// if let Some(path) = conduit::stats_file() {
///     assert!(path.ends_with(format!("{}.stats", std::process::id())));
/// }
/// # Ok(()) }
/// ```
pub fn stats_file() -> Option<&'static Path> {
    file_path()
}

/// The process name, from `/proc/self/comm`.
fn process_name() -> String {
    fs::read_to_string("/proc/self/comm")
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

/// Creates `dir` (mode 01777) if missing; refuses a symlink or a non-directory.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => return Err(io::Error::other("not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match fs::DirBuilder::new().mode(0o1777).create(dir) {
        // The umask cut the mode: every user's processes write here.
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o1777)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if fs::symlink_metadata(dir)?.is_dir() {
                Ok(())
            } else {
                Err(io::Error::other("not a directory"))
            }
        }
        Err(e) => Err(e),
    }
}

impl StatsFile {
    /// Creates `dir/<pid>.stats` with `slots` slots (through a temporary
    /// file renamed over it) and maps it.
    pub(crate) fn create(dir: &Path, pid: u32, slots: u32) -> io::Result<StatsFile> {
        ensure_dir(dir)?;
        let path = dir.join(layout::file_name(pid));
        let header = FileHeader::new(pid, slots, unix_ns(), &process_name());
        let len = layout::HEADER_SIZE as u64 + slots as u64 * layout::SLOT_SIZE as u64;
        let mut n = 0u32;
        let (tmp, mut file) = loop {
            let tmp = dir.join(format!(".{pid}.{n}.stats.tmp"));
            match fs::File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)
            {
                Ok(f) => break (tmp, f),
                // A leftover of an earlier process with our pid.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 8 => {
                    let _ = fs::remove_file(&tmp);
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let built: io::Result<&'static SharedWords> = (|| {
            file.set_permissions(fs::Permissions::from_mode(0o644))?;
            file.write_all(header.as_bytes())?;
            file.set_len(len)?;
            let words = SharedWords::map_leaked(&file, len as usize)?;
            fs::rename(&tmp, &path)?;
            Ok(words)
        })();
        let words = built.inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        Ok(StatsFile {
            path,
            pid,
            words,
            used: Mutex::new(vec![false; slots as usize]),
        })
    }

    /// The path of the file.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn slot_offset(index: u32) -> usize {
        layout::HEADER_SIZE as usize + index as usize * layout::SLOT_SIZE as usize
    }

    fn u32_at(&'static self, offset: usize) -> &'static AtomicU32 {
        // The file's layout is ours: every offset asked for is in it.
        self.words.u32_at(offset).expect("counters file layout")
    }

    /// Hands out a free slot, filled for a handle (see the module docs).
    pub(crate) fn open_slot(&'static self, kind: u32, uri: &str, driver: &str) -> StatsSlot {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let Some(index) = used.iter().position(|u| !u) else {
            // Written only here, under the lock.
            let w = self.u32_at(HANDLES_WITHOUT_SLOT);
            let n = u32::from_le(w.load(Ordering::Relaxed)).saturating_add(1);
            w.store(n.to_le(), Ordering::Relaxed);
            return StatsSlot::nowhere();
        };
        used[index] = true;
        let index = index as u32;
        let at = Self::slot_offset(index);
        let field = |o: usize| self.u32_at(at + o);
        let generation = field(offset_of!(Slot, generation));
        let next = u32::from_le(generation.load(Ordering::Relaxed)).wrapping_add(1);
        generation.store(next.to_le(), Ordering::Relaxed);
        field(offset_of!(Slot, kind)).store(kind.to_le(), Ordering::Relaxed);
        field(offset_of!(Slot, ring_slot)).store(layout::NO_RING_SLOT.to_le(), Ordering::Relaxed);
        let now = unix_ns();
        let open_time = self
            .words
            .u64_at(at + offset_of!(Slot, open_time_unix_ns))
            .expect("counters file layout");
        open_time.store(now.to_le(), Ordering::Relaxed);
        let mut s = [0u8; layout::URI_LEN];
        layout::encode_str(&mut s, uri);
        self.words.store_bytes(at + offset_of!(Slot, uri), &s);
        let mut d = [0u8; layout::DRIVER_LEN];
        layout::encode_str(&mut d, driver);
        self.words.store_bytes(at + offset_of!(Slot, driver), &d);
        let block = self
            .words
            .u64s_at::<WORDS>(at + offset_of!(Slot, counters))
            .expect("counters file layout");
        for w in block {
            w.store(0, Ordering::Relaxed);
        }
        let writer = Writer(block);
        writer.set(HEARTBEAT, now);
        // Release, last: a reader that sees the slot in use sees what was
        // written above (see the module docs: the reader's copy is a plain
        // read(2), no Acquire in Rust).
        field(offset_of!(Slot, state)).store(layout::STATE_IN_USE.to_le(), Ordering::Release);
        StatsSlot {
            writer,
            owner: Some((self, index)),
        }
    }

    /// Frees slot `index`: its state first. A handle dropped in a child
    /// made by `fork` leaves its parent's slot alone.
    fn close_slot(&'static self, index: u32) {
        if std::process::id() != self.pid {
            return;
        }
        let state = self.u32_at(Self::slot_offset(index) + offset_of!(Slot, state));
        state.store(layout::STATE_FREE.to_le(), Ordering::Release);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = used.get_mut(index as usize) {
            *u = false;
        }
    }
}

#[cfg(test)]
mod tests;
