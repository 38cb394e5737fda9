//! LayerNorm without bias over rows of width `c`: `out = (x − mean)·rstd·scale`, with
//! `rstd = 1/√(var + LN_EPS)` and the biased variance.

use crate::model::config::LN_EPS;
use rayon::prelude::*;

/// Rows per parallel task (fixed, so that the `dscale` reduction order never depends on threads).
const ROWS_PER_CHUNK: usize = 64;

/// Normalise one row; returns `(mean, rstd)`.
#[inline]
fn row_forward(x: &[f32], scale: &[f32], out: &mut [f32]) -> (f32, f32) {
    let c = x.len() as f32;
    let mean = x.iter().sum::<f32>() / c;
    let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / c;
    let rstd = 1.0 / (var + LN_EPS).sqrt();
    for ((o, &v), &s) in out.iter_mut().zip(x).zip(scale) {
        *o = (v - mean) * rstd * s;
    }
    (mean, rstd)
}

/// Forward: writes `out_NxC` and the per-row statistics `mean_N`, `rstd_N` needed by the backward.
pub fn layernorm_forward(
    x_NxC: &[f32],
    scale_C: &[f32],
    out_NxC: &mut [f32],
    mean_N: &mut [f32],
    rstd_N: &mut [f32],
    c: usize,
) {
    let n = mean_N.len();
    assert!(c > 0 && scale_C.len() == c, "layernorm_forward: scale size");
    assert_eq!(x_NxC.len(), n * c, "layernorm_forward: x size");
    assert_eq!(out_NxC.len(), n * c, "layernorm_forward: out size");
    assert_eq!(rstd_N.len(), n, "layernorm_forward: rstd size");
    out_NxC
        .par_chunks_mut(ROWS_PER_CHUNK * c)
        .zip(x_NxC.par_chunks(ROWS_PER_CHUNK * c))
        .zip(mean_N.par_chunks_mut(ROWS_PER_CHUNK))
        .zip(rstd_N.par_chunks_mut(ROWS_PER_CHUNK))
        .for_each(|(((out, x), mean), rstd)| {
            for (((o, xr), m), r) in out
                .chunks_exact_mut(c)
                .zip(x.chunks_exact(c))
                .zip(mean.iter_mut())
                .zip(rstd.iter_mut())
            {
                (*m, *r) = row_forward(xr, scale_C, o);
            }
        });
}

/// Backward: writes `dx_NxC` (`=`) and accumulates `dscale_C` (`+=`).
///
/// With x̂ = (x − mean)·rstd and g = dout·scale: `dx = rstd·(g − mean(g) − x̂·mean(g·x̂))`,
/// `dscale = Σ_rows dout·x̂`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dout_NxC: &[f32],
    x_NxC: &[f32],
    scale_C: &[f32],
    mean_N: &[f32],
    rstd_N: &[f32],
    dx_NxC: &mut [f32],
    dscale_C: &mut [f32],
    c: usize,
) {
    let n = mean_N.len();
    assert!(
        c > 0 && scale_C.len() == c,
        "layernorm_backward: scale size"
    );
    assert_eq!(dscale_C.len(), c, "layernorm_backward: dscale size");
    assert_eq!(rstd_N.len(), n, "layernorm_backward: rstd size");
    for (what, len) in [
        ("dout", dout_NxC.len()),
        ("x", x_NxC.len()),
        ("dx", dx_NxC.len()),
    ] {
        assert_eq!(len, n * c, "layernorm_backward: {what} size");
    }
    let partials: Vec<Vec<f32>> = dx_NxC
        .par_chunks_mut(ROWS_PER_CHUNK * c)
        .zip(dout_NxC.par_chunks(ROWS_PER_CHUNK * c))
        .zip(x_NxC.par_chunks(ROWS_PER_CHUNK * c))
        .zip(mean_N.par_chunks(ROWS_PER_CHUNK))
        .zip(rstd_N.par_chunks(ROWS_PER_CHUNK))
        .map(|((((dx, dout), x), mean), rstd)| {
            let mut dscale = vec![0.0f32; c];
            for ((((dxr, dr), xr), &m), &r) in dx
                .chunks_exact_mut(c)
                .zip(dout.chunks_exact(c))
                .zip(x.chunks_exact(c))
                .zip(mean)
                .zip(rstd)
            {
                let mut sum_g = 0.0f32;
                let mut sum_gx = 0.0f32;
                for j in 0..c {
                    let xhat = (xr[j] - m) * r;
                    let g = dr[j] * scale_C[j];
                    sum_g += g;
                    sum_gx += g * xhat;
                    dscale[j] += dr[j] * xhat;
                }
                let mean_g = sum_g / c as f32;
                let mean_gx = sum_gx / c as f32;
                for j in 0..c {
                    let xhat = (xr[j] - m) * r;
                    dxr[j] = r * (dr[j] * scale_C[j] - mean_g - xhat * mean_gx);
                }
            }
            dscale
        })
        .collect();
    let mut total = vec![0.0f32; c];
    for p in &partials {
        for (t, &v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    for (g, t) in dscale_C.iter_mut().zip(total) {
        *g += t;
    }
}
