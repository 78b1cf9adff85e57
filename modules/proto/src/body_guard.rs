//! Request bodies in flight, bounded for the whole process, and made to
//! arrive at a minimum pace.
//!
//! Every HTTP listener of a process admits each request through a
//! [`BodyGuard`], all sharing one [`BodyBudget`]:
//! - **The budget.** A body counts against it from its first byte until the
//!   request is answered (a buffered body, and what is parsed from it, lives
//!   that long). A declared `Content-Length` is reserved before the handler
//!   runs, and a request the budget cannot hold now is refused at once with
//!   503, never queued; a body without a length reserves as its bytes come,
//!   and the read fails with [`BodyError::OverBudget`] when the budget runs
//!   out. A body counts for at most `per_request` bytes (the body limit):
//!   past it a route either refuses the body (413) or streams it (a model
//!   upload), and a stream does not hold its bytes. A reader that inflates a
//!   body reserves the inflated bytes too ([`BodyLease::reserve`]).
//! - **The pace.** A body must arrive within `grace` plus one second per
//!   `min_bytes_per_sec` bytes received so far (Apache's `mod_reqtimeout`
//!   rule): a client that trickles its body, or stops sending it, has the
//!   read fail with [`BodyError::TooSlow`] and its connection closed,
//!   instead of holding a connection and a share of the budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::{ErrorCode, ServiceError};

/// The budget counts in KiB: a semaphore's permits are u32, and bytes would
/// cap one reservation at 4 GiB.
const UNIT: u64 = 1024;

/// Bytes of request bodies the process holds at once, shared by every
/// listener.
#[derive(Debug)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total_bytes: u64,
    per_request: u64,
}

impl BodyBudget {
    /// A budget of `total_bytes`, a body counting for at most `per_request`.
    pub fn new(total_bytes: u64, per_request: u64) -> Arc<BodyBudget> {
        let units = total_bytes
            .div_ceil(UNIT)
            .min(Semaphore::MAX_PERMITS as u64) as usize;
        Arc::new(BodyBudget {
            units: Arc::new(Semaphore::new(units)),
            total_bytes,
            per_request: per_request.max(1),
        })
    }

    /// Bytes not reserved now.
    pub fn available_bytes(&self) -> u64 {
        self.units.available_permits() as u64 * UNIT
    }

    /// Bytes the budget holds in all.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Bytes reserved now (the bodies in flight and their inflated copies,
    /// counted in whole KiB).
    pub fn in_use_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.available_bytes())
    }

    fn over(&self, wanted: u64) -> ServiceError {
        ServiceError::new(
            ErrorCode::Unavailable,
            format!(
                "the server holds too many request bodies now ({} of its {} bytes for bodies are taken; this one needs {wanted}): retry later",
                self.in_use_bytes(),
                self.total_bytes
            ),
        )
    }
}

/// The pace a body must keep.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    /// Time a body may take before its pace counts.
    pub grace: Duration,
    /// Bytes per second that extend the time left by one second.
    pub min_bytes_per_sec: u64,
}

/// Why reading a guarded body failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The process's budget for bodies in flight ran out.
    #[error("{0}")]
    OverBudget(String),
    /// The body arrived slower than the pace allows.
    #[error("the request body arrived too slowly ({received} bytes before the deadline)")]
    TooSlow {
        /// Bytes received before the deadline passed.
        received: u64,
    },
}

impl BodyError {
    /// The error a handler answers: 503 for the budget, 400 for the pace.
    pub fn to_service_error(&self) -> ServiceError {
        match self {
            BodyError::OverBudget(why) => ServiceError::new(ErrorCode::Unavailable, why.clone()),
            BodyError::TooSlow { .. } => ServiceError::bad_request(self.to_string()),
        }
    }

    /// The body error somewhere in `err`'s chain of sources, if any.
    pub fn find<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e BodyError> {
        let mut current = Some(err);
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<BodyError>() {
                return Some(found);
            }
            current = e.source();
        }
        None
    }
}

/// One request's share of the budget, held until the request is answered
/// (by the layer's future and the body); a reader reaches it through the
/// request's extensions to reserve what it inflates.
#[derive(Debug, Clone)]
pub struct BodyLease {
    inner: Arc<LeaseInner>,
}

#[derive(Debug)]
struct LeaseInner {
    budget: Arc<BodyBudget>,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// Bytes of the body counted so far (at most `per_request`).
    body_bytes: u64,
    /// Bytes reserved besides the body (inflated copies).
    extra_bytes: u64,
    units: Option<OwnedSemaphorePermit>,
}

impl BodyLease {
    fn new(budget: Arc<BodyBudget>) -> BodyLease {
        BodyLease {
            inner: Arc::new(LeaseInner {
                budget,
                held: Mutex::new(Held::default()),
            }),
        }
    }

    /// Reserves `bytes` more for this request (an inflated body), or fails
    /// with 503 when the budget cannot hold them now.
    pub fn reserve(&self, bytes: u64) -> Result<(), ServiceError> {
        let mut held = self.inner.held.lock().unwrap_or_else(|e| e.into_inner());
        let target = held.extra_bytes.saturating_add(bytes);
        let body = held.body_bytes;
        self.grow_to(&mut held, body, target)
    }

    /// Counts `bytes` more of the body (up to the per-request cap).
    fn count_body(&self, bytes: u64) -> Result<(), ServiceError> {
        let mut held = self.inner.held.lock().unwrap_or_else(|e| e.into_inner());
        let cap = self.inner.budget.per_request;
        let body = held.body_bytes.saturating_add(bytes).min(cap);
        let extra = held.extra_bytes;
        self.grow_to(&mut held, body, extra)
    }

    fn grow_to(&self, held: &mut Held, body: u64, extra: u64) -> Result<(), ServiceError> {
        let budget = &self.inner.budget;
        let have = held.units.as_ref().map_or(0, |p| p.num_permits() as u64);
        let want = body.saturating_add(extra).div_ceil(UNIT);
        if want > have {
            let more = u32::try_from(want - have).map_err(|_| budget.over(body + extra))?;
            let permit = budget
                .units
                .clone()
                .try_acquire_many_owned(more)
                .map_err(|_| budget.over(body + extra))?;
            match &mut held.units {
                Some(units) => units.merge(permit),
                None => held.units = Some(permit),
            }
        }
        held.body_bytes = body;
        held.extra_bytes = extra;
        Ok(())
    }
}

/// What a listener applies to each request's body; see the module docs.
#[derive(Debug, Clone)]
pub struct BodyGuard {
    budget: Arc<BodyBudget>,
    pace: BodyPace,
}

impl BodyGuard {
    /// Guards bodies with `budget` (shared by the process's listeners) and
    /// `pace`.
    pub fn new(budget: Arc<BodyBudget>, pace: BodyPace) -> BodyGuard {
        BodyGuard { budget, pace }
    }

    /// The budget it admits bodies under.
    pub fn budget(&self) -> &Arc<BodyBudget> {
        &self.budget
    }

    /// Admits `request`: reserves its declared length, or refuses it (503)
    /// when the budget cannot hold it now. The request comes back with its
    /// body guarded and its [`BodyLease`] in the extensions; the caller
    /// keeps the returned lease until the request is answered.
    pub fn admit<B>(
        &self,
        request: http::Request<B>,
    ) -> Result<(http::Request<GuardedBody<B>>, BodyLease), ServiceError> {
        let lease = BodyLease::new(self.budget.clone());
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(len) = declared {
            lease.count_body(len)?;
        }
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(lease.clone());
        let guarded = GuardedBody::new(body, lease.clone(), declared, self.pace);
        Ok((http::Request::from_parts(parts, guarded), lease))
    }
}

pin_project_lite::pin_project! {
    /// A request body read under the budget and the pace.
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        lease: BodyLease,
        // Bytes the declared length already reserved.
        reserved: u64,
        received: u64,
        pace: BodyPace,
        start: Instant,
        deadline: Pin<Box<Sleep>>,
        failed: bool,
    }
}

impl<B> std::fmt::Debug for GuardedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedBody")
            .field("received", &self.received)
            .field("reserved", &self.reserved)
            .finish_non_exhaustive()
    }
}

impl<B> GuardedBody<B> {
    fn new(inner: B, lease: BodyLease, declared: Option<u64>, pace: BodyPace) -> Self {
        let start = Instant::now();
        GuardedBody {
            inner,
            lease,
            reserved: declared.unwrap_or(0),
            received: 0,
            pace,
            start,
            deadline: Box::pin(tokio::time::sleep_until(start + pace.grace)),
            failed: false,
        }
    }
}

fn allowed(pace: &BodyPace, received: u64) -> Duration {
    let rate = pace.min_bytes_per_sec.max(1);
    pace.grace + Duration::from_secs(received / rate)
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    *this.received += n;
                    if *this.received > *this.reserved {
                        let beyond = (*this.received - *this.reserved).min(n);
                        if let Err(err) = this.lease.count_body(beyond) {
                            *this.failed = true;
                            let why = BodyError::OverBudget(err.message);
                            return Poll::Ready(Some(Err(Box::new(why))));
                        }
                    }
                    let deadline = *this.start + allowed(this.pace, *this.received);
                    this.deadline.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    *this.failed = true;
                    let why = BodyError::TooSlow {
                        received: *this.received,
                    };
                    Poll::Ready(Some(Err(Box::new(why))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[path = "body_guard_tests.rs"]
mod tests;
