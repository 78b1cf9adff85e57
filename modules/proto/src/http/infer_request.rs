//! An HTTP inference request to a [`pb::ModelInferRequest`].
//!
//! - Without `Inference-Header-Content-Length` the body is all JSON.
//! - With `Inference-Header-Content-Length: N` (N > 0) the first N bytes are
//!   the JSON header and the rest is the binary section: the data of the inputs
//!   that carry `parameters.binary_data_size`, in input order, adding up to the
//!   section exactly. The data is sliced out of the body without a copy.
//! - With `Inference-Header-Content-Length: 0` the whole body is the data of the
//!   model's single input ([`decode_raw`]).
//!
//! Every input's data goes to `raw_input_contents`, one entry per input. The
//! HTTP-only parameters (`binary_data_output`, `binary_data_size`,
//! `binary_data`, `classification`) are taken out and kept in the
//! [`ResponsePlan`]; the other parameters go on to the service.

use std::collections::HashMap;

use axum::http::HeaderMap;
use bytes::Bytes;
use serde::de::DeserializeSeed;
use serde::Deserialize;
use serde_json::Value;

use super::at_most::AtMost;
use super::json_input::{json_to_raw, RawSeed};
use super::json_params::JsonParams;
use super::params::{infer_params, take_bool, take_count, Site};
use crate::datatype::{element_count, push_bytes_element};
use crate::inference::SHARED_MEMORY_REGION;
use crate::pb;
use crate::pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use crate::{DataType, ServiceError};

/// The header that splits a body into JSON and binary data.
pub(super) const HEADER_LENGTH: &str = "inference-header-content-length";

/// How the response must be written, from the HTTP-only request parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct ResponsePlan {
    /// Outputs are binary unless their own `binary_data` says otherwise
    /// (the request parameter `binary_data_output`).
    pub binary_default: bool,
    /// What each requested output asked for, by name.
    pub outputs: HashMap<String, OutputPlan>,
    /// Whether the model batches (first dimension = batch); only looked up
    /// when some output asks for classification.
    pub batched: bool,
}

impl ResponsePlan {
    /// Whether any output asks for the classification extension.
    pub(super) fn classifies(&self) -> bool {
        self.outputs.values().any(|o| o.classification.is_some())
    }
}

/// What one requested output asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct OutputPlan {
    /// Its `binary_data` parameter, overriding [`ResponsePlan::binary_default`].
    pub binary: Option<bool>,
    /// Its `classification` parameter: the top K classes instead of the tensor.
    pub classification: Option<usize>,
}

/// A decoded request: what goes to the service and how to answer.
#[derive(Debug)]
pub(super) struct Decoded {
    /// The request for the service (model name and version still empty).
    pub request: pb::ModelInferRequest,
    /// How the response must be written.
    pub plan: ResponsePlan,
}

/// The `Inference-Header-Content-Length` of a request, if it has one.
pub(super) fn header_length(headers: &HeaderMap) -> Result<Option<usize>, ServiceError> {
    let Some(value) = headers.get(HEADER_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| {
            ServiceError::bad_request(format!(
                "invalid Inference-Header-Content-Length '{}': it must be a non-negative integer",
                String::from_utf8_lossy(value.as_bytes())
            ))
        })
}

#[derive(Deserialize)]
struct JsonRequest<'a> {
    #[serde(default)]
    id: String,
    #[serde(default, borrow)]
    parameters: JsonParams<'a>,
    #[serde(borrow, deserialize_with = "at_most_tensors")]
    inputs: Vec<JsonInput<'a>>,
    #[serde(default, borrow, deserialize_with = "at_most_tensors")]
    outputs: Vec<JsonOutput<'a>>,
}

/// Most inputs, and most outputs, one request may name: a request naming
/// more is refused as soon as the parser reaches the first extra one.
pub const MAX_TENSORS_PER_REQUEST: usize = 4096;

/// A list of at most [`MAX_TENSORS_PER_REQUEST`] items.
fn at_most_tensors<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    AtMost::new(MAX_TENSORS_PER_REQUEST, || {
        format!(
            "a request names at most {MAX_TENSORS_PER_REQUEST} inputs and {MAX_TENSORS_PER_REQUEST} outputs"
        )
    })
    .deserialize(deserializer)
}

/// One input as the JSON names it. Its `data` is converted to raw bytes
/// while it is parsed when `datatype` and `shape` came before it (as every
/// client writes them); otherwise it is kept as JSON and converted after.
struct JsonInput<'de> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    parameters: JsonParams<'de>,
    data: Option<JsonData>,
}

/// A key of an input object; the ones mlserve does not know are ignored.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum InputField {
    Name,
    Shape,
    Datatype,
    Parameters,
    Data,
    #[serde(other)]
    Other,
}

/// An input's `data`, converted or still JSON.
enum JsonData {
    Raw(Vec<u8>),
    Deferred(Value),
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonInput<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<'a>(std::marker::PhantomData<JsonInput<'a>>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Fields<'a> {
            type Value = JsonInput<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an input: {\"name\", \"shape\", \"datatype\", \"data\"}")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonInput<'a>, A::Error> {
                use serde::de::Error as _;
                // A repeated field is refused, as serde's derive does:
                // `data` is converted with the `datatype` and `shape` seen
                // before it, which a later repeat must not change.
                fn unset<T, E: serde::de::Error>(slot: &Option<T>, key: &str) -> Result<(), E> {
                    match slot {
                        Some(_) => Err(E::custom(format_args!(
                            "duplicate field `{key}` in an input"
                        ))),
                        None => Ok(()),
                    }
                }
                let (mut name, mut shape, mut datatype) = (None, None, None);
                let (mut parameters, mut data) = (None, None);
                while let Some(key) = map.next_key::<InputField>()? {
                    match key {
                        InputField::Name => {
                            unset(&name, "name")?;
                            name = Some(map.next_value::<String>()?);
                        }
                        InputField::Shape => {
                            unset(&shape, "shape")?;
                            shape = Some(map.next_value::<Vec<i64>>()?);
                        }
                        InputField::Datatype => {
                            unset(&datatype, "datatype")?;
                            datatype = Some(map.next_value::<String>()?);
                        }
                        InputField::Parameters => {
                            unset(&parameters, "parameters")?;
                            parameters = Some(map.next_value::<JsonParams<'a>>()?);
                        }
                        InputField::Data => {
                            unset(&data, "data")?;
                            let dtype = datatype.as_deref().and_then(wire_datatype);
                            let count = shape.as_deref().and_then(element_count);
                            data = Some(match (dtype, count) {
                                (Some(dtype), Some(expected)) => {
                                    JsonData::Raw(map.next_value_seed(RawSeed {
                                        name: name.as_deref().unwrap_or("?"),
                                        dtype,
                                        expected,
                                    })?)
                                }
                                _ => JsonData::Deferred(map.next_value()?),
                            });
                        }
                        InputField::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(JsonInput {
                    name: name.ok_or_else(|| A::Error::missing_field("name"))?,
                    shape: shape.ok_or_else(|| A::Error::missing_field("shape"))?,
                    datatype: datatype.ok_or_else(|| A::Error::missing_field("datatype"))?,
                    parameters: parameters.unwrap_or_default(),
                    data,
                })
            }
        }
        deserializer.deserialize_map(Fields(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct JsonOutput<'a> {
    name: String,
    #[serde(default, borrow)]
    parameters: JsonParams<'a>,
}

/// Decodes a JSON (or JSON + binary) request body; `header_len` is the
/// `Inference-Header-Content-Length`, which must not be 0 here.
pub(super) fn decode(body: Bytes, header_len: Option<usize>) -> Result<Decoded, ServiceError> {
    let (json, binary) = match header_len {
        Some(n) if n > body.len() => {
            return Err(ServiceError::bad_request(format!(
                "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                body.len()
            )))
        }
        Some(n) => (body.slice(..n), body.slice(n..)),
        None => (body, Bytes::new()),
    };
    let doc: JsonRequest = serde_json::from_slice(&json)
        .map_err(|e| ServiceError::bad_request(format!("invalid inference request JSON: {e}")))?;

    let mut params = doc.parameters;
    let binary_default =
        take_bool(&mut params, "binary_data_output", Site::Request)?.unwrap_or(false);
    let parameters = infer_params(Site::Request, params)?;

    let mut inputs = Vec::with_capacity(doc.inputs.len());
    let mut raw_input_contents = Vec::with_capacity(doc.inputs.len());
    let mut offset = 0usize;
    for input in doc.inputs {
        let (tensor, raw) = decode_input(input, &binary, &mut offset)?;
        inputs.push(tensor);
        raw_input_contents.extend(raw);
    }
    if offset != binary.len() {
        return Err(ServiceError::bad_request(format!(
            "the binary data after the JSON header is {} bytes, but the inputs' binary_data_size add up to {offset}",
            binary.len()
        )));
    }

    let mut plan = ResponsePlan {
        binary_default,
        ..ResponsePlan::default()
    };
    let mut outputs = Vec::with_capacity(doc.outputs.len());
    for output in doc.outputs {
        let what = Site::Output(&output.name);
        let mut params = output.parameters;
        let binary = take_bool(&mut params, "binary_data", what)?;
        let classification = match take_count(&mut params, "classification", what)? {
            Some(0) => {
                return Err(ServiceError::bad_request(format!(
                    "classification of {what} must be at least 1"
                )))
            }
            Some(k) => Some(usize::try_from(k).unwrap_or(usize::MAX)),
            None => None,
        };
        let parameters = infer_params(what, params)?;
        plan.outputs.insert(
            output.name.clone(),
            OutputPlan {
                binary,
                classification,
            },
        );
        outputs.push(InferRequestedOutputTensor {
            name: output.name,
            parameters,
        });
    }

    let request = pb::ModelInferRequest {
        id: doc.id,
        parameters,
        inputs,
        outputs,
        raw_input_contents,
        ..Default::default()
    };
    Ok(Decoded { request, plan })
}

/// One input: its tensor (without data) and its raw data, taken from the
/// binary section at `offset` or converted from JSON; none for an input in a
/// shared memory region (its parameters name it, and the service reads it).
fn decode_input(
    input: JsonInput<'_>,
    binary: &Bytes,
    offset: &mut usize,
) -> Result<(InferInputTensor, Option<Bytes>), ServiceError> {
    let name = input.name;
    let what = Site::Input(&name);
    let dtype = wire_datatype(&input.datatype).ok_or_else(|| {
        ServiceError::bad_request(format!(
            "{what} has an unknown datatype '{}'",
            input.datatype
        ))
    })?;
    let count = element_count(&input.shape).ok_or_else(|| {
        ServiceError::bad_request(format!("{what} has an invalid shape {:?}", input.shape))
    })?;
    let mut params = input.parameters;
    let binary_size = take_count(&mut params, "binary_data_size", what)?;
    let in_shared_memory = params.contains_key(SHARED_MEMORY_REGION);
    let raw = match (binary_size, input.data) {
        (None, None) if in_shared_memory => None,
        (Some(_), _) | (_, Some(_)) if in_shared_memory => {
            return Err(ServiceError::bad_request(format!(
                "{what} names a shared memory region and also carries data"
            )))
        }
        (Some(_), Some(_)) => {
            return Err(ServiceError::bad_request(format!(
                "{what} has both 'data' and a binary_data_size parameter"
            )))
        }
        (None, None) => {
            return Err(ServiceError::bad_request(format!(
                "{what} has neither 'data' nor a binary_data_size parameter"
            )))
        }
        (Some(size), None) => {
            let end = usize::try_from(size)
                .ok()
                .and_then(|s| offset.checked_add(s))
                .filter(|&end| end <= binary.len());
            let Some(end) = end else {
                return Err(ServiceError::bad_request(format!(
                    "{what} declares binary_data_size {size} at offset {offset}, past the end of the {} bytes of binary data",
                    binary.len()
                )));
            };
            let raw = binary.slice(*offset..end);
            *offset = end;
            if let Some(elem) = dtype.element_size() {
                if count.checked_mul(elem) != Some(raw.len()) {
                    return Err(ServiceError::bad_request(format!(
                        "{what} has {} bytes of binary data, but shape {:?} of {dtype} needs {}",
                        raw.len(),
                        input.shape,
                        count.saturating_mul(elem)
                    )));
                }
            }
            Some(raw)
        }
        (None, Some(JsonData::Raw(raw))) => Some(Bytes::from(raw)),
        (None, Some(JsonData::Deferred(data))) => {
            Some(Bytes::from(json_to_raw(&name, dtype, &data, count)?))
        }
    };
    let parameters = infer_params(what, params)?;
    let tensor = InferInputTensor {
        name,
        // The wire name, as `wire_datatype` accepted it.
        datatype: input.datatype,
        shape: input.shape,
        parameters,
        contents: None,
    };
    Ok((tensor, raw))
}

/// Decodes the body of `POST /v2/models/{m}/infer` into the request the
/// inference service gets, as the handler does once the body is read and
/// decompressed: `headers` give the `Inference-Header-Content-Length`
/// (absent: all JSON; N > 0: N bytes of JSON, then the binary data; 0: the
/// raw data of the single input `metadata` describes). The model name and
/// version are left empty, and the HTTP-only answer plan is dropped. The
/// entry point of the fuzz targets in `fuzz/`.
pub fn decode_infer_body(
    headers: &HeaderMap,
    body: Bytes,
    metadata: &pb::ModelMetadataResponse,
) -> Result<pb::ModelInferRequest, ServiceError> {
    let decoded = match header_length(headers)? {
        Some(0) => decode_raw(body, metadata)?,
        header_len => decode(body, header_len)?,
    };
    Ok(decoded.request)
}

/// A datatype as named on the wire (`FP32`; the config spelling `TYPE_FP32`
/// is not a wire name).
fn wire_datatype(name: &str) -> Option<DataType> {
    DataType::parse(name).filter(|d| d.as_str() == name)
}

/// Decodes a raw binary request (`Inference-Header-Content-Length: 0`): the
/// whole body is the data of the model's only input, at batch 1, and every
/// output is answered in binary.
///
/// The shape is the input's metadata shape with a leading `-1` (the batch
/// dimension) set to 1 and at most one other `-1` resolved from the body's size.
/// For BYTES the body is one element and the shape is all ones.
pub(super) fn decode_raw(
    body: Bytes,
    metadata: &pb::ModelMetadataResponse,
) -> Result<Decoded, ServiceError> {
    let [input] = metadata.inputs.as_slice() else {
        return Err(ServiceError::bad_request(format!(
            "a raw binary request (Inference-Header-Content-Length: 0) needs a model with a single input, \
             but model '{}' has {} inputs",
            metadata.name,
            metadata.inputs.len()
        )));
    };
    let dtype = DataType::parse(&input.datatype).ok_or_else(|| {
        ServiceError::internal(format!(
            "input '{}' of model '{}' has an unknown datatype '{}'",
            input.name, metadata.name, input.datatype
        ))
    })?;
    let shape = raw_shape(&input.shape, dtype, body.len()).map_err(|msg| {
        ServiceError::bad_request(format!(
            "raw binary request for input '{}': {msg}",
            input.name
        ))
    })?;
    let raw = if dtype == DataType::Bytes {
        if u32::try_from(body.len()).is_err() {
            return Err(ServiceError::bad_request(
                "a raw BYTES element may not exceed 4 GiB",
            ));
        }
        let mut raw = Vec::with_capacity(body.len() + 4);
        push_bytes_element(&mut raw, &body);
        Bytes::from(raw)
    } else {
        body
    };
    let tensor = InferInputTensor {
        name: input.name.clone(),
        datatype: dtype.as_str().to_string(),
        shape,
        ..Default::default()
    };
    let request = pb::ModelInferRequest {
        inputs: vec![tensor],
        raw_input_contents: vec![raw],
        ..Default::default()
    };
    Ok(Decoded {
        request,
        plan: ResponsePlan {
            binary_default: true,
            ..ResponsePlan::default()
        },
    })
}

/// Resolves the shape of a raw input of `bytes` bytes; see [`decode_raw`].
fn raw_shape(meta: &[i64], dtype: DataType, bytes: usize) -> Result<Vec<i64>, String> {
    let Some(size) = dtype.element_size() else {
        return Ok(vec![1; meta.len()]);
    };
    let mut shape = meta.to_vec();
    if let Some(first) = shape.first_mut().filter(|d| **d == -1) {
        *first = 1;
    }
    let mut unknown = None;
    let mut known = size;
    for (i, &d) in shape.iter().enumerate() {
        match d {
            -1 if unknown.is_none() => unknown = Some(i),
            -1 => {
                return Err(format!(
                    "the model's shape {meta:?} has more than one variable dimension to resolve"
                ))
            }
            d => {
                let d = usize::try_from(d)
                    .map_err(|_| format!("the model's shape {meta:?} is invalid"))?;
                known = known
                    .checked_mul(d)
                    .ok_or_else(|| format!("the model's shape {meta:?} overflows"))?;
            }
        }
    }
    match unknown {
        None if known == bytes => Ok(shape),
        None => Err(format!(
            "the body has {bytes} bytes but shape {shape:?} of {dtype} needs {known}"
        )),
        Some(i) => {
            if known == 0 || !bytes.is_multiple_of(known) {
                return Err(format!(
                    "the body's {bytes} bytes do not fill shape {meta:?} of {dtype}"
                ));
            }
            shape[i] =
                i64::try_from(bytes / known).map_err(|_| "the body is too large".to_string())?;
            Ok(shape)
        }
    }
}

#[cfg(test)]
#[path = "infer_request_tests.rs"]
mod tests;
