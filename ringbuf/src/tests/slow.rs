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

// ---- Eviction and history with several publishers -----------------------

fn multi_small(d: &TempDir) -> RingConfig {
    RingConfig {
        max_publishers: 2,
        ..small(d)
    }
}

/// A payload of `len_of(seq)` bytes naming its publisher: `id << 56 | seq`
/// first (as much of it as fits), then bytes derived from both.
fn tagged(id: u64, seq: u64) -> Vec<u8> {
    let len = len_of(seq).max(8);
    let mut b: Vec<u8> = (0..len).map(|k| (seq ^ id) as u8 ^ k as u8).collect();
    b[..8].copy_from_slice(&(id << 56 | seq).to_le_bytes());
    b
}

/// Checks a payload made by [`tagged`]; returns (publisher id, seq).
fn untag(b: &[u8]) -> (u64, u64) {
    assert!(b.len() >= 8, "torn: {} bytes", b.len());
    let w = u64::from_le_bytes(b[..8].try_into().unwrap());
    let (id, seq) = (w >> 56, w & ((1 << 56) - 1));
    assert_eq!(b, &tagged(id, seq)[..], "torn record of publisher {id}");
    (id, seq)
}

/// Checks that each publisher's sequence numbers are consecutive.
fn check_orders(recs: &[(u64, u64)]) {
    for id in 0..2 {
        let seqs: Vec<u64> = recs.iter().filter(|r| r.0 == id).map(|r| r.1).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "publisher {id}: {seqs:?}"
        );
    }
}

#[test]
fn two_publishers_evict_a_stalled_subscriber_once_then_it_reads_live() {
    let d = TempDir::new();
    let after = Duration::from_millis(20);
    let cfg = multi_small(&d);
    let mut a = Publisher::create_with("mev", &cfg, &evicting(after)).unwrap();
    // The attacher's retention is ignored: the ring's wins.
    let mut b = Publisher::create("mev", &cfg).unwrap();
    let mut fast = Subscriber::open("mev", Some(&d.0)).unwrap();
    let mut slow = Subscriber::open("mev", Some(&d.0)).unwrap();
    connect(&mut a, &mut fast);
    connect(&mut b, &mut slow);
    let send = |p: &mut Publisher, fast: &mut Subscriber, id: u64, seq: u64, got: &mut Vec<_>| {
        let t0 = Instant::now();
        for _ in 0..10_000_000u32 {
            match p.offer(7, &tagged(id, seq)) {
                Ok(_) => return t0.elapsed(),
                Err(OfferError::BackPressured) => {
                    got.extend(drain(fast).iter().map(|(_, b)| untag(b)));
                    std::thread::yield_now();
                }
                Err(e) => panic!("offer {id}/{seq}: {e:?}"),
            }
        }
        panic!("offer {id}/{seq} never went through");
    };
    let mut got = Vec::new();
    let mut longest = Duration::ZERO;
    for seq in 0..1000u64 {
        longest = longest.max(send(&mut a, &mut fast, 0, seq, &mut got));
        longest = longest.max(send(&mut b, &mut fast, 1, seq, &mut got));
        got.extend(drain(&mut fast).iter().map(|(_, b)| untag(b)));
        if seq == 1 {
            assert_eq!(drain(&mut slow).len(), 4);
        }
    }
    got.extend(drain(&mut fast).iter().map(|(_, b)| untag(b)));
    assert_eq!(got.len(), 2000, "the fast subscriber gets everything");
    check_orders(&got);
    assert_eq!(a.evictions() + b.evictions(), 1);
    assert_eq!(a.subscriber_count(), 2);
    // Generous: a stall far past evict_after means eviction did not work.
    assert!(longest < after * 50, "longest stall {longest:?}");
    let mut outcome = Vec::new();
    for seq in 1000..1100u64 {
        let p = if seq % 2 == 0 { &mut a } else { &mut b };
        send(p, &mut fast, seq % 2, seq, &mut Vec::new());
        drain(&mut fast);
        if let Err(e) = slow.poll(|_, b| outcome.push(Ok(untag(b))), 100) {
            outcome.push(Err(e));
        }
    }
    let errors: Vec<_> = outcome.iter().filter(|o| o.is_err()).collect();
    assert!(
        matches!(errors[..], [Err(PollError::Evicted { .. })]),
        "{outcome:?}"
    );
    let at = outcome.iter().position(|o| o.is_err()).unwrap();
    let live: Vec<(u64, u64)> = outcome[at + 1..]
        .iter()
        .map(|o| *o.as_ref().unwrap())
        .collect();
    assert!(!live.is_empty());
    assert!(live.iter().all(|r| r.1 >= 1000), "{live:?}");
    assert!(live.windows(2).all(|w| w[1].1 == w[0].1 + 1), "{live:?}");
}

#[test]
fn a_history_joiner_with_two_publishers_starts_in_the_window_and_holds_both_back() {
    let d = TempDir::new();
    let history = 1500;
    let ret = Retention {
        history,
        ..Default::default()
    };
    let cfg = multi_small(&d);
    let mut pubs = [
        Publisher::create_with("mhist", &cfg, &ret).unwrap(),
        Publisher::create("mhist", &cfg).unwrap(),
    ];
    let mut live = Subscriber::open("mhist", Some(&d.0)).unwrap();
    connect(&mut pubs[0], &mut live);
    // (start, end, publisher, seq) of every record.
    let mut spans = Vec::new();
    let mut seq = [0u64; 2];
    for round in 0..6usize {
        for k in 0..300usize {
            // Runs of either publisher, so both take marks.
            let id = (k / 7 + round) % 2;
            let payload = tagged(id as u64, seq[id]);
            let end = loop {
                match pubs[id].offer(3, &payload) {
                    Ok(end) => break end,
                    Err(OfferError::BackPressured) => drop(drain(&mut live)),
                    Err(e) => panic!("{e:?}"),
                }
            };
            let start = end - layout::record_len(payload.len() as u64);
            spans.push((start, end, id as u64, seq[id]));
            seq[id] += 1;
        }
        drain(&mut live);
        // Activated by one publisher, alternately; the other one has just
        // cached a limit a lap past the caught-up live subscriber.
        let by = round % 2;
        let other = 1 - by;
        assert_eq!(pubs[other].subscriber_count(), 1);
        let mut j = Subscriber::open_from("mhist", Some(&d.0), &[], Start::History).unwrap();
        connect(&mut pubs[by], &mut j);
        let tail = spans.last().unwrap().1;
        let first = spans.iter().position(|s| s.0 >= tail - history).unwrap();
        // The other publisher fills the ring behind the joiner's back: it
        // must stop before the joiner's first unread record.
        let mut more = 0;
        loop {
            let payload = tagged(other as u64, seq[other]);
            match pubs[other].offer(3, &payload) {
                Ok(end) => {
                    let start = end - layout::record_len(payload.len() as u64);
                    spans.push((start, end, other as u64, seq[other]));
                    seq[other] += 1;
                    more += 1;
                    drain(&mut live);
                }
                Err(OfferError::BackPressured) => break,
                Err(e) => panic!("{e:?}"),
            }
            assert!(more < 10_000, "the joiner never held the publisher back");
        }
        let got: Vec<(u64, u64)> = drain(&mut j).iter().map(|(_, b)| untag(b)).collect();
        let want: Vec<(u64, u64)> = spans[first..].iter().map(|s| (s.2, s.3)).collect();
        assert_eq!(got, want, "round {round}");
        drain(&mut live);
    }
}

#[test]
fn history_joiners_while_two_publishers_write_get_whole_records() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let d = TempDir::new();
    let ret = Retention {
        history: 2000,
        ..Default::default()
    };
    let name = "mhistw";
    let cfg = multi_small(&d);
    let first = Publisher::create_with(name, &cfg, &ret).unwrap();
    let second = Publisher::create(name, &cfg).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [first, second]
        .into_iter()
        .enumerate()
        .map(|(id, mut p)| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match p.offer(3, &tagged(id as u64, seq)) {
                        Ok(_) => seq += 1,
                        Err(OfferError::BackPressured | OfferError::NotConnected) => {
                            std::thread::yield_now()
                        }
                        Err(e) => panic!("{e:?}"),
                    }
                }
            })
        })
        .collect();
    let reader = {
        let (stop, dir) = (stop.clone(), d.0.clone());
        std::thread::spawn(move || {
            let mut live = Subscriber::open(name, Some(&dir)).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let n = live
                    .poll(
                        |_, b| {
                            untag(b);
                        },
                        usize::MAX,
                    )
                    .unwrap();
                if n == 0 {
                    std::thread::yield_now();
                }
            }
        })
    };
    for _ in 0..40 {
        let mut j = Subscriber::open_from(name, Some(&d.0), &[], Start::History).unwrap();
        let mut recs = Vec::new();
        let t0 = Instant::now();
        while recs.len() < 60 && t0.elapsed() < Duration::from_secs(20) {
            let n = j.poll(|_, b| recs.push(untag(b)), usize::MAX).unwrap();
            if n == 0 {
                std::thread::yield_now();
            }
        }
        assert!(recs.len() >= 60, "the joiner starved");
        check_orders(&recs);
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    reader.join().unwrap();
}

#[test]
fn hostile_history_marks_of_a_multi_writer_ring_never_tear_or_panic() {
    let d = TempDir::new();
    let ret = Retention {
        history: 1500,
        ..Default::default()
    };
    let cfg = multi_small(&d);
    let mut a = Publisher::create_with("mhh", &cfg, &ret).unwrap();
    let mut live = Subscriber::open("mhh", Some(&d.0)).unwrap();
    connect(&mut a, &mut live);
    for seq in 0..400 {
        while a.offer(3, &tagged(0, seq)) == Err(OfferError::BackPressured) {
            drain(&mut live);
        }
    }
    drain(&mut live);
    let w = Scribbler::new(a.path());
    let marks = layout::marks_offset(cfg.max_subscribers, cfg.max_publishers);
    let tail = a.position();
    let garbage = [
        u64::MAX,
        1 << 63,
        tail + 2,                    // misaligned
        tail - 416 + 1,              // aligned, inside the window, maybe not a record start
        tail + 4096 * 3 + 1,         // beyond the tail
        (tail - 4000) / 32 * 32 + 1, // before the intact bytes
    ];
    for (round, g) in garbage.iter().enumerate() {
        for k in 0..64 {
            w.write_u64(marks + 8 * k, *g);
        }
        // And a bumped join counter: a rescan, nothing more.
        w.write_u64(
            layout::PUBLISHER_BLOCK + layout::CLAIM_WORDS_OFFSET + 24,
            round as u64 * 7 + 3,
        );
        let mut j = Subscriber::open_from("mhh", Some(&d.0), &[], Start::History).unwrap();
        connect(&mut a, &mut j);
        for seq in 0..20 {
            while a.offer(3, &tagged(0, 400 + round as u64 * 20 + seq))
                == Err(OfferError::BackPressured)
            {
                drain(&mut live);
                let _ = j.poll(
                    |_, b| {
                        untag(b);
                    },
                    usize::MAX,
                );
            }
        }
        drain(&mut live);
        // Whole records, or a corrupt ring reported: never a torn record.
        loop {
            match j.poll(
                |_, b| {
                    untag(b);
                },
                usize::MAX,
            ) {
                Ok(0) => break,
                Ok(_) => {}
                Err(PollError::Corrupt(_)) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
    }
}
