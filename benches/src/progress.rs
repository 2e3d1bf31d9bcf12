//! Progress lines on stderr for long runs (at most one per second).

use std::io::Write;
use std::time::{Duration, Instant};

/// Prints `label: done/total` to stderr at most once per second.
pub struct Progress {
    label: String,
    total: u64,
    started: Instant,
    last: Instant,
    printed: bool,
}

impl Progress {
    /// A progress reporter for `total` steps.
    pub fn new(label: &str, total: u64) -> Self {
        let now = Instant::now();
        Progress {
            label: label.to_string(),
            total,
            started: now,
            last: now,
            printed: false,
        }
    }

    /// Reports `done` steps if a second has passed since the last line.
    pub fn update(&mut self, done: u64) {
        let now = Instant::now();
        if now.duration_since(self.last) < Duration::from_secs(1) {
            return;
        }
        self.last = now;
        self.printed = true;
        let pct = if self.total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / self.total as f64
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r  {}: {done}/{} ({pct:.0} %, {:.1} s)   ",
            self.label,
            self.total,
            now.duration_since(self.started).as_secs_f64()
        );
        let _ = err.flush();
    }

    /// Ends the progress line if one was printed.
    pub fn done(&mut self) {
        if self.printed {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "\r  {}: {}/{} done in {:.1} s          ",
                self.label,
                self.total,
                self.total,
                self.started.elapsed().as_secs_f64()
            );
            self.printed = false;
        }
    }
}
