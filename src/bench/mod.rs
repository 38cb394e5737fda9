//! Benchmarks of training throughput: `isoflop bench` trains a fixed set of model sizes for a fixed
//! number of steps on synthetic tokens with the real training loop and reports tokens/s, step time, MFU
//! (two FLOP conventions against a datasheet and a measured peak, from [`crate::device::peak`]), peak
//! memory and the share of each phase of the step; plus the inputs for the PyTorch comparison
//! ([`inputs`]). The per-kernel profiles live with the kernels, in `crate::cuda::kernel_bench`.
//!
//! Backend-agnostic: every size is opened through [`crate::device::open_backend`], so a GPU backend is
//! used as soon as it can train; without one the CPU reference backend runs on small sizes and the report
//! says so.

pub mod inputs;
pub mod memory;
pub mod plan;
pub mod report;
pub mod runner;
pub mod stats;
pub mod timed;

pub use plan::{parse_sizes, BackendKind, BenchPlan, SizeSpec};
pub use report::{BenchReport, SizeResult};

use crate::device::peak;
use crate::device::{self, DeviceChoice, DeviceKind};
use crate::model::{init_params, ModelConfig};
use std::path::PathBuf;

/// A benchmark that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A bad flag value.
    #[error("{flag}: {msg}")]
    Flag {
        /// The flag, e.g. `--sizes`.
        flag: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// The bench cannot go on (no micro-batch fits, a step time was not finite, ...).
    #[error("{0}")]
    Device(String),
    /// The device cannot be opened.
    #[error(transparent)]
    Open(#[from] crate::device::DeviceError),
    /// The backend failed outside a training step.
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    /// The probe forward/backward that sizes the micro-batch failed (not by running out of memory).
    #[error("probe with micro-batch {micro_batch}")]
    Probe {
        /// The micro-batch tried.
        micro_batch: usize,
        /// Cause.
        #[source]
        source: crate::backend::BackendError,
    },
    /// The synthetic token stream failed.
    #[error("{what}")]
    Tokens {
        /// Which batch (`probe batch`, `synthetic batch`).
        what: &'static str,
        /// Cause.
        #[source]
        source: crate::data::SourceError,
    },
    /// A size's training configuration is invalid.
    #[error("{size}")]
    Config {
        /// The size's label.
        size: String,
        /// Cause.
        #[source]
        source: crate::train::config::TrainConfigError,
    },
    /// A training step failed.
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    /// A file could not be written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        err: std::io::Error,
    },
    /// A safetensors file could not be written.
    #[error("{path}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: safetensors::SafeTensorError,
    },
}

/// Which backend `choice` opens, with the note saying why: opens a throw-away backend for a minimal model.
pub fn detect_backend(choice: DeviceChoice) -> Result<(BackendKind, String, String), BenchError> {
    let (kind, name, note) = detect_device(choice)?;
    Ok((BackendKind::from(kind), name, note))
}

/// The device `choice` opens: its kind, name and note.
fn detect_device(choice: DeviceChoice) -> Result<(DeviceKind, String, String), BenchError> {
    let cfg = ModelConfig {
        d_model: 64,
        n_layers: 1,
        seq_len: 2,
        vocab_size: 4,
    };
    let opened = device::open_backend(choice, &cfg, init_params(&cfg, 0))?;
    let name = opened.backend.device().to_string();
    Ok((opened.kind, name, opened.note))
}

/// The notice printed with (and stored in) every CPU result.
pub fn cpu_notice(choice: DeviceChoice, note: &str) -> String {
    let why = match choice {
        DeviceChoice::Cpu => "--device cpu was given".to_string(),
        _ => format!("no GPU backend is usable: {note}"),
    };
    format!(
        "NOTE: {why}; these are CPU figures of the f32 reference backend on \
         small models, NOT GPU figures. MFU is against the CPU's own measured f32 matmul rate."
    )
}

/// Run every size of `plan` and assemble the report. `peak_flops` overrides the datasheet peak; `log`
/// receives progress lines.
pub fn run(
    plan: &BenchPlan,
    device: DeviceChoice,
    peak_flops: Option<f64>,
    command: String,
    log: &mut dyn FnMut(&str),
) -> Result<BenchReport, BenchError> {
    plan.validate()?;
    let date = chrono::Local::now().to_rfc3339();
    let (device_kind, name, note) = detect_device(device)?;
    let kind = BackendKind::from(device_kind);
    let notice = (kind == BackendKind::Cpu).then(|| cpu_notice(device, &note));
    if let Some(n) = &notice {
        log(n);
    }
    log(&note);
    let datasheet_peak = peak::datasheet_peak(device_kind, &name, peak_flops);
    let (measured_peak, measured_peak_unavailable) = match peak::measured_matmul_peak(device_kind) {
        Ok(p) => (Some(p), None),
        Err(why) => (None, Some(why)),
    };
    let ctx = runner::RunContext {
        device,
        datasheet_peak: datasheet_peak.clone(),
        measured_peak: measured_peak.clone(),
    };
    let mut results = Vec::new();
    for size in &plan.sizes {
        results.push(runner::run_size(plan, size, &ctx, log)?);
    }
    Ok(BenchReport {
        format: report::REPORT_FORMAT,
        date,
        backend: kind,
        device: name,
        device_note: note,
        notice,
        machine: peak::machine_info(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: crate::train::manifest::git_commit(),
        command,
        plan: plan.clone(),
        datasheet_peak,
        measured_peak,
        measured_peak_unavailable,
        phase_method: match kind {
            BackendKind::Cpu => "host wall-clock around each Backend call; exact on the synchronous CPU backend".into(),
            BackendKind::Gpu => "host wall-clock around each Backend call; on an asynchronous GPU backend only the whole step is exact".into(),
        },
        results,
    })
}
