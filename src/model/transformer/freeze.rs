//! Frozen parameter tensors (`train.freeze`): fine-tuning that trains only part of a model.
//!
//! The optimizer gives frozen tensors a learning-rate scale of 0 and no weight decay (see
//! `RunConfig::build_optimizer`), so they do not move; the training step also zeroes their
//! gradients before clipping, so they do not count in the gradient norm, as with
//! `requires_grad = False` in PyTorch.

use super::Transformer;
use std::ops::Range;

impl Transformer {
    /// Fixes the frozen tensors' ranges in `params` (empty: everything trains).
    pub fn set_frozen(&mut self, ranges: Vec<Range<usize>>) {
        self.frozen = ranges;
    }

    /// The frozen tensors' ranges in `params`.
    pub fn frozen(&self) -> &[Range<usize>] {
        &self.frozen
    }

    /// Zeroes the frozen tensors' gradients.
    pub fn zero_frozen_grads(&mut self) {
        for r in &self.frozen {
            self.grads[r.clone()].fill(0.0);
        }
    }

    /// Parameters that train: all but the frozen ones.
    pub fn trainable_params(&self) -> usize {
        self.num_params() - self.frozen.iter().map(|r| r.len()).sum::<usize>()
    }
}
