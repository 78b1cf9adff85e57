//! Historical retrieval: a point-in-time join in SQL. The entity rows are
//! staged in a table, then one query joins each row and view with the offline
//! rows of its entity with `row ts - ttl <= event_ts <= row ts` and keeps the
//! latest (a window function: event time, then created time, then insertion
//! order), with no correlated subquery, so the plan does not depend on table
//! statistics. Results stream out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::TryStreamExt;
use mlserve_common::Database;
use mlserve_proto::features::{EntityRow, HistoricalRow, HistoricalStream};
use mlserve_proto::ServiceResult;
use serde_json::Value;
use sqlx::Row as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::catalog::Catalog;
use crate::error::{FeaturesError, Result};
use crate::lookup::{parse_refs, ViewRefs};
use crate::values::{entity_key, join_keys};

const STAGE_CHUNK: usize = 150;
const STREAM_BUFFER: usize = 256;

static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Starts a point-in-time join of `features` for `entities`; invalid input is
/// refused before anything streams.
pub async fn start(
    db: &Database,
    catalog: &Catalog,
    features: &[String],
    entities: Vec<EntityRow>,
) -> Result<HistoricalStream> {
    let refs = parse_refs(catalog, features)?;
    let request_id = format!(
        "{}-{}-{}",
        std::process::id(),
        crate::values::now_micros(),
        REQUESTS.fetch_add(1, Ordering::Relaxed)
    );
    let mut staged = Vec::with_capacity(entities.len() * refs.len());
    for (idx, row) in entities.iter().enumerate() {
        for target in &refs {
            let view = catalog.view(&target.view)?;
            let key = entity_key(&join_keys(catalog, view), &row.keys, &view.name)?;
            let min_ts = if view.ttl_secs > 0 {
                row.event_ts
                    .saturating_sub(view.ttl_secs.saturating_mul(1_000_000))
            } else {
                i64::MIN
            };
            staged.push((idx as i64, view.name.clone(), key, row.event_ts, min_ts));
        }
    }
    stage(db, &request_id, &staged).await?;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let db = db.clone();
    let width = features.len();
    tokio::spawn(async move {
        if let Err(err) = join(&db, &request_id, &refs, width, &entities, &tx).await {
            let _ = tx.send(Err(err.into())).await;
        }
        if let Err(err) = sqlx::query("DELETE FROM feature_history_requests WHERE request_id = $1")
            .bind(&request_id)
            .execute(&db.pool)
            .await
        {
            tracing::warn!(error = %err, request = %request_id, "history staging cleanup failed");
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

async fn stage(
    db: &Database,
    request_id: &str,
    staged: &[(i64, String, String, i64, i64)],
) -> Result<()> {
    let mut tx = db.begin_write().await?;
    for chunk in staged.chunks(STAGE_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO feature_history_requests (request_id, row_idx, view, entity_key, ts, min_ts) VALUES ",
        );
        sql.push_str(&crate::offline::placeholders(chunk.len(), 6));
        let mut query = sqlx::query(&sql);
        for (idx, view, key, ts, min_ts) in chunk {
            query = query
                .bind(request_id)
                .bind(*idx)
                .bind(view.as_str())
                .bind(key.as_str())
                .bind(*ts)
                .bind(*min_ts);
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn join(
    db: &Database,
    request_id: &str,
    refs: &[ViewRefs],
    width: usize,
    entities: &[EntityRow],
    tx: &mpsc::Sender<ServiceResult<HistoricalRow>>,
) -> Result<()> {
    let mut rows = sqlx::query(
        "SELECT r.row_idx, r.view, m.vals FROM feature_history_requests r \
         LEFT JOIN ( \
           SELECT s.row_idx, s.view, f.vals, ROW_NUMBER() OVER ( \
             PARTITION BY s.row_idx, s.view \
             ORDER BY f.event_ts DESC, f.created_ts DESC, f.id DESC) AS rn \
           FROM feature_history_requests s JOIN feature_rows f \
             ON f.view = s.view AND f.entity_key = s.entity_key \
             AND f.event_ts <= s.ts AND f.event_ts >= s.min_ts \
           WHERE s.request_id = $1) m \
         ON m.row_idx = r.row_idx AND m.view = r.view AND m.rn = 1 \
         WHERE r.request_id = $1 ORDER BY r.row_idx, r.view",
    )
    .bind(request_id)
    .fetch(&db.pool);
    let by_view: HashMap<&str, &ViewRefs> = refs.iter().map(|r| (r.view.as_str(), r)).collect();
    let mut current: Option<HistoricalRow> = None;
    while let Some(row) = rows.try_next().await? {
        let idx: i64 = row.try_get(0)?;
        let view: String = row.try_get(1)?;
        let vals: Option<String> = row.try_get(2)?;
        if current.as_ref().is_some_and(|c| c.row != idx) {
            if let Some(done) = current.take() {
                if tx.send(Ok(done)).await.is_err() {
                    return Ok(());
                }
            }
        }
        let out = current.get_or_insert_with(|| {
            let entity = &entities[idx as usize];
            HistoricalRow {
                row: idx,
                keys: entity.keys.clone(),
                event_ts: entity.event_ts,
                values_json: vec!["null".to_string(); width],
            }
        });
        let (Some(target), Some(vals)) = (by_view.get(view.as_str()), vals) else {
            continue;
        };
        let object: serde_json::Map<String, Value> = serde_json::from_str(&vals)
            .map_err(|e| FeaturesError::Internal(format!("stored row of '{view}': {e}")))?;
        for (position, feature) in &target.features {
            if let Some(value) = object.get(feature) {
                out.values_json[*position] = value.to_string();
            }
        }
    }
    if let Some(done) = current {
        let _ = tx.send(Ok(done)).await;
    }
    Ok(())
}
