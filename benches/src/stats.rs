//! Latency summaries for the load generator.

use std::fmt;
use std::time::Duration;

/// Mean and percentiles of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Smallest sample.
    pub min_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

impl Summary {
    /// Summarises `samples` (reordered in place); `None` when there are none.
    pub fn of(samples: &mut [Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let total: f64 = samples.iter().map(|d| us(*d)).sum();
        Some(Summary {
            count: samples.len(),
            mean_us: total / samples.len() as f64,
            min_us: us(samples[0]),
            p50_us: us(samples[percentile_index(samples.len(), 50.0)]),
            p99_us: us(samples[percentile_index(samples.len(), 99.0)]),
            max_us: us(samples[samples.len() - 1]),
        })
    }
}

/// Index of the `p`th percentile in a sorted slice of `len` samples (nearest-rank method).
fn percentile_index(len: usize, p: f64) -> usize {
    let rank = (p / 100.0 * len as f64).ceil() as usize;
    rank.clamp(1, len) - 1
}

impl fmt::Display for Summary {
    /// `key=value` pairs, so `run.sh` can pick fields out with a one-line `sed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} mean_us={:.1} min_us={:.1} p50_us={:.1} p99_us={:.1} max_us={:.1}",
            self.count, self.mean_us, self.min_us, self.p50_us, self.p99_us, self.max_us
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let s = Summary::of(&mut v).expect("samples");
        assert_eq!(s.count, 100);
        assert_eq!(s.min_us, 1.0);
        assert_eq!(s.p50_us, 50.0);
        assert_eq!(s.p99_us, 99.0);
        assert_eq!(s.max_us, 100.0);
        assert!((s.mean_us - 50.5).abs() < 1e-9);
        assert!(Summary::of(&mut []).is_none());
        let mut one = [Duration::from_micros(7)];
        assert_eq!(Summary::of(&mut one).expect("one").p99_us, 7.0);
    }
}
