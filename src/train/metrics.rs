//! Per-step records of a run (`metrics.jsonl`): one JSON object per line, `kind` = `train` or `eval`.

use crate::model::FlopsPerToken;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// One optimizer step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Always `train`.
    pub kind: String,
    /// 1-based optimizer step.
    pub step: u64,
    /// Training tokens seen after this step (input positions, pad included).
    pub tokens: u64,
    /// Mean training loss of this step's batch (nats per non-pad target).
    pub loss: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// Global gradient norm of the mean loss, before clipping.
    pub grad_norm: f64,
    /// FLOPs of this step, Kaplan convention.
    pub step_flops_kaplan: f64,
    /// FLOPs of this step, standard (6·N) convention.
    pub step_flops_standard: f64,
    /// FLOPs of this step, with attention's context term.
    pub step_flops_attention: f64,
    /// FLOPs of this step, exact matmul count.
    pub step_flops_exact: f64,
    /// Cumulative FLOPs up to this step, Kaplan.
    pub flops_kaplan: f64,
    /// Cumulative FLOPs, standard.
    pub flops_standard: f64,
    /// Cumulative FLOPs, attention.
    pub flops_attention: f64,
    /// Cumulative FLOPs, exact.
    pub flops_exact: f64,
    /// Wall time since the run started (seconds; continues across resumes).
    pub elapsed_s: f64,
    /// Wall time of this step.
    pub step_time_s: f64,
    /// Training tokens per second of this step.
    pub tokens_per_s: f64,
    /// Model FLOPs utilisation: `attention`-convention FLOPs per second over the device's peak.
    pub mfu: Option<f64>,
}

/// One evaluation on the held-out windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Always `eval`.
    pub kind: String,
    /// Optimizer steps done when evaluated.
    pub step: u64,
    /// Training tokens seen when evaluated.
    pub tokens: u64,
    /// Mean held-out loss.
    pub eval_loss: f64,
    /// Standard error of `eval_loss`.
    pub eval_loss_se: f64,
    /// Held-out targets evaluated.
    pub eval_tokens: u64,
    /// Cumulative training FLOPs, Kaplan.
    pub flops_kaplan: f64,
    /// Cumulative training FLOPs, standard.
    pub flops_standard: f64,
    /// Cumulative training FLOPs, attention.
    pub flops_attention: f64,
    /// Cumulative training FLOPs, exact.
    pub flops_exact: f64,
    /// Wall time since the run started.
    pub elapsed_s: f64,
}

/// Cumulative FLOPs after `tokens` training tokens, per convention (kaplan, standard, attention, exact).
pub fn cumulative_flops(f: &FlopsPerToken, tokens: u64) -> [f64; 4] {
    let t = tokens as f64;
    [f.kaplan * t, f.standard * t, f.attention * t, f.exact * t]
}

/// Appends records to `metrics.jsonl`, flushing every line so a killed run loses nothing written.
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Open (append) `dir/metrics.jsonl`, first dropping any rows past `keep_through_step` (the rows a
    /// resumed run will write again) and any torn last line.
    pub fn open(dir: &Path, keep_through_step: Option<u64>) -> std::io::Result<Self> {
        let path = dir.join("metrics.jsonl");
        if let Some(last) = keep_through_step {
            if path.exists() {
                let kept: Vec<String> = BufReader::new(File::open(&path)?)
                    .lines()
                    .map_while(Result::ok)
                    .filter(|l| {
                        serde_json::from_str::<serde_json::Value>(l)
                            .ok()
                            .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                            .is_some_and(|s| s <= last)
                    })
                    .collect();
                let tmp = dir.join("metrics.jsonl.tmp");
                let mut f = File::create(&tmp)?;
                for l in kept {
                    writeln!(f, "{l}")?;
                }
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(MetricsWriter { path, file })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record as a JSON line.
    pub fn write<T: Serialize>(&mut self, record: &T) -> std::io::Result<()> {
        let line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        writeln!(self.file, "{line}")?;
        self.file.flush()
    }
}

/// Read every `train` record of a metrics file (for exports and tests).
pub fn read_step_records(path: &Path) -> std::io::Result<Vec<StepRecord>> {
    let mut out = Vec::new();
    for (i, line) in BufReader::new(File::open(path)?).lines().enumerate() {
        let line = line?;
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}:{}: {e}", path.display(), i + 1),
            )
        })?;
        if v.get("kind").and_then(|k| k.as_str()) == Some("train") {
            out.push(serde_json::from_value(v).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}:{}: {e}", path.display(), i + 1),
                )
            })?);
        }
    }
    Ok(out)
}
