//! A shared mapping of a ring file and typed views of its shared words.
//!
//! The mapping is `MAP_SHARED`, page-aligned and as long as the validated
//! file length; every view handed out below is checked against that length
//! and the alignment of its type, and borrows the [`Mapping`], so it cannot
//! outlive the `munmap` in `Drop`. Shared memory holds offsets only, never
//! pointers: each process maps the file at its own address.

use crate::layout::{self, BLOCK_LEN, PUBLISHER_BLOCK, SIGNAL_BLOCK};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// The publisher block (offset 128).
#[repr(C, align(128))]
pub(crate) struct PublisherBlock {
    /// 0 while open, 1 after a clean close (Release; Acquire by subscribers).
    pub(crate) closed: AtomicU32,
    /// [`layout::FENCE_PUBLISHER`] or [`layout::FENCE_MEMBARRIER`].
    pub(crate) fence_mode: AtomicU32,
    /// Position after the last committed record (diagnostics only).
    pub(crate) tail: AtomicU64,
    _pad: [u8; BLOCK_LEN - 16],
}
const _: () = assert!(core::mem::size_of::<PublisherBlock>() == BLOCK_LEN);

/// The signal block (offset 256).
#[repr(C, align(128))]
pub(crate) struct SignalBlock {
    /// Low 32 bits: sleeping waiters; high 32 bits: membership requests.
    pub(crate) attention: AtomicU64,
    /// Futex word, bumped by the publisher before each wake.
    pub(crate) futex: AtomicU32,
    _pad: [u8; BLOCK_LEN - 12],
}
const _: () = assert!(core::mem::size_of::<SignalBlock>() == BLOCK_LEN);

/// One subscriber slot.
#[repr(C, align(128))]
pub(crate) struct Slot {
    /// `SLOT_FREE`, `SLOT_JOINING` or `SLOT_ACTIVE`.
    pub(crate) state: AtomicU32,
    /// Pid of the owner (diagnostics).
    pub(crate) pid: AtomicU32,
    /// Next position the subscriber will read.
    pub(crate) position: AtomicU64,
    /// Bumped by the publisher at each activation (diagnostics).
    pub(crate) generation: AtomicU64,
    _pad: [u8; BLOCK_LEN - 24],
}
const _: () = assert!(core::mem::size_of::<Slot>() == BLOCK_LEN);

/// A `MAP_SHARED` read-write mapping of a whole ring file.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access to it goes through
// atomics or through slices whose aliasing the owning Publisher/Subscriber
// controls, so moving it to another thread is sound.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file` (which must be at least `len` long).
    pub(crate) fn map(file: &File, len: u64) -> io::Result<Mapping> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("ring file too large"))?;
        if len < layout::SLOTS_OFFSET {
            return Err(io::Error::other("ring file too small to map"));
        }
        // SAFETY: a fresh mapping chosen by the kernel (addr = null); we pass a
        // valid fd and check the result for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    /// Base address.
    #[inline]
    pub(crate) fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A view of a 128-byte block at `offset`.
    #[inline]
    fn block<T>(&self, offset: usize) -> &T {
        assert!(offset % BLOCK_LEN == 0 && offset + core::mem::size_of::<T>() <= self.len);
        // SAFETY: the mapping is page-aligned and `offset` is a multiple of 128
        // (checked), so the pointer is aligned for the 128-aligned block types;
        // the block lies inside the mapping (checked); the block types consist
        // of atomics and padding, valid for any bit pattern; the reference
        // borrows `self`, so it cannot outlive the munmap in Drop.
        unsafe { &*self.base().add(offset).cast::<T>() }
    }

    /// The publisher block.
    #[inline]
    pub(crate) fn publisher(&self) -> &PublisherBlock {
        self.block(PUBLISHER_BLOCK)
    }

    /// The signal block.
    #[inline]
    pub(crate) fn signal(&self) -> &SignalBlock {
        self.block(SIGNAL_BLOCK)
    }

    /// Subscriber slot `i` (the caller checks `i` against the geometry).
    #[inline]
    pub(crate) fn slot(&self, i: u32) -> &Slot {
        self.block(layout::slot_offset(i))
    }

    /// The header bytes.
    pub(crate) fn header_bytes(&self) -> &[u8] {
        // SAFETY: the mapping is at least SLOTS_OFFSET > HEADER_LEN bytes long
        // (checked in `map`); the header is never written after the file is
        // renamed into place (a hostile writer could, which is why callers only
        // compare these bytes).
        unsafe { std::slice::from_raw_parts(self.base(), layout::HEADER_LEN) }
    }

    /// Writes the header (only before the file is published by rename).
    pub(crate) fn write_header(&self, bytes: &[u8; layout::HEADER_LEN]) {
        // SAFETY: the mapping is longer than the header (checked in `map`), and
        // no other process can see the file yet (it has a temporary name).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base(), layout::HEADER_LEN) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; every view borrows
        // self, so none is alive any more.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The data area of a mapping: records at offsets masked to the capacity.
///
/// Holds a raw base pointer so the hot paths need no bounds arithmetic beyond
/// the mask; `DataArea` is only constructed from a [`Mapping`] whose length
/// covers `data_offset + capacity`, and is owned next to that mapping.
#[derive(Clone, Copy)]
pub(crate) struct DataArea {
    base: *mut u8,
    mask: u64,
}

impl DataArea {
    /// The data area of `map` for `geometry` (validated: `file_len` ≤ mapping length).
    pub(crate) fn new(map: &Mapping, g: &layout::Geometry) -> DataArea {
        assert!(g.data_offset + g.capacity <= map.len() as u64);
        assert!(g.data_offset % layout::DATA_ALIGN as u64 == 0 && g.capacity.is_power_of_two());
        // SAFETY: data_offset < mapping length (asserted).
        let base = unsafe { map.base().add(g.data_offset as usize) };
        DataArea {
            base,
            mask: g.capacity - 1,
        }
    }

    /// Commit word of the record at `pos`.
    ///
    /// # Safety
    /// The mapping this area was made from must be alive for `'a`, and `pos`
    /// must be a multiple of 8 (records are 32-aligned, and the word after a
    /// record too).
    #[inline(always)]
    pub(crate) unsafe fn commit<'a>(self, pos: u64) -> &'a AtomicU64 {
        let off = (pos & self.mask) as usize;
        // SAFETY: off < capacity and off is a multiple of 8 (caller), so the
        // 8-byte word lies inside the data area and is aligned (the area is
        // page aligned); the mapping lives for 'a (caller); AtomicU64 is valid
        // for any bit pattern.
        unsafe { &*self.base.add(off).cast::<AtomicU64>() }
    }

    /// `len` and `type_id` words of the record at `pos`.
    ///
    /// # Safety
    /// As for [`DataArea::commit`], and `pos` must be a multiple of 16.
    #[inline(always)]
    pub(crate) unsafe fn len_type<'a>(self, pos: u64) -> (&'a AtomicU32, &'a AtomicU32) {
        let off = (pos & self.mask) as usize;
        // SAFETY: off is a multiple of 16 below capacity (a power of two ≥ 256),
        // so off + 16 ≤ capacity and both words lie in the area, 4-aligned;
        // the mapping lives for 'a (caller).
        unsafe {
            (
                &*self.base.add(off + 8).cast::<AtomicU32>(),
                &*self.base.add(off + 12).cast::<AtomicU32>(),
            )
        }
    }

    /// Pointer to the payload of the record at `pos`; the caller checks that
    /// `(pos & mask) + 16 + len <= capacity` before making a slice of it.
    #[inline(always)]
    pub(crate) fn payload_ptr(self, pos: u64) -> *mut u8 {
        let off = (pos & self.mask) as usize + layout::RECORD_HEADER_LEN;
        self.base.wrapping_add(off)
    }

    /// Pointer to the byte at `pos`.
    #[inline(always)]
    pub(crate) fn at(self, pos: u64) -> *mut u8 {
        self.base.wrapping_add((pos & self.mask) as usize)
    }

    /// Offset of `pos` in the area.
    #[inline(always)]
    pub(crate) fn offset(self, pos: u64) -> u64 {
        pos & self.mask
    }
}
