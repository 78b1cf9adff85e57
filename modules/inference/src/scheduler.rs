//! One scheduler per model version, with Triton's dynamic batcher semantics.
//!
//! Each model instance is an OS thread owning its runner; there is no
//! scheduler thread in between. Requests wait in one bounded queue shared by
//! the instances; an instance that is free forms the next batch itself:
//! greedily when there is no queue delay, otherwise waiting (a timed condvar
//! wait, microsecond-precise) up to `max_queue_delay` for the batch to reach
//! `max_batch_size` or a preferred size. Without configured preferred sizes,
//! a [`BatchTuner`] learns the size with the best throughput from the
//! batches' service times: batches stop at that size even when more rows
//! wait, and a waiting batch is ready once it reaches it. A request is
//! answered by the instance that ran it (through the caller's thread's
//! [`reply_home`], when it has one: one wake-up per batch and thread). A
//! full queue rejects at once. A batch that fails
//! is run again one request at a time, so a request whose data fails the
//! model fails alone and never takes the requests batched with it along.
//!
//! Admission by deadline ([`Admission`]): a request that the queue ahead of
//! it and the measured batch time say would finish past its deadline (its
//! timeout or the model's latency objective) is refused at once with
//! [`InferenceError::DeadlineUnmet`], never held.
//!
//! Each request carries a small state (queued, started, abandoned) that the
//! instance and the caller settle with one compare-and-swap: a caller whose
//! queue timeout passes, or who goes away, abandons a request that has not
//! started, and an instance never runs an abandoned request. The queue-depth
//! gauge falls exactly once per request, on whichever transition wins.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::admission::{Admission, Offer, Verdict};
use crate::batch_tuner::{BatchTuner, TunerSettings};
use crate::error::{InferenceError, Result};
use crate::model_config::BatchingPolicy;
use crate::overload::Overload;
use crate::reply_home::{self, Outbox, ReplyHome};
use crate::stats::{BatchTimings, VersionStats};
use crate::tensor::{OutputTensor, RequestInputs};

/// What runs a batch: ONNX Runtime in production, fakes in tests.
pub trait ModelRunner: Send + 'static {
    /// Runs the requests as one batch, returning each request's outputs (all
    /// of the model's outputs, in model order) and where the time went.
    fn run(&mut self, batch: &[&RequestInputs]) -> Result<(Vec<Vec<OutputTensor>>, BatchTimings)>;
}

/// The answer a caller waits for.
pub type Reply = Result<Vec<OutputTensor>>;

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const ABANDONED: u8 = 2;

/// Where a request stands; shared by its caller and the queue.
struct Status {
    state: AtomicU8,
    stats: Arc<VersionStats>,
    admission: Arc<Admission>,
    /// Its queue level and the rows it counts for in admission.
    level: usize,
    rows: usize,
}

impl Status {
    /// Moves a queued request to `to`; true when this call made the move
    /// (and so took the request out of the queue-depth gauge).
    fn leave_queue(&self, to: u8) -> bool {
        let moved = self
            .state
            .compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if moved {
            self.stats.queue_depth.fetch_sub(1, Ordering::AcqRel);
            self.admission.leave(self.level, self.rows);
        }
        moved
    }

    fn is_queued(&self) -> bool {
        self.state.load(Ordering::Acquire) == QUEUED
    }
}

struct Pending {
    inputs: RequestInputs,
    enqueued: Instant,
    /// Admission's raw prediction of its time to answer, if one was made.
    predicted: Option<Duration>,
    status: Arc<Status>,
    reply: oneshot::Sender<Reply>,
    /// Where its answer is delivered, if the caller's thread has a home.
    home: Option<Arc<ReplyHome>>,
}

/// A queued request, as its caller holds it. Dropping it before the answer
/// abandons the request: if it has not started, it never runs.
pub struct Ticket {
    receiver: oneshot::Receiver<Reply>,
    status: Arc<Status>,
    deadline: Option<Instant>,
}

impl Ticket {
    /// Holds the request to the caller's own `deadline` too, when that is
    /// earlier: it applies whatever the queue policy lets a request ask for.
    fn until(mut self, deadline: Option<Instant>) -> Ticket {
        if let Some(deadline) = deadline {
            self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        }
        self
    }

    /// Waits for the answer. A request still queued at its deadline is
    /// abandoned and answered with [`InferenceError::Timeout`]; one that
    /// started by then runs to the end.
    pub async fn wait(mut self) -> Reply {
        if let Some(deadline) = self.deadline {
            tokio::select! {
                reply = &mut self.receiver => return flatten(reply),
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if self.status.leave_queue(ABANDONED) {
                        return Err(InferenceError::Timeout);
                    }
                }
            }
        }
        flatten((&mut self.receiver).await)
    }
}

fn flatten(reply: std::result::Result<Reply, oneshot::error::RecvError>) -> Reply {
    reply.unwrap_or_else(|_| {
        Err(InferenceError::Internal(
            "the model instance stopped before answering".into(),
        ))
    })
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.status.leave_queue(ABANDONED);
    }
}

struct Queue {
    levels: Vec<VecDeque<Pending>>,
    closing: bool,
    /// Instances waiting for any request (the queue held no batch).
    idle: usize,
    /// Instances waiting, with a timeout, for their next batch to fill.
    filling: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    available: Condvar,
    policy: BatchingPolicy,
    max_batch_size: usize,
    stats: Arc<VersionStats>,
    /// Learns the fastest batch size; `None` when the model does not batch,
    /// configures preferred sizes (they win, as in Triton) or opts out.
    tuner: Option<Mutex<BatchTuner>>,
    /// The most rows a batch takes now: the tuner's target, else
    /// `max_batch_size`.
    batch_limit: AtomicUsize,
    admission: Arc<Admission>,
    /// The current run of refusals, which lengthens their Retry-After.
    overload: Overload,
    /// A request's latency objective in nanoseconds; 0: none.
    objective_ns: AtomicU64,
}

/// Handle to a model version's queue and instances. Dropping it lets the
/// queue drain, then stops the instance threads (their sessions are released).
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl Scheduler {
    /// Starts one thread per runner.
    pub fn start(
        label: &str,
        policy: BatchingPolicy,
        max_batch_size: usize,
        runners: Vec<Box<dyn ModelRunner>>,
        stats: Arc<VersionStats>,
    ) -> Result<Scheduler> {
        let levels = (0..policy.priority_levels.max(1))
            .map(|_| VecDeque::new())
            .collect();
        let tuned =
            policy.batch_tuning && max_batch_size > 1 && policy.preferred_batch_sizes.is_empty();
        let tuner = tuned.then(|| BatchTuner::new(max_batch_size, TunerSettings::default()));
        if let Some(tuner) = &tuner {
            let gauge = &stats.preferred_batch_size;
            gauge.store(tuner.preferred_size(), Ordering::Relaxed);
        }
        let admission = Admission::new(
            policy.priority_levels.max(1) as usize,
            runners.len(),
            policy.max_queue_delay,
        );
        let shared = Arc::new(Shared {
            admission: Arc::new(admission),
            overload: Overload::default(),
            objective_ns: AtomicU64::new(0),
            queue: Mutex::new(Queue {
                levels,
                closing: false,
                idle: 0,
                filling: 0,
            }),
            available: Condvar::new(),
            policy,
            max_batch_size,
            stats,
            tuner: tuner.map(Mutex::new),
            batch_limit: AtomicUsize::new(max_batch_size),
        });
        shared
            .stats
            .instances
            .store(runners.len(), Ordering::Relaxed);
        for (id, mut runner) in runners.into_iter().enumerate() {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("inst-{label}-{id}"))
                .spawn(move || {
                    while let Some(batch) = shared.next_batch() {
                        let rows = batch.iter().map(|p| p.status.rows).sum();
                        let began = Instant::now();
                        shared.admission.start(id, began, rows);
                        execute(runner.as_mut(), batch, &shared);
                        shared.admission.finish(id, rows, began.elapsed());
                    }
                })
                .map_err(|e| {
                    InferenceError::Internal(format!("cannot start instance thread: {e}"))
                })?;
        }
        Ok(Scheduler { shared })
    }

    /// Sets the latency objective of a request, arrival to answer (`None`:
    /// none): one predicted to miss it is refused on arrival.
    pub fn set_latency_objective(&self, objective: Option<Duration>) {
        let ns = objective.map_or(0, |o| u64::try_from(o.as_nanos()).unwrap_or(u64::MAX));
        self.shared.objective_ns.store(ns, Ordering::Relaxed);
    }

    /// Queues a validated request. Fails at once when the queue is full, or
    /// when it is predicted to finish past its deadline (its timeout or the
    /// latency objective, whichever is earlier).
    /// `priority` 0 takes the default level; `timeout` applies only when the
    /// model allows overrides (else the model's default timeout applies).
    pub fn enqueue(
        &self,
        inputs: RequestInputs,
        priority: u32,
        timeout: Option<Duration>,
    ) -> Result<Ticket> {
        self.enqueue_until(inputs, priority, timeout, None)
    }

    /// [`Scheduler::enqueue`] for a caller with a deadline of its own (the
    /// call context's): admission holds the request to the earliest of its
    /// timeout, the latency objective and `deadline`, and so does the ticket.
    pub fn enqueue_until(
        &self,
        inputs: RequestInputs,
        priority: u32,
        timeout: Option<Duration>,
        deadline: Option<Instant>,
    ) -> Result<Ticket> {
        let shared = &self.shared;
        let policy = &shared.policy;
        let level = level(policy, priority);
        shared.stats.arrivals.fetch_add(1, Ordering::Relaxed);
        let depth = &shared.stats.queue_depth;
        if depth.fetch_add(1, Ordering::AcqRel) >= policy.max_queue_size {
            depth.fetch_sub(1, Ordering::AcqRel);
            let retry_after = shared
                .overload
                .refused(Instant::now(), shared.slot_free_in());
            return Err(InferenceError::QueueFull { retry_after });
        }
        let timeout = if policy.allow_timeout_override {
            timeout.or(policy.default_timeout)
        } else {
            policy.default_timeout
        };
        let enqueued = Instant::now();
        let left = deadline.map(|d| d.saturating_duration_since(enqueued));
        let offer = shared.offer(level, inputs.rows, earliest(timeout, left));
        let verdict = shared.admission.offer(enqueued, offer);
        if let Some(predicted) = verdict.predicted() {
            shared.stats.set_predicted_wait(predicted);
        }
        let raw = match verdict {
            Verdict::Admit { raw, .. } => raw,
            Verdict::Refuse { predicted, drain } => {
                depth.fetch_sub(1, Ordering::AcqRel);
                return Err(InferenceError::DeadlineUnmet {
                    predicted,
                    deadline: offer.budget.unwrap_or_default(),
                    retry_after: shared.overload.refused(enqueued, drain),
                });
            }
        };
        let status = Arc::new(Status {
            state: AtomicU8::new(QUEUED),
            stats: shared.stats.clone(),
            admission: shared.admission.clone(),
            level,
            rows: offer.rows,
        });
        let (reply, receiver) = oneshot::channel();
        let ticket = Ticket {
            receiver,
            status: status.clone(),
            deadline: timeout.map(|t| enqueued + t),
        }
        .until(deadline);
        let home = reply_home::current();
        let wake = {
            let mut queue = shared.lock();
            if queue.closing {
                drop(queue);
                drop(ticket);
                return Err(InferenceError::ModelUnavailable(
                    "the model version is being unloaded".into(),
                ));
            }
            queue.levels[level].push_back(Pending {
                inputs,
                enqueued,
                predicted: raw,
                status,
                reply,
                home,
            });
            // Abandoned requests leave the gauge at once but the queue only
            // when an instance reaches them; keep their number bounded.
            let held: usize = queue.levels.iter().map(VecDeque::len).sum();
            if held > 2 * policy.max_queue_size {
                queue
                    .levels
                    .iter_mut()
                    .for_each(|l| l.retain(|p| p.status.is_queued()));
            }
            shared.needs_wake(&queue)
        };
        if wake {
            shared.available.notify_one();
        }
        Ok(ticket)
    }
}

/// The queue level of a request asking for `priority`. As Triton's, a
/// priority of 0 or past the model's levels takes the default level: an API
/// key's priority applies to every model, whatever levels each one has.
fn level(policy: &BatchingPolicy, priority: u32) -> usize {
    let levels = policy.priority_levels;
    if levels == 0 {
        return 0;
    }
    let level = if priority == 0 || priority > levels {
        policy.default_priority_level
    } else {
        priority
    };
    level.clamp(1, levels) as usize - 1
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.available.notify_all();
    }
}

/// The shorter of two optional limits; `None` only when both are.
fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Shared {
    /// When a full queue should have a free slot: one full batch's measured
    /// service time (zero before any was measured; the Retry-After made of
    /// it is rounded up to at least 1 s).
    fn slot_free_in(&self) -> Duration {
        let capacity = self.batch_limit.load(Ordering::Relaxed).max(1);
        self.admission.batch_cost(capacity).unwrap_or_default()
    }

    /// A request as admission sees it: a model that does not batch runs
    /// each request alone, as one row of a one-row batch.
    fn offer(&self, level: usize, rows: usize, timeout: Option<Duration>) -> Offer {
        let batches = self.max_batch_size > 0;
        let objective = match self.objective_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        };
        let budget = earliest(timeout, objective);
        Offer {
            level,
            rows: if batches { rows } else { 1 },
            capacity: if batches {
                self.batch_limit.load(Ordering::Relaxed).max(1)
            } else {
                1
            },
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until a batch is ready for this instance; `None` once the
    /// scheduler is dropped and the queue is empty.
    fn next_batch(&self) -> Option<Vec<Pending>> {
        let mut queue = self.lock();
        loop {
            queue.drop_abandoned_fronts();
            let Some((count, rows, grows, oldest)) = self.candidate(&queue) else {
                if queue.closing {
                    return None;
                }
                queue.idle += 1;
                queue = self
                    .available
                    .wait(queue)
                    .unwrap_or_else(|p| p.into_inner());
                queue.idle -= 1;
                continue;
            };
            let delay = self.policy.max_queue_delay;
            let now = Instant::now();
            if !self.is_ready(rows, grows, queue.closing) && now < oldest + delay {
                let wait = (oldest + delay).saturating_duration_since(now);
                queue.filling += 1;
                queue = self
                    .available
                    .wait_timeout(queue, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                queue.filling -= 1;
                continue;
            }
            let batch = queue.take(count);
            let more = queue.idle + queue.filling > 0 && queue.levels.iter().any(|l| !l.is_empty());
            drop(queue);
            if more {
                self.available.notify_one();
            }
            if batch.is_empty() {
                queue = self.lock();
                continue;
            }
            return Some(batch);
        }
    }

    /// Whether a batch of `rows` (`grows`: more rows could still join it)
    /// runs now rather than waiting out the queue delay for more.
    fn is_ready(&self, rows: usize, grows: bool, closing: bool) -> bool {
        self.max_batch_size == 0
            || self.policy.max_queue_delay.is_zero()
            || rows >= self.max_batch_size
            || self.policy.preferred_batch_sizes.contains(&rows)
            || !grows
            || closing
    }

    /// Whether a request just queued should wake a waiting instance: one
    /// is idle and none is filling a batch (that one's batch takes the
    /// request), or a filling batch is now ready. A request that only
    /// joins a batch still filling wakes nobody: the instance wakes at the
    /// batch's deadline anyway, and each needless wake-up costs a system
    /// call here and a context switch there, per request.
    fn needs_wake(&self, queue: &Queue) -> bool {
        if queue.idle + queue.filling == 0 {
            return false;
        }
        if queue.filling == 0 {
            return true;
        }
        self.candidate(queue)
            .is_some_and(|(_, rows, grows, _)| self.is_ready(rows, grows, queue.closing))
    }

    /// The next batch in priority, then arrival, order: how many queue
    /// entries it spans, its rows, whether it could still grow, and when its
    /// oldest request arrived. Abandoned entries are spanned but add no rows.
    fn candidate(&self, queue: &Queue) -> Option<(usize, usize, bool, Instant)> {
        let mut live = queue
            .levels
            .iter()
            .flatten()
            .filter(|p| p.status.is_queued());
        let first = live.next()?;
        if self.max_batch_size == 0 {
            let span = queue
                .levels
                .iter()
                .flatten()
                .position(|p| std::ptr::eq(p, first))?
                + 1;
            return Some((span, first.inputs.rows, false, first.enqueued));
        }
        let limit = self.batch_limit.load(Ordering::Relaxed);
        let (mut span, mut rows) = (0, 0);
        for pending in queue.levels.iter().flatten() {
            if !pending.status.is_queued() {
                span += 1;
                continue;
            }
            // A request bigger than the learned size still runs (alone).
            if (rows > 0 && rows + pending.inputs.rows > limit)
                || rows + pending.inputs.rows > self.max_batch_size
                || !first.inputs.batches_with(&pending.inputs)
            {
                return Some((span, rows, false, first.enqueued));
            }
            span += 1;
            rows += pending.inputs.rows;
        }
        Some((span, rows, rows < limit, first.enqueued))
    }
}

impl Shared {
    /// Gives the tuner a batch's service time and applies the size it wants
    /// next: to the batches formed from now on and to the gauge.
    fn learn(&self, tuner: &Mutex<BatchTuner>, rows: usize, timings: &BatchTimings) {
        let service = timings.input + timings.infer + timings.output;
        let mut tuner = tuner.lock().unwrap_or_else(|p| p.into_inner());
        tuner.record(rows, service);
        let (target, preferred) = (tuner.target_size(), tuner.preferred_size());
        drop(tuner);
        self.batch_limit.store(target, Ordering::Relaxed);
        let gauge = &self.stats.preferred_batch_size;
        gauge.store(preferred, Ordering::Relaxed);
    }
}

impl Queue {
    fn drop_abandoned_fronts(&mut self) {
        for level in &mut self.levels {
            while level.front().is_some_and(|p| !p.status.is_queued()) {
                level.pop_front();
            }
        }
    }

    /// Takes `span` entries off the front, keeping those this call starts.
    fn take(&mut self, mut span: usize) -> Vec<Pending> {
        let mut batch = Vec::with_capacity(span);
        for level in &mut self.levels {
            while span > 0 {
                let Some(pending) = level.pop_front() else {
                    break;
                };
                span -= 1;
                if pending.status.leave_queue(STARTED) {
                    batch.push(pending);
                }
            }
        }
        batch
    }
}

/// Runs one batch on an instance and answers every caller.
fn execute(runner: &mut dyn ModelRunner, batch: Vec<Pending>, shared: &Shared) {
    let stats = &shared.stats;
    let started = Instant::now();
    for pending in &batch {
        stats.record_queue(started - pending.enqueued);
    }
    let predictions: Vec<(Instant, Duration)> = batch
        .iter()
        .filter_map(|p| p.predicted.map(|d| (p.enqueued, d)))
        .collect();
    let outcome = run_and_answer(runner, batch, stats);
    if outcome.is_ok() {
        shared.admission.observe(Instant::now(), &predictions);
    }
    if let (Ok((rows, timings)), Some(tuner)) = (&outcome, &shared.tuner) {
        shared.learn(tuner, *rows, timings);
    }
    if let Err((batch, err)) = outcome {
        if batch.len() == 1 {
            answer_all(batch, err);
            return;
        }
        // One request's data can fail a whole batch in ways no check before
        // it could see (an id out of a table's range): run each request
        // alone, so only the one at fault gets the error.
        tracing::debug!(requests = batch.len(), error = %err, "batch failed, running its requests one at a time");
        for pending in batch {
            if let Err((alone, err)) = run_and_answer(runner, vec![pending], stats) {
                answer_all(alone, err);
            }
        }
    }
}

/// Runs `batch` and answers its callers, giving back its rows and timings;
/// on failure gives the batch back, unanswered, with the error.
fn run_and_answer(
    runner: &mut dyn ModelRunner,
    batch: Vec<Pending>,
    stats: &VersionStats,
) -> std::result::Result<(usize, BatchTimings), (Vec<Pending>, InferenceError)> {
    let inputs: Vec<&RequestInputs> = batch.iter().map(|p| &p.inputs).collect();
    let rows: usize = inputs.iter().map(|i| i.rows).sum();
    let outcome = catch_unwind(AssertUnwindSafe(|| runner.run(&inputs))).unwrap_or_else(|_| {
        Err(InferenceError::Internal(
            "model instance panicked while running a batch".into(),
        ))
    });
    match outcome {
        Ok((outputs, timings)) if outputs.len() == batch.len() => {
            stats.record_execution(rows, batch.len(), &timings);
            let mut outbox = Outbox::default();
            for (pending, outputs) in batch.into_iter().zip(outputs) {
                outbox.answer(pending.home, pending.reply, Ok(outputs));
            }
            Ok((rows, timings))
        }
        Ok(_) => Err((
            batch,
            InferenceError::Internal("runner returned the wrong number of results".into()),
        )),
        Err(err) => Err((batch, err)),
    }
}

fn answer_all(batch: Vec<Pending>, err: InferenceError) {
    let mut outbox = Outbox::default();
    for pending in batch {
        outbox.answer(pending.home, pending.reply, Err(err.clone()));
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
