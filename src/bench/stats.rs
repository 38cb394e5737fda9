//! Summary statistics of repeated timings: median and spread.

use serde::{Deserialize, Serialize};

/// Median, extremes, quartiles and mean of a set of samples (seconds).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Number of samples.
    pub n: usize,
    /// The 0.5 quantile of the samples.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// First quartile (linear interpolation between order statistics).
    pub q1: f64,
    /// Third quartile.
    pub q3: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// Quantile `q` in [0, 1] of sorted samples, interpolating linearly between order statistics.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Spread {
    /// Summarise `samples`; None when there are none or any is not finite.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        if samples.is_empty() || samples.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        Some(Spread {
            n: s.len(),
            median: quantile(&s, 0.5),
            min: s[0],
            max: s[s.len() - 1],
            q1: quantile(&s, 0.25),
            q3: quantile(&s, 0.75),
            mean: s.iter().sum::<f64>() / s.len() as f64,
        })
    }

    /// Half the interquartile range relative to the median, in percent: a robust "± spread".
    pub fn rel_half_iqr_percent(&self) -> f64 {
        if self.median > 0.0 {
            50.0 * (self.q3 - self.q1) / self.median
        } else {
            f64::NAN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_quartiles_and_mean() {
        let s = Spread::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (5, 3.0, 1.0, 5.0));
        assert_eq!((s.q1, s.q3, s.mean), (2.0, 4.0, 3.0));
        let e = Spread::of(&[1.0, 2.0]).unwrap();
        assert_eq!(e.median, 1.5);
        assert_eq!(e.q1, 1.25);
        assert!((s.rel_half_iqr_percent() - 100.0 / 3.0).abs() < 1e-12);
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[1.0, f64::NAN]).is_none());
    }
}
