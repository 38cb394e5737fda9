//! Choosing where to train: a GPU when one is usable, else the CPU, always saying which and why.

use crate::backend::{Backend, BackendError};
use crate::cpu::CpuBackend;
use crate::cuda::CudaBackend;
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

/// A GPU seen by the CUDA driver.
#[derive(Clone, Debug)]
pub struct GpuInfo {
    /// Ordinal.
    pub index: usize,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
}

/// The GPUs the driver reports, or why there are none. Never panics when libcuda is missing (and turns
/// a panic inside the driver bindings, e.g. a missing symbol, into a reason).
pub fn probe_gpus() -> Result<Vec<GpuInfo>, String> {
    use crate::cuda::gpu::{catch_cuda_panic, driver_present, GpuError};
    use cudarc::driver::result;
    if !driver_present() {
        return Err("no CUDA driver (libcuda) found".into());
    }
    let probe = || -> Result<Vec<GpuInfo>, String> {
        result::init().map_err(|e| format!("the CUDA driver failed to initialise: {e}"))?;
        let n = result::device::get_count().map_err(|e| format!("cannot count GPUs: {e}"))?;
        if n <= 0 {
            return Err("the CUDA driver reports no GPU".into());
        }
        (0..n)
            .map(|i| {
                let dev = result::device::get(i).map_err(|e| format!("GPU {i}: {e}"))?;
                let name = result::device::get_name(dev).unwrap_or_else(|_| "unknown GPU".into());
                Ok(GpuInfo {
                    index: i as usize,
                    name,
                })
            })
            .collect()
    };
    catch_cuda_panic("probing GPUs", || Ok(probe()))
        .map_err(|e: GpuError| e.to_string())
        .and_then(|r| r)
}

/// A backend opened for a run, with the line that tells the user which device it is and why.
pub struct Opened {
    /// The backend.
    pub backend: Box<dyn Backend>,
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
}

/// Open the backend for `choice` with initial parameters `params`.
pub fn open_backend(
    choice: DeviceChoice,
    cfg: &ModelConfig,
    params: Vec<f32>,
) -> Result<Opened, DeviceError> {
    let cpu = |params: Vec<f32>, why: String| -> Result<Opened, DeviceError> {
        let backend = CpuBackend::new(*cfg, params)?;
        let note = format!("device: {}{why}", backend.device_name());
        Ok(Opened {
            backend: Box::new(backend),
            note,
        })
    };
    match choice {
        DeviceChoice::Cpu => cpu(params, String::new()),
        DeviceChoice::Auto => match probe_gpus() {
            Err(why) => cpu(params, format!(" — {why}")),
            Ok(gpus) => match CudaBackend::new(*cfg, &params, 0) {
                Ok(backend) => Ok(Opened {
                    note: format!("device: {} (auto)", backend.device_name()),
                    backend: Box::new(backend),
                }),
                Err(e) => {
                    let msg = e.to_string();
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
            match CudaBackend::new(*cfg, &params, index) {
                Ok(backend) => Ok(Opened {
                    note: format!("device: {}", backend.device_name()),
                    backend: Box::new(backend),
                }),
                Err(e @ BackendError::OutOfMemory(_)) => Err(DeviceError::Backend(e)),
                Err(e) => Err(DeviceError::NoSuchGpu {
                    index,
                    why: e.to_string(),
                }),
            }
        }
    }
}

/// Open a backend for evaluation only. On the CPU (chosen, or `auto` without a usable GPU) it is
/// [`CpuBackend::new_forward_only`]: no gradients or AdamW moments are allocated. A GPU backend is
/// opened as for training ([`open_backend`]).
pub fn open_eval_backend(
    choice: DeviceChoice,
    cfg: &ModelConfig,
    params: Vec<f32>,
) -> Result<Opened, DeviceError> {
    let why = match choice {
        DeviceChoice::Cpu => String::new(),
        DeviceChoice::Auto => match probe_gpus() {
            Err(why) => format!(" — {why}"),
            Ok(_) => return open_backend(choice, cfg, params),
        },
        DeviceChoice::Cuda(_) => return open_backend(choice, cfg, params),
    };
    let backend = CpuBackend::new_forward_only(*cfg, params)?;
    Ok(Opened {
        note: format!("device: {} (forward only){why}", backend.device_name()),
        backend: Box::new(backend),
    })
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

/// Measured f32 matmul throughput of the CPU backend (FLOP/s): the best of a few square products sized
/// like the tiny presets' matmuls. Used as the CPU's peak for MFU when none is given.
pub fn measure_cpu_peak_flops() -> f64 {
    let n = 512;
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        crate::cpu::ops::matmul_forward(&a, &b, &mut c, n, n, n);
        let dt = t.elapsed().as_secs_f64();
        best = best.max(2.0 * (n * n * n) as f64 / dt);
    }
    best
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
