//! `mlserve workflows apply|list` and `mlserve jobs submit|list|get|logs|cancel|retry`:
//! the training role's API over gRPC.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use mlserve_common::Config;
use mlserve_proto::rpc::GrpcOptions;
use mlserve_proto::training::*;
use mlserve_proto::CallContext;

/// `mlserve workflows` arguments.
#[derive(Debug, Args)]
pub struct WorkflowsArgs {
    /// gRPC endpoint of the training role (default: training.endpoint, else
    /// http://127.0.0.1:<server.grpc_port>).
    #[arg(long, global = true)]
    endpoint: Option<String>,
    #[command(subcommand)]
    command: WorkflowsCommand,
}

#[derive(Debug, Subcommand)]
enum WorkflowsCommand {
    /// Validate and store the workflow of a file (TOML or YAML), or of every
    /// .toml/.yaml/.yml file of a directory: a new version when it changed.
    Apply {
        /// A file or a directory.
        path: PathBuf,
    },
    /// List workflows (latest versions).
    List,
}

/// `mlserve jobs` arguments.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// gRPC endpoint of the training role (default: training.endpoint, else
    /// http://127.0.0.1:<server.grpc_port>).
    #[arg(long, global = true)]
    endpoint: Option<String>,
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Start a run of a workflow.
    Submit {
        /// The workflow.
        workflow: String,
        /// A parameter, `key=value`, repeatable.
        #[arg(short = 'p', long = "parameter")]
        parameters: Vec<String>,
        /// Watch the run until it ends; exit 1 unless it succeeded.
        #[arg(short, long)]
        wait: bool,
    },
    /// List runs, newest first.
    List {
        /// Only this workflow's runs.
        #[arg(long)]
        workflow: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show a run: its steps (the DAG), outputs, artifacts and metrics.
    Get {
        /// The run id.
        run: String,
        /// Redraw until the run ends.
        #[arg(short, long)]
        watch: bool,
        /// Print the run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a step's stdout (or stderr).
    Logs {
        /// The run id.
        run: String,
        /// The step instance.
        step: String,
        /// Keep printing while the step runs.
        #[arg(short, long)]
        follow: bool,
        /// stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
    },
    /// Cancel a run: its running steps' process trees are killed.
    Cancel {
        /// The run id.
        run: String,
    },
    /// Run a failed or cancelled run again from its failed steps.
    Retry {
        /// The run id.
        run: String,
    },
    /// Print a workflow (a stored one by name, or a file) as an Argo
    /// Workflow (argoproj.io/v1alpha1), or as the Kubernetes objects the
    /// `kubernetes` executor creates for a run of it (the run's owner
    /// ConfigMap and a batch/v1 Job per command step), in YAML.
    #[command(group(clap::ArgGroup::new("format").required(true).args(["argo", "kubernetes"])))]
    Export {
        /// The workflow's name, or a .toml/.yaml file.
        workflow: String,
        /// Argo Workflows' format.
        #[arg(long)]
        argo: bool,
        /// The Kubernetes executor's Jobs, shaped by `[training.kubernetes]`.
        #[arg(long)]
        kubernetes: bool,
        /// A parameter of the run, `key=value`, repeatable (--kubernetes).
        #[arg(short = 'p', long = "parameter", requires = "kubernetes")]
        parameters: Vec<String>,
        /// The run id the objects name (--kubernetes); default `<workflow>-export`.
        #[arg(long, requires = "kubernetes")]
        run_id: Option<String>,
    },
    /// Run one built-in step on local files, as an exported Argo step's
    /// container does: outputs go to <dir>/outputs/<name>.
    Builtin {
        /// features.training_set, registry.push or registry.alias.
        name: String,
        /// Its arguments as JSON; artifacts are local paths.
        #[arg(long = "with")]
        with: String,
        /// The step's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// gRPC endpoint of the registry.
        #[arg(long)]
        registry: Option<String>,
        /// gRPC endpoint of the feature store.
        #[arg(long)]
        features: Option<String>,
        /// The run id recorded as lineage.
        #[arg(long, default_value = "")]
        run: String,
    },
}

fn client(endpoint: Option<String>, config: &Config) -> Result<TrainingClient> {
    let endpoint = endpoint
        .or_else(|| config.training.endpoint.clone())
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", config.server.grpc_port));
    Ok(TrainingClient::connect_lazy(
        &endpoint,
        &GrpcOptions::with_internal_token(config.server.internal_token.as_deref()),
    )?)
}

fn ctx() -> CallContext {
    CallContext::new()
}

/// Runs one `mlserve workflows` subcommand.
pub async fn workflows(args: WorkflowsArgs, config: &Config) -> Result<()> {
    let client = client(args.endpoint, config)?;
    match args.command {
        WorkflowsCommand::Apply { path } => {
            for file in workflow_files(&path).await? {
                let text = tokio::fs::read_to_string(&file)
                    .await
                    .with_context(|| format!("reading {}", file.display()))?;
                let format = match file.extension().and_then(|e| e.to_str()) {
                    Some("yaml" | "yml") => "yaml",
                    _ => "toml",
                };
                let done = client
                    .apply_workflow(
                        ctx(),
                        ApplyWorkflowRequest {
                            text,
                            format: format.into(),
                        },
                    )
                    .await
                    .with_context(|| format!("{}", file.display()))?;
                let verb = if done.created { "applied" } else { "unchanged" };
                println!("workflow {} v{} {verb}", done.name, done.version);
            }
        }
        WorkflowsCommand::List => {
            for w in client
                .list_workflows(ctx(), ListWorkflowsRequest {})
                .await?
                .workflows
            {
                println!(
                    "{} v{}  steps: {}  {}",
                    w.name,
                    w.version,
                    w.steps.join(" "),
                    w.description
                );
            }
        }
    }
    Ok(())
}

async fn workflow_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !tokio::fs::metadata(path)
        .await
        .with_context(|| format!("{}", path.display()))?
        .is_dir()
    {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut entries = tokio::fs::read_dir(path).await?;
    while let Some(entry) = entries.next_entry().await? {
        let p = entry.path();
        if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("toml" | "yaml" | "yml")
        ) {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .toml, .yaml or .yml file", path.display());
    }
    Ok(files)
}

/// Runs one `mlserve jobs` subcommand.
pub async fn jobs(args: JobsArgs, config: &Config) -> Result<()> {
    let client = client(args.endpoint, config)?;
    match args.command {
        JobsCommand::Export {
            workflow,
            argo: _,
            kubernetes,
            parameters,
            run_id,
        } => {
            let spec = if Path::new(&workflow).is_file() {
                let text = tokio::fs::read_to_string(&workflow).await?;
                mlserve_training::spec::parse_file(&workflow, &text).map_err(anyhow::Error::msg)?
            } else {
                let stored = client
                    .get_workflow(
                        ctx(),
                        GetWorkflowRequest {
                            name: workflow,
                            version: 0,
                        },
                    )
                    .await?;
                serde_json::from_str(&stored.spec_json)?
            };
            mlserve_training::validate::check(&spec)?;
            if kubernetes {
                let mut given = std::collections::BTreeMap::new();
                for p in parameters {
                    let (k, v) = p
                        .split_once('=')
                        .with_context(|| format!("parameter '{p}' is not key=value"))?;
                    given.insert(
                        k.to_string(),
                        mlserve_training::spec::Scalar::Text(v.to_string()),
                    );
                }
                let resolved = mlserve_training::validate::resolve_parameters(&spec, &given)?;
                let work_dir = config.training.work_dir(&config.server.data_dir);
                let options =
                    mlserve_training::jobs::JobOptions::from_config(&config.training, &work_dir);
                let objects = mlserve_training::jobs::export(
                    &spec,
                    &resolved,
                    &run_id.unwrap_or_else(|| format!("{}-export", spec.name)),
                    &options,
                    &std::env::current_dir()?,
                );
                print!("{}", mlserve_training::jobs::to_yaml(&objects));
            } else {
                print!("{}", mlserve_training::argo::export_yaml(&spec));
            }
        }
        JobsCommand::Builtin {
            name,
            with,
            dir,
            registry,
            features,
            run,
        } => {
            let with = serde_json::from_str(&with).context("--with is not a JSON object")?;
            let grpc = GrpcOptions::with_internal_token(config.server.internal_token.as_deref());
            let registry = registry
                .map(|e| mlserve_proto::registry::RegistryClient::connect_lazy(&e, &grpc))
                .transpose()?;
            let features = features
                .map(|e| mlserve_proto::features::FeaturesClient::connect_lazy(&e, &grpc))
                .transpose()?;
            let out = mlserve_training::builtin::run_standalone(
                &name, with, &dir, registry, features, &run,
            )
            .await
            .map_err(anyhow::Error::msg)?;
            for (k, v) in out.parameters {
                println!("{k} = {v}");
            }
        }
        JobsCommand::Submit {
            workflow,
            parameters,
            wait,
        } => {
            let mut map = HashMap::new();
            for p in parameters {
                let (k, v) = p
                    .split_once('=')
                    .with_context(|| format!("parameter '{p}' is not key=value"))?;
                map.insert(k.to_string(), v.to_string());
            }
            let run = client
                .submit_run(
                    ctx(),
                    SubmitRunRequest {
                        workflow,
                        parameters: map,
                    },
                )
                .await?;
            println!("{}", run.id);
            if wait {
                let run = watch(&client, &run.id).await?;
                if run.state != "succeeded" {
                    bail!("run {} {}: {}", run.id, run.state, run.message);
                }
            }
        }
        JobsCommand::List { workflow, limit } => {
            let runs = client
                .list_runs(
                    ctx(),
                    ListRunsRequest {
                        workflow: workflow.unwrap_or_default(),
                        limit,
                    },
                )
                .await?
                .runs;
            for r in runs {
                println!(
                    "{:<32} {:<10} {:<8} {}  {}",
                    r.id,
                    r.state,
                    r.trigger,
                    duration(r.started_at_us, r.finished_at_us),
                    r.message
                );
            }
        }
        JobsCommand::Get {
            run,
            watch: follow,
            json,
        } => {
            if follow {
                watch(&client, &run).await?;
            } else {
                let run = client.get_run(ctx(), GetRunRequest { id: run }).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&run)?);
                } else {
                    print!("{}", render(&run));
                }
            }
        }
        JobsCommand::Logs {
            run,
            step,
            follow,
            stderr,
        } => {
            let mut offset = 0;
            loop {
                let chunk = client
                    .read_logs(
                        ctx(),
                        LogsRequest {
                            run: run.clone(),
                            step: step.clone(),
                            stream: if stderr { "stderr" } else { "stdout" }.into(),
                            offset,
                            max_bytes: 0,
                        },
                    )
                    .await?;
                std::io::stdout().write_all(&chunk.data)?;
                std::io::stdout().flush()?;
                offset = chunk.next_offset;
                if !follow || chunk.complete {
                    break;
                }
                if chunk.data.is_empty() {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
        JobsCommand::Cancel { run } => {
            let run = client.cancel_run(ctx(), RunRequest { id: run }).await?;
            println!("{} cancel requested ({})", run.id, run.state);
        }
        JobsCommand::Retry { run } => {
            let run = client.retry_run(ctx(), RunRequest { id: run }).await?;
            println!("{} retried ({})", run.id, run.state);
        }
    }
    Ok(())
}

/// Prints the run's DAG whenever it changes, until the run ends.
async fn watch(client: &TrainingClient, id: &str) -> Result<Run> {
    let mut last = String::new();
    loop {
        let run = client
            .get_run(ctx(), GetRunRequest { id: id.to_string() })
            .await?;
        let text = render(&run);
        if text != last {
            print!("{text}");
            std::io::stdout().flush()?;
            last = text;
        }
        if matches!(run.state.as_str(), "succeeded" | "failed" | "cancelled") {
            return Ok(run);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn duration(start: i64, end: i64) -> String {
    if start == 0 {
        return "-".into();
    }
    let end = if end == 0 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(start, |d| d.as_micros() as i64)
    } else {
        end
    };
    format!("{:.1}s", (end - start).max(0) as f64 / 1e6)
}

fn mark(state: &str) -> &'static str {
    match state {
        "succeeded" => "✔",
        "failed" => "✖",
        "running" => "▶",
        "retrying" => "↻",
        "skipped" => "○",
        "cancelled" => "⊘",
        _ => "·",
    }
}

/// The run as text: a header, then one line per step in DAG order with its
/// state, attempt, time and message, then outputs, metrics and artifacts.
fn render(run: &Run) -> String {
    let mut out = format!(
        "run {}  workflow {} v{}  {}  {}{}\n",
        run.id,
        run.workflow,
        run.workflow_version,
        run.state.to_uppercase(),
        duration(run.started_at_us, run.finished_at_us),
        if run.message.is_empty() {
            String::new()
        } else {
            format!("  ({})", run.message)
        }
    );
    for step in &run.steps {
        let deps = if step.dependencies.is_empty() {
            String::new()
        } else {
            format!(" <- {}", step.dependencies.join(", "))
        };
        out.push_str(&format!(
            "  {} {:<24} {:<10} attempt {}  {}{}{}\n",
            mark(&step.state),
            step.name,
            step.state,
            step.attempt,
            duration(step.started_at_us, step.finished_at_us),
            deps,
            if step.message.is_empty() {
                String::new()
            } else {
                format!("  {}", step.message)
            }
        ));
        for (k, v) in &step.outputs {
            out.push_str(&format!("      {k} = {v}\n"));
        }
    }
    for m in &run.metrics {
        out.push_str(&format!("  metric {}.{} = {}\n", m.step, m.name, m.value));
    }
    for a in run
        .artifacts
        .iter()
        .filter(|a| !a.name.starts_with("logs/"))
    {
        out.push_str(&format!(
            "  artifact {}.{}  {} bytes  sha256 {}  {}\n",
            a.step, a.name, a.size, a.sha256, a.key
        ));
    }
    out
}
