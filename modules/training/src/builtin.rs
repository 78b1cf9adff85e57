//! Built-in steps (`uses = "..."`): what they take and offer, checked at
//! apply time, and how they run, through the other services' clients.
//!
//! - `features.training_set`: a point-in-time training set from the feature
//!   store, written as a Parquet artifact `dataset`; its sha256 is the
//!   dataset snapshot id (output parameter `sha256`), `rows` its size.
//! - `registry.push`: an ONNX artifact registered as a new version, with
//!   lineage (run, dataset snapshot, code version) and metrics; output
//!   parameter `version`.
//! - `registry.alias`: moves an alias (e.g. `canary`) to a version; output
//!   parameter `previous` (the version it pointed at, empty if none).

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;

use futures_util::StreamExt;
use mlserve_proto::features::{fpb, FeatureService, FeaturesClient};
use mlserve_proto::registry::{pb, RegistryCalls, RegistryClient, RegistryService, UploadItem};
use mlserve_proto::CallContext;
use mlserve_registry::artifacts::Artifacts;
use serde_json::Value;

/// The built-in steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `features.training_set`.
    TrainingSet,
    /// `registry.push`.
    RegistryPush,
    /// `registry.alias`.
    RegistryAlias,
}

const NAMES: &str = "features.training_set, registry.push, registry.alias";

impl Builtin {
    /// Parses a `uses` value.
    pub fn parse(name: &str) -> Result<Builtin, String> {
        match name {
            "features.training_set" => Ok(Builtin::TrainingSet),
            "registry.push" => Ok(Builtin::RegistryPush),
            "registry.alias" => Ok(Builtin::RegistryAlias),
            other => Err(format!("unknown built-in '{other}' (built-ins: {NAMES})")),
        }
    }

    /// The `uses` name.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::TrainingSet => "features.training_set",
            Builtin::RegistryPush => "registry.push",
            Builtin::RegistryAlias => "registry.alias",
        }
    }

    fn required(self) -> &'static [&'static str] {
        match self {
            Builtin::TrainingSet => &["features", "entities_view"],
            Builtin::RegistryPush => &["model", "artifact"],
            Builtin::RegistryAlias => &["model", "alias", "version"],
        }
    }

    fn optional(self) -> &'static [&'static str] {
        match self {
            Builtin::TrainingSet => &["start", "end", "limit"],
            Builtin::RegistryPush => &[
                "path",
                "dataset_snapshot",
                "code_version",
                "metrics",
                "description",
                "tags",
            ],
            Builtin::RegistryAlias => &[],
        }
    }

    /// Checks the argument names and shapes (values may still be templates).
    pub fn check_arguments(self, with: &BTreeMap<String, Value>) -> Result<(), String> {
        for key in self.required() {
            if !with.contains_key(*key) {
                return Err(format!("{} needs 'with.{key}'", self.name()));
            }
        }
        for key in with.keys() {
            if !self.required().contains(&key.as_str()) && !self.optional().contains(&key.as_str())
            {
                let mut known: Vec<&str> = self.required().to_vec();
                known.extend(self.optional());
                return Err(format!(
                    "{} takes no 'with.{key}' (it takes: {})",
                    self.name(),
                    known.join(", ")
                ));
            }
        }
        for (key, value) in with {
            let ok = match key.as_str() {
                "features" => value
                    .as_array()
                    .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string)),
                "metrics" | "tags" => value.is_object(),
                "limit" | "version" => value.is_string() || value.is_u64(),
                _ => value.is_string(),
            };
            if !ok {
                return Err(format!("{}: 'with.{key}' has the wrong type", self.name()));
            }
        }
        Ok(())
    }

    /// The output parameters it sets.
    pub fn output_parameters(self) -> &'static [&'static str] {
        match self {
            Builtin::TrainingSet => &["sha256", "rows"],
            Builtin::RegistryPush => &["version"],
            Builtin::RegistryAlias => &["previous"],
        }
    }

    /// The output artifacts it writes.
    pub fn output_artifacts(self) -> &'static [&'static str] {
        match self {
            Builtin::TrainingSet => &["dataset"],
            _ => &[],
        }
    }
}

/// What a built-in reaches.
#[derive(Clone)]
pub struct BuiltinEnv {
    /// The registry (local or remote).
    pub registry: Option<RegistryClient>,
    /// The feature store (local or remote).
    pub features: Option<FeaturesClient>,
    /// The object store runs write to.
    pub artifacts: Artifacts,
}

/// What a built-in produced.
#[derive(Debug, Default)]
pub struct BuiltinOutput {
    /// Output parameters.
    pub parameters: BTreeMap<String, String>,
    /// Files in the step's directory to upload as artifacts: (name, relative path).
    pub artifacts: Vec<(String, String)>,
}

fn text(with: &BTreeMap<String, Value>, key: &str) -> Option<String> {
    match with.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(with: &BTreeMap<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match text(with, key) {
        None => Ok(None),
        Some(t) => t
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("'{key}' must be a whole number, not '{t}'")),
    }
}

/// Runs a built-in with rendered arguments; progress lines go to `log`.
pub async fn run(
    builtin: Builtin,
    env: &BuiltinEnv,
    ctx: CallContext,
    run_id: &str,
    with: &BTreeMap<String, Value>,
    dir: &std::path::Path,
    log: &mut std::fs::File,
) -> Result<BuiltinOutput, String> {
    match builtin {
        Builtin::RegistryPush => push(env, ctx, run_id, with, log).await,
        Builtin::RegistryAlias => alias(env, ctx, run_id, with, log).await,
        Builtin::TrainingSet => training_set(env, ctx, with, dir, log).await,
    }
}

async fn push(
    env: &BuiltinEnv,
    ctx: CallContext,
    run_id: &str,
    with: &BTreeMap<String, Value>,
    log: &mut std::fs::File,
) -> Result<BuiltinOutput, String> {
    let registry = env.registry.as_ref().ok_or(
        "registry.push: no registry is reachable from this process (set registry.endpoint)",
    )?;
    let model = text(with, "model").unwrap_or_default();
    let key = text(with, "artifact").unwrap_or_default();
    let path = text(with, "path").unwrap_or_else(|| "model.onnx".into());
    let mut metrics = HashMap::new();
    if let Some(Value::Object(map)) = with.get("metrics") {
        for (name, value) in map {
            let parsed = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            let parsed = parsed
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("metric '{name}' is not a number: {value}"))?;
            metrics.insert(name.clone(), parsed);
        }
    }
    let mut tags = HashMap::new();
    if let Some(Value::Object(map)) = with.get("tags") {
        for (name, value) in map {
            tags.insert(
                name.clone(),
                value
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or(value.to_string()),
            );
        }
    }
    let request = pb::CreateVersionRequest {
        name: model.clone(),
        description: text(with, "description").unwrap_or_default(),
        lineage: Some(pb::Lineage {
            training_run: run_id.to_string(),
            dataset_snapshot: text(with, "dataset_snapshot").unwrap_or_default(),
            code_version: text(with, "code_version").unwrap_or_default(),
        }),
        metrics,
        tags,
        created_by: format!("training:{run_id}"),
    };
    // The registry creates the model on its first version only through
    // CreateModel; make sure it exists (an existing one is fine).
    let created = registry
        .create_model(
            ctx.clone(),
            pb::CreateModelRequest {
                name: model.clone(),
                ..Default::default()
            },
        )
        .await;
    if let Err(err) = created {
        if err.code != mlserve_proto::ErrorCode::Conflict {
            return Err(format!(
                "registry.push: cannot create model '{model}': {}",
                err.message
            ));
        }
    }
    let bytes = env
        .artifacts
        .read(&key)
        .await
        .map_err(|e| format!("registry.push: cannot read artifact '{key}': {e}"))?;
    let header = futures_util::stream::once(async move {
        Ok(UploadItem::File(pb::FileHeader {
            path,
            sha256: String::new(),
        }))
    });
    let chunks = bytes.map(|chunk| {
        chunk
            .map(UploadItem::Chunk)
            .map_err(|e| mlserve_proto::ServiceError::unavailable(e.to_string()))
    });
    let version = registry
        .upload(ctx, request, Box::pin(header.chain(chunks)))
        .await
        .map_err(|e| format!("registry.push: {}", e.message))?;
    let _ = writeln!(log, "registered {model} version {}", version.version);
    let mut out = BuiltinOutput::default();
    out.parameters
        .insert("version".into(), version.version.to_string());
    Ok(out)
}

async fn alias(
    env: &BuiltinEnv,
    ctx: CallContext,
    run_id: &str,
    with: &BTreeMap<String, Value>,
    log: &mut std::fs::File,
) -> Result<BuiltinOutput, String> {
    let registry = env
        .registry
        .as_ref()
        .ok_or("registry.alias: no registry is reachable from this process")?;
    let model = text(with, "model").unwrap_or_default();
    let alias = text(with, "alias").unwrap_or_default();
    let version = number(with, "version")?.ok_or("registry.alias needs 'version'")?;
    let moved = registry
        .set_alias(
            ctx,
            pb::SetAliasRequest {
                name: model.clone(),
                alias: alias.clone(),
                version,
                actor: format!("training:{run_id}"),
            },
        )
        .await
        .map_err(|e| format!("registry.alias: {}", e.message))?;
    let _ = writeln!(
        log,
        "moved {model}@{alias} from {} to {version}",
        moved.from_version
    );
    let mut out = BuiltinOutput::default();
    out.parameters.insert(
        "previous".into(),
        if moved.from_version == 0 {
            String::new()
        } else {
            moved.from_version.to_string()
        },
    );
    Ok(out)
}

async fn training_set(
    env: &BuiltinEnv,
    ctx: CallContext,
    with: &BTreeMap<String, Value>,
    dir: &std::path::Path,
    log: &mut std::fs::File,
) -> Result<BuiltinOutput, String> {
    let features = env
        .features
        .as_ref()
        .ok_or("features.training_set: no feature store is reachable from this process")?;
    let refs: Vec<String> = with
        .get("features")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let view = text(with, "entities_view").unwrap_or_default();
    let time = |key: &str| -> Result<i64, String> {
        match text(with, key) {
            None => Ok(0),
            Some(t) if t.trim().is_empty() => Ok(0),
            Some(t) => {
                mlserve_features::values::parse_time(&t).map_err(|e| format!("'{key}': {e}"))
            }
        }
    };
    let request = fpb::EntityRowsRequest {
        feature_view: view.clone(),
        start_ts: time("start")?,
        end_ts: time("end")?,
        limit: number(with, "limit")?.unwrap_or(0),
    };
    let mut entity_rows = Vec::new();
    let mut stream = features
        .list_entity_rows(ctx.clone(), request)
        .await
        .map_err(|e| format!("features.training_set: {}", e.message))?;
    while let Some(row) = stream.next().await {
        entity_rows.push(row.map_err(|e| format!("features.training_set: {}", e.message))?);
    }
    let _ = writeln!(log, "{} entity rows from view '{view}'", entity_rows.len());
    let path = dir.join("training_set.parquet");
    let rows = mlserve_features::training_set::write_parquet_file(
        features,
        ctx,
        refs,
        entity_rows,
        path.clone(),
        |_| {},
    )
    .await
    .map_err(|e| format!("features.training_set: {e}"))?;
    let sha = crate::outputs::sha256_file(&path)
        .await
        .map_err(|e| format!("features.training_set: {e}"))?;
    let _ = writeln!(log, "wrote {rows} rows, sha256 {sha}");
    let mut out = BuiltinOutput::default();
    out.parameters.insert("sha256".into(), sha);
    out.parameters.insert("rows".into(), rows.to_string());
    out.artifacts
        .push(("dataset".into(), "training_set.parquet".into()));
    Ok(out)
}

/// Runs a built-in outside the training role, on local files: what an
/// exported Argo step runs in its container (`mlserve jobs builtin`).
/// Artifact arguments are local paths; output parameters are written to
/// `<dir>/outputs/<name>` and output artifacts moved to `<dir>/outputs/<name>`.
pub async fn run_standalone(
    name: &str,
    with: BTreeMap<String, Value>,
    dir: &std::path::Path,
    registry: Option<RegistryClient>,
    features: Option<FeaturesClient>,
    run_id: &str,
) -> Result<BuiltinOutput, String> {
    let builtin = Builtin::parse(name)?;
    builtin.check_arguments(&with)?;
    let store = object_store::local::LocalFileSystem::new();
    let env = BuiltinEnv {
        registry,
        features,
        artifacts: Artifacts::new(std::sync::Arc::new(store), ""),
    };
    let outputs = dir.join("outputs");
    std::fs::create_dir_all(&outputs)
        .map_err(|e| format!("cannot create '{}': {e}", outputs.display()))?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(outputs.join("log"))
        .map_err(|e| e.to_string())?;
    let out = run(
        builtin,
        &env,
        CallContext::new(),
        run_id,
        &with,
        dir,
        &mut log,
    )
    .await?;
    for (key, value) in &out.parameters {
        std::fs::write(outputs.join(key), value).map_err(|e| e.to_string())?;
    }
    for (key, path) in &out.artifacts {
        std::fs::rename(dir.join(path), outputs.join(key)).map_err(|e| e.to_string())?;
    }
    Ok(out)
}
