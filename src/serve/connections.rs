//! How the HTTP listeners (the node's v2/REST and metrics ports, the
//! gateway's HTTP port) take connections: HTTP/1.1 through hyper with a
//! timer, so that a client has `server.http_header_read_timeout` to send each
//! request's headers (a connect-only, trickling or idle connection is cut
//! off), at most `server.http_max_connections` connections at once (one more
//! is closed as soon as it is accepted), every request's body under the
//! process's budget and pace ([`mlserve_proto::body_guard`]), Nagle off, the peer's address as
//! axum's `ConnectInfo`, each connection on one of the process's HTTP I/O
//! threads ([`HttpIoThreads`]), and a graceful shutdown that stops accepting, lets
//! requests in flight finish and closes idle connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use mlserve_common::config::ServerConfig;
use mlserve_common::ShutdownSignal;
use mlserve_proto::body_guard::BodyGuard;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;

use super::http_io::HttpIoThreads;
use super::listener_metrics::{Refusal, RefusedConnections};

/// Bounds on one HTTP listener's connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Time a connection has to send a request's headers once the server
    /// waits for them.
    pub header_read_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// The process's budget and pace for request bodies.
    pub bodies: BodyGuard,
    /// Where refused connections are counted (the process's metrics).
    pub refused: Arc<RefusedConnections>,
    /// The threads that serve accepted connections.
    pub io: HttpIoThreads,
}

impl ConnectionLimits {
    /// The limits `[server]` configures, with the process's `bodies` guard,
    /// counting refusals in `refused`, serving connections on `io`.
    pub fn of(
        server: &ServerConfig,
        bodies: BodyGuard,
        refused: Arc<RefusedConnections>,
        io: HttpIoThreads,
    ) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: server
                .http_header_read_timeout
                .max(Duration::from_millis(1)),
            max_connections: server.http_max_connections.max(1),
            bodies,
            refused,
            io,
        }
    }
}

/// Serves `service` on `listener` within `limits` until `signal`, then
/// drains (see the module docs).
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    signal: ShutdownSignal,
) -> Result<()>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let stop = signal.wait();
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors, or the peer left: not fatal.
                    tracing::debug!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            limits.refused.count(Refusal::HttpLimit);
            tracing::debug!(peer = %peer, limit = limits.max_connections, "connection limit reached, closing a new connection");
            continue;
        };
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let builder = builder.clone();
        let service = hyper_service(&service, &limits.bodies, peer);
        let watcher = graceful.watcher();
        limits.io.spawn(tcp, move |tcp| async move {
            let connection = builder.serve_connection(TokioIo::new(tcp), service);
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(peer = %peer, error = %err, "connection closed");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// `service` as hyper calls it, for one connection from `peer`.
fn hyper_service<S>(
    service: &S,
    bodies: &BodyGuard,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response, Infallible>> + Send,
> + Clone
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let service = service.clone();
    let bodies = bodies.clone();
    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut service = service.clone();
        let admitted = bodies.admit(request);
        async move {
            // Refused before it ran: the budget cannot hold its body now.
            let (request, lease) = match admitted {
                Ok(admitted) => admitted,
                Err(err) => return Ok(err.into_response()),
            };
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            let answer = service.call(request).await;
            drop(lease);
            answer
        }
    })
}
