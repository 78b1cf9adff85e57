//! Why a registry version could not be served.

use mlserve_proto::{ErrorCode, ServiceError};

use crate::error::InferenceError;

/// A failed sync of a followed model; the version serving before keeps serving.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    /// The registry refused or could not answer (alias missing, unreachable).
    #[error("registry: {0}")]
    Registry(ServiceError),
    /// A file's bytes do not match the sha256 and size the registry recorded.
    #[error("checksum mismatch: {0}")]
    Checksum(String),
    /// The download stream broke off.
    #[error("download failed: {0}")]
    Download(String),
    /// The local cache or staging directory failed.
    #[error("cache: {0}")]
    Io(String),
    /// ONNX Runtime or the model config refused the version.
    #[error("load failed: {0}")]
    Load(InferenceError),
    /// The warm-up inference failed.
    #[error("warm-up failed: {0}")]
    Warmup(InferenceError),
}

impl SyncError {
    /// The `reason` label of the sync failure metric and event.
    pub fn reason(&self) -> &'static str {
        match self {
            SyncError::Registry(_) => "registry",
            SyncError::Checksum(_) => "checksum",
            SyncError::Download(_) => "download",
            SyncError::Io(_) => "cache",
            SyncError::Load(_) => "load",
            SyncError::Warmup(_) => "warmup",
        }
    }

    /// Whether trying again later may succeed without a new version
    /// (the registry or the network was down, not the artifact bad).
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Registry(err) => err.code == ErrorCode::Unavailable,
            SyncError::Download(_) | SyncError::Io(_) => true,
            _ => false,
        }
    }

    /// The shared error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            SyncError::Registry(err) => err.code,
            SyncError::Load(err) | SyncError::Warmup(err) => err.code(),
            SyncError::Download(_) => ErrorCode::Unavailable,
            SyncError::Checksum(_) | SyncError::Io(_) => ErrorCode::Internal,
        }
    }
}
