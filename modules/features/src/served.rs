//! The request log in the offline store: rows of served requests that the
//! gateways sampled (a model version's input feature vector and its
//! prediction), appended in batches, read back by time range for the
//! monitoring role's drift analysis, and pruned after a retention.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use mlserve_common::Database;
use mlserve_proto::features::{ServedRow, ServedVersion};
use sqlx::Row as _;

use crate::error::{invalid, Result};
use crate::offline::placeholders;

/// Rows per multi-row INSERT (six columns: well under SQLite's parameter bound).
const INSERT_CHUNK: usize = 150;
/// Most rows one `LogServed` call may carry.
pub const MAX_ROWS_PER_CALL: usize = 10_000;
/// Most named values (features plus prediction) of one row.
pub const MAX_VALUES_PER_ROW: usize = 1_024;
/// Most rows one `ListServed` call answers.
pub const MAX_LIST_ROWS: u64 = 50_000;

/// Refuses rows a drift analysis could not use: empty model or version,
/// too many values, or a value that is not a finite number.
pub fn validate(rows: &[ServedRow]) -> Result<()> {
    if rows.len() > MAX_ROWS_PER_CALL {
        return Err(invalid(format!(
            "{} served rows in one call; at most {MAX_ROWS_PER_CALL}",
            rows.len()
        )));
    }
    for (i, row) in rows.iter().enumerate() {
        if row.model.is_empty() || row.version.is_empty() {
            return Err(invalid(format!(
                "served row {i} needs a model and a version"
            )));
        }
        if row.features.len() + row.prediction.len() > MAX_VALUES_PER_ROW {
            return Err(invalid(format!(
                "served row {i} has {} values; at most {MAX_VALUES_PER_ROW}",
                row.features.len() + row.prediction.len()
            )));
        }
        if let Some((name, _)) = row
            .features
            .iter()
            .chain(&row.prediction)
            .find(|(_, v)| !v.is_finite())
        {
            return Err(invalid(format!(
                "served row {i}: '{name}' is not a finite number"
            )));
        }
    }
    Ok(())
}

/// Appends `rows` in one transaction; returns how many were written.
pub async fn append(db: &Database, rows: &[ServedRow]) -> Result<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut tx = db.begin_write().await?;
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO served_rows (model, version, served_ts, features, prediction) VALUES ",
        );
        sql.push_str(&placeholders(chunk.len(), 5));
        let mut query = sqlx::query(&sql);
        for row in chunk {
            query = query
                .bind(&row.model)
                .bind(&row.version)
                .bind(row.served_ts)
                .bind(to_json(&row.features))
                .bind(to_json(&row.prediction));
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

fn to_json(values: &HashMap<String, f64>) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "{}".into())
}

fn from_json(text: &str) -> HashMap<String, f64> {
    serde_json::from_str(text).unwrap_or_default()
}

/// What [`list`] reads.
#[derive(Debug, Clone, Default)]
pub struct Range<'a> {
    /// Registered model name.
    pub model: &'a str,
    /// Its version.
    pub version: &'a str,
    /// Served times in `[start, end)`; 0 leaves a side open.
    pub start: i64,
    /// See `start`.
    pub end: i64,
    /// At most this many rows (0 or more than [`MAX_LIST_ROWS`]: that bound).
    pub limit: u64,
    /// The oldest rows of the range, instead of the newest.
    pub oldest: bool,
}

/// The rows of one model version in a time range, oldest first either way.
pub async fn list(db: &Database, range: &Range<'_>) -> Result<Vec<ServedRow>> {
    if range.model.is_empty() || range.version.is_empty() {
        return Err(invalid("listing served rows needs a model and a version"));
    }
    let limit = match range.limit {
        0 => MAX_LIST_ROWS,
        n => n.min(MAX_LIST_ROWS),
    };
    let end = if range.end <= 0 { i64::MAX } else { range.end };
    let order = if range.oldest { "ASC" } else { "DESC" };
    let sql = format!(
        "SELECT served_ts, features, prediction FROM served_rows \
         WHERE model = $1 AND version = $2 AND served_ts >= $3 AND served_ts < $4 \
         ORDER BY served_ts {order}, id {order} LIMIT $5"
    );
    let mut stream = sqlx::query(&sql)
        .bind(range.model)
        .bind(range.version)
        .bind(range.start.max(0))
        .bind(end)
        .bind(limit as i64)
        .fetch(&db.pool);
    let mut rows = Vec::new();
    while let Some(row) = stream.try_next().await? {
        let features: String = row.try_get(1)?;
        let prediction: String = row.try_get(2)?;
        rows.push(ServedRow {
            model: range.model.to_string(),
            version: range.version.to_string(),
            served_ts: row.try_get(0)?,
            features: from_json(&features),
            prediction: from_json(&prediction),
        });
    }
    if !range.oldest {
        rows.reverse();
    }
    Ok(rows)
}

/// The model versions with rows served at or after `since`.
pub async fn versions(db: &Database, since: i64) -> Result<Vec<ServedVersion>> {
    let rows = sqlx::query(
        "SELECT model, version, COUNT(*), MIN(served_ts), MAX(served_ts) FROM served_rows \
         WHERE served_ts >= $1 GROUP BY model, version ORDER BY model, version",
    )
    .bind(since.max(0))
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ServedVersion {
                model: row.try_get(0)?,
                version: row.try_get(1)?,
                rows: row.try_get::<i64, _>(2)?.max(0) as u64,
                first_ts: row.try_get(3)?,
                last_ts: row.try_get(4)?,
            })
        })
        .collect()
}

/// Deletes rows served before `before`; returns how many.
pub async fn prune(db: &Database, before: i64) -> Result<u64> {
    let done = sqlx::query("DELETE FROM served_rows WHERE served_ts < $1")
        .bind(before)
        .execute(&db.pool)
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlserve_common::db::testing;

    fn row(version: &str, ts: i64, x: f64) -> ServedRow {
        ServedRow {
            model: "m".into(),
            version: version.into(),
            served_ts: ts,
            features: HashMap::from([("x".to_string(), x), ("y[1]".to_string(), -x)]),
            prediction: HashMap::from([("out".to_string(), x * 2.0)]),
        }
    }

    #[tokio::test]
    async fn rows_round_trip_on_sqlite() {
        let dir = std::env::temp_dir().join(format!(
            "mlserve-served-{}-{}",
            std::process::id(),
            crate::values::now_micros()
        ));
        rows_round_trip_by_range_and_version(testing::sqlite(&dir).await).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn rows_round_trip_on_postgres() {
        rows_round_trip_by_range_and_version(testing::postgres().await).await;
    }

    async fn rows_round_trip_by_range_and_version(db: Database) {
        let rows: Vec<ServedRow> = (0..10).map(|i| row("1", 100 + i, i as f64)).collect();
        assert_eq!(append(&db, &rows).await.unwrap(), 10);
        append(&db, &[row("2", 105, 50.0)]).await.unwrap();

        let range = |start, end, limit, oldest| Range {
            model: "m",
            version: "1",
            start,
            end,
            limit,
            oldest,
        };
        let oldest = list(&db, &range(0, 0, 3, true)).await.unwrap();
        let ts: Vec<i64> = oldest.iter().map(|r| r.served_ts).collect();
        assert_eq!(ts, vec![100, 101, 102]);
        assert_eq!(oldest[2].features["y[1]"], -2.0);
        assert_eq!(oldest[2].prediction["out"], 4.0);

        let newest = list(&db, &range(0, 108, 3, false)).await.unwrap();
        let ts: Vec<i64> = newest.iter().map(|r| r.served_ts).collect();
        assert_eq!(
            ts,
            vec![105, 106, 107],
            "newest below the end, oldest first"
        );

        let versions = versions(&db, 104).await.unwrap();
        let summary: Vec<(String, u64, i64, i64)> = versions
            .iter()
            .map(|v| (v.version.clone(), v.rows, v.first_ts, v.last_ts))
            .collect();
        assert_eq!(
            summary,
            vec![("1".into(), 6, 104, 109), ("2".into(), 1, 105, 105)]
        );

        assert_eq!(prune(&db, 105).await.unwrap(), 5);
        assert_eq!(list(&db, &range(0, 0, 0, true)).await.unwrap().len(), 5);
    }

    #[test]
    fn bad_rows_are_refused() {
        let mut bad = row("1", 1, 1.0);
        bad.features.insert("z".into(), f64::NAN);
        assert!(validate(&[bad]).unwrap_err().to_string().contains("'z'"));
        let mut unnamed = row("1", 1, 1.0);
        unnamed.version.clear();
        assert!(validate(&[unnamed]).is_err());
        assert!(validate(&[row("1", 1, 1.0)]).is_ok());
    }
}
