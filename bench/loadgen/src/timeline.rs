//! The bookkeeping of an open-loop run, on a clock of its own: every time
//! is an offset from the start of the run, so the accounting runs the same
//! on the wall clock and on a simulated one (the tests).
//!
//! - An arrival is admitted (sent) or, when `max_in_flight` requests are
//!   already outstanding, dropped by the client. A drop is counted as a
//!   failure (`client: max in flight`) of the phase and second it was due.
//! - A request's latency is `completed - intended`: from the time the
//!   schedule said to send it, not from when it went out, so a stalled
//!   server or a late client shows up in the latency (no coordinated
//!   omission).
//! - Phases are by intended time (the load a phase offered and how it was
//!   served); per-second buckets count completions in the second they
//!   complete, and offered load in the second it was due.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::profile::Profile;
use crate::stats::{LatencySummary, Recorder};

/// Error label of an arrival the client did not send (max in flight).
pub const DROPPED: &str = "client: max in flight";
/// Error label of a request still unanswered when the run ended.
pub const UNFINISHED: &str = "client: unfinished at end";
/// Error label of a request that outlived `--timeout`.
pub const TIMEOUT: &str = "client: timeout";

/// Largest latency tracked (60 s), as in [`Recorder`].
const MAX_MICROS: u64 = 60_000_000;

/// Moving-average window of the peak sustained throughput, seconds.
pub const PEAK_WINDOW_S: usize = 5;

/// A token for an admitted request; give it back on completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    slot: usize,
}

/// What the client does with an arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send it; report its completion with this token.
    Send(Token),
    /// Dropped: `max_in_flight` requests were already outstanding.
    Dropped,
}

/// One second of the run.
#[derive(Debug, Clone)]
struct Second {
    offered: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u32>,
    max_in_flight: usize,
    queue_sum: f64,
    queue_max: f64,
    queue_samples: u32,
    /// Retry-After of the refusals answered in this second: sum, count, max.
    retry_after_sum: u64,
    retry_after_n: u64,
    retry_after_max: u64,
}

impl Second {
    fn new() -> Second {
        Second {
            offered: 0,
            ok: 0,
            errors: BTreeMap::new(),
            // 2 significant digits are plenty per second and keep it small.
            latency: Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("valid histogram bounds"),
            max_in_flight: 0,
            queue_sum: 0.0,
            queue_max: 0.0,
            queue_samples: 0,
            retry_after_sum: 0,
            retry_after_n: 0,
            retry_after_max: 0,
        }
    }
}

/// One phase, by intended send time.
#[derive(Debug, Clone, Default)]
struct PhaseBook {
    offered: u64,
    recorder: Recorder,
}

/// The whole bookkeeping of one run.
pub struct Book {
    profile: Profile,
    max_in_flight: usize,
    in_flight: usize,
    /// Intended time of each outstanding request, by slot.
    slots: Vec<Option<Duration>>,
    free: Vec<usize>,
    seconds: Vec<Second>,
    phases: Vec<PhaseBook>,
    overall: Recorder,
    send_lag: Histogram<u64>,
    offered: u64,
    queue: Vec<(f64, Option<f64>)>,
}

impl Book {
    /// Empty books for a run of `profile` with at most `max_in_flight`
    /// outstanding requests.
    pub fn new(profile: Profile, max_in_flight: usize) -> Book {
        let phases = vec![PhaseBook::default(); profile.phases.len()];
        Book {
            profile,
            max_in_flight: max_in_flight.max(1),
            in_flight: 0,
            slots: Vec::new(),
            free: Vec::new(),
            seconds: Vec::new(),
            phases,
            overall: Recorder::default(),
            send_lag: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds"),
            offered: 0,
            queue: Vec::new(),
        }
    }

    fn second(&mut self, at: Duration) -> &mut Second {
        let i = at.as_secs() as usize;
        while self.seconds.len() <= i {
            self.seconds.push(Second::new());
        }
        &mut self.seconds[i]
    }

    fn phase_of(&self, intended: Duration) -> usize {
        let t = intended.as_secs_f64();
        self.profile
            .phase_at(t)
            .unwrap_or(self.phases.len().saturating_sub(1))
    }

    /// Requests outstanding now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// An arrival due at `intended`: send it, or drop it when the bound is hit.
    pub fn arrival(&mut self, intended: Duration) -> Admission {
        self.offered += 1;
        let phase = self.phase_of(intended);
        self.phases[phase].offered += 1;
        self.second(intended).offered += 1;
        if self.in_flight >= self.max_in_flight {
            self.phases[phase].recorder.failure(DROPPED, "");
            self.overall.failure(
                DROPPED,
                "the client had --max-in-flight requests outstanding",
            );
            *self
                .second(intended)
                .errors
                .entry(DROPPED.into())
                .or_default() += 1;
            return Admission::Dropped;
        }
        self.in_flight += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(intended);
                slot
            }
            None => {
                self.slots.push(Some(intended));
                self.slots.len() - 1
            }
        };
        let in_flight = self.in_flight;
        let s = self.second(intended);
        s.max_in_flight = s.max_in_flight.max(in_flight);
        Admission::Send(Token { slot })
    }

    /// The request of `token` actually went out at `sent`.
    pub fn sent(&mut self, token: Token, sent: Duration) {
        if let Some(Some(intended)) = self.slots.get(token.slot) {
            let lag = sent.saturating_sub(*intended);
            self.send_lag
                .saturating_record((lag.as_micros() as u64).clamp(1, MAX_MICROS));
        }
    }

    /// The request of `token` completed at `done`: `failure` is `None` on
    /// success, else its label and message.
    pub fn completion(&mut self, token: Token, done: Duration, failure: Option<(&str, &str)>) {
        let Some(intended) = self.slots.get_mut(token.slot).and_then(Option::take) else {
            return;
        };
        self.free.push(token.slot);
        self.in_flight -= 1;
        let latency = done.saturating_sub(intended);
        let phase = self.phase_of(intended);
        match failure {
            None => {
                self.phases[phase].recorder.success(latency);
                self.overall.success(latency);
                let s = self.second(done);
                s.ok += 1;
                s.latency
                    .saturating_record((latency.as_micros() as u64).clamp(1, MAX_MICROS));
            }
            Some((label, detail)) => {
                self.phases[phase].recorder.failure(label, detail);
                self.overall.failure(label, detail);
                *self.second(done).errors.entry(label.into()).or_default() += 1;
            }
        }
    }

    /// A refusal answered at `done` said to retry after `secs` seconds.
    pub fn retry_after(&mut self, done: Duration, secs: u64) {
        let s = self.second(done);
        s.retry_after_sum += secs;
        s.retry_after_n += 1;
        s.retry_after_max = s.retry_after_max.max(secs);
    }

    /// A queue-depth sample at `at` (`None`: the scrape failed).
    pub fn queue_sample(&mut self, at: Duration, depth: Option<f64>) {
        self.queue.push((at.as_secs_f64(), depth));
        if let Some(depth) = depth {
            let s = self.second(at);
            s.queue_sum += depth;
            s.queue_max = s.queue_max.max(depth);
            s.queue_samples += 1;
        }
    }

    /// Ends the run at `end`: every request still outstanding is counted as
    /// unfinished, in the second the run ended.
    pub fn finish(&mut self, end: Duration) {
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some() {
                self.completion(
                    Token { slot },
                    end,
                    Some((UNFINISHED, "no answer before the run ended")),
                );
            }
        }
    }

    /// Successful completions per second, the whole run.
    pub fn ok_per_second(&self) -> Vec<u64> {
        self.seconds.iter().map(|s| s.ok).collect()
    }

    /// Requests offered so far.
    pub fn offered(&self) -> u64 {
        self.offered
    }

    /// Successful requests so far.
    pub fn ok(&self) -> u64 {
        self.overall.ok
    }

    /// Failed requests so far (client drops included).
    pub fn failed(&self) -> u64 {
        self.overall.error_total()
    }

    /// Latest queue-depth sample that succeeded.
    pub fn last_queue_depth(&self) -> Option<f64> {
        self.queue.iter().rev().find_map(|(_, d)| *d)
    }

    /// Everything, summarized.
    pub fn summary(&self) -> BookSummary {
        let ok = self.ok_per_second();
        let phases = self
            .profile
            .phases
            .iter()
            .zip(&self.phases)
            .map(|(p, b)| {
                let window = (p.end_s - p.start_s).max(1e-9);
                let (first, last) = (p.start_s.ceil() as usize, p.end_s.floor() as usize);
                let completed: u64 = ok.iter().take(last).skip(first).sum();
                let whole = last.saturating_sub(first);
                PhaseSummary {
                    name: p.name.clone(),
                    start_s: p.start_s,
                    end_s: p.end_s,
                    rate_start: p.rate_start,
                    rate_end: p.rate_end,
                    offered: b.offered,
                    offered_per_s: b.offered as f64 / window,
                    ok: b.recorder.ok,
                    completed_per_s: if whole > 0 {
                        completed as f64 / whole as f64
                    } else {
                        0.0
                    },
                    peak_sustained_per_s: peak_sustained(&ok, p.start_s, p.end_s),
                    error_total: b.recorder.error_total(),
                    errors: b.recorder.errors.clone(),
                    latency_ms: b.recorder.latency(),
                    latency_all_ms: all_arrivals(&b.recorder),
                }
            })
            .collect();
        let timeline = self
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let l = LatencyPair::of(&s.latency);
                SecondSummary {
                    t: i as u64,
                    offered: s.offered,
                    offered_rate: self.profile.rate_at(i as f64 + 0.5),
                    ok: s.ok,
                    errors: s.errors.clone(),
                    p50_ms: l.p50,
                    p99_ms: l.p99,
                    max_in_flight: s.max_in_flight,
                    queue_depth_mean: (s.queue_samples > 0)
                        .then(|| s.queue_sum / s.queue_samples as f64),
                    queue_depth_max: (s.queue_samples > 0).then_some(s.queue_max),
                    with_retry_after: s.retry_after_n,
                    retry_after_s_mean: (s.retry_after_n > 0)
                        .then(|| s.retry_after_sum as f64 / s.retry_after_n as f64),
                    retry_after_s_max: (s.retry_after_n > 0).then_some(s.retry_after_max),
                }
            })
            .collect();
        BookSummary {
            offered: self.offered,
            ok: self.overall.ok,
            error_total: self.overall.error_total(),
            errors: self.overall.errors.clone(),
            first_errors: self.overall.first_error.clone(),
            latency_ms: self.overall.latency(),
            latency_all_ms: all_arrivals(&self.overall),
            latency_spectrum_ms: self.overall.spectrum(),
            send_lag_ms: LatencySummary::of(&self.send_lag),
            phases,
            timeline,
            queue_depth: self.queue.clone(),
        }
    }
}

/// The best `PEAK_WINDOW_S`-second moving average of `per_second` over the
/// whole seconds inside [start_s, end_s); the mean of them all when fewer
/// whole seconds fit.
pub fn peak_sustained(per_second: &[u64], start_s: f64, end_s: f64) -> f64 {
    let first = start_s.max(0.0).ceil() as usize;
    let last = (end_s.max(0.0).floor() as usize).min(per_second.len());
    if last <= first {
        return 0.0;
    }
    let inside = &per_second[first..last];
    let window = PEAK_WINDOW_S.min(inside.len());
    inside
        .windows(window)
        .map(|w| w.iter().sum::<u64>() as f64 / window as f64)
        .fold(0.0, f64::max)
}

/// p50 and p99 of one second's completions.
struct LatencyPair {
    p50: Option<f64>,
    p99: Option<f64>,
}

impl LatencyPair {
    fn of(h: &Histogram<u32>) -> LatencyPair {
        if h.is_empty() {
            return LatencyPair {
                p50: None,
                p99: None,
            };
        }
        let ms = |q: f64| Some(h.value_at_quantile(q) as f64 / 1000.0);
        LatencyPair {
            p50: ms(0.5),
            p99: ms(0.99),
        }
    }
}

/// Percentiles over every arrival, a failure (error status, timeout, client
/// drop, unfinished) ranking as infinitely slow: `None` where the
/// percentile falls on a failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AllArrivals {
    /// Share of the arrivals that succeeded.
    pub success_fraction: f64,
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p999: Option<f64>,
}

fn all_arrivals(r: &Recorder) -> AllArrivals {
    let (ok, failed) = (r.ok, r.error_total());
    let total = ok + failed;
    if total == 0 {
        return AllArrivals::default();
    }
    let at = |q: f64| -> Option<f64> {
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        (rank <= ok).then(|| r.latency_at(rank as f64 / ok as f64))
    };
    AllArrivals {
        success_fraction: ok as f64 / total as f64,
        p50: at(0.5),
        p95: at(0.95),
        p99: at(0.99),
        p999: at(0.999),
    }
}

/// One phase of the report.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    /// Phase name.
    pub name: String,
    /// Start, seconds.
    pub start_s: f64,
    /// End, seconds.
    pub end_s: f64,
    /// Nominal rate at the start.
    pub rate_start: f64,
    /// Nominal rate at the end.
    pub rate_end: f64,
    /// Arrivals due in the phase.
    pub offered: u64,
    /// `offered` per second of the phase.
    pub offered_per_s: f64,
    /// Arrivals of the phase that succeeded (whenever they completed).
    pub ok: u64,
    /// Successful completions per second during the phase's whole seconds
    /// (whatever phase the requests were due in).
    pub completed_per_s: f64,
    /// The best 5-second moving average of successful completions per
    /// second inside the phase.
    pub peak_sustained_per_s: f64,
    /// Arrivals of the phase that failed.
    pub error_total: u64,
    /// Failures by label.
    pub errors: BTreeMap<String, u64>,
    /// Latency of the phase's successful arrivals, ms.
    pub latency_ms: LatencySummary,
    /// Percentiles over all the phase's arrivals, failures as infinite.
    pub latency_all_ms: AllArrivals,
}

/// One second of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct SecondSummary {
    /// Second since the start.
    pub t: u64,
    /// Arrivals due in this second.
    pub offered: u64,
    /// The profile's rate at the middle of the second.
    pub offered_rate: f64,
    /// Successful completions in this second.
    pub ok: u64,
    /// Failures completing in this second (drops: in the second they were due).
    pub errors: BTreeMap<String, u64>,
    /// Median latency of this second's successful completions, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile of the same, ms.
    pub p99_ms: Option<f64>,
    /// Most requests outstanding at an arrival in this second.
    pub max_in_flight: usize,
    /// Mean of the queue-depth samples taken in this second.
    pub queue_depth_mean: Option<f64>,
    /// Largest of them.
    pub queue_depth_max: Option<f64>,
    /// Failures answered in this second that carried a Retry-After.
    pub with_retry_after: u64,
    /// Mean Retry-After (seconds) of those.
    pub retry_after_s_mean: Option<f64>,
    /// The largest of them.
    pub retry_after_s_max: Option<u64>,
}

/// The bookkeeping, summarized for the report.
#[derive(Debug, Clone, Serialize)]
pub struct BookSummary {
    /// Arrivals in the schedule.
    pub offered: u64,
    /// Successful requests.
    pub ok: u64,
    /// Failed arrivals (client drops, timeouts and unfinished included).
    pub error_total: u64,
    /// Failures by label.
    pub errors: BTreeMap<String, u64>,
    /// First message per label.
    pub first_errors: BTreeMap<String, String>,
    /// Latency of the successful requests, from the intended send time, ms.
    pub latency_ms: LatencySummary,
    /// Percentiles over all arrivals, failures as infinite.
    pub latency_all_ms: AllArrivals,
    /// `[quantile, ms]` pairs of the successful requests' latency.
    pub latency_spectrum_ms: Vec<(f64, f64)>,
    /// How late requests went out relative to their intended time, ms.
    pub send_lag_ms: LatencySummary,
    /// Per phase.
    pub phases: Vec<PhaseSummary>,
    /// Per second.
    pub timeline: Vec<SecondSummary>,
    /// `[seconds, depth]` queue-depth samples (`null`: the scrape failed).
    pub queue_depth: Vec<(f64, Option<f64>)>,
}

#[cfg(test)]
#[path = "timeline_tests.rs"]
mod tests;
