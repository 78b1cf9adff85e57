//! Per model-version statistics: the numbers behind `/stats`,
//! `ModelStatistics` and the Prometheus metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mlserve_common::metrics::{latency_histogram, Histogram};
use mlserve_proto::pb;

/// Upper bounds of the batch-size histogram buckets.
pub const BATCH_BUCKETS: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// Where one batch's time went.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchTimings {
    /// Assembling the batch's input tensors.
    pub input: Duration,
    /// ONNX Runtime's run.
    pub infer: Duration,
    /// Splitting outputs back to the callers.
    pub output: Duration,
}

/// A count and a cumulative duration.
#[derive(Debug, Default)]
pub struct DurationStat {
    count: AtomicU64,
    ns: AtomicU64,
}

impl DurationStat {
    /// Adds `n` events that took `each` each.
    pub fn add(&self, n: u64, each: Duration) {
        self.count.fetch_add(n, Ordering::Relaxed);
        self.ns
            .fetch_add(n.saturating_mul(each.as_nanos() as u64), Ordering::Relaxed);
    }
    /// Events so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    /// Cumulative nanoseconds.
    pub fn ns(&self) -> u64 {
        self.ns.load(Ordering::Relaxed)
    }
    fn to_pb(&self) -> Option<pb::StatisticDuration> {
        Some(pb::StatisticDuration {
            count: self.count(),
            ns: self.ns(),
        })
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct BatchAggregate {
    count: u64,
    input_ns: u64,
    infer_ns: u64,
    output_ns: u64,
}

/// Statistics of one model version. Kept across reloads of the same version.
#[derive(Debug)]
pub struct VersionStats {
    /// Model name.
    pub model: String,
    /// Version label.
    pub version: String,
    /// Requests waiting in the queue: up on enqueue, down when execution starts.
    pub queue_depth: AtomicUsize,
    /// Successful requests and their end-to-end time in the server.
    pub success: DurationStat,
    /// Failed requests and their time.
    pub fail: DurationStat,
    /// Time requests waited in the queue.
    pub queue: DurationStat,
    /// Input assembly time, per request.
    pub compute_input: DurationStat,
    /// ONNX Runtime time, per request.
    pub compute_infer: DurationStat,
    /// Output split time, per request.
    pub compute_output: DurationStat,
    /// Rows inferred (a batch-4 request counts 4).
    pub inference_count: AtomicU64,
    /// Batches executed.
    pub execution_count: AtomicU64,
    /// Requests offered to the queue, refused ones included (the arrivals).
    pub arrivals: AtomicU64,
    /// Instance time spent executing batches (each batch's wall time once),
    /// nanoseconds.
    pub busy_ns: AtomicU64,
    /// Model instances (parallel executors) of the version now.
    pub instances: AtomicUsize,
    /// The batch size the batcher learned is fastest; 0 when it does not learn.
    pub preferred_batch_size: AtomicUsize,
    /// The latest arrival's predicted time to completion (admission's
    /// prediction), nanoseconds; 0 before one was made.
    predicted_wait_ns: AtomicU64,
    last_inference_ms: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    batches: Mutex<BTreeMap<usize, BatchAggregate>>,
    batch_histogram: [AtomicU64; BATCH_BUCKETS.len() + 1],
    batch_rows_sum: AtomicU64,
    /// Latency histograms (seconds) of this version.
    pub latency: Latency,
}

/// A version's latency histograms, with the shared bucket layout.
#[derive(Debug)]
pub struct Latency {
    /// A successful request's time in the server, arrival to answer.
    pub request: Histogram,
    /// A request's wait in the queue.
    pub queue: Histogram,
    /// An executed batch's compute time (input, ONNX Runtime, output).
    pub compute: Histogram,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            request: latency_histogram(),
            queue: latency_histogram(),
            compute: latency_histogram(),
        }
    }
}

impl VersionStats {
    /// Fresh statistics for a model version.
    pub fn new(model: &str, version: &str) -> Self {
        VersionStats {
            model: model.to_string(),
            version: version.to_string(),
            queue_depth: AtomicUsize::new(0),
            success: DurationStat::default(),
            fail: DurationStat::default(),
            queue: DurationStat::default(),
            compute_input: DurationStat::default(),
            compute_infer: DurationStat::default(),
            compute_output: DurationStat::default(),
            inference_count: AtomicU64::new(0),
            execution_count: AtomicU64::new(0),
            arrivals: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            instances: AtomicUsize::new(0),
            preferred_batch_size: AtomicUsize::new(0),
            predicted_wait_ns: AtomicU64::new(0),
            last_inference_ms: AtomicU64::new(0),
            failures: Mutex::new(BTreeMap::new()),
            batches: Mutex::new(BTreeMap::new()),
            batch_histogram: Default::default(),
            batch_rows_sum: AtomicU64::new(0),
            latency: Latency::default(),
        }
    }

    /// One request's time in the queue.
    pub fn record_queue(&self, waited: Duration) {
        self.queue.add(1, waited);
        self.latency.queue.observe(waited.as_secs_f64());
    }

    /// One executed batch of `rows` rows from `requests` requests.
    pub fn record_execution(&self, rows: usize, requests: usize, t: &BatchTimings) {
        let n = requests as u64;
        self.compute_input.add(n, t.input);
        self.compute_infer.add(n, t.infer);
        self.compute_output.add(n, t.output);
        self.latency
            .compute
            .observe((t.input + t.infer + t.output).as_secs_f64());
        self.inference_count
            .fetch_add(rows as u64, Ordering::Relaxed);
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        let busy = (t.input + t.infer + t.output).as_nanos();
        self.busy_ns
            .fetch_add(u64::try_from(busy).unwrap_or(u64::MAX), Ordering::Relaxed);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_inference_ms.store(now_ms, Ordering::Relaxed);
        let bucket = BATCH_BUCKETS
            .iter()
            .position(|&b| rows <= b)
            .unwrap_or(BATCH_BUCKETS.len());
        self.batch_histogram[bucket].fetch_add(1, Ordering::Relaxed);
        self.batch_rows_sum
            .fetch_add(rows as u64, Ordering::Relaxed);
        if let Ok(mut batches) = self.batches.lock() {
            let agg = batches.entry(rows).or_default();
            agg.count += 1;
            agg.input_ns += t.input.as_nanos() as u64;
            agg.infer_ns += t.infer.as_nanos() as u64;
            agg.output_ns += t.output.as_nanos() as u64;
        }
    }

    /// A request that succeeded after `took` in the server.
    pub fn record_success(&self, took: Duration) {
        self.success.add(1, took);
        self.latency.request.observe(took.as_secs_f64());
    }

    /// Admission predicted that the latest arrival would finish `wait`
    /// after it came.
    pub fn set_predicted_wait(&self, wait: Duration) {
        let ns = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.predicted_wait_ns.store(ns.max(1), Ordering::Relaxed);
    }

    /// The latest arrival's predicted time to completion, if one was made.
    pub fn predicted_wait(&self) -> Option<Duration> {
        match self.predicted_wait_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// A request that failed for `reason` after `took`.
    pub fn record_failure(&self, reason: &'static str, took: Duration) {
        self.fail.add(1, took);
        if let Ok(mut failures) = self.failures.lock() {
            *failures.entry(reason).or_default() += 1;
        }
    }

    /// Failure counts by reason.
    pub fn failures(&self) -> Vec<(&'static str, u64)> {
        self.failures
            .lock()
            .map(|f| f.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }

    /// Batch-size histogram: (upper bound, `f64::MAX` for +Inf; batches in
    /// that bucket alone) per bucket, then the sum of rows.
    pub fn batch_histogram(&self) -> (Vec<(f64, u64)>, u64) {
        let buckets = self
            .batch_histogram
            .iter()
            .enumerate()
            .map(|(i, counter)| {
                let bound = BATCH_BUCKETS.get(i).map_or(f64::MAX, |&b| b as f64);
                (bound, counter.load(Ordering::Relaxed))
            })
            .collect();
        (buckets, self.batch_rows_sum.load(Ordering::Relaxed))
    }

    /// The protocol's `ModelStatistics`.
    pub fn to_pb(&self) -> pb::ModelStatistics {
        let batch_stats = self
            .batches
            .lock()
            .map(|b| {
                b.iter()
                    .map(|(size, agg)| pb::InferBatchStatistics {
                        batch_size: *size as u64,
                        compute_input: Some(pb::StatisticDuration {
                            count: agg.count,
                            ns: agg.input_ns,
                        }),
                        compute_infer: Some(pb::StatisticDuration {
                            count: agg.count,
                            ns: agg.infer_ns,
                        }),
                        compute_output: Some(pb::StatisticDuration {
                            count: agg.count,
                            ns: agg.output_ns,
                        }),
                    })
                    .collect()
            })
            .unwrap_or_default();
        pb::ModelStatistics {
            name: self.model.clone(),
            version: self.version.clone(),
            last_inference: self.last_inference_ms.load(Ordering::Relaxed),
            inference_count: self.inference_count.load(Ordering::Relaxed),
            execution_count: self.execution_count.load(Ordering::Relaxed),
            inference_stats: Some(pb::InferStatistics {
                success: self.success.to_pb(),
                fail: self.fail.to_pb(),
                queue: self.queue.to_pb(),
                compute_input: self.compute_input.to_pb(),
                compute_infer: self.compute_infer.to_pb(),
                compute_output: self.compute_output.to_pb(),
                cache_hit: Some(pb::StatisticDuration::default()),
                cache_miss: Some(pb::StatisticDuration::default()),
            }),
            batch_stats,
            queue_depth: self.queue_depth.load(Ordering::Relaxed) as u64,
            instances: u32::try_from(self.instances.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
        }
    }
}

/// Statistics of every model version ever served by this process.
#[derive(Debug, Default)]
pub struct StatsRegistry {
    versions: Mutex<BTreeMap<(String, String), Arc<VersionStats>>>,
}

impl StatsRegistry {
    /// The statistics of a version, created on first use.
    pub fn get(&self, model: &str, version: &str) -> Arc<VersionStats> {
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        versions
            .entry((model.to_string(), version.to_string()))
            .or_insert_with(|| Arc::new(VersionStats::new(model, version)))
            .clone()
    }

    /// Every version's statistics, sorted by model then version.
    pub fn all(&self) -> Vec<Arc<VersionStats>> {
        let versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        versions.values().cloned().collect()
    }
}
