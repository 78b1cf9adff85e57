//! The monitoring role: sliding windows over the other roles' metrics (read
//! in-process, or scraped from `monitoring.scrape_targets`), rollouts in the
//! gateways' database, REST under `/v1/monitoring/` and the gRPC
//! `monitoring.MonitoringService`; a move of the trigger alias starts a
//! rollout. Drift analysis reads the request log through the features role.

use std::sync::Arc;

use anyhow::{Context, Result};
use mlserve_gateway::canary::CanaryTable;
use mlserve_monitoring::drift_watch::DriftWatch;
use mlserve_monitoring::metrics::{MonitoringCollector, MonitoringMetrics};
use mlserve_monitoring::service::LocalMonitoring;
use mlserve_monitoring::store::Store;
use mlserve_monitoring::{Engine, EngineParts, Sources};
use mlserve_proto::monitoring::{monitoring_grpc_server, MonitoringClient};

use super::Node;

/// Adds the monitoring role to `node`.
pub async fn start(node: &mut Node) -> Result<()> {
    let config = node.config.clone();
    let settings = &config.monitoring;
    let defaults = settings.rollouts.clone();
    defaults
        .resolved_steps()
        .map_err(|e| anyhow::anyhow!("monitoring.rollouts: {e}"))?;
    let url = settings
        .database_url
        .clone()
        .or_else(|| config.gateway.database_url.clone())
        .unwrap_or_else(|| mlserve_common::db::default_url(&config.server.data_dir));
    let database = node
        .databases
        .open(&url)
        .await
        .context("monitoring: cannot open the database")?;
    let registry = node.clients.registry.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "the monitoring role needs the registry: run the registry role in this process or set registry.endpoint"
        )
    })?;
    let splits = Arc::new(
        CanaryTable::stored(database.clone(), &Default::default())
            .await
            .map_err(|e| anyhow::anyhow!("monitoring: traffic splits: {e}"))?,
    );
    let metrics = Arc::new(MonitoringMetrics::default());
    let webhook = settings.alert_webhook.clone().map(|url| {
        mlserve_monitoring::alerts::Webhook::new(
            url,
            settings.alert_webhook_tries,
            settings.alert_webhook_retry_delay,
        )
    });
    let drift = drift_watch(node, webhook.clone());
    let engine = Engine::new(EngineParts {
        store: Store::new(database),
        splits,
        registry,
        events: node.events.clone(),
        defaults: defaults.clone(),
        window: settings.window,
        metrics: metrics.clone(),
        webhook,
    });
    let sources = if settings.scrape_targets.is_empty() {
        let served = node.metrics_served.clone();
        Sources::Local(Arc::new(move || {
            served
                .get()
                .map(|registry| mlserve_common::metrics::encode(registry))
        }))
    } else {
        Sources::targets(
            settings.scrape_targets.clone(),
            settings
                .scrape_interval
                .max(std::time::Duration::from_millis(500)),
            config.server.internal_token.clone(),
        )
    };
    let subscription =
        mlserve_monitoring::subscribe(engine.clone(), &node.events, defaults.trigger_alias)
            .await
            .map_err(|e| anyhow::anyhow!("monitoring: cannot subscribe to events: {e}"))?;
    let signal = node.shutdown.signal();
    let every = settings.scrape_interval;
    let driver = engine.clone();
    let loop_metrics = metrics.clone();
    tokio::spawn(async move {
        mlserve_monitoring::run(driver, sources, every, loop_metrics, signal).await;
        drop(subscription);
    });
    if let Some(drift) = &drift {
        tokio::spawn(drift.clone().run(node.shutdown.signal()));
    }
    node.metrics.register_collector(Box::new(
        MonitoringCollector::new(metrics, engine.clone()).with_drift(drift.clone()),
    ));
    let local = Arc::new(LocalMonitoring::new(engine).with_drift(drift));
    let client = MonitoringClient::from_arc(local.clone());
    node.clients.monitoring = Some(client.clone());
    node.add_routes(mlserve_monitoring::http::routes(
        client,
        config.server.http_max_body_bytes,
    ));
    node.grpc.add_service(monitoring_grpc_server(
        local,
        config.server.http_max_body_bytes,
    ));
    tracing::info!(
        targets = ?settings.scrape_targets,
        trigger = %settings.rollouts.trigger_alias,
        "monitoring role started"
    );
    Ok(())
}

/// The drift analysis, when it is on and the request log can be read (the
/// features role here, or at `features.endpoint`).
fn drift_watch(
    node: &Node,
    webhook: Option<mlserve_monitoring::alerts::Webhook>,
) -> Option<Arc<DriftWatch>> {
    let settings = node.config.monitoring.drift.clone();
    if settings.interval.is_zero() {
        return None;
    }
    let Some(features) = node.clients.features.clone() else {
        tracing::info!(
            "drift analysis is off: no features role here and no features.endpoint to read the request log from"
        );
        return None;
    };
    Some(Arc::new(DriftWatch::new(
        features,
        node.events.clone(),
        settings,
        webhook,
    )))
}
