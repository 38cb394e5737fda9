//! GELU, tanh approximation: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.

use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const COEF: f32 = 0.044715;

/// Forward, elementwise.
pub fn gelu_forward(x_N: &[f32], out_N: &mut [f32]) {
    assert_eq!(x_N.len(), out_N.len(), "gelu_forward: sizes differ");
    out_N
        .par_chunks_mut(CHUNK)
        .zip(x_N.par_chunks(CHUNK))
        .for_each(|(o, x)| {
            for (o, &x) in o.iter_mut().zip(x) {
                let u = SQRT_2_OVER_PI * (x + COEF * x * x * x);
                *o = 0.5 * x * (1.0 + u.tanh());
            }
        });
}

/// Backward: `dx = dout·gelu'(x)` (`=`).
pub fn gelu_backward(dout_N: &[f32], x_N: &[f32], dx_N: &mut [f32]) {
    assert_eq!(x_N.len(), dx_N.len(), "gelu_backward: sizes differ");
    assert_eq!(dout_N.len(), dx_N.len(), "gelu_backward: sizes differ");
    dx_N.par_chunks_mut(CHUNK)
        .zip(x_N.par_chunks(CHUNK))
        .zip(dout_N.par_chunks(CHUNK))
        .for_each(|((dx, x), dout)| {
            for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(dout) {
                let u = SQRT_2_OVER_PI * (x + COEF * x * x * x);
                let th = u.tanh();
                let du = SQRT_2_OVER_PI * (1.0 + 3.0 * COEF * x * x);
                *dx = g * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du);
            }
        });
}
