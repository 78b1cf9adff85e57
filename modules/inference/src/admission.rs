//! Admission by deadline: a model's scheduler predicts when a new request
//! would finish, from the work queued ahead of it, the instances' running
//! batches and the measured batch service time, and refuses at once a
//! request it would not finish within its deadline (its queue timeout or the
//! model's latency objective, whichever is earlier).
//!
//! Pure logic with the clock injected: every call takes `now`, so tests and
//! the simulation of `admission_tests.rs` drive it on a fake clock. Each call
//! is O(priority levels + instances): the queue is never walked; rows queued
//! per level are counted as requests come and go.
//!
//! The prediction assumes what the batcher does: requests leave each level in
//! arrival order, higher levels first, in batches of up to `capacity` rows
//! (the batch limit now), each batch taken by the instance that frees first.
//! Every batch ahead, and the request's own, is costed as a full batch, so
//! rows that join its batch later cannot make it late. A cold model (no
//! batch measured yet) admits everything, and so does an idle one: a
//! request that would start at once is never refused.
//!
//! Predictions are checked against what happened: each admitted request's
//! actual time is compared with its prediction, and when predictions run
//! late ([`Lateness`]) they are scaled up until 19 in 20 come true.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lateness::Lateness;

/// Weight of the newest batch in the service-time averages.
const SMOOTHING: f64 = 0.2;

/// A batch's service time as a function of its rows, `fixed + per_row *
/// rows`, fit by least squares over exponentially weighted averages of the
/// measured batches. While the batches measured all had about one size, the
/// slope is unknown and the time is taken as that size's, whatever the rows.
#[derive(Debug, Clone, Default)]
pub struct BatchCost {
    samples: u64,
    mean_rows: f64,
    mean_ns: f64,
    mean_rows_sq: f64,
    mean_rows_ns: f64,
}

impl BatchCost {
    /// Adds one measured batch of `rows` rows that took `took`.
    pub fn record(&mut self, rows: usize, took: Duration) {
        let (x, y) = (rows as f64, took.as_nanos() as f64);
        let a = if self.samples == 0 { 1.0 } else { SMOOTHING };
        self.mean_rows += a * (x - self.mean_rows);
        self.mean_ns += a * (y - self.mean_ns);
        self.mean_rows_sq += a * (x * x - self.mean_rows_sq);
        self.mean_rows_ns += a * (x * y - self.mean_rows_ns);
        self.samples += 1;
    }

    /// The predicted service time of a batch of `rows` rows; `None` before
    /// any batch was measured.
    pub fn estimate(&self, rows: usize) -> Option<Duration> {
        if self.samples == 0 {
            return None;
        }
        let variance = self.mean_rows_sq - self.mean_rows * self.mean_rows;
        let slope = if variance > 0.25 {
            ((self.mean_rows_ns - self.mean_rows * self.mean_ns) / variance).max(0.0)
        } else {
            0.0
        };
        let fixed = (self.mean_ns - slope * self.mean_rows).max(0.0);
        let ns = fixed + slope * rows as f64;
        Some(Duration::from_nanos(ns.round() as u64))
    }
}

/// What [`Admission::offer`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Queue it: it is predicted to finish in time (or nothing is known).
    Admit {
        /// Predicted time from arrival to completion; `None` before any
        /// batch was measured.
        predicted: Option<Duration>,
        /// The prediction before its scaling by measured lateness: what
        /// [`Admission::observe`] compares the actual time with.
        raw: Option<Duration>,
    },
    /// Refuse it now: it would finish `predicted` after arriving, past its
    /// deadline; the queue ahead should have drained enough for a request
    /// like it to fit after `drain` (exact: the Retry-After is rounded
    /// once, where it is sent).
    Refuse {
        /// Predicted time from arrival to completion.
        predicted: Duration,
        /// When a retry is predicted to fit.
        drain: Duration,
    },
}

impl Verdict {
    /// Whether the request is queued.
    pub fn is_admit(&self) -> bool {
        matches!(self, Verdict::Admit { .. })
    }

    /// The predicted time from arrival to completion, if one was made.
    pub fn predicted(&self) -> Option<Duration> {
        match *self {
            Verdict::Admit { predicted, .. } => predicted,
            Verdict::Refuse { predicted, .. } => Some(predicted),
        }
    }
}

/// A new request as the predictor sees it.
#[derive(Debug, Clone, Copy)]
pub struct Offer {
    /// Its queue level (0 is the highest priority).
    pub level: usize,
    /// Its rows (1 for a model that does not batch).
    pub rows: usize,
    /// The most rows one batch takes now (1 for a model that does not batch).
    pub capacity: usize,
    /// Time it may take from arrival to completion; `None`: no deadline.
    pub budget: Option<Duration>,
}

#[derive(Debug)]
struct Backlog {
    /// Rows queued at each level, not yet started nor abandoned.
    queued: Vec<usize>,
    /// Per instance: when its running batch is predicted to end.
    busy_until: Vec<Option<Instant>>,
    cost: BatchCost,
    lateness: Lateness,
}

/// One model version's admission state: rows queued per level, the
/// instances' running batches, and the measured batch cost.
#[derive(Debug)]
pub struct Admission {
    backlog: Mutex<Backlog>,
    /// Longest wait for a batch to fill, added to every prediction.
    queue_delay: Duration,
}

/// Whether a request at `level` would start at once: no rows queued at its
/// level or above, and an instance idle.
fn starts_now(backlog: &Backlog, level: usize) -> bool {
    let level = level.min(backlog.queued.len() - 1);
    backlog.queued[..=level].iter().all(|&rows| rows == 0)
        && backlog.busy_until.iter().any(Option::is_none)
}

impl Admission {
    /// State for `levels` queue levels and `instances` model instances.
    pub fn new(levels: usize, instances: usize, queue_delay: Duration) -> Self {
        Admission {
            backlog: Mutex::new(Backlog {
                queued: vec![0; levels.max(1)],
                busy_until: vec![None; instances.max(1)],
                cost: BatchCost::default(),
                lateness: Lateness::default(),
            }),
            queue_delay,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides on a request arriving at `now`; an admitted one is counted
    /// in the queue until [`Admission::leave`].
    pub fn offer(&self, now: Instant, offer: Offer) -> Verdict {
        let mut backlog = self.lock();
        let raw = self.predict(&backlog, now, offer);
        let predicted = raw.map(|d| backlog.lateness.scale(d));
        if let (Some(budget), Some(predicted)) = (offer.budget, predicted) {
            // One that would start at once is admitted whatever it is
            // predicted to take: refusing it makes room for nobody, and a
            // model whose measured batch time outgrew every deadline (a
            // slow spell) would otherwise never run, nor measure, again.
            if predicted > budget && !starts_now(&backlog, offer.level) {
                return Verdict::Refuse {
                    predicted,
                    drain: predicted - budget,
                };
            }
        }
        let level = offer.level.min(backlog.queued.len() - 1);
        backlog.queued[level] += offer.rows;
        Verdict::Admit { predicted, raw }
    }

    /// The predicted time from `now` until a request like `offer` would
    /// finish (scaled by measured lateness); `None` while no batch has been
    /// measured.
    pub fn predicted_wait(&self, now: Instant, offer: Offer) -> Option<Duration> {
        let backlog = self.lock();
        self.predict(&backlog, now, offer)
            .map(|d| backlog.lateness.scale(d))
    }

    /// Admitted requests answered at `now`: each one's arrival and raw
    /// prediction ([`Verdict::Admit`]'s `raw`), to measure how late
    /// predictions run.
    pub fn observe(&self, now: Instant, answered: &[(Instant, Duration)]) {
        if answered.is_empty() {
            return;
        }
        let mut backlog = self.lock();
        for &(arrived, raw) in answered {
            let actual = now.saturating_duration_since(arrived);
            backlog
                .lateness
                .record(raw.as_nanos() as f64, actual.as_nanos() as f64);
        }
    }

    fn predict(&self, backlog: &Backlog, now: Instant, offer: Offer) -> Option<Duration> {
        let capacity = offer.capacity.max(1);
        let batch = backlog.cost.estimate(capacity)?;
        let level = offer.level.min(backlog.queued.len() - 1);
        let ahead: usize = backlog.queued[..=level].iter().sum();
        let (full, partial) = (ahead / capacity, ahead % capacity);
        let batches_ahead = if partial > 0 && partial + offer.rows > capacity {
            full + 1
        } else {
            full
        };
        let mut free: Vec<Duration> = backlog
            .busy_until
            .iter()
            .map(|until| until.map_or(Duration::ZERO, |u| u.saturating_duration_since(now)))
            .collect();
        free.sort_unstable();
        // Batch k goes to the k-th instance to free up: instances free in
        // this order again after each round, every batch costing `batch`.
        let rounds = u32::try_from(batches_ahead / free.len()).unwrap_or(u32::MAX);
        let start = free[batches_ahead % free.len()]
            .saturating_add(batch.saturating_mul(rounds))
            .saturating_add(self.queue_delay);
        Some(start.saturating_add(batch))
    }

    /// `rows` at `level` left the queue: started, abandoned or refused late.
    pub fn leave(&self, level: usize, rows: usize) {
        let mut backlog = self.lock();
        let level = level.min(backlog.queued.len() - 1);
        backlog.queued[level] = backlog.queued[level].saturating_sub(rows);
    }

    /// Instance `instance` starts a batch of `rows` rows at `now`.
    pub fn start(&self, instance: usize, now: Instant, rows: usize) {
        let mut backlog = self.lock();
        let ends = backlog.cost.estimate(rows).map(|took| now + took);
        if let Some(slot) = backlog.busy_until.get_mut(instance) {
            *slot = Some(ends.unwrap_or(now));
        }
    }

    /// Instance `instance` finished a batch of `rows` rows that took `took`.
    pub fn finish(&self, instance: usize, rows: usize, took: Duration) {
        let mut backlog = self.lock();
        backlog.cost.record(rows, took);
        if let Some(slot) = backlog.busy_until.get_mut(instance) {
            *slot = None;
        }
    }

    /// The measured cost of a batch of `rows` rows, if any batch ran yet.
    pub fn batch_cost(&self, rows: usize) -> Option<Duration> {
        self.lock().cost.estimate(rows)
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
