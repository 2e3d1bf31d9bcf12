//! Status codes: the values of `conduit::code`, as `#define`s in `conduit.h`.

use std::ffi::{c_char, c_int, CStr};

/// Success.
pub const CONDUIT_OK: c_int = 0;
/// The receiver has not made room yet: retry later, nothing was lost.
pub const CONDUIT_BACK_PRESSURED: c_int = -1;
/// No subscriber (or peer) is attached yet: retry later, nothing was lost.
pub const CONDUIT_NOT_CONNECTED: c_int = -2;
/// The handle, or the peer's stream, was closed cleanly.
pub const CONDUIT_CLOSED: c_int = -3;
/// A bad call: NULL pointer, malformed or non-UTF-8 URI, impossible length,
/// negative limit or timeout, a claim that is not open, a call made while a
/// claim is open or from inside a poll handler of the same handle.
pub const CONDUIT_INVALID_ARGUMENT: c_int = -4;
/// A message is longer than the channel allows
/// (see `conduit_publication_max_message_len`).
pub const CONDUIT_MESSAGE_TOO_LARGE: c_int = -5;
/// The peer's process died or stopped answering within the liveness timeout.
pub const CONDUIT_PEER_GONE: c_int = -6;
/// Shared memory or a peer's stream breaks the channel's invariants.
pub const CONDUIT_CORRUPT: c_int = -7;
/// The operating system refused an operation.
pub const CONDUIT_IO_ERROR: c_int = -8;
/// The two sides speak no common protocol or layout version.
pub const CONDUIT_VERSION_MISMATCH: c_int = -9;
/// A wait ran out before its condition was met.
pub const CONDUIT_TIMED_OUT: c_int = -10;
/// A bug in conduit (a caught panic): please report it with
/// `conduit_last_error()`.
pub const CONDUIT_INTERNAL: c_int = -11;
/// Stream data was lost beyond recovery (udp with the `gap=fail` policy).
pub const CONDUIT_UNRECOVERABLE_LOSS: c_int = -12;
/// udp publication: the subscription refused this publication's session
/// because another live publisher owns it. Nothing offered was accepted; the
/// publication keeps asking and takes over once that publisher is gone.
pub const CONDUIT_SESSION_REFUSED: c_int = -13;
/// udp subscription, returned once by a poll: a restarted publisher's new
/// session replaced the old one (data of the old one not yet delivered is
/// lost).
pub const CONDUIT_SESSION_REPLACED: c_int = -14;
/// udp: the publication's `mtu` is larger than the subscription's; both ends
/// report it and the publication stops. Use the same `mtu` on both ends.
pub const CONDUIT_MTU_MISMATCH: c_int = -17;
/// One end of a udp stream has a key (`key=PATH`) and the other none, or the
/// keys differ: the ends cannot talk.
pub const CONDUIT_KEY_MISMATCH: c_int = -15;
/// A shared-memory ring under the channel's name is owned by a uid that is
/// not allowed (a subscription attaches to its own uid's rings and those
/// named by `owners=`; a publication's name is squatted by another uid).
/// `conduit_last_error()` names the owner's uid.
pub const CONDUIT_FOREIGN_OWNER: c_int = -16;
/// shm publication open: a live publisher (in this process or another)
/// already owns the channel's name. `conduit_last_error()` names its pid.
pub const CONDUIT_PUBLISHER_ALIVE: c_int = -18;
/// shm subscription open: every subscriber slot of the ring is taken by a
/// live subscriber (the publication's `subscribers=` sets how many).
pub const CONDUIT_NO_FREE_SLOT: c_int = -19;
/// shm: the ring file under the name has another layout version (made by an
/// incompatible version of conduit).
pub const CONDUIT_LAYOUT_VERSION: c_int = -20;
/// shm: the file under the channel's name is not a conduit ring; it is left
/// alone.
pub const CONDUIT_NOT_A_CHANNEL: c_int = -21;
/// shm with `slow=evict`: once from a poll, this subscription held the
/// publisher back for longer than `evict_after` and was cut loose; it
/// continues from the live position. `conduit_last_error()` says how many
/// bytes it missed.
pub const CONDUIT_EVICTED: c_int = -23;
/// shm publication opened with `publishers=N`: all N publisher slots are
/// taken by live publishers (a dead publisher's slot is reclaimed).
pub const CONDUIT_TOO_MANY_PUBLISHERS: c_int = -22;

/// How long `conduit_publication_close` waits, at most, for subscribers to
/// consume (shm) or acknowledge (udp) what was offered before it, in
/// milliseconds.
pub const CONDUIT_CLOSE_LINGER_MS: c_int = 100;

// The C codes are the Rust codes: one table, checked at compile time.
const _: () = {
    use conduit::code;
    assert!(CONDUIT_OK == code::OK);
    assert!(CONDUIT_BACK_PRESSURED == code::BACK_PRESSURED);
    assert!(CONDUIT_NOT_CONNECTED == code::NOT_CONNECTED);
    assert!(CONDUIT_CLOSED == code::CLOSED);
    assert!(CONDUIT_INVALID_ARGUMENT == code::INVALID_ARGUMENT);
    assert!(CONDUIT_MESSAGE_TOO_LARGE == code::MESSAGE_TOO_LARGE);
    assert!(CONDUIT_PEER_GONE == code::PEER_GONE);
    assert!(CONDUIT_CORRUPT == code::CORRUPT);
    assert!(CONDUIT_IO_ERROR == code::IO_ERROR);
    assert!(CONDUIT_VERSION_MISMATCH == code::VERSION_MISMATCH);
    assert!(CONDUIT_TIMED_OUT == code::TIMED_OUT);
    assert!(CONDUIT_INTERNAL == code::INTERNAL);
    assert!(CONDUIT_UNRECOVERABLE_LOSS == code::UNRECOVERABLE_LOSS);
    assert!(CONDUIT_SESSION_REFUSED == code::SESSION_REFUSED);
    assert!(CONDUIT_SESSION_REPLACED == code::SESSION_REPLACED);
    assert!(CONDUIT_MTU_MISMATCH == code::MTU_MISMATCH);
    assert!(CONDUIT_KEY_MISMATCH == code::KEY_MISMATCH);
    assert!(CONDUIT_FOREIGN_OWNER == code::FOREIGN_OWNER);
    assert!(CONDUIT_PUBLISHER_ALIVE == code::PUBLISHER_ALIVE);
    assert!(CONDUIT_NO_FREE_SLOT == code::NO_FREE_SLOT);
    assert!(CONDUIT_LAYOUT_VERSION == code::LAYOUT_VERSION);
    assert!(CONDUIT_NOT_A_CHANNEL == code::NOT_A_CHANNEL);
    assert!(CONDUIT_EVICTED == code::EVICTED);
    assert!(CONDUIT_TOO_MANY_PUBLISHERS == code::TOO_MANY_PUBLISHERS);
};

/// The name of a status code.
pub(crate) fn name(code: c_int) -> &'static CStr {
    match code {
        c if c >= 0 => c"CONDUIT_OK",
        CONDUIT_BACK_PRESSURED => c"CONDUIT_BACK_PRESSURED",
        CONDUIT_NOT_CONNECTED => c"CONDUIT_NOT_CONNECTED",
        CONDUIT_CLOSED => c"CONDUIT_CLOSED",
        CONDUIT_INVALID_ARGUMENT => c"CONDUIT_INVALID_ARGUMENT",
        CONDUIT_MESSAGE_TOO_LARGE => c"CONDUIT_MESSAGE_TOO_LARGE",
        CONDUIT_PEER_GONE => c"CONDUIT_PEER_GONE",
        CONDUIT_CORRUPT => c"CONDUIT_CORRUPT",
        CONDUIT_IO_ERROR => c"CONDUIT_IO_ERROR",
        CONDUIT_VERSION_MISMATCH => c"CONDUIT_VERSION_MISMATCH",
        CONDUIT_TIMED_OUT => c"CONDUIT_TIMED_OUT",
        CONDUIT_INTERNAL => c"CONDUIT_INTERNAL",
        CONDUIT_UNRECOVERABLE_LOSS => c"CONDUIT_UNRECOVERABLE_LOSS",
        CONDUIT_SESSION_REFUSED => c"CONDUIT_SESSION_REFUSED",
        CONDUIT_SESSION_REPLACED => c"CONDUIT_SESSION_REPLACED",
        CONDUIT_MTU_MISMATCH => c"CONDUIT_MTU_MISMATCH",
        CONDUIT_KEY_MISMATCH => c"CONDUIT_KEY_MISMATCH",
        CONDUIT_FOREIGN_OWNER => c"CONDUIT_FOREIGN_OWNER",
        CONDUIT_PUBLISHER_ALIVE => c"CONDUIT_PUBLISHER_ALIVE",
        CONDUIT_NO_FREE_SLOT => c"CONDUIT_NO_FREE_SLOT",
        CONDUIT_LAYOUT_VERSION => c"CONDUIT_LAYOUT_VERSION",
        CONDUIT_NOT_A_CHANNEL => c"CONDUIT_NOT_A_CHANNEL",
        CONDUIT_EVICTED => c"CONDUIT_EVICTED",
        CONDUIT_TOO_MANY_PUBLISHERS => c"CONDUIT_TOO_MANY_PUBLISHERS",
        _ => c"CONDUIT_UNKNOWN_STATUS",
    }
}

/// The name of status code `status` (`"CONDUIT_BACK_PRESSURED"`, ...):
/// `"CONDUIT_OK"` for any non-negative value, `"CONDUIT_UNKNOWN_STATUS"` for a
/// negative value this library does not define. Never NULL; the string is
/// static.
///
/// Threads: any thread, any time.
#[no_mangle]
pub extern "C" fn conduit_status_string(status: c_int) -> *const c_char {
    name(status).as_ptr()
}
