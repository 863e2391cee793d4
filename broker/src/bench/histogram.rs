//! Latency recording shared by every bench mode: an HDR histogram in
//! microseconds, one per load thread, merged at the end.
//!
//! Why HDR: a latency distribution has a long tail that averages hide, and
//! an HDR histogram keeps every percentile to three significant digits in a
//! fixed few KiB, so each thread can record every request without locks.
//!
//! Coordinated omission: a closed-loop sender (send, wait, send) slows down
//! with the system it measures and so never records the requests it did not
//! get to send. Open-loop modes have a schedule instead, and measure each
//! request from the moment it was *due*, not from when it finally went out
//! ([`Latencies::record_since`] with the intended start): a stall then shows
//! up in every request it delayed, as a user of the system would see it.

use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// Largest latency recorded exactly; anything slower is clamped to it.
const MAX_TRACKABLE_US: u64 = 3_600_000_000;
/// Significant decimal digits kept for every value.
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in microseconds.
#[derive(Clone)]
pub struct Latencies {
    /// The distribution; `None` only if the bounds above were rejected,
    /// which they are not (kept fallible so no input path can panic).
    hist: Option<Histogram<u64>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty histogram covering 1 µs to one hour.
    pub fn new() -> Self {
        Latencies {
            hist: Histogram::new_with_bounds(1, MAX_TRACKABLE_US, SIGNIFICANT_DIGITS).ok(),
        }
    }

    /// Record one latency.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_TRACKABLE_US)
            .clamp(1, MAX_TRACKABLE_US);
        if let Some(h) = self.hist.as_mut() {
            h.saturating_record(us);
        }
    }

    /// Record the time from `start` (the moment the request was sent, or in
    /// an open-loop mode the moment it was due) until now.
    pub fn record_since(&mut self, start: Instant) {
        self.record(start.elapsed());
    }

    /// Add every value of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        if let (Some(h), Some(o)) = (self.hist.as_mut(), other.hist.as_ref()) {
            // Same bounds on both sides, so this cannot fail; a failure would
            // only lose the other side's values.
            let _ = h.add(o);
        }
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.hist.as_ref().map_or(0, Histogram::len)
    }

    /// The summary reported by every mode.
    pub fn summary(&self) -> LatencySummary {
        let Some(h) = self.hist.as_ref().filter(|h| !h.is_empty()) else {
            return LatencySummary::default();
        };
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p99_9_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Latency percentiles in milliseconds (zero when nothing was recorded).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p99_9_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_merge() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        for us in 1..=1000u64 {
            a.record(Duration::from_micros(us));
        }
        b.record(Duration::from_secs(2));
        a.merge(&b);
        assert_eq!(a.count(), 1001);
        let s = a.summary();
        assert!((s.p50_ms - 0.5).abs() < 0.01, "{s:?}");
        assert!((s.p99_ms - 0.99).abs() < 0.01, "{s:?}");
        assert!((s.max_ms - 2000.0).abs() < 2.0, "{s:?}");
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(Latencies::new().summary(), LatencySummary::default());
    }

    #[test]
    fn huge_values_are_clamped() {
        let mut a = Latencies::new();
        a.record(Duration::from_secs(100_000));
        assert_eq!(a.count(), 1);
    }
}
