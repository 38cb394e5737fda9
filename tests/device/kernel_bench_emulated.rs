//! The kernel bench's launcher (`isoflop::cuda::kernel_bench::CudaKernelLauncher`) on the emulated
//! device: every kernel family of `cargo bench --bench kernels` is prepared and launched once at a tiny
//! shape (D 64, one sequence of 70 tokens — two attention tiles, the second partial — V 301), with the
//! kernels of `kernels/*.cu` under the CPU emulator (tests/emu) and the products on the host. Outputs
//! start as NaN, so every output must come back finite: this checks the bench's buffer sizes and
//! argument lists (shared with the CUDA backend through `isoflop::cuda::ops`) in CI. Also the measured
//! ceilings (matmul peak through `cuda::peak::measure_on` and the copy bandwidth) at their emulated sizes.

use crate::util::common;

use isoflop::cuda::kernel_bench::CudaKernelLauncher;
use isoflop::cuda::kernel_cases::{KernelCase, KernelFamily};

fn launcher() -> CudaKernelLauncher {
    CudaKernelLauncher::emulated(common::emu_exec())
        .unwrap_or_else(|e| panic!("emulated launcher: {e}"))
}

#[test]
fn every_case_runs_once_with_finite_outputs() {
    let mut l = launcher();
    assert!(l.device_name().contains("emulated"), "{}", l.device_name());
    for family in KernelFamily::ALL {
        let case = KernelCase::new(family, 64, 1, 1, 70, 301);
        // Timing before preparing is an error, not a panic.
        if family == KernelFamily::AttentionForward {
            let e = l.time_launches(&case, 1).unwrap_err();
            assert!(e.to_string().contains("not prepared"), "{e}");
        }
        l.prepare(&case)
            .unwrap_or_else(|e| panic!("{}: prepare: {e}", case.id()));
        let s = l
            .time_launches(&case, 1)
            .unwrap_or_else(|e| panic!("{}: launch: {e}", case.id()));
        assert!(s.is_finite() && s >= 0.0, "{}: {s} s", case.id());
        let outs = l
            .outputs()
            .unwrap_or_else(|e| panic!("{}: outputs: {e}", case.id()));
        assert!(!outs.is_empty(), "{}: no outputs", case.id());
        for (name, vals) in &outs {
            assert!(!vals.is_empty(), "{}: {name} is empty", case.id());
            if let Some(i) = vals.iter().position(|x| !x.is_finite()) {
                panic!(
                    "{}: output {name}[{i}] = {} (of {}) was not written or is not finite",
                    case.id(),
                    vals[i],
                    vals.len()
                );
            }
            // Written with something, not just left as zeros (the zeroed accumulators of the scale
            // gradients and the per-row losses aside, every output here is dense and non-zero).
            assert!(
                vals.iter().any(|&x| x != 0.0),
                "{}: output {name} is all zeros",
                case.id()
            );
        }
    }
}

#[test]
fn cross_entropy_losses_are_plausible() {
    // Logits uniform in [-4, 4) over 301 classes: each row's loss is near ln(301) ± a few.
    let mut l = launcher();
    let case = KernelCase::new(KernelFamily::CrossEntropy, 64, 1, 1, 70, 301);
    l.prepare(&case).unwrap();
    l.time_launches(&case, 1).unwrap();
    let outs = l.outputs().unwrap();
    let (_, rows) = outs.iter().find(|(n, _)| n == "loss_rows").unwrap();
    assert_eq!(rows.len(), 70);
    for &r in rows {
        assert!(r > 0.5 && r < 15.0, "row loss {r}");
    }
    // Rows are padded to 384 f32; each row's bf16 gradient (first half of its bytes) sums to ~0
    // (softmax − one-hot), and its padding columns are 0.
    let (_, raw) = outs.iter().find(|(n, _)| n == "logits").unwrap();
    let vp = isoflop::cuda::layout::padded_vocab(301);
    assert_eq!((vp, raw.len()), (384, 70 * 384));
    for g in common::bf16_rows_in_place(raw, vp).chunks(vp) {
        let s: f32 = g[..301].iter().sum();
        assert!(s.abs() < 1e-2, "gradient row sum {s}");
        assert!(g[301..].iter().all(|&x| x == 0.0), "padding columns");
    }
}

#[test]
fn measured_ceilings_run_on_the_emulated_device() {
    let mut l = launcher();
    let (flops, bw) = l.measured_ceilings().unwrap();
    assert!(flops.is_finite() && flops > 0.0, "{flops}");
    assert!(bw.is_finite() && bw > 0.0, "{bw}");
}
