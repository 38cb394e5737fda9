//! What `isoflop bench` measures: the model sizes, the batch, the number of steps, and the defaults for a
//! GPU and for the CPU fallback.

use super::BenchError;
use crate::device::DeviceKind;
use crate::model::config::{DEFAULT_SEQ_LEN, DEFAULT_VOCAB};
use crate::model::ModelConfig;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One model size of a benchmark: `DxL` (context from the plan) or `DxL:T` (its own context).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeSpec {
    /// Width D.
    pub d_model: usize,
    /// Depth L.
    pub n_layers: usize,
    /// Context T for this size, if it overrides the plan's.
    pub seq_len: Option<usize>,
}

impl SizeSpec {
    /// `d{D}l{L}` (plus `t{T}` when the size sets its own context): a file-name-safe label.
    pub fn label(&self) -> String {
        match self.seq_len {
            Some(t) => format!("d{}l{}t{t}", self.d_model, self.n_layers),
            None => format!("d{}l{}", self.d_model, self.n_layers),
        }
    }
}

impl fmt::Display for SizeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.d_model, self.n_layers)?;
        if let Some(t) = self.seq_len {
            write!(f, ":{t}")?;
        }
        Ok(())
    }
}

impl FromStr for SizeSpec {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, BenchError> {
        let bad = |why: &str| BenchError::Flag {
            flag: "--sizes",
            msg: format!("{s:?}: {why} (expected DxL or DxL:T, e.g. 512x8 or 64x2:128)"),
        };
        let (dl, t) = match s.split_once(':') {
            Some((dl, t)) => (dl, Some(t)),
            None => (s, None),
        };
        let (d, l) = dl.split_once(['x', 'X']).ok_or_else(|| bad("no 'x'"))?;
        let num = |v: &str, what: &str| -> Result<usize, BenchError> {
            v.trim()
                .parse::<usize>()
                .map_err(|_| bad(&format!("{what} {v:?} is not a whole number")))
        };
        let spec = SizeSpec {
            d_model: num(d, "width")?,
            n_layers: num(l, "depth")?,
            seq_len: t.map(|t| num(t, "context")).transpose()?,
        };
        Ok(spec)
    }
}

/// Parse a comma-separated list of sizes (`512x8,1024x16`).
pub fn parse_sizes(s: &str) -> Result<Vec<SizeSpec>, BenchError> {
    let sizes = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim().parse())
        .collect::<Result<Vec<SizeSpec>, _>>()?;
    if sizes.is_empty() {
        return Err(BenchError::Flag {
            flag: "--sizes",
            msg: "no size given".into(),
        });
    }
    Ok(sizes)
}

/// Which kind of backend a benchmark runs on; decides the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A GPU backend.
    Gpu,
    /// The f32 CPU reference backend (the fallback without a usable GPU).
    Cpu,
}

impl From<DeviceKind> for BackendKind {
    fn from(kind: DeviceKind) -> Self {
        match kind {
            DeviceKind::Cpu => BackendKind::Cpu,
            DeviceKind::Cuda { .. } => BackendKind::Gpu,
        }
    }
}

/// Everything that decides what a benchmark run measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchPlan {
    /// Model sizes, in the order they are run.
    pub sizes: Vec<SizeSpec>,
    /// Context T of sizes that do not set their own.
    pub seq_len: usize,
    /// Vocabulary V.
    pub vocab_size: usize,
    /// Global batch in sequences per optimizer step.
    pub batch_size: usize,
    /// Sequences per forward/backward; None = the largest divisor of the batch that fits.
    pub micro_batch: Option<usize>,
    /// Timed optimizer steps per size.
    pub steps: u64,
    /// Untimed optimizer steps before them (compilation, allocation, caches).
    pub warmup: u64,
    /// Peak learning rate of the schedule the steps follow.
    pub lr: f64,
    /// Linear learning-rate warmup steps of that schedule (not to be confused with `warmup`).
    pub lr_warmup: u64,
    /// Seed of the initial weights and of the synthetic tokens.
    pub seed: u64,
}

impl BenchPlan {
    /// The defaults for a backend kind: on a GPU D/L = 512/8, 1024/16, 2048/24 at T=512 with a global
    /// batch of 256 sequences; on the CPU three small sizes (64/2 at T=128, 128/4 and 256/4 at T=256)
    /// with a batch of 8.
    pub fn defaults(kind: BackendKind) -> Self {
        let s = |d, l, t| SizeSpec {
            d_model: d,
            n_layers: l,
            seq_len: t,
        };
        match kind {
            BackendKind::Gpu => BenchPlan {
                sizes: vec![s(512, 8, None), s(1024, 16, None), s(2048, 24, None)],
                seq_len: DEFAULT_SEQ_LEN,
                vocab_size: DEFAULT_VOCAB,
                batch_size: 256,
                micro_batch: None,
                steps: 20,
                warmup: 5,
                lr: 1e-3,
                lr_warmup: 10,
                seed: 0,
            },
            BackendKind::Cpu => BenchPlan {
                sizes: vec![
                    s(64, 2, Some(128)),
                    s(128, 4, Some(256)),
                    s(256, 4, Some(256)),
                ],
                seq_len: 256,
                vocab_size: DEFAULT_VOCAB,
                batch_size: 8,
                micro_batch: None,
                steps: 10,
                warmup: 2,
                lr: 1e-3,
                lr_warmup: 10,
                seed: 0,
            },
        }
    }

    /// The model of one size under this plan.
    pub fn model(&self, size: &SizeSpec) -> ModelConfig {
        ModelConfig {
            d_model: size.d_model,
            n_layers: size.n_layers,
            seq_len: size.seq_len.unwrap_or(self.seq_len),
            vocab_size: self.vocab_size,
        }
    }

    /// Total optimizer steps per size (warm-up + timed); the learning-rate schedule spans them.
    pub fn total_steps(&self) -> u64 {
        self.warmup + self.steps
    }

    /// The training configuration one size runs with (synthetic data, no evaluation).
    pub fn train_config(&self, size: &SizeSpec, micro_batch: usize) -> crate::train::TrainConfig {
        crate::train::TrainConfig {
            model: self.model(size),
            batch_size: self.batch_size,
            micro_batch,
            steps: self.total_steps(),
            lr: self.lr,
            warmup_steps: self.lr_warmup.min(self.total_steps()),
            seed: self.seed,
            data: crate::train::DataSpec::Synthetic,
            eval_every: 0,
            // Unused (the bench's trainer has no eval set); a config needs at least 1.
            eval_sequences: 1,
            ..crate::train::TrainConfig::default()
        }
    }

    /// Check the plan before anything runs.
    pub fn validate(&self) -> Result<(), BenchError> {
        let flag = |flag: &'static str, msg: String| Err(BenchError::Flag { flag, msg });
        if self.steps == 0 {
            return flag("--steps", "must be at least 1".into());
        }
        if self.batch_size == 0 {
            return flag("--batch-size", "must be at least 1".into());
        }
        if let Some(m) = self.micro_batch {
            if m == 0 || !self.batch_size.is_multiple_of(m) {
                return flag(
                    "--micro-batch",
                    format!("{m} must divide --batch-size {}", self.batch_size),
                );
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return flag("--lr", format!("must be positive, got {}", self.lr));
        }
        for s in &self.sizes {
            self.model(s).validate().map_err(|e| BenchError::Flag {
                flag: "--sizes",
                msg: format!("{s}: {e}"),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        let s = parse_sizes("512x8, 1024x16,64x2:128").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[2],
            SizeSpec {
                d_model: 64,
                n_layers: 2,
                seq_len: Some(128)
            }
        );
        assert_eq!(s[0].to_string(), "512x8");
        assert_eq!(s[2].to_string(), "64x2:128");
        assert_eq!(s[2].label(), "d64l2t128");
        for bad in ["", "512", "512x", "ax8", "64x2:t"] {
            let e = parse_sizes(bad).unwrap_err().to_string();
            assert!(e.contains("--sizes"), "{bad}: {e}");
        }
    }

    #[test]
    fn plans_validate() {
        for kind in [BackendKind::Gpu, BackendKind::Cpu] {
            BenchPlan::defaults(kind).validate().unwrap();
        }
        let mut p = BenchPlan::defaults(BackendKind::Cpu);
        p.micro_batch = Some(3);
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--micro-batch"));
        p.micro_batch = None;
        p.sizes = parse_sizes("100x2").unwrap();
        assert!(p.validate().unwrap_err().to_string().contains("100x2"));
        let gpu = BenchPlan::defaults(BackendKind::Gpu);
        assert_eq!(gpu.model(&gpu.sizes[2]), ModelConfig::new(2048, 24));
        assert_eq!(gpu.batch_size, 256);
    }
}
