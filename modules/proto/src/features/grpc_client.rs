//! [`FeatureService`] over gRPC: the remote side of the features client.

use std::time::Duration;

use async_trait::async_trait;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

use super::fpb::feature_service_client::FeatureServiceClient;
use super::fpb::ListRequest;
use super::*;
use crate::inference::MAX_GRPC_MESSAGE_BYTES;
use crate::{ServiceError, ServiceResult};

/// A features role reached over gRPC. Cloning shares the HTTP/2 connection.
#[derive(Clone)]
pub struct RemoteFeatures {
    client: FeatureServiceClient<Channel>,
}

/// Connects lazily to a features role at `uri` (e.g. `http://10.0.0.6:8001`).
pub fn connect_features(uri: &str, connect_timeout: Duration) -> ServiceResult<RemoteFeatures> {
    let endpoint = Endpoint::from_shared(uri.to_string())
        .map_err(|e| ServiceError::bad_request(format!("invalid features endpoint '{uri}': {e}")))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    let client = FeatureServiceClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    Ok(RemoteFeatures { client })
}

#[async_trait]
impl FeatureService for RemoteFeatures {
    async fn apply(&self, request: ApplyRequest) -> ServiceResult<ApplyResponse> {
        Ok(self.client.clone().apply(request).await?.into_inner())
    }

    async fn list_entities(&self) -> ServiceResult<Vec<Entity>> {
        let response = self.client.clone().list_entities(ListRequest {}).await?;
        Ok(response.into_inner().entities)
    }

    async fn list_feature_views(&self) -> ServiceResult<Vec<FeatureView>> {
        let response = self
            .client
            .clone()
            .list_feature_views(ListRequest {})
            .await?;
        Ok(response.into_inner().feature_views)
    }

    async fn ingest(&self, request: IngestRequest) -> ServiceResult<WriteResponse> {
        Ok(self.client.clone().ingest(request).await?.into_inner())
    }

    async fn push(&self, request: PushRequest) -> ServiceResult<WriteResponse> {
        Ok(self.client.clone().push(request).await?.into_inner())
    }

    async fn materialize(&self, request: MaterializeRequest) -> ServiceResult<MaterializeResponse> {
        Ok(self.client.clone().materialize(request).await?.into_inner())
    }

    async fn get_online_features(
        &self,
        request: GetOnlineFeaturesRequest,
    ) -> ServiceResult<GetOnlineFeaturesResponse> {
        Ok(self
            .client
            .clone()
            .get_online_features(request)
            .await?
            .into_inner())
    }

    async fn get_historical_features(
        &self,
        request: GetHistoricalFeaturesRequest,
    ) -> ServiceResult<HistoricalStream> {
        let stream = self
            .client
            .clone()
            .get_historical_features(request)
            .await?
            .into_inner();
        Ok(Box::pin(
            stream.map(|item| item.map_err(ServiceError::from)),
        ))
    }

    async fn put_pipeline(&self, pipeline: Pipeline) -> ServiceResult<ApplyResponse> {
        Ok(self
            .client
            .clone()
            .put_pipeline(pipeline)
            .await?
            .into_inner())
    }

    async fn list_pipelines(&self) -> ServiceResult<Vec<Pipeline>> {
        let response = self.client.clone().list_pipelines(ListRequest {}).await?;
        Ok(response.into_inner().pipelines)
    }

    async fn transform(&self, request: TransformRequest) -> ServiceResult<TransformResponse> {
        Ok(self.client.clone().transform(request).await?.into_inner())
    }
}
