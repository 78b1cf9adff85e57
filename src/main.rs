//! `mlserve`: one binary holding the platform's services as roles
//! (inference, registry, features, training and gateway in this build). This file
//! only parses the command line, sets up logging and the runtime, and hands
//! over to [`serve`].

mod cli;
mod commands;
mod serve;
mod telemetry;
mod threads;

use std::process::ExitCode;

use clap::Parser;
use mlserve_common::{Config, Role};

/// The roles compiled into this binary (Cargo features).
const COMPILED_ROLES: &[Role] = &[
    // Each role joins this list when its src/serve/<role>.rs is wired in.
    #[cfg(feature = "registry")]
    Role::Registry,
    #[cfg(feature = "inference")]
    Role::Inference,
    #[cfg(feature = "gateway")]
    Role::Gateway,
    #[cfg(feature = "features")]
    Role::Features,
    #[cfg(feature = "training")]
    Role::Training,
    #[cfg(feature = "monitoring")]
    Role::Monitoring,
];

/// mimalloc serves every Rust allocation of the process. A request allocates
/// and frees a few dozen small buffers; with glibc's malloc those calls were
/// about a quarter of a tabular request's server instructions
/// (`bench/request_cost.py`), and glibc's per-thread arenas grew the resident
/// set with each model version loaded (`bench/results/2026-12-06/soak-arenas`).
/// ONNX Runtime's own allocations still go to the C library's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let config = match Config::load(cli.config.as_deref(), cli.overrides()) {
        Ok(config) => config,
        Err(err) => return fail(&err),
    };
    if let Err(err) = telemetry::init(&config.log) {
        return fail(&err);
    }
    let roles = match Role::parse_list(&config.server.roles, COMPILED_ROLES) {
        Ok(roles) => roles,
        Err(err) => return fail(&err),
    };
    // Serving, and `mlserve config` (which checks what serving would), refuse
    // a cluster deployment on a pod-local store; client subcommands do not.
    if matches!(cli.command, None | Some(commands::Command::Config)) {
        let checked = config
            .check_deployment(&roles)
            .and_then(|()| config.check_no_open_door());
        if let Err(err) = checked {
            return fail(&err);
        }
    }
    if let Some(command) = cli.command {
        return match commands::run(command, config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => fail(&format!("{err:#}")),
        };
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = threads::ThreadPlan::new(
        cores,
        &roles,
        config.server.worker_threads,
        config.inference.cpu_threads,
        config.server.http_io_threads,
    );
    let workers = plan.tokio_workers;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&format!("cannot start the async runtime: {err}")),
    };
    let http_io = match serve::HttpIoThreads::start(plan.http_io_threads) {
        Ok(threads) => threads,
        Err(err) => return fail(&format!("{err:#}")),
    };
    let roles_text: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    tracing::info!(roles = %roles_text.join(","), workers, ort_cores = plan.ort_cores, http_io_threads = plan.http_io_threads, cores, "mlserve starting");
    match runtime.block_on(serve::run(config, roles, plan.ort_cores, http_io)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&format!("{err:#}")),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("mlserve: error: {message}");
    ExitCode::FAILURE
}
