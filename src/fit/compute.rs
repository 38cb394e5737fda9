//! Loss against compute: L(C) = E + λ·C^(−α), fitted as LSE(e, l − α ln(C/C₀)) with Huber on
//! log-loss from a grid of starts (C₀ = geometric mean of the FLOPs, for conditioning).

use super::law::{fit_law, LawFit, LawOptions};
use super::optim::{grid, range, LseData, LseModel};

/// Names of the reported quantities.
pub const NAMES: [&str; 3] = ["E", "lambda", "alpha"];

/// θ = (l, e, α).
pub fn model() -> LseModel {
    LseModel::new(3, 1, &[[0, 2, 0]])
}

/// Default starts: l ∈ {−3, …, 2}, e ∈ {−1, −0.5, …, 1}, α ∈ {0.05, 0.1, 0.2, 0.4, 0.8} (150).
pub fn default_starts() -> Vec<Vec<f64>> {
    grid(&[
        range(-3.0, 2.0, 1.0),
        range(-1.0, 1.0, 0.5),
        vec![0.05, 0.1, 0.2, 0.4, 0.8],
    ])
}

/// A fitted L(C) with its scale C₀.
#[derive(Clone, Debug)]
pub struct ComputeFit {
    /// The law fit (θ in scaled units).
    pub law: LawFit,
    /// The FLOP scale C₀.
    pub c0: f64,
}

/// Fit L(C) to (C, loss) pairs.
pub fn fit(c: &[f64], loss: &[f64], opts: &LawOptions) -> Option<ComputeFit> {
    if c.len() < 4 {
        return None;
    }
    let c0 = (c.iter().map(|v| v.ln()).sum::<f64>() / c.len() as f64).exp();
    let data = LseData {
        n_features: 1,
        x_PxF: c.iter().map(|v| (v / c0).ln()).collect(),
        log_loss: loss.iter().map(|v| v.ln()).collect(),
    };
    let derive = move |t: &[f64]| vec![t[1].exp(), t[0].exp() * c0.powf(t[2]), t[2]];
    let law = fit_law(&model(), &data, &default_starts(), opts, &NAMES, &derive)?;
    Some(ComputeFit { law, c0 })
}

/// L(C) of a fit.
pub fn predict(f: &ComputeFit, c: f64) -> f64 {
    model().predict_log(&f.law.theta, &[(c / f.c0).ln()]).exp()
}
