//! Approach 3: L(N, D) = E + A/N^α + B/D^β (Hoffmann et al. 2022; Besiroglu et al. 2024), fitted as
//! Σ Huber_δ(LSE(a − α ln N, b − β ln D, e) − ln L) by L-BFGS from a grid of starts, and the
//! compute-optimal allocation N_opt(C) = G·(C/6)^a, D_opt(C) = G⁻¹·(C/6)^b.

use super::data::Point;
use super::law::{fit_law, LawFit, LawOptions};
use super::optim::{grid, range, LseData, LseModel};

/// Parameter order of θ: a = ln A, b = ln B, e = ln E, α, β.
pub const THETA: [&str; 5] = ["a", "b", "e", "alpha", "beta"];

/// Names of the reported quantities, in order.
pub const NAMES: [&str; 8] = ["A", "B", "E", "alpha", "beta", "a", "b", "G"];

/// The model LSE(a − α ln N, b − β ln D, e).
pub fn model() -> LseModel {
    LseModel::new(5, 2, &[[0, 3, 0], [1, 4, 1]])
}

/// The default 4,500-start grid (Hoffmann et al. / Besiroglu et al.): α, β ∈ {0, 0.5, …, 2},
/// e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25}, in θ order (a, b, e, α, β).
pub fn default_starts() -> Vec<Vec<f64>> {
    grid(&[
        range(0.0, 25.0, 5.0),
        range(0.0, 25.0, 5.0),
        range(-1.0, 1.0, 0.5),
        range(0.0, 2.0, 0.5),
        range(0.0, 2.0, 0.5),
    ])
}

/// Features (ln N, ln D) and ln L of the points.
pub fn lse_data(points: &[Point]) -> LseData {
    LseData {
        n_features: 2,
        x_PxF: points.iter().flat_map(|p| [p.n.ln(), p.d.ln()]).collect(),
        log_loss: points.iter().map(|p| p.loss.ln()).collect(),
    }
}

/// A, B, E, α, β, a, b, G from θ.
pub fn derive(t: &[f64]) -> Vec<f64> {
    let (aa, bb, ee, al, be) = (t[0].exp(), t[1].exp(), t[2].exp(), t[3], t[4]);
    let a = be / (al + be);
    let b = al / (al + be);
    let g = ((al * aa) / (be * bb)).powf(1.0 / (al + be));
    vec![aa, bb, ee, al, be, a, b, g]
}

/// Fit Approach 3 to `points` from `starts`.
pub fn fit(points: &[Point], starts: &[Vec<f64>], opts: &LawOptions) -> Option<LawFit> {
    fit_law(&model(), &lse_data(points), starts, opts, &NAMES, &derive)
}

/// L(N, D) of a fit.
pub fn predict(f: &LawFit, n: f64, d: f64) -> f64 {
    model().predict_log(&f.theta, &[n.ln(), d.ln()]).exp()
}

/// N_opt(C) = G·(C/6)^a of a fit.
pub fn n_opt(f: &LawFit, c: f64) -> f64 {
    f.params.value("G") * (c / 6.0).powf(f.params.value("a"))
}

/// D_opt(C) = G⁻¹·(C/6)^b of a fit.
pub fn d_opt(f: &LawFit, c: f64) -> f64 {
    (c / 6.0).powf(f.params.value("b")) / f.params.value("G")
}
