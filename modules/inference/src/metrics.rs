//! Prometheus text exposition of the inference statistics.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::stats::{StatsRegistry, VersionStats};

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

fn labels(s: &VersionStats) -> String {
    format!(
        "model=\"{}\",version=\"{}\"",
        escape(&s.model),
        escape(&s.version)
    )
}

/// Escapes a Prometheus label value.
pub(crate) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every model version's metrics in the Prometheus text format.
pub fn render(registry: &StatsRegistry) -> String {
    let all = registry.all();
    let mut out = String::with_capacity(4096);
    for (name, help, get) in COUNTERS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for s in &all {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(s), get(s));
        }
    }
    let name = "mlserve_inference_request_failure_total";
    let _ = writeln!(
        out,
        "# HELP {name} Failed inference requests by reason.\n# TYPE {name} counter"
    );
    for s in &all {
        for (reason, count) in s.failures() {
            let _ = writeln!(out, "{name}{{{},reason=\"{reason}\"}} {count}", labels(s));
        }
    }
    let name = "mlserve_inference_queue_depth";
    let _ = writeln!(
        out,
        "# HELP {name} Requests waiting in the queue (up on enqueue, down when execution starts).\n# TYPE {name} gauge"
    );
    for s in &all {
        let _ = writeln!(
            out,
            "{name}{{{}}} {}",
            labels(s),
            s.queue_depth.load(Ordering::Relaxed)
        );
    }
    let name = "mlserve_inference_batch_size";
    let _ = writeln!(
        out,
        "# HELP {name} Rows per executed batch.\n# TYPE {name} histogram"
    );
    for s in &all {
        let (buckets, sum) = s.batch_histogram();
        let l = labels(s);
        for (bound, count) in &buckets {
            let le = bound.map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"{le}\"}} {count}");
        }
        let total = buckets.last().map_or(0, |b| b.1);
        let _ = writeln!(out, "{name}_sum{{{l}}} {sum}\n{name}_count{{{l}}} {total}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::BatchTimings;
    use std::time::Duration;

    #[test]
    fn renders_counters_gauge_and_histogram_with_labels() {
        let registry = StatsRegistry::default();
        let s = registry.get("tab\"ular", "1");
        s.record_success(Duration::from_micros(250));
        s.record_failure("rejected", Duration::from_micros(1));
        s.record_execution(3, 2, &BatchTimings::default());
        let text = render(&registry);
        assert!(
            text.contains(
                "mlserve_inference_request_success_total{model=\"tab\\\"ular\",version=\"1\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("mlserve_inference_request_failure_total{model=\"tab\\\"ular\",version=\"1\",reason=\"rejected\"} 1"));
        assert!(
            text.contains("mlserve_inference_queue_depth{model=\"tab\\\"ular\",version=\"1\"} 0")
        );
        assert!(text.contains(
            "mlserve_inference_batch_size_bucket{model=\"tab\\\"ular\",version=\"1\",le=\"2\"} 0"
        ));
        assert!(text.contains(
            "mlserve_inference_batch_size_bucket{model=\"tab\\\"ular\",version=\"1\",le=\"4\"} 1"
        ));
        assert!(text
            .contains("mlserve_inference_batch_size_count{model=\"tab\\\"ular\",version=\"1\"} 1"));
        assert!(
            text.contains("mlserve_inference_count_total{model=\"tab\\\"ular\",version=\"1\"} 3")
        );
    }
}
