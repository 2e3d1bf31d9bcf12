//! The thread-local status and message of the last failed call
//! (`conduit_last_status`, `conduit_last_error`).

use crate::failure::{Detail, Failure};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CString};

/// One thread's last failure. Recorded cheaply (a function name and a
/// detail), rendered into a C string only when asked for.
struct LastError {
    code: c_int,
    function: &'static str,
    detail: Option<Detail>,
    rendered: Option<CString>,
}

thread_local! {
    static LAST: RefCell<LastError> = const {
        RefCell::new(LastError { code: 0, function: "", detail: None, rendered: None })
    };
}

/// Records `failure`, raised by `function`, as this thread's last failure.
pub(crate) fn record(function: &'static str, failure: Failure) {
    // `try_with`: a call made while the thread is being torn down (from a
    // TLS destructor) has nowhere to store its message; it still returns
    // its code.
    let _ = LAST.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            last.code = failure.code;
            last.function = function;
            last.detail = Some(failure.detail);
            last.rendered = None;
        }
    });
}

fn render(function: &str, detail: &Detail) -> CString {
    let text = match detail {
        Detail::Static(s) => format!("{function}: {s}"),
        Detail::Owned(s) => format!("{function}: {s}"),
    };
    // A message quoting caller input may hold a NUL byte: show it escaped.
    CString::new(text.replace('\0', "\\0")).unwrap_or_default()
}

/// The message of this thread's last failed call: `"function: what went
/// wrong"`, or `""` if no call has failed on this thread yet. Never NULL.
///
/// The string belongs to the library and stays valid until the next call
/// that fails on the same thread (successful calls leave it alone); copy it
/// to keep it longer.
///
/// Threads: any thread; each thread sees its own last failure.
#[no_mangle]
pub extern "C" fn conduit_last_error() -> *const c_char {
    crate::boundary::guard(
        "conduit_last_error",
        |_| c"".as_ptr(),
        || {
            let ptr = LAST
                .try_with(|last| {
                    let Ok(mut last) = last.try_borrow_mut() else {
                        return c"".as_ptr();
                    };
                    let last = &mut *last;
                    let Some(detail) = last.detail.as_ref() else {
                        return c"".as_ptr();
                    };
                    let function = last.function;
                    last.rendered
                        .get_or_insert_with(|| render(function, detail))
                        .as_ptr()
                })
                .unwrap_or(c"".as_ptr());
            Ok(ptr)
        },
    )
}

/// The status code of this thread's last failed call (a negative
/// `CONDUIT_*` value), or `CONDUIT_OK` (0) if no call has failed on this
/// thread yet.
///
/// Calls that return a status give it directly; this is for those that
/// cannot: a `conduit_publication_open` or `conduit_subscription_open` that
/// returns NULL leaves here why (`CONDUIT_INVALID_ARGUMENT` for a bad URI,
/// `CONDUIT_PUBLISHER_ALIVE`, `CONDUIT_NO_FREE_SLOT`,
/// `CONDUIT_LAYOUT_VERSION`, `CONDUIT_NOT_A_CHANNEL`,
/// `CONDUIT_FOREIGN_OWNER`, `CONDUIT_IO_ERROR`, ...), beside the message of
/// `conduit_last_error()`. Like that message, it stays until the next call
/// that fails on the same thread (successful calls leave it alone).
///
/// Threads: any thread; each thread sees its own last failure.
#[no_mangle]
pub extern "C" fn conduit_last_status() -> c_int {
    LAST.try_with(|last| last.try_borrow().map_or(0, |last| last.code))
        .unwrap_or(0)
}
