use super::*;
use p256::ecdsa::signature::Signer as _;
use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
use rsa::signature::SignatureEncoding as _;

const NOW: u64 = 1_800_000_000;

fn b64(bytes: &[u8]) -> String {
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

fn hs256(secret: &[u8]) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
    move |msg| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(msg);
        mac.finalize().into_bytes().to_vec()
    }
}

fn verifier(config: JwtConfig) -> JwtVerifier {
    JwtVerifier::from_config(&config).unwrap()
}

fn hs_config() -> JwtConfig {
    JwtConfig {
        hs256_secret: Some("s3cret".into()),
        ..JwtConfig::default()
    }
}

#[test]
fn hs256_valid_expired_early_and_forged() {
    let v = verifier(hs_config());
    let good = serde_json::json!({"sub": "svc-a", "exp": NOW + 60});
    assert_eq!(
        v.verify_at(&token("HS256", &good, hs256(b"s3cret")), NOW)
            .unwrap()
            .subject,
        "svc-a"
    );
    let expired = serde_json::json!({"sub": "a", "exp": NOW - 1});
    assert!(v
        .verify_at(&token("HS256", &expired, hs256(b"s3cret")), NOW)
        .is_err());
    let early = serde_json::json!({"sub": "a", "exp": NOW + 60, "nbf": NOW + 30});
    assert!(v
        .verify_at(&token("HS256", &early, hs256(b"s3cret")), NOW)
        .is_err());
    assert!(v
        .verify_at(&token("HS256", &good, hs256(b"other")), NOW)
        .is_err());
    let no_exp = serde_json::json!({"sub": "a"});
    assert!(v
        .verify_at(&token("HS256", &no_exp, hs256(b"s3cret")), NOW)
        .is_err());
    for junk in ["", "a.b", "a.b.c.d", "!!.??.**"] {
        assert!(v.verify_at(junk, NOW).is_err(), "{junk}");
    }
    // alg "none" and algorithms without a key are refused.
    let none = format!(
        "{}.{}.",
        b64(b"{\"alg\":\"none\"}"),
        b64(good.to_string().as_bytes())
    );
    assert!(v.verify_at(&none, NOW).is_err());
    assert!(v
        .verify_at(&token("RS256", &good, hs256(b"s3cret")), NOW)
        .is_err());
}

#[test]
fn leeway_issuer_and_audience() {
    let v = verifier(JwtConfig {
        leeway: std::time::Duration::from_secs(10),
        issuer: Some("idp".into()),
        audience: Some("mlserve".into()),
        ..hs_config()
    });
    let ok = serde_json::json!({"exp": NOW - 5, "iss": "idp", "aud": ["x", "mlserve"]});
    assert!(v
        .verify_at(&token("HS256", &ok, hs256(b"s3cret")), NOW)
        .is_ok());
    let wrong_iss = serde_json::json!({"exp": NOW + 5, "iss": "other", "aud": "mlserve"});
    assert!(v
        .verify_at(&token("HS256", &wrong_iss, hs256(b"s3cret")), NOW)
        .is_err());
    let wrong_aud = serde_json::json!({"exp": NOW + 5, "iss": "idp", "aud": "else"});
    assert!(v
        .verify_at(&token("HS256", &wrong_aud, hs256(b"s3cret")), NOW)
        .is_err());
}

#[test]
fn rs256_and_es256() {
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

    let claims = serde_json::json!({"sub": "k8s-job", "exp": NOW + 60});
    let rs_signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(rsa_key);
    let rs = token("RS256", &claims, |m| rs_signer.sign(m).to_vec());
    assert_eq!(v.verify_at(&rs, NOW).unwrap().subject, "k8s-job");
    let es = token("ES256", &claims, |m| {
        let sig: p256::ecdsa::Signature = ec_key.sign(m);
        sig.to_bytes().to_vec()
    });
    assert_eq!(v.verify_at(&es, NOW).unwrap().subject, "k8s-job");
    // A token signed for one algorithm fails under the other's header.
    // An ES256 signature under an RS256 header (same claims) fails.
    let swapped = format!(
        "{}.{}",
        rs.rsplit_once('.').unwrap().0,
        es.rsplit_once('.').unwrap().1
    );
    assert!(v.verify_at(&swapped, NOW).is_err());
    assert!(v.verify_at(&es, NOW + 61).is_err(), "expired");
    assert!(!verifier(JwtConfig::default()).enabled());
}
