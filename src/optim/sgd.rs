//! SGD with momentum, with PyTorch's `torch.optim.SGD` update rule:
//!
//! ```text
//! g ← g + wd·p                                   (L2 penalty, only on decayed tensors)
//! b ← g  at the first step,  μ·b + (1-τ)·g  after (μ momentum, τ dampening; only if μ ≠ 0)
//! g ← g + μ·b  (nesterov)  or  b  (otherwise)
//! p ← p - lr·g
//! ```

use super::groups::{default_groups, groups_in_chunk, TensorGroup};
use super::{state_chunks, state_vec, CHUNK};
use crate::model::ParamLayout;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SgdConfig {
    pub momentum: f32,
    pub dampening: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    /// Also decay embedding tables (matrices always are; biases and norm gains never).
    pub decay_embeddings: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig { momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0, decay_embeddings: false }
    }
}

/// SGD state: the momentum buffer in the parameters' flat layout (empty at momentum 0).
pub struct Sgd {
    pub config: SgdConfig,
    pub momentum_buf: Vec<f32>,
    /// Number of updates taken so far (the first one initialises the momentum buffer).
    pub t: u64,
    pub(crate) groups: Vec<TensorGroup>,
    /// ZeRO-1: the parameters whose state this optimizer holds (see [`super::Optimizer::shard`]).
    pub(crate) shard: Option<std::ops::Range<usize>>,
}

impl Sgd {
    pub fn new(config: SgdConfig, layout: &ParamLayout) -> Self {
        let groups = default_groups(layout, config.weight_decay, config.decay_embeddings);
        let momentum_buf = state_vec(config.momentum != 0.0, layout.total);
        Sgd { config, momentum_buf, t: 0, groups, shard: None }
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
        let first = self.t == 1;
        let SgdConfig { momentum, dampening, nesterov, .. } = self.config;
        let use_momentum = momentum != 0.0;
        let n_chunks = params.len().div_ceil(CHUNK);
        let groups = &self.groups;
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(state_chunks(&mut self.momentum_buf, n_chunks))
            .enumerate()
            .for_each(|(ci, ((p, g), b))| {
                for (range, wd, lr_scale) in groups_in_chunk(groups, ci * CHUNK, p.len()) {
                    let lr = lr * lr_scale;
                    for i in range {
                        let mut gi = g[i] * grad_scale + wd * p[i];
                        if use_momentum {
                            b[i] = if first { gi } else { momentum * b[i] + (1.0 - dampening) * gi };
                            gi = if nesterov { gi + momentum * b[i] } else { b[i] };
                        }
                        p[i] -= lr * gi;
                    }
                }
            });
    }
}
