//! The inference role's errors and their one mapping to [`ErrorCode`].

use mlserve_proto::{ErrorCode, ServiceError};

/// Everything that can go wrong in the inference role.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InferenceError {
    /// The request does not fit the model (names, types, shapes, sizes).
    #[error("{0}")]
    InvalidInput(String),
    /// The model (or version) is not in the repository or not loaded.
    #[error("{0}")]
    ModelNotFound(String),
    /// The model exists but cannot take requests now.
    #[error("{0}")]
    ModelUnavailable(String),
    /// The model's queue is full.
    #[error("exceeds maximum queue size")]
    QueueFull {
        /// When to retry: one batch's measured service time, or as long as
        /// the model has been refusing if longer ([`crate::overload`]), in
        /// whole seconds, at least 1.
        retry_after: std::time::Duration,
    },
    /// The request waited in the queue past its timeout.
    #[error("request timeout expired")]
    Timeout,
    /// Refused on arrival: the queue ahead of it would not let it finish
    /// within its deadline (its timeout or the model's latency objective).
    #[error(
        "refused: predicted to finish in {} ms, past its deadline of {} ms; retry in {} s",
        predicted.as_millis(),
        deadline.as_millis(),
        retry_after.as_secs()
    )]
    DeadlineUnmet {
        /// Predicted time from arrival to completion.
        predicted: std::time::Duration,
        /// The time it was allowed.
        deadline: std::time::Duration,
        /// When to retry: when the queue ahead should have drained enough
        /// for it, or as long as the model has been refusing if longer
        /// ([`crate::overload`]); whole seconds, at least 1.
        retry_after: std::time::Duration,
    },
    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
    /// The repository operation is not allowed in this model control mode.
    #[error("{0}")]
    NotAllowed(String),
    /// A model's files or configuration are invalid.
    #[error("{0}")]
    InvalidModel(String),
    /// ONNX Runtime failed while running a batch.
    #[error("onnx runtime failed: {0}")]
    Backend(String),
    /// An invariant broke inside the server.
    #[error("internal error: {0}")]
    Internal(String),
}

impl InferenceError {
    /// The shared error code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            InferenceError::InvalidInput(_)
            | InferenceError::NotAllowed(_)
            | InferenceError::InvalidModel(_) => ErrorCode::BadRequest,
            InferenceError::ModelNotFound(_) => ErrorCode::NotFound,
            InferenceError::ModelUnavailable(_)
            | InferenceError::QueueFull { .. }
            | InferenceError::Timeout
            | InferenceError::DeadlineUnmet { .. }
            | InferenceError::ShuttingDown => ErrorCode::Unavailable,
            InferenceError::Backend(_) | InferenceError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The `reason` label of the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            InferenceError::InvalidInput(_)
            | InferenceError::InvalidModel(_)
            | InferenceError::NotAllowed(_) => "invalid",
            InferenceError::ModelNotFound(_) | InferenceError::ModelUnavailable(_) => "unavailable",
            InferenceError::QueueFull { .. } => "rejected",
            InferenceError::Timeout => "timeout",
            InferenceError::DeadlineUnmet { .. } => "deadline",
            InferenceError::ShuttingDown => "canceled",
            InferenceError::Backend(_) => "backend",
            InferenceError::Internal(_) => "other",
        }
    }
}

impl From<InferenceError> for ServiceError {
    fn from(err: InferenceError) -> Self {
        let service = ServiceError::new(err.code(), err.to_string());
        match err {
            InferenceError::DeadlineUnmet { retry_after, .. }
            | InferenceError::QueueFull { retry_after } => {
                service.with_retry_after(retry_after.as_secs())
            }
            // The queue it waited in moves: the smallest Retry-After.
            InferenceError::Timeout => service.with_retry_after(1),
            _ => service,
        }
    }
}

impl From<ort::Error> for InferenceError {
    fn from(err: ort::Error) -> Self {
        InferenceError::Backend(err.to_string())
    }
}

/// Result alias for the inference role.
pub type Result<T, E = InferenceError> = std::result::Result<T, E>;
