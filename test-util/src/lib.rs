//! Helpers shared by conduit's tests and benchmarks, so that each lives in
//! one place:
//!
//! - [`watchdog`]: turns a hang into a failure (never a timing assertion);
//! - [`root_or_skip`], [`uring_or_skip`], [`uring_or_skip_outside_ci`]: the
//!   skip rules for tests that need root or io_uring;
//! - [`free_udp_port`], [`free_udp_ports`]: ephemeral loopback ports;
//! - [`TempDir`]: a scratch directory removed on drop;
//! - [`write_key_file`]: a private (mode 0600) key file;
//! - [`LineChild`], [`wait_output`]: helper processes that report line by
//!   line, and waiting for a child under a deadline.
//!
//! Every crate of the workspace can take it as a dev-dependency; it depends
//! on none of them (the io_uring check uses the `io-uring` crate directly).
#![deny(missing_docs)]

mod child;
pub use child::{wait_output, LineChild};

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// True when running in CI (`CI=true`), where a missing capability is a
/// failure, not a skip.
///
/// ```
/// let strict = conduit_test_util::in_ci();
/// # let _ = strict;
/// ```
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| v == "true")
}

/// True when running as root; otherwise says why `test` is skipped and
/// returns false (a failure under `CI=true`, where the tests run as root).
///
/// # Panics
/// Not root and `CI=true`.
///
/// ```no_run
/// if !conduit_test_util::root_or_skip("mounts_a_tmpfs") {
///     return;
/// }
/// ```
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(!in_ci(), "{test} needs root under CI");
    println!("SKIPPED {test}: needs root (CI=true makes this a failure)");
    false
}

/// User and system CPU time of this process (all threads) so far, in
/// microseconds, from `getrusage(RUSAGE_SELF)`; `(0, 0)` if it fails.
///
/// ```
/// let (user, sys) = conduit_test_util::process_cpu_us();
/// assert!(user + sys < u64::MAX);
/// ```
pub fn process_cpu_us() -> (u64, u64) {
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct;
    // `getrusage` writes one into it and reads nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage` for the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0, 0);
    }
    let us = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
    };
    (us(ru.ru_utime), us(ru.ru_stime))
}

/// Whether io_uring can be set up here: `Ok` when the kernel (and any
/// seccomp filter) lets this process create a ring of 8 entries, else the
/// error that refused it.
///
/// # Errors
/// io_uring is unavailable (old kernel, `io_uring_disabled`, seccomp,
/// memlock limit).
///
/// ```
/// match conduit_test_util::io_uring_check() {
///     Ok(()) => println!("io_uring works here"),
///     Err(e) => println!("no io_uring: {e}"),
/// }
/// ```
pub fn io_uring_check() -> std::io::Result<()> {
    io_uring::IoUring::new(8).map(drop)
}

/// True when io_uring works here; otherwise prints
/// `SKIP: io_uring unavailable here: {error}` and returns false, also under
/// `CI=true` (for tests whose CI may run where io_uring is filtered out).
///
/// ```
/// if conduit_test_util::uring_or_skip() {
///     // ... run the io_uring case ...
/// }
/// ```
pub fn uring_or_skip() -> bool {
    match io_uring_check() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIP: io_uring unavailable here: {e}");
            false
        }
    }
}

/// [`uring_or_skip`], except that under `CI=true` a missing io_uring is a
/// failure.
///
/// # Panics
/// io_uring is unavailable and `CI=true`.
///
/// ```no_run
/// if conduit_test_util::uring_or_skip_outside_ci() {
///     // ... run the io_uring case ...
/// }
/// ```
pub fn uring_or_skip_outside_ci() -> bool {
    match io_uring_check() {
        Ok(()) => true,
        Err(e) => {
            assert!(!in_ci(), "io_uring unavailable in CI: {e}");
            eprintln!("SKIP: io_uring unavailable here: {e}");
            false
        }
    }
}

/// Arms a watchdog: if the guard is still alive after `secs` seconds, the
/// process prints `watchdog: {what} still running after {secs} s: hang` and
/// aborts. A hang becomes a failure; this is never a timing assertion, so
/// `secs` should be far above any plausible run time.
///
/// Dropping the guard disarms it (so an earlier test's watchdog never fires
/// during a later test of the same binary); [`Watchdog::keep_armed`] keeps
/// it armed for the rest of the process.
///
/// ```
/// let _watchdog = conduit_test_util::watchdog("my_test", 300);
/// // ... the test body; the watchdog is disarmed at the end of the scope.
/// ```
#[must_use = "the watchdog is disarmed when the guard is dropped"]
pub fn watchdog(what: &str, secs: u64) -> Watchdog {
    let (disarm, armed) = mpsc::channel::<()>();
    let what = what.to_owned();
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) =
                armed.recv_timeout(Duration::from_secs(secs))
            {
                eprintln!("watchdog: {what} still running after {secs} s: hang");
                std::process::abort();
            }
        })
        .expect("spawn the watchdog thread");
    Watchdog { disarm }
}

/// The guard of a [`watchdog`]: disarms it when dropped.
#[derive(Debug)]
pub struct Watchdog {
    disarm: mpsc::Sender<()>,
}

impl Watchdog {
    /// Keeps the watchdog armed until the process exits (for a watchdog
    /// over a whole suite rather than one test).
    ///
    /// ```
    /// conduit_test_util::watchdog("whole suite", 1200).keep_armed();
    /// ```
    pub fn keep_armed(self) {
        // The watchdog disarms when every sender is gone; this one never goes.
        std::mem::forget(self.disarm);
    }
}

/// A free UDP port on loopback (bound, then released: another process may
/// take it in between, which the tests tolerate as a rare failure).
///
/// # Panics
/// No ephemeral port can be bound.
///
/// ```
/// let port = conduit_test_util::free_udp_port();
/// let uri = format!("udp://127.0.0.1:{port}");
/// # let _ = uri;
/// ```
pub fn free_udp_port() -> u16 {
    free_udp_ports::<1>()[0]
}

/// `N` distinct free UDP ports on loopback (bound together, then released).
///
/// # Panics
/// The ports cannot be bound.
///
/// ```
/// let [a, b] = conduit_test_util::free_udp_ports::<2>();
/// assert_ne!(a, b);
/// ```
pub fn free_udp_ports<const N: usize>() -> [u16; N] {
    let sockets: [std::net::UdpSocket; N] = std::array::from_fn(|_| {
        std::net::UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port")
    });
    sockets.map(|s| s.local_addr().expect("local_addr").port())
}

/// A fresh directory, removed with its contents on drop:
/// `{base}/conduit-{tag}-{pid}-{n}`, unique within and across test processes.
///
/// ```
/// let dir = conduit_test_util::TempDir::new("example");
/// std::fs::write(dir.join("f"), b"x").unwrap();
/// let path = dir.path().to_path_buf();
/// drop(dir);
/// assert!(!path.exists());
/// ```
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new directory under [`std::env::temp_dir`].
    ///
    /// # Panics
    /// The directory cannot be created.
    ///
    /// ```
    /// let dir = conduit_test_util::TempDir::new("example");
    /// assert!(dir.path().is_dir());
    /// ```
    pub fn new(tag: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), tag)
    }

    /// A new directory on tmpfs when there is one (`/dev/shm`), else under
    /// [`std::env::temp_dir`]: where rings live in production.
    ///
    /// # Panics
    /// The directory cannot be created.
    ///
    /// ```
    /// let dir = conduit_test_util::TempDir::on_tmpfs("example");
    /// assert!(dir.path().is_dir());
    /// ```
    pub fn on_tmpfs(tag: &str) -> TempDir {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            TempDir::new_in(shm, tag)
        } else {
            TempDir::new(tag)
        }
    }

    /// A new directory under `base`.
    ///
    /// # Panics
    /// The directory cannot be created.
    ///
    /// ```
    /// let dir = conduit_test_util::TempDir::new_in(&std::env::temp_dir(), "example");
    /// assert!(dir.path().starts_with(std::env::temp_dir()));
    /// ```
    pub fn new_in(base: &Path, tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = base.join(format!(
            "conduit-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory.
    ///
    /// ```
    /// let dir = conduit_test_util::TempDir::new("example");
    /// assert!(dir.path().is_absolute());
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    ///
    /// ```
    /// let dir = conduit_test_util::TempDir::new("example");
    /// assert_eq!(dir.join("k").parent(), Some(dir.path()));
    /// ```
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes `bytes` to a new file at `path` readable by its owner only (mode
/// 0600 from creation, never wider: a key file that others can read is
/// refused by conduit).
///
/// # Errors
/// `path` exists already (it is never overwritten) or cannot be written.
///
/// ```
/// let dir = conduit_test_util::TempDir::new("example");
/// conduit_test_util::write_key_file(&dir.join("key"), &[7; 32]).unwrap();
/// ```
pub fn write_key_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct() {
        let [a, b, c] = free_udp_ports::<3>();
        assert!(a != b && b != c && a != c);
        assert_ne!(free_udp_port(), 0);
    }

    #[test]
    fn temp_dirs_are_unique_and_removed() {
        let (a, b) = (TempDir::new("unit"), TempDir::new("unit"));
        assert_ne!(a.path(), b.path());
        std::fs::write(a.join("f"), b"x").unwrap();
        let p = a.path().to_path_buf();
        drop(a);
        assert!(!p.exists());
        assert!(b.path().is_dir());
    }

    #[test]
    fn a_dropped_watchdog_is_disarmed() {
        // Fires after 1 s unless disarmed: the sleep below outlives it.
        drop(watchdog("a_dropped_watchdog_is_disarmed", 1));
        std::thread::sleep(Duration::from_millis(1500));
    }
}
