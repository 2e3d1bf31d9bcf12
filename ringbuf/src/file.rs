//! Opening names in the shared directory safely, owners, and OS randomness.
//!
//! The ring directory (normally `/dev/shm`) is writable by every local user,
//! so whatever sits under a name may have been put there by someone else.
//! Existing names are opened with `O_NOFOLLOW` (a symlink is refused, not
//! followed), `O_NONBLOCK` (a FIFO or device cannot make `open` wait) and
//! `O_CLOEXEC`, and `fstat` must show a regular file before anything is
//! read or mapped. Names this library creates are created with `O_EXCL`
//! and carry random parts from the OS (`getrandom`), so nobody can prepare
//! them in advance.

use crate::error::RingError;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Flags of every open of an existing name.
const SAFE_FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;

/// This process's effective uid.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Opens the existing `path` read-write without following a symlink or
/// blocking, and checks that it is a regular file. `Ok(None)` if nothing is
/// there.
///
/// # Errors
/// [`RingError::NotARing`] for anything but a regular file (a symlink, a
/// FIFO, a directory...); [`RingError::Io`] for other failures.
pub(crate) fn open_existing(path: &Path) -> Result<Option<(File, std::fs::Metadata)>, RingError> {
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(SAFE_FLAGS)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // ELOOP: the last component is a symlink. ENXIO: a socket or a FIFO
        // without reader. EISDIR: a directory.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ELOOP | libc::ENXIO | libc::EISDIR)
            ) =>
        {
            return Err(RingError::NotARing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(RingError::io(format!("opening {}", path.display()), e)),
    };
    let md = file
        .metadata()
        .map_err(|e| RingError::io(format!("stat of {}", path.display()), e))?;
    if !md.file_type().is_file() {
        return Err(RingError::NotARing {
            path: path.to_path_buf(),
        });
    }
    Ok(Some((file, md)))
}

/// Creates `path` (which must not exist) read-write with mode 600.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(SAFE_FLAGS)
        .open(path)
}

/// Fails with [`RingError::ForeignOwner`] unless `md`'s owner is in `allowed`.
pub(crate) fn check_owner(
    path: &Path,
    md: &std::fs::Metadata,
    allowed: &[u32],
) -> Result<(), RingError> {
    let uid = md.uid();
    if allowed.contains(&uid) {
        Ok(())
    } else {
        Err(RingError::ForeignOwner {
            path: path.to_path_buf(),
            uid,
        })
    }
}

/// 8 random bytes from the OS (`getrandom`).
pub(crate) fn random_u64() -> io::Result<u64> {
    let mut b = [0u8; 8];
    let mut n = 0;
    while n < b.len() {
        // SAFETY: the buffer is valid for `len - n` bytes from `n`.
        let r = unsafe { libc::getrandom(b[n..].as_mut_ptr().cast(), b.len() - n, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        n += r as usize;
    }
    Ok(u64::from_le_bytes(b))
}
