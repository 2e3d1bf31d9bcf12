//! The counters file as the handles of a process write it. One test in its
//! own binary: it sets `CONDUIT_SHM_DIR` before the first handle opens the
//! process's counters file (the file is created once per process).

use conduit::{Publication, Subscription};
use conduit_counters::{parse, Kind, SlotSnapshot, Snapshot, DEFAULT_SLOT_COUNT};
use std::time::{Duration, Instant};

fn snapshot() -> Snapshot {
    let path = conduit::stats_file().expect("the counters file exists");
    parse(&std::fs::read(path).unwrap()).unwrap()
}

fn slot(uri: &str) -> Option<SlotSnapshot> {
    snapshot().slots.into_iter().find(|s| s.uri == uri)
}

/// Polls `sub` until it received `n` messages in all.
fn receive(sub: &mut Subscription, n: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while sub.counters().received < n {
        sub.poll(|_| {}, 64).unwrap();
        assert!(Instant::now() < deadline, "{what}: {:?}", sub.counters());
    }
}

#[test]
fn handles_publish_their_counters_in_the_process_file() {
    let _watchdog = conduit_test_util::watchdog("stats_file", 120);
    let tmp = conduit_test_util::TempDir::on_tmpfs("stats-file");
    std::env::set_var("CONDUIT_SHM_DIR", tmp.path());
    std::env::remove_var("CONDUIT_STATS");
    assert!(conduit::stats_file().is_none(), "no handle yet");

    // shm: the slots appear with URI, role, pid and driver.
    let uri = format!("shm:stats-{}?capacity=64k", std::process::id());
    let mut publ = Publication::open(&uri).unwrap();
    let mut sub = Subscription::open(&uri).unwrap();
    let path = conduit::stats_file().unwrap().to_owned();
    assert_eq!(
        path,
        tmp.join("conduit-stats")
            .join(format!("{}.stats", std::process::id()))
    );
    let snap = snapshot();
    assert_eq!(snap.pid, std::process::id());
    assert_eq!(snap.slot_count, DEFAULT_SLOT_COUNT);
    let kinds: Vec<Kind> = snap.slots.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, [Kind::ShmPublication, Kind::ShmSubscription]);
    assert!(snap
        .slots
        .iter()
        .all(|s| s.uri == uri && s.driver == "ring"));

    // Counters follow the traffic, and match the handles' own.
    while !publ.is_connected() {
        sub.poll(|_| {}, 1).unwrap();
    }
    let mut sent = 0u64;
    let mut bytes = 0u64;
    for i in 0..1000u64 {
        let len = (i % 100) as usize;
        loop {
            match publ.offer(1, &vec![7u8; len]) {
                Ok(_) => break,
                Err(conduit::Error::BackPressured) => {
                    sub.poll(|_| {}, 64).unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
        loop {
            match publ.try_claim(2, 8) {
                Ok(mut c) => {
                    c.copy_from_slice(&[1; 8]);
                    c.commit();
                    break;
                }
                Err(conduit::Error::BackPressured) => {
                    sub.poll(|_| {}, 64).unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
        sent += 2;
        bytes += len as u64 + 8;
    }
    receive(&mut sub, sent, "shm");
    let p = slot(&uri).unwrap();
    let snap = snapshot();
    let s = snap
        .slots
        .iter()
        .find(|s| s.kind == Kind::ShmSubscription)
        .unwrap();
    assert_eq!((p.counters.messages, p.counters.bytes), (sent, bytes));
    assert_eq!(p.counters.messages, publ.counters().sent);
    assert_eq!((s.counters.messages, s.counters.bytes), (sent, bytes));
    assert_eq!(s.counters.messages, sub.counters().received);
    // A full ring is counted as back-pressure, with the position.
    let before = p.counters.back_pressure;
    let mut refused = 0;
    while refused < 3 {
        if let Err(conduit::Error::BackPressured) = publ.offer(1, &[0u8; 1000]) {
            refused += 1;
        }
    }
    let p = slot(&uri).unwrap();
    assert_eq!(p.counters.back_pressure, before + 3);
    assert!(p.counters.position > bytes);
    assert!(publ.is_connected());
    assert_eq!(slot(&uri).unwrap().counters.subscriber_slots_in_use, 1);

    // Freed on drop.
    drop(sub);
    drop(publ);
    assert!(snapshot().slots.is_empty(), "{:?}", snapshot().slots);

    // udp: both ends, with the driver; the protocol's counters are copied.
    let sub_uri = "udp://127.0.0.1:0?driver=socket".to_string();
    let mut sub = Subscription::open(&sub_uri).unwrap();
    let port = sub.local_addr().unwrap().unwrap().port();
    let pub_uri = format!("udp://127.0.0.1:{port}?driver=socket");
    let mut publ = Publication::open(&pub_uri).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut offered = 0u64;
    while offered < 500 {
        match publ.offer(3, &[5u8; 100]) {
            Ok(_) => offered += 1,
            Err(conduit::Error::NotConnected | conduit::Error::BackPressured) => {}
            Err(e) => panic!("{e}"),
        }
        sub.poll(|_| {}, 64).unwrap();
        assert!(Instant::now() < deadline, "udp: {offered} offered");
    }
    receive(&mut sub, offered, "udp");
    // Without a call to `counters()`, the progress path copies them within
    // a millisecond or so.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = slot(&sub_uri).unwrap();
        if s.counters.messages == offered {
            assert_eq!(s.kind, Kind::UdpSubscription);
            assert_eq!(s.driver, "socket");
            assert_eq!(s.counters.bytes, offered * 100);
            assert_eq!(s.counters.position, s.counters.peer_position);
            assert_eq!(s.counters.sessions, 1);
            break;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        sub.poll(|_| {}, 64).unwrap();
        let _ = publ.offer(3, &[]).map(|_| offered += 1);
        std::thread::sleep(Duration::from_millis(2));
    }
    let (pc, sc) = (publ.counters(), sub.counters());
    let (p, s) = (slot(&pub_uri).unwrap(), slot(&sub_uri).unwrap());
    assert_eq!(p.kind, Kind::UdpPublication);
    assert_eq!(p.counters.messages, pc.sent);
    assert_eq!(p.counters.datagrams_sent, pc.datagrams_sent);
    assert_eq!(p.counters.datagrams_received, pc.datagrams_received);
    assert_eq!(p.counters.naks_received, pc.naks_received);
    assert_eq!(p.counters.retransmits, pc.retransmitted);
    assert_eq!(p.counters.drops_total, pc.dropped);
    assert!(p.counters.position >= p.counters.peer_position);
    assert_eq!(s.counters.messages, sc.received);
    assert_eq!(s.counters.naks_sent, sc.naks_sent);
    assert_eq!(s.counters.datagrams_received, sc.datagrams_received);
    assert_eq!(s.counters.drops_total, sc.dropped);
    assert!(p.counters.not_connected > 0 || p.counters.messages == offered);
    drop(publ);
    drop(sub);
    assert!(snapshot().slots.is_empty());

    // More handles than slots: every one opens; the extra ones are counted.
    let extra = 3;
    let subs: Vec<Subscription> = (0..DEFAULT_SLOT_COUNT + extra)
        .map(|i| Subscription::open(&format!("shm:many-{i}")).unwrap())
        .collect();
    let snap = snapshot();
    assert_eq!(snap.slots.len(), DEFAULT_SLOT_COUNT as usize);
    assert_eq!(snap.handles_without_slot, extra);
    drop(subs);
    assert!(snapshot().slots.is_empty());
    std::env::remove_var("CONDUIT_SHM_DIR");
}
