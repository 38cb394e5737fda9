//! Test cases of the CUDA kernels (tests/device/device_kernels.rs, run on the emulated device and on a GPU):
//! shapes (including sizes that are not multiples of the block or tile size), seeded input generators,
//! tolerance checks and the host-side CSR the embedding backward needs.
//!
//! Every shape function takes `gpu`: the shapes every device runs (small enough for the CPU emulator),
//! plus, when `gpu` is true, larger ones that only a GPU runs (model-sized rows, vocabularies, counts).
#![allow(dead_code, non_snake_case)]

use half::bf16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seeded RNG for a case.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` uniform values in `[lo, hi)`.
pub fn uniform(r: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

/// Round to bf16 (nearest even) and back.
pub fn round_bf16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
}
/// To bf16.
pub fn to_bf16(x: &[f32]) -> Vec<bf16> {
    x.iter().map(|&v| bf16::from_f32(v)).collect()
}
/// From bf16.
pub fn from_bf16(x: &[bf16]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}

/// Elementwise `|got − want| <= atol + rtol·|want|`; NaN or infinity never passes.
pub fn check_close(
    what: &str,
    got: &[f32],
    want: &[f32],
    rtol: f32,
    atol: f32,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} values, expected {}",
            got.len(),
            want.len()
        ));
    }
    let mut worst: Option<(usize, f32)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let ok = g.is_finite() && err <= atol + rtol * w.abs();
        if !ok {
            let excess = if g.is_finite() {
                err / (atol + rtol * w.abs())
            } else {
                f32::INFINITY
            };
            if worst.is_none_or(|(_, e)| excess > e) {
                worst = Some((i, excess));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => Err(format!(
            "{what}: element {i}: got {} want {} (rtol {rtol}, atol {atol})",
            got[i], want[i]
        )),
    }
}

/// A NaN-poisoned f32 buffer (outputs are poisoned before every launch).
pub fn poison(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}
/// A NaN-poisoned bf16 buffer.
pub fn poison_bf16(n: usize) -> Vec<bf16> {
    vec![bf16::NAN; n]
}

/// Elementwise kernels: element counts.
pub fn elementwise_cases(gpu: bool) -> Vec<usize> {
    let mut v = vec![1, 255, 1000, 4097];
    if gpu {
        // More elements than a grid of 65535 blocks covers in one pass (grid-stride loop).
        v.push((1 << 24) + 3);
    }
    v
}

/// LayerNorm: (rows n, width c).
pub fn layernorm_cases(gpu: bool) -> Vec<(usize, usize)> {
    let mut v = vec![(1, 64), (7, 96), (33, 200), (130, 512)];
    if gpu {
        v.extend([(4 * 512 + 5, 1024), (1000, 2048)]);
    }
    v
}

/// Embedding: (vocab v, width d, tokens n).
pub fn embedding_cases(gpu: bool) -> Vec<(usize, usize, usize)> {
    let mut v = vec![(50, 64, 1), (50, 100, 37), (300, 64, 300)];
    if gpu {
        v.push((32101, 512, 8 * 512));
    }
    v
}

/// Cross-entropy: (rows n, vocab v, row length ld >= v, block size). Padded rows as the backend uses them
/// (ld a multiple of 128), unpadded ones with odd lengths, and small blocks for many column stretches per
/// row (the in-place bf16 gradient must never overwrite a logit before it is read).
pub fn cross_entropy_cases(gpu: bool) -> Vec<(usize, usize, usize, u32)> {
    let mut v = vec![
        (5, 10, 10, 32),
        (4, 700, 701, 64),
        (9, 1000, 1024, 256),
        (3, 32101, 32128, 1024),
    ];
    if gpu {
        v.push((512 + 3, 32101, 32128, 1024));
        v.push((7, 32101, 32101, 1024));
    }
    v
}

/// Targets for `n` rows over `v` ids: about one in four is the pad id 0, ids 1..v otherwise; row 0 is
/// never pad.
pub fn targets(r: &mut ChaCha8Rng, n: usize, v: usize) -> Vec<u16> {
    (0..n)
        .map(|i| {
            if i > 0 && r.random_range(0..4) == 0 {
                0
            } else {
                r.random_range(1..v) as u16
            }
        })
        .collect()
}

/// AdamW: element counts.
pub fn adamw_cases(gpu: bool) -> Vec<usize> {
    let mut v = vec![1, 1000, 3333];
    if gpu {
        v.push((1 << 24) + 1);
    }
    v
}

/// Reductions: (element count, partial blocks P).
pub fn reduce_cases(gpu: bool) -> Vec<(usize, usize)> {
    let mut v = vec![(1, 1), (1000, 7), (100_003, 13), (50_000, 264)];
    if gpu {
        v.push((10_000_019, 264));
    }
    v
}

/// CSR of token positions by id, for embedding_backward_f32: (distinct ids ascending, offsets (len+1),
/// positions grouped by id, ascending within each id).
pub fn embedding_csr(tokens_N: &[u16]) -> (Vec<u16>, Vec<i32>, Vec<i32>) {
    let mut order: Vec<(u16, i32)> = tokens_N
        .iter()
        .enumerate()
        .map(|(i, &t)| (t, i as i32))
        .collect();
    order.sort_unstable();
    let mut ids = Vec::new();
    let mut offsets = vec![0i32];
    let mut positions = Vec::with_capacity(order.len());
    for (k, &(t, p)) in order.iter().enumerate() {
        if k == 0 || order[k - 1].0 != t {
            if k > 0 {
                offsets.push(k as i32);
            }
            ids.push(t);
        }
        positions.push(p);
    }
    offsets.push(order.len() as i32);
    if order.is_empty() {
        offsets.truncate(1);
    }
    (ids, offsets, positions)
}

/// Blocks for an elementwise (grid-stride) kernel of `n` elements with 256-thread blocks.
pub fn elementwise_grid(n: usize) -> u32 {
    n.div_ceil(256).clamp(1, 65535) as u32
}
