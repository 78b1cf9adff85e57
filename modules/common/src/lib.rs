//! Pieces every mlserve role shares: layered configuration, roles, shutdown,
//! and the tensor datatypes (re-exported from the protocol crate).

pub mod config;
pub mod db;
pub mod events;
pub mod metrics;
pub mod role;
pub mod shutdown;

pub use config::Config;
pub use db::{Database, Databases, Dialect};
pub use mlserve_proto::datatype::{self, DataType};
pub use role::Role;
pub use shutdown::{Shutdown, ShutdownSignal};
