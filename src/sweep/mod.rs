//! Scaling sweeps: a TOML spec of model sizes, token budgets (tokens-per-parameter multipliers or IsoFLOP
//! budgets), optimizer rules and seeds, resolved into a plan of runs; run (resumably, one child process per
//! run, one worker per device), watched, exported to CSV for `isoflop fit`, or scaled out with Slurm.
//!
//! Modules: [`spec`] (the file), [`rules`] (size-dependent settings), [`plan`] (resolution and seeds),
//! [`estimate`] and [`table`] (the plan table with wall-time estimates), [`dir`] (the sweep directory and
//! run states), [`runner`] (running), [`export`] (CSVs), [`slurm`] (array job scripts).

pub mod dir;
pub mod estimate;
pub mod export;
pub mod plan;
pub mod rules;
pub mod runner;
pub mod slurm;
pub mod spec;
pub mod table;

pub use dir::{RunState, SweepDir};
pub use plan::{Plan, PlannedRun};
pub use spec::{SpecError, SweepSpec};

use std::path::PathBuf;

/// A problem of the sweep as a whole (not of one run: those are recorded per run).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The spec.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The spec resolves to no valid plan.
    #[error("sweep spec {path}")]
    Plan {
        /// The spec file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: plan::PlanError,
    },
    /// A file of the sweep directory is not as expected (its message says how).
    #[error("{path}: {msg}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// A task file of `[eval]` cannot be read or is malformed.
    #[error("sweep spec {path}: [eval] tasks")]
    Task {
        /// The spec file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: crate::data::task::TaskError,
    },
    /// A file or directory of the sweep cannot be read, written or removed.
    #[error("{path}")]
    File {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file of the sweep cannot be parsed or written.
    #[error("{path}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// `plan.json` of a directory that may not be a sweep directory cannot be read.
    #[error("{path} (is {dir} a sweep directory?)")]
    NotASweep {
        /// The plan file.
        path: PathBuf,
        /// The directory given.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The trainer process cannot be started or waited for.
    #[error("{bin}: {what} the trainer")]
    Trainer {
        /// The isoflop binary.
        bin: PathBuf,
        /// `cannot start` or `waiting for`.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The output directory holds a different spec's plan.
    #[error("{0}")]
    OtherSpec(String),
    /// Devices asked for are not there.
    #[error("{0}")]
    Device(String),
    /// A bad flag value.
    #[error("{0}")]
    Usage(String),
}

/// Read a spec file and resolve its plan. Returns the spec text too (saved in the sweep directory).
pub fn load(path: &std::path::Path) -> Result<(SweepSpec, String, Plan), SweepError> {
    let (spec, text) = SweepSpec::from_file(path)?;
    let mut plan = Plan::resolve(&spec).map_err(|source| SweepError::Plan {
        path: path.to_path_buf(),
        source,
    })?;
    // Task files: relative to the spec's directory, checked now (a bad line fails the plan, not a run).
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    for t in plan.eval.tasks.iter_mut() {
        let p = if t.is_relative() {
            base.join(&*t)
        } else {
            t.clone()
        };
        *t = std::path::absolute(&p).unwrap_or(p);
        crate::data::task::read_task(t, plan.eval.limit).map_err(|source| SweepError::Task {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok((spec, text, plan))
}
