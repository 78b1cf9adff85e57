//! The features role: definitions and the offline store in SQL, the online
//! store (memory or Redis), REST under `/v1/features/`, the gRPC
//! `features.FeatureService`, and the local client for the gateway.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use mlserve_common::config::{FeaturesConfig, OnlineStoreKind};
use mlserve_common::{db, Database, Databases};
use mlserve_features::online::{MemoryStore, OnlineStore, RedisStore};
use mlserve_features::transform::PipelineSpec;
use mlserve_features::{LocalFeatures, Options};
use mlserve_proto::features::{features_grpc_server, FeatureService, FeaturesClient};

use super::Node;

/// Opens the features role's SQL database (the embedded SQLite by default),
/// sharing the pool of any role of this process that opened it already.
pub async fn database(config: &mlserve_common::Config, databases: &Databases) -> Result<Database> {
    let url = database_url(config);
    databases
        .open(&url)
        .await
        .context("features: cannot open the database")
}

/// The features role's database URL (the embedded SQLite by default).
fn database_url(config: &mlserve_common::Config) -> String {
    match &config.features.database_url {
        Some(url) => url.clone(),
        None => db::default_url(&config.server.data_dir),
    }
}

/// Connects the configured online store.
pub async fn online_store(settings: &FeaturesConfig) -> Result<Arc<dyn OnlineStore>> {
    Ok(match settings.online_store {
        OnlineStoreKind::Memory => Arc::new(MemoryStore::default()),
        OnlineStoreKind::Redis => Arc::new(
            RedisStore::connect(mlserve_features::online::RedisOptions {
                url: settings.redis_url.clone(),
                prefix: settings.redis_key_prefix.clone(),
                command_timeout: settings.redis_command_timeout.max(Duration::from_millis(1)),
                connect_timeout: settings.redis_connect_timeout.max(Duration::from_millis(1)),
                reconnect_delay_ms: u32::try_from(settings.redis_reconnect_delay.as_millis())
                    .unwrap_or(u32::MAX)
                    .max(1),
            })
            .await
            .map_err(|e| anyhow::anyhow!("features: {e}"))?,
        ),
    })
}

/// The pipelines of `[features.pipelines.<model>]`.
pub fn configured_pipelines(
    settings: &FeaturesConfig,
) -> Result<std::collections::BTreeMap<String, PipelineSpec>> {
    let mut pipelines = std::collections::BTreeMap::new();
    for (model, table) in &settings.pipelines {
        let spec = PipelineSpec::from_config(table, model)
            .map_err(|e| anyhow::anyhow!("features.pipelines.{model}: {e}"))?;
        pipelines.insert(model.clone(), spec);
    }
    Ok(pipelines)
}

/// Builds the local feature service from the configuration.
pub async fn local(
    config: &mlserve_common::Config,
    databases: &Databases,
) -> Result<LocalFeatures> {
    let settings = &config.features;
    let options = Options {
        max_entities: settings.max_entities_per_request.max(1),
        mean_refresh: settings.mean_refresh,
        served_retention: settings.served_retention,
        pipelines: configured_pipelines(settings)?,
    };
    let db = database(config, databases).await?;
    let online = online_store(settings).await?;
    Ok(LocalFeatures::new(db, online, options))
}

/// Adds the features role to `node`.
pub async fn start(node: &mut Node) -> Result<()> {
    // data_arrived goes on the node's bus (the training role's triggers);
    // with Redis, written to the outbox with the offline rows and sent by
    // its drain task.
    let db = database(&node.config, &node.databases).await?;
    let outbox = node.outbox(&database_url(&node.config), &db);
    let mut features = local(&node.config, &node.databases)
        .await?
        .with_events(node.events.clone());
    if let Some(outbox) = outbox {
        features = features.with_outbox(outbox);
    }
    let local = Arc::new(features);
    tracing::info!(online_store = local.online_store(), "features role started");
    let stats = local.stats();
    let metered: Arc<dyn FeatureService> =
        Arc::new(mlserve_features::metrics::observed(local, stats.clone()));
    node.metrics.register_collector(Box::new(stats));
    let max_body = node.config.server.http_max_body_bytes;
    let client = FeaturesClient::from_arc(metered.clone());
    node.add_routes(mlserve_features::http::routes(
        client.clone(),
        max_body,
        node.config.features.max_entities_per_request.max(1),
    ));
    node.grpc
        .add_service(features_grpc_server(metered, max_body));
    node.clients.features = Some(client);
    Ok(())
}
