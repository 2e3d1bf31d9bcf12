//! The reliable sequencing protocol, sans-IO.
//!
//! A [`Sender`] (publication side) and a [`Receiver`] (subscription side) are deterministic
//! state machines: they never touch a socket or read a clock. Their owner feeds them datagrams
//! ([`Sender::handle_datagram`], [`Receiver::handle_datagram`]) and the time
//! (`handle_timeout(now)`), and drains what they produce: datagrams (`poll_transmit(now, buf)`
//! until `None`), the next deadline (`poll_timeout()`) and events (`poll_event()`).
//!
//! # Stream model
//! A stream is a sequence of bytes addressed by 64-bit positions. Messages are records in it:
//! an 8-byte header and the payload padded to 8 bytes; messages longer than one datagram are
//! fragments with begin/end flags. The sender keeps records in a ring ([`Config::retransmit_buffer`]),
//! sends them batched up to the MTU within the receiver's window, and releases them when the
//! receiver's status acknowledges them. The receiver NAKs every gap after [`Config::nak_delay`]
//! (all gaps in one NAK, with back-off), the sender resends at most once per RTT per range, and
//! idle heartbeats expose a lost tail.
//!
//! # Driving an endpoint
//! After every input (a datagram, an offer, a timeout), call `poll_transmit(now, buf)` until it
//! returns `None`, sending `buf[..len]` to `destination` each time; then wait for a datagram
//! or until `poll_timeout()`, and call `handle_timeout(now)` when that deadline has passed.
//! Drain `poll_event()` whenever convenient (the queue is bounded). Each `poll_transmit`
//! produces at most one datagram, so the work per call is bounded even while a large message
//! is being sent, and several endpoints sharing a socket interleave fairly.
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
//! buffer grown on demand up to `max_message_len`. Nothing else grows with the input.
//!
//! # Limits
//! A receiver serves one sender session at a time. A new session (a restarted sender) replaces
//! the current one when it comes from the same IP address or when the current one is gone.
//!
//! ```
//! use std::time::Instant;
//! use conduit::proto::{Config, Receiver, Sender};
//! let (a, b) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
//! let now = Instant::now();
//! let mut tx = Sender::new(Config::default(), b, now, 1).unwrap();
//! let mut rx = Receiver::new(Config::default(), now, 2).unwrap();
//! let mut buf = vec![0u8; 2048];
//! let mut got = Vec::new();
//! for _ in 0..4 {
//!     while let Some(t) = tx.poll_transmit(now, &mut buf) {
//!         rx.handle_datagram(now, a, &buf[..t.len], |ty, p| got.push((ty, p.to_vec())));
//!     }
//!     while let Some(t) = rx.poll_transmit(now, &mut buf) {
//!         tx.handle_datagram(now, b, &buf[..t.len]);
//!     }
//!     let _ = tx.offer(7, b"hello");
//! }
//! assert_eq!(got[0], (7, b"hello".to_vec()));
//! ```
#![forbid(unsafe_code)]

use std::net::SocketAddr;

mod config;
mod counters;
pub mod crypto;
mod event;
mod flow;
pub mod frame;
mod handshake;
mod log;
mod nak;
mod receiver;
mod rng;
mod rtt;
mod sender;

#[doc(hidden)]
pub mod bench;
#[doc(hidden)]
pub mod sim;

pub use config::{Config, GapPolicy, MAX_MESSAGE_LEN_LIMIT, MAX_MTU, MIN_MTU, SUPPORTED_VERSIONS};
pub use counters::{Counters, DropReason, DROP_REASONS};
pub use crypto::{Direction, HandshakeKeys, Psk, SessionKeys};
pub use event::Event;
pub use handshake::negotiate;
pub use receiver::Receiver;
pub use rng::Rng;
pub use sender::{Claim, OfferError, Sender, SenderState};

/// Most events queued before new ones are dropped (events are rare; this bounds memory).
const MAX_EVENTS: usize = 64;

/// A datagram written into the caller's buffer by `poll_transmit`: send `buf[..len]` to
/// `destination`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Its length at the start of the buffer.
    pub len: usize,
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
