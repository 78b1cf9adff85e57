//! Wires the enabled roles into one [`Node`] and runs it until shutdown.
//! One file per service under `serve/`; each adds its routes, gRPC services,
//! metrics and clients to the node.

mod clients;
mod connections;
#[cfg(feature = "features")]
pub mod features;
#[cfg(feature = "gateway")]
mod gateway;
mod grpc_connections;
mod http_io;
#[cfg(feature = "inference")]
mod inference;
mod listen;
mod listener_metrics;
#[cfg(feature = "monitoring")]
mod monitoring;
mod node;
mod readiness;
#[cfg(feature = "registry")]
mod registry;
#[cfg(feature = "training")]
mod training;

use anyhow::Result;
use mlserve_common::{Config, Role};

pub use http_io::HttpIoThreads;
pub use node::Node;

/// The client of `role`'s service at `endpoint` (its `<role>.endpoint`
/// setting) when this process does not run the role itself; `None` when it
/// does (the role adds its local client) or no endpoint is set.
fn remote<C, E: std::fmt::Display>(
    roles: &[Role],
    role: Role,
    endpoint: &Option<String>,
    connect: impl Fn(&str) -> Result<C, E>,
) -> Result<Option<C>> {
    match endpoint {
        Some(uri) if !roles.contains(&role) => connect(uri)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{role}.endpoint: {e}")),
        _ => Ok(None),
    }
}

/// Runs `roles` until SIGTERM or SIGINT, then drains within the grace
/// period; ONNX Runtime gets `ort_cores`, HTTP connections `http_io`.
pub async fn run(
    config: Config,
    roles: Vec<Role>,
    ort_cores: usize,
    http_io: HttpIoThreads,
) -> Result<()> {
    let grace = config.server.shutdown_grace;
    let mut node = Node::new(config, roles.clone(), http_io);
    node.events = mlserve_common::events::connect(&node.config.events)
        .await
        .map_err(anyhow::Error::msg)?;
    // Services whose roles run in another process, reached over gRPC.
    let grpc = mlserve_proto::rpc::GrpcOptions::with_internal_token(
        node.config.server.internal_token.as_deref(),
    );
    let config = &node.config;
    node.clients.registry = remote(&roles, Role::Registry, &config.registry.endpoint, |uri| {
        mlserve_proto::registry::RegistryClient::connect_lazy(uri, &grpc)
    })?;
    node.clients.features = remote(&roles, Role::Features, &config.features.endpoint, |uri| {
        mlserve_proto::features::FeaturesClient::connect_lazy(uri, &grpc)
    })?;
    node.clients.training = remote(&roles, Role::Training, &config.training.endpoint, |uri| {
        mlserve_proto::training::TrainingClient::connect_lazy(uri, &grpc)
    })?;
    node.clients.monitoring = remote(
        &roles,
        Role::Monitoring,
        &config.monitoring.endpoint,
        |uri| mlserve_proto::monitoring::MonitoringClient::connect_lazy(uri, &grpc),
    )?;
    // Role::ALL is the start-up order: the services others call come first,
    // so their local clients exist when the callers start.
    for role in Role::ALL.iter().filter(|r| roles.contains(r)) {
        match role {
            #[cfg(feature = "registry")]
            Role::Registry => registry::start(&mut node).await?,
            #[cfg(feature = "inference")]
            Role::Inference => inference::start(&mut node, ort_cores).await?,
            #[cfg(feature = "features")]
            Role::Features => features::start(&mut node).await?,
            #[cfg(feature = "gateway")]
            Role::Gateway => gateway::start(&mut node).await?,
            #[cfg(feature = "training")]
            Role::Training => training::start(&mut node).await?,
            #[cfg(feature = "monitoring")]
            Role::Monitoring => monitoring::start(&mut node).await?,
            #[allow(unreachable_patterns)]
            other => anyhow::bail!("role '{other}' is not implemented in this build"),
        }
    }
    let _ = ort_cores;
    node.serve().await?;
    wait_for_signal().await;
    tracing::info!("shutdown signal received: readiness off, draining in-flight requests");
    for hook in std::mem::take(&mut node.on_shutdown) {
        hook();
    }
    node.shutdown.trigger();
    let mut servers = std::mem::take(&mut node.servers);
    let drained = tokio::time::timeout(grace, async {
        while let Some(result) = servers.join_next().await {
            match result {
                Ok(Err(err)) => tracing::error!(error = %err, "server stopped with an error"),
                Err(err) => tracing::error!(error = %err, "server task failed"),
                Ok(Ok(())) => {}
            }
        }
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("all requests drained, exiting"),
        Err(_) => tracing::warn!(
            grace_secs = grace.as_secs_f64(),
            "grace period over, exiting with requests in flight"
        ),
    }
    Ok(())
}
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
