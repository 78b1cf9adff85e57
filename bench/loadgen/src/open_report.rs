//! The result of an open-loop run: a human table on stdout and the same
//! facts as JSON (the per-second timeline and queue samples only in JSON).

use std::fmt::Write as _;

use serde::Serialize;

use crate::profile::{Arrivals, Profile};
use crate::timeline::{AllArrivals, BookSummary, PEAK_WINDOW_S};

/// What an open-loop run was asked to do.
#[derive(Debug, Clone, Serialize)]
pub struct OpenSetup {
    /// Model name.
    pub model: String,
    /// Wire protocol.
    pub protocol: &'static str,
    /// Server URL.
    pub target: String,
    /// Rows per request.
    pub batch: usize,
    /// The profile after scaling (phases with their rates and times).
    pub profile: Profile,
    /// Rates were multiplied by this.
    pub rate_multiplier: f64,
    /// Times were multiplied by this.
    pub time_factor: f64,
    /// Constant or Poisson.
    pub arrivals: Arrivals,
    /// Seed of the Poisson schedule.
    pub seed: u64,
    /// The client's bound on requests outstanding.
    pub max_in_flight: usize,
    /// HTTP connections opened before the start.
    pub warm_connections: usize,
    /// The fixed pool's size (`--connections`); `None`: one per outstanding request.
    pub connections: Option<usize>,
    /// The pacer's quantum, microseconds (`--pace-quantum-us`; 0: exact).
    pub pace_quantum_us: u64,
    /// Per-request timeout, seconds.
    pub timeout_s: f64,
    /// Load generator threads.
    pub threads: usize,
    /// Bytes of tensor data in one request.
    pub request_bytes: usize,
    /// Distinct requests sent round-robin.
    pub distinct_requests: usize,
    /// Where the request data came from.
    pub inputs: String,
    /// Where the queue depth was sampled from.
    pub metrics_url: Option<String>,
}

/// Everything an open-loop run measured.
#[derive(Debug, Clone, Serialize)]
pub struct OpenReport {
    /// Always `open`.
    pub mode: &'static str,
    /// The setup.
    #[serde(flatten)]
    pub setup: OpenSetup,
    /// Seconds from the first arrival to the end of the drain.
    pub wall_s: f64,
    /// Successful requests per second over the profile's duration.
    pub ok_per_s: f64,
    /// Peak sustained throughput of the phase named `spike` (the best
    /// 5-second moving average of successful completions per second inside
    /// it), when the profile has one.
    pub spike_peak_sustained_per_s: Option<f64>,
    /// The measurements.
    #[serde(flatten)]
    pub summary: BookSummary,
}

impl OpenReport {
    /// The report of a finished run.
    pub fn new(setup: OpenSetup, summary: BookSummary, wall_s: f64) -> OpenReport {
        let spike = summary
            .phases
            .iter()
            .find(|p| p.name == "spike")
            .map(|p| p.peak_sustained_per_s);
        let duration = setup.profile.duration_s().max(1e-9);
        OpenReport {
            mode: "open",
            wall_s,
            ok_per_s: summary.ok as f64 / duration,
            spike_peak_sustained_per_s: spike,
            setup,
            summary,
        }
    }

    /// The human table.
    pub fn table(&self) -> String {
        let (s, m) = (&self.setup, &self.summary);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "loadgen open: {} batch {} over {} at {}",
            s.model, s.batch, s.protocol, s.target
        );
        let _ = writeln!(
            out,
            "  profile {} (rates x{:.4}, times x{:.4}, {:.1} s), {} arrivals, seed {}, max in flight {}, connections {}, inputs: {}",
            s.profile.name,
            s.rate_multiplier,
            s.time_factor,
            s.profile.duration_s(),
            match s.arrivals {
                Arrivals::Constant => "constant",
                Arrivals::Poisson => "Poisson",
            },
            s.seed,
            s.max_in_flight,
            s.connections
                .map_or_else(|| "on demand".to_string(), |n| format!("{n} (fixed)")),
            s.inputs
        );
        let _ = writeln!(
            out,
            "  offered {}  ok {} ({:.1}/s)  failed {}",
            m.offered, m.ok, self.ok_per_s, m.error_total
        );
        let _ = writeln!(
            out,
            "  {:<8} {:>13} {:>10} {:>11} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "phase",
            "window s",
            "offered/s",
            "completed/s",
            format!("peak{PEAK_WINDOW_S}s/s"),
            "ok",
            "failed",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "p99.9 ms"
        );
        for p in &m.phases {
            let l = &p.latency_ms;
            let _ = writeln!(
                out,
                "  {:<8} {:>13} {:>10.1} {:>11.1} {:>9.1} {:>8} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                p.name,
                format!("{:.1}-{:.1}", p.start_s, p.end_s),
                p.offered_per_s,
                p.completed_per_s,
                p.peak_sustained_per_s,
                p.ok,
                p.error_total,
                l.p50,
                l.p95,
                l.p99,
                l.p999
            );
        }
        let l = &m.latency_ms;
        let _ = writeln!(
            out,
            "  {:<8} {:>13} {:>10} {:>11} {:>9} {:>8} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            "all", "", "", "", "", m.ok, m.error_total, l.p50, l.p95, l.p99, l.p999
        );
        let _ = writeln!(
            out,
            "  latency from the intended send time; over all arrivals with failures as infinite: {}",
            all_line(&m.latency_all_ms)
        );
        let lag = &m.send_lag_ms;
        let _ = writeln!(
            out,
            "  send lag (actual - intended) ms: p50 {:.3}  p99 {:.3}  max {:.3}",
            lag.p50, lag.p99, lag.max
        );
        let depths: Vec<f64> = m.queue_depth.iter().filter_map(|(_, d)| *d).collect();
        if let Some(url) = &s.metrics_url {
            if depths.is_empty() {
                let _ = writeln!(out, "  queue depth: no samples from {url}");
            } else {
                let max = depths.iter().copied().fold(0.0, f64::max);
                let mean = depths.iter().sum::<f64>() / depths.len() as f64;
                let _ = writeln!(
                    out,
                    "  queue depth: mean {mean:.1}  max {max:.0} ({} samples)",
                    depths.len()
                );
            }
        }
        for (label, n) in &m.errors {
            let first = m.first_errors.get(label).map(String::as_str).unwrap_or("");
            let _ = writeln!(out, "  error {label}: {n}  first: {first}");
        }
        out
    }
}

fn all_line(a: &AllArrivals) -> String {
    let f = |v: Option<f64>| v.map_or("failed".to_string(), |v| format!("{v:.2}"));
    format!(
        "success {:.2}%  p50 {}  p95 {}  p99 {}  p99.9 {}",
        a.success_fraction * 100.0,
        f(a.p50),
        f(a.p95),
        f(a.p99),
        f(a.p999)
    )
}
