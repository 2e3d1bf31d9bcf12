//! Many senders into one subscription: a sans-IO demultiplexer of per-session [`Receiver`]s.
//!
//! [`Sessions`] owns one [`Receiver`] per sender session, each its own ordered, exactly-once
//! stream with its own window, reassembly, liveness and NAK state, and routes every datagram
//! by its source address and session id. Datagrams of no known session (setups above all) go
//! to the *acceptor*, a receiver without a session that runs the stateless cookie handshake;
//! when it accepts a session it becomes that session's receiver, and a new acceptor is forked
//! from it (same cookie secret, so a cookie either issued is accepted by the other). So a
//! session's buffers exist only while the session does, plus one acceptor's.
//!
//! Places: at most [`Config::max_sessions`] sessions are held. A session silent past the
//! liveness timeout is reported gone ([`SessionEvent::Gone`]) and kept, so that it can resume
//! where it stopped if its sender comes back; its place is given to a newcomer when every
//! place is taken. A newcomer when every place holds a live session is refused
//! ([`frame::FLAG_BUSY`](super::frame::FLAG_BUSY), counted as
//! [`DropReason::SessionRefused`](super::DropReason::SessionRefused)): a live session is never
//! evicted. A newcomer from the exact address (IP and port) of a held session replaces it (a
//! publisher restarted on a fixed port): [`SessionEvent::Replaced`].
//!
//! With `max_sessions` 1 the acceptor is the one receiver, and the behaviour is exactly that
//! of a [`Receiver`] (see [Limits](super#limits)).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use zerocopy::FromBytes;

use super::cookie::Entropy;
use super::counters::Counters;
use super::crypto::CryptoHeader;
use super::event::Event;
use super::frame::Header;
use super::receiver::Receiver;
use super::rng::Rng;
use super::{canonical, same_addr, Transmit, MAX_EVENTS};

/// A sender session: where it sends from and its session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The sender's address (IPv4-mapped IPv6 addresses as plain IPv4).
    pub addr: SocketAddr,
    /// The sender's session id.
    pub session_id: u32,
}

/// Why a session ended.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneReason {
    /// The sender closed it.
    Closed,
    /// The sender was silent past the liveness timeout (it may resume).
    TimedOut,
    /// Its stream failed on unrecoverable loss ([`GapPolicy::Fail`](super::GapPolicy::Fail)).
    Failed,
}

/// A change in the set of sender sessions.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// A session was accepted, or resumed after it was reported gone.
    Joined {
        /// The session.
        peer: Peer,
    },
    /// A session ended.
    Gone {
        /// The session.
        peer: Peer,
        /// Why.
        reason: GoneReason,
    },
    /// A new session from the address of a held one replaced it (the same publisher,
    /// restarted).
    Replaced {
        /// The sender's address.
        addr: SocketAddr,
        /// The replaced session's id.
        old: u32,
        /// The new session's id.
        new: u32,
    },
}

/// One held session.
#[derive(Debug)]
struct Slot {
    peer: Peer,
    rx: Receiver,
    /// Reported joined and not gone since.
    joined: bool,
}

/// The receiving end of one stream for up to [`Config::max_sessions`](super::Config::max_sessions)
/// concurrent sender sessions (see [Sessions and limits](super#sessions-and-limits)).
///
/// ```
/// use std::time::Instant;
/// use conduit_proto::{Config, Sender, Sessions};
/// let rx_addr = "127.0.0.1:9".parse().unwrap();
/// let now = Instant::now();
/// let mut rx = Sessions::new(Config::default(), now, 1).unwrap();
/// let mut senders: Vec<_> = (0..3u64)
///     .map(|i| Sender::new(Config::default(), rx_addr, now, 10 + i).unwrap())
///     .collect();
/// let from = |i: usize| format!("127.0.0.1:{}", 100 + i).parse().unwrap();
/// let mut buf = vec![0u8; 2048];
/// let mut got = Vec::new();
/// for _ in 0..4 {
///     for (i, tx) in senders.iter_mut().enumerate() {
///         let _ = tx.offer(7, b"hello");
///         while let Some(t) = tx.poll_transmit(now, 1, &mut buf) {
///             rx.handle_datagram(now, from(i), &buf[..t.len], |peer, _pos, _ty, p| {
///                 got.push((peer.addr, p.to_vec()))
///             });
///         }
///     }
///     while let Some(t) = rx.poll_transmit(now, 1, &mut buf) {
///         let i = usize::from(t.destination.port() - 100);
///         senders[i].handle_datagram(now, rx_addr, &buf[..t.len]);
///     }
/// }
/// assert_eq!(rx.live_sessions(), 3);
/// assert!(got.iter().any(|(a, _)| *a == from(2)));
/// ```
#[derive(Debug)]
pub struct Sessions {
    max: usize,
    /// Takes datagrams of no held session; with `max` 1, the one receiver.
    acceptor: Receiver,
    slots: Vec<Slot>,
    /// `(canonical address, session id)` → index in `slots`.
    index: HashMap<(SocketAddr, u32), usize>,
    /// With `max` 1: the acceptor's session as last reported, and whether it is joined.
    single: Option<(Peer, bool)>,
    events: VecDeque<Event>,
    session_events: VecDeque<SessionEvent>,
    /// Round-robin start of the next `poll_transmit` (0 the acceptor, `i + 1` slot `i`).
    tx_next: usize,
    /// Counters of the receivers no longer held.
    retired: Counters,
    /// The acceptor's answers (cookie challenges, refusals, setup requests), taken out as
    /// soon as it builds them: it holds one at a time, and several senders may be asking
    /// between two transmits. At most [`MAX_PENDING_REPLIES`].
    replies: VecDeque<(SocketAddr, Vec<u8>)>,
}

/// Most acceptor answers waiting to be sent; more are dropped (like a lost datagram: the
/// sender asks again after its setup interval).
const MAX_PENDING_REPLIES: usize = 64;

impl Sessions {
    /// A reproducible demultiplexer (simulation and tests): `seed` drives the ids, cookie
    /// secret and nonces.
    ///
    /// ```
    /// # use std::time::Instant;
    /// let s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// assert_eq!(s.live_sessions(), 0);
    /// ```
    ///
    /// # Errors
    /// The configuration is invalid ([`Config::validate`](super::Config::validate)).
    pub fn new(config: super::Config, now: Instant, seed: u64) -> Result<Sessions, String> {
        let max = config.max_sessions;
        let acceptor = Receiver::build(config, now, Entropy::Seeded(Rng::new(seed ^ 0x7265_6376)))?;
        Ok(Sessions::around(acceptor, max))
    }

    /// A demultiplexer whose ids, cookie secret and nonces come from the OS's CSPRNG.
    ///
    /// ```
    /// # use std::time::Instant;
    /// let s = conduit_proto::Sessions::with_os_random(conduit_proto::Config::default(), Instant::now()).unwrap();
    /// assert!(!s.is_connected());
    /// ```
    ///
    /// # Errors
    /// The configuration is invalid, or the OS random source failed.
    pub fn with_os_random(config: super::Config, now: Instant) -> Result<Sessions, String> {
        let max = config.max_sessions;
        let acceptor = Receiver::build(config, now, Entropy::Os)?;
        Ok(Sessions::around(acceptor, max))
    }

    fn around(acceptor: Receiver, max: usize) -> Sessions {
        Sessions {
            max,
            acceptor,
            slots: Vec::new(),
            index: HashMap::new(),
            single: None,
            events: VecDeque::new(),
            session_events: VecDeque::new(),
            tx_next: 0,
            retired: Counters::default(),
            replies: VecDeque::new(),
        }
    }

    /// The configuration.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// assert_eq!(s.config().max_sessions, 16);
    /// ```
    pub fn config(&self) -> &super::Config {
        self.acceptor.config()
    }

    /// Handles one datagram from `from`; messages that become deliverable are passed to
    /// `deliver(peer, position, type_id, payload)`, in order within their session
    /// (unfragmented ones as slices of `bytes`). Returns the number delivered.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let mut s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// let n = s.handle_datagram(Instant::now(), "10.0.0.1:5".parse().unwrap(), b"junk", |_, _, _, _| {});
    /// assert_eq!(n, 0);
    /// ```
    pub fn handle_datagram<F: FnMut(Peer, u64, u32, &[u8])>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        mut deliver: F,
    ) -> usize {
        let sid = peek_session(bytes);
        let addr = canonical(from);
        if self.max == 1 {
            let peer = Peer {
                addr,
                session_id: sid.unwrap_or(0),
            };
            let n = self
                .acceptor
                .handle_datagram_at(now, from, bytes, |pos, ty, p| deliver(peer, pos, ty, p));
            self.collect_single();
            return n;
        }
        if let Some(&i) = sid.and_then(|sid| self.index.get(&(addr, sid))) {
            let slot = &mut self.slots[i];
            let peer = slot.peer;
            let n = slot
                .rx
                .handle_datagram_at(now, from, bytes, |pos, ty, p| deliver(peer, pos, ty, p));
            self.collect(i);
            return n;
        }
        // No held session: the acceptor's (setups, strays). Refuse a newcomer only when no
        // place can be had (see `busy`).
        if self.slots.len() >= self.max {
            let busy = self.busy(now, addr);
            self.acceptor.set_busy(busy);
        } else {
            self.acceptor.set_busy(false);
        }
        let serving = self.slots.iter().any(|s| s.rx.is_connected());
        self.acceptor.set_serving(serving);
        let peer = Peer {
            addr,
            session_id: sid.unwrap_or(0),
        };
        let n = self
            .acceptor
            .handle_datagram_at(now, from, bytes, |pos, ty, p| deliver(peer, pos, ty, p));
        if self.acceptor.has_session() {
            self.accept(now);
        } else {
            self.drain_acceptor_events();
            self.take_replies(now);
        }
        n
    }

    /// Moves what the acceptor wants to send into `replies`.
    fn take_replies(&mut self, now: Instant) {
        while self.acceptor.transmit_pending() {
            let mut buf = vec![0u8; self.acceptor.config().mtu];
            let Some(t) = self.acceptor.poll_transmit(now, 1, &mut buf) else {
                break;
            };
            if self.replies.len() < MAX_PENDING_REPLIES {
                buf.truncate(t.len);
                self.replies.push_back((t.destination, buf));
            }
        }
    }

    /// Whether a newcomer from `addr` must be refused: every place is held by a live session,
    /// none of them from `addr` (runs due timers first, so that liveness is current).
    fn busy(&mut self, now: Instant, addr: SocketAddr) -> bool {
        self.handle_timeout(now);
        !self
            .slots
            .iter()
            .any(|s| !s.rx.is_connected() || same_addr(s.peer.addr, addr))
    }

    /// The acceptor accepted a session: it becomes that session's receiver, a fork of it the
    /// next acceptor; a held session from the same address is replaced, or a place is freed.
    fn accept(&mut self, now: Instant) {
        let next = self.acceptor.fork(now);
        let rx = std::mem::replace(&mut self.acceptor, next);
        let (Some(addr), Some(session_id)) = (rx.peer(), rx.session_id()) else {
            return;
        };
        let peer = Peer {
            addr: canonical(addr),
            session_id,
        };
        let mut replaced = None;
        if let Some(i) = self.slots.iter().position(|s| same_addr(s.peer.addr, addr)) {
            replaced = Some(self.slots[i].peer.session_id);
            self.remove(i);
        } else if self.slots.len() >= self.max {
            // A session that is not live gives its place (the acceptor was busy otherwise).
            match self.slots.iter().position(|s| !s.rx.is_connected()) {
                Some(i) => self.remove(i),
                None => return,
            }
        }
        self.index.insert((peer.addr, session_id), self.slots.len());
        self.slots.push(Slot {
            peer,
            rx,
            joined: false,
        });
        if let Some(old) = replaced {
            self.push_event(Event::SessionReplaced {
                old,
                new: session_id,
            });
            self.push_session_event(SessionEvent::Replaced {
                addr: peer.addr,
                old,
                new: session_id,
            });
            if let Some(s) = self.slots.last_mut() {
                s.joined = true;
            }
        }
        self.collect(self.slots.len() - 1);
    }

    /// Drops slot `i` (its counters are kept).
    fn remove(&mut self, i: usize) {
        let slot = self.slots.swap_remove(i);
        add(&mut self.retired, slot.rx.counters());
        self.index.remove(&(slot.peer.addr, slot.peer.session_id));
        if let Some(moved) = self.slots.get(i) {
            self.index
                .insert((moved.peer.addr, moved.peer.session_id), i);
        }
    }

    /// Passes on the acceptor's events (rejections, key mismatches).
    fn drain_acceptor_events(&mut self) {
        while let Some(e) = self.acceptor.poll_event() {
            self.push_event(e);
        }
    }

    /// Passes on slot `i`'s events and reports its joins and ends; a closed session is
    /// dropped.
    fn collect(&mut self, i: usize) {
        while let Some(e) = self.slots[i].rx.poll_event() {
            let slot = &mut self.slots[i];
            let peer = slot.peer;
            let ev = match (&e, gone_reason(&e, slot.rx.is_failed())) {
                (Event::Connected { .. }, _) if !slot.joined => {
                    slot.joined = true;
                    Some(SessionEvent::Joined { peer })
                }
                // A close ends the session even when it was reported gone already.
                (_, Some(reason)) if slot.joined || reason == GoneReason::Closed => {
                    slot.joined = false;
                    Some(SessionEvent::Gone { peer, reason })
                }
                _ => None,
            };
            self.pass_on(e, ev);
        }
        let slot = &self.slots[i];
        if !slot.rx.has_session() && !slot.rx.transmit_pending() {
            self.remove(i);
        }
    }

    /// With `max` 1: passes on the receiver's events and derives joins, ends and
    /// replacements from them.
    fn collect_single(&mut self) {
        while let Some(e) = self.acceptor.poll_event() {
            let current = self.acceptor.session_id().and_then(|session_id| {
                Some(Peer {
                    addr: canonical(self.acceptor.peer()?),
                    session_id,
                })
            });
            let ev = match (&e, self.single) {
                (Event::Connected { session_id, .. }, s)
                    if !s.is_some_and(|(p, j)| j && p.session_id == *session_id) =>
                {
                    current.map(|peer| {
                        self.single = Some((peer, true));
                        SessionEvent::Joined { peer }
                    })
                }
                (Event::SessionReplaced { old, new }, s) => {
                    let (p, joined) = s.unwrap_or((
                        Peer {
                            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                            session_id: 0,
                        },
                        false,
                    ));
                    current.map(|peer| {
                        self.single = Some((peer, true));
                        if joined && p.session_id == *old {
                            SessionEvent::Replaced {
                                addr: peer.addr,
                                old: *old,
                                new: *new,
                            }
                        } else {
                            SessionEvent::Joined { peer }
                        }
                    })
                }
                (_, Some((peer, true))) => {
                    gone_reason(&e, self.acceptor.is_failed()).map(|reason| {
                        self.single = Some((peer, false));
                        SessionEvent::Gone { peer, reason }
                    })
                }
                _ => None,
            };
            self.pass_on(e, ev);
        }
    }

    /// Passes on a receiver's event, and the session change derived from it.
    fn pass_on(&mut self, e: Event, change: Option<SessionEvent>) {
        self.push_event(e);
        if let Some(c) = change {
            self.push_session_event(c);
        }
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() < MAX_EVENTS {
            self.events.push_back(e);
        }
    }

    fn push_session_event(&mut self, e: SessionEvent) {
        // Bounded like the events; a session has a few per life, so with the queue drained
        // now and then none is lost (at most `MAX_EVENTS + 3 * max_sessions` are kept).
        if self.session_events.len() < MAX_EVENTS + 3 * self.max {
            self.session_events.push_back(e);
        }
    }

    /// The next event of any session (a session's [`Event::Connected`], [`Event::PeerGone`],
    /// [`Event::Closed`], [`Event::UnrecoverableLoss`]...; [`Event::SessionReplaced`] for a
    /// replacement), or of the handshake (rejections, key mismatch).
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let mut s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// assert_eq!(s.poll_event(), None);
    /// ```
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next change in the set of sessions: joined, gone (and why), replaced.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let mut s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// while let Some(e) = s.poll_session_event() {
    ///     println!("{e:?}");
    /// }
    /// ```
    pub fn poll_session_event(&mut self) -> Option<SessionEvent> {
        self.session_events.pop_front()
    }

    /// When timers next need [`handle_timeout`](Self::handle_timeout) (the earliest of every
    /// session's).
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// assert_eq!(s.poll_timeout(), None); // no session
    /// ```
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.rx.poll_timeout())
            .chain(self.acceptor.poll_timeout())
            .min()
    }

    /// Advances the timers of every session whose deadline passed.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let mut s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// s.handle_timeout(Instant::now());
    /// ```
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.acceptor.poll_timeout().is_some_and(|t| t <= now) {
            self.acceptor.handle_timeout(now);
            if self.max == 1 {
                self.collect_single();
            }
        }
        let mut i = self.slots.len();
        while i > 0 {
            i -= 1;
            if self.slots[i].rx.poll_timeout().is_some_and(|t| t <= now) {
                self.slots[i].rx.handle_timeout(now);
                self.collect(i);
            }
        }
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has something to send that no timer
    /// waits for (see [`Receiver::transmit_pending`]).
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// assert!(!s.transmit_pending());
    /// ```
    pub fn transmit_pending(&self) -> bool {
        !self.replies.is_empty()
            || self.acceptor.transmit_pending()
            || self.slots.iter().any(|s| s.rx.transmit_pending())
    }

    /// The next datagrams to send (see [`Receiver::poll_transmit`]): one batch of one
    /// session, sessions taken in turn.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let mut s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// let mut buf = vec![0u8; 2048];
    /// assert!(s.poll_transmit(Instant::now(), 1, &mut buf).is_none());
    /// ```
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        max_datagrams: usize,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        if let Some((destination, bytes)) = self.replies.pop_front() {
            if let Some(out) = buf.get_mut(..bytes.len()) {
                out.copy_from_slice(&bytes);
                return Some(Transmit {
                    destination,
                    len: bytes.len(),
                    segment_size: bytes.len(),
                });
            }
        }
        let n = self.slots.len() + 1;
        for k in 0..n {
            let i = (self.tx_next + k) % n;
            let t = if i == 0 {
                self.acceptor.poll_transmit(now, max_datagrams, buf)
            } else {
                self.slots[i - 1].rx.poll_transmit(now, max_datagrams, buf)
            };
            if t.is_some() {
                self.tx_next = (i + 1) % n;
                return t;
            }
        }
        // Closed sessions whose last datagrams went out.
        let mut i = self.slots.len();
        while i > 0 {
            i -= 1;
            if !self.slots[i].rx.has_session() && !self.slots[i].rx.transmit_pending() {
                self.remove(i);
            }
        }
        None
    }

    /// Closes every session: each sender gets a close frame (drain
    /// [`poll_transmit`](Self::poll_transmit)), and each session reported joined is reported
    /// gone ([`GoneReason::Closed`]).
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let mut s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// s.close(Instant::now());
    /// ```
    pub fn close(&mut self, now: Instant) {
        self.acceptor.close(now);
        let mut gone = Vec::new();
        for s in &mut self.slots {
            s.rx.close(now);
            if std::mem::take(&mut s.joined) {
                gone.push(s.peer);
            }
        }
        if let Some((peer, true)) = self.single {
            self.single = Some((peer, false));
            gone.push(peer);
        }
        for peer in gone {
            self.push_session_event(SessionEvent::Gone {
                peer,
                reason: GoneReason::Closed,
            });
        }
    }

    /// Whether any session is live.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// assert!(!s.is_connected());
    /// ```
    pub fn is_connected(&self) -> bool {
        self.acceptor.is_connected() || self.slots.iter().any(|s| s.rx.is_connected())
    }

    /// Live sessions.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// assert_eq!(s.live_sessions(), 0);
    /// ```
    pub fn live_sessions(&self) -> usize {
        usize::from(self.acceptor.is_connected())
            + self.slots.iter().filter(|s| s.rx.is_connected()).count()
    }

    /// The held sessions (live or not) and whether each is live.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// assert_eq!(s.sessions().count(), 0);
    /// ```
    pub fn sessions(&self) -> impl Iterator<Item = (Peer, bool)> + '_ {
        let single = self.acceptor.session_id().and_then(|session_id| {
            Some((
                Peer {
                    addr: canonical(self.acceptor.peer()?),
                    session_id,
                },
                self.acceptor.is_connected(),
            ))
        });
        single
            .into_iter()
            .chain(self.slots.iter().map(|s| (s.peer, s.rx.is_connected())))
    }

    /// The stream position of a held session: everything before it was delivered. `None`
    /// once the session ended (a closed one is held until its last datagrams went out).
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// let peer = conduit_proto::Peer { addr: "10.0.0.1:5".parse().unwrap(), session_id: 1 };
    /// assert_eq!(s.position(peer), None);
    /// ```
    pub fn position(&self, peer: Peer) -> Option<u64> {
        self.receiver(peer)
            .filter(|r| r.has_session())
            .map(Receiver::position)
    }

    /// The receiver of a held session.
    fn receiver(&self, peer: Peer) -> Option<&Receiver> {
        if self.acceptor.session_id() == Some(peer.session_id)
            && self
                .acceptor
                .peer()
                .is_some_and(|a| same_addr(a, peer.addr))
        {
            return Some(&self.acceptor);
        }
        let i = *self.index.get(&(canonical(peer.addr), peer.session_id))?;
        Some(&self.slots[i].rx)
    }

    /// The one sender a subscription may give a socket of its own: with `max_sessions` 1 the
    /// current sender's address; with more, the address of the only session held, while it is
    /// the only one and live (`None` with none or several).
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// assert_eq!(s.single_peer(), None);
    /// ```
    pub fn single_peer(&self) -> Option<SocketAddr> {
        if self.max == 1 {
            return self.acceptor.peer();
        }
        match self.slots.as_slice() {
            [only] if only.rx.is_connected() => only.rx.peer(),
            _ => None,
        }
    }

    /// Whether the stream failed on unrecoverable loss: with `max_sessions` 1, the one
    /// session's; with more, never (a failed session ends alone, [`GoneReason::Failed`]).
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// assert!(!s.is_failed());
    /// ```
    pub fn is_failed(&self) -> bool {
        self.acceptor.is_failed()
    }

    /// Counters of every session, held or past, and of the acceptor, summed.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let s = conduit_proto::Sessions::new(conduit_proto::Config::default(), Instant::now(), 7).unwrap();
    /// assert_eq!(s.counters().messages, 0);
    /// ```
    pub fn counters(&self) -> Counters {
        let mut c = self.retired.clone();
        add(&mut c, self.acceptor.counters());
        for s in &self.slots {
            add(&mut c, s.rx.counters());
        }
        c
    }
}

/// The session id a datagram names (sealed or plain), if it is long enough to name one.
fn peek_session(bytes: &[u8]) -> Option<u32> {
    if let Some(h) = CryptoHeader::peek(bytes) {
        return Some(h.session_id.get());
    }
    Header::ref_from_prefix(bytes)
        .ok()
        .map(|(h, _)| h.session_id.get())
}

/// `into += c`, field by field (every field named: a new counter must be summed here too).
fn add(into: &mut Counters, c: &Counters) {
    let Counters {
        datagrams_sent,
        datagrams_received,
        messages,
        bytes,
        retransmitted,
        naks_sent,
        naks_received,
        heartbeats,
        status,
        back_pressured,
        drops,
        retransmitted_bytes,
        repair_throttled,
        gaps_detected,
        gaps_repaired,
        gaps_unrecoverable,
        last_gap,
        last_unrecoverable,
        not_connected,
    } = c;
    into.datagrams_sent += datagrams_sent;
    into.datagrams_received += datagrams_received;
    into.messages += messages;
    into.bytes += bytes;
    into.retransmitted += retransmitted;
    into.naks_sent += naks_sent;
    into.naks_received += naks_received;
    into.heartbeats += heartbeats;
    into.status += status;
    into.back_pressured += back_pressured;
    for (a, b) in into.drops.iter_mut().zip(drops) {
        *a += b;
    }
    into.retransmitted_bytes += retransmitted_bytes;
    into.repair_throttled += repair_throttled;
    into.gaps_detected += gaps_detected;
    into.gaps_repaired += gaps_repaired;
    into.gaps_unrecoverable += gaps_unrecoverable;
    into.last_gap = into.last_gap.max(*last_gap);
    into.last_unrecoverable = into.last_unrecoverable.max(*last_unrecoverable);
    into.not_connected += not_connected;
}

/// The end of a session a receiver's event reports, if it is one: silent past the liveness
/// timeout, closed, or failed (`failed`: the receiver stopped on unrecoverable loss).
fn gone_reason(e: &Event, failed: bool) -> Option<GoneReason> {
    match e {
        Event::PeerGone => Some(GoneReason::TimedOut),
        Event::Closed => Some(GoneReason::Closed),
        Event::UnrecoverableLoss { .. } if failed => Some(GoneReason::Failed),
        _ => None,
    }
}
