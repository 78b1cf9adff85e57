//! The ceiling: the same model run in-process by ONNX Runtime, one session,
//! back-to-back batches on inputs made once, with the threading the server
//! uses (one global pool of `intra_threads` intra-op threads and one
//! inter-op thread, spinning off unless asked) and all graph optimizations.
//! Nothing but `Session::run` is timed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use mlserve_proto::datatype::split_bytes_elements;
use mlserve_proto::DataType;
use ort::environment::GlobalThreadPoolOptions;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynTensor, DynValue, Tensor, TensorElementType, ValueType};

use crate::progress::{Progress, REFRESH};
use crate::stats::Recorder;
use crate::tensor::{random_inputs, InputSpec, InputTensor};

/// The library used when neither `--ort-lib` nor `ORT_DYLIB_PATH` is given.
const DEFAULT_LIBRARY: &str = ".onnxruntime/libonnxruntime.so.1.31.1";

/// The shape of a raw run.
#[derive(Debug, Clone)]
pub struct RawPlan {
    /// The ONNX file.
    pub model_file: PathBuf,
    /// Rows per run.
    pub batch: usize,
    /// Intra-op threads of the global pool.
    pub intra_threads: usize,
    /// Let idle pool threads spin (the server does not).
    pub spin: bool,
    /// Unmeasured time first.
    pub warmup: Duration,
    /// Measured window.
    pub duration: Duration,
    /// `libonnxruntime.so` to load.
    pub library: Option<PathBuf>,
}

/// Where the ONNX Runtime library is: the flag, then `ORT_DYLIB_PATH`, then
/// the repository's `.onnxruntime/` from the working directory or from the
/// executable in `target/<profile>/`.
pub fn library_path(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = flag {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return Ok(PathBuf::from(path));
    }
    let mut candidates = vec![PathBuf::from(DEFAULT_LIBRARY)];
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(
            exe.ancestors()
                .skip(1)
                .take(3)
                .map(|d| d.join(DEFAULT_LIBRARY)),
        );
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("cannot find libonnxruntime.so: run `bash scripts/setup.sh`, or pass --ort-lib or set ORT_DYLIB_PATH")
}

/// Opens the session, makes the inputs and runs the plan.
/// Returns the measurements and the bytes of one batch's inputs.
pub fn run(plan: &RawPlan, label: String, show_progress: bool) -> Result<(Recorder, usize)> {
    let library = library_path(plan.library.as_deref())?;
    // Loading the library comes first: building the pool options calls it.
    let builder = ort::init_from(&library)
        .map_err(|e| anyhow!("cannot load ONNX Runtime from {}: {e}", library.display()))?;
    let pool = GlobalThreadPoolOptions::default()
        .with_intra_threads(plan.intra_threads.max(1))
        .and_then(|p| p.with_inter_threads(1))
        .and_then(|p| p.with_spin_control(plan.spin))
        .map_err(|e| anyhow!("cannot configure the ONNX Runtime thread pool: {e}"))?;
    let environment = builder
        .with_name("loadgen")
        .with_telemetry(false)
        .with_global_thread_pool(pool)
        .build()
        .map_err(|e| anyhow!("cannot start ONNX Runtime: {e}"))?;
    let mut session = Session::builder(&environment)
        .map_err(|e| anyhow!("{e}"))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| anyhow!("{e}"))?
        .commit_from_file(&plan.model_file)
        .map_err(|e| anyhow!("cannot load {}: {e}", plan.model_file.display()))?;
    let specs = input_specs(&session)?;
    let tensors = random_inputs(&specs, plan.batch, 42)?;
    let values = tensors
        .iter()
        .map(|t| to_value(&session, t))
        .collect::<Result<Vec<DynValue>>>()?;
    let inputs: Vec<SessionInputValue<'_>> = values.iter().map(SessionInputValue::from).collect();

    let mut progress = Progress::new(label, plan.warmup, plan.duration, show_progress);
    let mut recorder = Recorder::default();
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let (mut done, mut next_draw) = (0u64, start);
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        if sent >= next_draw {
            progress.draw(done, 0, plan.batch as u64);
            next_draw = sent + REFRESH;
        }
        let outputs = session
            .run(inputs.as_slice())
            .map_err(|e| anyhow!("run failed: {e}"))?;
        drop(outputs);
        let finished = Instant::now();
        done += 1;
        if finished >= measure_from && finished <= end {
            recorder.success(finished - sent);
        }
    }
    progress.finish();
    Ok((recorder, tensors.iter().map(|t| t.raw.len()).sum()))
}

/// The session's inputs, as the server's metadata would describe them.
fn input_specs(session: &Session) -> Result<Vec<InputSpec>> {
    session
        .inputs()
        .iter()
        .map(|outlet| match outlet.dtype() {
            ValueType::Tensor { ty, shape, .. } => Ok(InputSpec {
                name: outlet.name().to_string(),
                datatype: datatype_of(*ty).with_context(|| {
                    format!("input '{}' has unsupported type {ty:?}", outlet.name())
                })?,
                shape: shape.to_vec(),
            }),
            other => bail!("input '{}' is a {other:?}, not a tensor", outlet.name()),
        })
        .collect()
}

fn to_value(session: &Session, tensor: &InputTensor) -> Result<DynValue> {
    if tensor.datatype == DataType::Bytes {
        let strings: Vec<String> = split_bytes_elements(&tensor.raw)
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect();
        let value = Tensor::from_string_array((tensor.shape.clone(), strings.as_slice()))
            .map_err(|e| anyhow!("{e}"))?;
        return Ok(value.into_dyn());
    }
    let mut value = DynTensor::new(
        session.allocator(),
        element_type_of(tensor.datatype),
        tensor.shape.clone(),
    )
    .map_err(|e| anyhow!("{e}"))?;
    if value.size() != Some(tensor.raw.len()) {
        bail!(
            "input '{}': {} bytes for a {:?}-byte tensor",
            tensor.name,
            tensor.raw.len(),
            value.size()
        );
    }
    // SAFETY: the tensor owns exactly `tensor.raw.len()` bytes (checked above).
    unsafe {
        std::ptr::copy_nonoverlapping(
            tensor.raw.as_ptr(),
            value.data_ptr_mut() as *mut u8,
            tensor.raw.len(),
        );
    }
    Ok(value.into_dyn())
}

fn datatype_of(ty: TensorElementType) -> Option<DataType> {
    DataType::ALL
        .into_iter()
        .find(|&d| element_type_of(d) == ty)
}

fn element_type_of(datatype: DataType) -> TensorElementType {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_types_map_both_ways() {
        for d in DataType::ALL {
            assert_eq!(datatype_of(element_type_of(d)), Some(d));
        }
    }

    #[test]
    fn explicit_library_path_wins() {
        let p = library_path(Some(Path::new("/x/libonnxruntime.so"))).unwrap();
        assert_eq!(p, PathBuf::from("/x/libonnxruntime.so"));
    }
}
