//! Triton's system shared-memory routes (`/v2/systemsharedmemory/...`): the
//! region register, unregister and status calls over the service's RPCs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::WholeBody;
use super::{json_ok, PathParams, SharedState};
use crate::inference::InferenceService;
use crate::{pb, CallContext, ServiceError};

type Answer = Result<Response, ServiceError>;

/// The body of a register call, as `tritonclient` sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    key: String,
    #[serde(default)]
    offset: u64,
    byte_size: u64,
}

/// The `{region}` path parameter.
fn region_name(params: PathParams) -> Result<String, ServiceError> {
    let params = params.map_err(|e| {
        ServiceError::bad_request(format!("invalid request path: {}", e.body_text()))
    })?;
    let name = params
        .iter()
        .find(|(key, _)| *key == "region")
        .map(|(_, value)| value.to_string())
        .unwrap_or_default();
    if name.is_empty() {
        return Err(ServiceError::bad_request(
            "the shared memory region name must not be empty",
        ));
    }
    Ok(name)
}

/// `GET /v2/systemsharedmemory/status`: every region, as a JSON list.
pub(super) async fn status_all(State(state): State<SharedState>, ctx: CallContext) -> Answer {
    status(state, ctx, String::new()).await
}

/// `GET /v2/systemsharedmemory/region/{region}/status`.
pub(super) async fn status_region(
    State(state): State<SharedState>,
    ctx: CallContext,
    params: PathParams,
) -> Answer {
    status(state, ctx, region_name(params)?).await
}

async fn status(state: SharedState, ctx: CallContext, name: String) -> Answer {
    let answer = state
        .service
        .system_shared_memory_status(ctx, pb::SystemSharedMemoryStatusRequest { name })
        .await?;
    let regions: Vec<Value> = answer
        .regions
        .into_values()
        .map(
            |r| json!({"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}),
        )
        .collect();
    Ok(json_ok(&Value::Array(regions)))
}

/// `POST /v2/systemsharedmemory/region/{region}/register` with
/// `{"key", "offset", "byte_size"}`.
pub(super) async fn register(
    State(state): State<SharedState>,
    ctx: CallContext,
    params: PathParams,
    WholeBody(body): WholeBody,
) -> Answer {
    let name = region_name(params)?;
    let doc: RegisterBody = serde_json::from_slice(&body).map_err(|e| {
        ServiceError::bad_request(format!("invalid shared memory register request JSON: {e}"))
    })?;
    let request = pb::SystemSharedMemoryRegisterRequest {
        name,
        key: doc.key,
        offset: doc.offset,
        byte_size: doc.byte_size,
    };
    state
        .service
        .system_shared_memory_register(ctx, request)
        .await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /v2/systemsharedmemory/unregister`: every region.
pub(super) async fn unregister_all(State(state): State<SharedState>, ctx: CallContext) -> Answer {
    unregister(state, ctx, String::new()).await
}

/// `POST /v2/systemsharedmemory/region/{region}/unregister`.
pub(super) async fn unregister_region(
    State(state): State<SharedState>,
    ctx: CallContext,
    params: PathParams,
) -> Answer {
    unregister(state, ctx, region_name(params)?).await
}

async fn unregister(state: SharedState, ctx: CallContext, name: String) -> Answer {
    state
        .service
        .system_shared_memory_unregister(ctx, pb::SystemSharedMemoryUnregisterRequest { name })
        .await?;
    Ok(StatusCode::OK.into_response())
}
