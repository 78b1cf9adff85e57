//! The local cache of registry artifacts: one file per sha256 under the
//! cache root, so a restart (or another version sharing a file) never
//! downloads it again. A download goes to a temporary file, is hashed as it
//! is written (on a blocking thread), checked against the registry's sha256
//! and size, then renamed into place. A cached file is hashed again before
//! every load: a corrupted one is discarded and downloaded again.
//!
//! A version is laid out for the model manager as a staging directory of
//! hard links (copies across file systems) into the cache:
//! `<root>/stage/<model>/v<version>/{config.toml, <version>/<files>}`.
//!
//! `tmp/` and `stage/` are the working state of the one process using the
//! cache: a process killed in the middle of a download or a version switch
//! leaves a partial download or a staged version nobody serves, so they are
//! cleared when the next one starts ([`ArtifactCache::clear_working_dirs`]).

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use futures_util::StreamExt;
use mlserve_proto::registry::pb::{ModelVersion, VersionFile};
use mlserve_proto::registry::{RegistryCalls, RegistryClient};
use mlserve_proto::CallContext;
use sha2::{Digest, Sha256};

use crate::follow_error::SyncError;

/// Files at the top of a staged version (beside the version directory).
const MODEL_LEVEL_FILES: [&str; 2] = ["config.toml", "config.pbtxt"];

/// What `served/<model>.json` holds: the version a model served last.
#[derive(serde::Serialize, serde::Deserialize)]
struct ServedRecord {
    registered: String,
    version: u64,
    /// (path, sha256, size) of every file.
    files: Vec<(String, String, u64)>,
}

/// Numbers this process's temporary download files.
static DOWNLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Where a cached file came from this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// Already in the cache and its checksum still matched.
    Cached,
    /// Downloaded from the registry now.
    Downloaded,
}

/// The artifact cache rooted at one directory.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    root: PathBuf,
}

impl ArtifactCache {
    /// A cache under `root` (created on first use).
    pub fn new(root: PathBuf) -> ArtifactCache {
        ArtifactCache { root }
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes what a previous process left in the working directories:
    /// partial downloads in `tmp/` and staged versions in `stage/` (it was
    /// killed while downloading or switching, or before it removed the
    /// version it stopped serving). Call it once at start, before the first
    /// sync, when nothing in them belongs to this process; cached files and
    /// the served records stay. Returns how many entries were removed.
    pub async fn clear_working_dirs(&self) -> usize {
        let mut removed = 0;
        for dir in ["tmp", "stage"] {
            let dir = self.root.join(dir);
            let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
                continue;
            };
            while let Ok(Some(entry)) = entries.next_entry().await {
                let path = entry.path();
                let gone = match entry.file_type().await {
                    Ok(kind) if kind.is_dir() => tokio::fs::remove_dir_all(&path).await,
                    _ => tokio::fs::remove_file(&path).await,
                };
                match gone {
                    Ok(()) => removed += 1,
                    Err(err) => {
                        tracing::warn!(path = %path.display(), error = %err, "cannot remove a leftover of the artifact cache")
                    }
                }
            }
        }
        let served = self.root.join("served");
        if let Ok(mut entries) = tokio::fs::read_dir(&served).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "tmp")
                    && tokio::fs::remove_file(&path).await.is_ok()
                {
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(root = %self.root.display(), entries = removed, "artifact cache: leftovers of a previous process removed");
        }
        removed
    }

    /// The cached path of the file with this sha256.
    fn blob(&self, sha256: &str) -> PathBuf {
        self.root.join(sha256)
    }

    /// The file `file` of `model`/`version`, from the cache or downloaded,
    /// its sha256 and size verified either way.
    pub async fn fetch(
        &self,
        registry: &RegistryClient,
        model: &str,
        version: u64,
        file: &VersionFile,
    ) -> Result<(PathBuf, Fetched), SyncError> {
        check_sha256(&file.sha256)?;
        let path = self.blob(&file.sha256);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            let (sha, size) = hash_file(path.clone()).await?;
            if sha == file.sha256 && size == file.size {
                tracing::debug!(model = %model, version, file = %file.path, "artifact cache hit");
                return Ok((path, Fetched::Cached));
            }
            tracing::warn!(model = %model, version, file = %file.path, expected = %file.sha256, found = %sha, "cached artifact is corrupt, downloading it again");
            let _ = tokio::fs::remove_file(&path).await;
        }
        self.download(registry, model, version, file).await?;
        Ok((path, Fetched::Downloaded))
    }

    async fn download(
        &self,
        registry: &RegistryClient,
        model: &str,
        version: u64,
        file: &VersionFile,
    ) -> Result<(), SyncError> {
        let tmp_dir = self.root.join("tmp");
        tokio::fs::create_dir_all(&tmp_dir)
            .await
            .map_err(|e| SyncError::Io(format!("cannot create {}: {e}", tmp_dir.display())))?;
        let (header, mut stream) = registry
            .download_file(CallContext::new(), model, version, &file.path)
            .await
            .map_err(SyncError::Registry)?;
        if header.sha256 != file.sha256 || header.size != file.size {
            return Err(SyncError::Checksum(format!(
                "{}: the registry's download header ({}, {} bytes) does not match the version ({}, {} bytes)",
                file.path, header.sha256, header.size, file.sha256, file.size
            )));
        }
        let tmp = tmp_dir.join(format!(
            "{}.{}.{}.part",
            file.sha256,
            std::process::id(),
            DOWNLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        // The blocking writer hashes what it writes; chunks reach it through a
        // small channel so a slow disk slows the download, not memory.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
        let writer_path = tmp.clone();
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&writer_path)?);
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
                size += chunk.len() as u64;
                out.write_all(&chunk)?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            Ok((hex::encode(hasher.finalize()), size))
        });
        let mut streamed: Result<(), SyncError> = Ok(());
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    if tx.send(bytes).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(err) => {
                    streamed = Err(SyncError::Download(format!("{}: {err}", file.path)));
                    break;
                }
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| SyncError::Io(format!("writer task failed: {e}")))
            .and_then(|r| r.map_err(|e| SyncError::Io(format!("{}: {e}", tmp.display()))));
        let outcome = streamed.and(written).and_then(|(sha, size)| {
            if sha == file.sha256 && size == file.size {
                Ok(())
            } else {
                Err(SyncError::Checksum(format!(
                    "{}: downloaded {size} bytes with sha256 {sha}, the registry recorded {} bytes with sha256 {}",
                    file.path, file.size, file.sha256
                )))
            }
        });
        if let Err(err) = outcome {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(err);
        }
        tokio::fs::rename(&tmp, self.blob(&file.sha256))
            .await
            .map_err(|e| {
                SyncError::Io(format!("cannot move {} into the cache: {e}", tmp.display()))
            })?;
        tracing::info!(model = %model, version, file = %file.path, bytes = file.size, "artifact downloaded");
        Ok(())
    }

    /// Lays out a version for the model manager and returns its model
    /// directory. `files` are (registry file, cached path) pairs.
    pub async fn stage(
        &self,
        model: &str,
        version: u64,
        files: Vec<(VersionFile, PathBuf)>,
    ) -> Result<PathBuf, SyncError> {
        let dir = self.stage_dir(model, version);
        let target = dir.clone();
        tokio::task::spawn_blocking(move || stage_blocking(&target, version, &files))
            .await
            .map_err(|e| SyncError::Io(format!("staging task failed: {e}")))??;
        Ok(dir)
    }

    /// Removes a staged version (after it stopped serving).
    pub async fn remove_stage(&self, model: &str, version: u64) {
        let dir = self.stage_dir(model, version);
        if let Err(err) = tokio::fs::remove_dir_all(&dir).await {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(model = %model, version, error = %err, "cannot remove a staged version");
            }
        }
    }

    /// Records that `model` serves `version` (its registry metadata), so a
    /// restart while the registry is unreachable can serve it from the cache.
    pub async fn save_served(&self, model: &str, version: &ModelVersion) {
        let record = ServedRecord {
            registered: version.name.clone(),
            version: version.version,
            files: version
                .files
                .iter()
                .map(|f| (f.path.clone(), f.sha256.clone(), f.size))
                .collect(),
        };
        let dir = self.root.join("served");
        let path = dir.join(format!("{model}.json"));
        let tmp = dir.join(format!("{model}.json.tmp"));
        let text = serde_json::to_vec(&record).unwrap_or_default();
        let written = async {
            tokio::fs::create_dir_all(&dir).await?;
            tokio::fs::write(&tmp, &text).await?;
            tokio::fs::rename(&tmp, &path).await
        };
        if let Err(err) = written.await {
            tracing::warn!(model = %model, error = %err, "cannot record the served version");
        }
    }

    /// The version [`ArtifactCache::save_served`] recorded last for `model`.
    pub async fn load_served(&self, model: &str) -> Option<ModelVersion> {
        let path = self.root.join("served").join(format!("{model}.json"));
        let text = tokio::fs::read(&path).await.ok()?;
        let record: ServedRecord = serde_json::from_slice(&text).ok()?;
        Some(ModelVersion {
            name: record.registered,
            version: record.version,
            files: record
                .files
                .into_iter()
                .map(|(path, sha256, size)| VersionFile { path, sha256, size })
                .collect(),
            ..Default::default()
        })
    }

    fn stage_dir(&self, model: &str, version: u64) -> PathBuf {
        self.root
            .join("stage")
            .join(model)
            .join(format!("v{version}"))
    }
}

fn stage_blocking(
    dir: &Path,
    version: u64,
    files: &[(VersionFile, PathBuf)],
) -> Result<(), SyncError> {
    let io = |what: &str, path: &Path, e: std::io::Error| {
        SyncError::Io(format!("cannot {what} {}: {e}", path.display()))
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io("clear", dir, e))?;
    }
    let version_dir = dir.join(version.to_string());
    std::fs::create_dir_all(&version_dir).map_err(|e| io("create", &version_dir, e))?;
    for (file, cached) in files {
        let relative = safe_relative(&file.path)?;
        let destination = if MODEL_LEVEL_FILES.contains(&file.path.as_str()) {
            dir.join(&relative)
        } else {
            version_dir.join(&relative)
        };
        if let Some(parent) = destination.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
        }
        if std::fs::hard_link(cached, &destination).is_err() {
            std::fs::copy(cached, &destination).map_err(|e| io("copy into", &destination, e))?;
        }
    }
    Ok(())
}

/// A registry file path as a relative path that stays inside its directory.
fn safe_relative(path: &str) -> Result<PathBuf, SyncError> {
    let relative = Path::new(path);
    let normal = !path.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if normal {
        Ok(relative.to_path_buf())
    } else {
        Err(SyncError::Checksum(format!(
            "the registry listed a file path that leaves the version: '{path}'"
        )))
    }
}

/// A sha256 must be 64 lowercase hex digits (it names a cache file).
fn check_sha256(sha256: &str) -> Result<(), SyncError> {
    let valid = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if valid {
        Ok(())
    } else {
        Err(SyncError::Checksum(format!(
            "the registry gave an invalid sha256 '{sha256}'"
        )))
    }
}

/// The sha256 (hex) and size of a file, computed on a blocking thread.
pub async fn hash_file(path: PathBuf) -> Result<(String, u64), SyncError> {
    tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            size += n as u64;
        }
        Ok((hex::encode(hasher.finalize()), size))
    })
    .await
    .map_err(|e| SyncError::Io(format!("hashing task failed: {e}")))?
    .map_err(|e| SyncError::Io(format!("cannot hash a cached artifact: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_start_clears_partial_downloads_and_stale_stages_but_keeps_the_cache() {
        let root = std::env::temp_dir().join(format!("mlserve-clear-{}", fastrand::u64(..)));
        let blob = "a".repeat(64);
        for dir in ["tmp", "stage/m/v3/3", "served"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join(&blob), "whole").unwrap();
        std::fs::write(root.join(format!("tmp/{blob}.1.0.part")), "half").unwrap();
        std::fs::write(root.join("stage/m/v3/3/model.onnx"), "onnx").unwrap();
        std::fs::write(root.join("served/m.json"), "{}").unwrap();
        std::fs::write(root.join("served/m.json.tmp"), "{").unwrap();
        let cache = ArtifactCache::new(root.clone());
        assert_eq!(cache.clear_working_dirs().await, 3);
        assert!(root.join(&blob).exists() && root.join("served/m.json").exists());
        assert!(!root.join("stage/m").exists() && !root.join("served/m.json.tmp").exists());
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        assert_eq!(cache.clear_working_dirs().await, 0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn paths_that_leave_the_version_are_refused() {
        for bad in ["", "../x", "/etc/passwd", "a/../../b", "./a"] {
            assert!(safe_relative(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            safe_relative("a/b.onnx").unwrap(),
            PathBuf::from("a/b.onnx")
        );
    }

    #[test]
    fn only_lowercase_hex_sha256_names_a_cache_file() {
        assert!(check_sha256(&"a".repeat(64)).is_ok());
        for bad in ["", "../../etc", &"A".repeat(64), &"a".repeat(63)] {
            assert!(check_sha256(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn staging_links_config_beside_and_files_inside_the_version() {
        let root = std::env::temp_dir().join(format!("mlserve-stage-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&root).unwrap();
        let blob = |name: &str, text: &str| {
            let path = root.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let file = |path: &str| VersionFile {
            path: path.into(),
            sha256: String::new(),
            size: 0,
        };
        let files = vec![
            (file("model.onnx"), blob("b1", "onnx")),
            (file("config.toml"), blob("b2", "max_batch_size = 4")),
            (file("extra/labels.txt"), blob("b3", "cat")),
        ];
        let dir = root.join("stage/m/v3");
        stage_blocking(&dir, 3, &files).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("3/model.onnx")).unwrap(),
            "onnx"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("config.toml")).unwrap(),
            "max_batch_size = 4"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("3/extra/labels.txt")).unwrap(),
            "cat"
        );
        stage_blocking(&dir, 3, &files[..1]).unwrap();
        assert!(!dir.join("config.toml").exists(), "a restage starts clean");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
