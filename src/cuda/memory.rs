//! Device-memory plan of the CUDA backend: what is allocated, and how much, before allocating it.
//!
//! Persistent state per parameter: f32 master weight, f32 gradient, f32 AdamW m and v, bf16 working
//! copy (18 bytes). Activations keep only what the backward needs: per block the f32 block input and
//! the f32 residual after attention (LayerNorm backward inputs), the bf16 LN outputs (weight-gradient
//! operands), bf16 pre-norm q, k, v and the bf16 attention output (the fused attention backward
//! recomputes QK-Norm, RoPE and the probabilities), the bf16 MLP pre-activation (GELU is recomputed in
//! the backward), and the f32 row statistics. Nothing T×T is stored. Scratch buffers are shared by all
//! blocks.

use crate::model::{ModelConfig, HEAD_DIM};

/// Rows of the LayerNorm backward handled per block (partial dscale sums: ceil(N / this) rows of D).
pub const LN_ROWS_PER_BLOCK: usize = 32;
/// Blocks of the first pass of the deterministic reductions (fixed: the result depends on it).
pub const REDUCE_BLOCKS: usize = 264;
/// Device memory left free for the driver, cuBLASLt's internal needs and fragmentation.
pub const RESERVE_BYTES: usize = 768 << 20;

/// Element type of a planned buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// 4-byte float.
    F32,
    /// 2-byte brain float.
    Bf16,
    /// 8-byte float (the reductions' partial sums).
    F64,
    /// Bytes (token staging, the cuBLASLt workspace).
    U8,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 => 2,
            DType::F64 => 8,
            DType::U8 => 1,
        }
    }

    /// The name the typed buffers use ([`super::gpu::DevElem::NAME`]).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
            DType::F64 => "f64",
            DType::U8 => "u8",
        }
    }
}

/// One buffer of the memory plan: `count` allocations of `elems` elements of `dtype` (`count` is the
/// number of blocks for per-block activations, 2 for the token staging slots), reported under `item`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanBuf {
    /// The buffer's name, with its shape as a suffix (`x_NxD`: N = B·T rows of D).
    pub name: &'static str,
    /// Element type.
    pub dtype: DType,
    /// Elements per allocation.
    pub elems: usize,
    /// Allocations of this buffer.
    pub count: usize,
    /// The line of [`activation_items`] / [`state_items`] it is reported under.
    pub item: &'static str,
}

impl PlanBuf {
    /// Bytes of all `count` allocations.
    pub fn bytes(&self) -> usize {
        self.elems * self.dtype.size() * self.count
    }
}

/// Report item of the cuBLASLt workspace in [`state_plan`].
pub const WORKSPACE_ITEM: &str = "cuBLASLt workspace";

/// The persistent buffers of the backend for `cfg` with `n_params` parameters in the device layout
/// ([`super::layout`]): what `CudaBackend` allocates when it starts (the cuBLASLt workspace only on a
/// GPU, with `workspace`). A forward-only backend keeps one-element placeholders for the gradients and
/// the two AdamW moments.
pub fn state_plan(
    cfg: &ModelConfig,
    n_params: usize,
    forward_only: bool,
    workspace: bool,
) -> Vec<PlanBuf> {
    let state = if forward_only { 1 } else { n_params };
    let buf = |name, dtype, elems, item| PlanBuf {
        name,
        dtype,
        elems,
        count: 1,
        item,
    };
    let mut v = vec![
        buf("params", DType::F32, n_params, "f32 parameters"),
        buf("wb", DType::Bf16, n_params, "bf16 weights"),
        buf("grads", DType::F32, state, "f32 gradients"),
        buf("m", DType::F32, state, "AdamW moments (f32)"),
        buf("v", DType::F32, state, "AdamW moments (f32)"),
        buf(
            "rope_cs_Tx32x2",
            DType::F32,
            cfg.seq_len * 32 * 2,
            "RoPE table",
        ),
        buf("red_part", DType::F64, REDUCE_BLOCKS, "reduction partials"),
        buf("red_out", DType::F64, 1, "reduction partials"),
    ];
    if workspace {
        v.push(buf(
            "workspace",
            DType::U8,
            super::blas::WORKSPACE_BYTES,
            WORKSPACE_ITEM,
        ));
    }
    v
}

/// Bytes of the persistent state of a training backend on a GPU ([`state_plan`]: parameters,
/// gradients, moments, bf16 copy, cuBLASLt workspace, RoPE table, reductions) for `cfg` with
/// `n_params` parameters in the device layout.
pub fn state_bytes(cfg: &ModelConfig, n_params: usize) -> usize {
    plan_bytes(&state_plan(cfg, n_params, false, true))
}

/// [`state_plan`] itemised (name, bytes), in plan order.
pub fn state_items(
    cfg: &ModelConfig,
    n_params: usize,
    forward_only: bool,
    workspace: bool,
) -> Vec<(&'static str, usize)> {
    items(&state_plan(cfg, n_params, forward_only, workspace))
}

/// The activations and scratch buffers for micro-batch `b`: the one table that the backend allocates
/// from and that [`activation_items`] reports. Names carry the shape (N = B·T rows; D the width; Vp the
/// padded vocabulary; B×H×T the attention's row statistics).
pub fn activation_plan(cfg: &ModelConfig, b: usize) -> Vec<PlanBuf> {
    use DType::{Bf16, F32, U8};
    let (d, t, l) = (cfg.d_model, cfg.seq_len, cfg.n_layers);
    let vp = super::layout::padded_vocab(cfg.vocab_size);
    let h = d / HEAD_DIM;
    let n = b * t;
    let nd = n * d;
    let bht = b * h * t;
    let blocks = "per-block activations";
    let per = |name, dtype, elems| PlanBuf {
        name,
        dtype,
        elems,
        count: l,
        item: blocks,
    };
    let one = |name, dtype, elems, item| PlanBuf {
        name,
        dtype,
        elems,
        count: 1,
        item,
    };
    let last = "last residual + final LN";
    let nd_scratch = "[N,D] scratch (dres, t1 f32; dres, dy, dq, dk, dv bf16)";
    let n4d_scratch = "[N,4D] scratch (gelu out, du bf16; dg f32)";
    let attn_ws = "attention backward workspace";
    vec![
        // What each block keeps from its forward for its backward.
        per("x_NxD", F32, nd),
        per("xn1_NxD", Bf16, nd),
        per("mean1_N", F32, n),
        per("rstd1_N", F32, n),
        per("q_NxD", Bf16, nd),
        per("k_NxD", Bf16, nd),
        per("v_NxD", Bf16, nd),
        per("y_NxD", Bf16, nd),
        per("lse_BxHxT", F32, bht),
        per("h_NxD", F32, nd),
        per("xn2_NxD", Bf16, nd),
        per("mean2_N", F32, n),
        per("rstd2_N", F32, n),
        per("u_Nx4D", Bf16, 4 * nd),
        one("last_NxD", F32, nd, last),
        one("xf_NxD", Bf16, nd, last),
        one("meanf_N", F32, n, last),
        one("rstdf_N", F32, n, last),
        one(
            "logits_NxVp",
            F32,
            n * vp,
            "logits (f32, their bf16 gradient in place)",
        ),
        one("loss_rows_N", F32, n, "per-row losses"),
        one("dres_NxD", F32, nd, nd_scratch),
        one("t1_NxD", F32, nd, nd_scratch),
        one("dres_b_NxD", Bf16, nd, nd_scratch),
        one("dy_NxD", Bf16, nd, nd_scratch),
        one("dq_NxD", Bf16, nd, nd_scratch),
        one("dk_NxD", Bf16, nd, nd_scratch),
        one("dv_NxD", Bf16, nd, nd_scratch),
        one("g_Nx4D", Bf16, 4 * nd, n4d_scratch),
        one("dg_Nx4D", F32, 4 * nd, n4d_scratch),
        one("du_Nx4D", Bf16, 4 * nd, n4d_scratch),
        one("delta_BxHxT", F32, bht, attn_ws),
        one(
            "dscale_part",
            F32,
            2 * b * h * t.div_ceil(64) * HEAD_DIM,
            attn_ws,
        ),
        one(
            "ln_part",
            F32,
            n.div_ceil(LN_ROWS_PER_BLOCK) * d,
            "LayerNorm dscale partials",
        ),
        PlanBuf {
            name: "token_slot",
            dtype: U8,
            elems: token_bytes(n),
            count: 2,
            item: "token staging (2 slots)",
        },
    ]
}

/// Bytes of one set of activations and scratch buffers for micro-batch `b`, itemised (name, bytes):
/// [`activation_plan`] summed by report item, in plan order.
pub fn activation_items(cfg: &ModelConfig, b: usize) -> Vec<(&'static str, usize)> {
    items(&activation_plan(cfg, b))
}

/// Total of [`activation_items`].
pub fn activation_bytes(cfg: &ModelConfig, b: usize) -> usize {
    plan_bytes(&activation_plan(cfg, b))
}

/// Total bytes of a plan.
pub fn plan_bytes(plan: &[PlanBuf]) -> usize {
    plan.iter().map(PlanBuf::bytes).sum()
}

/// A plan's bytes summed by report item, in the order the items first appear.
fn items(plan: &[PlanBuf]) -> Vec<(&'static str, usize)> {
    let mut out: Vec<(&'static str, usize)> = Vec::new();
    for p in plan {
        match out.iter_mut().find(|(item, _)| *item == p.item) {
            Some((_, bytes)) => *bytes += p.bytes(),
            None => out.push((p.item, p.bytes())),
        }
    }
    out
}

fn align16(x: usize) -> usize {
    x.div_ceil(16) * 16
}

/// Byte offsets inside one token staging slot for `n` positions: inputs u16 `[n]`, targets u16 `[n]`, the
/// embedding-backward CSR (distinct ids u16 `[≤ n]`, offsets i32 `[≤ n + 1]`, positions i32 `[n]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenLayout {
    /// Byte offset of the input ids (u16 `[n]`).
    pub inputs: usize,
    /// Byte offset of the target ids (u16 `[n]`).
    pub targets: usize,
    /// Distinct ids.
    pub ids: usize,
    /// Offsets into positions.
    pub offsets: usize,
    /// Positions grouped by id.
    pub positions: usize,
    /// Total bytes.
    pub total: usize,
}

impl TokenLayout {
    /// Layout for `n` positions.
    pub fn new(n: usize) -> TokenLayout {
        let inputs = 0;
        let targets = inputs + align16(2 * n);
        let ids = targets + align16(2 * n);
        let offsets = ids + align16(2 * n);
        let positions = offsets + align16(4 * (n + 1));
        let total = positions + align16(4 * n);
        TokenLayout {
            inputs,
            targets,
            ids,
            offsets,
            positions,
            total,
        }
    }
}

/// Bytes of one token staging slot for `n` positions.
pub fn token_bytes(n: usize) -> usize {
    TokenLayout::new(n).total
}

/// GiB, for messages.
pub fn gib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::layout::DeviceLayout;
    use crate::model::config::preset;

    #[test]
    fn d2048_fits_80gb_with_micro_batch_16() {
        let cfg = preset("d2048").unwrap();
        let p = DeviceLayout::new(&cfg).total();
        let total = state_bytes(&cfg, p) + activation_bytes(&cfg, 16) + RESERVE_BYTES;
        assert!(
            gib(total) < 76.0,
            "d2048 at micro-batch 16 needs {:.1} GiB",
            gib(total)
        );
        // And the plan is not trivially small: parameters alone are > 20 GiB.
        assert!(gib(state_bytes(&cfg, p)) > 20.0);
    }

    #[test]
    fn activations_grow_linearly_with_the_micro_batch() {
        let cfg = preset("d512").unwrap();
        let a1 = activation_bytes(&cfg, 1);
        let a4 = activation_bytes(&cfg, 4);
        assert!(a4 > 3 * a1 && a4 <= 4 * a1 + 4096);
    }

    #[test]
    fn activation_items_keep_their_hand_written_sizes() {
        // The sizes the itemised report gave before the plan became one table.
        let cfg = preset("d512").unwrap();
        let b = 3;
        let (d, t, l) = (cfg.d_model, cfg.seq_len, cfg.n_layers);
        let vp = crate::cuda::layout::padded_vocab(cfg.vocab_size);
        let (h, n) = (d / HEAD_DIM, b * t);
        let nd = n * d;
        let per_layer = 4 * nd
            + 2 * nd
            + 3 * 2 * nd
            + 2 * nd
            + 4 * b * h * t
            + 4 * nd
            + 2 * nd
            + 2 * 4 * nd
            + 4 * 4 * n;
        let want = vec![
            ("per-block activations", l * per_layer),
            ("last residual + final LN", 4 * nd + 2 * nd + 8 * n),
            ("logits (f32, their bf16 gradient in place)", n * vp * 4),
            ("per-row losses", 4 * n),
            (
                "[N,D] scratch (dres, t1 f32; dres, dy, dq, dk, dv bf16)",
                2 * 4 * nd + 5 * 2 * nd,
            ),
            (
                "[N,4D] scratch (gelu out, du bf16; dg f32)",
                4 * nd * (2 + 2 + 4),
            ),
            (
                "attention backward workspace",
                4 * b * h * t + 4 * 2 * b * h * t.div_ceil(64) * HEAD_DIM,
            ),
            (
                "LayerNorm dscale partials",
                4 * n.div_ceil(LN_ROWS_PER_BLOCK) * d,
            ),
            ("token staging (2 slots)", 2 * token_bytes(n)),
        ];
        assert_eq!(activation_items(&cfg, b), want);
    }

    #[test]
    fn token_layout_is_aligned_and_disjoint() {
        for n in [1usize, 7, 512, 8192] {
            let l = TokenLayout::new(n);
            for o in [l.inputs, l.targets, l.ids, l.offsets, l.positions, l.total] {
                assert_eq!(o % 16, 0);
            }
            assert!(l.targets >= 2 * n && l.ids >= l.targets + 2 * n);
            assert!(l.offsets >= l.ids + 2 * n && l.positions >= l.offsets + 4 * (n + 1));
            assert!(l.total >= l.positions + 4 * n);
        }
    }
}
