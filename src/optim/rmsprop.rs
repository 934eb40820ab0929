//! RMSprop (Hinton), with PyTorch's `torch.optim.RMSprop` update rule:
//!
//! ```text
//! g ← g + wd·p                                   (L2 penalty, only on decayed tensors)
//! v ← α·v + (1-α)·g²
//! ṽ ← v - ḡ²  with  ḡ ← α·ḡ + (1-α)·g  (centered)  or  v  (otherwise)
//! b ← μ·b + g / (√ṽ + ε) ;  p ← p - lr·b        (μ ≠ 0)
//! p ← p - lr · g / (√ṽ + ε)                      (μ = 0)
//! ```

use super::groups::{default_groups, groups_in_chunk, TensorGroup};
use super::{state_chunks, state_vec, CHUNK};
use crate::model::ParamLayout;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RmsPropConfig {
    /// Smoothing constant of the squared-gradient average.
    pub alpha: f32,
    pub eps: f32,
    pub momentum: f32,
    /// Normalise by an estimate of the gradient's variance instead of its second moment.
    pub centered: bool,
    pub weight_decay: f32,
    /// Also decay embedding tables (matrices always are; biases and norm gains never).
    pub decay_embeddings: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig {
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            centered: false,
            weight_decay: 0.0,
            decay_embeddings: false,
        }
    }
}

/// RMSprop state in the parameters' flat layout; `grad_avg` is empty unless centered and
/// `momentum_buf` empty at momentum 0.
pub struct RmsProp {
    pub config: RmsPropConfig,
    pub square_avg: Vec<f32>,
    pub grad_avg: Vec<f32>,
    pub momentum_buf: Vec<f32>,
    /// Number of updates taken so far.
    pub t: u64,
    pub(crate) groups: Vec<TensorGroup>,
    /// ZeRO-1: the parameters whose state this optimizer holds (see [`super::Optimizer::shard`]).
    pub(crate) shard: Option<std::ops::Range<usize>>,
}

impl RmsProp {
    pub fn new(config: RmsPropConfig, layout: &ParamLayout) -> Self {
        let groups = default_groups(layout, config.weight_decay, config.decay_embeddings);
        let n = layout.total;
        let grad_avg = state_vec(config.centered, n);
        let momentum_buf = state_vec(config.momentum > 0.0, n);
        RmsProp { square_avg: vec![0.0; n], grad_avg, momentum_buf, t: 0, groups, config, shard: None }
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
        let RmsPropConfig { alpha, eps, momentum, centered, .. } = self.config;
        let use_momentum = momentum > 0.0;
        let n_chunks = params.len().div_ceil(CHUNK);
        let groups = &self.groups;
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(self.square_avg.par_chunks_mut(CHUNK))
            .zip(state_chunks(&mut self.grad_avg, n_chunks).zip(state_chunks(&mut self.momentum_buf, n_chunks)))
            .enumerate()
            .for_each(|(ci, (((p, g), v), (g_avg, b)))| {
                for (range, wd, lr_scale) in groups_in_chunk(groups, ci * CHUNK, p.len()) {
                    let lr = lr * lr_scale;
                    for i in range {
                        let gi = g[i] * grad_scale + wd * p[i];
                        v[i] = alpha * v[i] + (1.0 - alpha) * gi * gi;
                        let var = if centered {
                            g_avg[i] = alpha * g_avg[i] + (1.0 - alpha) * gi;
                            v[i] - g_avg[i] * g_avg[i]
                        } else {
                            v[i]
                        };
                        let update = gi / (var.sqrt() + eps);
                        if use_momentum {
                            b[i] = momentum * b[i] + update;
                            p[i] -= lr * b[i];
                        } else {
                            p[i] -= lr * update;
                        }
                    }
                }
            });
    }
}
