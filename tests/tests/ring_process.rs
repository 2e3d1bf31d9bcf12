//! The ring across processes: a long checked run, `kill -9` of either side,
//! reuse of a stale file and pick-up of a restarted publisher. Helper
//! processes are `ring_peer` (src/bin/ring_peer.rs).
use conduit_test_util::{root_or_skip, watchdog, LineChild, TempDir};

use conduit_ringbuf::{OfferError, PollError, Publisher, RingConfig, Subscriber, WaitStrategy};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

const PEER: &str = env!("CARGO_BIN_EXE_ring_peer");

/// A scratch directory for ring files (on tmpfs when there is one), removed on drop.
struct Scratch(TempDir);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        Scratch(TempDir::on_tmpfs(&format!("ring-test-{tag}")))
    }

    fn arg(&self) -> &str {
        self.0.path().to_str().expect("utf-8 path")
    }
}

/// A `ring_peer` process, killed on drop.
struct Peer(LineChild);

impl Peer {
    fn spawn(args: &[&str]) -> Peer {
        Peer::spawn_as(args, None)
    }

    /// Spawns the peer, as user `uid` if given.
    fn spawn_as(args: &[&str], uid: Option<u32>) -> Peer {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(PEER);
        if let Some(uid) = uid {
            cmd.uid(uid);
        }
        cmd.args(args);
        Peer(LineChild::spawn(cmd, "ring_peer"))
    }

    /// Waits for a stdout line starting with `prefix`.
    fn expect_line(&self, prefix: &str) -> String {
        self.0.expect_line(prefix, Duration::from_secs(30))
    }
}

fn config(dir: &Scratch, capacity: usize) -> RingConfig {
    RingConfig {
        capacity,
        max_message_len: 1 << 10,
        max_subscribers: 8,
        max_publishers: 1,
        dir: Some(dir.0.path().to_path_buf()),
        mode: 0o600,
    }
}

/// The sequence number of a `ring_peer` message, checked like the peer does.
fn verify(payload: &[u8]) -> u64 {
    assert!(payload.len() >= 16, "short message");
    let seq = u64::from_le_bytes(payload[..8].try_into().unwrap());
    let sum = u64::from_le_bytes(payload[8..16].try_into().unwrap());
    let len = payload.len();
    assert_eq!(len, 16 + (seq % 7) as usize * 8, "length of message {seq}");
    let want = (seq ^ ((len as u64) << 56))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29);
    assert_eq!(sum, want, "checksum of message {seq}");
    for (k, b) in payload[16..].iter().enumerate() {
        assert_eq!(
            *b,
            (seq as u8).wrapping_add(k as u8),
            "message {seq} byte {k}"
        );
    }
    seq
}

#[test]
fn ten_million_checked_messages_between_processes() {
    let _watchdog = watchdog("ten_million_checked_messages_between_processes", 240);
    let dir = Scratch::new("10m");
    // Subscriber first: start order does not matter.
    let sub = Peer::spawn(&["subscribe", "bulk", dir.arg(), "10000000"]);
    let publ = Peer::spawn(&["publish", "bulk", dir.arg(), "10000000"]);
    sub.expect_line("ok 10000000");
    publ.expect_line("done 10000000");
    sub.0.wait_success();
    publ.0.wait_success();
}

#[test]
fn blocking_subscriber_across_processes() {
    let _watchdog = watchdog("blocking_subscriber_across_processes", 240);
    let dir = Scratch::new("block");
    let publ = Peer::spawn(&["publish", "blk", dir.arg(), "300000"]);
    publ.expect_line("created");
    let sub = Peer::spawn(&["subscribe", "blk", dir.arg(), "300000", "block"]);
    sub.expect_line("ok 300000");
    sub.0.wait_success();
    publ.0.wait_success();
}

#[test]
fn killed_subscriber_stops_holding_the_publisher_back() {
    let _watchdog = watchdog("killed_subscriber_stops_holding_the_publisher_back", 120);
    let dir = Scratch::new("killsub");
    let mut p = Publisher::create("ks", &config(&dir, 4096)).unwrap();
    let mut live = Subscriber::open("ks", Some(dir.0.path())).unwrap();
    let mut holder = Peer::spawn(&["hold", "ks", dir.arg()]);
    // The holder connects once the publisher has activated it.
    let (tx, rx) = mpsc::channel();
    let lines = std::mem::replace(&mut holder.0.lines, rx);
    std::thread::spawn(move || {
        for l in lines.iter() {
            let _ = tx.send(l);
        }
    });
    loop {
        p.is_connected();
        live.is_connected();
        match holder.0.lines.try_recv() {
            Ok(l) if l == "held" => break,
            Ok(_) | Err(mpsc::TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("holder: {e}"),
        }
    }
    assert_eq!(p.subscriber_count(), 2);
    // Fill the ring: the holder never reads.
    let mut sent = 0u32;
    let mut received = 0;
    loop {
        match p.offer(1, &sent.to_le_bytes()) {
            Ok(_) => sent += 1,
            Err(OfferError::BackPressured) => break,
            Err(e) => panic!("{e}"),
        }
        received += live.poll(|_, _| {}, usize::MAX).unwrap();
    }
    assert!(sent > 10);
    holder.0.kill9();
    // Within the documented bound the dead holder's slot is reclaimed; the
    // watchdog turns a failure into an abort, no time is asserted.
    while sent < 10_000 {
        match p.offer(1, &sent.to_le_bytes()) {
            Ok(_) => sent += 1,
            Err(OfferError::BackPressured) => std::hint::spin_loop(),
            Err(e) => panic!("{e}"),
        }
        received += live.poll(|_, _| {}, usize::MAX).unwrap();
    }
    assert_eq!(p.subscriber_count(), 1);
    while received < sent as usize {
        received += live.poll(|_, _| {}, usize::MAX).unwrap();
    }
    drop(live);
    while p.is_connected() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(p.offer(1, b"x"), Err(OfferError::NotConnected));
}

#[test]
fn killed_publisher_is_reported_stale_file_reused_and_restart_picked_up() {
    let _watchdog = watchdog(
        "killed_publisher_is_reported_stale_file_reused_and_restart_picked_up",
        120,
    );
    let dir = Scratch::new("killpub");
    let mut s = Subscriber::open("kp", Some(dir.0.path())).unwrap();
    let mut publ = Peer::spawn(&["publish", "kp", dir.arg(), "0"]);
    publ.expect_line("created");
    let mut next = 0u64;
    let poll = |s: &mut Subscriber, next: &mut u64| {
        s.poll(
            |_, b| {
                assert_eq!(verify(b), *next, "gap or reorder");
                *next += 1;
            },
            1024,
        )
    };
    while next < 100_000 {
        poll(&mut s, &mut next).unwrap();
    }
    publ.0.kill9();
    // Everything committed is delivered, then the death is reported.
    let gone = loop {
        match poll(&mut s, &mut next) {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert_eq!(gone, PollError::PublisherGone);
    let path = dir.0.join("kp");
    assert!(path.exists(), "a killed publisher leaves its file behind");
    // The next publisher reuses the name.
    let mut p2 = Publisher::create("kp", &config(&dir, 1 << 16)).expect("reuse a stale file");
    // The subscriber attaches to it on its own.
    while !(p2.is_connected() && s.is_connected()) {
        assert_eq!(s.poll(|_, _| panic!("stale data"), 10), Ok(0));
        std::thread::sleep(Duration::from_millis(1));
    }
    p2.offer(5, b"after restart").unwrap();
    let mut got = Vec::new();
    while got.is_empty() {
        s.wait(WaitStrategy::Block, Some(Duration::from_secs(1)))
            .unwrap();
        s.poll(|t, b| got.push((t, b.to_vec())), 10).unwrap();
    }
    assert_eq!(got, vec![(5, b"after restart".to_vec())]);
    // A live publisher is refused, naming its pid.
    let e = Publisher::create("kp", &config(&dir, 1 << 16))
        .err()
        .unwrap();
    assert!(e.to_string().contains("a live publisher (pid"), "{e}");
}

/// Polls `s` until it reports something other than `Ok`.
fn poll_until_err(s: &mut Subscriber) -> PollError {
    loop {
        match s.poll(|_, _| {}, 64) {
            Ok(0) => std::thread::sleep(Duration::from_micros(100)),
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

#[test]
fn a_reader_can_neither_deny_slots_nor_keep_a_dead_publisher_alive() {
    let _watchdog = watchdog(
        "a_reader_can_neither_deny_slots_nor_keep_a_dead_publisher_alive",
        120,
    );
    if !root_or_skip("a_reader_can_neither_deny_slots_nor_keep_a_dead_publisher_alive") {
        return;
    }
    let dir = Scratch::new("reader");
    let mut publ = Peer::spawn(&["idle", "rd", dir.arg(), "644"]);
    publ.expect_line("created");
    // Another user who can read the ring (mode 644) locks all it can open.
    let reader = Peer::spawn_as(&["readlock", "rd", dir.arg()], Some(65534));
    let line = reader.expect_line("locked");
    assert_eq!(line, "locked ring=1 lockfiles=0 denied=1");
    let mut subs: Vec<Subscriber> = (0..3)
        .map(|_| Subscriber::open("rd", Some(dir.0.path())).expect("a subscriber attaches"))
        .collect();
    for s in &mut subs {
        // The idle publisher activates joiners every 10 ms.
        while !s.is_connected() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    publ.0.kill9();
    for s in &mut subs {
        assert_eq!(poll_until_err(s), PollError::PublisherGone);
    }
}

#[test]
fn a_sleeper_killed_asleep_costs_the_publisher_nothing_once_reclaimed() {
    let _watchdog = watchdog(
        "a_sleeper_killed_asleep_costs_the_publisher_nothing_once_reclaimed",
        120,
    );
    let dir = Scratch::new("sleeper");
    let mut p = Publisher::create("zz", &config(&dir, 1 << 16)).unwrap();
    let mut sleeper = Peer::spawn(&["subscribe", "zz", dir.arg(), "1000000", "block"]);
    while !p.is_connected() {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Once it is asleep, a commit wakes it.
    let mut seq = 0u64;
    let mut offer = |p: &mut Publisher| loop {
        let len = 16 + (seq % 7) as usize * 8;
        let r = p.offer_with(1, len, |b| {
            b[..8].copy_from_slice(&seq.to_le_bytes());
            let sum = (seq ^ ((len as u64) << 56))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(29);
            b[8..16].copy_from_slice(&sum.to_le_bytes());
            for (k, x) in b[16..].iter_mut().enumerate() {
                *x = (seq as u8).wrapping_add(k as u8);
            }
        });
        match r {
            Ok(_) => {
                seq += 1;
                return;
            }
            Err(OfferError::BackPressured) => std::thread::yield_now(),
            Err(e) => panic!("offer: {e}"),
        }
    };
    while p.wake_calls() == 0 {
        std::thread::sleep(Duration::from_millis(50));
        offer(&mut p);
    }
    // Asleep again (it spins for microseconds, then sleeps), then killed.
    std::thread::sleep(Duration::from_millis(100));
    sleeper.0.kill9();
    while p.subscriber_count() != 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // A live spinning subscriber: the publisher's commits make no FUTEX_WAKE.
    let mut s = Subscriber::open("zz", Some(dir.0.path())).unwrap();
    while !(p.is_connected() && s.is_connected()) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = p.wake_calls();
    for _ in 0..1000 {
        offer(&mut p);
        while s
            .poll(
                |_, b| {
                    verify(b);
                },
                64,
            )
            .unwrap()
            > 0
        {}
    }
    assert_eq!(p.wake_calls(), before, "commits still wake a dead sleeper");
}

/// Fills message `seq` as `ring_peer` does.
fn fill(seq: u64, buf: &mut [u8]) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    let len = buf.len() as u64;
    let sum = (seq ^ (len << 56))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29);
    buf[8..16].copy_from_slice(&sum.to_le_bytes());
    for (k, b) in buf[16..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(k as u8);
    }
}

fn signal(peer: &Peer, sig: libc::c_int) {
    peer.0.signal(sig);
}

/// `slow=evict`: one subscriber stopped with SIGSTOP is evicted after about
/// `evict_after`; the publisher's longest stall stays near that, the other
/// subscriber gets everything, and after SIGCONT the stopped one reports
/// the eviction once and then reads live data.
#[test]
fn a_stopped_subscriber_is_evicted_and_the_others_go_on() {
    stopped_subscriber_evicted(1);
}

/// As above on a ring with two publishers, which take turns (so the
/// subscribers still see one sequence): either may be the one that evicts.
#[test]
fn a_stopped_subscriber_is_evicted_with_two_publishers() {
    stopped_subscriber_evicted(2);
}

fn stopped_subscriber_evicted(publishers: u32) {
    use conduit_ringbuf::{Retention, SlowPolicy};
    use std::time::Instant;
    let _watchdog = watchdog("a_stopped_subscriber_is_evicted_and_the_others_go_on", 180);
    let dir = Scratch::new("evict");
    // Long enough that the subscriber that keeps up is not evicted when this
    // busy machine deschedules it for a while.
    let after = Duration::from_secs(1);
    let retention = Retention {
        slow: SlowPolicy::Evict { after },
        history: 0,
    };
    let cfg = RingConfig {
        max_publishers: publishers,
        ..config(&dir, 1 << 16)
    };
    let mut pubs: Vec<Publisher> = (0..publishers)
        .map(|_| Publisher::create_with("evict", &cfg, &retention).unwrap())
        .collect();
    let evictions = |pubs: &[Publisher]| pubs.iter().map(Publisher::evictions).sum::<u64>();
    const N: u64 = 300_000;
    let all = Peer::spawn(&["subscribe", "evict", dir.arg(), &N.to_string()]);
    let stopped = Peer::spawn(&["evictee", "evict", dir.arg()]);
    let t0 = Instant::now();
    while pubs[0].subscriber_count() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "subscribers never attached"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut longest = Duration::ZERO;
    let mut cont_at = None;
    let mut buf = [0u8; 64];
    for seq in 0..N {
        if seq == 2000 {
            stopped.expect_line("reading");
            signal(&stopped, libc::SIGSTOP);
        }
        if cont_at.is_none() && evictions(&pubs) > 0 {
            cont_at = Some(seq + 20_000);
        }
        if cont_at == Some(seq) {
            signal(&stopped, libc::SIGCONT);
        }
        let msg = &mut buf[..16 + (seq % 7) as usize * 8];
        fill(seq, msg);
        let mut stall: Option<Instant> = None;
        let p = &mut pubs[(seq % u64::from(publishers)) as usize];
        loop {
            match p.offer(1, msg) {
                Ok(_) => break,
                Err(OfferError::BackPressured) => {
                    stall.get_or_insert_with(Instant::now);
                    std::hint::spin_loop();
                }
                Err(e) => panic!("offer {seq}: {e:?}"),
            }
        }
        if let Some(t) = stall {
            longest = longest.max(t.elapsed());
        }
    }
    eprintln!(
        "evict_after {after:?}, {publishers} publisher(s): longest publisher stall {longest:?}, evictions {}",
        evictions(&pubs)
    );
    all.0.wait_success();
    let evicted = stopped.expect_line("evicted ");
    let missed: u64 = evicted["evicted ".len()..].parse().unwrap();
    assert!(missed > 0, "{evicted}");
    stopped.expect_line("live ");
    stopped.0.wait_success();
    assert_eq!(
        evictions(&pubs),
        1,
        "only the stopped subscriber was evicted"
    );
    // Generous: the point is that the stall is bounded by about evict_after
    // while the subscriber stays stopped.
    assert!(longest < after * 10, "longest stall {longest:?}");
}

/// The wake-up cascade across processes: 16 subscriber processes waiting in
/// `Block` each receive every message. Before each offer every one of them
/// has read the previous message and has had 1 ms to fall asleep again, so
/// a message reaches them through the publisher's single `FUTEX_WAKE` and
/// the cascade of the woken. (Here a lost wake-up costs a sleeper its 20 ms
/// re-check; the ring's unit test `every_sleeper_is_woken_through_the_cascade`
/// disables that re-check, so there a lost wake-up is a hang.)
#[test]
fn sixteen_sleeping_subscriber_processes_receive_every_message() {
    let _watchdog = watchdog(
        "sixteen_sleeping_subscriber_processes_receive_every_message",
        180,
    );
    const SUBS: usize = 16;
    const N: u64 = 300;
    let dir = Scratch::new("cascade");
    let mut cfg = config(&dir, 1 << 16);
    cfg.max_subscribers = SUBS as u32;
    let mut p = Publisher::create("cascade", &cfg).unwrap();
    let count = N.to_string();
    let subs: Vec<Peer> = (0..SUBS)
        .map(|_| Peer::spawn(&["subscribe", "cascade", dir.arg(), &count, "block"]))
        .collect();
    while p.subscriber_count() < SUBS {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut buf = [0u8; 64];
    for seq in 0..N {
        while !p.all_consumed() {
            std::thread::sleep(Duration::from_micros(100));
        }
        std::thread::sleep(Duration::from_millis(1));
        let len = 16 + (seq % 7) as usize * 8;
        fill(seq, &mut buf[..len]);
        loop {
            match p.offer(1, &buf[..len]) {
                Ok(_) => break,
                Err(OfferError::BackPressured) => std::thread::yield_now(),
                Err(e) => panic!("offer {seq}: {e}"),
            }
        }
    }
    for s in subs {
        s.expect_line(&format!("ok {N}"));
        s.0.wait_success();
    }
    assert!(p.wake_calls() > 0, "no subscriber ever slept");
}
