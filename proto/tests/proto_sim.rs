//! The protocol against a simulated hostile network, many seeds: exactly-once in-order
//! delivery, bounded buffers, every run ends; restarts, partitions, liveness, large messages.
//!
//! `CONDUIT_SIM_SEEDS=<n>` runs more seeds; `CONDUIT_SIM_SEED=<s>` runs one seed.

mod proto_common;

use std::time::Duration;

use conduit_proto::sim::LinkConfig;
use conduit_proto::{Config, Event, GapPolicy, Rng};
use proto_common::{for_seeds, seeds, watchdog, Gen, Pair};

const MAX_STEPS: u64 = 20_000_000;

fn hostile_config() -> Config {
    Config {
        liveness_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

/// Streams `gen.total` messages; `fault(pair, gen)` may inject faults each step. Ends when all
/// are delivered and acknowledged.
fn stream(
    pair: &mut Pair,
    gen: &mut Gen,
    mut fault: impl FnMut(&mut Pair, &mut Gen),
) -> Result<(), String> {
    let seed = pair.seed;
    let mut idle_steps = 0u64;
    let mut last = (0u64, 0u64);
    loop {
        fault(pair, gen);
        gen.offer(&mut pair.tx, 256)?;
        pair.pump()?;
        pair.check_bounds()?;
        if let Some(e) = &pair.checker.error {
            return Err(format!("seed {seed}: {e}"));
        }
        if gen.next == gen.total
            && pair.checker.next == gen.total
            && pair.checker.epoch == gen.epoch
            && pair.tx.is_flushed()
        {
            return Ok(());
        }
        if pair.steps > MAX_STEPS || pair.elapsed() > Duration::from_secs(3600) {
            return Err(format!(
                "seed {seed}: no end after {} steps / {:?} virtual: delivered {} of {}, tx {:?}, rx pos {}",
                pair.steps,
                pair.elapsed(),
                pair.checker.next,
                gen.total,
                pair.tx.state(),
                pair.rx.position()
            ));
        }
        let now_key = (pair.checker.delivered, pair.tx.acked_position());
        if now_key == last {
            idle_steps += 1;
            if idle_steps > 2_000_000 {
                return Err(format!(
                    "seed {seed}: livelock: no progress in {idle_steps} steps"
                ));
            }
        } else {
            idle_steps = 0;
            last = now_key;
        }
        if !pair.advance(None) {
            return Err(format!("seed {seed}: stalled with nothing pending"));
        }
    }
}

fn unexpected_events(pair: &Pair) -> Result<(), String> {
    for e in pair.tx_events.iter().chain(pair.rx_events.iter()) {
        match e {
            Event::Connected { .. } => {}
            other => return Err(format!("seed {}: unexpected event {other:?}", pair.seed)),
        }
    }
    Ok(())
}

fn one_hostile(seed: u64, messages: u64) -> Result<(), String> {
    hostile_run(seed, messages, hostile_config())
}

fn hostile_run(seed: u64, messages: u64, cfg: Config) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let link = LinkConfig::hostile(&mut rng, cfg.mtu);
    let mut pair = Pair::new(seed, cfg.clone(), cfg, link);
    let mut gen = Gen::new(seed, 0, messages, true);
    // Up to two partitions shorter than the liveness timeout, at random points of the stream.
    let mut partitions: Vec<(u64, Duration)> = (0..rng.below(3))
        .map(|_| {
            (
                rng.below(messages),
                Duration::from_millis(1 + rng.below(400)),
            )
        })
        .collect();
    // Garbage datagrams sprayed at both ends now and then.
    let garbage = rng.chance(0.3);
    let mut grng = Rng::new(seed ^ 0x6a7b);
    stream(&mut pair, &mut gen, |p, g| {
        partitions.retain(|&(at, d)| {
            if g.next >= at {
                p.net.partition(p.now, p.now + d);
                false
            } else {
                true
            }
        });
        if garbage && grng.chance(0.01) {
            let len = grng.below(2000) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| grng.next_u32() as u8).collect();
            if grng.chance(0.5) && b.len() >= 16 {
                // Plausible header: right kind range and stream.
                b[1] = 1 + grng.below(8) as u8;
                b[8..12].copy_from_slice(&1u32.to_le_bytes());
            }
            let to = if grng.chance(0.5) {
                proto_common::RX
            } else {
                proto_common::TX
            };
            let from = if grng.chance(0.5) {
                proto_common::TX
            } else {
                "10.0.0.9:1".parse().unwrap()
            };
            p.net.send(p.now, from, to, &b);
        }
    })?;
    unexpected_events(&pair)?;
    if pair.net.stats.over_mtu > 0 && !garbage {
        return Err(format!(
            "seed {seed}: {} datagrams over the MTU",
            pair.net.stats.over_mtu
        ));
    }
    Ok(())
}

#[test]
fn hostile_network_many_seeds() {
    // Hang guard scaled with the seed count (a run takes well under a second per seed).
    let _watchdog = watchdog("hostile_network_many_seeds", 300 + 3 * seeds(200));
    if let Some(seed) = std::env::var("CONDUIT_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        one_hostile(seed, 10_000).unwrap();
        return;
    }
    for_seeds("hostile", seeds(200), |seed| one_hostile(seed, 10_000));
}

/// The same with a key on both ends: duplicated, reordered and garbage datagrams meet the
/// replay window and the tag check, and the stream is still exact.
#[test]
fn keyed_hostile_network_seeds() {
    let _watchdog = watchdog("keyed_hostile_network_seeds", 300 + 3 * seeds(200));
    let cfg = Config {
        key: Some(conduit_proto::Psk::new([9; 32])),
        ..hostile_config()
    };
    for_seeds("keyed hostile", seeds(200) / 10, |seed| {
        hostile_run(seed, 5_000, cfg.clone())
    });
}

fn one_restart(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let cfg = hostile_config();
    let mut link = LinkConfig::hostile(&mut rng, cfg.mtu);
    link.corrupt = 0.0;
    let mut pair = Pair::new(seed, cfg.clone(), cfg, link);
    let total = 10_000;
    let mut gen = Gen::new(seed, 0, total, false);
    let sender_restart_at = rng.below(total / 2);
    let receiver_restart_at = total / 2 + rng.below(total / 2);
    let mut sender_restarted = false;
    let mut receiver_restarted = false;
    stream(&mut pair, &mut gen, |p, g| {
        if !sender_restarted && g.next >= sender_restart_at {
            sender_restarted = true;
            p.restart_sender(seed + 1_000_000);
            *g = Gen::new(seed + 1, 1, total, false);
        } else if sender_restarted && !receiver_restarted && g.next >= receiver_restart_at {
            receiver_restarted = true;
            p.restart_receiver(seed + 2_000_000);
        }
    })?;
    if !pair
        .rx_events
        .iter()
        .any(|e| matches!(e, Event::SessionReplaced { .. }))
    {
        return Err(format!(
            "seed {seed}: restarted sender not reported: {:?}",
            pair.rx_events
        ));
    }
    Ok(())
}

#[test]
fn peers_restart() {
    let _watchdog = watchdog("peers_restart", 300 + 3 * seeds(200));
    for_seeds("restart", seeds(200) / 5, one_restart);
}

#[test]
fn one_mib_message_through_five_percent_loss() {
    let _watchdog = watchdog("one_mib_message", 300);
    for seed in 0..3 {
        let cfg = Config::default();
        let mut link = LinkConfig::perfect(Duration::from_micros(200));
        link.loss = 0.05;
        let mut pair = Pair::new(seed, cfg.clone(), cfg, link);
        let mut delivered = 0;
        let mut msg = vec![0u8; 1 << 20];
        proto_common::fill(&mut msg, 0, 0);
        let mut offered = 0;
        while delivered < 3 {
            if offered < 3 && pair.tx.is_connected() {
                proto_common::fill(&mut msg, offered, 0);
                if pair
                    .tx
                    .offer(proto_common::type_of(offered, 0), &msg)
                    .is_ok()
                {
                    offered += 1;
                }
            }
            pair.pump().unwrap();
            assert!(
                pair.checker.error.is_none(),
                "seed {seed}: {:?}",
                pair.checker.error
            );
            delivered = pair.checker.delivered;
            assert!(pair.advance(None), "seed {seed}: stalled");
            assert!(pair.steps < MAX_STEPS, "seed {seed}: no end");
        }
        assert!(pair.tx.counters().retransmitted > 0);
        assert!(
            pair.max_nak_ranges > 1,
            "seed {seed}: gaps were never NAKed together"
        );
        assert!(pair.net.stats.lost > 0);
        let c = pair.rx.counters();
        assert!(
            c.gaps_detected > 0 && c.last_gap.is_some(),
            "seed {seed}: {c:?}"
        );
        assert!(c.gaps_repaired > 0, "seed {seed}: {c:?}");
        assert_eq!(c.gaps_unrecoverable, 0, "seed {seed}");
        assert!(c.last_unrecoverable.is_none());
    }
}

/// A partition longer than the liveness timeout: the sender reports the receiver gone and
/// releases its data; when the network heals the receiver reports the loss explicitly.
fn long_partition(policy: GapPolicy) -> (Pair, Gen) {
    let cfg = Config {
        liveness_timeout: Duration::from_millis(300),
        gap_policy: policy,
        ..Config::default()
    };
    let link = LinkConfig::perfect(Duration::from_micros(100));
    let mut pair = Pair::new(9, cfg.clone(), cfg, link);
    let mut gen = Gen::new(9, 0, 3000, false);
    let mut cut = false;
    while !pair.tx_events.contains(&Event::PeerGone) {
        if gen.next >= 1000 && !cut {
            cut = true;
            pair.net
                .partition(pair.now, pair.now + Duration::from_secs(1));
        }
        gen.offer(&mut pair.tx, 256).unwrap();
        pair.pump().unwrap();
        assert!(pair.advance(None));
        assert!(
            pair.elapsed() < Duration::from_secs(60),
            "no end: {:?}",
            pair.tx_events
        );
    }
    // Heal, let the handshake resume.
    let until = pair.now + Duration::from_secs(2);
    while pair.now < until {
        gen.offer(&mut pair.tx, 256).unwrap();
        pair.pump().unwrap();
        assert!(pair.advance(Some(until)));
    }
    (pair, gen)
}

#[test]
fn long_partition_fails_stream_with_explicit_loss() {
    let _watchdog = watchdog("long_partition_fail", 120);
    let (pair, _) = long_partition(GapPolicy::Fail);
    assert!(
        pair.rx_events
            .iter()
            .any(|e| matches!(e, Event::UnrecoverableLoss { .. })),
        "{:?}",
        pair.rx_events
    );
    assert!(pair.rx.is_failed());
    assert!(pair.checker.error.is_none(), "{:?}", pair.checker.error);
    let c = pair.rx.counters();
    assert_eq!(c.gaps_unrecoverable, 1, "{c:?}");
    assert!(c.last_unrecoverable.is_some());
}

#[test]
fn long_partition_skips_gap_with_skip_policy() {
    let _watchdog = watchdog("long_partition_skip", 120);
    let (pair, gen) = long_partition(GapPolicy::Skip);
    let loss = pair
        .rx_events
        .iter()
        .find(|e| matches!(e, Event::UnrecoverableLoss { .. }));
    assert!(loss.is_some(), "{:?}", pair.rx_events);
    assert!(!pair.rx.is_failed());
    // Delivery went on after the gap: the checker saw a jump, so allow it by checking counts.
    assert!(
        pair.rx.counters().messages > 1000,
        "{}",
        pair.rx.counters().messages
    );
    let _ = gen;
}

#[test]
fn liveness_detects_dead_peers_without_flapping() {
    let _watchdog = watchdog("liveness", 120);
    let cfg = Config {
        liveness_timeout: Duration::from_millis(250),
        heartbeat_interval: Duration::from_millis(20),
        status_interval: Duration::from_millis(20),
        ..Config::default()
    };
    let mut link = LinkConfig::perfect(Duration::from_millis(2));
    link.jitter = Duration::from_millis(4);
    link.loss = 0.05;
    let mut pair = Pair::new(3, cfg.clone(), cfg.clone(), link);
    let mut gen = Gen::new(3, 0, 2000, false);
    // 30 s of virtual time, streaming then idle: no liveness event.
    let until = pair.now + Duration::from_secs(30);
    while pair.now < until {
        gen.offer(&mut pair.tx, 64).unwrap();
        pair.pump().unwrap();
        assert!(pair.advance(Some(until)));
    }
    assert_eq!(pair.checker.delivered, 2000);
    assert!(
        !pair.tx_events.contains(&Event::PeerGone),
        "sender flapped: {:?}",
        pair.tx_events
    );
    assert!(
        !pair.rx_events.contains(&Event::PeerGone),
        "receiver flapped: {:?}",
        pair.rx_events
    );
    // Receiver dies: the sender notices within the liveness timeout plus one status interval.
    let died = pair.now;
    pair.rx = conduit_proto::Receiver::new(cfg.clone(), died, 1).unwrap();
    pair.net.partition(died, died + Duration::from_secs(3600));
    while !pair.tx_events.contains(&Event::PeerGone) {
        pair.pump().unwrap();
        assert!(pair.advance(None));
        assert!(
            pair.now - died < Duration::from_secs(5),
            "sender never noticed"
        );
    }
    let noticed = pair.now - died;
    assert!(
        noticed <= cfg.liveness_timeout + Duration::from_millis(50),
        "noticed after {noticed:?}"
    );
    assert!(!pair.tx.is_connected());
}

#[test]
fn receiver_reports_sender_gone_and_resumes() {
    let _watchdog = watchdog("receiver_liveness", 120);
    let cfg = Config {
        liveness_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let mut pair = Pair::new(
        4,
        cfg.clone(),
        cfg,
        LinkConfig::perfect(Duration::from_micros(50)),
    );
    let mut gen = Gen::new(4, 0, 100, false);
    while pair.checker.delivered < 100 {
        gen.offer(&mut pair.tx, 64).unwrap();
        pair.pump().unwrap();
        assert!(pair.advance(None));
    }
    // A short partition: the receiver reports the sender gone, the sender (same session)
    // resumes without loss.
    pair.net
        .partition(pair.now, pair.now + Duration::from_millis(210));
    let until = pair.now + Duration::from_secs(1);
    while pair.now < until {
        pair.pump().unwrap();
        assert!(pair.advance(Some(until)));
    }
    assert!(
        pair.rx_events.contains(&Event::PeerGone),
        "{:?}",
        pair.rx_events
    );
    assert!(pair.rx.is_connected());
    let mut gen2 = gen;
    gen2.total = 200;
    while pair.checker.delivered < 200 {
        gen2.offer(&mut pair.tx, 64).unwrap();
        pair.pump().unwrap();
        assert!(pair.advance(None));
        assert!(pair.checker.error.is_none(), "{:?}", pair.checker.error);
    }
}

/// Streams far into the position space: across 2^62 (the top of the initial positions) on a
/// hostile network, and up to the end of the position space, where offers fail cleanly and
/// everything offered before is delivered.
fn one_near_the_top(seed: u64, start: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let cfg = hostile_config();
    let mut link = LinkConfig::hostile(&mut rng, cfg.mtu);
    link.corrupt = 0.0;
    let mut pair = Pair::new(seed, cfg.clone(), cfg, link);
    pair.tx.set_initial_position(start);
    let mut gen = Gen::new(seed, 0, 3_000, true);
    stream(&mut pair, &mut gen, |_, _| {})?;
    if pair.rx.position() <= start {
        return Err(format!(
            "seed {seed}: receiver at {:#x}",
            pair.rx.position()
        ));
    }
    unexpected_events(&pair)
}

#[test]
fn stream_across_the_top_of_the_initial_positions() {
    let _watchdog = watchdog("near_the_top", 300 + 3 * seeds(200));
    let start = (1u64 << 62) - (4 << 20);
    for_seeds("near_the_top", seeds(200) / 10, |seed| {
        one_near_the_top(seed, start)
    });
}

#[test]
fn stream_ends_cleanly_at_the_end_of_the_position_space() {
    let _watchdog = watchdog("end_of_positions", 120);
    let cfg = Config::default();
    let mut link = LinkConfig::perfect(Duration::from_micros(100));
    link.loss = 0.02;
    let mut pair = Pair::new(5, cfg.clone(), cfg.clone(), link);
    let end = conduit_proto::frame::MAX_POSITION - 2 * cfg.retransmit_buffer as u64;
    pair.tx.set_initial_position(end - (2 << 20));
    let mut gen = Gen::new(5, 0, u64::MAX, false);
    let mut refused = false;
    loop {
        if !refused {
            match gen.offer(&mut pair.tx, 256) {
                Ok(_) => {}
                Err(e) => {
                    assert!(e.contains("Failed"), "{e}");
                    refused = true;
                }
            }
        }
        pair.pump().unwrap();
        assert!(pair.checker.error.is_none(), "{:?}", pair.checker.error);
        if refused && pair.tx.is_flushed() && pair.checker.next == gen.next {
            break;
        }
        assert!(pair.advance(None), "stalled");
        assert!(pair.steps < MAX_STEPS, "no end");
    }
    assert!(pair.rx.position() >= end && pair.rx.position() < conduit_proto::frame::MAX_POSITION);
    assert!(gen.next > 1_000, "{}", gen.next);
    unexpected_events(&pair).unwrap();
}

/// An on-path forger who has seen one datagram (it knows the session and stream ids) injects
/// heartbeats claiming the data is gone and NAKs for everything, while a lossy stream with
/// `gap=fail` runs: the stream still completes exactly once and in order, no loss is
/// declared, and the sender's repair stays within its budget.
fn one_forged_control(seed: u64) -> Result<(), String> {
    use conduit_proto::frame::{self, FrameKind};
    use zerocopy::little_endian::{U16, U32, U64};
    use zerocopy::IntoBytes;
    let mut rng = Rng::new(seed);
    let cfg = hostile_config();
    let mut link = LinkConfig::hostile(&mut rng, cfg.mtu);
    link.corrupt = 0.0;
    let mut pair = Pair::new(seed, cfg.clone(), cfg.clone(), link);
    let mut gen = Gen::new(seed, 0, 5_000, false);
    let sid = pair.tx.session_id();
    let mut frng = Rng::new(seed ^ 0xF0F0);
    stream(&mut pair, &mut gen, |p, _| {
        if !frng.chance(0.02) {
            return;
        }
        let pos = p.rx.position() & !7;
        let ahead = 8 * (1 + frng.below(512));
        let hb = frame::Heartbeat {
            header: frame::header(1, FrameKind::HEARTBEAT, 0, sid, 1),
            position: U64::new(pos + ahead),
            retained_from: U64::new(pos + ahead),
            nonce: U32::new(0),
            reserved: U32::new(0),
        };
        let mut b = hb.as_bytes().to_vec();
        frame::seal(&mut b, true);
        p.net.send(p.now, proto_common::TX, proto_common::RX, &b);
        let nak = frame::NakHeader {
            header: frame::header(1, FrameKind::NAK, 0, sid, 1),
            count: U16::new(1),
            reserved: U16::new(0),
            nonce: U32::new(frng.nonzero_u32()),
        };
        let mut b = nak.as_bytes().to_vec();
        b.extend_from_slice(
            frame::NakRange {
                from: U64::new(0),
                to: U64::new(u64::MAX),
            }
            .as_bytes(),
        );
        frame::seal(&mut b, true);
        p.net.send(p.now, proto_common::RX, proto_common::TX, &b);
    })?;
    unexpected_events(&pair)?;
    // Retransmitted bytes: at most a window, plus the new data, plus the floor.
    let c = pair.tx.counters();
    let floor = (cfg.window as u64 / 8).max(cfg.mtu as u64);
    let periods = pair.elapsed().as_nanos() as u64 / cfg.heartbeat_interval.as_nanos() as u64 + 1;
    let bound = cfg.window as u64 + pair.tx.position() + floor * periods;
    if c.retransmitted_bytes > bound {
        return Err(format!(
            "seed {seed}: retransmitted {} bytes, bound {bound}",
            c.retransmitted_bytes
        ));
    }
    Ok(())
}

#[test]
fn forged_heartbeats_and_naks_do_not_stop_or_flood_a_stream() {
    let _watchdog = watchdog("forged_control", 300 + 3 * seeds(200));
    for_seeds("forged_control", seeds(200) / 10, one_forged_control);
}
