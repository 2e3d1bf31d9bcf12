//! Unit tests of the ring in one process: edge cases of the record layout,
//! back-pressure, membership, liveness and hostile shared memory.

use crate::layout::{self, RECORD_HEADER_LEN};
use crate::{OfferError, PollError, Publisher, RingConfig, RingError, Subscriber, WaitStrategy};
use conduit_test_util::root_or_skip;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

mod slow;

/// A temporary directory removed on drop (by the shared `TempDir` it holds);
/// `.0` is its path.
struct TempDir(PathBuf, #[allow(dead_code)] conduit_test_util::TempDir);

impl TempDir {
    fn new() -> TempDir {
        let dir = conduit_test_util::TempDir::new("ring-unit");
        TempDir(dir.path().to_path_buf(), dir)
    }
}

fn config(dir: &TempDir, capacity: usize) -> RingConfig {
    RingConfig {
        capacity,
        max_message_len: capacity / 2 - 16,
        max_subscribers: 8,
        max_publishers: 1,
        dir: Some(dir.0.clone()),
        mode: 0o600,
    }
}

/// Polls until the publisher has activated the subscriber (the publisher
/// activates on `is_connected`).
fn connect(p: &mut Publisher, s: &mut Subscriber) {
    for _ in 0..1000 {
        let (a, b) = (p.is_connected(), s.is_connected());
        if a && b {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("subscriber did not connect");
}

fn drain(s: &mut Subscriber) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let n = s
            .poll(|t, b| out.push((t, b.to_vec())), usize::MAX)
            .unwrap();
        if n == 0 {
            return out;
        }
    }
}

/// Polls an idle subscriber until it reports something other than `Ok(0)`.
fn poll_until_err(s: &mut Subscriber) -> PollError {
    for _ in 0..100_000 {
        match s.poll(|_, _| panic!("unexpected record"), 10) {
            Ok(0) => std::thread::sleep(Duration::from_micros(10)),
            Ok(n) => panic!("unexpected {n} records"),
            Err(e) => return e,
        }
    }
    panic!("no error reported");
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i * 31 + k * 7) as u8).collect()
}

#[test]
fn not_connected_until_a_subscriber_joins() {
    let d = TempDir::new();
    let mut p = Publisher::create("nc", &config(&d, 4096)).unwrap();
    assert_eq!(p.offer(1, b"x"), Err(OfferError::NotConnected));
    let mut s = Subscriber::open("nc", Some(&d.0)).unwrap();
    connect(&mut p, &mut s);
    assert!(p.offer(1, b"hello").is_ok());
    assert_eq!(drain(&mut s), vec![(1, b"hello".to_vec())]);
}

#[test]
fn offer_with_fills_in_place_and_only_when_accepted() {
    let d = TempDir::new();
    let mut p = Publisher::create("ow", &config(&d, 4096)).unwrap();
    let mut called = false;
    assert_eq!(
        p.offer_with(1, 4, |_| called = true),
        Err(OfferError::NotConnected)
    );
    assert!(!called, "fill must not run for a refused offer");
    let mut s = Subscriber::open("ow", Some(&d.0)).unwrap();
    connect(&mut p, &mut s);
    let max = p.max_message_len();
    assert!(matches!(
        p.offer_with(1, max + 1, |_| called = true),
        Err(OfferError::TooLarge { .. })
    ));
    assert!(!called);
    let pos = p
        .offer_with(2, 5, |b| {
            assert_eq!(b.len(), 5);
            b.copy_from_slice(b"in-pl");
        })
        .unwrap();
    assert_eq!(pos, p.position());
    assert_eq!(drain(&mut s), vec![(2, b"in-pl".to_vec())]);
}

#[test]
fn every_length_wraps_with_padding() {
    let d = TempDir::new();
    let cap = 4096;
    let mut p = Publisher::create("lens", &config(&d, cap)).unwrap();
    let mut s = Subscriber::open("lens", Some(&d.0)).unwrap();
    connect(&mut p, &mut s);
    let max = p.max_message_len();
    for round in 0..3 {
        for len in 0..=max {
            let data = payload(len + round, len);
            loop {
                match p.offer(len as u32, &data) {
                    Ok(_) => break,
                    Err(OfferError::BackPressured) => {
                        drain(&mut s);
                    }
                    Err(e) => panic!("offer: {e}"),
                }
            }
            let got = drain(&mut s);
            assert_eq!(got.len(), 1, "len {len}");
            assert_eq!(got[0].0, len as u32);
            assert_eq!(got[0].1, data);
        }
    }
    assert_eq!(
        p.offer(0, &vec![0; max + 1]),
        Err(OfferError::TooLarge { len: max + 1, max })
    );
}

#[test]
fn payloads_are_aligned_and_zero_copy_claims_work() {
    let d = TempDir::new();
    let mut p = Publisher::create("claim", &config(&d, 4096)).unwrap();
    let mut s = Subscriber::open("claim", Some(&d.0)).unwrap();
    connect(&mut p, &mut s);
    for i in 0..200usize {
        let mut c = p.try_claim(7, 24).unwrap();
        let buf = c.as_mut_slice();
        assert_eq!(buf.as_ptr() as usize % 16, 0);
        buf.copy_from_slice(&payload(i, 24));
        if i % 3 == 0 {
            c.abort();
        } else {
            c.commit();
        }
        let got = drain(&mut s);
        if i % 3 == 0 {
            assert!(got.is_empty());
        } else {
            assert_eq!(got, vec![(7, payload(i, 24))]);
        }
    }
    let mut seen = 0;
    p.offer(1, &[1; 40]).unwrap();
    s.poll(
        |_, b| {
            assert_eq!(b.as_ptr() as usize % 16, 0);
            seen += 1;
        },
        10,
    )
    .unwrap();
    assert_eq!(seen, 1);
}

#[test]
fn full_ring_back_pressures_until_the_slowest_reads() {
    let d = TempDir::new();
    let cap = 4096;
    let mut p = Publisher::create("full", &config(&d, cap)).unwrap();
    let mut fast = Subscriber::open("full", Some(&d.0)).unwrap();
    let mut slow = Subscriber::open("full", Some(&d.0)).unwrap();
    connect(&mut p, &mut fast);
    connect(&mut p, &mut slow);
    assert_eq!(p.subscriber_count(), 2);
    let mut sent = 0u32;
    loop {
        match p.offer(sent, &sent.to_le_bytes()) {
            Ok(_) => sent += 1,
            Err(OfferError::BackPressured) => break,
            Err(e) => panic!("{e}"),
        }
        drain(&mut fast);
    }
    // 32-byte records, minus the word zeroed ahead.
    assert_eq!(sent as usize, cap / 32 - 1);
    assert!(!p.all_consumed());
    // Reading a few makes room for as many.
    let n = slow.poll(|_, _| {}, 5).unwrap();
    assert_eq!(n, 5);
    for _ in 0..5 {
        p.offer(sent, &sent.to_le_bytes()).unwrap();
        sent += 1;
    }
    assert_eq!(p.offer(0, b""), Err(OfferError::BackPressured));
    let got: Vec<u32> = drain(&mut slow).iter().map(|(t, _)| *t).collect();
    assert_eq!(got, (5..sent).collect::<Vec<_>>());
    drain(&mut fast);
    assert!(p.all_consumed());
}

/// The publisher's cached bound (`limit`, the slowest position plus the
/// capacity, taken at the last scan): back-pressure comes exactly when a
/// record would pass the slowest subscriber's position, clears as soon as
/// it reads, and below the bound an offer reads no subscriber slot (its
/// cost does not depend on the number of subscribers). A hostile position
/// scribbled into a slot after a scan is only seen by the offer that needs
/// more room than the cached bound gives.
#[test]
fn cached_bound_back_pressures_exactly_and_offers_below_it_read_no_slot() {
    let d = TempDir::new();
    let cap = 4096;
    let mut p = Publisher::create("bound", &config(&d, cap)).unwrap();
    // Slot 0: the slow subscriber; slots 1..=7: fast ones.
    let mut slow = Subscriber::open("bound", Some(&d.0)).unwrap();
    connect(&mut p, &mut slow);
    let mut fast: Vec<Subscriber> = (1..8)
        .map(|_| Subscriber::open("bound", Some(&d.0)).unwrap())
        .collect();
    for s in &mut fast {
        connect(&mut p, s);
    }
    assert_eq!(p.subscriber_count(), 8);
    let drain_fast = |fast: &mut Vec<Subscriber>| {
        for s in fast.iter_mut() {
            drain(s);
        }
    };
    // 32-byte records (16-byte header, 8-byte payload, aligned to 32).
    let sent = std::cell::Cell::new(0u64);
    let offer = |p: &mut Publisher| {
        let n = sent.get();
        let r = p.offer(n as u32, &n.to_le_bytes());
        if r.is_ok() {
            sent.set(n + 1);
        }
        r
    };
    // Fill: the last record that fits leaves room for the commit word
    // zeroed ahead of the tail; the next one is back-pressured.
    while offer(&mut p).is_ok() {
        drain_fast(&mut fast);
    }
    assert_eq!(sent.get() as usize, cap / 32 - 1);
    assert_eq!(offer(&mut p), Err(OfferError::BackPressured));
    // The slow subscriber reads 5: exactly 5 more fit.
    assert_eq!(slow.poll(|_, _| {}, 5).unwrap(), 5);
    for _ in 0..5 {
        offer(&mut p).unwrap();
    }
    assert_eq!(offer(&mut p), Err(OfferError::BackPressured));
    drain_fast(&mut fast);
    // It reads 10 more; the next offer rescans (the bound moves by 10
    // records), then a fast subscriber's slot gets a hostile position.
    assert_eq!(slow.poll(|_, _| {}, 10).unwrap(), 10);
    offer(&mut p).unwrap();
    drain_fast(&mut fast);
    let honest = p.position();
    let w = Scribbler::new(p.path());
    w.write_u64(layout::slot_offset(7) + 8, 1 << 40);
    // The 9 records left below the bound are accepted without a look at
    // the slots; the 10th needs a rescan, which finds the hostile word.
    for _ in 0..9 {
        offer(&mut p).unwrap();
    }
    match offer(&mut p) {
        Err(OfferError::Corrupt(m)) => assert!(m.contains("slot 7 holds position"), "{m}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Put the honest word back: the slow subscriber's 10 records still bind.
    w.write_u64(layout::slot_offset(7) + 8, honest);
    assert_eq!(offer(&mut p), Err(OfferError::BackPressured));
    // Everyone reads everything: back-pressure is gone.
    let got: Vec<u32> = drain(&mut slow).iter().map(|(t, _)| *t).collect();
    assert_eq!(got, (15..sent.get() as u32).collect::<Vec<_>>());
    drain_fast(&mut fast);
    assert!(p.all_consumed());
    offer(&mut p).unwrap();
}

#[test]
fn subscribers_join_and_leave() {
    let d = TempDir::new();
    let mut p = Publisher::create("churn", &config(&d, 8192)).unwrap();
    let mut subs: Vec<(Subscriber, u32)> = Vec::new();
    let mut next = 0u32;
    for round in 0..50u32 {
        if subs.len() < 8 && round % 3 != 2 {
            let s = Subscriber::open("churn", Some(&d.0)).unwrap();
            subs.push((s, u32::MAX));
        } else if !subs.is_empty() {
            subs.remove((round as usize * 7) % subs.len());
        }
        // Activation happens at the publisher's next offer.
        for _ in 0..20 {
            match p.offer(next, &next.to_le_bytes()) {
                Ok(_) => next += 1,
                Err(OfferError::NotConnected) => break,
                Err(e) => panic!("{e}"),
            }
        }
        for (s, last) in &mut subs {
            let mut seen = Vec::new();
            s.poll(
                |t, b| {
                    assert_eq!(b, t.to_le_bytes());
                    seen.push(t);
                },
                usize::MAX,
            )
            .unwrap();
            for t in seen {
                assert!(*last == u32::MAX || t == *last + 1, "gap: {last} then {t}");
                *last = t;
            }
        }
        assert_eq!(p.subscriber_count(), subs.len());
    }
}

#[test]
fn slot_limit_is_an_error() {
    let d = TempDir::new();
    let mut c = config(&d, 4096);
    c.max_subscribers = 2;
    let _p = Publisher::create("slots", &c).unwrap();
    let _a = Subscriber::open("slots", Some(&d.0)).unwrap();
    let _b = Subscriber::open("slots", Some(&d.0)).unwrap();
    let e = Subscriber::open("slots", Some(&d.0))
        .err()
        .expect("third subscriber");
    assert!(matches!(e, RingError::NoFreeSlot { max: 2, .. }), "{e}");
    assert!(e.to_string().contains("subscriber slots"), "{e}");
}

#[test]
fn names_and_configs_are_checked() {
    let d = TempDir::new();
    for bad in ["", "a/b", "..", ".hidden", &"x".repeat(300)] {
        let e = Publisher::create(bad, &config(&d, 4096)).err().unwrap();
        assert!(matches!(e, RingError::InvalidName(_)), "{bad:?}: {e}");
        assert!(Subscriber::open(bad, Some(&d.0)).is_err());
    }
    let mut c = config(&d, 4096);
    c.capacity = 5000;
    assert!(matches!(
        Publisher::create("cfg", &c),
        Err(RingError::InvalidConfig {
            field: "capacity",
            ..
        })
    ));
    let mut c = config(&d, 4096);
    c.max_message_len = 2048 - 15;
    assert!(matches!(
        Publisher::create("cfg", &c),
        Err(RingError::InvalidConfig {
            field: "max_message_len",
            ..
        })
    ));
    let mut c = config(&d, 4096);
    c.max_subscribers = 0;
    let e = Publisher::create("cfg", &c).err().unwrap();
    assert!(
        matches!(
            e,
            RingError::InvalidConfig {
                field: "max_subscribers",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "invalid ring configuration: max_subscribers 0 is not 1 to 1024"
    );
    let mut c = config(&d, 4096);
    c.mode = 0o400;
    assert!(matches!(
        Publisher::create("cfg", &c),
        Err(RingError::InvalidConfig { field: "mode", .. })
    ));
}

#[test]
fn live_publisher_refuses_a_second_and_clean_close_is_reported() {
    let d = TempDir::new();
    let p = Publisher::create("dup", &config(&d, 4096)).unwrap();
    let e = Publisher::create("dup", &config(&d, 4096)).err().unwrap();
    assert!(matches!(e, RingError::PublisherAlive { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{e}"
    );
    let mut s = Subscriber::open("dup", Some(&d.0)).unwrap();
    let mut p = p;
    connect(&mut p, &mut s);
    p.offer(3, b"last").unwrap();
    drop(p);
    assert!(!d.0.join("dup").exists(), "clean close removes the file");
    let mut got = Vec::new();
    let r = s.poll(|t, b| got.push((t, b.to_vec())), 10);
    assert_eq!(r, Ok(1));
    assert_eq!(poll_until_err(&mut s), PollError::PublisherClosed);
    assert_eq!(s.poll(|_, _| {}, 10), Ok(0));
    // A new publisher under the name is picked up.
    let mut p2 = Publisher::create("dup", &config(&d, 4096)).unwrap();
    let mut ok = false;
    for _ in 0..2000 {
        s.poll(|_, _| {}, 10).unwrap();
        if p2.is_connected() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert!(ok, "restarted publisher not picked up");
    p2.offer(9, b"again").unwrap();
    let mut got = Vec::new();
    s.wait(WaitStrategy::Spin, Some(Duration::from_secs(5)))
        .unwrap();
    s.poll(|t, b| got.push((t, b.to_vec())), 10).unwrap();
    assert_eq!(got, vec![(9, b"again".to_vec())]);
}

/// `poll_idle` stands in for an empty poll only: never with data waiting,
/// not when a periodic check is due, and a closed publisher is still reported
/// (after the data) by a caller that polls whenever it answers false.
#[test]
fn poll_idle_is_an_empty_poll_only() {
    let d = TempDir::new();
    let mut p = Publisher::create("idle", &config(&d, 4096)).unwrap();
    let mut s = Subscriber::open("idle", Some(&d.0)).unwrap();
    assert!(!s.poll_idle(), "not active yet");
    connect(&mut p, &mut s);
    assert_eq!(s.poll(|_, _| {}, 10), Ok(0));
    // Answering false leaves the count alone: the full poll does that.
    let mut idle = 0;
    for _ in 0..64 {
        if s.poll_idle() {
            idle += 1;
        } else {
            assert_eq!(s.poll(|_, _| {}, 10), Ok(0));
        }
    }
    assert_eq!(idle, 62, "every 32nd empty poll must go to the full poll");
    p.offer(5, b"data").unwrap();
    assert!(!s.poll_idle(), "a record waits");
    assert!(!s.poll_idle(), "still waiting: poll_idle never consumes");
    p.offer(6, b"last").unwrap();
    drop(p);
    // What a C caller does: poll_idle, else poll.
    let mut got = Vec::new();
    let mut end = None;
    for _ in 0..200_000 {
        if s.poll_idle() {
            std::thread::sleep(Duration::from_micros(5));
            continue;
        }
        match s.poll(|t, _| got.push(t), 10) {
            Ok(_) => {}
            Err(e) => {
                end = Some(e);
                break;
            }
        }
    }
    assert_eq!(got, vec![5, 6]);
    assert_eq!(end, Some(PollError::PublisherClosed));
}

#[test]
fn subscriber_before_publisher() {
    let d = TempDir::new();
    let mut s = Subscriber::open("early", Some(&d.0)).unwrap();
    assert!(!s.is_connected());
    assert_eq!(s.poll(|_, _| {}, 10), Ok(0));
    let mut p = Publisher::create("early", &config(&d, 4096)).unwrap();
    connect(&mut p, &mut s);
    p.offer(1, b"a").unwrap();
    assert_eq!(drain(&mut s).len(), 1);
}

#[test]
fn foreign_file_is_refused() {
    let d = TempDir::new();
    std::fs::write(d.0.join("foreign"), b"hello, this is not a ring at all").unwrap();
    let e = Publisher::create("foreign", &config(&d, 4096))
        .err()
        .unwrap();
    assert!(e.to_string().contains("not a conduit ring file"), "{e}");
    let e = Subscriber::open("foreign", Some(&d.0)).err().unwrap();
    assert!(e.to_string().contains("not a conduit ring file"), "{e}");
    assert_eq!(
        std::fs::read(d.0.join("foreign")).unwrap(),
        b"hello, this is not a ring at all"
    );
}

#[test]
fn blocking_wait_is_woken() {
    let d = TempDir::new();
    let mut p = Publisher::create("block", &config(&d, 4096)).unwrap();
    let mut s = Subscriber::open("block", Some(&d.0)).unwrap();
    connect(&mut p, &mut s);
    let t = std::thread::spawn(move || {
        let mut got = 0u32;
        while got < 1000 {
            s.wait(WaitStrategy::Block, Some(Duration::from_secs(10)))
                .unwrap();
            got += s.poll(|_, _| {}, usize::MAX).unwrap() as u32;
        }
        got
    });
    for i in 0..1000u32 {
        while p.offer(i, &[0; 8]).is_err() {
            std::thread::yield_now();
        }
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert_eq!(t.join().unwrap(), 1000);
}

/// A sleep that times out with nothing published keeps its count: one
/// `wait` counts itself (and calls membarrier) once, however many 20 ms
/// sleeps it takes, takes the count away when it returns, and still wakes
/// for a commit made while it is counted.
#[test]
fn timed_out_sleeps_keep_one_count_per_wait() {
    let _watchdog = conduit_test_util::watchdog("timed_out_sleeps_keep_one_count_per_wait", 60);
    let d = TempDir::new();
    let mut p = Publisher::create("recount", &config(&d, 4096)).unwrap();
    let mut s = Subscriber::open("recount", Some(&d.0)).unwrap();
    connect(&mut p, &mut s);
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let taken = || crate::wait::COUNTS_TAKEN.with(std::cell::Cell::get);
        // Nothing is published: several sleeps of at most 20 ms each.
        let before = taken();
        assert!(!s
            .wait(WaitStrategy::Block, Some(Duration::from_millis(90)))
            .unwrap());
        let idle = taken() - before;
        tx.send(()).unwrap();
        go.recv().unwrap();
        // The publisher commits once this wait is counted.
        let before = taken();
        assert!(s.wait(WaitStrategy::Block, None).unwrap());
        let woken = taken() - before;
        assert_eq!(s.poll(|_, _| {}, usize::MAX).unwrap(), 1);
        (idle, woken)
    });
    rx.recv().unwrap();
    // The first wait took its count away when it returned.
    assert_eq!(p.sleepers(), 0);
    go_tx.send(()).unwrap();
    while p.sleepers() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Sleeping, or between two of its sleeps: the commit must reach it.
    std::thread::sleep(Duration::from_millis(30));
    p.offer(1, &[7; 8]).unwrap();
    let (idle, woken) = t.join().unwrap();
    assert_eq!((idle, woken), (1, 1));
    assert_eq!(p.sleepers(), 0);
}

/// The wake-up cascade (`wait.rs`): 16 subscribers asleep in `Block`, whose
/// sleeps never time out in this test, must each receive every message,
/// while the publisher wakes one sleeper per commit. Before each offer all
/// 16 are counted asleep, so each message needs the cascade to reach all of
/// them; a lost wake-up is a hang, which the watchdog turns into a failure.
#[test]
fn every_sleeper_is_woken_through_the_cascade() {
    const SUBS: u32 = 16;
    const N: u32 = 300;
    let _watchdog = conduit_test_util::watchdog("every_sleeper_is_woken_through_the_cascade", 120);
    let d = TempDir::new();
    let mut cfg = config(&d, 1 << 16);
    cfg.max_subscribers = SUBS;
    let mut p = Publisher::create("cascade", &cfg).unwrap();
    let threads: Vec<_> = (0..SUBS)
        .map(|_| {
            let dir = d.0.clone();
            std::thread::spawn(move || {
                crate::wait::NO_SLEEP_TIMEOUT.with(|c| c.set(true));
                let mut s = Subscriber::open("cascade", Some(&dir)).unwrap();
                let mut next = 0u32;
                while next < N {
                    s.wait(WaitStrategy::Block, None).unwrap();
                    s.poll(
                        |t, b| {
                            assert_eq!((t, b), (next, &next.to_le_bytes()[..]));
                            next += 1;
                        },
                        usize::MAX,
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    while p.subscriber_count() < SUBS as usize {
        std::thread::sleep(Duration::from_millis(1));
    }
    for i in 0..N {
        // Every subscriber has read message i - 1 and is asleep again.
        while !p.all_consumed() || p.sleepers() < SUBS {
            std::thread::yield_now();
        }
        while p.offer(i, &i.to_le_bytes()).is_err() {
            std::thread::yield_now();
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    // One wake-up call per commit at most, whatever the number of sleepers.
    assert!(
        p.wake_calls() <= u64::from(N),
        "{} wake calls",
        p.wake_calls()
    );
}

/// A second mapping of a ring file, for scribbling.
struct Scribbler {
    ptr: *mut u8,
    len: usize,
}

impl Scribbler {
    fn new(path: &std::path::Path) -> Scribbler {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let len = f.metadata().unwrap().len() as usize;
        let p = crate::mapping::map_shared(&f, len).unwrap();
        Scribbler {
            ptr: p.as_ptr(),
            len,
        }
    }

    fn write_u64(&self, off: usize, v: u64) {
        assert!(off + 8 <= self.len && off % 8 == 0);
        // SAFETY: in bounds and aligned (asserted); atomics make the race with
        // the ring's own atomics defined.
        unsafe {
            (*self.ptr.add(off).cast::<std::sync::atomic::AtomicU64>()).store(v, Ordering::SeqCst)
        }
    }

    fn write_u32(&self, off: usize, v: u32) {
        assert!(off + 4 <= self.len && off % 4 == 0);
        // SAFETY: in bounds and aligned (asserted).
        unsafe { (*self.ptr.add(off).cast::<AtomicU32>()).store(v, Ordering::SeqCst) }
    }
}

impl Drop for Scribbler {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn corrupt_case(name: &str, scribble: impl Fn(&Scribbler, usize), expect: &str) {
    corrupt_case_at(name, 0, scribble, expect)
}

/// Moves the subscriber to `skip` 32-byte records from the start, offers one
/// record there, scribbles, and expects a corrupt-ring error.
fn corrupt_case_at(name: &str, skip: usize, scribble: impl Fn(&Scribbler, usize), expect: &str) {
    let d = TempDir::new();
    let mut p = Publisher::create(name, &config(&d, 4096)).unwrap();
    let mut s = Subscriber::open(name, Some(&d.0)).unwrap();
    connect(&mut p, &mut s);
    for _ in 0..skip {
        p.offer(0, &[0; 8]).unwrap();
    }
    assert_eq!(drain(&mut s).len(), skip);
    p.offer(1, &[5; 40]).unwrap();
    let data = layout::data_offset(8, 1) as usize + skip * 32;
    let w = Scribbler::new(p.path());
    scribble(&w, data);
    let r = s.poll(|_, _| {}, 10);
    match r {
        Err(PollError::Corrupt(m)) => assert!(m.contains(expect), "{name}: {m}"),
        other => panic!("{name}: expected Corrupt containing {expect:?}, got {other:?}"),
    }
}

#[test]
fn hostile_record_words_are_corrupt() {
    corrupt_case(
        "bogus-len",
        |w, data| w.write_u32(data + 8, 100_000),
        "length 100000",
    );
    // Within the maximum, but running past the end of the data area.
    corrupt_case_at(
        "len-past-end",
        100,
        |w, data| w.write_u32(data + 8, 2000),
        "length 2000",
    );
    // A padding record at the start of the ring.
    corrupt_case(
        "bad-padding",
        |w, data| w.write_u32(data + 8, u32::MAX),
        "padding record at the start",
    );
    corrupt_case("bad-commit", |w, data| w.write_u64(data, 77), "commit word");
    corrupt_case(
        "lapped",
        |w, data| w.write_u64(data, 4096 + 1),
        "overwritten",
    );
}

#[test]
fn hostile_slot_and_header_are_corrupt() {
    let d = TempDir::new();
    let mut p = Publisher::create("slot", &config(&d, 4096)).unwrap();
    let mut s = Subscriber::open("slot", Some(&d.0)).unwrap();
    connect(&mut p, &mut s);
    let w = Scribbler::new(p.path());
    // Position past the tail in our slot (slot 0).
    w.write_u64(layout::slot_offset(0) + 8, 1 << 40);
    // The publisher only rescans when it needs room or a request is pending.
    w.write_u64(layout::SIGNAL_BLOCK, layout::ATTENTION_MEMBERSHIP);
    match p.offer(1, b"x") {
        Err(OfferError::Corrupt(m)) => assert!(m.contains("position"), "{m}"),
        other => panic!("{other:?}"),
    }
    w.write_u64(layout::slot_offset(0) + 8, 0);
    w.write_u32(layout::slot_offset(1), 9);
    w.write_u64(layout::SIGNAL_BLOCK, layout::ATTENTION_MEMBERSHIP);
    match p.offer(1, b"x") {
        Err(OfferError::Corrupt(m)) => assert!(m.contains("state 9"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A garbled header is noticed by the subscriber's periodic check.
    w.write_u64(0, 0xdead_beef);
    let mut res = Ok(0);
    for _ in 0..100_000 {
        res = s.poll(|_, _| {}, 10);
        if res.is_err() {
            break;
        }
        if res == Ok(0) {
            std::thread::sleep(Duration::from_micros(10));
        }
    }
    match res {
        Err(PollError::Corrupt(m)) => assert!(m.contains("header"), "{m}"),
        other => panic!("{other:?}"),
    }
    // And refused on open, with what is wrong.
    let e = Subscriber::open("slot", Some(&d.0)).err().unwrap();
    assert!(e.to_string().contains("not a conduit ring file"), "{e}");
    let _ = RECORD_HEADER_LEN;
}

#[test]
fn version_and_truncation_are_named_on_open() {
    let d = TempDir::new();
    let p = Publisher::create("ver", &config(&d, 4096)).unwrap();
    let w = Scribbler::new(p.path());
    w.write_u32(8, 7);
    let e = Subscriber::open("ver", Some(&d.0)).err().unwrap();
    assert!(
        e.to_string().contains(&format!(
            "layout version 7 where {} was expected",
            layout::LAYOUT_VERSION
        )),
        "{e}"
    );
    w.write_u32(8, layout::LAYOUT_VERSION);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(p.path())
        .unwrap();
    f.set_len(1000).unwrap();
    drop(w);
    let e = Subscriber::open("ver", Some(&d.0)).err().unwrap();
    assert!(e.to_string().contains("truncated: 1000 bytes"), "{e}");
    drop(p);
}

#[test]
fn random_scribbles_never_panic_or_hang() {
    let d = TempDir::new();
    let mut p = Publisher::create("fuzz", &config(&d, 4096)).unwrap();
    let mut s = Subscriber::open("fuzz", Some(&d.0)).unwrap();
    connect(&mut p, &mut s);
    let w = Scribbler::new(p.path());
    let words = w.len / 8;
    let mut rng = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut outcomes = [0usize; 3];
    for round in 0..20_000u64 {
        if round % 4 == 0 {
            let off = (next() as usize % words) * 8;
            let v = match next() % 4 {
                0 => next(),
                1 => next() % 64,
                2 => p.position() + (next() % 8) * 32 + 1,
                _ => u64::from(u32::MAX) << (next() % 2 * 32),
            };
            w.write_u64(off, v);
        }
        let _ = p.offer(1, &[7; 24]);
        match s.poll(|_, b| assert!(b.len() <= 2048), usize::MAX) {
            Ok(_) => outcomes[0] += 1,
            Err(PollError::Corrupt(_)) => outcomes[1] += 1,
            Err(_) => outcomes[2] += 1,
        }
        let _ = s.wait(WaitStrategy::Spin, Some(Duration::from_micros(1)));
        let _ = p.is_connected();
        let _ = s.is_connected();
        let _ = p.all_consumed();
    }
    assert!(
        outcomes[1] > 0,
        "scribbles were never noticed: {outcomes:?}"
    );
}

#[test]
fn stale_temp_files_of_dead_creators_are_swept() {
    let d = TempDir::new();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let live = std::process::id();
    let n = "00000000deadbeef";
    let dead_tmp = format!(".swept.{dead}.{n}.tmp");
    let kept = [
        format!(".swept.{live}.{n}.tmp"),
        format!(".other.{dead}.{n}.tmp"),
        format!(".swept.{dead}.{n}.tmp.bak"),
        format!(".swept.{dead}.0{n}.tmp"),
        format!(".swept.{dead}.987654321.tmp"),
        format!(".swept.{dead}.00000000DEADBEEF.tmp"),
        format!(".swept.{dead}.tmp"),
        format!(".swept.x.{dead}.{n}.tmp"),
        format!("swept.{dead}.{n}.tmp"),
    ];
    for f in kept.iter().chain([&dead_tmp]) {
        std::fs::write(d.0.join(f), b"x").unwrap();
    }
    let _p = Publisher::create("swept", &config(&d, 4096)).unwrap();
    assert!(!d.0.join(&dead_tmp).exists(), "{dead_tmp} left behind");
    for f in &kept {
        assert!(d.0.join(f).exists(), "{f} removed");
    }
}

/// Runs `f` on a thread; its result, or a failure if it takes longer than
/// the watchdog (a hang).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("watchdog: {what} still running after 30 s: hang"))
}

fn chown(path: &std::path::Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), None).unwrap();
}

/// The lock file of ring `name` in `d`.
fn lock_file(d: &TempDir, name: &str) -> PathBuf {
    std::fs::read_dir(&d.0)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let f = p.file_name().unwrap().to_str().unwrap();
            f.starts_with(&format!(".{name}.")) && f.ends_with(".lock")
        })
        .expect("lock file")
}

#[test]
fn creation_never_waits_on_a_directory_lock() {
    use std::os::fd::AsRawFd;
    let d = TempDir::new();
    // Anyone who can open the directory can flock it.
    let held = std::fs::File::open(&d.0).unwrap();
    // SAFETY: a valid fd.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let cfg = config(&d, 4096);
    let p = within("create under a held directory lock", move || {
        Publisher::create("dirlock", &cfg).map(drop)
    });
    p.unwrap();
    // A second publisher (name taken) and a replacement of a stale ring too.
    let cfg = config(&d, 4096);
    within("create twice", move || {
        let p = Publisher::create("dirlock2", &cfg).unwrap();
        assert!(matches!(
            Publisher::create("dirlock2", &cfg),
            Err(RingError::PublisherAlive { .. })
        ));
        drop(p);
        Publisher::create("dirlock2", &cfg).unwrap();
    });
    drop(held);
}

#[test]
fn symlinks_and_fifos_under_the_name_are_refused() {
    let d = TempDir::new();
    let mut p = Publisher::create("real", &config(&d, 4096)).unwrap();
    std::os::unix::fs::symlink(d.0.join("real"), d.0.join("link")).unwrap();
    let e = Subscriber::open("link", Some(&d.0)).err();
    assert!(matches!(e, Some(RingError::NotARing { .. })), "{e:?}");
    let e = Publisher::create("link", &config(&d, 4096)).err();
    assert!(matches!(e, Some(RingError::NotARing { .. })), "{e:?}");
    assert!(!p.is_connected());

    let fifo = std::ffi::CString::new(d.0.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let dir = d.0.clone();
    let e = within("opening a FIFO", move || {
        Subscriber::open("fifo", Some(&dir)).err()
    });
    assert!(matches!(e, Some(RingError::NotARing { .. })), "{e:?}");
    let cfg = config(&d, 4096);
    let e = within("creating over a FIFO", move || {
        Publisher::create("fifo", &cfg).err()
    });
    assert!(matches!(e, Some(RingError::NotARing { .. })), "{e:?}");
}

#[test]
fn temporary_and_lock_names_are_random() {
    let d = TempDir::new();
    let a = Publisher::create("rnd", &config(&d, 4096)).unwrap();
    let first = lock_file(&d, "rnd");
    drop(a);
    let _b = Publisher::create("rnd", &config(&d, 4096)).unwrap();
    let second = lock_file(&d, "rnd");
    assert_ne!(first, second);
}

#[test]
fn rings_of_other_owners_are_refused() {
    if !root_or_skip("rings_of_other_owners_are_refused") {
        return;
    }
    let d = TempDir::new();
    let mut p = Publisher::create("owned", &config(&d, 4096)).unwrap();
    chown(p.path(), 65534);
    chown(&lock_file(&d, "owned"), 65534);
    match Subscriber::open("owned", Some(&d.0)) {
        Err(RingError::ForeignOwner { uid: 65534, .. }) => {}
        other => panic!("expected ForeignOwner, got {:?}", other.map(|_| ())),
    }
    let e = Subscriber::open("owned", Some(&d.0)).err().unwrap();
    assert!(e.to_string().contains("uid 65534"), "{e}");
    // Named owners are accepted.
    let mut s = Subscriber::open_with_owners("owned", Some(&d.0), &[65534]).unwrap();
    connect(&mut p, &mut s);
    p.offer(1, b"ok").unwrap();
    assert_eq!(drain(&mut s), vec![(1, b"ok".to_vec())]);

    // Anything else of another uid under the name names the owner too.
    std::os::unix::fs::symlink("/etc/passwd", d.0.join("sym")).unwrap();
    std::os::unix::fs::lchown(d.0.join("sym"), Some(65534), None).unwrap();
    assert!(matches!(
        Subscriber::open("sym", Some(&d.0)),
        Err(RingError::ForeignOwner { uid: 65534, .. })
    ));

    // A subscriber waiting for a publisher finds a squatter's ring instead.
    let mut early = Subscriber::open("late", Some(&d.0)).unwrap();
    let q = Publisher::create("late", &config(&d, 4096)).unwrap();
    chown(q.path(), 65534);
    chown(&lock_file(&d, "late"), 65534);
    assert_eq!(
        poll_until_err(&mut early),
        PollError::ForeignOwner { uid: 65534 }
    );
    drop(q);

    // A squatter's file under a publisher's name names the squatter.
    std::fs::write(d.0.join("squat"), b"CNDTRING and then anything").unwrap();
    chown(&d.0.join("squat"), 65534);
    match Publisher::create("squat", &config(&d, 4096)) {
        Err(RingError::ForeignOwner { uid: 65534, .. }) => {}
        other => panic!("expected ForeignOwner, got {:?}", other.map(|_| ())),
    }
    // Squatting a live-looking ring of another owner: the same.
    let q = Publisher::create("squat2", &config(&d, 4096)).unwrap();
    chown(q.path(), 65534);
    match Publisher::create("squat2", &config(&d, 4096)) {
        Err(RingError::ForeignOwner { uid: 65534, .. }) => {}
        other => panic!("expected ForeignOwner, got {:?}", other.map(|_| ())),
    }
}

/// A small tmpfs mounted on a fresh directory, unmounted on drop.
struct SmallTmpfs(TempDir);

impl SmallTmpfs {
    fn new(size: &str) -> SmallTmpfs {
        let d = TempDir::new();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&d.0)
            .status()
            .unwrap();
        assert!(st.success(), "mount failed");
        SmallTmpfs(d)
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.0 .0)
            .status();
    }
}

#[test]
fn full_directory_is_enospc_at_open() {
    if !root_or_skip("full_directory_is_enospc_at_open") {
        return;
    }
    let fs = SmallTmpfs::new("256k");
    let mut cfg = config(&fs.0, 1 << 20);
    cfg.max_message_len = 1024;
    match Publisher::create("big", &cfg) {
        Err(RingError::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
            assert!(e.to_string().contains("No space left"), "{e}");
        }
        other => panic!("expected ENOSPC, got {:?}", other.map(|_| ())),
    }
    // Nothing is left behind, and a ring that fits still opens.
    let left: Vec<_> = std::fs::read_dir(&fs.0 .0).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
    Publisher::create("small", &config(&fs.0, 4096)).unwrap();
}

#[test]
fn truncation_under_live_handles_is_corrupt_not_sigbus() {
    let d = TempDir::new();
    let mut p = Publisher::create("cut", &config(&d, 1 << 16)).unwrap();
    let mut s = Subscriber::open("cut", Some(&d.0)).unwrap();
    connect(&mut p, &mut s);
    p.offer(1, b"before").unwrap();
    assert_eq!(drain(&mut s).len(), 1);
    std::fs::OpenOptions::new()
        .write(true)
        .open(p.path())
        .unwrap()
        .set_len(0)
        .unwrap();
    let e = p.offer(2, b"after").unwrap_err();
    assert!(
        matches!(&e, OfferError::Corrupt(m) if m.contains("truncated")),
        "{e:?}"
    );
    let e = poll_until_err(&mut s);
    assert!(
        matches!(&e, PollError::Corrupt(m) if m.contains("truncated")),
        "{e:?}"
    );
    // Other rings of the process are unaffected.
    let mut p2 = Publisher::create("uncut", &config(&d, 4096)).unwrap();
    let mut s2 = Subscriber::open("uncut", Some(&d.0)).unwrap();
    connect(&mut p2, &mut s2);
    p2.offer(3, b"fine").unwrap();
    assert_eq!(drain(&mut s2), vec![(3, b"fine".to_vec())]);
}

#[test]
fn read_locks_of_a_reader_deny_no_slot() {
    use std::os::fd::AsRawFd;
    let d = TempDir::new();
    let mut cfg = config(&d, 4096);
    cfg.mode = 0o644;
    let mut p = Publisher::create("ro", &cfg).unwrap();
    // The lock file gets only the write classes of the ring's mode.
    use std::os::unix::fs::PermissionsExt;
    let lock_mode = std::fs::metadata(lock_file(&d, "ro"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(lock_mode & 0o777, 0o600);
    // A reader read-locks every byte of the ring file.
    let reader = std::fs::File::open(p.path()).unwrap();
    // SAFETY: a zeroed flock is valid; l_len 0 = to the end of all offsets.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_RDLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: valid fd and flock.
    let r = unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    assert_eq!(r, 0);
    let mut subs: Vec<Subscriber> = (0..8)
        .map(|_| Subscriber::open("ro", Some(&d.0)).unwrap())
        .collect();
    for s in &mut subs {
        connect(&mut p, s);
    }
    assert_eq!(p.subscriber_count(), 8);
}

#[test]
fn a_live_ring_of_layout_version_1_is_not_replaced() {
    use std::os::unix::fs::FileExt;
    let d = TempDir::new();
    let p = Publisher::create("src", &config(&d, 4096)).unwrap();
    // A ring file as a version-1 publisher leaves it, that publisher alive:
    // it holds a write lock on byte 2^40 of the ring file itself.
    std::fs::copy(p.path(), d.0.join("v1")).unwrap();
    drop(p);
    let old = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(d.0.join("v1"))
        .unwrap();
    old.write_all_at(&1u32.to_le_bytes(), 8).unwrap();
    assert!(crate::liveness::try_lock(&old, 1 << 40).unwrap());
    assert!(matches!(
        Publisher::create("v1", &config(&d, 4096)),
        Err(RingError::PublisherAlive { .. })
    ));
    drop(old);
    Publisher::create("v1", &config(&d, 4096)).unwrap();
}

// ---- Several publishers -------------------------------------------------

fn multi_config(dir: &TempDir, capacity: usize, publishers: u32) -> RingConfig {
    RingConfig {
        max_message_len: 1024,
        max_publishers: publishers,
        ..config(dir, capacity)
    }
}

/// Offers until accepted (bounded by the caller's watchdog).
fn offer_retry(p: &mut Publisher, type_id: u32, data: &[u8]) -> u64 {
    loop {
        match p.offer(type_id, data) {
            Ok(pos) => return pos,
            Err(OfferError::BackPressured) => std::thread::yield_now(),
            Err(e) => panic!("offer: {e}"),
        }
    }
}

/// Records as (type id, payload, publisher index, pid).
type Rec = (u32, Vec<u8>, Option<(u16, u32)>);

fn drain_records(s: &mut Subscriber) -> Vec<Rec> {
    let mut out = Vec::new();
    loop {
        let n = s
            .poll_records(
                |r, b| out.push((r.type_id(), b.to_vec(), r.publisher())),
                usize::MAX,
            )
            .unwrap();
        if n == 0 {
            return out;
        }
    }
}

/// Polls until `n` records arrived (the watchdog of the caller bounds it).
fn collect(s: &mut Subscriber, n: usize) -> Vec<Rec> {
    let mut out = Vec::new();
    while out.len() < n {
        let got = drain_records(s);
        if got.is_empty() {
            std::thread::sleep(Duration::from_micros(200));
        }
        out.extend(got);
    }
    out
}

#[test]
fn publishers_attach_up_to_the_limit_and_slots_are_reused() {
    let d = TempDir::new();
    let cfg = multi_config(&d, 1 << 14, 3);
    let mut a = Publisher::create("mp-attach", &cfg).unwrap();
    let b = Publisher::create("mp-attach", &cfg).unwrap();
    let c = Publisher::create("mp-attach", &cfg).unwrap();
    match Publisher::create("mp-attach", &cfg) {
        Err(RingError::TooManyPublishers { max: 3, .. }) => {}
        other => panic!("expected TooManyPublishers, got {:?}", other.err()),
    }
    // A single-writer publisher is refused while they live.
    match Publisher::create("mp-attach", &config(&d, 1 << 14)) {
        Err(RingError::PublisherAlive { .. }) => {}
        other => panic!("expected PublisherAlive, got {:?}", other.err()),
    }
    // A dead publisher's slot is reclaimed; a clean leaver's too.
    b.die();
    drop(c);
    let b2 = Publisher::create("mp-attach", &cfg).unwrap();
    let c2 = Publisher::create("mp-attach", &cfg).unwrap();
    assert!(Publisher::create("mp-attach", &cfg).is_err());
    let mut s = Subscriber::open("mp-attach", Some(&d.0)).unwrap();
    connect(&mut a, &mut s);
    // The ring stays open while any publisher is attached.
    drop(a);
    drop(b2);
    let mut c2 = c2;
    offer_retry(&mut c2, 7, b"last one");
    let got = drain_records(&mut s);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2.map(|(_, pid)| pid), Some(std::process::id()));
    drop(c2);
    assert_eq!(poll_until_err(&mut s), PollError::PublisherClosed);
    assert!(!d.0.join("mp-attach").exists());
}

#[test]
fn concurrent_publishers_keep_their_order_and_every_way_to_send_works() {
    const N: u32 = 20_000;
    within("four publishers", || {
        let d = TempDir::new();
        let cfg = multi_config(&d, 1 << 12, 4);
        let mut first = Publisher::create("mp-order", &cfg).unwrap();
        let mut s = Subscriber::open("mp-order", Some(&d.0)).unwrap();
        connect(&mut first, &mut s);
        let mut pubs = vec![first];
        for _ in 1..4 {
            pubs.push(Publisher::create("mp-order", &cfg).unwrap());
        }
        let handles: Vec<_> = pubs
            .into_iter()
            .enumerate()
            .map(|(w, mut p)| {
                std::thread::spawn(move || {
                    for seq in 0..N {
                        let mut msg = [0u8; 24];
                        msg[..4].copy_from_slice(&(w as u32).to_le_bytes());
                        msg[4..8].copy_from_slice(&seq.to_le_bytes());
                        let len = 8 + (seq as usize % 17);
                        loop {
                            // Every way to send: offer, offer_with, claim,
                            // and an aborted claim before some of them.
                            let r = match seq % 4 {
                                0 => p.offer(1, &msg[..len]),
                                1 => p.offer_with(1, len, |b| b.copy_from_slice(&msg[..len])),
                                2 => p.try_claim(1, len).map(|mut c| {
                                    c.as_mut_slice().copy_from_slice(&msg[..len]);
                                    c.commit()
                                }),
                                _ => {
                                    if let Ok(c) = p.try_claim(2, 40) {
                                        c.abort();
                                    }
                                    p.offer(1, &msg[..len])
                                }
                            };
                            match r {
                                Ok(_) => break,
                                Err(OfferError::BackPressured) => std::thread::yield_now(),
                                Err(e) => panic!("publisher {w}: {e}"),
                            }
                        }
                    }
                    p
                })
            })
            .collect();
        let mut next = [0u32; 4];
        let mut index_of = [None; 4];
        let mut total = 0;
        while total < 4 * N {
            let n = s
                .poll_records(
                    |r, b| {
                        assert_eq!(r.type_id(), 1, "aborted claims are never delivered");
                        let w = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
                        let seq = u32::from_le_bytes(b[4..8].try_into().unwrap());
                        assert_eq!(seq, next[w], "publisher {w} out of order");
                        assert_eq!(b.len(), 8 + (seq as usize % 17));
                        next[w] += 1;
                        let (idx, pid) = r.publisher().expect("source");
                        assert_eq!(pid, std::process::id());
                        assert_eq!(*index_of[w].get_or_insert(idx), idx);
                    },
                    256,
                )
                .unwrap();
            total += n as u32;
            if n == 0 {
                std::thread::yield_now();
            }
        }
        for h in handles {
            drop(h.join().unwrap());
        }
        assert_eq!(next, [N; 4]);
    });
}

#[test]
fn a_publisher_dead_mid_claim_is_skipped_and_others_go_on() {
    within("dead claim", || {
        let d = TempDir::new();
        let cfg = multi_config(&d, 1 << 12, 2);
        let mut a = Publisher::create("mp-dead", &cfg).unwrap();
        let mut s = Subscriber::open("mp-dead", Some(&d.0)).unwrap();
        connect(&mut a, &mut s);
        for round in 0..40u32 {
            let mut b = Publisher::create("mp-dead", &cfg).unwrap();
            offer_retry(&mut b, 2, &round.to_le_bytes());
            // Vary where in the lap the claim lands (some cross its end).
            let len = 16 + (round as usize * 37) % 200;
            let mut c = b.try_claim(3, len).unwrap();
            c.as_mut_slice().fill(0xEE);
            std::mem::forget(c);
            b.die();
            offer_retry(&mut a, 1, &round.to_le_bytes());
            let got = collect(&mut s, 2);
            assert_eq!(got.len(), 2, "round {round}: {got:?}");
            assert_eq!((got[0].0, &got[0].1[..]), (2, &round.to_le_bytes()[..]));
            assert_eq!((got[1].0, &got[1].1[..]), (1, &round.to_le_bytes()[..]));
        }
    });
}

#[test]
fn a_publisher_dead_holding_the_claim_lock_is_recovered() {
    within("dead lock holder", || {
        let d = TempDir::new();
        let cfg = multi_config(&d, 1 << 12, 2);
        let mut a = Publisher::create("mp-lock", &cfg).unwrap();
        let mut s = Subscriber::open("mp-lock", Some(&d.0)).unwrap();
        connect(&mut a, &mut s);
        let b = Publisher::create("mp-lock", &cfg).unwrap();
        // Publisher 1 dies inside its claim path, holding the lock.
        let w = Scribbler::new(a.path());
        w.write_u64(
            layout::PUBLISHER_BLOCK + layout::CLAIM_WORDS_OFFSET,
            (7 << 32) | 2,
        );
        b.die();
        let t = std::time::Instant::now();
        offer_retry(&mut a, 1, b"after");
        assert!(t.elapsed() >= crate::LOCK_CHECK_INTERVAL);
        let got = collect(&mut s, 1);
        assert_eq!(&got[0].1[..], b"after");
        // The reclaimed slot is usable again.
        let mut b2 = Publisher::create("mp-lock", &cfg).unwrap();
        offer_retry(&mut b2, 1, b"b2");
        assert_eq!(&collect(&mut s, 1)[0].1[..], b"b2");
    });
}

#[test]
fn hostile_publisher_slots_and_claim_words_are_corrupt_or_skipped() {
    within("hostile multi", || {
        let d = TempDir::new();
        let cfg = multi_config(&d, 1 << 12, 2);
        let mut a = Publisher::create("mp-hostile", &cfg).unwrap();
        let mut s = Subscriber::open("mp-hostile", Some(&d.0)).unwrap();
        connect(&mut a, &mut s);
        let w = Scribbler::new(a.path());
        let pslot = layout::pub_slot_offset(8, 1);
        // A pending claim of a dead (never attached) slot at our position,
        // with a shared tail beyond: misaligned is corrupt.
        let tail_at = layout::PUBLISHER_BLOCK + layout::CLAIM_WORDS_OFFSET + 8;
        w.write_u64(tail_at, 64);
        w.write_u64(pslot + 64, 0);
        w.write_u64(pslot + 72, 33);
        let e = poll_until_err(&mut s);
        assert!(
            matches!(&e, PollError::Corrupt(m) if m.contains("pending claim")),
            "{e:?}"
        );
        // A sane one is skipped.
        w.write_u64(pslot + 72, 64);
        let mut skipped = false;
        for _ in 0..2000 {
            if s.poll(|_, _| {}, 10).is_ok() && s.position() == 64 {
                skipped = true;
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        assert!(skipped, "the dead claim was not skipped");
        w.write_u64(pslot + 72, 0);
        // A claim lock naming a slot that does not exist.
        w.write_u64(layout::PUBLISHER_BLOCK + layout::CLAIM_WORDS_OFFSET, 99);
        match a.offer(1, b"x") {
            Err(OfferError::Corrupt(m)) => assert!(m.contains("claim lock"), "{m}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        w.write_u64(layout::PUBLISHER_BLOCK + layout::CLAIM_WORDS_OFFSET, 0);
        // A misaligned shared tail.
        w.write_u64(tail_at, 65);
        match a.offer(1, b"x") {
            Err(OfferError::Corrupt(m)) => assert!(m.contains("shared tail"), "{m}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // A skip record that runs past the end of the lap.
        w.write_u64(tail_at, 64);
        let data = layout::data_offset(8, 2) as usize;
        a.offer(1, b"y").unwrap();
        w.write_u32(data + 64 + 8, layout::SKIP_LEN);
        w.write_u32(data + 64 + 12, 1 << 20);
        let e = poll_until_err(&mut s);
        assert!(
            matches!(&e, PollError::Corrupt(m) if m.contains("skip record")),
            "{e:?}"
        );
    });
}

#[test]
fn a_subscriber_activated_by_one_publisher_connects_the_others() {
    let d = TempDir::new();
    let cfg = multi_config(&d, 1 << 14, 2);
    let mut a = Publisher::create("mp-conn", &cfg).unwrap();
    let mut b = Publisher::create("mp-conn", &cfg).unwrap();
    // Both have seen no subscriber.
    assert_eq!(b.offer(1, b"x"), Err(OfferError::NotConnected));
    let mut s = Subscriber::open("mp-conn", Some(&d.0)).unwrap();
    // `a` takes the membership request and activates it.
    connect(&mut a, &mut s);
    // `b` never saw the request: it must still find the subscriber.
    offer_retry(&mut b, 2, b"from b");
    offer_retry(&mut a, 3, b"from a");
    let got = collect(&mut s, 2);
    assert_eq!(got[0].1, b"from b");
    assert_eq!(got[1].1, b"from a");
}

/// Offers `n` sequence-numbered messages from `p` (tag `tag`), draining `s`
/// as it goes; returns what `s` got.
fn offer_and_drain(p: &mut Publisher, s: &mut Subscriber, tag: u8, from: u32, n: u32) -> Vec<Rec> {
    let mut got = Vec::new();
    for i in from..from + n {
        let mut msg = [tag; 8];
        msg[4..].copy_from_slice(&i.to_le_bytes());
        loop {
            match p.offer(1, &msg) {
                Ok(_) => break,
                Err(OfferError::BackPressured) => got.extend(drain_records(s)),
                Err(e) => panic!("offer: {e}"),
            }
        }
        got.extend(drain_records(s));
    }
    got
}

/// Checks that each tag's sequence numbers in `got` run from 0 without a gap.
fn assert_in_order(got: &[Rec], tags: &[(u8, u32)]) {
    for &(tag, n) in tags {
        let seqs: Vec<u32> = got
            .iter()
            .filter(|r| r.1[0] == tag)
            .map(|r| u32::from_le_bytes(r.1[4..8].try_into().unwrap()))
            .collect();
        assert_eq!(seqs, (0..n).collect::<Vec<_>>(), "publisher {tag}");
    }
}

#[test]
fn a_lone_publisher_keeps_the_lock_and_a_second_one_takes_it_over() {
    within("solo and take-over", || {
        let d = TempDir::new();
        let cfg = multi_config(&d, 1 << 14, 3);
        let mut a = Publisher::create("mp-solo", &cfg).unwrap();
        let mut s = Subscriber::open("mp-solo", Some(&d.0)).unwrap();
        connect(&mut a, &mut s);
        let solo_works = crate::futex::register_global_expedited();
        let mut got = offer_and_drain(&mut a, &mut s, b'a', 0, 3000);
        assert_eq!(a.is_solo(), solo_works);
        // Attaching takes the claim lock from the keeper.
        let mut b = Publisher::create("mp-solo", &cfg).unwrap();
        got.extend(offer_and_drain(&mut b, &mut s, b'b', 0, 10));
        got.extend(offer_and_drain(&mut a, &mut s, b'a', 3000, 10));
        assert!(!a.is_solo(), "the keeper noticed the take-over");
        // Alternating writers never go solo; each keeps its order.
        for i in 0..1500 {
            got.extend(offer_and_drain(&mut b, &mut s, b'b', 10 + i, 1));
            got.extend(offer_and_drain(&mut a, &mut s, b'a', 3010 + i, 1));
        }
        assert!(!a.is_solo() && !b.is_solo());
        // Alone again (b gone), a goes solo again.
        drop(b);
        got.extend(offer_and_drain(&mut a, &mut s, b'a', 4510, 3000));
        assert_eq!(a.is_solo(), solo_works);
        got.extend(collect(&mut s, 7510 + 1510 - got.len()));
        assert_in_order(&got, &[(b'a', 7510), (b'b', 1510)]);
    });
}

#[test]
fn a_solo_keeper_inside_a_change_is_waited_for_and_a_dead_one_taken_over() {
    within("solo keeper busy or dead", || {
        if !crate::futex::register_global_expedited() {
            return;
        }
        let d = TempDir::new();
        let cfg = multi_config(&d, 1 << 14, 3);
        let mut k = Publisher::create("mp-keeper", &cfg).unwrap();
        let mut s = Subscriber::open("mp-keeper", Some(&d.0)).unwrap();
        connect(&mut k, &mut s);
        let mut got = offer_and_drain(&mut k, &mut s, b'k', 0, 3000);
        assert!(k.is_solo());
        // The keeper (slot 0) seems inside a change: an attacher waits.
        let w = Scribbler::new(k.path());
        let busy_at = layout::pub_slot_offset(8, 0) + 80;
        w.write_u32(busy_at, 1);
        let (tx, rx) = std::sync::mpsc::channel();
        let cfg2 = cfg.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Publisher::create("mp-keeper", &cfg2));
        });
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        // The change ends: the attacher has the lock; the keeper goes on.
        w.write_u32(busy_at, 0);
        let mut a = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
        got.extend(offer_and_drain(&mut a, &mut s, b'a', 0, 1));
        got.extend(offer_and_drain(&mut k, &mut s, b'k', 3000, 10));
        assert!(!k.is_solo());
        // With a's slot made to look free, k is alone and keeps the lock.
        let a_state = layout::pub_slot_offset(8, 1);
        w.write_u32(a_state, layout::PUB_FREE);
        got.extend(offer_and_drain(&mut k, &mut s, b'k', 3010, 2990));
        assert!(k.is_solo());
        w.write_u32(a_state, layout::PUB_ATTACHED);
        // The keeper dies inside a change, with a claim half written.
        w.write_u32(busy_at, 1);
        let mut c = k.try_claim(1, 8).unwrap();
        c.as_mut_slice().fill(0xEE);
        std::mem::forget(c);
        k.die();
        got.extend(offer_and_drain(&mut a, &mut s, b'a', 1, 5));
        got.extend(collect(&mut s, 6006 - got.len()));
        assert!(got.iter().all(|r| r.1[0] != 0xEE), "nothing torn");
        assert_in_order(&got, &[(b'a', 6), (b'k', 6000)]);
        // The keeper's slot is reclaimed and usable.
        let mut k2 = Publisher::create("mp-keeper", &cfg).unwrap();
        offer_retry(&mut k2, 1, b"k2-after");
        assert_eq!(collect(&mut s, 1)[0].1, b"k2-after");
        // A kept lock naming a slot that does not exist is corrupt.
        w.write_u64(
            layout::PUBLISHER_BLOCK + layout::CLAIM_WORDS_OFFSET,
            (3 << 32) | (1 << 31) | 99,
        );
        match a.offer(1, b"x") {
            Err(OfferError::Corrupt(m)) => assert!(m.contains("claim lock kept"), "{m}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    });
}
