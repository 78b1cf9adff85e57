//! The inference statistics as metrics: a collector that encodes them at
//! scrape time into the process's registry.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mlserve_common::metrics::{
    bucket_family, counter_family, gauge_family, histogram_family, Collector, DescriptorEncoder,
    Histogram, Label,
};

use crate::demand::Demand;
use crate::stats::{Latency, StatsRegistry, VersionStats};

type Getter = fn(&VersionStats) -> u64;

const COUNTERS: [(&str, &str, Getter); 9] = [
    (
        "mlserve_inference_request_success_total",
        "Successful inference requests.",
        |s| s.success.count(),
    ),
    (
        "mlserve_inference_count_total",
        "Rows inferred (a batch-N request counts N).",
        |s| s.inference_count.load(Ordering::Relaxed),
    ),
    (
        "mlserve_inference_exec_count_total",
        "Batches executed.",
        |s| s.execution_count.load(Ordering::Relaxed),
    ),
    (
        "mlserve_inference_request_duration_us_total",
        "Cumulative end-to-end request time in the server (us).",
        |s| (s.success.ns() + s.fail.ns()) / 1000,
    ),
    (
        "mlserve_inference_queue_duration_us_total",
        "Cumulative time requests waited in the queue (us).",
        |s| s.queue.ns() / 1000,
    ),
    (
        "mlserve_inference_compute_input_duration_us_total",
        "Cumulative input assembly time (us).",
        |s| s.compute_input.ns() / 1000,
    ),
    (
        "mlserve_inference_compute_infer_duration_us_total",
        "Cumulative ONNX Runtime time (us).",
        |s| s.compute_infer.ns() / 1000,
    ),
    (
        "mlserve_inference_compute_output_duration_us_total",
        "Cumulative output time (us).",
        |s| s.compute_output.ns() / 1000,
    ),
    (
        "mlserve_inference_request_failure_count_total",
        "All failed inference requests.",
        |s| s.fail.count(),
    ),
];

/// The `model` and `version` labels of a version.
fn labels(s: &VersionStats) -> [(&'static str, Label<'_>); 2] {
    [("model", Label(&s.model)), ("version", Label(&s.version))]
}

type LatencyOf = fn(&Latency) -> &Histogram;

const HISTOGRAMS: [(&str, &str, LatencyOf); 3] = [
    (
        "mlserve_inference_request_duration_seconds",
        "Successful requests' time in the server, arrival to answer (seconds).",
        |l| &l.request,
    ),
    (
        "mlserve_inference_queue_duration_seconds",
        "Requests' wait in the queue (seconds).",
        |l| &l.queue,
    ),
    (
        "mlserve_inference_compute_duration_seconds",
        "Executed batches' compute time: input, ONNX Runtime, output (seconds).",
        |l| &l.compute,
    ),
];

/// Encodes every model version's statistics at scrape time.
#[derive(Debug)]
pub struct InferenceCollector {
    stats: Arc<StatsRegistry>,
    demand: Option<Arc<Demand>>,
}

impl InferenceCollector {
    /// A collector over `stats`.
    pub fn new(stats: Arc<StatsRegistry>) -> Self {
        InferenceCollector {
            stats,
            demand: None,
        }
    }

    /// Also encodes `demand`'s desired replicas per model.
    pub fn with_demand(mut self, demand: Arc<Demand>) -> Self {
        self.demand = Some(demand);
        self
    }
}

impl Collector for InferenceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let all = self.stats.all();
        for (name, help, get) in COUNTERS {
            counter_family(
                &mut encoder,
                name,
                help,
                all.iter().map(|s| (labels(s), get(s))),
            )?;
        }
        let failures: Vec<_> = all
            .iter()
            .flat_map(|s| {
                s.failures()
                    .into_iter()
                    .map(move |(reason, n)| (s, reason, n))
            })
            .collect();
        counter_family(
            &mut encoder,
            "mlserve_inference_request_failure_total",
            "Failed inference requests by reason.",
            failures.iter().map(|(s, reason, n)| {
                let [model, version] = labels(s);
                ([model, version, ("reason", Label(reason))], *n)
            }),
        )?;
        gauge_family(
            &mut encoder,
            "mlserve_inference_queue_depth",
            "Requests waiting in the queue (up on enqueue, down when execution starts).",
            all.iter()
                .map(|s| (labels(s), s.queue_depth.load(Ordering::Relaxed) as i64)),
        )?;
        gauge_family(
            &mut encoder,
            "mlserve_inference_preferred_batch_size",
            "The batch size the dynamic batcher learned gives the best throughput (versions that learn it).",
            all.iter().filter_map(|s| {
                let size = s.preferred_batch_size.load(Ordering::Relaxed);
                (size > 0).then(|| (labels(s), size as i64))
            }),
        )?;
        gauge_family(
            &mut encoder,
            "mlserve_inference_predicted_wait_seconds",
            "Admission's prediction for the latest arrival: seconds from arrival to completion (versions that measured a batch).",
            all.iter().filter_map(|s| {
                s.predicted_wait()
                    .map(|wait| (labels(s), wait.as_secs_f64()))
            }),
        )?;
        bucket_family(
            &mut encoder,
            "mlserve_inference_batch_size",
            "Rows per executed batch.",
            all.iter().map(|s| {
                let (buckets, sum) = s.batch_histogram();
                (labels(s), buckets, sum as f64)
            }),
        )?;
        for (name, help, get) in HISTOGRAMS {
            histogram_family(
                &mut encoder,
                name,
                help,
                all.iter().map(|s| (labels(s), get(&s.latency))),
            )?;
        }
        if let Some(demand) = &self.demand {
            let desired = demand.desired();
            gauge_family(
                &mut encoder,
                "mlserve_inference_desired_replicas",
                "Inference processes this process's load of the model needs: arrivals per second times the measured instance time per request, over the instances, plus the backlog drained within 30 s (Little's law). Summed over the pods, the model's need.",
                desired
                    .iter()
                    .map(|(model, n)| ([("model", Label(model))], *n)),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::BatchTimings;
    use mlserve_common::metrics::{encode, Registry};
    use std::time::Duration;

    #[test]
    fn encodes_counters_gauge_and_histograms_with_escaped_labels() {
        let stats = Arc::new(StatsRegistry::default());
        let s = stats.get("tab\"ular", "1");
        s.record_success(Duration::from_micros(250));
        s.record_failure("rejected", Duration::from_micros(1));
        s.record_queue(Duration::from_micros(30));
        s.record_execution(3, 2, &BatchTimings::default());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(InferenceCollector::new(stats)));
        let text = encode(&registry);
        let l = "model=\"tab\\\"ular\",version=\"1\"";
        for line in [
            format!("mlserve_inference_request_success_total{{{l}}} 1"),
            format!("mlserve_inference_request_failure_total{{{l},reason=\"rejected\"}} 1"),
            format!("mlserve_inference_queue_depth{{{l}}} 0"),
            format!("mlserve_inference_batch_size_bucket{{le=\"2.0\",{l}}} 0"),
            format!("mlserve_inference_batch_size_bucket{{le=\"4.0\",{l}}} 1"),
            format!("mlserve_inference_batch_size_count{{{l}}} 1"),
            format!("mlserve_inference_count_total{{{l}}} 3"),
            format!("mlserve_inference_request_duration_seconds_bucket{{le=\"0.0004\",{l}}} 1"),
            format!("mlserve_inference_request_duration_seconds_bucket{{le=\"0.0002\",{l}}} 0"),
            format!("mlserve_inference_queue_duration_seconds_count{{{l}}} 1"),
            format!("mlserve_inference_compute_duration_seconds_count{{{l}}} 1"),
        ] {
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }
}
