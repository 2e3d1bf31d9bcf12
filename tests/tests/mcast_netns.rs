//! UDP multicast between network namespaces, every end a process of its
//! own: one publisher namespace and up to four subscriber namespaces on one
//! bridge (`mcast_snooping` off, so the bridge floods the group to every
//! port), the multicast range routed to each namespace's `eth0`, loss by
//! nftables on the bridge (`numgen random mod 100 < 3 drop`).
//!
//! - Independent loss, 3 % per receiver (on the bridge's forward path, by
//!   output port): four receivers each get all 1 M messages (32..200 bytes,
//!   each carrying its sequence number and a checksum), exactly once, in
//!   order, intact; IPv4, and IPv6 with fewer messages.
//! - Correlated loss, 3 % dropped before the bridge (prerouting, on the
//!   publisher's port: every receiver misses the same datagrams): the NAKs
//!   of four receivers together are at most 1.5 times those of one receiver
//!   under the same loss and message count.
//! - The publisher's CPU time per message with four receivers and with one
//!   (lossless, and under the correlated loss) is printed, not asserted:
//!   the publisher pinned to one CPU (`taskset`) and the bridge's receive
//!   processing steered to another (RPS), so that it measures the
//!   publisher host's work and not the emulated switch's copies
//!   (`CONDUIT_MCAST_NO_STEER=1` measures without, for comparison).
//! - `flow=min` with one receiver stopped (SIGSTOP): the publisher is held
//!   back until `receiver_timeout`, then goes on (it prints the stretch it
//!   was held), the others get everything. After SIGCONT the stopped
//!   receiver catches up when the publisher's retransmit log still holds
//!   its data, and reports unrecoverable loss when it does not.
//! - `flow=tagged`: a stopped receiver without the tag does not hold the
//!   publisher back.
//! - A C program (through libconduit) subscribes to the group in two
//!   namespaces and gets every message of a Rust publisher.
//!
//! Needs root, iproute2 and nftables: prints `SKIP` otherwise, and fails
//! under `CI=true`. The namespaces are removed when a case ends, failed or
//! not (`Lab`'s `Drop`), and left-overs of a run killed by the watchdog by
//! the next run.

mod c_support;
mod udp_support;

use std::path::PathBuf;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use conduit_test_util::watchdog;
use udp_support::{lab_or_skip, run, Lab, Node};

/// One lab at a time: the cases are CPU-bound on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());
static WATCHDOG: Once = Once::new();

/// Per-process deadline (seconds) and how long the test waits for a stream.
const NODE_DEADLINE: u64 = 240;
const WAIT: Duration = Duration::from_secs(250);
const SHORT: Duration = Duration::from_secs(30);

fn node() -> &'static str {
    env!("CARGO_BIN_EXE_mcast_node")
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // Namespaces of a run killed by the watchdog are reaped by the next run.
    WATCHDOG.call_once(|| watchdog("mcast_netns suite", 1200).keep_armed());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn counter(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Whether `nft` runs; outside CI a missing `nft` skips (saying so), in CI
/// it fails (`.ci/run` installs nftables).
fn nft_or_skip() -> bool {
    if run("nft", &["--version"]).is_ok() {
        return true;
    }
    let why = "`nft` (nftables) not found: cannot drop frames on the bridge";
    assert!(!conduit_test_util::in_ci(), "{why}");
    eprintln!("SKIP: {why}");
    println!("SKIP: {why}");
    false
}

/// A lab of one publisher namespace (endpoint 0, 10.77.0.1, fd77::1) and
/// `receivers` subscriber namespaces (endpoint i, 10.77.0.(i+1),
/// fd77::(i+1)), with multicast flooded by the bridge and routed to
/// `eth0`; and a scratch directory for the files that start and end the
/// processes (`go`, `done`).
struct McastLab {
    lab: Lab,
    dir: PathBuf,
}

impl Drop for McastLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mcast_lab(receivers: usize) -> Option<McastLab> {
    let lab = lab_or_skip(1 + receivers)?;
    let hub = lab.hub().to_string();
    // Without snooping the bridge floods multicast to every port (no IGMP
    // or MLD querier needed).
    run(
        "ip",
        &[
            "-n",
            &hub,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ],
    )
    .expect("bridge without multicast snooping");
    for i in 0..=receivers {
        let ns = lab.ns(i).to_string();
        run(
            "ip",
            &["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"],
        )
        .expect("IPv4 multicast route");
        run(
            "ip",
            &[
                "-n",
                &ns,
                "-6",
                "addr",
                "add",
                &format!("fd77::{}/64", i + 1),
                "dev",
                "eth0",
                "nodad",
            ],
        )
        .expect("IPv6 address");
    }
    let k = NEXT_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("conduit-mcast-{}-{k}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    Some(McastLab { lab, dir })
}

static NEXT_DIR: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl McastLab {
    fn path(&self, name: &str) -> String {
        self.dir
            .join(name)
            .to_str()
            .expect("utf-8 path")
            .to_string()
    }

    fn touch(&self, name: &str) {
        std::fs::write(self.dir.join(name), b"").expect("touch");
    }

    /// Loads an nftables script into the hub (the bridge's namespace).
    fn nft(&self, script: &str) {
        let file = self.dir.join("rules.nft");
        std::fs::write(&file, script).expect("nft script");
        run(
            "ip",
            &[
                "netns",
                "exec",
                self.lab.hub(),
                "nft",
                "-f",
                file.to_str().expect("utf-8 path"),
            ],
        )
        .expect("nftables rules");
    }

    /// `percent` % loss on every frame the bridge forwards to each
    /// receiver's port, drawn for each port on its own (a flooded datagram
    /// is forwarded, and filtered, once per port).
    fn independent_loss(&self, receivers: usize, percent: u32) {
        let mut s = String::from(
            "table bridge cdt_mloss {\n chain loss_out {\n  type filter hook forward priority 0; policy accept;\n",
        );
        for i in 1..=receivers {
            s += &format!("  oifname \"p{i}\" numgen random mod 100 < {percent} counter drop\n");
        }
        s += " }\n}\n";
        self.nft(&s);
    }

    /// `percent` % loss on the frames entering the bridge from the
    /// publisher's port, before they are flooded: every receiver misses the
    /// same datagrams.
    fn correlated_loss(&self, percent: u32) {
        self.nft(&format!(
            "table bridge cdt_mloss {{\n chain loss_in {{\n  type filter hook prerouting priority 0; policy accept;\n  iifname \"p0\" numgen random mod 100 < {percent} counter drop\n }}\n}}\n"
        ));
    }

    /// Makes one CPU the publisher host's and another the switch's and the
    /// receiver hosts': the receive processing of every bridge port
    /// (`p0..pN` in the hub) runs on `c.switch` (RPS, `rps_cpus`), that of
    /// the publisher's `eth0` (what the receivers send it) on
    /// `c.publisher`, where [`start`] pins the publisher (`Spec::pin`).
    /// Returns the CPUs to pin the publisher to, or `None` (printed) where
    /// RPS cannot be set (a kernel without `CONFIG_RPS`).
    ///
    /// Without this, a datagram the publisher sends crosses its veth into
    /// the bridge on the sending CPU, in `sendmsg`: the bridge's flood, the
    /// copy into every receiver's namespace and those namespaces' IP and
    /// UDP receive all run in the publisher's process and count as its
    /// system time, growing with the receivers. Between hosts the switch
    /// makes the copies and the receivers' hosts receive them. With RPS on
    /// `p0` the frame is handed to the other CPU where it leaves the
    /// publisher host (the wire): the publisher's `sendmsg` still runs the
    /// whole UDP/IP send and the device's transmit (`veth_xmit`, the
    /// hand-off and the IPI, as a NIC driver's doorbell).
    fn steer(&self, receivers: usize, c: Option<Cpus>) -> Option<Cpus> {
        let c = c?;
        let rps = |ns: &str, dev: &str, cpu: usize| {
            let script = format!(
                "echo {} > /sys/class/net/{dev}/queues/rx-0/rps_cpus",
                cpu_mask(cpu)
            );
            run("ip", &["netns", "exec", ns, "sh", "-c", &script])
        };
        let set = (0..=receivers)
            .try_for_each(|i| rps(self.lab.hub(), &format!("p{i}"), c.switch).map(drop))
            .and_then(|()| rps(self.lab.ns(0), "eth0", c.publisher).map(drop));
        match set {
            Ok(()) => Some(c),
            Err(e) => {
                println!(
                    "note: no RPS ({e}): the publisher's CPU time includes the bridge's fan-out"
                );
                None
            }
        }
    }

    /// Frames the loss rules dropped (the sum of their counters).
    fn dropped(&self) -> u64 {
        let out = run(
            "ip",
            &[
                "netns",
                "exec",
                self.lab.hub(),
                "nft",
                "list",
                "table",
                "bridge",
                "cdt_mloss",
            ],
        )
        .unwrap_or_default();
        let words: Vec<&str> = out.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "packets")
            .filter_map(|w| w[1].parse::<u64>().ok())
            .sum()
    }
}

/// Two CPUs this process may run on: one for the publisher (its host),
/// one for the receive processing of the bridge and, behind it, of the
/// receivers' namespaces (the switch and the receivers' hosts; the
/// receiver processes are not pinned); see [`McastLab::steer`].
#[derive(Clone, Copy, Debug)]
struct Cpus {
    publisher: usize,
    switch: usize,
}

/// The first two CPUs of this process's affinity (`Cpus_allowed_list`),
/// or `None` (printed) with one CPU or without `taskset`.
fn two_cpus() -> Option<Cpus> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("")
        .trim();
    let mut cpus = list.split(',').flat_map(|r| {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        match (a.parse::<usize>(), b.parse::<usize>()) {
            (Ok(a), Ok(b)) => a..b.saturating_add(1),
            _ => 0..0,
        }
    });
    let c = match (cpus.next(), cpus.next()) {
        (Some(publisher), Some(switch)) => Some(Cpus { publisher, switch }),
        _ => None,
    };
    if c.is_none() {
        println!(
            "note: one CPU ({list:?}): the publisher's CPU time includes the bridge's fan-out"
        );
    } else if run("taskset", &["-V"]).is_err() {
        println!("note: no `taskset`: the publisher's CPU time includes the bridge's fan-out");
        return None;
    }
    c
}

/// `rps_cpus` mask of one CPU: hexadecimal, in comma-separated 32-bit
/// groups (the kernel's bitmap format).
fn cpu_mask(cpu: usize) -> String {
    let mut groups = vec![0u32; cpu / 32 + 1];
    groups[0] = 1 << (cpu % 32);
    groups
        .iter()
        .map(|g| format!("{g:x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A group, the publisher's interface option and each receiver's.
#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn group(self, port: u16) -> String {
        match self {
            Family::V4 => format!("239.77.0.1:{port}"),
            Family::V6 => format!("[ff15::77:1]:{port}"),
        }
    }

    /// The `iface=` of endpoint `i`.
    fn iface(self, lab: &Lab, i: usize) -> String {
        match self {
            Family::V4 => lab.addr(i).to_string(),
            Family::V6 => "eth0".into(),
        }
    }
}

/// One publisher and its receivers, started; see [`start`].
struct Group {
    publ: Node,
    subs: Vec<Node>,
    sub_pids: Vec<u32>,
}

fn pid_of(n: &mut Node) -> u32 {
    let line = n.expect_line("pid ", SHORT).unwrap();
    line[4..].trim().parse().expect("pid")
}

fn signal(pid: u32, sig: &str) {
    run("kill", &[sig, &pid.to_string()]).unwrap_or_else(|e| panic!("kill {sig} {pid}: {e}"));
}

/// What a case runs: the group, the options of each end, the count.
struct Spec<'a> {
    family: Family,
    port: u16,
    count: u64,
    /// Publisher URI options after the group's own.
    pub_opts: &'a str,
    /// Each receiver's URI options (one entry per receiver).
    sub_opts: Vec<String>,
    /// Further publisher arguments (`pace=N`).
    pub_extra: Vec<String>,
    /// Runs the publisher on `Cpus::publisher` only (`taskset`); see
    /// [`McastLab::steer`].
    pin: Option<Cpus>,
}

/// Starts the receivers (endpoints 1..), waits until each is ready, starts
/// the publisher (endpoint 0), waits until every receiver joined the
/// session and lets the publisher send (`go`). Every process stays until
/// `done` is touched.
fn start(ml: &McastLab, spec: &Spec<'_>) -> Group {
    let lab = &ml.lab;
    let group = spec.family.group(spec.port);
    let (n, dl) = (spec.count.to_string(), NODE_DEADLINE.to_string());
    let done = format!("done={}", ml.path("done"));
    let mut subs = Vec::new();
    let mut sub_pids = Vec::new();
    for (k, o) in spec.sub_opts.iter().enumerate() {
        let i = k + 1;
        let uri = format!(
            "udp://{group}?driver=socket&iface={}&liveness=3s&wait=block{o}",
            spec.family.iface(lab, i)
        );
        let mut s = lab
            .spawn(Some(i), node(), &["sub", &uri, &n, &dl, &done])
            .unwrap();
        sub_pids.push(pid_of(&mut s));
        s.expect_line("ready", SHORT).unwrap();
        subs.push(s);
    }
    // GSO off: each datagram a frame of its own on the bridge, so the loss is
    // per datagram. With `tx=packet` every datagram is a frame anyway, and GSO
    // on lets batches reach the packet socket as multi-datagram transmits.
    let gso = if spec.pub_opts.contains("tx=packet") {
        ""
    } else {
        "&gso=off"
    };
    let uri = format!(
        "udp://{group}?driver=socket&iface={}&ttl=1{gso}&linger=50us&liveness=3s{}",
        spec.family.iface(lab, 0),
        spec.pub_opts
    );
    let go = format!("go={}", ml.path("go"));
    let cpu = spec.pin.map(|c| c.publisher.to_string());
    let mut args = match &cpu {
        Some(c) => vec!["-c", c, node()],
        None => vec![],
    };
    args.extend(["pub", &uri, &n, &dl, &go, &done]);
    args.extend(spec.pub_extra.iter().map(|s| s.as_str()));
    let bin = if cpu.is_some() { "taskset" } else { node() };
    let mut publ = lab.spawn(Some(0), bin, &args).unwrap();
    for s in &mut subs {
        s.expect_line("joined", SHORT)
            .expect("a receiver did not join the group's session");
    }
    ml.touch("go");
    publ.expect_line("connected", SHORT).unwrap();
    Group {
        publ,
        subs,
        sub_pids,
    }
}

/// What a finished stream reports.
struct Outcome {
    /// Each receiver's counters line.
    subs: Vec<String>,
    /// The publisher's counters line.
    publ: String,
    /// The publisher's CPU time while sending and flushing, ms.
    cpu_ms: u64,
    /// Of which user and system time, µs.
    user_us: u64,
    sys_us: u64,
    /// Wall time from `go` to the last receiver's `received`.
    secs: f64,
}

/// Waits until every receiver of `g` got every message and the publisher
/// flushed; then lets every process go and checks they exit cleanly.
fn finish(ml: &McastLab, g: &mut Group, count: u64, started: Instant) -> Outcome {
    let mut subs = Vec::new();
    for s in &mut g.subs {
        s.expect_line(&format!("received {count}"), WAIT)
            .expect("a receiver did not get the whole stream");
        subs.push(s.expect_line("counters", SHORT).unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    g.publ
        .expect_line(&format!("sent {count}"), WAIT)
        .expect("the publisher did not finish");
    let cpu = g.publ.expect_line("cpu ", SHORT).unwrap();
    let publ = g.publ.expect_line("counters", SHORT).unwrap();
    ml.touch("done");
    for s in &mut g.subs {
        assert!(s.wait(SHORT).unwrap().success(), "a receiver failed");
    }
    assert!(
        g.publ.wait(SHORT).unwrap().success(),
        "the publisher failed"
    );
    Outcome {
        subs,
        publ,
        cpu_ms: counter(&cpu, "sending_ms"),
        user_us: counter(&cpu, "user_us"),
        sys_us: counter(&cpu, "sys_us"),
        secs,
    }
}

fn receivers_opts(n: usize, o: &str) -> Vec<String> {
    vec![o.to_string(); n]
}

/// Four receivers with 3 % loss each, drawn independently: every one gets
/// every message, exactly once, in order, intact (each receiver checks),
/// and each repaired its own loss.
fn independent_loss(family: Family, port: u16, count: u64, tx: &str) {
    let _g = serial();
    if !nft_or_skip() {
        return;
    }
    let Some(ml) = mcast_lab(4) else { return };
    ml.independent_loss(4, 3);
    if tx.contains("tx=packet") {
        // No checksum offload on the publisher's interface: the kernel
        // completes the UDP checksum from the offsets conduit gives it, in
        // software, and every receiver's kernel checks it (wrong offsets drop
        // every frame), as a NIC without the offload would have it.
        run(
            "ip",
            &[
                "netns",
                "exec",
                ml.lab.ns(0),
                "ethtool",
                "-K",
                "eth0",
                "tx",
                "off",
            ],
        )
        .expect("ethtool -K eth0 tx off (package ethtool)");
    }
    let spec = Spec {
        family,
        port,
        count,
        pub_opts: &format!("&flow=min&receiver_timeout=5s{tx}"),
        sub_opts: receivers_opts(4, ""),
        pub_extra: vec![],
        pin: None,
    };
    let mut g = start(&ml, &spec);
    let t = Instant::now();
    let out = finish(&ml, &mut g, count, t);
    println!(
        "independent loss{tx}: {count} messages to 4 receivers in {:.1} s; bridge dropped {} frames; publisher CPU {} ms; {}",
        out.secs,
        ml.dropped(),
        out.cpu_ms,
        out.publ
    );
    for c in &out.subs {
        assert_eq!(counter(c, "received"), count, "{c}");
        assert!(counter(c, "naks_sent") > 0, "no loss repaired: {c}");
    }
    assert!(ml.dropped() > 0, "the loss rules dropped nothing");
}

#[test]
fn ipv4_four_receivers_independent_loss() {
    independent_loss(Family::V4, 41100, 1_000_000, "");
}

#[test]
fn ipv6_four_receivers_independent_loss() {
    independent_loss(Family::V6, 41101, 200_000, "");
}

/// The same with the publisher writing its frames through a packet socket
/// (`tx=packet`): the receivers' kernels take them as ordinary datagrams
/// (the IPv4 and UDP checksums built by conduit are checked there: a wrong
/// one would drop every frame), repairs and all.
#[test]
fn ipv4_four_receivers_independent_loss_tx_packet() {
    independent_loss(Family::V4, 41108, 300_000, "&tx=packet");
}

/// Messages of each correlated-loss run, and how many the publisher sends
/// per millisecond at most.
const CORRELATED: u64 = 300_000;
const CORRELATED_PACE: &str = "pace=100";
/// Runs with one receiver and with four, alternating, summed.
const CORRELATED_PAIRS: usize = 3;

/// One run under 3 % correlated loss with `receivers` receivers, steered
/// to `pin` ([`McastLab::steer`]): the NAKs they sent together, the
/// publisher's CPU time (user + system, µs), the frames dropped; and
/// whether it was steered.
fn correlated_run(receivers: usize, pin: Option<Cpus>) -> ((u64, u64, u64), bool) {
    let ml = mcast_lab(receivers).expect("lab (the caller checked)");
    ml.correlated_loss(3);
    let pin = ml.steer(receivers, pin);
    let spec = Spec {
        family: Family::V4,
        port: 41102,
        count: CORRELATED,
        pub_opts: "&flow=min&receiver_timeout=5s",
        sub_opts: receivers_opts(receivers, ""),
        pub_extra: vec![CORRELATED_PACE.to_string()],
        pin,
    };
    let mut g = start(&ml, &spec);
    let t = Instant::now();
    let out = finish(&ml, &mut g, CORRELATED, t);
    let naks: Vec<u64> = out.subs.iter().map(|c| counter(c, "naks_sent")).collect();
    let dropped = ml.dropped();
    println!(
        "correlated loss, {receivers} receiver(s): {CORRELATED} messages in {:.1} s; bridge dropped {dropped} frames; NAKs sent {naks:?} (total {}); publisher CPU {} ms; {}",
        out.secs,
        naks.iter().sum::<u64>(),
        out.cpu_ms,
        out.publ
    );
    let steered = pin.is_some();
    (
        (naks.iter().sum(), out.user_us + out.sys_us, dropped),
        steered,
    )
}

/// NAK suppression between processes: under the same 3 % loss before the
/// fan-out and the same message count, four receivers send at most 1.5
/// times the NAKs of one (summed over a few runs of each). Also prints the
/// publisher's CPU time per message with one and four receivers (a
/// measurement, not a check; steered as in
/// `publisher_cpu_per_message_one_and_four_receivers`, which does not
/// change the NAK ratio).
///
/// The publisher is paced (at most 100 messages per millisecond, some 11
/// datagrams): at full speed a drop comes about every millisecond, as
/// often as a receiver's suppression window (some 16 RTTs) lasts, and four
/// receivers then send about twice the NAKs of one (the publisher still
/// resends each range once). The ratio depends on how soon each receiver
/// is scheduled: see the "Tests" section of `docs/multicast.md`.
#[test]
fn correlated_loss_nak_suppression_and_publisher_cpu() {
    let _g = serial();
    // A first lab only to learn whether labs can be built here (skip).
    if !nft_or_skip() || mcast_lab(1).is_none() {
        return;
    }
    let (mut one, mut four) = ((0, 0, 0), (0, 0, 0));
    let add = |a: &mut (u64, u64, u64), b: (u64, u64, u64)| {
        a.0 += b.0;
        a.1 += b.1;
        a.2 += b.2;
    };
    let pin = steering();
    let mut steered = true;
    for _ in 0..CORRELATED_PAIRS {
        for (n, sum) in [(1, &mut one), (4, &mut four)] {
            let (r, st) = correlated_run(n, pin);
            add(sum, r);
            steered &= st;
        }
    }
    let messages = CORRELATED * CORRELATED_PAIRS as u64;
    let per = |us: u64| us as f64 * 1e3 / messages as f64;
    println!(
        "NAKs over {CORRELATED_PAIRS} runs each: 1 receiver {} ({} frames dropped), 4 receivers {} in total ({} frames dropped): {:.2}x",
        one.0,
        one.2,
        four.0,
        four.2,
        four.0 as f64 / one.0.max(1) as f64
    );
    let how = match (steered, pin) {
        (true, Some(c)) => format!(
            "publisher on CPU {}, the bridge's receive processing on CPU {}",
            c.publisher, c.switch
        ),
        _ => "not steered: includes the bridge's fan-out".into(),
    };
    println!(
        "publisher CPU per message: 1 receiver {:.0} ns, 4 receivers {:.0} ns ({:.2}x; getrusage, user + system, {messages} messages each, {CORRELATED_PACE}; {how})",
        per(one.1),
        per(four.1),
        four.1 as f64 / one.1.max(1) as f64
    );
    assert!(one.0 > 0, "one receiver sent no NAK under 3 % loss");
    assert!(
        four.0 * 2 <= one.0 * 3,
        "4 receivers sent {} NAKs, more than 1.5 x the {} of one receiver",
        four.0,
        one.0
    );
}

/// Messages of each run of the CPU measurement, and runs with one receiver
/// and with four (alternating, summed).
const CPU_MESSAGES: u64 = 300_000;
const CPU_PAIRS: usize = 2;

/// The CPUs to steer to (see [`McastLab::steer`]), unless
/// `CONDUIT_MCAST_NO_STEER=1` asks to measure with the bridge's fan-out on
/// the publisher's CPU (for comparison).
fn steering() -> Option<Cpus> {
    if std::env::var("CONDUIT_MCAST_NO_STEER").as_deref() == Ok("1") {
        println!("note: CONDUIT_MCAST_NO_STEER=1: the publisher's CPU time includes the bridge's fan-out");
        return None;
    }
    two_cpus()
}

/// The publisher's user and system CPU time (µs) for `CPU_MESSAGES` to
/// `receivers` receivers, lossless, paced as the correlated runs (so the
/// time is work per message, not spinning on back-pressure), and whether
/// it was steered ([`McastLab::steer`]).
fn cpu_run(receivers: usize, pin: Option<Cpus>) -> (u64, u64, bool) {
    let ml = mcast_lab(receivers).expect("lab (the caller checked)");
    let pin = ml.steer(receivers, pin);
    let spec = Spec {
        family: Family::V4,
        port: 41106,
        count: CPU_MESSAGES,
        pub_opts: "&flow=min&receiver_timeout=5s",
        sub_opts: receivers_opts(receivers, ""),
        pub_extra: vec![CORRELATED_PACE.to_string()],
        pin,
    };
    let mut g = start(&ml, &spec);
    let t = Instant::now();
    let out = finish(&ml, &mut g, CPU_MESSAGES, t);
    println!(
        "lossless, {receivers} receiver(s): {CPU_MESSAGES} messages in {:.1} s; publisher user {} us, system {} us ({:.0} ns per message); {}",
        out.secs,
        out.user_us,
        out.sys_us,
        (out.user_us + out.sys_us) as f64 * 1e3 / CPU_MESSAGES as f64,
        out.publ
    );
    (out.user_us, out.sys_us, pin.is_some())
}

/// The publisher's CPU time per message (user and system of the whole
/// process while sending and flushing, `getrusage`) with one receiver and
/// with four, lossless and paced, summed over a few runs of each: printed
/// with the ratios (`--nocapture`), not asserted. Every run still checks
/// delivery.
///
/// The publisher is pinned to one CPU and the receive processing of the
/// bridge (and so of the receivers' namespaces behind it) steered to
/// another ([`McastLab::steer`]), so that its time is the
/// publisher host's work (sending each datagram once; taking in the
/// receivers' status messages and NAKs, which grow with them), not the
/// emulated switch's copies to every receiver.
#[test]
fn publisher_cpu_per_message_one_and_four_receivers() {
    let _g = serial();
    // A first lab only to learn whether labs can be built here (skip).
    if mcast_lab(1).is_none() {
        return;
    }
    let pin = steering();
    let (mut one, mut four) = ((0, 0), (0, 0));
    let mut steered = true;
    for _ in 0..CPU_PAIRS {
        for (n, sum) in [(1, &mut one), (4, &mut four)] {
            let (u, s, st) = cpu_run(n, pin);
            sum.0 += u;
            sum.1 += s;
            steered &= st;
        }
    }
    let messages = CPU_MESSAGES * CPU_PAIRS as u64;
    let per = |us: u64| us as f64 * 1e3 / messages as f64;
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    let how = match (steered, pin) {
        (true, Some(c)) => format!(
            "publisher on CPU {}, the bridge's receive processing on CPU {}",
            c.publisher, c.switch
        ),
        _ => "not steered: includes the bridge's fan-out".into(),
    };
    println!(
        "publisher CPU per message, lossless, {CORRELATED_PACE}, {CPU_PAIRS} runs each of {CPU_MESSAGES} messages ({how}): user 1 receiver {:.0} ns, 4 receivers {:.0} ns ({:.2}x); system {:.0} ns, {:.0} ns ({:.2}x); total {:.0} ns, {:.0} ns ({:.2}x)",
        per(one.0),
        per(four.0),
        ratio(four.0, one.0),
        per(one.1),
        per(four.1),
        ratio(four.1, one.1),
        per(one.0 + one.1),
        per(four.0 + four.1),
        ratio(four.0 + four.1, one.0 + one.1)
    );
}

/// `flow=min`, four receivers, the last one stopped by SIGSTOP mid-stream:
/// the publisher is held back until `receiver_timeout` (1 s) drops it, then
/// sends the rest; the other three get everything. After SIGCONT the
/// stopped one asks for the session again: with `retransmit` large enough
/// for the whole stream it is repaired from its own position and gets
/// everything (`catch_up`); with a log that the rest of the stream
/// overwrote, it reports the loss (`UnrecoverableLoss`) and exits.
fn min_flow_stopped_receiver(retransmit: &str, count: u64, pace: u64, catch_up: bool) {
    let _g = serial();
    let Some(ml) = mcast_lab(4) else { return };
    let spec = Spec {
        family: Family::V4,
        port: 41103,
        count,
        pub_opts: &format!("&flow=min&receiver_timeout=1s&retransmit={retransmit}"),
        sub_opts: receivers_opts(4, ""),
        pub_extra: vec![format!("pace={pace}")],
        pin: None,
    };
    let mut g = start(&ml, &spec);
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let victim = g.sub_pids[3];
    signal(victim, "-STOP");
    let mut stopped = g.subs.pop().expect("four receivers");
    // The live ones finish while it is stopped.
    let mut live = Vec::new();
    for s in &mut g.subs {
        s.expect_line(&format!("received {count}"), WAIT)
            .expect("a live receiver was held back by the stopped one");
        live.push(s.expect_line("counters", SHORT).unwrap());
    }
    let mut held = Vec::new();
    loop {
        let l = g
            .publ
            .expect_line("", WAIT)
            .expect("the publisher did not finish while a receiver was stopped");
        if l.starts_with("held ") {
            held.push(l);
        } else if l == format!("sent {count}") {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!("min flow, one receiver stopped: {count} messages in {secs:.1} s; publisher {held:?}");
    // The stopped receiver held the publisher back (flow=min) until it was
    // dropped from the set: one stretch of a good part of the timeout.
    assert!(
        held.iter().any(|l| counter(l, "ms") >= 250),
        "the publisher was never held back by the stopped receiver: {held:?}"
    );
    signal(victim, "-CONT");
    if catch_up {
        stopped
            .expect_line(&format!("received {count}"), WAIT)
            .expect("the resumed receiver did not catch up");
        let c = stopped.expect_line("counters", SHORT).unwrap();
        println!("resumed receiver caught up: {c}");
        ml.touch("done");
        assert!(stopped.wait(SHORT).unwrap().success());
    } else {
        let loss = stopped
            .expect_line("loss ", WAIT)
            .expect("the resumed receiver did not report its loss");
        println!("resumed receiver: {loss}");
        assert!(counter(&loss, "to") > counter(&loss, "from"), "{loss}");
        assert!(counter(&loss, "after") < count, "{loss}");
        let status = stopped.wait(SHORT).unwrap();
        assert_eq!(status.code(), Some(4), "the loss was not reported as such");
        ml.touch("done");
    }
    for s in &mut g.subs {
        assert!(s.wait(SHORT).unwrap().success(), "a live receiver failed");
    }
    assert!(
        g.publ.wait(SHORT).unwrap().success(),
        "the publisher failed"
    );
}

#[test]
fn min_flow_stopped_receiver_is_dropped_then_catches_up() {
    // 100 k messages of at most 208 bytes on the wire fit in 32 MiB.
    min_flow_stopped_receiver("32m", 100_000, 40, true);
}

#[test]
fn min_flow_stopped_receiver_is_dropped_then_reports_loss() {
    // 300 k messages are some 38 MB: the default 4 MiB log holds the
    // last few tens of thousands only.
    min_flow_stopped_receiver("4m", 300_000, 100, false);
}

/// `flow=tagged&group_tag=7&min_receivers=3`: three tagged receivers and
/// one untagged, stopped (SIGSTOP) once it joined. The receiver timeout is
/// far beyond the case: only not counting the untagged receiver lets the
/// stream finish.
#[test]
fn tagged_flow_not_held_back_by_a_stopped_untagged_receiver() {
    let _g = serial();
    let Some(ml) = mcast_lab(4) else { return };
    let count = 200_000;
    let mut sub_opts = receivers_opts(3, "&group_tag=7");
    sub_opts.push(String::new());
    let spec = Spec {
        family: Family::V4,
        port: 41104,
        count,
        pub_opts: "&flow=tagged&group_tag=7&min_receivers=3&receiver_timeout=600s",
        sub_opts,
        pub_extra: vec![],
        pin: None,
    };
    // The untagged one is stopped before the publisher sends (it joined:
    // `start` waited for that).
    let mut g = start(&ml, &spec);
    signal(g.sub_pids[3], "-STOP");
    let t = Instant::now();
    let mut untagged = g.subs.pop().expect("four receivers");
    let out = finish(&ml, &mut g, count, t);
    println!(
        "tagged flow, untagged receiver stopped: {count} messages in {:.1} s; {}",
        out.secs, out.publ
    );
    signal(g.sub_pids[3], "-CONT");
    untagged.kill();
}

/// The message pattern of `ffi/tests/c/interop.c` from a Rust publisher
/// (`mcast_node pub ... pattern=c`) to two C subscriptions of the group
/// (`interop subscribe`), one linked statically and one against the shared
/// library, each in a namespace of its own. `flow=tagged` with
/// `min_receivers=2`: the publisher waits until both joined. `liveness=3s`
/// as in the other cases: with the default second a loaded machine made a
/// subscription give its publisher up (`CONDUIT_PEER_GONE`).
#[test]
fn c_subscribes_to_a_group() {
    let _g = serial();
    let Some(ml) = mcast_lab(2) else { return };
    const MESSAGES: u64 = 100_000;
    let exes = [
        ("c-group-static", c_support::Link::Static),
        ("c-group-shared", c_support::Link::Shared),
    ]
    .map(|(dir, link)| c_support::compile("tests/c/interop.c", &c_support::scratch(dir), link));
    let group = Family::V4.group(41105);
    let n = MESSAGES.to_string();
    let mut subs: Vec<Node> = exes
        .iter()
        .enumerate()
        .map(|(k, exe)| {
            let uri = format!(
                "udp://{group}?driver=socket&iface={}&group_tag=7&liveness=3s",
                ml.lab.addr(k + 1)
            );
            let mut s = ml
                .lab
                .spawn(
                    Some(k + 1),
                    exe.to_str().expect("utf-8 path"),
                    &["subscribe", &uri, &n],
                )
                .unwrap();
            s.expect_line("subscribed", SHORT).unwrap();
            s
        })
        .collect();
    let uri = format!(
        "udp://{group}?driver=socket&iface={}&ttl=1&flow=tagged&group_tag=7&min_receivers=2&liveness=3s",
        ml.lab.addr(0)
    );
    let dl = NODE_DEADLINE.to_string();
    let mut publ = ml
        .lab
        .spawn(Some(0), node(), &["pub", &uri, &n, &dl, "pattern=c"])
        .unwrap();
    for s in &mut subs {
        s.expect_line(&format!("received {MESSAGES}"), WAIT)
            .expect("a C subscription did not get every message");
        assert!(s.wait(SHORT).unwrap().success(), "a C subscription failed");
    }
    publ.expect_line(&format!("offered {MESSAGES}"), SHORT)
        .expect("the publisher did not offer every message");
    // Its flush may see both subscriptions close (fewer than
    // `min_receivers`: not connected); what counts here is what they got.
    publ.kill();
}
