//! `compare`: every channel's round trip in one run, each against the `limit`
//! runs just before and after it (the limit itself moves with vCPU
//! placement); each conduit UDP channel against the bare socket in the same
//! wait mode (`udp-raw`, `udp-raw-block`), interleaved in the same two
//! processes; plus one-way throughput rows.

use crate::channels::{cpus, Channel};
use crate::error::{BenchError, Result};
use crate::json::Json;
use crate::latency::{LatencyConfig, PAIR_BLOCK};
use crate::plot::{self, Series, PALETTE};
use crate::report::{fmt_kib, fmt_si, write_json, LatencyResult, ThroughputResult};

/// Channels `compare` runs when `--channels` is not given (`limit` runs
/// between them anyway).
#[cfg(feature = "conduit")]
pub const DEFAULT_CHANNELS: &[Channel] = &[
    Channel::Limit2Line,
    Channel::LimitRing,
    Channel::Shm,
    Channel::Crossbeam,
    Channel::Iceoryx2,
    Channel::UdpRaw,
    Channel::Udp,
    Channel::UdpUring,
    Channel::UdpSocket,
    Channel::UdpAead,
    Channel::UdpRawBlock,
    Channel::UdpBlock,
    Channel::UdpUringBlock,
    Channel::UdpSocketBlock,
    Channel::Proto,
    Channel::ProtoLoss,
];

/// Channels `compare` runs when `--channels` is not given, in a build
/// without conduit.
#[cfg(not(feature = "conduit"))]
pub const DEFAULT_CHANNELS: &[Channel] = &[
    Channel::Limit2Line,
    Channel::LimitRing,
    Channel::Crossbeam,
    Channel::Iceoryx2,
    Channel::UdpRaw,
    Channel::UdpRawBlock,
];

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

/// One channel's latency with the limit runs around it.
struct Row {
    result: LatencyResult,
    before: usize,
    after: usize,
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

fn ratio(v: u64, base: f64) -> f64 {
    if base > 0.0 {
        v as f64 / base
    } else {
        f64::NAN
    }
}

/// A conduit UDP channel and the bare socket in the same wait mode measured
/// in the same two processes, alternating blocks of round trips
/// ([`crate::channels::udp::latency_vs_raw`]): UDP over loopback moves more
/// from run to run than the cache-line limit does, so conduit is judged
/// against the bare socket measured in the same moments.
struct UdpVsRaw {
    conduit: LatencyResult,
    raw: LatencyResult,
}

/// A row's name: `udp [driver]` for the default-driver UDP channels.
fn display_name(r: &LatencyResult) -> String {
    match r.driver {
        Some(d) if r.channel == "udp" || r.channel == "udp-block" => {
            format!("{} [{d}]", r.channel)
        }
        _ => r.channel.clone(),
    }
}

/// Everything `compare` measured.
pub struct CompareReport {
    limits: Vec<LatencyResult>,
    rows: Vec<Row>,
    udp_vs_raw: Vec<UdpVsRaw>,
    throughput: Vec<ThroughputResult>,
    failures: Vec<(String, String)>,
    warnings: Vec<String>,
    size: usize,
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
        .unwrap_or_else(|| DEFAULT_CHANNELS.to_vec())
        .into_iter()
        .filter(|&c| c != Channel::Limit)
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
        limits: Vec::new(),
        rows: Vec::new(),
        udp_vs_raw: Vec::new(),
        throughput: Vec::new(),
        failures: Vec::new(),
        warnings: Vec::new(),
        size,
    };
    let run_limit = |report: &mut CompareReport| -> Result<usize> {
        let cfg = latency_config(Channel::Limit, size, messages, warmup, None);
        let r = Channel::Limit.latency(&cfg)?;
        eprintln!(
            "  limit #{}: p50 {} ns, p99 {} ns",
            report.limits.len() + 1,
            r.pct.p50,
            r.pct.p99
        );
        report.limits.push(r);
        Ok(report.limits.len() - 1)
    };

    let mut last_limit = run_limit(&mut report)?;
    for &c in &latency_list {
        let cfg = latency_config(c, size, messages, warmup, None);
        match c.latency(&cfg) {
            Ok(r) => {
                eprintln!("  {}: p50 {} ns, p99 {} ns", c.name(), r.pct.p50, r.pct.p99);
                let after = run_limit(&mut report)?;
                report.rows.push(Row {
                    result: r,
                    before: last_limit,
                    after,
                });
                last_limit = after;
            }
            Err(e) => {
                eprintln!("  {}: FAILED: {e}", c.name());
                report.failures.push((c.name().to_string(), e.to_string()));
            }
        }
    }
    #[cfg(feature = "conduit")]
    {
        let with_baseline = latency_list
            .iter()
            .filter(|c| c.is_conduit_udp() && latency_list.contains(&c.raw_baseline()));
        for &c in with_baseline {
            // Twice the round trips: each channel gets half.
            let one = latency_config(c, size, messages, warmup, None);
            let cfg = LatencyConfig {
                messages: 2 * one.messages,
                warmup: 2 * one.warmup,
                ..one
            };
            let what = format!("{} / {} interleaved", c.name(), c.raw_baseline().name());
            match crate::channels::udp::latency_vs_raw(c, &cfg) {
                Ok((conduit, raw)) => {
                    eprintln!(
                        "  {what}: p50 {} / {} ns, p99 {} / {} ns",
                        conduit.pct.p50, raw.pct.p50, conduit.pct.p99, raw.pct.p99
                    );
                    report.udp_vs_raw.push(UdpVsRaw { conduit, raw });
                }
                Err(e) => {
                    eprintln!("  {what}: FAILED: {e}");
                    report.failures.push((what, e.to_string()));
                }
            }
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
        let mut jobs: Vec<(Channel, usize)> = Vec::new();
        if list.contains(&Channel::Shm) {
            jobs.push((Channel::Shm, 32));
        }
        if list.contains(&Channel::Crossbeam) {
            jobs.push((Channel::Crossbeam, 32));
        }
        if list.contains(&Channel::Shm) {
            jobs.push((Channel::Shm, 1024));
            jobs.push((Channel::Shm, 65536));
        }
        for c in [
            Channel::Udp,
            Channel::UdpAead,
            Channel::UdpUring,
            Channel::UdpSocket,
            Channel::Proto,
            Channel::ProtoLoss,
        ] {
            if list.contains(&c) {
                jobs.push((c, 32));
            }
        }
        for (c, s) in jobs {
            let n = messages.map_or_else(|| default_throughput_messages(c, s), |m| m.max(1));
            match c.throughput(s, n) {
                Ok(r) => {
                    eprintln!(
                        "  throughput {} {s} B: {} msgs/s",
                        c.name(),
                        fmt_si(r.msgs_per_sec())
                    );
                    report.throughput.push(r);
                }
                Err(e) => {
                    eprintln!("  throughput {} {s} B: FAILED: {e}", c.name());
                    report
                        .failures
                        .push((format!("{} throughput {s} B", c.name()), e.to_string()));
                }
            }
        }
    }

    report.print();
    if let Some(path) = json {
        write_json(path, &report.to_json())?;
        eprintln!("wrote {path}");
    }
    if let Some(path) = plot_path {
        std::fs::write(path, report.plot())
            .map_err(|e| BenchError(format!("cannot write {path}: {e}")))?;
        eprintln!("wrote {path}");
    }
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(BenchError(format!(
            "{} run(s) failed: {}",
            report.failures.len(),
            report
                .failures
                .iter()
                .map(|f| f.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

impl CompareReport {
    fn print(&self) {
        println!();
        println!(
            "Round trip, {} B, {} — each channel against the mean of the limit runs just before and after it",
            self.size,
            match cpus() {
                Some((a, b)) => format!("ping/pong pinned to cpus {a}/{b}"),
                None => "unpinned".to_string(),
            }
        );
        println!(
            "{:<18} {:>9} {:>7} {:>9} {:>7} {:>10} {:>7} {:>11}  peak RSS (ping / pong)",
            "channel", "p50 ns", "×limit", "p99 ns", "×limit", "p99.99 ns", "×limit", "max ns"
        );
        let line = |name: &str, r: &LatencyResult, base: Option<(f64, f64, f64)>| {
            let rt = |v: u64, b: Option<f64>| match b {
                Some(b) => format!("{:.2}", ratio(v, b)),
                None => "-".to_string(),
            };
            println!(
                "{:<18} {:>9} {:>7} {:>9} {:>7} {:>10} {:>7} {:>11}  {}",
                name,
                r.pct.p50,
                rt(r.pct.p50, base.map(|b| b.0)),
                r.pct.p99,
                rt(r.pct.p99, base.map(|b| b.1)),
                r.pct.p9999,
                rt(r.pct.p9999, base.map(|b| b.2)),
                r.pct.max,
                match r.rss_pong_kib {
                    Some(p) => format!("{} / {}", fmt_kib(r.rss_ping_kib), fmt_kib(p)),
                    None => format!("{} (1 process)", fmt_kib(r.rss_ping_kib)),
                }
            );
        };
        line("limit #1", &self.limits[0], None);
        for row in &self.rows {
            line(
                &display_name(&row.result),
                &row.result,
                Some(self.baselines(row)),
            );
            line(
                &format!("limit #{}", row.after + 1),
                &self.limits[row.after],
                None,
            );
        }
        if let Some(first) = self.udp_vs_raw.first() {
            println!();
            println!(
                "conduit over UDP against the bare socket in the same wait mode (raw: udp-raw, spinning on recv; for *-block rows udp-raw-block, asleep in recv), interleaved: the same two processes alternate blocks of {} round trips over each ({} each)",
                PAIR_BLOCK,
                short_count(first.conduit.messages)
            );
            println!(
                "{:<20} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}",
                "channel", "p50 ns", "raw", "ratio", "p99 ns", "raw", "ratio"
            );
            for u in &self.udp_vs_raw {
                let (c, r) = (&u.conduit.pct, &u.raw.pct);
                println!(
                    "{:<20} {:>8} {:>8} {:>8.2}   {:>8} {:>8} {:>8.2}",
                    display_name(&u.conduit),
                    c.p50,
                    r.p50,
                    ratio(c.p50, r.p50 as f64),
                    c.p99,
                    r.p99,
                    ratio(c.p99, r.p99 as f64)
                );
            }
        }
        if !self.throughput.is_empty() {
            println!();
            println!("One-way throughput");
            println!(
                "{:<12} {:>7} {:>12} {:>12} {:>12}  {:<18} peak RSS (receiver / sender)",
                "channel", "size", "msgs/s", "B/s", "datagrams/s", "vs"
            );
            for t in &self.throughput {
                let vs = self
                    .reference_for(t)
                    .map(|(name, rate)| format!("{:.2}× {name}", t.msgs_per_sec() / rate))
                    .unwrap_or_default();
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
        for (what, e) in &self.failures {
            println!("FAILED: {what}: {e}");
        }
    }

    /// The row a throughput row is judged against: 32 B shm against 32 B
    /// crossbeam, lossy protocol against lossless protocol, keyed UDP against
    /// plain UDP.
    fn reference_for(&self, t: &ThroughputResult) -> Option<(&'static str, f64)> {
        let (name, size) = match (t.channel.as_str(), t.size) {
            ("shm", 32) => ("crossbeam", 32),
            ("proto-loss", s) => ("proto", s),
            ("udp-aead", s) => ("udp", s),
            _ => return None,
        };
        self.throughput
            .iter()
            .find(|r| r.channel == name && r.size == size)
            .map(|r| (name, r.msgs_per_sec()))
            .filter(|&(_, rate)| rate > 0.0)
    }

    fn baselines(&self, row: &Row) -> (f64, f64, f64) {
        (
            baseline(&self.limits, row.before, row.after, |r| r.pct.p50),
            baseline(&self.limits, row.before, row.after, |r| r.pct.p99),
            baseline(&self.limits, row.before, row.after, |r| r.pct.p9999),
        )
    }

    fn to_json(&self) -> Json {
        let mut results = Vec::new();
        for (i, l) in self.limits.iter().enumerate() {
            results.push(l.to_json().with("role", "baseline").with("run", i + 1));
        }
        for row in &self.rows {
            let (b50, b99, b9999) = self.baselines(row);
            let p = &row.result.pct;
            results.push(
                row.result
                    .to_json()
                    .with("role", "channel")
                    .with(
                        "baseline_runs",
                        vec![Json::from(row.before + 1), Json::from(row.after + 1)],
                    )
                    .with("baseline_p50_ns", b50)
                    .with("baseline_p99_ns", b99)
                    .with("baseline_p9999_ns", b9999)
                    .with("p50_vs_limit", ratio(p.p50, b50))
                    .with("p99_vs_limit", ratio(p.p99, b99))
                    .with("p9999_vs_limit", ratio(p.p9999, b9999)),
            );
        }
        for u in &self.udp_vs_raw {
            let (c, r) = (&u.conduit.pct, &u.raw.pct);
            results.push(
                u.conduit
                    .to_json()
                    .with("role", "vs_udp_raw")
                    .with("udp_raw_channel", u.raw.channel.as_str())
                    .with("block", PAIR_BLOCK)
                    .with("udp_raw_p50_ns", r.p50)
                    .with("udp_raw_p99_ns", r.p99)
                    .with("udp_raw_p9999_ns", r.p9999)
                    .with("p50_vs_udp_raw", ratio(c.p50, r.p50 as f64))
                    .with("p99_vs_udp_raw", ratio(c.p99, r.p99 as f64)),
            );
        }
        for t in &self.throughput {
            let mut j = t.to_json();
            if let Some((name, rate)) = self.reference_for(t) {
                j = j
                    .with("reference", name)
                    .with("vs_reference", t.msgs_per_sec() / rate);
            }
            results.push(j);
        }
        Json::object()
            .with("results", results)
            .with(
                "warnings",
                self.warnings
                    .iter()
                    .map(|w| Json::from(w.as_str()))
                    .collect::<Vec<_>>(),
            )
            .with(
                "failures",
                self.failures
                    .iter()
                    .map(|(w, e)| {
                        Json::object()
                            .with("what", w.as_str())
                            .with("error", e.as_str())
                    })
                    .collect::<Vec<_>>(),
            )
    }

    fn plot(&self) -> String {
        let mut series = Vec::new();
        for (i, l) in self.limits.iter().enumerate() {
            series.push(Series {
                label: format!("limit ({} runs)", self.limits.len()),
                color: "#555555".to_string(),
                faint: true,
                in_legend: i == 0,
                points: l.dist.clone(),
            });
        }
        for (i, row) in self.rows.iter().enumerate() {
            series.push(Series {
                label: format!(
                    "{} ({})",
                    row.result.channel,
                    short_count(row.result.messages)
                ),
                color: PALETTE[i % PALETTE.len()].to_string(),
                faint: false,
                in_legend: true,
                points: row.result.dist.clone(),
            });
        }
        plot::render(
            &format!("Round-trip latency by percentile, {} B messages", self.size),
            "conduit-bench compare; dashed: the limit runs; (n): round trips measured",
            &series,
        )
    }
}
