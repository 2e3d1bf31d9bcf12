//! Publisher and subscriber processes for the multicast namespace tests
//! (`tests/tests/mcast_netns.rs`). Every mode has a deadline after which it
//! exits with status 3, so no process outlives a failed test for long.
//!
//! Message `seq`: type id 1, length `32 + seq * 7919 % 169` (32..=200
//! bytes), bytes 0..8 the sequence number, bytes 8..16 a checksum (FNV-1a
//! over the sequence number and bytes 16..), bytes 16.. a pattern of `seq`.
//!
//! - `mcast_node pub URI COUNT DEADLINE_SECS [go=PATH] [done=PATH] [pace=N] [pattern=c]`:
//!   prints `pid P`, drives the publication until a receiver joined and,
//!   with `go=`, until PATH exists (so that every subscription joined
//!   before the first message); prints `connected`, sends COUNT messages
//!   (with `pace=N`, at most N per millisecond), prints
//!   `held seq=S ms=M` for every back-pressured stretch longer than
//!   100 ms, prints `offered COUNT`, flushes, prints `sent COUNT`,
//!   `cpu sending_ms=T user_us=U sys_us=S messages=COUNT` (user and system
//!   time of the process while sending and flushing, `getrusage`) and its counters; with `done=`, it then keeps
//!   serving repairs and joins until PATH exists. With `pattern=c` it sends
//!   the messages of `ffi/tests/c/interop.c` instead (type id `1000 + k % 7`,
//!   length `k % 97`, byte j `(k * 31 + j) & 0xff`), for a C subscriber.
//! - `mcast_node sub URI COUNT DEADLINE_SECS [done=PATH]`: prints `pid P`
//!   and `ready`, then `joined` once its session is up; receives until COUNT
//!   messages arrived, checking every one (length, checksum, sequence
//!   0, 1, ... exactly once); prints `received COUNT` and its counters;
//!   with `done=`, keeps acknowledging until PATH exists. A violation
//!   exits 1; an unrecoverable gap prints `loss from=F to=T after=N` and
//!   its counters and exits 4.
//!
//! Counters line: `counters pub|sub sent=.. received=.. retransmitted=..
//! naks_sent=.. naks_received=.. dropped=.. datagrams_sent=..
//! datagrams_received=.. [REASON=N ...]` (the drops by reason).

use std::path::Path;
use std::process::exit;
use std::time::{Duration, Instant};

use conduit::{Error, Publication, Subscription};

fn deadline_watch(secs: u64, what: &'static str) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        eprintln!("mcast_node {what}: deadline of {secs}s reached");
        exit(3);
    });
}

fn len_of(seq: u64) -> usize {
    32 + (seq.wrapping_mul(7919) % 169) as usize
}

fn checksum(seq: u64, rest: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seq.to_le_bytes().iter().chain(rest) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Writes message `seq` into `buf`; returns its length.
fn fill(seq: u64, buf: &mut [u8; 200]) -> usize {
    let len = len_of(seq);
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    for (j, b) in buf[16..len].iter_mut().enumerate() {
        *b = (seq.wrapping_mul(31).wrapping_add(j as u64) & 0xff) as u8;
    }
    let sum = checksum(seq, &buf[16..len]);
    buf[8..16].copy_from_slice(&sum.to_le_bytes());
    len
}

/// Writes message `k` of `ffi/tests/c/interop.c` into `buf`; returns its
/// type id and length.
fn fill_c(k: u64, buf: &mut [u8; 200]) -> (u32, usize) {
    let len = (k % 97) as usize;
    for (j, b) in buf[..len].iter_mut().enumerate() {
        *b = ((k * 31 + j as u64) & 0xff) as u8;
    }
    (1000 + (k % 7) as u32, len)
}

/// Why `payload` is not message `expected`, if it is not.
fn check(expected: u64, type_id: u32, payload: &[u8]) -> Option<String> {
    if payload.len() < 16 {
        return Some(format!("message {expected}: {} bytes", payload.len()));
    }
    let seq = u64::from_le_bytes(payload[..8].try_into().unwrap_or([0; 8]));
    let sum = u64::from_le_bytes(payload[8..16].try_into().unwrap_or([0; 8]));
    if seq != expected {
        return Some(format!("expected sequence {expected}, got {seq}"));
    }
    if type_id != 1 || payload.len() != len_of(seq) || sum != checksum(seq, &payload[16..]) {
        return Some(format!(
            "message {seq} is damaged: type {type_id}, {} bytes",
            payload.len()
        ));
    }
    None
}

fn print_counters(label: &str, c: &conduit::Counters) {
    println!("{}", conduit_system_tests::counters_line(label, c, ""));
}

fn exists(p: Option<&str>) -> bool {
    p.is_some_and(|p| Path::new(p).exists())
}

/// A back-pressured stretch longer than this is printed (`held`).
const HELD: Duration = Duration::from_millis(100);

/// What the publisher is told besides its URI and count.
struct PubOpts<'a> {
    go: Option<&'a str>,
    done: Option<&'a str>,
    pace: Option<u64>,
    c_pattern: bool,
}

fn publisher(uri: &str, count: u64, o: &PubOpts<'_>) {
    let PubOpts { go, done, pace, .. } = *o;
    let mut p = Publication::open(uri).unwrap_or_else(|e| {
        eprintln!("open {uri}: {e}");
        exit(1)
    });
    println!("pid {}", std::process::id());
    while !p.is_connected() || (go.is_some() && !exists(go)) {
        std::thread::sleep(Duration::from_micros(200));
    }
    println!("connected");
    let cpu0 = conduit_test_util::process_cpu_us();
    let mut buf = [0u8; 200];
    let mut seq = 0u64;
    let mut held_since: Option<Instant> = None;
    while seq < count {
        let (type_id, len) = if o.c_pattern {
            fill_c(seq, &mut buf)
        } else {
            (1, fill(seq, &mut buf))
        };
        match p.offer(type_id, &buf[..len]) {
            Ok(_) => {
                if let Some(t) = held_since.take() {
                    let held = t.elapsed();
                    if held > HELD {
                        println!("held seq={seq} ms={}", held.as_millis());
                    }
                }
                seq += 1;
                if pace.is_some_and(|n| seq % n.max(1) == 0) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Err(Error::BackPressured | Error::NotConnected) => {
                held_since.get_or_insert_with(Instant::now);
                std::thread::yield_now();
            }
            Err(e) => {
                eprintln!("publisher: offer {seq}: {e}");
                exit(1);
            }
        }
    }
    println!("offered {count}");
    if let Err(e) = p.flush(Duration::from_secs(60)) {
        eprintln!("publisher: flush: {e}");
        exit(1);
    }
    let cpu1 = conduit_test_util::process_cpu_us();
    let (user, sys) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    println!("sent {count}");
    println!(
        "cpu sending_ms={} user_us={user} sys_us={sys} messages={count}",
        (user + sys) / 1000
    );
    print_counters("pub", &p.counters());
    while done.is_some() && !exists(done) {
        p.is_connected();
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn subscriber(uri: &str, count: u64, done: Option<&str>) {
    let mut s = Subscription::open(uri).unwrap_or_else(|e| {
        eprintln!("open {uri}: {e}");
        exit(1)
    });
    println!("pid {}", std::process::id());
    println!("ready");
    let mut joined = false;
    let mut got = 0u64;
    let mut bad: Option<String> = None;
    while got < count {
        let limit = (count - got).min(4096) as usize;
        let r = s.poll_timeout(
            |m| {
                if bad.is_none() {
                    bad = check(got, m.type_id(), m.payload());
                }
                got += 1;
            },
            limit,
            Duration::from_millis(10),
        );
        if !joined && s.is_connected() {
            joined = true;
            println!("joined");
        }
        if let Some(b) = &bad {
            eprintln!("subscriber: {b}");
            print_counters("sub", &s.counters());
            exit(1);
        }
        match r {
            Ok(_) => {}
            Err(Error::UnrecoverableLoss { from, to }) => {
                println!("loss from={from} to={to} after={got}");
                print_counters("sub", &s.counters());
                exit(4);
            }
            Err(e) => {
                eprintln!("subscriber: poll: {e} after {got} messages");
                print_counters("sub", &s.counters());
                exit(1);
            }
        }
    }
    println!("received {got}");
    print_counters("sub", &s.counters());
    // Keep acknowledging (and answering heartbeats) until told to go: the
    // publication's flush waits for every receiver's acknowledgement.
    while done.is_some() && !exists(done) {
        let _ = s.poll_timeout(|_| {}, 64, Duration::from_millis(5));
    }
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        a.get(i).map(|s| s.as_str()).unwrap_or_else(|| {
            eprintln!("usage: see the module docs of mcast_node");
            exit(2)
        })
    };
    let num = |i: usize| -> u64 {
        arg(i).parse().unwrap_or_else(|_| {
            eprintln!("argument {i}: not a number");
            exit(2)
        })
    };
    let opt = |key: &str| -> Option<&str> {
        a.iter()
            .skip(4)
            .find_map(|s| s.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    match arg(0) {
        "pub" => {
            deadline_watch(num(3), "pub");
            let pace = opt("pace").map(|v| {
                v.parse().unwrap_or_else(|_| {
                    eprintln!("pace=N: a number");
                    exit(2)
                })
            });
            let o = PubOpts {
                go: opt("go"),
                done: opt("done"),
                pace,
                c_pattern: opt("pattern") == Some("c"),
            };
            publisher(arg(1), num(2), &o);
        }
        "sub" => {
            deadline_watch(num(3), "sub");
            subscriber(arg(1), num(2), opt("done"));
        }
        other => {
            eprintln!("unknown mode {other}");
            exit(2);
        }
    }
}
