//! `isoflop predict`: losses and compute-optimal allocations of planned runs from a fit, and their task
//! errors through a downstream law.

use anyhow::Context;
use isoflop::fit::predict::{self, PredictOptions, Prediction, Target, TargetTable};
use isoflop::fit::stats::Interval;
use isoflop::fit::table::num;
use isoflop::train::export::{CsvCell, CsvRow};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Arguments of `isoflop predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// A fit directory (holding fit.json and bootstrap.json, as `isoflop fit` writes), a sweep
    /// directory (uses its fit/), or a fit.json.
    pub fit: PathBuf,
    /// Parameters N of the planned run (with --tokens, --multiplier or --flops).
    #[arg(long)]
    pub n: Option<f64>,
    /// Training tokens D of the planned run (with --n).
    #[arg(long)]
    pub tokens: Option<f64>,
    /// Tokens per parameter M = D/N of the planned run (with --n).
    #[arg(long)]
    pub multiplier: Option<f64>,
    /// Training compute C: alone, the compute-optimal point; with --n, D = C/(6N).
    #[arg(long)]
    pub flops: Option<f64>,
    /// A CSV of targets: columns n, tokens, multiplier, flops (empty cells: not given; other columns are
    /// copied to the output). Writes a CSV of predictions next to the JSON.
    #[arg(long)]
    pub targets: Option<PathBuf>,
    /// Laws to use (comma-separated): approach3, overtrain, compute, approach1, approach2,
    /// approach2_akima [default: every law in the fit].
    #[arg(long, value_delimiter = ',')]
    pub law: Vec<String>,
    /// A fit holding the downstream error law to chain with the loss laws [default: the fit's own,
    /// when it has one]: a fit directory, sweep directory or fit.json.
    #[arg(long, value_name = "FIT")]
    pub error_fit: Option<PathBuf>,
    /// Require the chained task error (an error when no downstream law is available).
    #[arg(long)]
    pub error: bool,
    /// Interval level [default: the fit's].
    #[arg(long)]
    pub level: Option<f64>,
    /// Warn when the target compute exceeds this many times the largest compute a law was fitted to.
    #[arg(long, default_value_t = predict::DEFAULT_MAX_EXTRAPOLATION)]
    pub max_extrapolation: f64,
    /// Output JSON [default: predict.json next to fit.json]; with --targets the CSV goes next to it
    /// (same name, .csv).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn cell(i: &Option<Interval>) -> String {
    match i {
        None => "".into(),
        Some(i) if i.lo.is_nan() => num(i.value),
        Some(i) => format!("{} [{}, {}]", num(i.value), num(i.lo), num(i.hi)),
    }
}

fn describe(t: &Target) -> String {
    match (t.n, t.tokens) {
        (Some(n), Some(d)) => format!(
            "N = {}, D = {}, M = D/N = {}, C = 6ND = {}",
            num(n),
            num(d),
            num(d / n),
            num(t.flops)
        ),
        _ => format!("compute-optimal at C = {}", num(t.flops)),
    }
}

/// The terminal table of the predictions of one target.
fn table(out: &mut String, label: &str, preds: &[Prediction]) {
    let _ = writeln!(out, "\n{label}");
    // The task-error columns only when a downstream law is chained.
    let errors = preds
        .iter()
        .any(|p| p.error.is_some() || p.error_opt.is_some());
    let extra = |a: &str, b: &str| {
        if errors {
            format!(" {a:<30} {b:<30}")
        } else {
            String::new()
        }
    };
    let _ = writeln!(
        out,
        "  {:<16} {:<30} {:<34} {:<34} {:<30}{} {:>8}",
        "law",
        "loss",
        "N*",
        "D*",
        "loss at optimum",
        extra("task error", "task error at optimum"),
        "C/C_fit"
    );
    for p in preds {
        let _ = writeln!(
            out,
            "  {:<16} {:<30} {:<34} {:<34} {:<30}{} {:>8}",
            p.law,
            cell(&p.loss),
            cell(&p.n_opt),
            cell(&p.d_opt),
            cell(&p.loss_opt),
            extra(&cell(&p.error), &cell(&p.error_opt)),
            format!("{:.3}", p.extrapolation)
        );
    }
    for p in preds {
        if let Some(w) = &p.warning {
            let _ = writeln!(out, "  warning ({}): {w}", p.law);
        }
        if let Some(w) = &p.error_warning {
            let _ = writeln!(out, "  warning (task error, {}): {w}", p.law);
        }
    }
}

fn csv_escape(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A number of the predictions CSV: empty when unknown or NaN.
struct Num(Option<f64>);

impl CsvCell for Num {
    fn cell(&self) -> String {
        self.0
            .filter(|v| !v.is_nan())
            .map_or(String::new(), |v| format!("{v}"))
    }
}

/// An interval's value, low and high ends (all empty when there is none).
fn parts(i: &Option<Interval>) -> [Num; 3] {
    match i {
        Some(i) => [Num(Some(i.value)), Num(Some(i.lo)), Num(Some(i.hi))],
        None => [Num(None), Num(None), Num(None)],
    }
}

isoflop::csv_row! {
    /// The predictions CSV's own columns of one (target, law) row, after the input columns.
    struct PredictionColumns {
        law: String,
        pred_n: Num,
        pred_tokens: Num,
        pred_flops: Num,
        loss: Num,
        loss_lo: Num,
        loss_hi: Num,
        n_opt: Num,
        n_opt_lo: Num,
        n_opt_hi: Num,
        d_opt: Num,
        d_opt_lo: Num,
        d_opt_hi: Num,
        loss_opt: Num,
        loss_opt_lo: Num,
        loss_opt_hi: Num,
        error: Num,
        error_lo: Num,
        error_hi: Num,
        error_opt: Num,
        error_opt_lo: Num,
        error_opt_hi: Num,
        extrapolation: Num,
        warning: String,
        error_warning: String,
    }
}

impl PredictionColumns {
    fn of(p: &Prediction) -> Self {
        let [loss, loss_lo, loss_hi] = parts(&p.loss);
        let [n_opt, n_opt_lo, n_opt_hi] = parts(&p.n_opt);
        let [d_opt, d_opt_lo, d_opt_hi] = parts(&p.d_opt);
        let [loss_opt, loss_opt_lo, loss_opt_hi] = parts(&p.loss_opt);
        let [error, error_lo, error_hi] = parts(&p.error);
        let [error_opt, error_opt_lo, error_opt_hi] = parts(&p.error_opt);
        PredictionColumns {
            law: p.law.clone(),
            pred_n: Num(p.target.n),
            pred_tokens: Num(p.target.tokens),
            pred_flops: Num(Some(p.target.flops)),
            loss,
            loss_lo,
            loss_hi,
            n_opt,
            n_opt_lo,
            n_opt_hi,
            d_opt,
            d_opt_lo,
            d_opt_hi,
            loss_opt,
            loss_opt_lo,
            loss_opt_hi,
            error,
            error_lo,
            error_hi,
            error_opt,
            error_opt_lo,
            error_opt_hi,
            extrapolation: Num(Some(p.extrapolation)),
            warning: p.warning.clone().unwrap_or_default(),
            error_warning: p.error_warning.clone().unwrap_or_default(),
        }
    }
}

/// The predictions CSV: the input columns, then one row per (target, law).
fn write_csv(path: &Path, t: &TargetTable, preds: &[Vec<Prediction>]) -> anyhow::Result<()> {
    let mut head: Vec<String> = t.header.clone();
    for &o in PredictionColumns::COLUMNS {
        // An input column of the same name keeps its name; ours is prefixed.
        head.push(if t.header.iter().any(|h| h == o) {
            format!("pred_{o}")
        } else {
            o.to_string()
        });
    }
    let mut text = head
        .iter()
        .map(|h| csv_escape(h))
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    for ((_, _, cells), ps) in t.rows.iter().zip(preds) {
        for p in ps {
            let mut row: Vec<String> = cells.iter().map(|c| csv_escape(c)).collect();
            row.extend(
                PredictionColumns::of(p)
                    .values()
                    .iter()
                    .map(|c| csv_escape(c)),
            );
            text += &(row.join(",") + "\n");
        }
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Run `isoflop predict`.
pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    let fit_json = predict::resolve_fit(&args.fit)?;
    let (mut laws, skipped) = predict::load(&fit_json)?;
    let mut error_source = fit_json.clone();
    if let Some(ef) = &args.error_fit {
        let ej = predict::resolve_fit(ef)?;
        let (el, eskipped) = predict::load(&ej)?;
        let Some(d) = el.downstream else {
            let why = eskipped
                .iter()
                .find(|(k, _)| k == "downstream")
                .map(|(_, r)| format!(" (isoflop fit skipped it: {r})"))
                .unwrap_or_default();
            anyhow::bail!(
                "--error-fit {}: the fit has no downstream error law{why}; fit one with `isoflop fit --approach downstream --error-col COLUMN`",
                ej.display()
            );
        };
        laws.downstream = Some(d);
        laws.insane.remove("downstream");
        if let Some(p) = el.insane.get("downstream") {
            laws.insane.insert("downstream".into(), p.clone());
        }
        error_source = ej;
    }
    if args.error && laws.downstream.is_none() {
        let why = skipped
            .iter()
            .find(|(k, _)| k == "downstream")
            .map(|(_, r)| format!(" (isoflop fit skipped it: {r})"))
            .unwrap_or_default();
        anyhow::bail!(
            "--error: {} has no downstream error law{why}; fit one with `isoflop fit --approach downstream --error-col COLUMN`, or give a fit that has one with --error-fit",
            fit_json.display()
        );
    }
    let level = args.level.unwrap_or(laws.level);
    anyhow::ensure!(
        level > 0.0 && level < 1.0,
        "--level must lie in (0, 1), got {level}"
    );
    anyhow::ensure!(
        args.max_extrapolation > 0.0,
        "--max-extrapolation must be positive, got {}",
        args.max_extrapolation
    );
    let flag_given = args.n.is_some()
        || args.tokens.is_some()
        || args.multiplier.is_some()
        || args.flops.is_some();
    let mut targets: Vec<(String, Target)> = vec![];
    if flag_given {
        let t = Target::new(
            args.n,
            args.tokens,
            args.multiplier,
            args.flops,
            "--n/--tokens/--multiplier/--flops",
        )?;
        targets.push((describe(&t), t));
    }
    let table_in = match &args.targets {
        Some(p) => Some(predict::read_targets(p)?),
        None => None,
    };
    if let Some(tt) = &table_in {
        for (line, t, _) in &tt.rows {
            targets.push((format!("line {line}: {}", describe(t)), *t));
        }
    }
    anyhow::ensure!(
        !targets.is_empty(),
        "no target: give --n with --tokens or --multiplier, --flops (with or without --n), or --targets FILE.csv"
    );
    let sized = targets.iter().any(|(_, t)| t.n.is_some());
    let names = predict::select_laws(&laws, &args.law, &skipped, sized)?;
    let opts = PredictOptions {
        level,
        max_extrapolation: args.max_extrapolation,
    };
    let preds: Vec<Vec<Prediction>> = targets
        .iter()
        .map(|(_, t)| {
            names
                .iter()
                .map(|l| predict::predict(&laws, l, t, &opts))
                .collect()
        })
        .collect();
    let mut out = format!(
        "isoflop predict: {} (fit of {}, FLOPs: {}; intervals {:.0}%, bootstrap percentile; C/C_fit: target over largest fitted compute)\n",
        fit_json.display(),
        laws.source,
        laws.convention,
        100.0 * level
    );
    if let Some(d) = &laws.downstream {
        let _ = writeln!(
            out,
            "task error: {} = epsilon - k exp(-gamma L) from {} (fitted to {} runs, loss '{}' in [{:.4}, {:.4}]), chained with each loss law",
            d.error_col,
            error_source.display(),
            d.n_points,
            d.loss_col,
            d.loss_range[0],
            d.loss_range[1]
        );
    }
    for ((label, _), ps) in targets.iter().zip(&preds) {
        table(&mut out, label, ps);
    }
    print!("{out}");
    let json_path = args
        .out
        .clone()
        .unwrap_or_else(|| fit_json.with_file_name("predict.json"));
    if let Some(dir) = json_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let doc = serde_json::json!({
        "fit": fit_json.display().to_string(),
        "source": laws.source,
        "convention": laws.convention,
        "level": level,
        "max_extrapolation": args.max_extrapolation,
        "error_law": laws.downstream.as_ref().map(|d| serde_json::json!({
            "fit": error_source.display().to_string(),
            "error_col": d.error_col,
            "loss_col": d.loss_col,
            "k": d.theta[0],
            "gamma": d.theta[1],
            "epsilon": d.theta[2],
        })),
        "targets": targets.iter().zip(&preds).map(|((label, t), ps)| serde_json::json!({
            "target": t,
            "label": label,
            "predictions": ps,
        })).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&doc).context("serialising predictions")?;
    std::fs::write(&json_path, text + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    println!("\nwrote {}", json_path.display());
    if let Some(tt) = &table_in {
        let csv = json_path.with_extension("csv");
        let skip = usize::from(flag_given);
        write_csv(&csv, tt, &preds[skip..])?;
        println!("wrote {}", csv.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prediction_rows_have_one_value_per_column() {
        let p = Prediction {
            law: "approach3".into(),
            target: Target {
                n: Some(1e6),
                tokens: None,
                flops: 1e18,
            },
            loss: Some(Interval {
                value: 3.0,
                lo: 2.5,
                hi: f64::NAN,
            }),
            n_opt: None,
            d_opt: None,
            loss_opt: None,
            error: None,
            error_opt: None,
            extrapolation: 4.0,
            warning: Some("far, beyond".into()),
            error_warning: None,
        };
        let values = PredictionColumns::of(&p).values();
        assert_eq!(values.len(), PredictionColumns::COLUMNS.len());
        let at = |c: &str| {
            values[PredictionColumns::COLUMNS
                .iter()
                .position(|x| *x == c)
                .unwrap()]
            .clone()
        };
        assert_eq!(
            (
                at("pred_n"),
                at("pred_tokens"),
                at("loss_lo"),
                at("loss_hi")
            ),
            ("1000000".into(), String::new(), "2.5".into(), String::new())
        );
        assert_eq!(at("warning"), "far, beyond");
    }
}
