//! How long a model has been refusing requests, and the Retry-After that
//! follows from it.
//!
//! A refusal's own prediction says when the queue ahead will have drained
//! enough for a request like it to fit: that holds if nobody else arrives.
//! Under a burst, others do, and the model keeps refusing until the burst
//! ends, which no queue shows. So a refusal's Retry-After is the longer of
//! that drain time and how long the current run of refusals (an overload
//! episode) has lasted: of an overload that has lasted `t`, the best guess
//! without more knowledge is that it lasts about `t` more (a burst's length
//! is unknown and its scale is not; this is the median remaining life under
//! a scale-free prior). Early refusals are told to come back soon, late ones
//! later, and over a burst the times said match the times waited on average.
//! Clients honouring it spread their retries over the burst instead of all
//! returning after a second into the same overload.
//!
//! An episode starts at a refusal after [`QUIET`] without one, and the
//! Retry-After it adds is capped at [`MAX_OVERLOAD_RETRY`]. Pure logic with
//! the clock injected, like admission.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A gap between refusals this long ends an overload episode.
pub const QUIET: Duration = Duration::from_secs(2);
/// The most an episode's length adds to a Retry-After.
pub const MAX_OVERLOAD_RETRY: Duration = Duration::from_secs(60);

/// `d` rounded up to whole seconds, at least 1: a Retry-After.
fn whole_seconds(d: Duration) -> Duration {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

#[derive(Debug, Clone, Copy)]
struct Episode {
    since: Instant,
    last: Instant,
}

/// One model version's current overload episode, if any.
#[derive(Debug, Default)]
pub struct Overload {
    episode: Mutex<Option<Episode>>,
}

impl Overload {
    /// A request is refused at `now`, its queue predicted to drain enough
    /// for it after `drain`: counts the refusal in the episode and returns
    /// the Retry-After to send (whole seconds, at least 1).
    pub fn refused(&self, now: Instant, drain: Duration) -> Duration {
        let mut episode = self.episode.lock().unwrap_or_else(|p| p.into_inner());
        let since = match *episode {
            Some(e) if now.saturating_duration_since(e.last) < QUIET => e.since,
            _ => now,
        };
        *episode = Some(Episode { since, last: now });
        let lasted = now.saturating_duration_since(since).min(MAX_OVERLOAD_RETRY);
        whole_seconds(drain.max(lasted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_first_refusal_is_told_the_drain_time() {
        let overload = Overload::default();
        let now = Instant::now();
        assert_eq!(overload.refused(now, S * 3 / 2), S * 2, "rounded up");
        let calm = now + QUIET;
        assert_eq!(
            overload.refused(calm, Duration::ZERO),
            S,
            "after a quiet gap a new episode starts, and it is at least 1 s"
        );
    }

    #[test]
    fn refusals_late_in_an_overload_are_told_to_wait_as_long_as_it_has_lasted() {
        let overload = Overload::default();
        let start = Instant::now();
        for tenth in 0..=100u32 {
            let now = start + S * tenth / 10;
            let said = overload.refused(now, S);
            assert_eq!(
                said,
                whole_seconds(S.max(S * tenth / 10)),
                "at {tenth} tenths"
            );
        }
        assert_eq!(
            overload.refused(start + S * 10 + QUIET, S),
            S,
            "a quiet gap ends it"
        );
    }

    #[test]
    fn the_episode_adds_at_most_its_cap_and_never_hides_a_longer_drain() {
        let overload = Overload::default();
        let start = Instant::now();
        let mut now = start;
        while now < start + MAX_OVERLOAD_RETRY * 2 {
            overload.refused(now, S);
            now += S;
        }
        assert_eq!(overload.refused(now, S), MAX_OVERLOAD_RETRY);
        let drain = MAX_OVERLOAD_RETRY * 3;
        assert_eq!(overload.refused(now, drain), drain);
    }
}
