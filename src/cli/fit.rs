//! `isoflop fit`: scaling-law fits of sweep exports or CSVs.

use anyhow::Context;
use isoflop::fit::data::{self, Columns};
use isoflop::fit::hparams::{self, HpOptions};
use isoflop::fit::law::{LawOptions, Objective};
use isoflop::fit::report::{self, DownstreamOptions, FitKind, FitOptions};
use isoflop::fit::{downstream, parametric, plot, predict, FitError};
use std::path::PathBuf;

/// Which fits to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Approach {
    /// Approach 1: lower envelope of the training curves (needs per-step curves).
    #[value(name = "1")]
    One,
    /// Approach 2: IsoFLOP minima (parabola and Akima).
    #[value(name = "2")]
    Two,
    /// Approach 3: parametric L(N, D) with bootstrap intervals.
    #[value(name = "3")]
    Three,
    /// L(C) = E + λ·C^(−α) on the envelope (or the IsoFLOP minima).
    Compute,
    /// Over-training law of Gadre et al.: L = E + a·N^(−α) + b·(M·N)^(−α).
    Overtrain,
    /// Task error against loss (Gadre et al.): Err(L) = ε − k·exp(−γ·L), fitted to --error-col.
    Downstream,
    /// Every fit the data supports (default); not `hparams`.
    All,
    /// Laws of the optimal learning rate and batch size in N, from a sweep that searched them
    /// (columns `lr`, `batch_size`, optional `beta2`); not part of `all`.
    Hparams,
}

/// `--objective` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ObjectiveArg {
    /// Σ Huber_δ(ln L̂ − ln L).
    Huber,
    /// Σ (L̂ − L)².
    Lsq,
}

/// Arguments of `isoflop fit`.
#[derive(clap::Args, Debug)]
pub struct FitArgs {
    /// A sweep directory (runs.csv and/or steps.csv) or a CSV with one row per run.
    pub input: PathBuf,
    /// A per-step CSV (run id, cumulative FLOPs, loss) for Approach 1, when INPUT is a file.
    #[arg(long)]
    pub steps: Option<PathBuf>,
    /// Fits to run (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Approach::All])]
    pub approach: Vec<Approach>,
    /// Output directory for fit.json and the plots [default: INPUT/fit for a directory, else
    /// <stem>_fit next to the file].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// FLOP convention and the columns of N, D, C, loss and run id.
    #[command(flatten)]
    pub cols: super::columns::ColumnArgs,
    /// Per-step column of cumulative FLOPs [default: flops_<convention>, flops, C].
    #[arg(long)]
    pub step_c_col: Option<String>,
    /// Per-step column of cumulative tokens [default: tokens, D; else C/(6N)].
    #[arg(long)]
    pub step_d_col: Option<String>,
    /// Per-step column of the loss [default: loss, train_loss, eval_loss].
    #[arg(long)]
    pub step_loss_col: Option<String>,
    /// Bootstrap replicates for the intervals of the law fits (0: none).
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Seed, interval level, Huber δ and budget tolerance.
    #[command(flatten)]
    pub law: super::columns::LawArgs,
    /// Objective of the law fits (Approach 3, over-training, L(C)): `huber` = Huber on ln L (Hoffmann
    /// et al., Besiroglu et al.); `lsq` = least squares on L itself (Gadre et al.'s curve_fit).
    #[arg(long, value_enum, default_value_t = ObjectiveArg::Huber)]
    pub objective: ObjectiveArg,
    /// Grid points of the Approach 1 envelope.
    #[arg(long, default_value_t = 250)]
    pub envelope_grid: usize,
    /// Drop the K highest-loss points before Approach 3 and the over-training fit (Epoch drops 5).
    #[arg(long, default_value_t = 0)]
    pub drop_highest: usize,
    /// Fit only the runs of this arm (the `arm` column of a sweep with `[[arms]]`; required there).
    #[arg(long, value_name = "NAME")]
    pub arm: Option<String>,
    /// Column of the task error (1 − accuracy) for the downstream fit; with the default `--approach
    /// all` the downstream law is fitted whenever the table has this column.
    #[arg(long, default_value = "err_avg")]
    pub error_col: String,
    /// Random-chance error drawn on the downstream plot [default: 0.75, a 4-way multiple choice].
    #[arg(long)]
    pub chance: Option<f64>,
    /// Write fit.json only.
    #[arg(long)]
    pub no_plots: bool,
}

/// Run `isoflop fit`.
pub fn run(args: FitArgs) -> anyhow::Result<()> {
    args.law.check(args.envelope_grid)?;
    let cols = Columns {
        step_c: args.step_c_col.clone(),
        step_d: args.step_d_col.clone(),
        step_loss: args.step_loss_col.clone(),
        ..args.cols.columns()
    };
    if let Some(c) = args.chance {
        anyhow::ensure!(
            (0.0..=1.0).contains(&c),
            "--chance must lie in [0, 1] (an error rate), got {c}"
        );
    }
    let all = args.approach.contains(&Approach::All);
    let down_only = !all && args.approach.iter().all(|a| *a == Approach::Downstream);
    // The downstream fit reads (loss, error) pairs only: no N or D needed when it is the only fit.
    let ds = if down_only {
        data::Dataset {
            source: match &args.arm {
                Some(a) => format!("{} (arm {a})", args.input.display()),
                None => args.input.display().to_string(),
            },
            ..data::Dataset::default()
        }
    } else {
        let ds = data::load_arm(
            &args.input,
            args.steps.as_deref(),
            &cols,
            args.arm.as_deref(),
        )?;
        anyhow::ensure!(
            !ds.points.is_empty() || !ds.curves.is_empty(),
            "{}: no usable rows (every row has an empty or non-finite value)",
            args.input.display()
        );
        ds
    };
    let pairs = if args.approach.contains(&Approach::Downstream) {
        Some(downstream::read_pairs(
            &args.input,
            args.cols.loss_col.as_deref(),
            &args.error_col,
            args.arm.as_deref(),
        )?)
    } else if all
        && data::resolve_input(&args.input, args.steps.as_deref())?
            .0
            .is_some()
    {
        // Every fit the data support: the downstream law when the table has the error column.
        match downstream::read_pairs(
            &args.input,
            args.cols.loss_col.as_deref(),
            &args.error_col,
            args.arm.as_deref(),
        ) {
            Ok(p) => Some(p),
            Err(FitError::MissingColumn { .. }) => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let kinds = if all {
        FitKind::ALL.to_vec()
    } else {
        let mut k: Vec<FitKind> = args
            .approach
            .iter()
            .filter_map(|a| match a {
                Approach::One => Some(FitKind::Approach1),
                Approach::Two => Some(FitKind::Approach2),
                Approach::Three => Some(FitKind::Approach3),
                Approach::Compute => Some(FitKind::Compute),
                Approach::Overtrain => Some(FitKind::Overtrain),
                Approach::Downstream | Approach::All | Approach::Hparams => None,
            })
            .collect();
        k.sort();
        k.dedup();
        k
    };
    let opts = FitOptions {
        kinds,
        explicit: !all,
        law: LawOptions {
            delta: args.law.huber_delta,
            objective: match args.objective {
                ObjectiveArg::Huber => Objective::HuberLog,
                ObjectiveArg::Lsq => Objective::LeastSquares,
            },
            bootstrap: args.bootstrap,
            seed: args.law.seed,
            level: args.law.level,
            ..LawOptions::default()
        },
        starts3: parametric::default_starts(),
        budget_tol: args.law.budget_tol,
        envelope_grid: args.envelope_grid,
        drop_highest: args.drop_highest,
        convention: args.cols.convention.name().to_string(),
    };
    let (mut rep, mut fitted) = report::run(&ds, &opts)?;
    let want_hparams = args.approach.contains(&Approach::Hparams);
    if want_hparams {
        let mut notes = Vec::new();
        let runs = hparams::load(&args.input, &cols, args.arm.as_deref(), &mut notes)?;
        let mut h = hparams::fit(
            &runs,
            &HpOptions {
                budget_tol: args.law.budget_tol,
                bootstrap: args.bootstrap,
                seed: args.law.seed,
                level: args.law.level,
            },
        )?;
        // Loading notes the other fits already reported are not repeated.
        notes.retain(|n| !rep.notes.contains(n));
        h.notes.splice(0..0, notes);
        rep.hparams = Some(h);
    }
    if let Some(pairs) = pairs {
        let chance = match args.chance {
            Some(c) => (c, "--chance".to_string()),
            None => (
                downstream::DEFAULT_CHANCE,
                "default (4-way multiple choice)".to_string(),
            ),
        };
        report::run_downstream(
            &mut rep,
            &mut fitted,
            pairs,
            &opts,
            &DownstreamOptions { chance },
        );
    }
    if down_only {
        rep.n_points = rep.downstream.as_ref().map_or(0, |d| d.n_points);
    }
    let out = match &args.out {
        Some(o) => o.clone(),
        // One fit directory per arm, so fitting each arm in turn keeps them all.
        None if args.input.is_dir() => match &args.arm {
            Some(a) => args.input.join(format!("fit-{a}")),
            None => args.input.join("fit"),
        },
        None => {
            let stem = args
                .input
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "input".into());
            match &args.arm {
                Some(a) => args.input.with_file_name(format!("{stem}_fit-{a}")),
                None => args.input.with_file_name(format!("{stem}_fit")),
            }
        }
    };
    super::columns::write_report(&out, &report::table(&rep), "fit.json", &rep)?;
    // The laws' parameters and bootstrap replicates, for `isoflop predict`.
    let side = out.join(predict::SIDECAR);
    let laws = predict::Laws::of(&rep, &fitted, &opts);
    let text = serde_json::to_string(&laws).context("serialising the bootstrap replicates")?;
    std::fs::write(&side, text + "\n")
        .with_context(|| format!("cannot write {}", side.display()))?;
    println!("wrote {}", side.display());
    if let Some(h) = &rep.hparams {
        let frag = out.join(hparams::FRAGMENT_FILE);
        std::fs::write(&frag, &h.fragment)
            .with_context(|| format!("cannot write {}", frag.display()))?;
        println!("wrote {}", frag.display());
    }
    if !args.no_plots {
        // With `hparams` alone, the other figures (every search run against FLOPs) say nothing.
        if !opts.kinds.is_empty() || rep.downstream.is_some() {
            for p in plot::write_all(&out, &ds, &rep, &fitted)? {
                println!("wrote {}", p.display());
            }
        }
        if let Some(h) = &rep.hparams {
            for p in plot::write_hparams(&out, h)? {
                println!("wrote {}", p.display());
            }
        }
    }
    Ok(())
}
