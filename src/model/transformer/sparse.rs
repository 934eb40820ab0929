//! A pruned model's fixed sparsity pattern: the weights that must stay exactly zero while the
//! model is fine-tuned (recovery training after `lmlab prune`).
//!
//! The mask is not stored anywhere: a pruned checkpoint's pruned weights are exact zeros
//! (f32 zeros survive safetensors bit for bit), and training keeps them so, so the zeros of the
//! pruned tensors *are* the mask. [`SparsityMask::from_zeros`] rebuilds it when a run resumes.
//! The training step zeroes the masked gradients before clipping (they do not count in the
//! gradient norm, as with `weight = weight_orig · mask`), and after the update sets the masked
//! weights and every optimizer state entry of them back to zero (`train::optimizer_step`).

use super::Transformer;
use crate::model::ParamLayout;
use anyhow::{Context, Result};
use std::ops::Range;

/// Weights held at zero, per tensor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparsityMask {
    /// (tensor name, its range in `params`, keep flags: false = held at zero (numel)).
    tensors: Vec<(String, Range<usize>, Vec<bool>)>,
}

impl SparsityMask {
    /// The mask whose held entries are the exact zeros of the tensors `names` in `params`.
    pub fn from_zeros(layout: &ParamLayout, params: &[f32], names: &[String]) -> Result<Self> {
        let mut tensors = Vec::with_capacity(names.len());
        for name in names {
            let r = layout.get(name).with_context(|| format!("the model has no tensor {name} to keep sparse"))?.range();
            let keep = params[r.clone()].iter().map(|w| *w != 0.0).collect();
            tensors.push((name.clone(), r, keep));
        }
        Ok(SparsityMask { tensors })
    }

    /// Sets the held entries of `buf` (a buffer in the parameter layout: weights, gradients
    /// or an optimizer state) to 0.0. An empty buffer (unused optimizer state) is left alone.
    pub fn apply(&self, buf: &mut [f32]) {
        if buf.is_empty() {
            return;
        }
        for (_, r, keep) in &self.tensors {
            for (x, &k) in buf[r.clone()].iter_mut().zip(keep) {
                if !k {
                    *x = 0.0;
                }
            }
        }
    }

    /// (tensor name, held entries, numel) per masked tensor.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, usize, usize)> {
        self.tensors.iter().map(|(n, r, keep)| (n.as_str(), keep.iter().filter(|k| !**k).count(), r.len()))
    }

    /// Entries held at zero, over all tensors.
    pub fn held(&self) -> usize {
        self.tensors().map(|(_, h, _)| h).sum()
    }
}

impl Transformer {
    /// Fixes the sparsity pattern that training keeps (None: none). The training step applies
    /// it to gradients, weights and optimizer state.
    pub fn set_sparsity_mask(&mut self, mask: Option<SparsityMask>) {
        if let Some(m) = &mask {
            m.apply(&mut self.params);
        }
        self.sparsity = mask;
    }

    pub fn sparsity_mask(&self) -> Option<&SparsityMask> {
        self.sparsity.as_ref()
    }

    /// Zeroes the gradients of the held weights (nothing without a mask).
    pub fn mask_grads(&mut self) {
        if let Some(m) = &self.sparsity {
            m.apply(&mut self.grads);
        }
    }

    /// Sets the held weights back to exactly 0.0 (nothing without a mask).
    pub fn mask_params(&mut self) {
        if let Some(m) = &self.sparsity {
            m.apply(&mut self.params);
        }
    }
}
