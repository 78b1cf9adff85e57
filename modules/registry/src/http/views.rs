//! JSON shapes of the REST API: responses from the protobuf messages, and
//! request bodies.

use std::collections::HashMap;

use mlserve_proto::registry::{pb, status_name};
use serde::Deserialize;
use serde_json::{json, Value};

/// A registered model.
pub fn model(m: &pb::RegisteredModel) -> Value {
    json!({
        "name": m.name,
        "description": m.description,
        "tags": m.tags,
        "created_at_us": m.created_at_us,
        "updated_at_us": m.updated_at_us,
        "latest_version": m.latest_version,
        "aliases": m.aliases,
    })
}

/// A model version with its files.
pub fn version(v: &pb::ModelVersion) -> Value {
    let lineage = v.lineage.clone().unwrap_or_default();
    let files: Vec<Value> = v
        .files
        .iter()
        .map(|f| json!({"path": f.path, "sha256": f.sha256, "size": f.size}))
        .collect();
    json!({
        "name": v.name,
        "version": v.version,
        "status": status_name(v.status()),
        "description": v.description,
        "files": files,
        "lineage": {
            "training_run": lineage.training_run,
            "dataset_snapshot": lineage.dataset_snapshot,
            "code_version": lineage.code_version,
        },
        "metrics": v.metrics,
        "tags": v.tags,
        "created_by": v.created_by,
        "created_at_us": v.created_at_us,
        "aliases": v.aliases,
    })
}

/// An alias.
pub fn alias(a: &pb::Alias) -> Value {
    json!({
        "name": a.name,
        "alias": a.alias,
        "version": a.version,
        "updated_by": a.updated_by,
        "updated_at_us": a.updated_at_us,
    })
}

/// One move of an alias; `null` versions mean created / deleted.
pub fn alias_move(m: &pb::AliasMove) -> Value {
    let v = |n: u64| if n == 0 { Value::Null } else { json!(n) };
    json!({
        "id": m.id,
        "name": m.name,
        "alias": m.alias,
        "from_version": v(m.from_version),
        "to_version": v(m.to_version),
        "actor": m.actor,
        "at_us": m.at_us,
    })
}

/// `POST /v1/registry/models`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    /// The name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Tags.
    #[serde(default)]
    pub tags: HashMap<String, String>,
}

/// `PATCH` of a model or a version.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// New description.
    pub description: Option<String>,
    /// Tags to set.
    #[serde(default)]
    pub set_tags: HashMap<String, String>,
    /// Tag keys to remove.
    #[serde(default)]
    pub remove_tags: Vec<String>,
}

/// `PUT .../aliases/{alias}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAlias {
    /// The version to point at.
    pub version: u64,
}

/// Lineage in an upload's metadata.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    /// Training run id.
    #[serde(default)]
    pub training_run: String,
    /// Dataset snapshot id.
    #[serde(default)]
    pub dataset_snapshot: String,
    /// Code version (commit).
    #[serde(default)]
    pub code_version: String,
}

/// The `metadata` part of a version upload.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadMetadata {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Where the version came from.
    #[serde(default)]
    pub lineage: Lineage,
    /// Validation scores.
    #[serde(default)]
    pub metrics: HashMap<String, f64>,
    /// Tags.
    #[serde(default)]
    pub tags: HashMap<String, String>,
    /// Expected sha256 per file path.
    #[serde(default)]
    pub sha256: HashMap<String, String>,
}

/// Query of the list endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Search text (models only).
    #[serde(default)]
    pub query: String,
    /// `k=v,k2=v2` tag filter (models only).
    #[serde(default)]
    pub tags: String,
    /// One alias only (history only).
    #[serde(default)]
    pub alias: String,
    /// Where the previous page ended.
    #[serde(default)]
    pub page_token: String,
    /// Page size.
    #[serde(default)]
    pub limit: u32,
}
