//! What a device is and can do, and choosing one: its kind, the GPUs the driver reports, opening the
//! backend for a run (a GPU when one is usable, else the CPU, always saying which and why), and in
//! [`peak`] its datasheet and measured peaks and the machine's facts.
//!
//! Above the backends (it opens them) and below `train`, `bench` and `sweep`, which all use it.

pub mod peak;

pub use crate::cuda::gpu::{probe_gpus, GpuInfo};

use crate::backend::{Backend, BackendError};
/// What a device is, as every backend describes it ([`Backend::device`]). Defined with the trait (below
/// the backends, which this module opens) and re-exported here, its home for `train`, `bench` and `sweep`.
pub use crate::backend::{DeviceInfo, DeviceKind, Precision};
use crate::cpu::CpuBackend;
use crate::cuda::CudaBackend;
use crate::error::error_chain;
use crate::model::ModelConfig;
use std::str::FromStr;

/// `--device`: `auto`, `cpu` or `cuda:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first GPU if one is usable, else the CPU.
    #[default]
    Auto,
    /// The CPU reference backend.
    Cpu,
    /// GPU number N.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("--device must be auto, cpu or cuda:N, got {s:?}")),
        }
    }
}

/// A backend opened for a run, with the line that tells the user which device it is and why.
pub struct Opened {
    /// The backend, initialised with the run's parameters.
    pub backend: Box<dyn Backend>,
    /// What it runs on.
    pub kind: DeviceKind,
    /// E.g. `device: cpu (2 threads) — no CUDA driver (libcuda) found`.
    pub note: String,
}

/// Why no backend could be opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// `--device cuda:N` asked for a GPU that is not there.
    #[error("--device cuda:{index}: {why}")]
    NoSuchGpu {
        /// Requested ordinal.
        index: usize,
        /// Why it is unavailable.
        why: String,
    },
    /// The backend failed to start.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// GPU `index` is there but the CUDA backend failed to start on it (the cause: the backend's
    /// error, and below it the driver's, NVRTC's or cuBLASLt's).
    #[error("--device cuda:{index}: the CUDA backend failed to start")]
    CudaStart {
        /// Requested ordinal.
        index: usize,
        /// Why it failed.
        #[source]
        source: BackendError,
    },
}

/// Open the backend for `choice` with initial parameters `params`.
pub fn open_backend(
    choice: DeviceChoice,
    cfg: &ModelConfig,
    params: Vec<f32>,
) -> Result<Opened, DeviceError> {
    open(choice, cfg, params, false)
}

/// [`open_backend`] or, with `forward_only`, [`open_eval_backend`].
fn open(
    choice: DeviceChoice,
    cfg: &ModelConfig,
    params: Vec<f32>,
    forward_only: bool,
) -> Result<Opened, DeviceError> {
    let tag = if forward_only { ", forward only" } else { "" };
    let cpu = |params: Vec<f32>, why: String| -> Result<Opened, DeviceError> {
        let (backend, only) = if forward_only {
            (
                CpuBackend::new_forward_only(*cfg, params)?,
                " (forward only)",
            )
        } else {
            (CpuBackend::new(*cfg, params)?, "")
        };
        let note = format!("device: {}{only}{why}", backend.device());
        Ok(Opened {
            backend: Box::new(backend),
            kind: DeviceKind::Cpu,
            note,
        })
    };
    let cuda = if forward_only {
        CudaBackend::new_forward_only
    } else {
        CudaBackend::new
    };
    match choice {
        DeviceChoice::Cpu => cpu(params, String::new()),
        DeviceChoice::Auto => match probe_gpus() {
            Err(why) => cpu(params, format!(" — {why}")),
            Ok(gpus) => match cuda(*cfg, &params, 0) {
                Ok(backend) => Ok(Opened {
                    note: format!("device: {} (auto{tag})", backend.device()),
                    backend: Box::new(backend),
                    kind: DeviceKind::Cuda { ordinal: 0 },
                }),
                Err(e) => {
                    // The note names the cause chain's first line (the whole error can be long: an
                    // NVRTC log).
                    let msg = error_chain(&e);
                    let first = msg.lines().next().unwrap_or("").trim().to_string();
                    cpu(
                        params,
                        format!(
                            " — found {}, but the CUDA backend failed to start: {first} \
                             (--device cuda:0 shows the whole error)",
                            gpus[0].name
                        ),
                    )
                }
            },
        },
        DeviceChoice::Cuda(index) => {
            check_gpu(index)?;
            match cuda(*cfg, &params, index) {
                Ok(backend) => Ok(Opened {
                    note: format!(
                        "device: {}{}",
                        backend.device(),
                        if forward_only { " (forward only)" } else { "" }
                    ),
                    backend: Box::new(backend),
                    kind: DeviceKind::Cuda { ordinal: index },
                }),
                Err(e @ BackendError::OutOfMemory(_)) => Err(DeviceError::Backend(e)),
                Err(source) => Err(DeviceError::CudaStart { index, source }),
            }
        }
    }
}

/// Open a backend for evaluation only: no gradients or AdamW moments are allocated, on the CPU
/// ([`CpuBackend::new_forward_only`]) and on a GPU ([`CudaBackend::new_forward_only`]; its activation
/// buffers are those of training). `auto` falls back to the CPU as [`open_backend`] does.
pub fn open_eval_backend(
    choice: DeviceChoice,
    cfg: &ModelConfig,
    params: Vec<f32>,
) -> Result<Opened, DeviceError> {
    open(choice, cfg, params, true)
}

/// Whether GPU `index` is there (driver loaded, device counted), without opening it: cheap, so callers
/// check before preparing work for it (the parameters of a D=2048 model take seconds to initialise).
pub fn check_gpu(index: usize) -> Result<(), DeviceError> {
    let gpus = probe_gpus().map_err(|why| DeviceError::NoSuchGpu { index, why })?;
    if index >= gpus.len() {
        return Err(DeviceError::NoSuchGpu {
            index,
            why: format!("only {} GPU(s) present", gpus.len()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_device() {
        assert_eq!("auto".parse::<DeviceChoice>(), Ok(DeviceChoice::Auto));
        assert_eq!("cpu".parse::<DeviceChoice>(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda:3".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(3)));
        assert!("gpu"
            .parse::<DeviceChoice>()
            .unwrap_err()
            .contains("--device"));
    }

    #[test]
    fn probing_never_panics() {
        // On a machine without a GPU this is an Err with a reason; with one, a list.
        match probe_gpus() {
            Ok(g) => assert!(!g.is_empty()),
            Err(why) => assert!(!why.is_empty()),
        }
    }
}
