//! The registry service contract: registered models, versions with their
//! files, aliases and alias history. The trait, its client (local or gRPC)
//! and the gRPC adapters are generated from `proto/registry.proto`. Only
//! `READY` versions are visible: a version being uploaded, or one whose
//! upload failed, is `NotFound` to every call.
//!
//! Uploads and downloads are streams of chunks, so a large artifact is never
//! held in memory on either side of the boundary.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use tokio_stream::{Stream, StreamExt};

use crate::rpc::ServiceStream;
use crate::{CallContext, ServiceError, ServiceResult};

use pb::{download_part, upload_part};

/// Generated protobuf messages and gRPC stubs of package `registry`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("registry");
}

include!(concat!(env!("OUT_DIR"), "/registry.service.rs"));

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

/// The `CreateVersion` stream of a new version: its header, then its files.
pub fn upload_parts(
    request: pb::CreateVersionRequest,
    files: UploadStream,
) -> ServiceStream<pb::UploadPart> {
    let header = pb::UploadPart {
        part: Some(upload_part::Part::Header(request)),
    };
    let parts = files.map(|item| {
        let part = match item? {
            UploadItem::File(file) => upload_part::Part::File(file),
            UploadItem::Chunk(chunk) => upload_part::Part::Chunk(chunk),
        };
        Ok(pb::UploadPart { part: Some(part) })
    });
    Box::pin(tokio_stream::once(Ok(header)).chain(parts))
}

/// A `CreateVersion` stream taken apart: the header, then the files.
pub async fn split_upload(
    mut parts: ServiceStream<pb::UploadPart>,
) -> ServiceResult<(pb::CreateVersionRequest, UploadStream)> {
    let header = match parts.next().await.transpose()? {
        Some(pb::UploadPart {
            part: Some(upload_part::Part::Header(header)),
        }) => header,
        _ => {
            return Err(ServiceError::bad_request(
                "an upload must start with the version header",
            ))
        }
    };
    let files = parts.map(|part| match part?.part {
        Some(upload_part::Part::File(file)) => Ok(UploadItem::File(file)),
        Some(upload_part::Part::Chunk(chunk)) => Ok(UploadItem::Chunk(chunk)),
        _ => Err(ServiceError::bad_request(
            "an upload carries one header, then files and chunks",
        )),
    });
    Ok((header, Box::pin(files)))
}

/// The `Download` stream of one file: its description, then its bytes.
pub fn download_parts(file: pb::VersionFile, bytes: ByteStream) -> ServiceStream<pb::DownloadPart> {
    let head = pb::DownloadPart {
        part: Some(download_part::Part::File(file)),
    };
    let chunks = bytes.map(|chunk| {
        Ok(pb::DownloadPart {
            part: Some(download_part::Part::Chunk(chunk?)),
        })
    });
    Box::pin(tokio_stream::once(Ok(head)).chain(chunks))
}

/// A `Download` stream taken apart: the file's description, then its bytes.
pub async fn split_download(
    mut parts: ServiceStream<pb::DownloadPart>,
) -> ServiceResult<(pb::VersionFile, ByteStream)> {
    let file = match parts.next().await.transpose()? {
        Some(pb::DownloadPart {
            part: Some(download_part::Part::File(file)),
        }) => file,
        _ => {
            return Err(ServiceError::internal(
                "download stream did not start with the file",
            ))
        }
    };
    let chunks = parts.map(|part| match part?.part {
        Some(download_part::Part::Chunk(chunk)) => Ok(chunk),
        _ => Err(ServiceError::internal(
            "download stream sent something other than a chunk",
        )),
    });
    Ok((file, Box::pin(chunks)))
}

/// The registry calls as a caller writes them: the streaming ones in their
/// natural shapes, the lookups by name.
#[async_trait]
pub trait RegistryCalls: RegistryService {
    /// Uploads a new version's files (see `CreateVersion`).
    async fn upload(
        &self,
        ctx: CallContext,
        request: pb::CreateVersionRequest,
        files: UploadStream,
    ) -> ServiceResult<pb::ModelVersion> {
        self.create_version(ctx, upload_parts(request, files)).await
    }

    /// Streams one file of a ready version, its description first.
    async fn download_file(
        &self,
        ctx: CallContext,
        name: &str,
        version: u64,
        path: &str,
    ) -> ServiceResult<(pb::VersionFile, ByteStream)> {
        let request = pb::DownloadRequest {
            name: name.into(),
            version,
            path: path.into(),
        };
        split_download(self.download(ctx, request).await?).await
    }

    /// The version an alias points at.
    async fn resolve(
        &self,
        ctx: CallContext,
        name: &str,
        alias: &str,
    ) -> ServiceResult<pb::ModelVersion> {
        let request = pb::GetAliasRequest {
            name: name.into(),
            alias: alias.into(),
        };
        self.resolve_alias(ctx, request).await
    }
}

impl<T: RegistryService + ?Sized> RegistryCalls for T {}

/// The stable lowercase name of a version status (`pending_upload`, `ready`, `failed`).
pub fn status_name(status: pb::VersionStatus) -> &'static str {
    match status {
        pb::VersionStatus::Unspecified => "unspecified",
        pb::VersionStatus::PendingUpload => "pending_upload",
        pb::VersionStatus::Ready => "ready",
        pb::VersionStatus::Failed => "failed",
    }
}
