//! Waiting for data: spin, spin-then-yield, or sleep on the futex.
//!
//! The sleep protocol (steps (1)–(5) of the crate docs):
//! 1. read the futex word `f` (Acquire; partner: the publisher's Release bump);
//! 2. increment the waiter count in `attention` (SeqCst);
//! 3. full barrier: `membarrier(GLOBAL_EXPEDITED)` when the publisher relies
//!    on it (`fence_mode`), else a SeqCst fence pairing with the publisher's;
//! 4. re-check the commit word (Acquire);
//! 5. `FUTEX_WAIT(futex, f)`, which returns at once if the publisher bumped
//!    the word after (1); the wait carries the bitset bit `1 << (f % 32)`
//!    (the sleeper's *generation*);
//! 6. on waking, take the count away (`reclaim_waiter`); if a `FUTEX_WAKE`
//!    woke us and other sleepers are still counted, wake up to two sleepers
//!    of *earlier* generations (`FUTEX_WAKE_BITSET` with every bit but that
//!    of the word's current value), then go and read.
//!
//! The publisher wakes one sleeper per bump, not all: its cost does not grow
//! with their number. Step (6) is the cascade that reaches the others. Why
//! no sleeper is left asleep with data to read (the Dekker pair of (2)–(4)
//! with the publisher's commit covers the sleepers that are not yet queued
//! in the kernel):
//! * a sleeper queued on an old value `f` was queued (and counted) before
//!   the publisher's bump to `f + 1` (else the kernel, which compares the
//!   word under its bucket lock, would have refused the wait), so before the
//!   publisher's `FUTEX_WAKE`, so before every wake-up and hop that follows
//!   it: whoever is woken sees that count in its `reclaim_waiter` RMW;
//! * a woken sleeper always hops while others are counted, and a hop wakes
//!   only sleepers of earlier generations, so as long as one of those is
//!   queued, some woken thread is about to hop towards it: the tree ends
//!   only when no sleeper of an earlier value is queued;
//! * it does end: a sleeper that falls asleep after the bump waits with the
//!   new value's bit, which the hops exclude; hops run only while bumps
//!   (commits seen with a sleeper counted) leave sleepers behind.
//!
//! What the cascade does not cover, each bounded by the 20 ms re-check of
//! every sleeper (`MAX_SLEEP`) or the publisher's next wake-up: a woken
//! sleeper killed before its hop; a sleeper of an old value whose bit equals
//! the current value's (the word moved by a multiple of 32 while it was
//! queued and before a hop reached it). The price of the cascade is paid by
//! the subscribers: the last of N sleepers is woken about log2(N) hops after
//! the first instead of by the publisher's one call.
//!
//! A sleep that times out with the futex word unchanged keeps its count
//! for the next sleep of the same `wait`, which starts at step (4): the
//! count has stood since the barrier, so a commit after it bumped the word
//! (step (5) then returns at once) and a commit before it is seen by (4).
//! An idle sleeper thus costs the publisher's CPU no membarrier IPI every
//! `MAX_SLEEP`; `wait` takes the count away whenever it returns.
//!
//! The count is also flagged in the sleeper's slot (`waiting`): the sleeper
//! swaps the flag back to 0 and takes its count away on waking, and so does
//! whoever reclaims the slot of a dead owner (the publisher's reaper, or a
//! subscriber that takes the slot over). A sleeper killed while asleep thus
//! costs the publisher's commits a `FUTEX_WAKE` only until its slot is
//! reclaimed. (A kill in the few instructions between the count and the
//! flag still leaves the count behind; that is all that is left.)
//!
//! If the membarrier call fails here (the publisher's kernel had it, ours
//! refuses it, e.g. under a seccomp filter), the sleeper cannot rely on the
//! publisher seeing it and sleeps at most 1 ms at a time instead.

use crate::error::PollError;
use crate::layout::{ATTENTION_WAITER, FENCE_MEMBARRIER, SLOT_JOINING};
use crate::publisher::reclaim_waiter;
use crate::subscriber::Subscriber;
use crate::{futex, WaitStrategy};
use crossbeam_utils::Backoff;
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

/// Spins before sleeping (`Block`): about 10–20 µs. `SpinYield` backs off
/// with crossbeam's `Backoff` instead (spins of doubling length, then yields).
const SPINS_BEFORE_SLEEP: u32 = 2048;
/// Sleepers a woken sleeper wakes in turn (step (6)): the wake-up spreads
/// as a binary tree, so the last of N sleepers is about log2(N) hops from
/// the publisher's single `FUTEX_WAKE`.
const CASCADE_FANOUT: i32 = 2;
/// Longest sleep; a sleeper re-checks the publisher's liveness at least this often.
const MAX_SLEEP: Duration = Duration::from_millis(20);
// Test builds only: set on a subscriber's thread, its sleeps never time
// out, so a lost wake-up is a hang (which the test's watchdog reports)
// instead of a 20 ms delay.
#[cfg(test)]
thread_local! {
    pub(crate) static NO_SLEEP_TIMEOUT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Steps (2)-(3) taken on this thread (test builds only).
    pub(crate) static COUNTS_TAKEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}
/// Longest sleep when the asymmetric barrier is unavailable.
const MAX_SLEEP_UNFENCED: Duration = Duration::from_millis(1);
/// Sleep step while no ring is attached.
const DETACHED_SLEEP: Duration = Duration::from_millis(1);

impl Subscriber {
    /// Waits with `strategy` until data may be available or `timeout` passes.
    /// Returns true if data is available.
    ///
    /// True also means "poll now": the publisher closed or died, a new ring
    /// was attached, or a corrupt word waits (the poll reports it). `None`
    /// waits without limit.
    ///
    /// # Errors
    /// None at present; the `Result` leaves room for reporting from the wait.
    pub fn wait(
        &mut self,
        strategy: WaitStrategy,
        timeout: Option<Duration>,
    ) -> Result<bool, PollError> {
        let mut counted = None;
        let r = self.wait_counted(strategy, timeout, &mut counted);
        // Whatever ended the wait, we are not asleep any more: a count kept
        // across timed-out sleeps must not make the publisher go on waking.
        if counted.is_some() {
            if let Some(c) = self.conn.as_ref() {
                reclaim_waiter(&c.map, c.slot());
            }
        }
        r
    }

    /// [`Subscriber::wait`]; `counted` holds the futex value of a sleep whose
    /// count (steps (2)-(3)) is still in place (see [`Subscriber::sleep`]).
    fn wait_counted(
        &mut self,
        strategy: WaitStrategy,
        timeout: Option<Duration>,
        counted: &mut Option<u32>,
    ) -> Result<bool, PollError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let backoff = Backoff::new();
        let mut i: u32 = 0;
        loop {
            if self.ready() {
                return Ok(true);
            }
            i = i.saturating_add(1);
            let slow = match strategy {
                WaitStrategy::Spin => false,
                WaitStrategy::SpinYield => backoff.is_completed(),
                WaitStrategy::Block => i > SPINS_BEFORE_SLEEP,
            };
            if slow || i % 64 == 0 {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Ok(false);
                }
                if self.attention(now) {
                    return Ok(true);
                }
            }
            // `Spin` busy-spins by definition. `Block` keeps its own spin
            // count rather than `Backoff`: it must not yield (a yield only
            // delays the futex sleep, whose wake-up is the publisher's), and
            // its spin budget is sized against the cost of that sleep.
            if strategy == WaitStrategy::SpinYield {
                backoff.snooze();
            } else if !slow {
                std::hint::spin_loop();
            } else {
                self.sleep(deadline, counted);
            }
        }
    }

    /// Something for `poll` to do right now.
    #[inline]
    fn ready(&self) -> bool {
        match &self.conn {
            None => false,
            // Acquire partner: the publisher's Release CAS to ACTIVE.
            Some(c) if !c.active => c.slot().state.load(Ordering::Acquire) != SLOT_JOINING,
            Some(c) => c.pending.is_some() || c.has_data(),
        }
    }

    /// Rate-limited checks: attach when detached, liveness when attached.
    fn attention(&mut self, now: Instant) -> bool {
        if self.conn.is_none() {
            let _ = self.try_reattach();
            return self.conn.is_some();
        }
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        if matches!(c.skip_dead_claim(now), Ok(true) | Err(_)) {
            return true;
        }
        c.maybe_health_check(now);
        c.pending.is_some()
    }

    /// One sleep on the futex (or a short nap while detached).
    ///
    /// A sleep that times out with the futex word unchanged keeps its count
    /// (`counted` = the value it slept on) and the next sleep of the same
    /// `wait` goes straight to step (4): the count has been in place since
    /// the barrier, so every commit after the barrier found it and bumped
    /// the word (the wait then returns at once), and every commit before it
    /// is seen by the re-check. This spares the publisher's CPU a membarrier
    /// IPI (and `attention` two read-modify-writes) per sleeper and
    /// `MAX_SLEEP` while nothing is published. `counted` is only set while
    /// attached, and the attachment does not change within one `wait`.
    fn sleep(&mut self, deadline: Option<Instant>, counted: &mut Option<u32>) {
        let now = Instant::now();
        let left =
            |max: Duration| deadline.map_or(max, |d| d.saturating_duration_since(now).min(max));
        let Some(c) = self.conn.as_ref() else {
            std::thread::sleep(left(DETACHED_SLEEP));
            return;
        };
        let signal = c.map.signal();
        let (f, fenced) = match counted.take() {
            // Still counted, and no bump since: steps (1)-(3) hold as they were.
            // Acquire partner: the publisher's Release fetch_add.
            Some(f) if signal.futex.load(Ordering::Acquire) == f => (f, true),
            // A bump since (a commit found us counted): go and read.
            Some(_) => {
                reclaim_waiter(&c.map, c.slot());
                return;
            }
            None => {
                // (1) Acquire partner: the publisher's Release fetch_add before FUTEX_WAKE.
                let f = signal.futex.load(Ordering::Acquire);
                #[cfg(test)]
                COUNTS_TAKEN.with(|n| n.set(n.get() + 1));
                // (2) Counted, then flagged in our slot, so that whoever reclaims
                // the slot after our death can take the count away.
                signal
                    .attention
                    .fetch_add(ATTENTION_WAITER, Ordering::SeqCst);
                // Release partner: the AcqRel swap in `reclaim_waiter` (publisher.rs).
                c.slot().waiting.store(1, Ordering::SeqCst);
                // (3) Pairs with the publisher's barrier between its commit store and
                // its load of `attention`.
                let fenced =
                    if c.map.publisher().fence_mode.load(Ordering::Relaxed) == FENCE_MEMBARRIER {
                        futex::global_barrier()
                    } else {
                        fence(Ordering::SeqCst);
                        true
                    };
                (f, fenced)
            }
        };
        // (4)
        let mut woken = false;
        if !self.ready() {
            let max = if fenced {
                MAX_SLEEP
            } else {
                MAX_SLEEP_UNFENCED
            };
            #[cfg(test)]
            let max = if NO_SLEEP_TIMEOUT.with(std::cell::Cell::get) {
                Duration::from_secs(3600)
            } else {
                max
            };
            // (5)
            woken = futex::wait(&signal.futex, f, futex::generation_bit(f), left(max));
        }
        // Timed out (or a signal, or data seen at (4)) with the word
        // unchanged: keep the count for the next sleep. Only with the
        // barrier: without it, each sleep must try it again.
        // Acquire partner: the publisher's Release fetch_add.
        if !woken && fenced && signal.futex.load(Ordering::Acquire) == f {
            *counted = Some(f);
            return;
        }
        let others = reclaim_waiter(&c.map, c.slot());
        // (6) The cascade: a sleeper woken by a FUTEX_WAKE passes it on to
        // sleepers of earlier futex values, before it reads its own data.
        if woken && others != 0 {
            // Relaxed: we were woken after the bump that woke us (through the
            // futex call), so this reads that value or a later one.
            let now = signal.futex.load(Ordering::Relaxed);
            futex::wake_earlier(&signal.futex, CASCADE_FANOUT, now);
        }
    }
}
