//! AdamW (Loshchilov & Hutter), with PyTorch's `torch.optim.AdamW` update rule:
//!
//! ```text
//! p ← p · (1 - lr·wd)                      (decoupled decay, only on decayed tensors)
//! m ← β1·m + (1-β1)·g ;  v ← β2·v + (1-β2)·g²
//! p ← p - (lr / (1-β1ᵗ)) · m / (√v / √(1-β2ᵗ) + ε)
//! ```

use super::groups::{default_groups, groups_in_chunk, TensorGroup};
use super::CHUNK;
use crate::kernels::isa::multiversion;
use crate::model::ParamLayout;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Also decay embedding tables (nanoGPT decays every 2-D tensor, embeddings included).
    #[serde(default)]
    pub decay_embeddings: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decay_embeddings: false }
    }
}

/// AdamW state: first and second moments in the parameters' flat layout.
pub struct AdamW {
    pub config: AdamWConfig,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Number of updates taken so far (the `t` of the bias corrections).
    pub t: u64,
    /// Per-tensor weight decay and learning-rate multiplier.
    pub(crate) groups: Vec<TensorGroup>,
    /// ZeRO-1: the parameters whose state this optimizer holds (see [`super::Optimizer::shard`]).
    pub(crate) shard: Option<std::ops::Range<usize>>,
}

impl AdamW {
    pub fn new(config: AdamWConfig, layout: &ParamLayout) -> Self {
        let groups = default_groups(layout, config.weight_decay, config.decay_embeddings);
        AdamW { m: vec![0.0; layout.total], v: vec![0.0; layout.total], t: 0, groups, config, shard: None }
    }

    /// One update of `params` with `grads` at learning rate `lr`.
    /// Replaces the default per-tensor settings (see [`super::groups`]).
    pub fn set_groups(&mut self, groups: Vec<TensorGroup>) {
        self.groups = groups;
    }

    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        self.step_scaled(params, grads, lr, 1.0);
    }

    /// One update with the gradients multiplied by `grad_scale` on the fly (the global-norm
    /// clipping factor), saving a separate pass that would rescale the gradient buffer.
    pub fn step_scaled(&mut self, params: &mut [f32], grads: &[f32], lr: f32, grad_scale: f32) {
        let _p = crate::profile::scope(crate::profile::Op::AdamW);
        self.t += 1;
        let AdamWConfig { beta1, beta2, eps, .. } = self.config;
        let bc1 = 1.0 - (beta1 as f64).powi(self.t as i32);
        let bc2 = 1.0 - (beta2 as f64).powi(self.t as i32);
        let step_size = (lr as f64 / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let groups = &self.groups;
        // One parallel loop over fixed chunks of the whole flat buffer; a chunk that spans two
        // tensors applies each one's weight decay to its own part.
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(self.m.par_chunks_mut(CHUNK).zip(self.v.par_chunks_mut(CHUNK)))
            .enumerate()
            .for_each(|(ci, ((p, g), (m, v)))| {
                for (range, wd, lr_scale) in groups_in_chunk(groups, ci * CHUNK, p.len()) {
                    let (lr, step_size) = (lr * lr_scale, step_size * lr_scale);
                    let decay = 1.0 - lr * wd;
                    let h = AdamWStep { beta1, beta2, eps, bc2_sqrt, step_size, decay, grad_scale };
                    let r = range;
                    adamw_update(&mut p[r.clone()], &g[r.clone()], &mut m[r.clone()], &mut v[r], h);
                }
            });
    }
}

/// The scalars of one AdamW update of a run of parameters.
#[derive(Clone, Copy)]
struct AdamWStep {
    beta1: f32,
    beta2: f32,
    eps: f32,
    bc2_sqrt: f32,
    step_size: f32,
    decay: f32,
    grad_scale: f32,
}

multiversion! {
    /// p, m, v updated in place from g (all the same length).
    fn adamw_update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: AdamWStep) {
        let n = p.len();
        let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            let gi = g[i] * h.grad_scale;
            m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * gi;
            v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * gi * gi;
            let denom = v[i].sqrt() / h.bc2_sqrt + h.eps;
            p[i] = p[i] * h.decay - h.step_size * m[i] / denom;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::{avx512_or_skip, test_values, Level};

    #[test]
    fn avx512_copy_is_bit_identical() {
        if !avx512_or_skip("adamw") {
            return;
        }
        let n = 1003;
        let h = AdamWStep {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            bc2_sqrt: 0.3,
            step_size: 1e-3,
            decay: 0.999,
            grad_scale: 0.7,
        };
        let g = test_values(n, 1, 1.0);
        let (mut p1, mut m1, mut v1) = (test_values(n, 2, 1.0), test_values(n, 3, 0.1), vec![0.01; n]);
        let (mut p2, mut m2, mut v2) = (p1.clone(), m1.clone(), v1.clone());
        adamw_update::on(Level::Avx2, &mut p1, &g, &mut m1, &mut v1, h);
        adamw_update::on(Level::Avx512, &mut p2, &g, &mut m2, &mut v2, h);
        assert_eq!((p1, m1, v1), (p2, m2, v2));
    }
}
