//! mlserve's training role: workflows (a DAG of steps with parameters,
//! templates, retries, timeouts, conditions, fan-out and an exit handler),
//! runs and their steps in SQL, the local executor (each attempt in its own
//! process group and directory), built-in steps that reach the feature store
//! and the registry, cron schedules and event triggers.

pub mod argo;
pub mod attempt;
pub mod builtin;
pub mod cron;
pub mod engine;
pub mod error;
pub mod http;
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
