//! The gateway's inference client: an [`InferenceService`] that routes every
//! call to one of the inference endpoints (least outstanding requests,
//! health-aware), applies the canary split, enforces the request deadline
//! (carried by the call context: `grpc-timeout` to a remote endpoint, the
//! queue timeout where the model runs), and retries on another endpoint
//! only when the transport failure says the request was never sent.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mlserve_common::ShutdownSignal;
use mlserve_proto::context::{DEADLINE_SLACK, MODEL_HEADER, MODEL_VERSION_HEADER};
use mlserve_proto::inference::{infer_each, InferenceClient, InferenceService};
use mlserve_proto::rpc::ServiceStream;
use mlserve_proto::{pb, CallContext, ErrorCode, ServiceError, ServiceResult, Transport};

use crate::canary::CanaryTable;
use crate::endpoints::{resolve, Endpoint, EndpointSet, NoEndpoint, Slot, Target, LOCAL_ENDPOINT};
use crate::metrics::GatewayMetrics;
use crate::request_log::RequestLog;

/// Routes inference calls over an [`EndpointSet`].
#[derive(Clone)]
pub struct RoutingInference {
    endpoints: Arc<EndpointSet>,
    canary: Arc<CanaryTable>,
    default_timeout: Duration,
    max_retries: u32,
    metrics: Arc<GatewayMetrics>,
    request_log: Option<Arc<RequestLog>>,
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
            request_log: None,
        }
    }

    /// Offers every answered inference request to `log`.
    pub fn with_request_log(mut self, log: Option<Arc<RequestLog>>) -> RoutingInference {
        self.request_log = log;
        self
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

    /// Runs `call` on endpoints in turn until one answers. A transport
    /// failure ejects the endpoint; the call moves on to another endpoint
    /// only when the failure never sent it (or `retry` says the answer may
    /// be asked again elsewhere).
    async fn with_retries<T, F, Fut>(
        &self,
        retry: fn(&ServiceError) -> bool,
        call: F,
    ) -> ServiceResult<T>
    where
        F: Fn(InferenceClient) -> Fut,
        Fut: Future<Output = ServiceResult<T>>,
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
            let err = match call(endpoint.client.clone()).await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let err = match err.transport {
                Some(transport) => {
                    endpoint.eject(self.endpoints.options.eject_for, &err.message);
                    // A lost connection is an outage of that endpoint: 503.
                    let message = format!(
                        "inference endpoint {} failed: {}",
                        endpoint.name, err.message
                    );
                    ServiceError::transport(transport, message)
                }
                None => err,
            };
            let can_retry = retry(&err) && (tried.len() as u32) < self.max_retries;
            if !can_retry {
                return Err(err);
            }
            tracing::debug!(endpoint = %endpoint.name, error = %err, "retrying on another endpoint");
            self.metrics.retried();
            tried.push(endpoint.name.clone());
        }
    }

    /// Runs a read-only call (metadata, readiness...) with the same routing:
    /// any unavailable endpoint may be retried on another one.
    async fn routed<T, F, Fut>(&self, call: F) -> ServiceResult<T>
    where
        F: Fn(InferenceClient) -> Fut,
        Fut: Future<Output = ServiceResult<T>>,
    {
        self.with_retries(|err| err.code == ErrorCode::Unavailable, call)
            .await
    }
}

/// What the canary split hashes to choose a version: the request id (the
/// call's, else the protocol's `id`), so one id always lands on one version.
fn split_key<'a>(ctx: &'a CallContext, request: &'a pb::ModelInferRequest) -> Option<&'a str> {
    ctx.request_id
        .as_deref()
        .or(Some(request.id.as_str()).filter(|s| !s.is_empty()))
}

/// Inference is retried only when the request cannot have reached a model.
fn never_sent(err: &ServiceError) -> bool {
    err.transport == Some(Transport::NotSent)
}

#[async_trait]
impl InferenceService for RoutingInference {
    async fn server_live(
        &self,
        _: CallContext,
        _: pb::ServerLiveRequest,
    ) -> ServiceResult<pb::ServerLiveResponse> {
        Ok(pb::ServerLiveResponse { live: true })
    }

    async fn server_ready(
        &self,
        ctx: CallContext,
        _: pb::ServerReadyRequest,
    ) -> ServiceResult<pb::ServerReadyResponse> {
        let endpoints = self.endpoints.snapshot();
        for endpoint in endpoints.iter().filter(|e| e.healthy()) {
            let check = endpoint
                .client
                .server_ready(ctx.clone(), pb::ServerReadyRequest {});
            let timeout = self.endpoints.options.connect_timeout * 2;
            if let Ok(Ok(answer)) = tokio::time::timeout(timeout, check).await {
                if answer.ready {
                    return Ok(answer);
                }
            }
        }
        Ok(pb::ServerReadyResponse { ready: false })
    }

    async fn server_metadata(
        &self,
        ctx: CallContext,
        request: pb::ServerMetadataRequest,
    ) -> ServiceResult<pb::ServerMetadataResponse> {
        let mut metadata = self
            .routed(|c| {
                let ctx = ctx.clone();
                async move { c.server_metadata(ctx, request).await }
            })
            .await?;
        if self.shared_memory_endpoint().is_err() {
            metadata.extensions.retain(|e| e != SHARED_MEMORY_EXTENSION);
        }
        Ok(metadata)
    }

    async fn model_ready(
        &self,
        ctx: CallContext,
        request: pb::ModelReadyRequest,
    ) -> ServiceResult<pb::ModelReadyResponse> {
        self.routed(|c| {
            let (ctx, request) = (ctx.clone(), request.clone());
            async move { c.model_ready(ctx, request).await }
        })
        .await
    }

    async fn model_metadata(
        &self,
        ctx: CallContext,
        request: pb::ModelMetadataRequest,
    ) -> ServiceResult<pb::ModelMetadataResponse> {
        self.routed(|c| {
            let (ctx, request) = (ctx.clone(), request.clone());
            async move { c.model_metadata(ctx, request).await }
        })
        .await
    }

    async fn model_config(
        &self,
        ctx: CallContext,
        request: pb::ModelConfigRequest,
    ) -> ServiceResult<pb::ModelConfigResponse> {
        self.routed(|c| {
            let (ctx, request) = (ctx.clone(), request.clone());
            async move { c.model_config(ctx, request).await }
        })
        .await
    }

    async fn model_statistics(
        &self,
        ctx: CallContext,
        request: pb::ModelStatisticsRequest,
    ) -> ServiceResult<pb::ModelStatisticsResponse> {
        self.routed(|c| {
            let (ctx, request) = (ctx.clone(), request.clone());
            async move { c.model_statistics(ctx, request).await }
        })
        .await
    }

    /// Applies the canary split, then runs the request on an endpoint under
    /// the caller's deadline (or the default one): the deadline travels with
    /// the call and becomes the request's queue timeout where the model runs.
    async fn model_infer(
        &self,
        ctx: CallContext,
        mut request: pb::ModelInferRequest,
    ) -> ServiceResult<pb::ModelInferResponse> {
        let ctx = match ctx.deadline {
            Some(_) => ctx,
            None => ctx.with_timeout(self.default_timeout),
        };
        let mut split_chose = false;
        if request.model_version.is_empty() {
            let key = split_key(&ctx, &request);
            if let Some(version) = self.canary.choose(&request.model_name, key) {
                request.model_version = version;
                split_chose = true;
            }
        }
        // Noted before the call, so a failure is counted against the model
        // and the version it was sent to (a canary's errors are its own).
        ctx.note_reply(MODEL_HEADER, request.model_name.clone());
        if !request.model_version.is_empty() {
            ctx.note_reply(MODEL_VERSION_HEADER, request.model_version.clone());
        }
        let response = match self.infer_once(&ctx, &request).await {
            // The split chose a version no endpoint serves: a rollout is
            // moving (a canary unloaded on abort, a stable one on promotion)
            // and this gateway had not reloaded the split yet when it chose.
            // The split as it is now chooses again, else its other version
            // answers; a split gone since leaves the version to the model.
            Err(err) if err.code == ErrorCode::NotFound && split_chose => {
                let model = &request.model_name;
                let failed = &request.model_version;
                let retry = self
                    .canary
                    .choose(model, split_key(&ctx, &request))
                    .filter(|v| v != failed)
                    .or_else(|| self.canary.other_version(model, failed));
                request.model_version = match retry {
                    Some(version) => version,
                    // The split still names only the failed version.
                    None if self.canary.choose(model, None).is_some() => return Err(err),
                    None => String::new(),
                };
                if !request.model_version.is_empty() {
                    ctx.note_reply(MODEL_VERSION_HEADER, request.model_version.clone());
                }
                self.infer_once(&ctx, &request).await?
            }
            result => result?,
        };
        let version = if response.model_version.is_empty() {
            &request.model_version
        } else {
            &response.model_version
        };
        if !version.is_empty() {
            ctx.note_reply(MODEL_VERSION_HEADER, version.clone());
        }
        if let Some(log) = &self.request_log {
            log.offer(&request, &response, version);
        }
        Ok(response)
    }

    async fn model_stream_infer(
        &self,
        ctx: CallContext,
        requests: ServiceStream<pb::ModelInferRequest>,
    ) -> ServiceResult<ServiceStream<pb::ModelStreamInferResponse>> {
        Ok(infer_each(Arc::new(self.clone()), ctx, requests))
    }

    async fn repository_index(
        &self,
        ctx: CallContext,
        request: pb::RepositoryIndexRequest,
    ) -> ServiceResult<pb::RepositoryIndexResponse> {
        self.routed(|c| {
            let (ctx, request) = (ctx.clone(), request.clone());
            async move { c.repository_index(ctx, request).await }
        })
        .await
    }

    /// Loads the model on every endpoint.
    async fn repository_model_load(
        &self,
        ctx: CallContext,
        request: pb::RepositoryModelLoadRequest,
    ) -> ServiceResult<pb::RepositoryModelLoadResponse> {
        for endpoint in self.endpoints.snapshot().iter() {
            endpoint
                .client
                .repository_model_load(ctx.clone(), request.clone())
                .await?;
        }
        Ok(pb::RepositoryModelLoadResponse {})
    }

    /// Unloads the model on every endpoint.
    async fn repository_model_unload(
        &self,
        ctx: CallContext,
        request: pb::RepositoryModelUnloadRequest,
    ) -> ServiceResult<pb::RepositoryModelUnloadResponse> {
        for endpoint in self.endpoints.snapshot().iter() {
            endpoint
                .client
                .repository_model_unload(ctx.clone(), request.clone())
                .await?;
        }
        Ok(pb::RepositoryModelUnloadResponse {})
    }

    async fn system_shared_memory_status(
        &self,
        ctx: CallContext,
        request: pb::SystemSharedMemoryStatusRequest,
    ) -> ServiceResult<pb::SystemSharedMemoryStatusResponse> {
        let endpoint = self.shared_memory_endpoint()?;
        endpoint
            .client
            .system_shared_memory_status(ctx, request)
            .await
    }

    async fn system_shared_memory_register(
        &self,
        ctx: CallContext,
        request: pb::SystemSharedMemoryRegisterRequest,
    ) -> ServiceResult<pb::SystemSharedMemoryRegisterResponse> {
        let endpoint = self.shared_memory_endpoint()?;
        endpoint
            .client
            .system_shared_memory_register(ctx, request)
            .await
    }

    async fn system_shared_memory_unregister(
        &self,
        ctx: CallContext,
        request: pb::SystemSharedMemoryUnregisterRequest,
    ) -> ServiceResult<pb::SystemSharedMemoryUnregisterResponse> {
        let endpoint = self.shared_memory_endpoint()?;
        endpoint
            .client
            .system_shared_memory_unregister(ctx, request)
            .await
    }
}

/// The extension only an in-process inference role can serve through the gateway.
const SHARED_MEMORY_EXTENSION: &str = "system_shared_memory";

impl RoutingInference {
    /// Runs `request` on an endpoint (retrying a request never sent), under
    /// the context's deadline.
    async fn infer_once(
        &self,
        ctx: &CallContext,
        request: &pb::ModelInferRequest,
    ) -> ServiceResult<pb::ModelInferResponse> {
        let deadline = ctx.deadline.unwrap_or_else(Instant::now);
        let attempts = self.with_retries(never_sent, |client| {
            let (ctx, request) = (ctx.clone(), request.clone());
            async move {
                if ctx.expired() {
                    return Err(deadline_exceeded());
                }
                client.model_infer(ctx, request).await
            }
        });
        // The model's side expires the request at the deadline and answers
        // why; this is the backstop for an endpoint that does not answer.
        let backstop = deadline + DEADLINE_SLACK;
        match tokio::time::timeout_at(backstop.into(), attempts).await {
            Ok(result) => result,
            Err(_) => Err(deadline_exceeded()),
        }
    }

    /// The endpoint that serves system shared memory through this gateway:
    /// only the in-process inference role, alone, since a region lives in
    /// the process that maps it (and every request must reach that process).
    fn shared_memory_endpoint(&self) -> ServiceResult<Arc<Endpoint>> {
        match self.endpoints.snapshot().as_slice() {
            [only] if only.name == LOCAL_ENDPOINT => Ok(only.clone()),
            _ => Err(ServiceError::unimplemented(
                "system shared memory is served by the inference process that maps the regions: \
                 use its own v2 ports (this gateway routes to other processes)",
            )),
        }
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
        let check = endpoint.client.server_ready(
            CallContext::new().with_timeout(timeout),
            pb::ServerReadyRequest {},
        );
        match tokio::time::timeout(timeout, check).await {
            Ok(Ok(answer)) if answer.ready => endpoint.restore(),
            Ok(Ok(_)) => endpoint.eject(endpoints.options.eject_for, "not ready"),
            Ok(Err(err)) => endpoint.eject(endpoints.options.eject_for, &err.message),
            Err(_) => endpoint.eject(endpoints.options.eject_for, "readiness check timed out"),
        }
    });
    futures_util::future::join_all(checks).await;
}

#[cfg(test)]
#[path = "routing_tests.rs"]
pub(crate) mod tests;
