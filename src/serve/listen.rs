//! Binding listeners and serving HTTP and gRPC with graceful shutdown.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use mlserve_common::ShutdownSignal;
use mlserve_proto::grpc_size::SizeLimitLayer;
use mlserve_proto::http::with_call_context;
use tokio::net::TcpListener;
use tower_layer::{Identity, Stack};

use super::connections::{self, ConnectionLimits};

/// Binds `host:port` (port 0 picks a free one) and logs the address.
pub async fn bind(host: &str, port: u16, service: &'static str) -> Result<TcpListener> {
    let listener = TcpListener::bind((host, port))
        .await
        .with_context(|| format!("cannot bind the {service} listener to {host}:{port}"))?;
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(service, addr = %addr, "listening");
    Ok(listener)
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
