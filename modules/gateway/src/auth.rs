//! Who is calling: an API key or a JWT from `Authorization: Bearer <token>`
//! or `apikey: <key>`, or an anonymous caller known by IP. Each identity
//! comes with its rate limit.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use mlserve_common::config::{AuthMode, RateLimitConfig};
use mlserve_proto::Caller;

use crate::error::GatewayError;
use crate::jwt::JwtVerifier;
use crate::keys::{looks_like_key, KeyStore};
use crate::ratelimit::Limit;

/// The `WWW-Authenticate` challenge sent with 401.
pub const CHALLENGE: &str = r#"Bearer realm="mlserve""#;

/// A caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The rate-limit bucket key (`key:<id>`, `jwt:<sub>`, `ip:<addr>`).
    pub bucket: String,
    /// Its limit.
    pub limit: Limit,
    /// The authenticated caller (none when anonymous), handed to every
    /// service the request reaches through its call context.
    pub caller: Option<Arc<Caller>>,
}

/// Checks credentials.
pub struct Authenticator {
    mode: AuthMode,
    keys: Option<Arc<KeyStore>>,
    jwt: JwtVerifier,
    limits: RateLimitConfig,
}

/// The credential of a request: `Authorization: Bearer X` or `apikey: X`.
pub fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        if value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ") {
            return Some(value[7..].trim());
        }
        return Some(value);
    }
    headers
        .get("apikey")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl Authenticator {
    /// An authenticator; `keys` is required when `mode` is on.
    pub fn new(
        mode: AuthMode,
        keys: Option<Arc<KeyStore>>,
        jwt: JwtVerifier,
        limits: RateLimitConfig,
    ) -> Authenticator {
        Authenticator {
            mode,
            keys,
            jwt,
            limits,
        }
    }

    /// Whether credentials are required.
    pub fn required(&self) -> bool {
        self.mode == AuthMode::On
    }

    /// The identity of a request from `peer` with `headers`, or 401.
    pub async fn identify(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Identity, GatewayError> {
        let anonymous = || Identity {
            bucket: format!(
                "ip:{}",
                peer.map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
            ),
            limit: Limit::new(self.limits.anonymous_rate, self.limits.anonymous_burst),
            caller: None,
        };
        if self.mode == AuthMode::Off {
            return Ok(anonymous());
        }
        let token = credential(headers)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                GatewayError::Unauthenticated(
                    "missing credentials: send Authorization: Bearer <api key or JWT>".into(),
                )
            })?;
        if looks_like_key(token) {
            let store = self
                .keys
                .as_ref()
                .ok_or_else(|| GatewayError::Unauthenticated("api keys are not enabled".into()))?;
            let key = store.verify(token).await?;
            return Ok(Identity {
                bucket: format!("key:{}", key.id),
                limit: Limit::new(key.rate, key.burst),
                caller: Some(Arc::new(Caller {
                    identity: format!("key:{}", key.name),
                    scopes: key.scopes,
                    priority: key.priority,
                })),
            });
        }
        if !self.jwt.enabled() {
            return Err(GatewayError::Unauthenticated("invalid api key".into()));
        }
        let claims = self.jwt.authenticate(token).await?;
        Ok(Identity {
            bucket: format!("jwt:{}", claims.subject),
            limit: Limit::new(self.limits.jwt_rate, self.limits.jwt_burst),
            caller: Some(Arc::new(Caller {
                identity: format!("jwt:{}", claims.subject),
                scopes: claims.scopes,
                priority: 0,
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn credentials_come_from_bearer_or_apikey() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h), None);
        h.insert("apikey", HeaderValue::from_static("k1"));
        assert_eq!(credential(&h), Some("k1"));
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  tok "),
        );
        assert_eq!(credential(&h), Some("tok"), "Authorization wins");
    }

    #[tokio::test]
    async fn off_is_anonymous_per_ip_and_on_requires_credentials() {
        let limits = RateLimitConfig {
            anonymous_rate: 5.0,
            anonymous_burst: 10.0,
            ..RateLimitConfig::default()
        };
        let jwt = JwtVerifier::from_config(&Default::default()).unwrap();
        let off = Authenticator::new(AuthMode::Off, None, jwt, limits.clone());
        let id = off
            .identify(&HeaderMap::new(), Some([10, 0, 0, 1].into()))
            .await
            .unwrap();
        assert_eq!(id.bucket, "ip:10.0.0.1");
        assert_eq!(id.limit, Limit::new(5.0, 10.0));

        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(KeyStore::new(
            mlserve_common::db::testing::sqlite(dir.path()).await,
        ));
        let (key, secret) = store.create("svc", 3.0, 6.0).await.unwrap();
        let jwt = JwtVerifier::from_config(&Default::default()).unwrap();
        let on = Authenticator::new(AuthMode::On, Some(store), jwt, limits);
        let err = on.identify(&HeaderMap::new(), None).await.unwrap_err();
        assert_eq!(err.code(), mlserve_proto::ErrorCode::Unauthenticated);
        let mut h = HeaderMap::new();
        h.insert("apikey", secret.parse().unwrap());
        let id = on.identify(&h, None).await.unwrap();
        assert_eq!(id.bucket, format!("key:{}", key.id));
        assert_eq!(id.limit, Limit::new(3.0, 6.0));
        h.insert("apikey", "eyJ.not.ajwt".parse().unwrap());
        assert!(
            on.identify(&h, None).await.is_err(),
            "no jwt keys configured"
        );
    }
}
