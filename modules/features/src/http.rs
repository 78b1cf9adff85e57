//! REST under `/v1/features/`: the same operations as the gRPC service, with
//! `{"error": "..."}` bodies and the shared status codes.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use mlserve_proto::features::*;
use mlserve_proto::http::error_response;
use mlserve_proto::{ServiceError, ServiceResult};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::export::{self, Format};

type Shared = Arc<dyn FeatureService>;

/// The REST routes (no fallbacks) over `service`.
pub fn routes(service: FeaturesClient, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/features/apply", post(apply))
        .route("/v1/features/entities", get(entities))
        .route("/v1/features/entities/{name}", get(entity))
        .route("/v1/features/views", get(views))
        .route("/v1/features/views/{name}", get(view))
        .route("/v1/features/ingest", post(ingest))
        .route("/v1/features/push", post(push))
        .route("/v1/features/materialize", post(materialize))
        .route("/v1/features/online", post(online))
        .route("/v1/features/historical", post(historical))
        .route("/v1/features/pipelines", get(pipelines).post(put_pipeline))
        .route("/v1/features/transform", post(transform))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(service)
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> ServiceResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ServiceError::bad_request(format!("invalid request body: {e}")))
}

fn reply<T: Serialize>(result: ServiceResult<T>) -> Response {
    match result {
        Ok(value) => match serde_json::to_vec(&value) {
            Ok(body) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            Err(e) => error_response(&ServiceError::internal(e.to_string())),
        },
        Err(err) => error_response(&err),
    }
}

async fn apply(State(s): State<Shared>, body: Bytes) -> Response {
    reply(async { s.apply(parse(&body)?).await }.await)
}

async fn entities(State(s): State<Shared>) -> Response {
    reply(
        s.list_entities()
            .await
            .map(|entities| serde_json::json!({ "entities": entities })),
    )
}

async fn entity(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    reply(
        async {
            s.list_entities()
                .await?
                .into_iter()
                .find(|e| e.name == name)
                .ok_or_else(|| ServiceError::not_found(format!("entity '{name}' not found")))
        }
        .await,
    )
}

async fn views(State(s): State<Shared>) -> Response {
    reply(
        s.list_feature_views()
            .await
            .map(|views| serde_json::json!({ "feature_views": views })),
    )
}

async fn view(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    reply(
        async {
            s.list_feature_views()
                .await?
                .into_iter()
                .find(|v| v.name == name)
                .ok_or_else(|| ServiceError::not_found(format!("feature view '{name}' not found")))
        }
        .await,
    )
}

async fn ingest(State(s): State<Shared>, body: Bytes) -> Response {
    reply(async { s.ingest(parse(&body)?).await }.await)
}

async fn push(State(s): State<Shared>, body: Bytes) -> Response {
    reply(async { s.push(parse(&body)?).await }.await)
}

async fn materialize(State(s): State<Shared>, body: Bytes) -> Response {
    reply(async { s.materialize(parse(&body)?).await }.await)
}

async fn online(State(s): State<Shared>, body: Bytes) -> Response {
    reply(async { s.get_online_features(parse(&body)?).await }.await)
}

async fn pipelines(State(s): State<Shared>) -> Response {
    reply(
        s.list_pipelines()
            .await
            .map(|pipelines| serde_json::json!({ "pipelines": pipelines })),
    )
}

async fn put_pipeline(State(s): State<Shared>, body: Bytes) -> Response {
    reply(async { s.put_pipeline(parse(&body)?).await }.await)
}

async fn transform(State(s): State<Shared>, body: Bytes) -> Response {
    reply(async { s.transform(parse(&body)?).await }.await)
}

/// `?format=ndjson|csv`.
#[derive(serde::Deserialize)]
struct FormatQuery {
    #[serde(default)]
    format: String,
}

async fn historical(
    State(s): State<Shared>,
    Query(query): Query<FormatQuery>,
    body: Bytes,
) -> Response {
    let Some(format) = Format::parse(&query.format) else {
        return error_response(&ServiceError::bad_request(format!(
            "format must be ndjson or csv, not '{}'",
            query.format
        )));
    };
    let request: GetHistoricalFeaturesRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let features = request.features.clone();
    let keys = export::key_columns(
        request
            .entities
            .first()
            .map(|e| HistoricalRow {
                keys: e.keys.clone(),
                ..Default::default()
            })
            .as_ref(),
    );
    let rows = match s.get_historical_features(request).await {
        Ok(rows) => rows,
        Err(e) => return error_response(&e),
    };
    let header = match format {
        Format::Csv => Some(Ok::<Bytes, std::io::Error>(Bytes::from(
            export::csv_header(&keys, &features),
        ))),
        Format::Ndjson => None,
    };
    let lines = rows.map(move |row| match row {
        Ok(row) => Ok(Bytes::from(match format {
            Format::Csv => export::csv_line(&row, &keys),
            Format::Ndjson => export::json_line(&row, &features),
        })),
        Err(e) => Err(std::io::Error::other(e.message)),
    });
    let body = futures_util::stream::iter(header).chain(lines);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from_stream(body),
    )
        .into_response()
}
