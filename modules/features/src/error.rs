//! The features role's errors and their [`ErrorCode`]s.

use mlserve_proto::{ErrorCode, ServiceError};

/// Everything that can go wrong in the features role.
#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    /// Invalid input: a malformed definition, row, reference or request.
    #[error("{0}")]
    Invalid(String),
    /// An unknown entity, feature view, feature or pipeline.
    #[error("{0}")]
    NotFound(String),
    /// A definition change that would break existing data or users.
    #[error("{0}")]
    Conflict(String),
    /// The online store (Redis) did not answer in time or is down.
    #[error("online store unavailable: {0}")]
    OnlineUnavailable(String),
    /// The SQL database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// An image or text transform failed, with the transform's own code.
    #[error("{1}")]
    Transform(ErrorCode, String),
    /// A bug or an unexpected state.
    #[error("{0}")]
    Internal(String),
}

/// Result alias of the features role.
pub type Result<T, E = FeaturesError> = std::result::Result<T, E>;

impl FeaturesError {
    /// The shared code this error maps to.
    pub fn code(&self) -> ErrorCode {
        match self {
            FeaturesError::Invalid(_) => ErrorCode::BadRequest,
            FeaturesError::NotFound(_) => ErrorCode::NotFound,
            FeaturesError::Conflict(_) => ErrorCode::Conflict,
            FeaturesError::OnlineUnavailable(_) => ErrorCode::Unavailable,
            FeaturesError::Database(err) => match err {
                // Down, restarting (a statement in flight when PostgreSQL
                // stops fails with 57P01), unreachable: retry later.
                err if mlserve_common::db::is_unavailable(err) => ErrorCode::Unavailable,
                // Two applies of the same definition raced for one version.
                sqlx::Error::Database(db) if db.is_unique_violation() => ErrorCode::Conflict,
                _ => ErrorCode::Internal,
            },
            FeaturesError::Transform(code, _) => *code,
            FeaturesError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Shorthand for [`FeaturesError::Invalid`].
pub fn invalid(message: impl Into<String>) -> FeaturesError {
    FeaturesError::Invalid(message.into())
}

impl From<FeaturesError> for ServiceError {
    fn from(err: FeaturesError) -> Self {
        if matches!(err.code(), ErrorCode::Internal) {
            tracing::error!(error = %err, "features internal error");
        }
        ServiceError::new(err.code(), err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_code() {
        let cases = [
            (invalid("x"), ErrorCode::BadRequest),
            (FeaturesError::NotFound("x".into()), ErrorCode::NotFound),
            (FeaturesError::Conflict("x".into()), ErrorCode::Conflict),
            (
                FeaturesError::OnlineUnavailable("x".into()),
                ErrorCode::Unavailable,
            ),
            (
                FeaturesError::Database(sqlx::Error::PoolTimedOut),
                ErrorCode::Unavailable,
            ),
            (
                FeaturesError::Database(sqlx::Error::RowNotFound),
                ErrorCode::Internal,
            ),
            (
                FeaturesError::Transform(ErrorCode::PayloadTooLarge, "x".into()),
                ErrorCode::PayloadTooLarge,
            ),
            (FeaturesError::Internal("x".into()), ErrorCode::Internal),
        ];
        for (err, code) in cases {
            assert_eq!(ServiceError::from(err).code, code);
        }
    }
}
