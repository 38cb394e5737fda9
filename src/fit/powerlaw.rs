//! Power laws y = k·C^p fitted as straight lines in log-log space.

use super::stats::{line_fit, Interval, LineFit};
use serde::Serialize;

/// A fitted power law y = k·C^exponent.
#[derive(Clone, Debug, Serialize)]
pub struct PowerLaw {
    /// The exponent p with its interval.
    pub exponent: Interval,
    /// The coefficient k with its interval.
    pub coefficient: Interval,
    /// Points fitted.
    pub n_points: usize,
    /// R² of the log-log line.
    pub r2: f64,
    /// How the intervals were obtained.
    pub interval_method: String,
    /// ln y − fitted ln y, per point.
    pub residuals_log: Vec<f64>,
    /// The log-log line (intercept ln k, slope p).
    #[serde(skip)]
    pub line: LineFit,
}

impl PowerLaw {
    /// Fit ln y = ln k + p ln C by (weighted) least squares with t intervals at `level`.
    /// `se_ln_y` gives per-point standard errors of ln y (weights 1/se²) or `None` for equal weights.
    pub fn fit(c: &[f64], y: &[f64], se_ln_y: Option<&[f64]>, level: f64) -> Option<PowerLaw> {
        let x: Vec<f64> = c.iter().map(|v| v.ln()).collect();
        let ly: Vec<f64> = y.iter().map(|v| v.ln()).collect();
        let w: Option<Vec<f64>> = se_ln_y.map(|s| s.iter().map(|s| 1.0 / (s * s)).collect());
        let line = line_fit(&x, &ly, w.as_deref(), level)?;
        let residuals_log = x
            .iter()
            .zip(&ly)
            .map(|(x, y)| y - line.intercept.value - line.slope.value * x)
            .collect();
        Some(PowerLaw {
            exponent: line.slope,
            coefficient: Interval {
                value: line.intercept.value.exp(),
                lo: line.intercept.lo.exp(),
                hi: line.intercept.hi.exp(),
            },
            n_points: c.len(),
            r2: line.r2,
            interval_method: if w.is_some() {
                "weighted least squares, Student t".into()
            } else {
                "least squares, Student t".into()
            },
            residuals_log,
            line,
        })
    }

    /// y(C) with the interval of the fitted line (NaN ends without one).
    pub fn predict(&self, c: f64) -> Interval {
        let p = self.line.predict(c.ln());
        Interval {
            value: p.value.exp(),
            lo: p.lo.exp(),
            hi: p.hi.exp(),
        }
    }
}
