//! `sessions_datagram`: a [`Sessions`](conduit_proto::Sessions) demultiplexer
//! (one to three places, chosen by the input's first byte) fed by three real
//! senders (two on one IP, one on another; their datagrams reordered,
//! duplicated, dropped, mutated; senders restarted on their address and
//! closed), raw datagrams and forged frames from arbitrary addresses, and time
//! steps; its output goes back to the senders it is addressed to.
//!
//! Invariants checked after every input: no more sessions are held and live
//! than there are places, the payload bytes delivered never exceed the bytes
//! handed in, no message is longer than the maximum, a held session's
//! position never moves back, every datagram sent fits the MTU, every drain
//! ends, and the session events pair up (a session is reported gone only
//! after it joined, except for a close; it joins only once until it is gone).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use conduit_proto::frame::{self, FrameKind};
use conduit_proto::{Config, GoneReason, Peer, Sender, SessionEvent, Sessions, SUPPORTED_VERSIONS};

use crate::net::{self, Frame, Tally, MAX_MESSAGE, MTU};
use crate::Input;

/// Most operations decoded from one input.
const MAX_OPS: usize = 512;
/// The senders the harness drives.
const SENDERS: usize = 3;

/// The address of sender `i`: two share an IP (different ports), one has its
/// own.
pub fn sender_addr(i: usize) -> SocketAddr {
    match i {
        0 => "10.0.0.1:4000".parse().unwrap(),
        1 => "10.0.0.1:4001".parse().unwrap(),
        _ => "10.0.0.3:4000".parse().unwrap(),
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    delivered(data);
}

/// Runs one input; returns the payload bytes delivered (the seed test checks
/// the seeds reach the data path).
pub fn delivered(data: &[u8]) -> u64 {
    let mut inp = Input::new(data);
    let mut h = Harness::new(1 + usize::from(inp.u8() % 3));
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        h.step(&mut inp);
        h.settle();
    }
    h.tally.delivered
}

struct Harness {
    rx: Sessions,
    max: usize,
    now: std::time::Instant,
    senders: Vec<Sender>,
    /// Seeds of restarted senders.
    restarts: u64,
    /// The senders' datagrams in flight to the sessions: (sender, bytes).
    in_flight: VecDeque<(usize, Vec<u8>)>,
    /// The output of the current drain.
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    buf: Vec<u8>,
    /// Datagram bytes handed in and payload bytes delivered.
    tally: Tally,
    /// Held sessions' positions after the last input.
    positions: HashMap<Peer, u64>,
    /// Sessions reported joined and not gone since.
    joined: HashSet<Peer>,
}

fn config(max_sessions: usize) -> Config {
    Config {
        max_sessions,
        ..net::config()
    }
}

impl Harness {
    fn new(max: usize) -> Harness {
        let now = std::time::Instant::now();
        let rx = Sessions::new(config(max), now, 2).expect("sessions config");
        let senders = (0..SENDERS)
            .map(|i| Sender::new(net::config(), net::rx_addr(), now, 10 + i as u64).unwrap())
            .collect();
        Harness {
            rx,
            max,
            now,
            senders,
            restarts: 0,
            in_flight: VecDeque::new(),
            out: VecDeque::new(),
            buf: vec![0u8; 2 * MTU],
            tally: Tally::default(),
            positions: HashMap::new(),
            joined: HashSet::new(),
        }
    }

    fn step(&mut self, inp: &mut Input<'_>) {
        match inp.u8() % 12 {
            0 => {
                let from = source(inp);
                let n = inp.below(2 * MTU);
                let mut d = inp.bytes(n).to_vec();
                if inp.bool() {
                    frame::seal(&mut d, true);
                }
                self.feed(from, &d);
            }
            1 | 2 => {
                let (from, d) = self.forge(inp);
                self.feed(from, &d);
            }
            3 => {
                let i = usize::from(inp.u8()) % SENDERS;
                let type_id = inp.u32();
                let len = inp.below(MAX_MESSAGE + 64);
                let fill = inp.u8();
                let _ = self.senders[i].offer(type_id, &vec![fill; len]);
            }
            4 | 5 => {
                if let Some((i, mut d)) = self.pick(inp).and_then(|k| self.in_flight.remove(k)) {
                    let m = inp.u8();
                    if m < 48 && !d.is_empty() {
                        let at = inp.below(d.len());
                        d[at] ^= inp.u8() | 1;
                        if m & 1 == 1 {
                            frame::seal(&mut d, true);
                        }
                    }
                    self.feed(sender_addr(i), &d);
                }
            }
            6 => {
                if let Some(k) = self.pick(inp) {
                    let (i, d) = self.in_flight[k].clone();
                    self.feed(sender_addr(i), &d);
                }
            }
            7 => {
                if let Some(k) = self.pick(inp) {
                    self.in_flight.remove(k);
                }
            }
            8 => {
                self.now += net::time_step(inp);
                self.rx.handle_timeout(self.now);
                for tx in &mut self.senders {
                    tx.handle_timeout(self.now);
                }
                self.check();
            }
            9 => {
                while let Some((i, d)) = self.in_flight.pop_front() {
                    self.feed(sender_addr(i), &d);
                }
            }
            10 => {
                // A sender restarts on its address (a new session id).
                let i = usize::from(inp.u8()) % SENDERS;
                self.restarts += 1;
                self.senders[i] =
                    Sender::new(net::config(), net::rx_addr(), self.now, 100 + self.restarts)
                        .unwrap();
            }
            _ => match inp.u8() % 4 {
                0 => {
                    self.rx.close(self.now);
                    self.check();
                }
                1 => {
                    let i = usize::from(inp.u8()) % SENDERS;
                    self.senders[i].close(self.now);
                }
                _ => {}
            },
        }
    }

    fn pick(&self, inp: &mut Input<'_>) -> Option<usize> {
        let n = self.in_flight.len();
        let i = usize::from(inp.u8());
        (n > 0).then(|| i % n)
    }

    /// A frame of a kind a receiver handles, from an arbitrary address,
    /// mostly with the header of one of the senders' sessions.
    fn forge(&mut self, inp: &mut Input<'_>) -> (SocketAddr, Vec<u8>) {
        let kind = net::kind(inp);
        let i = usize::from(inp.u8()) % SENDERS;
        let from = if inp.u8() < 192 {
            sender_addr(i)
        } else {
            source(inp)
        };
        let c = inp.u8();
        let session = match c % 4 {
            0 => inp.u32(),
            _ => self.senders[i].session_id(),
        };
        let version = if c & 0x10 == 0 { 3 } else { inp.u8() };
        let flags = match inp.u8() % 8 {
            0 => inp.u16(),
            1 => frame::FLAG_REJECT,
            2 => frame::FLAG_NEED_SETUP,
            _ => 0,
        };
        let mut f = Frame::new(version, kind.0, flags, session, net::config().stream_id);
        let pos = self.senders[i].acked_position();
        match kind {
            FrameKind::SETUP => {
                let (lo, hi) = SUPPORTED_VERSIONS;
                f.u16(lo)
                    .u16(hi)
                    .u16(MTU as u16)
                    .u16(0)
                    .u32(MAX_MESSAGE as u32)
                    .u32(0)
                    .u64(inp.near(pos));
                let extra = inp.below(48);
                f.bytes(inp.bytes(extra));
            }
            FrameKind::HEARTBEAT => {
                let end = inp.near(self.senders[i].position());
                f.u64(end).u64(inp.near(pos));
            }
            FrameKind::DATA | FrameKind::RTT | FrameKind::CLOSE => {
                f.u64(inp.near(pos));
                let n = inp.below(64);
                f.bytes(inp.bytes(n));
            }
            _ => {
                let n = inp.below(64);
                f.bytes(inp.bytes(n));
            }
        }
        let corrupt = inp.u8() == 0xff;
        (from, f.seal(corrupt))
    }

    /// Hands one datagram to the sessions and checks what they delivered.
    fn feed(&mut self, from: SocketAddr, d: &[u8]) {
        self.tally.feed(d.len());
        let (mut bytes, mut calls) = (0u64, 0usize);
        let n = self
            .rx
            .handle_datagram(self.now, from, d, |_, _, _, payload| {
                bytes += Tally::payload(payload);
                calls += 1;
            });
        self.tally.settle(n, calls, bytes);
        self.check();
    }

    fn check(&mut self) {
        let held: Vec<(Peer, bool)> = self.rx.sessions().collect();
        assert!(
            held.len() <= self.max,
            "{} sessions held with {} places",
            held.len(),
            self.max
        );
        assert!(self.rx.live_sessions() <= self.max);
        let mut positions = HashMap::new();
        for (peer, _) in held {
            let Some(p) = self.rx.position(peer) else {
                continue;
            };
            if let Some(&before) = self.positions.get(&peer) {
                assert!(p >= before, "{peer:?} moved back from {before} to {p}");
            }
            positions.insert(peer, p);
        }
        self.positions = positions;
        while self.rx.poll_event().is_some() {}
        while let Some(e) = self.rx.poll_session_event() {
            match e {
                SessionEvent::Joined { peer } => {
                    assert!(self.joined.insert(peer), "{peer:?} joined twice");
                }
                SessionEvent::Gone { peer, reason } => {
                    assert!(
                        self.joined.remove(&peer) || reason == GoneReason::Closed,
                        "{peer:?} gone ({reason:?}) without having joined"
                    );
                }
                SessionEvent::Replaced { addr, old, new } => {
                    self.joined.remove(&Peer {
                        addr,
                        session_id: old,
                    });
                    self.joined.insert(Peer {
                        addr,
                        session_id: new,
                    });
                }
                _ => {}
            }
        }
    }

    /// The sessions' output goes to the sender it is addressed to; the
    /// senders' output joins the datagrams in flight (the oldest dropped past
    /// [`net::MAX_QUEUE`]).
    fn settle(&mut self) {
        let now = self.now;
        let rx = &mut self.rx;
        net::drain("sessions", &mut self.buf, &mut self.out, |b| {
            rx.poll_transmit(now, 1, b)
        });
        while let Some((to, d)) = self.out.pop_front() {
            if let Some(i) = (0..SENDERS).find(|&i| sender_addr(i) == to) {
                self.senders[i].handle_datagram(now, net::rx_addr(), &d);
            }
        }
        for i in 0..SENDERS {
            let tx = &mut self.senders[i];
            net::drain("sender", &mut self.buf, &mut self.out, |b| {
                tx.poll_transmit(now, 1, b)
            });
            while tx.poll_event().is_some() {}
            for (_, d) in self.out.drain(..) {
                if self.in_flight.len() == net::MAX_QUEUE {
                    self.in_flight.pop_front();
                }
                self.in_flight.push_back((i, d));
            }
        }
        self.check();
    }
}

/// An address: one of the senders' mostly, else an arbitrary IPv4 or IPv6
/// address and port, or a sender's as an IPv4-mapped IPv6 address.
fn source(inp: &mut Input<'_>) -> SocketAddr {
    let usual = sender_addr(usize::from(inp.u8()) % SENDERS);
    match inp.u8() % 8 {
        0 => SocketAddr::new(IpAddr::V4(Ipv4Addr::from(inp.u32())), inp.u16()),
        1 => {
            let hi = u128::from(inp.u64()) << 64;
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(hi | u128::from(inp.u64()))),
                inp.u16(),
            )
        }
        2 => match usual {
            SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), usual.port()),
            v6 => v6,
        },
        _ => usual,
    }
}
