use std::time::{SystemTime, UNIX_EPOCH};

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Signer as _;
use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
use rsa::signature::SignatureEncoding as _;
use sha2::Sha256;

/// Seconds since the epoch: jsonwebtoken reads the system clock, so the
/// tokens are dated relative to it.
pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(super) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn token(alg: &str, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let signed = format!(
        "{}.{}",
        b64(format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"}}").as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = sign(signed.as_bytes());
    format!("{signed}.{}", b64(&sig))
}

pub(super) fn hs256(secret: &[u8]) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
    move |msg| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(msg);
        mac.finalize().into_bytes().to_vec()
    }
}

fn verifier(config: JwtConfig) -> JwtVerifier {
    JwtVerifier::from_config(&config).unwrap()
}

/// An HS256 secret of an accepted length.
const SECRET: &str = "s3cret-of-thirty-two-bytes-or-more";

fn hs_config() -> JwtConfig {
    JwtConfig {
        hs256_secret: Some(SECRET.into()),
        ..JwtConfig::default()
    }
}

#[test]
fn hs256_valid_expired_early_and_forged() {
    let now = now();
    let v = verifier(hs_config());
    let good = serde_json::json!({"sub": "svc-a", "exp": now + 60});
    assert_eq!(
        v.verify(&token("HS256", &good, hs256(SECRET.as_bytes())))
            .unwrap()
            .subject,
        "svc-a"
    );
    let expired = serde_json::json!({"sub": "a", "exp": now - 1});
    assert!(v
        .verify(&token("HS256", &expired, hs256(SECRET.as_bytes())))
        .is_err());
    let early = serde_json::json!({"sub": "a", "exp": now + 60, "nbf": now + 30});
    assert!(v
        .verify(&token("HS256", &early, hs256(SECRET.as_bytes())))
        .is_err());
    assert!(v.verify(&token("HS256", &good, hs256(b"other"))).is_err());
    let no_exp = serde_json::json!({"sub": "a"});
    assert!(v
        .verify(&token("HS256", &no_exp, hs256(SECRET.as_bytes())))
        .is_err());
    for junk in ["", "a.b", "a.b.c.d", "!!.??.**"] {
        assert!(v.verify(junk).is_err(), "{junk}");
    }
    // alg "none" and algorithms without a key are refused.
    let none = format!(
        "{}.{}.",
        b64(b"{\"alg\":\"none\"}"),
        b64(good.to_string().as_bytes())
    );
    assert!(v.verify(&none).is_err());
    assert!(v
        .verify(&token("RS256", &good, hs256(SECRET.as_bytes())))
        .is_err());
}

#[test]
fn leeway_issuer_and_audience() {
    let now = now();
    let v = verifier(JwtConfig {
        leeway: std::time::Duration::from_secs(10),
        issuer: Some("idp".into()),
        audience: Some("mlserve".into()),
        ..hs_config()
    });
    let ok = serde_json::json!({"exp": now - 5, "iss": "idp", "aud": ["x", "mlserve"]});
    assert!(v
        .verify(&token("HS256", &ok, hs256(SECRET.as_bytes())))
        .is_ok());
    let wrong_iss = serde_json::json!({"exp": now + 5, "iss": "other", "aud": "mlserve"});
    assert!(v
        .verify(&token("HS256", &wrong_iss, hs256(SECRET.as_bytes())))
        .is_err());
    let wrong_aud = serde_json::json!({"exp": now + 5, "iss": "idp", "aud": "else"});
    assert!(v
        .verify(&token("HS256", &wrong_aud, hs256(SECRET.as_bytes())))
        .is_err());
}

#[test]
fn rs256_and_es256() {
    let now = now();
    let dir = tempfile::tempdir().unwrap();
    let rsa_key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let rsa_pem = dir.path().join("rs.pem");
    std::fs::write(
        &rsa_pem,
        rsa_key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    let ec_key = p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).unwrap();
    let ec_pem = dir.path().join("es.pem");
    let ec_public = p256::PublicKey::from(*ec_key.verifying_key());
    std::fs::write(
        &ec_pem,
        ec_public.to_public_key_pem(LineEnding::LF).unwrap(),
    )
    .unwrap();
    let v = verifier(JwtConfig {
        rs256_public_key: Some(rsa_pem),
        es256_public_key: Some(ec_pem),
        ..JwtConfig::default()
    });

    let claims = serde_json::json!({"sub": "k8s-job", "exp": now + 60});
    let rs_signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(rsa_key);
    let rs = token("RS256", &claims, |m| rs_signer.sign(m).to_vec());
    assert_eq!(v.verify(&rs).unwrap().subject, "k8s-job");
    let es = token("ES256", &claims, |m| {
        let sig: p256::ecdsa::Signature = ec_key.sign(m);
        sig.to_bytes().to_vec()
    });
    assert_eq!(v.verify(&es).unwrap().subject, "k8s-job");
    // A token signed for one algorithm fails under the other's header.
    // An ES256 signature under an RS256 header (same claims) fails.
    let swapped = format!(
        "{}.{}",
        rs.rsplit_once('.').unwrap().0,
        es.rsplit_once('.').unwrap().1
    );
    assert!(v.verify(&swapped).is_err());
    let expired = serde_json::json!({"sub": "k8s-job", "exp": now - 61});
    let es_expired = token("ES256", &expired, |m| {
        let sig: p256::ecdsa::Signature = ec_key.sign(m);
        sig.to_bytes().to_vec()
    });
    assert!(v.verify(&es_expired).is_err(), "expired");
    assert!(!verifier(JwtConfig::default()).enabled());
}

#[test]
fn configured_iss_and_aud_are_required_unconfigured_aud_is_ignored() {
    let now = now();
    let strict = verifier(JwtConfig {
        issuer: Some("idp".into()),
        audience: Some("mlserve".into()),
        ..hs_config()
    });
    let no_iss = serde_json::json!({"exp": now + 60, "aud": "mlserve"});
    let no_aud = serde_json::json!({"exp": now + 60, "iss": "idp"});
    for claims in [&no_iss, &no_aud] {
        assert!(strict
            .verify(&token("HS256", claims, hs256(SECRET.as_bytes())))
            .is_err());
    }
    let lax = verifier(hs_config());
    // A NumericDate may have a fraction (RFC 7519 §2).
    let any_aud = serde_json::json!({"exp": now as f64 + 60.5, "aud": "anyone", "sub": "s"});
    assert_eq!(
        lax.verify(&token("HS256", &any_aud, hs256(SECRET.as_bytes())))
            .unwrap()
            .subject,
        "s"
    );
}

#[test]
fn bad_key_files_fail_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let rsa_key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
    let rsa_public = dir.path().join("rs.pem");
    std::fs::write(
        &rsa_public,
        rsa_key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    let rsa_private = dir.path().join("private.pem");
    std::fs::write(
        &rsa_private,
        rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&rsa_key, LineEnding::LF)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").unwrap();
    for config in [
        JwtConfig {
            rs256_public_key: Some(rsa_private),
            ..JwtConfig::default()
        },
        JwtConfig {
            rs256_public_key: Some(junk.clone()),
            ..JwtConfig::default()
        },
        JwtConfig {
            es256_public_key: Some(junk),
            ..JwtConfig::default()
        },
        JwtConfig {
            es256_public_key: Some(rsa_public),
            ..JwtConfig::default()
        },
        JwtConfig {
            es256_public_key: Some(dir.path().join("missing.pem")),
            ..JwtConfig::default()
        },
    ] {
        assert!(JwtVerifier::from_config(&config).is_err(), "{config:?}");
    }
}

#[test]
fn empty_or_short_hs256_secrets_fail_the_start() {
    for secret in ["", "x", &"k".repeat(MIN_HS256_SECRET_BYTES - 1)] {
        let config = JwtConfig {
            hs256_secret: Some(secret.into()),
            ..JwtConfig::default()
        };
        let Err(err) = JwtVerifier::from_config(&config) else {
            panic!("a {}-byte secret was accepted", secret.len());
        };
        assert!(err.contains("gateway.jwt.hs256_secret"), "{err}");
        assert!(err.contains("32 bytes"), "{err}");
    }
    // The empty key no longer verifies anything: a token signed with it is
    // refused even where the secret is set to a real one.
    let v = verifier(hs_config());
    let claims = serde_json::json!({"sub": "x", "exp": now() + 60});
    assert!(v.verify(&token("HS256", &claims, hs256(b""))).is_err());
    let exact = JwtConfig {
        hs256_secret: Some("k".repeat(MIN_HS256_SECRET_BYTES)),
        ..JwtConfig::default()
    };
    assert!(JwtVerifier::from_config(&exact).is_ok());
}

#[test]
fn scopes_come_from_the_configured_claim_else_the_defaults() {
    let exp = now() + 60;
    let sign = |claims: Value, v: &JwtVerifier| {
        v.verify(&token("HS256", &claims, hs256(SECRET.as_bytes())))
    };
    let v = verifier(hs_config());
    let scopes = |r: Result<Claims, GatewayError>| r.unwrap().scopes;
    assert_eq!(
        scopes(sign(serde_json::json!({"sub": "a", "exp": exp}), &v)),
        ["infer", "predict"],
        "no claim: the defaults"
    );
    assert_eq!(
        scopes(sign(
            serde_json::json!({"sub": "a", "exp": exp, "scope": "openid rollouts:admin infer:m"}),
            &v
        )),
        ["rollouts:admin", "infer:m"],
        "names mlserve does not know are left out"
    );
    assert!(
        scopes(sign(
            serde_json::json!({"sub": "a", "exp": exp, "scope": ""}),
            &v
        ))
        .is_empty(),
        "an empty claim grants nothing"
    );
    let err = sign(serde_json::json!({"sub": "a", "exp": exp, "scope": 7}), &v).unwrap_err();
    assert_eq!(err.code(), mlserve_proto::ErrorCode::Unauthenticated);

    let v = verifier(JwtConfig {
        scopes_claim: Some("scp".into()),
        default_scopes: Some(vec!["predict".into()]),
        ..hs_config()
    });
    assert_eq!(
        scopes(sign(
            serde_json::json!({"sub": "a", "exp": exp, "scp": ["keys:admin", "infer"]}),
            &v
        )),
        ["keys:admin", "infer"]
    );
    assert_eq!(
        scopes(sign(
            serde_json::json!({"sub": "a", "exp": exp, "scope": "infer"}),
            &v
        )),
        ["predict"],
        "another claim than the configured one is not read"
    );
    let bad = JwtVerifier::from_config(&JwtConfig {
        default_scopes: Some(vec!["root".into()]),
        ..hs_config()
    });
    assert!(bad.err().unwrap().contains("gateway.jwt.default_scopes"));
}
