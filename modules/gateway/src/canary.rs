//! Canary traffic splits: a model served as a stable and a canary version,
//! chosen per request by weight, deterministically when the request has an id.

use std::collections::{BTreeMap, HashMap};
use std::sync::{RwLock, RwLockWriteGuard};

use mlserve_common::config::CanaryConfig;
use mlserve_common::{Database, Dialect};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::error::GatewayError;
use crate::keys::now_micros;

/// One model's split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanarySplit {
    /// The version most requests go to.
    pub stable: String,
    /// The version under test ("" once promoted or rolled back).
    pub canary: String,
    /// Share of requests for the canary, 0.0 to 1.0.
    pub weight: f64,
}

impl CanarySplit {
    /// Checks versions (non-negative integers) and the weight.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let version_ok =
            |v: &str| !v.is_empty() && v.len() < 20 && v.bytes().all(|b| b.is_ascii_digit());
        if !version_ok(&self.stable) {
            return Err(GatewayError::BadRequest(format!(
                "canary: stable version '{}' must be a non-negative integer",
                self.stable
            )));
        }
        if !self.canary.is_empty() && !version_ok(&self.canary) {
            return Err(GatewayError::BadRequest(format!(
                "canary: canary version '{}' must be a non-negative integer",
                self.canary
            )));
        }
        if !(0.0..=1.0).contains(&self.weight) {
            return Err(GatewayError::BadRequest(format!(
                "canary: weight {} must be between 0 and 1",
                self.weight
            )));
        }
        Ok(())
    }

    /// The version for a request: by the hash of `request_id` when given
    /// (the same id always lands on the same version), else at random.
    pub fn choose(&self, request_id: Option<&str>) -> &str {
        if self.canary.is_empty() || self.weight <= 0.0 {
            return &self.stable;
        }
        let point = match request_id {
            Some(id) if !id.is_empty() => unit_hash(id),
            _ => fastrand::f64(),
        };
        if point < self.weight {
            &self.canary
        } else {
            &self.stable
        }
    }
}

/// Maps a string to [0, 1) uniformly (the first 8 bytes of its SHA-256).
fn unit_hash(id: &str) -> f64 {
    let digest = Sha256::digest(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// What an admin call does to a model's split.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum CanaryAction {
    /// Set (or replace) the split.
    Set {
        /// The stable version.
        stable: String,
        /// The canary version.
        canary: String,
        /// The canary's share.
        weight: f64,
    },
    /// The canary becomes the stable version; all traffic goes to it.
    Promote,
    /// All traffic back to the stable version.
    Rollback,
}

/// Every model's split, changed at run time by admin calls. With a database
/// the splits live there, shared by every gateway replica: a change is made
/// in one transaction against the stored split, and each replica refreshes
/// its in-memory copy (the request path reads only that).
#[derive(Debug, Default)]
pub struct CanaryTable {
    splits: RwLock<HashMap<String, CanarySplit>>,
    db: Option<Database>,
}

impl CanaryTable {
    /// The table stored in `db`: the configured splits are stored for models
    /// that have none yet (a split changed at run time survives restarts and
    /// is not reset by a replica starting), then every split is loaded.
    pub async fn stored(
        db: Database,
        config: &BTreeMap<String, CanaryConfig>,
    ) -> Result<CanaryTable, GatewayError> {
        for (model, c) in config {
            let split = CanarySplit::from(c);
            split.validate()?;
            sqlx::query(
                "INSERT INTO gateway_canary (model, stable, canary, weight, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model) DO NOTHING",
            )
            .bind(model)
            .bind(&split.stable)
            .bind(&split.canary)
            .bind(split.weight)
            .bind(now_micros())
            .execute(&db.pool)
            .await
            .map_err(storage)?;
        }
        let table = CanaryTable {
            splits: RwLock::default(),
            db: Some(db),
        };
        table.refresh().await?;
        Ok(table)
    }

    /// Reloads every split from the database (nothing without one).
    pub async fn refresh(&self) -> Result<(), GatewayError> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let rows = sqlx::query("SELECT model, stable, canary, weight FROM gateway_canary")
            .fetch_all(&db.pool)
            .await
            .map_err(storage)?;
        let mut loaded = HashMap::with_capacity(rows.len());
        for row in &rows {
            let (model, split) = row_to_split(row).map_err(storage)?;
            loaded.insert(model, split);
        }
        *self.write()? = loaded;
        Ok(())
    }

    /// The split of `model`, if any.
    pub fn get(&self, model: &str) -> Option<CanarySplit> {
        self.splits.read().ok()?.get(model).cloned()
    }

    /// The version `model` should be served from for this request, when it has a split.
    pub fn choose(&self, model: &str, request_id: Option<&str>) -> Option<String> {
        let splits = self.splits.read().ok()?;
        splits.get(model).map(|s| s.choose(request_id).to_string())
    }

    /// The split's other version than `chosen` (none without a canary):
    /// where a request goes when the chosen version is not served (yet, or
    /// any more) while a rollout moves.
    pub fn other_version(&self, model: &str, chosen: &str) -> Option<String> {
        let splits = self.splits.read().ok()?;
        let split = splits.get(model).filter(|s| !s.canary.is_empty())?;
        Some(if chosen == split.canary {
            split.stable.clone()
        } else {
            split.canary.clone()
        })
    }

    /// Applies an admin action and returns the new split. With a database
    /// the action applies to the stored split, inside one write transaction,
    /// so two replicas promoting at once cannot interleave.
    pub async fn apply(
        &self,
        model: &str,
        action: CanaryAction,
    ) -> Result<CanarySplit, GatewayError> {
        let Some(db) = &self.db else {
            let current = self.get(model);
            let next = next_split(model, action, current)?;
            self.write()?.insert(model.to_string(), next.clone());
            return Ok(next);
        };
        let mut tx = db.begin_write().await.map_err(storage)?;
        let lock = if db.dialect == Dialect::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let row = sqlx::query(&format!(
            "SELECT model, stable, canary, weight FROM gateway_canary WHERE model = $1{lock}"
        ))
        .bind(model)
        .fetch_optional(&mut *tx)
        .await
        .map_err(storage)?;
        let current = row
            .as_ref()
            .map(row_to_split)
            .transpose()
            .map_err(storage)?;
        let next = next_split(model, action, current.map(|(_, s)| s))?;
        sqlx::query(
            "INSERT INTO gateway_canary (model, stable, canary, weight, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model) DO UPDATE SET \
             stable = excluded.stable, canary = excluded.canary, weight = excluded.weight, \
             updated_at = excluded.updated_at",
        )
        .bind(model)
        .bind(&next.stable)
        .bind(&next.canary)
        .bind(next.weight)
        .bind(now_micros())
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        self.write()?.insert(model.to_string(), next.clone());
        Ok(next)
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, HashMap<String, CanarySplit>>, GatewayError> {
        self.splits
            .write()
            .map_err(|_| GatewayError::Internal("canary table lock poisoned".into()))
    }
}

impl From<&CanaryConfig> for CanarySplit {
    fn from(c: &CanaryConfig) -> Self {
        CanarySplit {
            stable: c.stable.clone(),
            canary: c.canary.clone(),
            weight: c.weight,
        }
    }
}

/// The split an action leaves, from the current one.
fn next_split(
    model: &str,
    action: CanaryAction,
    current: Option<CanarySplit>,
) -> Result<CanarySplit, GatewayError> {
    let next = match (action, current) {
        (
            CanaryAction::Set {
                stable,
                canary,
                weight,
            },
            _,
        ) => CanarySplit {
            stable,
            canary,
            weight,
        },
        (CanaryAction::Promote, Some(s)) if !s.canary.is_empty() => CanarySplit {
            stable: s.canary,
            canary: String::new(),
            weight: 0.0,
        },
        (CanaryAction::Rollback, Some(s)) => CanarySplit {
            stable: s.stable,
            canary: String::new(),
            weight: 0.0,
        },
        (action, _) => {
            return Err(GatewayError::NotFound(format!(
                "model '{model}' has no canary to {}",
                match action {
                    CanaryAction::Promote => "promote",
                    _ => "roll back",
                }
            )))
        }
    };
    next.validate()?;
    tracing::info!(model, stable = %next.stable, canary = %next.canary, weight = next.weight, "canary split changed");
    Ok(next)
}

fn row_to_split(row: &AnyRow) -> Result<(String, CanarySplit), sqlx::Error> {
    Ok((
        row.try_get("model")?,
        CanarySplit {
            stable: row.try_get("stable")?,
            canary: row.try_get("canary")?,
            weight: row.try_get("weight")?,
        },
    ))
}

fn storage(err: sqlx::Error) -> GatewayError {
    GatewayError::Unavailable(format!("canary splits: database error: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlserve_common::db::testing;

    fn split(weight: f64) -> CanarySplit {
        CanarySplit {
            stable: "1".into(),
            canary: "2".into(),
            weight,
        }
    }

    #[test]
    fn the_same_id_always_gets_the_same_version() {
        let s = split(0.5);
        for i in 0..100 {
            let id = format!("req-{i}");
            assert_eq!(s.choose(Some(&id)), s.choose(Some(&id)));
        }
    }

    #[test]
    fn proportions_follow_the_weight() {
        let s = split(0.1);
        let n = 20_000;
        let canary = (0..n)
            .filter(|i| s.choose(Some(&format!("id-{i}"))) == "2")
            .count();
        let share = canary as f64 / n as f64;
        // 5 standard deviations of a binomial(20000, 0.1) share is 0.0106.
        assert!((share - 0.1).abs() < 0.0106, "share {share}");
        assert_eq!(split(0.0).choose(Some("x")), "1");
        assert_eq!(split(1.0).choose(None), "2");
    }

    async fn promote_and_rollback_on(table: CanaryTable) {
        assert!(table.apply("m", CanaryAction::Promote).await.is_err());
        table
            .apply(
                "m",
                CanaryAction::Set {
                    stable: "1".into(),
                    canary: "2".into(),
                    weight: 0.3,
                },
            )
            .await
            .unwrap();
        let promoted = table.apply("m", CanaryAction::Promote).await.unwrap();
        assert_eq!((promoted.stable.as_str(), promoted.weight), ("2", 0.0));
        assert_eq!(table.choose("m", None).as_deref(), Some("2"));
        table
            .apply(
                "m",
                CanaryAction::Set {
                    stable: "2".into(),
                    canary: "3".into(),
                    weight: 1.0,
                },
            )
            .await
            .unwrap();
        assert_eq!(table.choose("m", Some("a")).as_deref(), Some("3"));
        table.apply("m", CanaryAction::Rollback).await.unwrap();
        assert_eq!(table.choose("m", Some("a")).as_deref(), Some("2"));
        assert_eq!(table.choose("other", None), None);
    }

    #[tokio::test]
    async fn bad_splits_are_refused() {
        let table = CanaryTable::default();
        for (stable, canary, weight) in [
            ("x", "2", 0.1),
            ("1", "y", 0.1),
            ("1", "2", 1.5),
            ("", "2", 0.1),
        ] {
            let err = table
                .apply(
                    "m",
                    CanaryAction::Set {
                        stable: stable.into(),
                        canary: canary.into(),
                        weight,
                    },
                )
                .await
                .unwrap_err();
            assert_eq!(err.code(), mlserve_proto::ErrorCode::BadRequest);
        }
    }

    #[tokio::test]
    async fn promote_and_rollback_in_memory() {
        promote_and_rollback_on(CanaryTable::default()).await;
    }

    #[tokio::test]
    async fn promote_and_rollback_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let db = testing::sqlite(dir.path()).await;
        promote_and_rollback_on(CanaryTable::stored(db, &BTreeMap::new()).await.unwrap()).await;
    }

    /// Two tables on one database stand for two gateway replicas.
    async fn shared_by_replicas(db: Database) {
        let configured = BTreeMap::from([(
            "m".to_string(),
            CanaryConfig {
                stable: "1".into(),
                canary: "2".into(),
                weight: 0.25,
            },
        )]);
        let a = CanaryTable::stored(db.clone(), &configured).await.unwrap();
        let b = CanaryTable::stored(db.clone(), &BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(
            b.get("m"),
            Some(split(0.25)),
            "the configured split is stored"
        );
        a.apply("m", CanaryAction::Promote).await.unwrap();
        assert_eq!(b.get("m"), Some(split(0.25)), "not refreshed yet");
        b.refresh().await.unwrap();
        let promoted = b.get("m").unwrap();
        assert_eq!(
            (promoted.stable.as_str(), promoted.canary.as_str()),
            ("2", "")
        );
        // Promoting through b acts on the stored split, not on a stale copy.
        assert!(b.apply("m", CanaryAction::Promote).await.is_err());
        // A replica starting with the file's split does not reset the change.
        let c = CanaryTable::stored(db, &configured).await.unwrap();
        assert_eq!(c.get("m").unwrap().stable, "2");
    }

    #[tokio::test]
    async fn splits_are_shared_by_replicas_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        shared_by_replicas(testing::sqlite(dir.path()).await).await;
    }

    #[tokio::test]
    async fn splits_are_shared_by_replicas_on_postgres() {
        shared_by_replicas(testing::postgres().await).await;
    }
}
