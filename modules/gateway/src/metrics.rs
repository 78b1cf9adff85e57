//! The gateway's Prometheus metrics.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mlserve_common::metrics::{
    counter, counter_family, gauge_family, histogram_family, latency_histogram, Collector,
    DescriptorEncoder, Histogram, Label,
};

use crate::endpoints::EndpointSet;
use crate::request_log::LogCounts;

/// Counters of the gateway.
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    requests: [AtomicU64; 6],
    retries: AtomicU64,
    shed: AtomicU64,
    durations: Mutex<BTreeMap<DurationKey, Histogram>>,
    /// Rows of the request log by outcome.
    pub request_log: Arc<LogCounts>,
}

/// Response classes counted in `mlserve_gateway_requests_total`.
const CLASSES: [&str; 6] = ["2xx", "4xx", "5xx", "401", "429", "503"];

impl GatewayMetrics {
    /// Counts a finished external request by its status.
    fn request(&self, status: u16) {
        let class = match status {
            401 => 3,
            429 => 4,
            503 => 5,
            200..=299 => 0,
            400..=499 => 1,
            _ => 2,
        };
        self.requests[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a retry on another endpoint.
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request shed because no endpoint could take it.
    pub fn shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the text exposition, with the endpoints' gauges.
    /// One answered request: counted by its status, and its duration
    /// observed by route, model, the version that served it, and status
    /// class. Label sets are capped: past [`MAX_SERIES`] new ones are
    /// counted under `model="other"`.
    pub fn observe(&self, route: &str, model: &str, version: &str, status: u16, took: Duration) {
        self.request(status);
        let class = match status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let mut series = self.durations.lock().unwrap_or_else(|p| p.into_inner());
        let known = DurationKey::new(route, model, version, class);
        let key = if series.len() >= MAX_SERIES && !series.contains_key(&known) {
            DurationKey::new(route, "other", "", class)
        } else {
            known
        };
        let histogram = series.entry(key).or_insert_with(latency_histogram).clone();
        drop(series);
        histogram.observe(took.as_secs_f64());
    }
}

/// The most label sets the request-duration histogram keeps.
pub const MAX_SERIES: usize = 1000;

/// The labels of one request-duration series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct DurationKey {
    route: String,
    model: String,
    version: String,
    class: &'static str,
}

impl DurationKey {
    fn new(route: &str, model: &str, version: &str, class: &'static str) -> Self {
        DurationKey {
            route: route.to_string(),
            model: model.to_string(),
            version: version.to_string(),
            class,
        }
    }
}

/// The gateway's metrics and its endpoints' state, encoded at scrape time.
pub struct GatewayCollector {
    metrics: Arc<GatewayMetrics>,
    endpoints: Arc<EndpointSet>,
}

impl fmt::Debug for GatewayCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayCollector").finish_non_exhaustive()
    }
}

impl GatewayCollector {
    /// A collector over `metrics` and `endpoints`.
    pub fn new(metrics: Arc<GatewayMetrics>, endpoints: Arc<EndpointSet>) -> Self {
        GatewayCollector { metrics, endpoints }
    }
}

impl Collector for GatewayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let m = &self.metrics;
        counter_family(
            &mut encoder,
            "mlserve_gateway_requests_total",
            "External requests by response class.",
            CLASSES
                .iter()
                .zip(&m.requests)
                .map(|(class, n)| ([("class", Label(class))], n.load(Ordering::Relaxed))),
        )?;
        counter(
            &mut encoder,
            "mlserve_gateway_retries_total",
            "Requests retried on another endpoint before reaching a model.",
            m.retries.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "mlserve_gateway_shed_total",
            "Requests shed because no endpoint could take them.",
            m.shed.load(Ordering::Relaxed),
        )?;
        counter_family(
            &mut encoder,
            "mlserve_gateway_request_log_rows_total",
            "Rows of the request log (served inputs and predictions sampled for drift) by outcome: queued, dropped (queue full), written, failed.",
            m.request_log
                .snapshot()
                .into_iter()
                .map(|(outcome, n)| ([("outcome", Label(outcome))], n)),
        )?;
        let snapshot = self.endpoints.snapshot();
        gauge_family(
            &mut encoder,
            "mlserve_gateway_endpoint_outstanding",
            "Requests in flight per inference endpoint.",
            snapshot
                .iter()
                .map(|e| ([("endpoint", Label(&e.name))], e.outstanding() as i64)),
        )?;
        gauge_family(
            &mut encoder,
            "mlserve_gateway_endpoint_healthy",
            "1 when the endpoint is in rotation.",
            snapshot
                .iter()
                .map(|e| ([("endpoint", Label(&e.name))], i64::from(e.healthy()))),
        )?;
        let series: Vec<(DurationKey, Histogram)> = m
            .durations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect();
        histogram_family(
            &mut encoder,
            "mlserve_gateway_request_duration_seconds",
            "External requests, arrival to answer, by route, model, serving version and status class (seconds).",
            series.iter().map(|(k, h)| {
                (
                    [
                        ("route", Label(&k.route)),
                        ("model", Label(&k.model)),
                        ("version", Label(&k.version)),
                        ("status_class", Label(k.class)),
                    ],
                    h,
                )
            }),
        )
    }
}
