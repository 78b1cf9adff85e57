//! Models served from the registry: each follows an alias (or is pinned to a
//! version). One served name may follow several aliases of its registered
//! model (`production` and `canary`, for a gateway canary split): it serves
//! each alias's version, and a request naming no version gets the first
//! listed entry's. On start, on every alias-moved event and on every poll the
//! alias is resolved; a new version is fetched into the artifact cache
//! (sha256 verified), staged, opened (ONNX Runtime sessions), warmed up with
//! one inference of zeros, then swapped in whole
//! ([`ModelManager::install_external`]): requests in flight on the old
//! version finish on it, new ones go to the new one. A version that fails at
//! any step is reported (error log, metric, `model_sync_failed` event) and
//! the old version keeps serving.
//!
//! Syncs are idempotent (the alias is resolved again, the event's payload is
//! only a hint), so the at-least-once event bus and the poller can both call
//! them at any time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mlserve_common::config::{FollowedModel, PlacementOverride};
use mlserve_common::events::{handler, publish_bounded, Event, EventBus, Handler};
use mlserve_common::ShutdownSignal;
use mlserve_proto::registry::pb::ModelVersion;
use mlserve_proto::registry::{pb, RegistryClient, RegistryService};
use mlserve_proto::CallContext;

use crate::artifact_cache::{ArtifactCache, Fetched};
pub use crate::follow_error::SyncError;
use crate::follow_metrics::FollowMetrics;
use crate::manager::{ModelManager, ServedVersion};
use crate::model_config::ModelSpec;
use crate::tensor::{InputTensor, RequestInputs};

/// What started a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The role starting.
    Start,
    /// An event from the bus.
    Event,
    /// The periodic check (skips a version that already failed).
    Poll,
}

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// The model already serves the resolved version (or it failed before
    /// and a poll does not retry it).
    Unchanged,
    /// The model now serves this version.
    Switched(u64),
}

#[derive(Default)]
struct State {
    serving: Option<u64>,
    failed: Option<u64>,
}

/// The registry follower of one inference role.
pub struct Follower {
    manager: Arc<ModelManager>,
    registry: RegistryClient,
    cache: ArtifactCache,
    models: Vec<FollowedModel>,
    events: Arc<dyn EventBus>,
    node: String,
    state: Mutex<HashMap<String, State>>,
    locks: HashMap<String, tokio::sync::Mutex<()>>,
    metrics: Arc<FollowMetrics>,
    placement: Option<PlacementOverride>,
}

impl Follower {
    /// A follower of `models` (validated: names unique, alias xor version).
    pub fn new(
        manager: Arc<ModelManager>,
        registry: RegistryClient,
        cache: ArtifactCache,
        models: Vec<FollowedModel>,
        events: Arc<dyn EventBus>,
    ) -> Result<Follower, String> {
        let mut locks = HashMap::new();
        let mut keys = std::collections::HashSet::new();
        for model in &models {
            model.validate()?;
            if !keys.insert(entry_key(model)) {
                return Err(format!(
                    "inference.models: '{}' is listed twice",
                    entry_key(model)
                ));
            }
            if let Some(other) = models
                .iter()
                .find(|m| m.name == model.name && m.registered() != model.registered())
            {
                return Err(format!(
                    "inference.models: '{}' cannot serve both '{}' and '{}' from the registry",
                    model.name,
                    model.registered(),
                    other.registered()
                ));
            }
            locks
                .entry(model.name.clone())
                .or_insert_with(|| tokio::sync::Mutex::new(()));
        }
        Ok(Follower {
            node: events.consumer_name(),
            manager,
            registry,
            cache,
            models,
            events,
            state: Mutex::new(HashMap::new()),
            locks,
            metrics: Arc::new(FollowMetrics::default()),
            placement: None,
        })
    }

    /// Runs every followed version's instances on `placement` (`None`: as
    /// each version's config says).
    pub fn with_placement(mut self, placement: Option<PlacementOverride>) -> Self {
        self.placement = placement;
        self
    }

    /// The follower's metrics.
    pub fn metrics(&self) -> &Arc<FollowMetrics> {
        &self.metrics
    }

    /// The followed models.
    pub fn models(&self) -> &[FollowedModel] {
        &self.models
    }

    /// Syncs every followed model once; failures are reported, not returned.
    pub async fn sync_all(&self, trigger: Trigger) {
        for model in &self.models {
            let _ = self.sync(model, trigger).await;
        }
    }

    /// Resolves `model`'s alias (or version) and serves it if it changed.
    pub async fn sync(&self, model: &FollowedModel, trigger: Trigger) -> Result<Synced, SyncError> {
        let _one_at_a_time = match self.locks.get(&model.name) {
            Some(lock) => lock.lock().await,
            None => return Ok(Synced::Unchanged),
        };
        let resolved = match (&model.alias, model.version) {
            (Some(alias), _) => {
                let request = pb::GetAliasRequest {
                    name: model.registered().to_string(),
                    alias: alias.clone(),
                };
                self.registry
                    .resolve_alias(CallContext::new(), request)
                    .await
            }
            (None, Some(version)) => {
                let request = pb::GetVersionRequest {
                    name: model.registered().to_string(),
                    version,
                };
                self.registry.get_version(CallContext::new(), request).await
            }
            (None, None) => return Ok(Synced::Unchanged),
        };
        let target = match resolved {
            Ok(target) => target,
            Err(err) => {
                let err = SyncError::Registry(err);
                tracing::warn!(model = %model.name, registered = %model.registered(), error = %err, "cannot resolve the followed version");
                self.metrics.failure(&model.name, err.reason());
                match self.last_served(model, trigger, &err).await {
                    Some(target) => target,
                    None => return Err(err),
                }
            }
        };
        let version = target.version;
        {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(current) = state.get(&entry_key(model)) {
                let failed_before = trigger == Trigger::Poll && current.failed == Some(version);
                if current.serving == Some(version) || failed_before {
                    return Ok(Synced::Unchanged);
                }
            }
        }
        tracing::info!(model = %model.name, version, trigger = ?trigger, "switching to a new registry version");
        match self.install(model, &target).await {
            Ok(()) => Ok(Synced::Switched(version)),
            Err(err) => {
                self.report_failure(model, version, &err).await;
                Err(err)
            }
        }
    }

    /// At start with the registry unreachable: the version this model served
    /// last, recorded beside the cache, so it serves again without the registry.
    async fn last_served(
        &self,
        model: &FollowedModel,
        trigger: Trigger,
        err: &SyncError,
    ) -> Option<ModelVersion> {
        if trigger != Trigger::Start || !err.is_transient() {
            return None;
        }
        let recorded = self.cache.load_served(&self.record_name(model)).await?;
        let matches = recorded.name == model.registered()
            && model.version.is_none_or(|v| v == recorded.version);
        if matches {
            tracing::warn!(model = %model.name, version = recorded.version, "registry unreachable at start: serving the version served last, from the cache");
        }
        matches.then_some(recorded)
    }

    async fn install(&self, model: &FollowedModel, target: &ModelVersion) -> Result<(), SyncError> {
        let version = target.version;
        let number = i64::try_from(version)
            .map_err(|_| SyncError::Io(format!("version {version} is out of range")))?;
        // Another alias of the same served name may already serve it.
        let opened = if self.versions_of(&model.name).0.contains(&number) {
            None
        } else {
            Some(self.open(model, target).await?)
        };
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let entry = state.entry(entry_key(model)).or_default();
            entry.serving = Some(version);
            entry.failed = None;
        }
        let (serve, default) = self.versions_of(&model.name);
        let dropped = self
            .manager
            .install_external(&model.name, opened, &serve, default);
        if self.is_primary(model) {
            self.metrics.serving(&model.name, version);
        }
        self.metrics
            .following(&model.name, &follows(model), version);
        self.cache
            .save_served(&self.record_name(model), target)
            .await;
        tracing::info!(model = %model.name, alias = ?model.alias, version, dropped = ?dropped, "registry version serving");
        for old in dropped.into_iter().filter_map(|v| u64::try_from(v).ok()) {
            self.cache.remove_stage(&model.name, old).await;
        }
        self.publish(Event::ModelServing {
            model: model.name.clone(),
            version: number,
            node: self.node.clone(),
        })
        .await;
        Ok(())
    }

    /// Fetches, stages, opens and warms up one version, not yet serving.
    async fn open(
        &self,
        model: &FollowedModel,
        target: &ModelVersion,
    ) -> Result<ServedVersion, SyncError> {
        let version = target.version;
        let mut staged = Vec::with_capacity(target.files.len());
        for file in &target.files {
            let (path, fetched) = self
                .cache
                .fetch(&self.registry, model.registered(), version, file)
                .await?;
            match fetched {
                Fetched::Cached => self.metrics.cache_hit(&model.name),
                Fetched::Downloaded => self.metrics.downloaded(&model.name),
            }
            staged.push((file.clone(), path));
        }
        let dir = self.cache.stage(&model.name, version, staged).await?;
        let manager = self.manager.clone();
        let name = model.name.clone();
        let placement = self.placement;
        let number = i64::try_from(version)
            .map_err(|_| SyncError::Io(format!("version {version} is out of range")))?;
        let served = tokio::task::spawn_blocking(move || {
            manager.open_version(&name, &dir, number, placement)
        })
        .await
        .map_err(|e| SyncError::Io(format!("load task failed: {e}")))?
        .map_err(SyncError::Load)?;
        warm_up(&served).await?;
        Ok(served)
    }

    /// The versions the entries of served name `name` serve, and the one a
    /// request naming no version gets: the first listed entry's.
    fn versions_of(&self, name: &str) -> (Vec<i64>, Option<i64>) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut serve = Vec::new();
        let mut default = None;
        for model in self.models.iter().filter(|m| m.name == name) {
            let serving = state
                .get(&entry_key(model))
                .and_then(|s| s.serving)
                .and_then(|v| i64::try_from(v).ok());
            if let Some(v) = serving {
                if !serve.contains(&v) {
                    serve.push(v);
                }
                default = default.or(Some(v));
            }
        }
        (serve, default)
    }

    /// Whether `model` is the first entry of its served name (the one its
    /// serving-version metric and unversioned requests follow).
    fn is_primary(&self, model: &FollowedModel) -> bool {
        self.models
            .iter()
            .find(|m| m.name == model.name)
            .is_some_and(|m| entry_key(m) == entry_key(model))
    }

    /// The name the served version of `model` is recorded under.
    fn record_name(&self, model: &FollowedModel) -> String {
        if self.is_primary(model) {
            model.name.clone()
        } else {
            entry_key(model)
        }
    }

    async fn report_failure(&self, model: &FollowedModel, version: u64, err: &SyncError) {
        tracing::error!(model = %model.name, version, reason = %err.reason(), error = %err, "registry version refused; the previous version keeps serving");
        self.metrics.failure(&model.name, err.reason());
        self.manager.record_external_failure(
            &model.name,
            &format!("version {version} was refused: {err}"),
        );
        if !err.is_transient() {
            // A bad artifact is not retried by polls until the alias moves;
            // a network or disk failure is.
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(entry_key(model))
                .or_default()
                .failed = Some(version);
        }
        self.cache.remove_stage(&model.name, version).await;
        self.publish(Event::ModelSyncFailed {
            model: model.name.clone(),
            version: i64::try_from(version).unwrap_or(i64::MAX),
            reason: err.reason().to_string(),
            detail: err.to_string(),
            node: self.node.clone(),
        })
        .await;
    }

    async fn publish(&self, event: Event) {
        if let Err(err) = publish_bounded(self.events.as_ref(), &event).await {
            tracing::warn!(error = %err, "cannot publish a model event");
        }
    }

    /// Handles one bus event: an alias move of a followed alias syncs that
    /// model. Transient failures (registry or network down) return an error
    /// so the bus delivers the event again.
    pub async fn on_event(&self, event: Event) -> Result<(), String> {
        let Event::AliasMoved { model, alias, .. } = event else {
            return Ok(());
        };
        for followed in self
            .models
            .iter()
            .filter(|m| m.registered() == model && m.alias.as_deref() == Some(alias.as_str()))
        {
            match self.sync(followed, Trigger::Event).await {
                Err(err) if err.is_transient() => return Err(err.to_string()),
                _ => {}
            }
        }
        Ok(())
    }

    /// The bus handler calling [`Follower::on_event`].
    pub fn handler(self: &Arc<Self>) -> Handler {
        let follower = self.clone();
        handler(move |event| {
            let follower = follower.clone();
            async move { follower.on_event(event).await }
        })
    }

    /// Checks every followed model every `every` until shutdown.
    pub async fn poll(self: Arc<Self>, every: Duration, signal: ShutdownSignal) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => self.sync_all(Trigger::Poll).await,
                _ = signal.clone().wait() => return,
            }
        }
    }
}

/// One entry of `inference.models`: its served name with the alias or the
/// pinned version it follows (`resnet50@production`, `resnet50@v3`).
fn entry_key(model: &FollowedModel) -> String {
    format!("{}@{}", model.name, follows(model))
}

/// What an entry follows: its alias, or `v<N>` when pinned.
fn follows(model: &FollowedModel) -> String {
    match (&model.alias, model.version) {
        (Some(alias), _) => alias.clone(),
        (None, Some(version)) => format!("v{version}"),
        (None, None) => String::new(),
    }
}

/// Runs one inference of zeros (variable dimensions as 1, batch 1) through
/// the version's own scheduler, so its sessions are initialized and proven
/// before it takes traffic.
async fn warm_up(served: &ServedVersion) -> Result<(), SyncError> {
    let inputs = zero_inputs(&served.spec);
    let ticket = served
        .scheduler
        .enqueue(inputs, 0, None, None)
        .map_err(SyncError::Warmup)?;
    ticket.wait().await.map_err(SyncError::Warmup)?;
    Ok(())
}

/// Zeros of every input's shape (batch 1 when the model batches).
pub fn zero_inputs(spec: &ModelSpec) -> RequestInputs {
    let tensors = spec
        .inputs
        .iter()
        .map(|input| {
            let mut shape: Vec<i64> = input.dims.iter().map(|d| (*d).max(1)).collect();
            if spec.max_batch_size > 0 {
                shape.insert(0, 1);
            }
            let count = shape.iter().map(|d| *d as usize).product::<usize>();
            // BYTES elements are length-prefixed: a zero length each.
            let size = input.datatype.element_size().unwrap_or(4);
            InputTensor {
                shape,
                data: Bytes::from(vec![0u8; count * size]),
            }
        })
        .collect();
    RequestInputs { rows: 1, tensors }
}

#[cfg(test)]
#[path = "follow_tests.rs"]
mod tests;
