//! JWT parsing (`jwt.rs`): a bearer token verified against an HS256 key
//! with issuer and audience checks. First byte even: the rest is the token
//! as sent. Odd: the rest is a header and a claims JSON (split at the first
//! newline) that the target signs with the verifier's own secret, so the
//! claim checks past the signature (`exp`, `nbf`, `iss`, `aud`, scopes)
//! are reached. Checked: no panic; a refusal is a 401; an unsigned token
//! or one with a foreign signature is never accepted.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use mlserve_common::config::JwtConfig;
use mlserve_gateway::jwt::JwtVerifier;
use mlserve_gateway::GatewayError;

const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret-0123";

fn verifier() -> &'static JwtVerifier {
    static VERIFIER: OnceLock<JwtVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let config = JwtConfig {
            hs256_secret: Some(SECRET.into()),
            issuer: Some("https://issuer.example".into()),
            audience: Some("mlserve".into()),
            ..JwtConfig::default()
        };
        JwtVerifier::from_config(&config).expect("the fuzz verifier loads")
    })
}

fn sign(header: &[u8], claims: &[u8]) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key size");
    mac.update(signed.as_bytes());
    format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (token, signed_here) = if pick & 1 == 0 {
        let Ok(token) = std::str::from_utf8(rest) else {
            return;
        };
        (token.to_string(), false)
    } else {
        let newline = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let claims = rest.get(newline + 1..).unwrap_or_default();
        (sign(&rest[..newline], claims), true)
    };
    match verifier().verify(&token) {
        Ok(_) => {
            let (head, sig) = token.rsplit_once('.').expect("an accepted token has parts");
            assert!(
                signed_here || sign_check(head, sig),
                "accepted a token not signed with the key: {token}"
            );
        }
        Err(err) => assert!(matches!(err, GatewayError::Unauthenticated(_)), "{err:?}"),
    }
});

/// Whether `sig` is the HS256 signature of `head` under the secret.
fn sign_check(head: &str, sig: &str) -> bool {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key size");
    mac.update(head.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()) == sig
}
