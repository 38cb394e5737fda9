//! The cases of the per-kernel profiles on the GPU (driven by the criterion bench `bench/kernels.rs`):
//! their minimal FLOP and byte counts and the roofline they are judged against.
//!
//! The launcher is [`crate::cuda::kernel_bench::CudaKernelLauncher`]: it launches each case through the
//! same launch helpers as the CUDA backend ([`crate::cuda::ops`], [`crate::cuda::blas`]) and times it
//! with CUDA events.

use serde::Serialize;

/// A family of kernels, as the model's step uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelFamily {
    /// Fused causal attention forward (`attention_forward`, bf16).
    AttentionForward,
    /// Fused causal attention backward (`attention_backward_prep` + `attention_backward`).
    AttentionBackward,
    /// Softmax cross-entropy over f32 logits with the logit gradient in place (`cross_entropy_f32`).
    CrossEntropy,
    /// LayerNorm forward, f32 in, bf16 out (`layernorm_forward_bf16`).
    LayerNormForward,
    /// LayerNorm backward, f32 (`layernorm_backward_f32` + scale-gradient reduction).
    LayerNormBackward,
    /// tanh-GELU forward, bf16 in and out (`gelu_forward_bf16`).
    GeluForward,
    /// tanh-GELU backward: f32 upstream gradient, bf16 pre-activation and result
    /// (`gelu_backward_bf16`).
    GeluBackward,
    /// Embedding gather (`embedding_forward_f32`).
    EmbeddingForward,
    /// AdamW over every parameter (`adamw_f32`, one launch per run of tensors with the same decay).
    AdamW,
    /// bf16 matmul through cuBLASLt (the MLP's up-projection shape).
    Matmul,
    /// The head's product through cuBLASLt: bf16 `[N, D]·[D, Vp]` to f32 logits, rows padded to the
    /// aligned vocabulary as in the training step.
    MatmulHead,
}

impl KernelFamily {
    /// Every family, in report order.
    pub const ALL: [KernelFamily; 11] = [
        KernelFamily::AttentionForward,
        KernelFamily::AttentionBackward,
        KernelFamily::CrossEntropy,
        KernelFamily::LayerNormForward,
        KernelFamily::LayerNormBackward,
        KernelFamily::GeluForward,
        KernelFamily::GeluBackward,
        KernelFamily::EmbeddingForward,
        KernelFamily::AdamW,
        KernelFamily::Matmul,
        KernelFamily::MatmulHead,
    ];

    /// Short name used in bench ids.
    pub fn name(self) -> &'static str {
        match self {
            KernelFamily::AttentionForward => "attention_fwd",
            KernelFamily::AttentionBackward => "attention_bwd",
            KernelFamily::CrossEntropy => "cross_entropy",
            KernelFamily::LayerNormForward => "layernorm_fwd",
            KernelFamily::LayerNormBackward => "layernorm_bwd",
            KernelFamily::GeluForward => "gelu_fwd",
            KernelFamily::GeluBackward => "gelu_bwd",
            KernelFamily::EmbeddingForward => "embedding_fwd",
            KernelFamily::AdamW => "adamw",
            KernelFamily::Matmul => "matmul_bf16",
            KernelFamily::MatmulHead => "matmul_head",
        }
    }
}

/// One shape of one kernel family with its minimal work: every input read once, every output written
/// once, FLOPs of the useful arithmetic (causal attention counts only the lower triangle).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelCase {
    /// The kernels it launches.
    pub family: KernelFamily,
    /// Model width D the shape comes from.
    pub d_model: usize,
    /// Depth L of the model (AdamW covers its parameters).
    pub n_layers: usize,
    /// Sequences in the micro-batch.
    pub b: usize,
    /// Context T.
    pub t: usize,
    /// Vocabulary V.
    pub v: usize,
    /// Parameters (AdamW only).
    pub params: u64,
    /// Minimal FLOPs.
    pub flops: f64,
    /// Minimal bytes through device memory.
    pub bytes: f64,
}

impl KernelCase {
    /// The case of `family` at width `d`, `b` sequences of `t` tokens, vocabulary `v`, for a model of
    /// depth `l` (AdamW covers every parameter of that model).
    pub fn new(family: KernelFamily, d: usize, l: usize, b: usize, t: usize, v: usize) -> Self {
        let (df, bf, tf, vf) = (d as f64, b as f64, t as f64, v as f64);
        let n = bf * tf;
        let h = df / 64.0;
        let params = crate::model::ParamCounts::of(&crate::model::ModelConfig {
            d_model: d,
            n_layers: l,
            seq_len: t,
            vocab_size: v,
        })
        .total;
        // Causal score and value products per head: 2 products × T²/2 × 64 MACs × 2 FLOPs.
        let attn_fwd_flops = bf * h * 2.0 * tf * tf * 64.0;
        let (flops, bytes) = match family {
            // q, k, v in and out, bf16; log-sum-exp per row and head, f32.
            KernelFamily::AttentionForward => (attn_fwd_flops, 4.0 * n * df * 2.0 + n * h * 4.0),
            // Five products (scores recomputed, dV, dP, dQ, dK); q, k, v, out, dout in, dq, dk, dv out,
            // lse and delta.
            KernelFamily::AttentionBackward => {
                (2.5 * attn_fwd_flops, 8.0 * n * df * 2.0 + 2.0 * n * h * 4.0)
            }
            // f32 logits read, bf16 gradient written in place, targets and per-row loss.
            KernelFamily::CrossEntropy => (5.0 * n * vf, n * vf * (4.0 + 2.0) + n * 6.0),
            KernelFamily::LayerNormForward => {
                (8.0 * n * df, n * df * (4.0 + 2.0) + df * 4.0 + n * 8.0)
            }
            KernelFamily::LayerNormBackward => (12.0 * n * df, n * df * 12.0 + n * 8.0 + df * 8.0),
            // bf16 in, bf16 out.
            KernelFamily::GeluForward => (20.0 * n * 4.0 * df, n * 4.0 * df * (2.0 + 2.0)),
            // f32 upstream gradient, bf16 pre-activation, bf16 result.
            KernelFamily::GeluBackward => (30.0 * n * 4.0 * df, n * 4.0 * df * (4.0 + 2.0 + 2.0)),
            KernelFamily::EmbeddingForward => (0.0, n * 2.0 + 2.0 * n * df * 4.0),
            // p, g, m, v read; p, m, v written; f32.
            KernelFamily::AdamW => (12.0 * params as f64, 28.0 * params as f64),
            // [N, D] · [D, 4D], bf16 in and out.
            KernelFamily::Matmul => (
                2.0 * n * df * 4.0 * df,
                (n * df + df * 4.0 * df + n * 4.0 * df) * 2.0,
            ),
            // [N, D] · [D, V] (useful columns only), bf16 in, f32 out.
            KernelFamily::MatmulHead => {
                (2.0 * n * df * vf, (n * df + df * vf) * 2.0 + n * vf * 4.0)
            }
        };
        KernelCase {
            family,
            d_model: d,
            n_layers: l,
            b,
            t,
            v,
            params,
            flops,
            bytes,
        }
    }

    /// Bench id, e.g. `attention_fwd/d1024_b16_t512`.
    pub fn id(&self) -> String {
        format!(
            "{}/d{}_b{}_t{}",
            self.family.name(),
            self.d_model,
            self.b,
            self.t
        )
    }

    /// Whether FLOPs or bytes bound this case on a device with these ceilings.
    pub fn roofline(&self, peak_flops: f64, bandwidth: f64) -> Roofline {
        let compute_s = self.flops / peak_flops;
        let memory_s = self.bytes / bandwidth;
        Roofline {
            floor_s: compute_s.max(memory_s),
            compute_bound: compute_s >= memory_s,
        }
    }
}

/// The fastest a case can run on a device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Roofline {
    /// max(FLOPs / peak, bytes / bandwidth), seconds.
    pub floor_s: f64,
    /// Whether arithmetic (not memory traffic) sets the floor.
    pub compute_bound: bool,
}

impl Roofline {
    /// Fraction of the roofline a measured time reaches (1 = at the floor).
    pub fn fraction(&self, measured_s: f64) -> f64 {
        self.floor_s / measured_s
    }
}

/// The standard cases: every family at the GPU bench's widths (512, 1024, 2048 with depths 8, 16, 24),
/// 16 sequences of 512 tokens, the default vocabulary.
pub fn standard_cases() -> Vec<KernelCase> {
    let mut out = Vec::new();
    for (d, l) in [(512, 8), (1024, 16), (2048, 24)] {
        for f in KernelFamily::ALL {
            out.push(KernelCase::new(
                f,
                d,
                l,
                16,
                512,
                crate::model::config::DEFAULT_VOCAB,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_hand() {
        // Matmul 8192×1024 · 1024×4096: 2·8192·1024·4096 FLOPs.
        let m = KernelCase::new(KernelFamily::Matmul, 1024, 16, 16, 512, 32101);
        assert_eq!(m.flops, 2.0 * 8192.0 * 1024.0 * 4096.0);
        assert_eq!(
            m.bytes,
            2.0 * (8192.0 * 1024.0 + 1024.0 * 4096.0 + 8192.0 * 4096.0)
        );
        // On an H100 (989 TFLOP/s, 3.35 TB/s) the matmul is compute-bound, AdamW memory-bound.
        let r = m.roofline(989e12, 3.35e12);
        assert!(r.compute_bound);
        assert!((r.floor_s - m.flops / 989e12).abs() < 1e-15);
        assert!((r.fraction(2.0 * r.floor_s) - 0.5).abs() < 1e-12);
        let a = KernelCase::new(KernelFamily::AdamW, 512, 8, 16, 512, 32101);
        assert_eq!(a.params, 25_175_552 + 2 * 16_435_712);
        assert!(!a.roofline(989e12, 3.35e12).compute_bound);
        // Causal attention forward at D=1024 (16 heads): 16 seqs · 16 heads · 2·512²·64.
        let f = KernelCase::new(KernelFamily::AttentionForward, 1024, 16, 16, 512, 32101);
        assert_eq!(f.flops, 16.0 * 16.0 * 2.0 * 512.0 * 512.0 * 64.0);
        assert_eq!(f.id(), "attention_fwd/d1024_b16_t512");
        // The head product at D=512: 2·8192·512·32101 useful FLOPs; bf16 x and W, f32 logits.
        let h = KernelCase::new(KernelFamily::MatmulHead, 512, 8, 16, 512, 32101);
        assert_eq!(h.flops, 2.0 * 8192.0 * 512.0 * 32101.0);
        assert_eq!(
            h.bytes,
            2.0 * (8192.0 * 512.0 + 512.0 * 32101.0) + 4.0 * 8192.0 * 32101.0
        );
        assert_eq!(h.id(), "matmul_head/d512_b16_t512");
        assert_eq!(standard_cases().len(), 33);
    }
}
