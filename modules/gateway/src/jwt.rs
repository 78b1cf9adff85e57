//! JSON Web Tokens (RFC 7519) signed with HS256, RS256 or ES256, verified
//! by `jsonwebtoken` against the configured keys (static ones, and the
//! identity provider's key set, see [`crate::jwks`]): `exp` is required,
//! `exp` and `nbf` are checked with the configured leeway (at most
//! [`MAX_LEEWAY`]), `iss` and `aud` are required and checked when
//! configured. Each key has one algorithm, and a token never picks its own
//! key family: `none` and algorithm confusion (an HMAC checked with an RSA
//! public key) are refused.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mlserve_common::config::JwtConfig;
use serde_json::Value;

use crate::error::GatewayError;
use crate::jwks::Jwks;

/// The keys tokens are checked against, each with the checks its algorithm
/// runs (one algorithm per key: a token never picks its own key family).
pub struct JwtVerifier {
    hs256: Option<(DecodingKey, Validation)>,
    rs256: Option<(DecodingKey, Validation)>,
    es256: Option<(DecodingKey, Validation)>,
    jwks: Option<KeySet>,
    scopes_claim: String,
    default_scopes: Vec<String>,
}

/// The key set of `gateway.jwt.jwks_url` and the checks of its two
/// algorithms.
struct KeySet {
    jwks: Arc<Jwks>,
    rs256: Validation,
    es256: Validation,
}

/// The verified claims that matter to the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// `sub`, the rate-limit identity ("" when absent).
    pub subject: String,
    /// The scopes from the configured claim, else the configured defaults.
    pub scopes: Vec<String>,
}

fn unauthenticated(message: impl Into<String>) -> GatewayError {
    GatewayError::Unauthenticated(message.into())
}

/// The checks for tokens signed with `alg`, from the configuration.
fn validation(alg: Algorithm, config: &JwtConfig) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = config.leeway.as_secs();
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = &config.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &config.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        // Unconfigured, an `aud` claim is not checked.
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// What a rejected token is told (every one is a 401).
fn rejection(kind: &ErrorKind) -> GatewayError {
    let message = match kind {
        ErrorKind::InvalidSignature => "invalid token signature".to_string(),
        ErrorKind::ExpiredSignature => "token expired".to_string(),
        ErrorKind::ImmatureSignature => "token not valid yet".to_string(),
        ErrorKind::InvalidIssuer => "token issuer not accepted".to_string(),
        ErrorKind::InvalidAudience => "token audience not accepted".to_string(),
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => {
            "token issuer not accepted".to_string()
        }
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
            "token audience not accepted".to_string()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("token has no '{claim}' claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("token claim '{claim}' must be a number"),
        ErrorKind::Base64(_) => "malformed token: bad base64".to_string(),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            "malformed token: its header or payload is not valid JSON".to_string()
        }
        ErrorKind::InvalidAlgorithm => "token algorithm does not match its key".to_string(),
        _ => "malformed token".to_string(),
    };
    unauthenticated(message)
}

/// The most clock skew `gateway.jwt.leeway` may tolerate.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Fewest bytes an HS256 secret may have: the hash's output size (RFC 7518,
/// section 3.2). A shorter secret can be guessed offline from one token; an
/// empty one lets anyone sign.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// The configured HS256 secret, refused when empty or short.
fn hs256_secret(config: &JwtConfig) -> Result<Option<&[u8]>, String> {
    let Some(secret) = config.hs256_secret.as_deref() else {
        return Ok(None);
    };
    if secret.len() < MIN_HS256_SECRET_BYTES {
        let what = if secret.is_empty() {
            "is empty".to_string()
        } else {
            format!("is {} bytes", secret.len())
        };
        return Err(format!(
            "gateway.jwt.hs256_secret {what}: an HS256 secret needs at least {MIN_HS256_SECRET_BYTES} bytes (unset it to refuse HS256 tokens)"
        ));
    }
    Ok(Some(secret.as_bytes()))
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read jwt key '{}': {e}", path.display()))
}

impl JwtVerifier {
    /// Loads the configured keys (PEM files are read now; a bad one, or an
    /// HS256 secret shorter than [`MIN_HS256_SECRET_BYTES`], is a start-up error).
    pub fn from_config(config: &JwtConfig) -> Result<JwtVerifier, String> {
        if config.leeway > MAX_LEEWAY {
            return Err(format!(
                "gateway.jwt.leeway is {} s: the clock skew tolerated is at most {} s",
                config.leeway.as_secs(),
                MAX_LEEWAY.as_secs()
            ));
        }
        let hs256 = hs256_secret(config)?;
        let jwks = match &config.jwks_url {
            Some(url) => Some(KeySet {
                jwks: Arc::new(Jwks::new(url, config.jwks_refresh)?),
                rs256: validation(Algorithm::RS256, config),
                es256: validation(Algorithm::ES256, config),
            }),
            None => None,
        };
        let rs256 = match &config.rs256_public_key {
            Some(path) => {
                let bad =
                    |e: &dyn std::fmt::Display| format!("jwt rs256 key '{}': {e}", path.display());
                // PKCS#1 ("RSA PUBLIC KEY") or SubjectPublicKeyInfo ("PUBLIC KEY").
                let key = DecodingKey::from_rsa_pem(&read(path)?).map_err(|e| bad(&e))?;
                // jsonwebtoken parses the key at each verification; parse it once
                // now so that a private or broken key fails the start.
                <rsa::RsaPublicKey as rsa::pkcs1::DecodeRsaPublicKey>::from_pkcs1_der(
                    key.as_bytes(),
                )
                .map_err(|e| bad(&e))?;
                Some((key, validation(Algorithm::RS256, config)))
            }
            None => None,
        };
        let es256 = match &config.es256_public_key {
            Some(path) => {
                let bad =
                    |e: &dyn std::fmt::Display| format!("jwt es256 key '{}': {e}", path.display());
                let key = DecodingKey::from_ec_pem(&read(path)?).map_err(|e| bad(&e))?;
                // jsonwebtoken accepts any curve here; ES256 needs a P-256 point.
                p256::PublicKey::from_sec1_bytes(key.as_bytes())
                    .map_err(|_| bad(&"not a P-256 public key"))?;
                Some((key, validation(Algorithm::ES256, config)))
            }
            None => None,
        };
        Ok(JwtVerifier {
            hs256: hs256.map(|secret| {
                (
                    DecodingKey::from_secret(secret),
                    validation(Algorithm::HS256, config),
                )
            }),
            rs256,
            es256,
            jwks,
            scopes_claim: config
                .scopes_claim
                .clone()
                .unwrap_or_else(|| "scope".to_string()),
            default_scopes: match &config.default_scopes {
                Some(scopes) => crate::scopes::parse(scopes.iter().map(String::as_str)),
                None => crate::scopes::parse(crate::scopes::DEFAULT),
            }
            .map_err(|e| format!("gateway.jwt.default_scopes: {e}"))?,
        })
    }

    /// The same verifier, its key set fetched again after `period` at the
    /// soonest (tests; the default is [`crate::jwks::MIN_REFETCH`]).
    pub fn with_key_set_refetch(mut self, period: Duration) -> JwtVerifier {
        if let Some(jwks) = self
            .jwks
            .as_mut()
            .and_then(|set| Arc::get_mut(&mut set.jwks))
        {
            jwks.set_min_refetch(period);
        }
        self
    }

    /// Whether any key is configured.
    pub fn enabled(&self) -> bool {
        self.hs256.is_some() || self.rs256.is_some() || self.es256.is_some() || self.jwks.is_some()
    }

    /// Verifies `token` now against the configured static keys (the
    /// system clock, as `jsonwebtoken` reads it).
    pub fn verify(&self, token: &str) -> Result<Claims, GatewayError> {
        let header = header_of(token)?;
        let (key, validation) = self
            .static_key(header.alg)?
            .ok_or_else(|| unauthenticated(format!("{:?} tokens are not accepted", header.alg)))?;
        self.claims(token, key, validation)
    }

    /// Verifies `token` now: a token naming a key id (`kid`), or one whose
    /// algorithm has no static key, against the key set of
    /// `gateway.jwt.jwks_url` when one is configured; any other against the
    /// static keys. The key decides the algorithm: a token whose `alg`
    /// differs from its key's is refused.
    pub async fn authenticate(&self, token: &str) -> Result<Claims, GatewayError> {
        let header = header_of(token)?;
        if let Some(set) = &self.jwks {
            let static_key = self.static_key(header.alg)?;
            if header.kid.is_some() || static_key.is_none() {
                let found = set.jwks.key(header.kid.as_deref()).await?;
                if found.algorithm != header.alg {
                    return Err(unauthenticated("token algorithm does not match its key"));
                }
                let validation = match found.algorithm {
                    Algorithm::ES256 => &set.es256,
                    _ => &set.rs256,
                };
                return self.claims(token, &found.key, validation);
            }
        }
        self.verify(token)
    }

    /// The static key and checks for tokens of `alg`, if one is configured;
    /// an algorithm mlserve never accepts is an error.
    fn static_key(
        &self,
        alg: Algorithm,
    ) -> Result<Option<&(DecodingKey, Validation)>, GatewayError> {
        match alg {
            Algorithm::HS256 => Ok(self.hs256.as_ref()),
            Algorithm::RS256 => Ok(self.rs256.as_ref()),
            Algorithm::ES256 => Ok(self.es256.as_ref()),
            other => Err(unauthenticated(format!(
                "unsupported token algorithm '{other:?}'"
            ))),
        }
    }

    fn claims(
        &self,
        token: &str,
        key: &DecodingKey,
        validation: &Validation,
    ) -> Result<Claims, GatewayError> {
        let claims = jsonwebtoken::decode::<Value>(token, key, validation)
            .map_err(|e| rejection(e.kind()))?
            .claims;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let scopes = match claims.get(&self.scopes_claim) {
            None => self.default_scopes.clone(),
            Some(value) => scopes_of(value)?,
        };
        Ok(Claims { subject, scopes })
    }
}

/// The header of a token shaped as a JWS: three parts and an `alg`
/// jsonwebtoken knows ("none" is not one of them).
fn header_of(token: &str) -> Result<jsonwebtoken::Header, GatewayError> {
    if token.split('.').count() != 3 {
        return Err(unauthenticated("malformed token: a JWT has three parts"));
    }
    jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        ErrorKind::Json(_) => {
            unauthenticated("malformed token header or unsupported token algorithm")
        }
        kind => rejection(kind),
    })
}

/// The scopes a claim holds: a space-separated string or a list of strings.
/// Names mlserve does not know are left out (identity providers put other
/// services' scopes in the same claim); any other shape is a 401.
fn scopes_of(value: &Value) -> Result<Vec<String>, GatewayError> {
    let names: Vec<&str> = match value {
        Value::String(s) => s.split_whitespace().collect(),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| unauthenticated("the scopes claim must hold strings"))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(unauthenticated(
                "the scopes claim must be a string or a list of strings",
            ))
        }
    };
    Ok(names
        .into_iter()
        .filter(|name| crate::scopes::is_known(name))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "jwks_tests.rs"]
mod jwks_tests;
