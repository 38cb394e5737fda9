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

use super::blas::{Blas, OutType};
use super::gpu::{DevBuf, DevPtr, Event, Gpu, GpuError, GpuResult, KernelExec, Kernels, PinnedBuf};
use super::layout::DeviceLayout;
use super::memory::{self, TokenLayout, REDUCE_BLOCKS, RESERVE_BYTES};
use super::nvrtc;
use super::ops::{self, AdamWState, AttnBackward, AttnForward, AttnShape, LnBackward, Ops};
use crate::backend::{
    check_shape, AdamWStep, Backend, BackendError, DeviceInfo, DeviceKind, LossSum, Precision,
    TokenBatch, TokenScores,
};
use crate::model::{ModelConfig, HEAD_DIM};
use half::bf16;
use std::sync::Arc;

/// What one block keeps from its forward for its backward.
struct LayerActs {
    /// Block input (the residual stream) [N, D] f32.
    x: DevBuf<f32>,
    xn1: DevBuf<bf16>,
    mean1: DevBuf<f32>,
    rstd1: DevBuf<f32>,
    /// Pre-norm q, k and v [N, D] bf16.
    q: DevBuf<bf16>,
    k: DevBuf<bf16>,
    v: DevBuf<bf16>,
    /// Attention output (input of wo) [N, D] bf16 and its row logsumexp [B, H, T].
    y: DevBuf<bf16>,
    lse: DevBuf<f32>,
    /// Residual after attention [N, D] f32.
    h: DevBuf<f32>,
    xn2: DevBuf<bf16>,
    mean2: DevBuf<f32>,
    rstd2: DevBuf<f32>,
    /// MLP pre-activation [N, 4D] bf16 (GELU is recomputed in the backward).
    u: DevBuf<bf16>,
}

/// Activations and scratch for up to `cap_b` sequences.
struct Acts {
    cap_b: usize,
    layers: Vec<LayerActs>,
    /// Output of the last block [N, D] f32.
    last: DevBuf<f32>,
    xf: DevBuf<bf16>,
    meanf: DevBuf<f32>,
    rstdf: DevBuf<f32>,
    /// Logits `[N, Vp]` f32; after the cross-entropy, row r's bf16 gradient `[Vp]` fills the first half of row
    /// r's bytes (a bf16 [N, Vp] matrix with row stride 2·Vp).
    logits: DevBuf<f32>,
    loss_rows: DevBuf<f32>,
    /// Scratch.
    dres: DevBuf<f32>,
    t1: DevBuf<f32>,
    dres_b: DevBuf<bf16>,
    dy: DevBuf<bf16>,
    dq: DevBuf<bf16>,
    dk: DevBuf<bf16>,
    dv: DevBuf<bf16>,
    /// GELU output [N, 4D] bf16 (forward, and recomputed in the backward).
    g: DevBuf<bf16>,
    dg: DevBuf<f32>,
    du: DevBuf<bf16>,
    delta: DevBuf<f32>,
    dscale_part: DevBuf<f32>,
    ln_part: DevBuf<f32>,
}

impl Acts {
    fn new(gpu: &Gpu, cfg: &ModelConfig, b: usize) -> GpuResult<Acts> {
        let (d, t, vp) = (
            cfg.d_model,
            cfg.seq_len,
            super::layout::padded_vocab(cfg.vocab_size),
        );
        let h = d / HEAD_DIM;
        let n = b * t;
        let nd = n * d;
        let attn = AttnShape { b, t, h };
        let f32s = |len: usize, what: &str| gpu.alloc::<f32>(len, what);
        let bf16s = |len: usize, what: &str| gpu.alloc::<bf16>(len, what);
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for _ in 0..cfg.n_layers {
            layers.push(LayerActs {
                x: f32s(nd, "block inputs")?,
                xn1: bf16s(nd, "LN1 outputs")?,
                mean1: f32s(n, "LN1 means")?,
                rstd1: f32s(n, "LN1 rstd")?,
                q: bf16s(nd, "queries")?,
                k: bf16s(nd, "keys")?,
                v: bf16s(nd, "values")?,
                y: bf16s(nd, "attention outputs")?,
                lse: f32s(attn.stats_len(), "attention logsumexp")?,
                h: f32s(nd, "attention residuals")?,
                xn2: bf16s(nd, "LN2 outputs")?,
                mean2: f32s(n, "LN2 means")?,
                rstd2: f32s(n, "LN2 rstd")?,
                u: bf16s(4 * nd, "MLP pre-activations")?,
            });
        }
        Ok(Acts {
            cap_b: b,
            layers,
            last: f32s(nd, "the last residual")?,
            xf: bf16s(nd, "final LN outputs")?,
            meanf: f32s(n, "final LN means")?,
            rstdf: f32s(n, "final LN rstd")?,
            logits: f32s(n * vp, "logits")?,
            loss_rows: f32s(n, "per-row losses")?,
            dres: f32s(nd, "the residual gradient")?,
            t1: f32s(nd, "[N,D] scratch")?,
            dres_b: bf16s(nd, "[N,D] bf16 scratch")?,
            dy: bf16s(nd, "attention output gradients")?,
            dq: bf16s(nd, "query gradients")?,
            dk: bf16s(nd, "key gradients")?,
            dv: bf16s(nd, "value gradients")?,
            g: bf16s(4 * nd, "GELU outputs")?,
            dg: f32s(4 * nd, "GELU output gradients")?,
            du: bf16s(4 * nd, "MLP pre-activation gradients")?,
            delta: f32s(attn.stats_len(), "attention backward rowsums")?,
            dscale_part: f32s(attn.dscale_part_len(), "QK-Norm scale partials")?,
            ln_part: f32s(ops::ln_part_len(n, d), "LayerNorm scale partials")?,
        })
    }
}

/// One token staging slot: pinned host bytes, device bytes, and the events that order them.
struct TokenSlot {
    host: PinnedBuf,
    dev: DevBuf<u8>,
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

impl CudaBackend {
    /// Open GPU `ordinal`, compile (or load from the cache) the kernels for its architecture, and
    /// upload `params` (flat, the contract's [`crate::model::ParamLayout`] order). Gradients and moments start at zero.
    pub fn new(cfg: ModelConfig, params: &[f32], ordinal: usize) -> Result<Self, BackendError> {
        Self::check_config(&cfg)?;
        let layout = DeviceLayout::new(&cfg);
        check_shape("parameters", layout.contract_total, params.len())?;
        let gpu = Gpu::open(ordinal).map_err(|e| BackendError::Device(e.to_string()))?;
        let r = super::gpu::catch_cuda_panic("starting the CUDA backend", || {
            Self::start(cfg, layout, params, gpu, None, false)
        });
        r.map_err(BackendError::from)
    }

    /// As [`CudaBackend::new`], for evaluation only: no gradients and no AdamW moments are allocated
    /// (their 12 bytes per parameter), and the training calls return an error.
    pub fn new_forward_only(
        cfg: ModelConfig,
        params: &[f32],
        ordinal: usize,
    ) -> Result<Self, BackendError> {
        Self::check_config(&cfg)?;
        let layout = DeviceLayout::new(&cfg);
        check_shape("parameters", layout.contract_total, params.len())?;
        let gpu = Gpu::open(ordinal).map_err(|e| BackendError::Device(e.to_string()))?;
        let r = super::gpu::catch_cuda_panic("starting the CUDA backend", || {
            Self::start(cfg, layout, params, gpu, None, true)
        });
        r.map_err(BackendError::from)
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
        Self::check_config(&cfg)?;
        let layout = DeviceLayout::new(&cfg);
        check_shape("parameters", layout.contract_total, params.len())?;
        Self::start(cfg, layout, params, Gpu::emulated(), Some(exec), false)
            .map_err(BackendError::from)
    }

    /// [`CudaBackend::new_forward_only`] on the emulated device (see [`CudaBackend::new_emulated`]).
    pub fn new_emulated_forward_only(
        cfg: ModelConfig,
        params: &[f32],
        exec: Arc<dyn KernelExec>,
    ) -> Result<Self, BackendError> {
        Self::check_config(&cfg)?;
        let layout = DeviceLayout::new(&cfg);
        check_shape("parameters", layout.contract_total, params.len())?;
        Self::start(cfg, layout, params, Gpu::emulated(), Some(exec), true)
            .map_err(BackendError::from)
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
        // Gradients and the two moments are 12 of the state's 18 bytes per parameter.
        let need = memory::state_bytes(&cfg, total) - if forward_only { 12 * total } else { 0 };
        if need + RESERVE_BYTES > free {
            return Err(GpuError::OutOfMemory(format!(
                "allocating the parameters, gradients, AdamW moments and bf16 weights ({:.2} GiB; {:.2} \
                 GiB free on {}) — the model itself is too large for this GPU",
                memory::gib(need),
                memory::gib(free),
                gpu.name
            )));
        }
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
                (Kernels::load(&gpu, &images)?, Blas::new(&gpu)?)
            }
        };
        let p = gpu.alloc::<f32>(total, "the f32 parameters")?;
        gpu.upload(&layout.pad(params), &p)?;
        let wb = gpu.alloc::<bf16>(total, "the bf16 weights")?;
        let t = cfg.seq_len;
        let rope_cs = gpu.alloc::<f32>(t * 32 * 2, "the RoPE table")?;
        let slots = (0..2)
            .map(|_| -> GpuResult<TokenSlot> {
                Ok(TokenSlot {
                    host: PinnedBuf::new(&gpu, 16)?,
                    dev: gpu.alloc::<u8>(16, "token staging")?,
                    uploaded: gpu.event()?,
                    consumed: gpu.event()?,
                    used: false,
                })
            })
            .collect::<GpuResult<Vec<_>>>()?;
        // A forward-only backend keeps one-element placeholders (a zero-byte allocation is an error).
        let state = if forward_only { 1 } else { total };
        let be = CudaBackend {
            grads: gpu.alloc_zeroed::<f32>(state, "the gradients")?,
            m: gpu.alloc_zeroed::<f32>(state, "the AdamW first moments")?,
            v: gpu.alloc_zeroed::<f32>(state, "the AdamW second moments")?,
            red_part: gpu.alloc::<f64>(REDUCE_BLOCKS, "reduction partials")?,
            red_out: gpu.alloc::<f64>(1, "a reduction result")?,
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
        be.ops().rope_table_init(be.rope_cs.ptr(), t)?;
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
            .cast_f32_to_bf16(self.params.ptr(), self.wb.ptr(), self.layout.total())
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
            s.dev = self.gpu.alloc::<u8>(16, "token staging")?;
        }
        let (free, total) = self.gpu.mem_info()?;
        let need = memory::activation_bytes(&self.cfg, b);
        if need + RESERVE_BYTES > free {
            return Err(GpuError::OutOfMemory(format!(
                "allocating activations for --micro-batch {b} ({:.2} GiB needed, {:.2} GiB free of {:.2} \
                 GiB)",
                memory::gib(need),
                memory::gib(free),
                memory::gib(total)
            )));
        }
        let acts = Acts::new(&self.gpu, &self.cfg, b).map_err(|e| match e {
            GpuError::OutOfMemory(w) => GpuError::OutOfMemory(format!("{w} for --micro-batch {b}")),
            other => other,
        })?;
        for s in &mut self.slots {
            s.host = PinnedBuf::new(&self.gpu, staging)?;
            s.dev = self.gpu.alloc::<u8>(staging, "token staging")?;
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
        slot.host.copy_to(slot.dev.ptr(), lay.total, copy)?;
        slot.uploaded.record(copy, "recording a token upload")?;
        slot.used = true;
        self.gpu.stream.wait(
            &slot.uploaded,
            "waiting for a token upload on the compute stream",
        )?;
        Ok((si, ids.len()))
    }

    fn slot_ptrs(&self, si: usize, n: usize) -> (DevPtr, DevPtr, DevPtr, DevPtr, DevPtr) {
        let lay = TokenLayout::new(n);
        let base = self.slots[si].dev.ptr();
        (
            base + lay.inputs as u64,
            base + lay.targets as u64,
            base + lay.ids as u64,
            base + lay.offsets as u64,
            base + lay.positions as u64,
        )
    }

    /// Σ of `n` f32 values (`squares`: of their squares) into `red_out`, deterministically.
    fn reduce(&self, x: DevPtr, n: usize, squares: bool) -> GpuResult<()> {
        self.ops()
            .reduce(x, n, squares, self.red_part.ptr(), self.red_out.ptr())
    }

    /// The forward pass up to the f32 logits (`acts.logits[..N·Vp]`, padding columns 0).
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
        let (inputs, ..) = self.slot_ptrs(si, n);
        let acts = self
            .acts
            .as_ref()
            .ok_or_else(|| GpuError::Unavailable("activations were not allocated".into()))?;
        let p = |o: usize| self.params.at(o);
        let w = |o: usize| self.wb.at(o);
        let lay = &self.layout.params;
        let stream = &self.gpu.stream;
        let blas = &mut self.blas;
        let ops = Ops::new(&self.kernels, stream);
        let first = acts
            .layers
            .first()
            .map(|l| l.x.ptr())
            .unwrap_or(acts.last.ptr());
        ops.embedding_forward(p(lay.embed), inputs, first, (n, d, v))?;
        let ln = |x: DevPtr, s: DevPtr, o: DevPtr, m: DevPtr, r: DevPtr| {
            ops.layernorm_forward_bf16(x, s, o, m, r, n, d)
        };
        for (l, (bo, la)) in lay.blocks.iter().zip(&acts.layers).enumerate() {
            let out = acts
                .layers
                .get(l + 1)
                .map(|nx| nx.x.ptr())
                .unwrap_or(acts.last.ptr());
            ln(
                la.x.ptr(),
                p(bo.ln1),
                la.xn1.ptr(),
                la.mean1.ptr(),
                la.rstd1.ptr(),
            )?;
            for (wo, dst) in [(bo.wq, &la.q), (bo.wk, &la.k), (bo.wv, &la.v)] {
                blas.forward(
                    stream,
                    la.xn1.ptr(),
                    w(wo),
                    dst.ptr(),
                    OutType::Bf16,
                    None,
                    n,
                    d,
                    d,
                )?;
            }
            ops.attention_forward(
                AttnShape { b, t, h },
                &AttnForward {
                    out: la.y.ptr(),
                    lse: la.lse.ptr(),
                    q: la.q.ptr(),
                    k: la.k.ptr(),
                    v: la.v.ptr(),
                    q_scale: p(bo.q_norm),
                    k_scale: p(bo.k_norm),
                    rope_cs: self.rope_cs.ptr(),
                },
            )?;
            // h = x + y·wo
            blas.forward(
                stream,
                la.y.ptr(),
                w(bo.wo),
                la.h.ptr(),
                OutType::F32,
                Some(la.x.ptr()),
                n,
                d,
                d,
            )?;
            ln(
                la.h.ptr(),
                p(bo.ln2),
                la.xn2.ptr(),
                la.mean2.ptr(),
                la.rstd2.ptr(),
            )?;
            blas.forward(
                stream,
                la.xn2.ptr(),
                w(bo.w1),
                la.u.ptr(),
                OutType::Bf16,
                None,
                n,
                d,
                4 * d,
            )?;
            ops.gelu_forward_bf16(la.u.ptr(), acts.g.ptr(), 4 * n * d)?;
            // out = h + g·w2
            blas.forward(
                stream,
                acts.g.ptr(),
                w(bo.w2),
                out,
                OutType::F32,
                Some(la.h.ptr()),
                n,
                4 * d,
                d,
            )?;
        }
        ln(
            acts.last.ptr(),
            p(lay.final_norm),
            acts.xf.ptr(),
            acts.meanf.ptr(),
            acts.rstdf.ptr(),
        )?;
        blas.forward(
            stream,
            acts.xf.ptr(),
            w(lay.head),
            acts.logits.ptr(),
            OutType::F32,
            None,
            n,
            d,
            vp,
        )
    }

    /// Cross-entropy over the logits (their bf16 gradient in place when `grad`), the loss sum queued for
    /// the host copy, and `loss_ready` recorded.
    fn loss(&mut self, dm: Dims, si: usize, grad: bool) -> GpuResult<()> {
        let (_, targets, ..) = self.slot_ptrs(si, dm.n);
        let acts = self
            .acts
            .as_ref()
            .ok_or_else(|| GpuError::Unavailable("activations were not allocated".into()))?;
        let (logits, rows) = (acts.logits.ptr(), acts.loss_rows.ptr());
        self.ops()
            .cross_entropy_f32(logits, targets, rows, (dm.n, dm.v, dm.vp), grad)?;
        self.reduce(rows, dm.n, false)?;
        self.loss_host
            .copy_from(self.red_out.ptr(), 8, &self.gpu.stream)?;
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

    /// The backward pass from the bf16 logit gradient in `acts.logits` (row stride 2·Vp); parameter
    /// gradients are added to `grads`.
    fn backward(&mut self, dm: Dims, si: usize, n_ids: usize) -> GpuResult<()> {
        let Dims {
            b, t, d, vp, h, n, ..
        } = dm;
        let nd = n * d;
        let (_, _, ids, offsets, positions) = self.slot_ptrs(si, n);
        let acts = self
            .acts
            .as_ref()
            .ok_or_else(|| GpuError::Unavailable("activations were not allocated".into()))?;
        let p = |o: usize| self.params.at(o);
        let w = |o: usize| self.wb.at(o);
        let g = |o: usize| self.grads.at(o);
        let lay = &self.layout.params;
        let stream = &self.gpu.stream;
        let blas = &mut self.blas;
        let ops = Ops::new(&self.kernels, stream);
        let part = acts.ln_part.ptr();
        #[allow(clippy::too_many_arguments)]
        let ln_back = |dout: DevPtr,
                       x: DevPtr,
                       scale: DevPtr,
                       mean: DevPtr,
                       rstd: DevPtr,
                       dx: DevPtr,
                       dscale: DevPtr,
                       accumulate: bool| {
            let a = LnBackward {
                dout,
                x,
                scale,
                mean,
                rstd,
                dx,
                part,
                dscale,
            };
            ops.layernorm_backward(&a, n, d, accumulate)
        };
        // Head: logits = xf·head; the bf16 dlogits [N, Vp] have row stride 2·Vp.
        let (dlogits, ld) = (acts.logits.ptr(), 2 * vp);
        blas.backward_input_ld(
            stream,
            dlogits,
            ld,
            w(lay.head),
            acts.t1.ptr(),
            OutType::F32,
            false,
            n,
            d,
            vp,
        )?;
        blas.backward_weight_ld(stream, acts.xf.ptr(), dlogits, ld, g(lay.head), n, d, vp)?;
        ln_back(
            acts.t1.ptr(),
            acts.last.ptr(),
            p(lay.final_norm),
            acts.meanf.ptr(),
            acts.rstdf.ptr(),
            acts.dres.ptr(),
            g(lay.final_norm),
            false,
        )?;
        for (bo, la) in lay.blocks.iter().zip(&acts.layers).rev() {
            // out = h + gelu(u)·w2 ; u = xn2·w1
            ops.gelu_forward_bf16(la.u.ptr(), acts.g.ptr(), 4 * nd)?;
            ops.cast_f32_to_bf16(acts.dres.ptr(), acts.dres_b.ptr(), nd)?;
            blas.backward_input(
                stream,
                acts.dres_b.ptr(),
                w(bo.w2),
                acts.dg.ptr(),
                OutType::F32,
                false,
                n,
                4 * d,
                d,
            )?;
            blas.backward_weight(
                stream,
                acts.g.ptr(),
                acts.dres_b.ptr(),
                g(bo.w2),
                n,
                4 * d,
                d,
            )?;
            ops.gelu_backward_bf16(acts.dg.ptr(), la.u.ptr(), acts.du.ptr(), 4 * nd)?;
            blas.backward_input(
                stream,
                acts.du.ptr(),
                w(bo.w1),
                acts.t1.ptr(),
                OutType::F32,
                false,
                n,
                d,
                4 * d,
            )?;
            blas.backward_weight(stream, la.xn2.ptr(), acts.du.ptr(), g(bo.w1), n, d, 4 * d)?;
            ln_back(
                acts.t1.ptr(),
                la.h.ptr(),
                p(bo.ln2),
                la.mean2.ptr(),
                la.rstd2.ptr(),
                acts.dres.ptr(),
                g(bo.ln2),
                true,
            )?; // dres is now dh
                // h = x + y·wo
            ops.cast_f32_to_bf16(acts.dres.ptr(), acts.dres_b.ptr(), nd)?;
            blas.backward_input(
                stream,
                acts.dres_b.ptr(),
                w(bo.wo),
                acts.dy.ptr(),
                OutType::Bf16,
                false,
                n,
                d,
                d,
            )?;
            blas.backward_weight(stream, la.y.ptr(), acts.dres_b.ptr(), g(bo.wo), n, d, d)?;
            // Attention (QK-Norm + RoPE + causal softmax) backward.
            ops.attention_backward(
                AttnShape { b, t, h },
                &AttnBackward {
                    fwd: AttnForward {
                        out: la.y.ptr(),
                        lse: la.lse.ptr(),
                        q: la.q.ptr(),
                        k: la.k.ptr(),
                        v: la.v.ptr(),
                        q_scale: p(bo.q_norm),
                        k_scale: p(bo.k_norm),
                        rope_cs: self.rope_cs.ptr(),
                    },
                    dout: acts.dy.ptr(),
                    dq: acts.dq.ptr(),
                    dk: acts.dk.ptr(),
                    dv: acts.dv.ptr(),
                    delta: acts.delta.ptr(),
                    dscale_part: acts.dscale_part.ptr(),
                    dq_scale: g(bo.q_norm),
                    dk_scale: g(bo.k_norm),
                },
            )?;
            // q|k|v = xn1·wq|wk|wv
            for (i, (grad, wo)) in [(&acts.dq, bo.wq), (&acts.dk, bo.wk), (&acts.dv, bo.wv)]
                .into_iter()
                .enumerate()
            {
                blas.backward_input(
                    stream,
                    grad.ptr(),
                    w(wo),
                    acts.t1.ptr(),
                    OutType::F32,
                    i > 0,
                    n,
                    d,
                    d,
                )?;
                blas.backward_weight(stream, la.xn1.ptr(), grad.ptr(), g(wo), n, d, d)?;
            }
            ln_back(
                acts.t1.ptr(),
                la.x.ptr(),
                p(bo.ln1),
                la.mean1.ptr(),
                la.rstd1.ptr(),
                acts.dres.ptr(),
                g(bo.ln1),
                true,
            )?; // dres is now dx
        }
        ops.embedding_backward(
            acts.dres.ptr(),
            ids,
            offsets,
            positions,
            g(lay.embed),
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
                let (_, targets, ..) = self.slot_ptrs(si, dm.n);
                let acts = self.acts.as_ref().ok_or_else(|| {
                    GpuError::Unavailable("activations were not allocated".into())
                })?;
                self.ops().token_scores_f32(
                    acts.logits.ptr(),
                    targets,
                    (acts.loss_rows.ptr(), hit.ptr()),
                    (dm.n, dm.v, dm.vp),
                )
            })();
            self.mark_consumed(si)?;
            queued?;
            let acts = self
                .acts
                .as_ref()
                .ok_or_else(|| GpuError::Unavailable("activations were not allocated".into()))?;
            let logp_BxT = self.gpu.download(&acts.loss_rows, dm.n)?;
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
            self.reduce(self.grads.ptr(), self.layout.total(), true)?;
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
