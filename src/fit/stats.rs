//! Small statistics: Student-t quantiles, percentiles, weighted straight-line fits, intervals.

use serde::Serialize;

/// A fitted value with a confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Interval {
    /// Point estimate.
    pub value: f64,
    /// Lower end of the interval.
    pub lo: f64,
    /// Upper end of the interval.
    pub hi: f64,
}

impl Interval {
    /// Whether `x` lies in `[lo, hi]`.
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
    /// A point estimate with no interval (lo = hi = NaN).
    pub fn bare(value: f64) -> Self {
        Interval {
            value,
            lo: f64::NAN,
            hi: f64::NAN,
        }
    }
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Continued fraction of the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    let tiny = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// Regularised incomplete beta I_x(a, b).
pub fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let lbt = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        (lbt.exp() * beta_cf(a, b, x)) / a
    } else {
        1.0 - (lbt.exp() * beta_cf(b, a, 1.0 - x)) / b
    }
}

/// CDF of Student's t with `nu` degrees of freedom.
pub fn t_cdf(t: f64, nu: f64) -> f64 {
    let tail = 0.5 * inc_beta(0.5 * nu, 0.5, nu / (nu + t * t));
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// Quantile `p` (0 < p < 1) of Student's t with `nu` degrees of freedom (bisection on the CDF).
pub fn t_quantile(p: f64, nu: f64) -> f64 {
    let (mut lo, mut hi) = (-1e4, 1e4);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, nu) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Percentile `q` in [0, 1] of `xs` (linear interpolation between order statistics; NaNs dropped).
pub fn percentile(xs: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let i = pos.floor() as usize;
    let j = (i + 1).min(v.len() - 1);
    v[i] + (pos - i as f64) * (v[j] - v[i])
}

/// A weighted straight-line fit y = intercept + slope·x.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LineFit {
    /// Intercept with its t interval.
    pub intercept: Interval,
    /// Slope with its t interval.
    pub slope: Interval,
    /// Standard error of the slope.
    pub slope_se: f64,
    /// Points used.
    pub n: usize,
    /// Coefficient of determination (weighted).
    pub r2: f64,
    /// Covariance of (intercept, slope) (scaled by the residual variance).
    #[serde(skip)]
    pub cov: [[f64; 2]; 2],
    /// Student-t multiplier of the intervals.
    #[serde(skip)]
    pub t_mult: f64,
}

impl LineFit {
    /// Value at `x` with the interval of the fitted mean.
    pub fn predict(&self, x: f64) -> Interval {
        let y = self.intercept.value + self.slope.value * x;
        let var = self.cov[0][0] + 2.0 * x * self.cov[0][1] + x * x * self.cov[1][1];
        let h = self.t_mult * var.max(0.0).sqrt();
        Interval {
            value: y,
            lo: y - h,
            hi: y + h,
        }
    }
}

/// Weighted least squares of y on x (weights `w`, all 1 if `None`); intervals at `level` from the
/// t distribution with n − 2 degrees of freedom and the residual variance (weights are relative).
/// `None` with fewer than 2 points or no spread in x.
pub fn line_fit(x: &[f64], y: &[f64], w: Option<&[f64]>, level: f64) -> Option<LineFit> {
    let n = x.len();
    if n < 2 {
        return None;
    }
    let wt = |i: usize| w.map_or(1.0, |w| w[i]);
    let (mut sw, mut swx, mut swy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        sw += wt(i);
        swx += wt(i) * x[i];
        swy += wt(i) * y[i];
    }
    let (mx, my) = (swx / sw, swy / sw);
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxx += wt(i) * dx * dx;
        sxy += wt(i) * dx * dy;
        syy += wt(i) * dy * dy;
    }
    // Also refuses NaN.
    if sxx.is_nan() || sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let mut rss = 0.0;
    for i in 0..n {
        let r = y[i] - intercept - slope * x[i];
        rss += wt(i) * r * r;
    }
    let dof = n as f64 - 2.0;
    let (s2, t_mult) = if dof >= 1.0 {
        (rss / dof, t_quantile(0.5 + 0.5 * level, dof))
    } else {
        (f64::NAN, f64::NAN)
    };
    let var_slope = s2 / sxx;
    let var_int = s2 * (1.0 / sw + mx * mx / sxx);
    let cov_is = -mx * s2 / sxx;
    let se_s = var_slope.sqrt();
    let se_i = var_int.sqrt();
    Some(LineFit {
        intercept: Interval {
            value: intercept,
            lo: intercept - t_mult * se_i,
            hi: intercept + t_mult * se_i,
        },
        slope: Interval {
            value: slope,
            lo: slope - t_mult * se_s,
            hi: slope + t_mult * se_s,
        },
        slope_se: se_s,
        n,
        r2: if syy > 0.0 { 1.0 - rss / syy } else { 1.0 },
        cov: [[var_int, cov_is], [cov_is, var_slope]],
        t_mult,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_tables() {
        // Published two-sided 95% critical values.
        for (nu, want) in [
            (1.0, 12.7062),
            (2.0, 4.3027),
            (5.0, 2.5706),
            (30.0, 2.0423),
            (1e6, 1.95996),
        ] {
            let got = t_quantile(0.975, nu);
            assert!((got - want).abs() < 1e-3 * want, "nu {nu}: {got} vs {want}");
        }
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn line_fit_exact_and_interval() {
        let x = [0.0, 1.0, 2.0, 3.0];
        let y = [1.0, 3.1, 4.9, 7.0];
        let f = line_fit(&x, &y, None, 0.95).unwrap();
        assert!((f.slope.value - 1.98).abs() < 1e-12);
        assert!(f.slope.lo < 1.98 && f.slope.hi > 1.98 && f.slope.hi - f.slope.lo < 0.5);
        assert!(line_fit(&[1.0, 1.0], &[1.0, 2.0], None, 0.95).is_none());
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.5), 2.0);
    }
}
