//! Versions and their files.
//!
//! A version's number is given when its upload commits, not when it starts:
//! an upload in progress holds a provisional negative slot, so an upload that
//! is refused or abandoned never takes a number, and the ready versions of a
//! model are numbered 1, 2, 3... without gaps.

use std::collections::{HashMap, HashSet};

use mlserve_proto::registry::pb;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{not_found_model, now_us, Store};
use crate::error::{RegistryError, Result};

/// What a new version says about itself (files aside).
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    /// Free text.
    pub description: String,
    /// Training run, dataset snapshot, code version.
    pub lineage: pb::Lineage,
    /// Validation scores.
    pub metrics: HashMap<String, f64>,
    /// Tags.
    pub tags: HashMap<String, String>,
    /// Who creates it.
    pub created_by: String,
}

/// A version row in `pending_upload`, and where its files go.
#[derive(Debug, Clone)]
pub struct PendingVersion {
    /// Its provisional slot (negative, never a version number); the number
    /// comes with [`Store::commit_version`].
    pub slot: i64,
    /// Object-store prefix of its files (`models/<name>/upload/<upload id>`).
    pub prefix: String,
}

/// One stored file of a version.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRow {
    /// Path inside the version.
    pub path: String,
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// Object key, relative to the store's prefix.
    pub object_key: String,
}

fn lineage_json(lineage: &pb::Lineage) -> String {
    serde_json::json!({
        "training_run": lineage.training_run,
        "dataset_snapshot": lineage.dataset_snapshot,
        "code_version": lineage.code_version,
    })
    .to_string()
}

fn lineage_from_json(text: &str) -> pb::Lineage {
    let value: HashMap<String, String> = serde_json::from_str(text).unwrap_or_default();
    let get = |k: &str| value.get(k).cloned().unwrap_or_default();
    pb::Lineage {
        training_run: get("training_run"),
        dataset_snapshot: get("dataset_snapshot"),
        code_version: get("code_version"),
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

fn not_found_version(name: &str, version: u64) -> RegistryError {
    RegistryError::NotFound(format!("model '{name}' has no ready version {version}"))
}

/// A version from its row ([`VERSION_COLUMNS`]), files and aliases.
fn version_from_row(
    row: &AnyRow,
    files: Vec<pb::VersionFile>,
    aliases: Vec<String>,
) -> Result<pb::ModelVersion> {
    let status = match row.try_get::<String, _>("status")?.as_str() {
        "ready" => pb::VersionStatus::Ready,
        "pending_upload" => pb::VersionStatus::PendingUpload,
        _ => pb::VersionStatus::Failed,
    };
    Ok(pb::ModelVersion {
        version: row.try_get::<i64, _>("version")? as u64,
        status: status as i32,
        description: row.try_get("description")?,
        files,
        lineage: Some(lineage_from_json(&row.try_get::<String, _>("lineage")?)),
        metrics: serde_json::from_str(&row.try_get::<String, _>("metrics")?).unwrap_or_default(),
        tags: serde_json::from_str(&row.try_get::<String, _>("tags")?).unwrap_or_default(),
        created_by: row.try_get("created_by")?,
        created_at_us: row.try_get("created_at")?,
        aliases,
        name: row.try_get("model")?,
    })
}

const VERSION_COLUMNS: &str =
    "model, version, status, description, lineage, metrics, tags, created_by, created_at";

impl Store {
    /// Records an upload of `name` in progress as a `pending_upload` row in
    /// a new provisional slot (below every slot the model used).
    pub async fn begin_version(
        &self,
        name: &str,
        new: &NewVersion,
        upload_id: &str,
    ) -> Result<PendingVersion> {
        let mut tx = self.lock_model(name).await?;
        let min: Option<i64> =
            sqlx::query("SELECT MIN(version) AS min FROM registry_versions WHERE model = $1")
                .bind(name)
                .fetch_one(&mut *tx)
                .await?
                .try_get("min")?;
        let slot = min.unwrap_or(0).min(0) - 1;
        let prefix = format!("models/{name}/upload/{upload_id}");
        let now = now_us();
        sqlx::query(
            "INSERT INTO registry_versions (model, version, status, description, lineage, metrics, tags, storage_prefix, created_by, created_at, updated_at) \
             VALUES ($1, $2, 'pending_upload', $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(name)
        .bind(slot)
        .bind(&new.description)
        .bind(lineage_json(&new.lineage))
        .bind(json(&new.metrics))
        .bind(json(&new.tags))
        .bind(&prefix)
        .bind(&new.created_by)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PendingVersion { slot, prefix })
    }

    /// Records the files and turns the upload in `slot` into the model's next
    /// version, `ready`, atomically; returns the version as committed, read
    /// inside the transaction, so the answer needs no read after the commit
    /// (a database lost between both would answer 503 for a committed
    /// version, and a retry would register a second one). Refuses when the
    /// row is no longer pending (the collector failed it).
    pub async fn commit_version(
        &self,
        name: &str,
        slot: i64,
        files: &[FileRow],
    ) -> Result<pb::ModelVersion> {
        let gone = || {
            RegistryError::Conflict(format!(
                "the upload of '{name}' is no longer pending (it took longer than registry.gc_grace or the model was deleted)"
            ))
        };
        let mut tx = match self.lock_model(name).await {
            Err(RegistryError::NotFound(_)) => return Err(gone()),
            other => other?,
        };
        // Failed rows of older releases kept positive numbers: count them so
        // the new number is free.
        let max: Option<i64> = sqlx::query(
            "SELECT MAX(version) AS max FROM registry_versions WHERE model = $1 AND version > 0",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await?
        .try_get("max")?;
        let version = max.unwrap_or(0) + 1;
        let sql = format!(
            "UPDATE registry_versions SET version = $3, status = 'ready', updated_at = $4 WHERE model = $1 AND version = $2 AND status = 'pending_upload' \
             RETURNING {VERSION_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(slot)
            .bind(version)
            .bind(now_us())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(gone)?;
        for file in files {
            sqlx::query(
                "INSERT INTO registry_files (model, version, path, sha256, size, object_key) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(name)
            .bind(version)
            .bind(&file.path)
            .bind(&file.sha256)
            .bind(file.size as i64)
            .bind(&file.object_key)
            .execute(&mut *tx)
            .await?;
        }
        let mut listed: Vec<pb::VersionFile> = files
            .iter()
            .map(|f| pb::VersionFile {
                path: f.path.clone(),
                sha256: f.sha256.clone(),
                size: f.size,
            })
            .collect();
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        // Aliases name ready versions only, and this number was not one
        // until now (the model's lock is held): it has none yet.
        let committed = version_from_row(&row, listed, Vec::new())?;
        let event = mlserve_common::events::Event::ModelVersionRegistered {
            model: name.to_string(),
            version,
        };
        self.stage(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(committed)
    }

    /// Marks the pending upload in `slot` `failed` with the reason; the
    /// row keeps its provisional slot, so no version number is spent.
    pub async fn fail_version(&self, name: &str, slot: i64, message: &str) -> Result<()> {
        sqlx::query(
            "UPDATE registry_versions SET status = 'failed', status_message = $3, updated_at = $4 WHERE model = $1 AND version = $2 AND status = 'pending_upload'",
        )
        .bind(name)
        .bind(slot)
        .bind(message)
        .bind(now_us())
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    async fn complete_version(&self, row: &AnyRow) -> Result<pb::ModelVersion> {
        let name: String = row.try_get("model")?;
        let version: i64 = row.try_get("version")?;
        let files = sqlx::query(
            "SELECT path, sha256, size FROM registry_files WHERE model = $1 AND version = $2 ORDER BY path",
        )
        .bind(&name)
        .bind(version)
        .fetch_all(&self.db.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(pb::VersionFile {
                path: r.try_get("path")?,
                sha256: r.try_get("sha256")?,
                size: r.try_get::<i64, _>("size")? as u64,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
        let aliases = sqlx::query(
            "SELECT alias FROM registry_aliases WHERE model = $1 AND version = $2 ORDER BY alias",
        )
        .bind(&name)
        .bind(version)
        .fetch_all(&self.db.pool)
        .await?
        .iter()
        .map(|r| r.try_get("alias"))
        .collect::<Result<_, sqlx::Error>>()?;
        version_from_row(row, files, aliases)
    }

    /// Fails with the right `NotFound`: no model, or no such ready version.
    async fn missing_version(&self, name: &str, version: u64) -> RegistryError {
        match self.get_model(name).await {
            Ok(_) => not_found_version(name, version),
            Err(err) => err,
        }
    }

    /// One ready version.
    pub async fn get_version(&self, name: &str, version: u64) -> Result<pb::ModelVersion> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM registry_versions WHERE model = $1 AND version = $2 AND status = 'ready'"
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(version as i64)
            .fetch_optional(&self.db.pool)
            .await?;
        match row {
            Some(row) => self.complete_version(&row).await,
            None => Err(self.missing_version(name, version).await),
        }
    }

    /// One file of a ready version.
    pub async fn file(&self, name: &str, version: u64, path: &str) -> Result<FileRow> {
        let row = sqlx::query(
            "SELECT f.path, f.sha256, f.size, f.object_key FROM registry_files f JOIN registry_versions v ON v.model = f.model AND v.version = f.version \
             WHERE f.model = $1 AND f.version = $2 AND f.path = $3 AND v.status = 'ready'",
        )
        .bind(name)
        .bind(version as i64)
        .bind(path)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else {
            self.get_version(name, version).await?;
            return Err(RegistryError::NotFound(format!(
                "version {version} of '{name}' has no file '{path}'"
            )));
        };
        Ok(FileRow {
            path: row.try_get("path")?,
            sha256: row.try_get("sha256")?,
            size: row.try_get::<i64, _>("size")? as u64,
            object_key: row.try_get("object_key")?,
        })
    }

    /// Ready versions below `before` (0: from the newest), newest first.
    pub async fn list_versions(
        &self,
        name: &str,
        before: u64,
        limit: i64,
    ) -> Result<Vec<pb::ModelVersion>> {
        self.get_model(name).await?;
        let before = if before == 0 { i64::MAX } else { before as i64 };
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM registry_versions WHERE model = $1 AND status = 'ready' AND version < $2 ORDER BY version DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(name)
            .bind(before)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.complete_version(row).await?);
        }
        Ok(out)
    }

    /// Changes a ready version's description and tags.
    pub async fn update_version(
        &self,
        name: &str,
        version: u64,
        description: Option<&str>,
        set_tags: &HashMap<String, String>,
        remove_tags: &[String],
    ) -> Result<()> {
        let mut tx = self.lock_model(name).await?;
        let row = sqlx::query(
            "SELECT description, tags FROM registry_versions WHERE model = $1 AND version = $2 AND status = 'ready'",
        )
        .bind(name)
        .bind(version as i64)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found_version(name, version))?;
        let mut tags: HashMap<String, String> =
            serde_json::from_str(&row.try_get::<String, _>("tags")?).unwrap_or_default();
        for key in remove_tags {
            tags.remove(key);
        }
        tags.extend(set_tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        let description = match description {
            Some(d) => d.to_string(),
            None => row.try_get("description")?,
        };
        sqlx::query(
            "UPDATE registry_versions SET description = $3, tags = $4, updated_at = $5 WHERE model = $1 AND version = $2",
        )
        .bind(name)
        .bind(version as i64)
        .bind(description)
        .bind(json(&tags))
        .bind(now_us())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Fails every upload pending since before `cutoff_us`; returns them
    /// as (model, slot).
    pub async fn expire_pending(&self, cutoff_us: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT model, version FROM registry_versions WHERE status = 'pending_upload' AND created_at <= $1",
        )
        .bind(cutoff_us)
        .fetch_all(&self.db.pool)
        .await?;
        let mut out = Vec::new();
        for row in rows {
            let (model, slot): (String, i64) = (row.try_get("model")?, row.try_get("version")?);
            self.fail_version(&model, slot, "upload abandoned (collected)")
                .await?;
            out.push((model, slot));
        }
        Ok(out)
    }

    /// Storage prefixes that must be kept: ready versions and uploads still pending.
    pub async fn live_prefixes(&self) -> Result<HashSet<String>> {
        sqlx::query(
            "SELECT storage_prefix FROM registry_versions WHERE status IN ('ready', 'pending_upload')",
        )
        .fetch_all(&self.db.pool)
        .await?
        .iter()
        .map(|r| r.try_get("storage_prefix").map_err(RegistryError::from))
        .collect()
    }

    /// Whether the model exists (for callers that need only that).
    pub async fn model_exists(&self, name: &str) -> Result<()> {
        let found = sqlx::query("SELECT name FROM registry_models WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await?;
        found.map(|_| ()).ok_or_else(|| not_found_model(name))
    }
}
