//! Predictions from a fit: the loss of a planned run, the compute-optimal N*, D* and loss at a budget,
//! each with a bootstrap interval, from every fitted law that applies.
//!
//! `isoflop fit` writes the fitted parameters θ of every law and of each of its bootstrap replicates
//! to `bootstrap.json` next to `fit.json` ([`Laws`]). A prediction evaluates the law at θ (the point)
//! and at every replicate; the interval is the percentile interval of the replicates' predictions at
//! the requested level, so each replicate's parameters stay together (their correlations matter far
//! more than any one parameter's spread). The intervals describe the uncertainty of the fitted law,
//! not the noise of a single new run. Approach 2 has no bootstrap: its N*(C), D*(C) intervals are the
//! Student-t intervals of the fitted log-log line at C.
//!
//! Chained task error (Gadre et al.): when the fit (or `--error-fit`) has a downstream law
//! Err(L) = ε − k·exp(−γ·L), each loss prediction L̂ is also mapped to Err(L̂). Its interval pairs the
//! loss law's bootstrap replicate j with the error law's replicate j (j over the shorter list), so it
//! carries both fits' uncertainty; when both laws were fitted to the same runs with the same seed (and
//! no replicate failed), replicate j of each resampled the same runs. Its ends are clipped to [0, 1],
//! an error rate's range.

use super::data::Point;
use super::error::FitError;
use super::law::{LawFit, Objective};
use super::report::{FitOptions, Fitted, Report};
use super::stats::{percentile, t_quantile, Interval, LineFit};
use super::table::Table;
use super::{compute, downstream, overtrain, parametric};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name of the sidecar holding the laws' parameters and bootstrap replicates.
pub const SIDECAR: &str = "bootstrap.json";

/// Version of the sidecar format.
pub const SIDECAR_VERSION: u32 = 1;

/// Default extrapolation factor (target compute / largest fitted compute) above which a prediction
/// carries a warning.
pub const DEFAULT_MAX_EXTRAPOLATION: f64 = 100.0;

/// A law fitted by [`super::law::fit_law`]: its best θ and the θ of each bootstrap replicate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LawSample {
    /// θ at the optimum (model order; see the law's module).
    pub theta: Vec<f64>,
    /// θ of each converged bootstrap replicate.
    pub replicates: Vec<Vec<f64>>,
    /// Largest training compute C among the points fitted.
    pub c_max: f64,
    /// Points fitted.
    pub n_points: usize,
}

impl LawSample {
    fn of(f: &LawFit, c_max: f64) -> Self {
        LawSample {
            theta: f.theta.clone(),
            replicates: f.replicates.clone(),
            c_max,
            n_points: f.residuals.len(),
        }
    }
}

/// L(C) = E + λ·C^(−α) with its FLOP scale C₀ (θ is in scaled units).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ComputeSample {
    /// The FLOP scale C₀.
    pub c0: f64,
    /// θ and replicates.
    #[serde(flatten)]
    pub law: LawSample,
}

/// A power law y = k·C^p as a line ln y = ln k + p·ln C, with either bootstrap replicates (Approach 1)
/// or the covariance of the least-squares line (Approach 2).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PowerSample {
    /// ln k.
    pub ln_k: f64,
    /// p.
    pub exponent: f64,
    /// `(ln k, p)` per bootstrap replicate (Approach 1; empty otherwise).
    pub replicates: Vec<(f64, f64)>,
    /// Covariance of (ln k, p), residual-variance scaled (Approach 2).
    pub cov: Option<[[f64; 2]; 2]>,
    /// Points of the line fit (Student t with n − 2 degrees of freedom).
    pub n_points: usize,
}

impl PowerSample {
    fn of_line(l: &LineFit) -> Self {
        PowerSample {
            ln_k: l.intercept.value,
            exponent: l.slope.value,
            replicates: vec![],
            cov: Some(l.cov),
            n_points: l.n,
        }
    }

    /// y(C) with its interval at `level` (NaN ends when there is none).
    pub fn at(&self, c: f64, level: f64) -> Interval {
        let x = c.ln();
        let ly = self.ln_k + self.exponent * x;
        let (lo, hi) = if !self.replicates.is_empty() {
            let q = 0.5 - 0.5 * level;
            let v: Vec<f64> = self.replicates.iter().map(|&(k, p)| k + p * x).collect();
            (percentile(&v, q), percentile(&v, 1.0 - q))
        } else if let (Some(cv), true) = (self.cov, self.n_points > 2) {
            let var = cv[0][0] + 2.0 * x * cv[0][1] + x * x * cv[1][1];
            let h = t_quantile(0.5 + 0.5 * level, self.n_points as f64 - 2.0) * var.max(0.0).sqrt();
            (ly - h, ly + h)
        } else {
            (f64::NAN, f64::NAN)
        };
        Interval {
            value: ly.exp(),
            lo: lo.exp(),
            hi: hi.exp(),
        }
    }
}

/// The compute-optimal allocation N*(C), D*(C) of Approach 1 or 2.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Allocation {
    /// N*(C).
    pub n_opt: PowerSample,
    /// D*(C).
    pub d_opt: PowerSample,
    /// Largest compute fitted.
    pub c_max: f64,
}

/// The downstream error law Err(L) = ε − k·exp(−γ·L): θ = (k, γ, ε) and its replicates.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DownstreamSample {
    /// θ at the optimum.
    pub theta: Vec<f64>,
    /// θ of each bootstrap replicate.
    pub replicates: Vec<Vec<f64>>,
    /// The error column fitted.
    pub error_col: String,
    /// The loss column it was fitted against.
    pub loss_col: String,
    /// Smallest and largest loss fitted.
    pub loss_range: [f64; 2],
    /// Pairs fitted.
    pub n_points: usize,
}

/// Everything `isoflop predict` needs from a fit, written by `isoflop fit` as `bootstrap.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Laws {
    /// Format version ([`SIDECAR_VERSION`]).
    pub version: u32,
    /// Input of the fit.
    pub source: String,
    /// FLOP convention of every C in the fit.
    pub convention: String,
    /// Objective of the law fits.
    pub objective: Objective,
    /// Bootstrap seed.
    pub seed: u64,
    /// Interval level of the fit (the default level of predictions).
    pub level: f64,
    /// Approach 3, θ = (ln A, ln B, ln E, α, β).
    pub approach3: Option<LawSample>,
    /// Over-training law, θ = (ln a, ln b, ln E, α).
    pub overtrain: Option<LawSample>,
    /// L(C), θ = (ln λ', ln E, α) in units of C₀.
    pub compute: Option<ComputeSample>,
    /// Approach 1 allocation.
    pub approach1: Option<Allocation>,
    /// Approach 2 allocation (parabola minima).
    pub approach2: Option<Allocation>,
    /// Approach 2 allocation (Akima minima).
    pub approach2_akima: Option<Allocation>,
    /// Downstream error law (absent in sidecars written before it existed).
    #[serde(default)]
    pub downstream: Option<DownstreamSample>,
    /// Laws that `isoflop fit` flagged as not sane (`sane: false` in fit.json), with its problems: every
    /// prediction of such a law carries a warning. Read from fit.json, not kept in the sidecar.
    #[serde(skip)]
    pub insane: BTreeMap<String, String>,
}

fn c_max(points: &[Point]) -> f64 {
    points.iter().map(|p| p.c).fold(f64::NAN, f64::max)
}

fn iso_allocation(f: &super::isoflop::IsoFlopFit) -> Option<Allocation> {
    let (n, d) = (f.n_opt.as_ref()?, f.d_opt.as_ref()?);
    Some(Allocation {
        n_opt: PowerSample::of_line(&n.line),
        d_opt: PowerSample::of_line(&d.line),
        c_max: f
            .budgets
            .iter()
            .filter(|b| b.used)
            .map(|b| b.c)
            .fold(f64::NAN, f64::max),
    })
}

impl Laws {
    /// The laws of a fitting run (its report and fitted objects).
    pub fn of(rep: &Report, fitted: &Fitted, o: &FitOptions) -> Laws {
        let law_c = c_max(&fitted.law_points);
        let approach1 = rep.approach1.as_ref().and_then(|a| {
            let (n, d) = (a.n_opt.as_ref()?, a.d_opt.as_ref()?);
            let ps =
                |p: &super::powerlaw::PowerLaw, r: &super::envelope::LawReplicates| PowerSample {
                    ln_k: p.line.intercept.value,
                    exponent: p.line.slope.value,
                    replicates: r.reps.clone(),
                    // The grid points along the envelope are not independent: no t interval.
                    cov: None,
                    n_points: p.line.n,
                };
            Some(Allocation {
                n_opt: ps(n, &a.n_boot),
                d_opt: ps(d, &a.d_boot),
                c_max: a.c_range[1],
            })
        });
        // L(C) is fitted to the envelope when there is one, else to the IsoFLOP minima.
        let compute_c = match (&rep.approach1, &rep.approach2) {
            (Some(a1), _) => a1.envelope.c.iter().copied().fold(f64::NAN, f64::max),
            (None, Some(a2)) => a2
                .budgets
                .iter()
                .filter(|b| b.used)
                .map(|b| b.c)
                .fold(f64::NAN, f64::max),
            _ => f64::NAN,
        };
        Laws {
            version: SIDECAR_VERSION,
            source: rep.source.clone(),
            convention: rep.convention.clone(),
            objective: o.law.objective,
            seed: o.law.seed,
            level: o.law.level,
            approach3: fitted.approach3.as_ref().map(|f| LawSample::of(f, law_c)),
            overtrain: fitted.overtrain.as_ref().map(|f| LawSample::of(f, law_c)),
            compute: fitted.compute.as_ref().map(|f| ComputeSample {
                c0: f.c0,
                law: LawSample::of(&f.law, compute_c),
            }),
            approach1,
            approach2: rep.approach2.as_ref().and_then(iso_allocation),
            approach2_akima: rep.approach2_akima.as_ref().and_then(iso_allocation),
            downstream: fitted.downstream.as_ref().map(|(f, p)| DownstreamSample {
                theta: f.best.theta.to_vec(),
                replicates: f.replicates.clone(),
                error_col: p.error_col.clone(),
                loss_col: p.loss_col.clone(),
                loss_range: rep
                    .downstream
                    .as_ref()
                    .map_or([f64::NAN; 2], |d| d.loss_range),
                n_points: p.pairs.len(),
            }),
            insane: [
                ("approach3", &rep.approach3),
                ("overtrain", &rep.overtrain),
                ("compute", &rep.compute.as_ref().map(|c| c.law.clone())),
            ]
            .into_iter()
            .filter_map(|(name, r)| {
                let r = r.as_ref().filter(|r| !r.sane)?;
                Some((name.to_string(), r.problems.join("; ")))
            })
            .chain(
                rep.downstream
                    .as_ref()
                    .filter(|d| !d.sane)
                    .map(|d| ("downstream".to_string(), d.problems.join("; "))),
            )
            .collect(),
        }
    }
}

/// What can go wrong predicting.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// Reading the targets CSV failed.
    #[error(transparent)]
    Input(#[from] FitError),
    /// A target is malformed or out of domain.
    #[error("{at}: {what}")]
    BadTarget {
        /// Where: a flag list or `FILE:LINE`.
        at: String,
        /// What is wrong.
        what: String,
    },
    /// The fit lacks a law the request needs.
    #[error("{0}")]
    MissingLaw(String),
    /// The fit directory or its files are missing or unreadable.
    #[error("{path}: {what}")]
    BadFit {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// A planned run or budget: C, and N and D when the run's size is fixed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Target {
    /// Parameters N (None: compute-optimal).
    pub n: Option<f64>,
    /// Training tokens D.
    pub tokens: Option<f64>,
    /// Training compute C (6ND for an (N, D) target).
    pub flops: f64,
}

impl Target {
    /// A target from the accepted combinations: N with D or M = D/N; C alone (compute-optimal); C with
    /// N (D = C/6N). Every value must be finite and positive. `at` names the source for errors.
    pub fn new(
        n: Option<f64>,
        tokens: Option<f64>,
        multiplier: Option<f64>,
        flops: Option<f64>,
        at: &str,
    ) -> Result<Target, PredictError> {
        let bad = |what: String| PredictError::BadTarget {
            at: at.to_string(),
            what,
        };
        for (name, v) in [
            ("n", n),
            ("tokens", tokens),
            ("multiplier", multiplier),
            ("flops", flops),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(bad(format!("{name} = {v} must be a positive number")));
                }
            }
        }
        // N, D and M together are accepted when they agree (M·N within 1% of D).
        let multiplier = match (n, tokens, multiplier) {
            (Some(n), Some(d), Some(m)) if (m * n - d).abs() <= 0.01 * d => None,
            (Some(n), Some(d), Some(m)) => {
                return Err(bad(format!(
                "tokens = {d} disagrees with multiplier × n = {m} × {n} = {} (give one of them)",
                m * n
            )))
            }
            _ => multiplier,
        };
        match (n, tokens, multiplier, flops) {
            (Some(n), Some(d), None, None) => Ok(Target {
                n: Some(n),
                tokens: Some(d),
                flops: 6.0 * n * d,
            }),
            (Some(n), None, Some(m), None) => Ok(Target {
                n: Some(n),
                tokens: Some(m * n),
                flops: 6.0 * n * n * m,
            }),
            (None, None, None, Some(c)) => Ok(Target {
                n: None,
                tokens: None,
                flops: c,
            }),
            (Some(n), None, None, Some(c)) => Ok(Target {
                n: Some(n),
                tokens: Some(c / (6.0 * n)),
                flops: c,
            }),
            _ => Err(bad(
                "give n with tokens (or multiplier), flops alone (compute-optimal), or flops with n".into(),
            )),
        }
    }

    /// Tokens per parameter M = D/N of a sized target.
    pub fn multiplier(&self) -> Option<f64> {
        Some(self.tokens? / self.n?)
    }
}

/// One law's prediction for one target.
#[derive(Clone, Debug, Serialize)]
pub struct Prediction {
    /// The law: `approach3`, `overtrain`, `compute`, `approach1`, `approach2`, `approach2_akima`.
    pub law: String,
    /// The planned run or budget this prediction is for.
    pub target: Target,
    /// Loss of the target run (sized targets, laws of N and D).
    pub loss: Option<Interval>,
    /// Compute-optimal N* at the target's C.
    pub n_opt: Option<Interval>,
    /// Compute-optimal D* at the target's C.
    pub d_opt: Option<Interval>,
    /// Loss at the compute optimum at C.
    pub loss_opt: Option<Interval>,
    /// Task error Err(loss) of the downstream law chained with this law's loss.
    pub error: Option<Interval>,
    /// Task error at the compute optimum, Err(loss_opt).
    pub error_opt: Option<Interval>,
    /// Target compute / largest compute the law was fitted to.
    pub extrapolation: f64,
    /// Set when the extrapolation factor exceeds the threshold, or the law was flagged not sane.
    pub warning: Option<String>,
    /// About the chained error alone: the downstream law flagged not sane, or the predicted loss below
    /// every loss it was fitted to.
    pub error_warning: Option<String>,
}

/// The laws [`predict`] can use, in output order.
pub const LAW_NAMES: [&str; 6] = [
    "approach3",
    "overtrain",
    "compute",
    "approach1",
    "approach2",
    "approach2_akima",
];

/// Point value and percentile interval of `f` over θ and its replicates; `f` returns one value per
/// output (NaN where undefined).
fn sampled<const K: usize>(
    s: &LawSample,
    level: f64,
    f: impl Fn(&[f64]) -> [f64; K],
) -> [Interval; K] {
    let point = f(&s.theta);
    let reps: Vec<[f64; K]> = s.replicates.iter().map(|t| f(t)).collect();
    let q = 0.5 - 0.5 * level;
    std::array::from_fn(|k| {
        let col: Vec<f64> = reps.iter().map(|r| r[k]).collect();
        let (lo, hi) = if col.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            (percentile(&col, q), percentile(&col, 1.0 - q))
        };
        Interval {
            value: point[k],
            lo,
            hi,
        }
    })
}

/// Settings of [`predict`].
#[derive(Clone, Debug)]
pub struct PredictOptions {
    /// Interval level.
    pub level: f64,
    /// Warn above this extrapolation factor.
    pub max_extrapolation: f64,
}

/// Which of the requested laws the fit has; an explicitly requested law that is absent, or no law at
/// all that can answer a sized target, is an error (with the fit's reason for skipping it).
pub fn select_laws(
    laws: &Laws,
    wanted: &[String],
    skipped: &[(String, String)],
    sized: bool,
) -> Result<Vec<&'static str>, PredictError> {
    let present = |name: &str| match name {
        "approach3" => laws.approach3.is_some(),
        "overtrain" => laws.overtrain.is_some(),
        "compute" => laws.compute.is_some(),
        "approach1" => laws.approach1.is_some(),
        "approach2" => laws.approach2.is_some(),
        "approach2_akima" => laws.approach2_akima.is_some(),
        _ => false,
    };
    let why = |name: &str| {
        skipped
            .iter()
            .find(|(k, _)| k == name || (name == "approach2_akima" && k == "approach2"))
            .map(|(_, r)| format!(" (isoflop fit skipped it: {r})"))
            .unwrap_or_default()
    };
    let mut out = vec![];
    for name in LAW_NAMES {
        if wanted.is_empty() || wanted.iter().any(|w| w == name) {
            if present(name) {
                out.push(name);
            } else if !wanted.is_empty() {
                return Err(PredictError::MissingLaw(format!(
                    "the fit has no {name} law{}",
                    why(name)
                )));
            }
        }
    }
    for w in wanted {
        if !LAW_NAMES.contains(&w.as_str()) {
            return Err(PredictError::MissingLaw(format!(
                "--law {w}: unknown law (one of {})",
                LAW_NAMES.join(", ")
            )));
        }
    }
    if out.is_empty() {
        return Err(PredictError::MissingLaw(format!(
            "the fit has none of the laws {}{}{}",
            LAW_NAMES.join(", "),
            if laws.downstream.is_some() {
                " (it has a downstream error law, which maps a loss to a task error: chain it with a loss law by giving this fit as --error-fit to a predict of a fit that has one)"
            } else {
                ""
            },
            if skipped.is_empty() {
                String::new()
            } else {
                format!(
                    "; skipped: {}",
                    skipped
                        .iter()
                        .map(|(k, r)| format!("{k}: {r}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        )));
    }
    if sized && !out.iter().any(|l| *l == "approach3" || *l == "overtrain") {
        return Err(PredictError::MissingLaw(format!(
            "the loss of a run of given N and D needs Approach 3 or the over-training law, and the fit has neither{}{}",
            why("approach3"),
            why("overtrain")
        )));
    }
    Ok(out)
}

/// The predictions of law `law` (one of [`LAW_NAMES`], present in `laws`) for target `t`.
pub fn predict(laws: &Laws, law: &str, t: &Target, o: &PredictOptions) -> Prediction {
    let lv = o.level;
    let c = t.flops;
    let nan = f64::NAN;
    let (mut loss, mut n_opt, mut d_opt, mut loss_opt) = (None, None, None, None);
    // The loss law's sample and θ ↦ (loss, loss at optimum), for the chained error.
    type LossFn<'a> = Box<dyn Fn(&[f64]) -> [f64; 2] + 'a>;
    let mut chain: Option<(&LawSample, LossFn<'_>)> = None;
    let c_max;
    match law {
        "approach3" | "overtrain" => {
            // The law's sample, its model of (N, D), and θ ↦ (N*, D*) at C.
            type OptFn<'a> = Box<dyn Fn(&[f64]) -> (f64, f64) + 'a>;
            let (s, model, opt): (&LawSample, _, OptFn<'_>) = if law == "approach3" {
                (
                    laws.approach3.as_ref().expect("law present"),
                    parametric::model(),
                    Box::new(move |th: &[f64]| {
                        let d = parametric::derive(th);
                        let (a, b, g) = (d[5], d[6], d[7]);
                        (g * (c / 6.0).powf(a), (c / 6.0).powf(b) / g)
                    }),
                )
            } else {
                (
                    laws.overtrain.as_ref().expect("law present"),
                    overtrain::model(),
                    Box::new(move |th: &[f64]| {
                        // M* = (b/a)^(1/α) is the compute-optimal multiplier at every C: C = 6·M*·N*².
                        let m_opt = overtrain::derive(th)[4];
                        let no = (c / (6.0 * m_opt)).sqrt();
                        (no, m_opt * no)
                    }),
                )
            };
            c_max = s.c_max;
            let f = move |th: &[f64]| {
                let (no, dn) = opt(th);
                let l = match (t.n, t.tokens) {
                    (Some(n), Some(dd)) => model.predict_log(th, &[n.ln(), dd.ln()]).exp(),
                    _ => nan,
                };
                [l, no, dn, model.predict_log(th, &[no.ln(), dn.ln()]).exp()]
            };
            let [l, no, dn, lo] = sampled(s, lv, &f);
            chain = Some((
                s,
                Box::new(move |th| {
                    let r = f(th);
                    [r[0], r[3]]
                }),
            ));
            loss = t.n.map(|_| l);
            (n_opt, d_opt, loss_opt) = (Some(no), Some(dn), Some(lo));
        }
        "compute" => {
            let s = laws.compute.as_ref().expect("law present");
            c_max = s.law.c_max;
            let model = compute::model();
            let c0 = s.c0;
            let f = move |th: &[f64]| [model.predict_log(th, &[(c / c0).ln()]).exp()];
            let [lo] = sampled(&s.law, lv, &f);
            chain = Some((&s.law, Box::new(move |th| [nan, f(th)[0]])));
            loss_opt = Some(lo);
        }
        _ => {
            let a = match law {
                "approach1" => laws.approach1.as_ref(),
                "approach2" => laws.approach2.as_ref(),
                _ => laws.approach2_akima.as_ref(),
            }
            .expect("law present");
            c_max = a.c_max;
            n_opt = Some(a.n_opt.at(c, lv));
            d_opt = Some(a.d_opt.at(c, lv));
        }
    }
    let extrapolation = c / c_max;
    let far = (extrapolation > o.max_extrapolation).then(|| {
        format!(
            "C = {c:.3e} is {extrapolation:.0}× the largest compute this law was fitted to ({c_max:.3e}; warning above {}×)",
            o.max_extrapolation
        )
    });
    let insane = laws
        .insane
        .get(law)
        .map(|p| format!("NOT SANE, do not use: isoflop fit flagged this law ({p})"));
    let (mut error, mut error_opt) = (None, None);
    let warning = match (insane, far) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    };
    let mut notes: Vec<String> = vec![];
    if let (Some(e), Some((s, lf))) = (&laws.downstream, &chain) {
        let pair = |lt: &[f64], et: &[f64]| {
            let [l, lo] = lf(lt);
            [downstream::error_at(et, l), downstream::error_at(et, lo)]
        };
        let point = pair(&s.theta, &e.theta);
        let m = s.replicates.len().min(e.replicates.len());
        let reps: Vec<[f64; 2]> = (0..m)
            .map(|j| pair(&s.replicates[j], &e.replicates[j]))
            .collect();
        let q = 0.5 - 0.5 * lv;
        let [ie, io]: [Interval; 2] = std::array::from_fn(|k| {
            let col: Vec<f64> = reps.iter().map(|r| r[k]).collect();
            // An error rate lies in [0, 1]; a replicate fitted to three distinct losses can leave it.
            let (lo, hi) = if col.is_empty() {
                (nan, nan)
            } else {
                (
                    percentile(&col, q).clamp(0.0, 1.0),
                    percentile(&col, 1.0 - q).clamp(0.0, 1.0),
                )
            };
            Interval {
                value: point[k],
                lo,
                hi,
            }
        });
        error = loss.map(|_| ie);
        error_opt = loss_opt.map(|_| io);
        if let Some(p) = laws.insane.get("downstream") {
            notes.push(format!(
                "NOT SANE, do not use the error: isoflop fit flagged the downstream law ({p})"
            ));
        }
        let lmin = e.loss_range[0];
        if let Some(l) = [loss, loss_opt]
            .into_iter()
            .flatten()
            .map(|l| l.value)
            .find(|&l| l < lmin)
        {
            notes.push(format!(
                "the predicted loss {l:.4} is below the lowest loss the error law was fitted to ({lmin:.4}): the error is extrapolated"
            ));
        }
    }
    let error_warning = (!notes.is_empty()).then(|| notes.join("; "));
    Prediction {
        law: law.to_string(),
        target: *t,
        loss,
        n_opt,
        d_opt,
        loss_opt,
        error,
        error_opt,
        extrapolation,
        warning,
        error_warning,
    }
}

/// A targets CSV: its header and, per data row, the target, the file line and the cells (passed
/// through to the output CSV).
#[derive(Clone, Debug)]
pub struct TargetTable {
    /// The input header.
    pub header: Vec<String>,
    /// `(line, target, cells)` per row.
    pub rows: Vec<(usize, Target, Vec<String>)>,
}

/// Column names accepted in a targets CSV, per quantity.
pub const TARGET_COLUMNS: [(&str, &[&str]); 4] = [
    ("n", &["n", "N", "n_params", "params"]),
    ("tokens", &["tokens", "D", "d", "n_tokens"]),
    ("multiplier", &["multiplier", "M", "m", "tokens_per_param"]),
    ("flops", &["flops", "C", "c"]),
];

/// Read targets from a CSV with columns among [`TARGET_COLUMNS`] (empty cells mean "not given");
/// errors name the file, line and column.
pub fn read_targets(path: &Path) -> Result<TargetTable, PredictError> {
    let t = Table::read(path)?;
    let cols: Vec<Option<usize>> = TARGET_COLUMNS
        .iter()
        .map(|(_, names)| {
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            t.find(&names)
        })
        .collect();
    if cols.iter().all(Option::is_none) {
        return Err(PredictError::BadTarget {
            at: path.display().to_string(),
            what: format!(
                "no target column (want n with tokens or multiplier, or flops; columns present: {})",
                t.header.join(", ")
            ),
        });
    }
    let mut rows = vec![];
    for r in 0..t.rows.len() {
        let mut v = [None; 4];
        for (k, c) in cols.iter().enumerate() {
            if let Some(c) = c {
                v[k] = t.number(r, *c)?;
                if let Some(x) = v[k] {
                    if !(x.is_finite() && x > 0.0) {
                        return Err(PredictError::BadTarget {
                            at: format!("{}:{}", path.display(), t.line(r)),
                            what: format!(
                                "column '{}': {x} must be a positive number",
                                t.header[*c]
                            ),
                        });
                    }
                }
            }
        }
        let at = format!("{}:{}", path.display(), t.line(r));
        let target = Target::new(v[0], v[1], v[2], v[3], &at)?;
        rows.push((t.line(r), target, t.rows[r].1.clone()));
    }
    if rows.is_empty() {
        return Err(PredictError::BadTarget {
            at: path.display().to_string(),
            what: "no data rows".into(),
        });
    }
    Ok(TargetTable {
        header: t.header.clone(),
        rows,
    })
}

/// The `fit.json` of a fit directory, a sweep directory (its `fit/`) or the file itself.
pub fn resolve_fit(path: &Path) -> Result<PathBuf, PredictError> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if path.is_dir() {
        for c in [path.join("fit.json"), path.join("fit").join("fit.json")] {
            if c.is_file() {
                return Ok(c);
            }
        }
        return Err(PredictError::BadFit {
            path: path.to_path_buf(),
            what: "no fit.json here or in fit/ (run `isoflop fit` first)".into(),
        });
    }
    Err(PredictError::BadFit {
        path: path.to_path_buf(),
        what: "no such file or directory".into(),
    })
}

/// Load the laws next to `fit_json` and the fit's skipped-law reasons `(law, reason)`.
pub fn load(fit_json: &Path) -> Result<(Laws, Vec<(String, String)>), PredictError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| PredictError::BadFit {
            path: p.to_path_buf(),
            what: format!("cannot read: {e}"),
        })
    };
    let fit: serde_json::Value =
        serde_json::from_str(&read(fit_json)?).map_err(|e| PredictError::BadFit {
            path: fit_json.to_path_buf(),
            what: format!("not a fit.json: {e}"),
        })?;
    let skipped = fit["skipped"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["fit"].as_str().unwrap_or("").to_string(),
                        s["reason"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let side = fit_json.with_file_name(SIDECAR);
    if !side.is_file() {
        return Err(PredictError::BadFit {
            path: side,
            what: format!(
                "missing: {} keeps the laws' parameters and bootstrap replicates; rerun `isoflop fit` (this version writes it)",
                SIDECAR
            ),
        });
    }
    let mut laws: Laws = serde_json::from_str(&read(&side)?).map_err(|e| PredictError::BadFit {
        path: side.clone(),
        what: format!("not an isoflop {SIDECAR}: {e}"),
    })?;
    if laws.version != SIDECAR_VERSION {
        return Err(PredictError::BadFit {
            path: side,
            what: format!(
                "format version {} (this isoflop reads {SIDECAR_VERSION}); rerun `isoflop fit`",
                laws.version
            ),
        });
    }
    for law in ["approach3", "overtrain", "compute", "downstream"] {
        if fit[law]["sane"] == serde_json::Value::Bool(false) {
            let problems: Vec<&str> = fit[law]["problems"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_str()).collect())
                .unwrap_or_default();
            laws.insane.insert(law.to_string(), problems.join("; "));
        }
    }
    Ok((laws, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fit::stats::line_fit;

    #[test]
    fn targets_accept_the_documented_combinations_only() {
        let t = Target::new(Some(1e9), None, Some(20.0), None, "x").unwrap();
        assert_eq!((t.tokens, t.flops), (Some(2e10), 1.2e20));
        let t = Target::new(Some(1e9), None, None, Some(1.2e20), "x").unwrap();
        assert_eq!(t.tokens, Some(2e10));
        let t = Target::new(Some(1e9), Some(2e10), Some(20.0), None, "x").unwrap();
        assert_eq!(t.flops, 1.2e20);
        assert!(Target::new(None, None, None, Some(1e20), "x")
            .unwrap()
            .n
            .is_none());
        for (n, d, m, c) in [
            (Some(1e9), Some(2e10), Some(40.0), None),
            (Some(1e9), Some(2e10), None, Some(1e20)),
            (None, Some(2e10), None, None),
            (Some(1e9), None, None, None),
            (Some(0.0), Some(2e10), None, None),
            (None, None, None, Some(f64::NAN)),
        ] {
            let e = Target::new(n, d, m, c, "here").unwrap_err().to_string();
            assert!(e.starts_with("here: "), "{e}");
        }
    }

    #[test]
    fn approach2_interval_is_the_line_fits() {
        let x: Vec<f64> = (0..6).map(|i| 40.0 + i as f64).collect();
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, x)| 0.5 * x - 3.0 + 0.01 * (i % 2) as f64)
            .collect();
        let l = line_fit(&x, &y, None, 0.9).unwrap();
        let p = PowerSample::of_line(&l).at(52f64.exp(), 0.9);
        let want = l.predict(52.0);
        for (a, b) in [(p.value, want.value), (p.lo, want.lo), (p.hi, want.hi)] {
            assert!((a.ln() - b).abs() < 1e-9, "{a} vs {}", b.exp());
        }
    }
}
