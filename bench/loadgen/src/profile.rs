//! Load profiles and the arrival schedules made from them.
//!
//! A profile is a list of phases; each phase ramps its rate linearly from
//! `rate_start` to `rate_end` (equal for a flat phase). The paper's three:
//!
//! - steady: 100 rps for 300 s (one phase);
//! - bursty: 100 rps, 1,000 rps from t = 60 s to t = 120 s, 100 rps until
//!   t = 180 s (phases `before`, `spike`, `after`);
//! - ramp: 50 to 500 rps over 300 s (phases `q1`..`q4`, the quartiles).
//!
//! A rate multiplier scales every rate and a time factor scales every
//! duration and phase boundary, so the shapes fit a small machine.
//!
//! The schedule is computed before the run: arrival `k` is at the time `t`
//! where the cumulative offered load Λ(t) (the integral of the rate) reaches
//! `k` (constant arrivals) or the `k`-th point of a unit-rate Poisson process
//! (Poisson arrivals; time rescaling gives a non-homogeneous Poisson
//! process that follows the ramp).

use std::time::Duration;

use anyhow::{bail, Result};
use clap::ValueEnum;
use serde::Serialize;

/// Most arrivals one schedule may hold (a guard against a typo in a rate).
pub const MAX_ARRIVALS: usize = 50_000_000;

/// The named profiles of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileKind {
    /// 100 rps for 300 s.
    Steady,
    /// 100 rps with a 10x spike from t = 60 s to t = 120 s; 180 s in all.
    Bursty,
    /// 50 to 500 rps over 300 s.
    Ramp,
}

impl ProfileKind {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileKind::Steady => "steady",
            ProfileKind::Bursty => "bursty",
            ProfileKind::Ramp => "ramp",
        }
    }
}

/// How arrivals are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arrivals {
    /// Evenly spaced at the current rate.
    Constant,
    /// A (seeded) Poisson process at the current rate.
    Poisson,
}

/// One phase: a time window with a linear rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// Phase name (`steady`, `before`, `spike`, `after`, `q1`..).
    pub name: String,
    /// Start, seconds from the start of the run.
    pub start_s: f64,
    /// End, seconds from the start of the run.
    pub end_s: f64,
    /// Rate at the start, requests per second.
    pub rate_start: f64,
    /// Rate at the end, requests per second.
    pub rate_end: f64,
}

impl Phase {
    fn new(name: &str, start_s: f64, end_s: f64, rate_start: f64, rate_end: f64) -> Phase {
        Phase {
            name: name.to_string(),
            start_s,
            end_s,
            rate_start,
            rate_end,
        }
    }

    fn duration(&self) -> f64 {
        self.end_s - self.start_s
    }

    /// Requests the phase offers: the integral of its rate.
    pub fn load(&self) -> f64 {
        0.5 * (self.rate_start + self.rate_end) * self.duration()
    }

    /// The rate at `t` (inside the phase).
    pub fn rate_at(&self, t: f64) -> f64 {
        let d = self.duration();
        if d <= 0.0 {
            return self.rate_start;
        }
        self.rate_start + (self.rate_end - self.rate_start) * (t - self.start_s) / d
    }

    /// The time `t` in the phase where the load offered since its start
    /// reaches `x` (0 <= x <= load): the root of
    /// `r0 (t-s) + (r1-r0)/(2d) (t-s)^2 = x`.
    fn time_of_load(&self, x: f64) -> f64 {
        let (r0, d) = (self.rate_start, self.duration());
        let a = (self.rate_end - r0) / (2.0 * d);
        let dt = if a.abs() < 1e-12 {
            if r0 > 0.0 {
                x / r0
            } else {
                d
            }
        } else {
            // The numerically stable root of a t^2 + r0 t - x = 0.
            let disc = (r0 * r0 + 4.0 * a * x).max(0.0);
            2.0 * x / (r0 + disc.sqrt())
        };
        self.start_s + dt.clamp(0.0, d)
    }
}

/// A profile: phases back to back from t = 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    /// `steady`, `bursty`, `ramp` or `constant`.
    pub name: String,
    /// The phases, in time order, contiguous.
    pub phases: Vec<Phase>,
}

impl Profile {
    /// One of the paper's profiles at its nominal rates and durations.
    pub fn named(kind: ProfileKind) -> Profile {
        let phases = match kind {
            ProfileKind::Steady => vec![Phase::new("steady", 0.0, 300.0, 100.0, 100.0)],
            ProfileKind::Bursty => vec![
                Phase::new("before", 0.0, 60.0, 100.0, 100.0),
                Phase::new("spike", 60.0, 120.0, 1000.0, 1000.0),
                Phase::new("after", 120.0, 180.0, 100.0, 100.0),
            ],
            ProfileKind::Ramp => {
                let rate = |t: f64| 50.0 + 450.0 * t / 300.0;
                (0..4)
                    .map(|q| {
                        let (s, e) = (75.0 * q as f64, 75.0 * (q + 1) as f64);
                        Phase::new(&format!("q{}", q + 1), s, e, rate(s), rate(e))
                    })
                    .collect()
            }
        };
        Profile {
            name: kind.as_str().to_string(),
            phases,
        }
    }

    /// A constant `rate` for `duration_s` (one phase).
    pub fn constant(rate: f64, duration_s: f64) -> Profile {
        Profile {
            name: "constant".into(),
            phases: vec![Phase::new("constant", 0.0, duration_s, rate, rate)],
        }
    }

    /// The profile with every rate times `rate_multiplier` and every time
    /// times `time_factor`.
    pub fn scaled(&self, rate_multiplier: f64, time_factor: f64) -> Result<Profile> {
        if !(rate_multiplier > 0.0 && rate_multiplier.is_finite()) {
            bail!("the rate multiplier must be a positive number");
        }
        if !(time_factor > 0.0 && time_factor.is_finite()) {
            bail!("the time factor must be a positive number");
        }
        let phases = self
            .phases
            .iter()
            .map(|p| Phase {
                name: p.name.clone(),
                start_s: p.start_s * time_factor,
                end_s: p.end_s * time_factor,
                rate_start: p.rate_start * rate_multiplier,
                rate_end: p.rate_end * rate_multiplier,
            })
            .collect();
        Ok(Profile {
            name: self.name.clone(),
            phases,
        })
    }

    /// End of the last phase, seconds.
    pub fn duration_s(&self) -> f64 {
        self.phases.last().map_or(0.0, |p| p.end_s)
    }

    /// Requests the whole profile offers (the expected arrival count).
    pub fn load(&self) -> f64 {
        self.phases.iter().map(Phase::load).sum()
    }

    /// The offered rate at `t` seconds (0 outside the profile).
    pub fn rate_at(&self, t: f64) -> f64 {
        self.phase_at(t).map_or(0.0, |i| self.phases[i].rate_at(t))
    }

    /// Index of the phase holding `t` (phases are half-open [start, end)).
    pub fn phase_at(&self, t: f64) -> Option<usize> {
        self.phases
            .iter()
            .position(|p| t >= p.start_s && t < p.end_s)
    }

    /// The time where the cumulative load reaches `x`, or `None` past the end.
    fn time_of_load(&self, mut x: f64) -> Option<f64> {
        for phase in &self.phases {
            let load = phase.load();
            if x < load {
                return Some(phase.time_of_load(x));
            }
            x -= load;
        }
        None
    }

    /// The arrival times of a run, in order.
    pub fn schedule(&self, arrivals: Arrivals, seed: u64) -> Result<Vec<Duration>> {
        for p in &self.phases {
            if p.rate_start < 0.0 || p.rate_end < 0.0 || p.end_s < p.start_s {
                bail!("phase '{}' has a negative rate or duration", p.name);
            }
        }
        let expected = self.load();
        if expected > MAX_ARRIVALS as f64 {
            bail!(
                "the profile offers {expected:.0} requests, more than the {MAX_ARRIVALS} one run may hold"
            );
        }
        let mut out = Vec::with_capacity(expected as usize + 16);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut x = 0.0f64;
        while let Some(t) = self.time_of_load(x) {
            if out.len() >= MAX_ARRIVALS {
                bail!("the schedule holds more than {MAX_ARRIVALS} arrivals");
            }
            out.push(Duration::from_secs_f64(t));
            x += match arrivals {
                Arrivals::Constant => 1.0,
                // Exponential gap of a unit-rate process; 1 - u is in (0, 1].
                Arrivals::Poisson => -(1.0 - rng.f64()).ln(),
            };
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_in(schedule: &[Duration], start: f64, end: f64) -> usize {
        schedule
            .iter()
            .filter(|t| t.as_secs_f64() >= start && t.as_secs_f64() < end)
            .count()
    }

    #[test]
    fn constant_steady_counts_are_exact() {
        let p = Profile::named(ProfileKind::Steady);
        let s = p.schedule(Arrivals::Constant, 1).unwrap();
        assert_eq!(s.len(), 30_000);
        assert_eq!(s[0], Duration::ZERO);
        assert!((s[1].as_secs_f64() - 0.01).abs() < 1e-9);
        assert!(s.windows(2).all(|w| w[0] <= w[1]));
        assert!(s.last().unwrap().as_secs_f64() < 300.0);
    }

    #[test]
    fn bursty_phases_get_their_share() {
        let p = Profile::named(ProfileKind::Bursty);
        let s = p.schedule(Arrivals::Constant, 1).unwrap();
        assert_eq!(count_in(&s, 0.0, 60.0), 6_000);
        assert_eq!(count_in(&s, 60.0, 120.0), 60_000);
        assert_eq!(count_in(&s, 120.0, 180.0), 6_000);
        assert_eq!(p.rate_at(59.9), 100.0);
        assert_eq!(p.rate_at(60.0), 1000.0);
        assert_eq!(p.phase_at(119.99), Some(1));
        assert_eq!(p.phase_at(180.0), None);
    }

    #[test]
    fn ramp_follows_the_integral() {
        let p = Profile::named(ProfileKind::Ramp);
        assert_eq!(p.phases.len(), 4);
        assert!((p.load() - 82_500.0).abs() < 1e-6);
        let s = p.schedule(Arrivals::Constant, 1).unwrap();
        assert_eq!(s.len(), 82_500);
        // q1: 50 -> 162.5 rps over 75 s.
        let q1 = 0.5 * (50.0 + 162.5) * 75.0;
        assert!((count_in(&s, 0.0, 75.0) as f64 - q1).abs() <= 1.0);
        // The local spacing is 1 / rate.
        let i = s.iter().position(|t| t.as_secs_f64() >= 150.0).unwrap();
        let gap = (s[i + 1] - s[i]).as_secs_f64();
        assert!((gap - 1.0 / p.rate_at(150.0)).abs() < 1e-5, "{gap}");
    }

    #[test]
    fn scaling_scales_rates_and_times() {
        let p = Profile::named(ProfileKind::Bursty)
            .scaled(0.5, 0.1)
            .unwrap();
        assert_eq!(p.duration_s(), 18.0);
        assert_eq!(p.phases[1].start_s, 6.0);
        assert_eq!(p.phases[1].end_s, 12.0);
        assert_eq!(p.phases[1].rate_start, 500.0);
        let s = p.schedule(Arrivals::Constant, 1).unwrap();
        assert_eq!(count_in(&s, 6.0, 12.0), 3_000);
        assert_eq!(s.len(), 300 + 3_000 + 300);
        assert!(Profile::named(ProfileKind::Steady)
            .scaled(0.0, 1.0)
            .is_err());
        assert!(Profile::named(ProfileKind::Steady)
            .scaled(1.0, -1.0)
            .is_err());
    }

    #[test]
    fn poisson_has_the_right_mean_and_is_seeded() {
        let p = Profile::constant(1000.0, 100.0);
        let a = p.schedule(Arrivals::Poisson, 7).unwrap();
        let b = p.schedule(Arrivals::Poisson, 7).unwrap();
        let c = p.schedule(Arrivals::Poisson, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // 100,000 expected; the standard deviation is sqrt(100,000) = 316.
        let n = a.len() as f64;
        assert!((n - 100_000.0).abs() < 5.0 * 316.0, "{n}");
        // Exponential gaps: the mean is 1 ms and the standard deviation too.
        let gaps: Vec<f64> = a.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!((mean - 0.001).abs() < 0.00002, "{mean}");
        assert!((var.sqrt() - 0.001).abs() < 0.00003, "{}", var.sqrt());
        // Per phase of a burst, the counts are close to the integral.
        let p = Profile::named(ProfileKind::Bursty);
        let s = p.schedule(Arrivals::Poisson, 3).unwrap();
        let spike = count_in(&s, 60.0, 120.0) as f64;
        assert!((spike - 60_000.0).abs() < 5.0 * 245.0, "{spike}");
    }

    #[test]
    fn zero_rate_phases_are_skipped() {
        let p = Profile {
            name: "gap".into(),
            phases: vec![
                Phase::new("a", 0.0, 1.0, 10.0, 10.0),
                Phase::new("idle", 1.0, 2.0, 0.0, 0.0),
                Phase::new("b", 2.0, 3.0, 10.0, 10.0),
            ],
        };
        let s = p.schedule(Arrivals::Constant, 1).unwrap();
        assert_eq!(s.len(), 20);
        assert_eq!(count_in(&s, 1.0, 2.0), 0);
        assert_eq!(s[10], Duration::from_secs(2));
    }
}
