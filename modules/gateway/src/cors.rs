//! CORS for browser clients (`[gateway.cors]`): the configured origins may
//! call the HTTP API with credentials in the `Authorization` or `apikey`
//! header and read the answer's mlserve headers. Preflight requests are
//! answered here, before authentication (browsers send them without
//! credentials); the actual request is authenticated as any other.

use axum::http::{header, HeaderName, HeaderValue, Method};
use mlserve_common::config::CorsConfig;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request headers a browser may send.
const ALLOWED_HEADERS: [&str; 7] = [
    "authorization",
    "apikey",
    "content-type",
    "x-request-id",
    "traceparent",
    "inference-header-content-length",
    "content-encoding",
];

/// Answer headers a browser script may read.
const EXPOSED_HEADERS: [&str; 8] = [
    "x-mlserve-model-version",
    "x-request-id",
    "inference-header-content-length",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "retry-after",
    "www-authenticate",
];

/// The layer for `config`, or none when no origin is allowed; an origin that
/// is not a valid header value fails the start.
pub fn layer(config: &CorsConfig) -> Result<Option<CorsLayer>, String> {
    if config.allowed_origins.is_empty() {
        return Ok(None);
    }
    let origins = if config.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let values = config
            .allowed_origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o.trim_end_matches('/'))
                    .map_err(|e| format!("gateway.cors.allowed_origins: '{o}': {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    let names = |list: &[&'static str]| -> Vec<HeaderName> {
        list.iter().map(|n| HeaderName::from_static(n)).collect()
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers(names(&ALLOWED_HEADERS))
            .expose_headers(names(&EXPOSED_HEADERS))
            .vary([header::ORIGIN])
            .max_age(config.max_age),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_origins_no_layer_and_bad_origins_fail() {
        assert!(layer(&CorsConfig::default()).unwrap().is_none());
        let bad = CorsConfig {
            allowed_origins: vec!["https://a.example\n".into()],
            ..CorsConfig::default()
        };
        assert!(layer(&bad)
            .unwrap_err()
            .contains("gateway.cors.allowed_origins"));
        let good = CorsConfig {
            allowed_origins: vec!["https://a.example/".into()],
            ..CorsConfig::default()
        };
        assert!(layer(&good).unwrap().is_some());
    }
}
