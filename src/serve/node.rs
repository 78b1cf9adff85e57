//! What the roles of one process share: one HTTP listener (every role's REST
//! routes), one gRPC listener (every role's gRPC services plus
//! `grpc.health.v1`), one metrics listener, the shutdown signal, and the
//! clients of every service, local or remote.

use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use axum::routing::get;
use mlserve_common::config::{EventsBackend, ServerConfig};
use mlserve_common::events::outbox::{Outbox, Outboxes};
use mlserve_common::events::{memory::MemoryBus, EventBus};
use mlserve_common::metrics::{self, Registry};
use mlserve_common::{Config, Database, Databases, Role, Shutdown};
use mlserve_proto::body_guard::{BodyBudget, BodyGuard, BodyPace};
use mlserve_proto::http::{with_error_fallbacks, with_internal_token};
use mlserve_proto::internal_auth::{InternalAuthLayer, InternalToken};
use tokio::task::JoinSet;

use super::clients::Clients;
use super::connections::ConnectionLimits;
use super::grpc_connections::{grpc_incoming, GrpcLimits};
use super::http_io::HttpIoThreads;
use super::listen::{bind, grpc_server, serve_http};
use super::listener_metrics::{ListenerCollector, RefusedConnections};
use super::readiness::Readiness;

/// Streams a client may reset before the server accepts them, per connection,
/// before the server answers GOAWAY (h2's rapid-reset guard; its default is
/// 20). The node's gRPC port serves internal callers such as the gateway,
/// which cancels a downstream call whenever its own caller gives up: under a
/// burst that is hundreds of legitimate resets, and a GOAWAY would fail every
/// other request on the connection. Still bounded, so the guard stays.
const GRPC_MAX_PENDING_RESETS: usize = 4096;

/// A process under construction: each role adds its routes, services,
/// metrics, background tasks and shutdown hooks, then [`Node::serve`] binds
/// the shared listeners.
pub struct Node {
    /// The whole configuration.
    pub config: Config,
    /// The roles this process runs.
    pub roles: Vec<Role>,
    /// Triggered once on SIGTERM/SIGINT after the shutdown hooks ran.
    pub shutdown: Shutdown,
    /// Every role's REST routes, merged (no fallbacks: added once at the end).
    pub http: axum::Router,
    /// Every role's gRPC services.
    pub grpc: tonic::service::RoutesBuilder,
    /// The process's readiness (`grpc.health.v1` service "", `/health/ready`).
    pub readiness: Readiness,
    /// The process's one metrics registry: every role registers its
    /// metrics and collectors here; `/metrics` on the metrics port encodes it.
    pub metrics: Registry,
    /// The same registry once [`Node::serve`] took it, for a role that
    /// reads this process's metrics in-process (monitoring).
    pub metrics_served: Arc<OnceLock<Arc<Registry>>>,
    /// Long-running servers whose end the shutdown waits for (drain).
    pub servers: JoinSet<Result<()>>,
    /// Run first on shutdown (readiness off), before listeners stop.
    pub on_shutdown: Vec<Box<dyn FnOnce() + Send>>,
    /// The clients of every service, local or remote.
    pub clients: Clients,
    /// The event bus every role of this process shares (in-process by
    /// default; Redis Streams when `events.backend = "redis"`, connected in
    /// [`super::run`] before the roles start).
    pub events: Arc<dyn EventBus>,
    /// The SQL databases the roles opened, one pool per URL: roles naming
    /// the same database share its pool.
    pub databases: Databases,
    /// The event outboxes of those databases (registry, features), one per
    /// URL, each with its drain task publishing on [`Node::events`].
    pub outboxes: Outboxes,
    /// Set by a role that reports readiness itself (inference: after the
    /// initial model loads); otherwise the process is ready once serving.
    pub readiness_owned: bool,
    /// The budget and pace of request bodies, shared by every HTTP listener
    /// of the process (the node's and the gateway's).
    pub bodies: BodyGuard,
    /// Connections the process's listeners refused (their metrics).
    pub refused: Arc<RefusedConnections>,
    /// The threads that serve the process's HTTP/1.1 connections (none:
    /// connections are tasks on the process's runtime).
    pub http_io: HttpIoThreads,
}

impl Node {
    /// An empty node for `config`, serving HTTP/1.1 on `http_io`.
    pub fn new(config: Config, roles: Vec<Role>, http_io: HttpIoThreads) -> Node {
        let events: Arc<dyn EventBus> = Arc::new(MemoryBus::new(&config.events));
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut grpc = tonic::service::RoutesBuilder::default();
        grpc.add_service(health_service);
        let bodies = body_guard(&config.server);
        let refused = Arc::new(RefusedConnections::default());
        let mut metrics = Registry::default();
        metrics.register_collector(Box::new(ListenerCollector {
            budget: bodies.budget().clone(),
            refused: refused.clone(),
        }));
        Node {
            bodies,
            refused,
            http_io,
            config,
            roles,
            shutdown: Shutdown::new(),
            http: axum::Router::new(),
            grpc,
            readiness: Readiness::new(health),
            metrics,
            metrics_served: Arc::new(OnceLock::new()),
            servers: JoinSet::new(),
            on_shutdown: Vec::new(),
            clients: Clients::default(),
            events,
            databases: Databases::default(),
            outboxes: Outboxes::default(),
            readiness_owned: false,
        }
    }

    /// The event outbox of the database at `url` (pool `db`), shared by
    /// the roles of this process that write to it; its drain task starts
    /// on the first call, on [`Node::events`]. The first outbox also
    /// registers the `mlserve_events_outbox_pending` gauge.
    ///
    /// None with the in-process bus: its publish cannot fail or wait, and
    /// its events belong to this process, while a drain of a database that
    /// other processes share could take their rows and deliver them here.
    pub fn outbox(&mut self, url: &str, db: &Database) -> Option<Arc<Outbox>> {
        if self.config.events.backend == EventsBackend::Memory {
            return None;
        }
        let poll = self.config.events.outbox_poll;
        let signal = self.shutdown.signal();
        let (outbox, created) = self.outboxes.open(url, db, &self.events, poll, &signal);
        if created && self.outboxes.len() == 1 {
            self.metrics
                .register_collector(Box::new(self.outboxes.clone()));
        }
        Some(outbox)
    }

    /// Adds a role's REST routes to the shared HTTP listener.
    pub fn add_routes(&mut self, routes: axum::Router) {
        let current = std::mem::take(&mut self.http);
        self.http = current.merge(routes);
    }

    /// Binds the shared listeners and starts serving them.
    pub async fn serve(&mut self) -> Result<()> {
        let server = self.config.server.clone();
        let token =
            InternalToken::new(server.internal_token.as_deref()).map_err(anyhow::Error::msg)?;
        let node_host = server.node_bind_host();
        if server.node_ports_open() {
            tracing::warn!(
                node_host,
                "the node's listeners serve every role's API to the network without credentials (no server.internal_token)"
            );
        }
        let http = bind(node_host, server.http_port, "http").await?;
        let routes = std::mem::take(&mut self.http).merge(self.readiness.routes());
        let router = with_internal_token(with_error_fallbacks(routes), token.clone());
        let limits = ConnectionLimits::of(
            &server,
            self.bodies.clone(),
            self.refused.clone(),
            self.http_io.clone(),
        );
        let grpc_limits = GrpcLimits::of(&server, self.refused.clone());
        self.servers.spawn(serve_http(
            http,
            router,
            limits.clone(),
            self.shutdown.signal(),
        ));

        let grpc = bind(node_host, server.grpc_port, "grpc").await?;
        if !self.readiness_owned {
            self.readiness.set(true).await;
            tracing::info!("server ready");
        }
        let routes = std::mem::take(&mut self.grpc).routes();
        let signal = self.shutdown.signal();
        self.servers.spawn(async move {
            grpc_server()
                .layer(InternalAuthLayer(token))
                .http2_max_pending_accept_reset_streams(Some(GRPC_MAX_PENDING_RESETS))
                .http2_max_local_error_reset_streams(Some(GRPC_MAX_PENDING_RESETS))
                .add_routes(routes)
                .serve_with_incoming_shutdown(grpc_incoming(grpc, grpc_limits), signal.wait())
                .await
                .context("grpc server failed")
        });

        let metrics = bind(&server.host, server.metrics_port, "metrics").await?;
        let registry = Arc::new(std::mem::take(&mut self.metrics));
        let _ = self.metrics_served.set(registry.clone());
        let metrics_router = axum::Router::new().route(
            "/metrics",
            get(move || {
                let text = metrics::encode(&registry);
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                        text,
                    )
                }
            }),
        );
        self.servers.spawn(serve_http(
            metrics,
            metrics_router,
            limits,
            self.shutdown.signal(),
        ));

        let readiness = self.readiness.clone();
        self.on_shutdown.push(Box::new(move || {
            tokio::spawn(async move { readiness.set(false).await });
        }));
        Ok(())
    }
}

/// The process's guard of request bodies, from `[server]`.
fn body_guard(server: &ServerConfig) -> BodyGuard {
    let budget = BodyBudget::new(
        server.http_body_budget_bytes,
        server.http_max_body_bytes as u64,
    );
    let pace = BodyPace {
        grace: server.http_header_read_timeout,
        min_bytes_per_sec: server.http_body_min_bytes_per_sec,
    };
    BodyGuard::new(budget, pace)
}
