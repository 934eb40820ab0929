//! Learning-rate schedules: constant, step, exponential, linear warm-up followed by cosine or
//! linear decay, and the original Transformer's inverse square root.

use serde::{Deserialize, Serialize};

/// The shape of the schedule after warm-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Cosine decay from `learning_rate` to `min_lr` at `lr_decay_iters` (nanoGPT's `get_lr`).
    #[default]
    Cosine,
    /// Linear decay from `learning_rate` to `min_lr` at `lr_decay_iters`.
    Linear,
    /// `learning_rate · gamma^⌊(it − warmup) / step_size⌋` (PyTorch's StepLR after warm-up).
    Step,
    /// `learning_rate · gamma^(it − warmup)` (PyTorch's ExponentialLR after warm-up).
    Exponential,
    /// Vaswani et al.: `learning_rate · min(s / warmup, √(warmup / s))` with s = it + 1, which
    /// peaks at `learning_rate` when s = warmup (their d^-0.5 factor folded into the peak).
    InverseSqrt,
    /// `learning_rate` throughout (no warm-up).
    Constant,
}

/// A learning-rate schedule: linear warm-up, then the decay `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    pub learning_rate: f32,
    pub min_lr: f32,
    pub warmup_iters: u64,
    pub lr_decay_iters: u64,
    /// With `false` the rate is constant at `learning_rate` (as `kind = Constant`).
    pub decay_lr: bool,
    /// Step: iterations between decays.
    pub step_size: u64,
    /// Step and exponential: the decay factor.
    pub gamma: f32,
}

impl LrSchedule {
    /// nanoGPT's schedule: warm-up then cosine decay.
    pub fn cosine(learning_rate: f32, min_lr: f32, warmup_iters: u64, lr_decay_iters: u64) -> Self {
        LrSchedule {
            kind: ScheduleKind::Cosine,
            learning_rate,
            min_lr,
            warmup_iters,
            lr_decay_iters,
            decay_lr: true,
            step_size: 1,
            gamma: 1.0,
        }
    }

    /// Learning rate at iteration `it` (0-based).
    pub fn lr(&self, it: u64) -> f32 {
        let (lr, min) = (self.learning_rate as f64, self.min_lr as f64);
        if !self.decay_lr || self.kind == ScheduleKind::Constant {
            return self.learning_rate;
        }
        if self.kind == ScheduleKind::InverseSqrt {
            let (s, w) = ((it + 1) as f64, self.warmup_iters.max(1) as f64);
            return (lr * (s / w).min((w / s).sqrt())) as f32;
        }
        if it < self.warmup_iters {
            return self.learning_rate * (it + 1) as f32 / (self.warmup_iters + 1) as f32;
        }
        let after = it - self.warmup_iters;
        let decayed = match self.kind {
            ScheduleKind::Cosine | ScheduleKind::Linear => {
                if it > self.lr_decay_iters {
                    return self.min_lr;
                }
                let span = self.lr_decay_iters.saturating_sub(self.warmup_iters).max(1);
                let ratio = after as f64 / span as f64;
                let coeff = match self.kind {
                    ScheduleKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos()),
                    _ => 1.0 - ratio,
                };
                min + coeff * (lr - min)
            }
            ScheduleKind::Step => lr * (self.gamma as f64).powi((after / self.step_size.max(1)) as i32),
            ScheduleKind::Exponential => lr * (self.gamma as f64).powf(after as f64),
            ScheduleKind::InverseSqrt | ScheduleKind::Constant => unreachable!("handled above"),
        };
        decayed as f32
    }
}

/// The schedule over `iters` iterations as text: a table of `rows` evenly spaced iterations
/// (plus the end of warm-up) and a `width`-column chart, for `lmlab schedule`.
pub fn describe(s: &LrSchedule, iters: u64, rows: usize, width: usize) -> String {
    use std::fmt::Write;
    let mut its: Vec<u64> = (0..rows as u64).map(|i| i * iters.saturating_sub(1) / (rows as u64 - 1).max(1)).collect();
    if s.warmup_iters > 0 && s.warmup_iters < iters {
        its.push(s.warmup_iters);
    }
    its.sort_unstable();
    its.dedup();
    let mut out = format!("{:?} schedule over {iters} iterations\n{:>10}  {:>12}\n", s.kind, "iter", "lr");
    for it in its {
        let _ = writeln!(out, "{it:>10}  {:>12.4e}", s.lr(it));
    }
    // One column per iters/width iterations; each column's height is its rate relative to the peak.
    let cols: Vec<f32> = (0..width as u64).map(|c| s.lr(c * iters / width as u64)).collect();
    let peak = cols.iter().cloned().fold(0.0f32, f32::max).max(f32::MIN_POSITIVE);
    let height = 8;
    for level in (1..=height).rev() {
        let line: String =
            cols.iter().map(|&v| if v / peak * height as f32 >= level as f32 - 0.5 { '█' } else { ' ' }).collect();
        let label = if level == height { format!("{peak:.2e}") } else { String::new() };
        let _ = writeln!(out, "{label:>9} |{line}");
    }
    let _ = writeln!(out, "{:>9} +{}", "0", "-".repeat(width));
    let _ = writeln!(out, "{:>11}{:>w$}", 0, iters, w = width);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_then_floor() {
        let s = LrSchedule::cosine(1e-3, 1e-4, 100, 2000);
        assert!((s.lr(0) - 1e-3 / 101.0).abs() < 1e-9);
        assert!((s.lr(99) - 1e-3 * 100.0 / 101.0).abs() < 1e-9);
        assert!((s.lr(100) - 1e-3).abs() < 1e-9);
        // Half way through the decay the cosine is at its midpoint.
        assert!((s.lr(1050) - 5.5e-4).abs() < 1e-8);
        assert!((s.lr(2000) - 1e-4).abs() < 1e-9);
        assert_eq!(s.lr(5000), 1e-4);
        let flat = LrSchedule { decay_lr: false, ..s.clone() };
        assert_eq!(flat.lr(7), 1e-3);
        let constant = LrSchedule { kind: ScheduleKind::Constant, ..s };
        assert_eq!(constant.lr(0), 1e-3);
        assert_eq!(constant.lr(3000), 1e-3);
    }

    #[test]
    fn describe_lists_iterations_and_draws_the_shape() {
        let s = LrSchedule::cosine(1e-3, 1e-4, 100, 1000);
        let text = describe(&s, 1000, 5, 40);
        let row = |it: &str| text.lines().find(|l| l.split_whitespace().next() == Some(it)).map(|l| l.to_string());
        assert_eq!(row("100").unwrap().split_whitespace().nth(1), Some("1.0000e-3"), "{text}");
        assert_eq!(row("999").unwrap().split_whitespace().nth(1), Some("1.0000e-4"), "{text}");
        // The chart's top row is lit near the start (after warm-up) and dark at the end.
        let top = text.lines().find(|l| l.contains('|')).unwrap();
        let bar = &top[top.find('|').unwrap() + 1..];
        assert!(bar.starts_with(' ') || bar.chars().nth(4) == Some('█'), "{top}");
        assert_eq!(bar.chars().last(), Some(' '), "{top}");
    }

    #[test]
    fn linear_step_exponential_and_inverse_sqrt() {
        let base = LrSchedule::cosine(1e-3, 1e-4, 10, 110);
        let linear = LrSchedule { kind: ScheduleKind::Linear, ..base.clone() };
        assert!((linear.lr(9) - 1e-3 * 10.0 / 11.0).abs() < 1e-9, "warm-up applies");
        assert!((linear.lr(10) - 1e-3).abs() < 1e-9);
        assert!((linear.lr(60) - 5.5e-4).abs() < 1e-8, "half way: the midpoint");
        assert!((linear.lr(110) - 1e-4).abs() < 1e-9);
        assert_eq!(linear.lr(500), 1e-4);
        let step = LrSchedule { kind: ScheduleKind::Step, step_size: 30, gamma: 0.1, ..base.clone() };
        assert!((step.lr(10) - 1e-3).abs() < 1e-9);
        assert!((step.lr(39) - 1e-3).abs() < 1e-9);
        assert!((step.lr(40) - 1e-4).abs() < 1e-10);
        assert!((step.lr(70) - 1e-5).abs() < 1e-11);
        let exp = LrSchedule { kind: ScheduleKind::Exponential, gamma: 0.9, ..base.clone() };
        assert!((exp.lr(12) - 1e-3 * 0.81).abs() < 1e-9);
        let isqrt = LrSchedule { kind: ScheduleKind::InverseSqrt, warmup_iters: 4000, ..base };
        assert!((isqrt.lr(0) - 1e-3 / 4000.0).abs() < 1e-10);
        assert!((isqrt.lr(3999) - 1e-3).abs() < 1e-9, "peak at s = warmup");
        assert!((isqrt.lr(15999) - 5e-4).abs() < 1e-9, "s = 4·warmup: half the peak");
        // Vaswani et al.'s formula with d_model = 512, scaled to this peak.
        let vaswani = |s: f64| 512f64.powf(-0.5) * s.powf(-0.5).min(s * 4000f64.powf(-1.5));
        let peak = vaswani(4000.0);
        for s in [1u64, 100, 4000, 9000, 50000] {
            let want = 1e-3 * vaswani(s as f64) / peak;
            assert!((isqrt.lr(s - 1) as f64 - want).abs() < 1e-6 * want, "s = {s}");
        }
    }
}
