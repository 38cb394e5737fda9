//! The training loop: configuration, schedule, the step driver, and a run's outputs (metrics,
//! manifest, checkpoints) with resume.

pub mod checkpoint;
pub mod config;
pub mod export;
pub mod lock;
pub mod manifest;
pub mod metrics;
pub mod progress;
pub mod run;
pub mod schedule;
pub mod task;
pub mod trainer;

pub use config::{DataSpec, OptimizerConfig, TrainConfig};
pub use run::{RunError, RunOptions, RunSummary};
pub use schedule::Schedule;
pub use trainer::{evaluate, EvalOutcome, StepOutcome, TrainError, Trainer};
