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
///
/// Built for the hot path: a failure is recorded inside the boundary, out of
/// line, so only the value or a bare code crosses `catch_unwind`.
#[inline(always)]
pub(crate) fn guard<T>(
    function: &'static str,
    on_failure: impl FnOnce(c_int) -> T,
    body: impl FnOnce() -> Result<T, Failure>,
) -> T {
    // AssertUnwindSafe: after a panic the handle's Rust state is still
    // memory-safe (it is plain Rust data); the caller learns of the bug from
    // CONDUIT_INTERNAL and decides whether to go on using it.
    let outcome = catch_unwind(AssertUnwindSafe(|| match body() {
        Ok(value) => Ok(value),
        Err(failure) => Err(record(function, failure)),
    }));
    match outcome {
        Ok(Ok(value)) => value,
        Ok(Err(code)) => on_failure(code),
        Err(payload) => on_failure(record_panic(function, payload)),
    }
}

#[cold]
#[inline(never)]
fn record(function: &'static str, failure: Failure) -> c_int {
    let code = failure.code;
    last_error::record(function, failure);
    code
}

#[cold]
#[inline(never)]
fn record_panic(function: &'static str, payload: Box<dyn Any + Send>) -> c_int {
    let failure = Failure::internal(format!(
        "internal error (a bug in conduit): panicked: {}",
        panic_message(&*payload)
    ));
    // Dropping a payload runs foreign code that may panic again, outside any
    // boundary: leak it instead (panics are bugs, rare).
    std::mem::forget(payload);
    last_error::record(function, failure);
    CONDUIT_INTERNAL
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
