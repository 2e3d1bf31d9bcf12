//! C ABI for conduit: `libconduit.so` / `libconduit.a` and `include/conduit.h`.
//!
//! Every exported function checks its arguments (NULL pointers, URIs,
//! lengths, claim state), runs inside a panic boundary, and reports failures
//! as a negative status code plus a thread-local message
//! (`conduit_last_error`). The header is generated from this crate by
//! cbindgen; a test fails when the committed header is out of date.
#![deny(missing_docs)]
// The C names are the API.
#![allow(non_camel_case_types)]

mod args;
mod boundary;
mod claim;
mod counters;
mod failure;
mod last_error;
mod publication;
mod status;
mod subscription;
mod version;

pub use claim::{conduit_claim, conduit_claim_abort, conduit_claim_commit};
pub use counters::conduit_counters;
pub use last_error::{conduit_last_error, conduit_last_status};
pub use publication::{
    conduit_publication, conduit_publication_close, conduit_publication_close_linger,
    conduit_publication_counters, conduit_publication_driver, conduit_publication_flush,
    conduit_publication_is_connected, conduit_publication_max_message_len,
    conduit_publication_offer, conduit_publication_open, conduit_publication_try_claim,
};
pub use publication::{
    conduit_publication_next_receiver_event, conduit_receiver_event, CONDUIT_RECEIVER_EVENT_GONE,
    CONDUIT_RECEIVER_EVENT_JOINED, CONDUIT_RECEIVER_GONE_LEFT, CONDUIT_RECEIVER_GONE_TIMED_OUT,
};
pub use status::*;
pub use subscription::{
    conduit_handler, conduit_subscription, conduit_subscription_close,
    conduit_subscription_counters, conduit_subscription_driver, conduit_subscription_is_connected,
    conduit_subscription_open, conduit_subscription_poll, conduit_subscription_poll_timeout,
};
pub use subscription::{
    conduit_handler_ex, conduit_header, conduit_subscription_poll_ex, CONDUIT_SOURCE_NONE,
    CONDUIT_SOURCE_SHM,
};
pub use subscription::{
    conduit_session_event, conduit_subscription_next_session_event, CONDUIT_GONE_CLOSED,
    CONDUIT_GONE_FAILED, CONDUIT_GONE_TIMED_OUT, CONDUIT_SESSION_EVENT_GONE,
    CONDUIT_SESSION_EVENT_JOINED, CONDUIT_SESSION_EVENT_REPLACED, CONDUIT_SOURCE_UDP,
};
pub use version::conduit_version;

#[cfg(test)]
mod abi_tests;
