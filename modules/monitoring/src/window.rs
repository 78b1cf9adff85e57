//! Sliding windows over cumulative request counts: each reading is what
//! every source's counters said at one instant; a window is the difference
//! between the newest reading and the one taken a window's length before,
//! per model version, summed over the sources both readings saw. A counter
//! that went down means its process restarted: its new value is the delta.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use mlserve_common::metrics::latency_buckets;

/// Cumulative counts of one model version at one source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Answered requests.
    pub requests: u64,
    /// Answered with a 4xx.
    pub client_errors: u64,
    /// Answered with a 5xx.
    pub server_errors: u64,
    /// Requests per latency bucket (not cumulative); the last is +Inf.
    pub buckets: Vec<u64>,
}

impl Totals {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
    }

    /// What happened between `older` and these counts (these, whole, when
    /// a counter went down: the source restarted in between).
    fn since(&self, older: &Totals) -> Totals {
        let reset = self.requests < older.requests
            || self.client_errors < older.client_errors
            || self.server_errors < older.server_errors
            || self
                .buckets
                .iter()
                .zip(&older.buckets)
                .any(|(now, then)| now < then);
        if reset {
            return self.clone();
        }
        Totals {
            requests: self.requests - older.requests,
            client_errors: self.client_errors - older.client_errors,
            server_errors: self.server_errors - older.server_errors,
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, now)| now - older.buckets.get(i).copied().unwrap_or(0))
                .collect(),
        }
    }

    /// The `q` quantile (0..=1) of the latencies, in seconds, interpolated
    /// linearly inside its bucket; `None` without requests.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let bounds: Vec<f64> = latency_buckets().collect();
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
                let Some(&upper) = bounds.get(i) else {
                    // The +Inf bucket: the largest finite bound is all we know.
                    return bounds.last().copied();
                };
                let inside = (rank - seen as f64) / n as f64;
                return Some(lower + (upper - lower) * inside);
            }
            seen += n;
        }
        bounds.last().copied()
    }
}

/// A model version: the served model name and the version that answered.
pub type VersionKey = (String, String);

/// What one source's metrics said at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceReading {
    /// Requests per model version (the gateways' histograms).
    pub requests: HashMap<VersionKey, Totals>,
    /// Versions each followed entry serves: (model, alias or `vN`) -> version
    /// (the inference processes' gauges).
    pub followed: BTreeMap<(String, String), u64>,
}

/// One reading of every source.
#[derive(Debug, Clone)]
pub struct Reading {
    /// When it was taken.
    pub at: Instant,
    /// Per source (a target address, or `local`).
    pub sources: HashMap<String, SourceReading>,
    /// Sources that could not be read this time.
    pub failed: usize,
}

/// A model version's requests over one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowStats {
    /// The counts in the window.
    pub totals: Totals,
    /// How long the window actually spans (shorter while history builds up).
    pub span: Duration,
}

impl WindowStats {
    /// Requests per second over the span.
    pub fn rate(&self) -> f64 {
        let secs = self.span.as_secs_f64();
        if secs <= 0.0 {
            0.0
        } else {
            self.totals.requests as f64 / secs
        }
    }

    /// Server errors over requests (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.totals.requests == 0 {
            0.0
        } else {
            self.totals.server_errors as f64 / self.totals.requests as f64
        }
    }
}

/// The readings of the last `keep`, oldest first.
#[derive(Debug)]
pub struct History {
    readings: VecDeque<Reading>,
    keep: Duration,
}

impl History {
    /// Keeps readings for `keep` (the longest window asked of it).
    pub fn new(keep: Duration) -> History {
        History {
            readings: VecDeque::new(),
            keep,
        }
    }

    /// Adds the newest reading and forgets what no window needs.
    pub fn push(&mut self, reading: Reading) {
        let horizon = reading.at.checked_sub(self.keep);
        self.readings.push_back(reading);
        if let Some(horizon) = horizon {
            // Keep the newest reading at or before the horizon: it starts
            // the longest window.
            while self.readings.len() > 2 && self.readings[1].at <= horizon {
                self.readings.pop_front();
            }
        }
    }

    /// The newest reading.
    pub fn latest(&self) -> Option<&Reading> {
        self.readings.back()
    }

    /// Every model version's counts over the last `window` (or as much of
    /// it as is known), summed over the sources.
    pub fn window(&self, window: Duration) -> HashMap<VersionKey, WindowStats> {
        let mut out: HashMap<VersionKey, WindowStats> = HashMap::new();
        let Some(latest) = self.readings.back() else {
            return out;
        };
        let start = latest.at.checked_sub(window);
        let older = self
            .readings
            .iter()
            .rev()
            .skip(1)
            .find(|r| start.is_some_and(|s| r.at <= s))
            .or_else(|| self.readings.front().filter(|r| r.at < latest.at));
        let Some(older) = older else {
            return out;
        };
        let span = latest.at - older.at;
        for (source, now) in &latest.sources {
            let Some(then) = older.sources.get(source) else {
                continue;
            };
            for (key, totals) in &now.requests {
                let delta = match then.requests.get(key) {
                    Some(previous) => totals.since(previous),
                    None => totals.clone(),
                };
                let entry = out.entry(key.clone()).or_insert_with(|| WindowStats {
                    span,
                    ..Default::default()
                });
                entry.totals.add(&delta);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(requests: u64, server_errors: u64, bucket: usize) -> Totals {
        let mut buckets = vec![0; 22];
        buckets[bucket] = requests;
        Totals {
            requests,
            client_errors: 0,
            server_errors,
            buckets,
        }
    }

    fn reading(at: Instant, source: &str, key: (&str, &str), t: Totals) -> Reading {
        let mut requests = HashMap::new();
        requests.insert((key.0.to_string(), key.1.to_string()), t);
        Reading {
            at,
            failed: 0,
            sources: HashMap::from([(
                source.to_string(),
                SourceReading {
                    requests,
                    followed: BTreeMap::new(),
                },
            )]),
        }
    }

    #[test]
    fn a_window_is_the_difference_with_the_reading_a_window_ago() {
        let t0 = Instant::now();
        let mut history = History::new(Duration::from_secs(60));
        let key = ("m", "2");
        history.push(reading(t0, "g", key, totals(100, 1, 3)));
        history.push(reading(
            t0 + Duration::from_secs(10),
            "g",
            key,
            totals(150, 6, 3),
        ));
        history.push(reading(
            t0 + Duration::from_secs(20),
            "g",
            key,
            totals(200, 6, 3),
        ));
        let w = history.window(Duration::from_secs(10));
        let stats = &w[&("m".to_string(), "2".to_string())];
        assert_eq!(stats.totals.requests, 50);
        assert_eq!(stats.totals.server_errors, 0);
        assert_eq!(stats.span, Duration::from_secs(10));
        assert!((stats.rate() - 5.0).abs() < 1e-9);
        let w = history.window(Duration::from_secs(20));
        let stats = &w[&("m".to_string(), "2".to_string())];
        assert_eq!(
            (stats.totals.requests, stats.totals.server_errors),
            (100, 5)
        );
        assert!((stats.error_rate() - 0.05).abs() < 1e-9);
    }

    #[test]
    fn a_restarted_source_counts_from_zero() {
        let t0 = Instant::now();
        let mut history = History::new(Duration::from_secs(60));
        let key = ("m", "1");
        history.push(reading(t0, "g", key, totals(1000, 0, 2)));
        history.push(reading(
            t0 + Duration::from_secs(5),
            "g",
            key,
            totals(30, 0, 2),
        ));
        let w = history.window(Duration::from_secs(5));
        assert_eq!(w[&("m".to_string(), "1".to_string())].totals.requests, 30);
    }

    #[test]
    fn a_new_source_is_counted_from_its_second_reading() {
        let t0 = Instant::now();
        let mut history = History::new(Duration::from_secs(60));
        history.push(reading(t0, "a", ("m", "1"), totals(10, 0, 2)));
        let mut both = reading(
            t0 + Duration::from_secs(5),
            "a",
            ("m", "1"),
            totals(20, 0, 2),
        );
        both.sources.insert(
            "b".into(),
            reading(t0, "b", ("m", "1"), totals(500, 0, 2)).sources["b"].clone(),
        );
        history.push(both);
        let w = history.window(Duration::from_secs(5));
        assert_eq!(w[&("m".to_string(), "1".to_string())].totals.requests, 10);
    }

    #[test]
    fn old_readings_are_forgotten_but_the_window_start_is_kept() {
        let t0 = Instant::now();
        let mut history = History::new(Duration::from_secs(10));
        for i in 0..100 {
            history.push(reading(
                t0 + Duration::from_secs(i),
                "g",
                ("m", "1"),
                totals(i * 10, 0, 1),
            ));
        }
        assert!(history.readings.len() <= 12, "{}", history.readings.len());
        let w = history.window(Duration::from_secs(10));
        assert_eq!(w[&("m".to_string(), "1".to_string())].totals.requests, 100);
    }

    #[test]
    fn quantiles_come_from_the_buckets() {
        // Bucket 5 spans 400 us to 800 us.
        let t = totals(100, 0, 5);
        let p99 = t.quantile(0.99).unwrap();
        assert!(p99 > 400e-6 && p99 <= 800e-6, "{p99}");
        let mut mixed = totals(90, 0, 1);
        mixed.buckets[10] = 10;
        mixed.requests = 100;
        let p50 = mixed.quantile(0.5).unwrap();
        let p99 = mixed.quantile(0.99).unwrap();
        assert!(p50 <= 50e-6, "{p50}");
        assert!(p99 > 12.8e-3 && p99 <= 25.6e-3, "{p99}");
        assert_eq!(Totals::default().quantile(0.99), None);
    }
}
