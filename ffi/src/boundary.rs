//! The panic boundary every exported function runs inside.
//!
//! No Rust panic unwinds into C: a panic becomes `CONDUIT_INTERNAL` (or NULL)
//! and a message from `conduit_last_error`.

use crate::failure::Failure;
use crate::last_error;
use crate::status::CONDUIT_INTERNAL;
use std::any::Any;
use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `body`; on failure records the message as `function`'s and returns
/// `on_failure(code)`; on a panic does the same with `CONDUIT_INTERNAL`.
#[inline]
pub(crate) fn guard<T>(
    function: &'static str,
    on_failure: impl FnOnce(c_int) -> T,
    body: impl FnOnce() -> Result<T, Failure>,
) -> T {
    // AssertUnwindSafe: after a panic the handle's Rust state is still
    // memory-safe (it is plain Rust data); the caller learns of the bug from
    // CONDUIT_INTERNAL and decides whether to go on using it.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => value,
        Ok(Err(failure)) => {
            let code = failure.code;
            last_error::record(function, failure);
            on_failure(code)
        }
        Err(payload) => {
            let failure = Failure::internal(format!(
                "internal error (a bug in conduit): panicked: {}",
                panic_message(&*payload)
            ));
            // Dropping a payload runs foreign code that may panic again,
            // outside any boundary: leak it instead (panics are bugs, rare).
            std::mem::forget(payload);
            last_error::record(function, failure);
            on_failure(CONDUIT_INTERNAL)
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a panic without a message)"
    }
}
