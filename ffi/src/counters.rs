//! `conduit_counters`: a handle's counters, for C.

use std::ffi::{c_char, CStr};

/// Counters of one handle (`conduit_publication_counters`,
/// `conduit_subscription_counters`).
///
/// Set `size` to `sizeof(conduit_counters)` before the call
/// (`conduit_counters c = CONDUIT_COUNTERS_INIT;` does it): the library
/// writes only the fields that fit in `size` bytes. Fields are only ever
/// appended, so a program built against an older, shorter struct keeps
/// working with a newer library.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct conduit_counters {
    /// Bytes of this struct the caller provides: `sizeof(conduit_counters)`.
    pub size: u32,
    /// Reserved, written as 0.
    pub reserved: u32,
    /// Messages accepted by offer and committed claims.
    pub sent: u64,
    /// Messages handed to a poll handler.
    pub received: u64,
    /// Datagrams sent again after a NAK (udp).
    pub retransmitted: u64,
    /// NAKs sent (udp subscriptions).
    pub naks_sent: u64,
    /// NAKs received (udp publications).
    pub naks_received: u64,
    /// Datagrams or records dropped, all reasons together.
    pub dropped: u64,
    /// Datagrams handed to the socket, data and control, retransmissions
    /// included (udp; 0 for shm).
    pub datagrams_sent: u64,
    /// Datagrams taken off the socket, valid or not (udp; 0 for shm).
    pub datagrams_received: u64,
}

/// The smallest `size` accepted: `size`, `reserved` and `sent`.
const MIN_SIZE: usize = 16;

impl conduit_counters {
    fn of(c: &conduit::Counters) -> Self {
        conduit_counters {
            size: size_of::<conduit_counters>() as u32,
            reserved: 0,
            sent: c.sent,
            received: c.received,
            retransmitted: c.retransmitted,
            naks_sent: c.naks_sent,
            naks_received: c.naks_received,
            dropped: c.dropped,
            datagrams_sent: c.datagrams_sent,
            datagrams_received: c.datagrams_received,
        }
    }
}

/// Writes `c` into the caller's `*out`, as many bytes as `out->size` says
/// (at most this struct's size); `size` keeps the caller's value.
///
/// # Safety
/// `out` is NULL or points to a writable struct of at least `out->size`
/// bytes (or of this struct's size, if smaller) starting with a `u32` size.
pub(crate) unsafe fn write(
    out: *mut conduit_counters,
    c: &conduit::Counters,
) -> Result<(), crate::failure::Failure> {
    if out.is_null() {
        return Err(crate::failure::Failure::invalid_static("out is NULL"));
    }
    // SAFETY: non-NULL and, by the contract, at least a `u32` size field,
    // aligned as the struct is.
    let size = unsafe { out.cast::<u32>().read() } as usize;
    if size < MIN_SIZE {
        return Err(crate::failure::Failure::invalid(format!(
            "out->size is {size}; set it to sizeof(conduit_counters) first (CONDUIT_COUNTERS_INIT)"
        )));
    }
    let n = size.min(size_of::<conduit_counters>());
    let mut full = conduit_counters::of(c);
    full.size = size as u32;
    // SAFETY: `full` is a live local of `size_of::<conduit_counters>() >= n`
    // bytes; the caller guarantees `out->size >= n` writable bytes at `out`;
    // the two do not overlap.
    unsafe { std::ptr::copy_nonoverlapping((&raw const full).cast::<u8>(), out.cast::<u8>(), n) };
    Ok(())
}

/// The driver's name as a static C string.
pub(crate) fn driver_name(driver: Option<&'static str>) -> *const c_char {
    let name: &'static CStr = match driver {
        None => c"shm",
        Some("uring") => c"uring",
        Some("socket") => c"socket",
        Some(_) => c"other",
    };
    name.as_ptr()
}
