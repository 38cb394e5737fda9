//! Buffers of one forward/backward pass, sized for the largest micro-batch seen so far.

use crate::model::ModelConfig;

/// What one block saves in the forward for its backward.
pub(crate) struct LayerActs {
    /// LN1 output `[N, D]` and its row statistics `[N]`.
    pub xn1: Vec<f32>,
    pub mean1: Vec<f32>,
    pub rstd1: Vec<f32>,
    /// q, k before QK-Norm, and v [N, D].
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// QK-Norm statistics [N·H].
    pub q_mean: Vec<f32>,
    pub q_rstd: Vec<f32>,
    pub k_mean: Vec<f32>,
    pub k_rstd: Vec<f32>,
    /// q, k after QK-Norm and RoPE [N, D].
    pub qr: Vec<f32>,
    pub kr: Vec<f32>,
    /// Attention probabilities [B, H, T, T].
    pub att: Vec<f32>,
    /// Merged attention output (input of wo) [N, D].
    pub y: Vec<f32>,
    /// Residual after attention [N, D].
    pub h: Vec<f32>,
    /// LN2 output `[N, D]` and statistics `[N]`.
    pub xn2: Vec<f32>,
    pub mean2: Vec<f32>,
    pub rstd2: Vec<f32>,
    /// MLP pre-activation and GELU output [N, 4D].
    pub u: Vec<f32>,
    pub g: Vec<f32>,
}

/// Scratch buffers of the backward pass.
pub(crate) struct Scratch {
    /// Gradient of the residual stream [N, D].
    pub dres: Vec<f32>,
    /// General [N, D] temporaries.
    pub t1: Vec<f32>,
    pub t2: Vec<f32>,
    pub dq: Vec<f32>,
    pub dk: Vec<f32>,
    pub dv: Vec<f32>,
    pub dqr: Vec<f32>,
    pub dkr: Vec<f32>,
    /// [N, 4D] temporaries.
    pub dg: Vec<f32>,
    pub du: Vec<f32>,
}

/// All activations of the model for up to `cap_b` sequences.
pub(crate) struct Activations {
    /// Micro-batch capacity (sequences).
    pub cap_b: usize,
    /// Residual stream: `resid[0]` the embedding output, `resid[l+1]` the output of block `l` [N, D].
    pub resid: Vec<Vec<f32>>,
    pub layers: Vec<LayerActs>,
    /// Final LN output `[N, D]` and statistics `[N]`.
    pub xf: Vec<f32>,
    pub meanf: Vec<f32>,
    pub rstdf: Vec<f32>,
    /// Logits [N, V], overwritten by their gradient in a training step.
    pub logits: Vec<f32>,
    pub scratch: Scratch,
}

impl Activations {
    /// No buffers yet.
    pub fn empty() -> Self {
        Self::new(
            &ModelConfig {
                d_model: 0,
                n_layers: 0,
                seq_len: 0,
                vocab_size: 0,
            },
            0,
        )
    }

    /// Bytes that [`Activations::new`] allocates for `b` sequences of `cfg` (to check before allocating).
    pub fn bytes(cfg: &ModelConfig, b: usize) -> usize {
        // u128: absurd flags (--micro-batch 10^15) must give a large number, not wrap.
        let (d, t, v, nh, l, b) = (
            cfg.d_model as u128,
            cfg.seq_len as u128,
            cfg.vocab_size as u128,
            cfg.n_heads() as u128,
            cfg.n_layers as u128,
            b as u128,
        );
        let n = b * t;
        let nd = n * d;
        // Per layer: 9 [N,D], 2 [N,4D], 4 [N] and 4 [N,H] buffers and the [B,H,T,T] probabilities.
        let per_layer = 9 * nd + 8 * nd + 4 * n + 4 * n * nh + b * nh * t * t;
        // Residuals (L+1), final LN, logits, scratch (8 [N,D] and 2 [N,4D]).
        let rest = (l + 1) * nd + nd + 2 * n + n * v + 16 * nd;
        // The u16 input and target ids live in the [`crate::backend::TokenBatch`], counted here too.
        (4 * (l * per_layer + rest) + 2 * 2 * n).min(usize::MAX as u128) as usize
    }

    /// Buffers for `b` sequences of `cfg`.
    pub fn new(cfg: &ModelConfig, b: usize) -> Self {
        let (d, t, v, nh) = (cfg.d_model, cfg.seq_len, cfg.vocab_size, cfg.n_heads());
        let n = b * t;
        let z = |len: usize| vec![0.0f32; len];
        let layers = (0..cfg.n_layers)
            .map(|_| LayerActs {
                xn1: z(n * d),
                mean1: z(n),
                rstd1: z(n),
                q: z(n * d),
                k: z(n * d),
                v: z(n * d),
                q_mean: z(n * nh),
                q_rstd: z(n * nh),
                k_mean: z(n * nh),
                k_rstd: z(n * nh),
                qr: z(n * d),
                kr: z(n * d),
                att: z(b * nh * t * t),
                y: z(n * d),
                h: z(n * d),
                xn2: z(n * d),
                mean2: z(n),
                rstd2: z(n),
                u: z(n * 4 * d),
                g: z(n * 4 * d),
            })
            .collect();
        Activations {
            cap_b: b,
            resid: (0..=cfg.n_layers).map(|_| z(n * d)).collect(),
            layers,
            xf: z(n * d),
            meanf: z(n),
            rstdf: z(n),
            logits: z(n * v),
            scratch: Scratch {
                dres: z(n * d),
                t1: z(n * d),
                t2: z(n * d),
                dq: z(n * d),
                dk: z(n * d),
                dv: z(n * d),
                dqr: z(n * d),
                dkr: z(n * d),
                dg: z(n * 4 * d),
                du: z(n * 4 * d),
            },
        }
    }

    /// Make room for `b` sequences (reallocates only when `b` exceeds the capacity).
    pub fn ensure(&mut self, cfg: &ModelConfig, b: usize) {
        if b > self.cap_b {
            *self = Activations::new(cfg, b);
        }
    }
}
