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

/// CPU time (user + system) this process has used so far, from `/proc/self/stat`; `None` where
/// there is no procfs. Lets the load generator report its own share of a CPU-bound run.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; the numeric fields follow its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture this runs on.
    Some(Duration::from_millis((utime + stime) * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_grows_while_this_process_computes() {
        let before = process_cpu().expect("procfs on Linux");
        // Spin until the counter moves by two ticks; the deadline only guards a broken parse.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        while process_cpu().expect("procfs") < before + Duration::from_millis(20) {
            assert!(std::time::Instant::now() < deadline, "CPU time never grew");
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }

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
