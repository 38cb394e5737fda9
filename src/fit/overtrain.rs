//! Over-training (Gadre et al. 2024): L(N, M) = E + a·N^(−α) + b·(M·N)^(−α) with token multiplier
//! M = D/N, fitted as LSE(ln a − α ln N, ln b − α ln(M·N), e) with Huber on log-loss from a grid.

use super::data::Point;
use super::law::{fit_law, LawFit, LawOptions};
use super::optim::{grid, range, LseData, LseModel};

/// Names of the reported quantities: E, a, b, α and the compute-optimal multiplier M* = (b/a)^(1/α).
pub const NAMES: [&str; 5] = ["E", "a", "b", "alpha", "M_opt"];

/// LSE(ln a − α ln N, ln b − α ln(MN), e); θ = (ln a, ln b, e, α).
pub fn model() -> LseModel {
    LseModel::new(4, 2, &[[0, 3, 0], [1, 3, 1]])
}

/// Default starts: ln a, ln b ∈ {0, 5, …, 25}, e ∈ {−1, −0.5, …, 1}, α ∈ {0, 0.25, …, 2} (1,620).
pub fn default_starts() -> Vec<Vec<f64>> {
    grid(&[
        range(0.0, 25.0, 5.0),
        range(0.0, 25.0, 5.0),
        range(-1.0, 1.0, 0.5),
        range(0.0, 2.0, 0.25),
    ])
}

/// Features (ln N, ln(M·N)) and ln L.
pub fn lse_data(points: &[Point]) -> LseData {
    LseData {
        n_features: 2,
        x_PxF: points
            .iter()
            .flat_map(|p| [p.n.ln(), (p.d / p.n * p.n).ln()])
            .collect(),
        log_loss: points.iter().map(|p| p.loss.ln()).collect(),
    }
}

/// E, a, b, α, M* from θ.
pub fn derive(t: &[f64]) -> Vec<f64> {
    let (a, b, e, al) = (t[0].exp(), t[1].exp(), t[2].exp(), t[3]);
    vec![e, a, b, al, (b / a).powf(1.0 / al)]
}

/// Fit the over-training law.
pub fn fit(points: &[Point], starts: &[Vec<f64>], opts: &LawOptions) -> Option<LawFit> {
    fit_law(&model(), &lse_data(points), starts, opts, &NAMES, &derive)
}

/// L(N, M) of a fit.
pub fn predict(f: &LawFit, n: f64, m: f64) -> f64 {
    model().predict_log(&f.theta, &[n.ln(), (m * n).ln()]).exp()
}
