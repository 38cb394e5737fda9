//! [`CudaBackend`]: the whole training step on one GPU, mixed precision, composed from the hand-written
//! kernels (`kernels/*.cu`) and cuBLASLt products, with the same math as `src/cpu/model.rs`.
//!
//! Precision: f32 master weights, gradients and AdamW moments; bf16 working copies of the weights
//! (written by the AdamW kernel); bf16 matmul operands and activations, fp32 accumulation; the residual
//! stream, LayerNorm statistics, logits, softmax and loss in f32.
//!
//! Parameters live in the device layout of [`super::layout`]: the contract's, with the head's rows padded
//! to an aligned vocabulary Vp (zeros that stay zero). The logits are f32 `[N, Vp]`; the fused
//! cross-entropy writes their bf16 gradient over the first half of each row (row stride 2·Vp), the operand
//! of the two head products. Everything that crosses the [`Backend`] interface is in the contract layout.
//!
//! Streams: everything runs in order on one compute stream. Token ids (and the embedding-backward CSR
//! built on the host) go through two pinned staging slots and are uploaded on a second stream, ordered
//! with events: the compute stream waits for the upload, the upload into a slot waits until the compute
//! stream has finished with that slot's previous batch. A training micro-batch returns as soon as its
//! loss is known: the backward stays queued on the GPU while the host validates and uploads the next
//! batch.
//!
//! Determinism: no float atomics anywhere (fixed-order reductions in every kernel, one cuBLASLt
//! algorithm per product shape), so two runs from one seed give bitwise-identical losses.

use super::blas::{Blas, Gemm};
use super::gpu::{
    DevBuf, DevElem, DevSlice, Event, Gpu, GpuError, GpuResult, KernelExec, Kernels, PinnedBuf,
};
use super::layout::DeviceLayout;
use super::memory::{self, PlanBuf, TokenLayout, RESERVE_BYTES};
use super::nvrtc;
use super::ops::{self, AdamWState, AttnBackward, AttnForward, AttnShape, LnBackward, Ops};
use crate::backend::{
    check_shape, AdamWStep, Backend, BackendError, DeviceInfo, DeviceKind, LossSum, Precision,
    TokenBatch, TokenScores,
};
use crate::model::{ModelConfig, HEAD_DIM};
use half::bf16;
use std::sync::Arc;

/// Allocates the buffers of a memory plan ([`memory::activation_plan`], [`memory::state_plan`]) by
/// name: each allocation takes its size and element type from the table, and [`PlanAlloc::finish`]
/// checks that every planned buffer was allocated as often as planned, so the plan (what the memory
/// check and the report count) and the allocations cannot drift apart.
struct PlanAlloc<'g> {
    gpu: &'g Gpu,
    plan: Vec<PlanBuf>,
    /// Allocations made of each plan entry.
    taken: Vec<usize>,
}

impl<'g> PlanAlloc<'g> {
    fn new(gpu: &'g Gpu, plan: Vec<PlanBuf>) -> Self {
        let taken = vec![0; plan.len()];
        PlanAlloc { gpu, plan, taken }
    }

    /// The next allocation of plan entry `name` (uninitialised).
    fn take<T: DevElem>(&mut self, name: &str) -> GpuResult<DevBuf<T>> {
        let i = self
            .plan
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| GpuError::Bounds(format!("{name} is not in the memory plan")))?;
        let p = &self.plan[i];
        if p.dtype.name() != T::NAME {
            return Err(GpuError::Bounds(format!(
                "{name} is planned as {} but allocated as {}",
                p.dtype.name(),
                T::NAME
            )));
        }
        if self.taken[i] >= p.count {
            return Err(GpuError::Bounds(format!(
                "{name} is planned {} time(s) but allocated more often",
                p.count
            )));
        }
        self.taken[i] += 1;
        self.gpu.alloc::<T>(p.elems, name)
    }

    /// Count an allocation of plan entry `name` made elsewhere (cuBLASLt's workspace, which
    /// [`Blas::new`] allocates on the same device, so the device's byte count still sees it).
    fn take_external(&mut self, name: &str) -> GpuResult<()> {
        let i = self
            .plan
            .iter()
            .position(|p| p.name == name || p.item == name)
            .ok_or_else(|| GpuError::Bounds(format!("{name} is not in the memory plan")))?;
        self.taken[i] += 1;
        Ok(())
    }

    /// [`PlanAlloc::take`], zeroed.
    fn take_zeroed<T: DevElem>(&mut self, name: &str) -> GpuResult<DevBuf<T>> {
        let b = self.take::<T>(name)?;
        b.zero(&self.gpu.stream)?;
        Ok(b)
    }

    /// Check that every entry was allocated exactly as often as planned.
    fn finish(self) -> GpuResult<()> {
        for (p, &n) in self.plan.iter().zip(&self.taken) {
            if n != p.count {
                return Err(GpuError::Bounds(format!(
                    "{} is planned {} time(s) but allocated {n} time(s)",
                    p.name, p.count
                )));
            }
        }
        Ok(())
    }
}

/// What one block keeps from its forward for its backward (N = B·T rows).
#[allow(non_snake_case)]
struct LayerActs {
    /// Block input (the residual stream), f32.
    x_NxD: DevBuf<f32>,
    /// LN1 output, its row means and reciprocal standard deviations.
    xn1_NxD: DevBuf<bf16>,
    mean1_N: DevBuf<f32>,
    rstd1_N: DevBuf<f32>,
    /// Pre-norm queries, keys and values.
    q_NxD: DevBuf<bf16>,
    k_NxD: DevBuf<bf16>,
    v_NxD: DevBuf<bf16>,
    /// Attention output (input of wo) and its row logsumexp.
    y_NxD: DevBuf<bf16>,
    lse_BxHxT: DevBuf<f32>,
    /// Residual after attention, f32.
    h_NxD: DevBuf<f32>,
    /// LN2 output and statistics.
    xn2_NxD: DevBuf<bf16>,
    mean2_N: DevBuf<f32>,
    rstd2_N: DevBuf<f32>,
    /// MLP pre-activation (GELU is recomputed in the backward).
    u_Nx4D: DevBuf<bf16>,
}

/// Activations and scratch for up to `cap_b` sequences, allocated from [`memory::activation_plan`]
/// (the token staging slots of that plan live in [`CudaBackend::slots`]).
#[allow(non_snake_case)]
struct Acts {
    cap_b: usize,
    layers: Vec<LayerActs>,
    /// Output of the last block, f32.
    last_NxD: DevBuf<f32>,
    xf_NxD: DevBuf<bf16>,
    meanf_N: DevBuf<f32>,
    rstdf_N: DevBuf<f32>,
    /// Logits f32; after the cross-entropy, row r's bf16 gradient `[Vp]` fills the first half of row
    /// r's bytes (a bf16 `[N, Vp]` matrix with row stride 2·Vp).
    logits_NxVp: DevBuf<f32>,
    loss_rows_N: DevBuf<f32>,
    /// Scratch: the residual gradient (f32 and bf16) and an f32 `[N, D]` temporary.
    dres_NxD: DevBuf<f32>,
    t1_NxD: DevBuf<f32>,
    dres_b_NxD: DevBuf<bf16>,
    /// Gradients of the attention output, q, k and v.
    dy_NxD: DevBuf<bf16>,
    dq_NxD: DevBuf<bf16>,
    dk_NxD: DevBuf<bf16>,
    dv_NxD: DevBuf<bf16>,
    /// GELU output (forward, and recomputed in the backward), its f32 gradient, and the
    /// pre-activation's gradient.
    g_Nx4D: DevBuf<bf16>,
    dg_Nx4D: DevBuf<f32>,
    du_Nx4D: DevBuf<bf16>,
    /// Attention backward row sums and QK-Norm scale partials; LayerNorm scale partials.
    delta_BxHxT: DevBuf<f32>,
    dscale_part: DevBuf<f32>,
    ln_part: DevBuf<f32>,
}

impl Acts {
    /// Allocate one set from the plan (the caller takes the token slots and finishes the plan).
    fn new(a: &mut PlanAlloc, n_layers: usize, b: usize) -> GpuResult<Acts> {
        let mut layers = Vec::with_capacity(n_layers);
        for _ in 0..n_layers {
            layers.push(LayerActs {
                x_NxD: a.take("x_NxD")?,
                xn1_NxD: a.take("xn1_NxD")?,
                mean1_N: a.take("mean1_N")?,
                rstd1_N: a.take("rstd1_N")?,
                q_NxD: a.take("q_NxD")?,
                k_NxD: a.take("k_NxD")?,
                v_NxD: a.take("v_NxD")?,
                y_NxD: a.take("y_NxD")?,
                lse_BxHxT: a.take("lse_BxHxT")?,
                h_NxD: a.take("h_NxD")?,
                xn2_NxD: a.take("xn2_NxD")?,
                mean2_N: a.take("mean2_N")?,
                rstd2_N: a.take("rstd2_N")?,
                u_Nx4D: a.take("u_Nx4D")?,
            });
        }
        Ok(Acts {
            cap_b: b,
            layers,
            last_NxD: a.take("last_NxD")?,
            xf_NxD: a.take("xf_NxD")?,
            meanf_N: a.take("meanf_N")?,
            rstdf_N: a.take("rstdf_N")?,
            logits_NxVp: a.take("logits_NxVp")?,
            loss_rows_N: a.take("loss_rows_N")?,
            dres_NxD: a.take("dres_NxD")?,
            t1_NxD: a.take("t1_NxD")?,
            dres_b_NxD: a.take("dres_b_NxD")?,
            dy_NxD: a.take("dy_NxD")?,
            dq_NxD: a.take("dq_NxD")?,
            dk_NxD: a.take("dk_NxD")?,
            dv_NxD: a.take("dv_NxD")?,
            g_Nx4D: a.take("g_Nx4D")?,
            dg_Nx4D: a.take("dg_Nx4D")?,
            du_Nx4D: a.take("du_Nx4D")?,
            delta_BxHxT: a.take("delta_BxHxT")?,
            dscale_part: a.take("dscale_part")?,
            ln_part: a.take("ln_part")?,
        })
    }
}

/// One block's weights as the kernels read them: the matrices from the bf16 working copy, the norm
/// scales from the f32 master weights. Views into the parameter arenas, cut by
/// [`ModelWeights::new`] from the device layout.
#[allow(non_snake_case)]
struct BlockWeights<'a> {
    ln1_D: DevSlice<'a, f32>,
    wq_DxD: DevSlice<'a, bf16>,
    wk_DxD: DevSlice<'a, bf16>,
    wv_DxD: DevSlice<'a, bf16>,
    q_norm_64: DevSlice<'a, f32>,
    k_norm_64: DevSlice<'a, f32>,
    wo_DxD: DevSlice<'a, bf16>,
    ln2_D: DevSlice<'a, f32>,
    w1_Dx4D: DevSlice<'a, bf16>,
    w2_4DxD: DevSlice<'a, bf16>,
}

/// The whole model's weights (see [`BlockWeights`]).
#[allow(non_snake_case)]
struct ModelWeights<'a> {
    embed_VxD: DevSlice<'a, f32>,
    blocks: Vec<BlockWeights<'a>>,
    final_norm_D: DevSlice<'a, f32>,
    head_DxVp: DevSlice<'a, bf16>,
}

/// Every tensor of one parameter-shaped buffer, by name: the gradients (all f32), or any buffer
/// of the device layout's shape.
#[allow(non_snake_case)]
struct BlockTensors<'a, T: DevElem> {
    ln1_D: DevSlice<'a, T>,
    wq_DxD: DevSlice<'a, T>,
    wk_DxD: DevSlice<'a, T>,
    wv_DxD: DevSlice<'a, T>,
    q_norm_64: DevSlice<'a, T>,
    k_norm_64: DevSlice<'a, T>,
    wo_DxD: DevSlice<'a, T>,
    ln2_D: DevSlice<'a, T>,
    w1_Dx4D: DevSlice<'a, T>,
    w2_4DxD: DevSlice<'a, T>,
}

/// A parameter-shaped buffer cut into its tensors (see [`BlockTensors`]).
#[allow(non_snake_case)]
struct ModelTensors<'a, T: DevElem> {
    embed_VxD: DevSlice<'a, T>,
    blocks: Vec<BlockTensors<'a, T>>,
    final_norm_D: DevSlice<'a, T>,
    head_DxVp: DevSlice<'a, T>,
}

impl<'a, T: DevElem> ModelTensors<'a, T> {
    /// Cut `buf` (in the device layout) into its tensors: checked sub-slices at the layout's offsets.
    fn new(layout: &DeviceLayout, buf: &'a DevBuf<T>) -> GpuResult<Self> {
        let lay = &layout.params;
        let (d, v, vp) = (layout.d, layout.v, layout.vp);
        let at = |off: usize, len: usize| buf.sub(off, len);
        let blocks = lay
            .blocks
            .iter()
            .map(|bo| {
                Ok(BlockTensors {
                    ln1_D: at(bo.ln1, d)?,
                    wq_DxD: at(bo.wq, d * d)?,
                    wk_DxD: at(bo.wk, d * d)?,
                    wv_DxD: at(bo.wv, d * d)?,
                    q_norm_64: at(bo.q_norm, HEAD_DIM)?,
                    k_norm_64: at(bo.k_norm, HEAD_DIM)?,
                    wo_DxD: at(bo.wo, d * d)?,
                    ln2_D: at(bo.ln2, d)?,
                    w1_Dx4D: at(bo.w1, d * 4 * d)?,
                    w2_4DxD: at(bo.w2, 4 * d * d)?,
                })
            })
            .collect::<GpuResult<Vec<_>>>()?;
        Ok(ModelTensors {
            embed_VxD: at(lay.embed, v * d)?,
            blocks,
            final_norm_D: at(lay.final_norm, d)?,
            head_DxVp: at(lay.head, d * vp)?,
        })
    }
}

impl<'a> ModelWeights<'a> {
    /// The weights the kernels read: norm scales and the embedding from the f32 `params`, matrices
    /// from the bf16 working copy `wb` (both in the device layout).
    fn new(
        layout: &DeviceLayout,
        params: &'a DevBuf<f32>,
        wb: &'a DevBuf<bf16>,
    ) -> GpuResult<Self> {
        let f = ModelTensors::new(layout, params)?;
        let h = ModelTensors::new(layout, wb)?;
        let blocks = f
            .blocks
            .iter()
            .zip(&h.blocks)
            .map(|(f, h)| BlockWeights {
                ln1_D: f.ln1_D,
                wq_DxD: h.wq_DxD,
                wk_DxD: h.wk_DxD,
                wv_DxD: h.wv_DxD,
                q_norm_64: f.q_norm_64,
                k_norm_64: f.k_norm_64,
                wo_DxD: h.wo_DxD,
                ln2_D: f.ln2_D,
                w1_Dx4D: h.w1_Dx4D,
                w2_4DxD: h.w2_4DxD,
            })
            .collect();
        Ok(ModelWeights {
            embed_VxD: f.embed_VxD,
            blocks,
            final_norm_D: f.final_norm_D,
            head_DxVp: h.head_DxVp,
        })
    }
}

/// The parts of one token staging slot ([`TokenLayout`]) as typed views.
#[allow(non_snake_case)]
struct TokenViews<'a> {
    /// Input ids.
    inputs_N: DevSlice<'a, u16>,
    /// Target ids.
    targets_N: DevSlice<'a, u16>,
    /// The embedding-backward CSR: distinct ids (at most N), offsets into the positions (at most
    /// N + 1), positions grouped by id.
    ids: DevSlice<'a, u16>,
    offsets: DevSlice<'a, i32>,
    positions_N: DevSlice<'a, i32>,
}

impl<'a> TokenViews<'a> {
    /// The views of `slot` for `n` positions.
    fn new(slot: &'a TokenSlot, n: usize) -> GpuResult<Self> {
        let dev = slot
            .dev
            .as_ref()
            .ok_or_else(|| GpuError::Unavailable("token staging was not allocated".into()))?;
        let lay = TokenLayout::new(n);
        let bytes = |at: usize, len: usize| dev.sub(at, len);
        Ok(TokenViews {
            inputs_N: bytes(lay.inputs, 2 * n)?.reinterpret()?,
            targets_N: bytes(lay.targets, 2 * n)?.reinterpret()?,
            ids: bytes(lay.ids, 2 * n)?.reinterpret()?,
            offsets: bytes(lay.offsets, 4 * (n + 1))?.reinterpret()?,
            positions_N: bytes(lay.positions, 4 * n)?.reinterpret()?,
        })
    }
}

fn no_acts() -> GpuError {
    GpuError::Unavailable("activations were not allocated".into())
}

/// One token staging slot: pinned host bytes, device bytes, and the events that order them.
struct TokenSlot {
    host: PinnedBuf,
    /// Allocated with the activations ([`memory::activation_plan`]'s `token_slot`).
    dev: Option<DevBuf<u8>>,
    /// Recorded on the copy stream after the upload.
    uploaded: Event,
    /// Recorded on the compute stream after the last kernel that reads the slot.
    consumed: Event,
    /// Whether `uploaded` has been recorded at least once.
    used: bool,
}

/// Shapes of one pass.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    d: usize,
    v: usize,
    /// Padded vocabulary: the row length of the head, the logits and their gradient.
    vp: usize,
    h: usize,
    n: usize,
}

/// The CUDA backend (see the module documentation).
pub struct CudaBackend {
    cfg: ModelConfig,
    /// The device layout (`layout.params`: offsets of every tensor in the flat buffers).
    layout: DeviceLayout,
    // Field order matters for drop: buffers and handles go before the context in `gpu`.
    acts: Option<Acts>,
    slots: Vec<TokenSlot>,
    slot: usize,
    params: DevBuf<f32>,
    grads: DevBuf<f32>,
    m: DevBuf<f32>,
    v: DevBuf<f32>,
    wb: DevBuf<bf16>,
    rope_cs: DevBuf<f32>,
    red_part: DevBuf<f64>,
    red_out: DevBuf<f64>,
    loss_host: PinnedBuf,
    loss_ready: Event,
    blas: Blas,
    kernels: Kernels,
    /// What it runs on (total memory read when it was opened).
    device: DeviceInfo,
    /// Opened for evaluation only: `grads`, `m` and `v` are one-element placeholders and every
    /// training call is refused.
    forward_only: bool,
    gpu: Gpu,
}

/// The device a constructor opens.
enum Opening {
    /// GPU `ordinal`.
    Gpu(usize),
    /// The emulated device with this kernel emulator.
    Emulated(Arc<dyn KernelExec>),
}

impl CudaBackend {
    /// Open GPU `ordinal`, compile (or load from the cache) the kernels for its architecture, and
    /// upload `params` (flat, the contract's [`crate::model::ParamLayout`] order). Gradients and moments start at zero.
    pub fn new(cfg: ModelConfig, params: &[f32], ordinal: usize) -> Result<Self, BackendError> {
        Self::open(cfg, params, Opening::Gpu(ordinal), false)
    }

    /// As [`CudaBackend::new`], for evaluation only: no gradients and no AdamW moments are allocated
    /// (their 12 bytes per parameter), and the training calls return an error.
    pub fn new_forward_only(
        cfg: ModelConfig,
        params: &[f32],
        ordinal: usize,
    ) -> Result<Self, BackendError> {
        Self::open(cfg, params, Opening::Gpu(ordinal), true)
    }

    /// The backend on the emulated device ([`Gpu::emulated`]): the same host logic, buffers, launch
    /// sequence and memory plan, with device memory in host memory, every kernel run by `exec` (the
    /// CPU emulator of `kernels/*.cu`, built by the tests) and the matrix products on the host
    /// ([`Blas::emulated`]). For testing the backend without a GPU; slow.
    pub fn new_emulated(
        cfg: ModelConfig,
        params: &[f32],
        exec: Arc<dyn KernelExec>,
    ) -> Result<Self, BackendError> {
        Self::open(cfg, params, Opening::Emulated(exec), false)
    }

    /// [`CudaBackend::new_forward_only`] on the emulated device (see [`CudaBackend::new_emulated`]).
    pub fn new_emulated_forward_only(
        cfg: ModelConfig,
        params: &[f32],
        exec: Arc<dyn KernelExec>,
    ) -> Result<Self, BackendError> {
        Self::open(cfg, params, Opening::Emulated(exec), true)
    }

    /// What the four constructors share: check the configuration and the parameters, open the
    /// device, start.
    fn open(
        cfg: ModelConfig,
        params: &[f32],
        device: Opening,
        forward_only: bool,
    ) -> Result<Self, BackendError> {
        Self::check_config(&cfg)?;
        let layout = DeviceLayout::new(&cfg);
        check_shape("parameters", layout.contract_total, params.len())?;
        match device {
            Opening::Gpu(ordinal) => {
                let gpu = Gpu::open(ordinal)?;
                super::gpu::catch_cuda_panic("starting the CUDA backend", || {
                    Self::start(cfg, layout, params, gpu, None, forward_only)
                })
            }
            Opening::Emulated(exec) => Self::start(
                cfg,
                layout,
                params,
                Gpu::emulated(),
                Some(exec),
                forward_only,
            ),
        }
        .map_err(BackendError::from)
    }

    /// Bytes of device memory this backend has allocated: (live now, peak since it started). They
    /// equal the memory plan's ([`memory::state_plan`] plus [`memory::activation_plan`] of the
    /// largest micro-batch so far) — the tests check it on the emulated device.
    pub fn allocated_bytes(&self) -> (usize, usize) {
        let c = self.gpu.mem_counter();
        (c.live(), c.peak())
    }

    /// Whether this backend was opened for evaluation only.
    pub fn is_forward_only(&self) -> bool {
        self.forward_only
    }

    /// Bytes of device memory held for the parameters' gradients and AdamW moments (0 for a
    /// forward-only backend, whose placeholders are one element each).
    pub fn training_state_bytes(&self) -> usize {
        if self.forward_only {
            0
        } else {
            3 * 4 * self.layout.total()
        }
    }

    fn trainable(&self, call: &'static str) -> Result<(), BackendError> {
        if self.forward_only {
            Err(BackendError::ForwardOnly { call })
        } else {
            Ok(())
        }
    }

    fn check_config(cfg: &ModelConfig) -> Result<(), BackendError> {
        cfg.validate().map_err(BackendError::InvalidConfig)?;
        // The 48 KiB launch limit covers static + dynamic shared memory: the kernel's own
        // `scratch[32]` floats (128 bytes) come on top of the d·4 dynamic bytes.
        if cfg.d_model * 4 + 128 > 48 * 1024 {
            return Err(BackendError::Device(format!(
                "--d-model {} is too wide for the LayerNorm backward kernel's shared memory (max 12224)",
                cfg.d_model
            )));
        }
        Ok(())
    }

    /// Build the backend on `gpu`; `exec` is the kernel emulator when `gpu` is the emulated device.
    fn start(
        cfg: ModelConfig,
        layout: DeviceLayout,
        params: &[f32],
        gpu: Gpu,
        exec: Option<Arc<dyn KernelExec>>,
        forward_only: bool,
    ) -> GpuResult<CudaBackend> {
        let total = layout.total();
        let (free, mem_total) = gpu.mem_info()?;
        let plan = memory::state_plan(&cfg, total, forward_only, !gpu.is_emulated());
        let need = memory::plan_bytes(&plan);
        if need + RESERVE_BYTES > free {
            return Err(GpuError::OutOfMemory(format!(
                "allocating the parameters, gradients, AdamW moments and bf16 weights ({:.2} GiB; {:.2} \
                 GiB free on {}) — the model itself is too large for this GPU",
                memory::gib(need),
                memory::gib(free),
                gpu.name
            )));
        }
        let mut alloc = PlanAlloc::new(&gpu, plan);
        let (kernels, blas) = match exec {
            Some(exec) if gpu.is_emulated() => (Kernels::emulated(exec), Blas::emulated()),
            Some(_) => {
                return Err(GpuError::Unavailable(
                    "a kernel emulator needs the emulated device".into(),
                ))
            }
            None => {
                let images = nvrtc::build_all(
                    gpu.cc,
                    &nvrtc::find_cuda_include(),
                    Some(&nvrtc::cache_dir()),
                )?;
                let blas = Blas::new(&gpu)?;
                // Blas::new allocates the workspace itself; it is the plan's.
                alloc.take_external(memory::WORKSPACE_ITEM)?;
                (Kernels::load(&gpu, &images)?, blas)
            }
        };
        let p = alloc.take::<f32>("params")?;
        gpu.upload(&layout.pad(params), &p)?;
        let wb = alloc.take::<bf16>("wb")?;
        let t = cfg.seq_len;
        let rope_cs = alloc.take::<f32>("rope_cs_Tx32x2")?;
        let slots = (0..2)
            .map(|_| -> GpuResult<TokenSlot> {
                Ok(TokenSlot {
                    host: PinnedBuf::new(&gpu, 16)?,
                    dev: None,
                    uploaded: gpu.event()?,
                    consumed: gpu.event()?,
                    used: false,
                })
            })
            .collect::<GpuResult<Vec<_>>>()?;
        let grads = alloc.take_zeroed::<f32>("grads")?;
        let m = alloc.take_zeroed::<f32>("m")?;
        let v = alloc.take_zeroed::<f32>("v")?;
        let red_part = alloc.take::<f64>("red_part")?;
        let red_out = alloc.take::<f64>("red_out")?;
        alloc.finish()?;
        let be = CudaBackend {
            grads,
            m,
            v,
            red_part,
            red_out,
            loss_host: PinnedBuf::new(&gpu, 8)?,
            loss_ready: gpu.event()?,
            params: p,
            wb,
            rope_cs,
            slots,
            slot: 0,
            acts: None,
            cfg,
            layout,
            blas,
            kernels,
            device: DeviceInfo {
                kind: DeviceKind::Cuda {
                    ordinal: gpu.ordinal,
                },
                name: gpu.name.clone(),
                threads: None,
                precision: Precision::Bf16Mixed,
                memory_bytes: Some(mem_total as u64),
            },
            forward_only,
            gpu,
        };
        be.ops().rope_table_init(be.rope_cs.slice(), t)?;
        be.refresh_bf16()?;
        be.gpu.sync()?;
        Ok(be)
    }

    /// The kernels, launched on the compute stream.
    fn ops(&self) -> Ops<'_> {
        Ops::new(&self.kernels, &self.gpu.stream)
    }

    /// Rewrite the bf16 working copy from the f32 master weights.
    fn refresh_bf16(&self) -> GpuResult<()> {
        self.ops()
            .cast_f32_to_bf16(self.params.slice(), self.wb.slice(), self.layout.total())
    }

    /// Make room for `b` sequences: estimate first, then allocate; running out is OutOfMemory.
    fn ensure_acts(&mut self, b: usize) -> GpuResult<()> {
        if self.acts.as_ref().is_some_and(|a| a.cap_b >= b) {
            return Ok(());
        }
        self.gpu.sync()?;
        // An upload whose compute-stream wait was never queued (an error between the two) may still be
        // reading the pinned slots freed below.
        self.gpu.copy_stream.synchronize()?;
        self.acts = None; // free the smaller set first
        let n = b * self.cfg.seq_len;
        let staging = memory::token_bytes(n);
        for s in &mut self.slots {
            s.used = false;
            s.host = PinnedBuf::new(&self.gpu, 16)?;
            s.dev = None;
        }
        let (free, total) = self.gpu.mem_info()?;
        let plan = memory::activation_plan(&self.cfg, b);
        let need = memory::plan_bytes(&plan);
        if need + RESERVE_BYTES > free {
            return Err(GpuError::OutOfMemory(format!(
                "allocating activations for --micro-batch {b} ({:.2} GiB needed, {:.2} GiB free of {:.2} \
                 GiB)",
                memory::gib(need),
                memory::gib(free),
                memory::gib(total)
            )));
        }
        let mut alloc = PlanAlloc::new(&self.gpu, plan);
        let allocated = (|| -> GpuResult<_> {
            let acts = Acts::new(&mut alloc, self.cfg.n_layers, b)?;
            let devs = [
                alloc.take::<u8>("token_slot")?,
                alloc.take::<u8>("token_slot")?,
            ];
            alloc.finish()?;
            Ok((acts, devs))
        })();
        let (acts, devs) = allocated.map_err(|e| match e {
            GpuError::OutOfMemory(w) => GpuError::OutOfMemory(format!("{w} for --micro-batch {b}")),
            other => other,
        })?;
        for (s, dev) in self.slots.iter_mut().zip(devs) {
            s.host = PinnedBuf::new(&self.gpu, staging)?;
            s.dev = Some(dev);
        }
        self.acts = Some(acts);
        Ok(())
    }

    /// Check that `batch` fits the model; its shapes.
    fn dims(&self, batch: &TokenBatch) -> Result<Dims, BackendError> {
        batch.check_fits(&self.cfg)?;
        let (b, t, vocab) = (batch.b(), self.cfg.seq_len, self.cfg.vocab_size);
        let d = self.cfg.d_model;
        Ok(Dims {
            b,
            t,
            d,
            v: vocab,
            vp: self.layout.vp,
            h: d / HEAD_DIM,
            n: b * t,
        })
    }

    /// Build the embedding-backward CSR of the batch's inputs, and upload it with the inputs and targets
    /// through the next staging slot. Returns (slot index, distinct ids).
    fn stage_tokens(&mut self, batch: &TokenBatch, dm: Dims) -> GpuResult<(usize, usize)> {
        let n = dm.n;
        let lay = TokenLayout::new(n);
        let si = self.slot;
        self.slot = (self.slot + 1) % self.slots.len();
        let slot = &mut self.slots[si];
        if slot.used {
            // The previous upload from this pinned buffer must be done before it is rewritten.
            slot.uploaded.synchronize("waiting for a token upload")?;
        }
        let (inputs, targets) = (batch.inputs_BxT(), batch.targets_BxT());
        // CSR of positions by token id (ascending ids, ascending positions): a fixed summation order.
        let mut order: Vec<(u16, i32)> = inputs
            .iter()
            .enumerate()
            .map(|(i, &tk)| (tk, i as i32))
            .collect();
        order.sort_unstable();
        let mut ids: Vec<u16> = Vec::new();
        let mut offsets: Vec<i32> = Vec::new();
        for (k, &(tk, _)) in order.iter().enumerate() {
            if k == 0 || order[k - 1].0 != tk {
                ids.push(tk);
                offsets.push(k as i32);
            }
        }
        offsets.push(n as i32);
        let bytes = slot.host.as_mut_slice();
        let put = |bytes: &mut [u8], at: usize, src: &[u8]| {
            bytes[at..at + src.len()].copy_from_slice(src);
        };
        put(bytes, lay.inputs, bytemuck::cast_slice(inputs));
        put(bytes, lay.targets, bytemuck::cast_slice(targets));
        put(bytes, lay.ids, bytemuck::cast_slice(&ids));
        put(bytes, lay.offsets, bytemuck::cast_slice(&offsets));
        let positions: Vec<i32> = order.iter().map(|&(_, p)| p).collect();
        put(bytes, lay.positions, bytemuck::cast_slice(&positions));
        let copy = &self.gpu.copy_stream;
        // The device slot may still be read by the compute stream's previous use of it.
        copy.wait(&slot.consumed, "ordering a token upload")?;
        let dev = slot
            .dev
            .as_ref()
            .ok_or_else(|| GpuError::Unavailable("token staging was not allocated".into()))?;
        slot.host.copy_to(dev.slice(), lay.total, copy)?;
        slot.uploaded.record(copy, "recording a token upload")?;
        slot.used = true;
        self.gpu.stream.wait(
            &slot.uploaded,
            "waiting for a token upload on the compute stream",
        )?;
        Ok((si, ids.len()))
    }

    /// Σ of `n` f32 values (`squares`: of their squares) into `red_out`, deterministically.
    fn reduce(&self, x: DevSlice<f32>, n: usize, squares: bool) -> GpuResult<()> {
        self.ops()
            .reduce(x, n, squares, self.red_part.slice(), self.red_out.slice())
    }

    /// The forward pass up to the f32 logits (`acts.logits_NxVp[..N·Vp]`, padding columns 0).
    fn forward(&mut self, dm: Dims, si: usize) -> GpuResult<()> {
        let Dims {
            b,
            t,
            d,
            v,
            vp,
            h,
            n,
        } = dm;
        let tok = TokenViews::new(&self.slots[si], n)?;
        let acts = self.acts.as_ref().ok_or_else(no_acts)?;
        let wts = ModelWeights::new(&self.layout, &self.params, &self.wb)?;
        let rope_cs = self.rope_cs.slice();
        let stream = &self.gpu.stream;
        let blas = &mut self.blas;
        let ops = Ops::new(&self.kernels, stream);
        let first = acts
            .layers
            .first()
            .map_or(acts.last_NxD.slice(), |l| l.x_NxD.slice());
        ops.embedding_forward(wts.embed_VxD, tok.inputs_N, first, (n, d, v))?;
        let ln = |x_NxD, scale_D, out_NxD, mean_N, rstd_N| {
            ops.layernorm_forward_bf16(x_NxD, scale_D, out_NxD, mean_N, rstd_N, n, d)
        };
        for (l, (bw, la)) in wts.blocks.iter().zip(&acts.layers).enumerate() {
            let out_NxD = acts
                .layers
                .get(l + 1)
                .map_or(acts.last_NxD.slice(), |nx| nx.x_NxD.slice());
            let (x_NxD, xn1_NxD) = (la.x_NxD.slice(), la.xn1_NxD.slice());
            ln(
                x_NxD,
                bw.ln1_D,
                xn1_NxD,
                la.mean1_N.slice(),
                la.rstd1_N.slice(),
            )?;
            for (w_DxD, dst_NxD) in [
                (bw.wq_DxD, &la.q_NxD),
                (bw.wk_DxD, &la.k_NxD),
                (bw.wv_DxD, &la.v_NxD),
            ] {
                blas.gemm(
                    stream,
                    &Gemm::forward((n, d, d), xn1_NxD, w_DxD, dst_NxD.slice()),
                )?;
            }
            let attn = AttnForward {
                out: la.y_NxD.slice(),
                lse: la.lse_BxHxT.slice(),
                q: la.q_NxD.slice(),
                k: la.k_NxD.slice(),
                v: la.v_NxD.slice(),
                q_scale: bw.q_norm_64,
                k_scale: bw.k_norm_64,
                rope_cs,
            };
            ops.attention_forward(AttnShape { b, t, h }, &attn)?;
            // h = x + y·wo
            let h_NxD = la.h_NxD.slice();
            blas.gemm(
                stream,
                &Gemm::forward((n, d, d), la.y_NxD.slice(), bw.wo_DxD, h_NxD).residual(x_NxD),
            )?;
            ln(
                h_NxD,
                bw.ln2_D,
                la.xn2_NxD.slice(),
                la.mean2_N.slice(),
                la.rstd2_N.slice(),
            )?;
            let (u_Nx4D, g_Nx4D) = (la.u_Nx4D.slice(), acts.g_Nx4D.slice());
            blas.gemm(
                stream,
                &Gemm::forward((n, d, 4 * d), la.xn2_NxD.slice(), bw.w1_Dx4D, u_Nx4D),
            )?;
            ops.gelu_forward_bf16(u_Nx4D, g_Nx4D, 4 * n * d)?;
            // out = h + g·w2
            blas.gemm(
                stream,
                &Gemm::forward((n, 4 * d, d), g_Nx4D, bw.w2_4DxD, out_NxD).residual(h_NxD),
            )?;
        }
        ln(
            acts.last_NxD.slice(),
            wts.final_norm_D,
            acts.xf_NxD.slice(),
            acts.meanf_N.slice(),
            acts.rstdf_N.slice(),
        )?;
        blas.gemm(
            stream,
            &Gemm::forward(
                (n, d, vp),
                acts.xf_NxD.slice(),
                wts.head_DxVp,
                acts.logits_NxVp.slice(),
            ),
        )
    }

    /// Cross-entropy over the logits (their bf16 gradient in place when `grad`), the loss sum queued for
    /// the host copy, and `loss_ready` recorded.
    fn loss(&mut self, dm: Dims, si: usize, grad: bool) -> GpuResult<()> {
        let tok = TokenViews::new(&self.slots[si], dm.n)?;
        let acts = self.acts.as_ref().ok_or_else(no_acts)?;
        let (logits, rows) = (acts.logits_NxVp.slice(), acts.loss_rows_N.slice());
        self.ops()
            .cross_entropy_f32(logits, tok.targets_N, rows, (dm.n, dm.v, dm.vp), grad)?;
        self.reduce(rows, dm.n, false)?;
        self.loss_host
            .copy_from(self.red_out.slice(), 8, &self.gpu.stream)?;
        self.loss_ready
            .record(&self.gpu.stream, "recording the loss event")
    }

    fn read_loss(&mut self) -> GpuResult<f64> {
        self.loss_ready
            .synchronize("waiting for the loss (a kernel failed?)")?;
        let b = self.loss_host.as_mut_slice();
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        Ok(f64::from_ne_bytes(a))
    }

    /// The backward pass from the bf16 logit gradient in `acts.logits_NxVp` (row stride 2·Vp);
    /// parameter gradients are added to `grads`.
    fn backward(&mut self, dm: Dims, si: usize, n_ids: usize) -> GpuResult<()> {
        let Dims {
            b, t, d, vp, h, n, ..
        } = dm;
        let nd = n * d;
        let tok = TokenViews::new(&self.slots[si], n)?;
        let acts = self.acts.as_ref().ok_or_else(no_acts)?;
        let wts = ModelWeights::new(&self.layout, &self.params, &self.wb)?;
        let grads = ModelTensors::new(&self.layout, &self.grads)?;
        let rope_cs = self.rope_cs.slice();
        let stream = &self.gpu.stream;
        let blas = &mut self.blas;
        let ops = Ops::new(&self.kernels, stream);
        let part = acts.ln_part.slice();
        let (t1_NxD, dres_NxD, dres_b_NxD) = (
            acts.t1_NxD.slice(),
            acts.dres_NxD.slice(),
            acts.dres_b_NxD.slice(),
        );
        let (g_Nx4D, dg_Nx4D, du_Nx4D) = (
            acts.g_Nx4D.slice(),
            acts.dg_Nx4D.slice(),
            acts.du_Nx4D.slice(),
        );
        let ln_back =
            |a: LnBackward, accumulate: bool| ops.layernorm_backward(&a, n, d, accumulate);
        // Head: logits = xf·head; the bf16 dlogits [N, Vp] have row stride 2·Vp.
        let (dlogits_NxVp, ld) = (acts.logits_NxVp.slice().reinterpret::<bf16>()?, 2 * vp);
        blas.gemm(
            stream,
            &Gemm::backward_input((n, d, vp), dlogits_NxVp, wts.head_DxVp, t1_NxD).dy_ld(ld),
        )?;
        blas.gemm(
            stream,
            &Gemm::backward_weight(
                (n, d, vp),
                acts.xf_NxD.slice(),
                dlogits_NxVp,
                grads.head_DxVp,
            )
            .dy_ld(ld),
        )?;
        ln_back(
            LnBackward {
                dout: t1_NxD,
                x: acts.last_NxD.slice(),
                scale: wts.final_norm_D,
                mean: acts.meanf_N.slice(),
                rstd: acts.rstdf_N.slice(),
                dx: dres_NxD,
                part,
                dscale: grads.final_norm_D,
            },
            false,
        )?;
        for ((bw, bg), la) in wts.blocks.iter().zip(&grads.blocks).zip(&acts.layers).rev() {
            // out = h + gelu(u)·w2 ; u = xn2·w1
            let u_Nx4D = la.u_Nx4D.slice();
            ops.gelu_forward_bf16(u_Nx4D, g_Nx4D, 4 * nd)?;
            ops.cast_f32_to_bf16(dres_NxD, dres_b_NxD, nd)?;
            blas.gemm(
                stream,
                &Gemm::backward_input((n, 4 * d, d), dres_b_NxD, bw.w2_4DxD, dg_Nx4D),
            )?;
            blas.gemm(
                stream,
                &Gemm::backward_weight((n, 4 * d, d), g_Nx4D, dres_b_NxD, bg.w2_4DxD),
            )?;
            ops.gelu_backward_bf16(dg_Nx4D, u_Nx4D, du_Nx4D, 4 * nd)?;
            blas.gemm(
                stream,
                &Gemm::backward_input((n, d, 4 * d), du_Nx4D, bw.w1_Dx4D, t1_NxD),
            )?;
            blas.gemm(
                stream,
                &Gemm::backward_weight((n, d, 4 * d), la.xn2_NxD.slice(), du_Nx4D, bg.w1_Dx4D),
            )?;
            ln_back(
                LnBackward {
                    dout: t1_NxD,
                    x: la.h_NxD.slice(),
                    scale: bw.ln2_D,
                    mean: la.mean2_N.slice(),
                    rstd: la.rstd2_N.slice(),
                    dx: dres_NxD,
                    part,
                    dscale: bg.ln2_D,
                },
                true,
            )?; // dres is now dh
                // h = x + y·wo
            ops.cast_f32_to_bf16(dres_NxD, dres_b_NxD, nd)?;
            let dy_NxD = acts.dy_NxD.slice();
            blas.gemm(
                stream,
                &Gemm::backward_input((n, d, d), dres_b_NxD, bw.wo_DxD, dy_NxD),
            )?;
            blas.gemm(
                stream,
                &Gemm::backward_weight((n, d, d), la.y_NxD.slice(), dres_b_NxD, bg.wo_DxD),
            )?;
            // Attention (QK-Norm + RoPE + causal softmax) backward.
            let (dq_NxD, dk_NxD, dv_NxD) = (
                acts.dq_NxD.slice(),
                acts.dk_NxD.slice(),
                acts.dv_NxD.slice(),
            );
            ops.attention_backward(
                AttnShape { b, t, h },
                &AttnBackward {
                    fwd: AttnForward {
                        out: la.y_NxD.slice(),
                        lse: la.lse_BxHxT.slice(),
                        q: la.q_NxD.slice(),
                        k: la.k_NxD.slice(),
                        v: la.v_NxD.slice(),
                        q_scale: bw.q_norm_64,
                        k_scale: bw.k_norm_64,
                        rope_cs,
                    },
                    dout: dy_NxD,
                    dq: dq_NxD,
                    dk: dk_NxD,
                    dv: dv_NxD,
                    delta: acts.delta_BxHxT.slice(),
                    dscale_part: acts.dscale_part.slice(),
                    dq_scale: bg.q_norm_64,
                    dk_scale: bg.k_norm_64,
                },
            )?;
            // q|k|v = xn1·wq|wk|wv; their input gradients add up in t1.
            let xn1_NxD = la.xn1_NxD.slice();
            for (i, (grad_NxD, w_DxD, dw_DxD)) in [
                (dq_NxD, bw.wq_DxD, bg.wq_DxD),
                (dk_NxD, bw.wk_DxD, bg.wk_DxD),
                (dv_NxD, bw.wv_DxD, bg.wv_DxD),
            ]
            .into_iter()
            .enumerate()
            {
                let dx = Gemm::backward_input((n, d, d), grad_NxD, w_DxD, t1_NxD);
                blas.gemm(stream, &if i > 0 { dx.accumulate() } else { dx })?;
                blas.gemm(
                    stream,
                    &Gemm::backward_weight((n, d, d), xn1_NxD, grad_NxD, dw_DxD),
                )?;
            }
            ln_back(
                LnBackward {
                    dout: t1_NxD,
                    x: la.x_NxD.slice(),
                    scale: bw.ln1_D,
                    mean: la.mean1_N.slice(),
                    rstd: la.rstd1_N.slice(),
                    dx: dres_NxD,
                    part,
                    dscale: bg.ln1_D,
                },
                true,
            )?; // dres is now dx
        }
        ops.embedding_backward(
            dres_NxD,
            tok.ids,
            tok.offsets,
            tok.positions_N,
            grads.embed_VxD,
            n_ids,
            d,
        )
    }

    /// Download a device-layout buffer into the contract layout, checking that the head's padding is 0.
    fn read_contract(&self, buf: &DevBuf<f32>, what: &str) -> Result<Vec<f32>, BackendError> {
        self.gpu.bind()?;
        let x = self.gpu.download(buf, self.layout.total())?;
        self.layout.unpad(&x, what).map_err(BackendError::Device)
    }

    fn mark_consumed(&self, si: usize) -> GpuResult<()> {
        self.slots[si]
            .consumed
            .record(&self.gpu.stream, "recording a token slot release")
    }

    fn step(&mut self, batch: &TokenBatch, train: bool) -> Result<LossSum, BackendError> {
        let dm = self.dims(batch)?;
        let count = batch.non_pad_targets();
        let r = (|| -> GpuResult<LossSum> {
            self.gpu.bind()?;
            self.ensure_acts(dm.b)?;
            let (si, n_ids) = self.stage_tokens(batch, dm)?;
            let queued = (|| -> GpuResult<()> {
                self.forward(dm, si)?;
                self.loss(dm, si, train)?;
                if train {
                    self.backward(dm, si, n_ids)?;
                }
                Ok(())
            })();
            // Also after a failed launch: kernels queued before it still read the slot, and the next
            // upload into it must wait for them.
            self.mark_consumed(si)?;
            queued?;
            let sum = self.read_loss()?;
            Ok(LossSum { sum, count })
        })();
        r.map_err(BackendError::from)
    }
}

impl CudaBackend {
    /// Forward pass and `token_scores_f32` over the logits: per-position target log-probability (into the
    /// per-row loss buffer) and argmax hit, downloaded. No gradient buffer is touched.
    fn scores(&mut self, batch: &TokenBatch) -> Result<TokenScores, BackendError> {
        let dm = self.dims(batch)?;
        let r = (|| -> GpuResult<TokenScores> {
            self.gpu.bind()?;
            self.ensure_acts(dm.b)?;
            let (si, _) = self.stage_tokens(batch, dm)?;
            let hit = self.gpu.alloc::<i32>(dm.n, "argmax hits")?;
            let queued = (|| -> GpuResult<()> {
                self.forward(dm, si)?;
                let tok = TokenViews::new(&self.slots[si], dm.n)?;
                let acts = self.acts.as_ref().ok_or_else(no_acts)?;
                self.ops().token_scores_f32(
                    acts.logits_NxVp.slice(),
                    tok.targets_N,
                    (acts.loss_rows_N.slice(), hit.slice()),
                    (dm.n, dm.v, dm.vp),
                )
            })();
            self.mark_consumed(si)?;
            queued?;
            let acts = self.acts.as_ref().ok_or_else(no_acts)?;
            let logp_BxT = self.gpu.download(&acts.loss_rows_N, dm.n)?;
            let hits = self.gpu.download(&hit, dm.n)?;
            Ok(TokenScores {
                logp_BxT,
                hit_BxT: hits.iter().map(|&h| h == 1).collect(),
            })
        })();
        r.map_err(BackendError::from)
    }
}

impl Backend for CudaBackend {
    fn device(&self) -> DeviceInfo {
        self.device.clone()
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn forward_backward(&mut self, batch: &TokenBatch) -> Result<LossSum, BackendError> {
        self.trainable("forward_backward")?;
        self.step(batch, true)
    }

    fn forward_loss(&mut self, batch: &TokenBatch) -> Result<LossSum, BackendError> {
        self.step(batch, false)
    }

    fn forward_scores(&mut self, batch: &TokenBatch) -> Result<TokenScores, BackendError> {
        self.scores(batch)
    }

    fn zero_grads(&mut self) -> Result<(), BackendError> {
        self.trainable("zero_grads")?;
        self.gpu.bind()?;
        self.grads
            .zero(&self.gpu.stream)
            .map_err(|e| BackendError::Device(format!("zeroing the gradients: {e}")))
    }

    fn grad_norm(&mut self) -> Result<f64, BackendError> {
        self.trainable("grad_norm")?;
        let r = (|| -> GpuResult<f64> {
            self.gpu.bind()?;
            self.reduce(self.grads.slice(), self.layout.total(), true)?;
            let s = self.gpu.download(&self.red_out, 1)?;
            Ok(s[0].sqrt())
        })();
        r.map_err(BackendError::from)
    }

    fn adamw_step(&mut self, hp: &AdamWStep) -> Result<(), BackendError> {
        self.trainable("adamw_step")?;
        let runs = ops::adamw_runs(&self.layout.params);
        let r = (|| -> GpuResult<()> {
            self.gpu.bind()?;
            let st = AdamWState {
                params: &self.params,
                grads: &self.grads,
                m: &self.m,
                v: &self.v,
                wb: &self.wb,
            };
            self.ops().adamw(&st, &runs, hp)
        })();
        r.map_err(BackendError::from)
    }

    fn read_params(&self) -> Result<Vec<f32>, BackendError> {
        self.read_contract(&self.params, "the parameters")
    }

    fn write_params(&mut self, params: &[f32]) -> Result<(), BackendError> {
        check_shape("parameters", self.layout.contract_total, params.len())?;
        self.gpu.bind()?;
        self.gpu.upload(&self.layout.pad(params), &self.params)?;
        self.refresh_bf16()?;
        Ok(())
    }

    fn read_moments(&self) -> Result<(Vec<f32>, Vec<f32>), BackendError> {
        self.trainable("read_moments")?;
        Ok((
            self.read_contract(&self.m, "the AdamW first moments")?,
            self.read_contract(&self.v, "the AdamW second moments")?,
        ))
    }

    fn write_moments(&mut self, m: &[f32], v: &[f32]) -> Result<(), BackendError> {
        let n = self.layout.contract_total;
        check_shape("AdamW first moment", n, m.len())?;
        check_shape("AdamW second moment", n, v.len())?;
        self.trainable("write_moments")?;
        self.gpu.bind()?;
        self.gpu.upload(&self.layout.pad(m), &self.m)?;
        self.gpu.upload(&self.layout.pad(v), &self.v)?;
        Ok(())
    }

    fn read_grads(&self) -> Result<Vec<f32>, BackendError> {
        self.trainable("read_grads")?;
        self.read_contract(&self.grads, "the gradients")
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        // Let queued work finish before the buffers it uses are freed.
        let _ = self.gpu.sync();
        let _ = self.gpu.copy_stream.synchronize();
    }
}
