//! API keys: created once (the secret is shown to its creator and never
//! stored), kept as `sha256(salt || secret)` with a per-key salt, verified in
//! constant time, cached briefly so a request does not cost a query.
//!
//! Revocation: the store that revokes a key forgets its cache at once; any
//! other store (another gateway process) keeps trusting its cached entry for
//! at most its cache TTL (`gateway.key_cache_ttl`, 1 s by default).
//!
//! A key reads `mlsk_<id>_<secret>`: `id` (12 hex digits) finds the row,
//! `secret` (64 hex digits) proves possession.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mlserve_common::Database;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use subtle::ConstantTimeEq;

use crate::error::GatewayError;

/// How long a looked-up key (or its absence) is trusted before the database
/// is asked again, unless [`KeyStore::with_cache_ttl`] says otherwise.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(1);
/// Most entries kept in the cache; it is cleared when full.
const CACHE_MAX: usize = 10_000;
const PREFIX: &str = "mlsk_";

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKey {
    /// Public id (the second part of the key).
    pub id: String,
    /// Who or what the key is for.
    pub name: String,
    /// Requests per second (token refill rate); 0 is unlimited.
    pub rate: f64,
    /// Bucket size.
    pub burst: f64,
    /// Creation time, microseconds since the epoch.
    pub created_at: i64,
    /// Revocation time, when revoked.
    pub revoked_at: Option<i64>,
    /// What the key may do (see [`crate::scopes`]).
    pub scopes: Vec<String>,
    /// The scheduling priority its requests get (Triton's: 1 is the highest
    /// level); 0 leaves each request's own.
    pub priority: u32,
    #[serde(skip)]
    salt: String,
    #[serde(skip)]
    hash: String,
}

/// The API keys in the SQL database.
pub struct KeyStore {
    db: Database,
    cache: Mutex<HashMap<String, (Option<ApiKey>, Instant)>>,
    cache_ttl: Duration,
}

/// Microseconds since the Unix epoch (stored timestamps).
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn random_hex(bytes: usize) -> Result<String, GatewayError> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf)
        .map_err(|e| GatewayError::Internal(format!("no randomness available: {e}")))?;
    Ok(hex::encode(buf))
}

fn digest(salt: &str, secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update(secret.as_bytes());
    hex::encode(hasher.finalize())
}

/// Splits `mlsk_<id>_<secret>`.
fn parse_key(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    (id.len() == 12 && secret.len() == 64 && hex(id) && hex(secret)).then_some((id, secret))
}

/// Whether `token` has the shape of an API key (rather than a JWT).
pub fn looks_like_key(token: &str) -> bool {
    token.starts_with(PREFIX)
}

impl KeyStore {
    /// The keys in `db`.
    pub fn new(db: Database) -> KeyStore {
        KeyStore {
            db,
            cache: Mutex::new(HashMap::new()),
            cache_ttl: DEFAULT_CACHE_TTL,
        }
    }

    /// The same store trusting a looked-up key for `ttl` (zero: never cached).
    /// A revocation made elsewhere takes effect here within `ttl`.
    pub fn with_cache_ttl(mut self, ttl: Duration) -> KeyStore {
        self.cache_ttl = ttl;
        self
    }

    /// Creates a key with the default scopes ([`crate::scopes::DEFAULT`]);
    /// returns it and its full secret form, shown once.
    pub async fn create(
        &self,
        name: &str,
        rate: f64,
        burst: f64,
    ) -> Result<(ApiKey, String), GatewayError> {
        self.create_scoped(name, rate, burst, &crate::scopes::DEFAULT, 0)
            .await
    }

    /// Creates a key holding `scopes` (checked by [`crate::scopes::parse`];
    /// none given: the defaults) whose requests run at `priority` (0: their
    /// own).
    pub async fn create_scoped(
        &self,
        name: &str,
        rate: f64,
        burst: f64,
        scopes: &[&str],
        priority: u32,
    ) -> Result<(ApiKey, String), GatewayError> {
        let mut scopes = crate::scopes::parse(scopes.iter().copied())?;
        if scopes.is_empty() {
            scopes = crate::scopes::parse(crate::scopes::DEFAULT)?;
        }
        if name.trim().is_empty() {
            return Err(GatewayError::BadRequest("a key needs a name".into()));
        }
        if !(rate.is_finite() && rate >= 0.0 && burst.is_finite() && burst >= 0.0) {
            return Err(GatewayError::BadRequest(
                "rate and burst must be non-negative numbers".into(),
            ));
        }
        let id = random_hex(6)?;
        let secret = random_hex(32)?;
        let salt = random_hex(16)?;
        let hash = digest(&salt, &secret);
        let created_at = now_micros();
        sqlx::query(
            "INSERT INTO gateway_api_keys (id, name, salt, hash, rate, burst, created_at, revoked_at, scopes, priority) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9)",
        )
        .bind(&id)
        .bind(name)
        .bind(&salt)
        .bind(&hash)
        .bind(rate)
        .bind(burst)
        .bind(created_at)
        .bind(scopes.join(" "))
        .bind(i64::from(priority))
        .execute(&self.db.pool)
        .await?;
        tracing::info!(key_id = %id, name, rate, burst, scopes = %scopes.join(" "), priority, "api key created");
        let key = ApiKey {
            id: id.clone(),
            name: name.into(),
            rate,
            burst,
            created_at,
            revoked_at: None,
            scopes,
            priority,
            salt,
            hash,
        };
        Ok((key, format!("{PREFIX}{id}_{secret}")))
    }

    /// Every key, newest first.
    pub async fn list(&self) -> Result<Vec<ApiKey>, GatewayError> {
        let rows = sqlx::query(
            "SELECT id, name, salt, hash, rate, burst, created_at, revoked_at, scopes, priority FROM gateway_api_keys ORDER BY created_at DESC",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(row_to_key).collect()
    }

    /// Revokes the key with this id, or every live key with this name; returns how many.
    pub async fn revoke(&self, id_or_name: &str) -> Result<u64, GatewayError> {
        let done = sqlx::query(
            "UPDATE gateway_api_keys SET revoked_at = $1 WHERE (id = $2 OR name = $2) AND revoked_at IS NULL",
        )
        .bind(now_micros())
        .bind(id_or_name)
        .execute(&self.db.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(GatewayError::NotFound(format!(
                "no live api key with id or name '{id_or_name}'"
            )));
        }
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
        tracing::info!(key = %id_or_name, revoked = done.rows_affected(), "api key revoked");
        Ok(done.rows_affected())
    }

    /// The live key `presented` stands for, or 401.
    pub async fn verify(&self, presented: &str) -> Result<ApiKey, GatewayError> {
        let invalid = || GatewayError::Unauthenticated("invalid api key".into());
        let (id, secret) = parse_key(presented).ok_or_else(invalid)?;
        let key = self.lookup(id).await?.ok_or_else(invalid)?;
        let expected = digest(&key.salt, secret);
        if !bool::from(expected.as_bytes().ct_eq(key.hash.as_bytes())) {
            return Err(invalid());
        }
        if key.revoked_at.is_some() {
            return Err(GatewayError::Unauthenticated("api key revoked".into()));
        }
        Ok(key)
    }

    async fn lookup(&self, id: &str) -> Result<Option<ApiKey>, GatewayError> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((key, at)) = cache.get(id) {
                if at.elapsed() < self.cache_ttl {
                    return Ok(key.clone());
                }
            }
        }
        let row = sqlx::query(
            "SELECT id, name, salt, hash, rate, burst, created_at, revoked_at, scopes, priority FROM gateway_api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?;
        let key = row.as_ref().map(row_to_key).transpose()?;
        if self.cache_ttl.is_zero() {
            return Ok(key);
        }
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(id.to_string(), (key.clone(), Instant::now()));
        }
        Ok(key)
    }
}

fn row_to_key(row: &sqlx::any::AnyRow) -> Result<ApiKey, GatewayError> {
    let get = |e: sqlx::Error| GatewayError::Internal(format!("api key row: {e}"));
    Ok(ApiKey {
        id: row.try_get("id").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        salt: row.try_get("salt").map_err(get)?,
        hash: row.try_get("hash").map_err(get)?,
        rate: row.try_get("rate").map_err(get)?,
        burst: row.try_get("burst").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        revoked_at: row.try_get("revoked_at").map_err(get)?,
        scopes: row
            .try_get::<String, _>("scopes")
            .map_err(get)?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        priority: row
            .try_get::<i64, _>("priority")
            .map_err(get)?
            .try_into()
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlserve_common::db::testing;

    async fn exercise(store: KeyStore) {
        let (key, secret) = store.create("alice", 5.0, 10.0).await.unwrap();
        assert!(looks_like_key(&secret));
        let found = store.verify(&secret).await.unwrap();
        assert_eq!(
            (found.name.as_str(), found.rate, found.burst),
            ("alice", 5.0, 10.0)
        );
        assert_eq!(found.id, key.id);
        assert_eq!(found.scopes, ["infer", "predict"], "the default scopes");
        assert_eq!(found.priority, 0, "no priority of its own by default");
        let (_, scoped) = store
            .create_scoped("ops", 0.0, 1.0, &["rollouts:admin, infer:m"], 2)
            .await
            .unwrap();
        let ops = store.verify(&scoped).await.unwrap();
        assert_eq!(ops.scopes, ["rollouts:admin", "infer:m"]);
        assert_eq!(ops.priority, 2, "the priority is stored and read back");
        assert_eq!(
            store
                .create_scoped("bad", 0.0, 1.0, &["root"], 0)
                .await
                .unwrap_err()
                .code(),
            mlserve_proto::ErrorCode::BadRequest
        );
        store.revoke("ops").await.unwrap();
        // A wrong secret with the right id, a malformed key, an unknown id.
        let mut wrong = secret.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        for bad in [
            wrong.as_str(),
            "mlsk_x_y",
            "nope",
            &format!("mlsk_000000000000_{}", "a".repeat(64)),
        ] {
            let err = store.verify(bad).await.unwrap_err();
            assert_eq!(
                err.code(),
                mlserve_proto::ErrorCode::Unauthenticated,
                "{bad}"
            );
        }
        let listed = store.list().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(
            !serde_json::to_string(&listed)
                .unwrap()
                .contains(&found.hash),
            "the hash is never listed"
        );
        assert_eq!(store.revoke("alice").await.unwrap(), 1);
        assert!(
            store.verify(&secret).await.is_err(),
            "revoked keys fail at once on this gateway"
        );
        assert_eq!(
            store.revoke("alice").await.unwrap_err().code(),
            mlserve_proto::ErrorCode::NotFound
        );
    }

    #[tokio::test]
    async fn keys_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        exercise(KeyStore::new(testing::sqlite(dir.path()).await)).await;
    }

    #[tokio::test]
    async fn keys_on_postgres() {
        exercise(KeyStore::new(testing::postgres().await)).await;
    }

    /// Two stores on one database stand for two processes: the CLI that
    /// revokes and a gateway that has the key cached.
    async fn revoked_elsewhere(db: Database) {
        let ttl = Duration::from_millis(200);
        let gateway = KeyStore::new(db.clone()).with_cache_ttl(ttl);
        let cli = KeyStore::new(db.clone());
        let (_, secret) = cli.create("bob", 0.0, 1.0).await.unwrap();
        gateway.verify(&secret).await.unwrap();
        cli.revoke("bob").await.unwrap();
        // Once the TTL has passed the cached entry is not trusted any more.
        tokio::time::sleep(ttl).await;
        let err = gateway.verify(&secret).await.unwrap_err();
        assert_eq!(err.to_string(), "api key revoked");
        // With no cache a revocation elsewhere counts on the next request.
        let uncached = KeyStore::new(db).with_cache_ttl(Duration::ZERO);
        let (_, other) = cli.create("carol", 0.0, 1.0).await.unwrap();
        uncached.verify(&other).await.unwrap();
        cli.revoke("carol").await.unwrap();
        assert!(uncached.verify(&other).await.is_err());
    }

    #[tokio::test]
    async fn a_revocation_elsewhere_counts_within_the_ttl_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        revoked_elsewhere(testing::sqlite(dir.path()).await).await;
    }

    #[tokio::test]
    async fn a_revocation_elsewhere_counts_within_the_ttl_on_postgres() {
        revoked_elsewhere(testing::postgres().await).await;
    }

    #[test]
    fn key_shapes() {
        let id = "0123456789ab";
        let secret = "f".repeat(64);
        assert_eq!(
            parse_key(&format!("mlsk_{id}_{secret}")),
            Some((id, secret.as_str()))
        );
        assert_eq!(parse_key(&format!("mlsk_{id}_{}", "g".repeat(64))), None);
        assert_eq!(parse_key("eyJhbGciOi.x.y"), None);
    }
}
