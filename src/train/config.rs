//! The resolved configuration of one training run: model, batch, optimizer, schedule, data, outputs.
//!
//! Read from a TOML or JSON file (`--config`), then overridden by command-line flags; the resolved
//! config is saved in the run directory so a run can be reproduced and resumed.

use crate::backend::{AdamWStep, DecayMode};
use crate::data::TokenizerKind;
use crate::model::{accounting, ModelConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the training tokens come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DataSpec {
    /// The public-domain sample bundled in `data/sample/`, tokenized on first use with `tokenizer`
    /// (`{ kind = "bundled" }`: SentencePiece; `{ kind = "bundled", tokenizer = "bytes" }`).
    Bundled {
        /// Tokenizer of the cached shards; omitted when written if SentencePiece.
        #[serde(default, skip_serializing_if = "TokenizerKind::is_default")]
        tokenizer: TokenizerKind,
    },
    /// The sample plus the public-domain books of `data/books/` (5.9 MB of text), tokenized on
    /// first use with `tokenizer` (`{ kind = "books", tokenizer = "bytes" }`).
    Books {
        /// Tokenizer of the cached shards (default SentencePiece).
        #[serde(default, skip_serializing_if = "TokenizerKind::is_default")]
        tokenizer: TokenizerKind,
    },
    /// Shards written by `isoflop data tokenize` in this directory.
    Shards {
        /// Directory of `.shard` files.
        dir: PathBuf,
        /// Directory of held-out shards; without it, a declared split of `dir` is held out.
        eval_dir: Option<PathBuf>,
    },
    /// A seeded synthetic Markov token stream (tests, throughput runs).
    Synthetic,
}

impl DataSpec {
    /// The tokenizer a bundled spec names (None for shards, whose headers say, and synthetic data).
    pub fn tokenizer(&self) -> Option<TokenizerKind> {
        match self {
            DataSpec::Bundled { tokenizer } | DataSpec::Books { tokenizer } => Some(*tokenizer),
            DataSpec::Shards { .. } | DataSpec::Synthetic => None,
        }
    }
}

/// The optimizer settings that every place takes as plain numbers: the run's configuration
/// ([`TrainConfig`]), the sweep spec's `[train]` table and `isoflop train`'s flags all flatten this one
/// struct, so their keys (`final_lr_frac`, `beta1`, ...) stay at the top level of run.json and of the spec.
/// The peak learning rate and the warmup are not here: a sweep gives them as rules of the model size.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// Final learning rate as a fraction of the peak (cosine decay).
    #[serde(deserialize_with = "named::final_lr_frac")]
    pub final_lr_frac: f64,
    /// AdamW β1.
    #[serde(deserialize_with = "named::beta1")]
    pub beta1: f32,
    /// AdamW β2.
    #[serde(deserialize_with = "named::beta2")]
    pub beta2: f32,
    /// AdamW ε.
    #[serde(deserialize_with = "named::eps")]
    pub eps: f32,
    /// Weight decay λ (matrices and embedding).
    #[serde(deserialize_with = "named::weight_decay")]
    pub weight_decay: f32,
    /// Coupled (×lr) or independent decay.
    #[serde(deserialize_with = "named::decay_mode")]
    pub decay_mode: DecayMode,
    /// Global gradient-norm clipping threshold (None = off).
    #[serde(deserialize_with = "named::clip")]
    pub clip: Option<f64>,
}

/// Deserializers of [`OptimizerConfig`]'s fields whose errors name the field. A flattened struct is read
/// from buffered values, so TOML can only point at the enclosing table, and serde's own message
/// ("invalid type: string, expected f32") would not say which key is wrong.
mod named {
    use super::DecayMode;
    use serde::{de::Error, Deserialize, Deserializer};

    macro_rules! named {
        ($($field:ident: $ty:ty),*) => {$(
            pub(super) fn $field<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                <$ty>::deserialize(d)
                    .map_err(|e| D::Error::custom(format_args!("`{}`: {e}", stringify!($field))))
            }
        )*};
    }

    named!(final_lr_frac: f64, beta1: f32, beta2: f32, eps: f32, weight_decay: f32,
           decay_mode: DecayMode, clip: Option<f64>);
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            final_lr_frac: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-20,
            weight_decay: 0.1,
            decay_mode: DecayMode::Coupled,
            clip: None,
        }
    }
}

impl OptimizerConfig {
    /// Check the ranges; messages name the `isoflop train` flag.
    pub fn validate(&self) -> Result<(), TrainConfigError> {
        if !(0.0..=1.0).contains(&self.final_lr_frac) {
            return Err(TrainConfigError::Range(format!(
                "--final-lr-frac must be in [0, 1], got {}",
                self.final_lr_frac
            )));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return Err(TrainConfigError::Range(
                "AdamW betas must be in [0, 1)".into(),
            ));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(TrainConfigError::Range(format!(
                "--eps must be positive, got {}",
                self.eps
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(TrainConfigError::Range(format!(
                "--weight-decay must be zero or positive, got {}",
                self.weight_decay
            )));
        }
        if let Some(c) = self.clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(TrainConfigError::Range(format!(
                    "--clip must be positive, got {c}"
                )));
            }
        }
        Ok(())
    }

    /// The clipping factor for a gradient of global norm `grad_norm`: `clip / grad_norm` above the
    /// threshold, else 1.
    pub fn clip_factor(&self, grad_norm: f64) -> f64 {
        match self.clip {
            Some(c) if grad_norm > c => c / grad_norm,
            _ => 1.0,
        }
    }

    /// The backend's arguments for update number `step` (1-based) at learning rate `lr`, with the
    /// accumulated gradient scaled by `grad_scale`.
    pub fn adamw_step(&self, step: u64, lr: f32, grad_scale: f32) -> AdamWStep {
        AdamWStep {
            step,
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            decay_mode: self.decay_mode,
            grad_scale,
        }
    }
}

/// Every setting of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Model shape. In a file, a partial `[model]` table takes the missing fields from the default
    /// (`tiny`) shape, as the flags do.
    #[serde(deserialize_with = "partial_model")]
    pub model: ModelConfig,
    /// Global batch in sequences per optimizer step.
    pub batch_size: usize,
    /// Sequences per forward/backward pass; `batch_size` must be a multiple of it.
    pub micro_batch: usize,
    /// Number of optimizer steps.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// The rest of the optimizer: its fields sit at the top level of the file (flattened).
    #[serde(flatten)]
    pub optimizer: OptimizerConfig,
    /// Seed of initialisation and data order.
    pub seed: u64,
    /// Training data.
    pub data: DataSpec,
    /// Evaluate every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Sequences of held-out data per evaluation.
    pub eval_sequences: usize,
    /// Plain log line every this many steps when not on a terminal.
    pub log_every: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        let model = crate::model::config::preset("tiny").expect("tiny preset exists");
        TrainConfig {
            model,
            batch_size: 8,
            micro_batch: 8,
            steps: 300,
            lr: 3e-3,
            warmup_steps: 30,
            optimizer: OptimizerConfig::default(),
            seed: 0,
            data: DataSpec::Bundled {
                tokenizer: TokenizerKind::SentencePiece,
            },
            eval_every: 100,
            eval_sequences: 64,
            log_every: 10,
        }
    }
}

/// `[model]` with every field optional; `deny_unknown_fields` keeps typos an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialModel {
    d_model: Option<usize>,
    n_layers: Option<usize>,
    seq_len: Option<usize>,
    vocab_size: Option<usize>,
}

fn partial_model<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ModelConfig, D::Error> {
    let p = PartialModel::deserialize(d)?;
    let base = TrainConfig::default().model;
    Ok(ModelConfig {
        d_model: p.d_model.unwrap_or(base.d_model),
        n_layers: p.n_layers.unwrap_or(base.n_layers),
        seq_len: p.seq_len.unwrap_or(base.seq_len),
        vocab_size: p.vocab_size.unwrap_or(base.vocab_size),
    })
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum TrainConfigError {
    /// The model shape is invalid.
    #[error(transparent)]
    Model(#[from] crate::model::config::ConfigError),
    /// The global batch is not a positive multiple of the micro-batch.
    #[error("--batch-size ({batch}) must be a positive multiple of --micro-batch ({micro})")]
    Batch {
        /// Sequences per optimizer step.
        batch: usize,
        /// Sequences per forward/backward pass.
        micro: usize,
    },
    /// A setting out of range.
    #[error("{0}")]
    Range(String),
    /// The config file cannot be read or parsed.
    #[error("config file {path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
}

impl TrainConfig {
    /// Check every setting.
    pub fn validate(&self) -> Result<(), TrainConfigError> {
        self.model.validate()?;
        if self.micro_batch == 0
            || self.batch_size == 0
            || !self.batch_size.is_multiple_of(self.micro_batch)
        {
            return Err(TrainConfigError::Batch {
                batch: self.batch_size,
                micro: self.micro_batch,
            });
        }
        if self.steps == 0 {
            return Err(TrainConfigError::Range("--steps must be at least 1".into()));
        }
        if let Some(t) = self.data.tokenizer() {
            if t.vocab_size() != self.model.vocab_size {
                return Err(TrainConfigError::Range(format!(
                    "the data's tokenizer `{}` has {} ids but the model's vocabulary is {}: set \
                     --vocab-size (vocab_size) {}",
                    t.name(),
                    t.vocab_size(),
                    self.model.vocab_size,
                    t.vocab_size()
                )));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(TrainConfigError::Range(format!(
                "--lr must be positive, got {}",
                self.lr
            )));
        }
        self.optimizer.validate()?;
        if self.eval_sequences == 0 {
            return Err(TrainConfigError::Range(
                "--eval-sequences must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// This configuration without its operational settings (eval cadence and size, log cadence), which a
    /// resumed run may change: the part a run and its checkpoints must agree on.
    pub fn contract(&self) -> TrainConfig {
        TrainConfig {
            eval_every: 0,
            eval_sequences: 1,
            log_every: 1,
            ..self.clone()
        }
    }

    /// Tokens consumed per optimizer step (all input positions of the global batch).
    pub fn tokens_per_step(&self) -> u64 {
        (self.batch_size * self.model.seq_len) as u64
    }

    /// Steps needed to see `tokens` training tokens (rounded up).
    pub fn steps_for_tokens(&self, tokens: f64) -> u64 {
        ((tokens / self.tokens_per_step() as f64).ceil() as u64).max(1)
    }

    /// Steps for `m` tokens per parameter (20 = Chinchilla-optimal).
    pub fn steps_for_multiplier(&self, m: f64) -> u64 {
        self.steps_for_tokens(accounting::token_budget(&self.model, m))
    }

    /// Read a TOML (`.toml`) or JSON file; missing fields take their defaults.
    pub fn from_file(path: &Path) -> Result<Self, TrainConfigError> {
        let err = |msg: String| TrainConfigError::File {
            path: path.to_path_buf(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            serde_json::from_str(&text).map_err(|e| err(e.to_string()))
        } else {
            toml::from_str(&text).map_err(|e| err(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_round_trips() {
        let c = TrainConfig::default();
        c.validate().unwrap();
        let s = toml::to_string(&c).unwrap();
        let back: TrainConfig = toml::from_str(&s).unwrap();
        assert_eq!(back, c);
    }

    /// The configuration as run.json and state.json of main (before `OptimizerConfig`) wrote it.
    const OLD_RUN_JSON_CONFIG: &str = r#"{"model":{"d_model":64,"n_layers":2,"seq_len":128,"vocab_size":32101},"batch_size":8,"micro_batch":8,"steps":4,"lr":0.003,"warmup_steps":30,"final_lr_frac":0.1,"beta1":0.9,"beta2":0.95,"eps":1e-20,"weight_decay":0.1,"decay_mode":"independent","clip":0.5,"seed":0,"data":{"kind":"synthetic"},"eval_every":0,"eval_sequences":8,"log_every":10}"#;

    #[test]
    fn an_old_run_json_config_loads_and_writes_the_same_bytes() {
        let c: TrainConfig = serde_json::from_str(OLD_RUN_JSON_CONFIG).unwrap();
        assert_eq!(c.optimizer.decay_mode, DecayMode::Independent);
        assert_eq!(c.optimizer.clip, Some(0.5));
        assert_eq!((c.lr, c.warmup_steps, c.steps), (0.003, 30, 4));
        assert_eq!(
            (c.optimizer.beta1, c.optimizer.beta2, c.optimizer.eps),
            (0.9, 0.95, 1e-20)
        );
        // Same keys in the same order: the checkpoints' `isoflop.config_sha256` is of these bytes.
        assert_eq!(serde_json::to_string(&c).unwrap(), OLD_RUN_JSON_CONFIG);
        let mut v: serde_json::Value = serde_json::from_str(OLD_RUN_JSON_CONFIG).unwrap();
        v["beta3"] = 1.into();
        let e = serde_json::from_value::<TrainConfig>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("beta3"), "{e}");
    }

    #[test]
    fn an_old_printed_toml_config_loads_and_prints_the_same() {
        // `isoflop train --print-config --clip 1.5` of main.
        let old = "batch_size = 8\nmicro_batch = 8\nsteps = 300\nlr = 0.003\nwarmup_steps = 30\n\
                   final_lr_frac = 0.1\nbeta1 = 0.8999999761581421\nbeta2 = 0.949999988079071\n\
                   eps = 0.000000000000000000009999999682655225\nweight_decay = 0.10000000149011612\n\
                   decay_mode = \"coupled\"\nclip = 1.5\nseed = 0\neval_every = 100\n\
                   eval_sequences = 64\nlog_every = 10\n\n[model]\nd_model = 64\nn_layers = 2\n\
                   seq_len = 128\nvocab_size = 32101\n\n[data]\nkind = \"bundled\"\n";
        let c: TrainConfig = toml::from_str(old).unwrap();
        let want = TrainConfig {
            optimizer: OptimizerConfig {
                clip: Some(1.5),
                ..OptimizerConfig::default()
            },
            ..TrainConfig::default()
        };
        assert_eq!(c, want);
        assert_eq!(toml::to_string(&c).unwrap(), old);
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "batch_size = \"many\"\n").unwrap();
        let e = TrainConfig::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("batch_size"), "{e}");
        std::fs::write(
            &p,
            "steps = 7\n[model]\nd_model = 128\nn_layers = 1\nseq_len = 32\nvocab_size = 100\n",
        )
        .unwrap();
        let c = TrainConfig::from_file(&p).unwrap();
        assert_eq!((c.steps, c.model.d_model, c.batch_size), (7, 128, 8));
        // The optimizer's fields are flattened in: a wrong one is still named, in TOML and in JSON.
        std::fs::write(&p, "steps = 7\neps = \"x\"\n").unwrap();
        let e = TrainConfig::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("`eps`"), "{e}");
        let j = dir.path().join("c.json");
        std::fs::write(&j, r#"{"steps": 7, "decay_mode": "sometimes"}"#).unwrap();
        let e = TrainConfig::from_file(&j).unwrap_err().to_string();
        assert!(e.contains("c.json") && e.contains("`decay_mode`"), "{e}");
        std::fs::write(&p, "stepz = 7\n").unwrap();
        assert!(TrainConfig::from_file(&p)
            .unwrap_err()
            .to_string()
            .contains("stepz"));
    }

    #[test]
    fn a_partial_model_table_takes_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[model]\nd_model = 128\n").unwrap();
        let c = TrainConfig::from_file(&p).unwrap();
        let tiny = TrainConfig::default().model;
        assert_eq!(c.model.d_model, 128);
        assert_eq!(
            (c.model.n_layers, c.model.seq_len, c.model.vocab_size),
            (tiny.n_layers, tiny.seq_len, tiny.vocab_size)
        );
        let j = dir.path().join("c.json");
        std::fs::write(&j, r#"{"model": {"n_layers": 3}}"#).unwrap();
        let c = TrainConfig::from_file(&j).unwrap();
        assert_eq!((c.model.d_model, c.model.n_layers), (tiny.d_model, 3));
        std::fs::write(&p, "[model]\nd_modle = 128\n").unwrap();
        let e = TrainConfig::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("d_modle") && e.contains("c.toml"), "{e}");
    }

    #[test]
    fn bad_optimizer_and_eval_settings_are_refused() {
        let bad = [
            (
                TrainConfig {
                    optimizer: OptimizerConfig {
                        eps: -1.0,
                        ..OptimizerConfig::default()
                    },
                    ..TrainConfig::default()
                },
                "--eps",
            ),
            (
                TrainConfig {
                    optimizer: OptimizerConfig {
                        eps: 0.0,
                        ..OptimizerConfig::default()
                    },
                    ..TrainConfig::default()
                },
                "--eps",
            ),
            (
                TrainConfig {
                    optimizer: OptimizerConfig {
                        weight_decay: -1.0,
                        ..OptimizerConfig::default()
                    },
                    ..TrainConfig::default()
                },
                "--weight-decay",
            ),
            (
                TrainConfig {
                    eval_sequences: 0,
                    ..TrainConfig::default()
                },
                "--eval-sequences",
            ),
        ];
        for (c, flag) in bad {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
        TrainConfig {
            optimizer: OptimizerConfig {
                weight_decay: 0.0,
                ..OptimizerConfig::default()
            },
            ..TrainConfig::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn bad_batches_are_refused() {
        let c = TrainConfig {
            batch_size: 6,
            micro_batch: 4,
            ..TrainConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--micro-batch"));
    }

    #[test]
    fn token_budgets_to_steps() {
        let c = TrainConfig::default();
        assert_eq!(c.tokens_per_step(), 8 * 128);
        assert_eq!(c.steps_for_tokens(1025.0), 2);
    }
}
