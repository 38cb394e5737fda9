//! `isoflop fit --approach hparams`: the laws of the optimal learning rate and batch size in N, from a
//! sweep that searched them (Porian et al. 2024, "Resolving Discrepancies in Compute-Optimal Scaling").
//!
//! Per size (and FLOP budget, where a size has several): the loss-minimising lr at each batch size from
//! the final loss in ln lr (Akima interpolant over the whole search, refined by a least-squares
//! parabola through the points around the discrete minimum, as Approach 2 does in ln N); then the
//! loss-minimising batch size the same way in ln B, using each batch size's optimal loss; then
//! lr*(N) = a·N^b and B*(N) = c·N^d with residual-bootstrap intervals. An optimum at an end of the
//! searched range is "on edge": the true optimum lies outside, so it is reported and left out of the
//! laws. With several β2 values, each batch size uses its best β2, and the loss β2 = 0.95 costs is shown.
//!
//! N is the `n_params` column of sweep exports: `ParamCounts::n`, the same N the spec rules
//! `lr = { power_law = { a, b } }` evaluate, so the fitted (a, b) paste into a spec unchanged.

use super::akima::Akima;
use super::data::{self, Columns, Point};
use super::error::FitError;
use super::isoflop::{group_budgets, inv3, solve3};
use super::powerlaw::PowerLaw;
use super::stats::{percentile, Interval};
use super::table::{num, Table};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// The β2 every other setting is compared with (AdamW's common default).
pub const BASE_BETA2: f64 = 0.95;

/// File name of the spec fragment written next to `fit.json`.
pub const FRAGMENT_FILE: &str = "hparams-fragment.toml";

/// One finished run of a search.
#[derive(Clone, Debug, PartialEq)]
pub struct HpRun {
    /// Parameters N (`ParamCounts::n`).
    pub n: f64,
    /// Training tokens D.
    pub d: f64,
    /// Training FLOPs C.
    pub c: f64,
    /// Peak learning rate.
    pub lr: f64,
    /// Batch size in sequences.
    pub batch: f64,
    /// AdamW β2.
    pub beta2: f64,
    /// Final loss.
    pub loss: f64,
}

/// Settings of the fit.
#[derive(Clone, Debug)]
pub struct HpOptions {
    /// Runs of one size whose FLOPs differ by less than this fraction share a budget.
    pub budget_tol: f64,
    /// Bootstrap replicates (0: t intervals of the log-log lines only).
    pub bootstrap: usize,
    /// Bootstrap seed.
    pub seed: u64,
    /// Interval level.
    pub level: f64,
}

impl Default for HpOptions {
    fn default() -> Self {
        HpOptions {
            budget_tol: 0.1,
            bootstrap: 1000,
            seed: 0,
            level: 0.95,
        }
    }
}

/// Read the runs of a search from `input` (a sweep directory or a CSV), keeping the rows of `arm`.
/// Columns by name: N, D, C and loss as the other fits (`cols`); `lr` and `batch_size` (required);
/// `beta2` (optional, else every run is β2 = 0.95). Rows with an empty or non-finite value (unfinished
/// runs) are skipped with a note naming their lines.
pub fn load(
    input: &Path,
    cols: &Columns,
    arm: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Vec<HpRun>, FitError> {
    let (runs, _) = data::resolve_input(input, None)?;
    let Some(runs) = runs else {
        return Err(FitError::BadInput {
            path: input.to_path_buf(),
            what: "the hparams fit needs runs.csv (one row per run); found only steps.csv".into(),
        });
    };
    read_runs(&data::read_arm(&runs, arm)?, cols, notes)
}

/// [`load`] on a parsed table.
pub fn read_runs(
    t: &Table,
    cols: &Columns,
    notes: &mut Vec<String>,
) -> Result<Vec<HpRun>, FitError> {
    let lr = t.require(&["lr".into()], "")?;
    let bs = t.require(&["batch_size".into()], "")?;
    let b2 = t.find(&["beta2".into()]);
    // N, D, C and loss exactly as the other fits read them (same defaults, flags, checks and notes
    // on skipped rows); then row by row, to keep each row's lr and batch size with its point.
    data::read_points(t, cols, notes)?;
    let mut out = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    for r in 0..t.rows.len() {
        let one = Table {
            path: t.path.clone(),
            header: t.header.clone(),
            rows: vec![t.rows[r].clone()],
        };
        let mut quiet = Vec::new();
        let p: Vec<Point> = data::read_points(&one, cols, &mut quiet)?;
        let Some(p) = p.into_iter().next() else {
            continue; // already in read_points' note
        };
        let num_at = |col: usize| -> Result<Option<f64>, FitError> {
            Ok(t.number(r, col)?.filter(|v| v.is_finite()))
        };
        let (Some(l), Some(b)) = (num_at(lr)?, num_at(bs)?) else {
            skipped.push(format!(
                "{} (lr or batch_size empty or not finite)",
                t.line(r)
            ));
            continue;
        };
        let beta2 = match b2 {
            Some(i) => match num_at(i)? {
                Some(v) => v,
                None => {
                    skipped.push(format!("{} (beta2 empty or not finite)", t.line(r)));
                    continue;
                }
            },
            None => BASE_BETA2,
        };
        for (col, v) in [(lr, l), (bs, b)] {
            if v <= 0.0 {
                return Err(FitError::NotPositive {
                    path: t.path.clone(),
                    line: t.line(r),
                    column: t.header[col].clone(),
                    value: v,
                });
            }
        }
        out.push(HpRun {
            n: p.n,
            d: p.d,
            c: p.c,
            lr: l,
            batch: b,
            beta2,
            loss: p.loss,
        });
    }
    if !skipped.is_empty() {
        notes.push(format!(
            "{}: skipped {} row(s) that cannot be used, at lines {}",
            t.path.display(),
            skipped.len(),
            skipped.join(", ")
        ));
    }
    if b2.is_none() {
        notes.push(format!(
            "{}: no beta2 column; every run taken as β2 = {BASE_BETA2}",
            t.path.display()
        ));
    }
    Ok(out)
}

/// The minimum of a loss curve in ln x (x = lr or batch size).
#[derive(Clone, Debug, Serialize)]
pub struct CurveMin {
    /// The loss-minimising x (parabola near the discrete minimum; Akima where the parabola fails).
    pub opt: f64,
    /// The minimum of the Akima interpolant.
    pub opt_akima: f64,
    /// Loss at `opt`.
    pub loss_opt: f64,
    /// Standard error of ln `opt` (parabola through ≥ 4 points).
    pub se_ln: Option<f64>,
    /// The minimum is at an end of the searched range: the optimum lies outside it.
    pub on_edge: bool,
    /// How `opt` was found: `parabola` or `akima`.
    pub method: &'static str,
    /// Fitted curve for plots: (ln x, loss).
    #[serde(skip)]
    pub curve: Vec<(f64, f64)>,
    /// Per knot: the parabola's value inside its window, else the observed loss (for the bootstrap).
    #[serde(skip)]
    pub smooth: Vec<f64>,
    /// Per knot: the scaled parabola residual, `None` outside the window.
    #[serde(skip)]
    pub resid: Vec<Option<f64>>,
}

/// Minimum of `y` over strictly increasing `x` (≥ 3 knots).
fn curve_min(x: &[f64], y: &[f64]) -> Option<CurveMin> {
    let k = x.len();
    let aki = Akima::new(x, y)?;
    let (xa, ya) = aki.minimum(200);
    let i = (0..k).min_by(|&a, &b| y[a].total_cmp(&y[b]).then(a.cmp(&b)))?;
    let (lo, hi) = (x[0], x[k - 1]);
    let curve: Vec<(f64, f64)> = (0..=200)
        .map(|j| {
            let v = lo + (hi - lo) * j as f64 / 200.0;
            (v, aki.eval(v))
        })
        .collect();
    let mut out = CurveMin {
        opt: xa.exp(),
        opt_akima: xa.exp(),
        loss_opt: ya,
        se_ln: None,
        on_edge: i == 0 || i == k - 1,
        method: "akima",
        curve,
        smooth: y.to_vec(),
        resid: vec![None; k],
    };
    if out.on_edge {
        out.opt = x[i].exp();
        out.loss_opt = y[i];
        return Some(out);
    }
    // Least-squares parabola through the discrete minimum and up to two knots on each side.
    let (a, b) = (i.saturating_sub(2), (i + 2).min(k - 1));
    let wx = &x[a..=b];
    let wy = &y[a..=b];
    let m = wx.len();
    let xc = wx.iter().sum::<f64>() / m as f64;
    let mut ata = [[0.0; 3]; 3];
    let mut aty = [0.0; 3];
    for (xv, yv) in wx.iter().zip(wy) {
        let r = [1.0, xv - xc, (xv - xc) * (xv - xc)];
        for p in 0..3 {
            for q in 0..3 {
                ata[p][q] += r[p] * r[q];
            }
            aty[p] += r[p] * yv;
        }
    }
    let (Some(p), Some(inv)) = (solve3(ata, aty), inv3(ata)) else {
        return Some(out);
    };
    let u = -p[1] / (2.0 * p[2]);
    // The parabola's vertex must lie between the discrete minimum's neighbours; else keep Akima's.
    if !(p[2] > 0.0 && u + xc > x[i - 1] && u + xc < x[i + 1]) {
        return Some(out);
    }
    let fit = |v: f64| p[0] + p[1] * (v - xc) + p[2] * (v - xc) * (v - xc);
    let dof = m as f64 - 3.0;
    // Residuals scaled by √(m/(m−3)) so that their spread estimates the noise, not less.
    for j in a..=b {
        out.smooth[j] = fit(x[j]);
        if dof >= 1.0 {
            out.resid[j] = Some((y[j] - fit(x[j])) * (m as f64 / dof).sqrt());
        }
    }
    if dof >= 1.0 {
        let rss: f64 = wx.iter().zip(wy).map(|(a, b)| (b - fit(*a)).powi(2)).sum();
        let s2 = rss / dof;
        let g = [0.0, -1.0 / (2.0 * p[2]), p[1] / (2.0 * p[2] * p[2])];
        let mut v = 0.0;
        for r in 0..3 {
            for c in 0..3 {
                v += g[r] * inv[r][c] * g[c] * s2;
            }
        }
        out.se_ln = Some(v.max(0.0).sqrt()).filter(|s| s.is_finite() && *s > 0.0);
    }
    out.opt = (u + xc).exp();
    out.loss_opt = fit(u + xc);
    out.method = "parabola";
    Some(out)
}

/// The learning-rate search of one size, batch size and β2.
#[derive(Clone, Debug, Serialize)]
pub struct LrCurve {
    /// Batch size (sequences).
    pub batch_size: f64,
    /// AdamW β2.
    pub beta2: f64,
    /// Learning rates searched (increasing; runs at one lr averaged).
    pub lr: Vec<f64>,
    /// Final loss at each.
    pub loss: Vec<f64>,
    /// The minimum (absent with fewer than 3 learning rates).
    pub min: Option<CurveMin>,
    /// Why the minimum is missing or on edge.
    pub note: Option<String>,
}

/// One batch size of one size: its best β2 and the optimal lr there.
#[derive(Clone, Debug, Serialize)]
pub struct BatchRow {
    /// Batch size.
    pub batch_size: f64,
    /// The β2 whose lr search reached the lowest loss (interior optima preferred).
    pub beta2: f64,
    /// Index into the size's `curves` of that search.
    pub curve: usize,
    /// Optimal lr (NaN without a minimum).
    pub lr_opt: f64,
    /// Loss at it.
    pub loss_opt: f64,
    /// Whether that lr optimum is interior (usable).
    pub usable: bool,
    /// Loss at the lr optimum for each β2 searched: (β2, loss).
    pub beta2_losses: Vec<(f64, f64)>,
    /// Loss the best β2 saves over β2 = 0.95 (when both were searched).
    pub beta2_saves: Option<f64>,
}

/// One size (and budget): its searches, optimal batch size and lr.
#[derive(Clone, Debug, Serialize)]
pub struct SizeFit {
    /// Parameters N.
    pub n: f64,
    /// Training tokens (geometric mean over the runs).
    pub tokens: f64,
    /// Training FLOPs (geometric mean).
    pub c: f64,
    /// Number of runs at this point.
    pub n_runs: usize,
    /// Every lr search (one per batch size and β2).
    pub curves: Vec<LrCurve>,
    /// Per batch size.
    pub batches: Vec<BatchRow>,
    /// Minimum of the loss in ln B over the usable batch sizes (≥ 3).
    pub batch_min: Option<CurveMin>,
    /// B* (NaN when unknown).
    pub batch_opt: f64,
    /// lr* at B*: ln lr* interpolated linearly in ln B between the usable batch sizes around B*
    /// (with one batch size, that one's lr*). NaN when unknown.
    pub lr_opt: f64,
    /// Loss at the optimum.
    pub loss_opt: f64,
    /// Whether lr* enters the lr law.
    pub lr_used: bool,
    /// Whether B* enters the batch law.
    pub batch_used: bool,
    /// Why a value is missing or left out.
    pub notes: Vec<String>,
}

/// A law y = a·x^b (x = N or D) with intervals.
#[derive(Clone, Debug, Serialize)]
pub struct HpLaw {
    /// What is predicted: `lr` or `batch_size`.
    pub quantity: String,
    /// Of what: `N` (`n_params`) or `D` (tokens).
    pub variable: String,
    /// Coefficient a (interval: bootstrap percentile, else Student t).
    pub a: Interval,
    /// Exponent b (interval as `a`).
    pub b: Interval,
    /// Student-t intervals of the log-log line (scatter of the optima about the law).
    pub a_t: Interval,
    /// See `a_t`.
    pub b_t: Interval,
    /// Sizes fitted.
    pub n_points: usize,
    /// R² of the log-log line.
    pub r2: f64,
    /// Bootstrap replicates that gave a law.
    pub bootstrap_ok: usize,
    /// How `a` and `b` intervals were obtained.
    pub interval_method: String,
    /// ln y − ln fitted, per size fitted.
    pub residuals_log: Vec<f64>,
    /// Replicates (ln a, b), for the plot's band.
    #[serde(skip)]
    pub replicates: Vec<(f64, f64)>,
}

impl HpLaw {
    /// y at x.
    pub fn at(&self, x: f64) -> f64 {
        self.a.value * x.powf(self.b.value)
    }

    /// The interval of y at x: replicate percentiles, else NaN ends.
    pub fn band(&self, x: f64, level: f64) -> (f64, f64) {
        if self.replicates.len() < 2 {
            return (f64::NAN, f64::NAN);
        }
        let v: Vec<f64> = self
            .replicates
            .iter()
            .map(|(la, b)| la + b * x.ln())
            .collect();
        (
            percentile(&v, 0.5 - 0.5 * level).exp(),
            percentile(&v, 0.5 + 0.5 * level).exp(),
        )
    }
}

/// `hparams` in fit.json.
#[derive(Clone, Debug, Serialize)]
pub struct HparamsFit {
    /// What N is: the rules' N.
    pub n_definition: String,
    /// Per size (and budget).
    pub sizes: Vec<SizeFit>,
    /// lr*(N) = a·N^b.
    pub lr_law: Option<HpLaw>,
    /// B*(N) = a·N^b.
    pub batch_law: Option<HpLaw>,
    /// lr*(D) = a·D^b, when the sweep varies tokens per parameter.
    pub lr_law_tokens: Option<HpLaw>,
    /// B*(D) = a·D^b, likewise.
    pub batch_law_tokens: Option<HpLaw>,
    /// Laws that could not be fitted, with the reason.
    pub skipped: Vec<String>,
    /// Remarks: edge optima left out, bootstrap, β2.
    pub notes: Vec<String>,
    /// Bootstrap replicates requested.
    pub bootstrap_replicates: usize,
    /// Interval level.
    pub level: f64,
    /// The `[train]` lines to paste into a sweep spec (also in `hparams-fragment.toml`).
    pub fragment: String,
}

/// Runs grouped into sizes (and budgets) and searches, with one loss per distinct lr.
#[derive(Clone, Debug)]
struct Group {
    n: f64,
    d: f64,
    c: f64,
    runs: usize,
    /// (batch, β2, ln lr increasing, loss).
    curves: Vec<(f64, f64, Vec<f64>, Vec<f64>)>,
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn geo_mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, k) = v.fold((0.0, 0usize), |(s, k), x| (s + x.ln(), k + 1));
    (s / k as f64).exp()
}

fn groups(runs: &[HpRun], tol: f64) -> Vec<Group> {
    let mut ns: Vec<f64> = runs.iter().map(|r| r.n).collect();
    ns.sort_by(f64::total_cmp);
    ns.dedup_by(|a, b| same(*a, *b));
    let mut out = Vec::new();
    for n in ns {
        let of_n: Vec<&HpRun> = runs.iter().filter(|r| same(r.n, n)).collect();
        let pts: Vec<Point> = of_n
            .iter()
            .map(|r| Point {
                n: r.n,
                d: r.d,
                c: r.c,
                loss: r.loss,
            })
            .collect();
        for g in group_budgets(&pts, tol) {
            let rs: Vec<&HpRun> = g.iter().map(|&i| of_n[i]).collect();
            let mut keys: Vec<(f64, f64)> = rs.iter().map(|r| (r.batch, r.beta2)).collect();
            keys.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            keys.dedup_by(|a, b| same(a.0, b.0) && same(a.1, b.1));
            let curves = keys
                .into_iter()
                .map(|(b, b2)| {
                    let mut pts: Vec<(f64, f64)> = rs
                        .iter()
                        .filter(|r| same(r.batch, b) && same(r.beta2, b2))
                        .map(|r| (r.lr.ln(), r.loss))
                        .collect();
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    // Runs at one lr (seeds) count once, with their mean loss.
                    let (mut x, mut y, mut k): (Vec<f64>, Vec<f64>, Vec<f64>) =
                        (vec![], vec![], vec![]);
                    for (lx, l) in pts {
                        if x.last().is_some_and(|&p: &f64| (lx - p).abs() < 1e-9) {
                            let j = y.len() - 1;
                            y[j] += l;
                            k[j] += 1.0;
                        } else {
                            x.push(lx);
                            y.push(l);
                            k.push(1.0);
                        }
                    }
                    for (v, c) in y.iter_mut().zip(&k) {
                        *v /= c;
                    }
                    (b, b2, x, y)
                })
                .collect();
            out.push(Group {
                n,
                d: geo_mean(rs.iter().map(|r| r.d)),
                c: geo_mean(rs.iter().map(|r| r.c)),
                runs: rs.len(),
                curves,
            });
        }
    }
    out
}

/// ln y at ln x, piecewise linear through (xs, ys) (xs increasing), clamped at the ends.
fn interp(xs: &[f64], ys: &[f64], x: f64) -> f64 {
    if x <= xs[0] {
        return ys[0];
    }
    for w in 0..xs.len() - 1 {
        if x <= xs[w + 1] {
            let t = (x - xs[w]) / (xs[w + 1] - xs[w]);
            return ys[w] + t * (ys[w + 1] - ys[w]);
        }
    }
    ys[ys.len() - 1]
}

fn size_fit(g: &Group) -> SizeFit {
    let mut notes = Vec::new();
    let label = format!("N = {}, D = {}", num(g.n), num(g.d));
    let curves: Vec<LrCurve> = g
        .curves
        .iter()
        .map(|(b, b2, x, y)| {
            let min = (x.len() >= 3).then(|| curve_min(x, y)).flatten();
            let note = if x.len() < 3 {
                Some(format!(
                    "{} distinct learning rate(s) (need 3 to locate a minimum)",
                    x.len()
                ))
            } else if min.as_ref().is_some_and(|m| m.on_edge) {
                let m = min.as_ref().expect("checked");
                let end = if m.opt <= x[0].exp() * (1.0 + 1e-9) {
                    "smallest"
                } else {
                    "largest"
                };
                Some(format!(
                    "on edge: the lowest loss is at the {end} lr searched ({}); the optimum lies outside [{}, {}], so this search is left out of the laws (widen its lr range)",
                    num(m.opt),
                    num(x[0].exp()),
                    num(x[x.len() - 1].exp())
                ))
            } else {
                None
            };
            LrCurve {
                batch_size: *b,
                beta2: *b2,
                lr: x.iter().map(|v| v.exp()).collect(),
                loss: y.clone(),
                min,
                note,
            }
        })
        .collect();
    // One note per size: every search on edge (or too short), then the first one's reason.
    let flagged: Vec<&LrCurve> = curves.iter().filter(|c| c.note.is_some()).collect();
    if let Some(first) = flagged.first() {
        let which: Vec<String> = flagged
            .iter()
            .map(|c| format!("B {} β2 {}", c.batch_size, c.beta2))
            .collect();
        notes.push(format!(
            "{label}: {} of {} lr search(es) ({}): {}",
            flagged.len(),
            curves.len(),
            which.join(", "),
            first.note.as_deref().unwrap_or_default()
        ));
    }
    // Per batch size, the β2 with the lowest optimal loss among interior optima (else among all).
    let mut bs: Vec<f64> = curves.iter().map(|c| c.batch_size).collect();
    bs.dedup_by(|a, b| same(*a, *b));
    let mut batches: Vec<BatchRow> = Vec::new();
    for b in bs {
        let idx: Vec<usize> = (0..curves.len())
            .filter(|&i| same(curves[i].batch_size, b))
            .collect();
        let loss_of = |i: usize| curves[i].min.as_ref().map_or(f64::NAN, |m| m.loss_opt);
        let interior = |i: &usize| curves[*i].min.as_ref().is_some_and(|m| !m.on_edge);
        let pick = idx
            .iter()
            .copied()
            .filter(interior)
            .min_by(|&p, &q| loss_of(p).total_cmp(&loss_of(q)))
            .or_else(|| {
                idx.iter()
                    .copied()
                    .filter(|&i| curves[i].min.is_some())
                    .min_by(|&p, &q| loss_of(p).total_cmp(&loss_of(q)))
            })
            .unwrap_or(idx[0]);
        let beta2_losses: Vec<(f64, f64)> =
            idx.iter().map(|&i| (curves[i].beta2, loss_of(i))).collect();
        let base = idx
            .iter()
            .find(|&&i| same(curves[i].beta2, BASE_BETA2))
            .map(|&i| loss_of(i));
        let usable = interior(&pick);
        batches.push(BatchRow {
            batch_size: b,
            beta2: curves[pick].beta2,
            curve: pick,
            lr_opt: curves[pick].min.as_ref().map_or(f64::NAN, |m| m.opt),
            loss_opt: loss_of(pick),
            usable,
            beta2_saves: base
                .filter(|_| idx.len() > 1 && usable)
                .map(|l| l - loss_of(pick))
                .filter(|v| v.is_finite()),
            beta2_losses,
        });
    }
    let good: Vec<&BatchRow> = batches.iter().filter(|r| r.usable).collect();
    let lx: Vec<f64> = good.iter().map(|r| r.batch_size.ln()).collect();
    let ll: Vec<f64> = good.iter().map(|r| r.lr_opt.ln()).collect();
    let ly: Vec<f64> = good.iter().map(|r| r.loss_opt).collect();
    let mut s = SizeFit {
        n: g.n,
        tokens: g.d,
        c: g.c,
        n_runs: g.runs,
        curves: vec![],
        batches: vec![],
        batch_min: None,
        batch_opt: f64::NAN,
        lr_opt: f64::NAN,
        loss_opt: f64::NAN,
        lr_used: false,
        batch_used: false,
        notes: vec![],
    };
    if good.is_empty() {
        notes.push(format!(
            "{label}: no batch size has an interior lr optimum; left out of both laws"
        ));
    } else if good.len() < 3 {
        // No B*: lr* at the best batch size searched (with one batch size, that one).
        let best = (0..good.len())
            .min_by(|&p, &q| ly[p].total_cmp(&ly[q]))
            .expect("non-empty");
        s.lr_opt = good[best].lr_opt;
        s.loss_opt = good[best].loss_opt;
        s.lr_used = true;
        if batches.len() > 1 {
            notes.push(format!(
                "{label}: {} batch size(s) with an interior lr optimum (need 3 for B*); lr* taken at the best, B = {}",
                good.len(),
                good[best].batch_size
            ));
        }
    } else {
        let m = curve_min(&lx, &ly).expect("≥ 3 increasing batch sizes");
        let lb = m.opt.ln();
        s.lr_opt = interp(&lx, &ll, lb).exp();
        s.loss_opt = m.loss_opt;
        s.batch_opt = m.opt;
        s.lr_used = true;
        if m.on_edge {
            let end = if m.opt <= lx[0].exp() * (1.0 + 1e-9) {
                "smallest"
            } else {
                "largest"
            };
            notes.push(format!(
                "{label}: B* on edge: the lowest loss is at the {end} batch size searched ({}); left out of the batch-size law, lr* taken at that batch size",
                m.opt
            ));
        } else {
            s.batch_used = true;
        }
        s.batch_min = Some(m);
    }
    s.curves = curves;
    s.batches = batches;
    s.notes = notes;
    s
}

fn law(
    quantity: &str,
    variable: &str,
    x: &[f64],
    y: &[f64],
    reps: Vec<(f64, f64)>,
    level: f64,
) -> Option<HpLaw> {
    let p = PowerLaw::fit(x, y, None, level)?;
    let boot = reps.len() >= 10;
    let pct = |v: Vec<f64>, c: f64| Interval {
        value: c,
        lo: percentile(&v, 0.5 - 0.5 * level),
        hi: percentile(&v, 0.5 + 0.5 * level),
    };
    let (a, b) = if boot {
        let la = pct(reps.iter().map(|r| r.0).collect(), p.coefficient.value.ln());
        (
            Interval {
                value: p.coefficient.value,
                lo: la.lo.exp(),
                hi: la.hi.exp(),
            },
            pct(reps.iter().map(|r| r.1).collect(), p.exponent.value),
        )
    } else {
        (p.coefficient, p.exponent)
    };
    Some(HpLaw {
        quantity: quantity.into(),
        variable: variable.into(),
        a,
        b,
        a_t: p.coefficient,
        b_t: p.exponent,
        n_points: x.len(),
        r2: p.r2,
        bootstrap_ok: reps.len(),
        interval_method: if boot {
            "residual bootstrap of the losses (percentile)".into()
        } else {
            "least squares in log-log, Student t".into()
        },
        residuals_log: p.residuals_log,
        replicates: reps,
    })
}

/// The four law lines (ln a, b) of one analysis: lr(N), B(N), lr(D), B(D).
type Lines = [Option<(f64, f64)>; 4];

fn lines(sizes: &[SizeFit], tokens: bool) -> Lines {
    let fit = |sel: &dyn Fn(&SizeFit) -> Option<(f64, f64)>| {
        let (x, y): (Vec<f64>, Vec<f64>) = sizes.iter().filter_map(sel).unzip();
        (x.len() >= 2)
            .then(|| PowerLaw::fit(&x, &y, None, 0.95))
            .flatten()
            .map(|p| (p.coefficient.value.ln(), p.exponent.value))
    };
    let lr_n = fit(&|s| s.lr_used.then_some((s.n, s.lr_opt)));
    let b_n = fit(&|s| s.batch_used.then_some((s.n, s.batch_opt)));
    let (lr_d, b_d) = if tokens {
        (
            fit(&|s| s.lr_used.then_some((s.tokens, s.lr_opt))),
            fit(&|s| s.batch_used.then_some((s.tokens, s.batch_opt))),
        )
    } else {
        (None, None)
    };
    [lr_n, b_n, lr_d, b_d]
}

/// The hyperparameter fit of `runs`.
pub fn fit(runs: &[HpRun], o: &HpOptions) -> Result<HparamsFit, FitError> {
    let unsupported = |why: String| FitError::Unsupported {
        fit: "hparams".into(),
        why,
    };
    if runs.is_empty() {
        return Err(unsupported("no usable runs".into()));
    }
    let gs = groups(runs, o.budget_tol);
    // A search must vary lr somewhere: one lr per size is a sweep, not a search.
    if gs.iter().all(|g| g.curves.iter().all(|c| c.2.len() < 2)) {
        return Err(unsupported(
            "every size and batch size was run at a single learning rate (column 'lr'): nothing to optimise; search at least 3 learning rates per size".into(),
        ));
    }
    let sizes: Vec<SizeFit> = gs.iter().map(size_fit).collect();
    // Several tokens per parameter: also fit the laws in D.
    let mut ms: Vec<f64> = sizes.iter().map(|s| (s.tokens / s.n).ln()).collect();
    ms.sort_by(f64::total_cmp);
    ms.dedup_by(|a, b| (*a - *b).abs() < 0.02);
    let tokens = ms.len() >= 2;
    let mut notes = Vec::new();
    let mut skipped = Vec::new();
    // Residual bootstrap: every knot near a minimum gets its smooth value plus a residual drawn from
    // the pool of all scaled parabola residuals; the whole analysis is rerun on each replicate.
    let pool: Vec<f64> = sizes
        .iter()
        .flat_map(|s| s.curves.iter())
        .filter_map(|c| c.min.as_ref())
        .flat_map(|m| m.resid.iter().flatten().copied())
        .collect();
    let reps: Vec<Lines> = if o.bootstrap == 0 {
        vec![]
    } else if pool.iter().all(|r| *r == 0.0) {
        notes.push(
            "no bootstrap: no lr search has ≥ 4 points around its minimum (or every residual is 0); intervals are Student t of the log-log lines".into(),
        );
        vec![]
    } else {
        let smooth: Vec<Vec<Vec<f64>>> = sizes
            .iter()
            .map(|s| {
                s.curves
                    .iter()
                    .map(|c| c.min.as_ref().map_or(c.loss.clone(), |m| m.smooth.clone()))
                    .collect()
            })
            .collect();
        (0..o.bootstrap)
            .into_par_iter()
            .map(|r| {
                let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
                rng.set_stream(r as u64);
                let gs2: Vec<Group> = gs
                    .iter()
                    .zip(&smooth)
                    .map(|(g, sm)| {
                        let mut g = g.clone();
                        for (c, s) in g.curves.iter_mut().zip(sm) {
                            for (y, v) in c.3.iter_mut().zip(s) {
                                *y = v + pool[rng.random_range(0..pool.len())];
                            }
                        }
                        g
                    })
                    .collect();
                let s2: Vec<SizeFit> = gs2.iter().map(size_fit).collect();
                lines(&s2, tokens)
            })
            .collect()
    };
    let pick = |k: usize| -> Vec<(f64, f64)> { reps.iter().filter_map(|r| r[k]).collect() };
    let mk = |k: usize, q: &str, v: &str, sel: &dyn Fn(&SizeFit) -> Option<(f64, f64)>| {
        let (x, y): (Vec<f64>, Vec<f64>) = sizes.iter().filter_map(sel).unzip();
        if x.len() < 2 {
            return (
                None,
                Some(format!(
                    "{q}*({v}): {} size(s) with a usable optimum (need 2, and 3 for intervals)",
                    x.len()
                )),
            );
        }
        (law(q, v, &x, &y, pick(k), o.level), None)
    };
    let (lr_law, w0) = mk(0, "lr", "N", &|s| s.lr_used.then_some((s.n, s.lr_opt)));
    let (batch_law, w1) = mk(1, "batch_size", "N", &|s| {
        s.batch_used.then_some((s.n, s.batch_opt))
    });
    let (lr_law_tokens, batch_law_tokens) = if tokens {
        (
            mk(2, "lr", "D", &|s| s.lr_used.then_some((s.tokens, s.lr_opt))).0,
            mk(3, "batch_size", "D", &|s| {
                s.batch_used.then_some((s.tokens, s.batch_opt))
            })
            .0,
        )
    } else {
        (None, None)
    };
    skipped.extend(w0);
    skipped.extend(w1);
    let left_out = sizes.iter().filter(|s| !s.lr_used).count();
    if left_out > 0 {
        notes.push(format!(
            "{left_out} size(s) left out of the lr law (their optimum is on edge or unknown: see each size's notes)"
        ));
    }
    for s in &sizes {
        notes.extend(s.notes.iter().cloned());
    }
    let mut rep = HparamsFit {
        n_definition: "N = n_params = ParamCounts::n (non-embedding + head), the N of the spec rules' power_law".into(),
        sizes,
        lr_law,
        batch_law,
        lr_law_tokens,
        batch_law_tokens,
        skipped,
        notes,
        bootstrap_replicates: o.bootstrap,
        level: o.level,
        fragment: String::new(),
    };
    rep.fragment = fragment(&rep);
    Ok(rep)
}

/// The `[train]` lines to paste into a sweep spec: the fitted rules, in the rules' own N.
pub fn fragment(f: &HparamsFit) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# isoflop fit --approach hparams: laws of the optimal lr and batch size in N = n_params\n# (ParamCounts::n, the N the spec's power_law rules use). Paste under [train]."
    );
    let _ = writeln!(s, "[train]");
    match &f.lr_law {
        Some(l) => {
            let _ = writeln!(
                s,
                "# lr*(N): {} sizes, b in [{:.4}, {:.4}] ({:.0}%)",
                l.n_points,
                l.b.lo,
                l.b.hi,
                f.level * 100.0
            );
            let _ = writeln!(
                s,
                "lr = {{ power_law = {{ a = {:.6e}, b = {:.6e} }} }}",
                l.a.value, l.b.value
            );
        }
        None => {
            let _ = writeln!(s, "# lr: no law (see the fit's skipped list)");
        }
    }
    match &f.batch_law {
        Some(l) => {
            let _ = writeln!(
                s,
                "# B*(N): {} sizes, b in [{:.4}, {:.4}]; rounded to a multiple of micro_batch",
                l.n_points, l.b.lo, l.b.hi
            );
            let _ = writeln!(
                s,
                "batch_size = {{ power_law = {{ a = {:.6e}, b = {:.6e} }} }}",
                l.a.value, l.b.value
            );
        }
        None => {
            let _ = writeln!(s, "# batch_size: no law (see the fit's skipped list)");
        }
    }
    let b2: Vec<&BatchRow> = f
        .sizes
        .iter()
        .flat_map(|s| s.batches.iter())
        .filter(|r| r.beta2_losses.len() > 1)
        .collect();
    if !b2.is_empty() {
        let mut best: Vec<f64> = b2.iter().map(|r| r.beta2).collect();
        best.sort_by(f64::total_cmp);
        best.dedup();
        let _ = writeln!(
            s,
            "# best beta2 per batch size: {} (see the fit's table)",
            best.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    s
}

fn iv(i: &Interval) -> String {
    format!("{} [{}, {}]", num(i.value), num(i.lo), num(i.hi))
}

/// The terminal table.
pub fn table(f: &HparamsFit) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nHyperparameter laws (N = n_params, the rules' N)");
    let _ = writeln!(
        out,
        "  {:>11} {:>11} {:>8} {:>11} {:>9} {:>8}  searches",
        "N", "tokens", "B", "lr*", "loss*", "β2"
    );
    for s in &f.sizes {
        for r in &s.batches {
            let c = &s.curves[r.curve];
            let flag = match &c.min {
                None => "too few lr",
                Some(m) if m.on_edge => "ON EDGE",
                Some(_) => "",
            };
            let _ = writeln!(
                out,
                "  {:>11} {:>11} {:>8} {:>11} {:>9} {:>8}  {} lr {flag}",
                num(s.n),
                num(s.tokens),
                r.batch_size,
                num(r.lr_opt),
                num(r.loss_opt),
                r.beta2,
                c.lr.len()
            );
        }
        let _ = writeln!(
            out,
            "  {:>11} {:>11} {:>8} {:>11} {:>9} {:>8}  {}{}",
            "→ B*, lr*",
            "",
            if s.batch_opt.is_nan() {
                "—".into()
            } else {
                num(s.batch_opt)
            },
            num(s.lr_opt),
            num(s.loss_opt),
            "",
            if s.lr_used { "lr law" } else { "not in lr law" },
            if s.batch_used { ", B law" } else { "" }
        );
    }
    let level = f.level * 100.0;
    for l in [
        &f.lr_law,
        &f.batch_law,
        &f.lr_law_tokens,
        &f.batch_law_tokens,
    ]
    .into_iter()
    .flatten()
    {
        let _ = writeln!(
            out,
            "  {}*({}) = a·{}^b  ({} sizes, R² {:.4}; {:.0}% {}, {} replicates)\n    a {}\n    b {}",
            l.quantity,
            l.variable,
            l.variable,
            l.n_points,
            l.r2,
            level,
            l.interval_method,
            l.bootstrap_ok,
            iv(&l.a),
            iv(&l.b)
        );
    }
    let b2: Vec<(f64, &BatchRow)> = f
        .sizes
        .iter()
        .flat_map(|s| s.batches.iter().map(move |r| (s.n, r)))
        .filter(|(_, r)| r.beta2_losses.len() > 1)
        .collect();
    if !b2.is_empty() {
        let _ = writeln!(
            out,
            "  β2: best per batch size, loss saved over β2 = {BASE_BETA2}"
        );
        for (n, r) in b2 {
            let _ = writeln!(
                out,
                "    N {:>11}  B {:>6}  best β2 {:<6} saves {}",
                num(n),
                r.batch_size,
                r.beta2,
                r.beta2_saves.map_or("—".into(), num)
            );
        }
    }
    for w in &f.skipped {
        let _ = writeln!(out, "  skipped {w}");
    }
    for n in &f.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    let _ = write!(out, "\nSpec fragment ({FRAGMENT_FILE}):\n{}", f.fragment);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parabola_finds_the_vertex_and_flags_edges() {
        let x: Vec<f64> = (0..7).map(|i| i as f64 * 0.5).collect();
        let y: Vec<f64> = x
            .iter()
            .map(|v| 2.0 + 0.3 * (v - 1.3) * (v - 1.3))
            .collect();
        let m = curve_min(&x, &y).unwrap();
        assert!(!m.on_edge && m.method == "parabola");
        assert!((m.opt.ln() - 1.3).abs() < 1e-9, "{}", m.opt.ln());
        assert!((m.loss_opt - 2.0).abs() < 1e-12);
        // Decreasing over the whole range: the optimum lies beyond the largest x.
        let y: Vec<f64> = x.iter().map(|v| 3.0 - 0.1 * v).collect();
        let m = curve_min(&x, &y).unwrap();
        assert!(m.on_edge && (m.opt.ln() - 3.0).abs() < 1e-12);
    }

    #[test]
    fn interp_is_piecewise_linear_and_clamped() {
        let (x, y) = ([0.0, 1.0, 3.0], [1.0, 3.0, 4.0]);
        assert_eq!(interp(&x, &y, 0.5), 2.0);
        assert_eq!(interp(&x, &y, 2.0), 3.5);
        assert_eq!(interp(&x, &y, -1.0), 1.0);
        assert_eq!(interp(&x, &y, 9.0), 4.0);
    }
}
