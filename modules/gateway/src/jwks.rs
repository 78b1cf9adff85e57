//! Keys from the identity provider's JSON Web Key Set (`gateway.jwt.jwks_url`).
//!
//! - Fetched on first use, then again once older than `jwks_refresh`.
//! - Rotation: a token naming a key id the set lacks fetches the set again
//!   at once, at most every [`MIN_REFETCH`] (so made-up key ids cannot
//!   make the gateway hammer the provider). Keys gone from the new set stop
//!   verifying.
//! - A failed fetch keeps the keys the gateway has, and is retried on use
//!   after [`MIN_REFETCH`].
//! - Each key's algorithm comes from the key, never from the token: RSA
//!   keys verify RS256, P-256 keys ES256. Symmetric (`oct`) and other keys
//!   are left out, so no token is ever checked as an HMAC with a public key.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::error::GatewayError;

/// The shortest time between two fetches of the set.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// Longest a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set accepted.
const MAX_SET_BYTES: usize = 1024 * 1024;

/// A key of the set: what it verifies and with which algorithm.
#[derive(Clone)]
pub struct SetKey {
    /// The key.
    pub key: DecodingKey,
    /// RS256 or ES256, from the key's type.
    pub algorithm: Algorithm,
}

#[derive(Default)]
struct Fetched {
    keys: Arc<HashMap<String, SetKey>>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

/// A key set at a URL, cached.
pub struct Jwks {
    url: String,
    client: reqwest::Client,
    refresh: Duration,
    min_refetch: Duration,
    state: RwLock<Fetched>,
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    /// The set at `url` (http or https), used for `refresh` once fetched.
    pub fn new(url: &str, refresh: Duration) -> Result<Jwks, String> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "gateway.jwt.jwks_url '{url}' must be an http:// or https:// URL"
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| format!("gateway.jwt.jwks_url: {e}"))?;
        Ok(Jwks {
            url: url.to_string(),
            client,
            refresh: refresh.max(MIN_REFETCH),
            min_refetch: MIN_REFETCH,
            state: RwLock::new(Fetched::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// Fetches again after `period` at the soonest, instead of
    /// [`MIN_REFETCH`] (tests).
    pub fn set_min_refetch(&mut self, period: Duration) {
        self.min_refetch = period;
    }

    /// The key a token with key id `kid` names (no `kid`: the set's only
    /// key), fetching the set when it is stale or lacks the key.
    pub async fn key(&self, kid: Option<&str>) -> Result<SetKey, GatewayError> {
        if self.stale() {
            self.fetch().await;
        }
        if let Some(key) = self.lookup(kid) {
            return Ok(key);
        }
        self.fetch().await;
        self.lookup(kid).ok_or_else(|| {
            GatewayError::Unauthenticated(match kid {
                Some(kid) => format!("token key id '{kid}' is not in the key set"),
                None => "token names no key id ('kid') and the key set holds several keys, or none"
                    .to_string(),
            })
        })
    }

    fn stale(&self) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .fetched_at
            .is_none_or(|at| at.elapsed() >= self.refresh)
    }

    fn lookup(&self, kid: Option<&str>) -> Option<SetKey> {
        let keys = self
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .clone();
        match kid {
            Some(kid) => keys.get(kid).cloned(),
            None if keys.len() == 1 => keys.values().next().cloned(),
            None => None,
        }
    }

    /// Fetches the set unless another fetch ran within `min_refetch`; one
    /// fetch at a time, the others wait for its result.
    async fn fetch(&self) {
        let _one_at_a_time = self.fetching.lock().await;
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            if state
                .attempted_at
                .is_some_and(|at| at.elapsed() < self.min_refetch)
            {
                return;
            }
            state.attempted_at = Some(Instant::now());
        }
        match self.download().await {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.len(), "jwt key set fetched");
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                state.keys = Arc::new(keys);
                state.fetched_at = Some(Instant::now());
            }
            Err(err) => {
                tracing::warn!(url = %self.url, error = %err, "cannot fetch the jwt key set; keeping the keys held")
            }
        }
    }

    async fn download(&self) -> Result<HashMap<String, SetKey>, String> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_SET_BYTES as u64)
        {
            return Err(format!("the key set is over {MAX_SET_BYTES} bytes"));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_SET_BYTES {
            return Err(format!("the key set is over {MAX_SET_BYTES} bytes"));
        }
        parse_set(&body)
    }
}

/// The usable keys of a JWK Set document, by key id: RSA keys (RS256) and
/// P-256 keys (ES256) that do not name another algorithm. Anything else, a
/// key that does not parse included, is left out.
pub fn parse_set(body: &[u8]) -> Result<HashMap<String, SetKey>, String> {
    let document: Value =
        serde_json::from_slice(body).map_err(|e| format!("the key set is not JSON: {e}"))?;
    let entries = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the key set has no \"keys\" list")?;
    let mut keys = HashMap::new();
    for entry in entries {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            continue;
        };
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => continue,
        };
        let named = jwk.common.key_algorithm;
        let agrees = matches!(
            (named, algorithm),
            (None, _)
                | (Some(KeyAlgorithm::RS256), Algorithm::RS256)
                | (Some(KeyAlgorithm::ES256), Algorithm::ES256)
        );
        if !agrees {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        keys.insert(kid, SetKey { key, algorithm });
    }
    Ok(keys)
}
