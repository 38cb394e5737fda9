//! Progress display: a bar on a terminal, plain log lines every N steps otherwise.
//!
//! Output never stops training: when stderr is gone (a closed terminal or ssh session, a reader of the
//! pipe that exited), lines are dropped and that is noted once in the run's own log file, `RUN/run.log`.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// File name of a run's own log (notes about the session that must survive a lost terminal).
pub const RUN_LOG: &str = "run.log";

/// Writes lines to stderr without ever failing; notes in `RUN/run.log` when stderr stops accepting them.
#[derive(Debug)]
pub struct Console {
    log: PathBuf,
    lost: AtomicBool,
}

impl Console {
    /// A console for the run in `dir`.
    pub fn new(dir: &Path) -> Self {
        Console {
            log: dir.join(RUN_LOG),
            lost: AtomicBool::new(false),
        }
    }

    /// Print a line on stderr; once stderr has failed, drop it (noted once in the run log).
    pub fn line(&self, msg: &str) {
        if self.lost.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = writeln!(std::io::stderr().lock(), "{msg}") {
            self.stderr_lost(&e);
        }
    }

    /// Whether stderr was found gone.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    fn stderr_lost(&self, e: &std::io::Error) {
        if !self.lost.swap(true, Ordering::Relaxed) {
            self.note(&format!(
                "stderr cannot be written ({e}): terminal output is dropped from here on; training goes on"
            ));
        }
    }

    /// Append a timestamped line to the run log (best effort: a note must not stop training either).
    pub fn note(&self, msg: &str) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
        {
            let _ = writeln!(f, "{} {msg}", super::manifest::now());
        }
    }
}

/// Shows training progress on stderr.
pub struct Progress<'a> {
    bar: Option<ProgressBar>,
    log_every: u64,
    total: u64,
    console: &'a Console,
}

impl<'a> Progress<'a> {
    /// Progress over `total` steps starting at `start`, printed through `console`.
    pub fn new(total: u64, start: u64, log_every: u64, console: &'a Console) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta}]",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_position(start);
            b
        });
        Progress {
            bar,
            log_every: log_every.max(1),
            total,
            console,
        }
    }

    /// Report a finished step.
    pub fn step(&self, step: u64, loss: f64, tokens_per_s: f64, eta_s: f64) {
        match &self.bar {
            Some(b) => {
                b.set_position(step);
                b.set_message(format!("loss {loss:.4}  {tokens_per_s:.0} tok/s"));
            }
            None if step.is_multiple_of(self.log_every) || step == self.total => {
                self.console.line(&format!(
                    "step {step}/{}  loss {loss:.4}  {tokens_per_s:.0} tok/s  eta {}",
                    self.total,
                    fmt_duration(eta_s)
                ))
            }
            None => {}
        }
    }

    /// Print a line without breaking the bar.
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => self.console.line(msg),
        }
    }

    /// Remove the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// `1h02m03s`-style duration.
pub fn fmt_duration(s: f64) -> String {
    if !s.is_finite() {
        return "?".into();
    }
    let s = s.max(0.0).round() as u64;
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, sec) => format!("{h}h{m:02}m{sec:02}s"),
    }
}
