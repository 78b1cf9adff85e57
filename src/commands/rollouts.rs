//! `mlserve rollouts start|status|list|pause|resume|promote|abort` and
//! `mlserve monitor windows|drift`: the monitoring role's API over gRPC.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use mlserve_common::Config;
use mlserve_proto::monitoring::*;
use mlserve_proto::rpc::GrpcOptions;
use mlserve_proto::CallContext;

/// `mlserve rollouts` arguments.
#[derive(Debug, Args)]
pub struct RolloutsArgs {
    /// gRPC endpoint of the monitoring role (default: monitoring.endpoint,
    /// else http://127.0.0.1:<server.grpc_port>).
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: RolloutsCommand,
}

#[derive(Debug, Subcommand)]
enum RolloutsCommand {
    /// Start a rollout of a version against the production one.
    Start {
        /// The model.
        model: String,
        /// The version under trial.
        #[arg(long)]
        canary: u64,
        /// The stable version (default: the production alias's).
        #[arg(long, default_value_t = 0)]
        stable: u64,
        /// Steps as `weight:duration`, comma-separated (`10:15m,50:5m`);
        /// default: monitoring.rollouts.
        #[arg(long)]
        steps: Option<String>,
        /// Time between checks (`1m`, `10s`).
        #[arg(long)]
        interval: Option<String>,
        /// Failed checks before the rollout aborts.
        #[arg(long)]
        threshold: Option<u32>,
    },
    /// The model's latest rollout: its state, every record, the windows.
    Status {
        /// The model.
        model: String,
    },
    /// Rollouts, newest first.
    List {
        /// Only this model's.
        #[arg(long, default_value = "")]
        model: String,
        /// Only those in progress.
        #[arg(long)]
        active: bool,
    },
    /// Hold the rollout at its weight.
    Pause {
        /// The model.
        model: String,
        /// Why (recorded).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Carry a paused rollout on.
    Resume {
        /// The model.
        model: String,
    },
    /// Skip the remaining steps and promote now.
    Promote {
        /// The model.
        model: String,
    },
    /// Abort now: traffic back to the stable version.
    Abort {
        /// The model.
        model: String,
        /// Why (recorded).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// `mlserve monitor` arguments.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// gRPC endpoint of the monitoring role.
    #[arg(long, global = true)]
    endpoint: Option<String>,
    #[command(subcommand)]
    command: MonitorCommand,
}

#[derive(Debug, Subcommand)]
enum MonitorCommand {
    /// Requests, errors and latency per model version over a sliding window.
    Windows {
        /// Only this model's versions.
        #[arg(default_value = "")]
        model: String,
        /// The window (`1m`, `30s`); default: monitoring.window.
        #[arg(long)]
        window: Option<String>,
    },
    /// Per-feature drift of a model's versions: PSI and Kolmogorov-Smirnov of
    /// the served rows in the window against each version's reference.
    Drift {
        /// The model.
        model: String,
        /// Only this version.
        #[arg(long, default_value = "")]
        version: String,
    },
}

fn client(endpoint: Option<String>, config: &Config) -> Result<MonitoringClient> {
    let endpoint = endpoint
        .or_else(|| config.monitoring.endpoint.clone())
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", config.server.grpc_port));
    Ok(MonitoringClient::connect_lazy(
        &endpoint,
        &GrpcOptions::with_internal_token(config.server.internal_token.as_deref()),
    )?)
}

fn duration_ms(text: &str) -> Result<i64> {
    let d = mlserve_common::config::duration::parse(text).map_err(anyhow::Error::msg)?;
    Ok(d.as_millis() as i64)
}

/// `10:15m,50:5m` as steps.
fn parse_steps(text: &str) -> Result<Vec<RolloutStep>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|step| {
            let Some((weight, duration)) = step.split_once(':') else {
                bail!("step '{step}' must be weight:duration, e.g. 10:15m");
            };
            Ok(RolloutStep {
                weight: weight.trim().parse()?,
                duration_ms: duration_ms(duration)?,
            })
        })
        .collect()
}

/// Runs one `mlserve rollouts` subcommand.
pub async fn rollouts(args: RolloutsArgs, config: &Config) -> Result<()> {
    let client = client(args.endpoint, config)?;
    let ctx = CallContext::new;
    let action = |model: String, reason: String| RolloutActionRequest { model, reason };
    let rollout = match args.command {
        RolloutsCommand::Start {
            model,
            canary,
            stable,
            steps,
            interval,
            threshold,
        } => {
            let analysis = Analysis {
                interval_ms: interval
                    .as_deref()
                    .map(duration_ms)
                    .transpose()?
                    .unwrap_or(0),
                threshold: threshold.unwrap_or(0),
                ..Default::default()
            };
            let request = StartRolloutRequest {
                model,
                canary,
                stable,
                steps: steps
                    .as_deref()
                    .map(parse_steps)
                    .transpose()?
                    .unwrap_or_default(),
                analysis: Some(analysis),
                previous_canary: 0,
            };
            client.start_rollout(ctx(), request).await?
        }
        RolloutsCommand::Status { model } => {
            let status = client
                .get_rollout(
                    ctx(),
                    GetRolloutRequest {
                        model,
                        id: String::new(),
                    },
                )
                .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", render_status(&status));
            }
            return Ok(());
        }
        RolloutsCommand::List { model, active } => {
            let list = client
                .list_rollouts(
                    ctx(),
                    ListRolloutsRequest {
                        model,
                        active,
                        limit: 0,
                    },
                )
                .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for r in &list.rollouts {
                    println!("{}", summary(r));
                }
            }
            return Ok(());
        }
        RolloutsCommand::Pause { model, reason } => {
            client.pause_rollout(ctx(), action(model, reason)).await?
        }
        RolloutsCommand::Resume { model } => {
            client
                .resume_rollout(ctx(), action(model, String::new()))
                .await?
        }
        RolloutsCommand::Promote { model } => {
            client
                .promote_rollout(ctx(), action(model, String::new()))
                .await?
        }
        RolloutsCommand::Abort { model, reason } => {
            client.abort_rollout(ctx(), action(model, reason)).await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rollout)?);
    } else {
        println!("{}", summary(&rollout));
    }
    Ok(())
}

/// Runs one `mlserve monitor` subcommand.
pub async fn monitor(args: MonitorArgs, config: &Config) -> Result<()> {
    let client = client(args.endpoint, config)?;
    match args.command {
        MonitorCommand::Windows { model, window } => {
            let window_ms = window.as_deref().map(duration_ms).transpose()?.unwrap_or(0);
            let windows = client
                .get_windows(CallContext::new(), GetWindowsRequest { model, window_ms })
                .await?;
            print!("{}", render_windows(&windows.windows));
        }
        MonitorCommand::Drift { model, version } => {
            let drift = client
                .get_drift(CallContext::new(), GetDriftRequest { model, version })
                .await?;
            print!("{}", render_drift(&drift.reports));
        }
    }
    Ok(())
}

fn render_drift(reports: &[DriftReport]) -> String {
    let mut out = String::new();
    for r in reports {
        out.push_str(&format!(
            "{} v{}  {}  reference {} rows, current {} rows  (drifted: PSI >= {} and KS p < {})\n",
            r.model,
            r.version,
            r.state,
            r.reference_rows,
            r.current_rows,
            r.psi_threshold,
            r.ks_alpha
        ));
        if r.features.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "  {:<24} {:<10} {:>8} {:>7} {:>10} {:>12} {:>12}  {}\n",
            "FEATURE", "KIND", "PSI", "KS", "P-VALUE", "REF MEAN", "CUR MEAN", "DRIFTED"
        ));
        for f in &r.features {
            out.push_str(&format!(
                "  {:<24} {:<10} {:>8.3} {:>7.3} {:>10.2e} {:>12.4} {:>12.4}  {}\n",
                f.feature,
                f.kind,
                f.psi,
                f.ks,
                f.p_value,
                f.reference_mean,
                f.current_mean,
                if f.drifted { "yes" } else { "no" }
            ));
        }
    }
    out
}

fn summary(r: &Rollout) -> String {
    let mut line = format!(
        "{}  {}  {}  canary v{} vs stable v{}  weight {}%  step {}/{}  failed checks {}",
        r.id,
        r.model,
        r.state,
        r.canary,
        r.stable,
        r.weight,
        (r.step as usize).min(r.steps.len()),
        r.steps.len(),
        r.failed_checks
    );
    if !r.reason.is_empty() {
        line.push_str(&format!("\n  reason: {}", r.reason));
    }
    line
}

fn render_windows(windows: &[VersionWindow]) -> String {
    let mut out = format!(
        "{:<20} {:>8} {:>10} {:>8} {:>8} {:>9} {:>10} {:>10}\n",
        "MODEL", "VERSION", "REQUESTS", "4XX", "5XX", "REQ/S", "P50 MS", "P99 MS"
    );
    for w in windows {
        out.push_str(&format!(
            "{:<20} {:>8} {:>10} {:>8} {:>8} {:>9.1} {:>10.3} {:>10.3}\n",
            w.model,
            w.version,
            w.requests,
            w.client_errors,
            w.server_errors,
            w.requests_per_second,
            w.p50_ms,
            w.p99_ms
        ));
    }
    out
}

fn render_status(status: &RolloutStatus) -> String {
    let mut out = String::new();
    if let Some(r) = &status.rollout {
        out.push_str(&summary(r));
        out.push('\n');
        out.push_str(&format!("  started by: {}\n", r.started_by));
    }
    for record in &status.records {
        let secs = Duration::from_micros(record.at_us.max(0) as u64).as_secs();
        let result = if record.result.is_empty() {
            String::new()
        } else {
            format!(" [{}]", record.result)
        };
        out.push_str(&format!(
            "  #{:<3} {} {:<8}{} {}\n",
            record.seq, secs, record.kind, result, record.message
        ));
    }
    if !status.windows.is_empty() {
        out.push_str(&render_windows(&status.windows));
    }
    out
}
