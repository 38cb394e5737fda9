//! The resolved plan of a sweep: one fully specified training run per (budget, size, seed) point.

use super::spec::{Budget, LrSearch, Size, SweepSpec};
use crate::model::{FlopConvention, FlopsPerToken, ParamCounts};
use crate::train::{OptimizerConfig, TrainConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Plan format version.
pub const PLAN_FORMAT: u32 = 1;

/// One run of the sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// Unique name, also the run directory's name: e.g. `c2e11-d64l1-s0` or `m20-d128l2-s1`.
    pub name: String,
    /// The (budget, size) point, e.g. `c2e11-d64l1`: the name without arm, searched values and seed.
    pub point: String,
    /// Seed replicate index (0-based) at this point.
    pub replicate: u32,
    /// The arm, in a sweep with `[[arms]]` (the run name then starts with it; `point` and the seed do
    /// not depend on it, so the arms' runs pair up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    /// The searched values of this run, in a sweep with `[search]` (its name then carries them; the seed
    /// depends on the point and replicate only, so the runs of a search share initialisation and data
    /// order at each point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchPoint>,
    /// IsoFLOP budget C (FLOPs under `convention`), for IsoFLOP sweeps.
    pub budget: Option<f64>,
    /// Target tokens per parameter, for multiplier sweeps.
    pub multiplier: Option<f64>,
    /// Parameter counts.
    pub params: ParamCounts,
    /// Training FLOPs per token under each convention.
    pub flops_per_token: FlopsPerToken,
    /// Tokens the run trains on (steps × batch × T).
    pub tokens: u64,
    /// The complete training configuration (what `isoflop train --config` receives).
    pub config: TrainConfig,
}

impl PlannedRun {
    /// Total training FLOPs under a convention.
    pub fn flops(&self, c: FlopConvention) -> f64 {
        self.flops_per_token.get(c) * self.tokens as f64
    }
}

/// The values a run takes from the sweep's `[search]`; `None` where that field is not searched.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchPoint {
    /// Multiplier of the `[train]` rule's learning rate (`lr = { factors = [...] }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_factor: Option<f64>,
    /// Searched peak learning rate (a factor times the rule, or an absolute value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Searched global batch size in sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Searched AdamW β2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta2: Option<f32>,
}

/// One combination of searched values before it is applied to a point.
#[derive(Clone, Copy, Debug, Default)]
struct Combo {
    /// `Some((value, true))`: a factor of the rule; `Some((value, false))`: an absolute lr.
    lr: Option<(f64, bool)>,
    batch_size: Option<usize>,
    beta2: Option<f32>,
}

impl Combo {
    /// Every combination of the spec's search, lr slowest, β2 fastest; one empty combination without.
    fn all(spec: &SweepSpec) -> Vec<Combo> {
        let Some(s) = &spec.search else {
            return vec![Combo::default()];
        };
        let lrs: Vec<Option<(f64, bool)>> = match &s.lr {
            None => vec![None],
            Some(LrSearch::Factors { factors }) => {
                factors.iter().map(|&f| Some((f, true))).collect()
            }
            Some(LrSearch::Absolute(v)) => v.iter().map(|&x| Some((x, false))).collect(),
        };
        fn opt<T: Copy>(v: &Option<Vec<T>>) -> Vec<Option<T>> {
            v.as_ref()
                .map_or(vec![None], |v| v.iter().copied().map(Some).collect())
        }
        let (batches, beta2s) = (opt(&s.batch_size), opt(&s.beta2));
        let mut out = Vec::new();
        for &lr in &lrs {
            for &batch_size in &batches {
                for &beta2 in &beta2s {
                    out.push(Combo {
                        lr,
                        batch_size,
                        beta2,
                    });
                }
            }
        }
        out
    }

    /// The run-name part of the searched values, e.g. `-lr2x-b64-b2_0.99` (`-lr1e-3` for an absolute lr).
    fn suffix(&self) -> String {
        let mut out = String::new();
        match self.lr {
            Some((f, true)) => out.push_str(&format!("-lr{f}x")),
            Some((x, false)) => out.push_str(&format!("-lr{x:e}")),
            None => {}
        }
        if let Some(b) = self.batch_size {
            out.push_str(&format!("-b{b}"));
        }
        if let Some(b2) = self.beta2 {
            out.push_str(&format!("-b2_{b2}"));
        }
        out
    }
}

/// The whole plan, saved as `plan.json` in the sweep directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Format version.
    pub format: u32,
    /// Sweep name.
    pub name: String,
    /// The convention of the budgets (IsoFLOP) or of the FLOPs column of the plan table.
    pub convention: FlopConvention,
    /// sha256 of the runs' canonical JSON; two specs with the same fingerprint plan the same runs.
    pub fingerprint: String,
    /// The runs, in execution order.
    pub runs: Vec<PlannedRun>,
    /// Downstream tasks every finished run is scored on (`[eval]`; task paths resolved against the spec's
    /// directory by [`super::load`]). Not part of the fingerprint: adding tasks keeps the runs.
    #[serde(default, skip_serializing_if = "super::spec::EvalSpec::is_empty")]
    pub eval: super::spec::EvalSpec,
}

/// A run's seed: the first 53 bits of sha256("isoflop-sweep/{base}/{point}/{replicate}"), so it is exact
/// in any JSON or CSV reader and depends only on the spec.
pub fn derive_seed(base: u64, point: &str, replicate: u32) -> u64 {
    let h = Sha256::digest(format!("isoflop-sweep/{base}/{point}/{replicate}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_le_bytes(b) & ((1u64 << 53) - 1)
}

/// `2e11`, `2.5e11`, `20`, `0.5` — compact numbers for run names.
fn short(x: f64) -> String {
    if x >= 1e4 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

impl Plan {
    /// Resolve a spec into runs: sizes × budgets × seeds, each with its config from the rules. With
    /// arms, every arm's runs, interleaved point by point (so a sweep cut short has the same points in
    /// every arm); the plan's convention is the first arm's.
    pub fn resolve(spec: &SweepSpec) -> Result<Plan, PlanError> {
        let (runs, convention) = if spec.arm_specs.is_empty() {
            resolve_runs(spec, None)?
        } else {
            let mut per_arm = Vec::new();
            let mut convention = None;
            for (name, s) in &spec.arm_specs {
                let (r, c) = resolve_runs(s, Some(name)).map_err(|e| PlanError::Arm {
                    arm: name.clone(),
                    source: Box::new(e),
                })?;
                convention.get_or_insert(c);
                per_arm.push(r.into_iter());
            }
            let mut runs = Vec::new();
            loop {
                let before = runs.len();
                for it in per_arm.iter_mut() {
                    runs.extend(it.next());
                }
                if runs.len() == before {
                    break;
                }
            }
            (runs, convention.unwrap_or(FlopConvention::Standard))
        };
        let mut names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(PlanError::Invalid(format!(
                "two runs would be named {:?}; make budgets distinct",
                w[0]
            )));
        }
        let fingerprint = fingerprint(&runs);
        Ok(Plan {
            format: PLAN_FORMAT,
            name: spec.name.clone(),
            convention,
            fingerprint,
            runs,
            eval: spec.eval.clone(),
        })
    }

    /// The arms of the plan, in order of first appearance (empty without arms).
    pub fn arms(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.runs {
            if let Some(a) = &r.arm {
                if !out.contains(a) {
                    out.push(a.clone());
                }
            }
        }
        out
    }

    /// The run called `name`.
    pub fn get(&self, name: &str) -> Option<&PlannedRun> {
        self.runs.iter().find(|r| r.name == name)
    }
}

/// Why a spec resolves to no plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A size, budget or rule gives no valid run (the message names the field or point).
    #[error("{0}")]
    Invalid(String),
    /// The training configuration of a point is invalid.
    #[error("{point}")]
    Config {
        /// The point (e.g. `d64l2-m20`).
        point: String,
        /// Cause, naming the setting.
        #[source]
        source: crate::train::config::TrainConfigError,
    },
    /// An arm's runs cannot be planned.
    #[error("arm {arm:?}")]
    Arm {
        /// The arm's name.
        arm: String,
        /// Cause.
        #[source]
        source: Box<PlanError>,
    },
}

impl From<String> for PlanError {
    fn from(msg: String) -> Self {
        PlanError::Invalid(msg)
    }
}

/// The runs of one spec (or one arm's spec) and the convention of its budgets.
fn resolve_runs(
    spec: &SweepSpec,
    arm: Option<&str>,
) -> Result<(Vec<PlannedRun>, FlopConvention), PlanError> {
    let sizes = spec.sizes()?;
    let mut points: Vec<Point> = Vec::new();
    let convention = match &spec.budget {
        Budget::Multiplier { multipliers } => {
            for &m in multipliers {
                for &s in &sizes {
                    let n = ParamCounts::of(&spec.model_config(s)).n as f64;
                    points.push(Point {
                        prefix: format!("m{}", short(m)),
                        size: s,
                        tokens: m * n,
                        budget: None,
                        multiplier: Some(m),
                    });
                }
            }
            FlopConvention::Standard
        }
        Budget::Isoflop {
            flops,
            convention,
            min_tokens_per_param,
            max_tokens_per_param,
        } => {
            for &c in flops {
                let before = points.len();
                for &s in &sizes {
                    let mc = spec.model_config(s);
                    let n = ParamCounts::of(&mc).n as f64;
                    let tokens = c / FlopsPerToken::of(&mc).get(*convention);
                    let tpp = tokens / n;
                    if min_tokens_per_param.is_some_and(|m| tpp < m)
                        || max_tokens_per_param.is_some_and(|m| tpp > m)
                    {
                        continue;
                    }
                    points.push(Point {
                        prefix: format!("c{}", short(c)),
                        size: s,
                        tokens,
                        budget: Some(c),
                        multiplier: None,
                    });
                }
                if points.len() == before {
                    return Err(PlanError::Invalid(format!(
                        "budget C = {c:e}: every size falls outside min/max_tokens_per_param"
                    )));
                }
            }
            *convention
        }
    };
    let combos = Combo::all(spec);
    let mut runs = Vec::new();
    for p in &points {
        let point = format!("{}-d{}l{}", p.prefix, p.size.d_model, p.size.n_layers);
        for combo in &combos {
            for r in 0..spec.seeds_per_point {
                let mut run = resolve_run(spec, &point, r, p, combo)?;
                if let Some(a) = arm {
                    run.name = format!("{a}-{}", run.name);
                    run.arm = Some(a.to_string());
                }
                runs.push(run);
            }
        }
    }
    Ok((runs, convention))
}

/// sha256 over the canonical JSON of the runs.
pub fn fingerprint(runs: &[PlannedRun]) -> String {
    let json = serde_json::to_string(runs).unwrap_or_default();
    format!("{:x}", Sha256::digest(json.as_bytes()))
}

/// One (budget, size) point before seeds.
struct Point {
    /// `c2e11` or `m20`.
    prefix: String,
    size: Size,
    /// Target training tokens.
    tokens: f64,
    budget: Option<f64>,
    multiplier: Option<f64>,
}

fn resolve_run(
    spec: &SweepSpec,
    point: &str,
    replicate: u32,
    p: &Point,
    combo: &Combo,
) -> Result<PlannedRun, PlanError> {
    let (s, target_tokens, budget, multiplier) = (p.size, p.tokens, p.budget, p.multiplier);
    let t = &spec.train;
    let model = spec.model_config(s);
    let params = ParamCounts::of(&model);
    let ctx = |e: String| PlanError::Invalid(format!("{point}: {e}"));
    let micro = t.micro_batch;
    let batch_size = match combo.batch_size {
        // Checked against micro_batch with the spec.
        Some(b) => b,
        None => {
            let raw_batch = t
                .batch_size
                .value("train.batch_size", s.d_model, params.n)
                .map_err(ctx)?;
            // Round the batch to a positive multiple of the micro-batch (or to a positive integer).
            let unit = micro.unwrap_or(1) as f64;
            ((raw_batch / unit).round().max(1.0) * unit) as usize
        }
    };
    let micro_batch = micro.unwrap_or(batch_size);
    let lr = match combo.lr {
        Some((x, false)) => x,
        Some((f, true)) => f * t.lr.value("train.lr", s.d_model, params.n).map_err(ctx)?,
        None => t.lr.value("train.lr", s.d_model, params.n).map_err(ctx)?,
    };
    let search = spec.search.as_ref().map(|_| SearchPoint {
        lr_factor: combo.lr.and_then(|(f, factor)| factor.then_some(f)),
        lr: combo.lr.map(|_| lr),
        batch_size: combo.batch_size,
        beta2: combo.beta2,
    });
    let mut cfg = TrainConfig {
        model,
        batch_size,
        micro_batch,
        steps: 1,
        lr,
        warmup_steps: 0,
        optimizer: OptimizerConfig {
            beta2: combo.beta2.unwrap_or(t.optimizer.beta2),
            ..t.optimizer
        },
        seed: derive_seed(spec.seed, point, replicate),
        data: spec.data.clone(),
        eval_every: t.eval_every,
        eval_sequences: t.eval_sequences,
        log_every: t.log_every,
    };
    cfg.steps = cfg.steps_for_tokens(target_tokens);
    cfg.warmup_steps = t.warmup.steps(cfg.steps, cfg.tokens_per_step(), params.n);
    cfg.validate().map_err(|source| PlanError::Config {
        point: point.to_string(),
        source,
    })?;
    Ok(PlannedRun {
        name: format!("{point}{}-s{replicate}", combo.suffix()),
        point: point.to_string(),
        replicate,
        arm: None,
        search,
        budget,
        multiplier,
        params,
        flops_per_token: FlopsPerToken::of(&model),
        tokens: cfg.steps * cfg.tokens_per_step(),
        config: cfg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec(budget: &str, extra: &str) -> SweepSpec {
        let text = format!(
            "name = \"t\"\ndata = {{ kind = \"synthetic\" }}\nseeds_per_point = 2\n{extra}\n\
             [model]\nseq_len = 32\nvocab_size = 256\nsizes = [{{ d_model = 64, n_layers = 1 }}, \
             {{ d_model = 128, n_layers = 2 }}]\n[budget]\n{budget}\n"
        );
        SweepSpec::from_str_at(&text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn isoflop_runs_spend_the_budget() {
        let s = spec("style = \"isoflop\"\nflops = [1e10, 4e10]", "");
        let p = Plan::resolve(&s).unwrap();
        assert_eq!(p.runs.len(), 2 * 2 * 2);
        assert_eq!(p.runs[0].name, "c1e10-d64l1-s0");
        assert_eq!(p.runs[3].name, "c1e10-d128l2-s1");
        for r in &p.runs {
            let c = r.budget.unwrap();
            let spent = r.flops(FlopConvention::Standard);
            // Rounded up to whole steps: at most one step over.
            let step = r.flops_per_token.standard * r.config.tokens_per_step() as f64;
            assert!(spent >= c && spent < c + step, "{}: {spent} vs {c}", r.name);
            assert_eq!(r.tokens, r.config.steps * r.config.tokens_per_step());
        }
        // Replicates differ in seed only; seeds are stable functions of the spec.
        assert_ne!(p.runs[0].config.seed, p.runs[1].config.seed);
        assert_eq!(p.runs[0].config.seed, derive_seed(0, "c1e10-d64l1", 0));
        assert_eq!(Plan::resolve(&s).unwrap().fingerprint, p.fingerprint);
    }

    #[test]
    fn rules_resolve_per_size() {
        let s = spec(
            "style = \"multiplier\"\nmultipliers = [20]",
            "[train]\nbatch_size = { table = { 64 = 4, 128 = 8 } }\nmicro_batch = 4\n\
             lr = { power_law = { a = 1.0, b = -0.5 } }\nwarmup = { tokens_per_param = 1 }",
        );
        let p = Plan::resolve(&s).unwrap();
        let (a, b) = (&p.runs[0], &p.runs[2]);
        assert_eq!((a.config.batch_size, b.config.batch_size), (4, 8));
        assert!((a.config.lr * (a.params.n as f64).sqrt() - 1.0).abs() < 1e-12);
        assert_eq!(
            a.config.warmup_steps,
            (a.params.n as f64 / (4.0 * 32.0)).ceil() as u64
        );
        assert!(a.tokens as f64 >= 20.0 * a.params.n as f64);
        assert_ne!(
            Plan::resolve(&spec("style = \"multiplier\"\nmultipliers = [10]", ""))
                .unwrap()
                .fingerprint,
            p.fingerprint
        );
    }

    #[test]
    fn arms_pair_up_and_differ_only_where_set() {
        let plain = spec("style = \"isoflop\"\nflops = [1e10]", "");
        let s = spec(
            "style = \"isoflop\"\nflops = [1e10]",
            "[[arms]]\nname = \"wd0.1\"\n[[arms]]\nname = \"wd0\"\nweight_decay = 0.0",
        );
        let (p0, p) = (Plan::resolve(&plain).unwrap(), Plan::resolve(&s).unwrap());
        assert_eq!(p.runs.len(), 2 * p0.runs.len());
        assert_eq!(p.arms(), vec!["wd0.1".to_string(), "wd0".into()]);
        assert!(p0.arms().is_empty() && p0.runs.iter().all(|r| r.arm.is_none()));
        assert_eq!(p.runs[0].name, "wd0.1-c1e10-d64l1-s0");
        assert_eq!(p.runs[1].name, "wd0-c1e10-d64l1-s0");
        for pair in p.runs.chunks(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert_eq!(a.point, b.point);
            assert_eq!(
                a.config.seed, b.config.seed,
                "paired: same seed and data order"
            );
            assert_eq!(
                (
                    a.config.optimizer.weight_decay,
                    b.config.optimizer.weight_decay
                ),
                (0.1, 0.0)
            );
            let mut bc = b.config.clone();
            bc.optimizer.weight_decay = a.config.optimizer.weight_decay;
            assert_eq!(a.config, bc, "only the arm's field differs");
        }
        // The arm-less plan is unchanged by the feature: its JSON has no `arm` key.
        assert!(!serde_json::to_string(&p0.runs).unwrap().contains("\"arm\""));
    }

    #[test]
    fn searches_cross_the_grid_in_both_budget_styles() {
        let search =
            "[search]\nlr = { factors = [0.5, 2] }\nbatch_size = [4, 8]\nbeta2 = [0.95, 0.99]";
        let train = "[train]\nmicro_batch = 4\nbatch_size = 16\nlr = { power_law = { a = 1.0, b = -0.5 } }\n";
        for budget in [
            "style = \"isoflop\"\nflops = [1e10, 4e10]",
            "style = \"multiplier\"\nmultipliers = [5, 20]",
        ] {
            let plain = Plan::resolve(&spec(budget, train)).unwrap();
            let p = Plan::resolve(&spec(budget, &format!("{train}{search}"))).unwrap();
            // 2 budgets × 2 sizes × 2 seeds, each × 2 lr × 2 batch × 2 β2.
            assert_eq!(plain.runs.len(), 8);
            assert_eq!(p.runs.len(), 8 * 8);
            let first = &p.runs[0];
            let prefix = &plain.runs[0].point;
            assert_eq!(first.name, format!("{prefix}-lr0.5x-b4-b2_0.95-s0"));
            assert_eq!(p.runs[1].name, format!("{prefix}-lr0.5x-b4-b2_0.95-s1"));
            assert_eq!(p.runs[2].name, format!("{prefix}-lr0.5x-b4-b2_0.99-s0"));
            assert_eq!(p.runs[15].name, format!("{prefix}-lr2x-b8-b2_0.99-s1"));
            for r in &p.runs {
                let base = plain
                    .runs
                    .iter()
                    .find(|b| b.point == r.point && b.replicate == r.replicate)
                    .unwrap();
                let s = r.search.as_ref().unwrap();
                let f = s.lr_factor.unwrap();
                assert!((r.config.lr - f * base.config.lr).abs() <= 1e-15 * base.config.lr);
                assert_eq!(s.lr, Some(r.config.lr));
                assert_eq!(Some(r.config.batch_size), s.batch_size);
                assert_eq!(Some(r.config.optimizer.beta2), s.beta2);
                assert_eq!(r.config.micro_batch, 4);
                // Same point, same seed: a search's runs share initialisation and data order.
                assert_eq!(r.config.seed, base.config.seed);
                assert_eq!((r.budget, r.multiplier), (base.budget, base.multiplier));
                // The batch changes the steps, not the tokens: the same target, rounded up to whole steps.
                let step = r.config.tokens_per_step();
                let target = base.tokens as f64 - base.config.tokens_per_step() as f64;
                assert!(
                    r.tokens as f64 >= target
                        && r.tokens as f64 <= base.tokens as f64 + step as f64
                );
                assert_eq!(r.tokens, r.config.steps * step);
            }
            let mut names: Vec<&str> = p.runs.iter().map(|r| r.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), p.runs.len());
            // Without a search the plan (and so its fingerprint and run names) is what it always was.
            assert!(plain.runs.iter().all(|r| r.search.is_none()));
            assert!(!serde_json::to_string(&plain.runs)
                .unwrap()
                .contains("search"));
        }
        // Absolute learning rates: no factor, the same lr at every size.
        let p = Plan::resolve(&spec(
            "style = \"multiplier\"\nmultipliers = [5]",
            &format!("{train}[search]\nlr = [1e-3, 2.5e-3]"),
        ))
        .unwrap();
        assert_eq!(p.runs.len(), 2 * 2 * 2);
        assert!(p.runs[0].name.ends_with("-lr1e-3-s0"), "{}", p.runs[0].name);
        assert!(
            p.runs[2].name.ends_with("-lr2.5e-3-s0"),
            "{}",
            p.runs[2].name
        );
        for r in &p.runs {
            let s = r.search.as_ref().unwrap();
            assert_eq!((s.lr_factor, s.batch_size, s.beta2), (None, None, None));
            assert!([1e-3, 2.5e-3].contains(&r.config.lr));
            assert_eq!(r.config.batch_size, 16);
        }
    }

    #[test]
    fn searches_combine_with_arms() {
        let s = spec(
            "style = \"isoflop\"\nflops = [1e10]",
            "[train]\nlr = 2e-3\n[search]\nlr = { factors = [1, 2] }\n\
             [[arms]]\nname = \"wd0.1\"\n[[arms]]\nname = \"wd0\"\nweight_decay = 0.0",
        );
        let p = Plan::resolve(&s).unwrap();
        // 2 sizes × 2 factors × 2 seeds in each of 2 arms, interleaved run by run.
        assert_eq!(p.runs.len(), 16);
        assert_eq!(p.runs[0].name, "wd0.1-c1e10-d64l1-lr1x-s0");
        assert_eq!(p.runs[1].name, "wd0-c1e10-d64l1-lr1x-s0");
        assert_eq!(p.runs[5].name, "wd0-c1e10-d64l1-lr2x-s0");
        for pair in p.runs.chunks(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert_eq!(
                (a.arm.as_deref(), b.arm.as_deref()),
                (Some("wd0.1"), Some("wd0"))
            );
            assert_eq!(
                (&a.point, a.config.seed, &a.search),
                (&b.point, b.config.seed, &b.search)
            );
            assert_eq!(
                a.config.lr,
                a.search.as_ref().unwrap().lr_factor.unwrap() * 2e-3
            );
            assert_eq!(
                (
                    a.config.optimizer.weight_decay,
                    b.config.optimizer.weight_decay
                ),
                (0.1, 0.0)
            );
        }
    }

    #[test]
    fn an_arm_with_a_bad_optimizer_setting_keeps_the_cause() {
        let s = spec(
            "style = \"multiplier\"\nmultipliers = [10]",
            "[[arms]]\nname = \"base\"\n[[arms]]\nname = \"bad\"\neps = -1.0\n",
        );
        let e = Plan::resolve(&s).unwrap_err();
        let PlanError::Arm { arm, source } = &e else {
            panic!("{e}")
        };
        assert_eq!(arm, "bad");
        assert!(matches!(**source, PlanError::Config { .. }), "{source}");
        // The whole chain, as the command line prints it: arm, point, setting.
        let chain = format!("{:#}", anyhow::Error::new(e));
        assert!(
            chain.starts_with("arm \"bad\": ")
                && chain.contains("d64l1")
                && chain.ends_with("--eps must be positive, got -1"),
            "{chain}"
        );
    }

    #[test]
    fn min_tokens_per_param_drops_points() {
        let s = spec(
            "style = \"isoflop\"\nflops = [1e11]\nmin_tokens_per_param = 0.5",
            "",
        );
        let p = Plan::resolve(&s).unwrap();
        assert_eq!(p.runs.len(), 2);
        assert!(p.runs.iter().all(|r| r.config.model.d_model == 64));
        let s = spec(
            "style = \"isoflop\"\nflops = [1e10]\nmin_tokens_per_param = 1e9",
            "",
        );
        assert!(Plan::resolve(&s)
            .unwrap_err()
            .to_string()
            .contains("C = 1e10"));
    }
}
