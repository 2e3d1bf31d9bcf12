//! One sender streaming to a multicast group of receivers on a simulated network: every
//! receiver gets everything under independent loss, NAK suppression under correlated loss,
//! the flow strategies (min with a stopped receiver, tagged, max), late joiners, refusals.

mod proto_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conduit_proto::sim::{LinkConfig, Network};
use conduit_proto::{Config, Event, FlowStrategy, OfferError, Receiver, Rng, Sender};
use proto_common::watchdog;

const GROUP: &str = "239.1.2.3:7000";
const SENDER: &str = "10.0.0.1:5000";

fn rx_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 1, 1 + i as u8], 7000))
}

/// One receiver of the group: its endpoint, its links and what it got.
struct Member {
    rx: Receiver,
    addr: SocketAddr,
    /// Sender to receiver (group datagrams and unicast ones).
    down: Network,
    /// Receiver to sender.
    up: Network,
    /// Sequence numbers received, in order from the first one.
    first: Option<u64>,
    next: u64,
    error: Option<String>,
    events: Vec<Event>,
    /// A stopped receiver (SIGSTOP): it neither reads nor sends.
    stopped: bool,
}

struct GroupSim {
    now: Instant,
    start: Instant,
    tx: Sender,
    members: Vec<Member>,
    /// Loss before the fan-out: every receiver misses the same group datagrams.
    correlated: f64,
    rng: Rng,
    buf: Vec<u8>,
    tx_events: Vec<Event>,
    /// Next sequence number to offer.
    seq: u64,
    group_datagrams: u64,
}

fn tx_config(flow: FlowStrategy) -> Config {
    Config {
        flow,
        receiver_timeout: Duration::from_millis(500),
        ..Config::default()
    }
}

fn link(loss: f64) -> LinkConfig {
    LinkConfig {
        loss,
        jitter: Duration::from_micros(20),
        ..LinkConfig::perfect(Duration::from_micros(100))
    }
}

impl GroupSim {
    fn new(seed: u64, config: Config) -> GroupSim {
        let now = Instant::now();
        GroupSim {
            now,
            start: now,
            tx: Sender::new(config, GROUP.parse().unwrap(), now, seed).unwrap(),
            members: Vec::new(),
            correlated: 0.0,
            rng: Rng::new(seed ^ 0xC0),
            buf: vec![0u8; 64 * 1500],
            tx_events: Vec::new(),
            seq: 0,
            group_datagrams: 0,
        }
    }

    fn add(&mut self, config: Config, down: LinkConfig, up: LinkConfig) -> usize {
        let i = self.members.len();
        let seed = 1000 + i as u64 * 7 + self.rng.next_u64() % 1000;
        self.members.push(Member {
            rx: Receiver::new(config, self.now, seed).unwrap(),
            addr: rx_addr(i),
            down: Network::new(down, seed ^ 1),
            up: Network::new(up, seed ^ 2),
            first: None,
            next: 0,
            error: None,
            events: Vec::new(),
            stopped: false,
        });
        i
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Offers messages up to `total` (8-byte sequence numbers) until back-pressured.
    fn offer(&mut self, total: u64) -> Result<(), String> {
        while self.seq < total {
            match self.tx.offer(1, &self.seq.to_le_bytes()) {
                Ok(_) => self.seq += 1,
                Err(OfferError::BackPressured | OfferError::NotConnected) => break,
                Err(e) => return Err(format!("offer: {e:?}")),
            }
        }
        Ok(())
    }

    /// Moves every datagram due now, runs due timers, drains events.
    fn pump(&mut self) {
        let group: SocketAddr = GROUP.parse().unwrap();
        let sender: SocketAddr = SENDER.parse().unwrap();
        let now = self.now;
        for _ in 0..10_000 {
            let mut moved = false;
            if self.tx.poll_timeout().is_some_and(|t| t <= now) {
                self.tx.handle_timeout(now);
            }
            while let Some(t) = self.tx.poll_transmit(now, 16, &mut self.buf) {
                moved = true;
                for d in self.buf[..t.len].chunks(t.segment_size) {
                    if t.destination == group {
                        self.group_datagrams += 1;
                        if self.rng.chance(self.correlated) {
                            continue;
                        }
                        for m in &mut self.members {
                            m.down.send(now, sender, m.addr, d);
                        }
                    } else if let Some(m) =
                        self.members.iter_mut().find(|m| m.addr == t.destination)
                    {
                        m.down.send(now, sender, m.addr, d);
                    }
                }
            }
            while let Some(e) = self.tx.poll_event() {
                self.tx_events.push(e);
            }
            for m in &mut self.members {
                if m.stopped {
                    // Its socket buffer overflows: what arrives meanwhile is lost.
                    while m.down.receive(now).is_some() {}
                    continue;
                }
                while let Some((_, _, bytes)) = m.down.receive(now) {
                    moved = true;
                    let (first, next, error) = (&mut m.first, &mut m.next, &mut m.error);
                    m.rx.handle_datagram(now, sender, &bytes, |_, p| {
                        let seq = u64::from_le_bytes(p.try_into().unwrap());
                        if first.is_none() {
                            *first = Some(seq);
                            *next = seq;
                        }
                        if seq != *next && error.is_none() {
                            *error = Some(format!("expected {} got {seq}", *next));
                        }
                        *next = seq + 1;
                    });
                }
                if m.rx.poll_timeout().is_some_and(|t| t <= now) {
                    m.rx.handle_timeout(now);
                }
                while let Some(t) = m.rx.poll_transmit(now, 16, &mut self.buf) {
                    moved = true;
                    for d in self.buf[..t.len].chunks(t.segment_size) {
                        m.up.send(now, m.addr, t.destination, d);
                    }
                }
                while let Some(e) = m.rx.poll_event() {
                    m.events.push(e);
                }
            }
            for i in 0..self.members.len() {
                let addr = self.members[i].addr;
                while let Some((_, _, bytes)) = self.members[i].up.receive(now) {
                    moved = true;
                    if !self.members[i].stopped {
                        self.tx.handle_datagram(now, addr, &bytes);
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("pump does not settle");
    }

    /// Advances virtual time to the next arrival or timer.
    fn advance(&mut self) {
        let mut next = self.tx.poll_timeout();
        for m in &self.members {
            for t in [m.down.next_arrival(), m.up.next_arrival()] {
                next = match (next, t) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            if !m.stopped {
                next = match (next, m.rx.poll_timeout()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        let next = next.unwrap_or(self.now + Duration::from_millis(1));
        self.now = next.max(self.now + Duration::from_nanos(1));
    }

    /// Streams `total` messages until `done` or a virtual-time limit.
    fn run(&mut self, total: u64, limit: Duration, mut done: impl FnMut(&GroupSim) -> bool) {
        loop {
            self.offer(total).unwrap();
            self.pump();
            for m in &self.members {
                assert!(m.error.is_none(), "{:?} at {:?}", m.error, self.elapsed());
            }
            if done(self) {
                return;
            }
            assert!(
                self.elapsed() < limit,
                "no end after {:?}: sent {} of {total}, tx {:?}, receivers at {:?}",
                self.elapsed(),
                self.seq,
                self.tx.state(),
                self.members.iter().map(|m| m.next).collect::<Vec<_>>()
            );
            self.advance();
        }
    }

    fn all_got(&self, total: u64) -> bool {
        self.seq == total
            && self
                .members
                .iter()
                .filter(|m| !m.stopped)
                .all(|m| m.next == total)
    }

    fn naks_sent(&self) -> u64 {
        self.members.iter().map(|m| m.rx.counters().naks_sent).sum()
    }
}

#[test]
fn every_receiver_gets_everything_under_independent_loss() {
    let _w = watchdog("independent loss", 300);
    for seed in 0..3 {
        let mut g = GroupSim::new(seed, tx_config(FlowStrategy::Min));
        for _ in 0..4 {
            g.add(Config::default(), link(0.03), link(0.03));
        }
        let total = 30_000;
        g.run(total, Duration::from_secs(120), |g| g.all_got(total));
        for m in &g.members {
            assert_eq!(
                m.first,
                Some(0),
                "seed {seed}: every receiver from the start"
            );
            assert!(
                !m.events
                    .iter()
                    .any(|e| matches!(e, Event::UnrecoverableLoss { .. })),
                "seed {seed}: {:?}",
                m.events
            );
        }
        assert!(g.tx.is_group());
        assert_eq!(g.tx.receivers(), 4);
        let joined = g
            .tx_events
            .iter()
            .filter(|e| matches!(e, Event::ReceiverJoined { .. }))
            .count();
        assert_eq!(joined, 4, "seed {seed}: {:?}", g.tx_events);
    }
}

/// Total NAKs of `n` receivers under `loss` applied before the fan-out.
fn correlated_naks(n: usize, seed: u64, total: u64, loss: f64) -> (u64, u64, u64) {
    let mut g = GroupSim::new(seed, tx_config(FlowStrategy::Min));
    g.correlated = loss;
    for _ in 0..n {
        g.add(Config::default(), link(0.0), link(0.0));
    }
    g.run(total, Duration::from_secs(120), |g| g.all_got(total));
    let retransmitted = g.tx.counters().retransmitted;
    (g.naks_sent(), retransmitted, g.group_datagrams)
}

/// NAKs of 4 receivers against 1 under `loss` correlated loss (repairs are lost alike, so
/// gaps are NAKed again): at most 1.5 times.
fn nak_suppression(loss: f64, total: u64) {
    let (mut one, mut four) = (0, 0);
    for seed in 0..3 {
        let (n1, r1, d1) = correlated_naks(1, seed, total, loss);
        let (n4, r4, d4) = correlated_naks(4, seed, total, loss);
        println!(
            "seed {seed}: NAKs sent by 1 receiver {n1} (retransmissions {r1}, group datagrams {d1}); by 4 receivers {n4} in total (retransmissions {r4}, group datagrams {d4})"
        );
        one += n1;
        four += n4;
    }
    println!(
        "correlated {:.0} % loss, {total} messages x 3 seeds: NAKs 1 receiver {one}, 4 receivers {four} ({:.2}x)",
        loss * 100.0,
        four as f64 / one as f64
    );
    assert!(one > 0);
    assert!(
        four as f64 <= 1.5 * one as f64,
        "{loss} loss: 4 receivers sent {four} NAKs, 1 receiver {one}"
    );
}

#[test]
fn nak_suppression_under_correlated_loss() {
    let _w = watchdog("nak suppression", 300);
    nak_suppression(0.03, 200_000);
}

/// At 10 % correlated loss a repair is often lost too: the retries (and the NAKs held by an
/// echo) are also delayed at random per receiver, so they do not go out together.
#[test]
fn nak_retries_stay_suppressed_when_repairs_are_lost() {
    let _w = watchdog("nak retries", 300);
    nak_suppression(0.10, 400_000);
}

#[test]
fn flow_min_drops_a_stopped_receiver_after_the_timeout() {
    let _w = watchdog("flow min", 300);
    let mut g = GroupSim::new(7, tx_config(FlowStrategy::Min));
    for _ in 0..3 {
        g.add(Config::default(), link(0.01), link(0.01));
    }
    let total = 40_000;
    g.run(total, Duration::from_secs(60), |g| g.seq >= 5_000);
    // SIGSTOP: the receiver reads and sends nothing more.
    g.members[2].stopped = true;
    let stopped_at = g.now;
    g.run(total, Duration::from_secs(60), |g| g.all_got(total));
    let gone = g
        .tx_events
        .iter()
        .find(|e| {
            matches!(e, Event::ReceiverGone { addr, timed_out: true, .. } if *addr == rx_addr(2))
        })
        .cloned();
    assert!(gone.is_some(), "{:?}", g.tx_events);
    assert!(
        g.now - stopped_at >= g.tx.config().receiver_timeout,
        "the sender waited for the stopped receiver"
    );
    assert_eq!(g.tx.receivers(), 2);
    // Resumed (SIGCONT): it asks for the session again, is accepted at its old position,
    // and the log still holds what it missed: it is repaired and counts again.
    g.members[2].stopped = false;
    let events = g.tx_events.len();
    g.run(total, Duration::from_secs(120), |g| {
        g.members[2].next == total
    });
    assert!(
        g.tx_events[events..]
            .iter()
            .any(|e| matches!(e, Event::ReceiverJoined { addr, .. } if *addr == rx_addr(2))),
        "{:?}",
        &g.tx_events[events..]
    );
    assert_eq!(g.tx.receivers(), 3);
    assert!(
        !g.members[2]
            .events
            .iter()
            .any(|e| matches!(e, Event::UnrecoverableLoss { .. })),
        "{:?}",
        g.members[2].events
    );
}

#[test]
fn flow_tagged_counts_only_tagged_receivers() {
    let _w = watchdog("flow tagged", 300);
    let flow = FlowStrategy::Tagged {
        tag: 42,
        min_receivers: 2,
    };
    let mut g = GroupSim::new(3, tx_config(flow));
    let tagged = Config {
        group_tag: Some(42),
        ..Config::default()
    };
    g.add(tagged.clone(), link(0.0), link(0.0));
    // An untagged receiver alone does not connect the sender.
    let slow = g.add(Config::default(), link(0.0), link(0.0));
    let until = g.now + Duration::from_millis(100);
    g.run(1, Duration::from_secs(10), |g| g.now >= until);
    assert!(!g.tx.is_connected(), "one tagged receiver of two");
    // Each is reported joined with the tag its status says.
    let mut tags: Vec<_> = g
        .tx_events
        .iter()
        .filter_map(|e| match e {
            Event::ReceiverJoined { addr, tag, .. } => Some((*addr, *tag)),
            _ => None,
        })
        .collect();
    tags.sort();
    assert_eq!(tags, vec![(rx_addr(0), Some(42)), (rx_addr(1), None)]);
    g.add(tagged, link(0.0), link(0.0));
    let total = 30_000;
    g.run(total, Duration::from_secs(10), |g| g.seq >= 1_000);
    // The untagged receiver stops: the sender is not held back.
    g.members[slow].stopped = true;
    let t = g.now;
    g.run(total, Duration::from_secs(60), |g| g.all_got(total));
    assert!(
        g.now - t < g.tx.config().receiver_timeout,
        "the untagged receiver held the sender back: {:?}",
        g.now - t
    );
}

#[test]
fn flow_max_is_bound_by_the_fastest() {
    let _w = watchdog("flow max", 300);
    let mut g = GroupSim::new(5, tx_config(FlowStrategy::Max));
    g.add(Config::default(), link(0.0), link(0.0));
    let slow = g.add(
        Config {
            gap_policy: conduit_proto::GapPolicy::Skip,
            ..Config::default()
        },
        link(0.0),
        link(0.0),
    );
    let total = 30_000;
    g.run(total, Duration::from_secs(10), |g| g.seq >= 1_000);
    g.members[slow].stopped = true;
    let t = g.now;
    g.run(total, Duration::from_secs(60), |g| g.all_got(total));
    assert!(
        g.now - t < g.tx.config().receiver_timeout,
        "the stopped receiver held the sender back"
    );
    // Back: what it missed is gone; it reports the loss and goes on.
    g.members[slow].stopped = false;
    let until = g.now + Duration::from_millis(500);
    g.run(total, Duration::from_secs(120), |g| g.now >= until);
    assert!(
        g.members[slow]
            .events
            .iter()
            .any(|e| matches!(e, Event::UnrecoverableLoss { .. })),
        "{:?}",
        g.members[slow].events
    );
}

#[test]
fn late_joiner_starts_at_the_live_position_and_lost_joins_are_repaired() {
    let _w = watchdog("late join", 300);
    let mut g = GroupSim::new(11, tx_config(FlowStrategy::Min));
    g.add(Config::default(), link(0.0), link(0.0));
    let total = 20_000;
    g.run(total, Duration::from_secs(10), |g| g.seq >= 5_000);
    // The late joiner's links lose half of everything: its handshake needs repeats.
    let late = g.add(Config::default(), link(0.5), link(0.5));
    g.run(5_000, Duration::from_secs(10), |g| {
        g.members[late].rx.is_connected()
    });
    g.members[late].down.link.loss = 0.0;
    g.members[late].up.link.loss = 0.0;
    g.run(total, Duration::from_secs(60), |g| g.all_got(total));
    let first = g.members[late].first.expect("the late joiner got data");
    assert!(first >= 5_000, "started at {first}, not the live position");
    assert!(g.members[late].rx.is_group());
}

#[test]
fn version_2_receiver_and_keys_are_refused_clearly() {
    let mut g = GroupSim::new(1, tx_config(FlowStrategy::Min));
    g.add(
        Config {
            versions: (2, 2),
            ..Config::default()
        },
        link(0.0),
        link(0.0),
    );
    let until = g.now + Duration::from_millis(50);
    g.run(0, Duration::from_secs(10), |g| g.now >= until);
    assert!(!g.tx.is_connected());
    assert!(
        g.tx_events
            .iter()
            .any(|e| matches!(e, Event::VersionMismatch { remote: (2, 2), .. })),
        "{:?}",
        g.tx_events
    );
    let keyed = Config {
        key: Some(conduit_proto::Psk::new([7; 32])),
        ..Config::default()
    };
    let err = Sender::new(keyed, GROUP.parse().unwrap(), g.now, 1).unwrap_err();
    assert!(err.contains("not supported"), "{err}");
    let old = Config {
        versions: (2, 2),
        ..Config::default()
    };
    assert!(Sender::new(old, GROUP.parse().unwrap(), g.now, 1).is_err());
}

fn sealed(mut bytes: Vec<u8>) -> Vec<u8> {
    conduit_proto::frame::seal(&mut bytes, true);
    bytes
}

fn nak_echo(sid: u32, count: u16, ranges: &[(u64, u64)]) -> Vec<u8> {
    use conduit_proto::frame::{self, FrameKind, NakHeader, NakRange};
    use zerocopy::little_endian::{U16, U32, U64};
    use zerocopy::IntoBytes;
    let h = NakHeader {
        header: frame::header(3, FrameKind::NAK, frame::FLAG_ECHO, sid, 1),
        count: U16::new(count),
        reserved: U16::new(0),
        nonce: U32::new(0),
    };
    let mut b = h.as_bytes().to_vec();
    for &(from, to) in ranges {
        let r = NakRange {
            from: U64::new(from),
            to: U64::new(to),
        };
        b.extend_from_slice(r.as_bytes());
    }
    sealed(b)
}

#[test]
fn group_inputs_are_checked() {
    use conduit_proto::DropReason;
    let mut g = GroupSim::new(2, tx_config(FlowStrategy::Min));
    g.add(Config::default(), link(0.0), link(0.0));
    g.run(100, Duration::from_secs(10), |g| {
        g.all_got(100) && g.tx.receivers() == 1
    });
    let sender: SocketAddr = SENDER.parse().unwrap();
    let now = g.now;
    let rx = &mut g.members[0].rx;
    let sid = rx.session_id().unwrap();
    let p = rx.position();
    // NAK echoes: a bad count, short ranges; a good one changes nothing delivered.
    for (bytes, reason) in [
        (nak_echo(sid, 0, &[]), DropReason::BadLength),
        (nak_echo(sid, 33, &[(p, p + 8); 33]), DropReason::BadLength),
        (nak_echo(sid, 2, &[(p, p + 8)]), DropReason::Truncated),
        (
            nak_echo(sid ^ 1, 1, &[(p, p + 8)]),
            DropReason::WrongSession,
        ),
    ] {
        let before = rx.counters().dropped(reason);
        rx.handle_datagram(now, sender, &bytes, |_, _| panic!("delivered"));
        assert_eq!(rx.counters().dropped(reason), before + 1, "{reason:?}");
    }
    let total = rx.counters().dropped_total();
    rx.handle_datagram(now, sender, &nak_echo(sid, 1, &[(p, p + 8)]), |_, _| {
        panic!("delivered")
    });
    rx.handle_datagram(
        now,
        sender,
        &nak_echo(sid, 1, &[(u64::MAX - 8, u64::MAX)]),
        |_, _| panic!("delivered"),
    );
    assert_eq!(rx.counters().dropped_total(), total);
    assert_eq!(rx.position(), p);

    // The sender: need-setup requests from many (spoofed) addresses get at most 16
    // unicast setups per setup interval.
    use conduit_proto::frame::{self, FrameKind, Status};
    use zerocopy::little_endian::{U32, U64};
    use zerocopy::IntoBytes;
    let tx_sid = g.tx.session_id();
    let st = |flags| Status {
        header: frame::header(3, FrameKind::STATUS, flags, tx_sid, 1),
        position: U64::new(0),
        window: U32::new(1 << 16),
        receiver_id: U32::new(99),
    };
    let need = sealed(st(frame::FLAG_NEED_SETUP).as_bytes().to_vec());
    let plain = sealed(st(0).as_bytes().to_vec());
    let mut odd = st(0).as_bytes().to_vec();
    odd.extend_from_slice(&[1, 0, 0, 0]);
    let odd = sealed(odd);
    let before = g.tx.counters().dropped(DropReason::WrongSource);
    for i in 0..200u16 {
        let from = SocketAddr::from(([192, 0, 2, 1], 1000 + i));
        g.tx.handle_datagram(now, from, &need);
        g.tx.handle_datagram(now, from, &plain);
        // A status shorter than a version 3 one from a member: read as version 2.
        g.tx.handle_datagram(now, rx_addr(0), &odd);
    }
    assert_eq!(
        g.tx.counters().dropped(DropReason::WrongSource),
        before + 200,
        "status of strangers"
    );
    let mut setups = 0;
    let mut buf = vec![0u8; 2048];
    while let Some(t) = g.tx.poll_transmit(now, 1, &mut buf) {
        if !t.destination.ip().is_multicast() && buf[1] == FrameKind::SETUP.0 {
            setups += 1;
        }
    }
    assert!(
        (1..=16).contains(&setups),
        "{setups} unicast setups in one interval"
    );
    assert_eq!(g.tx.receivers(), 1);
}
