//! Learning-rate schedule: linear warmup, then cosine decay to a fraction of the peak.

use serde::{Deserialize, Serialize};

/// Linear warmup over `warmup_steps`, then cosine decay from `peak_lr` to `final_frac · peak_lr` at the last
/// step. Step indices are 0-based optimizer updates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Peak learning rate.
    pub peak_lr: f64,
    /// Number of warmup steps (0 = start at the peak).
    pub warmup_steps: u64,
    /// Total number of optimizer steps.
    pub total_steps: u64,
    /// Final learning rate as a fraction of the peak (default 0.1).
    pub final_frac: f64,
}

impl Schedule {
    /// Learning rate of update `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps);
        if decay_steps <= 1 {
            return self.peak_lr;
        }
        let progress = ((step - self.warmup_steps) as f64 / (decay_steps - 1) as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.peak_lr * (self.final_frac + (1.0 - self.final_frac) * cosine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_final_fraction() {
        let s = Schedule {
            peak_lr: 1e-3,
            warmup_steps: 10,
            total_steps: 110,
            final_frac: 0.1,
        };
        assert!((s.lr(0) - 1e-4).abs() < 1e-12);
        assert!((s.lr(4) - 5e-4).abs() < 1e-12);
        assert!((s.lr(9) - 1e-3).abs() < 1e-12);
        assert!((s.lr(10) - 1e-3).abs() < 1e-12);
        // Midpoint of the decay: halfway between peak and final.
        let mid = s.lr(10 + 99 / 2);
        assert!((mid - 0.55e-3).abs() < 2e-5, "{mid}");
        assert!((s.lr(109) - 1e-4).abs() < 1e-12);
        assert!((s.lr(500) - 1e-4).abs() < 1e-12);
        for i in 10..109 {
            assert!(s.lr(i + 1) <= s.lr(i));
        }
    }

    #[test]
    fn no_warmup_starts_at_peak() {
        let s = Schedule {
            peak_lr: 2.0,
            warmup_steps: 0,
            total_steps: 5,
            final_frac: 0.5,
        };
        assert_eq!(s.lr(0), 2.0);
        assert_eq!(s.lr(4), 1.0);
    }
}
