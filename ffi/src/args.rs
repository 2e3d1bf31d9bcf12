//! Checks of the arguments C callers pass: strings, buffers, counts, times.

use crate::failure::Failure;
use conduit::uri::MAX_URI_LEN;
use std::ffi::{c_char, c_int};
use std::time::Duration;

/// Reads the NUL-terminated URI at `uri` as UTF-8, scanning at most
/// `MAX_URI_LEN + 1` bytes.
///
/// # Safety
/// `uri` is NULL or points to readable memory that holds a NUL within the
/// first `MAX_URI_LEN + 1` bytes or is at least that long.
pub(crate) unsafe fn uri<'a>(uri: *const c_char) -> Result<&'a str, Failure> {
    if uri.is_null() {
        return Err(Failure::invalid_static("uri is NULL"));
    }
    // SAFETY: the caller guarantees `uri` is readable up to its NUL or for
    // MAX_URI_LEN + 1 bytes; strnlen reads no further than that bound.
    let len = unsafe { libc::strnlen(uri, MAX_URI_LEN + 1) };
    if len > MAX_URI_LEN {
        return Err(Failure::invalid(format!(
            "uri is longer than {MAX_URI_LEN} bytes"
        )));
    }
    // SAFETY: strnlen found `len` readable non-NUL bytes at `uri`; they stay
    // valid for the call (the caller owns them and may not free them
    // meanwhile).
    let bytes = unsafe { std::slice::from_raw_parts(uri.cast::<u8>(), len) };
    std::str::from_utf8(bytes).map_err(|e| {
        Failure::invalid(format!(
            "uri is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })
}

/// Checks that a `len`-byte buffer can exist at all (`len <= isize::MAX`).
#[inline(always)]
pub(crate) fn length(what: &str, len: usize) -> Result<usize, Failure> {
    if len > isize::MAX as usize {
        return Err(impossible_length(what, len));
    }
    Ok(len)
}

#[cold]
#[inline(never)]
fn impossible_length(what: &str, len: usize) -> Failure {
    Failure::invalid(format!(
        "{what} of {len} bytes is impossible (more than the address space; a negative value cast to size_t?)"
    ))
}

/// The `len` bytes at `data` as a slice; NULL is accepted for `len == 0`.
///
/// # Safety
/// When `len > 0`, `data` points to `len` readable bytes that stay valid and
/// unmodified for the call.
#[inline(always)]
pub(crate) unsafe fn bytes<'a>(data: *const u8, len: usize) -> Result<&'a [u8], Failure> {
    let len = length("message", len)?;
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(null_data(len));
    }
    // SAFETY: non-NULL, `len <= isize::MAX` checked above, and the caller
    // guarantees `len` readable bytes for the call.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

#[cold]
#[inline(never)]
fn null_data(len: usize) -> Failure {
    Failure::invalid(format!(
        "data is NULL but len is {len} (NULL is only valid with len 0)"
    ))
}

/// A poll limit: at least 1.
#[inline(always)]
pub(crate) fn limit(limit: c_int) -> Result<usize, Failure> {
    if limit < 1 {
        return Err(bad_limit(limit));
    }
    Ok(limit as usize)
}

#[cold]
#[inline(never)]
fn bad_limit(limit: c_int) -> Failure {
    Failure::invalid(format!("limit is {limit}; it must be at least 1"))
}

/// A timeout in milliseconds: zero or more.
pub(crate) fn timeout_ms(what: &str, ms: i64) -> Result<Duration, Failure> {
    u64::try_from(ms)
        .map(Duration::from_millis)
        .map_err(|_| Failure::invalid(format!("{what} is {ms} ms; it must be 0 or more")))
}

/// The `size` a C caller set in the size-first struct at `out` (its first
/// field, a `u32`): refused when `out` is NULL or `size` is under `min`.
/// `name` is the struct's C name and `init` its initialiser macro, for the
/// message.
///
/// # Safety
/// `out` is NULL or points to a struct of type `T` (starting with its `u32`
/// size field), aligned for `T`.
pub(crate) unsafe fn out_size<T>(
    out: *mut T,
    min: usize,
    name: &str,
    init: &str,
) -> Result<usize, Failure> {
    if out.is_null() {
        return Err(Failure::invalid_static("out is NULL"));
    }
    // SAFETY: non-NULL and, by the contract, starts with a `u32` size
    // field, aligned as the struct is.
    let size = unsafe { out.cast::<u32>().read() } as usize;
    if size < min {
        return Err(Failure::invalid(format!(
            "out->size is {size}; set it to sizeof({name}) first ({init})"
        )));
    }
    Ok(size)
}

/// Writes `value` to the size-first struct at `out`: as many bytes as
/// `size` (from [`out_size`]) says, at most `size_of::<T>()` (a caller
/// built for an older, shorter struct gets its prefix), and leaves `size`
/// as the caller set it.
///
/// # Safety
/// `out` points to `size` writable bytes (at least 4), aligned for `T`,
/// whose first field is the `u32` size.
pub(crate) unsafe fn write_sized<T: Copy>(out: *mut T, value: T, size: usize) {
    let n = size.min(size_of::<T>());
    // SAFETY: `value` is a live local of at least `n` bytes; the caller
    // guarantees `size >= n` writable bytes at `out`; they do not overlap.
    unsafe { std::ptr::copy_nonoverlapping((&raw const value).cast::<u8>(), out.cast::<u8>(), n) };
    // SAFETY: `out` is aligned for `T`, whose first field is a `u32`, and
    // at least 4 bytes are writable.
    unsafe { out.cast::<u32>().write(size as u32) };
}
