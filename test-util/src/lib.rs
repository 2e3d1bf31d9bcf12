//! Helpers shared by conduit's tests and benchmarks, so that each lives in
//! one place: the check that skips a test needing root (and fails it under
//! `CI=true`, where the tests run as root), and the writer of a private
//! (mode 0600) key file.
#![deny(missing_docs)]

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// True when running as root; otherwise says why `test` is skipped and
/// returns false (a failure under `CI=true`, where the tests run as root).
///
/// # Panics
/// Not root and `CI=true`.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root under CI"
    );
    println!("SKIPPED {test}: needs root (CI=true makes this a failure)");
    false
}

/// Writes `bytes` to a new file at `path` readable by its owner only (mode
/// 0600 from creation, never wider: a key file that others can read is
/// refused by conduit).
///
/// # Errors
/// `path` exists already (it is never overwritten) or cannot be written.
pub fn write_key_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
}
