//! The flags `isoflop fit` and `isoflop compare` share: which FLOP convention and which CSV
//! columns hold N, D, C, the loss and the run id, and the law-fit settings. One definition each,
//! flattened into both commands.

use isoflop::fit::data::Columns;
use isoflop::model::accounting::FlopConvention;

/// `--convention`, `--n-col`, `--d-col`, `--c-col`, `--loss-col`, `--run-col`.
#[derive(clap::Args, Debug, Clone)]
pub struct ColumnArgs {
    /// FLOP convention: reads the `flops_<convention>` columns of sweep exports.
    #[arg(long, value_enum, default_value_t = FlopConvention::Standard)]
    pub convention: FlopConvention,
    /// Column of parameters N [default: n_params, n, N, params, "Model Size"].
    #[arg(long)]
    pub n_col: Option<String>,
    /// Column of training tokens D [default: tokens, D, n_tokens; else D = C/(6N)].
    #[arg(long)]
    pub d_col: Option<String>,
    /// Column of training FLOPs C [default: flops_<convention>, flops, C, "Training FLOP"; else C = 6ND].
    #[arg(long)]
    pub c_col: Option<String>,
    /// Column of the final loss [default: eval_loss, loss, final_loss].
    #[arg(long)]
    pub loss_col: Option<String>,
    /// Column of the run id, which joins steps with runs and pairs runs across arms [default: run_id,
    /// run, name, id].
    #[arg(long)]
    pub run_col: Option<String>,
}

impl ColumnArgs {
    /// The fitter's column choice: these flags, with the per-step columns left to their defaults.
    pub fn columns(&self) -> Columns {
        Columns {
            convention: self.convention,
            n: self.n_col.clone(),
            d: self.d_col.clone(),
            c: self.c_col.clone(),
            loss: self.loss_col.clone(),
            run: self.run_col.clone(),
            step_c: None,
            step_d: None,
            step_loss: None,
        }
    }
}

/// `--seed`, `--level`, `--huber-delta`, `--budget-tol`: the law-fit flags `isoflop fit` and `isoflop
/// compare` share with the same defaults (`--bootstrap` and `--envelope-grid` differ between them).
#[derive(clap::Args, Debug, Clone)]
pub struct LawArgs {
    /// Bootstrap seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Confidence level of every interval.
    #[arg(long, default_value_t = 0.95)]
    pub level: f64,
    /// Huber δ on log-loss residuals.
    #[arg(long, default_value_t = 1e-3)]
    pub huber_delta: f64,
    /// Runs whose FLOPs differ by less than this fraction share an IsoFLOP budget.
    #[arg(long, default_value_t = 0.1)]
    pub budget_tol: f64,
}

impl LawArgs {
    /// Checks these flags and the command's `--envelope-grid`.
    pub fn check(&self, envelope_grid: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.level > 0.0 && self.level < 1.0,
            "--level must lie in (0, 1), got {}",
            self.level
        );
        anyhow::ensure!(
            self.huber_delta > 0.0,
            "--huber-delta must be positive, got {}",
            self.huber_delta
        );
        anyhow::ensure!(
            self.budget_tol > 0.0,
            "--budget-tol must be positive, got {}",
            self.budget_tol
        );
        anyhow::ensure!(envelope_grid >= 2, "--envelope-grid must be at least 2");
        Ok(())
    }
}

/// Create the output directory `out`, print the report's `table`, and write `rep` as pretty JSON to
/// `out/name`, saying so.
pub fn write_report(
    out: &std::path::Path,
    table: &str,
    name: &str,
    rep: &impl serde::Serialize,
) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output directory {}", out.display()))?;
    print!("{table}");
    let json = out.join(name);
    let text = serde_json::to_string_pretty(rep).with_context(|| format!("serialising {name}"))?;
    std::fs::write(&json, text + "\n")
        .with_context(|| format!("cannot write {}", json.display()))?;
    println!("\nwrote {}", json.display());
    Ok(())
}
