//! The open-loop accounting on a simulated clock: a FIFO server with a fixed
//! service time that stalls, a client that sends each request at its
//! intended time (or late), and the books kept as the real driver keeps them.

use super::*;
use crate::profile::{Arrivals, ProfileKind};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A single FIFO server: `service` per request, nothing served during
/// `stall` (start, end).
struct SimServer {
    service: f64,
    stall: Option<(f64, f64)>,
    free_at: f64,
}

impl SimServer {
    /// When a request that reaches the server at `t` completes.
    fn serve(&mut self, t: f64) -> f64 {
        let mut start = t.max(self.free_at);
        if let Some((a, b)) = self.stall {
            if start >= a && start < b {
                start = b;
            }
        }
        self.free_at = start + self.service;
        self.free_at
    }
}

/// Runs `schedule` open-loop through the books: each arrival is sent at its
/// intended time plus `client_lag`, completions are applied in time order.
fn simulate(
    profile: Profile,
    schedule: &[Duration],
    server: &mut SimServer,
    max_in_flight: usize,
    client_lag: f64,
) -> Book {
    let mut book = Book::new(profile, max_in_flight);
    let mut pending: Vec<(f64, Token)> = Vec::new();
    for &intended in schedule {
        let t = intended.as_secs_f64();
        pending.sort_by(|a, b| b.0.total_cmp(&a.0));
        while pending.last().is_some_and(|(done, _)| *done <= t) {
            let (done, token) = pending.pop().unwrap();
            book.completion(token, secs(done), None);
        }
        if let Admission::Send(token) = book.arrival(intended) {
            let sent = t + client_lag;
            book.sent(token, secs(sent));
            pending.push((server.serve(sent), token));
        }
    }
    for (done, token) in pending {
        book.completion(token, secs(done), None);
    }
    book
}

#[test]
fn a_stall_shows_in_the_latency_of_every_request_behind_it() {
    // 100 rps for 3 s, 1 ms service, the server stalls from 1 s to 2 s.
    let profile = Profile::constant(100.0, 3.0);
    let schedule = profile.schedule(Arrivals::Constant, 1).unwrap();
    let mut server = SimServer {
        service: 0.001,
        stall: Some((1.0, 2.0)),
        free_at: 0.0,
    };
    let book = simulate(profile, &schedule, &mut server, 10_000, 0.0);
    let s = book.summary();
    assert_eq!(s.offered, 300);
    assert_eq!(s.ok, 300);
    // 100 requests were due during the stall; they waited 1 s down to ~0.
    // A closed-loop client measuring from the actual send would record ONE
    // slow request; here a third of them are slow.
    let l = s.latency_ms;
    assert!(l.p50 < 2.0, "{l:?}");
    assert!(l.p99 > 950.0, "{l:?}");
    assert!(l.max > 990.0 && l.max < 1010.0, "{l:?}");
    // ~half of the stalled requests waited more than 0.5 s: the p83 is > 0.5 s.
    let slow = s
        .latency_spectrum_ms
        .iter()
        .find(|(q, _)| *q == 0.8)
        .unwrap()
        .1;
    assert!(slow > 300.0, "{slow}");
    // Nothing completes during the stall; all of it right after.
    assert_eq!(s.timeline[1].ok, 0);
    assert!(s.timeline[2].ok >= 100, "{:?}", s.timeline[2]);
    assert_eq!(s.timeline[0].ok, 100);
}

#[test]
fn a_late_client_is_charged_its_lateness() {
    let profile = Profile::constant(10.0, 2.0);
    let schedule = profile.schedule(Arrivals::Constant, 1).unwrap();
    let mut server = SimServer {
        service: 0.005,
        stall: None,
        free_at: 0.0,
    };
    let book = simulate(profile, &schedule, &mut server, 100, 0.020);
    let s = book.summary();
    assert!((s.latency_ms.p50 - 25.0).abs() < 0.1, "{:?}", s.latency_ms);
    assert!(
        (s.send_lag_ms.p50 - 20.0).abs() < 0.1,
        "{:?}",
        s.send_lag_ms
    );
}

#[test]
fn drops_at_the_bound_are_counted_and_rank_as_failures() {
    let profile = Profile::constant(100.0, 3.0);
    let schedule = profile.schedule(Arrivals::Constant, 1).unwrap();
    let mut server = SimServer {
        service: 0.001,
        stall: Some((1.0, 2.0)),
        free_at: 0.0,
    };
    let book = simulate(profile, &schedule, &mut server, 10, 0.0);
    let s = book.summary();
    // During the stall 10 requests are outstanding; the other 90 are
    // dropped, and so is the one due at 2.000 s, just before the first
    // answer (2.001 s).
    assert_eq!(s.errors[DROPPED], 91);
    assert_eq!(s.ok, 209);
    assert_eq!(s.offered, 300);
    assert_eq!(s.timeline[1].errors[DROPPED], 90);
    assert_eq!(s.timeline[1].max_in_flight, 10);
    // The successful requests look fine, but 30% of all arrivals failed:
    // the p99 over all arrivals is a failure, not a number.
    assert!(s.latency_ms.p99 > 900.0);
    assert!((s.latency_all_ms.success_fraction - 209.0 / 300.0).abs() < 1e-9);
    assert!(s.latency_all_ms.p50.is_some());
    assert_eq!(s.latency_all_ms.p95, None);
    assert_eq!(s.latency_all_ms.p99, None);
}

#[test]
fn phases_follow_the_intended_time_and_the_peak_is_a_moving_average() {
    // Bursty at 1/10 the rates and times: 10 rps, 100 rps from 6 s to 12 s.
    let profile = Profile::named(ProfileKind::Bursty)
        .scaled(0.1, 0.1)
        .unwrap();
    let schedule = profile.schedule(Arrivals::Constant, 1).unwrap();
    // The server serves 50 rps: the spike builds a queue.
    let mut server = SimServer {
        service: 0.02,
        stall: None,
        free_at: 0.0,
    };
    let book = simulate(profile, &schedule, &mut server, 100_000, 0.0);
    let s = book.summary();
    let names: Vec<&str> = s.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["before", "spike", "after"]);
    assert_eq!(s.phases[0].offered, 60);
    assert_eq!(s.phases[1].offered, 600);
    assert_eq!(s.phases[2].offered, 60);
    // Every spike arrival is counted in the spike, even those served later.
    assert_eq!(s.phases[1].ok, 600);
    // The server completes 50/s during the spike: that is its peak.
    let spike = &s.phases[1];
    assert!(
        (spike.peak_sustained_per_s - 50.0).abs() <= 1.0,
        "{spike:?}"
    );
    assert!((spike.completed_per_s - 50.0).abs() <= 1.0, "{spike:?}");
    // The queue built during the spike makes the after phase slow too.
    assert!(s.phases[2].latency_ms.p50 > 1000.0, "{:?}", s.phases[2]);
    assert!(s.phases[0].latency_ms.p99 < 25.0, "{:?}", s.phases[0]);
    // The spike's latency grows over the phase: 300 requests' backlog at 50/s.
    assert!(spike.latency_ms.max > 5_000.0, "{spike:?}");
    // The timeline has the offered load of the profile.
    assert_eq!(s.timeline[3].offered, 10);
    assert_eq!(s.timeline[7].offered, 100);
    assert_eq!(s.timeline[7].offered_rate, 100.0);
}

#[test]
fn peak_sustained_takes_whole_seconds_inside_the_window() {
    let per_second = [0, 10, 20, 30, 40, 50, 60, 0, 0];
    // Seconds 1..7: the best 5-second mean is (20+30+40+50+60)/5 = 40.
    assert_eq!(peak_sustained(&per_second, 1.0, 7.0), 40.0);
    // Fewer than 5 whole seconds: their mean.
    assert_eq!(peak_sustained(&per_second, 0.5, 3.5), 15.0);
    assert_eq!(peak_sustained(&per_second, 3.2, 3.9), 0.0);
    assert_eq!(peak_sustained(&per_second, 5.0, 50.0), 27.5);
}

#[test]
fn unfinished_requests_are_failures_at_the_end() {
    let profile = Profile::constant(10.0, 1.0);
    let mut book = Book::new(profile, 100);
    let Admission::Send(a) = book.arrival(secs(0.0)) else {
        panic!()
    };
    let Admission::Send(b) = book.arrival(secs(0.1)) else {
        panic!()
    };
    book.completion(a, secs(0.05), None);
    book.finish(secs(3.0));
    let s = book.summary();
    assert_eq!(s.ok, 1);
    assert_eq!(s.errors[UNFINISHED], 1);
    assert_eq!(book.in_flight(), 0);
    // A completion after the end is ignored (the slot is gone).
    book.completion(b, secs(4.0), None);
    assert_eq!(book.summary().ok, 1);
}

#[test]
fn queue_samples_land_in_their_second() {
    let mut book = Book::new(Profile::constant(1.0, 3.0), 1);
    book.queue_sample(secs(0.25), Some(2.0));
    book.queue_sample(secs(0.5), Some(4.0));
    book.queue_sample(secs(0.75), None);
    book.queue_sample(secs(2.1), Some(7.0));
    let s = book.summary();
    assert_eq!(s.timeline[0].queue_depth_mean, Some(3.0));
    assert_eq!(s.timeline[0].queue_depth_max, Some(4.0));
    assert_eq!(s.timeline[1].queue_depth_mean, None);
    assert_eq!(s.timeline[2].queue_depth_max, Some(7.0));
    assert_eq!(s.queue_depth.len(), 4);
    assert_eq!(book.last_queue_depth(), Some(7.0));
}
