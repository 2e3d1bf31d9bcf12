//! Topologies of one host over `shm:`.
//!
//! * `mpsc`: N publisher processes write as fast as they can into one
//!   channel opened with `publishers=N`, read by one subscriber (this
//!   process, busy-spinning). Reports the total rate and each publisher's
//!   share of the messages in the timed window, checks each publisher's
//!   order, and flags a starvation: a publisher with less than 1/(2N) of
//!   the messages.
//! * `fanout`: this process publishes to one ring per subscriber count S
//!   (1, 8, 64 by default), each read by S subscriber processes that wait
//!   in `wait=block` (asleep on the ring's futex, not spinning), and times
//!   each `offer` (the commit, and the wake-up call it includes). Each
//!   round offers once to every ring, in an order shuffled per round (with
//!   `--sequential`: all of one ring's offers, then the next ring's). Before
//!   each offer it waits until every subscriber has read its ring's
//!   previous message (`flush`), then for `pace`, then until every
//!   subscriber process is asleep (`S` in `/proc/PID/stat`), so that the
//!   offer meets sleepers only. Interleaving gives every ring's offers the
//!   same state of the host (caches, timers, the other rings' wake-ups) on
//!   average; run one after another, each ring meets the state of its own
//!   stretch of time, and the rows differ by the host's drift as much as by
//!   S. Reports p50/p90/p99 of the offer
//!   per S, and each p50 against S = 1, and of the publisher thread's CPU
//!   time per offer (the wall clock includes any time a woken subscriber
//!   preempts the publisher); and, on the subscribers' side, the
//!   time from just before the offer to the poll that delivers the message
//!   in the first and in the last of the S subscribers (the wake-up
//!   latency; with the ring's wake-up cascade the last subscriber is woken
//!   about log2(S) hops after the first).
//!
//! A message is `[publisher u32][0 u32][seq u64][stamp u64][filler]`;
//! `stamp` (fan-out only) is CLOCK_MONOTONIC in nanoseconds, the same
//! clock in every process of the host. The codec, the subscriber's
//! bookkeeping and the `mpsc` report are shared with iceoryx2's `mpsc`
//! ([`crate::topology_iceoryx2`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use conduit::{Error, Publication, Subscription};

use crate::channels::{unique_name, Channel, PeerArgs};
use crate::error::{BenchError, Result};
use crate::spawn::{announce, child_init, Peer, READY_TIMEOUT};
use crate::topology_iceoryx2::{
    decode, encode, spawn_publishers, write_json, MpscChannel, MpscRun, Tally,
};

/// How long the subscriber may see nothing before the run is declared dead.
const IDLE: Duration = Duration::from_secs(30);
/// Type id of the messages.
const TYPE_ID: u32 = 0x5450_4f4c;

fn err(what: &str, e: Error) -> BenchError {
    BenchError(format!("{what}: {e}"))
}

/// `clock` in nanoseconds.
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the callers pass clocks
    // that always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in nanoseconds (comparable across the processes of a host).
fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time of the calling thread in nanoseconds (user and system): what an
/// offer costs the publisher, without the time it spends descheduled (a
/// woken subscriber may preempt it on a busy host).
fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// The p-quantile of sorted `v` (0 when empty).
fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

/// One row of the fan-out table.
struct FanoutRow {
    subscribers: u32,
    /// Offer p50, p90, p99 (ns).
    offer: (u64, u64, u64),
    /// The publisher thread's CPU time per offer: p50, p99 (ns).
    cpu: (u64, u64),
    /// Offer to the first subscriber's poll: p50, p99 (ns).
    first: (u64, u64),
    /// Offer to the last subscriber's poll: p50, p99 (ns).
    last: (u64, u64),
    /// Mean time per message spent waiting, after `pace`, until every
    /// subscriber was asleep (ns).
    settle: u64,
}

/// Runs `mpsc` with `publishers` publisher processes.
///
/// # Errors
/// A peer failed, a message was out of order, nothing arrived for 30 s, or
/// a publisher starved (after the figures are printed).
pub fn mpsc(publishers: u32, size: usize, messages: u64, json: Option<&str>) -> Result<()> {
    if publishers == 0 || size < 16 {
        return Err(BenchError::msg(
            "mpsc needs 1 or more publishers and --size 16 or more",
        ));
    }
    let name = unique_name("mpsc");
    let uri = format!("shm:{name}?wait=spin&publishers={publishers}");
    let mut sub = Subscription::open(&uri).map_err(|e| err("open subscription", e))?;
    let peers = spawn_publishers(Channel::ShmMpsc, size, publishers, |id| {
        format!("{uri} {id}")
    })?;
    let mut t = Tally::new(publishers as usize, false);
    while t.timed < messages {
        let got = sub
            .poll(|m| t.take(m.payload()), 1024)
            .map_err(|e| err("poll", e))?;
        t.after_batch(got, "mpsc")?;
    }
    let elapsed = t.window();
    drop(peers);
    // The killed publishers closed nothing: remove the ring's files.
    crate::topology_iceoryx2::remove_own_mpsc_rings();
    let run = MpscRun::new(MpscChannel::Shm, publishers, size, t, elapsed, None);
    run.print();
    if let Some(path) = json {
        write_json(path, &run.json())?;
    }
    let starved = run.starved();
    if starved.is_empty() {
        Ok(())
    } else {
        Err(BenchError(format!("publishers {starved:?} starved")))
    }
}

/// Runs `fanout` for each subscriber count in `subscribers`; with `pin`,
/// the publisher runs on the first allowed CPU and the subscribers on the
/// others.
///
/// # Errors
/// A peer failed, the publication could not be opened or offered to, or
/// `pin` with fewer than two CPUs.
pub fn fanout(
    subscribers: &[u32],
    size: usize,
    messages: u64,
    pace: Duration,
    pin: bool,
    sequential: bool,
    json: Option<&str>,
) -> Result<()> {
    if size < 24 {
        return Err(BenchError::msg("fanout needs --size 24 or more"));
    }
    let cpus = if pin {
        let cpus = crate::pin::allowed_cpus();
        if cpus.len() < 2 {
            return Err(BenchError::msg("fanout --pin needs two CPUs or more"));
        }
        crate::pin::pin_current_thread(cpus[0])?;
        cpus
    } else {
        Vec::new()
    };
    let mut rows = Vec::new();
    if sequential {
        for &s in subscribers {
            let mut g = [open_group(s, size, messages, &cpus)?];
            run_groups(&mut g, size, messages, pace, &cpus)?;
            let [g] = g;
            rows.push(finish_group(g, messages)?);
        }
    } else {
        let mut groups = Vec::new();
        for &s in subscribers {
            groups.push(open_group(s, size, messages, &cpus)?);
        }
        run_groups(&mut groups, size, messages, pace, &cpus)?;
        for g in groups {
            rows.push(finish_group(g, messages)?);
        }
    }
    let base = rows.first().map_or(1.0, |r| r.offer.0.max(1) as f64);
    println!(
        "fan-out, {size} B, every subscriber asleep in wait=block before each offer (read the previous one, then {pace:?}), {}{}:",
        if sequential {
            "one ring after another"
        } else {
            "the rings' offers interleaved in a shuffled order"
        },
        match cpus.split_first() {
            Some((p, rest)) => format!(", publisher on CPU {p}, subscribers on CPUs {rest:?}"),
            None => String::new(),
        }
    );
    println!(
        "  subscribers   offer p50   p90        p99        p50 / first row   offer CPU p50 / p99   first sub p50 / p99     last sub p50 / p99     settle"
    );
    for r in &rows {
        println!(
            "  {:>11}   {:>6} ns   {:>6} ns  {:>6} ns   {:>15.2}   {:>7} / {:>7} ns   {:>8} / {:>8} ns   {:>8} / {:>8} ns   {:>6} us",
            r.subscribers,
            r.offer.0,
            r.offer.1,
            r.offer.2,
            r.offer.0 as f64 / base,
            r.cpu.0,
            r.cpu.1,
            r.first.0,
            r.first.1,
            r.last.0,
            r.last.1,
            r.settle / 1000
        );
    }
    println!("  (offer: wall clock, including any time the publisher is descheduled; offer CPU: the publisher thread's CPU time;");
    println!("   first/last sub: from just before the offer to the poll that delivers it, in the first and the last subscriber;");
    println!("   settle: mean wait per message, after the pace, until every subscriber process was asleep in /proc)");
    if let Some(path) = json {
        let doc = serde_json::json!({
            "schema": 2,
            "topology": "fanout",
            "channel": "shm",
            "size": size,
            "messages": messages,
            "pace_ns": pace.as_nanos() as u64,
            "pinned": pin,
            "interleaved": !sequential,
            "rows": rows.iter().map(|r| serde_json::json!({
                "subscribers": r.subscribers,
                "offer_p50_ns": r.offer.0, "offer_p90_ns": r.offer.1, "offer_p99_ns": r.offer.2,
                "offer_cpu_p50_ns": r.cpu.0, "offer_cpu_p99_ns": r.cpu.1,
                "first_sub_p50_ns": r.first.0, "first_sub_p99_ns": r.first.1,
                "last_sub_p50_ns": r.last.0, "last_sub_p99_ns": r.last.1,
                "settle_mean_ns": r.settle,
            })).collect::<Vec<_>>(),
        });
        write_json(path, &doc)?;
    }
    Ok(())
}

/// Whether process `pid` is asleep (state `S` in `/proc/PID/stat`: a
/// `wait=block` subscriber sleeps only on the ring's futex) or gone (a
/// subscriber exits, a zombie until reaped, once it has all its messages;
/// a ring's last round ends before the others'). The state follows the
/// command name, which is in parentheses and may hold spaces.
fn settled(pid: u32) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    s.rfind(')')
        .and_then(|i| s[i + 1..].split_whitespace().next())
        .is_some_and(|st| matches!(st, "S" | "Z" | "X"))
}

/// The ring of one subscriber count, with its subscriber processes and
/// what its offers took.
struct Group {
    subscribers: u32,
    publ: Publication,
    peers: Vec<Peer>,
    files: Vec<std::path::PathBuf>,
    /// Wall clock per offer (ns).
    took: Vec<u64>,
    /// The publisher thread's CPU time per offer (ns).
    cpu: Vec<u64>,
    /// Total wait, after the pace, until every subscriber was asleep (ns).
    settle: u64,
}

/// Opens a ring for `subscribers` and starts its subscriber processes;
/// with `cpus` (pinned), subscriber `i` runs on `cpus[1 + i % (cpus.len() - 1)]`
/// (the publisher is on `cpus[0]`).
fn open_group(subscribers: u32, size: usize, messages: u64, cpus: &[usize]) -> Result<Group> {
    let name = unique_name("fanout");
    let mut publ = Publication::open(&format!("shm:{name}?subscribers={}", subscribers.max(1)))
        .map_err(|e| err("open publication", e))?;
    let mut peers = Vec::new();
    let mut files = Vec::new();
    for i in 0..subscribers {
        let file = std::env::temp_dir().join(format!("{name}-wake-{i}"));
        let args = PeerArgs {
            channel: Channel::Shm,
            size,
            count: messages,
            param: format!("shm:{name}?wait=block {}", file.display()),
            cpu: cpus
                .split_first()
                .map(|(_, rest)| rest[i as usize % rest.len()]),
            parent: std::process::id(),
        };
        let mut peer = Peer::spawn("__fanout-sub", &args.to_args())?;
        peer.expect("READY", READY_TIMEOUT)?;
        peers.push(peer);
        files.push(file);
    }
    publ.wait_for_subscribers(subscribers as usize, READY_TIMEOUT)
        .map_err(|e| err("wait for subscribers", e))?;
    Ok(Group {
        subscribers,
        publ,
        peers,
        files,
        took: Vec::with_capacity(messages as usize),
        cpu: Vec::with_capacity(messages as usize),
        settle: 0,
    })
}

/// Offers `messages` messages to each group's ring. Each round offers once
/// to every group, in an order shuffled per round (so that no ring's offer
/// always follows the wake-ups of the same other ring). Before each offer
/// every ring's previous message has been read by all of its subscribers,
/// `pace` has passed, and every subscriber process of every group is
/// asleep: each offer meets sleepers only, and the same history of
/// wake-ups before it whatever its ring.
fn run_groups(
    groups: &mut [Group],
    size: usize,
    messages: u64,
    pace: Duration,
    cpus: &[usize],
) -> Result<()> {
    let pids: Vec<u32> = groups
        .iter()
        .flat_map(|g| g.peers.iter().filter_map(Peer::pid))
        .collect();
    // The pace and the wait for sleepers run on a watcher thread (on the
    // subscribers' CPUs when pinned), so that the publisher's thread does
    // the same before every offer whatever the number of subscribers: it
    // spins on `turn` alone. Reading the `/proc` files on the publisher's
    // own thread right before the offer would evict its caches in
    // proportion to their number and be charged to the offer.
    let turn = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    // The watcher sleeps in `recv` between offers (spinning there would
    // take the subscribers' CPU from them when pinned).
    let (go, flushed) = std::sync::mpsc::channel::<(u64, usize)>();
    let (turn, failed, pids) = (&turn, &failed, &pids);
    let n = groups.len();
    let settle = std::thread::scope(|scope| -> Result<Vec<u64>> {
        let watcher = scope.spawn(move || -> Result<Vec<u64>> {
            if let Some(&c) = cpus.get(1) {
                crate::pin::pin_current_thread(c)?;
            }
            let mut waited = vec![0u64; n];
            // `(t, k)`: every ring's previous message is read, and the
            // publisher waits to make offer `t`, to group `k`; a closed channel means it is
            // done or gave up.
            while let Ok((t, k)) = flushed.recv() {
                // Every subscriber has read its ring's previous message;
                // `pace` later it has spun out its budget and sleeps on
                // the futex.
                std::thread::sleep(pace);
                // And asleep: on two vCPUs, 64 subscribers spinning out
                // their budgets one after another can take longer than `pace`.
                let asleep = Instant::now();
                while !pids.iter().all(|&p| settled(p)) {
                    if asleep.elapsed() > IDLE {
                        failed.store(true, Ordering::Relaxed);
                        return Err(BenchError::msg("fanout: subscribers never all asleep"));
                    }
                    std::thread::yield_now();
                }
                waited[k] += asleep.elapsed().as_nanos() as u64;
                // Release partner: the publisher's Acquire load of `turn`.
                turn.store(t + 1, Ordering::Release);
            }
            Ok(waited)
        });
        let offers = (|| -> Result<()> {
            let mut order: Vec<usize> = (0..n).collect();
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            let mut msg = vec![0u8; size];
            let mut t = 0u64;
            // The ring offered to last: every other ring's last message was
            // flushed before the offers that followed it.
            let mut last: Option<usize> = None;
            for seq in 0..messages {
                // Fisher-Yates with xorshift64.
                for i in (1..n).rev() {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    order.swap(i, (rng % (i as u64 + 1)) as usize);
                }
                for &k in &order {
                    if let Some(g) = last.and_then(|j| groups.get_mut(j)) {
                        g.publ.flush(IDLE).map_err(|e| err("flush", e))?;
                    }
                    if go.send((t, k)).is_err() {
                        return Ok(());
                    }
                    while turn.load(Ordering::Acquire) != t + 1 {
                        if failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        std::hint::spin_loop();
                    }
                    t += 1;
                    offer_timed(&mut groups[k], &mut msg, seq)?;
                    last = Some(k);
                }
            }
            Ok(())
        })();
        drop(go);
        if offers.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        let waited = watcher
            .join()
            .map_err(|_| BenchError::msg("fanout: the watcher thread panicked"))?;
        offers?;
        waited
    })?;
    for (g, w) in groups.iter_mut().zip(settle) {
        g.settle = w;
    }
    Ok(())
}

/// One timed offer of message `seq` to `g`'s ring (retried while
/// back-pressured, for at most [`IDLE`]).
fn offer_timed(g: &mut Group, msg: &mut [u8], seq: u64) -> Result<()> {
    encode(msg, 0, seq);
    let since = Instant::now();
    loop {
        msg[16..24].copy_from_slice(&monotonic_ns().to_le_bytes());
        let c0 = thread_cpu_ns();
        let t0 = Instant::now();
        match g.publ.offer(TYPE_ID, msg) {
            Ok(_) => {
                g.took.push(t0.elapsed().as_nanos() as u64);
                g.cpu.push(thread_cpu_ns().saturating_sub(c0));
                return Ok(());
            }
            Err(Error::BackPressured) if since.elapsed() < IDLE => std::hint::spin_loop(),
            Err(e) => return Err(err("offer", e)),
        }
    }
}

/// Waits for `g`'s subscribers to finish and makes its row from their
/// delivery times and the offers' times.
fn finish_group(g: Group, messages: u64) -> Result<FanoutRow> {
    let Group {
        subscribers,
        publ,
        peers,
        files,
        mut took,
        mut cpu,
        settle,
    } = g;
    for peer in peers {
        peer.finish(Duration::from_secs(60), || Ok(()))?;
    }
    drop(publ);
    // Per message: the earliest and the latest subscriber.
    let mut first = vec![u64::MAX; messages as usize];
    let mut last = vec![0u64; messages as usize];
    for file in &files {
        let bytes = std::fs::read(file)
            .map_err(|e| BenchError(format!("cannot read {}: {e}", file.display())))?;
        let _ = std::fs::remove_file(file);
        if bytes.len() != messages as usize * 8 {
            return Err(BenchError(format!(
                "{}: {} bytes, {} expected",
                file.display(),
                bytes.len(),
                messages * 8
            )));
        }
        for (k, c) in bytes.chunks_exact(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            let ns = u64::from_le_bytes(w);
            first[k] = first[k].min(ns);
            last[k] = last[k].max(ns);
        }
    }
    took.sort_unstable();
    cpu.sort_unstable();
    first.sort_unstable();
    last.sort_unstable();
    Ok(FanoutRow {
        subscribers,
        offer: (
            quantile(&took, 0.5),
            quantile(&took, 0.9),
            quantile(&took, 0.99),
        ),
        cpu: (quantile(&cpu, 0.5), quantile(&cpu, 0.99)),
        first: (quantile(&first, 0.5), quantile(&first, 0.99)),
        last: (quantile(&last, 0.5), quantile(&last, 0.99)),
        settle: settle / messages.max(1),
    })
}

/// Peer process `__mpsc-send` (publishes until killed) or `__fanout-sub`
/// (receives `count` messages in order, asleep between them).
///
/// # Errors
/// Setting up or running the peer failed (also sent as an `ERROR` line).
pub fn peer_main(role: &str, args: &PeerArgs) -> Result<()> {
    let r = peer_run(role, args);
    if let Err(e) = &r {
        announce("ERROR", &e.to_string().replace('\n', " "));
    }
    r
}

fn peer_run(role: &str, args: &PeerArgs) -> Result<()> {
    child_init(args.parent)?;
    match role {
        "__mpsc-send" => {
            let (uri, id) = args
                .param
                .split_once(' ')
                .ok_or_else(|| BenchError::msg("__mpsc-send needs `URI ID`"))?;
            let id: u32 = id
                .parse()
                .map_err(|_| BenchError::msg("bad publisher id"))?;
            let mut p = Publication::open(uri).map_err(|e| err("open publication", e))?;
            announce("READY", "");
            let mut msg = vec![0u8; args.size];
            let mut seq = 0u64;
            loop {
                encode(&mut msg, id, seq);
                match p.offer_with(TYPE_ID, msg.len(), |b| b.copy_from_slice(&msg)) {
                    Ok(_) => seq += 1,
                    Err(Error::BackPressured | Error::NotConnected) => std::hint::spin_loop(),
                    Err(e) => return Err(err("offer", e)),
                }
            }
        }
        "__fanout-sub" => {
            let (uri, file) = args
                .param
                .split_once(' ')
                .ok_or_else(|| BenchError::msg("__fanout-sub needs `URI FILE`"))?;
            crate::pin::pin_optional(args.cpu)?;
            let mut s = Subscription::open(uri).map_err(|e| err("open subscription", e))?;
            announce("READY", "");
            let mut next = 0u64;
            let mut bad = None;
            // Per message: CLOCK_MONOTONIC at delivery minus the stamp taken
            // just before the offer.
            let mut wake = Vec::with_capacity(args.count as usize * 8);
            while next < args.count {
                s.poll_timeout(
                    |m| match decode(m.payload()) {
                        Ok((_, seq)) if seq == next => {
                            let now = monotonic_ns();
                            let Some(stamp) = m.payload().get(16..24) else {
                                bad.get_or_insert("message without a stamp".to_string());
                                return;
                            };
                            let mut w = [0u8; 8];
                            w.copy_from_slice(stamp);
                            let ns = now.saturating_sub(u64::from_le_bytes(w));
                            wake.extend_from_slice(&ns.to_le_bytes());
                            next += 1;
                        }
                        Ok((_, seq)) => {
                            bad.get_or_insert(format!("message {seq} where {next} was expected"));
                        }
                        Err(e) => {
                            bad.get_or_insert(e.to_string());
                        }
                    },
                    1024,
                    Duration::from_secs(30),
                )
                .map_err(|e| err("poll", e))?;
                if let Some(b) = bad {
                    return Err(BenchError(b));
                }
            }
            std::fs::write(file, &wake)
                .map_err(|e| BenchError(format!("cannot write {file}: {e}")))?;
            announce("RSS", &crate::rss::peak_rss_kib().to_string());
            Ok(())
        }
        other => Err(BenchError(format!("unknown topology peer {other}"))),
    }
}
