//! Timing loops and sample summaries: median, p90, p99 and mean, in nanoseconds.

use std::hint::black_box;
use std::time::Instant;

/// A summary of samples, in nanoseconds per operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// 50th percentile.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Summary {
    /// Summarises `samples` (sorted in place). Panics on an empty slice.
    pub fn of(samples: &mut [f64]) -> Summary {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_by(f64::total_cmp);
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        Summary {
            n: samples.len(),
            median: percentile(samples, 0.50),
            p90: percentile(samples, 0.90),
            p99: percentile(samples, 0.99),
            mean,
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Times each call of `op` on its own, after `warmup` untimed calls.
pub fn time_each(warmup: usize, iters: usize, mut op: impl FnMut()) -> Vec<f64> {
    for _ in 0..warmup {
        op();
    }
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        op();
        samples.push(start.elapsed().as_nanos() as f64);
    }
    samples
}

/// Times `batches` batches of `op(per_batch)` and returns nanoseconds per unit of work.
pub fn time_batches(
    warmup: usize,
    batches: usize,
    per_batch: usize,
    mut op: impl FnMut(usize),
) -> Vec<f64> {
    for _ in 0..warmup {
        op(per_batch);
    }
    let mut samples = Vec::with_capacity(batches);
    for _ in 0..batches {
        let start = Instant::now();
        op(per_batch);
        samples.push(start.elapsed().as_nanos() as f64 / per_batch as f64);
    }
    samples
}

/// The cost of the timing itself: an `Instant::now()` pair around nothing.
pub fn timer_overhead(iters: usize) -> Summary {
    Summary::of(&mut time_each(iters / 10, iters, || {
        black_box(());
    }))
}

/// A duration in nanoseconds, printed as ns, µs or ms with three significant digits.
pub fn fmt_ns(ns: f64) -> String {
    if ns < 10.0 {
        format!("{ns:.2} ns")
    } else if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        let us = ns / 1_000.0;
        if us < 10.0 {
            format!("{us:.2} µs")
        } else if us < 100.0 {
            format!("{us:.1} µs")
        } else {
            format!("{us:.0} µs")
        }
    } else {
        format!("{:.2} ms", ns / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = Summary::of(&mut samples);
        assert_eq!(
            (s.n, s.median, s.p90, s.p99, s.mean),
            (100, 50.0, 90.0, 99.0, 50.5)
        );
        let one = Summary::of(&mut [7.0]);
        assert_eq!((one.median, one.p99), (7.0, 7.0));
    }

    #[test]
    fn formats_units() {
        assert_eq!(fmt_ns(0.456), "0.46 ns");
        assert_eq!(fmt_ns(345.2), "345 ns");
        assert_eq!(fmt_ns(1_234.0), "1.23 µs");
        assert_eq!(fmt_ns(12_345.0), "12.3 µs");
        assert_eq!(fmt_ns(123_456.0), "123 µs");
        assert_eq!(fmt_ns(2_345_678.0), "2.35 ms");
    }
}
