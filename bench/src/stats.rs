//! Latency summaries from raw samples (microseconds). Samples are bounded by the number of
//! requests, which every loop bounds.

/// p50/p95/p99/max of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

pub fn summarize(samples: &mut [u32]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    samples.sort_unstable();
    let n = samples.len();
    let at = |q: f64| {
        let idx = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        f64::from(samples[idx]) / 1000.0
    };
    let sum: u64 = samples.iter().map(|&v| u64::from(v)).sum();
    Summary {
        n,
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: f64::from(samples[n - 1]) / 1000.0,
        mean: sum as f64 / n as f64 / 1000.0,
    }
}

pub fn micros(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_hundred() {
        let mut v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        let s = summarize(&mut v);
        assert_eq!(s.n, 100);
        assert!((s.p50 - 50.0).abs() < 1e-9);
        assert!((s.p99 - 99.0).abs() < 1e-9);
        assert!((s.max - 100.0).abs() < 1e-9);
    }
}
