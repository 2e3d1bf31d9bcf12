//! Groups (multicast): the sender's receiver set and flow strategies, and the receiver's
//! random NAK delay. See [Groups](super#groups).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::config::FlowStrategy;
use super::frame;
use super::rng::Rng;
use super::same_addr;

/// Most receivers a group sender tracks; a receiver accepting beyond it is counted
/// ([`Sender::receivers_ignored`](super::Sender::receivers_ignored)) and ignored.
pub const MAX_RECEIVERS: usize = 64;

/// Most unicast setups queued (answers to cookie challenges and set-up requests); more are
/// dropped and asked again by the receiver.
pub(crate) const MAX_PENDING_SETUPS: usize = 16;

/// One receiver of the group, as its accepting reply and status messages describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) id: u32,
    pub(crate) addr: SocketAddr,
    /// Everything before it is acknowledged by this receiver.
    pub(crate) position: u64,
    pub(crate) window: u64,
    pub(crate) tag: Option<u32>,
    pub(crate) last_heard: Instant,
    /// Reported joined ([`Event::ReceiverJoined`](super::Event::ReceiverJoined)): its first
    /// status after its acceptance arrived (the status carries its tag).
    pub(crate) joined: bool,
}

/// A group sender's receiver set (bounded by [`MAX_RECEIVERS`]) and its pending unicast
/// setups.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) members: Vec<Member>,
    /// `(address, cookie)` of setups to send by unicast (zero cookie: a first setup).
    pub(crate) setups: VecDeque<(SocketAddr, [u8; frame::COOKIE_LEN])>,
    /// NAK ranges to echo to the group.
    pub(crate) echo: Vec<(u64, u64)>,
    /// Receivers refused because the set was full.
    pub(crate) ignored: u64,
    /// Unicast setups sent in the current interval (at most [`MAX_PENDING_SETUPS`] per
    /// setup interval: a spoofed request cannot make the sender flood an address).
    pub(crate) setups_sent: usize,
    /// Start of that interval.
    pub(crate) setups_since: Option<Instant>,
}

impl Group {
    pub(crate) fn new() -> Group {
        Group {
            members: Vec::with_capacity(MAX_RECEIVERS),
            setups: VecDeque::with_capacity(MAX_PENDING_SETUPS),
            echo: Vec::with_capacity(frame::MAX_NAK_RANGES),
            ignored: 0,
            setups_sent: 0,
            setups_since: None,
        }
    }

    /// Whether a unicast setup may go now (at most [`MAX_PENDING_SETUPS`] per `interval`);
    /// counts it when it may.
    pub(crate) fn may_send_setup(&mut self, now: Instant, interval: Duration) -> bool {
        match self.setups_since {
            Some(t) if now < t + interval => {}
            _ => {
                self.setups_since = Some(now);
                self.setups_sent = 0;
            }
        }
        if self.setups_sent >= MAX_PENDING_SETUPS {
            return false;
        }
        self.setups_sent += 1;
        true
    }

    /// Queues a unicast setup to `addr` (replacing one queued for it).
    pub(crate) fn queue_setup(&mut self, addr: SocketAddr, cookie: [u8; frame::COOKIE_LEN]) {
        if let Some(q) = self.setups.iter_mut().find(|q| same_addr(q.0, addr)) {
            q.1 = cookie;
        } else if self.setups.len() < MAX_PENDING_SETUPS {
            self.setups.push_back((addr, cookie));
        }
    }

    /// The member at `addr`, if any.
    pub(crate) fn find(&mut self, addr: SocketAddr) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| same_addr(m.addr, addr))
    }

    /// Adds or replaces (same address) a member. Returns the member it replaced (a restarted
    /// receiver), `Ok(None)` for a new one, `Err(())` when the set is full.
    pub(crate) fn upsert(&mut self, m: Member) -> Result<Option<Member>, ()> {
        if let Some(cur) = self.find(m.addr) {
            let old = *cur;
            *cur = m;
            return Ok(Some(old));
        }
        if self.members.len() >= MAX_RECEIVERS {
            self.ignored += 1;
            return Err(());
        }
        self.members.push(m);
        Ok(None)
    }

    /// Removes the member at `addr`.
    pub(crate) fn remove(&mut self, addr: SocketAddr) -> Option<Member> {
        let i = self.members.iter().position(|m| same_addr(m.addr, addr))?;
        Some(self.members.swap_remove(i))
    }

    /// Removes members silent since `now - timeout` into `out`.
    pub(crate) fn expire(&mut self, now: Instant, timeout: Duration, out: &mut Vec<Member>) {
        let mut i = 0;
        while i < self.members.len() {
            if now >= self.members[i].last_heard + timeout {
                out.push(self.members.swap_remove(i));
            } else {
                i += 1;
            }
        }
    }

    /// Members reported joined.
    pub(crate) fn joined(&self) -> usize {
        self.members.iter().filter(|m| m.joined).count()
    }

    /// When the next member expires.
    pub(crate) fn next_expiry(&self, timeout: Duration) -> Option<Instant> {
        self.members.iter().map(|m| m.last_heard + timeout).min()
    }

    /// Whether `m` counts for `flow`.
    fn counts(flow: FlowStrategy, m: &Member) -> bool {
        match flow {
            FlowStrategy::Tagged { tag, .. } => m.tag == Some(tag),
            _ => true,
        }
    }

    /// In one walk of the set: whether enough receivers count for the sender to send, and
    /// the acknowledged position and send limit the counting members allow: `Min` and
    /// `Tagged` the slowest (`min position`, `min(position + window)`), `Max` the fastest
    /// (`None` when no member counts).
    pub(crate) fn tally(&self, flow: FlowStrategy) -> (bool, Option<(u64, u64)>) {
        let mut n = 0usize;
        let mut bound: Option<(u64, u64)> = None;
        for m in self.members.iter().filter(|m| Group::counts(flow, m)) {
            n += 1;
            let (p, l) = (m.position, m.position + m.window);
            bound = Some(match (bound, flow) {
                (None, _) => (p, l),
                (Some((bp, bl)), FlowStrategy::Max) => (bp.max(p), bl.max(l)),
                (Some((bp, bl)), _) => (bp.min(p), bl.min(l)),
            });
        }
        let ready = match flow {
            FlowStrategy::Tagged { min_receivers, .. } => n >= (min_receivers as usize).max(1),
            _ => n >= 1,
        };
        (ready, bound)
    }
}

/// The bound `T` of a group receiver's random NAK delays:
/// `min(max, max(16 · srtt, 8 · (srtt + 4 · rttvar), nak_delay))`.
///
/// Another receiver's NAK suppresses this one's only if its echo (or the repair) arrives
/// here before this receiver's timer fires: the window must hold many of those delays. On a
/// steady link a delay is about `srtt`, and 16 of them make 4 receivers send about 1.25
/// times the NAKs of one. On a loaded host the delay also holds the scheduling delays of
/// the receiver that NAKs first, of the sender echoing it, and of this receiver, which the
/// RTT samples show as spread: the window is then at least 8 times `srtt + 4 · rttvar`
/// (RFC 6298's bound of an RTT sample, the retransmission timeout). While
/// `rttvar <= srtt / 4` (a steady link) the first term wins and the window, and so the
/// repair, is no longer than before; `max` ([`Config::group_nak_backoff`](super::Config::group_nak_backoff))
/// bounds how long a repair can wait, `nak_delay` is the floor.
pub(crate) fn group_nak_window(
    srtt: Duration,
    rttvar: Duration,
    nak_delay: Duration,
    max: Duration,
) -> Duration {
    let rto = srtt.saturating_add(rttvar.saturating_mul(4));
    srtt.saturating_mul(16)
        .max(rto.saturating_mul(8))
        .max(nak_delay)
        .min(max)
}

/// The random delay before a group receiver's first NAK of a gap, beyond
/// [`Config::nak_delay`](super::Config::nak_delay): a truncated exponential over `[0, t)`
/// with increasing density (Nonnenmacher and Biersack; Aeron's optimal multicast delay),
/// `t / λ · ln(1 + u · (e^λ − 1))` with `u` uniform in `[0, 1)` and `λ = ln(n) + 1` for a group
/// of about `n` receivers. Few receivers draw short delays, so the first NAK usually comes
/// alone and its repair (or echo) reaches the others before their timers fire.
pub(crate) fn group_nak_delay(rng: &mut Rng, t: Duration, n: u32) -> Duration {
    let lambda = f64::from(n.max(1)).ln() + 1.0;
    let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    let x = (1.0 + u * (lambda.exp() - 1.0)).ln() / lambda;
    t.mul_f64(x.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(i: u16, position: u64, window: u64, tag: Option<u32>, at: Instant) -> Member {
        Member {
            id: u32::from(i),
            addr: SocketAddr::from(([10, 0, 0, 1], i)),
            position,
            window,
            tag,
            last_heard: at,
            joined: false,
        }
    }

    #[test]
    fn strategies_bound_by_slowest_fastest_or_tagged() {
        let t0 = Instant::now();
        let mut g = Group::new();
        assert_eq!(g.tally(FlowStrategy::Min).1, None);
        g.upsert(member(1, 100, 1000, None, t0)).unwrap();
        g.upsert(member(2, 300, 1000, Some(7), t0)).unwrap();
        assert_eq!(g.tally(FlowStrategy::Min).1, Some((100, 1100)));
        assert_eq!(g.tally(FlowStrategy::Max).1, Some((300, 1300)));
        let tagged = FlowStrategy::Tagged {
            tag: 7,
            min_receivers: 2,
        };
        assert_eq!(g.tally(tagged).1, Some((300, 1300)));
        assert!(!g.tally(tagged).0, "one tagged receiver of two");
        g.upsert(member(3, 200, 1000, Some(7), t0)).unwrap();
        assert!(g.tally(tagged).0);
        assert_eq!(g.tally(tagged).1, Some((200, 1200)));
    }

    #[test]
    fn set_is_bounded_and_expires() {
        let t0 = Instant::now();
        let mut g = Group::new();
        for i in 0..MAX_RECEIVERS as u16 {
            g.upsert(member(i, 0, 1, None, t0)).unwrap();
        }
        assert!(g.upsert(member(999, 0, 1, None, t0)).is_err());
        assert_eq!(g.ignored, 1);
        // Same address: replaced, not added.
        assert_eq!(
            g.upsert(member(3, 8, 1, None, t0 + Duration::from_secs(1)))
                .unwrap()
                .map(|m| m.position),
            Some(0)
        );
        let mut out = Vec::new();
        g.expire(
            t0 + Duration::from_millis(1500),
            Duration::from_secs(1),
            &mut out,
        );
        assert_eq!(out.len(), MAX_RECEIVERS - 1);
        assert_eq!(g.members.len(), 1);
    }

    #[test]
    fn nak_window_grows_with_the_rtt_spread_within_bounds() {
        let us = Duration::from_micros;
        let (floor, max) = (us(50), Duration::from_millis(10));
        // A steady link: 16 x srtt, as without the spread.
        assert_eq!(group_nak_window(us(100), us(0), floor, max), us(1600));
        assert_eq!(group_nak_window(us(100), us(25), floor, max), us(1600));
        // Spread beyond srtt / 4: 8 x (srtt + 4 rttvar).
        assert_eq!(group_nak_window(us(100), us(50), floor, max), us(2400));
        assert_eq!(group_nak_window(us(200), us(200), floor, max), us(8000));
        // Bounds: the floor and the maximum.
        assert_eq!(group_nak_window(us(1), us(0), floor, max), floor);
        assert_eq!(group_nak_window(us(500), us(1000), floor, max), max);
        let huge = Duration::from_secs(u64::MAX);
        assert_eq!(group_nak_window(huge, huge, floor, max), max);
    }

    #[test]
    fn nak_delay_is_within_bound_and_mostly_late() {
        let mut rng = Rng::new(1);
        let t = Duration::from_millis(10);
        let mut early = 0;
        for _ in 0..10_000 {
            let d = group_nak_delay(&mut rng, t, 10);
            assert!(d <= t);
            if d < t / 4 {
                early += 1;
            }
        }
        // P(d < t/4) = (e^(λ/4) - 1) / (e^λ - 1) ≈ 0.045 for λ = ln 10 + 1.
        assert!((200..800).contains(&early), "{early}");
    }
}
