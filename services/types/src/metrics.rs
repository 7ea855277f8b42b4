//! Lock-free counters of durations for Prometheus histograms (rendered by the server's
//! `/metrics`): cumulative buckets in seconds, a count and a sum. IO-free: callers measure the
//! duration (with a monotonic clock) and hand it over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket upper bounds, in seconds: from a fast fsync (100 µs) to a slow WAN round (10 s).
pub const BUCKETS_SECONDS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// Observations of one duration (fsync, sync round, a read's latency…).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative), the last one for everything above the largest bound.
    counts: [AtomicU64; BUCKETS_SECONDS.len() + 1],
    sum_micros: AtomicU64,
}

/// A histogram read at one moment: cumulative counts per bound, then the total.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds — or in units, for [`Sizes`] —, observations at or below it),
    /// bounds increasing.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    /// The sum of the observations (seconds; units for [`Sizes`]).
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS_SECONDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS_SECONDS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        cumulative(
            &BUCKETS_SECONDS,
            &self.counts,
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

/// Bucket upper bounds of [`Sizes`]: powers of two up to 1,024 (a batch holds at most that).
pub const BUCKETS_SIZES: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Observations of a count (how many commands a Raft entry carried…), in [`BUCKETS_SIZES`].
#[derive(Debug, Default)]
pub struct Sizes {
    counts: [AtomicU64; BUCKETS_SIZES.len() + 1],
    sum: AtomicU64,
}

impl Sizes {
    pub fn observe(&self, n: u64) {
        let i = BUCKETS_SIZES
            .iter()
            .position(|b| n as f64 <= *b)
            .unwrap_or(BUCKETS_SIZES.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(n, Ordering::Relaxed);
    }

    /// Read as a [`HistogramSnapshot`] whose sum is the sum of the counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        cumulative(
            &BUCKETS_SIZES,
            &self.counts,
            self.sum.load(Ordering::Relaxed) as f64,
        )
    }
}

/// Cumulative counts per bound from per-bucket `counts` (one more than `bounds`: the last is
/// everything above the largest bound).
fn cumulative(bounds: &[f64], counts: &[AtomicU64], sum: f64) -> HistogramSnapshot {
    let mut running = 0;
    let buckets = bounds
        .iter()
        .zip(counts)
        .map(|(b, c)| {
            running += c.load(Ordering::Relaxed);
            (*b, running)
        })
        .collect();
    let count = running + counts[bounds.len()].load(Ordering::Relaxed);
    HistogramSnapshot {
        buckets,
        count,
        sum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0001, 1));
        assert_eq!(
            s.buckets.iter().find(|(b, _)| *b == 0.005).map(|x| x.1),
            Some(2)
        );
        assert_eq!(
            s.buckets.last().map(|x| x.1),
            Some(2),
            "20 s is above every bound"
        );
        assert!((s.sum - 20.00305).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn sizes_land_in_power_of_two_buckets() {
        let h = Sizes::default();
        for n in [1, 3, 3, 200, 5000] {
            h.observe(n);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.buckets[0], (1.0, 1));
        assert_eq!(s.buckets[2], (4.0, 3), "3 and 3 are at or below 4");
        assert_eq!(
            s.buckets.last(),
            Some(&(1024.0, 4)),
            "5000 is above every bound"
        );
        assert_eq!(s.sum, 5207.0);
    }
}
