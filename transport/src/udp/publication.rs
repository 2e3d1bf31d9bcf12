//! The sending end of a UDP channel: a protocol [`Sender`] on the endpoint core, with offers
//! and claims.

use std::borrow::{Borrow, BorrowMut};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::proto::{self, Event, OfferError, Sender, SenderState};
use crate::receiver_event::ReceiverEvents;
use crate::uri::ChannelUri;
use crate::{Counters, Error, ReceiverEvent};

use super::endpoint::{Core, End, EndStats, Endpoint, Hold};
use super::options::{tx_slots, UdpOptions};
use super::seed;

/// The offer fast path reads the socket at least every this many sends...
const RECV_EVERY: u32 = 16;
/// ...and at least this often.
const RECV_INTERVAL: Duration = Duration::from_micros(50);
/// With `linger`, offers read the clock for the first this many messages of
/// a batch (sparse offers are sent on time), then every this many (a dense
/// stream does not pay a clock read per message; it fills datagrams anyway).
const CLOCK_EVERY: u32 = 16;

/// Whether a refused offer is worth one more try after `progress` (status,
/// handshake): back-pressure, a connection not yet made, a refusal or a key
/// mismatch may clear when the receiver's answers are read. Offers and
/// claims follow this one rule.
#[inline(always)]
fn progress_may_clear(e: OfferError) -> bool {
    matches!(
        e,
        OfferError::BackPressured
            | OfferError::NotConnected
            | OfferError::Refused
            | OfferError::KeyMismatch
    )
}

/// The protocol sender and the publication's batching and pacing state.
pub(crate) struct PubEnd {
    sender: Sender,
    /// Sticky error from an event (version or MTU mismatch).
    failure: Option<Error>,
    /// A group's receiver events for `poll_receiver_event` (bounded).
    receiver_events: ReceiverEvents,
    /// Bytes offered since the last transmit (linger accounting).
    unsent: usize,
    /// With `linger`: send once this many bytes are waiting.
    batch_bytes: usize,
    /// Offers since the last transmit (linger clock pacing).
    offers_since_transmit: u32,
    last_transmit: Instant,
    /// When the offer fast path reads the socket next, at the latest.
    next_recv: Instant,
    sends_since_recv: u32,
}

impl End for PubEnd {
    const THREAD: &'static str = "conduit-udp-pub";

    #[inline(always)]
    fn poll_transmit(
        &mut self,
        now: Instant,
        max_datagrams: usize,
        buf: &mut [u8],
    ) -> Option<proto::Transmit> {
        self.sender.poll_transmit(now, max_datagrams, buf)
    }

    fn proto_counters(&self) -> proto::Counters {
        self.sender.counters().clone()
    }

    fn counters(&self, base: Counters) -> Counters {
        let c = self.sender.counters();
        Counters {
            sent: c.messages,
            retransmitted: c.retransmitted,
            naks_received: c.naks_received,
            receiver_events_dropped: self.receiver_events.dropped,
            ..base
        }
    }

    fn thread_period(opts: &UdpOptions) -> Option<Duration> {
        if !opts.thread {
            return None;
        }
        // Often enough for heartbeats, and for the tail of a lingering
        // batch to leave within about `linger`.
        let mut period = (opts.proto.heartbeat_interval / 4).min(Duration::from_millis(1));
        if !opts.linger.is_zero() {
            period = period.min(opts.linger);
        }
        Some(period.max(Duration::from_micros(20)))
    }

    fn step(core: &mut Core<Self>, now: Instant) {
        let period = Self::thread_period(&core.opts).unwrap_or_default();
        // While the application is offering, leave the batching to it; step
        // in when it went quiet.
        if now.duration_since(core.end.last_transmit) >= period {
            core.progress(now);
        }
    }

    fn close(core: &mut Core<Self>, now: Instant) {
        core.end.sender.close(now);
        core.transmit(now);
    }

    fn stats(&self) -> EndStats {
        let s = &self.sender;
        EndStats {
            messages: s.counters().messages,
            position: s.position(),
            peer_position: s.acked_position(),
            rtt: s.rtt(),
            sessions: s.is_connected() as u64,
        }
    }
}

impl Core<PubEnd> {
    /// Receives, runs timers, sends what is due and handles events.
    fn progress(&mut self, now: Instant) {
        self.receive(now);
        self.progress_send(now);
    }

    /// Takes in status messages, NAKs and RTT replies.
    fn receive(&mut self, now: Instant) {
        let Core { end, driver, .. } = self;
        let sender = &mut end.sender;
        let _ = super::driver::Driver::recv(
            driver,
            super::driver::Wait::NoWait,
            usize::MAX,
            |from, bytes| {
                sender.handle_datagram(now, from, bytes);
            },
        );
        self.end.next_recv = now + RECV_INTERVAL;
        self.end.sends_since_recv = 0;
    }

    /// Progress without reading the socket (the offer fast path): timers,
    /// transmit, events. The socket is still read every
    /// [`RECV_EVERY`] offers or [`RECV_INTERVAL`].
    fn progress_send(&mut self, now: Instant) {
        let sender = &mut self.end.sender;
        if sender.poll_timeout().is_some_and(|t| t <= now) {
            sender.handle_timeout(now);
        }
        self.send_due(now);
    }

    /// [`progress_send`](Self::progress_send) after the timers were run
    /// for `now` (an offer's [`clock`](Self::clock)).
    // Inlined: it is open across a system call (see "The latency path"
    // in the `udp` module docs).
    #[inline(always)]
    fn send_due(&mut self, now: Instant) {
        // Send first (the latency path), then read the socket if it is time.
        self.transmit(now);
        self.after_send(now);
    }

    /// What follows a transmit: read the socket when it is time, answer
    /// what came in, take the sender's events.
    #[inline(always)]
    fn after_send(&mut self, now: Instant) {
        self.end.sends_since_recv += 1;
        if self.end.sends_since_recv >= RECV_EVERY || now >= self.end.next_recv {
            self.receive(now);
            // Answer what came in (retransmissions for NAKs, RTT replies).
            self.transmit(now);
        }
        let end = &mut self.end;
        while let Some(e) = end.sender.poll_event() {
            match e {
                Event::VersionMismatch { local, remote } => {
                    end.failure = Some(Error::VersionMismatch { local, remote });
                }
                Event::MtuMismatch { local, remote } => {
                    end.failure = Some(Error::MtuMismatch { local, remote });
                }
                Event::ReceiverJoined { .. } | Event::ReceiverGone { .. } => {
                    if let Some(r) = ReceiverEvent::from_proto(&e) {
                        end.receiver_events.push(r);
                    }
                }
                _ => {}
            }
        }
        end.unsent = 0;
        end.offers_since_transmit = 0;
        end.last_transmit = now;
    }

    fn map(&self, e: OfferError) -> Error {
        match e {
            OfferError::BackPressured => Error::BackPressured,
            OfferError::NotConnected => Error::NotConnected,
            OfferError::MessageTooLarge { len, max } => Error::MessageTooLarge { len, max },
            OfferError::Closed => Error::Closed,
            OfferError::Refused => Error::SessionRefused,
            OfferError::KeyMismatch => Error::KeyMismatch,
            OfferError::Failed => match &self.end.failure {
                Some(Error::VersionMismatch { local, remote }) => Error::VersionMismatch {
                    local: *local,
                    remote: *remote,
                },
                Some(Error::MtuMismatch { local, remote }) => Error::MtuMismatch {
                    local: *local,
                    remote: *remote,
                },
                _ => Error::PeerGone,
            },
        }
    }

    /// Runs the timers that are due, after taking in what waits in the
    /// socket (a status that arrived while the application was idle must
    /// count before the receiver's liveness is judged).
    fn due_timers(&mut self, now: Instant) {
        if self.end.sender.poll_timeout().is_some_and(|t| t <= now) {
            self.receive(now);
            if self.end.sender.poll_timeout().is_some_and(|t| t <= now) {
                self.end.sender.handle_timeout(now);
            }
        }
    }

    /// The clock read of an offer or claim of `len` bytes, and its timers, before the
    /// message is accepted: a call that runs the timers runs them *before*, so a receiver
    /// found gone (liveness) refuses it with NotConnected rather than the stream taking it
    /// and then releasing it unsent.
    ///
    /// Without `linger` the clock is always read. With it, the clock is read for the first
    /// offers of a batch, then every CLOCK_EVERY offers, and for the offer that fills a
    /// batch; `None` when it is not read.
    #[inline(always)]
    fn clock(&mut self, len: usize) -> Option<Instant> {
        let now = if self.opts.linger.is_zero() {
            Some(Instant::now())
        } else {
            let n = self.end.offers_since_transmit + 1;
            let fills = self.end.unsent + len + 8 >= self.end.batch_bytes;
            (fills || n <= CLOCK_EVERY || n % CLOCK_EVERY == 0).then(Instant::now)
        };
        if let Some(now) = now {
            self.due_timers(now);
        }
        now
    }

    /// Sends what an accepted offer or commit of `len` bytes makes due: `before` is the
    /// stream position before it, `now` the clock read of [`clock`](Self::clock).
    ///
    /// Without `linger` the message leaves at once: when it is all the sender has to send
    /// (the latency case), the sender builds its datagram and it goes out without the
    /// general transmit loop; otherwise the loop sends what is due. With `linger`, it waits
    /// until a batch fills or `linger` passed (a background thread, when present, sends
    /// what lingers).
    // Inlined: it is open across a system call (see "The latency path"
    // in the `udp` module docs).
    #[inline(always)]
    fn offered(&mut self, now: Option<Instant>, before: u64, len: usize) {
        if self.opts.linger.is_zero() {
            let now = now.unwrap_or_else(Instant::now);
            let mtu = self.opts.proto.mtu;
            let Core { end, txbuf, .. } = self;
            match end.sender.transmit_offered(now, before, &mut txbuf[..mtu]) {
                Some(len) => {
                    let dest = self.end.sender.destination();
                    self.send_one(dest, len);
                    // The rest of a fragmented message, if any.
                    if !self.end.sender.all_sent() {
                        self.transmit(now);
                    }
                    self.after_send(now);
                }
                None => self.send_due(now),
            }
            return;
        }
        let n = self.end.offers_since_transmit + 1;
        self.end.unsent += len + 8;
        match now {
            // The timers ran for `now` in `clock`.
            Some(now) if self.end.unsent >= self.end.batch_bytes => self.send_due(now),
            Some(now) => {
                self.end.offers_since_transmit = n;
                if now.duration_since(self.end.last_transmit) >= self.opts.linger {
                    self.send_due(now);
                }
            }
            // No clock read: a background thread, when present, sends what lingers.
            None => self.end.offers_since_transmit = n,
        }
    }

    // Inlined: it is open across a system call (see "The latency path"
    // in the `udp` module docs).
    #[inline(always)]
    fn offer(&mut self, type_id: u32, payload: &[u8]) -> Result<u64, Error> {
        let now = self.clock(payload.len());
        let before = self.end.sender.position();
        let r = match self.end.sender.offer(type_id, payload) {
            Err(e) if progress_may_clear(e) => {
                // Make progress (status, handshake), then try once more.
                self.progress(now.unwrap_or_else(Instant::now));
                let before = self.end.sender.position();
                self.end.sender.offer(type_id, payload).map(|p| (p, before))
            }
            r => r.map(|p| (p, before)),
        };
        let (pos, before) = r.map_err(|e| self.map(e))?;
        self.offered(now, before, payload.len());
        Ok(pos)
    }

    fn flush(&mut self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            self.progress(now);
            let sender = &self.end.sender;
            match sender.state() {
                SenderState::Connected => {
                    if sender.is_flushed() {
                        return Ok(());
                    }
                }
                // Not acknowledged by a receiver of this session: never Ok.
                SenderState::Connecting if sender.is_key_mismatch() => {
                    return Err(Error::KeyMismatch)
                }
                SenderState::Connecting if sender.is_refused() => {
                    return Err(Error::SessionRefused)
                }
                // The subscriber acknowledged everything, then closed or went away.
                SenderState::Connecting if sender.is_delivered() => return Ok(()),
                SenderState::Connecting => return Err(Error::NotConnected),
                SenderState::Closed => return Err(Error::Closed),
                SenderState::Failed => return Err(self.map(OfferError::Failed)),
            }
            if now >= deadline {
                return Err(Error::TimedOut);
            }
            std::hint::spin_loop();
        }
    }
}

/// The sending end of a `udp://HOST:PORT` channel.
///
/// Progress (handshake, heartbeats, status, NAK repair, liveness) happens
/// inside [`offer`](Self::offer), [`is_connected`](Self::is_connected) and
/// [`flush`](Self::flush); with `progress=thread` a background thread also
/// drives it every heartbeat/4 (at least every 1 ms) for idle applications.
pub(crate) struct UdpPublication {
    ep: Endpoint<PubEnd>,
    max_message_len: usize,
    max_claim_len: usize,
    /// The bytes of an [`offer_with`](Self::offer_with) too long for one claim.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for UdpPublication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpPublication").finish_non_exhaustive()
    }
}

impl UdpPublication {
    /// Opens a publication from a parsed URI.
    ///
    /// # Errors
    /// [`Error::InvalidUri`] for bad options, [`Error::Io`] for socket or
    /// io_uring setup failures.
    pub(crate) fn open(uri: ChannelUri) -> Result<UdpPublication, Error> {
        let opts = UdpOptions::from_uri(uri)?;
        let bind = opts.bind.unwrap_or_else(|| {
            if opts.addr.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            }
        });
        let mtu = opts.proto.mtu;
        // A group is not connected to: the receivers answer from their own
        // unicast addresses.
        let peer = Some(opts.addr).filter(|a| !a.ip().is_multicast());
        let ep = Endpoint::open(opts, bind, peer, tx_slots(mtu) * mtu, |opts, now| {
            let sender = Sender::with_os_random(opts.proto.clone(), opts.addr, now, seed())
                .map_err(Error::InvalidArgument)?;
            Ok(PubEnd {
                sender,
                failure: None,
                receiver_events: ReceiverEvents::default(),
                unsent: 0,
                offers_since_transmit: 0,
                // A GSO batch's worth, within a quarter of the window.
                batch_bytes: (tx_slots(mtu) * mtu)
                    .min(opts.proto.window / 4)
                    .min(super::driver::MAX_UDP_PAYLOAD),
                last_transmit: now,
                next_recv: now,
                sends_since_recv: 0,
            })
        })?;
        let mut p = UdpPublication {
            ep,
            max_message_len: 0,
            max_claim_len: 0,
            scratch: Vec::new(),
        };
        (p.max_message_len, p.max_claim_len) = p.ep.with(|c| {
            // Start the handshake at once.
            c.progress(Instant::now());
            (c.end.sender.max_message_len(), c.end.sender.max_claim_len())
        });
        Ok(p)
    }

    /// Copies a message into the stream and sends what is due.
    ///
    /// # Errors
    /// [`Error::BackPressured`] (window full: retry), [`Error::NotConnected`]
    /// (no subscriber yet, or it went away), [`Error::SessionRefused`] (the
    /// subscription serves another live publisher; retry later),
    /// [`Error::MessageTooLarge`], [`Error::Closed`], [`Error::VersionMismatch`],
    /// [`Error::MtuMismatch`].
    // Out of line, as `UdpSubscription::poll` is.
    #[inline(never)]
    pub(crate) fn offer(&mut self, type_id: u32, payload: &[u8]) -> Result<u64, Error> {
        self.ep.with(|c| c.offer(type_id, payload))
    }

    /// Reserves `len` bytes for a message in the sender's log, where the
    /// datagrams are built from; [`UdpClaim::commit`] publishes it and sends
    /// what is due. At most [`max_claim_len`](Self::max_claim_len) bytes (one
    /// record: claims are not fragmented). The claim holds the core while it
    /// lives; with a progress thread, the thread pauses meanwhile.
    ///
    /// # Errors
    /// As [`offer`](Self::offer): [`Error::BackPressured`],
    /// [`Error::NotConnected`], [`Error::MessageTooLarge`] beyond one record, ...
    #[inline(always)]
    pub(crate) fn try_claim(&mut self, type_id: u32, len: usize) -> Result<UdpClaim<'_>, Error> {
        let mut hold = self.ep.hold();
        let now = hold.clock(len);
        let before = hold.end.sender.position();
        let claim = match Sender::claim_in(SenderHold(hold), type_id, len) {
            Ok(claim) => UdpClaim { claim, now, before },
            Err((SenderHold(mut hold), e)) if progress_may_clear(e) => {
                // Make progress (status, handshake), then try once more.
                hold.progress(now.unwrap_or_else(Instant::now));
                let before = hold.end.sender.position();
                match Sender::claim_in(SenderHold(hold), type_id, len) {
                    Ok(claim) => UdpClaim { claim, now, before },
                    Err((SenderHold(hold), e)) => return Err(hold.map(e)),
                }
            }
            Err((SenderHold(hold), e)) => return Err(hold.map(e)),
        };
        Ok(claim)
    }

    /// Writes a message of `len` bytes with `fill` and publishes it: in
    /// place through a claim up to [`max_claim_len`](Self::max_claim_len),
    /// through a scratch buffer and [`offer`](Self::offer) beyond.
    ///
    /// # Errors
    /// As [`offer`](Self::offer); `fill` is not called then.
    #[inline(always)]
    pub(crate) fn offer_with<F: FnOnce(&mut [u8])>(
        &mut self,
        type_id: u32,
        len: usize,
        fill: F,
    ) -> Result<u64, Error> {
        if len <= self.max_claim_len {
            let mut claim = self.try_claim(type_id, len)?;
            fill(claim.as_mut_slice());
            return Ok(claim.commit());
        }
        if len > self.max_message_len {
            return Err(Error::MessageTooLarge {
                len,
                max: self.max_message_len,
            });
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.resize(len, 0);
        fill(&mut scratch);
        let r = self.offer(type_id, &scratch);
        self.scratch = scratch;
        r
    }

    /// True while the subscriber is live. Drives progress. False while the
    /// subscription refuses this publication (see [`Error::SessionRefused`],
    /// which `offer` and `flush` report).
    pub(crate) fn is_connected(&mut self) -> bool {
        self.ep.with(|c| {
            c.progress(Instant::now());
            c.end.sender.is_connected()
        })
    }

    /// Subscribers: to a group, the receivers in the sender's set; to one
    /// host, 1 while it is connected. Drives progress.
    pub(crate) fn subscriber_count(&mut self) -> usize {
        self.ep.with(|c| {
            c.progress(Instant::now());
            let s = &c.end.sender;
            if s.is_group() {
                s.receivers()
            } else {
                usize::from(s.is_connected())
            }
        })
    }

    /// The next receiver event of a group publication; drives progress when
    /// none is queued.
    pub(crate) fn poll_receiver_event(&mut self) -> Option<ReceiverEvent> {
        self.ep.with(|c| {
            if c.end.receiver_events.is_empty() {
                c.progress(Instant::now());
            }
            c.end.receiver_events.pop()
        })
    }

    /// Drives progress until the subscriber of this publication's session
    /// has acknowledged every offered message (also when it closed or went
    /// away after that). Returns `Ok` only then: at once with an error when
    /// no subscriber is connected and something offered is unacknowledged.
    ///
    /// # Errors
    /// [`Error::NotConnected`] (no subscriber, or it went away: what it did
    /// not acknowledge is not known to be delivered), [`Error::SessionRefused`]
    /// (another live publisher owns the subscription), [`Error::TimedOut`],
    /// [`Error::Closed`], [`Error::PeerGone`], [`Error::VersionMismatch`],
    /// [`Error::MtuMismatch`].
    pub(crate) fn flush(&mut self, timeout: Duration) -> Result<(), Error> {
        self.ep.with(|c| c.flush(timeout))
    }

    /// Largest message accepted.
    pub(crate) fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// Counters: messages sent, retransmissions, NAKs, drops by reason, driver.
    pub(crate) fn counters(&self) -> Counters {
        self.ep.counters()
    }

    /// Takes this handle's slot in the counters file.
    pub(crate) fn attach_stats(&mut self, uri: &str) {
        self.ep
            .attach_stats(conduit_counters::KIND_UDP_PUBLICATION, uri);
    }

    /// Largest claim: one record's payload.
    #[cfg(test)]
    pub(crate) fn max_claim_len(&self) -> usize {
        self.max_claim_len
    }
}

/// The publication's core, held by a claim: the claim's sender.
#[derive(Debug)]
pub(crate) struct SenderHold<'a>(Hold<'a, Core<PubEnd>>);

impl Borrow<Sender> for SenderHold<'_> {
    #[inline(always)]
    fn borrow(&self) -> &Sender {
        &self.0.end.sender
    }
}

impl BorrowMut<Sender> for SenderHold<'_> {
    #[inline(always)]
    fn borrow_mut(&mut self) -> &mut Sender {
        &mut self.0.end.sender
    }
}

/// A message being written in place, in the sender's log where its
/// datagram is built from; [`commit`](Self::commit) publishes it and sends
/// what is due, dropping it aborts. The claim holds the publication's core
/// while it lives (with `progress=thread`, the thread pauses meanwhile), so
/// the room it reserved stays reserved and the commit cannot fail.
pub(crate) struct UdpClaim<'a> {
    claim: proto::Claim<SenderHold<'a>>,
    /// The clock read of [`Core::clock`] for this message.
    now: Option<Instant>,
    /// The stream position before the claim.
    before: u64,
}

impl std::fmt::Debug for UdpClaim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpClaim")
            .field("len", &self.claim.len())
            .finish()
    }
}

impl UdpClaim<'_> {
    /// The writable payload.
    #[inline(always)]
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        self.claim.as_mut_slice()
    }

    /// The payload.
    #[inline(always)]
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.claim.as_slice()
    }

    /// Publishes the message and sends what is due; returns the stream
    /// position after it.
    #[inline(always)]
    pub(crate) fn commit(self) -> u64 {
        let UdpClaim { claim, now, before } = self;
        let len = claim.len();
        let (pos, SenderHold(mut core)) = claim.finish();
        core.offered(now, before, len);
        pos
    }

    /// Drops the claim without publishing.
    pub(crate) fn abort(self) {}
}
