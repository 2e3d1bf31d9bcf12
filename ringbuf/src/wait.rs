//! Waiting for data: spin, spin-then-yield, or sleep on the futex.
//!
//! The sleep protocol (steps (1)–(5) of the crate docs):
//! 1. read the futex word `f` (Acquire; partner: the publisher's Release bump);
//! 2. increment the waiter count in `attention` (SeqCst);
//! 3. full barrier: `membarrier(GLOBAL_EXPEDITED)` when the publisher relies
//!    on it (`fence_mode`), else a SeqCst fence pairing with the publisher's;
//! 4. re-check the commit word (Acquire);
//! 5. `FUTEX_WAIT(futex, f)`, which returns at once if the publisher bumped
//!    the word after (1).
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
/// Longest sleep; a sleeper re-checks the publisher's liveness at least this often.
const MAX_SLEEP: Duration = Duration::from_millis(20);
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
                self.sleep(deadline);
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
    fn sleep(&mut self, deadline: Option<Instant>) {
        let now = Instant::now();
        let left =
            |max: Duration| deadline.map_or(max, |d| d.saturating_duration_since(now).min(max));
        let Some(c) = self.conn.as_ref() else {
            std::thread::sleep(left(DETACHED_SLEEP));
            return;
        };
        let signal = c.map.signal();
        // (1) Acquire partner: the publisher's Release fetch_add before FUTEX_WAKE.
        let f = signal.futex.load(Ordering::Acquire);
        // (2) Counted, then flagged in our slot, so that whoever reclaims
        // the slot after our death can take the count away.
        signal
            .attention
            .fetch_add(ATTENTION_WAITER, Ordering::SeqCst);
        // Release partner: the AcqRel swap in `reclaim_waiter` (publisher.rs).
        c.slot().waiting.store(1, Ordering::SeqCst);
        // (3) Pairs with the publisher's barrier between its commit store and
        // its load of `attention`.
        let fenced = if c.map.publisher().fence_mode.load(Ordering::Relaxed) == FENCE_MEMBARRIER {
            futex::global_barrier()
        } else {
            fence(Ordering::SeqCst);
            true
        };
        // (4)
        if !self.ready() {
            let max = if fenced {
                MAX_SLEEP
            } else {
                MAX_SLEEP_UNFENCED
            };
            // (5)
            futex::wait(&signal.futex, f, left(max));
        }
        reclaim_waiter(&c.map, c.slot());
    }
}
