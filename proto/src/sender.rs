//! The publication side: offers and claims append records to the log; `poll_transmit` sends
//! the handshake, new data within the receiver's window, retransmissions, heartbeats and RTT
//! probes.
//!
//! Repair is bounded (see [Repair bounds](super#repair-bounds)): a NAK is clipped to what was
//! sent and not acknowledged, one window at most, and retransmissions spend a budget that new
//! data and a slow floor refill, so whatever NAKs arrive, retransmitted bytes stay within one
//! window plus the new data sent plus `max(window / 8, mtu)` per heartbeat interval.

use std::borrow::BorrowMut;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use super::config::{Config, FlowStrategy, GROUP_VERSION};
use super::cookie::Entropy;
use super::counters::{Counters, DropReason};
use super::crypto::{self, CryptoHeader, Direction, HandshakeKeys, SessionKeys};
use super::event::Event;
use super::flow::Flow;
use super::frame::{self, FrameKind, Header, Records, MAX_POSITION};
use super::group::{Group, Member};
use super::handshake::negotiate;
use super::log::Log;
use super::nak::Retransmits;
use super::rng::Rng;
use super::rtt::{nanos, RttEstimator};
use super::{poll_batch, same_addr, Batched, Held, Transmit, MAX_EVENTS};

/// Why an offer or claim did not go into the log. Nothing offered is ever lost by a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferError {
    /// The window or the log is full: retry after the receiver has caught up.
    BackPressured,
    /// No receiver is connected (handshake pending, or the peer is gone).
    NotConnected,
    /// The message exceeds the maximum length (for claims: one record's payload).
    MessageTooLarge {
        /// Requested length.
        len: usize,
        /// Maximum length.
        max: usize,
    },
    /// The sender was closed.
    Closed,
    /// The handshake failed for good (no common version, or the receiver takes smaller
    /// datagrams than this sender's MTU), or the stream reached the end of the position space
    /// (2^62 bytes after its start).
    Failed,
    /// The receiver refused this session: another live session owns it. The sender keeps
    /// asking and takes over once that session is gone; retry later.
    Refused,
    /// The receiver says one end has a key and the other none, or the keys differ. The sender
    /// keeps asking (the reply is unauthenticated and changes nothing).
    KeyMismatch,
}

/// Handshake state of a [`Sender`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderState {
    /// Sending setups, waiting for the receiver's reply.
    Connecting,
    /// Streaming.
    Connected,
    /// The receiver speaks no common version; nothing more is sent.
    Failed,
    /// Closed by the application.
    Closed,
}

/// The sending end of one stream towards one receiver address.
#[derive(Debug)]
pub struct Sender {
    config: Config,
    destination: SocketAddr,
    session_id: u32,
    state: SenderState,
    version: u8,
    receiver_id: u32,
    log: Log,
    max_record: usize,
    framed_max: u64,
    tail: u64,
    sent: u64,
    flow: Flow,
    retransmits: Retransmits,
    /// `(begin, end)` of fragmented messages not yet fully acknowledged: a receiver that
    /// joins again starts at the beginning of a message, never in its middle.
    fragmented: VecDeque<(u64, u64)>,
    events: VecDeque<Event>,
    counters: Counters,
    epoch: Instant,
    rtt: RttEstimator,
    next_setup: Instant,
    last_heard: Instant,
    next_heartbeat: Instant,
    probe: Duration,
    heartbeat_now: bool,
    next_rtt: Instant,
    rtt_echo: Option<u64>,
    close_pending: bool,
    /// This session's random nonce, sent in every setup.
    nonce: [u8; frame::NONCE_LEN],
    /// The cookie of the receiver's last challenge (zero before one).
    cookie: [u8; frame::COOKIE_LEN],
    /// The receiver's nonce for this session (from its accepting reply).
    peer_nonce: [u8; frame::NONCE_LEN],
    /// The receiver refused the session (busy) since the last accept.
    refused: bool,
    /// Interval between setups while refused (doubles up to [`MAX_REFUSED_BACKOFF`]).
    refused_backoff: Duration,
    /// Keyed: the handshake keys (phase 0).
    hs_keys: Option<HandshakeKeys>,
    /// Keyed: the session's keys (phase 1), from both nonces once accepted.
    session_keys: Option<SessionKeys>,
    /// Keyed: 8-aligned buffer the datagrams are opened into.
    open_buf: Vec<u64>,
    /// The receiver said the keys do not match (until accepted).
    key_mismatch: bool,
    /// Everything before it was acknowledged by a receiver of this session (what
    /// [`disconnect`](Self::disconnect) releases unacknowledged is not).
    confirmed: u64,
    /// Key rejections since the last datagram that authenticated (one may be a corrupted
    /// setup: [`KEY_MISMATCH_EVIDENCE`] in a row are a mismatch).
    key_rejects: u32,
    /// The address the receiver's accepting reply came from.
    peer: Option<SocketAddr>,
    /// Nonce of a NAK that asked for released data: the next heartbeat confirms the loss.
    loss_echo: Option<u32>,
    /// Retransmission budget in stream bytes (see [`Sender::repair_budget`]).
    repair_budget: u64,
    /// When the floor last credited the budget.
    repair_refilled: Instant,
    /// The budget is empty while retransmissions wait: when the floor will have credited a
    /// datagram's worth.
    repair_wait: Option<Instant>,
    /// A datagram built for a batch it did not fit: it leads the next one.
    held: Held,
    /// The destination is a group (multicast): the receiver set, see [Groups](super#groups).
    group: Option<Group>,
    /// Where the datagram `next_datagram` just built goes when not to the destination (a
    /// unicast setup or RTT answer to one receiver of a group).
    unicast_to: Option<SocketAddr>,
    /// Where the pending RTT answer goes (a group's receiver; the destination otherwise).
    rtt_echo_to: Option<SocketAddr>,
}

/// Key failures in a row, with nothing authentic in between, that make a key mismatch.
pub(crate) const KEY_MISMATCH_EVIDENCE: u32 = 3;

/// Longest interval between setups of a refused sender.
const MAX_REFUSED_BACKOFF: Duration = Duration::from_millis(100);

/// Space claimed in the sender's log: fill [`Claim::as_mut_slice`], then [`Claim::commit`].
/// Dropping a claim without committing aborts it.
///
/// The claim holds the sender through `S`: `&mut Sender` from [`Sender::try_claim`], or any
/// owner of it that [`Sender::claim_in`] was given (an endpoint holding its lock, say), which
/// [`Claim::finish`] hands back. Nothing else can touch the sender while the claim lives, so
/// the room it reserved stays reserved and the commit cannot fail.
#[derive(Debug)]
pub struct Claim<S: BorrowMut<Sender>> {
    sender: S,
    offset: usize,
    len: usize,
}

impl<S: BorrowMut<Sender>> Claim<S> {
    /// The payload bytes to fill in place.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let start = self.offset + frame::RECORD_HEADER_LEN;
        self.sender
            .borrow_mut()
            .log
            .bytes_mut_range(start, self.len)
    }

    /// The payload bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        let start = self.offset + frame::RECORD_HEADER_LEN;
        &self.sender.borrow().log.bytes()[start..start + self.len]
    }

    /// Length of the claimed payload.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the claim is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Publishes the message; returns the new stream position.
    #[inline]
    pub fn commit(self) -> u64 {
        self.finish().0
    }

    /// Publishes the message; returns the new stream position and the sender's holder.
    #[inline]
    pub fn finish(self) -> (u64, S) {
        let Claim {
            mut sender, len, ..
        } = self;
        let s = sender.borrow_mut();
        s.tail += frame::record_size(len) as u64;
        s.counters.messages += 1;
        s.counters.bytes += len as u64;
        (s.tail, sender)
    }

    /// Abandons the claim (same as dropping it).
    pub fn abort(self) {}
}

impl Sender {
    /// A reproducible sender streaming to `destination`: `seed` drives its session id, initial
    /// position and nonce (for simulation and tests; a real endpoint uses
    /// [`Sender::with_os_random`]).
    ///
    /// # Errors
    /// The configuration is invalid ([`Config::validate`]).
    pub fn new(
        config: Config,
        destination: SocketAddr,
        now: Instant,
        seed: u64,
    ) -> Result<Sender, String> {
        Sender::build(config, destination, now, Entropy::Seeded(Rng::new(seed)))
    }

    /// A sender whose session id, initial position and nonce come from the operating system's
    /// CSPRNG, so that nobody can predict them. `seed` drives nothing a peer could exploit.
    ///
    /// # Errors
    /// The configuration is invalid ([`Config::validate`]), or the OS random source failed.
    pub fn with_os_random(
        config: Config,
        destination: SocketAddr,
        now: Instant,
        seed: u64,
    ) -> Result<Sender, String> {
        let _ = seed;
        Sender::build(config, destination, now, Entropy::Os)
    }

    fn build(
        config: Config,
        destination: SocketAddr,
        now: Instant,
        mut entropy: Entropy,
    ) -> Result<Sender, String> {
        config.validate()?;
        let group = destination.ip().is_multicast().then(Group::new);
        if group.is_some() {
            if config.key.is_some() {
                return Err(
                    "a key with a group (multicast) destination is not supported: per-receiver session keys cannot seal one datagram for the whole group"
                        .into(),
                );
            }
            if config.versions.1 < GROUP_VERSION {
                return Err(format!(
                    "a group (multicast) destination needs protocol version {GROUP_VERSION}; the versions are {}..={}",
                    config.versions.0, config.versions.1
                ));
            }
        }
        let session_id = entropy.nonzero_u32()?;
        let start = entropy.position()?;
        let mut nonce = [0u8; frame::NONCE_LEN];
        entropy.fill(&mut nonce)?;
        let log = Log::new(config.retransmit_buffer);
        let max_record = config.max_record_payload();
        let framed_max = config.framed_len(config.max_message_len) as u64;
        let window = config.window as u64;
        let probe = config.heartbeat_interval.min(Duration::from_millis(1));
        Ok(Sender {
            destination,
            session_id,
            state: SenderState::Connecting,
            version: 0,
            receiver_id: 0,
            log,
            max_record,
            framed_max,
            tail: start,
            sent: start,
            flow: Flow::new(start, window),
            retransmits: Retransmits::new(),
            fragmented: VecDeque::with_capacity(config.retransmit_buffer / max_record + 2),
            events: VecDeque::new(),
            counters: Counters::default(),
            epoch: now,
            rtt: RttEstimator::new(),
            next_setup: now,
            last_heard: now,
            next_heartbeat: now + config.heartbeat_interval,
            probe,
            heartbeat_now: false,
            next_rtt: now,
            rtt_echo: None,
            close_pending: false,
            nonce,
            cookie: [0; frame::COOKIE_LEN],
            peer_nonce: [0; frame::NONCE_LEN],
            refused: false,
            refused_backoff: config.setup_interval,
            hs_keys: config
                .key
                .as_ref()
                .map(|k| HandshakeKeys::new(k, Direction::PubToSub)),
            session_keys: None,
            open_buf: if config.key.is_some() {
                vec![0u64; 65_536 / 8]
            } else {
                Vec::new()
            },
            key_mismatch: false,
            key_rejects: 0,
            confirmed: start,
            peer: None,
            loss_echo: None,
            repair_budget: window,
            repair_refilled: now,
            repair_wait: None,
            held: Held::default(),
            group,
            unicast_to: None,
            rtt_echo_to: None,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The peer address datagrams go to.
    pub fn destination(&self) -> SocketAddr {
        self.destination
    }

    /// This sender's random session id.
    pub fn session_id(&self) -> u32 {
        self.session_id
    }

    /// Handshake state.
    pub fn state(&self) -> SenderState {
        self.state
    }

    /// Whether a receiver is connected.
    pub fn is_connected(&self) -> bool {
        self.state == SenderState::Connected
    }

    /// End of everything offered (the stream position the next message starts at).
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// Everything before this position was acknowledged by the receiver (or released when it
    /// went away).
    pub fn acked_position(&self) -> u64 {
        self.flow.acked
    }

    /// Whether a receiver of this session acknowledged everything offered (also after it
    /// closed or went away): the data is known to be delivered.
    pub fn is_delivered(&self) -> bool {
        self.confirmed == self.tail
    }

    /// Whether the receiver is connected and has acknowledged everything offered.
    pub fn is_flushed(&self) -> bool {
        self.state == SenderState::Connected && self.flow.acked == self.tail
    }

    /// Largest message [`Sender::offer`] takes.
    pub fn max_message_len(&self) -> usize {
        self.config.max_message_len
    }

    /// Largest payload [`Sender::try_claim`] takes (one record, unfragmented).
    pub fn max_claim_len(&self) -> usize {
        self.max_record.min(self.config.max_message_len)
    }

    /// Smoothed round-trip time, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt.smoothed()
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Whether the receiver refused this session (another live session owns it) and has not
    /// accepted it since.
    pub fn is_refused(&self) -> bool {
        self.refused && self.state == SenderState::Connecting
    }

    /// Whether the receiver said that the keys do not match (one end keyed and the other
    /// not, or different keys) and has not accepted the session since.
    pub fn is_key_mismatch(&self) -> bool {
        self.key_mismatch && self.state == SenderState::Connecting
    }

    /// Whether the destination is a group (multicast address): the sender tracks a receiver
    /// set (see [Groups](super#groups)).
    ///
    /// ```
    /// use std::time::Instant;
    /// use conduit_proto::{Config, Sender};
    /// let tx = Sender::new(Config::default(), "239.1.2.3:7000".parse().unwrap(), Instant::now(), 1)
    ///     .unwrap();
    /// assert!(tx.is_group());
    /// assert_eq!((tx.receivers(), tx.receivers_ignored()), (0, 0));
    /// ```
    pub fn is_group(&self) -> bool {
        self.group.is_some()
    }

    /// Receivers in a group sender's set that were reported joined
    /// ([`Event::ReceiverJoined`]); 0 for a unicast sender.
    ///
    /// ```
    /// use std::time::Instant;
    /// use conduit_proto::{Config, Sender};
    /// let tx = Sender::new(Config::default(), "10.0.0.1:7000".parse().unwrap(), Instant::now(), 1)
    ///     .unwrap();
    /// assert!(!tx.is_group());
    /// assert_eq!(tx.receivers(), 0);
    /// ```
    pub fn receivers(&self) -> usize {
        self.group.as_ref().map_or(0, |g| g.joined())
    }

    /// Receivers a group sender ignored because its set was full
    /// ([`MAX_RECEIVERS`](super::MAX_RECEIVERS)).
    ///
    /// ```
    /// use std::time::Instant;
    /// use conduit_proto::{Config, Sender};
    /// let tx = Sender::new(Config::default(), "[ff02::1234]:7000".parse().unwrap(), Instant::now(), 1)
    ///     .unwrap();
    /// assert_eq!(tx.receivers_ignored(), 0);
    /// ```
    pub fn receivers_ignored(&self) -> u64 {
        self.group.as_ref().map_or(0, |g| g.ignored)
    }

    /// This session's nonce and the receiver's (zero before an accepting reply).
    pub fn nonces(&self) -> ([u8; frame::NONCE_LEN], [u8; frame::NONCE_LEN]) {
        (self.nonce, self.peer_nonce)
    }

    fn check_open(&mut self) -> Result<(), OfferError> {
        match self.state {
            // The end of the position space (2^62 bytes past any initial position): no
            // offer may take the stream near `MAX_POSITION`.
            SenderState::Connected if self.tail >= self.end_of_stream() => Err(OfferError::Failed),
            SenderState::Connected => Ok(()),
            SenderState::Connecting if self.key_mismatch => Err(OfferError::KeyMismatch),
            SenderState::Connecting if self.refused => Err(OfferError::Refused),
            SenderState::Connecting => {
                self.counters.not_connected += 1;
                Err(OfferError::NotConnected)
            }
            SenderState::Closed => Err(OfferError::Closed),
            SenderState::Failed => Err(OfferError::Failed),
        }
    }

    /// Last position at which an offer is taken: one offer (a framed maximum message and a
    /// padding record) and a window past it stay below [`MAX_POSITION`].
    fn end_of_stream(&self) -> u64 {
        MAX_POSITION - 2 * self.log.capacity() as u64
    }

    /// Starts the stream at `position` (a multiple of 8, below 2^62) instead of 0; only
    /// before the first connection. For tests and simulations of streams far into the position
    /// space.
    #[doc(hidden)]
    pub fn set_initial_position(&mut self, position: u64) {
        if self.state == SenderState::Connecting && self.tail == self.flow.acked {
            let position = (position & !7).min(self.end_of_stream());
            self.tail = position;
            self.sent = position;
            self.flow.acked = position;
            self.fragmented.clear();
        }
    }

    /// Makes room for a record of `size` bytes at the tail (padding to the end of the ring when
    /// it would straddle it), or reports back-pressure.
    #[inline]
    fn reserve(&mut self, size: usize) -> Result<(), OfferError> {
        let room = self.log.room_before_end(self.tail);
        let pad = if room < size { room } else { 0 };
        let retained = self.retained_from();
        let capacity = self.log.capacity() as u64;
        if !self
            .flow
            .admits(self.tail, (size + pad) as u64, 0, capacity, retained)
        {
            self.counters.back_pressured += 1;
            return Err(OfferError::BackPressured);
        }
        if pad > 0 {
            self.log
                .write_record(self.tail, frame::REC_PAD, 0, pad - frame::RECORD_HEADER_LEN);
            self.tail += pad as u64;
        }
        Ok(())
    }

    /// Copies a message into the log; returns the new stream position. Messages longer than
    /// one record are fragmented.
    ///
    /// # Errors
    /// [`OfferError::BackPressured`] when the window or log is full (retry later),
    /// [`OfferError::NotConnected`] before the handshake or after the peer went away,
    /// [`OfferError::MessageTooLarge`], [`OfferError::Closed`], [`OfferError::Failed`].
    #[inline]
    pub fn offer(&mut self, type_id: u32, payload: &[u8]) -> Result<u64, OfferError> {
        self.check_open()?;
        let len = payload.len();
        if len <= self.max_record && len <= self.config.max_message_len {
            let size = frame::record_size(len);
            self.reserve(size)?;
            let pos = self.tail;
            self.log
                .write_record(pos, frame::REC_BEGIN | frame::REC_END, type_id, len)
                .copy_from_slice(payload);
            self.tail += size as u64;
        } else {
            self.offer_fragmented(type_id, payload)?;
        }
        self.counters.messages += 1;
        self.counters.bytes += len as u64;
        Ok(self.tail)
    }

    fn offer_fragmented(&mut self, type_id: u32, payload: &[u8]) -> Result<(), OfferError> {
        let len = payload.len();
        if len > self.config.max_message_len {
            return Err(OfferError::MessageTooLarge {
                len,
                max: self.config.max_message_len,
            });
        }
        let framed = self.config.framed_len(len) as u64;
        let slack = (self.max_record + frame::RECORD_HEADER_LEN) as u64;
        let retained = self.retained_from();
        let capacity = self.log.capacity() as u64;
        if !self
            .flow
            .admits(self.tail, framed, slack, capacity, retained)
        {
            self.counters.back_pressured += 1;
            return Err(OfferError::BackPressured);
        }
        let mut off = 0;
        let mut begin = self.tail;
        while off < len {
            let n = self.max_record.min(len - off);
            let mut flags = 0;
            if off == 0 {
                flags |= frame::REC_BEGIN;
            }
            if off + n == len {
                flags |= frame::REC_END;
            }
            let size = frame::record_size(n);
            let room = self.log.room_before_end(self.tail);
            if room < size {
                self.log.write_record(
                    self.tail,
                    frame::REC_PAD,
                    0,
                    room - frame::RECORD_HEADER_LEN,
                );
                self.tail += room as u64;
            }
            let pos = self.tail;
            if off == 0 {
                begin = pos;
            }
            self.log
                .write_record(pos, flags, type_id, n)
                .copy_from_slice(&payload[off..off + n]);
            self.tail += size as u64;
            off += n;
        }
        if self.fragmented.len() == self.fragmented.capacity() {
            self.fragmented.pop_front();
        }
        self.fragmented.push_back((begin, self.tail));
        Ok(())
    }

    /// Oldest position kept for a receiver that joins again: the acknowledged position, or
    /// the beginning of the fragmented message it falls in.
    fn retained_from(&self) -> u64 {
        match self.fragmented.front() {
            Some(&(begin, _)) if begin < self.flow.acked => begin,
            _ => self.flow.acked,
        }
    }

    /// Advances the acknowledged position.
    fn set_acked(&mut self, acked: u64) {
        self.flow.acked = acked;
        self.confirmed = acked;
        while self.fragmented.front().is_some_and(|f| f.1 <= acked) {
            self.fragmented.pop_front();
        }
    }

    /// Claims `len` bytes in the log to fill in place (zero-copy send).
    ///
    /// # Errors
    /// As [`Sender::offer`]; claims are limited to [`Sender::max_claim_len`].
    #[inline]
    pub fn try_claim(
        &mut self,
        type_id: u32,
        len: usize,
    ) -> Result<Claim<&mut Sender>, OfferError> {
        Sender::claim_in(self, type_id, len).map_err(|(_, e)| e)
    }

    /// [`try_claim`](Self::try_claim) through an owner of the sender (`&mut Sender`, a lock
    /// guard, an endpoint): the claim keeps `holder` while it lives and
    /// [`Claim::finish`] hands it back; a refusal hands it back with the error.
    ///
    /// # Errors
    /// As [`Sender::try_claim`].
    #[inline(always)]
    pub fn claim_in<S: BorrowMut<Sender>>(
        mut holder: S,
        type_id: u32,
        len: usize,
    ) -> Result<Claim<S>, (S, OfferError)> {
        let s = holder.borrow_mut();
        if let Err(e) = s.check_open() {
            return Err((holder, e));
        }
        let max = s.max_claim_len();
        if len > max {
            return Err((holder, OfferError::MessageTooLarge { len, max }));
        }
        if let Err(e) = s.reserve(frame::record_size(len)) {
            return Err((holder, e));
        }
        let pos = s.tail;
        s.log
            .write_record(pos, frame::REC_BEGIN | frame::REC_END, type_id, len);
        let offset = s.log.offset(pos);
        Ok(Claim {
            sender: holder,
            offset,
            len,
        })
    }

    /// Closes the stream: a close frame is sent, further offers fail with
    /// [`OfferError::Closed`]. Call after the data is flushed.
    pub fn close(&mut self, _now: Instant) {
        if self.state != SenderState::Closed {
            self.close_pending = self.state == SenderState::Connected;
            self.state = SenderState::Closed;
        }
    }

    /// Next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() < MAX_EVENTS {
            self.events.push_back(e);
        }
    }

    /// When [`Sender::handle_timeout`] and [`Sender::poll_transmit`] next have work on their
    /// own (retransmissions and new data are due as soon as possible: call `poll_transmit`
    /// after every input until it returns `None`).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(g) = &self.group {
            return self.group_timeout(g);
        }
        match self.state {
            SenderState::Connecting => Some(self.next_setup),
            SenderState::Connected => {
                let t = (self.last_heard + self.config.liveness_timeout)
                    .min(self.next_heartbeat)
                    .min(self.next_rtt);
                match self.repair_wait {
                    Some(w) if !self.retransmits.is_empty() => Some(t.min(w)),
                    _ => Some(t),
                }
            }
            SenderState::Failed | SenderState::Closed => None,
        }
    }

    /// Advances timers: liveness of the receiver.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.group.is_some() {
            self.group_handle_timeout(now);
            return;
        }
        if self.state == SenderState::Connected
            && now >= self.last_heard + self.config.liveness_timeout
        {
            self.disconnect(now);
            self.push_event(Event::PeerGone);
        }
    }

    /// The receiver is gone: release everything it did not acknowledge (a dead receiver never
    /// blocks the sender; a receiver that comes back learns of the loss) and handshake again.
    fn disconnect(&mut self, now: Instant) {
        self.state = SenderState::Connecting;
        let confirmed = self.confirmed;
        self.set_acked(self.tail);
        self.confirmed = confirmed;
        self.sent = self.tail;
        self.retransmits.clear();
        self.next_setup = now;
        self.rtt_echo = None;
        self.loss_echo = None;
    }

    /// Handles one datagram from the network.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.counters.datagrams_received += 1;
        let r = if self.hs_keys.is_some() {
            self.handle_keyed(now, from, bytes)
        } else if crypto::is_keyed(bytes) {
            Err(DropReason::Encrypted)
        } else {
            self.handle_inner(now, from, bytes)
        };
        if let Err(reason) = r {
            self.counters.drop(reason);
        }
    }

    /// A keyed sender: opens the datagram, then handles the plain frame. Only a plaintext
    /// key rejection is read unopened, and it changes nothing but the report.
    fn handle_keyed(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), DropReason> {
        if !same_addr(from, self.destination) {
            return Err(DropReason::WrongSource);
        }
        let Some(h) = CryptoHeader::peek(bytes) else {
            if let Ok((r, _)) = frame::SetupReplyPrefix::ref_from_prefix(bytes) {
                let key_reject = frame::FLAG_REJECT | frame::FLAG_KEY;
                if r.header.kind == FrameKind::SETUP_REPLY
                    && r.header.flags.get() & key_reject == key_reject
                    && r.header.session_id.get() == self.session_id
                {
                    self.report_key_mismatch();
                }
            }
            return Err(DropReason::Plaintext);
        };
        let mut buf = std::mem::take(&mut self.open_buf);
        let opened = match h.phase {
            crypto::PHASE_HANDSHAKE => match &self.hs_keys {
                Some(k) => k.open(Some(self.session_id), bytes, buf.as_mut_bytes()),
                None => Err(DropReason::Unexpected),
            },
            _ => match self.session_keys.as_mut() {
                Some(k) => k.open(bytes, buf.as_mut_bytes()),
                None => Err(DropReason::Unexpected),
            },
        };
        let r = match opened {
            Ok(plain) => {
                // The peer has our key: a key rejection before was a corrupted setup.
                self.key_rejects = 0;
                self.handle_inner(now, from, plain)
            }
            Err(e) => Err(e),
        };
        self.open_buf = buf;
        r
    }

    fn report_key_mismatch(&mut self) {
        if self.state != SenderState::Connecting || self.key_mismatch {
            return;
        }
        self.key_rejects += 1;
        if self.key_rejects >= KEY_MISMATCH_EVIDENCE {
            self.key_mismatch = true;
            self.push_event(Event::KeyMismatch);
        }
    }

    fn handle_inner(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), DropReason> {
        let (h, _) = Header::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
        let kind = h.kind;
        if !matches!(
            kind,
            FrameKind::SETUP
                | FrameKind::SETUP_REPLY
                | FrameKind::DATA
                | FrameKind::HEARTBEAT
                | FrameKind::NAK
                | FrameKind::STATUS
                | FrameKind::RTT
                | FrameKind::CLOSE
        ) {
            return Err(DropReason::UnknownType);
        }
        if self.group.is_none() && !same_addr(from, self.destination) {
            return Err(DropReason::WrongSource);
        }
        let checksum_on = self.config.checksum && self.hs_keys.is_none();
        frame::check_header(h, bytes, checksum_on, self.config.stream_id)?;
        if h.session_id.get() != self.session_id {
            return Err(DropReason::WrongSession);
        }
        let flags = h.flags.get();
        if self.group.is_some() {
            return self.handle_group(now, from, h.version, kind, flags, bytes);
        }
        match kind {
            FrameKind::SETUP_REPLY => {
                let r = self.on_reply(now, bytes, flags);
                if r.is_ok() && self.state == SenderState::Connected {
                    // The session's address: only it is answered from now on.
                    self.peer = Some(from);
                }
                r
            }
            FrameKind::STATUS | FrameKind::NAK | FrameKind::RTT | FrameKind::CLOSE => {
                if kind == FrameKind::STATUS && flags & frame::FLAG_NEED_SETUP != 0 {
                    return self.on_need_setup(now, bytes);
                }
                if self.state == SenderState::Connecting && kind == FrameKind::STATUS {
                    // A late status while handshaking: nothing to do.
                    return Ok(());
                }
                if self.state != SenderState::Connected {
                    return Err(DropReason::Unexpected);
                }
                if h.version != self.version {
                    return Err(DropReason::BadVersion);
                }
                // NAKs, status and RTT probes are answered only from the address the
                // receiver replied from (the destination until a reply was accepted).
                if !same_addr(from, self.peer.unwrap_or(self.destination)) {
                    return Err(DropReason::WrongSource);
                }
                match kind {
                    FrameKind::STATUS => self.on_status(now, bytes),
                    FrameKind::NAK => self.on_nak(now, bytes),
                    FrameKind::RTT => self.on_rtt(now, bytes, flags),
                    _ => {
                        // The receiver's final position acknowledges what it took.
                        if let Ok((c, _)) = frame::Close::ref_from_prefix(bytes) {
                            let p = c.position.get();
                            if p > self.confirmed
                                && p <= self.sent
                                && (p == self.sent || self.log.is_record_start(p))
                            {
                                self.confirmed = p;
                            }
                        }
                        self.disconnect(now);
                        self.push_event(Event::Closed);
                        Ok(())
                    }
                }
            }
            _ => Err(DropReason::Unexpected),
        }
    }

    /// Reports what a setup reply refuses: a key mismatch (unauthenticated, plaintext: reported,
    /// nothing changes) or a rejection (MTU or version). `Some(rejected)` when it refused,
    /// `None` for any other reply.
    fn report_refusal(&mut self, p: &frame::SetupReplyPrefix, flags: u16) -> Option<bool> {
        if flags & frame::FLAG_KEY != 0 {
            self.report_key_mismatch();
            return Some(false);
        }
        if flags & frame::FLAG_REJECT == 0 {
            return None;
        }
        if flags & frame::FLAG_MTU != 0 {
            self.push_event(Event::MtuMismatch {
                local: self.config.mtu,
                remote: usize::from(p.mtu.get()),
            });
        } else {
            self.push_event(Event::VersionMismatch {
                local: self.config.versions,
                remote: (p.min_version.get(), p.max_version.get()),
            });
        }
        Some(true)
    }

    fn on_reply(&mut self, now: Instant, bytes: &[u8], flags: u16) -> Result<(), DropReason> {
        let (p, _) =
            frame::SetupReplyPrefix::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
        if self.state != SenderState::Connecting {
            return Err(DropReason::Duplicate);
        }
        let remote = (p.min_version.get(), p.max_version.get());
        if let Some(rejected) = self.report_refusal(p, flags) {
            if rejected {
                self.state = SenderState::Failed;
            }
            return Ok(());
        }
        let (r, _) =
            frame::SetupReply::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
        if flags & frame::FLAG_RETRY != 0 {
            // The receiver wants proof of our address: answer at once with its cookie.
            self.cookie = r.cookie;
            self.next_setup = now;
            return Ok(());
        }
        if flags & frame::FLAG_BUSY != 0 {
            if !self.refused {
                self.refused = true;
                self.refused_backoff = self.config.setup_interval;
                self.push_event(Event::SessionRefused);
            } else {
                self.refused_backoff = (self.refused_backoff * 2)
                    .min(MAX_REFUSED_BACKOFF)
                    .max(self.config.setup_interval);
            }
            self.next_setup = now + self.refused_backoff;
            return Ok(());
        }
        let version = r.version.get();
        if negotiate(self.config.versions, remote) != Some(version) {
            return Err(DropReason::BadVersion);
        }
        let position = r.position.get();
        if position > self.sent {
            return Err(DropReason::OutOfWindow);
        }
        // A receiver that joins again starts at `retained` (a message boundary); one that
        // resumes may be further on.
        let retained = self.retained_from();
        let acked = position.max(retained);
        if acked != retained && acked != self.sent && !self.log.is_record_start(acked) {
            return Err(DropReason::BadLength);
        }
        self.set_acked(acked);
        self.sent = acked;
        self.set_window(r.window.get());
        self.retransmits.clear();
        self.version = version as u8;
        self.receiver_id = r.receiver_id.get();
        if let Some(k) = &self.config.key {
            // The same receiver session resumed keeps its keys (and packet numbers).
            if self.session_keys.is_none() || self.peer_nonce != r.nonce {
                self.session_keys = Some(SessionKeys::new(
                    k,
                    Direction::PubToSub,
                    &self.nonce,
                    &r.nonce,
                    self.session_id,
                ));
            }
        }
        self.peer_nonce = r.nonce;
        self.refused = false;
        self.key_mismatch = false;
        self.key_rejects = 0;
        self.state = SenderState::Connected;
        self.last_heard = now;
        self.next_rtt = now;
        self.next_heartbeat = now + self.config.heartbeat_interval;
        self.push_event(Event::Connected {
            session_id: self.session_id,
            version,
        });
        Ok(())
    }

    fn set_window(&mut self, window: u32) {
        let cap = (self.log.capacity() as u64 - self.framed_max) / 2;
        self.flow.window =
            u64::from(window).clamp(self.config.mtu as u64, cap.max(self.config.mtu as u64));
    }

    fn on_status(&mut self, now: Instant, bytes: &[u8]) -> Result<(), DropReason> {
        let (s, _) = frame::Status::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
        if s.receiver_id.get() != self.receiver_id {
            return Err(DropReason::WrongSession);
        }
        if s.window.get() == 0 {
            // A receiver always has a window (any other value is clamped, see `set_window`).
            return Err(DropReason::BadLength);
        }
        self.counters.status += 1;
        self.last_heard = now;
        let p = s.position.get();
        if p > self.sent {
            return Err(DropReason::OutOfWindow);
        }
        if p < self.flow.acked {
            return Err(DropReason::Duplicate);
        }
        if p > self.flow.acked {
            if p != self.sent && !self.log.is_record_start(p) {
                return Err(DropReason::BadLength);
            }
            self.set_acked(p);
            self.retransmits.release(p);
        }
        self.set_window(s.window.get());
        Ok(())
    }

    /// A receiver that does not know our session (it restarted) saw our data: set it up
    /// again from what is unacknowledged.
    fn on_need_setup(&mut self, now: Instant, bytes: &[u8]) -> Result<(), DropReason> {
        let (s, _) = frame::Status::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
        match self.state {
            SenderState::Connected if s.receiver_id.get() != self.receiver_id => {
                self.state = SenderState::Connecting;
                self.next_setup = now;
                self.retransmits.clear();
                Ok(())
            }
            SenderState::Connected => Err(DropReason::Duplicate),
            _ => Ok(()),
        }
    }

    /// A NAK: queues the ranges it asks for, within what the sender could still have in
    /// flight.
    ///
    /// Each range is clipped to `[acked, sent)` (what was sent and not yet acknowledged; a
    /// range starting beyond `sent` is dropped as [`DropReason::OutOfWindow`]), and one NAK
    /// asks for at most one window in all: the rest is dropped as
    /// [`DropReason::OutOfWindow`]. A range that starts below `acked` asks for released
    /// data: the next heartbeat answers with [`frame::FLAG_LOSS`] and the NAK's nonce, the
    /// receiver's confirmation that the data is gone.
    fn on_nak(&mut self, now: Instant, bytes: &[u8]) -> Result<(), DropReason> {
        let (n, ranges) = frame::nak_ranges(bytes)?;
        self.counters.naks_received += 1;
        self.last_heard = now;
        let mut room = self.flow.window;
        for r in ranges {
            let (from, to) = (r.from.get(), r.to.get());
            if from >= to {
                self.counters.drop(DropReason::BadLength);
                continue;
            }
            if from >= self.sent {
                self.counters.drop(DropReason::OutOfWindow);
                continue;
            }
            let to = to.min(self.sent);
            let mut from = from;
            if from < self.flow.acked {
                // Released: tell the receiver what is still held, echoing its nonce.
                self.heartbeat_now = true;
                let nonce = n.nonce.get();
                if nonce != 0 {
                    self.loss_echo = Some(nonce);
                }
                from = self.flow.acked;
                if from >= to {
                    continue;
                }
            }
            if !self.log.is_record_start(from) {
                self.counters.drop(DropReason::BadLength);
                continue;
            }
            if room == 0 {
                self.counters.drop(DropReason::OutOfWindow);
                continue;
            }
            // `from < sent < 2^63` and `room` is at most a window: no overflow.
            let to = to.min(from + room);
            room -= to - from;
            if !self.retransmits.request(from, to, now) {
                self.counters.drop(DropReason::NakSuppressed);
            } else if let Some(g) = self.group.as_mut() {
                // Echoed to the group: receivers missing the same range hold their NAKs.
                if g.echo.len() < frame::MAX_NAK_RANGES {
                    g.echo.push((from, to));
                }
            }
        }
        Ok(())
    }

    fn on_rtt(&mut self, now: Instant, bytes: &[u8], flags: u16) -> Result<(), DropReason> {
        let (r, _) = frame::Rtt::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
        self.last_heard = now;
        let ts = r.timestamp.get();
        if flags & frame::FLAG_REPLY != 0 {
            self.rtt.sample_echo(now, self.epoch, ts)?;
        } else {
            self.rtt_echo = Some(ts);
        }
        Ok(())
    }

    /// Stream bytes the floor adds to the repair budget per heartbeat interval: an eighth of
    /// the window, at least one MTU (so repair goes on when no new data is sent).
    fn repair_floor(&self) -> u64 {
        (self.flow.window / 8).max(self.config.mtu as u64)
    }

    /// Credits the floor's share of the repair budget for the time since the last credit.
    fn refill_repair(&mut self, now: Instant) {
        let cap = self.flow.window;
        if self.repair_budget >= cap {
            self.repair_budget = cap;
            self.repair_refilled = now;
            return;
        }
        let elapsed = now
            .saturating_duration_since(self.repair_refilled)
            .as_nanos();
        let period = self.config.heartbeat_interval.as_nanos().max(1);
        let credit = elapsed.saturating_mul(u128::from(self.repair_floor())) / period;
        if credit > 0 {
            let credit = u64::try_from(credit).unwrap_or(u64::MAX);
            self.repair_budget = self.repair_budget.saturating_add(credit).min(cap);
            self.repair_refilled = now;
        }
    }

    /// When the floor will have brought the budget to `need` bytes.
    fn repair_ready(&self, need: u64) -> Instant {
        let missing = u128::from(need.saturating_sub(self.repair_budget));
        let period = self.config.heartbeat_interval.as_nanos().max(1);
        let floor = u128::from(self.repair_floor());
        let nanos = (missing * period).div_ceil(floor);
        self.repair_refilled + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Stream bytes the sender may retransmit now (the repair budget, see the module docs of
    /// [`proto`](super)): it starts at one window, every byte of new data sent adds one, a
    /// floor adds an eighth of the window (at least one MTU) per heartbeat interval, and it
    /// never exceeds one window.
    #[doc(hidden)]
    pub fn repair_budget(&self) -> u64 {
        self.repair_budget
    }

    /// How long repeat NAKs of a just-resent range are ignored.
    fn linger(&self) -> Duration {
        match self.rtt.smoothed() {
            Some(s) => s.clamp(Duration::from_micros(20), Duration::from_millis(10)),
            None => Duration::from_micros(500),
        }
    }

    fn header(&self, kind: FrameKind, flags: u16) -> Header {
        frame::header(
            self.version,
            kind,
            flags,
            self.session_id,
            self.config.stream_id,
        )
    }

    /// Writes the next datagrams to send into `buf` (at least the MTU long), if any: up to
    /// `max_datagrams` of one size (the last may be shorter), as many as fit, to send as one
    /// GSO batch ([`Transmit::segment_size`]). With `max_datagrams` 1, one datagram.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        max_datagrams: usize,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        poll_batch(self, now, max_datagrams, buf)
    }

    /// The next frame, built into `mtu - 32` and sealed: setups under the handshake key, the
    /// rest under the session's keys.
    fn keyed_datagram(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let end = buf.len() - crypto::TAG_LEN;
        let len = self.next_datagram(now, &mut buf[crypto::HEADER_LEN..end])?;
        self.seal(buf, len)
    }

    /// Seals the plain frame at `buf[HEADER_LEN..HEADER_LEN + len]`.
    fn seal(&mut self, buf: &mut [u8], len: usize) -> Option<usize> {
        if buf.get(crypto::HEADER_LEN + 1) == Some(&FrameKind::SETUP.0) {
            self.hs_keys.as_ref()?.seal(self.session_id, buf, len)
        } else {
            self.session_keys.as_mut()?.seal(buf, len)
        }
    }

    fn next_datagram(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.unicast_to = None;
        if self.group.is_some() {
            if let Some(len) = self.group_datagram(now, buf) {
                return Some(len);
            }
        }
        match self.state {
            SenderState::Failed => None,
            SenderState::Closed => {
                if self.close_pending {
                    self.close_pending = false;
                    let c = frame::Close {
                        header: self.header(FrameKind::CLOSE, 0),
                        position: U64::new(self.tail),
                    };
                    frame::write(buf, &c)
                } else {
                    None
                }
            }
            SenderState::Connecting => {
                if now < self.next_setup {
                    return None;
                }
                self.next_setup = now
                    + if self.refused {
                        self.refused_backoff
                    } else {
                        self.config.setup_interval
                    };
                let s = self.setup_frame(self.retained_from(), self.cookie);
                frame::write(buf, &s)
            }
            SenderState::Connected => self.connected_datagram(now, buf),
        }
    }

    /// A setup joining at `join` with `cookie`: to the group (zero cookie) or to one
    /// receiver of it by unicast, or to the unicast destination.
    fn setup_frame(&self, join: u64, cookie: [u8; frame::COOKIE_LEN]) -> frame::Setup {
        let (mut lo, hi) = self.config.versions;
        let mut flags = 0;
        if self.group.is_some() {
            // Group frames need version 3: an older receiver gets a clear version rejection.
            lo = lo.max(GROUP_VERSION);
            flags = frame::FLAG_GROUP;
        }
        frame::Setup {
            header: frame::header(
                hi.min(255) as u8,
                FrameKind::SETUP,
                flags,
                self.session_id,
                self.config.stream_id,
            ),
            min_version: U16::new(lo),
            max_version: U16::new(hi),
            mtu: U16::new(self.config.mtu as u16),
            reserved: U16::new(0),
            max_message_len: U32::new(self.config.max_message_len as u32),
            reserved2: U32::new(0),
            join_position: U64::new(join),
            nonce: self.nonce,
            cookie,
        }
    }

    fn connected_datagram(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if let Some(ts) = self.rtt_echo.take() {
            self.unicast_to = self.rtt_echo_to.take();
            let r = frame::Rtt {
                header: self.header(FrameKind::RTT, frame::FLAG_REPLY),
                timestamp: U64::new(ts),
            };
            return frame::write(buf, &r);
        }
        self.repair_wait = None;
        while let Some((from, to)) = self.retransmits.peek() {
            let from = from.max(self.flow.acked);
            let to = to.min(self.sent);
            if from >= to {
                self.retransmits.pop();
                continue;
            }
            // A datagram spans at most an MTU of stream.
            let need = self.config.mtu as u64;
            self.refill_repair(now);
            if self.repair_budget < need {
                self.repair_wait = Some(self.repair_ready(need));
                self.counters.repair_throttled += 1;
                break;
            }
            match self.build_data(buf, from, to, self.sent) {
                Some((len, next)) => {
                    let linger = self.linger();
                    self.retransmits.advance(from, next, now + linger);
                    self.repair_budget = self.repair_budget.saturating_sub(next - from);
                    self.counters.retransmitted += 1;
                    self.counters.retransmitted_bytes += next - from;
                    return Some(len);
                }
                None => self.retransmits.pop(),
            }
        }
        if let Some(len) = self.new_data(now, buf) {
            return Some(len);
        }
        if self.heartbeat_now || now >= self.next_heartbeat {
            self.heartbeat_now = false;
            self.probe = if self.flow.acked < self.sent {
                (self.probe * 2).min(self.config.heartbeat_interval)
            } else {
                self.config.heartbeat_interval
            };
            self.next_heartbeat = now + self.probe;
            self.counters.heartbeats += 1;
            let loss = self.loss_echo.take();
            let flags = if loss.is_some() { frame::FLAG_LOSS } else { 0 };
            let h = frame::Heartbeat {
                header: self.header(FrameKind::HEARTBEAT, flags),
                position: U64::new(self.sent),
                retained_from: U64::new(self.retained_from()),
                nonce: U32::new(loss.unwrap_or(0)),
                reserved: U32::new(0),
            };
            return frame::write(buf, &h);
        }
        if now >= self.next_rtt {
            self.next_rtt = now + self.config.rtt_interval;
            let ts = nanos(now.saturating_duration_since(self.epoch));
            let r = frame::Rtt {
                header: self.header(FrameKind::RTT, 0),
                timestamp: U64::new(ts),
            };
            return frame::write(buf, &r);
        }
        None
    }

    /// The next datagram of unsent data within the flow window, if any.
    fn new_data(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let limit = self.tail.min(self.flow.send_limit());
        if self.sent < limit {
            if let Some((len, next)) = self.build_data(buf, self.sent, limit, limit) {
                // New data earns the same amount of repair (the budget's 1x term).
                self.repair_budget =
                    (self.repair_budget + (next - self.sent)).min(self.flow.window);
                self.sent = next;
                self.probe = self.probe_base();
                self.next_heartbeat = now + self.probe;
                return Some(len);
            }
        }
        None
    }

    /// [`offer`](Self::offer), and when the message is the only thing the sender has to send
    /// (connected; nothing older unsent; no answer, repair, heartbeat or probe waiting) and the
    /// receiver's window admits it, its first datagram, sealed, in `buf`: `Some(len)` beside
    /// the position. This is the datagram [`poll_transmit`](Self::poll_transmit) would return
    /// first; call that afterwards as usual for what is left (the rest of a fragmented message).
    /// With `Some` and [`all_sent`](Self::all_sent), nothing else is due: `poll_transmit` would
    /// return `None`. The offer path of a latency-bound sender, without the transmit loop.
    pub fn offer_and_transmit(
        &mut self,
        now: Instant,
        type_id: u32,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<(u64, Option<usize>), OfferError> {
        let before = self.tail;
        let pos = self.offer(type_id, payload)?;
        Ok((pos, self.transmit_offered(now, before, buf)))
    }

    /// The first datagram of what was offered from position `from` (the position before an
    /// offer or a claim's commit), sealed, in `buf`, when that is all the sender has to send:
    /// connected, nothing older unsent, no answer, repair, heartbeat or probe waiting, and the
    /// receiver's window admits it. `None` otherwise: [`poll_transmit`](Self::poll_transmit)
    /// sends it then, as usual. See [`offer_and_transmit`](Self::offer_and_transmit).
    #[inline]
    pub fn transmit_offered(&mut self, now: Instant, from: u64, buf: &mut [u8]) -> Option<usize> {
        // Nothing before the data (an RTT answer, repairs, a held datagram) and nothing
        // after it (an asked-for heartbeat, an RTT probe) is due.
        let alone = self.state == SenderState::Connected
            && self.sent == from
            && from != self.tail
            && self.rtt_echo.is_none()
            && self.retransmits.is_empty()
            && !self.held.is_some()
            && self
                .group
                .as_ref()
                .is_none_or(|g| g.setups.is_empty() && g.echo.is_empty())
            && !self.heartbeat_now
            && now < self.next_rtt;
        let mtu = self.config.mtu.min(buf.len());
        if !alone || mtu < 64 {
            return None;
        }
        let len = if self.hs_keys.is_some() {
            let end = mtu - crypto::TAG_LEN;
            let len = self.new_data(now, &mut buf[crypto::HEADER_LEN..end])?;
            self.seal(&mut buf[..mtu], len)?
        } else {
            let len = self.new_data(now, &mut buf[..mtu])?;
            frame::seal(&mut buf[..len], self.config.checksum);
            len
        };
        self.counters.datagrams_sent += 1;
        Some(len)
    }

    /// Whether everything offered has been sent at least once.
    pub fn all_sent(&self) -> bool {
        self.sent == self.tail
    }

    /// Tail-loss probe delay after the last data: a few RTTs, at most the heartbeat interval.
    fn probe_base(&self) -> Duration {
        let base = match self.rtt.smoothed() {
            Some(s) => (s * 2).max(self.config.nak_delay * 4),
            None => Duration::from_millis(1),
        };
        base.min(self.config.heartbeat_interval)
    }

    /// Builds a data frame with the records from `from` while they start before `soft_end`,
    /// end by `hard_end` and fit the MTU. Returns its length and the position after it.
    fn build_data(
        &self,
        buf: &mut [u8],
        from: u64,
        soft_end: u64,
        hard_end: u64,
    ) -> Option<(usize, u64)> {
        let mtu = buf.len();
        let off = self.log.offset(from);
        let mut q = from;
        let mut out = frame::DATA_HEADER_LEN;
        // The walk ends at the end of the ring (a record after it is not contiguous with this
        // datagram) and after a padding record, of which only the header is sent.
        let mut walk = Records::in_log(&self.log.bytes()[off..]);
        while q < soft_end {
            let Some(Ok(r)) = walk.next() else {
                break;
            };
            let end = q + r.span();
            let sent = if r.is_padding() {
                frame::RECORD_HEADER_LEN
            } else {
                r.span() as usize
            };
            if out + sent > mtu || end > hard_end {
                break;
            }
            out += sent;
            q = end;
        }
        if q == from {
            return None;
        }
        let d = frame::DataHeader {
            header: self.header(FrameKind::DATA, 0),
            position: U64::new(from),
        };
        frame::write(buf, &d)?;
        let n = out - frame::DATA_HEADER_LEN;
        buf[frame::DATA_HEADER_LEN..out].copy_from_slice(&self.log.bytes()[off..off + n]);
        Some((out, q))
    }
}

impl Batched for Sender {
    fn batch_state(&mut self) -> (usize, &mut Held) {
        (self.config.mtu, &mut self.held)
    }

    /// The next datagram, sealed, and where it goes: the destination, or the receiver a
    /// group's unicast setup answers.
    #[inline]
    fn build_next(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        let len = if self.hs_keys.is_some() {
            self.keyed_datagram(now, buf)?
        } else {
            let len = self.next_datagram(now, buf)?;
            frame::seal(&mut buf[..len], self.config.checksum);
            len
        };
        self.counters.datagrams_sent += 1;
        Some((self.unicast_to.take().unwrap_or(self.destination), len))
    }
}

/// Groups (multicast destination): the receiver set, flow strategies, unicast setups and NAK
/// echoes. See [Groups](super#groups).
impl Sender {
    /// A group's next datagram before the session's own: a unicast setup (answer to a
    /// receiver's challenge or request), then an echo of NAK ranges being repaired.
    fn group_datagram(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if !matches!(self.state, SenderState::Connecting | SenderState::Connected) {
            return None;
        }
        let connected = self.state == SenderState::Connected;
        // A receiver joining a live stream starts at the live position.
        let join = if connected {
            self.live_join_position()
        } else {
            self.retained_from()
        };
        let interval = self.config.setup_interval;
        let g = self.group.as_mut()?;
        if !g.setups.is_empty() && g.may_send_setup(now, interval) {
            let (to, cookie) = g.setups.pop_front()?;
            let s = self.setup_frame(join, cookie);
            self.unicast_to = Some(to);
            return frame::write(buf, &s);
        }
        if !connected || g.echo.is_empty() {
            return None;
        }
        let max = ((buf.len() - size_of::<frame::NakHeader>()) / size_of::<frame::NakRange>())
            .min(frame::MAX_NAK_RANGES);
        let n = g.echo.len().min(max);
        let h = frame::NakHeader {
            header: frame::header(
                self.version,
                FrameKind::NAK,
                frame::FLAG_ECHO,
                self.session_id,
                self.config.stream_id,
            ),
            count: U16::new(n as u16),
            reserved: U16::new(0),
            nonce: U32::new(0),
        };
        let mut len = frame::write(buf, &h)?;
        for &(from, to) in &g.echo[..n] {
            let r = frame::NakRange {
                from: U64::new(from),
                to: U64::new(to),
            };
            len += frame::write(&mut buf[len..], &r)?;
        }
        g.echo.clear();
        Some(len)
    }

    /// Where a receiver joining the live stream starts: what was sent, or the beginning of the
    /// fragmented message that is being sent.
    fn live_join_position(&self) -> u64 {
        match self.fragmented.back() {
            Some(&(begin, end)) if begin < self.sent && self.sent < end => begin,
            _ => self.sent,
        }
    }

    fn group_timeout(&self, g: &Group) -> Option<Instant> {
        let mut expiry = g.next_expiry(self.config.receiver_timeout);
        if let (false, Some(t)) = (g.setups.is_empty(), g.setups_since) {
            // Setups held back by the rate limit go when the interval ends.
            let t = t + self.config.setup_interval;
            expiry = Some(expiry.map_or(t, |e| e.min(t)));
        }
        let t = match self.state {
            SenderState::Connecting => self.next_setup,
            SenderState::Connected => {
                let t = self.next_heartbeat.min(self.next_rtt);
                match self.repair_wait {
                    Some(w) if !self.retransmits.is_empty() => t.min(w),
                    _ => t,
                }
            }
            SenderState::Failed | SenderState::Closed => return None,
        };
        Some(expiry.map_or(t, |e| e.min(t)))
    }

    /// Drops receivers silent past the receiver timeout, and reports them.
    fn group_handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, SenderState::Failed | SenderState::Closed) {
            return;
        }
        let mut gone = Vec::new();
        if let Some(g) = self.group.as_mut() {
            g.expire(now, self.config.receiver_timeout, &mut gone);
        }
        if gone.is_empty() {
            return;
        }
        for m in gone {
            self.member_gone(m, true);
        }
        self.group_changed(now);
    }

    fn handle_group(
        &mut self,
        now: Instant,
        from: SocketAddr,
        version: u8,
        kind: FrameKind,
        flags: u16,
        bytes: &[u8],
    ) -> Result<(), DropReason> {
        match kind {
            FrameKind::SETUP_REPLY => self.on_group_reply(now, from, bytes, flags),
            FrameKind::STATUS if flags & frame::FLAG_NEED_SETUP != 0 => {
                // A receiver without our session (it joined late, lost its setup or
                // restarted): set it up by unicast.
                if let Some(g) = self.group.as_mut() {
                    g.queue_setup(from, [0; frame::COOKIE_LEN]);
                }
                Ok(())
            }
            FrameKind::STATUS | FrameKind::NAK | FrameKind::RTT | FrameKind::CLOSE => {
                if version != self.version {
                    return Err(DropReason::BadVersion);
                }
                let g = self.group.as_mut().ok_or(DropReason::Unexpected)?;
                let Some(m) = g.find(from) else {
                    // Not (or no longer) in the set, e.g. back after the timeout: it joins
                    // again through the handshake, at the live position.
                    if kind != FrameKind::CLOSE {
                        g.queue_setup(from, [0; frame::COOKIE_LEN]);
                    }
                    return Err(DropReason::WrongSource);
                };
                m.last_heard = now;
                match kind {
                    FrameKind::STATUS => self.on_group_status(now, from, bytes),
                    FrameKind::NAK if self.state == SenderState::Connected => {
                        self.on_nak(now, bytes)
                    }
                    FrameKind::NAK => Err(DropReason::Unexpected),
                    FrameKind::RTT => {
                        let r = self.on_rtt(now, bytes, flags);
                        if flags & frame::FLAG_REPLY == 0 && self.rtt_echo.is_some() {
                            self.rtt_echo_to = Some(from);
                        }
                        r
                    }
                    _ => {
                        // Its final position acknowledges what it took (as a status).
                        if let Ok((c, _)) = frame::Close::ref_from_prefix(bytes) {
                            let p = c.position.get();
                            if p <= self.sent
                                && (p <= self.flow.acked
                                    || p == self.sent
                                    || self.log.is_record_start(p))
                            {
                                if let Some(m) = self.group.as_mut().and_then(|g| g.find(from)) {
                                    m.position = m.position.max(p);
                                }
                                self.group_changed(now);
                            }
                        }
                        if let Some(m) = self.group.as_mut().and_then(|g| g.remove(from)) {
                            self.member_gone(m, false);
                        }
                        self.group_changed(now);
                        Ok(())
                    }
                }
            }
            _ => Err(DropReason::Unexpected),
        }
    }

    /// A receiver's answer to a setup: a challenge is answered by unicast; an acceptance adds
    /// it to the set. A rejection by one receiver does not stop the group.
    fn on_group_reply(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        flags: u16,
    ) -> Result<(), DropReason> {
        let (p, _) =
            frame::SetupReplyPrefix::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
        if !matches!(self.state, SenderState::Connecting | SenderState::Connected) {
            return Err(DropReason::Unexpected);
        }
        let remote = (p.min_version.get(), p.max_version.get());
        // A rejection by one receiver does not stop the group.
        if self.report_refusal(p, flags).is_some() {
            return Ok(());
        }
        let (r, _) =
            frame::SetupReply::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
        if flags & frame::FLAG_RETRY != 0 {
            if let Some(g) = self.group.as_mut() {
                g.queue_setup(from, r.cookie);
            }
            return Ok(());
        }
        if flags & frame::FLAG_BUSY != 0 {
            return Err(DropReason::SessionRefused);
        }
        let local = (
            self.config.versions.0.max(GROUP_VERSION),
            self.config.versions.1,
        );
        let version = r.version.get();
        if negotiate(local, remote) != Some(version)
            || (self.version != 0 && version != u16::from(self.version))
        {
            return Err(DropReason::BadVersion);
        }
        let position = r.position.get();
        if position > self.sent {
            return Err(DropReason::OutOfWindow);
        }
        if position > self.flow.acked
            && position != self.sent
            && !self.log.is_record_start(position)
        {
            return Err(DropReason::BadLength);
        }
        let window = self.clamp_window(r.window.get());
        if position < self.flow.acked
            && self.config.flow != FlowStrategy::Max
            && self.log_holds(position)
        {
            // Accepted at an older position than what the others acknowledged since (its
            // acceptance crossed their status): the log still holds the data, so it is
            // taken back rather than lost for this receiver.
            self.flow.acked = position;
        }
        let g = self.group.as_mut().ok_or(DropReason::Unexpected)?;
        let mut m = Member {
            id: r.receiver_id.get(),
            addr: from,
            position: position.max(self.flow.acked),
            window,
            tag: None,
            last_heard: now,
            joined: false,
        };
        let known = g.find(from).copied();
        if let Some(old) = known.filter(|o| o.id == m.id) {
            // The same receiver answering again: keep what its status said.
            m.tag = old.tag;
            m.position = m.position.max(old.position);
            m.joined = old.joined;
        }
        // It is reported joined with its first status (see `on_group_status`).
        match g.upsert(m) {
            Err(()) => return Ok(()),
            Ok(Some(old)) if old.id != m.id => self.member_gone(old, false),
            Ok(_) => {}
        }
        self.version = version as u8;
        self.group_changed(now);
        Ok(())
    }

    /// A receiver's status: its position, window and tag.
    fn on_group_status(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), DropReason> {
        let (s, _) = frame::Status::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
        let tag = frame::StatusV3::ref_from_prefix(bytes)
            .ok()
            .and_then(|(v3, _)| {
                (v3.status_flags.get() & frame::STATUS_TAGGED != 0).then_some(v3.tag.get())
            });
        if s.window.get() == 0 {
            return Err(DropReason::BadLength);
        }
        let p = s.position.get();
        let (sent, acked) = (self.sent, self.flow.acked);
        if p > sent {
            return Err(DropReason::OutOfWindow);
        }
        if p > acked && p != sent && !self.log.is_record_start(p) {
            return Err(DropReason::BadLength);
        }
        let window = self.clamp_window(s.window.get());
        let m = self
            .group
            .as_mut()
            .and_then(|g| g.find(from))
            .ok_or(DropReason::WrongSource)?;
        if m.id != s.receiver_id.get() {
            return Err(DropReason::WrongSession);
        }
        self.counters.status += 1;
        m.window = window;
        m.tag = tag;
        m.position = m.position.max(p);
        if !m.joined {
            m.joined = true;
            let (receiver_id, addr) = (m.id, m.addr);
            self.push_event(Event::ReceiverJoined {
                receiver_id,
                addr,
                tag,
            });
        }
        self.group_changed(now);
        Ok(())
    }

    /// Reports a member that left the set, if it was reported joined.
    fn member_gone(&mut self, m: Member, timed_out: bool) {
        if m.joined {
            self.push_event(Event::ReceiverGone {
                receiver_id: m.id,
                addr: m.addr,
                timed_out,
            });
        }
    }

    /// The receiver set changed: recompute the flow bound, connect or disconnect.
    fn group_changed(&mut self, now: Instant) {
        let Some(g) = self.group.as_ref() else {
            return;
        };
        let (ready, bound) = g.tally(self.config.flow);
        match self.state {
            SenderState::Connecting if ready => {
                self.state = SenderState::Connected;
                self.refused = false;
                self.last_heard = now;
                self.next_rtt = now;
                self.next_heartbeat = now + self.config.heartbeat_interval;
                self.push_event(Event::Connected {
                    session_id: self.session_id,
                    version: u16::from(self.version),
                });
            }
            SenderState::Connected if !ready => {
                // Not enough receivers count any more: like a unicast peer gone, nothing
                // is held for them; setups to the group go out again.
                self.disconnect(now);
                self.push_event(Event::PeerGone);
                return;
            }
            _ => {}
        }
        if let Some((acked, limit)) = bound {
            if acked > self.flow.acked && acked <= self.sent {
                self.set_acked(acked);
                self.retransmits.release(acked);
            }
            let window = limit.saturating_sub(self.flow.acked);
            self.flow.window = self.clamp_window(u32::try_from(window).unwrap_or(u32::MAX));
        }
    }

    /// Whether the log still holds the records from `position` (released or not) to the
    /// tail, and a record starts there.
    fn log_holds(&self, position: u64) -> bool {
        position <= self.sent
            && self.tail - position + self.framed_max <= self.log.capacity() as u64
            && (position == self.sent || self.log.is_record_start(position))
    }

    /// A receiver's window as the sender adopts it (see `set_window`).
    fn clamp_window(&self, window: u32) -> u64 {
        let cap = (self.log.capacity() as u64 - self.framed_max) / 2;
        let mtu = self.config.mtu as u64;
        u64::from(window).clamp(mtu, cap.max(mtu))
    }
}
