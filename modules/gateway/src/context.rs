//! What one external request carries down to the routing client: its
//! deadline, request id, trace context, and a slot where the router writes
//! the model version that served it (for the `X-Mlserve-Model-Version` header).
//!
//! The HTTP middleware and the gRPC layer run the handler inside
//! [`RequestContext::scope`]; the routing client reads it with
//! [`RequestContext::current`]. Outside a scope (streams, tests) there is none
//! and defaults apply.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

tokio::task_local! {
    static CONTEXT: RequestContext;
}

/// Header naming the version that served a request.
pub const MODEL_VERSION_HEADER: &str = "x-mlserve-model-version";
/// Header carrying a request's deadline in milliseconds.
pub const TIMEOUT_HEADER: &str = "mlserve-timeout-ms";
/// Header carrying the request id (also the canary hash key).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// W3C trace-context header, passed on to inference.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// One request's context.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// When the request must be answered.
    pub deadline: Option<Instant>,
    /// The caller's request id, when given.
    pub request_id: Option<String>,
    /// W3C `traceparent`, when given.
    pub traceparent: Option<String>,
    /// Written by the router: the model version that served the request.
    pub served_version: Arc<Mutex<Option<String>>>,
}

impl RequestContext {
    /// A context whose deadline is `timeout` from now.
    pub fn with_timeout(timeout: Duration) -> RequestContext {
        RequestContext {
            deadline: Some(Instant::now() + timeout),
            ..RequestContext::default()
        }
    }

    /// Runs `fut` with this context as the current one.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CONTEXT.scope(self, fut).await
    }

    /// The current request's context, when inside a scope.
    pub fn current() -> Option<RequestContext> {
        CONTEXT.try_with(Clone::clone).ok()
    }

    /// Records the version that served the request.
    pub fn set_served_version(&self, version: &str) {
        if let Ok(mut slot) = self.served_version.lock() {
            *slot = Some(version.to_string());
        }
    }

    /// The version recorded by [`RequestContext::set_served_version`].
    pub fn served_version(&self) -> Option<String> {
        self.served_version.lock().ok().and_then(|v| v.clone())
    }
}

/// Parses a `grpc-timeout` value (`<digits><unit>`, unit one of H M S m u n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "m", "10x", "123456789S", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_context_is_visible_inside_its_scope_only() {
        assert!(RequestContext::current().is_none());
        let ctx = RequestContext {
            request_id: Some("r1".into()),
            ..RequestContext::default()
        };
        let slot = ctx.clone();
        ctx.scope(async {
            let inner = RequestContext::current().expect("in scope");
            assert_eq!(inner.request_id.as_deref(), Some("r1"));
            inner.set_served_version("2");
        })
        .await;
        assert_eq!(slot.served_version().as_deref(), Some("2"));
    }
}
