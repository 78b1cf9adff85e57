//! Binding listeners and serving HTTP and gRPC with graceful shutdown.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use mlserve_common::ShutdownSignal;
use tokio::net::TcpListener;

/// Binds `host:port` (port 0 picks a free one) and logs the address.
pub async fn bind(host: &str, port: u16, service: &'static str) -> Result<TcpListener> {
    let listener = TcpListener::bind((host, port))
        .await
        .with_context(|| format!("cannot bind the {service} listener to {host}:{port}"))?;
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(service, addr = %addr, "listening");
    Ok(listener)
}

/// Serves an axum router until shutdown, then finishes in-flight requests.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    signal: ShutdownSignal,
) -> Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(signal.wait())
        .await
        .context("http server failed")
}
