//! One optimizer step at a time: micro-batches with gradient accumulation, clipping, AdamW, evaluation.

use super::config::TrainConfig;
use super::schedule::Schedule;
use crate::backend::{Backend, BackendError, LossSum, TokenBatch};
use crate::data::{SourceError, TokenSource};
use crate::model::FlopsPerToken;

/// A failure during training, naming the step where it happened.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The backend failed.
    #[error("step {step}: {source}")]
    Backend {
        /// 1-based step.
        step: u64,
        /// Cause.
        source: BackendError,
    },
    /// The data source failed.
    #[error("step {step}: reading training data: {source}")]
    Data {
        /// 1-based step.
        step: u64,
        /// Cause.
        source: SourceError,
    },
    /// Loss or gradient became NaN or infinite.
    #[error("step {step}: {what} is {value} (not finite); stopping")]
    NonFinite {
        /// 1-based step.
        step: u64,
        /// `loss` or `gradient norm`.
        what: &'static str,
        /// The non-finite number itself (NaN or ±inf).
        value: f64,
    },
    /// A micro-batch had no non-pad targets at all.
    #[error("step {step}: the batch has no non-pad targets")]
    EmptyBatch {
        /// 1-based step.
        step: u64,
    },
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    /// 1-based number of this step.
    pub step: u64,
    /// Mean training loss over the global batch (before the update).
    pub loss: f64,
    /// Global gradient norm of the mean loss (before clipping).
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Non-pad targets in the batch.
    pub targets: u64,
}

/// Result of an evaluation pass over the held-out windows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalOutcome {
    /// Mean loss over the held-out targets.
    pub loss: f64,
    /// Standard error of `loss`, from the spread of per-micro-batch means.
    pub stderr: f64,
    /// Targets evaluated.
    pub tokens: u64,
}

/// Drives a backend through the schedule on a token source.
pub struct Trainer {
    cfg: TrainConfig,
    backend: Box<dyn Backend>,
    source: Box<dyn TokenSource>,
    eval_windows: Vec<u16>,
    schedule: Schedule,
    flops: FlopsPerToken,
    /// Optimizer steps completed.
    pub step: u64,
}

impl Trainer {
    /// A trainer at step 0. `eval_windows` is the held-out set (`n × (T+1)` ids), evaluated the same way
    /// every time; it may be empty.
    pub fn new(
        cfg: TrainConfig,
        backend: Box<dyn Backend>,
        source: Box<dyn TokenSource>,
        eval_windows: Vec<u16>,
    ) -> Self {
        let schedule = Schedule {
            peak_lr: cfg.lr,
            warmup_steps: cfg.warmup_steps,
            total_steps: cfg.steps,
            final_frac: cfg.optimizer.final_lr_frac,
        };
        let flops = FlopsPerToken::of(&cfg.model);
        Trainer {
            cfg,
            backend,
            source,
            eval_windows,
            schedule,
            flops,
            step: 0,
        }
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }
    /// The backend (for checkpoints and diagnostics).
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }
    /// Mutable backend (to restore a checkpoint).
    pub fn backend_mut(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }
    /// The training token source (to save or restore its position).
    pub fn source_mut(&mut self) -> &mut dyn TokenSource {
        self.source.as_mut()
    }
    /// FLOPs per token under each convention.
    pub fn flops_per_token(&self) -> &FlopsPerToken {
        &self.flops
    }
    /// Whether every step of the schedule is done.
    pub fn finished(&self) -> bool {
        self.step >= self.cfg.steps
    }

    /// One optimizer step over the global batch.
    pub fn train_step(&mut self) -> Result<StepOutcome, TrainError> {
        let step = self.step + 1;
        let mb = self.cfg.micro_batch;
        self.backend
            .zero_grads()
            .map_err(|source| TrainError::Backend { step, source })?;
        let mut total = LossSum::default();
        for _ in 0..self.cfg.batch_size / mb {
            let tokens = self
                .source
                .next_batch(mb)
                .map_err(|source| TrainError::Data { step, source })?;
            let part = TokenBatch::new(&self.cfg.model, &tokens, mb)
                .map_err(BackendError::from)
                .and_then(|batch| self.backend.forward_backward(&batch))
                .map_err(|source| TrainError::Backend { step, source })?;
            total.add(part);
        }
        if total.count == 0 {
            return Err(TrainError::EmptyBatch { step });
        }
        let loss = total.mean();
        if !loss.is_finite() {
            return Err(TrainError::NonFinite {
                step,
                what: "loss",
                value: loss,
            });
        }
        let scale = 1.0 / total.count as f64;
        let grad_norm = self
            .backend
            .grad_norm()
            .map_err(|source| TrainError::Backend { step, source })?
            * scale;
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite {
                step,
                what: "gradient norm",
                value: grad_norm,
            });
        }
        let clip_factor = self.cfg.optimizer.clip_factor(grad_norm);
        let lr = self.schedule.lr(self.step);
        let hp = self
            .cfg
            .optimizer
            .adamw_step(step, lr as f32, (scale * clip_factor) as f32);
        self.backend
            .adamw_step(&hp)
            .map_err(|source| TrainError::Backend { step, source })?;
        self.step = step;
        Ok(StepOutcome {
            step,
            loss,
            grad_norm,
            lr,
            targets: total.count,
        })
    }

    /// Loss on the held-out windows (None when there are none).
    pub fn evaluate(&mut self) -> Result<Option<EvalOutcome>, TrainError> {
        let (mb, t) = (self.cfg.micro_batch, self.cfg.model.seq_len);
        evaluate(self.backend.as_mut(), &self.eval_windows, mb, t).map_err(|source| {
            TrainError::Backend {
                step: self.step,
                source,
            }
        })
    }
}

/// Mean loss of `backend` on `windows_Nx_T1` (rows of `seq_len + 1` ids), `micro_batch` rows at a time,
/// with the standard error from the spread of per-micro-batch means (tokens inside a window are correlated,
/// so micro-batches, not tokens, are the independent samples). None when there are no windows.
pub fn evaluate(
    backend: &mut dyn Backend,
    windows_Nx_T1: &[u16],
    micro_batch: usize,
    seq_len: usize,
) -> Result<Option<EvalOutcome>, BackendError> {
    let row = seq_len + 1;
    let cfg = *backend.config();
    if windows_Nx_T1.is_empty() {
        return Ok(None);
    }
    let mut total = LossSum::default();
    let mut means = Vec::new();
    for chunk in windows_Nx_T1.chunks(micro_batch.max(1) * row) {
        let part = backend.forward_loss(&TokenBatch::new(&cfg, chunk, chunk.len() / row)?)?;
        if part.count > 0 {
            means.push((part.mean(), part.count as f64));
        }
        total.add(part);
    }
    let loss = total.mean();
    let stderr = if means.len() > 1 {
        let w: f64 = means.iter().map(|m| m.1).sum();
        let var = means
            .iter()
            .map(|(m, c)| c * (m - loss).powi(2))
            .sum::<f64>()
            / w;
        (var / (means.len() - 1) as f64).sqrt()
    } else {
        f64::NAN
    };
    Ok(Some(EvalOutcome {
        loss,
        stderr,
        tokens: total.count,
    }))
}
