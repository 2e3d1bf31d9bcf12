//! Loopback tests of a subscription with several publisher sessions: every
//! session's stream whole and in order with its source and positions,
//! session events, refusal beyond `max_sessions`, fair polling (measured,
//! printed), and a throughput figure per session (ignored; run by hand).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conduit_test_util::{free_udp_ports, watchdog};

use crate::uri::ChannelUri;
use crate::{Error, GoneReason, SessionEvent, Source};

use super::{UdpPublication, UdpSubscription};

fn open_sub(opts: &str) -> (UdpSubscription, SocketAddr) {
    let sub =
        UdpSubscription::open(ChannelUri::parse(&format!("udp://127.0.0.1:0?{opts}")).unwrap())
            .unwrap();
    let addr = sub.local_addr().unwrap();
    (sub, addr)
}

fn open_pub(to: SocketAddr, bind: SocketAddr, opts: &str) -> UdpPublication {
    UdpPublication::open(ChannelUri::parse(&format!("udp://{to}?bind={bind}&{opts}")).unwrap())
        .unwrap()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Per source: the next sequence number expected and the last position.
#[derive(Default)]
struct PerSource {
    next: u64,
    last_pos: Option<u64>,
}

/// Three publications into one subscription (default `max_sessions`): each
/// stream arrives whole, exactly once and in order, with its publisher's
/// address and session as source and growing positions; three joins are
/// reported, and a closed publication is reported gone (closed).
fn three_publishers(driver: &str) {
    let _w = watchdog("three_publishers", 120);
    let (mut sub, to) = open_sub(&format!("driver={driver}"));
    let ports = free_udp_ports::<3>();
    let mut pubs: Vec<_> = ports
        .iter()
        .map(|&p| open_pub(to, local(p), &format!("driver={driver}")))
        .collect();
    let count = 20_000u64;
    let mut sent = [0u64; 3];
    let mut got: HashMap<SocketAddr, PerSource> = HashMap::new();
    let mut sessions: HashMap<SocketAddr, u32> = HashMap::new();
    let end = Instant::now() + Duration::from_secs(60);
    let done = |got: &HashMap<SocketAddr, PerSource>| {
        got.len() == 3 && got.values().all(|s| s.next == count)
    };
    while !done(&got) {
        assert!(Instant::now() < end, "stalled: {:?}", sub.counters());
        for (i, p) in pubs.iter_mut().enumerate() {
            if sent[i] < count {
                let mut m = [0u8; 16];
                m[..8].copy_from_slice(&sent[i].to_le_bytes());
                m[8..].copy_from_slice(&(i as u64).to_le_bytes());
                match p.offer(i as u32, &m) {
                    Ok(_) => sent[i] += 1,
                    Err(Error::BackPressured | Error::NotConnected) => {}
                    Err(e) => panic!("publisher {i}: {e}"),
                }
            } else {
                p.is_connected();
            }
        }
        sub.poll(
            |m| {
                let Some(Source::Udp { addr, session }) = m.source() else {
                    panic!("no UDP source: {m:?}");
                };
                let i = m.type_id() as usize;
                assert_eq!(addr, local(ports[i]), "source address of publisher {i}");
                assert_eq!(*sessions.entry(addr).or_insert(session), session);
                let seq = u64::from_le_bytes(m.payload()[..8].try_into().unwrap());
                let s = got.entry(addr).or_default();
                assert_eq!(seq, s.next, "publisher {i}: out of order or duplicate");
                assert!(s.last_pos.is_none_or(|l| m.position() > l));
                s.next += 1;
                s.last_pos = Some(m.position());
            },
            64,
        )
        .unwrap();
    }
    let mut joined = Vec::new();
    while let Some(e) = sub.poll_session_event() {
        if let SessionEvent::Joined {
            source: Source::Udp { addr, session },
        } = e
        {
            assert_eq!(sessions.get(&addr), Some(&session));
            joined.push(addr);
        }
    }
    joined.sort();
    let mut want: Vec<_> = ports.iter().map(|&p| local(p)).collect();
    want.sort();
    assert_eq!(joined, want);
    // The first publication closes: reported gone, the others stay.
    let first = pubs.remove(0);
    drop(first);
    let gone = SessionEvent::Gone {
        source: Source::Udp {
            addr: local(ports[0]),
            session: sessions[&local(ports[0])],
        },
        reason: GoneReason::Closed,
    };
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match sub.poll(|_| {}, 64) {
            Ok(_) | Err(Error::Closed) => {}
            Err(e) => panic!("poll: {e}"),
        }
        if let Some(e) = sub.poll_session_event() {
            assert_eq!(e, gone);
            break;
        }
        assert!(Instant::now() < end, "close not reported");
    }
    assert!(sub.is_connected());
}

#[test]
fn three_publishers_socket() {
    three_publishers("socket");
}

#[test]
fn three_publishers_uring() {
    if cfg!(feature = "uring") && conduit_test_util::uring_or_skip() {
        three_publishers("uring");
    }
}

/// `max_sessions=2`: a third publication is refused (its offers say so)
/// while both others are live, and nothing of it is delivered.
#[test]
fn third_publisher_beyond_max_sessions_is_refused() {
    let _w = watchdog("third_publisher_refused", 120);
    let (mut sub, to) = open_sub("driver=socket&max_sessions=2");
    let ports = free_udp_ports::<3>();
    let mut pubs: Vec<_> = ports
        .iter()
        .map(|&p| open_pub(to, local(p), "driver=socket"))
        .collect();
    let end = Instant::now() + Duration::from_secs(30);
    while !(pubs[0].is_connected() && pubs[1].is_connected()) {
        assert!(Instant::now() < end, "the first two never connected");
        sub.poll(|_| {}, 64).unwrap();
    }
    let mut refused = false;
    let mut delivered = [0u64; 3];
    while !refused {
        assert!(Instant::now() < end, "the third was never refused");
        for (i, p) in pubs.iter_mut().enumerate() {
            match p.offer(i as u32, &[0u8; 8]) {
                Ok(_) | Err(Error::BackPressured | Error::NotConnected) => {}
                Err(Error::SessionRefused) if i == 2 => refused = true,
                Err(e) => panic!("publisher {i}: {e}"),
            }
        }
        sub.poll(|m| delivered[m.type_id() as usize] += 1, 64)
            .unwrap();
    }
    assert_eq!(delivered[2], 0);
    let refusals = sub
        .counters()
        .drops_by_reason
        .iter()
        .find(|(k, _)| *k == "session_refused")
        .map_or(0, |(_, v)| *v);
    assert!(refusals > 0);
}

/// Fair polling, measured: one publication floods (as fast as the window
/// lets it), another sends a timestamp every millisecond. Every quiet
/// message arrives; the delays are printed (`--nocapture`), not asserted
/// (the machine's load decides them).
#[test]
fn a_busy_session_does_not_starve_a_quiet_one() {
    let _w = watchdog("busy_and_quiet", 120);
    let (mut sub, to) = open_sub("driver=socket");
    let [busy_port, quiet_port] = free_udp_ports::<2>();
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let quiet_total = 1000u64;
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut p = open_pub(to, local(busy_port), "driver=socket");
            let payload = [7u8; 1024];
            let mut n = 0u64;
            // Relaxed: a stop request carries no data.
            while !stop.load(Ordering::Relaxed) {
                match p.offer(1, &payload) {
                    Ok(_) => n += 1,
                    Err(Error::BackPressured | Error::NotConnected) => std::thread::yield_now(),
                    Err(e) => panic!("busy: {e}"),
                }
            }
            n
        })
    };
    let quiet = std::thread::spawn(move || {
        let mut p = open_pub(to, local(quiet_port), "driver=socket");
        let end = Instant::now() + Duration::from_secs(30);
        while !p.is_connected() {
            assert!(Instant::now() < end, "quiet never connected");
            std::thread::sleep(Duration::from_micros(100));
        }
        let mut next = Instant::now();
        let mut i = 0u64;
        while i < quiet_total {
            next += Duration::from_millis(1);
            while Instant::now() < next {
                p.is_connected();
                std::thread::sleep(Duration::from_micros(100));
            }
            let t = epoch.elapsed().as_nanos() as u64;
            loop {
                match p.offer(2, &t.to_le_bytes()) {
                    Ok(_) => break,
                    Err(Error::BackPressured) => p.is_connected(),
                    Err(e) => panic!("quiet: {e}"),
                };
            }
            i += 1;
        }
        let _ = p.flush(Duration::from_secs(10));
        // Kept open until the subscriber has everything.
        p
    });
    let mut delays = Vec::new();
    let mut busy_got = 0u64;
    let end = Instant::now() + Duration::from_secs(60);
    while (delays.len() as u64) < quiet_total {
        assert!(
            Instant::now() < end,
            "quiet messages missing: {} of {quiet_total}",
            delays.len()
        );
        sub.poll(
            |m| {
                if m.type_id() == 2 {
                    let t = u64::from_le_bytes(m.payload().try_into().unwrap());
                    delays.push(epoch.elapsed().as_nanos() as u64 - t);
                } else {
                    busy_got += 1;
                }
            },
            16,
        )
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let busy_sent = busy.join().unwrap();
    drop(quiet.join().unwrap());
    delays.sort_unstable();
    let q = |f: f64| delays[((delays.len() - 1) as f64 * f) as usize] as f64 / 1000.0;
    println!(
        "fairness: quiet session {} messages, delay p50 {:.0} us, p99 {:.0} us, max {:.0} us; \
         busy session {busy_got} received of {busy_sent} offered meanwhile",
        delays.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
    assert!(busy_got > 0, "the busy session delivered nothing");
}

/// Throughput per session with 1, 3 and 8 publications into one
/// subscription (64-byte messages, 2 s each, socket driver), printed. Run
/// by hand on a quiet machine:
/// `cargo test -p conduit --release --lib sessions_tests::throughput_per_session -- --ignored --nocapture`
#[test]
#[ignore = "a figure for the README, run by hand on a quiet machine"]
fn throughput_per_session() {
    for n in [1usize, 3, 8] {
        let (mut sub, to) = open_sub("driver=socket&max_sessions=8");
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut p = open_pub(to, local(0), "driver=socket&linger=50us");
                    let payload = [1u8; 64];
                    // Relaxed: a stop request carries no data.
                    while !stop.load(Ordering::Relaxed) {
                        match p.offer(1, &payload) {
                            Ok(_) | Err(Error::BackPressured | Error::NotConnected) => {}
                            Err(e) => panic!("publisher: {e}"),
                        }
                    }
                })
            })
            .collect();
        // Warm up until every session delivered, then measure.
        let mut per: HashMap<Option<Source>, u64> = HashMap::new();
        let end = Instant::now() + Duration::from_secs(30);
        while per.len() < n {
            assert!(Instant::now() < end, "not every publisher connected");
            sub.poll(|m| *per.entry(m.source()).or_default() += 1, 1024)
                .unwrap();
        }
        per.clear();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            sub.poll(|m| *per.entry(m.source()).or_default() += 1, 1024)
                .unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        let mut rates: Vec<f64> = per.values().map(|&c| c as f64 / secs).collect();
        rates.sort_by(f64::total_cmp);
        let total: f64 = rates.iter().sum();
        println!(
            "sessions {n}: total {:.2} M msgs/s, per session min {:.2} / max {:.2} M msgs/s",
            total / 1e6,
            rates.first().copied().unwrap_or(0.0) / 1e6,
            rates.last().copied().unwrap_or(0.0) / 1e6
        );
    }
}
