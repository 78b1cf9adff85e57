//! A one-line progress bar on stderr: phase, elapsed time, the recent rate
//! and errors. Drawn only when stderr is a terminal (or when forced), so logs
//! and captured output stay clean.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is redrawn.
pub const REFRESH: Duration = Duration::from_millis(500);

const WIDTH: usize = 24;

/// The progress line of one run.
pub struct Progress {
    label: String,
    started: Instant,
    warmup: Duration,
    total: Duration,
    enabled: bool,
    last: Option<(Instant, u64)>,
}

impl Progress {
    /// A line for a run of `warmup` then `duration`, drawn when `show` is
    /// true and stderr is a terminal.
    pub fn new(label: String, warmup: Duration, duration: Duration, show: bool) -> Progress {
        Progress {
            label,
            started: Instant::now(),
            warmup,
            total: warmup + duration,
            enabled: show && std::io::stderr().is_terminal(),
            last: None,
        }
    }

    /// Redraws the line for `done` requests so far, each of `items`
    /// inferences, `errors` of them failed.
    pub fn draw(&mut self, done: u64, errors: u64, items: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let rate = match self.last {
            Some((at, count)) if now > at => {
                (done - count) as f64 * items as f64 / (now - at).as_secs_f64()
            }
            _ => 0.0,
        };
        self.last = Some((now, done));
        let elapsed = now - self.started;
        let phase = if elapsed < self.warmup {
            "warmup"
        } else {
            "measure"
        };
        let line = render(&self.label, phase, elapsed, self.total, rate, errors);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.enabled {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

/// The text of one progress line.
pub fn render(
    label: &str,
    phase: &str,
    elapsed: Duration,
    total: Duration,
    rate: f64,
    errors: u64,
) -> String {
    let fraction = if total.is_zero() {
        1.0
    } else {
        (elapsed.as_secs_f64() / total.as_secs_f64()).min(1.0)
    };
    let filled = (fraction * WIDTH as f64).round() as usize;
    format!(
        "{label} [{}{}] {:>5.1}/{:.0}s {phase:<7} {rate:>9.0} inf/s  errors {errors}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        elapsed.as_secs_f64().min(total.as_secs_f64()),
        total.as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_fills_with_time() {
        let line = render(
            "x",
            "measure",
            Duration::from_secs(5),
            Duration::from_secs(10),
            100.0,
            0,
        );
        assert!(
            line.contains(&format!("[{}{}]", "#".repeat(12), ".".repeat(12))),
            "{line}"
        );
        let line = render(
            "x",
            "measure",
            Duration::from_secs(11),
            Duration::from_secs(10),
            0.0,
            2,
        );
        assert!(
            line.contains(&"#".repeat(WIDTH)) && line.contains("errors 2"),
            "{line}"
        );
    }
}
