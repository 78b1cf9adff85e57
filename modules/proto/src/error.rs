//! The one error-code mapping shared by every service and transport.

use std::fmt;

/// gRPC metadata key that carries the exact [`ErrorCode`] across a hop, so a
/// remote caller sees the same code a local caller sees.
pub const ERROR_CODE_METADATA: &str = "mlserve-error-code";

/// gRPC metadata key of [`ServiceError::retry_after_secs`]: the same name and
/// value (whole seconds) as HTTP's `Retry-After` header.
pub const RETRY_AFTER_METADATA: &str = "retry-after";

/// The small set of error kinds every module error maps into. This enum alone
/// owns the HTTP status and the gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Malformed or invalid input (HTTP 400, gRPC INVALID_ARGUMENT).
    BadRequest,
    /// Missing or invalid credentials (HTTP 401, gRPC UNAUTHENTICATED).
    Unauthenticated,
    /// Valid credentials without the scope the call needs (HTTP 403, gRPC PERMISSION_DENIED).
    PermissionDenied,
    /// Unknown model, version or resource (HTTP 404, gRPC NOT_FOUND).
    NotFound,
    /// The resource exists already or is in a conflicting state (HTTP 409, gRPC ALREADY_EXISTS).
    Conflict,
    /// The request body is over the configured limit (HTTP 413, gRPC RESOURCE_EXHAUSTED).
    PayloadTooLarge,
    /// The caller sent too many requests (HTTP 429, gRPC RESOURCE_EXHAUSTED).
    RateLimited,
    /// Overloaded, not ready, shutting down, or timed out in a queue (HTTP 503, gRPC UNAVAILABLE).
    Unavailable,
    /// The operation is not supported (HTTP 501, gRPC UNIMPLEMENTED).
    Unimplemented,
    /// A bug or an unexpected failure inside the server (HTTP 500, gRPC INTERNAL).
    Internal,
}

impl ErrorCode {
    /// Every code, for round-trip tests and metadata parsing.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Unimplemented,
        ErrorCode::Internal,
    ];

    /// The HTTP status for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Unimplemented => 501,
            ErrorCode::Internal => 500,
        }
    }

    /// The gRPC status code for this code.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::BadRequest => tonic::Code::InvalidArgument,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::Conflict => tonic::Code::AlreadyExists,
            ErrorCode::PayloadTooLarge | ErrorCode::RateLimited => tonic::Code::ResourceExhausted,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Unimplemented => tonic::Code::Unimplemented,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// A stable lowercase name, used in metrics labels and gRPC metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unimplemented => "unimplemented",
            ErrorCode::Internal => "internal",
        }
    }

    /// Parses [`ErrorCode::as_str`] back.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The code a bare gRPC status means when no mlserve metadata came with it.
    pub fn from_grpc(code: tonic::Code) -> ErrorCode {
        match code {
            tonic::Code::InvalidArgument
            | tonic::Code::OutOfRange
            | tonic::Code::FailedPrecondition => ErrorCode::BadRequest,
            tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
            tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::AlreadyExists | tonic::Code::Aborted => ErrorCode::Conflict,
            tonic::Code::ResourceExhausted => ErrorCode::RateLimited,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                ErrorCode::Unavailable
            }
            tonic::Code::Unimplemented => ErrorCode::Unimplemented,
            _ => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a call got before its transport failed, read from the error's
/// kind (never from its text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The connection was never made (or the peer refused the stream before
    /// reading it): the request was not sent, so another endpoint may take it.
    NotSent,
    /// The connection failed after the request may have left: it may have
    /// reached a model, so it must not be retried.
    MaybeSent,
}

/// An error as it crosses a service boundary: a code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    /// What kind of failure this is.
    pub code: ErrorCode,
    /// What went wrong, naming the offending input where there is one.
    pub message: String,
    /// Set when the transport failed rather than the service answering.
    pub transport: Option<Transport>,
    /// When a refused caller may try again, in whole seconds (at least 1):
    /// HTTP's `Retry-After` header, gRPC's `retry-after` metadata.
    pub retry_after_secs: Option<u64>,
}

/// Result alias for service calls.
pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    /// Builds an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError {
            code,
            message: message.into(),
            transport: None,
            retry_after_secs: None,
        }
    }
    /// The same error, telling the caller to retry after `secs` seconds
    /// (raised to 1: `Retry-After: 0` would invite an immediate retry).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }
    /// A transport failure: 503, with how far the call got.
    pub fn transport(transport: Transport, message: impl Into<String>) -> Self {
        ServiceError {
            transport: Some(transport),
            ..Self::new(ErrorCode::Unavailable, message)
        }
    }
    /// HTTP 409 / ALREADY_EXISTS.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    /// HTTP 501 / UNIMPLEMENTED.
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unimplemented, message)
    }
    /// HTTP 400 / INVALID_ARGUMENT.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    /// HTTP 404 / NOT_FOUND.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    /// HTTP 503 / UNAVAILABLE.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    /// HTTP 500 / INTERNAL.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl From<ServiceError> for tonic::Status {
    fn from(err: ServiceError) -> Self {
        let mut status = tonic::Status::new(err.code.grpc_code(), err.message);
        if let Ok(value) = err.code.as_str().parse() {
            status.metadata_mut().insert(ERROR_CODE_METADATA, value);
        }
        if let Some(secs) = err.retry_after_secs {
            status.metadata_mut().insert(
                RETRY_AFTER_METADATA,
                tonic::metadata::MetadataValue::from(secs),
            );
        }
        status
    }
}

impl From<tonic::Status> for ServiceError {
    /// A status as a remote client sees it: the server's own code when it
    /// sent one; otherwise a transport failure when the status came from the
    /// connection (classified by the error kinds in its source chain); else
    /// the code the bare gRPC status means.
    fn from(status: tonic::Status) -> Self {
        let sent = status
            .metadata()
            .get(ERROR_CODE_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorCode::from_name);
        if let Some(code) = sent {
            let retry_after = status
                .metadata()
                .get(RETRY_AFTER_METADATA)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let err = ServiceError::new(code, status.message());
            return match retry_after {
                Some(secs) => err.with_retry_after(secs),
                None => err,
            };
        }
        if let Some(transport) = transport_failure(&status) {
            return ServiceError::transport(
                transport,
                format!("transport failure: {}", status.message()),
            );
        }
        ServiceError::new(ErrorCode::from_grpc(status.code()), status.message())
    }
}

/// Whether `status` stands for a failed connection, and how far the call got:
/// a connect error anywhere in the chain (or a stream the peer refused
/// unread) never sent the request; an HTTP/2, hyper or I/O error may have.
fn transport_failure(status: &tonic::Status) -> Option<Transport> {
    use std::error::Error;
    let mut found = None;
    let mut source = status.source();
    while let Some(err) = source {
        // The call's own deadline passed: the endpoint is not at fault.
        if err.is::<tonic::TimeoutExpired>() {
            return None;
        }
        if err.is::<tonic::ConnectError>() {
            return Some(Transport::NotSent);
        }
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Some(Transport::NotSent);
            }
            found = Some(Transport::MaybeSent);
        }
        if err.is::<hyper::Error>()
            || err.is::<std::io::Error>()
            || err.is::<tonic::transport::Error>()
        {
            found = Some(Transport::MaybeSent);
        }
        source = err.source();
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_a_grpc_round_trip() {
        for code in ErrorCode::ALL {
            let status: tonic::Status = ServiceError::new(code, "boom").into();
            let back = ServiceError::from(status);
            assert_eq!(back.code, code);
            assert_eq!(back.message, "boom");
        }
    }

    #[test]
    fn a_refused_connection_is_a_transport_failure_that_sent_nothing() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let status = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        let err = ServiceError::from(status);
        assert_eq!(err.transport, Some(Transport::NotSent));
        assert_eq!(err.code, ErrorCode::Unavailable);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let status = tonic::Status::from_error(Box::new(hyper_like(reset)));
        assert_eq!(
            ServiceError::from(status).transport,
            None,
            "an unknown error is no transport failure"
        );
        let answered: tonic::Status = ServiceError::unavailable("queue full").into();
        assert_eq!(ServiceError::from(answered).transport, None);
    }

    /// An error type the classifier does not know, wrapping an I/O error.
    fn hyper_like(inner: std::io::Error) -> impl std::error::Error + Send + Sync + 'static {
        #[derive(Debug)]
        struct Wrapped(std::io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "wrapped: {}", self.0)
            }
        }
        impl std::error::Error for Wrapped {}
        Wrapped(inner)
    }

    #[test]
    fn retry_after_survives_a_grpc_round_trip() {
        let status: tonic::Status = ServiceError::unavailable("late").with_retry_after(7).into();
        assert_eq!(
            status.metadata().get(RETRY_AFTER_METADATA).unwrap(),
            "7",
            "sent as metadata a Triton client can read"
        );
        assert_eq!(ServiceError::from(status).retry_after_secs, Some(7));
        let plain: tonic::Status = ServiceError::unavailable("full").into();
        assert_eq!(ServiceError::from(plain).retry_after_secs, None);
        assert_eq!(
            ServiceError::unavailable("x")
                .with_retry_after(0)
                .retry_after_secs,
            Some(1)
        );
    }

    #[test]
    fn http_statuses_are_distinct_per_code() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.http_status()), "{code} shares a status");
        }
    }
}
