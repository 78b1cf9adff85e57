//! Exposes any [`FeatureService`] as the gRPC `features.FeatureService`.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::fpb::feature_service_server::{
    FeatureService as GrpcFeatureService, FeatureServiceServer,
};
use super::fpb::{
    ListEntitiesResponse, ListFeatureViewsResponse, ListPipelinesResponse, ListRequest,
};
use super::*;

/// The tonic service adapter over a [`FeatureService`].
#[derive(Clone)]
pub struct FeaturesGrpcAdapter {
    inner: Arc<dyn FeatureService>,
}

/// Builds the tonic server for `service` with the given message limit.
pub fn features_grpc_server(
    service: Arc<dyn FeatureService>,
    max_message_bytes: usize,
) -> FeatureServiceServer<FeaturesGrpcAdapter> {
    FeatureServiceServer::new(FeaturesGrpcAdapter { inner: service })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

type RowStream = Pin<Box<dyn Stream<Item = Result<HistoricalRow, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcFeatureService for FeaturesGrpcAdapter {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        Ok(Response::new(self.inner.apply(req.into_inner()).await?))
    }

    async fn list_entities(
        &self,
        _: Request<ListRequest>,
    ) -> Result<Response<ListEntitiesResponse>, Status> {
        let entities = self.inner.list_entities().await?;
        Ok(Response::new(ListEntitiesResponse { entities }))
    }

    async fn list_feature_views(
        &self,
        _: Request<ListRequest>,
    ) -> Result<Response<ListFeatureViewsResponse>, Status> {
        let feature_views = self.inner.list_feature_views().await?;
        Ok(Response::new(ListFeatureViewsResponse { feature_views }))
    }

    async fn ingest(&self, req: Request<IngestRequest>) -> Result<Response<WriteResponse>, Status> {
        Ok(Response::new(self.inner.ingest(req.into_inner()).await?))
    }

    async fn push(&self, req: Request<PushRequest>) -> Result<Response<WriteResponse>, Status> {
        Ok(Response::new(self.inner.push(req.into_inner()).await?))
    }

    async fn materialize(
        &self,
        req: Request<MaterializeRequest>,
    ) -> Result<Response<MaterializeResponse>, Status> {
        Ok(Response::new(
            self.inner.materialize(req.into_inner()).await?,
        ))
    }

    async fn get_online_features(
        &self,
        req: Request<GetOnlineFeaturesRequest>,
    ) -> Result<Response<GetOnlineFeaturesResponse>, Status> {
        Ok(Response::new(
            self.inner.get_online_features(req.into_inner()).await?,
        ))
    }

    type GetHistoricalFeaturesStream = RowStream;

    async fn get_historical_features(
        &self,
        req: Request<GetHistoricalFeaturesRequest>,
    ) -> Result<Response<RowStream>, Status> {
        let rows = self.inner.get_historical_features(req.into_inner()).await?;
        Ok(Response::new(Box::pin(
            rows.map(|r| r.map_err(Status::from)),
        )))
    }

    async fn put_pipeline(
        &self,
        req: Request<Pipeline>,
    ) -> Result<Response<ApplyResponse>, Status> {
        Ok(Response::new(
            self.inner.put_pipeline(req.into_inner()).await?,
        ))
    }

    async fn list_pipelines(
        &self,
        _: Request<ListRequest>,
    ) -> Result<Response<ListPipelinesResponse>, Status> {
        let pipelines = self.inner.list_pipelines().await?;
        Ok(Response::new(ListPipelinesResponse { pipelines }))
    }

    async fn transform(
        &self,
        req: Request<TransformRequest>,
    ) -> Result<Response<TransformResponse>, Status> {
        Ok(Response::new(self.inner.transform(req.into_inner()).await?))
    }
}
