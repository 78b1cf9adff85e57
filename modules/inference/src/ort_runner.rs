//! Runs batches on an ONNX Runtime session owned by one instance thread.

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use ort::environment::Environment;
use ort::ep;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynTensor, DynTensorValueType, TensorElementType, ValueType};

use crate::error::{InferenceError, Result};
use crate::graph_level::GraphOptimizationLevel;
use crate::model_config::{InstanceKind, ModelSpec, OnnxSignature};
use crate::scheduler::ModelRunner;
use crate::stats::BatchTimings;
use crate::string_tensor::{bytes_tensor, tensor_bytes};
use crate::tensor::{split_rows, OutputTensor, RequestInputs};
use mlserve_common::datatype::split_bytes_elements;
use mlserve_common::DataType;

/// Session options of one instance.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// CPU or GPU.
    pub kind: InstanceKind,
    /// GPU id for GPU instances.
    pub device_id: i32,
    /// Intra-op threads of a pool of the session's own; 0 shares the
    /// environment's global pool (the default).
    pub intra_op_threads: usize,
    /// Inter-op threads.
    pub inter_op_threads: usize,
    /// How much ONNX Runtime optimizes the graph.
    pub optimization_level: GraphOptimizationLevel,
}

/// Opens a session on `path`. A GPU instance asks for CUDA (with TensorRT
/// first) and falls back to CPU with a warning when the provider is missing.
pub fn open_session(env: &Environment, path: &Path, options: &SessionOptions) -> Result<Session> {
    if options.kind == InstanceKind::Gpu {
        let providers = [
            ep::TensorRT::default()
                .with_device_id(options.device_id)
                .build(),
            ep::CUDA::default()
                .with_device_id(options.device_id)
                .build()
                .error_on_failure(),
        ];
        match build_session(env, path, options, Some(&providers)) {
            Ok(session) => return Ok(session),
            Err(err) => tracing::warn!(
                model = %path.display(), error = %err,
                "gpu execution provider unavailable, falling back to cpu"
            ),
        }
    }
    build_session(env, path, options, None)
}

fn build_session(
    env: &Environment,
    path: &Path,
    options: &SessionOptions,
    providers: Option<&[ep::ExecutionProviderDispatch]>,
) -> Result<Session> {
    let fail = |e: ort::Error<ort::session::builder::SessionBuilder>| {
        InferenceError::InvalidModel(e.to_string())
    };
    let mut builder = Session::builder(env)
        .map_err(|e| InferenceError::Backend(e.to_string()))?
        .with_optimization_level(options.optimization_level.to_ort())
        .map_err(fail)?;
    if options.intra_op_threads > 0 {
        builder = builder
            .with_independent_thread_pool()
            .map_err(fail)?
            .with_intra_threads(options.intra_op_threads)
            .map_err(fail)?
            .with_inter_threads(options.inter_op_threads.max(1))
            .map_err(fail)?;
    }
    if let Some(providers) = providers {
        builder = builder.with_execution_providers(providers).map_err(fail)?;
    }
    builder
        .commit_from_file(path)
        .map_err(|e| InferenceError::InvalidModel(format!("cannot load {}: {e}", path.display())))
}

/// Maps ONNX Runtime's element type to the protocol's datatype.
pub fn datatype_of(ty: TensorElementType) -> Option<DataType> {
    DataType::ALL
        .into_iter()
        .find(|&d| element_type_of(d) == ty)
}

/// Maps the protocol's datatype to ONNX Runtime's element type.
pub fn element_type_of(datatype: DataType) -> TensorElementType {
    match datatype {
        DataType::Bool => TensorElementType::Bool,
        DataType::Uint8 => TensorElementType::Uint8,
        DataType::Uint16 => TensorElementType::Uint16,
        DataType::Uint32 => TensorElementType::Uint32,
        DataType::Uint64 => TensorElementType::Uint64,
        DataType::Int8 => TensorElementType::Int8,
        DataType::Int16 => TensorElementType::Int16,
        DataType::Int32 => TensorElementType::Int32,
        DataType::Int64 => TensorElementType::Int64,
        DataType::Fp16 => TensorElementType::Float16,
        DataType::Fp32 => TensorElementType::Float32,
        DataType::Fp64 => TensorElementType::Float64,
        DataType::Bf16 => TensorElementType::Bfloat16,
        DataType::Bytes => TensorElementType::String,
    }
}

/// The inputs and outputs the session declares. Non-tensor values (maps,
/// sequences) are refused: the protocol carries tensors only.
pub fn signature(session: &Session) -> Result<OnnxSignature> {
    let describe = |outlets: &[ort::value::Outlet], kind: &str| {
        outlets
            .iter()
            .map(|outlet| match outlet.dtype() {
                ValueType::Tensor { ty, shape, .. } => {
                    let datatype = datatype_of(*ty).ok_or_else(|| {
                        InferenceError::InvalidModel(format!(
                            "{kind} '{}' has unsupported type {ty:?}",
                            outlet.name()
                        ))
                    })?;
                    Ok((outlet.name().to_string(), datatype, shape.to_vec()))
                }
                other => Err(InferenceError::InvalidModel(format!(
                    "{kind} '{}' is a {other:?}, not a tensor",
                    outlet.name()
                ))),
            })
            .collect::<Result<Vec<_>>>()
    };
    Ok(OnnxSignature {
        inputs: describe(session.inputs(), "input")?,
        outputs: describe(session.outputs(), "output")?,
    })
}

/// An instance's runner: one session, used by one thread.
pub struct OrtRunner {
    session: Session,
    spec: std::sync::Arc<ModelSpec>,
}

impl OrtRunner {
    /// Wraps an opened session.
    pub fn new(session: Session, spec: std::sync::Arc<ModelSpec>) -> Self {
        OrtRunner { session, spec }
    }

    /// Builds one input of the batch: the only copy of the request data.
    fn assemble(
        &self,
        index: usize,
        batch: &[&RequestInputs],
        rows: usize,
    ) -> Result<SessionInputValue<'static>> {
        let spec = &self.spec.inputs[index];
        let first = &batch[0].tensors[index].shape;
        let mut shape = first.clone();
        if self.spec.max_batch_size > 0 {
            shape[0] = rows as i64;
        }
        if spec.datatype == DataType::Bytes {
            let mut elements = Vec::new();
            for request in batch {
                elements.extend(
                    split_bytes_elements(&request.tensors[index].data)
                        .map_err(InferenceError::Internal)?,
                );
            }
            let tensor = bytes_tensor(&shape, elements.into_iter())?;
            return Ok(SessionInputValue::from(tensor));
        }
        let mut tensor = DynTensor::new(
            self.session.allocator(),
            element_type_of(spec.datatype),
            shape,
        )?;
        let total: usize = batch.iter().map(|r| r.tensors[index].data.len()).sum();
        let capacity = tensor.size().unwrap_or(total);
        if capacity != total {
            return Err(InferenceError::Internal(format!(
                "input '{}': {total} bytes for a {capacity}-byte tensor",
                spec.name
            )));
        }
        let base = tensor.data_ptr_mut() as *mut u8;
        let mut offset = 0;
        for request in batch {
            let data = &request.tensors[index].data;
            // SAFETY: the tensor owns `capacity` bytes and the parts add up to it.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(offset), data.len()) };
            offset += data.len();
        }
        Ok(SessionInputValue::from(tensor))
    }
}

impl ModelRunner for OrtRunner {
    fn run(&mut self, batch: &[&RequestInputs]) -> Result<(Vec<Vec<OutputTensor>>, BatchTimings)> {
        let started = Instant::now();
        let rows: usize = batch.iter().map(|r| r.rows).sum();
        let mut inputs: Vec<(String, SessionInputValue<'static>)> =
            Vec::with_capacity(self.spec.inputs.len());
        for index in 0..self.spec.inputs.len() {
            inputs.push((
                self.spec.inputs[index].name.clone(),
                self.assemble(index, batch, rows)?,
            ));
        }
        let assembled = Instant::now();
        let spec = self.spec.clone();
        let outputs = self.session.run(inputs)?;
        let ran = Instant::now();
        let rows_per_request: Vec<usize> = if spec.max_batch_size > 0 {
            batch.iter().map(|r| r.rows).collect()
        } else {
            vec![1]
        };
        let mut per_request: Vec<Vec<OutputTensor>> =
            vec![Vec::with_capacity(spec.outputs.len()); batch.len()];
        for output in &spec.outputs {
            let value = outputs.get(output.name.as_str()).ok_or_else(|| {
                InferenceError::Internal(format!("session gave no output '{}'", output.name))
            })?;
            let tensor = value.view().downcast::<DynTensorValueType>()?;
            let shape: Vec<i64> = tensor.shape().to_vec();
            let parts = if output.datatype == DataType::Bytes {
                let count = shape.iter().product::<i64>().max(0) as usize;
                let raw = tensor_bytes(value, count)?;
                split_or_whole(
                    &output.name,
                    output.datatype,
                    &shape,
                    &raw,
                    &rows_per_request,
                    spec.max_batch_size,
                )?
            } else {
                let size = tensor.size().unwrap_or(0);
                // SAFETY: ONNX Runtime owns `size` bytes of CPU tensor data at `data_ptr`.
                let raw =
                    unsafe { std::slice::from_raw_parts(tensor.data_ptr() as *const u8, size) };
                split_or_whole(
                    &output.name,
                    output.datatype,
                    &shape,
                    raw,
                    &rows_per_request,
                    spec.max_batch_size,
                )?
            };
            for (request, part) in per_request.iter_mut().zip(parts) {
                request.push(part);
            }
        }
        let timings = BatchTimings {
            input: assembled - started,
            infer: ran - assembled,
            output: ran.elapsed(),
        };
        Ok((per_request, timings))
    }
}

fn split_or_whole(
    name: &str,
    datatype: DataType,
    shape: &[i64],
    raw: &[u8],
    rows_per_request: &[usize],
    max_batch_size: usize,
) -> Result<Vec<OutputTensor>> {
    if max_batch_size > 0 {
        return split_rows(name, datatype, shape, raw, rows_per_request);
    }
    Ok(vec![OutputTensor {
        name: name.to_string(),
        datatype,
        shape: shape.to_vec(),
        data: Bytes::copy_from_slice(raw),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_types_map_both_ways() {
        for d in DataType::ALL {
            assert_eq!(datatype_of(element_type_of(d)), Some(d));
        }
        assert_eq!(datatype_of(TensorElementType::Complex64), None);
    }
}
