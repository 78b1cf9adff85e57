//! The artifact store: object_store over a local directory (the embedded
//! default) or any S3-compatible service. Keys are written once and never
//! overwritten: `<key_prefix>models/<name>/upload/<upload id>/<file path>`
//! (releases before numbering at commit wrote `models/<name>/<version>/<upload id>/...`).
//!
//! On S3 a file is written as a multipart upload, whose parts the store
//! keeps (and bills) until the upload is completed or aborted, invisible to
//! listings. So that one nobody could complete or abort (the store was down
//! when the upload failed, or the registry died) is still found, its upload
//! id is written first as a marker object beside the file,
//! `<version prefix>/=multipart/<file path>` ('=' never appears in a file
//! path a client can give), and removed once the upload is completed or
//! aborted; the collector aborts the uploads of the markers it finds in
//! orphaned prefixes.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use bytes::BytesMut;
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use mlserve_common::config::{ArtifactBackend, RegistryConfig};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{
    MultipartId, MultipartUpload, ObjectMeta, ObjectStore, PutPayload, PutResult, UploadPart,
    WriteMultipart,
};

use crate::error::{RegistryError, Result};
use mlserve_proto::registry::CHUNK_BYTES;

/// Part size of multipart uploads (S3 needs at least 5 MiB per part).
const PART_BYTES: usize = 8 * 1024 * 1024;

/// Parts uploaded concurrently per object.
const PART_CONCURRENCY: usize = 2;

/// The directory of multipart-upload markers inside a version prefix.
const MULTIPART_MARKERS: &str = "=multipart";

/// The artifact store and the key prefix mlserve owns in it.
#[derive(Clone)]
pub struct Artifacts {
    store: Arc<dyn ObjectStore>,
    /// The same store's multipart API with explicit upload ids (S3), so an
    /// abandoned upload can be aborted later; `None`: plain multipart
    /// writes (the local directory, whose leftovers are ordinary files).
    multipart: Option<Arc<dyn MultipartStore>>,
    prefix: String,
}

impl std::fmt::Debug for Artifacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Artifacts({}, prefix {:?})", self.store, self.prefix)
    }
}

/// An object being written in parts; nothing is visible until [`finish`].
///
/// [`finish`]: ObjectWriter::finish
pub struct ObjectWriter {
    inner: WriteMultipart,
    /// The marker holding the upload id (tracked uploads only).
    marker: Option<(Artifacts, ObjectPath)>,
}

impl ObjectWriter {
    /// Queues the next bytes (waits while too many parts are in flight).
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.inner.wait_for_capacity(PART_CONCURRENCY).await?;
        self.inner.put(chunk);
        Ok(())
    }

    /// Completes the object.
    pub async fn finish(self) -> Result<()> {
        self.inner.finish().await?;
        if let Some((artifacts, marker)) = self.marker {
            artifacts.drop_marker(&marker).await;
        }
        Ok(())
    }

    /// Abandons the object (best effort; the collector removes leftovers,
    /// and aborts a tracked upload whose abort failed here).
    pub async fn abort(self) {
        match self.inner.abort().await {
            Ok(()) => {
                if let Some((artifacts, marker)) = self.marker {
                    artifacts.drop_marker(&marker).await;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "aborting a multipart upload failed; the collector aborts it later")
            }
        }
    }
}

/// A multipart upload through [`MultipartStore`], which knows its upload id
/// (S3's own upload object keeps it private).
struct TrackedUpload {
    store: Arc<dyn MultipartStore>,
    path: ObjectPath,
    id: MultipartId,
    next: usize,
    parts: Arc<std::sync::Mutex<Vec<Option<PartId>>>>,
}

impl std::fmt::Debug for TrackedUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrackedUpload({}, upload id {})", self.path, self.id)
    }
}

#[async_trait::async_trait]
impl MultipartUpload for TrackedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let index = self.next;
        self.next += 1;
        let store = self.store.clone();
        let path = self.path.clone();
        let id = self.id.clone();
        let parts = self.parts.clone();
        Box::pin(async move {
            let part = store.put_part(&path, &id, index, data).await?;
            let mut parts = parts.lock().unwrap_or_else(|p| p.into_inner());
            if parts.len() <= index {
                parts.resize(index + 1, None);
            }
            parts[index] = Some(part);
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let parts: Option<Vec<PartId>> = {
            let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
            if parts.len() == self.next {
                parts.iter().cloned().collect()
            } else {
                None
            }
        };
        let Some(parts) = parts else {
            return Err(object_store::Error::Generic {
                store: "multipart",
                source: format!("a part of the upload of {} is missing", self.path).into(),
            });
        };
        self.store
            .complete_multipart(&self.path, &self.id, parts)
            .await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.store.abort_multipart(&self.path, &self.id).await
    }
}

/// The marker of the file at `relative` (`<version prefix>/<path>`).
fn marker_of(relative: &str) -> Option<String> {
    let parts: Vec<&str> = relative.splitn(5, '/').collect();
    (parts.len() == 5).then(|| format!("{}/{MULTIPART_MARKERS}/{}", parts[..4].join("/"), parts[4]))
}

/// Whether the object at `relative` is a multipart-upload marker.
pub fn is_multipart_marker(relative: &str) -> bool {
    marked_file(relative).is_some()
}

/// The file a marker at `relative` stands for; `None` if it is no marker.
fn marked_file(relative: &str) -> Option<String> {
    let parts: Vec<&str> = relative.splitn(6, '/').collect();
    (parts.len() == 6 && parts[4] == MULTIPART_MARKERS)
        .then(|| format!("{}/{}", parts[..4].join("/"), parts[5]))
}

impl Artifacts {
    /// The store `config` describes; local paths are relative to `data_dir`.
    pub fn from_config(config: &RegistryConfig, data_dir: &Path) -> Result<Artifacts> {
        let store: Arc<dyn ObjectStore> = match config.artifact_backend {
            ArtifactBackend::Local => {
                let dir = config.artifact_dir(data_dir);
                std::fs::create_dir_all(&dir).map_err(|e| {
                    RegistryError::Internal(format!(
                        "cannot create the artifact directory '{}': {e}",
                        dir.display()
                    ))
                })?;
                Arc::new(LocalFileSystem::new_with_prefix(&dir)?)
            }
            ArtifactBackend::S3 => {
                let bucket = match config.s3_bucket.as_deref().map(str::trim) {
                    Some(bucket) if !bucket.is_empty() => bucket,
                    _ => {
                        return Err(RegistryError::Invalid(
                            "registry.s3_bucket must be set for the s3 artifact backend".into(),
                        ))
                    }
                };
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(&config.s3_region)
                    .with_allow_http(config.s3_allow_http);
                if let Some(endpoint) = &config.s3_endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                let s3 = Arc::new(builder.build()?);
                let mut artifacts = Artifacts::new(s3.clone(), &config.key_prefix);
                artifacts.multipart = Some(s3);
                return Ok(artifacts);
            }
        };
        Ok(Artifacts::new(store, &config.key_prefix))
    }

    /// Wraps any store; `prefix` (e.g. `mlserve/`) is put before every key.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Artifacts {
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Artifacts {
            store,
            multipart: None,
            prefix,
        }
    }

    /// The full key of `relative` (`models/...`).
    pub fn key(&self, relative: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{relative}", self.prefix))
    }

    /// `key` without the store prefix, as stored in the database.
    pub fn relative(&self, key: &ObjectPath) -> String {
        let key = key.as_ref();
        key.strip_prefix(&self.prefix).unwrap_or(key).to_string()
    }

    /// Starts writing the object at `relative`.
    pub async fn writer(&self, relative: &str) -> Result<ObjectWriter> {
        let (Some(store), Some(marker)) = (&self.multipart, marker_of(relative)) else {
            let upload = self.store.put_multipart(&self.key(relative)).await?;
            return Ok(ObjectWriter {
                inner: WriteMultipart::new_with_chunk_size(upload, PART_BYTES),
                marker: None,
            });
        };
        let path = self.key(relative);
        let id = store.create_multipart(&path).await?;
        let marker = self.key(&marker);
        let recorded = self
            .store
            .put(&marker, PutPayload::from(id.clone().into_bytes()))
            .await;
        if let Err(err) = recorded {
            // Untracked, it could leak: give it up now.
            if let Err(e) = store.abort_multipart(&path, &id).await {
                tracing::warn!(key = %path, error = %e, "aborting an untracked multipart upload failed");
            }
            return Err(err.into());
        }
        let upload = TrackedUpload {
            store: store.clone(),
            path,
            id,
            next: 0,
            parts: Arc::default(),
        };
        Ok(ObjectWriter {
            inner: WriteMultipart::new_with_chunk_size(Box::new(upload), PART_BYTES),
            marker: Some((self.clone(), marker)),
        })
    }

    /// Deletes a marker whose upload was completed or aborted (best effort:
    /// the collector deletes a leftover one).
    async fn drop_marker(&self, marker: &ObjectPath) {
        if let Err(err) = self.delete(marker).await {
            tracing::warn!(key = %marker, error = %err, "multipart marker left for the collector");
        }
    }

    /// Removes one listed object; for a multipart marker, first aborts the
    /// upload it records (an upload already completed or aborted is gone
    /// from the store: fine). An unreachable store keeps the marker for the
    /// next collection.
    pub async fn remove(&self, meta: &ObjectMeta) -> Result<()> {
        let relative = self.relative(&meta.location);
        if let (Some(store), Some(file)) = (&self.multipart, marked_file(&relative)) {
            let id = match self.store.get(&meta.location).await {
                Ok(found) => found.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => return Ok(()),
                Err(err) => return Err(err.into()),
            };
            let id = String::from_utf8_lossy(&id).trim().to_string();
            match store.abort_multipart(&self.key(&file), &id).await {
                Ok(()) => tracing::info!(key = %file, "abandoned multipart upload aborted"),
                Err(err @ object_store::Error::Generic { .. }) => return Err(err.into()),
                Err(err) => {
                    tracing::debug!(key = %file, error = %err, "multipart upload already gone")
                }
            }
        }
        self.delete(&meta.location).await
    }

    /// Streams the object at `relative` in chunks of about
    /// [`CHUNK_BYTES`] (stores hand out small pieces, 8 KiB for local files;
    /// one gRPC message or HTTP chunk each would be wasteful).
    pub async fn read(
        &self,
        relative: &str,
    ) -> Result<BoxStream<'static, object_store::Result<Bytes>>> {
        let inner = self.store.get(&self.key(relative)).await?.into_stream();
        Ok(coalesce(inner, CHUNK_BYTES))
    }

    /// Every object under `relative` (a `models/...` prefix).
    pub async fn list(&self, relative: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = self.key(relative);
        let mut stream = self.store.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            out.push(meta?);
        }
        Ok(out)
    }

    /// Deletes one object; a missing object is not an error.
    pub async fn delete(&self, key: &ObjectPath) -> Result<()> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Deletes every object under `relative` (aborting the multipart
    /// uploads of its markers); returns how many.
    pub async fn delete_prefix(&self, relative: &str) -> Result<usize> {
        let objects = self.list(relative).await?;
        for meta in &objects {
            self.remove(meta).await?;
        }
        Ok(objects.len())
    }
}

/// Joins small chunks of `inner` into chunks of at least `size` bytes (the
/// last one may be shorter); at most about `size` bytes are buffered.
fn coalesce(
    inner: BoxStream<'static, object_store::Result<Bytes>>,
    size: usize,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    stream::unfold(Some(inner), move |inner| async move {
        let mut inner = inner?;
        let mut buffer = BytesMut::new();
        loop {
            match inner.next().await {
                Some(Ok(chunk)) if buffer.is_empty() && chunk.len() >= size => {
                    return Some((Ok(chunk), Some(inner)));
                }
                Some(Ok(chunk)) => {
                    buffer.extend_from_slice(&chunk);
                    if buffer.len() >= size {
                        return Some((Ok(buffer.freeze()), Some(inner)));
                    }
                }
                Some(Err(err)) => return Some((Err(err), None)),
                None if buffer.is_empty() => return None,
                None => return Some((Ok(buffer.freeze()), None)),
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_sit_beside_the_file_in_its_version_prefix() {
        let file = "models/m/upload/0123abcd/sub/weights.bin";
        let marker = marker_of(file).unwrap();
        assert_eq!(
            marker,
            "models/m/upload/0123abcd/=multipart/sub/weights.bin"
        );
        assert_eq!(marked_file(&marker).as_deref(), Some(file));
        assert_eq!(marked_file(file), None);
        assert!(is_multipart_marker(&marker) && !is_multipart_marker(file));
        assert_eq!(marker_of("models/m/upload"), None);
    }

    #[tokio::test]
    async fn small_chunks_are_joined_and_nothing_is_lost() {
        let pieces: Vec<object_store::Result<Bytes>> =
            (0..25u8).map(|i| Ok(Bytes::from(vec![i; 10]))).collect();
        let out: Vec<Bytes> = coalesce(stream::iter(pieces).boxed(), 64)
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert_eq!(
            out.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [70, 70, 70, 40]
        );
        let joined: Vec<u8> = out.concat();
        assert_eq!(
            joined,
            (0..25u8).flat_map(|i| vec![i; 10]).collect::<Vec<_>>()
        );
    }
}
