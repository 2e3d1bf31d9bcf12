//! Every malformed or unwelcome datagram is dropped with a counter for its reason, and the
//! stream goes on undisturbed. Version and session mismatches are explicit.

mod proto_common;

use std::net::SocketAddr;
use std::time::Duration;

use conduit::proto::frame::{self, DataHeader, FrameKind, NakHeader, NakRange, RecordHeader};
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
        if buf[1] == FrameKind::DATA.0 {
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
            header: frame::header(1, FrameKind::NAK, 0, hdr.header.session_id.get(), 1),
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
        header: frame::header(1, FrameKind::NAK, 0, h.header.session_id.get(), 1),
        count: U16::new(1),
        reserved: U16::new(0),
        reserved2: U32::new(0),
    };
    let mut b = n.as_bytes().to_vec();
    b.extend_from_slice(
        NakRange {
            from: U64::new(0),
            to: U64::new(64),
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

#[test]
fn session_mismatch_from_another_host_is_dropped() {
    let (mut p, _gen, _) = connected(10, Config::default());
    // A second sender on another host tries to take over the live session.
    let other: SocketAddr = "10.0.0.7:5000".parse().unwrap();
    let mut intruder = Sender::new(Config::default(), RX, p.now, 999).unwrap();
    let mut buf = vec![0u8; 2048];
    let t = intruder.poll_transmit(p.now, &mut buf).unwrap();
    let before = p.rx.counters().dropped(DropReason::WrongSource);
    to_rx(&mut p, other, &buf[..t.len]);
    assert_eq!(p.rx.counters().dropped(DropReason::WrongSource), before + 1);
    assert_ne!(p.rx.session_id(), Some(intruder.session_id()));
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
