//! Every malformed or unwelcome datagram is dropped with a counter for its reason, and the
//! stream goes on undisturbed. Version and session mismatches are explicit.

mod proto_common;

use std::net::SocketAddr;
use std::time::Duration;

use conduit_proto::frame::{
    self, Close, DataHeader, FrameKind, Heartbeat, NakHeader, NakRange, RecordHeader, Rtt, Setup,
    SetupReply, Status,
};
use conduit_proto::sim::LinkConfig;
use conduit_proto::{Config, DropReason, Event, OfferError, Receiver, Sender};
use proto_common::{Gen, Pair, RX, TX};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

/// The protocol version every forged frame carries (the one endpoints negotiate).
const V: u8 = conduit_proto::SUPPORTED_VERSIONS.1 as u8;

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
    while let Some(t) = pair.tx.poll_transmit(pair.now, 1, &mut buf) {
        // Keyed, the kind is sealed: the data frame is the only one this long.
        let keyed_data = buf[0] == conduit_proto::crypto::MAGIC && t.len >= 80;
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
    let sid = hdr.header.session_id.get();
    let nak = |ranges: &[(u64, u64)], count: u16| nak_bytes_counted(sid, count, ranges, 0);
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
    while p.tx.poll_transmit(p.now, 1, &mut buf).is_some() {}
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
    while let Some(t) = pair.tx.poll_transmit(pair.now, 1, &mut buf) {
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
        nonce: U32::new(0),
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
        while pair.tx.poll_transmit(pair.now, 1, &mut buf).is_some() {}
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
    let t = tx.poll_transmit(now, 1, &mut buf).expect("a setup");
    assert_eq!(buf[1], FrameKind::SETUP.0);
    buf[..t.len].to_vec()
}

/// Takes what the receiver sends: returns its datagram to `to`, the rest goes on the network.
fn rx_reply_to(pair: &mut Pair, to: SocketAddr) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 2048];
    let mut found = None;
    while let Some(t) = pair.rx.poll_transmit(pair.now, 1, &mut buf) {
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
    for (join, reason) in [
        (12, DropReason::BadLength),
        (1 << 63, DropReason::OutOfWindow),
        (u64::MAX - 7, DropReason::OutOfWindow),
    ] {
        let bad = Setup {
            join_position: U64::new(join),
            ..s
        };
        assert_rx_drop(&mut p, other, &sealed(bad.as_bytes().to_vec()), reason);
    }
    // A version 1 peer (40-byte setup, versions 1..=1) gets a rejection it can read.
    let mut v1 = s.as_bytes()[..frame::SETUP_V1_LEN].to_vec();
    v1[0] = 1;
    v1[16..20].copy_from_slice(&[1, 0, 1, 0]);
    assert_rx_drop(&mut p, other, &sealed(v1), DropReason::BadVersion);
    let reply = rx_reply_to(&mut p, other).expect("a rejection");
    assert_eq!(reply_flags(&reply), frame::FLAG_REJECT);
    let (r, _) = frame::SetupReplyPrefix::read_from_prefix(&reply).unwrap();
    assert_eq!(
        (r.min_version.get(), r.max_version.get()),
        conduit_proto::SUPPORTED_VERSIONS
    );
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
        .poll_transmit(now, 1, &mut buf)
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
        tx.poll_transmit(now, 1, &mut buf).is_none(),
        "a refused setup backs off"
    );
    let mut events = Vec::new();
    while let Some(e) = tx.poll_event() {
        events.push(e);
    }
    assert_eq!(events, [Event::SessionRefused]);
    let later = now + Duration::from_millis(100);
    assert!(
        tx.poll_transmit(later, 1, &mut buf).is_some(),
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
            local: conduit_proto::SUPPORTED_VERSIONS,
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
        key: Some(conduit_proto::Psk::new([key; 32])),
        ..Config::default()
    }
}

/// Keyed ends: every datagram is sealed (nothing plain on the wire, frames within the MTU),
/// the stream is exact, an altered datagram fails authentication and a replayed one is a
/// replay; neither changes anything.
#[test]
fn keyed_stream_seals_every_datagram() {
    let (mut p, mut gen, data) = connected(300, keyed(7));
    assert_eq!(data[0], conduit_proto::crypto::MAGIC);
    assert!(data.len() <= 1408);
    // Replayed: dropped as a replay.
    assert_rx_drop(&mut p, TX, &data, DropReason::Replay);
    // A fresh datagram, altered (in the ciphertext, or in the header it authenticates): it
    // fails authentication and changes nothing; the original is delivered after it.
    gen.total += 1;
    assert_eq!(gen.offer(&mut p.tx, 1).unwrap(), 1);
    let mut buf = vec![0u8; 2048];
    let mut fresh = None;
    while let Some(t) = p.tx.poll_transmit(p.now, 1, &mut buf) {
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
/// A setup for session `sid` joining at `join`, as the sender would send it (captured from a
/// fresh sender, then patched).
fn setup_bytes(now: std::time::Instant, sid: u32, join: u64) -> Vec<u8> {
    let mut s = Sender::new(Config::default(), RX, now, 4242).unwrap();
    let mut buf = vec![0u8; 2048];
    let t = s.poll_transmit(now, 1, &mut buf).unwrap();
    let mut b = buf[..t.len].to_vec();
    assert_eq!(b[1], FrameKind::SETUP.0);
    b[4..8].copy_from_slice(&sid.to_le_bytes());
    b[32..40].copy_from_slice(&join.to_le_bytes());
    sealed(b)
}

/// [`setup_bytes`] with the cookie `rx` issues for it from `from`: the setup as the sender sends
/// it after the receiver's challenge (the cookie covers the address, the session id and the
/// nonce, not the join position).
fn proven_setup_bytes(
    rx: &mut Receiver,
    now: std::time::Instant,
    from: SocketAddr,
    sid: u32,
    join: u64,
) -> Vec<u8> {
    let mut b = setup_bytes(now, sid, join);
    rx.handle_datagram(now, from, &b, |_, _| {});
    let mut buf = vec![0u8; 2048];
    let mut cookie = None;
    while let Some(t) = rx.poll_transmit(now, 1, &mut buf) {
        let reply = &buf[..t.len];
        if reply[1] == FrameKind::SETUP_REPLY.0 && reply_flags(reply) == frame::FLAG_RETRY {
            let (r, _) = SetupReply::read_from_prefix(reply).unwrap();
            cookie = Some(r.cookie);
        }
    }
    let (mut s, _) = Setup::read_from_prefix(&b).unwrap();
    s.cookie = cookie.expect("a cookie challenge");
    b = s.as_bytes().to_vec();
    sealed(b)
}

/// A heartbeat of session `sid` (stream 1).
fn heartbeat_bytes(sid: u32, flags: u16, end: u64, retained: u64, nonce: u32) -> Vec<u8> {
    let hb = Heartbeat {
        header: frame::header(V, FrameKind::HEARTBEAT, flags, sid, 1),
        position: U64::new(end),
        retained_from: U64::new(retained),
        nonce: U32::new(nonce),
        reserved: U32::new(0),
    };
    sealed(hb.as_bytes().to_vec())
}

/// A data frame of session `sid` at `position` with one 8-byte message.
fn data_bytes(sid: u32, position: u64) -> Vec<u8> {
    let d = DataHeader {
        header: frame::header(V, FrameKind::DATA, 0, sid, 1),
        position: U64::new(position),
    };
    let mut b = d.as_bytes().to_vec();
    let rec = RecordHeader {
        len: U16::new(8),
        flags: frame::REC_BEGIN | frame::REC_END,
        reserved: 0,
        type_id: U32::new(1),
    };
    b.extend_from_slice(rec.as_bytes());
    b.extend_from_slice(&[0u8; 8]);
    sealed(b)
}

fn nak_bytes(sid: u32, ranges: &[(u64, u64)], nonce: u32) -> Vec<u8> {
    nak_bytes_counted(sid, ranges.len() as u16, ranges, nonce)
}

/// A NAK whose `count` field says `count`, whatever the ranges that follow.
fn nak_bytes_counted(sid: u32, count: u16, ranges: &[(u64, u64)], nonce: u32) -> Vec<u8> {
    let h = NakHeader {
        header: frame::header(V, FrameKind::NAK, 0, sid, 1),
        count: U16::new(count),
        reserved: U16::new(0),
        nonce: U32::new(nonce),
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
}

fn status_bytes(sid: u32, position: u64, window: u32, receiver_id: u32) -> Vec<u8> {
    let s = Status {
        header: frame::header(V, FrameKind::STATUS, 0, sid, 1),
        position: U64::new(position),
        window: U32::new(window),
        receiver_id: U32::new(receiver_id),
    };
    sealed(s.as_bytes().to_vec())
}

fn rtt_bytes(sid: u32, flags: u16, timestamp: u64) -> Vec<u8> {
    let r = Rtt {
        header: frame::header(V, FrameKind::RTT, flags, sid, 1),
        timestamp: U64::new(timestamp),
    };
    sealed(r.as_bytes().to_vec())
}

fn close_bytes(sid: u32, position: u64) -> Vec<u8> {
    let c = Close {
        header: frame::header(V, FrameKind::CLOSE, 0, sid, 1),
        position: U64::new(position),
    };
    sealed(c.as_bytes().to_vec())
}

/// Finding: one forged setup joining near 2^64 made the receive path overflow its position
/// (a subscriber that loops or re-delivers without end). Positions at or beyond
/// `MAX_POSITION` are refused; the subscription stays usable.
#[test]
fn setup_joining_near_the_top_of_the_position_space_is_refused() {
    let _watchdog = proto_common::watchdog("setup_near_top", 60);
    let cfg = Config::default();
    let mut p = Pair::new(
        11,
        cfg.clone(),
        cfg,
        LinkConfig::perfect(Duration::from_micros(10)),
    );
    let forger: SocketAddr = "10.6.6.6:666".parse().unwrap();
    let sid = 0xF0F0_0001;
    for join in [!7u64, u64::MAX - 63, frame::MAX_POSITION] {
        let f = setup_bytes(p.now, sid, join);
        to_rx(&mut p, forger, &f);
        assert_ne!(
            p.rx.session_id(),
            Some(sid),
            "setup joining at {join:#x} accepted"
        );
        // Data and heartbeats at the top of the position space.
        for k in 0..8u64 {
            let pos = join.wrapping_add(k * 16);
            to_rx(&mut p, forger, &data_bytes(sid, pos));
            to_rx(
                &mut p,
                forger,
                &heartbeat_bytes(sid, 0, pos & !7, pos & !7, 0),
            );
        }
        while p.rx.poll_transmit(p.now, 1, &mut [0u8; 2048]).is_some() {}
    }
    assert_eq!(p.checker.delivered, 0);
    // The real sender still gets the subscription and streams through it.
    let mut gen = Gen::new(11, 0, 0, false);
    while !p.tx.is_connected() {
        p.pump().unwrap();
        assert!(p.advance(None));
    }
    still_streams(&mut p, &mut gen);
}

/// Every position, length, count and range field a receiver gets is checked before use:
/// one row per field, each dropped with its reason, and the stream goes on.
#[test]
fn receiver_checks_every_field_before_arithmetic() {
    let _watchdog = proto_common::watchdog("receiver_fields", 60);
    let (mut p, mut gen, data) = connected(100, Config::default());
    let sid = p.rx.session_id().unwrap();
    let pos = p.rx.position();
    let top = !7u64;
    let max = frame::MAX_POSITION;
    // Data position.
    assert_rx_drop(&mut p, TX, &data_bytes(sid, top), DropReason::OutOfWindow);
    assert_rx_drop(&mut p, TX, &data_bytes(sid, max), DropReason::OutOfWindow);
    assert_rx_drop(
        &mut p,
        TX,
        &data_bytes(sid, max - 8),
        DropReason::OutOfWindow,
    );
    assert_rx_drop(&mut p, TX, &data_bytes(sid, pos + 4), DropReason::BadLength);
    // Record length and flags.
    let mut d = data_bytes(sid, pos);
    d[24..26].copy_from_slice(&U16::new(u16::MAX).to_bytes());
    assert_rx_drop(&mut p, TX, &sealed(d), DropReason::BadLength);
    let mut d = data_bytes(sid, pos);
    d[26] = 0x11;
    assert_rx_drop(&mut p, TX, &sealed(d), DropReason::BadLength);
    let mut d = data_bytes(sid, pos);
    d[26] = frame::REC_PAD;
    d[24..26].copy_from_slice(&U16::new(65_528).to_bytes());
    assert_rx_drop(&mut p, TX, &sealed(d), DropReason::BadLength);
    // Heartbeat position and retained_from.
    let hb = |end, retained| heartbeat_bytes(sid, 0, end, retained, 0);
    assert_rx_drop(&mut p, TX, &hb(top, 0), DropReason::OutOfWindow);
    assert_rx_drop(&mut p, TX, &hb(top, top), DropReason::OutOfWindow);
    assert_rx_drop(&mut p, TX, &hb(max, pos), DropReason::OutOfWindow);
    assert_rx_drop(
        &mut p,
        TX,
        &hb(pos + (1 << 30), pos),
        DropReason::OutOfWindow,
    );
    assert_rx_drop(&mut p, TX, &hb(pos, pos + 8), DropReason::BadLength);
    assert_rx_drop(&mut p, TX, &hb(pos + 3, pos), DropReason::BadLength);
    assert_rx_drop(&mut p, TX, &hb(pos + 8, pos + 5), DropReason::BadLength);
    // A loss confirmation that answers no NAK of ours.
    assert_rx_drop(
        &mut p,
        TX,
        &heartbeat_bytes(sid, frame::FLAG_LOSS, pos + 64, pos + 64, 0x1234_5678),
        DropReason::Unexpected,
    );
    // Close position: beyond the position space, or behind what was delivered.
    assert_rx_drop(&mut p, TX, &close_bytes(sid, top), DropReason::OutOfWindow);
    assert_rx_drop(&mut p, TX, &close_bytes(sid, max), DropReason::OutOfWindow);
    assert_rx_drop(
        &mut p,
        TX,
        &close_bytes(sid, pos - 8),
        DropReason::OutOfWindow,
    );
    // RTT echo from the future.
    assert_rx_drop(
        &mut p,
        TX,
        &rtt_bytes(sid, frame::FLAG_REPLY, u64::MAX),
        DropReason::OutOfWindow,
    );
    // Setup join position of the current session.
    let f = setup_bytes(p.now, sid, top);
    assert_rx_drop(&mut p, TX, &f, DropReason::OutOfWindow);
    let f = setup_bytes(p.now, sid, max);
    assert_rx_drop(&mut p, TX, &f, DropReason::OutOfWindow);
    let f = setup_bytes(p.now, sid, pos + 4);
    assert_rx_drop(&mut p, TX, &f, DropReason::BadLength);
    assert!(!p.rx.is_failed());
    assert_eq!(p.rx.session_id(), Some(sid));
    assert!(p
        .rx_events
        .iter()
        .chain(
            std::iter::from_fn(|| p.rx.poll_event())
                .collect::<Vec<_>>()
                .iter()
        )
        .all(|e| !matches!(e, Event::UnrecoverableLoss { .. } | Event::Closed)));
    let _ = data;
    still_streams(&mut p, &mut gen);
}

/// As above for the sender: NAK ranges, status position and window, RTT timestamps.
#[test]
fn sender_checks_every_field_before_arithmetic() {
    let _watchdog = proto_common::watchdog("sender_fields", 60);
    let (mut p, mut gen, data) = connected(100, Config::default());
    let (hdr, _) = DataHeader::read_from_prefix(&data).unwrap();
    let sid = hdr.header.session_id.get();
    let rid = p.rx.receiver_id();
    let top = !7u64;
    let max = frame::MAX_POSITION;
    let sent = p.tx.position();
    // NAK count.
    assert_tx_drop(&mut p, RX, &nak_bytes(sid, &[], 1), DropReason::BadLength);
    let mut n = nak_bytes(sid, &[(0, 8)], 1);
    n[16..18].copy_from_slice(&U16::new(u16::MAX).to_bytes());
    assert_tx_drop(&mut p, RX, &sealed(n), DropReason::BadLength);
    let mut n = nak_bytes(sid, &[(0, 8)], 1);
    n[16..18].copy_from_slice(&U16::new(2).to_bytes());
    assert_tx_drop(&mut p, RX, &sealed(n), DropReason::Truncated);
    // NAK from/to.
    let before = p.tx.counters().retransmitted;
    for (f, t, reason) in [
        (top, u64::MAX, DropReason::OutOfWindow),
        (max, max + 64, DropReason::OutOfWindow),
        (sent, top, DropReason::OutOfWindow),
        (top, 8, DropReason::BadLength),
        (sent - 8, sent - 16, DropReason::BadLength),
    ] {
        assert_tx_drop(&mut p, RX, &nak_bytes(sid, &[(f, t)], 1), reason);
    }
    let mut buf = vec![0u8; 2048];
    while p.tx.poll_transmit(p.now, 1, &mut buf).is_some() {}
    assert_eq!(p.tx.counters().retransmitted, before);
    // Status position and window.
    let acked = p.tx.acked_position();
    assert_tx_drop(
        &mut p,
        RX,
        &status_bytes(sid, top, 1 << 18, rid),
        DropReason::OutOfWindow,
    );
    assert_tx_drop(
        &mut p,
        RX,
        &status_bytes(sid, sent + 8, 1 << 18, rid),
        DropReason::OutOfWindow,
    );
    assert_tx_drop(
        &mut p,
        RX,
        &status_bytes(sid, acked, 0, rid),
        DropReason::BadLength,
    );
    assert_tx_drop(
        &mut p,
        RX,
        &status_bytes(sid, acked, 1 << 18, rid ^ 1),
        DropReason::WrongSession,
    );
    assert_eq!(p.tx.acked_position(), acked);
    // RTT echo from the future.
    assert_tx_drop(
        &mut p,
        RX,
        &rtt_bytes(sid, frame::FLAG_REPLY, u64::MAX),
        DropReason::OutOfWindow,
    );
    // A huge window is clamped, not trusted: the sender still streams within its buffer.
    p.tx.handle_datagram(p.now, RX, &status_bytes(sid, acked, u32::MAX, rid));
    still_streams(&mut p, &mut gen);
    p.check_bounds().unwrap();
}

/// A publisher answers NAKs, status and RTT probes, and takes a close, only from its
/// session's address: from anywhere else (another host, or its receiver's host on another
/// port) each kind is dropped as `WrongSource` and changes nothing.
#[test]
fn sender_answers_only_its_session_address() {
    let (mut p, mut gen, data) = connected(100, Config::default());
    let (hdr, _) = DataHeader::read_from_prefix(&data).unwrap();
    let sid = hdr.header.session_id.get();
    let rid = p.rx.receiver_id();
    // Unacknowledged data to NAK.
    gen.total += 10;
    gen.offer(&mut p.tx, 10).unwrap();
    let mut buf = vec![0u8; 2048];
    while p.tx.poll_transmit(p.now, 1, &mut buf).is_some() {}
    let acked = p.tx.acked_position();
    let sent = p.tx.position();
    let frames = [
        ("nak", nak_bytes(sid, &[(acked, sent)], 7)),
        ("status", status_bytes(sid, sent, 1 << 18, rid)),
        ("rtt probe", rtt_bytes(sid, 0, 1)),
        ("rtt reply", rtt_bytes(sid, frame::FLAG_REPLY, 0)),
        ("close", close_bytes(sid, sent)),
    ];
    for stranger in ["10.9.9.9:6000", "10.0.0.2:6001"] {
        let stranger: SocketAddr = stranger.parse().unwrap();
        for (name, f) in &frames {
            let before = p.tx.counters().dropped(DropReason::WrongSource);
            p.tx.handle_datagram(p.now, stranger, f);
            assert_eq!(
                p.tx.counters().dropped(DropReason::WrongSource),
                before + 1,
                "{name} from {stranger} not dropped"
            );
            while let Some(t) = p.tx.poll_transmit(p.now, 1, &mut buf) {
                assert!(
                    buf[1] != FrameKind::DATA.0 && buf[1] != FrameKind::RTT.0,
                    "{name} from {stranger} was answered with kind {} ({} bytes)",
                    buf[1],
                    t.len
                );
            }
            assert!(
                p.tx.is_connected(),
                "{name} from {stranger} closed the stream"
            );
            assert_eq!(p.tx.acked_position(), acked, "{name} from {stranger}");
        }
    }
    assert_eq!(p.tx.counters().retransmitted, 0);
    settle(&mut p);
    still_streams(&mut p, &mut gen);
}

/// Finding: one forged heartbeat (right session, valid checksum) saying the sender no longer
/// holds what the receiver misses stopped a `gap=fail` stream for good (and so did a setup of
/// the session joining beyond the position). Unconfirmed, they now only make the receiver
/// NAK; the real sender still holds the data, and the stream completes.
#[test]
fn forged_heartbeat_does_not_stop_a_fail_stream() {
    let _watchdog = proto_common::watchdog("forged_heartbeat", 60);
    let (mut p, mut gen, _) = connected(100, Config::default());
    assert_eq!(p.rx_config.gap_policy, conduit_proto::GapPolicy::Fail);
    let sid = p.rx.session_id().unwrap();
    // Unacknowledged data on the way, so the receiver is behind.
    gen.total += 20;
    gen.offer(&mut p.tx, 20).unwrap();
    p.pump().unwrap();
    let pos = p.rx.position();
    for ahead in [8u64, 64, 4096] {
        let f = heartbeat_bytes(sid, 0, pos + ahead, pos + ahead, 0);
        to_rx(&mut p, TX, &f);
    }
    // Also one that claims to confirm loss, with a guessed nonce.
    to_rx(
        &mut p,
        TX,
        &heartbeat_bytes(sid, frame::FLAG_LOSS, pos + 64, pos + 64, 1),
    );
    // And a setup of the session (from its address) joining beyond the position.
    let now = p.now;
    let f = proven_setup_bytes(&mut p.rx, now, TX, sid, pos + 64);
    to_rx(&mut p, TX, &f);
    assert!(!p.rx.is_failed(), "a forged heartbeat failed the stream");
    settle(&mut p);
    still_streams(&mut p, &mut gen);
    assert!(!p.rx.is_failed());
    p.pump().unwrap();
    assert!(
        !p.rx_events
            .iter()
            .any(|e| matches!(e, Event::UnrecoverableLoss { .. })),
        "{:?}",
        p.rx_events
    );
}

/// Real loss is still declared: data the sender released is NAKed, the sender answers with
/// a heartbeat echoing the NAK's nonce, and only then the receiver reports the loss.
#[test]
fn loss_is_declared_on_the_senders_confirmation() {
    let _watchdog = proto_common::watchdog("loss_confirmed", 60);
    let (mut p, mut gen, data) = connected(100, Config::default());
    let (hdr, _) = DataHeader::read_from_prefix(&data).unwrap();
    let sid = hdr.header.session_id.get();
    let rid = p.rx.receiver_id();
    // Sent but never delivered; then the sender is told (as after a receiver's status the
    // network reordered past lost data) that all of it was received, and releases it.
    gen.total += 20;
    gen.offer(&mut p.tx, 20).unwrap();
    let mut buf = vec![0u8; 2048];
    while p.tx.poll_transmit(p.now, 1, &mut buf).is_some() {}
    let sent = p.tx.position();
    p.tx.handle_datagram(p.now, RX, &status_bytes(sid, sent, 1 << 18, rid));
    assert_eq!(p.tx.acked_position(), sent);
    let until = p.now + Duration::from_millis(300);
    while p.now < until && !p.rx.is_failed() {
        p.pump().unwrap();
        assert!(p.advance(Some(until)));
    }
    p.pump().unwrap();
    assert!(p.rx.is_failed(), "loss never confirmed: {:?}", p.rx_events);
    assert!(p
        .rx_events
        .iter()
        .any(|e| matches!(e, Event::UnrecoverableLoss { .. })));
    assert!(p.rx.counters().naks_sent > 0);
}

/// Finding: each forged 40-byte NAK made the publisher resend a whole window. A NAK asks at
/// most for one window of what is in flight, and repair is bounded by the budget: one window,
/// plus the new data sent, plus the floor (an eighth of the window per heartbeat interval).
#[test]
fn nak_flood_is_bounded_by_the_repair_budget() {
    let _watchdog = proto_common::watchdog("nak_flood", 60);
    let cfg = Config::default();
    let (mut p, mut gen, data) = connected(100, cfg.clone());
    let (hdr, _) = DataHeader::read_from_prefix(&data).unwrap();
    let sid = hdr.header.session_id.get();
    // A window of data in flight, never acknowledged (the receiver hears none of it).
    let mut buf = vec![0u8; 2048];
    gen.total += 1_000_000;
    let start = p.tx.position();
    let mut new_bytes = 0u64;
    loop {
        let n = gen.offer(&mut p.tx, 1000).unwrap();
        let mut any = false;
        while let Some(t) = p.tx.poll_transmit(p.now, 1, &mut buf) {
            if buf[1] == FrameKind::DATA.0 {
                new_bytes += (t.len - frame::DATA_HEADER_LEN) as u64;
                any = true;
            }
        }
        if n == 0 && !any {
            break;
        }
    }
    let acked = p.tx.acked_position();
    let sent = start + new_bytes;
    assert!(sent - acked >= cfg.window as u64 / 2, "{}", sent - acked);
    let window = cfg.window as u64;
    let naks = 2000u32;
    let step = Duration::from_millis(1);
    let t0 = p.now;
    let mut resent = 0u64;
    for i in 0..naks {
        p.now += step;
        // The whole window, several times over in one NAK.
        let ranges = [(acked, u64::MAX - 8); 32];
        p.tx.handle_datagram(p.now, RX, &nak_bytes(sid, &ranges, i + 1));
        while let Some(t) = p.tx.poll_transmit(p.now, 1, &mut buf) {
            if buf[1] == FrameKind::DATA.0 {
                resent += (t.len - frame::DATA_HEADER_LEN) as u64;
            }
        }
    }
    let elapsed = p.now - t0;
    let floor = (window / 8).max(cfg.mtu as u64);
    let periods = elapsed.as_nanos() as u64 / cfg.heartbeat_interval.as_nanos() as u64 + 1;
    let bound = window + floor * periods;
    assert!(
        resent <= bound,
        "{naks} forged NAKs over {elapsed:?} made the sender resend {resent} bytes \
         (bound {bound}: a window, plus no new data, plus the floor)"
    );
    assert_eq!(p.tx.counters().retransmitted_bytes, resent);
    assert!(p.tx.counters().repair_throttled > 0);
    // The stream itself recovers once the receiver hears again.
    settle(&mut p);
    let target = p.checker.delivered + 100;
    while p.checker.delivered < target {
        gen.offer(&mut p.tx, 64).unwrap();
        p.pump().unwrap();
        assert!(p.advance(None));
        assert!(p.checker.error.is_none(), "{:?}", p.checker.error);
    }
}

/// A data frame of session `sid` at `position` with one record of `payload` (a multiple of
/// 8 bytes).
fn data_with(sid: u32, position: u64, payload: &[u8]) -> Vec<u8> {
    let d = DataHeader {
        header: frame::header(V, FrameKind::DATA, 0, sid, 1),
        position: U64::new(position),
    };
    let mut b = d.as_bytes().to_vec();
    let rec = RecordHeader {
        len: U16::new(payload.len() as u16),
        flags: frame::REC_BEGIN | frame::REC_END,
        reserved: 0,
        type_id: U32::new(1),
    };
    b.extend_from_slice(rec.as_bytes());
    b.extend_from_slice(payload);
    sealed(b)
}

/// Buffered data whose record boundaries disagree (overlapping frames): a payload read as a
/// padding record must not move the position past what was received (it jumped 64 KiB, and
/// near the top of the position space wrapped around and looped).
#[test]
fn inconsistent_buffered_records_never_move_the_position_past_the_data() {
    let _watchdog = proto_common::watchdog("inconsistent_buffered", 60);
    let now = std::time::Instant::now();
    let mut rx = Receiver::new(Config::default(), now, 3).unwrap();
    let sid = 0x5E55_0001;
    let join = frame::MAX_POSITION - 1024;
    let mut got = 0;
    let setup = proven_setup_bytes(&mut rx, now, TX, sid, join);
    rx.handle_datagram(now, TX, &setup, |_, _| got += 1);
    assert_eq!(rx.session_id(), Some(sid));
    // At join + 16: a record whose payload looks like a padding header of 65 528 bytes.
    let mut fake_pad = [0u8; 24];
    fake_pad[..2].copy_from_slice(&65_528u16.to_le_bytes());
    fake_pad[2] = frame::REC_PAD;
    rx.handle_datagram(now, TX, &data_with(sid, join + 16, &fake_pad), |_, _| {
        got += 1
    });
    // At join + 8: a record that overwrites the header at join + 16 with its payload.
    rx.handle_datagram(now, TX, &data_with(sid, join + 8, &[0u8; 8]), |_, _| {
        got += 1
    });
    let before = rx.counters().dropped(DropReason::BadLength);
    // The hole at join: the buffered records are walked from the position.
    rx.handle_datagram(now, TX, &data_with(sid, join, &[]), |_, _| got += 1);
    assert!(
        rx.position() <= join + 48,
        "position moved to join + {} past the data received",
        rx.position() - join
    );
    assert!(rx.position() < frame::MAX_POSITION);
    assert_eq!(rx.counters().dropped(DropReason::BadLength), before + 1);
}

/// A stranger's plain setups at a keyed receiver with a live session are counted drops, never
/// a reported key mismatch: a stranger cannot make a working stream report an error.
#[test]
fn strangers_plain_setups_do_not_report_a_mismatch_on_a_live_keyed_stream() {
    let (mut p, mut gen, _) = connected(100, keyed(7));
    let stranger: SocketAddr = "10.9.9.9:999".parse().unwrap();
    let mut plain = Sender::new(Config::default(), RX, p.now, 77).unwrap();
    let setup = first_setup(&mut plain, p.now);
    for _ in 0..10 {
        assert_rx_drop(&mut p, stranger, &setup, DropReason::Plaintext);
    }
    p.pump().unwrap();
    assert!(
        !p.rx_events.contains(&Event::KeyMismatch),
        "{:?}",
        p.rx_events
    );
    still_streams(&mut p, &mut gen);
}
