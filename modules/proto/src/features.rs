//! The feature store contract (`features` role): one trait, reached
//! in-process or over gRPC, whose messages are also the REST JSON bodies.
//!
//! The gateway's predict pipeline calls [`FeatureService::get_online_features`]
//! and [`FeatureService::transform`]; [`TransformResponse::into_infer_request`]
//! turns the transform's tensors into an Open Inference Protocol request.

mod grpc_client;
mod grpc_server;
pub mod json_text;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio_stream::Stream;

use crate::ServiceResult;

pub use grpc_client::{connect_features, RemoteFeatures};
pub use grpc_server::{features_grpc_server, FeaturesGrpcAdapter};

/// Generated messages and gRPC stubs of package `features`.
#[allow(missing_docs, clippy::all)]
pub mod fpb {
    tonic::include_proto!("features");
}

pub use fpb::{
    ApplyRequest, ApplyResponse, Entity, EntityRow, FeatureValue, FeatureView, Field,
    GetHistoricalFeaturesRequest, GetOnlineFeaturesRequest, GetOnlineFeaturesResponse,
    HistoricalRow, IngestRequest, MaterializeRequest, MaterializeResponse, MaterializedView,
    OnlineFeatureRow, Pipeline, PushRequest, Row, Tensor, TransformRequest, TransformResponse,
    WriteResponse,
};

/// Status of a value found in the online store.
pub const PRESENT: &str = "PRESENT";
/// Status of a value whose entity has no row in the online store.
pub const NOT_FOUND: &str = "NOT_FOUND";
/// Status of a value that is stored as null.
pub const NULL: &str = "NULL";
/// Status of a value older than its view's TTL.
pub const OUTSIDE_MAX_AGE: &str = "OUTSIDE_MAX_AGE";

/// A point-in-time join result, one entity row at a time, in request order.
pub type HistoricalStream = Pin<Box<dyn Stream<Item = ServiceResult<HistoricalRow>> + Send>>;

/// What the features role offers, transport-free.
#[async_trait]
pub trait FeatureService: Send + Sync + 'static {
    /// Creates or updates entities and feature views. An incompatible change
    /// (a field's type, a view's entities, a removed field, an entity's join
    /// keys) is `Conflict`; a compatible one bumps the version.
    async fn apply(&self, request: ApplyRequest) -> ServiceResult<ApplyResponse>;
    /// The current version of every entity.
    async fn list_entities(&self) -> ServiceResult<Vec<Entity>>;
    /// The current version of every feature view.
    async fn list_feature_views(&self) -> ServiceResult<Vec<FeatureView>>;
    /// Appends rows to the offline store.
    async fn ingest(&self, request: IngestRequest) -> ServiceResult<WriteResponse>;
    /// Writes fresh rows to the online store, the offline store or both.
    async fn push(&self, request: PushRequest) -> ServiceResult<WriteResponse>;
    /// Copies the latest offline row per entity in a time range (or since the
    /// previous run) to the online store.
    async fn materialize(&self, request: MaterializeRequest) -> ServiceResult<MaterializeResponse>;
    /// Online values of many features for many entities, with statuses.
    async fn get_online_features(
        &self,
        request: GetOnlineFeaturesRequest,
    ) -> ServiceResult<GetOnlineFeaturesResponse>;
    /// Point-in-time correct values for entity rows with timestamps, streamed.
    async fn get_historical_features(
        &self,
        request: GetHistoricalFeaturesRequest,
    ) -> ServiceResult<HistoricalStream>;
    /// Registers (or replaces) a model's preprocessing pipeline.
    async fn put_pipeline(&self, pipeline: Pipeline) -> ServiceResult<ApplyResponse>;
    /// Every registered or configured pipeline.
    async fn list_pipelines(&self) -> ServiceResult<Vec<Pipeline>>;
    /// Runs a model's pipeline over a request: its input tensors.
    async fn transform(&self, request: TransformRequest) -> ServiceResult<TransformResponse>;
}

/// A cloneable handle on the feature service: local or [`RemoteFeatures`].
pub type FeaturesClient = Arc<dyn FeatureService>;

impl TransformResponse {
    /// An Open Inference Protocol request for `model` carrying these tensors
    /// as raw inputs.
    pub fn into_infer_request(self, model: &str) -> crate::pb::ModelInferRequest {
        use crate::pb::model_infer_request::InferInputTensor;
        let mut request = crate::pb::ModelInferRequest {
            model_name: model.to_string(),
            ..Default::default()
        };
        for tensor in self.tensors {
            request.inputs.push(InferInputTensor {
                name: tensor.name,
                datatype: tensor.datatype,
                shape: tensor.shape,
                ..Default::default()
            });
            request.raw_input_contents.push(Bytes::from(tensor.data));
        }
        request
    }
}
