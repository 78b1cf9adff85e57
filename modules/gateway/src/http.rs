//! The gateway's external HTTP API: the Open Inference Protocol (v2 REST)
//! over the routing client, the predict API, and the canary admin API, all
//! behind authentication, rate limits and the request deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use mlserve_proto::context::MODEL_VERSION_HEADER;
use mlserve_proto::http::{error_response, v2_routes, HttpOptions};
use mlserve_proto::{CallContext, ServiceError};

use crate::admin_api::RoleProbe;
use crate::admission::{admit, context, rate_limit_headers, response_headers};
use crate::auth::CHALLENGE;
use crate::canary::CanaryAction;
use crate::error::GatewayError;
use crate::gateway::Gateway;

/// Paths served without credentials or limits (probes).
const PUBLIC: [&str; 2] = ["/v2/health/live", "/v2/health/ready"];

/// The gateway's HTTP routes (no fallbacks; the caller adds them, then
/// [`with_cors`]): the v2 protocol, predict, canary splits, the other
/// services' REST APIs in `services` (each route behind its scope, see
/// [`crate::service_scopes`]) and the gateway's own ([`crate::admin_api`]),
/// all behind admission; and the console's files at `/ui`, which need no
/// credentials.
pub fn routes(gateway: Arc<Gateway>, services: Router, roles: Vec<RoleProbe>) -> Router {
    let options = HttpOptions {
        max_body_bytes: gateway.max_body_bytes,
    };
    let admin = Router::new()
        .route(
            "/v1/gateway/canary/{model}",
            get(get_canary).post(set_canary),
        )
        .route("/v1/models/{spec}", post(crate::predict::predict))
        .with_state(gateway.clone());
    let services = services.layer(middleware::from_fn(crate::service_scopes::check));
    v2_routes(gateway.inference.clone(), options)
        .merge(admin)
        .merge(services)
        .merge(crate::admin_api::routes(gateway.clone(), roles))
        .layer(middleware::from_fn_with_state(gateway, gate))
        .merge(crate::console::routes())
}

/// `router` behind CORS when origins are configured. Applied last, once the
/// fallbacks are in place: a method-not-allowed fallback installed after
/// the layer would answer a preflight with 405 before CORS saw it.
pub fn with_cors(gateway: &Gateway, router: Router) -> Router {
    match gateway.cors.clone() {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Admits, serves and accounts for one request: the counters by class and
/// the request-duration histogram by route, model and serving version.
async fn gate(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = request.uri().path();
    let matched = request.extensions().get::<MatchedPath>();
    let (route, model) = (route_label(path, matched), model_in_path(path).to_string());
    let (response, ctx) = admit_and_serve(&gateway, request, next).await;
    let response = finish(&gateway, response);
    let version = ctx
        .and_then(|ctx| ctx.reply_note(MODEL_VERSION_HEADER))
        .unwrap_or_default();
    gateway.metrics.observe(
        &route,
        &model,
        &version,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The route label of a request: the inference paths as
/// [`route_of_path`] writes them; any other path as its route's template
/// (`/v1/training/runs/{id}`), so ids never become labels.
fn route_label(path: &str, matched: Option<&MatchedPath>) -> String {
    let inference = path.starts_with("/v2/") || path == "/v2" || path.starts_with("/v1/models/");
    match matched {
        Some(template) if !inference => template.as_str().to_string(),
        _ => route_of_path(path),
    }
}

/// A path with its model and version segments replaced by `{model}` and
/// `{version}`: a route label of bounded cardinality.
fn route_of_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut previous = "";
    for segment in path.split('/').skip(1) {
        out.push('/');
        out.push_str(match previous {
            "models" | "canary" => "{model}",
            "versions" => "{version}",
            _ => segment,
        });
        previous = segment;
    }
    out
}

/// The model a path names (`/v2/models/{model}/...`, `/v1/models/{spec}`,
/// `/v1/gateway/canary/{model}`), else "".
fn model_in_path(path: &str) -> &str {
    if let Some(spec) = path.strip_prefix("/v1/models/") {
        // The predict API's `{model}:predict` (KServe v1): the verb is not
        // part of the model.
        return spec.split(['/', ':']).next().unwrap_or("");
    }
    ["/v2/models/", "/v1/gateway/canary/"]
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))
        .and_then(|rest| rest.split('/').next())
        .filter(|model| *model != "stats")
        .unwrap_or("")
}

async fn admit_and_serve(
    gateway: &Arc<Gateway>,
    mut request: Request,
    next: Next,
) -> (Response, Option<CallContext>) {
    let public = PUBLIC.contains(&request.uri().path());
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let mut admitted = None;
    if !public {
        match admit(gateway, request.headers(), peer).await {
            Ok(a) => admitted = Some(a),
            Err((err, d)) => {
                let mut response = error_response(&ServiceError::from(err));
                if let Some(d) = d {
                    rate_limit_headers(response.headers_mut(), &d);
                }
                return (response, None);
            }
        }
    }
    let ctx = match CallContext::from_http(request.headers()) {
        Ok(ctx) => context(gateway, ctx, admitted.as_ref()),
        Err(err) => return (error_response(&err), None),
    };
    request.extensions_mut().insert(ctx.clone());
    let mut response = next.run(request).await;
    response_headers(response.headers_mut(), &ctx, admitted.as_ref());
    (response, Some(ctx))
}

fn finish(gateway: &Gateway, mut response: Response) -> Response {
    let status = response.status();
    let headers = response.headers_mut();
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(CHALLENGE),
        );
    }
    if status == StatusCode::SERVICE_UNAVAILABLE && !headers.contains_key(header::RETRY_AFTER) {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(gateway.retry_after_secs()),
        );
    }
    response
}

async fn get_canary(State(gateway): State<Arc<Gateway>>, Path(model): Path<String>) -> Response {
    match gateway.canary.get(&model) {
        Some(split) => axum::Json(split).into_response(),
        None => error_response(
            &GatewayError::NotFound(format!("model '{model}' has no canary split")).into(),
        ),
    }
}

/// Sets, promotes or rolls back a split (scope `rollouts:admin`).
async fn set_canary(
    State(gateway): State<Arc<Gateway>>,
    ctx: CallContext,
    Path(model): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(err) = crate::scopes::require(&ctx, crate::scopes::ROLLOUTS_ADMIN) {
        return error_response(&err);
    }
    let action: CanaryAction = match serde_json::from_slice(&body) {
        Ok(action) => action,
        Err(e) => {
            let err = GatewayError::BadRequest(format!(
                "canary body must be {{\"action\":\"set\",\"stable\":\"1\",\"canary\":\"2\",\"weight\":0.1}}, {{\"action\":\"promote\"}} or {{\"action\":\"rollback\"}}: {e}"
            ));
            return error_response(&err.into());
        }
    };
    match gateway.canary.apply(&model, action).await {
        Ok(split) => axum::Json(split).into_response(),
        Err(err) => error_response(&err.into()),
    }
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn the_model_of_a_path_leaves_the_predict_verb_out() {
        assert_eq!(model_in_path("/v1/models/tabular:predict"), "tabular");
        assert_eq!(model_in_path("/v2/models/plus/versions/2/infer"), "plus");
        assert_eq!(model_in_path("/v1/gateway/canary/plus"), "plus");
        assert_eq!(model_in_path("/v2/models/stats"), "");
        assert_eq!(
            route_of_path("/v1/models/tabular:predict"),
            "/v1/models/{model}"
        );
    }
}
