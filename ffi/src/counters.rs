//! `conduit_counters`: a handle's counters, for C.

use std::ffi::{c_char, CStr};

/// Counters of one handle (`conduit_publication_counters`,
/// `conduit_subscription_counters`). Fields are only ever appended.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct conduit_counters {
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
}

impl From<&conduit::Counters> for conduit_counters {
    fn from(c: &conduit::Counters) -> Self {
        conduit_counters {
            sent: c.sent,
            received: c.received,
            retransmitted: c.retransmitted,
            naks_sent: c.naks_sent,
            naks_received: c.naks_received,
            dropped: c.dropped,
        }
    }
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
