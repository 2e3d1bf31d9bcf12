//! Latency histograms (nanoseconds) and the percentiles reported from them.

use hdrhistogram::Histogram;

use crate::error::{BenchError, Result};

/// Highest latency the histograms track: 60 s; longer values saturate.
const HIGHEST_NS: u64 = 60_000_000_000;

/// A new histogram for round-trip times in ns, 3 significant digits.
///
/// # Errors
/// Never in practice (the bounds are constants); reported rather than unwrapped.
pub fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIGHEST_NS, 3)
        .map_err(|e| BenchError(format!("cannot create histogram: {e:?}")))
}

/// The percentiles printed and written to JSON for one latency result.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    /// Number of recorded samples.
    pub count: u64,
    /// Median, ns.
    pub p50: u64,
    /// 90th percentile, ns.
    pub p90: u64,
    /// 99th percentile, ns.
    pub p99: u64,
    /// 99.9th percentile, ns.
    pub p999: u64,
    /// 99.99th percentile, ns.
    pub p9999: u64,
    /// Largest value, ns.
    pub max: u64,
    /// Arithmetic mean, ns.
    pub mean: f64,
}

impl Percentiles {
    /// Reads the percentiles from a histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// One point of a percentile distribution: (quantile in [0,1), latency ns).
pub type DistPoint = (f64, u64);

/// The percentile distribution as HdrHistogram's plotter shows it, from the
/// median out to the largest value, with `ticks` points per halving of the
/// remaining tail. The last point (quantile 1.0) is left out: its x position
/// on a `1/(1-q)` axis is infinite; its value is the max.
pub fn distribution(h: &Histogram<u64>, ticks: u32) -> Vec<DistPoint> {
    let mut out = Vec::new();
    if h.is_empty() {
        return out;
    }
    for v in h.iter_quantiles(ticks) {
        let q = v.quantile_iterated_to();
        if q >= 1.0 {
            break;
        }
        out.push((q, v.value_iterated_to()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = new_histogram().unwrap();
        for v in 1..=10_000u64 {
            h.saturating_record(v);
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 10_000);
        assert!((4990..=5010).contains(&p.p50), "{p:?}");
        assert!((9890..=9910).contains(&p.p99), "{p:?}");
        assert!((10_000..=10_010).contains(&p.max), "{p:?}");
        let d = distribution(&h, 5);
        assert!(!d.is_empty());
        assert!(d.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    }
}
