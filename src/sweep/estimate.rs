//! Wall-time estimates: a throughput figure in FLOP/s (exact convention), measured or given.

use super::plan::{Plan, PlannedRun};
use crate::data::SyntheticSource;
use crate::device::{self, DeviceChoice};
use crate::model::init_params;
use crate::train::{TrainConfig, Trainer};
use std::time::Instant;

/// Why the CPU throughput could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum EstimateError {
    /// There is nothing to time.
    #[error("the plan has no runs")]
    NoRuns,
    /// The CPU backend cannot be opened.
    #[error("timing the CPU backend")]
    Open(#[from] crate::device::DeviceError),
    /// A timed training step failed.
    #[error("timing the CPU backend")]
    Step(#[from] crate::train::TrainError),
}

/// Where a throughput figure came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Throughput {
    /// Training FLOP/s, counted in the `exact` convention (so bigger models scale by their FLOPs/token).
    pub flops_per_s: f64,
    /// One line saying how it was obtained.
    pub source: String,
}

impl Throughput {
    /// Estimated wall time of a run, in seconds.
    pub fn seconds(&self, run: &PlannedRun) -> f64 {
        run.flops_per_token.exact * run.tokens as f64 / self.flops_per_s
    }

    /// A figure given as tokens/s of the plan's smallest model.
    pub fn from_tokens_per_s(plan: &Plan, tokens_per_s: f64) -> Option<Self> {
        let small = smallest(plan)?;
        Some(Throughput {
            flops_per_s: tokens_per_s * small.flops_per_token.exact,
            source: format!(
                "given: {tokens_per_s} tokens/s on {} (d{}l{}), scaled by FLOPs/token",
                small.name, small.config.model.d_model, small.config.model.n_layers
            ),
        })
    }

    /// A figure given in FLOP/s.
    pub fn from_flops_per_s(flops_per_s: f64) -> Self {
        Throughput {
            flops_per_s,
            source: format!("given: {flops_per_s:.3e} FLOP/s (exact convention)"),
        }
    }

    /// Time a few training steps of the plan's smallest model on the CPU backend (synthetic data,
    /// one micro-batch per step: one warm-up step, then `steps` timed ones).
    pub fn measure_cpu(plan: &Plan, steps: u64) -> Result<Self, EstimateError> {
        let small = smallest(plan).ok_or(EstimateError::NoRuns)?;
        let mut cfg: TrainConfig = small.config.clone();
        cfg.batch_size = cfg.micro_batch;
        cfg.steps = steps + 1;
        cfg.warmup_steps = 0;
        let params = init_params(&cfg.model, cfg.seed);
        let opened = device::open_backend(DeviceChoice::Cpu, &cfg.model, params)?;
        let name = opened.backend.device().to_string();
        let source = SyntheticSource::new(cfg.model.seq_len, cfg.model.vocab_size, cfg.seed);
        let tps = cfg.tokens_per_step();
        let mut trainer = Trainer::new(cfg, opened.backend, Box::new(source), vec![]);
        trainer.train_step()?;
        let t0 = Instant::now();
        for _ in 0..steps {
            trainer.train_step()?;
        }
        let tokens_per_s = (steps * tps) as f64 / t0.elapsed().as_secs_f64();
        Ok(Throughput {
            flops_per_s: tokens_per_s * small.flops_per_token.exact,
            source: format!(
                "measured: {tokens_per_s:.0} tokens/s on {name}, {} (d{}l{}), scaled by FLOPs/token",
                small.name, small.config.model.d_model, small.config.model.n_layers
            ),
        })
    }
}

/// The run with the fewest FLOPs per token.
fn smallest(plan: &Plan) -> Option<&PlannedRun> {
    plan.runs
        .iter()
        .min_by(|a, b| a.flops_per_token.exact.total_cmp(&b.flops_per_token.exact))
}
