//! The gateway's own small APIs, behind the same admission as the rest:
//!
//! - `GET /v1/whoami`: the caller's identity and scopes, and whether
//!   authentication is on (any credential; the console shows only the
//!   buttons these scopes allow).
//! - `GET /v1/gateway/roles`: the platform's roles as this gateway reaches
//!   them (in this process, or an endpoint) and whether each is up.
//! - `GET /v1/keys`, `POST /v1/keys` (`{"name", "scopes", "rate",
//!   "burst"}`; 201 with the secret, shown once), `DELETE /v1/keys/{id}`
//!   (revoked at once in this process, in the others within
//!   `gateway.key_cache_ttl`): API keys, scope `keys:admin`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use mlserve_proto::http::error_response;
use mlserve_proto::{CallContext, ServiceError};
use serde::Deserialize;
use serde_json::json;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::scopes::{self, KEYS_ADMIN};

/// How long a remote role's health check may take before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One of the platform's roles as the gateway reaches it.
pub struct RoleProbe {
    role: &'static str,
    /// `None`: in this process.
    remote: Option<(String, Channel)>,
}

impl RoleProbe {
    /// A role running in this process.
    pub fn local(role: &'static str) -> RoleProbe {
        RoleProbe { role, remote: None }
    }

    /// A role at the gRPC `endpoint` (connected lazily, asked through
    /// `grpc.health.v1`).
    pub fn remote(role: &'static str, endpoint: &str) -> Result<RoleProbe, String> {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| format!("{role} endpoint '{endpoint}': {e}"))?
            .connect_timeout(PROBE_TIMEOUT)
            .connect_lazy();
        Ok(RoleProbe {
            role,
            remote: Some((endpoint.to_string(), channel)),
        })
    }

    async fn report(&self) -> serde_json::Value {
        let Some((endpoint, channel)) = &self.remote else {
            return json!({ "role": self.role, "location": "local", "up": true });
        };
        let mut client = HealthClient::new(channel.clone());
        let check = client.check(HealthCheckRequest {
            service: String::new(),
        });
        let up = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, check).await,
            Ok(Ok(answer)) if answer.get_ref().status == ServingStatus::Serving as i32
        );
        json!({ "role": self.role, "location": endpoint, "up": up })
    }
}

struct AdminState {
    gateway: Arc<Gateway>,
    roles: Vec<RoleProbe>,
}

/// The routes; `roles` are the non-inference roles this gateway reaches
/// (inference is reported from its endpoint set).
pub fn routes(gateway: Arc<Gateway>, roles: Vec<RoleProbe>) -> Router {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/gateway/roles", get(list_roles))
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{id}", delete(revoke_key))
        .with_state(Arc::new(AdminState { gateway, roles }))
}

async fn whoami(State(state): State<Arc<AdminState>>, ctx: CallContext) -> Response {
    let (identity, scopes) = match &ctx.caller {
        Some(caller) => (caller.identity.clone(), caller.scopes.clone()),
        None => (
            mlserve_proto::registry::ANONYMOUS.to_string(),
            scopes::ALL.iter().map(|s| s.to_string()).collect(),
        ),
    };
    Json(json!({
        "identity": identity,
        "scopes": scopes,
        "auth": state.gateway.auth.required(),
    }))
    .into_response()
}

async fn list_roles(State(state): State<Arc<AdminState>>) -> Response {
    let mut roles: Vec<serde_json::Value> = state
        .gateway
        .router
        .endpoints()
        .snapshot()
        .iter()
        .map(|e| json!({ "role": "inference", "location": e.name, "up": e.healthy() }))
        .collect();
    roles.push(json!({ "role": "gateway", "location": "local", "up": true }));
    let others = futures_util::future::join_all(state.roles.iter().map(RoleProbe::report)).await;
    roles.extend(others);
    Json(json!({ "roles": roles })).into_response()
}

/// A new key, as `POST /v1/keys` takes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    rate: f64,
    #[serde(default)]
    burst: f64,
    #[serde(default)]
    priority: u32,
}

fn refuse(err: GatewayError) -> Response {
    error_response(&ServiceError::from(err))
}

async fn list_keys(State(state): State<Arc<AdminState>>, ctx: CallContext) -> Response {
    if let Err(err) = scopes::require(&ctx, KEYS_ADMIN) {
        return error_response(&err);
    }
    match state.gateway.keys.list().await {
        Ok(keys) => Json(json!({ "keys": keys })).into_response(),
        Err(err) => refuse(err),
    }
}

async fn create_key(
    State(state): State<Arc<AdminState>>,
    ctx: CallContext,
    body: Bytes,
) -> Response {
    if let Err(err) = scopes::require(&ctx, KEYS_ADMIN) {
        return error_response(&err);
    }
    let new: NewKey = match serde_json::from_slice(&body) {
        Ok(new) => new,
        Err(e) => {
            return refuse(GatewayError::BadRequest(format!(
                "a new key is {{\"name\": \"...\", \"scopes\": [\"infer\"], \"rate\": 0, \"burst\": 0, \"priority\": 0}}: {e}"
            )))
        }
    };
    // As `mlserve keys create`: the burst defaults to the rate (at least 1).
    let burst = if new.burst < 1.0 {
        new.rate.max(1.0)
    } else {
        new.burst
    };
    let scopes: Vec<&str> = new.scopes.iter().map(String::as_str).collect();
    match state
        .gateway
        .keys
        .create_scoped(&new.name, new.rate, burst, &scopes, new.priority)
        .await
    {
        Ok((key, secret)) => (
            StatusCode::CREATED,
            Json(json!({ "key": key, "secret": secret })),
        )
            .into_response(),
        Err(err) => refuse(err),
    }
}

async fn revoke_key(
    State(state): State<Arc<AdminState>>,
    ctx: CallContext,
    Path(id): Path<String>,
) -> Response {
    if let Err(err) = scopes::require(&ctx, KEYS_ADMIN) {
        return error_response(&err);
    }
    let keys = &state.gateway.keys;
    let found = match keys.list().await {
        Ok(all) => all
            .into_iter()
            .any(|k| k.id == id && k.revoked_at.is_none()),
        Err(err) => return refuse(err),
    };
    if !found {
        return refuse(GatewayError::NotFound(format!(
            "no live api key with id '{id}'"
        )));
    }
    if let Err(err) = keys.revoke(&id).await {
        return refuse(err);
    }
    match keys.list().await {
        Ok(all) => match all.into_iter().find(|k| k.id == id) {
            Some(key) => Json(json!({ "key": key })).into_response(),
            None => refuse(GatewayError::NotFound(format!("no api key with id '{id}'"))),
        },
        Err(err) => refuse(err),
    }
}
