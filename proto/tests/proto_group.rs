//! One sender streaming to a multicast group of receivers on a simulated network: every
//! receiver gets everything under independent loss, NAK suppression under correlated loss,
//! the flow strategies (min with a stopped receiver, tagged, max), late joiners, refusals.

mod proto_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conduit_proto::sim::{LinkConfig, Network, Stalls};
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
    /// Delivery latency of each message (virtual microseconds from its offer).
    latencies: Vec<u32>,
    /// When this receiver's process is not scheduled (a loaded host).
    stalls: Option<Stalls>,
    /// The end of the stall it is in now: it neither reads nor runs its timers before.
    asleep_until: Option<Instant>,
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
    /// When each message was offered.
    offered_at: Vec<Instant>,
    /// Paced offers: this many messages every [`PACE_TICK`] from the first one accepted.
    pace: Option<u64>,
    pace_from: Option<Instant>,
    /// When the sender's process is not scheduled, and the end of the stall it is in now.
    tx_stalls: Option<Stalls>,
    tx_asleep_until: Option<Instant>,
}

const PACE_TICK: Duration = Duration::from_micros(100);

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
            offered_at: Vec::new(),
            pace: None,
            pace_from: None,
            tx_stalls: None,
            tx_asleep_until: None,
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
            latencies: Vec::new(),
            stalls: None,
            asleep_until: None,
        });
        i
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Offers messages up to `total` (8-byte sequence numbers) until back-pressured.
    fn offer(&mut self, total: u64) -> Result<(), String> {
        let limit = match (self.pace, self.pace_from) {
            (Some(n), Some(from)) => {
                let ticks = ((self.now - from).as_nanos() / PACE_TICK.as_nanos()) as u64;
                total.min(n * (ticks + 1))
            }
            (Some(n), None) => total.min(n),
            (None, _) => total,
        };
        while self.seq < limit {
            match self.tx.offer(1, &self.seq.to_le_bytes()) {
                Ok(_) => {
                    self.seq += 1;
                    self.offered_at.push(self.now);
                    if self.pace.is_some() {
                        self.pace_from.get_or_insert(self.now);
                    }
                }
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
        self.tx_asleep_until = self.tx_stalls.as_mut().and_then(|s| s.at(now, now));
        for m in &mut self.members {
            m.asleep_until = m.stalls.as_mut().and_then(|s| s.at(now, now));
        }
        let tx_awake = self.tx_asleep_until.is_none();
        for _ in 0..10_000 {
            let mut moved = false;
            if tx_awake && self.tx.poll_timeout().is_some_and(|t| t <= now) {
                self.tx.handle_timeout(now);
            }
            while let Some(t) = tx_awake
                .then(|| self.tx.poll_transmit(now, 16, &mut self.buf))
                .flatten()
            {
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
                if m.asleep_until.is_some() {
                    // Not scheduled: what arrives waits in its socket buffer; it reads it
                    // first when it runs again, then runs its timers.
                    continue;
                }
                while let Some((_, _, bytes)) = m.down.receive(now) {
                    moved = true;
                    let (first, next, error) = (&mut m.first, &mut m.next, &mut m.error);
                    let (latencies, offered_at) = (&mut m.latencies, &self.offered_at);
                    m.rx.handle_datagram(now, sender, &bytes, |_, p| {
                        let seq = u64::from_le_bytes(p.try_into().unwrap());
                        if let Some(&at) = offered_at.get(seq as usize) {
                            latencies.push((now - at).as_micros().min(u32::MAX as u128) as u32);
                        }
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
                if !tx_awake {
                    break;
                }
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
        let min = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // A party asleep wakes at the end of its stall, whatever waits for it.
        let mut next = self.tx_asleep_until.or(self.tx.poll_timeout());
        if let Some(from) = self.pace_from {
            let ticks = ((self.now - from).as_nanos() / PACE_TICK.as_nanos()) as u32;
            next = min(next, Some(from + PACE_TICK * (ticks + 1)));
        }
        for m in &self.members {
            next = min(next, self.tx_asleep_until.or(m.up.next_arrival()));
            if m.stopped {
                next = min(next, m.down.next_arrival());
            } else {
                next = min(
                    next,
                    m.asleep_until
                        .or(min(m.down.next_arrival(), m.rx.poll_timeout())),
                );
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

/// A link that holds datagrams now and then (a receiving end not scheduled while others
/// run): on top of [`link`], stalls about every `every` (exponential), of 1 ms or more
/// (Pareto, shape 1.5: mean 3 ms, a heavy tail, at most 30 ms); datagrams that would arrive
/// during one arrive when it ends, in order. The stalls are drawn apart from the losses: the
/// same seed loses the same datagrams with and without them.
fn jittery(loss: f64, every: Duration) -> LinkConfig {
    LinkConfig {
        stall_interval: every,
        stall_min: Duration::from_millis(1),
        stall_max: Duration::from_millis(30),
        ..link(loss)
    }
}

/// Every process of the run (the sender and each receiver) is not scheduled now and then:
/// stalls about every `every`, of `min` or more (Pareto, shape 1.5: mean three times `min`,
/// a heavy tail), at most `max`, drawn per process. A stalled process neither reads nor
/// runs its timers; when it runs again it reads what arrived first, as the endpoints do.
#[derive(Clone, Copy)]
struct Load {
    every: Duration,
    min: Duration,
    max: Duration,
}

/// What one correlated-loss run measured.
struct Run {
    naks: u64,
    retransmitted: u64,
    group_datagrams: u64,
    /// Virtual time to deliver everything to every receiver.
    elapsed: Duration,
    /// Delivery latency (offer to delivery) over every message of every receiver, in
    /// microseconds: mean, mean of those over 1 ms (repaired), 99th and 99.9th percentile,
    /// maximum.
    latency: [u32; 5],
}

/// `n` receivers under `loss` applied before the fan-out, each on `down`/`up` links.
fn correlated_run(
    n: usize,
    seed: u64,
    total: u64,
    loss: f64,
    down: &LinkConfig,
    pace: Option<u64>,
    load: Option<Load>,
) -> Run {
    let mut g = GroupSim::new(seed, tx_config(FlowStrategy::Min));
    g.correlated = loss;
    g.pace = pace;
    let stalls = |k: u64| load.map(|l| Stalls::new(l.every, l.min, l.max, seed * 64 + k));
    g.tx_stalls = stalls(63);
    for i in 0..n {
        let m = g.add(Config::default(), down.clone(), down.clone());
        g.members[m].stalls = stalls(i as u64);
    }
    g.run(total, Duration::from_secs(120), |g| g.all_got(total));
    let mut lat: Vec<u32> = g
        .members
        .iter()
        .flat_map(|m| m.latencies.iter().copied())
        .collect();
    lat.sort_unstable();
    let q = |f: f64| lat[((lat.len() - 1) as f64 * f) as usize];
    let mean = (lat.iter().map(|&l| u64::from(l)).sum::<u64>() / lat.len() as u64) as u32;
    // Messages that waited for a repair (over 1 ms; the link takes 100..120 us).
    let slow: Vec<u64> = lat
        .iter()
        .filter(|&&l| l > 1000)
        .map(|&l| u64::from(l))
        .collect();
    let repaired = (slow.iter().sum::<u64>() / (slow.len() as u64).max(1)) as u32;
    Run {
        naks: g.naks_sent(),
        retransmitted: g.tx.counters().retransmitted,
        group_datagrams: g.group_datagrams,
        elapsed: g.elapsed(),
        latency: [mean, repaired, q(0.99), q(0.999), q(1.0)],
    }
}

/// NAKs of 4 receivers against 1 under `loss` correlated loss (repairs are lost alike, so
/// gaps are NAKed again), summed over `seeds`: at most 1.5 times. Prints the counts, the
/// repair latencies and the run times.
fn nak_suppression(
    loss: f64,
    total: u64,
    seeds: std::ops::Range<u64>,
    down: &LinkConfig,
    pace: Option<u64>,
    load: Option<Load>,
) {
    let (mut one, mut four) = (0, 0);
    let mut repaired = (0u64, 0u64);
    let nseeds = seeds.end - seeds.start;
    for seed in seeds {
        let r1 = correlated_run(1, seed, total, loss, down, pace, load);
        let r4 = correlated_run(4, seed, total, loss, down, pace, load);
        for (n, r) in [(1, &r1), (4, &r4)] {
            println!(
                "seed {seed}: {n} receiver(s): NAKs {}, retransmissions {}, group datagrams {}, run {:?}, latency us mean/repaired/p99/p99.9/max {:?}",
                r.naks, r.retransmitted, r.group_datagrams, r.elapsed, r.latency
            );
        }
        one += r1.naks;
        four += r4.naks;
        repaired.0 += u64::from(r1.latency[1]);
        repaired.1 += u64::from(r4.latency[1]);
    }
    println!(
        "correlated {:.0} % loss, {total} messages x {nseeds} seeds: NAKs 1 receiver {one}, 4 receivers {four} ({:.2}x); repaired messages' mean latency 1 receiver {} us, 4 receivers {} us",
        loss * 100.0,
        four as f64 / one as f64,
        repaired.0 / nseeds,
        repaired.1 / nseeds
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
    nak_suppression(0.03, 200_000, 0..3, &link(0.0), None, None);
}

/// At 10 % correlated loss a repair is often lost too: the retries (and the NAKs held by an
/// echo) are also delayed at random per receiver, so they do not go out together.
#[test]
fn nak_retries_stay_suppressed_when_repairs_are_lost() {
    let _w = watchdog("nak retries", 300);
    nak_suppression(0.10, 400_000, 0..3, &link(0.0), None, None);
}

/// Paced (10 messages every 100 us, about 10 k datagrams a second), 3 % loss before the
/// fan-out, a steady link: the reference for the runs below, and the repair latency on a
/// quiet link.
#[test]
fn nak_suppression_paced_on_a_steady_link() {
    let _w = watchdog("nak suppression paced", 300);
    nak_suppression(0.03, 200_000, 0..6, &link(0.0), Some(10), None);
}

/// As above on a loaded host: the sender and every receiver are not scheduled now and
/// then, for 0.5 ms or more (mean 1.5 ms, up to 20 ms) about every 5 ms. The receivers see
/// it as RTT spread and widen their NAK delays; one receiver's NAK still reaches the others
/// first.
#[test]
fn nak_suppression_holds_on_a_loaded_host() {
    let _w = watchdog("nak suppression loaded", 300);
    let load = Load {
        every: Duration::from_millis(5),
        min: Duration::from_micros(500),
        max: Duration::from_millis(20),
    };
    nak_suppression(0.03, 200_000, 0..6, &link(0.0), Some(10), Some(load));
}

/// As above with links that hold datagrams for milliseconds now and then (heavy-tailed
/// delay, in order).
#[test]
fn nak_suppression_holds_on_a_jittery_link() {
    let _w = watchdog("nak suppression jittery", 300);
    let down = jittery(0.0, Duration::from_millis(10));
    nak_suppression(0.03, 200_000, 0..6, &down, Some(10), None);
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
