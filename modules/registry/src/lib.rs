//! The registry role: registered models, versions, aliases and artifacts.
//!
//! - [`store`]: metadata in SQL (SQLite or PostgreSQL through sqlx `Any`);
//! - [`artifacts`]: files in an object store (a local directory or S3);
//! - [`upload`], [`inspect`], [`onnx`]: streamed uploads, hashed and
//!   validated before a version commits;
//! - [`service::LocalRegistry`]: the [`RegistryService`] implementation;
//! - [`http`]: the REST API under `/v1/registry/`;
//! - [`client`]: a REST client for the `mlserve models` commands.
//!
//! [`RegistryService`]: mlserve_proto::registry::RegistryService

pub mod artifacts;
pub mod client;
pub mod error;
pub mod http;
pub mod inspect;
pub mod metrics;
pub mod names;
pub mod onnx;
pub mod service;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;
pub mod upload;

pub use error::RegistryError;
pub use service::LocalRegistry;
