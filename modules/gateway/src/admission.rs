//! What every external request passes before it is served, over HTTP or
//! gRPC alike: authentication, then its caller's rate limit; and the
//! request context (deadline, request id, trace) it is served under.

use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::context::{RequestContext, MODEL_VERSION_HEADER, REQUEST_ID_HEADER, TRACEPARENT_HEADER};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::ratelimit::Decision;

/// Authenticates and rate-limits a request; the decision (when limited)
/// feeds the rate-limit headers.
pub async fn admit(
    gateway: &Gateway,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<Option<Decision>, (GatewayError, Option<Decision>)> {
    let identity = gateway
        .auth
        .identify(headers, peer)
        .await
        .map_err(|e| (e, None))?;
    let decision = gateway
        .limiter
        .check(&identity.bucket, identity.limit)
        .await
        .map_err(|e| (e, None))?;
    match decision {
        Some(d) if !d.allowed => Err((
            GatewayError::RateLimited {
                retry_after_secs: d.retry_after_secs,
            },
            Some(d),
        )),
        other => Ok(other),
    }
}

/// The context of a request: `timeout` (already parsed from the transport's
/// header) or the default deadline, the request id and the trace context.
pub fn context(
    gateway: &Gateway,
    headers: &HeaderMap,
    timeout: Option<Duration>,
) -> RequestContext {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    RequestContext {
        request_id: text(REQUEST_ID_HEADER),
        traceparent: text(TRACEPARENT_HEADER),
        ..RequestContext::with_timeout(timeout.unwrap_or_else(|| gateway.default_timeout()))
    }
}

/// Adds `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (and
/// `Retry-After` when refused) to `headers`.
pub fn rate_limit_headers(headers: &mut HeaderMap, decision: &Decision) {
    let mut set = |name: &'static str, value: u64| {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    };
    set("ratelimit-limit", decision.limit);
    set("ratelimit-remaining", decision.remaining);
    set("ratelimit-reset", decision.reset_secs);
    if !decision.allowed {
        set("retry-after", decision.retry_after_secs);
    }
}

/// Adds what a served request answers with: the serving model version (when
/// the router recorded one) and the rate-limit headers (when limited).
pub fn response_headers(
    headers: &mut HeaderMap,
    served: &RequestContext,
    decision: Option<&Decision>,
) {
    if let Some(version) = served
        .served_version()
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        headers.insert(MODEL_VERSION_HEADER, version);
    }
    if let Some(d) = decision {
        rate_limit_headers(headers, d);
    }
}
