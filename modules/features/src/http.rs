//! REST under `/v1/features/`: the same operations as the gRPC service, with
//! `{"error": "..."}` bodies and the shared status codes. The bodies are the
//! plain JSON types of [`bodies`], mapped to and from the gRPC messages there.

pub mod bodies;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use mlserve_proto::features::{
    Entity, FeatureService, FeatureView, FeaturesClient, GetHistoricalFeaturesRequest,
    GetPipelineRequest, HistoricalRow, ListRequest, LookupStatsRequest, LookupStatsResponse,
};
use mlserve_proto::{CallContext, ServiceError, ServiceResult};
use serde::de::DeserializeOwned;

use self::bodies::*;
use crate::export::{self, Format};

/// The REST routes (no fallbacks) over `service`. An online lookup naming
/// more than `max_entities` entities is refused while its body is parsed
/// (`features.max_entities_per_request`; the service checks its own too).
pub fn routes(service: FeaturesClient, max_body_bytes: usize, max_entities: usize) -> Router {
    Router::new()
        .route("/v1/features/apply", post(apply))
        .route("/v1/features/entities", get(entities))
        .route("/v1/features/entities/{name}", get(entity))
        .route("/v1/features/views", get(views))
        .route("/v1/features/views/{name}", get(view))
        .route("/v1/features/ingest", post(ingest))
        .route("/v1/features/push", post(push))
        .route("/v1/features/materialize", post(materialize))
        .route(
            "/v1/features/online",
            post(move |state, ctx, body| online(state, ctx, body, max_entities)),
        )
        .route("/v1/features/historical", post(historical))
        .route("/v1/features/pipelines", get(pipelines).post(put_pipeline))
        .route("/v1/features/pipelines/{model}", get(pipeline))
        .route("/v1/features/transform", post(transform))
        .route("/v1/features/lookup-stats", get(lookup_stats))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(service)
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> ServiceResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ServiceError::bad_request(format!("invalid request body: {e}")))
}

async fn apply(
    State(s): State<FeaturesClient>,
    ctx: CallContext,
    body: Bytes,
) -> ServiceResult<Json<ChangesBody>> {
    let request = parse::<ApplyBody>(&body)?.into();
    Ok(Json(s.apply(ctx, request).await?.into()))
}

async fn entities(
    State(s): State<FeaturesClient>,
    ctx: CallContext,
) -> ServiceResult<Json<EntitiesBody>> {
    let entities = s.list_entities(ctx, ListRequest {}).await?.entities;
    Ok(Json(EntitiesBody { entities }))
}

async fn entity(
    State(s): State<FeaturesClient>,
    ctx: CallContext,
    Path(name): Path<String>,
) -> ServiceResult<Json<Entity>> {
    s.list_entities(ctx, ListRequest {})
        .await?
        .entities
        .into_iter()
        .find(|e| e.name == name)
        .map(Json)
        .ok_or_else(|| ServiceError::not_found(format!("entity '{name}' not found")))
}

async fn views(
    State(s): State<FeaturesClient>,
    ctx: CallContext,
) -> ServiceResult<Json<ViewsBody>> {
    let listed = s.list_feature_views(ctx, ListRequest {}).await?;
    Ok(Json(ViewsBody {
        feature_views: listed.feature_views,
        freshness: listed.freshness,
    }))
}

/// `GET /v1/features/lookup-stats`: the online lookups this process has
/// answered (count, summed seconds, entities, cumulative latency buckets).
async fn lookup_stats(
    State(s): State<FeaturesClient>,
    ctx: CallContext,
) -> ServiceResult<Json<LookupStatsResponse>> {
    Ok(Json(s.lookup_stats(ctx, LookupStatsRequest {}).await?))
}

async fn view(
    State(s): State<FeaturesClient>,
    ctx: CallContext,
    Path(name): Path<String>,
) -> ServiceResult<Json<FeatureView>> {
    s.list_feature_views(ctx, ListRequest {})
        .await?
        .feature_views
        .into_iter()
        .find(|v| v.name == name)
        .map(Json)
        .ok_or_else(|| ServiceError::not_found(format!("feature view '{name}' not found")))
}

async fn ingest(
    State(s): State<FeaturesClient>,
    ctx: CallContext,
    body: Bytes,
) -> ServiceResult<Json<WrittenBody>> {
    let request = parse::<IngestBody>(&body)?.into();
    Ok(Json(s.ingest(ctx, request).await?.into()))
}

async fn push(
    State(s): State<FeaturesClient>,
    ctx: CallContext,
    body: Bytes,
) -> ServiceResult<Json<WrittenBody>> {
    let request = parse::<PushBody>(&body)?.into();
    Ok(Json(s.push(ctx, request).await?.into()))
}

async fn materialize(
    State(s): State<FeaturesClient>,
    ctx: CallContext,
    body: Bytes,
) -> ServiceResult<Json<MaterializedBody>> {
    let request = parse::<MaterializeBody>(&body)?.into();
    Ok(Json(s.materialize(ctx, request).await?.into()))
}

async fn online(
    State(s): State<FeaturesClient>,
    ctx: CallContext,
    body: Bytes,
    max_entities: usize,
) -> ServiceResult<Json<OnlineBody>> {
    let request = LookupBody::parse_online(&body, max_entities)?.into();
    Ok(Json(s.get_online_features(ctx, request).await?.try_into()?))
}

async fn pipelines(
    State(s): State<FeaturesClient>,
    ctx: CallContext,
) -> ServiceResult<Json<PipelinesBody>> {
    Ok(Json(
        s.list_pipelines(ctx, ListRequest {}).await?.try_into()?,
    ))
}

async fn pipeline(
    State(s): State<FeaturesClient>,
    ctx: CallContext,
    Path(model): Path<String>,
) -> ServiceResult<Json<PipelineBody>> {
    let pipeline = s.get_pipeline(ctx, GetPipelineRequest { model }).await?;
    Ok(Json(pipeline.try_into()?))
}

async fn put_pipeline(
    State(s): State<FeaturesClient>,
    ctx: CallContext,
    body: Bytes,
) -> ServiceResult<Json<ChangesBody>> {
    let request = parse::<PipelineBody>(&body)?.into();
    Ok(Json(s.put_pipeline(ctx, request).await?.into()))
}

async fn transform(
    State(s): State<FeaturesClient>,
    ctx: CallContext,
    body: Bytes,
) -> ServiceResult<Json<TensorsBody>> {
    let request = parse::<TransformBody>(&body)?.try_into()?;
    Ok(Json(s.transform(ctx, request).await?.into()))
}

/// `?format=ndjson|csv`.
#[derive(serde::Deserialize)]
struct FormatQuery {
    #[serde(default)]
    format: String,
}

async fn historical(
    State(s): State<FeaturesClient>,
    ctx: CallContext,
    Query(query): Query<FormatQuery>,
    body: Bytes,
) -> ServiceResult<Response> {
    let format = Format::parse(&query.format).ok_or_else(|| {
        ServiceError::bad_request(format!(
            "format must be ndjson or csv, not '{}'",
            query.format
        ))
    })?;
    let request: GetHistoricalFeaturesRequest = parse::<LookupBody>(&body)?.into();
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
    let rows = s.get_historical_features(ctx, request).await?;
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
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from_stream(body),
    )
        .into_response())
}
