//! Latency histograms (nanoseconds) and the percentiles reported from them.

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of recorded samples.
    pub count: u64,
    /// Median, ns.
    #[serde(rename = "p50_ns")]
    pub p50: u64,
    /// 90th percentile, ns.
    #[serde(rename = "p90_ns")]
    pub p90: u64,
    /// 99th percentile, ns.
    #[serde(rename = "p99_ns")]
    pub p99: u64,
    /// 99.9th percentile, ns.
    #[serde(rename = "p999_ns")]
    pub p999: u64,
    /// 99.99th percentile, ns.
    #[serde(rename = "p9999_ns")]
    pub p9999: u64,
    /// Largest value, ns.
    #[serde(rename = "max_ns")]
    pub max: u64,
    /// Arithmetic mean, ns.
    #[serde(rename = "mean_ns")]
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

/// Longest encoded histogram [`RawHistogram`] accepts from a file (base64
/// text): a run's histogram is a few KiB; this bounds what a damaged or
/// foreign file can make the decoder allocate.
const MAX_ENCODED: usize = 4 << 20;

/// A run's raw round-trip histogram, kept in the JSON as base64 text of
/// HdrHistogram's V2 + deflate encoding (what HdrHistogram's other ports
/// and its log tools read), so that a saved run can be re-rendered and
/// re-analysed.
#[derive(Debug, Clone, PartialEq)]
pub struct RawHistogram(pub Histogram<u64>);

impl RawHistogram {
    /// The histogram as base64 of its V2 + deflate encoding.
    ///
    /// # Errors
    /// The encoder failed (it does not for histograms of `u64` counts).
    pub fn encode(&self) -> Result<String> {
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&self.0, &mut bytes)
            .map_err(|e| BenchError(format!("cannot encode histogram: {e:?}")))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// Decodes [`RawHistogram::encode`]'s text.
    ///
    /// # Errors
    /// The text is too long, not base64, or not an encoded histogram.
    pub fn decode(text: &str) -> Result<RawHistogram> {
        if text.len() > MAX_ENCODED {
            return Err(BenchError(format!(
                "encoded histogram of {} bytes (at most {MAX_ENCODED} accepted)",
                text.len()
            )));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| BenchError(format!("histogram is not base64: {e}")))?;
        let h = Deserializer::new()
            .deserialize::<u64, _>(&mut bytes.as_slice())
            .map_err(|e| BenchError(format!("histogram cannot be decoded: {e:?}")))?;
        Ok(RawHistogram(h))
    }
}

impl Serialize for RawHistogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let text = self.encode().map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for RawHistogram {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RawHistogram::decode(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_histogram_round_trips_and_refuses_garbage() {
        let mut h = new_histogram().unwrap();
        for v in [120u64, 130, 130, 151, 14_015, 206_591] {
            h.saturating_record(v);
        }
        let raw = RawHistogram(h);
        let text = raw.encode().unwrap();
        let back = RawHistogram::decode(&text).unwrap();
        assert_eq!(back, raw);
        assert_eq!(Percentiles::of(&back.0), Percentiles::of(&raw.0));
        assert!(RawHistogram::decode("not base64!").is_err());
        assert!(RawHistogram::decode("AAAA").is_err());
        assert!(RawHistogram::decode(&"A".repeat(MAX_ENCODED + 4)).is_err());
    }

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
