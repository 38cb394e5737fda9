//! Progress display: a bar on a terminal, plain log lines every N steps otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// Shows training progress on stderr.
pub struct Progress {
    bar: Option<ProgressBar>,
    log_every: u64,
    total: u64,
}

impl Progress {
    /// Progress over `total` steps starting at `start`.
    pub fn new(total: u64, start: u64, log_every: u64) -> Self {
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
        }
    }

    /// Report a finished step.
    pub fn step(&self, step: u64, loss: f64, tokens_per_s: f64, eta_s: f64) {
        match &self.bar {
            Some(b) => {
                b.set_position(step);
                b.set_message(format!("loss {loss:.4}  {tokens_per_s:.0} tok/s"));
            }
            None if step.is_multiple_of(self.log_every) || step == self.total => eprintln!(
                "step {step}/{}  loss {loss:.4}  {tokens_per_s:.0} tok/s  eta {}",
                self.total,
                fmt_duration(eta_s)
            ),
            None => {}
        }
    }

    /// Print a line without breaking the bar.
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
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
