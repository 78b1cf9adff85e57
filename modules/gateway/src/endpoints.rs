//! The inference endpoints the gateway routes to: the in-process service, or
//! a set of gRPC endpoints (static URIs and `dns:///name:port` names resolved
//! periodically), each with its in-flight count, a concurrency bound and an
//! ejection time after failures.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use mlserve_proto::inference::{InferenceClient, MAX_GRPC_MESSAGE_BYTES};
use mlserve_proto::rpc::GrpcOptions;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::GatewayError;

/// How endpoints are reached and judged.
#[derive(Debug, Clone)]
pub struct EndpointOptions {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How long a failed endpoint stays out of rotation.
    pub eject_for: Duration,
    /// Requests in flight per endpoint.
    pub max_concurrency: usize,
    /// The internal token the inference endpoints require, if any.
    pub internal_token: Option<String>,
}

/// The name of the in-process endpoint.
pub const LOCAL_ENDPOINT: &str = "local";

/// One inference endpoint.
pub struct Endpoint {
    /// Its URI, or `local` for the in-process service.
    pub name: String,
    /// The service: in-process or over gRPC, called the same way.
    pub client: InferenceClient,
    outstanding: AtomicUsize,
    ejected_until: Mutex<Option<Instant>>,
    slots: Arc<Semaphore>,
}

impl Endpoint {
    /// The in-process inference service.
    pub fn local(client: InferenceClient, max_concurrency: usize) -> Endpoint {
        Endpoint::new(LOCAL_ENDPOINT.into(), client, max_concurrency)
    }

    /// A remote endpoint at `uri` (connected lazily).
    pub fn remote(uri: &str, options: &EndpointOptions) -> Result<Endpoint, GatewayError> {
        let grpc = GrpcOptions {
            connect_timeout: options.connect_timeout,
            max_message_bytes: MAX_GRPC_MESSAGE_BYTES,
            internal_token: options.internal_token.clone(),
        };
        let client = InferenceClient::connect_lazy(uri, &grpc)
            .map_err(|e| GatewayError::BadRequest(e.message))?;
        Ok(Endpoint::new(
            uri.to_string(),
            client,
            options.max_concurrency,
        ))
    }

    fn new(name: String, client: InferenceClient, max_concurrency: usize) -> Endpoint {
        Endpoint {
            name,
            client,
            outstanding: AtomicUsize::new(0),
            ejected_until: Mutex::new(None),
            slots: Arc::new(Semaphore::new(max_concurrency.max(1))),
        }
    }

    /// Requests in flight.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Whether the endpoint is in rotation now.
    pub fn healthy(&self) -> bool {
        match self.ejected_until.lock() {
            Ok(until) => until.is_none_or(|t| Instant::now() >= t),
            Err(_) => true,
        }
    }

    /// Takes the endpoint out of rotation for `period`.
    pub fn eject(&self, period: Duration, reason: &str) {
        if let Ok(mut until) = self.ejected_until.lock() {
            if until.is_none_or(|t| Instant::now() >= t) {
                tracing::warn!(endpoint = %self.name, reason, eject_secs = period.as_secs_f64(), "inference endpoint ejected");
            }
            *until = Some(Instant::now() + period);
        }
    }

    /// Puts the endpoint back in rotation.
    pub fn restore(&self) {
        if let Ok(mut until) = self.ejected_until.lock() {
            if until.take().is_some() {
                tracing::info!(endpoint = %self.name, "inference endpoint back in rotation");
            }
        }
    }

    /// A slot for one request, or `None` when the endpoint is at capacity.
    fn try_slot(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            endpoint: self.clone(),
            _permit: permit,
        })
    }
}

/// One request's hold on an endpoint; released on drop.
pub struct Slot {
    /// The endpoint.
    pub endpoint: Arc<Endpoint>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.endpoint.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why no endpoint could take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEndpoint {
    /// There are no endpoints (none configured, or DNS resolved to nothing).
    Empty,
    /// Every candidate is at its concurrency bound.
    AtCapacity,
}

/// The current endpoints, replaced as DNS answers change.
pub struct EndpointSet {
    current: RwLock<Arc<Vec<Arc<Endpoint>>>>,
    /// How endpoints are reached and judged.
    pub options: EndpointOptions,
}

impl EndpointSet {
    /// A set of the given endpoints.
    pub fn new(endpoints: Vec<Arc<Endpoint>>, options: EndpointOptions) -> EndpointSet {
        EndpointSet {
            current: RwLock::new(Arc::new(endpoints)),
            options,
        }
    }

    /// The endpoints now.
    pub fn snapshot(&self) -> Arc<Vec<Arc<Endpoint>>> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the set by `uris`, keeping the endpoints (and their
    /// connections and counters) whose URI stays.
    pub fn replace(&self, uris: &[String]) {
        let old = self.snapshot();
        let mut next = Vec::with_capacity(uris.len());
        for uri in uris {
            if let Some(kept) = old.iter().find(|e| &e.name == uri) {
                next.push(kept.clone());
                continue;
            }
            match Endpoint::remote(uri, &self.options) {
                Ok(endpoint) => next.push(Arc::new(endpoint)),
                Err(err) => {
                    tracing::warn!(endpoint = %uri, error = %err, "skipping invalid endpoint")
                }
            }
        }
        let changed =
            next.len() != old.len() || next.iter().zip(old.iter()).any(|(a, b)| a.name != b.name);
        if changed {
            let names: Vec<&str> = next.iter().map(|e| e.name.as_str()).collect();
            tracing::info!(endpoints = ?names, "inference endpoints changed");
        }
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(next);
        }
    }

    /// The endpoint for the next request: least outstanding requests among the
    /// healthy ones not in `exclude` (all of them when none is healthy, rather
    /// than failing outright), ties broken at random; endpoints at capacity
    /// are passed over.
    pub fn pick(&self, exclude: &[String]) -> Result<Slot, NoEndpoint> {
        let all = self.snapshot();
        let candidates: Vec<&Arc<Endpoint>> =
            all.iter().filter(|e| !exclude.contains(&e.name)).collect();
        if candidates.is_empty() {
            return Err(NoEndpoint::Empty);
        }
        let healthy: Vec<&Arc<Endpoint>> =
            candidates.iter().copied().filter(|e| e.healthy()).collect();
        let mut pool = if healthy.is_empty() {
            candidates
        } else {
            healthy
        };
        let offset = fastrand::usize(..pool.len());
        pool.rotate_left(offset);
        pool.sort_by_key(|e| e.outstanding());
        pool.iter()
            .find_map(|e| e.try_slot())
            .ok_or(NoEndpoint::AtCapacity)
    }
}

/// A configured endpoint: a URI, or a DNS name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A gRPC URI used as is.
    Static(String),
    /// `dns:///host:port`: every address the name resolves to.
    Dns {
        /// The name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl Target {
    /// Parses `http://host:port` or `dns:///host:port` (a bare `host:port` gets `http://`).
    pub fn parse(spec: &str) -> Result<Target, GatewayError> {
        let spec = spec.trim();
        if let Some(rest) = spec
            .strip_prefix("dns:///")
            .or_else(|| spec.strip_prefix("dns://"))
        {
            let (host, port) = rest.rsplit_once(':').ok_or_else(|| {
                GatewayError::BadRequest(format!("endpoint '{spec}': dns:/// needs host:port"))
            })?;
            let port = port.parse().map_err(|_| {
                GatewayError::BadRequest(format!("endpoint '{spec}': bad port '{port}'"))
            })?;
            if host.is_empty() {
                return Err(GatewayError::BadRequest(format!(
                    "endpoint '{spec}': empty host"
                )));
            }
            return Ok(Target::Dns {
                host: host.to_string(),
                port,
            });
        }
        if spec.is_empty() {
            return Err(GatewayError::BadRequest("empty inference endpoint".into()));
        }
        let uri = if spec.contains("://") {
            spec.to_string()
        } else {
            format!("http://{spec}")
        };
        uri.parse::<http::Uri>()
            .map_err(|e| GatewayError::BadRequest(format!("endpoint '{spec}': {e}")))?;
        Ok(Target::Static(uri))
    }
}

/// The URIs `targets` stand for now: static ones as they are, DNS names
/// resolved to every address (a name that does not resolve contributes none).
pub async fn resolve(targets: &[Target]) -> Vec<String> {
    let mut uris = Vec::new();
    for target in targets {
        match target {
            Target::Static(uri) => uris.push(uri.clone()),
            Target::Dns { host, port } => {
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(addrs) => {
                        let mut found: Vec<String> = addrs.map(|a| format!("http://{a}")).collect();
                        found.sort();
                        found.dedup();
                        uris.extend(found);
                    }
                    Err(err) => tracing::warn!(host = %host, error = %err, "dns resolution failed"),
                }
            }
        }
    }
    uris
}

#[cfg(test)]
#[path = "endpoints_tests.rs"]
mod tests;
