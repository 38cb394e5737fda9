//! One AdamW update of a parameter slice (bias-corrected moments, coupled or independent decay).

use crate::backend::{AdamWStep, DecayMode};
use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// Update `params` in place from `grads · hp.grad_scale`, advancing the moments `m` and `v`.
///
/// `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`, `u = m̂/(√v̂ + ε)` with `m̂ = m/(1−β1^t)`,
/// `v̂ = v/(1−β2^t)`; coupled: `p ← p − η·(u + λ·p)`, independent: `p ← p − η·u − λ·p`. Without
/// `decay`, λ = 0. A step number of 0 is treated as 1.
pub fn adamw_update(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    hp: &AdamWStep,
    decay: bool,
) {
    let n = params.len();
    assert!(
        grads.len() == n && m.len() == n && v.len() == n,
        "adamw_update: sizes differ"
    );
    let t = hp.step.max(1).min(i32::MAX as u64) as i32;
    let inv_bc1 = (1.0 / (1.0 - (hp.beta1 as f64).powi(t))) as f32;
    let inv_bc2 = (1.0 / (1.0 - (hp.beta2 as f64).powi(t))) as f32;
    let (b1, b2, eps, lr, gs) = (hp.beta1, hp.beta2, hp.eps, hp.lr, hp.grad_scale);
    let wd = if decay { hp.weight_decay } else { 0.0 };
    let mode = hp.decay_mode;
    params
        .par_chunks_mut(CHUNK)
        .zip(grads.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                let g = g * gs;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                let u = (*m * inv_bc1) / ((*v * inv_bc2).sqrt() + eps);
                *p = match mode {
                    DecayMode::Coupled => *p - lr * (u + wd * *p),
                    DecayMode::Independent => *p - lr * u - wd * *p,
                };
            }
        });
}
