//! The training role's errors and their [`ErrorCode`]s.

use mlserve_proto::{ErrorCode, ServiceError};

use crate::validate::SpecError;

/// Everything that can go wrong in the training role's API.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    /// A workflow or a submission that does not validate.
    #[error("{0}")]
    Spec(#[from] SpecError),
    /// Other invalid input (an unknown state filter, a bad offset).
    #[error("{0}")]
    Invalid(String),
    /// An unknown workflow, run or step.
    #[error("{0}")]
    NotFound(String),
    /// The run is in a state that does not allow the operation.
    #[error("{0}")]
    Conflict(String),
    /// The SQL database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The object store failed.
    #[error("artifact store: {0}")]
    Artifacts(String),
    /// A bug or an unexpected state.
    #[error("{0}")]
    Internal(String),
}

/// Result alias of the training role.
pub type Result<T, E = TrainingError> = std::result::Result<T, E>;

impl TrainingError {
    /// The shared code this error maps to.
    pub fn code(&self) -> ErrorCode {
        match self {
            TrainingError::Spec(_) | TrainingError::Invalid(_) => ErrorCode::BadRequest,
            TrainingError::NotFound(_) => ErrorCode::NotFound,
            TrainingError::Conflict(_) => ErrorCode::Conflict,
            TrainingError::Database(err) => match err {
                err if mlserve_common::db::is_unavailable(err) => ErrorCode::Unavailable,
                sqlx::Error::Database(db) if db.is_unique_violation() => ErrorCode::Conflict,
                _ => ErrorCode::Internal,
            },
            TrainingError::Artifacts(_) => ErrorCode::Unavailable,
            TrainingError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<TrainingError> for ServiceError {
    fn from(err: TrainingError) -> Self {
        if matches!(err.code(), ErrorCode::Internal) {
            tracing::error!(error = %err, "training internal error");
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
            (
                TrainingError::Spec(SpecError::DuplicateStep("a".into())),
                ErrorCode::BadRequest,
            ),
            (TrainingError::Invalid("x".into()), ErrorCode::BadRequest),
            (TrainingError::NotFound("x".into()), ErrorCode::NotFound),
            (TrainingError::Conflict("x".into()), ErrorCode::Conflict),
            (
                TrainingError::Database(sqlx::Error::PoolTimedOut),
                ErrorCode::Unavailable,
            ),
            (TrainingError::Artifacts("x".into()), ErrorCode::Unavailable),
            (TrainingError::Internal("x".into()), ErrorCode::Internal),
        ];
        for (err, code) in cases {
            assert_eq!(ServiceError::from(err).code, code);
        }
    }
}
