//! `udp://` through the public API (`conduit::Publication`/`Subscription`)
//! on loopback: typed messages, claims, counters, option errors, both
//! drivers.

use std::time::{Duration, Instant};

use conduit::{Error, Message, Publication, Subscription};
use conduit_test_util::{free_udp_port, io_uring_check, uring_or_skip};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, PartialEq)]
struct Tick {
    seq: u64,
    price: i64,
}

impl Message for Tick {
    const TYPE_ID: u32 = 42;
}

fn typed_round_trip(driver: &str, expect: &str) {
    let port = free_udp_port();
    let mut sub = Subscription::open(&format!("udp://127.0.0.1:{port}?driver={driver}")).unwrap();
    let mut publ = Publication::open(&format!("udp://127.0.0.1:{port}?driver={driver}")).unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while !publ.is_connected() {
        sub.poll(|_| {}, 8).unwrap();
        assert!(Instant::now() < end, "no handshake");
    }
    let mut sent = 0u64;
    let mut got = Vec::new();
    while got.len() < 10_000 {
        assert!(Instant::now() < end, "stalled at {}", got.len());
        if sent < 10_000 {
            let r = if sent % 3 == 0 {
                publ.send(&Tick {
                    seq: sent,
                    price: -(sent as i64),
                })
            } else if sent % 3 == 1 {
                let t = Tick {
                    seq: sent,
                    price: -(sent as i64),
                };
                publ.offer_with(Tick::TYPE_ID, size_of::<Tick>(), |b| {
                    b.copy_from_slice(t.as_bytes())
                })
            } else {
                let mut c = publ.claim::<Tick>().unwrap();
                *c = Tick {
                    seq: sent,
                    price: -(sent as i64),
                };
                Ok(c.commit())
            };
            match r {
                Ok(_) => sent += 1,
                Err(Error::BackPressured) => {}
                Err(e) => panic!("{e}"),
            }
        } else {
            publ.is_connected();
        }
        sub.poll(|m| got.push(m.get::<Tick>().unwrap().seq), 256)
            .unwrap();
    }
    assert!(got.iter().enumerate().all(|(i, s)| *s == i as u64));
    // Ok only once the subscriber acknowledged everything: keep it polling.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match publ.flush(Duration::from_millis(1)) {
            Ok(()) => break,
            Err(Error::TimedOut) => assert!(Instant::now() < end, "no flush in 10 s"),
            Err(e) => panic!("flush: {e}"),
        }
        let _ = sub.poll(|_| {}, 64);
    }
    let pc = publ.counters();
    let sc = sub.counters();
    assert_eq!(pc.sent, 10_000);
    assert_eq!(sc.received, 10_000);
    assert_eq!(pc.driver, Some(expect));
    assert_eq!(sc.driver, Some(expect));
    assert!(sc.drops_by_reason.iter().any(|(r, _)| *r == "checksum"));
}

#[test]
fn typed_messages_socket() {
    typed_round_trip("socket", "socket");
}

#[test]
fn typed_messages_uring() {
    if uring_or_skip() {
        typed_round_trip("uring", "uring");
    }
}

#[test]
fn typed_messages_prefer_uring() {
    let expect = if io_uring_check().is_ok() {
        "uring"
    } else {
        "socket"
    };
    typed_round_trip("prefer-uring", expect);
}

#[test]
fn offer_before_a_subscriber_is_not_connected() {
    let port = free_udp_port();
    let mut publ = Publication::open(&format!("udp://127.0.0.1:{port}")).unwrap();
    assert!(matches!(publ.offer(1, b"x"), Err(Error::NotConnected)));
    assert!(!publ.is_connected());
    assert!(publ.max_message_len() >= 1 << 20);
    assert!(matches!(
        publ.offer(1, &vec![0; 2 << 20]),
        Err(Error::MessageTooLarge { .. }) | Err(Error::NotConnected)
    ));
}

#[test]
fn bad_options_are_named() {
    for (uri, word) in [
        ("udp://127.0.0.1:9?driver=xdp", "driver"),
        ("udp://127.0.0.1:9?window=3k", "window"),
        ("udp://127.0.0.1:9?liveness=fast", "liveness"),
        ("udp://127.0.0.1:9?gap=ignore", "gap"),
        ("udp://127.0.0.1:9?max_msg=17m", "max"),
        ("udp://127.0.0.1:9?mtu=100000", "mtu"),
        ("udp://127.0.0.1:9?nak_delay=0us", "nak"),
        ("udp://127.0.0.1:9?heartbeat=2s&liveness=1s", "liveness"),
        ("udp://127.0.0.1:9?unknown=1", "unknown"),
    ] {
        for e in [Publication::open(uri).err(), Subscription::open(uri).err()] {
            let e = e.unwrap_or_else(|| panic!("{uri} accepted"));
            assert!(matches!(e, Error::InvalidUri { .. }), "{uri}: {e:?}");
            assert!(e.to_string().contains(word), "{uri}: {e}");
        }
    }
}
