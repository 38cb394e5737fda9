//! Running every fit the data supports, the `fit.json` report and the terminal table.

use super::compute::{self, ComputeFit};
use super::data::Dataset;
use super::downstream::{self, DownstreamFit, PairSet};
use super::envelope::{self, EnvelopeFit};
use super::error::FitError;
use super::isoflop::{self, IsoFlopFit, MinMethod};
use super::law::{LawFit, LawOptions, Objective, Params};
use super::{overtrain, parametric};
use serde::Serialize;
use std::fmt::Write as _;

/// A fit that can be requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FitKind {
    /// Approach 1: envelope of training curves.
    Approach1,
    /// Approach 2: IsoFLOP minima.
    Approach2,
    /// Approach 3: parametric L(N, D).
    Approach3,
    /// L(C) = E + λ·C^(−α).
    Compute,
    /// Gadre et al. over-training law.
    Overtrain,
    /// Gadre et al. downstream task error against loss, Err(L) = ε − k·exp(−γ·L) (not in
    /// [`FitKind::ALL`]: it reads an error column, see [`run_downstream`]).
    Downstream,
}

impl FitKind {
    /// Every fit.
    pub const ALL: [FitKind; 5] = [
        FitKind::Approach1,
        FitKind::Approach2,
        FitKind::Approach3,
        FitKind::Compute,
        FitKind::Overtrain,
    ];
    /// The name the report and `--fits` use for this fit.
    pub fn name(&self) -> &'static str {
        match self {
            FitKind::Approach1 => "approach 1 (envelope)",
            FitKind::Approach2 => "approach 2 (IsoFLOP)",
            FitKind::Approach3 => "approach 3 (parametric)",
            FitKind::Compute => "L(C) (loss against compute)",
            FitKind::Overtrain => "over-training L(N, M)",
            FitKind::Downstream => "downstream Err(L)",
        }
    }
}

/// Settings of a fitting run.
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// Fits to run.
    pub kinds: Vec<FitKind>,
    /// Whether `kinds` was chosen explicitly (then a fit the data cannot support is an error).
    pub explicit: bool,
    /// Settings of the law fits (Huber δ, L-BFGS, bootstrap, seed, level).
    pub law: LawOptions,
    /// Starts of Approach 3.
    pub starts3: Vec<Vec<f64>>,
    /// Relative FLOP tolerance grouping runs into budgets (Approach 2).
    pub budget_tol: f64,
    /// Grid points of the envelope (Approach 1).
    pub envelope_grid: usize,
    /// Drop the k highest-loss points before Approaches 3 and over-training (Epoch drops 5).
    pub drop_highest: usize,
    /// FLOP convention name (for the report).
    pub convention: String,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            kinds: FitKind::ALL.to_vec(),
            explicit: false,
            law: LawOptions::default(),
            starts3: parametric::default_starts(),
            budget_tol: 0.1,
            envelope_grid: 250,
            drop_highest: 0,
            convention: "standard".into(),
        }
    }
}

/// A law fit as written to fit.json.
#[derive(Clone, Debug, Serialize)]
pub struct LawReport {
    /// The fitted quantities with bootstrap percentile intervals.
    pub params: Params,
    /// Σ Huber_δ of log-loss residuals at the optimum.
    pub objective: f64,
    /// What was minimised: `huber_log` (Huber δ on ln L) or `least_squares` (on L; δ unused).
    pub objective_kind: Objective,
    /// Huber δ.
    pub huber_delta: f64,
    /// Points fitted.
    pub n_points: usize,
    /// Starts tried / converged.
    pub n_starts: usize,
    /// Starts that ended at a finite value.
    pub n_converged: usize,
    /// Bootstrap replicates requested / converged.
    pub bootstrap_replicates: usize,
    /// Replicates that converged.
    pub bootstrap_converged: usize,
    /// Interval level.
    pub level: f64,
    /// RMS of ln L residuals.
    pub rmse_log: f64,
    /// ln L observed − ln L fitted, per point (input order after filtering).
    pub residuals_log: Vec<f64>,
    /// False when the optimum is not a usable law (see `problems`), however many starts converged.
    pub sane: bool,
    /// Why the fit is not sane: non-finite parameters, exponents outside (0, 3), E above the
    /// smallest loss fitted. Empty for a sane fit.
    pub problems: Vec<String>,
}

/// Open interval of plausible scaling exponents: a law whose loss grows with scale (≤ 0) or falls
/// faster than any measured scaling law (≥ 3) is an artefact of the data, not a finding.
pub const EXPONENT_BOUNDS: (f64, f64) = (0.0, 3.0);

/// Why a law fit's parameters `p` (and `objective`) are not a usable law: each named exponent must be
/// finite and in [`EXPONENT_BOUNDS`], each named coefficient finite and positive, every parameter
/// finite, and the irreducible loss `E` below `min_loss`, the smallest loss fitted.
pub fn sanity_problems(
    p: &Params,
    objective: f64,
    exponents: &[&str],
    coefficients: &[&str],
    min_loss: f64,
) -> Vec<String> {
    let show = |v: f64| {
        if v.is_finite() && v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-3) {
            format!("{v:.4e}")
        } else {
            format!("{v:.4}")
        }
    };
    let mut out = Vec::new();
    if !objective.is_finite() {
        out.push(format!("objective = {} is not finite", show(objective)));
    }
    let (lo, hi) = EXPONENT_BOUNDS;
    for (name, iv) in &p.0 {
        let v = iv.value;
        if !v.is_finite() {
            out.push(format!("{name} = {} is not finite", show(v)));
        } else if exponents.contains(&name.as_str()) && !(v > lo && v < hi) {
            out.push(format!(
                "exponent {name} = {} is outside ({lo}, {hi})",
                show(v)
            ));
        } else if coefficients.contains(&name.as_str()) && v <= 0.0 {
            out.push(format!("{name} = {} is not positive", show(v)));
        }
    }
    let e = p.value("E");
    if e.is_finite() && min_loss.is_finite() && e > min_loss {
        out.push(format!(
            "E = {} is above the smallest loss fitted, {}",
            show(e),
            show(min_loss)
        ));
    }
    out
}

fn min_of(xs: impl Iterator<Item = f64>) -> f64 {
    xs.fold(f64::INFINITY, f64::min)
}

impl LawReport {
    fn of(f: &LawFit, o: &LawOptions, problems: Vec<String>) -> Self {
        LawReport {
            sane: problems.is_empty(),
            problems,
            params: f.params.clone(),
            objective: f.objective,
            objective_kind: o.objective,
            huber_delta: o.delta,
            n_points: f.residuals.len(),
            n_starts: f.n_starts,
            n_converged: f.n_converged,
            bootstrap_replicates: o.bootstrap,
            bootstrap_converged: f.bootstrap_ok,
            level: o.level,
            rmse_log: f.rmse_log,
            residuals_log: f.residuals.clone(),
        }
    }
}

/// L(C) as written to fit.json.
#[derive(Clone, Debug, Serialize)]
pub struct ComputeReport {
    /// What it was fitted to.
    pub fitted_to: String,
    /// The FLOP scale used internally.
    pub c0: f64,
    /// The fit.
    #[serde(flatten)]
    pub law: LawReport,
}

/// A fit that did not run, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    /// The fit that was not made.
    pub fit: FitKind,
    /// Why.
    pub reason: String,
}

/// Everything fitted, as written to `fit.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Input path.
    pub source: String,
    /// FLOP convention of C.
    pub convention: String,
    /// Final points read.
    pub n_points: usize,
    /// Training curves read.
    pub n_curves: usize,
    /// Remarks from loading.
    pub notes: Vec<String>,
    /// Approach 3.
    pub approach3: Option<LawReport>,
    /// Approach 2, parabola minima.
    pub approach2: Option<IsoFlopFit>,
    /// Approach 2, Akima minima.
    pub approach2_akima: Option<IsoFlopFit>,
    /// Approach 1.
    pub approach1: Option<EnvelopeFit>,
    /// L(C).
    pub compute: Option<ComputeReport>,
    /// Over-training law.
    pub overtrain: Option<LawReport>,
    /// Downstream task error against loss.
    pub downstream: Option<DownstreamReport>,
    /// Fits not run.
    pub skipped: Vec<Skipped>,
    /// Laws of the optimal lr and batch size (`--approach hparams`; absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hparams: Option<super::hparams::HparamsFit>,
}

/// Fitted objects kept for plotting.
#[derive(Clone, Debug, Default)]
pub struct Fitted {
    /// Approach 3.
    pub approach3: Option<LawFit>,
    /// L(C).
    pub compute: Option<ComputeFit>,
    /// Over-training.
    pub overtrain: Option<LawFit>,
    /// Downstream error law and the pairs it was fitted to.
    pub downstream: Option<(DownstreamFit, PairSet)>,
    /// Points used by Approach 3 and over-training (after dropping).
    pub law_points: Vec<super::data::Point>,
}

fn distinct(xs: impl Iterator<Item = f64>) -> usize {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(f64::total_cmp);
    v.dedup_by(|a, b| (*a - *b).abs() <= 1e-9 * b.abs());
    v.len()
}

/// Run the requested fits on `ds`. Fits the data cannot support are skipped with a reason, or, when
/// requested explicitly, are errors.
pub fn run(ds: &Dataset, o: &FitOptions) -> Result<(Report, Fitted), FitError> {
    let mut rep = Report {
        source: ds.source.clone(),
        convention: o.convention.clone(),
        n_points: ds.points.len(),
        n_curves: ds.curves.len(),
        notes: ds.notes.clone(),
        approach3: None,
        approach2: None,
        approach2_akima: None,
        approach1: None,
        compute: None,
        overtrain: None,
        downstream: None,
        skipped: vec![],
        hparams: None,
    };
    let mut fitted = Fitted::default();
    let skip = |rep: &mut Report, fit: FitKind, reason: String| -> Result<(), FitError> {
        if o.explicit {
            Err(FitError::Unsupported {
                fit: fit.name().into(),
                why: reason,
            })
        } else {
            rep.skipped.push(Skipped { fit, reason });
            Ok(())
        }
    };
    let wants = |k| o.kinds.contains(&k);
    let mut pts = ds.points.clone();
    if o.drop_highest > 0 {
        pts.sort_by(|a, b| a.loss.total_cmp(&b.loss));
        pts.truncate(pts.len().saturating_sub(o.drop_highest));
    }
    fitted.law_points = pts.clone();
    let (dn, dd) = (
        distinct(pts.iter().map(|p| p.n)),
        distinct(pts.iter().map(|p| p.d)),
    );
    // With one tokens-per-parameter ratio M = D/N, ln D = ln N + const: A/N^α and B/D^β cannot be told
    // apart. Ratios within 2% count as one (step rounding).
    let mut ms: Vec<f64> = pts.iter().map(|p| (p.d / p.n).ln()).collect();
    ms.sort_by(f64::total_cmp);
    ms.dedup_by(|a, b| (*a - *b).abs() < 0.02);
    let collinear = (ms.len() < 2).then(|| {
        format!(
            "every run has the same tokens per parameter M = D/N ≈ {:.3}, so N and D are collinear and the law is not identifiable",
            pts.first().map_or(f64::NAN, |p| p.d / p.n)
        )
    });
    if wants(FitKind::Approach3) {
        if pts.len() < 6 || dn < 2 || dd < 2 {
            skip(
                &mut rep,
                FitKind::Approach3,
                format!(
                    "needs ≥ 6 points with ≥ 2 distinct N and D (have {} points, {dn} N, {dd} D)",
                    pts.len()
                ),
            )?;
        } else if let Some(why) = &collinear {
            skip(&mut rep, FitKind::Approach3, why.clone())?;
        } else {
            match parametric::fit(&pts, &o.starts3, &o.law) {
                Some(f) => {
                    let problems = sanity_problems(
                        &f.params,
                        f.objective,
                        &["alpha", "beta"],
                        &["A", "B", "E", "G"],
                        min_of(pts.iter().map(|p| p.loss)),
                    );
                    rep.approach3 = Some(LawReport::of(&f, &o.law, problems));
                    fitted.approach3 = Some(f);
                }
                None => skip(&mut rep, FitKind::Approach3, "no start converged".into())?,
            }
        }
    }
    if wants(FitKind::Overtrain) {
        if pts.len() < 5 || dn < 2 || dd < 2 {
            skip(
                &mut rep,
                FitKind::Overtrain,
                format!(
                    "needs ≥ 5 points with ≥ 2 distinct N and D (have {} points)",
                    pts.len()
                ),
            )?;
        } else if let Some(why) = &collinear {
            skip(&mut rep, FitKind::Overtrain, why.clone())?;
        } else {
            match overtrain::fit(&pts, &overtrain::default_starts(), &o.law) {
                Some(f) => {
                    let problems = sanity_problems(
                        &f.params,
                        f.objective,
                        &["alpha"],
                        &["E", "a", "b", "M_opt"],
                        min_of(pts.iter().map(|p| p.loss)),
                    );
                    rep.overtrain = Some(LawReport::of(&f, &o.law, problems));
                    fitted.overtrain = Some(f);
                }
                None => skip(&mut rep, FitKind::Overtrain, "no start converged".into())?,
            }
        }
    }
    if wants(FitKind::Approach2) || wants(FitKind::Compute) {
        let par = isoflop::fit(&ds.points, o.budget_tol, MinMethod::Parabola, o.law.level);
        let aki = isoflop::fit(&ds.points, o.budget_tol, MinMethod::Akima, o.law.level);
        let used = par.budgets.iter().filter(|b| b.used).count();
        if wants(FitKind::Approach2) && par.n_opt.is_none() {
            skip(
                    &mut rep,
                    FitKind::Approach2,
                    format!(
                        "needs ≥ 3 FLOP budgets (runs within {:.0}% of each other's FLOPs) with ≥ 3 distinct N and an interior minimum; found {} budget(s), {used} usable",
                        o.budget_tol * 100.0,
                        par.budgets.len()
                    ),
                )?;
        }
        if used > 0 {
            rep.approach2 = Some(par);
            rep.approach2_akima = Some(aki);
        }
    }
    if wants(FitKind::Approach1) || wants(FitKind::Compute) {
        if ds.curves.len() < 2 {
            if wants(FitKind::Approach1) {
                skip(
                    &mut rep,
                    FitKind::Approach1,
                    format!(
                        "needs per-step curves of ≥ 2 runs (steps.csv), have {}",
                        ds.curves.len()
                    ),
                )?;
            }
        } else {
            let f = envelope::fit(
                &ds.curves,
                o.envelope_grid,
                o.law.bootstrap.min(200),
                o.law.seed,
                o.law.level,
            );
            if f.n_opt.is_none() && wants(FitKind::Approach1) {
                skip(
                    &mut rep,
                    FitKind::Approach1,
                    "the envelope is attained by a single run size".into(),
                )?;
            }
            rep.approach1 = Some(f);
        }
    }
    if wants(FitKind::Compute) {
        let src = if let Some(a1) = &rep.approach1 {
            let e = &a1.envelope;
            Some((
                "approach 1 envelope".to_string(),
                e.c.clone(),
                e.loss.clone(),
            ))
        } else if let Some(a2) = &rep.approach2 {
            let u: Vec<_> = a2.budgets.iter().filter(|b| b.used).collect();
            Some((
                "approach 2 parabola minima".to_string(),
                u.iter().map(|b| b.c).collect(),
                u.iter().map(|b| b.loss_opt).collect(),
            ))
        } else {
            None
        };
        match src {
            Some((name, c, l)) if c.len() >= 4 => match compute::fit(&c, &l, &o.law) {
                Some(f) => {
                    let problems = sanity_problems(
                        &f.law.params,
                        f.law.objective,
                        &["alpha"],
                        &["E", "lambda"],
                        min_of(l.iter().copied()),
                    );
                    rep.compute = Some(ComputeReport {
                        fitted_to: name,
                        c0: f.c0,
                        law: LawReport::of(&f.law, &o.law, problems),
                    });
                    fitted.compute = Some(f);
                }
                None => skip(&mut rep, FitKind::Compute, "no start converged".into())?,
            },
            Some((name, c, _)) => skip(
                &mut rep,
                FitKind::Compute,
                format!("needs ≥ 4 points on the {name}, have {}", c.len()),
            )?,
            None => skip(
                &mut rep,
                FitKind::Compute,
                "needs an envelope (Approach 1) or IsoFLOP minima (Approach 2)".into(),
            )?,
        }
    }
    Ok((rep, fitted))
}

/// The downstream error law as written to fit.json.
#[derive(Clone, Debug, Serialize)]
pub struct DownstreamReport {
    /// The error column fitted.
    pub error_col: String,
    /// The loss column it was fitted against.
    pub loss_col: String,
    /// k, gamma, epsilon with bootstrap percentile intervals.
    pub params: Params,
    /// Σ (Err(L) − error)², least squares on the error (Gadre et al.'s curve_fit).
    pub objective: f64,
    /// Always `least_squares`.
    pub objective_kind: Objective,
    /// (loss, error) pairs fitted.
    pub n_points: usize,
    /// Smallest and largest loss fitted.
    pub loss_range: [f64; 2],
    /// Bootstrap replicates requested.
    pub bootstrap_replicates: usize,
    /// Replicates that fitted (≥ 3 distinct losses drawn).
    pub bootstrap_converged: usize,
    /// Interval level.
    pub level: f64,
    /// RMS of the error residuals.
    pub rmse: f64,
    /// Observed − fitted error, per pair (input order after skipping).
    pub residuals: Vec<f64>,
    /// Random-chance error drawn on the plot.
    pub chance: f64,
    /// Where `chance` came from: `--chance` or the default.
    pub chance_source: String,
    /// False when the fit is not a usable law (see `problems`).
    pub sane: bool,
    /// Why the fit is not sane ([`downstream::sanity_problems`]). Empty for a sane fit.
    pub problems: Vec<String>,
}

/// Settings of the downstream fit.
#[derive(Clone, Debug)]
pub struct DownstreamOptions {
    /// Random-chance error for the plot, and where it came from.
    pub chance: (f64, String),
}

/// Fit the downstream error law to `pairs` into `rep` and `fitted`. Fewer than
/// [`downstream::MIN_POINTS`] pairs (or fewer than 3 distinct losses) skip it with a reason, even when
/// requested explicitly: a small sweep's export should still fit its loss laws.
pub fn run_downstream(
    rep: &mut Report,
    fitted: &mut Fitted,
    pairs: PairSet,
    o: &FitOptions,
    d: &DownstreamOptions,
) {
    let n = pairs.pairs.len();
    rep.notes.extend(pairs.notes.iter().cloned());
    let skip = |rep: &mut Report, reason: String| {
        rep.skipped.push(Skipped {
            fit: FitKind::Downstream,
            reason,
        })
    };
    if n < downstream::MIN_POINTS {
        return skip(
            rep,
            format!(
                "needs ≥ {} runs with a finite '{}' and '{}', have {n}",
                downstream::MIN_POINTS,
                pairs.loss_col,
                pairs.error_col
            ),
        );
    }
    let Some(f) = downstream::fit(&pairs.pairs, o.law.bootstrap, o.law.seed, o.law.level) else {
        return skip(
            rep,
            format!("needs ≥ 3 distinct values of '{}'", pairs.loss_col),
        );
    };
    let lmin = min_of(pairs.pairs.iter().map(|p| p.loss));
    let lmax = pairs.pairs.iter().map(|p| p.loss).fold(f64::NAN, f64::max);
    let problems = downstream::sanity_problems(&f, lmin);
    rep.downstream = Some(DownstreamReport {
        error_col: pairs.error_col.clone(),
        loss_col: pairs.loss_col.clone(),
        params: f.params.clone(),
        objective: f.best.sse,
        objective_kind: Objective::LeastSquares,
        n_points: n,
        loss_range: [lmin, lmax],
        bootstrap_replicates: o.law.bootstrap,
        bootstrap_converged: f.replicates.len(),
        level: o.law.level,
        rmse: (f.best.sse / n as f64).sqrt(),
        residuals: f.residuals.clone(),
        chance: d.chance.0,
        chance_source: d.chance.1.clone(),
        sane: problems.is_empty(),
        problems,
    });
    fitted.downstream = Some((f, pairs));
}

fn iv(i: &super::stats::Interval) -> String {
    let f = |v: f64| {
        if v.is_nan() {
            "—".to_string()
        } else if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
            format!("{v:.4e}")
        } else {
            format!("{v:.4}")
        }
    };
    format!("{:>12}  [{}, {}]", f(i.value), f(i.lo), f(i.hi))
}

fn law_table(out: &mut String, title: &str, l: &LawReport) {
    // "Converged" only for a usable law: an optimiser that settles on α < 0 has converged to nonsense.
    let starts = if l.sane {
        "starts converged"
    } else {
        "starts ended"
    };
    let _ = writeln!(out, "\n{title}  ({} points, objective {:.6e}, RMS ln-residual {:.4}, {}/{} {starts}, {} bootstrap)", l.n_points, l.objective, l.rmse_log, l.n_converged, l.n_starts, l.bootstrap_converged);
    if !l.sane {
        let _ = writeln!(
            out,
            "  NOT SANE, do not use these values: {}",
            l.problems.join("; ")
        );
    }
    for (k, v) in &l.params.0 {
        let _ = writeln!(out, "  {k:<8} {}", iv(v));
    }
}

fn power_table(out: &mut String, label: &str, p: &Option<super::powerlaw::PowerLaw>) {
    if let Some(p) = p {
        let _ = writeln!(
            out,
            "  {label} ∝ C^{}   (k = {:.4e}, {} points, R² {:.4}; {})",
            iv(&p.exponent).trim_start(),
            p.coefficient.value,
            p.n_points,
            p.r2,
            p.interval_method
        );
    }
}

/// The report as a terminal table.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let pct = 100.0 * r.approach3.as_ref().map_or(0.95, |l| l.level);
    let _ = writeln!(
        out,
        "isoflop fit: {} ({} points, {} curves, FLOPs: {}; intervals {pct:.0}%)",
        r.source, r.n_points, r.n_curves, r.convention
    );
    for n in &r.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    if let Some(l) = &r.approach3 {
        law_table(&mut out, "Approach 3: L(N, D) = E + A/N^alpha + B/D^beta; N_opt = G (C/6)^a, D_opt = (C/6)^b / G", l);
    }
    for (name, a) in [("parabola", &r.approach2), ("Akima", &r.approach2_akima)] {
        if let Some(a) = a {
            let _ = writeln!(out, "\nApproach 2 (IsoFLOP, {name} minima):");
            let _ = writeln!(
                out,
                "  {:>12} {:>5} {:>12} {:>12} {:>8}  note",
                "C", "runs", "N*", "D*", "loss*"
            );
            let few = a.budgets.iter().filter(|b| b.n_points < 3).count();
            for b in a.budgets.iter().filter(|b| b.n_points >= 3) {
                let _ = writeln!(
                    out,
                    "  {:>12.4e} {:>5} {:>12.4e} {:>12.4e} {:>8.4}  {}",
                    b.c,
                    b.n_points,
                    b.n_opt,
                    b.d_opt,
                    b.loss_opt,
                    b.note.clone().unwrap_or_default()
                );
            }
            if few > 0 {
                let _ = writeln!(
                    out,
                    "  ({few} budget(s) with fewer than 3 runs not shown; see fit.json)"
                );
            }
            power_table(&mut out, "N*", &a.n_opt);
            power_table(&mut out, "D*", &a.d_opt);
        }
    }
    if let Some(a) = &r.approach1 {
        let _ = writeln!(
            out,
            "\nApproach 1 (envelope of {} grid points over C ∈ [{:.3e}, {:.3e}], {} runs on it):",
            a.grid_points,
            a.c_range[0],
            a.c_range[1],
            a.runs_on_envelope.len()
        );
        power_table(&mut out, "N*", &a.n_opt);
        power_table(&mut out, "D*", &a.d_opt);
    }
    if let Some(c) = &r.compute {
        law_table(
            &mut out,
            &format!("L(C) = E + lambda C^-alpha on the {}", c.fitted_to),
            &c.law,
        );
    }
    if let Some(l) = &r.overtrain {
        law_table(
            &mut out,
            "Over-training: L(N, M) = E + a N^-alpha + b (M N)^-alpha; M_opt = (b/a)^(1/alpha)",
            l,
        );
    }
    if let Some(d) = &r.downstream {
        let _ = writeln!(
            out,
            "\nDownstream: {} = epsilon - k exp(-gamma L), L = {}  ({} points, L in [{:.4}, {:.4}], SSE {:.6e}, RMS residual {:.4}, {} bootstrap; chance {:.4})",
            d.error_col, d.loss_col, d.n_points, d.loss_range[0], d.loss_range[1], d.objective, d.rmse, d.bootstrap_converged, d.chance
        );
        if !d.sane {
            let _ = writeln!(
                out,
                "  NOT SANE, do not use these values: {}",
                d.problems.join("; ")
            );
        }
        for (k, v) in &d.params.0 {
            let _ = writeln!(out, "  {k:<8} {}", iv(v));
        }
    }
    for s in &r.skipped {
        let _ = writeln!(out, "\nskipped {}: {}", s.fit.name(), s.reason);
    }
    if let Some(h) = &r.hparams {
        out.push_str(&super::hparams::table(h));
    }
    out
}
