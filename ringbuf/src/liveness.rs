//! Liveness through open-file-description (OFD) locks.
//!
//! The publisher holds a write lock on byte [`PUBLISHER_LOCK`] of the ring
//! file, and each subscriber on byte `SLOT_LOCK_BASE + slot`; the bytes lie far
//! past the end of the file, which is allowed and leaves the data untouched.
//! The kernel drops an OFD lock when the last descriptor of its open file
//! description closes, so also when the process dies (including `kill -9`).
//! `F_OFD_GETLK` then tells exactly whether the owner is alive, with no pid
//! reuse problem and no heartbeat. OFD locks conflict between descriptions
//! even inside one process, so a publisher and a subscriber in one process see
//! each other correctly.
//!
//! Creation and removal of ring files in a directory are serialised by an
//! exclusive `flock` on the directory itself ([`DirLock`]).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Lock byte of the publisher.
pub(crate) const PUBLISHER_LOCK: i64 = 1 << 40;
/// Lock byte of subscriber slot 0 (slot `i` uses `SLOT_LOCK_BASE + i`).
pub(crate) const SLOT_LOCK_BASE: i64 = (1 << 40) + 4096;

fn flock_for(kind: libc::c_short, start: i64) -> libc::flock {
    // SAFETY: flock is a plain C struct of integers; all-zero is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = 1;
    fl.l_pid = 0;
    fl
}

/// Takes the write lock on byte `at` without waiting; `Ok(false)` if another
/// open file description holds it.
pub(crate) fn try_lock(file: &File, at: i64) -> io::Result<bool> {
    let mut fl = flock_for(libc::F_WRLCK as libc::c_short, at);
    // SAFETY: valid fd and a valid, initialised flock struct for the call.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Releases the lock on byte `at`.
pub(crate) fn unlock(file: &File, at: i64) {
    let mut fl = flock_for(libc::F_UNLCK as libc::c_short, at);
    // SAFETY: valid fd and flock struct. Failure leaves the lock until close.
    unsafe {
        libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl);
    }
}

/// True if another open file description holds a lock on byte `at`.
pub(crate) fn is_locked(file: &File, at: i64) -> io::Result<bool> {
    let mut fl = flock_for(libc::F_WRLCK as libc::c_short, at);
    // SAFETY: valid fd and flock struct; the kernel writes the result into it.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// An exclusive `flock` on a directory, released on drop.
pub(crate) struct DirLock {
    _dir: File,
}

impl DirLock {
    /// Locks `dir`, waiting for other creators (each holds it for microseconds).
    pub(crate) fn lock(dir: &Path) -> io::Result<DirLock> {
        let d = File::open(dir)?;
        loop {
            // SAFETY: valid fd.
            let r = unsafe { libc::flock(d.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(DirLock { _dir: d });
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }
}
