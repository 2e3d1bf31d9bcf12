//! The subscription side: accepts a sender's setup, delivers messages in order exactly once,
//! buffers out-of-order data within its window, NAKs gaps and reports status.
//!
//! In-order unfragmented messages are handed to the delivery callback as slices of the
//! datagram being handled (no copy). Only out-of-order data (into a ring of `window` bytes)
//! and fragments (into a reassembly buffer of at most the maximum message length, grown as
//! fragments arrive) are copied.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use super::config::{Config, GapPolicy};
use super::cookie::{Entropy, Secrets};
use super::counters::{Counters, DropReason};
use super::crypto::{self, CryptoHeader, Direction, HandshakeKeys, SessionKeys};
use super::event::Event;
use super::frame::{
    self, FrameKind, Header, RecordHeader, Records, MAX_POSITION, RECORD_HEADER_LEN,
};
use super::handshake::negotiate;
use super::nak::{Gaps, Insert};
use super::rng::Rng;
use super::rtt::{nanos, RttEstimator};
use super::{poll_batch, same_addr, Batched, Held, Transmit, MAX_EVENTS};

/// Reassembles fragmented messages and delivers complete ones.
#[derive(Debug)]
struct Assembler {
    buf: Vec<u64>,
    len: usize,
    type_id: u32,
    /// Stream position of the message being reassembled (its first fragment's record).
    start: u64,
    active: bool,
    /// Skip fragments until the next message begins (after a skipped gap or an oversize one).
    skip_partial: bool,
    max: usize,
}

impl Assembler {
    fn reset(&mut self) {
        self.active = false;
        self.len = 0;
    }

    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn record<F: FnMut(u64, u32, &[u8])>(
        &mut self,
        pos: u64,
        flags: u8,
        type_id: u32,
        payload: &[u8],
        deliver: &mut F,
        counters: &mut Counters,
    ) {
        if flags & frame::REC_PAD != 0 {
            return;
        }
        let begin = flags & frame::REC_BEGIN != 0;
        let end = flags & frame::REC_END != 0;
        if self.skip_partial {
            if !begin {
                return;
            }
            self.skip_partial = false;
        }
        if begin && end {
            if self.active {
                self.reset();
                counters.drop(DropReason::BadLength);
            }
            if payload.len() > self.max {
                counters.drop(DropReason::MessageTooLarge);
                return;
            }
            counters.messages += 1;
            counters.bytes += payload.len() as u64;
            deliver(pos, type_id, payload);
            return;
        }
        if begin {
            if self.active {
                counters.drop(DropReason::BadLength);
            }
            self.active = true;
            self.len = 0;
            self.type_id = type_id;
            self.start = pos;
        } else if !self.active {
            counters.drop(DropReason::BadLength);
            return;
        }
        let total = self.len + payload.len();
        if total > self.max {
            counters.drop(DropReason::MessageTooLarge);
            self.reset();
            self.skip_partial = !end;
            return;
        }
        let words = total.div_ceil(8);
        if self.buf.len() < words {
            let grown = words.max(self.buf.len() * 2).min(self.max.div_ceil(8));
            self.buf.resize(grown, 0);
        }
        self.buf.as_mut_bytes()[self.len..total].copy_from_slice(payload);
        self.len = total;
        if end {
            self.active = false;
            counters.messages += 1;
            counters.bytes += total as u64;
            deliver(self.start, self.type_id, &self.buf.as_bytes()[..total]);
            self.len = 0;
        }
    }
}

#[derive(Debug)]
struct Session {
    peer: SocketAddr,
    session_id: u32,
    version: u8,
    /// Everything before it was delivered.
    position: u64,
    connected: bool,
    failed: bool,
    last_heard: Instant,
    last_status_pos: u64,
    status_due: bool,
    next_status: Instant,
    next_rtt: Instant,
    rtt_echo: Option<u64>,
    /// This receiver's nonce for the session (sent on accepting it).
    nonce: [u8; frame::NONCE_LEN],
    /// Keyed: the session's keys (phase 1).
    keys: Option<SessionKeys>,
}

/// Validates the records of a data frame; returns the stream bytes they span.
fn validate_records(records: &[u8]) -> Result<u64, DropReason> {
    if records.is_empty() {
        return Err(DropReason::BadLength);
    }
    let mut span = 0u64;
    for r in Records::new(records) {
        span += r?.span();
    }
    Ok(span)
}

/// The receiving end of one stream: one sender session at a time.
#[derive(Debug)]
pub struct Receiver {
    config: Config,
    receiver_id: u32,
    session: Option<Session>,
    ring: Vec<u64>,
    mask: usize,
    scratch: Vec<u64>,
    asm: Assembler,
    gaps: Gaps,
    events: VecDeque<Event>,
    counters: Counters,
    epoch: Instant,
    rtt: RttEstimator,
    reply: Option<(SocketAddr, frame::SetupReply)>,
    need_setup: Option<(SocketAddr, u32)>,
    next_need_setup: Instant,
    last_rejected: u32,
    close_to: Option<(SocketAddr, u32, u8)>,
    nak_ranges: Vec<(u64, u64)>,
    secrets: Secrets,
    /// Keyed: the handshake keys (phase 0).
    hs_keys: Option<HandshakeKeys>,
    /// Keyed: the keys of a session closed by [`Receiver::close`], for its close frame.
    close_keys: Option<SessionKeys>,
    /// Keyed: 8-aligned buffer the datagrams are opened into (payloads stay aligned).
    open_buf: Vec<u64>,
    /// A plaintext key rejection to send (`FLAG_REJECT | FLAG_KEY`).
    key_reject: Option<(SocketAddr, frame::SetupReply)>,
    next_key_reject: Instant,
    /// The key mismatch was reported (until a session is accepted).
    key_mismatch_reported: bool,
    /// Key failures since the last datagram that was authentic (or plain, unkeyed).
    key_failures: u32,
    /// The position of a session closed by [`Receiver::close`], for its close frame.
    close_position: u64,
    /// Draws the nonce of every NAK.
    rng: Rng,
    /// Nonces of the last NAKs sent: a [`frame::FLAG_LOSS`] heartbeat must echo one of them.
    nak_nonces: [u32; NAK_NONCES],
    /// Where the next nonce goes in `nak_nonces`.
    nak_nonce_next: usize,
    /// A datagram built for a batch it did not fit: it leads the next one.
    held: Held,
    /// Refuse a new session ([`frame::FLAG_BUSY`]) while none is held: set by `Sessions`
    /// on its acceptor when every session place is taken by a live session.
    busy: bool,
    /// Another receiver of the subscription serves a live session (`Sessions` sets it on
    /// its acceptor): key failures are then a stranger's, not reported.
    serving: bool,
    /// The session's sender streams to a group (its setup had [`frame::FLAG_GROUP`]).
    group: bool,
}

/// NAK nonces remembered (a loss answer to one of the last few NAKs is accepted, so a
/// reordered answer still counts).
const NAK_NONCES: usize = 4;

impl Receiver {
    /// A reproducible receiver: `seed` drives its id, its cookie secret and its nonces (for
    /// simulation and tests; a real endpoint uses [`Receiver::with_os_random`]).
    ///
    /// # Errors
    /// The configuration is invalid ([`Config::validate`]).
    pub fn new(config: Config, now: Instant, seed: u64) -> Result<Receiver, String> {
        Receiver::build(config, now, Entropy::Seeded(Rng::new(seed ^ 0x7265_6376)))
    }

    /// A receiver whose id, cookie secret and nonces come from the operating system's CSPRNG.
    /// `seed` drives nothing a peer could exploit (it is kept for symmetry with
    /// [`Receiver::new`]).
    ///
    /// # Errors
    /// The configuration is invalid ([`Config::validate`]), or the OS random source failed.
    pub fn with_os_random(config: Config, now: Instant, seed: u64) -> Result<Receiver, String> {
        let _ = seed;
        Receiver::build(config, now, Entropy::Os)
    }

    pub(crate) fn build(
        config: Config,
        now: Instant,
        mut entropy: Entropy,
    ) -> Result<Receiver, String> {
        config.validate()?;
        let receiver_id = entropy.nonzero_u32()?;
        let secrets = Secrets::new(&mut entropy, now)?;
        // NAK nonces: from the same source as the session secrets (the OS's in real endpoints).
        let mut seed = [0u8; 8];
        entropy.fill(&mut seed)?;
        let rng = Rng::new(u64::from_le_bytes(seed));
        Ok(Receiver::assemble(config, now, receiver_id, secrets, rng))
    }

    /// Another receiver of the same subscription, for one more session (`Sessions`): the
    /// same configuration, id and cookie secret (a cookie either issues, both accept), its
    /// own buffers, nonces and NAK nonces.
    pub(crate) fn fork(&mut self, now: Instant) -> Receiver {
        let rng = Rng::new(self.rng.next_u64());
        Receiver::assemble(
            self.config.clone(),
            now,
            self.receiver_id,
            self.secrets.fork(),
            rng,
        )
    }

    /// A receiver with no session: its buffers allocated (and committed) for `config`.
    fn assemble(
        config: Config,
        now: Instant,
        receiver_id: u32,
        secrets: Secrets,
        rng: Rng,
    ) -> Receiver {
        let hs_keys = config
            .key
            .as_ref()
            .map(|k| HandshakeKeys::new(k, Direction::SubToPub));
        let open_buf = if hs_keys.is_some() {
            super::log::committed(65_536 / 8)
        } else {
            Vec::new()
        };
        Receiver {
            secrets,
            hs_keys,
            close_keys: None,
            open_buf,
            key_reject: None,
            next_key_reject: now,
            key_mismatch_reported: false,
            key_failures: 0,
            close_position: 0,
            receiver_id,
            session: None,
            ring: super::log::committed(config.window / 8),
            mask: config.window - 1,
            scratch: super::log::committed(65_536 / 8),
            asm: Assembler {
                buf: Vec::new(),
                len: 0,
                type_id: 0,
                start: 0,
                active: false,
                skip_partial: false,
                max: config.max_message_len,
            },
            gaps: Gaps::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            epoch: now,
            rtt: RttEstimator::new(),
            reply: None,
            need_setup: None,
            next_need_setup: now,
            last_rejected: 0,
            close_to: None,
            nak_ranges: Vec::with_capacity(frame::MAX_NAK_RANGES),
            rng,
            nak_nonces: [0; NAK_NONCES],
            nak_nonce_next: 0,
            held: Held::default(),
            busy: false,
            serving: false,
            group: false,
            config,
        }
    }

    /// Refuses new sessions while set (see the `busy` field).
    pub(crate) fn set_busy(&mut self, busy: bool) {
        self.busy = busy;
    }

    /// Whether another receiver of the subscription serves a live session (see the
    /// `serving` field).
    pub(crate) fn set_serving(&mut self, serving: bool) {
        self.serving = serving;
    }

    /// Whether a session (live or not) is held.
    pub(crate) fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether a sender session is live.
    pub fn is_connected(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.connected && !s.failed)
    }

    /// Whether the stream failed on unrecoverable loss ([`GapPolicy::Fail`]).
    pub fn is_failed(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.failed)
    }

    /// The current sender session id.
    pub fn session_id(&self) -> Option<u32> {
        self.session.as_ref().map(|s| s.session_id)
    }

    /// The current sender's address.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.session.as_ref().map(|s| s.peer)
    }

    /// Stream position: everything before it was delivered.
    pub fn position(&self) -> u64 {
        self.session.as_ref().map_or(0, |s| s.position)
    }

    /// This receiver's random id.
    pub fn receiver_id(&self) -> u32 {
        self.receiver_id
    }

    /// Smoothed round-trip time, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt.smoothed()
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Bytes currently held beyond the position (out of order), at most the window.
    pub fn buffered(&self) -> u64 {
        let p = self.position();
        self.gaps.high(p).saturating_sub(p)
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

    /// Closes the stream: a close frame goes to the sender, the session ends.
    pub fn close(&mut self, _now: Instant) {
        if let Some(s) = self.session.take() {
            self.close_to = Some((s.peer, s.session_id, s.version));
            self.close_position = s.position;
            self.close_keys = s.keys;
        }
        self.gaps.clear();
        self.asm.reset();
    }

    /// When timers next need [`Receiver::handle_timeout`] / [`Receiver::poll_transmit`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let s = self.session.as_ref()?;
        if !s.connected || s.failed {
            return None;
        }
        let mut t = (s.last_heard + self.config.liveness_timeout)
            .min(s.next_status)
            .min(s.next_rtt);
        if let Some(n) = self.gaps.next_nak() {
            t = t.min(n);
        }
        Some(t)
    }

    /// Advances timers: liveness of the sender.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if s.connected && !s.failed && now >= s.last_heard + self.config.liveness_timeout {
            s.connected = false;
            self.push_event(Event::PeerGone);
        }
    }

    /// Handles one datagram; in-order messages are passed to `deliver(type_id, payload)`,
    /// unfragmented ones as slices of `bytes`. Returns the number of messages delivered.
    pub fn handle_datagram<F: FnMut(u32, &[u8])>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        mut deliver: F,
    ) -> usize {
        self.handle_datagram_at(now, from, bytes, |_, ty, p| deliver(ty, p))
    }

    /// As [`handle_datagram`](Self::handle_datagram), also passing each message's stream
    /// position (where its first record starts): `deliver(position, type_id, payload)`.
    pub fn handle_datagram_at<F: FnMut(u64, u32, &[u8])>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        mut deliver: F,
    ) -> usize {
        self.counters.datagrams_received += 1;
        let before = self.counters.messages;
        let r = if self.hs_keys.is_some() {
            self.handle_keyed(now, from, bytes, &mut deliver)
        } else if let Some(h) = CryptoHeader::peek(bytes) {
            // A keyed sender: tell it (plainly) that this end has no key.
            if h.phase == crypto::PHASE_HANDSHAKE {
                self.reject_key(now, from, h.session_id.get());
            }
            Err(DropReason::Encrypted)
        } else {
            self.handle_inner(now, from, bytes, &mut deliver)
        };
        match r {
            Err(reason) => self.counters.drop(reason),
            Ok(()) => self.key_failures = 0,
        }
        (self.counters.messages - before) as usize
    }

    /// A keyed receiver: opens the datagram (into the aligned buffer), then handles the
    /// plain frame. A datagram that does not authenticate changes nothing.
    fn handle_keyed<F: FnMut(u64, u32, &[u8])>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        deliver: &mut F,
    ) -> Result<(), DropReason> {
        let Some(h) = CryptoHeader::peek(bytes) else {
            // A plain sender: a setup is told (plainly) that this end has a key.
            if let Ok((h, _)) = Header::ref_from_prefix(bytes) {
                if h.kind == FrameKind::SETUP {
                    self.reject_key(now, from, h.session_id.get());
                }
            }
            return Err(DropReason::Plaintext);
        };
        let sid = h.session_id.get();
        let mut buf = std::mem::take(&mut self.open_buf);
        let r = match h.phase {
            crypto::PHASE_HANDSHAKE => {
                let opened = match &self.hs_keys {
                    Some(k) => k.open(None, bytes, buf.as_mut_bytes()),
                    None => Err(DropReason::Unexpected),
                };
                match opened {
                    Ok(plain) => match Header::ref_from_prefix(plain) {
                        Ok((p, _)) if p.session_id.get() != sid => Err(DropReason::WrongSession),
                        Ok((p, _)) if p.kind != FrameKind::SETUP => Err(DropReason::Unexpected),
                        Ok(_) => self.handle_inner(now, from, plain, deliver),
                        Err(_) => Err(DropReason::Truncated),
                    },
                    Err(DropReason::AuthFailed) => {
                        // Another key: tell the sender (plainly), change nothing else.
                        self.reject_key(now, from, sid);
                        Err(DropReason::AuthFailed)
                    }
                    Err(e) => Err(e),
                }
            }
            _ => {
                let keys = self
                    .session
                    .as_mut()
                    .filter(|s| s.session_id == sid)
                    .and_then(|s| s.keys.as_mut());
                match keys {
                    Some(k) => match k.open(bytes, buf.as_mut_bytes()) {
                        Ok(plain) => self.handle_inner(now, from, plain, deliver),
                        Err(e) => Err(e),
                    },
                    None => {
                        if self.session.is_none() && h.phase == crypto::PHASE_SESSION {
                            // A sender of a session this receiver does not know (it
                            // restarted): ask for a setup, under the handshake key.
                            self.ask_setup(now, from, sid);
                        }
                        Err(DropReason::WrongSession)
                    }
                }
            }
        };
        self.open_buf = buf;
        r
    }

    /// Answers a setup of the other key state with a plaintext `FLAG_REJECT | FLAG_KEY`
    /// (rate limited: it is unauthenticated and costs a datagram), and reports the mismatch
    /// once.
    fn reject_key(&mut self, now: Instant, from: SocketAddr, sid: u32) {
        if now >= self.next_key_reject {
            self.next_key_reject = now + self.config.setup_interval;
            let mut r = self.reply_frame(sid, 0, frame::FLAG_REJECT | frame::FLAG_KEY, 0);
            r.header.version = self.config.versions.1.min(255) as u8;
            self.key_reject = Some((from, r));
        }
        // One failure may be a corrupted datagram; several in a row, with nothing authentic
        // in between, are a mismatch. While a session is live they are a stranger's (counted
        // as drops, not reported: a stranger cannot make a working stream report an error).
        if self.is_connected() || self.serving {
            return;
        }
        self.key_failures += 1;
        if !self.key_mismatch_reported && self.key_failures >= super::sender::KEY_MISMATCH_EVIDENCE
        {
            self.key_mismatch_reported = true;
            self.push_event(Event::KeyMismatch);
        }
    }

    fn handle_inner<F: FnMut(u64, u32, &[u8])>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        deliver: &mut F,
    ) -> Result<(), DropReason> {
        let (h, _) = Header::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
        let kind = h.kind;
        match kind {
            FrameKind::SETUP
            | FrameKind::DATA
            | FrameKind::HEARTBEAT
            | FrameKind::RTT
            | FrameKind::CLOSE => {}
            FrameKind::NAK if h.flags.get() & frame::FLAG_ECHO != 0 => {}
            FrameKind::SETUP_REPLY | FrameKind::NAK | FrameKind::STATUS => {
                return Err(DropReason::Unexpected)
            }
            _ => return Err(DropReason::UnknownType),
        }
        // Keyed: the tag covers the datagram, no checksum.
        let checksum_on = self.config.checksum && self.hs_keys.is_none();
        frame::check_header(h, bytes, checksum_on, self.config.stream_id)?;
        let sid = h.session_id.get();
        if kind == FrameKind::SETUP {
            let r = self.on_setup(now, from, sid, bytes);
            // A skipped gap may leave buffered data deliverable at the new position.
            self.drain(deliver);
            return r;
        }
        let Some(s) = self.session.as_mut() else {
            if kind == FrameKind::DATA || kind == FrameKind::HEARTBEAT {
                self.ask_setup(now, from, sid);
            }
            return Err(DropReason::Unexpected);
        };
        if sid != s.session_id {
            return Err(DropReason::WrongSession);
        }
        if !same_addr(from, s.peer) {
            return Err(DropReason::WrongSource);
        }
        if h.version != s.version {
            return Err(DropReason::BadVersion);
        }
        if s.failed {
            return Err(DropReason::Unexpected);
        }
        s.last_heard = now;
        if !s.connected {
            s.connected = true;
            let e = Event::Connected {
                session_id: s.session_id,
                version: u16::from(s.version),
            };
            self.push_event(e);
        }
        match kind {
            FrameKind::DATA => self.on_data(now, bytes, deliver),
            FrameKind::HEARTBEAT => self.on_heartbeat(now, bytes, deliver),
            FrameKind::RTT => self.on_rtt(now, bytes, h.flags.get()),
            FrameKind::NAK => self.on_nak_echo(now, bytes),
            _ => {
                let (c, _) =
                    frame::Close::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
                // The final position: never behind what was delivered, never beyond the
                // position space.
                let end = c.position.get();
                let position = self.position();
                if end >= MAX_POSITION || end < position {
                    return Err(DropReason::OutOfWindow);
                }
                self.session = None;
                self.gaps.clear();
                self.asm.reset();
                self.push_event(Event::Closed);
                Ok(())
            }
        }
    }

    fn ask_setup(&mut self, now: Instant, from: SocketAddr, sid: u32) {
        if now >= self.next_need_setup {
            self.need_setup = Some((from, sid));
            self.next_need_setup = now + self.config.setup_interval;
        }
    }

    fn on_setup(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sid: u32,
        bytes: &[u8],
    ) -> Result<(), DropReason> {
        // The version 1 prefix first: a peer of another version learns of the mismatch.
        let (p, _) =
            frame::SetupPrefix::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
        let remote = (p.min_version.get(), p.max_version.get());
        let local = self.config.versions;
        let Some(version) = negotiate(local, remote) else {
            let mut r = self.reply_frame(sid, 0, frame::FLAG_REJECT, 0);
            r.header.version = local.1.min(255) as u8;
            self.reply = Some((from, r));
            if self.last_rejected != sid {
                self.last_rejected = sid;
                self.push_event(Event::VersionMismatch { local, remote });
            }
            return Err(DropReason::BadVersion);
        };
        let (s, _) = frame::Setup::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
        let join = s.join_position.get();
        if join & 7 != 0 {
            return Err(DropReason::BadLength);
        }
        if join >= MAX_POSITION {
            return Err(DropReason::OutOfWindow);
        }
        let stream = self.config.stream_id;
        // Prove the address before anything changes: no state is kept for an unproven setup.
        if !self
            .secrets
            .verify(now, from, sid, stream, &s.nonce, &s.cookie)
        {
            let mut r = self.reply_frame(sid, version, frame::FLAG_RETRY, 0);
            r.cookie = self.secrets.cookie(now, from, sid, stream, &s.nonce);
            self.reply = Some((from, r));
            if s.cookie != [0; frame::COOKIE_LEN] {
                return Err(DropReason::BadCookie);
            }
            return Ok(());
        }
        let peer_mtu = usize::from(s.mtu.get());
        if peer_mtu > self.config.mtu {
            let mut r = self.reply_frame(sid, 0, frame::FLAG_REJECT | frame::FLAG_MTU, 0);
            r.header.version = version as u8;
            self.reply = Some((from, r));
            if self.last_rejected != sid {
                self.last_rejected = sid;
                self.push_event(Event::MtuMismatch {
                    local: self.config.mtu,
                    remote: peer_mtu,
                });
            }
            return Err(DropReason::MtuMismatch);
        }
        let mut loss = None;
        let liveness = self.config.liveness_timeout;
        match self.session.as_mut() {
            Some(cur) if cur.session_id == sid => {
                if !same_addr(from, cur.peer) {
                    return Err(DropReason::WrongSource);
                }
                if cur.failed {
                    return Err(DropReason::Unexpected);
                }
                cur.last_heard = now;
                cur.version = version as u8;
                if join > cur.position {
                    loss = Some((cur.position, join));
                }
                if !cur.connected {
                    cur.connected = true;
                    // The queue is bounded (`push_event`, borrowed apart from the session).
                    if self.events.len() < MAX_EVENTS {
                        self.events.push_back(Event::Connected {
                            session_id: sid,
                            version,
                        });
                    }
                }
            }
            Some(cur) => {
                // A live session is replaced only by a sender at its exact address (a
                // publisher restarted on a fixed port); anyone else is refused, and the live
                // stream goes on untouched.
                let live = cur.connected && !cur.failed && now < cur.last_heard + liveness;
                if live && !same_addr(from, cur.peer) {
                    let mut r = self.reply_frame(sid, version, frame::FLAG_BUSY, 0);
                    r.header.version = version as u8;
                    self.reply = Some((from, r));
                    return Err(DropReason::SessionRefused);
                }
                let old = cur.session_id;
                self.push_event(Event::SessionReplaced { old, new: sid });
                self.start_session(now, from, sid, version, join, s.nonce);
            }
            None if self.busy => {
                // Every session place is taken by a live session: refused, counted, and
                // nothing of the live ones changes (the sender keeps asking).
                let mut r = self.reply_frame(sid, version, frame::FLAG_BUSY, 0);
                r.header.version = version as u8;
                self.reply = Some((from, r));
                return Err(DropReason::SessionRefused);
            }
            None => self.start_session(now, from, sid, version, join, s.nonce),
        }
        if let Some((from_pos, to_pos)) = loss {
            // Unconfirmed, as from a heartbeat: the gap is NAKed, and the sender resends it or
            // confirms the loss (a forged setup of the session cannot end the stream).
            self.gaps
                .set_tail(from_pos, to_pos, now, self.config.nak_delay);
        }
        self.group =
            version >= crate::GROUP_VERSION && s.header.flags.get() & frame::FLAG_GROUP != 0;
        let position = self.position();
        let mut r = self.reply_frame(sid, version, 0, position);
        if let Some(cur) = self.session.as_mut() {
            cur.status_due = true;
            r.nonce = cur.nonce;
        }
        self.reply = Some((from, r));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn start_session(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        sid: u32,
        version: u16,
        join: u64,
        peer_nonce: [u8; frame::NONCE_LEN],
    ) {
        self.gaps.clear();
        self.asm.reset();
        self.asm.skip_partial = false;
        let nonce = self.secrets.nonce(sid);
        let keys = self
            .config
            .key
            .as_ref()
            .map(|k| SessionKeys::new(k, Direction::SubToPub, &peer_nonce, &nonce, sid));
        self.key_mismatch_reported = false;
        self.session = Some(Session {
            keys,
            peer,
            session_id: sid,
            version: version as u8,
            position: join,
            connected: true,
            failed: false,
            last_heard: now,
            last_status_pos: join,
            status_due: true,
            next_status: now,
            next_rtt: now,
            rtt_echo: None,
            nonce,
        });
        self.push_event(Event::Connected {
            session_id: sid,
            version,
        });
    }

    fn reply_frame(&self, sid: u32, version: u16, flags: u16, position: u64) -> frame::SetupReply {
        frame::SetupReply {
            header: frame::header(
                version as u8,
                FrameKind::SETUP_REPLY,
                flags,
                sid,
                self.config.stream_id,
            ),
            version: U16::new(version),
            min_version: U16::new(self.config.versions.0),
            max_version: U16::new(self.config.versions.1),
            mtu: U16::new(self.config.mtu as u16),
            receiver_id: U32::new(self.receiver_id),
            window: U32::new(self.config.window as u32),
            position: U64::new(position),
            nonce: [0; frame::NONCE_LEN],
            cookie: [0; frame::COOKIE_LEN],
        }
    }

    /// Data in `[from, to)` is gone for good.
    fn unrecoverable(&mut self, from: u64, to: u64) {
        self.push_event(Event::UnrecoverableLoss { from, to });
        let Some(s) = self.session.as_mut() else {
            return;
        };
        match self.config.gap_policy {
            GapPolicy::Fail => {
                s.failed = true;
                self.close_to = Some((s.peer, s.session_id, s.version));
                self.gaps.clear();
                self.asm.reset();
            }
            GapPolicy::Skip => {
                s.position = to;
                s.status_due = true;
                self.gaps.discard_below(to);
                self.asm.reset();
                self.asm.skip_partial = true;
            }
        }
    }

    /// A heartbeat: where the stream ends (a lost tail is NAKed) and what the sender still
    /// holds.
    ///
    /// `retained_from` beyond the position means data the receiver misses may be gone. A plain
    /// heartbeat saying so only makes the gap be NAKed (an on-path forger who saw one datagram
    /// can send one); the loss is declared only on a [`frame::FLAG_LOSS`] heartbeat that echoes
    /// the nonce of one of the last NAKs, the sender's answer to a NAK for released data.
    fn on_heartbeat<F: FnMut(u64, u32, &[u8])>(
        &mut self,
        now: Instant,
        bytes: &[u8],
        deliver: &mut F,
    ) -> Result<(), DropReason> {
        let (hb, _) =
            frame::Heartbeat::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
        let (end, retained) = (hb.position.get(), hb.retained_from.get());
        let loss = hb.header.flags.get() & frame::FLAG_LOSS != 0;
        let nonce = hb.nonce.get();
        let Some(s) = self.session.as_mut() else {
            return Ok(());
        };
        if retained > end || end & 7 != 0 || retained & 7 != 0 {
            return Err(DropReason::BadLength);
        }
        if end >= MAX_POSITION {
            return Err(DropReason::OutOfWindow);
        }
        if loss && (nonce == 0 || !self.nak_nonces.contains(&nonce)) {
            // Not an answer to a NAK of ours: forged, or very late.
            return Err(DropReason::Unexpected);
        }
        // The sender never sends beyond the window it was granted, except after it released
        // what the receiver misses (then it confirms the loss, and has sent on from there).
        let window = self.config.window as u64;
        if !loss && end > s.position.saturating_add(window) {
            return Err(DropReason::OutOfWindow);
        }
        self.counters.heartbeats += 1;
        s.status_due = true;
        if retained > s.position && loss {
            // Confirmed: the sender answered our NAK, it no longer holds the data.
            self.nak_nonces = [0; NAK_NONCES];
            let from = s.position;
            self.counters.gaps_unrecoverable += 1;
            self.counters.last_unrecoverable = Some(now);
            self.unrecoverable(from, retained);
            if self.config.gap_policy == GapPolicy::Skip {
                self.drain(deliver);
            }
        }
        // An unconfirmed `retained > position` is a gap like any other: the tail up to `end`
        // (at least `retained`) is NAKed, and the sender either resends it or confirms.
        let position = self.position();
        let end = end.min(position.saturating_add(window));
        let delay = self.gap_nak_delay();
        self.gaps.set_tail(position, end, now, delay);
        Ok(())
    }

    fn on_rtt(&mut self, now: Instant, bytes: &[u8], flags: u16) -> Result<(), DropReason> {
        let (r, _) = frame::Rtt::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
        let ts = r.timestamp.get();
        if flags & frame::FLAG_REPLY != 0 {
            self.rtt.sample_echo(now, self.epoch, ts)?;
        } else if let Some(s) = self.session.as_mut() {
            s.rtt_echo = Some(ts);
        }
        Ok(())
    }

    #[inline]
    fn on_data<F: FnMut(u64, u32, &[u8])>(
        &mut self,
        now: Instant,
        bytes: &[u8],
        deliver: &mut F,
    ) -> Result<(), DropReason> {
        let (d, records) =
            frame::DataHeader::ref_from_prefix(bytes).map_err(|_| DropReason::Truncated)?;
        let p = d.position.get();
        if p & 7 != 0 {
            return Err(DropReason::BadLength);
        }
        if p >= MAX_POSITION {
            return Err(DropReason::OutOfWindow);
        }
        // `p < 2^63` and the span is less than a datagram plus a padding record: no overflow.
        let span = validate_records(records)?;
        let end = p + span;
        if end > MAX_POSITION {
            return Err(DropReason::OutOfWindow);
        }
        let window = self.config.window as u64;
        let Some(position) = self.session.as_ref().map(|s| s.position) else {
            return Ok(());
        };
        // Data beyond the highest held leaves a new hole (a gap detected).
        let hole = p > self.gaps.high(position);
        if end <= position {
            return Err(DropReason::Duplicate);
        }
        if end > position.saturating_add(window) {
            return Err(DropReason::OutOfWindow);
        }
        if p > position {
            // Out of order only: a group session draws the delay at random.
            let nak_delay = self.gap_nak_delay();
            match self.gaps.insert(p, end, now, nak_delay) {
                Insert::Duplicate => return Err(DropReason::Duplicate),
                Insert::Full => return Err(DropReason::OutOfWindow),
                Insert::New if hole => {
                    self.counters.gaps_detected += 1;
                    self.counters.last_gap = Some(now);
                }
                Insert::New => {}
            }
            let off = p as usize & self.mask;
            let ring = self.ring.as_mut_bytes();
            let first = records.len().min(ring.len() - off);
            ring[off..off + first].copy_from_slice(&records[..first]);
            ring[..records.len() - first].copy_from_slice(&records[first..]);
            return Ok(());
        }
        // In order, possibly overlapping what was already delivered: skip to the position.
        let mut walk = Records::new(records);
        let mut q = p;
        while q < position {
            let Some(Ok(r)) = walk.next() else {
                return Err(DropReason::BadLength);
            };
            q += r.span();
        }
        if q != position {
            return Err(DropReason::BadLength);
        }
        let (mut messages, mut bytes) = (0u64, 0u64);
        for r in walk {
            let Ok(r) = r else {
                break;
            };
            if r.is_padding() {
                break;
            }
            let at = q;
            q += r.span();
            let (h, payload) = (r.header, r.payload);
            let len = payload.len();
            if h.flags == frame::REC_BEGIN | frame::REC_END
                && len <= self.asm.max
                && !self.asm.active
                && !self.asm.skip_partial
            {
                // Fast path: a whole message, straight from the datagram.
                messages += 1;
                bytes += len as u64;
                deliver(at, h.type_id.get(), payload);
            } else {
                self.asm.record(
                    at,
                    h.flags,
                    h.type_id.get(),
                    payload,
                    deliver,
                    &mut self.counters,
                );
            }
        }
        self.counters.messages += messages;
        self.counters.bytes += bytes;
        if let Some(s) = self.session.as_mut() {
            s.position = end;
        }
        if self.gaps.first().is_some_and(|(start, _)| start <= end) {
            self.counters.gaps_repaired += 1;
        }
        self.gaps.progressed();
        self.drain(deliver);
        let position = self.position();
        self.gaps.set_tail(position, 0, now, self.config.nak_delay);
        Ok(())
    }

    /// Delivers what the out-of-order ring holds at the position.
    fn drain<F: FnMut(u64, u32, &[u8])>(&mut self, deliver: &mut F) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        while let Some((start, end)) = self.gaps.first() {
            if start > s.position {
                break;
            }
            self.gaps.pop_first();
            if end <= s.position {
                continue;
            }
            let ring = self.ring.as_bytes();
            let cap = ring.len();
            let mut q = s.position;
            let mut ok = true;
            while q < end {
                let off = q as usize & self.mask;
                let Ok((h, _)) = RecordHeader::read_from_prefix(&ring[off..]) else {
                    ok = false;
                    break;
                };
                let len = usize::from(h.len.get());
                if h.flags & frame::REC_PAD != 0 {
                    if len % 8 != 0 || q + (RECORD_HEADER_LEN + len) as u64 > end {
                        ok = false;
                        break;
                    }
                    q += (RECORD_HEADER_LEN + len) as u64;
                    continue;
                }
                let size = frame::record_size(len);
                if h.flags & !(frame::REC_BEGIN | frame::REC_END) != 0 || q + size as u64 > end {
                    ok = false;
                    break;
                }
                let start = off + RECORD_HEADER_LEN;
                let start = if start == cap { 0 } else { start };
                if start + len <= cap {
                    self.asm.record(
                        q,
                        h.flags,
                        h.type_id.get(),
                        &ring[start..start + len],
                        deliver,
                        &mut self.counters,
                    );
                } else {
                    let first = cap - start;
                    let scratch = self.scratch.as_mut_bytes();
                    scratch[..first].copy_from_slice(&ring[start..]);
                    scratch[first..len].copy_from_slice(&ring[..len - first]);
                    self.asm.record(
                        q,
                        h.flags,
                        h.type_id.get(),
                        &scratch[..len],
                        deliver,
                        &mut self.counters,
                    );
                }
                q += size as u64;
            }
            s.position = q;
            if !ok {
                // Inconsistent buffered data (forged or corrupted): ask for it again.
                self.counters.drop(DropReason::BadLength);
                break;
            }
        }
        if s.position.saturating_sub(s.last_status_pos) >= self.config.window as u64 / 4 {
            s.status_due = true;
        }
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has something to send that no timer
    /// waits for: an answer, a setup request, a close, an RTT reply, a status asked for or owed
    /// by the window. While this is false and [`poll_timeout`](Self::poll_timeout) is not
    /// reached, `poll_transmit` returns `None`, and a caller may skip it.
    pub fn transmit_pending(&self) -> bool {
        self.reply.is_some()
            || self.held.is_some()
            || self.key_reject.is_some()
            || self.need_setup.is_some()
            || self.close_to.is_some()
            || self.session.as_ref().is_some_and(|s| {
                s.connected
                    && !s.failed
                    && (s.rtt_echo.is_some()
                        || s.status_due
                        || s.position.saturating_sub(s.last_status_pos)
                            >= self.config.window as u64 / 4)
            })
    }

    /// Writes the next datagrams to send into `buf` (at least the MTU long), if any: up to
    /// `max_datagrams` to one destination, of one size (the last may be shorter), as many as
    /// fit, to send as one GSO batch ([`Transmit::segment_size`]). With `max_datagrams` 1, one
    /// datagram.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        max_datagrams: usize,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        poll_batch(self, now, max_datagrams, buf)
    }

    /// The next frame, built into `mtu - 32` and sealed: the handshake key for setup replies
    /// and setup requests, the session's keys for the rest.
    fn keyed_datagram(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        let end = buf.len() - crypto::TAG_LEN;
        let (to, len) = self.next_datagram(now, &mut buf[crypto::HEADER_LEN..end])?;
        let (h, _) = Header::read_from_prefix(&buf[crypto::HEADER_LEN..]).ok()?;
        let handshake = h.kind == FrameKind::SETUP_REPLY
            || (h.kind == FrameKind::STATUS && h.flags.get() & frame::FLAG_NEED_SETUP != 0);
        let n = if handshake {
            self.hs_keys.as_ref()?.seal(h.session_id.get(), buf, len)?
        } else if h.kind == FrameKind::CLOSE && self.close_keys.is_some() {
            let n = self.close_keys.as_mut()?.seal(buf, len)?;
            self.close_keys = None;
            n
        } else {
            self.session.as_mut()?.keys.as_mut()?.seal(buf, len)?
        };
        Some((to, n))
    }

    fn next_datagram(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        if let Some((to, r)) = self.reply.take() {
            return Some((to, frame::write(buf, &r)?));
        }
        if let Some((to, sid)) = self.need_setup.take() {
            let st = frame::Status {
                header: frame::header(
                    0,
                    FrameKind::STATUS,
                    frame::FLAG_NEED_SETUP,
                    sid,
                    self.config.stream_id,
                ),
                position: U64::new(0),
                window: U32::new(self.config.window as u32),
                receiver_id: U32::new(self.receiver_id),
            };
            return Some((to, frame::write(buf, &st)?));
        }
        if let Some((to, sid, version)) = self.close_to.take() {
            let c = frame::Close {
                header: frame::header(version, FrameKind::CLOSE, 0, sid, self.config.stream_id),
                position: U64::new(
                    self.session
                        .as_ref()
                        .map_or(self.close_position, |s| s.position),
                ),
            };
            return Some((to, frame::write(buf, &c)?));
        }
        // The random NAK retry delays of a group session (read before the session is
        // borrowed).
        let spread = self.group_nak_spread();
        let s = self.session.as_mut()?;
        if !s.connected || s.failed {
            return None;
        }
        let (version, sid, stream) = (s.version, s.session_id, self.config.stream_id);
        let hdr = move |kind, flags| frame::header(version, kind, flags, sid, stream);
        if let Some(ts) = s.rtt_echo.take() {
            let r = frame::Rtt {
                header: hdr(FrameKind::RTT, frame::FLAG_REPLY),
                timestamp: U64::new(ts),
            };
            return Some((s.peer, frame::write(buf, &r)?));
        }
        if self.gaps.next_nak().is_some_and(|t| t <= now) {
            let base = self
                .rtt
                .timeout(Duration::from_millis(1))
                .max(self.config.nak_delay);
            let max_ranges =
                ((buf.len() - size_of::<frame::NakHeader>()) / 16).min(frame::MAX_NAK_RANGES);
            self.nak_ranges.clear();
            let rng = &mut self.rng;
            self.gaps.due(
                s.position,
                now,
                base,
                self.config.nak_retry_max,
                &mut self.nak_ranges,
                max_ranges,
                || group_jitter(rng, spread),
            );
            if !self.nak_ranges.is_empty() {
                // A fresh nonce per NAK: only the sender, who receives it, can confirm loss.
                let nonce = self.rng.nonzero_u32();
                self.nak_nonces[self.nak_nonce_next] = nonce;
                self.nak_nonce_next = (self.nak_nonce_next + 1) % NAK_NONCES;
                let n = frame::NakHeader {
                    header: hdr(FrameKind::NAK, 0),
                    count: U16::new(self.nak_ranges.len() as u16),
                    reserved: U16::new(0),
                    nonce: U32::new(nonce),
                };
                let mut len = frame::write(buf, &n)?;
                for &(from, to) in &self.nak_ranges {
                    let r = frame::NakRange {
                        from: U64::new(from),
                        to: U64::new(to),
                    };
                    len += frame::write(&mut buf[len..], &r)?;
                }
                self.counters.naks_sent += 1;
                return Some((s.peer, len));
            }
        }
        let window = self.config.window as u64;
        if s.status_due
            || now >= s.next_status
            || s.position.saturating_sub(s.last_status_pos) >= window / 4
        {
            s.status_due = false;
            s.next_status = now + self.config.status_interval;
            s.last_status_pos = s.position;
            self.counters.status += 1;
            let st = frame::Status {
                header: hdr(FrameKind::STATUS, 0),
                position: U64::new(s.position),
                window: U32::new(window as u32),
                receiver_id: U32::new(self.receiver_id),
            };
            if self.group {
                return Some((s.peer, frame::write(buf, &self.tagged_status(st))?));
            }
            return Some((s.peer, frame::write(buf, &st)?));
        }
        if now >= s.next_rtt {
            // A group receiver probes again soon until its first sample: its NAK window is
            // the widest (`group_nak_backoff`) without one, and the first probe can reach the
            // sender before the acceptance that makes it a member (and be dropped).
            let interval = if self.group && self.rtt.smoothed().is_none() {
                self.config.rtt_interval.min(FIRST_GROUP_RTT_RETRY)
            } else {
                self.config.rtt_interval
            };
            s.next_rtt = now + interval;
            let ts = nanos(now.saturating_duration_since(self.epoch));
            let r = frame::Rtt {
                header: hdr(FrameKind::RTT, 0),
                timestamp: U64::new(ts),
            };
            return Some((s.peer, frame::write(buf, &r)?));
        }
        None
    }
}

impl Batched for Receiver {
    fn batch_state(&mut self) -> (usize, &mut Held) {
        (self.config.mtu, &mut self.held)
    }

    /// The next datagram, sealed, and where it goes.
    #[inline]
    fn build_next(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        let (destination, len) = if let Some((to, r)) = self.key_reject.take() {
            // Plain whatever this end's key: the peer cannot open it otherwise.
            let len = frame::write(buf, &r)?;
            frame::seal(&mut buf[..len], true);
            (to, len)
        } else if self.hs_keys.is_some() {
            self.keyed_datagram(now, buf)?
        } else {
            let (to, len) = self.next_datagram(now, buf)?;
            frame::seal(&mut buf[..len], self.config.checksum);
            (to, len)
        };
        self.counters.datagrams_sent += 1;
        Some((destination, len))
    }
}

/// Group sessions (the sender streams to a multicast group): random NAK delays, NAK echoes,
/// tagged status. See [Groups](super#groups).
impl Receiver {
    /// Whether the current session's sender streams to a group (its setup said so).
    ///
    /// ```
    /// use std::time::Instant;
    /// use conduit_proto::{Config, Receiver};
    /// let rx = Receiver::new(Config::default(), Instant::now(), 1).unwrap();
    /// assert!(!rx.is_group(), "no session yet");
    /// ```
    pub fn is_group(&self) -> bool {
        self.group && self.session.is_some()
    }

    /// The delay before the first NAK of a new gap: [`Config::nak_delay`], and on a group
    /// session a random delay on top (see [`group_nak_spread`](Self::group_nak_spread)).
    fn gap_nak_delay(&mut self) -> Duration {
        let spread = self.group_nak_spread();
        self.config.nak_delay + group_jitter(&mut self.rng, spread)
    }

    /// On a group session, the bound `T` of the random NAK delays (`group_nak_window`:
    /// `min(group_nak_backoff, max(16 * srtt, 8 * (srtt + 4 * rttvar), nak_delay))`, or
    /// `group_nak_backoff` before an RTT sample) and the group size estimate they assume
    /// (`group_nak_delay`): before a gap's first NAK, before each retry, and past an echo's
    /// hold. `None` on a unicast session.
    fn group_nak_spread(&self) -> Option<(Duration, u32)> {
        if !self.group {
            return None;
        }
        let max = self.config.group_nak_backoff;
        let base = self.config.nak_delay;
        let t = self.rtt.smoothed().map_or(max, |srtt| {
            super::group::group_nak_window(srtt, self.rtt.variation(), base, max)
        });
        Some((t, self.config.group_size_estimate))
    }

    /// A status with this receiver's tag (version 3).
    fn tagged_status(&self, status: frame::Status) -> frame::StatusV3 {
        frame::StatusV3 {
            status,
            tag: U32::new(self.config.group_tag.unwrap_or(0)),
            status_flags: U32::new(if self.config.group_tag.is_some() {
                frame::STATUS_TAGGED
            } else {
                0
            }),
        }
    }

    /// The group's sender echoes NAK ranges it is repairing: gaps they cover wait for the
    /// repair instead of being NAKed by this receiver too.
    fn on_nak_echo(&mut self, now: Instant, bytes: &[u8]) -> Result<(), DropReason> {
        if !self.group {
            return Err(DropReason::Unexpected);
        }
        let (_, ranges) = frame::nak_ranges(bytes)?;
        // The repair follows the echo: wait about an RTT for it.
        let hold = self
            .rtt
            .timeout(Duration::from_millis(1))
            .max(self.config.nak_delay);
        let position = self.position();
        let spread = self.group_nak_spread();
        for r in ranges {
            let (from, to) = (r.from.get(), r.to.get());
            if from < to && to <= MAX_POSITION {
                let rng = &mut self.rng;
                self.gaps
                    .suppress(position, from, to, now + hold, || group_jitter(rng, spread));
            }
        }
        Ok(())
    }
}

/// How soon a group receiver probes the RTT again while it has no sample.
const FIRST_GROUP_RTT_RETRY: Duration = Duration::from_millis(5);

/// A group receiver's random NAK delay over `spread` (see `Receiver::group_nak_spread`); zero
/// on a unicast session.
fn group_jitter(rng: &mut Rng, spread: Option<(Duration, u32)>) -> Duration {
    spread.map_or(Duration::ZERO, |(t, n)| {
        super::group::group_nak_delay(rng, t, n)
    })
}
