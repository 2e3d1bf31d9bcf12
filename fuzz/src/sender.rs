//! `sender_datagram`: a [`Sender`](conduit_proto::Sender) with a live session
//! and messages offered, fed raw datagrams and forged replies, statuses, NAKs,
//! RTT probes and closes (valid checksums, the session's header fields,
//! positions near its own), the real receiver's answers, offers, claims and
//! time steps.
//!
//! Invariants checked after every input: the acknowledged position never
//! moves back and never passes the stream's end, every datagram fits the MTU
//! and every drain of `poll_transmit` ends.

use std::collections::VecDeque;
use std::net::SocketAddr;

use conduit_proto::frame::{self, FrameKind};
use conduit_proto::{SenderState, SUPPORTED_VERSIONS};

use crate::input::{run_ops, Input};
use crate::net::{self, Pair, MAX_MESSAGE, MTU};

/// Most operations decoded from one input.
const MAX_OPS: usize = 512;

/// Runs one input.
pub fn run(data: &[u8]) {
    acked(data);
}

/// Runs one input; returns the sender's acknowledged position at the end (the
/// seed test checks the seeds get data acknowledged).
pub fn acked(data: &[u8]) -> u64 {
    let mut h = Harness::new();
    run_ops(data, MAX_OPS, |inp| {
        h.step(inp);
        h.check();
    });
    h.pair.tx.acked_position()
}

struct Harness {
    pair: Pair,
    /// The sender's datagrams in flight to the receiver.
    in_flight: VecDeque<(SocketAddr, Vec<u8>)>,
    /// The receiver's answers of the current drain.
    replies: VecDeque<(SocketAddr, Vec<u8>)>,
    buf: Vec<u8>,
    /// Acknowledged position after the last input, and the session it was in.
    acked: (u32, u64),
}

impl Harness {
    /// The connected pair, with three messages offered (one fragmented), the
    /// first two delivered and acknowledged, the third still in flight.
    fn new() -> Harness {
        let pair = net::connected_pair();
        let mut h = Harness {
            acked: (pair.tx.session_id(), pair.tx.acked_position()),
            pair,
            in_flight: VecDeque::new(),
            replies: VecDeque::new(),
            buf: vec![0u8; 2 * MTU],
        };
        for (t, len) in [(1, 8), (2, 700)] {
            let _ = h.pair.tx.offer(t, &vec![t as u8; len]);
        }
        h.drain_tx();
        while !h.in_flight.is_empty() {
            h.deliver(0);
        }
        // The receiver's periodic status acknowledges them.
        h.pair.now += std::time::Duration::from_millis(60);
        h.pair.rx.handle_timeout(h.pair.now);
        h.answer();
        let _ = h.pair.tx.offer(3, &[3; 40]);
        h.drain_tx();
        h.check();
        h
    }

    fn step(&mut self, inp: &mut Input<'_>) {
        match inp.u8() % 12 {
            0 => {
                let from = net::source(inp, net::rx_addr());
                let n = inp.below(2 * MTU);
                let mut d = inp.bytes(n).to_vec();
                if inp.bool() {
                    frame::seal(&mut d, true);
                }
                self.pair.tx.handle_datagram(self.pair.now, from, &d);
            }
            1..=4 => {
                let (from, d) = self.forge(inp);
                self.pair.tx.handle_datagram(self.pair.now, from, &d);
            }
            5 => {
                let type_id = inp.u32();
                let len = inp.below(MAX_MESSAGE + 64);
                let fill = inp.u8();
                let _ = self.pair.tx.offer(type_id, &vec![fill; len]);
            }
            6 => {
                let type_id = inp.u32();
                let len = inp.below(MAX_MESSAGE + 64);
                let commit = inp.bool();
                if let Ok(mut c) = self.pair.tx.try_claim(type_id, len) {
                    c.as_mut_slice().fill(0x5a);
                    if commit {
                        c.commit();
                    }
                }
            }
            7 | 8 => {
                if let Some(i) = self.pick(inp) {
                    self.deliver(i);
                }
            }
            9 => {
                if let Some(i) = self.pick(inp) {
                    self.in_flight.remove(i);
                }
            }
            10 => {
                self.pair.now += net::time_step(inp);
                self.pair.tx.handle_timeout(self.pair.now);
                self.pair.rx.handle_timeout(self.pair.now);
                self.answer();
            }
            _ => {
                if inp.u8() == 0 {
                    self.pair.tx.close(self.pair.now);
                }
            }
        }
        self.drain_tx();
    }

    fn pick(&self, inp: &mut Input<'_>) -> Option<usize> {
        net::pick(inp, self.in_flight.len())
    }

    /// Delivers datagram `i` in flight to the real receiver and its answers to
    /// the sender.
    fn deliver(&mut self, i: usize) {
        let now = self.pair.now;
        let Some((_, d)) = self.in_flight.remove(i) else {
            return;
        };
        self.pair
            .rx
            .handle_datagram(now, net::tx_addr(), &d, |_, _| {});
        self.answer();
    }

    /// The receiver's output to the sender, handed to it.
    fn answer(&mut self) {
        let now = self.pair.now;
        let rx = &mut self.pair.rx;
        net::drain("receiver", &mut self.buf, &mut self.replies, |b| {
            rx.poll_transmit(now, 1, b)
        });
        while rx.poll_event().is_some() {}
        while let Some((to, d)) = self.replies.pop_front() {
            if to == net::tx_addr() {
                self.pair.tx.handle_datagram(now, net::rx_addr(), &d);
            }
        }
        self.drain_tx();
    }

    /// A frame of a kind the sender handles, mostly with the live session's
    /// header fields and positions near the sender's.
    fn forge(&mut self, inp: &mut Input<'_>) -> (SocketAddr, Vec<u8>) {
        let kind = match inp.u8() % 8 {
            0 => net::kind(inp),
            1 => FrameKind::SETUP_REPLY,
            2 | 3 => FrameKind::NAK,
            4 | 5 => FrameKind::STATUS,
            6 => FrameKind::RTT,
            _ => FrameKind::CLOSE,
        };
        let from = net::source(inp, net::rx_addr());
        let mut f = net::forged_header(inp, &self.pair, kind);
        let tx = &self.pair.tx;
        let acked = tx.acked_position();
        let receiver_id = if inp.u8() < 16 {
            inp.u32()
        } else {
            self.pair.rx.receiver_id()
        };
        let window = if inp.u8() < 32 { inp.u32() } else { 4096 };
        match kind {
            FrameKind::SETUP_REPLY => {
                let (lo, hi) = if inp.u8() < 16 {
                    (inp.u16(), inp.u16())
                } else {
                    SUPPORTED_VERSIONS
                };
                let version = if inp.u8() < 16 { inp.u16() } else { hi };
                f.u16(version).u16(lo).u16(hi).u16(0);
                f.u32(receiver_id).u32(window).u64(inp.near(acked));
                let extra = inp.below(48);
                f.bytes(inp.bytes(extra));
            }
            FrameKind::NAK => {
                let n = inp.u8() % 40;
                let count = if inp.u8() < 16 {
                    inp.u16()
                } else {
                    u16::from(n)
                };
                f.u16(count).u16(0).u32(0);
                for _ in 0..n {
                    let from = inp.near(acked);
                    let to = if inp.u8() < 32 {
                        inp.near(tx.position())
                    } else {
                        from.wrapping_add(u64::from(inp.u16()))
                    };
                    f.u64(from).u64(to);
                }
            }
            FrameKind::STATUS => {
                let base = if inp.bool() { tx.position() } else { acked };
                f.u64(inp.near(base)).u32(window).u32(receiver_id);
            }
            FrameKind::RTT | FrameKind::CLOSE => {
                f.u64(inp.near(acked));
            }
            _ => {
                let n = inp.below(64);
                f.bytes(inp.bytes(n));
            }
        }
        let corrupt = inp.u8() == 0xff;
        (from, f.seal(corrupt))
    }

    fn drain_tx(&mut self) {
        net::drain_sender(&mut self.pair, &mut self.buf, &mut self.in_flight);
    }

    fn check(&mut self) {
        let tx = &self.pair.tx;
        let (sid, acked, end) = (tx.session_id(), tx.acked_position(), tx.position());
        assert!(
            acked <= end,
            "acknowledged position {acked} past the stream's end {end}"
        );
        // A sender that reconnects (need-setup) may rejoin at the receiver's
        // position; within one connected stretch acknowledgements only grow.
        if sid == self.acked.0 && tx.state() == SenderState::Connected {
            assert!(
                acked >= self.acked.1,
                "acknowledged position moved back from {} to {acked}",
                self.acked.1
            );
        }
        self.acked = (sid, acked);
    }
}

/// For the seed corpus: runs `prefix` on a fresh harness, delivers the
/// sender's datagrams then in flight to the receiver, the middle one lost,
/// lets time pass, and returns what the receiver sent the sender meanwhile
/// (statuses, NAKs, RTT probes), none of it handed to the sender.
pub fn capture_replies(prefix: &[u8]) -> Vec<Vec<u8>> {
    let mut inp = Input::new(prefix);
    let mut h = Harness::new();
    while !inp.is_empty() {
        h.step(&mut inp);
    }
    let mut out = Vec::new();
    let mut collect = |h: &mut Harness| {
        let now = h.pair.now;
        let rx = &mut h.pair.rx;
        net::drain("receiver", &mut h.buf, &mut h.replies, |b| {
            rx.poll_transmit(now, 1, b)
        });
        out.extend(
            h.replies
                .drain(..)
                .filter(|(to, _)| *to == net::tx_addr())
                .map(|(_, d)| d),
        );
    };
    let flights: Vec<_> = h.in_flight.drain(..).collect();
    let lost = flights.len() / 2;
    for (i, (_, d)) in flights.iter().enumerate() {
        if i != lost {
            let now = h.pair.now;
            h.pair.rx.handle_datagram(now, net::tx_addr(), d, |_, _| {});
            collect(&mut h);
        }
    }
    for ms in [1, 5, 60, 120] {
        h.pair.now += std::time::Duration::from_millis(ms);
        let now = h.pair.now;
        h.pair.rx.handle_timeout(now);
        collect(&mut h);
    }
    out
}
