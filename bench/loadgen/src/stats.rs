//! What a run measured: a latency histogram (HDR, microseconds), successes,
//! and errors counted by label. Each load task keeps its own [`Recorder`];
//! they are merged at the end, so recording never contends.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency the histogram tracks exactly (60 s); longer ones saturate.
const MAX_MICROS: u64 = 60_000_000;

/// Measurements of one task, or of several merged.
#[derive(Debug, Clone)]
pub struct Recorder {
    latency: Histogram<u64>,
    /// Requests answered with success in the measured window.
    pub ok: u64,
    /// Failed requests in the measured window, by label (`http 503`,
    /// `grpc Unavailable`, `transport`).
    pub errors: BTreeMap<String, u64>,
    /// The first message seen for each error label, for the report.
    pub first_error: BTreeMap<String, String>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            // 3 significant digits: 0.1% resolution at any magnitude.
            latency: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds"),
            ok: 0,
            errors: BTreeMap::new(),
            first_error: BTreeMap::new(),
        }
    }
}

impl Recorder {
    /// Records a successful request's latency.
    pub fn success(&mut self, latency: Duration) {
        self.ok += 1;
        self.record_latency(latency);
    }

    /// Records a failure under `label`, keeping the first `detail` seen.
    pub fn failure(&mut self, label: &str, detail: &str) {
        *self.errors.entry(label.to_string()).or_default() += 1;
        if !self.first_error.contains_key(label) {
            let detail: String = detail.chars().take(300).collect();
            self.first_error.insert(label.to_string(), detail);
        }
    }

    fn record_latency(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        self.latency.saturating_record(micros);
    }

    /// Adds another recorder's counts into this one.
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.ok += other.ok;
        for (label, n) in &other.errors {
            *self.errors.entry(label.clone()).or_default() += n;
        }
        for (label, detail) in &other.first_error {
            self.first_error
                .entry(label.clone())
                .or_insert_with(|| detail.clone());
        }
    }

    /// Failed requests.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The latency distribution of the successful requests.
    pub fn latency(&self) -> LatencySummary {
        LatencySummary::of(&self.latency)
    }

    /// The latency at quantile `q` (0..=1) of the successful requests, ms.
    pub fn latency_at(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q.clamp(0.0, 1.0)) as f64 / 1000.0
    }

    /// `[quantile, ms]` pairs of the successful requests' latency, dense
    /// in the tail, for plotting a distribution.
    pub fn spectrum(&self) -> Vec<(f64, f64)> {
        if self.latency.is_empty() {
            return Vec::new();
        }
        SPECTRUM.iter().map(|&q| (q, self.latency_at(q))).collect()
    }
}

/// The quantiles of [`Recorder::spectrum`].
const SPECTRUM: [f64; 31] = [
    0.0, 0.01, 0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95,
    0.96, 0.97, 0.98, 0.99, 0.992, 0.995, 0.997, 0.998, 0.999, 0.9995, 0.9999, 0.99995, 0.99999,
    1.0,
];

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl LatencySummary {
    /// Summarizes a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b * 0.001 + 1e-9
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut r = Recorder::default();
        for i in 1..=1000u64 {
            r.success(Duration::from_micros(i * 1000)); // 1..=1000 ms
        }
        let s = r.latency();
        assert_eq!(s.count, 1000);
        assert!(close(s.p50, 500.0), "{s:?}");
        assert!(close(s.p95, 950.0), "{s:?}");
        assert!(close(s.p99, 990.0), "{s:?}");
        assert!(close(s.p999, 999.0), "{s:?}");
        assert!(close(s.max, 1000.0), "{s:?}");
        assert!(close(s.mean, 500.5), "{s:?}");
    }

    #[test]
    fn tail_percentiles_see_a_rare_outlier() {
        let mut r = Recorder::default();
        for _ in 0..999 {
            r.success(Duration::from_micros(2000));
        }
        r.success(Duration::from_secs(3));
        let s = r.latency();
        assert!(close(s.p99, 2.0), "{s:?}");
        assert!(close(s.max, 3000.0), "{s:?}");
        assert!(close(s.p999, 2.0), "{s:?}");
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(Recorder::default().latency(), LatencySummary::default());
    }

    #[test]
    fn merge_adds_counts_and_errors() {
        let mut a = Recorder::default();
        a.success(Duration::from_micros(100));
        a.failure("http 503", "queue full");
        let mut b = Recorder::default();
        b.success(Duration::from_micros(300));
        b.failure("http 503", "later");
        b.failure("transport", "reset");
        a.merge(&b);
        assert_eq!(a.ok, 2);
        assert_eq!(a.errors["http 503"], 2);
        assert_eq!(a.first_error["http 503"], "queue full");
        assert_eq!(a.error_total(), 3);
        assert!(close(a.latency().max, 0.3));
    }

    #[test]
    fn latencies_beyond_the_range_saturate() {
        let mut r = Recorder::default();
        r.success(Duration::from_secs(600));
        r.success(Duration::ZERO);
        assert_eq!(r.latency().count, 2);
        assert!(r.latency().max >= 60_000.0 * 0.999);
    }
}
