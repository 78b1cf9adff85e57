//! The request log: a sample of the inference requests the gateway served,
//! written to the features role's offline store (`LogServed`) as rows of the
//! feature vector the model received, its prediction and the version that
//! answered. The monitoring role compares these rows with a reference to
//! find drift.
//!
//! The answer never waits for the log: a sampled request's rows go into a
//! bounded queue with `try_send`, and when the queue is full (the store is
//! slow or down) the sample is dropped and counted. One task per gateway
//! process writes the queue in batches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use mlserve_common::config::RequestLogConfig;
use mlserve_common::ShutdownSignal;
use mlserve_proto::features::{FeatureService, FeaturesClient, LogServedRequest, ServedRow};
use mlserve_proto::{pb, CallContext};
use tokio::sync::mpsc;

use crate::keys::now_micros;
use crate::ratelimit::{Bucket, Limit};
use crate::tensor_rows;

/// Longest a batch write may take before its rows count as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened to logged rows, for `mlserve_gateway_request_log_rows_total`.
#[derive(Debug, Default)]
pub struct LogCounts {
    /// Rows queued for writing.
    pub queued: AtomicU64,
    /// Rows dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Rows the offline store accepted.
    pub written: AtomicU64,
    /// Rows whose write failed (the store refused them or did not answer).
    pub failed: AtomicU64,
}

impl LogCounts {
    /// `(outcome, rows)` pairs, in a fixed order.
    pub fn snapshot(&self) -> [(&'static str, u64); 4] {
        [
            ("queued", self.queued.load(Ordering::Relaxed)),
            ("dropped", self.dropped.load(Ordering::Relaxed)),
            ("written", self.written.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
        ]
    }
}

/// The rows-per-second bound: a token bucket of the gateway's rate limits
/// (one second's rows as its burst), taking several rows at once.
#[derive(Debug)]
struct Budget {
    /// `None`: no bound.
    limit: Option<Limit>,
    bucket: Bucket,
}

impl Budget {
    fn new(rows_per_second: f64) -> Budget {
        let limit = (rows_per_second > 0.0).then(|| Limit::new(rows_per_second, rows_per_second));
        Budget {
            limit,
            bucket: Bucket::full(limit.unwrap_or(Limit::new(0.0, 0.0))),
        }
    }

    /// Takes up to `rows` tokens; how many it got.
    fn take(&mut self, rows: usize) -> usize {
        let Some(limit) = self.limit else {
            return rows;
        };
        self.bucket.refill(limit, Instant::now());
        let granted = (self.bucket.tokens.floor() as usize).min(rows);
        self.bucket.tokens -= granted as f64;
        granted
    }

    fn give_back(&mut self, rows: usize) {
        self.bucket.tokens += rows as f64;
    }
}

/// The sampler in front of the queue.
pub struct RequestLog {
    settings: RequestLogConfig,
    budget: Mutex<Budget>,
    queue: mpsc::Sender<ServedRow>,
    counts: Arc<LogCounts>,
}

impl RequestLog {
    /// Starts the log's writer, which sends batches to `features` until
    /// `signal` (then writes what is queued, once). Refuses a sample rate
    /// outside 0..=1; `None` when the rate is 0 (the log is off).
    pub fn start(
        settings: &RequestLogConfig,
        features: FeaturesClient,
        counts: Arc<LogCounts>,
        signal: ShutdownSignal,
    ) -> Result<Option<Arc<RequestLog>>, String> {
        let Some((log, rx)) = RequestLog::new(settings, counts.clone())? else {
            return Ok(None);
        };
        tokio::spawn(write_batches(
            rx,
            features,
            settings.batch_rows.max(1),
            settings.flush_interval.max(Duration::from_millis(10)),
            counts,
            signal,
        ));
        Ok(Some(Arc::new(log)))
    }

    /// The sampler and the receiving end of its queue, unstarted; `None`
    /// when the sample rate is 0.
    fn new(
        settings: &RequestLogConfig,
        counts: Arc<LogCounts>,
    ) -> Result<Option<(RequestLog, mpsc::Receiver<ServedRow>)>, String> {
        if !(0.0..=1.0).contains(&settings.sample_rate) {
            return Err(format!(
                "gateway.request_log.sample_rate must be between 0 and 1, not {}",
                settings.sample_rate
            ));
        }
        if settings.sample_rate == 0.0 {
            return Ok(None);
        }
        let (queue, rx) = mpsc::channel(settings.queue_rows.max(1));
        let log = RequestLog {
            settings: settings.clone(),
            budget: Mutex::new(Budget::new(settings.max_rows_per_second)),
            queue,
            counts,
        };
        Ok(Some((log, rx)))
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers one answered request to the log: most calls return after one
    /// random draw; a sampled one queues its rows or drops them.
    pub fn offer(
        &self,
        request: &pb::ModelInferRequest,
        response: &pb::ModelInferResponse,
        version: &str,
    ) {
        if version.is_empty() || fastrand::f64() >= self.settings.sample_rate {
            return;
        }
        // Tokens first, so a request past the bound costs no decoding.
        let wanted = self.settings.max_rows_per_request.max(1);
        let granted = self.budget().take(wanted);
        if granted == 0 {
            return;
        }
        let mut rows = served_rows(request, response, version, &self.settings);
        if rows.len() < granted {
            self.budget().give_back(granted - rows.len());
        }
        rows.truncate(granted);
        for row in rows {
            match self.queue.try_send(row) {
                Ok(()) => self.counts.queued.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.counts.dropped.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
}

/// The rows of one answered request: per batch row, every numeric input's
/// values (named `INPUT` for one value, `INPUT[j]` for column j) and every
/// numeric output's. Inputs and outputs wider than the bound, or whose batch
/// differs from the first input's, are left out.
pub fn served_rows(
    request: &pb::ModelInferRequest,
    response: &pb::ModelInferResponse,
    version: &str,
    settings: &RequestLogConfig,
) -> Vec<ServedRow> {
    let inputs = request.inputs.iter().enumerate().map(|(i, t)| {
        let raw = request.raw_input_contents.get(i).map(|b| &b[..]);
        (&t.name, &t.datatype, &t.shape, raw, t.contents.as_ref())
    });
    let outputs = response.outputs.iter().enumerate().map(|(i, t)| {
        let raw = response.raw_output_contents.get(i).map(|b| &b[..]);
        (&t.name, &t.datatype, &t.shape, raw, t.contents.as_ref())
    });
    let limit = settings.max_rows_per_request.max(1);
    let width = settings.max_values_per_row.max(1);
    let features = named_columns(inputs, limit, width, None);
    let batch = features.first().map(|(_, rows)| rows.len());
    let Some(batch) = batch else {
        return Vec::new();
    };
    let prediction = named_columns(outputs, limit, width, Some(batch));
    let served_ts = now_micros();
    (0..batch)
        .map(|row| ServedRow {
            model: request.model_name.clone(),
            version: version.to_string(),
            served_ts,
            features: values_of_row(&features, row),
            prediction: values_of_row(&prediction, row),
        })
        .collect()
}

type Tensor<'a> = (
    &'a String,
    &'a String,
    &'a Vec<i64>,
    Option<&'a [u8]>,
    Option<&'a pb::InferTensorContents>,
);

/// Per tensor: its name and its first `limit` rows, each at most `width`
/// values; every tensor after the first must have the first's batch (or
/// `batch` when given).
fn named_columns<'a>(
    tensors: impl Iterator<Item = Tensor<'a>>,
    limit: usize,
    width: usize,
    mut batch: Option<usize>,
) -> Vec<(String, Vec<Vec<f64>>)> {
    let mut out = Vec::new();
    for (name, datatype, shape, raw, contents) in tensors {
        let Some(values) = tensor_rows::values(datatype, raw, contents) else {
            continue;
        };
        let Some(rows) = tensor_rows::rows(shape, values) else {
            continue;
        };
        if rows.first().is_none_or(|r| r.len() > width) {
            continue;
        }
        let full_batch = rows.len();
        if *batch.get_or_insert(full_batch) != full_batch {
            continue;
        }
        out.push((name.clone(), rows.into_iter().take(limit).collect()));
    }
    out
}

fn values_of_row(columns: &[(String, Vec<Vec<f64>>)], row: usize) -> HashMap<String, f64> {
    let mut values = HashMap::new();
    for (name, rows) in columns {
        let Some(cells) = rows.get(row) else { continue };
        for (j, value) in cells.iter().enumerate() {
            if !value.is_finite() {
                continue;
            }
            let key = if cells.len() == 1 {
                name.clone()
            } else {
                format!("{name}[{j}]")
            };
            values.insert(key, *value);
        }
    }
    values
}

/// Writes the queue in batches of up to `batch` rows, each at the latest
/// `flush` after its first row arrived, until `signal`; then what is queued.
async fn write_batches(
    mut rx: mpsc::Receiver<ServedRow>,
    features: FeaturesClient,
    batch: usize,
    flush: Duration,
    counts: Arc<LogCounts>,
    signal: ShutdownSignal,
) {
    loop {
        let mut rows = Vec::with_capacity(batch);
        tokio::select! {
            got = rx.recv_many(&mut rows, batch) => if got == 0 { return },
            _ = signal.clone().wait() => break,
        }
        let until = tokio::time::Instant::now() + flush;
        while rows.len() < batch {
            let room = batch - rows.len();
            match tokio::time::timeout_at(until, rx.recv_many(&mut rows, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        write(&features, rows, &counts).await;
    }
    rx.close();
    let mut rest = Vec::new();
    while rx.recv_many(&mut rest, batch).await > 0 {
        write(&features, std::mem::take(&mut rest), &counts).await;
    }
}

async fn write(features: &FeaturesClient, rows: Vec<ServedRow>, counts: &LogCounts) {
    let n = rows.len() as u64;
    let ctx = CallContext::new().with_timeout(WRITE_TIMEOUT);
    match features.log_served(ctx, LogServedRequest { rows }).await {
        Ok(_) => counts.written.fetch_add(n, Ordering::Relaxed),
        Err(err) => {
            tracing::warn!(rows = n, error = %err, "request log: rows not written");
            counts.failed.fetch_add(n, Ordering::Relaxed)
        }
    };
}

#[cfg(test)]
#[path = "request_log_tests.rs"]
mod tests;
