//! Softmax cross-entropy over rows of `V` logits, with pad targets (`PAD_ID`) masked out.
//!
//! The loss is the *sum* of `−ln softmax(logits)[target]` over non-pad rows (f64, summed in row
//! order); its gradient is `softmax − onehot` per non-pad row and zero on pad rows, unscaled.
//! The exponentials use a vectorisable polynomial `exp` accurate to about 2 ulp.

use super::exp::exp_nonpos;
use crate::backend::LossSum;
use crate::model::config::PAD_ID;
use rayon::prelude::*;

/// Rows per parallel task.
const ROWS_PER_CHUNK: usize = 4;

/// Max of a row (8 lanes; the `if` form compiles to `maxps`).
#[inline]
fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut it = row.chunks_exact(8);
    for c in &mut it {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = if x > *l { x } else { *l };
        }
    }
    let tail = it
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &x| a.max(x));
    lanes.iter().fold(tail, |a, &x| a.max(x))
}

/// A sum over 8 fixed lanes (element `i` of the stream goes to lane `i mod 8`), so that the
/// in-place and the loss-only paths add the same numbers in the same order.
struct Sum8 {
    lanes: [f32; 8],
    tail: f32,
}

impl Sum8 {
    fn new() -> Self {
        Sum8 {
            lanes: [0.0; 8],
            tail: 0.0,
        }
    }
    /// Add a slice; every slice but the last must have a length that is a multiple of 8.
    #[inline]
    fn add(&mut self, xs: &[f32]) {
        let mut it = xs.chunks_exact(8);
        for c in &mut it {
            for (l, &x) in self.lanes.iter_mut().zip(c) {
                *l += x;
            }
        }
        for &x in it.remainder() {
            self.tail += x;
        }
    }
    fn total(&self) -> f32 {
        self.lanes.iter().sum::<f32>() + self.tail
    }
}

/// Elements per block of the loss-only path (a multiple of 8).
const BLOCK: usize = 512;

/// Σ exp(x − max) over a row, without writing it.
#[inline]
fn sum_exp(row: &[f32], max: f32) -> f32 {
    let mut buf = [0.0f32; BLOCK];
    let mut sum = Sum8::new();
    for chunk in row.chunks(BLOCK) {
        let e = &mut buf[..chunk.len()];
        for (e, &x) in e.iter_mut().zip(chunk) {
            *e = exp_nonpos(x - max);
        }
        sum.add(e);
    }
    sum.total()
}

/// Replace a row by exp(x − max) and return the sum (same order as [`sum_exp`]).
#[inline]
fn exp_in_place(row: &mut [f32], max: f32) -> f32 {
    for x in row.iter_mut() {
        *x = exp_nonpos(*x - max);
    }
    let mut sum = Sum8::new();
    sum.add(row);
    sum.total()
}

#[inline]
fn row_loss(max: f32, sum: f32, target_logit: f32) -> f64 {
    (sum as f64).ln() + max as f64 - target_logit as f64
}

fn check_target(target: u16, v: usize) -> usize {
    let t = target as usize;
    assert!(
        t < v,
        "cross_entropy: target {t} outside a vocabulary of {v}"
    );
    t
}

/// Loss of one row, then overwrite the row with its gradient (zero for a pad target).
#[inline]
fn row_in_place(row: &mut [f32], target: u16) -> f64 {
    if target == PAD_ID {
        row.fill(0.0);
        return 0.0;
    }
    let t = check_target(target, row.len());
    let max = row_max(row);
    let target_logit = row[t];
    let sum = exp_in_place(row, max);
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
    row[t] -= 1.0;
    row_loss(max, sum, target_logit)
}

/// The row's maximum and its loss `logsumexp(row) − row[t]` (target `t` in range).
fn row_nll(row: &[f32], t: usize) -> (f32, f64) {
    let max = row_max(row);
    (max, row_loss(max, sum_exp(row, max), row[t]))
}

/// Panics (naming `what`) unless the logits hold `v` values for each of the targets.
fn check_logits(logits_len: usize, targets_N: &[u16], v: usize, what: &str) {
    assert_eq!(logits_len, targets_N.len() * v, "{what}: logits size");
}

fn total(losses: &[f64], targets_N: &[u16]) -> LossSum {
    LossSum {
        sum: losses.iter().sum(),
        count: targets_N.iter().filter(|&&t| t != PAD_ID).count() as u64,
    }
}

/// Summed loss of `logits_NxV` against `targets_N`; when `dlogits_NxV` is given, also writes the
/// gradient of the summed loss into it (`=`).
pub fn cross_entropy_forward_backward(
    logits_NxV: &[f32],
    targets_N: &[u16],
    dlogits_NxV: Option<&mut [f32]>,
    v: usize,
) -> LossSum {
    match dlogits_NxV {
        None => cross_entropy_loss(logits_NxV, targets_N, v),
        Some(d) => {
            assert_eq!(d.len(), logits_NxV.len(), "cross_entropy: dlogits size");
            d.copy_from_slice(logits_NxV);
            cross_entropy_in_place(d, targets_N, v)
        }
    }
}

/// Summed loss only (no gradient).
pub fn cross_entropy_loss(logits_NxV: &[f32], targets_N: &[u16], v: usize) -> LossSum {
    check_logits(logits_NxV.len(), targets_N, v, "cross_entropy");
    let losses: Vec<f64> = logits_NxV
        .par_chunks(v)
        .with_min_len(ROWS_PER_CHUNK)
        .zip(targets_N.par_iter())
        .map(|(row, &target)| {
            if target == PAD_ID {
                return 0.0;
            }
            row_nll(row, check_target(target, v)).1
        })
        .collect();
    total(&losses, targets_N)
}

/// Per-row target log-probability and argmax hit (the reference of `token_scores_f32` in
/// `kernels/cross_entropy.cu`): `logp_N[r] = z[t] − logsumexp(z)` and `hit_N[r] = (argmax z == t)`, the
/// argmax being the lowest index of the row's maximum; pad targets give 0 and false.
pub fn token_scores(
    logits_NxV: &[f32],
    targets_N: &[u16],
    v: usize,
    logp_N: &mut [f32],
    hit_N: &mut [bool],
) {
    check_logits(logits_NxV.len(), targets_N, v, "token_scores");
    assert_eq!(logp_N.len(), targets_N.len(), "token_scores: logp size");
    assert_eq!(hit_N.len(), targets_N.len(), "token_scores: hit size");
    logits_NxV
        .par_chunks(v)
        .with_min_len(ROWS_PER_CHUNK)
        .zip(targets_N.par_iter())
        .zip(logp_N.par_iter_mut().zip(hit_N.par_iter_mut()))
        .for_each(|((row, &target), (lp, hit))| {
            if target == PAD_ID {
                (*lp, *hit) = (0.0, false);
                return;
            }
            let t = check_target(target, v);
            let (max, nll) = row_nll(row, t);
            *lp = -(nll as f32);
            // First index of the maximum: the target is the argmax iff nothing before it reaches its
            // value and nothing after it exceeds it.
            *hit = row[t] == max && row[..t].iter().all(|&x| x < max);
        });
}

/// Like [`cross_entropy_forward_backward`], overwriting the logits with their gradient (saves a
/// `[N, V]` buffer in the training step).
pub fn cross_entropy_in_place(
    logits_dlogits_NxV: &mut [f32],
    targets_N: &[u16],
    v: usize,
) -> LossSum {
    check_logits(logits_dlogits_NxV.len(), targets_N, v, "cross_entropy");
    let losses: Vec<f64> = logits_dlogits_NxV
        .par_chunks_mut(v)
        .with_min_len(ROWS_PER_CHUNK)
        .zip(targets_N.par_iter())
        .map(|(row, &target)| row_in_place(row, target))
        .collect();
    total(&losses, targets_N)
}
