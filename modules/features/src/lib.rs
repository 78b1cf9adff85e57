//! The features role: entities and feature views (versioned definitions in
//! SQL), an append-only offline store in SQL, an online store (memory or
//! Redis), materialization, push, online lookups with statuses, point-in-time
//! historical retrieval, and the transforms that build a model's input
//! tensors. [`service::LocalFeatures`] implements
//! [`mlserve_proto::features::FeatureService`]; [`http::routes`] serves it
//! over REST.

pub mod catalog;
pub mod error;
pub mod export;
pub mod files;
pub mod history;
pub mod http;
pub mod lookup;
pub mod metrics;
pub mod offline;
pub mod online;
pub mod parquet_io;
pub mod served;
pub mod service;
pub mod training_set;
pub mod transform;
pub mod values;

pub use error::FeaturesError;
pub use service::{LocalFeatures, Options};
