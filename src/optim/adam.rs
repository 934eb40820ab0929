//! Adam (Kingma & Ba), with PyTorch's `torch.optim.Adam` update rule. Unlike AdamW the weight
//! decay is an L2 penalty added to the gradient, so it also passes through the moments:
//!
//! ```text
//! g ← g + wd·p                                   (only on decayed tensors)
//! m ← β1·m + (1-β1)·g ;  v ← β2·v + (1-β2)·g²
//! v̂ ← max(v̂, v)  (amsgrad)  or  v  (otherwise)
//! p ← p - (lr / (1-β1ᵗ)) · m / (√v̂ / √(1-β2ᵗ) + ε)
//! ```

use super::groups::{default_groups, groups_in_chunk, TensorGroup};
use super::{state_chunks, state_vec, CHUNK};
use crate::model::ParamLayout;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Keep the running maximum of `v` and normalise by it (Reddi et al.).
    pub amsgrad: bool,
    /// Also decay embedding tables (matrices always are; biases and norm gains never).
    pub decay_embeddings: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, amsgrad: false, decay_embeddings: false }
    }
}

/// Adam state: moments in the parameters' flat layout; `v_max` is empty unless amsgrad.
pub struct Adam {
    pub config: AdamConfig,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub v_max: Vec<f32>,
    /// Number of updates taken so far (the `t` of the bias corrections).
    pub t: u64,
    pub(crate) groups: Vec<TensorGroup>,
    /// ZeRO-1: the parameters whose state this optimizer holds (see [`super::Optimizer::shard`]).
    pub(crate) shard: Option<std::ops::Range<usize>>,
}

impl Adam {
    pub fn new(config: AdamConfig, layout: &ParamLayout) -> Self {
        let groups = default_groups(layout, config.weight_decay, config.decay_embeddings);
        let n = layout.total;
        let v_max = state_vec(config.amsgrad, n);
        Adam { m: vec![0.0; n], v: vec![0.0; n], v_max, t: 0, groups, config, shard: None }
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
        let AdamConfig { beta1, beta2, eps, amsgrad, .. } = self.config;
        let bc1 = 1.0 - (beta1 as f64).powi(self.t as i32);
        let bc2 = 1.0 - (beta2 as f64).powi(self.t as i32);
        let step_size = (lr as f64 / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let n_chunks = params.len().div_ceil(CHUNK);
        let groups = &self.groups;
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(self.m.par_chunks_mut(CHUNK).zip(self.v.par_chunks_mut(CHUNK)))
            .zip(state_chunks(&mut self.v_max, n_chunks))
            .enumerate()
            .for_each(|(ci, (((p, g), (m, v)), v_max))| {
                for (range, wd, lr_scale) in groups_in_chunk(groups, ci * CHUNK, p.len()) {
                    let step_size = step_size * lr_scale;
                    for i in range {
                        let gi = g[i] * grad_scale + wd * p[i];
                        m[i] = beta1 * m[i] + (1.0 - beta1) * gi;
                        v[i] = beta2 * v[i] + (1.0 - beta2) * gi * gi;
                        let v_hat = if amsgrad {
                            v_max[i] = v_max[i].max(v[i]);
                            v_max[i]
                        } else {
                            v[i]
                        };
                        let denom = v_hat.sqrt() / bc2_sqrt + eps;
                        p[i] -= step_size * m[i] / denom;
                    }
                }
            });
    }
}
