//! Fitting a log-sum-exp law: multi-start L-BFGS, residuals and bootstrap intervals of named
//! quantities derived from the parameters.

use super::optim::{bootstrap, multistart, HuberObjective, LbfgsOptions, LseData, LseModel};
use super::stats::{percentile, Interval};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Named values with intervals, serialised as a JSON object in insertion order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(pub Vec<(String, Interval)>);

impl Params {
    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&Interval> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
    /// The value of entry `name` (NaN if absent).
    pub fn value(&self, name: &str) -> f64 {
        self.get(name).map_or(f64::NAN, |i| i.value)
    }
    /// `names[k]` with value `point[k]` and the percentile interval at `level` of column k of
    /// `replicates` (NaN ends when there are no replicates).
    pub fn from_replicates(
        names: &[&str],
        point: &[f64],
        replicates: &[Vec<f64>],
        level: f64,
    ) -> Params {
        let q = 0.5 - 0.5 * level;
        Params(
            names
                .iter()
                .enumerate()
                .map(|(k, n)| {
                    let col: Vec<f64> = replicates.iter().map(|r| r[k]).collect();
                    let (lo, hi) = if col.is_empty() {
                        (f64::NAN, f64::NAN)
                    } else {
                        (percentile(&col, q), percentile(&col, 1.0 - q))
                    };
                    (
                        n.to_string(),
                        Interval {
                            value: point[k],
                            lo,
                            hi,
                        },
                    )
                })
                .collect(),
        )
    }
}

impl Serialize for Params {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// What the law fits minimise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Σ Huber_δ(ln L̂ − ln L) (Hoffmann et al., Besiroglu et al.).
    #[default]
    HuberLog,
    /// Σ (L̂ − L)², least squares on the loss itself (Gadre et al.'s scipy `curve_fit`).
    LeastSquares,
}

/// Settings shared by the law fits.
#[derive(Clone, Debug)]
pub struct LawOptions {
    /// Huber threshold δ on log-loss residuals (unused by least squares).
    pub delta: f64,
    /// The objective minimised.
    pub objective: Objective,
    /// L-BFGS settings.
    pub lbfgs: LbfgsOptions,
    /// Bootstrap replicates (0: no intervals).
    pub bootstrap: usize,
    /// Bootstrap seed.
    pub seed: u64,
    /// Interval level (0.95: 2.5th to 97.5th percentile).
    pub level: f64,
}

impl Default for LawOptions {
    fn default() -> Self {
        LawOptions {
            delta: 1e-3,
            objective: Objective::HuberLog,
            lbfgs: LbfgsOptions::default(),
            bootstrap: 1000,
            seed: 0,
            level: 0.95,
        }
    }
}

/// A fitted law.
#[derive(Clone, Debug)]
pub struct LawFit {
    /// Best parameters (log-coefficients and exponents, model order).
    pub theta: Vec<f64>,
    /// Objective at the best parameters (sum of Huber losses).
    pub objective: f64,
    /// Starts tried.
    pub n_starts: usize,
    /// Starts whose L-BFGS run ended at a finite value.
    pub n_converged: usize,
    /// Derived quantities with bootstrap intervals.
    pub params: Params,
    /// ln L observed − ln L predicted, per point.
    pub residuals: Vec<f64>,
    /// Root mean square of the residuals.
    pub rmse_log: f64,
    /// Bootstrap replicates that converged.
    pub bootstrap_ok: usize,
    /// θ of each converged bootstrap replicate, in replicate order (for prediction intervals).
    pub replicates: Vec<Vec<f64>>,
}

/// Fit `model` to `data` from every start, keep the best, then bootstrap the quantities `derive`
/// computes from θ (named by `names`), each replicate refitted from the best θ.
pub fn fit_law(
    model: &LseModel,
    data: &LseData,
    starts: &[Vec<f64>],
    opts: &LawOptions,
    names: &[&str],
    derive: &(dyn Fn(&[f64]) -> Vec<f64> + Sync),
) -> Option<LawFit> {
    let (delta, on_loss) = match opts.objective {
        Objective::HuberLog => (opts.delta, false),
        Objective::LeastSquares => (f64::INFINITY, true),
    };
    let obj = HuberObjective {
        model,
        data,
        delta,
        on_loss,
    };
    let (best, n_converged) = multistart(&obj, starts, &opts.lbfgs)?;
    let f = data.n_features;
    let residuals: Vec<f64> = (0..data.len())
        .map(|i| data.log_loss[i] - model.predict_log(&best.theta, &data.x_PxF[i * f..(i + 1) * f]))
        .collect();
    let rmse_log = (residuals.iter().map(|r| r * r).sum::<f64>() / residuals.len() as f64).sqrt();
    let reps = if opts.bootstrap > 0 {
        bootstrap(data.len(), opts.bootstrap, opts.seed, |idx| {
            let sample = data.select(idx);
            let o = HuberObjective {
                model,
                data: &sample,
                delta,
                on_loss,
            };
            super::optim::lbfgs(&o, &best.theta, &opts.lbfgs).map(|m| m.theta)
        })
    } else {
        vec![]
    };
    let derived: Vec<Vec<f64>> = reps.iter().map(|t| derive(t)).collect();
    let point = derive(&best.theta);
    let params = Params::from_replicates(names, &point, &derived, opts.level);
    Some(LawFit {
        theta: best.theta,
        objective: best.value,
        n_starts: starts.len(),
        n_converged,
        params,
        residuals,
        rmse_log,
        bootstrap_ok: reps.len(),
        replicates: reps,
    })
}
