//! One analysis check of a canary against its stable version, over one
//! interval's window: Flagger's metric checks, with the stable version as
//! the baseline (Argo Rollouts' comparison) where it has traffic.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::window::WindowStats;

/// The thresholds of a rollout's checks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Time between two checks.
    pub interval: Duration,
    /// Failed checks after which the rollout aborts.
    pub threshold: u32,
    /// Highest server-error share of the canary.
    pub max_error_rate: f64,
    /// Highest excess of the canary's error share over the stable one's.
    pub max_error_rate_increase: f64,
    /// Highest canary p99.
    pub max_p99: Duration,
    /// Highest ratio of the canary's p99 to the stable one's.
    pub max_p99_ratio: f64,
    /// A canary p99 at most this above the stable one's passes the ratio.
    pub p99_ratio_floor: Duration,
    /// Canary requests a check needs to pass or fail.
    pub min_requests: u64,
}

/// What a check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every threshold held.
    Pass(String),
    /// A threshold was crossed; the text names it with its numbers.
    Fail(String),
    /// Too few canary requests to tell.
    Inconclusive(String),
}

impl Verdict {
    /// `pass`, `fail` or `inconclusive`.
    pub fn result(&self) -> &'static str {
        match self {
            Verdict::Pass(_) => "pass",
            Verdict::Fail(_) => "fail",
            Verdict::Inconclusive(_) => "inconclusive",
        }
    }

    /// The readable account of the check.
    pub fn message(&self) -> &str {
        match self {
            Verdict::Pass(m) | Verdict::Fail(m) | Verdict::Inconclusive(m) => m,
        }
    }
}

fn ms(seconds: f64) -> String {
    format!("{:.3} ms", seconds * 1e3)
}

/// Checks `canary` (and compares it with `stable`, when that has
/// `min_requests` of its own) against `t`.
pub fn check(canary: &WindowStats, stable: Option<&WindowStats>, t: &Thresholds) -> Verdict {
    let n = canary.totals.requests;
    if n < t.min_requests.max(1) {
        return Verdict::Inconclusive(format!(
            "{n} canary requests in the interval, {} needed",
            t.min_requests.max(1)
        ));
    }
    let baseline = stable.filter(|s| s.totals.requests >= t.min_requests.max(1));
    let error_rate = canary.error_rate();
    let mut failures = Vec::new();
    if error_rate > t.max_error_rate {
        failures.push(format!(
            "error rate {:.2}% over the {:.2}% limit ({} of {n} requests failed)",
            error_rate * 100.0,
            t.max_error_rate * 100.0,
            canary.totals.server_errors
        ));
    }
    if let Some(base) = baseline {
        let excess = error_rate - base.error_rate();
        if excess > t.max_error_rate_increase {
            failures.push(format!(
                "error rate {:.2}% exceeds stable's {:.2}% by more than {:.2} points",
                error_rate * 100.0,
                base.error_rate() * 100.0,
                t.max_error_rate_increase * 100.0
            ));
        }
    }
    let p99 = canary.totals.quantile(0.99).unwrap_or(0.0);
    if p99 > t.max_p99.as_secs_f64() {
        failures.push(format!(
            "p99 {} over the {} limit",
            ms(p99),
            ms(t.max_p99.as_secs_f64())
        ));
    }
    let stable_p99 = baseline.and_then(|b| b.totals.quantile(0.99));
    if let Some(stable_p99) = stable_p99.filter(|p| *p > 0.0) {
        let ratio = p99 / stable_p99;
        let excess = p99 - stable_p99;
        if ratio > t.max_p99_ratio && excess > t.p99_ratio_floor.as_secs_f64() {
            failures.push(format!(
                "p99 {} is {ratio:.1}x stable's {} (limit {:.1}x)",
                ms(p99),
                ms(stable_p99),
                t.max_p99_ratio
            ));
        }
    }
    let summary = format!(
        "{n} requests, error rate {:.2}%, p99 {}{}",
        error_rate * 100.0,
        ms(p99),
        match (baseline, stable_p99) {
            (Some(b), Some(sp)) => format!(
                "; stable: {} requests, error rate {:.2}%, p99 {}",
                b.totals.requests,
                b.error_rate() * 100.0,
                ms(sp)
            ),
            _ => "; stable: too few requests to compare".into(),
        }
    );
    if failures.is_empty() {
        Verdict::Pass(summary)
    } else {
        Verdict::Fail(format!("{} ({summary})", failures.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Totals;

    fn thresholds() -> Thresholds {
        Thresholds {
            interval: Duration::from_secs(1),
            threshold: 2,
            max_error_rate: 0.01,
            max_error_rate_increase: 0.005,
            max_p99: Duration::from_millis(500),
            max_p99_ratio: 3.0,
            p99_ratio_floor: Duration::ZERO,
            min_requests: 20,
        }
    }

    fn stats(requests: u64, server_errors: u64, bucket: usize) -> WindowStats {
        let mut buckets = vec![0; 22];
        buckets[bucket] = requests;
        WindowStats {
            totals: Totals {
                requests,
                client_errors: 0,
                server_errors,
                buckets,
            },
            span: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_canary_like_stable_passes() {
        let v = check(&stats(100, 0, 4), Some(&stats(900, 0, 4)), &thresholds());
        assert_eq!(v.result(), "pass", "{v:?}");
    }

    #[test]
    fn too_few_requests_is_neither_pass_nor_fail() {
        let v = check(&stats(19, 19, 4), Some(&stats(900, 0, 4)), &thresholds());
        assert_eq!(v.result(), "inconclusive", "{v:?}");
    }

    #[test]
    fn errors_over_the_limit_fail_and_say_so() {
        let v = check(&stats(100, 30, 4), Some(&stats(900, 0, 4)), &thresholds());
        assert_eq!(v.result(), "fail");
        assert!(v.message().contains("error rate 30.00%"), "{v:?}");
    }

    #[test]
    fn a_canary_ten_times_slower_fails_on_the_ratio() {
        // Bucket 4: 200..400 us; bucket 8: 3.2..6.4 ms (over 10x).
        let v = check(&stats(100, 0, 8), Some(&stats(900, 0, 4)), &thresholds());
        assert_eq!(v.result(), "fail");
        assert!(v.message().contains("x stable's"), "{v:?}");
    }

    #[test]
    fn a_slower_canary_within_the_floor_passes_the_ratio() {
        // Bucket 8 (3.2..6.4 ms) against bucket 4 (200..400 us): over 10x,
        // but at most 6.2 ms more; a floor of 10 ms lets it pass.
        let floor = Thresholds {
            p99_ratio_floor: Duration::from_millis(10),
            ..thresholds()
        };
        let v = check(&stats(100, 0, 8), Some(&stats(900, 0, 4)), &floor);
        assert_eq!(v.result(), "pass", "{v:?}");
    }

    #[test]
    fn without_a_baseline_only_the_absolute_limits_apply() {
        let v = check(&stats(100, 0, 8), Some(&stats(5, 0, 4)), &thresholds());
        assert_eq!(v.result(), "pass", "{v:?}");
        let v = check(&stats(100, 0, 16), None, &thresholds());
        assert_eq!(v.result(), "fail", "{v:?}");
    }
}
