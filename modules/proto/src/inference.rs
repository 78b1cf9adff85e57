//! The inference service contract: one trait, reached in-process or over gRPC.

mod grpc_client;
mod grpc_server;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::pb;
use crate::ServiceResult;

pub use grpc_client::{connect_inference, RemoteInference};
pub use grpc_server::{inference_grpc_server, InferenceGrpcAdapter, MAX_GRPC_MESSAGE_BYTES};

/// One entry of the model repository index.
pub type ModelIndex = pb::repository_index_response::ModelIndex;

/// Parameters of a repository load request (`config` override and the like).
pub type LoadParameters = HashMap<String, pb::ModelRepositoryParameter>;

/// What the inference role offers: the Open Inference Protocol, transport-free.
///
/// Versions are strings as on the wire; an empty version means "the default"
/// (the highest ready version).
#[async_trait]
pub trait InferenceService: Send + Sync + 'static {
    /// True while the process serves.
    async fn server_live(&self) -> ServiceResult<bool>;
    /// True once the models that must load have loaded, false again at shutdown.
    async fn server_ready(&self) -> ServiceResult<bool>;
    /// Server name, version and protocol extensions.
    async fn server_metadata(&self) -> ServiceResult<pb::ServerMetadataResponse>;
    /// Whether a model (version) can take requests; unknown models are `NotFound`.
    async fn model_ready(&self, name: &str, version: &str) -> ServiceResult<bool>;
    /// Inputs, outputs, platform and versions of a model.
    async fn model_metadata(
        &self,
        name: &str,
        version: &str,
    ) -> ServiceResult<pb::ModelMetadataResponse>;
    /// The effective model configuration, in Triton's shape.
    async fn model_config(&self, name: &str, version: &str) -> ServiceResult<pb::ModelConfig>;
    /// Statistics of one model (version), or of all when `name` is empty.
    async fn model_statistics(
        &self,
        name: &str,
        version: &str,
    ) -> ServiceResult<pb::ModelStatisticsResponse>;
    /// Runs one inference request through the model's scheduler.
    async fn model_infer(
        &self,
        request: pb::ModelInferRequest,
    ) -> ServiceResult<pb::ModelInferResponse>;
    /// The models in the repository and their states.
    async fn repository_index(&self, ready_only: bool) -> ServiceResult<Vec<ModelIndex>>;
    /// Loads (or reloads) a model.
    async fn load_model(&self, name: &str, parameters: LoadParameters) -> ServiceResult<()>;
    /// Unloads a model once its in-flight requests finish.
    async fn unload_model(&self, name: &str) -> ServiceResult<()>;
}

/// A cloneable handle on an inference service: the local implementation when
/// the role runs in this process, a [`RemoteInference`] when it does not.
pub type InferenceClient = Arc<dyn InferenceService>;

#[cfg(test)]
#[path = "inference/adapter_tests.rs"]
mod adapter_tests;
