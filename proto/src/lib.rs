//! The reliable sequencing protocol, sans-IO.
//!
//! A [`Sender`] (publication side) and a [`Receiver`] (subscription side) are deterministic
//! state machines: they never touch a socket or read a clock. Their owner feeds them datagrams
//! ([`Sender::handle_datagram`], [`Receiver::handle_datagram`]) and the time
//! (`handle_timeout(now)`), and drains what they produce: datagrams
//! (`poll_transmit(now, max_datagrams, buf)` until `None`), the next deadline (`poll_timeout()`) and events (`poll_event()`).
//!
//! # Stream model
//! A stream is a sequence of bytes addressed by 64-bit positions. Messages are records in it:
//! an 8-byte header and the payload padded to 8 bytes; messages longer than one datagram are
//! fragments with begin/end flags. The sender keeps records in a ring ([`Config::retransmit_buffer`]),
//! sends them batched up to the MTU within the receiver's window, and releases them when the
//! receiver's status acknowledges them. The receiver NAKs every gap after [`Config::nak_delay`]
//! (all gaps in one NAK, with back-off), the sender resends at most once per RTT per range
//! (within the repair budget, see below), and idle heartbeats expose a lost tail.
//!
//! # Untrusted input
//! Every field from the wire is range-checked before any arithmetic, and a datagram that fails
//! a check is dropped and counted under a [`DropReason`]; nothing from the wire panics, loops
//! or allocates beyond the bounds below.
//! * Positions: every stream position on the wire is below [`frame::MAX_POSITION`] (2^63).
//!   Streams start below 2^62, so 2^62 bytes lie ahead of any stream (a sender refuses offers
//!   near the end with [`OfferError::Failed`]), and a position plus a window, a record length
//!   or a datagram's span never overflows.
//! * Lengths and counts: records must lie within their datagram, padding only at its end;
//!   a NAK holds 1 to 32 ranges; a status advertises a non-zero window (clamped by the
//!   sender to its buffer); RTT echoes from the future are dropped.
//! * Buffered data is walked record by record from the position, and a record that runs past
//!   the data received (overlapping frames that disagree) stops the walk: the position never
//!   passes what was received.
//!
//! # Repair bounds
//! * A NAK asks only for what the sender could still have in flight: each range is clipped to
//!   `[acknowledged, sent)`, at most one window in all per NAK, and a range is resent at most
//!   once per linger (about an RTT).
//! * Retransmission is paced by a budget in stream bytes: it starts at one window, each byte
//!   of new data sent adds one, a floor adds an eighth of the window (at least one MTU) per
//!   heartbeat interval, and it never holds more than one window. So over any interval of
//!   length `t` in which the sender sends `d` bytes of new data, it retransmits at most
//!   `window + d + max(window / 8, mtu) * t / heartbeat_interval` bytes, whatever NAKs it
//!   receives (`Counters::retransmitted_bytes`; `Counters::repair_throttled` counts waits).
//! * Unrecoverable loss needs the sender's confirmation: every NAK carries a fresh random
//!   nonce, a sender asked for data it no longer holds answers with a heartbeat flagged
//!   [`frame::FLAG_LOSS`] that echoes it, and only such a heartbeat makes the receiver apply
//!   its [`GapPolicy`]. A plain heartbeat claiming the data is gone, or a setup of the session
//!   joining beyond the position (forgeable by whoever saw one datagram), only makes the
//!   receiver NAK the gap.
//! * A sender answers NAKs, status messages and RTT probes, and takes a close, only from the
//!   address its receiver's accepting reply came from; anything else is dropped as
//!   [`DropReason::WrongSource`].
//!
//! # Driving an endpoint
//! After every input (a datagram, an offer, a timeout), call
//! `poll_transmit(now, max_datagrams, buf)` until it returns `None`, sending `buf[..len]` to
//! `destination` each time (as datagrams of `segment_size` bytes: one GSO send, or one send per
//! segment without GSO); then wait for a datagram
//! or until `poll_timeout()`, and call `handle_timeout(now)` when that deadline has passed.
//! Drain `poll_event()` whenever convenient (the queue is bounded). Each `poll_transmit`
//! produces at most `max_datagrams` datagrams of one size to one destination (a GSO batch, as
//! quinn-proto's does), so the work per call is bounded even while a large message is being
//! sent, and several endpoints sharing a socket interleave fairly.
//!
//! # Zero copy
//! * Send: [`Sender::try_claim`] hands out the payload bytes of a record in the log to fill in
//!   place; [`Claim::commit`] publishes it. [`Sender::offer`] copies.
//! * Receive: [`Receiver::handle_datagram`] calls `deliver(type_id, payload)` for each message
//!   that becomes deliverable, in order. Unfragmented in-order messages are slices of the
//!   datagram passed in; every payload starts at a multiple of 8 bytes from the datagram start,
//!   so with an 8-aligned receive buffer a `#[repr(C)]` message struct of alignment up to 8 can
//!   be viewed in place. Out-of-order data and fragments are copied into bounded buffers.
//!
//! # Memory
//! Sender: `retransmit_buffer * (1 + 1/64)` bytes (log and record-start bitmap), allocated at
//! construction. Receiver: `window` bytes (out-of-order ring) + 64 KiB (scratch) + a reassembly
//! buffer grown on demand up to `max_message_len`; keyed endpoints 64 KiB more (the buffer
//! datagrams are opened into); at most 64 out-of-order ranges and 64 queued events. Sender: at
//! most 16 queued retransmission ranges and 32 lingering ones. [`Sessions`]: one receiver per
//! held session plus the acceptor (one receiver without a session), so at most
//! `(max_sessions + 1) * (window + 64 KiB + max_message_len (+ 64 KiB keyed))` (one receiver
//! with `max_sessions` 1), plus at most 64 queued handshake answers of one MTU each and
//! `64 + 3 * max_sessions` queued session events. A session's receiver is allocated when the
//! session is accepted (its ring's pages are touched only as data is buffered) and freed
//! when the session closes or its place is given to a newcomer. Nothing else grows with the
//! input.
//!
//! # Handshake
//! The sender sends [`frame::Setup`] (its version range, MTU, join position and a fresh random
//! nonce) every [`Config::setup_interval`] until answered. The receiver first negotiates the
//! version (a peer of another version gets a rejection it can read, whatever its version),
//! then asks for proof of the address: a setup without a valid cookie is answered with
//! [`frame::FLAG_RETRY`] and a cookie (a MAC of the source address, session id, stream id and
//! nonce under the receiver's secret, valid for one to two seconds), and the receiver keeps
//! no state for it. The sender sends the setup again at once with the cookie. Only then is
//! the session accepted (the reply carries the receiver's nonce), refused with
//! [`frame::FLAG_BUSY`] or rejected for a larger MTU ([`frame::FLAG_REJECT`] |
//! [`frame::FLAG_MTU`]). A host that cannot receive at the address it claims (an off-path
//! spoofer) can therefore neither start, replace nor take over a session.
//!
//! Session ids, initial stream positions (a random multiple of 8 below 2^62), nonces and the
//! cookie secret come from the OS's CSPRNG in real endpoints ([`Sender::with_os_random`],
//! [`Receiver::with_os_random`]); [`Sender::new`] and [`Receiver::new`] derive them from a
//! seed, for reproducible simulation.
//!
//! # Keyed endpoints
//! With [`Config::key`] (a pre-shared key), every datagram is sealed ([`crypto`]): the
//! handshake key for the setup, its replies and the need-setup status, the session's keys
//! (derived from the key, both nonces and the session id) for the rest. Frames are built into
//! `mtu - 32` bytes, checksums are off (the tag covers more), and every datagram is opened
//! into an 8-aligned buffer before it is parsed, so payloads stay aligned. A datagram that does
//! not authenticate changes no state. An end whose setup meets the other key state (keyed and
//! unkeyed, or another key) gets a plaintext, rate-limited [`frame::FLAG_REJECT`] |
//! [`frame::FLAG_KEY`] reply; it changes no state, and after a few in a row with nothing
//! authentic in between (one may be a corrupted setup) both ends report
//! [`Event::KeyMismatch`].
//!
//! # Sessions and limits
//! A [`Receiver`] serves one sender session at a time. [`Sessions`] serves up to
//! [`Config::max_sessions`] (default 16, at most [`MAX_SESSIONS_LIMIT`]) at once: one
//! [`Receiver`] per session, each its own ordered exactly-once stream with its own window,
//! reassembly, liveness and NAK state, datagrams routed by source address and session id, and
//! a shared cookie secret for the handshake of newcomers. Every delivered message names its
//! session ([`Peer`]) and its stream position; [`Sessions::poll_session_event`] reports
//! sessions joining, ending ([`GoneReason`]) and being replaced.
//!
//! A session silent past the liveness timeout is reported gone and kept, so that it resumes if
//! its sender comes back; its place goes to a newcomer when every place is taken. A newcomer
//! when every place holds a live session is refused ([`frame::FLAG_BUSY`], counted as
//! [`DropReason::SessionRefused`]) and nothing of the live sessions changes: a live session is
//! never evicted. A newcomer from the exact address (IP and port) of a held session replaces
//! it (a publisher restarted on a fixed port): [`Event::SessionReplaced`] and
//! [`SessionEvent::Replaced`].
//!
//! With one place (`max_sessions` 1, and a bare [`Receiver`]): a new session replaces the
//! current one only when the current one is not live (silent past the liveness timeout,
//! closed, or failed), or when it comes from the current session's exact address; the
//! receiver reports [`Event::SessionReplaced`]. Any other sender is refused
//! ([`frame::FLAG_BUSY`], counted as [`DropReason::SessionRefused`]) and nothing of the live
//! session changes.
//!
//! A refused sender reports [`Event::SessionRefused`], its offers fail with
//! [`OfferError::Refused`], and it keeps asking (backing off to one setup per 100 ms) so that
//! it takes a place once one frees. A sender whose MTU exceeds the receiver's is rejected,
//! and both report [`Event::MtuMismatch`].
//! # Groups
//! A [`Sender`] whose destination is a multicast address streams to a group: every datagram it
//! sends to the destination reaches every receiver that joined the group, and receivers answer
//! by unicast to the address the datagrams come from. Such a session speaks protocol version 3
//! ([`GROUP_VERSION`]): its setups carry [`frame::FLAG_GROUP`] and ask for version 3 at least,
//! so a version 2 receiver answers with a version rejection (the sender reports
//! [`Event::VersionMismatch`] and goes on with the others); unicast sessions negotiate 2 or 3
//! and are the same on the wire in both. A key ([`Config::key`]) with a group destination is
//! refused by [`Sender::new`]: session keys are per receiver and cannot seal one datagram for
//! the whole group (not supported yet).
//! * **Handshake.** Setups go to the group every [`Config::setup_interval`] while the sender is
//!   not connected. Each receiver's cookie challenge comes back by unicast and is answered by
//!   a unicast setup carrying that receiver's cookie; its acceptance adds it to the receiver
//!   set ([`Event::ReceiverJoined`]). A receiver that sees data of a session it does not know
//!   (it joined late, or lost the setup) asks for a setup, and gets one by unicast: it starts
//!   at the live position (what was sent, or the beginning of the fragmented message being
//!   sent), never waiting for a heartbeat.
//! * **Receiver set.** At most [`MAX_RECEIVERS`] (64) receivers, each by address and receiver
//!   id with its acknowledged position, window, tag and last-heard time; more are counted
//!   ([`Sender::receivers_ignored`]) and ignored. A receiver silent for
//!   [`Config::receiver_timeout`] (default 2 s) leaves the set ([`Event::ReceiverGone`]), as
//!   does one that closes (its close acknowledges its final position). One that comes back
//!   (or whose acceptance crossed the others' status) is accepted at its own position: with
//!   `Min` and `Tagged` flow, while the log still holds the data from there, the
//!   acknowledged position goes back to it and it is repaired; otherwise it learns of the
//!   loss through the usual NAK and [`frame::FLAG_LOSS`] path.
//! * **Flow ([`Config::flow`]).** The counting receivers bound what is sent and released:
//!   [`FlowStrategy::Min`] (every receiver counts: the slowest acknowledged position releases
//!   the log, `min(position + window)` bounds sending), [`FlowStrategy::Max`] (the fastest
//!   does both: slower receivers may find data released and report
//!   [`Event::UnrecoverableLoss`]), [`FlowStrategy::Tagged`] (as `Min` over the receivers
//!   whose status declares the tag, [`Config::group_tag`], carried by
//!   [`frame::StatusV3`]; the sender is connected only while `min_receivers` of them are in
//!   the set). When no receiver counts any more, the sender reports [`Event::PeerGone`] and
//!   handshakes with the group again, as a unicast sender whose receiver went away.
//! * **Repair.** Retransmissions go to the group, each range at most once per linger however
//!   many receivers ask, within the repair budget. The sender echoes the ranges it queues to
//!   the group ([`frame::FLAG_ECHO`]). A receiver of a group session delays the first NAK of
//!   a gap by [`Config::nak_delay`] plus a random time over `[0, T)` with
//!   `T = min(group_nak_backoff, max(16 * srtt, 8 * (srtt + 4 * rttvar), nak_delay))`
//!   (`srtt`, `rttvar`: the receiver's RTT estimate, RFC 6298; `group_nak_backoff` before
//!   a sample): 16 smoothed RTTs on a steady link, and 8 retransmission timeouts when the
//!   samples spread (scheduling delays on a loaded host), so that the NAK that goes first
//!   still reaches the others before their timers fire. The delay is drawn from the truncated
//!   exponential of Nonnenmacher and Biersack (Aeron's optimal multicast delay):
//!   `T / λ · ln(1 + u · (e^λ − 1))`, `u` uniform in `[0, 1)`, `λ = ln(N) + 1` with
//!   `N` = [`Config::group_size_estimate`] (default 10). Few receivers draw short delays, so
//!   the first NAK usually goes alone; the others see its echo or the repair first, and hold
//!   their timers for the gaps it covers for about an RTT. NAKs still carry every due gap
//!   (up to 32 ranges). On a simulated group with 3 % loss before the fan-out, 4 receivers
//!   send about 1.1 to 1.3 times the NAKs of one, on a steady link and with the sender and
//!   receivers stalled for milliseconds now and then (`proto/tests/proto_group.rs`).
//!
//!
//! ```
//! use std::time::Instant;
//! use conduit_proto::{Config, Receiver, Sender};
//! let (a, b) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
//! let now = Instant::now();
//! let mut tx = Sender::new(Config::default(), b, now, 1).unwrap();
//! let mut rx = Receiver::new(Config::default(), now, 2).unwrap();
//! let mut buf = vec![0u8; 2048];
//! let mut got = Vec::new();
//! for _ in 0..4 {
//!     while let Some(t) = tx.poll_transmit(now, 1, &mut buf) {
//!         rx.handle_datagram(now, a, &buf[..t.len], |ty, p| got.push((ty, p.to_vec())));
//!     }
//!     while let Some(t) = rx.poll_transmit(now, 1, &mut buf) {
//!         tx.handle_datagram(now, b, &buf[..t.len]);
//!     }
//!     let _ = tx.offer(7, b"hello");
//! }
//! assert_eq!(got[0], (7, b"hello".to_vec()));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

use std::net::SocketAddr;
use std::time::Instant;

mod config;
mod cookie;
mod counters;
pub mod crypto;
mod event;
mod flow;
pub mod frame;
mod group;
mod handshake;
mod log;
mod nak;
mod receiver;
mod rng;
mod rtt;
mod sender;
mod sessions;

#[cfg(feature = "sim")]
pub mod sim;

pub use config::{
    Config, FlowStrategy, GapPolicy, GROUP_VERSION, MAX_MESSAGE_LEN_LIMIT, MAX_MTU,
    MAX_SESSIONS_LIMIT, MIN_MTU, SUPPORTED_VERSIONS,
};
pub use counters::{Counters, DropReason, DROP_REASONS};
pub use crypto::{Direction, HandshakeKeys, Psk, SessionKeys};
pub use event::Event;
pub use group::MAX_RECEIVERS;
pub use handshake::negotiate;
pub use receiver::Receiver;
pub use rng::Rng;
pub use sender::{Claim, OfferError, Sender, SenderState};
pub use sessions::{GoneReason, Peer, SessionEvent, Sessions};

/// Most events queued before new ones are dropped (events are rare; this bounds memory).
const MAX_EVENTS: usize = 64;

/// Datagrams written into the caller's buffer by `poll_transmit`: `buf[..len]` goes to
/// `destination` as datagrams of `segment_size` bytes each, the last one possibly shorter (one
/// GSO batch; a single datagram when `len == segment_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send them.
    pub destination: SocketAddr,
    /// Their total length at the start of the buffer.
    pub len: usize,
    /// The length of each datagram but the last, which may be shorter.
    pub segment_size: usize,
}

impl Transmit {
    /// How many datagrams the batch holds.
    pub fn datagrams(&self) -> usize {
        self.len.div_ceil(self.segment_size.max(1))
    }
}

/// A datagram `poll_transmit` built that could not join the batch it was built for (another
/// destination, or larger than the batch's segments): it leads the next batch.
#[derive(Debug, Default)]
pub(crate) struct Held {
    to: Option<SocketAddr>,
    bytes: Vec<u8>,
}

impl Held {
    /// Whether a datagram waits.
    #[inline]
    pub(crate) fn is_some(&self) -> bool {
        self.to.is_some()
    }
}

/// A protocol end whose `poll_transmit` builds datagrams one at a time and batches them with
/// [`poll_batch`].
pub(crate) trait Batched {
    /// The configured MTU, and the datagram kept for the next batch.
    fn batch_state(&mut self) -> (usize, &mut Held);
    /// Builds the next datagram, sealed, into `buf` (the MTU long); returns where it goes and
    /// its length.
    fn build_next(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)>;
}

/// `poll_transmit` of a [`Batched`] end: the MTU clipped to `buf` (nothing below 64 bytes),
/// then [`fill_batch`] with the end's held datagram.
#[inline]
pub(crate) fn poll_batch(
    end: &mut impl Batched,
    now: Instant,
    max_datagrams: usize,
    buf: &mut [u8],
) -> Option<Transmit> {
    let (mtu, held) = end.batch_state();
    let mtu = mtu.min(buf.len());
    if mtu < 64 {
        return None;
    }
    let mut held = std::mem::take(held);
    let t = fill_batch(buf, mtu, max_datagrams, &mut held, |b| {
        end.build_next(now, b)
    });
    *end.batch_state().1 = held;
    t
}

/// Fills `buf` with up to `max_datagrams` datagrams to one destination, each as long as the
/// first but the last, which may be shorter (a GSO batch), and returns them. `next` builds one
/// datagram into the slice it is given (`mtu` long) and returns its destination and length.
/// A datagram that does not fit the batch is kept in `held` and leads the next one, so no
/// datagram is built twice and none is dropped.
#[inline]
pub(crate) fn fill_batch(
    buf: &mut [u8],
    mtu: usize,
    max_datagrams: usize,
    held: &mut Held,
    mut next: impl FnMut(&mut [u8]) -> Option<(SocketAddr, usize)>,
) -> Option<Transmit> {
    let (destination, segment_size) = match held.to.take() {
        Some(to) if held.bytes.len() > buf.len() => {
            // A buffer shorter than the one it was built in: it waits for a longer one.
            held.to = Some(to);
            return None;
        }
        Some(to) => {
            let len = held.bytes.len();
            buf[..len].copy_from_slice(&held.bytes);
            (to, len)
        }
        None => next(&mut buf[..mtu])?,
    };
    let mut len = segment_size;
    let mut count = 1;
    while count < max_datagrams && len + mtu <= buf.len() {
        let Some((to, n)) = next(&mut buf[len..len + mtu]) else {
            break;
        };
        if to != destination || n > segment_size {
            held.bytes.clear();
            held.bytes.extend_from_slice(&buf[len..len + n]);
            held.to = Some(to);
            break;
        }
        len += n;
        count += 1;
        if n < segment_size {
            break;
        }
    }
    Some(Transmit {
        destination,
        len,
        segment_size,
    })
}

/// `addr` with an IPv4-mapped IPv6 address turned into plain IPv4 (dual-stack sockets report
/// IPv4 peers that way).
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Whether two addresses name the same endpoint (IPv4-mapped IPv6 equals IPv4).
#[inline]
pub(crate) fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a == b || canonical(a) == canonical(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_the_same_endpoint() {
        let v4: SocketAddr = "127.0.0.1:5".parse().unwrap();
        let v6: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        assert!(same_addr(v4, v6));
        assert!(!same_addr(v4, "[::ffff:127.0.0.1]:6".parse().unwrap()));
        assert!(!same_addr(v4, "[::1]:5".parse().unwrap()));
    }
}
