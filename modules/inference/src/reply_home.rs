//! Answers delivered to the thread that asked for them, one wake-up per
//! batch.
//!
//! A model instance answers a request by sending on the request's oneshot
//! channel, which wakes the task waiting on it. When that task runs on a
//! single-threaded runtime (an HTTP I/O thread), every such wake-up from the
//! instance's thread writes the runtime's eventfd and brings the thread back
//! out of `epoll_wait`: a pair of system calls per answer, busy or not. A
//! thread that installs a home with [`install_here`] gets a batch's answers
//! for its requests as one delivery instead: the instance puts them in the
//! home's inbox and wakes the home's delivery task once, and that task
//! sends each answer on the thread itself, where the wake-ups are local and
//! cost no system call.

use std::cell::RefCell;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, Notify};

use crate::scheduler::Reply;

/// An answer and the channel its caller waits on.
type Answer = (oneshot::Sender<Reply>, Reply);

/// The inbox of one thread's answers.
#[derive(Debug, Default)]
pub struct ReplyHome {
    inbox: Mutex<Vec<Answer>>,
    arrived: Notify,
}

thread_local! {
    static HOME: RefCell<Option<Arc<ReplyHome>>> = const { RefCell::new(None) };
}

/// Makes this thread the home of the answers to the requests queued on it,
/// and gives back the task that delivers them. Spawn that task on this
/// thread's single-threaded runtime (it runs until the runtime stops);
/// answers that arrive after the runtime has stopped are dropped with the
/// home, and their callers, gone with the runtime, never wait for them.
pub fn install_here() -> impl Future<Output = ()> + Send + 'static {
    let home = Arc::new(ReplyHome::default());
    HOME.with(|slot| *slot.borrow_mut() = Some(home.clone()));
    deliver(home)
}

/// The home of the current thread, if it installed one.
pub(crate) fn current() -> Option<Arc<ReplyHome>> {
    HOME.with(|slot| slot.borrow().clone())
}

async fn deliver(home: Arc<ReplyHome>) {
    let mut taken = Vec::new();
    loop {
        home.arrived.notified().await;
        std::mem::swap(&mut *home.lock(), &mut taken);
        for (reply, answer) in taken.drain(..) {
            let _ = reply.send(answer);
        }
    }
}

impl ReplyHome {
    fn lock(&self) -> MutexGuard<'_, Vec<Answer>> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A batch's answers, gathered by home and sent when dropped: those whose
/// callers have no home at once, the others as one delivery per home.
#[derive(Default)]
pub(crate) struct Outbox {
    homes: Vec<(Arc<ReplyHome>, Vec<Answer>)>,
}

impl Outbox {
    /// Answers a caller, now (no `home`) or with the rest of its home's.
    pub(crate) fn answer(
        &mut self,
        home: Option<Arc<ReplyHome>>,
        reply: oneshot::Sender<Reply>,
        answer: Reply,
    ) {
        let Some(home) = home else {
            let _ = reply.send(answer);
            return;
        };
        match self.homes.iter_mut().find(|(h, _)| Arc::ptr_eq(h, &home)) {
            Some((_, answers)) => answers.push((reply, answer)),
            None => self.homes.push((home, vec![(reply, answer)])),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        for (home, answers) in self.homes.drain(..) {
            home.lock().extend(answers);
            home.arrived.notify_one();
        }
    }
}

#[cfg(test)]
#[path = "reply_home_tests.rs"]
mod tests;
