//! Adagrad (Duchi et al.), with PyTorch's `torch.optim.Adagrad` update rule:
//!
//! ```text
//! clr ← lr / (1 + (t-1)·lr_decay)
//! g ← g + wd·p                                   (L2 penalty, only on decayed tensors)
//! s ← s + g²                                     (s starts at initial_accumulator_value)
//! p ← p - clr · g / (√s + ε)
//! ```

use super::groups::{default_groups, groups_in_chunk, TensorGroup};
use super::CHUNK;
use crate::model::ParamLayout;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdagradConfig {
    pub lr_decay: f32,
    pub weight_decay: f32,
    pub initial_accumulator_value: f32,
    pub eps: f32,
    /// Also decay embedding tables (matrices always are; biases and norm gains never).
    pub decay_embeddings: bool,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        AdagradConfig {
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            decay_embeddings: false,
        }
    }
}

/// Adagrad state: the sum of squared gradients in the parameters' flat layout.
pub struct Adagrad {
    pub config: AdagradConfig,
    pub sum: Vec<f32>,
    /// Number of updates taken so far (drives the `lr_decay` schedule).
    pub t: u64,
    pub(crate) groups: Vec<TensorGroup>,
    /// ZeRO-1: the parameters whose state this optimizer holds (see [`super::Optimizer::shard`]).
    pub(crate) shard: Option<std::ops::Range<usize>>,
}

impl Adagrad {
    pub fn new(config: AdagradConfig, layout: &ParamLayout) -> Self {
        let groups = default_groups(layout, config.weight_decay, config.decay_embeddings);
        Adagrad { sum: vec![config.initial_accumulator_value; layout.total], t: 0, groups, config, shard: None }
    }

    /// Replaces the default per-tensor settings (see [`super::groups`]).
    pub fn set_groups(&mut self, groups: Vec<TensorGroup>) {
        self.groups = groups;
    }

    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        self.step_scaled(params, grads, lr, 1.0);
    }

    /// One update with the gradients multiplied by `grad_scale` as they are read.
    pub fn step_scaled(&mut self, params: &mut [f32], grads: &[f32], lr: f32, grad_scale: f32) {
        assert_eq!(params.len(), grads.len());
        self.t += 1;
        let eps = self.config.eps;
        let clr = (lr as f64 / (1.0 + (self.t - 1) as f64 * self.config.lr_decay as f64)) as f32;
        let groups = &self.groups;
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(self.sum.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(ci, ((p, g), s))| {
                for (range, wd, lr_scale) in groups_in_chunk(groups, ci * CHUNK, p.len()) {
                    let clr = clr * lr_scale;
                    for i in range {
                        let gi = g[i] * grad_scale + wd * p[i];
                        s[i] += gi * gi;
                        p[i] -= clr * gi / (s[i].sqrt() + eps);
                    }
                }
            });
    }
}
