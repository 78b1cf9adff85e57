//! The handlers of every route except inference.

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::body::WholeBody;
use super::model_config::model_config_json;
use super::params::{kind_of, load_parameters};
use super::{error_response, json_ok, model_ref, views, PathParams, SharedState};
use crate::inference::InferenceService;
use crate::{pb, CallContext, ErrorCode, ServiceError};

/// 200 with an empty body when true, 400 with an empty body when false (as
/// Triton answers health and readiness).
fn yes_no(answer: bool) -> Response {
    if answer {
        StatusCode::OK.into_response()
    } else {
        StatusCode::BAD_REQUEST.into_response()
    }
}

type Answer = Result<Response, ServiceError>;

/// `GET /v2/health/live`.
pub(super) async fn server_live(State(state): State<SharedState>, ctx: CallContext) -> Answer {
    let live = state
        .service
        .server_live(ctx, pb::ServerLiveRequest {})
        .await?;
    Ok(yes_no(live.live))
}

/// `GET /v2/health/ready`.
pub(super) async fn server_ready(State(state): State<SharedState>, ctx: CallContext) -> Answer {
    let ready = state
        .service
        .server_ready(ctx, pb::ServerReadyRequest {})
        .await?;
    Ok(yes_no(ready.ready))
}

/// `GET /v2`.
pub(super) async fn server_metadata(State(state): State<SharedState>, ctx: CallContext) -> Answer {
    let md = state
        .service
        .server_metadata(ctx, pb::ServerMetadataRequest {})
        .await?;
    Ok(json_ok(&views::server_metadata(&md)))
}

/// `GET /v2/models/{m}[/versions/{v}]`.
pub(super) async fn model_metadata(
    State(state): State<SharedState>,
    ctx: CallContext,
    params: PathParams,
) -> Answer {
    let model = model_ref(params)?;
    let request = pb::ModelMetadataRequest {
        name: model.name,
        version: model.version,
    };
    let md = state.service.model_metadata(ctx, request).await?;
    Ok(json_ok(&views::model_metadata(&md)))
}

/// `GET /v2/models/{m}[/versions/{v}]/ready`: 200 when ready, 400 with an
/// empty body when known but not ready, the error (404) when unknown (the
/// service answers `ready: false` for an unknown model, as Triton's gRPC
/// does; only then is the model looked up).
pub(super) async fn model_ready(
    State(state): State<SharedState>,
    ctx: CallContext,
    params: PathParams,
) -> Answer {
    let model = model_ref(params)?;
    let request = pb::ModelReadyRequest {
        name: model.name.clone(),
        version: model.version.clone(),
    };
    if state.service.model_ready(ctx.clone(), request).await?.ready {
        return Ok(yes_no(true));
    }
    let request = pb::ModelMetadataRequest {
        name: model.name,
        version: model.version,
    };
    match state.service.model_metadata(ctx, request).await {
        Err(err) if err.code == ErrorCode::NotFound => Err(err),
        _ => Ok(yes_no(false)),
    }
}

/// `GET /v2/models/{m}[/versions/{v}]/config`.
pub(super) async fn model_config(
    State(state): State<SharedState>,
    ctx: CallContext,
    params: PathParams,
) -> Answer {
    let model = model_ref(params)?;
    let config = model_config_of(&state, ctx, &model).await?;
    Ok(json_ok(&model_config_json(&config)))
}

/// The configuration of `model`, as the service answers it.
pub(super) async fn model_config_of(
    state: &SharedState,
    ctx: CallContext,
    model: &super::ModelRef,
) -> Result<pb::ModelConfig, ServiceError> {
    let request = pb::ModelConfigRequest {
        name: model.name.clone(),
        version: model.version.clone(),
    };
    state
        .service
        .model_config(ctx, request)
        .await?
        .config
        .ok_or_else(|| ServiceError::internal("model config response without a config"))
}

/// `GET /v2/models/stats`: every model's statistics.
pub(super) async fn all_statistics(State(state): State<SharedState>, ctx: CallContext) -> Answer {
    let stats = state
        .service
        .model_statistics(ctx, pb::ModelStatisticsRequest::default())
        .await?;
    Ok(json_ok(&views::statistics(&stats)))
}

/// `GET /v2/models/{m}[/versions/{v}]/stats`.
pub(super) async fn model_statistics(
    State(state): State<SharedState>,
    ctx: CallContext,
    params: PathParams,
) -> Answer {
    let model = model_ref(params)?;
    let request = pb::ModelStatisticsRequest {
        name: model.name,
        version: model.version,
    };
    let stats = state.service.model_statistics(ctx, request).await?;
    Ok(json_ok(&views::statistics(&stats)))
}

/// `POST /v2/repository/index`, with an optional body `{"ready": bool}`.
pub(super) async fn repository_index(
    State(state): State<SharedState>,
    ctx: CallContext,
    WholeBody(body): WholeBody,
) -> Answer {
    let request = pb::RepositoryIndexRequest {
        repository_name: String::new(),
        ready: index_ready_flag(&body)?,
    };
    let index = state.service.repository_index(ctx, request).await?;
    Ok(json_ok(&views::repository_index(&index.models)))
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
    ctx: CallContext,
    params: PathParams,
    WholeBody(body): WholeBody,
) -> Answer {
    let model = model_ref(params)?;
    let request = pb::RepositoryModelLoadRequest {
        repository_name: String::new(),
        parameters: load_parameters(&model.name, &body)?,
        model_name: model.name,
    };
    state.service.repository_model_load(ctx, request).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /v2/repository/models/{m}/unload`; 200 with an empty body. The
/// optional body's parameters are checked like a load's and passed on.
pub(super) async fn unload_model(
    State(state): State<SharedState>,
    ctx: CallContext,
    params: PathParams,
    WholeBody(body): WholeBody,
) -> Answer {
    let model = model_ref(params)?;
    let request = pb::RepositoryModelUnloadRequest {
        repository_name: String::new(),
        parameters: load_parameters(&model.name, &body)?,
        model_name: model.name,
    };
    state.service.repository_model_unload(ctx, request).await?;
    Ok(StatusCode::OK.into_response())
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
