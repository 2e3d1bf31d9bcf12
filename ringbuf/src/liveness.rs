//! Liveness through open-file-description (OFD) locks on a lock file.
//!
//! Each ring file has a lock file next to it, `.{name}.{incarnation:016x}.lock`
//! (the incarnation is the random 64-bit value in the ring's header). The
//! publisher holds a write lock on byte [`PUBLISHER_LOCK`] of it, and each
//! subscriber a write lock on byte `SLOT_LOCK_BASE + slot`. The kernel drops
//! an OFD lock when the last descriptor of its open file description
//! closes, so also when the process dies (including `kill -9`), and
//! `F_OFD_GETLK` then tells exactly whether the owner is alive, with no pid
//! reuse problem and no heartbeat. OFD locks conflict between descriptions
//! even inside one process, so a publisher and a subscriber in one process see
//! each other correctly.
//!
//! ## Why a separate lock file
//!
//! A process that can open a file only for reading can still take *read*
//! locks on any byte of it, and a read lock blocks every write lock. Were the
//! lock bytes in the ring file, a user with read access to a `mode=644` or
//! `640` ring could take slots away from subscribers and keep the publisher's
//! byte locked after its death. The lock file therefore gets the write bits
//! of the ring's mode only: each class (owner, group, others) that may write
//! the ring may read and write the lock file, every other class gets nothing
//! ([`lock_mode`]); a reader of the ring cannot open it at all. Those who can
//! write the ring can corrupt it anyway, so they gain nothing new. On top of
//! that, liveness is probed with an `F_RDLCK` request ([`is_locked`]), which
//! only a write lock conflicts with: a read lock, whoever holds it, never
//! makes an owner look alive.
//!
//! The publisher creates the lock file (`O_EXCL`, mode 600), takes its lock,
//! and only then widens the mode, so nobody can take its byte first. There
//! is no directory-wide lock: see [`crate::Publisher::create`] for how a stale
//! ring is replaced.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Lock byte of the publisher.
pub(crate) const PUBLISHER_LOCK: i64 = 0;
/// Lock byte of subscriber slot 0 (slot `i` uses `SLOT_LOCK_BASE + i`).
pub(crate) const SLOT_LOCK_BASE: i64 = 4096;

/// Mode of the lock file of a ring created with `mode`: read-write for each
/// class that may write the ring, nothing for the others.
pub(crate) fn lock_mode(mode: u32) -> u32 {
    let mut m = 0o600;
    if mode & 0o020 != 0 {
        m |= 0o060;
    }
    if mode & 0o002 != 0 {
        m |= 0o006;
    }
    m
}

/// Name of the lock file of ring `name` with `incarnation`.
pub(crate) fn lock_name(name: &str, incarnation: u64) -> String {
    format!(".{name}.{incarnation:016x}.lock")
}

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
/// open file description holds a lock on it.
pub(crate) fn try_lock(file: &File, at: i64) -> io::Result<bool> {
    try_set_lock(file, libc::F_WRLCK as libc::c_short, at)
}

/// Takes a lock of `kind` on byte `at` without waiting (`F_OFD_SETLK`);
/// `Ok(false)` if a conflicting lock of another open file description
/// stands in the way.
fn try_set_lock(file: &File, kind: libc::c_short, at: i64) -> io::Result<bool> {
    let mut fl = flock_for(kind, at);
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

/// True if another open file description holds a *write* lock on byte `at`
/// (the probe asks for a read lock, which only write locks conflict with).
pub(crate) fn is_locked(file: &File, at: i64) -> io::Result<bool> {
    let mut fl = flock_for(libc::F_RDLCK as libc::c_short, at);
    // SAFETY: valid fd and flock struct; the kernel writes the result into it.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type == libc::F_WRLCK as libc::c_short)
}

/// Lock byte of publisher slot 0 of a multi-writer ring (slot `j` uses
/// `PUB_LOCK_BASE + j`). Each of its publishers also holds a *read* lock on
/// [`PUBLISHER_LOCK`]: shared among them, it keeps a creator from replacing
/// the ring while any is alive, and the last one to leave upgrades it to a
/// write lock to close the ring.
pub(crate) const PUB_LOCK_BASE: i64 = 2048;

/// Takes a read (shared) lock on byte `at` without waiting; `Ok(false)` if
/// another open file description holds a write lock on it. On a byte this
/// description holds a write lock on, converts it to a read lock.
pub(crate) fn try_lock_shared(file: &File, at: i64) -> io::Result<bool> {
    try_set_lock(file, libc::F_RDLCK as libc::c_short, at)
}

/// True if another open file description holds *any* lock (read or write)
/// on byte `at`: the liveness probe of a multi-writer ring, whose
/// publishers hold shared read locks on [`PUBLISHER_LOCK`]. Only the
/// classes that may write the ring can open the lock file at all.
pub(crate) fn is_any_locked(file: &File, at: i64) -> io::Result<bool> {
    let mut fl = flock_for(libc::F_WRLCK as libc::c_short, at);
    // SAFETY: valid fd and flock struct; the kernel writes the result into it.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Whether another open file description holds any lock (read or write) on
/// byte `at` of `file`, asked of the kernel with `F_OFD_GETLK`.
///
/// This is the probe for a program watching rings from outside (such as
/// `conduit-stat`): `file` is a ring's lock file (see [`crate::layout`] for
/// where it lives), opened for reading, and `at` is the publisher's byte (0)
/// or a subscriber slot's byte (4096 + slot). The answer is exact at the
/// moment of the call, unlike a read of `/proc/locks`, which the kernel
/// prints a page at a time and which skips entries when locks come and go
/// between pages.
///
/// `F_OFD_GETLK` needs no access mode of its own, so a descriptor opened
/// read-only works; whoever cannot open the lock file at all (it gets the
/// ring's write bits only) has to fall back to `/proc/locks`.
///
/// ```
/// use std::fs::File;
/// # let dir = std::env::temp_dir().join(format!("probe-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let path = dir.join("some.lock");
/// # std::fs::write(&path, b"").unwrap();
/// let f = File::open(&path).unwrap();
/// // Nobody holds a lock on this fresh file.
/// assert!(!conduit_ringbuf::lock_byte_held(&f, 0).unwrap());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn lock_byte_held(file: &File, at: u64) -> io::Result<bool> {
    let at = i64::try_from(at).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    is_any_locked(file, at)
}
