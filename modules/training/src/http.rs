//! REST under `/v1/training/`: the same operations as the gRPC
//! `TrainingService`, answering with its messages as JSON and the protocol's
//! `{"error": "..."}` bodies.
//!
//! - `POST /v1/training/workflows` (the file's text; `?format=yaml`, or a
//!   YAML content type, for YAML), `GET /v1/training/workflows[/{name}]`
//! - `POST /v1/training/workflows/{name}/runs` (`{"parameters": {...}}`)
//! - `GET /v1/training/runs[?workflow=&limit=]`, `GET /v1/training/runs/{id}`
//! - `POST /v1/training/runs/{id}/cancel`, `POST /v1/training/runs/{id}/retry`
//! - `GET /v1/training/runs/{id}/steps/{step}/logs?stream=&offset=`: text;
//!   `X-Mlserve-Next-Offset` and `X-Mlserve-Log-Complete` tell how to follow.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mlserve_proto::training::*;
use mlserve_proto::{CallContext, ServiceError, ServiceResult};
use serde::Deserialize;

/// The REST routes over `service`.
pub fn routes(service: TrainingClient, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/training/workflows", get(workflows).post(apply))
        .route("/v1/training/workflows/{name}", get(workflow))
        .route("/v1/training/workflows/{name}/runs", post(submit))
        .route("/v1/training/runs", get(runs))
        .route("/v1/training/runs/{id}", get(run))
        .route("/v1/training/runs/{id}/cancel", post(cancel))
        .route("/v1/training/runs/{id}/retry", post(retry))
        .route("/v1/training/runs/{id}/steps/{step}/logs", get(logs))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(service)
}

#[derive(Deserialize, Default)]
struct FormatQuery {
    #[serde(default)]
    format: String,
}

async fn apply(
    State(s): State<TrainingClient>,
    ctx: CallContext,
    Query(query): Query<FormatQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ServiceResult<Json<ApplyWorkflowResponse>> {
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ServiceError::bad_request("the workflow file is not UTF-8"))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = if !query.format.is_empty() {
        query.format
    } else if content_type.contains("yaml") {
        "yaml".into()
    } else {
        "toml".into()
    };
    Ok(Json(
        s.apply_workflow(ctx, ApplyWorkflowRequest { text, format })
            .await?,
    ))
}

async fn workflows(
    State(s): State<TrainingClient>,
    ctx: CallContext,
) -> ServiceResult<Json<ListWorkflowsResponse>> {
    Ok(Json(s.list_workflows(ctx, ListWorkflowsRequest {}).await?))
}

#[derive(Deserialize, Default)]
struct VersionQuery {
    #[serde(default)]
    version: i64,
}

async fn workflow(
    State(s): State<TrainingClient>,
    ctx: CallContext,
    Path(name): Path<String>,
    Query(query): Query<VersionQuery>,
) -> ServiceResult<Json<Workflow>> {
    let request = GetWorkflowRequest {
        name,
        version: query.version,
    };
    Ok(Json(s.get_workflow(ctx, request).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    #[serde(default)]
    parameters: HashMap<String, serde_json::Value>,
}

async fn submit(
    State(s): State<TrainingClient>,
    ctx: CallContext,
    Path(workflow): Path<String>,
    body: Bytes,
) -> ServiceResult<Json<Run>> {
    let body: SubmitBody = if body.is_empty() {
        SubmitBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ServiceError::bad_request(format!("invalid request body: {e}")))?
    };
    let mut parameters = HashMap::new();
    for (k, v) in body.parameters {
        let text = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => {
                return Err(ServiceError::bad_request(format!(
                    "parameter '{k}' must be a string, number or boolean, not {other}"
                )))
            }
        };
        parameters.insert(k, text);
    }
    let request = SubmitRunRequest {
        workflow,
        parameters,
    };
    Ok(Json(s.submit_run(ctx, request).await?))
}

#[derive(Deserialize, Default)]
struct RunsQuery {
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    limit: u32,
}

async fn runs(
    State(s): State<TrainingClient>,
    ctx: CallContext,
    Query(query): Query<RunsQuery>,
) -> ServiceResult<Json<ListRunsResponse>> {
    let request = ListRunsRequest {
        workflow: query.workflow,
        limit: query.limit,
    };
    Ok(Json(s.list_runs(ctx, request).await?))
}

async fn run(
    State(s): State<TrainingClient>,
    ctx: CallContext,
    Path(id): Path<String>,
) -> ServiceResult<Json<Run>> {
    Ok(Json(s.get_run(ctx, GetRunRequest { id }).await?))
}

async fn cancel(
    State(s): State<TrainingClient>,
    ctx: CallContext,
    Path(id): Path<String>,
) -> ServiceResult<Json<Run>> {
    Ok(Json(s.cancel_run(ctx, RunRequest { id }).await?))
}

async fn retry(
    State(s): State<TrainingClient>,
    ctx: CallContext,
    Path(id): Path<String>,
) -> ServiceResult<Json<Run>> {
    Ok(Json(s.retry_run(ctx, RunRequest { id }).await?))
}

#[derive(Deserialize, Default)]
struct LogsQuery {
    #[serde(default)]
    stream: String,
    #[serde(default)]
    offset: u64,
}

async fn logs(
    State(s): State<TrainingClient>,
    ctx: CallContext,
    Path((run, step)): Path<(String, String)>,
    Query(query): Query<LogsQuery>,
) -> ServiceResult<Response> {
    let request = LogsRequest {
        run,
        step,
        stream: query.stream,
        offset: query.offset,
        max_bytes: 0,
    };
    let logs = s.read_logs(ctx, request).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::HeaderName::from_static("x-mlserve-next-offset"),
                logs.next_offset.to_string(),
            ),
            (
                header::HeaderName::from_static("x-mlserve-log-complete"),
                logs.complete.to_string(),
            ),
        ],
        logs.data,
    )
        .into_response())
}
