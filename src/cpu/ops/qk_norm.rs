//! QK-Norm: LayerNorm without bias over each 64-wide head slice of a `[N, D]` buffer (`D = H·64`),
//! with one `[64]` scale shared by all heads. The statistics are per (row, head): `[N·H]`, row-major.
//!
//! Head `h` of row `n` is the contiguous slice `x[n·D + h·64 ..][..64]`, so `[N, D]` read as
//! `[N·H, 64]` is exactly the list of head slices: this is LayerNorm with `c = 64`.

use super::layernorm::{layernorm_backward, layernorm_forward};
use crate::model::config::HEAD_DIM;

/// Forward: writes `out_NxD`, `mean_NH`, `rstd_NH`.
pub fn qk_norm_forward(
    x_NxD: &[f32],
    scale_64: &[f32],
    out_NxD: &mut [f32],
    mean_NH: &mut [f32],
    rstd_NH: &mut [f32],
    d: usize,
) {
    assert!(
        d.is_multiple_of(HEAD_DIM),
        "qk_norm_forward: width {d} is not a multiple of 64"
    );
    assert_eq!(
        mean_NH.len() * HEAD_DIM,
        x_NxD.len(),
        "qk_norm_forward: stats size"
    );
    layernorm_forward(x_NxD, scale_64, out_NxD, mean_NH, rstd_NH, HEAD_DIM);
}

/// Backward: writes `dx_NxD` (`=`), accumulates `dscale_64` (`+=`) over every row and head.
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_backward(
    dout_NxD: &[f32],
    x_NxD: &[f32],
    scale_64: &[f32],
    mean_NH: &[f32],
    rstd_NH: &[f32],
    dx_NxD: &mut [f32],
    dscale_64: &mut [f32],
    d: usize,
) {
    assert!(
        d.is_multiple_of(HEAD_DIM),
        "qk_norm_backward: width {d} is not a multiple of 64"
    );
    assert_eq!(
        mean_NH.len() * HEAD_DIM,
        x_NxD.len(),
        "qk_norm_backward: stats size"
    );
    layernorm_backward(
        dout_NxD, x_NxD, scale_64, mean_NH, rstd_NH, dx_NxD, dscale_64, HEAD_DIM,
    );
}
