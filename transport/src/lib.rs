//! conduit: low-latency messaging over shared memory (`shm:NAME`) and
//! reliable UDP (`udp://HOST:PORT`), with typed zero-copy messages.
//!
//! A channel has one [`Publication`] (the sending end) and any number of
//! [`Subscription`]s, each of which receives every message, in order, from
//! the point it joined. Both ends are opened by URI; the options are listed in
//! [`uri`]. A message is a `#[repr(C)]` struct implementing [`Message`]: it is
//! written where it will be read and viewed in place, never serialised.
//!
//! ```no_run
//! use conduit::{Message, Publication, Subscription};
//! use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
//!
//! #[repr(C)]
//! #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
//! struct Tick { seq: u64, price: i64 }
//! impl Message for Tick { const TYPE_ID: u32 = 7; }
//!
//! # fn main() -> Result<(), conduit::Error> {
//! let mut sub = Subscription::open("shm:ticks")?;
//! let mut publ = Publication::open("shm:ticks?capacity=1m")?;
//! match publ.send(&Tick { seq: 1, price: 100 }) {
//!     Ok(_) | Err(conduit::Error::BackPressured) | Err(conduit::Error::NotConnected) => {}
//!     Err(e) => return Err(e),
//! }
//! sub.poll(|m| {
//!     if let Ok(t) = m.get::<Tick>() {
//!         println!("tick {} at {}", t.seq, t.price);
//!     }
//! }, 64)?;
//! # Ok(()) }
//! ```
//!
//! # Which channel
//!
//! - **`shm:NAME`** when both ends run on one host: a ring in a shared file
//!   (under `/dev/shm` by default) that every party maps. Sending and
//!   receiving make no system call; any number of subscriber processes read
//!   the same bytes. A subscription only attaches to rings of its own user
//!   or of the users it names (`owners=`).
//! - **`udp://HOST:PORT`** between hosts (or when the ends must not share
//!   memory): a reliable, ordered stream with flow control and NAK-based
//!   repair, optionally encrypted (`key=`). One publication talks to one
//!   subscription, which listens on `HOST:PORT`.
//!
//! The API is the same for both; code written against `shm:` works over
//! `udp://` by changing the URI (mind the larger latency and that a UDP peer
//! takes longer to connect).
//!
//! # What a poll costs
//!
//! [`Subscription::poll`] never blocks. Over `shm:` an empty poll is one
//! load of a word in shared memory (plus, now and then, a check that the
//! publisher is alive); each message is handed to your closure as a slice
//! of ring memory, with no copy. Over `udp://` every poll reads the socket
//! (one `recv` system call, or a batch), runs the protocol's due timers and
//! may send acknowledgements or NAKs; messages are slices of the receive
//! buffer. `limit` bounds the work of one call. To wait instead of spinning,
//! use [`Subscription::poll_timeout`] with `wait=block` (a futex for `shm:`,
//! `poll(2)` for `udp://`).
//!
//! # Back-pressure
//!
//! Nothing is ever overwritten or dropped to make room. When the slowest
//! subscriber of a ring, or the UDP receiver's window, has not made room for
//! a message, [`Publication::offer`] (and `send`, `claim`, ...) returns
//! [`Error::BackPressured`] at once and the message is **not** taken: retry
//! it later, or do something else meanwhile. [`Error::NotConnected`] (no
//! subscriber yet) is handled the same way. [`Error::is_retryable`] tells
//! these two apart from real failures. [`Publication::flush`] waits until
//! everything sent was consumed (or acknowledged).
//!
//! # Which calls drive I/O
//!
//! There is no background runtime by default: the protocol and liveness work
//! happens inside your calls. Over `udp://`, `offer`/`send`/claims send
//! datagrams and read acknowledgements, `poll` receives and answers, and
//! `is_connected` and `flush` run the handshake and timers, so a UDP
//! publication must be called now and then even when it has nothing to send
//! (or be opened with `progress=thread`, which adds a background thread).
//! Over `shm:` the publication admits joining subscribers and reaps dead ones
//! in `offer`/`is_connected`; a subscription checks its publisher's liveness
//! in `poll`.
//!
//! # Threads
//!
//! [`Publication`] and [`Subscription`] are `Send` but not `Sync`: each is
//! used by one thread at a time (every call takes `&mut self`), and may be
//! moved to another thread. Use one subscription per receiving thread, or
//! share one behind a mutex. A [`Claim`] borrows its publication until it is
//! committed or dropped. [`Error`] and [`Received`] are `Send + Sync`; a
//! `Received` borrows the channel for the duration of the handler call only:
//! copy what you keep. These properties are checked at compile time.
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod channel;
mod error;
mod message;
mod receiver_event;
mod shm;
mod stats;
pub mod udp;
pub mod uri;

// The counters file (see `conduit-counters`).
pub use stats::stats_file;

// The protocol crate under its old path: the UDP endpoints name it `crate::proto`.
use conduit_proto as proto;

pub use channel::{Claim, Counters, Publication, Subscription, TypedClaim};
pub use conduit_proto::GapPolicy;
pub use conduit_ringbuf::WaitStrategy;
pub use error::{code, Error};
pub use message::{GoneReason, Message, Received, SessionEvent, Source, ViewError, MAX_ALIGN};
pub use receiver_event::{ReceiverEvent, ReceiverGoneReason, MAX_RECEIVER_EVENTS};
