//! `conduit-stat rings`: the ring files of the shm directory, read from a
//! copy of their first bytes (header, publisher block, subscriber slots),
//! checked with the ring crate's own header validation; everything in them
//! is untrusted. Liveness comes from the rings' OFD lock files: asked of the
//! kernel with `F_OFD_GETLK` where the lock file can be opened, read from
//! `/proc/locks` where it cannot (a user without write access to the ring).

use crate::procs::{FileId, Locks};
use conduit_ringbuf::layout::{self, HEADER_LEN, PUBLISHER_BLOCK};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout};

/// Most directory entries looked at (a hostile directory cannot make us
/// loop for ever or allocate without bound).
const MAX_ENTRIES: usize = 100_000;

/// Lock byte of the publisher in a ring's lock file (see the ring crate's
/// `liveness.rs`).
const PUBLISHER_LOCK: u64 = 0;
/// Lock byte of subscriber slot 0 (slot `i` uses `SLOT_LOCK_BASE + i`).
const SLOT_LOCK_BASE: u64 = 4096;

/// The publisher block's first line at [`PUBLISHER_BLOCK`]: `closed`,
/// `fence_mode`, `tail` (stored at close by a single writer).
#[repr(C)]
#[derive(FromBytes, KnownLayout, Immutable)]
struct PublisherBlock {
    closed: U32,
    fence_mode: U32,
    tail: U64,
}
const _: () = assert!(core::mem::size_of::<PublisherBlock>() == 16);

/// A multi-writer ring's claim words, at [`layout::CLAIM_WORDS_OFFSET`] in
/// the publisher block: `claim_lock` and `claim_tail` (the shared tail: the
/// end of the last claim).
#[repr(C)]
#[derive(FromBytes, KnownLayout, Immutable)]
struct ClaimWords {
    claim_lock: U64,
    claim_tail: U64,
}
const _: () = assert!(core::mem::size_of::<ClaimWords>() == 16);

/// A subscriber slot: state, pid, position, generation, waiting, start.
#[repr(C)]
#[derive(FromBytes, KnownLayout, Immutable)]
struct SlotBlock {
    state: U32,
    pid: U32,
    position: U64,
    generation: U64,
    waiting: U32,
    start: U32,
}
const _: () = assert!(core::mem::size_of::<SlotBlock>() == 32);

/// One ring file.
#[derive(Debug, Serialize)]
pub struct RingReport {
    /// File name (the `shm:` channel name).
    pub name: String,
    /// Path of the file.
    pub path: PathBuf,
    /// Data capacity in bytes.
    pub capacity: u64,
    /// Largest payload.
    pub max_message_len: u64,
    /// Subscriber slots.
    pub max_subscribers: u32,
    /// Publisher slots (1: single writer).
    pub max_publishers: u32,
    /// Pid that created the file.
    pub creator_pid: u32,
    /// `block` or `evict`.
    pub slow_policy: &'static str,
    /// Bytes kept for `from=history` joiners.
    pub history: u64,
    /// The tail word of the publisher block. A single-writer publisher
    /// keeps its tail in its own memory and stores it here when it closes.
    pub tail_word: u64,
    /// The live publisher's position from its counters file, if any.
    pub publisher_position: Option<u64>,
    /// The publisher's position: for a single-writer ring, found by
    /// following the committed records from the furthest position known
    /// (tail word, counters, subscriber slots); for several writers, the
    /// shared claim tail.
    pub position: u64,
    /// The publisher closed the ring cleanly.
    pub closed: bool,
    /// Publisher liveness: `Some(true)` alive, `Some(false)` dead, `None`
    /// unknown (lock file not readable and no `/proc/locks`).
    pub publisher_alive: Option<bool>,
    /// The file of a dead (or cleanly closed) publisher: `--clean` removes it.
    pub stale: bool,
    /// The subscriber slots in use.
    pub subscribers: Vec<SlotReport>,
    /// The lock file next to it.
    pub lock_file: PathBuf,
}

/// One subscriber slot in use.
#[derive(Debug, Serialize)]
pub struct SlotReport {
    /// Slot index.
    pub slot: u32,
    /// `joining`, `active`, `evicted` or `unknown(N)`.
    pub state: String,
    /// Pid of the subscriber.
    pub pid: u32,
    /// Its read position.
    pub position: u64,
    /// Bytes it has still to read: the ring's `position` less its own.
    pub lag_bytes: u64,
    /// Liveness of its slot lock (`None`: unknown).
    pub alive: Option<bool>,
}

/// A file in the directory that is not a usable ring.
#[derive(Debug, Serialize)]
pub struct Skipped {
    /// Path of the file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

/// Everything `rings` found.
#[derive(Debug, Default, Serialize)]
pub struct RingsReport {
    /// The rings.
    pub rings: Vec<RingReport>,
    /// Lock files whose ring is gone or replaced, and that nobody holds.
    pub orphan_lock_files: Vec<PathBuf>,
    /// Files that look like rings but could not be read.
    pub skipped: Vec<Skipped>,
}

/// Most records [`walk_tail`] steps over.
const MAX_WALK: u32 = 1 << 20;

/// Finds a single-writer ring's tail (which its publisher keeps in its own
/// memory) by following committed records from `from`, a record boundary
/// at or before the tail: the commit word of the record at `p` reads
/// `p + 1` once it is complete (see the ring crate's `layout` docs). Stops
/// at the first word that does not, at an implausible length, after one
/// lap, or after [`MAX_WALK`] records; the file is read, never trusted.
fn walk_tail(file: &std::fs::File, g: &layout::Geometry, from: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let mask = g.capacity - 1;
    let mut p = from;
    let mut head = [0u8; layout::RECORD_HEADER_LEN];
    for _ in 0..MAX_WALK {
        if p >= layout::MAX_POSITION || p - from >= g.capacity {
            break;
        }
        let off = p & mask;
        if file.read_exact_at(&mut head, g.data_offset + off).is_err() {
            break;
        }
        let commit = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
        if commit != p + 1 {
            break;
        }
        let len = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default());
        let step = if len == layout::PADDING_LEN {
            g.capacity - off
        } else if u64::from(len) <= g.max_message_len {
            layout::record_len(u64::from(len))
        } else {
            break;
        };
        p += step;
    }
    p
}

/// Reads at most `limit` bytes from the start of `path`.
fn read_prefix(path: &Path, limit: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let f = crate::procs::open_regular(path)?;
    let len = f.metadata()?.len();
    let mut buf = Vec::with_capacity(limit.min(len) as usize);
    f.take(limit).read_to_end(&mut buf)?;
    Ok((buf, len))
}

/// Reads one ring file. `Ok(None)`: not a ring at all (another file).
fn read_ring(
    path: &Path,
    name: &str,
    locks: &Locks,
    positions: &HashMap<String, u64>,
) -> Result<Option<RingReport>, String> {
    let (head, len) = read_prefix(path, HEADER_LEN as u64).map_err(|e| e.to_string())?;
    if !head.starts_with(&layout::MAGIC) {
        // Another program's file (the shm directory is shared).
        return Ok(None);
    }
    let (h, g) = layout::validate(&head, len).map_err(|e| format!("{e:?}"))?;
    // The header is valid: the slots end below the data offset, which
    // validate() bounded (at most 384 + 128 x (1024 + 64), rounded up).
    let (bytes, _) = read_prefix(path, g.data_offset).map_err(|e| e.to_string())?;
    if (bytes.len() as u64) < g.data_offset {
        return Err("truncated while reading".into());
    }
    let pb = PublisherBlock::ref_from_prefix(&bytes[PUBLISHER_BLOCK..])
        .map_err(|_| "short publisher block")?
        .0;
    let tail_word = pb.tail.get();
    let publisher_position = positions.get(name).copied();
    let slot_max = (0..g.max_subscribers)
        .filter_map(|i| {
            let s = SlotBlock::ref_from_prefix(bytes.get(layout::slot_offset(i)..)?)
                .ok()?
                .0;
            (s.state.get() == layout::SLOT_ACTIVE).then(|| s.position.get())
        })
        .max()
        .unwrap_or(0);
    let known = tail_word.max(publisher_position.unwrap_or(0)).max(slot_max);
    let tail = if g.max_publishers > 1 {
        let cw =
            ClaimWords::ref_from_prefix(&bytes[PUBLISHER_BLOCK + layout::CLAIM_WORDS_OFFSET..])
                .map_err(|_| "short claim words")?
                .0;
        let _ = cw.claim_lock.get();
        known.max(cw.claim_tail.get())
    } else {
        match crate::procs::open_regular(path) {
            Ok(f) => walk_tail(&f, &g, known),
            Err(_) => known,
        }
    };
    let lock_file = path.with_file_name(format!(".{name}.{:016x}.lock", h.incarnation.get()));
    let lock_id = FileId::of(&lock_file);
    // Asked of the kernel directly where the lock file can be opened (its
    // mode gives it to the ring's writers only); `/proc/locks` otherwise,
    // which may miss a lock while others come and go during the read.
    let lock_fd = crate::procs::open_regular(&lock_file).ok();
    let probe = |at: u64| -> Option<bool> {
        if let Some(f) = &lock_fd {
            if let Ok(held) = conduit_ringbuf::lock_byte_held(f, at) {
                return Some(held);
            }
        }
        if !locks.available {
            return None;
        }
        Some(lock_id.is_some_and(|id| locks.is_locked(id, at)))
    };
    let mut subscribers = Vec::new();
    for i in 0..g.max_subscribers {
        let off = layout::slot_offset(i);
        let Some(s) = bytes
            .get(off..)
            .and_then(|b| SlotBlock::ref_from_prefix(b).ok())
            .map(|(s, _)| s)
        else {
            break;
        };
        let state = s.state.get();
        if state == layout::SLOT_FREE {
            continue;
        }
        let state_name = match state {
            layout::SLOT_JOINING => "joining".to_owned(),
            layout::SLOT_ACTIVE => "active".to_owned(),
            layout::SLOT_EVICTED => "evicted".to_owned(),
            n => format!("unknown({n})"),
        };
        let _ = (s.generation.get(), s.waiting.get(), s.start.get());
        subscribers.push(SlotReport {
            slot: i,
            state: state_name,
            pid: s.pid.get(),
            position: s.position.get(),
            lag_bytes: tail.saturating_sub(s.position.get()),
            alive: probe(SLOT_LOCK_BASE + u64::from(i)),
        });
    }
    let publisher_alive = probe(PUBLISHER_LOCK);
    let closed = pb.closed.get() != 0;
    let _ = pb.fence_mode.get();
    Ok(Some(RingReport {
        name: name.to_owned(),
        path: path.to_path_buf(),
        capacity: g.capacity,
        max_message_len: g.max_message_len,
        max_subscribers: g.max_subscribers,
        max_publishers: g.max_publishers,
        creator_pid: h.creator_pid.get(),
        slow_policy: if h.slow_policy.get() == layout::SLOW_EVICT {
            "evict"
        } else {
            "block"
        },
        history: h.history.get(),
        tail_word,
        publisher_position,
        position: tail,
        closed,
        publisher_alive,
        stale: publisher_alive == Some(false),
        subscribers,
        lock_file,
    }))
}

/// Reads the ring `name` of `dir` (`None` if it is missing or unreadable).
pub fn read_one(
    dir: &Path,
    name: &str,
    locks: &Locks,
    positions: &HashMap<String, u64>,
) -> Option<RingReport> {
    if conduit_ringbuf::validate_name(name).is_err() {
        return None;
    }
    read_ring(&dir.join(name), name, locks, positions)
        .ok()
        .flatten()
}

/// Scans `dir` for ring files and lock files; `positions` holds the live
/// publishers' positions by ring name (from the counters files).
pub fn scan(dir: &Path, locks: &Locks, positions: &HashMap<String, u64>) -> RingsReport {
    let mut report = RingsReport::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return report;
    };
    let mut lock_files = Vec::new();
    for entry in entries.take(MAX_ENTRIES).flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if !ft.is_file() {
            continue;
        }
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') {
            if name.ends_with(".lock") {
                lock_files.push(path);
            }
            continue;
        }
        match read_ring(&path, &name, locks, positions) {
            Ok(Some(r)) => report.rings.push(r),
            Ok(None) => {}
            Err(reason) => report.skipped.push(Skipped { path, reason }),
        }
    }
    report.rings.sort_by(|a, b| a.name.cmp(&b.name));
    for lf in lock_files {
        let used = report.rings.iter().any(|r| r.lock_file == lf);
        let held = FileId::of(&lf).is_some_and(|id| locks.any(id));
        if !used && !held && locks.available {
            report.orphan_lock_files.push(lf);
        }
    }
    report.orphan_lock_files.sort();
    report
}

/// Removes the stale rings (and their lock files) and the orphan lock
/// files of `report`, re-checking each ring just before; returns the paths
/// removed, and prints a warning for each that could not be.
pub fn clean(dir: &Path, report: &RingsReport) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for r in report.rings.iter().filter(|r| r.stale) {
        // Re-read: a publisher may have replaced the file meanwhile.
        let locks = Locks::read();
        match read_ring(&r.path, &r.name, &locks, &HashMap::new()) {
            Ok(Some(now)) if now.stale && now.lock_file == r.lock_file => {}
            _ => continue,
        }
        for p in [&r.path, &r.lock_file] {
            match std::fs::remove_file(p) {
                Ok(()) => removed.push(p.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("conduit-stat: warning: cannot remove {}: {e}", p.display()),
            }
        }
    }
    for lf in &report.orphan_lock_files {
        debug_assert!(lf.starts_with(dir));
        match std::fs::remove_file(lf) {
            Ok(()) => removed.push(lf.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("conduit-stat: warning: cannot remove {}: {e}", lf.display()),
        }
    }
    removed
}

/// Prints the report as text.
pub fn print(report: &RingsReport) {
    if report.rings.is_empty() {
        println!("no rings");
    }
    let alive = |a: Option<bool>| match a {
        Some(true) => "alive",
        Some(false) => "dead",
        None => "?",
    };
    for r in &report.rings {
        println!(
            "{}  capacity {}  max_message_len {}  slots {}  publishers {}  slow={}  history {}  \
             creator pid {}  position {}  publisher {}{}{}",
            r.name,
            crate::fmt::bytes(r.capacity),
            r.max_message_len,
            r.max_subscribers,
            r.max_publishers,
            r.slow_policy,
            r.history,
            r.creator_pid,
            r.position,
            alive(r.publisher_alive),
            if r.closed { " (closed)" } else { "" },
            if r.stale { "  STALE" } else { "" },
        );
        for s in &r.subscribers {
            println!(
                "  slot {:>4}  {:<8} pid {:>7}  position {:>14}  lag {:>10}  {}",
                s.slot,
                s.state,
                s.pid,
                s.position,
                crate::fmt::bytes(s.lag_bytes),
                alive(s.alive)
            );
        }
    }
    for lf in &report.orphan_lock_files {
        println!("orphan lock file {}", lf.display());
    }
    for s in &report.skipped {
        eprintln!(
            "conduit-stat: warning: skipped {}: {}",
            s.path.display(),
            s.reason
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_ringbuf::{Publisher, RingConfig, Subscriber};

    fn cfg(dir: &Path) -> RingConfig {
        RingConfig {
            capacity: 1 << 16,
            max_message_len: 1024,
            max_subscribers: 4,
            dir: Some(dir.to_path_buf()),
            ..RingConfig::default()
        }
    }

    #[test]
    fn reads_a_live_ring_and_its_subscriber() {
        let tmp = conduit_test_util::TempDir::on_tmpfs("stat-rings-live");
        let mut p = Publisher::create("r1", &cfg(tmp.path())).unwrap();
        let mut s = Subscriber::open("r1", Some(tmp.path())).unwrap();
        // Join, then publish 3 records the subscriber has not read.
        while p.subscriber_count() == 0 {
            let _ = s.poll(|_, _| {}, 1);
        }
        for _ in 0..3 {
            p.offer(1, &[0u8; 100]).unwrap();
        }
        std::fs::write(tmp.path().join("not-a-ring"), b"hello world, this is text").unwrap();
        let rep = scan(tmp.path(), &Locks::read(), &HashMap::new());
        assert_eq!(rep.rings.len(), 1, "{rep:?}");
        let r = &rep.rings[0];
        assert_eq!(r.name, "r1");
        assert_eq!(r.capacity, 1 << 16);
        assert!(!r.stale);
        assert_eq!(r.publisher_alive, Some(true));
        assert_eq!(r.subscribers.len(), 1);
        assert_eq!(r.subscribers[0].alive, Some(true));
        assert_eq!(r.position, p.position(), "found by walking the records");
        assert_eq!(r.subscribers[0].lag_bytes, 3 * 128, "{r:?}");
        assert!(rep.skipped.is_empty(), "{rep:?}");
        drop(s);
        drop(p);
    }

    #[test]
    fn the_tail_is_found_across_laps_and_padding() {
        let tmp = conduit_test_util::TempDir::on_tmpfs("stat-rings-walk");
        let config = RingConfig {
            capacity: 4096,
            max_message_len: 600,
            ..cfg(tmp.path())
        };
        let mut p = Publisher::create("w", &config).unwrap();
        let mut s = Subscriber::open("w", Some(tmp.path())).unwrap();
        while p.subscriber_count() == 0 {
            let _ = s.poll(|_, _| {}, 1);
        }
        // Odd sizes over several laps make padding records; the subscriber
        // stays a few records behind.
        for i in 0..200usize {
            while p.offer(1, &vec![1u8; (i * 37) % 600]).is_err() {
                s.poll(|_, _| {}, 1).unwrap();
            }
            if i % 3 == 0 {
                s.poll(|_, _| {}, 1).unwrap();
            }
        }
        let rep = scan(tmp.path(), &Locks::read(), &HashMap::new());
        let r = &rep.rings[0];
        assert_eq!(r.position, p.position());
        assert_eq!(r.subscribers[0].position, s.position());
        assert_eq!(r.subscribers[0].lag_bytes, p.position() - s.position());
        assert!(p.position() > 3 * 4096);
    }

    #[test]
    fn a_multi_writer_ring_has_its_shared_tail() {
        let tmp = conduit_test_util::TempDir::on_tmpfs("stat-rings-mpsc");
        let config = RingConfig {
            max_publishers: 2,
            ..cfg(tmp.path())
        };
        let mut a = Publisher::create("m", &config).unwrap();
        let mut b = Publisher::create("m", &config).unwrap();
        let mut s = Subscriber::open("m", Some(tmp.path())).unwrap();
        while a.subscriber_count() == 0 {
            let _ = s.poll(|_, _| {}, 1);
        }
        a.offer(1, &[0u8; 100]).unwrap();
        b.offer(1, &[0u8; 10]).unwrap();
        let rep = scan(tmp.path(), &Locks::read(), &HashMap::new());
        let r = &rep.rings[0];
        assert_eq!(r.max_publishers, 2);
        assert_eq!(r.position, a.position().max(b.position()));
        assert_eq!(r.subscribers[0].lag_bytes, 128 + 32, "{r:?}");
        assert_eq!(r.publisher_alive, Some(true));
    }

    #[test]
    fn truncated_and_garbage_rings_are_skipped_not_fatal() {
        let tmp = conduit_test_util::TempDir::on_tmpfs("stat-rings-bad");
        let mut bytes = layout::MAGIC.to_vec();
        bytes.extend_from_slice(&[0xff; 200]);
        std::fs::write(tmp.path().join("bad"), &bytes).unwrap();
        std::fs::write(
            tmp.path().join("short"),
            [&layout::MAGIC[..], &[0u8; 10]].concat(),
        )
        .unwrap();
        std::fs::write(tmp.path().join("tiny"), b"CN").unwrap();
        std::fs::write(tmp.path().join(".x.0000000000000000.lock"), b"").unwrap();
        let rep = scan(tmp.path(), &Locks::read(), &HashMap::new());
        assert!(rep.rings.is_empty());
        assert_eq!(rep.skipped.len(), 2, "{rep:?}");
        assert_eq!(rep.orphan_lock_files.len(), 1);
        let removed = clean(tmp.path(), &rep);
        assert_eq!(removed.len(), 1);
    }
}
