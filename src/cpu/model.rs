//! The whole model composed from the ops: forward (saving activations) and backward (accumulating
//! parameter gradients into a flat buffer in `ParamLayout` order).

use super::activations::{Activations, Scratch};
use super::ops::matmul::{matmul_backward_a, matmul_backward_b};
use super::ops::*;
use crate::model::{ModelConfig, ParamLayout, HEAD_DIM};
use OutMode::{Accumulate, Overwrite};

/// Shapes of one pass.
#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub b: usize,
    pub t: usize,
    pub d: usize,
    pub v: usize,
    pub n: usize,
}

impl Dims {
    pub fn new(cfg: &ModelConfig, b: usize) -> Self {
        Dims {
            b,
            t: cfg.seq_len,
            d: cfg.d_model,
            v: cfg.vocab_size,
            n: b * cfg.seq_len,
        }
    }
}

/// Forward pass of the input ids `inputs_BxT` up to the logits (`acts.logits[..N·V]`), saving what the
/// backward needs.
pub(crate) fn forward(
    lay: &ParamLayout,
    p: &[f32],
    inputs_BxT: &[u16],
    dm: Dims,
    acts: &mut Activations,
) {
    let Dims { b, t, d, v, n } = dm;
    let (nd, nf, nh) = (n * d, n * 4 * d, n * (d / HEAD_DIM));
    let (dd, df) = (d * d, d * 4 * d);
    embedding_forward(
        &p[lay.embed..][..v * d],
        &inputs_BxT[..n],
        &mut acts.resid[0][..nd],
        d,
    );
    for (l, (bo, la)) in lay.blocks.iter().zip(acts.layers.iter_mut()).enumerate() {
        let (before, after) = acts.resid.split_at_mut(l + 1);
        let x = &before[l][..nd];
        let out = &mut after[0][..nd];
        let tmp = &mut acts.scratch.t1[..nd];
        layernorm_forward(
            x,
            &p[bo.ln1..][..d],
            &mut la.xn1[..nd],
            &mut la.mean1[..n],
            &mut la.rstd1[..n],
            d,
        );
        let xn1 = &la.xn1[..nd];
        matmul_forward(xn1, &p[bo.wq..][..dd], &mut la.q[..nd], n, d, d, Overwrite);
        matmul_forward(xn1, &p[bo.wk..][..dd], &mut la.k[..nd], n, d, d, Overwrite);
        matmul_forward(xn1, &p[bo.wv..][..dd], &mut la.v[..nd], n, d, d, Overwrite);
        let (q_stats, k_stats) = (
            (&mut la.q_mean, &mut la.q_rstd),
            (&mut la.k_mean, &mut la.k_rstd),
        );
        for (x, scale, (mean, rstd), xr) in [
            (&la.q, bo.q_norm, q_stats, &mut la.qr),
            (&la.k, bo.k_norm, k_stats, &mut la.kr),
        ] {
            // xr = rope(qk_norm(x)), through tmp
            let scale = &p[scale..][..HEAD_DIM];
            qk_norm_forward(&x[..nd], scale, tmp, &mut mean[..nh], &mut rstd[..nh], d);
            rope_forward(tmp, &mut xr[..nd], b, t, d);
        }
        let att_len = b * (d / HEAD_DIM) * t * t;
        attention_forward(
            &la.qr[..nd],
            &la.kr[..nd],
            &la.v[..nd],
            &mut la.y[..nd],
            &mut la.att[..att_len],
            b,
            t,
            d,
        );
        // h = x + y·wo
        la.h[..nd].copy_from_slice(x);
        matmul_forward(
            &la.y[..nd],
            &p[bo.wo..][..dd],
            &mut la.h[..nd],
            n,
            d,
            d,
            Accumulate,
        );
        layernorm_forward(
            &la.h[..nd],
            &p[bo.ln2..][..d],
            &mut la.xn2[..nd],
            &mut la.mean2[..n],
            &mut la.rstd2[..n],
            d,
        );
        matmul_forward(
            &la.xn2[..nd],
            &p[bo.w1..][..df],
            &mut la.u[..nf],
            n,
            d,
            4 * d,
            Overwrite,
        );
        gelu_forward(&la.u[..nf], &mut la.g[..nf]);
        // out = h + g·w2
        out.copy_from_slice(&la.h[..nd]);
        matmul_forward(&la.g[..nf], &p[bo.w2..][..df], out, n, 4 * d, d, Accumulate);
    }
    let last = &acts.resid[lay.blocks.len()][..nd];
    layernorm_forward(
        last,
        &p[lay.final_norm..][..d],
        &mut acts.xf[..nd],
        &mut acts.meanf[..n],
        &mut acts.rstdf[..n],
        d,
    );
    matmul_forward(
        &acts.xf[..nd],
        &p[lay.head..][..d * v],
        &mut acts.logits[..n * v],
        n,
        d,
        v,
        Overwrite,
    );
}

/// `a += b`, elementwise.
fn add_into(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(a, &b)| *a += b);
}

/// Backward of a block's pre-norm `xn = layernorm(x)` (scale at `p[scale..]`, row statistics `mean`,
/// `rstd`) from `dxn` in `s.t1`: the scale gradient is added to `g`, and `dx` (through `s.t2`) to
/// the residual gradient `s.dres`.
fn ln_backward_into_residual(
    x_NxD: &[f32],
    scale: usize,
    (mean_N, rstd_N): (&[f32], &[f32]),
    p: &[f32],
    g: &mut [f32],
    s: &mut Scratch,
    d: usize,
) {
    let nd = x_NxD.len();
    let (dxn, dx) = (&s.t1[..nd], &mut s.t2[..nd]);
    let (scale, dscale) = (&p[scale..][..d], &mut g[scale..][..d]);
    layernorm_backward(dxn, x_NxD, scale, mean_N, rstd_N, dx, dscale, d);
    add_into(&mut s.dres[..nd], dx);
}

/// Backward pass from the logit gradient stored in `acts.logits[..N·V]`; parameter gradients are
/// added to `g` (flat, layout order); `inputs_BxT` are the ids of the forward.
pub(crate) fn backward(
    lay: &ParamLayout,
    p: &[f32],
    g: &mut [f32],
    inputs_BxT: &[u16],
    dm: Dims,
    acts: &mut Activations,
) {
    let Dims { b, t, d, v, n } = dm;
    let (nd, nf, nh) = (n * d, n * 4 * d, n * (d / HEAD_DIM));
    let (dd, df) = (d * d, d * 4 * d);
    let s = &mut acts.scratch;
    let dlogits = &acts.logits[..n * v];
    // logits = xf·head
    matmul_backward_a(
        dlogits,
        &p[lay.head..][..d * v],
        &mut s.t1[..nd],
        n,
        d,
        v,
        Overwrite,
    );
    matmul_backward_b(
        dlogits,
        &acts.xf[..nd],
        &mut g[lay.head..][..d * v],
        n,
        d,
        v,
    );
    let last = &acts.resid[lay.blocks.len()][..nd];
    layernorm_backward(
        &s.t1[..nd],
        last,
        &p[lay.final_norm..][..d],
        &acts.meanf[..n],
        &acts.rstdf[..n],
        &mut s.dres[..nd],
        &mut g[lay.final_norm..][..d],
        d,
    );
    for (l, (bo, la)) in lay.blocks.iter().zip(acts.layers.iter()).enumerate().rev() {
        let x = &acts.resid[l][..nd];
        // out = h + g·w2 ; g = gelu(u) ; u = xn2·w1
        matmul_backward(
            &s.dres[..nd],
            &la.g[..nf],
            &p[bo.w2..][..df],
            &mut s.dg[..nf],
            &mut g[bo.w2..][..df],
            n,
            4 * d,
            d,
        );
        gelu_backward(&s.dg[..nf], &la.u[..nf], &mut s.du[..nf]);
        matmul_backward(
            &s.du[..nf],
            &la.xn2[..nd],
            &p[bo.w1..][..df],
            &mut s.t1[..nd],
            &mut g[bo.w1..][..df],
            n,
            d,
            4 * d,
        );
        let stats2 = (&la.mean2[..n], &la.rstd2[..n]);
        ln_backward_into_residual(&la.h[..nd], bo.ln2, stats2, p, g, s, d); // now dres = dh
                                                                            // h = x + y·wo
        matmul_backward(
            &s.dres[..nd],
            &la.y[..nd],
            &p[bo.wo..][..dd],
            &mut s.t1[..nd],
            &mut g[bo.wo..][..dd],
            n,
            d,
            d,
        );
        let att_len = b * (d / HEAD_DIM) * t * t;
        attention_backward(
            &s.t1[..nd],
            &la.qr[..nd],
            &la.kr[..nd],
            &la.v[..nd],
            &la.att[..att_len],
            &mut s.dqr[..nd],
            &mut s.dkr[..nd],
            &mut s.dv[..nd],
            b,
            t,
            d,
        );
        let tmp = &mut s.t2[..nd];
        for (dxr, x, scale, (mean, rstd), dx) in [
            (
                &s.dqr,
                &la.q,
                bo.q_norm,
                (&la.q_mean, &la.q_rstd),
                &mut s.dq,
            ),
            (
                &s.dkr,
                &la.k,
                bo.k_norm,
                (&la.k_mean, &la.k_rstd),
                &mut s.dk,
            ),
        ] {
            // backward of xr = rope(qk_norm(x)), through tmp
            rope_backward(&dxr[..nd], tmp, b, t, d);
            let (mean, rstd) = (&mean[..nh], &rstd[..nh]);
            let (scale, dscale) = (&p[scale..][..HEAD_DIM], &mut g[scale..][..HEAD_DIM]);
            qk_norm_backward(tmp, &x[..nd], scale, mean, rstd, &mut dx[..nd], dscale, d);
        }
        // q|k|v = xn1·wq|wk|wv
        let xn1 = &la.xn1[..nd];
        let dxn1 = &mut s.t1[..nd];
        matmul_backward_a(&s.dq[..nd], &p[bo.wq..][..dd], dxn1, n, d, d, Overwrite);
        matmul_backward_a(&s.dk[..nd], &p[bo.wk..][..dd], dxn1, n, d, d, Accumulate);
        matmul_backward_a(&s.dv[..nd], &p[bo.wv..][..dd], dxn1, n, d, d, Accumulate);
        matmul_backward_b(&s.dq[..nd], xn1, &mut g[bo.wq..][..dd], n, d, d);
        matmul_backward_b(&s.dk[..nd], xn1, &mut g[bo.wk..][..dd], n, d, d);
        matmul_backward_b(&s.dv[..nd], xn1, &mut g[bo.wv..][..dd], n, d, d);
        let stats1 = (&la.mean1[..n], &la.rstd1[..n]);
        ln_backward_into_residual(x, bo.ln1, stats1, p, g, s, d); // now dres = dx
    }
    embedding_backward(
        &s.dres[..nd],
        &inputs_BxT[..n],
        &mut g[lay.embed..][..v * d],
        d,
    );
}
