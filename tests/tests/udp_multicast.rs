//! UDP multicast on the loopback interface of a fresh network namespace: one
//! publication to a group, four subscriptions joined to it on one host
//! (sharing the group's port), IPv4 (on `lo`) and IPv6 (on a veth pair); a
//! `flow=tagged` publication that an idle untagged subscription does not hold
//! back; a `flow=min` publication that goes on once an idle subscription
//! times out; an io_uring publication; a C publisher (through the C ABI).
//!
//! The test re-runs itself under `unshare -n` and, inside the new namespace
//! only, turns multicast on for `lo`, adds a veth pair for IPv6 and routes
//! the multicast ranges (never on the host's namespaces). Needs root and `unshare`/`ip`: prints
//! `SKIP` otherwise, and fails under `CI=true`.

mod c_support;

use std::process::Command;
use std::time::{Duration, Instant};

use conduit::{Error, Publication, ReceiverEvent, ReceiverGoneReason, Subscription};
use conduit_test_util::watchdog;

const INNER: &str = "CONDUIT_MCAST_NETNS_INNER";

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `name` again inside a new network namespace (`true`), or says that
/// this is that run (`false`: go on with the test). Skips (or fails under CI)
/// when namespaces cannot be made here.
fn in_fresh_netns(name: &str) -> bool {
    if std::env::var_os(INNER).is_some() {
        run("ip", &["link", "set", "lo", "up"]).unwrap();
        run("ip", &["link", "set", "lo", "multicast", "on"]).unwrap();
        run("ip", &["route", "add", "224.0.0.0/4", "dev", "lo"]).unwrap();
        // IPv6 multicast does not loop back on `lo`: a veth pair (its far
        // end up, unused) with an address, and the multicast range routed
        // to it.
        run(
            "ip",
            &["link", "add", "mc0", "type", "veth", "peer", "name", "mc1"],
        )
        .unwrap();
        run("ip", &["link", "set", "mc1", "up"]).unwrap();
        run("ip", &["link", "set", "mc0", "multicast", "on", "up"]).unwrap();
        run(
            "ip",
            &["-6", "addr", "add", "fd00::1/64", "dev", "mc0", "nodad"],
        )
        .unwrap();
        run(
            "ip",
            &[
                "-6", "route", "add", "ff00::/8", "dev", "mc0", "table", "local",
            ],
        )
        .unwrap();
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("unshare")
        .arg("-n")
        .arg("--")
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .status();
    let skip = |reason: String| {
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("multicast namespace test cannot run in CI: {reason}");
        }
        println!("SKIP: multicast namespace test: {reason}");
    };
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            if run("unshare", &["-n", "true"]).is_err() {
                skip("cannot create a network namespace (needs root)".into());
            } else {
                panic!("{name} failed in its namespace: {s}");
            }
        }
        Err(e) => skip(format!("unshare: {e}")),
    }
    true
}

/// Streams `total` messages from `publ` to every subscription; each must get
/// all of them, in order, exactly once.
fn stream(publ: &mut Publication, subs: &mut [Subscription], total: u64) {
    let end = Instant::now() + Duration::from_secs(120);
    while !publ.is_connected() {
        for s in subs.iter_mut() {
            s.poll(|_| {}, 64).unwrap();
        }
        assert!(Instant::now() < end, "no handshake with the group");
    }
    let mut next = vec![0u64; subs.len()];
    let mut sent = 0u64;
    while next.iter().any(|&n| n < total) {
        assert!(
            Instant::now() < end,
            "stalled: sent {sent}, received {next:?}"
        );
        while sent < total {
            match publ.offer(1, &sent.to_le_bytes()) {
                Ok(_) => sent += 1,
                Err(Error::BackPressured | Error::NotConnected) => break,
                Err(e) => panic!("offer: {e}"),
            }
        }
        // Progress (repairs, heartbeats) runs inside the publication's calls.
        publ.is_connected();
        for (s, n) in subs.iter_mut().zip(next.iter_mut()) {
            s.poll(
                |m| {
                    let seq = u64::from_le_bytes(m.payload().try_into().unwrap());
                    assert_eq!(seq, *n, "out of order or duplicate");
                    *n += 1;
                },
                1024,
            )
            .unwrap();
        }
    }
}

fn four_subscriptions(group: &str, iface: &str) {
    let uri = format!("udp://{group}?driver=socket&{iface}");
    let mut subs: Vec<Subscription> = (0..4)
        .map(|_| Subscription::open(&uri).expect("join the group"))
        .collect();
    let mut publ = Publication::open(&format!("{uri}&ttl=1&flow=min")).unwrap();
    stream(&mut publ, &mut subs, 200_000);
}

#[test]
fn ipv4_group_four_subscriptions_on_one_host() {
    let _w = watchdog("ipv4 group", 300);
    if in_fresh_netns("ipv4_group_four_subscriptions_on_one_host") {
        return;
    }
    four_subscriptions("239.7.7.7:41000", "iface=127.0.0.1");
}

#[test]
fn ipv6_group_four_subscriptions_on_one_host() {
    let _w = watchdog("ipv6 group", 300);
    if in_fresh_netns("ipv6_group_four_subscriptions_on_one_host") {
        return;
    }
    four_subscriptions("[ff15::7:7]:41001", "iface=mc0");
}

#[test]
fn tagged_flow_is_not_held_back_by_an_untagged_subscription() {
    let _w = watchdog("tagged flow", 300);
    if in_fresh_netns("tagged_flow_is_not_held_back_by_an_untagged_subscription") {
        return;
    }
    let uri = "udp://239.7.7.8:41002?driver=socket&iface=127.0.0.1";
    let mut tagged = vec![Subscription::open(&format!("{uri}&group_tag=7")).unwrap()];
    // Joined, never polled after the handshake: it would hold a `flow=min`
    // publication back at one window.
    let mut idle = Subscription::open(uri).unwrap();
    // A receiver timeout far beyond the stream's deadline: only not counting
    // the idle subscription lets the stream finish.
    let mut publ = Publication::open(&format!(
        "{uri}&flow=tagged&group_tag=7&min_receivers=1&receiver_timeout=600s"
    ))
    .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    // Both subscriptions take the session (the idle one then stops).
    while !(publ.is_connected() && idle.is_connected() && tagged[0].is_connected()) {
        idle.poll(|_| {}, 64).unwrap();
        tagged[0].poll(|_| {}, 64).unwrap();
        assert!(Instant::now() < end, "no handshake");
    }
    stream(&mut publ, &mut tagged, 100_000);
}

/// The message pattern of ffi/tests/c/interop.c.
fn c_pattern_ok(k: u64, type_id: u32, payload: &[u8]) -> bool {
    type_id == 1000 + (k % 7) as u32
        && payload.len() == (k % 97) as usize
        && payload
            .iter()
            .enumerate()
            .all(|(j, b)| *b == ((k * 31 + j as u64) & 0xff) as u8)
}

#[test]
fn c_publishes_to_a_group() {
    let _w = watchdog("c group publisher", 300);
    if in_fresh_netns("c_publishes_to_a_group") {
        return;
    }
    const MESSAGES: u64 = 50_000;
    let dir = c_support::scratch("c-group");
    let exe = c_support::compile("tests/c/interop.c", &dir, c_support::Link::Static);
    let uri = "udp://239.7.7.9:41003?driver=socket&iface=127.0.0.1&ttl=1";
    let mut subs: Vec<Subscription> = (0..2).map(|_| Subscription::open(uri).unwrap()).collect();
    let mut cmd = Command::new(&exe);
    cmd.args(["publish", uri, &MESSAGES.to_string()]);
    let child = c_support::spawn(cmd, "C group publisher");
    let mut next = [0u64; 2];
    let end = Instant::now() + Duration::from_secs(120);
    while next.iter().any(|&n| n < MESSAGES) {
        assert!(Instant::now() < end, "stalled at {next:?}");
        for (s, n) in subs.iter_mut().zip(next.iter_mut()) {
            s.poll(
                |m| {
                    assert!(c_pattern_ok(*n, m.type_id(), m.payload()), "message {n}");
                    *n += 1;
                },
                256,
            )
            .unwrap();
        }
    }
    // Keep acknowledging until the C publisher's flush returns.
    let mut child = child;
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        for s in subs.iter_mut() {
            let _ = s.poll(|_| {}, 256);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < end, "the C publisher did not finish");
    }
    let out = c_support::wait(child, "C group publisher");
    let stdout = c_support::expect_success(&out, "C group publisher");
    assert!(
        stdout.contains(&format!("published {MESSAGES}")),
        "{stdout}"
    );
}

#[test]
fn uring_publication_to_a_group() {
    let _w = watchdog("uring group publisher", 300);
    if in_fresh_netns("uring_publication_to_a_group") || !conduit_test_util::uring_or_skip() {
        return;
    }
    let uri = "udp://239.7.7.10:41004?iface=127.0.0.1";
    let mut subs: Vec<Subscription> = (0..2)
        .map(|_| Subscription::open(&format!("{uri}&driver=socket")).unwrap())
        .collect();
    // Joining needs the socket driver: io_uring is refused for a subscription.
    assert!(Subscription::open(&format!("{uri}&driver=uring")).is_err());
    let mut publ = Publication::open(&format!("{uri}&driver=uring")).unwrap();
    stream(&mut publ, &mut subs, 100_000);
}

#[test]
fn min_flow_resumes_after_a_stopped_subscription_times_out() {
    let _w = watchdog("min flow timeout", 300);
    if in_fresh_netns("min_flow_resumes_after_a_stopped_subscription_times_out") {
        return;
    }
    let uri = "udp://239.7.7.11:41005?driver=socket&iface=127.0.0.1";
    let mut live = vec![Subscription::open(uri).unwrap()];
    // Joined, then never polled again (as if stopped): it holds a `flow=min`
    // publication back until the receiver timeout drops it from the set.
    let mut stopped = Subscription::open(uri).unwrap();
    let mut publ = Publication::open(&format!("{uri}&flow=min&receiver_timeout=1s")).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !(publ.is_connected() && stopped.is_connected() && live[0].is_connected()) {
        stopped.poll(|_| {}, 64).unwrap();
        live[0].poll(|_| {}, 64).unwrap();
        assert!(Instant::now() < end, "no handshake");
    }
    stream(&mut publ, &mut live, 100_000);
}

/// CPU time of the calling thread (user + system), from `/proc/thread-self/stat`.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, in clock ticks (100 per second here).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// The publication's thread CPU time per message with `n` subscriptions
/// polled by another thread.
fn publisher_cpu_per_message(n: usize, port: u16, total: u64) -> Duration {
    let uri = format!("udp://239.7.7.12:{port}?driver=socket&iface=127.0.0.1");
    let subs: Vec<Subscription> = (0..n).map(|_| Subscription::open(&uri).unwrap()).collect();
    let mut publ = Publication::open(&uri).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    let reader = std::thread::spawn(move || {
        let mut subs = subs;
        let mut next = vec![0u64; subs.len()];
        // Until the publication is flushed: closing earlier would end its
        // session before it saw the last acknowledgements.
        while !d.load(std::sync::atomic::Ordering::Relaxed) {
            for (s, k) in subs.iter_mut().zip(next.iter_mut()) {
                s.poll(|_| *k += 1, 1024).unwrap();
            }
        }
        next
    });
    let end = Instant::now() + Duration::from_secs(120);
    while !publ.is_connected() {
        assert!(Instant::now() < end, "no handshake");
    }
    // Let every subscription join before timing.
    let settle = Instant::now() + Duration::from_millis(200);
    while Instant::now() < settle {
        publ.is_connected();
    }
    let cpu = thread_cpu();
    let mut sent = 0;
    while sent < total {
        assert!(Instant::now() < end, "stalled at {sent}");
        match publ.offer(1, &sent.to_le_bytes()) {
            Ok(_) => sent += 1,
            Err(Error::BackPressured | Error::NotConnected) => {}
            Err(e) => panic!("offer: {e}"),
        }
    }
    let flushed = publ.flush(Duration::from_secs(60));
    let cpu = thread_cpu() - cpu;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let got = reader.join().unwrap();
    flushed.unwrap();
    assert!(got.iter().all(|&g| g == total), "{got:?}");
    cpu / total as u32
}

#[test]
fn publisher_cpu_with_four_subscriptions_and_one() {
    let _w = watchdog("publisher cpu", 300);
    if in_fresh_netns("publisher_cpu_with_four_subscriptions_and_one") {
        return;
    }
    let total = 300_000;
    let one = publisher_cpu_per_message(1, 41006, total);
    let four = publisher_cpu_per_message(4, 41007, total);
    println!(
        "publisher CPU per message ({total} messages, one host): 1 subscription {one:?}, 4 subscriptions {four:?} ({:.2}x)",
        four.as_secs_f64() / one.as_secs_f64().max(1e-12)
    );
}

/// The receiver events of `publ` so far, driving `subs` meanwhile.
fn receiver_events(publ: &mut Publication, subs: &mut [&mut Subscription]) -> Vec<ReceiverEvent> {
    for s in subs.iter_mut() {
        s.poll(|_| {}, 64).unwrap();
    }
    std::iter::from_fn(|| publ.poll_receiver_event()).collect()
}

#[test]
fn group_publication_sees_its_receivers_join_and_leave() {
    let _w = watchdog("receiver events", 300);
    if in_fresh_netns("group_publication_sees_its_receivers_join_and_leave") {
        return;
    }
    let uri = "udp://239.7.7.13:41008?driver=socket&iface=127.0.0.1";
    let mut live = Subscription::open(uri).unwrap();
    let mut stopped = Subscription::open(&format!("{uri}&group_tag=9")).unwrap();
    let mut publ = Publication::open(&format!("{uri}&flow=min&receiver_timeout=1s")).unwrap();
    assert_eq!(publ.subscriber_count(), 0);
    let end = Instant::now() + Duration::from_secs(20);
    let mut joined = Vec::new();
    // When the call that brought the tagged receiver's join began: the
    // publisher heard it no earlier, so its timeout cannot fire before a
    // second after this (a later instant, such as after the wait below, is
    // no bound: the receiver may have been heard last before it).
    let mut tagged_heard_from = None;
    while joined.len() < 2 {
        assert!(Instant::now() < end, "joined: {joined:?}");
        let t = Instant::now();
        for e in receiver_events(&mut publ, &mut [&mut live, &mut stopped]) {
            match e {
                ReceiverEvent::Joined { addr, tag, .. } => {
                    if tag == Some(9) {
                        tagged_heard_from = Some(t);
                    }
                    joined.push((addr, tag))
                }
                e => panic!("{e:?} before both joined"),
            }
        }
    }
    assert_ne!(joined[0].0, joined[1].0, "one address per receiver");
    let mut tags: Vec<_> = joined.iter().map(|j| j.1).collect();
    tags.sort();
    assert_eq!(tags, [None, Some(9)]);
    assert_eq!(
        publ.wait_for_subscribers(2, Duration::from_secs(5))
            .unwrap(),
        2
    );

    // One is never polled again (as if stopped): gone once the receiver
    // timeout passes, while the other one keeps its place.
    let silent_since = tagged_heard_from.expect("the tagged receiver joined");
    let gone = loop {
        assert!(Instant::now() < end, "no receiver timed out");
        let events = receiver_events(&mut publ, &mut [&mut live]);
        if let Some(e) = events.first() {
            assert_eq!(events.len(), 1, "{events:?}");
            break *e;
        }
    };
    let ReceiverEvent::Gone { addr, reason, .. } = gone else {
        panic!("{gone:?}");
    };
    assert_eq!(reason, ReceiverGoneReason::TimedOut);
    let stopped_addr = joined.iter().find(|j| j.1 == Some(9)).unwrap().0;
    assert_eq!(addr, stopped_addr, "the silent one timed out");
    assert!(
        silent_since.elapsed() >= Duration::from_secs(1),
        "before the receiver timeout"
    );
    assert_eq!(publ.subscriber_count(), 1);

    // The other one closes: it leaves at once.
    let live_addr = joined.iter().find(|j| j.1.is_none()).unwrap().0;
    drop(live);
    let left = loop {
        assert!(Instant::now() < end, "the closed receiver did not leave");
        if let Some(e) = publ.poll_receiver_event() {
            break e;
        }
    };
    assert!(
        matches!(left, ReceiverEvent::Gone { addr, reason: ReceiverGoneReason::Left, .. } if addr == live_addr),
        "{left:?}"
    );
    assert_eq!(publ.subscriber_count(), 0);
    assert_eq!(publ.counters().receiver_events_dropped, 0);
    drop(stopped);
}

#[test]
fn c_group_publisher_sees_its_receivers_join() {
    let _w = watchdog("c receiver events", 300);
    if in_fresh_netns("c_group_publisher_sees_its_receivers_join") {
        return;
    }
    const MESSAGES: u64 = 1_000;
    let dir = c_support::scratch("c-receivers");
    let exe = c_support::compile("tests/c/interop.c", &dir, c_support::Link::Static);
    let uri = "udp://239.7.7.14:41009?driver=socket&iface=127.0.0.1&ttl=1&min_receivers=2&flow=tagged&group_tag=0";
    let sub_uri = "udp://239.7.7.14:41009?driver=socket&iface=127.0.0.1&group_tag=0";
    let mut subs: Vec<Subscription> = (0..2)
        .map(|_| Subscription::open(sub_uri).unwrap())
        .collect();
    let mut cmd = Command::new(&exe);
    cmd.args(["publish", uri, &MESSAGES.to_string()]);
    let mut child = c_support::spawn(cmd, "C group publisher");
    let end = Instant::now() + Duration::from_secs(120);
    // Acknowledge until the C publisher's flush returns.
    while child.try_wait().unwrap().is_none() {
        for s in subs.iter_mut() {
            let _ = s.poll(|_| {}, 256);
        }
        assert!(Instant::now() < end, "the C publisher did not finish");
    }
    let out = c_support::wait(child, "C group publisher");
    let stdout = c_support::expect_success(&out, "C group publisher");
    assert!(stdout.contains("receivers joined 2"), "{stdout}");
}
