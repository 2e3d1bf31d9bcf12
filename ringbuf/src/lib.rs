//! Shared-memory rings: one publisher (lock-free) or several (see "Several
//! publishers"), many subscribers, each in any process on the host.
//!
//! A ring is a file (under `$CONDUIT_SHM_DIR` or `/dev/shm`, or
//! [`RingConfig::dir`]) that every party maps. The [`Publisher`] appends
//! variable-length records (a 32-bit type id and 0 to `max_message_len` bytes,
//! payload 16-byte aligned); every [`Subscriber`] receives every record in
//! order from the point it joined. By default nothing is overwritten: a
//! full ring back-pressures the publisher; a ring created with
//! [`SlowPolicy::Evict`] instead cuts loose a subscriber that holds it back
//! too long (see `evict.rs`), and one with a [`Retention::history`] lets
//! late joiners ([`Start::History`]) begin with recent records (see
//! `history.rs`). The data path makes no system call.
//!
//! The byte layout and the commit protocol are described in [`layout`]. The
//! rest of the protocol:
//!
//! ## Positions and back-pressure
//!
//! Positions are 64-bit byte counters that never wrap in practice. The
//! publisher keeps its tail locally and caches `limit = min(subscriber
//! positions) + capacity`; it rescans the subscriber slots only when a record
//! would pass `limit` (or a membership request is pending). A subscriber
//! publishes its position (Release; the publisher's rescan Acquires it) once
//! per poll batch, after its handler has seen the records.
//!
//! ## Joining
//!
//! A subscriber takes a free slot by taking its lock byte in the ring's lock
//! file (see "Liveness" below), sets the slot to JOINING (Release), and adds a membership request to
//! the signal block's `attention` word (Release). The publisher loads
//! `attention` on every offer; when a request is pending it first takes the
//! requests away (Acquire RMW, so every JOINING store made before is visible),
//! then scans the slots and, for each JOINING one, writes its own current tail
//! as the slot's position and release-stores ACTIVE. The publisher alone picks
//! the start position, at a moment when it is not writing, so a joining
//! subscriber can never start behind data that a limit computed without it
//! has allowed to be overwritten. A subscriber receives everything committed
//! after its activation, which happens at the publisher's next `offer`,
//! `try_claim`, `is_connected`, `subscriber_count` or `all_consumed`.
//! A subscriber that leaves sets its slot FREE and posts a request too, so the
//! publisher notices at once.
//!
//! ## Liveness and reclaim bound
//!
//! Ownership is held by OFD write locks on bytes of the ring's lock file,
//! `.{name}.{incarnation:016x}.lock` next to the ring, which the kernel drops
//! when a process dies; only the classes that may write the ring can open
//! it, and liveness is probed with an `F_RDLCK` request, so a user with read
//! access can neither take slots away nor keep a dead owner looking alive
//! (see `liveness.rs`). The publisher reclaims the slot of a dead
//! subscriber (and the sleeper count it left, see "Waiting"):
//! * when that subscriber holds it back: on a back-pressured offer the
//!   publisher checks the locks of all non-free slots at most once per
//!   [`BACKPRESSURE_REAP_INTERVAL`] (1 ms), the first time immediately; so a
//!   dead subscriber blocks the publisher for at most ~1 ms of retries;
//! * otherwise periodically: every 1024 offers it reads the clock, and every
//!   [`REAP_INTERVAL`] (100 ms) it checks all slots; `is_connected`,
//!   `subscriber_count` and `all_consumed` check at most every 1 ms.
//!
//! A subscriber that finds no data checks the publisher's lock at most every
//! [`PUBLISHER_CHECK_INTERVAL`] (10 ms; a blocked waiter wakes for it at least
//! every 20 ms). When the lock is gone it first delivers every committed record,
//! then reports [`PollError::PublisherGone`] once; a clean close reports
//! [`PollError::PublisherClosed`] once. After either, later polls look for a
//! new ring file under the same name (at most every millisecond) and attach to
//! it: a restarted publisher is picked up.
//!
//! A stale file left by a dead publisher is replaced by the next publisher,
//! with no directory-wide lock (anyone could hold one and hang every
//! creator): it builds the new ring under a random temporary name (its lock
//! file already locked, its memory reserved), takes the write lock on the
//! *old* ring's publisher byte, checks that the name still refers to the old
//! file and renames over it; two creators exclude each other through that
//! lock, and a fresh name is taken with `RENAME_NOREPLACE`. So a visible ring
//! file is always complete, and creation ends after a bounded number of
//! steps. A temporary file left by a creator that died before the rename is
//! removed by the next creation of the same name once its pid is gone.
//! A subscriber may open before the publisher exists:
//! `Subscriber::open` succeeds and polls return `Ok(0)` until a publisher
//! appears.
//!
//! ## Waiting
//!
//! [`WaitStrategy::Block`] spins briefly, then sleeps on the futex word of the
//! signal block. A sleeper (1) reads the futex word, (2) increments the
//! waiter count in `attention` (SeqCst), (3) runs a full barrier, (4)
//! re-checks for data and (5) `FUTEX_WAIT`s on the value of (1). The publisher
//! (a) release-stores the commit word, (b) runs a full barrier, (c) loads
//! `attention`, and only if a waiter is counted bumps the futex word and calls
//! `FUTEX_WAKE` for ONE sleeper. Steps (3) and (b) make (2)→(4) and (a)→(c) a
//! Dekker pair: either the sleeper sees the record at (4), or the publisher
//! sees the waiter at (c), whose futex bump makes (5) return at once or whose
//! wake-up reaches it. An offer with no sleeper counted makes no system call.
//!
//! The wake-up reaches every sleeper through a cascade: (6) a sleeper woken by
//! a `FUTEX_WAKE` takes its count away and, while other sleepers are counted,
//! wakes up to two sleepers that went to sleep on an *earlier* value of the
//! futex word (each sleeper waits with a bitset bit derived from the value it
//! read, and the hop wakes every bit but the current value's), before it reads
//! its own data. So the publisher's cost per offer is one system call waking
//! one thread whatever the number of sleepers, and the last of N sleepers is
//! woken about log2(N) hops later; `wait.rs` argues why no sleeper is left
//! behind, and the loom model checks it.
//! The publisher's barrier (b) is free: its process registers for
//! `membarrier(GLOBAL_EXPEDITED)` and the sleeper's step (3) is that system
//! call, which forces the barrier onto the publisher's CPU; where the kernel
//! lacks it the publisher uses a SeqCst fence (recorded in the publisher
//! block's `fence_mode`). An idle blocking subscriber wakes every 20 ms to
//! check the publisher's liveness and otherwise uses no CPU.
//!
//! After (2) the sleeper also sets `waiting` in its slot; the count is taken
//! away by whoever swaps that flag back (the sleeper on waking, or whoever
//! reclaims a dead owner's slot), so a sleeper killed while asleep costs the
//! publisher's commits a system call only until its slot is reclaimed.
//!
//! ## Several publishers
//!
//! A ring created with [`RingConfig::max_publishers`] N > 1 takes up to N
//! publishers, in any processes: the first [`Publisher::create`] builds it,
//! later ones attach to it while it is live (its geometry wins), and one
//! more than N gets [`RingError::TooManyPublishers`]. With N = 1 (the
//! default) nothing below applies: the single-writer protocol above runs
//! unchanged (one predictable branch on a field at claim and at commit).
//!
//! *Claims.* Writers append under a claim lock, a word in the publisher
//! block holding `generation << 32 | index + 1` (0 in the low half when
//! free). The holder (Acquire CAS) reads the shared tail and zeroed mark,
//! processes membership requests, checks `limit` as the single writer does,
//! zeroes ahead (the holder alone zeroes, beyond the tail and below `limit`,
//! so it never zeroes a word another writer claimed, and the tail never
//! passes the zeroed mark), writes its claim `(start, end)` (padding
//! included) into its publisher slot, release-stores the new tail and
//! releases the lock (Release). The lock is held for a few dozen
//! instructions, never while the payload is written: writers fill and
//! commit their records in parallel, and a record becomes visible through
//! its own commit word exactly as in the single-writer protocol. So every
//! message is appended atomically, there is one total order (the order of
//! the tail), and each publisher's own order is kept. A held lock makes an
//! offer spin briefly, then return `BackPressured` (retry, nothing lost).
//!
//! *Solo.* A publisher alone on the ring (every other publisher slot free)
//! that has held the claim lock 1024 times in a row, nobody else taking it
//! in between, keeps it between claims (the lock
//! word's solo bit): its claim is then a store of its slot's `busy` flag, a
//! check that the word is unchanged, the claim from its own copies of the
//! shared tail and zeroed mark, and `busy` back to 0; no CAS, no reload.
//! Another publisher (attaching, or wanting to claim) takes the lock from
//! it by a CAS on the kept word, then `membarrier(GLOBAL_EXPEDITED)`, then
//! waits for the keeper's `busy` to read 0 (BackPressured meanwhile; at
//! once if the keeper is dead, whose claim is resolved as below). The
//! barrier makes the keeper's unfenced `busy` store and word load behave
//! as if fenced: either the taker sees `busy` set and waits, or the keeper
//! sees the new word and backs off. A process that cannot issue the
//! barrier asks through `claim_wanted` instead, and the keeper lets go at
//! its next claim; rings whose creator could not register for the barrier
//! never go solo. It makes one active writer on a ring opened for several
//! nearly as cheap as the single writer; while several are attached none
//! keeps the lock (each would pay a barrier whenever the other had been
//! descheduled for 1024 claims), and each claim takes it with a CAS.
//!
//! *Records* of a multi-writer ring carry the writer's slot index + 1 in the
//! high 8 bits of `len` (so payloads are at most
//! [`layout::MAX_MULTI_MESSAGE_LEN`]); [`RecordInfo::publisher`] reads it and
//! the slot's pid. An aborted claim (dropped or [`Claim::abort`]) is
//! committed as a skip record (`len == SKIP_LEN`, `type_id` = bytes to
//! skip), since later writers may have committed after it.
//!
//! *A dead publisher* (every publisher holds a write lock on its slot's byte
//! of the lock file, and a shared read lock on the publisher byte):
//! * dead holding the claim lock: a writer that finds the lock held by the
//!   same holder and generation for [`LOCK_CHECK_INTERVAL`] (1 ms) checks
//!   the holder's lock byte and, when it is gone, takes the lock over (CAS
//!   on the whole word, so a lock re-taken meanwhile is not stolen),
//!   resolves the dead claim and rescans the slots;
//! * dead between claim and commit: a subscriber whose position holds no
//!   record while the shared tail is beyond it waits [`DEAD_CLAIM_CHECK`]
//!   (1 ms), then reads the pending claims of the publisher slots (the tail's
//!   Release store makes them visible); if the claim covering its position
//!   belongs to a dead publisher, it skips it locally (subscribers never
//!   write the data area), first to the record past the claim's padding
//!   (committed before the padding, it is delivered if it was), else to the
//!   claim's end. A live publisher that takes the dead one's slot resolves
//!   the claim under the claim lock (a skip record, and the padding) before
//!   it reuses the slot, and only if no byte of the claim was zeroed or
//!   claimed one lap on. So the channel stalls for about 1 ms (a subscriber
//!   asleep in `WaitStrategy::Block` rechecks at least every 20 ms), within
//!   the documented bound [`DEAD_PUBLISHER_STALL`] (50 ms), nothing torn is
//!   delivered, and everything committed before the death is.
//! * The ring closes when its last publisher leaves: each leaver releases its
//!   slot and tries to upgrade its shared lock to a write lock, which
//!   succeeds only for the last. Subscribers report `PublisherGone` when no
//!   publisher holds the shared lock (any lock, probed with `F_WRLCK`; only
//!   the ring's writers can open the lock file). Attachers take the shared
//!   lock first, so a closing or replacing process (write lock) and an
//!   attacher exclude each other.
//! * Joining subscribers are activated by the claim-lock holder at the
//!   shared tail; every cached `limit` was computed from positions at most
//!   that tail, so none lets a writer overwrite what the joiner will read.
//!   A `from=history` joiner starts behind the tail instead: its
//!   activation bumps a counter every claimer checks under the lock, so
//!   the others rescan first (see `history.rs`, "Several publishers").
//!
//! *Slow subscribers and history* work with several publishers too (the
//! ring's [`Retention`] is its creator's): whichever claimer has been held
//! back for `evict_after` evicts, with the claim lock held, and every
//! claimer of an evicting ring runs a Release fence after taking the lock,
//! so the evicted reader's check holds against all writers (`evict.rs`);
//! the history marks live in shared memory, written and read by the lock
//! holder (`history.rs`).
//!
//! ## Untrusted peers
//!
//! Every value read from shared memory is checked before use: commit words
//! must equal the expected position + 1 (or 0), lengths must be at most the
//! maximum and fit before the end of the data area, padding must be sane,
//! slot states must be known and positions must lie in `[tail - capacity,
//! tail]`; header fields are copied at attach time and re-compared
//! periodically. A violation is [`OfferError::Corrupt`] or
//! [`PollError::Corrupt`] with a message; every loop is bounded. (A peer can
//! still change a payload while the handler reads it; payloads are bytes, so
//! that only yields wrong data, never a violation here.)
//!
//! ## Untrusted neighbours
//!
//! The ring directory is shared with every local user. Existing names are
//! opened with `O_NOFOLLOW | O_NONBLOCK` and must be regular files (a
//! symlink, FIFO or device under the name is [`RingError::NotARing`]); names
//! this crate creates carry random parts from `getrandom`. A subscriber
//! attaches only to a ring (and lock file) owned by its own uid or one it
//! names ([`Subscriber::open_with_owners`]); a publisher never touches
//! another uid's file under its name. Either way the error is
//! [`RingError::ForeignOwner`] naming the owner. A ring's memory is
//! reserved with `posix_fallocate` at creation, so a full directory fails
//! [`Publisher::create`] with `ENOSPC` instead of a SIGBUS later; a file
//! truncated later by someone who can write it is caught by a SIGBUS
//! handler that maps zero pages over the mapping, and the handles report
//! `Corrupt` (see `mapping.rs` for how, and for what remains).
//!
//! ## Model checking
//!
//! A loom model of the commit, back-pressure, join and wake-up protocol
//! lives in `src/loom_model.rs`; run it with
//! `RUSTFLAGS="--cfg loom" cargo test -p conduit-ringbuf --release loom`.
#![deny(missing_docs)]

mod error;
mod evict;
mod file;
mod futex;
mod history;
pub mod layout;
mod liveness;
mod mapping;
mod publisher;
pub mod shared_words;
mod subscriber;
mod wait;

#[cfg(all(test, loom))]
mod loom_model;
#[cfg(all(test, not(loom)))]
mod tests;

pub use error::{OfferError, PollError, RingError};
pub use evict::{Retention, SlowPolicy};
pub use history::Start;
pub use liveness::lock_byte_held;
pub use publisher::{Claim, Publisher};
pub use subscriber::{PublisherRef, RecordInfo, Subscriber, DEAD_CLAIM_CHECK};

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a back-pressured publisher checks whether the subscribers
/// holding it back are alive.
pub const BACKPRESSURE_REAP_INTERVAL: Duration = Duration::from_millis(1);
/// How often a publisher that is not back-pressured checks subscriber liveness.
pub const REAP_INTERVAL: Duration = Duration::from_millis(100);
/// How often a subscriber that sees no data checks the publisher's liveness.
pub const PUBLISHER_CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// How long the claim lock of a multi-writer ring must stay with one holder
/// before a publisher waiting for it checks whether that holder is alive
/// (and takes the lock over from a dead one).
pub const LOCK_CHECK_INTERVAL: Duration = Duration::from_millis(1);

/// The documented bound on how long a publisher killed at any point
/// (holding the claim lock, or between a claim and its commit) holds up the
/// other publishers and the subscribers of a multi-writer ring: the checks
/// take [`LOCK_CHECK_INTERVAL`] and [`DEAD_CLAIM_CHECK`] (1 ms each), and a
/// subscriber asleep in [`WaitStrategy::Block`] rechecks at least every
/// 20 ms (at once when a later record is committed); the rest is margin for
/// scheduling on a loaded host. `ring_mpsc`'s kill test prints the longest
/// stall it measured against it.
pub const DEAD_PUBLISHER_STALL: Duration = Duration::from_millis(50);

/// Longest ring name.
pub const MAX_NAME_LEN: usize = 200;

/// Configuration of a ring created by a publisher.
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// Data capacity in bytes; a power of two.
    pub capacity: usize,
    /// Largest payload in bytes; at most `capacity / 2 - 16` (see
    /// [`layout::max_message_limit`]); `capacity / 8` is a good default.
    pub max_message_len: usize,
    /// Most subscribers attached at once (slots in the header).
    pub max_subscribers: u32,
    /// Most publishers attached at once. 1 (the default) is the
    /// single-writer protocol; more makes a multi-writer ring that other
    /// processes attach to with [`Publisher::create`] (see "Several
    /// publishers"); its `max_message_len` is at most
    /// [`layout::MAX_MULTI_MESSAGE_LEN`].
    pub max_publishers: u32,
    /// Directory of the ring files; `None` means `$CONDUIT_SHM_DIR` or `/dev/shm`.
    pub dir: Option<PathBuf>,
    /// File mode of a created ring file. Subscribers must be able to write
    /// the ring (they write their slot); a class with read access only can
    /// read the data but not subscribe. The ring's lock file gets read-write
    /// for the classes that may write the ring and nothing for the others.
    pub mode: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            capacity: 1 << 20,
            max_message_len: 1 << 17,
            max_subscribers: 64,
            max_publishers: 1,
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
    /// Spin briefly, then sleep on a futex. The publisher wakes one
    /// sleeper per commit, and each woken sleeper wakes up to two more
    /// (see "Waiting" in the crate docs): the publisher's cost does not grow
    /// with the number of sleepers; the last of N is woken about log2(N)
    /// wake-up hops after the first.
    Block,
}

/// The directory ring files live in: `dir`, else `$CONDUIT_SHM_DIR`, else `/dev/shm`.
pub fn ring_dir(dir: Option<&Path>) -> PathBuf {
    match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::var_os("CONDUIT_SHM_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/dev/shm")),
    }
}

/// Checks that `name` can be a ring file name.
///
/// # Errors
/// [`RingError::InvalidName`] for an empty name, one longer than
/// [`MAX_NAME_LEN`], one containing `/` or NUL, `.`/`..`, or one starting with `.`.
pub fn validate_name(name: &str) -> Result<(), RingError> {
    let bad = |why: &str| Err(RingError::InvalidName(format!("{name:?}: {why}")));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad(&format!("longer than {MAX_NAME_LEN} bytes"));
    }
    if name.contains('/') || name.contains('\0') {
        return bad("contains '/' or NUL");
    }
    if name.starts_with('.') {
        return bad("starts with '.' (reserved for temporary files)");
    }
    Ok(())
}
