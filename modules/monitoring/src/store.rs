//! Rollouts and their records in SQL (SQLite or PostgreSQL through the one
//! `Database`). Every state change is written before it acts, so a
//! restarted role carries each rollout on from where it stood. At most one
//! unfinished rollout per model (a unique index over unfinished rows).

use mlserve_common::Database;
use mlserve_proto::monitoring::{Analysis, Rollout, RolloutRecord, RolloutStep};
use mlserve_proto::ServiceError;
use sqlx::any::AnyRow;
use sqlx::Row;

/// Microseconds since the Unix epoch, now (the gateway's clock, which
/// stamps the traffic splits the rollouts write).
pub use mlserve_gateway::keys::now_micros as now_us;

/// Where a rollout stands.
pub mod states {
    /// Waiting until every inference process serves the canary.
    pub const WAITING: &str = "waiting";
    /// Stepping through its weights, checked every interval.
    pub const PROGRESSING: &str = "progressing";
    /// Held at its weight by hand; no checks, no steps.
    pub const PAUSED: &str = "paused";
    /// Every step passed: the production alias moves to the canary.
    pub const PROMOTING: &str = "promoting";
    /// The canary is the stable version (final).
    pub const PROMOTED: &str = "promoted";
    /// The canary was refused; traffic is back on stable (final).
    pub const ABORTED: &str = "aborted";

    /// Whether `state` is final.
    pub fn is_final(state: &str) -> bool {
        state == PROMOTED || state == ABORTED
    }
}

/// The rollouts' tables.
#[derive(Clone)]
pub struct Store {
    db: Database,
}

fn storage(err: sqlx::Error) -> ServiceError {
    ServiceError::unavailable(format!("rollouts: database error: {err}"))
}

const COLUMNS: &str = "id, model, stable, canary, previous_canary, state, step, steps, analysis, \
     weight, failed_checks, reason, started_by, created_ts, updated_ts, step_started_ts, \
     last_check_ts, finished_ts";

impl Store {
    /// The store in `db` (migrated).
    pub fn new(db: Database) -> Store {
        Store { db }
    }

    /// The database (the gateways' traffic splits live there too).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Stores a new rollout; 409 when the model has an unfinished one.
    pub async fn insert(&self, r: &Rollout, last_check_ts: i64) -> Result<(), ServiceError> {
        let result = sqlx::query(&format!(
            "INSERT INTO monitoring_rollouts ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
        ))
        .bind(&r.id)
        .bind(&r.model)
        .bind(r.stable as i64)
        .bind(r.canary as i64)
        .bind(r.previous_canary as i64)
        .bind(&r.state)
        .bind(i64::from(r.step))
        .bind(json(&r.steps))
        .bind(json(&r.analysis))
        .bind(i64::from(r.weight))
        .bind(i64::from(r.failed_checks))
        .bind(&r.reason)
        .bind(&r.started_by)
        .bind(r.created_at_us)
        .bind(r.updated_at_us)
        .bind(r.step_started_at_us)
        .bind(last_check_ts)
        .bind(Option::<i64>::None)
        .execute(&self.db.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(ServiceError::conflict(format!(
                    "model '{}' already has a rollout in progress: abort or promote it first",
                    r.model
                )))
            }
            Err(e) => Err(storage(e)),
        }
    }

    /// Writes the mutable fields of `r`, and when the last check ran.
    pub async fn update(&self, r: &Rollout, last_check_ts: i64) -> Result<(), ServiceError> {
        sqlx::query(
            "UPDATE monitoring_rollouts SET state = $2, step = $3, weight = $4, \
             failed_checks = $5, reason = $6, updated_ts = $7, step_started_ts = $8, \
             last_check_ts = $9, finished_ts = $10, stable = $11 WHERE id = $1",
        )
        .bind(&r.id)
        .bind(&r.state)
        .bind(i64::from(r.step))
        .bind(i64::from(r.weight))
        .bind(i64::from(r.failed_checks))
        .bind(&r.reason)
        .bind(r.updated_at_us)
        .bind(r.step_started_at_us)
        .bind(last_check_ts)
        .bind((r.finished_at_us > 0).then_some(r.finished_at_us))
        .bind(r.stable as i64)
        .execute(&self.db.pool)
        .await
        .map_err(storage)?;
        Ok(())
    }

    /// One rollout by id.
    pub async fn get(&self, id: &str) -> Result<Option<(Rollout, i64)>, ServiceError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM monitoring_rollouts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await
        .map_err(storage)?;
        row.as_ref().map(to_rollout).transpose().map_err(storage)
    }

    /// The model's newest rollout.
    pub async fn latest(&self, model: &str) -> Result<Option<(Rollout, i64)>, ServiceError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM monitoring_rollouts WHERE model = $1 \
             ORDER BY created_ts DESC, id DESC LIMIT 1"
        ))
        .bind(model)
        .fetch_optional(&self.db.pool)
        .await
        .map_err(storage)?;
        row.as_ref().map(to_rollout).transpose().map_err(storage)
    }

    /// Rollouts, newest first: of one model (or all), unfinished only or all.
    pub async fn list(
        &self,
        model: &str,
        active: bool,
        limit: u32,
    ) -> Result<Vec<(Rollout, i64)>, ServiceError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM monitoring_rollouts WHERE ($1 = '' OR model = $1) \
             AND ($2 = 0 OR finished_ts IS NULL) ORDER BY created_ts DESC, id DESC LIMIT $3"
        ))
        .bind(model)
        .bind(i64::from(active))
        .bind(i64::from(if limit == 0 { 100 } else { limit.min(1000) }))
        .fetch_all(&self.db.pool)
        .await
        .map_err(storage)?;
        rows.iter()
            .map(to_rollout)
            .collect::<Result<_, _>>()
            .map_err(storage)
    }

    /// Appends a record to a rollout's history.
    pub async fn record(
        &self,
        id: &str,
        kind: &str,
        result: &str,
        message: &str,
    ) -> Result<(), ServiceError> {
        sqlx::query(
            "INSERT INTO monitoring_rollout_records (rollout_id, seq, at_ts, kind, result, message) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5 \
             FROM monitoring_rollout_records WHERE rollout_id = $1",
        )
        .bind(id)
        .bind(now_us())
        .bind(kind)
        .bind(result)
        .bind(message)
        .execute(&self.db.pool)
        .await
        .map_err(storage)?;
        Ok(())
    }

    /// A rollout's records, oldest first.
    pub async fn records(&self, id: &str) -> Result<Vec<RolloutRecord>, ServiceError> {
        let rows = sqlx::query(
            "SELECT seq, at_ts, kind, result, message FROM monitoring_rollout_records \
             WHERE rollout_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.db.pool)
        .await
        .map_err(storage)?;
        rows.iter()
            .map(|row| {
                Ok(RolloutRecord {
                    seq: row.try_get("seq")?,
                    at_us: row.try_get("at_ts")?,
                    kind: row.try_get("kind")?,
                    result: row.try_get("result")?,
                    message: row.try_get("message")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(storage)
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

fn to_rollout(row: &AnyRow) -> Result<(Rollout, i64), sqlx::Error> {
    let decode = |column: &str, text: String| sqlx::Error::ColumnDecode {
        index: column.into(),
        source: text.into(),
    };
    let steps: String = row.try_get("steps")?;
    let steps: Vec<RolloutStep> =
        serde_json::from_str(&steps).map_err(|e| decode("steps", e.to_string()))?;
    let analysis: String = row.try_get("analysis")?;
    let analysis: Option<Analysis> =
        serde_json::from_str(&analysis).map_err(|e| decode("analysis", e.to_string()))?;
    let int = |column: &str| -> Result<i64, sqlx::Error> { row.try_get(column) };
    let rollout = Rollout {
        id: row.try_get("id")?,
        model: row.try_get("model")?,
        stable: int("stable")?.max(0) as u64,
        canary: int("canary")?.max(0) as u64,
        previous_canary: int("previous_canary")?.max(0) as u64,
        state: row.try_get("state")?,
        step: int("step")?.clamp(0, i64::from(u32::MAX)) as u32,
        steps,
        analysis,
        weight: int("weight")?.clamp(0, 100) as u32,
        failed_checks: int("failed_checks")?.clamp(0, i64::from(u32::MAX)) as u32,
        reason: row.try_get("reason")?,
        created_at_us: int("created_ts")?,
        updated_at_us: int("updated_ts")?,
        finished_at_us: row.try_get::<Option<i64>, _>("finished_ts")?.unwrap_or(0),
        step_started_at_us: int("step_started_ts")?,
        started_by: row.try_get("started_by")?,
    };
    Ok((rollout, int("last_check_ts")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlserve_common::db::testing;

    fn rollout(id: &str, model: &str) -> Rollout {
        Rollout {
            id: id.into(),
            model: model.into(),
            stable: 1,
            canary: 2,
            state: states::PROGRESSING.into(),
            steps: vec![RolloutStep {
                weight: 10,
                duration_ms: 1000,
            }],
            analysis: Some(Analysis {
                interval_ms: 1000,
                threshold: 2,
                ..Default::default()
            }),
            created_at_us: now_us(),
            ..Default::default()
        }
    }

    async fn one_active_rollout_per_model(store: Store) {
        let mut first = rollout("a", "m");
        store.insert(&first, 0).await.unwrap();
        let err = store.insert(&rollout("b", "m"), 0).await.unwrap_err();
        assert_eq!(err.code, mlserve_proto::ErrorCode::Conflict);
        store.insert(&rollout("c", "other"), 0).await.unwrap();
        first.state = states::ABORTED.into();
        first.finished_at_us = now_us();
        first.reason = "bad".into();
        store.update(&first, 5).await.unwrap();
        store.insert(&rollout("b", "m"), 0).await.unwrap();
        let (latest, _) = store.latest("m").await.unwrap().unwrap();
        assert_eq!(latest.id, "b");
        let (a, last_check) = store.get("a").await.unwrap().unwrap();
        assert_eq!(
            (a.state.as_str(), a.reason.as_str(), last_check),
            ("aborted", "bad", 5)
        );
        assert_eq!(a.steps[0].weight, 10);
        assert_eq!(a.analysis.unwrap().threshold, 2);
        assert_eq!(store.list("", true, 0).await.unwrap().len(), 2);
        assert_eq!(store.list("m", false, 0).await.unwrap().len(), 2);
        store.record("a", "check", "pass", "fine").await.unwrap();
        store.record("a", "decision", "", "abort").await.unwrap();
        let records = store.records("a").await.unwrap();
        assert_eq!(
            records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(records[0].result, "pass");
    }

    #[tokio::test]
    async fn one_active_rollout_per_model_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        one_active_rollout_per_model(Store::new(testing::sqlite(dir.path()).await)).await;
    }

    #[tokio::test]
    async fn one_active_rollout_per_model_on_postgres() {
        one_active_rollout_per_model(Store::new(testing::postgres().await)).await;
    }
}
