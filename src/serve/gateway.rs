//! The gateway role: its own external listeners (`gateway.http_port`,
//! `gateway.grpc_port`) serving the Open Inference Protocol, the predict API
//! and the canary admin API through authentication, rate limits and the
//! routing client; its metrics join the node's.

use std::sync::Arc;

use anyhow::{Context, Result};
use mlserve_common::Role;
use mlserve_gateway::admin_api::RoleProbe;
use mlserve_gateway::grpc::GatewayLayer;
use mlserve_gateway::Gateway;
use mlserve_proto::http::with_error_fallbacks;
use mlserve_proto::inference::inference_grpc_server;

use super::connections::{self, ConnectionLimits};
use super::grpc_connections::{grpc_incoming, GrpcLimits};
use super::listen::{bind, grpc_server};
use super::Node;

/// Adds the gateway role to `node` and starts its listeners.
pub async fn start(node: &mut Node) -> Result<()> {
    let gateway = Arc::new(
        Gateway::build(
            &node.config,
            node.clients.inference.clone(),
            node.clients.features.clone(),
            node.clients.registry.clone(),
            &node.databases,
            node.shutdown.signal(),
        )
        .await?,
    );
    let settings = gateway.settings.clone();
    let host = node.config.server.host.clone();
    follow_rollouts(node, gateway.clone()).await?;

    let http = bind(&host, settings.http_port, "gateway-http").await?;
    let http_addr = http.local_addr()?;
    let routes = mlserve_gateway::http::routes(gateway.clone(), services(node), role_probes(node)?);
    let router = mlserve_gateway::http::with_cors(&gateway, with_error_fallbacks(routes));
    let signal = node.shutdown.signal();
    let limits = ConnectionLimits::of(
        &node.config.server,
        node.bodies.clone(),
        node.refused.clone(),
        node.http_io.clone(),
    );
    node.servers.spawn(async move {
        connections::serve(http, router, limits, signal)
            .await
            .context("gateway http server failed")
    });

    let grpc = bind(&host, settings.grpc_port, "gateway-grpc").await?;
    let grpc_addr = grpc.local_addr()?;
    let service = inference_grpc_server(
        gateway.scoped.clone(),
        node.config.server.http_max_body_bytes,
    );
    let signal = node.shutdown.signal();
    let layer = GatewayLayer::new(gateway.clone());
    // grpc.health.v1 on the gateway's own port too (probes, load balancers):
    // serving while the process runs, not serving from the shutdown signal.
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    node.on_shutdown.push(Box::new(move || {
        tokio::spawn(async move {
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await
        });
    }));
    let grpc_limits = GrpcLimits::of(&node.config.server, node.refused.clone());
    node.servers.spawn(async move {
        grpc_server()
            .layer(layer)
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(grpc_incoming(grpc, grpc_limits), signal.wait())
            .await
            .context("gateway grpc server failed")
    });

    node.metrics
        .register_collector(Box::new(mlserve_gateway::metrics::GatewayCollector::new(
            gateway.metrics.clone(),
            gateway.router.endpoints().clone(),
        )));
    let endpoints: Vec<String> = gateway
        .router
        .endpoints()
        .snapshot()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    tracing::info!(
        http = %http_addr,
        grpc = %grpc_addr,
        endpoints = ?endpoints,
        auth = ?settings.auth,
        "gateway ready"
    );
    Ok(())
}

/// The other services' REST APIs the gateway serves to users (the same
/// routes as the node's, over this process's clients: local, or remote
/// over gRPC with the internal token), each behind its scope.
fn services(node: &Node) -> axum::Router {
    let max_body = node.config.server.http_max_body_bytes;
    let mut router = axum::Router::new();
    #[cfg(feature = "registry")]
    if let Some(client) = node.clients.registry.clone() {
        router = router.merge(mlserve_registry::http::routes(client));
    }
    #[cfg(feature = "features")]
    if let Some(client) = node.clients.features.clone() {
        router = router.merge(mlserve_features::http::routes(
            client,
            max_body,
            node.config.features.max_entities_per_request.max(1),
        ));
    }
    #[cfg(feature = "training")]
    if let Some(client) = node.clients.training.clone() {
        router = router.merge(mlserve_training::http::routes(client, max_body));
    }
    #[cfg(feature = "monitoring")]
    if let Some(client) = node.clients.monitoring.clone() {
        router = router.merge(mlserve_monitoring::http::routes(client, max_body));
    }
    let _ = max_body;
    router
}

/// The roles besides inference and the gateway, as `GET /v1/gateway/roles`
/// reports them: in this process, or at their configured endpoint.
fn role_probes(node: &Node) -> Result<Vec<RoleProbe>> {
    let config = &node.config;
    let mut probes = Vec::new();
    for (role, endpoint) in [
        (Role::Registry, &config.registry.endpoint),
        (Role::Features, &config.features.endpoint),
        (Role::Training, &config.training.endpoint),
        (Role::Monitoring, &config.monitoring.endpoint),
    ] {
        if node.roles.contains(&role) {
            probes.push(RoleProbe::local(role.as_str()));
        } else if let Some(endpoint) = endpoint {
            probes.push(RoleProbe::remote(role.as_str(), endpoint).map_err(anyhow::Error::msg)?);
        }
    }
    Ok(probes)
}

/// Reloads the traffic splits at once when a rollout moves (besides the
/// periodic reload): each gateway process is a consumer group of its own,
/// so every one of them sees every `rollout_*` event.
async fn follow_rollouts(node: &mut Node, gateway: Arc<Gateway>) -> Result<()> {
    use mlserve_common::events::{handler, Event, MODELS_TOPIC};
    let on_event = handler(move |event| {
        let gateway = gateway.clone();
        async move {
            match event {
                Event::RolloutStarted { .. }
                | Event::RolloutStep { .. }
                | Event::RolloutPromoted { .. }
                | Event::RolloutAborted { .. } => {
                    gateway.canary.refresh().await.map_err(|e| e.to_string())
                }
                _ => Ok(()),
            }
        }
    });
    let group = format!("gateway-splits-{}", node.events.consumer_name());
    let subscription = node
        .events
        .subscribe(MODELS_TOPIC, &group, on_event)
        .await
        .map_err(|e| anyhow::anyhow!("gateway: cannot subscribe to rollout events: {e}"))?;
    let signal = node.shutdown.signal();
    tokio::spawn(async move {
        signal.wait().await;
        drop(subscription);
    });
    Ok(())
}
