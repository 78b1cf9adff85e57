//! Models the inference role serves from the registry (`inference.models`).

use serde::{Deserialize, Serialize};

/// Where a served model comes from.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelSource {
    /// The registry role: the alias (or pinned version) is resolved there and
    /// its files are downloaded into the artifact cache.
    #[default]
    Registry,
}

/// Where the instances of models followed from the registry run, whatever
/// each version's own config says (`inference.instance_kind`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PlacementOverride {
    /// Every instance group on the CPU.
    Cpu,
    /// Every instance group on GPU 0 unless the group names its GPUs
    /// (Triton's `KIND_GPU`).
    Gpu,
}

/// One model the inference role serves from the registry, e.g.
/// `{ name = "resnet50", source = "registry", alias = "production" }`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FollowedModel {
    /// The name requests use (`/v2/models/<name>/infer`).
    pub name: String,
    /// Where it comes from (only `registry`).
    pub source: ModelSource,
    /// The registered model's name in the registry; unset means `name`.
    pub registered_model: Option<String>,
    /// The alias followed: every move is served without downtime. Exactly one
    /// of `alias` and `version` is set.
    pub alias: Option<String>,
    /// A fixed version instead of an alias.
    pub version: Option<u64>,
}

impl FollowedModel {
    /// The registered model's name in the registry.
    pub fn registered(&self) -> &str {
        self.registered_model.as_deref().unwrap_or(&self.name)
    }

    /// Checks that exactly one of alias and version is set and names are given.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("inference.models: an entry has no name".into());
        }
        match (&self.alias, self.version) {
            (Some(alias), None) if !alias.trim().is_empty() => Ok(()),
            (None, Some(v)) if v > 0 => Ok(()),
            _ => Err(format!(
                "inference.models '{}': set exactly one of alias or version (> 0)",
                self.name
            )),
        }
    }
}
