//! conduit: low-latency messaging over shared memory (`shm:NAME`) and
//! reliable UDP (`udp://HOST:PORT`), with typed zero-copy messages.
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
#![deny(missing_docs)]

mod channel;
mod error;
mod message;
pub mod proto;
mod shm;
pub mod udp;
pub mod uri;

pub use channel::{Claim, Counters, Publication, Subscription, TypedClaim};
pub use conduit_ringbuf::WaitStrategy;
pub use error::{code, Error};
pub use message::{Message, Received, Source, ViewError};
