//! The CUDA backend's whole training step against the CPU reference backend, on every device of
//! tests/device/util/common.rs: the emulated device always (`CudaBackend::new_emulated`: the backend's host logic
//! unchanged — buffers, memory plan, token staging and the embedding-backward CSR, every kernel launch
//! with its grid, arguments and offsets, mixed-precision casts, reductions, AdamW — with device memory in
//! host memory, `kernels/*.cu` under the CPU emulator and the cuBLASLt products on the host), and GPU 0
//! too when one is present (`CudaBackend::new`: the real driver, NVRTC, cuBLASLt and stream ordering).
//! The same tiny models run on both, so emulation and hardware are compared case by case; a larger model
//! and longer runs only on a GPU. Checked: the first batch's loss and every tensor's gradient, training
//! steps, determinism, the error paths, and (emulated only) a step with the kernels built under
//! AddressSanitizer + UBSan.

use crate::util::common;

use common::{for_each_target, harness, EmuExec, Target};
use isoflop::backend::{AdamWStep, Backend, BackendError, DecayMode, LossSum, TokenBatch};
use isoflop::cpu::CpuBackend;
use isoflop::cuda::gpu::KernelExec;
use isoflop::cuda::CudaBackend;
use isoflop::model::{init_params, ModelConfig, ParamLayout};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// D 64 (one head), 2 blocks, T 40 (not a multiple of the 64-row attention tile), V 300.
fn cfg() -> ModelConfig {
    ModelConfig {
        d_model: 64,
        n_layers: 2,
        seq_len: 40,
        vocab_size: 300,
    }
}

/// D 128 (two heads), one block, V 301, T 70 (two attention tiles, the second partial).
fn cfg_wide() -> ModelConfig {
    ModelConfig {
        d_model: 128,
        n_layers: 1,
        seq_len: 70,
        vocab_size: 301,
    }
}

/// GPU only: D 128 (two heads), 2 blocks, T 64 (one full tile), V 512.
fn cfg_gpu() -> ModelConfig {
    ModelConfig {
        d_model: 128,
        n_layers: 2,
        seq_len: 64,
        vocab_size: 512,
    }
}

/// `b` rows of `toks` as a validated batch for `c`.
fn tb(c: &ModelConfig, toks: &[u16], b: usize) -> TokenBatch {
    TokenBatch::new(c, toks, b).expect("a valid batch")
}

/// The CUDA backend on `t` (the release emulator on the emulated device); panics with the reason.
fn open(t: Target, c: ModelConfig, params: &[f32]) -> CudaBackend {
    let r = match t {
        Target::Emulated => CudaBackend::new_emulated(c, params, common::emu_exec()),
        Target::Gpu(i) => CudaBackend::new(c, params, i),
    };
    r.unwrap_or_else(|e| panic!("opening the CUDA backend on {t}: {e}"))
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
        be.zero_grads().expect("zero_grads");
        let mut loss = LossSum::default();
        for mb in 0..2 {
            loss.add(
                be.forward_backward(&tb(&c, &batch(&c, b, s * 10 + mb), b))
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

/// `forward_scores` (the forward pass, then `token_scores_f32` over the padded logits) against the CPU
/// backend's: per-position log-probabilities close (bf16 products), the same argmax hits up to near-ties,
/// pad positions exactly (0, false), their sum equal to −`forward_loss`, and the gradients untouched.
#[test]
fn forward_scores_match_cpu() {
    for_each_target("forward_scores_match_cpu", |t| {
        for c in [cfg(), cfg_wide()] {
            let p0 = init_params(&c, 9);
            let mut dev = open(t, c, &p0);
            let mut cpu = CpuBackend::new_forward_only(c, p0).unwrap();
            let b = 3;
            let toks = batch(&c, b, 77);
            let want = cpu.forward_scores(&tb(&c, &toks, b)).unwrap();
            let got = dev.forward_scores(&tb(&c, &toks, b)).unwrap();
            assert_eq!(got.logp_BxT.len(), b * c.seq_len);
            let tg: Vec<u16> = toks
                .chunks(c.seq_len + 1)
                .flat_map(|r| r[1..].to_vec())
                .collect();
            let (mut agree, mut scored) = (0, 0);
            for (i, &t) in tg.iter().enumerate() {
                let (g, w) = (got.logp_BxT[i], want.logp_BxT[i]);
                if t == 0 {
                    assert_eq!((g, got.hit_BxT[i]), (0.0, false), "pad position {i}");
                    continue;
                }
                assert!(
                    (g - w).abs() < 5e-2,
                    "{c:?} position {i}: logp {g} vs cpu {w}"
                );
                scored += 1;
                agree += (got.hit_BxT[i] == want.hit_BxT[i]) as usize;
            }
            assert!(
                agree * 100 >= scored * 95,
                "{c:?}: hits agree at {agree} of {scored}"
            );
            let loss = dev.forward_loss(&tb(&c, &toks, b)).unwrap();
            let sum: f64 = got.logp_BxT.iter().map(|&x| x as f64).sum();
            assert!(
                (sum + loss.sum).abs() < 1e-3 * loss.sum,
                "Σ logp {sum} vs loss {}",
                loss.sum
            );
            assert!(
                dev.read_grads().unwrap().iter().all(|&g| g == 0.0),
                "forward_scores wrote gradients"
            );
        }
    });
}

/// The forward-only (evaluation) backend scores exactly as the training one, holds no gradient or
/// moment state, and refuses every training call with a message instead of writing anything.
#[test]
fn forward_only_backend_scores_as_the_training_one() {
    for_each_target("forward_only_backend_scores_as_the_training_one", |t| {
        let c = cfg();
        let p0 = init_params(&c, 5);
        let mut train = open(t, c, &p0);
        let r = match t {
            Target::Emulated => CudaBackend::new_emulated_forward_only(c, &p0, common::emu_exec()),
            Target::Gpu(i) => CudaBackend::new_forward_only(c, &p0, i),
        };
        let mut eval = r.unwrap_or_else(|e| panic!("opening a forward-only backend on {t}: {e}"));
        assert!(eval.is_forward_only() && !train.is_forward_only());
        assert_eq!(eval.training_state_bytes(), 0);
        assert!(train.training_state_bytes() > 0);
        let b = 2;
        let toks = batch(&c, b, 31);
        let want = train.forward_scores(&tb(&c, &toks, b)).unwrap();
        let got = eval.forward_scores(&tb(&c, &toks, b)).unwrap();
        // The same kernels on the same inputs: bit for bit.
        assert_eq!(got.logp_BxT, want.logp_BxT);
        assert_eq!(got.hit_BxT, want.hit_BxT);
        let l = eval.forward_loss(&tb(&c, &toks, b)).unwrap();
        assert_eq!(l, train.forward_loss(&tb(&c, &toks, b)).unwrap());
        assert_eq!(eval.read_params().unwrap(), train.read_params().unwrap());
        for e in [
            eval.forward_backward(&tb(&c, &toks, b))
                .map(|_| ())
                .unwrap_err(),
            eval.grad_norm().map(|_| ()).unwrap_err(),
            eval.read_grads().map(|_| ()).unwrap_err(),
            eval.read_moments().map(|_| ()).unwrap_err(),
        ] {
            assert!(e.to_string().contains("forward-only"), "{e}");
        }
    });
}

// ---------------------------------------------------------------------------------------------------------
/// The first-batch cases of `t`: (model, largest relative L2 error of a gradient).
fn first_batch_cases(t: Target) -> Vec<(ModelConfig, f64)> {
    let mut v = vec![(cfg(), 2e-2), (cfg_wide(), 2e-2)];
    if !t.is_emulated() {
        v.push((cfg_gpu(), 5e-2));
        // The default context and vocabulary: eight attention tiles, 32101 logits per position.
        let full = ModelConfig {
            d_model: 128,
            n_layers: 1,
            seq_len: 512,
            vocab_size: 32101,
        };
        v.push((full, 5e-2));
    }
    v
}

#[test]
fn first_batch_matches_cpu() {
    for_each_target("first_batch_matches_cpu", |t| {
        for (c, grad_tol) in first_batch_cases(t) {
            first_batch(open(t, c, &init_params(&c, 5)), grad_tol);
        }
    });
}

/// One micro-batch of 3 then one of 2 into the same gradients: loss, every tensor's gradient, the
/// gradient norm against the CPU; then `forward_loss` of the first batch (bit for bit the training loss,
/// no gradient written).
fn first_batch(mut dev: CudaBackend, grad_tol: f64) {
    let c = *dev.config();
    let p0 = dev.read_params().unwrap();
    assert_eq!(p0, init_params(&c, 5), "parameters uploaded unchanged");
    let mut cpu = CpuBackend::new(c, p0).unwrap();
    eprintln!("{c:?} on {}", dev.device());
    let tokens = batch(&c, 3, 1);
    let ld = dev.forward_backward(&tb(&c, &tokens, 3)).unwrap();
    let lc = cpu.forward_backward(&tb(&c, &tokens, 3)).unwrap();
    assert_eq!(ld.count, lc.count);
    let rel = (ld.sum - lc.sum).abs() / lc.sum.abs();
    eprintln!(
        "first loss: device {} cpu {} (rel {rel:.2e})",
        ld.mean(),
        lc.mean()
    );
    assert!(rel < 1e-2, "first loss: {} vs {}", ld.mean(), lc.mean());
    // Gradients accumulate over micro-batches: a second one into the same gradients.
    let t2 = batch(&c, 2, 2);
    dev.forward_backward(&tb(&c, &t2, 2)).unwrap();
    cpu.forward_backward(&tb(&c, &t2, 2)).unwrap();
    let (gd, gc) = (dev.read_grads().unwrap(), cpu.read_grads().unwrap());
    let mut bad = Vec::new();
    for t in &ParamLayout::new(&c).tensors {
        let r = t.range();
        let e = rel_l2(&gd[r.clone()], &gc[r]);
        eprintln!("  grad {:<28} rel L2 error {e:.2e}", t.name);
        if e.is_nan() || e >= grad_tol {
            bad.push(format!("{}: {e:.2e}", t.name));
        }
    }
    assert!(
        bad.is_empty(),
        "{c:?}: gradients differ (tolerance {grad_tol:.0e}): {}",
        bad.join(", ")
    );
    let ev = dev.forward_loss(&tb(&c, &tokens, 3)).unwrap();
    assert_eq!(ev.sum.to_bits(), ld.sum.to_bits(), "forward_loss");
    let g_after = dev.read_grads().unwrap();
    assert!(
        g_after
            .iter()
            .zip(&gd)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "forward_loss wrote gradients"
    );
    let (nd, nc) = (dev.grad_norm().unwrap(), cpu.grad_norm().unwrap());
    assert!((nd - nc).abs() <= 1e-2 * nc, "grad norm {nd} vs {nc}");
}

// ---------------------------------------------------------------------------------------------------------
/// A training comparison: model, seed, steps, micro-batch, and the relative tolerances of the per-step
/// loss, the per-step gradient norm, the final parameters and the AdamW moments (rel L2); the loss must
/// fall by `learn` over the run.
struct TrainCase {
    cfg: ModelConfig,
    seed: u64,
    steps: u64,
    b: usize,
    loss_tol: f64,
    norm_tol: f64,
    param_tol: f64,
    moment_tol: f64,
    learn: f64,
}

fn train_cases(gpu: bool) -> Vec<TrainCase> {
    let mut v = vec![TrainCase {
        cfg: cfg(),
        seed: 7,
        steps: 10,
        b: 2,
        loss_tol: 2e-2,
        norm_tol: 5e-2,
        param_tol: 1e-2,
        moment_tol: 5e-2,
        learn: 0.05,
    }];
    if gpu {
        v.push(TrainCase {
            cfg: cfg_gpu(),
            seed: 5,
            steps: 20,
            b: 4,
            loss_tol: 2e-2,
            norm_tol: 1e-1,
            param_tol: 2e-2,
            moment_tol: 1e-1,
            learn: 0.1,
        });
    }
    v
}

#[test]
fn training_matches_cpu() {
    for_each_target("training_matches_cpu", |t| {
        for case in train_cases(!t.is_emulated()) {
            let c = case.cfg;
            let p0 = init_params(&c, case.seed);
            let mut dev = open(t, c, &p0);
            let mut cpu = CpuBackend::new(c, p0).unwrap();
            let a = train(&mut dev, case.steps, case.b);
            let b = train(&mut cpu, case.steps, case.b);
            for (i, ((ld, nd), (lc, nc))) in a.iter().zip(&b).enumerate() {
                eprintln!(
                    "step {:>2}: loss device {ld:.5} cpu {lc:.5} | grad norm {nd:.4} cpu {nc:.4}",
                    i + 1
                );
            }
            for (i, ((ld, nd), (lc, nc))) in a.iter().zip(&b).enumerate() {
                assert!(
                    (ld - lc).abs() <= case.loss_tol * lc.abs(),
                    "{c:?} step {}: loss {ld} vs {lc}",
                    i + 1
                );
                assert!(
                    (nd - nc).abs() <= case.norm_tol * nc.abs(),
                    "{c:?} step {}: grad norm {nd} vs {nc}",
                    i + 1
                );
            }
            let last = a.last().unwrap().0;
            assert!(
                last < a[0].0 - case.learn,
                "{c:?}: the run must learn ({} -> {last})",
                a[0].0
            );
            let (pd, pc) = (dev.read_params().unwrap(), cpu.read_params().unwrap());
            let e = rel_l2(&pd, &pc);
            assert!(
                e < case.param_tol,
                "{c:?}: parameters after {} steps: rel L2 {e:.2e}",
                case.steps
            );
            let ((md, vd), (mc, vc)) = (dev.read_moments().unwrap(), cpu.read_moments().unwrap());
            let (em, ev) = (rel_l2(&md, &mc), rel_l2(&vd, &vc));
            assert!(
                em < case.moment_tol && ev < case.moment_tol,
                "{c:?}: AdamW moments rel L2 {em:.2e}, {ev:.2e}"
            );
        }
    });
}

/// The CPU half of the comparisons on its own: every reference run learns by the margin the device run
/// is held to, so "the run must learn" is a real check (including the GPU-only case).
#[test]
fn reference_runs_learn_on_the_cpu() {
    for case in train_cases(true) {
        let c = case.cfg;
        let mut cpu = CpuBackend::new(c, init_params(&c, case.seed)).unwrap();
        let l = train(&mut cpu, case.steps, case.b);
        assert!(l.iter().all(|(a, b)| a.is_finite() && b.is_finite()));
        let last = l.last().unwrap().0;
        assert!(
            last < l[0].0 - case.learn,
            "{c:?}: loss {} -> {last}",
            l[0].0
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
#[test]
fn training_is_deterministic() {
    for_each_target("training_is_deterministic", |t| {
        let mut cases = vec![(cfg(), 3, 2)];
        if !t.is_emulated() {
            cases.push((cfg_gpu(), 10, 3));
        }
        for (c, steps, b) in cases {
            let p0 = init_params(&c, 9);
            let run = || {
                let mut be = open(t, c, &p0);
                let l = train(&mut be, steps, b);
                (l, be.read_params().unwrap())
            };
            let (la, pa) = run();
            let (lb, pb) = run();
            let bits = |v: &[(f64, f64)]| {
                v.iter()
                    .map(|(a, b)| (a.to_bits(), b.to_bits()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(&la), bits(&lb), "{c:?}: losses and grad norms");
            assert!(
                pa.iter().zip(&pb).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{c:?}: parameters differ"
            );
        }
    });
}

// ---------------------------------------------------------------------------------------------------------
#[test]
fn backend_errors_are_clean() {
    let c = cfg();
    let p0 = init_params(&c, 1);
    let targets = common::targets("backend_errors_are_clean");
    // Opening a GPU that is not there is an error naming the device, never a panic: GPU 0 without a
    // GPU, GPU 99 with one.
    let missing = if targets.iter().any(|t| !t.is_emulated()) {
        99
    } else {
        0
    };
    let e = CudaBackend::new(c, &p0, missing)
        .err()
        .unwrap_or_else(|| panic!("CudaBackend::new on GPU {missing} must fail"));
    eprintln!("GPU {missing}: {e}");
    assert!(!e.to_string().is_empty());
    let e = isoflop::device::open_backend(isoflop::device::DeviceChoice::Cuda(99), &c, p0.clone())
        .err()
        .expect("cuda:99 must fail");
    assert!(e.to_string().contains("cuda:99"), "{e}");
    common::for_targets("backend_errors_are_clean", targets, |t| {
        // A wrong parameter count is a Shape error on every device.
        let short = match t {
            Target::Emulated => CudaBackend::new_emulated(c, &p0[1..], common::emu_exec()),
            Target::Gpu(i) => CudaBackend::new(c, &p0[1..], i),
        };
        assert!(
            matches!(short, Err(BackendError::Shape { .. })),
            "{:?}",
            short.err()
        );
        backend_errors(open(t, c, &p0), &p0)
    });
}

/// Bad batches, a bad parameter count, an out-of-memory micro-batch; the backend stays usable after each.
fn backend_errors(mut be: CudaBackend, p0: &[f32]) {
    let c = *be.config();
    let mut bad = batch(&c, 2, 3);
    bad[5] = c.vocab_size as u16;
    let e = BackendError::from(TokenBatch::new(&c, &bad, 2).unwrap_err());
    assert!(matches!(e, BackendError::BadBatch(_)), "{e}");
    assert!(e.to_string().contains("row 0, column 5"), "{e}");
    assert!(matches!(
        TokenBatch::new(&c, &bad[1..], 2).map_err(BackendError::from),
        Err(BackendError::BadBatch(_))
    ));
    assert!(matches!(
        TokenBatch::new(&c, &[], 0).map_err(BackendError::from),
        Err(BackendError::BadBatch(_))
    ));
    assert!(matches!(
        be.write_params(&p0[1..]),
        Err(BackendError::Shape { .. })
    ));
    // A micro-batch far beyond the device memory: OutOfMemory naming --micro-batch.
    let huge = 1 << 20;
    let e = be
        .forward_backward(&tb(&c, &batch(&c, huge, 4), huge))
        .unwrap_err();
    assert!(matches!(e, BackendError::OutOfMemory(_)), "{e}");
    assert!(e.to_string().contains("--micro-batch"), "{e}");
    // Still works afterwards.
    let l = be.forward_backward(&tb(&c, &batch(&c, 1, 5), 1)).unwrap();
    assert!(l.mean().is_finite());
    // Growing the micro-batch (1 → 3) reallocates activations and staging: still the CPU's loss.
    let t3 = batch(&c, 3, 6);
    let le = be.forward_loss(&tb(&c, &t3, 3)).unwrap();
    let lc = CpuBackend::new(c, p0.to_vec())
        .unwrap()
        .forward_loss(&tb(&c, &t3, 3))
        .unwrap();
    assert_eq!(le.count, lc.count);
    assert!((le.sum - lc.sum).abs() < 1e-2 * lc.sum, "{le:?} vs {lc:?}");
    // write_params and write_moments round-trip.
    let mut p1 = p0.to_vec();
    p1[0] += 1.0;
    be.write_params(&p1).unwrap();
    assert_eq!(be.read_params().unwrap(), p1);
    let m: Vec<f32> = (0..p0.len()).map(|i| i as f32 * 1e-3).collect();
    let v: Vec<f32> = (0..p0.len()).map(|i| i as f32 * 1e-6).collect();
    be.write_moments(&m, &v).unwrap();
    assert_eq!(be.read_moments().unwrap(), (m, v));
}

// ---------------------------------------------------------------------------------------------------------
/// A training step and an evaluation of the emulated backend with the kernels built with
/// AddressSanitizer + UBSan, in a child process: every kernel access outside the buffers the backend
/// allocated (a wrong size, offset or grid) fails, as device memory is plain host memory here.
#[test]
fn emulated_step_under_address_sanitizer() {
    if !common::emulated_wanted("emulated_step_under_address_sanitizer") {
        return;
    }
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
    let exec: Arc<dyn KernelExec> = Arc::new(EmuExec(Box::leak(Box::new(lib))));
    for c in [cfg(), cfg_wide()] {
        let p0 = init_params(&c, 3);
        let mut be = CudaBackend::new_emulated(c, &p0, exec.clone())
            .unwrap_or_else(|e| panic!("CudaBackend::new_emulated: {e}"));
        be.zero_grads().unwrap();
        let l = be.forward_backward(&tb(&c, &batch(&c, 2, 1), 2)).unwrap();
        be.forward_backward(&tb(&c, &batch(&c, 1, 2), 1)).unwrap();
        let norm = be.grad_norm().unwrap();
        be.adamw_step(&hp(1, l.count)).unwrap();
        let ev = be.forward_loss(&tb(&c, &batch(&c, 2, 3), 2)).unwrap();
        assert!(l.mean().is_finite() && ev.mean().is_finite() && norm.is_finite());
        assert!(be.read_params().unwrap().iter().all(|x| x.is_finite()));
    }
    eprintln!("sanitized step ok");
}
