//! gRPC's code for a message over the size limit.
//!
//! tonic refuses a message larger than `max_decoding_message_size` (or an
//! answer larger than `max_encoding_message_size`) with OUT_OF_RANGE; gRPC's
//! own implementations, and so Triton, say RESOURCE_EXHAUSTED. mlserve's
//! services never answer OUT_OF_RANGE themselves ([`ErrorCode`] has no code
//! that maps to it), so [`SizeLimitLayer`], in front of every gRPC server,
//! turns an OUT_OF_RANGE status into RESOURCE_EXHAUSTED with the
//! `payload_too_large` error code (HTTP 413 through the gateway), in a
//! trailers-only answer (a unary call refused before it ran) and in the
//! trailers of a streamed one alike.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderMap;
use http_body_util::BodyExt;
use tonic::body::Body;

use crate::error::{ErrorCode, ERROR_CODE_METADATA};

/// The layer; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SizeLimitLayer;

impl<S> tower_layer::Layer<S> for SizeLimitLayer {
    type Service = SizeLimit<S>;
    fn layer(&self, inner: S) -> SizeLimit<S> {
        SizeLimit { inner }
    }
}

/// The service [`SizeLimitLayer`] makes.
#[derive(Debug, Clone)]
pub struct SizeLimit<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for SizeLimit<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<http::Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            resource_exhausted(response.headers_mut());
            Ok(response.map(|body| {
                Body::new(body.map_frame(|mut frame| {
                    if let Some(trailers) = frame.trailers_mut() {
                        resource_exhausted(trailers);
                    }
                    frame
                }))
            }))
        })
    }
}

/// Rewrites an OUT_OF_RANGE `grpc-status` to RESOURCE_EXHAUSTED, with the
/// error code that tells an mlserve client it was the size.
fn resource_exhausted(headers: &mut HeaderMap) {
    let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
    if headers.get("grpc-status").and_then(|v| v.to_str().ok()) != Some(out_of_range.as_str()) {
        return;
    }
    let code = ErrorCode::PayloadTooLarge;
    headers.insert("grpc-status", (code.grpc_code() as i32).into());
    headers.insert(
        ERROR_CODE_METADATA,
        http::HeaderValue::from_static(code.as_str()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Service as _, ServiceExt as _};

    /// A server answering every call with `status`, the way tonic does when
    /// it refuses a message: trailers only.
    fn answering(
        status: tonic::Status,
    ) -> impl tower_service::Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = std::convert::Infallible,
        Future = std::future::Ready<Result<http::Response<Body>, std::convert::Infallible>>,
    > + Clone {
        tower::service_fn(move |_: http::Request<Body>| {
            std::future::ready(Ok(status.clone().into_http::<Body>()))
        })
    }

    /// What the layer over `inner` answers to a call.
    async fn through_layer<S>(inner: S) -> http::Response<Body>
    where
        S: tower_service::Service<
                http::Request<Body>,
                Response = http::Response<Body>,
                Error = std::convert::Infallible,
            > + Clone,
        S::Future: Send + 'static,
    {
        let mut service = tower_layer::Layer::layer(&SizeLimitLayer, inner);
        let ready = service.ready().await.unwrap();
        ready.call(http::Request::new(Body::empty())).await.unwrap()
    }

    async fn status_of(status: tonic::Status) -> (String, Option<String>) {
        let response = through_layer(answering(status)).await;
        let get = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        (get("grpc-status").unwrap(), get(ERROR_CODE_METADATA))
    }

    #[tokio::test]
    async fn an_oversized_message_is_resource_exhausted() {
        // What tonic answers for a message over max_decoding_message_size.
        let tonic_refusal = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes",
        );
        assert_eq!(
            status_of(tonic_refusal).await,
            ("8".to_string(), Some("payload_too_large".to_string()))
        );
    }

    #[tokio::test]
    async fn other_statuses_pass_unchanged() {
        for status in [
            tonic::Status::invalid_argument("bad"),
            tonic::Status::unavailable("later"),
            tonic::Status::ok(""),
        ] {
            let code = (status.code() as i32).to_string();
            assert_eq!(status_of(status).await.0, code);
        }
    }

    #[tokio::test]
    async fn a_streamed_answer_s_trailers_are_rewritten() {
        let answer = tower::service_fn(|_: http::Request<Body>| {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "11".parse().unwrap());
            let frames = vec![
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(
                    bytes::Bytes::from_static(b"\0\0\0\0\0"),
                )),
                Ok(http_body::Frame::trailers(trailers)),
            ];
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
            std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(
                Body::new(body),
            )))
        });
        let response = through_layer(answer).await;
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "8");
        assert_eq!(trailers[ERROR_CODE_METADATA], "payload_too_large");
    }
}
