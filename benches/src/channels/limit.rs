//! `limit`: two processes bouncing one cache line on a shared page — the
//! physical limit for any shared-memory channel on this machine.
//!
//! The page is a file under `/dev/shm` (or `CONDUIT_SHM_DIR`), mapped by both
//! processes. Ping stores `2*seq+1` in the first word of the page, pong answers
//! `2*seq+2`. Only this one word moves; `--size` is ignored (recorded as given).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ping_with_peer, unique_name, PeerArgs};
use crate::error::{BenchError, Result};
use crate::latency::{run_pong, seq_of, LatencyConfig, PingEnd, PongEnd};
use crate::report::LatencyResult;

const PAGE: usize = 4096;

/// One shared page mapped into this process; unmapped on drop.
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
            file.set_len(PAGE as u64)?;
        } else if file.metadata()?.len() < PAGE as u64 {
            return Err(BenchError(format!(
                "{} is shorter than a page",
                path.display()
            )));
        }
        // SAFETY: mapping a fresh region (no address hint) of a file at least
        // PAGE bytes long; the kernel picks the address, nothing is aliased yet.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
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

    /// The word both processes bounce.
    fn word(&self) -> &AtomicU64 {
        // SAFETY: `ptr` is a live, page-aligned (so 8-aligned) mapping of PAGE
        // bytes, valid until `self` drops; the borrow cannot outlive `self`.
        // Other processes access the word only atomically.
        unsafe { &*self.ptr.cast::<AtomicU64>() }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from a successful mmap of PAGE bytes and no
        // reference into it outlives `self`.
        unsafe {
            libc::munmap(self.ptr, PAGE);
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

struct Ping {
    page: SharedPage,
    size: usize,
    expect: u64,
}

impl PingEnd for Ping {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let seq = seq_of(msg, self.size)?;
        self.expect = 2 * seq + 2;
        // Release: pairs with pong's Acquire load in `try_echo`.
        self.page.word().store(2 * seq + 1, Ordering::Release);
        Ok(())
    }

    fn try_recv(&mut self) -> Result<Option<u64>> {
        // Acquire: pairs with pong's Release store in `try_echo`.
        let v = self.page.word().load(Ordering::Acquire);
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
}

impl PongEnd for Pong {
    fn try_echo(&mut self) -> Result<Option<u64>> {
        // Acquire: pairs with ping's Release store in `send`.
        let v = self.page.word().load(Ordering::Acquire);
        if v % 2 == 1 {
            // Release: pairs with ping's Acquire load in `try_recv`.
            self.page.word().store(v + 1, Ordering::Release);
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

/// Runs the `limit` latency test.
///
/// # Errors
/// The shared page cannot be created or mapped, or the run fails.
pub fn latency(cfg: &LatencyConfig) -> Result<LatencyResult> {
    let path = shm_dir().join(unique_name("limit"));
    let page = SharedPage::map(&path, true)?;
    let unlink = Unlink(path.clone());
    let param = path
        .to_str()
        .ok_or_else(|| BenchError::msg("shared page path is not UTF-8"))?
        .to_string();
    ping_with_peer("limit", cfg, &param, move |_| {
        // Both sides have the page mapped: the name is no longer needed, and
        // nothing is left behind even if this process is killed.
        drop(unlink);
        Ok(Ping {
            page,
            size: cfg.size,
            expect: u64::MAX,
        })
    })
}

/// The pong side of `limit`.
///
/// # Errors
/// The page cannot be mapped or the run fails.
pub fn pong(args: &PeerArgs, ready: impl FnOnce(&str)) -> Result<()> {
    let page = SharedPage::map(Path::new(&args.param), false)?;
    let mut pong = Pong { page };
    ready("");
    run_pong(&mut pong, args.count)
}
