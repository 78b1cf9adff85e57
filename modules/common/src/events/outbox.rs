//! The transactional outbox of the registry and the feature store.
//!
//! An event is written to the `event_outbox` table (topic, the event's JSON,
//! a sequence id) by [`stage`], in the same transaction as the change that
//! causes it (a version registered, an alias moved, data arrived): the
//! change and its event commit together or not at all, and the request that
//! made the change never waits for the bus.
//!
//! One drain task per database per process ([`Outbox::start`]) publishes the
//! rows in id order, each within the bus's publish timeout, and deletes a row
//! only once its publish succeeded; while the bus is unavailable it retries
//! with backoff (100 ms doubling to 5 s). It wakes at once when this process
//! stages a row ([`Outbox::wake`]) and also polls (`events.outbox_poll`) for
//! rows another process left: one that crashed before sending them, or
//! another replica. Delivery is at-least-once: a crash between a publish and
//! its row's deletion sends the event again, which subscribers tolerate
//! (see [`super`]).
//!
//! Replicas sharing a PostgreSQL database drain the same table: a pass locks
//! the rows it sends (`FOR UPDATE SKIP LOCKED`) until it deleted them, so no
//! row is sent by two replicas at once; each replica sends its batch in id
//! order. SQLite is one process's database: a pass reads, publishes and
//! deletes without holding its one connection while it publishes.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{Any, Row, Transaction};
use tokio::sync::Notify;

use super::{publish_json_bounded, Event, EventBus, EventError};
use crate::db::{Database, Dialect};
use crate::metrics::{Collector, DescriptorEncoder};
use crate::shutdown::ShutdownSignal;

/// Rows one pass sends at most.
pub const BATCH: usize = 64;
/// The first wait after a failed pass; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two passes while the bus is unavailable.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The gauge of the rows waiting in the outboxes of this process.
pub const PENDING_METRIC: &str = "mlserve_events_outbox_pending";

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Writes `event` to the outbox inside `tx`: it is published once `tx`
/// commits (and never if it rolls back). Call [`Outbox::wake`] after the
/// commit so the drain sends it at once.
pub async fn stage(tx: &mut Transaction<'static, Any>, event: &Event) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO event_outbox (topic, payload, created_at) VALUES ($1, $2, $3)")
        .bind(event.topic())
        .bind(event.to_json())
        .bind(now_us())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Why a drain pass stopped before the outbox was empty.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The database failed (reading, deleting, committing).
    #[error("event outbox: {0}")]
    Database(#[from] sqlx::Error),
    /// The bus refused or timed out; the rows from this one on wait.
    #[error("event outbox: {error} ({sent} sent before)")]
    Bus {
        /// Rows sent (and deleted) in this pass before the failure.
        sent: usize,
        /// The bus's error.
        error: EventError,
    },
}

/// One database's outbox in this process: the drain's wake-up and the
/// count of rows it last saw waiting.
pub struct Outbox {
    db: Database,
    wake: Notify,
    pending: AtomicI64,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("dialect", &self.db.dialect)
            .field("pending", &self.pending())
            .finish()
    }
}

struct Staged {
    id: i64,
    topic: String,
    payload: String,
}

impl Outbox {
    /// The outbox of `db` (migrated: it has the `event_outbox` table).
    pub fn new(db: Database) -> Arc<Outbox> {
        Arc::new(Outbox {
            db,
            wake: Notify::new(),
            pending: AtomicI64::new(0),
        })
    }

    /// The database whose table this drains.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Tells the drain that a row was committed: it sends it now rather
    /// than at its next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Writes `event` in a transaction of its own and wakes the drain: for
    /// a change that is not made in this database (an online-store write).
    pub async fn stage_now(&self, event: &Event) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        stage(&mut tx, event).await?;
        tx.commit().await?;
        self.wake();
        Ok(())
    }

    /// The rows waiting when the drain last looked.
    pub fn pending(&self) -> i64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Counts the rows waiting now (and keeps the count for the gauge).
    pub async fn count(&self) -> Result<i64, sqlx::Error> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM event_outbox")
            .fetch_one(&self.db.pool)
            .await?
            .try_get("n")?;
        self.pending.store(n, Ordering::Relaxed);
        Ok(n)
    }

    /// One pass: sends up to [`BATCH`] rows, oldest first, deleting each
    /// once the bus accepted it; stops at the first the bus refuses.
    /// Returns how many were sent (all of the batch: [`BATCH`] means more
    /// may wait). A row whose JSON the bus cannot decode is dropped (logged).
    pub async fn drain_once(&self, bus: &dyn EventBus) -> Result<usize, DrainError> {
        match self.db.dialect {
            Dialect::Postgres => self.drain_locked(bus).await,
            Dialect::Sqlite => self.drain_single(bus).await,
        }
    }

    /// PostgreSQL: the batch stays locked (other replicas skip it) until
    /// its sent rows are deleted and the transaction commits.
    async fn drain_locked(&self, bus: &dyn EventBus) -> Result<usize, DrainError> {
        let mut tx = self.db.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id, topic, payload FROM event_outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH as i64)
        .fetch_all(&mut *tx)
        .await?;
        let mut sent = 0;
        let mut failed = None;
        for row in rows.iter().map(staged).collect::<Result<Vec<_>, _>>()? {
            match send(bus, &row).await {
                Ok(()) => {
                    delete(&mut *tx, row.id).await?;
                    sent += 1;
                }
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        tx.commit().await?;
        match failed {
            None => Ok(sent),
            Some(error) => Err(DrainError::Bus { sent, error }),
        }
    }

    /// SQLite: read, then publish and delete row by row, holding the one
    /// connection only for each statement.
    async fn drain_single(&self, bus: &dyn EventBus) -> Result<usize, DrainError> {
        let rows = sqlx::query("SELECT id, topic, payload FROM event_outbox ORDER BY id LIMIT $1")
            .bind(BATCH as i64)
            .fetch_all(&self.db.pool)
            .await?;
        let mut sent = 0;
        for row in rows.iter().map(staged).collect::<Result<Vec<_>, _>>()? {
            if let Err(error) = send(bus, &row).await {
                return Err(DrainError::Bus { sent, error });
            }
            delete(&self.db.pool, row.id).await?;
            sent += 1;
        }
        Ok(sent)
    }

    /// Starts the drain task of this outbox on `bus`: a pass at once (rows
    /// a previous process left), then one whenever a row is staged here,
    /// every `poll`, and after each backoff while the bus is unavailable;
    /// it ends with `shutdown`.
    pub fn start(
        self: &Arc<Self>,
        bus: Arc<dyn EventBus>,
        poll: Duration,
        shutdown: ShutdownSignal,
    ) -> tokio::task::JoinHandle<()> {
        let outbox = self.clone();
        let poll = poll.max(Duration::from_millis(10));
        tokio::spawn(async move { outbox.run(bus, poll, shutdown).await })
    }

    async fn run(
        self: Arc<Self>,
        bus: Arc<dyn EventBus>,
        poll: Duration,
        shutdown: ShutdownSignal,
    ) {
        let mut backoff = FIRST_BACKOFF;
        let mut failing = false;
        loop {
            if shutdown.is_triggered() {
                return;
            }
            let wait = match self.drain_once(bus.as_ref()).await {
                Ok(sent) => {
                    if failing {
                        tracing::info!(sent, "event outbox: the bus accepts events again");
                        failing = false;
                    }
                    backoff = FIRST_BACKOFF;
                    if sent >= BATCH {
                        self.recount().await;
                        continue;
                    }
                    // The batch was the whole table; rows staged since woke us.
                    self.pending.store(0, Ordering::Relaxed);
                    None
                }
                Err(err) => {
                    self.recount().await;
                    if failing {
                        tracing::debug!(error = %err, pending = self.pending(), "event outbox: still waiting");
                    } else {
                        tracing::warn!(error = %err, pending = self.pending(), "event outbox: events wait for the bus (retrying with backoff)");
                        failing = true;
                    }
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    Some(wait)
                }
            };
            let stop = shutdown.clone();
            match wait {
                // Failing: a new row must not shorten the backoff.
                Some(wait) => tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait() => return,
                },
                None => tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = stop.wait() => return,
                },
            }
        }
    }

    async fn recount(&self) {
        if let Err(err) = self.count().await {
            tracing::debug!(error = %err, "event outbox: cannot count the waiting rows");
        }
    }
}

fn staged(row: &sqlx::any::AnyRow) -> Result<Staged, sqlx::Error> {
    Ok(Staged {
        id: row.try_get("id")?,
        topic: row.try_get("topic")?,
        payload: row.try_get("payload")?,
    })
}

/// Publishes one row. A row the bus cannot decode (it can never be sent)
/// counts as sent, so it is deleted rather than holding the queue forever.
async fn send(bus: &dyn EventBus, row: &Staged) -> Result<(), EventError> {
    match publish_json_bounded(bus, &row.topic, &row.payload).await {
        Err(EventError::Decode(detail)) => {
            tracing::error!(id = row.id, topic = %row.topic, payload = %row.payload, %detail, "event outbox: undecodable event dropped");
            Ok(())
        }
        other => other,
    }
}

async fn delete<'e, E>(executor: E, id: i64) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    sqlx::query("DELETE FROM event_outbox WHERE id = $1")
        .bind(id)
        .execute(executor)
        .await?;
    Ok(())
}

/// The outboxes of one process, one per database URL: every role naming
/// the same database shares its outbox and its one drain task. Also the
/// collector of the [`PENDING_METRIC`] gauge (their sum). Clones share the
/// set.
#[derive(Debug, Clone, Default)]
pub struct Outboxes {
    open: Arc<Mutex<HashMap<String, Arc<Outbox>>>>,
}

impl Outboxes {
    /// The outbox of `url` (whose pool is `db`), its drain started on
    /// `bus` on first use. The second return is true when it was created
    /// now.
    pub fn open(
        &self,
        url: &str,
        db: &Database,
        bus: &Arc<dyn EventBus>,
        poll: Duration,
        shutdown: &ShutdownSignal,
    ) -> (Arc<Outbox>, bool) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(outbox) = open.get(url) {
            return (outbox.clone(), false);
        }
        let outbox = Outbox::new(db.clone());
        outbox.start(bus.clone(), poll, shutdown.clone());
        open.insert(url.to_string(), outbox.clone());
        (outbox, true)
    }

    /// How many outboxes are open.
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows waiting in every outbox, as their drains last saw them.
    pub fn pending(&self) -> i64 {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.values().map(|o| o.pending()).sum()
    }
}

impl Collector for Outboxes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        let family = encoder.encode_descriptor(
            PENDING_METRIC,
            "Events written by the registry and the feature store that the bus has not accepted yet (rows of their outboxes).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        prometheus_client::metrics::gauge::ConstGauge::new(self.pending()).encode(family)
    }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
