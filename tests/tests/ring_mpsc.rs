//! Several publishers on one ring across processes: a checked load of four
//! publisher processes into two subscriber processes, and `kill -9` of
//! publishers at random points (mostly inside a claim) while another keeps
//! publishing. Helper processes are `ring_mpsc` (src/bin/ring_mpsc.rs).

use conduit_ringbuf::{layout, Start, Subscriber, DEAD_CLAIM_CHECK, DEAD_PUBLISHER_STALL};
use conduit_test_util::{watchdog, LineChild, TempDir};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const HELPER: &str = env!("CARGO_BIN_EXE_ring_mpsc");

/// The tests run one at a time: the kill test measures how long the
/// channel holds messages up, which six spinning processes of the load
/// test on the same CPUs would swamp.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wall-clock nanoseconds, as the helper stamps its messages.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A scratch directory for ring files (on tmpfs when there is one), removed on drop.
struct Scratch(TempDir);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        Scratch(TempDir::on_tmpfs(&format!("mpsc-test-{tag}")))
    }

    fn arg(&self) -> &str {
        self.0.path().to_str().expect("utf-8 path")
    }
}

/// A helper process, killed on drop.
struct Peer(LineChild);

impl Peer {
    fn spawn(args: &[&str]) -> Peer {
        let mut cmd = Command::new(HELPER);
        cmd.args(args);
        Peer(LineChild::spawn(cmd, "ring_mpsc"))
    }

    fn expect_line(&self, want: &str) {
        self.0.expect_line(want, Duration::from_secs(60));
    }
}

/// Messages per publisher of the load test (`CONDUIT_MPSC_COUNT` overrides
/// it for a quick local run).
fn load_count() -> u64 {
    std::env::var("CONDUIT_MPSC_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_500_000)
}

#[test]
fn four_publisher_processes_into_two_subscriber_processes() {
    let _serial = serial();
    let _watchdog = watchdog(
        "four_publisher_processes_into_two_subscriber_processes",
        1200,
    );
    let d = Scratch::new("load");
    let count = load_count().to_string();
    let subs: Vec<Peer> = (0..2)
        .map(|_| {
            let s = Peer::spawn(&["subscribe", "load", d.arg(), "4", &count]);
            s.expect_line("ready");
            s
        })
        .collect();
    let pubs: Vec<Peer> = (0..4)
        .map(|id| Peer::spawn(&["publish", "load", d.arg(), &id.to_string(), &count, "2"]))
        .collect();
    for s in subs {
        s.expect_line("ok");
        s.0.wait_success();
    }
    for p in pubs {
        p.0.wait_success();
    }
}

/// Pauses of the kill test's reader longer than this (from one poll to the
/// next) are recorded: time it was not running.
const PAUSE: u64 = 100_000;

/// Nanoseconds of `pauses` (sorted, disjoint) inside `[from, to]`.
fn paused_within(pauses: &[(u64, u64)], from: u64, to: u64) -> u64 {
    let first = pauses.partition_point(|p| p.1 <= from);
    pauses[first..]
        .iter()
        .take_while(|p| p.0 < to)
        .map(|&(a, b)| b.min(to).saturating_sub(a.max(from)))
        .sum()
}

/// The longest stall after a death: for each kill (confirmed dead at `d`),
/// the latest delivery of a steady message committed before `d` but
/// delivered after it, less `d`; with the part of it the reader was paused;
/// and the longest such stall net of the reader's pauses. `deliveries` are
/// (commit stamp, delivery) in delivery order.
fn stall_after_deaths(
    deaths: &[u64],
    deliveries: &[(u64, u64)],
    pauses: &[(u64, u64)],
) -> (Duration, Duration, Duration) {
    let mut worst = (0u64, 0u64);
    let mut net = 0u64;
    for &d in deaths {
        let first = deliveries.partition_point(|m| m.1 <= d);
        let held = deliveries[first..]
            .iter()
            .take_while(|m| m.0 < d + 1_000_000_000)
            .filter(|m| m.0 < d)
            .map(|m| m.1)
            .max();
        if let Some(delivered) = held {
            let gross = delivered - d;
            let paused = paused_within(pauses, d, delivered);
            if gross > worst.0 {
                worst = (gross, paused);
            }
            net = net.max(gross - paused.min(gross));
        }
    }
    let ns = Duration::from_nanos;
    (ns(worst.0), ns(worst.1), ns(net))
}

/// The message fields the kill test checks (the helper verifies the rest
/// the same way; here a torn message fails the test): (publisher, sequence,
/// wall-clock nanoseconds just before its publisher committed it).
fn decode(p: &[u8]) -> Option<(u32, u64, u64)> {
    if p.len() < 32 {
        return None;
    }
    let word = |r: std::ops::Range<usize>| {
        p[r].iter()
            .rev()
            .fold(0u64, |a, b| (a << 8) | u64::from(*b))
    };
    let (id, len, seq, sum, sent) = (
        word(0..4) as u32,
        word(4..8) as usize,
        word(8..16),
        word(16..24),
        word(24..32),
    );
    let want = (seq ^ ((len as u64) << 56) ^ (u64::from(id) << 40) ^ sent.rotate_left(17))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29);
    let filler = p[32..]
        .iter()
        .enumerate()
        .all(|(k, b)| *b == (seq as u8).wrapping_add(k as u8));
    (len == p.len() && len == 32 + (seq % 7) as usize * 8 && sum == want && filler)
        .then_some((id, seq, sent))
}

#[test]
fn kill_9_of_publishers_mid_claim_never_stalls_or_tears() {
    const ROUNDS: u32 = 200;
    let _serial = serial();
    let _watchdog = watchdog("kill_9_of_publishers_mid_claim_never_stalls_or_tears", 900);
    let d = Scratch::new("kill");
    let steady = Peer::spawn(&["steady", "kill", d.arg(), "0"]);
    steady.expect_line("ready");
    let mut s = Subscriber::open("kill", Some(d.0.path())).expect("subscriber");
    // The steady publisher activates us at its next offer.
    let start = Instant::now();
    while !s.is_connected() {
        assert!(start.elapsed() < Duration::from_secs(30), "never connected");
        std::thread::sleep(Duration::from_millis(1));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    // The reader: checks order and integrity per publisher, and records
    // for every message of the steady publisher its commit stamp and when
    // it was delivered here (it may wait behind a dead victim's claim until
    // that is skipped), and its own pauses: on a loaded host the reader is
    // not always running, and a live victim descheduled inside a claim holds
    // everyone up too (as any in-place claim does), which is not a death.
    // The figure for the bound is the stall after each death: the last
    // delivery of a steady message committed before it, less the moment the
    // victim was confirmed dead. The steady publisher reports the other
    // half itself, its longest claim (which may wait for a dead victim's
    // claim lock).
    let reader = std::thread::spawn(move || {
        let mut next: Vec<Option<u64>> = vec![None; ROUNDS as usize + 1];
        let mut last_poll = 0u64;
        let mut deliveries = Vec::new();
        let mut pauses = Vec::new();
        let mut received = vec![0u64; ROUNDS as usize + 1];
        let mut failure = None;
        while !stop2.load(Ordering::Relaxed) && failure.is_none() {
            let polled = now_ns();
            if last_poll != 0 && polled - last_poll > PAUSE {
                pauses.push((last_poll, polled));
            }
            last_poll = polled;
            let r = s.poll(
                |_, payload| {
                    let Some((id, seq, sent)) = decode(payload) else {
                        failure = Some(format!("torn message of {} bytes", payload.len()));
                        return;
                    };
                    let Some(n) = next.get_mut(id as usize) else {
                        failure = Some(format!("unknown publisher {id}"));
                        return;
                    };
                    // The steady publisher's stream is joined midway; every
                    // victim attached after us starts at 0.
                    let want = n.unwrap_or(if id == 0 { seq } else { 0 });
                    if seq != want {
                        failure = Some(format!(
                            "publisher {id}: message {seq} where {want} was expected"
                        ));
                    }
                    *n = Some(seq + 1);
                    received[id as usize] += 1;
                    if id == 0 {
                        deliveries.push((sent, polled));
                    }
                },
                1024,
            );
            match r {
                Ok(0) => std::thread::yield_now(),
                Ok(_) => {}
                Err(e) => failure = Some(format!("poll: {e}")),
            }
        }
        (failure, deliveries, pauses, received)
    });
    let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(std::process::id());
    let mut next_rand = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut deaths = Vec::new();
    for round in 1..=ROUNDS {
        let mut v = Peer::spawn(&["victim", "kill", d.arg(), &round.to_string()]);
        v.expect_line("ready");
        std::thread::sleep(Duration::from_micros(next_rand() % 5000));
        v.0.kill9();
        deaths.push(now_ns());
    }
    // Let the steady publisher run on past the last kill.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (failure, deliveries, pauses, received) = reader.join().expect("reader");
    let claim_wait = steady
        .0
        .lines
        .try_iter()
        .filter_map(|l| l.strip_prefix("claim-wait ")?.parse::<u64>().ok())
        .max()
        .map_or(Duration::ZERO, Duration::from_nanos);
    drop(steady);
    assert_eq!(failure, None);
    let victims_heard = received[1..].iter().filter(|n| **n > 0).count();
    let (stall, stall_paused, net) = stall_after_deaths(&deaths, &deliveries, &pauses);
    let any_hold = deliveries
        .iter()
        .map(|m| m.1.saturating_sub(m.0))
        .max()
        .map_or(Duration::ZERO, Duration::from_nanos);
    eprintln!(
        "kill test: longest stall after a death {stall:?} (the reader not running for {stall_paused:?} \
         of it); longest net of the reader's pauses {net:?}; documented bound \
         {DEAD_PUBLISHER_STALL:?}, dead-claim check every {DEAD_CLAIM_CHECK:?}; the steady publisher's longest claim {claim_wait:?}; longest \
         commit-to-delivery of any steady message {any_hold:?} (live victims descheduled inside \
         a claim included); {victims_heard} of {ROUNDS} victims delivered messages; steady \
         delivered {}",
        received[0]
    );
    assert!(
        received[0] > 0,
        "the steady publisher's messages never arrived"
    );
    // Not a timing assertion: a channel wedged on a dead claim would hold
    // the steady messages up for ever; this only turns that hang into a
    // failure (the figure to quote is the one printed above).
    assert!(
        stall.max(claim_wait) < Duration::from_secs(10),
        "the channel stalled for {:?}: wedged on a dead publisher",
        stall.max(claim_wait)
    );
}

#[test]
fn history_joiners_while_two_publisher_processes_write_get_whole_messages_from_the_window() {
    const HISTORY: u64 = 16 << 10;
    const JOINERS: u32 = 20;
    let _serial = serial();
    let _watchdog = watchdog("history_joiners_while_two_publishers_write", 600);
    let d = Scratch::new("hist");
    let history = HISTORY.to_string();
    let pubs: Vec<Peer> = (0..2)
        .map(|id| {
            let p = Peer::spawn(&["steady", "hist", d.arg(), &id.to_string(), &history]);
            p.expect_line("ready");
            p
        })
        .collect();
    // A live subscriber keeps the publishers going and tells where the
    // tail was at least: the end of the last record it read.
    let stop = Arc::new(AtomicBool::new(false));
    let seen_end = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let live = {
        let (stop, seen_end, dir) = (stop.clone(), seen_end.clone(), d.0.path().to_path_buf());
        std::thread::spawn(move || {
            let mut s = Subscriber::open("hist", Some(&dir)).expect("live subscriber");
            while !stop.load(Ordering::Relaxed) {
                let r = s.poll_records(
                    |r, payload| {
                        let end = r.position() + layout::record_len(payload.len() as u64);
                        seen_end.store(end, Ordering::Relaxed);
                    },
                    1024,
                );
                match r {
                    Ok(0) => std::thread::yield_now(),
                    Ok(_) => {}
                    Err(e) => panic!("live subscriber: {e}"),
                }
            }
        })
    };
    let mut with_history = 0u64;
    let mut history_bytes = 0;
    for round in 0..JOINERS {
        // Some history first.
        std::thread::sleep(Duration::from_millis(20));
        let tail_before = seen_end.load(Ordering::Relaxed);
        let mut j = Subscriber::open_from("hist", Some(d.0.path()), &[], Start::History)
            .expect("history joiner");
        let mut first = None;
        let mut next: [Option<u64>; 2] = [None; 2];
        let mut n = 0;
        let t0 = Instant::now();
        while n < 200 {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "joiner {round} starved"
            );
            let r = j.poll_records(
                |r, payload| {
                    let (id, seq, _) =
                        decode(payload).unwrap_or_else(|| panic!("joiner {round}: torn message"));
                    first.get_or_insert(r.position());
                    let slot = &mut next[id as usize % 2];
                    assert!(id < 2, "unknown publisher {id}");
                    if let Some(want) = *slot {
                        assert_eq!(seq, want, "joiner {round}: publisher {id} out of order");
                    }
                    *slot = Some(seq + 1);
                    n += 1;
                },
                1024,
            );
            match r {
                Ok(0) => std::thread::yield_now(),
                Ok(_) => {}
                Err(e) => panic!("joiner {round}: {e}"),
            }
        }
        let first = first.expect("a first message");
        // The joiner was activated at a tail at or past `tail_before`, so
        // its window began at or past `tail_before - HISTORY`.
        assert!(
            first >= tail_before.saturating_sub(HISTORY),
            "joiner {round} began at {first}, before the window (tail was past {tail_before})"
        );
        if first < tail_before {
            with_history += 1;
            history_bytes += tail_before - first;
        }
    }
    stop.store(true, Ordering::Relaxed);
    live.join().expect("live subscriber");
    drop(pubs);
    eprintln!(
        "history test: {with_history} of {JOINERS} joiners began behind the tail seen before they joined, \
         {} bytes behind it on average (history {HISTORY})",
        history_bytes / with_history.max(1)
    );
    assert!(with_history > 0, "no joiner ever got history");
}
