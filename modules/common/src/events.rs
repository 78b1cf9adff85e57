//! The event bus every role shares, and the one vocabulary of the paper's loop:
//! data arrives (`data_arrived`), a run retrains (`training_run_finished`), a
//! version is registered (`model_version_registered`) and an alias moves
//! (`alias_moved`, to [`aliases::CANARY`]); a rollout starts, steps, and is
//! promoted or aborted (`rollout_*`, moving [`aliases::PRODUCTION`]); drift on
//! served features (`drift_detected`) can start the loop again.
//!
//! Two implementations behind one [`EventBus`] trait:
//! - [`memory::MemoryBus`]: in-process, for roles sharing one process;
//! - [`redis::RedisBus`]: Redis Streams, one stream per topic, one consumer
//!   group per subscriber, acknowledged after the handler succeeds.
//!
//! Delivery is at-least-once in both: a handler that fails sees its event
//! again after `events.retry_delay`, so handlers must be idempotent (the
//! inference role re-resolves the alias on every event, for instance). Each
//! consumer group receives every event of its topic once it exists; events
//! published before a group was created are not replayed to it.
//!
//! Publishing is bounded: [`publish_bounded`] gives up after the bus's
//! [`EventBus::publish_timeout`] (`events.publish_timeout`), so no request
//! waits for Redis to come back. The registry and the feature store do not
//! publish on their request paths at all: their events go through the
//! [`outbox::Outbox`], written in the transaction of the change and sent by
//! a drain task, so an event outlives a bus outage and a crash.

pub mod memory;
pub mod outbox;
pub mod redis;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{EventsBackend, EventsConfig};

/// The wire format version written with every event.
pub const EVENT_FORMAT_VERSION: u32 = 1;

/// The topic of model lifecycle events (versions, aliases, sync outcomes,
/// rollouts).
pub const MODELS_TOPIC: &str = "models";
/// The topic of data events (feature data ingested or materialized).
pub const DATA_TOPIC: &str = "data";
/// The topic of training events (runs finished).
pub const TRAINING_TOPIC: &str = "training";
/// The topic of monitoring findings (drift).
pub const MONITORING_TOPIC: &str = "monitoring";

/// The alias names the loop agrees on. Training moves [`CANARY`]; the
/// monitoring role's rollout watches it and, on promotion, moves
/// [`PRODUCTION`]. Both are defaults that configuration may rename.
pub mod aliases {
    /// The version under trial: registered by a training run, served to a
    /// share of traffic by a rollout.
    pub const CANARY: &str = "canary";
    /// The version serving all traffic once a rollout promotes.
    pub const PRODUCTION: &str = "production";
}

/// Something that happened, as every subscriber sees it. Serialized as JSON
/// with a `type` tag; a type this build does not know arrives as
/// [`Event::Unknown`] so newer producers never break older consumers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A model version became ready in the registry.
    ModelVersionRegistered {
        /// Registered model name.
        model: String,
        /// The new version.
        version: i64,
    },
    /// An alias was set, moved or deleted.
    AliasMoved {
        /// Registered model name.
        model: String,
        /// Alias name (production, staging, ...).
        alias: String,
        /// The version it pointed at before (none: it is new).
        from: Option<i64>,
        /// The version it points at now (none: it was deleted).
        to: Option<i64>,
        /// Who moved it.
        by: String,
        /// When, in microseconds since the Unix epoch.
        at: i64,
    },
    /// An inference node now serves `version` under `model`.
    ModelServing {
        /// Model name as served.
        model: String,
        /// The version now serving.
        version: i64,
        /// The node (consumer name) that switched.
        node: String,
    },
    /// An inference node refused a version; the previous one keeps serving.
    ModelSyncFailed {
        /// Model name as served.
        model: String,
        /// The version that was refused.
        version: i64,
        /// Short machine-readable reason (checksum, download, load, warmup, ...).
        reason: String,
        /// Human-readable detail.
        detail: String,
        /// The node (consumer name) that refused it.
        node: String,
    },
    /// New rows reached a feature view: ingested into the offline store
    /// (`source = "ingest"`) or materialized online (`"materialize"`).
    DataArrived {
        /// Feature view name.
        feature_view: String,
        /// Rows written.
        rows: u64,
        /// `ingest` or `materialize`.
        source: String,
        /// Newest event timestamp among the rows, microseconds since the
        /// Unix epoch (none when unknown).
        newest_event: Option<i64>,
        /// When, in microseconds since the Unix epoch.
        at: i64,
    },
    /// A training run ended (succeeded, failed or cancelled).
    TrainingRunFinished {
        /// Workflow name.
        workflow: String,
        /// Run id.
        run: String,
        /// Final state: `succeeded`, `failed` or `cancelled`.
        state: String,
        /// When, in microseconds since the Unix epoch.
        at: i64,
    },
    /// A rollout started: `canary` is served beside `stable`.
    RolloutStarted {
        /// Registered model name.
        model: String,
        /// The version serving before the rollout (none: nothing was).
        stable: Option<i64>,
        /// The version under trial.
        canary: i64,
        /// When, in microseconds since the Unix epoch.
        at: i64,
    },
    /// A rollout moved to its next step: `weight` percent goes to the canary.
    RolloutStep {
        /// Registered model name.
        model: String,
        /// The version under trial.
        canary: i64,
        /// Percent of traffic to the canary, 0..=100.
        weight: u32,
        /// When, in microseconds since the Unix epoch.
        at: i64,
    },
    /// The canary passed every step and became the production version.
    RolloutPromoted {
        /// Registered model name.
        model: String,
        /// The version promoted.
        version: i64,
        /// When, in microseconds since the Unix epoch.
        at: i64,
    },
    /// The canary failed its analysis (or was aborted by hand): its weight
    /// is 0 and the canary alias is back where it was.
    RolloutAborted {
        /// Registered model name.
        model: String,
        /// The version that was refused.
        canary: i64,
        /// Why, readable (the failed check and its numbers).
        reason: String,
        /// When, in microseconds since the Unix epoch.
        at: i64,
    },
    /// Served inputs or predictions drifted from the reference distribution.
    DriftDetected {
        /// Registered model name.
        model: String,
        /// The version whose traffic drifted.
        version: i64,
        /// The features past the threshold (`prediction` for prediction drift).
        features: Vec<String>,
        /// When, in microseconds since the Unix epoch.
        at: i64,
    },
    /// An event type this build does not know (from a newer producer).
    #[serde(other)]
    Unknown,
}

impl Event {
    /// The topic the event is published on.
    pub fn topic(&self) -> &'static str {
        match self {
            Event::DataArrived { .. } => DATA_TOPIC,
            Event::TrainingRunFinished { .. } => TRAINING_TOPIC,
            Event::DriftDetected { .. } => MONITORING_TOPIC,
            Event::ModelVersionRegistered { .. }
            | Event::AliasMoved { .. }
            | Event::ModelServing { .. }
            | Event::ModelSyncFailed { .. }
            | Event::RolloutStarted { .. }
            | Event::RolloutStep { .. }
            | Event::RolloutPromoted { .. }
            | Event::RolloutAborted { .. }
            | Event::Unknown => MODELS_TOPIC,
        }
    }

    /// The event as the JSON text stored on the wire.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{\"type\":\"unknown\"}".into())
    }

    /// Parses the wire JSON text.
    pub fn from_json(text: &str) -> Result<Event, EventError> {
        serde_json::from_str(text).map_err(|e| EventError::Decode(e.to_string()))
    }
}

/// What can go wrong on the bus itself.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The backend cannot be reached or refused the operation.
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    /// A stored event is not valid JSON for [`Event`].
    #[error("undecodable event: {0}")]
    Decode(String),
    /// Bad configuration (URL, names).
    #[error("invalid event bus configuration: {0}")]
    Config(String),
}

impl EventError {
    /// The shared error code for this error.
    pub fn code(&self) -> mlserve_proto::ErrorCode {
        match self {
            EventError::Unavailable(_) => mlserve_proto::ErrorCode::Unavailable,
            EventError::Decode(_) | EventError::Config(_) => mlserve_proto::ErrorCode::Internal,
        }
    }
}

/// The future a handler returns; `Err` means "not handled, deliver again".
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Handles one event. Must be idempotent: delivery is at-least-once.
pub type Handler = Arc<dyn Fn(Event) -> HandlerFuture + Send + Sync>;

/// Wraps an async closure as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move |event| Box::pin(f(event)))
}

/// A running subscription; dropping it (or [`Subscription::stop`]) ends it.
pub struct Subscription {
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Subscription {
    /// Wraps the task that runs the subscription.
    pub fn new(task: tokio::task::JoinHandle<()>) -> Subscription {
        Subscription {
            tasks: vec![task.abort_handle()],
        }
    }

    /// Also ends `task` (a connection task the subscription owns) when it ends.
    pub fn also_abort<T>(mut self, task: &tokio::task::JoinHandle<T>) -> Subscription {
        self.tasks.push(task.abort_handle());
        self
    }

    /// Ends the subscription now; an event being handled is abandoned (and,
    /// with Redis, stays pending for redelivery).
    pub fn stop(self) {}
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How long a publish may wait for the bus when the bus says nothing.
pub const DEFAULT_PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Publishes events and runs subscriptions.
#[async_trait::async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes `event` on its topic. Returns once the backend accepted it.
    /// May wait while the backend is unreachable: request paths use
    /// [`publish_bounded`].
    async fn publish(&self, event: &Event) -> Result<(), EventError>;

    /// Publishes an event already serialized (`Event::to_json`, as the
    /// outbox stores it) on `topic`, unchanged: an event type this build
    /// does not know travels as it was written. The default decodes it and
    /// calls [`EventBus::publish`].
    async fn publish_json(&self, topic: &str, json: &str) -> Result<(), EventError> {
        let event = Event::from_json(json)?;
        if event.topic() != topic {
            return Err(EventError::Decode(format!(
                "a '{}' event stored for topic '{topic}'",
                event.topic()
            )));
        }
        self.publish(&event).await
    }

    /// How long [`publish_bounded`] waits for this bus to accept an event
    /// (`events.publish_timeout`).
    fn publish_timeout(&self) -> std::time::Duration {
        DEFAULT_PUBLISH_TIMEOUT
    }

    /// Runs `handler` for every event published on `topic` from now on, in
    /// consumer group `group`: each group receives every event; subscribers
    /// sharing a group share its events (one of them gets each).
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        handler: Handler,
    ) -> Result<Subscription, EventError>;

    /// The name of this process among the consumers ("memory" for the
    /// in-process bus).
    fn consumer_name(&self) -> String;
}

/// Slack added to the bus's own timeout before [`publish_bounded`] drops
/// the publish: the Redis bus times its commands out itself (a command that
/// timed out is never sent later), and this outer bound only catches a bus
/// that does not.
const PUBLISH_SLACK: std::time::Duration = std::time::Duration::from_millis(250);

/// Publishes `event` on `bus`, giving up after the bus's
/// [`EventBus::publish_timeout`] (`Unavailable`): what every publisher on a
/// request or control path calls, so none waits for a bus that is down.
pub async fn publish_bounded(bus: &dyn EventBus, event: &Event) -> Result<(), EventError> {
    within_publish_timeout(bus, bus.publish(event)).await
}

/// [`publish_bounded`] for a stored event (`topic`, JSON text).
pub async fn publish_json_bounded(
    bus: &dyn EventBus,
    topic: &str,
    json: &str,
) -> Result<(), EventError> {
    within_publish_timeout(bus, bus.publish_json(topic, json)).await
}

/// `publish` (one of `bus`'s), given up as unavailable past the bus's
/// publish timeout.
async fn within_publish_timeout(
    bus: &dyn EventBus,
    publish: impl std::future::Future<Output = Result<(), EventError>>,
) -> Result<(), EventError> {
    let limit = bus.publish_timeout();
    match tokio::time::timeout(limit + PUBLISH_SLACK, publish).await {
        Ok(result) => result,
        Err(_) => Err(EventError::Unavailable(format!(
            "publish timed out after {} ms",
            limit.as_millis()
        ))),
    }
}

/// The publish timeout `config` sets, within sane bounds (10 ms to 1 h).
pub fn publish_timeout(config: &EventsConfig) -> std::time::Duration {
    config.publish_timeout.clamp(
        std::time::Duration::from_millis(10),
        std::time::Duration::from_secs(3600),
    )
}

/// Helpers of tests that watch a bus. Only with the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::*;

    /// Subscribes (group `test`) a handler that forwards every event of
    /// `topic` to the returned receiver.
    pub async fn watch(
        bus: &dyn EventBus,
        topic: &str,
    ) -> (Subscription, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let forward = handler(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
                Ok(())
            }
        });
        let subscription = bus
            .subscribe(topic, "test", forward)
            .await
            .unwrap_or_else(|e| panic!("cannot subscribe to '{topic}': {e}"));
        (subscription, rx)
    }
}

/// The bus `config` asks for: in-process, or Redis Streams (connected now:
/// an unreachable Redis is an error at start, not later).
pub async fn connect(config: &EventsConfig) -> Result<Arc<dyn EventBus>, EventError> {
    match config.backend {
        EventsBackend::Memory => Ok(Arc::new(memory::MemoryBus::new(config))),
        EventsBackend::Redis => Ok(Arc::new(redis::RedisBus::connect(config).await?)),
    }
}

/// This machine's name: `$HOSTNAME` (a Kubernetes pod's name), else the
/// kernel's host name, else `mlserve`.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mlserve".into())
}

/// `<hostname>-<pid>`: the default consumer name of this process.
pub fn default_consumer_name() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

/// The consumer name `config` sets, or [`default_consumer_name`].
pub fn consumer_name(config: &EventsConfig) -> String {
    match config.consumer.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => default_consumer_name(),
    }
}

fn retry_delay(config: &EventsConfig) -> std::time::Duration {
    config.retry_delay.clamp(
        std::time::Duration::from_millis(10),
        std::time::Duration::from_secs(3600),
    )
}
