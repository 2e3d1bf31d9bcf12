//! The sending end of a UDP channel: a protocol [`Sender`] plus a driver.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::proto::{Event, OfferError, Sender, SenderState};
use crate::uri::ChannelUri;
use crate::{Counters, Error};

use super::driver::{open_driver, AnyDriver, Driver, Transmit, Wait, MAX_UDP_PAYLOAD};
use super::options::{tx_slots, UdpOptions};
use super::progress::Progress;
use super::seed;

/// Most datagrams sent per progress call, so an offer's work stays bounded.
const MAX_DATAGRAMS_PER_PROGRESS: usize = 512;
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

/// The protocol sender, its driver and send staging.
pub(crate) struct PubCore {
    sender: Sender,
    driver: AnyDriver,
    opts: UdpOptions,
    /// Staging for outgoing datagrams: `slots` × `mtu`.
    txbuf: Vec<u8>,
    /// (destination, offset, len) of staged datagrams.
    staged: Vec<(SocketAddr, usize, usize)>,
    /// Sticky error from an event (version mismatch).
    failure: Option<Error>,
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
    send_errors: u64,
    /// Committed claims the stream refused (connection lost in between).
    claims_lost: u64,
    io_error: Option<std::io::Error>,
}

impl PubCore {
    /// Receives, runs timers, sends what is due and handles events.
    fn progress(&mut self, now: Instant) {
        self.receive(now);
        self.progress_send(now);
    }

    /// Takes in status messages, NAKs and RTT replies.
    fn receive(&mut self, now: Instant) {
        let PubCore { sender, driver, .. } = self;
        let _ = driver.recv(Wait::NoWait, usize::MAX, |from, bytes| {
            sender.handle_datagram(now, from, bytes);
        });
        self.next_recv = now + RECV_INTERVAL;
        self.sends_since_recv = 0;
    }

    /// Progress without reading the socket (the offer fast path): timers,
    /// transmit, events. The socket is still read every
    /// [`RECV_EVERY`] offers or [`RECV_INTERVAL`].
    fn progress_send(&mut self, now: Instant) {
        let sender = &mut self.sender;
        if sender.poll_timeout().is_some_and(|t| t <= now) {
            sender.handle_timeout(now);
        }
        self.send_due(now);
    }

    /// [`progress_send`](Self::progress_send) after the timers were run
    /// for `now` (an offer's [`due_timers`](Self::due_timers)).
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
        self.sends_since_recv += 1;
        if self.sends_since_recv >= RECV_EVERY || now >= self.next_recv {
            self.receive(now);
            // Answer what came in (retransmissions for NAKs, RTT replies).
            self.transmit(now);
        }
        while let Some(e) = self.sender.poll_event() {
            match e {
                Event::VersionMismatch { local, remote } => {
                    self.failure = Some(Error::VersionMismatch { local, remote });
                }
                Event::MtuMismatch { local, remote } => {
                    self.failure = Some(Error::MtuMismatch { local, remote });
                }
                _ => {}
            }
        }
        self.unsent = 0;
        self.offers_since_transmit = 0;
        self.last_transmit = now;
    }

    /// Drains `poll_transmit` into batches (GSO super-datagrams where
    /// consecutive datagrams have the same size) and sends them.
    // Inlined: it is open across a system call (see "The latency path"
    // in the `udp` module docs).
    #[inline(always)]
    fn transmit(&mut self, now: Instant) {
        let mtu = self.opts.proto.mtu;
        let slots = self.txbuf.len() / mtu;
        let max_segs = self.driver.max_segments();
        let mut total = 0;
        loop {
            self.staged.clear();
            let mut off = 0;
            // Whether the sender has nothing more to send (or the staging
            // filled up and it must be asked again).
            let mut drained = false;
            while self.staged.len() < slots {
                let Some(t) = self
                    .sender
                    .poll_transmit(now, &mut self.txbuf[off..off + mtu])
                else {
                    drained = true;
                    break;
                };
                self.staged.push((t.destination, off, t.len));
                off += t.len;
            }
            if self.staged.is_empty() {
                return;
            }
            total += self.staged.len();
            // The latency path: one datagram, no batch to build.
            let single;
            let mut built;
            let batch: &[Transmit<'_>] = if let [(dest, start, len)] = self.staged[..] {
                single = [Transmit {
                    dest,
                    contents: &self.txbuf[start..start + len],
                    segment_size: len,
                }];
                &single
            } else {
                built = Vec::with_capacity(self.staged.len());
                let mut i = 0;
                while i < self.staged.len() {
                    let (dest, start, seg) = self.staged[i];
                    let mut end = start + seg;
                    let mut j = i + 1;
                    if max_segs > 1 {
                        while j < self.staged.len() && j - i < max_segs {
                            let (d2, s2, l2) = self.staged[j];
                            if d2 != dest
                                || s2 != end
                                || l2 > seg
                                || end + l2 - start > MAX_UDP_PAYLOAD
                            {
                                break;
                            }
                            end += l2;
                            j += 1;
                            if l2 < seg {
                                break;
                            }
                        }
                    }
                    built.push(Transmit {
                        dest,
                        contents: &self.txbuf[start..end],
                        segment_size: seg,
                    });
                    i = j;
                }
                &built
            };
            let mut sent = 0;
            while sent < batch.len() {
                match self.driver.send(&batch[sent..]) {
                    Ok(0) => break,
                    Ok(k) => sent += k,
                    Err(e) => {
                        // The datagrams are lost like on the wire; the
                        // protocol repairs them. Keep the error for counters
                        // (the lost datagrams are counted below).
                        self.io_error = Some(e);
                        break;
                    }
                }
            }
            if sent < batch.len() {
                self.send_errors += (batch.len() - sent) as u64;
            }
            // Sending changes nothing the sender would answer with more.
            if drained || total >= MAX_DATAGRAMS_PER_PROGRESS {
                return;
            }
        }
    }

    /// Sends the datagram the sender built in `txbuf[..len]` (see
    /// [`offer_now`](Self::offer_now)); a datagram that cannot go is lost
    /// like on the wire and counted.
    // Inlined: it is open across a system call (see "The latency path"
    // in the `udp` module docs).
    #[inline(always)]
    fn send_built(&mut self, len: usize) {
        let tx = [Transmit {
            dest: self.sender.destination(),
            contents: &self.txbuf[..len],
            segment_size: len,
        }];
        match self.driver.send(&tx) {
            Ok(1) => {}
            Ok(_) => self.send_errors += 1,
            Err(e) => {
                self.send_errors += 1;
                self.io_error = Some(e);
            }
        }
    }

    fn map(&self, e: OfferError) -> Error {
        match e {
            OfferError::BackPressured => Error::BackPressured,
            OfferError::NotConnected => Error::NotConnected,
            OfferError::MessageTooLarge { len, max } => Error::MessageTooLarge { len, max },
            OfferError::Closed => Error::Closed,
            OfferError::Refused => Error::SessionRefused,
            OfferError::KeyMismatch => Error::KeyMismatch,
            OfferError::Failed => match &self.failure {
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
        if self.sender.poll_timeout().is_some_and(|t| t <= now) {
            self.receive(now);
            if self.sender.poll_timeout().is_some_and(|t| t <= now) {
                self.sender.handle_timeout(now);
            }
        }
    }

    // Inlined: it is open across a system call (see "The latency path"
    // in the `udp` module docs).
    #[inline(always)]
    fn offer(&mut self, type_id: u32, payload: &[u8]) -> Result<u64, Error> {
        if self.opts.linger.is_zero() {
            return self.offer_now(type_id, payload);
        }
        // Batching (`linger`). Whether this call reads the clock is decided
        // up front: a call that runs the timers runs them *before* the
        // message is accepted, so a receiver found gone (liveness) refuses
        // it with NotConnected rather than the stream taking it and then
        // releasing it unsent. The clock is read for the first offers of a
        // batch, then every CLOCK_EVERY offers, and for the offer that fills
        // a batch.
        let n = self.offers_since_transmit + 1;
        let fills = self.unsent + payload.len() + 8 >= self.batch_bytes;
        let now = (fills || n <= CLOCK_EVERY || n % CLOCK_EVERY == 0).then(Instant::now);
        if let Some(now) = now {
            self.due_timers(now);
        }
        let r = match self.sender.offer(type_id, payload) {
            Err(e) if progress_may_clear(e) => {
                // Make progress (status, handshake), then try once more.
                self.progress(now.unwrap_or_else(Instant::now));
                self.sender.offer(type_id, payload)
            }
            r => r,
        };
        match r {
            Ok(pos) => {
                self.unsent += payload.len() + 8;
                match now {
                    // The timers ran for `now` above.
                    Some(now) if self.unsent >= self.batch_bytes => self.send_due(now),
                    Some(now) => {
                        self.offers_since_transmit = n;
                        if now.duration_since(self.last_transmit) >= self.opts.linger {
                            self.send_due(now);
                        }
                    }
                    // No clock read: a background thread, when present,
                    // sends what lingers.
                    None => self.offers_since_transmit = n,
                }
                Ok(pos)
            }
            Err(e) => Err(self.map(e)),
        }
    }

    /// An offer without `linger`: the message leaves at once. When it is
    /// all the sender has to send (the latency case), the sender builds its
    /// datagram with the offer and it goes out without the general transmit
    /// loop; otherwise the loop sends what is due.
    // Inlined: it is open across a system call (see "The latency path"
    // in the `udp` module docs).
    #[inline(always)]
    fn offer_now(&mut self, type_id: u32, payload: &[u8]) -> Result<u64, Error> {
        // The timers run before the message is accepted (see `offer`).
        let now = Instant::now();
        self.due_timers(now);
        let mtu = self.opts.proto.mtu;
        let buf = &mut self.txbuf[..mtu];
        let r = match self.sender.offer_and_transmit(now, type_id, payload, buf) {
            Err(e) if progress_may_clear(e) => {
                // Make progress (status, handshake), then try once more.
                self.progress(now);
                let buf = &mut self.txbuf[..mtu];
                self.sender.offer_and_transmit(now, type_id, payload, buf)
            }
            r => r,
        };
        let (pos, built) = r.map_err(|e| self.map(e))?;
        match built {
            Some(len) => {
                self.send_built(len);
                // The rest of a fragmented message, if any.
                if !self.sender.all_sent() {
                    self.transmit(now);
                }
                self.after_send(now);
            }
            None => self.send_due(now),
        }
        Ok(pos)
    }

    fn flush(&mut self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            self.progress(now);
            match self.sender.state() {
                SenderState::Connected => {
                    if self.sender.is_flushed() {
                        return Ok(());
                    }
                }
                // Not acknowledged by a receiver of this session: never Ok.
                SenderState::Connecting if self.sender.is_key_mismatch() => {
                    return Err(Error::KeyMismatch)
                }
                SenderState::Connecting if self.sender.is_refused() => {
                    return Err(Error::SessionRefused)
                }
                // The subscriber acknowledged everything, then closed or went away.
                SenderState::Connecting if self.sender.is_delivered() => return Ok(()),
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

    fn counters(&self) -> Counters {
        let c = self.sender.counters();
        let mut by: Vec<(&'static str, u64)> = c.drops_by_reason().collect();
        // Cut by the kernel, seen by the driver only.
        let oversized = self.driver.oversized();
        by[crate::proto::DropReason::Oversized as usize].1 += oversized;
        by.push(("send_failed", self.send_errors));
        by.push(("claim_lost", self.claims_lost));
        Counters {
            sent: c.messages,
            retransmitted: c.retransmitted,
            naks_received: c.naks_received,
            dropped: c.dropped_total() + oversized,
            datagrams_sent: c.datagrams_sent,
            datagrams_received: c.datagrams_received,
            drops_by_reason: by,
            driver: Some(self.driver.kind().name()),
            ..Counters::default()
        }
    }
}

/// The sending end of a `udp://HOST:PORT` channel.
///
/// Progress (handshake, heartbeats, status, NAK repair, liveness) happens
/// inside [`offer`](Self::offer), [`is_connected`](Self::is_connected) and
/// [`flush`](Self::flush); with `progress=thread` a background thread also
/// drives it every heartbeat/4 (at least every 1 ms) for idle applications.
pub struct UdpPublication {
    inner: Progress<PubCore>,
    max_message_len: usize,
    staging: Vec<u8>,
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
    pub fn open(uri: ChannelUri) -> Result<UdpPublication, Error> {
        let opts = UdpOptions::from_uri(uri)?;
        let bind = opts.bind.unwrap_or_else(|| {
            if opts.addr.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            }
        });
        let mut driver = open_driver(bind, &opts.driver).map_err(Error::Io)?;
        driver.connect(opts.addr).map_err(Error::Io)?;
        let now = Instant::now();
        let sender = Sender::with_os_random(opts.proto.clone(), opts.addr, now, seed())
            .map_err(Error::InvalidArgument)?;
        let mtu = opts.proto.mtu;
        let max_message_len = sender.max_message_len();
        let core = PubCore {
            sender,
            driver,
            txbuf: vec![0u8; tx_slots(mtu) * mtu],
            staged: Vec::with_capacity(tx_slots(mtu)),
            failure: None,
            unsent: 0,
            offers_since_transmit: 0,
            // A GSO batch's worth, within a quarter of the window.
            batch_bytes: (tx_slots(mtu) * mtu)
                .min(opts.proto.window / 4)
                .min(super::driver::MAX_UDP_PAYLOAD),
            last_transmit: now,
            next_recv: now,
            sends_since_recv: 0,
            send_errors: 0,
            claims_lost: 0,
            io_error: None,
            opts,
        };
        let inner = if core.opts.thread {
            // Often enough for heartbeats, and for the tail of a lingering
            // batch to leave within about `linger`.
            let mut period = (core.opts.proto.heartbeat_interval / 4).min(Duration::from_millis(1));
            if !core.opts.linger.is_zero() {
                period = period.min(core.opts.linger);
            }
            let period = period.max(Duration::from_micros(20));
            Progress::with_thread(
                core,
                "conduit-udp-pub",
                period,
                move |core: &mut PubCore| {
                    let now = Instant::now();
                    // While the application is offering, leave the batching to
                    // it; step in when it went quiet.
                    if now.duration_since(core.last_transmit) >= period {
                        core.progress(now);
                    }
                },
            )?
        } else {
            Progress::local(core)
        };
        let mut p = UdpPublication {
            inner,
            max_message_len,
            staging: Vec::new(),
        };
        // Start the handshake at once.
        p.with(|c| c.progress(Instant::now()));
        Ok(p)
    }

    #[inline]
    fn with<R>(&mut self, f: impl FnOnce(&mut PubCore) -> R) -> R {
        self.inner.with(f)
    }

    fn with_ref<R>(&self, f: impl FnOnce(&PubCore) -> R) -> R {
        self.inner.with_ref(f)
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
    pub fn offer(&mut self, type_id: u32, payload: &[u8]) -> Result<u64, Error> {
        self.with(|c| c.offer(type_id, payload))
    }

    /// Reserves `len` bytes for a message; [`UdpClaim::commit`] sends it.
    /// The bytes are staged in a buffer of the publication and copied into
    /// the stream on commit.
    ///
    /// # Errors
    /// As [`offer`](Self::offer): [`Error::BackPressured`],
    /// [`Error::NotConnected`], [`Error::MessageTooLarge`], ...
    pub fn try_claim(&mut self, type_id: u32, len: usize) -> Result<UdpClaim<'_>, Error> {
        if len > self.max_message_len {
            return Err(Error::MessageTooLarge {
                len,
                max: self.max_message_len,
            });
        }
        // Reserve up front, as a claim on shm does: a claim that fits one
        // record is checked against the window now (the protocol's own claim,
        // aborted at once), so the commit's offer cannot be refused for
        // back-pressure; larger ones are checked for the connection only.
        self.with(|c| {
            let check = |c: &mut PubCore| -> Result<(), OfferError> {
                if len <= c.sender.max_claim_len() {
                    c.sender.try_claim(type_id, len).map(drop)
                } else {
                    match c.sender.state() {
                        SenderState::Connected => Ok(()),
                        SenderState::Connecting if c.sender.is_key_mismatch() => {
                            Err(OfferError::KeyMismatch)
                        }
                        SenderState::Connecting if c.sender.is_refused() => {
                            Err(OfferError::Refused)
                        }
                        SenderState::Connecting => Err(OfferError::NotConnected),
                        SenderState::Closed => Err(OfferError::Closed),
                        SenderState::Failed => Err(OfferError::Failed),
                    }
                }
            };
            match check(c) {
                Err(e) if progress_may_clear(e) => {
                    c.progress(Instant::now());
                    check(c)
                }
                r => r,
            }
            .map_err(|e| c.map(e))
        })?;
        let mut staging = std::mem::take(&mut self.staging);
        staging.clear();
        staging.resize(len, 0);
        Ok(UdpClaim {
            publ: self,
            type_id,
            buf: staging,
        })
    }

    /// True while the subscriber is live. Drives progress. False while the
    /// subscription refuses this publication (see [`Error::SessionRefused`],
    /// which `offer` and `flush` report).
    pub fn is_connected(&mut self) -> bool {
        self.with(|c| {
            c.progress(Instant::now());
            c.sender.is_connected()
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
    pub fn flush(&mut self, timeout: Duration) -> Result<(), Error> {
        self.with(|c| c.flush(timeout))
    }

    /// Largest message accepted.
    pub fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// Counters: messages sent, retransmissions, NAKs, drops by reason, driver.
    pub fn counters(&self) -> Counters {
        self.with_ref(|c| c.counters())
    }

    /// The local socket address.
    ///
    /// # Errors
    /// The socket's error.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.with_ref(|c| c.driver.local_addr()).map_err(Error::Io)
    }

    /// The last send error, if any (sends that fail are repaired like loss).
    pub fn last_io_error(&self) -> Option<String> {
        self.with_ref(|c| c.io_error.as_ref().map(|e| e.to_string()))
    }
}

impl Drop for UdpPublication {
    fn drop(&mut self) {
        self.inner.stop_thread();
        self.with(|c| {
            let now = Instant::now();
            c.sender.close(now);
            c.transmit(now);
        });
    }
}

/// A message being written in place; [`commit`](Self::commit) sends it,
/// dropping it aborts.
pub struct UdpClaim<'a> {
    publ: &'a mut UdpPublication,
    type_id: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for UdpClaim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpClaim")
            .field("len", &self.buf.len())
            .finish()
    }
}

impl UdpClaim<'_> {
    /// The writable payload.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// The payload.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Publishes the message; returns the stream position after it. Room was
    /// reserved by the claim; only a connection lost since the claim makes
    /// the stream refuse it, then 0 is returned and the loss is counted
    /// (`claim_lost`).
    pub fn commit(mut self) -> u64 {
        let buf = std::mem::take(&mut self.buf);
        let ty = self.type_id;
        let pos = self.publ.with(|c| {
            // Room was reserved by `try_claim` for claims of one record; a
            // larger claim waits for the window, at most one liveness
            // timeout (the peer is gone by then).
            let mut deadline = None;
            loop {
                match c.offer(ty, &buf) {
                    Ok(p) => return p,
                    Err(Error::BackPressured)
                        if Instant::now()
                            < *deadline.get_or_insert_with(|| {
                                Instant::now() + c.opts.proto.liveness_timeout
                            }) =>
                    {
                        std::hint::spin_loop()
                    }
                    Err(_) => {
                        c.claims_lost += 1;
                        return 0;
                    }
                }
            }
        });
        self.publ.staging = buf;
        pos
    }

    /// Drops the claim without publishing.
    pub fn abort(self) {}
}

impl Drop for UdpClaim<'_> {
    fn drop(&mut self) {
        if self.buf.capacity() > 0 {
            self.publ.staging = std::mem::take(&mut self.buf);
        }
    }
}
