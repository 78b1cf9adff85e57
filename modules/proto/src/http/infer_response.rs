//! A [`pb::ModelInferResponse`] to the HTTP response body.
//!
//! The JSON header is `{"model_name", "model_version", "id"?, "parameters"?,
//! "outputs": [{"name", "datatype", "shape", "parameters"?, "data"?}]}`; `id`
//! and `parameters` are left out when empty. An output is binary when its
//! request `binary_data` parameter says so, else when the request parameter
//! `binary_data_output` does; a binary output carries
//! `"parameters": {"binary_data_size": B}` and its bytes follow the JSON header,
//! in output order. Other outputs carry their data as JSON
//! (see [`super::json_output`]). An output written to a shared memory region
//! carries only the region's parameters.

use bytes::Bytes;
use serde::Serialize;

use crate::inference::SHARED_MEMORY_REGION;
use serde_json::{Map, Value};

use super::classification::classify;
use super::infer_request::ResponsePlan;
use super::json_output::JsonData;
use super::params::infer_params_json;
use crate::pb;
use crate::pb::model_infer_response::InferOutputTensor;
use crate::{DataType, ServiceError};

/// An encoded response body.
#[derive(Debug)]
pub(super) struct Encoded {
    /// The JSON header followed by the binary outputs, if any.
    pub body: Vec<u8>,
    /// The JSON header's length when binary outputs follow it (the value of
    /// `Inference-Header-Content-Length`); `None` for a pure JSON body.
    pub header_len: Option<usize>,
}

/// One output, ready to write.
struct Output {
    tensor: InferOutputTensor,
    dtype: DataType,
    raw: Bytes,
    binary: bool,
    /// Written to a shared memory region: no data in the body.
    in_shared_memory: bool,
}

#[derive(Serialize)]
struct Header<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    #[serde(skip_serializing_if = "Map::is_empty")]
    parameters: Map<String, Value>,
    outputs: Vec<OutputHeader<'a>>,
}

#[derive(Serialize)]
struct OutputHeader<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Map::is_empty")]
    parameters: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

/// Encodes `response` as `plan` asks.
pub(super) fn encode(
    response: pb::ModelInferResponse,
    plan: &ResponsePlan,
) -> Result<Encoded, ServiceError> {
    let pb::ModelInferResponse {
        model_name,
        model_version,
        id,
        parameters,
        outputs: tensors,
        raw_output_contents,
    } = response;
    if !raw_output_contents.is_empty() && raw_output_contents.len() != tensors.len() {
        return Err(ServiceError::internal(format!(
            "the response has {} outputs but {} raw output contents",
            tensors.len(),
            raw_output_contents.len()
        )));
    }
    let mut raws = raw_output_contents.into_iter();
    let mut outputs = Vec::with_capacity(tensors.len());
    for mut tensor in tensors {
        let dtype = DataType::parse(&tensor.datatype).ok_or_else(|| {
            ServiceError::internal(format!(
                "output '{}' has an unknown datatype '{}'",
                tensor.name, tensor.datatype
            ))
        })?;
        let raw = match raws.next() {
            Some(raw) => raw,
            None => contents_to_raw(&tensor, dtype)?,
        };
        let wanted = plan.outputs.get(&tensor.name).copied().unwrap_or_default();
        let in_shared_memory = tensor.parameters.contains_key(SHARED_MEMORY_REGION);
        let (dtype, raw) = match wanted.classification {
            Some(k) if !in_shared_memory => {
                let classified =
                    classify(&tensor.name, dtype, &tensor.shape, &raw, k, plan.batched)?;
                tensor.shape = classified.shape;
                (DataType::Bytes, classified.raw)
            }
            _ => (dtype, raw),
        };
        let binary = !in_shared_memory && wanted.binary.unwrap_or(plan.binary_default);
        outputs.push(Output {
            tensor,
            dtype,
            raw,
            binary,
            in_shared_memory,
        });
    }

    let mut headers = Vec::with_capacity(outputs.len());
    let mut binary_len = 0usize;
    for out in &outputs {
        let mut parameters = infer_params_json(&out.tensor.parameters);
        let data = if out.in_shared_memory {
            None
        } else if out.binary {
            parameters.insert("binary_data_size".into(), Value::from(out.raw.len()));
            binary_len += out.raw.len();
            None
        } else {
            Some(JsonData::new(
                &out.tensor.name,
                out.dtype,
                &out.tensor.shape,
                &out.raw,
            )?)
        };
        headers.push(OutputHeader {
            name: &out.tensor.name,
            datatype: out.dtype.as_str(),
            shape: &out.tensor.shape,
            parameters,
            data,
        });
    }
    let header = Header {
        model_name: &model_name,
        model_version: &model_version,
        id: &id,
        parameters: infer_params_json(&parameters),
        outputs: headers,
    };
    let mut body = serde_json::to_vec(&header)
        .map_err(|e| ServiceError::internal(format!("failed to write the response JSON: {e}")))?;
    if !outputs.iter().any(|o| o.binary) {
        return Ok(Encoded {
            body,
            header_len: None,
        });
    }
    let header_len = body.len();
    body.reserve_exact(binary_len);
    for out in outputs.iter().filter(|o| o.binary) {
        body.extend_from_slice(&out.raw);
    }
    Ok(Encoded {
        body,
        header_len: Some(header_len),
    })
}

/// The raw form of an output that came back in typed `contents` instead of
/// `raw_output_contents` (FP16, BF16 have no typed form).
fn contents_to_raw(tensor: &InferOutputTensor, dtype: DataType) -> Result<Bytes, ServiceError> {
    let missing =
        || ServiceError::internal(format!("output '{}' came back without data", tensor.name));
    let c = tensor.contents.as_ref().ok_or_else(missing)?;
    let mut out = Vec::new();
    match dtype {
        DataType::Bool => out.extend(c.bool_contents.iter().map(|&b| u8::from(b))),
        DataType::Uint8 => out.extend(c.uint_contents.iter().map(|&v| v as u8)),
        DataType::Uint16 => out.extend(
            c.uint_contents
                .iter()
                .flat_map(|&v| (v as u16).to_le_bytes()),
        ),
        DataType::Uint32 => out.extend(c.uint_contents.iter().flat_map(|&v| v.to_le_bytes())),
        DataType::Uint64 => out.extend(c.uint64_contents.iter().flat_map(|&v| v.to_le_bytes())),
        DataType::Int8 => out.extend(c.int_contents.iter().map(|&v| v as i8 as u8)),
        DataType::Int16 => out.extend(
            c.int_contents
                .iter()
                .flat_map(|&v| (v as i16).to_le_bytes()),
        ),
        DataType::Int32 => out.extend(c.int_contents.iter().flat_map(|&v| v.to_le_bytes())),
        DataType::Int64 => out.extend(c.int64_contents.iter().flat_map(|&v| v.to_le_bytes())),
        DataType::Fp32 => out.extend(c.fp32_contents.iter().flat_map(|&v| v.to_le_bytes())),
        DataType::Fp64 => out.extend(c.fp64_contents.iter().flat_map(|&v| v.to_le_bytes())),
        DataType::Bytes => {
            for element in &c.bytes_contents {
                crate::datatype::push_bytes_element(&mut out, element);
            }
        }
        DataType::Fp16 | DataType::Bf16 => return Err(missing()),
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
#[path = "infer_response_tests.rs"]
mod tests;
