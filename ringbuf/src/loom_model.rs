//! Loom models of the ring's memory orderings.
//!
//! The real ring keeps its words in a shared file mapping, which loom cannot
//! instrument, so these models restate the protocol on loom atomics with the
//! same orderings as `publisher.rs`, `subscriber.rs` and `wait.rs`. Positions
//! count records of one slot each; payloads are `UnsafeCell`s, so loom reports
//! any read that races with an overwrite. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p conduit-ringbuf --release loom`.

use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Record slots in the modelled ring.
const CAP: u64 = 3;

struct Ring {
    commit: [AtomicU64; CAP as usize],
    payload: [UnsafeCell<u64>; CAP as usize],
    /// Slot state and position of subscribers 0 and 1.
    state: [AtomicU32; 2],
    position: [AtomicU64; 2],
    attention: AtomicU64,
    futex: AtomicU32,
}

const FREE: u32 = 0;
const JOINING: u32 = 1;
const ACTIVE: u32 = 2;
const REQUEST: u64 = 1 << 32;

impl Ring {
    fn new() -> Ring {
        Ring {
            commit: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            payload: [UnsafeCell::new(0), UnsafeCell::new(0), UnsafeCell::new(0)],
            state: [AtomicU32::new(FREE), AtomicU32::new(FREE)],
            position: [AtomicU64::new(0), AtomicU64::new(0)],
            attention: AtomicU64::new(0),
            futex: AtomicU32::new(0),
        }
    }

    fn slot(&self, pos: u64) -> usize {
        (pos % CAP) as usize
    }
}

/// The publisher's scan: take requests, activate joiners, compute the limit.
fn scan(r: &Ring, tail: u64) -> (u64, u32) {
    let att = r.attention.load(Ordering::Relaxed);
    let requests = att & !(REQUEST - 1);
    if requests != 0 {
        r.attention.fetch_sub(requests, Ordering::Acquire);
    }
    let mut min = tail;
    let mut active = 0;
    for i in 0..2 {
        match r.state[i].load(Ordering::Acquire) {
            JOINING => {
                r.position[i].store(tail, Ordering::Relaxed);
                if r.state[i]
                    .compare_exchange(JOINING, ACTIVE, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
                {
                    active += 1;
                }
            }
            ACTIVE => {
                let p = r.position[i].load(Ordering::Acquire);
                assert!(
                    p <= tail && tail - p <= CAP,
                    "position {p} outside the window at {tail}"
                );
                min = min.min(p);
                active += 1;
            }
            _ => {}
        }
    }
    (min + CAP, active)
}

/// Publishes `n` records (value = position * 10 + 7), with back-pressure,
/// zero-ahead and the join handshake. With `inline_reader`, subscriber 0 is
/// served by this thread after each commit (fewer threads, same protocol).
fn publish(r: &Ring, n: u64, inline_reader: bool) {
    let mut tail = 0;
    let mut read0 = 0;
    let (mut limit, mut active) = scan(r, tail);
    while tail < n {
        if r.attention.load(Ordering::Relaxed) >= REQUEST {
            (limit, active) = scan(r, tail);
        }
        // Record plus the zeroed word after it.
        if active == 0 || tail + 2 > limit {
            (limit, active) = scan(r, tail);
            if active == 0 || tail + 2 > limit {
                thread::yield_now();
                continue;
            }
        }
        let s = r.slot(tail);
        r.payload[s].with_mut(|p| {
            // SAFETY: the slot is beyond every active subscriber's unread data
            // (limit) and uncommitted; loom checks this claim.
            unsafe { *p = tail * 10 + 7 }
        });
        r.commit[r.slot(tail + 1)].store(0, Ordering::Relaxed);
        r.commit[s].store(tail + 1, Ordering::Release);
        tail += 1;
        if inline_reader {
            read0 = read_one(r, 0, read0).unwrap_or(read0);
        }
    }
}

/// Reads the record at `pos` if committed; returns the next position.
fn read_one(r: &Ring, me: usize, pos: u64) -> Option<u64> {
    let c = r.commit[r.slot(pos)].load(Ordering::Acquire);
    if c != pos + 1 {
        assert_eq!(c, 0, "stale commit word {c} at position {pos}");
        return None;
    }
    let v = r.payload[r.slot(pos)].with(|p| {
        // SAFETY: committed and not yet released by our position store.
        unsafe { *p }
    });
    assert_eq!(v, pos * 10 + 7);
    r.position[me].store(pos + 1, Ordering::Release);
    Some(pos + 1)
}

/// Reads until position `n`, checking values and that no stale word is seen.
fn subscribe(r: &Ring, me: usize, mut pos: u64, n: u64) {
    while pos < n {
        match read_one(r, me, pos) {
            Some(next) => pos = next,
            None => thread::yield_now(),
        }
    }
}

fn join(r: &Ring, me: usize) -> u64 {
    r.state[me].store(JOINING, Ordering::Release);
    r.attention.fetch_add(REQUEST, Ordering::Release);
    loop {
        if r.state[me].load(Ordering::Acquire) == ACTIVE {
            return r.position[me].load(Ordering::Relaxed);
        }
        thread::yield_now();
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.max_branches = 100_000;
    b.check(f);
}

#[test]
fn loom_commit_and_back_pressure_across_laps() {
    model(|| {
        let r = Arc::new(Ring::new());
        let n = 4;
        let sub = {
            let r = r.clone();
            thread::spawn(move || {
                let start = join(&r, 0);
                subscribe(&r, 0, start, n);
            })
        };
        publish(&r, n, false);
        sub.join().unwrap();
    });
}

#[test]
fn loom_join_while_publishing() {
    model(|| {
        let r = Arc::new(Ring::new());
        let n = 3;
        // Subscriber 0 is active from the start and served inline by the
        // publisher; subscriber 1 joins concurrently and must read a gapless,
        // never-overwritten sequence from the position it is given.
        r.state[0].store(ACTIVE, Ordering::Relaxed);
        let s1 = {
            let r = r.clone();
            thread::spawn(move || {
                let start = join(&r, 1);
                subscribe(&r, 1, start, n);
            })
        };
        publish(&r, n, true);
        // A joiner not yet activated is activated at the final position.
        while r.state[1].load(Ordering::Acquire) != ACTIVE {
            scan(&r, n);
            thread::yield_now();
        }
        s1.join().unwrap();
    });
}

#[test]
fn loom_no_lost_wakeup() {
    model(|| {
        let r = Arc::new(Ring::new());
        let sleeper = {
            let r = r.clone();
            thread::spawn(move || {
                let f = r.futex.load(Ordering::Acquire);
                r.attention.fetch_add(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                let seen = r.commit[0].load(Ordering::Acquire);
                // FUTEX_WAIT(futex, f) would sleep only if the word still equals f.
                (seen, f)
            })
        };
        r.commit[0].store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        if r.attention.load(Ordering::Relaxed) as u32 != 0 {
            r.futex.fetch_add(1, Ordering::Release);
        }
        let (seen, f) = sleeper.join().unwrap();
        if seen == 0 {
            assert_ne!(r.futex.load(Ordering::Acquire), f, "lost wake-up");
        }
    });
}

/// The kernel's futex, as far as the wake-up protocol relies on it: the
/// word is compared under the bucket lock, and a wake-up removes waiters
/// whose bitset intersects the mask from the queue. The model wakes the
/// NEWEST matching waiters first (the kernel wakes the oldest): the cascade
/// must not depend on the order. A waiter has no timeout, so a lost wake-up
/// is a deadlock, which loom reports.
mod cascade {
    use super::*;
    use loom::sync::{Condvar, Mutex};

    const SLEEPERS: usize = 2;
    const ANY: u32 = u32::MAX;

    #[derive(Default)]
    struct Queue {
        waiters: Vec<(usize, u32)>,
        woken: [bool; SLEEPERS],
    }

    struct Futex {
        word: AtomicU32,
        queue: Mutex<Queue>,
        cv: Condvar,
    }

    fn bit(v: u32) -> u32 {
        1 << (v % 32)
    }

    impl Futex {
        /// FUTEX_WAIT_BITSET: true if woken by a wake-up, false if the word
        /// had changed.
        fn wait(&self, me: usize, expected: u32, bit: u32) -> bool {
            let mut q = self.queue.lock().unwrap();
            if self.word.load(Ordering::SeqCst) != expected {
                return false;
            }
            q.waiters.push((me, bit));
            while !q.woken[me] {
                q = self.cv.wait(q).unwrap();
            }
            q.woken[me] = false;
            true
        }

        /// FUTEX_WAIT_BITSET with a timeout, which expires at whatever point
        /// loom picks while the waiter is queued: true if woken, false if the
        /// word had changed or the wait timed out.
        fn wait_or_time_out(&self, me: usize, expected: u32, bit: u32) -> bool {
            {
                let mut q = self.queue.lock().unwrap();
                if self.word.load(Ordering::SeqCst) != expected {
                    return false;
                }
                q.waiters.push((me, bit));
            }
            let mut q = self.queue.lock().unwrap();
            if q.woken[me] {
                q.woken[me] = false;
                return true;
            }
            q.waiters.retain(|w| w.0 != me);
            false
        }

        /// FUTEX_WAKE_BITSET.
        fn wake(&self, n: usize, mask: u32) {
            let mut q = self.queue.lock().unwrap();
            let mut left = n;
            let mut i = q.waiters.len();
            while i > 0 && left > 0 {
                i -= 1;
                if q.waiters[i].1 & mask != 0 {
                    let (id, _) = q.waiters.remove(i);
                    q.woken[id] = true;
                    left -= 1;
                }
            }
            drop(q);
            self.cv.notify_all();
        }
    }

    struct Shared {
        commit: [AtomicU64; 2],
        attention: AtomicU64,
        waiting: [AtomicU32; SLEEPERS],
        futex: Futex,
    }

    /// `reclaim_waiter`.
    fn reclaim(s: &Shared, me: usize) -> u32 {
        if s.waiting[me].swap(0, Ordering::AcqRel) == 1 {
            (s.attention.fetch_sub(1, Ordering::Relaxed) as u32).wrapping_sub(1)
        } else {
            s.attention.load(Ordering::Relaxed) as u32
        }
    }

    /// `Subscriber::wait` in `Block` (without the spin) and the reads, until
    /// `n` records are seen: steps (1)–(6) of `wait.rs`. The first
    /// `timeouts` sleeps may time out; one that does with the word unchanged
    /// keeps its count, and the next sleep skips steps (1)–(3).
    fn sleeper(s: &Shared, me: usize, n: u64, fanout: usize, mut timeouts: usize) {
        let mut pos = 0;
        let mut counted: Option<u32> = None;
        while pos < n {
            if s.commit[pos as usize].load(Ordering::Acquire) == pos + 1 {
                // `wait` returns: a count kept is taken away.
                if counted.take().is_some() {
                    reclaim(s, me);
                }
                pos += 1;
                continue;
            }
            let f = match counted.take() {
                Some(f) if s.futex.word.load(Ordering::Acquire) == f => f,
                Some(_) => {
                    reclaim(s, me);
                    continue;
                }
                None => {
                    let f = s.futex.word.load(Ordering::Acquire);
                    s.attention.fetch_add(1, Ordering::SeqCst);
                    s.waiting[me].store(1, Ordering::SeqCst);
                    fence(Ordering::SeqCst);
                    f
                }
            };
            let mut woken = false;
            if s.commit[pos as usize].load(Ordering::Acquire) != pos + 1 {
                woken = if timeouts > 0 {
                    timeouts -= 1;
                    s.futex.wait_or_time_out(me, f, bit(f))
                } else {
                    s.futex.wait(me, f, bit(f))
                };
            }
            if !woken && s.futex.word.load(Ordering::Acquire) == f {
                counted = Some(f);
                continue;
            }
            let others = reclaim(s, me);
            if woken && others != 0 {
                let now = s.futex.word.load(Ordering::Relaxed);
                s.futex.wake(fanout, !bit(now));
            }
        }
    }

    /// Commits `n` records, each followed by steps (b), (c): one wake-up.
    fn publisher(s: &Shared, n: u64) {
        for pos in 0..n {
            s.commit[pos as usize].store(pos + 1, Ordering::Release);
            fence(Ordering::SeqCst);
            if s.attention.load(Ordering::Relaxed) as u32 != 0 {
                s.futex.word.fetch_add(1, Ordering::Release);
                s.futex.wake(1, ANY);
            }
        }
    }

    fn run(n: u64, fanout: usize) {
        run_with_timeouts(n, fanout, [0; SLEEPERS]);
    }

    fn run_with_timeouts(n: u64, fanout: usize, timeouts: [usize; SLEEPERS]) {
        let s = Arc::new(Shared {
            commit: [AtomicU64::new(0), AtomicU64::new(0)],
            attention: AtomicU64::new(0),
            waiting: [AtomicU32::new(0), AtomicU32::new(0)],
            futex: Futex {
                word: AtomicU32::new(0),
                queue: Mutex::new(Queue::default()),
                cv: Condvar::new(),
            },
        });
        let sleepers: Vec<_> = (0..SLEEPERS)
            .map(|me| {
                let s = s.clone();
                thread::spawn(move || sleeper(&s, me, n, fanout, timeouts[me]))
            })
            .collect();
        publisher(&s, n);
        for t in sleepers {
            t.join().unwrap();
        }
    }

    /// Two sleepers, one record, one wake-up from the publisher: the other
    /// sleeper must be reached by the cascade (hop to one sleeper).
    #[test]
    fn loom_cascade_reaches_every_sleeper() {
        model(|| run(1, 1));
    }

    /// Two records: a sleeper may fall asleep again on the new value while
    /// the other still sleeps on the old one; the publisher's wake-up may hit
    /// the new sleeper, whose hop must still reach the old one, and the
    /// cascade must end (the binary fan-out of `wait.rs`).
    #[test]
    fn loom_cascade_across_two_records() {
        model(|| run(2, 2));
    }

    /// A sleeper times out, keeps its count and sleeps again without a new
    /// barrier, while the publisher commits and the other sleeper may be
    /// woken first: nobody is left asleep (the re-sleep of `wait.rs`).
    #[test]
    fn loom_a_timed_out_sleep_keeps_its_count() {
        model(|| run_with_timeouts(1, 1, [1, 0]));
    }

    /// Both sleepers time out once, across two records.
    #[test]
    fn loom_timed_out_sleeps_across_two_records() {
        model(|| run_with_timeouts(2, 2, [1, 1]));
    }
}

const EVICTED: u32 = 3;

/// `slow=evict`: the publisher evicts the subscriber that blocks it (at
/// once, standing in for `evict_after`) and overwrites its unread records;
/// the subscriber reads the payload (an atomic here: the race is the point),
/// then fences and re-checks its state, and accepts the value only if still
/// ACTIVE (`evict.rs`). An accepted value must be the one committed at that
/// position, never a later lap's.
#[test]
fn loom_eviction_never_delivers_overwritten() {
    model(|| {
        let commit: Arc<[AtomicU64; CAP as usize]> =
            Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
        let payload: Arc<[AtomicU64; CAP as usize]> =
            Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
        let state = Arc::new(AtomicU32::new(ACTIVE));
        let position = Arc::new(AtomicU64::new(0));
        let n = 5;
        let reader = {
            let (commit, payload, state, position) = (
                commit.clone(),
                payload.clone(),
                state.clone(),
                position.clone(),
            );
            thread::spawn(move || {
                let mut pos = 0;
                while pos < n {
                    let s = (pos % CAP) as usize;
                    let c = commit[s].load(Ordering::Acquire);
                    if c != pos + 1 {
                        if state.load(Ordering::Relaxed) == EVICTED {
                            return;
                        }
                        thread::yield_now();
                        continue;
                    }
                    let v = payload[s].load(Ordering::Relaxed);
                    fence(Ordering::Acquire);
                    if state.load(Ordering::Relaxed) != ACTIVE {
                        return;
                    }
                    assert_eq!(v, pos * 10 + 7, "delivered an overwritten payload");
                    pos += 1;
                    position.store(pos, Ordering::Release);
                }
            })
        };
        let mut evicted = false;
        for tail in 0..n {
            // Record plus the zeroed word after it must fit behind the reader.
            if !evicted && tail + 2 > position.load(Ordering::Acquire) + CAP {
                if state
                    .compare_exchange(ACTIVE, EVICTED, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    fence(Ordering::Release);
                }
                evicted = true;
            }
            let s = (tail % CAP) as usize;
            payload[s].store(tail * 10 + 7, Ordering::Relaxed);
            commit[((tail + 1) % CAP) as usize].store(0, Ordering::Relaxed);
            commit[s].store(tail + 1, Ordering::Release);
        }
        reader.join().unwrap();
    });
}

/// The multi-writer claim (`publisher/multi.rs`): writers take the claim
/// lock (Acquire CAS), move the shared tail and record their pending claim,
/// release the lock (Release), then fill and commit outside it; an aborted
/// claim is committed as a skip record. A reader follows the commit words.
mod multi {
    use super::*;

    const SLOTS: usize = 4;
    const SKIP: u64 = u64::MAX;

    struct Shared {
        lock: AtomicU64,
        tail: AtomicU64,
        pending: [AtomicU64; 2],
        commit: [AtomicU64; SLOTS],
        payload: [UnsafeCell<u64>; SLOTS],
    }

    impl Shared {
        fn new() -> Shared {
            Shared {
                lock: AtomicU64::new(0),
                tail: AtomicU64::new(0),
                pending: [AtomicU64::new(0), AtomicU64::new(0)],
                commit: [
                    AtomicU64::new(0),
                    AtomicU64::new(0),
                    AtomicU64::new(0),
                    AtomicU64::new(0),
                ],
                payload: [
                    UnsafeCell::new(0),
                    UnsafeCell::new(0),
                    UnsafeCell::new(0),
                    UnsafeCell::new(0),
                ],
            }
        }

        /// `lock_claims` + `reserve` + `unlock_claims` for one record.
        fn claim(&self, index: u32) -> u64 {
            loop {
                let w = self.lock.load(Ordering::Relaxed);
                let next = (((w >> 32) + 1) << 32) | u64::from(index + 1);
                if w as u32 == 0
                    && self
                        .lock
                        .compare_exchange(w, next, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    break;
                }
                thread::yield_now();
            }
            let t = self.tail.load(Ordering::Relaxed);
            self.pending[index as usize].store(t + 1, Ordering::Relaxed);
            self.tail.store(t + 1, Ordering::Release);
            let w = self.lock.load(Ordering::Relaxed);
            self.lock.store(w & !u64::from(u32::MAX), Ordering::Release);
            t
        }

        /// `commit_multi` (or `abort_multi` with `SKIP`).
        fn commit(&self, index: u32, pos: u64, value: u64) {
            // SAFETY (model): the claim made `pos` ours alone.
            self.payload[pos as usize].with_mut(|p| unsafe { *p = value });
            self.commit[pos as usize].store(pos + 1, Ordering::Release);
            self.pending[index as usize].store(0, Ordering::Relaxed);
        }

        /// The subscriber: reads `n` records in order.
        fn read(&self, n: u64) -> Vec<u64> {
            let mut out = Vec::new();
            let mut pos = 0;
            while pos < n {
                let c = self.commit[pos as usize].load(Ordering::Acquire);
                if c == 0 {
                    thread::yield_now();
                    continue;
                }
                assert_eq!(c, pos + 1, "commit word of another position");
                // SAFETY (model): committed, so the writer is done with it.
                out.push(self.payload[pos as usize].with(|p| unsafe { *p }));
                pos += 1;
            }
            out
        }
    }

    #[test]
    fn loom_two_writers_append_atomically_in_order() {
        loom::model(|| {
            let s = Arc::new(Shared::new());
            let a = {
                let s = s.clone();
                thread::spawn(move || {
                    for v in [10, 11] {
                        let pos = s.claim(0);
                        s.commit(0, pos, v);
                    }
                })
            };
            let b = {
                let s = s.clone();
                thread::spawn(move || {
                    let pos = s.claim(1);
                    s.commit(1, pos, 20);
                })
            };
            let got = s.read(3);
            a.join().unwrap();
            b.join().unwrap();
            let from_a: Vec<u64> = got.iter().copied().filter(|v| *v < 20).collect();
            assert_eq!(from_a, [10, 11], "a's order kept: {got:?}");
            assert!(got.contains(&20), "{got:?}");
            assert_eq!(s.tail.load(Ordering::Relaxed), 3);
        });
    }

    #[test]
    fn loom_an_aborted_claim_is_a_skip_the_reader_passes() {
        loom::model(|| {
            let s = Arc::new(Shared::new());
            let a = {
                let s = s.clone();
                thread::spawn(move || {
                    let pos = s.claim(0);
                    s.commit(0, pos, SKIP);
                })
            };
            let b = {
                let s = s.clone();
                thread::spawn(move || {
                    let pos = s.claim(1);
                    s.commit(1, pos, 20);
                })
            };
            let got = s.read(2);
            a.join().unwrap();
            b.join().unwrap();
            let real: Vec<u64> = got.into_iter().filter(|v| *v != SKIP).collect();
            assert_eq!(real, [20]);
        });
    }

    /// Eviction on a multi-writer ring (`evict.rs`, "Several publishers"):
    /// publisher A, holding the claim lock, evicts the reader (CAS, Release
    /// fence) and unlocks (Release); publisher B takes the lock (Acquire),
    /// runs its Release fence and overwrites the reader's unread record. The
    /// reader copies the payload (relaxed atomic loads), Acquire-fences and
    /// re-checks its state: it must never accept B's bytes while ACTIVE.
    #[test]
    fn loom_eviction_by_another_publisher() {
        const ACTIVE: u32 = 2;
        const EVICTED: u32 = 3;
        loom::model(|| {
            // A holds the claim lock; the reader's record (7) is committed.
            let lock = Arc::new(AtomicU64::new(1));
            let state = Arc::new(AtomicU32::new(ACTIVE));
            let commit = Arc::new(AtomicU64::new(1));
            let payload = Arc::new(AtomicU64::new(7));
            let reader = {
                let (state, commit, payload) = (state.clone(), commit.clone(), payload.clone());
                thread::spawn(move || {
                    if commit.load(Ordering::Acquire) != 1 {
                        return;
                    }
                    let v = payload.load(Ordering::Relaxed);
                    fence(Ordering::Acquire);
                    if state.load(Ordering::Relaxed) == ACTIVE {
                        assert_eq!(v, 7, "delivered bytes written after the eviction");
                    }
                })
            };
            let a = {
                let (lock, state) = (lock.clone(), state.clone());
                thread::spawn(move || {
                    if state
                        .compare_exchange(ACTIVE, EVICTED, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                    {
                        fence(Ordering::Release);
                    }
                    lock.store(0, Ordering::Release);
                })
            };
            // B: takes the lock, then (evicting ring) fences, then writes.
            while lock
                .compare_exchange(0, 2, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                thread::yield_now();
            }
            fence(Ordering::Release);
            payload.store(99, Ordering::Relaxed);
            commit.store(4, Ordering::Release);
            a.join().unwrap();
            reader.join().unwrap();
        });
    }

    /// Solo (`publisher/multi.rs`): keeper K kept the lock (word `KEPT`,
    /// solo bit set) and claims without a CAS: `busy` = 1, then the word
    /// must be unchanged, then the guarded change (the shared tail, here a
    /// plain cell: loom reports two writers at once), then `busy` = 0
    /// (Release). Taker T CASes the kept word (Acquire), issues the barrier
    /// and waits for `busy` = 0 (Acquire). `membarrier` is modelled as a
    /// SeqCst fence on both sides: what it gives is that K's `busy` store
    /// and its load of the word are ordered as seen by T. K backs off to an
    /// ordinary CAS hold when the word changed.
    #[test]
    fn loom_a_kept_lock_is_taken_over_without_two_holders() {
        const SOLO: u64 = 1 << 31;
        const KEPT: u64 = (5 << 32) | SOLO | 1;
        struct Solo {
            lock: AtomicU64,
            busy: AtomicU32,
            tail: UnsafeCell<u64>,
        }
        /// The guarded change: read and bump the tail.
        fn change(s: &Solo) -> u64 {
            // SAFETY (model): only a lock holder gets here; loom checks it.
            s.tail.with_mut(|t| unsafe {
                *t += 1;
                *t - 1
            })
        }
        /// An ordinary hold: CAS a free word, change, release.
        fn hold(s: &Solo, index: u64) -> u64 {
            loop {
                let w = s.lock.load(Ordering::Relaxed);
                if w as u32 == 0
                    && s.lock
                        .compare_exchange(
                            w,
                            (((w >> 32) + 1) << 32) | (index + 1),
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                {
                    break;
                }
                thread::yield_now();
            }
            let t = change(s);
            let w = s.lock.load(Ordering::Relaxed);
            s.lock.store(w & !u64::from(u32::MAX), Ordering::Release);
            t
        }
        loom::model(|| {
            let s = Arc::new(Solo {
                lock: AtomicU64::new(KEPT),
                busy: AtomicU32::new(0),
                tail: UnsafeCell::new(0),
            });
            let keeper = {
                let s = s.clone();
                thread::spawn(move || {
                    let mut solo = true;
                    let mut got = Vec::new();
                    for _ in 0..2 {
                        if solo {
                            s.busy.store(1, Ordering::Relaxed);
                            fence(Ordering::SeqCst);
                            if s.lock.load(Ordering::Relaxed) == KEPT {
                                got.push(change(&s));
                                s.busy.store(0, Ordering::Release);
                                continue;
                            }
                            s.busy.store(0, Ordering::Release);
                            solo = false;
                        }
                        got.push(hold(&s, 0));
                    }
                    got
                })
            };
            // The taker.
            assert!(s
                .lock
                .compare_exchange(KEPT, (6 << 32) | 2, Ordering::Acquire, Ordering::Relaxed)
                .is_ok());
            fence(Ordering::SeqCst);
            while s.busy.load(Ordering::Acquire) != 0 {
                thread::yield_now();
            }
            let mine = change(&s);
            s.lock.store(6 << 32, Ordering::Release);
            let mut all = keeper.join().unwrap();
            all.push(mine);
            all.sort_unstable();
            assert_eq!(all, [0, 1, 2], "every claim got its own position");
        });
    }
}
