//! The registry service contract: registered models, versions with their
//! files, aliases and alias history; one trait reached in-process or over gRPC.
//!
//! Uploads and downloads are streams of chunks, so a large artifact is never
//! held in memory on either side of the boundary.

mod grpc_client;
mod grpc_server;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio_stream::Stream;

use crate::ServiceResult;

pub use grpc_client::{connect_registry, RemoteRegistry};
pub use grpc_server::{registry_grpc_server, RegistryGrpcAdapter};

/// Generated protobuf messages and gRPC stubs of package `registry`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("registry");
}

/// Size of the chunks uploads and downloads are cut into on the wire.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// The name of a model's user, when nobody authenticated the caller.
pub const ANONYMOUS: &str = "anonymous";

/// One item of an upload: a file starts, or the next bytes of the current file.
#[derive(Debug, Clone, PartialEq)]
pub enum UploadItem {
    /// A new file begins (its path inside the version, its expected sha256).
    File(pb::FileHeader),
    /// The next bytes of the file begun last.
    Chunk(Bytes),
}

/// The files of a new version, streamed: `File`, its `Chunk`s, the next `File`...
pub type UploadStream = Pin<Box<dyn Stream<Item = ServiceResult<UploadItem>> + Send>>;

/// The bytes of one file, streamed in chunks.
pub type ByteStream = Pin<Box<dyn Stream<Item = ServiceResult<Bytes>> + Send>>;

/// What the registry role offers, transport-free. Only `READY` versions are
/// visible: a version being uploaded, or one whose upload failed, is
/// `NotFound` to every call.
#[async_trait]
pub trait RegistryService: Send + Sync + 'static {
    /// Registers a new model; `Conflict` when the name is taken.
    async fn create_model(
        &self,
        request: pb::CreateModelRequest,
    ) -> ServiceResult<pb::RegisteredModel>;
    /// One registered model.
    async fn get_model(&self, name: &str) -> ServiceResult<pb::RegisteredModel>;
    /// Registered models by name, filtered (search) and paginated.
    async fn list_models(
        &self,
        request: pb::ListModelsRequest,
    ) -> ServiceResult<pb::ListModelsResponse>;
    /// Changes a model's description and tags.
    async fn update_model(
        &self,
        request: pb::UpdateModelRequest,
    ) -> ServiceResult<pb::RegisteredModel>;
    /// Deletes a model with its versions, aliases and artifacts.
    async fn delete_model(&self, name: &str) -> ServiceResult<()>;
    /// Creates the next version of a model from streamed files: every file is
    /// written under an immutable key, hashed as it streams, checked against
    /// the expected sha256 and validated before the version commits `READY`.
    async fn create_version(
        &self,
        request: pb::CreateVersionRequest,
        files: UploadStream,
    ) -> ServiceResult<pb::ModelVersion>;
    /// One ready version, with its files (path, sha256, size).
    async fn get_version(&self, name: &str, version: u64) -> ServiceResult<pb::ModelVersion>;
    /// A model's ready versions, newest first, paginated.
    async fn list_versions(
        &self,
        request: pb::ListVersionsRequest,
    ) -> ServiceResult<pb::ListVersionsResponse>;
    /// Changes a version's description and tags (its files never change).
    async fn update_version(
        &self,
        request: pb::UpdateVersionRequest,
    ) -> ServiceResult<pb::ModelVersion>;
    /// Streams one file of a ready version; the [`pb::VersionFile`] comes first
    /// so the caller can verify the bytes against its sha256 and size.
    async fn download(
        &self,
        name: &str,
        version: u64,
        path: &str,
    ) -> ServiceResult<(pb::VersionFile, ByteStream)>;
    /// Points an alias at a ready version (creating or moving it atomically)
    /// and records the move.
    async fn set_alias(&self, request: pb::SetAliasRequest) -> ServiceResult<pb::AliasMove>;
    /// An alias and the version it points at.
    async fn get_alias(&self, name: &str, alias: &str) -> ServiceResult<pb::Alias>;
    /// The version an alias points at.
    async fn resolve_alias(&self, name: &str, alias: &str) -> ServiceResult<pb::ModelVersion>;
    /// Deletes an alias and records the move (to version 0).
    async fn delete_alias(&self, request: pb::DeleteAliasRequest) -> ServiceResult<pb::AliasMove>;
    /// Every alias of a model.
    async fn list_aliases(&self, name: &str) -> ServiceResult<Vec<pb::Alias>>;
    /// The recorded moves of a model's aliases (or one alias), oldest first.
    async fn alias_history(
        &self,
        request: pb::AliasHistoryRequest,
    ) -> ServiceResult<pb::AliasHistoryResponse>;
}

/// A cloneable handle on a registry: the local implementation when the role
/// runs in this process, a [`RemoteRegistry`] when it does not.
pub type RegistryClient = Arc<dyn RegistryService>;

/// The stable lowercase name of a version status (`pending_upload`, `ready`, `failed`).
pub fn status_name(status: pb::VersionStatus) -> &'static str {
    match status {
        pb::VersionStatus::Unspecified => "unspecified",
        pb::VersionStatus::PendingUpload => "pending_upload",
        pb::VersionStatus::Ready => "ready",
        pb::VersionStatus::Failed => "failed",
    }
}
