//! What the generated service code stands on: stream types, channel
//! options, and the few conversions between a service call and a tonic call
//! (context in, reply notes out, errors both ways). Every service's trait,
//! client and gRPC adapters are generated from its .proto by `build.rs`
//! (see `codegen/services.rs`); nothing here is per RPC.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};

use crate::{CallContext, ServiceError, ServiceResult};

/// A stream of messages into or out of a service call.
pub type ServiceStream<T> = Pin<Box<dyn Stream<Item = ServiceResult<T>> + Send>>;

/// A stream of messages as tonic sends it.
pub type GrpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

/// Largest gRPC message accepted or sent by default (the HTTP body limit's default).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How a gRPC client reaches its service.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Largest message sent or accepted.
    pub max_message_bytes: usize,
    /// The split deployment's shared token (`server.internal_token`), sent
    /// with every call (see [`crate::internal_auth`]).
    pub internal_token: Option<String>,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        GrpcOptions {
            connect_timeout: Duration::from_secs(5),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            internal_token: None,
        }
    }
}

impl GrpcOptions {
    /// The defaults, sending `internal_token`.
    pub fn with_internal_token(internal_token: Option<&str>) -> GrpcOptions {
        GrpcOptions {
            internal_token: internal_token.map(str::to_string),
            ..GrpcOptions::default()
        }
    }
}

/// The internal token as gRPC metadata, ready to put on each call.
#[derive(Clone, Default)]
pub struct TokenMetadata(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl TokenMetadata {
    /// The token of `options`; a token that is not valid metadata is dropped
    /// (the server then refuses the calls, naming the header).
    pub fn of(options: &GrpcOptions) -> TokenMetadata {
        TokenMetadata(
            options
                .internal_token
                .as_deref()
                .and_then(|t| t.parse().ok()),
        )
    }

    /// `request` with the token, when there is one.
    pub fn put<T>(&self, mut request: tonic::Request<T>) -> tonic::Request<T> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert(crate::internal_auth::INTERNAL_TOKEN_HEADER, token.clone());
        }
        request
    }
}

/// A lazily connected channel to `uri` (e.g. `http://10.0.0.5:8001`); the
/// first call opens the connection.
pub fn lazy_channel(uri: &str, options: &GrpcOptions) -> ServiceResult<Channel> {
    let endpoint = Endpoint::from_shared(uri.to_string())
        .map_err(|e| ServiceError::bad_request(format!("invalid endpoint '{uri}': {e}")))?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_adaptive_window(true);
    Ok(endpoint.connect_lazy())
}

/// Server side: the context of an incoming call. An outer layer of this
/// process (the gateway's authentication) may have put one in the request's
/// extensions; otherwise it is read from the metadata.
pub fn server_context<T>(request: &tonic::Request<T>) -> CallContext {
    request
        .extensions()
        .get::<CallContext>()
        .cloned()
        .unwrap_or_else(|| CallContext::from_grpc(request.metadata().as_ref()))
}

/// Server side: the span a call runs in, carrying its request id and trace
/// context (debug level: free unless asked for, e.g.
/// `RUST_LOG=mlserve_proto=debug,mlserve_inference=debug`).
pub fn server_span(
    service: &'static str,
    method: &'static str,
    ctx: &CallContext,
) -> tracing::Span {
    tracing::debug_span!(
        "rpc",
        service,
        method,
        request_id = ctx.request_id.as_deref(),
        traceparent = ctx.traceparent.as_deref()
    )
}

/// Server side: a service's answer as tonic's, with the reply notes as
/// response metadata (on errors too).
pub fn server_reply<T>(
    ctx: &CallContext,
    result: ServiceResult<T>,
) -> Result<tonic::Response<T>, tonic::Status> {
    match result {
        Ok(message) => {
            let mut response = tonic::Response::new(message);
            ctx.write_reply(response.metadata_mut().as_mut());
            Ok(response)
        }
        Err(err) => {
            let mut status = tonic::Status::from(err);
            ctx.write_reply(status.metadata_mut().as_mut());
            Err(status)
        }
    }
}

/// Server side: a service's stream as tonic sends it.
pub fn server_stream<T: Send + 'static>(
    ctx: &CallContext,
    result: ServiceResult<ServiceStream<T>>,
) -> Result<tonic::Response<GrpcStream<T>>, tonic::Status> {
    let stream = result.map(|s| -> GrpcStream<T> { Box::pin(s.map(|m| m.map_err(Into::into))) });
    server_reply(ctx, stream)
}

/// Server side: a client's stream as the service takes it.
pub fn incoming<T: Send + 'static>(stream: tonic::Streaming<T>) -> ServiceStream<T> {
    Box::pin(stream.map(|m| m.map_err(ServiceError::from)))
}

/// Client side: a service's answer from tonic's, its reply notes taken into
/// the caller's context.
pub fn client_reply<T>(
    ctx: &CallContext,
    result: Result<tonic::Response<T>, tonic::Status>,
) -> ServiceResult<T> {
    let response = result.map_err(ServiceError::from)?;
    ctx.read_reply(response.metadata().as_ref());
    Ok(response.into_inner())
}

/// Client side: a server's stream as the caller takes it.
pub fn client_stream<T: Send + 'static>(
    ctx: &CallContext,
    result: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
) -> ServiceResult<ServiceStream<T>> {
    client_reply(ctx, result).map(incoming)
}

/// Client side: the caller's stream as tonic sends it. A failed item ends
/// the outgoing stream and is handed to the receiver, so the call is
/// abandoned (the server sees a cancelled stream, never a short one that
/// looks complete).
pub fn outgoing<T: Send + 'static>(
    stream: ServiceStream<T>,
) -> (
    impl Stream<Item = T> + Send,
    oneshot::Receiver<ServiceError>,
) {
    let (failed, failure) = oneshot::channel();
    let messages = futures_util::stream::unfold(
        (stream, Some(failed)),
        |(mut stream, mut failed)| async move {
            match stream.next().await {
                Some(Ok(message)) => Some((message, (stream, failed))),
                Some(Err(err)) => {
                    if let Some(failed) = failed.take() {
                        let _ = failed.send(err);
                    }
                    // Never end: the call is abandoned by the failure.
                    std::future::pending::<()>().await;
                    None
                }
                None => None,
            }
        },
    );
    (messages, failure)
}

/// Client side: runs a client-streaming call, abandoning it when the
/// caller's stream fails.
pub async fn with_outgoing<R>(
    call: impl std::future::Future<Output = ServiceResult<R>>,
    failure: oneshot::Receiver<ServiceError>,
) -> ServiceResult<R> {
    tokio::select! {
        result = call => result,
        Ok(err) = failure => Err(err),
    }
}
