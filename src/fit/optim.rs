//! Huber-on-log-loss objectives of log-sum-exp power-law models, minimised by L-BFGS (argmin) from a
//! grid of starts in parallel, and a seeded parallel bootstrap.
//!
//! A model predicts ln L = LSE(e, c₁ − γ₁·x₁, c₂ − γ₂·x₂, …): each term has a coefficient parameter,
//! an exponent parameter and a feature (ln N, ln D, ln C …). Parameters may be shared between terms
//! (the over-training law ties the exponents of its two terms).

use argmin::core::{CostFunction, Error as ArgminError, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::cell::RefCell;

/// One term `exp(θ[coef] − θ[exponent]·x[feature])` of a log-sum-exp model.
#[derive(Clone, Copy, Debug)]
pub struct Term {
    /// Index of the log-coefficient parameter.
    pub coef: usize,
    /// Index of the exponent parameter.
    pub exponent: usize,
    /// Index of the feature x (e.g. ln N or ln D) the exponent multiplies.
    pub feature: usize,
}

/// `ln L = LSE(θ[constant], terms…)`.
#[derive(Clone, Debug)]
pub struct LseModel {
    /// Number of parameters.
    pub n_params: usize,
    /// Index of the log of the irreducible loss E.
    pub constant: usize,
    /// The power-law terms.
    pub terms: Vec<Term>,
}

/// Points of a fit: `n_features` features per point (row-major) and the log-loss of each.
#[derive(Clone, Debug)]
pub struct LseData {
    /// Features per point.
    pub n_features: usize,
    /// `x_PxF`: features, row-major.
    pub x_PxF: Vec<f64>,
    /// ln L per point.
    pub log_loss: Vec<f64>,
}

impl LseData {
    /// Number of points.
    pub fn len(&self) -> usize {
        self.log_loss.len()
    }
    /// Whether there are no points.
    pub fn is_empty(&self) -> bool {
        self.log_loss.is_empty()
    }
    /// The points at `idx` (a bootstrap sample).
    pub fn select(&self, idx: &[usize]) -> LseData {
        let f = self.n_features;
        let mut x = Vec::with_capacity(idx.len() * f);
        for &i in idx {
            x.extend_from_slice(&self.x_PxF[i * f..(i + 1) * f]);
        }
        LseData {
            n_features: f,
            x_PxF: x,
            log_loss: idx.iter().map(|&i| self.log_loss[i]).collect(),
        }
    }
}

/// Huber loss with threshold `delta` (scipy.special.huber) and its derivative.
#[inline]
pub fn huber(delta: f64, r: f64) -> (f64, f64) {
    if r.abs() <= delta {
        (0.5 * r * r, r)
    } else {
        (delta * (r.abs() - 0.5 * delta), delta * r.signum())
    }
}

/// Σ Huber_δ(prediction − ln L) over the points of `data`, or with `on_loss` Σ Huber_δ(L̂ − L) on the
/// loss itself (δ = ∞ makes it least squares, as scipy's curve_fit in Gadre et al.).
#[derive(Clone, Debug)]
pub struct HuberObjective<'a> {
    /// The log-sum-exp model whose parameters are fitted.
    pub model: &'a LseModel,
    /// The points.
    pub data: &'a LseData,
    /// Huber threshold δ.
    pub delta: f64,
    /// Residuals on L rather than ln L.
    pub on_loss: bool,
}

impl LseModel {
    /// The model of `n_params` parameters with constant `θ[constant]` and one term per
    /// `[coef, exponent, feature]` triple.
    pub fn new(n_params: usize, constant: usize, terms: &[[usize; 3]]) -> LseModel {
        LseModel {
            n_params,
            constant,
            terms: terms
                .iter()
                .map(|&[coef, exponent, feature]| Term {
                    coef,
                    exponent,
                    feature,
                })
                .collect(),
        }
    }
    /// Predicted ln L at features `x`.
    pub fn predict_log(&self, theta: &[f64], x: &[f64]) -> f64 {
        let mut m = theta[self.constant];
        let mut t = [0.0f64; 8];
        for (k, term) in self.terms.iter().enumerate() {
            t[k] = theta[term.coef] - theta[term.exponent] * x[term.feature];
            m = m.max(t[k]);
        }
        let mut s = (theta[self.constant] - m).exp();
        for tk in &t[..self.terms.len()] {
            s += (tk - m).exp();
        }
        m + s.ln()
    }
}

impl HuberObjective<'_> {
    /// Objective value and its gradient (written into `g`).
    pub fn value_grad(&self, theta: &[f64], g: &mut [f64]) -> f64 {
        let md = self.model;
        let nt = md.terms.len();
        assert!(nt <= 7, "at most 7 terms");
        g.iter_mut().for_each(|v| *v = 0.0);
        let f = self.data.n_features;
        let e = theta[md.constant];
        let mut total = 0.0;
        let mut t = [0.0f64; 8];
        for (i, &ll) in self.data.log_loss.iter().enumerate() {
            let x = &self.data.x_PxF[i * f..(i + 1) * f];
            let mut m = e;
            for (k, term) in md.terms.iter().enumerate() {
                t[k] = theta[term.coef] - theta[term.exponent] * x[term.feature];
                m = m.max(t[k]);
            }
            let w0 = (e - m).exp();
            let mut s = w0;
            for tk in t[..nt].iter_mut() {
                *tk = (*tk - m).exp();
                s += *tk;
            }
            let p = m + s.ln();
            let (r, dr_dp) = if self.on_loss {
                (p.exp() - ll.exp(), p.exp())
            } else {
                (p - ll, 1.0)
            };
            let (h, dh) = huber(self.delta, r);
            total += h;
            let scale = dh * dr_dp / s;
            g[md.constant] += scale * w0;
            for (k, term) in md.terms.iter().enumerate() {
                let w = scale * t[k];
                g[term.coef] += w;
                g[term.exponent] -= w * x[term.feature];
            }
        }
        total
    }

    /// Objective value only.
    pub fn value(&self, theta: &[f64]) -> f64 {
        let mut g = vec![0.0; theta.len()];
        self.value_grad(theta, &mut g)
    }
}

/// The point, the value and the gradient there.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

/// argmin adaptor that evaluates value and gradient together and caches the last evaluation.
struct Problem<'a> {
    obj: &'a HuberObjective<'a>,
    cache: RefCell<Option<Evaluation>>,
}

impl Problem<'_> {
    fn eval(&self, p: &[f64]) -> Result<(f64, Vec<f64>), ArgminError> {
        if let Some((x, f, g)) = self.cache.borrow().as_ref() {
            if x.as_slice() == p {
                return Ok((*f, g.clone()));
            }
        }
        let mut g = vec![0.0; p.len()];
        let f = self.obj.value_grad(p, &mut g);
        if !f.is_finite() || g.iter().any(|v| !v.is_finite()) {
            return Err(ArgminError::msg("non-finite objective"));
        }
        *self.cache.borrow_mut() = Some((p.to_vec(), f, g.clone()));
        Ok((f, g))
    }
}

impl CostFunction for Problem<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> Result<f64, ArgminError> {
        Ok(self.eval(p)?.0)
    }
}

impl Gradient for Problem<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Vec<f64>) -> Result<Vec<f64>, ArgminError> {
        Ok(self.eval(p)?.1)
    }
}

/// Options of one L-BFGS run.
#[derive(Clone, Copy, Debug)]
pub struct LbfgsOptions {
    /// Iteration cap.
    pub max_iters: u64,
    /// Stop when the gradient norm falls below this.
    pub tol_grad: f64,
    /// Stop when the cost changes by less than this.
    pub tol_cost: f64,
    /// History length.
    pub memory: usize,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        LbfgsOptions {
            max_iters: 1000,
            tol_grad: 1e-10,
            tol_cost: 1e-14,
            memory: 10,
        }
    }
}

/// A local minimum.
#[derive(Clone, Debug)]
pub struct Minimum {
    /// Parameters.
    pub theta: Vec<f64>,
    /// Objective there.
    pub value: f64,
}

/// L-BFGS from `x0`; `None` if the run fails (non-finite objective, line-search breakdown).
pub fn lbfgs(obj: &HuberObjective, x0: &[f64], opts: &LbfgsOptions) -> Option<Minimum> {
    let problem = Problem {
        obj,
        cache: RefCell::new(None),
    };
    let ls = MoreThuenteLineSearch::new();
    let solver = LBFGS::new(ls, opts.memory)
        .with_tolerance_grad(opts.tol_grad)
        .ok()?
        .with_tolerance_cost(opts.tol_cost)
        .ok()?;
    let res = Executor::new(problem, solver)
        .configure(|s| s.param(x0.to_vec()).max_iters(opts.max_iters))
        .run()
        .ok()?;
    let st = res.state();
    let theta = st.get_best_param()?.clone();
    let value = st.get_best_cost();
    value.is_finite().then_some(Minimum { theta, value })
}

/// Best of L-BFGS runs from every start (in parallel); ties go to the earliest start, so the result
/// does not depend on thread scheduling. Also returns how many starts converged to a finite value.
pub fn multistart(
    obj: &HuberObjective,
    starts: &[Vec<f64>],
    opts: &LbfgsOptions,
) -> Option<(Minimum, usize)> {
    let results: Vec<Option<Minimum>> = starts.par_iter().map(|s| lbfgs(obj, s, opts)).collect();
    let ok = results.iter().filter(|r| r.is_some()).count();
    let mut best: Option<Minimum> = None;
    for m in results.into_iter().flatten() {
        if best.as_ref().is_none_or(|b| m.value < b.value) {
            best = Some(m);
        }
    }
    best.map(|b| (b, ok))
}

/// The Cartesian product of per-parameter start values.
pub fn grid(axes: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = vec![vec![]];
    for axis in axes {
        out = out
            .into_iter()
            .flat_map(|p| {
                axis.iter().map(move |&v| {
                    let mut q = p.clone();
                    q.push(v);
                    q
                })
            })
            .collect();
    }
    out
}

/// `lo, lo + step, …, hi`.
pub fn range(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let n = ((hi - lo) / step).round() as usize;
    (0..=n).map(|i| lo + step * i as f64).collect()
}

/// Bootstrap: `reps` resamples (with replacement) of `n` points, each fitted by `fit` in parallel.
/// Replicate r draws from ChaCha8 seeded with `seed` on stream r, so results are reproducible bit for
/// bit whatever the thread count. Failed fits are dropped.
pub fn bootstrap<F>(n: usize, reps: usize, seed: u64, fit: F) -> Vec<Vec<f64>>
where
    F: Fn(&[usize]) -> Option<Vec<f64>> + Sync,
{
    (0..reps)
        .into_par_iter()
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(r as u64);
            let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
            fit(&idx)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (LseModel, LseData) {
        let model = LseModel {
            n_params: 3,
            constant: 0,
            terms: vec![Term {
                coef: 1,
                exponent: 2,
                feature: 0,
            }],
        };
        let xs: Vec<f64> = (0..20).map(|i| i as f64 * 0.3).collect();
        let truth = [0.5f64, 1.0, 0.7];
        let ll = xs
            .iter()
            .map(|&x| model.predict_log(&truth, &[x]))
            .collect();
        (
            model,
            LseData {
                n_features: 1,
                x_PxF: xs,
                log_loss: ll,
            },
        )
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (model, data) = toy();
        for (delta, on_loss) in [(0.05, false), (0.05, true), (f64::INFINITY, true)] {
            let obj = HuberObjective {
                model: &model,
                data: &data,
                delta,
                on_loss,
            };
            check_gradient(&obj);
        }
    }

    fn check_gradient(obj: &HuberObjective) {
        let th = [0.2, 1.4, 0.4];
        let mut g = [0.0; 3];
        obj.value_grad(&th, &mut g);
        for k in 0..3 {
            let h = 1e-6;
            let mut p = th;
            p[k] += h;
            let mut q = th;
            q[k] -= h;
            let fd = (obj.value(&p) - obj.value(&q)) / (2.0 * h);
            assert!(
                (fd - g[k]).abs() < 1e-6 * (1.0 + fd.abs()),
                "k {k}: {fd} vs {}",
                g[k]
            );
        }
    }

    #[test]
    fn recovers_noise_free_parameters() {
        let (model, data) = toy();
        let obj = HuberObjective {
            model: &model,
            data: &data,
            delta: 1e-3,
            on_loss: false,
        };
        let starts = grid(&[
            range(-1.0, 1.0, 1.0),
            range(0.0, 2.0, 1.0),
            range(0.0, 1.0, 0.5),
        ]);
        let (m, _) = multistart(&obj, &starts, &LbfgsOptions::default()).unwrap();
        for (got, want) in m.theta.iter().zip([0.5, 1.0, 0.7]) {
            assert!((got - want).abs() < 1e-5, "{:?}", m.theta);
        }
    }

    #[test]
    fn bootstrap_is_deterministic() {
        let f = |idx: &[usize]| Some(vec![idx.iter().sum::<usize>() as f64]);
        assert_eq!(bootstrap(50, 8, 7, f), bootstrap(50, 8, 7, f));
        assert_ne!(bootstrap(50, 8, 7, f), bootstrap(50, 8, 8, f));
    }
}
