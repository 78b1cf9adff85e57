//! One scheduler per model version, with Triton's dynamic batcher semantics.
//!
//! The queue lives on its own OS thread (timed waits of microseconds, which
//! tokio's millisecond timer wheel cannot give). Each model instance is
//! another OS thread owning its runner. The scheduler forms a batch only when
//! an instance is free: greedily when there is no queue delay, otherwise it
//! waits up to `max_queue_delay` for the batch to reach `max_batch_size` or a
//! preferred size. The queue is bounded; a full queue rejects at once.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::{InferenceError, Result};
use crate::model_config::BatchingPolicy;
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

struct Pending {
    inputs: RequestInputs,
    level: usize,
    enqueued: Instant,
    deadline: Option<Instant>,
    reply: oneshot::Sender<Reply>,
}

enum Event {
    Request(Pending),
    InstanceFree(usize),
    Close,
}

/// Handle to a running scheduler. Dropping it lets the queue drain, then
/// stops the scheduler and instance threads (their sessions are released).
pub struct Scheduler {
    events: mpsc::Sender<Event>,
    policy: BatchingPolicy,
    max_batch_size: usize,
    stats: Arc<VersionStats>,
}

impl Scheduler {
    /// Starts the scheduler thread and one thread per runner.
    pub fn start(
        label: &str,
        policy: BatchingPolicy,
        max_batch_size: usize,
        runners: Vec<Box<dyn ModelRunner>>,
        stats: Arc<VersionStats>,
    ) -> Result<Scheduler> {
        let (events, receiver) = mpsc::channel();
        let mut instances = Vec::with_capacity(runners.len());
        for (id, mut runner) in runners.into_iter().enumerate() {
            let (batch_tx, batch_rx) = mpsc::channel::<Vec<Pending>>();
            let free = events.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name(format!("inst-{label}-{id}"))
                .spawn(move || {
                    while let Ok(batch) = batch_rx.recv() {
                        execute(runner.as_mut(), batch, &stats);
                        if free.send(Event::InstanceFree(id)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| {
                    InferenceError::Internal(format!("cannot start instance thread: {e}"))
                })?;
            instances.push(batch_tx);
        }
        let queue = Queue::new(policy.clone(), max_batch_size, instances, stats.clone());
        std::thread::Builder::new()
            .name(format!("sched-{label}"))
            .spawn(move || queue.run(receiver))
            .map_err(|e| InferenceError::Internal(format!("cannot start scheduler thread: {e}")))?;
        Ok(Scheduler {
            events,
            policy,
            max_batch_size,
            stats,
        })
    }

    /// Queues a validated request. Fails at once when the queue is full.
    /// `priority` 0 takes the default level; `timeout` applies only when the
    /// model allows overrides (else the model's default timeout applies).
    pub fn enqueue(
        &self,
        inputs: RequestInputs,
        priority: u32,
        timeout: Option<Duration>,
    ) -> Result<oneshot::Receiver<Reply>> {
        let level = self.level(priority)?;
        let depth = &self.stats.queue_depth;
        if depth.fetch_add(1, Ordering::AcqRel) >= self.policy.max_queue_size {
            depth.fetch_sub(1, Ordering::AcqRel);
            return Err(InferenceError::QueueFull);
        }
        let timeout = if self.policy.allow_timeout_override {
            timeout.or(self.policy.default_timeout)
        } else {
            self.policy.default_timeout
        };
        let enqueued = Instant::now();
        let (reply, receiver) = oneshot::channel();
        let pending = Pending {
            inputs,
            level,
            enqueued,
            deadline: timeout.map(|t| enqueued + t),
            reply,
        };
        if self.events.send(Event::Request(pending)).is_err() {
            depth.fetch_sub(1, Ordering::AcqRel);
            return Err(InferenceError::ModelUnavailable(
                "the model's scheduler has stopped".into(),
            ));
        }
        Ok(receiver)
    }

    fn level(&self, priority: u32) -> Result<usize> {
        let levels = self.policy.priority_levels;
        if levels == 0 {
            return Ok(0);
        }
        let level = if priority == 0 {
            self.policy.default_priority_level
        } else {
            priority
        };
        if level > levels {
            return Err(InferenceError::InvalidInput(format!(
                "priority {priority} is outside 1..={levels} for this model"
            )));
        }
        Ok(level as usize - 1)
    }

    /// Largest batch the scheduler forms.
    pub fn max_batch_size(&self) -> usize {
        self.max_batch_size
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.events.send(Event::Close);
    }
}

/// Runs one batch on an instance and answers every caller.
fn execute(runner: &mut dyn ModelRunner, batch: Vec<Pending>, stats: &VersionStats) {
    let started = Instant::now();
    for pending in &batch {
        stats.record_queue(started - pending.enqueued);
    }
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
            for (pending, outputs) in batch.into_iter().zip(outputs) {
                let _ = pending.reply.send(Ok(outputs));
            }
        }
        Ok(_) => answer_all(
            batch,
            InferenceError::Internal("runner returned the wrong number of results".into()),
        ),
        Err(err) => answer_all(batch, err),
    }
}

fn answer_all(batch: Vec<Pending>, err: InferenceError) {
    for pending in batch {
        let _ = pending.reply.send(Err(err.clone()));
    }
}

/// The scheduler thread's state.
struct Queue {
    policy: BatchingPolicy,
    max_batch_size: usize,
    levels: Vec<VecDeque<Pending>>,
    instances: Vec<mpsc::Sender<Vec<Pending>>>,
    free: Vec<usize>,
    stats: Arc<VersionStats>,
    closing: bool,
}

impl Queue {
    fn new(
        policy: BatchingPolicy,
        max_batch_size: usize,
        instances: Vec<mpsc::Sender<Vec<Pending>>>,
        stats: Arc<VersionStats>,
    ) -> Queue {
        let levels = (0..policy.priority_levels.max(1))
            .map(|_| VecDeque::new())
            .collect();
        let free = (0..instances.len()).rev().collect();
        Queue {
            policy,
            max_batch_size,
            levels,
            instances,
            free,
            stats,
            closing: false,
        }
    }

    fn run(mut self, events: mpsc::Receiver<Event>) {
        let mut wake: Option<Instant> = None;
        loop {
            let event = match wake {
                Some(at) => match events.recv_timeout(at.saturating_duration_since(Instant::now()))
                {
                    Ok(event) => Some(event),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(Event::Close),
                },
                None => Some(events.recv().unwrap_or(Event::Close)),
            };
            if let Some(event) = event {
                self.apply(event);
                while let Ok(more) = events.try_recv() {
                    self.apply(more);
                }
            }
            self.expire(Instant::now());
            wake = self.dispatch(Instant::now());
            if self.closing && self.is_empty() && self.free.len() == self.instances.len() {
                return; // dropping `instances` ends the instance threads
            }
        }
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Request(pending) => {
                let level = pending.level.min(self.levels.len() - 1);
                self.levels[level].push_back(pending);
            }
            Event::InstanceFree(id) => self.free.push(id),
            Event::Close => self.closing = true,
        }
    }

    fn is_empty(&self) -> bool {
        self.levels.iter().all(VecDeque::is_empty)
    }

    fn leave_queue(&self) {
        self.stats.queue_depth.fetch_sub(1, Ordering::AcqRel);
    }

    /// Answers requests whose queue timeout passed and drops those whose
    /// caller went away, before they cost an execution.
    fn expire(&mut self, now: Instant) {
        for level in 0..self.levels.len() {
            let mut i = 0;
            while i < self.levels[level].len() {
                let p = &self.levels[level][i];
                let expired = p.deadline.is_some_and(|d| d <= now);
                if !(expired || p.reply.is_closed()) {
                    i += 1;
                    continue;
                }
                if let Some(p) = self.levels[level].remove(i) {
                    self.leave_queue();
                    if expired {
                        let _ = p.reply.send(Err(InferenceError::Timeout));
                    }
                }
            }
        }
    }

    /// Sends ready batches to free instances. Returns when to wake up next.
    fn dispatch(&mut self, now: Instant) -> Option<Instant> {
        while let Some(&instance) = self.free.last() {
            let (count, rows, grows) = self.candidate();
            if count == 0 {
                break;
            }
            let oldest = self.front().map(|p| p.enqueued).unwrap_or(now);
            let delay = self.policy.max_queue_delay;
            let ready = self.max_batch_size == 0
                || delay.is_zero()
                || rows >= self.max_batch_size
                || self.policy.preferred_batch_sizes.contains(&rows)
                || !grows
                || self.closing
                || oldest + delay <= now;
            if !ready {
                return Some(
                    self.next_deadline()
                        .map_or(oldest + delay, |d| d.min(oldest + delay)),
                );
            }
            let batch = self.take(count);
            self.free.pop();
            if let Err(mpsc::SendError(batch)) = self.instances[instance].send(batch) {
                answer_all(
                    batch,
                    InferenceError::Internal("model instance thread stopped".into()),
                );
            }
        }
        self.next_deadline()
    }

    fn front(&self) -> Option<&Pending> {
        self.levels.iter().find_map(VecDeque::front)
    }

    /// How many queued requests (in priority, then arrival order) make the
    /// next batch, its rows, and whether it could still grow.
    fn candidate(&self) -> (usize, usize, bool) {
        let Some(first) = self.front() else {
            return (0, 0, false);
        };
        if self.max_batch_size == 0 {
            return (1, first.inputs.rows, false);
        }
        let (mut count, mut rows) = (0, 0);
        for pending in self.levels.iter().flatten() {
            if rows + pending.inputs.rows > self.max_batch_size
                || !first.inputs.batches_with(&pending.inputs)
            {
                return (count, rows, false);
            }
            count += 1;
            rows += pending.inputs.rows;
        }
        (count, rows, rows < self.max_batch_size)
    }

    fn take(&mut self, mut count: usize) -> Vec<Pending> {
        let mut batch = Vec::with_capacity(count);
        for level in &mut self.levels {
            while count > 0 {
                let Some(pending) = level.pop_front() else {
                    break;
                };
                count -= 1;
                self.stats.queue_depth.fetch_sub(1, Ordering::AcqRel);
                batch.push(pending);
            }
        }
        batch
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.levels
            .iter()
            .flatten()
            .filter_map(|p| p.deadline)
            .min()
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
