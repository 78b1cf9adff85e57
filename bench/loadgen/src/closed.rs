//! Closed-loop load (perf_analyzer's concurrency mode): `concurrency` tasks
//! each send the next request as soon as the previous answer arrives, for a
//! warm-up and then a measured window. Throughput counts the answers that
//! arrive inside the window; requests still in flight at the end are dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::progress::{Progress, REFRESH};
use crate::stats::Recorder;
use crate::target::{Client, Outcome, Target};

/// Pause after a transport failure, so a refused connection does not spin.
const TRANSPORT_BACKOFF: Duration = Duration::from_millis(10);

/// The shape of a closed-loop run.
#[derive(Debug, Clone, Copy)]
pub struct ClosedPlan {
    /// Requests kept in flight.
    pub concurrency: usize,
    /// Unmeasured time first.
    pub warmup: Duration,
    /// Measured window.
    pub duration: Duration,
}

#[derive(Default)]
struct Counters {
    done: AtomicU64,
    failed: AtomicU64,
}

/// Runs the plan against `target`; returns the merged measurements of the
/// window.
pub async fn run(
    target: &Target,
    plan: ClosedPlan,
    mut progress: Progress,
    items: u64,
) -> Recorder {
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let mut workers = JoinSet::new();
    for i in 0..plan.concurrency.max(1) {
        let client = target.client();
        workers.spawn(worker(client, i, measure_from, end, counters.clone()));
    }
    let ticker = {
        let counters = counters.clone();
        tokio::spawn(async move {
            loop {
                progress.draw(
                    counters.done.load(Ordering::Relaxed),
                    counters.failed.load(Ordering::Relaxed),
                    items,
                );
                if Instant::now() >= end {
                    break;
                }
                tokio::time::sleep(REFRESH).await;
            }
            progress.finish();
        })
    };
    let mut total = Recorder::default();
    while let Some(joined) = workers.join_next().await {
        if let Ok(recorder) = joined {
            total.merge(&recorder);
        }
    }
    let _ = ticker.await;
    total
}

async fn worker(
    mut client: Client,
    first: usize,
    measure_from: Instant,
    end: Instant,
    counters: Arc<Counters>,
) -> Recorder {
    let mut recorder = Recorder::default();
    let mut n = first;
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let Ok(outcome) = tokio::time::timeout_at(end, client.infer(n)).await else {
            break;
        };
        n += 1;
        let done = Instant::now();
        counters.done.fetch_add(1, Ordering::Relaxed);
        let measured = done >= measure_from;
        match outcome {
            Outcome::Ok if measured => recorder.success(done - sent),
            Outcome::Ok => {}
            Outcome::Failed { label, detail, .. } => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                if measured {
                    recorder.failure(&label, &detail);
                }
                if label == "transport" {
                    tokio::time::sleep(TRANSPORT_BACKOFF).await;
                }
            }
        }
    }
    recorder
}
