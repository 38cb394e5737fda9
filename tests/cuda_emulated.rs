//! The CUDA backend's host logic on the emulated device: `CudaBackend::new_emulated` runs the backend
//! unchanged (buffers, memory plan, token staging and the embedding-backward CSR, every kernel launch
//! with its grid, arguments and offsets, mixed-precision casts, reductions, AdamW) with device memory in
//! host memory, the kernels of `kernels/*.cu` under the CPU emulator (tests/emu) and the cuBLASLt
//! products computed on the host. Compared with the CPU reference backend on a tiny model: the first
//! batch's loss and every tensor's gradient, ten training steps, determinism and the error paths.

#[path = "emu/harness.rs"]
mod harness;

use isoflop::backend::{AdamWStep, Backend, BackendError, DecayMode, LossSum};
use isoflop::cpu::CpuBackend;
use isoflop::cuda::gpu::KernelExec;
use isoflop::cuda::CudaBackend;
use isoflop::model::{init_params, ModelConfig, ParamLayout};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::ffi::c_void;
use std::sync::Arc;

/// One kernel argument as the backend passes it (pointer to the value, size).
struct Arg(*mut c_void, usize);

impl harness::KernelArg for Arg {
    fn arg_ptr(&self) -> *mut c_void {
        self.0
    }
    fn arg_size(&self) -> usize {
        self.1
    }
}

/// The emulator library as the backend's kernel executor (sizes checked against each signature).
struct Emu(&'static harness::EmuLib);

impl KernelExec for Emu {
    fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shmem: usize,
        args: &[(*mut c_void, usize)],
    ) -> Result<(), String> {
        let args: Vec<Arg> = args.iter().map(|&(p, s)| Arg(p, s)).collect();
        let refs: Vec<&dyn harness::KernelArg> =
            args.iter().map(|a| a as &dyn harness::KernelArg).collect();
        self.0.launch(name, grid, block, shmem, &refs)
    }
}

/// D 64 (one head), 2 blocks, T 40 (not a multiple of the 64-row attention tile), V 300.
fn cfg() -> ModelConfig {
    ModelConfig {
        d_model: 64,
        n_layers: 2,
        seq_len: 40,
        vocab_size: 300,
    }
}

/// D 128 (two heads), one block, V 301, T 70 (two attention tiles, the
/// second partial).
fn cfg_wide() -> ModelConfig {
    ModelConfig {
        d_model: 128,
        n_layers: 1,
        seq_len: 70,
        vocab_size: 301,
    }
}

fn emulated_on(c: ModelConfig, params: &[f32], lib: &'static harness::EmuLib) -> CudaBackend {
    let exec: Arc<dyn KernelExec> = Arc::new(Emu(lib));
    CudaBackend::new_emulated(c, params, exec)
        .unwrap_or_else(|e| panic!("CudaBackend::new_emulated: {e}"))
}

fn emulated(params: &[f32]) -> CudaBackend {
    emulated_on(cfg(), params, harness::kernels())
}

/// `b` rows of T+1 ids with padding at the end of most rows; ids mostly from a small subset (a
/// learnable unigram distribution, and repeated ids for the embedding backward), some from the whole
/// vocabulary.
fn batch(c: &ModelConfig, b: usize, seed: u64) -> Vec<u16> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(b * (c.seq_len + 1));
    for _ in 0..b {
        let len = r.random_range(c.seq_len / 2..=c.seq_len + 1);
        for j in 0..=c.seq_len {
            out.push(if j >= len {
                0
            } else if r.random_range(0..10) < 8 {
                r.random_range(1..24u16)
            } else {
                r.random_range(1..c.vocab_size as u16)
            });
        }
    }
    out
}

fn hp(step: u64, count: u64) -> AdamWStep {
    AdamWStep {
        step,
        lr: 3e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-20,
        weight_decay: 0.1,
        decay_mode: DecayMode::Coupled,
        grad_scale: 1.0 / count.max(1) as f32,
    }
}

/// `steps` optimizer steps of two micro-batches of `b` each; per step (mean loss, grad norm).
fn train(be: &mut dyn Backend, steps: u64, b: usize) -> Vec<(f64, f64)> {
    let c = *be.config();
    let mut out = Vec::new();
    for s in 1..=steps {
        be.zero_grads();
        let mut loss = LossSum::default();
        for mb in 0..2 {
            loss.add(
                be.forward_backward(&batch(&c, b, s * 10 + mb), b)
                    .expect("forward_backward"),
            );
        }
        let norm = be.grad_norm().expect("grad_norm");
        be.adamw_step(&hp(s, loss.count)).expect("adamw");
        out.push((loss.mean(), norm));
    }
    out
}

/// ‖a − b‖ / ‖b‖ (NaN when a holds a NaN).
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

#[test]
fn emulated_first_batch_matches_cpu() {
    first_batch(cfg(), harness::kernels());
}

#[test]
fn emulated_first_batch_matches_cpu_two_heads_two_tiles() {
    first_batch(cfg_wide(), harness::kernels());
}

/// One micro-batch of 3 then one of 2 into the same gradients: loss, every tensor's gradient, the
/// gradient norm against the CPU; then `forward_loss` of the first batch.
fn first_batch(c: ModelConfig, lib: &'static harness::EmuLib) {
    let p0 = init_params(&c, 5);
    let mut emu = emulated_on(c, &p0, lib);
    let mut cpu = CpuBackend::new(c, p0.clone()).unwrap();
    let tokens = batch(&c, 3, 1);
    let le = emu.forward_backward(&tokens, 3).unwrap();
    let lc = cpu.forward_backward(&tokens, 3).unwrap();
    assert_eq!(le.count, lc.count);
    let rel = (le.sum - lc.sum).abs() / lc.sum.abs();
    eprintln!(
        "first loss: emulated {} cpu {} (rel {rel:.2e})",
        le.mean(),
        lc.mean()
    );
    assert!(rel < 1e-2, "first loss: {} vs {}", le.mean(), lc.mean());
    // Gradients accumulate over micro-batches: a second one into the same gradients.
    let t2 = batch(&c, 2, 2);
    emu.forward_backward(&t2, 2).unwrap();
    cpu.forward_backward(&t2, 2).unwrap();
    let (ge, gc) = (emu.read_grads().unwrap(), cpu.read_grads().unwrap());
    let mut bad = Vec::new();
    for t in &ParamLayout::new(&c).tensors {
        let r = t.range();
        let e = rel_l2(&ge[r.clone()], &gc[r]);
        eprintln!("  grad {:<28} rel L2 error {e:.2e}", t.name);
        if e.is_nan() || e >= 2e-2 {
            bad.push(format!("{}: {e:.2e}", t.name));
        }
    }
    assert!(bad.is_empty(), "gradients differ: {}", bad.join(", "));
    // Evaluation gives the training loss of the same batch, bit for bit, and writes no gradient.
    let ev = emu.forward_loss(&tokens, 3).unwrap();
    assert_eq!(ev.sum.to_bits(), le.sum.to_bits(), "forward_loss");
    let g_after = emu.read_grads().unwrap();
    assert!(g_after
        .iter()
        .zip(&ge)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    let (ne, nc) = (emu.grad_norm().unwrap(), cpu.grad_norm().unwrap());
    assert!((ne - nc).abs() <= 1e-2 * nc, "grad norm {ne} vs {nc}");
}

#[test]
fn emulated_training_matches_cpu() {
    let c = cfg();
    let p0 = init_params(&c, 7);
    let mut emu = emulated(&p0);
    let mut cpu = CpuBackend::new(c, p0.clone()).unwrap();
    let a = train(&mut emu, 10, 2);
    let b = train(&mut cpu, 10, 2);
    for (i, ((le, ne), (lc, nc))) in a.iter().zip(&b).enumerate() {
        eprintln!(
            "step {:>2}: loss emulated {le:.5} cpu {lc:.5} | grad norm {ne:.4} cpu {nc:.4}",
            i + 1
        );
    }
    for (i, ((le, ne), (lc, nc))) in a.iter().zip(&b).enumerate() {
        assert!(
            (le - lc).abs() <= 2e-2 * lc.abs(),
            "step {}: loss {le} vs {lc}",
            i + 1
        );
        assert!(
            (ne - nc).abs() <= 5e-2 * nc.abs(),
            "step {}: grad norm {ne} vs {nc}",
            i + 1
        );
    }
    assert!(a[9].0 < a[0].0 - 0.05, "the emulated run must learn");
    let (pe, pc) = (emu.read_params().unwrap(), cpu.read_params().unwrap());
    let e = rel_l2(&pe, &pc);
    assert!(e < 1e-2, "parameters after 10 steps: rel L2 {e:.2e}");
    let ((me, ve), (mc, vc)) = (emu.read_moments().unwrap(), cpu.read_moments().unwrap());
    assert!(
        rel_l2(&me, &mc) < 5e-2 && rel_l2(&ve, &vc) < 5e-2,
        "AdamW moments"
    );
}

#[test]
fn emulated_training_is_deterministic() {
    let p0 = init_params(&cfg(), 9);
    let run = || {
        let mut be = emulated(&p0);
        let l = train(&mut be, 3, 2);
        (l, be.read_params().unwrap())
    };
    let (la, pa) = run();
    let (lb, pb) = run();
    let bits = |v: &[(f64, f64)]| {
        v.iter()
            .map(|(a, b)| (a.to_bits(), b.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&la), bits(&lb), "losses and grad norms");
    assert!(
        pa.iter().zip(&pb).all(|(a, b)| a.to_bits() == b.to_bits()),
        "parameters differ"
    );
}

#[test]
fn emulated_errors_are_clean() {
    let c = cfg();
    let p0 = init_params(&c, 1);
    assert!(matches!(
        CudaBackend::new_emulated(c, &p0[1..], Arc::new(Emu(harness::kernels()))),
        Err(BackendError::Shape { .. })
    ));
    let mut be = emulated(&p0);
    let mut bad = batch(&c, 2, 3);
    bad[5] = c.vocab_size as u16;
    let e = be.forward_backward(&bad, 2).unwrap_err();
    assert!(matches!(e, BackendError::BadBatch(_)), "{e}");
    assert!(e.to_string().contains("row 0, column 5"), "{e}");
    assert!(matches!(
        be.forward_backward(&bad[1..], 2),
        Err(BackendError::BadBatch(_))
    ));
    assert!(matches!(
        be.forward_loss(&[], 0),
        Err(BackendError::BadBatch(_))
    ));
    assert!(matches!(
        be.write_params(&p0[1..]),
        Err(BackendError::Shape { .. })
    ));
    // A micro-batch beyond the (fixed) emulated memory: OutOfMemory naming --micro-batch.
    let huge = 1 << 20;
    let e = be.forward_backward(&batch(&c, huge, 4), huge).unwrap_err();
    assert!(matches!(e, BackendError::OutOfMemory(_)), "{e}");
    assert!(e.to_string().contains("--micro-batch"), "{e}");
    // Still works afterwards, and write_params round-trips.
    let l = be.forward_backward(&batch(&c, 1, 5), 1).unwrap();
    assert!(l.mean().is_finite());
    // Growing the micro-batch (1 → 3) reallocates activations and staging: still the CPU's loss.
    let t3 = batch(&c, 3, 6);
    let le = be.forward_loss(&t3, 3).unwrap();
    let lc = CpuBackend::new(c, p0.clone())
        .unwrap()
        .forward_loss(&t3, 3)
        .unwrap();
    assert_eq!(le.count, lc.count);
    assert!((le.sum - lc.sum).abs() < 1e-2 * lc.sum, "{le:?} vs {lc:?}");
    let mut p1 = p0.clone();
    p1[0] += 1.0;
    be.write_params(&p1).unwrap();
    assert_eq!(be.read_params().unwrap(), p1);
}

/// A training step and an evaluation of the emulated backend with the kernels built with
/// AddressSanitizer + UBSan, in a child process: every kernel access outside the buffers the backend
/// allocated (a wrong size, offset or grid) fails, as device memory is plain host memory here.
#[test]
fn emulated_step_under_address_sanitizer() {
    let so = harness::EmuLib::build_so(&harness::kernel_sources(), harness::Flavor::Sanitize)
        .unwrap_or_else(|e| panic!("sanitized build: {e}"));
    let (passed, log) = harness::run_sanitized_child("sanitized_child_step", &so)
        .unwrap_or_else(|e| panic!("sanitized child: {e}"));
    assert!(passed, "sanitized emulated step failed:\n{log}");
    assert!(
        log.contains("sanitized step ok"),
        "child did not run:\n{log}"
    );
}

#[test]
#[ignore = "run by emulated_step_under_address_sanitizer in a child process"]
fn sanitized_child_step() {
    let Some(lib) = harness::sanitized_lib_in_child() else {
        return;
    };
    let lib: &'static harness::EmuLib = Box::leak(Box::new(lib));
    for c in [cfg(), cfg_wide()] {
        let p0 = init_params(&c, 3);
        let mut be = emulated_on(c, &p0, lib);
        be.zero_grads();
        let l = be.forward_backward(&batch(&c, 2, 1), 2).unwrap();
        be.forward_backward(&batch(&c, 1, 2), 1).unwrap();
        let norm = be.grad_norm().unwrap();
        be.adamw_step(&hp(1, l.count)).unwrap();
        let ev = be.forward_loss(&batch(&c, 2, 3), 2).unwrap();
        assert!(l.mean().is_finite() && ev.mean().is_finite() && norm.is_finite());
        assert!(be.read_params().unwrap().iter().all(|x| x.is_finite()));
    }
    eprintln!("sanitized step ok");
}
