//! The inference role: a Triton-style model repository served through ONNX
//! Runtime, with one dynamic batcher per model version.

pub mod admission;
pub mod artifact_cache;
pub mod batch_tuner;
pub mod demand;
pub mod dispatch;
pub mod ensemble;
pub mod ensemble_plan;
pub mod error;
pub mod follow;
mod follow_error;
pub mod follow_metrics;
pub mod graph_level;
pub mod lateness;
pub mod manager;
pub mod metrics;
pub mod model_config;
pub mod ort_env;
pub mod ort_runner;
pub mod overload;
pub mod pbtxt;
pub mod reply_home;
pub mod repository;
pub mod scheduler;
pub mod service;
pub mod shared_memory;
pub mod stats;
pub mod string_tensor;
pub mod tensor;
pub mod validate;

pub use error::InferenceError;
