//! A/B comparison of training recipes across scale (`isoflop compare`): each arm's loss against compute
//! L(C) = E + λ·C^(−α), the difference ΔL(C) = L_other(C) − L_baseline(C) over the observed range and
//! extrapolated, the crossover compute C× where the arms swap order, and differences of exponents, all
//! with a paired bootstrap: runs are matched across arms by their point (budget, size, seed) and
//! resampled together, so noise the arms share (same seed and data order) cancels.

use super::data::{read_curves, read_points, Columns, Curve, Dataset, Point};
use super::envelope;
use super::error::FitError;
use super::isoflop::{self, MinMethod};
use super::law::{fit_law, LawFit, LawOptions};
use super::optim::{bootstrap, LseData};
use super::powerlaw::PowerLaw;
use super::stats::{percentile, Interval};
use super::table::{num, Table};
use super::{compute, parametric};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// One arm's data, with the key of every point and curve that pairs it with the other arms.
#[derive(Clone, Debug)]
pub struct ArmData {
    /// Arm name.
    pub name: String,
    /// Points and curves.
    pub ds: Dataset,
    /// Pairing key of each point (its run name without the arm prefix, else its rounded C and N).
    pub point_keys: Vec<String>,
    /// Pairing key of each curve.
    pub curve_keys: Vec<String>,
}

fn strip_arm(name: &str, arm: &str) -> String {
    name.strip_prefix(arm)
        .and_then(|s| s.strip_prefix('-'))
        .unwrap_or(name)
        .to_string()
}

fn cn_key(p: &Point) -> String {
    format!("C{:.3e}-N{:.3e}", p.c, p.n)
}

/// Make keys unique within an arm (`key#2` for the second occurrence), so replicate points pair one to one.
fn uniquify(keys: &mut [String]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for k in keys.iter_mut() {
        let c = seen.entry(k.clone()).or_insert(0);
        *c += 1;
        if *c > 1 {
            *k = format!("{k}#{c}");
        }
    }
}

fn sub_table(t: &Table, rows: Vec<(usize, Vec<String>)>) -> Table {
    Table {
        path: t.path.clone(),
        header: t.header.clone(),
        rows,
    }
}

/// Read one arm from its runs table and/or steps table (already restricted to the arm).
pub fn read_arm(
    name: &str,
    source: String,
    runs: Option<&Table>,
    steps: Option<&Table>,
    cols: &Columns,
) -> Result<ArmData, FitError> {
    let mut notes = Vec::new();
    let id_names: Vec<String> = match &cols.run {
        Some(r) => vec![r.clone()],
        None => ["run_id", "run", "name", "id"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let mut points = Vec::new();
    let mut point_keys = Vec::new();
    if let Some(t) = runs {
        // The whole table once (errors with line numbers, and the loading notes), then row by row for keys.
        read_points(t, cols, &mut notes)?;
        let id = t.find(&id_names);
        for row in &t.rows {
            let one = sub_table(t, vec![row.clone()]);
            if let Some(p) = read_points(&one, cols, &mut vec![])?.pop() {
                let key = match id {
                    Some(i) if !row.1[i].is_empty() => strip_arm(&row.1[i], name),
                    _ => cn_key(&p),
                };
                point_keys.push(key);
                points.push(p);
            }
        }
    }
    let curves = match steps {
        Some(st) => read_curves(st, cols, runs, &mut notes)?,
        None => vec![],
    };
    if runs.is_none() {
        points = curves.iter().map(Curve::last_point).collect();
        point_keys = curves.iter().map(|c| strip_arm(&c.run, name)).collect();
    }
    let mut curve_keys: Vec<String> = curves.iter().map(|c| strip_arm(&c.run, name)).collect();
    uniquify(&mut point_keys);
    uniquify(&mut curve_keys);
    Ok(ArmData {
        name: name.to_string(),
        ds: Dataset {
            source,
            points,
            curves,
            notes,
        },
        point_keys,
        curve_keys,
    })
}

/// Split a table into one table per value of column `by`, in order of first appearance.
pub fn split_by(t: &Table, by: &str) -> Result<Vec<(String, Table)>, FitError> {
    let i = t.require(&[by.to_string()], "--by")?;
    let mut out: Vec<(String, Table)> = Vec::new();
    for row in &t.rows {
        let v = row.1[i].clone();
        match out.iter_mut().find(|(n, _)| *n == v) {
            Some((_, sub)) => sub.rows.push(row.clone()),
            None => out.push((v, sub_table(t, vec![row.clone()]))),
        }
    }
    Ok(out)
}

/// Where an arm's L(C) points come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LcSource {
    /// The lower envelope of the training curves (steps.csv).
    Envelope,
    /// Per IsoFLOP budget, the minimum of an Akima interpolant in ln N (as Porian et al.), or the lowest
    /// run where the minimum is at an edge.
    IsoflopMinima,
    /// Every run's final loss.
    FinalLosses,
}

impl LcSource {
    /// Human-readable name.
    pub fn label(&self) -> &'static str {
        match self {
            LcSource::Envelope => "envelope of training curves",
            LcSource::IsoflopMinima => "IsoFLOP minima",
            LcSource::FinalLosses => "final losses",
        }
    }
}

/// Settings of a comparison.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Extrapolate to this compute (None: 1000× the largest observed).
    pub c_max: Option<f64>,
    /// Budgets at which to name the winner.
    pub at: Vec<f64>,
    /// Bootstrap replicates.
    pub bootstrap: usize,
    /// Bootstrap seed.
    pub seed: u64,
    /// Interval level.
    pub level: f64,
    /// Huber δ of the law fits.
    pub delta: f64,
    /// IsoFLOP budget grouping tolerance.
    pub budget_tol: f64,
    /// Grid points of the envelope.
    pub envelope_grid: usize,
    /// Whether to fit Approach 3 per arm (where the data supports it).
    pub approach3: bool,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            c_max: None,
            at: vec![],
            bootstrap: 1000,
            seed: 0,
            level: 0.95,
            delta: 1e-3,
            budget_tol: 0.1,
            envelope_grid: 60,
            approach3: true,
        }
    }
}

/// A selection of an arm's final points and curves (indices may repeat: a bootstrap draw), with how
/// its L(C) points are drawn and the compute range of its envelope.
struct Selection<'a> {
    arm: &'a ArmData,
    src: LcSource,
    pts_idx: &'a [usize],
    cur_idx: &'a [usize],
    env_range: (f64, f64),
}

impl Selection<'_> {
    /// The envelope of the selected curves over `env_range`, on `o.envelope_grid` points.
    fn envelope(&self, o: &CompareOptions) -> envelope::Envelope {
        envelope::envelope(
            &self.arm.ds.curves,
            self.cur_idx,
            self.env_range.0,
            self.env_range.1,
            o.envelope_grid,
        )
    }

    /// The selected final points.
    fn points(&self) -> Vec<Point> {
        self.pts_idx
            .iter()
            .map(|&i| self.arm.ds.points[i].clone())
            .collect()
    }

    /// The L(C) points of the selection.
    fn lc_points(&self, o: &CompareOptions) -> (Vec<f64>, Vec<f64>) {
        match self.src {
            LcSource::Envelope => {
                let e = self.envelope(o);
                (e.c, e.loss)
            }
            LcSource::IsoflopMinima => {
                let pts = self.points();
                let mut c = vec![];
                let mut l = vec![];
                for g in isoflop::group_budgets(&pts, o.budget_tol) {
                    let b = isoflop::budget_min(&pts, &g, MinMethod::Akima);
                    let lowest = g.iter().map(|&i| pts[i].loss).fold(f64::INFINITY, f64::min);
                    c.push(b.c);
                    l.push(if b.used && b.loss_opt <= lowest {
                        b.loss_opt
                    } else {
                        lowest
                    });
                }
                (c, l)
            }
            LcSource::FinalLosses => (
                self.pts_idx
                    .iter()
                    .map(|&i| self.arm.ds.points[i].c)
                    .collect(),
                self.pts_idx
                    .iter()
                    .map(|&i| self.arm.ds.points[i].loss)
                    .collect(),
            ),
        }
    }

    /// The N* exponent a of the selection (Approach 1 on curves, else Approach 2 parabola minima).
    fn n_exponent(&self, o: &CompareOptions) -> Option<f64> {
        if self.src == LcSource::Envelope {
            let e = self.envelope(o);
            let ok = envelope::interior(&e);
            let c: Vec<f64> = ok.iter().map(|&i| e.c[i]).collect();
            let n: Vec<f64> = ok.iter().map(|&i| e.n[i]).collect();
            if c.len() < 3 {
                return None;
            }
            PowerLaw::fit(&c, &n, None, o.level).map(|p| p.exponent.value)
        } else {
            isoflop::fit(&self.points(), o.budget_tol, MinMethod::Parabola, o.level)
                .n_opt
                .map(|p| p.exponent.value)
        }
    }
}

fn choose_source(arm: &ArmData, tol: f64) -> LcSource {
    if arm.ds.curves.len() >= 2 {
        return LcSource::Envelope;
    }
    let rich = isoflop::group_budgets(&arm.ds.points, tol)
        .iter()
        .filter(|g| {
            let mut n: Vec<f64> = g.iter().map(|&i| arm.ds.points[i].n).collect();
            n.sort_by(f64::total_cmp);
            n.dedup_by(|a, b| (*a - *b).abs() <= 1e-9 * b.abs());
            n.len() >= 3
        })
        .count();
    if rich >= 4 {
        LcSource::IsoflopMinima
    } else {
        LcSource::FinalLosses
    }
}

/// L(C) fitted with a fixed scale C₀ (so replicates refit from the full-data θ stay comparable).
fn fit_lc(c: &[f64], loss: &[f64], c0: f64, starts: &[Vec<f64>], delta: f64) -> Option<LawFit> {
    if c.len() < 4 {
        return None;
    }
    let data = LseData {
        n_features: 1,
        x_PxF: c.iter().map(|v| (v / c0).ln()).collect(),
        log_loss: loss.iter().map(|v| v.ln()).collect(),
    };
    let opts = LawOptions {
        delta,
        bootstrap: 0,
        ..LawOptions::default()
    };
    let derive = move |t: &[f64]| vec![t[1].exp(), t[0].exp() * c0.powf(t[2]), t[2]];
    fit_law(
        &compute::model(),
        &data,
        starts,
        &opts,
        &compute::NAMES,
        &derive,
    )
}

fn lc_at(theta: &[f64], c0: f64, c: f64) -> f64 {
    compute::model().predict_log(theta, &[(c / c0).ln()]).exp()
}

fn a3_supported(pts: &[Point]) -> Result<(), String> {
    let distinct = |v: Vec<f64>| {
        let mut v = v;
        v.sort_by(f64::total_cmp);
        v.dedup_by(|a, b| (*a - *b).abs() < 0.02);
        v.len()
    };
    let dn = distinct(pts.iter().map(|p| p.n.ln()).collect());
    let dm = distinct(pts.iter().map(|p| (p.d / p.n).ln()).collect());
    if pts.len() < 6 || dn < 2 {
        return Err(format!(
            "needs ≥ 6 runs with ≥ 2 distinct N (have {} runs, {dn} N)",
            pts.len()
        ));
    }
    if dm < 2 {
        return Err("every run has the same tokens per parameter, so N and D are collinear".into());
    }
    Ok(())
}

/// One arm's fits.
#[derive(Clone, Debug, Serialize)]
pub struct ArmReport {
    /// Arm name.
    pub name: String,
    /// Runs (final points) and training curves.
    pub n_points: usize,
    /// Training curves.
    pub n_curves: usize,
    /// Where L(C)'s points come from.
    pub lc_source: LcSource,
    /// The (C, loss) points L(C) is fitted to.
    pub lc_points: Vec<[f64; 2]>,
    /// L(C) = E + λ·C^(−α): E, lambda, alpha with bootstrap intervals.
    pub lc: BTreeMap<String, Interval>,
    /// The N* exponent a (N* ∝ C^a), when the data supports it.
    pub a: Option<Interval>,
    /// Approach 3 (L(N, D)) parameters, when the data supports it.
    pub approach3: Option<BTreeMap<String, Interval>>,
    /// Fits the data could not support, with the reason.
    pub skipped: Vec<String>,
    /// Loading notes.
    pub notes: Vec<String>,
    /// Scale C₀ of the L(C) parameters.
    #[serde(skip)]
    pub c0: f64,
    /// Full-data θ of L(C).
    #[serde(skip)]
    pub theta: Vec<f64>,
}

/// One grid point of ΔL(C).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct DeltaPoint {
    /// Compute.
    pub c: f64,
    /// Baseline's fitted L(C).
    pub loss_baseline: f64,
    /// The other arm's fitted L(C).
    pub loss_other: f64,
    /// ΔL = other − baseline, with its bootstrap interval.
    pub delta: Interval,
    /// Fraction of replicates in which the other arm is lower.
    pub p_other_lower: f64,
    /// Per-arm bands of L(C): [baseline lo, hi, other lo, hi].
    pub bands: [f64; 4],
}

/// ΔL at one IsoFLOP budget both arms trained at, from their IsoFLOP minima (no law involved).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct BudgetDelta {
    /// The budget.
    pub c: f64,
    /// The baseline's minimum loss at it.
    pub loss_baseline: f64,
    /// The other arm's.
    pub loss_other: f64,
    /// Other − baseline, with its paired-bootstrap interval.
    pub delta: Interval,
    /// Fraction of replicates in which the other arm is lower.
    pub p_other_lower: f64,
}

/// The crossover of two arms.
#[derive(Clone, Debug, Serialize)]
pub struct Crossover {
    /// Whether a crossover below `c_max` is established: the fitted ΔL changes sign and the band
    /// excludes zero on both sides of it.
    pub found: bool,
    /// C× of the fitted laws (first sign change above the smallest observed compute), if any.
    pub c_cross: Option<f64>,
    /// Bootstrap interval of C× (hi = +inf when more than the upper tail of replicates do not cross).
    pub interval: Option<[f64; 2]>,
    /// Fraction of bootstrap replicates whose arms swap order below `c_max`.
    pub probability: f64,
    /// One sentence.
    pub verdict: String,
}

/// The winner at a given budget.
#[derive(Clone, Debug, Serialize)]
pub struct AtBudget {
    /// The budget.
    pub c: f64,
    /// The arm with the lower fitted loss.
    pub winner: String,
    /// Loss of the loser minus loss of the winner, with interval.
    pub margin: Interval,
    /// Fraction of bootstrap replicates in which the winner is lower.
    pub p_win: f64,
    /// The budget over the largest observed compute.
    pub extrapolation: f64,
}

/// Baseline against one other arm.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The baseline arm (ΔL = other − baseline).
    pub baseline: String,
    /// The other arm.
    pub other: String,
    /// Observed compute range: that of both arms' L(C) points.
    pub observed: [f64; 2],
    /// Extrapolation limit.
    pub c_max: f64,
    /// Bootstrap replicates where both arms' fits converged.
    pub bootstrap_ok: usize,
    /// ΔL(C) of the fitted laws on a log grid from the smallest observed C to `c_max`.
    pub delta: Vec<DeltaPoint>,
    /// ΔL at each budget both arms trained at (IsoFLOP minima; empty for other sources).
    pub budgets: Vec<BudgetDelta>,
    /// Where ΔL(C) changes sign, if it does in the fitted range.
    pub crossover: Crossover,
    /// Winners at the `--at` budgets.
    pub at: Vec<AtBudget>,
    /// Exponent differences other − baseline: `alpha` (L(C)), `a` (N*), `a3_alpha`, `a3_beta`, `a3_a`.
    pub exponent_differences: BTreeMap<String, Interval>,
    /// Over the observed range: which arm is lower at every observed budget (IsoFLOP minima), else whether
    /// the band of the fitted ΔL excludes zero everywhere.
    pub observed_verdict: String,
}

/// The whole comparison, saved as `compare.json`.
#[derive(Clone, Debug, Serialize)]
pub struct CompareReport {
    /// Inputs.
    pub source: String,
    /// Interval level.
    pub level: f64,
    /// Bootstrap replicates asked for.
    pub bootstrap: usize,
    /// Bootstrap seed.
    pub seed: u64,
    /// Arms (the first is the baseline).
    pub arms: Vec<ArmReport>,
    /// Each other arm against the baseline.
    pub comparisons: Vec<Comparison>,
}

fn interval(xs: &[f64], value: f64, level: f64) -> Interval {
    let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.len() < 10 {
        return Interval::bare(value);
    }
    let q = 0.5 - 0.5 * level;
    Interval {
        value,
        lo: percentile(&v, q),
        hi: percentile(&v, 1.0 - q),
    }
}

/// Per-arm state for the bootstrap.
struct ArmFit {
    src: LcSource,
    /// Compute range of the L(C) points.
    lc_range: (f64, f64),
    /// The full-data L(C) points (IsoFLOP minima: one per budget).
    lc_c: Vec<f64>,
    lc_l: Vec<f64>,
    env_range: (f64, f64),
    c0: f64,
    theta: Vec<f64>,
    a: Option<f64>,
    a3: Option<LawFit>,
}

/// Per-replicate values of one arm: θ of L(C) (3), a, Approach 3 alpha, beta, a (then one value per
/// budget of [`budget_slots`]).
const PER_ARM: usize = 7;

/// The budgets whose L(C) points are compared one by one across arms (IsoFLOP minima only).
fn budget_slots(f: &ArmFit) -> &[f64] {
    if f.src == LcSource::IsoflopMinima {
        &f.lc_c
    } else {
        &[]
    }
}

fn arm_fit(arm: &ArmData, o: &CompareOptions, rep: &mut ArmReport) -> Result<ArmFit, FitError> {
    let src = choose_source(arm, o.budget_tol);
    let env_range = if arm.ds.curves.is_empty() {
        (0.0, 0.0)
    } else {
        envelope::long_range(&arm.ds.curves)
    };
    let all_p: Vec<usize> = (0..arm.ds.points.len()).collect();
    let all_c: Vec<usize> = (0..arm.ds.curves.len()).collect();
    let all = Selection {
        arm,
        src,
        pts_idx: &all_p,
        cur_idx: &all_c,
        env_range,
    };
    let (c, l) = all.lc_points(o);
    if c.len() < 4 {
        return Err(FitError::Unsupported {
            fit: format!("L(C) of arm {:?}", arm.name),
            why: format!(
                "needs ≥ 4 points from the {} (have {}; {} runs, {} curves)",
                src.label(),
                c.len(),
                arm.ds.points.len(),
                arm.ds.curves.len()
            ),
        });
    }
    let c0 = (c.iter().map(|v| v.ln()).sum::<f64>() / c.len() as f64).exp();
    let f = fit_lc(&c, &l, c0, &compute::default_starts(), o.delta).ok_or_else(|| {
        FitError::Unsupported {
            fit: format!("L(C) of arm {:?}", arm.name),
            why: "no start converged".into(),
        }
    })?;
    rep.lc_source = src;
    rep.lc_points = c.iter().zip(&l).map(|(&c, &l)| [c, l]).collect();
    rep.c0 = c0;
    rep.theta = f.theta.clone();
    let a = all.n_exponent(o);
    if a.is_none() {
        rep.skipped.push(
            "N* exponent a: needs ≥ 3 IsoFLOP budgets with an interior minimum (or an envelope attained by ≥ 3 sizes)"
                .into(),
        );
    }
    let a3 = if !o.approach3 {
        None
    } else {
        match a3_supported(&arm.ds.points) {
            Err(why) => {
                rep.skipped.push(format!("Approach 3: {why}"));
                None
            }
            Ok(()) => {
                let opts = LawOptions {
                    delta: o.delta,
                    bootstrap: 0,
                    ..LawOptions::default()
                };
                let f3 = parametric::fit(&arm.ds.points, &parametric::default_starts(), &opts);
                if f3.is_none() {
                    rep.skipped.push("Approach 3: no start converged".into());
                }
                f3
            }
        }
    };
    Ok(ArmFit {
        src,
        lc_c: c.clone(),
        lc_l: l.clone(),
        lc_range: c.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        }),
        env_range,
        c0,
        theta: f.theta,
        a,
        a3,
    })
}

fn replicate(
    arm: &ArmData,
    fit: &ArmFit,
    keys_drawn: &BTreeMap<&str, usize>,
    o: &CompareOptions,
) -> Option<Vec<f64>> {
    let pick = |keys: &[String]| -> Vec<usize> {
        let mut v = vec![];
        for (i, k) in keys.iter().enumerate() {
            for _ in 0..keys_drawn.get(k.as_str()).copied().unwrap_or(0) {
                v.push(i);
            }
        }
        v
    };
    let pi = pick(&arm.point_keys);
    let ci = pick(&arm.curve_keys);
    let sel = Selection {
        arm,
        src: fit.src,
        pts_idx: &pi,
        cur_idx: &ci,
        env_range: fit.env_range,
    };
    let (c, l) = sel.lc_points(o);
    let f = fit_lc(&c, &l, fit.c0, std::slice::from_ref(&fit.theta), o.delta)?;
    let mut out = f.theta.clone();
    let slots: Vec<f64> = budget_slots(fit)
        .iter()
        .map(|&ck| {
            c.iter()
                .position(|&x| (x / ck).ln().abs() < (1.0 + o.budget_tol).ln())
                .map_or(f64::NAN, |i| l[i])
        })
        .collect();
    out.push(if fit.a.is_some() {
        sel.n_exponent(o).unwrap_or(f64::NAN)
    } else {
        f64::NAN
    });
    match &fit.a3 {
        Some(f3) => {
            let pts = sel.points();
            let opts = LawOptions {
                delta: o.delta,
                bootstrap: 0,
                ..LawOptions::default()
            };
            match parametric::fit(&pts, std::slice::from_ref(&f3.theta), &opts) {
                Some(r) => out.extend([
                    r.params.value("alpha"),
                    r.params.value("beta"),
                    r.params.value("a"),
                ]),
                None => out.extend([f64::NAN; 3]),
            }
        }
        None => out.extend([f64::NAN; 3]),
    }
    out.extend(slots);
    Some(out)
}

/// Log-spaced grid of `n` points from `lo` to `hi`.
pub fn log_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|k| (lo.ln() + (hi.ln() - lo.ln()) * k as f64 / (n - 1) as f64).exp())
        .collect()
}

/// First C in [grid start, grid end] where `f` changes sign from its sign at the start (bisection in ln C).
fn first_crossing(f: &dyn Fn(f64) -> f64, grid: &[f64]) -> Option<f64> {
    let s0 = f(grid[0]);
    if s0 == 0.0 || !s0.is_finite() {
        return None;
    }
    let mut prev = grid[0];
    for &c in &grid[1..] {
        let v = f(c);
        if v.is_finite() && v.signum() != s0.signum() && v != 0.0 {
            let (mut a, mut b) = (prev.ln(), c.ln());
            for _ in 0..60 {
                let m = 0.5 * (a + b);
                if f(m.exp()).signum() == s0.signum() {
                    a = m;
                } else {
                    b = m;
                }
            }
            return Some((0.5 * (a + b)).exp());
        }
        prev = c;
    }
    None
}

/// Compare `arms` (the first is the baseline) under `o`.
pub fn compare(
    source: &str,
    arms: &[ArmData],
    o: &CompareOptions,
) -> Result<CompareReport, FitError> {
    if arms.len() < 2 {
        return Err(FitError::Unsupported {
            fit: "compare".into(),
            why: format!(
                "needs at least 2 arms, found {} ({})",
                arms.len(),
                arms.iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let mut reports = Vec::new();
    let mut fits = Vec::new();
    for a in arms {
        let mut r = ArmReport {
            name: a.name.clone(),
            n_points: a.ds.points.len(),
            n_curves: a.ds.curves.len(),
            lc_source: LcSource::FinalLosses,
            lc_points: vec![],
            lc: BTreeMap::new(),
            a: None,
            approach3: None,
            skipped: vec![],
            notes: a.ds.notes.clone(),
            c0: f64::NAN,
            theta: vec![],
        };
        let f = arm_fit(a, o, &mut r)?;
        fits.push(f);
        reports.push(r);
    }
    let mut comparisons = Vec::new();
    // Per-arm replicate columns, from the comparison with the baseline (the baseline's from the first).
    let mut arm_reps: Vec<Vec<Vec<f64>>> = vec![vec![]; arms.len()];
    for j in 1..arms.len() {
        let (cmp, reps) = compare_pair(arms, &fits, 0, j, o);
        if j == 1 {
            arm_reps[0] = reps.iter().map(|r| r[..PER_ARM].to_vec()).collect();
        }
        arm_reps[j] = reps.iter().map(|r| r[PER_ARM..].to_vec()).collect();
        comparisons.push(cmp);
    }
    for (k, (r, f)) in reports.iter_mut().zip(&fits).enumerate() {
        let reps = &arm_reps[k];
        let col = |i: usize| -> Vec<f64> { reps.iter().map(|x| x[i]).collect() };
        let derive = |t: &[f64]| [t[1].exp(), t[0].exp() * f.c0.powf(t[2]), t[2]];
        let point = derive(&f.theta);
        let dr: Vec<[f64; 3]> = reps.iter().map(|x| derive(&x[..3])).collect();
        for (i, n) in compute::NAMES.iter().enumerate() {
            let v: Vec<f64> = dr.iter().map(|d| d[i]).collect();
            r.lc.insert(n.to_string(), interval(&v, point[i], o.level));
        }
        r.a = f.a.map(|a| interval(&col(3), a, o.level));
        if let Some(f3) = &f.a3 {
            let mut m = BTreeMap::new();
            for (name, iv) in &f3.params.0 {
                let ci = match name.as_str() {
                    "alpha" => Some(4),
                    "beta" => Some(5),
                    "a" => Some(6),
                    _ => None,
                };
                let v = match ci {
                    Some(i) => interval(&col(i), iv.value, o.level),
                    None => Interval::bare(iv.value),
                };
                m.insert(name.clone(), v);
            }
            r.approach3 = Some(m);
        }
    }
    Ok(CompareReport {
        source: source.to_string(),
        level: o.level,
        bootstrap: o.bootstrap,
        seed: o.seed,
        arms: reports,
        comparisons,
    })
}

fn compare_pair(
    arms: &[ArmData],
    fits: &[ArmFit],
    i: usize,
    j: usize,
    o: &CompareOptions,
) -> (Comparison, Vec<Vec<f64>>) {
    let (a, b) = (&arms[i], &arms[j]);
    let (fa, fb) = (&fits[i], &fits[j]);
    // The union of pairing keys; a replicate draws keys, and each arm takes its runs with those keys.
    let mut keys: Vec<&str> = a
        .point_keys
        .iter()
        .chain(&a.curve_keys)
        .chain(&b.point_keys)
        .chain(&b.curve_keys)
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let reps = if o.bootstrap > 0 {
        bootstrap(keys.len(), o.bootstrap, o.seed, |idx| {
            let mut drawn: BTreeMap<&str, usize> = BTreeMap::new();
            for &k in idx {
                *drawn.entry(keys[k]).or_insert(0) += 1;
            }
            let mut ra = replicate(a, fa, &drawn, o)?;
            let rb = replicate(b, fb, &drawn, o)?;
            ra.extend(rb);
            Some(ra)
        })
    } else {
        vec![]
    };
    // Split each replicate into the fixed values of both arms (a then b) and their per-budget values.
    let (na, nb) = (budget_slots(fa).len(), budget_slots(fb).len());
    let slot_a: Vec<&[f64]> = reps.iter().map(|r| &r[PER_ARM..PER_ARM + na]).collect();
    let slot_b: Vec<&[f64]> = reps
        .iter()
        .map(|r| &r[2 * PER_ARM + na..2 * PER_ARM + na + nb])
        .collect();
    let budgets: Vec<BudgetDelta> = budget_slots(fa)
        .iter()
        .enumerate()
        .filter_map(|(k, &ck)| {
            let j = budget_slots(fb)
                .iter()
                .position(|&x| (x / ck).ln().abs() < (1.0 + o.budget_tol).ln())?;
            let d: Vec<f64> = slot_a
                .iter()
                .zip(&slot_b)
                .map(|(sa, sb)| sb[j] - sa[k])
                .filter(|x| x.is_finite())
                .collect();
            Some(BudgetDelta {
                c: ck,
                loss_baseline: fa.lc_l[k],
                loss_other: fb.lc_l[j],
                delta: interval(&d, fb.lc_l[j] - fa.lc_l[k], o.level),
                p_other_lower: if d.is_empty() {
                    f64::NAN
                } else {
                    d.iter().filter(|&&x| x < 0.0).count() as f64 / d.len() as f64
                },
            })
        })
        .collect();
    let reps: Vec<Vec<f64>> = reps
        .iter()
        .map(|r| {
            let mut v = r[..PER_ARM].to_vec();
            v.extend_from_slice(&r[PER_ARM + na..2 * PER_ARM + na]);
            v
        })
        .collect();
    let (oa, ob) = (fa.lc_range, fb.lc_range);
    let observed = [oa.0.min(ob.0), oa.1.max(ob.1)];
    let c_max = o.c_max.unwrap_or(1000.0 * observed[1]).max(observed[1]);
    let grid = log_grid(observed[0], c_max, 121);
    let la = |t: &[f64], c: f64| lc_at(t, fa.c0, c);
    let lb = |t: &[f64], c: f64| lc_at(t, fb.c0, c);
    // ΔL(C) = L_other − L_base at `c`: the point estimate and one value per replicate.
    let delta_at = |c: f64| -> (f64, Vec<f64>) {
        let d_hat = lb(&fb.theta, c) - la(&fa.theta, c);
        let d = reps
            .iter()
            .map(|r| lb(&r[PER_ARM..PER_ARM + 3], c) - la(&r[..3], c))
            .collect();
        (d_hat, d)
    };
    let q = 0.5 - 0.5 * o.level;
    let delta: Vec<DeltaPoint> = grid
        .iter()
        .map(|&c| {
            let (d_hat, d) = delta_at(c);
            let band = |v: Vec<f64>| {
                if v.len() < 10 {
                    (f64::NAN, f64::NAN)
                } else {
                    (percentile(&v, q), percentile(&v, 1.0 - q))
                }
            };
            let ba = band(reps.iter().map(|r| la(&r[..3], c)).collect());
            let bb = band(
                reps.iter()
                    .map(|r| lb(&r[PER_ARM..PER_ARM + 3], c))
                    .collect(),
            );
            DeltaPoint {
                c,
                loss_baseline: la(&fa.theta, c),
                loss_other: lb(&fb.theta, c),
                delta: interval(&d, d_hat, o.level),
                p_other_lower: if d.is_empty() {
                    f64::NAN
                } else {
                    d.iter().filter(|&&x| x < 0.0).count() as f64 / d.len() as f64
                },
                bands: [ba.0, ba.1, bb.0, bb.1],
            }
        })
        .collect();
    // Crossover: the fitted laws', and each replicate's (no crossing = beyond c_max).
    let c_hat = first_crossing(&|c| lb(&fb.theta, c) - la(&fa.theta, c), &grid);
    let rep_cross: Vec<f64> = reps
        .iter()
        .map(|r| {
            first_crossing(&|c| lb(&r[PER_ARM..PER_ARM + 3], c) - la(&r[..3], c), &grid)
                .unwrap_or(f64::INFINITY)
        })
        .collect();
    let probability = if reps.is_empty() {
        f64::NAN
    } else {
        rep_cross.iter().filter(|x| x.is_finite()).count() as f64 / reps.len() as f64
    };
    let interval_c = (rep_cross.len() >= 10).then(|| {
        let mut v = rep_cross.clone();
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
        [at(q), at(1.0 - q)]
    });
    let sig = |d: &DeltaPoint| {
        if d.delta.lo > 0.0 {
            1
        } else if d.delta.hi < 0.0 {
            -1
        } else {
            0
        }
    };
    let found = match c_hat {
        Some(cx) => {
            let s0 = (lb(&fb.theta, grid[0]) - la(&fa.theta, grid[0])).signum() as i32;
            delta.iter().any(|d| d.c < cx && sig(d) == s0)
                && delta.iter().any(|d| d.c > cx && sig(d) == -s0)
        }
        None => false,
    };
    let (lo_name, hi_name) = (&a.name, &b.name);
    let fmt_iv = |iv: &Option<[f64; 2]>| match iv {
        Some([lo, hi]) if hi.is_finite() => format!("[{lo:.3e}, {hi:.3e}]"),
        Some([lo, _]) => format!("[{lo:.3e}, > {c_max:.3e}]"),
        None => "(no bootstrap)".into(),
    };
    let verdict = match (found, c_hat) {
        (true, Some(cx)) => {
            let first_lower = if lb(&fb.theta, grid[0]) < la(&fa.theta, grid[0]) {
                (hi_name, lo_name)
            } else {
                (lo_name, hi_name)
            };
            format!(
                "crossover at C× = {cx:.3e} {}: {} is lower below it, {} above it (P = {:.2})",
                fmt_iv(&interval_c),
                first_lower.0,
                first_lower.1,
                probability
            )
        }
        (false, Some(cx)) => format!(
            "no crossover below C_MAX = {c_max:.3e} that the data support: the fitted curves meet at {cx:.3e} but the band covers ΔL = 0 on one side (bootstrap probability of a crossover {probability:.2})"
        ),
        (false, None) => format!(
            "no crossover below C_MAX = {c_max:.3e} (bootstrap probability of one {probability:.2})"
        ),
        (true, None) => unreachable!("found implies a fitted crossing"),
    };
    let in_obs: Vec<&DeltaPoint> = delta
        .iter()
        .filter(|d| d.c <= observed[1] * (1.0 + 1e-12))
        .collect();
    let observed_verdict = if !budgets.is_empty() {
        let n = budgets.len();
        let lower = budgets.iter().filter(|b| b.delta.value < 0.0).count();
        let sig_lower = budgets.iter().filter(|b| b.delta.hi < 0.0).count();
        let sig_higher = budgets.iter().filter(|b| b.delta.lo > 0.0).count();
        if lower == n {
            format!("{hi_name} is lower than {lo_name} at every observed budget ({n} of {n}; the interval excludes 0 at {sig_lower})")
        } else if lower == 0 {
            format!("{lo_name} is lower than {hi_name} at every observed budget ({n} of {n}; the interval excludes 0 at {sig_higher})")
        } else {
            format!("the order changes between budgets: {hi_name} is lower at {lower} of {n} observed budgets ({sig_lower} with the interval excluding 0), {lo_name} at {} ({sig_higher})", n - lower)
        }
    } else if !in_obs.is_empty() && in_obs.iter().all(|d| sig(d) == -1) {
        format!("{hi_name} is lower than {lo_name} at every observed compute (band excludes 0)")
    } else if !in_obs.is_empty() && in_obs.iter().all(|d| sig(d) == 1) {
        format!("{lo_name} is lower than {hi_name} at every observed compute (band excludes 0)")
    } else if in_obs.iter().all(|d| sig(d) == 0) {
        "the arms are indistinguishable over the observed range (band covers 0 everywhere)".into()
    } else {
        "the order of the arms changes or is uncertain within the observed range".into()
    };
    let at =
        o.at.iter()
            .map(|&c| {
                let (d_hat, d) = delta_at(c);
                let other_wins = d_hat < 0.0;
                let s = if other_wins { -1.0 } else { 1.0 };
                let m: Vec<f64> = d.iter().map(|x| s * x).collect();
                let p_win = if d.is_empty() {
                    f64::NAN
                } else {
                    m.iter().filter(|&&x| x > 0.0).count() as f64 / d.len() as f64
                };
                AtBudget {
                    c,
                    winner: if other_wins {
                        hi_name.clone()
                    } else {
                        lo_name.clone()
                    },
                    margin: interval(&m, s * d_hat, o.level),
                    p_win,
                    extrapolation: c / observed[1],
                }
            })
            .collect();
    let mut exponent_differences = BTreeMap::new();
    let diff = |ka: usize, va: Option<f64>, vb: Option<f64>| -> Option<Interval> {
        let (va, vb) = (va?, vb?);
        let d: Vec<f64> = reps.iter().map(|r| r[PER_ARM + ka] - r[ka]).collect();
        Some(interval(&d, vb - va, o.level))
    };
    let alpha = |t: &[f64]| t[2];
    if let Some(iv) = diff(2, Some(alpha(&fa.theta)), Some(alpha(&fb.theta))) {
        exponent_differences.insert("alpha".to_string(), iv);
    }
    if let Some(iv) = diff(3, fa.a, fb.a) {
        exponent_differences.insert("a".to_string(), iv);
    }
    let p3 = |f: &ArmFit, n: &str| f.a3.as_ref().map(|x| x.params.value(n));
    for (k, n) in [(4, "alpha"), (5, "beta"), (6, "a")] {
        if let Some(iv) = diff(k, p3(fa, n), p3(fb, n)) {
            exponent_differences.insert(format!("a3_{n}"), iv);
        }
    }
    let crossover = Crossover {
        found,
        c_cross: c_hat,
        interval: interval_c,
        probability,
        verdict,
    };
    (
        Comparison {
            baseline: a.name.clone(),
            other: b.name.clone(),
            observed,
            c_max,
            bootstrap_ok: reps.len(),
            delta,
            budgets,
            crossover,
            at,
            exponent_differences,
            observed_verdict,
        },
        reps,
    )
}

fn iv(i: &Interval) -> String {
    format!("{} [{}, {}]", num(i.value), num(i.lo), num(i.hi))
}

/// The report as a terminal table.
pub fn table(r: &CompareReport) -> String {
    let mut out = String::new();
    let pct = 100.0 * r.level;
    let _ = writeln!(
        out,
        "compare {}  ({pct:.0}% paired-bootstrap intervals, {} replicates, seed {})",
        r.source, r.bootstrap, r.seed
    );
    let _ = writeln!(out, "\nL(C) = E + λ·C^(−α) per arm");
    let _ = writeln!(
        out,
        "  {:<12} {:<28} {:>5}  {:<32} {:<32} {:<32}",
        "arm", "L(C) from", "pts", "E", "alpha", "a (N* ∝ C^a)"
    );
    for a in &r.arms {
        let _ = writeln!(
            out,
            "  {:<12} {:<28} {:>5}  {:<32} {:<32} {:<32}",
            a.name,
            a.lc_source.label(),
            a.lc_points.len(),
            a.lc.get("E").map_or("—".into(), iv),
            a.lc.get("alpha").map_or("—".into(), iv),
            a.a.as_ref().map_or("—".into(), iv),
        );
        if let Some(p) = &a.approach3 {
            let g = |n: &str| p.get(n).map_or("—".into(), iv);
            let _ = writeln!(
                out,
                "  {:<12} Approach 3: E {}  alpha {}  beta {}  a {}",
                "",
                g("E"),
                g("alpha"),
                g("beta"),
                g("a")
            );
        }
        for s in &a.skipped {
            let _ = writeln!(out, "  {:<12} skipped: {s}", "");
        }
    }
    for c in &r.comparisons {
        let _ = writeln!(
            out,
            "\nΔL(C) = L({}) − L({})   observed C {:.3e} … {:.3e}, extrapolated to {:.3e}; {} replicates converged",
            c.other, c.baseline, c.observed[0], c.observed[1], c.c_max, c.bootstrap_ok
        );
        let _ = writeln!(
            out,
            "  {:>11}  {:>9}  {:>10}  {:>10}  {:<32} {:>10}",
            "C", "×observed", c.baseline, c.other, "ΔL", "P(other<)"
        );
        let picks = [0.0, 0.25, 0.5, 0.75, 1.0];
        let mut shown: Vec<usize> = vec![];
        let n_obs = c
            .delta
            .iter()
            .filter(|d| d.c <= c.observed[1] * (1.0 + 1e-9))
            .count();
        for p in picks {
            shown.push(((n_obs.max(1) - 1) as f64 * p).round() as usize);
        }
        for m in [10.0, 100.0, 1000.0] {
            if let Some(k) = c
                .delta
                .iter()
                .position(|d| d.c >= c.observed[1] * m * (1.0 - 1e-9))
            {
                shown.push(k);
            }
        }
        shown.push(c.delta.len() - 1);
        shown.dedup();
        for k in shown {
            let d = &c.delta[k];
            let _ = writeln!(
                out,
                "  {:>11.3e}  {:>9.3}  {:>10.4}  {:>10.4}  {:<32} {:>10.3}",
                d.c,
                d.c / c.observed[1],
                d.loss_baseline,
                d.loss_other,
                iv(&d.delta),
                d.p_other_lower
            );
        }
        if !c.budgets.is_empty() {
            let _ = writeln!(
                out,
                "  per budget (IsoFLOP minima):\n  {:>11}  {:>10}  {:>10}  {:<32} {:>10}",
                "C", c.baseline, c.other, "ΔL", "P(other<)"
            );
            for b in &c.budgets {
                let _ = writeln!(
                    out,
                    "  {:>11.3e}  {:>10.4}  {:>10.4}  {:<32} {:>10.3}",
                    b.c,
                    b.loss_baseline,
                    b.loss_other,
                    iv(&b.delta),
                    b.p_other_lower
                );
            }
        }
        let _ = writeln!(out, "  observed range: {}", c.observed_verdict);
        let _ = writeln!(out, "  {}", c.crossover.verdict);
        for a in &c.at {
            let _ = writeln!(
                out,
                "  at C = {:.3e} ({:.3}× the largest observed): {} wins by {} (P = {:.3})",
                a.c,
                a.extrapolation,
                a.winner,
                iv(&a.margin),
                a.p_win
            );
        }
        for (k, v) in &c.exponent_differences {
            let _ = writeln!(out, "  Δ{k} ({} − {}): {}", c.other, c.baseline, iv(v));
        }
    }
    out
}

/// Load a comparison's arms: one input split by column `by`, or two inputs, one arm each (named by
/// `names`, else by the input's file stem or directory name).
pub fn load_arms(
    inputs: &[&Path],
    by: &str,
    names: &[String],
    cols: &Columns,
) -> Result<Vec<ArmData>, FitError> {
    let files = |p: &Path| super::data::resolve_input(p, None);
    let read = |p: &Option<std::path::PathBuf>| p.as_deref().map(Table::read).transpose();
    match inputs {
        [one] => {
            let (runs_p, steps_p) = files(one)?;
            let (runs, steps) = (read(&runs_p)?, read(&steps_p)?);
            let by_runs = runs.as_ref().map(|t| split_by(t, by)).transpose()?;
            let by_steps = steps.as_ref().map(|t| split_by(t, by)).transpose()?;
            let order: Vec<String> = match (&by_runs, &by_steps) {
                (Some(r), _) => r.iter().map(|x| x.0.clone()).collect(),
                (None, Some(s)) => s.iter().map(|x| x.0.clone()).collect(),
                (None, None) => vec![],
            };
            let mut order = order;
            if !names.is_empty() {
                for n in names {
                    if !order.contains(n) {
                        return Err(FitError::BadInput {
                            path: one.to_path_buf(),
                            what: format!(
                                "--names: no rows with {by} = {n:?} (values present: {})",
                                order.join(", ")
                            ),
                        });
                    }
                }
                order = names.to_vec();
            }
            order
                .iter()
                .map(|arm| {
                    let pick = |v: &Option<Vec<(String, Table)>>| {
                        v.as_ref()
                            .and_then(|v| v.iter().find(|x| x.0 == *arm).map(|x| x.1.clone()))
                    };
                    read_arm(
                        arm,
                        format!("{} ({by} = {arm})", one.display()),
                        pick(&by_runs).as_ref(),
                        pick(&by_steps).as_ref(),
                        cols,
                    )
                })
                .collect()
        }
        [a, b] => [a, b]
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let (runs_p, steps_p) = files(p)?;
                let name = names.get(k).cloned().unwrap_or_else(|| {
                    p.file_stem()
                        .map_or(format!("arm{k}"), |s| s.to_string_lossy().to_string())
                });
                read_arm(
                    &name,
                    p.display().to_string(),
                    read(&runs_p)?.as_ref(),
                    read(&steps_p)?.as_ref(),
                    cols,
                )
            })
            .collect(),
        _ => Err(FitError::Unsupported {
            fit: "compare".into(),
            why: format!(
                "takes one input (split by --by) or two, got {}",
                inputs.len()
            ),
        }),
    }
}

type PlotResult = Result<(), String>;

/// Draw the series labels of `ch` in the comparison figures' style (a box at the upper right).
fn legend<'a, DB, CT>(ch: &mut plotters::chart::ChartContext<'a, DB, CT>) -> PlotResult
where
    DB: plotters::backend::DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate,
{
    use plotters::prelude::*;
    ch.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 17))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(pe)
}

fn pe<T: std::fmt::Debug>(x: T) -> String {
    format!("{x:?}")
}

fn sci_tick(v: &f64) -> String {
    format!("{v:.0e}").replace("e0", "")
}

/// Two panels: each arm's L(C) (points, fitted law, band) and ΔL(C) with its band, zero and C× marked.
fn fig_compare<DB: plotters::prelude::DrawingBackend>(
    root: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    r: &CompareReport,
    c: &Comparison,
) -> PlotResult {
    use super::plot::{log_chart, Frame};
    use plotters::prelude::*;
    root.fill(&WHITE).map_err(pe)?;
    let (top, bottom) = root.split_vertically((root.dim_in_pixel().1 as f64 * 0.58) as u32);
    let arm = |n: &str| r.arms.iter().find(|a| a.name == n);
    let (ra, rb) = (arm(&c.baseline).ok_or("arm")?, arm(&c.other).ok_or("arm")?);
    let cols = [RGBColor(31, 119, 180), RGBColor(214, 39, 40)];
    let (x_lo, x_hi) = (c.observed[0] / 1.5, c.c_max * 1.5);
    let mut l_lo = f64::INFINITY;
    let mut l_hi = 0.0f64;
    for a in [ra, rb] {
        for p in &a.lc_points {
            l_lo = l_lo.min(p[1]);
            l_hi = l_hi.max(p[1]);
        }
    }
    for d in &c.delta {
        for v in [d.loss_baseline, d.loss_other] {
            if v.is_finite() {
                l_lo = l_lo.min(v);
            }
        }
    }
    let pad = 0.05 * (l_hi - l_lo).max(1e-3);
    let mut ch = log_chart(
        &top,
        &Frame {
            margin: 18,
            x_area: 45,
            y_area: 75,
            x_fmt: &sci_tick,
            y_fmt: &|v| format!("{v:.2}"),
            ..Frame::new(
                &format!("{} vs {}: loss against compute", c.other, c.baseline),
                "training FLOPs C",
                "loss",
            )
        },
        (x_lo, x_hi),
        (l_lo - pad)..(l_hi + pad),
    )?;
    for (k, a) in [ra, rb].iter().enumerate() {
        let col = cols[k];
        let (bl, bh) = (2 * k, 2 * k + 1);
        let band: Vec<(f64, f64)> = c
            .delta
            .iter()
            .filter(|d| d.bands[bl].is_finite())
            .map(|d| (d.c, d.bands[bl]))
            .chain(
                c.delta
                    .iter()
                    .rev()
                    .filter(|d| d.bands[bh].is_finite())
                    .map(|d| (d.c, d.bands[bh])),
            )
            .collect();
        if band.len() > 2 {
            ch.draw_series(std::iter::once(Polygon::new(band, col.mix(0.18).filled())))
                .map_err(pe)?;
        }
        let line: Vec<(f64, f64)> = c
            .delta
            .iter()
            .map(|d| {
                (
                    d.c,
                    if k == 0 {
                        d.loss_baseline
                    } else {
                        d.loss_other
                    },
                )
            })
            .collect();
        let lab = format!(
            "{}: {} (α = {:.3})",
            a.name,
            a.lc_source.label(),
            a.lc.get("alpha").map_or(f64::NAN, |i| i.value)
        );
        ch.draw_series(LineSeries::new(line, col.stroke_width(3)))
            .map_err(pe)?
            .label(lab)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(3)));
        ch.draw_series(
            a.lc_points
                .iter()
                .map(|p| Circle::new((p[0], p[1]), 4, col.filled())),
        )
        .map_err(pe)?;
    }
    ch.draw_series(LineSeries::new(
        [(c.observed[1], l_lo - pad), (c.observed[1], l_hi + pad)],
        BLACK.mix(0.3).stroke_width(1),
    ))
    .map_err(pe)?;
    legend(&mut ch)?;
    // ΔL panel.
    let vals = c
        .delta
        .iter()
        .flat_map(|d| [d.delta.value, d.delta.lo, d.delta.hi])
        .filter(|v| v.is_finite());
    let (mut d_lo, mut d_hi) = vals.fold((0.0f64, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let dp = 0.08 * (d_hi - d_lo).max(1e-4);
    d_lo -= dp;
    d_hi += dp;
    let mut ch = log_chart(
        &bottom,
        &Frame {
            caption_size: 22,
            margin: 18,
            x_area: 50,
            y_area: 75,
            x_fmt: &sci_tick,
            y_fmt: &|v| format!("{v:.3}"),
            ..Frame::new(
                &format!(
                    "ΔL = L({}) − L({}), {:.0}% paired-bootstrap band",
                    c.other,
                    c.baseline,
                    100.0 * r.level
                ),
                "training FLOPs C (grey line: largest observed)",
                "ΔL",
            )
        },
        (x_lo, x_hi),
        d_lo..d_hi,
    )?;
    let band: Vec<(f64, f64)> = c
        .delta
        .iter()
        .filter(|d| d.delta.lo.is_finite())
        .map(|d| (d.c, d.delta.lo))
        .chain(
            c.delta
                .iter()
                .rev()
                .filter(|d| d.delta.hi.is_finite())
                .map(|d| (d.c, d.delta.hi)),
        )
        .collect();
    if band.len() > 2 {
        ch.draw_series(std::iter::once(Polygon::new(
            band,
            cols[1].mix(0.18).filled(),
        )))
        .map_err(pe)?;
    }
    ch.draw_series(LineSeries::new(
        [(x_lo, 0.0), (x_hi, 0.0)],
        BLACK.mix(0.7).stroke_width(2),
    ))
    .map_err(pe)?;
    ch.draw_series(LineSeries::new(
        c.delta.iter().map(|d| (d.c, d.delta.value)),
        cols[1].stroke_width(3),
    ))
    .map_err(pe)?;
    ch.draw_series(LineSeries::new(
        [(c.observed[1], d_lo), (c.observed[1], d_hi)],
        BLACK.mix(0.3).stroke_width(1),
    ))
    .map_err(pe)?;
    if let Some(cx) = c.crossover.c_cross {
        let col = if c.crossover.found {
            RGBColor(0, 130, 0)
        } else {
            RGBColor(150, 150, 150)
        };
        if let Some([lo, hi]) = c.crossover.interval {
            let (lo, hi) = (
                lo.max(x_lo),
                if hi.is_finite() { hi.min(x_hi) } else { x_hi },
            );
            if hi > lo {
                ch.draw_series(std::iter::once(Rectangle::new(
                    [(lo, d_lo), (hi, d_hi)],
                    col.mix(0.12).filled(),
                )))
                .map_err(pe)?;
            }
        }
        ch.draw_series(LineSeries::new(
            [(cx, d_lo), (cx, d_hi)],
            col.stroke_width(2),
        ))
        .map_err(pe)?
        .label(format!(
            "C× = {cx:.2e}{}",
            if c.crossover.found {
                ""
            } else {
                " (not significant)"
            }
        ))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        legend(&mut ch)?;
    }
    root.present().map_err(pe)
}

/// Write `compare[_<other>].svg` and `.png` for every comparison into `dir`; returns the files written.
pub fn write_plots(dir: &Path, r: &CompareReport) -> Result<Vec<std::path::PathBuf>, FitError> {
    use plotters::prelude::*;
    super::plot::register_font();
    let mut out = vec![];
    for c in &r.comparisons {
        let stem = if r.comparisons.len() == 1 {
            "compare".to_string()
        } else {
            format!("compare_{}", c.other)
        };
        let size = (1200, 1000);
        let svg = dir.join(format!("{stem}.svg"));
        let png = dir.join(format!("{stem}.png"));
        let fail = |p: &Path| {
            let p = p.to_path_buf();
            move |why: String| FitError::BadInput {
                path: p,
                what: format!("plot failed: {why}"),
            }
        };
        fig_compare(&SVGBackend::new(&svg, size).into_drawing_area(), r, c).map_err(fail(&svg))?;
        fig_compare(&BitMapBackend::new(&png, size).into_drawing_area(), r, c)
            .map_err(fail(&png))?;
        out.push(svg);
        out.push(png);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_crossing_bisects() {
        let g = log_grid(1.0, 1e6, 50);
        let c = first_crossing(&|c: f64| c.ln() - 1e3f64.ln(), &g).unwrap();
        assert!((c / 1e3 - 1.0).abs() < 1e-9, "{c}");
        assert!(first_crossing(&|_| 1.0, &g).is_none());
    }
}
