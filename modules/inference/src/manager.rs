//! Loads, swaps and unloads model versions; follows the repository in poll mode.
//!
//! A loaded model is an immutable [`ModelEntry`] swapped whole under a lock,
//! so a request sees either the old or the new set of versions. A version that
//! is replaced keeps serving its in-flight requests (they hold an `Arc`); its
//! scheduler drains and its sessions are released when the last one finishes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};

use mlserve_common::config::{ModelControlMode, PlacementOverride};
use ort::environment::Environment;

use crate::dispatch::Dispatch;
use crate::ensemble::Ensemble;
use crate::ensemble_plan::{ensemble_spec, is_ensemble, plan};
use crate::error::{InferenceError, Result};
use crate::graph_level::GraphOptimizationLevel;
use crate::model_config::{resolve, ModelConfigFile, ModelSpec};
use crate::ort_runner::{open_session, signature, OrtRunner, SessionOptions};
use crate::repository::{
    list_models, model_file, validate_model_name, version_stamp, VersionStamp,
};
use crate::scheduler::{ModelRunner, Scheduler};
use crate::stats::{StatsRegistry, VersionStats};

/// One loaded, servable model version.
pub struct ServedVersion {
    /// Version number.
    pub version: i64,
    /// Version as the protocol shows it.
    pub label: String,
    /// What the model takes and gives.
    pub spec: Arc<ModelSpec>,
    /// Its dynamic batcher, or its ensemble's steps.
    pub scheduler: Dispatch,
    /// Its statistics.
    pub stats: Arc<VersionStats>,
    stamp: VersionStamp,
}

/// State of a model as the repository index reports it.
#[derive(Clone)]
struct ModelEntry {
    versions: BTreeMap<i64, Arc<ServedVersion>>,
    /// Why the last load failed, if it did.
    failure: Option<String>,
    /// The stamps the last load saw (to notice changes when polling).
    stamps: BTreeMap<i64, VersionStamp>,
    unloaded: bool,
    /// Installed from outside the repository (the registry follower): the
    /// repository scan neither reloads nor removes it.
    external: bool,
    /// The version a request naming none gets; unset: the newest.
    default: Option<i64>,
    /// Loaded with a config override rather than the repository's config:
    /// the next load reloads every version, whatever the files' stamps.
    overridden: bool,
}

impl ModelEntry {
    fn empty(external: bool) -> ModelEntry {
        ModelEntry {
            versions: BTreeMap::new(),
            failure: None,
            stamps: BTreeMap::new(),
            unloaded: false,
            external,
            default: None,
            overridden: false,
        }
    }
}

/// A row of the repository index.
pub struct IndexRow {
    /// Model name.
    pub name: String,
    /// Version label ("" for a model with no version state).
    pub version: String,
    /// READY, UNAVAILABLE or "" (never loaded).
    pub state: &'static str,
    /// Why it is unavailable.
    pub reason: String,
}

/// Settings the manager needs.
#[derive(Clone)]
pub struct ManagerOptions {
    /// The repository root.
    pub root: PathBuf,
    /// none | poll | explicit.
    pub mode: ModelControlMode,
    /// Queue bound when a model sets none.
    pub default_queue: usize,
    /// Latency objective of models whose config sets none.
    pub default_latency_objective: Option<std::time::Duration>,
}

/// The loaded models by name.
type Models = RwLock<BTreeMap<String, ModelEntry>>;

/// Finds served versions by name, as [`ModelManager::get`] does, without
/// keeping the manager's models alive (an ensemble holds one).
#[derive(Clone)]
pub struct ModelLookup(Weak<Models>);

impl ModelLookup {
    /// The version that serves a request, from inside `depth` ensembles.
    pub fn get_nested(
        &self,
        name: &str,
        version: &str,
        depth: usize,
    ) -> Result<Arc<ServedVersion>> {
        let models = self.0.upgrade().ok_or(InferenceError::ShuttingDown)?;
        find_ready(&models, name, version, depth)
    }
}

/// The set of loaded models.
pub struct ModelManager {
    options: ManagerOptions,
    env: &'static Environment,
    stats: Arc<StatsRegistry>,
    models: Arc<Models>,
    /// Serializes loads so two reloads of one model never race.
    load_lock: std::sync::Mutex<()>,
}

impl ModelManager {
    /// A manager over `options.root`, loading nothing yet.
    pub fn new(
        options: ManagerOptions,
        env: &'static Environment,
        stats: Arc<StatsRegistry>,
    ) -> Self {
        ModelManager {
            options,
            env,
            stats,
            models: Arc::new(RwLock::new(BTreeMap::new())),
            load_lock: Default::default(),
        }
    }

    /// The control mode.
    pub fn mode(&self) -> ModelControlMode {
        self.options.mode
    }

    /// Statistics of every version served so far.
    pub fn stats(&self) -> &Arc<StatsRegistry> {
        &self.stats
    }

    /// The version that serves a request: `version` "" picks the highest loaded one.
    /// An ensemble is served only while its composing models are.
    pub fn get(&self, name: &str, version: &str) -> Result<Arc<ServedVersion>> {
        find_ready(&self.models, name, version, 0)
    }

    /// A lookup of served versions for ensembles.
    pub fn lookup(&self) -> ModelLookup {
        ModelLookup(Arc::downgrade(&self.models))
    }

    /// Every loaded version of a model, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<Arc<ServedVersion>>> {
        validate_model_name(name)?;
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        match models.get(name).filter(|e| !e.unloaded) {
            Some(entry) => Ok(entry.versions.values().cloned().collect()),
            None => Err(unknown_model(name)),
        }
    }

    /// Names of the models with at least one loaded version.
    pub fn loaded_models(&self) -> Vec<String> {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        models
            .iter()
            .filter(|(_, e)| !e.unloaded && !e.versions.is_empty())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Loads or reloads `name` (blocking: call from a blocking thread). Versions
    /// whose files did not change are kept as they are; a version that fails to
    /// load leaves the version it would replace serving.
    /// An ensemble first loads those of its composing models that are not
    /// served, as Triton does.
    pub fn load(&self, name: &str, override_config: Option<ModelConfigFile>) -> Result<()> {
        self.load_in_chain(name, override_config, &mut Vec::new())
    }

    /// [`ModelManager::load`] from inside the loads of the ensembles in `chain`.
    fn load_in_chain(
        &self,
        name: &str,
        override_config: Option<ModelConfigFile>,
        chain: &mut Vec<String>,
    ) -> Result<()> {
        validate_model_name(name)?;
        let dir = self.options.root.join(name);
        if !dir.is_dir() {
            return Err(InferenceError::ModelNotFound(format!(
                "failed to load '{name}', failed to poll from model repository: no directory '{name}' in the repository"
            )));
        }
        let overridden = override_config.is_some();
        let config = match override_config {
            Some(config) => config,
            None => ModelConfigFile::read(&dir)
                .map_err(|e| failed_to_load(name, e))
                .inspect_err(|e| self.record_failure(name, e))?,
        };
        self.load_composing(name, &config, chain)
            .inspect_err(|e| self.record_failure(name, e))?;
        let _guard = self.load_lock.lock().unwrap_or_else(|p| p.into_inner());
        let filename = config.model_filename().to_string();
        let present = config.versions_in(&dir);
        let wanted = config.version_policy().select(&present);
        if wanted.is_empty() {
            let err = InferenceError::InvalidModel(format!(
                "failed to load '{name}', no version is available: no version directory with {filename} that its version policy serves"
            ));
            self.record_failure(name, &err);
            return Err(err);
        }
        let previous = self
            .models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        let mut versions = BTreeMap::new();
        let mut stamps = BTreeMap::new();
        let mut failures = Vec::new();
        for version in wanted {
            let stamp = version_stamp(&dir, version, &filename);
            stamps.insert(version, stamp.clone());
            let old = previous.as_ref().and_then(|p| p.versions.get(&version));
            let same_config = !overridden && !previous.as_ref().is_some_and(|p| p.overridden);
            if let Some(old) = old.filter(|o| same_config && o.stamp == stamp) {
                versions.insert(version, old.clone());
                continue;
            }
            match self.load_version(name, &dir, &config, version, stamp) {
                Ok(served) => {
                    tracing::info!(model = name, version, "model version loaded");
                    versions.insert(version, Arc::new(served));
                }
                Err(err) => {
                    tracing::error!(model = name, version, error = %err, "model version failed to load");
                    if let Some(old) = old {
                        versions.insert(version, old.clone());
                    }
                    failures.push(format!("version {version}: {err}"));
                }
            }
        }
        let failure = (!failures.is_empty()).then(|| failures.join("; "));
        let all_failed = versions.is_empty();
        let entry = ModelEntry {
            versions,
            failure: failure.clone(),
            stamps,
            unloaded: false,
            external: false,
            default: None,
            overridden,
        };
        self.models
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), entry);
        match failure {
            Some(reason) if all_failed => Err(InferenceError::InvalidModel(format!(
                "failed to load '{name}', no version is available: {reason}"
            ))),
            _ => Ok(()),
        }
    }

    /// Loads the composing models of ensemble `name` that are not served;
    /// one that fails is reported by the ensemble's plan check.
    fn load_composing(
        &self,
        name: &str,
        config: &ModelConfigFile,
        chain: &mut Vec<String>,
    ) -> Result<()> {
        let Some(ensemble) = &config.ensemble_scheduling else {
            return Ok(());
        };
        chain.push(name.to_string());
        for model in ensemble.step.iter().map(|s| &s.model_name) {
            if chain.contains(model) {
                let cycle = format!("{} -> {model}", chain.join(" -> "));
                chain.pop();
                let err =
                    InferenceError::InvalidModel(format!("ensembles refer to each other: {cycle}"));
                return Err(failed_to_load(name, err));
            }
            let missing = self.get(model, "").is_err() && self.options.root.join(model).is_dir();
            if missing {
                if let Err(err) = self.load_in_chain(model, None, chain) {
                    tracing::warn!(model = %model, ensemble = name, error = %err, "composing model failed to load");
                }
            }
        }
        chain.pop();
        Ok(())
    }

    fn record_failure(&self, name: &str, err: &InferenceError) {
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        let entry = models
            .entry(name.to_string())
            .or_insert_with(|| ModelEntry::empty(false));
        entry.failure = Some(err.to_string());
    }

    /// Opens one version from `model_dir` (holding `config.toml` and
    /// `<version>/<model file>`), not yet serving: its sessions and scheduler
    /// run, so it can be warmed up before [`ModelManager::install_external`].
    /// `placement` sets the kind of every instance group. Blocking: call from
    /// a blocking thread.
    pub fn open_version(
        &self,
        name: &str,
        model_dir: &Path,
        version: i64,
        placement: Option<PlacementOverride>,
    ) -> Result<ServedVersion> {
        validate_model_name(name)?;
        let mut config = ModelConfigFile::read(model_dir)?;
        if let Some(placement) = placement {
            config.place_every_instance(placement);
        }
        let stamp = version_stamp(model_dir, version, config.model_filename());
        self.load_version(name, model_dir, &config, version, stamp)
    }

    /// Adds `opened` (when given) to the external model `name` and leaves it
    /// serving exactly the versions in `serve`, in one swap; a request naming
    /// no version gets `default` (else the newest). Returns the versions it
    /// stopped serving. Requests in flight on those finish on them; their
    /// sessions are released when the last one does.
    pub fn install_external(
        &self,
        name: &str,
        opened: Option<ServedVersion>,
        serve: &[i64],
        default: Option<i64>,
    ) -> Vec<i64> {
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        let old = models
            .remove(name)
            .filter(|e| e.external && !e.unloaded)
            .map(|e| e.versions)
            .unwrap_or_default();
        let mut versions = BTreeMap::new();
        let mut dropped = Vec::new();
        for (version, served) in old {
            if serve.contains(&version) {
                versions.insert(version, served);
            } else {
                dropped.push(version);
            }
        }
        if let Some(served) = opened {
            versions.insert(served.version, Arc::new(served));
        }
        let entry = ModelEntry {
            default: default.filter(|v| versions.contains_key(v)),
            versions,
            failure: None,
            stamps: BTreeMap::new(),
            unloaded: false,
            external: true,
            overridden: false,
        };
        models.insert(name.to_string(), entry);
        dropped
    }

    /// Records why installing a version of an external model failed; the
    /// version it serves (if any) keeps serving.
    pub fn record_external_failure(&self, name: &str, reason: &str) {
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        let entry = models
            .entry(name.to_string())
            .or_insert_with(|| ModelEntry::empty(true));
        entry.failure = Some(reason.to_string());
    }

    fn load_version(
        &self,
        name: &str,
        dir: &Path,
        config: &ModelConfigFile,
        version: i64,
        stamp: VersionStamp,
    ) -> Result<ServedVersion> {
        let label = version.to_string();
        if is_ensemble(config) {
            let bad =
                |msg: String| InferenceError::InvalidModel(format!("ensemble '{name}': {msg}"));
            let spec =
                Arc::new(ensemble_spec(name, config, self.options.default_queue).map_err(bad)?);
            let steps = config.ensemble_scheduling.clone().unwrap_or_default();
            let composing = |model: &str, version: &str| {
                self.get(model, version)
                    .map(|served| served.spec.clone())
                    .map_err(|e| e.to_string())
            };
            let plan = plan(&spec, &steps, composing).map_err(bad)?;
            let ensemble = Ensemble::new(spec.clone(), plan, self.lookup());
            return Ok(ServedVersion {
                version,
                stats: self.stats.get(name, &label),
                label,
                spec,
                scheduler: Dispatch::Ensemble(Arc::new(ensemble)),
                stamp,
            });
        }
        let path = model_file(dir, version, config.model_filename());
        let probe = open_session(
            self.env,
            &path,
            &self.session_options(0, 0, GraphOptimizationLevel::All),
        )?;
        let spec = Arc::new(resolve(
            name,
            config,
            &signature(&probe)?,
            self.options.default_queue,
        )?);
        drop(probe);
        let instance_count: usize = spec.instance_groups.iter().map(|(_, n, _)| n).sum();
        let intra = spec.intra_op_threads;
        let mut runners: Vec<Box<dyn ModelRunner>> = Vec::with_capacity(instance_count);
        for (kind, count, gpus) in &spec.instance_groups {
            for i in 0..*count {
                let mut options = self.session_options(
                    intra,
                    spec.inter_op_threads,
                    spec.graph_optimization_level,
                );
                options.kind = *kind;
                options.device_id = if gpus.is_empty() {
                    0
                } else {
                    gpus[i % gpus.len()]
                };
                let session = open_session(self.env, &path, &options)?;
                runners.push(Box::new(OrtRunner::new(session, spec.clone())));
            }
        }
        let stats = self.stats.get(name, &label);
        let scheduler = Scheduler::start(
            &format!("{name}-{version}"),
            spec.batching.clone(),
            spec.scheduler_batch_size(),
            runners,
            stats.clone(),
        )?;
        let objective = config.latency_objective();
        scheduler.set_latency_objective(objective.or(self.options.default_latency_objective));
        Ok(ServedVersion {
            version,
            label,
            spec,
            scheduler: Dispatch::Model(scheduler),
            stats,
            stamp,
        })
    }

    fn session_options(
        &self,
        intra: usize,
        inter: usize,
        level: GraphOptimizationLevel,
    ) -> SessionOptions {
        SessionOptions {
            kind: crate::model_config::InstanceKind::Cpu,
            device_id: 0,
            intra_op_threads: intra,
            inter_op_threads: inter.max(1),
            optimization_level: level,
        }
    }

    /// Unloads a model: it stops taking requests at once; versions finish
    /// their in-flight requests before their sessions are released.
    pub fn unload(&self, name: &str) -> Result<()> {
        validate_model_name(name)?;
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        match models.get_mut(name) {
            Some(entry) => {
                entry.versions.clear();
                entry.unloaded = true;
                entry.failure = None;
                tracing::info!(model = name, "model unloaded");
                Ok(())
            }
            None if self.options.root.join(name).is_dir() => Ok(()),
            None => Err(unknown_model(name)),
        }
    }

    /// Loads every model of the repository (none/poll modes at start).
    pub fn load_all(&self) -> Result<()> {
        for name in list_models(&self.options.root)? {
            if let Err(err) = self.load(&name, None) {
                tracing::error!(model = %name, error = %err, "model failed to load");
            }
        }
        Ok(())
    }

    /// One poll-mode pass: loads new models, reloads changed ones, unloads
    /// removed ones. Unchanged versions are not touched.
    pub fn poll_once(&self) -> Result<()> {
        let present = list_models(&self.options.root)?;
        for name in &present {
            if self.needs_reload(name) {
                if let Err(err) = self.load(name, None) {
                    tracing::warn!(model = %name, error = %err, "model reload failed; the previous versions keep serving");
                }
            }
        }
        let loaded: Vec<String> = self
            .models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, e)| !e.external)
            .map(|(n, _)| n.clone())
            .collect();
        for name in loaded.iter().filter(|n| !present.contains(n)) {
            self.models
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
            tracing::info!(model = %name, "model removed from the repository, unloaded");
        }
        Ok(())
    }

    fn needs_reload(&self, name: &str) -> bool {
        let dir = self.options.root.join(name);
        let Ok(config) = ModelConfigFile::read(&dir) else {
            return false;
        };
        let filename = config.model_filename();
        let wanted = config.version_policy().select(&config.versions_in(&dir));
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = models.get(name) else {
            return true;
        };
        // An ensemble that failed (a composing model was missing) is tried
        // again: it has no files of its own to change.
        let retry_ensemble = is_ensemble(&config) && entry.versions.is_empty();
        let seen: Vec<i64> = entry.stamps.keys().copied().collect();
        retry_ensemble
            || seen != wanted
            || wanted
                .iter()
                .any(|v| entry.stamps.get(v) != Some(&version_stamp(&dir, *v, filename)))
    }

    /// The repository index: every model directory, with its versions' states.
    pub fn index(&self) -> Result<Vec<IndexRow>> {
        let mut names = list_models(&self.options.root)?;
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        names.extend(
            models
                .iter()
                .filter(|(_, e)| e.external)
                .map(|(n, _)| n.clone()),
        );
        names.sort();
        names.dedup();
        let mut rows = Vec::new();
        for name in names {
            match models.get(&name) {
                Some(entry) if !entry.versions.is_empty() => {
                    for served in entry.versions.values() {
                        rows.push(IndexRow {
                            name: name.clone(),
                            version: served.label.clone(),
                            state: "READY",
                            reason: String::new(),
                        });
                    }
                }
                Some(entry) => rows.push(IndexRow {
                    name: name.clone(),
                    version: String::new(),
                    state: "UNAVAILABLE",
                    reason: entry.failure.clone().unwrap_or_else(|| "unloaded".into()),
                }),
                None => rows.push(IndexRow {
                    name: name.clone(),
                    version: String::new(),
                    state: "",
                    reason: String::new(),
                }),
            }
        }
        Ok(rows)
    }
}

/// The version that serves a request to `name` (`version` "" picks the
/// default, else the highest loaded one); an ensemble (checked from inside
/// `depth` others) only while its composing models serve.
fn find_ready(
    models: &Models,
    name: &str,
    version: &str,
    depth: usize,
) -> Result<Arc<ServedVersion>> {
    validate_model_name(name)?;
    let served = {
        let models = models.read().unwrap_or_else(|p| p.into_inner());
        let entry = models.get(name).filter(|e| !e.unloaded);
        let Some(entry) = entry else {
            return Err(unknown_model(name));
        };
        let found = if version.is_empty() {
            entry
                .default
                .and_then(|v| entry.versions.get(&v))
                .or_else(|| entry.versions.values().next_back())
        } else {
            let number: i64 = version
                .parse()
                .map_err(|_| unknown_version(name, version))?;
            entry.versions.get(&number)
        };
        match found {
            Some(served) => Ok(served.clone()),
            None if version.is_empty() => Err(InferenceError::ModelUnavailable(format!(
                "Request for unknown model: '{name}' has no available versions{}",
                entry
                    .failure
                    .as_ref()
                    .map(|f| format!(": {f}"))
                    .unwrap_or_default()
            ))),
            None => Err(unknown_version(name, version)),
        }
    }?;
    if let Some(ensemble) = served.scheduler.ensemble() {
        ensemble.check_ready(depth)?;
    }
    Ok(served)
}

/// Triton's words for a model that is not served, which client code matches on.
fn unknown_model(name: &str) -> InferenceError {
    InferenceError::ModelNotFound(format!("Request for unknown model: '{name}' is not found"))
}

/// Triton's words for a version that is not served.
fn unknown_version(name: &str, version: &str) -> InferenceError {
    InferenceError::ModelNotFound(format!(
        "Request for unknown model: '{name}' version {version} is not found"
    ))
}

/// A load failure worded as Triton's ("failed to load '<name>', ..."), same kind.
pub(crate) fn failed_to_load(name: &str, err: InferenceError) -> InferenceError {
    let message = format!("failed to load '{name}', {err}");
    match err {
        InferenceError::InvalidInput(_) => InferenceError::InvalidInput(message),
        InferenceError::ModelNotFound(_) => InferenceError::ModelNotFound(message),
        InferenceError::NotAllowed(_) => InferenceError::NotAllowed(message),
        InferenceError::Internal(_) => InferenceError::Internal(message),
        _ => InferenceError::InvalidModel(message),
    }
}
