//! What every external request passes before it is served, over HTTP or
//! gRPC alike: authentication, then its caller's rate limit; and the
//! request context (deadline, request id, trace) it is served under.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use mlserve_proto::{CallContext, Caller};

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::ratelimit::Decision;

/// What admission grants a request: who it is (for its call context) and
/// its rate-limit decision (for the answer's headers).
pub struct Admitted {
    /// The authenticated caller, if any.
    pub caller: Option<Arc<Caller>>,
    /// The rate-limit decision, when the caller is limited.
    pub decision: Option<Decision>,
}

/// Authenticates and rate-limits a request; the decision (when limited)
/// feeds the rate-limit headers.
pub async fn admit(
    gateway: &Gateway,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<Admitted, (GatewayError, Option<Decision>)> {
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
        decision => Ok(Admitted {
            caller: identity.caller,
            decision,
        }),
    }
}

/// The call context of an admitted request: `ctx` as the transport read it
/// (deadline, request id, trace), the default deadline when it names none,
/// and the authenticated caller.
pub fn context(gateway: &Gateway, ctx: CallContext, admitted: Option<&Admitted>) -> CallContext {
    let mut ctx = match ctx.deadline {
        Some(_) => ctx,
        None => ctx.with_timeout(gateway.default_timeout()),
    };
    ctx.caller = admitted.and_then(|a| a.caller.clone());
    ctx
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

/// Adds what a served request answers with: its reply notes (the serving
/// model version) and the rate-limit headers (when limited).
pub fn response_headers(headers: &mut HeaderMap, ctx: &CallContext, admitted: Option<&Admitted>) {
    ctx.write_reply(headers);
    if let Some(d) = admitted.and_then(|a| a.decision.as_ref()) {
        rate_limit_headers(headers, d);
    }
}
