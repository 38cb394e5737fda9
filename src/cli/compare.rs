//! `isoflop compare`: two training recipes (arms) compared across scale, with a paired bootstrap.

use isoflop::fit::compare::{self, CompareOptions};
use std::path::{Path, PathBuf};

/// Arguments of `isoflop compare`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// A sweep directory with arms (or a CSV with an arm column), or two inputs A B (sweep directories
    /// or CSVs), one arm each. The first arm is the baseline: ΔL = L(other) − L(baseline).
    #[arg(required = true, num_args = 1..=2)]
    pub inputs: Vec<PathBuf>,
    /// Column that names the arm, for one input.
    #[arg(long, default_value = "arm")]
    pub by: String,
    /// Arm names: with one input, which arms and in which order (the first is the baseline); with two
    /// inputs, their names [default: the inputs' file or directory names].
    #[arg(long, value_delimiter = ',')]
    pub names: Vec<String>,
    /// Extrapolate ΔL(C) and look for a crossover up to this compute [default: 1000× the largest observed].
    #[arg(long = "to")]
    pub to: Option<f64>,
    /// A budget C at which to name the winner with its bootstrap probability (repeatable).
    #[arg(long)]
    pub at: Vec<f64>,
    /// Output directory for compare.json and the plots [default: INPUT/compare for a directory, else
    /// <stem>_compare next to the file].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// FLOP convention and the columns of N, D, C, loss and run id.
    #[command(flatten)]
    pub cols: super::columns::ColumnArgs,
    /// Paired bootstrap replicates.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Seed, interval level, Huber δ and budget tolerance.
    #[command(flatten)]
    pub law: super::columns::LawArgs,
    /// Grid points of each arm's envelope of training curves.
    #[arg(long, default_value_t = 60)]
    pub envelope_grid: usize,
    /// Skip the per-arm Approach 3 fits (the slowest part).
    #[arg(long)]
    pub no_approach3: bool,
    /// Write compare.json only.
    #[arg(long)]
    pub no_plots: bool,
}

/// Run `isoflop compare`.
pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    args.law.check(args.envelope_grid)?;
    if let Some(t) = args.to {
        anyhow::ensure!(
            t.is_finite() && t > 0.0,
            "--to must be a positive compute, got {t}"
        );
    }
    if let Some(c) = args.at.iter().find(|c| !(c.is_finite() && **c > 0.0)) {
        anyhow::bail!("--at must be a positive compute, got {c}");
    }
    let cols = args.cols.columns();
    let inputs: Vec<&Path> = args.inputs.iter().map(PathBuf::as_path).collect();
    let arms = compare::load_arms(&inputs, &args.by, &args.names, &cols)?;
    for a in &arms {
        anyhow::ensure!(
            !a.ds.points.is_empty() || !a.ds.curves.is_empty(),
            "{}: arm {:?} has no usable rows",
            a.ds.source,
            a.name
        );
    }
    let opts = CompareOptions {
        c_max: args.to,
        at: args.at.clone(),
        bootstrap: args.bootstrap,
        seed: args.law.seed,
        level: args.law.level,
        delta: args.law.huber_delta,
        budget_tol: args.law.budget_tol,
        envelope_grid: args.envelope_grid,
        approach3: !args.no_approach3,
    };
    let source = args
        .inputs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" vs ");
    let rep = compare::compare(&source, &arms, &opts)?;
    let first = &args.inputs[0];
    let out = match &args.out {
        Some(o) => o.clone(),
        None if first.is_dir() => first.join("compare"),
        None => {
            let stem = first
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "input".into());
            first.with_file_name(format!("{stem}_compare"))
        }
    };
    super::columns::write_report(&out, &compare::table(&rep), "compare.json", &rep)?;
    if !args.no_plots {
        for p in compare::write_plots(&out, &rep)? {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}
