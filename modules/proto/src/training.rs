//! The training contract (`training` role): the trait, its client (local or
//! gRPC) and the gRPC adapters, generated from `proto/training.proto`. Every
//! message derives `Serialize`, so the REST API answers with them as they are.

/// Generated messages and gRPC stubs of package `training`.
#[allow(missing_docs, clippy::all)]
pub mod tpb {
    tonic::include_proto!("training");
}

include!(concat!(env!("OUT_DIR"), "/training.service.rs"));

/// Every message of the contract.
pub use tpb::*;
