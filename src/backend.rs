//! The interface every compute backend (CPU reference, CUDA) implements for the training loop.
//!
//! The loop owns the schedule, gradient accumulation and clipping decisions; a backend owns the parameters
//! (f32 master copy in [`crate::model::ParamLayout`] order), their gradients and the AdamW moments.

use crate::model::ModelConfig;
use serde::{Deserialize, Serialize};

/// How weight decay enters AdamW.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum DecayMode {
    /// p ← p − η_t·(m̂/(√v̂+ε) + λ·p)  (decay scaled by the learning rate; optax/PyTorch AdamW).
    #[default]
    Coupled,
    /// p ← p − η_t·m̂/(√v̂+ε) − λ·p  (decay independent of the learning rate).
    Independent,
}

/// Hyper-parameters of one AdamW update.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWStep {
    /// 1-based step number t, for bias correction.
    pub step: u64,
    /// Learning rate η_t of this step.
    pub lr: f32,
    /// β1 (default 0.9).
    pub beta1: f32,
    /// β2 (default 0.95).
    pub beta2: f32,
    /// ε (default 1e-20).
    pub eps: f32,
    /// Weight decay λ (default 0.1); applies to matrices and the embedding only.
    pub weight_decay: f32,
    /// Coupled or independent decay.
    pub decay_mode: DecayMode,
    /// Factor applied to the accumulated gradient before the update: 1/(targets in the batch) times
    /// the clipping factor.
    pub grad_scale: f32,
}

/// Summed next-token loss of a (micro-)batch and the number of non-pad targets it covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LossSum {
    /// Σ −ln p(target) over non-pad targets (f64 so that accumulation over many micro-batches is exact enough).
    pub sum: f64,
    /// Number of non-pad targets.
    pub count: u64,
}

impl LossSum {
    /// Mean loss, or NaN when there were no targets.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }
    /// Add another partial sum.
    pub fn add(&mut self, o: LossSum) {
        self.sum += o.sum;
        self.count += o.count;
    }
}

/// Per-position scores of a batch from [`Backend::forward_scores`]: for each of the `B·T` targets
/// (`row[1..]` of each batch row), its log-probability under the model and whether it is the model's
/// top-1 prediction (the argmax of the logits, the lowest id on a tie) given the true prefix.
///
/// Greedy decoding reproduces a run of targets exactly iff every one of them is the argmax given the
/// true prefix (teacher forcing): at the first miss greedy decoding diverges, and before it the prefix
/// it feeds back is the true one. So exact-match cloze scoring needs no generation loop.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenScores {
    /// ln p(target) per position, `[B·T]` row-major; 0 at pad targets.
    pub logp_BxT: Vec<f32>,
    /// Whether the target is the argmax, `[B·T]`; false at pad targets.
    pub hit_BxT: Vec<bool>,
}

/// A failure inside a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A batch of the wrong size or with an id outside the vocabulary.
    #[error("bad batch: {0}")]
    BadBatch(String),
    /// A buffer handed in (parameters, optimizer state) has the wrong length.
    #[error("{what}: expected {expected} values, got {got}")]
    Shape {
        /// Which buffer.
        what: &'static str,
        /// Expected element count.
        expected: usize,
        /// Given element count.
        got: usize,
    },
    /// Device memory ran out.
    #[error("out of device memory while {0}; try a smaller --micro-batch")]
    OutOfMemory(String),
    /// Any other device error.
    #[error("device error: {0}")]
    Device(String),
    /// A failure of a device library (the CUDA driver, cuBLASLt) with the library's error as its
    /// source, so `{e:#}` prints the cause chain.
    #[error("device error: {what}")]
    Gpu {
        /// What was being done.
        what: String,
        /// The library's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// A compute backend for one model.
///
/// Batches are `b` rows of `T + 1` token ids, row-major: inputs are `row[..T]`, targets `row[1..]`.
pub trait Backend {
    /// Human-readable device description, e.g. `cpu (2 threads)` or `cuda:0 NVIDIA H100 80GB HBM3`.
    fn device_name(&self) -> String;

    /// The model this backend was built for.
    fn config(&self) -> &ModelConfig;

    /// Forward and backward on one micro-batch. Gradients of the *summed* loss are added to the
    /// gradient accumulator, so micro-batches accumulate exactly; returns that summed loss.
    fn forward_backward(&mut self, tokens_Bx_T1: &[u16], b: usize)
        -> Result<LossSum, BackendError>;

    /// Forward only (evaluation): the summed loss of a batch.
    fn forward_loss(&mut self, tokens_Bx_T1: &[u16], b: usize) -> Result<LossSum, BackendError>;

    /// Forward only (task evaluation): per position, the target's log-probability and whether it is the
    /// argmax (see [`TokenScores`]). Touches no gradient or optimizer state.
    fn forward_scores(
        &mut self,
        tokens_Bx_T1: &[u16],
        b: usize,
    ) -> Result<TokenScores, BackendError>;

    /// Set the gradient accumulator to zero.
    fn zero_grads(&mut self);

    /// L2 norm of the accumulated (unscaled) gradient over all parameters, reduced in a fixed order.
    fn grad_norm(&mut self) -> Result<f64, BackendError>;

    /// One AdamW update of every parameter from the accumulated gradient times `hp.grad_scale`.
    fn adamw_step(&mut self, hp: &AdamWStep) -> Result<(), BackendError>;

    /// Copy the f32 master parameters out (flat, layout order).
    fn read_params(&self) -> Result<Vec<f32>, BackendError>;

    /// Replace the f32 master parameters.
    fn write_params(&mut self, params: &[f32]) -> Result<(), BackendError>;

    /// Copy the AdamW moments (m, v) out (flat, layout order).
    fn read_moments(&self) -> Result<(Vec<f32>, Vec<f32>), BackendError>;

    /// Replace the AdamW moments.
    fn write_moments(&mut self, m: &[f32], v: &[f32]) -> Result<(), BackendError>;

    /// Copy the accumulated gradient out (flat, layout order); used by tests and diagnostics.
    fn read_grads(&self) -> Result<Vec<f32>, BackendError>;
}

/// Check a batch of `b` rows of `T + 1` ids against `cfg`: at least one row, the right length, every id
/// inside the vocabulary (the error names the row and column of the first bad id).
pub fn check_batch(cfg: &ModelConfig, tokens_Bx_T1: &[u16], b: usize) -> Result<(), BackendError> {
    let (t, vocab) = (cfg.seq_len, cfg.vocab_size);
    if b == 0 {
        return Err(BackendError::BadBatch(
            "a batch needs at least one sequence".into(),
        ));
    }
    if tokens_Bx_T1.len() != b * (t + 1) {
        return Err(BackendError::BadBatch(format!(
            "expected {b} rows of {} ids (seq_len + 1) = {} ids, got {}",
            t + 1,
            b * (t + 1),
            tokens_Bx_T1.len()
        )));
    }
    if let Some((i, &id)) = tokens_Bx_T1
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= vocab)
    {
        return Err(BackendError::BadBatch(format!(
            "token id {id} at row {}, column {} is outside the vocabulary of {vocab}",
            i / (t + 1),
            i % (t + 1)
        )));
    }
    Ok(())
}
