//! Latency statistics: percentiles (nearest rank), mean and throughput.

use std::time::Duration;

/// A summary of round-trip times.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Median, in microseconds.
    pub p50_us: f64,
    /// 99th percentile, in microseconds.
    pub p99_us: f64,
    /// Mean, in microseconds.
    pub mean_us: f64,
    /// Largest sample, in microseconds.
    pub max_us: f64,
}

impl Summary {
    /// Summarises `samples` (reordered in place). `None` when there are none.
    pub fn of(samples: &mut [Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let total: Duration = samples.iter().sum();
        Some(Summary {
            count: samples.len(),
            p50_us: micros(percentile(samples, 50.0)),
            p99_us: micros(percentile(samples, 99.0)),
            mean_us: micros(total) / samples.len() as f64,
            max_us: micros(samples[samples.len() - 1]),
        })
    }
}

impl Summary {
    /// The figures as a JSON object, in microseconds (`--json` output).
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "samples": self.count,
            "p50": self.p50_us,
            "p99": self.p99_us,
            "mean": self.mean_us,
            "max": self.max_us,
        })
    }
}

/// The `p`th percentile (0 < p <= 100) of sorted, non-empty `sorted`, by the nearest-rank
/// method: the smallest sample such that at least p% of the samples are at most it.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    debug_assert!(!sorted.is_empty());
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Operations per second, or 0 for an empty interval.
pub fn per_second(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Formats a number with thin groups of three digits: `12345.6` becomes `12 346`.
pub fn grouped(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_micros(x)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = us(&(1..=100).rev().collect::<Vec<_>>());
        let sum = Summary::of(&mut s).unwrap();
        assert_eq!(sum.count, 100);
        assert_eq!(sum.p50_us, 50.0);
        assert_eq!(sum.p99_us, 99.0);
        assert_eq!(sum.max_us, 100.0);
        assert!((sum.mean_us - 50.5).abs() < 1e-9);
    }

    #[test]
    fn small_sets() {
        let one = us(&[7]);
        assert_eq!(percentile(&one, 50.0), Duration::from_micros(7));
        assert_eq!(percentile(&one, 99.0), Duration::from_micros(7));
        let two = us(&[1, 9]);
        assert_eq!(percentile(&two, 50.0), Duration::from_micros(1));
        assert_eq!(percentile(&two, 99.0), Duration::from_micros(9));
        assert_eq!(Summary::of(&mut []), None);
    }

    #[test]
    fn rates_and_grouping() {
        assert_eq!(per_second(10, Duration::from_millis(500)), 20.0);
        assert_eq!(per_second(10, Duration::ZERO), 0.0);
        assert_eq!(grouped(0.4), "0");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(1000.0), "1 000");
        assert_eq!(grouped(1234567.8), "1 234 568");
    }
}
