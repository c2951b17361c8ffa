//! A fixed-bucket latency histogram of relaxed atomics: one add per bucket hit and one to the
//! sum, shared by `/metrics` (Prometheus buckets) and `/api/stats` (percentiles).

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: 0.5 ms to 5 s (the last bucket is `+Inf`).
pub const BUCKETS_US: [u64; 13] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000,
];

/// Counts of observations per bucket (not cumulative) and their sum.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A copy of a [`Histogram`] at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket, not cumulative; the last is beyond every bound.
    pub counts: [u64; BUCKETS_US.len() + 1],
    /// Sum of all observations, in microseconds.
    pub sum_us: u64,
}

/// Percentiles for `/api/stats`, in milliseconds (each an upper bound: the bucket's).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    /// Observations so far.
    pub count: u64,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BUCKETS_US.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut counts = [0; BUCKETS_US.len() + 1];
        for (c, a) in counts.iter_mut().zip(&self.counts) {
            *c = a.load(Relaxed);
        }
        HistogramSnapshot {
            counts,
            sum_us: self.sum_us.load(Relaxed),
        }
    }
}

impl HistogramSnapshot {
    /// How many observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The bucket bound that holds the `q` quantile, in milliseconds; `None` when empty, and
    /// for the `+Inf` bucket the largest bound (the answer is "more than that").
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let bound = BUCKETS_US[i.min(BUCKETS_US.len() - 1)];
                #[allow(clippy::cast_precision_loss)]
                return Some(bound as f64 / 1000.0);
            }
        }
        None
    }

    /// p50, p90 and p99.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            count: self.count(),
            p50_ms: self.quantile_ms(0.5),
            p90_ms: self.quantile_ms(0.9),
            p99_ms: self.quantile_ms(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_buckets_and_give_percentiles() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().percentiles().p50_ms, None);
        for _ in 0..98 {
            h.observe(Duration::from_micros(300));
        }
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        assert_eq!(s.counts[0], 98);
        assert_eq!(s.counts[6], 1, "30 ms is at most 50 ms");
        assert_eq!(s.counts[13], 1, "60 s is beyond every bound");
        assert_eq!(s.sum_us, 98 * 300 + 30_000 + 60_000_000);
        let p = s.percentiles();
        assert_eq!((p.p50_ms, p.p90_ms), (Some(0.5), Some(0.5)));
        assert_eq!(p.p99_ms, Some(50.0));
        assert_eq!(s.quantile_ms(1.0), Some(5000.0));
    }
}
