//! The shared token of the split deployment's internal calls.
//!
//! With `server.internal_token` set, the node's own ports (every role's v2,
//! registry, features and training routes and gRPC services) answer only a
//! caller that sends the token in [`INTERNAL_TOKEN_HEADER`]: the other roles'
//! clients do (see [`crate::rpc::GrpcOptions::internal_token`]), anyone else
//! gets 401 / UNAUTHENTICATED. The health checks a kubelet or load balancer
//! makes stay open: `/health/live`, `/health/ready` (every role),
//! `/v2/health/live`, `/v2/health/ready` (inference) and
//! `grpc.health.v1.Health`. The gateway's own ports authenticate users with
//! keys and JWTs instead, and the metrics port is left to the network policy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use subtle::ConstantTimeEq;

use crate::ServiceError;

/// The metadata / header that carries the token.
pub const INTERNAL_TOKEN_HEADER: &str = "x-mlserve-internal-token";

/// Paths that stay open without the token: probes.
const OPEN_PATHS: [&str; 4] = [
    "/health/live",
    "/health/ready",
    "/v2/health/live",
    "/v2/health/ready",
];
/// The gRPC health service, open without the token.
const OPEN_GRPC_PREFIX: &str = "/grpc.health.v1.Health/";

/// The token a node's ports require; `None` checks nothing.
#[derive(Clone, Default)]
pub struct InternalToken(Option<Arc<[u8]>>);

impl InternalToken {
    /// Requires `token` when it is set; an empty one is refused, a short one too.
    pub fn new(token: Option<&str>) -> Result<InternalToken, String> {
        match token {
            None => Ok(InternalToken(None)),
            Some(t) if t.len() < 16 => {
                Err("server.internal_token must be at least 16 characters (a random secret)".into())
            }
            Some(t) => Ok(InternalToken(Some(t.as_bytes().into()))),
        }
    }

    /// Whether calls are checked at all.
    pub fn is_required(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `request` may pass: no token required, an open path, or the
    /// right token (compared in constant time).
    pub fn admits<B>(&self, request: &http::Request<B>) -> bool {
        let Some(expected) = &self.0 else {
            return true;
        };
        let path = request.uri().path();
        if OPEN_PATHS.contains(&path) || path.starts_with(OPEN_GRPC_PREFIX) {
            return true;
        }
        request
            .headers()
            .get(INTERNAL_TOKEN_HEADER)
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(expected)))
    }
}

/// The refusal of a call without the token.
pub fn refusal() -> ServiceError {
    ServiceError::new(
        crate::ErrorCode::Unauthenticated,
        format!("this port needs the internal token in '{INTERNAL_TOKEN_HEADER}' (server.internal_token)"),
    )
}

/// The gRPC side: a layer in front of the node's gRPC server that answers a
/// call without the token UNAUTHENTICATED (trailers only) before it runs.
#[derive(Clone, Default)]
pub struct InternalAuthLayer(pub InternalToken);

impl<S> tower_layer::Layer<S> for InternalAuthLayer {
    type Service = InternalAuth<S>;
    fn layer(&self, inner: S) -> InternalAuth<S> {
        InternalAuth {
            inner,
            token: self.0.clone(),
        }
    }
}

/// The service [`InternalAuthLayer`] makes.
#[derive(Clone)]
pub struct InternalAuth<S> {
    inner: S,
    token: InternalToken,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for InternalAuth<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if self.token.admits(&request) {
            return Box::pin(self.inner.call(request));
        }
        let status = tonic::Status::from(refusal());
        Box::pin(std::future::ready(Ok(status.into_http())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, token: Option<&str>) -> http::Request<()> {
        let mut builder = http::Request::builder().uri(path);
        if let Some(token) = token {
            builder = builder.header(INTERNAL_TOKEN_HEADER, token);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn only_the_right_token_passes_and_probes_stay_open() {
        let secret = "0123456789abcdef-secret";
        let token = InternalToken::new(Some(secret)).unwrap();
        assert!(token.admits(&request("/v2/models/m/infer", Some(secret))));
        assert!(!token.admits(&request("/v2/models/m/infer", None)));
        assert!(!token.admits(&request(
            "/v2/models/m/infer",
            Some("0123456789abcdef-secreT")
        )));
        assert!(!token.admits(&request("/registry.RegistryService/ListModels", Some(""))));
        assert!(token.admits(&request("/v2/health/ready", None)));
        assert!(token.admits(&request("/grpc.health.v1.Health/Check", None)));
        assert!(!token.admits(&request("/v2/health/ready/../../models", None)));
    }

    #[test]
    fn no_token_checks_nothing_and_short_tokens_are_refused() {
        assert!(InternalToken::new(None)
            .unwrap()
            .admits(&request("/v2", None)));
        assert!(InternalToken::new(Some("")).is_err());
        assert!(InternalToken::new(Some("short")).is_err());
    }
}
