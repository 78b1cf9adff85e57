//! Binding listeners and serving HTTP and gRPC with graceful shutdown.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use mlserve_common::ShutdownSignal;
use mlserve_proto::grpc_size::SizeLimitLayer;
use mlserve_proto::http::with_call_context;
use tokio::net::{TcpListener, TcpSocket};
use tower_layer::{Identity, Stack};

use super::connections::{self, ConnectionLimits};

/// Connections the kernel holds for a listener until they are accepted
/// (capped by `net.core.somaxconn`). A client pool that grows all at once,
/// as under a burst, can open thousands of connections within a few
/// milliseconds; past this queue the kernel drops them and each client
/// waits out a SYN retransmit (1 s) or a cookie round trip: a stall for the
/// whole burst. Tokio's default is 1,024.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `host:port` (port 0 picks a free one) with a deep accept queue
/// ([`LISTEN_BACKLOG`]) and logs the address.
pub async fn bind(host: &str, port: u16, service: &'static str) -> Result<TcpListener> {
    let context = || format!("cannot bind the {service} listener to {host}:{port}");
    let mut failure = None;
    for addr in tokio::net::lookup_host((host, port))
        .await
        .with_context(context)?
    {
        match listen(addr) {
            Ok(listener) => {
                let addr: SocketAddr = listener.local_addr()?;
                tracing::info!(service, addr = %addr, "listening");
                return Ok(listener);
            }
            Err(err) => failure = Some(err),
        }
    }
    let err = failure.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the host resolved to no address",
        )
    });
    Err(err).with_context(context)
}

/// A listener on `addr` as the standard library's (SO_REUSEADDR, so a
/// restart does not wait out TIME_WAIT), with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves an axum router within `limits` until shutdown, then finishes
/// in-flight requests (see [`connections`](super::connections)). Every
/// request gets its call context ([`with_call_context`], once around the
/// whole router).
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    signal: ShutdownSignal,
) -> Result<()> {
    connections::serve(listener, with_call_context(router), limits, signal)
        .await
        .context("http server failed")
}

/// HTTP/2 flow-control windows for big tensors over gRPC.
const GRPC_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// A gRPC server builder with mlserve's transport settings (windows sized
/// for big tensors; a message over the size limit answered
/// RESOURCE_EXHAUSTED, as gRPC and Triton do); every gRPC listener starts
/// from it.
pub fn grpc_server() -> tonic::transport::Server<Stack<SizeLimitLayer, Identity>> {
    tonic::transport::Server::builder()
        .initial_stream_window_size(GRPC_WINDOW_BYTES)
        .initial_connection_window_size(GRPC_WINDOW_BYTES)
        .layer(SizeLimitLayer)
}
