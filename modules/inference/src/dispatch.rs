//! Where a served version's requests go: its own scheduler (a model) or its
//! steps (an ensemble). Both take a request the same way, so the request path
//! does not tell them apart.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ensemble::{Ensemble, StepScheduling};
use crate::error::Result;
use crate::scheduler::{Reply, Scheduler, Ticket};
use crate::tensor::RequestInputs;

/// A served version's way of running requests.
pub enum Dispatch {
    /// A model: its dynamic batcher and instances.
    Model(Scheduler),
    /// An ensemble: its composing models' schedulers, step by step.
    Ensemble(Arc<Ensemble>),
}

/// A request taken by a [`Dispatch`]; dropping it abandons the request.
pub enum DispatchTicket {
    /// Queued at a model's scheduler.
    Model(Ticket),
    /// An ensemble request, run when it is waited for.
    Ensemble {
        /// The ensemble.
        ensemble: Arc<Ensemble>,
        /// Its inputs.
        inputs: RequestInputs,
        /// Priority, timeout and deadline every step gets.
        scheduling: StepScheduling,
    },
}

impl Dispatch {
    /// Takes a validated request held to the caller's `deadline` too: a
    /// model queues it (failing at once when its queue is full or it is
    /// predicted to finish late, see [`Scheduler::enqueue_until`]); an
    /// ensemble runs it when it is waited for.
    pub fn enqueue(
        &self,
        inputs: RequestInputs,
        priority: u32,
        timeout: Option<Duration>,
        deadline: Option<Instant>,
    ) -> Result<DispatchTicket> {
        match self {
            Dispatch::Model(scheduler) => scheduler
                .enqueue_until(inputs, priority, timeout, deadline)
                .map(DispatchTicket::Model),
            Dispatch::Ensemble(ensemble) => Ok(DispatchTicket::Ensemble {
                ensemble: ensemble.clone(),
                inputs,
                scheduling: StepScheduling {
                    priority,
                    timeout,
                    deadline,
                },
            }),
        }
    }

    /// The ensemble, when this is one.
    pub fn ensemble(&self) -> Option<&Arc<Ensemble>> {
        match self {
            Dispatch::Ensemble(ensemble) => Some(ensemble),
            Dispatch::Model(_) => None,
        }
    }
}

impl DispatchTicket {
    /// Waits for the answer: every output of the model, in model order.
    pub fn wait(self) -> Pin<Box<dyn Future<Output = Reply> + Send>> {
        match self {
            DispatchTicket::Model(ticket) => Box::pin(ticket.wait()),
            // Boxed: an ensemble step may itself be an ensemble.
            DispatchTicket::Ensemble {
                ensemble,
                inputs,
                scheduling,
            } => Box::pin(async move { ensemble.run(inputs, scheduling).await }),
        }
    }
}
