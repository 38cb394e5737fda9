//! cuBLASLt products of src/cuda/blas.rs against an f64 reference on the same bf16-rounded operands:
//! forward `Y = X·W` (bf16 and f32 outputs, with and without the fused residual), `dX = dY·Wᵀ` (written
//! and accumulated), `dW += Xᵀ·dY`; ragged shapes; outputs NaN-poisoned first; bitwise repeatable.
//! On every device of tests/device/util/common.rs: the emulated device (the products on the host, `Blas::emulated`)
//! always, and a GPU (cuBLASLt) too when one is present, on the same shapes (plus larger ones on a GPU).

use crate::util::{cases, common};

use cases::{rng, round_bf16, uniform};
use common::{for_each_device, Dev};
use isoflop::cuda::blas::Gemm;

/// Row-major `A[M,K]·B[K,N]` in f64.
fn mm(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a[i * k + p] as f64;
            for j in 0..n {
                c[i * n + j] += x * b[p * n + j] as f64;
            }
        }
    }
    c
}

fn transpose(a: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = a[i * c + j];
        }
    }
    t
}

/// max |got − want| / max |want|; NaN gives infinity.
fn rel(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1e-30f64, |m, w| m.max(w.abs()));
    let mut e = 0f64;
    for (g, w) in got.iter().zip(want) {
        let d = (*g as f64 - w).abs();
        if !d.is_finite() {
            return f64::INFINITY;
        }
        e = e.max(d);
    }
    e / scale
}

/// (m, k, n) of the products: every device's, plus larger ones (model widths, the vocabulary) on a GPU.
fn shapes(dev: &Dev) -> Vec<(usize, usize, usize)> {
    let mut v = vec![(1, 64, 64), (37, 64, 100), (65, 96, 130), (128, 256, 1024)];
    if !dev.is_emulated() {
        v.extend([(300, 512, 2048), (64, 128, 32101)]);
    }
    v
}

#[test]
fn matmuls_match_reference() {
    for_each_device("matmuls_match_reference", run_matmuls);
}

fn run_matmuls(dev: &mut Dev) {
    let mut blas = dev.blas();
    let s = &dev.gpu.stream;
    for (m, k, n) in shapes(dev) {
        let mut r = rng((m * 7 + k * 3 + n) as u64);
        let x = round_bf16(&uniform(&mut r, m * k, -1.0, 1.0));
        let w = round_bf16(&uniform(&mut r, k * n, -0.5, 0.5));
        let dy = round_bf16(&uniform(&mut r, m * n, -1.0, 1.0));
        let c0 = uniform(&mut r, m * n, -1.0, 1.0);
        let (xd, wd, dyd) = (dev.bf16(&x), dev.bf16(&w), dev.bf16(&dy));
        let want = mm(&x, &w, m, k, n);
        let what = format!("m={m} k={k} n={n}");

        let yb = dev.nan_bf16(m * n);
        let (xs, ws) = (xd.slice(), wd.slice());
        blas.gemm(s, &Gemm::forward((m, k, n), xs, ws, yb.slice()))
            .unwrap();
        dev.gpu.sync().unwrap();
        let e = rel(&dev.get_bf16(&yb), &want);
        assert!(e <= 1e-2, "forward bf16 {what}: {e:.2e}");

        let yf = dev.nan_f32(m * n);
        blas.gemm(s, &Gemm::forward((m, k, n), xs, ws, yf.slice()))
            .unwrap();
        dev.gpu.sync().unwrap();
        let got = dev.get_f32(&yf);
        let e = rel(&got, &want);
        assert!(e <= 1e-4, "forward f32 {what}: {e:.2e}");
        // Same product, same bits.
        blas.gemm(s, &Gemm::forward((m, k, n), xs, ws, yf.slice()))
            .unwrap();
        dev.gpu.sync().unwrap();
        assert!(
            dev.get_f32(&yf)
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "repeatable {what}"
        );

        // Fused residual: h = c0 + x·w (C and D distinct), then in place (C = D).
        let cd = dev.f32(&c0);
        let hd = dev.nan_f32(m * n);
        let residual = |out| Gemm::forward((m, k, n), xs, ws, out).residual(cd.slice());
        blas.gemm(s, &residual(hd.slice())).unwrap();
        blas.gemm(s, &residual(cd.slice())).unwrap();
        dev.gpu.sync().unwrap();
        let want_h: Vec<f64> = want.iter().zip(&c0).map(|(a, b)| a + *b as f64).collect();
        assert!(rel(&dev.get_f32(&hd), &want_h) <= 1e-4, "residual {what}");
        assert!(
            rel(&dev.get_f32(&cd), &want_h) <= 1e-4,
            "residual in place {what}"
        );

        // dX = dY·Wᵀ, written (f32 and bf16) then accumulated.
        let want_dx = mm(&dy, &transpose(&w, k, n), m, n, k);
        let dx = dev.nan_f32(m * k);
        let dx_f32 = Gemm::backward_input((m, k, n), dyd.slice(), ws, dx.slice());
        blas.gemm(s, &dx_f32).unwrap();
        dev.gpu.sync().unwrap();
        assert!(rel(&dev.get_f32(&dx), &want_dx) <= 1e-4, "dX f32 {what}");
        blas.gemm(s, &dx_f32.accumulate()).unwrap();
        dev.gpu.sync().unwrap();
        let twice: Vec<f64> = want_dx.iter().map(|v| 2.0 * v).collect();
        assert!(
            rel(&dev.get_f32(&dx), &twice) <= 1e-4,
            "dX accumulate {what}"
        );
        let dxb = dev.nan_bf16(m * k);
        blas.gemm(
            s,
            &Gemm::backward_input((m, k, n), dyd.slice(), ws, dxb.slice()),
        )
        .unwrap();
        dev.gpu.sync().unwrap();
        assert!(rel(&dev.get_bf16(&dxb), &want_dx) <= 1e-2, "dX bf16 {what}");

        // dW += Xᵀ·dY onto a non-zero start.
        let w0 = uniform(&mut r, k * n, -1.0, 1.0);
        let dw = dev.f32(&w0);
        blas.gemm(
            s,
            &Gemm::backward_weight((m, k, n), xs, dyd.slice(), dw.slice()),
        )
        .unwrap();
        dev.gpu.sync().unwrap();
        let want_dw: Vec<f64> = mm(&transpose(&x, m, k), &dy, k, m, n)
            .iter()
            .zip(&w0)
            .map(|(a, b)| a + *b as f64)
            .collect();
        assert!(rel(&dev.get_f32(&dw), &want_dw) <= 1e-4, "dW {what}");
        eprintln!("{what}: ok");
    }
}

/// The checks can fail: a wrong value and a NaN are caught.
#[test]
fn rel_catches_wrong_values() {
    assert!(rel(&[1.0, 2.0], &[1.0, 2.5]) > 1e-2 && rel(&[f32::NAN], &[1.0]).is_infinite());
    assert!(rel(&[1.0, 2.0], &[1.0, 2.0]) == 0.0);
}

#[test]
fn strided_dy_products_match_reference() {
    for_each_device("strided_dy_products_match_reference", run_strided_dy);
}

/// `dX = dY·Wᵀ` and `dW += Xᵀ·dY` with dY's rows `ld = 2·N` apart, as the head's in-place bf16 logit
/// gradient is stored: the gap between rows holds NaN, so reading past a row's N columns is caught.
fn run_strided_dy(dev: &mut Dev) {
    let mut blas = dev.blas();
    let s = &dev.gpu.stream;
    let mut shapes = vec![(37, 64, 100), (70, 64, 384)];
    if !dev.is_emulated() {
        shapes.push((512, 512, 32128));
    }
    for (m, k, n) in shapes {
        let ld = 2 * n;
        let what = format!("m={m} k={k} n={n} ld={ld}");
        let mut r = rng((m + k + n) as u64);
        let x = round_bf16(&uniform(&mut r, m * k, -1.0, 1.0));
        let w = round_bf16(&uniform(&mut r, k * n, -0.5, 0.5));
        let dy = round_bf16(&uniform(&mut r, m * n, -1.0, 1.0));
        let mut dy_strided = vec![f32::NAN; m * ld];
        for i in 0..m {
            dy_strided[i * ld..i * ld + n].copy_from_slice(&dy[i * n..(i + 1) * n]);
        }
        let (xd, wd, dyd) = (dev.bf16(&x), dev.bf16(&w), dev.bf16(&dy_strided));
        let dx = dev.nan_f32(m * k);
        let dx_of =
            |ld| Gemm::backward_input((m, k, n), dyd.slice(), wd.slice(), dx.slice()).dy_ld(ld);
        blas.gemm(s, &dx_of(ld)).unwrap();
        let dw = dev.f32(&vec![0.0; k * n]);
        blas.gemm(
            s,
            &Gemm::backward_weight((m, k, n), xd.slice(), dyd.slice(), dw.slice()).dy_ld(ld),
        )
        .unwrap();
        dev.gpu.sync().unwrap();
        let want_dx = mm(&dy, &transpose(&w, k, n), m, n, k);
        assert!(
            rel(&dev.get_f32(&dx), &want_dx) <= 1e-4,
            "strided dX {what}"
        );
        let want_dw = mm(&transpose(&x, m, k), &dy, k, m, n);
        assert!(
            rel(&dev.get_f32(&dw), &want_dw) <= 1e-4,
            "strided dW {what}"
        );
        // A stride shorter than a row is refused, not run.
        let e = blas.gemm(s, &dx_of(n - 1)).unwrap_err();
        assert!(e.to_string().contains("row stride"), "{e}");
        eprintln!("{what}: ok");
    }
}

/// A weight gradient with a tiny output and a long reduction over the tokens (`dW[64,64] = Xᵀ·dY` over
/// 16384 tokens on a GPU): the shape for which cuBLASLt's heuristic would pick a split-K algorithm.
/// Computed three times — twice with one handle, once with a fresh handle (new plans, as after a resume)
/// — the bits must agree. On a GPU this tells whether the reduction-scheme restriction of
/// src/cuda/blas.rs holds (run it with `ISOFLOP_CUBLASLT_REDUCTION=any` to see the unrestricted heuristic).
#[test]
fn long_reductions_repeat_bitwise_across_handles() {
    for_each_device("long_reductions_repeat_bitwise_across_handles", |dev| {
        let (m, k, n) = if dev.is_emulated() {
            (512, 64, 64)
        } else {
            (16384, 64, 64)
        };
        let mut r = rng(77);
        let x = round_bf16(&uniform(&mut r, m * k, -1.0, 1.0));
        let dy = round_bf16(&uniform(&mut r, m * n, -1.0, 1.0));
        let (xd, dyd) = (dev.bf16(&x), dev.bf16(&dy));
        let want = mm(&transpose(&x, m, k), &dy, k, m, n);
        let s = &dev.gpu.stream;
        let run = |blas: &mut isoflop::cuda::blas::Blas| {
            let dw = dev.f32(&vec![0.0; k * n]);
            blas.gemm(
                s,
                &Gemm::backward_weight((m, k, n), xd.slice(), dyd.slice(), dw.slice()),
            )
            .unwrap();
            dev.gpu.sync().unwrap();
            dev.get_f32(&dw)
        };
        let mut one = dev.blas();
        let a = run(&mut one);
        let b = run(&mut one);
        let c = run(&mut dev.blas());
        assert!(rel(&a, &want) <= 1e-4, "dW m={m}: {:.2e}", rel(&a, &want));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b), "same handle, m={m}");
        assert_eq!(bits(&a), bits(&c), "fresh handle, m={m}");
    });
}
