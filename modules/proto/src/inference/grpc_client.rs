//! [`InferenceService`] over gRPC: the remote side of the inference client.

use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::{Channel, Endpoint};

use super::{InferenceService, LoadParameters, ModelIndex, MAX_GRPC_MESSAGE_BYTES};
use crate::pb;
use crate::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::{ServiceError, ServiceResult};

/// An inference role reached over gRPC. Cloning shares the HTTP/2 connection.
#[derive(Clone)]
pub struct RemoteInference {
    client: GrpcInferenceServiceClient<Channel>,
}

/// Connects lazily to an inference role at `uri` (e.g. `http://10.0.0.5:8001`);
/// the first call opens the connection.
pub fn connect_inference(uri: &str, connect_timeout: Duration) -> ServiceResult<RemoteInference> {
    let endpoint = Endpoint::from_shared(uri.to_string())
        .map_err(|e| ServiceError::bad_request(format!("invalid inference endpoint '{uri}': {e}")))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_adaptive_window(true);
    let client = GrpcInferenceServiceClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    Ok(RemoteInference { client })
}

#[async_trait]
impl InferenceService for RemoteInference {
    async fn server_live(&self) -> ServiceResult<bool> {
        Ok(self
            .client
            .clone()
            .server_live(pb::ServerLiveRequest {})
            .await?
            .into_inner()
            .live)
    }

    async fn server_ready(&self) -> ServiceResult<bool> {
        Ok(self
            .client
            .clone()
            .server_ready(pb::ServerReadyRequest {})
            .await?
            .into_inner()
            .ready)
    }

    async fn server_metadata(&self) -> ServiceResult<pb::ServerMetadataResponse> {
        Ok(self
            .client
            .clone()
            .server_metadata(pb::ServerMetadataRequest {})
            .await?
            .into_inner())
    }

    async fn model_ready(&self, name: &str, version: &str) -> ServiceResult<bool> {
        let request = pb::ModelReadyRequest {
            name: name.into(),
            version: version.into(),
        };
        Ok(self
            .client
            .clone()
            .model_ready(request)
            .await?
            .into_inner()
            .ready)
    }

    async fn model_metadata(
        &self,
        name: &str,
        version: &str,
    ) -> ServiceResult<pb::ModelMetadataResponse> {
        let request = pb::ModelMetadataRequest {
            name: name.into(),
            version: version.into(),
        };
        Ok(self
            .client
            .clone()
            .model_metadata(request)
            .await?
            .into_inner())
    }

    async fn model_config(&self, name: &str, version: &str) -> ServiceResult<pb::ModelConfig> {
        let request = pb::ModelConfigRequest {
            name: name.into(),
            version: version.into(),
        };
        let response = self
            .client
            .clone()
            .model_config(request)
            .await?
            .into_inner();
        response
            .config
            .ok_or_else(|| ServiceError::internal("model config response without a config"))
    }

    async fn model_statistics(
        &self,
        name: &str,
        version: &str,
    ) -> ServiceResult<pb::ModelStatisticsResponse> {
        let request = pb::ModelStatisticsRequest {
            name: name.into(),
            version: version.into(),
        };
        Ok(self
            .client
            .clone()
            .model_statistics(request)
            .await?
            .into_inner())
    }

    async fn model_infer(
        &self,
        request: pb::ModelInferRequest,
    ) -> ServiceResult<pb::ModelInferResponse> {
        Ok(self.client.clone().model_infer(request).await?.into_inner())
    }

    async fn repository_index(&self, ready_only: bool) -> ServiceResult<Vec<ModelIndex>> {
        let request = pb::RepositoryIndexRequest {
            repository_name: String::new(),
            ready: ready_only,
        };
        Ok(self
            .client
            .clone()
            .repository_index(request)
            .await?
            .into_inner()
            .models)
    }

    async fn load_model(&self, name: &str, parameters: LoadParameters) -> ServiceResult<()> {
        let request = pb::RepositoryModelLoadRequest {
            repository_name: String::new(),
            model_name: name.into(),
            parameters,
        };
        self.client.clone().repository_model_load(request).await?;
        Ok(())
    }

    async fn unload_model(&self, name: &str) -> ServiceResult<()> {
        let request = pb::RepositoryModelUnloadRequest {
            repository_name: String::new(),
            model_name: name.into(),
            parameters: Default::default(),
        };
        self.client.clone().repository_model_unload(request).await?;
        Ok(())
    }
}
