//! Results of a run, their printed form and their JSON form (derived
//! `serde` types; [`SavedRun`] is what a `--json` file holds and what
//! `report` and `diff` read back).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::compare::CompareReport;
use crate::error::{BenchError, Result};
use crate::hist::{distribution, DistPoint, Percentiles, RawHistogram};

/// Version of the JSON layout written by `--json`. Version 1 (no `schema`
/// field) was a flat `results` list without histograms; 2 keeps each run's
/// raw histogram and is read back by `report` and `diff`.
pub const SCHEMA: u32 = 2;

/// One latency (round-trip) result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyResult {
    /// Channel name (`limit`, `shm`, ...).
    pub channel: String,
    /// Payload bytes.
    pub size: usize,
    /// Measured round trips.
    pub messages: u64,
    /// Unrecorded warm-up round trips.
    pub warmup: u64,
    /// Fixed send rate (msgs/s), if any.
    pub rate: Option<f64>,
    /// Whether ping and pong were separate processes.
    pub processes: bool,
    /// Round-trip percentiles, ns (read from [`LatencyResult::histogram`]).
    #[serde(flatten)]
    pub pct: Percentiles,
    /// Peak RSS of the ping process, KiB.
    pub rss_ping_kib: u64,
    /// Peak RSS of the pong process, KiB (`None` when pong is a thread of ping).
    pub rss_pong_kib: Option<u64>,
    /// CPUs ping and pong were pinned to, if pinned.
    pub cpus: Option<(usize, usize)>,
    /// The I/O driver used (conduit UDP), if any.
    pub driver: Option<String>,
    /// Every recorded round trip, ns.
    pub histogram: RawHistogram,
}

impl LatencyResult {
    /// The percentile distribution for the plot.
    pub fn dist(&self) -> Vec<DistPoint> {
        distribution(&self.histogram.0, 5)
    }

    /// Prints the percentiles, one line per figure.
    pub fn print(&self) {
        let p = &self.pct;
        let mode = match self.rate {
            Some(r) => format!("fixed rate {r} msgs/s, measured from intended send time"),
            None => "back to back".to_string(),
        };
        let pin = match self.cpus {
            Some((a, b)) => format!("pinned to cpus {a},{b}"),
            None => "not pinned (fewer than 2 cpus)".to_string(),
        };
        println!(
            "latency: channel {}, {} B, {} round trips (+{} warm-up), {}, {}, {}",
            self.channel,
            self.size,
            self.messages,
            self.warmup,
            if self.processes {
                "two processes"
            } else {
                "two threads"
            },
            mode,
            pin
        );
        println!("  p50     {:>12} ns", p.p50);
        println!("  p90     {:>12} ns", p.p90);
        println!("  p99     {:>12} ns", p.p99);
        println!("  p99.9   {:>12} ns", p.p999);
        println!("  p99.99  {:>12} ns", p.p9999);
        println!("  max     {:>12} ns", p.max);
        println!("  mean    {:>12.1} ns", p.mean);
        println!(
            "  peak RSS: {}",
            rss_text(self.rss_ping_kib, self.rss_pong_kib, "ping", "pong")
        );
        if let Some(d) = &self.driver {
            println!("  driver: {d}");
        }
    }
}

/// One one-way throughput result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "ThroughputJson", from = "ThroughputJson")]
pub struct ThroughputResult {
    /// Channel name.
    pub channel: String,
    /// Payload bytes.
    pub size: usize,
    /// Messages sent.
    pub messages: u64,
    /// Messages counted in the timed window.
    pub timed_messages: u64,
    /// Length of the timed window.
    pub elapsed: Duration,
    /// Peak RSS of the receiving process, KiB.
    pub rss_rx_kib: u64,
    /// Peak RSS of the sending process, KiB (`None` when it is a thread).
    pub rss_tx_kib: Option<u64>,
    /// Whether sender and receiver were separate processes.
    pub processes: bool,
    /// Extra figures a channel reports (name, value), e.g. datagrams/s.
    pub extra: Vec<(String, f64)>,
    /// The I/O driver used (conduit UDP), if any.
    pub driver: Option<String>,
}

/// [`ThroughputResult`] as written to JSON: the window in ns, the rates it
/// gives (for readers of the file; recomputed when read back) and the extra
/// figures as an object.
#[derive(Serialize, Deserialize)]
struct ThroughputJson {
    channel: String,
    size: usize,
    messages: u64,
    timed_messages: u64,
    processes: bool,
    elapsed_ns: u64,
    msgs_per_sec: f64,
    bytes_per_sec: f64,
    rss_receiver_kib: u64,
    rss_sender_kib: Option<u64>,
    driver: Option<String>,
    extra: BTreeMap<String, f64>,
}

impl From<ThroughputResult> for ThroughputJson {
    fn from(r: ThroughputResult) -> Self {
        ThroughputJson {
            msgs_per_sec: r.msgs_per_sec(),
            bytes_per_sec: r.bytes_per_sec(),
            elapsed_ns: u64::try_from(r.elapsed.as_nanos()).unwrap_or(u64::MAX),
            channel: r.channel,
            size: r.size,
            messages: r.messages,
            timed_messages: r.timed_messages,
            processes: r.processes,
            rss_receiver_kib: r.rss_rx_kib,
            rss_sender_kib: r.rss_tx_kib,
            driver: r.driver,
            extra: r.extra.into_iter().collect(),
        }
    }
}

impl From<ThroughputJson> for ThroughputResult {
    fn from(j: ThroughputJson) -> Self {
        ThroughputResult {
            channel: j.channel,
            size: j.size,
            messages: j.messages,
            timed_messages: j.timed_messages,
            elapsed: Duration::from_nanos(j.elapsed_ns),
            rss_rx_kib: j.rss_receiver_kib,
            rss_tx_kib: j.rss_sender_kib,
            processes: j.processes,
            extra: j.extra.into_iter().collect(),
            driver: j.driver,
        }
    }
}

impl ThroughputResult {
    /// An extra figure by name.
    pub fn extra(&self, key: &str) -> Option<f64> {
        self.extra.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.timed_messages as f64 / s
        } else {
            0.0
        }
    }

    /// Payload bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        self.msgs_per_sec() * self.size as f64
    }

    /// Prints the figures.
    pub fn print(&self) {
        println!(
            "throughput: channel {}, {} B, {} messages one way, {}",
            self.channel,
            self.size,
            self.messages,
            if self.processes {
                "two processes"
            } else {
                "two threads"
            }
        );
        println!("  {:>14} msgs/s", fmt_si(self.msgs_per_sec()));
        println!("  {:>14} B/s", fmt_si(self.bytes_per_sec()));
        for (k, v) in &self.extra {
            println!(
                "  {k}: {}",
                if v.abs() >= 1000.0 {
                    fmt_si(*v)
                } else {
                    format!("{v}")
                }
            );
        }
        println!(
            "  peak RSS: {}",
            rss_text(self.rss_rx_kib, self.rss_tx_kib, "receiver", "sender")
        );
        if let Some(d) = &self.driver {
            println!("  driver: {d}");
        }
    }
}

/// `"ping 2.1 MiB, pong 1.9 MiB"` (or "one process" when the peer is a thread).
pub fn rss_text(a: u64, b: Option<u64>, a_name: &str, b_name: &str) -> String {
    match b {
        Some(b) => format!("{a_name} {}, {b_name} {}", fmt_kib(a), fmt_kib(b)),
        None => format!("{} (one process)", fmt_kib(a)),
    }
}

/// KiB as a short human figure.
pub fn fmt_kib(kib: u64) -> String {
    if kib >= 1024 {
        format!("{:.1} MiB", kib as f64 / 1024.0)
    } else {
        format!("{kib} KiB")
    }
}

/// A rate with an SI suffix (`12.3 M`).
pub fn fmt_si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2} k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

/// What a `--json` file holds: the layout version and the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRun {
    /// [`SCHEMA`] when written.
    pub schema: u32,
    /// The run.
    #[serde(flatten)]
    pub run: Run,
}

/// A saved run: one of the three measuring commands' results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Run {
    /// `compare`.
    Compare(CompareReport),
    /// `latency`.
    Latency(LatencyResult),
    /// `throughput`.
    Throughput(ThroughputResult),
}

impl Run {
    /// Prints the run's tables, as the command that measured it did.
    pub fn print(&self) {
        match self {
            Run::Compare(c) => c.print(),
            Run::Latency(r) => r.print(),
            Run::Throughput(r) => r.print(),
        }
    }

    /// The run's percentile plot (SVG), drawn from its histograms.
    ///
    /// # Errors
    /// A throughput run has no percentiles.
    pub fn plot(&self) -> Result<String> {
        match self {
            Run::Compare(c) => Ok(c.plot()),
            Run::Latency(r) => Ok(crate::plot::render(
                &format!("Round-trip latency by percentile, {} B messages", r.size),
                "conduit-bench latency",
                &[crate::plot::Series {
                    label: r.channel.clone(),
                    color: crate::plot::PALETTE[0].to_string(),
                    faint: false,
                    in_legend: true,
                    points: r.dist(),
                }],
            )),
            Run::Throughput(_) => Err(BenchError::msg(
                "a throughput run has no percentiles to plot",
            )),
        }
    }
}

/// Writes `run` as JSON ([`SavedRun`]) to `path`.
///
/// # Errors
/// The file cannot be written.
pub fn save(path: &str, run: Run) -> Result<()> {
    let saved = SavedRun {
        schema: SCHEMA,
        run,
    };
    let mut text = serde_json::to_string(&saved)
        .map_err(|e| BenchError(format!("cannot encode the results: {e}")))?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| BenchError(format!("cannot write {path}: {e}")))
}

/// Reads a run written by [`save`].
///
/// # Errors
/// The file cannot be read, is not JSON, is of another layout version, or
/// does not hold a run.
pub fn load(path: &str) -> Result<Run> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BenchError(format!("cannot read {path}: {e}")))?;
    parse(&text).map_err(|e| e.context(path))
}

/// Parses the text of a [`SavedRun`]; the percentiles of every latency result
/// are read again from its histogram.
///
/// # Errors
/// Not JSON, another layout version, or not a run.
pub fn parse(text: &str) -> Result<Run> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| BenchError(format!("not JSON: {e}")))?;
    match value.get("schema").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(SCHEMA) => {}
        Some(v) => {
            return Err(BenchError(format!(
                "layout version {v}; this conduit-bench reads version {SCHEMA}"
            )))
        }
        None => {
            return Err(BenchError(format!(
                "no `schema` field: a version 1 file (no raw histograms), or not conduit-bench's; this conduit-bench reads version {SCHEMA}"
            )))
        }
    }
    let saved: SavedRun = serde_json::from_value(value)
        .map_err(|e| BenchError(format!("not a conduit-bench run: {e}")))?;
    let mut run = saved.run;
    match &mut run {
        Run::Compare(c) => {
            c.validate()?;
            c.for_each_latency(|r| r.pct = Percentiles::of(&r.histogram.0));
        }
        Run::Latency(r) => r.pct = Percentiles::of(&r.histogram.0),
        Run::Throughput(_) => {}
    }
    Ok(run)
}
