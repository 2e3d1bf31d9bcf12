//! `receiver_datagram`: a [`Receiver`](conduit_proto::Receiver) with a live
//! session, fed raw datagrams, frames forged with valid checksums, and the
//! real sender's datagrams (reordered, duplicated, dropped, mutated), with
//! time steps in between; its output goes back to the sender.
//!
//! Invariants checked after every input: the payload bytes delivered never
//! exceed the bytes handed in (nothing is delivered twice or invented), no
//! message is longer than the maximum, the position never moves back within a
//! session, the buffered bytes stay within the window, every datagram sent
//! fits the MTU and every drain ends.

use std::collections::VecDeque;
use std::net::SocketAddr;

use conduit_proto::frame::{self, FrameKind};
use conduit_proto::{Event, SUPPORTED_VERSIONS};

use crate::input::{run_ops, Input};
use crate::net::{self, Frame, Pair, Tally, MAX_MESSAGE, MTU};

/// Most operations decoded from one input.
const MAX_OPS: usize = 512;

/// Runs one input.
pub fn run(data: &[u8]) {
    delivered(data);
}

/// Runs one input; returns the payload bytes the receiver delivered (the
/// seed test checks the seeds reach the data path).
pub fn delivered(data: &[u8]) -> u64 {
    let mut h = Harness::new();
    run_ops(data, MAX_OPS, |inp| {
        h.step(inp);
        h.settle();
    });
    h.tally.delivered
}

struct Harness {
    pair: Pair,
    /// The sender's datagrams in flight to the receiver.
    in_flight: VecDeque<(SocketAddr, Vec<u8>)>,
    /// The receiver's output of the current drain.
    replies: VecDeque<(SocketAddr, Vec<u8>)>,
    buf: Vec<u8>,
    /// Datagram bytes handed in and payload bytes delivered.
    tally: Tally,
    /// Session and position after the last input.
    last: (Option<u32>, u64),
}

impl Harness {
    fn new() -> Harness {
        let pair = net::connected_pair();
        let last = (pair.rx.session_id(), pair.rx.position());
        Harness {
            pair,
            in_flight: VecDeque::new(),
            replies: VecDeque::new(),
            buf: vec![0u8; 2 * MTU],
            tally: Tally::default(),
            last,
        }
    }

    fn step(&mut self, inp: &mut Input<'_>) {
        match inp.u8() % 12 {
            0 => {
                let from = net::source(inp, net::tx_addr());
                let n = inp.below(2 * MTU);
                let mut d = inp.bytes(n).to_vec();
                if inp.bool() {
                    frame::seal(&mut d, true);
                }
                self.feed(from, &d);
            }
            1..=3 => {
                let (from, d) = self.forge(inp);
                self.feed(from, &d);
            }
            4 => {
                let type_id = inp.u32();
                let len = inp.below(MAX_MESSAGE + 64);
                let fill = inp.u8();
                let _ = self.pair.tx.offer(type_id, &vec![fill; len]);
                self.drain_tx();
            }
            5 | 6 => {
                if let Some((_, mut d)) = self.pick(inp).and_then(|i| self.in_flight.remove(i)) {
                    let m = inp.u8();
                    if m < 48 && !d.is_empty() {
                        let at = inp.below(d.len());
                        d[at] ^= inp.u8() | 1;
                        if m & 1 == 1 {
                            frame::seal(&mut d, true);
                        }
                    }
                    self.feed(net::tx_addr(), &d);
                }
            }
            7 => {
                if let Some(i) = self.pick(inp) {
                    let d = self.in_flight[i].1.clone();
                    self.feed(net::tx_addr(), &d);
                }
            }
            8 => {
                if let Some(i) = self.pick(inp) {
                    self.in_flight.remove(i);
                }
            }
            9 => {
                self.pair.now += net::time_step(inp);
                self.pair.rx.handle_timeout(self.pair.now);
                self.pair.tx.handle_timeout(self.pair.now);
                self.check();
                self.drain_tx();
            }
            10 => {
                while let Some((_, d)) = self.in_flight.pop_front() {
                    self.feed(net::tx_addr(), &d);
                }
            }
            _ => {
                if inp.u8() == 0 {
                    self.pair.rx.close(self.pair.now);
                    self.check();
                }
            }
        }
    }

    fn pick(&self, inp: &mut Input<'_>) -> Option<usize> {
        net::pick(inp, self.in_flight.len())
    }

    /// A frame of a kind the receiver handles, mostly with the live session's
    /// header fields and positions near the receiver's.
    fn forge(&mut self, inp: &mut Input<'_>) -> (SocketAddr, Vec<u8>) {
        let kind = net::kind(inp);
        let from = net::source(inp, net::tx_addr());
        let mut f = net::forged_header(inp, &self.pair, kind);
        let pos = self.pair.rx.position();
        match kind {
            FrameKind::SETUP => {
                let (lo, hi) = if inp.u8() < 16 {
                    (inp.u16(), inp.u16())
                } else {
                    SUPPORTED_VERSIONS
                };
                let mtu = if inp.u8() < 16 { inp.u16() } else { MTU as u16 };
                let max = if inp.u8() < 16 {
                    inp.u32()
                } else {
                    MAX_MESSAGE as u32
                };
                let join = inp.near(pos);
                f.u16(lo).u16(hi).u16(mtu).u16(0).u32(max).u32(0).u64(join);
                let extra = inp.below(48);
                f.bytes(inp.bytes(extra));
            }
            FrameKind::DATA => {
                f.u64(inp.near(pos));
                for _ in 0..inp.u8() % 6 {
                    record(inp, &mut f);
                }
            }
            FrameKind::HEARTBEAT => {
                let end = inp.near(self.pair.tx.position().max(pos));
                f.u64(end).u64(inp.near(pos));
            }
            FrameKind::RTT | FrameKind::CLOSE => {
                f.u64(inp.near(pos));
            }
            _ => {
                let n = inp.below(64);
                f.bytes(inp.bytes(n));
            }
        }
        let corrupt = inp.u8() == 0xff;
        (from, f.seal(corrupt))
    }

    /// Hands one datagram to the receiver and checks what it delivered.
    fn feed(&mut self, from: SocketAddr, d: &[u8]) {
        self.tally.feed(d.len());
        let (mut bytes, mut calls) = (0u64, 0usize);
        let n = self
            .pair
            .rx
            .handle_datagram(self.pair.now, from, d, |_, payload| {
                bytes += Tally::payload(payload);
                calls += 1;
            });
        self.tally.settle(n, calls, bytes);
        self.check();
    }

    fn check(&mut self) {
        let rx = &mut self.pair.rx;
        let now = (rx.session_id(), rx.position());
        if now.0.is_some() && now.0 == self.last.0 {
            assert!(
                now.1 >= self.last.1,
                "position moved back from {} to {} in session {:?}",
                self.last.1,
                now.1,
                now.0
            );
        }
        self.last = now;
        let window = rx.config().window as u64;
        assert!(
            rx.buffered() <= window,
            "{} bytes buffered, over the window {window}",
            rx.buffered()
        );
        while let Some(e) = rx.poll_event() {
            if let Event::UnrecoverableLoss { from, to } = e {
                assert!(from <= to, "loss range {from}..{to} is reversed");
            }
        }
    }

    /// The receiver's output goes to the sender (what is addressed to it),
    /// and the sender's output joins the datagrams in flight.
    fn settle(&mut self) {
        let now = self.pair.now;
        let rx = &mut self.pair.rx;
        net::drain("receiver", &mut self.buf, &mut self.replies, |b| {
            rx.poll_transmit(now, 1, b)
        });
        while let Some((to, d)) = self.replies.pop_front() {
            if to == net::tx_addr() {
                self.pair.tx.handle_datagram(now, net::rx_addr(), &d);
            }
        }
        self.drain_tx();
        self.check();
    }

    fn drain_tx(&mut self) {
        net::drain_sender(&mut self.pair, &mut self.buf, &mut self.in_flight);
    }
}

/// Appends one record to a data frame: a header with fields mostly in range,
/// then its payload (from the input, cut short when the input ends).
fn record(inp: &mut Input<'_>, f: &mut Frame) {
    let c = inp.u8();
    let len = if c < 16 {
        inp.u16()
    } else {
        inp.u16() % MTU as u16
    };
    let flags = match c % 8 {
        0 | 1 => frame::REC_BEGIN | frame::REC_END,
        2 => frame::REC_BEGIN,
        3 => 0,
        4 => frame::REC_END,
        5 => frame::REC_PAD,
        _ => inp.u8(),
    };
    let reserved = if c == 0xff { inp.u8() } else { 0 };
    f.u16(len).u8(flags).u8(reserved).u32(inp.u32());
    if flags & frame::REC_PAD == 0 {
        let padded = frame::record_size(usize::from(len)) - frame::RECORD_HEADER_LEN;
        let body = inp.bytes(padded);
        f.bytes(body);
    }
}
