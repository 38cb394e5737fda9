//! Fused-attention test cases (shapes, inputs, the f32 reference, the launch sequence written against the
//! [`Launcher`] trait, and the comparison), run by tests/device/device_kernels.rs on the emulated device and on a
//! GPU.

use half::bf16;
use isoflop::cpu::ops::{
    attention_backward, attention_forward, qk_norm_backward, qk_norm_forward, rope_backward,
    rope_forward,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Tile size of the kernels (queries and keys per block).
pub const TILE: usize = 64;
/// Head dimension.
pub const HD: usize = 64;
/// Maximum error allowed relative to the largest reference magnitude: forward outputs.
pub const TOL_FORWARD: f64 = 1e-2;
/// Same for the gradients, which go through more bf16 roundings (normalised q/k, P, dS, outputs;
/// observed up to 6e-3 on these cases).
pub const TOL_BACKWARD: f64 = 1e-2;
/// The value the scale-gradient outputs hold before the backward (checks `+=`).
pub const DSCALE_PRIOR: f32 = 1.0;

/// One test shape.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Batch size.
    pub b: usize,
    /// Sequence length (any value >= 1; not necessarily a multiple of the tile).
    pub t: usize,
    /// Heads (width D = 64·h).
    pub h: usize,
}

impl Case {
    /// Width.
    pub fn d(&self) -> usize {
        self.h * HD
    }
    /// Tiles along the sequence.
    pub fn nt(&self) -> usize {
        self.t.div_ceil(TILE)
    }
}

/// The emulated shapes: a single row, a single partial tile, two heads, a ragged second tile with two sequences, and
/// three tiles (off-diagonal tiles in both backward loops).
pub fn cases() -> Vec<Case> {
    vec![
        Case { b: 1, t: 1, h: 1 },
        Case { b: 1, t: 16, h: 1 },
        Case { b: 1, t: 40, h: 2 },
        Case {
            b: 2,
            t: 64 + 7,
            h: 1,
        },
        Case {
            b: 1,
            t: 2 * 64 + 3,
            h: 2,
        },
    ]
}

/// Inputs of one case, values already representable in bf16.
pub struct Inputs {
    /// Pre-norm queries `[B·T, D]`.
    pub q: Vec<f32>,
    /// Pre-norm keys `[B·T, D]`.
    pub k: Vec<f32>,
    /// Values `[B·T, D]`.
    pub v: Vec<f32>,
    /// Upstream gradient of the attention output `[B·T, D]`.
    pub dout: Vec<f32>,
    /// QK-Norm scale of q `[64]`.
    pub q_scale: Vec<f32>,
    /// QK-Norm scale of k `[64]`.
    pub k_scale: Vec<f32>,
}

fn round_bf16(x: f32) -> f32 {
    bf16::from_f32(x).to_f32()
}

/// Deterministic inputs: rows with a non-zero mean and a spread (so QK-Norm matters), scales around 1.
pub fn inputs(c: &Case, seed: u64) -> Inputs {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = c.b * c.t * c.d();
    let normal = Normal::new(0.0f32, 1.0).expect("valid normal");
    let mut gen = |shift: f32, spread: f32| -> Vec<f32> {
        (0..n)
            .map(|_| round_bf16(shift + spread * normal.sample(&mut rng)))
            .collect()
    };
    let q = gen(0.3, 1.5);
    let k = gen(-0.2, 0.8);
    let v = gen(0.1, 1.0);
    let dout = gen(0.0, 1.0);
    let q_scale = (0..HD).map(|_| rng.random_range(0.5f32..1.5)).collect();
    let k_scale = (0..HD).map(|_| rng.random_range(0.5f32..1.5)).collect();
    Inputs {
        q,
        k,
        v,
        dout,
        q_scale,
        k_scale,
    }
}

/// Forward and backward results (f32; bf16 outputs widened).
#[derive(Clone, PartialEq)]
pub struct Outputs {
    /// Attention output `[B·T, D]`.
    pub out: Vec<f32>,
    /// Row logsumexp of the scaled scores `[B, H, T]` (natural log).
    pub lse: Vec<f32>,
    /// Gradient w.r.t. the pre-norm q `[B·T, D]`.
    pub dq: Vec<f32>,
    /// Gradient w.r.t. the pre-norm k `[B·T, D]`.
    pub dk: Vec<f32>,
    /// Gradient w.r.t. v `[B·T, D]`.
    pub dv: Vec<f32>,
    /// q_scale gradient `[64]` (after `+=` onto [`DSCALE_PRIOR`]).
    pub dq_scale: Vec<f32>,
    /// k_scale gradient `[64]` (after `+=` onto [`DSCALE_PRIOR`]).
    pub dk_scale: Vec<f32>,
}

/// The f32 reference: the CPU ops composed, plus the logsumexp from the normalised-rotated q, k.
pub fn reference(c: &Case, x: &Inputs) -> Outputs {
    let (b, t, d, h) = (c.b, c.t, c.d(), c.h);
    let n = b * t * d;
    let nh = b * t * h;
    let norm_rope = |src: &[f32], scale: &[f32]| {
        let (mut y, mut z) = (vec![0.0; n], vec![0.0; n]);
        let (mut mean, mut rstd) = (vec![0.0; nh], vec![0.0; nh]);
        qk_norm_forward(src, scale, &mut y, &mut mean, &mut rstd, d);
        rope_forward(&y, &mut z, b, t, d);
        (z, mean, rstd)
    };
    let (zq, mq, rq) = norm_rope(&x.q, &x.q_scale);
    let (zk, mk, rk) = norm_rope(&x.k, &x.k_scale);
    let mut out = vec![0.0; n];
    let mut att = vec![0.0; b * h * t * t];
    attention_forward(&zq, &zk, &x.v, &mut out, &mut att, b, t, d);

    let mut lse = vec![0.0f32; b * h * t];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..t {
                let qi = &zq[(bi * t + i) * d + hi * HD..][..HD];
                let s: Vec<f64> = (0..=i)
                    .map(|j| {
                        let kj = &zk[(bi * t + j) * d + hi * HD..][..HD];
                        qi.iter()
                            .zip(kj)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * 0.125
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                lse[(bi * h + hi) * t + i] =
                    (m + s.iter().map(|v| (v - m).exp()).sum::<f64>().ln()) as f32;
            }
        }
    }

    let (mut dzq, mut dzk, mut dv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    attention_backward(
        &x.dout, &zq, &zk, &x.v, &att, &mut dzq, &mut dzk, &mut dv, b, t, d,
    );
    let norm_rope_back = |dz: &[f32], src: &[f32], scale: &[f32], mean: &[f32], rstd: &[f32]| {
        let (mut dy, mut dx) = (vec![0.0; n], vec![0.0; n]);
        let mut dscale = vec![DSCALE_PRIOR; HD];
        rope_backward(dz, &mut dy, b, t, d);
        qk_norm_backward(&dy, src, scale, mean, rstd, &mut dx, &mut dscale, d);
        (dx, dscale)
    };
    let (dq, dq_scale) = norm_rope_back(&dzq, &x.q, &x.q_scale, &mq, &rq);
    let (dk, dk_scale) = norm_rope_back(&dzk, &x.k, &x.k_scale, &mk, &rk);
    Outputs {
        out,
        lse,
        dq,
        dk,
        dv,
        dq_scale,
        dk_scale,
    }
}

/// What a backend must provide to run the kernel sequence: buffers and launches by kernel name.
pub trait Launcher {
    /// A device (or emulated) buffer.
    type Buf;
    /// A bf16 buffer holding `data` rounded to bf16.
    fn bf16_from(&mut self, data: &[f32]) -> Self::Buf;
    /// An f32 buffer holding `data`.
    fn f32_from(&mut self, data: &[f32]) -> Self::Buf;
    /// A bf16 buffer of `n` NaNs.
    fn bf16_nan(&mut self, n: usize) -> Self::Buf;
    /// Launch `name` on `grid` × `block` (no dynamic shared memory); `args` in kernel order.
    fn launch(
        &mut self,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        args: &[Arg<'_, Self::Buf>],
    );
    /// The contents of a bf16 buffer, widened.
    fn read_bf16(&mut self, buf: &Self::Buf) -> Vec<f32>;
    /// The contents of an f32 buffer.
    fn read_f32(&mut self, buf: &Self::Buf) -> Vec<f32>;
}

/// A kernel argument.
pub enum Arg<'a, B> {
    /// A buffer (passed as its device pointer).
    Buf(&'a B),
    /// An `int` parameter.
    I32(i32),
}

/// Runs rope_table_init, the forward, the backward prep, the backward and the scale-gradient reduce
/// on `l`, every output poisoned with NaN first (the scale gradients start at [`DSCALE_PRIOR`]).
pub fn run_fused<L: Launcher>(l: &mut L, c: &Case, x: &Inputs) -> Outputs {
    let (b, t, h, d, nt) = (c.b, c.t, c.h, c.d(), c.nt());
    let n = b * t * d;
    let (bi, ti, hi) = (b as i32, t as i32, h as i32);
    let q = l.bf16_from(&x.q);
    let k = l.bf16_from(&x.k);
    let v = l.bf16_from(&x.v);
    let dout = l.bf16_from(&x.dout);
    let qs = l.f32_from(&x.q_scale);
    let ks = l.f32_from(&x.k_scale);
    let cs = l.f32_from(&vec![f32::NAN; t * 32 * 2]);
    let out = l.bf16_nan(n);
    let lse = l.f32_from(&vec![f32::NAN; b * h * t]);
    let delta = l.f32_from(&vec![f32::NAN; b * h * t]);
    let part = l.f32_from(&vec![f32::NAN; 2 * b * h * nt * HD]);
    let (dq, dk, dv) = (l.bf16_nan(n), l.bf16_nan(n), l.bf16_nan(n));
    let dqs = l.f32_from(&[DSCALE_PRIOR; HD]);
    let dks = l.f32_from(&[DSCALE_PRIOR; HD]);
    use Arg::{Buf as B, I32};

    l.launch(
        "rope_table_init",
        ((t * 32).div_ceil(256) as u32, 1, 1),
        256,
        &[B(&cs), I32(ti)],
    );
    l.launch(
        "attention_forward",
        (nt as u32, h as u32, b as u32),
        128,
        &[
            B(&out),
            B(&lse),
            B(&q),
            B(&k),
            B(&v),
            B(&qs),
            B(&ks),
            B(&cs),
            I32(bi),
            I32(ti),
            I32(hi),
        ],
    );
    l.launch(
        "attention_backward_prep",
        ((b * t * h * 8).div_ceil(256) as u32, 1, 1),
        256,
        &[B(&delta), B(&out), B(&dout), I32(bi), I32(ti), I32(hi)],
    );
    l.launch(
        "attention_backward",
        (2 * nt as u32, h as u32, b as u32),
        128,
        &[
            B(&dq),
            B(&dk),
            B(&dv),
            B(&part),
            B(&dout),
            B(&q),
            B(&k),
            B(&v),
            B(&lse),
            B(&delta),
            B(&qs),
            B(&ks),
            B(&cs),
            I32(bi),
            I32(ti),
            I32(hi),
        ],
    );
    l.launch(
        "qk_norm_scale_grad_reduce",
        (2, 1, 1),
        1024,
        &[B(&dqs), B(&dks), B(&part), I32((b * h * nt) as i32)],
    );
    Outputs {
        out: l.read_bf16(&out),
        lse: l.read_f32(&lse),
        dq: l.read_bf16(&dq),
        dk: l.read_bf16(&dk),
        dv: l.read_bf16(&dv),
        dq_scale: l.read_f32(&dqs),
        dk_scale: l.read_f32(&dks),
    }
}

/// Magnitudes below this count as this much in [`rel_err`] (a T = 1 sequence has exactly zero q and k
/// gradients, where the kernel leaves bf16 rounding noise of ~1e-7).
pub const MAGNITUDE_FLOOR: f64 = 1e-3;

/// Max |got − want| / max(max |want|, [`MAGNITUDE_FLOOR`]); NaN anywhere (or a length mismatch) gives
/// +inf.
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let scale = want
        .iter()
        .fold(0.0f64, |m, w| m.max(w.abs() as f64))
        .max(MAGNITUDE_FLOOR);
    let mut err = 0.0f64;
    for (g, w) in got.iter().zip(want) {
        let e = (*g as f64 - *w as f64).abs();
        if !e.is_finite() {
            return f64::INFINITY;
        }
        err = err.max(e);
    }
    err / scale
}

/// (output name, relative error, tolerance) for every output.
pub fn errors(got: &Outputs, want: &Outputs) -> Vec<(&'static str, f64, f64)> {
    let items: [(&'static str, &[f32], &[f32], f64); 7] = [
        ("out", &got.out, &want.out, TOL_FORWARD),
        ("lse", &got.lse, &want.lse, TOL_FORWARD),
        ("dq", &got.dq, &want.dq, TOL_BACKWARD),
        ("dk", &got.dk, &want.dk, TOL_BACKWARD),
        ("dv", &got.dv, &want.dv, TOL_BACKWARD),
        ("dq_scale", &got.dq_scale, &want.dq_scale, TOL_BACKWARD),
        ("dk_scale", &got.dk_scale, &want.dk_scale, TOL_BACKWARD),
    ];
    items
        .iter()
        .map(|(name, g, w, tol)| (*name, rel_err(g, w), *tol))
        .collect()
}

/// Compares every output with the reference; the error names the case and the output.
pub fn check(c: &Case, got: &Outputs, want: &Outputs) -> Result<(), String> {
    let mut bad = Vec::new();
    for (name, e, tol) in errors(got, want) {
        // Anything but "at most tol" fails, so that a NaN error fails too.
        if !matches!(
            e.partial_cmp(&tol),
            Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
        ) {
            bad.push(format!("{name}: relative error {e:.3e} > {tol:.0e}"));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("{c:?}: {}", bad.join("; ")))
    }
}
