//! Open-loop load (as wrk2): requests go out at the times of a schedule
//! computed beforehand, whether or not earlier ones were answered, and each
//! request's latency runs from the time the schedule said to send it.
//!
//! A pacer thread sleeps until each arrival is due (`std::thread::sleep`,
//! tens of microseconds late at most on an idle machine, where the tokio
//! timer would round to the next millisecond) and hands it to the runtime.
//! The runtime admits it (or drops it at `--max-in-flight`), takes an idle
//! connection (HTTP/1.1 carries one request at a time, so there are as many
//! connections as requests outstanding; `--warm-connections` opens a pool
//! before the start, more open on demand) or a handle on the shared gRPC
//! channel, and sends it in a task of its own. Completions come back on a
//! channel to the one place that keeps the books ([`Book`]).
//!
//! With `--connections N` the pool is fixed, as wrk2's: at most N requests
//! are on the wire, and an arrival that finds every connection busy waits in
//! the client, first come first served, for the next one free. Its latency
//! still runs from its scheduled time (no coordinated omission), and the wait
//! shows as send lag.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use crate::live::Live;
use crate::profile::Profile;
use crate::scrape;
use crate::target::{Client, Outcome, Target};
use crate::timeline::{Admission, Book, Token, TIMEOUT};

/// The shape of an open-loop run.
#[derive(Debug, Clone)]
pub struct OpenPlan {
    /// The profile (phases, rates).
    pub profile: Profile,
    /// When each request is due, from the start.
    pub schedule: Arc<[Duration]>,
    /// Most requests outstanding; arrivals beyond are dropped and counted.
    pub max_in_flight: usize,
    /// A request unanswered this long fails as a timeout.
    pub timeout: Duration,
    /// After the last arrival, how long to wait for outstanding answers.
    pub drain: Duration,
    /// Prometheus endpoint to sample the queue depth from.
    pub metrics_url: Option<String>,
    /// The gauge to sum.
    pub metric: String,
    /// HTTP connections opened before the first arrival (a kept-alive
    /// pool); more open on demand.
    pub warm_connections: usize,
    /// At most this many requests on the wire (connections, for HTTP);
    /// arrivals beyond wait in the client. `None`: one per outstanding request.
    pub connections: Option<usize>,
    /// The pacer wakes at most once per this long (zero: for every arrival).
    pub pace_quantum: Duration,
}

/// The connections of a run: idle ones, how many exist, and the arrivals
/// waiting for one when the pool is full.
struct Pool {
    idle: Vec<Client>,
    open: usize,
    limit: usize,
    waiting: VecDeque<(usize, Token)>,
}

impl Pool {
    /// An idle connection, or a new one while under the limit.
    fn take(&mut self, target: &Target) -> Option<Client> {
        if let Some(client) = self.idle.pop() {
            return Some(client);
        }
        (self.open < self.limit).then(|| {
            self.open += 1;
            target.client()
        })
    }

    /// A request ended; its connection comes back unless it was dropped.
    fn put(&mut self, client: Option<Client>) {
        match client {
            Some(client) => self.idle.push(client),
            None => self.open -= 1,
        }
    }
}

struct Done {
    token: Token,
    at: Duration,
    outcome: Outcome,
    client: Option<Client>,
}

/// Runs `plan` against `target`; returns the books.
pub async fn run(target: &Target, plan: &OpenPlan, mut live: Live) -> Book {
    let mut book = Book::new(plan.profile.clone(), plan.max_in_flight);
    let schedule = plan.schedule.clone();
    let limit = plan.connections.unwrap_or(usize::MAX).max(1);
    let mut pool = Pool {
        idle: Vec::new(),
        open: 0,
        limit,
        waiting: VecDeque::new(),
    };
    for _ in 0..plan.warm_connections.min(plan.max_in_flight).min(limit) {
        let mut client = target.client();
        client.warm().await;
        pool.idle.push(client);
        pool.open += 1;
    }
    // A short lead, so the first arrival is not already late.
    let start = Instant::now() + Duration::from_millis(20);
    let (arrival_tx, mut arrivals) = unbounded_channel::<usize>();
    let pacer = {
        let (schedule, quantum) = (schedule.clone(), plan.pace_quantum);
        std::thread::Builder::new()
            .name("loadgen-pacer".into())
            .spawn(move || pace(&schedule, start, quantum, &arrival_tx))
            .expect("spawn the pacer thread")
    };
    let (done_tx, mut done_rx) = unbounded_channel::<Done>();
    let (queue_tx, mut queue_rx) = unbounded_channel();
    let scraper = plan.metrics_url.clone().map(|url| {
        let (metric, tx) = (plan.metric.clone(), queue_tx.clone());
        tokio::spawn(async move {
            if let Err(err) = scrape::run(url, metric, start, tx).await {
                eprintln!("loadgen: queue-depth sampling is off: {err:#}");
            }
        })
    });
    let mut batch = Vec::with_capacity(512);
    let mut ticker = tokio::time::interval(crate::live::REFRESH);
    let mut pacing = true;
    let mut deadline = tokio::time::Instant::now() + Duration::from_secs(1 << 30);
    loop {
        if !pacing && book.in_flight() == 0 {
            break;
        }
        tokio::select! {
            biased;
            Some(done) = done_rx.recv() => {
                let failure = match &done.outcome {
                    Outcome::Ok => None,
                    Outcome::Failed { label, detail, retry_after } => {
                        if let Some(secs) = retry_after {
                            book.retry_after(done.at, *secs);
                        }
                        Some((label.as_str(), detail.as_str()))
                    }
                };
                book.completion(done.token, done.at, failure);
                pool.put(done.client);
                while !pool.waiting.is_empty() {
                    let Some(client) = pool.take(target) else { break };
                    let (i, token) = pool.waiting.pop_front().expect("a waiting arrival");
                    book.sent(token, start.elapsed());
                    send(client, i, token, start, plan.timeout, done_tx.clone());
                }
            }
            n = arrivals.recv_many(&mut batch, 512), if pacing => {
                if n == 0 {
                    pacing = false;
                    deadline = tokio::time::Instant::now() + plan.drain;
                    continue;
                }
                for i in batch.drain(..) {
                    let Admission::Send(token) = book.arrival(schedule[i]) else {
                        continue;
                    };
                    let free = if pool.waiting.is_empty() { pool.take(target) } else { None };
                    match free {
                        Some(client) => {
                            book.sent(token, start.elapsed());
                            send(client, i, token, start, plan.timeout, done_tx.clone());
                        }
                        None => pool.waiting.push_back((i, token)),
                    }
                }
            }
            Some((at, depth)) = queue_rx.recv() => book.queue_sample(at, depth),
            _ = ticker.tick() => live.draw(&book, start.elapsed()),
            _ = tokio::time::sleep_until(deadline), if !pacing => break,
        }
    }
    book.finish(start.elapsed());
    live.finish();
    drop(arrivals);
    let _ = pacer.join();
    if let Some(scraper) = scraper {
        scraper.abort();
    }
    drop(queue_tx);
    book
}

/// Sends request `i` on `client` in a task of its own; its outcome (and the
/// connection, unless it timed out mid-request) comes back on `done`.
fn send(
    mut client: Client,
    i: usize,
    token: Token,
    start: Instant,
    timeout: Duration,
    done: UnboundedSender<Done>,
) {
    tokio::spawn(async move {
        let outcome = tokio::time::timeout(timeout, client.infer(i)).await;
        let at = start.elapsed();
        let (outcome, client) = match outcome {
            Ok(outcome) => (outcome, Some(client)),
            // The connection is mid-request: drop it.
            Err(_) => (
                Outcome::Failed {
                    label: TIMEOUT.into(),
                    detail: format!("no answer within {timeout:?}"),
                    retry_after: None,
                },
                None,
            ),
        };
        let _ = done.send(Done {
            token,
            at,
            outcome,
            client,
        });
    });
}

/// Hands out arrival `i` when it is due, until the schedule ends or the
/// receiver is gone. The pacer wakes at most once per `quantum` (zero: for
/// every arrival), handing out everything due by then: an arrival goes out
/// late by less than `quantum`, never early, and its latency still counts
/// from when it was due.
fn pace(
    schedule: &[Duration],
    start: Instant,
    quantum: Duration,
    tx: &tokio::sync::mpsc::UnboundedSender<usize>,
) {
    // Linux lets a sleeping thread wake up to 50 us late ("timer slack");
    // 1 ns makes the pacer's sleeps end on time.
    // SAFETY: PR_SET_TIMERSLACK takes an integer and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    let mut next_wake = start;
    for (i, &at) in schedule.iter().enumerate() {
        let due = start + at;
        if Instant::now() < due {
            let wake = due.max(next_wake);
            loop {
                let now = Instant::now();
                if now >= wake {
                    break;
                }
                std::thread::sleep(wake - now);
            }
            next_wake = Instant::now() + quantum;
        }
        if tx.send(i).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arrivals handed out by a pacer with `quantum`, each with when it came.
    fn paced(schedule: &[Duration], quantum: Duration) -> (Instant, Vec<(usize, Instant)>) {
        let (tx, mut rx) = unbounded_channel();
        let start = Instant::now() + Duration::from_millis(5);
        let receiver = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(i) = rx.blocking_recv() {
                got.push((i, Instant::now()));
            }
            got
        });
        pace(schedule, start, quantum, &tx);
        drop(tx);
        (start, receiver.join().expect("the receiver thread"))
    }

    #[test]
    fn a_quantum_sends_every_arrival_in_order_and_none_early() {
        let schedule: Vec<Duration> = (0..50).map(|i| Duration::from_micros(i * 100)).collect();
        for quantum in [Duration::ZERO, Duration::from_millis(1)] {
            let (start, got) = paced(&schedule, quantum);
            assert_eq!(
                got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                (0..50).collect::<Vec<_>>()
            );
            for (i, at) in got {
                assert!(at >= start + schedule[i], "arrival {i} went out early");
            }
        }
    }
}
