//! Approach 2 (IsoFLOP): per FLOP budget, the loss-minimising N from a parabola in ln N (or an Akima
//! interpolant, as Porian et al. 2024), then power laws N*(C) ∝ C^a and D*(C) ∝ C^b weighted by the
//! per-budget uncertainty.

use super::akima::Akima;
use super::data::Point;
use super::powerlaw::PowerLaw;
use super::stats::line_fit;
use serde::Serialize;

/// How the minimum of one budget is located.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MinMethod {
    /// Least-squares parabola of loss in ln N; delta-method standard error of ln N*.
    Parabola,
    /// Akima interpolant of loss in ln N, minimum on a dense grid; no standard error.
    Akima,
}

/// The minimum of one IsoFLOP budget.
#[derive(Clone, Debug, Serialize)]
pub struct BudgetMin {
    /// The budget: geometric mean of the runs' FLOPs.
    pub c: f64,
    /// Runs in the budget.
    pub n_points: usize,
    /// Loss-minimising N*.
    pub n_opt: f64,
    /// D* at N* (from a line of ln D on ln N through the budget's runs).
    pub d_opt: f64,
    /// Loss at the minimum.
    pub loss_opt: f64,
    /// Standard error of ln N* (parabola with at least 4 runs).
    pub se_ln_n: Option<f64>,
    /// Standard error of ln D*.
    pub se_ln_d: Option<f64>,
    /// Whether the minimum enters the power-law fits.
    pub used: bool,
    /// Why not, when not.
    pub note: Option<String>,
    /// The fitted curve for plots: (N, loss) samples.
    #[serde(skip)]
    pub curve: Vec<(f64, f64)>,
    /// The budget's runs: (N, loss).
    #[serde(skip)]
    pub runs: Vec<(f64, f64)>,
}

/// Approach 2 result for one minimum-finding method.
#[derive(Clone, Debug, Serialize)]
pub struct IsoFlopFit {
    /// How minima were found.
    pub method: MinMethod,
    /// Per-budget minima.
    pub budgets: Vec<BudgetMin>,
    /// N*(C) = k·C^a.
    pub n_opt: Option<PowerLaw>,
    /// D*(C) = k·C^b.
    pub d_opt: Option<PowerLaw>,
}

/// Group points into FLOP budgets: sorted by C, a new budget starts where C grows by more than a
/// factor 1 + `rel_tol` from the previous point.
pub fn group_budgets(points: &[Point], rel_tol: f64) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..points.len()).collect();
    idx.sort_by(|&a, &b| points[a].c.total_cmp(&points[b].c).then(a.cmp(&b)));
    let mut groups: Vec<Vec<usize>> = vec![];
    let mut prev = f64::NAN;
    for i in idx {
        let c = points[i].c;
        if groups.is_empty() || c > prev * (1.0 + rel_tol) {
            groups.push(vec![]);
        }
        groups.last_mut().expect("pushed").push(i);
        prev = c;
    }
    groups
}

/// Solve the 3×3 system `a x = b` (Gaussian elimination with partial pivoting).
pub(crate) fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let p = (col..3).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[p][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, p);
        b.swap(col, p);
        for r in col + 1..3 {
            let f = a[r][col] / a[col][col];
            let pivot_row = a[col];
            for (x, p) in a[r][col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for r in (0..3).rev() {
        let s: f64 = (r + 1..3).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

pub(crate) fn inv3(a: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let mut inv = [[0.0; 3]; 3];
    for j in 0..3 {
        let mut e = [0.0; 3];
        e[j] = 1.0;
        let col = solve3(a, e)?;
        for i in 0..3 {
            inv[i][j] = col[i];
        }
    }
    Some(inv)
}

/// Minimum of one budget (points `idx`) by `method`.
pub fn budget_min(points: &[Point], idx: &[usize], method: MinMethod) -> BudgetMin {
    let mut ix: Vec<usize> = idx.to_vec();
    ix.sort_by(|&a, &b| points[a].n.total_cmp(&points[b].n));
    let xs: Vec<f64> = ix.iter().map(|&i| points[i].n.ln()).collect();
    let ys: Vec<f64> = ix.iter().map(|&i| points[i].loss).collect();
    let lds: Vec<f64> = ix.iter().map(|&i| points[i].d.ln()).collect();
    let c = (ix.iter().map(|&i| points[i].c.ln()).sum::<f64>() / ix.len() as f64).exp();
    let mut out = BudgetMin {
        c,
        n_points: ix.len(),
        n_opt: f64::NAN,
        d_opt: f64::NAN,
        loss_opt: f64::NAN,
        se_ln_n: None,
        se_ln_d: None,
        used: false,
        note: None,
        curve: vec![],
        runs: ix.iter().map(|&i| (points[i].n, points[i].loss)).collect(),
    };
    let distinct = xs.windows(2).filter(|w| w[1] > w[0]).count() + 1;
    if distinct < 3 {
        out.note = Some(format!("{distinct} distinct N (need 3)"));
        return out;
    }
    let (lo, hi) = (xs[0], xs[xs.len() - 1]);
    let (x_opt, loss_opt, se) = match method {
        MinMethod::Parabola => {
            let xc = xs.iter().sum::<f64>() / xs.len() as f64;
            let mut ata = [[0.0; 3]; 3];
            let mut aty = [0.0; 3];
            for (x, y) in xs.iter().zip(&ys) {
                let r = [1.0, x - xc, (x - xc) * (x - xc)];
                for i in 0..3 {
                    for j in 0..3 {
                        ata[i][j] += r[i] * r[j];
                    }
                    aty[i] += r[i] * y;
                }
            }
            let (Some(p), Some(inv)) = (solve3(ata, aty), inv3(ata)) else {
                out.note = Some("singular parabola fit".into());
                return out;
            };
            out.curve = (0..=100)
                .map(|k| {
                    let x = lo + (hi - lo) * k as f64 / 100.0 - xc;
                    ((x + xc).exp(), p[0] + p[1] * x + p[2] * x * x)
                })
                .collect();
            if p[2] <= 0.0 {
                out.note = Some("parabola opens downwards (no minimum)".into());
                return out;
            }
            let u = -p[1] / (2.0 * p[2]);
            let dof = xs.len() as f64 - 3.0;
            let se = (dof >= 1.0).then(|| {
                let rss: f64 = xs
                    .iter()
                    .zip(&ys)
                    .map(|(x, y)| {
                        let x = x - xc;
                        let r = y - p[0] - p[1] * x - p[2] * x * x;
                        r * r
                    })
                    .sum();
                let s2 = rss / dof;
                let g = [0.0, -1.0 / (2.0 * p[2]), p[1] / (2.0 * p[2] * p[2])];
                let mut v = 0.0;
                for i in 0..3 {
                    for j in 0..3 {
                        v += g[i] * inv[i][j] * g[j] * s2;
                    }
                }
                v.max(0.0).sqrt()
            });
            (u + xc, p[0] + p[1] * u + p[2] * u * u, se)
        }
        MinMethod::Akima => {
            let mut ux: Vec<f64> = vec![];
            let mut uy: Vec<f64> = vec![];
            // Knots closer than 1% in N are merged (mean ln N, mean loss): near-coincident knots make
            // the secant slopes, and so the interpolant, explode.
            let mut cnt: Vec<f64> = vec![];
            for (x, y) in xs.iter().zip(&ys) {
                match ux.last() {
                    Some(&last) if x - last / cnt[cnt.len() - 1] < 0.01 => {
                        let l = ux.len() - 1;
                        ux[l] += x;
                        uy[l] += y;
                        cnt[l] += 1.0;
                    }
                    _ => {
                        ux.push(*x);
                        uy.push(*y);
                        cnt.push(1.0);
                    }
                }
            }
            for ((x, y), k) in ux.iter_mut().zip(uy.iter_mut()).zip(&cnt) {
                *x /= k;
                *y /= k;
            }
            let Some(a) = Akima::new(&ux, &uy) else {
                out.note = Some("Akima interpolation failed".into());
                return out;
            };
            out.curve = (0..=200)
                .map(|k| {
                    let x = lo + (hi - lo) * k as f64 / 200.0;
                    (x.exp(), a.eval(x))
                })
                .collect();
            let (x, y) = a.minimum(200);
            (x, y, None)
        }
    };
    out.n_opt = x_opt.exp();
    out.loss_opt = loss_opt;
    out.se_ln_n = se.filter(|s| s.is_finite() && *s > 0.0);
    // D at N*: a line of ln D on ln N through the budget (exact for C ∝ N·D).
    let dl = line_fit(&xs, &lds, None, 0.95);
    match dl {
        Some(l) => {
            out.d_opt = (l.intercept.value + l.slope.value * x_opt).exp();
            out.se_ln_d = out.se_ln_n.map(|s| s * l.slope.value.abs());
        }
        None => out.d_opt = c / (6.0 * out.n_opt),
    }
    let span = hi - lo;
    if x_opt <= lo + 1e-9 * span.max(1.0) || x_opt >= hi - 1e-9 * span.max(1.0) {
        out.note = Some("minimum at the edge of the N range (extrapolated)".into());
    } else if x_opt < lo || x_opt > hi {
        out.note = Some("minimum outside the N range".into());
    } else {
        out.used = true;
    }
    out
}

/// Approach 2: minima of every budget of at least 3 distinct N, then the power laws over the budgets
/// whose minimum is interior. Parabola minima are weighted by 1/se² when every used budget has a
/// standard error; otherwise (and for Akima) the fit is unweighted.
pub fn fit(points: &[Point], rel_tol: f64, method: MinMethod, level: f64) -> IsoFlopFit {
    let budgets: Vec<BudgetMin> = group_budgets(points, rel_tol)
        .iter()
        .map(|g| budget_min(points, g, method))
        .collect();
    let used: Vec<&BudgetMin> = budgets.iter().filter(|b| b.used).collect();
    let c: Vec<f64> = used.iter().map(|b| b.c).collect();
    let n: Vec<f64> = used.iter().map(|b| b.n_opt).collect();
    let d: Vec<f64> = used.iter().map(|b| b.d_opt).collect();
    let se_n: Option<Vec<f64>> = used.iter().map(|b| b.se_ln_n).collect();
    let se_d: Option<Vec<f64>> = used
        .iter()
        .map(|b| b.se_ln_d.filter(|s| *s > 0.0))
        .collect();
    let (n_opt, d_opt) = if used.len() >= 3 {
        (
            PowerLaw::fit(&c, &n, se_n.as_deref(), level),
            PowerLaw::fit(&c, &d, se_d.as_deref(), level),
        )
    } else {
        (None, None)
    };
    IsoFlopFit {
        method,
        budgets,
        n_opt,
        d_opt,
    }
}
