//! A model's `config.toml` (Triton's field names) and its resolution against
//! the ONNX file into the [`ModelSpec`] the server runs.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{InferenceError, Result};
use crate::graph_level::GraphOptimizationLevel;
use mlserve_common::config::PlacementOverride;
use mlserve_common::DataType;

/// `config.toml` as written by users. Every section is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfigFile {
    /// Must equal the directory name when given.
    pub name: Option<String>,
    /// `onnxruntime_onnx` (the only platform served).
    pub platform: Option<String>,
    /// `onnxruntime` (the only backend served).
    pub backend: Option<String>,
    /// Largest batch; 0 means the model does not batch. Unset: 8 when every
    /// input and output has a dynamic first dimension, else 0.
    pub max_batch_size: Option<u32>,
    /// Inputs; unset ones come from the ONNX file.
    pub input: Vec<TensorConfig>,
    /// Outputs; unset ones come from the ONNX file.
    pub output: Vec<TensorConfig>,
    /// Dynamic batcher settings.
    pub dynamic_batching: Option<DynamicBatchingConfig>,
    /// Parallel instances.
    pub instance_group: Vec<InstanceGroupConfig>,
    /// Which versions are served.
    pub version_policy: Option<VersionPolicy>,
    /// ONNX Runtime session options.
    pub optimization: Option<OptimizationConfig>,
    /// File name inside each version directory (default `model.onnx`).
    pub default_model_filename: Option<String>,
    /// Triton's ensemble: the steps of a pipeline of other models.
    pub ensemble_scheduling: Option<crate::ensemble_plan::EnsembleConfig>,
    /// mlserve: a request's latency objective, arrival to answer, in
    /// milliseconds. The batcher refuses at once (503 with Retry-After) a
    /// request it predicts would miss it. Unset or 0: the server's
    /// `inference.default_latency_objective`.
    pub latency_objective_ms: Option<u64>,
}

/// One input or output as declared in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorConfig {
    /// Tensor name in the ONNX graph.
    pub name: String,
    /// `TYPE_FP32` or `FP32`.
    pub data_type: String,
    /// Shape without the batch dimension; -1 is variable.
    #[serde(default)]
    pub dims: Vec<i64>,
    /// Accepted for Triton compatibility; mlserve requires every input.
    #[serde(default)]
    pub optional: bool,
}

/// Triton's `dynamic_batching`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamicBatchingConfig {
    /// Batch sizes worth waiting for.
    pub preferred_batch_size: Vec<u32>,
    /// How long a request may wait for a batch to fill; 0 is greedy.
    pub max_queue_delay_microseconds: u64,
    /// Number of priority levels (1 is the highest); 0 disables priorities.
    pub priority_levels: u32,
    /// Level of requests that give no priority.
    pub default_priority_level: u32,
    /// Queue bound and timeouts.
    pub default_queue_policy: QueuePolicyConfig,
    /// Accepted for Triton compatibility: responses always keep request order per caller.
    pub preserve_ordering: bool,
    /// mlserve: learn the batch size with the best throughput from measured
    /// batches and stop batches there (default on; ignored when
    /// `preferred_batch_size` is given, which wins as in Triton).
    pub batch_tuning: Option<bool>,
}

/// Triton's `ModelQueuePolicy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueuePolicyConfig {
    /// Pending requests allowed; a full queue rejects at once. 0 takes the
    /// server's `inference.default_max_queue_size`.
    pub max_queue_size: u32,
    /// Queue timeout of requests that give none; 0 means none.
    pub default_timeout_microseconds: u64,
    /// Whether a request's `timeout` parameter may override the default.
    pub allow_timeout_override: bool,
    /// Only `REJECT` is supported (Triton's default).
    pub timeout_action: Option<TimeoutAction>,
}

/// Triton's `ModelQueuePolicy.TimeoutAction`: what happens to a request whose
/// queue timeout expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TimeoutAction {
    /// The request fails with a deadline error (Triton's default).
    #[serde(rename = "REJECT", alias = "reject")]
    Reject,
    /// The request stays queued behind the others; not supported.
    #[serde(rename = "DELAY", alias = "delay")]
    Delay,
}

/// Triton's `instance_group` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceGroupConfig {
    /// Instances in this group.
    #[serde(default = "one")]
    pub count: u32,
    /// `KIND_CPU` / `cpu`, `KIND_GPU` / `gpu`, `KIND_AUTO` / `auto` or
    /// `KIND_MODEL` / `model` (default CPU).
    #[serde(default)]
    pub kind: Option<InstanceGroupKind>,
    /// GPU ids for `gpu` instances (default 0).
    #[serde(default)]
    pub gpus: Vec<i32>,
    /// Group name (informational).
    #[serde(default)]
    pub name: Option<String>,
}

fn one() -> u32 {
    1
}

/// Which versions of a model are served.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VersionPolicy {
    /// The highest `num_versions` versions.
    Latest {
        /// How many.
        num_versions: u32,
    },
    /// Every version present.
    All {},
    /// Exactly these versions.
    Specific {
        /// The versions.
        versions: Vec<i64>,
    },
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest { num_versions: 1 }
    }
}

impl VersionPolicy {
    /// Picks the served versions out of those present (sorted ascending).
    pub fn select(&self, present: &[i64]) -> Vec<i64> {
        let mut sorted = present.to_vec();
        sorted.sort_unstable();
        match self {
            VersionPolicy::Latest { num_versions } => {
                let keep = (*num_versions).max(1) as usize;
                sorted[sorted.len().saturating_sub(keep)..].to_vec()
            }
            VersionPolicy::All {} => sorted,
            VersionPolicy::Specific { versions } => sorted
                .into_iter()
                .filter(|v| versions.contains(v))
                .collect(),
        }
    }
}

/// ONNX Runtime session options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizationConfig {
    /// Intra-op threads of a pool of each instance's own; 0 (default) shares
    /// the server's ONNX Runtime pool (`inference.cpu_threads`) with every model.
    pub intra_op_threads: usize,
    /// Inter-op threads per instance (default 1).
    pub inter_op_threads: usize,
    /// disable | basic | extended | all (default all).
    pub graph_optimization_level: Option<GraphOptimizationLevel>,
}

/// Triton's `ModelInstanceGroup.Kind` as a config names it. mlserve runs
/// `KIND_AUTO` and `KIND_MODEL` groups on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum InstanceGroupKind {
    /// Triton chooses: mlserve picks the CPU.
    #[serde(rename = "KIND_AUTO", alias = "auto")]
    Auto,
    /// GPU instances.
    #[serde(rename = "KIND_GPU", alias = "gpu")]
    Gpu,
    /// CPU instances.
    #[serde(rename = "KIND_CPU", alias = "cpu")]
    Cpu,
    /// The model places itself: mlserve picks the CPU.
    #[serde(rename = "KIND_MODEL", alias = "model")]
    Model,
}

impl InstanceGroupKind {
    /// Where instances of this kind run.
    pub fn placement(self) -> InstanceKind {
        match self {
            InstanceGroupKind::Gpu => InstanceKind::Gpu,
            InstanceGroupKind::Auto | InstanceGroupKind::Cpu | InstanceGroupKind::Model => {
                InstanceKind::Cpu
            }
        }
    }
}

/// Where an instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceKind {
    /// The CPU execution provider.
    Cpu,
    /// CUDA (TensorRT when available), falling back to CPU with a warning.
    Gpu,
}

/// A tensor the model takes or gives: name, type and shape without batch dim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name in the ONNX graph.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Shape without the batch dimension; -1 is variable.
    pub dims: Vec<i64>,
}

/// The scheduler's settings, resolved.
#[derive(Debug, Clone)]
pub struct BatchingPolicy {
    /// Sizes worth waiting for (sorted, each <= max_batch_size).
    pub preferred_batch_sizes: Vec<usize>,
    /// Longest wait for a batch to fill; zero is greedy.
    pub max_queue_delay: Duration,
    /// Pending requests allowed.
    pub max_queue_size: usize,
    /// Queue timeout of requests that give none.
    pub default_timeout: Option<Duration>,
    /// Whether requests may set their own timeout.
    pub allow_timeout_override: bool,
    /// Priority levels (0 = none).
    pub priority_levels: u32,
    /// Level of requests without a priority.
    pub default_priority_level: u32,
    /// Whether the batcher learns its preferred size (see `batch_tuner`).
    pub batch_tuning: bool,
}

/// Everything the server needs to run one model version.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// Model name.
    pub name: String,
    /// Largest batch; 0 = no batching.
    pub max_batch_size: usize,
    /// Inputs in the order the ONNX graph declares them.
    pub inputs: Vec<TensorSpec>,
    /// Outputs in the order the ONNX graph declares them.
    pub outputs: Vec<TensorSpec>,
    /// Scheduler settings.
    pub batching: BatchingPolicy,
    /// Whether a `dynamic_batching` section was given (for the config view).
    pub dynamic_batching: bool,
    /// (kind, count, gpu ids) per instance group.
    pub instance_groups: Vec<(InstanceKind, usize, Vec<i32>)>,
    /// Served versions.
    pub version_policy: VersionPolicy,
    /// Intra-op threads of an own pool per instance (0 = the shared pool).
    pub intra_op_threads: usize,
    /// Inter-op threads per instance.
    pub inter_op_threads: usize,
    /// How much ONNX Runtime optimizes the graph.
    pub graph_optimization_level: GraphOptimizationLevel,
    /// Model file name inside the version directory.
    pub model_filename: String,
}

impl ModelSpec {
    /// The most rows the scheduler puts in one execution: `max_batch_size`
    /// with a `dynamic_batching` section; without one, 0: each request runs
    /// alone, as Triton's default scheduler does.
    pub fn scheduler_batch_size(&self) -> usize {
        if self.dynamic_batching {
            self.max_batch_size
        } else {
            0
        }
    }
}

impl ModelConfigFile {
    /// Puts every instance group on `placement` (one group when none is
    /// configured), keeping counts and GPU ids.
    pub fn place_every_instance(&mut self, placement: PlacementOverride) {
        let kind = match placement {
            PlacementOverride::Cpu => InstanceGroupKind::Cpu,
            PlacementOverride::Gpu => InstanceGroupKind::Gpu,
        };
        if self.instance_group.is_empty() {
            self.instance_group.push(InstanceGroupConfig {
                count: 1,
                kind: None,
                gpus: Vec::new(),
                name: None,
            });
        }
        for group in &mut self.instance_group {
            group.kind = Some(kind);
        }
    }

    /// Reads `dir/config.toml`, else Triton's `dir/config.pbtxt`, else an
    /// empty config (everything from the ONNX file).
    pub fn read(model_dir: &Path) -> Result<ModelConfigFile> {
        let path = model_dir.join("config.toml");
        let triton = model_dir.join("config.pbtxt");
        if !path.exists() && triton.exists() {
            let text = std::fs::read_to_string(&triton).map_err(|e| {
                InferenceError::InvalidModel(format!("cannot read {}: {e}", triton.display()))
            })?;
            return crate::pbtxt::parse(&text).map_err(|e| e.in_file(&triton));
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                InferenceError::InvalidModel(format!("{}: {}", path.display(), e.message()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ModelConfigFile::default()),
            Err(e) => Err(InferenceError::InvalidModel(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Parses a JSON config given with a repository load request: Triton's
    /// form (protobuf JSON of its `ModelConfig`, as `tritonclient` sends it)
    /// or, failing that, mlserve's own (the fields of `config.toml`).
    pub fn from_json(text: &str) -> Result<ModelConfigFile> {
        let triton = match crate::pbtxt::parse_json(text) {
            Ok(config) => return Ok(config),
            Err(crate::pbtxt::PbtxtError::Syntax(e)) => e,
            Err(e) => {
                return Err(InferenceError::InvalidModel(format!(
                    "invalid model config JSON: {e}"
                )))
            }
        };
        serde_json::from_str(text).map_err(|e| {
            InferenceError::InvalidModel(format!(
                "invalid model config JSON: {e} (nor Triton's ModelConfig: {triton})"
            ))
        })
    }

    /// The model file name inside version directories.
    pub fn model_filename(&self) -> &str {
        self.default_model_filename
            .as_deref()
            .unwrap_or("model.onnx")
    }

    /// The versions present in `model_dir`: directories holding the model
    /// file, or, for an ensemble (which has no file), every version directory.
    pub fn versions_in(&self, model_dir: &Path) -> Vec<i64> {
        if crate::ensemble_plan::is_ensemble(self) {
            crate::repository::list_version_dirs(model_dir)
        } else {
            crate::repository::list_versions(model_dir, self.model_filename())
        }
    }

    /// The latency objective this config sets; `None` for unset or 0.
    pub fn latency_objective(&self) -> Option<Duration> {
        self.latency_objective_ms
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis)
    }

    /// The version policy (default: latest 1).
    pub fn version_policy(&self) -> VersionPolicy {
        self.version_policy.clone().unwrap_or_default()
    }
}

/// The inputs and outputs an ONNX file declares, with full shapes (-1 dynamic).
#[derive(Debug, Clone, Default)]
pub struct OnnxSignature {
    /// (name, type, full shape) of each input.
    pub inputs: Vec<(String, DataType, Vec<i64>)>,
    /// (name, type, full shape) of each output.
    pub outputs: Vec<(String, DataType, Vec<i64>)>,
}

/// Merges the config with what the ONNX file declares.
pub fn resolve(
    name: &str,
    file: &ModelConfigFile,
    onnx: &OnnxSignature,
    default_queue: usize,
) -> Result<ModelSpec> {
    let bad = |msg: String| InferenceError::InvalidModel(format!("model '{name}': {msg}"));
    if let Some(given) = &file.name {
        if given != name {
            return Err(bad(format!(
                "config name '{given}' does not match the directory name"
            )));
        }
    }
    if let Some(platform) = &file.platform {
        if platform != "onnxruntime_onnx" {
            return Err(bad(format!(
                "platform '{platform}' is not served (only onnxruntime_onnx)"
            )));
        }
    }
    let all_dynamic_first = onnx
        .inputs
        .iter()
        .chain(&onnx.outputs)
        .all(|(_, _, shape)| shape.first().is_some_and(|d| *d < 0));
    let max_batch_size = match file.max_batch_size {
        Some(n) => n as usize,
        None if all_dynamic_first => 8,
        None => 0,
    };
    if max_batch_size > 0 && !all_dynamic_first {
        return Err(bad(format!(
            "max_batch_size is {max_batch_size} but not every input and output has a variable first dimension"
        )));
    }
    let inputs =
        resolve_tensors(&file.input, &onnx.inputs, max_batch_size, "input").map_err(bad)?;
    let outputs =
        resolve_tensors(&file.output, &onnx.outputs, max_batch_size, "output").map_err(bad)?;
    let batching = resolve_batching(
        file.dynamic_batching.as_ref(),
        max_batch_size,
        default_queue,
    )
    .map_err(bad)?;
    let mut instance_groups = Vec::new();
    for group in &file.instance_group {
        let kind = group
            .kind
            .map_or(InstanceKind::Cpu, InstanceGroupKind::placement);
        if group.count == 0 {
            return Err(bad("instance_group count must be at least 1".into()));
        }
        instance_groups.push((kind, group.count as usize, group.gpus.clone()));
    }
    if instance_groups.is_empty() {
        instance_groups.push((InstanceKind::Cpu, 1, Vec::new()));
    }
    let optimization = file.optimization.clone().unwrap_or_default();
    let level = optimization.graph_optimization_level.unwrap_or_default();
    Ok(ModelSpec {
        name: name.to_string(),
        max_batch_size,
        inputs,
        outputs,
        batching,
        dynamic_batching: file.dynamic_batching.is_some(),
        instance_groups,
        version_policy: file.version_policy(),
        intra_op_threads: optimization.intra_op_threads,
        inter_op_threads: optimization.inter_op_threads.max(1),
        graph_optimization_level: level,
        model_filename: file.model_filename().to_string(),
    })
}

fn resolve_tensors(
    declared: &[TensorConfig],
    onnx: &[(String, DataType, Vec<i64>)],
    max_batch_size: usize,
    kind: &str,
) -> Result<Vec<TensorSpec>, String> {
    for decl in declared {
        if !onnx.iter().any(|(n, _, _)| n == &decl.name) {
            let names: Vec<&str> = onnx.iter().map(|(n, _, _)| n.as_str()).collect();
            return Err(format!(
                "{kind} '{}' is not in the ONNX graph (it has {names:?})",
                decl.name
            ));
        }
    }
    onnx.iter()
        .map(|(name, onnx_type, shape)| {
            let onnx_dims = if max_batch_size > 0 {
                shape[1..].to_vec()
            } else {
                shape.clone()
            };
            let Some(decl) = declared.iter().find(|d| &d.name == name) else {
                return Ok(TensorSpec {
                    name: name.clone(),
                    datatype: *onnx_type,
                    dims: onnx_dims,
                });
            };
            let datatype = DataType::parse(&decl.data_type).ok_or_else(|| {
                format!("{kind} '{name}' has unknown data_type '{}'", decl.data_type)
            })?;
            if datatype != *onnx_type {
                return Err(format!(
                    "{kind} '{name}' is {} in the config but {} in the ONNX graph",
                    datatype, onnx_type
                ));
            }
            if !dims_compatible(&decl.dims, &onnx_dims) {
                return Err(format!(
                    "{kind} '{name}' dims {:?} do not match the ONNX graph's {:?}",
                    decl.dims, onnx_dims
                ));
            }
            Ok(TensorSpec {
                name: name.clone(),
                datatype,
                dims: decl.dims.clone(),
            })
        })
        .collect()
}

/// Config dims may narrow ONNX's variable dims; fixed dims must agree.
fn dims_compatible(config: &[i64], onnx: &[i64]) -> bool {
    if onnx.is_empty() {
        return config.is_empty();
    }
    config.len() == onnx.len() && config.iter().zip(onnx).all(|(c, o)| *o < 0 || c == o)
}

fn resolve_batching(
    config: Option<&DynamicBatchingConfig>,
    max_batch_size: usize,
    default_queue: usize,
) -> Result<BatchingPolicy, String> {
    let config = config.cloned().unwrap_or_default();
    let mut preferred: Vec<usize> = config
        .preferred_batch_size
        .iter()
        .map(|&n| n as usize)
        .collect();
    preferred.sort_unstable();
    preferred.dedup();
    if let Some(bad) = preferred
        .iter()
        .find(|&&n| n == 0 || n > max_batch_size.max(1))
    {
        return Err(format!(
            "preferred_batch_size {bad} is outside 1..=max_batch_size ({max_batch_size})"
        ));
    }
    let policy = &config.default_queue_policy;
    if policy.timeout_action == Some(TimeoutAction::Delay) {
        return Err("timeout_action DELAY is not supported (only REJECT)".into());
    }
    if config.priority_levels > 0
        && (config.default_priority_level == 0
            || config.default_priority_level > config.priority_levels)
    {
        return Err(format!(
            "default_priority_level {} must be within 1..={}",
            config.default_priority_level, config.priority_levels
        ));
    }
    Ok(BatchingPolicy {
        preferred_batch_sizes: preferred,
        max_queue_delay: Duration::from_micros(config.max_queue_delay_microseconds),
        max_queue_size: if policy.max_queue_size == 0 {
            default_queue
        } else {
            policy.max_queue_size as usize
        },
        default_timeout: (policy.default_timeout_microseconds > 0)
            .then(|| Duration::from_micros(policy.default_timeout_microseconds)),
        allow_timeout_override: policy.allow_timeout_override,
        priority_levels: config.priority_levels,
        default_priority_level: config.default_priority_level,
        batch_tuning: config.batch_tuning.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature() -> OnnxSignature {
        OnnxSignature {
            inputs: vec![("x".into(), DataType::Fp32, vec![-1, 4])],
            outputs: vec![
                ("y".into(), DataType::Fp32, vec![-1]),
                ("z".into(), DataType::Int64, vec![-1, 2]),
            ],
        }
    }

    #[test]
    fn an_absent_config_batches_when_every_first_dim_is_dynamic() {
        let spec = resolve("m", &ModelConfigFile::default(), &signature(), 99).unwrap();
        assert_eq!(spec.max_batch_size, 8);
        assert_eq!(
            spec.scheduler_batch_size(),
            0,
            "no dynamic_batching: no batches"
        );
        assert_eq!(spec.inputs[0].dims, vec![4]);
        assert_eq!(spec.outputs[0].dims, Vec::<i64>::new());
        assert_eq!(spec.batching.max_queue_size, 99);
        assert_eq!(spec.instance_groups, vec![(InstanceKind::Cpu, 1, vec![])]);
    }

    #[test]
    fn config_types_must_match_the_graph() {
        let file: ModelConfigFile = toml::from_str(
            "max_batch_size = 4\n[[input]]\nname = \"x\"\ndata_type = \"TYPE_INT32\"\ndims = [4]\n",
        )
        .unwrap();
        let err = resolve("m", &file, &signature(), 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'x' is INT32 in the config but FP32"), "{err}");
    }

    #[test]
    fn triton_style_sections_parse() {
        let text = r#"
            max_batch_size = 4
            [dynamic_batching]
            preferred_batch_size = [2, 4]
            max_queue_delay_microseconds = 100
            [dynamic_batching.default_queue_policy]
            max_queue_size = 3
            default_timeout_microseconds = 5000
            allow_timeout_override = true
            [[instance_group]]
            count = 2
            kind = "KIND_GPU"
            [version_policy]
            specific = { versions = [1, 3] }
        "#;
        let file: ModelConfigFile = toml::from_str(text).unwrap();
        let spec = resolve("m", &file, &signature(), 8).unwrap();
        assert_eq!(spec.scheduler_batch_size(), 4);
        assert_eq!(spec.batching.preferred_batch_sizes, vec![2, 4]);
        assert_eq!(spec.batching.max_queue_size, 3);
        assert_eq!(
            spec.batching.default_timeout,
            Some(Duration::from_millis(5))
        );
        assert_eq!(spec.instance_groups, vec![(InstanceKind::Gpu, 2, vec![])]);
        assert_eq!(spec.version_policy.select(&[1, 2, 3]), vec![1, 3]);
    }

    #[test]
    fn a_placement_override_moves_every_group_and_keeps_counts() {
        let mut none: ModelConfigFile = toml::from_str("max_batch_size = 4").unwrap();
        none.place_every_instance(PlacementOverride::Gpu);
        let spec = resolve("m", &none, &signature(), 8).unwrap();
        assert_eq!(spec.instance_groups, vec![(InstanceKind::Gpu, 1, vec![])]);
        let mut two: ModelConfigFile = toml::from_str(
            "[[instance_group]]\ncount = 2\nkind = \"KIND_GPU\"\ngpus = [1]\n[[instance_group]]\ncount = 3\n",
        )
        .unwrap();
        two.place_every_instance(PlacementOverride::Cpu);
        let spec = resolve("m", &two, &signature(), 8).unwrap();
        assert_eq!(
            spec.instance_groups,
            vec![
                (InstanceKind::Cpu, 2, vec![1]),
                (InstanceKind::Cpu, 3, vec![])
            ]
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<ModelConfigFile>("max_batch_sise = 4").is_err());
        let file: ModelConfigFile =
            toml::from_str("max_batch_size = 4\n[dynamic_batching]\npreferred_batch_size = [8]\n")
                .unwrap();
        assert!(resolve("m", &file, &signature(), 8).is_err());
    }

    #[test]
    fn closed_sets_are_enums_with_triton_and_short_names() {
        let kinds = |text: &str| {
            toml::from_str::<ModelConfigFile>(text).map(|f| {
                let spec = resolve("m", &f, &signature(), 8).unwrap();
                spec.instance_groups
                    .into_iter()
                    .map(|g| g.0)
                    .collect::<Vec<_>>()
            })
        };
        let text = "[[instance_group]]\nkind = \"gpu\"\n[[instance_group]]\nkind = \"KIND_AUTO\"\n";
        assert_eq!(
            kinds(text).unwrap(),
            vec![InstanceKind::Gpu, InstanceKind::Cpu]
        );
        let err = kinds("[[instance_group]]\nkind = \"tpu\"\n").unwrap_err();
        assert!(err.message().contains("unknown variant `tpu`"), "{err}");
        assert!(err.message().contains("KIND_GPU"), "{err}");

        let delay = "max_batch_size = 4\n[dynamic_batching.default_queue_policy]\ntimeout_action = \"DELAY\"\n";
        let file: ModelConfigFile = toml::from_str(delay).unwrap();
        let err = resolve("m", &file, &signature(), 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("DELAY is not supported"), "{err}");
        assert!(toml::from_str::<ModelConfigFile>(&delay.replace("DELAY", "WAIT")).is_err());
    }

    #[test]
    fn version_policies_select() {
        assert_eq!(VersionPolicy::default().select(&[3, 1, 2]), vec![3]);
        assert_eq!(
            VersionPolicy::Latest { num_versions: 2 }.select(&[3, 1, 2]),
            vec![2, 3]
        );
        assert_eq!(VersionPolicy::All {}.select(&[2, 1]), vec![1, 2]);
    }
}
