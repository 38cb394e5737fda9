//! The two peaks MFU is measured against: the datasheet's and a matmul measured on the same device;
//! and the facts about the machine a result file records (host, driver, CPU model).

use super::{DeviceKind, GpuInfo};
use serde::{Deserialize, Serialize};

/// A peak FLOP/s figure and where it comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// Floating-point operations per second.
    pub flops: f64,
    /// Where the figure comes from, e.g. `datasheet: H100 SXM dense bf16` or `--peak-flops`.
    pub source: String,
}

/// Dense bf16 tensor-core peaks from the vendors' datasheets (without sparsity), by a substring of the
/// device name. More specific names first.
pub const DATASHEET_BF16: &[(&str, f64, &str)] = &[
    ("H200", 989e12, "H200 SXM dense bf16"),
    ("H100 PCIe", 756e12, "H100 PCIe dense bf16"),
    ("H100 NVL", 835e12, "H100 NVL dense bf16"),
    ("H100", 989e12, "H100 SXM dense bf16"),
    ("A100", 312e12, "A100 dense bf16"),
    ("L40S", 362e12, "L40S dense bf16"),
    ("A10", 125e12, "A10 dense bf16"),
    ("RTX 4090", 165e12, "RTX 4090 dense bf16 (fp32 accumulate)"),
];

/// HBM bandwidth from the datasheets, bytes/s, by a substring of the device name.
pub const DATASHEET_BANDWIDTH: &[(&str, f64)] = &[
    ("H200", 4.8e12),
    ("H100 PCIe", 2.0e12),
    ("H100 NVL", 3.9e12),
    ("H100", 3.35e12),
    ("A100", 2.0e12),
    ("L40S", 0.864e12),
    ("A10", 0.6e12),
    ("RTX 4090", 1.008e12),
];

/// The datasheet peak of a device of `kind` named `device_name`: `given` (from `--peak-flops`) wins;
/// CPUs have none.
pub fn datasheet_peak(kind: DeviceKind, device_name: &str, given: Option<f64>) -> Option<Peak> {
    if let Some(f) = given {
        return Some(Peak {
            flops: f,
            source: "--peak-flops".into(),
        });
    }
    if kind == DeviceKind::Cpu {
        return None;
    }
    DATASHEET_BF16
        .iter()
        .find(|(k, _, _)| device_name.contains(k))
        .map(|(_, f, what)| Peak {
            flops: *f,
            source: format!("datasheet: {what}"),
        })
}

/// Datasheet memory bandwidth of a GPU, bytes/s.
pub fn datasheet_bandwidth(device_name: &str) -> Option<f64> {
    DATASHEET_BANDWIDTH
        .iter()
        .find(|(k, _)| device_name.contains(k))
        .map(|(_, b)| *b)
}

/// A matmul peak measured on the device a backend runs on.
///
/// On the CPU: the best of a few 512×512×512 f32 products through the CPU backend's own matmul
/// ([`measure_cpu_peak_flops`]). On a GPU: the median rate of 8192³ bf16 cuBLASLt products timed with
/// CUDA events ([`crate::cuda::peak`]); `Err` with the reason when that fails, and then MFU against a
/// measured peak is left out.
pub fn measured_matmul_peak(kind: DeviceKind) -> Result<Peak, String> {
    match kind {
        DeviceKind::Cpu => Ok(Peak {
            flops: measure_cpu_peak_flops(),
            source: "measured: best of 5 f32 512x512x512 matmuls of the CPU backend".into(),
        }),
        DeviceKind::Cuda { ordinal } => {
            use crate::cuda::peak::{measure, LAUNCHES, N, REPEATS};
            Ok(Peak {
                // The reason is shown next to the MFU columns: the whole cause chain on one line.
                flops: measure(ordinal).map_err(|e| crate::error::error_chain(&e))?,
                source: format!(
                    "measured: median of {REPEATS}×{LAUNCHES} bf16 {N}x{N}x{N} cuBLASLt products \
                     (fp32 accumulate)"
                ),
            })
        }
    }
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
        let overwrite = crate::cpu::ops::OutMode::Overwrite;
        crate::cpu::ops::matmul_forward(&a, &b, &mut c, n, n, n, overwrite);
        let dt = t.elapsed().as_secs_f64();
        best = best.max(2.0 * (n * n * n) as f64 / dt);
    }
    best
}

/// This machine's host name (`unknown` when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Facts about the machine recorded with a result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// Host name.
    pub host: String,
    /// CPU model from /proc/cpuinfo.
    pub cpu_model: Option<String>,
    /// Logical CPUs available to this process.
    pub cpus: usize,
    /// NVIDIA kernel driver version (from /proc/driver/nvidia/version), if any.
    pub driver: Option<String>,
    /// CUDA driver API version (e.g. `13.0`), if libcuda is present.
    pub cuda_driver_api: Option<String>,
    /// GPUs the driver reports, or why there are none.
    pub gpus: Vec<String>,
    /// Why no GPU is usable (when there is none).
    pub no_gpu_reason: Option<String>,
    /// /proc/loadavg when the report was assembled (other work on the machine distorts timings).
    pub load_average: Option<String>,
}

/// Gather [`MachineInfo`] (never fails; unknown fields stay None).
pub fn machine_info() -> MachineInfo {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    let driver = std::fs::read_to_string("/proc/driver/nvidia/version")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .skip_while(|w| *w != "Kernel")
                .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
                .map(str::to_string)
        });
    let (gpus, no_gpu_reason) = match super::probe_gpus() {
        Ok(g) => (
            g.iter()
                .map(|GpuInfo { index, name }| format!("cuda:{index} {name}"))
                .collect(),
            None,
        ),
        Err(why) => (vec![], Some(why)),
    };
    let cuda_driver_api = if gpus.is_empty() {
        None
    } else {
        let mut v: std::ffi::c_int = 0;
        // SAFETY: probe_gpus succeeded, so libcuda is loaded and initialised; the call writes one int.
        let rc = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
        (rc == cudarc::driver::sys::CUresult::CUDA_SUCCESS)
            .then(|| format!("{}.{}", v / 1000, (v % 1000) / 10))
    };
    MachineInfo {
        host: hostname(),
        cpu_model,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        driver,
        cuda_driver_api,
        gpus,
        no_gpu_reason,
        load_average: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|s| s.trim().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasheet_lookup() {
        let gpu = DeviceKind::Cuda { ordinal: 0 };
        let p = datasheet_peak(gpu, "cuda:0 NVIDIA H100 80GB HBM3", None).unwrap();
        assert_eq!(p.flops, 989e12);
        assert_eq!(
            datasheet_peak(gpu, "cuda:0 NVIDIA H100 PCIe", None)
                .unwrap()
                .flops,
            756e12
        );
        assert!(datasheet_peak(DeviceKind::Cpu, "cpu (2 threads)", None).is_none());
        assert_eq!(
            datasheet_peak(DeviceKind::Cpu, "cpu (2 threads)", Some(1e11))
                .unwrap()
                .source,
            "--peak-flops"
        );
        assert!(datasheet_peak(gpu, "cuda:0 Mystery GPU", None).is_none());
        assert_eq!(datasheet_bandwidth("NVIDIA H100 80GB HBM3"), Some(3.35e12));
    }

    #[test]
    fn machine_info_never_fails() {
        let m = machine_info();
        assert!(m.cpus >= 1);
        assert!(m.gpus.is_empty() == m.no_gpu_reason.is_some());
    }
}
