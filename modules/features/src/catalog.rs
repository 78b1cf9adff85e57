//! Definitions: entities and feature views, validated, versioned in SQL
//! (every version kept), with Feast-like compatibility rules.

use std::collections::HashMap;

use mlserve_common::Database;
use mlserve_proto::features::{ApplyRequest, Entity, FeatureView};
use sqlx::Row as _;

use crate::error::{invalid, FeaturesError, Result};
use crate::values::{now_micros, DTYPES};

/// Definition kinds as stored in `feature_definitions.kind`.
pub const ENTITY: &str = "entity";
/// Feature views.
pub const FEATURE_VIEW: &str = "feature_view";
/// Model preprocessing pipelines.
pub const PIPELINE: &str = "pipeline";

/// The current version of every definition.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Entities by name.
    pub entities: HashMap<String, Entity>,
    /// Feature views by name.
    pub views: HashMap<String, FeatureView>,
}

impl Catalog {
    /// A view by name, or `NotFound`.
    pub fn view(&self, name: &str) -> Result<&FeatureView> {
        self.views
            .get(name)
            .ok_or_else(|| FeaturesError::NotFound(format!("feature view '{name}' not found")))
    }
}

/// Latest version of every definition of `kind`: (name, version, spec JSON).
pub async fn load_kind(db: &Database, kind: &str) -> Result<Vec<(String, i64, String)>> {
    let rows = sqlx::query(
        "SELECT d.name, d.version, d.spec FROM feature_definitions d \
         WHERE d.kind = $1 AND d.version = (SELECT MAX(e.version) FROM feature_definitions e \
         WHERE e.kind = d.kind AND e.name = d.name) ORDER BY d.name",
    )
    .bind(kind)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// Reads the catalog from SQL.
pub async fn load(db: &Database) -> Result<Catalog> {
    let mut catalog = Catalog::default();
    for (name, _, spec) in load_kind(db, ENTITY).await? {
        let entity: Entity = serde_json::from_str(&spec)
            .map_err(|e| FeaturesError::Internal(format!("stored entity '{name}': {e}")))?;
        catalog.entities.insert(name, entity);
    }
    for (name, _, spec) in load_kind(db, FEATURE_VIEW).await? {
        let view: FeatureView = serde_json::from_str(&spec)
            .map_err(|e| FeaturesError::Internal(format!("stored view '{name}': {e}")))?;
        catalog.views.insert(name, view);
    }
    Ok(catalog)
}

/// Stores one new version of a definition.
pub async fn store(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    kind: &str,
    name: &str,
    version: i64,
    spec: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO feature_definitions (kind, name, version, spec, created_ts) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(kind)
    .bind(name)
    .bind(version)
    .bind(spec)
    .bind(now_micros())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} name '{name}' must be 1-128 letters, digits, '_', '-' or '.'"
        )))
    }
}

fn validate_entity(entity: &Entity) -> Result<()> {
    check_name(&entity.name, "entity")?;
    if entity.join_keys.is_empty() {
        return Err(invalid(format!(
            "entity '{}' has no join_keys",
            entity.name
        )));
    }
    for key in &entity.join_keys {
        check_name(key, "join key")?;
    }
    if !["int64", "string"].contains(&entity.value_type.as_str()) {
        return Err(invalid(format!(
            "entity '{}': value_type must be int64 or string, not '{}'",
            entity.name, entity.value_type
        )));
    }
    Ok(())
}

fn validate_view(view: &FeatureView, entities: &HashMap<String, Entity>) -> Result<()> {
    check_name(&view.name, "feature view")?;
    if view.entities.is_empty() {
        return Err(invalid(format!(
            "feature view '{}' has no entities",
            view.name
        )));
    }
    let mut keys = Vec::new();
    for name in &view.entities {
        let entity = entities.get(name).ok_or_else(|| {
            invalid(format!(
                "feature view '{}' names unknown entity '{name}'",
                view.name
            ))
        })?;
        keys.extend(entity.join_keys.iter().cloned());
    }
    if view.fields.is_empty() {
        return Err(invalid(format!(
            "feature view '{}' has no fields",
            view.name
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for field in &view.fields {
        check_name(&field.name, "field")?;
        if !DTYPES.contains(&field.dtype.as_str()) {
            return Err(invalid(format!(
                "field '{}.{}': dtype must be one of {DTYPES:?}, not '{}'",
                view.name, field.name, field.dtype
            )));
        }
        if !seen.insert(&field.name) || keys.contains(&field.name) {
            return Err(invalid(format!(
                "feature view '{}': field '{}' is duplicated or is a join key",
                view.name, field.name
            )));
        }
    }
    if view.ttl_secs < 0 {
        return Err(invalid(format!(
            "feature view '{}': ttl_secs < 0",
            view.name
        )));
    }
    Ok(())
}

/// Why changing `old` into `new` breaks users, if it does. `in_use` are the
/// `view:feature` references of registered pipelines.
fn view_conflict(old: &FeatureView, new: &FeatureView, in_use: &[String]) -> Option<String> {
    if old.entities != new.entities {
        return Some(format!(
            "feature view '{}': entities cannot change ({:?} -> {:?}); create a new view",
            new.name, old.entities, new.entities
        ));
    }
    for field in &old.fields {
        match new.fields.iter().find(|f| f.name == field.name) {
            Some(f) if f.dtype != field.dtype => {
                return Some(format!(
                    "feature view '{}': field '{}' cannot change type ({} -> {}); add a new field",
                    new.name, field.name, field.dtype, f.dtype
                ))
            }
            None if in_use.contains(&format!("{}:{}", new.name, field.name)) => {
                return Some(format!(
                    "feature view '{}': field '{}' is used by a pipeline and cannot be removed",
                    new.name, field.name
                ))
            }
            _ => {}
        }
    }
    None
}

/// One planned change of an apply.
pub struct Change {
    /// entity | feature_view.
    pub kind: &'static str,
    /// Name of the object.
    pub name: String,
    /// The version to store (unchanged objects are not stored).
    pub version: i64,
    /// The spec as JSON.
    pub spec: String,
    /// created | updated | unchanged.
    pub verb: &'static str,
}

/// Validates an apply against the current catalog and plans its changes;
/// nothing is written when any object is invalid or incompatible.
pub fn plan(current: &Catalog, request: ApplyRequest, in_use: &[String]) -> Result<Vec<Change>> {
    let mut entities = current.entities.clone();
    let mut changes = Vec::new();
    for mut entity in request.entities {
        validate_entity(&entity)?;
        let old = current.entities.get(&entity.name);
        if let Some(old) = old {
            if old.join_keys != entity.join_keys || old.value_type != entity.value_type {
                return Err(FeaturesError::Conflict(format!(
                    "entity '{}': join_keys and value_type cannot change ({:?} {} -> {:?} {})",
                    entity.name, old.join_keys, old.value_type, entity.join_keys, entity.value_type
                )));
            }
        }
        let old = old.map(|o| (o, o.version));
        let name = entity.name.clone();
        changes.push(versioned(ENTITY, old, &mut entity, name, |e, v| {
            e.version = v
        })?);
        entities.insert(entity.name.clone(), entity);
    }
    for mut view in request.feature_views {
        validate_view(&view, &entities)?;
        let old = current.views.get(&view.name);
        if let Some(reason) = old.and_then(|old| view_conflict(old, &view, in_use)) {
            return Err(FeaturesError::Conflict(reason));
        }
        let old = old.map(|o| (o, o.version));
        let name = view.name.clone();
        changes.push(versioned(FEATURE_VIEW, old, &mut view, name, |f, v| {
            f.version = v
        })?);
    }
    Ok(changes)
}

/// The change that stores `new` (already checked compatible with `old` at
/// its version): version 1 when created, the same when identical, the next
/// when changed.
fn versioned<T: PartialEq + serde::Serialize>(
    kind: &'static str,
    old: Option<(&T, i64)>,
    new: &mut T,
    name: String,
    set_version: fn(&mut T, i64),
) -> Result<Change> {
    let (verb, number) = match old {
        None => ("created", 1),
        Some((old, version)) => {
            set_version(new, version);
            if *old == *new {
                ("unchanged", version)
            } else {
                ("updated", version + 1)
            }
        }
    };
    set_version(new, number);
    Ok(Change {
        kind,
        name,
        version: number,
        spec: to_json(&*new)?,
        verb,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| FeaturesError::Internal(e.to_string()))
}

/// Definitions as written in files: `[[entity]]` and `[[feature_view]]`
/// tables (fields as `[[feature_view.fields]]` or inline), TOML.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionsFile {
    /// Entities.
    #[serde(default)]
    pub entity: Vec<Entity>,
    /// Feature views.
    #[serde(default)]
    pub feature_view: Vec<FeatureView>,
}

/// Parses one definitions file's text into an apply request.
pub fn parse_definitions(text: &str, origin: &str) -> Result<ApplyRequest> {
    let file: DefinitionsFile =
        toml::from_str(text).map_err(|e| invalid(format!("{origin}: {e}")))?;
    Ok(ApplyRequest {
        entities: file.entity,
        feature_views: file.feature_view,
    })
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
