//! The registry role: metadata in SQL, artifacts in an object store, REST
//! under `/v1/registry/`, the gRPC `registry.RegistryService`, events on the
//! node's bus (through the event outbox), the orphan collector, and the local client for other roles.

use std::sync::Arc;

use anyhow::{Context, Result};
use mlserve_common::db;
use mlserve_proto::registry::{registry_grpc_server, RegistryClient};
use mlserve_registry::artifacts::Artifacts;
use mlserve_registry::store::Store;
use mlserve_registry::upload::Limits;
use mlserve_registry::LocalRegistry;

use super::Node;

/// Adds the registry role to `node`.
pub async fn start(node: &mut Node) -> Result<()> {
    let settings = node.config.registry.clone();
    let data_dir = node.config.server.data_dir.clone();
    let url = match &settings.database_url {
        Some(url) => url.clone(),
        None => db::default_url(&data_dir),
    };
    let database = node
        .databases
        .open(&url)
        .await
        .context("registry: cannot open the database")?;
    let artifacts = Artifacts::from_config(&settings, &data_dir)
        .map_err(|e| anyhow::anyhow!("registry: artifact store: {e}"))?;
    tracing::info!(dialect = ?database.dialect, store = ?artifacts, "registry storage");
    let limits = Limits {
        max_bytes: settings.max_upload_bytes,
        max_files: settings.max_files_per_version.max(1),
    };
    // With Redis, version and alias events are written with their changes
    // and sent by the outbox's drain task.
    let outbox = node.outbox(&url, &database);
    let mut registry = LocalRegistry::new(
        Store::new(database),
        artifacts,
        Some(node.events.clone()),
        limits,
    );
    if let Some(outbox) = outbox {
        registry = registry.with_outbox(outbox);
    }
    let local = Arc::new(registry.with_test_hooks(&settings));
    let client = RegistryClient::from_arc(local.clone());
    node.metrics
        .register_collector(Box::new(local.metrics().clone()));
    node.clients.registry = Some(client.clone());
    node.add_routes(mlserve_registry::http::routes(client.clone()));
    let max_message_bytes = node.config.server.http_max_body_bytes;
    node.grpc
        .add_service(registry_grpc_server(local.clone(), max_message_bytes));

    let grace = settings.gc_grace;
    let every = settings.gc_interval;
    let signal = node.shutdown.signal();
    tokio::spawn(async move {
        loop {
            if let Err(err) = local.collect_garbage(grace).await {
                tracing::warn!(error = %err, "registry orphan collection failed");
            }
            if every.is_zero() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = signal.clone().wait() => return,
            }
        }
    });
    Ok(())
}
