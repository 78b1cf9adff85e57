//! Learns the batch size with the best throughput from the batcher's own
//! measurements.
//!
//! Bigger batches are not always faster per row: on a CPU, MiniLM runs more
//! rows per second at batch 8 than at 32 (its attention and activations
//! outgrow the caches). The tuner keeps, per size bucket (powers of two up
//! to `max_batch_size`, and `max_batch_size` itself), the service time per
//! row of the batches that ran: a running mean over the first samples, then
//! an exponentially weighted one, so a drift is followed. A bucket's first
//! batch is left out: it warms ONNX Runtime's buffers for that shape.
//!
//! The preferred size starts at `max_batch_size` (the batcher's behaviour
//! without the tuner) and moves by hill climbing: to another bucket only
//! when that one is measured cheaper per row by a margin, so noise does not
//! make it flap and it never leaves the largest size for one that is not
//! clearly faster. Exploration is deterministic: the preferred size is
//! measured first, then the next bucket on each side without enough samples,
//! walking on past buckets no worse than the preferred one (a flat stretch
//! must not hide a faster size beyond it); afterwards one batch in
//! `explore_every` goes to a neighbour (half or double, alternately) to keep
//! their numbers fresh.
//!
//! The logic here is pure (no clocks, no locks): the scheduler gives it each
//! batch's rows and service time and asks it for the size to form.

use std::time::Duration;

/// How the tuner measures and explores.
#[derive(Debug, Clone, Copy)]
pub struct TunerSettings {
    /// Weight of a new sample once a bucket has `1 / alpha` samples.
    pub alpha: f64,
    /// Samples (after the warm-up batch) before a bucket's cost is trusted.
    pub min_samples: u32,
    /// One batch in this many re-measures a neighbour of the preferred size.
    pub explore_every: u32,
    /// A neighbour must cost at least this fraction less per row to win.
    pub margin: f64,
}

impl Default for TunerSettings {
    fn default() -> Self {
        TunerSettings {
            alpha: 0.2,
            min_samples: 3,
            explore_every: 32,
            margin: 0.03,
        }
    }
}

/// What the tuner knows about one size bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BucketEstimate {
    /// The bucket's size (rows).
    pub size: usize,
    /// Batches seen, the warm-up batch included.
    pub batches: u32,
    /// Service seconds per row (meaningful once `batches` > 1).
    pub seconds_per_row: f64,
}

impl BucketEstimate {
    /// Samples that entered the estimate (the warm-up batch is not one).
    fn samples(&self) -> u32 {
        self.batches.saturating_sub(1)
    }
}

/// The learned batch size of one model version.
#[derive(Debug, Clone)]
pub struct BatchTuner {
    settings: TunerSettings,
    buckets: Vec<BucketEstimate>,
    preferred: usize,
    since_exploration: u32,
    explore_larger: bool,
}

impl BatchTuner {
    /// A tuner for batches of up to `max_batch_size` rows (at least 1).
    pub fn new(max_batch_size: usize, settings: TunerSettings) -> BatchTuner {
        let max = max_batch_size.max(1);
        let mut sizes: Vec<usize> = std::iter::successors(Some(1usize), |s| s.checked_mul(2))
            .take_while(|&s| s < max)
            .collect();
        sizes.push(max);
        let buckets: Vec<BucketEstimate> = sizes
            .into_iter()
            .map(|size| BucketEstimate {
                size,
                ..BucketEstimate::default()
            })
            .collect();
        BatchTuner {
            settings,
            preferred: buckets.len() - 1,
            buckets,
            since_exploration: 0,
            explore_larger: false,
        }
    }

    /// The size with the best measured throughput so far.
    pub fn preferred_size(&self) -> usize {
        self.buckets[self.preferred].size
    }

    /// What the tuner knows, smallest bucket first.
    pub fn estimates(&self) -> &[BucketEstimate] {
        &self.buckets
    }

    /// The most rows the next batch should take: the preferred size, or a
    /// size being explored.
    pub fn target_size(&self) -> usize {
        self.buckets[self.target_bucket()].size
    }

    fn target_bucket(&self) -> usize {
        let trusted = |i: usize| self.buckets[i].samples() >= self.settings.min_samples;
        if !trusted(self.preferred) {
            return self.preferred;
        }
        let (smaller, larger) = self.neighbours();
        let (below, above) = self.reach();
        if let Some(untried) = [below.last(), above.last()]
            .into_iter()
            .flatten()
            .copied()
            .find(|&i| !trusted(i))
        {
            return untried;
        }
        if self.since_exploration + 1 >= self.settings.explore_every {
            let order = if self.explore_larger {
                [larger, smaller]
            } else {
                [smaller, larger]
            };
            if let Some(next) = order.into_iter().flatten().next() {
                return next;
            }
        }
        self.preferred
    }

    /// The buckets measured on each side of the preferred one, nearest
    /// first, up to and including the first that is untried or worse than
    /// the preferred by more than the margin: a flat stretch must not hide
    /// a faster size beyond it (MiniLM can cost the same per row at 16 and
    /// 32, and less at 8).
    fn reach(&self) -> (Vec<usize>, Vec<usize>) {
        let ceiling = self.buckets[self.preferred].seconds_per_row * (1.0 + self.settings.margin);
        let walk = |order: &mut dyn Iterator<Item = usize>| {
            let mut seen = Vec::new();
            for i in order {
                seen.push(i);
                let b = self.buckets[i];
                if b.samples() < self.settings.min_samples || b.seconds_per_row > ceiling {
                    break;
                }
            }
            seen
        };
        let below = walk(&mut (0..self.preferred).rev());
        let above = walk(&mut (self.preferred + 1..self.buckets.len()));
        (below, above)
    }

    fn neighbours(&self) -> (Option<usize>, Option<usize>) {
        let smaller = self.preferred.checked_sub(1);
        let larger = Some(self.preferred + 1).filter(|&i| i < self.buckets.len());
        (smaller, larger)
    }

    /// Records a batch of `rows` rows that took `service` to run, then
    /// moves the preferred size when a measured size is clearly faster.
    pub fn record(&mut self, rows: usize, service: Duration) {
        if rows == 0 || service.is_zero() {
            return;
        }
        let was_exploring = self.target_bucket() != self.preferred;
        let bucket = self.buckets.partition_point(|b| b.size <= rows).max(1) - 1;
        let estimate = &mut self.buckets[bucket];
        estimate.batches = estimate.batches.saturating_add(1);
        let per_row = service.as_secs_f64() / rows as f64;
        match estimate.samples() {
            0 => {}
            1 => estimate.seconds_per_row = per_row,
            n => {
                let weight = (1.0 / f64::from(n)).max(self.settings.alpha);
                estimate.seconds_per_row += weight * (per_row - estimate.seconds_per_row);
            }
        }
        if was_exploring {
            self.since_exploration = 0;
            self.explore_larger = !self.explore_larger;
        } else {
            self.since_exploration = self.since_exploration.saturating_add(1);
        }
        self.climb();
    }

    /// Moves to the cheapest measured bucket within reach, if it beats the
    /// preferred size by the margin.
    fn climb(&mut self) {
        let min = self.settings.min_samples;
        let current = self.buckets[self.preferred];
        if current.samples() < min {
            return;
        }
        let (below, above) = self.reach();
        let best = below
            .into_iter()
            .chain(above)
            .filter(|&i| self.buckets[i].samples() >= min)
            .min_by(|&a, &b| {
                let (a, b) = (self.buckets[a], self.buckets[b]);
                a.seconds_per_row.total_cmp(&b.seconds_per_row)
            });
        if let Some(best) = best {
            let cost = self.buckets[best].seconds_per_row;
            if cost < current.seconds_per_row * (1.0 - self.settings.margin) {
                self.preferred = best;
                self.since_exploration = 0;
            }
        }
    }
}

#[cfg(test)]
#[path = "batch_tuner_tests.rs"]
mod tests;
