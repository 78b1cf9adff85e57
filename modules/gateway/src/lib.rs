//! The gateway role: the external entry point of mlserve.
//!
//! - [`routing::RoutingInference`]: an `InferenceService` that routes to
//!   inference endpoints (in-process, a static list, or DNS names), least
//!   outstanding requests, health-aware, with safe retries, deadlines and
//!   the canary split ([`canary`]).
//! - [`http::routes`]: the Open Inference Protocol over HTTP, the predict API
//!   ([`predict`]) and the canary admin API, behind auth ([`auth`], [`keys`],
//!   [`jwt`]) and rate limits ([`ratelimit`]).
//! - [`grpc::GatewayLayer`]: the same admission in front of the gRPC protocol.
//! - [`scopes`]: what each credential may do, checked per call by
//!   [`scoped::ScopedInference`] and by the predict and canary handlers.
//! - [`service_scopes`]: the registry, features, training and monitoring
//!   REST APIs served to users through the gateway, each route behind its
//!   scope; [`admin_api`]: who am I, the roles, API keys; [`console`]: the
//!   web console at `/ui`.
//! - [`request_log`]: a sample of served rows (inputs, prediction, version)
//!   written to the offline store for the monitoring role's drift analysis.

pub mod admin_api;
pub mod admission;
pub mod auth;
pub mod canary;
pub mod console;
pub mod cors;
pub mod endpoints;
pub mod error;
pub mod gateway;
pub mod grpc;
pub mod http;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod metrics;
pub mod pipelines;
pub mod postprocess;
pub mod predict;
pub mod ratelimit;
pub mod request_log;
pub mod routing;
pub mod scoped;
pub mod scopes;
pub mod service_scopes;
pub mod tensor_rows;

pub use error::GatewayError;
pub use gateway::Gateway;
