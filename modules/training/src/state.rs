//! The states of runs and steps, as stored and shown.

use crate::error::TrainingError;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunState {
    /// Submitted, no step started yet.
    #[default]
    Pending,
    /// At least one step started and the run has not ended.
    Running,
    /// Every step succeeded or was skipped.
    Succeeded,
    /// A step failed (after its retries), or the run timed out.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

/// Where a step instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepState {
    /// Waiting for its dependencies or for a slot.
    #[default]
    Pending,
    /// An attempt is running.
    Running,
    /// Ended with exit code 0 (or a built-in that completed).
    Succeeded,
    /// Failed with no retry left.
    Failed,
    /// Failed; the next attempt waits for its backoff.
    Retrying,
    /// Its `when` was false, or a dependency did not succeed.
    Skipped,
    /// The run was cancelled before it ended.
    Cancelled,
}

macro_rules! names {
    ($t:ty, $what:literal, $($v:ident = $s:literal),+) => {
        impl $t {
            /// The stored, lowercase name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }

            /// Parses a stored name.
            pub fn parse(text: &str) -> Result<Self, TrainingError> {
                match text {
                    $($s => Ok(Self::$v),)+
                    other => Err(TrainingError::Invalid(format!(
                        concat!("unknown ", $what, " state '{}' (", $($s, " "),+, ")"), other
                    ))),
                }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(
    RunState,
    "run",
    Pending = "pending",
    Running = "running",
    Succeeded = "succeeded",
    Failed = "failed",
    Cancelled = "cancelled"
);
names!(
    StepState,
    "step",
    Pending = "pending",
    Running = "running",
    Succeeded = "succeeded",
    Failed = "failed",
    Retrying = "retrying",
    Skipped = "skipped",
    Cancelled = "cancelled"
);

impl RunState {
    /// The run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }
}

impl StepState {
    /// The instance has ended and will not run again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepState::Succeeded | StepState::Failed | StepState::Skipped | StepState::Cancelled
        )
    }

    /// Downstream steps may run after it.
    pub fn lets_dependents_run(self) -> bool {
        matches!(self, StepState::Succeeded | StepState::Skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [
            "pending",
            "running",
            "succeeded",
            "failed",
            "retrying",
            "skipped",
            "cancelled",
        ] {
            assert_eq!(StepState::parse(s).unwrap().as_str(), s);
        }
        for s in ["pending", "running", "succeeded", "failed", "cancelled"] {
            assert_eq!(RunState::parse(s).unwrap().as_str(), s);
        }
        assert!(RunState::parse("retrying").is_err());
    }
}
