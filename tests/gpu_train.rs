//! The whole training step on the GPU (CudaBackend) against the CPU reference backend, determinism, and
//! the backend's error paths. Skips with a message when no GPU is present; on a machine without one it
//! also checks that asking for the GPU fails cleanly instead of panicking.

#[path = "gpu/common.rs"]
mod common;

use isoflop::backend::{AdamWStep, Backend, BackendError, DecayMode, LossSum};
use isoflop::cpu::CpuBackend;
use isoflop::cuda::CudaBackend;
use isoflop::model::{init_params, ModelConfig, ParamLayout};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn cfg() -> ModelConfig {
    ModelConfig {
        d_model: 128,
        n_layers: 2,
        seq_len: 64,
        vocab_size: 512,
    }
}

/// `b` rows of T+1 ids with padding at the end of most rows; ids mostly from a small subset (a learnable
/// unigram distribution, so the loss falls within a few steps), some from the whole vocabulary.
fn batch(c: &ModelConfig, b: usize, seed: u64) -> Vec<u16> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(b * (c.seq_len + 1));
    for _ in 0..b {
        let len = r.random_range(c.seq_len / 2..=c.seq_len + 1);
        for j in 0..=c.seq_len {
            out.push(if j >= len {
                0
            } else if r.random_range(0..10) < 9 {
                r.random_range(1..32u16)
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

/// `steps` optimizer steps of two micro-batches each; per step (mean loss, grad norm).
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

fn cuda(params: &[f32]) -> CudaBackend {
    CudaBackend::new(cfg(), params, 0).unwrap_or_else(|e| panic!("CudaBackend::new: {e}"))
}

#[test]
fn gpu_training_matches_cpu_for_20_steps() {
    if let Some(why) = common::no_gpu_reason() {
        eprintln!("SKIPPED gpu_training_matches_cpu_for_20_steps: no GPU ({why})");
        return;
    }
    let c = cfg();
    let p0 = init_params(&c, 5);
    let mut gpu = cuda(&p0);
    let mut cpu = CpuBackend::new(c, p0.clone()).unwrap();
    eprintln!("{}", gpu.device_name());

    // First micro-batch: loss and every tensor's gradient against the CPU.
    let tokens = batch(&c, 4, 1);
    let lg = gpu.forward_backward(&tokens, 4).unwrap();
    let lc = cpu.forward_backward(&tokens, 4).unwrap();
    assert_eq!(lg.count, lc.count);
    let rel = (lg.sum - lc.sum).abs() / lc.sum.abs();
    eprintln!(
        "first loss: gpu {} cpu {} (rel {rel:.2e})",
        lg.mean(),
        lc.mean()
    );
    assert!(
        rel < 1e-2,
        "first loss differs: {} vs {}",
        lg.mean(),
        lc.mean()
    );
    let (gg, gc) = (gpu.read_grads().unwrap(), cpu.read_grads().unwrap());
    let mut bad = Vec::new();
    for t in &ParamLayout::new(&c).tensors {
        let r = t.range();
        let (a, b) = (&gg[r.clone()], &gc[r]);
        let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        let e = (num / den.max(1e-30)).sqrt();
        eprintln!("  grad {:<28} rel L2 error {e:.2e}", t.name);
        // NaN fails (`!(e < tol)`).
        if e.is_nan() || e >= 5e-2 {
            bad.push(format!("{}: {e:.2e}", t.name));
        }
    }
    assert!(
        bad.is_empty(),
        "gradients differ from the CPU: {}",
        bad.join(", ")
    );
    // eval loss = the training loss of the same batch (no gradient written).
    let le = gpu.forward_loss(&tokens, 4).unwrap();
    assert_eq!(
        le.sum.to_bits(),
        lg.sum.to_bits(),
        "forward_loss vs forward_backward"
    );

    // 20 steps from the same start.
    gpu.write_params(&p0).unwrap();
    cpu.write_params(&p0).unwrap();
    let n = ParamLayout::new(&c).total;
    gpu.write_moments(&vec![0.0; n], &vec![0.0; n]).unwrap();
    cpu.write_moments(&vec![0.0; n], &vec![0.0; n]).unwrap();
    let a = train(&mut gpu, 20, 4);
    let b = train(&mut cpu, 20, 4);
    for (i, ((lg, ng), (lc, nc))) in a.iter().zip(&b).enumerate() {
        eprintln!(
            "step {:>2}: loss gpu {lg:.5} cpu {lc:.5} | grad norm gpu {ng:.4} cpu {nc:.4}",
            i + 1
        );
    }
    for (i, ((lg, ng), (lc, nc))) in a.iter().zip(&b).enumerate() {
        assert!(
            (lg - lc).abs() <= 2e-2 * lc.abs(),
            "step {}: loss {lg} vs {lc}",
            i + 1
        );
        assert!(
            (ng - nc).abs() <= 1e-1 * nc.abs(),
            "step {}: grad norm {ng} vs {nc}",
            i + 1
        );
    }
    assert!(a.last().unwrap().0 < a[0].0, "the GPU run must learn");
    let (pg, pc) = (gpu.read_params().unwrap(), cpu.read_params().unwrap());
    let num: f64 = pg
        .iter()
        .zip(&pc)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum();
    let den: f64 = pc.iter().map(|y| (*y as f64).powi(2)).sum();
    assert!(
        (num / den).sqrt() < 2e-2,
        "parameters after 20 steps drifted"
    );
}

#[test]
fn gpu_training_is_deterministic() {
    if let Some(why) = common::no_gpu_reason() {
        eprintln!("SKIPPED gpu_training_is_deterministic: no GPU ({why})");
        return;
    }
    let p0 = init_params(&cfg(), 9);
    let run = || {
        let mut be = cuda(&p0);
        let l = train(&mut be, 10, 3);
        (l, be.read_params().unwrap())
    };
    let (la, pa) = run();
    let (lb, pb) = run();
    let bits = |v: &[(f64, f64)]| {
        v.iter()
            .map(|(a, b)| (a.to_bits(), b.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        bits(&la),
        bits(&lb),
        "losses and grad norms must be bitwise identical"
    );
    assert!(
        pa.iter().zip(&pb).all(|(a, b)| a.to_bits() == b.to_bits()),
        "parameters differ"
    );
}

#[test]
fn gpu_backend_errors_are_clean() {
    let c = cfg();
    let p0 = init_params(&c, 1);
    if let Some(why) = common::no_gpu_reason() {
        // Without a GPU, opening the backend is an error, never a panic.
        let e = CudaBackend::new(c, &p0, 0)
            .err()
            .expect("no GPU: CudaBackend::new must fail");
        eprintln!(
            "SKIPPED GPU part of gpu_backend_errors_are_clean: no GPU ({why}); error was: {e}"
        );
        assert!(!e.to_string().is_empty());
        return;
    }
    let mut be = cuda(&p0);
    // A bad id and a bad length are BadBatch errors; the backend stays usable.
    let mut bad = batch(&c, 2, 3);
    bad[5] = c.vocab_size as u16;
    assert!(matches!(
        be.forward_backward(&bad, 2),
        Err(BackendError::BadBatch(_))
    ));
    assert!(matches!(
        be.forward_backward(&bad[1..], 2),
        Err(BackendError::BadBatch(_))
    ));
    assert!(matches!(
        be.write_params(&p0[1..]),
        Err(BackendError::Shape { .. })
    ));
    // A micro-batch far too large for the device: OutOfMemory suggesting a smaller --micro-batch.
    let huge = 1 << 20;
    let e = be.forward_backward(&batch(&c, huge, 4), huge).unwrap_err();
    assert!(matches!(e, BackendError::OutOfMemory(_)), "{e}");
    assert!(e.to_string().contains("--micro-batch"), "{e}");
    // Still trains afterwards.
    let l = be.forward_backward(&batch(&c, 2, 5), 2).unwrap();
    assert!(l.mean().is_finite());
    // A wrong device ordinal names it.
    let e = isoflop::device::open_backend(isoflop::device::DeviceChoice::Cuda(99), &c, p0.clone())
        .err()
        .expect("cuda:99 must fail");
    assert!(e.to_string().contains("cuda:99"), "{e}");
}

/// The CPU half of the comparison on its own (runs everywhere): the reference run of
/// `gpu_training_matches_cpu_for_20_steps` learns, so "the GPU run must learn" there is a real check.
#[test]
fn reference_run_learns_on_the_cpu() {
    let c = cfg();
    let mut cpu = CpuBackend::new(c, init_params(&c, 5)).unwrap();
    let l = train(&mut cpu, 20, 4);
    assert!(l.iter().all(|(a, b)| a.is_finite() && b.is_finite()));
    assert!(l[19].0 < l[0].0 - 0.1, "loss {} -> {}", l[0].0, l[19].0);
}
