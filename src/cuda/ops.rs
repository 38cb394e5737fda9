//! Launch conventions of the hand-written kernels (`kernels/*.cu`): for each kernel (or fixed sequence
//! of kernels) its grid, block, dynamic shared memory and argument list, in one place. [`CudaBackend`]
//! composes its step from these, and the kernel bench (`src/cuda/kernel_bench.rs`) times the same calls.
//!
//! Every function queues work on the [`Ops`]'s stream and returns at once; buffers are typed device
//! views ([`DevSlice`]) of the element types the kernel reads and writes (a wrong element type does not
//! compile), of the sizes named in each function's documentation.
//!
//! [`CudaBackend`]: super::CudaBackend

use super::gpu::{elementwise_grid, DevBuf, DevSlice, GpuResult, KernelParam, Kernels, Stream};
use super::memory::{LN_ROWS_PER_BLOCK, REDUCE_BLOCKS};
use crate::backend::{AdamWStep, DecayMode};
use crate::model::{ParamLayout, HEAD_DIM};
use half::bf16;

/// Rows of an attention tile (queries and keys per block of the attention kernels).
pub const ATTN_TILE: usize = 64;

/// Shape of an attention call: `b` sequences of `t` positions, `h` heads of [`HEAD_DIM`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    /// Sequences.
    pub b: usize,
    /// Positions per sequence.
    pub t: usize,
    /// Heads.
    pub h: usize,
}

impl AttnShape {
    /// Query (or key) tiles per sequence.
    pub fn tiles(&self) -> usize {
        self.t.div_ceil(ATTN_TILE)
    }

    /// Elements of the row statistics (logsumexp, backward rowsums): `[B, H, T]`.
    pub fn stats_len(&self) -> usize {
        self.b * self.h * self.t
    }

    /// Elements of the QK-Norm scale-gradient partials of the backward (q then k).
    pub fn dscale_part_len(&self) -> usize {
        2 * self.b * self.h * self.tiles() * HEAD_DIM
    }
}

/// Buffers of the attention forward (`[B·T, D]` rows, head `h` in columns `h·64..h·64+64`).
#[derive(Clone, Copy, Debug)]
pub struct AttnForward<'a> {
    /// Output `[N, D]` bf16.
    pub out: DevSlice<'a, bf16>,
    /// Row logsumexp `[B, H, T]` f32.
    pub lse: DevSlice<'a, f32>,
    /// Pre-norm queries, keys, values `[N, D]` bf16.
    pub q: DevSlice<'a, bf16>,
    /// Keys.
    pub k: DevSlice<'a, bf16>,
    /// Values.
    pub v: DevSlice<'a, bf16>,
    /// QK-Norm scales `[64]` f32.
    pub q_scale: DevSlice<'a, f32>,
    /// Key norm scale.
    pub k_scale: DevSlice<'a, f32>,
    /// RoPE table `[T, 32]` (cos, sin) f32 pairs ([`Ops::rope_table_init`]).
    pub rope_cs: DevSlice<'a, f32>,
}

/// Buffers of the attention backward: the forward's inputs and outputs plus the gradients.
#[derive(Clone, Copy, Debug)]
pub struct AttnBackward<'a> {
    /// The forward's buffers (`out` and `lse` as it wrote them).
    pub fwd: AttnForward<'a>,
    /// Gradient of the output `[N, D]` bf16.
    pub dout: DevSlice<'a, bf16>,
    /// Gradients of q, k, v `[N, D]` bf16 (written).
    pub dq: DevSlice<'a, bf16>,
    /// Key gradient.
    pub dk: DevSlice<'a, bf16>,
    /// Value gradient.
    pub dv: DevSlice<'a, bf16>,
    /// Row sums `Σ out·dout` `[B, H, T]` f32 (scratch).
    pub delta: DevSlice<'a, f32>,
    /// Scale-gradient partials ([`AttnShape::dscale_part_len`] f32, scratch).
    pub dscale_part: DevSlice<'a, f32>,
    /// QK-Norm scale gradients `[64]` f32 (added to).
    pub dq_scale: DevSlice<'a, f32>,
    /// Key norm scale gradient.
    pub dk_scale: DevSlice<'a, f32>,
}

/// Buffers of a LayerNorm backward over `[N, D]` f32 rows.
#[derive(Clone, Copy, Debug)]
pub struct LnBackward<'a> {
    /// Upstream gradient `[N, D]` f32.
    pub dout: DevSlice<'a, f32>,
    /// The forward's input `[N, D]` f32.
    pub x: DevSlice<'a, f32>,
    /// Scale `[D]` f32.
    pub scale: DevSlice<'a, f32>,
    /// Row mean and reciprocal standard deviation `[N]` f32, from the forward.
    pub mean: DevSlice<'a, f32>,
    /// Reciprocal standard deviation.
    pub rstd: DevSlice<'a, f32>,
    /// Input gradient `[N, D]` f32 (written, or added to when accumulating).
    pub dx: DevSlice<'a, f32>,
    /// Scale-gradient partials ([`ln_part_len`] f32, scratch).
    pub part: DevSlice<'a, f32>,
    /// Scale gradient `[D]` f32 (added to).
    pub dscale: DevSlice<'a, f32>,
}

/// Elements of the LayerNorm backward's scale-gradient partials for `n` rows of `d`.
pub fn ln_part_len(n: usize, d: usize) -> usize {
    n.div_ceil(LN_ROWS_PER_BLOCK) * d
}

/// Contiguous runs of tensors with the same weight-decay flag, as (start, end, decayed): one AdamW
/// launch each.
pub fn adamw_runs(layout: &ParamLayout) -> Vec<(usize, usize, bool)> {
    let mut runs: Vec<(usize, usize, bool)> = Vec::new();
    for spec in &layout.tensors {
        let (r, dec) = (spec.range(), spec.decayed());
        match runs.last_mut() {
            Some(last) if last.2 == dec && last.1 == r.start => last.1 = r.end,
            _ => runs.push((r.start, r.end, dec)),
        }
    }
    runs
}

/// The optimizer state AdamW updates, all of one parameter count.
pub struct AdamWState<'a> {
    /// f32 master weights.
    pub params: &'a DevBuf<f32>,
    /// f32 gradients.
    pub grads: &'a DevBuf<f32>,
    /// f32 first moments.
    pub m: &'a DevBuf<f32>,
    /// f32 second moments.
    pub v: &'a DevBuf<f32>,
    /// bf16 working copy of the weights (written).
    pub wb: &'a DevBuf<bf16>,
}

/// The kernels of one device, launched on one stream.
pub struct Ops<'a> {
    kernels: &'a Kernels,
    stream: &'a Stream,
}

impl<'a> Ops<'a> {
    /// Launch `kernels` on `stream`.
    pub fn new(kernels: &'a Kernels, stream: &'a Stream) -> Self {
        Ops { kernels, stream }
    }

    fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        args: &[&dyn KernelParam],
    ) -> GpuResult<()> {
        self.kernels
            .launch(self.stream, name, grid, block, smem, args)
    }

    /// A grid-stride elementwise kernel over `len` elements: `name(bufs..., (long long) len)`.
    fn elementwise(&self, name: &str, len: usize, bufs: &[&dyn KernelParam]) -> GpuResult<()> {
        let nn = len as i64;
        let mut args: Vec<&dyn KernelParam> = bufs.to_vec();
        args.push(&nn);
        self.launch(name, (elementwise_grid(len), 1, 1), 256, 0, &args)
    }

    /// `y[..n] = bf16(x[..n])`.
    pub fn cast_f32_to_bf16(&self, x: DevSlice<f32>, y: DevSlice<bf16>, n: usize) -> GpuResult<()> {
        let (x, y) = (x.sub(0, n)?, y.sub(0, n)?);
        self.elementwise("cast_f32_to_bf16", n, &[&x, &y])
    }

    /// Fill the RoPE table `cs` (`[t, 32]` f32 pairs) for positions `0..t`.
    pub fn rope_table_init(&self, cs: DevSlice<f32>, t: usize) -> GpuResult<()> {
        self.launch(
            "rope_table_init",
            ((t * 32).div_ceil(256) as u32, 1, 1),
            256,
            0,
            &[&cs, &(t as i32)],
        )
    }

    /// `out[n, d] = embed[tokens[n], :]` (embed `[v, d]` f32, tokens `[n]` u16, out f32).
    pub fn embedding_forward(
        &self,
        embed: DevSlice<f32>,
        tokens: DevSlice<u16>,
        out: DevSlice<f32>,
        (n, d, v): (usize, usize, usize),
    ) -> GpuResult<()> {
        self.launch(
            "embedding_forward_f32",
            (elementwise_grid(n * d), 1, 1),
            256,
            0,
            &[&embed, &tokens, &out, &(n as i32), &(d as i32), &(v as i32)],
        )
    }

    /// `dembed[ids[u], :] += Σ dout[positions[k], :]` over the CSR `offsets` (`n_ids + 1` entries).
    #[allow(clippy::too_many_arguments)]
    pub fn embedding_backward(
        &self,
        dout: DevSlice<f32>,
        ids: DevSlice<u16>,
        offsets: DevSlice<i32>,
        positions: DevSlice<i32>,
        dembed: DevSlice<f32>,
        n_ids: usize,
        d: usize,
    ) -> GpuResult<()> {
        self.launch(
            "embedding_backward_f32",
            (n_ids as u32, 1, 1),
            128,
            0,
            &[
                &dout,
                &ids,
                &offsets,
                &positions,
                &dembed,
                &(n_ids as i32),
                &(d as i32),
            ],
        )
    }

    /// LayerNorm of `n` f32 rows of `d` into bf16 `out`, with the row mean and rstd (f32 `[n]`).
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_forward_bf16(
        &self,
        x: DevSlice<f32>,
        scale: DevSlice<f32>,
        out: DevSlice<bf16>,
        mean: DevSlice<f32>,
        rstd: DevSlice<f32>,
        n: usize,
        d: usize,
    ) -> GpuResult<()> {
        self.launch(
            "layernorm_forward_bf16",
            (n.div_ceil(4) as u32, 1, 1),
            128,
            0,
            &[&x, &scale, &out, &mean, &rstd, &(n as i32), &(d as i32)],
        )
    }

    /// LayerNorm backward over `n` rows of `d`: `dx` (written, or added to when `accumulate`) and the
    /// scale gradient added to `dscale` (partials, then a fixed-order reduction).
    pub fn layernorm_backward(
        &self,
        a: &LnBackward,
        n: usize,
        d: usize,
        accumulate: bool,
    ) -> GpuResult<()> {
        let pp = n.div_ceil(LN_ROWS_PER_BLOCK);
        self.launch(
            "layernorm_backward_f32",
            (pp as u32, 1, 1),
            256,
            (d * 4) as u32,
            &[
                &a.dout,
                &a.x,
                &a.scale,
                &a.mean,
                &a.rstd,
                &a.dx,
                &a.part,
                &(n as i32),
                &(d as i32),
                &(LN_ROWS_PER_BLOCK as i32),
                &(accumulate as i32),
            ],
        )?;
        self.launch(
            "layernorm_dscale_reduce_f32",
            (d.div_ceil(256) as u32, 1, 1),
            256,
            0,
            &[&a.part, &a.dscale, &(pp as i32), &(d as i32)],
        )
    }

    /// Fused causal attention forward (QK-Norm, RoPE, softmax, ·V).
    pub fn attention_forward(&self, s: AttnShape, a: &AttnForward) -> GpuResult<()> {
        self.launch(
            "attention_forward",
            (s.tiles() as u32, s.h as u32, s.b as u32),
            128,
            0,
            &[
                &a.out,
                &a.lse,
                &a.q,
                &a.k,
                &a.v,
                &a.q_scale,
                &a.k_scale,
                &a.rope_cs,
                &(s.b as i32),
                &(s.t as i32),
                &(s.h as i32),
            ],
        )
    }

    /// Fused causal attention backward: the row sums, the dQ/dK/dV kernel, and the QK-Norm
    /// scale-gradient reduction.
    pub fn attention_backward(&self, s: AttnShape, a: &AttnBackward) -> GpuResult<()> {
        let (b, t, h) = (s.b as i32, s.t as i32, s.h as i32);
        let f = &a.fwd;
        self.launch(
            "attention_backward_prep",
            ((s.b * s.t * s.h * 8).div_ceil(256) as u32, 1, 1),
            256,
            0,
            &[&a.delta, &f.out, &a.dout, &b, &t, &h],
        )?;
        self.launch(
            "attention_backward",
            (2 * s.tiles() as u32, s.h as u32, s.b as u32),
            128,
            0,
            &[
                &a.dq,
                &a.dk,
                &a.dv,
                &a.dscale_part,
                &a.dout,
                &f.q,
                &f.k,
                &f.v,
                &f.lse,
                &a.delta,
                &f.q_scale,
                &f.k_scale,
                &f.rope_cs,
                &b,
                &t,
                &h,
            ],
        )?;
        self.launch(
            "qk_norm_scale_grad_reduce",
            (2, 1, 1),
            1024,
            0,
            &[
                &a.dq_scale,
                &a.dk_scale,
                &a.dscale_part,
                &((s.b * s.h * s.tiles()) as i32),
            ],
        )
    }

    /// `g = bf16(gelu_tanh(u))` over the first `len` bf16 elements.
    pub fn gelu_forward_bf16(
        &self,
        u: DevSlice<bf16>,
        g: DevSlice<bf16>,
        len: usize,
    ) -> GpuResult<()> {
        let (u, g) = (u.sub(0, len)?, g.sub(0, len)?);
        self.elementwise("gelu_forward_bf16", len, &[&u, &g])
    }

    /// `du = bf16(dg·gelu'(u))` over the first `len` elements.
    pub fn gelu_backward_bf16(
        &self,
        dg: DevSlice<f32>,
        u: DevSlice<bf16>,
        du: DevSlice<bf16>,
        len: usize,
    ) -> GpuResult<()> {
        let (dg, u, du) = (dg.sub(0, len)?, u.sub(0, len)?, du.sub(0, len)?);
        self.elementwise("gelu_backward_bf16", len, &[&dg, &u, &du])
    }

    /// Softmax cross-entropy of `n` f32 rows of `v` logits, `ld >= v` apart (columns `v..ld` ignored),
    /// against u16 `targets` (pad 0 gives 0): the per-row loss into `rows` (`[n]` f32), and with `grad`
    /// the bf16 logit gradient in place: row r's `[ld]` gradient (padding columns 0) over the first half
    /// of row r's bytes, a bf16 `[n, ld]` matrix with row stride `2·ld`.
    pub fn cross_entropy_f32(
        &self,
        logits: DevSlice<f32>,
        targets: DevSlice<u16>,
        rows: DevSlice<f32>,
        (n, v, ld): (usize, usize, usize),
        grad: bool,
    ) -> GpuResult<()> {
        self.launch(
            "cross_entropy_f32",
            (n as u32, 1, 1),
            1024,
            0,
            &[
                &logits,
                &targets,
                &rows,
                &(v as i32),
                &(ld as i32),
                &(grad as i32),
            ],
        )
    }

    /// Per-row target log-probability into `logp` (`[n]` f32) and argmax hit into `hit` (`[n]` i32, 1 or 0)
    /// of `n` f32 rows of `v` logits, `ld >= v` apart; the logits are only read (task evaluation).
    pub fn token_scores_f32(
        &self,
        logits: DevSlice<f32>,
        targets: DevSlice<u16>,
        (logp, hit): (DevSlice<f32>, DevSlice<i32>),
        (n, v, ld): (usize, usize, usize),
    ) -> GpuResult<()> {
        self.launch(
            "token_scores_f32",
            (n as u32, 1, 1),
            1024,
            0,
            &[&logits, &targets, &logp, &hit, &(v as i32), &(ld as i32)],
        )
    }

    /// Σ of `n` f32 values (of their squares when `squares`) into `out[0]` (f64), through the fixed
    /// [`REDUCE_BLOCKS`] partials in `part` (f64): deterministic.
    pub fn reduce(
        &self,
        x: DevSlice<f32>,
        n: usize,
        squares: bool,
        part: DevSlice<f64>,
        out: DevSlice<f64>,
    ) -> GpuResult<()> {
        let x = x.sub(0, n)?;
        let part = part.sub(0, REDUCE_BLOCKS)?;
        let name = if squares {
            "sum_squares_partials_f32"
        } else {
            "sum_partials_f32"
        };
        self.launch(
            name,
            (REDUCE_BLOCKS as u32, 1, 1),
            256,
            0,
            &[&x, &(n as i64), &part],
        )?;
        self.launch(
            "sum_finish_f64",
            (1, 1, 1),
            256,
            0,
            &[&part, &(REDUCE_BLOCKS as i32), &out],
        )
    }

    /// One AdamW step over every parameter: one launch per run of [`adamw_runs`] (the bf16 working
    /// copy is written too).
    pub fn adamw(
        &self,
        st: &AdamWState,
        runs: &[(usize, usize, bool)],
        hp: &AdamWStep,
    ) -> GpuResult<()> {
        let t = hp.step.max(1).min(i32::MAX as u64) as i32;
        let inv_bc1 = (1.0 / (1.0 - (hp.beta1 as f64).powi(t))) as f32;
        let inv_bc2 = (1.0 / (1.0 - (hp.beta2 as f64).powi(t))) as f32;
        let mode: i32 = match hp.decay_mode {
            DecayMode::Coupled => 0,
            DecayMode::Independent => 1,
        };
        // No per-element decay mask: each run has one decay flag.
        let no_mask: u64 = 0;
        for &(start, end, dec) in runs {
            let n = end - start;
            self.launch(
                "adamw_f32",
                (elementwise_grid(n), 1, 1),
                256,
                0,
                &[
                    &st.params.sub(start, n)?,
                    &st.grads.sub(start, n)?,
                    &st.m.sub(start, n)?,
                    &st.v.sub(start, n)?,
                    &st.wb.sub(start, n)?,
                    &no_mask,
                    &(dec as i32),
                    &(n as i64),
                    &hp.lr,
                    &hp.beta1,
                    &hp.beta2,
                    &hp.eps,
                    &hp.weight_decay,
                    &mode,
                    &hp.grad_scale,
                    &inv_bc1,
                    &inv_bc2,
                ],
            )?;
        }
        Ok(())
    }
}
