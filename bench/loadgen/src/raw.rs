//! The ceiling: the same model run in-process by ONNX Runtime, one session,
//! back-to-back batches on inputs made once, with the threading the server
//! uses (one global pool of `intra_threads` intra-op threads and one
//! inter-op thread, spinning off unless asked) and all graph optimizations.
//! Nothing but `Session::run` is timed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use mlserve_inference::model_config::InstanceKind;
use mlserve_inference::ort_env;
use mlserve_inference::ort_runner::{element_type_of, open_session, signature, SessionOptions};
use mlserve_proto::datatype::split_bytes_elements;
use mlserve_proto::DataType;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynTensor, DynValue, Tensor};

use crate::inputs::Rows;
use crate::progress::{Progress, REFRESH};
use crate::stats::Recorder;
use crate::tensor::{random_inputs, InputSpec, InputTensor};

/// The shape of a raw run.
#[derive(Debug, Clone)]
pub struct RawPlan {
    /// The ONNX file.
    pub model_file: PathBuf,
    /// Rows per run.
    pub batch: usize,
    /// Intra-op threads of the global pool.
    pub intra_threads: usize,
    /// Unmeasured time first.
    pub warmup: Duration,
    /// Measured window.
    pub duration: Duration,
    /// `libonnxruntime.so` to load.
    pub library: Option<PathBuf>,
    /// `DIR` of `DIR/inputs/manifest.json`: run on rows of real payloads
    /// instead of random data.
    pub inputs: Option<PathBuf>,
    /// The manifest entry (default: the model's folder name,
    /// `<name>/<version>/model.onnx`).
    pub inputs_key: Option<String>,
}

/// The manifest entry of a model file laid out as `<name>/<version>/model.onnx`.
fn default_key(model_file: &Path) -> String {
    model_file
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Opens the session, makes the inputs (random, or the first rows of a
/// payload file) and runs the plan.
/// Returns the measurements and the bytes of one batch's inputs.
pub fn run(plan: &RawPlan, label: String, show_progress: bool) -> Result<(Recorder, usize)> {
    // The server's own loading code, so the ceiling runs exactly as an
    // instance does: one global pool of `intra_threads`, spinning off, all
    // graph optimizations.
    let environment = ort_env::environment(plan.library.as_deref(), plan.intra_threads)
        .map_err(anyhow::Error::msg)?;
    let options = SessionOptions {
        kind: InstanceKind::Cpu,
        device_id: 0,
        intra_op_threads: 0,
        inter_op_threads: 1,
        optimization_level: mlserve_inference::graph_level::GraphOptimizationLevel::All,
    };
    let mut session = open_session(environment, &plan.model_file, &options)
        .map_err(|e| anyhow!("cannot load {}: {e}", plan.model_file.display()))?;
    let specs = input_specs(&session)?;
    let tensors = match &plan.inputs {
        Some(dir) => {
            let key = plan
                .inputs_key
                .clone()
                .unwrap_or_else(|| default_key(&plan.model_file));
            Rows::load(dir, &key)?.request(&specs, plan.batch, 0)?
        }
        None => random_inputs(&specs, plan.batch, 42)?,
    };
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
    let signature = signature(session).map_err(|e| anyhow!("{e}"))?;
    Ok(signature
        .inputs
        .into_iter()
        .map(|(name, datatype, shape)| InputSpec {
            name,
            datatype,
            shape,
        })
        .collect())
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
