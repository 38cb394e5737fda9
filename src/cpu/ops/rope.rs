//! Rotary position embedding, rotate-half form, on every 64-wide head of `[B·T, D]` rows.
//!
//! Row `r` sits at position `p = r mod T`. In each head, dims `i` and `i + 32` (i < 32) rotate by
//! `p·θ_i` with `θ_i = ROPE_BASE^(−2i/64)`: `out[i] = x[i]·cos − x[i+32]·sin`,
//! `out[i+32] = x[i+32]·cos + x[i]·sin`.

use crate::model::config::{HEAD_DIM, ROPE_BASE};
use rayon::prelude::*;

const HALF: usize = HEAD_DIM / 2;
/// Rows per parallel task.
const ROWS_PER_CHUNK: usize = 64;

/// The rotation tables `(cos, sin)`, each `[T, 32]`: entry `[p, i]` is `cos/sin(p·θ_i)`.
///
/// Angles and trigonometry are evaluated in f64 and rounded once to f32, so a kernel that uploads
/// these tables reproduces the reference exactly.
pub fn rope_cos_sin(t: usize) -> (Vec<f32>, Vec<f32>) {
    let mut cos = vec![0.0f32; t * HALF];
    let mut sin = vec![0.0f32; t * HALF];
    for p in 0..t {
        for i in 0..HALF {
            let theta = (ROPE_BASE as f64).powf(-2.0 * i as f64 / HEAD_DIM as f64);
            let angle = p as f64 * theta;
            cos[p * HALF + i] = angle.cos() as f32;
            sin[p * HALF + i] = angle.sin() as f32;
        }
    }
    (cos, sin)
}

/// Rotate every head of every row by `sign·angle` (sign −1 is the inverse/transposed rotation).
fn rotate(x: &[f32], out: &mut [f32], b: usize, t: usize, d: usize, inverse: bool) {
    assert!(
        d.is_multiple_of(HEAD_DIM),
        "rope: width {d} is not a multiple of 64"
    );
    assert_eq!(x.len(), b * t * d, "rope: input size");
    assert_eq!(out.len(), b * t * d, "rope: output size");
    let (cos, sin) = rope_cos_sin(t);
    let s = if inverse { -1.0f32 } else { 1.0 };
    out.par_chunks_mut(ROWS_PER_CHUNK * d)
        .zip(x.par_chunks(ROWS_PER_CHUNK * d))
        .enumerate()
        .for_each(|(ci, (out, x))| {
            for (ri, (orow, xrow)) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)).enumerate() {
                let p = (ci * ROWS_PER_CHUNK + ri) % t;
                let (c, sn) = (&cos[p * HALF..][..HALF], &sin[p * HALF..][..HALF]);
                for (oh, xh) in orow
                    .chunks_exact_mut(HEAD_DIM)
                    .zip(xrow.chunks_exact(HEAD_DIM))
                {
                    for i in 0..HALF {
                        let (x0, x1) = (xh[i], xh[i + HALF]);
                        let si = s * sn[i];
                        oh[i] = x0 * c[i] - x1 * si;
                        oh[i + HALF] = x1 * c[i] + x0 * si;
                    }
                }
            }
        });
}

/// Forward: `out = R(p)·x` per head.
pub fn rope_forward(x_BTxD: &[f32], out_BTxD: &mut [f32], b: usize, t: usize, d: usize) {
    rotate(x_BTxD, out_BTxD, b, t, d, false);
}

/// Backward: `dx = R(p)ᵀ·dout` (`=`), the rotation by the opposite angle.
pub fn rope_backward(dout_BTxD: &[f32], dx_BTxD: &mut [f32], b: usize, t: usize, d: usize) {
    rotate(dout_BTxD, dx_BTxD, b, t, d, true);
}
