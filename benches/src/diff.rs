//! `diff`: two saved runs side by side, figure by figure, with the ratio of
//! each; fails when any figure got worse by more than a threshold.

use crate::error::{BenchError, Result};
use crate::report::{fmt_si, Run};

/// One figure of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// What it is: `shm p50 ns`, `udp 32 B msgs/s`, ...
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Whether more is better (rates) or worse (times).
    pub higher_is_better: bool,
}

fn time(name: String, ns: u64) -> Figure {
    Figure {
        name,
        value: ns as f64,
        higher_is_better: false,
    }
}

/// The figures `diff` compares: p50 and p99 of each channel's round trip
/// (the `limit` runs are the yardstick, not a figure), of each interleaved
/// UDP pair, and each throughput row's message rate.
pub fn figures(run: &Run) -> Vec<Figure> {
    let mut out = Vec::new();
    let mut latency = |prefix: String, r: &crate::report::LatencyResult| {
        out.push(time(format!("{prefix} p50 ns"), r.pct.p50));
        out.push(time(format!("{prefix} p99 ns"), r.pct.p99));
    };
    match run {
        Run::Compare(c) => {
            for row in &c.channels {
                latency(row.result.channel.clone(), &row.result);
            }
            for u in &c.udp_vs_raw {
                latency(format!("{} interleaved", u.conduit.channel), &u.conduit);
                latency(
                    format!("{} interleaved with {}", u.raw.channel, u.conduit.channel),
                    &u.raw,
                );
            }
            for m in &c.multicast_vs_unicast {
                latency(format!("{} interleaved", m.multicast.channel), &m.multicast);
                latency(
                    format!(
                        "{} interleaved with {}",
                        m.unicast.channel, m.multicast.channel
                    ),
                    &m.unicast,
                );
            }
            for m in &c.mpsc_vs_shm {
                latency(format!("{} interleaved", m.mpsc.channel), &m.mpsc);
                latency(
                    format!("{} interleaved with {}", m.shm.channel, m.mpsc.channel),
                    &m.shm,
                );
            }
            for t in &c.throughput {
                out.push(rate(&t.result));
            }
        }
        Run::Latency(r) => latency(r.channel.clone(), r),
        Run::Throughput(t) => out.push(rate(t)),
    }
    out
}

fn rate(t: &crate::report::ThroughputResult) -> Figure {
    Figure {
        name: format!("{} {} B msgs/s", t.channel, t.size),
        value: t.msgs_per_sec(),
        higher_is_better: true,
    }
}

/// How much worse `new` is than `old`, in percent (negative: better): for a
/// time, how much longer; for a rate, how much longer each message takes.
/// `None` when either is zero.
pub fn worse_percent(old: f64, new: f64, higher_is_better: bool) -> Option<f64> {
    if !(old > 0.0 && new > 0.0) {
        return None;
    }
    let slower = if higher_is_better {
        old / new
    } else {
        new / old
    };
    Some((slower - 1.0) * 100.0)
}

fn show(f: &Figure) -> String {
    if f.higher_is_better {
        fmt_si(f.value)
    } else {
        format!("{}", f.value)
    }
}

/// Prints every figure of `old` and `new` with `new / old`.
///
/// # Errors
/// A figure in both runs is worse in `new` by more than `threshold` percent.
pub fn diff(old: &Run, new: &Run, threshold: f64) -> Result<()> {
    let (old, new) = (figures(old), figures(new));
    println!(
        "{:<40} {:>12} {:>12} {:>8}  (worse: p50/p99 up or msgs/s down by more than {threshold} %)",
        "figure", "old", "new", "new/old"
    );
    let mut worse = Vec::new();
    for o in &old {
        let Some(n) = new.iter().find(|n| n.name == o.name) else {
            println!("{:<40} {:>12} {:>12}", o.name, show(o), "-");
            continue;
        };
        let ratio = if o.value > 0.0 {
            format!("{:.2}", n.value / o.value)
        } else {
            "-".to_string()
        };
        let verdict = match worse_percent(o.value, n.value, o.higher_is_better) {
            Some(w) if w > threshold => {
                worse.push(o.name.clone());
                format!("WORSE by {w:.1} %")
            }
            _ => String::new(),
        };
        println!(
            "{:<40} {:>12} {:>12} {:>8}  {verdict}",
            o.name,
            show(o),
            show(n),
            ratio
        );
    }
    for n in new.iter().filter(|n| !old.iter().any(|o| o.name == n.name)) {
        println!("{:<40} {:>12} {:>12}", n.name, "-", show(n));
    }
    if worse.is_empty() {
        Ok(())
    } else {
        Err(BenchError(format!(
            "{} figure(s) worse by more than {threshold} %: {}",
            worse.len(),
            worse.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worse_is_slower_for_times_and_rates() {
        let near = |w: Option<f64>, want: f64| {
            let w = w.expect("a figure");
            assert!((w - want).abs() < 1e-9, "{w} vs {want}");
        };
        near(worse_percent(100.0, 120.0, false), 20.0);
        near(worse_percent(100.0, 80.0, false), -20.0);
        near(worse_percent(100.0, 80.0, true), 25.0);
        assert!(worse_percent(120.0, 100.0, true).unwrap() > 19.9);
        assert!(worse_percent(100.0, 120.0, true).unwrap() < 0.0);
        assert_eq!(worse_percent(0.0, 1.0, false), None);
        assert_eq!(worse_percent(1.0, 0.0, true), None);
    }
}
