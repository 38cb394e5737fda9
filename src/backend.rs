//! The interface every compute backend (CPU reference, CUDA) implements for the training loop.
//!
//! The loop owns the schedule, gradient accumulation and clipping decisions; a backend owns the parameters
//! (f32 master copy in [`crate::model::ParamLayout`] order), their gradients and the AdamW moments.

use crate::model::config::{ConfigError, PAD_ID};
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

/// What a backend runs on: decides which peaks and driver facts apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// The CPU reference backend.
    Cpu,
    /// A GPU through the CUDA backend.
    Cuda {
        /// The driver's ordinal of the GPU.
        ordinal: usize,
    },
}

/// The number formats a backend computes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f32 throughout (the CPU reference backend).
    F32,
    /// bf16 matmul operands and activations with f32 accumulation, f32 master weights, gradients,
    /// moments, residual stream, statistics and loss (the CUDA backend).
    Bf16Mixed,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16Mixed => "bf16 mixed (f32 master weights)",
        })
    }
}

/// What a backend runs on, from [`Backend::device`]. Its `Display` is the description written to
/// `run.json` (`device`) and bench reports: `cpu (2 threads)` or `cuda:0 NVIDIA H100 80GB HBM3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// CPU, or which GPU.
    pub kind: DeviceKind,
    /// The GPU's name as the driver reports it; `cpu` on the CPU.
    pub name: String,
    /// Threads the CPU backend's ops run on (rayon's current pool); None on a GPU.
    pub threads: Option<usize>,
    /// The number formats it computes in.
    pub precision: Precision,
    /// Total device memory in bytes, when known (a GPU's; None on the CPU).
    pub memory_bytes: Option<u64>,
}

impl DeviceInfo {
    /// Whether this is the CPU reference backend.
    pub fn is_cpu(&self) -> bool {
        self.kind == DeviceKind::Cpu
    }
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.kind, self.threads) {
            (DeviceKind::Cpu, Some(n)) => write!(f, "{} ({n} threads)", self.name),
            (DeviceKind::Cpu, None) => f.write_str(&self.name),
            (DeviceKind::Cuda { ordinal }, _) => write!(f, "cuda:{ordinal} {}", self.name),
        }
    }
}

/// Why a batch of token ids is not a valid batch (for its model).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// No rows at all.
    #[error("a batch needs at least one sequence")]
    Empty,
    /// The id count is not `b · (T + 1)`.
    #[error("expected {b} rows of {row} ids (seq_len + 1) = {expected} ids, got {got}")]
    Length {
        /// Rows asked for.
        b: usize,
        /// Ids per row, `T + 1`.
        row: usize,
        /// `b · (T + 1)`.
        expected: usize,
        /// Ids given.
        got: usize,
    },
    /// An id at or above the vocabulary size.
    #[error("token id {id} at row {row}, column {col} is outside the vocabulary of {vocab}")]
    OutOfVocab {
        /// The id.
        id: u16,
        /// Its row (sequence) in the batch.
        row: usize,
        /// Its column in the row of `T + 1` ids.
        col: usize,
        /// The model's vocabulary size.
        vocab: usize,
    },
    /// A batch built for one context length handed to a model with another.
    #[error("the batch has rows of {batch} positions but the model's seq_len is {model}")]
    SeqLen {
        /// Positions per row of the batch.
        batch: usize,
        /// The model's `seq_len`.
        model: usize,
    },
}

/// A validated batch: `b` sequences of `T` next-token pairs, split once into inputs (`row[..T]` of each
/// row of `T + 1` ids) and targets (`row[1..]`), every id checked against the vocabulary. Every forward
/// call of [`Backend`] takes one; the backend only checks that it fits its model (same `T`, ids inside
/// its vocabulary), in O(1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    inputs_BxT: Vec<u16>,
    targets_BxT: Vec<u16>,
    b: usize,
    t: usize,
    /// The largest id of the batch, to check it against another model's vocabulary in O(1).
    max_id: u16,
    /// Targets that are not the pad id.
    non_pad: u64,
}

impl TokenBatch {
    /// Check and split `b` rows of `cfg.seq_len + 1` ids (row-major): at least one row, exactly
    /// `b · (T + 1)` ids, every id inside `cfg.vocab_size` (the error names the row and column of the
    /// first bad id).
    pub fn new(cfg: &ModelConfig, tokens_Bx_T1: &[u16], b: usize) -> Result<Self, BatchError> {
        let (t, vocab) = (cfg.seq_len, cfg.vocab_size);
        if b == 0 {
            return Err(BatchError::Empty);
        }
        if tokens_Bx_T1.len() != b * (t + 1) {
            return Err(BatchError::Length {
                b,
                row: t + 1,
                expected: b * (t + 1),
                got: tokens_Bx_T1.len(),
            });
        }
        if let Some(e) = first_out_of_vocab(tokens_Bx_T1, t, vocab) {
            return Err(e);
        }
        let mut inputs_BxT = Vec::with_capacity(b * t);
        let mut targets_BxT = Vec::with_capacity(b * t);
        for row in tokens_Bx_T1.chunks_exact(t + 1) {
            inputs_BxT.extend_from_slice(&row[..t]);
            targets_BxT.extend_from_slice(&row[1..]);
        }
        Ok(TokenBatch {
            max_id: tokens_Bx_T1.iter().copied().max().unwrap_or(0),
            non_pad: targets_BxT.iter().filter(|&&x| x != PAD_ID).count() as u64,
            inputs_BxT,
            targets_BxT,
            b,
            t,
        })
    }

    /// Check that this batch fits the model `cfg` (its `seq_len`, its vocabulary): what a backend does
    /// before using a batch that may have been built for another model.
    pub fn check_fits(&self, cfg: &ModelConfig) -> Result<(), BatchError> {
        if self.t != cfg.seq_len {
            return Err(BatchError::SeqLen {
                batch: self.t,
                model: cfg.seq_len,
            });
        }
        if self.max_id as usize >= cfg.vocab_size {
            // Cold path: rebuild the rows to name the first bad id as `new` does.
            let rows: Vec<u16> = (0..self.b)
                .flat_map(|r| {
                    let row = &self.inputs_BxT[r * self.t..][..self.t];
                    row.iter()
                        .copied()
                        .chain(std::iter::once(self.targets_BxT[r * self.t + self.t - 1]))
                })
                .collect();
            if let Some(e) = first_out_of_vocab(&rows, self.t, cfg.vocab_size) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Input ids `[B·T]`, row-major.
    pub fn inputs_BxT(&self) -> &[u16] {
        &self.inputs_BxT
    }
    /// Target ids `[B·T]`, row-major.
    pub fn targets_BxT(&self) -> &[u16] {
        &self.targets_BxT
    }
    /// Sequences B.
    pub fn b(&self) -> usize {
        self.b
    }
    /// Positions per sequence T.
    pub fn t(&self) -> usize {
        self.t
    }
    /// Positions in all, `B·T`.
    pub fn n(&self) -> usize {
        self.b * self.t
    }
    /// Targets that are not the pad id (the count a [`LossSum`] of this batch carries).
    pub fn non_pad_targets(&self) -> u64 {
        self.non_pad
    }
}

/// The first id of `rows_Bx_T1` (rows of `t + 1`) outside `vocab`, as an error naming its row and column.
fn first_out_of_vocab(rows_Bx_T1: &[u16], t: usize, vocab: usize) -> Option<BatchError> {
    rows_Bx_T1
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= vocab)
        .map(|(i, &id)| BatchError::OutOfVocab {
            id,
            row: i / (t + 1),
            col: i % (t + 1),
            vocab,
        })
}

/// A failure inside a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A batch of the wrong size, for another model, or with an id outside the vocabulary.
    #[error("bad batch: {0}")]
    BadBatch(#[from] BatchError),
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
    /// The model configuration breaks the contract.
    #[error("invalid model configuration: {0}")]
    InvalidConfig(#[source] ConfigError),
    /// A training call on a backend opened for evaluation only.
    #[error(
        "{call} on a forward-only (evaluation) backend, which holds no gradients or optimizer state"
    )]
    ForwardOnly {
        /// The refused call, e.g. `forward_backward`.
        call: &'static str,
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

/// `Ok` when a buffer named `what` has the `expected` length, else [`BackendError::Shape`].
pub fn check_shape(what: &'static str, expected: usize, got: usize) -> Result<(), BackendError> {
    if expected == got {
        Ok(())
    } else {
        Err(BackendError::Shape {
            what,
            expected,
            got,
        })
    }
}

/// A compute backend for one model.
///
/// Every fallible call returns its error at once; no error is deferred to a later call.
pub trait Backend {
    /// What it runs on (kind, name, precision, memory); its `Display` is e.g. `cpu (2 threads)` or
    /// `cuda:0 NVIDIA H100 80GB HBM3`.
    fn device(&self) -> DeviceInfo;

    /// The model this backend was built for.
    fn config(&self) -> &ModelConfig;

    /// Forward and backward on one micro-batch. Gradients of the *summed* loss are added to the
    /// gradient accumulator, so micro-batches accumulate exactly; returns that summed loss.
    fn forward_backward(&mut self, batch: &TokenBatch) -> Result<LossSum, BackendError>;

    /// Forward only (evaluation): the summed loss of a batch.
    fn forward_loss(&mut self, batch: &TokenBatch) -> Result<LossSum, BackendError>;

    /// Forward only (task evaluation): per position, the target's log-probability and whether it is the
    /// argmax (see [`TokenScores`]). Touches no gradient or optimizer state.
    fn forward_scores(&mut self, batch: &TokenBatch) -> Result<TokenScores, BackendError>;

    /// Set the gradient accumulator to zero (an error on a forward-only backend).
    fn zero_grads(&mut self) -> Result<(), BackendError>;

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
