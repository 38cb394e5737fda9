//! Downstream task error against loss (Gadre et al. 2024, eq. 4): Err(L) = ε − k·exp(−γ·L).
//!
//! Fitted as the authors' code does (`scaling/shared.py`, `fit_ds`: scipy `curve_fit`, unbounded
//! Levenberg–Marquardt from k = γ = ε = 1): ordinary least squares on the error itself,
//! Σ (Err(Lᵢ) − errᵢ)². For a fixed γ the model is linear in (ε, k), so the fit is one-dimensional
//! (variable projection): (ε, k) by linear least squares at every γ of a log grid on
//! [`GAMMA_RANGE`], then Brent's method (argmin) on the best grid cell. That reaches the global least-
//! squares minimum on the range whatever the start, which is where LM from (1, 1, 1) lands on Gadre
//! et al.'s data (checked in tests/fit_cli.rs against their published parameters).
//! Intervals: percentile bootstrap over resampled (loss, error) pairs, seeded, in replicate order.

use super::data::resolve_input;
use super::error::FitError;
use super::law::Params;
use super::optim::bootstrap;
use super::table::Table;
use argmin::core::{CostFunction, Executor, State};
use argmin::solver::brent::BrentOpt;
use std::path::Path;

/// Names of the reported quantities: k, γ, ε (θ in this order).
pub const NAMES: [&str; 3] = ["k", "gamma", "epsilon"];

/// The γ searched: a law with γ at either end is flagged (the data do not bend).
pub const GAMMA_RANGE: (f64, f64) = (1e-3, 30.0);

/// Grid points of the γ scan (log-spaced).
const GAMMA_GRID: usize = 400;

/// Fewest (loss, error) pairs fitted: three parameters need a fourth point for any residual.
pub const MIN_POINTS: usize = 4;

/// Default random-chance error when neither `--chance` nor the task is known: a 4-way multiple
/// choice (and the mean chance error of Gadre et al.'s 46 tasks, 0.7500).
pub const DEFAULT_CHANCE: f64 = 0.75;

/// One run: its loss and its task error (1 − top-1 accuracy).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pair {
    /// Loss of the run (the `--loss-col` column).
    pub loss: f64,
    /// Task error in [0, 1].
    pub error: f64,
}

/// Err(L) at θ = (k, γ, ε).
pub fn error_at(theta: &[f64], loss: f64) -> f64 {
    theta[2] - theta[0] * (-theta[1] * loss).exp()
}

/// The least-squares (ε, k) at fixed γ and the residual sum of squares. Basis exp(−γ(L − L_min)) keeps
/// the numbers in range; `None` when the losses do not vary.
fn project(pairs: &[Pair], gamma: f64) -> Option<([f64; 3], f64)> {
    let lmin = pairs.iter().map(|p| p.loss).fold(f64::INFINITY, f64::min);
    let n = pairs.len() as f64;
    let u: Vec<f64> = pairs
        .iter()
        .map(|p| (-gamma * (p.loss - lmin)).exp())
        .collect();
    let (um, ym) = (
        u.iter().sum::<f64>() / n,
        pairs.iter().map(|p| p.error).sum::<f64>() / n,
    );
    let (mut suu, mut suy) = (0.0, 0.0);
    for (ui, p) in u.iter().zip(pairs) {
        suu += (ui - um) * (ui - um);
        suy += (ui - um) * (p.error - ym);
    }
    if suu.is_nan() || suu <= 1e-300 {
        return None;
    }
    // y = ε − k_s·u with k_s = k·exp(−γ L_min).
    let ks = -suy / suu;
    let eps = ym + ks * um;
    let sse: f64 = u
        .iter()
        .zip(pairs)
        .map(|(ui, p)| (eps - ks * ui - p.error).powi(2))
        .sum();
    let k = ks * (gamma * lmin).exp();
    Some(([k, gamma, eps], sse))
}

struct Profile<'a>(&'a [Pair]);

impl CostFunction for Profile<'_> {
    type Param = f64;
    type Output = f64;
    fn cost(&self, g: &f64) -> Result<f64, argmin::core::Error> {
        Ok(project(self.0, *g).map_or(f64::INFINITY, |(_, s)| s))
    }
}

/// A least-squares minimum: θ = (k, γ, ε) and Σ residual².
#[derive(Clone, Debug)]
pub struct Minimum {
    /// (k, γ, ε).
    pub theta: [f64; 3],
    /// Residual sum of squares.
    pub sse: f64,
    /// Whether γ ended at an end of [`GAMMA_RANGE`].
    pub at_bound: bool,
}

/// The least-squares fit of Err(L) to `pairs`; `None` with fewer than 3 distinct losses.
pub fn fit_lsq(pairs: &[Pair]) -> Option<Minimum> {
    let mut ls: Vec<f64> = pairs.iter().map(|p| p.loss).collect();
    ls.sort_by(f64::total_cmp);
    ls.dedup_by(|a, b| (*a - *b).abs() <= 1e-12 * b.abs());
    if ls.len() < 3 {
        return None;
    }
    let (lo, hi) = (GAMMA_RANGE.0.ln(), GAMMA_RANGE.1.ln());
    let gs: Vec<f64> = (0..GAMMA_GRID)
        .map(|i| (lo + (hi - lo) * i as f64 / (GAMMA_GRID - 1) as f64).exp())
        .collect();
    let ss: Vec<f64> = gs
        .iter()
        .map(|&g| project(pairs, g).map_or(f64::INFINITY, |(_, s)| s))
        .collect();
    // First minimum on ties: deterministic.
    let i = (0..gs.len()).fold(0, |b, i| if ss[i] < ss[b] { i } else { b });
    if !ss[i].is_finite() {
        return None;
    }
    let (a, b) = (gs[i.saturating_sub(1)], gs[(i + 1).min(gs.len() - 1)]);
    let mut best = (gs[i], ss[i]);
    let solver = BrentOpt::new(a, b).set_tolerance(1e-12, 1e-14);
    if let Ok(res) = Executor::new(Profile(pairs), solver)
        .configure(|s| s.max_iters(200))
        .run()
    {
        let st = res.state();
        if let Some(&g) = st.get_best_param() {
            if st.get_best_cost() < best.1 {
                best = (g, st.get_best_cost());
            }
        }
    }
    let (theta, sse) = project(pairs, best.0)?;
    let at_bound = i == 0 || i == gs.len() - 1;
    Some(Minimum {
        theta,
        sse,
        at_bound,
    })
}

/// A fitted error law.
#[derive(Clone, Debug)]
pub struct DownstreamFit {
    /// The best fit.
    pub best: Minimum,
    /// k, γ, ε with bootstrap percentile intervals.
    pub params: Params,
    /// Observed − fitted error, per pair.
    pub residuals: Vec<f64>,
    /// θ of each bootstrap replicate that fitted, in replicate order.
    pub replicates: Vec<Vec<f64>>,
}

/// Fit `pairs` and bootstrap (`reps` resamples of the pairs from `seed`, interval at `level`).
pub fn fit(pairs: &[Pair], reps: usize, seed: u64, level: f64) -> Option<DownstreamFit> {
    let best = fit_lsq(pairs)?;
    let residuals = pairs
        .iter()
        .map(|p| p.error - error_at(&best.theta, p.loss))
        .collect();
    let replicates = bootstrap(pairs.len(), reps, seed, |idx| {
        let s: Vec<Pair> = idx.iter().map(|&i| pairs[i]).collect();
        fit_lsq(&s).map(|m| m.theta.to_vec())
    });
    let params = Params::from_replicates(&NAMES, &best.theta, &replicates, level);
    Some(DownstreamFit {
        best,
        params,
        residuals,
        replicates,
    })
}

/// Why a fit is not a usable error law: non-finite parameters, k ≤ 0 or γ ≤ 0 (error not falling with
/// loss), γ at an end of [`GAMMA_RANGE`], ε > 1 (an error above 1 at infinite loss), or a negative
/// error at the lowest loss fitted.
pub fn sanity_problems(f: &DownstreamFit, loss_min: f64) -> Vec<String> {
    let [k, g, e] = f.best.theta;
    let mut out = vec![];
    for (n, v) in NAMES.iter().zip([k, g, e]) {
        if !v.is_finite() {
            out.push(format!("{n} = {v} is not finite"));
        }
    }
    if k.is_finite() && k <= 0.0 {
        out.push(format!(
            "k = {k:.4} is not positive: the error does not fall as the loss falls"
        ));
    }
    if f.best.at_bound {
        out.push(format!(
            "gamma = {g:.4} is at an end of the range searched [{}, {}]: the error does not bend with the loss in these data",
            GAMMA_RANGE.0, GAMMA_RANGE.1
        ));
    } else if g.is_finite() && g <= 0.0 {
        out.push(format!("gamma = {g:.4} is not positive"));
    }
    if e.is_finite() && e > 1.0 {
        out.push(format!(
            "epsilon = {e:.4} is above 1 (the error at infinite loss)"
        ));
    }
    let at_min = error_at(&f.best.theta, loss_min);
    if at_min.is_finite() && at_min < 0.0 {
        out.push(format!(
            "the error at the lowest loss fitted ({loss_min:.4}) is {at_min:.4} < 0"
        ));
    }
    out
}

/// (loss, error) pairs read from a runs table.
#[derive(Clone, Debug)]
pub struct PairSet {
    /// The pairs, in row order.
    pub pairs: Vec<Pair>,
    /// The loss column used.
    pub loss_col: String,
    /// The error column used.
    pub error_col: String,
    /// Remarks (rows skipped).
    pub notes: Vec<String>,
}

/// Read (loss, error) pairs from `input` (a sweep directory's runs.csv or a CSV), restricted to `arm`.
/// Loss: `loss_col`, else `eval_loss`, `loss`, `final_loss`. Rows with an empty or non-finite loss or
/// error are skipped (counted in the notes: runs not evaluated on the task); text that is not a number,
/// a loss ≤ 0 or an error outside [0, 1] is an error naming the file, line and column.
pub fn read_pairs(
    input: &Path,
    loss_col: Option<&str>,
    error_col: &str,
    arm: Option<&str>,
) -> Result<PairSet, FitError> {
    let (runs, _) = resolve_input(input, None)?;
    let path = runs.ok_or_else(|| FitError::BadInput {
        path: input.to_path_buf(),
        what: "the downstream fit needs a runs table (runs.csv) with loss and error columns".into(),
    })?;
    let mut t = Table::read(&path)?;
    super::data::select_arm(&mut t, arm)?;
    let loss_names: Vec<String> = match loss_col {
        Some(c) => vec![c.to_string()],
        None => ["eval_loss", "loss", "final_loss"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let li = t.require(&loss_names, "--loss-col")?;
    let ei = t.require(&[error_col.to_string()], "--error-col")?;
    let mut pairs = vec![];
    let mut skipped = vec![];
    for r in 0..t.rows.len() {
        let (l, e) = (t.number(r, li)?, t.number(r, ei)?);
        let (Some(l), Some(e)) = (l, e) else {
            skipped.push(t.line(r));
            continue;
        };
        if !(l.is_finite() && e.is_finite()) {
            skipped.push(t.line(r));
            continue;
        }
        let bad = |col: usize, what: String| FitError::BadInput {
            path: t.path.clone(),
            what: format!("line {}, column '{}': {what}", t.line(r), t.header[col]),
        };
        if l <= 0.0 {
            return Err(bad(li, format!("loss {l} is not positive")));
        }
        if !(0.0..=1.0).contains(&e) {
            return Err(bad(
                ei,
                format!(
                    "error {e} is outside [0, 1] (an error rate, 1 − accuracy; not a percentage)"
                ),
            ));
        }
        pairs.push(Pair { loss: l, error: e });
    }
    let mut notes = vec![];
    if !skipped.is_empty() {
        let shown: Vec<String> = skipped.iter().take(20).map(|l| l.to_string()).collect();
        notes.push(format!(
            "{}: skipped {} row(s) without a finite '{}' and '{}' (runs not evaluated?), at line(s) {}{}",
            t.path.display(),
            skipped.len(),
            t.header[li],
            t.header[ei],
            shown.join(", "),
            if skipped.len() > 20 { ", …" } else { "" }
        ));
    }
    Ok(PairSet {
        pairs,
        loss_col: t.header[li].clone(),
        error_col: t.header[ei].clone(),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic(theta: [f64; 3], noise: f64, n: usize) -> Vec<Pair> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        (0..n)
            .map(|i| {
                let loss = 2.2 + 3.0 * i as f64 / (n - 1) as f64;
                let z: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
                Pair {
                    loss,
                    error: error_at(&theta, loss) + noise * z,
                }
            })
            .collect()
    }

    #[test]
    fn exact_points_give_the_law_back() {
        let theta = [1.289, 0.972, 0.759];
        let f = fit_lsq(&synthetic(theta, 0.0, 6)).unwrap();
        for (got, want) in f.theta.iter().zip(theta) {
            assert!((got - want).abs() < 1e-6, "{:?}", f.theta);
        }
        assert!(f.sse < 1e-20 && !f.at_bound);
    }

    #[test]
    fn noisy_points_are_recovered_within_the_intervals() {
        let theta = [2.079, 0.756, 0.850];
        let pairs = synthetic(theta, 0.002, 12);
        let f = fit(&pairs, 300, 3, 0.95).unwrap();
        assert!(f.replicates.len() > 290);
        for (k, n) in NAMES.iter().enumerate() {
            let iv = f.params.get(n).unwrap();
            assert!(iv.lo < iv.hi, "{n}: {iv:?}");
            assert!(iv.contains(theta[k]), "{n} = {} outside {iv:?}", theta[k]);
        }
        assert!(sanity_problems(&f, 2.2).is_empty());
        // Seeded: the same replicates again.
        assert_eq!(fit(&pairs, 300, 3, 0.95).unwrap().replicates, f.replicates);
    }

    #[test]
    fn flat_or_rising_error_is_flagged() {
        // Error rising as loss falls: k < 0.
        let pairs: Vec<Pair> = (0..6)
            .map(|i| Pair {
                loss: 2.0 + i as f64 * 0.5,
                error: 0.5 - 0.05 * i as f64 + 0.01 * (i % 2) as f64,
            })
            .collect();
        let f = fit(&pairs, 0, 0, 0.95).unwrap();
        assert!(!sanity_problems(&f, 2.0).is_empty());
        // Two distinct losses: no fit.
        let two = [2.0, 2.0, 3.0, 3.0].map(|l| Pair {
            loss: l,
            error: 0.5,
        });
        assert!(fit_lsq(&two).is_none());
    }
}
