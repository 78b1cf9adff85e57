//! `mlserve models ...`: the registry over its REST API.
//!
//! ```text
//! mlserve models create NAME [--description D]
//! mlserve models push NAME DIR_OR_FILE [--alias A] [--metric k=v] [--tag k=v] ...
//! mlserve models list
//! mlserve models versions NAME
//! mlserve models alias NAME ALIAS VERSION
//! mlserve models pull NAME (--version N | --alias A) DEST
//! ```
//!
//! A directory is pushed as a version with every file under it (symlinks
//! refused; it must hold `model.onnx`); a single file is pushed as
//! `model.onnx`. Uploads and downloads stream with a progress bar, and every
//! downloaded file is checked against its sha256 before it takes its name.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mlserve_common::Config;
use mlserve_registry::client::{collect_files, Progress, RestClient};
use serde_json::{json, Value};

/// `mlserve models` arguments.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Base URL of the registry's HTTP API.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8000")]
    registry: String,
    #[command(subcommand)]
    command: ModelsCommand,
}

/// The `mlserve models` subcommands.
#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Registers a model.
    Create {
        /// Model name.
        name: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Uploads a directory (or one ONNX file) as the model's next version.
    Push {
        /// Model name.
        name: String,
        /// Directory of the version's files, or one .onnx file.
        source: PathBuf,
        /// Point this alias at the new version.
        #[arg(long)]
        alias: Option<String>,
        /// A metric `key=value` (repeatable).
        #[arg(long = "metric")]
        metrics: Vec<String>,
        /// A tag `key=value` (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Description of the version.
        #[arg(long, default_value = "")]
        description: String,
        /// Lineage: the training run.
        #[arg(long, default_value = "")]
        training_run: String,
        /// Lineage: the dataset snapshot.
        #[arg(long, default_value = "")]
        dataset_snapshot: String,
        /// Lineage: the code version.
        #[arg(long, default_value = "")]
        code_version: String,
    },
    /// Lists registered models.
    List,
    /// Lists a model's versions, newest first.
    Versions {
        /// Model name.
        name: String,
    },
    /// Points an alias at a version.
    Alias {
        /// Model name.
        name: String,
        /// Alias (production, staging, ...).
        alias: String,
        /// Version number.
        version: u64,
    },
    /// Downloads a version's files into DEST.
    Pull {
        /// Model name.
        name: String,
        /// Version number.
        #[arg(long, conflicts_with = "alias", required_unless_present = "alias")]
        version: Option<u64>,
        /// Alias to resolve.
        #[arg(long)]
        alias: Option<String>,
        /// Destination directory.
        dest: PathBuf,
    },
}

fn pairs(items: &[String], what: &str) -> Result<serde_json::Map<String, Value>> {
    items
        .iter()
        .map(|item| {
            let (k, v) = item
                .split_once('=')
                .with_context(|| format!("{what} '{item}' is not key=value"))?;
            Ok((k.to_string(), Value::String(v.to_string())))
        })
        .collect()
}

fn bar(total: u64, verb: &str) -> (ProgressBar, Progress) {
    let bar = ProgressBar::new(total);
    let template = format!("{verb} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    let handle = bar.clone();
    (bar, Arc::new(move |n| handle.inc(n)))
}

fn print(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Runs one `mlserve models` subcommand.
pub async fn run(args: ModelsArgs, config: &Config) -> Result<()> {
    let client =
        RestClient::with_internal_token(&args.registry, config.server.internal_token.as_deref());
    match args.command {
        ModelsCommand::Create { name, description } => {
            print(&client.create_model(&name, &description).await?);
        }
        ModelsCommand::Push {
            name,
            source,
            alias,
            metrics,
            tags,
            description,
            training_run,
            dataset_snapshot,
            code_version,
        } => {
            let files = collect_files(&source)?;
            let mut metric_values = serde_json::Map::new();
            for (k, v) in pairs(&metrics, "metric")? {
                let number: f64 = v
                    .as_str()
                    .unwrap_or_default()
                    .parse()
                    .with_context(|| format!("metric '{k}' is not a number"))?;
                metric_values.insert(k, json!(number));
            }
            let metadata = json!({
                "description": description,
                "metrics": metric_values,
                "tags": pairs(&tags, "tag")?,
                "lineage": {
                    "training_run": training_run,
                    "dataset_snapshot": dataset_snapshot,
                    "code_version": code_version,
                },
            });
            let total = files.iter().map(|f| f.size).sum();
            let (progress, tick) = bar(total, "uploading");
            let version = client.push(&name, &files, metadata, tick).await;
            progress.finish_and_clear();
            let version = version?;
            let number = version["version"].as_u64().unwrap_or(0);
            eprintln!("pushed {name} version {number} ({} files)", files.len());
            if let Some(alias) = alias {
                client.set_alias(&name, &alias, number).await?;
                eprintln!("{name}@{alias} -> version {number}");
            }
            print(&version);
        }
        ModelsCommand::List => {
            for model in client.get_all("models", "models").await? {
                println!(
                    "{}\tlatest={}\taliases={}",
                    model["name"].as_str().unwrap_or(""),
                    model["latest_version"],
                    model["aliases"]
                );
            }
        }
        ModelsCommand::Versions { name } => {
            let path = format!("models/{name}/versions");
            for v in client.get_all(&path, "versions").await? {
                println!(
                    "{}\t{}\tfiles={}\tby={}\taliases={}",
                    v["version"],
                    v["status"].as_str().unwrap_or(""),
                    v["files"].as_array().map_or(0, |f| f.len()),
                    v["created_by"].as_str().unwrap_or(""),
                    v["aliases"]
                );
            }
        }
        ModelsCommand::Alias {
            name,
            alias,
            version,
        } => {
            print(&client.set_alias(&name, &alias, version).await?);
        }
        ModelsCommand::Pull {
            name,
            version,
            alias,
            dest,
        } => {
            let version = match (version, alias) {
                (Some(v), _) => client.get(&format!("models/{name}/versions/{v}")).await?,
                (None, Some(a)) => {
                    client.get(&format!("models/{name}/aliases/{a}")).await?["model_version"].take()
                }
                (None, None) => bail!("give --version or --alias"),
            };
            let number = version["version"].as_u64().unwrap_or(0);
            let files = version["files"].as_array().cloned().unwrap_or_default();
            let total = files.iter().filter_map(|f| f["size"].as_u64()).sum();
            let (progress, tick) = bar(total, "downloading");
            for file in &files {
                let path = file["path"].as_str().unwrap_or_default();
                mlserve_registry::names::file_path(path)
                    .map_err(|e| anyhow::anyhow!("the registry sent a bad path: {e}"))?;
                client
                    .download(&name, number, file, &dest.join(path), tick.clone())
                    .await?;
            }
            progress.finish_and_clear();
            eprintln!(
                "pulled {name} version {number} ({} files) into {}",
                files.len(),
                dest.display()
            );
        }
    }
    Ok(())
}
