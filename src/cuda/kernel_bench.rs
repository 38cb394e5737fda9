//! [`CudaKernelLauncher`]: the launcher of the per-kernel profiles (`cargo bench --bench kernels`), next
//! to the launch helpers it shares with the CUDA backend. Each [`KernelCase`] gets realistic inputs (random values, never
//! zeros; the attention and LayerNorm backwards get their statistics from a real forward), its outputs
//! poisoned with NaN, and is launched through the CUDA backend's own launch helpers ([`Ops`],
//! [`Blas`]), timed between two CUDA events on the compute stream.
//!
//! [`open_launcher`] answers `Err` with the reason when there is no GPU (or no CUDA libraries), and the
//! bench then prints that it skipped.
//!
//! On the emulated device ([`CudaKernelLauncher::emulated`]) the same setup and launches run on the CPU
//! and the "device time" is the host wall time between the two events (work there is synchronous); that
//! exercises the bench's buffers and arguments in tests, it measures nothing about a GPU.

use super::blas::{Blas, Gemm};
use super::gpu::{DevBuf, DevElem, DevSlice, Event, Gpu, GpuError, GpuResult, KernelExec, Kernels};
use super::kernel_cases::{KernelCase, KernelFamily};
use super::layout::{padded_vocab, DeviceLayout};
use super::nvrtc;
use super::ops::{
    adamw_runs, ln_part_len, AdamWState, AttnBackward, AttnForward, AttnShape, LnBackward, Ops,
};
use crate::backend::{AdamWStep, DecayMode};
use crate::model::{ModelConfig, HEAD_DIM};
use half::bf16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Random values are generated in blocks of at most this many elements and tiled over a buffer.
const FILL_BLOCK: usize = 1 << 20;
/// Timed runs of the measured ceilings, and launches per run.
const CEIL_REPEATS: usize = 5;
const CEIL_LAUNCHES: usize = 10;

/// The buffers of one prepared case, by name.
struct Setup {
    case: KernelCase,
    f32s: BTreeMap<&'static str, DevBuf<f32>>,
    bf16s: BTreeMap<&'static str, DevBuf<bf16>>,
    u16s: BTreeMap<&'static str, DevBuf<u16>>,
    /// Buffers the case's launches write (checked by [`CudaKernelLauncher::outputs`]).
    outputs: Vec<&'static str>,
    /// AdamW's launches (start, end, decayed).
    runs: Vec<(usize, usize, bool)>,
}

/// The buffer `name` of `bufs`, or an error naming it (a case that launches a buffer it never set up).
fn view<'a, T: DevElem>(
    bufs: &'a BTreeMap<&'static str, DevBuf<T>>,
    name: &str,
) -> GpuResult<DevSlice<'a, T>> {
    bufs.get(name)
        .map(DevBuf::slice)
        .ok_or_else(|| GpuError::Bounds(format!("kernel case: no {} buffer named {name}", T::NAME)))
}

impl Setup {
    fn f(&self, name: &str) -> GpuResult<DevSlice<'_, f32>> {
        view(&self.f32s, name)
    }
    fn h(&self, name: &str) -> GpuResult<DevSlice<'_, bf16>> {
        view(&self.bf16s, name)
    }
    fn u(&self, name: &str) -> GpuResult<DevSlice<'_, u16>> {
        view(&self.u16s, name)
    }
}

/// Allocates and fills the buffers of a [`Setup`].
struct Builder<'a> {
    gpu: &'a Gpu,
    rng: ChaCha8Rng,
    s: Setup,
}

impl Builder<'_> {
    /// Upload `block` repeatedly over `buf` (a block of random values tiled over the buffer).
    fn tile<T: DevElem>(&self, buf: &DevBuf<T>, block: &[T]) -> GpuResult<()> {
        let mut at = 0;
        while at < buf.len() {
            let take = block.len().min(buf.len() - at);
            self.gpu.upload_at(&block[..take], buf, at)?;
            at += take;
        }
        Ok(())
    }

    fn rand_f32(&mut self, name: &'static str, len: usize, lo: f32, hi: f32) -> GpuResult<()> {
        let buf = self.gpu.alloc::<f32>(len, name)?;
        let block: Vec<f32> = (0..len.min(FILL_BLOCK))
            .map(|_| self.rng.random_range(lo..hi))
            .collect();
        self.tile(&buf, &block)?;
        self.s.f32s.insert(name, buf);
        Ok(())
    }

    fn rand_bf16(&mut self, name: &'static str, len: usize, lo: f32, hi: f32) -> GpuResult<()> {
        let buf = self.gpu.alloc::<bf16>(len, name)?;
        let block: Vec<bf16> = (0..len.min(FILL_BLOCK))
            .map(|_| bf16::from_f32(self.rng.random_range(lo..hi)))
            .collect();
        self.tile(&buf, &block)?;
        self.s.bf16s.insert(name, buf);
        Ok(())
    }

    /// `len` token ids drawn from `lo..hi` (`hi` at most 65536).
    fn rand_ids(&mut self, name: &'static str, len: usize, lo: u32, hi: usize) -> GpuResult<()> {
        let buf = self.gpu.alloc::<u16>(len, name)?;
        let hi = hi.min(1 << 16) as u32;
        let ids: Vec<u16> = (0..len)
            .map(|_| self.rng.random_range(lo..hi) as u16)
            .collect();
        self.gpu.upload(&ids, &buf)?;
        self.s.u16s.insert(name, buf);
        Ok(())
    }

    /// An f32 accumulator, zeroed (listed as an output when `output`).
    fn zeros_f32(&mut self, name: &'static str, len: usize, output: bool) -> GpuResult<()> {
        let buf = self.gpu.alloc_zeroed::<f32>(len, name)?;
        self.s.f32s.insert(name, buf);
        if output {
            self.s.outputs.push(name);
        }
        Ok(())
    }

    /// An f32 buffer the case writes, poisoned with NaN.
    fn out_f32(&mut self, name: &'static str, len: usize) -> GpuResult<()> {
        let buf = self.gpu.alloc::<f32>(len, name)?;
        buf.fill_bytes(0xff, &self.gpu.stream)?;
        self.s.f32s.insert(name, buf);
        self.s.outputs.push(name);
        Ok(())
    }

    /// A bf16 buffer the case writes, poisoned with NaN.
    fn out_bf16(&mut self, name: &'static str, len: usize) -> GpuResult<()> {
        let buf = self.gpu.alloc::<bf16>(len, name)?;
        buf.fill_bytes(0xff, &self.gpu.stream)?;
        self.s.bf16s.insert(name, buf);
        self.s.outputs.push(name);
        Ok(())
    }
}

/// The AdamW hyperparameters of the AdamW case (a step late enough that the bias corrections are
/// not trivial); the CPU reference bench (`bench/cpu_reference.rs`) uses them too.
pub fn bench_adamw_step() -> AdamWStep {
    AdamWStep {
        step: 10,
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-20,
        weight_decay: 0.1,
        decay_mode: DecayMode::Coupled,
        grad_scale: 1.0 / 8192.0,
    }
}

/// Per-kernel profiles on one GPU, or on the emulated device (see the module documentation).
pub struct CudaKernelLauncher {
    // Field order matters for drop: buffers and handles go before the context in `gpu`.
    setup: Option<Setup>,
    start: Event,
    end: Event,
    blas: Blas,
    kernels: Kernels,
    /// Side of the square matmul of the measured peak.
    peak_n: usize,
    /// Bytes per device-to-device copy of the measured bandwidth.
    copy_bytes: usize,
    gpu: Gpu,
}

impl CudaKernelLauncher {
    /// Open GPU `ordinal`, build the kernels for its architecture with NVRTC (or load them from the
    /// cubin cache) and create the cuBLASLt handle.
    pub fn open(ordinal: usize) -> GpuResult<CudaKernelLauncher> {
        let gpu = Gpu::open(ordinal)?;
        super::gpu::catch_cuda_panic("opening the kernel bench", || {
            let images = nvrtc::build_all(
                gpu.cc,
                &nvrtc::find_cuda_include(),
                Some(&nvrtc::cache_dir()),
            )?;
            let kernels = Kernels::load(&gpu, &images)?;
            let blas = Blas::new(&gpu)?;
            Ok((kernels, blas))
        })
        .and_then(|(kernels, blas)| Self::with(gpu, kernels, blas, 8192, 1 << 30))
    }

    /// The launcher on the emulated device: kernels run by `exec` (the tests' CPU emulator of
    /// `kernels/*.cu`), products on the host, host wall time for events; the measured ceilings use a
    /// 64×64×64 product and 1 MiB copies.
    pub fn emulated(exec: Arc<dyn KernelExec>) -> GpuResult<CudaKernelLauncher> {
        Self::with(
            Gpu::emulated(),
            Kernels::emulated(exec),
            Blas::emulated(),
            64,
            1 << 20,
        )
    }

    fn with(
        gpu: Gpu,
        kernels: Kernels,
        blas: Blas,
        peak_n: usize,
        copy_bytes: usize,
    ) -> GpuResult<CudaKernelLauncher> {
        Ok(CudaKernelLauncher {
            setup: None,
            start: gpu.timing_event()?,
            end: gpu.timing_event()?,
            blas,
            kernels,
            peak_n,
            copy_bytes,
            gpu,
        })
    }

    /// The prepared case's output buffers (as f32) by name: they start as NaN, so a value that is
    /// still NaN was not written.
    pub fn outputs(&self) -> GpuResult<Vec<(String, Vec<f32>)>> {
        let s = self
            .setup
            .as_ref()
            .ok_or_else(|| GpuError::Invalid("no case has been prepared".into()))?;
        let mut out = Vec::new();
        for &name in &s.outputs {
            let vals = if let Some(b) = s.f32s.get(name) {
                self.gpu.download(b, b.len())?
            } else if let Some(b) = s.bf16s.get(name) {
                let v = self.gpu.download(b, b.len())?;
                v.into_iter().map(bf16::to_f32).collect()
            } else {
                return Err(GpuError::Invalid(format!("output {name} has no buffer")));
            };
            out.push((name.to_string(), vals));
        }
        Ok(out)
    }

    fn build(&self, case: &KernelCase) -> GpuResult<Setup> {
        let (d, b, t, v) = (case.d_model, case.b, case.t, case.v);
        let (n, h) = (b * t, d / HEAD_DIM);
        let attn = AttnShape { b, t, h };
        let mut bld = Builder {
            gpu: &self.gpu,
            rng: ChaCha8Rng::seed_from_u64(0x6b62 ^ (d as u64) << 8 ^ case.family as u64),
            s: Setup {
                case: case.clone(),
                f32s: BTreeMap::new(),
                bf16s: BTreeMap::new(),
                u16s: BTreeMap::new(),
                outputs: Vec::new(),
                runs: Vec::new(),
            },
        };
        let ops = Ops::new(&self.kernels, &self.gpu.stream);
        match case.family {
            KernelFamily::AttentionForward | KernelFamily::AttentionBackward => {
                for name in ["q", "k", "v"] {
                    bld.rand_bf16(name, n * d, -1.0, 1.0)?;
                }
                bld.rand_f32("q_scale", HEAD_DIM, 0.5, 1.5)?;
                bld.rand_f32("k_scale", HEAD_DIM, 0.5, 1.5)?;
                bld.out_f32("rope_cs", t * 32 * 2)?;
                ops.rope_table_init(bld.s.f("rope_cs")?, t)?;
                bld.out_bf16("out", n * d)?;
                bld.out_f32("lse", attn.stats_len())?;
                if case.family == KernelFamily::AttentionBackward {
                    // The backward reads the forward's output and logsumexp.
                    ops.attention_forward(attn, &attn_forward(&bld.s)?)?;
                    bld.rand_bf16("dout", n * d, -1.0, 1.0)?;
                    for name in ["dq", "dk", "dv"] {
                        bld.out_bf16(name, n * d)?;
                    }
                    bld.out_f32("delta", attn.stats_len())?;
                    bld.out_f32("dscale_part", attn.dscale_part_len())?;
                    bld.zeros_f32("dq_scale", HEAD_DIM, true)?;
                    bld.zeros_f32("dk_scale", HEAD_DIM, true)?;
                }
            }
            KernelFamily::CrossEntropy => {
                // Rows padded to the backend's aligned vocabulary, as in the training step.
                bld.rand_f32("logits", n * padded_vocab(v), -4.0, 4.0)?;
                bld.s.outputs.push("logits"); // its bf16 gradient over the first half of each row
                bld.rand_ids("targets", n, 1, v)?;
                bld.out_f32("loss_rows", n)?;
            }
            KernelFamily::LayerNormForward | KernelFamily::LayerNormBackward => {
                bld.rand_f32("x", n * d, -2.0, 2.0)?;
                bld.rand_f32("scale", d, 0.5, 1.5)?;
                bld.out_bf16("out", n * d)?;
                bld.out_f32("mean", n)?;
                bld.out_f32("rstd", n)?;
                if case.family == KernelFamily::LayerNormBackward {
                    let s = &bld.s;
                    ops.layernorm_forward_bf16(
                        s.f("x")?,
                        s.f("scale")?,
                        s.h("out")?,
                        s.f("mean")?,
                        s.f("rstd")?,
                        n,
                        d,
                    )?;
                    bld.rand_f32("dout", n * d, -1.0, 1.0)?;
                    bld.out_f32("dx", n * d)?;
                    bld.out_f32("part", ln_part_len(n, d))?;
                    bld.zeros_f32("dscale", d, true)?;
                }
            }
            KernelFamily::GeluForward => {
                bld.rand_bf16("u", 4 * n * d, -3.0, 3.0)?;
                bld.out_bf16("g", 4 * n * d)?;
            }
            KernelFamily::GeluBackward => {
                bld.rand_f32("dg", 4 * n * d, -1.0, 1.0)?;
                bld.rand_bf16("u", 4 * n * d, -3.0, 3.0)?;
                bld.out_bf16("du", 4 * n * d)?;
            }
            KernelFamily::EmbeddingForward => {
                bld.rand_f32("embed", v * d, -0.1, 0.1)?;
                bld.rand_ids("tokens", n, 0, v)?;
                bld.out_f32("x", n * d)?;
            }
            KernelFamily::AdamW => {
                // Every parameter of the model in the backend's device layout.
                let layout = DeviceLayout::new(&ModelConfig {
                    d_model: d,
                    n_layers: case.n_layers,
                    seq_len: t,
                    vocab_size: v,
                })
                .params;
                let p = layout.total;
                bld.rand_f32("params", p, -0.05, 0.05)?;
                bld.rand_f32("grads", p, -1.0, 1.0)?;
                bld.rand_f32("m", p, -1e-3, 1e-3)?;
                bld.rand_f32("v", p, 1e-8, 1e-6)?;
                bld.out_bf16("wb", p)?;
                bld.s.outputs.extend(["params", "m", "v"]);
                bld.s.runs = adamw_runs(&layout);
            }
            KernelFamily::Matmul => {
                bld.rand_bf16("x", n * d, -1.0, 1.0)?;
                bld.rand_bf16("w", d * 4 * d, -0.05, 0.05)?;
                bld.out_bf16("y", n * 4 * d)?;
            }
            KernelFamily::MatmulHead => {
                let vp = padded_vocab(v);
                bld.rand_bf16("x", n * d, -1.0, 1.0)?;
                bld.rand_bf16("w", d * vp, -0.05, 0.05)?;
                bld.out_f32("logits", n * vp)?;
            }
        }
        self.gpu.sync()?;
        Ok(bld.s)
    }

    /// Launch the prepared case once (queued on the compute stream).
    fn launch_once(&mut self) -> GpuResult<()> {
        let Some(s) = &self.setup else {
            return Err(GpuError::Unavailable("no case has been prepared".into()));
        };
        let c = &s.case;
        let (d, t, v) = (c.d_model, c.t, c.v);
        let n = c.b * c.t;
        let attn = AttnShape {
            b: c.b,
            t,
            h: d / HEAD_DIM,
        };
        let stream = &self.gpu.stream;
        let ops = Ops::new(&self.kernels, stream);
        match c.family {
            KernelFamily::AttentionForward => ops.attention_forward(attn, &attn_forward(s)?),
            KernelFamily::AttentionBackward => ops.attention_backward(
                attn,
                &AttnBackward {
                    fwd: attn_forward(s)?,
                    dout: s.h("dout")?,
                    dq: s.h("dq")?,
                    dk: s.h("dk")?,
                    dv: s.h("dv")?,
                    delta: s.f("delta")?,
                    dscale_part: s.f("dscale_part")?,
                    dq_scale: s.f("dq_scale")?,
                    dk_scale: s.f("dk_scale")?,
                },
            ),
            KernelFamily::CrossEntropy => ops.cross_entropy_f32(
                s.f("logits")?,
                s.u("targets")?,
                s.f("loss_rows")?,
                (n, v, padded_vocab(v)),
                true,
            ),
            KernelFamily::LayerNormForward => ops.layernorm_forward_bf16(
                s.f("x")?,
                s.f("scale")?,
                s.h("out")?,
                s.f("mean")?,
                s.f("rstd")?,
                n,
                d,
            ),
            KernelFamily::LayerNormBackward => ops.layernorm_backward(
                &LnBackward {
                    dout: s.f("dout")?,
                    x: s.f("x")?,
                    scale: s.f("scale")?,
                    mean: s.f("mean")?,
                    rstd: s.f("rstd")?,
                    dx: s.f("dx")?,
                    part: s.f("part")?,
                    dscale: s.f("dscale")?,
                },
                n,
                d,
                false,
            ),
            KernelFamily::GeluForward => ops.gelu_forward_bf16(s.h("u")?, s.h("g")?, 4 * n * d),
            KernelFamily::GeluBackward => {
                ops.gelu_backward_bf16(s.f("dg")?, s.h("u")?, s.h("du")?, 4 * n * d)
            }
            KernelFamily::EmbeddingForward => {
                ops.embedding_forward(s.f("embed")?, s.u("tokens")?, s.f("x")?, (n, d, v))
            }
            KernelFamily::AdamW => {
                let buf = |name: &str| {
                    s.f32s
                        .get(name)
                        .ok_or_else(|| GpuError::Unavailable(format!("AdamW buffer {name}")))
                };
                let wb = s
                    .bf16s
                    .get("wb")
                    .ok_or_else(|| GpuError::Unavailable("AdamW buffer wb".into()))?;
                let st = AdamWState {
                    params: buf("params")?,
                    grads: buf("grads")?,
                    m: buf("m")?,
                    v: buf("v")?,
                    wb,
                };
                ops.adamw(&st, &s.runs, &bench_adamw_step())
            }
            KernelFamily::Matmul => self.blas.gemm(
                stream,
                &Gemm::forward((n, d, 4 * d), s.h("x")?, s.h("w")?, s.h("y")?),
            ),
            KernelFamily::MatmulHead => self.blas.gemm(
                stream,
                &Gemm::forward(
                    (n, d, padded_vocab(v)),
                    s.h("x")?,
                    s.h("w")?,
                    s.f("logits")?,
                ),
            ),
        }
    }

    /// Seconds of `launches` back-to-back runs of `f` between the two timing events.
    fn timed(
        &mut self,
        launches: u64,
        mut f: impl FnMut(&mut Self) -> GpuResult<()>,
    ) -> GpuResult<f64> {
        self.gpu.bind()?;
        self.start
            .record(&self.gpu.stream, "recording the start event")?;
        for _ in 0..launches {
            f(self)?;
        }
        self.end
            .record(&self.gpu.stream, "recording the end event")?;
        Ok(self.start.elapsed_ms(&self.end)? * 1e-3)
    }

    /// Median bytes/s of device-to-device copies (read + write counted).
    fn copy_bandwidth(&mut self) -> GpuResult<f64> {
        let n = self.copy_bytes;
        let src = self
            .gpu
            .alloc_zeroed::<u8>(n, "the copy-bandwidth source")?;
        let dst = self.gpu.alloc::<u8>(n, "the copy-bandwidth destination")?;
        self.gpu.copy(&src, &dst, n)?;
        let mut rates = Vec::with_capacity(CEIL_REPEATS);
        for _ in 0..CEIL_REPEATS {
            let s = self.timed(CEIL_LAUNCHES as u64, |me| me.gpu.copy(&src, &dst, n))?;
            rates.push(2.0 * n as f64 * CEIL_LAUNCHES as f64 / s.max(1e-12));
        }
        rates.sort_by(f64::total_cmp);
        Ok(rates[rates.len() / 2])
    }
}

/// The attention forward's buffers of a prepared attention case.
fn attn_forward(s: &Setup) -> GpuResult<AttnForward<'_>> {
    Ok(AttnForward {
        out: s.h("out")?,
        lse: s.f("lse")?,
        q: s.h("q")?,
        k: s.h("k")?,
        v: s.h("v")?,
        q_scale: s.f("q_scale")?,
        k_scale: s.f("k_scale")?,
        rope_cs: s.f("rope_cs")?,
    })
}

impl CudaKernelLauncher {
    /// Device description, e.g. `cuda:0 NVIDIA H100 80GB HBM3`.
    pub fn device_name(&self) -> String {
        format!("cuda:{} {}", self.gpu.ordinal, self.gpu.name)
    }

    /// Allocate the case's buffers and fill them with random values (never zeros).
    pub fn prepare(&mut self, case: &KernelCase) -> GpuResult<()> {
        if case.d_model == 0 || !case.d_model.is_multiple_of(HEAD_DIM) || case.b == 0 || case.t == 0
        {
            return Err(GpuError::Invalid(format!(
                "{}: D must be a positive multiple of {HEAD_DIM}, B and T positive",
                case.id()
            )));
        }
        self.gpu.bind()?;
        self.gpu.sync()?;
        self.setup = None; // free the previous case first
        let s = super::gpu::catch_cuda_panic("preparing a kernel case", || self.build(case))
            .map_err(|e| e.context(case.id()))?;
        self.setup = Some(s);
        Ok(())
    }

    /// Launch the case's kernels `launches` times back to back between two CUDA events on one stream and
    /// return the elapsed device time in seconds.
    pub fn time_launches(&mut self, case: &KernelCase, launches: u64) -> GpuResult<f64> {
        match &self.setup {
            Some(s) if s.case == *case => {}
            _ => return Err(GpuError::Invalid(format!("{} was not prepared", case.id()))),
        }
        self.timed(launches, |me| me.launch_once())
            .map_err(|e| e.context(case.id()))
    }

    /// Measured dense bf16 matmul peak (FLOP/s) and device-to-device copy bandwidth (bytes/s), to use as
    /// ceilings next to the datasheet's.
    pub fn measured_ceilings(&mut self) -> GpuResult<(f64, f64)> {
        let peak = super::peak::measure_on(
            &self.gpu,
            &mut self.blas,
            self.peak_n,
            CEIL_LAUNCHES,
            CEIL_REPEATS,
        )?;
        let bw = self
            .copy_bandwidth()
            .map_err(|e| e.context("measuring the copy bandwidth"))?;
        Ok((peak, bw))
    }
}

/// The kernel launcher of GPU 0 (kernels built with NVRTC or loaded from the cubin cache), or why
/// there is none.
pub fn open_launcher() -> GpuResult<CudaKernelLauncher> {
    if let Err(why) = super::gpu::probe_gpus() {
        return Err(GpuError::Unavailable(format!("no GPU: {why}")));
    }
    CudaKernelLauncher::open(0).map_err(|e| e.context("cannot open GPU 0 for the kernel bench"))
}

impl Drop for CudaKernelLauncher {
    fn drop(&mut self) {
        // Let queued work finish before the buffers it uses are freed.
        let _ = self.gpu.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_opens_or_says_why() {
        // Without a GPU: an explanation naming the GPU, never a panic; with one: the device.
        match open_launcher() {
            Err(why) => assert!(why.to_string().contains("GPU"), "{why}"),
            Ok(l) => assert!(
                l.device_name().starts_with("cuda:0 "),
                "{}",
                l.device_name()
            ),
        }
    }
}
