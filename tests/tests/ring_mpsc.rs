//! Several publishers on one ring across processes: a checked load of four
//! publisher processes into two subscriber processes, and `kill -9` of
//! publishers at random points (mostly inside a claim) while another keeps
//! publishing. Helper processes are `ring_mpsc` (src/bin/ring_mpsc.rs).

use conduit_ringbuf::{Subscriber, DEAD_CLAIM_CHECK};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const HELPER: &str = env!("CARGO_BIN_EXE_ring_mpsc");

fn watchdog(secs: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        eprintln!("watchdog: test still running after {secs} s: hang");
        std::process::abort();
    });
}

/// A scratch directory for ring files (on tmpfs when there is one), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let p = base.join(format!(
            "conduit-mpsc-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A helper process, killed on drop.
struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn spawn(args: &[&str]) -> Peer {
        let mut child = Command::new(HELPER)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ring_mpsc");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer { child, lines }
    }

    fn expect_line(&self, want: &str) {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if l == want => return,
                Ok(_) => {}
                Err(e) => panic!("ring_mpsc printed no {want:?}: {e}"),
            }
        }
    }

    fn kill9(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(r, 0, "kill -9");
        let _ = self.child.wait();
    }

    fn wait_success(mut self) {
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "ring_mpsc failed: {status}");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    watchdog(1200);
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
        s.wait_success();
    }
    for p in pubs {
        p.wait_success();
    }
}

/// The message fields the kill test checks (the helper verifies the rest
/// the same way; here a torn message fails the test).
fn decode(p: &[u8]) -> Option<(u32, u64)> {
    if p.len() < 24 {
        return None;
    }
    let word = |r: std::ops::Range<usize>| {
        p[r].iter()
            .rev()
            .fold(0u64, |a, b| (a << 8) | u64::from(*b))
    };
    let (id, len, seq, sum) = (
        word(0..4) as u32,
        word(4..8) as usize,
        word(8..16),
        word(16..24),
    );
    let want = (seq ^ ((len as u64) << 56) ^ (u64::from(id) << 40))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29);
    let filler = p[24..]
        .iter()
        .enumerate()
        .all(|(k, b)| *b == (seq as u8).wrapping_add(k as u8));
    (len == p.len() && len == 24 + (seq % 7) as usize * 8 && sum == want && filler)
        .then_some((id, seq))
}

#[test]
fn kill_9_of_publishers_mid_claim_never_stalls_or_tears() {
    const ROUNDS: u32 = 200;
    watchdog(900);
    let d = Scratch::new("kill");
    let steady = Peer::spawn(&["steady", "kill", d.arg(), "0"]);
    steady.expect_line("ready");
    let mut s = Subscriber::open("kill", Some(&d.0)).expect("subscriber");
    // The steady publisher activates us at its next offer.
    let start = Instant::now();
    while !s.is_connected() {
        assert!(start.elapsed() < Duration::from_secs(30), "never connected");
        std::thread::sleep(Duration::from_millis(1));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    // The reader: checks order and integrity per publisher, and measures the
    // longest gap between two messages of the steady publisher.
    let reader = std::thread::spawn(move || {
        let mut next: Vec<Option<u64>> = vec![None; ROUNDS as usize + 1];
        let mut last_steady = Instant::now();
        let mut longest = Duration::ZERO;
        let mut received = vec![0u64; ROUNDS as usize + 1];
        let mut failure = None;
        while !stop2.load(Ordering::Relaxed) && failure.is_none() {
            let r = s.poll(
                |_, payload| {
                    let Some((id, seq)) = decode(payload) else {
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
                        let now = Instant::now();
                        longest = longest.max(now - last_steady);
                        last_steady = now;
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
        (failure, longest, received)
    });
    let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(std::process::id());
    let mut next_rand = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 1..=ROUNDS {
        let mut v = Peer::spawn(&["victim", "kill", d.arg(), &round.to_string()]);
        v.expect_line("ready");
        std::thread::sleep(Duration::from_micros(next_rand() % 5000));
        v.kill9();
    }
    // Let the steady publisher run on past the last kill.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (failure, longest, received) = reader.join().expect("reader");
    drop(steady);
    assert_eq!(failure, None);
    let victims_heard = received[1..].iter().filter(|n| **n > 0).count();
    eprintln!(
        "kill test: longest gap between steady messages {longest:?} (dead-claim check every {DEAD_CLAIM_CHECK:?}); \
         {victims_heard} of {ROUNDS} victims delivered messages; steady delivered {}",
        received[0]
    );
    assert!(
        received[0] > 0,
        "the steady publisher's messages never arrived"
    );
    // The documented bound is ~1 ms plus scheduling; a stall on the dead
    // claim would last forever. A generous margin for a loaded 2-CPU host.
    assert!(
        longest < Duration::from_secs(2),
        "the channel stalled for {longest:?}"
    );
}
