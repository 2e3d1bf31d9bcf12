//! Round-trip time estimation (smoothed, RFC 6298 style) from RTT probe echoes.

use std::time::{Duration, Instant};

use super::counters::DropReason;

/// Smoothed RTT and its variation.
#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl RttEstimator {
    /// No sample yet.
    pub(crate) fn new() -> RttEstimator {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
        }
    }

    /// Adds a sample.
    pub(crate) fn sample(&mut self, rtt: Duration) {
        let rtt = rtt.min(Duration::from_secs(10));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + rtt) / 8);
            }
        }
    }

    /// Adds the sample an RTT reply gives: `now` less `ts`, the echoed timestamp this end
    /// sent (nanoseconds since its `epoch`). A timestamp from the future is
    /// [`DropReason::OutOfWindow`] and no sample.
    pub(crate) fn sample_echo(
        &mut self,
        now: Instant,
        epoch: Instant,
        ts: u64,
    ) -> Result<(), DropReason> {
        let at = nanos(now.saturating_duration_since(epoch));
        if ts > at {
            return Err(DropReason::OutOfWindow);
        }
        self.sample(Duration::from_nanos(at - ts));
        Ok(())
    }

    /// Smoothed RTT, if measured.
    pub(crate) fn smoothed(&self) -> Option<Duration> {
        self.srtt
    }

    /// The RTT's mean deviation (`rttvar`), zero before any sample.
    pub(crate) fn variation(&self) -> Duration {
        self.rttvar
    }

    /// Smoothed RTT plus four deviations, or `default` before any sample.
    pub(crate) fn timeout(&self, default: Duration) -> Duration {
        match self.srtt {
            Some(s) => s + 4 * self.rttvar,
            None => default,
        }
    }
}

impl Default for RttEstimator {
    fn default() -> Self {
        Self::new()
    }
}

/// Nanoseconds of `d`, saturated to `u64`.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
