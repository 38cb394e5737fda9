//! Sweep exports: `runs.csv` (one row per run) and `steps.csv` (every step of every run, via
//! [`crate::train::export::write_steps_csv`]). These are the input of `isoflop fit`.

use super::dir::{RunState, SweepDir};
use super::plan::PlannedRun;
use super::SweepError;
use crate::csv_row;
use crate::error::error_chain;
use crate::model::FlopConvention;
use crate::train::export::{csv_field, write_steps_csv, CsvRow};
use crate::train::manifest::{FinalFigures, Manifest};
use std::path::{Path, PathBuf};

csv_row! {
    /// One row of `runs.csv`, before the plan's `err_*` columns. `lr_factor` is the multiplier of the
    /// `[train]` lr rule in a search by factors (blank otherwise); `lr`, `batch_size` and `beta2` are the
    /// values each run trained with.
    #[derive(Clone, Debug)]
    pub struct RunsRow {
        /// Run name.
        name: String,
        /// The (budget, size) point.
        point: String,
        /// Width D.
        d_model: usize,
        /// Depth L.
        n_layers: usize,
        /// Context T.
        seq_len: usize,
        /// Vocabulary V.
        vocab_size: usize,
        /// N: non-embedding parameters + head.
        n_params: u64,
        /// Every parameter.
        n_params_total: u64,
        /// Parameters without `embed` and `head`.
        non_embedding: u64,
        /// Training tokens.
        tokens: u64,
        /// Tokens per parameter N.
        tokens_per_param: f64,
        /// Steps.
        steps: u64,
        /// Sequences per step.
        batch_size: usize,
        /// Peak learning rate.
        lr: f64,
        /// Factor of the lr rule in a search by factors.
        lr_factor: Option<f64>,
        /// AdamW β2.
        beta2: f32,
        /// Warmup steps.
        warmup_steps: u64,
        /// Last training loss (finished runs).
        loss: Option<f64>,
        /// Final held-out loss (finished runs).
        eval_loss: Option<f64>,
        /// Its standard error.
        eval_loss_se: Option<f64>,
        /// Training FLOPs, Kaplan.
        flops_kaplan: f64,
        /// Training FLOPs, standard.
        flops_standard: f64,
        /// Training FLOPs, attention.
        flops_attention: f64,
        /// Training FLOPs, exact.
        flops_exact: f64,
        /// IsoFLOP budget.
        budget: Option<f64>,
        /// The budget's convention (blank without a budget).
        budget_convention: String,
        /// Tokens per parameter target.
        multiplier: Option<f64>,
        /// Seed.
        seed: u64,
        /// The run's state.
        status: String,
    }
}

/// Columns of `runs.csv` (before the plan's `err_*` columns).
pub const RUNS_COLUMNS: &[&str] = RunsRow::COLUMNS;

impl RunsRow {
    /// The row of planned run `r` in state `state`, with its final figures when finished.
    pub fn of(
        r: &PlannedRun,
        state: &RunState,
        figures: Option<&FinalFigures>,
        convention: FlopConvention,
    ) -> Self {
        let c = &r.config;
        let flops = r.flops_per_token.scale(r.tokens as f64);
        RunsRow {
            name: r.name.clone(),
            point: r.point.clone(),
            d_model: c.model.d_model,
            n_layers: c.model.n_layers,
            seq_len: c.model.seq_len,
            vocab_size: c.model.vocab_size,
            n_params: r.params.n,
            n_params_total: r.params.total,
            non_embedding: r.params.non_embedding,
            tokens: r.tokens,
            tokens_per_param: r.tokens as f64 / r.params.n as f64,
            steps: c.steps,
            batch_size: c.batch_size,
            lr: c.lr,
            lr_factor: r.search.as_ref().and_then(|s| s.lr_factor),
            beta2: c.optimizer.beta2,
            warmup_steps: c.warmup_steps,
            loss: figures.and_then(|f| f.train_loss),
            eval_loss: figures.and_then(|f| f.eval_loss),
            eval_loss_se: figures.and_then(|f| f.eval_loss_se),
            flops_kaplan: flops.kaplan,
            flops_standard: flops.standard,
            flops_attention: flops.attention,
            flops_exact: flops.exact,
            budget: r.budget,
            budget_convention: match r.budget {
                Some(_) => convention.name().to_string(),
                None => String::new(),
            },
            multiplier: r.multiplier,
            seed: c.seed,
            status: state.label().to_string(),
        }
    }
}

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
    for r in &sd.plan.runs {
        let state = sd.state(&r.name);
        let figures = match state {
            RunState::Finished => Manifest::load(&sd.run_dir(&r.name))
                .ok()
                .map(|m| m.final_figures),
            _ => None,
        };
        let fields = RunsRow::of(r, &state, figures.as_ref(), sd.plan.convention).values();
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
        write_steps_csv(&refs, &mut buf).map_err(|e| io(&steps_path)(error_chain(&e)))?
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
            rows += write_steps_csv(&one_ref, &mut one)
                .map_err(|e| io(&steps_path)(error_chain(&e)))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FlopsPerToken, ParamCounts};
    use crate::train::TrainConfig;

    #[test]
    fn runs_rows_have_one_value_per_column() {
        let config = TrainConfig::default();
        let r = PlannedRun {
            name: "c1e12-d64l1-s0".into(),
            point: "c1e12-d64l1".into(),
            replicate: 0,
            arm: None,
            search: None,
            budget: Some(1e12),
            multiplier: None,
            params: ParamCounts::of(&config.model),
            flops_per_token: FlopsPerToken::of(&config.model),
            tokens: 1000,
            config,
        };
        let figures = FinalFigures {
            train_loss: Some(3.5),
            ..Default::default()
        };
        for (state, figures) in [
            (RunState::Finished, Some(&figures)),
            (RunState::Pending, None),
        ] {
            let row = RunsRow::of(&r, &state, figures, FlopConvention::Exact);
            let values = row.values();
            assert_eq!(values.len(), RUNS_COLUMNS.len());
            let at = |col: &str| &values[RUNS_COLUMNS.iter().position(|c| *c == col).unwrap()];
            assert_eq!(
                at("flops_exact"),
                &r.flops(FlopConvention::Exact).to_string()
            );
            assert_eq!(at("budget_convention"), "exact");
            assert_eq!(at("status"), state.label());
        }
    }
}
