//! `loadgen`: mlserve's load generator.
//!
//! - `loadgen open`: open-loop load on a server over the Open Inference
//!   Protocol (HTTP JSON, HTTP binary or gRPC), following the paper's load
//!   profiles (steady, bursty, ramp) or a constant rate, with latency from
//!   the intended send time (as wrk2).
//! - `loadgen closed`: closed-loop load, as perf_analyzer's concurrency mode.
//! - `loadgen raw`: the ceiling, the same model run in-process by ONNX
//!   Runtime with nothing in between.
//! - `loadgen calibrate`: the open-loop generator against a built-in server
//!   with a known fixed service time; PASS/FAIL on its accuracy.
//!
//! Each prints a table on stdout and can write the same facts as JSON.

mod calib_server;
mod calibrate;
mod closed;
mod encode;
mod http;
mod http_answer;
mod inputs;
mod live;
mod metadata;
mod open;
mod open_cmd;
mod open_report;
mod profile;
mod progress;
mod raw;
mod report;
mod scrape;
mod stats;
mod target;
mod tensor;
mod timeline;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::calibrate::CalibrateArgs;
use crate::closed::ClosedPlan;
use crate::open_cmd::OpenArgs;
use crate::progress::Progress;
use crate::raw::RawPlan;
use crate::report::Report;
use crate::target::{Payload, Protocol, Target};

/// mlserve's load generator.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open-loop load: requests at the times of a profile (steady, bursty,
    /// ramp) or a constant rate, whatever the server does.
    Open(Box<OpenArgs>),
    /// Keep a fixed number of requests in flight against a server.
    Closed(ClosedArgs),
    /// Run the model in-process with ONNX Runtime (the ceiling).
    Raw(RawArgs),
    /// Check the open-loop generator against a server with a known service time.
    Calibrate(CalibrateArgs),
}

/// Options both modes share.
#[derive(Debug, Args)]
struct Common {
    /// Rows per request (the batch dimension).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds before the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Draw no progress line on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct ClosedArgs {
    /// Server URL: the HTTP port for http-*, the gRPC port for grpc.
    #[arg(long)]
    target: String,
    /// Wire protocol.
    #[arg(long, value_enum, default_value_t = Protocol::HttpBinary)]
    protocol: Protocol,
    /// Model name.
    #[arg(long)]
    model: String,
    /// Requests kept in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Load generator threads (keep it small: it shares the cores with the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Send rows of DIR/inputs/manifest.json (round-robin) instead of random data.
    #[arg(long)]
    inputs: Option<PathBuf>,
    /// The manifest entry to send (default: the model name).
    #[arg(long)]
    inputs_key: Option<String>,
    /// Outputs to ask for, comma-separated (default: the manifest's choice, else all).
    #[arg(long, value_delimiter = ',')]
    outputs: Option<Vec<String>>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct RawArgs {
    /// The ONNX model file.
    #[arg(long)]
    model_file: PathBuf,
    /// Intra-op threads (match the server's ONNX Runtime cores).
    #[arg(long, default_value_t = 1)]
    intra_threads: usize,
    /// libonnxruntime.so (default: ORT_DYLIB_PATH, then .onnxruntime/).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
    /// Run on rows of DIR/inputs/manifest.json instead of random data.
    #[arg(long)]
    inputs: Option<PathBuf>,
    /// The manifest entry (default: NAME of NAME/VERSION/model.onnx).
    #[arg(long)]
    inputs_key: Option<String>,
    #[command(flatten)]
    common: Common,
}

fn seconds(value: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("--{what} must be a non-negative number of seconds"))
}

fn closed(args: ClosedArgs) -> Result<Report> {
    let c = &args.common;
    let plan = ClosedPlan {
        concurrency: args.concurrency.max(1),
        warmup: seconds(c.warmup, "warmup")?,
        duration: seconds(c.duration, "duration")?,
    };
    let runtime = open_cmd::runtime(args.threads)?;
    let payload = Payload {
        inputs: args.inputs.clone(),
        inputs_key: args.inputs_key.clone(),
        outputs: args.outputs.clone(),
        max_bytes: 256 << 20,
    };
    let label = format!(
        "{} {} b{} c{}",
        args.model,
        args.protocol.as_str(),
        c.batch,
        plan.concurrency
    );
    let (recorder, request_bytes) = runtime.block_on(async {
        let target =
            Target::prepare(&args.target, args.protocol, &args.model, c.batch, &payload).await?;
        let progress = Progress::new(label, plan.warmup, plan.duration, !c.quiet);
        let recorder = closed::run(&target, plan, progress, c.batch as u64).await;
        Ok::<_, anyhow::Error>((recorder, target.request_bytes))
    })?;
    Ok(Report {
        protocol: Some(args.protocol.as_str()),
        target: Some(args.target.clone()),
        concurrency: Some(plan.concurrency),
        request_bytes,
        ..Report::new(
            "closed",
            args.model.clone(),
            c.batch,
            args.threads.max(1),
            c.warmup,
            c.duration,
        )
    }
    .measured(&recorder))
}

fn raw(args: RawArgs) -> Result<Report> {
    let c = &args.common;
    let plan = RawPlan {
        model_file: args.model_file.clone(),
        batch: c.batch,
        intra_threads: args.intra_threads.max(1),
        warmup: seconds(c.warmup, "warmup")?,
        duration: seconds(c.duration, "duration")?,
        library: args.ort_lib.clone(),
        inputs: args.inputs.clone(),
        inputs_key: args.inputs_key.clone(),
    };
    let name = args.model_file.display().to_string();
    let label = format!("raw {name} b{}", c.batch);
    let (recorder, request_bytes) = raw::run(&plan, label, !c.quiet)?;
    Ok(Report {
        request_bytes,
        ..Report::new(
            "raw",
            name,
            c.batch,
            plan.intra_threads,
            c.warmup,
            c.duration,
        )
    }
    .measured(&recorder))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Closed(args) => {
            let out = args.common.json_out.clone();
            deliver(closed(args), Report::table, out.as_deref())
                .map_or(ExitCode::FAILURE, |_| ExitCode::SUCCESS)
        }
        Command::Raw(args) => {
            let out = args.common.json_out.clone();
            deliver(raw(args), Report::table, out.as_deref())
                .map_or(ExitCode::FAILURE, |_| ExitCode::SUCCESS)
        }
        Command::Open(args) => deliver(
            open_cmd::open(&args),
            |r| r.table(),
            args.json_out.as_deref(),
        )
        .map_or(ExitCode::FAILURE, |_| ExitCode::SUCCESS),
        Command::Calibrate(args) => {
            match deliver(
                calibrate::calibrate(&args),
                |r| r.table(),
                args.json_out.as_deref(),
            ) {
                Some(report) if report.pass => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Prints a report's table and, when asked, writes it as pretty JSON.
/// Returns the report, or `None` after printing the error.
fn deliver<R: serde::Serialize>(
    report: Result<R>,
    table: impl Fn(&R) -> String,
    json_out: Option<&std::path::Path>,
) -> Option<R> {
    let written = report.and_then(|report| {
        print!("{}", table(&report));
        if let Some(path) = json_out {
            let text = serde_json::to_string_pretty(&report)?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(report)
    });
    written
        .map_err(|err| eprintln!("loadgen: error: {err:#}"))
        .ok()
}
