//! Sweep exports: `runs.csv` (one row per run) and `steps.csv` (every step of every run, via
//! [`crate::train::export::write_steps_csv`]). These are the input of `isoflop fit`.

use super::dir::{RunState, SweepDir};
use super::SweepError;
use crate::model::FlopConvention;
use crate::train::export::{csv_field, write_steps_csv};
use crate::train::manifest::Manifest;
use std::path::{Path, PathBuf};

/// Columns of `runs.csv`. `lr_factor` is the multiplier of the `[train]` lr rule in a search by
/// factors (blank otherwise); `lr`, `batch_size` and `beta2` are the values each run trained with.
pub const RUNS_COLUMNS: &[&str] = &[
    "name",
    "point",
    "d_model",
    "n_layers",
    "seq_len",
    "vocab_size",
    "n_params",
    "n_params_total",
    "non_embedding",
    "tokens",
    "tokens_per_param",
    "steps",
    "batch_size",
    "lr",
    "lr_factor",
    "beta2",
    "warmup_steps",
    "loss",
    "eval_loss",
    "eval_loss_se",
    "flops_kaplan",
    "flops_standard",
    "flops_attention",
    "flops_exact",
    "budget",
    "budget_convention",
    "multiplier",
    "seed",
    "status",
];

/// The `err_*` columns a plan adds at the end of `runs.csv`: `err_<task>` per `[eval]` task, then
/// `err_avg` (none without tasks).
pub fn task_columns(plan: &super::Plan) -> Vec<String> {
    let names = plan.eval.names();
    if names.is_empty() {
        return vec![];
    }
    let mut cols: Vec<String> = names.iter().map(|n| format!("err_{n}")).collect();
    cols.push("err_avg".into());
    cols
}

/// A finished run's task errors from its `tasks.json`, in [`task_columns`] order (empty strings when
/// the file is missing or lacks a task).
fn task_errors(run_dir: &Path, names: &[String]) -> Vec<String> {
    let j: Option<serde_json::Value> =
        std::fs::read_to_string(run_dir.join(super::runner::TASKS_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
    let err_of = |name: &str| -> Option<f64> {
        j.as_ref()?
            .get("tasks")?
            .as_array()?
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))?
            .get("err")?
            .as_f64()
    };
    let errs: Vec<Option<f64>> = names.iter().map(|n| err_of(n)).collect();
    // err_avg over these tasks only when every one was scored.
    let avg = errs
        .iter()
        .copied()
        .collect::<Option<Vec<f64>>>()
        .map(|e| e.iter().sum::<f64>() / e.len() as f64);
    errs.into_iter()
        .chain(std::iter::once(avg))
        .map(|x| x.map_or(String::new(), |v| v.to_string()))
        .collect()
}

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct ExportSummary {
    /// `runs.csv`.
    pub runs_csv: PathBuf,
    /// Rows in it.
    pub runs: usize,
    /// `steps.csv`.
    pub steps_csv: PathBuf,
    /// Rows in it.
    pub steps: usize,
}

/// The text of `runs.csv`: every run of the plan, finished or not (losses empty until finished). A plan
/// with arms gets a first column `arm`.
pub fn runs_csv(sd: &SweepDir) -> String {
    let arms = !sd.plan.arms().is_empty();
    let mut out = if arms {
        "arm,".to_string()
    } else {
        String::new()
    };
    out.push_str(&RUNS_COLUMNS.join(","));
    let task_cols = task_columns(&sd.plan);
    let task_names = sd.plan.eval.names();
    for c in &task_cols {
        out.push(',');
        out.push_str(&csv_field(c));
    }
    out.push('\n');
    let opt = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
    for r in &sd.plan.runs {
        let state = sd.state(&r.name);
        let figures = match state {
            RunState::Finished => Manifest::load(&sd.run_dir(&r.name))
                .ok()
                .map(|m| m.final_figures),
            _ => None,
        };
        let c = &r.config;
        let fields = [
            r.name.clone(),
            r.point.clone(),
            c.model.d_model.to_string(),
            c.model.n_layers.to_string(),
            c.model.seq_len.to_string(),
            c.model.vocab_size.to_string(),
            r.params.n.to_string(),
            r.params.total.to_string(),
            r.params.non_embedding.to_string(),
            r.tokens.to_string(),
            (r.tokens as f64 / r.params.n as f64).to_string(),
            c.steps.to_string(),
            c.batch_size.to_string(),
            c.lr.to_string(),
            opt(r.search.as_ref().and_then(|s| s.lr_factor)),
            c.optimizer.beta2.to_string(),
            c.warmup_steps.to_string(),
            opt(figures.as_ref().and_then(|f| f.train_loss)),
            opt(figures.as_ref().and_then(|f| f.eval_loss)),
            opt(figures.as_ref().and_then(|f| f.eval_loss_se)),
            r.flops(FlopConvention::Kaplan).to_string(),
            r.flops(FlopConvention::Standard).to_string(),
            r.flops(FlopConvention::Attention).to_string(),
            r.flops(FlopConvention::Exact).to_string(),
            opt(r.budget),
            if r.budget.is_some() {
                sd.plan.convention.name().to_string()
            } else {
                String::new()
            },
            opt(r.multiplier),
            c.seed.to_string(),
            state.label().to_string(),
        ];
        let mut row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        if !task_cols.is_empty() {
            if state == RunState::Finished {
                row.extend(task_errors(&sd.run_dir(&r.name), &task_names));
            } else {
                row.extend(task_cols.iter().map(|_| String::new()));
            }
        }
        if arms {
            out.push_str(&csv_field(r.arm.as_deref().unwrap_or("")));
            out.push(',');
        }
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// Write `DIR/runs.csv` and `DIR/steps.csv` (steps of every run that has records; with arms, a first
/// column `arm`).
pub fn export(sd: &SweepDir) -> Result<ExportSummary, SweepError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: String| SweepError::Io { path: p, msg: e }
    };
    let runs_path = sd.dir.join("runs.csv");
    super::dir::write_atomic(&runs_path, runs_csv(sd).as_bytes())?;
    let dirs: Vec<(String, PathBuf)> = sd
        .plan
        .runs
        .iter()
        .map(|r| (r.name.clone(), sd.run_dir(&r.name)))
        .filter(|(_, d)| d.join("run.json").exists() && d.join("metrics.jsonl").exists())
        .collect();
    let refs: Vec<(String, &Path)> = dirs.iter().map(|(n, d)| (n.clone(), d.as_path())).collect();
    let steps_path = sd.dir.join("steps.csv");
    let mut buf = Vec::new();
    let steps = if sd.plan.arms().is_empty() {
        write_steps_csv(&refs, &mut buf).map_err(io(&steps_path))?
    } else {
        // One run at a time, each line prefixed with the run's arm; the header once.
        let mut rows = 0;
        let mut header_done = false;
        let arm_of = |name: &str| {
            sd.plan
                .get(name)
                .and_then(|r| r.arm.clone())
                .unwrap_or_default()
        };
        let all = if refs.is_empty() {
            vec![None]
        } else {
            refs.iter().map(Some).collect()
        };
        for r in all {
            let mut one = Vec::new();
            let one_ref: Vec<(String, &Path)> = r.into_iter().cloned().collect();
            rows += write_steps_csv(&one_ref, &mut one).map_err(io(&steps_path))?;
            let text = String::from_utf8_lossy(&one);
            let arm = one_ref.first().map_or(String::new(), |(n, _)| arm_of(n));
            for (k, line) in text.lines().enumerate() {
                if k == 0 {
                    if header_done {
                        continue;
                    }
                    header_done = true;
                    buf.extend_from_slice(b"arm,");
                } else {
                    buf.extend_from_slice(csv_field(&arm).as_bytes());
                    buf.push(b',');
                }
                buf.extend_from_slice(line.as_bytes());
                buf.push(b'\n');
            }
        }
        rows
    };
    super::dir::write_atomic(&steps_path, &buf)?;
    Ok(ExportSummary {
        runs_csv: runs_path,
        runs: sd.plan.runs.len(),
        steps_csv: steps_path,
        steps,
    })
}
