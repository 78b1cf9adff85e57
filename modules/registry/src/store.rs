//! The registry's metadata in SQL (sqlx `Any`: SQLite or PostgreSQL), one
//! query text for both dialects. Models and tags live here; versions and
//! aliases in the submodules.

mod aliases;
mod versions;

use std::collections::HashMap;

use mlserve_common::events::{outbox, Event};
use mlserve_common::{Database, Dialect};
use mlserve_proto::registry::pb;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::error::{RegistryError, Result};

pub use versions::{FileRow, NewVersion, PendingVersion};

/// Largest page any list returns.
pub const MAX_PAGE: u32 = 1000;
/// Page size when the caller gives none.
pub const DEFAULT_PAGE: u32 = 100;

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The page size to use for a requested `limit`.
pub fn page_size(limit: u32) -> i64 {
    i64::from(match limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    })
}

/// The registry's tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
    /// Whether changes write their events to the outbox (`event_outbox`),
    /// in their own transaction.
    outbox: bool,
}

/// The `alias_moved` event of a recorded move.
pub fn alias_event(moved: &pb::AliasMove) -> Event {
    let version = |v: u64| (v != 0).then_some(v as i64);
    Event::AliasMoved {
        model: moved.name.clone(),
        alias: moved.alias.clone(),
        from: version(moved.from_version),
        to: version(moved.to_version),
        by: moved.actor.clone(),
        at: moved.at_us,
    }
}

fn not_found_model(name: &str) -> RegistryError {
    RegistryError::NotFound(format!("registered model '{name}' not found"))
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
fn like_pattern(query: &str) -> String {
    let mut out = String::from("%");
    for c in query.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl Store {
    /// The store over a migrated database.
    pub fn new(db: Database) -> Store {
        Store { db, outbox: false }
    }

    /// The same store, writing the events of its changes (version
    /// registered, alias moved) to the outbox in the changes' transactions.
    pub fn with_outbox(mut self) -> Store {
        self.outbox = true;
        self
    }

    /// Whether changes write their events to the outbox.
    pub fn writes_outbox(&self) -> bool {
        self.outbox
    }

    /// Writes `event` to the outbox inside `tx` (when this store has one).
    async fn stage(&self, tx: &mut Transaction<'static, Any>, event: &Event) -> Result<()> {
        if self.outbox {
            outbox::stage(tx, event).await?;
        }
        Ok(())
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Starts a transaction that holds the model's row lock (PostgreSQL; on
    /// SQLite an immediate transaction holds the database's write lock), so
    /// version numbers and alias moves of one model are serialized.
    async fn lock_model(&self, name: &str) -> Result<Transaction<'static, Any>> {
        let mut tx = self.db.begin_write().await?;
        let sql = match self.db.dialect {
            Dialect::Postgres => "SELECT name FROM registry_models WHERE name = $1 FOR UPDATE",
            Dialect::Sqlite => "SELECT name FROM registry_models WHERE name = $1",
        };
        let found = sqlx::query(sql).bind(name).fetch_optional(&mut *tx).await?;
        if found.is_none() {
            return Err(not_found_model(name));
        }
        Ok(tx)
    }

    /// Registers a model; `Conflict` when the name is taken.
    pub async fn create_model(
        &self,
        name: &str,
        description: &str,
        tags: &HashMap<String, String>,
    ) -> Result<()> {
        let now = now_us();
        let mut tx = self.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO registry_models (name, description, created_at, updated_at) VALUES ($1, $2, $3, $3)",
        )
        .bind(name)
        .bind(description)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(err) if is_unique_violation(&err) => {
                return Err(RegistryError::Conflict(format!(
                    "registered model '{name}' already exists"
                )))
            }
            other => other?,
        };
        set_model_tags(&mut tx, name, tags).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One model with its tags, latest ready version and aliases.
    pub async fn get_model(&self, name: &str) -> Result<pb::RegisteredModel> {
        let row = sqlx::query(
            "SELECT name, description, created_at, updated_at FROM registry_models WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or_else(|| not_found_model(name))?;
        self.complete_model(&row).await
    }

    async fn complete_model(&self, row: &AnyRow) -> Result<pb::RegisteredModel> {
        let name: String = row.try_get("name")?;
        let tags = sqlx::query("SELECT key, value FROM registry_model_tags WHERE model = $1")
            .bind(&name)
            .fetch_all(&self.db.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("value")?)))
            .collect::<Result<_, sqlx::Error>>()?;
        let latest: Option<i64> = sqlx::query(
            "SELECT MAX(version) AS latest FROM registry_versions WHERE model = $1 AND status = 'ready'",
        )
        .bind(&name)
        .fetch_one(&self.db.pool)
        .await?
        .try_get("latest")?;
        let aliases = self
            .aliases(&name)
            .await?
            .into_iter()
            .map(|a| (a.alias, a.version))
            .collect();
        Ok(pb::RegisteredModel {
            description: row.try_get("description")?,
            created_at_us: row.try_get("created_at")?,
            updated_at_us: row.try_get("updated_at")?,
            tags,
            latest_version: latest.unwrap_or(0) as u64,
            aliases,
            name,
        })
    }

    /// Models by name after `after`, whose name or description contains
    /// `query` (case-insensitive) and that carry every tag of `tags`.
    pub async fn list_models(
        &self,
        query: &str,
        tags: &HashMap<String, String>,
        after: &str,
        limit: i64,
    ) -> Result<Vec<pb::RegisteredModel>> {
        let mut sql = String::from(
            "SELECT m.name, m.description, m.created_at, m.updated_at FROM registry_models m WHERE m.name > $1",
        );
        let mut n = 1;
        if !query.is_empty() {
            n += 1;
            sql += &format!(
                " AND (LOWER(m.name) LIKE ${n} ESCAPE '\\' OR LOWER(m.description) LIKE ${n} ESCAPE '\\')"
            );
        }
        let mut tag_list: Vec<(&String, &String)> = tags.iter().collect();
        tag_list.sort();
        for _ in &tag_list {
            sql += &format!(
                " AND EXISTS (SELECT 1 FROM registry_model_tags t WHERE t.model = m.name AND t.key = ${} AND t.value = ${})",
                n + 1,
                n + 2
            );
            n += 2;
        }
        sql += &format!(" ORDER BY m.name LIMIT ${}", n + 1);
        let mut q = sqlx::query(&sql).bind(after);
        if !query.is_empty() {
            q = q.bind(like_pattern(query));
        }
        for (key, value) in tag_list {
            q = q.bind(key.as_str()).bind(value.as_str());
        }
        let rows = q.bind(limit).fetch_all(&self.db.pool).await?;
        let mut models = Vec::with_capacity(rows.len());
        for row in &rows {
            models.push(self.complete_model(row).await?);
        }
        Ok(models)
    }

    /// Replaces the description (when given) and sets/removes tags.
    pub async fn update_model(
        &self,
        name: &str,
        description: Option<&str>,
        set_tags: &HashMap<String, String>,
        remove_tags: &[String],
    ) -> Result<()> {
        let mut tx = self.lock_model(name).await?;
        if let Some(description) = description {
            sqlx::query("UPDATE registry_models SET description = $2 WHERE name = $1")
                .bind(name)
                .bind(description)
                .execute(&mut *tx)
                .await?;
        }
        for key in remove_tags {
            sqlx::query("DELETE FROM registry_model_tags WHERE model = $1 AND key = $2")
                .bind(name)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        set_model_tags(&mut tx, name, set_tags).await?;
        sqlx::query("UPDATE registry_models SET updated_at = $2 WHERE name = $1")
            .bind(name)
            .bind(now_us())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a model and everything it owns; returns its aliases as they
    /// were (alias, version), whose removal by `by` is announced (written
    /// to the outbox with the deletion, when the store has one).
    pub async fn delete_model(&self, name: &str, by: &str) -> Result<Vec<(String, u64)>> {
        let aliases = self.aliases(name).await?;
        let mut tx = self.lock_model(name).await?;
        let now = now_us();
        for alias in &aliases {
            let event = Event::AliasMoved {
                model: name.to_string(),
                alias: alias.alias.clone(),
                from: Some(alias.version as i64),
                to: None,
                by: by.to_string(),
                at: now,
            };
            self.stage(&mut tx, &event).await?;
        }
        for table in [
            "DELETE FROM registry_alias_history WHERE model = $1",
            "DELETE FROM registry_aliases WHERE model = $1",
            "DELETE FROM registry_files WHERE model = $1",
            "DELETE FROM registry_versions WHERE model = $1",
            "DELETE FROM registry_model_tags WHERE model = $1",
            "DELETE FROM registry_models WHERE name = $1",
        ] {
            sqlx::query(table).bind(name).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(aliases.into_iter().map(|a| (a.alias, a.version)).collect())
    }
}

async fn set_model_tags(
    tx: &mut Transaction<'static, Any>,
    name: &str,
    tags: &HashMap<String, String>,
) -> Result<()> {
    for (key, value) in tags {
        sqlx::query("DELETE FROM registry_model_tags WHERE model = $1 AND key = $2")
            .bind(name)
            .bind(key)
            .execute(&mut **tx)
            .await?;
        sqlx::query("INSERT INTO registry_model_tags (model, key, value) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(key)
            .bind(value)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
