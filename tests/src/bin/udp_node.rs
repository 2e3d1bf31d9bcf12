//! Publisher, subscriber and garbage sprayer processes for the UDP system
//! tests. Every mode has a deadline after which it exits with status 3, so
//! no process outlives a failed test for long.
//!
//! - `udp_node pub URI COUNT DEADLINE_SECS [rss-every=N] [pace=N]`: waits
//!   for the subscriber, sends COUNT 32-byte messages carrying sequence
//!   numbers 0.. (with `pace=N`, at most N per millisecond, so that a
//!   stream lasts), flushes, prints `sent COUNT` and its counters.
//! - `udp_node pub-forever URI DEADLINE_SECS`: sends sequence-numbered
//!   messages as long as a subscriber is connected; prints `connected` and
//!   `disconnected after MS ms of silence` at every change.
//! - `udp_node sub URI COUNT DEADLINE_SECS [any-start] [rss-every=N] [stay]`:
//!   receives until COUNT messages arrived, checking each is the successor
//!   of the previous one (the first is 0 unless `any-start`); prints
//!   `ready`, then `received COUNT` and its counters; exits 1 on a violation.
//!   With `stay`, it then keeps polling until the publisher is gone (closed,
//!   or silent past the liveness timeout; at most [`STAY`]), as an
//!   application that waits for the end of the stream does: leaving at once
//!   leaves the publisher's `flush` to the last status or the close, one
//!   datagram each, which a lossy path may drop (the publisher then cannot
//!   know the stream was delivered, and its flush says `NotConnected`). A
//!   message beyond COUNT then is a violation.
//! - `udp_node multisub URI STREAMS COUNT DEADLINE_SECS`: one subscription
//!   for several publishers: checks every publisher session's stream on its
//!   own (whole messages, sequence numbers 0, 1, ... per session, told apart
//!   by `Received::source`); prints `ready`, each session event
//!   (`joined ADDR SESSION`, `gone ADDR SESSION REASON`,
//!   `replaced ADDR OLD NEW`), `complete ADDR SESSION` when a session
//!   delivered COUNT messages, and after STREAMS complete sessions (and, at
//!   most [`STAY`], until each of them is gone, as with `sub ... stay`) its
//!   counters; exits 1 on a violation (also a message beyond COUNT).
//! - `udp_node spray ADDR[,ADDR...] DEADLINE_SECS`: sends random datagrams
//!   (random lengths, some with a plausible frame header) to the addresses
//!   until killed or the deadline; prints `spraying`.
//!
//! Memory sampling (`pub` and `sub`): with `rss-every=N` the process prints
//! `rss baseline kib=K` before opening its channel, then `rss seq=S kib=K`
//! each time another N messages were offered (pub) or received (sub), and
//! once more when done (S = COUNT), where K is the current resident set
//! (`VmRSS` of `/proc/self/status`). `/proc` is read only at those points,
//! never per message. The counters line always ends with the peak
//! (`peak_rss_kib`, `VmHWM`).

use std::net::{SocketAddr, UdpSocket};
use std::process::exit;
use std::time::{Duration, Instant};

use conduit::{Error, Publication, Subscription};

fn deadline_watch(secs: u64, what: &'static str) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        eprintln!("udp_node {what}: deadline of {secs}s reached");
        exit(3);
    });
}

/// A `kB` field of `/proc/self/status` (`key` with its colon), 0 if absent.
fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Peak resident set size of this process, KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Prints `rss seq=S kib=K` (current `VmRSS`) every `every` messages, when
/// sampling was asked for. The per-message cost is one comparison.
struct RssSampler {
    every: u64,
    next: u64,
    /// Message count of the last sample printed.
    last: Option<u64>,
}

impl RssSampler {
    /// Sampling every `every` messages (`None`: never); prints the
    /// `rss baseline` line at once when sampling.
    fn new(every: Option<u64>) -> RssSampler {
        let every = every.unwrap_or(0);
        if every > 0 {
            println!("rss baseline kib={}", status_kib("VmRSS:"));
        }
        RssSampler {
            every,
            next: if every > 0 { every } else { u64::MAX },
            last: None,
        }
    }

    /// Called with the number of messages so far; prints a sample when it
    /// reached the next multiple of `every`.
    #[inline]
    fn tick(&mut self, seq: u64) {
        if seq >= self.next {
            self.sample(seq);
            // Batched polls can pass several multiples at once: one sample.
            self.next = (seq / self.every + 1) * self.every;
        }
    }

    /// Prints a sample now.
    fn sample(&mut self, seq: u64) {
        if self.every > 0 {
            println!("rss seq={seq} kib={}", status_kib("VmRSS:"));
            self.last = Some(seq);
        }
    }

    /// The final sample, at `seq` messages, unless `tick` just printed it.
    fn finish(&mut self, seq: u64) {
        if self.last != Some(seq) {
            self.sample(seq);
        }
    }
}

fn print_counters(label: &str, c: &conduit::Counters) {
    let extra = format!(
        "driver={} peak_rss_kib={} ",
        c.driver.unwrap_or("-"),
        peak_rss_kib()
    );
    println!("{}", conduit_system_tests::counters_line(label, c, &extra));
}

fn msg(seq: u64) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m[8..16].copy_from_slice(&(!seq).to_le_bytes());
    m
}

/// Opens a publication; a fixed `bind=` address still held by a process just
/// killed (an io_uring instance releases its sockets shortly after its process
/// is gone) is retried for a few seconds.
fn open_publication(uri: &str) -> Publication {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Publication::open(uri) {
            Ok(p) => return p,
            Err(Error::Io(e))
                if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                eprintln!("open {uri}: {e}");
                exit(1)
            }
        }
    }
}

fn publisher(uri: &str, count: u64, rss_every: Option<u64>, pace: Option<u64>) {
    let mut rss = RssSampler::new(rss_every);
    let mut p = open_publication(uri);
    while !p.is_connected() {
        std::thread::sleep(Duration::from_micros(200));
    }
    println!("connected");
    let mut seq = 0u64;
    while seq < count {
        match p.offer(1, &msg(seq)) {
            Ok(_) => {
                seq += 1;
                rss.tick(seq);
                if pace.is_some_and(|n| seq % n.max(1) == 0) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Err(Error::BackPressured) => std::thread::yield_now(),
            Err(Error::NotConnected) => {
                eprintln!("publisher: lost the subscriber at {seq}");
                exit(1);
            }
            Err(e) => {
                eprintln!("publisher: offer: {e}");
                exit(1);
            }
        }
    }
    if let Err(e) = p.flush(Duration::from_secs(60)) {
        eprintln!("publisher: flush: {e}");
        exit(1);
    }
    println!("sent {count}");
    rss.finish(count);
    print_counters("pub", &p.counters());
}

fn publisher_forever(uri: &str) {
    let mut p = open_publication(uri);
    let mut seq = 0u64;
    let mut connected = false;
    let mut last_ok = Instant::now();
    loop {
        let now_connected = p.is_connected();
        if now_connected != connected {
            connected = now_connected;
            if connected {
                println!("connected");
            } else {
                println!(
                    "disconnected after {} ms of silence",
                    last_ok.elapsed().as_millis()
                );
            }
        }
        for _ in 0..64 {
            match p.offer(1, &msg(seq)) {
                Ok(_) => {
                    seq += 1;
                    last_ok = Instant::now();
                }
                Err(Error::BackPressured | Error::NotConnected) => break,
                Err(e) => {
                    eprintln!("publisher: offer: {e}");
                    exit(1);
                }
            }
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// A pause in delivery longer than this counts as a stall in the report.
const STALL: Duration = Duration::from_millis(2);

/// Longest wait of `sub ... stay` for the publisher to go, after the last
/// message.
const STAY: Duration = Duration::from_secs(8);

fn subscriber(uri: &str, count: u64, any_start: bool, rss_every: Option<u64>, stay: bool) {
    let mut rss = RssSampler::new(rss_every);
    let mut s = Subscription::open(uri).unwrap_or_else(|e| {
        eprintln!("open {uri}: {e}");
        exit(1)
    });
    println!("ready");
    let mut next: Option<u64> = if any_start { None } else { Some(0) };
    let mut got = 0u64;
    let mut first: Option<Instant> = None;
    let mut bad: Option<String> = None;
    let (mut last_got, mut last_at) = (0u64, Instant::now());
    let (mut max_stall, mut stalls, mut stall_total) = (Duration::ZERO, 0u32, Duration::ZERO);
    while got < count {
        // Never past `count`: a publisher that keeps sending must not push
        // the total beyond what was asked for.
        let limit = (count - got).min(4096) as usize;
        let r = s.poll_timeout(
            |m| {
                let p = m.payload();
                let seq = u64::from_le_bytes(p[..8].try_into().unwrap_or([0; 8]));
                let check = u64::from_le_bytes(p[8..16].try_into().unwrap_or([0; 8]));
                if bad.is_none() {
                    if p.len() != 32 || check != !seq || m.type_id() != 1 {
                        bad = Some(format!("message {got} is damaged: {p:?}"));
                    } else if next.is_some_and(|n| n != seq) {
                        bad = Some(format!(
                            "expected sequence {} but got {seq} (message {got})",
                            next.unwrap_or(0)
                        ));
                    }
                }
                next = Some(seq + 1);
                got += 1;
            },
            limit,
            Duration::from_millis(10),
        );
        if first.is_none() && got > 0 {
            first = Some(Instant::now());
        }
        if got > last_got {
            // Pauses in delivery (a gap waiting for repair, a descheduled
            // relay), reported with the rate.
            let t = Instant::now();
            let pause = t.duration_since(last_at);
            if last_got > 0 {
                max_stall = max_stall.max(pause);
                if pause > STALL {
                    stalls += 1;
                    stall_total += pause;
                }
            }
            last_at = t;
            last_got = got;
        }
        rss.tick(got);
        if let Some(b) = &bad {
            eprintln!("subscriber: {b}");
            print_counters("sub", &s.counters());
            exit(1);
        }
        match r {
            // A report, not a failure: a stranger sent datagrams of the other key state
            // before the publisher connected; the subscription goes on.
            Err(Error::KeyMismatch) => eprintln!("subscriber: poll: key mismatch reported"),
            Err(e) => {
                eprintln!("subscriber: poll: {e} after {got} messages");
                print_counters("sub", &s.counters());
                exit(1);
            }
            Ok(_) => {}
        }
    }
    println!("received {got}");
    let secs = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
    println!(
        "rate msgs_per_s={:.0} secs={secs:.3} max_stall_us={} stalls_over_2ms={stalls} stall_total_ms={}",
        got as f64 / secs.max(1e-9),
        max_stall.as_micros(),
        stall_total.as_millis()
    );
    rss.finish(got);
    print_counters("sub", &s.counters());
    if stay {
        let until = Instant::now() + STAY;
        let mut extra = 0u64;
        while Instant::now() < until {
            match s.poll_timeout(|_| extra += 1, 16, Duration::from_millis(10)) {
                Ok(_) | Err(Error::KeyMismatch) => {}
                // Closed, or gone past the liveness timeout: the stream ended.
                Err(_) => break,
            }
            if extra > 0 {
                eprintln!("subscriber: {extra} message(s) beyond the {count} sent");
                exit(1);
            }
        }
    }
}

/// Prints the subscription's session events as lines (see the module docs);
/// the sessions that ended go into `gone`.
fn print_session_events(s: &mut Subscription, gone: &mut Vec<(SocketAddr, u32)>) {
    while let Some(e) = s.poll_session_event() {
        match e {
            conduit::SessionEvent::Joined {
                source: conduit::Source::Udp { addr, session },
            } => println!("joined {addr} {session}"),
            conduit::SessionEvent::Gone {
                source: conduit::Source::Udp { addr, session },
                reason,
            } => {
                println!("gone {addr} {session} {reason:?}");
                gone.push((addr, session));
            }
            conduit::SessionEvent::Replaced { addr, old, new } => {
                println!("replaced {addr} {old} {new}")
            }
            other => println!("event {other:?}"),
        }
    }
}

fn multi_subscriber(uri: &str, streams: usize, count: u64) {
    use std::collections::HashMap;
    let mut s = Subscription::open(uri).unwrap_or_else(|e| {
        eprintln!("open {uri}: {e}");
        exit(1)
    });
    println!("ready");
    // Per (address, session): the next sequence number.
    let mut next: HashMap<(SocketAddr, u32), u64> = HashMap::new();
    let mut complete = Vec::new();
    let mut gone = Vec::new();
    let mut bad: Option<String> = None;
    // After STREAMS complete sessions, it stays until each of them is gone (at
    // most STAY), as `sub ... stay` does: leaving at once leaves a publisher's
    // flush to the last status or the close, which the lossy bridge may drop.
    let mut stay_until: Option<Instant> = None;
    loop {
        if complete.len() >= streams {
            let until = *stay_until.get_or_insert_with(|| Instant::now() + STAY);
            if Instant::now() >= until || complete.iter().all(|c| gone.contains(c)) {
                break;
            }
        }
        let r = s.poll_timeout(
            |m| {
                let Some(conduit::Source::Udp { addr, session }) = m.source() else {
                    bad.get_or_insert(format!("message without a UDP source: {m:?}"));
                    return;
                };
                let p = m.payload();
                let seq = u64::from_le_bytes(p[..8].try_into().unwrap_or([0; 8]));
                let check = u64::from_le_bytes(p[8..16].try_into().unwrap_or([0; 8]));
                let n = next.entry((addr, session)).or_insert(0);
                if p.len() != 32 || check != !seq || m.type_id() != 1 {
                    bad.get_or_insert(format!("{addr} {session}: message {n} is damaged"));
                } else if seq != *n {
                    bad.get_or_insert(format!("{addr} {session}: expected {n}, got {seq}"));
                }
                *n += 1;
                if *n == count {
                    println!("complete {addr} {session}");
                    complete.push((addr, session));
                } else if *n > count {
                    bad.get_or_insert(format!("{addr} {session}: message beyond {count}"));
                }
            },
            4096,
            Duration::from_millis(10),
        );
        print_session_events(&mut s, &mut gone);
        if let Some(b) = &bad {
            eprintln!("multisub: {b}");
            print_counters("sub", &s.counters());
            exit(1);
        }
        match r {
            // Per-session ends, told by the session events.
            Ok(_) | Err(Error::PeerGone | Error::Closed | Error::SessionReplaced { .. }) => {}
            Err(e) => {
                eprintln!("multisub: poll: {e}");
                print_counters("sub", &s.counters());
                exit(1);
            }
        }
    }
    print_counters("sub", &s.counters());
}

fn spray(targets: &str) {
    let targets: Vec<SocketAddr> = targets
        .split(',')
        .map(|t| t.parse().expect("ADDR:PORT"))
        .collect();
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut buf = [0u8; 1500];
    println!("spraying");
    let mut n = 0u64;
    loop {
        let len = (rnd() % 1500) as usize;
        for b in buf[..len].iter_mut() {
            *b = rnd() as u8;
        }
        if len >= 4 && rnd() % 2 == 0 {
            // A plausible start: the protocol's version byte and a small
            // frame kind, so parsing goes past the first check.
            buf[0] = 1;
            buf[1] = (rnd() % 8) as u8;
        }
        for t in &targets {
            let _ = sock.send_to(&buf[..len], t);
        }
        n += 1;
        if n % 64 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        a.get(i).map(|s| s.as_str()).unwrap_or_else(|| {
            eprintln!("usage: see the module docs of udp_node");
            exit(2)
        })
    };
    let num = |i: usize| -> u64 { arg(i).parse().expect("number") };
    // Optional trailing words after the positional arguments.
    let flag = |from: usize, word: &str| a.iter().skip(from).any(|s| s == word);
    let rss_every = |from: usize| -> Option<u64> {
        a.iter().skip(from).find_map(|s| {
            s.strip_prefix("rss-every=")
                .map(|v| v.parse().expect("rss-every=N: a number"))
        })
    };
    match arg(0) {
        "pub" => {
            deadline_watch(num(3), "pub");
            let pace = a.iter().skip(4).find_map(|s| {
                s.strip_prefix("pace=")
                    .map(|v| v.parse().expect("pace=N: a number"))
            });
            publisher(arg(1), num(2), rss_every(4), pace);
        }
        "pub-forever" => {
            deadline_watch(num(2), "pub-forever");
            publisher_forever(arg(1));
        }
        "sub" => {
            deadline_watch(num(3), "sub");
            subscriber(
                arg(1),
                num(2),
                flag(4, "any-start"),
                rss_every(4),
                flag(4, "stay"),
            );
        }
        "multisub" => {
            deadline_watch(num(4), "multisub");
            multi_subscriber(arg(1), num(2) as usize, num(3));
        }
        "spray" => {
            deadline_watch(num(2), "spray");
            spray(arg(1));
        }
        other => {
            eprintln!("unknown mode {other}");
            exit(2);
        }
    }
}
