//! The HTTP face of the call context: one service wrapper, around the whole
//! router of a process, that gives every request its [`CallContext`] and
//! writes the context's reply notes on the answer.
//!
//! It wraps the merged router once instead of being a per-route layer
//! (`Router::layer`, `middleware::from_fn`), which would clone a boxed
//! service and box a future for every request: on a 50 µs tabular
//! inference that cost shows up in throughput.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tower_service::Service;

use crate::CallContext;

/// Wraps `inner` (a router) so that every request has its [`CallContext`]:
/// the one an outer layer (the gateway) put in the extensions, or one read
/// from the headers (a malformed deadline is answered 400 at once). The
/// context's reply notes (the request id, the serving model version) become
/// headers of the answer, errors included.
pub fn with_call_context<S>(inner: S) -> WithCallContext<S> {
    WithCallContext { inner }
}

/// The service [`with_call_context`] returns.
#[derive(Debug, Clone)]
pub struct WithCallContext<S> {
    inner: S,
}

impl<S> Service<Request> for WithCallContext<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ContextFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let ctx = match request.extensions().get::<CallContext>() {
            Some(ctx) => ctx.clone(),
            None => match CallContext::from_http(request.headers()) {
                Ok(ctx) => ctx,
                Err(err) => {
                    return ContextFuture::Refused {
                        response: Some(err.into_response()),
                    }
                }
            },
        };
        request.extensions_mut().insert(ctx.clone());
        ContextFuture::Serving {
            future: self.inner.call(request),
            ctx,
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`WithCallContext`]: the inner answer with the reply
    /// notes added, or the refusal of a malformed context.
    #[project = ContextFutureState]
    pub enum ContextFuture<F> {
        /// The router is answering.
        Serving { #[pin] future: F, ctx: CallContext },
        /// The context was malformed; `None` once taken.
        Refused { response: Option<Response> },
    }
}

impl<F, E> Future for ContextFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ContextFutureState::Serving { future, ctx } => {
                let mut response = ready!(future.poll(cx))?;
                ctx.write_reply(response.headers_mut());
                Poll::Ready(Ok(response))
            }
            ContextFutureState::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("polled after it answered")))
            }
        }
    }
}
