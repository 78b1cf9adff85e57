//! The progress line of an open-loop run: elapsed time, phase, offered and
//! completed rates over the last interval, requests in flight, failures,
//! the last queue-depth sample. On a terminal it is redrawn in place every
//! half second; otherwise (a log, a pipe) a plain line is printed every
//! few seconds.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use crate::profile::Profile;
use crate::timeline::Book;

/// How often the line is refreshed.
pub const REFRESH: Duration = Duration::from_millis(500);
/// How often a plain line is printed when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    Terminal,
    Log,
}

/// The live progress of one run.
pub struct Live {
    label: String,
    profile: Profile,
    mode: Mode,
    last: Option<(Duration, u64, u64)>,
    last_log: Option<Duration>,
}

impl Live {
    /// Progress for a run of `profile`; `show` false turns it off.
    pub fn new(label: String, profile: Profile, show: bool) -> Live {
        let mode = match (show, std::io::stderr().is_terminal()) {
            (false, _) => Mode::Off,
            (true, true) => Mode::Terminal,
            (true, false) => Mode::Log,
        };
        Live {
            label,
            profile,
            mode,
            last: None,
            last_log: None,
        }
    }

    /// Redraws from the books at `elapsed`.
    pub fn draw(&mut self, book: &Book, elapsed: Duration) {
        if self.mode == Mode::Off {
            return;
        }
        let (offered, done) = (book.offered(), book.ok() + book.failed());
        let (offered_rate, done_rate) = match self.last {
            Some((at, o, d)) if elapsed > at => {
                let dt = (elapsed - at).as_secs_f64();
                ((offered - o) as f64 / dt, (done - d) as f64 / dt)
            }
            _ => (0.0, 0.0),
        };
        let ok_rate = done_rate; // failures are listed separately
        self.last = Some((elapsed, offered, done));
        let t = elapsed.as_secs_f64();
        let phase = self
            .profile
            .phase_at(t)
            .map_or("drain", |i| self.profile.phases[i].name.as_str());
        let queue = book
            .last_queue_depth()
            .map_or(String::new(), |q| format!("  queue {q:.0}"));
        let line = format!(
            "{} {:>6.1}/{:.0}s {phase:<7} offered {offered_rate:>7.0}/s  answered {ok_rate:>7.0}/s  in flight {:>5}  ok {}  failed {}{queue}",
            self.label,
            t,
            self.profile.duration_s(),
            book.in_flight(),
            book.ok(),
            book.failed(),
        );
        let mut err = std::io::stderr().lock();
        match self.mode {
            Mode::Terminal => {
                let _ = write!(err, "\r{line}\x1b[K");
                let _ = err.flush();
            }
            Mode::Log => {
                if self.last_log.is_none_or(|at| elapsed >= at + LOG_EVERY) {
                    self.last_log = Some(elapsed);
                    let _ = writeln!(err, "{line}");
                }
            }
            Mode::Off => {}
        }
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.mode == Mode::Terminal {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}
