//! The gateway's errors and their mapping onto the shared [`ErrorCode`].

use mlserve_proto::{ErrorCode, ServiceError};

/// Why the gateway refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No credential, or one that does not verify.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is over its rate limit.
    #[error("rate limit exceeded: retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a token is available.
        retry_after_secs: u64,
    },
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The request body is over the limit.
    #[error("request body is over the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// No model, pipeline or key of that name.
    #[error("{0}")]
    NotFound(String),
    /// Every endpoint is down or at capacity, the deadline passed, or a
    /// dependency (Redis, the database) is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// Something inside the gateway failed.
    #[error("{0}")]
    Internal(String),
    /// A service the gateway called refused or failed: passed on with its
    /// own code (a 409, 413, 429 or 501 stays itself).
    #[error("{0}")]
    Downstream(#[from] ServiceError),
}

impl GatewayError {
    /// The shared code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            GatewayError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            GatewayError::RateLimited { .. } => ErrorCode::RateLimited,
            GatewayError::BadRequest(_) => ErrorCode::BadRequest,
            GatewayError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            GatewayError::NotFound(_) => ErrorCode::NotFound,
            GatewayError::Unavailable(_) => ErrorCode::Unavailable,
            GatewayError::Internal(_) => ErrorCode::Internal,
            GatewayError::Downstream(err) => err.code,
        }
    }
}

impl From<GatewayError> for ServiceError {
    fn from(err: GatewayError) -> Self {
        match err {
            GatewayError::Downstream(err) => err,
            other => ServiceError::new(other.code(), other.to_string()),
        }
    }
}

impl From<sqlx::Error> for GatewayError {
    fn from(err: sqlx::Error) -> Self {
        GatewayError::Unavailable(format!("api key database: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_codes() {
        let cases = [
            (GatewayError::Unauthenticated("x".into()), 401),
            (
                GatewayError::RateLimited {
                    retry_after_secs: 1,
                },
                429,
            ),
            (GatewayError::BadRequest("x".into()), 400),
            (GatewayError::PayloadTooLarge(1), 413),
            (GatewayError::NotFound("x".into()), 404),
            (GatewayError::Unavailable("x".into()), 503),
            (GatewayError::Internal("x".into()), 500),
            (ServiceError::conflict("x").into(), 409),
            (
                ServiceError::new(ErrorCode::PayloadTooLarge, "x").into(),
                413,
            ),
            (ServiceError::new(ErrorCode::RateLimited, "x").into(), 429),
            (ServiceError::unimplemented("x").into(), 501),
        ];
        for (err, status) in cases {
            let service: ServiceError = err.into();
            assert_eq!(service.code.http_status(), status);
        }
    }
}
