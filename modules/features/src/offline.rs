//! The offline store: append-only rows in SQL (one query text for SQLite and
//! PostgreSQL), the latest row per entity of a time range for materialize,
//! materialization watermarks, and feature means.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use mlserve_common::events::{outbox, Event};
use mlserve_common::Database;
use sqlx::Row as _;

use crate::error::Result;
use crate::online::OnlineRow;
use crate::values::now_micros;

/// Rows per multi-row INSERT (well under SQLite's bound-parameter limit).
const INSERT_CHUNK: usize = 200;

/// One row to append: entity key, event time, feature values (JSON object).
#[derive(Debug, Clone)]
pub struct OfflineRow {
    /// JSON array of the join key values.
    pub key: String,
    /// Event time, microseconds.
    pub event_ts: i64,
    /// JSON object of feature values.
    pub values_json: String,
}

/// `($1, $2, ...), ($n+1, ...)`: placeholders of a multi-row INSERT.
pub fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Appends `rows` of `view` in one transaction, all stamped with one
/// created time, with `event` (their `data_arrived`) written to the event
/// outbox in the same transaction when given; returns how many were written.
pub async fn append(
    db: &Database,
    view: &str,
    rows: &[OfflineRow],
    event: Option<&Event>,
) -> Result<usize> {
    let created = now_micros();
    let mut tx = db.begin_write().await?;
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO feature_rows (view, entity_key, event_ts, created_ts, vals) VALUES ",
        );
        sql.push_str(&placeholders(chunk.len(), 5));
        let mut query = sqlx::query(&sql);
        for row in chunk {
            query = query
                .bind(view)
                .bind(&row.key)
                .bind(row.event_ts)
                .bind(created)
                .bind(&row.values_json);
        }
        query.execute(&mut *tx).await?;
    }
    if let Some(event) = event {
        outbox::stage(&mut tx, event).await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

/// Streams the latest row (by event time, then created time, then insertion)
/// of every entity of `view` with `start <= event_ts <= end` to `sink`, in
/// chunks of `chunk` rows.
pub async fn latest_in_range<F, Fut>(
    db: &Database,
    view: &str,
    start: i64,
    end: i64,
    chunk: usize,
    mut sink: F,
) -> Result<usize>
where
    F: FnMut(Vec<OnlineRow>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut rows = sqlx::query(
        "SELECT entity_key, event_ts, vals FROM ( \
           SELECT entity_key, event_ts, vals, ROW_NUMBER() OVER ( \
             PARTITION BY entity_key ORDER BY event_ts DESC, created_ts DESC, id DESC) AS rn \
           FROM feature_rows WHERE view = $1 AND event_ts >= $2 AND event_ts <= $3) latest \
         WHERE rn = 1",
    )
    .bind(view)
    .bind(start)
    .bind(end)
    .fetch(&db.pool);
    let mut batch = Vec::with_capacity(chunk);
    let mut total = 0;
    while let Some(row) = rows.try_next().await? {
        batch.push(OnlineRow {
            key: row.try_get(0)?,
            event_ts: row.try_get(1)?,
            values_json: row.try_get(2)?,
        });
        if batch.len() >= chunk {
            total += batch.len();
            sink(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        total += batch.len();
        sink(batch).await?;
    }
    Ok(total)
}

/// The end of the previous incremental materialization of `view`.
pub async fn watermark(db: &Database, view: &str) -> Result<Option<i64>> {
    let row = sqlx::query("SELECT last_end_ts FROM feature_materializations WHERE view = $1")
        .bind(view)
        .fetch_optional(&db.pool)
        .await?;
    Ok(match row {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    })
}

/// How fresh every view with data is, by name: its last incremental
/// materialization (reached, ran at) and its newest offline event time (0
/// for what never happened). Two queries, however many views there are.
pub async fn freshness(db: &Database) -> Result<HashMap<String, (i64, i64, i64)>> {
    let mut fresh: HashMap<String, (i64, i64, i64)> = HashMap::new();
    let materialized =
        sqlx::query("SELECT view, last_end_ts, updated_ts FROM feature_materializations")
            .fetch_all(&db.pool)
            .await?;
    for row in materialized {
        let entry = fresh.entry(row.try_get(0)?).or_default();
        (entry.0, entry.1) = (row.try_get(1)?, row.try_get(2)?);
    }
    let newest = sqlx::query("SELECT view, MAX(event_ts) FROM feature_rows GROUP BY view")
        .fetch_all(&db.pool)
        .await?;
    for row in newest {
        let latest: Option<i64> = row.try_get(1)?;
        fresh.entry(row.try_get(0)?).or_default().2 = latest.unwrap_or(0);
    }
    Ok(fresh)
}

/// Records that `view` is materialized up to `end`.
pub async fn set_watermark(db: &Database, view: &str, end: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO feature_materializations (view, last_end_ts, updated_ts) VALUES ($1, $2, $3) \
         ON CONFLICT (view) DO UPDATE SET last_end_ts = excluded.last_end_ts, \
         updated_ts = excluded.updated_ts",
    )
    .bind(view)
    .bind(end)
    .bind(now_micros())
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// The mean of the numeric values of `feature` over every offline row of
/// `view` (None when there is none), computed while streaming.
pub async fn mean(db: &Database, view: &str, feature: &str) -> Result<Option<f64>> {
    let mut rows = sqlx::query("SELECT vals FROM feature_rows WHERE view = $1")
        .bind(view)
        .fetch(&db.pool);
    let (mut sum, mut count) = (0.0f64, 0u64);
    while let Some(row) = rows.try_next().await? {
        let text: String = row.try_get(0)?;
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&text) {
            if let Some(x) = map.get(feature).and_then(|v| v.as_f64()) {
                sum += x;
                count += 1;
            }
        }
    }
    Ok((count > 0).then(|| sum / count as f64))
}

/// How many offline rows `view` has.
pub async fn count(db: &Database, view: &str) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) FROM feature_rows WHERE view = $1")
        .bind(view)
        .fetch_one(&db.pool)
        .await?;
    Ok(row.try_get(0)?)
}

/// The entity keys (JSON arrays) and event times of `view`'s offline rows in
/// `[start, end)` (0 leaves a side open), oldest first; with `limit`, the
/// newest `limit` rows.
pub async fn entity_rows(
    db: &Database,
    view: &str,
    start: i64,
    end: i64,
    limit: u64,
) -> Result<Vec<(String, i64)>> {
    let end = if end == 0 { i64::MAX } else { end };
    let limit = if limit == 0 {
        i64::MAX
    } else {
        limit.min(i64::MAX as u64) as i64
    };
    let rows = sqlx::query(
        "SELECT entity_key, event_ts FROM feature_rows WHERE view = $1 AND event_ts >= $2 \
         AND event_ts < $3 ORDER BY event_ts DESC, id DESC LIMIT $4",
    )
    .bind(view)
    .bind(start)
    .bind(end)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    let mut out = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<(String, i64)>>>()?;
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_number_rows_and_columns() {
        assert_eq!(super::placeholders(2, 3), "($1, $2, $3),($4, $5, $6)");
    }
}
