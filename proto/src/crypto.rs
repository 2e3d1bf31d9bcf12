//! Optional authenticated encryption of every datagram with a pre-shared key (AES-256-GCM).
//!
//! # Wire
//! A keyed datagram is a [`CryptoHeader`] (16 bytes: [`MAGIC`], phase, reserved zero, session
//! id, packet number), the ciphertext of the plain frame, and a 16-byte tag: [`OVERHEAD`] = 32
//! bytes more than the plain frame. The header is the associated data, so nothing in it can be
//! changed either. Plain frames start with their version byte (1 or 2), never [`MAGIC`], so one
//! byte tells a keyed datagram from a plain one ([`is_keyed`]).
//!
//! # Keys
//! * Phase 0, [`HandshakeKeys`]: HKDF-SHA256(ikm = PSK, salt = `"conduit v2 handshake"`,
//!   info = `"hs"`). Setup, SetupReply and the need-setup Status use it, before both ends
//!   know the session's nonces. Each datagram gets a random packet number from the OS random
//!   source, since a stateless receiver keeps no counter; there is no replay window in this
//!   phase (the setup cookie bounds what a replayed setup can do).
//! * Phase 1, [`SessionKeys`]: one key per direction, HKDF-SHA256(ikm = PSK, salt = publisher
//!   nonce || receiver nonce || session id (little-endian), info = `"p2s"` or `"s2p"`). Fresh
//!   nonces from both ends make every session's keys new, so packet numbers can start at 0 in
//!   each direction and count up.
//!
//! The AES-GCM nonce is the direction (little-endian u32: 0 publisher to subscriber, 1 the
//! other way) followed by the packet number (little-endian u64). The direction keeps the two
//! ends from ever using the same nonce with the handshake key, which both directions share;
//! within a direction, session packet numbers never repeat (a counter that refuses to wrap) and
//! handshake ones are 64 random bits.
//!
//! # Replay
//! The opening side of each session direction keeps a sliding window: the highest packet
//! number that authenticated and a bitmap of the [`REPLAY_WINDOW`] numbers below it. A number
//! seen before, or older than the window, is dropped as [`DropReason::Replay`]. A datagram
//! changes the window only after its tag verified, so forged datagrams cannot move it.
//!
//! # What a key protects, and what not
//! With a key, every datagram is encrypted and authenticated: an off-path or on-path attacker
//! without the key can neither read, forge, alter nor replay data, and cannot take over or
//! close a session. It does not hide traffic patterns (sizes, timing, addresses), does not help
//! when a host holding the key is compromised, and does not stop a flood of datagrams from
//! using bandwidth and CPU (each is dropped after one tag check).

use core::mem::size_of;

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::DropReason;

/// First byte of every keyed datagram (plain frames start with their version, 1 or 2).
pub const MAGIC: u8 = 0xCE;
/// Phase of datagrams sealed with the handshake key.
pub const PHASE_HANDSHAKE: u8 = 0;
/// Phase of datagrams sealed with a session key.
pub const PHASE_SESSION: u8 = 1;
/// Length of a pre-shared key.
pub const KEY_LEN: usize = 32;
/// Length of the setup nonces each end contributes to the session keys.
pub const SESSION_NONCE_LEN: usize = 16;
/// Length of the [`CryptoHeader`] in front of the ciphertext.
pub const HEADER_LEN: usize = size_of::<CryptoHeader>();
/// Length of the authentication tag after the ciphertext.
pub const TAG_LEN: usize = 16;
/// Bytes a keyed datagram has beyond its plain frame: frames of a keyed endpoint are built into
/// `mtu - OVERHEAD`.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Packet numbers accepted below the highest one seen (each at most once).
pub const REPLAY_WINDOW: u64 = (WINDOW_WORDS as u64 - 1) * 64;

const WINDOW_WORDS: usize = 32;
const HANDSHAKE_SALT: &[u8] = b"conduit v2 handshake";
const HANDSHAKE_INFO: &[u8] = b"hs";

/// Header of a keyed datagram, also its associated data.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CryptoHeader {
    /// Always [`MAGIC`].
    pub magic: u8,
    /// [`PHASE_HANDSHAKE`] or [`PHASE_SESSION`].
    pub phase: u8,
    /// Zero.
    pub reserved: U16,
    /// The publisher's session id (the same as in the frame inside).
    pub session_id: U32,
    /// Packet number: random in the handshake phase, counting from 0 per direction in the
    /// session phase.
    pub packet_number: U64,
}
const _: () = assert!(size_of::<CryptoHeader>() == 16);
const _: () = assert!(OVERHEAD == 32);

impl CryptoHeader {
    /// The header of a keyed datagram, or `None` when it is too short or not keyed (the
    /// caller dispatches on [`phase`](Self::phase) before opening).
    pub fn peek(datagram: &[u8]) -> Option<&CryptoHeader> {
        let (h, _) = CryptoHeader::ref_from_prefix(datagram).ok()?;
        (h.magic == MAGIC).then_some(h)
    }
}

/// Whether a datagram is keyed (starts with [`MAGIC`]). A plain endpoint drops such datagrams
/// as [`DropReason::Encrypted`]; a keyed one drops the others as [`DropReason::Plaintext`].
#[inline]
pub fn is_keyed(datagram: &[u8]) -> bool {
    datagram.first() == Some(&MAGIC)
}

/// A 32-byte pre-shared key. Its `Debug` prints no key material; the bytes are overwritten
/// when it is dropped (best effort: copies the compiler made are not reached).
#[derive(Clone)]
pub struct Psk([u8; KEY_LEN]);

impl Psk {
    /// A key from its 32 bytes.
    pub fn new(bytes: [u8; KEY_LEN]) -> Psk {
        Psk(bytes)
    }

    /// A key from a slice, `None` unless it is exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Psk> {
        Some(Psk(bytes.try_into().ok()?))
    }
}

impl core::fmt::Debug for Psk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Psk(..)")
    }
}

impl Drop for Psk {
    fn drop(&mut self) {
        self.0 = [0; KEY_LEN];
        core::hint::black_box(&self.0);
    }
}

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Publisher (`Sender`) to subscriber (`Receiver`): Setup, Data, Heartbeat, Close.
    PubToSub,
    /// Subscriber to publisher: SetupReply, Status, NAK, RTT echoes, Close.
    SubToPub,
}

impl Direction {
    /// The other direction.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::PubToSub => Direction::SubToPub,
            Direction::SubToPub => Direction::PubToSub,
        }
    }

    fn code(self) -> u32 {
        match self {
            Direction::PubToSub => 0,
            Direction::SubToPub => 1,
        }
    }

    fn info(self) -> &'static [u8] {
        match self {
            Direction::PubToSub => b"p2s",
            Direction::SubToPub => b"s2p",
        }
    }
}

fn derive(psk: &Psk, salt: &[u8], info: &[u8]) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&psk.0);
    // 32 bytes are far below HKDF-SHA256's limit of 255 * 32, so expansion cannot fail.
    let info = [info];
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .expect("HKDF-SHA256 expands to 32 bytes");
    LessSafeKey::new(UnboundKey::from(okm))
}

fn nonce(direction: Direction, packet_number: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&direction.code().to_le_bytes());
    n[4..].copy_from_slice(&packet_number.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Writes the header and seals `buf[HEADER_LEN..HEADER_LEN + len]` in place, the tag after it.
fn seal_with(
    key: &LessSafeKey,
    direction: Direction,
    phase: u8,
    session_id: u32,
    packet_number: u64,
    buf: &mut [u8],
    len: usize,
) -> Option<usize> {
    let total = len.checked_add(OVERHEAD)?;
    let buf = buf.get_mut(..total)?;
    let header = CryptoHeader {
        magic: MAGIC,
        phase,
        reserved: U16::new(0),
        session_id: U32::new(session_id),
        packet_number: U64::new(packet_number),
    };
    let (head, rest) = buf.split_at_mut(HEADER_LEN);
    head.copy_from_slice(header.as_bytes());
    let (body, tag_out) = rest.split_at_mut(len);
    let tag = key
        .seal_in_place_separate_tag(
            nonce(direction, packet_number),
            Aad::from(header.as_bytes()),
            body,
        )
        .ok()?;
    tag_out.copy_from_slice(tag.as_ref());
    Some(total)
}

/// Checks the header of a keyed datagram, copies its ciphertext to `out` and opens it there.
/// Returns the header and the plaintext; changes nothing but `out`.
fn open_with<'a>(
    key: &LessSafeKey,
    direction: Direction,
    phase: u8,
    session_id: Option<u32>,
    datagram: &[u8],
    out: &'a mut [u8],
) -> Result<(CryptoHeader, &'a [u8]), DropReason> {
    if !is_keyed(datagram) {
        return Err(DropReason::Plaintext);
    }
    let Some(body_len) = datagram.len().checked_sub(OVERHEAD) else {
        return Err(DropReason::Truncated);
    };
    let (header, rest) =
        CryptoHeader::read_from_prefix(datagram).map_err(|_| DropReason::Truncated)?;
    if header.reserved.get() != 0 || header.phase > PHASE_SESSION {
        return Err(DropReason::BadVersion);
    }
    if header.phase != phase {
        return Err(DropReason::Unexpected);
    }
    if session_id.is_some_and(|s| s != header.session_id.get()) {
        return Err(DropReason::WrongSession);
    }
    let (body, tag) = rest.split_at(body_len);
    let tag = Tag::try_from(tag).map_err(|_| DropReason::Truncated)?;
    // A datagram larger than the caller's scratch cannot be one the peer was allowed to send.
    let out = out.get_mut(..body_len).ok_or(DropReason::BadLength)?;
    out.copy_from_slice(body);
    let plain = key
        .open_in_place_separate_tag(
            nonce(direction, header.packet_number.get()),
            Aad::from(header.as_bytes()),
            tag,
            out,
            0..,
        )
        .map_err(|_| DropReason::AuthFailed)?;
    Ok((header, plain))
}

/// Phase 0: the key derived from the PSK alone, for the setup exchange of one endpoint.
///
/// Holds the key and the OS random source; cheap to keep for the endpoint's lifetime.
pub struct HandshakeKeys {
    key: LessSafeKey,
    sends: Direction,
    rng: SystemRandom,
}

impl core::fmt::Debug for HandshakeKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HandshakeKeys")
            .field("sends", &self.sends)
            .finish_non_exhaustive()
    }
}

impl HandshakeKeys {
    /// The handshake keys of an endpoint that sends in direction `sends` (a publisher sends
    /// [`Direction::PubToSub`]) and opens the other.
    pub fn new(psk: &Psk, sends: Direction) -> HandshakeKeys {
        HandshakeKeys {
            key: derive(psk, HANDSHAKE_SALT, HANDSHAKE_INFO),
            sends,
            rng: SystemRandom::new(),
        }
    }

    /// Seals the plain frame at `buf[HEADER_LEN..HEADER_LEN + len]` in place: writes the
    /// header (phase 0, `session_id`, a random packet number) before it and the tag after it.
    /// Returns the datagram length, `len + OVERHEAD`, at the start of `buf`.
    ///
    /// `None` when `buf` is shorter than `len + OVERHEAD`, or the OS random source failed.
    pub fn seal(&self, session_id: u32, buf: &mut [u8], len: usize) -> Option<usize> {
        let mut pn = [0u8; 8];
        self.rng.fill(&mut pn).ok()?;
        seal_with(
            &self.key,
            self.sends,
            PHASE_HANDSHAKE,
            session_id,
            u64::from_le_bytes(pn),
            buf,
            len,
        )
    }

    /// Opens a phase-0 datagram from the peer into `out` and returns the plain frame, a prefix
    /// of `out` (pass an 8-aligned buffer so payloads stay aligned). `session_id`: the session
    /// the datagram must belong to, or `None` to accept any (a receiver opening a Setup; the
    /// authenticated id is then [`CryptoHeader::peek`]`(datagram).session_id`, and the caller
    /// checks that the frame inside carries the same one).
    ///
    /// # Errors
    /// The drop reason, and nothing changed: [`DropReason::Plaintext`] (not keyed),
    /// [`DropReason::Truncated`] (shorter than [`OVERHEAD`]), [`DropReason::BadVersion`]
    /// (unknown phase or reserved bits), [`DropReason::Unexpected`] (a session-phase datagram),
    /// [`DropReason::WrongSession`], [`DropReason::BadLength`] (`out` shorter than the
    /// ciphertext), [`DropReason::AuthFailed`] (wrong key, or altered on the way).
    pub fn open<'a>(
        &self,
        session_id: Option<u32>,
        datagram: &[u8],
        out: &'a mut [u8],
    ) -> Result<&'a [u8], DropReason> {
        open_with(
            &self.key,
            self.sends.reverse(),
            PHASE_HANDSHAKE,
            session_id,
            datagram,
            out,
        )
        .map(|(_, plain)| plain)
    }
}

/// Phase 1: the keys of one session, one per direction, with the packet counter of the
/// direction this endpoint sends and the replay window of the one it opens.
///
/// Make a new one for every session (both nonces are fresh per session).
pub struct SessionKeys {
    seal_key: LessSafeKey,
    open_key: LessSafeKey,
    sends: Direction,
    session_id: u32,
    next: u64,
    window: ReplayWindow,
}

impl core::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("sends", &self.sends)
            .field("session_id", &self.session_id)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// The keys of session `session_id` for an endpoint that sends in direction `sends` (the
    /// publisher: [`Direction::PubToSub`]), from the PSK, the publisher's Setup nonce and the
    /// receiver's SetupReply nonce. Both ends derive the same two keys.
    pub fn new(
        psk: &Psk,
        sends: Direction,
        publisher_nonce: &[u8; SESSION_NONCE_LEN],
        receiver_nonce: &[u8; SESSION_NONCE_LEN],
        session_id: u32,
    ) -> SessionKeys {
        let mut salt = [0u8; 2 * SESSION_NONCE_LEN + 4];
        salt[..SESSION_NONCE_LEN].copy_from_slice(publisher_nonce);
        salt[SESSION_NONCE_LEN..2 * SESSION_NONCE_LEN].copy_from_slice(receiver_nonce);
        salt[2 * SESSION_NONCE_LEN..].copy_from_slice(&session_id.to_le_bytes());
        SessionKeys {
            seal_key: derive(psk, &salt, sends.info()),
            open_key: derive(psk, &salt, sends.reverse().info()),
            sends,
            session_id,
            next: 0,
            window: ReplayWindow::default(),
        }
    }

    /// The session these keys belong to.
    pub fn session_id(&self) -> u32 {
        self.session_id
    }

    /// Seals the plain frame at `buf[HEADER_LEN..HEADER_LEN + len]` in place: writes the
    /// header (phase 1, the session id, the next packet number) before it and the tag after
    /// it. Returns the datagram length, `len + OVERHEAD`, at the start of `buf`.
    ///
    /// `None` when `buf` is shorter than `len + OVERHEAD` (no packet number is used then), or
    /// after 2^64 - 1 datagrams (a number is never used twice).
    pub fn seal(&mut self, buf: &mut [u8], len: usize) -> Option<usize> {
        let pn = self.next;
        let after = pn.checked_add(1)?;
        let n = seal_with(
            &self.seal_key,
            self.sends,
            PHASE_SESSION,
            self.session_id,
            pn,
            buf,
            len,
        )?;
        self.next = after;
        Some(n)
    }

    /// Opens a phase-1 datagram from the peer into `out` and returns the plain frame, a prefix
    /// of `out` (pass an 8-aligned buffer so payloads stay aligned). Its packet number enters
    /// the replay window only once the tag verified.
    ///
    /// # Errors
    /// The drop reason, and nothing changed: [`DropReason::Plaintext`] (not keyed),
    /// [`DropReason::Truncated`], [`DropReason::BadVersion`] (unknown phase or reserved bits),
    /// [`DropReason::Unexpected`] (a handshake-phase datagram), [`DropReason::WrongSession`],
    /// [`DropReason::Replay`] (seen before, or older than [`REPLAY_WINDOW`]),
    /// [`DropReason::BadLength`] (`out` shorter than the ciphertext),
    /// [`DropReason::AuthFailed`] (wrong key or session, or altered on the way).
    pub fn open<'a>(&mut self, datagram: &[u8], out: &'a mut [u8]) -> Result<&'a [u8], DropReason> {
        // Refuse replays before spending a decryption on them (the header is not trusted yet,
        // so this only rejects; the window moves after the tag verified).
        if let Some(h) = CryptoHeader::peek(datagram) {
            if h.phase == PHASE_SESSION
                && h.session_id.get() == self.session_id
                && !self.window.fresh(h.packet_number.get())
            {
                return Err(DropReason::Replay);
            }
        }
        let (header, plain) = open_with(
            &self.open_key,
            self.sends.reverse(),
            PHASE_SESSION,
            Some(self.session_id),
            datagram,
            out,
        )?;
        self.window.commit(header.packet_number.get());
        Ok(plain)
    }
}

/// Sliding replay window: the highest number committed and a bitmap ring of the numbers below
/// it, one bit per number, indexed by number modulo the ring size (RFC 6479). The ring has one
/// word more than the window needs, so moving forward clears whole words.
#[derive(Debug, Clone, Default)]
struct ReplayWindow {
    /// Highest number committed, `None` before the first.
    highest: Option<u64>,
    bits: [u64; WINDOW_WORDS],
}

impl ReplayWindow {
    /// The word of block `block` (64 numbers) in the ring.
    fn word(block: u64) -> usize {
        (block % WINDOW_WORDS as u64) as usize
    }

    /// Whether `pn` is new and within the window.
    fn fresh(&self, pn: u64) -> bool {
        match self.highest {
            None => true,
            Some(h) if pn > h => true,
            Some(h) if h - pn >= REPLAY_WINDOW => false,
            Some(_) => self.bits[Self::word(pn / 64)] & (1 << (pn % 64)) == 0,
        }
    }

    /// Records `pn` as seen (call only after [`fresh`](Self::fresh) and the tag verified).
    fn commit(&mut self, pn: u64) {
        match self.highest {
            Some(h) if pn <= h => {}
            _ => {
                // Clear the words of the blocks entered beyond the previous highest one (at
                // most the whole ring).
                let first = self.highest.map_or(0, |h| h / 64 + 1);
                let last = pn / 64;
                let n = (last + 1).saturating_sub(first).min(WINDOW_WORDS as u64);
                for block in last + 1 - n..=last {
                    self.bits[Self::word(block)] = 0;
                }
                self.highest = Some(pn);
            }
        }
        self.bits[Self::word(pn / 64)] |= 1 << (pn % 64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const PN: [u8; 16] = [7; 16];
    const RN: [u8; 16] = [9; 16];
    const SID: u32 = 0xDEAD_BEEF;

    fn psk(b: u8) -> Psk {
        Psk::new([b; KEY_LEN])
    }

    fn pair(k: &Psk) -> (SessionKeys, SessionKeys) {
        (
            SessionKeys::new(k, Direction::PubToSub, &PN, &RN, SID),
            SessionKeys::new(k, Direction::SubToPub, &PN, &RN, SID),
        )
    }

    /// A plain frame at `HEADER_LEN` in a buffer with room for the tag.
    fn framed(plain: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; plain.len() + OVERHEAD];
        buf[HEADER_LEN..HEADER_LEN + plain.len()].copy_from_slice(plain);
        buf
    }

    fn seal_session(k: &mut SessionKeys, plain: &[u8]) -> Vec<u8> {
        let mut buf = framed(plain);
        let n = k.seal(&mut buf, plain.len()).unwrap();
        buf.truncate(n);
        buf
    }

    fn seal_hs(k: &HandshakeKeys, sid: u32, plain: &[u8]) -> Vec<u8> {
        let mut buf = framed(plain);
        let n = k.seal(sid, &mut buf, plain.len()).unwrap();
        buf.truncate(n);
        buf
    }

    fn frame(i: u8) -> Vec<u8> {
        let mut f = vec![2u8, 3, 0, 0];
        f.extend_from_slice(&SID.to_le_bytes());
        f.extend((0..40).map(|j| j ^ i));
        f
    }

    #[test]
    fn session_round_trip_both_directions() {
        let (mut p, mut s) = pair(&psk(1));
        let mut out = vec![0u64; 256];
        let out = out.as_mut_bytes();
        for i in 0..5u8 {
            let f = frame(i);
            let d = seal_session(&mut p, &f);
            assert_eq!(d.len(), f.len() + OVERHEAD);
            let h = CryptoHeader::peek(&d).unwrap();
            assert_eq!((h.phase, h.session_id.get()), (PHASE_SESSION, SID));
            assert_eq!(h.packet_number.get(), u64::from(i));
            assert_ne!(&d[HEADER_LEN..HEADER_LEN + f.len()], &f[..]);
            assert_eq!(s.open(&d, out).unwrap(), &f[..]);

            let d = seal_session(&mut s, &f);
            assert_eq!(p.open(&d, out).unwrap(), &f[..]);
        }
        // An empty frame seals and opens too.
        let d = seal_session(&mut p, &[]);
        assert_eq!(s.open(&d, out).unwrap(), &[] as &[u8]);
    }

    #[test]
    fn handshake_round_trip_both_directions() {
        let k = psk(2);
        let (p, s) = (
            HandshakeKeys::new(&k, Direction::PubToSub),
            HandshakeKeys::new(&k, Direction::SubToPub),
        );
        let mut out = [0u8; 128];
        let f = frame(1);
        let d = seal_hs(&p, SID, &f);
        assert_eq!(CryptoHeader::peek(&d).unwrap().phase, PHASE_HANDSHAKE);
        assert_eq!(s.open(None, &d, &mut out).unwrap(), &f[..]);
        assert_eq!(s.open(Some(SID), &d, &mut out).unwrap(), &f[..]);
        assert_eq!(
            s.open(Some(SID + 1), &d, &mut out),
            Err(DropReason::WrongSession)
        );
        // No replay window in phase 0: the same datagram opens again.
        assert!(s.open(None, &d, &mut out).is_ok());
        let d = seal_hs(&s, SID, &f);
        assert_eq!(p.open(Some(SID), &d, &mut out).unwrap(), &f[..]);
        // The direction is part of the nonce: an endpoint cannot open its own datagrams.
        assert_eq!(s.open(None, &d, &mut out), Err(DropReason::AuthFailed));
    }

    #[test]
    fn every_flipped_bit_fails_and_changes_nothing() {
        let k = psk(3);
        let (mut p, mut s) = pair(&k);
        let hs = HandshakeKeys::new(&k, Direction::PubToSub);
        let hr = HandshakeKeys::new(&k, Direction::SubToPub);
        let mut out = [0u8; 128];
        let f = frame(3);
        let d = seal_session(&mut p, &f);
        let h = seal_hs(&hs, SID, &f);
        for bit in 0..d.len() * 8 {
            let mut e = d.clone();
            e[bit / 8] ^= 1 << (bit % 8);
            assert!(s.open(&e, &mut out).is_err(), "session bit {bit}");
            let mut e = h.clone();
            e[bit / 8] ^= 1 << (bit % 8);
            assert!(hr.open(None, &e, &mut out).is_err(), "handshake bit {bit}");
        }
        // A body or tag bit is an authentication failure; no corruption moved the window.
        let mut e = d.clone();
        e[HEADER_LEN + 3] ^= 0x10;
        assert_eq!(s.open(&e, &mut out), Err(DropReason::AuthFailed));
        let mut e = d.clone();
        *e.last_mut().unwrap() ^= 1;
        assert_eq!(s.open(&e, &mut out), Err(DropReason::AuthFailed));
        assert_eq!(s.open(&d, &mut out).unwrap(), &f[..]);
    }

    #[test]
    fn a_forged_packet_number_does_not_move_the_window() {
        let (mut p, mut s) = pair(&psk(4));
        let mut out = [0u8; 128];
        let d0 = seal_session(&mut p, &frame(0));
        let mut forged = d0.clone();
        forged[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(s.open(&forged, &mut out), Err(DropReason::AuthFailed));
        assert!(s.open(&d0, &mut out).is_ok());
    }

    #[test]
    fn wrong_key_or_session_fails() {
        let (mut p, _) = pair(&psk(5));
        let (_, mut wrong) = pair(&psk(6));
        let mut other_nonce = SessionKeys::new(&psk(5), Direction::SubToPub, &PN, &[1; 16], SID);
        let mut out = [0u8; 128];
        let d = seal_session(&mut p, &frame(5));
        assert_eq!(wrong.open(&d, &mut out), Err(DropReason::AuthFailed));
        assert_eq!(other_nonce.open(&d, &mut out), Err(DropReason::AuthFailed));
        let mut other_sid = SessionKeys::new(&psk(5), Direction::SubToPub, &PN, &RN, SID + 1);
        assert_eq!(other_sid.open(&d, &mut out), Err(DropReason::WrongSession));

        let hs = HandshakeKeys::new(&psk(5), Direction::PubToSub);
        let hr = HandshakeKeys::new(&psk(6), Direction::SubToPub);
        let d = seal_hs(&hs, SID, &frame(5));
        assert_eq!(hr.open(None, &d, &mut out), Err(DropReason::AuthFailed));
    }

    #[test]
    fn phases_do_not_mix() {
        let k = psk(7);
        let (mut p, mut s) = pair(&k);
        let hs = HandshakeKeys::new(&k, Direction::PubToSub);
        let hr = HandshakeKeys::new(&k, Direction::SubToPub);
        let mut out = [0u8; 128];
        let d = seal_hs(&hs, SID, &frame(7));
        assert_eq!(s.open(&d, &mut out), Err(DropReason::Unexpected));
        let d = seal_session(&mut p, &frame(7));
        assert_eq!(hr.open(None, &d, &mut out), Err(DropReason::Unexpected));
        let mut e = d.clone();
        e[1] = 2;
        assert_eq!(s.open(&e, &mut out), Err(DropReason::BadVersion));
        let mut e = d.clone();
        e[2] = 1;
        assert_eq!(s.open(&e, &mut out), Err(DropReason::BadVersion));
    }

    #[test]
    fn replays_and_too_old_numbers_are_refused() {
        let (mut p, mut s) = pair(&psk(8));
        let mut out = [0u8; 128];
        let all: Vec<_> = (0..REPLAY_WINDOW + 10)
            .map(|i| seal_session(&mut p, &frame(i as u8)))
            .collect();
        // Out of order within the window: each once.
        for i in [5, 3, 4, 0, 1, 2] {
            assert!(s.open(&all[i], &mut out).is_ok(), "{i}");
            assert_eq!(s.open(&all[i], &mut out), Err(DropReason::Replay), "{i}");
        }
        // Jump to the end: 8 and 9 have fallen out of the window, 10 is its oldest.
        let last = all.len() - 1;
        assert!(s.open(&all[last], &mut out).is_ok());
        assert_eq!(s.open(&all[last], &mut out), Err(DropReason::Replay));
        assert_eq!(s.open(&all[9], &mut out), Err(DropReason::Replay));
        assert_eq!(s.open(&all[0], &mut out), Err(DropReason::Replay));
        assert!(s.open(&all[10], &mut out).is_ok());
        assert!(s.open(&all[last - 1], &mut out).is_ok());
        assert_eq!(s.open(&all[10], &mut out), Err(DropReason::Replay));
    }

    #[test]
    fn window_slides_over_a_long_stream() {
        // Every number opens once and only once, with reordering and duplicates, across many
        // windows; the window itself is checked against a set of every number seen.
        let mut w = ReplayWindow::default();
        let mut seen = HashSet::new();
        let mut top: Option<u64> = None;
        let mut x = 0x1234_5678_u64;
        for step in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let base = step / 2;
            let pn = match x % 4096 {
                _ if step % 20_000 == 19_999 => base + 2 * REPLAY_WINDOW + (x >> 12) % 500,
                1..=400 => base.saturating_sub((x >> 12) % (2 * REPLAY_WINDOW)),
                401..=800 => base + (x >> 12) % 1500,
                _ => base.saturating_sub((x >> 12) % 64),
            };
            let expect =
                !seen.contains(&pn) && top.is_none_or(|t| pn > t || t - pn < REPLAY_WINDOW);
            assert_eq!(w.fresh(pn), expect, "step {step} pn {pn} top {top:?}");
            if expect {
                w.commit(pn);
                seen.insert(pn);
                top = Some(top.map_or(pn, |t| t.max(pn)));
            }
        }
        assert!(seen.len() > 30_000, "{}", seen.len());
    }

    #[test]
    fn window_after_a_jump_forgets_old_bits() {
        let mut w = ReplayWindow::default();
        w.commit(0);
        w.commit(1);
        // Far ahead: the ring wraps exactly, the old bits of slot 0 must be cleared.
        let jump = (WINDOW_WORDS as u64) * 64;
        w.commit(jump + 1);
        assert!(w.fresh(jump));
        assert!(!w.fresh(jump + 1));
        w.commit(jump);
        assert!(!w.fresh(jump));
        assert!(!w.fresh(1));
        // The very last number.
        w.commit(u64::MAX);
        assert!(!w.fresh(u64::MAX));
        assert!(w.fresh(u64::MAX - 1));
    }

    #[test]
    fn nonces_never_repeat_within_a_direction() {
        let k = psk(9);
        let (mut p, mut s) = pair(&k);
        let mut seen = HashSet::new();
        for i in 0..3000u32 {
            let d = seal_session(&mut p, &frame(i as u8));
            let h = CryptoHeader::peek(&d).unwrap();
            assert!(seen.insert(h.packet_number.get()), "{i}");
        }
        // A failed seal (short buffer) uses no number.
        let mut short = [0u8; 20];
        assert_eq!(p.seal(&mut short, 8), None);
        let d = seal_session(&mut p, &frame(0));
        assert_eq!(CryptoHeader::peek(&d).unwrap().packet_number.get(), 3000);
        // The other direction counts on its own (its nonce differs by the direction).
        let d = seal_session(&mut s, &frame(0));
        assert_eq!(CryptoHeader::peek(&d).unwrap().packet_number.get(), 0);
        // The counter refuses to wrap.
        p.next = u64::MAX;
        let mut buf = framed(&frame(0));
        assert_eq!(p.seal(&mut buf, frame(0).len()), None);

        let hs = HandshakeKeys::new(&k, Direction::PubToSub);
        let mut seen = HashSet::new();
        for _ in 0..3000 {
            let d = seal_hs(&hs, SID, &frame(0));
            assert!(seen.insert(CryptoHeader::peek(&d).unwrap().packet_number.get()));
        }
    }

    #[test]
    fn plaintext_and_keyed_are_told_apart() {
        let k = psk(10);
        let (mut p, mut s) = pair(&k);
        let hr = HandshakeKeys::new(&k, Direction::SubToPub);
        let mut out = [0u8; 128];
        for version in [1u8, 2] {
            let mut f = frame(0);
            f[0] = version;
            f.resize(f.len() + OVERHEAD, 0);
            assert!(!is_keyed(&f));
            assert!(CryptoHeader::peek(&f).is_none());
            assert_eq!(s.open(&f, &mut out), Err(DropReason::Plaintext));
            assert_eq!(hr.open(None, &f, &mut out), Err(DropReason::Plaintext));
        }
        assert!(!is_keyed(&[]));
        assert_eq!(s.open(&[], &mut out), Err(DropReason::Plaintext));
        let d = seal_session(&mut p, &frame(0));
        assert!(is_keyed(&d));
        // Keyed but short: truncated, whatever the cut.
        for n in 1..OVERHEAD {
            assert_eq!(s.open(&d[..n], &mut out), Err(DropReason::Truncated), "{n}");
        }
    }

    #[test]
    fn a_short_output_buffer_is_refused() {
        let (mut p, mut s) = pair(&psk(11));
        let f = frame(0);
        let d = seal_session(&mut p, &f);
        let mut out = vec![0u8; f.len() - 1];
        assert_eq!(s.open(&d, &mut out), Err(DropReason::BadLength));
        let mut out = vec![0u8; f.len()];
        assert_eq!(s.open(&d, &mut out).unwrap(), &f[..]);
    }

    #[test]
    fn psk_debug_prints_no_key() {
        let k = Psk::from_slice(&[0xAB; 32]).unwrap();
        let s = format!("{k:?}");
        assert!(
            !s.to_lowercase().contains("ab") && !s.contains("171"),
            "{s}"
        );
        assert!(Psk::from_slice(&[0; 31]).is_none());
        assert!(Psk::from_slice(&[0; 33]).is_none());
    }
}
