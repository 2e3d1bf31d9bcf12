//! What the two datagram targets share: a small configuration, the addresses,
//! a connected sender/receiver pair, frames forged with valid checksums, and
//! bounded draining of an endpoint's output.
//!
//! Everything that depends on the protocol's constructors and handshake is in
//! [`config`] and [`connected_pair`]: the pair is connected by pumping the two
//! real endpoints at each other, so a change of the handshake (a cookie round
//! trip, new fields) needs no change here, only a change of the constructors.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conduit_proto::frame::{self, FrameKind};
use conduit_proto::{Config, Receiver, Sender};

use crate::Input;

/// MTU of both endpoints: small, so messages fragment and windows fill fast.
pub const MTU: usize = 256;
/// Largest message: several fragments at [`MTU`].
pub const MAX_MESSAGE: usize = 2048;
/// Most datagrams one drain of `poll_transmit` may produce before it counts as
/// a livelock: far more than a retransmit buffer of [`MTU`]-sized datagrams.
pub const MAX_DRAIN: usize = 4096;
/// Most datagrams held in flight between the endpoints.
pub const MAX_QUEUE: usize = 256;

/// The configuration of both endpoints (checksums on: forged frames are sealed).
pub fn config() -> Config {
    Config {
        mtu: MTU,
        window: 4096,
        retransmit_buffer: 8192,
        max_message_len: MAX_MESSAGE,
        ..Config::default()
    }
}

/// The sender's address.
pub fn tx_addr() -> SocketAddr {
    "10.0.0.1:4000".parse().unwrap()
}

/// The receiver's address.
pub fn rx_addr() -> SocketAddr {
    "10.0.0.2:5000".parse().unwrap()
}

/// A source address: mostly `usual`, sometimes a stranger on the same IP,
/// another IP, or `usual` written as an IPv4-mapped IPv6 address.
pub fn source(inp: &mut Input<'_>, usual: SocketAddr) -> SocketAddr {
    match inp.u8() % 8 {
        0 => SocketAddr::new(usual.ip(), usual.port().wrapping_add(1)),
        1 => "10.0.0.66:4000".parse().unwrap(),
        2 => match usual {
            SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), usual.port()),
            v6 => v6,
        },
        _ => usual,
    }
}

/// A sender and a receiver with an established session, and what the harness
/// needs to forge frames of that session.
pub struct Pair {
    /// The publication side, sending to [`rx_addr`].
    pub tx: Sender,
    /// The subscription side, whose session is `tx`'s.
    pub rx: Receiver,
    /// The current time; starts at construction and only moves forward.
    pub now: Instant,
    /// The negotiated version byte of the session's frames.
    pub version: u8,
}

/// A connected pair: the only code that constructs endpoints or knows how a
/// session is set up (it pumps the two real endpoints until both report a
/// connection). Panics when they do not connect: that is a harness bug.
pub fn connected_pair() -> Pair {
    let mut now = Instant::now();
    let mut tx = Sender::new(config(), rx_addr(), now, 1).expect("sender config");
    let mut rx = Receiver::new(config(), now, 2).expect("receiver config");
    let mut buf = vec![0u8; 2 * MTU];
    let mut version = 0;
    for _ in 0..64 {
        while let Some(t) = tx.poll_transmit(now, 1, &mut buf) {
            version = buf[0];
            rx.handle_datagram(now, tx_addr(), &buf[..t.len], |_, _| {});
        }
        while let Some(t) = rx.poll_transmit(now, 1, &mut buf) {
            tx.handle_datagram(now, rx_addr(), &buf[..t.len]);
        }
        if tx.is_connected() && rx.is_connected() && version != 0 {
            while tx.poll_event().is_some() {}
            while rx.poll_event().is_some() {}
            return Pair {
                tx,
                rx,
                now,
                version,
            };
        }
        now += Duration::from_millis(1);
        tx.handle_timeout(now);
        rx.handle_timeout(now);
    }
    panic!("harness: the pair did not connect");
}

/// A time step: microseconds to minutes, skewed towards the protocol's timers.
pub fn time_step(inp: &mut Input<'_>) -> Duration {
    let units = u64::from(inp.u16());
    Duration::from_micros(match inp.u8() % 4 {
        0 => units,
        1 => units * 16,
        2 => units * 256,
        _ => units * 4096,
    })
}

/// A frame under construction: little-endian fields appended in order.
pub struct Frame(pub Vec<u8>);

impl Frame {
    /// A frame starting with the common header (checksum zero until [`Frame::seal`]).
    pub fn new(version: u8, kind: u8, flags: u16, session_id: u32, stream_id: u32) -> Frame {
        let mut f = Frame(Vec::with_capacity(MTU));
        f.u8(version)
            .u8(kind)
            .u16(flags)
            .u32(session_id)
            .u32(stream_id)
            .u32(0);
        f
    }

    /// Appends a byte.
    pub fn u8(&mut self, v: u8) -> &mut Frame {
        self.0.push(v);
        self
    }

    /// Appends a u16.
    pub fn u16(&mut self, v: u16) -> &mut Frame {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a u32.
    pub fn u32(&mut self, v: u32) -> &mut Frame {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a u64.
    pub fn u64(&mut self, v: u64) -> &mut Frame {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Frame {
        self.0.extend_from_slice(b);
        self
    }

    /// The datagram, with a valid checksum unless `corrupt`.
    pub fn seal(mut self, corrupt: bool) -> Vec<u8> {
        frame::seal(&mut self.0, true);
        if corrupt {
            if let Some(b) = self.0.get_mut(12) {
                *b ^= 1;
            }
        }
        self.0
    }
}

/// The header fields of a forged frame: mostly those of the live session, so
/// the frame reaches the handler behind the session checks.
pub fn forged_header(inp: &mut Input<'_>, pair: &Pair, kind: FrameKind) -> Frame {
    let c = inp.u8();
    let version = if c & 0x03 == 0 {
        inp.u8()
    } else {
        pair.version
    };
    let session = match (c >> 2) & 0x07 {
        0 => inp.u32(),
        1 => pair.tx.session_id().wrapping_add(1),
        _ => pair.tx.session_id(),
    };
    let stream = if c >> 5 == 0 {
        inp.u32()
    } else {
        config().stream_id
    };
    let flags = match inp.u8() % 8 {
        0 => inp.u16(),
        1 => frame::FLAG_REJECT,
        2 => frame::FLAG_REPLY,
        3 => frame::FLAG_NEED_SETUP,
        _ => 0,
    };
    Frame::new(version, kind.0, flags, session, stream)
}

/// A frame kind: one of the eight mostly, any byte sometimes.
pub fn kind(inp: &mut Input<'_>) -> FrameKind {
    let k = inp.u8();
    if k >= 0xf0 {
        FrameKind(inp.u8())
    } else {
        FrameKind(k % 8 + 1)
    }
}

/// Drains `poll_transmit` of `poll` into `out` (oldest dropped past
/// [`MAX_QUEUE`]), checking every datagram fits the MTU and that the drain
/// ends.
pub fn drain(
    what: &str,
    buf: &mut [u8],
    out: &mut VecDeque<(SocketAddr, Vec<u8>)>,
    mut poll: impl FnMut(&mut [u8]) -> Option<conduit_proto::Transmit>,
) {
    for _ in 0..MAX_DRAIN {
        let Some(t) = poll(buf) else {
            return;
        };
        assert!(
            t.len <= MTU && t.len <= buf.len(),
            "{what}: datagram of {} bytes over the MTU {MTU}",
            t.len
        );
        if out.len() == MAX_QUEUE {
            out.pop_front();
        }
        out.push_back((t.destination, buf[..t.len].to_vec()));
    }
    panic!("{what}: poll_transmit produced more than {MAX_DRAIN} datagrams in one drain");
}

/// Drains the sender's output into `in_flight` (see [`drain`]) and discards
/// its events.
pub fn drain_sender(
    pair: &mut Pair,
    buf: &mut [u8],
    in_flight: &mut VecDeque<(SocketAddr, Vec<u8>)>,
) {
    let now = pair.now;
    let tx = &mut pair.tx;
    drain("sender", buf, in_flight, |b| tx.poll_transmit(now, 1, b));
    while tx.poll_event().is_some() {}
}

/// The index of one of `n` queued datagrams, chosen by the input; `None`
/// when none is queued.
pub fn pick(inp: &mut Input<'_>, n: usize) -> Option<usize> {
    let i = usize::from(inp.u8());
    (n > 0).then(|| i % n)
}

/// Byte accounting of a datagram harness: the payload bytes a receiving end
/// delivered never exceed the datagram bytes handed to it (nothing is
/// delivered twice or invented), and no message exceeds [`MAX_MESSAGE`].
#[derive(Debug, Default)]
pub struct Tally {
    /// Datagram bytes handed in.
    pub fed: u64,
    /// Payload bytes delivered.
    pub delivered: u64,
}

impl Tally {
    /// Counts one datagram of `len` bytes about to be handed in.
    pub fn feed(&mut self, len: usize) {
        self.fed += len as u64;
    }

    /// Checks one delivered payload; returns its length.
    pub fn payload(payload: &[u8]) -> u64 {
        assert!(
            payload.len() <= MAX_MESSAGE,
            "delivered a message of {} bytes, over the maximum {MAX_MESSAGE}",
            payload.len()
        );
        payload.len() as u64
    }

    /// After one datagram: `n` deliveries reported by `handle_datagram`,
    /// `calls` seen by its handler, `bytes` of payload among them.
    pub fn settle(&mut self, n: usize, calls: usize, bytes: u64) {
        assert_eq!(
            n, calls,
            "handle_datagram's count differs from the deliveries"
        );
        self.delivered += bytes;
        assert!(
            self.delivered <= self.fed,
            "delivered {} payload bytes out of {} bytes of datagrams",
            self.delivered,
            self.fed
        );
    }
}
