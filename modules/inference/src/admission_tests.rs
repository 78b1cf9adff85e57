//! Admission on a fake clock: the predictor's own checks, and a property
//! test against a simulated batcher that shares the predictor.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn offer(rows: usize, capacity: usize, budget: Option<Duration>) -> Offer {
    Offer {
        level: 0,
        rows,
        capacity,
        budget,
    }
}

#[test]
fn the_cost_fit_recovers_a_fixed_and_a_per_row_cost() {
    let mut cost = BatchCost::default();
    assert_eq!(cost.estimate(4), None, "nothing measured yet");
    cost.record(2, ms(20));
    assert_eq!(cost.estimate(8), Some(ms(20)), "one size seen: its time");
    for rows in [1, 8, 4, 2, 8, 1, 6, 3, 8, 5] {
        cost.record(rows, ms(10) + ms(5) * rows as u32);
    }
    for rows in [1, 8, 16] {
        let want = (ms(10) + ms(5) * rows as u32).as_secs_f64();
        let got = cost.estimate(rows).unwrap().as_secs_f64();
        assert!((got - want).abs() < 1e-3, "{rows} rows: {got} vs {want}");
    }
}

#[test]
fn a_cold_model_admits_everything() {
    let admission = Admission::new(1, 1, Duration::ZERO);
    let now = Instant::now();
    for _ in 0..100 {
        let verdict = admission.offer(now, offer(1, 1, Some(Duration::from_nanos(1))));
        assert!(verdict.is_admit());
    }
}

#[test]
fn an_idle_model_admits_a_request_longer_than_its_deadline_and_refuses_the_next() {
    let admission = Admission::new(1, 1, Duration::ZERO);
    let now = Instant::now();
    admission.finish(0, 1, ms(300));
    let first = admission.offer(now, offer(1, 1, Some(ms(100))));
    assert_eq!(
        first,
        Verdict::Admit {
            predicted: Some(ms(300)),
            raw: Some(ms(300))
        },
        "it would start at once: refusing it makes room for nobody"
    );
    let second = admission.offer(now, offer(1, 1, Some(ms(100))));
    assert!(
        matches!(second, Verdict::Refuse { predicted, .. } if predicted == ms(600)),
        "{second:?}"
    );
    admission.leave(0, 1);
    admission.start(0, now, 1);
    let behind_a_running_batch = admission.offer(now, offer(1, 1, Some(ms(100))));
    assert!(!behind_a_running_batch.is_admit(), "no instance is idle");
}

#[test]
fn queued_work_refuses_a_short_deadline_with_the_time_it_is_late_by() {
    let admission = Admission::new(1, 1, Duration::ZERO);
    let now = Instant::now();
    admission.start(0, now, 4);
    admission.finish(0, 4, ms(300));
    for _ in 0..8 {
        assert!(admission.offer(now, offer(1, 4, None)).is_admit());
    }
    // Two full batches ahead, its own third: 900 ms.
    let wait = admission.predicted_wait(now, offer(1, 4, None));
    assert_eq!(wait, Some(ms(900)));
    let refused = admission.offer(now, offer(1, 4, Some(ms(100))));
    assert_eq!(
        refused,
        Verdict::Refuse {
            predicted: ms(900),
            drain: ms(800),
        }
    );
    let far = admission.offer(now, offer(1, 4, Some(ms(4000))));
    assert!(far.is_admit());
    admission.leave(0, 5); // one full batch left ahead
    let late = admission.offer(now, offer(1, 4, Some(Duration::from_nanos(1))));
    assert!(
        matches!(late, Verdict::Refuse { predicted, drain } if drain == predicted - Duration::from_nanos(1)),
        "the time past its deadline, unrounded: {late:?}"
    );
}

#[test]
fn higher_levels_count_and_lower_ones_do_not() {
    let admission = Admission::new(2, 1, Duration::ZERO);
    let now = Instant::now();
    admission.finish(0, 1, ms(100));
    let low = Offer {
        level: 1,
        ..offer(1, 1, None)
    };
    for _ in 0..5 {
        admission.offer(now, low);
    }
    let high = Offer {
        level: 0,
        ..offer(1, 1, None)
    };
    assert_eq!(admission.predicted_wait(now, high), Some(ms(100)));
    assert_eq!(admission.predicted_wait(now, low), Some(ms(600)));
}

#[test]
fn a_running_batch_delays_the_next_until_it_ends() {
    let admission = Admission::new(1, 2, Duration::ZERO);
    let now = Instant::now();
    admission.finish(0, 2, ms(50));
    admission.start(0, now, 2);
    assert_eq!(
        admission.predicted_wait(now, offer(1, 2, None)),
        Some(ms(50))
    );
    admission.start(1, now, 2);
    let later = now + ms(20);
    assert_eq!(
        admission.predicted_wait(later, offer(1, 2, None)),
        Some(ms(80)),
        "30 ms left of the first batch, then 50 of its own"
    );
}

#[test]
fn predictions_that_ran_late_are_scaled_up_and_early_ones_are_not() {
    let admission = Admission::new(1, 1, Duration::ZERO);
    let now = Instant::now();
    admission.start(0, now, 4);
    admission.finish(0, 4, ms(100));
    admission.start(0, now, 4);
    // Three requests queued behind the running batch: the next one is
    // predicted to finish at 100 ms (the batch) + 100 ms (its own).
    let budget = Some(ms(210));
    let raw = ms(200);
    assert!(admission.offer(now, offer(1, 4, budget)).is_admit());
    admission.leave(0, 1);
    // Early answers leave predictions as they are.
    let early: Vec<(Instant, Duration)> = (0..2_000).map(|_| (now, ms(400))).collect();
    admission.observe(now + ms(100), &early);
    assert_eq!(admission.predicted_wait(now, offer(1, 4, None)), Some(raw));
    // Answers 10% late: predictions grow by about that much, so a request
    // that fits its deadline only by the raw prediction is refused.
    let late: Vec<(Instant, Duration)> = (0..2_000).map(|_| (now, ms(100))).collect();
    admission.observe(now + ms(110), &late);
    let scaled = admission.predicted_wait(now, offer(1, 4, None)).unwrap();
    assert!(scaled > ms(215) && scaled < ms(230), "{scaled:?}");
    let verdict = admission.offer(now, offer(1, 4, budget));
    assert!(
        matches!(verdict, Verdict::Refuse { predicted, .. } if predicted == scaled),
        "{verdict:?}"
    );
}

/// One generated workload for the simulated batcher.
#[derive(Debug, Clone)]
struct Case {
    instances: usize,
    rows: usize,
    capacity: usize,
    service: Duration,
    /// (gap after the previous arrival, deadline budget) per request.
    requests: Vec<(Duration, Option<Duration>)>,
}

/// When each request arrived, whether it was admitted, when it started and
/// finished.
struct Outcome {
    arrived: Vec<Instant>,
    admitted: Vec<bool>,
    started: Vec<Option<Instant>>,
    finished: Vec<Option<Instant>>,
}

/// Runs `case` through a batcher on a fake clock: FIFO, greedy batches of up
/// to `capacity` rows, the instance that frees first taking the next batch,
/// every batch taking `service`. Admission decides with the shared
/// predictor, or, with `forced`, exactly the requests it names are admitted.
fn simulate(case: &Case, forced: Option<&[bool]>) -> Outcome {
    let base = Instant::now();
    let admission = Admission::new(1, case.instances, Duration::ZERO);
    // A warm-up batch, as a model's load runs one: the cost is measured.
    admission.start(0, base, case.capacity);
    admission.finish(0, case.capacity, case.service);
    let n = case.requests.len();
    let mut arrived = Vec::with_capacity(n);
    let mut at = base;
    for (gap, _) in &case.requests {
        at += *gap;
        arrived.push(at);
    }
    let mut outcome = Outcome {
        arrived,
        admitted: vec![false; n],
        started: vec![None; n],
        finished: vec![None; n],
    };
    let mut busy: Vec<Option<(Instant, Vec<usize>)>> = vec![None; case.instances];
    let mut queue: VecDeque<usize> = VecDeque::new();
    let mut next = 0;
    loop {
        let ending = busy
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.as_ref().map(|(end, _)| (*end, i)))
            .min();
        let arriving = outcome.arrived.get(next).copied();
        let now = match (ending, arriving) {
            (None, None) => break,
            (Some((end, i)), a) if a.is_none_or(|a| end <= a) => {
                let (_, ran) = busy[i].take().unwrap_or((end, Vec::new()));
                for r in &ran {
                    outcome.finished[*r] = Some(end);
                }
                admission.finish(i, ran.len() * case.rows, case.service);
                end
            }
            (_, Some(at)) => {
                let budget = case.requests[next].1;
                let admit = match forced {
                    Some(set) => {
                        set[next]
                            && admission
                                .offer(at, offer(case.rows, case.capacity, None))
                                .is_admit()
                    }
                    None => admission
                        .offer(at, offer(case.rows, case.capacity, budget))
                        .is_admit(),
                };
                if admit {
                    outcome.admitted[next] = true;
                    queue.push_back(next);
                }
                next += 1;
                at
            }
            (Some(_), None) => unreachable!("an end with no arrival is taken above"),
        };
        for (i, slot) in busy.iter_mut().enumerate() {
            if slot.is_some() || queue.is_empty() {
                continue;
            }
            let mut batch = Vec::new();
            while !queue.is_empty() && (batch.len() + 1) * case.rows <= case.capacity {
                let r = queue.pop_front().unwrap_or_default();
                admission.leave(0, case.rows);
                batch.push(r);
            }
            admission.start(i, now, batch.len() * case.rows);
            for r in &batch {
                outcome.started[*r] = Some(now);
            }
            *slot = Some((now + case.service, batch));
        }
    }
    outcome
}

fn cases() -> impl Strategy<Value = Case> {
    (1usize..=4, 1usize..=3, 1usize..=4, 1u64..=20).prop_flat_map(
        |(instances, rows, per_batch, service)| {
            let request = (0u64..=12, prop::option::weighted(0.9, 1u64..=250));
            prop::collection::vec(request, 1..60).prop_map(move |requests| Case {
                instances,
                rows,
                capacity: rows * per_batch,
                service: ms(service),
                requests: requests
                    .into_iter()
                    .map(|(gap, budget)| (ms(gap), budget.map(ms)))
                    .collect(),
            })
        },
    )
}

proptest! {
    /// No admitted request misses its deadline or goes unanswered, and a
    /// request refused for its deadline would have missed it: admitted
    /// alongside exactly the requests that were, it finishes too late.
    #[test]
    fn refused_requests_would_have_been_late_and_admitted_ones_are_not(case in cases()) {
        let run = simulate(&case, None);
        for (r, (_, budget)) in case.requests.iter().enumerate() {
            if run.admitted[r] {
                let finished = run.finished[r];
                prop_assert!(finished.is_some(), "admitted request {r} was never run");
                // One that started on arrival was admitted whatever its
                // budget (an idle model never refuses).
                let at_once = run.started[r] == Some(run.arrived[r]);
                if let (Some(budget), Some(finished), false) = (budget, finished, at_once) {
                    prop_assert!(
                        finished <= run.arrived[r] + *budget,
                        "admitted request {r} finished {:?} after its deadline",
                        finished - (run.arrived[r] + *budget)
                    );
                }
                continue;
            }
            let Some(budget) = budget else {
                prop_assert!(false, "request {r} had no deadline yet was refused");
                continue;
            };
            let mut with_it = run.admitted.clone();
            with_it[r] = true;
            let counterfactual = simulate(&case, Some(&with_it));
            let finished = counterfactual.finished[r];
            prop_assert!(finished.is_some());
            let deadline = run.arrived[r] + *budget;
            prop_assert!(
                finished.is_some_and(|f| f > deadline),
                "refused request {r} would have finished in time ({:?} before)",
                deadline.saturating_duration_since(finished.unwrap_or(deadline))
            );
        }
    }
}
