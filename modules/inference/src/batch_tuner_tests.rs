//! The tuner on synthetic measurements, and the batcher using it with a fake
//! runner whose reported batch time grows faster than linearly above 8 rows.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::error::Result;
use crate::model_config::BatchingPolicy;
use crate::scheduler::{ModelRunner, Scheduler};
use crate::stats::{BatchTimings, VersionStats};
use crate::tensor::{InputTensor, OutputTensor, RequestInputs};
use mlserve_common::DataType;

/// MiniLM on a CPU, in shape: a fixed cost per batch, then a cost per row
/// that rises with every row above 8. Per row: 8 rows 1.25 ms, 16 rows
/// 1.93 ms, 4 rows 1.5 ms, 32 rows 3.46 ms.
fn minilm_like(rows: usize) -> Duration {
    let per_row_us = if rows <= 8 {
        1000.0
    } else {
        1000.0 * (1.0 + 0.1 * (rows - 8) as f64)
    };
    Duration::from_micros(2000 + (rows as f64 * per_row_us) as u64)
}

/// ResNet-50 on a CPU, in shape: compute-bound, a fixed cost per batch and
/// a constant cost per row, so the largest batch is fastest per row.
fn resnet_like(rows: usize) -> Duration {
    Duration::from_micros(3000 + 40_000 * rows as u64)
}

/// A model whose batches are dominated by a fixed cost: the bigger the
/// batch, the cheaper each row (8 rows 3.5 ms each, 32 rows 1.6 ms).
fn overhead_bound(rows: usize) -> Duration {
    Duration::from_micros(20_000 + 1000 * rows as u64)
}

/// Runs `batches` batches at the sizes the tuner asks for (a deep queue),
/// each taking `cost(rows)`; returns the sizes it formed.
fn drive(tuner: &mut BatchTuner, batches: usize, cost: impl Fn(usize) -> Duration) -> Vec<usize> {
    (0..batches)
        .map(|_| {
            let rows = tuner.target_size();
            tuner.record(rows, cost(rows));
            rows
        })
        .collect()
}

#[test]
fn buckets_are_powers_of_two_then_the_largest_size() {
    let sizes = |max| {
        BatchTuner::new(max, TunerSettings::default())
            .estimates()
            .iter()
            .map(|b| b.size)
            .collect::<Vec<_>>()
    };
    assert_eq!(sizes(32), [1, 2, 4, 8, 16, 32]);
    assert_eq!(sizes(24), [1, 2, 4, 8, 16, 24]);
    assert_eq!(sizes(1), [1]);
}

#[test]
fn picks_the_size_with_the_cheapest_row_when_cost_per_row_rises_above_8() {
    let mut tuner = BatchTuner::new(32, TunerSettings::default());
    assert_eq!(
        tuner.preferred_size(),
        32,
        "starts where the batcher would be"
    );
    let formed = drive(&mut tuner, 400, minilm_like);
    assert_eq!(tuner.preferred_size(), 8);
    // It only ever tried the sizes on the way down and one step past 8.
    assert!(
        formed.iter().all(|s| [4, 8, 16, 32].contains(s)),
        "{formed:?}"
    );
    let settled = &formed[100..];
    let at_eight = settled.iter().filter(|&&s| s == 8).count();
    let explored = settled.len() - at_eight;
    let most = settled.len() / TunerSettings::default().explore_every as usize + 1;
    assert!(
        explored <= most,
        "{explored} exploring batches of {}",
        settled.len()
    );
    assert!(explored > 0, "it keeps re-measuring the neighbours");
}

#[test]
fn stays_at_the_largest_size_when_bigger_batches_are_cheaper_per_row() {
    let mut tuner = BatchTuner::new(32, TunerSettings::default());
    let formed = drive(&mut tuner, 300, resnet_like);
    assert_eq!(tuner.preferred_size(), 32);
    let below: Vec<_> = formed[50..].iter().filter(|&&s| s != 32).collect();
    assert!(below.iter().all(|&&s| s == 16), "{below:?}");
}

#[test]
fn a_flat_stretch_does_not_hide_a_faster_size_beyond_it() {
    // The same cost per row at 32 and 16, less at 8 and below.
    let plateau = |rows: usize| {
        let per_row_us = if rows > 8 { 1000 } else { 600 };
        Duration::from_micros(per_row_us * rows as u64)
    };
    let mut tuner = BatchTuner::new(32, TunerSettings::default());
    drive(&mut tuner, 200, plateau);
    assert_eq!(tuner.preferred_size(), 8);
}

#[test]
fn a_neighbour_within_the_margin_does_not_move_it() {
    // The same cost per row at every size: nothing is clearly faster, so it
    // keeps the batcher's own behaviour (the largest size).
    let flat = |rows: usize| Duration::from_micros(1000 * rows as u64);
    let mut tuner = BatchTuner::new(32, TunerSettings::default());
    drive(&mut tuner, 300, flat);
    assert_eq!(tuner.preferred_size(), 32);
}

#[test]
fn follows_a_change_in_which_size_is_fastest() {
    let mut tuner = BatchTuner::new(32, TunerSettings::default());
    drive(&mut tuner, 300, minilm_like);
    assert_eq!(tuner.preferred_size(), 8);
    // The machine changes (say other work leaves it): now large batches are
    // cheapest per row. Re-measuring the neighbours climbs back to 32.
    drive(&mut tuner, 2000, overhead_bound);
    assert_eq!(tuner.preferred_size(), 32);
    drive(&mut tuner, 2000, minilm_like);
    assert_eq!(tuner.preferred_size(), 8);
}

#[test]
fn measures_the_preferred_size_then_each_neighbour_without_samples() {
    let settings = TunerSettings::default();
    let warm_up = settings.min_samples as usize + 1;
    let mut tuner = BatchTuner::new(32, settings);
    let formed = drive(&mut tuner, 2 * warm_up, minilm_like);
    assert_eq!(formed[..warm_up], vec![32; warm_up][..]);
    assert_eq!(formed[warm_up..], vec![16; warm_up][..]);
    let sixteen = tuner.estimates()[4];
    assert_eq!((sixteen.size, sixteen.batches), (16, warm_up as u32));
    assert_eq!(tuner.preferred_size(), 16, "16 was measured faster than 32");
    assert_eq!(tuner.target_size(), 8, "8 has no samples yet");
}

#[test]
fn small_batches_from_a_shallow_queue_do_not_move_an_unmeasured_preference() {
    let mut tuner = BatchTuner::new(32, TunerSettings::default());
    for _ in 0..50 {
        tuner.record(3, minilm_like(3));
    }
    assert_eq!(tuner.preferred_size(), 32);
    assert_eq!(
        tuner.target_size(),
        32,
        "no cap below what the batcher does"
    );
    assert_eq!(
        tuner.estimates()[1].batches,
        50,
        "3 rows count for bucket 2"
    );
}

#[test]
fn a_size_first_batch_is_left_out_and_empty_timings_are_ignored() {
    let mut tuner = BatchTuner::new(32, TunerSettings::default());
    tuner.record(32, Duration::ZERO);
    assert_eq!(tuner.estimates()[5].batches, 0);
    // A first batch at 32 that took a whole second (buffers warming) does
    // not count against 32.
    tuner.record(32, Duration::from_secs(1));
    for _ in 0..3 {
        tuner.record(32, Duration::from_millis(32));
    }
    let estimate = tuner.estimates()[5];
    assert!(
        (estimate.seconds_per_row - 0.001).abs() < 1e-9,
        "{estimate:?}"
    );
}

/// Answers each request with its own input; reports a batch time of
/// `minilm_like(rows)` without sleeping. The first batch waits for `gate`,
/// so the test can fill the queue before any other batch forms.
struct SuperlinearRunner {
    sizes: Arc<Mutex<Vec<usize>>>,
    gate: Option<mpsc::Receiver<()>>,
}

impl ModelRunner for SuperlinearRunner {
    fn run(&mut self, batch: &[&RequestInputs]) -> Result<(Vec<Vec<OutputTensor>>, BatchTimings)> {
        if let Some(gate) = self.gate.take() {
            let _ = gate.recv();
        }
        let rows: usize = batch.iter().map(|r| r.rows).sum();
        self.sizes.lock().unwrap().push(rows);
        let outputs = batch
            .iter()
            .map(|r| {
                vec![OutputTensor {
                    name: "y".into(),
                    datatype: DataType::Int32,
                    shape: r.tensors[0].shape.clone(),
                    data: r.tensors[0].data.clone(),
                }]
            })
            .collect();
        let timings = BatchTimings {
            infer: minilm_like(rows),
            ..BatchTimings::default()
        };
        Ok((outputs, timings))
    }
}

fn policy(preferred: Vec<usize>, batch_tuning: bool) -> BatchingPolicy {
    BatchingPolicy {
        preferred_batch_sizes: preferred,
        max_queue_delay: Duration::ZERO,
        max_queue_size: 10_000,
        default_timeout: None,
        allow_timeout_override: false,
        priority_levels: 0,
        default_priority_level: 0,
        batch_tuning,
    }
}

/// Queues `requests` one-row requests behind a held first batch, lets them
/// run on one instance with a batch limit of 32, and returns the batch sizes
/// formed and the preferred-size gauge.
async fn run_deep_queue(policy: BatchingPolicy, requests: i32) -> (Vec<usize>, usize) {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let stats = Arc::new(VersionStats::new("superlinear", "1"));
    let (open, gate) = mpsc::channel();
    let runner = SuperlinearRunner {
        sizes: sizes.clone(),
        gate: Some(gate),
    };
    let runners: Vec<Box<dyn ModelRunner>> = vec![Box::new(runner)];
    let scheduler = Scheduler::start("superlinear", policy, 32, runners, stats.clone()).unwrap();
    let tickets: Vec<_> = (0..requests)
        .map(|id| {
            let inputs = RequestInputs {
                rows: 1,
                tensors: vec![InputTensor {
                    shape: vec![1, 1],
                    data: Bytes::copy_from_slice(&id.to_le_bytes()),
                }],
            };
            (id, scheduler.enqueue(inputs, 0, None).unwrap())
        })
        .collect();
    open.send(()).unwrap();
    for (id, ticket) in tickets {
        let outputs = ticket.wait().await.unwrap();
        assert_eq!(outputs[0].data.as_ref(), id.to_le_bytes(), "request {id}");
    }
    let formed = sizes.lock().unwrap().clone();
    (formed, stats.preferred_batch_size.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_queue_runs_in_batches_of_the_learned_size() {
    let (formed, preferred) = run_deep_queue(policy(vec![], true), 1200).await;
    assert_eq!(preferred, 8);
    assert_eq!(formed.iter().sum::<usize>(), 1200);
    // The first batch was formed before the queue filled; the warm-up
    // measures 32, 16, 8 and 4; after it the queue is drained in 8s, but for
    // one re-measuring batch in 32 and the last, partial batch.
    let after_warm_up = &formed[20..formed.len() - 1];
    let eights = after_warm_up.iter().filter(|&&s| s == 8).count();
    assert!(eights * 10 >= after_warm_up.len() * 9, "{formed:?}");
    assert!(
        after_warm_up.iter().all(|s| [4, 8, 16].contains(s)),
        "{formed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_preferred_sizes_and_the_opt_out_keep_the_largest_batches() {
    for policy in [policy(vec![32], true), policy(vec![], false)] {
        let (formed, preferred) = run_deep_queue(policy, 321).await;
        assert_eq!(preferred, 0, "no size is learned");
        assert_eq!(formed.iter().sum::<usize>(), 321);
        let full = &formed[1..formed.len() - 1];
        assert!(full.iter().all(|&s| s == 32), "{formed:?}");
    }
}
