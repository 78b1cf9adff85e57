//! The gateway's external gRPC side: a tower layer in front of the Open
//! Inference Protocol service that authenticates, rate-limits, and hands
//! each call its context (deadline from `grpc-timeout`, request id,
//! `traceparent`, the caller) through the request's extensions; the serving
//! version comes back as the `x-mlserve-model-version` response metadata.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use mlserve_proto::context::{MODEL_HEADER, MODEL_VERSION_HEADER};
use mlserve_proto::{CallContext, ServiceError};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::admission::{admit, context, rate_limit_headers, response_headers};
use crate::gateway::Gateway;

/// Paths served without credentials (probes).
fn public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path == "/inference.GRPCInferenceService/ServerLive"
        || path == "/inference.GRPCInferenceService/ServerReady"
}

/// The layer; see the module docs.
#[derive(Clone)]
pub struct GatewayLayer {
    gateway: Arc<Gateway>,
}

impl GatewayLayer {
    /// A layer over `gateway`.
    pub fn new(gateway: Arc<Gateway>) -> GatewayLayer {
        GatewayLayer { gateway }
    }
}

impl<S> Layer<S> for GatewayLayer {
    type Service = GatewayGrpc<S>;
    fn layer(&self, inner: S) -> GatewayGrpc<S> {
        GatewayGrpc {
            inner,
            gateway: self.gateway.clone(),
        }
    }
}

/// The service the layer makes.
#[derive(Clone)]
pub struct GatewayGrpc<S> {
    inner: S,
    gateway: Arc<Gateway>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> Service<Request<Body>> for GatewayGrpc<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gateway = self.gateway.clone();
        Box::pin(async move {
            let started = Instant::now();
            let route = request.uri().path().to_string();
            let mut admitted = None;
            if !public(request.uri().path()) {
                let peer = request
                    .extensions()
                    .get::<tonic::transport::server::TcpConnectInfo>()
                    .and_then(|info| info.remote_addr())
                    .map(|addr| addr.ip());
                match admit(&gateway, request.headers(), peer).await {
                    Ok(a) => admitted = Some(a),
                    Err((err, d)) => {
                        let code = err.code().http_status();
                        gateway
                            .metrics
                            .observe(&route, "", "", code, started.elapsed());
                        let status: tonic::Status = ServiceError::from(err).into();
                        let mut response = status.into_http::<Body>();
                        if let Some(d) = d {
                            rate_limit_headers(response.headers_mut(), &d);
                        }
                        return Ok(response);
                    }
                }
            }
            // The service adapter takes this context from the extensions.
            let ctx = CallContext::from_grpc(request.headers());
            let ctx = context(&gateway, ctx, admitted.as_ref());
            let mut request = request;
            request.extensions_mut().insert(ctx.clone());
            let mut response = inner.call(request).await?;
            response_headers(response.headers_mut(), &ctx, admitted.as_ref());
            // A failed unary call answers "trailers only": grpc-status in the headers.
            let status = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .filter(|code| *code != 0)
                .map_or(200, |code| {
                    mlserve_proto::ErrorCode::from_grpc(tonic::Code::from_i32(code)).http_status()
                });
            let note = |name| ctx.reply_note(name).unwrap_or_default();
            gateway.metrics.observe(
                &route,
                &note(MODEL_HEADER),
                &note(MODEL_VERSION_HEADER),
                status,
                started.elapsed(),
            );
            Ok(response)
        })
    }
}
