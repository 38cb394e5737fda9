//! The two peaks MFU is measured against: the datasheet's and a matmul measured on the same device;
//! and the facts about the device a result file records (driver, CPU model).

use crate::device::GpuInfo;
use serde::{Deserialize, Serialize};

/// A peak FLOP/s figure and where it comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// FLOP/s.
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

/// The datasheet peak of a device: `given` (from `--peak-flops`) wins; CPUs have none.
pub fn datasheet_peak(device_name: &str, given: Option<f64>) -> Option<Peak> {
    if let Some(f) = given {
        return Some(Peak {
            flops: f,
            source: "--peak-flops".into(),
        });
    }
    if device_name.starts_with("cpu") {
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
/// ([`crate::device::measure_cpu_peak_flops`]). On a GPU: the median rate of 8192³ bf16 cuBLASLt
/// products timed with CUDA events ([`super::gpu_peak`]); `Err` with the reason when that fails, and then
/// MFU against a measured peak is left out.
pub fn measured_matmul_peak(device_name: &str) -> Result<Peak, String> {
    if device_name.starts_with("cpu") {
        let f = crate::device::measure_cpu_peak_flops();
        return Ok(Peak {
            flops: f,
            source: "measured: best of 5 f32 512x512x512 matmuls of the CPU backend".into(),
        });
    }
    let ordinal = device_name
        .strip_prefix("cuda:")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    super::gpu_peak::measure(ordinal)
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
    let (gpus, no_gpu_reason) = match crate::device::probe_gpus() {
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
        host: crate::train::manifest::hostname(),
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
        let p = datasheet_peak("cuda:0 NVIDIA H100 80GB HBM3", None).unwrap();
        assert_eq!(p.flops, 989e12);
        assert_eq!(
            datasheet_peak("cuda:0 NVIDIA H100 PCIe", None)
                .unwrap()
                .flops,
            756e12
        );
        assert!(datasheet_peak("cpu (2 threads)", None).is_none());
        assert_eq!(
            datasheet_peak("cpu (2 threads)", Some(1e11))
                .unwrap()
                .source,
            "--peak-flops"
        );
        assert!(datasheet_peak("cuda:0 Mystery GPU", None).is_none());
        assert_eq!(datasheet_bandwidth("NVIDIA H100 80GB HBM3"), Some(3.35e12));
    }

    #[test]
    fn machine_info_never_fails() {
        let m = machine_info();
        assert!(m.cpus >= 1);
        assert!(m.gpus.is_empty() == m.no_gpu_reason.is_some());
    }
}
