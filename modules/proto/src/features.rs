//! The feature store contract (`features` role): the trait, its client
//! (local or gRPC) and the gRPC adapters, generated from
//! `proto/features.proto`. REST bodies are not these messages: the features
//! crate's REST adapter maps its own plain JSON types to and from them.
//!
//! The gateway's predict pipeline calls `FeatureService::get_online_features`
//! and `FeatureService::transform`; [`TransformResponse::into_infer_request`]
//! turns the transform's tensors into an Open Inference Protocol request.

use bytes::Bytes;

use crate::rpc::ServiceStream;

/// Generated messages and gRPC stubs of package `features`.
#[allow(missing_docs, clippy::all)]
pub mod fpb {
    tonic::include_proto!("features");
}

include!(concat!(env!("OUT_DIR"), "/features.service.rs"));

/// Every message of the contract (a new one needs no edit here).
pub use fpb::*;

/// Status of a value found in the online store.
pub const PRESENT: &str = "PRESENT";
/// Status of a value whose entity has no row in the online store.
pub const NOT_FOUND: &str = "NOT_FOUND";
/// Status of a value that is stored as null.
pub const NULL: &str = "NULL";
/// Status of a value older than its view's TTL.
pub const OUTSIDE_MAX_AGE: &str = "OUTSIDE_MAX_AGE";

/// A point-in-time join result, one entity row at a time, in request order.
pub type HistoricalStream = ServiceStream<HistoricalRow>;

impl TransformResponse {
    /// An Open Inference Protocol request for `model` carrying these tensors
    /// as raw inputs.
    pub fn into_infer_request(self, model: &str) -> crate::pb::ModelInferRequest {
        use crate::pb::model_infer_request::InferInputTensor;
        let mut request = crate::pb::ModelInferRequest {
            model_name: model.to_string(),
            ..Default::default()
        };
        for tensor in self.tensors {
            request.inputs.push(InferInputTensor {
                name: tensor.name,
                datatype: tensor.datatype,
                shape: tensor.shape,
                ..Default::default()
            });
            request.raw_input_contents.push(Bytes::from(tensor.data));
        }
        request
    }
}
