//! Loss repair bookkeeping.
//!
//! Receiver side: [`Gaps`] keeps the ranges received beyond the contiguous position (bounded),
//! and a NAK timer per gap with exponential back-off, so every gap is repaired at once and a
//! gap that stays open is asked for again less and less often.
//!
//! Sender side: [`Retransmits`] keeps a bounded queue of ranges to resend and a bounded list of
//! ranges recently resent, during which repeat NAKs for them are ignored (rate limiting; the
//! sender's repair budget bounds the bytes resent on top of it).

use std::time::{Duration, Instant};

/// Most disjoint ranges the receiver tracks beyond its position.
pub(crate) const MAX_RANGES: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Range {
    start: u64,
    end: u64,
    /// NAK timer of the gap that ends at `start`.
    nak_at: Instant,
    retry: Duration,
}

/// Received ranges beyond the contiguous position, with the NAK timers of the gaps between.
#[derive(Debug)]
pub(crate) struct Gaps {
    ranges: Vec<Range>,
    /// End of the stream the sender reported; a gap after the last range up to it is the tail.
    tail_end: u64,
    tail_nak_at: Option<(Instant, Duration)>,
}

/// Result of [`Gaps::insert`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Insert {
    /// Stored (possibly merged).
    New,
    /// Everything already held.
    Duplicate,
    /// No room for another disjoint range.
    Full,
}

impl Gaps {
    /// Empty.
    pub(crate) fn new() -> Gaps {
        Gaps {
            ranges: Vec::with_capacity(MAX_RANGES + 1),
            tail_end: 0,
            tail_nak_at: None,
        }
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
        self.tail_end = 0;
        self.tail_nak_at = None;
    }

    /// First held range, if any.
    pub(crate) fn first(&self) -> Option<(u64, u64)> {
        self.ranges.first().map(|r| (r.start, r.end))
    }

    /// Removes the first range.
    pub(crate) fn pop_first(&mut self) {
        if !self.ranges.is_empty() {
            self.ranges.remove(0);
        }
    }

    /// Highest position held, or `position` when none.
    pub(crate) fn high(&self, position: u64) -> u64 {
        self.ranges.last().map_or(position, |r| r.end).max(position)
    }

    /// Whether `[start, end)` is entirely held.
    pub(crate) fn covers(&self, start: u64, end: u64) -> bool {
        self.ranges.iter().any(|r| r.start <= start && end <= r.end)
    }

    /// Records `[start, end)` (beyond the position) as received.
    pub(crate) fn insert(
        &mut self,
        start: u64,
        end: u64,
        now: Instant,
        nak_delay: Duration,
    ) -> Insert {
        if self.covers(start, end) {
            return Insert::Duplicate;
        }
        // First range that ends at or after `start` (may merge).
        let i = self.ranges.partition_point(|r| r.end < start);
        // Ranges [i, j) overlap or touch [start, end).
        let j = self.ranges.partition_point(|r| r.start <= end);
        if i == j {
            if self.ranges.len() >= MAX_RANGES {
                return Insert::Full;
            }
            // A new island: the gap before it is part of the gap that was before range i (or
            // of the tail gap), so it inherits that timer.
            let (nak_at, retry) = match self.ranges.get(i) {
                Some(r) => (r.nak_at, r.retry),
                None => self
                    .tail_nak_at
                    .unwrap_or((now + nak_delay, Duration::ZERO)),
            };
            self.ranges.insert(
                i,
                Range {
                    start,
                    end,
                    nak_at,
                    retry,
                },
            );
        } else {
            let first = self.ranges[i];
            let last_end = self.ranges[j - 1].end;
            self.ranges[i] = Range {
                start: first.start.min(start),
                end: last_end.max(end),
                nak_at: first.nak_at,
                retry: first.retry,
            };
            self.ranges.drain(i + 1..j);
        }
        if self.high(0) >= self.tail_end {
            self.tail_nak_at = None;
        }
        Insert::New
    }

    /// The sender reported the stream reaches `end`; a tail gap is NAKed after `nak_delay`.
    pub(crate) fn set_tail(&mut self, position: u64, end: u64, now: Instant, nak_delay: Duration) {
        if end > self.tail_end {
            self.tail_end = end;
        }
        if self.tail_end > self.high(position) {
            if self.tail_nak_at.is_none() {
                self.tail_nak_at = Some((now + nak_delay, Duration::ZERO));
            }
        } else {
            self.tail_nak_at = None;
        }
    }

    /// Drops ranges below `position` (after a skip) and clamps.
    pub(crate) fn discard_below(&mut self, position: u64) {
        self.ranges.retain(|r| r.end > position);
        if let Some(r) = self.ranges.first_mut() {
            r.start = r.start.max(position);
        }
    }

    /// Earliest NAK timer.
    pub(crate) fn next_nak(&self) -> Option<Instant> {
        let t = self.ranges.iter().map(|r| r.nak_at).min();
        match (t, self.tail_nak_at) {
            (Some(a), Some((b, _))) => Some(a.min(b)),
            (a, b) => a.or(b.map(|x| x.0)),
        }
    }

    /// Collects the gaps whose timer is due into `out` (at most `max`), and re-arms each with
    /// back-off: first retry after `base`, doubling up to `max_retry`, plus `jitter()` (a group
    /// receiver's random delay, so the retries of receivers missing the same repair do not go
    /// out together).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn due(
        &mut self,
        position: u64,
        now: Instant,
        base: Duration,
        max_retry: Duration,
        out: &mut Vec<(u64, u64)>,
        max: usize,
        mut jitter: impl FnMut() -> Duration,
    ) {
        let mut prev = position;
        let backoff = |retry: Duration| {
            if retry.is_zero() {
                base.min(max_retry)
            } else {
                (retry * 2).min(max_retry)
            }
        };
        for r in &mut self.ranges {
            if out.len() >= max {
                return;
            }
            if r.nak_at <= now {
                if prev < r.start {
                    out.push((prev, r.start));
                }
                r.retry = backoff(r.retry);
                r.nak_at = now + r.retry + jitter();
            }
            prev = r.end;
        }
        if let Some((at, retry)) = self.tail_nak_at {
            if prev >= self.tail_end {
                self.tail_nak_at = None;
            } else if at <= now && out.len() < max {
                out.push((prev, self.tail_end));
                let retry = backoff(retry);
                self.tail_nak_at = Some((now + retry + jitter(), retry));
            }
        }
    }

    /// Holds the NAK timers of the gaps (from `position` on) that overlap `[from, to)` until
    /// at least `until + jitter()`: another receiver of the group asked for them and the
    /// repair is on its way (NAK suppression). The random `jitter` (drawn per gap) keeps
    /// the receivers that all heard the echo from NAKing together when the repair is lost.
    pub(crate) fn suppress(
        &mut self,
        position: u64,
        from: u64,
        to: u64,
        until: Instant,
        mut jitter: impl FnMut() -> Duration,
    ) {
        let mut prev = position;
        for r in &mut self.ranges {
            if prev < r.start && prev < to && from < r.start {
                r.nak_at = r.nak_at.max(until + jitter());
            }
            prev = r.end;
        }
        if let Some((at, retry)) = self.tail_nak_at {
            if prev < self.tail_end && prev < to && from < self.tail_end {
                self.tail_nak_at = Some((at.max(until + jitter()), retry));
            }
        }
    }

    /// After the contiguous position advanced: gaps no longer exist before it, so the first
    /// gap's timer restarts from the base if it had backed off (progress was made).
    pub(crate) fn progressed(&mut self) {
        if let Some(r) = self.ranges.first_mut() {
            r.retry = Duration::ZERO;
        }
    }
}

impl Default for Gaps {
    fn default() -> Self {
        Self::new()
    }
}

/// Most retransmissions queued at once.
pub(crate) const MAX_RETRANSMITS: usize = 16;
const MAX_LINGER: usize = 32;

/// The sender's pending and recently performed retransmissions.
#[derive(Debug)]
pub(crate) struct Retransmits {
    queue: Vec<(u64, u64)>,
    recent: Vec<(u64, u64, Instant)>,
}

impl Retransmits {
    /// Empty.
    pub(crate) fn new() -> Retransmits {
        Retransmits {
            queue: Vec::with_capacity(MAX_RETRANSMITS),
            recent: Vec::with_capacity(MAX_LINGER),
        }
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        self.recent.clear();
    }

    /// Queues `[from, to)` unless it is already queued or was resent less than a linger ago.
    /// Returns false when suppressed or the queue is full.
    pub(crate) fn request(&mut self, from: u64, to: u64, now: Instant) -> bool {
        self.recent.retain(|r| r.2 > now);
        if self.recent.iter().any(|r| r.0 <= from && from < r.1) {
            return false;
        }
        if self.queue.iter().any(|q| q.0 <= from && from < q.1) {
            return false;
        }
        if self.queue.len() >= MAX_RETRANSMITS {
            return false;
        }
        self.queue.push((from, to));
        true
    }

    /// The next range to resend, if any.
    pub(crate) fn peek(&self) -> Option<(u64, u64)> {
        self.queue.first().copied()
    }

    /// Part of the head range up to `next` was sent; `linger_until` suppresses repeats of it.
    pub(crate) fn advance(&mut self, from: u64, next: u64, linger_until: Instant) {
        if self.recent.len() >= MAX_LINGER {
            self.recent.remove(0);
        }
        self.recent.push((from, next, linger_until));
        if let Some(q) = self.queue.first_mut() {
            q.0 = next;
            if q.0 >= q.1 {
                self.queue.remove(0);
            }
        }
    }

    /// Drops the head range (nothing sendable in it).
    pub(crate) fn pop(&mut self) {
        if !self.queue.is_empty() {
            self.queue.remove(0);
        }
    }

    /// Drops queued ranges below `acked`.
    pub(crate) fn release(&mut self, acked: u64) {
        self.queue.retain(|q| q.1 > acked);
        for q in &mut self.queue {
            q.0 = q.0.max(acked);
        }
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

impl Default for Retransmits {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_merge_and_nak_all_at_once() {
        let t0 = Instant::now();
        let d = Duration::from_micros(50);
        let mut g = Gaps::new();
        assert_eq!(g.insert(100, 200, t0, d), Insert::New);
        assert_eq!(g.insert(300, 400, t0, d), Insert::New);
        assert_eq!(g.insert(150, 180, t0, d), Insert::Duplicate);
        assert_eq!(g.insert(200, 250, t0, d), Insert::New);
        assert_eq!(g.first(), Some((100, 250)));
        let mut out = Vec::new();
        g.due(0, t0, d, d * 100, &mut out, 32, || Duration::ZERO);
        assert!(out.is_empty());
        g.due(0, t0 + d, d, d * 100, &mut out, 32, || Duration::ZERO);
        assert_eq!(out, vec![(0, 100), (250, 300)]);
        out.clear();
        g.due(0, t0 + d + d / 2, d, d * 100, &mut out, 32, || {
            Duration::ZERO
        });
        assert!(out.is_empty(), "backed off");
        g.set_tail(0, 500, t0, d);
        g.due(0, t0 + d * 10, d, d * 100, &mut out, 32, || Duration::ZERO);
        assert_eq!(out, vec![(0, 100), (250, 300), (400, 500)]);
    }

    #[test]
    fn echo_holds_only_overlapping_gaps() {
        let t0 = Instant::now();
        let d = Duration::from_micros(50);
        let mut g = Gaps::new();
        g.insert(100, 200, t0, d);
        g.insert(300, 400, t0, d);
        g.set_tail(0, 500, t0, d);
        let later = t0 + d * 20;
        g.suppress(0, 220, 260, later, || Duration::ZERO);
        let mut out = Vec::new();
        g.due(0, t0 + d, d, d * 100, &mut out, 32, || Duration::ZERO);
        assert_eq!(out, vec![(0, 100), (400, 500)], "the gap 200..300 waits");
        out.clear();
        g.due(0, later, d, d * 100, &mut out, 32, || Duration::ZERO);
        assert!(out.contains(&(200, 300)));
    }

    #[test]
    fn retries_and_held_gaps_add_the_jitter() {
        let t0 = Instant::now();
        let d = Duration::from_micros(50);
        let j = Duration::from_micros(30);
        let mut g = Gaps::new();
        g.insert(100, 200, t0, d);
        let mut out = Vec::new();
        g.due(0, t0 + d, d, d * 100, &mut out, 32, || j);
        assert_eq!(out, vec![(0, 100)]);
        out.clear();
        // Retry after `base` (d) plus the jitter.
        g.due(0, t0 + d * 2, d, d * 100, &mut out, 32, || j);
        assert!(out.is_empty(), "the retry waits for its jitter");
        g.due(0, t0 + d * 2 + j, d, d * 100, &mut out, 32, || j);
        assert_eq!(out, vec![(0, 100)]);
        out.clear();
        // An echo holds the gap until `until` plus the jitter.
        let until = t0 + d * 40;
        g.suppress(0, 0, 100, until, || j);
        g.due(0, until, d, d * 100, &mut out, 32, || j);
        assert!(out.is_empty(), "held past the echo's hold by the jitter");
        g.due(0, until + j, d, d * 100, &mut out, 32, || j);
        assert_eq!(out, vec![(0, 100)]);
    }

    #[test]
    fn retransmit_linger_suppresses_repeats() {
        let t0 = Instant::now();
        let mut r = Retransmits::new();
        assert!(r.request(0, 100, t0));
        assert!(!r.request(0, 100, t0));
        r.advance(0, 100, t0 + Duration::from_millis(1));
        assert!(r.is_empty());
        assert!(!r.request(50, 100, t0));
        assert!(r.request(0, 100, t0 + Duration::from_millis(2)));
    }
}
