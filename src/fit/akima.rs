//! Akima (1970) interpolation, as scipy's Akima1DInterpolator.

/// A piecewise-cubic Akima interpolant through strictly increasing x.
#[derive(Clone, Debug)]
pub struct Akima {
    x: Vec<f64>,
    y: Vec<f64>,
    t: Vec<f64>,
}

impl Akima {
    /// Build through `(x, y)`; x must be strictly increasing with at least 3 points.
    pub fn new(x: &[f64], y: &[f64]) -> Option<Akima> {
        let n = x.len();
        if n < 3
            || y.len() != n
            || x.windows(2)
                .any(|w| w[1].partial_cmp(&w[0]) != Some(std::cmp::Ordering::Greater))
        {
            return None;
        }
        // me[k] = m_{k-2}: secant slopes with two extrapolated slopes at each end.
        let mut me = vec![0.0; n + 3];
        for i in 0..n - 1 {
            me[i + 2] = (y[i + 1] - y[i]) / (x[i + 1] - x[i]);
        }
        me[1] = 2.0 * me[2] - me[3];
        me[0] = 2.0 * me[1] - me[2];
        me[n + 1] = 2.0 * me[n] - me[n - 1];
        me[n + 2] = 2.0 * me[n + 1] - me[n];
        let t = (0..n)
            .map(|i| {
                let (m_2, m_1, m0, m1) = (me[i], me[i + 1], me[i + 2], me[i + 3]);
                let w1 = (m1 - m0).abs();
                let w2 = (m_1 - m_2).abs();
                if w1 + w2 > 1e-12 * (m_1.abs() + m0.abs() + 1e-300) {
                    (w1 * m_1 + w2 * m0) / (w1 + w2)
                } else {
                    0.5 * (m_1 + m0)
                }
            })
            .collect();
        Some(Akima {
            x: x.to_vec(),
            y: y.to_vec(),
            t,
        })
    }

    /// Value at `xq` (clamped to the data range).
    pub fn eval(&self, xq: f64) -> f64 {
        let n = self.x.len();
        let xq = xq.clamp(self.x[0], self.x[n - 1]);
        let i = match self.x.partition_point(|&v| v <= xq) {
            0 => 0,
            k => (k - 1).min(n - 2),
        };
        let h = self.x[i + 1] - self.x[i];
        let s = (xq - self.x[i]) / h;
        let (y0, y1, t0, t1) = (self.y[i], self.y[i + 1], self.t[i] * h, self.t[i + 1] * h);
        let (s2, s3) = (s * s, s * s * s);
        (2.0 * s3 - 3.0 * s2 + 1.0) * y0
            + (s3 - 2.0 * s2 + s) * t0
            + (-2.0 * s3 + 3.0 * s2) * y1
            + (s3 - s2) * t1
    }

    /// The minimum over a dense grid (`per_interval` samples per knot interval): (x, y).
    pub fn minimum(&self, per_interval: usize) -> (f64, f64) {
        let n = self.x.len();
        let mut best = (self.x[0], self.y[0]);
        for i in 0..n - 1 {
            for k in 0..=per_interval {
                let xq = self.x[i] + (self.x[i + 1] - self.x[i]) * k as f64 / per_interval as f64;
                let v = self.eval(xq);
                if v < best.1 {
                    best = (xq, v);
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_knots_and_lines() {
        let x = [0.0, 1.0, 2.5, 3.0, 4.0];
        let y = [1.0, 3.0, 6.0, 7.0, 9.0];
        let a = Akima::new(&x, &y).unwrap();
        for i in 0..5 {
            assert!((a.eval(x[i]) - y[i]).abs() < 1e-12);
        }
        // Exact on a straight line.
        let a = Akima::new(&x, &x.map(|v| 2.0 * v + 1.0)).unwrap();
        assert!((a.eval(1.7) - 4.4).abs() < 1e-12);
        // scipy.interpolate.Akima1DInterpolator([0,1,2,3,4],[0,1,0,1,0])(1.5) = 0.5
        let a = Akima::new(&[0.0, 1.0, 2.0, 3.0, 4.0], &[0.0, 1.0, 0.0, 1.0, 0.0]).unwrap();
        assert!((a.eval(1.5) - 0.5).abs() < 1e-12);
        assert!(Akima::new(&[0.0, 1.0], &[0.0, 1.0]).is_none());
    }
}
