//! Every CUDA kernel of kernels/*.cu run under the CPU emulator and compared with the CPU reference ops
//! (isoflop::cpu::ops): fresh random inputs of several shapes (not multiples of the block size too),
//! outputs NaN-poisoned before each launch, tolerances per path (bf16 ≈ 1e-2, f32 tighter). Also an
//! AddressSanitizer + UBSan build of the kernels run on a few cases in a child process.

#[path = "emu/cases.rs"]
mod cases;
#[path = "emu/harness.rs"]
mod harness;

use cases::*;
use half::bf16;
use harness::{EmuLib, Flavor};
use isoflop::backend::{AdamWStep, DecayMode};
use isoflop::cpu::ops;

fn lib() -> &'static EmuLib {
    harness::kernels()
}

fn ok(r: Result<(), String>) {
    if let Err(e) = r {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------------------
fn run_gelu(lib: &EmuLib) {
    for n in elementwise_cases() {
        let mut r = rng(n as u64);
        let x = uniform(&mut r, n, -5.0, 5.0);
        let dout = uniform(&mut r, n, -1.0, 1.0);
        let (g, b, nn) = (elementwise_grid(n), (256, 1, 1), n as i64);
        let grid = (g, 1, 1);
        let mut want = vec![0f32; n];
        ops::gelu_forward(&x, &mut want);
        let mut out = poison(n);
        ok(lib.launch(
            "gelu_forward_f32",
            grid,
            b,
            0,
            &[&x.as_ptr(), &out.as_mut_ptr(), &nn],
        ));
        ok(check_close(
            &format!("gelu_forward_f32 n={n}"),
            &out,
            &want,
            1e-5,
            1e-6,
        ));
        let mut outb = poison_bf16(n);
        ok(lib.launch(
            "gelu_forward_f32_bf16",
            grid,
            b,
            0,
            &[&x.as_ptr(), &outb.as_mut_ptr(), &nn],
        ));
        ok(check_close(
            &format!("gelu_forward_f32_bf16 n={n}"),
            &from_bf16(&outb),
            &want,
            1e-2,
            1e-3,
        ));
        // bf16 input: the reference sees the same rounded input.
        let xb = to_bf16(&x);
        let mut want_b = vec![0f32; n];
        ops::gelu_forward(&from_bf16(&xb), &mut want_b);
        let mut outb = poison_bf16(n);
        ok(lib.launch(
            "gelu_forward_bf16",
            grid,
            b,
            0,
            &[&xb.as_ptr(), &outb.as_mut_ptr(), &nn],
        ));
        ok(check_close(
            &format!("gelu_forward_bf16 n={n}"),
            &from_bf16(&outb),
            &want_b,
            1e-2,
            1e-3,
        ));

        let mut dwant = vec![0f32; n];
        ops::gelu_backward(&dout, &x, &mut dwant);
        let mut dx = poison(n);
        ok(lib.launch(
            "gelu_backward_f32",
            grid,
            b,
            0,
            &[&dout.as_ptr(), &x.as_ptr(), &dx.as_mut_ptr(), &nn],
        ));
        ok(check_close(
            &format!("gelu_backward_f32 n={n}"),
            &dx,
            &dwant,
            1e-5,
            1e-6,
        ));
        let mut dxb = poison_bf16(n);
        ok(lib.launch(
            "gelu_backward_f32_bf16",
            grid,
            b,
            0,
            &[&dout.as_ptr(), &x.as_ptr(), &dxb.as_mut_ptr(), &nn],
        ));
        ok(check_close(
            &format!("gelu_backward_f32_bf16 n={n}"),
            &from_bf16(&dxb),
            &dwant,
            1e-2,
            1e-3,
        ));
        let mut dwant_b = vec![0f32; n];
        ops::gelu_backward(&dout, &from_bf16(&xb), &mut dwant_b);
        let mut dxb = poison_bf16(n);
        ok(lib.launch(
            "gelu_backward_bf16",
            grid,
            b,
            0,
            &[&dout.as_ptr(), &xb.as_ptr(), &dxb.as_mut_ptr(), &nn],
        ));
        ok(check_close(
            &format!("gelu_backward_bf16 n={n}"),
            &from_bf16(&dxb),
            &dwant_b,
            1e-2,
            1e-3,
        ));
    }
}

#[test]
fn gelu_matches_reference() {
    run_gelu(lib());
}

// ---------------------------------------------------------------------------------------------------------
#[test]
fn residual_and_casts_match_reference() {
    for n in elementwise_cases() {
        let mut r = rng(100 + n as u64);
        let x = uniform(&mut r, n, -3.0, 3.0);
        let y = uniform(&mut r, n, -3.0, 3.0);
        let (grid, b, nn) = ((elementwise_grid(n), 1, 1), (256, 1, 1), n as i64);
        let want: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
        let mut acc = x.clone();
        ok(lib().launch(
            "residual_add_f32",
            grid,
            b,
            0,
            &[&acc.as_mut_ptr(), &y.as_ptr(), &nn],
        ));
        ok(check_close("residual_add_f32", &acc, &want, 0.0, 0.0));
        let yb = to_bf16(&y);
        let wantb: Vec<f32> = x.iter().zip(&yb).map(|(a, b)| a + b.to_f32()).collect();
        let mut acc = x.clone();
        ok(lib().launch(
            "residual_add_bf16_f32",
            grid,
            b,
            0,
            &[&acc.as_mut_ptr(), &yb.as_ptr(), &nn],
        ));
        ok(check_close("residual_add_bf16_f32", &acc, &wantb, 0.0, 0.0));
        let mut out = poison(n);
        ok(lib().launch(
            "add_f32",
            grid,
            b,
            0,
            &[&x.as_ptr(), &y.as_ptr(), &out.as_mut_ptr(), &nn],
        ));
        ok(check_close("add_f32", &out, &want, 0.0, 0.0));
        // Casts: exact round-to-nearest-even against half's conversion, and back.
        let mut xb = poison_bf16(n);
        ok(lib().launch(
            "cast_f32_to_bf16",
            grid,
            b,
            0,
            &[&x.as_ptr(), &xb.as_mut_ptr(), &nn],
        ));
        assert_eq!(
            xb.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            to_bf16(&x).iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let mut back = poison(n);
        ok(lib().launch(
            "cast_bf16_to_f32",
            grid,
            b,
            0,
            &[&xb.as_ptr(), &back.as_mut_ptr(), &nn],
        ));
        ok(check_close(
            "cast_bf16_to_f32",
            &back,
            &round_bf16(&x),
            0.0,
            0.0,
        ));
        let mut z = x.clone();
        ok(lib().launch("zero_f32", grid, b, 0, &[&z.as_mut_ptr(), &nn]));
        assert!(z.iter().all(|&v| v == 0.0));
    }
}

// ---------------------------------------------------------------------------------------------------------
fn run_layernorm(lib: &EmuLib) {
    for (n, c) in layernorm_cases() {
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
        for kernel in ["layernorm_forward_f32", "layernorm_forward_bf16"] {
            let (mut mean, mut rstd) = (poison(n), poison(n));
            let got = if kernel.ends_with("f32") {
                let mut out = poison(n * c);
                ok(lib.launch(
                    kernel,
                    grid,
                    (128, 1, 1),
                    0,
                    &[
                        &x.as_ptr(),
                        &scale.as_ptr(),
                        &out.as_mut_ptr(),
                        &mean.as_mut_ptr(),
                        &rstd.as_mut_ptr(),
                        &ni,
                        &ci,
                    ],
                ));
                out
            } else {
                let mut out = poison_bf16(n * c);
                ok(lib.launch(
                    kernel,
                    grid,
                    (128, 1, 1),
                    0,
                    &[
                        &x.as_ptr(),
                        &scale.as_ptr(),
                        &out.as_mut_ptr(),
                        &mean.as_mut_ptr(),
                        &rstd.as_mut_ptr(),
                        &ni,
                        &ci,
                    ],
                ));
                from_bf16(&out)
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
                &format!("{kernel} mean n={n} c={c}"),
                &mean,
                &mean_w,
                1e-5,
                1e-5,
            ));
            ok(check_close(
                &format!("{kernel} rstd n={n} c={c}"),
                &rstd,
                &rstd_w,
                1e-4,
                0.0,
            ));
        }
        // Backward: dx written and accumulated; dscale accumulated onto a non-zero start.
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
        for rows_per_block in [4usize, 32] {
            let p = n.div_ceil(rows_per_block);
            let mut results = Vec::new();
            for accumulate in [0i32, 1] {
                let dx_start = if accumulate == 1 {
                    uniform(&mut r, n * c, -1.0, 1.0)
                } else {
                    poison(n * c)
                };
                let mut dx = dx_start.clone();
                let mut partial = poison(p * c);
                ok(lib.launch(
                    "layernorm_backward_f32",
                    (p as u32, 1, 1),
                    (256, 1, 1),
                    c * 4,
                    &[
                        &dout.as_ptr(),
                        &x.as_ptr(),
                        &scale.as_ptr(),
                        &mean_w.as_ptr(),
                        &rstd_w.as_ptr(),
                        &dx.as_mut_ptr(),
                        &partial.as_mut_ptr(),
                        &ni,
                        &ci,
                        &(rows_per_block as i32),
                        &accumulate,
                    ],
                ));
                let want: Vec<f32> = if accumulate == 1 {
                    dx_w.iter().zip(&dx_start).map(|(a, b)| a + b).collect()
                } else {
                    dx_w.clone()
                };
                ok(check_close(
                    &format!("layernorm_backward dx n={n} c={c} acc={accumulate}"),
                    &dx,
                    &want,
                    1e-3,
                    1e-4,
                ));
                let mut dscale = dscale0.clone();
                ok(lib.launch(
                    "layernorm_dscale_reduce_f32",
                    (c.div_ceil(256) as u32, 1, 1),
                    (256, 1, 1),
                    0,
                    &[&partial.as_ptr(), &dscale.as_mut_ptr(), &(p as i32), &ci],
                ));
                ok(check_close(
                    &format!("layernorm dscale n={n} c={c} rpb={rows_per_block}"),
                    &dscale,
                    &dscale_w,
                    1e-4,
                    1e-4,
                ));
                results.push(dscale);
            }
            // Same launch, same bits.
            assert_eq!(
                results[0].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                results[1].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "dscale must be bit-for-bit reproducible"
            );
        }
    }
}

#[test]
fn layernorm_matches_reference() {
    run_layernorm(lib());
}

// ---------------------------------------------------------------------------------------------------------
fn run_embedding(lib: &EmuLib) {
    for (v, d, n) in embedding_cases() {
        let mut r = rng((v * 7 + d * 3 + n) as u64);
        let embed = uniform(&mut r, v * d, -1.0, 1.0);
        // Small id range so that ids repeat.
        let tokens: Vec<u16> = (0..n)
            .map(|_| rand::Rng::random_range(&mut r, 0..v.min(20)) as u16)
            .collect();
        let mut want = vec![0f32; n * d];
        ops::embedding_forward(&embed, &tokens, &mut want, d);
        let mut out = poison(n * d);
        let (ni, di, vi) = (n as i32, d as i32, v as i32);
        ok(lib.launch(
            "embedding_forward_f32",
            (elementwise_grid(n * d), 1, 1),
            (256, 1, 1),
            0,
            &[
                &embed.as_ptr(),
                &tokens.as_ptr(),
                &out.as_mut_ptr(),
                &ni,
                &di,
                &vi,
            ],
        ));
        ok(check_close(
            &format!("embedding_forward v={v} d={d} n={n}"),
            &out,
            &want,
            0.0,
            0.0,
        ));

        let dout = uniform(&mut r, n * d, -1.0, 1.0);
        let start = uniform(&mut r, v * d, -1.0, 1.0);
        let mut dembed_w = start.clone();
        ops::embedding_backward(&dout, &tokens, &mut dembed_w, d);
        let (ids, offsets, positions) = embedding_csr(&tokens);
        let mut dembed = start.clone();
        ok(lib.launch(
            "embedding_backward_f32",
            (ids.len() as u32, 1, 1),
            (128, 1, 1),
            0,
            &[
                &dout.as_ptr(),
                &ids.as_ptr(),
                &offsets.as_ptr(),
                &positions.as_ptr(),
                &dembed.as_mut_ptr(),
                &(ids.len() as i32),
                &di,
            ],
        ));
        ok(check_close(
            &format!("embedding_backward v={v} d={d} n={n}"),
            &dembed,
            &dembed_w,
            1e-5,
            1e-5,
        ));
    }
}

#[test]
fn embedding_matches_reference() {
    run_embedding(lib());
}

#[test]
fn embedding_forward_marks_out_of_range_ids() {
    let (v, d) = (4usize, 32usize);
    let embed = vec![1f32; v * d];
    let tokens = vec![1u16, 4];
    let mut out = poison(2 * d);
    ok(lib().launch(
        "embedding_forward_f32",
        (1, 1, 1),
        (256, 1, 1),
        0,
        &[
            &embed.as_ptr(),
            &tokens.as_ptr(),
            &out.as_mut_ptr(),
            &2i32,
            &(d as i32),
            &(v as i32),
        ],
    ));
    assert!(out[..d].iter().all(|&x| x == 1.0) && out[d..].iter().all(|x| x.is_nan()));
}

// ---------------------------------------------------------------------------------------------------------
fn run_cross_entropy(lib: &EmuLib) {
    for (n, v, block) in cross_entropy_cases() {
        let mut r = rng((n * 31 + v) as u64);
        let logits: Vec<f32> = uniform(&mut r, n * v, -4.0, 4.0);
        let tg = targets(&mut r, n, v);
        let mut dwant = vec![0f32; n * v];
        let want = ops::cross_entropy_forward_backward(&logits, &tg, Some(&mut dwant), v);
        let vi = v as i32;
        // f32 in place, with gradient.
        let mut z = logits.clone();
        let mut loss = poison(n);
        ok(lib.launch(
            "cross_entropy_f32",
            (n as u32, 1, 1),
            (block, 1, 1),
            0,
            &[
                &z.as_mut_ptr(),
                &tg.as_ptr(),
                &loss.as_mut_ptr(),
                &vi,
                &1i32,
            ],
        ));
        let sum: f64 = loss.iter().map(|&x| x as f64).sum();
        assert!(
            (sum - want.sum).abs() <= 1e-5 * want.sum.abs().max(1.0),
            "ce f32 n={n} v={v}: {sum} vs {}",
            want.sum
        );
        for (i, &t) in tg.iter().enumerate() {
            if t == 0 {
                assert_eq!(loss[i], 0.0, "pad row loss");
            }
        }
        ok(check_close(
            &format!("cross_entropy_f32 dlogits n={n} v={v}"),
            &z,
            &dwant,
            1e-4,
            1e-7,
        ));
        // Loss only: logits untouched.
        let mut z2 = logits.clone();
        let mut loss2 = poison(n);
        ok(lib.launch(
            "cross_entropy_f32",
            (n as u32, 1, 1),
            (block, 1, 1),
            0,
            &[
                &z2.as_mut_ptr(),
                &tg.as_ptr(),
                &loss2.as_mut_ptr(),
                &vi,
                &0i32,
            ],
        ));
        assert_eq!(z2, logits);
        assert_eq!(
            loss2.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            loss.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        // bf16 logits: reference on the rounded logits.
        let zb0 = to_bf16(&logits);
        let mut dwant_b = vec![0f32; n * v];
        let want_b =
            ops::cross_entropy_forward_backward(&from_bf16(&zb0), &tg, Some(&mut dwant_b), v);
        let mut zb = zb0.clone();
        let mut loss = poison(n);
        ok(lib.launch(
            "cross_entropy_bf16",
            (n as u32, 1, 1),
            (block, 1, 1),
            0,
            &[
                &zb.as_mut_ptr(),
                &tg.as_ptr(),
                &loss.as_mut_ptr(),
                &vi,
                &1i32,
            ],
        ));
        let sum: f64 = loss.iter().map(|&x| x as f64).sum();
        assert!(
            (sum - want_b.sum).abs() <= 1e-5 * want_b.sum.abs().max(1.0),
            "ce bf16 n={n} v={v}"
        );
        ok(check_close(
            &format!("cross_entropy_bf16 dlogits n={n} v={v}"),
            &from_bf16(&zb),
            &dwant_b,
            1e-2,
            1e-6,
        ));
    }
}

#[test]
fn cross_entropy_matches_reference() {
    run_cross_entropy(lib());
}

// ---------------------------------------------------------------------------------------------------------
fn run_adamw(lib: &EmuLib) {
    for n in adamw_cases() {
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
            // Reference: decayed and non-decayed copies, chosen per element by the mask.
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
            let mode_i = match mode {
                DecayMode::Coupled => 0i32,
                DecayMode::Independent => 1,
            };
            for variant in ["mask", "flag1", "flag0"] {
                let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
                let mut pb = poison_bf16(n);
                let mask_ptr = if variant == "mask" {
                    mask.as_ptr()
                } else {
                    std::ptr::null()
                };
                let flag = (variant == "flag1") as i32;
                ok(lib.launch(
                    "adamw_f32",
                    (elementwise_grid(n), 1, 1),
                    (256, 1, 1),
                    0,
                    &[
                        &p.as_mut_ptr(),
                        &g.as_ptr(),
                        &m.as_mut_ptr(),
                        &v.as_mut_ptr(),
                        &pb.as_mut_ptr(),
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
                ));
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
                ok(check_close(
                    &format!("{what} params"),
                    &p,
                    &want,
                    1e-6,
                    1e-7,
                ));
                ok(check_close(&format!("{what} m"), &m, &md, 1e-6, 1e-9));
                ok(check_close(&format!("{what} v"), &v, &vd, 1e-6, 1e-12));
                ok(check_close(
                    &format!("{what} bf16 copy"),
                    &from_bf16(&pb),
                    &round_bf16(&p),
                    0.0,
                    0.0,
                ));
            }
        }
    }
}

#[test]
fn adamw_matches_reference() {
    run_adamw(lib());
}

#[test]
fn adamw_without_bf16_copy() {
    let n = 100usize;
    let mut r = rng(5);
    let mut p = uniform(&mut r, n, -1.0, 1.0);
    let g = uniform(&mut r, n, -1.0, 1.0);
    let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
    let null_b: *mut bf16 = std::ptr::null_mut();
    let null_m: *const u8 = std::ptr::null();
    ok(lib().launch(
        "adamw_f32",
        (1, 1, 1),
        (256, 1, 1),
        0,
        &[
            &p.as_mut_ptr(),
            &g.as_ptr(),
            &m.as_mut_ptr(),
            &v.as_mut_ptr(),
            &null_b,
            &null_m,
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
    ));
    assert!(p.iter().all(|x| x.is_finite()) && m.iter().any(|&x| x != 0.0));
}

// ---------------------------------------------------------------------------------------------------------
fn reduce_two_pass(lib: &EmuLib, kernel: &str, x: &[f32], p: usize) -> f64 {
    let mut partial = vec![f64::NAN; p];
    ok(lib.launch(
        kernel,
        (p as u32, 1, 1),
        (256, 1, 1),
        0,
        &[&x.as_ptr(), &(x.len() as i64), &partial.as_mut_ptr()],
    ));
    let mut out = [f64::NAN];
    ok(lib.launch(
        "sum_finish_f64",
        (1, 1, 1),
        (256, 1, 1),
        0,
        &[&partial.as_ptr(), &(p as i32), &out.as_mut_ptr()],
    ));
    out[0]
}

fn run_reduce(lib: &EmuLib) {
    for (n, p) in reduce_cases() {
        let mut r = rng(n as u64 + 99);
        let x = uniform(&mut r, n, -2.0, 2.0);
        let sq = reduce_two_pass(lib, "sum_squares_partials_f32", &x, p);
        let want = ops::global_norm(&x).powi(2);
        assert!(
            (sq - want).abs() <= 1e-12 * want.max(1e-30),
            "sum of squares n={n}: {sq} vs {want}"
        );
        assert_eq!(
            sq.to_bits(),
            reduce_two_pass(lib, "sum_squares_partials_f32", &x, p).to_bits(),
            "reproducible"
        );
        let s = reduce_two_pass(lib, "sum_partials_f32", &x, p);
        let want: f64 = x.iter().map(|&v| v as f64).sum();
        assert!(
            (s - want).abs() <= 1e-9 * (1.0 + want.abs()),
            "sum n={n}: {s} vs {want}"
        );
    }
}

#[test]
fn reductions_match_reference() {
    run_reduce(lib());
}

// ---------------------------------------------------------------------------------------------------------
/// The kernels built with AddressSanitizer + UBSan, run on the layernorm, embedding, cross-entropy and
/// reduction cases in a child process (the sanitizer runtimes must be preloaded).
#[test]
fn kernels_under_address_sanitizer() {
    let so = EmuLib::build_so(&harness::kernel_sources(), Flavor::Sanitize)
        .unwrap_or_else(|e| panic!("{e}"));
    let (passed, log) = harness::run_sanitized_child("sanitized_child_kernel_cases", &so).unwrap();
    assert!(
        passed && log.contains("1 passed"),
        "sanitized kernel cases failed:\n{log}"
    );
}

#[test]
#[ignore = "run by kernels_under_address_sanitizer in a child process"]
fn sanitized_child_kernel_cases() {
    let Some(lib) = harness::sanitized_lib_in_child() else {
        return;
    };
    run_layernorm(&lib);
    run_embedding(&lib);
    run_cross_entropy(&lib);
    run_gelu(&lib);
    run_adamw(&lib);
    run_reduce(&lib);
}
