//! The handlers of every route except inference.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::body::read_body;
use super::model_config::model_config_json;
use super::params::{kind_of, load_parameters};
use super::{error_response, json_ok, model_ref, respond, views, PathParams, SharedState};
use crate::{ErrorCode, ServiceError, ServiceResult};

/// 200 with an empty body when true, 400 with an empty body when false (as
/// Triton answers health and readiness), the error response on failure.
fn yes_no(answer: ServiceResult<bool>) -> Response {
    match answer {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => StatusCode::BAD_REQUEST.into_response(),
        Err(err) => error_response(&err),
    }
}

/// `GET /v2/health/live`.
pub(super) async fn server_live(State(state): State<SharedState>) -> Response {
    yes_no(state.service.server_live().await)
}

/// `GET /v2/health/ready`.
pub(super) async fn server_ready(State(state): State<SharedState>) -> Response {
    yes_no(state.service.server_ready().await)
}

/// `GET /v2`.
pub(super) async fn server_metadata(State(state): State<SharedState>) -> Response {
    respond(
        state
            .service
            .server_metadata()
            .await
            .map(|md| json_ok(&views::server_metadata(&md))),
    )
}

/// `GET /v2/models/{m}[/versions/{v}]`.
pub(super) async fn model_metadata(
    State(state): State<SharedState>,
    params: PathParams,
) -> Response {
    respond(
        async {
            let model = model_ref(params)?;
            let md = state
                .service
                .model_metadata(&model.name, &model.version)
                .await?;
            Ok(json_ok(&views::model_metadata(&md)))
        }
        .await,
    )
}

/// `GET /v2/models/{m}[/versions/{v}]/ready`: 200 when ready, 400 with an
/// empty body when known but not ready, the error (404) when unknown.
pub(super) async fn model_ready(State(state): State<SharedState>, params: PathParams) -> Response {
    match model_ref(params) {
        Ok(model) => yes_no(state.service.model_ready(&model.name, &model.version).await),
        Err(err) => error_response(&err),
    }
}

/// `GET /v2/models/{m}[/versions/{v}]/config`.
pub(super) async fn model_config(State(state): State<SharedState>, params: PathParams) -> Response {
    respond(
        async {
            let model = model_ref(params)?;
            let config = state
                .service
                .model_config(&model.name, &model.version)
                .await?;
            Ok(json_ok(&model_config_json(&config)))
        }
        .await,
    )
}

/// `GET /v2/models/stats`: every model's statistics.
pub(super) async fn all_statistics(State(state): State<SharedState>) -> Response {
    respond(
        state
            .service
            .model_statistics("", "")
            .await
            .map(|stats| json_ok(&views::statistics(&stats))),
    )
}

/// `GET /v2/models/{m}[/versions/{v}]/stats`.
pub(super) async fn model_statistics(
    State(state): State<SharedState>,
    params: PathParams,
) -> Response {
    respond(
        async {
            let model = model_ref(params)?;
            let stats = state
                .service
                .model_statistics(&model.name, &model.version)
                .await?;
            Ok(json_ok(&views::statistics(&stats)))
        }
        .await,
    )
}

/// `POST /v2/repository/index`, with an optional body `{"ready": bool}`.
pub(super) async fn repository_index(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(
        async {
            let body = read_body(&headers, body, state.options.max_body_bytes).await?;
            let ready = index_ready_flag(&body)?;
            let models = state.service.repository_index(ready).await?;
            Ok(json_ok(&views::repository_index(&models)))
        }
        .await,
    )
}

/// The `ready` flag of a repository index request body (empty = false).
fn index_ready_flag(body: &[u8]) -> Result<bool, ServiceError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        ServiceError::bad_request(format!("invalid repository index request JSON: {e}"))
    })?;
    let Value::Object(doc) = doc else {
        return Err(ServiceError::bad_request(
            "the repository index request body must be a JSON object",
        ));
    };
    match doc.get("ready") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ServiceError::bad_request(format!(
            "'ready' must be a boolean, not {}",
            kind_of(other)
        ))),
    }
}

/// `POST /v2/repository/models/{m}/load`, with an optional body
/// `{"parameters": {...}}`; 200 with an empty body once loaded.
pub(super) async fn load_model(
    State(state): State<SharedState>,
    params: PathParams,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(
        async {
            let model = model_ref(params)?;
            let body = read_body(&headers, body, state.options.max_body_bytes).await?;
            let parameters = load_parameters(&model.name, &body)?;
            state.service.load_model(&model.name, parameters).await?;
            Ok(StatusCode::OK.into_response())
        }
        .await,
    )
}

/// `POST /v2/repository/models/{m}/unload`; 200 with an empty body. The
/// optional body's parameters are checked like a load's, then not used: the
/// service's unload takes none (Triton's `unload_dependents` has no meaning
/// without ensembles).
pub(super) async fn unload_model(
    State(state): State<SharedState>,
    params: PathParams,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(
        async {
            let model = model_ref(params)?;
            let body = read_body(&headers, body, state.options.max_body_bytes).await?;
            load_parameters(&model.name, &body)?;
            state.service.unload_model(&model.name).await?;
            Ok(StatusCode::OK.into_response())
        }
        .await,
    )
}

/// Any path no route matches: 404, except that a model path with an empty
/// model name (`/v2/models//ready`, `/v2/models/`) is 400, like any other
/// invalid name.
pub(super) async fn unknown_route(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let empty_name = ["/v2/models/", "/v2/repository/models/"]
        .iter()
        .any(|prefix| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
    if empty_name {
        return error_response(&ServiceError::bad_request(
            "the model name must not be empty",
        ));
    }
    let message = format!("no such endpoint: {method} {path}");
    error_response(&ServiceError::new(ErrorCode::NotFound, message))
}

/// A known path with a method it does not serve.
pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let message = format!("method {method} is not allowed on {}", uri.path());
    let mut response = error_response(&ServiceError::bad_request(message));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_flag_parses() {
        assert!(!index_ready_flag(b"").unwrap());
        assert!(!index_ready_flag(b"{}").unwrap());
        assert!(index_ready_flag(br#"{"ready": true}"#).unwrap());
        assert!(!index_ready_flag(br#"{"ready": false}"#).unwrap());
        assert!(index_ready_flag(br#"{"ready": "yes"}"#).is_err());
        assert!(index_ready_flag(b"[").is_err());
    }
}
