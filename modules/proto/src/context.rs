//! The context every service call carries: its deadline, request id, W3C
//! trace context and the caller's identity and scopes.
//!
//! A local call passes the context as it is; a remote call writes it as gRPC
//! metadata (`grpc-timeout`, `x-request-id`, `traceparent`,
//! `x-mlserve-caller`, `x-mlserve-scopes`, `x-mlserve-priority`) and the
//! server adapter reads it
//! back, so a service cannot tell a local caller from a remote one. HTTP
//! handlers build it from the same headers (`mlserve-timeout-ms` for the
//! deadline), or take the one an outer layer (the gateway) put in the
//! request's extensions.
//!
//! A context also carries reply notes: headers a service wants on the answer
//! (the model version that served a request). Clones share them, a remote
//! client copies them back from the response metadata, and the transports
//! write them on the reply.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::ServiceError;

/// HTTP header carrying a request's deadline in milliseconds.
pub const TIMEOUT_HEADER: &str = "mlserve-timeout-ms";
/// gRPC metadata carrying a call's deadline.
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";
/// The exact time left (µs) when an mlserve process calls another. The
/// standard `grpc-timeout` goes out [`DEADLINE_SLACK`] later, so the callee's
/// own expiry (a typed answer: the request timed out in its queue) always
/// wins over the transport cancelling the call.
pub const TIMEOUT_US_HEADER: &str = "mlserve-timeout-us";
/// How much later than the deadline a caller's backstop fires: time for the
/// callee's typed deadline answer to come back.
pub const DEADLINE_SLACK: Duration = Duration::from_millis(100);
/// Header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// W3C trace-context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The authenticated caller's identity, between mlserve processes.
pub const CALLER_HEADER: &str = "x-mlserve-caller";
/// The authenticated caller's scopes (space-separated), between mlserve processes.
pub const SCOPES_HEADER: &str = "x-mlserve-scopes";
/// The authenticated caller's scheduling priority, between mlserve processes.
pub const PRIORITY_HEADER: &str = "x-mlserve-priority";
/// Reply note naming the model version that served a request.
pub const MODEL_VERSION_HEADER: &str = "x-mlserve-model-version";

/// The header names above, parsed once (a `&str` lookup parses the name on
/// every call).
mod names {
    use http::HeaderName;
    pub const TIMEOUT: HeaderName = HeaderName::from_static(super::TIMEOUT_HEADER);
    pub const TIMEOUT_US: HeaderName = HeaderName::from_static(super::TIMEOUT_US_HEADER);
    pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static(super::GRPC_TIMEOUT_HEADER);
    pub const REQUEST_ID: HeaderName = HeaderName::from_static(super::REQUEST_ID_HEADER);
    pub const TRACEPARENT: HeaderName = HeaderName::from_static(super::TRACEPARENT_HEADER);
    pub const CALLER: HeaderName = HeaderName::from_static(super::CALLER_HEADER);
    pub const SCOPES: HeaderName = HeaderName::from_static(super::SCOPES_HEADER);
    pub const PRIORITY: HeaderName = HeaderName::from_static(super::PRIORITY_HEADER);
}

/// Reply note naming the model that served a request (the gateway's
/// metrics read it where the path does not name the model, as in gRPC).
pub const MODEL_HEADER: &str = "x-mlserve-model";

/// The reply notes a remote client copies back from a response.
pub const REPLY_NOTES: [&str; 2] = [MODEL_VERSION_HEADER, MODEL_HEADER];

/// Who is calling, as authenticated at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller {
    /// The caller's identity (key id, JWT subject, ...).
    pub identity: String,
    /// What the caller may do.
    pub scopes: Vec<String>,
    /// The scheduling priority its credential gives its requests (Triton's
    /// request priority: 1 is the highest level); 0: none, the request's own.
    pub priority: u32,
}

impl Caller {
    /// Whether the caller holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The priority a request of this caller runs at, given the one it asked
    /// for (`requested`, 0: none). The credential's priority sets it; the
    /// request may ask for a lower level (a larger number), never a higher.
    pub fn request_priority(&self, requested: u32) -> u32 {
        if self.priority == 0 {
            requested
        } else {
            requested.max(self.priority)
        }
    }
}

/// One call's context; cheap to clone (clones share the reply notes).
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// When the call must be answered.
    pub deadline: Option<Instant>,
    /// The caller's request id, when given.
    pub request_id: Option<String>,
    /// W3C `traceparent`, when given.
    pub traceparent: Option<String>,
    /// The authenticated caller, when there is one.
    pub caller: Option<Arc<Caller>>,
    /// Headers the answer should carry, shared by every clone.
    pub notes: ReplyNotes,
}

/// The reply notes of a call and its clones.
#[derive(Debug, Clone, Default)]
pub struct ReplyNotes(Arc<Mutex<Vec<(&'static str, String)>>>);

impl CallContext {
    /// A context with no deadline, id, trace or caller.
    pub fn new() -> CallContext {
        CallContext::default()
    }

    /// This context with its deadline `timeout` from now (the earlier one wins).
    pub fn with_timeout(mut self, timeout: Duration) -> CallContext {
        let deadline = Instant::now() + timeout;
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        self
    }

    /// The time left before the deadline (`None` without one; zero once passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.remaining().is_some_and(|r| r.is_zero())
    }

    /// Adds a header the answer should carry (replacing one of the same name).
    pub fn note_reply(&self, name: &'static str, value: impl Into<String>) {
        if let Ok(mut notes) = self.notes.0.lock() {
            notes.retain(|(n, _)| *n != name);
            notes.push((name, value.into()));
        }
    }

    /// The value of a reply note.
    pub fn reply_note(&self, name: &str) -> Option<String> {
        let notes = self.notes.0.lock().ok()?;
        notes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    /// Writes the reply notes into `headers` (HTTP headers or gRPC
    /// metadata), and echoes the request id.
    pub fn write_reply(&self, headers: &mut HeaderMap) {
        if let Some(id) = self
            .request_id
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(names::REQUEST_ID, id);
        }
        let Ok(notes) = self.notes.0.lock() else {
            return;
        };
        for (name, value) in notes.iter() {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
    }

    /// Takes the reply notes a remote answer carried in `headers`.
    pub fn read_reply(&self, headers: &HeaderMap) {
        for name in REPLY_NOTES {
            if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
                self.note_reply(name, value);
            }
        }
    }

    /// The context an HTTP request carries: deadline from
    /// `mlserve-timeout-ms` (a malformed value is a 400), request id and trace
    /// from their headers. No caller: only an authenticating layer sets one.
    pub fn from_http(headers: &HeaderMap) -> Result<CallContext, ServiceError> {
        let mut ctx = CallContext::from_common_headers(headers);
        if let Some(value) = headers.get(names::TIMEOUT) {
            let ms = value
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .ok_or_else(|| {
                    ServiceError::bad_request(format!(
                        "{TIMEOUT_HEADER} must be a positive number of milliseconds"
                    ))
                })?;
            ctx = ctx.with_timeout(Duration::from_millis(ms));
        }
        Ok(ctx)
    }

    /// The context a gRPC call carries in its metadata (the headers of its
    /// HTTP/2 request): deadline from `grpc-timeout`, request id, trace and
    /// the caller an mlserve peer forwarded.
    pub fn from_grpc(metadata: &HeaderMap) -> CallContext {
        let mut ctx = CallContext::from_common_headers(metadata);
        let exact = text(metadata, &names::TIMEOUT_US)
            .and_then(|us| us.parse::<u64>().ok())
            .map(Duration::from_micros);
        let timeout = exact.or_else(|| {
            metadata
                .get(names::GRPC_TIMEOUT)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_grpc_timeout)
        });
        if let Some(timeout) = timeout {
            ctx = ctx.with_timeout(timeout);
        }
        if let Some(identity) = text(metadata, &names::CALLER) {
            let scopes = text(metadata, &names::SCOPES)
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default();
            let priority = text(metadata, &names::PRIORITY)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            ctx.caller = Some(Arc::new(Caller {
                identity,
                scopes,
                priority,
            }));
        }
        ctx
    }

    fn from_common_headers(headers: &HeaderMap) -> CallContext {
        CallContext {
            request_id: text(headers, &names::REQUEST_ID),
            traceparent: text(headers, &names::TRACEPARENT),
            ..CallContext::default()
        }
    }

    /// Wraps `message` in a gRPC request carrying this context as metadata.
    pub fn grpc_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let remaining = self.remaining();
        if let Some(remaining) = remaining {
            request.set_timeout(remaining + DEADLINE_SLACK);
        }
        let metadata = request.metadata_mut();
        let mut put = |name: &'static str, value: &str| {
            if let Ok(value) = value.parse() {
                metadata.insert(name, value);
            }
        };
        if let Some(remaining) = remaining {
            // A passed deadline still goes out as the shortest one, so the
            // server refuses the call as expired instead of running it.
            let us = remaining.as_micros().clamp(1, u64::MAX as u128);
            put(TIMEOUT_US_HEADER, &us.to_string());
        }
        if let Some(id) = &self.request_id {
            put(REQUEST_ID_HEADER, id);
        }
        if let Some(trace) = &self.traceparent {
            put(TRACEPARENT_HEADER, trace);
        }
        if let Some(caller) = &self.caller {
            put(CALLER_HEADER, &caller.identity);
            put(SCOPES_HEADER, &caller.scopes.join(" "));
            if caller.priority > 0 {
                put(PRIORITY_HEADER, &caller.priority.to_string());
            }
        }
        request
    }
}

fn text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
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

    #[test]
    fn the_context_survives_grpc_metadata() {
        let ctx = CallContext {
            request_id: Some("r-1".into()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            caller: Some(Arc::new(Caller {
                identity: "key-7".into(),
                scopes: vec!["infer".into(), "predict".into()],
                priority: 2,
            })),
            ..CallContext::default()
        }
        .with_timeout(Duration::from_secs(5));
        let request = ctx.grpc_request(());
        let back = CallContext::from_grpc(&request.metadata().clone().into_headers());
        assert_eq!(back.request_id, ctx.request_id);
        assert_eq!(back.traceparent, ctx.traceparent);
        assert_eq!(back.caller, ctx.caller);
        let left = back.remaining().expect("a deadline");
        assert!(left <= Duration::from_secs(5) && left > Duration::from_secs(1));
    }

    #[test]
    fn a_credential_priority_can_be_lowered_never_raised() {
        let keyed = Caller {
            priority: 2,
            ..Caller::default()
        };
        assert_eq!(keyed.request_priority(0), 2, "the key's level by default");
        assert_eq!(
            keyed.request_priority(1),
            2,
            "no higher level than the key's"
        );
        assert_eq!(
            keyed.request_priority(3),
            3,
            "a lower level may be asked for"
        );
        assert_eq!(Caller::default().request_priority(1), 1);
        assert_eq!(Caller::default().request_priority(0), 0);
    }

    #[test]
    fn http_timeouts_are_checked() {
        let mut headers = HeaderMap::new();
        headers.insert(TIMEOUT_HEADER, HeaderValue::from_static("soon"));
        assert!(CallContext::from_http(&headers).is_err());
        headers.insert(TIMEOUT_HEADER, HeaderValue::from_static("250"));
        let ctx = CallContext::from_http(&headers).unwrap();
        assert!(ctx.remaining().unwrap() <= Duration::from_millis(250));
        assert!(CallContext::from_http(&HeaderMap::new())
            .unwrap()
            .deadline
            .is_none());
    }

    #[test]
    fn reply_notes_are_shared_by_clones() {
        let ctx = CallContext::new();
        ctx.clone().note_reply(MODEL_VERSION_HEADER, "2");
        let mut headers = HeaderMap::new();
        ctx.write_reply(&mut headers);
        assert_eq!(headers[MODEL_VERSION_HEADER], "2");
        let other = CallContext::new();
        other.read_reply(&headers);
        assert_eq!(other.reply_note(MODEL_VERSION_HEADER).as_deref(), Some("2"));
    }
}
