//! mlserve's training role: workflows (a DAG of steps with parameters,
//! templates, retries, timeouts, conditions, fan-out and an exit handler),
//! runs and their steps in SQL, the executors (local: each attempt in its own
//! process group and directory; kubernetes: a batch/v1 Job), built-in steps that reach the feature store
//! and the registry, cron schedules and event triggers.

pub mod argo;
pub mod attempt;
pub mod builtin;
pub mod cron;
pub mod engine;
pub mod error;
pub mod executor;
pub mod http;
pub mod jobs;
pub mod kubernetes;
pub mod logs;
pub mod outputs;
pub mod process;
pub mod service;
pub mod spec;
pub mod state;
pub mod store;
pub mod template;
pub mod triggers;
pub mod validate;

pub use engine::{Engine, Settings};
pub use error::{Result, TrainingError};
pub use spec::WorkflowSpec;
