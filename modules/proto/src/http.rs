//! The Open Inference Protocol (KServe v2) REST API over any
//! [`InferenceService`](crate::inference::InferenceService), wire-compatible
//! with Triton's HTTP endpoint: JSON tensors, the binary tensor extension,
//! gzip/deflate bodies, the classification extension, the model repository
//! extension and statistics.
//!
//! Every failure, including a bad path, an unknown route and an over-limit
//! body, answers with [`error_response`]: the status of the error's
//! [`ErrorCode`](crate::ErrorCode) and the body `{"error": "<message>"}`.

mod at_most;
mod base64_payload;
mod body;
mod call_context;
mod classification;
mod handlers;
mod infer;
mod infer_request;
mod infer_response;
mod json_input;
mod json_output;
mod json_params;
mod model_config;
mod params;
mod shared_memory;
mod views;

#[cfg(test)]
mod router_tests;

use std::sync::Arc;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use at_most::AtMost;
pub use base64_payload::decode_base64_payload;
pub use body::decode_body;
pub use call_context::{with_call_context, ContextFuture, WithCallContext};
pub use infer_request::decode_infer_body;

use crate::inference::InferenceClient;
use crate::internal_auth::InternalToken;
use crate::{CallContext, ServiceError};

/// The default limit on a request body, before and after decompression: 64 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Options of the v2 REST layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOptions {
    /// The largest request body accepted, in bytes (413 above it). It applies
    /// to the body as received and again to the body once decompressed.
    pub max_body_bytes: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// What every handler shares.
struct AppState {
    service: InferenceClient,
    options: HttpOptions,
}

/// The handlers' view of [`AppState`].
type SharedState = Arc<AppState>;

/// Builds the router of every v2 REST route over `service`.
///
/// The routes are those of the protocol: health, server and model metadata,
/// model readiness, configuration and statistics, inference, and the model
/// repository (index, load, unload). Anything else answers 404, and a known
/// path with the wrong method 405, both as `{"error": ...}`.
/// Requests get their [`CallContext`] from [`with_call_context`], as in a
/// served process.
pub fn v2_router(service: InferenceClient, options: HttpOptions) -> WithCallContext<Router> {
    with_call_context(with_error_fallbacks(v2_routes(service, options)))
}

/// Answers unknown paths with 404 and known paths with the wrong method with
/// 405, both in the protocol's error body. Applied once, to the merged router
/// of every role in a process (axum refuses to merge two fallbacks).
pub fn with_error_fallbacks(router: Router) -> Router {
    router
        .fallback(handlers::unknown_route)
        .method_not_allowed_fallback(handlers::method_not_allowed)
}

/// The v2 REST routes over `service`, without fallbacks, for merging with
/// other roles' routes; [`v2_router`] is the standalone form.
pub fn v2_routes(service: InferenceClient, options: HttpOptions) -> Router {
    let state: SharedState = Arc::new(AppState { service, options });
    const MODEL: &str = "/v2/models/{model}";
    const VERSIONED: &str = "/v2/models/{model}/versions/{version}";
    Router::new()
        .route("/v2", get(handlers::server_metadata))
        .route("/v2/health/live", get(handlers::server_live))
        .route("/v2/health/ready", get(handlers::server_ready))
        .route("/v2/models/stats", get(handlers::all_statistics))
        .route(MODEL, get(handlers::model_metadata))
        .route(VERSIONED, get(handlers::model_metadata))
        .route(&format!("{MODEL}/ready"), get(handlers::model_ready))
        .route(&format!("{VERSIONED}/ready"), get(handlers::model_ready))
        .route(&format!("{MODEL}/config"), get(handlers::model_config))
        .route(&format!("{VERSIONED}/config"), get(handlers::model_config))
        .route(&format!("{MODEL}/stats"), get(handlers::model_statistics))
        .route(
            &format!("{VERSIONED}/stats"),
            get(handlers::model_statistics),
        )
        .route(&format!("{MODEL}/infer"), post(infer::model_infer))
        .route(&format!("{VERSIONED}/infer"), post(infer::model_infer))
        .route("/v2/repository/index", post(handlers::repository_index))
        .route(
            "/v2/repository/models/{model}/load",
            post(handlers::load_model),
        )
        .route(
            "/v2/repository/models/{model}/unload",
            post(handlers::unload_model),
        )
        .route(
            "/v2/systemsharedmemory/status",
            get(shared_memory::status_all),
        )
        .route(
            "/v2/systemsharedmemory/unregister",
            post(shared_memory::unregister_all),
        )
        .route(
            "/v2/systemsharedmemory/region/{region}/status",
            get(shared_memory::status_region),
        )
        .route(
            "/v2/systemsharedmemory/region/{region}/register",
            post(shared_memory::register),
        )
        .route(
            "/v2/systemsharedmemory/region/{region}/unregister",
            post(shared_memory::unregister_region),
        )
        .with_state(state)
}

/// A handler takes the request's context as an argument: the one
/// [`with_call_context`] (or the gateway) put in the extensions, else one
/// read from the headers.
impl<S: Send + Sync> FromRequestParts<S> for CallContext {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<CallContext>() {
            Some(ctx) => Ok(ctx.clone()),
            None => CallContext::from_http(&parts.headers),
        }
    }
}

/// The protocol's error response: the status of `err.code`, the body
/// `{"error": message}`, `Content-Type: application/json`, and
/// `Retry-After` when the error says when to retry.
pub fn error_response(err: &ServiceError) -> Response {
    let status =
        StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({ "error": err.message }).to_string();
    let mut response = json_bytes(status, body.into_bytes());
    if let Some(secs) = err.retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// `router` answering 401 to a call without the node's internal token
/// (when one is required; see [`crate::internal_auth`]).
pub fn with_internal_token(router: Router, token: InternalToken) -> Router {
    if !token.is_required() {
        return router;
    }
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let admitted = token.admits(&request);
            async move {
                if admitted {
                    next.run(request).await
                } else {
                    error_response(&crate::internal_auth::refusal())
                }
            }
        },
    ))
}

/// A handler can return `Result<_, ServiceError>` and use `?`: the error
/// becomes [`error_response`].
impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        error_response(&self)
    }
}

/// A response with a JSON body that is already serialized.
fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A 200 response with `value` as its JSON body.
fn json_ok(value: &serde_json::Value) -> Response {
    json_bytes(StatusCode::OK, value.to_string().into_bytes())
}

/// The path parameters of a route, borrowed without copying, or axum's
/// rejection of them (for example a percent-encoding that is not UTF-8).
type PathParams = Result<RawPathParams, RawPathParamsRejection>;

/// A model named in a request path: its name and version ("" = the default).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelRef {
    name: String,
    version: String,
}

/// Reads and checks the `{model}` and optional `{version}` path parameters.
fn model_ref(params: PathParams) -> Result<ModelRef, ServiceError> {
    let params = params.map_err(|e| {
        ServiceError::bad_request(format!("invalid request path: {}", e.body_text()))
    })?;
    let (mut name, mut version) = ("", None);
    for (key, value) in &params {
        match key {
            "model" => name = value,
            "version" => version = Some(value),
            _ => {}
        }
    }
    check_model_name(name)?;
    if let Some(version) = version {
        check_model_version(version)?;
    }
    Ok(ModelRef {
        name: name.to_string(),
        version: version.unwrap_or_default().to_string(),
    })
}

/// A model name must be non-empty and free of `/`, `..` and control characters
/// (NUL included), so it can never name a path outside the model repository.
fn check_model_name(name: &str) -> Result<(), ServiceError> {
    if name.is_empty() {
        return Err(ServiceError::bad_request(
            "the model name must not be empty",
        ));
    }
    if name.contains('/')
        || name.contains('\\')
        || name.contains("..")
        || name.chars().any(char::is_control)
    {
        return Err(ServiceError::bad_request(format!(
            "invalid model name '{}': it may not contain '/', '\\', '..' or control characters",
            name.escape_default()
        )));
    }
    Ok(())
}

/// A version in a path is a non-negative integer, as Triton requires (it
/// answers 400 when the version does not parse).
fn check_model_version(version: &str) -> Result<(), ServiceError> {
    if version.is_empty() || version.len() > 19 || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ServiceError::bad_request(format!(
            "invalid model version '{}': it must be a non-negative integer",
            version.escape_default()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn model_names_are_checked() {
        assert!(check_model_name("resnet50").is_ok());
        assert!(check_model_name("a.b-c_d").is_ok());
        for bad in ["", "a/b", "..", "a..b", "a\0b", "a\nb", "a\\b"] {
            let err = check_model_name(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{bad:?}");
        }
    }

    #[test]
    fn versions_must_be_integers() {
        assert!(check_model_version("1").is_ok());
        assert!(check_model_version("12").is_ok());
        for bad in ["", "x", "-1", "1.0", "99999999999999999999"] {
            assert!(check_model_version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_response_has_status_and_json_body() {
        let resp = error_response(&ServiceError::not_found("no model 'x'"));
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        assert!(!resp.headers().contains_key(header::RETRY_AFTER));
        let late = ServiceError::unavailable("deadline").with_retry_after(3);
        let resp = error_response(&late);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
    }
}
