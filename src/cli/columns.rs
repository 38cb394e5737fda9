//! The column flags `isoflop fit` and `isoflop compare` share: which FLOP convention and which CSV
//! columns hold N, D, C, the loss and the run id. One definition, flattened into both commands.

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
