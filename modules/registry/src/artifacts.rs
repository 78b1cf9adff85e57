//! The artifact store: object_store over a local directory (the embedded
//! default) or any S3-compatible service. Keys are written once and never
//! overwritten: `<key_prefix>models/<name>/upload/<upload id>/<file path>`
//! (releases before numbering at commit wrote `models/<name>/<version>/<upload id>/...`).

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use bytes::BytesMut;
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use mlserve_common::config::{ArtifactBackend, RegistryConfig};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, WriteMultipart};

use crate::error::{RegistryError, Result};
use mlserve_proto::registry::CHUNK_BYTES;

/// Part size of multipart uploads (S3 needs at least 5 MiB per part).
const PART_BYTES: usize = 8 * 1024 * 1024;

/// Parts uploaded concurrently per object.
const PART_CONCURRENCY: usize = 2;

/// The artifact store and the key prefix mlserve owns in it.
#[derive(Clone)]
pub struct Artifacts {
    store: Arc<dyn ObjectStore>,
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
        Ok(())
    }

    /// Abandons the object (best effort; the collector removes leftovers).
    pub async fn abort(self) {
        if let Err(err) = self.inner.abort().await {
            tracing::warn!(error = %err, "aborting a multipart upload failed");
        }
    }
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
                Arc::new(builder.build()?)
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
        Artifacts { store, prefix }
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
        let upload = self.store.put_multipart(&self.key(relative)).await?;
        Ok(ObjectWriter {
            inner: WriteMultipart::new_with_chunk_size(upload, PART_BYTES),
        })
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

    /// Deletes every object under `relative`; returns how many.
    pub async fn delete_prefix(&self, relative: &str) -> Result<usize> {
        let objects = self.list(relative).await?;
        for meta in &objects {
            self.delete(&meta.location).await?;
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
