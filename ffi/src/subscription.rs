//! `conduit_subscription`: the receiving end of a channel.

use crate::args;
use crate::boundary::guard;
use crate::counters::{self, conduit_counters};
use crate::failure::Failure;
use conduit::{Received, Subscription};
use std::cell::{Cell, UnsafeCell};
use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;

/// Marks a live subscription handle (a best-effort check against passing
/// another kind of pointer, or a handle already closed).
const MAGIC: u64 = 0x636f_6e64_7375_6273; // "condsubs"

/// Called by `conduit_subscription_poll` for each message, in order, on the
/// polling thread. `data` points to `len` bytes valid only during the call
/// (copy what you keep); for `len == 0` it is a non-NULL pointer that must
/// not be read. `user` is the pointer given to poll.
///
/// The handler may call any function on other handles. On the subscription
/// being polled, it may only call `conduit_subscription_close` (which then
/// takes effect when poll returns); other calls on it fail with
/// `CONDUIT_INVALID_ARGUMENT`. It must return normally (no longjmp, no C++
/// exception).
pub type conduit_handler =
    Option<unsafe extern "C" fn(user: *mut c_void, type_id: u32, data: *const u8, len: usize)>;

/// `conduit_header::source_kind`: the channel does not tell who sent the message.
pub const CONDUIT_SOURCE_NONE: u32 = 0;
/// `conduit_header::source_kind`: a publisher of a `shm:` channel;
/// `source_index` is its publisher slot (0 on a single-publisher channel)
/// and `source_pid` its process id.
pub const CONDUIT_SOURCE_SHM: u32 = 1;
/// `conduit_header::source_kind`: a publisher session of a `udp:` channel;
/// `source_session` is its session id, `source_family` (4 or 6),
/// `source_port` and `source_addr` its address.
pub const CONDUIT_SOURCE_UDP: u32 = 2;

/// What `conduit_subscription_poll_ex` tells about a message besides its
/// payload. `size` comes first and is the size of the struct this library
/// fills: later versions append fields (UDP sources, ...), so read a field
/// only if it lies within `size`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct conduit_header {
    /// Size of this struct in bytes, as filled by the library.
    pub size: u32,
    /// The message's type id.
    pub type_id: u32,
    /// Stream position of the message's first byte.
    pub position: u64,
    /// Who sent it: `CONDUIT_SOURCE_NONE`, `CONDUIT_SOURCE_SHM` or
    /// `CONDUIT_SOURCE_UDP`.
    pub source_kind: u32,
    /// `CONDUIT_SOURCE_SHM`: the publisher's slot index.
    pub source_index: u32,
    /// `CONDUIT_SOURCE_SHM`: the publisher's process id.
    pub source_pid: u32,
    /// Zero.
    pub reserved: u32,
    /// `CONDUIT_SOURCE_UDP`: the publisher's session id.
    pub source_session: u32,
    /// `CONDUIT_SOURCE_UDP`: the publisher's port (host byte order).
    pub source_port: u16,
    /// `CONDUIT_SOURCE_UDP`: 4 (IPv4, the first 4 bytes of `source_addr`)
    /// or 6 (IPv6).
    pub source_family: u16,
    /// `CONDUIT_SOURCE_UDP`: the publisher's IP address, network byte order.
    pub source_addr: [u8; 16],
}

/// `(family, port, address bytes)` of a socket address, as the C structs
/// carry it.
pub(crate) fn c_addr(a: std::net::SocketAddr) -> (u16, u16, [u8; 16]) {
    let mut b = [0u8; 16];
    match a.ip() {
        std::net::IpAddr::V4(ip) => {
            b[..4].copy_from_slice(&ip.octets());
            (4, a.port(), b)
        }
        std::net::IpAddr::V6(ip) => (6, a.port(), ip.octets()),
    }
}

/// Called by `conduit_subscription_poll_ex` for each message, in order, on
/// the polling thread: as `conduit_handler`, with the message's header
/// (valid only during the call) instead of its type id.
pub type conduit_handler_ex = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        header: *const conduit_header,
        data: *const u8,
        len: usize,
    ),
>;

/// The header of `m`.
fn header_of(m: &Received<'_>) -> conduit_header {
    let mut h = conduit_header {
        size: std::mem::size_of::<conduit_header>() as u32,
        type_id: m.type_id(),
        position: m.position(),
        ..conduit_header::default()
    };
    match m.source() {
        Some(conduit::Source::Shm { index, pid }) => {
            h.source_kind = CONDUIT_SOURCE_SHM;
            h.source_index = u32::from(index);
            h.source_pid = pid;
        }
        Some(conduit::Source::Udp { addr, session }) => {
            h.source_kind = CONDUIT_SOURCE_UDP;
            h.source_session = session;
            (h.source_family, h.source_port, h.source_addr) = c_addr(addr);
        }
        _ => {}
    }
    h
}

const REENTRY: &str =
    "called from inside this subscription's poll handler (only close is allowed there)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    /// Inside poll: the subscription is borrowed by it.
    Polling,
    /// Inside poll, and the handler asked to close: poll frees the handle.
    CloseRequested,
}

/// An open subscription (opaque). Create with `conduit_subscription_open`,
/// free with `conduit_subscription_close`.
///
/// Threads: a subscription may be used from any thread, but from one thread
/// at a time (calls on the same subscription must not overlap).
pub struct conduit_subscription {
    _opaque: [u8; 0],
}

/// What a `conduit_subscription` pointer points to. `repr(C)` with the marker first, so
/// that the marker of any handle can be read before trusting its type.
#[repr(C)]
pub(crate) struct SubscriptionHandle {
    magic: u64,
    state: Cell<State>,
    /// Borrowed mutably only by `with_subscription` and `poll_now`,
    /// which `state` keeps from nesting.
    subscription: UnsafeCell<Subscription>,
}

/// Puts a subscription back to `Idle` when its poll ends, even by a panic
/// (unless the handler asked for it to be closed).
struct Reentry<'a>(&'a Cell<State>);

impl Drop for Reentry<'_> {
    fn drop(&mut self) {
        if self.0.get() == State::Polling {
            self.0.set(State::Idle);
        }
    }
}

impl SubscriptionHandle {
    /// The handle behind a pointer from C.
    ///
    /// # Safety
    /// `s` is NULL or a pointer returned by `conduit_subscription_open` and
    /// not yet closed; no call on it runs on another thread meanwhile.
    #[inline(always)]
    unsafe fn from_ptr<'a>(
        p: *const conduit_subscription,
    ) -> Result<&'a SubscriptionHandle, Failure> {
        if p.is_null() {
            return Err(Failure::invalid_static("subscription is NULL"));
        }
        // SAFETY: a live handle of either kind starts with its `u64` marker
        // (both are `repr(C)`, marker first), so these 8 bytes are readable
        // and aligned; the caller passes a live handle.
        let magic = unsafe { p.cast::<u64>().read() };
        if magic != MAGIC {
            return Err(Failure::invalid_static(
                "not a live subscription handle (closed already, or another kind of pointer)",
            ));
        }
        // SAFETY: the marker says `p` points to a live `SubscriptionHandle`. Only shared
        // references to handles are ever made, so this one aliases nothing
        // mutable (mutable state sits in cells).
        let handle = unsafe { &*p.cast::<SubscriptionHandle>() };
        Ok(handle)
    }

    /// Runs `f` on the subscription, unless it is being polled (a call from
    /// the poll handler).
    #[inline(always)]
    fn with_subscription<R>(
        &self,
        f: impl FnOnce(&mut Subscription) -> Result<R, Failure>,
    ) -> Result<R, Failure> {
        if self.state.get() != State::Idle {
            return Err(Failure::invalid_static(REENTRY));
        }
        self.state.set(State::Polling);
        let _reentry = Reentry(&self.state);
        // SAFETY: `state` was Idle, so no other `&mut` to the subscription
        // exists (one thread at a time; a nested call from the handler sees
        // Polling and stops above). This borrow ends with `f`.
        let subscription = unsafe { &mut *self.subscription.get() };
        f(subscription)
    }
}

impl Drop for SubscriptionHandle {
    fn drop(&mut self) {
        // SAFETY: `self.magic` is a valid, aligned field of a live value.
        unsafe { std::ptr::write_volatile(&mut self.magic, 0) };
    }
}

/// Opens a subscription to the channel at `uri` (see
/// `conduit_publication_open`). The publication need not exist yet: polls
/// return 0 until it appears. Each subscription receives every message, in
/// order, from the point it joined.
///
/// Returns the new handle, or NULL on failure with `conduit_last_status()`
/// and `conduit_last_error()` set: `CONDUIT_INVALID_ARGUMENT` for a NULL,
/// non-UTF-8, over-long or malformed URI or an unknown parameter; for an
/// existing `shm:` ring that cannot be opened, `CONDUIT_NO_FREE_SLOT`,
/// `CONDUIT_LAYOUT_VERSION`, `CONDUIT_NOT_A_CHANNEL`,
/// `CONDUIT_FOREIGN_OWNER`, `CONDUIT_CORRUPT` or `CONDUIT_IO_ERROR`.
///
/// Threads: any thread. The handle may then be used from any thread, one
/// thread at a time.
///
/// # Safety
/// `uri` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn conduit_subscription_open(
    uri: *const c_char,
) -> *mut conduit_subscription {
    guard(
        "conduit_subscription_open",
        |_| std::ptr::null_mut(),
        || {
            // SAFETY: the caller passes NULL or a NUL-terminated string.
            let uri = unsafe { args::uri(uri) }?;
            let subscription = Subscription::open(uri)?;
            Ok(Box::into_raw(Box::new(SubscriptionHandle {
                magic: MAGIC,
                state: Cell::new(State::Idle),
                subscription: UnsafeCell::new(subscription),
            }))
            .cast::<conduit_subscription>())
        },
    )
}

/// Polls `s` once without waiting: the hot path, kept flat so that the
/// ring's poll inlines into the exported function.
///
/// # Safety
/// `s` is NULL or a live subscription.
#[inline(always)]
unsafe fn poll_now<F: FnMut(Received<'_>)>(
    s: *mut conduit_subscription,
    deliver: Option<F>,
    limit: c_int,
) -> Result<c_int, Failure> {
    // SAFETY: the caller passes NULL or a live subscription.
    let handle = unsafe { SubscriptionHandle::from_ptr(s) }?;
    let Some(mut deliver) = deliver else {
        return Err(Failure::invalid_static("handler is NULL"));
    };
    let limit = args::limit(limit)?;
    if handle.state.get() != State::Idle {
        return Err(Failure::invalid_static(REENTRY));
    }
    // SAFETY: `state` is Idle, so no other `&mut` to the subscription exists
    // (one thread at a time); this borrow ends before the next one below.
    if unsafe { &mut *handle.subscription.get() }.poll_idle() {
        // Spinning on an empty `shm:` channel: nothing else to do.
        return Ok(0);
    }
    handle.state.set(State::Polling);
    let reentry = Reentry(&handle.state);
    // SAFETY: `state` was Idle, so no other `&mut` to the subscription exists
    // (one thread at a time; a nested call from the handler sees Polling and
    // stops above). This borrow ends with the poll.
    let subscription = unsafe { &mut *handle.subscription.get() };
    let state = &handle.state;
    let result = subscription.poll(
        |m: Received<'_>| {
            if state.get() == State::CloseRequested {
                // The handler closed the subscription: no more messages.
                return;
            }
            deliver(m)
        },
        limit,
    );
    drop(reentry);
    if handle.state.get() == State::CloseRequested {
        // SAFETY: `s` came from `Box::into_raw` in `conduit_subscription_open`;
        // the handler gave it up with close, and the poll's borrows ended.
        drop(unsafe { Box::from_raw(s.cast::<SubscriptionHandle>()) });
    }
    match result {
        Ok(n) => Ok(c_int::try_from(n).unwrap_or(c_int::MAX)),
        Err(e) => Err(Failure::from(e)),
    }
}

/// Polls `s` waiting up to `timeout`, then frees the handle if the handler
/// closed it.
///
/// # Safety
/// `s` is NULL or a live subscription.
unsafe fn poll_wait(
    s: *mut conduit_subscription,
    handler: conduit_handler,
    user: *mut c_void,
    limit: c_int,
    timeout: Duration,
) -> Result<c_int, Failure> {
    // SAFETY: the caller passes NULL or a live subscription.
    let handle = unsafe { SubscriptionHandle::from_ptr(s) }?;
    let handler = handler.ok_or(Failure::invalid_static("handler is NULL"))?;
    let limit = args::limit(limit)?;
    let state = &handle.state;
    let deliver = |m: Received<'_>| {
        if state.get() == State::CloseRequested {
            // The handler closed the subscription: it gets no more messages.
            return;
        }
        let payload = m.payload();
        // SAFETY: a C function pointer given by the caller with the
        // documented signature; `payload` is valid for this call.
        unsafe { handler(user, m.type_id(), payload.as_ptr(), payload.len()) }
    };
    let result = handle.with_subscription(|sub| {
        sub.poll_timeout(deliver, limit, timeout)
            .map_err(Failure::from)
    });
    if handle.state.get() == State::CloseRequested {
        // SAFETY: `s` came from `Box::into_raw` in `conduit_subscription_open`;
        // the handler gave it up with close, and the poll's borrows ended.
        drop(unsafe { Box::from_raw(s.cast::<SubscriptionHandle>()) });
    }
    let n = result?;
    Ok(c_int::try_from(n).unwrap_or(c_int::MAX))
}

/// Hands up to `limit` (at least 1) available messages to `handler`, in
/// order, without waiting. Returns how many were handled (0 if none was
/// available), or a negative status: `CONDUIT_CLOSED` when the publication
/// closed cleanly, `CONDUIT_PEER_GONE` once when its process died (after
/// every message it committed was delivered; later polls wait for a new
/// publication), `CONDUIT_CORRUPT`, `CONDUIT_UNRECOVERABLE_LOSS` (udp with
/// `gap=fail`), `CONDUIT_SESSION_REPLACED` (udp, once: a restarted
/// publisher's new session replaced the old one), `CONDUIT_MTU_MISMATCH` (udp,
/// once: a publication with a larger `mtu` was rejected),
/// `CONDUIT_INVALID_ARGUMENT` (NULL `s` or `handler`, `limit <
/// 1`, a call from this subscription's own handler).
///
/// Drives the subscription's I/O and timers.
///
/// Threads: the thread currently using `s`; the handler runs on it.
///
/// # Safety
/// `s` is NULL or a live subscription; `handler` follows `conduit_handler`'s
/// rules; `user` is passed to it untouched.
#[no_mangle]
pub unsafe extern "C" fn conduit_subscription_poll(
    s: *mut conduit_subscription,
    handler: conduit_handler,
    user: *mut c_void,
    limit: c_int,
) -> c_int {
    guard(
        "conduit_subscription_poll",
        |code| code,
        || {
            let deliver = handler.map(|h| {
                move |m: Received<'_>| {
                    let payload = m.payload();
                    // SAFETY: a C function pointer given by the caller with the
                    // documented signature; `payload` is valid for this call.
                    unsafe { h(user, m.type_id(), payload.as_ptr(), payload.len()) }
                }
            });
            // SAFETY: same contract.
            unsafe { poll_now(s, deliver, limit) }
        },
    )
}

/// As `conduit_subscription_poll`, handing each message's header (type id,
/// stream position, sender) to `handler`.
///
/// Threads: the thread currently using `s`; the handler runs on it.
///
/// # Safety
/// As `conduit_subscription_poll`, with `handler` following
/// `conduit_handler_ex`'s rules.
#[no_mangle]
pub unsafe extern "C" fn conduit_subscription_poll_ex(
    s: *mut conduit_subscription,
    handler: conduit_handler_ex,
    user: *mut c_void,
    limit: c_int,
) -> c_int {
    guard(
        "conduit_subscription_poll_ex",
        |code| code,
        || {
            let deliver = handler.map(|h| {
                move |m: Received<'_>| {
                    let header = header_of(&m);
                    let payload = m.payload();
                    // SAFETY: a C function pointer given by the caller with the
                    // documented signature; `header` and `payload` are valid
                    // for this call.
                    unsafe { h(user, &header, payload.as_ptr(), payload.len()) }
                }
            });
            // SAFETY: same contract.
            unsafe { poll_now(s, deliver, limit) }
        },
    )
}

/// As `conduit_subscription_poll`, but when no message is available waits
/// up to `timeout_ms` milliseconds for one, with the channel's wait strategy
/// (`wait=spin|yield|block` in the URI). Returns 0 if none came in time.
/// A negative `timeout_ms` is `CONDUIT_INVALID_ARGUMENT`.
///
/// Threads: the thread currently using `s`; the handler runs on it.
///
/// # Safety
/// As `conduit_subscription_poll`.
#[no_mangle]
pub unsafe extern "C" fn conduit_subscription_poll_timeout(
    s: *mut conduit_subscription,
    handler: conduit_handler,
    user: *mut c_void,
    limit: c_int,
    timeout_ms: i64,
) -> c_int {
    guard(
        "conduit_subscription_poll_timeout",
        |code| code,
        || {
            let timeout = args::timeout_ms("timeout_ms", timeout_ms)?;
            // SAFETY: same contract.
            unsafe { poll_wait(s, handler, user, limit, timeout) }
        },
    )
}

/// 1 while attached to a live publication, else 0. Also 0 for a bad call
/// (NULL `s`, a call from its own poll handler), with `conduit_last_error()`
/// set.
///
/// Drives the subscription's I/O and timers.
///
/// Threads: the thread currently using `s`.
///
/// # Safety
/// `s` is NULL or a live subscription.
#[no_mangle]
pub unsafe extern "C" fn conduit_subscription_is_connected(
    s: *const conduit_subscription,
) -> c_int {
    guard(
        "conduit_subscription_is_connected",
        |_| 0,
        || {
            // SAFETY: the caller passes NULL or a live subscription.
            let handle = unsafe { SubscriptionHandle::from_ptr(s) }?;
            handle.with_subscription(|s| Ok(c_int::from(s.is_connected())))
        },
    )
}

/// Fills `*out` with `s`'s counters, as many fields as `out->size` bytes
/// hold (set it to `sizeof(conduit_counters)`, e.g. with
/// `CONDUIT_COUNTERS_INIT`). Returns 0, or `CONDUIT_INVALID_ARGUMENT` (NULL
/// `s` or `out`, `out->size` under 16, a call from its own poll handler).
///
/// Threads: the thread currently using `s`.
///
/// # Safety
/// `s` is NULL or a live subscription; `out` is NULL or points to a writable
/// `conduit_counters` whose `size` says how many bytes it has.
#[no_mangle]
pub unsafe extern "C" fn conduit_subscription_counters(
    s: *const conduit_subscription,
    out: *mut conduit_counters,
) -> c_int {
    guard(
        "conduit_subscription_counters",
        |code| code,
        || {
            // SAFETY: the caller passes NULL or a live subscription.
            let handle = unsafe { SubscriptionHandle::from_ptr(s) }?;
            let c = handle.with_subscription(|s| Ok(s.counters()))?;
            // SAFETY: the caller passes NULL or a writable conduit_counters
            // of at least `out->size` bytes.
            unsafe { counters::write(out, &c) }?;
            Ok(0)
        },
    )
}

/// The I/O driver `s` runs on: `"shm"`, `"uring"` or `"socket"`. A static
/// string; NULL for a bad call.
///
/// Threads: the thread currently using `s`.
///
/// # Safety
/// `s` is NULL or a live subscription.
#[no_mangle]
pub unsafe extern "C" fn conduit_subscription_driver(
    s: *const conduit_subscription,
) -> *const c_char {
    guard(
        "conduit_subscription_driver",
        |_| std::ptr::null(),
        || {
            // SAFETY: the caller passes NULL or a live subscription.
            let handle = unsafe { SubscriptionHandle::from_ptr(s) }?;
            let driver = handle.with_subscription(|s| Ok(s.counters().driver))?;
            Ok(counters::driver_name(driver))
        },
    )
}

/// Closes `s` and frees it. NULL is a no-op. Called from `s`'s own poll
/// handler, it takes effect when that poll returns: the handler is not
/// called again, and the rest of the batch is dropped.
///
/// Threads: the thread currently using `s`; `s` is dangling afterwards.
///
/// # Safety
/// `s` is NULL or a live subscription, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn conduit_subscription_close(s: *mut conduit_subscription) {
    guard(
        "conduit_subscription_close",
        |_| (),
        || {
            if s.is_null() {
                return Ok(());
            }
            // SAFETY: the caller passes a live subscription.
            let handle = unsafe { SubscriptionHandle::from_ptr(s) }?;
            match handle.state.get() {
                State::Idle => {
                    // SAFETY: `s` came from `Box::into_raw` in
                    // `conduit_subscription_open` (the marker matched), no poll
                    // borrows it, and the caller gives it up now.
                    drop(unsafe { Box::from_raw(s.cast::<SubscriptionHandle>()) });
                }
                State::Polling => handle.state.set(State::CloseRequested),
                State::CloseRequested => {
                    return Err(Failure::invalid_static(
                        "subscription is already being closed",
                    ))
                }
            }
            Ok(())
        },
    )
}

/// `conduit_session_event::kind`: a publisher session joined (or resumed).
pub const CONDUIT_SESSION_EVENT_JOINED: u32 = 1;
/// `conduit_session_event::kind`: a publisher session ended; `reason` says
/// why.
pub const CONDUIT_SESSION_EVENT_GONE: u32 = 2;
/// `conduit_session_event::kind`: a publisher restarted at the same address;
/// its new session (`session`) replaced the old one (`old_session`).
pub const CONDUIT_SESSION_EVENT_REPLACED: u32 = 3;
/// `conduit_session_event::reason`: the publisher closed the session.
pub const CONDUIT_GONE_CLOSED: u32 = 1;
/// `conduit_session_event::reason`: the publisher was silent past the
/// liveness timeout (the session joins again if it comes back).
pub const CONDUIT_GONE_TIMED_OUT: u32 = 2;
/// `conduit_session_event::reason`: the session's stream failed on
/// unrecoverable loss (`gap=fail`).
pub const CONDUIT_GONE_FAILED: u32 = 3;

/// A change in the set of publisher sessions of a `udp:` subscription,
/// filled by `conduit_subscription_next_session_event`. Set `size` to
/// `sizeof(conduit_session_event)` first (`CONDUIT_SESSION_EVENT_INIT`);
/// the library fills as many bytes as `size` says (later versions append
/// fields) and leaves `size` as it was.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct conduit_session_event {
    /// Size of the struct in bytes, set by the caller.
    pub size: u32,
    /// `CONDUIT_SESSION_EVENT_JOINED`, `CONDUIT_SESSION_EVENT_GONE` or
    /// `CONDUIT_SESSION_EVENT_REPLACED`.
    pub kind: u32,
    /// `CONDUIT_SESSION_EVENT_GONE`: `CONDUIT_GONE_CLOSED`,
    /// `CONDUIT_GONE_TIMED_OUT` or `CONDUIT_GONE_FAILED`; else 0.
    pub reason: u32,
    /// The session id (the new one for `CONDUIT_SESSION_EVENT_REPLACED`).
    pub session: u32,
    /// `CONDUIT_SESSION_EVENT_REPLACED`: the old session id; else 0.
    pub old_session: u32,
    /// The publisher's port (host byte order).
    pub port: u16,
    /// 4 (IPv4, the first 4 bytes of `addr`) or 6 (IPv6).
    pub family: u16,
    /// The publisher's IP address, network byte order.
    pub addr: [u8; 16],
}

/// The smallest `conduit_session_event::size` accepted (through `session`).
const SESSION_EVENT_MIN_SIZE: usize = 16;

impl conduit_session_event {
    fn of(e: conduit::SessionEvent) -> Option<conduit_session_event> {
        let mut out = conduit_session_event::default();
        let addr = match e {
            conduit::SessionEvent::Joined {
                source: conduit::Source::Udp { addr, session },
            } => {
                out.kind = CONDUIT_SESSION_EVENT_JOINED;
                out.session = session;
                addr
            }
            conduit::SessionEvent::Gone {
                source: conduit::Source::Udp { addr, session },
                reason,
            } => {
                out.kind = CONDUIT_SESSION_EVENT_GONE;
                out.session = session;
                out.reason = match reason {
                    conduit::GoneReason::Closed => CONDUIT_GONE_CLOSED,
                    conduit::GoneReason::Failed => CONDUIT_GONE_FAILED,
                    _ => CONDUIT_GONE_TIMED_OUT,
                };
                addr
            }
            conduit::SessionEvent::Replaced { addr, old, new } => {
                out.kind = CONDUIT_SESSION_EVENT_REPLACED;
                out.session = new;
                out.old_session = old;
                addr
            }
            _ => return None,
        };
        (out.family, out.port, out.addr) = c_addr(addr);
        Some(out)
    }
}

/// Takes the next session event of `s` (a `udp:` subscription: a
/// publisher session joined, ended or was replaced) into `*out`, as many
/// bytes as `out->size` says. Returns 1 when an event was written, 0 when
/// there is none (always for `shm:`), or `CONDUIT_INVALID_ARGUMENT` (NULL
/// `s` or `out`, `out->size` under 16, a call from its own poll handler).
/// Events are queued as polls see them (at most 64 + 3 × `max_sessions`).
///
/// Threads: the thread currently using `s`.
///
/// # Safety
/// `s` is NULL or a live subscription; `out` is NULL or points to a
/// writable `conduit_session_event` whose `size` says how many bytes it has.
#[no_mangle]
pub unsafe extern "C" fn conduit_subscription_next_session_event(
    s: *mut conduit_subscription,
    out: *mut conduit_session_event,
) -> c_int {
    guard(
        "conduit_subscription_next_session_event",
        |code| code,
        || {
            // SAFETY: the caller passes NULL or a sized `conduit_session_event`.
            let size = unsafe {
                args::out_size(
                    out,
                    SESSION_EVENT_MIN_SIZE,
                    "conduit_session_event",
                    "CONDUIT_SESSION_EVENT_INIT",
                )
            }?;
            // SAFETY: the caller passes NULL or a live subscription.
            let handle = unsafe { SubscriptionHandle::from_ptr(s) }?;
            let event = handle.with_subscription(|s| {
                let mut e = None;
                while e.is_none() {
                    match s.poll_session_event() {
                        Some(ev) => e = conduit_session_event::of(ev),
                        None => break,
                    }
                }
                Ok(e)
            })?;
            let Some(full) = event else {
                return Ok(0);
            };
            // SAFETY: `out` holds `size` writable bytes (the caller's
            // contract, checked at least the minimum).
            unsafe { args::write_sized(out, full, size) };
            Ok(1)
        },
    )
}
