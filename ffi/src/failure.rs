//! [`Failure`]: a status code and its message, on their way to the caller.

use crate::status::{CONDUIT_INTERNAL, CONDUIT_INVALID_ARGUMENT};
use std::ffi::c_int;

/// The text of a failure: static for the outcomes that are retried in hot
/// loops (no allocation), formatted for the rest.
#[derive(Debug)]
pub(crate) enum Detail {
    Static(&'static str),
    Owned(String),
}

/// Why a call failed: the code it returns and the message
/// `conduit_last_error` will show.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: c_int,
    pub(crate) detail: Detail,
}

impl Failure {
    /// A bad call by the C caller (`CONDUIT_INVALID_ARGUMENT`).
    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            code: CONDUIT_INVALID_ARGUMENT,
            detail: Detail::Owned(message.into()),
        }
    }

    /// A bad call with a fixed message.
    pub(crate) const fn invalid_static(message: &'static str) -> Failure {
        Failure {
            code: CONDUIT_INVALID_ARGUMENT,
            detail: Detail::Static(message),
        }
    }

    /// A bug in conduit (`CONDUIT_INTERNAL`).
    pub(crate) fn internal(message: impl Into<String>) -> Failure {
        Failure {
            code: CONDUIT_INTERNAL,
            detail: Detail::Owned(message.into()),
        }
    }
}

impl From<conduit::Error> for Failure {
    #[cold]
    #[inline(never)]
    fn from(e: conduit::Error) -> Failure {
        let code = e.code();
        let detail = match e {
            // Retried in tight loops: no allocation on these paths.
            conduit::Error::BackPressured => {
                Detail::Static("back-pressured: the receiver has not made room yet (retry)")
            }
            conduit::Error::NotConnected => {
                Detail::Static("not connected: no subscriber is attached yet (retry)")
            }
            conduit::Error::TimedOut => Detail::Static("timed out"),
            conduit::Error::SessionRefused => Detail::Static(
                "session refused: another live publisher owns the subscription (retrying)",
            ),
            other => Detail::Owned(other.to_string()),
        };
        Failure { code, detail }
    }
}
