//! The hardware baselines for shared memory, between two processes:
//!
//! - `limit`: one cache line bounced (ping stores `2*seq+1` in a word, pong
//!   answers `2*seq+2` in the same word) — the physical limit.
//! - `limit-2line`: ping writes one line and pong another — what any design
//!   with a separate channel per direction can at best do.
//! - `limit-ring`: like `limit-2line`, but message `seq` uses line `seq mod
//!   16384` of a 1 MiB area per direction, as a ring moves through memory —
//!   the hardware cost of a ring with conduit's default capacity, with no
//!   software in it.
//!
//! The region is a file under `/dev/shm` (or `CONDUIT_SHM_DIR`) mapped by both
//! processes. Only the words move; `--size` is ignored (recorded as given).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ping_with_peer, unique_name, PeerArgs};
use crate::error::{BenchError, Result};
use crate::latency::{run_pong, seq_of, LatencyConfig, PingEnd, PongEnd};
use crate::report::LatencyResult;

/// Lines per direction of `limit-ring` (1 MiB, the default ring capacity).
const RING_LINES: usize = 16384;
/// Byte offset of ping's lines; pong's follow them.
const RING_A: usize = 4096;
const RING_B: usize = RING_A + RING_LINES * 64;
/// Size of the shared region.
const LEN: usize = RING_B + RING_LINES * 64;

/// The shared region mapped into this process; unmapped on drop.
struct SharedPage {
    ptr: *mut libc::c_void,
}

impl SharedPage {
    fn map(path: &Path, create: bool) -> Result<SharedPage> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .mode(0o600)
            .open(path)
            .map_err(|e| BenchError(format!("cannot open {}: {e}", path.display())))?;
        if create {
            file.set_len(LEN as u64)?;
        } else if file.metadata()?.len() < LEN as u64 {
            return Err(BenchError(format!(
                "{} is shorter than {LEN} bytes",
                path.display()
            )));
        }
        // SAFETY: mapping a fresh region (no address hint) of a file at least
        // LEN bytes long; the kernel picks the address, nothing is aliased yet.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(BenchError(format!(
                "mmap {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
        Ok(SharedPage { ptr })
    }

    /// The word at byte `off`.
    fn word(&self, off: usize) -> &AtomicU64 {
        assert!(
            off + 8 <= LEN && off % 8 == 0,
            "word {off} outside the region"
        );
        // SAFETY: the mapping is LEN bytes, page aligned, live until `self`
        // drops; off + 8 ≤ LEN and off is 8-aligned (asserted); the other
        // process accesses the word only atomically; any bits are valid.
        unsafe { &*self.ptr.cast::<u8>().add(off).cast::<AtomicU64>() }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from a successful mmap of LEN bytes and no
        // reference into it outlives `self`.
        unsafe {
            libc::munmap(self.ptr, LEN);
        }
    }
}

/// Removes the page's file when the run ends, however it ends.
struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Cache lines a test bounces.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lines {
    /// `limit`: ping and pong write the same line.
    One,
    /// `limit-2line`: ping writes one line, pong another (128 bytes apart, so
    /// not even a pair for the adjacent-line prefetcher).
    Two,
    /// `limit-ring`: a fresh line per message in each direction.
    Ring,
}

impl Lines {
    /// The channel's name: `limit`, `limit-2line`, `limit-ring`.
    pub fn name(self) -> &'static str {
        match self {
            Lines::One => "limit",
            Lines::Two => "limit-2line",
            Lines::Ring => "limit-ring",
        }
    }

    /// Offset of the word ping writes for message `seq`.
    fn out(self, seq: u64) -> usize {
        match self {
            Lines::One | Lines::Two => 0,
            Lines::Ring => RING_A + (seq as usize % RING_LINES) * 64,
        }
    }

    /// Offset of the word pong answers message `seq` on.
    fn back(self, seq: u64) -> usize {
        match self {
            Lines::One => 0,
            Lines::Two => 128,
            Lines::Ring => RING_B + (seq as usize % RING_LINES) * 64,
        }
    }
}

struct Ping {
    page: SharedPage,
    lines: Lines,
    size: usize,
    seq: u64,
    expect: u64,
}

impl PingEnd for Ping {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let seq = seq_of(msg, self.size)?;
        self.seq = seq;
        self.expect = 2 * seq + 2;
        // Release: pairs with pong's Acquire load in `try_echo`.
        self.page
            .word(self.lines.out(seq))
            .store(2 * seq + 1, Ordering::Release);
        Ok(())
    }

    fn try_recv(&mut self) -> Result<Option<u64>> {
        // Acquire: pairs with pong's Release store in `try_echo`.
        let v = self
            .page
            .word(self.lines.back(self.seq))
            .load(Ordering::Acquire);
        if v == self.expect {
            // Consumed: the word keeps its value, so forget the expectation
            // (pong never stores u64::MAX).
            self.expect = u64::MAX;
            Ok(Some((v - 2) / 2))
        } else {
            Ok(None)
        }
    }
}

struct Pong {
    page: SharedPage,
    lines: Lines,
    /// The message expected next.
    next: u64,
}

impl PongEnd for Pong {
    fn try_echo(&mut self) -> Result<Option<u64>> {
        let seq = self.next;
        // Acquire: pairs with ping's Release store in `send`.
        let v = self.page.word(self.lines.out(seq)).load(Ordering::Acquire);
        if v == 2 * seq + 1 {
            self.next += 1;
            // Release: pairs with ping's Acquire load in `try_recv`.
            self.page
                .word(self.lines.back(seq))
                .store(v + 1, Ordering::Release);
            Ok(Some(seq))
        } else if v % 2 == 1 && v > 2 * seq + 1 {
            // A message was skipped: report it as what it is.
            self.next = v / 2 + 1;
            self.page
                .word(self.lines.back(v / 2))
                .store(v + 1, Ordering::Release);
            Ok(Some(v / 2))
        } else {
            Ok(None)
        }
    }
}

fn shm_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CONDUIT_SHM_DIR") {
        return PathBuf::from(d);
    }
    let dev_shm = PathBuf::from("/dev/shm");
    if dev_shm.is_dir() {
        dev_shm
    } else {
        std::env::temp_dir()
    }
}

/// Runs the `limit`, `limit-2line` or `limit-ring` latency test.
///
/// # Errors
/// The shared page cannot be created or mapped, or the run fails.
pub fn latency(cfg: &LatencyConfig, lines: Lines) -> Result<LatencyResult> {
    let path = shm_dir().join(unique_name("limit"));
    let page = SharedPage::map(&path, true)?;
    let unlink = Unlink(path.clone());
    let param = path
        .to_str()
        .ok_or_else(|| BenchError::msg("shared page path is not UTF-8"))?
        .to_string();
    ping_with_peer(lines.name(), cfg, &param, move |_| {
        // Both sides have the page mapped: the name is no longer needed, and
        // nothing is left behind even if this process is killed.
        drop(unlink);
        Ok(Ping {
            page,
            lines,
            size: cfg.size,
            seq: 0,
            expect: u64::MAX,
        })
    })
}

/// The pong side of the hardware baselines.
///
/// # Errors
/// The page cannot be mapped or the run fails.
pub fn pong(args: &PeerArgs, lines: Lines, ready: impl FnOnce(&str)) -> Result<()> {
    let page = SharedPage::map(Path::new(&args.param), false)?;
    let mut pong = Pong {
        page,
        lines,
        next: 0,
    };
    ready("");
    run_pong(&mut pong, args.count)
}
