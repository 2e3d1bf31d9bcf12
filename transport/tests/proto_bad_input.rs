//! Every malformed or unwelcome datagram is dropped with a counter for its reason, and the
//! stream goes on undisturbed. Version and session mismatches are explicit.

mod proto_common;

use std::net::SocketAddr;
use std::time::Duration;

use conduit::proto::frame::{
    self, DataHeader, FrameKind, NakHeader, NakRange, RecordHeader, Setup, SetupReply,
};
use conduit::proto::sim::LinkConfig;
use conduit::proto::{Config, DropReason, Event, OfferError, Receiver, Sender};
use proto_common::{Gen, Pair, RX, TX};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

/// A connected pair that has streamed `n` messages; also returns a captured data datagram.
fn connected(n: u64, cfg: Config) -> (Pair, Gen, Vec<u8>) {
    let mut pair = Pair::new(
        1,
        cfg.clone(),
        cfg,
        LinkConfig::perfect(Duration::from_micros(10)),
    );
    let mut gen = Gen::new(1, 0, n, false);
    while pair.checker.delivered < n {
        gen.offer(&mut pair.tx, 64).unwrap();
        pair.pump().unwrap();
        assert!(pair.advance(None));
        assert!(pair.elapsed() < Duration::from_secs(10));
    }
    assert!(pair.checker.error.is_none());
    // Capture a data datagram by offering one more message and intercepting it.
    gen.total += 1;
    gen.offer(&mut pair.tx, 1).unwrap();
    let mut buf = vec![0u8; 2048];
    let mut captured = None;
    while let Some(t) = pair.tx.poll_transmit(pair.now, &mut buf) {
        // Keyed, the kind is sealed: the data frame is the only one this long.
        let keyed_data = buf[0] == conduit::proto::crypto::MAGIC && t.len >= 80;
        if buf[1] == FrameKind::DATA.0 || keyed_data {
            captured = Some(buf[..t.len].to_vec());
        }
        pair.net.send(pair.now, TX, t.destination, &buf[..t.len]);
    }
    settle(&mut pair);
    (pair, gen, captured.expect("a data datagram"))
}

/// Runs the pair until nothing is in flight.
fn settle(pair: &mut Pair) {
    let until = pair.now + Duration::from_millis(5);
    while pair.now < until {
        pair.pump().unwrap();
        assert!(pair.advance(Some(until)));
    }
}

fn to_rx(pair: &mut Pair, from: SocketAddr, bytes: &[u8]) {
    let checker = &mut pair.checker;
    pair.rx
        .handle_datagram(pair.now, from, bytes, |t, p| checker.check(t, p));
}

fn sealed(mut b: Vec<u8>) -> Vec<u8> {
    frame::seal(&mut b, true);
    b
}

fn assert_rx_drop(pair: &mut Pair, from: SocketAddr, bytes: &[u8], reason: DropReason) {
    let before = pair.rx.counters().dropped(reason);
    let delivered = pair.checker.delivered;
    to_rx(pair, from, bytes);
    assert_eq!(
        pair.rx.counters().dropped(reason),
        before + 1,
        "{reason:?} not counted"
    );
    assert_eq!(
        pair.checker.delivered, delivered,
        "{reason:?}: something was delivered"
    );
}

fn assert_tx_drop(pair: &mut Pair, from: SocketAddr, bytes: &[u8], reason: DropReason) {
    let before = pair.tx.counters().dropped(reason);
    pair.tx.handle_datagram(pair.now, from, bytes);
    assert_eq!(
        pair.tx.counters().dropped(reason),
        before + 1,
        "{reason:?} not counted"
    );
}

/// The stream still works after the abuse.
fn still_streams(pair: &mut Pair, gen: &mut Gen) {
    let target = pair.checker.delivered + 50;
    gen.total += 50;
    while pair.checker.delivered < target {
        gen.offer(&mut pair.tx, 64).unwrap();
        pair.pump().unwrap();
        assert!(pair.advance(None));
        assert!(pair.checker.error.is_none(), "{:?}", pair.checker.error);
    }
}

#[test]
fn receiver_drops_each_bad_datagram_with_its_reason() {
    let (mut p, mut gen, data) = connected(100, Config::default());

    assert_rx_drop(&mut p, TX, &data[..5], DropReason::Truncated);
    assert_rx_drop(
        &mut p,
        TX,
        &sealed(data[..20].to_vec()),
        DropReason::Truncated,
    );
    // Replay of data already delivered.
    assert_rx_drop(&mut p, TX, &data, DropReason::Duplicate);

    let mut d = data.clone();
    d[30] ^= 0x40;
    assert_rx_drop(&mut p, TX, &d, DropReason::Checksum);

    let mut d = data.clone();
    d[0] = 9;
    assert_rx_drop(&mut p, TX, &sealed(d), DropReason::BadVersion);

    let mut d = data.clone();
    d[1] = 99;
    assert_rx_drop(&mut p, TX, &sealed(d), DropReason::UnknownType);

    let mut d = data.clone();
    d[4] ^= 1;
    assert_rx_drop(&mut p, TX, &sealed(d), DropReason::WrongSession);

    let mut d = data.clone();
    d[8] ^= 1;
    assert_rx_drop(&mut p, TX, &sealed(d), DropReason::WrongStream);

    let stranger: SocketAddr = "10.9.9.9:1".parse().unwrap();
    assert_rx_drop(&mut p, stranger, &data, DropReason::WrongSource);

    // A record claiming more bytes than the datagram holds.
    let (hdr, _) = DataHeader::read_from_prefix(&data).unwrap();
    let pos = p.rx.position();
    let mut d = DataHeader {
        position: U64::new(pos),
        ..hdr
    }
    .as_bytes()
    .to_vec();
    let rec = RecordHeader {
        len: U16::new(500),
        flags: frame::REC_BEGIN | frame::REC_END,
        reserved: 0,
        type_id: U32::new(1),
    };
    d.extend_from_slice(rec.as_bytes());
    d.extend_from_slice(&[0u8; 16]);
    assert_rx_drop(&mut p, TX, &sealed(d.clone()), DropReason::BadLength);
    // Unknown record flags.
    let mut e = d.clone();
    e[24 + 2] = 0x01;
    e[24] = 8;
    e[25] = 0;
    e.truncate(24 + 16);
    assert_rx_drop(&mut p, TX, &sealed(e), DropReason::BadLength);
    // A data frame with no records.
    assert_rx_drop(&mut p, TX, &sealed(d[..24].to_vec()), DropReason::BadLength);
    // Misaligned position.
    let mut e = d.clone();
    e[16] |= 3;
    assert_rx_drop(&mut p, TX, &sealed(e), DropReason::BadLength);

    // Far beyond the window.
    let far = DataHeader {
        position: U64::new(pos + (64 << 20)),
        ..hdr
    };
    let mut e = far.as_bytes().to_vec();
    e.extend_from_slice(&data[24..]);
    assert_rx_drop(&mut p, TX, &sealed(e), DropReason::OutOfWindow);

    // A frame kind the receiver never gets.
    let mut e = data[..40].to_vec();
    e[1] = FrameKind::NAK.0;
    assert_rx_drop(&mut p, TX, &sealed(e), DropReason::Unexpected);

    still_streams(&mut p, &mut gen);
    assert!(p.rx.counters().dropped_total() >= 15);
    let names: Vec<_> = p.rx.counters().drops_by_reason().map(|(n, _)| n).collect();
    assert!(names.contains(&"wrong_session") && names.contains(&"checksum"));
}

#[test]
fn sender_drops_each_bad_datagram_with_its_reason() {
    let (mut p, mut gen, data) = connected(100, Config::default());
    let (hdr, _) = DataHeader::read_from_prefix(&data).unwrap();
    let nak = |ranges: &[(u64, u64)], count: u16| {
        let h = NakHeader {
            header: frame::header(
                hdr.header.version,
                FrameKind::NAK,
                0,
                hdr.header.session_id.get(),
                1,
            ),
            count: U16::new(count),
            reserved: U16::new(0),
            reserved2: U32::new(0),
        };
        let mut b = h.as_bytes().to_vec();
        for &(f, t) in ranges {
            b.extend_from_slice(
                NakRange {
                    from: U64::new(f),
                    to: U64::new(t),
                }
                .as_bytes(),
            );
        }
        sealed(b)
    };
    assert_tx_drop(&mut p, RX, &nak(&[], 0), DropReason::BadLength);
    assert_tx_drop(&mut p, RX, &nak(&[(0, 8)], 1000), DropReason::BadLength);
    assert_tx_drop(&mut p, RX, &nak(&[(0, 8)], 3), DropReason::Truncated);
    let sent = p.tx.position();
    assert_tx_drop(
        &mut p,
        RX,
        &nak(&[(sent + 64, sent + 128)], 1),
        DropReason::OutOfWindow,
    );
    // Positions that are not record boundaries: send unacknowledged data first.
    let base = p.tx.acked_position();
    gen.total += 3;
    assert_eq!(gen.offer(&mut p.tx, 3).unwrap(), 3);
    let mut buf = vec![0u8; 2048];
    while p.tx.poll_transmit(p.now, &mut buf).is_some() {}
    assert_tx_drop(
        &mut p,
        RX,
        &nak(&[(base + 4, base + 64)], 1),
        DropReason::BadLength,
    );
    assert_tx_drop(
        &mut p,
        RX,
        &nak(&[(base + 16, base + 64)], 1),
        DropReason::BadLength,
    );
    assert_tx_drop(
        &mut p,
        RX,
        &nak(&[(base + 64, base + 8)], 1),
        DropReason::BadLength,
    );
    let stranger: SocketAddr = "10.9.9.9:1".parse().unwrap();
    assert_tx_drop(
        &mut p,
        stranger,
        &nak(&[(0, 8)], 1),
        DropReason::WrongSource,
    );
    let mut w = nak(&[(0, 8)], 1);
    w[4] ^= 0xff;
    assert_tx_drop(&mut p, RX, &sealed(w), DropReason::WrongSession);
    assert_tx_drop(&mut p, RX, &data, DropReason::Unexpected);
    assert_tx_drop(&mut p, RX, &[1, 2, 3], DropReason::Truncated);
    still_streams(&mut p, &mut gen);
}

#[test]
fn repeated_naks_are_rate_limited() {
    let cfg = Config::default();
    let mut link = LinkConfig::perfect(Duration::from_millis(1));
    link.loss = 0.0;
    let mut pair = Pair::new(2, cfg.clone(), cfg, link);
    while !pair.tx.is_connected() {
        pair.pump().unwrap();
        assert!(pair.advance(None));
    }
    let mut gen = Gen::new(2, 0, 200, false);
    gen.offer(&mut pair.tx, 200).unwrap();
    let mut buf = vec![0u8; 2048];
    let mut first = None;
    while let Some(t) = pair.tx.poll_transmit(pair.now, &mut buf) {
        if buf[1] == FrameKind::DATA.0 && first.is_none() {
            first = Some(DataHeader::read_from_prefix(&buf[..t.len]).unwrap().0);
        }
    }
    let h = first.unwrap();
    let n = NakHeader {
        header: frame::header(
            h.header.version,
            FrameKind::NAK,
            0,
            h.header.session_id.get(),
            1,
        ),
        count: U16::new(1),
        reserved: U16::new(0),
        reserved2: U32::new(0),
    };
    let mut b = n.as_bytes().to_vec();
    b.extend_from_slice(
        NakRange {
            from: h.position,
            to: U64::new(h.position.get() + 64),
        }
        .as_bytes(),
    );
    let b = sealed(b);
    for _ in 0..100 {
        pair.tx.handle_datagram(pair.now, RX, &b);
        while pair.tx.poll_transmit(pair.now, &mut buf).is_some() {}
    }
    assert_eq!(
        pair.tx.counters().retransmitted,
        1,
        "a NAK storm caused a retransmission storm"
    );
    assert_eq!(pair.tx.counters().dropped(DropReason::NakSuppressed), 99);
}

#[test]
fn version_mismatch_is_explicit_on_both_sides() {
    let tx_cfg = Config {
        versions: (2, 3),
        ..Config::default()
    };
    let rx_cfg = Config {
        versions: (1, 1),
        ..Config::default()
    };
    let mut p = Pair::new(
        5,
        tx_cfg,
        rx_cfg,
        LinkConfig::perfect(Duration::from_micros(10)),
    );
    for _ in 0..100 {
        p.pump().unwrap();
        if !p.advance(None) {
            break;
        }
    }
    assert!(
        p.tx_events.contains(&Event::VersionMismatch {
            local: (2, 3),
            remote: (1, 1)
        }),
        "{:?}",
        p.tx_events
    );
    assert!(
        p.rx_events.contains(&Event::VersionMismatch {
            local: (1, 1),
            remote: (2, 3)
        }),
        "{:?}",
        p.rx_events
    );
    assert_eq!(p.tx.offer(1, b"x"), Err(OfferError::Failed));
    assert!(p.rx.counters().dropped(DropReason::BadVersion) >= 1);

    // Overlapping ranges pick the highest common version.
    let tx_cfg = Config {
        versions: (1, 3),
        ..Config::default()
    };
    let rx_cfg = Config {
        versions: (2, 5),
        ..Config::default()
    };
    let mut p = Pair::new(
        6,
        tx_cfg,
        rx_cfg,
        LinkConfig::perfect(Duration::from_micros(10)),
    );
    while !p.tx.is_connected() {
        p.pump().unwrap();
        assert!(p.advance(None));
    }
    p.pump().unwrap();
    assert!(p
        .tx_events
        .iter()
        .any(|e| matches!(e, Event::Connected { version: 3, .. })));
    assert!(p
        .rx_events
        .iter()
        .any(|e| matches!(e, Event::Connected { version: 3, .. })));
}

/// The first setup `tx` sends (no cookie yet).
fn first_setup(tx: &mut Sender, now: std::time::Instant) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let t = tx.poll_transmit(now, &mut buf).expect("a setup");
    assert_eq!(buf[1], FrameKind::SETUP.0);
    buf[..t.len].to_vec()
}

/// Takes what the receiver sends: returns its datagram to `to`, the rest goes on the network.
fn rx_reply_to(pair: &mut Pair, to: SocketAddr) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 2048];
    let mut found = None;
    while let Some(t) = pair.rx.poll_transmit(pair.now, &mut buf) {
        if t.destination == to {
            found = Some(buf[..t.len].to_vec());
        } else {
            pair.net.send(pair.now, RX, t.destination, &buf[..t.len]);
        }
    }
    found
}

fn reply_flags(reply: &[u8]) -> u16 {
    SetupReply::read_from_prefix(reply)
        .unwrap()
        .0
        .header
        .flags
        .get()
}

/// `setup` from `from` through the receiver's cookie challenge: the setup again, with the
/// cookie echoed, as the sender sends it.
fn with_cookie(pair: &mut Pair, from: SocketAddr, setup: &[u8]) -> Vec<u8> {
    to_rx(pair, from, setup);
    let reply = rx_reply_to(pair, from).expect("a challenge");
    let (r, _) = SetupReply::read_from_prefix(&reply).unwrap();
    assert_eq!(r.header.flags.get(), frame::FLAG_RETRY);
    let (mut s, _) = Setup::read_from_prefix(setup).unwrap();
    s.cookie = r.cookie;
    sealed(s.as_bytes().to_vec())
}

/// Every field of a setup is checked, and nothing about the live session changes: a setup
/// cut to the version 1 length, a bad join position, a forged cookie, a cookie proven for
/// another address, a newcomer while the session is live (refused: finding 2), a larger MTU
/// (rejected: finding 13).
#[test]
fn receiver_checks_every_setup_field() {
    let (mut p, mut gen, _) = connected(100, Config::default());
    let live = p.rx.session_id();
    // Same host as the live sender, another port.
    let other: SocketAddr = "10.0.0.1:5001".parse().unwrap();
    let mut intruder = Sender::new(Config::default(), RX, p.now, 999).unwrap();
    let setup = first_setup(&mut intruder, p.now);

    assert_rx_drop(
        &mut p,
        other,
        &sealed(setup[..frame::SETUP_V1_LEN].to_vec()),
        DropReason::Truncated,
    );
    let (s, _) = Setup::read_from_prefix(&setup).unwrap();
    for join in [12, 1 << 63, u64::MAX - 7] {
        let bad = Setup {
            join_position: U64::new(join),
            ..s
        };
        assert_rx_drop(
            &mut p,
            other,
            &sealed(bad.as_bytes().to_vec()),
            DropReason::BadLength,
        );
    }
    // A version 1 peer (40-byte setup, versions 1..=1) gets a rejection it can read.
    let mut v1 = s.as_bytes()[..frame::SETUP_V1_LEN].to_vec();
    v1[0] = 1;
    v1[16..20].copy_from_slice(&[1, 0, 1, 0]);
    assert_rx_drop(&mut p, other, &sealed(v1), DropReason::BadVersion);
    let reply = rx_reply_to(&mut p, other).expect("a rejection");
    assert_eq!(reply_flags(&reply), frame::FLAG_REJECT);
    let (r, _) = frame::SetupReplyPrefix::read_from_prefix(&reply).unwrap();
    assert_eq!((r.min_version.get(), r.max_version.get()), (2, 2));
    // A first setup is challenged; nothing is kept, nothing counted as a drop.
    let drops = p.rx.counters().dropped_total();
    to_rx(&mut p, other, &setup);
    assert_eq!(p.rx.counters().dropped_total(), drops);
    let reply = rx_reply_to(&mut p, other).expect("a challenge");
    assert_eq!(reply_flags(&reply), frame::FLAG_RETRY);
    // A cookie the receiver did not issue: challenged again, counted.
    let forged = Setup {
        cookie: [0x55; frame::COOKIE_LEN],
        ..s
    };
    assert_rx_drop(
        &mut p,
        other,
        &sealed(forged.as_bytes().to_vec()),
        DropReason::BadCookie,
    );
    assert_eq!(
        reply_flags(&rx_reply_to(&mut p, other).unwrap()),
        frame::FLAG_RETRY
    );
    // A cookie proven at one address does not work from another (a spoofer that cannot
    // receive there).
    let proven = with_cookie(&mut p, other, &setup);
    assert_rx_drop(
        &mut p,
        "10.0.0.1:5002".parse().unwrap(),
        &proven,
        DropReason::BadCookie,
    );
    let _ = rx_reply_to(&mut p, "10.0.0.1:5002".parse().unwrap());
    // Proven, but the live session owns the receiver: refused, nothing changes.
    assert_rx_drop(&mut p, other, &proven, DropReason::SessionRefused);
    assert_eq!(
        reply_flags(&rx_reply_to(&mut p, other).unwrap()),
        frame::FLAG_BUSY
    );
    assert_eq!(p.rx.session_id(), live);
    assert!(p.rx.is_connected());
    // An expired cookie (more than two time buckets old) is challenged again.
    let later = p.now + Duration::from_secs(2);
    let before = p.rx.counters().dropped(DropReason::BadCookie);
    p.rx.handle_datagram(later, other, &proven, |_, _| panic!("delivered"));
    assert_eq!(p.rx.counters().dropped(DropReason::BadCookie), before + 1);
    let _ = rx_reply_to(&mut p, other);

    // A sender whose datagrams are larger than the receiver's MTU: rejected with the
    // receiver's MTU, reported once, counted.
    let big_cfg = Config {
        mtu: 9000,
        ..Config::default()
    };
    let mut big = Sender::new(big_cfg, RX, p.now, 1234).unwrap();
    let setup = first_setup(&mut big, p.now);
    let proven = with_cookie(&mut p, other, &setup);
    for _ in 0..2 {
        assert_rx_drop(&mut p, other, &proven, DropReason::MtuMismatch);
        let reply = rx_reply_to(&mut p, other).unwrap();
        assert_eq!(reply_flags(&reply), frame::FLAG_REJECT | frame::FLAG_MTU);
        assert_eq!(
            SetupReply::read_from_prefix(&reply).unwrap().0.mtu.get(),
            1408
        );
    }
    p.pump().unwrap();
    let mtu_events: Vec<_> = p
        .rx_events
        .iter()
        .filter(|e| matches!(e, Event::MtuMismatch { .. }))
        .collect();
    assert_eq!(
        mtu_events,
        [&Event::MtuMismatch {
            local: 1408,
            remote: 9000
        }]
    );
    assert_eq!(p.rx.session_id(), live);
    assert!(!p
        .rx_events
        .iter()
        .any(|e| matches!(e, Event::SessionReplaced { .. })));
    still_streams(&mut p, &mut gen);
}

/// A setup reply builds on the sender's setup; each flag has its effect and each bad one
/// its counter.
#[test]
fn sender_checks_every_reply_field() {
    let now = std::time::Instant::now();
    let new = || Sender::new(Config::default(), RX, now, 5).unwrap();
    let mut tx = new();
    let setup = first_setup(&mut tx, now);
    let (s, _) = Setup::read_from_prefix(&setup).unwrap();
    assert_eq!(s.cookie, [0; frame::COOKIE_LEN]);
    let reply = |flags: u16, version: u16| SetupReply {
        header: frame::header(
            version as u8,
            FrameKind::SETUP_REPLY,
            flags,
            s.header.session_id.get(),
            1,
        ),
        version: U16::new(version),
        min_version: U16::new(2),
        max_version: U16::new(2),
        mtu: U16::new(1200),
        receiver_id: U32::new(77),
        window: U32::new(1 << 18),
        position: s.join_position,
        nonce: [3; frame::NONCE_LEN],
        cookie: [9; frame::COOKIE_LEN],
    };
    let mut buf = vec![0u8; 2048];

    // A challenge cut short.
    let retry = sealed(reply(frame::FLAG_RETRY, 2).as_bytes().to_vec());
    let before = tx.counters().dropped(DropReason::Truncated);
    tx.handle_datagram(now, RX, &sealed(retry[..40].to_vec()));
    assert_eq!(tx.counters().dropped(DropReason::Truncated), before + 1);
    // A challenge: the setup goes again at once, with the cookie.
    tx.handle_datagram(now, RX, &retry);
    let t = tx
        .poll_transmit(now, &mut buf)
        .expect("the setup again, at once");
    let (again, _) = Setup::read_from_prefix(&buf[..t.len]).unwrap();
    assert_eq!(again.cookie, [9; frame::COOKIE_LEN]);
    assert_eq!(again.nonce, s.nonce);
    // Busy: refused, reported once, offers say so; setups back off.
    for _ in 0..3 {
        tx.handle_datagram(
            now,
            RX,
            &sealed(reply(frame::FLAG_BUSY, 2).as_bytes().to_vec()),
        );
    }
    assert!(tx.is_refused());
    assert_eq!(tx.offer(1, b"x"), Err(OfferError::Refused));
    assert!(
        tx.poll_transmit(now, &mut buf).is_none(),
        "a refused setup backs off"
    );
    let mut events = Vec::new();
    while let Some(e) = tx.poll_event() {
        events.push(e);
    }
    assert_eq!(events, [Event::SessionRefused]);
    let later = now + Duration::from_millis(100);
    assert!(
        tx.poll_transmit(later, &mut buf).is_some(),
        "a refused sender keeps asking"
    );
    // Accepted at last: connected, not refused, the receiver's nonce kept.
    tx.handle_datagram(later, RX, &sealed(reply(0, 2).as_bytes().to_vec()));
    assert!(tx.is_connected() && !tx.is_refused());
    assert_eq!(tx.nonces().1, [3; frame::NONCE_LEN]);
    assert!(tx.offer(1, b"x").is_ok());
    // A reply once connected is a duplicate.
    let before = tx.counters().dropped(DropReason::Duplicate);
    tx.handle_datagram(later, RX, &sealed(reply(0, 2).as_bytes().to_vec()));
    assert_eq!(tx.counters().dropped(DropReason::Duplicate), before + 1);

    // A version 1 receiver's rejection (40 bytes, versions 1..=1): a clear mismatch.
    let mut tx = new();
    let _ = first_setup(&mut tx, now);
    let mut v1 = reply(frame::FLAG_REJECT, 0).as_bytes()[..frame::SETUP_V1_LEN].to_vec();
    v1[18..22].copy_from_slice(&[1, 0, 1, 0]);
    tx.handle_datagram(now, RX, &sealed(v1));
    assert_eq!(tx.offer(1, b"x"), Err(OfferError::Failed));
    assert_eq!(
        tx.poll_event(),
        Some(Event::VersionMismatch {
            local: (2, 2),
            remote: (1, 1)
        })
    );

    // MTU rejected: the sender stops and says why.
    let mut tx = new();
    let _ = first_setup(&mut tx, now);
    tx.handle_datagram(
        now,
        RX,
        &sealed(
            reply(frame::FLAG_REJECT | frame::FLAG_MTU, 0)
                .as_bytes()
                .to_vec(),
        ),
    );
    assert_eq!(tx.offer(1, b"x"), Err(OfferError::Failed));
    assert_eq!(
        tx.poll_event(),
        Some(Event::MtuMismatch {
            local: 1408,
            remote: 1200
        })
    );
}

/// Finding 2: a second publisher on the live publisher's host, another port, starts mid-stream.
/// The live stream still arrives complete, exactly once and in order; the newcomer is refused
/// and told so, and takes over once the live publisher is gone.
#[test]
fn a_second_publisher_never_disturbs_the_live_stream() {
    let _watchdog = proto_common::watchdog("a_second_publisher", 120);
    let cfg = Config::default();
    let mut p = Pair::new(
        11,
        cfg.clone(),
        cfg.clone(),
        LinkConfig::perfect(Duration::from_micros(20)),
    );
    let total = 3000;
    let mut gen = Gen::new(11, 0, total, false);
    let other: SocketAddr = "10.0.0.1:5001".parse().unwrap();
    let mut added = false;
    let mut newcomer_offers = 0u64;
    while !(gen.next == total && p.checker.next == total && p.tx.is_flushed()) {
        if !added && p.checker.delivered >= 500 {
            p.add_sender(other, cfg.clone(), 4242);
            added = true;
        }
        gen.offer(&mut p.tx, 64).unwrap();
        if let Some(o) = p.others.first_mut() {
            let mut msg = vec![0u8; 64];
            proto_common::fill(&mut msg, newcomer_offers, 7);
            match o.tx.offer(proto_common::type_of(newcomer_offers, 7), &msg) {
                Ok(_) => newcomer_offers += 1,
                Err(OfferError::NotConnected | OfferError::Refused) => {}
                Err(e) => panic!("newcomer: {e:?}"),
            }
        }
        p.pump().unwrap();
        assert!(p.advance(None));
        assert!(p.checker.error.is_none(), "{:?}", p.checker.error);
        assert!(p.elapsed() < Duration::from_secs(60), "stalled");
    }
    assert_eq!(p.checker.delivered, total);
    assert_eq!(newcomer_offers, 0, "the newcomer's offers were accepted");
    assert_eq!(p.rx.session_id(), Some(p.tx.session_id()));
    let o = &mut p.others[0];
    assert!(o.events.contains(&Event::SessionRefused), "{:?}", o.events);
    assert_eq!(o.tx.offer(1, b"x"), Err(OfferError::Refused));
    assert!(p.rx.counters().dropped(DropReason::SessionRefused) >= 1);
    assert!(!p
        .rx_events
        .iter()
        .any(|e| matches!(e, Event::SessionReplaced { .. })));

    // The live publisher dies without a word: the newcomer takes over after the liveness
    // timeout, and the receiver reports the replacement.
    p.tx = Sender::new(cfg, "10.9.9.9:1".parse().unwrap(), p.now, 5).unwrap();
    let end = p.now + Duration::from_secs(5);
    while !p.others[0].tx.is_connected() {
        p.pump().unwrap();
        assert!(p.advance(Some(end)));
        assert!(p.now < end, "the newcomer never took over");
    }
    p.pump().unwrap();
    let new = p.others[0].tx.session_id();
    assert!(p
        .rx_events
        .iter()
        .any(|e| matches!(e, Event::SessionReplaced { new: n, .. } if *n == new)));
}

/// Real endpoints draw session ids, positions and secrets from the OS: the same seed gives
/// different values. Seeded ones stay reproducible.
#[test]
fn real_endpoints_are_unpredictable_seeded_ones_reproducible() {
    let now = std::time::Instant::now();
    let cfg = Config::default();
    let a = Sender::with_os_random(cfg.clone(), RX, now, 1).unwrap();
    let b = Sender::with_os_random(cfg.clone(), RX, now, 1).unwrap();
    assert_ne!(a.session_id(), b.session_id());
    assert_ne!(a.position(), b.position());
    assert_ne!(a.nonces().0, b.nonces().0);
    for x in [&a, &b] {
        assert!(x.position() % 8 == 0 && x.position() < 1 << 62);
    }
    let r1 = Receiver::with_os_random(cfg.clone(), now, 1).unwrap();
    let r2 = Receiver::with_os_random(cfg.clone(), now, 1).unwrap();
    assert_ne!(r1.receiver_id(), r2.receiver_id());

    let c = Sender::new(cfg.clone(), RX, now, 1).unwrap();
    let d = Sender::new(cfg, RX, now, 1).unwrap();
    assert_eq!(
        (c.session_id(), c.position(), c.nonces().0),
        (d.session_id(), d.position(), d.nonces().0)
    );
}

#[test]
fn oversized_message_is_dropped_and_stream_goes_on() {
    let tx_cfg = Config::default();
    let rx_cfg = Config {
        max_message_len: 4096,
        ..Config::default()
    };
    let mut p = Pair::new(
        7,
        tx_cfg,
        rx_cfg,
        LinkConfig::perfect(Duration::from_micros(10)),
    );
    while !p.tx.is_connected() {
        p.pump().unwrap();
        assert!(p.advance(None));
    }
    let mut big = vec![0u8; 10_000];
    proto_common::fill(&mut big, 0, 0);
    p.tx.offer(proto_common::type_of(0, 0), &big).unwrap();
    settle(&mut p);
    assert_eq!(p.rx.counters().dropped(DropReason::MessageTooLarge), 1);
    assert_eq!(p.checker.delivered, 0);
    // The next message (seq 0 again from the checker's view) arrives.
    let mut small = vec![0u8; 100];
    proto_common::fill(&mut small, 0, 0);
    p.tx.offer(proto_common::type_of(0, 0), &small).unwrap();
    settle(&mut p);
    assert_eq!(p.checker.delivered, 1);
}

#[test]
fn config_validation_names_the_knob() {
    let bad = [
        Config {
            mtu: 10,
            ..Config::default()
        },
        Config {
            window: 1000,
            ..Config::default()
        },
        Config {
            max_message_len: 17 << 20,
            ..Config::default()
        },
        Config {
            retransmit_buffer: 1 << 20,
            ..Config::default()
        },
        Config {
            versions: (3, 2),
            ..Config::default()
        },
        Config {
            nak_delay: Duration::ZERO,
            ..Config::default()
        },
        Config {
            liveness_timeout: Duration::from_millis(60),
            ..Config::default()
        },
    ];
    for (c, word) in bad.iter().zip([
        "mtu",
        "window",
        "max message",
        "retransmit",
        "version",
        "nak delay",
        "liveness",
    ]) {
        let e = c.validate().unwrap_err();
        assert!(e.contains(word), "{e}");
        assert!(Receiver::new(c.clone(), std::time::Instant::now(), 1).is_err());
    }
    let big = Config {
        max_message_len: 16 << 20,
        retransmit_buffer: 32 << 20,
        ..Config::default()
    };
    big.validate().unwrap();
}

fn keyed(key: u8) -> Config {
    Config {
        key: Some(conduit::proto::Psk::new([key; 32])),
        ..Config::default()
    }
}

/// Keyed ends: every datagram is sealed (nothing plain on the wire, frames within the MTU),
/// the stream is exact, an altered datagram fails authentication and a replayed one is a
/// replay; neither changes anything.
#[test]
fn keyed_stream_seals_every_datagram() {
    let (mut p, mut gen, data) = connected(300, keyed(7));
    assert_eq!(data[0], conduit::proto::crypto::MAGIC);
    assert!(data.len() <= 1408);
    // Replayed: dropped as a replay.
    assert_rx_drop(&mut p, TX, &data, DropReason::Replay);
    // A fresh datagram, altered (in the ciphertext, or in the header it authenticates): it
    // fails authentication and changes nothing; the original is delivered after it.
    gen.total += 1;
    assert_eq!(gen.offer(&mut p.tx, 1).unwrap(), 1);
    let mut buf = vec![0u8; 2048];
    let mut fresh = None;
    while let Some(t) = p.tx.poll_transmit(p.now, &mut buf) {
        if t.len >= 80 {
            fresh = Some(buf[..t.len].to_vec());
        }
    }
    let fresh = fresh.expect("a data datagram");
    for at in [12, 40, fresh.len() - 1] {
        let mut d = fresh.clone();
        d[at] ^= 1;
        assert_rx_drop(&mut p, TX, &d, DropReason::AuthFailed);
    }
    let delivered = p.checker.delivered;
    to_rx(&mut p, TX, &fresh);
    assert_eq!(p.checker.delivered, delivered + 1);
    // A plain frame at a keyed receiver.
    let mut plain = vec![2u8, FrameKind::DATA.0];
    plain.resize(64, 0);
    assert_rx_drop(&mut p, TX, &plain, DropReason::Plaintext);
    still_streams(&mut p, &mut gen);
    assert_eq!(p.rx.counters().dropped(DropReason::Checksum), 0);
}

/// Keyed against unkeyed, and different keys: they never connect, both ends report the
/// mismatch, nothing is delivered, nothing hangs.
#[test]
fn key_mismatch_is_reported_by_both_ends() {
    for (tx_cfg, rx_cfg) in [
        (keyed(1), Config::default()),
        (Config::default(), keyed(1)),
        (keyed(1), keyed(2)),
    ] {
        let mut p = Pair::new(
            9,
            tx_cfg,
            rx_cfg,
            LinkConfig::perfect(Duration::from_micros(10)),
        );
        let end = p.now + Duration::from_millis(200);
        while p.now < end {
            p.pump().unwrap();
            assert!(p.advance(Some(end)));
            let _ = p.tx.offer(1, b"never delivered");
        }
        p.pump().unwrap();
        assert!(!p.tx.is_connected() && !p.rx.is_connected());
        assert_eq!(p.checker.delivered, 0);
        assert_eq!(p.tx.offer(1, b"x"), Err(OfferError::KeyMismatch));
        for events in [&p.tx_events, &p.rx_events] {
            let n = events.iter().filter(|e| **e == Event::KeyMismatch).count();
            assert_eq!(n, 1, "{events:?}");
        }
        // The plaintext rejections are rate limited.
        assert!(
            p.rx.counters().datagrams_sent <= 25,
            "{:?}",
            p.rx.counters()
        );
    }
}
