//! Aliases and the history of their moves.

use mlserve_proto::registry::pb;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{now_us, Store};
use crate::error::{RegistryError, Result};

fn alias_from_row(row: &AnyRow) -> Result<pb::Alias> {
    Ok(pb::Alias {
        name: row.try_get("model")?,
        alias: row.try_get("alias")?,
        version: row.try_get::<i64, _>("version")? as u64,
        updated_by: row.try_get("updated_by")?,
        updated_at_us: row.try_get("updated_at")?,
    })
}

fn move_from_row(row: &AnyRow) -> Result<pb::AliasMove> {
    Ok(pb::AliasMove {
        id: row.try_get::<i64, _>("id")? as u64,
        name: row.try_get("model")?,
        alias: row.try_get("alias")?,
        from_version: row.try_get::<Option<i64>, _>("from_version")?.unwrap_or(0) as u64,
        to_version: row.try_get::<Option<i64>, _>("to_version")?.unwrap_or(0) as u64,
        actor: row.try_get("actor")?,
        at_us: row.try_get("at")?,
    })
}

async fn current(
    tx: &mut Transaction<'static, Any>,
    name: &str,
    alias: &str,
) -> Result<Option<i64>> {
    Ok(
        sqlx::query("SELECT version FROM registry_aliases WHERE model = $1 AND alias = $2")
            .bind(name)
            .bind(alias)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get("version"))
            .transpose()?,
    )
}

async fn record(
    tx: &mut Transaction<'static, Any>,
    name: &str,
    alias: &str,
    from: Option<i64>,
    to: Option<i64>,
    actor: &str,
    at: i64,
) -> Result<pb::AliasMove> {
    let row = sqlx::query(
        "INSERT INTO registry_alias_history (model, alias, from_version, to_version, actor, at) VALUES ($1, $2, $3, $4, $5, $6) \
         RETURNING id, model, alias, from_version, to_version, actor, at",
    )
    .bind(name)
    .bind(alias)
    .bind(from)
    .bind(to)
    .bind(actor)
    .bind(at)
    .fetch_one(&mut **tx)
    .await?;
    move_from_row(&row)
}

impl Store {
    /// Points `alias` at ready `version`, atomically with its history record.
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: u64,
        actor: &str,
    ) -> Result<pb::AliasMove> {
        let mut tx = self.lock_model(name).await?;
        let ready = sqlx::query(
            "SELECT version FROM registry_versions WHERE model = $1 AND version = $2 AND status = 'ready'",
        )
        .bind(name)
        .bind(version as i64)
        .fetch_optional(&mut *tx)
        .await?;
        if ready.is_none() {
            return Err(RegistryError::NotFound(format!(
                "cannot point alias '{alias}' at version {version} of '{name}': no such ready version"
            )));
        }
        let from = current(&mut tx, name, alias).await?;
        let now = now_us();
        if from.is_some() {
            sqlx::query(
                "UPDATE registry_aliases SET version = $3, updated_by = $4, updated_at = $5 WHERE model = $1 AND alias = $2",
            )
        } else {
            sqlx::query(
                "INSERT INTO registry_aliases (model, alias, version, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5)",
            )
        }
        .bind(name)
        .bind(alias)
        .bind(version as i64)
        .bind(actor)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let moved = record(&mut tx, name, alias, from, Some(version as i64), actor, now).await?;
        self.stage(&mut tx, &super::alias_event(&moved)).await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// Deletes `alias`, recording the move to nothing.
    pub async fn delete_alias(
        &self,
        name: &str,
        alias: &str,
        actor: &str,
    ) -> Result<pb::AliasMove> {
        let mut tx = self.lock_model(name).await?;
        let Some(from) = current(&mut tx, name, alias).await? else {
            return Err(RegistryError::NotFound(format!(
                "model '{name}' has no alias '{alias}'"
            )));
        };
        sqlx::query("DELETE FROM registry_aliases WHERE model = $1 AND alias = $2")
            .bind(name)
            .bind(alias)
            .execute(&mut *tx)
            .await?;
        let moved = record(&mut tx, name, alias, Some(from), None, actor, now_us()).await?;
        self.stage(&mut tx, &super::alias_event(&moved)).await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// One alias.
    pub async fn get_alias(&self, name: &str, alias: &str) -> Result<pb::Alias> {
        let row = sqlx::query(
            "SELECT model, alias, version, updated_by, updated_at FROM registry_aliases WHERE model = $1 AND alias = $2",
        )
        .bind(name)
        .bind(alias)
        .fetch_optional(&self.db.pool)
        .await?;
        match row {
            Some(row) => alias_from_row(&row),
            None => {
                self.model_exists(name).await?;
                Err(RegistryError::NotFound(format!(
                    "model '{name}' has no alias '{alias}'"
                )))
            }
        }
    }

    /// Every alias of a model, by name.
    pub async fn aliases(&self, name: &str) -> Result<Vec<pb::Alias>> {
        sqlx::query(
            "SELECT model, alias, version, updated_by, updated_at FROM registry_aliases WHERE model = $1 ORDER BY alias",
        )
        .bind(name)
        .fetch_all(&self.db.pool)
        .await?
        .iter()
        .map(alias_from_row)
        .collect()
    }

    /// Moves of a model's aliases (or one alias) after id `after`, oldest first.
    pub async fn alias_history(
        &self,
        name: &str,
        alias: &str,
        after: u64,
        limit: i64,
    ) -> Result<Vec<pb::AliasMove>> {
        self.model_exists(name).await?;
        let rows = sqlx::query(
            "SELECT id, model, alias, from_version, to_version, actor, at FROM registry_alias_history \
             WHERE model = $1 AND ($2 = '' OR alias = $2) AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(name)
        .bind(alias)
        .bind(after as i64)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(move_from_row).collect()
    }
}
