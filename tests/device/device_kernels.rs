//! Every kernel of kernels/*.cu against the CPU reference ops (isoflop::cpu::ops), through src/cuda's
//! launch API on every device of tests/device/util/common.rs: the emulated device always (the kernels under the
//! CPU emulator of tests/emu), and GPU 0 too when one is present, so that the same cases run on both and
//! emulation and hardware are compared case by case. Fresh random inputs of several shapes (not multiples
//! of the block or tile size too; larger model-sized shapes on a GPU only, tests/device/util/cases.rs), outputs
//! NaN-poisoned before each launch, tolerances per path (bf16 ≈ 1e-2, f32 tighter; NaN never passes), the
//! fused attention through tests/device/util/attention_cases.rs, bit-for-bit repeatability (under different thread
//! orders on the emulated device). Also an AddressSanitizer + UBSan build of the emulated kernels run on
//! every family in a child process.

use crate::util::{attention_cases, cases, common};

use attention_cases as ac;
use cases::*;
use common::{for_each_device, harness, with_schedule, Dev};
use half::bf16;
use isoflop::backend::{AdamWStep, DecayMode};
use isoflop::cpu::ops;
use isoflop::cuda::gpu::{DevBuf, KernelParam};

fn ok(r: Result<(), String>) {
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// Whether `dev` also runs the larger, GPU-only shapes.
fn big(dev: &Dev) -> bool {
    !dev.is_emulated()
}

/// Launches elementwise kernel `name(inputs..., out, (long long) n)` over `n = want.len()` elements into a
/// fresh NaN-filled output (bf16, widened, when `bf16_out`) and checks it against `want` within `rtol`,
/// `atol`.
fn check_elementwise(
    dev: &Dev,
    name: &str,
    inputs: &[u64],
    bf16_out: bool,
    want: &[f32],
    rtol: f32,
    atol: f32,
) {
    let n = want.len();
    let nn = n as i64;
    let launch = |out: u64| {
        let mut args: Vec<&dyn KernelParam> =
            inputs.iter().map(|p| p as &dyn KernelParam).collect();
        args.extend([&out as &dyn KernelParam, &nn]);
        dev.launch(name, (elementwise_grid(n), 1, 1), 256, 0, &args);
    };
    let got = if bf16_out {
        let out = dev.nan_bf16(n);
        launch(out.ptr());
        dev.get_bf16(&out)
    } else {
        let out = dev.nan_f32(n);
        launch(out.ptr());
        dev.get_f32(&out)
    };
    ok(check_close(name, &got, want, rtol, atol));
}

fn run_gelu(dev: &Dev) {
    for n in elementwise_cases(big(dev)) {
        let mut r = rng(n as u64);
        let x = uniform(&mut r, n, -5.0, 5.0);
        let dout = uniform(&mut r, n, -1.0, 1.0);
        let mut want = vec![0f32; n];
        ops::gelu_forward(&x, &mut want);
        let (xd, dd) = (dev.f32(&x), dev.f32(&dout));
        let xb = round_bf16(&x);
        let mut want_b = vec![0f32; n];
        ops::gelu_forward(&xb, &mut want_b);
        let xbd = dev.bf16(&x);
        let mut dwant = vec![0f32; n];
        ops::gelu_backward(&dout, &x, &mut dwant);
        let mut dwant_b = vec![0f32; n];
        ops::gelu_backward(&dout, &xb, &mut dwant_b);
        let (x32, x16, d32) = (xd.ptr(), xbd.ptr(), dd.ptr());
        // (kernel, inputs, bf16 output, reference, rtol, atol)
        for (name, inputs, bf16_out, want, rtol, atol) in [
            ("gelu_forward_f32", &[x32][..], false, &want, 1e-5, 1e-6),
            ("gelu_forward_f32_bf16", &[x32], true, &want, 1e-2, 1e-3),
            ("gelu_forward_bf16", &[x16], true, &want_b, 1e-2, 1e-3),
            ("gelu_backward_f32", &[d32, x32], false, &dwant, 1e-5, 1e-6),
            (
                "gelu_backward_f32_bf16",
                &[d32, x32],
                true,
                &dwant,
                1e-2,
                1e-3,
            ),
            (
                "gelu_backward_bf16",
                &[d32, x16],
                true,
                &dwant_b,
                1e-2,
                1e-3,
            ),
        ] {
            check_elementwise(dev, name, inputs, bf16_out, want, rtol, atol);
        }
    }
}

fn run_residual(dev: &Dev) {
    for n in elementwise_cases(big(dev)) {
        let mut r = rng(100 + n as u64);
        let x = uniform(&mut r, n, -3.0, 3.0);
        let y = uniform(&mut r, n, -3.0, 3.0);
        let (g, nn) = ((elementwise_grid(n), 1, 1), n as i64);
        let want: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
        let (acc, yd) = (dev.f32(&x), dev.f32(&y));
        dev.launch("residual_add_f32", g, 256, 0, &[&acc.ptr(), &yd.ptr(), &nn]);
        ok(check_close(
            "residual_add_f32",
            &dev.get_f32(&acc),
            &want,
            0.0,
            0.0,
        ));
        let yb = round_bf16(&y);
        let wantb: Vec<f32> = x.iter().zip(&yb).map(|(a, b)| a + b).collect();
        let (acc, ybd) = (dev.f32(&x), dev.bf16(&y));
        dev.launch(
            "residual_add_bf16_f32",
            g,
            256,
            0,
            &[&acc.ptr(), &ybd.ptr(), &nn],
        );
        ok(check_close(
            "residual_add_bf16_f32",
            &dev.get_f32(&acc),
            &wantb,
            0.0,
            0.0,
        ));
        let xd = dev.f32(&x);
        check_elementwise(
            dev,
            "add_f32",
            &[xd.ptr(), yd.ptr()],
            false,
            &want,
            0.0,
            0.0,
        );
        let xb = dev.nan_bf16(n);
        dev.launch("cast_f32_to_bf16", g, 256, 0, &[&xd.ptr(), &xb.ptr(), &nn]);
        let bits: Vec<u16> = dev.get(&xb).iter().map(|v: &bf16| v.to_bits()).collect();
        let want_bits: Vec<u16> = to_bf16(&x).iter().map(|v| v.to_bits()).collect();
        assert_eq!(
            bits, want_bits,
            "cast_f32_to_bf16 n={n}: round to nearest even"
        );
        let want_back = round_bf16(&x);
        check_elementwise(
            dev,
            "cast_bf16_to_f32",
            &[xb.ptr()],
            false,
            &want_back,
            0.0,
            0.0,
        );
        let z = dev.f32(&x);
        dev.launch("zero_f32", g, 256, 0, &[&z.ptr(), &nn]);
        assert!(dev.get_f32(&z).iter().all(|&v| v == 0.0));
    }
}

fn run_layernorm(dev: &Dev) {
    for (n, c) in layernorm_cases(big(dev)) {
        let mut r = rng((n * 1000 + c) as u64);
        let x: Vec<f32> = uniform(&mut r, n * c, -2.0, 2.0)
            .iter()
            .map(|v| v * 3.0 + 1.0)
            .collect();
        let scale = uniform(&mut r, c, 0.5, 1.5);
        let dout = uniform(&mut r, n * c, -1.0, 1.0);
        let (mut out_w, mut mean_w, mut rstd_w) = (vec![0f32; n * c], vec![0f32; n], vec![0f32; n]);
        ops::layernorm_forward(&x, &scale, &mut out_w, &mut mean_w, &mut rstd_w, c);
        let grid = (n.div_ceil(4) as u32, 1, 1);
        let (ni, ci) = (n as i32, c as i32);
        let (xd, sd) = (dev.f32(&x), dev.f32(&scale));
        for kernel in ["layernorm_forward_f32", "layernorm_forward_bf16"] {
            let (mean, rstd) = (dev.nan_f32(n), dev.nan_f32(n));
            let launch = |out: u64| {
                let args: [&dyn KernelParam; 7] = [
                    &xd.ptr(),
                    &sd.ptr(),
                    &out,
                    &mean.ptr(),
                    &rstd.ptr(),
                    &ni,
                    &ci,
                ];
                dev.launch(kernel, grid, 128, 0, &args);
            };
            let got = if kernel.ends_with("f32") {
                let out = dev.nan_f32(n * c);
                launch(out.ptr());
                dev.get_f32(&out)
            } else {
                let out = dev.nan_bf16(n * c);
                launch(out.ptr());
                dev.get_bf16(&out)
            };
            let tol = if kernel.ends_with("f32") { 1e-4 } else { 1e-2 };
            ok(check_close(
                &format!("{kernel} out n={n} c={c}"),
                &got,
                &out_w,
                tol,
                tol,
            ));
            ok(check_close(
                &format!("{kernel} mean"),
                &dev.get_f32(&mean),
                &mean_w,
                1e-5,
                1e-5,
            ));
            ok(check_close(
                &format!("{kernel} rstd"),
                &dev.get_f32(&rstd),
                &rstd_w,
                1e-4,
                0.0,
            ));
        }
        let dscale0 = uniform(&mut r, c, -1.0, 1.0);
        let mut dx_w = vec![0f32; n * c];
        let mut dscale_w = dscale0.clone();
        ops::layernorm_backward(
            &dout,
            &x,
            &scale,
            &mean_w,
            &rstd_w,
            &mut dx_w,
            &mut dscale_w,
            c,
        );
        let (dd, md, rd) = (dev.f32(&dout), dev.f32(&mean_w), dev.f32(&rstd_w));
        for rows_per_block in [4usize, 32] {
            let p = n.div_ceil(rows_per_block);
            let mut results = Vec::new();
            for accumulate in [0i32, 1] {
                // The second run under the reverse thread order on the emulated device.
                with_schedule(dev.emu, accumulate as u64, || {
                    let dx_start = if accumulate == 1 {
                        uniform(&mut r, n * c, -1.0, 1.0)
                    } else {
                        poison(n * c)
                    };
                    let dx = dev.f32(&dx_start);
                    let partial = dev.nan_f32(p * c);
                    dev.launch(
                        "layernorm_backward_f32",
                        (p as u32, 1, 1),
                        256,
                        (c * 4) as u32,
                        &[
                            &dd.ptr(),
                            &xd.ptr(),
                            &sd.ptr(),
                            &md.ptr(),
                            &rd.ptr(),
                            &dx.ptr(),
                            &partial.ptr(),
                            &ni,
                            &ci,
                            &(rows_per_block as i32),
                            &accumulate,
                        ],
                    );
                    let want: Vec<f32> = if accumulate == 1 {
                        dx_w.iter().zip(&dx_start).map(|(a, b)| a + b).collect()
                    } else {
                        dx_w.clone()
                    };
                    ok(check_close(
                        &format!("layernorm_backward dx n={n} c={c} acc={accumulate}"),
                        &dev.get_f32(&dx),
                        &want,
                        1e-3,
                        1e-4,
                    ));
                    let dscale = dev.f32(&dscale0);
                    dev.launch(
                        "layernorm_dscale_reduce_f32",
                        (c.div_ceil(256) as u32, 1, 1),
                        256,
                        0,
                        &[&partial.ptr(), &dscale.ptr(), &(p as i32), &ci],
                    );
                    let got = dev.get_f32(&dscale);
                    ok(check_close(
                        &format!("layernorm dscale n={n} c={c} rpb={rows_per_block}"),
                        &got,
                        &dscale_w,
                        1e-4,
                        1e-4,
                    ));
                    results.push(got);
                });
            }
            assert_eq!(
                results[0].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                results[1].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "dscale must be bit-for-bit reproducible"
            );
        }
    }
}

fn run_embedding(dev: &Dev) {
    for (v, d, n) in embedding_cases(big(dev)) {
        let mut r = rng((v * 7 + d * 3 + n) as u64);
        let embed = uniform(&mut r, v * d, -1.0, 1.0);
        let tokens: Vec<u16> = (0..n)
            .map(|_| rand::Rng::random_range(&mut r, 0..v.min(20)) as u16)
            .collect();
        let mut want = vec![0f32; n * d];
        ops::embedding_forward(&embed, &tokens, &mut want, d);
        let (ed, td, out) = (dev.f32(&embed), dev.raw(&tokens), dev.nan_f32(n * d));
        let (ni, di, vi) = (n as i32, d as i32, v as i32);
        dev.launch(
            "embedding_forward_f32",
            (elementwise_grid(n * d), 1, 1),
            256,
            0,
            &[&ed.ptr(), &td.ptr(), &out.ptr(), &ni, &di, &vi],
        );
        ok(check_close(
            &format!("embedding_forward v={v} d={d} n={n}"),
            &dev.get_f32(&out),
            &want,
            0.0,
            0.0,
        ));
        let dout = uniform(&mut r, n * d, -1.0, 1.0);
        let start = uniform(&mut r, v * d, -1.0, 1.0);
        let mut dembed_w = start.clone();
        ops::embedding_backward(&dout, &tokens, &mut dembed_w, d);
        let (ids, offsets, positions) = embedding_csr(&tokens);
        let (dd, idd, od, pd, de) = (
            dev.f32(&dout),
            dev.raw(&ids),
            dev.raw(&offsets),
            dev.raw(&positions),
            dev.f32(&start),
        );
        dev.launch(
            "embedding_backward_f32",
            (ids.len() as u32, 1, 1),
            128,
            0,
            &[
                &dd.ptr(),
                &idd.ptr(),
                &od.ptr(),
                &pd.ptr(),
                &de.ptr(),
                &(ids.len() as i32),
                &di,
            ],
        );
        ok(check_close(
            &format!("embedding_backward v={v} d={d} n={n}"),
            &dev.get_f32(&de),
            &dembed_w,
            1e-5,
            1e-5,
        ));
    }
}

/// An id outside the vocabulary writes NaN (a missed check upstream shows up in the loss).
fn run_embedding_out_of_range(dev: &Dev) {
    let (v, d) = (4usize, 32usize);
    let (ed, td, out) = (
        dev.f32(&vec![1f32; v * d]),
        dev.raw(&[1u16, 4]),
        dev.nan_f32(2 * d),
    );
    dev.launch(
        "embedding_forward_f32",
        (1, 1, 1),
        256,
        0,
        &[
            &ed.ptr(),
            &td.ptr(),
            &out.ptr(),
            &2i32,
            &(d as i32),
            &(v as i32),
        ],
    );
    let o = dev.get_f32(&out);
    assert!(o[..d].iter().all(|&x| x == 1.0) && o[d..].iter().all(|x| x.is_nan()));
}

#[allow(non_snake_case)] // shapes in names
fn run_cross_entropy(dev: &Dev) {
    for (n, v, ld, block) in cross_entropy_cases(big(dev)) {
        let case = format!("cross_entropy_f32 n={n} v={v} ld={ld} block={block}");
        let mut r = rng((n * 31 + v + ld) as u64);
        // Rows of ld logits; the padding columns hold values the softmax must ignore.
        let logits_NxL = uniform(&mut r, n * ld, -4.0, 4.0);
        let logits_NxV: Vec<f32> = logits_NxL
            .chunks(ld)
            .flat_map(|row| row[..v].to_vec())
            .collect();
        let tg = targets(&mut r, n, v);
        let mut dwant = vec![0f32; n * v];
        let want = ops::cross_entropy_forward_backward(&logits_NxV, &tg, Some(&mut dwant), v);
        let (vi, ldi) = (v as i32, ld as i32);
        let td = dev.raw(&tg);
        let (z, loss) = (dev.f32(&logits_NxL), dev.nan_f32(n));
        dev.launch(
            "cross_entropy_f32",
            (n as u32, 1, 1),
            block,
            0,
            &[&z.ptr(), &td.ptr(), &loss.ptr(), &vi, &ldi, &1i32],
        );
        let lh = dev.get_f32(&loss);
        let sum: f64 = lh.iter().map(|&x| x as f64).sum();
        assert!(
            (sum - want.sum).abs() <= 1e-5 * want.sum.abs().max(1.0),
            "{case}: loss {sum} vs {}",
            want.sum
        );
        for (i, &t) in tg.iter().enumerate() {
            if t == 0 {
                assert_eq!(lh[i], 0.0, "{case}: pad row loss");
            }
        }
        // Row r's bf16 gradient fills the first half of the row's bytes (little-endian: bf16 element
        // 2i is the low half of f32 element i).
        let mut got = Vec::with_capacity(n * v);
        for (row_i, g) in common::bf16_rows_in_place(&dev.get_f32(&z), ld)
            .chunks(ld)
            .enumerate()
        {
            if let Some(j) = (v..ld).find(|&j| g[j].to_bits() != 0) {
                panic!(
                    "{case}: row {row_i} padding column {j} is {} (want +0)",
                    g[j]
                );
            }
            got.extend_from_slice(&g[..v]);
        }
        ok(check_close(
            &format!("{case} dlogits"),
            &got,
            &dwant,
            1e-2,
            1e-6,
        ));
        // Without the gradient the logits stay as they were, bit for bit, and the losses are the same.
        let (z2, loss2) = (dev.f32(&logits_NxL), dev.nan_f32(n));
        dev.launch(
            "cross_entropy_f32",
            (n as u32, 1, 1),
            block,
            0,
            &[&z2.ptr(), &td.ptr(), &loss2.ptr(), &vi, &ldi, &0i32],
        );
        let bits = |x: &[f32]| x.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&dev.get_f32(&z2)),
            bits(&logits_NxL),
            "{case}: write_grad = 0 changed the logits"
        );
        assert_eq!(
            bits(&dev.get_f32(&loss2)),
            bits(&lh),
            "{case}: losses differ without the gradient"
        );
    }
}

#[allow(non_snake_case)] // shapes in names
fn run_token_scores(dev: &Dev) {
    // The cross-entropy shapes, with one row of the full padded vocabulary under emulation (a 1024-thread
    // block over 32128 columns is the slow part of emulating it); several on a GPU.
    let cases: Vec<(usize, usize, usize, u32)> = cross_entropy_cases(big(dev))
        .into_iter()
        .map(|(n, v, ld, b)| {
            if v == 32101 && !big(dev) {
                (1, v, ld, b)
            } else {
                (n, v, ld, b)
            }
        })
        .collect();
    for (n, v, ld, block) in cases {
        let case = format!("token_scores_f32 n={n} v={v} ld={ld} block={block}");
        let mut r = rng((n * 17 + v + 3 * ld) as u64);
        let mut logits_NxL = uniform(&mut r, n * ld, -4.0, 4.0);
        let tg = targets(&mut r, n, v);
        // Make every other non-pad row's target its argmax, so hits are not all false; the last row gets a
        // tie: its target equals the maximum but an earlier column holds it too (not the argmax).
        for (i, &t) in tg.iter().enumerate() {
            let row = &mut logits_NxL[i * ld..][..v];
            if t != 0 && i % 2 == 0 {
                row[t as usize] = 5.0;
            }
            if i == n - 1 && i > 0 && t > 1 {
                row[t as usize] = 6.0;
                row[(t - 1) as usize] = 6.0;
            }
        }
        let logits_NxV: Vec<f32> = logits_NxL
            .chunks(ld)
            .flat_map(|row| row[..v].to_vec())
            .collect();
        let (mut lp_want, mut hit_want) = (vec![0f32; n], vec![false; n]);
        ops::token_scores(&logits_NxV, &tg, v, &mut lp_want, &mut hit_want);
        assert!(hit_want.iter().any(|&h| h), "{case}: the case has no hit");
        let td = dev.raw(&tg);
        let z = dev.f32(&logits_NxL);
        // Outputs poisoned: NaN logp, hit −1 (neither 0 nor 1).
        let (lp, hit) = (dev.nan_f32(n), dev.raw(&vec![-1i32; n]));
        dev.launch(
            "token_scores_f32",
            (n as u32, 1, 1),
            block,
            0,
            &[
                &z.ptr(),
                &td.ptr(),
                &lp.ptr(),
                &hit.ptr(),
                &(v as i32),
                &(ld as i32),
            ],
        );
        ok(check_close(
            &format!("{case} logp"),
            &dev.get_f32(&lp),
            &lp_want,
            1e-4,
            1e-4,
        ));
        let hits: Vec<i32> = dev.get(&hit);
        let want: Vec<i32> = hit_want.iter().map(|&h| h as i32).collect();
        assert_eq!(hits, want, "{case}: argmax hits");
        // The logits are only read.
        let bits = |x: &[f32]| x.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&dev.get_f32(&z)),
            bits(&logits_NxL),
            "{case}: logits changed"
        );
    }
}

fn run_adamw(dev: &Dev) {
    for n in adamw_cases(big(dev)) {
        for mode in [DecayMode::Coupled, DecayMode::Independent] {
            let mut r = rng(n as u64 + 7);
            let hp = AdamWStep {
                step: 3,
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-20,
                weight_decay: 0.1,
                decay_mode: mode,
                grad_scale: 0.25,
            };
            let p0 = uniform(&mut r, n, -1.0, 1.0);
            let g = uniform(&mut r, n, -1.0, 1.0);
            let m0 = uniform(&mut r, n, -0.1, 0.1);
            let v0 = uniform(&mut r, n, 0.0, 0.01);
            let mask: Vec<u8> = (0..n).map(|i| (i % 3 != 0) as u8).collect();
            let reference = |decay: bool| {
                let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
                ops::adamw_update(&mut p, &g, &mut m, &mut v, &hp, decay);
                (p, m, v)
            };
            let (pd, md, vd) = reference(true);
            let (pn, _, _) = reference(false);
            let t = hp.step as i32;
            let inv_bc1 = (1.0 / (1.0 - (hp.beta1 as f64).powi(t))) as f32;
            let inv_bc2 = (1.0 / (1.0 - (hp.beta2 as f64).powi(t))) as f32;
            let mode_i = (mode == DecayMode::Independent) as i32;
            let (gd, maskd) = (dev.f32(&g), dev.raw(&mask));
            for variant in ["mask", "flag1", "flag0"] {
                let (p, m, v, pb) = (dev.f32(&p0), dev.f32(&m0), dev.f32(&v0), dev.nan_bf16(n));
                let mask_ptr = if variant == "mask" { maskd.ptr() } else { 0u64 };
                let flag = (variant == "flag1") as i32;
                dev.launch(
                    "adamw_f32",
                    (elementwise_grid(n), 1, 1),
                    256,
                    0,
                    &[
                        &p.ptr(),
                        &gd.ptr(),
                        &m.ptr(),
                        &v.ptr(),
                        &pb.ptr(),
                        &mask_ptr,
                        &flag,
                        &(n as i64),
                        &hp.lr,
                        &hp.beta1,
                        &hp.beta2,
                        &hp.eps,
                        &hp.weight_decay,
                        &mode_i,
                        &hp.grad_scale,
                        &inv_bc1,
                        &inv_bc2,
                    ],
                );
                let want: Vec<f32> = (0..n)
                    .map(|i| {
                        let decay = match variant {
                            "mask" => mask[i] != 0,
                            "flag1" => true,
                            _ => false,
                        };
                        if decay {
                            pd[i]
                        } else {
                            pn[i]
                        }
                    })
                    .collect();
                let what = format!("adamw n={n} {mode:?} {variant}");
                let ph = dev.get_f32(&p);
                ok(check_close(
                    &format!("{what} params"),
                    &ph,
                    &want,
                    1e-6,
                    1e-7,
                ));
                ok(check_close(
                    &format!("{what} m"),
                    &dev.get_f32(&m),
                    &md,
                    1e-6,
                    1e-9,
                ));
                ok(check_close(
                    &format!("{what} v"),
                    &dev.get_f32(&v),
                    &vd,
                    1e-6,
                    1e-12,
                ));
                ok(check_close(
                    &format!("{what} bf16 copy"),
                    &dev.get_bf16(&pb),
                    &round_bf16(&ph),
                    0.0,
                    0.0,
                ));
            }
        }
    }
}

/// AdamW with no bf16 working copy (a null pointer) and the decay flag instead of a mask.
fn run_adamw_without_bf16_copy(dev: &Dev) {
    let n = 100usize;
    let mut r = rng(5);
    let p0 = uniform(&mut r, n, -1.0, 1.0);
    let g = uniform(&mut r, n, -1.0, 1.0);
    let (p, gd) = (dev.f32(&p0), dev.f32(&g));
    let (m, v) = (dev.f32(&vec![0f32; n]), dev.f32(&vec![0f32; n]));
    dev.launch(
        "adamw_f32",
        (1, 1, 1),
        256,
        0,
        &[
            &p.ptr(),
            &gd.ptr(),
            &m.ptr(),
            &v.ptr(),
            &0u64,
            &0u64,
            &1i32,
            &(n as i64),
            &1e-3f32,
            &0.9f32,
            &0.95f32,
            &1e-20f32,
            &0.1f32,
            &0i32,
            &1.0f32,
            &10.0f32,
            &20.0f32,
        ],
    );
    let (ph, mh) = (dev.get_f32(&p), dev.get_f32(&m));
    assert!(ph.iter().all(|x| x.is_finite()) && mh.iter().any(|&x| x != 0.0));
    assert!(
        ph.iter().zip(&p0).any(|(a, b)| a != b),
        "parameters unchanged"
    );
}

fn two_pass(dev: &Dev, kernel: &str, x: &DevBuf<f32>, p: usize) -> f64 {
    let partial = dev.raw(&vec![f64::NAN; p]);
    dev.launch(
        kernel,
        (p as u32, 1, 1),
        256,
        0,
        &[&x.ptr(), &(x.len() as i64), &partial.ptr()],
    );
    let out = dev.raw(&[f64::NAN]);
    dev.launch(
        "sum_finish_f64",
        (1, 1, 1),
        256,
        0,
        &[&partial.ptr(), &(p as i32), &out.ptr()],
    );
    dev.get(&out)[0]
}

fn run_reduce(dev: &Dev) {
    for (n, p) in reduce_cases(big(dev)) {
        let mut r = rng(n as u64 + 99);
        let x = uniform(&mut r, n, -2.0, 2.0);
        let xd = dev.f32(&x);
        let sq = two_pass(dev, "sum_squares_partials_f32", &xd, p);
        let want = ops::global_norm(&x).powi(2);
        assert!(
            (sq - want).abs() <= 1e-12 * want.max(1e-30),
            "sum of squares n={n}: {sq} vs {want}"
        );
        let again = with_schedule(dev.emu, 1, || {
            two_pass(dev, "sum_squares_partials_f32", &xd, p)
        });
        assert_eq!(
            sq.to_bits(),
            again.to_bits(),
            "sum of squares n={n}: reproducible"
        );
        let s = two_pass(dev, "sum_partials_f32", &xd, p);
        let want: f64 = x.iter().map(|&v| v as f64).sum();
        assert!(
            (s - want).abs() <= 1e-9 * (1.0 + want.abs()),
            "sum n={n}: {s} vs {want}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
/// Device buffers for the attention cases.
pub enum Buf {
    Bf16(DevBuf<bf16>),
    F32(DevBuf<f32>),
}

impl Buf {
    fn ptr(&self) -> u64 {
        match self {
            Buf::Bf16(b) => b.ptr(),
            Buf::F32(b) => b.ptr(),
        }
    }
}

impl ac::Launcher for Dev {
    type Buf = Buf;
    fn bf16_from(&mut self, data: &[f32]) -> Buf {
        Buf::Bf16(self.bf16(data))
    }
    fn f32_from(&mut self, data: &[f32]) -> Buf {
        Buf::F32(self.f32(data))
    }
    fn bf16_nan(&mut self, n: usize) -> Buf {
        Buf::Bf16(self.nan_bf16(n))
    }
    fn launch(&mut self, name: &str, grid: (u32, u32, u32), block: u32, args: &[ac::Arg<'_, Buf>]) {
        let vals: Vec<(u64, i32)> = args
            .iter()
            .map(|a| match a {
                ac::Arg::Buf(b) => (b.ptr(), 0),
                ac::Arg::I32(v) => (0, *v),
            })
            .collect();
        let kargs: Vec<&dyn isoflop::cuda::gpu::KernelParam> = args
            .iter()
            .zip(&vals)
            .map(|(a, v)| match a {
                ac::Arg::Buf(_) => &v.0 as &dyn isoflop::cuda::gpu::KernelParam,
                ac::Arg::I32(_) => &v.1 as &dyn isoflop::cuda::gpu::KernelParam,
            })
            .collect();
        Dev::launch(self, name, grid, block, 0, &kargs);
    }
    fn read_bf16(&mut self, b: &Buf) -> Vec<f32> {
        match b {
            Buf::Bf16(b) => self.get_bf16(b),
            Buf::F32(_) => panic!("f32 buffer read as bf16"),
        }
    }
    fn read_f32(&mut self, b: &Buf) -> Vec<f32> {
        match b {
            Buf::F32(b) => self.get_f32(b),
            Buf::Bf16(_) => panic!("bf16 buffer read as f32"),
        }
    }
}

/// The attention shapes of `dev`: every device's (ac::cases), plus on a GPU the model's context length
/// with several heads and sequences.
fn attention_shapes(dev: &Dev) -> Vec<ac::Case> {
    let mut shapes = ac::cases();
    if big(dev) {
        shapes.push(ac::Case { b: 2, t: 512, h: 4 });
        shapes.push(ac::Case { b: 3, t: 200, h: 2 });
    }
    shapes
}

fn run_fused_attention(dev: &mut Dev, shapes: &[ac::Case], seed: u64) {
    let mut failures = Vec::new();
    for (i, c) in shapes.iter().enumerate() {
        let x = ac::inputs(c, seed + i as u64);
        let want = ac::reference(c, &x);
        let got = ac::run_fused(dev, c, &x);
        let report: Vec<String> = ac::errors(&got, &want)
            .iter()
            .map(|(n, e, _)| format!("{n} {e:.1e}"))
            .collect();
        eprintln!("{c:?}: {}", report.join(", "));
        if let Err(e) = ac::check(c, &got, &want) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every output of the fused attention bit for bit the same over three runs (under the forward,
/// reverse and a shuffled thread order on the emulated device: no races, and the scale-gradient
/// reduction has a fixed order).
fn run_fused_attention_is_deterministic(dev: &mut Dev) {
    let mut shapes = vec![ac::Case {
        b: 1,
        t: 64 + 7,
        h: 2,
    }];
    if big(dev) {
        shapes.push(ac::Case { b: 2, t: 300, h: 3 });
    }
    let bits = |o: &ac::Outputs| -> Vec<u32> {
        [
            &o.out,
            &o.lse,
            &o.dq,
            &o.dk,
            &o.dv,
            &o.dq_scale,
            &o.dk_scale,
        ]
        .iter()
        .flat_map(|v| v.iter().map(|x| x.to_bits()))
        .collect()
    };
    for c in shapes {
        let x = ac::inputs(&c, 7);
        let runs: Vec<Vec<u32>> = (0..3)
            .map(|i| {
                let emu = dev.emu;
                bits(&with_schedule(emu, i, || ac::run_fused(dev, &c, &x)))
            })
            .collect();
        assert!(runs[0] == runs[1], "{c:?}: runs 1 and 2 differ");
        assert!(runs[0] == runs[2], "{c:?}: runs 1 and 3 differ");
    }
}

// ---------------------------------------------------------------------------------------------------------
/// The kernel families checked against the CPU reference, each `name => runner`: a `#[test]` `name` runs
/// `runner` on every device, and [`KERNEL_CASES`] lists the runners for the sanitized child.
macro_rules! kernel_cases {
    ($($name:ident => $run:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                for_each_device(stringify!($name), |d| $run(d));
            }
        )*

        /// Every family's runner, in the order the sanitized child runs them.
        const KERNEL_CASES: &[fn(&Dev)] = &[$($run),*];
    };
}

kernel_cases! {
    layernorm_matches_reference => run_layernorm,
    embedding_matches_reference => run_embedding,
    embedding_forward_marks_out_of_range_ids => run_embedding_out_of_range,
    cross_entropy_matches_reference => run_cross_entropy,
    token_scores_match_reference => run_token_scores,
    gelu_matches_reference => run_gelu,
    residual_and_casts_match_reference => run_residual,
    adamw_matches_reference => run_adamw,
    adamw_without_bf16_copy => run_adamw_without_bf16_copy,
    reductions_match_reference => run_reduce,
}

#[test]
fn fused_attention_matches_reference_ops() {
    for_each_device("fused_attention_matches_reference_ops", |d| {
        let shapes = attention_shapes(d);
        run_fused_attention(d, &shapes, 1000)
    });
}

#[test]
fn fused_attention_is_deterministic() {
    for_each_device("fused_attention_is_deterministic", |d| {
        run_fused_attention_is_deterministic(d)
    });
}

/// The attention comparison itself must be able to fail: NaN, a wrong value and a wrong `+=` are caught.
#[test]
fn attention_check_rejects_nan_and_wrong_values() {
    let c = ac::Case { b: 1, t: 16, h: 1 };
    let x = ac::inputs(&c, 1);
    let want = ac::reference(&c, &x);
    assert!(ac::check(&c, &want, &want).is_ok());
    let mut nan = want.clone();
    nan.dk[5] = f32::NAN;
    assert!(ac::check(&c, &nan, &want).is_err());
    let mut off = want.clone();
    off.out[3] += 0.1 * off.out.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(ac::check(&c, &off, &want).is_err());
    let mut no_prior = want.clone();
    no_prior
        .dq_scale
        .iter_mut()
        .for_each(|v| *v -= ac::DSCALE_PRIOR);
    assert!(ac::check(&c, &no_prior, &want).is_err());
    // And the elementwise one: NaN and a value outside the tolerance.
    assert!(check_close("nan", &[f32::NAN], &[1.0], 1.0, 1.0).is_err());
    assert!(check_close("off", &[1.1], &[1.0], 1e-2, 1e-3).is_err());
    assert!(check_close("ok", &[1.005], &[1.0], 1e-2, 1e-3).is_ok());
}

// ---------------------------------------------------------------------------------------------------------
/// The kernels built with AddressSanitizer + UBSan (emulated device only: device memory is host memory
/// there, so every kernel access outside a buffer is caught), run on every family's cases and three
/// ragged attention shapes in a child process (the sanitizer runtimes must be preloaded).
#[test]
fn kernels_under_address_sanitizer() {
    if !common::emulated_wanted("kernels_under_address_sanitizer") {
        return;
    }
    let so = harness::EmuLib::build_so(&harness::kernel_sources(), harness::Flavor::Sanitize)
        .unwrap_or_else(|e| panic!("{e}"));
    let (passed, log) = harness::run_sanitized_child("sanitized_child_kernel_cases", &so)
        .unwrap_or_else(|e| panic!("sanitized child: {e}"));
    assert!(
        passed && log.contains("sanitized kernel cases ok"),
        "sanitized kernel cases failed:\n{log}"
    );
}

#[test]
#[ignore = "run by kernels_under_address_sanitizer in a child process"]
fn sanitized_child_kernel_cases() {
    let Some(lib) = harness::sanitized_lib_in_child() else {
        return;
    };
    let mut dev = Dev::emulated_with(Box::leak(Box::new(lib)));
    for run in KERNEL_CASES {
        run(&dev);
    }
    let shapes = [
        ac::Case { b: 1, t: 1, h: 1 },
        ac::Case {
            b: 2,
            t: 64 + 7,
            h: 1,
        },
        ac::Case { b: 1, t: 40, h: 2 },
    ];
    run_fused_attention(&mut dev, &shapes, 50);
    eprintln!("sanitized kernel cases ok");
}

/// Each CUDA entry point that takes a raw stream or handle — `DevBuf::fill_bytes`,
/// `PinnedBuf::copy_to` / `copy_from`, `Kernels::launch` — called first thing on a fresh thread that
/// never bound the context (on a GPU, without the binding inside them the driver answers
/// `CUDA_ERROR_INVALID_CONTEXT`); the results are checked on the opening thread.
#[test]
fn work_from_a_new_thread_binds_the_context() {
    use isoflop::cuda::gpu::PinnedBuf;
    for dev in common::devices("work_from_a_new_thread_binds_the_context") {
        let name = dev.gpu.name.clone();
        let n = 1000usize;
        let x: Vec<f32> = (0..n).map(|i| i as f32 / 100.0 - 5.0).collect();
        let xd = dev.f32(&x);
        let out = dev.nan_f32(n);
        let staged = dev.nan_f32(n);
        let back = dev.nan_f32(n);
        let mut pinned = PinnedBuf::new(&dev.gpu, n * 4).unwrap();
        pinned
            .as_mut_slice()
            .copy_from_slice(bytemuck_f32(&x).as_slice());
        // 1. fill_bytes on a new thread.
        let dev = std::thread::spawn(move || {
            out.fill_bytes(0, &dev.gpu.stream)
                .unwrap_or_else(|e| panic!("fill_bytes from a new thread: {e}"));
            dev.gpu.sync().unwrap();
            assert!(dev.get_f32(&out).iter().all(|&v| v == 0.0));
            (dev, out)
        })
        .join()
        .unwrap_or_else(|_| panic!("{name}: fill_bytes"));
        let (dev, out) = dev;
        // 2. A pinned upload on a new thread.
        let (dev, mut pinned, staged) = std::thread::spawn(move || {
            pinned
                .copy_to(staged.slice(), n * 4, &dev.gpu.stream)
                .unwrap_or_else(|e| panic!("PinnedBuf::copy_to from a new thread: {e}"));
            dev.gpu.sync().unwrap();
            (dev, pinned, staged)
        })
        .join()
        .unwrap_or_else(|_| panic!("{name}: copy_to"));
        assert_eq!(dev.get_f32(&staged), x);
        // 3. A kernel launch on a new thread.
        let (dev, xd, out) = std::thread::spawn(move || {
            let nn = n as i64;
            dev.k
                .launch(
                    &dev.gpu.stream,
                    "gelu_forward_f32",
                    (elementwise_grid(n), 1, 1),
                    256,
                    0,
                    &[&xd.ptr(), &out.ptr(), &nn],
                )
                .unwrap_or_else(|e| panic!("Kernels::launch from a new thread: {e}"));
            dev.gpu.sync().unwrap();
            (dev, xd, out)
        })
        .join()
        .unwrap_or_else(|_| panic!("{name}: launch"));
        let mut want = vec![0f32; n];
        ops::gelu_forward(&x, &mut want);
        ok(check_close(
            "gelu_forward_f32 from a new thread",
            &dev.get_f32(&out),
            &want,
            1e-5,
            1e-6,
        ));
        // 4. A pinned download on a new thread.
        dev.gpu.copy(&xd, &back, n).unwrap();
        dev.gpu.sync().unwrap();
        let (dev, mut pinned) = std::thread::spawn(move || {
            pinned.as_mut_slice().fill(0);
            pinned
                .copy_from(back.slice(), n * 4, &dev.gpu.stream)
                .unwrap_or_else(|e| panic!("PinnedBuf::copy_from from a new thread: {e}"));
            dev.gpu.sync().unwrap();
            drop(back);
            (dev, pinned)
        })
        .join()
        .unwrap_or_else(|_| panic!("{name}: copy_from"));
        assert_eq!(pinned.as_mut_slice(), bytemuck_f32(&x).as_slice());
        drop((dev, xd));
    }
}

fn bytemuck_f32(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}
