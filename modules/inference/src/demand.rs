//! The autoscaling signal: how many inference processes the current load of
//! each model needs, exported as `mlserve_inference_desired_replicas{model}`
//! for the prometheus-adapter to serve to a HorizontalPodAutoscaler.
//!
//! Every second a sample of each version's counters is kept; over the last
//! `window` of samples:
//! - the arrival rate `λ` is requests offered to the queue per second (a
//!   request refused by a full queue arrived all the same);
//! - the service cost `c` is the instance time one request took in its
//!   batch (a batch's wall time shared by its requests), so one process
//!   serves `instances / c` requests per second;
//! - by Little's law the process needs `λ c / instances` processes' worth of
//!   instances to keep up, plus `q c / (instances T)` to drain the `q`
//!   requests queued now within `T` (the `drain` horizon).
//!
//! The gauge is this process's share: the processes its own arrivals need.
//! Summed over the pods behind one Service (the adapter's query, or the
//! HPA's Pods metric with an average target of 1) it is the model's need.
//! A version with no executed request in the window keeps its last cost.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlserve_common::ShutdownSignal;

use crate::stats::StatsRegistry;

/// The counters of one version at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counters {
    /// Requests offered to the queue (refused ones included), cumulative.
    arrivals: u64,
    /// Requests that went through execution, cumulative.
    executed: u64,
    /// Instance time spent executing batches, cumulative nanoseconds.
    busy_ns: u64,
    /// Model instances (parallel executors) now.
    instances: usize,
    /// Requests waiting now.
    queued: usize,
}

type Key = (String, String);

#[derive(Debug)]
struct Sample {
    at: Instant,
    versions: HashMap<Key, Counters>,
}

/// The sliding samples and each version's last known service cost.
#[derive(Debug)]
pub struct Demand {
    stats: Arc<StatsRegistry>,
    window: Duration,
    drain: Duration,
    samples: Mutex<VecDeque<Sample>>,
    costs: Mutex<HashMap<Key, f64>>,
}

impl Demand {
    /// Demand over `stats`, estimated over `window`, queues drained within
    /// `drain`.
    pub fn new(stats: Arc<StatsRegistry>, window: Duration, drain: Duration) -> Demand {
        Demand {
            stats,
            window: window.max(Duration::from_secs(1)),
            drain: drain.max(Duration::from_secs(1)),
            samples: Mutex::default(),
            costs: Mutex::default(),
        }
    }

    /// Samples every second until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: ShutdownSignal) {
        let mut ticks = shutdown.ticks(Duration::from_secs(1));
        while ticks.next().await {
            self.sample(Instant::now());
        }
    }

    /// Takes one sample of every version's counters at `at`.
    pub fn sample(&self, at: Instant) {
        let versions = self
            .stats
            .all()
            .iter()
            .map(|s| {
                let counters = Counters {
                    arrivals: s.arrivals.load(Ordering::Relaxed),
                    executed: s.compute_infer.count(),
                    busy_ns: s.busy_ns.load(Ordering::Relaxed),
                    instances: s.instances.load(Ordering::Relaxed),
                    queued: s.queue_depth.load(Ordering::Relaxed),
                };
                ((s.model.clone(), s.version.clone()), counters)
            })
            .collect();
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.push_back(Sample { at, versions });
        // Keep one sample at or before the window's start, so the oldest
        // kept sample spans the whole window.
        while samples.len() > 2 && at.duration_since(samples[1].at) >= self.window {
            samples.pop_front();
        }
    }

    /// Processes each model's load needs (its versions summed), from the
    /// oldest and the newest sample; empty before two samples.
    pub fn desired(&self) -> BTreeMap<String, f64> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(first), Some(last)) = (samples.front(), samples.back()) else {
            return BTreeMap::new();
        };
        let span = last.at.duration_since(first.at).as_secs_f64();
        let mut out = BTreeMap::new();
        if span <= 0.0 {
            return out;
        }
        let mut costs = self.costs.lock().unwrap_or_else(|e| e.into_inner());
        for (key, now) in &last.versions {
            let before = first.versions.get(key).copied().unwrap_or_default();
            let executed = now.executed.saturating_sub(before.executed);
            if executed > 0 {
                let busy = now.busy_ns.saturating_sub(before.busy_ns) as f64 / 1e9;
                costs.insert(key.clone(), busy / executed as f64);
            }
            let cost = costs.get(key).copied().unwrap_or(0.0);
            let arrivals = now.arrivals.saturating_sub(before.arrivals) as f64 / span;
            let instances = now.instances.max(1) as f64;
            let backlog = now.queued as f64 / self.drain.as_secs_f64();
            *out.entry(key.0.clone()).or_insert(0.0) += (arrivals + backlog) * cost / instances;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::BatchTimings;

    /// `requests` requests answered, executed in batches of one that took
    /// `each` of instance time.
    fn serve(stats: &StatsRegistry, model: &str, requests: u64, each: Duration) {
        let s = stats.get(model, "1");
        s.arrivals.fetch_add(requests, Ordering::Relaxed);
        for _ in 0..requests {
            s.record_execution(
                1,
                1,
                &BatchTimings {
                    infer: each,
                    ..Default::default()
                },
            );
            s.record_success(each);
        }
    }

    #[test]
    fn three_times_one_process_capacity_needs_three_processes() {
        let stats = Arc::new(StatsRegistry::default());
        stats.get("m", "1").instances.store(2, Ordering::Relaxed);
        let demand = Demand::new(
            stats.clone(),
            Duration::from_secs(10),
            Duration::from_secs(30),
        );
        let t0 = Instant::now();
        demand.sample(t0);
        // Two instances at 10 ms a request serve 200 requests/s; 600 arrive
        // each second for 10 s (the rest are refused by the full queue).
        serve(&stats, "m", 2000, Duration::from_millis(10));
        stats
            .get("m", "1")
            .arrivals
            .fetch_add(4000, Ordering::Relaxed);
        demand.sample(t0 + Duration::from_secs(10));
        let desired = demand.desired()["m"];
        assert!((desired - 3.0).abs() < 1e-9, "{desired}");
    }

    #[test]
    fn the_signal_follows_the_load_down_and_counts_the_backlog() {
        let stats = Arc::new(StatsRegistry::default());
        let demand = Demand::new(
            stats.clone(),
            Duration::from_secs(2),
            Duration::from_secs(10),
        );
        let t0 = Instant::now();
        demand.sample(t0);
        serve(&stats, "m", 100, Duration::from_millis(10));
        demand.sample(t0 + Duration::from_secs(1));
        assert!((demand.desired()["m"] - 1.0).abs() < 1e-9);
        // No more traffic: once the window has passed, nothing is needed.
        for s in 2..=4 {
            demand.sample(t0 + Duration::from_secs(s));
        }
        assert_eq!(
            demand.desired()["m"],
            0.0,
            "the last cost is kept, the rate is 0"
        );
        // 500 queued requests at 10 ms, drained within 10 s: half a process.
        stats
            .get("m", "1")
            .queue_depth
            .store(500, Ordering::Relaxed);
        demand.sample(t0 + Duration::from_secs(5));
        assert!((demand.desired()["m"] - 0.5).abs() < 1e-9);
    }

    #[test]
    fn nothing_before_two_samples() {
        let demand = Demand::new(
            Arc::new(StatsRegistry::default()),
            Duration::from_secs(10),
            Duration::from_secs(30),
        );
        assert!(demand.desired().is_empty());
        demand.sample(Instant::now());
        assert!(demand.desired().is_empty());
    }
}
