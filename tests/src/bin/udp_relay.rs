//! A UDP relay that impairs traffic the way `tc netem` does: delay and
//! jitter, random loss, burst loss (Gilbert-Elliott), duplication,
//! reordering and corruption, from a seeded generator.
//!
//! The system tests run it in the hub namespace of a test lab when the
//! kernel has no `sch_netem`. The publisher sends to `--a-side`; the relay
//! forwards from `--b-side` to `--b-target`; replies to `--b-side` go back to
//! the last source seen on `--a-side`. Both directions are impaired, with
//! independent random streams.
//!
//! Usage:
//! `udp_relay A_SIDE B_SIDE B_TARGET SPEC SEED DEADLINE_SECS`, where SPEC is
//! comma-separated `key=value` (`delay=1ms`, `jitter=200us`, `loss=1`,
//! `ge=P/R/LOSS_BAD/LOSS_GOOD` in percent, `dup=1`, `reorder=10`,
//! `reorder_delay=1ms`, `corrupt=1`) or `none`. Prints `ready` once bound and
//! the per-direction counters on exit.
//!
//! An on-path attacker, beyond what netem does (percent per datagram
//! forwarded, each direction): `replay=P` sends, besides, a copy of an
//! older datagram of the same direction (one of the last 4096, at random);
//! `mutate=P` overwrites 1 to 8 random bytes of the datagram (header, ids,
//! positions, payload, tag alike); `inject=P` sends, besides, a forged
//! datagram: random bytes, or a plausible plain frame header (version 1 or
//! 2, a frame kind, the default stream), or a keyed header (magic 0xCE, a
//! phase, a session id and packet number taken from a real datagram) with
//! random ciphertext.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default)]
struct Spec {
    delay: Duration,
    jitter: Duration,
    loss: f64,
    ge: Option<(f64, f64, f64, f64)>,
    dup: f64,
    reorder: f64,
    reorder_delay: Duration,
    corrupt: f64,
    replay: f64,
    mutate: f64,
    inject: f64,
}

fn parse_duration(s: &str) -> Duration {
    let (num, mul) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        panic!("duration {s:?} needs a unit (us, ms, s)")
    };
    Duration::from_secs_f64(num.parse::<f64>().expect("duration number") * mul)
}

fn pct(s: &str) -> f64 {
    s.trim_end_matches('%').parse::<f64>().expect("percentage") / 100.0
}

fn parse_spec(s: &str) -> Spec {
    let mut spec = Spec {
        reorder_delay: Duration::from_millis(1),
        ..Spec::default()
    };
    if s == "none" || s.is_empty() {
        return spec;
    }
    for kv in s.split(',') {
        let (k, v) = kv.split_once('=').expect("key=value");
        match k {
            "delay" => spec.delay = parse_duration(v),
            "jitter" => spec.jitter = parse_duration(v),
            "loss" => spec.loss = pct(v),
            "ge" => {
                let p: Vec<f64> = v.split('/').map(pct).collect();
                assert_eq!(p.len(), 4, "ge=P/R/LOSS_BAD/LOSS_GOOD");
                spec.ge = Some((p[0], p[1], p[2], p[3]));
            }
            "dup" => spec.dup = pct(v),
            "reorder" => spec.reorder = pct(v),
            "reorder_delay" => spec.reorder_delay = parse_duration(v),
            "corrupt" => spec.corrupt = pct(v),
            "replay" => spec.replay = pct(v),
            "mutate" => spec.mutate = pct(v),
            "inject" => spec.inject = pct(v),
            other => panic!("unknown impairment {other:?}"),
        }
    }
    spec
}

/// xorshift64*: small, seeded, good enough for impairments.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

#[derive(Default, Debug)]
struct Stats {
    forwarded: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    corrupted: u64,
    replayed: u64,
    mutated: u64,
    injected: u64,
}

/// Datagrams a direction keeps for replays.
const HISTORY: usize = 4096;

struct Impairer {
    spec: Spec,
    rng: Rng,
    bad: bool,
    seq: u64,
    queue: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    stats: Stats,
    /// The last [`HISTORY`] datagrams (with `replay`), oldest overwritten.
    history: Vec<Vec<u8>>,
}

impl Impairer {
    fn admit(&mut self, now: Instant, data: &[u8]) {
        let s = self.spec;
        if let Some((p, r, loss_bad, loss_good)) = s.ge {
            self.bad = if self.bad {
                !self.rng.chance(r)
            } else {
                self.rng.chance(p)
            };
            let l = if self.bad { loss_bad } else { loss_good };
            if self.rng.chance(l) {
                self.stats.lost += 1;
                return;
            }
        }
        if self.rng.chance(s.loss) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.chance(s.dup) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        if s.replay > 0.0 {
            let d = data.to_vec();
            if self.history.len() < HISTORY {
                self.history.push(d);
            } else {
                let i = (self.seq as usize) % HISTORY;
                self.history[i] = d;
            }
            if self.rng.chance(s.replay) {
                let i = (self.rng.next() % self.history.len() as u64) as usize;
                let old = self.history[i].clone();
                self.stats.replayed += 1;
                self.seq += 1;
                self.queue.push(Reverse((now + s.delay, self.seq, old)));
            }
        }
        if self.rng.chance(s.inject) {
            let d = self.forged(data);
            self.stats.injected += 1;
            self.seq += 1;
            self.queue.push(Reverse((now + s.delay, self.seq, d)));
        }
        for _ in 0..copies {
            let mut d = data.to_vec();
            if !d.is_empty() && self.rng.chance(s.mutate) {
                for _ in 0..1 + self.rng.next() % 8 {
                    let i = (self.rng.next() % d.len() as u64) as usize;
                    d[i] = self.rng.next() as u8;
                }
                self.stats.mutated += 1;
            }
            if !d.is_empty() && self.rng.chance(s.corrupt) {
                let i = (self.rng.next() % d.len() as u64) as usize;
                d[i] ^= 1 << (self.rng.next() % 8);
                self.stats.corrupted += 1;
            }
            let mut at = now + s.delay;
            if !s.jitter.is_zero() {
                at += s.jitter.mul_f64(self.rng.unit());
            }
            if self.rng.chance(s.reorder) {
                at += s.reorder_delay;
                self.stats.reordered += 1;
            }
            self.seq += 1;
            self.queue.push(Reverse((at, self.seq, d)));
        }
    }

    /// A forged datagram, shaped after the real one `like` sometimes.
    fn forged(&mut self, like: &[u8]) -> Vec<u8> {
        let len = match self.rng.next() % 3 {
            0 => like.len(),
            1 => (self.rng.next() % 1500) as usize,
            _ => [24, 32, 40, 72][(self.rng.next() % 4) as usize],
        };
        let mut d: Vec<u8> = (0..len).map(|_| self.rng.next() as u8).collect();
        match self.rng.next() % 3 {
            // A plain frame header: a version, a kind, the default stream.
            0 if len >= 16 => {
                d[0] = 1 + (self.rng.next() % 2) as u8;
                d[1] = 1 + (self.rng.next() % 8) as u8;
                d[8..12].copy_from_slice(&1u32.to_le_bytes());
            }
            // A keyed header copied from the real datagram (its session
            // and a nearby packet number), random ciphertext and tag.
            1 if len >= 16 && like.len() >= 16 => {
                d[..16].copy_from_slice(&like[..16]);
                let pn = u64::from_le_bytes(like[8..16].try_into().expect("8 bytes"));
                let pn = pn.wrapping_add(self.rng.next() % 64);
                d[8..16].copy_from_slice(&pn.to_le_bytes());
            }
            _ => {}
        }
        d
    }

    fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, _, _))| *t)
    }
}

/// Sends one datagram, retrying while the socket buffer is full: `tx`
/// shares its file description with the other direction's receive socket,
/// which switches it to non-blocking while draining, so a full buffer shows
/// up as `WouldBlock` here. Only the impairments may lose a datagram, not
/// the relay's own pace. False on any other error.
fn send_all(tx: &UdpSocket, d: &[u8], to: SocketAddr) -> bool {
    loop {
        match tx.send_to(d, to) {
            Ok(_) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::yield_now(),
            Err(_) => return false,
        }
    }
}

/// Socket buffers of the relay: a conduit window's burst (the tests use up
/// to 1 MiB) must fit, or the relay drops datagrams itself, beyond the
/// impairments, when the sender bursts faster than the relay forwards.
const RELAY_BUFFER: libc::c_int = 8 << 20;

/// Sets `SO_RCVBUF`/`SO_SNDBUF` to [`RELAY_BUFFER`], with the `FORCE`
/// variants where allowed (root), beyond `rmem_max`/`wmem_max`.
fn enlarge_buffers(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        for opt in [force, plain] {
            // SAFETY: `fd` is an open socket owned by `sock` for the call;
            // the option value is a c_int read by the kernel from a live
            // local of the size passed.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&RELAY_BUFFER as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
        }
    }
}

/// One direction of the relay: receive on `rx`, impair, send from `tx`.
struct Direction {
    name: &'static str,
    rx: UdpSocket,
    tx: UdpSocket,
    /// Where to forward.
    dest: Arc<Mutex<Option<SocketAddr>>>,
    /// Where to record the source of what `rx` receives (the A side's peer).
    learn: Option<Arc<Mutex<Option<SocketAddr>>>>,
    spec: Spec,
    seed: u64,
    stop: Arc<AtomicBool>,
}

fn direction(d: Direction) -> thread::JoinHandle<()> {
    let Direction {
        name,
        rx,
        tx,
        dest,
        learn,
        spec,
        seed,
        stop,
    } = d;
    thread::spawn(move || {
        let mut imp = Impairer {
            spec,
            rng: Rng(seed | 1),
            bad: false,
            seq: 0,
            queue: BinaryHeap::new(),
            stats: Stats::default(),
            history: Vec::new(),
        };
        let mut buf = vec![0u8; 65_536];
        // Relaxed: a stop flag only; nothing is published through it.
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = match imp.next_due() {
                Some(t) if t <= now => Duration::from_micros(1),
                Some(t) => (t - now).min(Duration::from_millis(50)),
                None => Duration::from_millis(50),
            };
            rx.set_read_timeout(Some(wait)).expect("timeout");
            if let Ok((n, from)) = rx.recv_from(&mut buf) {
                if let Some(l) = &learn {
                    *l.lock().unwrap() = Some(from);
                }
                imp.admit(Instant::now(), &buf[..n]);
                // Drain what else is queued without waiting.
                rx.set_nonblocking(true).expect("nonblocking");
                while let Ok((n, from)) = rx.recv_from(&mut buf) {
                    if let Some(l) = &learn {
                        *l.lock().unwrap() = Some(from);
                    }
                    imp.admit(Instant::now(), &buf[..n]);
                }
                rx.set_nonblocking(false).expect("blocking");
            }
            let now = Instant::now();
            let to = *dest.lock().unwrap();
            while let Some(t) = imp.next_due() {
                if t > now {
                    break;
                }
                let Reverse((_, _, d)) = imp.queue.pop().expect("peeked");
                if let Some(to) = to {
                    if send_all(&tx, &d, to) {
                        imp.stats.forwarded += 1;
                    }
                }
            }
        }
        eprintln!("udp_relay {name}: {:?}", imp.stats);
    })
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 6 {
        eprintln!("usage: udp_relay A_SIDE B_SIDE B_TARGET SPEC SEED DEADLINE_SECS");
        std::process::exit(2);
    }
    let a_side: SocketAddr = a[0].parse().expect("A_SIDE");
    let b_side: SocketAddr = a[1].parse().expect("B_SIDE");
    let b_target: SocketAddr = a[2].parse().expect("B_TARGET");
    let spec = parse_spec(&a[3]);
    let seed: u64 = a[4].parse().expect("SEED");
    let deadline = Duration::from_secs(a[5].parse().expect("DEADLINE_SECS"));
    let sa = UdpSocket::bind(a_side).expect("bind A side");
    let sb = UdpSocket::bind(b_side).expect("bind B side");
    enlarge_buffers(&sa);
    enlarge_buffers(&sb);
    let stop = Arc::new(AtomicBool::new(false));
    let a_peer = Arc::new(Mutex::new(None));
    let b_peer = Arc::new(Mutex::new(Some(b_target)));
    let t1 = direction(Direction {
        name: "a->b",
        rx: sa.try_clone().expect("clone"),
        tx: sb.try_clone().expect("clone"),
        dest: b_peer,
        learn: Some(a_peer.clone()),
        spec,
        seed,
        stop: stop.clone(),
    });
    let t2 = direction(Direction {
        name: "b->a",
        rx: sb,
        tx: sa,
        dest: a_peer,
        learn: None,
        spec,
        seed: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xABCD,
        stop: stop.clone(),
    });
    println!("ready");
    // The relay lives until its deadline or until the lab kills it.
    let start = Instant::now();
    while start.elapsed() < deadline && !t1.is_finished() && !t2.is_finished() {
        thread::sleep(Duration::from_millis(100));
    }
    // Relaxed: see the loads above.
    stop.store(true, Ordering::Relaxed);
    let _ = t1.join();
    let _ = t2.join();
}
