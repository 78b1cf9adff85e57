//! The monitoring contract (`monitoring` role): rollouts and the sliding
//! windows their analysis reads; the trait, its client (local or gRPC) and
//! the gRPC adapters, generated from `proto/monitoring.proto`. Every message
//! derives `Serialize`, so the REST API answers with them as they are.

/// Generated messages and gRPC stubs of package `monitoring`.
#[allow(missing_docs, clippy::all)]
pub mod mpb {
    tonic::include_proto!("monitoring");
}

include!(concat!(env!("OUT_DIR"), "/monitoring.service.rs"));

/// Every message of the contract.
pub use mpb::*;
