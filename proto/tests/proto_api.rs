//! The application-facing behaviour of the protocol endpoints: zero-copy claim and receive,
//! payload alignment, back-pressure, flush state, close.

mod proto_common;

use std::time::Duration;

use conduit_proto::sim::LinkConfig;
use conduit_proto::{Config, Event, OfferError};
use proto_common::{Pair, TX};

fn connected_pair(cfg: Config) -> Pair {
    connected_pair_on(cfg, LinkConfig::perfect(Duration::from_micros(20)))
}

fn connected_pair_on(cfg: Config, link: LinkConfig) -> Pair {
    let mut p = Pair::new(11, cfg.clone(), cfg, link);
    while !p.tx.is_connected() {
        p.pump().unwrap();
        assert!(p.advance(None));
    }
    p.pump().unwrap();
    p
}

#[test]
fn claim_commit_abort_and_in_place_aligned_delivery() {
    let mut p = connected_pair(Config::default());
    let max = p.tx.max_claim_len();
    assert!(max >= 1024);
    assert!(matches!(
        p.tx.try_claim(1, max + 1),
        Err(OfferError::MessageTooLarge { .. })
    ));
    {
        let mut c = p.tx.try_claim(5, 24).unwrap();
        assert_eq!(c.len(), 24);
        c.as_mut_slice().copy_from_slice(&[9u8; 24]);
        c.abort();
    }
    let before = p.tx.position();
    {
        let mut c = p.tx.try_claim(6, 16).unwrap();
        c.as_mut_slice()[..8].copy_from_slice(&42u64.to_le_bytes());
        c.as_mut_slice()[8..].copy_from_slice(&7u64.to_le_bytes());
        assert!(c.commit() > before);
    }
    p.tx.offer(7, &[1, 2, 3]).unwrap();
    // Intercept the data datagram and check payload offsets and zero-copy delivery.
    let mut buf = vec![0u64; 256];
    let bytes = zerocopy::IntoBytes::as_mut_bytes(buf.as_mut_slice());
    let mut seen = Vec::new();
    let now = p.now;
    while let Some(t) = p.tx.poll_transmit(now, 1, bytes) {
        let d = &bytes[..t.len];
        let base = d.as_ptr() as usize;
        p.rx.handle_datagram(now, TX, d, |ty, payload| {
            let off = payload.as_ptr() as usize - base;
            assert!(off < t.len, "payload is not inside the datagram (copied)");
            assert_eq!(off % 8, 0, "payload not 8-aligned in the datagram");
            seen.push((ty, payload.to_vec()));
        });
    }
    assert_eq!(seen.len(), 2, "aborted claim must not be sent: {seen:?}");
    assert_eq!(seen[0].0, 6);
    assert_eq!(&seen[0].1[..8], &42u64.to_le_bytes());
    assert_eq!(seen[1], (7, vec![1, 2, 3]));
}

#[test]
fn back_pressure_is_a_result_and_flush_state_follows_acks() {
    let cfg = Config::default();
    let mut p = connected_pair(cfg.clone());
    let msg = [0u8; 1000];
    let mut n = 0;
    loop {
        match p.tx.offer(1, &msg) {
            Ok(_) => n += 1,
            Err(OfferError::BackPressured) => break,
            Err(e) => panic!("{e:?}"),
        }
        assert!(n < 1_000_000);
    }
    assert!(
        n as usize * 1000 <= cfg.window + 1008,
        "window not enforced: {n}"
    );
    assert!(!p.tx.is_flushed());
    let until = p.now + Duration::from_millis(50);
    while p.now < until {
        p.pump().unwrap();
        assert!(p.advance(Some(until)));
    }
    assert!(p.tx.is_flushed());
    assert_eq!(p.tx.acked_position(), p.tx.position());
    assert_eq!(p.rx.counters().messages, n);
    assert!(p.tx.offer(1, &msg).is_ok());
}

#[test]
fn close_reaches_the_peer() {
    let mut p = connected_pair(Config::default());
    p.tx.offer(1, b"last").unwrap();
    let until = p.now + Duration::from_millis(10);
    while p.now < until {
        p.pump().unwrap();
        assert!(p.advance(Some(until)));
    }
    p.tx.close(p.now);
    assert_eq!(p.tx.offer(1, b"x"), Err(OfferError::Closed));
    let until = p.now + Duration::from_millis(10);
    while p.now < until {
        p.pump().unwrap();
        p.advance(Some(until));
    }
    assert!(p.rx_events.contains(&Event::Closed), "{:?}", p.rx_events);
    assert!(!p.rx.is_connected());

    // Receiver-initiated close: the sender learns and stops.
    let mut p = connected_pair(Config::default());
    p.rx.close(p.now);
    let until = p.now + Duration::from_millis(10);
    while p.now < until {
        p.pump().unwrap();
        p.advance(Some(until));
    }
    assert!(p.tx_events.contains(&Event::Closed), "{:?}", p.tx_events);
}

/// `offer_and_transmit` builds exactly the datagram `poll_transmit` would have sent first, or
/// none when something else comes first; either way the datagrams that follow are the same.
/// Two pairs from one seed run side by side, one with each path, through small and
/// fragmented messages and a full window.
#[test]
fn offer_and_transmit_sends_what_poll_transmit_would() {
    let cfg = Config {
        mtu: 1408,
        window: 16 << 10,
        ..Config::default()
    };
    // Loss makes repairs that come before new data; both pairs lose the same datagrams.
    let mut link = LinkConfig::perfect(Duration::from_micros(20));
    link.loss = 0.05;
    let mut a = connected_pair_on(cfg.clone(), link.clone());
    let mut b = connected_pair_on(cfg, link);
    let mut buf = vec![0u8; 2048];
    let (mut built, mut not_built) = (0, 0);
    for i in 0..400u32 {
        let len = [8, 32, 1000, 3000, 0, 64][i as usize % 6];
        let payload = vec![i as u8; len];
        if i % 50 == 26 {
            // Time jumps past the RTT probe interval: the probe is due with the next offer.
            a.now += Duration::from_millis(150);
            b.now += Duration::from_millis(150);
        }
        if i % 10 == 5 {
            // Older data not sent yet: the next offer is not alone.
            assert_eq!(a.tx.offer(999, &[1; 16]), b.tx.offer(999, &[1; 16]));
        }
        let ra = a.tx.offer(i, &payload);
        let rb = b.tx.offer_and_transmit(b.now, i, &payload, &mut buf);
        let mut sent_a = Vec::new();
        let mut sent_b = Vec::new();
        // Built, with everything offered sent.
        let mut built_now = false;
        match (ra, rb) {
            (Ok(pa), Ok((pb, first))) => {
                assert_eq!(pa, pb);
                match first {
                    Some(n) => {
                        built += 1;
                        built_now = b.tx.all_sent();
                        sent_b.push(buf[..n].to_vec());
                    }
                    None => not_built += 1,
                }
            }
            (Err(ea), Err(eb)) => assert_eq!(ea, eb),
            (ra, rb) => panic!("offer {i}: {ra:?} against {rb:?}"),
        }
        for (p, sent) in [(&mut a, &mut sent_a), (&mut b, &mut sent_b)] {
            let now = p.now;
            while let Some(t) = p.tx.poll_transmit(now, 1, &mut buf) {
                sent.push(buf[..t.len].to_vec());
            }
            for d in sent.iter() {
                p.net.send(now, TX, proto_common::RX, d);
            }
        }
        assert_eq!(sent_a, sent_b, "offer {i}");
        // A built datagram with everything sent means nothing else was due: the UDP
        // publication then skips poll_transmit.
        if built_now {
            assert_eq!(
                sent_b.len(),
                1,
                "offer {i}: more was due after the built datagram"
            );
        }
        // Let acknowledgements flow now and then, so the window fills and empties.
        // Now and then the time moves past the RTT probe interval.
        if i % 40 == 0 {
            let step = if i % 120 == 0 { 150_000 } else { 100 };
            for p in [&mut a, &mut b] {
                let until = p.now + Duration::from_micros(step);
                for _ in 0..200 {
                    p.pump().unwrap();
                    if !p.advance(Some(until)) || p.now >= until {
                        break;
                    }
                }
            }
        }
    }
    assert!(
        built > 50 && not_built > 10,
        "built {built}, not built {not_built}"
    );
}

/// Splits the batch `poll_transmit` wrote into its datagrams, checking that all but the last
/// are `segment_size` long and the last is not longer.
fn segments(buf: &[u8], t: conduit_proto::Transmit) -> Vec<Vec<u8>> {
    assert!(t.segment_size > 0 && t.len > 0, "{t:?}");
    let v: Vec<Vec<u8>> = buf[..t.len]
        .chunks(t.segment_size)
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(v.len(), t.datagrams());
    v
}

/// `poll_transmit` with room for many datagrams sends exactly the datagrams, in the same
/// order, that one-at-a-time calls send, batched by size (a larger datagram is held for the
/// next batch, never built twice or dropped). Two pairs from one seed run side by side over
/// the same lossy link (repairs, heartbeats and probes between the data), one drained a
/// datagram at a time, the other in batches of up to 64.
#[test]
fn batched_poll_transmit_sends_what_single_calls_send() {
    let cfg = Config {
        mtu: 1408,
        window: 64 << 10,
        ..Config::default()
    };
    let mut link = LinkConfig::perfect(Duration::from_micros(20));
    link.loss = 0.05;
    let mut a = connected_pair_on(cfg.clone(), link.clone());
    let mut b = connected_pair_on(cfg, link);
    let mut one = vec![0u8; 2048];
    let mut many = vec![0u8; 64 << 10];
    let (mut batches, mut multi) = (0, 0);
    for i in 0..600u32 {
        let len = [8, 32, 1000, 3000, 0, 64, 200][i as usize % 7];
        let payload = vec![i as u8; len];
        for _ in 0..1 + i % 5 {
            assert_eq!(a.tx.offer(i, &payload), b.tx.offer(i, &payload));
        }
        // The pairs started at different instants; each keeps its own clock.
        let now = a.now;
        let mut single = (Vec::new(), Vec::new());
        while let Some(t) = a.tx.poll_transmit(now, 1, &mut one) {
            assert_eq!(t.len, t.segment_size);
            single.0.push(one[..t.len].to_vec());
        }
        while let Some(t) = a.rx.poll_transmit(now, 1, &mut one) {
            single.1.push((t.destination, one[..t.len].to_vec()));
        }
        let mut batched = (Vec::new(), Vec::new());
        let now = b.now;
        while let Some(t) = b.tx.poll_transmit(now, 64, &mut many) {
            batches += 1;
            multi += usize::from(t.datagrams() > 1);
            batched.0.extend(segments(&many, t));
        }
        while let Some(t) = b.rx.poll_transmit(now, 64, &mut many) {
            batched
                .1
                .extend(segments(&many, t).into_iter().map(|d| (t.destination, d)));
        }
        assert_eq!(single.0, batched.0, "sender, step {i}");
        assert_eq!(single.1, batched.1, "receiver, step {i}");
        for p in [&mut a, &mut b] {
            let now = p.now;
            for d in &single.0 {
                p.net.send(now, TX, proto_common::RX, d);
            }
            for (to, d) in &single.1 {
                p.net.send(now, proto_common::RX, *to, d);
            }
            let until = p.now + Duration::from_micros(if i % 50 == 0 { 150_000 } else { 200 });
            for _ in 0..200 {
                p.pump().unwrap();
                if !p.advance(Some(until)) || p.now >= until {
                    break;
                }
            }
        }
    }
    assert!(
        multi > 50 && batches > multi,
        "{multi} of {batches} batches"
    );
}
