//! The benchmark's results: per-size figures, the whole report with its provenance, the printed table and
//! the JSON file under `bench/results/`.

use super::plan::{BackendKind, BenchPlan, SizeSpec};
use super::stats::Spread;
use super::BenchError;
use crate::device::peak::{MachineInfo, Peak};
use crate::model::{FlopsPerToken, ModelConfig, ParamCounts};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Version of the result file's layout.
pub const REPORT_FORMAT: u32 = 1;

/// Model FLOPs utilisation under two FLOP conventions against two peaks (None where a peak is unknown).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mfu {
    /// `attention` convention (6N + 6LTD) over the datasheet peak.
    pub attention_datasheet: Option<f64>,
    /// `exact` convention (every matmul, causal attention) over the datasheet peak.
    pub exact_datasheet: Option<f64>,
    /// `attention` convention over the measured matmul peak.
    pub attention_measured: Option<f64>,
    /// `exact` convention over the measured matmul peak.
    pub exact_measured: Option<f64>,
}

/// Time per step spent in one phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseShare {
    /// Phase name.
    pub name: String,
    /// Mean seconds per timed step.
    pub seconds_per_step: f64,
    /// Fraction of the mean step time.
    pub share: f64,
}

/// Everything measured for one model size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SizeResult {
    /// The size as given.
    pub size: SizeSpec,
    /// The model it resolved to.
    pub model: ModelConfig,
    /// Parameter counts.
    pub params: ParamCounts,
    /// Training FLOPs per token under each convention.
    pub flops_per_token: FlopsPerToken,
    /// Global batch (sequences per step).
    pub batch_size: usize,
    /// Micro-batch used.
    pub micro_batch: usize,
    /// How the micro-batch was chosen.
    pub micro_batch_choice: String,
    /// Input tokens per optimizer step.
    pub tokens_per_step: u64,
    /// Untimed steps before the timed ones.
    pub warmup_steps: u64,
    /// Steps measured, after the warm-up.
    pub timed_steps: u64,
    /// Wall time per timed step.
    pub step_time_s: Spread,
    /// Wall time of all timed steps, ended by a synchronising reduction.
    pub total_timed_s: f64,
    /// Tokens per second at the median step time.
    pub tokens_per_s: f64,
    /// Tokens per second over the whole timed region.
    pub tokens_per_s_overall: f64,
    /// FLOP/s achieved, `attention` convention, at the median step time.
    pub achieved_flops_attention: f64,
    /// FLOP/s achieved, `exact` convention.
    pub achieved_flops_exact: f64,
    /// MFU figures.
    pub mfu: Mfu,
    /// Peak memory, bytes (see `peak_memory_kind`).
    pub peak_memory_bytes: Option<u64>,
    /// What `peak_memory_bytes` measures.
    pub peak_memory_kind: String,
    /// Share of the step per phase.
    pub phases: Vec<PhaseShare>,
    /// Training loss of every step, warm-up included (step 1 first).
    pub losses: Vec<f64>,
}

/// A whole benchmark run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// [`REPORT_FORMAT`].
    pub format: u32,
    /// When the run started (RFC 3339, local time).
    pub date: String,
    /// GPU or the CPU fallback.
    pub backend: BackendKind,
    /// The backend's device description.
    pub device: String,
    /// The line explaining which device was chosen and why.
    pub device_note: String,
    /// A warning that must travel with the numbers (e.g. that these are CPU figures).
    pub notice: Option<String>,
    /// Machine facts: host, CPU, driver, GPUs.
    pub machine: MachineInfo,
    /// isoflop version.
    pub version: String,
    /// Git commit of the source tree the binary was built from, if known.
    pub git_commit: Option<String>,
    /// The command line.
    pub command: String,
    /// What was measured.
    pub plan: BenchPlan,
    /// Datasheet peak used for MFU.
    pub datasheet_peak: Option<Peak>,
    /// Measured matmul peak used for MFU.
    pub measured_peak: Option<Peak>,
    /// Why there is no measured peak, when there is none.
    pub measured_peak_unavailable: Option<String>,
    /// How phase times are taken.
    pub phase_method: String,
    /// One entry per size.
    pub results: Vec<SizeResult>,
}

/// File-name-safe device label: `cpu` for the CPU backend, else the GPU's name lowercased with runs of
/// other characters turned into `-` (e.g. `nvidia-h100-80gb-hbm3`).
pub fn device_slug(backend: BackendKind, device: &str) -> String {
    if backend == BackendKind::Cpu {
        return "cpu".into();
    }
    let name = device.split_once(' ').map_or(device, |(_, rest)| rest);
    let mut s = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "gpu".into()
    } else {
        s
    }
}

/// `bench/results/<YYYY-MM-DD>-<device>.json` under `root`.
pub fn default_path(root: &Path, report: &BenchReport) -> PathBuf {
    let date = report.date.get(..10).unwrap_or("unknown-date");
    root.join("bench").join("results").join(format!(
        "{date}-{}.json",
        device_slug(report.backend, &report.device)
    ))
}

/// Write the report as pretty JSON (creating the directory).
pub fn write_json(report: &BenchReport, path: &Path) -> Result<(), BenchError> {
    let io = |err| BenchError::Io {
        path: path.to_path_buf(),
        err,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut text = serde_json::to_string_pretty(report).expect("report serialises");
    text.push('\n');
    std::fs::write(path, text).map_err(io)
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1}%", 100.0 * v))
}

fn si(x: f64) -> String {
    let (v, u) = if x >= 1e12 {
        (x / 1e12, "T")
    } else if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    format!("{v:.3}{u}")
}

fn mib(x: Option<u64>) -> String {
    x.map_or("-".into(), |b| format!("{} MiB", b >> 20))
}

fn secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.3} s")
    } else {
        format!("{:.2} ms", s * 1e3)
    }
}

/// The human-readable table (what `isoflop bench` prints).
pub fn table(r: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "isoflop bench: {}", r.device);
    if let Some(n) = &r.notice {
        let _ = writeln!(out, "{n}");
    }
    let peak = |p: &Option<Peak>| {
        p.as_ref().map_or("none".into(), |p| {
            format!("{}FLOP/s ({})", si(p.flops), p.source)
        })
    };
    let _ = writeln!(
        out,
        "peak for MFU: datasheet {}; measured {}",
        peak(&r.datasheet_peak),
        peak(&r.measured_peak)
    );
    if let Some(why) = &r.measured_peak_unavailable {
        let _ = writeln!(out, "  (no measured peak: {why})");
    }
    let _ = writeln!(
        out,
        "{:<10} {:>5} {:>8} {:>9} {:>19} {:>10} {:>13} {:>13} {:>10}",
        "size",
        "T",
        "params",
        "batch/mb",
        "step median ± IQR/2",
        "tokens/s",
        "MFU att ds|me",
        "MFU exa ds|me",
        "peak mem"
    );
    for s in &r.results {
        let _ = writeln!(
            out,
            "{:<10} {:>5} {:>8} {:>9} {:>19} {:>10} {:>13} {:>13} {:>10}",
            s.size.to_string(),
            s.model.seq_len,
            si(s.params.total as f64),
            format!("{}/{}", s.batch_size, s.micro_batch),
            format!(
                "{} ±{:.1}%",
                secs(s.step_time_s.median),
                s.step_time_s.rel_half_iqr_percent()
            ),
            si(s.tokens_per_s),
            format!(
                "{}|{}",
                pct(s.mfu.attention_datasheet),
                pct(s.mfu.attention_measured)
            ),
            format!(
                "{}|{}",
                pct(s.mfu.exact_datasheet),
                pct(s.mfu.exact_measured)
            ),
            mib(s.peak_memory_bytes),
        );
    }
    let _ = writeln!(out, "share of step time per phase ({}):", r.phase_method);
    for s in &r.results {
        let parts: Vec<String> = s
            .phases
            .iter()
            .map(|p| {
                format!(
                    "{} {:.1}%",
                    p.name.split(' ').next().unwrap_or(&p.name),
                    100.0 * p.share
                )
            })
            .collect();
        let _ = writeln!(out, "  {:<10} {}", s.size.to_string(), parts.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(device_slug(BackendKind::Cpu, "cpu (2 threads)"), "cpu");
        assert_eq!(
            device_slug(BackendKind::Gpu, "cuda:0 NVIDIA H100 80GB HBM3"),
            "nvidia-h100-80gb-hbm3"
        );
        assert_eq!(device_slug(BackendKind::Gpu, "cuda:1 ???"), "gpu");
    }

    #[test]
    fn number_formatting() {
        assert_eq!(si(1.5e12), "1.500T");
        assert_eq!(si(2048.0), "2.048k");
        assert_eq!(pct(Some(0.4123)), "41.2%");
        assert_eq!(pct(None), "-");
        assert_eq!(secs(0.0123), "12.30 ms");
        assert_eq!(mib(Some(3 << 20)), "3 MiB");
    }
}
