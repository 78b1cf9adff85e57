//! The inference service the gateway exposes: the routing client behind the
//! caller's scopes. Each call is checked where its model is known, so HTTP
//! and gRPC (streaming included) are held to the same rules.

use std::sync::Arc;

use async_trait::async_trait;
use mlserve_proto::inference::{infer_each, InferenceService};
use mlserve_proto::rpc::ServiceStream;
use mlserve_proto::{pb, CallContext, ServiceResult};

use crate::routing::RoutingInference;
use crate::scopes::{require, require_infer, require_some_infer, REGISTRY_WRITE};

/// [`RoutingInference`] with every call checked against the caller's scopes.
#[derive(Clone)]
pub struct ScopedInference {
    router: Arc<RoutingInference>,
}

impl ScopedInference {
    /// Checks calls before `router` serves them.
    pub fn new(router: Arc<RoutingInference>) -> ScopedInference {
        ScopedInference { router }
    }
}

/// `infer:<name>`, or any infer scope when the call names no model.
fn require_model(ctx: &CallContext, name: &str) -> ServiceResult<()> {
    if name.is_empty() {
        require_some_infer(ctx)
    } else {
        require_infer(ctx, name)
    }
}

#[async_trait]
impl InferenceService for ScopedInference {
    async fn server_live(
        &self,
        ctx: CallContext,
        request: pb::ServerLiveRequest,
    ) -> ServiceResult<pb::ServerLiveResponse> {
        self.router.server_live(ctx, request).await
    }

    async fn server_ready(
        &self,
        ctx: CallContext,
        request: pb::ServerReadyRequest,
    ) -> ServiceResult<pb::ServerReadyResponse> {
        self.router.server_ready(ctx, request).await
    }

    async fn server_metadata(
        &self,
        ctx: CallContext,
        request: pb::ServerMetadataRequest,
    ) -> ServiceResult<pb::ServerMetadataResponse> {
        require_some_infer(&ctx)?;
        self.router.server_metadata(ctx, request).await
    }

    async fn model_ready(
        &self,
        ctx: CallContext,
        request: pb::ModelReadyRequest,
    ) -> ServiceResult<pb::ModelReadyResponse> {
        require_model(&ctx, &request.name)?;
        self.router.model_ready(ctx, request).await
    }

    async fn model_metadata(
        &self,
        ctx: CallContext,
        request: pb::ModelMetadataRequest,
    ) -> ServiceResult<pb::ModelMetadataResponse> {
        require_model(&ctx, &request.name)?;
        self.router.model_metadata(ctx, request).await
    }

    async fn model_config(
        &self,
        ctx: CallContext,
        request: pb::ModelConfigRequest,
    ) -> ServiceResult<pb::ModelConfigResponse> {
        require_model(&ctx, &request.name)?;
        self.router.model_config(ctx, request).await
    }

    /// Statistics of one model need its scope; of every model (no name),
    /// any infer scope.
    async fn model_statistics(
        &self,
        ctx: CallContext,
        request: pb::ModelStatisticsRequest,
    ) -> ServiceResult<pb::ModelStatisticsResponse> {
        require_model(&ctx, &request.name)?;
        self.router.model_statistics(ctx, request).await
    }

    async fn model_infer(
        &self,
        ctx: CallContext,
        request: pb::ModelInferRequest,
    ) -> ServiceResult<pb::ModelInferResponse> {
        require_model(&ctx, &request.model_name)?;
        self.router.model_infer(ctx, request).await
    }

    /// Each request of the stream is checked on its own.
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
        require_some_infer(&ctx)?;
        self.router.repository_index(ctx, request).await
    }

    async fn repository_model_load(
        &self,
        ctx: CallContext,
        request: pb::RepositoryModelLoadRequest,
    ) -> ServiceResult<pb::RepositoryModelLoadResponse> {
        require(&ctx, REGISTRY_WRITE)?;
        self.router.repository_model_load(ctx, request).await
    }

    async fn repository_model_unload(
        &self,
        ctx: CallContext,
        request: pb::RepositoryModelUnloadRequest,
    ) -> ServiceResult<pb::RepositoryModelUnloadResponse> {
        require(&ctx, REGISTRY_WRITE)?;
        self.router.repository_model_unload(ctx, request).await
    }

    async fn system_shared_memory_status(
        &self,
        ctx: CallContext,
        request: pb::SystemSharedMemoryStatusRequest,
    ) -> ServiceResult<pb::SystemSharedMemoryStatusResponse> {
        require_some_infer(&ctx)?;
        self.router.system_shared_memory_status(ctx, request).await
    }

    async fn system_shared_memory_register(
        &self,
        ctx: CallContext,
        request: pb::SystemSharedMemoryRegisterRequest,
    ) -> ServiceResult<pb::SystemSharedMemoryRegisterResponse> {
        require_some_infer(&ctx)?;
        self.router
            .system_shared_memory_register(ctx, request)
            .await
    }

    async fn system_shared_memory_unregister(
        &self,
        ctx: CallContext,
        request: pb::SystemSharedMemoryUnregisterRequest,
    ) -> ServiceResult<pb::SystemSharedMemoryUnregisterResponse> {
        require_some_infer(&ctx)?;
        self.router
            .system_shared_memory_unregister(ctx, request)
            .await
    }
}
