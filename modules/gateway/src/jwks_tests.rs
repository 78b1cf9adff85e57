//! Tokens checked against a key set served over HTTP by a real server:
//! rotation, key ids, and algorithm confusion.

use std::sync::{Arc, Mutex};

use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
use rsa::signature::SignatureEncoding as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::json;
use sha2::Sha256;

use super::tests::{b64, hs256, now};
use super::*;

/// A key set served at a URL, whose document the test replaces.
struct KeySetServer {
    url: String,
    document: Arc<Mutex<Value>>,
    fetches: Arc<Mutex<usize>>,
}

async fn serve(document: Value) -> KeySetServer {
    let document = Arc::new(Mutex::new(document));
    let fetches = Arc::new(Mutex::new(0));
    let (served, counted) = (document.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let body = served.lock().unwrap().clone();
            *counted.lock().unwrap() += 1;
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    KeySetServer {
        url,
        document,
        fetches,
    }
}

fn rsa_key() -> rsa::RsaPrivateKey {
    rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap()
}

fn rsa_jwk(key: &rsa::RsaPrivateKey, kid: &str) -> Value {
    let public = key.to_public_key();
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
           "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be())})
}

fn token_with(header: Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = sign(signed.as_bytes());
    format!("{signed}.{}", b64(&sig))
}

fn rs256_token(key: &rsa::RsaPrivateKey, kid: &str, sub: &str) -> String {
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone());
    token_with(
        json!({"alg": "RS256", "typ": "JWT", "kid": kid}),
        &json!({"sub": sub, "exp": now() + 60}),
        |m| rsa::signature::Signer::sign(&signer, m).to_vec(),
    )
}

fn key_set_verifier(url: &str) -> JwtVerifier {
    JwtVerifier::from_config(&JwtConfig {
        jwks_url: Some(url.to_string()),
        ..JwtConfig::default()
    })
    .unwrap()
    .with_key_set_refetch(std::time::Duration::ZERO)
}

#[tokio::test]
async fn a_rotated_key_verifies_at_once_and_a_removed_one_stops() {
    let (first, second) = (rsa_key(), rsa_key());
    let server = serve(json!({"keys": [rsa_jwk(&first, "k1")]})).await;
    let v = key_set_verifier(&server.url);
    assert!(v.enabled());

    let claims = v
        .authenticate(&rs256_token(&first, "k1", "alice"))
        .await
        .unwrap();
    assert_eq!(claims.subject, "alice");
    // Cached: a second token does not fetch again.
    v.authenticate(&rs256_token(&first, "k1", "alice"))
        .await
        .unwrap();
    assert_eq!(*server.fetches.lock().unwrap(), 1);

    // The provider rotates: k2 is published, k1 withdrawn.
    *server.document.lock().unwrap() = json!({"keys": [rsa_jwk(&second, "k2")]});
    let claims = v
        .authenticate(&rs256_token(&second, "k2", "bob"))
        .await
        .unwrap();
    assert_eq!(claims.subject, "bob");
    let err = v
        .authenticate(&rs256_token(&first, "k1", "alice"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("'k1' is not in the key set"),
        "{err}"
    );

    // A token signed by another key under a published kid fails its signature.
    let forged = rs256_token(&first, "k2", "mallory");
    let err = v.authenticate(&forged).await.unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
}

#[tokio::test]
async fn unknown_key_ids_do_not_hammer_the_provider() {
    let key = rsa_key();
    let server = serve(json!({"keys": [rsa_jwk(&key, "k1")]})).await;
    // The default minimum time between fetches (10 s).
    let v = JwtVerifier::from_config(&JwtConfig {
        jwks_url: Some(server.url.clone()),
        ..JwtConfig::default()
    })
    .unwrap();
    v.authenticate(&rs256_token(&key, "k1", "a")).await.unwrap();
    for i in 0..20 {
        let made_up = rs256_token(&key, &format!("nope-{i}"), "a");
        assert!(v.authenticate(&made_up).await.is_err());
    }
    assert_eq!(*server.fetches.lock().unwrap(), 1);
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    let key = rsa_key();
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let oct_secret = b"an-hmac-secret-published-by-mistake-in-the-set";
    let server = serve(json!({"keys": [
        rsa_jwk(&key, "k1"),
        {"kty": "oct", "kid": "k3", "k": b64(oct_secret), "alg": "HS256"},
    ]}))
    .await;
    let v = key_set_verifier(&server.url);
    let claims = json!({"sub": "mallory", "exp": now() + 60});

    // HS256 "signed" with the RSA public key (as PEM, and as the JWK's n)
    // under the RSA key's id.
    for secret in [
        public_pem.as_bytes().to_vec(),
        key.to_public_key().n().to_bytes_be(),
    ] {
        let confused = token_with(
            json!({"alg": "HS256", "kid": "k1"}),
            &claims,
            hs256(&secret),
        );
        let err = v.authenticate(&confused).await.unwrap_err();
        assert!(err.to_string().contains("does not match its key"), "{err}");
    }
    // A symmetric key in the set is never used.
    let oct = token_with(
        json!({"alg": "HS256", "kid": "k3"}),
        &claims,
        hs256(oct_secret),
    );
    let err = v.authenticate(&oct).await.unwrap_err();
    assert!(
        err.to_string().contains("'k3' is not in the key set"),
        "{err}"
    );
    // "none", with and without a key id.
    for header in [json!({"alg": "none", "kid": "k1"}), json!({"alg": "none"})] {
        let unsigned = format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        assert!(v.authenticate(&unsigned).await.is_err());
    }

    // Static keys: an HS256 token signed with the configured RSA public key
    // is refused when no HS256 secret is configured.
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("rs.pem");
    std::fs::write(&pem, &public_pem).unwrap();
    let static_rsa = JwtVerifier::from_config(&JwtConfig {
        rs256_public_key: Some(pem),
        ..JwtConfig::default()
    })
    .unwrap();
    let confused = token_with(
        json!({"alg": "HS256"}),
        &claims,
        hs256(public_pem.as_bytes()),
    );
    let err = static_rsa.authenticate(&confused).await.unwrap_err();
    assert!(
        err.to_string().contains("HS256 tokens are not accepted"),
        "{err}"
    );
}

#[test]
fn the_clock_skew_tolerated_is_bounded() {
    let err = JwtVerifier::from_config(&JwtConfig {
        hs256_secret: Some("s3cret-of-thirty-two-bytes-or-more".into()),
        leeway: std::time::Duration::from_secs(3600),
        ..JwtConfig::default()
    })
    .err()
    .unwrap();
    assert!(err.contains("at most 300 s"), "{err}");
    let err = JwtVerifier::from_config(&JwtConfig {
        jwks_url: Some("file:///etc/keys".into()),
        ..JwtConfig::default()
    })
    .err()
    .unwrap();
    assert!(err.contains("http"), "{err}");
}
