//! Tidy CSV exports of run directories: one row per step per run, with the run's config columns.

use super::manifest::Manifest;
use super::metrics::read_step_records;
use std::io::Write;
use std::path::Path;

/// Config columns put on every row (the run's identity for grouping in pandas).
pub const RUN_COLUMNS: &[&str] = &[
    "run",
    "d_model",
    "n_layers",
    "seq_len",
    "vocab_size",
    "n_params",
    "n_params_total",
    "n_params_non_embedding",
    "batch_size",
    "lr",
    "warmup_steps",
    "weight_decay",
    "seed",
    "steps_planned",
    "status",
];

/// Step columns.
pub const STEP_COLUMNS: &[&str] = &[
    "step",
    "tokens",
    "loss",
    "lr_t",
    "grad_norm",
    "flops_kaplan",
    "flops_standard",
    "flops_attention",
    "flops_exact",
    "elapsed_s",
    "tokens_per_s",
    "mfu",
];

fn run_values(name: &str, m: &Manifest) -> Vec<String> {
    let c = &m.config;
    vec![
        name.to_string(),
        c.model.d_model.to_string(),
        c.model.n_layers.to_string(),
        c.model.seq_len.to_string(),
        c.model.vocab_size.to_string(),
        m.params.n.to_string(),
        m.params.total.to_string(),
        m.params.non_embedding.to_string(),
        c.batch_size.to_string(),
        c.lr.to_string(),
        c.warmup_steps.to_string(),
        c.optimizer.weight_decay.to_string(),
        c.seed.to_string(),
        c.steps.to_string(),
        format!("{:?}", m.status).to_lowercase(),
    ]
}

/// Quote a CSV field when needed.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Write the per-step CSV of `runs` (each a run directory) to `out`. `name_of` names each run.
pub fn write_steps_csv(runs: &[(String, &Path)], out: &mut dyn Write) -> Result<usize, String> {
    let header: Vec<&str> = RUN_COLUMNS.iter().chain(STEP_COLUMNS).copied().collect();
    writeln!(out, "{}", header.join(",")).map_err(|e| e.to_string())?;
    let mut rows = 0;
    for (name, dir) in runs {
        let m = Manifest::load(dir)?;
        let path = dir.join("metrics.jsonl");
        let records = read_step_records(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let rv: Vec<String> = run_values(name, &m).iter().map(|s| csv_field(s)).collect();
        for r in records {
            let opt = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
            let sv = [
                r.step.to_string(),
                r.tokens.to_string(),
                r.loss.to_string(),
                r.lr.to_string(),
                r.grad_norm.to_string(),
                r.flops_kaplan.to_string(),
                r.flops_standard.to_string(),
                r.flops_attention.to_string(),
                r.flops_exact.to_string(),
                r.elapsed_s.to_string(),
                r.tokens_per_s.to_string(),
                opt(r.mfu),
            ];
            writeln!(out, "{},{}", rv.join(","), sv.join(",")).map_err(|e| e.to_string())?;
            rows += 1;
        }
    }
    Ok(rows)
}
