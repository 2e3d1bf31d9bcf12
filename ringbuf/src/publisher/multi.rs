//! The multi-writer protocol of a ring opened with `max_publishers > 1`
//! (see "Several publishers" in the crate docs).

use super::{truncated, Claim, Publisher, ZERO_LOW_WATER};
use crate::error::{OfferError, RingError};
use crate::evict::{Evictor, Retention};
use crate::history::Marks;
use crate::layout::ZERO_AHEAD;
use crate::layout::{
    self, Geometry, ATTENTION_MEMBERSHIP, PADDING_LEN, PUB_ATTACHED, PUB_FREE, PUB_RECLAIMING,
    RECORD_ALIGN, SKIP_LEN, SOURCE_SHIFT,
};
use crate::liveness::{self, PUBLISHER_LOCK, PUB_LOCK_BASE};
use crate::mapping::{DataArea, Mapping, PubSlot};
use crate::{file, futex, ring_dir, RingConfig, LOCK_CHECK_INTERVAL, REAP_INTERVAL};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{compiler_fence, fence, Ordering};
use std::time::{Duration, Instant};

/// Spins on a held claim lock before an offer reports `BackPressured`.
const LOCK_SPINS: u32 = 128;
/// Spins a publisher that finds the claim lock free waits for another
/// publisher that asked for it (`claim_wanted`) to take it first.
const DEFER_SPINS: u32 = 4096;
/// Uninterrupted holds of the claim lock (nobody else took it between two
/// of ours) after which a publisher keeps it between claims: solo.
const SOLO_AFTER: u32 = 1024;
/// The lock word's solo bit: its holder keeps the lock between claims.
const SOLO: u64 = 1 << 31;
/// Attempts of `create_or_attach` before giving up.
const ATTACH_ATTEMPTS: u32 = 64;
/// Pause between attempts while another process closes or replaces the ring.
const ATTACH_PAUSE: Duration = Duration::from_millis(1);

/// A publisher's state on a multi-writer ring.
pub(super) struct Multi {
    /// Our publisher slot.
    index: u32,
    /// `(index + 1) << SOURCE_SHIFT`, or'ed into each record's `len` word.
    tag: u32,
    /// The lock word seen held, and since when (liveness check of its holder).
    blocked: Option<(u64, Instant)>,
    /// Scan the subscriber slots at the next claim (after taking the lock
    /// from a dead holder, who may have left a membership request half done).
    must_scan: bool,
    /// `history_joins` at our last look (see `history.rs`).
    seen_joins: u64,
    /// The zeroed mark ran low at our last claim: zero ahead after the
    /// commit (`zero_after_commit`) rather than before it.
    zero_later: bool,
    /// The lock word we keep between claims (solo), 0 if we do not.
    solo: u64,
    /// Our uninterrupted holds of the lock so far (see [`SOLO_AFTER`]).
    streak: u32,
    /// The generation of our last hold of the lock.
    held_gen: u32,
    /// Taking the lock from a solo keeper: its slot index and the solo word
    /// it kept, until its busy flag shows it out of its last change.
    revoking: Option<(u32, u64)>,
}

impl Multi {
    fn new(index: u32, must_scan: bool) -> Multi {
        Multi {
            index,
            tag: (index + 1) << SOURCE_SHIFT,
            blocked: None,
            must_scan,
            seen_joins: 0,
            zero_later: false,
            solo: 0,
            streak: 0,
            held_gen: 0,
            revoking: None,
        }
    }

    /// Notes a hold of the lock taken from word `w` (by CAS).
    #[inline(always)]
    fn took(&mut self, w: u64) {
        let gen = (w >> 32) as u32;
        self.streak = if gen == self.held_gen {
            self.streak.saturating_add(1)
        } else {
            0
        };
        self.held_gen = gen.wrapping_add(1);
    }
}

/// Lock word held by publisher `index` after `w`: next generation in the
/// high 32 bits, `index + 1` in the low ones.
#[inline(always)]
fn lock_word(w: u64, index: u32) -> u64 {
    ((w >> 32).wrapping_add(1) << 32) | u64::from(index + 1)
}

enum Attach {
    Attached(Box<Publisher>),
    /// No live multi-writer ring under the name: create one.
    Create,
    /// Another process is closing or replacing the ring: try again.
    Busy,
}

/// [`Publisher::create`] with `max_publishers > 1`: attaches to the live
/// multi-writer ring under `name`, or creates one.
///
/// The ring's slow-subscriber policy and history are the creator's
/// `retention`; an attacher's is ignored (as its geometry is).
pub(super) fn create_or_attach(
    name: &str,
    config: &RingConfig,
    geometry: Geometry,
    retention: &Retention,
) -> Result<Publisher, RingError> {
    let mut last = None;
    for _ in 0..ATTACH_ATTEMPTS {
        match attach(name, config)? {
            Attach::Attached(p) => return Ok(*p),
            Attach::Busy => std::thread::sleep(ATTACH_PAUSE),
            Attach::Create => {
                match Publisher::create_new(name, config, geometry, retention) {
                    Ok(mut p) => {
                        become_first(&mut p)?;
                        return Ok(p);
                    }
                    // Someone else put a live ring there meanwhile (or a live
                    // single-writer ring is there): look again.
                    Err(e @ RingError::PublisherAlive { .. }) => {
                        last = Some(e);
                        std::thread::sleep(ATTACH_PAUSE);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        RingError::Io(std::io::Error::other(format!(
            "{name}: the ring kept being closed or replaced while attaching"
        )))
    }))
}

/// Turns the creator of a new multi-writer ring into its publisher 0: takes
/// slot 0, then shares the ring's publisher lock so others can attach.
fn become_first(p: &mut Publisher) -> Result<(), RingError> {
    let io = |e| RingError::io(format!("locking {}", p.lock_path.display()), e);
    if !liveness::try_lock(&p.lock, PUB_LOCK_BASE).map_err(io)? {
        return Err(RingError::Io(std::io::Error::other(
            "cannot lock publisher slot 0 of a fresh ring",
        )));
    }
    let slot = p.map.pub_slot(p.geometry.max_subscribers, 0);
    slot.pid.store(std::process::id(), Ordering::Relaxed);
    slot.pending_end.store(0, Ordering::Relaxed);
    slot.busy.store(0, Ordering::Relaxed);
    slot.state.store(PUB_ATTACHED, Ordering::Relaxed);
    let pb = p.map.publisher();
    pb.claim_tail.store(0, Ordering::Relaxed);
    // The file starts zeroed.
    pb.zeroed.store(p.geometry.capacity, Ordering::Relaxed);
    Marks::init_shared(
        p.map
            .marks(p.geometry.max_subscribers, p.geometry.max_publishers),
    );
    p.multi = Some(Multi::new(0, false));
    // Convert our write lock on the publisher byte to a shared one:
    // attachers take it shared too (they wait while it is exclusive). The
    // stores above happen before any attacher can map... they read them
    // after taking their lock, which the kernel orders after this call.
    if !liveness::try_lock_shared(&p.lock, PUBLISHER_LOCK).map_err(io)? {
        return Err(RingError::Io(std::io::Error::other(
            "cannot share the publisher lock of a fresh ring",
        )));
    }
    Ok(())
}

/// Attaches to the live multi-writer ring under `name`, if there is one.
fn attach(name: &str, config: &RingConfig) -> Result<Attach, RingError> {
    let dir = ring_dir(config.dir.as_deref());
    let path = dir.join(name);
    let me = file::euid();
    let Some((ring, md)) = file::open_existing(&path)? else {
        return Ok(Attach::Create);
    };
    file::check_owner(&path, &md, &[me])?;
    let mut head = [0u8; layout::HEADER_LEN];
    let n = super::read_prefix(&ring, &mut head)
        .map_err(|e| RingError::io(format!("reading {}", path.display()), e))?;
    let Ok((h, g)) = layout::validate(&head[..n], md.len()) else {
        // Not a current ring: creation replaces it if it is stale, or says why not.
        return Ok(Attach::Create);
    };
    if g.max_publishers <= 1 {
        return Ok(Attach::Create);
    }
    let lock_path = dir.join(liveness::lock_name(name, h.incarnation.get()));
    let Some((lock, lmd)) = file::open_existing(&lock_path)? else {
        return Ok(Attach::Create);
    };
    file::check_owner(&lock_path, &lmd, &[me])?;
    let io = |e| RingError::io(format!("locking {}", lock_path.display()), e);
    if !liveness::try_lock_shared(&lock, PUBLISHER_LOCK).map_err(io)? {
        return Ok(Attach::Busy);
    }
    // From here on nobody can replace or close the ring (both need the
    // publisher byte exclusively). Is anyone else still publishing on it,
    // and is it still the file under the name?
    let others = liveness::is_any_locked(&lock, PUBLISHER_LOCK).map_err(io)?;
    let same =
        std::fs::symlink_metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == (md.dev(), md.ino()));
    if !others || !same {
        liveness::unlock(&lock, PUBLISHER_LOCK);
        return Ok(if same { Attach::Create } else { Attach::Busy });
    }
    let map = Mapping::map(&ring, g.file_len)
        .map_err(|e| RingError::io(format!("mapping {}", path.display()), e))?;
    // Acquire partner: the last publisher's Release store of `closed`.
    if map.publisher().closed.load(Ordering::Acquire) != 0 {
        liveness::unlock(&lock, PUBLISHER_LOCK);
        return Ok(Attach::Busy);
    }
    // Before a slot is taken: registering can take a while, and a slot we
    // hold with a dead owner's claim unresolved is waited for (see below).
    let fence_mode = map.publisher().fence_mode.load(Ordering::Relaxed);
    let fence = fence_mode != layout::FENCE_MEMBARRIER || !futex::register_global_expedited();
    let mut chosen = None;
    for j in 0..g.max_publishers {
        if liveness::try_lock(&lock, PUB_LOCK_BASE + i64::from(j)).map_err(io)? {
            // The slot's previous owner (if any) is dead: its lock byte is
            // ours. Say so at once: until we resolve a claim it left (which
            // needs the claim lock), a subscriber waiting on that claim
            // skips it as a dead owner's instead of waiting for us.
            // Release partner: the subscriber's Acquire load of the state
            // in `skip_dead_claim`.
            map.pub_slot(g.max_subscribers, j)
                .state
                .store(PUB_RECLAIMING, Ordering::Release);
            chosen = Some(j);
            break;
        }
    }
    let Some(index) = chosen else {
        liveness::unlock(&lock, PUBLISHER_LOCK);
        return Err(RingError::TooManyPublishers {
            path,
            max: g.max_publishers,
        });
    };
    let data = DataArea::new(&map, &g);
    let mut p = Publisher {
        fence,
        map,
        lock,
        lock_path,
        path,
        dev_ino: (md.dev(), md.ino()),
        data,
        capacity: g.capacity,
        max_message_len: g.max_message_len as usize,
        geometry: g,
        tail: 0,
        limit: 0,
        zeroed: 0,
        active: 0,
        offers: 0,
        last_reap: Instant::now(),
        last_bp_reap: None,
        wakes: 0,
        // The ring's retention, from its (validated) header.
        evictor: (h.slow_policy.get() == layout::SLOW_EVICT)
            .then(|| Evictor::new(Duration::from_nanos(h.evict_after_ns.get()))),
        marks: Marks::new(g.capacity, h.history.get()),
        multi: Some(Multi::new(index, true)),
    };
    // The slot's previous owner is dead (we hold its lock byte); a claim it
    // left is resolved before the slot's pending claim is reused.
    p.pub_slot(index)
        .pid
        .store(std::process::id(), Ordering::Relaxed);
    let start = Instant::now();
    loop {
        match p.lock_claims() {
            Ok(()) => break,
            Err(OfferError::BackPressured) if start.elapsed() < Duration::from_secs(1) => {
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => {
                // Drop releases our locks (the ring stays open for the others).
                return Err(RingError::InvalidHeader {
                    path: p.path.clone(),
                    reason: format!("cannot take the claim lock: {e}"),
                });
            }
        }
    }
    p.resolve_dead(index);
    // A busy flag the slot's dead owner left (it is read only while the
    // slot's owner keeps the lock, and we do not yet).
    p.pub_slot(index).busy.store(0, Ordering::Relaxed);
    // Before any claim of ours: a subscriber that sees our claims sees
    // ATTACHED (the claim tail's Release store orders it).
    p.pub_slot(index)
        .state
        .store(PUB_ATTACHED, Ordering::Relaxed);
    p.unlock_claims();
    Ok(Attach::Attached(Box::new(p)))
}

impl Publisher {
    /// True while this publisher keeps the claim lock between claims (test
    /// builds only).
    #[cfg(test)]
    pub(crate) fn is_solo(&self) -> bool {
        self.multi.as_ref().is_some_and(|m| m.solo != 0)
    }

    #[inline(always)]
    fn pub_slot(&self, j: u32) -> &PubSlot {
        self.map.pub_slot(self.geometry.max_subscribers, j)
    }

    /// Takes the claim lock: a few spins, then (cold) a liveness check of a
    /// holder that keeps it, and stealing it from a dead one.
    ///
    /// Fairness: a publisher that fails to take the lock sets its bit in
    /// `claim_wanted`; one that finds the lock free while another's bit is
    /// set waits up to [`DEFER_SPINS`] for it to be taken first. Without
    /// that, a publisher retrying a back-pressured offer in a loop holds the
    /// lock so much of the time that another one may never get it. A bit
    /// left by a dead or descheduled waiter costs the others one such wait,
    /// after which they clear the word.
    ///
    /// Solo: a publisher alone on the ring (every other publisher slot
    /// free) that has held the lock [`SOLO_AFTER`] times in a row, with
    /// nobody else taking it in between, keeps it between claims
    /// (the lock word gets the [`SOLO`] bit) and skips the CAS: it sets its
    /// slot's `busy` flag, and goes on if the word is still the one it
    /// kept. Another publisher takes the lock from it with a CAS on that
    /// word, then `membarrier(GLOBAL_EXPEDITED)`, then waits for `busy` to
    /// read 0 (see [`Publisher::revoke`]). The barrier stands in for the
    /// fence the keeper does not run between its `busy` store and its load
    /// of the word: either the keeper's store is visible to the taker (who
    /// waits for the change in progress), or the keeper's load sees the
    /// taker's CAS (and the keeper backs off).
    #[inline(always)]
    pub(super) fn lock_claims(&mut self) -> Result<(), OfferError> {
        let Some(m) = self.multi.as_ref() else {
            return Ok(());
        };
        if m.solo != 0 && self.solo_enter() {
            return Ok(());
        }
        let Some(m) = self.multi.as_ref() else {
            return Ok(());
        };
        if m.revoking.is_some() {
            return self.finish_revoke();
        }
        let index = m.index;
        let me = 1u64 << index;
        let pb = self.map.publisher();
        let lock = &pb.claim_lock;
        let mut spins = 0;
        let mut deferred = 0;
        while spins < LOCK_SPINS {
            let w = lock.load(Ordering::Relaxed);
            if w as u32 == 0 {
                // Relaxed: a hint; the lock itself orders everything.
                let wanted = pb.claim_wanted.load(Ordering::Relaxed);
                if wanted & !me != 0 && deferred < DEFER_SPINS {
                    deferred += 1;
                    std::hint::spin_loop();
                    continue;
                }
                // Acquire partner: the previous holder's Release store in
                // `unlock_claims` (so its claim tail, zeroing and slot
                // changes are visible).
                if lock
                    .compare_exchange_weak(
                        w,
                        lock_word(w, index),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    if wanted != 0 {
                        Self::clear_wanted(pb, me, deferred >= DEFER_SPINS);
                    }
                    if let Some(m) = self.multi.as_mut() {
                        m.took(w);
                    }
                    return Ok(());
                }
            } else if w & SOLO != 0 {
                return self.revoke(w);
            }
            std::hint::spin_loop();
            spins += 1;
        }
        pb.claim_wanted.fetch_or(me, Ordering::Relaxed);
        self.lock_contended()
    }

    /// Solo: enters a change of what the lock guards. True if the lock is
    /// still ours (our `busy` flag is then set: [`Publisher::unlock_claims`]
    /// clears it); false if it was taken from us (we are no longer solo).
    /// Another publisher's bit in `claim_wanted` ends solo too: one that
    /// cannot issue the barrier asks that way.
    #[inline(always)]
    fn solo_enter(&mut self) -> bool {
        let Some(m) = self.multi.as_ref() else {
            return false;
        };
        let kept = m.solo;
        let pb = self.map.publisher();
        let busy = &self
            .map
            .pub_slot(self.geometry.max_subscribers, m.index)
            .busy;
        busy.store(1, Ordering::Relaxed);
        // The asymmetric half of the barrier: the taker's membarrier orders
        // this store before the load below, as seen from the taker.
        compiler_fence(Ordering::SeqCst);
        let w = pb.claim_lock.load(Ordering::Relaxed);
        // Relaxed: a hint, as in `lock_claims`.
        if w == kept && pb.claim_wanted.load(Ordering::Relaxed) == 0 {
            return true;
        }
        self.solo_leave(w, kept)
    }

    /// Solo ends (the lock word changed, or somebody asks for the lock):
    /// true if we still hold the lock, now as an ordinary hold.
    #[cold]
    #[inline(never)]
    fn solo_leave(&mut self, w: u64, kept: u64) -> bool {
        let Some(m) = self.multi.as_mut() else {
            return false;
        };
        m.solo = 0;
        m.streak = 0;
        let pb = self.map.publisher();
        // Still ours: keep it for this hold without the solo bit (a CAS: a
        // taker may be swapping the word right now).
        let ours = w == kept
            && pb
                .claim_lock
                .compare_exchange(kept, kept & !SOLO, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        // Release partner: the taker's Acquire load of our busy flag in
        // `finish_revoke` (everything we changed before is visible to it).
        self.map
            .pub_slot(self.geometry.max_subscribers, m.index)
            .busy
            .store(0, Ordering::Release);
        ours
    }

    /// Takes the lock from the solo keeper whose word is `w` (see
    /// [`Publisher::lock_claims`]): CAS, barrier, then wait for its busy
    /// flag. BackPressured while the keeper is inside a change (the next
    /// call goes on waiting, holding the lock), or when we cannot issue the
    /// barrier (then we ask through `claim_wanted`, and the keeper lets the
    /// lock go at its next claim).
    #[cold]
    #[inline(never)]
    fn revoke(&mut self, w: u64) -> Result<(), OfferError> {
        let pubs = self.geometry.max_publishers;
        let Some(m) = self.multi.as_ref() else {
            return Ok(());
        };
        let index = m.index;
        let holder = (w as u32) & !(SOLO as u32);
        if holder == 0 || holder > pubs {
            return Err(OfferError::Corrupt(format!(
                "claim lock kept by publisher {holder}, beyond the {pubs} slots"
            )));
        }
        let pb = self.map.publisher();
        if holder == index + 1 || self.fence {
            // Our slot's previous owner kept it and died (taken over in
            // `lock_contended`), or we cannot issue the barrier: ask.
            pb.claim_wanted.fetch_or(1 << index, Ordering::Relaxed);
            return self.lock_contended();
        }
        // Acquire partner: the keeper's Release store of the solo word in
        // `unlock_claims`; what it changed later is ordered by its busy flag.
        if pb
            .claim_lock
            .compare_exchange(w, lock_word(w, index), Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(OfferError::BackPressured);
        }
        if !futex::global_barrier() {
            // Give the lock back as it was: the keeper never noticed. We
            // changed nothing, so Relaxed: a read-modify-write, it continues
            // the release sequence of the keeper's store of the word.
            let _ = pb.claim_lock.compare_exchange(
                lock_word(w, index),
                w,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            pb.claim_wanted.fetch_or(1 << index, Ordering::Relaxed);
            return Err(OfferError::BackPressured);
        }
        if let Some(m) = self.multi.as_mut() {
            m.revoking = Some((holder - 1, w));
            m.took(w);
        }
        self.finish_revoke()
    }

    /// Waits (boundedly) for the keeper we took the lock from to leave its
    /// change in progress; resolves its claim if it died.
    #[cold]
    #[inline(never)]
    fn finish_revoke(&mut self) -> Result<(), OfferError> {
        let Some(m) = self.multi.as_ref() else {
            return Ok(());
        };
        let Some((keeper, kept)) = m.revoking else {
            return Ok(());
        };
        let ours = lock_word(kept, m.index);
        let pb = self.map.publisher();
        if pb.claim_lock.load(Ordering::Relaxed) != ours {
            // Not ours any more (only a peer that broke the protocol, or
            // took us for dead, does that): start over.
            if let Some(m) = self.multi.as_mut() {
                m.revoking = None;
            }
            return Err(OfferError::BackPressured);
        }
        let busy = &self
            .map
            .pub_slot(self.geometry.max_subscribers, keeper)
            .busy;
        let mut out = false;
        for _ in 0..LOCK_SPINS {
            // Acquire partner: the keeper's Release store of 0 in
            // `unlock_claims` or `solo_leave`.
            if busy.load(Ordering::Acquire) == 0 {
                out = true;
                break;
            }
            std::hint::spin_loop();
        }
        let alive =
            liveness::is_locked(&self.lock, PUB_LOCK_BASE + i64::from(keeper)).map_err(|e| {
                OfferError::Corrupt(format!("cannot check publisher {keeper}'s lock: {e}"))
            })?;
        if !out && alive {
            return Err(OfferError::BackPressured);
        }
        if let Some(m) = self.multi.as_mut() {
            m.revoking = None;
            m.must_scan = true;
        }
        if !alive {
            self.resolve_dead(keeper);
        }
        Ok(())
    }

    /// With the lock just taken: our bit is served; after waiting in vain
    /// for the others, theirs too.
    #[cold]
    fn clear_wanted(pb: &crate::mapping::PublisherBlock, me: u64, all: bool) {
        if all {
            pb.claim_wanted.store(0, Ordering::Relaxed);
        } else {
            pb.claim_wanted.fetch_and(!me, Ordering::Relaxed);
        }
    }

    /// The claim lock stayed held: BackPressured while its holder is alive
    /// (checked once it has held it for [`LOCK_CHECK_INTERVAL`]); stolen
    /// from a dead holder, whose claim is then resolved.
    #[cold]
    #[inline(never)]
    fn lock_contended(&mut self) -> Result<(), OfferError> {
        let pubs = self.geometry.max_publishers;
        let Some(m) = self.multi.as_mut() else {
            return Ok(());
        };
        let index = m.index;
        // Acquire partner: as in `lock_claims`.
        let w = self.map.publisher().claim_lock.load(Ordering::Acquire);
        let holder = (w as u32) & !(SOLO as u32);
        if holder == 0 {
            return Err(OfferError::BackPressured);
        }
        if holder > pubs {
            return Err(OfferError::Corrupt(format!(
                "claim lock held by publisher {holder}, beyond the {pubs} slots"
            )));
        }
        let now = Instant::now();
        let blocked = m.blocked;
        match blocked {
            Some((seen, since)) if seen == w => {
                if now.duration_since(since) < LOCK_CHECK_INTERVAL {
                    return Err(OfferError::BackPressured);
                }
                m.blocked = Some((w, now));
            }
            _ => {
                m.blocked = Some((w, now));
                // Our own slot: its previous owner died holding the lock.
                if holder != index + 1 {
                    return Err(OfferError::BackPressured);
                }
            }
        }
        let dead = holder == index + 1
            || !liveness::is_locked(&self.lock, PUB_LOCK_BASE + i64::from(holder - 1)).map_err(
                |e| {
                    OfferError::Corrupt(format!(
                        "cannot check publisher {}'s lock: {e}",
                        holder - 1
                    ))
                },
            )?;
        if !dead {
            return Err(OfferError::BackPressured);
        }
        // Acquire partner: as in `lock_claims`; fails if anyone else took
        // the lock meanwhile (the generation changed).
        if self
            .map
            .publisher()
            .claim_lock
            .compare_exchange(w, lock_word(w, index), Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(OfferError::BackPressured);
        }
        if let Some(m) = self.multi.as_mut() {
            m.blocked = None;
            m.must_scan = true;
            m.took(w);
        }
        self.resolve_dead(holder - 1);
        Ok(())
    }

    /// Releases the claim lock.
    #[inline(always)]
    pub(super) fn unlock_claims(&mut self) {
        let Some(m) = self.multi.as_ref() else {
            return;
        };
        let (index, solo, streak) = (m.index, m.solo, m.streak);
        if solo != 0 {
            // Release partner: the taker's Acquire load in `finish_revoke`.
            self.pub_slot(index).busy.store(0, Ordering::Release);
            return;
        }
        let pb = self.map.publisher();
        let w = pb.claim_lock.load(Ordering::Relaxed);
        if streak >= SOLO_AFTER {
            // Solo needs the barrier of whoever takes the lock from us, and
            // that barrier reaches only processes registered for it (as we
            // are when `fence` is false). Relaxed: a hint, as in
            // `lock_claims`.
            let keep = !self.fence && pb.claim_wanted.load(Ordering::Relaxed) == 0 && self.alone();
            if let Some(m) = self.multi.as_mut() {
                if keep {
                    m.solo = w | SOLO;
                    // Release partner: a taker's Acquire CAS in `revoke`.
                    // Nobody else writes a live holder's word: a store does.
                    self.map
                        .publisher()
                        .claim_lock
                        .store(w | SOLO, Ordering::Release);
                    return;
                }
                // Not alone: look again after as many holds.
                m.streak = 0;
            }
        }
        // Release partner: the next holder's Acquire CAS in `lock_claims`.
        self.map
            .publisher()
            .claim_lock
            .store(w & !u64::from(u32::MAX), Ordering::Release);
    }

    /// True if every other publisher slot is free: only then do we keep the
    /// lock (writers that share the ring would take it from each other with
    /// a barrier each time one of them was descheduled for 1024 claims).
    #[cold]
    fn alone(&self) -> bool {
        let index = self.multi.as_ref().map_or(0, |m| m.index);
        (0..self.geometry.max_publishers)
            .filter(|&j| j != index)
            .all(|j| self.pub_slot(j).state.load(Ordering::Relaxed) == PUB_FREE)
    }

    /// With the claim lock held: turns the claim that dead publisher `j`
    /// left into a skip record (keeping a record it committed), and clears it.
    fn resolve_dead(&mut self, j: u32) {
        let slot = self.pub_slot(j);
        let ps = slot.pending_start.load(Ordering::Relaxed);
        let pe = slot.pending_end.load(Ordering::Relaxed);
        let pb = self.map.publisher();
        let tail = pb.claim_tail.load(Ordering::Relaxed);
        let zeroed = pb.zeroed.load(Ordering::Relaxed);
        let cap = self.capacity;
        let span = 2 * layout::record_len(self.max_message_len as u64);
        let sane = pe != 0
            && ps % RECORD_ALIGN as u64 == 0
            && pe % RECORD_ALIGN as u64 == 0
            && ps < pe
            && pe - ps <= span
            && pe <= tail
            // Still unread by a later lap: nothing was zeroed or claimed
            // past the claim's bytes one lap on.
            && zeroed <= ps + cap;
        if sane {
            let d = self.data;
            let off = d.offset(ps);
            let (pad_at, start) = if off + (pe - ps) > cap {
                (Some(ps), ps + (cap - off))
            } else {
                (None, ps)
            };
            // SAFETY: 32-aligned positions of the claim, inside the live
            // mapping; the dead owner writes no more, and the claim lock
            // keeps every other publisher off these bytes (see above).
            unsafe {
                // Acquire partner: the dead owner's Release commit store.
                if d.commit(start).load(Ordering::Acquire) != start + 1 {
                    write_skip(d, start, pe - start);
                }
                if let Some(pad) = pad_at {
                    if d.commit(pad).load(Ordering::Acquire) != pad + 1 {
                        write_padding(d, pad);
                    }
                }
            }
        }
        slot.pending_end.store(0, Ordering::Relaxed);
    }

    /// The claim path of a multi-writer ring.
    #[inline(always)]
    pub(super) fn try_claim_multi(
        &mut self,
        type_id: u32,
        len: usize,
    ) -> Result<Claim<'_>, OfferError> {
        self.lock_claims()?;
        let r = match self.reserve_solo(len) {
            Some(r) => Ok(r),
            None => self.reserve(len),
        };
        self.unlock_claims();
        let (pad_at, start) = r?;
        Ok(Claim {
            p: self,
            pad_at,
            start,
            len,
            type_id,
            multi: true,
        })
    }

    /// [`Publisher::reserve`] for a solo keeper inside its change, when
    /// nothing needs more than the claim itself: the shared tail and zeroed
    /// mark are then ours (nobody else held the lock since we read them), so
    /// they come from our copies; anything else (a membership request, a
    /// wrap, `limit`, zeroing, the periodic reap, history, eviction) is
    /// `None`, and `reserve` does it.
    #[inline(always)]
    fn reserve_solo(&mut self, len: usize) -> Option<(Option<u64>, u64)> {
        let m = self.multi.as_ref()?;
        if m.solo == 0 || m.must_scan {
            return None;
        }
        let index = m.index;
        let att = self.map.signal().attention.load(Ordering::Relaxed);
        let rec = layout::record_len(len as u64);
        let t = self.tail;
        let end = t + rec;
        if att >= ATTENTION_MEMBERSHIP
            || self.map.truncated()
            || self.active == 0
            || (self.offers.wrapping_add(1)) % 1024 == 0
            || self.data.offset(t) + rec > self.capacity
            || end + 8 > self.limit
            || self.zeroed < end + 8
            || self.marks.is_some()
            || self.evictor.is_some()
        {
            return None;
        }
        self.offers = self.offers.wrapping_add(1);
        if self.zeroed < end + 8 + ZERO_LOW_WATER {
            if let Some(m) = self.multi.as_mut() {
                // As in `reserve`: zeroed after the commit.
                m.zero_later = true;
            }
        }
        self.publish_claim(index, t, end);
        Some((None, t))
    }

    /// With the claim lock held: records our claim `[from, end)` (padding
    /// included) in our slot, then moves the shared tail to `end`.
    #[inline(always)]
    fn publish_claim(&mut self, index: u32, from: u64, end: u64) {
        let slot = self.pub_slot(index);
        slot.pending_start.store(from, Ordering::Relaxed);
        slot.pending_end.store(end, Ordering::Relaxed);
        // Release partner: a subscriber's Acquire load of `claim_tail` when
        // it finds no record at its position (then it reads the pending
        // claims), and the next lock holder's load (ordered by the lock).
        self.map
            .publisher()
            .claim_tail
            .store(end, Ordering::Release);
        self.tail = end;
    }

    /// With the claim lock held: moves the shared tail past a record of
    /// `len` bytes (and the padding before it), recording the claim in our
    /// slot first. Returns `(padding position, record position)`.
    #[inline(always)]
    fn reserve(&mut self, len: usize) -> Result<(Option<u64>, u64), OfferError> {
        let t = self.map.publisher().claim_tail.load(Ordering::Relaxed);
        let z = self.map.publisher().zeroed.load(Ordering::Relaxed);
        if self.map.truncated() {
            return Err(truncated());
        }
        if t % RECORD_ALIGN as u64 != 0
            || t >= layout::MAX_POSITION
            || z < t
            || z - t > self.capacity
        {
            return Err(OfferError::Corrupt(format!(
                "shared tail {t} and zeroed mark {z} are inconsistent"
            )));
        }
        self.tail = t;
        self.zeroed = z;
        if self.evictor.is_some() {
            // Release partner: an evicted reader's Acquire fence after its
            // copy (`evict.rs`). An earlier lock holder's EVICTED stores
            // happen before our lock (its Release unlock, our Acquire CAS),
            // so before every data write we make from here on: a reader
            // whose copy saw one of them sees its slot EVICTED.
            fence(Ordering::Release);
        }
        if self.marks.is_some() {
            // A history joiner activated behind the tail by another
            // publisher: our cached `limit` may pass its start; rescan.
            let joins = self.map.publisher().history_joins.load(Ordering::Relaxed);
            if let Some(m) = self.multi.as_mut() {
                if m.seen_joins != joins {
                    m.seen_joins = joins;
                    m.must_scan = true;
                }
            }
        }
        let att = self.map.signal().attention.load(Ordering::Relaxed);
        let must_scan = self.multi.as_ref().is_some_and(|m| m.must_scan);
        if att >= ATTENTION_MEMBERSHIP || must_scan {
            self.scan()?;
            if let Some(m) = self.multi.as_mut() {
                m.must_scan = false;
            }
        }
        if self.active == 0 {
            // Subscribers may have been activated by another publisher
            // (whichever holds the lock takes the membership requests)
            // since our last scan.
            self.scan()?;
            if self.active == 0 {
                return Err(OfferError::NotConnected);
            }
        }
        self.offers = self.offers.wrapping_add(1);
        if self.offers % 1024 == 0 && self.last_reap.elapsed() >= REAP_INTERVAL {
            self.reap()?;
            if self.active == 0 {
                return Err(OfferError::NotConnected);
            }
        }
        let rec = layout::record_len(len as u64);
        let off = self.data.offset(t);
        let (pad_at, start) = if off + rec > self.capacity {
            (Some(t), t + (self.capacity - off))
        } else {
            (None, t)
        };
        let end = start + rec;
        let needed = end + 8;
        if needed > self.limit && !self.make_room(needed)? {
            return Err(if self.active == 0 {
                OfferError::NotConnected
            } else {
                OfferError::BackPressured
            });
        }
        if self.zeroed < needed + ZERO_LOW_WATER {
            if let Some(marks) = &self.marks {
                // `t` starts our claim (its padding, or the record).
                let g = &self.geometry;
                marks.mark_shared(self.map.marks(g.max_subscribers, g.max_publishers), t);
            }
            if self.zeroed < needed {
                // Zeroing ahead is done by the lock holder only, below `limit`
                // and beyond the tail: never a byte another publisher claimed.
                self.zero_range((end + ZERO_AHEAD).min(self.limit).max(needed));
                // Read under the lock only (the lock orders it).
                self.map
                    .publisher()
                    .zeroed
                    .store(self.zeroed, Ordering::Relaxed);
            } else if let Some(m) = self.multi.as_mut() {
                // Enough for this record: the bulk of the zeroing waits until
                // after the commit, off the path that makes it visible (as
                // the single writer's `zero_ahead`).
                m.zero_later = true;
            }
        }
        let Some(m) = self.multi.as_ref() else {
            return Err(OfferError::Corrupt("not a multi-writer publisher".into()));
        };
        let index = m.index;
        self.publish_claim(index, pad_at.unwrap_or(start), end);
        Ok((pad_at, start))
    }

    /// `is_connected` and friends on a multi-writer ring: processes requests
    /// and reaps (at most every millisecond) when the claim lock is free.
    pub(super) fn refresh_multi(&mut self) {
        if self.lock_claims().is_err() {
            return;
        }
        let pb = self.map.publisher();
        let t = pb.claim_tail.load(Ordering::Relaxed);
        let r = if t % RECORD_ALIGN as u64 != 0 || t >= layout::MAX_POSITION {
            Err(OfferError::Corrupt(format!(
                "shared tail {t} is misaligned or too large"
            )))
        } else {
            self.tail = t;
            // A history joiner's start depends on what was zeroed.
            self.zeroed = pb.zeroed.load(Ordering::Relaxed).max(t);
            if self.last_reap.elapsed() >= super::QUERY_REAP_INTERVAL {
                self.reap()
            } else {
                self.scan()
            }
        };
        self.unlock_claims();
        if r.is_err() {
            self.active = 0;
        }
    }

    /// Leaves a multi-writer ring; true if we were the last publisher (the
    /// caller then closes the ring as a single publisher does).
    pub(super) fn leave_multi(&mut self) -> bool {
        let Some(m) = self.multi.as_ref() else {
            return true;
        };
        let index = m.index;
        let pb = self.map.publisher();
        if m.solo != 0 {
            // Let the kept lock go (unless it was just taken from us).
            // Release partner: the next holder's Acquire CAS in `lock_claims`.
            let _ = pb.claim_lock.compare_exchange(
                m.solo,
                m.solo & !u64::from(u32::MAX),
                Ordering::Release,
                Ordering::Relaxed,
            );
        } else if let Some((_, kept)) = m.revoking {
            // Give a lock we were taking back to its keeper, as it was: the
            // keeper may still be inside a change. Relaxed, as in `revoke`.
            let _ = pb.claim_lock.compare_exchange(
                lock_word(kept, index),
                kept,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        let slot = self.pub_slot(index);
        slot.pending_end.store(0, Ordering::Relaxed);
        slot.state.store(PUB_FREE, Ordering::Relaxed);
        liveness::unlock(&self.lock, PUB_LOCK_BASE + i64::from(index));
        // Upgrading our shared lock succeeds only when no other publisher
        // holds one: then we close the ring (attachers wait meanwhile).
        if liveness::try_lock(&self.lock, PUBLISHER_LOCK).unwrap_or(false) {
            self.tail = self.map.publisher().claim_tail.load(Ordering::Relaxed);
            return true;
        }
        liveness::unlock(&self.lock, PUBLISHER_LOCK);
        false
    }
}

impl Claim<'_> {
    /// Commit of a claim on a multi-writer ring.
    #[inline(always)]
    pub(super) fn commit_multi(&mut self) -> u64 {
        let p = &mut *self.p;
        let d = p.data;
        let end = self.start + layout::record_len(self.len as u64);
        let tag = p.multi.as_ref().map_or(0, |m| m.tag);
        // SAFETY: every view below is at a 32-aligned position of our claim
        // (start, the padding position), and the mapping is alive while `p`
        // is borrowed. The commit word after the record was zeroed before
        // the claim was handed out (`reserve`).
        unsafe {
            let (len_w, type_w) = d.len_type(self.start);
            len_w.store(self.len as u32 | tag, Ordering::Relaxed);
            type_w.store(self.type_id, Ordering::Relaxed);
            // Release partner: the subscriber's Acquire load of the commit word.
            d.commit(self.start)
                .store(self.start + 1, Ordering::Release);
            if let Some(pad) = self.pad_at {
                write_padding(d, pad);
            }
        }
        p.finish_multi();
        end
    }

    /// Abort of a claim on a multi-writer ring: a skip record over it.
    #[cold]
    pub(super) fn abort_multi(&mut self) {
        let p = &mut *self.p;
        let d = p.data;
        // SAFETY: as in `commit_multi`.
        unsafe {
            write_skip(d, self.start, layout::record_len(self.len as u64));
            if let Some(pad) = self.pad_at {
                write_padding(d, pad);
            }
        }
        p.finish_multi();
    }
}

impl Publisher {
    /// After a commit or abort on a multi-writer ring: clears our pending
    /// claim and wakes sleepers (steps (b), (c) of the crate docs).
    #[inline(always)]
    fn finish_multi(&mut self) {
        if let Some(m) = self.multi.as_ref() {
            self.pub_slot(m.index)
                .pending_end
                .store(0, Ordering::Relaxed);
        }
        compiler_fence(Ordering::SeqCst);
        if self.fence {
            fence(Ordering::SeqCst);
        }
        if self.map.signal().attention.load(Ordering::Relaxed) as u32 != 0 {
            self.wake();
        }
        if self.multi.as_ref().is_some_and(|m| m.zero_later) {
            self.zero_after_commit();
        }
    }

    /// Zeroes ahead of the shared tail after a commit, if the claim lock can
    /// be had at once and nobody else asks for it (else the next claimer
    /// zeroes, in `reserve`). Our pending claim is already cleared, so a
    /// death in here leaves nothing to resolve; the zeroed mark moves only
    /// after the bytes are zero.
    #[cold]
    #[inline(never)]
    fn zero_after_commit(&mut self) {
        let Some(m) = self.multi.as_mut() else {
            return;
        };
        m.zero_later = false;
        if m.solo != 0 {
            if !self.solo_enter() {
                return;
            }
        } else {
            let index = m.index;
            let pb = self.map.publisher();
            let w = pb.claim_lock.load(Ordering::Relaxed);
            // Relaxed: a hint, as in `lock_claims`.
            if w as u32 != 0 || pb.claim_wanted.load(Ordering::Relaxed) != 0 {
                return;
            }
            // Acquire partner: the previous holder's Release store in
            // `unlock_claims`, as in `lock_claims`.
            if pb
                .claim_lock
                .compare_exchange(w, lock_word(w, index), Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                return;
            }
            if let Some(m) = self.multi.as_mut() {
                m.took(w);
            }
        }
        let pb = self.map.publisher();
        let t = pb.claim_tail.load(Ordering::Relaxed);
        let z = pb.zeroed.load(Ordering::Relaxed);
        let joins = pb.history_joins.load(Ordering::Relaxed);
        let history_moved =
            self.marks.is_some() && self.multi.as_ref().is_some_and(|m| m.seen_joins != joins);
        // The same checks as `reserve`; anything odd is left to it (it
        // reports corruption, or rescans for a history joiner first).
        let sane = t % RECORD_ALIGN as u64 == 0
            && t < layout::MAX_POSITION
            && z >= t
            && z - t <= self.capacity;
        if sane && !history_moved && !self.map.truncated() {
            if self.evictor.is_some() {
                // Release partner: as the fence in `reserve` (`evict.rs`).
                fence(Ordering::Release);
            }
            self.tail = t;
            self.zeroed = z;
            // `limit` is as safe as in `reserve`: positions only move on,
            // joiners start at the shared tail, history joiners are
            // checked above.
            let target = (t + ZERO_AHEAD).min(self.limit);
            if target > z {
                self.zero_range(target);
                // Read under the lock only (the lock orders it).
                self.map
                    .publisher()
                    .zeroed
                    .store(self.zeroed, Ordering::Relaxed);
            }
        }
        self.unlock_claims();
    }
}

/// Writes a skip record of `bytes` at `pos` and commits it.
///
/// # Safety
/// `pos` is 32-aligned, `[pos, pos + bytes)` lies in the lap and belongs to
/// the caller (its claim, or a dead publisher's with the claim lock held).
unsafe fn write_skip(d: DataArea, pos: u64, bytes: u64) {
    // SAFETY: as the caller guarantees.
    let (len_w, type_w) = unsafe { d.len_type(pos) };
    len_w.store(SKIP_LEN, Ordering::Relaxed);
    type_w.store(bytes as u32, Ordering::Relaxed);
    // Release partner: the subscriber's Acquire load of the commit word.
    // SAFETY: as above.
    unsafe { d.commit(pos) }.store(pos + 1, Ordering::Release);
}

/// Writes a padding record at `pos` (to the end of the lap) and commits it.
///
/// # Safety
/// As for [`write_skip`], with the padding running to the end of the lap.
unsafe fn write_padding(d: DataArea, pos: u64) {
    // SAFETY: as the caller guarantees.
    let (len_w, type_w) = unsafe { d.len_type(pos) };
    len_w.store(PADDING_LEN, Ordering::Relaxed);
    type_w.store(0, Ordering::Relaxed);
    // Release partner: the subscriber's Acquire load; the record at the start
    // of the next lap, committed before, is visible with it.
    // SAFETY: as above.
    unsafe { d.commit(pos) }.store(pos + 1, Ordering::Release);
}
