//! The gateway's external HTTP API: the Open Inference Protocol (v2 REST)
//! over the routing client, the predict API, and the canary admin API, all
//! behind authentication, rate limits and the request deadline.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use mlserve_proto::http::{error_response, v2_routes, HttpOptions};
use mlserve_proto::{CallContext, ServiceError};

use crate::admission::{admit, context, rate_limit_headers, response_headers};
use crate::auth::CHALLENGE;
use crate::canary::CanaryAction;
use crate::error::GatewayError;
use crate::gateway::Gateway;

/// Paths served without credentials or limits (probes).
const PUBLIC: [&str; 2] = ["/v2/health/live", "/v2/health/ready"];

/// The gateway's HTTP routes (no fallbacks; the caller adds them).
pub fn routes(gateway: Arc<Gateway>) -> Router {
    let options = HttpOptions {
        max_body_bytes: gateway.settings.max_body_bytes,
    };
    let admin = Router::new()
        .route(
            "/v1/gateway/canary/{model}",
            get(get_canary).post(set_canary),
        )
        .route("/v1/models/{spec}", post(crate::predict::predict))
        .with_state(gateway.clone());
    v2_routes(gateway.inference.clone(), options)
        .merge(admin)
        .layer(middleware::from_fn_with_state(gateway, gate))
}

async fn gate(State(gateway): State<Arc<Gateway>>, mut request: Request, next: Next) -> Response {
    let public = PUBLIC.contains(&request.uri().path());
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let mut admitted = None;
    if !public {
        match admit(&gateway, request.headers(), peer).await {
            Ok(a) => admitted = Some(a),
            Err((err, d)) => {
                let mut response = error_response(&ServiceError::from(err));
                if let Some(d) = d {
                    rate_limit_headers(response.headers_mut(), &d);
                }
                return finish(&gateway, response);
            }
        }
    }
    let ctx = match CallContext::from_http(request.headers()) {
        Ok(ctx) => context(&gateway, ctx, admitted.as_ref()),
        Err(err) => return finish(&gateway, error_response(&err)),
    };
    request.extensions_mut().insert(ctx.clone());
    let mut response = next.run(request).await;
    response_headers(response.headers_mut(), &ctx, admitted.as_ref());
    finish(&gateway, response)
}

fn finish(gateway: &Gateway, mut response: Response) -> Response {
    let status = response.status();
    gateway.metrics.request(status.as_u16());
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
            HeaderValue::from(gateway.settings.retry_after_secs),
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

async fn set_canary(
    State(gateway): State<Arc<Gateway>>,
    Path(model): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let action: CanaryAction = match serde_json::from_slice(&body) {
        Ok(action) => action,
        Err(e) => {
            let err = GatewayError::BadRequest(format!(
                "canary body must be {{\"action\":\"set\",\"stable\":\"1\",\"canary\":\"2\",\"weight\":0.1}}, {{\"action\":\"promote\"}} or {{\"action\":\"rollback\"}}: {e}"
            ));
            return error_response(&err.into());
        }
    };
    match gateway.canary.apply(&model, action) {
        Ok(split) => axum::Json(split).into_response(),
        Err(err) => error_response(&err.into()),
    }
}
