//! The scopes the other services' REST APIs need when the gateway serves
//! them to users (`/v1/registry`, `/v1/features`, `/v1/training`,
//! `/v1/monitoring`): one table by service and method, checked before the
//! request reaches the service.
//!
//! | service | read (GET) | change |
//! |---|---|---|
//! | registry | `registry:read` | `registry:write` (alias moves too) |
//! | features | `features:read` (also POST online, historical, transform) | `features:write` |
//! | training | `training:submit` or `registry:read` | `training:submit` |
//! | monitoring | `registry:read` or `rollouts:admin` | `rollouts:admin` |

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::Method;
use mlserve_proto::http::error_response;
use mlserve_proto::CallContext;

use crate::scopes::{
    require_any, FEATURES_READ, FEATURES_WRITE, REGISTRY_READ, REGISTRY_WRITE, ROLLOUTS_ADMIN,
    TRAINING_SUBMIT,
};

/// POST routes of the feature store that only read.
const FEATURE_READS: [&str; 3] = [
    "/v1/features/online",
    "/v1/features/historical",
    "/v1/features/transform",
];

/// The scopes of which a caller needs one for `method` on `path`. A path
/// outside the four services needs a scope nobody holds (empty): the
/// table fails closed.
pub fn needed(method: &Method, path: &str) -> &'static [&'static str] {
    let read = method == Method::GET || method == Method::HEAD;
    let service = path
        .strip_prefix("/v1/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    match (service, read) {
        ("registry", true) => &[REGISTRY_READ],
        ("registry", false) => &[REGISTRY_WRITE],
        ("features", true) => &[FEATURES_READ],
        ("features", false) if FEATURE_READS.contains(&path) => &[FEATURES_READ],
        ("features", false) => &[FEATURES_WRITE],
        ("training", true) => &[TRAINING_SUBMIT, REGISTRY_READ],
        ("training", false) => &[TRAINING_SUBMIT],
        ("monitoring", true) => &[REGISTRY_READ, ROLLOUTS_ADMIN],
        ("monitoring", false) => &[ROLLOUTS_ADMIN],
        _ => &[],
    }
}

/// Middleware: refuses (403, naming the scopes) a request whose caller
/// holds none of the scopes its route needs. Runs inside the gateway's
/// admission, which put the call context in the request.
pub async fn check(request: Request, next: Next) -> Response {
    let verdict = match request.extensions().get::<CallContext>() {
        Some(ctx) => require_any(ctx, needed(request.method(), request.uri().path())),
        None => Ok(()),
    };
    match verdict {
        Ok(()) => next.run(request).await,
        Err(err) => error_response(&err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_changes_need_their_own_scopes() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(needed(&get, "/v1/registry/models"), [REGISTRY_READ]);
        assert_eq!(
            needed(&Method::PUT, "/v1/registry/models/m/aliases/production"),
            [REGISTRY_WRITE]
        );
        assert_eq!(needed(&post, "/v1/features/online"), [FEATURES_READ]);
        assert_eq!(needed(&post, "/v1/features/ingest"), [FEATURES_WRITE]);
        assert_eq!(
            needed(&get, "/v1/training/runs"),
            [TRAINING_SUBMIT, REGISTRY_READ]
        );
        assert_eq!(
            needed(&post, "/v1/training/runs/r/cancel"),
            [TRAINING_SUBMIT]
        );
        assert_eq!(
            needed(&post, "/v1/monitoring/rollouts/m/abort"),
            [ROLLOUTS_ADMIN]
        );
        assert!(needed(&get, "/v1/elsewhere").is_empty());
        assert!(needed(&get, "/v1/registryx/models").is_empty());
    }
}
