//! Many senders into one receiver ([`Sessions`]) over the simulated network: every session's
//! stream exactly once and in order with the right source and growing positions, under loss;
//! refusal beyond `max_sessions` that never disturbs a live session; a dead session's place
//! given to a newcomer; a restarted sender replacing its old session; closes reported.
//!
//! `CONDUIT_SIM_SEEDS=<n>` runs more seeds.

mod proto_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conduit_proto::sim::{LinkConfig, Network};
use conduit_proto::{
    Config, DropReason, Event, GoneReason, OfferError, Sender, SessionEvent, Sessions,
};
use proto_common::{for_seeds, seeds, watchdog, Checker, Gen, RX};

/// One sender of the run, with its generator and the checker of what the receiver delivered
/// for it.
struct Node {
    addr: SocketAddr,
    tx: Sender,
    gen: Gen,
    checker: Checker,
    /// The last position delivered for it (positions grow within a session).
    last_pos: Option<u64>,
    events: Vec<Event>,
    /// A dead process: neither sends nor receives.
    dead: bool,
}

struct Multi {
    now: Instant,
    start: Instant,
    net: Network,
    rx: Sessions,
    nodes: Vec<Node>,
    rx_events: Vec<Event>,
    session_events: Vec<SessionEvent>,
    buf: Vec<u8>,
    error: Option<String>,
    /// When set: every datagram to the receiver is also replayed from a random other
    /// address (an attacker who sees the traffic and spoofs sources).
    spoof: Option<conduit_proto::Rng>,
}

fn addr(i: usize) -> SocketAddr {
    format!("10.0.1.{}:{}", 1 + i, 7000 + i).parse().unwrap()
}

impl Multi {
    fn new(seed: u64, senders: usize, rx_config: Config, link: LinkConfig, total: u64) -> Multi {
        let start = Instant::now();
        let rx = Sessions::new(rx_config, start, seed.wrapping_add(99)).unwrap();
        let mut m = Multi {
            now: start,
            start,
            net: Network::new(link, seed ^ 0x77),
            rx,
            nodes: Vec::new(),
            rx_events: Vec::new(),
            session_events: Vec::new(),
            buf: vec![0; 70_000],
            error: None,
            spoof: None,
        };
        for i in 0..senders {
            m.add(addr(i), seed * 31 + i as u64, 0, total);
        }
        m
    }

    fn add(&mut self, at: SocketAddr, seed: u64, epoch: u32, total: u64) -> usize {
        let cfg = Config {
            liveness_timeout: Duration::from_secs(2),
            key: self.rx.config().key.clone(),
            ..Config::default()
        };
        let mut checker = Checker::default();
        checker.epoch = epoch;
        self.nodes.push(Node {
            addr: at,
            tx: Sender::new(cfg, RX, self.now, seed).unwrap(),
            gen: Gen::new(seed, epoch, total, false),
            checker,
            last_pos: None,
            events: Vec::new(),
            dead: false,
        });
        self.nodes.len() - 1
    }

    /// Offers what each live sender takes, then sends what everyone wants to send.
    fn pump(&mut self) -> Result<(), String> {
        for n in self.nodes.iter_mut().filter(|n| !n.dead) {
            match n.gen.offer(&mut n.tx, 32) {
                Ok(_) => {}
                Err(e) if e.contains("Refused") => {}
                Err(e) => return Err(format!("{}: {e}", n.addr)),
            }
            while let Some(t) = n.tx.poll_transmit(self.now, 1, &mut self.buf) {
                self.net
                    .send(self.now, n.addr, t.destination, &self.buf[..t.len]);
            }
            while let Some(e) = n.tx.poll_event() {
                n.events.push(e);
            }
        }
        while let Some(t) = self.rx.poll_transmit(self.now, 1, &mut self.buf) {
            self.net
                .send(self.now, RX, t.destination, &self.buf[..t.len]);
        }
        while let Some(e) = self.rx.poll_event() {
            self.rx_events.push(e);
        }
        while let Some(e) = self.rx.poll_session_event() {
            self.session_events.push(e);
        }
        Ok(())
    }

    /// Advances virtual time to the next event and handles everything due.
    fn advance(&mut self) {
        let mut next = self.net.next_arrival();
        let timers = self
            .nodes
            .iter()
            .filter(|n| !n.dead)
            .filter_map(|n| n.tx.poll_timeout())
            .chain(self.rx.poll_timeout());
        for t in timers {
            next = Some(next.map_or(t, |n: Instant| n.min(t)));
        }
        let next = next.unwrap_or(self.now + Duration::from_millis(1));
        if next > self.now {
            self.now = next;
        }
        while let Some((from, to, bytes)) = self.net.receive(self.now) {
            if let (true, Some(rng)) = (to == RX, self.spoof.as_mut()) {
                let fake: SocketAddr = format!(
                    "10.9.{}.{}:{}",
                    rng.below(4),
                    rng.below(250),
                    7000 + rng.below(3)
                )
                .parse()
                .unwrap();
                let error = &mut self.error;
                self.rx
                    .handle_datagram(self.now, fake, &bytes, |peer, _, _, _| {
                        error.get_or_insert(format!("delivered a spoofed datagram from {peer:?}"));
                    });
            }
            if to == RX {
                let (nodes, error) = (&mut self.nodes, &mut self.error);
                self.rx
                    .handle_datagram(self.now, from, &bytes, |peer, pos, ty, p| {
                        // In-flight data of a dead sender's session is still delivered.
                        let Some(n) = nodes
                            .iter_mut()
                            .find(|n| n.addr == peer.addr && n.tx.session_id() == peer.session_id)
                        else {
                            error.get_or_insert(format!("delivered from unknown {peer:?}"));
                            return;
                        };
                        if n.last_pos.is_some_and(|l| pos <= l) {
                            error.get_or_insert(format!("{peer:?}: position {pos} not growing"));
                        }
                        n.last_pos = Some(pos);
                        n.checker.check(ty, p);
                    });
            } else if let Some(n) = self.nodes.iter_mut().rev().find(|n| n.addr == to) {
                if !n.dead {
                    n.tx.handle_datagram(self.now, from, &bytes);
                }
            }
        }
        for n in self.nodes.iter_mut().filter(|n| !n.dead) {
            n.tx.handle_timeout(self.now);
        }
        self.rx.handle_timeout(self.now);
    }

    fn step(&mut self) -> Result<(), String> {
        self.pump()?;
        self.advance();
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        for n in &self.nodes {
            if let Some(e) = &n.checker.error {
                return Err(format!("{}: {e}", n.addr));
            }
        }
        if self.now - self.start > Duration::from_secs(300) {
            return Err("stalled (300 s of virtual time)".into());
        }
        Ok(())
    }

    /// Runs until every live node's stream is delivered whole.
    fn run_until_done(&mut self) -> Result<(), String> {
        while !self
            .nodes
            .iter()
            .filter(|n| !n.dead)
            .all(|n| n.checker.delivered == n.gen.total)
        {
            self.step()?;
        }
        Ok(())
    }
}

fn lossy(seed: u64) -> LinkConfig {
    LinkConfig {
        loss: 0.03,
        reorder: 0.02,
        reorder_delay: Duration::from_micros(300),
        duplicate: 0.01,
        jitter: Duration::from_micros(50 + seed % 100),
        ..LinkConfig::perfect(Duration::from_micros(100))
    }
}

/// Three senders under 3 % loss, reordering and duplication: each stream complete, exactly
/// once, in order, from the right source, positions growing; three joins reported.
#[test]
fn several_senders_each_exactly_once_in_order() {
    let _w = watchdog("several_senders_each_exactly_once_in_order", 300);
    for_seeds("several_senders", seeds(6), |seed| {
        let mut m = Multi::new(seed, 3, Config::default(), lossy(seed), 3000);
        m.run_until_done()?;
        let joined = m
            .session_events
            .iter()
            .filter(|e| matches!(e, SessionEvent::Joined { .. }))
            .count();
        if joined != 3 {
            return Err(format!("{joined} joins: {:?}", m.session_events));
        }
        if m.rx.live_sessions() != 3 {
            return Err(format!("{} live sessions", m.rx.live_sessions()));
        }
        for n in &m.nodes {
            if m.rx.position(conduit_proto::Peer {
                addr: n.addr,
                session_id: n.tx.session_id(),
            }) != Some(n.tx.position())
            {
                return Err(format!("{}: position differs from the sender's", n.addr));
            }
        }
        if m.rx.counters().messages != 9000 {
            return Err(format!("{} messages counted", m.rx.counters().messages));
        }
        Ok(())
    });
}

/// `max_sessions` 2 and three senders: the third is refused (told and counted) while both
/// others are live, and neither of them is disturbed; when one dies silently, it is reported
/// gone after the liveness timeout and the third takes its place.
#[test]
fn refused_beyond_max_sessions_then_takes_a_dead_ones_place() {
    let _w = watchdog("refused_beyond_max_sessions", 300);
    let rx_cfg = Config {
        max_sessions: 2,
        liveness_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let mut m = Multi::new(
        5,
        2,
        rx_cfg,
        LinkConfig::perfect(Duration::from_micros(50)),
        4000,
    );
    while m.rx.live_sessions() < 2 {
        m.step().unwrap();
    }
    let third = m.add(addr(2), 777, 0, 2000);
    while m.nodes[..2].iter().any(|n| n.checker.delivered < 2000) {
        m.step().unwrap();
    }
    assert!(
        m.nodes[third].tx.is_refused(),
        "{:?}",
        m.nodes[third].events
    );
    assert!(m.nodes[third].events.contains(&Event::SessionRefused));
    assert_eq!(m.nodes[third].tx.offer(1, b"x"), Err(OfferError::Refused));
    assert!(m.rx.counters().dropped(DropReason::SessionRefused) >= 1);
    assert_eq!(m.nodes[third].checker.delivered, 0);
    // The first sender dies without a word.
    m.nodes[0].dead = true;
    let dead = conduit_proto::Peer {
        addr: addr(0),
        session_id: m.nodes[0].tx.session_id(),
    };
    while m.nodes[third].checker.delivered < 2000 || m.nodes[1].checker.delivered < 4000 {
        m.step().unwrap();
    }
    let gone = m.session_events.iter().position(|e| {
        *e == SessionEvent::Gone {
            peer: dead,
            reason: GoneReason::TimedOut,
        }
    });
    let joined = m
        .session_events
        .iter()
        .position(|e| matches!(e, SessionEvent::Joined { peer } if peer.addr == addr(2)));
    assert!(gone.is_some() && joined > gone, "{:?}", m.session_events);
    assert_eq!(m.rx.sessions().count(), 2);
}

/// A sender restarted at the same address (a new session id) replaces its old session; the
/// others are untouched; its new stream arrives whole.
#[test]
fn restarted_sender_replaces_its_session_only() {
    let _w = watchdog("restarted_sender_replaces", 300);
    for_seeds("restarted_sender", seeds(4), |seed| {
        let mut m = Multi::new(seed, 3, Config::default(), lossy(seed), 6000);
        while m.nodes[1].checker.delivered < 1500 {
            m.step()?;
        }
        // Sender 1 is killed and restarted at its address: a new session, epoch 1.
        m.nodes[1].dead = true;
        let old = m.nodes[1].tx.session_id();
        let i = m.add(addr(1), seed * 1000 + 5, 1, 3000);
        m.nodes[i].checker.epoch = 1;
        while !(m.nodes[0].checker.delivered == 6000
            && m.nodes[2].checker.delivered == 6000
            && m.nodes[i].checker.delivered == 3000)
        {
            m.step()?;
        }
        let new = m.nodes[i].tx.session_id();
        let replaced = SessionEvent::Replaced {
            addr: addr(1),
            old,
            new,
        };
        if !m.session_events.contains(&replaced) {
            return Err(format!("no {replaced:?} in {:?}", m.session_events));
        }
        if !m.rx_events.contains(&Event::SessionReplaced { old, new }) {
            return Err("no SessionReplaced event".into());
        }
        if m.session_events
            .iter()
            .any(|e| matches!(e, SessionEvent::Gone { .. }))
        {
            return Err(format!(
                "a session was reported gone: {:?}",
                m.session_events
            ));
        }
        if m.rx.live_sessions() != 3 {
            return Err(format!("{} live sessions", m.rx.live_sessions()));
        }
        Ok(())
    });
}

/// A sender that closes its stream is reported gone (closed) and its place freed.
#[test]
fn closed_session_is_reported_and_dropped() {
    let _w = watchdog("closed_session", 120);
    let mut m = Multi::new(
        3,
        2,
        Config::default(),
        LinkConfig::perfect(Duration::from_micros(50)),
        500,
    );
    m.run_until_done().unwrap();
    while !m.nodes[0].tx.is_flushed() {
        m.step().unwrap();
    }
    let peer = conduit_proto::Peer {
        addr: addr(0),
        session_id: m.nodes[0].tx.session_id(),
    };
    m.nodes[0].tx.close(m.now);
    let end = m.now + Duration::from_secs(1);
    while m.now < end {
        m.step().unwrap();
    }
    assert!(
        m.session_events.contains(&SessionEvent::Gone {
            peer,
            reason: GoneReason::Closed
        }),
        "{:?}",
        m.session_events
    );
    assert_eq!(m.rx.sessions().count(), 1);
    assert!(m.rx_events.contains(&Event::Closed));
}

/// `max_sessions` 1 keeps the single-session rules: a second sender is refused while the
/// first is live, and the session events follow the one session.
#[test]
fn one_session_place_refuses_a_second_sender() {
    let _w = watchdog("one_session_place", 120);
    let rx_cfg = Config {
        max_sessions: 1,
        ..Config::default()
    };
    let mut m = Multi::new(
        9,
        1,
        rx_cfg,
        LinkConfig::perfect(Duration::from_micros(50)),
        3000,
    );
    while m.rx.live_sessions() < 1 {
        m.step().unwrap();
    }
    let second = m.add(addr(1), 4242, 0, 100);
    while m.nodes[0].checker.delivered < 3000 {
        m.step().unwrap();
    }
    assert!(m.nodes[second].tx.is_refused());
    assert_eq!(m.nodes[second].checker.delivered, 0);
    assert!(m.rx.counters().dropped(DropReason::SessionRefused) >= 1);
    assert_eq!(
        m.session_events,
        [SessionEvent::Joined {
            peer: conduit_proto::Peer {
                addr: addr(0),
                session_id: m.nodes[0].tx.session_id()
            }
        }]
    );
}

/// Keyed: three keyed senders, each stream whole; a sender with another key is not accepted
/// and, while the others are live, no key mismatch is reported (a stranger's failures).
#[test]
fn keyed_senders_each_exactly_once_and_a_stranger_changes_nothing() {
    let _w = watchdog("keyed_senders", 300);
    for_seeds("keyed_senders", seeds(3), |seed| {
        let rx_cfg = Config {
            key: Some(conduit_proto::Psk::new([7; 32])),
            ..Config::default()
        };
        let mut m = Multi::new(seed, 3, rx_cfg, lossy(seed), 2000);
        while m.rx.live_sessions() < 3 {
            m.step()?;
        }
        let stranger = Config {
            key: Some(conduit_proto::Psk::new([8; 32])),
            ..Config::default()
        };
        m.nodes.push(Node {
            addr: addr(3),
            tx: Sender::new(stranger, RX, m.now, seed + 500).unwrap(),
            gen: Gen::new(seed + 500, 0, 0, false),
            checker: Checker::default(),
            last_pos: None,
            events: Vec::new(),
            dead: false,
        });
        let end = m.now + Duration::from_millis(500);
        while m.now < end {
            m.step()?;
        }
        m.run_until_done()?;
        if m.rx.counters().dropped(DropReason::AuthFailed) < 10 {
            return Err("the stranger was barely heard".into());
        }
        if m.rx_events.contains(&Event::KeyMismatch) {
            return Err("a stranger made the receiver report a key mismatch".into());
        }
        if m.rx.live_sessions() != 3 {
            return Err(format!("{} live sessions", m.rx.live_sessions()));
        }
        Ok(())
    });
}

/// An on-path attacker replays every datagram to the receiver from random other addresses:
/// no session is created or disturbed by them (cookies bind the address), nothing of theirs
/// is delivered, the real streams complete, and the held sessions stay the real ones.
#[test]
fn replays_from_spoofed_addresses_change_nothing() {
    let _w = watchdog("spoofed_replays", 300);
    for_seeds("spoofed_replays", seeds(3), |seed| {
        let mut m = Multi::new(seed, 2, Config::default(), lossy(seed), 2000);
        m.spoof = Some(conduit_proto::Rng::new(seed ^ 0xbad));
        m.run_until_done()?;
        let held: Vec<_> = m.rx.sessions().map(|(p, _)| p.addr).collect();
        if held.len() != 2 || !held.iter().all(|a| *a == addr(0) || *a == addr(1)) {
            return Err(format!("held sessions {held:?}"));
        }
        let joined = m
            .session_events
            .iter()
            .filter(|e| matches!(e, SessionEvent::Joined { .. }))
            .count();
        if joined != 2 {
            return Err(format!("{:?}", m.session_events));
        }
        Ok(())
    });
}

/// Closing the subscription's end reports every joined session gone (closed), and their
/// positions are no longer given.
#[test]
fn closing_the_sessions_reports_each_joined_one_gone() {
    let _w = watchdog("close all", 120);
    let mut m = Multi::new(
        5,
        2,
        Config::default(),
        LinkConfig::perfect(Duration::from_micros(50)),
        500,
    );
    m.run_until_done().unwrap();
    let peers: Vec<conduit_proto::Peer> = (0..2)
        .map(|i| conduit_proto::Peer {
            addr: addr(i),
            session_id: m.nodes[i].tx.session_id(),
        })
        .collect();
    for &p in &peers {
        assert!(m.rx.position(p).is_some());
    }
    m.rx.close(m.now);
    let events: Vec<SessionEvent> = std::iter::from_fn(|| m.rx.poll_session_event()).collect();
    for &peer in &peers {
        assert!(
            events.contains(&SessionEvent::Gone {
                peer,
                reason: GoneReason::Closed
            }),
            "{events:?}"
        );
        assert_eq!(m.rx.position(peer), None);
    }
    assert_eq!(events.len(), 2, "{events:?}");
}
