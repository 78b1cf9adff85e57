use std::sync::mpsc;
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use super::*;
use crate::error::InferenceError;

/// A thread running a single-threaded runtime that installed a home.
struct HomeThread {
    home: Arc<ReplyHome>,
    runtime: tokio::runtime::Handle,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

fn home_thread() -> HomeThread {
    let (started, handle) = mpsc::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::spawn(install_here());
            let here = (current().unwrap(), tokio::runtime::Handle::current());
            started.send(here).unwrap();
            let _ = stopped.await;
        });
    });
    let (home, runtime) = handle.recv().unwrap();
    HomeThread {
        home,
        runtime,
        stop,
        thread,
    }
}

fn is_timeout(reply: &Reply) -> bool {
    matches!(reply, Err(InferenceError::Timeout))
}

/// The answers for a home wait until the batch's outbox is sent, then all
/// arrive, each to its own caller, on the home's thread.
#[test]
fn a_homes_answers_arrive_together_when_the_outbox_is_sent() {
    let home = home_thread();
    let (first, first_answer) = oneshot::channel();
    let (second, second_answer) = oneshot::channel();
    let (done, answered) = mpsc::channel::<(Reply, Reply, ThreadId)>();
    home.runtime.spawn(async move {
        let first = first_answer.await.unwrap();
        let second = second_answer.await.unwrap();
        done.send((first, second, std::thread::current().id()))
            .unwrap();
    });
    let mut outbox = Outbox::default();
    outbox.answer(Some(home.home.clone()), first, Ok(Vec::new()));
    outbox.answer(
        Some(home.home.clone()),
        second,
        Err(InferenceError::Timeout),
    );
    assert!(
        answered.recv_timeout(Duration::from_millis(20)).is_err(),
        "answered before the outbox was sent"
    );
    assert!(home.home.lock().is_empty());
    drop(outbox);
    let (first, second, thread) = answered.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(first.unwrap().is_empty());
    assert!(is_timeout(&second));
    assert_eq!(thread, home.thread.thread().id());
}

/// A caller without a home is answered at once, as a plain channel send.
#[test]
fn a_caller_without_a_home_is_answered_at_once() {
    assert!(current().is_none());
    let (reply, mut answer) = oneshot::channel();
    let mut outbox = Outbox::default();
    outbox.answer(current(), reply, Err(InferenceError::Timeout));
    assert!(is_timeout(&answer.try_recv().unwrap()));
    drop(outbox);
}

/// Answers for a home whose runtime has stopped are dropped with it: the
/// instance never blocks or fails on them.
#[test]
fn answers_for_a_stopped_home_are_dropped() {
    let HomeThread {
        home, stop, thread, ..
    } = home_thread();
    stop.send(()).unwrap();
    thread.join().unwrap();
    let (reply, mut answer) = oneshot::channel();
    let mut outbox = Outbox::default();
    outbox.answer(Some(home), reply, Ok(Vec::new()));
    drop(outbox);
    assert!(matches!(
        answer.try_recv(),
        Err(oneshot::error::TryRecvError::Closed)
    ));
}
