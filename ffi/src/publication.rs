//! `conduit_publication`: the sending end of a channel, and its claim slot.

use crate::args;
use crate::boundary::guard;
use crate::claim::conduit_claim;
use crate::counters::{self, conduit_counters};
use crate::failure::{Detail, Failure};
use crate::status::{CONDUIT_CLOSE_LINGER_MS, CONDUIT_TIMED_OUT};
use conduit::{Claim, Publication};
use std::cell::{Cell, UnsafeCell};
use std::ffi::{c_char, c_int, c_void};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Marks a live publication handle (a best-effort check against passing
/// another kind of pointer, or a handle already closed).
const MAGIC: u64 = 0x636f_6e64_7075_626c; // "condpubl"

/// An open publication (opaque). Create with `conduit_publication_open`,
/// free with `conduit_publication_close`.
///
/// Threads: a publication may be used from any thread, but from one thread
/// at a time (calls on the same publication must not overlap; hand it over
/// with the usual synchronisation, e.g. a mutex or a thread join).
pub struct conduit_publication {
    _opaque: [u8; 0],
}

/// What a `conduit_publication` pointer points to. `repr(C)` with the marker first, so
/// that the marker of any handle can be read before trusting its type.
#[repr(C)]
pub(crate) struct PublicationHandle {
    magic: u64,
    /// The open claim, if any. It mutably borrows `*publication`: while it
    /// is `Some`, nothing else touches the publication (every other access
    /// goes through `with_publication`, which
    /// refuses). Its `'static` is a lie confined to this module: the claim
    /// is dropped before the publication is freed (see `Drop`).
    claim: UnsafeCell<Option<Claim<'static>>>,
    /// Generation of the last claim handed out (0: none yet). A
    /// `conduit_claim` carries its generation, so a stale copy of a
    /// committed claim is told apart from the open one. Generations come
    /// from one process-wide counter ([`CLAIM_GENERATIONS`]), so a stale
    /// claim of a closed publication never matches a claim of a new handle
    /// that the allocator placed at the same address.
    generation: Cell<u64>,
    /// `Box::into_raw` of the publication: its address stays put while a
    /// claim borrows it, whatever happens to this handle's reference.
    publication: NonNull<Publication>,
}

/// The last claim generation handed out by any publication of the process.
static CLAIM_GENERATIONS: AtomicU64 = AtomicU64::new(0);

impl PublicationHandle {
    fn new(publication: Publication) -> Box<PublicationHandle> {
        Box::new(PublicationHandle {
            magic: MAGIC,
            claim: UnsafeCell::new(None),
            generation: Cell::new(0),
            publication: NonNull::from(Box::leak(Box::new(publication))),
        })
    }

    /// The handle behind a pointer from C.
    ///
    /// # Safety
    /// `p` is NULL or a pointer returned by `conduit_publication_open` and
    /// not yet closed; no call on it runs on another thread meanwhile.
    #[inline(always)]
    pub(crate) unsafe fn from_ptr<'a>(
        p: *const conduit_publication,
    ) -> Result<&'a PublicationHandle, Failure> {
        if p.is_null() {
            return Err(Failure::invalid_static("publication is NULL"));
        }
        // SAFETY: a live handle of either kind starts with its `u64` marker
        // (both are `repr(C)`, marker first), so these 8 bytes are readable
        // and aligned; the caller passes a live handle.
        let magic = unsafe { p.cast::<u64>().read() };
        if magic != MAGIC {
            return Err(Failure::invalid_static(
                "not a live publication handle (closed already, or another kind of pointer)",
            ));
        }
        // SAFETY: the marker says `p` points to a live `PublicationHandle`. Only shared
        // references to handles are ever made, so this one aliases nothing
        // mutable (mutable state sits in cells).
        let handle = unsafe { &*p.cast::<PublicationHandle>() };
        Ok(handle)
    }

    #[inline(always)]
    fn claim_is_open(&self) -> bool {
        // SAFETY: handles are used by one thread at a time (documented
        // contract), and no reference into the slot outlives the methods
        // of this type, so this read overlaps no write.
        unsafe { (*self.claim.get()).is_some() }
    }

    /// Runs `f` on the publication, unless a claim is open.
    #[inline(always)]
    fn with_publication<R>(
        &self,
        f: impl FnOnce(&mut Publication) -> Result<R, Failure>,
    ) -> Result<R, Failure> {
        if self.claim_is_open() {
            return Err(Failure::invalid_static(
                "a claim is open on this publication: commit or abort it first",
            ));
        }
        // SAFETY: no claim is open, so nothing else borrows the publication;
        // one thread at a time uses the handle, and this `&mut` ends with
        // `f`.
        let publication = unsafe { &mut *self.publication.as_ptr() };
        f(publication)
    }

    /// Opens a claim and keeps it in the slot; returns its buffer and
    /// generation.
    fn open_claim(&self, type_id: u32, len: usize) -> Result<(*mut u8, usize, u64), Failure> {
        let claim = self.with_publication(|p| {
            p.try_claim(type_id, len)
                .map(|claim| {
                    // SAFETY: only the lifetime changes. The claim borrows the
                    // publication behind `self.publication`, which stays at its
                    // address until `Drop` frees it after dropping the claim;
                    // while the claim sits in the slot, `with_publication`
                    // refuses every other access to the publication.
                    unsafe { std::mem::transmute::<Claim<'_>, Claim<'static>>(claim) }
                })
                .map_err(Failure::from)
        })?;
        // Unique in the process (2^64 claims never wrap); only uniqueness
        // matters, so Relaxed.
        let generation = CLAIM_GENERATIONS.fetch_add(1, Ordering::Relaxed) + 1;
        self.generation.set(generation);
        // SAFETY: one thread at a time; no reference into the slot is alive
        // (`with_publication` returned). The slot was empty (checked by
        // `with_publication`), so nothing is dropped here.
        let slot = unsafe { &mut *self.claim.get() };
        let claim = slot.insert(claim);
        let buf = claim.as_mut_slice();
        Ok((buf.as_mut_ptr(), buf.len(), generation))
    }

    /// Takes the open claim out of the slot if it is the one of `generation`.
    pub(crate) fn take_claim(&self, generation: u64) -> Result<Claim<'static>, Failure> {
        // SAFETY: one thread at a time; no other reference into the slot is
        // alive outside this type's methods.
        let slot = unsafe { &mut *self.claim.get() };
        if generation == 0 || generation != self.generation.get() || slot.is_none() {
            return Err(Failure::invalid_static(
                "claim is not open: it was already committed or aborted",
            ));
        }
        slot.take()
            .ok_or(Failure::internal("claim slot emptied meanwhile"))
    }
}

impl Drop for PublicationHandle {
    fn drop(&mut self) {
        // The claim borrows the publication: release it first.
        if let Some(claim) = self.claim.get_mut().take() {
            claim.abort();
        }
        // SAFETY: `publication` came from `Box::leak` in `new`, is freed only
        // here, and no claim borrows it any more.
        drop(unsafe { Box::from_raw(self.publication.as_ptr()) });
        // A best-effort marker for a later call with this (dangling) handle.
        // SAFETY: `self.magic` is a valid, aligned field of a live value.
        unsafe { std::ptr::write_volatile(&mut self.magic, 0) };
    }
}

/// Opens the publication of the channel at `uri`: `"shm:NAME?key=value..."`
/// for a shared-memory ring on this host, `"udp://HOST:PORT?key=value..."`
/// for a reliable stream to another host. Parameters are listed in the
/// README.
///
/// Returns the new handle, or NULL on failure with `conduit_last_status()`
/// and `conduit_last_error()` set: `CONDUIT_INVALID_ARGUMENT` for a NULL,
/// non-UTF-8, over-long (more than 1024 bytes) or malformed URI, an unknown
/// parameter or one out of range; `CONDUIT_PUBLISHER_ALIVE` when a live
/// publisher already owns the name; `CONDUIT_FOREIGN_OWNER`,
/// `CONDUIT_NOT_A_CHANNEL` when the name is taken by another uid's file or
/// by a file that is not a ring; `CONDUIT_IO_ERROR` for an operating system
/// error.
///
/// Threads: any thread. The handle may then be used from any thread, one
/// thread at a time.
///
/// # Safety
/// `uri` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn conduit_publication_open(uri: *const c_char) -> *mut conduit_publication {
    guard(
        "conduit_publication_open",
        |_| std::ptr::null_mut(),
        || {
            // SAFETY: the caller passes NULL or a NUL-terminated string.
            let uri = unsafe { args::uri(uri) }?;
            let publication = Publication::open(uri)?;
            Ok(Box::into_raw(PublicationHandle::new(publication)).cast::<conduit_publication>())
        },
    )
}

/// Copies `len` bytes from `data` into a new message with `type_id`.
/// `len` may be 0 (then `data` may be NULL): the type id alone is the
/// message.
///
/// Returns the stream position after the message (non-negative) on success,
/// or a negative status: `CONDUIT_BACK_PRESSURED` and `CONDUIT_NOT_CONNECTED`
/// (retry: nothing was lost), `CONDUIT_SESSION_REFUSED` (udp: another live
/// publisher owns the subscription; retry later, nothing was accepted),
/// `CONDUIT_MESSAGE_TOO_LARGE`, `CONDUIT_MTU_MISMATCH` (udp),
/// `CONDUIT_INVALID_ARGUMENT` (NULL `p`, NULL `data` with `len > 0`, a
/// claim open on `p`), `CONDUIT_CORRUPT`, `CONDUIT_PEER_GONE`, ...
///
/// Drives the publication's I/O and timers.
///
/// Threads: the thread currently using `p`.
///
/// # Safety
/// `p` is NULL or a live publication; `data` is NULL or points to `len`
/// readable bytes.
#[no_mangle]
pub unsafe extern "C" fn conduit_publication_offer(
    p: *mut conduit_publication,
    type_id: u32,
    data: *const c_void,
    len: usize,
) -> i64 {
    guard("conduit_publication_offer", i64::from, || {
        // SAFETY: the caller passes NULL or a live publication.
        let handle = unsafe { PublicationHandle::from_ptr(p) }?;
        // SAFETY: the caller guarantees `len` readable bytes at `data`.
        let payload = unsafe { args::bytes(data.cast::<u8>(), len) }?;
        // Error messages are built out of line (`Failure::from` and the
        // argument checks are cold), so this common case stays small.
        let position =
            handle.with_publication(|p| p.offer(type_id, payload).map_err(Failure::from))?;
        // Positions count bytes: 2^63 of them is out of reach.
        Ok(i64::try_from(position).unwrap_or(i64::MAX))
    })
}

/// Reserves `len` bytes in place (ring memory for `shm:`, the send buffer for
/// `udp:`) for a message with `type_id`, and describes them in `*out`:
/// write at most `out->len` bytes at `out->data`, then call
/// `conduit_claim_commit(out)` to publish or `conduit_claim_abort(out)` to
/// drop them. `len` may be 0.
///
/// Rules:
/// - one claim at a time per publication: while it is open, every other call
///   on `p` (offer, try_claim, flush, is_connected, counters, ...) fails with
///   `CONDUIT_INVALID_ARGUMENT`; `conduit_publication_close(p)` aborts it;
/// - commit or abort exactly once; a second commit or abort (through the
///   same struct or a copy of it) fails with `CONDUIT_INVALID_ARGUMENT`;
/// - `out->data` is valid only until the claim is committed or aborted.
///
/// Returns 0 on success. On failure returns a status as
/// `conduit_publication_offer` does and resets `*out` to an empty claim
/// (which commit and abort reject), except when a claim is already open on
/// `p`: then `*out` is left as it was.
///
/// Drives the publication's I/O and timers.
///
/// Threads: the thread currently using `p`; the claim is committed or
/// aborted by that thread too (or hand `p` and the claim over together).
///
/// # Safety
/// `p` is NULL or a live publication; `out` is NULL or points to a
/// writable `conduit_claim`.
#[no_mangle]
pub unsafe extern "C" fn conduit_publication_try_claim(
    p: *mut conduit_publication,
    type_id: u32,
    len: usize,
    out: *mut conduit_claim,
) -> c_int {
    guard(
        "conduit_publication_try_claim",
        |code| code,
        || {
            // SAFETY: the caller passes NULL or a writable conduit_claim.
            let out = unsafe { out.as_mut() }.ok_or(Failure::invalid_static("out is NULL"))?;
            let result = (|| {
                // SAFETY: the caller passes NULL or a live publication.
                let handle = unsafe { PublicationHandle::from_ptr(p) }?;
                let len = args::length("claim", len)?;
                let (data, len, generation) = handle.open_claim(type_id, len)?;
                Ok(conduit_claim::open(data, len, p, generation))
            })();
            match result {
                Ok(claim) => {
                    *out = claim;
                    Ok(0)
                }
                Err(failure) => {
                    let claim_was_open =
                    // SAFETY: as above; `from_ptr` checks NULL and the marker.
                    unsafe { PublicationHandle::from_ptr(p) }.is_ok_and(|h| h.claim_is_open());
                    if !claim_was_open {
                        *out = conduit_claim::EMPTY;
                    }
                    Err(failure)
                }
            }
        },
    )
}

/// 1 while at least one subscriber is attached (shm) or the peer is live
/// (udp), else 0. Also 0 for a bad call (NULL `p`, a claim open on `p`),
/// with `conduit_last_error()` set.
///
/// Drives the publication's I/O and timers.
///
/// Threads: the thread currently using `p`.
///
/// # Safety
/// `p` is NULL or a live publication.
#[no_mangle]
pub unsafe extern "C" fn conduit_publication_is_connected(p: *const conduit_publication) -> c_int {
    guard(
        "conduit_publication_is_connected",
        |_| 0,
        || {
            // SAFETY: the caller passes NULL or a live publication.
            let handle = unsafe { PublicationHandle::from_ptr(p) }?;
            handle.with_publication(|p| Ok(c_int::from(p.is_connected())))
        },
    )
}

/// Subscribers attached to `p` now: for shm, live subscriptions holding a
/// slot (dead ones are reaped first; an evicted one counts until it
/// leaves); for udp to one host, 1 while the subscriber's session is
/// connected, else 0; for udp to a multicast group, the receivers in its set
/// (see `conduit_publication_next_receiver_event`). A negative status for a bad call (`CONDUIT_INVALID_ARGUMENT`: NULL `p`,
/// a claim open on `p`).
///
/// Drives the publication's I/O and timers.
///
/// Threads: the thread currently using `p`.
///
/// # Safety
/// `p` is NULL or a live publication.
#[no_mangle]
pub unsafe extern "C" fn conduit_publication_subscriber_count(
    p: *const conduit_publication,
) -> i64 {
    guard("conduit_publication_subscriber_count", i64::from, || {
        // SAFETY: the caller passes NULL or a live publication.
        let handle = unsafe { PublicationHandle::from_ptr(p) }?;
        handle.with_publication(|p| Ok(i64::try_from(p.subscriber_count()).unwrap_or(i64::MAX)))
    })
}

/// Waits up to `timeout_ns` nanoseconds until at least `n` subscribers are
/// attached (as `conduit_publication_subscriber_count` counts them),
/// driving I/O meanwhile. Returns the count (0 or more) once there are
/// enough; `CONDUIT_TIMED_OUT` when the time runs out first;
/// `CONDUIT_INVALID_ARGUMENT` for a NULL `p`, a negative timeout or a claim
/// open on `p`.
///
/// Threads: the thread currently using `p`.
///
/// # Safety
/// `p` is NULL or a live publication.
#[no_mangle]
pub unsafe extern "C" fn conduit_publication_wait_for_subscribers(
    p: *mut conduit_publication,
    n: u32,
    timeout_ns: i64,
) -> c_int {
    guard(
        "conduit_publication_wait_for_subscribers",
        |code| code,
        || {
            // SAFETY: the caller passes NULL or a live publication.
            let handle = unsafe { PublicationHandle::from_ptr(p) }?;
            let timeout = u64::try_from(timeout_ns)
                .map(Duration::from_nanos)
                .map_err(|_| {
                    Failure::invalid(format!("timeout_ns is {timeout_ns}; it must be 0 or more"))
                })?;
            let count = handle.with_publication(|p| {
                p.wait_for_subscribers(n as usize, timeout)
                    .map_err(Failure::from)
            })?;
            Ok(c_int::try_from(count).unwrap_or(c_int::MAX))
        },
    )
}

/// Waits up to `timeout_ms` milliseconds until every message offered so far
/// has been consumed (shm) or acknowledged (udp) by the connected
/// subscribers, driving I/O meanwhile. Returns 0 only then; at once
/// `CONDUIT_NOT_CONNECTED` when no udp subscriber is connected (what it did
/// not acknowledge is not known to be delivered) or `CONDUIT_SESSION_REFUSED`
/// when the udp subscription serves another live publisher;
/// `CONDUIT_TIMED_OUT` when the time runs out, `CONDUIT_PEER_GONE` if the
/// peer goes away meanwhile, `CONDUIT_MTU_MISMATCH` (udp),
/// `CONDUIT_INVALID_ARGUMENT` for a NULL `p`, a negative timeout or a claim
/// open on `p`.
///
/// Threads: the thread currently using `p`.
///
/// # Safety
/// `p` is NULL or a live publication.
#[no_mangle]
pub unsafe extern "C" fn conduit_publication_flush(
    p: *mut conduit_publication,
    timeout_ms: i64,
) -> c_int {
    guard(
        "conduit_publication_flush",
        |code| code,
        || {
            // SAFETY: the caller passes NULL or a live publication.
            let handle = unsafe { PublicationHandle::from_ptr(p) }?;
            let timeout = args::timeout_ms("timeout_ms", timeout_ms)?;
            handle.with_publication(|p| p.flush(timeout).map_err(Failure::from))?;
            Ok(0)
        },
    )
}

/// Largest payload `p` accepts, in bytes; a negative status for a bad call
/// (`CONDUIT_INVALID_ARGUMENT`: NULL `p`, a claim open on `p`).
///
/// Threads: the thread currently using `p`.
///
/// # Safety
/// `p` is NULL or a live publication.
#[no_mangle]
pub unsafe extern "C" fn conduit_publication_max_message_len(p: *const conduit_publication) -> i64 {
    guard("conduit_publication_max_message_len", i64::from, || {
        // SAFETY: the caller passes NULL or a live publication.
        let handle = unsafe { PublicationHandle::from_ptr(p) }?;
        let max = handle.with_publication(|p| Ok(p.max_message_len()))?;
        Ok(i64::try_from(max).unwrap_or(i64::MAX))
    })
}

/// Fills `*out` with `p`'s counters, as many fields as `out->size` bytes
/// hold (set it to `sizeof(conduit_counters)`, e.g. with
/// `CONDUIT_COUNTERS_INIT`). Returns 0, or `CONDUIT_INVALID_ARGUMENT` (NULL
/// `p` or `out`, `out->size` under 16, a claim open on `p`).
///
/// Threads: the thread currently using `p`.
///
/// # Safety
/// `p` is NULL or a live publication; `out` is NULL or points to a writable
/// `conduit_counters` whose `size` says how many bytes it has.
#[no_mangle]
pub unsafe extern "C" fn conduit_publication_counters(
    p: *const conduit_publication,
    out: *mut conduit_counters,
) -> c_int {
    guard(
        "conduit_publication_counters",
        |code| code,
        || {
            // SAFETY: the caller passes NULL or a live publication.
            let handle = unsafe { PublicationHandle::from_ptr(p) }?;
            let c = handle.with_publication(|p| Ok(p.counters()))?;
            // SAFETY: the caller passes NULL or a writable conduit_counters
            // of at least `out->size` bytes.
            unsafe { counters::write(out, &c) }?;
            Ok(0)
        },
    )
}

/// The I/O driver `p` runs on: `"shm"` for shared memory, `"uring"` or
/// `"socket"` for udp. A static string; NULL for a bad call (NULL `p`, a
/// claim open on `p`).
///
/// Threads: the thread currently using `p`.
///
/// # Safety
/// `p` is NULL or a live publication.
#[no_mangle]
pub unsafe extern "C" fn conduit_publication_driver(
    p: *const conduit_publication,
) -> *const c_char {
    guard(
        "conduit_publication_driver",
        |_| std::ptr::null(),
        || {
            // SAFETY: the caller passes NULL or a live publication.
            let handle = unsafe { PublicationHandle::from_ptr(p) }?;
            let driver = handle.with_publication(|p| Ok(p.counters().driver))?;
            Ok(counters::driver_name(driver))
        },
    )
}

/// Closes `p` and frees it, after lingering up to `linger_ms` milliseconds
/// (as `conduit_publication_flush`) so that subscribers receive what was
/// offered. An open claim is aborted first. If the linger runs out, the
/// publication is closed all the same and `conduit_last_error()` says so.
/// NULL is a no-op; a negative `linger_ms` counts as 0.
///
/// Threads: the thread currently using `p`; `p` is dangling afterwards.
///
/// # Safety
/// `p` is NULL or a live publication, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn conduit_publication_close_linger(
    p: *mut conduit_publication,
    linger_ms: i64,
) {
    guard(
        "conduit_publication_close",
        |_| (),
        || {
            if p.is_null() {
                return Ok(());
            }
            // SAFETY: the caller passes a live publication.
            unsafe { PublicationHandle::from_ptr(p) }?;
            // SAFETY: `p` came from `Box::into_raw` in `conduit_publication_open`
            // (the marker matched) and the caller gives it up now.
            let handle = unsafe { Box::from_raw(p.cast::<PublicationHandle>()) };
            // SAFETY: one thread at a time; no reference into the slot is alive.
            if let Some(claim) = unsafe { &mut *handle.claim.get() }.take() {
                claim.abort();
            }
            let linger = Duration::from_millis(linger_ms.max(0) as u64);
            let flushed = handle.with_publication(|p| Ok(p.flush(linger)))?;
            drop(handle);
            flushed.map_err(|e| match e {
            conduit::Error::TimedOut => Failure {
                code: CONDUIT_TIMED_OUT,
                detail: Detail::Owned(format!(
                    "closed, but subscribers had not consumed everything offered within the {} ms linger",
                    linger.as_millis()
                )),
            },
            other => Failure::from(other),
        })
        },
    )
}

/// Closes `p` as `conduit_publication_close_linger(p, CONDUIT_CLOSE_LINGER_MS)`:
/// waits at most 100 ms for subscribers to consume (shm) or acknowledge
/// (udp) what was offered, then frees it. An open claim is aborted first.
/// NULL is a no-op.
///
/// Threads: the thread currently using `p`; `p` is dangling afterwards.
///
/// # Safety
/// `p` is NULL or a live publication, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn conduit_publication_close(p: *mut conduit_publication) {
    // SAFETY: same contract.
    unsafe { conduit_publication_close_linger(p, i64::from(CONDUIT_CLOSE_LINGER_MS)) }
}

/// `conduit_receiver_event::kind`: a receiver joined the group publication's
/// receiver set (it accepted the session and its first status arrived).
pub const CONDUIT_RECEIVER_EVENT_JOINED: u32 = 1;
/// `conduit_receiver_event::kind`: a receiver left the set; `reason` says
/// why.
pub const CONDUIT_RECEIVER_EVENT_GONE: u32 = 2;
/// `conduit_receiver_event::reason`: the receiver was silent past the
/// receiver timeout (`receiver_timeout=`; it joins again if it comes back).
pub const CONDUIT_RECEIVER_GONE_TIMED_OUT: u32 = 1;
/// `conduit_receiver_event::reason`: the receiver closed its subscription,
/// or a restarted receiver at the same address replaced it.
pub const CONDUIT_RECEIVER_GONE_LEFT: u32 = 2;

/// A change in the receiver set of a publication to a multicast group,
/// filled by `conduit_publication_next_receiver_event`. Set `size` to
/// `sizeof(conduit_receiver_event)` first (`CONDUIT_RECEIVER_EVENT_INIT`);
/// the library fills as many bytes as `size` says (later versions append
/// fields) and leaves `size` as it was.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct conduit_receiver_event {
    /// Size of the struct in bytes, set by the caller.
    pub size: u32,
    /// `CONDUIT_RECEIVER_EVENT_JOINED` or `CONDUIT_RECEIVER_EVENT_GONE`.
    pub kind: u32,
    /// `CONDUIT_RECEIVER_EVENT_GONE`: `CONDUIT_RECEIVER_GONE_TIMED_OUT` or
    /// `CONDUIT_RECEIVER_GONE_LEFT`; else 0.
    pub reason: u32,
    /// The receiver's random id (a new one when it restarts).
    pub receiver_id: u32,
    /// `CONDUIT_RECEIVER_EVENT_JOINED`: 1 when the receiver has a tag
    /// (`group_tag=`), in `tag`; else 0.
    pub has_tag: u32,
    /// The receiver's tag when `has_tag` is 1; else 0.
    pub tag: u32,
    /// The receiver's port (host byte order).
    pub port: u16,
    /// 4 (IPv4, the first 4 bytes of `addr`) or 6 (IPv6).
    pub family: u16,
    /// The receiver's unicast IP address, network byte order.
    pub addr: [u8; 16],
}

/// The smallest `conduit_receiver_event::size` accepted (through
/// `receiver_id`).
const RECEIVER_EVENT_MIN_SIZE: usize = 16;

impl conduit_receiver_event {
    fn of(e: conduit::ReceiverEvent) -> Option<conduit_receiver_event> {
        let mut out = conduit_receiver_event::default();
        let addr = match e {
            conduit::ReceiverEvent::Joined {
                addr,
                receiver_id,
                tag,
            } => {
                out.kind = CONDUIT_RECEIVER_EVENT_JOINED;
                out.receiver_id = receiver_id;
                out.has_tag = u32::from(tag.is_some());
                out.tag = tag.unwrap_or(0);
                addr
            }
            conduit::ReceiverEvent::Gone {
                addr,
                receiver_id,
                reason,
            } => {
                out.kind = CONDUIT_RECEIVER_EVENT_GONE;
                out.receiver_id = receiver_id;
                out.reason = match reason {
                    conduit::ReceiverGoneReason::TimedOut => CONDUIT_RECEIVER_GONE_TIMED_OUT,
                    _ => CONDUIT_RECEIVER_GONE_LEFT,
                };
                addr
            }
            _ => return None,
        };
        (out.family, out.port, out.addr) = crate::subscription::c_addr(addr);
        Some(out)
    }
}

/// Takes the next receiver event of `p` (a publication to a multicast
/// group: a receiver joined or left) into `*out`, as many bytes as
/// `out->size` says. Drives `p` when none is queued. Returns 1 when an
/// event was written, 0 when there is none (always for `shm:` and a `udp:`
/// publication to one host), or `CONDUIT_INVALID_ARGUMENT` (NULL `p` or
/// `out`, `out->size` under 16, a claim open on `p`). At most 256 events
/// are queued; when they are not taken, the oldest are dropped.
///
/// Threads: the thread currently using `p`.
///
/// # Safety
/// `p` is NULL or a live publication; `out` is NULL or points to a
/// writable `conduit_receiver_event` whose `size` says how many bytes it has.
#[no_mangle]
pub unsafe extern "C" fn conduit_publication_next_receiver_event(
    p: *mut conduit_publication,
    out: *mut conduit_receiver_event,
) -> c_int {
    guard(
        "conduit_publication_next_receiver_event",
        |code| code,
        || {
            // SAFETY: the caller passes NULL or a sized `conduit_receiver_event`.
            let size = unsafe {
                args::out_size(
                    out,
                    RECEIVER_EVENT_MIN_SIZE,
                    "conduit_receiver_event",
                    "CONDUIT_RECEIVER_EVENT_INIT",
                )
            }?;
            // SAFETY: the caller passes NULL or a live publication.
            let handle = unsafe { PublicationHandle::from_ptr(p) }?;
            let event = handle.with_publication(|p| {
                Ok(std::iter::from_fn(|| p.poll_receiver_event())
                    .find_map(conduit_receiver_event::of))
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
