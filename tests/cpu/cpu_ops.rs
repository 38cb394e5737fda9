//! Every CPU op's backward against central finite differences, forwards against direct f64 math,
//! accumulation conventions (`=` for inputs, `+=` for parameters) and thread-count independence.

use isoflop::backend::{AdamWStep, DecayMode};
use isoflop::cpu::ops::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn randn(r: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let z: f32 = StandardNormal.sample(r);
            scale * z
        })
        .collect::<Vec<f32>>()
}

/// Σ w·y in f64: the scalar whose gradient with respect to y is w (= dout).
fn dot(w: &[f32], y: &[f32]) -> f64 {
    w.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Compare `analytic` with central differences of `f` at up to `samples` coordinates of `x`.
/// Tolerance: |a − fd| ≤ 2e-2·max(|a|, |fd|) + 2e-3·max|analytic| + 1e-5.
fn check_grad(
    name: &str,
    x: &[f32],
    analytic: &[f32],
    f: impl Fn(&[f32]) -> f64,
    eps: f32,
    samples: usize,
    r: &mut ChaCha8Rng,
) -> Result<(), String> {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient size");
    let scale = analytic.iter().fold(0.0f32, |a, &g| a.max(g.abs())) as f64;
    let coords: Vec<usize> = if x.len() <= samples {
        (0..x.len()).collect()
    } else {
        (0..samples).map(|_| r.random_range(0..x.len())).collect()
    };
    let mut xp = x.to_vec();
    for i in coords {
        let orig = xp[i];
        xp[i] = orig + eps;
        let (hi, fp) = (xp[i], f(&xp));
        xp[i] = orig - eps;
        let (lo, fm) = (xp[i], f(&xp));
        xp[i] = orig;
        let fd = (fp - fm) / (hi as f64 - lo as f64);
        let a = analytic[i] as f64;
        let tol = 2e-2 * a.abs().max(fd.abs()) + 2e-3 * scale + 1e-5;
        if (a - fd).abs() > tol {
            return Err(format!(
                "{name}[{i}]: analytic {a:.6e}, finite difference {fd:.6e}"
            ));
        }
    }
    Ok(())
}

fn assert_grad(
    name: &str,
    x: &[f32],
    analytic: &[f32],
    f: impl Fn(&[f32]) -> f64,
    eps: f32,
    r: &mut ChaCha8Rng,
) {
    if let Err(e) = check_grad(name, x, analytic, f, eps, 40, r) {
        panic!("{e}");
    }
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

// ---------------------------------------------------------------- matmul

fn naive_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k)
                .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                .sum();
        }
    }
    out
}

#[test]
fn matmul_forward_matches_f64() {
    let mut r = rng(1);
    // small (one sgemm), row-split and column-split shapes
    for &(m, k, n) in &[
        (3, 5, 4),
        (7, 1, 9),
        (130, 40, 70),
        (40, 70, 130),
        (200, 33, 1),
    ] {
        let a = randn(&mut r, m * k, 1.0);
        let b = randn(&mut r, k * n, 1.0);
        let mut out = vec![f32::NAN; m * n];
        matmul_forward(&a, &b, &mut out, m, k, n, OutMode::Overwrite);
        let want = naive_matmul(&a, &b, m, k, n);
        for (o, w) in out.iter().zip(&want) {
            assert!(
                (*o as f64 - w).abs() < 1e-4 * (1.0 + w.abs()),
                "({m},{k},{n}): {o} vs {w}"
            );
        }
    }
}

#[test]
fn matmul_forward_accumulates_or_overwrites() {
    let mut r = rng(4);
    // one sgemm, row-split and column-split shapes
    for &(m, k, n) in &[(3, 5, 4), (130, 40, 70), (40, 70, 130)] {
        let a = randn(&mut r, m * k, 1.0);
        let b = randn(&mut r, k * n, 1.0);
        let c0 = randn(&mut r, m * n, 1.0);
        let mut prod = vec![f32::NAN; m * n];
        matmul_forward(&a, &b, &mut prod, m, k, n, OutMode::Overwrite);
        assert!(prod.iter().all(|x| x.is_finite()), "({m},{k},{n}) NaN kept");
        let mut acc = c0.clone();
        matmul_forward(&a, &b, &mut acc, m, k, n, OutMode::Accumulate);
        for ((x, p), c) in acc.iter().zip(&prod).zip(&c0) {
            assert!(
                (x - (p + c)).abs() <= 1e-5 * (1.0 + x.abs()),
                "({m},{k},{n})"
            );
        }
    }
}

#[test]
fn matmul_backward_matches_finite_differences() {
    let mut r = rng(2);
    for &(m, k, n) in &[(3, 5, 4), (6, 2, 9), (130, 40, 70), (40, 70, 130)] {
        let a = randn(&mut r, m * k, 1.0);
        let b = randn(&mut r, k * n, 1.0);
        let w = randn(&mut r, m * n, 1.0);
        let mut da = vec![f32::NAN; m * k]; // written, whatever it held
        let mut db = vec![0.0f32; k * n];
        matmul_backward(&w, &a, &b, &mut da, &mut db, m, k, n);
        let loss = |a: &[f32], b: &[f32]| {
            let mut out = vec![0.0; m * n];
            matmul_forward(a, b, &mut out, m, k, n, OutMode::Overwrite);
            dot(&w, &out)
        };
        assert_grad("matmul da", &a, &da, |x| loss(x, &b), 1e-2, &mut r);
        assert_grad("matmul db", &b, &db, |x| loss(&a, x), 1e-2, &mut r);
        // db accumulates
        let db1 = db.clone();
        matmul_backward(&w, &a, &b, &mut da, &mut db, m, k, n);
        for (x, y) in db.iter().zip(&db1) {
            assert!((x - 2.0 * y).abs() <= 1e-5 * (1.0 + y.abs()));
        }
    }
}

#[test]
fn matmul_is_bitwise_independent_of_thread_count() {
    let mut r = rng(3);
    for &(m, k, n) in &[(300, 64, 2000), (64, 300, 2000), (2000, 300, 64)] {
        let a = randn(&mut r, m * k, 1.0);
        let b = randn(&mut r, k * n, 1.0);
        let run = |threads| {
            in_pool(threads, || {
                let mut out = vec![0.0; m * n];
                matmul_forward(&a, &b, &mut out, m, k, n, OutMode::Overwrite);
                out
            })
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }
}

// ---------------------------------------------------------------- layernorm / qk-norm

#[test]
fn layernorm_forward_normalises() {
    let mut r = rng(4);
    let (n, c) = (5, 100);
    let x = randn(&mut r, n * c, 3.0);
    let scale = randn(&mut r, c, 1.0);
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    layernorm_forward(&x, &scale, &mut out, &mut mean, &mut rstd, c);
    for i in 0..n {
        let row = &x[i * c..][..c];
        let mu: f64 = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var: f64 = row.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / c as f64;
        let rs = 1.0 / (var + 1e-6).sqrt();
        assert!((mean[i] as f64 - mu).abs() < 1e-5);
        assert!((rstd[i] as f64 - rs).abs() < 1e-5 * rs);
        for j in 0..c {
            let want = (row[j] as f64 - mu) * rs * scale[j] as f64;
            assert!((out[i * c + j] as f64 - want).abs() < 1e-5);
        }
    }
}

#[test]
fn layernorm_backward_matches_finite_differences() {
    let mut r = rng(5);
    for &(n, c) in &[(3, 8), (4, 64), (130, 24)] {
        let x = randn(&mut r, n * c, 1.5);
        let scale: Vec<f32> = randn(&mut r, c, 0.3).iter().map(|v| 1.0 + v).collect();
        let w = randn(&mut r, n * c, 1.0);
        let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        layernorm_forward(&x, &scale, &mut out, &mut mean, &mut rstd, c);
        let mut dx = vec![f32::NAN; n * c];
        let mut dscale = vec![0.0; c];
        layernorm_backward(&w, &x, &scale, &mean, &rstd, &mut dx, &mut dscale, c);
        let loss = |x: &[f32], s: &[f32]| {
            let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            layernorm_forward(x, s, &mut out, &mut mean, &mut rstd, c);
            dot(&w, &out)
        };
        assert_grad("layernorm dx", &x, &dx, |v| loss(v, &scale), 1e-2, &mut r);
        assert_grad(
            "layernorm dscale",
            &scale,
            &dscale,
            |v| loss(&x, v),
            1e-2,
            &mut r,
        );
        let ds1 = dscale.clone();
        layernorm_backward(&w, &x, &scale, &mean, &rstd, &mut dx, &mut dscale, c);
        for (a, b) in dscale.iter().zip(&ds1) {
            assert!(
                (a - 2.0 * b).abs() <= 1e-5 * (1.0 + b.abs()),
                "dscale must accumulate"
            );
        }
    }
}

#[test]
fn qk_norm_is_layernorm_per_head_and_matches_finite_differences() {
    let mut r = rng(6);
    let (n, d) = (6, 192);
    let nh = d / 64;
    let x = randn(&mut r, n * d, 2.0);
    let scale: Vec<f32> = randn(&mut r, 64, 0.3).iter().map(|v| 1.0 + v).collect();
    let w = randn(&mut r, n * d, 1.0);
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * d], vec![0.0; n * nh], vec![0.0; n * nh]);
    qk_norm_forward(&x, &scale, &mut out, &mut mean, &mut rstd, d);
    // each (row, head) slice normalised on its own
    for row in 0..n {
        for h in 0..nh {
            let s = &x[row * d + h * 64..][..64];
            let mu: f64 = s.iter().map(|&v| v as f64).sum::<f64>() / 64.0;
            let var: f64 = s.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / 64.0;
            for j in 0..64 {
                let want = (s[j] as f64 - mu) / (var + 1e-6).sqrt() * scale[j] as f64;
                assert!((out[row * d + h * 64 + j] as f64 - want).abs() < 1e-5);
            }
            assert!((mean[row * nh + h] as f64 - mu).abs() < 1e-5);
        }
    }
    let mut dx = vec![f32::NAN; n * d];
    let mut dscale = vec![0.0; 64];
    qk_norm_backward(&w, &x, &scale, &mean, &rstd, &mut dx, &mut dscale, d);
    let loss = |x: &[f32], s: &[f32]| {
        let (mut out, mut mean, mut rstd) =
            (vec![0.0; n * d], vec![0.0; n * nh], vec![0.0; n * nh]);
        qk_norm_forward(x, s, &mut out, &mut mean, &mut rstd, d);
        dot(&w, &out)
    };
    assert_grad("qk_norm dx", &x, &dx, |v| loss(v, &scale), 1e-2, &mut r);
    assert_grad(
        "qk_norm dscale",
        &scale,
        &dscale,
        |v| loss(&x, v),
        1e-2,
        &mut r,
    );
}

// ---------------------------------------------------------------- rope

#[test]
fn rope_forward_matches_formula_and_backward_matches_finite_differences() {
    let mut r = rng(7);
    let (b, t, d) = (2, 7, 128);
    let x = randn(&mut r, b * t * d, 1.0);
    let mut out = vec![0.0; b * t * d];
    rope_forward(&x, &mut out, b, t, d);
    for row in 0..b * t {
        let pos = (row % t) as f64;
        for h in 0..d / 64 {
            for i in 0..32 {
                let theta = 10000f64.powf(-2.0 * i as f64 / 64.0);
                let (s, c) = (pos * theta).sin_cos();
                let base = row * d + h * 64;
                let (x0, x1) = (x[base + i] as f64, x[base + i + 32] as f64);
                assert!((out[base + i] as f64 - (x0 * c - x1 * s)).abs() < 1e-5);
                assert!((out[base + i + 32] as f64 - (x1 * c + x0 * s)).abs() < 1e-5);
            }
        }
    }
    // position 0 is the identity
    assert_eq!(&out[..d], &x[..d]);
    let w = randn(&mut r, b * t * d, 1.0);
    let mut dx = vec![f32::NAN; b * t * d];
    rope_backward(&w, &mut dx, b, t, d);
    let loss = |x: &[f32]| {
        let mut out = vec![0.0; b * t * d];
        rope_forward(x, &mut out, b, t, d);
        dot(&w, &out)
    };
    assert_grad("rope dx", &x, &dx, loss, 1e-2, &mut r);
}

// ---------------------------------------------------------------- attention

fn naive_attention(q: &[f32], k: &[f32], v: &[f32], b: usize, t: usize, d: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; b * t * d];
    for bi in 0..b {
        for h in 0..d / 64 {
            for i in 0..t {
                let at =
                    |m: &[f32], row: usize, c: usize| m[(bi * t + row) * d + h * 64 + c] as f64;
                let s: Vec<f64> = (0..=i)
                    .map(|j| (0..64).map(|c| at(q, i, c) * at(k, j, c)).sum::<f64>() / 8.0)
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..64 {
                    out[(bi * t + i) * d + h * 64 + c] =
                        (0..=i).map(|j| e[j] / z * at(v, j, c)).sum();
                }
            }
        }
    }
    out
}

#[test]
fn attention_forward_is_causal_softmax() {
    let mut r = rng(8);
    let (b, t, d) = (2, 9, 128);
    let nh = d / 64;
    let q = randn(&mut r, b * t * d, 1.0);
    let k = randn(&mut r, b * t * d, 1.0);
    let v = randn(&mut r, b * t * d, 1.0);
    let mut out = vec![f32::NAN; b * t * d];
    let mut att = vec![f32::NAN; b * nh * t * t];
    attention_forward(&q, &k, &v, &mut out, &mut att, b, t, d);
    let want = naive_attention(&q, &k, &v, b, t, d);
    for (o, w) in out.iter().zip(&want) {
        assert!((*o as f64 - w).abs() < 1e-5, "{o} vs {w}");
    }
    for p in att.chunks_exact(t * t) {
        for i in 0..t {
            let row = &p[i * t..][..t];
            assert!(
                row[i + 1..].iter().all(|&x| x == 0.0),
                "masked entries must be 0"
            );
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
}

#[test]
fn attention_backward_matches_finite_differences() {
    let mut r = rng(9);
    for &(b, t, d) in &[(1, 1, 64), (2, 5, 128), (1, 12, 64)] {
        let nh = d / 64;
        let q = randn(&mut r, b * t * d, 1.0);
        let k = randn(&mut r, b * t * d, 1.0);
        let v = randn(&mut r, b * t * d, 1.0);
        let w = randn(&mut r, b * t * d, 1.0);
        let mut out = vec![0.0; b * t * d];
        let mut att = vec![0.0; b * nh * t * t];
        attention_forward(&q, &k, &v, &mut out, &mut att, b, t, d);
        let (mut dq, mut dk, mut dv) = (
            vec![f32::NAN; b * t * d],
            vec![f32::NAN; b * t * d],
            vec![f32::NAN; b * t * d],
        );
        attention_backward(&w, &q, &k, &v, &att, &mut dq, &mut dk, &mut dv, b, t, d);
        let loss = |q: &[f32], k: &[f32], v: &[f32]| {
            let mut out = vec![0.0; b * t * d];
            let mut att = vec![0.0; b * nh * t * t];
            attention_forward(q, k, v, &mut out, &mut att, b, t, d);
            dot(&w, &out)
        };
        assert_grad("attention dq", &q, &dq, |x| loss(x, &k, &v), 1e-2, &mut r);
        assert_grad("attention dk", &k, &dk, |x| loss(&q, x, &v), 1e-2, &mut r);
        assert_grad("attention dv", &v, &dv, |x| loss(&q, &k, x), 1e-2, &mut r);
    }
}

#[test]
fn attention_is_bitwise_independent_of_thread_count() {
    let mut r = rng(10);
    let (b, t, d) = (3, 40, 192);
    let nh = d / 64;
    let q = randn(&mut r, b * t * d, 1.0);
    let k = randn(&mut r, b * t * d, 1.0);
    let v = randn(&mut r, b * t * d, 1.0);
    let run = |threads| {
        in_pool(threads, || {
            let mut out = vec![0.0; b * t * d];
            let mut att = vec![0.0; b * nh * t * t];
            attention_forward(&q, &k, &v, &mut out, &mut att, b, t, d);
            let (mut dq, mut dk, mut dv) = (
                vec![0.0; b * t * d],
                vec![0.0; b * t * d],
                vec![0.0; b * t * d],
            );
            attention_backward(&v, &q, &k, &v, &att, &mut dq, &mut dk, &mut dv, b, t, d);
            (out, dq, dk, dv)
        })
    };
    assert_eq!(run(1), run(3));
}

// ---------------------------------------------------------------- gelu

#[test]
fn gelu_matches_formula_and_finite_differences() {
    let mut r = rng(11);
    let x = randn(&mut r, 300, 2.5);
    let mut out = vec![0.0; x.len()];
    gelu_forward(&x, &mut out);
    for (&o, &x) in out.iter().zip(&x) {
        let x = x as f64;
        let want = 0.5
            * x
            * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh());
        assert!((o as f64 - want).abs() < 1e-5 * (1.0 + want.abs()));
    }
    let w = randn(&mut r, x.len(), 1.0);
    let mut dx = vec![f32::NAN; x.len()];
    gelu_backward(&w, &x, &mut dx);
    let loss = |x: &[f32]| {
        let mut out = vec![0.0; x.len()];
        gelu_forward(x, &mut out);
        dot(&w, &out)
    };
    assert_grad("gelu dx", &x, &dx, loss, 1e-2, &mut r);
}

// ---------------------------------------------------------------- cross-entropy

#[test]
fn cross_entropy_matches_f64_and_masks_pad() {
    let mut r = rng(12);
    let (n, v) = (6, 37);
    let logits = randn(&mut r, n * v, 3.0);
    let targets: Vec<u16> = vec![5, 0, 36, 1, 0, 17];
    let mut want = 0.0f64;
    for (i, &t) in targets.iter().enumerate() {
        if t == 0 {
            continue;
        }
        let row = &logits[i * v..][..v];
        let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
        want += z.ln() - row[t as usize] as f64;
    }
    let mut dl = vec![f32::NAN; n * v];
    let loss = cross_entropy_forward_backward(&logits, &targets, Some(&mut dl), v);
    assert_eq!(loss.count, 4);
    assert!(
        (loss.sum - want).abs() < 1e-5 * want.abs(),
        "{} vs {want}",
        loss.sum
    );
    assert_eq!(
        cross_entropy_forward_backward(&logits, &targets, None, v),
        loss
    );
    for i in [1, 4] {
        assert!(
            dl[i * v..][..v].iter().all(|&g| g == 0.0),
            "pad rows have no gradient"
        );
    }
    for i in [0, 2, 3, 5] {
        assert!(
            dl[i * v..][..v].iter().sum::<f32>().abs() < 1e-5,
            "softmax − onehot sums to 0"
        );
    }
    // the in-place variant is the same computation
    let mut inplace = logits.clone();
    assert_eq!(cross_entropy_in_place(&mut inplace, &targets, v), loss);
    assert_eq!(inplace, dl);
}

#[test]
fn cross_entropy_paths_agree_bitwise_on_long_rows() {
    let mut r = rng(18);
    let (n, v) = (5, 32101);
    let logits = randn(&mut r, n * v, 4.0);
    let targets: Vec<u16> = vec![7, 32100, 0, 1, 20000];
    let loss = cross_entropy_forward_backward(&logits, &targets, None, v);
    let mut dl = vec![0.0; n * v];
    assert_eq!(
        cross_entropy_forward_backward(&logits, &targets, Some(&mut dl), v),
        loss
    );
    let mut want = 0.0f64;
    for (i, &t) in targets.iter().enumerate().filter(|(_, &t)| t != 0) {
        let row = &logits[i * v..][..v];
        let mx = row.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
        let z: f64 = row.iter().map(|&x| (x as f64 - mx).exp()).sum();
        want += z.ln() + mx - row[t as usize] as f64;
        let p_t = (row[t as usize] as f64 - mx).exp() / z;
        assert!((dl[i * v + t as usize] as f64 - (p_t - 1.0)).abs() < 1e-6);
    }
    assert!(
        (loss.sum - want).abs() < 1e-6 * want,
        "{} vs {want}",
        loss.sum
    );
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let mut r = rng(13);
    for &(n, v) in &[(3, 5), (4, 50), (2, 1001)] {
        let logits = randn(&mut r, n * v, 2.0);
        let targets: Vec<u16> = (0..n)
            .map(|i| {
                if i == 1 {
                    0
                } else {
                    r.random_range(1..v as u16)
                }
            })
            .collect();
        let mut dl = vec![0.0; n * v];
        cross_entropy_forward_backward(&logits, &targets, Some(&mut dl), v);
        let loss = |x: &[f32]| cross_entropy_forward_backward(x, &targets, None, v).sum;
        assert_grad("cross_entropy dlogits", &logits, &dl, loss, 1e-2, &mut r);
    }
}

// ---------------------------------------------------------------- embedding

#[test]
fn embedding_gathers_and_scatters_with_repeats() {
    let mut r = rng(14);
    let (v, d) = (7, 5);
    let embed = randn(&mut r, v * d, 1.0);
    let tokens: Vec<u16> = vec![3, 0, 3, 6, 3];
    let mut out = vec![0.0; tokens.len() * d];
    embedding_forward(&embed, &tokens, &mut out, d);
    assert_eq!(&out[..d], &embed[3 * d..4 * d]);
    assert_eq!(&out[3 * d..4 * d], &embed[6 * d..7 * d]);
    let w = randn(&mut r, tokens.len() * d, 1.0);
    let mut de = vec![0.0; v * d];
    embedding_backward(&w, &tokens, &mut de, d);
    let loss = |e: &[f32]| {
        let mut out = vec![0.0; tokens.len() * d];
        embedding_forward(e, &tokens, &mut out, d);
        dot(&w, &out)
    };
    assert_grad("embedding dembed", &embed, &de, loss, 1e-2, &mut r);
    assert!(
        de[d..2 * d].iter().all(|&g| g == 0.0),
        "unused rows get nothing"
    );
    let de1 = de.clone();
    embedding_backward(&w, &tokens, &mut de, d);
    assert!(de
        .iter()
        .zip(&de1)
        .all(|(a, b)| (a - 2.0 * b).abs() <= 1e-6 * (1.0 + b.abs())));
}

// ---------------------------------------------------------------- adamw / norm

fn hp(step: u64, mode: DecayMode) -> AdamWStep {
    AdamWStep {
        step,
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        decay_mode: mode,
        grad_scale: 0.5,
    }
}

#[test]
fn adamw_matches_f64_reference() {
    let mut r = rng(15);
    for mode in [DecayMode::Coupled, DecayMode::Independent] {
        for decay in [true, false] {
            let n = 40_000; // spans several parallel chunks
            let mut p = randn(&mut r, n, 1.0);
            let mut m = vec![0.0f32; n];
            let mut v = vec![0.0f32; n];
            let (mut p64, mut m64, mut v64): (Vec<f64>, Vec<f64>, Vec<f64>) = (
                p.iter().map(|&x| x as f64).collect(),
                vec![0.0; n],
                vec![0.0; n],
            );
            for step in 1..=3 {
                let g = randn(&mut r, n, 1.0);
                let h = hp(step, mode);
                adamw_update(&mut p, &g, &mut m, &mut v, &h, decay);
                let wd = if decay { 0.1 } else { 0.0 };
                for i in 0..n {
                    let gi = g[i] as f64 * 0.5;
                    m64[i] = 0.9 * m64[i] + 0.1 * gi;
                    v64[i] = 0.95 * v64[i] + 0.05 * gi * gi;
                    let mh = m64[i] / (1.0 - 0.9f64.powi(step as i32));
                    let vh = v64[i] / (1.0 - 0.95f64.powi(step as i32));
                    let u = mh / (vh.sqrt() + 1e-8);
                    p64[i] = match mode {
                        DecayMode::Coupled => p64[i] - 1e-2 * (u + wd * p64[i]),
                        DecayMode::Independent => p64[i] - 1e-2 * u - wd * p64[i],
                    };
                }
            }
            for i in 0..n {
                assert!(
                    (p[i] as f64 - p64[i]).abs() < 1e-5 * (1.0 + p64[i].abs()),
                    "{mode:?} decay={decay} [{i}]: {} vs {}",
                    p[i],
                    p64[i]
                );
            }
        }
    }
}

#[test]
fn adamw_first_step_moves_by_lr_times_sign() {
    let mut p = vec![1.0f32, -2.0, 0.5];
    let g = vec![3.0f32, -0.01, 0.0];
    let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
    let mut h = hp(1, DecayMode::Coupled);
    h.eps = 1e-20;
    adamw_update(&mut p, &g, &mut m, &mut v, &h, false);
    assert!(
        (p[0] - 0.99).abs() < 1e-6 && (p[1] + 1.99).abs() < 1e-6 && p[2] == 0.5,
        "{p:?}"
    );
}

#[test]
fn global_norm_is_exact_and_thread_independent() {
    let mut r = rng(16);
    let x = randn(&mut r, 100_003, 1.0);
    let want = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
    let got = global_norm(&x);
    assert!((got - want).abs() < 1e-10 * want);
    assert_eq!(
        in_pool(1, || global_norm(&x)).to_bits(),
        in_pool(3, || global_norm(&x)).to_bits()
    );
    assert_eq!(global_norm(&[3.0, 4.0]), 5.0);
}

// ---------------------------------------------------------------- the checker itself

#[test]
fn finite_difference_check_rejects_wrong_gradients() {
    let mut r = rng(17);
    let (n, c) = (3, 16);
    let x = randn(&mut r, n * c, 1.0);
    let scale = vec![1.0f32; c];
    let w = randn(&mut r, n * c, 1.0);
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    layernorm_forward(&x, &scale, &mut out, &mut mean, &mut rstd, c);
    let mut dx = vec![0.0; n * c];
    let mut dscale = vec![0.0; c];
    layernorm_backward(&w, &x, &scale, &mean, &rstd, &mut dx, &mut dscale, c);
    let loss = |x: &[f32]| {
        let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        layernorm_forward(x, &scale, &mut out, &mut mean, &mut rstd, c);
        dot(&w, &out)
    };
    assert!(check_grad("ok", &x, &dx, loss, 1e-2, 100, &mut r).is_ok());
    // the gradient of the un-normalised map (dout·scale) is wrong for LayerNorm
    let naive = w.clone();
    assert!(check_grad("naive", &x, &naive, loss, 1e-2, 100, &mut r).is_err());
    let scaled: Vec<f32> = dx.iter().map(|g| g * 1.1).collect();
    assert!(check_grad("scaled", &x, &scaled, loss, 1e-2, 100, &mut r).is_err());
    let mut flipped = dx.clone();
    flipped[7] = -flipped[7] + 0.1;
    assert!(check_grad("flipped", &x, &flipped, loss, 1e-2, 100, &mut r).is_err());
}
