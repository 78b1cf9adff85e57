//! The registry's errors, each mapped onto the one shared [`ErrorCode`].

use mlserve_proto::{ErrorCode, ServiceError};

/// What can go wrong in the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A name, alias, tag, path or parameter is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// An uploaded file is refused (pickle, executable, archive, bad ONNX...).
    #[error("{0}")]
    Refused(String),
    /// The client's sha256 does not match the bytes received.
    #[error("checksum mismatch for '{path}': expected sha256 {expected}, received {actual}")]
    ChecksumMismatch {
        /// The file.
        path: String,
        /// What the client said.
        expected: String,
        /// What the server computed.
        actual: String,
    },
    /// Unknown model, version, alias or file.
    #[error("{0}")]
    NotFound(String),
    /// The model exists already.
    #[error("{0}")]
    Conflict(String),
    /// The upload is over `registry.max_upload_bytes`.
    #[error("upload exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The database failed.
    #[error("registry database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The object store failed.
    #[error("artifact store error: {0}")]
    Store(#[from] object_store::Error),
    /// The upload stream failed (client went away, transport error).
    #[error("{0}")]
    Upstream(ServiceError),
    /// Something that should not happen.
    #[error("{0}")]
    Internal(String),
}

impl RegistryError {
    /// The shared code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            RegistryError::Invalid(_)
            | RegistryError::Refused(_)
            | RegistryError::ChecksumMismatch { .. } => ErrorCode::BadRequest,
            RegistryError::NotFound(_) => ErrorCode::NotFound,
            RegistryError::Conflict(_) => ErrorCode::Conflict,
            RegistryError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            RegistryError::Database(_) | RegistryError::Store(_) => ErrorCode::Unavailable,
            RegistryError::Upstream(err) => err.code,
            RegistryError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<RegistryError> for ServiceError {
    fn from(err: RegistryError) -> Self {
        if let RegistryError::Upstream(inner) = err {
            return inner;
        }
        ServiceError::new(err.code(), err.to_string())
    }
}

/// Result alias inside the registry.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_client_errors_and_stores_are_unavailable() {
        let mismatch = RegistryError::ChecksumMismatch {
            path: "model.onnx".into(),
            expected: "aa".into(),
            actual: "bb".into(),
        };
        assert_eq!(mismatch.code().http_status(), 400);
        assert!(ServiceError::from(mismatch).message.contains("model.onnx"));
        assert_eq!(
            RegistryError::TooLarge { limit: 1 }.code().http_status(),
            413
        );
        assert_eq!(
            RegistryError::Conflict("x".into()).code().http_status(),
            409
        );
        let db = RegistryError::Database(sqlx::Error::PoolTimedOut);
        assert_eq!(db.code().http_status(), 503);
        let upstream = RegistryError::Upstream(ServiceError::unavailable("gone"));
        assert_eq!(ServiceError::from(upstream).code, ErrorCode::Unavailable);
    }
}
