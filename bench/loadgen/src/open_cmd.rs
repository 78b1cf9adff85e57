//! `loadgen open`: the command line of an open-loop run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;

use crate::live::Live;
use crate::open::{self, OpenPlan};
use crate::open_report::{OpenReport, OpenSetup};
use crate::profile::{Arrivals, Profile, ProfileKind};
use crate::scrape::DEFAULT_METRIC;
use crate::target::{Payload, Protocol, Target};

/// Options of `loadgen open`.
#[derive(Debug, Args)]
pub struct OpenArgs {
    /// Server URL: the HTTP port for http-*, the gRPC port for grpc.
    #[arg(long)]
    pub target: String,
    /// Wire protocol.
    #[arg(long, value_enum, default_value_t = Protocol::HttpBinary)]
    pub protocol: Protocol,
    /// Model name.
    #[arg(long)]
    pub model: String,
    /// Rows per request (the batch dimension).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// The paper's load profile: steady (100 rps, 300 s), bursty (100 rps,
    /// 1000 rps from 60 s to 120 s, 180 s in all), ramp (50 to 500 rps over
    /// 300 s).
    #[arg(long, value_enum, conflicts_with = "rate")]
    pub profile: Option<ProfileKind>,
    /// A constant rate (requests per second) instead of a profile.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of the constant rate (with --rate).
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Multiplies every rate.
    #[arg(long, default_value_t = 1.0)]
    pub rate_multiplier: f64,
    /// Multiplies every duration and phase boundary.
    #[arg(long, default_value_t = 1.0)]
    pub time_factor: f64,
    /// Arrival process.
    #[arg(long, value_enum, default_value_t = Arrivals::Poisson)]
    pub arrivals: Arrivals,
    /// Seed of the Poisson arrivals.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Send rows of DIR/inputs/manifest.json (round-robin) instead of random data.
    #[arg(long)]
    pub inputs: Option<PathBuf>,
    /// The manifest entry to send (default: the model name).
    #[arg(long)]
    pub inputs_key: Option<String>,
    /// Outputs to ask for, comma-separated (default: the manifest's choice, else all).
    #[arg(long, value_delimiter = ',')]
    pub outputs: Option<Vec<String>>,
    /// Prometheus endpoint to sample the queue depth from every 250 ms.
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// The gauge summed over its labels (Triton: nv_inference_pending_request_count).
    #[arg(long, default_value = DEFAULT_METRIC)]
    pub queue_metric: String,
    /// Most requests outstanding; arrivals beyond are dropped by the client
    /// and counted as failures (`client: max in flight`).
    #[arg(long, default_value_t = 2048)]
    pub max_in_flight: usize,
    /// HTTP connections to open before the first arrival, kept alive and
    /// reused (a pool, as a load balancer keeps); more open on demand. Leave
    /// it at 0 for servers that close every connection and block a worker
    /// on an idle one (gunicorn's sync workers).
    #[arg(long, default_value_t = 0)]
    pub warm_connections: usize,
    /// A fixed pool, as wrk2's: at most this many requests on the wire (HTTP
    /// connections, or gRPC calls on the channel); an arrival that finds all
    /// busy waits in the client for the next one free, and its latency still
    /// runs from its scheduled time. Default: a connection per outstanding
    /// request.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub connections: Option<u64>,
    /// Wake the pacer at most once per this many microseconds, handing out
    /// every arrival due by then (each goes out late by less than this, never
    /// early, and its latency still counts from its scheduled time). 0 wakes
    /// it for every arrival. At tens of thousands of arrivals a second a
    /// wake per arrival costs the generator CPU that a shared machine's
    /// server would otherwise have.
    #[arg(long, default_value_t = 0)]
    pub pace_quantum_us: u64,
    /// Seconds before an unanswered request fails (`client: timeout`).
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Seconds to wait for outstanding answers after the last arrival
    /// (default: --timeout); still unanswered then: `client: unfinished at end`.
    #[arg(long)]
    pub drain: Option<f64>,
    /// Load generator threads (keep it small: it shares the cores with the server).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Draw no progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

fn seconds(value: f64, what: &str) -> Result<Duration> {
    if !(value > 0.0 && value.is_finite()) {
        bail!("--{what} must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

/// The scaled profile of the arguments.
pub fn profile_of(args: &OpenArgs) -> Result<Profile> {
    let base = match (args.profile, args.rate) {
        (Some(kind), _) => Profile::named(kind),
        (None, Some(rate)) => Profile::constant(rate, args.duration),
        (None, None) => bail!("give --profile steady|bursty|ramp or --rate R"),
    };
    base.scaled(args.rate_multiplier, args.time_factor)
}

/// A runtime for the load generator: one thread, or several.
pub fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    Ok(if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    })
}

/// Runs `loadgen open`.
pub fn open(args: &OpenArgs) -> Result<OpenReport> {
    let profile = profile_of(args)?;
    let timeout = seconds(args.timeout, "timeout")?;
    let drain = match args.drain {
        Some(d) => seconds(d, "drain")?,
        None => timeout,
    };
    let schedule = profile.schedule(args.arrivals, args.seed)?;
    let plan = OpenPlan {
        profile: profile.clone(),
        schedule: Arc::from(schedule),
        max_in_flight: args.max_in_flight.max(1),
        timeout,
        drain,
        metrics_url: args.metrics_url.clone(),
        metric: args.queue_metric.clone(),
        warm_connections: args.warm_connections,
        connections: args.connections.map(|n| n as usize),
        pace_quantum: Duration::from_micros(args.pace_quantum_us),
    };
    let payload = Payload {
        inputs: args.inputs.clone(),
        inputs_key: args.inputs_key.clone(),
        outputs: args.outputs.clone(),
        max_bytes: 256 << 20,
    };
    let label = format!("{} {} {}", args.model, args.protocol.as_str(), profile.name);
    let runtime = runtime(args.threads)?;
    let (summary, target, wall) = runtime.block_on(async {
        let target = Target::prepare(
            &args.target,
            args.protocol,
            &args.model,
            args.batch,
            &payload,
        )
        .await?;
        let live = Live::new(label, profile.clone(), !args.quiet);
        let started = Instant::now();
        let book = open::run(&target, &plan, live).await;
        Ok::<_, anyhow::Error>((book.summary(), target, started.elapsed()))
    })?;
    let setup = OpenSetup {
        model: args.model.clone(),
        protocol: args.protocol.as_str(),
        target: args.target.clone(),
        batch: args.batch,
        profile,
        rate_multiplier: args.rate_multiplier,
        time_factor: args.time_factor,
        arrivals: args.arrivals,
        seed: args.seed,
        max_in_flight: plan.max_in_flight,
        warm_connections: plan.warm_connections,
        connections: plan.connections,
        pace_quantum_us: args.pace_quantum_us,
        timeout_s: timeout.as_secs_f64(),
        threads: args.threads.max(1),
        request_bytes: target.request_bytes,
        distinct_requests: target.distinct_requests,
        inputs: target.source.clone(),
        metrics_url: args.metrics_url.clone(),
    };
    Ok(OpenReport::new(setup, summary, wall.as_secs_f64()))
}
