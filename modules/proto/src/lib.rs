//! mlserve's wire contracts.
//!
//! - [`pb`]: the Open Inference Protocol (KServe v2) gRPC messages and service,
//!   generated from `proto/`, field-for-field compatible with Triton.
//! - [`ErrorCode`] and [`ServiceError`]: the one error-code mapping. An
//!   `ErrorCode` alone decides the HTTP status and the gRPC code.
//! - [`inference`], [`registry`], [`features`]: each service's trait, its
//!   cloneable client (local or gRPC) and its gRPC adapters, generated from
//!   the service's .proto by `build.rs`; [`rpc`] is what that code stands on,
//!   and [`observe`] lets metrics watch any service's calls.
//! - [`CallContext`]: what every call carries (deadline, request id, trace
//!   context, caller), across the process boundary as gRPC metadata.
//! - [`http`]: the v2 REST protocol (JSON and the binary tensor extension) over
//!   any `InferenceService`.

pub mod body_guard;
pub mod context;
pub mod datatype;
pub mod error;
#[cfg(test)]
pub(crate) mod fake_inference;
pub mod features;
pub mod grpc_size;
pub mod http;
pub mod inference;
pub mod internal_auth;
pub mod monitoring;
pub mod observe;
pub mod registry;
pub mod rpc;
pub mod training;

pub use context::{CallContext, Caller};
pub use datatype::DataType;
pub use error::{ErrorCode, ServiceError, ServiceResult, Transport};
pub use observe::CallObserver;

/// Generated protobuf messages and gRPC stubs of package `inference`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("inference");

    /// The `FileDescriptorSet` of the inference and registry contracts, with
    /// their imports (Triton's full `model_config.proto` among them), for
    /// reflection: `config.pbtxt` is parsed as text format against it.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/core.descriptors.bin"));
}
