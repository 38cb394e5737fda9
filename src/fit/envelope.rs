//! Approach 1: the lower envelope of the training curves in FLOPs; N*(C) and D*(C) read from the run
//! that attains the envelope at each C, power laws fitted over a log-spaced grid of C, intervals from
//! a bootstrap over runs.

use super::data::Curve;
use super::optim::bootstrap;
use super::powerlaw::PowerLaw;
use super::stats::{percentile, Interval};
use serde::Serialize;

/// The lower envelope on a log-spaced grid of FLOPs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Envelope {
    /// FLOPs of the grid.
    pub c: Vec<f64>,
    /// Lowest loss of any run at each C.
    pub loss: Vec<f64>,
    /// Index (into the curves) of the run attaining it.
    pub run: Vec<usize>,
    /// N of that run.
    pub n: Vec<f64>,
    /// Tokens of that run at C.
    pub d: Vec<f64>,
}

/// Linear interpolation of `ys` at `x` over increasing `xs` in ln-space; `None` outside the range.
fn interp(xs: &[f64], ys: &[f64], x: f64) -> Option<f64> {
    if x < xs[0] || x > xs[xs.len() - 1] {
        return None;
    }
    let k = xs.partition_point(|&v| v < x);
    if k == 0 {
        return Some(ys[0]);
    }
    let (x0, x1) = (xs[k - 1].ln(), xs[k].ln());
    if x1 <= x0 {
        return Some(ys[k]);
    }
    let s = (x.ln() - x0) / (x1 - x0);
    Some(ys[k - 1] + s * (ys[k] - ys[k - 1]))
}

/// The FLOP range of Approach 1's envelope: from the smallest to the largest final FLOPs of the runs.
/// Below the smallest final C the envelope is made of partly trained runs only, which bias N*(C) low,
/// so Approach 1 stays inside it. Views of L(C) use [`long_range`] instead.
pub fn default_range(curves: &[Curve]) -> (f64, f64) {
    let fin = curves.iter().map(|c| c.c[c.c.len() - 1]);
    let lo = fin.clone().fold(f64::INFINITY, f64::min);
    let hi = fin.fold(0.0, f64::max);
    (lo, hi)
}

/// The FLOP range of loss-against-compute views (`isoflop compare`'s L(C) from the envelope, the loss
/// figure): from 1/30 of the smallest final FLOPs, but not before any run's first record, to the
/// largest final FLOPs; long enough for a law even when every run has the same budget. Approach 1 uses
/// the narrower [`default_range`].
pub fn long_range(curves: &[Curve]) -> (f64, f64) {
    let (lo, hi) = default_range(curves);
    let first = curves.iter().map(|c| c.c[0]).fold(f64::INFINITY, f64::min);
    ((lo / 30.0).max(first), hi)
}

/// The envelope of `curves` (those listed in `use_runs`) on `n_grid` log-spaced points in [lo, hi].
pub fn envelope(curves: &[Curve], use_runs: &[usize], lo: f64, hi: f64, n_grid: usize) -> Envelope {
    let mut env = Envelope::default();
    for g in 0..n_grid {
        let c = if n_grid == 1 {
            lo
        } else {
            (lo.ln() + (hi.ln() - lo.ln()) * g as f64 / (n_grid - 1) as f64).exp()
        };
        let mut best: Option<(f64, usize)> = None;
        for &r in use_runs {
            if let Some(l) = interp(&curves[r].c, &curves[r].loss, c) {
                if best.is_none_or(|(bl, _)| l < bl) {
                    best = Some((l, r));
                }
            }
        }
        if let Some((l, r)) = best {
            env.c.push(c);
            env.loss.push(l);
            env.run.push(r);
            env.n.push(curves[r].n);
            env.d
                .push(interp(&curves[r].c, &curves[r].d, c).unwrap_or(f64::NAN));
        }
    }
    env
}

/// Approach 1 result.
#[derive(Clone, Debug, Serialize)]
pub struct EnvelopeFit {
    /// Grid points on the envelope.
    pub grid_points: usize,
    /// Grid points fitted (attained by neither the smallest nor the largest N on the envelope).
    pub fitted_points: usize,
    /// FLOP range of the grid.
    pub c_range: [f64; 2],
    /// Runs that attain the envelope somewhere, in order of first appearance.
    pub runs_on_envelope: Vec<String>,
    /// N*(C) = k·C^a.
    pub n_opt: Option<PowerLaw>,
    /// D*(C) = k·C^b.
    pub d_opt: Option<PowerLaw>,
    /// The envelope itself.
    #[serde(skip)]
    pub envelope: Envelope,
    /// Bootstrap replicates of N*(C) (empty without a bootstrap).
    #[serde(skip)]
    pub n_boot: LawReplicates,
    /// Bootstrap replicates of D*(C) (empty without a bootstrap).
    #[serde(skip)]
    pub d_boot: LawReplicates,
}

/// Bootstrap replicates `(ln k, exponent)` of a power law y = k·C^exponent, for pointwise bands.
#[derive(Clone, Debug, Default)]
pub struct LawReplicates {
    /// `(ln k, exponent)` per converged replicate.
    pub reps: Vec<(f64, f64)>,
    /// Interval level of the bands.
    pub level: f64,
}

impl LawReplicates {
    /// Percentile interval of y(C) over the replicates (each replicate's ln k and exponent kept
    /// together, so their strong correlation is respected); `None` with fewer than 10 replicates.
    pub fn band(&self, c: f64) -> Option<(f64, f64)> {
        if self.reps.len() < 10 {
            return None;
        }
        let q = 0.5 - 0.5 * self.level;
        let ly: Vec<f64> = self.reps.iter().map(|&(k, p)| k + p * c.ln()).collect();
        Some((percentile(&ly, q).exp(), percentile(&ly, 1.0 - q).exp()))
    }
}

/// Grid points that enter the power-law fits: those attained by a run that is neither the smallest nor
/// the largest N on the envelope (there the true optimum may lie beyond the sizes trained, as an
/// IsoFLOP minimum at the edge of the N range), unless fewer than 3 sizes attain the envelope.
pub fn interior(env: &Envelope) -> Vec<usize> {
    let (lo, hi) = span_n(&env.n);
    let distinct = {
        let mut v = env.n.clone();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v.len()
    };
    (0..env.c.len())
        .filter(|&i| env.d[i].is_finite())
        .filter(|&i| distinct < 3 || (env.n[i] > lo && env.n[i] < hi))
        .collect()
}

fn span_n(n: &[f64]) -> (f64, f64) {
    n.iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)))
}

fn fits(env: &Envelope, level: f64) -> (Option<PowerLaw>, Option<PowerLaw>) {
    let ok = interior(env);
    let c: Vec<f64> = ok.iter().map(|&i| env.c[i]).collect();
    let n: Vec<f64> = ok.iter().map(|&i| env.n[i]).collect();
    let d: Vec<f64> = ok.iter().map(|&i| env.d[i]).collect();
    (
        PowerLaw::fit(&c, &n, None, level),
        PowerLaw::fit(&c, &d, None, level),
    )
}

/// Replace the t intervals of `law` (nominal: the grid points are not independent) by percentiles of
/// bootstrap replicates `(ln k, exponent)`.
fn bootstrap_intervals(law: &mut PowerLaw, reps: &[(f64, f64)], level: f64) {
    let q = 0.5 - 0.5 * level;
    let e: Vec<f64> = reps.iter().map(|r| r.1).collect();
    let k: Vec<f64> = reps.iter().map(|r| r.0).collect();
    law.exponent = Interval {
        value: law.exponent.value,
        lo: percentile(&e, q),
        hi: percentile(&e, 1.0 - q),
    };
    law.coefficient = Interval {
        value: law.coefficient.value,
        lo: percentile(&k, q).exp(),
        hi: percentile(&k, 1.0 - q).exp(),
    };
    law.interval_method = format!(
        "bootstrap over runs ({} replicates), percentile",
        reps.len()
    );
}

/// Approach 1 over `curves` with `n_grid` grid points, intervals from `boot` bootstrap replicates
/// over runs (seeded).
pub fn fit(curves: &[Curve], n_grid: usize, boot: usize, seed: u64, level: f64) -> EnvelopeFit {
    let (lo, hi) = default_range(curves);
    let all: Vec<usize> = (0..curves.len()).collect();
    let env = envelope(curves, &all, lo, hi, n_grid);
    let (mut n_opt, mut d_opt) = fits(&env, level);
    let mut n_boot = LawReplicates {
        reps: vec![],
        level,
    };
    let mut d_boot = n_boot.clone();
    let mut seen: Vec<usize> = vec![];
    for &r in &env.run {
        if !seen.contains(&r) {
            seen.push(r);
        }
    }
    if boot > 0 && curves.len() >= 3 {
        let reps = bootstrap(curves.len(), boot, seed, |idx| {
            let e = envelope(curves, idx, lo, hi, n_grid);
            let (n, d) = fits(&e, level);
            let (n, d) = (n?, d?);
            Some(vec![
                n.line.intercept.value,
                n.exponent.value,
                d.line.intercept.value,
                d.exponent.value,
            ])
        });
        n_boot.reps = reps.iter().map(|r| (r[0], r[1])).collect();
        d_boot.reps = reps.iter().map(|r| (r[2], r[3])).collect();
        if let Some(l) = n_opt.as_mut() {
            bootstrap_intervals(l, &n_boot.reps, level);
        }
        if let Some(l) = d_opt.as_mut() {
            bootstrap_intervals(l, &d_boot.reps, level);
        }
    }
    EnvelopeFit {
        grid_points: env.c.len(),
        fitted_points: interior(&env).len(),
        c_range: [lo, hi],
        runs_on_envelope: seen.iter().map(|&r| curves[r].run.clone()).collect(),
        n_opt,
        d_opt,
        envelope: env,
        n_boot,
        d_boot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_keeps_replicates_together() {
        // Replicates pivot about C0 = 1e18: ln k and the exponent are perfectly anti-correlated, so
        // the band is narrowest at C0 and far narrower there than the corners of the marginals.
        let c0: f64 = 1e18;
        let reps: Vec<(f64, f64)> = (0..101)
            .map(|i| {
                let p = 0.5 + 0.001 * (i as f64 - 50.0);
                (2.0 - p * c0.ln(), p)
            })
            .collect();
        let b = LawReplicates { reps, level: 0.9 };
        let (lo, hi) = b.band(c0).unwrap();
        assert!((lo.ln() - 2.0).abs() < 1e-9 && (hi.ln() - 2.0).abs() < 1e-9);
        let (lo2, hi2) = b.band(1e20).unwrap();
        let mid = 2.0 + 0.5 * 100f64.ln();
        assert!(lo2.ln() < mid && mid < hi2.ln());
        assert!(hi2.ln() - lo2.ln() < 0.1 * 100f64.ln());
        assert!(LawReplicates::default().band(c0).is_none());
    }
}
