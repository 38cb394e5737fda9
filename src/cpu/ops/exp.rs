//! A branch-free f32 `exp` for non-positive arguments that the compiler vectorises (libm's `expf`
//! is a scalar call): the softmax over 32101 logits per token is the CPU training step's hot loop.
//! Call it from simple element-wise loops (`for x in row { *x = exp_nonpos(*x - m) }`): that form is
//! vectorised, a loop that also reduces is not.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in a part exact in f32 and a remainder (Cody–Waite reduction).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding it rounds an f32 of magnitude < 2²² to the nearest integer.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// Below this, exp underflows the normal range: the result is 0.
const MIN_ARG: f32 = -87.0;

/// `e^x` for `x ≤ 0` (within about 2 ulp; exactly 0 below −87). Also correct for `0 < x < 88`.
#[inline(always)]
pub(crate) fn exp_nonpos(x: f32) -> f32 {
    let xc = if x < MIN_ARG { MIN_ARG } else { x };
    // x = n·ln2 + r, |r| ≤ ln2/2
    let t = xc * LOG2E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    // Cephes expf polynomial for e^r
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // 2^n built from the exponent bits (n ≥ −126 after the clamp); the integer n is read from the
    // low mantissa bits of t, which keeps the whole function vectorisable
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let scale = f32::from_bits((ni.wrapping_add(127) << 23) as u32);
    if x < MIN_ARG {
        0.0
    } else {
        er * scale
    }
}

#[cfg(test)]
mod tests {
    use super::exp_nonpos;

    #[test]
    fn matches_f64_exp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 10.0 {
            let want = (x as f64).exp();
            let got = exp_nonpos(x) as f64;
            worst = worst.max((got - want).abs() / want);
            x += 1.7e-3;
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp_nonpos(-88.0), 0.0);
        assert_eq!(exp_nonpos(f32::NEG_INFINITY), 0.0);
    }
}
