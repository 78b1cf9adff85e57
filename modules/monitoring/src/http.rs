//! REST under `/v1/monitoring/`: the same operations as the gRPC
//! `MonitoringService`, answering with its messages as JSON and the
//! protocol's `{"error": "..."}` bodies.
//!
//! - `GET /v1/monitoring/rollouts[?model=&active=true&limit=]`,
//!   `POST /v1/monitoring/rollouts` (a `StartRolloutRequest` as JSON)
//! - `GET /v1/monitoring/rollouts/{model}`: the latest rollout, its records
//!   and windows
//! - `POST /v1/monitoring/rollouts/{model}/{pause|resume|promote|abort}`
//!   (`{"reason": "..."}` optional)
//! - `GET /v1/monitoring/windows[?model=&window_ms=]`
//! - `GET /v1/monitoring/drift/{model}[?version=]`: the latest drift
//!   reports of the model's versions

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use mlserve_proto::monitoring::*;
use mlserve_proto::{CallContext, ServiceError, ServiceResult};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The REST routes over `service`.
pub fn routes(service: MonitoringClient, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/monitoring/rollouts", get(list).post(start))
        .route("/v1/monitoring/rollouts/{model}", get(status))
        .route("/v1/monitoring/rollouts/{model}/{action}", post(action))
        .route("/v1/monitoring/windows", get(windows))
        .route("/v1/monitoring/drift/{model}", get(drift))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(service)
}

fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> ServiceResult<T> {
    if bytes.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ServiceError::bad_request(format!("invalid request body: {e}")))
}

async fn start(
    State(s): State<MonitoringClient>,
    ctx: CallContext,
    bytes: Bytes,
) -> ServiceResult<Json<Rollout>> {
    let request: StartRolloutRequest = body(&bytes)?;
    Ok(Json(s.start_rollout(ctx, request).await?))
}

async fn list(
    State(s): State<MonitoringClient>,
    ctx: CallContext,
    Query(request): Query<ListRolloutsRequest>,
) -> ServiceResult<Json<ListRolloutsResponse>> {
    Ok(Json(s.list_rollouts(ctx, request).await?))
}

async fn status(
    State(s): State<MonitoringClient>,
    ctx: CallContext,
    Path(model): Path<String>,
) -> ServiceResult<Json<RolloutStatus>> {
    let request = GetRolloutRequest {
        model,
        id: String::new(),
    };
    Ok(Json(s.get_rollout(ctx, request).await?))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ActionBody {
    reason: String,
}

async fn action(
    State(s): State<MonitoringClient>,
    ctx: CallContext,
    Path((model, action)): Path<(String, String)>,
    bytes: Bytes,
) -> ServiceResult<Json<Rollout>> {
    let ActionBody { reason } = body(&bytes)?;
    let request = RolloutActionRequest { model, reason };
    let rollout = match action.as_str() {
        "pause" => s.pause_rollout(ctx, request).await?,
        "resume" => s.resume_rollout(ctx, request).await?,
        "promote" => s.promote_rollout(ctx, request).await?,
        "abort" => s.abort_rollout(ctx, request).await?,
        other => {
            return Err(ServiceError::not_found(format!(
                "no rollout action '{other}': pause, resume, promote or abort"
            )))
        }
    };
    Ok(Json(rollout))
}

async fn windows(
    State(s): State<MonitoringClient>,
    ctx: CallContext,
    Query(request): Query<GetWindowsRequest>,
) -> ServiceResult<Json<GetWindowsResponse>> {
    Ok(Json(s.get_windows(ctx, request).await?))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct DriftQuery {
    version: String,
}

async fn drift(
    State(s): State<MonitoringClient>,
    ctx: CallContext,
    Path(model): Path<String>,
    Query(DriftQuery { version }): Query<DriftQuery>,
) -> ServiceResult<Json<GetDriftResponse>> {
    Ok(Json(
        s.get_drift(ctx, GetDriftRequest { model, version }).await?,
    ))
}
