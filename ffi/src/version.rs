//! `conduit_version`.

use std::ffi::{c_char, CStr};

const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the package version holds a NUL byte"),
    };

/// The library's version, `"MAJOR.MINOR.PATCH"`. A static string, never
/// NULL.
///
/// Threads: any thread, any time.
#[no_mangle]
pub extern "C" fn conduit_version() -> *const c_char {
    VERSION.as_ptr()
}
