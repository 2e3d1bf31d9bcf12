//! Results of a run, their printed form and their JSON form.

use std::time::Duration;

use crate::hist::{DistPoint, Percentiles};
use crate::json::Json;

/// One latency (round-trip) result.
#[derive(Debug, Clone)]
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
    /// Round-trip percentiles, ns.
    pub pct: Percentiles,
    /// Percentile distribution for the plot.
    pub dist: Vec<DistPoint>,
    /// Peak RSS of the ping process, KiB.
    pub rss_ping_kib: u64,
    /// Peak RSS of the pong process, KiB (`None` when pong is a thread of ping).
    pub rss_pong_kib: Option<u64>,
    /// CPUs ping and pong were pinned to, if pinned.
    pub cpus: Option<(usize, usize)>,
    /// Whether ping and pong were separate processes.
    pub processes: bool,
    /// The I/O driver used (conduit UDP), if any.
    pub driver: Option<&'static str>,
}

impl LatencyResult {
    /// The result as a JSON object.
    pub fn to_json(&self) -> Json {
        let p = &self.pct;
        Json::object()
            .with("kind", "latency")
            .with("channel", self.channel.as_str())
            .with("size", self.size)
            .with("messages", self.messages)
            .with("warmup", self.warmup)
            .with("rate", self.rate)
            .with("processes", self.processes)
            .with("p50_ns", p.p50)
            .with("p90_ns", p.p90)
            .with("p99_ns", p.p99)
            .with("p999_ns", p.p999)
            .with("p9999_ns", p.p9999)
            .with("max_ns", p.max)
            .with("mean_ns", p.mean)
            .with("rss_ping_kib", self.rss_ping_kib)
            .with("rss_pong_kib", self.rss_pong_kib)
            .with("ping_cpu", self.cpus.map(|c| c.0))
            .with("pong_cpu", self.cpus.map(|c| c.1))
            .with("driver", self.driver)
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
        if let Some(d) = self.driver {
            println!("  driver: {d}");
        }
    }
}

/// One one-way throughput result.
#[derive(Debug, Clone)]
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
    pub driver: Option<&'static str>,
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

    /// The result as a JSON object.
    pub fn to_json(&self) -> Json {
        let mut j = Json::object()
            .with("kind", "throughput")
            .with("channel", self.channel.as_str())
            .with("size", self.size)
            .with("messages", self.messages)
            .with("processes", self.processes)
            .with(
                "elapsed_ns",
                u64::try_from(self.elapsed.as_nanos()).unwrap_or(u64::MAX),
            )
            .with("msgs_per_sec", self.msgs_per_sec())
            .with("bytes_per_sec", self.bytes_per_sec())
            .with("rss_receiver_kib", self.rss_rx_kib)
            .with("rss_sender_kib", self.rss_tx_kib)
            .with("driver", self.driver);
        for (k, v) in &self.extra {
            j = j.with(k, *v);
        }
        j
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
        if let Some(d) = self.driver {
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

/// Writes `{"results": [...]}` or a single object to `path`.
///
/// # Errors
/// The file cannot be written.
pub fn write_json(path: &str, value: &Json) -> crate::error::Result<()> {
    let mut text = value.render();
    text.push('\n');
    std::fs::write(path, text)
        .map_err(|e| crate::error::BenchError(format!("cannot write {path}: {e}")))
}
