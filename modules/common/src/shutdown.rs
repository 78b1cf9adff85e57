//! Process-wide shutdown: one trigger, many listeners.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

/// The trigger side: call [`Shutdown::trigger`] once to start shutting down.
#[derive(Clone)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

/// The listening side: cheap to clone, resolves once shutdown has begun.
#[derive(Clone)]
pub struct ShutdownSignal {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A new, untriggered shutdown.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Shutdown { tx }
    }

    /// Starts shutdown; every signal resolves. Idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// A listener for this shutdown.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            rx: self.tx.subscribe(),
        }
    }

    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownSignal {
    /// Resolves when shutdown begins (at once if it already has).
    pub async fn wait(mut self) {
        // An error means the trigger side is gone, which also means shutdown.
        let _ = self.rx.wait_for(|triggered| *triggered).await;
    }

    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Ticks every `period` until shutdown: the loop of a periodic task.
    pub fn ticks(&self, period: Duration) -> Ticks {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ticks {
            interval,
            signal: self.clone(),
        }
    }
}

/// A periodic task's clock: `while ticks.next().await { work }`. The first
/// tick is at once; a late one delays the next rather than bunching them.
pub struct Ticks {
    interval: Interval,
    signal: ShutdownSignal,
}

impl Ticks {
    /// Waits for the next tick; false once shutdown has begun.
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.interval.tick() => true,
            _ = self.signal.clone().wait() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signals_resolve_after_trigger_even_late_subscribers() {
        let shutdown = Shutdown::new();
        let early = shutdown.signal();
        assert!(!early.is_triggered());
        shutdown.trigger();
        early.wait().await;
        shutdown.signal().wait().await;
        assert!(shutdown.is_triggered());
    }
}
