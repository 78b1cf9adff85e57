//! The registry role: configuration section `[registry]`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Where the registry keeps artifacts.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactBackend {
    /// A local directory (`registry.artifact_dir`).
    #[default]
    Local,
    /// Any S3-compatible store (AWS S3, MinIO, s3s, Garage, ...); credentials
    /// come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and
    /// `AWS_SESSION_TOKEN`) in the environment.
    S3,
}

/// Test-only fault injection points of the registry (the `testing` feature;
/// a shipped build has no such key).
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RegistryFault {
    /// No fault (production).
    #[default]
    None,
    /// Abort the process after a version's artifacts are written and before
    /// its row commits ready: the crash-safety tests use it.
    CrashBeforeCommit,
}

/// The registry role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// gRPC endpoint of a registry role in another process (e.g.
    /// `http://registry:8001`), used by the roles here that need the registry
    /// (inference following aliases, gateway pipelines) when this process
    /// does not run the registry role; unset: the local one.
    pub endpoint: Option<String>,
    /// SQL database of the metadata: `postgres://...` or `sqlite://PATH`;
    /// unset means SQLite in `<server.data_dir>/mlserve.db`.
    pub database_url: Option<String>,
    /// local | s3.
    pub artifact_backend: ArtifactBackend,
    /// Directory of the local artifact store; unset means
    /// `<server.data_dir>/artifacts`.
    pub artifact_dir: Option<PathBuf>,
    /// S3 endpoint URL (MinIO, s3s...); unset means AWS itself.
    pub s3_endpoint: Option<String>,
    /// S3 bucket (must exist; required by the s3 backend).
    pub s3_bucket: Option<String>,
    /// S3 region.
    pub s3_region: String,
    /// Allow plain `http://` endpoints (local S3 servers).
    pub s3_allow_http: bool,
    /// Key prefix inside the bucket (or the directory), e.g. `mlserve/`;
    /// empty is no prefix.
    pub key_prefix: String,
    /// Largest total size of one version's files in bytes (larger: 413).
    pub max_upload_bytes: u64,
    /// Most files in one version.
    pub max_files_per_version: usize,
    /// How long an upload may stay pending before the collector fails it and
    /// deletes its objects; also the minimum age of an orphan object before
    /// it is deleted.
    #[serde(with = "duration")]
    pub gc_grace: Duration,
    /// Time between orphan collections (one also runs at start); zero: only
    /// at start.
    #[serde(with = "duration")]
    pub gc_interval: Duration,
    /// A fault to inject (none | crash_before_commit); only in builds with
    /// the `testing` feature, which the test suite's build switches on.
    #[cfg(feature = "testing")]
    pub fault: RegistryFault,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            endpoint: None,
            database_url: None,
            artifact_backend: ArtifactBackend::Local,
            artifact_dir: None,
            s3_endpoint: None,
            s3_bucket: None,
            s3_region: "us-east-1".into(),
            s3_allow_http: false,
            key_prefix: String::new(),
            max_upload_bytes: 8 * 1024 * 1024 * 1024,
            max_files_per_version: 256,
            gc_grace: Duration::from_secs(3600),
            gc_interval: Duration::from_secs(600),
            #[cfg(feature = "testing")]
            fault: RegistryFault::None,
        }
    }
}

impl RegistryConfig {
    /// The local artifact directory, `data_dir/artifacts` unless set.
    pub fn artifact_dir(&self, data_dir: &Path) -> PathBuf {
        self.artifact_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("artifacts"))
    }
}
