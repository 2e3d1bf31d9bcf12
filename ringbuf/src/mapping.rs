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
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The publisher block (offset 128).
#[repr(C, align(128))]
pub(crate) struct PublisherBlock {
    /// 0 while open, 1 after a clean close (Release; Acquire by subscribers).
    pub(crate) closed: AtomicU32,
    /// [`layout::FENCE_PUBLISHER`] or [`layout::FENCE_MEMBARRIER`].
    pub(crate) fence_mode: AtomicU32,
    /// Position after the last committed record (diagnostics only).
    pub(crate) tail: AtomicU64,
    /// The words above are read by subscribers (`closed` on every idle
    /// check); the claim words below are written twice per message on a
    /// multi-writer ring, so they get their own cache line: a subscriber
    /// spinning on an empty ring must not pull the claim lock's line away
    /// from the publisher between two messages.
    _pad0: [u8; 48],
    /// Multi-writer rings: index + 1 of the publisher holding the claim
    /// lock, 0 when free (see the crate docs, "Several publishers").
    pub(crate) claim_lock: AtomicU64,
    /// Multi-writer rings: the shared tail, the end of the last claim.
    pub(crate) claim_tail: AtomicU64,
    /// Multi-writer rings: every commit word in `[claim_tail, zeroed)` is zero.
    pub(crate) zeroed: AtomicU64,
    /// Multi-writer rings: bumped (under the claim lock) whenever a
    /// `from=history` joiner is activated behind the tail; a publisher that
    /// sees it change rescans before it claims, since the `limit` it cached
    /// may pass the joiner's start by a lap.
    pub(crate) history_joins: AtomicU64,
    /// Multi-writer rings: bit `i` set while publisher `i` is waiting for
    /// the claim lock (it failed to take it); the others let it go first
    /// (see `lock_claims`). Untrusted: it only delays a claim, boundedly.
    pub(crate) claim_wanted: AtomicU64,
    _pad: [u8; BLOCK_LEN - 104],
}
const _: () = assert!(core::mem::size_of::<PublisherBlock>() == BLOCK_LEN);
const _: () =
    assert!(core::mem::offset_of!(PublisherBlock, claim_lock) == layout::CLAIM_WORDS_OFFSET);

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
    /// `SLOT_FREE`, `SLOT_JOINING`, `SLOT_ACTIVE` or `SLOT_EVICTED`.
    pub(crate) state: AtomicU32,
    /// Pid of the owner (diagnostics).
    pub(crate) pid: AtomicU32,
    /// Next position the subscriber will read.
    pub(crate) position: AtomicU64,
    /// Bumped by the publisher at each activation (diagnostics).
    pub(crate) generation: AtomicU64,
    /// 1 while the slot's owner is counted as a sleeper in `attention`; who
    /// swaps it back to 0 (the sleeper on waking, or whoever reclaims the
    /// slot of a dead owner) takes the count away.
    pub(crate) waiting: AtomicU32,
    /// Where a joining subscriber starts: [`layout::START_LIVE`] or
    /// [`layout::START_HISTORY`]; written by the subscriber before its
    /// JOINING store, read by the publisher when it activates the slot.
    pub(crate) start: AtomicU32,
    _pad: [u8; BLOCK_LEN - 32],
}
const _: () = assert!(core::mem::size_of::<Slot>() == BLOCK_LEN);

/// One publisher slot of a multi-writer ring.
#[repr(C, align(128))]
pub(crate) struct PubSlot {
    /// [`layout::PUB_FREE`], [`layout::PUB_ATTACHED`] or
    /// [`layout::PUB_RECLAIMING`].
    pub(crate) state: AtomicU32,
    /// Pid of the owner.
    pub(crate) pid: AtomicU32,
    /// Keeps the pending claim, which its owner writes twice per message, off
    /// the cache line of `pid`, which subscribers read for every message's
    /// source.
    _pad0: [u8; 56],
    /// Start of the claim the owner holds (with its padding).
    pub(crate) pending_start: AtomicU64,
    /// End of that claim; 0 when the owner holds none.
    pub(crate) pending_end: AtomicU64,
    /// 1 while the owner, keeping the claim lock between claims (solo, see
    /// `publisher/multi.rs`), changes what the lock guards; 0 otherwise.
    /// Read by a publisher that takes the lock from it.
    pub(crate) busy: AtomicU32,
    _pad: [u8; BLOCK_LEN - 84],
}
const _: () = assert!(core::mem::size_of::<PubSlot>() == BLOCK_LEN);

/// The history marks of a multi-writer ring: `position + 1` of a record
/// start in each 1/64 of the lap, 0 for none (see `history.rs`). Untrusted:
/// every mark is checked before use.
#[repr(C, align(128))]
pub(crate) struct MarkBlock {
    pub(crate) marks: [AtomicU64; 64],
}
const _: () =
    assert!(core::mem::size_of::<MarkBlock>() == BLOCK_LEN * layout::MARK_BLOCKS as usize);

/// Maps the first `len` bytes of `file` shared and read-write, at an address
/// the kernel picks: the one `mmap` of this crate (ring files, the counters
/// file of [`SharedWords`](crate::shared_words::SharedWords)). The caller owns
/// the mapping (to `munmap`, or to leak).
pub(crate) fn map_shared(file: &File, len: usize) -> io::Result<NonNull<u8>> {
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
    NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// A `MAP_SHARED` read-write mapping of a whole ring file.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Entry in the SIGBUS registry.
    reg: &'static sigbus::Entry,
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
        let ptr = map_shared(file, len)?;
        let Some(reg) = sigbus::register(ptr.as_ptr() as usize, len) else {
            // SAFETY: exactly the mapping made above, not yet shared.
            unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
            return Err(io::Error::other(format!(
                "more than {} rings mapped in this process",
                sigbus::ENTRIES
            )));
        };
        Ok(Mapping { ptr, len, reg })
    }

    /// True once the file under this mapping was found truncated (a SIGBUS
    /// in it was caught and the mapping replaced by zero pages).
    #[inline(always)]
    pub(crate) fn truncated(&self) -> bool {
        self.reg.truncated.load(Ordering::Relaxed)
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

    /// Publisher slot `j` of a ring with `max_subscribers` subscriber slots
    /// (the caller checks `j` against the geometry).
    #[inline]
    pub(crate) fn pub_slot(&self, max_subscribers: u32, j: u32) -> &PubSlot {
        self.block(layout::pub_slot_offset(max_subscribers, j))
    }

    /// The history marks of a multi-writer ring (the caller checks that it
    /// is one: `max_publishers > 1`).
    #[inline]
    pub(crate) fn marks(&self, max_subscribers: u32, max_publishers: u32) -> &MarkBlock {
        self.block(layout::marks_offset(max_subscribers, max_publishers))
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
        sigbus::unregister(self.reg);
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

/// Surviving truncation of a mapped ring file.
///
/// A ring file lives in a directory others may write (`/dev/shm`), and a
/// tmpfs file that is not a memfd cannot be sealed: anyone who can open the
/// file for writing can `ftruncate` it, after which every access to the
/// mapped pages past the new end raises SIGBUS, whose default action kills
/// the process. So each [`Mapping`] registers its address range here, in a
/// fixed array of atomics (no allocation, no lock: usable from a signal
/// handler), and a process-wide `SA_SIGINFO` handler, installed once with
/// the first mapping, looks `si_addr` up. When it lies inside a registered
/// mapping, the handler maps anonymous zero pages over the whole mapping
/// (`mmap(MAP_FIXED)`, a plain system call), sets the entry's `truncated`
/// flag and returns: the faulting access is repeated on the zero page. The
/// ring's own checks then see zeros (no records, free slots, a changed
/// header), and the handle reports `Corrupt` because it checks the flag on
/// every offer (one relaxed load) and on the subscriber's idle and health
/// paths. Any other SIGBUS goes to the handler that was installed before
/// (or the default action, which kills as it always did).
///
/// A program that installs its own SIGBUS handler after opening a ring
/// replaces this one; truncation can then kill it again. That, and
/// truncation during `Publisher::create` before the mapping exists (the
/// file is still private then), is all that is left.
pub(crate) mod sigbus {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Once;

    /// Most mappings registered at once in one process.
    pub(crate) const ENTRIES: usize = 1024;

    /// One registered mapping: `[base, base + len)`; `len == 0` means free.
    pub(crate) struct Entry {
        base: AtomicUsize,
        len: AtomicUsize,
        used: AtomicBool,
        /// Set by the handler once it replaced the mapping.
        pub(crate) truncated: AtomicBool,
    }

    #[allow(clippy::declare_interior_mutable_const)]
    const FREE: Entry = Entry {
        base: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        used: AtomicBool::new(false),
        truncated: AtomicBool::new(false),
    };
    static REGISTRY: [Entry; ENTRIES] = [FREE; ENTRIES];

    /// The handler that was installed before ours (written once, before
    /// ours is installed... and read only by ours).
    static PREVIOUS: std::sync::OnceLock<libc::sigaction> = std::sync::OnceLock::new();
    static INSTALL: Once = Once::new();

    fn install() {
        INSTALL.call_once(|| {
            // SAFETY: sigaction with a null new action only reads the current one.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointers; a null act queries.
            unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) };
            let _ = PREVIOUS.set(old);
            // SAFETY: a zeroed sigaction is valid; we fill handler and flags.
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            let h: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = handler;
            sa.sa_sigaction = h as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: sa_mask is a valid sigset_t to initialise.
            unsafe { libc::sigemptyset(&mut sa.sa_mask) };
            // SAFETY: valid sigaction; installing a handler for SIGBUS.
            unsafe { libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) };
        });
    }

    /// Registers `[base, base + len)`; `None` when the registry is full.
    pub(crate) fn register(base: usize, len: usize) -> Option<&'static Entry> {
        install();
        for e in REGISTRY.iter() {
            if e.used
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                e.truncated.store(false, Ordering::Relaxed);
                e.base.store(base, Ordering::Relaxed);
                // Release partner: the handler's Acquire load of `len`.
                e.len.store(len, Ordering::Release);
                return Some(e);
            }
        }
        None
    }

    /// Frees an entry (before the munmap).
    pub(crate) fn unregister(e: &'static Entry) {
        e.len.store(0, Ordering::Release);
        e.base.store(0, Ordering::Relaxed);
        // Release partner: the Acquire CAS in `register`.
        e.used.store(false, Ordering::Release);
    }

    extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
        let addr = unsafe { (*info).si_addr() } as usize;
        for e in REGISTRY.iter() {
            // Acquire partner: the Release store of `len` in `register`.
            let len = e.len.load(Ordering::Acquire);
            let base = e.base.load(Ordering::Relaxed);
            if len == 0 || addr < base || addr - base >= len {
                continue;
            }
            // SAFETY: errno is thread-local; we save and restore it around
            // the system call so the interrupted code sees no change.
            let errno = unsafe { *libc::__errno_location() };
            // SAFETY: [base, base + len) is a live mapping of ours (the
            // fault happened in it, so its owner has not unmapped it);
            // replacing it with private zero pages of the same size keeps
            // every pointer into it valid. mmap is a plain system call.
            let p = unsafe {
                libc::mmap(
                    base as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            // SAFETY: as above.
            unsafe { *libc::__errno_location() = errno };
            if p != libc::MAP_FAILED {
                e.truncated.store(true, Ordering::Relaxed);
                return;
            }
            break;
        }
        chain(sig, info, ctx);
    }

    /// Passes a SIGBUS that is not ours to the previous disposition.
    fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        let prev = PREVIOUS.get();
        let action = prev.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
        if action == libc::SIG_DFL || action == libc::SIG_IGN {
            // Restore the default action and return: the faulting access
            // repeats and the kernel applies it (kills, with a core).
            // SAFETY: a zeroed sigaction with SIG_DFL is valid.
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            sa.sa_sigaction = libc::SIG_DFL;
            // SAFETY: valid sigaction; sigaction is async-signal-safe.
            unsafe { libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) };
            // SAFETY: the kernel passes a valid siginfo.
            if unsafe { (*info).si_code } <= 0 {
                // Sent by a process, not a fault: deliver it again.
                // SAFETY: raise is async-signal-safe.
                unsafe { libc::raise(sig) };
            }
            return;
        }
        let flags = prev.map_or(0, |p| p.sa_flags);
        if flags & libc::SA_SIGINFO != 0 {
            // SAFETY: the previous handler was installed as an SA_SIGINFO
            // handler with this signature.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(action) };
            f(sig, info, ctx);
        } else {
            // SAFETY: the previous handler was installed as a plain handler.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(action) };
            f(sig);
        }
    }
}
