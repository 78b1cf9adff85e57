//! The gateway's Prometheus metrics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::endpoints::EndpointSet;

/// Counters of the gateway.
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    requests: [AtomicU64; 6],
    retries: AtomicU64,
    shed: AtomicU64,
    rate_limited: AtomicU64,
    unauthenticated: AtomicU64,
}

/// Response classes counted in `mlserve_gateway_requests_total`.
const CLASSES: [&str; 6] = ["2xx", "4xx", "5xx", "401", "429", "503"];

impl GatewayMetrics {
    /// Counts a finished external request by its status.
    pub fn request(&self, status: u16) {
        let class = match status {
            401 => 3,
            429 => 4,
            503 => 5,
            200..=299 => 0,
            400..=499 => 1,
            _ => 2,
        };
        self.requests[class].fetch_add(1, Ordering::Relaxed);
        match status {
            401 => self.unauthenticated.fetch_add(1, Ordering::Relaxed),
            429 => self.rate_limited.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
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
    pub fn render(&self, endpoints: Option<&Arc<EndpointSet>>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP mlserve_gateway_requests_total External requests by response class."
        );
        let _ = writeln!(out, "# TYPE mlserve_gateway_requests_total counter");
        for (i, class) in CLASSES.iter().enumerate() {
            let _ = writeln!(
                out,
                "mlserve_gateway_requests_total{{class=\"{class}\"}} {}",
                self.requests[i].load(Ordering::Relaxed)
            );
        }
        for (name, help, value) in [
            (
                "mlserve_gateway_retries_total",
                "Requests retried on another endpoint before reaching a model.",
                &self.retries,
            ),
            (
                "mlserve_gateway_shed_total",
                "Requests shed because no endpoint could take them.",
                &self.shed,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        if let Some(endpoints) = endpoints {
            let _ = writeln!(out, "# HELP mlserve_gateway_endpoint_outstanding Requests in flight per inference endpoint.");
            let _ = writeln!(out, "# TYPE mlserve_gateway_endpoint_outstanding gauge");
            let snapshot = endpoints.snapshot();
            for e in snapshot.iter() {
                let _ = writeln!(
                    out,
                    "mlserve_gateway_endpoint_outstanding{{endpoint=\"{}\"}} {}",
                    e.name,
                    e.outstanding()
                );
            }
            let _ = writeln!(
                out,
                "# HELP mlserve_gateway_endpoint_healthy 1 when the endpoint is in rotation."
            );
            let _ = writeln!(out, "# TYPE mlserve_gateway_endpoint_healthy gauge");
            for e in snapshot.iter() {
                let _ = writeln!(
                    out,
                    "mlserve_gateway_endpoint_healthy{{endpoint=\"{}\"}} {}",
                    e.name,
                    u8::from(e.healthy())
                );
            }
        }
        out
    }
}
