//! How the gRPC listeners (the node's, the gateway's) take connections: at
//! most `server.grpc_max_connections` open at once (one more is closed as
//! soon as it is accepted), Nagle off, and a client has
//! `server.http_header_read_timeout` to send its first bytes (a socket that
//! connects and sends nothing is cut off). Once a connection speaks HTTP/2,
//! each one carries at most hyper's default of 200 concurrent streams, and
//! each message is bounded by the body limit
//! ([`mlserve_proto::grpc_size`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::listener_metrics::{Refusal, RefusedConnections};

/// Bounds on one gRPC listener's connections.
#[derive(Debug, Clone)]
pub struct GrpcLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time a new connection has to send its first bytes.
    pub first_bytes_timeout: Duration,
    /// Where refused connections are counted (the process's metrics).
    pub refused: Arc<RefusedConnections>,
}

impl GrpcLimits {
    /// The limits `[server]` configures, counting refusals in `refused`.
    pub fn of(
        server: &mlserve_common::config::ServerConfig,
        refused: Arc<RefusedConnections>,
    ) -> GrpcLimits {
        GrpcLimits {
            max_connections: server.grpc_max_connections.max(1),
            first_bytes_timeout: server
                .http_header_read_timeout
                .max(Duration::from_millis(1)),
            refused,
        }
    }
}

/// The accepted connections of a gRPC listener within `limits`.
pub fn grpc_incoming(
    listener: TcpListener,
    limits: GrpcLimits,
) -> impl Stream<Item = io::Result<GrpcConnection>> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    TcpListenerStream::new(listener).filter_map(move |accepted| {
        let stream = match accepted {
            Ok(stream) => stream,
            Err(err) => return Some(Err(err)),
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            limits.refused.count(Refusal::GrpcLimit);
            tracing::debug!(
                limit = limits.max_connections,
                "gRPC connection limit reached, closing a new connection"
            );
            return None;
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        Some(Ok(GrpcConnection {
            stream,
            _permit: permit,
            first_bytes: Some(Box::pin(tokio::time::sleep(limits.first_bytes_timeout))),
            refused: Some(limits.refused.clone()),
        }))
    })
}

/// One accepted gRPC connection: the socket, its place under the limit, and
/// the deadline for its first bytes (gone once they came).
#[derive(Debug)]
pub struct GrpcConnection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    first_bytes: Option<Pin<Box<Sleep>>>,
    /// Where a missed deadline is counted, once (taken then).
    refused: Option<Arc<RefusedConnections>>,
}

impl AsyncRead for GrpcConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.first_bytes = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.first_bytes.as_mut().map(|s| s.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => {
                    if let Some(refused) = self.refused.take() {
                        refused.count(Refusal::GrpcFirstBytesTimeout);
                    }
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing in time",
                    )))
                }
                _ => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for GrpcConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The peer's address for the services, as tonic gives it for a plain
/// socket.
impl Connected for GrpcConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}
