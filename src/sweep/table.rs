//! The plan as a text table: one row per run, and a total.

use super::estimate::Throughput;
use super::plan::{Plan, PlannedRun};
use crate::train::progress::fmt_duration;
use std::fmt::Write;

/// `1.23e11`-style engineering number.
pub fn sci(x: f64) -> String {
    format!("{x:.3e}")
}

/// Parameter / token counts: `2.10M`, `512k`, `1.3B`.
pub fn count(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2}B", x / 1e9),
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e4 => format!("{:.0}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// The plan table: name, D, L, N, tokens, tokens/N, steps, batch, lr, warmup, FLOPs (the plan's
/// convention), budget (IsoFLOP), seed and estimated time (when a throughput is known). With arms, an
/// `arm` column and one cost line per arm; with a search, `lr×` and `beta2` columns. Then the number of
/// runs and the compute per model size, and in all.
pub fn plan_table(plan: &Plan, throughput: Option<&Throughput>) -> String {
    let arms = plan.arms();
    let search = plan.runs.iter().any(|r| r.search.is_some());
    let conv = plan.convention.name();
    let mut header = vec![
        "name".to_string(),
        "D".into(),
        "L".into(),
        "params".into(),
        "tokens".into(),
        "tok/param".into(),
        "steps".into(),
        "batch".into(),
        "lr".into(),
        "warmup".into(),
        format!("FLOPs({conv})"),
        "budget".into(),
        "seed".into(),
    ];
    if search {
        header.insert(9, "lr×".into());
        header.insert(10, "beta2".into());
    }
    if throughput.is_some() {
        header.push("est. time".into());
    }
    if !arms.is_empty() {
        header.insert(1, "arm".into());
    }
    let mut rows = vec![header];
    let mut total_s = 0.0;
    let mut total_flops = 0.0;
    for r in &plan.runs {
        let c = &r.config;
        let flops = r.flops(plan.convention);
        total_flops += flops;
        let mut row = vec![
            r.name.clone(),
            c.model.d_model.to_string(),
            c.model.n_layers.to_string(),
            count(r.params.n as f64),
            count(r.tokens as f64),
            format!("{:.3}", r.tokens as f64 / r.params.n as f64),
            c.steps.to_string(),
            c.batch_size.to_string(),
            format!("{:.3e}", c.lr),
            c.warmup_steps.to_string(),
            sci(flops),
            r.budget.map_or("-".into(), sci),
            c.seed.to_string(),
        ];
        if search {
            let f = r.search.as_ref().and_then(|s| s.lr_factor);
            row.insert(9, f.map_or("-".into(), |f| format!("{f}")));
            row.insert(10, c.optimizer.beta2.to_string());
        }
        if let Some(t) = throughput {
            let s = t.seconds(r);
            total_s += s;
            row.push(fmt_duration(s));
        }
        if !arms.is_empty() {
            row.insert(1, r.arm.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (s, w))| {
                if i == 0 {
                    format!("{s:<w$}")
                } else {
                    format!("{s:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    // `label: k runs, F FLOPs (conv)[, estimated T]` for one size or arm.
    let group_line = |out: &mut String, label: &str, runs: &[&PlannedRun]| {
        let flops: f64 = runs.iter().map(|r| r.flops(plan.convention)).sum();
        let _ = write!(
            out,
            "{label}: {} runs, {} FLOPs ({conv})",
            runs.len(),
            sci(flops)
        );
        if let Some(t) = throughput {
            let s: f64 = runs.iter().map(|r| t.seconds(r)).sum();
            let _ = write!(out, ", estimated {}", fmt_duration(s));
        }
        out.push('\n');
    };
    // Runs and compute per size, in plan order.
    let mut sizes: Vec<(usize, usize)> = Vec::new();
    for r in &plan.runs {
        let s = (r.config.model.d_model, r.config.model.n_layers);
        if !sizes.contains(&s) {
            sizes.push(s);
        }
    }
    for (d, l) in sizes {
        let runs: Vec<_> = plan
            .runs
            .iter()
            .filter(|r| (r.config.model.d_model, r.config.model.n_layers) == (d, l))
            .collect();
        let label = format!("size d{d}l{l} (N = {})", count(runs[0].params.n as f64));
        group_line(&mut out, &label, &runs);
    }
    let _ = write!(
        out,
        "{} runs, {} FLOPs ({conv})",
        plan.runs.len(),
        sci(total_flops)
    );
    if let Some(t) = throughput {
        let _ = write!(
            out,
            ", estimated {} one at a time\nthroughput {}",
            fmt_duration(total_s),
            t.source
        );
    }
    out.push('\n');
    for a in &arms {
        let runs: Vec<_> = plan
            .runs
            .iter()
            .filter(|r| r.arm.as_ref() == Some(a))
            .collect();
        group_line(&mut out, &format!("arm {a}"), &runs);
    }
    out
}
