//! `loadgen calibrate`: the load generator measured against a server whose
//! answer is known. The server ([`CalibServer`]) serves one request at a
//! time in arrival order, each taking exactly S (default 20 ms), so its
//! capacity is 1/S. Four runs, all open-loop over HTTP binary:
//!
//! 0. Loopback overhead: constant arrivals at 0.5/S with S = 0. Its p50 and
//!    p99 (o50, o99) are what the client, the kernel and the server's HTTP
//!    code add to any request.
//! 1. (a) Constant arrivals at 0.5/S with service S. A request arrives every
//!    2S and finds the server idle (D/D/1 never queues), so every latency is
//!    S plus the overhead: truth p50 = S + o50, p99 = S + o99.
//! 2. (b) Poisson arrivals at 0.5/S (M/D/1). The truth is the exact FIFO
//!    queue on the same seeded schedule (Lindley's recursion: the wait of
//!    request i is max(0, W(i-1) + S - (t(i) - t(i-1)))), whose sojourn
//!    W + S has percentiles p; truth = p + o50.
//! 3. (c) Constant arrivals at 1.5/S for a short window, in 1-second phases.
//!    The backlog grows by 0.5 requests per S, so the latency of a request
//!    due at t is S + 0.5 t (+ overhead): the per-phase median must follow a
//!    slope of 0.5 s per s, the last phase's median must be S + 0.5 t, and
//!    the server must still complete 1/S per second. A generator that hid
//!    the queue (coordinated omission) would show a flat latency.
//!
//! Each check passes within 5% of the truth (10% for the slope).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::calib_server::CalibServer;
use crate::live::Live;
use crate::open::{self, OpenPlan};
use crate::open_cmd::runtime;
use crate::profile::{Arrivals, Phase, Profile};
use crate::scrape::DEFAULT_METRIC;
use crate::target::{Payload, Protocol, Target};
use crate::timeline::BookSummary;

/// Options of `loadgen calibrate`.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// The server's fixed service time, milliseconds.
    #[arg(long, default_value_t = 20.0)]
    pub service_ms: f64,
    /// Seconds of each 50%-load run.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Seconds of the 150%-load run.
    #[arg(long, default_value_t = 6.0)]
    pub overload_duration: f64,
    /// Seed of the Poisson arrivals.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Draw no progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// One comparison of a measurement with its truth.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Which run.
    pub run: String,
    /// What was compared.
    pub quantity: String,
    /// The load generator's number.
    pub measured: f64,
    /// The known answer.
    pub truth: f64,
    /// (measured - truth) / truth.
    pub error: f64,
    /// Largest |error| that passes.
    pub limit: f64,
    /// Whether it passed.
    pub pass: bool,
}

impl Check {
    fn new(run: &str, quantity: &str, measured: f64, truth: f64, limit: f64) -> Check {
        let error = if truth != 0.0 {
            (measured - truth) / truth
        } else {
            f64::INFINITY
        };
        Check {
            run: run.into(),
            quantity: quantity.into(),
            measured,
            truth,
            error,
            limit,
            pass: error.abs() <= limit,
        }
    }
}

/// The calibration's results.
#[derive(Debug, Clone, Serialize)]
pub struct CalibReport {
    /// The fixed service time, ms.
    pub service_ms: f64,
    /// 1 / service time, requests per second.
    pub capacity_per_s: f64,
    /// Loopback overhead p50 and p99, ms (service time 0).
    pub overhead_ms: (f64, f64),
    /// Every check.
    pub checks: Vec<Check>,
    /// The server's own time-in-server p50/p99 (ms) per run.
    pub server_inside_ms: Vec<(String, f64, f64)>,
    /// The client's send lag (actual - intended send time) p50/p99 (ms) per run.
    pub send_lag_ms: Vec<(String, f64, f64)>,
    /// All checks passed.
    pub pass: bool,
}

impl CalibReport {
    /// The PASS/FAIL table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "loadgen calibrate: one request at a time, fixed service time {:.3} ms (capacity {:.1} rps)",
            self.service_ms, self.capacity_per_s
        );
        let _ = writeln!(
            out,
            "  loopback overhead (service 0): p50 {:.3} ms  p99 {:.3} ms",
            self.overhead_ms.0, self.overhead_ms.1
        );
        let _ = writeln!(
            out,
            "  {:<30} {:<22} {:>10} {:>10} {:>8} {:>6}  result",
            "run", "quantity", "measured", "truth", "error", "limit"
        );
        for c in &self.checks {
            let _ = writeln!(
                out,
                "  {:<30} {:<22} {:>10.3} {:>10.3} {:>+7.2}% {:>5.0}%  {}",
                c.run,
                c.quantity,
                c.measured,
                c.truth,
                c.error * 100.0,
                c.limit * 100.0,
                if c.pass { "PASS" } else { "FAIL" }
            );
        }
        let _ = writeln!(
            out,
            "  {:<30} {:>25} {:>25}",
            "run", "server's time inside ms", "client's send lag ms"
        );
        for ((run, p50, p99), (_, l50, l99)) in self.server_inside_ms.iter().zip(&self.send_lag_ms)
        {
            let _ = writeln!(
                out,
                "  {run:<30} {:>25} {:>25}",
                format!("p50 {p50:.3} p99 {p99:.3}"),
                format!("p50 {l50:.3} p99 {l99:.3}")
            );
        }
        let _ = writeln!(out, "  {}", if self.pass { "PASS" } else { "FAIL" });
        out
    }
}

/// Percentile `q` of `values` (nearest rank; sorts them).
fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// The sojourn times (wait + service, seconds) of a FIFO single server with
/// service `s` fed by `arrivals` (Lindley's recursion).
pub fn fifo_sojourns(arrivals: &[Duration], s: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(arrivals.len());
    let (mut wait, mut prev) = (0.0f64, None::<f64>);
    for t in arrivals {
        let t = t.as_secs_f64();
        if let Some(p) = prev {
            wait = (wait + s - (t - p)).max(0.0);
        }
        prev = Some(t);
        out.push(wait + s);
    }
    out
}

/// Least-squares slope of `points`.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx
}

struct Runner<'a> {
    target: &'a Target,
    show: bool,
}

impl Runner<'_> {
    async fn run(&self, label: &str, profile: Profile, schedule: Vec<Duration>) -> BookSummary {
        let plan = OpenPlan {
            profile: profile.clone(),
            schedule: Arc::from(schedule),
            max_in_flight: 100_000,
            timeout: Duration::from_secs(60),
            drain: Duration::from_secs(60),
            metrics_url: None,
            metric: DEFAULT_METRIC.into(),
            warm_connections: 0,
            connections: None,
            pace_quantum: Duration::ZERO,
        };
        let live = Live::new(format!("calibrate {label}"), profile, self.show);
        open::run(self.target, &plan, live).await.summary()
    }
}

/// Runs the calibration.
pub fn calibrate(args: &CalibrateArgs) -> Result<CalibReport> {
    let s = args.service_ms / 1000.0;
    anyhow::ensure!(s > 0.0 && s < 1.0, "--service-ms must be in (0, 1000)");
    let service = Duration::from_secs_f64(s);
    let server = CalibServer::start()?;
    let half = 0.5 / s;
    let runtime = runtime(1)?;
    runtime.block_on(async {
        let payload = Payload::default();
        let target =
            Target::prepare(&server.url(), Protocol::HttpBinary, "calib", 1, &payload).await?;
        let runner = Runner {
            target: &target,
            show: !args.quiet,
        };
        let mut checks = Vec::new();
        let mut inside = Vec::new();
        let mut lag = Vec::new();
        let steady = Profile::constant(half, args.duration);

        // 0. Overhead with a zero service time.
        server.set_service(Duration::ZERO);
        let schedule = steady.schedule(Arrivals::Constant, args.seed)?;
        let o = runner.run("overhead", steady.clone(), schedule).await;
        let (o50, o99) = (o.latency_ms.p50, o.latency_ms.p99);
        inside.push((
            "overhead".into(),
            server.inside_ms(0.5),
            server.inside_ms(0.99),
        ));
        lag.push(("overhead".into(), o.send_lag_ms.p50, o.send_lag_ms.p99));

        // (a) Constant arrivals at half the capacity.
        server.set_service(service);
        let schedule = steady.schedule(Arrivals::Constant, args.seed)?;
        let a = runner.run("(a)", steady.clone(), schedule).await;
        let run = "(a) constant, 50% load";
        checks.push(Check::new(
            run,
            "p50 ms",
            a.latency_ms.p50,
            args.service_ms + o50,
            0.05,
        ));
        checks.push(Check::new(
            run,
            "p99 ms",
            a.latency_ms.p99,
            args.service_ms + o99,
            0.05,
        ));
        inside.push((run.into(), server.inside_ms(0.5), server.inside_ms(0.99)));
        lag.push((run.into(), a.send_lag_ms.p50, a.send_lag_ms.p99));

        // (b) Poisson arrivals at half the capacity: M/D/1.
        server.set_service(service);
        let schedule = steady.schedule(Arrivals::Poisson, args.seed)?;
        let mut sojourns = fifo_sojourns(&schedule, s);
        let b = runner.run("(b)", steady.clone(), schedule).await;
        let run = "(b) Poisson, 50% load";
        let truth50 = percentile(&mut sojourns, 0.5) * 1000.0 + o50;
        let truth99 = percentile(&mut sojourns, 0.99) * 1000.0 + o50;
        checks.push(Check::new(run, "p50 ms", b.latency_ms.p50, truth50, 0.05));
        checks.push(Check::new(run, "p99 ms", b.latency_ms.p99, truth99, 0.05));
        inside.push((run.into(), server.inside_ms(0.5), server.inside_ms(0.99)));
        lag.push((run.into(), b.send_lag_ms.p50, b.send_lag_ms.p99));

        // (c) 150% of capacity in 1-second phases.
        server.set_service(service);
        let seconds = args.overload_duration.max(2.0).round() as usize;
        let rate = 1.5 / s;
        let overload = Profile {
            name: "overload".into(),
            phases: (0..seconds)
                .map(|i| Phase {
                    name: format!("t{i}"),
                    start_s: i as f64,
                    end_s: i as f64 + 1.0,
                    rate_start: rate,
                    rate_end: rate,
                })
                .collect(),
        };
        let schedule = overload.schedule(Arrivals::Constant, args.seed)?;
        let c = runner.run("(c)", overload, schedule).await;
        let run = "(c) constant, 150% load";
        let points: Vec<(f64, f64)> = c
            .phases
            .iter()
            .filter(|p| p.ok > 0)
            .map(|p| (0.5 * (p.start_s + p.end_s), p.latency_ms.p50 / 1000.0))
            .collect();
        let growth = rate * s - 1.0;
        checks.push(Check::new(
            run,
            "p50 slope s/s",
            slope(&points),
            growth,
            0.10,
        ));
        if let Some(&(t, p50)) = points.last() {
            let truth = args.service_ms + growth * t * 1000.0 + o50;
            checks.push(Check::new(
                run,
                "last second p50 ms",
                p50 * 1000.0,
                truth,
                0.05,
            ));
        }
        let busy: Vec<f64> = c.phases.iter().map(|p| p.completed_per_s).collect();
        let completed = busy.iter().sum::<f64>() / busy.len().max(1) as f64;
        checks.push(Check::new(run, "completed/s", completed, 1.0 / s, 0.05));
        inside.push((run.into(), server.inside_ms(0.5), server.inside_ms(0.99)));
        lag.push((run.into(), c.send_lag_ms.p50, c.send_lag_ms.p99));

        let pass = checks.iter().all(|c| c.pass);
        Ok(CalibReport {
            service_ms: args.service_ms,
            capacity_per_s: 1.0 / s,
            overhead_ms: (o50, o99),
            checks,
            server_inside_ms: inside,
            send_lag_ms: lag,
            pass,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lindley_queues_what_arrives_faster_than_service() {
        let at = |ms: &[u64]| {
            ms.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        // Spaced wider than the service: no waiting.
        let s = fifo_sojourns(&at(&[0, 20, 40]), 0.010);
        assert!(s.iter().all(|&x| (x - 0.010).abs() < 1e-12), "{s:?}");
        // Three at once: the second waits one service, the third two.
        let s = fifo_sojourns(&at(&[0, 0, 0, 100]), 0.010);
        let want = [0.010, 0.020, 0.030, 0.010];
        assert!(
            s.iter().zip(want).all(|(x, w)| (x - w).abs() < 1e-12),
            "{s:?}"
        );
    }

    #[test]
    fn md1_mean_wait_matches_the_formula() {
        // M/D/1 at rho = 0.5: mean wait = rho S / (2 (1 - rho)) = S / 2.
        let schedule = Profile::constant(50.0, 2000.0)
            .schedule(Arrivals::Poisson, 3)
            .unwrap();
        let s = 0.010;
        let sojourns = fifo_sojourns(&schedule, s);
        let mean_wait = sojourns.iter().map(|x| x - s).sum::<f64>() / sojourns.len() as f64;
        assert!((mean_wait - 0.005).abs() < 0.0005, "{mean_wait}");
    }

    #[test]
    fn slope_and_percentile() {
        let pts = [(0.5, 1.0), (1.5, 1.5), (2.5, 2.0)];
        assert!((slope(&pts) - 0.5).abs() < 1e-12);
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 0.5), 3.0);
        assert_eq!(percentile(&mut v, 0.99), 5.0);
        assert_eq!(percentile(&mut v, 0.0), 1.0);
        let c = Check::new("r", "q", 10.4, 10.0, 0.05);
        assert!(c.pass && (c.error - 0.04).abs() < 1e-12);
        assert!(!Check::new("r", "q", 9.4, 10.0, 0.05).pass);
    }
}
