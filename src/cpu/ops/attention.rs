//! Causal multi-head attention core: per (batch, head), `P = softmax(q·kᵀ·0.125)` with the causal
//! mask, `out = P·v`. `q`, `k`, `v`, `out` are `[B·T, D]` rows; head `h` is columns `h·64..h·64+64`.
//! The probabilities are saved as `att_BxHxTxT` (zero above the diagonal) for the backward.
//!
//! Each (batch, head) is one parallel task built from sgemm calls on strided views.

use super::send_ptr::SendPtr;
use crate::model::config::HEAD_DIM;
use matrixmultiply::sgemm;
use rayon::prelude::*;

/// 1/√64.
const SCALE: f32 = 0.125;

fn check_shapes(b: usize, t: usize, d: usize, bufs: &[(&str, usize)], att: usize) {
    assert!(
        d.is_multiple_of(HEAD_DIM),
        "attention: width {d} is not a multiple of 64"
    );
    for (what, len) in bufs {
        assert_eq!(*len, b * t * d, "attention: {what} size");
    }
    assert_eq!(att, b * (d / HEAD_DIM) * t * t, "attention: att size");
}

/// Forward: writes `out_BTxD` and `att_BxHxTxT`.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    q_BTxD: &[f32],
    k_BTxD: &[f32],
    v_BTxD: &[f32],
    out_BTxD: &mut [f32],
    att_BxHxTxT: &mut [f32],
    b: usize,
    t: usize,
    d: usize,
) {
    check_shapes(
        b,
        t,
        d,
        &[
            ("q", q_BTxD.len()),
            ("k", k_BTxD.len()),
            ("v", v_BTxD.len()),
            ("out", out_BTxD.len()),
        ],
        att_BxHxTxT.len(),
    );
    if b * t == 0 {
        return;
    }
    let nh = d / HEAD_DIM;
    let out = SendPtr::new(out_BTxD.as_mut_ptr());
    let ds = d as isize;
    att_BxHxTxT
        .par_chunks_mut(t * t)
        .enumerate()
        .for_each(|(bh, p)| {
            let off = (bh / nh) * t * d + (bh % nh) * HEAD_DIM;
            // SAFETY: the head views (T rows of stride D, 64 columns from `off`) lie inside the
            // checked [B·T, D] buffers; each task writes only its own head block of `out`.
            unsafe {
                // S = 0.125 · Q·Kᵀ  (Kᵀ: rows are k's columns → rs 1, cs D)
                sgemm(
                    t,
                    HEAD_DIM,
                    t,
                    SCALE,
                    q_BTxD.as_ptr().add(off),
                    ds,
                    1,
                    k_BTxD.as_ptr().add(off),
                    1,
                    ds,
                    0.0,
                    p.as_mut_ptr(),
                    t as isize,
                    1,
                );
            }
            for (i, row) in p.chunks_exact_mut(t).enumerate() {
                let (live, masked) = row.split_at_mut(i + 1);
                let max = live.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
                let mut sum = 0.0f32;
                for x in live.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                let inv = 1.0 / sum;
                live.iter_mut().for_each(|x| *x *= inv);
                masked.fill(0.0);
            }
            // SAFETY: as above.
            unsafe {
                sgemm(
                    t,
                    t,
                    HEAD_DIM,
                    1.0,
                    p.as_ptr(),
                    t as isize,
                    1,
                    v_BTxD.as_ptr().add(off),
                    ds,
                    1,
                    0.0,
                    out.get().add(off),
                    ds,
                    1,
                );
            }
        });
}

/// Backward: writes `dq`, `dk`, `dv` (`=`) from `dout` and the saved probabilities.
///
/// `dv = Pᵀ·dout`, `dP = dout·vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dq = 0.125·dS·k`,
/// `dk = 0.125·dSᵀ·q`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dout_BTxD: &[f32],
    q_BTxD: &[f32],
    k_BTxD: &[f32],
    v_BTxD: &[f32],
    att_BxHxTxT: &[f32],
    dq_BTxD: &mut [f32],
    dk_BTxD: &mut [f32],
    dv_BTxD: &mut [f32],
    b: usize,
    t: usize,
    d: usize,
) {
    check_shapes(
        b,
        t,
        d,
        &[
            ("dout", dout_BTxD.len()),
            ("q", q_BTxD.len()),
            ("k", k_BTxD.len()),
            ("v", v_BTxD.len()),
            ("dq", dq_BTxD.len()),
            ("dk", dk_BTxD.len()),
            ("dv", dv_BTxD.len()),
        ],
        att_BxHxTxT.len(),
    );
    if b * t == 0 {
        return;
    }
    let nh = d / HEAD_DIM;
    let (dq, dk, dv) = (
        SendPtr::new(dq_BTxD.as_mut_ptr()),
        SendPtr::new(dk_BTxD.as_mut_ptr()),
        SendPtr::new(dv_BTxD.as_mut_ptr()),
    );
    let (ds, ts) = (d as isize, t as isize);
    att_BxHxTxT.par_chunks(t * t).enumerate().for_each_init(
        || vec![0.0f32; t * t],
        |dp, (bh, p)| {
            let off = (bh / nh) * t * d + (bh % nh) * HEAD_DIM;
            let dout = dout_BTxD.as_ptr();
            // SAFETY: head views lie inside the checked buffers; each task writes only its own
            // head block of dq, dk, dv; `dp` is a private T×T scratch.
            unsafe {
                // dv = Pᵀ·dout
                sgemm(
                    t,
                    t,
                    HEAD_DIM,
                    1.0,
                    p.as_ptr(),
                    1,
                    ts,
                    dout.add(off),
                    ds,
                    1,
                    0.0,
                    dv.get().add(off),
                    ds,
                    1,
                );
                // dP = dout·vᵀ
                sgemm(
                    t,
                    HEAD_DIM,
                    t,
                    1.0,
                    dout.add(off),
                    ds,
                    1,
                    v_BTxD.as_ptr().add(off),
                    1,
                    ds,
                    0.0,
                    dp.as_mut_ptr(),
                    ts,
                    1,
                );
            }
            for (dprow, prow) in dp.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                let dot: f32 = dprow.iter().zip(prow).map(|(a, b)| a * b).sum();
                for (g, &pv) in dprow.iter_mut().zip(prow) {
                    *g = pv * (*g - dot);
                }
            }
            // SAFETY: as above.
            unsafe {
                // dq = 0.125·dS·k
                sgemm(
                    t,
                    t,
                    HEAD_DIM,
                    SCALE,
                    dp.as_ptr(),
                    ts,
                    1,
                    k_BTxD.as_ptr().add(off),
                    ds,
                    1,
                    0.0,
                    dq.get().add(off),
                    ds,
                    1,
                );
                // dk = 0.125·dSᵀ·q
                sgemm(
                    t,
                    t,
                    HEAD_DIM,
                    SCALE,
                    dp.as_ptr(),
                    1,
                    ts,
                    q_BTxD.as_ptr().add(off),
                    ds,
                    1,
                    0.0,
                    dk.get().add(off),
                    ds,
                    1,
                );
            }
        },
    );
}
