//! A small file mapped shared for the rest of the process, seen only as
//! atomic words: the writer side of conduit's per-process counters file
//! (`conduit::stats`). It lives here because this crate is where conduit
//! keeps its `unsafe` mapping code.
//!
//! The mapping is never unmapped (it is leaked on purpose), so the atomics
//! it hands out are `&'static`. Every view is checked against the length and
//! the alignment of its type. Only atomics are handed out: other processes
//! may read (or, with write access, write) the same bytes at any time, and
//! atomics make that a race on values, never undefined behaviour here.
//!
//! The file must stay at least `len` bytes long while mapped (truncating it
//! under the mapping raises SIGBUS on the next store): the counters file is
//! created by its writer with mode 0644, so only that user (or root) can
//! truncate it; removing it (`unlink`) is harmless.

use std::fs::File;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

/// A shared, read-write mapping of a file that lives until the process exits.
#[derive(Debug)]
pub struct SharedWords {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory that is never unmapped, and
// every access to it goes through atomics.
unsafe impl Send for SharedWords {}
// SAFETY: as above; `&SharedWords` only hands out atomics.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    /// Maps the first `len` bytes of `file` (which must be at least that
    /// long, and stay so) shared and read-write, for the rest of the process.
    ///
    /// ```
    /// use conduit_ringbuf::shared_words::SharedWords;
    /// # fn tmp(n: u64) -> std::fs::File { let p = std::env::temp_dir().join(format!("sw-doc-{}-{n}", std::process::id())); let f = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&p).unwrap(); std::fs::remove_file(&p).unwrap(); f.set_len(n).unwrap(); f }
    /// let f = tmp(4096);
    /// let words = SharedWords::map_leaked(&f, 4096)?;
    /// words.u64_at(8).unwrap().store(7, std::sync::atomic::Ordering::Relaxed);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// `mmap`'s error; a `len` of 0.
    pub fn map_leaked(file: &File, len: usize) -> io::Result<&'static SharedWords> {
        if len == 0 {
            return Err(io::Error::other("nothing to map"));
        }
        let ptr = crate::mapping::map_shared(file, len)?;
        Ok(Box::leak(Box::new(SharedWords { ptr, len })))
    }

    /// Length of the mapping in bytes.
    ///
    /// ```
    /// # use conduit_ringbuf::shared_words::SharedWords;
    /// # fn tmp(n: u64) -> std::fs::File { let p = std::env::temp_dir().join(format!("sw-doc-{}-{n}", std::process::id())); let f = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&p).unwrap(); std::fs::remove_file(&p).unwrap(); f.set_len(n).unwrap(); f }
    /// # let f = tmp(4096);
    /// assert_eq!(SharedWords::map_leaked(&f, 4096)?.len(), 4096);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: an empty mapping is refused.
    ///
    /// ```
    /// # use conduit_ringbuf::shared_words::SharedWords;
    /// # fn tmp(n: u64) -> std::fs::File { let p = std::env::temp_dir().join(format!("sw-doc-{}-{n}", std::process::id())); let f = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&p).unwrap(); std::fs::remove_file(&p).unwrap(); f.set_len(n).unwrap(); f }
    /// # let f = tmp(64);
    /// assert!(!SharedWords::map_leaked(&f, 64)?.is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of `offset` when `size` bytes from it are in the mapping
    /// and it is aligned to `align`.
    fn at(&self, offset: usize, size: usize, align: usize) -> Option<*mut u8> {
        let end = offset.checked_add(size)?;
        if end > self.len {
            return None;
        }
        // In bounds (checked above), so this stays inside the mapping.
        let p = self.ptr.as_ptr().wrapping_add(offset);
        (p as usize % align == 0).then_some(p)
    }

    /// The 32-bit word at `offset`, or `None` when it is out of bounds or
    /// not 4-aligned.
    ///
    /// ```
    /// # use conduit_ringbuf::shared_words::SharedWords;
    /// # fn tmp(n: u64) -> std::fs::File { let p = std::env::temp_dir().join(format!("sw-doc-{}-{n}", std::process::id())); let f = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&p).unwrap(); std::fs::remove_file(&p).unwrap(); f.set_len(n).unwrap(); f }
    /// # let f = tmp(64);
    /// let w = SharedWords::map_leaked(&f, 64)?;
    /// assert!(w.u32_at(60).is_some());
    /// assert!(w.u32_at(62).is_none() && w.u32_at(64).is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn u32_at(&'static self, offset: usize) -> Option<&'static AtomicU32> {
        let p = self.at(offset, 4, align_of::<AtomicU32>())?;
        // SAFETY: in bounds and aligned (checked by `at`); the mapping is
        // never unmapped, so the reference is valid for 'static; the memory
        // is only ever accessed through atomics in this process.
        Some(unsafe { &*p.cast::<AtomicU32>() })
    }

    /// The 64-bit word at `offset`, or `None` when it is out of bounds or
    /// not 8-aligned.
    ///
    /// ```
    /// # use conduit_ringbuf::shared_words::SharedWords;
    /// # fn tmp(n: u64) -> std::fs::File { let p = std::env::temp_dir().join(format!("sw-doc-{}-{n}", std::process::id())); let f = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&p).unwrap(); std::fs::remove_file(&p).unwrap(); f.set_len(n).unwrap(); f }
    /// # let f = tmp(64);
    /// let w = SharedWords::map_leaked(&f, 64)?;
    /// assert!(w.u64_at(56).is_some() && w.u64_at(60).is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn u64_at(&'static self, offset: usize) -> Option<&'static AtomicU64> {
        let p = self.at(offset, 8, align_of::<AtomicU64>())?;
        // SAFETY: as in `u32_at`.
        Some(unsafe { &*p.cast::<AtomicU64>() })
    }

    /// `N` consecutive 64-bit words from `offset`, or `None` when they are
    /// out of bounds or `offset` is not 8-aligned.
    ///
    /// ```
    /// # use conduit_ringbuf::shared_words::SharedWords;
    /// # fn tmp(n: u64) -> std::fs::File { let p = std::env::temp_dir().join(format!("sw-doc-{}-{n}", std::process::id())); let f = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&p).unwrap(); std::fs::remove_file(&p).unwrap(); f.set_len(n).unwrap(); f }
    /// # let f = tmp(64);
    /// let w = SharedWords::map_leaked(&f, 64)?;
    /// assert!(w.u64s_at::<8>(0).is_some() && w.u64s_at::<8>(8).is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn u64s_at<const N: usize>(
        &'static self,
        offset: usize,
    ) -> Option<&'static [AtomicU64; N]> {
        let size = N.checked_mul(8)?;
        let p = self.at(offset, size, align_of::<AtomicU64>())?;
        // SAFETY: as in `u32_at`; `[AtomicU64; N]` has the alignment of
        // `AtomicU64` and the size checked by `at`.
        Some(unsafe { &*p.cast::<[AtomicU64; N]>() })
    }

    /// Stores `bytes` at `offset` with relaxed byte stores (for strings
    /// written before a slot is published); false, storing nothing, when
    /// they do not fit.
    ///
    /// ```
    /// # use conduit_ringbuf::shared_words::SharedWords;
    /// # fn tmp(n: u64) -> std::fs::File { let p = std::env::temp_dir().join(format!("sw-doc-{}-{n}", std::process::id())); let f = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&p).unwrap(); std::fs::remove_file(&p).unwrap(); f.set_len(n).unwrap(); f }
    /// # let f = tmp(64);
    /// let w = SharedWords::map_leaked(&f, 64)?;
    /// assert!(w.store_bytes(60, b"abcd"));
    /// assert!(!w.store_bytes(61, b"abcd"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn store_bytes(&self, offset: usize, bytes: &[u8]) -> bool {
        let Some(p) = self.at(offset, bytes.len(), 1) else {
            return false;
        };
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: `offset + i` is in bounds (checked by `at`); the byte
            // is only accessed through atomics in this process.
            let a = unsafe { &*p.add(i).cast::<AtomicU8>() };
            a.store(*b, Ordering::Relaxed);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_checked_and_shared() {
        let path = std::env::temp_dir().join(format!("sw-test-{}", std::process::id()));
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(4096).unwrap();
        let w = SharedWords::map_leaked(&f, 4096).unwrap();
        assert!(SharedWords::map_leaked(&f, 0).is_err());
        assert!(w.u64_at(4).is_none());
        assert!(w.u64_at(usize::MAX - 3).is_none());
        assert!(w.u64s_at::<512>(0).is_some());
        assert!(w.u64s_at::<513>(0).is_none());
        w.u64_at(8)
            .unwrap()
            .store(0x0102_0304_0506_0708u64.to_le(), Ordering::Relaxed);
        w.u32_at(0).unwrap().store(9u32.to_le(), Ordering::Relaxed);
        assert!(w.store_bytes(100, b"hi\0"));
        assert!(!w.store_bytes(4095, b"hi"));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[0..4], &9u32.to_le_bytes());
        assert_eq!(&bytes[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&bytes[100..103], b"hi\0");
        std::fs::remove_file(&path).unwrap();
    }
}
