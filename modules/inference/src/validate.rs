//! Checks an inference request against the model, as Triton's
//! L0_input_validation expects, and turns it into [`RequestInputs`].

use std::time::Duration;

use bytes::Bytes;
use mlserve_proto::pb;
use mlserve_proto::pb::infer_parameter::ParameterChoice;

use crate::error::{InferenceError, Result};
use crate::model_config::ModelSpec;
use crate::tensor::{InputTensor, RequestInputs};
use mlserve_common::datatype::{element_count, push_bytes_element, split_bytes_elements};
use mlserve_common::DataType;

/// A request the scheduler can take.
#[derive(Debug)]
pub struct ValidatedRequest {
    /// Inputs in model order.
    pub inputs: RequestInputs,
    /// Indices into `ModelSpec::outputs` to return; all when `None`.
    pub outputs: Option<Vec<usize>>,
    /// Priority level (0 = default).
    pub priority: u32,
    /// Queue timeout asked for by the request.
    pub timeout: Option<Duration>,
}

fn invalid(msg: String) -> InferenceError {
    InferenceError::InvalidInput(msg)
}

/// Validates `request` for `spec`, taking its tensor data out of it.
pub fn validate(spec: &ModelSpec, request: &mut pb::ModelInferRequest) -> Result<ValidatedRequest> {
    let model = &spec.name;
    let raw = std::mem::take(&mut request.raw_input_contents);
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(invalid(format!(
            "expected {} raw input contents (one per input) but got {} for model '{model}'",
            request.inputs.len(),
            raw.len()
        )));
    }
    // Triton refuses a request that carries its data both ways.
    if let Some(input) = request.inputs.iter().find(|i| i.contents.is_some()) {
        if !raw.is_empty() {
            return Err(invalid(format!(
                "contents field must not be specified when using raw_input_contents for '{}' for model '{model}'",
                input.name
            )));
        }
    }
    let mut slots: Vec<Option<InputTensor>> = vec![None; spec.inputs.len()];
    let mut rows: Option<usize> = None;
    for (i, input) in request.inputs.iter_mut().enumerate() {
        let Some(index) = spec.inputs.iter().position(|s| s.name == input.name) else {
            return Err(invalid(format!(
                "unexpected inference input '{}' for model '{model}'",
                input.name
            )));
        };
        if slots[index].is_some() {
            return Err(invalid(format!(
                "input '{}' is given more than once",
                input.name
            )));
        }
        let expected = &spec.inputs[index];
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
            invalid(format!(
                "input '{}' has unknown datatype '{}'",
                input.name, input.datatype
            ))
        })?;
        if datatype != expected.datatype {
            return Err(invalid(format!(
                "inference input '{}' data-type is '{}', but model '{model}' expects '{}'",
                input.name, datatype, expected.datatype
            )));
        }
        let input_rows = check_shape(spec, index, &input.shape)?;
        match rows {
            Some(r) if r != input_rows => {
                return Err(invalid(format!(
                    "input '{}' has batch size {input_rows} but another input has {r}; all inputs must share the batch size",
                    input.name
                )))
            }
            _ => rows = Some(input_rows),
        }
        let count = element_count(&input.shape).ok_or_else(|| {
            invalid(format!(
                "input '{}' shape {:?} is too large",
                input.name, input.shape
            ))
        })?;
        let data = match raw.get(i) {
            Some(bytes) => bytes.clone(),
            None => contents_to_raw(&input.name, datatype, input.contents.take())?,
        };
        check_size(&input.name, datatype, count, &data)?;
        slots[index] = Some(InputTensor {
            shape: input.shape.clone(),
            data,
        });
    }
    let missing: Vec<&str> = spec
        .inputs
        .iter()
        .zip(&slots)
        .filter(|(_, s)| s.is_none())
        .map(|(t, _)| t.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(invalid(format!(
            "expected {} inputs but got {} inputs for model '{model}'; missing: {}",
            spec.inputs.len(),
            request.inputs.len(),
            missing.join(", ")
        )));
    }
    let tensors = slots.into_iter().flatten().collect();
    let outputs = requested_outputs(spec, &request.outputs)?;
    let (priority, timeout) = scheduling_parameters(request)?;
    Ok(ValidatedRequest {
        inputs: RequestInputs {
            rows: rows.unwrap_or(1),
            tensors,
        },
        outputs,
        priority,
        timeout,
    })
}

/// Checks one input's shape; returns the rows it adds to a batch.
pub(crate) fn check_shape(spec: &ModelSpec, index: usize, shape: &[i64]) -> Result<usize> {
    let expected = &spec.inputs[index];
    let name = &expected.name;
    if let Some(d) = shape.iter().find(|d| **d < 0) {
        return Err(invalid(format!(
            "input '{name}' has a negative dimension {d} in shape {shape:?}"
        )));
    }
    let batching = spec.max_batch_size > 0;
    let dims = if batching {
        shape.get(1..).unwrap_or(&[])
    } else {
        shape
    };
    let wrong_rank =
        if batching { shape.is_empty() } else { false } || dims.len() != expected.dims.len();
    let mismatch = dims
        .iter()
        .zip(&expected.dims)
        .any(|(given, want)| *want >= 0 && given != want);
    if wrong_rank || mismatch {
        let full: Vec<i64> = if batching {
            std::iter::once(-1)
                .chain(expected.dims.iter().copied())
                .collect()
        } else {
            expected.dims.clone()
        };
        return Err(invalid(format!(
            "unexpected shape for input '{name}' for model '{}'. Expected {full:?}, got {shape:?}",
            spec.name
        )));
    }
    if !batching {
        return Ok(1);
    }
    let rows = shape[0] as usize;
    if rows == 0 || rows > spec.max_batch_size {
        return Err(invalid(format!(
            "inference request batch-size must be <= {} for '{}' (got {rows} for input '{name}')",
            spec.max_batch_size, spec.name
        )));
    }
    Ok(rows)
}

fn check_size(name: &str, datatype: DataType, count: usize, data: &Bytes) -> Result<()> {
    match datatype.element_size() {
        Some(size) => {
            let expected = count
                .checked_mul(size)
                .ok_or_else(|| invalid(format!("input '{name}' is too large")))?;
            if data.len() != expected {
                return Err(invalid(format!(
                    "unexpected total byte size {} for input '{name}', expecting {expected}",
                    data.len()
                )));
            }
        }
        None => {
            let elements =
                split_bytes_elements(data).map_err(|e| invalid(format!("input '{name}': {e}")))?;
            if elements.len() != count {
                return Err(invalid(format!(
                    "input '{name}' holds {} BYTES elements but its shape needs {count}",
                    elements.len()
                )));
            }
        }
    }
    Ok(())
}

/// An input's typed `contents` in the raw encoding, taken out of it.
pub(crate) fn contents_as_raw(
    input: &mut pb::model_infer_request::InferInputTensor,
) -> Result<Bytes> {
    let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
        invalid(format!(
            "input '{}' has unknown datatype '{}'",
            input.name, input.datatype
        ))
    })?;
    contents_to_raw(&input.name, datatype, input.contents.take())
}

/// Converts typed gRPC contents to the raw encoding.
fn contents_to_raw(
    name: &str,
    datatype: DataType,
    contents: Option<pb::InferTensorContents>,
) -> Result<Bytes> {
    let Some(c) = contents else {
        return Err(invalid(format!("input '{name}' has no data")));
    };
    let mut out = Vec::new();
    macro_rules! put {
        ($field:expr, $conv:expr) => {{
            for v in &$field {
                out.extend_from_slice(&$conv(*v).to_le_bytes());
            }
        }};
    }
    match datatype {
        DataType::Bool => out.extend(c.bool_contents.iter().map(|b| *b as u8)),
        DataType::Int8 => put!(c.int_contents, |v: i32| v as i8),
        DataType::Int16 => put!(c.int_contents, |v: i32| v as i16),
        DataType::Int32 => put!(c.int_contents, |v: i32| v),
        DataType::Int64 => put!(c.int64_contents, |v: i64| v),
        DataType::Uint8 => put!(c.uint_contents, |v: u32| v as u8),
        DataType::Uint16 => put!(c.uint_contents, |v: u32| v as u16),
        DataType::Uint32 => put!(c.uint_contents, |v: u32| v),
        DataType::Uint64 => put!(c.uint64_contents, |v: u64| v),
        DataType::Fp32 => put!(c.fp32_contents, |v: f32| v),
        DataType::Fp64 => put!(c.fp64_contents, |v: f64| v),
        DataType::Bytes => c
            .bytes_contents
            .iter()
            .for_each(|e| push_bytes_element(&mut out, e)),
        DataType::Fp16 | DataType::Bf16 => {
            return Err(invalid(format!(
                "input '{name}': {datatype} data must be sent as raw contents"
            )))
        }
    }
    Ok(Bytes::from(out))
}

fn requested_outputs(
    spec: &ModelSpec,
    outputs: &[pb::model_infer_request::InferRequestedOutputTensor],
) -> Result<Option<Vec<usize>>> {
    if outputs.is_empty() {
        return Ok(None);
    }
    let mut indices = Vec::with_capacity(outputs.len());
    for output in outputs {
        let index = spec
            .outputs
            .iter()
            .position(|o| o.name == output.name)
            .ok_or_else(|| {
                invalid(format!(
                    "unexpected inference output '{}' for model '{}'",
                    output.name, spec.name
                ))
            })?;
        if indices.contains(&index) {
            return Err(invalid(format!(
                "output '{}' is requested more than once",
                output.name
            )));
        }
        indices.push(index);
    }
    Ok(Some(indices))
}

fn scheduling_parameters(request: &pb::ModelInferRequest) -> Result<(u32, Option<Duration>)> {
    let unsigned = |key: &str| -> Result<Option<u64>> {
        match request
            .parameters
            .get(key)
            .and_then(|p| p.parameter_choice.as_ref())
        {
            None => Ok(None),
            Some(ParameterChoice::Int64Param(v)) if *v >= 0 => Ok(Some(*v as u64)),
            Some(ParameterChoice::Uint64Param(v)) => Ok(Some(*v)),
            Some(_) => Err(invalid(format!(
                "request parameter '{key}' must be a non-negative integer"
            ))),
        }
    };
    let priority = unsigned("priority")?.unwrap_or(0);
    let priority = u32::try_from(priority)
        .map_err(|_| invalid(format!("priority {priority} is too large")))?;
    let timeout = unsigned("timeout")?
        .filter(|t| *t > 0)
        .map(Duration::from_micros);
    Ok((priority, timeout))
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
