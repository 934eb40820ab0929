//! Dynamic loss scaling for f16 training, with `torch.cuda.amp.GradScaler`'s rules.
//!
//! f16's smallest subnormal is 2^-24, and small gradients of a model's late layers round to
//! zero there. The loss (in practice its gradient, the logits' gradient) is multiplied by a
//! scale before backward, so gradients are computed `scale` times larger, and divided by it
//! again before clipping and the optimizer. Too large a scale overflows f16 (65504): some
//! gradient becomes infinite or NaN. Then the step is skipped (weights and optimizer state are
//! left as they are) and the scale halves; after `growth_interval` clean steps in a row it
//! doubles. The scale is a power of two as long as the initial one is, so unscaling is exact.
//! bf16 has f32's exponent range and needs no scaling (as in PyTorch); neither does fp32.

use crate::kernels::precision::{unscale_and_check, Precision};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Factor applied after `growth_interval` clean steps in a row.
pub const GROWTH_FACTOR: f32 = 2.0;
/// Factor applied on a step whose gradients overflowed.
pub const BACKOFF_FACTOR: f32 = 0.5;
/// Below this scale every f16 gradient would flush to zero: training has diverged.
const MIN_SCALE: f32 = 1.0 / (1u32 << 24) as f32;

/// The part of the scaler a checkpoint keeps (`state.json`), so a resumed run scales exactly as
/// the uninterrupted one would.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    pub scale: f32,
    /// Clean steps in a row since the scale last changed.
    pub growth_tracker: u64,
}

/// The loss scaler of a run; disabled (scale 1, never skips) unless the run is f16.
#[derive(Clone, Debug, PartialEq)]
pub struct LossScaler {
    pub enabled: bool,
    pub scale: f32,
    pub growth_interval: u64,
    pub growth_tracker: u64,
}

/// What [`LossScaler::unscale`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleOutcome {
    /// Every gradient was finite: they are unscaled, take the optimizer step.
    Clean,
    /// Some gradient overflowed: skip the optimizer step (the scale has been halved).
    Overflow,
}

impl LossScaler {
    /// No scaling: fp32 and bf16.
    pub fn disabled() -> Self {
        LossScaler { enabled: false, scale: 1.0, growth_interval: 0, growth_tracker: 0 }
    }

    /// The scaler for `precision`: enabled in f16 only.
    pub fn new(precision: Precision, init_scale: f32, growth_interval: u64) -> Self {
        if precision == Precision::F16 {
            LossScaler { enabled: true, scale: init_scale, growth_interval, growth_tracker: 0 }
        } else {
            LossScaler::disabled()
        }
    }

    /// The state to checkpoint (None when disabled).
    pub fn state(&self) -> Option<ScalerState> {
        self.enabled.then_some(ScalerState { scale: self.scale, growth_tracker: self.growth_tracker })
    }

    /// Continues from a checkpoint's state; a checkpoint without one (an fp32 or bf16 run)
    /// leaves the scaler as configured.
    pub fn restore(&mut self, state: Option<ScalerState>) {
        if let (true, Some(s)) = (self.enabled, state) {
            self.scale = s.scale;
            self.growth_tracker = s.growth_tracker;
        }
    }

    /// The factor for the loss's gradient in this step.
    pub fn loss_scale(&self) -> f32 {
        if self.enabled {
            self.scale
        } else {
            1.0
        }
    }

    /// After a scaled backward pass: checks `grads` for inf/NaN, divides them by the scale, and
    /// moves the scale (halve on overflow, double after `growth_interval` clean steps). Errors
    /// when overflow has pushed the scale below 2^-24, where no f16 gradient survives.
    pub fn unscale(&mut self, grads: &mut [f32]) -> Result<ScaleOutcome> {
        if !self.enabled {
            return Ok(ScaleOutcome::Clean);
        }
        let finite = unscale_and_check(grads, 1.0 / self.scale);
        let outcome = if finite { ScaleOutcome::Clean } else { ScaleOutcome::Overflow };
        self.update(outcome)?;
        Ok(outcome)
    }

    /// GradScaler's `update()`.
    pub fn update(&mut self, outcome: ScaleOutcome) -> Result<()> {
        match outcome {
            ScaleOutcome::Overflow => {
                self.scale *= BACKOFF_FACTOR;
                self.growth_tracker = 0;
                if self.scale < MIN_SCALE {
                    bail!("f16 gradients overflow even at loss scale {}: training diverged", self.scale);
                }
            }
            ScaleOutcome::Clean => {
                self.growth_tracker += 1;
                if self.growth_tracker >= self.growth_interval {
                    self.scale *= GROWTH_FACTOR;
                    self.growth_tracker = 0;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_after_interval_and_backs_off_on_overflow() {
        let mut s = LossScaler::new(Precision::F16, 1024.0, 3);
        for _ in 0..2 {
            s.update(ScaleOutcome::Clean).unwrap();
        }
        assert_eq!(s.scale, 1024.0);
        s.update(ScaleOutcome::Clean).unwrap();
        assert_eq!((s.scale, s.growth_tracker), (2048.0, 0));
        s.update(ScaleOutcome::Clean).unwrap();
        s.update(ScaleOutcome::Overflow).unwrap();
        assert_eq!((s.scale, s.growth_tracker), (1024.0, 0));
        // An overflow resets the count of clean steps.
        s.update(ScaleOutcome::Clean).unwrap();
        s.update(ScaleOutcome::Clean).unwrap();
        assert_eq!(s.scale, 1024.0);
        assert!(LossScaler::new(Precision::Bf16, 1024.0, 3).state().is_none());
        let mut tiny = LossScaler::new(Precision::F16, MIN_SCALE, 3);
        assert!(tiny.update(ScaleOutcome::Overflow).is_err());
    }

    #[test]
    fn unscale_divides_and_detects_overflow() {
        let mut s = LossScaler::new(Precision::F16, 8.0, 100);
        let mut g = [8.0f32, -4.0, 0.5];
        assert_eq!(s.unscale(&mut g).unwrap(), ScaleOutcome::Clean);
        assert_eq!(g, [1.0, -0.5, 0.0625]);
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            let mut g = [1.0f32, bad];
            let before = s.scale;
            assert_eq!(s.unscale(&mut g).unwrap(), ScaleOutcome::Overflow);
            assert_eq!(s.scale, before * 0.5);
        }
        let mut off = LossScaler::disabled();
        let mut g = [f32::NAN];
        assert_eq!(off.unscale(&mut g).unwrap(), ScaleOutcome::Clean);
        assert_eq!(off.loss_scale(), 1.0);
    }
}
