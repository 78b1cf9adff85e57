//! The result of one run: a human table on stdout and the same facts as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::{LatencySummary, Recorder};

/// Everything one run measured, with what it was asked to do.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `closed` or `raw`.
    pub mode: &'static str,
    /// Model name (closed) or file (raw).
    pub model: String,
    /// Wire protocol (closed runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    /// Server URL (closed runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Rows per request.
    pub batch: usize,
    /// Requests kept in flight (closed runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Load generator threads (closed) or intra-op threads (raw).
    pub threads: usize,
    /// Bytes of tensor data in one request.
    pub request_bytes: usize,
    /// Unmeasured seconds before the window.
    pub warmup_s: f64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Successful requests (or runs) in the window.
    pub requests: u64,
    /// `requests` per second.
    pub requests_per_s: f64,
    /// `requests × batch` per second.
    pub inferences_per_s: f64,
    /// Latency of the successful requests, in milliseconds.
    pub latency_ms: LatencySummary,
    /// Failed requests in the window.
    pub error_total: u64,
    /// Failed requests by label.
    pub errors: BTreeMap<String, u64>,
    /// The first message of each error label.
    pub first_errors: BTreeMap<String, String>,
}

impl Report {
    /// A report of a run not measured yet.
    pub fn new(
        mode: &'static str,
        model: String,
        batch: usize,
        threads: usize,
        warmup_s: f64,
        duration_s: f64,
    ) -> Report {
        Report {
            mode,
            model,
            protocol: None,
            target: None,
            batch,
            concurrency: None,
            threads,
            request_bytes: 0,
            warmup_s,
            duration_s,
            requests: 0,
            requests_per_s: 0.0,
            inferences_per_s: 0.0,
            latency_ms: LatencySummary::default(),
            error_total: 0,
            errors: BTreeMap::new(),
            first_errors: BTreeMap::new(),
        }
    }

    /// Fills the measured part from `recorder` over a window of `duration_s`.
    pub fn measured(mut self, recorder: &Recorder) -> Report {
        let seconds = self.duration_s.max(1e-9);
        self.requests = recorder.ok;
        self.requests_per_s = recorder.ok as f64 / seconds;
        self.inferences_per_s = self.requests_per_s * self.batch as f64;
        self.latency_ms = recorder.latency();
        self.error_total = recorder.error_total();
        self.errors = recorder.errors.clone();
        self.first_errors = recorder.first_error.clone();
        self
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let what = match (self.protocol, &self.concurrency) {
            (Some(protocol), Some(c)) => format!(
                "{protocol}, concurrency {c}, {} client thread(s)",
                self.threads
            ),
            _ => format!(
                "in-process ONNX Runtime, {} intra-op thread(s)",
                self.threads
            ),
        };
        let l = &self.latency_ms;
        let _ = writeln!(
            out,
            "loadgen {}: {} batch {} ({what})",
            self.mode, self.model, self.batch
        );
        let _ = writeln!(
            out,
            "  window        {:.1} s after {:.1} s warm-up",
            self.duration_s, self.warmup_s
        );
        let _ = writeln!(
            out,
            "  requests      {:>10}  {:>12.1} /s",
            self.requests, self.requests_per_s
        );
        let _ = writeln!(
            out,
            "  inferences    {:>10}  {:>12.1} /s",
            self.requests * self.batch as u64,
            self.inferences_per_s
        );
        let _ = writeln!(
            out,
            "  latency (ms)  p50 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
            l.p50, l.p95, l.p99, l.p999, l.max, l.mean
        );
        let _ = writeln!(out, "  errors        {:>10}", self.error_total);
        for (label, n) in &self.errors {
            let first = self
                .first_errors
                .get(label)
                .map(String::as_str)
                .unwrap_or("");
            let _ = writeln!(out, "    {label:<12} {n:>10}  first: {first}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn base() -> Report {
        Report {
            protocol: Some("grpc"),
            concurrency: Some(4),
            ..Report::new("closed", "tabular".into(), 16, 1, 1.0, 2.0)
        }
    }

    #[test]
    fn rates_come_from_the_window() {
        let mut r = Recorder::default();
        for _ in 0..100 {
            r.success(Duration::from_millis(1));
        }
        r.failure("http 503", "full");
        let report = base().measured(&r);
        assert_eq!(report.requests, 100);
        assert_eq!(report.requests_per_s, 50.0);
        assert_eq!(report.inferences_per_s, 800.0);
        assert_eq!(report.error_total, 1);
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["errors"]["http 503"], 1);
        assert_eq!(json["latency_ms"]["count"], 100);
        assert!(report.table().contains("http 503"));
    }
}
