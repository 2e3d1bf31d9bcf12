//! Slow subscribers (`slow=evict`), late-join history and their hostile
//! shared fields.

use super::{connect, drain, Scribbler, TempDir};
use crate::layout::{self, SLOT_EVICTED};
use crate::{
    OfferError, PollError, Publisher, Retention, RingConfig, RingError, SlowPolicy, Start,
    Subscriber,
};
use std::time::{Duration, Instant};

fn small(d: &TempDir) -> RingConfig {
    RingConfig {
        capacity: 4096,
        max_message_len: 200,
        max_subscribers: 8,
        max_publishers: 1,
        dir: Some(d.0.clone()),
        mode: 0o600,
    }
}

fn evicting(after: Duration) -> Retention {
    Retention {
        slow: SlowPolicy::Evict { after },
        history: 0,
    }
}

/// Offers until it goes through; returns the position after the record
/// and how long the offer was back-pressured.
fn offer_through(p: &mut Publisher, fast: &mut Subscriber, seq: u64) -> (u64, Duration) {
    let t0 = Instant::now();
    for _ in 0..10_000_000u32 {
        match p.offer(7, &seq.to_le_bytes()) {
            Ok(end) => return (end, t0.elapsed()),
            Err(OfferError::BackPressured) => {
                drain(fast);
                std::thread::yield_now();
            }
            Err(e) => panic!("offer {seq}: {e:?}"),
        }
    }
    panic!("offer {seq} never went through");
}

#[test]
fn a_stalled_subscriber_is_evicted_once_then_reads_live() {
    let d = TempDir::new();
    let after = Duration::from_millis(20);
    let mut p = Publisher::create_with("ev", &small(&d), &evicting(after)).unwrap();
    let mut fast = Subscriber::open("ev", Some(&d.0)).unwrap();
    let mut slow = Subscriber::open("ev", Some(&d.0)).unwrap();
    connect(&mut p, &mut fast);
    connect(&mut p, &mut slow);
    // The slow one reads a little, then stalls.
    let mut got = Vec::new();
    let mut longest = Duration::ZERO;
    for seq in 0..2000u64 {
        let (_, stall) = offer_through(&mut p, &mut fast, seq);
        longest = longest.max(stall);
        for (_, b) in drain(&mut fast) {
            got.push(u64::from_le_bytes(b[..8].try_into().unwrap()));
        }
        if seq == 3 {
            assert_eq!(drain(&mut slow).len(), 4);
        }
    }
    for (_, b) in drain(&mut fast) {
        got.push(u64::from_le_bytes(b[..8].try_into().unwrap()));
    }
    assert_eq!(
        got,
        (0..2000).collect::<Vec<_>>(),
        "the fast subscriber gets everything"
    );
    assert_eq!(p.evictions(), 1);
    assert_eq!(
        p.subscriber_count(),
        2,
        "an evicted subscriber is still attached"
    );
    // Generous: a stall far past evict_after means eviction did not work.
    assert!(longest < after * 50, "longest stall {longest:?}");
    // The stalled one: the eviction once, then live records only.
    let mut outcome = Vec::new();
    for seq in 2000..2100u64 {
        offer_through(&mut p, &mut fast, seq);
        drain(&mut fast);
        match slow.poll(
            |_, b| outcome.push(Ok(u64::from_le_bytes(b[..8].try_into().unwrap()))),
            100,
        ) {
            Ok(_) => {}
            Err(e) => outcome.push(Err(e)),
        }
    }
    let evicted: Vec<_> = outcome.iter().filter(|o| o.is_err()).collect();
    assert_eq!(evicted.len(), 1, "{outcome:?}");
    let Err(PollError::Evicted { missed }) = evicted[0] else {
        panic!("{outcome:?}");
    };
    assert!(*missed >= 4096 - 4 * 32, "missed {missed}");
    let at = outcome.iter().position(|o| o.is_err()).unwrap();
    let after_evict: Vec<u64> = outcome[at + 1..]
        .iter()
        .map(|o| *o.as_ref().unwrap())
        .collect();
    assert!(!after_evict.is_empty());
    assert!(after_evict[0] > 2000, "{after_evict:?}");
    assert!(
        after_evict.windows(2).all(|w| w[1] == w[0] + 1),
        "{after_evict:?}"
    );
}

#[test]
fn slow_block_never_evicts() {
    let d = TempDir::new();
    let mut p = Publisher::create("blk", &small(&d)).unwrap();
    let mut s = Subscriber::open("blk", Some(&d.0)).unwrap();
    connect(&mut p, &mut s);
    let mut n = 0;
    while p.offer(1, &[0; 8]).is_ok() {
        n += 1;
    }
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(p.offer(1, &[0; 8]), Err(OfferError::BackPressured));
    assert_eq!(p.evictions(), 0);
    assert_eq!(drain(&mut s).len(), n);
}

#[test]
fn retention_is_checked_at_creation() {
    let d = TempDir::new();
    let max = layout::max_history(4096, 200);
    assert!(max > 2048, "{max}");
    let too_much = Retention {
        history: max + 1,
        ..Default::default()
    };
    match Publisher::create_with("ret", &small(&d), &too_much) {
        Err(RingError::InvalidConfig { field, .. }) => assert_eq!(field, "history"),
        other => panic!("{:?}", other.err()),
    }
    for after in [Duration::ZERO, Duration::from_secs(3601)] {
        match Publisher::create_with("ret", &small(&d), &evicting(after)) {
            Err(RingError::InvalidConfig { field, .. }) => assert_eq!(field, "evict_after"),
            other => panic!("{:?}", other.err()),
        }
    }
}

/// Record sizes cycling through several lengths, so padding and odd
/// boundaries occur.
fn len_of(seq: u64) -> usize {
    [8, 40, 100, 8, 200, 17][seq as usize % 6]
}

#[test]
fn a_history_joiner_starts_at_the_oldest_whole_record_in_the_window() {
    let d = TempDir::new();
    let history = 1500;
    let ret = Retention {
        history,
        ..Default::default()
    };
    let mut p = Publisher::create_with("hist", &small(&d), &ret).unwrap();
    let mut live = Subscriber::open("hist", Some(&d.0)).unwrap();
    connect(&mut p, &mut live);
    // (start, end) of every record.
    let mut spans = Vec::new();
    for round in 0..5u64 {
        for seq in round * 300..(round + 1) * 300 {
            let mut payload = vec![0u8; len_of(seq)];
            payload[..8].copy_from_slice(&seq.to_le_bytes());
            let end = loop {
                match p.offer(3, &payload) {
                    Ok(end) => break end,
                    Err(OfferError::BackPressured) => drop(drain(&mut live)),
                    Err(e) => panic!("{e:?}"),
                }
            };
            spans.push((end - layout::record_len(payload.len() as u64), end));
        }
        drain(&mut live);
        // A joiner now: its first record is the first starting inside the window.
        let mut j = Subscriber::open_from("hist", Some(&d.0), &[], Start::History).unwrap();
        connect(&mut p, &mut j);
        let tail = p.position();
        let expected = spans
            .iter()
            .position(|(s, _)| *s >= tail - history)
            .unwrap() as u64;
        let got: Vec<u64> = drain(&mut j)
            .into_iter()
            .map(|(_, b)| {
                assert!(b.len() >= 8);
                let seq = u64::from_le_bytes(b[..8].try_into().unwrap());
                assert_eq!(b.len(), len_of(seq), "a whole record");
                seq
            })
            .collect();
        assert_eq!(got.first(), Some(&expected), "round {round}");
        assert_eq!(got.last(), Some(&((round + 1) * 300 - 1)));
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1));
        // The default joiner starts live.
        let mut l = Subscriber::open("hist", Some(&d.0)).unwrap();
        connect(&mut p, &mut l);
        assert!(drain(&mut l).is_empty());
    }
}

#[test]
fn a_history_joiner_while_the_publisher_writes_gets_whole_records() {
    let d = TempDir::new();
    let ret = Retention {
        history: 2000,
        ..Default::default()
    };
    let name = "histw";
    let mut p = Publisher::create_with(name, &small(&d), &ret).unwrap();
    let mut live = Subscriber::open(name, Some(&d.0)).unwrap();
    connect(&mut p, &mut live);
    let dir = d.0.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let joiners = std::thread::spawn(move || {
        for _ in 0..50 {
            let mut j = Subscriber::open_from(name, Some(&dir), &[], Start::History).unwrap();
            let mut seqs = Vec::new();
            let t0 = Instant::now();
            while seqs.len() < 50 && t0.elapsed() < Duration::from_secs(10) {
                j.poll(
                    |_, b| {
                        let seq = u64::from_le_bytes(b[..8].try_into().unwrap());
                        assert_eq!(b.len(), len_of(seq), "torn record");
                        assert!(b[8..].iter().all(|x| *x == seq as u8), "torn payload");
                        seqs.push(seq);
                    },
                    usize::MAX,
                )
                .unwrap();
            }
            assert!(seqs.len() >= 50, "the joiner starved");
            assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        }
        stop2.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let mut seq = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let mut payload = vec![seq as u8; len_of(seq)];
        payload[..8].copy_from_slice(&seq.to_le_bytes());
        match p.offer(3, &payload) {
            Ok(_) => seq += 1,
            Err(OfferError::BackPressured) => {}
            Err(e) => panic!("{e:?}"),
        }
        drain(&mut live);
    }
    joiners.join().unwrap();
}

#[test]
fn hostile_retention_fields_are_corrupt_or_ignored() {
    let d = TempDir::new();
    let mut p = Publisher::create("hs", &small(&d)).unwrap();
    let mut s = Subscriber::open("hs", Some(&d.0)).unwrap();
    connect(&mut p, &mut s);
    let w = Scribbler::new(p.path());
    // EVICTED on a ring that never evicts.
    w.write_u32(layout::slot_offset(0), SLOT_EVICTED);
    w.write_u64(layout::SIGNAL_BLOCK, layout::ATTENTION_MEMBERSHIP);
    match p.offer(1, b"x") {
        Err(OfferError::Corrupt(m)) => assert!(m.contains("state 3"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A garbage `start` word is read as "live".
    w.write_u32(layout::slot_offset(0), layout::SLOT_ACTIVE);
    let mut j = Subscriber::open("hs", Some(&d.0)).unwrap();
    w.write_u32(layout::slot_offset(1) + 28, 0xdead);
    connect(&mut p, &mut j);
    p.offer(1, b"y").unwrap();
    assert_eq!(drain(&mut j), vec![(1, b"y".to_vec())]);
    // Header fields: a new opener refuses them, naming the field.
    for (off, v, expect) in [
        (80usize, 9u32, "slow policy 9"),
        (80, layout::SLOW_EVICT, "slow policy 1 with evict_after 0"),
    ] {
        w.write_u32(off, v);
        let e = Subscriber::open("hs", Some(&d.0)).err().unwrap();
        assert!(e.to_string().contains(expect), "{e}");
        w.write_u32(off, 0);
    }
    w.write_u64(96, 1 << 40);
    let e = Subscriber::open("hs", Some(&d.0)).err().unwrap();
    assert!(e.to_string().contains("history"), "{e}");
    // And an attached subscriber notices the changed header.
    let mut res = Ok(0);
    for _ in 0..100_000 {
        res = s.poll(|_, _| {}, 10);
        if res.is_err() {
            break;
        }
        std::thread::sleep(Duration::from_micros(10));
    }
    assert!(
        matches!(res, Err(PollError::Corrupt(ref m)) if m.contains("header")),
        "{res:?}"
    );
}

#[test]
fn hostile_evicted_state_on_an_evicting_ring_only_rejoins() {
    let d = TempDir::new();
    let mut p =
        Publisher::create_with("hev", &small(&d), &evicting(Duration::from_millis(5))).unwrap();
    let mut s = Subscriber::open("hev", Some(&d.0)).unwrap();
    connect(&mut p, &mut s);
    p.offer(1, &[1; 8]).unwrap();
    let w = Scribbler::new(p.path());
    // Someone marks our slot EVICTED: the subscriber rejoins and says so.
    w.write_u32(layout::slot_offset(0), SLOT_EVICTED);
    let mut seen = Vec::new();
    for _ in 0..1000 {
        let _ = p.subscriber_count();
        match s.poll(|_, _| {}, 10) {
            Ok(_) => {}
            Err(e) => seen.push(e),
        }
        if !seen.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    assert!(matches!(seen[..], [PollError::Evicted { .. }]), "{seen:?}");
    p.offer(1, &[2; 8]).unwrap();
    let got = drain(&mut s);
    assert_eq!(got, vec![(1, vec![2; 8])]);
}
