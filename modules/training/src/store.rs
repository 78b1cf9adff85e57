//! Workflows, runs, step instances, artifacts and metrics in SQL (SQLite or
//! PostgreSQL through the one `Database`). Every state change is written
//! here before anything acts on it, so a restarted role finds where each run
//! stood.

use std::collections::BTreeMap;

use mlserve_common::Database;
use sqlx::Row;

use crate::error::{Result, TrainingError};
use crate::spec::WorkflowSpec;
use crate::state::{RunState, StepState};

/// Microseconds since the Unix epoch, now (the registry's clock helper).
pub use mlserve_registry::store::now_us;

/// A stored workflow version.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRow {
    /// The definition.
    pub spec: WorkflowSpec,
    /// 1, 2, ... per name.
    pub version: i64,
    /// When it was applied (µs).
    pub created_ts: i64,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// `<workflow>-<8 hex>`.
    pub id: String,
    /// Workflow name.
    pub workflow: String,
    /// The workflow version it runs.
    pub workflow_version: i64,
    /// Where it stands.
    pub state: RunState,
    /// The resolved parameters.
    pub parameters: BTreeMap<String, String>,
    /// What submitted it: api, schedule, event or retry.
    pub trigger: String,
    /// The training node that drives it.
    pub owner: String,
    /// Why it ended the way it did.
    pub message: String,
    /// A cancel was asked for.
    pub cancel_requested: bool,
    /// Submitted (µs).
    pub created_ts: i64,
    /// First step started (µs).
    pub started_ts: Option<i64>,
    /// Ended (µs).
    pub finished_ts: Option<i64>,
}

/// One instance of a step (a fan-out step has one per item).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepRow {
    /// The run.
    pub run_id: String,
    /// Instance name: the step's, or `step(i)` for fan-out.
    pub name: String,
    /// The workflow step it instantiates.
    pub template: String,
    /// Fan-out index.
    pub idx: i64,
    /// Fan-out value.
    pub item: Option<String>,
    /// Where it stands.
    pub state: StepState,
    /// Attempts started so far.
    pub attempt: i64,
    /// When a retrying step starts again (µs).
    pub next_attempt_ts: Option<i64>,
    /// The current or last attempt's start (µs).
    pub started_ts: Option<i64>,
    /// Ended (µs).
    pub finished_ts: Option<i64>,
    /// The last attempt's exit code.
    pub exit_code: Option<i64>,
    /// Why it failed, was skipped or retried.
    pub message: String,
    /// Output parameters.
    pub outputs: BTreeMap<String, String>,
    /// Process group of the running attempt.
    pub pgid: Option<i64>,
    /// Start time of that group's leader (clock ticks since boot).
    pub proc_start: Option<i64>,
}

/// An artifact a step produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactRow {
    /// The producing step instance.
    pub step: String,
    /// Its output name (`logs/stdout`, `logs/stderr` for the logs).
    pub name: String,
    /// Where it is, relative to the store's prefix.
    pub object_key: String,
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Bytes.
    pub size: i64,
}

/// The training tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

fn from_json<T: serde::de::DeserializeOwned + Default>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_default()
}

impl Store {
    /// Wraps the database (migrated on connect).
    pub fn new(db: Database) -> Store {
        Store { db }
    }

    /// Stores `spec` as the workflow's next version, unless it equals the
    /// latest one; returns the version that holds it and whether it is new.
    pub async fn put_workflow(&self, spec: &WorkflowSpec) -> Result<(i64, bool)> {
        if let Some(latest) = self.workflow(&spec.name, None).await? {
            if latest.spec == *spec {
                return Ok((latest.version, false));
            }
        }
        // BEGIN IMMEDIATE on SQLite: the read of MAX and the insert are one write.
        let mut tx = self.db.begin_write().await?;
        let next: i64 = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM training_workflows WHERE name = $1",
        )
        .bind(&spec.name)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        sqlx::query(
            "INSERT INTO training_workflows (name, version, spec, created_ts) VALUES ($1, $2, $3, $4)",
        )
        .bind(&spec.name)
        .bind(next)
        .bind(json(spec))
        .bind(now_us())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((next, true))
    }

    /// A workflow's version (the latest when `version` is none).
    pub async fn workflow(&self, name: &str, version: Option<i64>) -> Result<Option<WorkflowRow>> {
        let row = match version {
            Some(v) => {
                sqlx::query(
                    "SELECT spec, version, created_ts FROM training_workflows WHERE name = $1 AND version = $2",
                )
                .bind(name)
                .bind(v)
                .fetch_optional(&self.db.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT spec, version, created_ts FROM training_workflows WHERE name = $1 \
                     ORDER BY version DESC LIMIT 1",
                )
                .bind(name)
                .fetch_optional(&self.db.pool)
                .await?
            }
        };
        row.map(|r| workflow_row(&r)).transpose()
    }

    /// The latest version of every workflow, by name.
    pub async fn workflows(&self) -> Result<Vec<WorkflowRow>> {
        let rows = sqlx::query(
            "SELECT w.spec, w.version, w.created_ts FROM training_workflows w \
             JOIN (SELECT name, MAX(version) AS v FROM training_workflows GROUP BY name) m \
             ON w.name = m.name AND w.version = m.v ORDER BY w.name",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(workflow_row).collect()
    }

    /// Inserts a new run and the instances of its steps, in one transaction.
    pub async fn create_run(&self, run: &RunRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO training_runs (id, workflow, workflow_version, state, parameters, \
             trigger_kind, owner, message, cancel_requested, created_ts, started_ts, finished_ts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&run.id)
        .bind(&run.workflow)
        .bind(run.workflow_version)
        .bind(run.state.as_str())
        .bind(json(&run.parameters))
        .bind(&run.trigger)
        .bind(&run.owner)
        .bind(&run.message)
        .bind(i64::from(run.cancel_requested))
        .bind(run.created_ts)
        .bind(run.started_ts)
        .bind(run.finished_ts)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// One run.
    pub async fn run(&self, id: &str) -> Result<RunRow> {
        let row = sqlx::query(&format!("{RUN_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| TrainingError::NotFound(format!("no run '{id}'")))?;
        run_row(&row)
    }

    /// Runs, newest first, of one workflow or all.
    pub async fn runs(&self, workflow: Option<&str>, limit: i64) -> Result<Vec<RunRow>> {
        let rows = match workflow {
            Some(w) => {
                sqlx::query(&format!(
                    "{RUN_COLUMNS} WHERE workflow = $1 ORDER BY created_ts DESC LIMIT $2"
                ))
                .bind(w)
                .bind(limit)
                .fetch_all(&self.db.pool)
                .await?
            }
            None => {
                sqlx::query(&format!("{RUN_COLUMNS} ORDER BY created_ts DESC LIMIT $1"))
                    .bind(limit)
                    .fetch_all(&self.db.pool)
                    .await?
            }
        };
        rows.iter().map(run_row).collect()
    }

    /// The unfinished runs `owner` drives.
    pub async fn active_runs(&self, owner: &str) -> Result<Vec<RunRow>> {
        let rows = sqlx::query(&format!(
            "{RUN_COLUMNS} WHERE owner = $1 AND state IN ('pending', 'running') ORDER BY created_ts"
        ))
        .bind(owner)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(run_row).collect()
    }

    /// Writes a run's state, message and times.
    pub async fn update_run(&self, run: &RunRow) -> Result<()> {
        sqlx::query(
            "UPDATE training_runs SET state = $2, message = $3, started_ts = $4, finished_ts = $5 \
             WHERE id = $1",
        )
        .bind(&run.id)
        .bind(run.state.as_str())
        .bind(&run.message)
        .bind(run.started_ts)
        .bind(run.finished_ts)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Marks a cancel request; false when the run had already ended.
    pub async fn request_cancel(&self, id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE training_runs SET cancel_requested = 1 WHERE id = $1 AND state IN ('pending', 'running')",
        )
        .bind(id)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes the instances that did not succeed, so a retried run runs them anew.
    pub async fn reset_unfinished_steps(&self, run_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM training_steps WHERE run_id = $1 AND state <> 'succeeded'")
            .bind(run_id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Opens an ended run again under `owner` (a retry).
    pub async fn reopen_run(&self, run: &RunRow, owner: &str) -> Result<()> {
        sqlx::query(
            "UPDATE training_runs SET state = $2, message = $3, finished_ts = NULL, \
             cancel_requested = 0, owner = $4 WHERE id = $1",
        )
        .bind(&run.id)
        .bind(run.state.as_str())
        .bind(&run.message)
        .bind(owner)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Every step instance of a run, in creation order.
    pub async fn steps(&self, run_id: &str) -> Result<Vec<StepRow>> {
        let rows = sqlx::query(
            "SELECT run_id, name, template, idx, item, state, attempt, next_attempt_ts, started_ts, \
             finished_ts, exit_code, message, outputs, pgid, proc_start FROM training_steps \
             WHERE run_id = $1 ORDER BY COALESCE(started_ts, 9223372036854775807), name",
        )
        .bind(run_id)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(step_row).collect()
    }

    /// Inserts or replaces a step instance.
    pub async fn put_step(&self, step: &StepRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO training_steps (run_id, name, template, idx, item, state, attempt, \
             next_attempt_ts, started_ts, finished_ts, exit_code, message, outputs, pgid, proc_start) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (run_id, name) DO UPDATE SET state = excluded.state, \
             attempt = excluded.attempt, next_attempt_ts = excluded.next_attempt_ts, \
             started_ts = excluded.started_ts, finished_ts = excluded.finished_ts, \
             exit_code = excluded.exit_code, message = excluded.message, \
             outputs = excluded.outputs, pgid = excluded.pgid, proc_start = excluded.proc_start",
        )
        .bind(&step.run_id)
        .bind(&step.name)
        .bind(&step.template)
        .bind(step.idx)
        .bind(&step.item)
        .bind(step.state.as_str())
        .bind(step.attempt)
        .bind(step.next_attempt_ts)
        .bind(step.started_ts)
        .bind(step.finished_ts)
        .bind(step.exit_code)
        .bind(&step.message)
        .bind(json(&step.outputs))
        .bind(step.pgid)
        .bind(step.proc_start)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Records an artifact (a retried step overwrites its earlier record).
    pub async fn put_artifact(&self, run_id: &str, artifact: &ArtifactRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO training_artifacts (run_id, step, name, object_key, sha256, size, created_ts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (run_id, step, name) DO UPDATE SET \
             object_key = excluded.object_key, sha256 = excluded.sha256, size = excluded.size, \
             created_ts = excluded.created_ts",
        )
        .bind(run_id)
        .bind(&artifact.step)
        .bind(&artifact.name)
        .bind(&artifact.object_key)
        .bind(&artifact.sha256)
        .bind(artifact.size)
        .bind(now_us())
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// A run's artifacts.
    pub async fn artifacts(&self, run_id: &str) -> Result<Vec<ArtifactRow>> {
        let rows = sqlx::query(
            "SELECT step, name, object_key, sha256, size FROM training_artifacts WHERE run_id = $1 \
             ORDER BY created_ts, step, name",
        )
        .bind(run_id)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ArtifactRow {
                    step: r.try_get(0)?,
                    name: r.try_get(1)?,
                    object_key: r.try_get(2)?,
                    sha256: r.try_get(3)?,
                    size: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Records a metric of a step.
    pub async fn put_metric(&self, run_id: &str, step: &str, name: &str, value: f64) -> Result<()> {
        sqlx::query(
            "INSERT INTO training_metrics (run_id, step, name, value) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (run_id, step, name) DO UPDATE SET value = excluded.value",
        )
        .bind(run_id)
        .bind(step)
        .bind(name)
        .bind(value)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// A run's metrics as (step, name, value).
    pub async fn metrics(&self, run_id: &str) -> Result<Vec<(String, String, f64)>> {
        let rows = sqlx::query(
            "SELECT step, name, value FROM training_metrics WHERE run_id = $1 ORDER BY step, name",
        )
        .bind(run_id)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Records that a schedule fired `slot`; false when it had already fired
    /// (by this process before a restart, or by another replica).
    pub async fn claim_slot(
        &self,
        workflow: &str,
        schedule: i64,
        slot: i64,
        run: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO training_schedule_slots (workflow, schedule, slot_ts, run_id) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(workflow)
        .bind(schedule)
        .bind(slot)
        .bind(run)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Asks for one follow-up run of `workflow` once its event run ends;
    /// false when one is already asked for (events coalesce into it).
    pub async fn request_followup(
        &self,
        workflow: &str,
        parameters: &BTreeMap<String, crate::spec::Scalar>,
    ) -> Result<bool> {
        let text = serde_json::to_string(parameters)
            .map_err(|e| TrainingError::Internal(format!("follow-up parameters: {e}")))?;
        let done = sqlx::query(
            "INSERT INTO training_followups (workflow, parameters, requested_ts) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(workflow)
        .bind(text)
        .bind(now_us())
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The workflows with a follow-up run asked for.
    pub async fn followups(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT workflow FROM training_followups ORDER BY requested_ts")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(Into::into))
            .collect()
    }

    /// Takes the follow-up of `workflow` (once, across replicas): its
    /// parameters, or none when another took it first.
    pub async fn take_followup(
        &self,
        workflow: &str,
    ) -> Result<Option<BTreeMap<String, crate::spec::Scalar>>> {
        let Some(row) =
            sqlx::query("SELECT parameters FROM training_followups WHERE workflow = $1")
                .bind(workflow)
                .fetch_optional(&self.db.pool)
                .await?
        else {
            return Ok(None);
        };
        let text: String = row.try_get(0)?;
        let taken = sqlx::query("DELETE FROM training_followups WHERE workflow = $1")
            .bind(workflow)
            .execute(&self.db.pool)
            .await?;
        if taken.rows_affected() != 1 {
            return Ok(None);
        }
        let parameters = serde_json::from_str(&text)
            .map_err(|e| TrainingError::Internal(format!("follow-up parameters: {e}")))?;
        Ok(Some(parameters))
    }

    /// The last slot a schedule fired.
    pub async fn last_slot(&self, workflow: &str, schedule: i64) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MAX(slot_ts) FROM training_schedule_slots WHERE workflow = $1 AND schedule = $2",
        )
        .bind(workflow)
        .bind(schedule)
        .fetch_one(&self.db.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }
}

const RUN_COLUMNS: &str =
    "SELECT id, workflow, workflow_version, state, parameters, trigger_kind, \
     owner, message, cancel_requested, created_ts, started_ts, finished_ts FROM training_runs";

fn workflow_row(row: &sqlx::any::AnyRow) -> Result<WorkflowRow> {
    let text: String = row.try_get(0)?;
    let spec = serde_json::from_str(&text)
        .map_err(|e| TrainingError::Internal(format!("stored workflow does not parse: {e}")))?;
    Ok(WorkflowRow {
        spec,
        version: row.try_get(1)?,
        created_ts: row.try_get(2)?,
    })
}

fn run_row(row: &sqlx::any::AnyRow) -> Result<RunRow> {
    let state: String = row.try_get(3)?;
    let parameters: String = row.try_get(4)?;
    Ok(RunRow {
        id: row.try_get(0)?,
        workflow: row.try_get(1)?,
        workflow_version: row.try_get(2)?,
        state: RunState::parse(&state)?,
        parameters: from_json(&parameters),
        trigger: row.try_get(5)?,
        owner: row.try_get(6)?,
        message: row.try_get(7)?,
        cancel_requested: row.try_get::<i64, _>(8)? != 0,
        created_ts: row.try_get(9)?,
        started_ts: row.try_get(10)?,
        finished_ts: row.try_get(11)?,
    })
}

fn step_row(row: &sqlx::any::AnyRow) -> Result<StepRow> {
    let state: String = row.try_get(5)?;
    let outputs: String = row.try_get(12)?;
    Ok(StepRow {
        run_id: row.try_get(0)?,
        name: row.try_get(1)?,
        template: row.try_get(2)?,
        idx: row.try_get(3)?,
        item: row.try_get(4)?,
        state: StepState::parse(&state)?,
        attempt: row.try_get(6)?,
        next_attempt_ts: row.try_get(7)?,
        started_ts: row.try_get(8)?,
        finished_ts: row.try_get(9)?,
        exit_code: row.try_get(10)?,
        message: row.try_get(11)?,
        outputs: from_json(&outputs),
        pgid: row.try_get(13)?,
        proc_start: row.try_get(14)?,
    })
}
