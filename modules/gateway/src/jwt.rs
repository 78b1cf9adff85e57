//! JSON Web Tokens (RFC 7519) signed with HS256, RS256 or ES256, verified
//! against configured keys; `exp` and `nbf` are checked (with leeway), `iss`
//! and `aud` when configured.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use mlserve_common::config::JwtConfig;
use p256::ecdsa::signature::Verifier as _;
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs8::DecodePublicKey as _;
use serde_json::Value;
use sha2::Sha256;

use crate::error::GatewayError;

/// The keys tokens are checked against.
pub struct JwtVerifier {
    hs256: Option<Vec<u8>>,
    rs256: Option<rsa::pkcs1v15::VerifyingKey<Sha256>>,
    es256: Option<p256::ecdsa::VerifyingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

/// The verified claims that matter to the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// `sub`, the rate-limit identity ("" when absent).
    pub subject: String,
}

fn unauthenticated(message: impl Into<String>) -> GatewayError {
    GatewayError::Unauthenticated(message.into())
}

impl JwtVerifier {
    /// Loads the configured keys (PEM files are read now; a bad one is a start-up error).
    pub fn from_config(config: &JwtConfig) -> Result<JwtVerifier, String> {
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read jwt key '{}': {e}", path.display()))
        };
        let rs256 = match &config.rs256_public_key {
            Some(path) => {
                let pem = read(path)?;
                let key = rsa::RsaPublicKey::from_public_key_pem(&pem)
                    .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(&pem))
                    .map_err(|e| format!("jwt rs256 key '{}': {e}", path.display()))?;
                Some(rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key))
            }
            None => None,
        };
        let es256 = match &config.es256_public_key {
            Some(path) => Some(
                p256::ecdsa::VerifyingKey::from_public_key_pem(&read(path)?)
                    .map_err(|e| format!("jwt es256 key '{}': {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(JwtVerifier {
            hs256: config.hs256_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            rs256,
            es256,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway.as_secs(),
        })
    }

    /// Whether any key is configured.
    pub fn enabled(&self) -> bool {
        self.hs256.is_some() || self.rs256.is_some() || self.es256.is_some()
    }

    /// Verifies `token` now.
    pub fn verify(&self, token: &str) -> Result<Claims, GatewayError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.verify_at(token, now)
    }

    /// Verifies `token` at `now` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, GatewayError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(unauthenticated("malformed token: a JWT has three parts"));
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| unauthenticated(format!("malformed token: bad base64 in its {what}")))
        };
        let header_json: Value = serde_json::from_slice(&decode(header, "header")?)
            .map_err(|_| unauthenticated("malformed token: the header is not JSON"))?;
        let signature = decode(signature, "signature")?;
        let signed = &token.as_bytes()[..header.len() + 1 + payload.len()];
        let alg = header_json.get("alg").and_then(Value::as_str).unwrap_or("");
        let valid = match alg {
            "HS256" => {
                let secret = self
                    .hs256
                    .as_ref()
                    .ok_or_else(|| unauthenticated("HS256 tokens are not accepted"))?;
                let mut mac = Hmac::<Sha256>::new_from_slice(secret)
                    .map_err(|_| unauthenticated("bad hs256 key"))?;
                mac.update(signed);
                mac.verify_slice(&signature).is_ok()
            }
            "RS256" => {
                let key = self
                    .rs256
                    .as_ref()
                    .ok_or_else(|| unauthenticated("RS256 tokens are not accepted"))?;
                rsa::pkcs1v15::Signature::try_from(signature.as_slice())
                    .is_ok_and(|sig| key.verify(signed, &sig).is_ok())
            }
            "ES256" => {
                let key = self
                    .es256
                    .as_ref()
                    .ok_or_else(|| unauthenticated("ES256 tokens are not accepted"))?;
                p256::ecdsa::Signature::from_slice(&signature)
                    .is_ok_and(|sig| key.verify(signed, &sig).is_ok())
            }
            other => {
                return Err(unauthenticated(format!(
                    "unsupported token algorithm '{other}'"
                )))
            }
        };
        if !valid {
            return Err(unauthenticated("invalid token signature"));
        }
        let claims: Value = serde_json::from_slice(&decode(payload, "payload")?)
            .map_err(|_| unauthenticated("malformed token: the payload is not JSON"))?;
        self.check_claims(&claims, now)
    }

    fn check_claims(&self, claims: &Value, now: u64) -> Result<Claims, GatewayError> {
        let number = |name: &str| -> Result<Option<u64>, GatewayError> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|f| *f >= 0.0)
                    .map(|f| Some(f as u64))
                    .ok_or_else(|| {
                        unauthenticated(format!("token claim '{name}' must be a number"))
                    }),
            }
        };
        let exp = number("exp")?.ok_or_else(|| unauthenticated("token has no 'exp' claim"))?;
        if now > exp.saturating_add(self.leeway) {
            return Err(unauthenticated("token expired"));
        }
        if let Some(nbf) = number("nbf")? {
            if now.saturating_add(self.leeway) < nbf {
                return Err(unauthenticated("token not valid yet"));
            }
        }
        if let Some(issuer) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
                return Err(unauthenticated("token issuer not accepted"));
            }
        }
        if let Some(audience) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => a == audience,
                Some(Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !ok {
                return Err(unauthenticated("token audience not accepted"));
            }
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Ok(Claims { subject })
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
