//! Watching a service's calls from outside it: every generated service has
//! an `<Prefix>Observed` decorator (see `codegen/services.rs`) that tells a
//! [`CallObserver`] of each call, with the RPC's name, the request, the
//! time taken and the outcome. Metrics, audit logs and the like are written
//! once as an observer; adding an RPC needs no edit to them.

use std::any::Any;
use std::time::{Duration, Instant};

use crate::{ServiceError, ServiceResult};

/// Told of every call through an observed service.
///
/// `rpc` is the method's snake_case name (`get_online_features`), the same
/// name the service trait uses.
pub trait CallObserver: Send + Sync + 'static {
    /// Before the call runs, with its request (a generated message, or a
    /// `ServiceStream` of them for client streaming). Downcast with
    /// [`Any::downcast_ref`] to read what a particular RPC carries; the
    /// default reads nothing.
    fn started(&self, rpc: &'static str, request: &dyn Any) {
        let _ = (rpc, request);
    }

    /// After the call answered (for a server stream: once the stream was
    /// opened), with the time it took and its error, if any.
    fn finished(&self, rpc: &'static str, elapsed: Duration, error: Option<&ServiceError>);
}

/// One call in progress: started on creation, finished by [`Watch::done`].
/// Used by the generated decorators.
pub struct Watch<'a> {
    observer: &'a dyn CallObserver,
    rpc: &'static str,
    started: Instant,
}

impl<'a> Watch<'a> {
    /// Tells `observer` that `rpc` starts with `request`.
    pub fn start(observer: &'a dyn CallObserver, rpc: &'static str, request: &dyn Any) -> Self {
        observer.started(rpc, request);
        Watch {
            observer,
            rpc,
            started: Instant::now(),
        }
    }

    /// Tells the observer how the call ended, and hands `result` back.
    pub fn done<T>(self, result: ServiceResult<T>) -> ServiceResult<T> {
        self.observer
            .finished(self.rpc, self.started.elapsed(), result.as_ref().err());
        result
    }
}
