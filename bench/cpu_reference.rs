//! Criterion benches of the CPU reference backend: one training step of the `tiny` preset
//! (D=64, L=2, T=128, V=32101, 8 sequences) and the forward of its dominant ops.

use criterion::{criterion_group, criterion_main, Criterion};
use isoflop::backend::{AdamWStep, Backend, TokenBatch};
use isoflop::cpu::ops::{
    attention_forward, cross_entropy_in_place, matmul_backward, matmul_forward, OutMode,
};
use isoflop::cpu::CpuBackend;
use isoflop::cuda::kernel_bench::bench_adamw_step;
use isoflop::model::config::preset;
use isoflop::model::init_params;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

const B: usize = 8;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0..1.0)).collect()
}

fn train_step(c: &mut Criterion) {
    let cfg = preset("tiny").expect("tiny preset exists");
    let mut be = CpuBackend::new(cfg, init_params(&cfg, 0)).expect("valid params");
    let mut r = ChaCha8Rng::seed_from_u64(1);
    let toks: Vec<u16> = (0..B * (cfg.seq_len + 1))
        .map(|_| r.random_range(1..cfg.vocab_size as u16))
        .collect();
    let mut step = 0u64;
    c.bench_function(
        &format!("tiny train step (b={B}, {})", be.device()),
        |bch| {
            bch.iter(|| {
                step += 1;
                be.zero_grads().expect("a training backend");
                // Built inside the timed loop: the split and the checks are part of a step.
                let batch = TokenBatch::new(&cfg, &toks, B).expect("valid batch");
                let loss = be.forward_backward(&batch).expect("a batch of its model");
                // The kernel bench's AdamW hyperparameters, at this step and loss scale.
                let hp = AdamWStep {
                    step,
                    grad_scale: 1.0 / loss.count as f32,
                    ..bench_adamw_step()
                };
                be.adamw_step(&hp).expect("adamw");
                black_box(loss)
            })
        },
    );
}

fn big_ops(c: &mut Criterion) {
    let cfg = preset("tiny").expect("tiny preset exists");
    let (n, d, v, t) = (B * cfg.seq_len, cfg.d_model, cfg.vocab_size, cfg.seq_len);
    let x = random(n * d, 2);
    let head = random(d * v, 3);
    let mut logits = vec![0.0f32; n * v];
    c.bench_function("head matmul forward 1024x64 · 64x32101", |bch| {
        bch.iter(|| matmul_forward(&x, &head, &mut logits, n, d, v, OutMode::Overwrite))
    });
    let mut dx = vec![0.0f32; n * d];
    let mut dhead = vec![0.0f32; d * v];
    c.bench_function("head matmul backward 1024x64 · 64x32101", |bch| {
        bch.iter(|| matmul_backward(&logits, &x, &head, &mut dx, &mut dhead, n, d, v))
    });
    let targets: Vec<u16> = (0..n).map(|i| (i % (v - 1) + 1) as u16).collect();
    let src = random(n * v, 4);
    c.bench_function("cross-entropy in place 1024x32101", |bch| {
        bch.iter(|| {
            logits.copy_from_slice(&src);
            black_box(cross_entropy_in_place(&mut logits, &targets, v))
        })
    });
    let (q, k, vv) = (random(n * d, 5), random(n * d, 6), random(n * d, 7));
    let mut out = vec![0.0f32; n * d];
    let mut att = vec![0.0f32; B * (d / 64) * t * t];
    c.bench_function("attention forward b=8 T=128 D=64", |bch| {
        bch.iter(|| attention_forward(&q, &k, &vv, &mut out, &mut att, B, t, d))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = train_step, big_ops
}
criterion_main!(benches);
