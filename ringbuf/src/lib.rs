//! Lock-free shared-memory rings: one publisher, many subscribers, each in
//! any process on the host.
//!
//! API CONTRACT (agreed with `transport/`): the signatures below are what the
//! rest of the workspace codes against. Bodies are to be filled in.
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Configuration of a ring created by a publisher.
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// Data capacity in bytes; a power of two.
    pub capacity: usize,
    /// Largest payload in bytes; at least `capacity / 8` is allowed, at most `capacity / 2`.
    pub max_message_len: usize,
    /// Most subscribers attached at once (slots in the header).
    pub max_subscribers: u32,
    /// Directory of the ring files; `None` means `$CONDUIT_SHM_DIR` or `/dev/shm`.
    pub dir: Option<PathBuf>,
    /// File mode of a created ring file.
    pub mode: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            capacity: 1 << 20,
            max_message_len: 1 << 17,
            max_subscribers: 64,
            dir: None,
            mode: 0o600,
        }
    }
}

/// How a subscriber waits for data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Busy-spin: lowest latency, one core at 100 %.
    #[default]
    Spin,
    /// Spin a while, then yield the CPU between checks.
    SpinYield,
    /// Spin briefly, then sleep on a futex the publisher wakes.
    Block,
}

/// Errors opening or creating a ring.
#[derive(Debug)]
pub enum RingError {
    /// placeholder
    Io(std::io::Error),
}

/// Why an offer or claim did not go through. None of these lose data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferError {
    /// The slowest subscriber has not made room yet; try again.
    BackPressured,
    /// No subscriber is attached.
    NotConnected,
    /// The payload exceeds the ring's maximum message length.
    TooLarge {
        /// Requested length.
        len: usize,
        /// The ring's maximum.
        max: usize,
    },
    /// Shared memory holds values this process never wrote.
    Corrupt(String),
}

/// Outcome of a poll other than messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollError {
    /// The publisher closed the ring cleanly; all its messages were delivered.
    PublisherClosed,
    /// The publisher's process died; all committed messages were delivered.
    PublisherGone,
    /// Shared memory holds values that break the layout's invariants.
    Corrupt(String),
}

/// The single writer of a ring.
pub struct Publisher {}

/// A claimed, writable record in ring memory: fill it, then `commit` (dropping aborts).
pub struct Claim<'a> {
    _p: &'a mut Publisher,
}

impl Publisher {
    /// Creates the ring file `name` (or reuses a stale one left by a dead publisher).
    pub fn create(name: &str, config: &RingConfig) -> Result<Publisher, RingError> {
        let _ = (name, config);
        unimplemented!()
    }
    /// Copies `data` into a new record with `type_id`; returns the position after it.
    pub fn offer(&mut self, type_id: u32, data: &[u8]) -> Result<u64, OfferError> {
        let _ = (type_id, data);
        unimplemented!()
    }
    /// Reserves a record of `len` bytes to be written in place.
    pub fn try_claim(&mut self, type_id: u32, len: usize) -> Result<Claim<'_>, OfferError> {
        let _ = (type_id, len);
        unimplemented!()
    }
    /// True while at least one live subscriber is attached (reaps dead ones).
    pub fn is_connected(&mut self) -> bool {
        unimplemented!()
    }
    /// Live subscribers attached.
    pub fn subscriber_count(&mut self) -> usize {
        unimplemented!()
    }
    /// True when every attached subscriber has consumed everything committed.
    pub fn all_consumed(&mut self) -> bool {
        unimplemented!()
    }
    /// Position (bytes) after the last committed record.
    pub fn position(&self) -> u64 {
        unimplemented!()
    }
    /// Largest payload this ring accepts.
    pub fn max_message_len(&self) -> usize {
        unimplemented!()
    }
    /// Path of the ring file.
    pub fn path(&self) -> &Path {
        unimplemented!()
    }
}

impl Claim<'_> {
    /// The writable payload, `len` bytes, 8-byte aligned.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        unimplemented!()
    }
    /// Publishes the record; returns the position after it.
    pub fn commit(self) -> u64 {
        unimplemented!()
    }
    /// Releases the claim without publishing anything.
    pub fn abort(self) {}
}

/// One reader of a ring.
pub struct Subscriber {}

impl Subscriber {
    /// Opens a subscriber to ring `name`; if no publisher exists yet it
    /// attaches when one appears (polls return 0 until then).
    pub fn open(name: &str, dir: Option<&Path>) -> Result<Subscriber, RingError> {
        let _ = (name, dir);
        unimplemented!()
    }
    /// Hands up to `limit` records to `handler(type_id, payload)`; payloads are
    /// 8-byte aligned and borrowed from ring memory.
    pub fn poll<F: FnMut(u32, &[u8])>(&mut self, handler: F, limit: usize) -> Result<usize, PollError> {
        let _ = (handler, limit);
        unimplemented!()
    }
    /// Waits with `strategy` until data may be available or `timeout` passes.
    /// Returns true if data is available.
    pub fn wait(&mut self, strategy: WaitStrategy, timeout: Option<Duration>) -> Result<bool, PollError> {
        let _ = (strategy, timeout);
        unimplemented!()
    }
    /// True while attached to a live publisher.
    pub fn is_connected(&mut self) -> bool {
        unimplemented!()
    }
}
