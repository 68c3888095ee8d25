//! Sample statistics: median / p90 / p99 / min / max in milliseconds.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

/// Nearest-rank percentiles over the samples (in ms). `None` for no samples.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    Some(Summary {
        n: ms.len(),
        median: rank(0.5),
        p90: rank(0.9),
        p99: rank(0.99),
        min: ms[0],
        max: ms[ms.len() - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        let sum = summarize(&s).unwrap();
        assert_eq!((sum.median, sum.p90, sum.min, sum.max), (5.0, 9.0, 1.0, 10.0));
        let s: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        assert_eq!(summarize(&s).unwrap().p99, 198.0);
        assert!(summarize(&[]).is_none());
    }
}
