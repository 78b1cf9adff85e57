//! The registry's REST API under `/v1/registry/`, over any
//! [`RegistryClient`] (local or remote). Errors use mlserve's one format:
//! the status of the error's code and `{"error": "..."}`.
//!
//! | method | path | what |
//! |---|---|---|
//! | POST | /v1/registry/models | create a model `{name, description, tags}` |
//! | GET | /v1/registry/models?query=&tags=k=v,..&page_token=&limit= | list / search |
//! | GET, PATCH, DELETE | /v1/registry/models/{name} | get, update `{description, set_tags, remove_tags}`, delete |
//! | POST | /v1/registry/models/{name}/versions | upload a version (multipart, below) |
//! | GET | /v1/registry/models/{name}/versions?page_token=&limit= | list versions, newest first |
//! | GET, PATCH | /v1/registry/models/{name}/versions/{version} | get, update |
//! | GET | /v1/registry/models/{name}/versions/{version}/files/{path} | download a file |
//! | GET | /v1/registry/models/{name}/aliases | list aliases |
//! | GET, PUT, DELETE | /v1/registry/models/{name}/aliases/{alias} | get (with its version), set `{version}`, delete |
//! | GET | /v1/registry/models/{name}/alias-history?alias=&page_token=&limit= | moves, oldest first |
//!
//! A version upload is `multipart/form-data`: an optional first part named
//! `metadata` (JSON: description, lineage, metrics, tags, and `sha256`, the
//! expected digest per file path), then one part named `file` per file whose
//! filename is its path inside the version. Parts stream to the object store.
//! Who uploads a version or moves an alias is the call context's
//! authenticated caller (the gateway's key or JWT identity), else
//! "anonymous": no header a client sends can claim a name.

mod upload;
mod upload_bounds;
pub mod views;

pub use upload::decode_upload;

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mlserve_proto::registry::{pb, RegistryCalls, RegistryClient, RegistryService};
use mlserve_proto::{CallContext, ServiceError};
use serde_json::{json, Value};

/// The header carrying a downloaded file's sha256.
pub const SHA256_HEADER: &str = "x-mlserve-sha256";

/// What every handler returns; an error answers in the one error format.
type ApiResult = Result<Response, ServiceError>;

fn json_response(status: StatusCode, value: Value) -> Response {
    (status, Json(value)).into_response()
}

/// One page of a list: `{"<key>": [...], "next_page_token": "..."}`.
fn page_response<T>(key: &str, items: &[T], view: fn(&T) -> Value, next: String) -> Response {
    let items: Vec<Value> = items.iter().map(view).collect();
    json_response(
        StatusCode::OK,
        json!({ key: items, "next_page_token": next }),
    )
}

fn path_params(
    params: Result<Path<HashMap<String, String>>, PathRejection>,
) -> Result<HashMap<String, String>, ServiceError> {
    params
        .map(|Path(map)| map)
        .map_err(|e| ServiceError::bad_request(format!("invalid request path: {}", e.body_text())))
}

fn param(map: &HashMap<String, String>, key: &str) -> String {
    map.get(key).cloned().unwrap_or_default()
}

fn version_param(map: &HashMap<String, String>) -> Result<u64, ServiceError> {
    let text = param(map, "version");
    text.parse::<u64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        ServiceError::bad_request(format!(
            "invalid version '{}': versions are positive integers",
            text.escape_debug()
        ))
    })
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ServiceError> {
    body.map(|Json(v)| v)
        .map_err(|e| ServiceError::bad_request(format!("invalid JSON body: {}", e.body_text())))
}

fn query(
    q: Result<Query<views::ListQuery>, QueryRejection>,
) -> Result<views::ListQuery, ServiceError> {
    q.map(|Query(v)| v)
        .map_err(|e| ServiceError::bad_request(format!("invalid query: {}", e.body_text())))
}

fn tag_filter(text: &str) -> Result<HashMap<String, String>, ServiceError> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    ServiceError::bad_request(format!("invalid tag filter '{pair}': use key=value"))
                })
        })
        .collect()
}

/// The registry's REST routes (no fallbacks: the node adds them once).
pub fn routes(service: RegistryClient) -> Router {
    const MODEL: &str = "/v1/registry/models/{name}";
    Router::new()
        .route("/v1/registry/models", get(list_models).post(create_model))
        .route(
            MODEL,
            get(get_model).patch(update_model).delete(delete_model),
        )
        .route(
            &format!("{MODEL}/versions"),
            get(list_versions)
                .post(upload::create_version)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            &format!("{MODEL}/versions/{{version}}"),
            get(get_version).patch(update_version),
        )
        .route(
            &format!("{MODEL}/versions/{{version}}/files/{{*path}}"),
            get(download),
        )
        .route(&format!("{MODEL}/aliases"), get(list_aliases))
        .route(
            &format!("{MODEL}/aliases/{{alias}}"),
            get(get_alias).put(set_alias).delete(delete_alias),
        )
        .route(&format!("{MODEL}/alias-history"), get(alias_history))
        .with_state(service)
}

type Params = Result<Path<HashMap<String, String>>, PathRejection>;

async fn create_model(
    State(service): State<RegistryClient>,
    ctx: CallContext,
    request: Result<Json<views::CreateModel>, JsonRejection>,
) -> ApiResult {
    let request = body(request)?;
    let model = service
        .create_model(
            ctx,
            pb::CreateModelRequest {
                name: request.name,
                description: request.description,
                tags: request.tags,
            },
        )
        .await?;
    Ok(json_response(StatusCode::CREATED, views::model(&model)))
}

async fn list_models(
    State(service): State<RegistryClient>,
    ctx: CallContext,
    q: Result<Query<views::ListQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let page = service
        .list_models(
            ctx,
            pb::ListModelsRequest {
                query: q.query,
                tags: tag_filter(&q.tags)?,
                page_token: q.page_token,
                limit: q.limit,
            },
        )
        .await?;
    Ok(page_response(
        "models",
        &page.models,
        views::model,
        page.next_page_token,
    ))
}

async fn get_model(
    State(service): State<RegistryClient>,
    ctx: CallContext,
    params: Params,
) -> ApiResult {
    let p = path_params(params)?;
    let name = param(&p, "name");
    let model = service.get_model(ctx, pb::GetModelRequest { name }).await?;
    Ok(json_response(StatusCode::OK, views::model(&model)))
}

async fn update_model(
    State(service): State<RegistryClient>,
    ctx: CallContext,
    params: Params,
    request: Result<Json<views::Update>, JsonRejection>,
) -> ApiResult {
    let p = path_params(params)?;
    let u = body(request)?;
    let model = service
        .update_model(
            ctx,
            pb::UpdateModelRequest {
                name: param(&p, "name"),
                description: u.description,
                set_tags: u.set_tags,
                remove_tags: u.remove_tags,
            },
        )
        .await?;
    Ok(json_response(StatusCode::OK, views::model(&model)))
}

async fn delete_model(
    State(service): State<RegistryClient>,
    ctx: CallContext,
    params: Params,
) -> ApiResult {
    let p = path_params(params)?;
    let name = param(&p, "name");
    service
        .delete_model(ctx, pb::DeleteModelRequest { name })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_versions(
    State(service): State<RegistryClient>,
    ctx: CallContext,
    params: Params,
    q: Result<Query<views::ListQuery>, QueryRejection>,
) -> ApiResult {
    let p = path_params(params)?;
    let q = query(q)?;
    let page = service
        .list_versions(
            ctx,
            pb::ListVersionsRequest {
                name: param(&p, "name"),
                page_token: q.page_token,
                limit: q.limit,
            },
        )
        .await?;
    Ok(page_response(
        "versions",
        &page.versions,
        views::version,
        page.next_page_token,
    ))
}

async fn get_version(
    State(service): State<RegistryClient>,
    ctx: CallContext,
    params: Params,
) -> ApiResult {
    let p = path_params(params)?;
    let request = pb::GetVersionRequest {
        name: param(&p, "name"),
        version: version_param(&p)?,
    };
    let v = service.get_version(ctx, request).await?;
    Ok(json_response(StatusCode::OK, views::version(&v)))
}

async fn update_version(
    State(service): State<RegistryClient>,
    ctx: CallContext,
    params: Params,
    request: Result<Json<views::Update>, JsonRejection>,
) -> ApiResult {
    let p = path_params(params)?;
    let u = body(request)?;
    let v = service
        .update_version(
            ctx,
            pb::UpdateVersionRequest {
                name: param(&p, "name"),
                version: version_param(&p)?,
                description: u.description,
                set_tags: u.set_tags,
                remove_tags: u.remove_tags,
            },
        )
        .await?;
    Ok(json_response(StatusCode::OK, views::version(&v)))
}

async fn download(
    State(service): State<RegistryClient>,
    ctx: CallContext,
    params: Params,
) -> ApiResult {
    let p = path_params(params)?;
    let version = version_param(&p)?;
    let (file, stream) = service
        .download_file(ctx, &param(&p, "name"), version, &param(&p, "path"))
        .await?;
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
    if let Ok(sha) = HeaderValue::from_str(&file.sha256) {
        headers.insert(SHA256_HEADER, sha);
    }
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", file.sha256)) {
        headers.insert(header::ETAG, etag);
    }
    Ok(response)
}

async fn list_aliases(
    State(service): State<RegistryClient>,
    ctx: CallContext,
    params: Params,
) -> ApiResult {
    let p = path_params(params)?;
    let name = param(&p, "name");
    let listed = service
        .list_aliases(ctx, pb::ListAliasesRequest { name })
        .await?;
    let aliases: Vec<Value> = listed.aliases.iter().map(views::alias).collect();
    Ok(json_response(StatusCode::OK, json!({ "aliases": aliases })))
}

async fn get_alias(
    State(service): State<RegistryClient>,
    ctx: CallContext,
    params: Params,
) -> ApiResult {
    let p = path_params(params)?;
    let (name, alias) = (param(&p, "name"), param(&p, "alias"));
    let found = service
        .get_alias(
            ctx.clone(),
            pb::GetAliasRequest {
                name: name.clone(),
                alias,
            },
        )
        .await?;
    let request = pb::GetVersionRequest {
        name,
        version: found.version,
    };
    let version = service.get_version(ctx, request).await?;
    let mut value = views::alias(&found);
    value["model_version"] = views::version(&version);
    Ok(json_response(StatusCode::OK, value))
}

async fn set_alias(
    State(service): State<RegistryClient>,
    ctx: CallContext,
    params: Params,
    request: Result<Json<views::SetAlias>, JsonRejection>,
) -> ApiResult {
    let p = path_params(params)?;
    let request = body(request)?;
    let moved = service
        .set_alias(
            ctx,
            pb::SetAliasRequest {
                name: param(&p, "name"),
                alias: param(&p, "alias"),
                version: request.version,
                actor: String::new(),
            },
        )
        .await?;
    Ok(json_response(StatusCode::OK, views::alias_move(&moved)))
}

async fn delete_alias(
    State(service): State<RegistryClient>,
    ctx: CallContext,
    params: Params,
) -> ApiResult {
    let p = path_params(params)?;
    let moved = service
        .delete_alias(
            ctx,
            pb::DeleteAliasRequest {
                name: param(&p, "name"),
                alias: param(&p, "alias"),
                actor: String::new(),
            },
        )
        .await?;
    Ok(json_response(StatusCode::OK, views::alias_move(&moved)))
}

async fn alias_history(
    State(service): State<RegistryClient>,
    ctx: CallContext,
    params: Params,
    q: Result<Query<views::ListQuery>, QueryRejection>,
) -> ApiResult {
    let p = path_params(params)?;
    let q = query(q)?;
    let page = service
        .alias_history(
            ctx,
            pb::AliasHistoryRequest {
                name: param(&p, "name"),
                alias: q.alias,
                page_token: q.page_token,
                limit: q.limit,
            },
        )
        .await?;
    Ok(page_response(
        "moves",
        &page.moves,
        views::alias_move,
        page.next_page_token,
    ))
}
