//! How late admission's predictions come true: a running estimate of a
//! high quantile of `actual / predicted` over the requests admitted, that
//! admission multiplies its predictions by when that quantile is above 1.
//!
//! The prediction costs the queue ahead from measured batch times, so it
//! misses whatever those times do not show: batches slowed by the parsing
//! of the overload's refused requests on the same cores, a service time
//! that grows between measurements, the wait for a reply to be written. A
//! request admitted at a prediction just under its deadline then finishes
//! just past it. Scaling by the 95th percentile of the ratio keeps 19 in
//! 20 admitted requests within the deadline; while predictions come true
//! or early (the usual case: every batch ahead is costed as a full one),
//! the quantile stays at or under 1 and predictions are used as they are.

/// The quantile of `actual / predicted` tracked.
const QUANTILE: f64 = 0.95;
/// Step of the estimate per observation, as a ratio.
const STEP: f64 = 0.01;
/// The estimate's bounds: predictions are never scaled by more than this.
const MAX_FACTOR: f64 = 2.0;
const MIN_ESTIMATE: f64 = 0.5;

/// A running estimate of the 95th percentile of `actual / predicted`
/// (stochastic approximation: up by `STEP * 0.95` on a ratio above it, down
/// by `STEP * 0.05` on one at or below, so that it settles where 5% are
/// above).
#[derive(Debug, Clone)]
pub struct Lateness {
    estimate: f64,
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness { estimate: 1.0 }
    }
}

impl Lateness {
    /// One admitted request predicted to take `predicted_ns` that took
    /// `actual_ns`, arrival to answer.
    pub fn record(&mut self, predicted_ns: f64, actual_ns: f64) {
        if predicted_ns <= 0.0 || !actual_ns.is_finite() {
            return;
        }
        let ratio = actual_ns / predicted_ns;
        self.estimate += if ratio > self.estimate {
            STEP * QUANTILE
        } else {
            -STEP * (1.0 - QUANTILE)
        };
        self.estimate = self.estimate.clamp(MIN_ESTIMATE, MAX_FACTOR);
    }

    /// What predictions are multiplied by: the estimate, at least 1.
    pub fn factor(&self) -> f64 {
        self.estimate.max(1.0)
    }

    /// A raw prediction scaled by [`Lateness::factor`].
    pub fn scale(&self, predicted: std::time::Duration) -> std::time::Duration {
        predicted.mul_f64(self.factor())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(ratios: impl Iterator<Item = f64>) -> Lateness {
        let mut lateness = Lateness::default();
        for r in ratios {
            lateness.record(1e6, r * 1e6);
        }
        lateness
    }

    #[test]
    fn predictions_that_come_true_or_early_are_left_as_they_are() {
        let early = after((0..5_000).map(|i| 0.3 + 0.6 * f64::from(i % 100) / 100.0));
        assert_eq!(early.factor(), 1.0);
    }

    #[test]
    fn late_predictions_are_scaled_by_the_ratio_most_stay_under() {
        // Ratios spread evenly over 1.00..1.10: 95% are under about 1.095.
        let late = after((0..20_000).map(|i| 1.0 + 0.1 * f64::from(i % 101) / 100.0));
        let factor = late.factor();
        assert!((1.08..=1.11).contains(&factor), "factor {factor}");
    }

    #[test]
    fn the_factor_is_bounded_and_ignores_empty_predictions() {
        let mut wild = after(std::iter::repeat_n(50.0, 10_000));
        assert_eq!(wild.factor(), MAX_FACTOR);
        wild.record(0.0, 1e9);
        assert_eq!(wild.factor(), MAX_FACTOR);
    }
}
