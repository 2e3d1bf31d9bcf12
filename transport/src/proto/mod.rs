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
