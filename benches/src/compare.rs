//! `compare`: every channel's round trip in one run, each against the `limit`
//! runs just before and after it (the limit itself moves with vCPU
//! placement); each conduit UDP channel against the bare socket in the same
//! wait mode (`udp-raw`, `udp-raw-block`), interleaved in the same two
//! processes; `udp-multicast` interleaved with `udp-netns` in one private
//! network namespace, and `udp-multicast-veth` with `udp-veth` across a veth
//! pair between two (with the bare sockets' floors, interleaved the same
//! way); plus one-way throughput rows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::channels::{cpus, Channel};
use crate::channels::{netns, veth};
use crate::error::{BenchError, Result};
use crate::latency::{LatencyConfig, PAIR_BLOCK};
use crate::plot::{self, Series, PALETTE};
use crate::report::{fmt_kib, fmt_si, save, LatencyResult, Run, ThroughputResult};

/// Channels `compare` runs when `--channels` is not given: every channel
/// this build has, but `limit` (which runs between them anyway).
pub fn default_channels() -> Vec<Channel> {
    Channel::all()
        .iter()
        .copied()
        .filter(|&c| c != Channel::LIMIT && c.available())
        .collect()
}

/// Two adjacent `limit` runs whose p50 differ by more than this factor get a
/// warning: the vCPU placement changed during the run.
const LIMIT_DISAGREEMENT: f64 = 1.25;

/// Default (measured, warm-up) round trips for a channel.
pub fn default_latency_messages(c: Channel) -> (u64, u64) {
    if c.is_udp() {
        (100_000, 10_000)
    } else {
        (1_000_000, 100_000)
    }
}

/// Default message count for a throughput run.
pub fn default_throughput_messages(c: Channel, size: usize) -> u64 {
    let udp = c.is_conduit_udp();
    match size {
        _ if udp => 1_000_000,
        0..=256 => 10_000_000,
        257..=4096 => 2_000_000,
        _ => 200_000,
    }
}

/// The latency config for `c` given the command-line overrides.
pub fn latency_config(
    c: Channel,
    size: usize,
    messages: Option<u64>,
    warmup: Option<u64>,
    rate: Option<f64>,
) -> LatencyConfig {
    let (dm, dw) = default_latency_messages(c);
    let messages = messages.unwrap_or(dm);
    let warmup = warmup.unwrap_or(if messages == dm { dw } else { messages / 10 });
    LatencyConfig {
        size,
        messages,
        warmup,
        rate,
    }
}

/// Mean of two limit runs' percentile `f`.
fn baseline(limits: &[LatencyResult], a: usize, b: usize, f: fn(&LatencyResult) -> u64) -> f64 {
    (f(&limits[a]) as f64 + f(&limits[b]) as f64) / 2.0
}

/// `1M`, `100k`, `1500`.
fn short_count(n: u64) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// `v / base`, or `None` when the base is zero.
fn ratio(v: u64, base: f64) -> Option<f64> {
    (base > 0.0).then(|| v as f64 / base)
}

/// A row's name: `udp [driver]` for the default-driver UDP channels.
fn display_name(r: &LatencyResult) -> String {
    match &r.driver {
        Some(d) if r.channel == "udp" || r.channel == "udp-block" => {
            format!("{} [{d}]", r.channel)
        }
        _ => r.channel.clone(),
    }
}

/// One channel's latency against the limit runs just before and after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelRow {
    /// The channel's result.
    #[serde(flatten)]
    pub result: LatencyResult,
    /// The limit runs before and after it (1-based, as the table numbers them).
    pub baseline_runs: (usize, usize),
    /// Mean p50 of those two limit runs, ns.
    pub baseline_p50_ns: f64,
    /// Mean p99 of those two limit runs, ns.
    pub baseline_p99_ns: f64,
    /// Mean p99.99 of those two limit runs, ns.
    pub baseline_p9999_ns: f64,
    /// p50 over the baseline p50.
    pub p50_vs_limit: Option<f64>,
    /// p99 over the baseline p99.
    pub p99_vs_limit: Option<f64>,
    /// p99.99 over the baseline p99.99.
    pub p9999_vs_limit: Option<f64>,
}

impl ChannelRow {
    /// `result` between limit runs `before` and `after` (indexes into `limits`).
    fn new(result: LatencyResult, limits: &[LatencyResult], before: usize, after: usize) -> Self {
        let b50 = baseline(limits, before, after, |r| r.pct.p50);
        let b99 = baseline(limits, before, after, |r| r.pct.p99);
        let b9999 = baseline(limits, before, after, |r| r.pct.p9999);
        let p = result.pct;
        ChannelRow {
            baseline_runs: (before + 1, after + 1),
            baseline_p50_ns: b50,
            baseline_p99_ns: b99,
            baseline_p9999_ns: b9999,
            p50_vs_limit: ratio(p.p50, b50),
            p99_vs_limit: ratio(p.p99, b99),
            p9999_vs_limit: ratio(p.p9999, b9999),
            result,
        }
    }
}

/// A conduit UDP channel and the bare socket in the same wait mode measured
/// in the same two processes, alternating blocks of round trips
/// ([`crate::channels::udp::latency_vs_raw`]): UDP over loopback moves more
/// from run to run than the cache-line limit does, so conduit is judged
/// against the bare socket measured in the same moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UdpVsRaw {
    /// conduit's half.
    pub conduit: LatencyResult,
    /// The bare socket's half (`udp-raw` or `udp-raw-block`).
    pub raw: LatencyResult,
    /// Round trips per block.
    pub block: u64,
    /// conduit's p50 over the bare socket's.
    pub p50_vs_udp_raw: Option<f64>,
    /// conduit's p99 over the bare socket's.
    pub p99_vs_udp_raw: Option<f64>,
}

impl UdpVsRaw {
    #[cfg_attr(not(feature = "conduit"), allow(dead_code))]
    fn new(conduit: LatencyResult, raw: LatencyResult) -> Self {
        UdpVsRaw {
            block: PAIR_BLOCK,
            p50_vs_udp_raw: ratio(conduit.pct.p50, raw.pct.p50 as f64),
            p99_vs_udp_raw: ratio(conduit.pct.p99, raw.pct.p99 as f64),
            conduit,
            raw,
        }
    }
}

/// `udp-multicast` and `udp-netns` measured in the same two processes of
/// one private network namespace, alternating blocks of round trips
/// ([`crate::channels::udp::multicast_vs_unicast`]): multicast against
/// unicast with everything else equal; or the kernel's floor for it,
/// `udp-raw-multicast` against `udp-raw` in one namespace
/// ([`crate::channels::udp_raw_multicast::multicast_vs_unicast`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MulticastVsUnicast {
    /// The multicast half (`udp-multicast` or `udp-raw-multicast`).
    pub multicast: LatencyResult,
    /// The unicast half (`udp-netns` or `udp-raw`, in the namespace).
    pub unicast: LatencyResult,
    /// Round trips per block.
    pub block: u64,
    /// Multicast's p50 over unicast's.
    pub p50_ratio: Option<f64>,
    /// Multicast's p99 over unicast's.
    pub p99_ratio: Option<f64>,
}

impl MulticastVsUnicast {
    fn new(multicast: LatencyResult, unicast: LatencyResult) -> Self {
        MulticastVsUnicast {
            block: PAIR_BLOCK,
            p50_ratio: ratio(multicast.pct.p50, unicast.pct.p50 as f64),
            p99_ratio: ratio(multicast.pct.p99, unicast.pct.p99 as f64),
            multicast,
            unicast,
        }
    }
}

/// `shm-mpsc` against `shm` interleaved in the same two processes
/// ([`crate::channels::shm::mpsc_vs_shm`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MpscVsShm {
    /// The `shm-mpsc` half.
    pub mpsc: LatencyResult,
    /// The `shm` half.
    pub shm: LatencyResult,
    /// Round trips per block.
    pub block: u64,
    /// `shm-mpsc`'s p50 over `shm`'s.
    pub p50_ratio: Option<f64>,
    /// `shm-mpsc`'s p99 over `shm`'s.
    pub p99_ratio: Option<f64>,
}

impl MpscVsShm {
    #[cfg_attr(not(feature = "conduit"), allow(dead_code))]
    fn new(mpsc: LatencyResult, shm: LatencyResult) -> Self {
        MpscVsShm {
            block: PAIR_BLOCK,
            p50_ratio: ratio(mpsc.pct.p50, shm.pct.p50 as f64),
            p99_ratio: ratio(mpsc.pct.p99, shm.pct.p99 as f64),
            mpsc,
            shm,
        }
    }
}

/// Targets of `shm-mpsc` against `shm` (issue #13): p50 and p99 ratios.
pub const MPSC_TARGETS: (f64, f64) = (1.10, 1.25);

/// The p50 of `udp-multicast` may be at most this factor of unicast's
/// (issue #14's target); the table marks a ratio above it.
pub const MULTICAST_P50_TARGET: f64 = 1.10;

/// A throughput result and the row it is judged against, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThroughputRow {
    /// The result.
    #[serde(flatten)]
    pub result: ThroughputResult,
    /// The channel it is judged against.
    pub reference: Option<String>,
    /// Its message rate over the reference's.
    pub vs_reference: Option<f64>,
}

/// A run that failed, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// What ran.
    pub what: String,
    /// The error.
    pub error: String,
}

/// Everything `compare` measured: what `--json` writes and `report` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    /// Payload bytes of the round trips.
    pub size: usize,
    /// The CPUs ping and pong were pinned to.
    pub cpus: Option<(usize, usize)>,
    /// How each peer in the run was configured (channel name, settings).
    pub peers: BTreeMap<String, String>,
    /// The `limit` runs, in order.
    pub limits: Vec<LatencyResult>,
    /// Each channel against the limit runs around it.
    pub channels: Vec<ChannelRow>,
    /// conduit over UDP interleaved with the bare socket.
    pub udp_vs_raw: Vec<UdpVsRaw>,
    /// `udp-multicast` interleaved with `udp-netns` (absent from runs made
    /// before the channel existed).
    #[serde(default)]
    pub multicast_vs_unicast: Vec<MulticastVsUnicast>,
    /// `shm-mpsc` interleaved with `shm` (absent from runs made before
    /// 2026-12-03 09:45 UTC).
    #[serde(default)]
    pub mpsc_vs_shm: Vec<MpscVsShm>,
    /// One-way throughput.
    pub throughput: Vec<ThroughputRow>,
    /// Warnings about the run's conditions.
    pub warnings: Vec<String>,
    /// Runs that failed.
    pub failures: Vec<Failure>,
}

/// Runs `compare`.
///
/// # Errors
/// A `limit` run failed (nothing can be compared), an output file cannot be
/// written, or any channel failed (after everything else was reported).
#[allow(clippy::too_many_arguments)]
pub fn run(
    size: usize,
    messages: Option<u64>,
    warmup: Option<u64>,
    channels: Option<Vec<Channel>>,
    no_throughput: bool,
    json: Option<&str>,
    plot_path: Option<&str>,
) -> Result<()> {
    let list: Vec<Channel> = channels
        .unwrap_or_else(default_channels)
        .into_iter()
        .filter(|&c| c != Channel::LIMIT)
        .collect();
    let latency_list: Vec<Channel> = list.iter().copied().filter(|c| c.has_latency()).collect();
    eprintln!(
        "compare: {size} B round trips; channels: limit, {}; {}",
        latency_list
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", "),
        match cpus() {
            Some((a, b)) => format!("ping and pong pinned to cpus {a} and {b}"),
            None => "only one cpu: not pinned".to_string(),
        }
    );

    let mut report = CompareReport {
        size,
        cpus: cpus(),
        peers: list
            .iter()
            .chain([Channel::LIMIT].iter())
            .filter_map(|c| {
                c.peer_config()
                    .map(|t| (c.name().to_string(), t.to_string()))
            })
            .collect(),
        limits: Vec::new(),
        channels: Vec::new(),
        udp_vs_raw: Vec::new(),
        multicast_vs_unicast: Vec::new(),
        mpsc_vs_shm: Vec::new(),
        throughput: Vec::new(),
        failures: Vec::new(),
        warnings: Vec::new(),
    };
    let run_limit = |report: &mut CompareReport| -> Result<usize> {
        let cfg = latency_config(Channel::LIMIT, size, messages, warmup, None);
        let r = Channel::LIMIT.latency(&cfg)?;
        eprintln!(
            "  limit #{}: p50 {} ns, p99 {} ns",
            report.limits.len() + 1,
            r.pct.p50,
            r.pct.p99
        );
        report.limits.push(r);
        Ok(report.limits.len() - 1)
    };

    // Whether a private network namespace (false), or two joined by a veth
    // pair (true), can be made (asked once, when a channel needs it): the
    // channels that need it are skipped otherwise.
    let mut probed: BTreeMap<bool, std::result::Result<(), String>> = BTreeMap::new();
    let mut namespaces_ok = |report: &mut CompareReport, c: Channel| -> bool {
        if !c.in_netns() && !c.in_veth() {
            return true;
        }
        let veth = c.in_veth();
        let probe = || if veth { veth::probe() } else { netns::probe() }.map_err(|e| e.to_string());
        match probed.entry(veth).or_insert_with(probe) {
            Ok(()) => true,
            Err(e) => {
                let w = format!("{} skipped: {e}", c.name());
                eprintln!("  {w}");
                report.warnings.push(w);
                false
            }
        }
    };

    let mut last_limit = run_limit(&mut report)?;
    for &c in &latency_list {
        if !namespaces_ok(&mut report, c) {
            continue;
        }
        let cfg = latency_config(c, size, messages, warmup, None);
        match c.latency(&cfg) {
            Ok(r) => {
                eprintln!("  {}: p50 {} ns, p99 {} ns", c.name(), r.pct.p50, r.pct.p99);
                let after = run_limit(&mut report)?;
                let row = ChannelRow::new(r, &report.limits, last_limit, after);
                report.channels.push(row);
                last_limit = after;
            }
            Err(e) => {
                eprintln!("  {}: FAILED: {e}", c.name());
                report.failures.push(Failure {
                    what: c.name().to_string(),
                    error: e.to_string(),
                });
            }
        }
    }
    #[cfg(feature = "conduit")]
    if latency_list.contains(&Channel::Shm) && latency_list.contains(&Channel::ShmMpsc) {
        let cfg = pair_config(Channel::ShmMpsc, size, messages, warmup);
        let what = "shm-mpsc / shm interleaved".to_string();
        let r = crate::channels::shm::mpsc_vs_shm(&cfg);
        if let Some((mpsc, shm)) = report.take_pair(what, r) {
            report.mpsc_vs_shm.push(MpscVsShm::new(mpsc, shm));
        }
    }
    let ready = |c: Channel| probed.get(&c.in_veth()) == Some(&Ok(()));
    for raw_m in [Channel::UdpRawMulticast, Channel::UdpRawMulticastVeth] {
        if !latency_list.contains(&raw_m) || !ready(raw_m) {
            continue;
        }
        // The kernel's floor: bare multicast against bare unicast,
        // interleaved in the same namespaces (reported with the conduit
        // pairs).
        let cfg = pair_config(raw_m, size, messages, warmup);
        let bare_unicast = if raw_m.in_veth() {
            Channel::UdpRawVeth
        } else {
            Channel::UdpRaw(crate::channels::Wait::Spin)
        };
        let what = format!("{} / {} interleaved", raw_m.name(), bare_unicast.name());
        let r = in_namespaces(raw_m, || {
            crate::channels::udp_raw_multicast::multicast_vs_unicast(raw_m, &cfg)
        });
        report.push_multicast_pair(what, r);
    }
    #[cfg(feature = "conduit")]
    {
        let with_baseline = latency_list.iter().filter_map(|&c| {
            c.raw_baseline()
                .filter(|raw| latency_list.contains(raw))
                .map(|raw| (c, raw))
        });
        for (c, raw) in with_baseline {
            // Twice the round trips: each channel gets half.
            let one = latency_config(c, size, messages, warmup, None);
            let cfg = LatencyConfig {
                messages: 2 * one.messages,
                warmup: 2 * one.warmup,
                ..one
            };
            let what = format!("{} / {} interleaved", c.name(), raw.name());
            let r = crate::channels::udp::latency_vs_raw(c, &cfg);
            if let Some((conduit, raw)) = report.take_pair(what, r) {
                report.udp_vs_raw.push(UdpVsRaw::new(conduit, raw));
            }
        }
        for (m, u) in [
            (Channel::UDP_MULTICAST, Channel::UDP_NETNS),
            (Channel::UDP_MULTICAST_VETH, Channel::UDP_VETH),
            (Channel::UDP_MULTICAST_PACKET_VETH, Channel::UDP_VETH),
        ] {
            if !latency_list.contains(&m) || !latency_list.contains(&u) || !ready(m) {
                continue;
            }
            let cfg = pair_config(m, size, messages, warmup);
            let what = format!("{} / {} interleaved", m.name(), u.name());
            let r = in_namespaces(m, || crate::channels::udp::multicast_vs_unicast(m, &cfg));
            report.push_multicast_pair(what, r);
        }
    }
    for w in report.limits.windows(2) {
        let (a, b) = (w[0].pct.p50 as f64, w[1].pct.p50 as f64);
        if a.max(b) > LIMIT_DISAGREEMENT * a.min(b) {
            report.warnings.push(format!(
                "adjacent limit runs disagree: p50 {a} ns vs {b} ns (> {:.0} %): the vCPU placement changed during the run; ratios next to them are less certain",
                (LIMIT_DISAGREEMENT - 1.0) * 100.0
            ));
        }
    }

    if !no_throughput {
        let mut jobs: Vec<(Channel, usize)> = [
            (Channel::Shm, 32),
            (Channel::ShmMpsc, 32),
            (Channel::Crossbeam, 32),
            (Channel::Shm, 1024),
            (Channel::Shm, 65536),
        ]
        .into_iter()
        .filter(|(c, _)| list.contains(c))
        .collect();
        jobs.extend(
            list.iter()
                .filter(|c| {
                    c.has_throughput() && matches!(c, Channel::Udp(_) | Channel::Proto { .. })
                })
                .map(|&c| (c, 32)),
        );
        for (c, s) in jobs {
            let n = messages.map_or_else(|| default_throughput_messages(c, s), |m| m.max(1));
            match c.throughput(s, n) {
                Ok(r) => {
                    eprintln!(
                        "  throughput {} {s} B: {} msgs/s",
                        c.name(),
                        fmt_si(r.msgs_per_sec())
                    );
                    report.throughput.push(ThroughputRow {
                        result: r,
                        reference: None,
                        vs_reference: None,
                    });
                }
                Err(e) => {
                    eprintln!("  throughput {} {s} B: FAILED: {e}", c.name());
                    report.failures.push(Failure {
                        what: format!("{} throughput {s} B", c.name()),
                        error: e.to_string(),
                    });
                }
            }
        }
    }

    report.judge_throughput();
    report.print();
    if let Some(path) = plot_path {
        report.write_plot(path)?;
        eprintln!("wrote {path}");
    }
    let failures: Vec<String> = report.failures.iter().map(|f| f.what.clone()).collect();
    if let Some(path) = json {
        save(path, Run::Compare(report))?;
        eprintln!("wrote {path}");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(BenchError(format!(
            "{} run(s) failed: {}",
            failures.len(),
            failures.join(", ")
        )))
    }
}

/// The config of an interleaved pair led by `c`: twice the round trips of
/// one run, as each channel gets half.
fn pair_config(
    c: Channel,
    size: usize,
    messages: Option<u64>,
    warmup: Option<u64>,
) -> LatencyConfig {
    let one = latency_config(c, size, messages, warmup, None);
    LatencyConfig {
        messages: 2 * one.messages,
        warmup: 2 * one.warmup,
        ..one
    }
}

/// Runs `f` in the namespaces `c` needs: two joined by a veth pair
/// ([`veth::run`]) or one private one ([`netns::run`]).
fn in_namespaces<T: Send>(c: Channel, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    if c.in_veth() {
        veth::run(f)
    } else {
        netns::run(f)
    }
}

/// A ratio as printed: two decimals, `-` when there is none.
fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}"))
}

impl CompareReport {
    /// An interleaved pair's outcome (`what` names it): printed, and its
    /// two halves returned; or its failure recorded.
    fn take_pair(
        &mut self,
        what: String,
        r: Result<(LatencyResult, LatencyResult)>,
    ) -> Option<(LatencyResult, LatencyResult)> {
        match r {
            Ok((a, b)) => {
                eprintln!(
                    "  {what}: p50 {} / {} ns, p99 {} / {} ns",
                    a.pct.p50, b.pct.p50, a.pct.p99, b.pct.p99
                );
                Some((a, b))
            }
            Err(e) => {
                eprintln!("  {what}: FAILED: {e}");
                self.failures.push(Failure {
                    what,
                    error: e.to_string(),
                });
                None
            }
        }
    }

    /// Records an interleaved multicast / unicast pair, or its failure.
    fn push_multicast_pair(&mut self, what: String, r: Result<(LatencyResult, LatencyResult)>) {
        if let Some((multicast, unicast)) = self.take_pair(what, r) {
            self.multicast_vs_unicast
                .push(MulticastVsUnicast::new(multicast, unicast));
        }
    }

    /// Checks what the tables index: a file read back may be damaged.
    ///
    /// # Errors
    /// No limit run, or a row names a limit run that is not there.
    pub fn validate(&self) -> Result<()> {
        if self.limits.is_empty() {
            return Err(BenchError::msg("compare run without a limit run"));
        }
        let n = self.limits.len();
        for row in &self.channels {
            let (a, b) = row.baseline_runs;
            if !(1..=n).contains(&a) || !(1..=n).contains(&b) {
                return Err(BenchError(format!(
                    "row {} names limit runs {a} and {b}; the run has {n}",
                    row.result.channel
                )));
            }
        }
        Ok(())
    }

    /// Calls `f` on every latency result in the run.
    pub fn for_each_latency(&mut self, mut f: impl FnMut(&mut LatencyResult)) {
        self.limits.iter_mut().for_each(&mut f);
        for row in &mut self.channels {
            f(&mut row.result);
        }
        for u in &mut self.udp_vs_raw {
            f(&mut u.conduit);
            f(&mut u.raw);
        }
        for m in &mut self.multicast_vs_unicast {
            f(&mut m.multicast);
            f(&mut m.unicast);
        }
        for m in &mut self.mpsc_vs_shm {
            f(&mut m.mpsc);
            f(&mut m.shm);
        }
    }

    /// Prints the tables.
    pub fn print(&self) {
        println!();
        println!(
            "Round trip, {} B, {} — each channel against the mean of the limit runs just before and after it",
            self.size,
            match self.cpus {
                Some((a, b)) => format!("ping/pong pinned to cpus {a}/{b}"),
                None => "unpinned".to_string(),
            }
        );
        if !self.peers.is_empty() {
            println!("Peers, as configured in this run:");
            for (name, config) in &self.peers {
                println!("  {name:<13} {config}");
            }
        }
        println!(
            "{:<18} {:>9} {:>7} {:>9} {:>7} {:>10} {:>7} {:>11}  peak RSS (ping / pong)",
            "channel", "p50 ns", "×limit", "p99 ns", "×limit", "p99.99 ns", "×limit", "max ns"
        );
        let line = |name: &str, r: &LatencyResult, ratios: [Option<f64>; 3], with: bool| {
            let rt = |x: Option<f64>| {
                if with {
                    fmt_ratio(x)
                } else {
                    "-".to_string()
                }
            };
            println!(
                "{:<18} {:>9} {:>7} {:>9} {:>7} {:>10} {:>7} {:>11}  {}",
                name,
                r.pct.p50,
                rt(ratios[0]),
                r.pct.p99,
                rt(ratios[1]),
                r.pct.p9999,
                rt(ratios[2]),
                r.pct.max,
                match r.rss_pong_kib {
                    Some(p) => format!("{} / {}", fmt_kib(r.rss_ping_kib), fmt_kib(p)),
                    None => format!("{} (1 process)", fmt_kib(r.rss_ping_kib)),
                }
            );
        };
        if let Some(first) = self.limits.first() {
            line("limit #1", first, [None; 3], false);
        }
        for row in &self.channels {
            let r = &row.result;
            let ratios = [
                ratio(r.pct.p50, row.baseline_p50_ns),
                ratio(r.pct.p99, row.baseline_p99_ns),
                ratio(r.pct.p9999, row.baseline_p9999_ns),
            ];
            line(&display_name(r), r, ratios, true);
            let after = row.baseline_runs.1;
            if let Some(l) = after.checked_sub(1).and_then(|i| self.limits.get(i)) {
                line(&format!("limit #{after}"), l, [None; 3], false);
            }
        }
        if let Some(first) = self.udp_vs_raw.first() {
            println!();
            println!(
                "conduit over UDP against the bare socket in the same wait mode (raw: udp-raw, spinning on recv; for *-block rows udp-raw-block, asleep in recv), interleaved: the same two processes alternate blocks of {} round trips over each ({} each)",
                first.block,
                short_count(first.conduit.messages)
            );
            println!(
                "{:<20} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}",
                "channel", "p50 ns", "raw", "ratio", "p99 ns", "raw", "ratio"
            );
            for u in &self.udp_vs_raw {
                let (c, r) = (&u.conduit.pct, &u.raw.pct);
                println!(
                    "{:<20} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}",
                    display_name(&u.conduit),
                    c.p50,
                    r.p50,
                    fmt_ratio(ratio(c.p50, r.p50 as f64)),
                    c.p99,
                    r.p99,
                    fmt_ratio(ratio(c.p99, r.p99 as f64))
                );
            }
        }
        self.print_mpsc();
        self.print_multicast();
        if !self.throughput.is_empty() {
            println!();
            println!("One-way throughput");
            println!(
                "{:<12} {:>7} {:>12} {:>12} {:>12}  {:<18} peak RSS (receiver / sender)",
                "channel", "size", "msgs/s", "B/s", "datagrams/s", "vs"
            );
            for row in &self.throughput {
                let t = &row.result;
                let vs = match (&row.reference, row.vs_reference) {
                    (Some(name), Some(v)) => format!("{v:.2}× {name}"),
                    _ => String::new(),
                };
                println!(
                    "{:<12} {:>7} {:>12} {:>12} {:>12}  {:<18} {}",
                    t.channel,
                    format!("{} B", t.size),
                    fmt_si(t.msgs_per_sec()),
                    fmt_si(t.bytes_per_sec()),
                    t.extra("datagrams_per_sec")
                        .map(fmt_si)
                        .unwrap_or_else(|| "-".into()),
                    vs,
                    match t.rss_tx_kib {
                        Some(s) => format!("{} / {}", fmt_kib(t.rss_rx_kib), fmt_kib(s)),
                        None => format!("{} (1 process)", fmt_kib(t.rss_rx_kib)),
                    }
                );
            }
        }
        for w in &self.warnings {
            println!("WARNING: {w}");
        }
        for f in &self.failures {
            println!("FAILED: {}: {}", f.what, f.error);
        }
    }

    /// Prints `shm-mpsc` against `shm`: interleaved in the same two
    /// processes, and from their separate rows of the first table.
    fn print_mpsc(&self) {
        let row = |name: &str| {
            self.channels
                .iter()
                .find(|r| r.result.channel == name)
                .map(|r| &r.result)
        };
        let separate = row(Channel::ShmMpsc.name()).zip(row(Channel::Shm.name()));
        if self.mpsc_vs_shm.is_empty() && separate.is_none() {
            return;
        }
        let (t50, t99) = MPSC_TARGETS;
        println!();
        println!(
            "shm-mpsc (a ring for 4 publishers, one active) against shm; targets: p50 ratio <= {t50:.2}, p99 ratio <= {t99:.2}"
        );
        println!(
            "{:<50} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}",
            "", "p50 ns", "shm", "ratio", "p99 ns", "shm", "ratio"
        );
        let line = |what: String, m: &LatencyResult, s: &LatencyResult| {
            let (m, s) = (&m.pct, &s.pct);
            let (r50, r99) = (ratio(m.p50, s.p50 as f64), ratio(m.p99, s.p99 as f64));
            let above = r50.is_some_and(|r| r > t50) || r99.is_some_and(|r| r > t99);
            println!(
                "{:<50} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}{}",
                what,
                m.p50,
                s.p50,
                fmt_ratio(r50),
                m.p99,
                s.p99,
                fmt_ratio(r99),
                if above { "  (above target)" } else { "" }
            );
        };
        for p in &self.mpsc_vs_shm {
            line(
                format!("interleaved ({} each)", short_count(p.mpsc.messages)),
                &p.mpsc,
                &p.shm,
            );
        }
        if let Some((m, s)) = separate {
            line("separate runs (first table)".to_string(), m, s);
        }
    }

    /// Prints conduit's multicast channels against unicast: interleaved
    /// with their unicast control (`udp-netns` in one namespace,
    /// `udp-veth` across the veth pair), against the separate rows of the
    /// first table (the control, `udp`, the bare multicast sockets), and
    /// the bare sockets' floors.
    fn print_multicast(&self) {
        let row = |name: &str| {
            self.channels
                .iter()
                .find(|r| r.result.channel == name)
                .map(|r| &r.result)
        };
        // (conduit multicast, its unicast control, the bare multicast floor)
        let kinds = [
            (
                Channel::UDP_MULTICAST,
                Channel::UDP_NETNS,
                Channel::UdpRawMulticast,
            ),
            (
                Channel::UDP_MULTICAST_VETH,
                Channel::UDP_VETH,
                Channel::UdpRawMulticastVeth,
            ),
        ];
        let any_row = kinds.iter().any(|k| row(k.0.name()).is_some());
        if !any_row && self.multicast_vs_unicast.is_empty() {
            return;
        }
        println!();
        println!(
            "conduit over UDP multicast (group publication to group subscription each way: udp-multicast on lo of one private namespace, udp-multicast-veth across a veth pair between two) against unicast; target p50 ratio <= {MULTICAST_P50_TARGET:.2}"
        );
        println!(
            "{:<62} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}",
            "multicast vs unicast", "p50 ns", "unicast", "ratio", "p99 ns", "unicast", "ratio"
        );
        let line = |what: String, m: &LatencyResult, u: &LatencyResult| {
            // The target is for conduit's multicast against unicast.
            let conduit = |c: &str| Channel::parse(c).is_ok_and(|c| c.is_conduit_udp());
            let judged = kinds.iter().any(|k| k.0.name() == m.channel) && conduit(&u.channel);
            let (m, u) = (&m.pct, &u.pct);
            let r50 = ratio(m.p50, u.p50 as f64);
            println!(
                "{:<62} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}{}",
                what,
                m.p50,
                u.p50,
                fmt_ratio(r50),
                m.p99,
                u.p99,
                fmt_ratio(ratio(m.p99, u.p99 as f64)),
                if judged && r50.is_some_and(|r| r > MULTICAST_P50_TARGET) {
                    "  (above target)"
                } else {
                    ""
                }
            );
        };
        for p in &self.multicast_vs_unicast {
            line(
                format!(
                    "{} vs {}, interleaved ({} each)",
                    p.multicast.channel,
                    p.unicast.channel,
                    short_count(p.multicast.messages)
                ),
                &p.multicast,
                &p.unicast,
            );
        }
        for (m, control, bare) in kinds {
            let Some(m) = row(m.name()) else { continue };
            // Against unicast conduit, then what conduit adds to the bare
            // multicast sockets.
            for u in [control, Channel::UDP, bare] {
                if let Some(u) = row(u.name()) {
                    line(
                        format!("{} vs {}, separate runs", m.channel, u.channel),
                        m,
                        u,
                    );
                }
            }
        }
    }

    /// Sets each throughput row's reference: 32 B shm against 32 B
    /// crossbeam, lossy protocol against lossless protocol, keyed UDP
    /// against plain UDP.
    fn judge_throughput(&mut self) {
        let rates: Vec<(String, usize, f64)> = self
            .throughput
            .iter()
            .map(|r| {
                (
                    r.result.channel.clone(),
                    r.result.size,
                    r.result.msgs_per_sec(),
                )
            })
            .collect();
        for row in &mut self.throughput {
            let t = &row.result;
            let (name, size) = match (t.channel.as_str(), t.size) {
                ("shm", 32) => ("crossbeam", 32),
                ("proto-loss", s) => ("proto", s),
                ("udp-aead", s) => ("udp", s),
                _ => continue,
            };
            if let Some((_, _, rate)) = rates
                .iter()
                .find(|(c, s, rate)| c == name && *s == size && *rate > 0.0)
            {
                row.reference = Some(name.to_string());
                row.vs_reference = Some(t.msgs_per_sec() / rate);
            }
        }
    }

    /// Writes the percentile plot to `path`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_plot(&self, path: &str) -> Result<()> {
        std::fs::write(path, self.plot())
            .map_err(|e| BenchError(format!("cannot write {path}: {e}")))
    }

    /// The percentile plot (SVG).
    pub fn plot(&self) -> String {
        let mut series = Vec::new();
        for (i, l) in self.limits.iter().enumerate() {
            series.push(Series {
                label: format!("limit ({} runs)", self.limits.len()),
                color: "#555555".to_string(),
                faint: true,
                in_legend: i == 0,
                points: l.dist(),
            });
        }
        for (i, row) in self.channels.iter().enumerate() {
            series.push(Series {
                label: format!(
                    "{} ({})",
                    row.result.channel,
                    short_count(row.result.messages)
                ),
                color: PALETTE[i % PALETTE.len()].to_string(),
                faint: false,
                in_legend: true,
                points: row.result.dist(),
            });
        }
        plot::render(
            &format!("Round-trip latency by percentile, {} B messages", self.size),
            "conduit-bench compare; dashed: the limit runs; (n): round trips measured",
            &series,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "conduit")]
    #[test]
    fn the_default_list_is_every_available_channel_but_limit() {
        let names: Vec<&str> = default_channels().iter().map(|c| c.name()).collect();
        assert!(!names.contains(&"limit"));
        assert_eq!(names.len(), Channel::all().len() - 1);
        for name in [
            "iceoryx2-mpsc",
            "udp-multicast",
            "udp-netns",
            "udp-raw-block",
            "udp-multicast-veth",
            "udp-veth",
            "udp-raw-veth",
            "udp-raw-multicast-veth",
        ] {
            assert!(names.contains(&name), "{name}");
        }
    }

    #[test]
    fn a_run_saved_before_the_multicast_rows_reads_back() {
        // A compare run saved at 16:43 UTC on 2026-12-02, before the
        // multicast rows existed (docs/compare.json of that day).
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/compare-before-multicast.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        assert!(!text.contains("multicast_vs_unicast"));
        match crate::report::load(path).unwrap() {
            Run::Compare(report) => {
                assert!(report.multicast_vs_unicast.is_empty());
                assert!(!report.channels.is_empty());
            }
            _ => panic!("{path} is not a compare run"),
        }
    }
}
