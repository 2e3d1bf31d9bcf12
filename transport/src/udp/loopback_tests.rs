//! Loopback tests of UDP channels: both drivers, ordering, limits, options.

use std::time::{Duration, Instant};

use conduit_test_util::{watchdog, TempDir};

use crate::uri::ChannelUri;
use crate::Error;

use super::{UdpPublication, UdpSubscription};

fn pair(driver: &str, extra: &str) -> (UdpPublication, UdpSubscription) {
    let sub = UdpSubscription::open(
        ChannelUri::parse(&format!("udp://127.0.0.1:0?driver={driver}{extra}")).unwrap(),
    )
    .unwrap();
    let port = sub.local_addr().unwrap().port();
    let publ = UdpPublication::open(
        ChannelUri::parse(&format!("udp://127.0.0.1:{port}?driver={driver}{extra}")).unwrap(),
    )
    .unwrap();
    (publ, sub)
}

fn connect(publ: &mut UdpPublication, sub: &mut UdpSubscription) {
    let end = Instant::now() + Duration::from_secs(10);
    while !publ.is_connected() {
        match sub.poll(|_| {}, 16) {
            // A publisher taking over from a dead one.
            Ok(_) | Err(Error::PeerGone | Error::SessionReplaced { .. }) => {}
            Err(e) => panic!("poll: {e}"),
        }
        assert!(Instant::now() < end, "no handshake within 10 s");
    }
}

/// Flushes `publ` while `sub` keeps polling (its last status acknowledges the tail): a
/// flush is `Ok` only once the subscriber acknowledged everything.
fn flush(publ: &mut UdpPublication, sub: &mut UdpSubscription) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match publ.flush(Duration::from_millis(1)) {
            Ok(()) => return,
            Err(Error::TimedOut) => assert!(Instant::now() < end, "not flushed within 10 s"),
            Err(e) => panic!(
                "flush: {e}\npub {:?}\nsub {:?}",
                publ.counters(),
                sub.counters()
            ),
        }
        let _ = sub.poll(|_| {}, 64);
    }
}

fn stream(driver: &str, extra: &str, count: u64, limit: usize) {
    let (mut publ, mut sub) = pair(driver, extra);
    connect(&mut publ, &mut sub);
    let end = Instant::now() + Duration::from_secs(60);
    let (mut next_send, mut next_recv) = (0u64, 0u64);
    while next_recv < count {
        assert!(Instant::now() < end, "stalled at {next_recv}/{count}");
        if next_send == count {
            // Nothing left to offer: keep the publication's progress going.
            publ.is_connected();
        }
        while next_send < count {
            let mut msg = [0u8; 32];
            msg[..8].copy_from_slice(&next_send.to_le_bytes());
            match publ.offer(7, &msg) {
                Ok(_) => next_send += 1,
                Err(Error::BackPressured) => break,
                Err(e) => panic!("offer: {e}"),
            }
            if next_send % 64 == 0 {
                break;
            }
        }
        sub.poll(
            |m| {
                assert_eq!(m.type_id(), 7);
                let seq = u64::from_le_bytes(m.payload()[..8].try_into().unwrap());
                assert_eq!(seq, next_recv, "out of order or duplicate");
                next_recv += 1;
            },
            limit,
        )
        .unwrap_or_else(|e| {
            panic!(
                "poll: {e} at {next_recv}/{count}\npub {:?}\nsub {:?}",
                publ.counters(),
                sub.counters()
            )
        });
    }
    flush(&mut publ, &mut sub);
    let c = sub.counters();
    assert_eq!(c.received, count);
    assert_eq!(publ.counters().sent, count);
    assert_eq!(c.driver, Some(driver));
}

#[test]
fn socket_stream_in_order() {
    stream("socket", "", 200_000, 1000);
}

/// io_uring usable here and built in (the `uring` feature); says SKIP when not.
fn uring_or_skip() -> bool {
    if !cfg!(feature = "uring") {
        println!("SKIP: built without the `uring` feature");
        return false;
    }
    conduit_test_util::uring_or_skip()
}

#[test]
fn uring_stream_in_order() {
    if !uring_or_skip() {
        return;
    }
    stream("uring", "", 200_000, 1000);
}

#[test]
fn small_poll_limit_and_linger_batching() {
    stream("socket", "&linger=20us", 50_000, 3);
}

#[test]
fn background_threads_and_no_gso() {
    stream("socket", "&progress=thread&gso=off&gro=off", 50_000, 100);
}

#[test]
fn fragmented_messages() {
    let (mut publ, mut sub) = pair("socket", "&max_msg=1m");
    connect(&mut publ, &mut sub);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    let end = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    let mut got = 0;
    while got < 5 {
        assert!(Instant::now() < end, "stalled");
        if sent < 5 {
            match publ.offer(9, &big) {
                Ok(_) => sent += 1,
                Err(Error::BackPressured) => {}
                Err(e) => panic!("{e}"),
            }
        } else {
            publ.is_connected();
        }
        sub.poll(
            |m| {
                assert_eq!(m.payload(), &big[..]);
                got += 1;
            },
            10,
        )
        .unwrap();
    }
}

#[test]
fn claim_commits_through_offer() {
    let (mut publ, mut sub) = pair("socket", "");
    connect(&mut publ, &mut sub);
    let mut c = publ.try_claim(5, 4).unwrap();
    c.as_mut_slice().copy_from_slice(b"abcd");
    assert!(c.commit() > 0);
    drop(publ.try_claim(5, 4).unwrap()); // aborted
    let end = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.is_empty() {
        assert!(Instant::now() < end);
        sub.poll(|m| got.push(m.payload().to_vec()), 10).unwrap();
    }
    assert_eq!(got, vec![b"abcd".to_vec()]);
}

#[test]
fn publisher_sees_subscriber_gone() {
    let (mut publ, mut sub) = pair("socket", "&liveness=200ms&heartbeat=20ms&status=20ms");
    connect(&mut publ, &mut sub);
    drop(sub);
    let end = Instant::now() + Duration::from_secs(10);
    while publ.is_connected() {
        assert!(
            Instant::now() < end,
            "still connected 10 s after the subscriber left"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(matches!(publ.offer(1, b"x"), Err(Error::NotConnected)));
}

#[test]
fn claims_under_back_pressure_lose_nothing() {
    let (mut publ, mut sub) = pair("socket", "&window=64k");
    connect(&mut publ, &mut sub);
    let count = 100_000u64;
    let end = Instant::now() + Duration::from_secs(60);
    let (mut sent, mut next) = (0u64, 0u64);
    while next < count {
        assert!(Instant::now() < end, "stalled at {next}");
        for _ in 0..200 {
            if sent == count {
                publ.is_connected();
                break;
            }
            match publ.try_claim(3, 32) {
                Ok(mut c) => {
                    c.as_mut_slice()[..8].copy_from_slice(&sent.to_le_bytes());
                    assert!(c.commit() > 0, "a reserved claim was refused");
                    sent += 1;
                }
                Err(Error::BackPressured) => break,
                Err(e) => panic!("claim: {e}"),
            }
        }
        sub.poll(
            |m| {
                let seq = u64::from_le_bytes(m.payload()[..8].try_into().unwrap());
                assert_eq!(seq, next);
                next += 1;
            },
            50,
        )
        .unwrap();
    }
    assert_eq!(publ.counters().sent, count);
}

/// Both ends idle (no calls, no progress thread) for longer than the
/// liveness timeout, then the publication offers again: a message is either
/// refused (NotConnected, until the handshake is redone) or delivered,
/// never accepted and then dropped; the subscription sees no loss. With and
/// without batching (`linger`, which otherwise implies a progress thread).
#[test]
fn offers_after_an_idle_spell_are_refused_or_delivered_never_dropped() {
    for extra in ["", "&linger=20us&progress=inline"] {
        let (mut publ, mut sub) = pair(
            "socket",
            &format!("&liveness=200ms&heartbeat=20ms&status=20ms&gap=fail{extra}"),
        );
        connect(&mut publ, &mut sub);
        let end = Instant::now() + Duration::from_secs(30);
        let mut delivered = Vec::new();
        let mut accepted = 0u64;
        for round in 0..3u64 {
            for i in 0..50u64 {
                let seq = round * 50 + i;
                loop {
                    assert!(Instant::now() < end, "stalled at {seq} ({extra})");
                    match publ.offer(3, &seq.to_le_bytes()) {
                        Ok(_) => break,
                        Err(Error::NotConnected | Error::BackPressured) => {}
                        Err(e) => panic!("offer: {e}"),
                    }
                    sub.poll(
                        |m| delivered.push(u64::from_le_bytes(m.payload().try_into().unwrap())),
                        64,
                    )
                    .unwrap();
                }
                accepted += 1;
            }
            // Drain, then let both ends idle past the liveness timeout.
            while (delivered.len() as u64) < accepted {
                assert!(
                    Instant::now() < end,
                    "undelivered after round {round} ({extra})"
                );
                publ.is_connected();
                sub.poll(
                    |m| delivered.push(u64::from_le_bytes(m.payload().try_into().unwrap())),
                    64,
                )
                .unwrap_or_else(|e| panic!("poll after round {round} ({extra}): {e}"));
            }
            std::thread::sleep(Duration::from_millis(400));
        }
        assert_eq!(delivered, (0..150).collect::<Vec<_>>(), "{extra}");
    }
}

/// Offers `n` messages numbered from `first` and checks that the
/// subscription delivers exactly those, in order.
fn exchange(publ: &mut UdpPublication, sub: &mut UdpSubscription, first: u64, n: u64) {
    let end = Instant::now() + Duration::from_secs(20);
    let (mut sent, mut next) = (first, first);
    while next < first + n {
        assert!(
            Instant::now() < end,
            "stalled at {next} ({:?})",
            sub.counters()
        );
        if sent < first + n {
            match publ.offer(3, &sent.to_le_bytes()) {
                Ok(_) => sent += 1,
                Err(Error::BackPressured | Error::NotConnected) => {}
                Err(e) => panic!("offer: {e}"),
            }
        } else {
            publ.is_connected();
        }
        sub.poll(
            |m| {
                let seq = u64::from_le_bytes(m.payload().try_into().unwrap());
                assert_eq!(seq, next, "out of order or duplicate");
                next += 1;
            },
            64,
        )
        .unwrap();
    }
}

/// The subscription follows its sender (with the socket driver, on a
/// second socket connected to it): a stranger's datagrams still reach it
/// and are counted, a sender restarted on another port is picked up, and
/// its address can still not be bound by anyone else.
fn follows_its_sender(driver: &str) {
    let (mut first, mut sub) = pair(driver, "&liveness=300ms");
    let addr = sub.local_addr().unwrap();
    connect(&mut first, &mut sub);
    exchange(&mut first, &mut sub, 0, 1000);

    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dropped = sub.counters().dropped;
    for i in 0..20u8 {
        stranger.send_to(&[i; 48], addr).unwrap();
    }
    let end = Instant::now() + Duration::from_secs(10);
    while sub.counters().dropped < dropped + 20 {
        assert!(
            Instant::now() < end,
            "stranger's datagrams not counted: {:?}",
            sub.counters()
        );
        sub.poll(|_| panic!("a stranger's datagram was delivered"), 64)
            .unwrap();
    }

    // Nobody else can bind the subscription's address.
    assert!(std::net::UdpSocket::bind(addr).is_err());
    let again =
        UdpSubscription::open(ChannelUri::parse(&format!("udp://{addr}?driver={driver}")).unwrap());
    assert!(matches!(again, Err(Error::Io(_))), "{again:?}");

    // The first publisher dies without a word (its socket stays open);
    // a new one, on another port, takes over.
    std::mem::forget(first);
    let mut second = UdpPublication::open(
        ChannelUri::parse(&format!("udp://{addr}?driver={driver}&liveness=300ms")).unwrap(),
    )
    .unwrap();
    connect(&mut second, &mut sub);
    exchange(&mut second, &mut sub, 0, 1000);
    assert!(std::net::UdpSocket::bind(addr).is_err());
}

#[test]
fn socket_subscription_follows_its_sender() {
    follows_its_sender("socket");
}

#[test]
fn uring_subscription_follows_its_sender() {
    if uring_or_skip() {
        follows_its_sender("uring");
    }
}

/// An 8-aligned message: its first field is a `u64`.
#[repr(C)]
#[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::KnownLayout, zerocopy::Immutable)]
struct Order {
    id: u64,
}

impl crate::Message for Order {
    const TYPE_ID: u32 = 7;
}

/// Finding: with an MTU that is not a multiple of 8, receive slots were
/// spaced by the MTU, and most payloads lost their 8-byte alignment
/// (`Received::get` failed with `Misaligned`). Every payload must start
/// 8-aligned, whatever the MTU, with and without GRO, in both drivers.
fn payloads_stay_aligned(driver: &str) {
    for mtu in [1410, 8972] {
        for gro in ["off", "on"] {
            let (mut publ, mut sub) = pair(driver, &format!("&mtu={mtu}&gro={gro}&linger=1ms"));
            connect(&mut publ, &mut sub);
            let count = 20_000u64;
            let end = Instant::now() + Duration::from_secs(60);
            let (mut sent, mut got, mut misaligned) = (0u64, 0u64, 0u64);
            while got < count {
                assert!(Instant::now() < end, "stalled at {got}/{count}");
                while sent < count {
                    // Sizes that are multiples of 8 (the sender keeps
                    // records 8-aligned) in varied mixes.
                    let msg = [sent as u8; 256];
                    let len = 8 * (1 + (sent as usize * 7) % 32);
                    match publ.offer(7, &msg[..len]) {
                        Ok(_) => sent += 1,
                        Err(Error::BackPressured) => break,
                        Err(e) => panic!("offer: {e}"),
                    }
                }
                publ.is_connected();
                sub.poll(
                    |m| {
                        match m.get::<Order>() {
                            Ok(o) => assert_eq!(o.id as u8, m.payload()[0]),
                            Err(crate::ViewError::Misaligned) => misaligned += 1,
                            Err(e) => panic!("{e}"),
                        }
                        got += 1;
                    },
                    4096,
                )
                .unwrap();
            }
            assert_eq!(
                misaligned, 0,
                "{driver} mtu={mtu} gro={gro}: {misaligned} of {count} payloads misaligned"
            );
        }
    }
}

#[test]
fn socket_payloads_stay_aligned() {
    payloads_stay_aligned("socket");
}

#[test]
fn uring_payloads_stay_aligned() {
    if uring_or_skip() {
        payloads_stay_aligned("uring");
    }
}

/// Finding: a datagram larger than the receive buffer (a peer with a
/// larger MTU) was skipped without a trace. It is counted as dropped,
/// reason `oversized`, in both drivers. (With GRO a slot holds a whole
/// 64 KiB super-datagram: nothing is cut, and the protocol counts what it
/// cannot use.)
fn oversized_datagrams_are_counted(driver: &str) {
    for gro in ["off"] {
        let mut sub = UdpSubscription::open(
            ChannelUri::parse(&format!(
                "udp://127.0.0.1:0?driver={driver}&mtu=1408&gro={gro}"
            ))
            .unwrap(),
        )
        .unwrap();
        let to = sub.local_addr().unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Larger than the receive slot (1408 bytes).
        let big = vec![0x55u8; 4000];
        let end = Instant::now() + Duration::from_secs(10);
        let oversized = |sub: &UdpSubscription| {
            sub.counters()
                .drops_by_reason
                .iter()
                .find(|(n, _)| *n == "oversized")
                .map_or(0, |e| e.1)
        };
        sock.send_to(&big, to).unwrap();
        while oversized(&sub) == 0 {
            assert!(
                Instant::now() < end,
                "{driver} gro={gro}: no oversized drop counted: {:?}",
                sub.counters()
            );
            sub.poll(|_| panic!("delivered"), 16).unwrap();
        }
        assert_eq!(oversized(&sub), 1);
        assert!(sub.counters().dropped >= 1);
    }
}

#[test]
fn socket_oversized_datagrams_are_counted() {
    oversized_datagrams_are_counted("socket");
}

#[test]
fn uring_oversized_datagrams_are_counted() {
    if uring_or_skip() {
        oversized_datagrams_are_counted("uring");
    }
}

/// Finding 2, as a new user met it: two strategy processes on one host send
/// orders to one gateway that serves one session at a time
/// (`max_sessions=1`; by default it serves both, see `sessions_tests`). The
/// first one's stream arrives complete, exactly once and in order; the
/// second is refused, and says so: its offers and flush fail with
/// `SessionRefused`, never `Ok` for data that was not delivered.
#[test]
fn second_publisher_to_one_subscription_is_refused_and_told() {
    let (mut first, mut sub) = pair("socket", "&max_sessions=1");
    let addr = sub.local_addr().unwrap();
    connect(&mut first, &mut sub);
    let mut second =
        UdpPublication::open(ChannelUri::parse(&format!("udp://{addr}?driver=socket")).unwrap())
            .unwrap();
    let count = 20_000u64;
    let end = Instant::now() + Duration::from_secs(60);
    let (mut sent, mut next, mut refused) = (0u64, 0u64, 0u64);
    while next < count {
        assert!(
            Instant::now() < end,
            "stalled at {next}/{count}: {:?}",
            sub.counters()
        );
        if sent < count {
            match first.offer(7, &sent.to_le_bytes()) {
                Ok(_) => sent += 1,
                Err(Error::BackPressured) => {}
                Err(e) => panic!("first: {e}"),
            }
        } else {
            first.is_connected();
        }
        match second.offer(8, &u64::MAX.to_le_bytes()) {
            Err(Error::SessionRefused) => refused += 1,
            Err(Error::NotConnected) => {}
            r => panic!("second publisher's offer: {r:?}"),
        }
        sub.poll(
            |m| {
                assert_eq!(
                    m.type_id(),
                    7,
                    "the second publisher's message was delivered"
                );
                let seq = u64::from_le_bytes(m.payload().try_into().unwrap());
                assert_eq!(seq, next, "out of order or duplicate");
                next += 1;
            },
            64,
        )
        .unwrap();
    }
    flush(&mut first, &mut sub);
    assert!(refused > 0, "the second publisher was never told");
    assert!(matches!(
        second.flush(Duration::from_millis(10)),
        Err(Error::SessionRefused)
    ));
    assert!(!second.is_connected());
    assert_eq!(second.counters().sent, 0);
    let c = sub.counters();
    assert_eq!(c.received, count);
    let refusals = c
        .drops_by_reason
        .iter()
        .find(|(r, _)| *r == "session_refused")
        .map(|(_, n)| *n);
    assert!(refusals.unwrap_or(0) > 0, "{c:?}");
}

/// A publisher restarted at the same address (a fixed port) replaces its
/// old session, and the subscription's poll reports it once.
#[test]
fn replaced_session_is_reported_once_by_poll() {
    use crate::proto::{Config, Sender};
    let mut sub =
        UdpSubscription::open(ChannelUri::parse("udp://127.0.0.1:0?driver=socket").unwrap())
            .unwrap();
    let to = sub.local_addr().unwrap();
    // The publisher: the protocol sender on a socket of its own, fixed port.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_nonblocking(true).unwrap();
    let (mut buf, mut rbuf) = (vec![0u8; 2048], vec![0u8; 2048]);
    let end = Instant::now() + Duration::from_secs(10);
    let mut errors = Vec::new();
    let mut sessions = Vec::new();
    for seed in [1, 2] {
        // A new process: a new session from the same address.
        let mut sender = Sender::new(Config::default(), to, Instant::now(), seed).unwrap();
        sessions.push(sender.session_id());
        while !sender.is_connected() {
            assert!(Instant::now() < end, "no handshake within 10 s");
            while let Some(t) = sender.poll_transmit(Instant::now(), 1, &mut buf) {
                sock.send_to(&buf[..t.len], to).unwrap();
            }
            if let Err(e) = sub.poll(|_| {}, 16) {
                errors.push(e);
            }
            while let Ok((n, from)) = sock.recv_from(&mut rbuf) {
                sender.handle_datagram(Instant::now(), from, &rbuf[..n]);
            }
        }
    }
    for _ in 0..100 {
        if let Err(e) = sub.poll(|_| {}, 16) {
            errors.push(e);
        }
    }
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        matches!(errors[0], Error::SessionReplaced { old, new } if old == sessions[0] && new == sessions[1]),
        "{errors:?}"
    );
    assert_eq!(errors[0].code(), crate::code::SESSION_REPLACED);
}

/// Offers `payload` and polls until both ends have reported an error other
/// than `NotConnected` (a watchdog of 10 s names `what` was not reported);
/// an accepted offer or a delivered message fails the test. The errors are
/// the publication's and the subscription's.
fn errors_of_both_ends(
    publ: &mut UdpPublication,
    sub: &mut UdpSubscription,
    payload: &[u8],
    what: &str,
) -> (Option<Error>, Option<Error>) {
    let end = Instant::now() + Duration::from_secs(10);
    let (mut pub_err, mut sub_err) = (None, None);
    while pub_err.is_none() || sub_err.is_none() {
        assert!(
            Instant::now() < end,
            "no {what} reported within 10 s: {pub_err:?} {sub_err:?}"
        );
        match publ.offer(1, payload) {
            Ok(_) => panic!("an offer was accepted by a stream that cannot deliver it"),
            Err(Error::NotConnected) => {}
            Err(e) => pub_err = Some(e),
        }
        if let Err(e) = sub.poll(|_| panic!("delivered"), 16) {
            sub_err = Some(e);
        }
    }
    (pub_err, sub_err)
}

/// Finding 13: a publication with a larger `mtu` than its subscription
/// stalled silently. Now both ends report `MtuMismatch`, and nothing hangs.
#[test]
fn mtu_mismatch_is_reported_by_both_ends() {
    let sub = UdpSubscription::open(
        ChannelUri::parse("udp://127.0.0.1:0?driver=socket&mtu=1408").unwrap(),
    );
    let mut sub = sub.unwrap();
    let addr = sub.local_addr().unwrap();
    let mut publ = UdpPublication::open(
        ChannelUri::parse(&format!("udp://{addr}?driver=socket&mtu=9000")).unwrap(),
    )
    .unwrap();
    let (pub_err, sub_err) = errors_of_both_ends(&mut publ, &mut sub, &[0u8; 4000], "mtu mismatch");
    assert!(
        matches!(
            pub_err,
            Some(Error::MtuMismatch {
                local: 9000,
                remote: 1408
            })
        ),
        "{pub_err:?}"
    );
    assert!(
        matches!(
            sub_err,
            Some(Error::MtuMismatch {
                local: 1408,
                remote: 9000
            })
        ),
        "{sub_err:?}"
    );
    assert!(matches!(
        publ.flush(Duration::from_secs(1)),
        Err(Error::MtuMismatch { .. })
    ));
    assert_eq!(pub_err.unwrap().code(), crate::code::MTU_MISMATCH);
}

/// A private key file of `byte`s in a fresh directory (removed when the
/// returned `TempDir` is dropped).
fn key_file(tag: &str, byte: u8) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(&format!("hs-key-{tag}"));
    let p = dir.join("key");
    conduit_test_util::write_key_file(&p, &[byte; 32]).unwrap();
    (dir, p)
}

/// With the same key on both ends the stream is exact (every datagram
/// sealed, checksums off, frames within mtu - 32).
#[test]
fn keyed_stream_in_order() {
    let (_dir, k) = key_file("same", 5);
    stream("socket", &format!("&key={}", k.display()), 20_000, 64);
}

/// Keyed against unkeyed: both ends report KeyMismatch, nothing hangs.
#[test]
fn key_mismatch_is_reported_by_both_ends() {
    let (_dir, k) = key_file("one", 6);
    let mut sub =
        UdpSubscription::open(ChannelUri::parse("udp://127.0.0.1:0?driver=socket").unwrap())
            .unwrap();
    let addr = sub.local_addr().unwrap();
    let mut publ = UdpPublication::open(
        ChannelUri::parse(&format!("udp://{addr}?driver=socket&key={}", k.display())).unwrap(),
    )
    .unwrap();
    let (pub_err, sub_err) = errors_of_both_ends(&mut publ, &mut sub, b"secret", "key mismatch");
    assert!(matches!(pub_err, Some(Error::KeyMismatch)), "{pub_err:?}");
    assert!(matches!(sub_err, Some(Error::KeyMismatch)), "{sub_err:?}");
    assert!(matches!(
        publ.flush(Duration::from_millis(10)),
        Err(Error::KeyMismatch)
    ));
}

/// A publication is never told its data was delivered when it was not:
/// `flush` is `Ok` after the subscriber took everything (even if it closed
/// since), and an error when it closed without taking it (it was `Ok`).
#[test]
fn flush_is_ok_only_for_delivered_data() {
    for take in [true, false] {
        let (mut publ, mut sub) = pair("socket", "");
        connect(&mut publ, &mut sub);
        let end = Instant::now() + Duration::from_secs(10);
        let mut sent = 0u64;
        while sent < 10 {
            assert!(Instant::now() < end, "offers refused for 10 s");
            match publ.offer(1, &sent.to_le_bytes()) {
                Ok(_) => sent += 1,
                Err(Error::BackPressured) => {}
                Err(e) => panic!("offer: {e}"),
            }
        }
        if take {
            let mut got = 0;
            while got < 10 {
                assert!(Instant::now() < end, "not received within 10 s");
                got += sub.poll(|_| {}, 16).unwrap();
            }
        }
        // The subscriber closes (its close frame carries what it took).
        drop(sub);
        let r = publ.flush(Duration::from_secs(5));
        if take {
            r.unwrap();
        } else {
            assert!(matches!(r, Err(Error::NotConnected)), "{r:?}");
        }
    }
}

/// Claims are written in place in the sender's log and hold the core while they live: with a
/// progress thread running, a claim held across several of its periods is still the record
/// that is sent. A claim is one record at most; `offer_with` takes longer messages (copied).
#[test]
fn claims_hold_the_core_and_are_one_record() {
    let (mut publ, mut sub) = pair("socket", "&progress=thread&heartbeat=1ms&status=1ms");
    connect(&mut publ, &mut sub);
    let max = publ.max_claim_len();
    assert!(max >= 1024 && max < publ.max_message_len());
    match publ.try_claim(1, max + 1) {
        Err(Error::MessageTooLarge { len, max: m }) => assert_eq!((len, m), (max + 1, max)),
        r => panic!("a claim past one record: {r:?}"),
    }
    let mut last = 0;
    for seq in 0..20u64 {
        let mut c = publ.try_claim(2, 16).unwrap();
        assert_eq!(c.as_slice().len(), 16);
        c.as_mut_slice()[..8].copy_from_slice(&seq.to_le_bytes());
        if seq % 5 == 0 {
            // The thread steps every ~250 µs; it must not touch the held core.
            std::thread::sleep(Duration::from_millis(3));
        }
        c.as_mut_slice()[8..].copy_from_slice(&(!seq).to_le_bytes());
        let pos = c.commit();
        assert!(
            pos > last,
            "commit returns the stream position after the message"
        );
        last = pos;
    }
    drop(publ.try_claim(2, 16).unwrap()); // aborted: nothing is sent
    let big = vec![7u8; max + 100];
    let pos = publ
        .offer_with(3, big.len(), |b| b.copy_from_slice(&big))
        .unwrap();
    assert!(pos > last);
    let end = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < 21 {
        assert!(Instant::now() < end, "got {} of 21", got.len());
        sub.poll(|m| got.push((m.type_id(), m.payload().to_vec())), 64)
            .unwrap();
    }
    for (seq, (ty, p)) in got[..20].iter().enumerate() {
        let seq = seq as u64;
        assert_eq!(*ty, 2);
        assert_eq!(p[..8], seq.to_le_bytes());
        assert_eq!(p[8..], (!seq).to_le_bytes());
    }
    assert_eq!(got[20], (3, big));
    flush(&mut publ, &mut sub);
}

/// A connected pair whose publication has a progress thread stepping every 20 µs.
fn threaded_pair() -> (UdpPublication, UdpSubscription) {
    let (mut publ, mut sub) = pair(
        "socket",
        "&progress=thread&linger=20us&heartbeat=1ms&status=1ms",
    );
    connect(&mut publ, &mut sub);
    (publ, sub)
}

/// A claim keeps the core locked and is `Send`: claims made on one thread and filled and
/// committed on another, across many periods of the progress thread, interleaved with
/// offers, arrive whole and in order.
#[test]
fn claims_committed_on_another_thread_keep_their_room() {
    let _w = watchdog("claims_committed_on_another_thread_keep_their_room", 120);
    let (mut publ, mut sub) = threaded_pair();
    let n = 200u64;
    let mut got = Vec::new();
    let take = |sub: &mut UdpSubscription, got: &mut Vec<(u32, Vec<u8>)>| {
        sub.poll(|m| got.push((m.type_id(), m.payload().to_vec())), 64)
            .unwrap();
    };
    for seq in 0..n {
        let claim = loop {
            match publ.try_claim(1, 16) {
                Ok(c) => break c,
                Err(Error::BackPressured) => {
                    take(&mut sub, &mut got);
                }
                Err(e) => panic!("claim {seq}: {e}"),
            }
        };
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut claim = claim;
                claim.as_mut_slice()[..8].copy_from_slice(&seq.to_le_bytes());
                if seq % 50 == 0 {
                    // Many periods of the thread: it must skip them.
                    std::thread::sleep(Duration::from_millis(2));
                }
                claim.as_mut_slice()[8..].copy_from_slice(&(!seq).to_le_bytes());
                claim.commit();
            });
        });
        while let Err(e) = publ.offer(2, &seq.to_le_bytes()) {
            assert!(matches!(e, Error::BackPressured), "offer {seq}: {e}");
            take(&mut sub, &mut got);
        }
    }
    let end = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 * n as usize {
        assert!(Instant::now() < end, "got {} of {}", got.len(), 2 * n);
        take(&mut sub, &mut got);
    }
    for (i, (ty, p)) in got.iter().enumerate() {
        let seq = i as u64 / 2;
        if i % 2 == 0 {
            assert_eq!(*ty, 1);
            assert_eq!(p[..8], seq.to_le_bytes());
            assert_eq!(p[8..], (!seq).to_le_bytes());
        } else {
            assert_eq!((*ty, &p[..]), (2, &seq.to_le_bytes()[..]));
        }
    }
}

/// A leaked claim leaves the core locked: the next call panics with a clear message
/// (rather than waiting for the lock forever) and the publication's drop returns (its
/// progress thread never waits for the lock either).
#[test]
fn a_leaked_claim_panics_the_next_call_and_drop_returns() {
    let _w = watchdog("a_leaked_claim_panics_the_next_call_and_drop_returns", 120);
    let (mut publ, _sub) = threaded_pair();
    std::mem::forget(publ.try_claim(1, 16).unwrap());
    // Periods of the thread pass with the core locked.
    std::thread::sleep(Duration::from_millis(5));
    for call in 0..3 {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match call {
            0 => drop(publ.offer(1, &[0; 16])),
            1 => drop(publ.try_claim(1, 16)),
            _ => drop(publ.counters()),
        }));
        let panic = r.expect_err("a call after a leaked claim must panic");
        let msg = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        assert!(msg.contains("claim was leaked"), "call {call}: {msg:?}");
    }
    drop(publ);
}

#[test]
fn tx_packet_is_refused_where_it_cannot_apply() {
    let _w = watchdog("tx_packet_is_refused_where_it_cannot_apply", 30);
    let open_sub = |s: &str| UdpSubscription::open(ChannelUri::parse(s).unwrap());
    match open_sub("udp://239.1.2.3:4000?iface=127.0.0.1&tx=packet") {
        Err(Error::InvalidUri { reason, .. }) => assert!(reason.contains("tx=packet"), "{reason}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a subscription took tx=packet"),
    }
    let open_pub = |s: &str| UdpPublication::open(ChannelUri::parse(s).unwrap());
    match open_pub("udp://239.1.2.3:4000?iface=127.0.0.1&tx=packet&driver=uring") {
        Err(Error::Io(e)) => assert!(e.to_string().contains("tx=packet"), "{e}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("io_uring took tx=packet"),
    }
    // Bound elsewhere than the interface the datagrams say they come from:
    // the receivers' answers would not reach the publication.
    match open_pub("udp://239.1.2.3:4000?iface=127.0.0.1&tx=packet&bind=127.0.0.2:0") {
        Err(Error::Io(e)) => assert!(e.to_string().contains("bind="), "{e}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("tx=packet took a bind address the receivers do not answer"),
    }
}
