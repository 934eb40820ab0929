//! Learning-rate schedules.

use serde::{Deserialize, Serialize};

/// Linear warm-up then cosine decay to `min_lr` (nanoGPT's `get_lr`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub learning_rate: f32,
    pub min_lr: f32,
    pub warmup_iters: u64,
    pub lr_decay_iters: u64,
    /// With `false` the rate is constant at `learning_rate`.
    pub decay_lr: bool,
}

impl LrSchedule {
    /// Learning rate at iteration `it` (0-based).
    pub fn lr(&self, it: u64) -> f32 {
        if !self.decay_lr {
            return self.learning_rate;
        }
        if it < self.warmup_iters {
            return self.learning_rate * (it + 1) as f32 / (self.warmup_iters + 1) as f32;
        }
        if it > self.lr_decay_iters {
            return self.min_lr;
        }
        let span = self.lr_decay_iters.saturating_sub(self.warmup_iters).max(1);
        let ratio = (it - self.warmup_iters) as f64 / span as f64;
        let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
        (self.min_lr as f64 + coeff * (self.learning_rate - self.min_lr) as f64) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_then_floor() {
        let s =
            LrSchedule { learning_rate: 1e-3, min_lr: 1e-4, warmup_iters: 100, lr_decay_iters: 2000, decay_lr: true };
        assert!((s.lr(0) - 1e-3 / 101.0).abs() < 1e-9);
        assert!((s.lr(99) - 1e-3 * 100.0 / 101.0).abs() < 1e-9);
        assert!((s.lr(100) - 1e-3).abs() < 1e-9);
        // Half way through the decay the cosine is at its midpoint.
        assert!((s.lr(1050) - 5.5e-4).abs() < 1e-8);
        assert!((s.lr(2000) - 1e-4).abs() < 1e-9);
        assert_eq!(s.lr(5000), 1e-4);
        let flat = LrSchedule { decay_lr: false, ..s };
        assert_eq!(flat.lr(7), 1e-3);
    }
}
