//! The process's readiness, told the same way to every probe: the gRPC
//! health service (service "") and the node's `/health/live` and
//! `/health/ready` HTTP paths, which every role serves (the inference role's
//! `/v2/health/*` answer for its models too).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// Readiness, shared by the roles of one process; clones share it.
#[derive(Clone)]
pub struct Readiness {
    reporter: HealthReporter,
    ready: Arc<AtomicBool>,
}

impl Readiness {
    /// Not ready yet, reporting through `reporter`.
    pub fn new(reporter: HealthReporter) -> Readiness {
        Readiness {
            reporter,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the process ready (serving) or not.
    pub async fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
    }

    /// `GET /health/live` (200 while the process runs) and `GET
    /// /health/ready` (200 when ready, else 503), both with empty bodies.
    pub fn routes(&self) -> axum::Router {
        let ready = self.ready.clone();
        axum::Router::new()
            .route("/health/live", get(|| async { StatusCode::OK }))
            .route(
                "/health/ready",
                get(move || {
                    let ready = ready.load(Ordering::SeqCst);
                    async move {
                        if ready {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        }
                    }
                }),
            )
    }
}
