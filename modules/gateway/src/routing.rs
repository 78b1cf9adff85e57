//! The gateway's inference client: an [`InferenceService`] that routes every
//! call to one of the inference endpoints (least outstanding requests,
//! health-aware), applies the canary split, enforces the request deadline
//! (handed down as the request's `timeout` parameter and as `grpc-timeout`),
//! and retries on another endpoint only when the request cannot have
//! reached a model.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mlserve_common::ShutdownSignal;
use mlserve_proto::inference::{InferenceService, LoadParameters, ModelIndex};
use mlserve_proto::pb;
use mlserve_proto::pb::infer_parameter::ParameterChoice;
use mlserve_proto::{ErrorCode, ServiceError, ServiceResult};

use crate::canary::CanaryTable;
use crate::context::RequestContext;
use crate::endpoints::{resolve, EndpointSet, NoEndpoint, Slot, Target};
use crate::metrics::GatewayMetrics;

/// How a failed attempt may be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// The request never left: another endpoint may take it.
    NotSent,
    /// The request may have reached a model: never retried.
    MaybeSent,
}

/// Classifies a gRPC failure. A status that carries mlserve's error code came
/// from the server (its answer is final); an UNAVAILABLE without it is a
/// transport failure, and one that happened while connecting never sent the
/// request.
fn classify(status: &tonic::Status) -> (Attempt, bool) {
    let from_server = status
        .metadata()
        .contains_key(mlserve_proto::error::ERROR_CODE_METADATA);
    // Without mlserve's code the failure is the transport's: the connection
    // was refused, reset or broken (tonic reports those as UNAVAILABLE,
    // UNKNOWN "transport error", INTERNAL h2 errors or CANCELLED).
    let transport_codes = [
        tonic::Code::Unavailable,
        tonic::Code::Unknown,
        tonic::Code::Internal,
        tonic::Code::Cancelled,
    ];
    // A GOAWAY (e.g. ENHANCE_YOUR_CALM after many cancelled streams) ends
    // the connection: tonic reports it as RESOURCE_EXHAUSTED "h2 protocol
    // error", which is the transport's failure, not the caller's rate.
    let goaway = status.code() == tonic::Code::ResourceExhausted
        && status.message().starts_with("h2 protocol error");
    if from_server || !(transport_codes.contains(&status.code()) || goaway) {
        return (Attempt::MaybeSent, false);
    }
    let message = status.message().to_ascii_lowercase();
    let connect = [
        "connect error",
        "error trying to connect",
        "connection refused",
        "failed to connect",
    ]
    .iter()
    .any(|m| message.contains(m));
    (
        if connect {
            Attempt::NotSent
        } else {
            Attempt::MaybeSent
        },
        true,
    )
}

/// Routes inference calls over an [`EndpointSet`].
pub struct RoutingInference {
    endpoints: Arc<EndpointSet>,
    canary: Arc<CanaryTable>,
    default_timeout: Duration,
    max_retries: u32,
    metrics: Arc<GatewayMetrics>,
}

impl RoutingInference {
    /// A router over `endpoints`.
    pub fn new(
        endpoints: Arc<EndpointSet>,
        canary: Arc<CanaryTable>,
        default_timeout: Duration,
        max_retries: u32,
        metrics: Arc<GatewayMetrics>,
    ) -> RoutingInference {
        RoutingInference {
            endpoints,
            canary,
            default_timeout,
            max_retries,
            metrics,
        }
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &Arc<EndpointSet> {
        &self.endpoints
    }

    fn no_endpoint(&self, why: NoEndpoint) -> ServiceError {
        self.metrics.shed();
        match why {
            NoEndpoint::Empty => ServiceError::unavailable("no inference endpoint is available"),
            NoEndpoint::AtCapacity => {
                ServiceError::unavailable("every inference endpoint is at capacity")
            }
        }
    }

    /// Runs `call` on endpoints in turn until one answers or the failure may
    /// have reached a model.
    async fn with_retries<T, F, Fut>(&self, call: F) -> ServiceResult<T>
    where
        F: Fn(Arc<crate::endpoints::Endpoint>) -> Fut,
        Fut: Future<Output = Result<T, (ServiceError, Attempt, bool)>>,
    {
        let mut tried: Vec<String> = Vec::new();
        loop {
            let slot: Slot = self.endpoints.pick(&tried).map_err(|why| {
                if tried.is_empty() {
                    self.no_endpoint(why)
                } else {
                    self.no_endpoint(NoEndpoint::AtCapacity)
                }
            })?;
            let endpoint = slot.endpoint.clone();
            match call(endpoint.clone()).await {
                Ok(value) => return Ok(value),
                Err((err, attempt, transport)) => {
                    if transport {
                        endpoint.eject(self.endpoints.options.eject_for, &err.message);
                    }
                    let can_retry =
                        attempt == Attempt::NotSent && (tried.len() as u32) < self.max_retries;
                    if !can_retry {
                        return Err(err);
                    }
                    tracing::debug!(endpoint = %endpoint.name, error = %err, "retrying on another endpoint");
                    self.metrics.retried();
                    tried.push(endpoint.name.clone());
                }
            }
        }
    }

    /// Runs a read-only call (metadata, readiness...) with the same routing.
    async fn routed<T, F, Fut>(&self, call: F) -> ServiceResult<T>
    where
        F: Fn(Arc<crate::endpoints::Endpoint>) -> Fut,
        Fut: Future<Output = ServiceResult<T>>,
    {
        self.with_retries(|endpoint| {
            let fut = call(endpoint);
            async move {
                // These calls only read, so any unavailable endpoint may be
                // retried on another one.
                fut.await.map_err(|err| {
                    let attempt = if err.code == ErrorCode::Unavailable {
                        Attempt::NotSent
                    } else {
                        Attempt::MaybeSent
                    };
                    (err, attempt, false)
                })
            }
        })
        .await
    }
}

/// Sets the request's `timeout` parameter (microseconds) to at most `remaining`.
fn hand_down_timeout(request: &mut pb::ModelInferRequest, remaining: Duration) {
    let micros = remaining.as_micros().min(i64::MAX as u128) as i64;
    let current = request
        .parameters
        .get("timeout")
        .and_then(|p| match p.parameter_choice {
            Some(ParameterChoice::Int64Param(v)) => Some(v),
            Some(ParameterChoice::Uint64Param(v)) => i64::try_from(v).ok(),
            _ => None,
        });
    let value = current.map_or(micros, |c| if c > 0 { c.min(micros) } else { micros });
    request.parameters.insert(
        "timeout".into(),
        pb::InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(value)),
        },
    );
}

async fn infer_on(
    endpoint: Arc<crate::endpoints::Endpoint>,
    request: pb::ModelInferRequest,
    remaining: Duration,
    traceparent: Option<&str>,
) -> Result<pb::ModelInferResponse, (ServiceError, Attempt, bool)> {
    let Some(grpc) = &endpoint.grpc else {
        return endpoint
            .client
            .model_infer(request)
            .await
            .map_err(|e| (e, Attempt::MaybeSent, false));
    };
    let mut call = tonic::Request::new(request);
    call.set_timeout(remaining);
    if let Some(value) = traceparent.and_then(|t| t.parse().ok()) {
        call.metadata_mut()
            .insert(crate::context::TRACEPARENT_HEADER, value);
    }
    match grpc.clone().model_infer(call).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => {
            let (attempt, transport) = classify(&status);
            let err = if transport {
                // A lost connection is an outage of that endpoint: 503.
                ServiceError::unavailable(format!(
                    "inference endpoint {} failed: {}",
                    endpoint.name,
                    status.message()
                ))
            } else {
                ServiceError::from(status)
            };
            Err((err, attempt, transport))
        }
    }
}

#[async_trait]
impl InferenceService for RoutingInference {
    async fn server_live(&self) -> ServiceResult<bool> {
        Ok(true)
    }

    async fn server_ready(&self) -> ServiceResult<bool> {
        let endpoints = self.endpoints.snapshot();
        for endpoint in endpoints.iter().filter(|e| e.healthy()) {
            if let Ok(Ok(true)) = tokio::time::timeout(
                self.endpoints.options.connect_timeout * 2,
                endpoint.client.server_ready(),
            )
            .await
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn server_metadata(&self) -> ServiceResult<pb::ServerMetadataResponse> {
        self.routed(|e| async move { e.client.server_metadata().await })
            .await
    }

    async fn model_ready(&self, name: &str, version: &str) -> ServiceResult<bool> {
        self.routed(|e| async move { e.client.model_ready(name, version).await })
            .await
    }

    async fn model_metadata(
        &self,
        name: &str,
        version: &str,
    ) -> ServiceResult<pb::ModelMetadataResponse> {
        self.routed(|e| async move { e.client.model_metadata(name, version).await })
            .await
    }

    async fn model_config(&self, name: &str, version: &str) -> ServiceResult<pb::ModelConfig> {
        self.routed(|e| async move { e.client.model_config(name, version).await })
            .await
    }

    async fn model_statistics(
        &self,
        name: &str,
        version: &str,
    ) -> ServiceResult<pb::ModelStatisticsResponse> {
        self.routed(|e| async move { e.client.model_statistics(name, version).await })
            .await
    }

    async fn model_infer(
        &self,
        mut request: pb::ModelInferRequest,
    ) -> ServiceResult<pb::ModelInferResponse> {
        let ctx = RequestContext::current().unwrap_or_default();
        let deadline = ctx
            .deadline
            .unwrap_or_else(|| Instant::now() + self.default_timeout);
        if request.model_version.is_empty() {
            let id = ctx
                .request_id
                .as_deref()
                .or(Some(request.id.as_str()).filter(|s| !s.is_empty()));
            if let Some(version) = self.canary.choose(&request.model_name, id) {
                request.model_version = version;
            }
        }
        let traceparent = ctx.traceparent.clone();
        let attempts = self.with_retries(|endpoint| {
            let mut request = request.clone();
            let traceparent = traceparent.clone();
            async move {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Err((deadline_exceeded(), Attempt::MaybeSent, false));
                }
                hand_down_timeout(&mut request, remaining);
                infer_on(endpoint, request, remaining, traceparent.as_deref()).await
            }
        });
        let response = match tokio::time::timeout_at(deadline.into(), attempts).await {
            Ok(result) => result?,
            Err(_) => return Err(deadline_exceeded()),
        };
        let version = if response.model_version.is_empty() {
            &request.model_version
        } else {
            &response.model_version
        };
        if !version.is_empty() {
            ctx.set_served_version(version);
        }
        Ok(response)
    }

    async fn repository_index(&self, ready_only: bool) -> ServiceResult<Vec<ModelIndex>> {
        self.routed(|e| async move { e.client.repository_index(ready_only).await })
            .await
    }

    async fn load_model(&self, name: &str, parameters: LoadParameters) -> ServiceResult<()> {
        for endpoint in self.endpoints.snapshot().iter() {
            endpoint.client.load_model(name, parameters.clone()).await?;
        }
        Ok(())
    }

    async fn unload_model(&self, name: &str) -> ServiceResult<()> {
        for endpoint in self.endpoints.snapshot().iter() {
            endpoint.client.unload_model(name).await?;
        }
        Ok(())
    }
}

fn deadline_exceeded() -> ServiceError {
    ServiceError::unavailable("deadline exceeded before the model answered")
}

/// Keeps the endpoint set current until shutdown: re-resolves DNS targets
/// every `dns_every`, and checks each endpoint's readiness every
/// `health_every` (a failed check ejects it, a passed one restores it).
pub async fn maintain(
    endpoints: Arc<EndpointSet>,
    targets: Vec<Target>,
    dns_every: Duration,
    health_every: Duration,
    signal: ShutdownSignal,
) {
    let has_dns = targets.iter().any(|t| matches!(t, Target::Dns { .. }));
    let mut dns = tokio::time::interval(dns_every.max(Duration::from_millis(100)));
    let mut health = tokio::time::interval(health_every.max(Duration::from_millis(50)));
    dns.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = signal.clone().wait() => return,
            _ = dns.tick(), if has_dns => endpoints.replace(&resolve(&targets).await),
            _ = health.tick() => check_health(&endpoints).await,
        }
    }
}

async fn check_health(endpoints: &EndpointSet) {
    let timeout = endpoints.options.connect_timeout * 2;
    let snapshot = endpoints.snapshot();
    let checks = snapshot.iter().cloned().map(|endpoint| async move {
        match tokio::time::timeout(timeout, endpoint.client.server_ready()).await {
            Ok(Ok(true)) => endpoint.restore(),
            Ok(Ok(false)) => endpoint.eject(endpoints.options.eject_for, "not ready"),
            Ok(Err(err)) => endpoint.eject(endpoints.options.eject_for, &err.message),
            Err(_) => endpoint.eject(endpoints.options.eject_for, "readiness check timed out"),
        }
    });
    futures_util::future::join_all(checks).await;
}

#[cfg(test)]
#[path = "routing_tests.rs"]
pub(crate) mod tests;
