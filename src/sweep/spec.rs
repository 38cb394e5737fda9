//! The sweep specification (a TOML file): model sizes, token budgets, optimizer rules, seeds and data.
//!
//! See the README section "Scaling sweeps" for annotated examples.

use super::rules::{Rule, Warmup};
use crate::model::config::{DEFAULT_SEQ_LEN, DEFAULT_VOCAB, HEAD_DIM};
use crate::model::FlopConvention;
use crate::train::{DataSpec, OptimizerConfig, TrainConfig};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::{Path, PathBuf};

/// A spec that cannot be read or makes no sense; always names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file cannot be read.
    #[error("sweep spec {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML of a spec's shape (the cause names the line and the field).
    #[error("sweep spec {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// An arm's resolved spec is not of a spec's shape (the cause names the field).
    #[error("sweep spec {path}: arm {arm:?}")]
    ArmParse {
        /// The file.
        path: PathBuf,
        /// The arm's name.
        arm: String,
        /// Cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A field is missing, mistyped or out of range.
    #[error("sweep spec {path}: {msg}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        msg: String,
    },
}

/// A whole sweep: every field of the TOML file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Short name of the sweep (used in job names).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Training data of every run (required, so that it is always explicit).
    pub data: DataSpec,
    /// Base seed; each run's seed is derived from it and the run's point (see [`super::plan::derive_seed`]).
    #[serde(default)]
    pub seed: u64,
    /// Runs per point with different derived seeds.
    #[serde(default = "one")]
    pub seeds_per_point: u32,
    /// Model sizes.
    pub model: ModelGrid,
    /// Token budgets.
    pub budget: Budget,
    /// Optimizer, batch and schedule settings, fixed or as rules of the model size.
    #[serde(default)]
    pub train: TrainRules,
    /// Hyperparameter searches crossed with the grid (`[search]`; none: one run per point and seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Search>,
    /// Arms: variants of the sweep that share its grid, seeds and data order and differ in `[train]` or
    /// `[model]` fields (empty: one arm, the spec itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arms: Vec<Arm>,
    /// `[eval]`: downstream tasks every finished run is scored on (`isoflop eval --task`).
    #[serde(default, skip_serializing_if = "EvalSpec::is_empty")]
    pub eval: EvalSpec,
    /// The resolved spec of each arm (the base spec with the arm's fields set), filled by
    /// [`SweepSpec::from_str_at`]; empty without arms.
    #[serde(skip)]
    pub arm_specs: Vec<(String, SweepSpec)>,
}

/// `[eval]` of a sweep spec: `tasks = ["../tasks/kjv-verse.jsonl", ...]` (paths relative to the spec
/// file's directory), optionally `limit` (the first N items of each task) and `micro_batch`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// Task files; each gives the `err_<name>` column of `runs.csv` (name: file name without `.jsonl`).
    #[serde(default)]
    pub tasks: Vec<PathBuf>,
    /// Score only the first N items of each task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Sequences per forward pass (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_batch: Option<usize>,
}

impl EvalSpec {
    /// No tasks.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The task names (file names without `.jsonl`), in order.
    pub fn names(&self) -> Vec<String> {
        self.tasks.iter().map(|p| task_name(p)).collect()
    }
}

/// A task file's name: its file name without `.jsonl` (as `isoflop eval --task` names it).
pub fn task_name(p: &Path) -> String {
    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("task");
    n.strip_suffix(".jsonl").unwrap_or(n).to_string()
}

/// One `[[arms]]` table: a name and the `[train]` / `[model]` fields it sets, e.g.
/// `{ name = "wd0", weight_decay = 0.0 }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    /// Name of the arm; part of its run names and the `arm` column of the exports.
    pub name: String,
    /// The fields it sets, each a field of `[train]` or of `[model]`.
    #[serde(flatten)]
    pub set: toml::Table,
}

/// Fields of `[train]` an arm may set.
pub const ARM_TRAIN_KEYS: &[&str] = &[
    "batch_size",
    "micro_batch",
    "lr",
    "warmup",
    "final_lr_frac",
    "beta1",
    "beta2",
    "eps",
    "weight_decay",
    "decay_mode",
    "clip",
    "eval_every",
    "eval_sequences",
    "log_every",
];

/// Fields of `[model]` an arm may set.
pub const ARM_MODEL_KEYS: &[&str] = &[
    "head_dim",
    "seq_len",
    "vocab_size",
    "sizes",
    "widths",
    "depths",
    "aspect_ratio",
];

fn one() -> u32 {
    1
}

/// The `[search]` table: values of the learning rate, batch size and AdamW β2 crossed with every
/// (budget, size, seed) point of the grid (and every arm), e.g.
/// `lr = { factors = [0.5, 1, 2] }`, `batch_size = [32, 64]`, `beta2 = [0.95, 0.99]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// Learning rates: factors of the `[train]` rule's lr at each size, or absolute values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<LrSearch>,
    /// Global batch sizes in sequences (each a multiple of `train.micro_batch`); they replace the
    /// `[train]` batch rule. In an IsoFLOP sweep the tokens stay those of the budget and the steps change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<Vec<usize>>,
    /// AdamW β2 values (each in (0, 1)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta2: Option<Vec<f32>>,
}

/// The learning rates of a search: `lr = { factors = [...] }` (× the `[train]` rule's lr at each size)
/// or `lr = [absolute, ...]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LrSearch {
    /// Absolute peak learning rates, the same at every size.
    Absolute(Vec<f64>),
    /// Multipliers of the `[train]` rule's learning rate.
    Factors {
        /// The multipliers.
        factors: Vec<f64>,
    },
}

impl LrSearch {
    /// The listed values (factors or absolute rates).
    pub fn values(&self) -> &[f64] {
        match self {
            LrSearch::Absolute(v) | LrSearch::Factors { factors: v } => v,
        }
    }
}

// By hand rather than `untagged`, so that a wrong shape gets an error naming `search.lr`.
impl<'de> Deserialize<'de> for LrSearch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let shape = "use `lr = { factors = [...] }` (× the [train] lr) or `lr = [absolute, ...]`";
        let nums = |field: &str, v: &toml::Value| -> Result<Vec<f64>, D::Error> {
            let a = v
                .as_array()
                .ok_or_else(|| D::Error::custom(format!("{field} must be a list; {shape}")))?;
            a.iter()
                .map(|x| {
                    x.as_float()
                        .or_else(|| x.as_integer().map(|i| i as f64))
                        .ok_or_else(|| D::Error::custom(format!("{field} holds {x}, not a number")))
                })
                .collect()
        };
        let v = toml::Value::deserialize(d)?;
        match &v {
            toml::Value::Array(_) => nums("search.lr", &v).map(LrSearch::Absolute),
            toml::Value::Table(t) => {
                if let Some(k) = t.keys().find(|k| k.as_str() != "factors") {
                    return Err(D::Error::custom(format!(
                        "search.lr: unknown field `{k}`; {shape}"
                    )));
                }
                let f = t
                    .get("factors")
                    .ok_or_else(|| D::Error::custom(format!("search.lr: {shape}")))?;
                Ok(LrSearch::Factors {
                    factors: nums("search.lr.factors", f)?,
                })
            }
            _ => Err(D::Error::custom(format!("search.lr: {shape}"))),
        }
    }
}

impl Search {
    /// Check the lists: non-empty, in range, no repeats, batches whole multiples of `micro_batch`.
    pub fn check(&self, micro_batch: Option<usize>) -> Result<(), String> {
        if self.lr.is_none() && self.batch_size.is_none() && self.beta2.is_none() {
            return Err("[search] sets nothing; give lr, batch_size and/or beta2".into());
        }
        fn distinct<T: PartialEq + std::fmt::Display>(field: &str, v: &[T]) -> Result<(), String> {
            if v.is_empty() {
                return Err(format!("{field} is empty"));
            }
            for (i, x) in v.iter().enumerate() {
                if v[..i].contains(x) {
                    return Err(format!("{field} lists {x} twice"));
                }
            }
            Ok(())
        }
        if let Some(lr) = &self.lr {
            let field = match lr {
                LrSearch::Absolute(_) => "search.lr",
                LrSearch::Factors { .. } => "search.lr.factors",
            };
            distinct(field, lr.values())?;
            if let Some(x) = lr.values().iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                return Err(format!("{field} must be positive, got {x}"));
            }
        }
        if let Some(b) = &self.batch_size {
            distinct("search.batch_size", b)?;
            let micro = micro_batch.unwrap_or(1);
            for &x in b {
                if x == 0 || x % micro != 0 {
                    let lo = (x / micro).max(1) * micro;
                    let hi = x.div_ceil(micro).max(1) * micro;
                    return Err(format!(
                        "search.batch_size = {x} is not a positive multiple of train.micro_batch = \
                         {micro}; use {lo} or {hi}"
                    ));
                }
            }
        }
        if let Some(b2) = &self.beta2 {
            distinct("search.beta2", b2)?;
            if let Some(x) = b2.iter().find(|x| !(**x > 0.0 && **x < 1.0)) {
                return Err(format!("search.beta2 must lie in (0, 1), got {x}"));
            }
        }
        Ok(())
    }
}

/// One model size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    /// Width D.
    pub d_model: usize,
    /// Depth L.
    pub n_layers: usize,
}

/// The model sizes of the sweep: an explicit list, a grid of widths × depths, or widths with a depth rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelGrid {
    /// Head dimension; the model contract fixes it at 64 (stated here so specs are self-describing).
    #[serde(default = "head_dim")]
    pub head_dim: usize,
    /// Context length T.
    #[serde(default = "seq_len")]
    pub seq_len: usize,
    /// Vocabulary size V.
    #[serde(default = "vocab")]
    pub vocab_size: usize,
    /// Explicit sizes.
    #[serde(default)]
    pub sizes: Option<Vec<Size>>,
    /// Widths (with `depths` or `aspect_ratio`).
    #[serde(default)]
    pub widths: Option<Vec<usize>>,
    /// Depths: every width is combined with every depth.
    #[serde(default)]
    pub depths: Option<Vec<usize>>,
    /// Fixed aspect ratio D/L: depth = max(1, round(width / aspect_ratio)).
    #[serde(default)]
    pub aspect_ratio: Option<f64>,
}

fn head_dim() -> usize {
    HEAD_DIM
}
fn seq_len() -> usize {
    DEFAULT_SEQ_LEN
}
fn vocab() -> usize {
    DEFAULT_VOCAB
}

/// How long each model trains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "style", rename_all = "lowercase", deny_unknown_fields)]
pub enum Budget {
    /// Tokens = multiplier × N for every size and multiplier (Chinchilla's 20; Gadre et al.'s 5–640).
    Multiplier {
        /// Tokens per parameter.
        multipliers: Vec<f64>,
    },
    /// IsoFLOP profiles: for each budget C, every size trains for C / flops_per_token tokens.
    Isoflop {
        /// FLOP budgets C.
        flops: Vec<f64>,
        /// FLOP convention that defines flops_per_token (default `standard`, i.e. C/(6N)).
        #[serde(default = "standard")]
        convention: FlopConvention,
        /// Drop (budget, size) points below this many tokens per parameter.
        #[serde(default)]
        min_tokens_per_param: Option<f64>,
        /// Drop (budget, size) points above this many tokens per parameter.
        #[serde(default)]
        max_tokens_per_param: Option<f64>,
    },
}

fn standard() -> FlopConvention {
    FlopConvention::Standard
}

/// Optimizer, batch and schedule settings of every run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainRules {
    /// Global batch in sequences: a number, a table keyed by d_model, or a power law of N.
    pub batch_size: Rule,
    /// Sequences per forward/backward pass (default: the whole batch).
    pub micro_batch: Option<usize>,
    /// Peak learning rate: a number, a table keyed by d_model, or a power law of N.
    pub lr: Rule,
    /// Warmup length.
    pub warmup: Warmup,
    /// `final_lr_frac`, `beta1`, `beta2`, `eps`, `weight_decay`, `decay_mode`, `clip`: the fields of a
    /// run's configuration, flattened into `[train]`.
    #[serde(flatten)]
    pub optimizer: OptimizerConfig,
    /// Evaluate every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Held-out sequences per evaluation.
    pub eval_sequences: usize,
    /// Plain log line every this many steps (in each run's train.log).
    pub log_every: u64,
}

impl Default for TrainRules {
    fn default() -> Self {
        let d = TrainConfig::default();
        TrainRules {
            batch_size: Rule::Fixed(d.batch_size as f64),
            micro_batch: None,
            lr: Rule::Fixed(d.lr),
            warmup: Warmup::Fraction(0.1),
            optimizer: d.optimizer,
            eval_every: 0,
            eval_sequences: d.eval_sequences,
            log_every: d.log_every,
        }
    }
}

impl SweepSpec {
    /// Read and check a spec file. Returns the spec and its exact text (saved in the sweep directory).
    pub fn from_file(path: &Path) -> Result<(Self, String), SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let spec = Self::from_str_at(&text, path)?;
        Ok((spec, text))
    }

    /// Parse and check spec text; `path` is only used in error messages.
    pub fn from_str_at(text: &str, path: &Path) -> Result<Self, SpecError> {
        let spec: SweepSpec = toml::from_str(text).map_err(|source| SpecError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        let mut spec = spec;
        spec.validate().map_err(|msg| SpecError::Invalid {
            path: path.to_path_buf(),
            msg,
        })?;
        spec.arm_specs = Self::resolve_arms(&spec.arms, text, path)?;
        Ok(spec)
    }

    /// The spec of every arm: the file's TOML with the arm's fields set in `[train]` or `[model]`, parsed
    /// and checked like a spec of its own. Errors name the arm and the field.
    fn resolve_arms(
        arms: &[Arm],
        text: &str,
        path: &Path,
    ) -> Result<Vec<(String, SweepSpec)>, SpecError> {
        let invalid = |msg: String| SpecError::Invalid {
            path: path.to_path_buf(),
            msg,
        };
        if arms.is_empty() {
            return Ok(vec![]);
        }
        let base: toml::Table = toml::from_str(text).map_err(|source| SpecError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        let mut out: Vec<(String, SweepSpec)> = Vec::new();
        for (i, arm) in arms.iter().enumerate() {
            let name = &arm.name;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._".contains(c))
            {
                return Err(invalid(format!(
                    "arms[{i}].name {name:?} must be non-empty and use only letters, digits, '.' and '_'"
                )));
            }
            if out.iter().any(|(n, _)| n == name) {
                return Err(invalid(format!(
                    "arms[{i}]: the name {name:?} is used twice"
                )));
            }
            let mut t = base.clone();
            t.remove("arms");
            for (k, v) in &arm.set {
                let section = if ARM_TRAIN_KEYS.contains(&k.as_str()) {
                    "train"
                } else if ARM_MODEL_KEYS.contains(&k.as_str()) {
                    "model"
                } else {
                    return Err(invalid(format!(
                        "arms[{i}] ({name:?}): unknown field `{k}`; an arm sets fields of [train] or [model]"
                    )));
                };
                let sec = t
                    .entry(section)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match sec.as_table_mut() {
                    Some(sec) => {
                        sec.insert(k.clone(), v.clone());
                    }
                    None => return Err(invalid(format!("[{section}] must be a table"))),
                }
            }
            let s: SweepSpec = t.try_into().map_err(|source| SpecError::ArmParse {
                path: path.to_path_buf(),
                arm: name.clone(),
                source: Box::new(source),
            })?;
            s.validate()
                .map_err(|msg| invalid(format!("arm {name:?}: {msg}")))?;
            out.push((name.clone(), s));
        }
        Ok(out)
    }

    /// Check the fields that the TOML types alone do not constrain.
    pub fn validate(&self) -> Result<(), String> {
        let names = self.eval.names();
        for (i, n) in names.iter().enumerate() {
            if n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(format!(
                    "eval.tasks[{i}]: the task name {n:?} (its file name) must use only letters, digits, '.', '_' and '-'"
                ));
            }
            if names[..i].contains(n) {
                return Err(format!(
                    "eval.tasks[{i}]: two tasks are named {n:?} (their err_{n} columns would clash)"
                ));
            }
        }
        if self.eval.limit == Some(0) || self.eval.micro_batch == Some(0) {
            return Err("eval.limit and eval.micro_batch must be at least 1".into());
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(format!(
                "name {:?} must be non-empty and use only letters, digits, '.', '_' and '-'",
                self.name
            ));
        }
        if self.seeds_per_point == 0 {
            return Err("seeds_per_point must be at least 1".into());
        }
        let m = &self.model;
        if m.head_dim != HEAD_DIM {
            return Err(format!(
                "model.head_dim must be {HEAD_DIM} (the model contract), got {}",
                m.head_dim
            ));
        }
        self.sizes()?;
        match &self.budget {
            Budget::Multiplier { multipliers } => {
                if multipliers.is_empty() {
                    return Err("budget.multipliers is empty".into());
                }
                if let Some(x) = multipliers.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                    return Err(format!("budget.multipliers must be positive, got {x}"));
                }
            }
            Budget::Isoflop {
                flops,
                min_tokens_per_param,
                max_tokens_per_param,
                ..
            } => {
                if flops.is_empty() {
                    return Err("budget.flops is empty".into());
                }
                if let Some(x) = flops.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                    return Err(format!("budget.flops must be positive, got {x}"));
                }
                for (k, v) in [
                    ("min_tokens_per_param", min_tokens_per_param),
                    ("max_tokens_per_param", max_tokens_per_param),
                ] {
                    if let Some(v) = v {
                        if !(v.is_finite() && *v > 0.0) {
                            return Err(format!("budget.{k} must be positive, got {v}"));
                        }
                    }
                }
            }
        }
        let t = &self.train;
        if t.micro_batch == Some(0) {
            return Err("train.micro_batch must be at least 1".into());
        }
        if t.eval_sequences == 0 {
            return Err("train.eval_sequences must be at least 1".into());
        }
        t.lr.check("train.lr")?;
        t.batch_size.check("train.batch_size")?;
        // An explicit batch is taken as meant: it must be a whole number of micro-batches. Rules (a table
        // or a power law) are rounded to a multiple of micro_batch, and the plan shows the value used.
        if let Rule::Fixed(b) = t.batch_size {
            let micro = t.micro_batch.unwrap_or(1) as f64;
            if b.fract() != 0.0 || (b / micro).fract() != 0.0 {
                let lo = ((b / micro).floor() * micro).max(micro);
                let hi = (b / micro).ceil() * micro;
                return Err(format!(
                    "train.batch_size = {b} is not a whole multiple of train.micro_batch = {micro}; \
                     use {lo} or {hi} (only table and power-law batch rules are rounded)"
                ));
            }
        }
        if let DataSpec::Shards { dir, eval_dir } = &self.data {
            for (field, d) in [
                ("data.dir", Some(dir)),
                ("data.eval_dir", eval_dir.as_ref()),
            ] {
                if let Some(d) = d {
                    if !d.is_dir() {
                        return Err(format!(
                            "{field} = {:?} is not a directory (shards are read from it when the runs start)",
                            d.display().to_string()
                        ));
                    }
                }
            }
        }
        t.warmup.check()?;
        if let Some(search) = &self.search {
            search.check(t.micro_batch)?;
        }
        Ok(())
    }

    /// The model sizes, in spec order, without duplicates; each checked against the model contract.
    pub fn sizes(&self) -> Result<Vec<Size>, String> {
        let m = &self.model;
        let sizes: Vec<Size> = match (&m.sizes, &m.widths, &m.depths, m.aspect_ratio) {
            (Some(s), None, None, None) => s.clone(),
            (None, Some(w), Some(d), None) => w
                .iter()
                .flat_map(|&d_model| d.iter().map(move |&n_layers| Size { d_model, n_layers }))
                .collect(),
            (None, Some(w), None, Some(r)) => {
                if !(r.is_finite() && r > 0.0) {
                    return Err(format!("model.aspect_ratio must be positive, got {r}"));
                }
                w.iter()
                    .map(|&d_model| Size {
                        d_model,
                        n_layers: ((d_model as f64 / r).round() as usize).max(1),
                    })
                    .collect()
            }
            _ => {
                return Err(
                    "model: give exactly one of `sizes = [{ d_model, n_layers }, ...]`, \
                     `widths` with `depths`, or `widths` with `aspect_ratio`"
                        .into(),
                )
            }
        };
        if sizes.is_empty() {
            return Err("model: no sizes".into());
        }
        let mut seen = Vec::new();
        for s in &sizes {
            let c = self.model_config(*s);
            c.validate().map_err(|e| {
                format!(
                    "model size d_model = {}, n_layers = {}: {e}",
                    s.d_model, s.n_layers
                )
            })?;
            if seen.contains(s) {
                return Err(format!(
                    "model size d_model = {}, n_layers = {} is listed twice",
                    s.d_model, s.n_layers
                ));
            }
            seen.push(*s);
        }
        Ok(sizes)
    }

    /// The full model shape of one size.
    pub fn model_config(&self, s: Size) -> crate::model::ModelConfig {
        crate::model::ModelConfig {
            d_model: s.d_model,
            n_layers: s.n_layers,
            seq_len: self.model.seq_len,
            vocab_size: self.model.vocab_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "t"
data = { kind = "synthetic" }
[model]
seq_len = 32
vocab_size = 256
widths = [64, 128]
depths = [1, 2]
[budget]
style = "multiplier"
multipliers = [1, 2]
"#;

    fn parse(text: &str) -> Result<SweepSpec, String> {
        // The whole chain, as the command line prints it.
        SweepSpec::from_str_at(text, Path::new("s.toml"))
            .map_err(|e| format!("{:#}", anyhow::Error::new(e)))
    }

    #[test]
    fn eval_tasks_are_named_by_file_and_checked() {
        let s = parse(&format!(
            "{BASE}\n[eval]\ntasks = [\"../tasks/a.jsonl\", \"b.jsonl\"]\nlimit = 5\n"
        ))
        .unwrap();
        assert_eq!(s.eval.names(), ["a", "b"]);
        assert_eq!(s.eval.limit, Some(5));
        let e = parse(&format!(
            "{BASE}\n[eval]\ntasks = [\"x/a.jsonl\", \"y/a.jsonl\"]\n"
        ))
        .unwrap_err();
        assert!(e.contains("two tasks are named \"a\""), "{e}");
        let e = parse(&format!("{BASE}\n[eval]\ntask = [\"a.jsonl\"]\n")).unwrap_err();
        assert!(e.contains("task"), "{e}");
        let e = parse(&format!(
            "{BASE}\n[eval]\ntasks = [\"a.jsonl\"]\nlimit = 0\n"
        ))
        .unwrap_err();
        assert!(e.contains("eval.limit"), "{e}");
    }

    #[test]
    fn grid_and_defaults() {
        let s = parse(BASE).unwrap();
        assert_eq!(s.sizes().unwrap().len(), 4);
        assert_eq!(s.seeds_per_point, 1);
        assert_eq!(s.train.lr, Rule::Fixed(3e-3));
        assert_eq!(s.data, DataSpec::Synthetic);
    }

    #[test]
    fn aspect_ratio_sets_depth() {
        let t = BASE.replace("depths = [1, 2]", "aspect_ratio = 64");
        let s = parse(&t).unwrap();
        let d: Vec<usize> = s.sizes().unwrap().iter().map(|s| s.n_layers).collect();
        assert_eq!(d, vec![1, 2]);
    }

    #[test]
    fn errors_name_file_and_field() {
        let cases = [
            (
                BASE.replace("widths = [64, 128]", "widths = [64, 100]"),
                "d_model = 100",
            ),
            (BASE.replace("depths = [1, 2]", ""), "exactly one of"),
            (
                BASE.replace("multipliers = [1, 2]", "multipliers = []"),
                "multipliers",
            ),
            (
                BASE.replace("style = \"multiplier\"", "style = \"fixed\""),
                "fixed",
            ),
            (format!("{BASE}\n[train]\nlrr = 1\n"), "lrr"),
            (format!("{BASE}\n[train]\nbeta2 = \"high\"\n"), "`beta2`"),
            (BASE.replace("data = { kind = \"synthetic\" }", ""), "data"),
            (format!("{BASE}\n[train]\nlr = -1\n"), "train.lr"),
            (
                BASE.replace("[model]", "[model]\nhead_dim = 128"),
                "head_dim",
            ),
        ];
        for (text, needle) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.contains("s.toml") && e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn explicit_batches_missing_shards_and_no_eval_are_refused() {
        let e = parse(&format!(
            "{BASE}\n[train]\nbatch_size = 6\nmicro_batch = 4\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("train.batch_size = 6") && e.contains("use 4 or 8"),
            "{e}"
        );
        parse(&format!(
            "{BASE}\n[train]\nbatch_size = 8\nmicro_batch = 4\n"
        ))
        .unwrap();
        // A rule may round (the plan table shows the batch used).
        parse(&format!(
            "{BASE}\n[train]\nbatch_size = {{ table = {{ 64 = 6, 128 = 6 }} }}\nmicro_batch = 4\n"
        ))
        .unwrap();
        let e = parse(&format!("{BASE}\n[train]\neval_sequences = 0\n")).unwrap_err();
        assert!(e.contains("train.eval_sequences"), "{e}");
        let shards = |dir: &str| {
            BASE.replace(
                "data = { kind = \"synthetic\" }",
                &format!("data = {{ kind = \"shards\", dir = \"{dir}\" }}"),
            )
        };
        let e = parse(&shards("/nonexistent/shards")).unwrap_err();
        assert!(
            e.contains("data.dir") && e.contains("/nonexistent/shards"),
            "{e}"
        );
        let tmp = tempfile::tempdir().unwrap();
        parse(&shards(&tmp.path().display().to_string())).unwrap();
    }

    #[test]
    fn arms_set_train_and_model_fields() {
        let t = format!(
            "{BASE}\n[train]\nweight_decay = 0.1\n[[arms]]\nname = \"wd0.1\"\n[[arms]]\nname = \"wd0\"\n\
             weight_decay = 0.0\nseq_len = 64\n"
        );
        let s = parse(&t).unwrap();
        assert_eq!(s.arm_specs.len(), 2);
        let (a, b) = (&s.arm_specs[0], &s.arm_specs[1]);
        assert_eq!((a.0.as_str(), b.0.as_str()), ("wd0.1", "wd0"));
        assert_eq!(a.1.train.optimizer.weight_decay, 0.1);
        assert_eq!(b.1.train.optimizer.weight_decay, 0.0);
        assert_eq!((a.1.model.seq_len, b.1.model.seq_len), (32, 64));
        assert!(a.1.arms.is_empty() && a.1.arm_specs.is_empty());
        // Without arms nothing changes.
        assert!(parse(BASE).unwrap().arm_specs.is_empty());
        let bad = [
            (
                format!("{BASE}\n[[arms]]\nname = \"a\"\nlrr = 1\n"),
                "unknown field `lrr`",
            ),
            (
                format!("{BASE}\n[[arms]]\nname = \"a\"\n[[arms]]\nname = \"a\"\n"),
                "used twice",
            ),
            (
                format!("{BASE}\n[[arms]]\nname = \"a-b\"\n"),
                "arms[0].name",
            ),
            (
                format!("{BASE}\n[[arms]]\nname = \"a\"\nlr = -1\n"),
                "arm \"a\": train.lr",
            ),
            (
                format!("{BASE}\n[[arms]]\nname = \"a\"\nweight_decay = \"x\"\n"),
                "arm \"a\"",
            ),
        ];
        for (text, needle) in bad {
            let e = parse(&text).unwrap_err();
            assert!(e.contains("s.toml") && e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn search_parses_and_bad_searches_are_refused() {
        let s = parse(&format!(
            "{BASE}\n[search]\nlr = {{ factors = [0.5, 1, 2] }}\nbatch_size = [4, 8]\nbeta2 = [0.95, 0.99]\n"
        ))
        .unwrap();
        let search = s.search.unwrap();
        assert_eq!(
            search.lr,
            Some(LrSearch::Factors {
                factors: vec![0.5, 1.0, 2.0]
            })
        );
        assert_eq!(search.batch_size, Some(vec![4, 8]));
        assert_eq!(search.beta2, Some(vec![0.95, 0.99]));
        let s = parse(&format!("{BASE}\n[search]\nlr = [1e-3, 2e-3]\n")).unwrap();
        assert_eq!(
            s.search.unwrap().lr,
            Some(LrSearch::Absolute(vec![1e-3, 2e-3]))
        );
        assert!(parse(BASE).unwrap().search.is_none());
        let bad = [
            ("lrr = [1e-3]", "unknown field `lrr`"),
            ("lr = { factor = [1] }", "search.lr: unknown field `factor`"),
            ("lr = 1e-3", "search.lr"),
            ("lr = [1e-3, \"x\"]", "search.lr holds"),
            ("lr = []", "search.lr is empty"),
            ("lr = { factors = [] }", "search.lr.factors is empty"),
            (
                "lr = { factors = [1, -2] }",
                "search.lr.factors must be positive",
            ),
            (
                "lr = { factors = [1, 1] }",
                "search.lr.factors lists 1 twice",
            ),
            ("batch_size = []", "search.batch_size is empty"),
            ("beta2 = []", "search.beta2 is empty"),
            (
                "beta2 = [0.9, 1.0]",
                "search.beta2 must lie in (0, 1), got 1",
            ),
            ("", "[search] sets nothing"),
        ];
        for (body, needle) in bad {
            let e = parse(&format!("{BASE}\n[search]\n{body}\n")).unwrap_err();
            assert!(e.contains("s.toml") && e.contains(needle), "{needle}: {e}");
        }
        // Searched batches are taken as meant: whole multiples of micro_batch, checked in every arm.
        let micro = |mb: usize, arm: &str| {
            parse(&format!(
                "{BASE}\n[train]\nmicro_batch = {mb}\n[search]\nbatch_size = [8, 12]\n{arm}"
            ))
        };
        micro(4, "").unwrap();
        let e = micro(8, "").unwrap_err();
        assert!(
            e.contains("search.batch_size = 12")
                && e.contains("train.micro_batch = 8")
                && e.contains("use 8 or 16"),
            "{e}"
        );
        let e = micro(
            4,
            "[[arms]]\nname = \"a\"\n[[arms]]\nname = \"m8\"\nmicro_batch = 8\n",
        )
        .unwrap_err();
        assert!(e.contains("arm \"m8\": search.batch_size = 12"), "{e}");
    }

    #[test]
    fn isoflop_budget_parses() {
        let t = BASE.replace(
            "style = \"multiplier\"\nmultipliers = [1, 2]",
            "style = \"isoflop\"\nflops = [1e9, 3e9]\nconvention = \"exact\"",
        );
        let s = parse(&t).unwrap();
        match s.budget {
            Budget::Isoflop {
                flops, convention, ..
            } => {
                assert_eq!(flops, vec![1e9, 3e9]);
                assert_eq!(convention, FlopConvention::Exact);
            }
            _ => panic!("wrong style"),
        }
    }
}
