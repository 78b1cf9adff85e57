//! mlserve's monitoring role: it reads the other roles' metrics (in-process,
//! or by scraping their metrics endpoints), keeps sliding windows of each
//! model version's requests, errors and latency ([`window`], [`scrape`]),
//! and drives progressive delivery: rollouts that move a model's traffic to
//! a canary by steps, check it every interval ([`analysis`]) and promote or
//! abort by themselves ([`engine`]), stored in SQL ([`store`]) and served
//! through the `MonitoringService` contract ([`service`], [`http`]). It
//! also compares the served rows the gateways log with each version's
//! reference and reports drift ([`drift`], [`drift_watch`]).

pub mod alerts;
pub mod analysis;
pub mod drift;
pub mod drift_watch;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod scrape;
pub mod service;
pub mod store;
pub mod window;

use std::sync::Arc;
use std::time::Duration;

use mlserve_common::events::{handler, Event, EventBus, Subscription, MODELS_TOPIC};
use mlserve_common::ShutdownSignal;

pub use engine::{Engine, EngineParts};
pub use scrape::Sources;

/// The consumer group of the rollout trigger.
pub const ROLLOUT_GROUP: &str = "monitoring-rollouts";

/// Reads `sources` every `every` and then carries the rollouts on, until
/// `shutdown`.
pub async fn run(
    engine: Arc<Engine>,
    sources: Sources,
    every: Duration,
    metrics: Arc<metrics::MonitoringMetrics>,
    shutdown: ShutdownSignal,
) {
    let mut ticks = shutdown.ticks(every.max(Duration::from_millis(50)));
    while ticks.next().await {
        let reading = sources.read().await;
        metrics.read(reading.failed > 0);
        engine.observe(reading);
        engine.tick().await;
    }
}

/// Starts a rollout whenever `trigger_alias` moves to a version (unless
/// this role moved it: an abort restoring it).
pub async fn subscribe(
    engine: Arc<Engine>,
    events: &Arc<dyn EventBus>,
    trigger_alias: String,
) -> Result<Option<Subscription>, String> {
    if trigger_alias.is_empty() {
        return Ok(None);
    }
    let on_event = handler(move |event| {
        let (engine, trigger) = (engine.clone(), trigger_alias.clone());
        async move {
            if let Event::AliasMoved {
                model,
                alias,
                from,
                to: Some(to),
                by,
                ..
            } = event
            {
                if alias == trigger && !by.starts_with("monitoring:") && to > 0 {
                    let from = from.and_then(|v| u64::try_from(v).ok());
                    engine.on_alias_moved(&model, to as u64, from, &by).await;
                }
            }
            Ok(())
        }
    });
    events
        .subscribe(MODELS_TOPIC, ROLLOUT_GROUP, on_event)
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}
