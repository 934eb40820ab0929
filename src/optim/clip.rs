//! Gradient clipping: by global norm (as `torch.nn.utils.clip_grad_norm_`) and by value (as
//! `torch.nn.utils.clip_grad_value_`).

use rayon::prelude::*;

const CHUNK: usize = 8192;

/// The factor clipping applies to gradients of global norm `norm`: `max_norm / (norm + 1e-6)`
/// when that is below one (PyTorch's formula), else 1.
pub fn clip_factor(norm: f32, max_norm: f32) -> f32 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

/// ‖g‖₂ over the whole flat gradient buffer. The buffer is cut into a fixed number of parts
/// summed in f64 in parallel and combined in order, so the result does not depend on the thread
/// count, and nothing is allocated.
pub fn grad_norm(grads: &[f32]) -> f32 {
    let _p = crate::profile::scope(crate::profile::Op::ClipGrad);
    const PARTS: usize = 64;
    let mut partial = [0f64; PARTS];
    let len = grads.len();
    let part = len.div_ceil(PARTS).max(1);
    partial.par_iter_mut().enumerate().for_each(|(i, s)| {
        let (lo, hi) = ((i * part).min(len), ((i + 1) * part).min(len));
        *s = grads[lo..hi].iter().map(|&x| x as f64 * x as f64).sum();
    });
    partial.iter().sum::<f64>().sqrt() as f32
}

/// Scales `grads` so their global norm is at most `max_norm`; returns the norm before clipping.
/// Like PyTorch, the factor is `max_norm / (norm + 1e-6)`, applied only when it is below one.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = grad_norm(grads);
    let coef = clip_factor(norm, max_norm);
    if coef < 1.0 {
        grads.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|g| *g *= coef));
    }
    norm
}

/// Clamps every gradient to [-clip_value, clip_value] (NaN stays NaN, so divergence is still
/// detected by the norm that follows).
pub fn clip_grad_value(grads: &mut [f32], clip_value: f32) {
    let _p = crate::profile::scope(crate::profile::Op::ClipGrad);
    grads.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|g| *g = g.clamp(-clip_value, clip_value)));
}

/// How a training step clips gradients: by value first (when `value > 0`), then by global norm
/// (when `norm > 0`; folded into the optimizer update).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clipping {
    pub norm: f32,
    pub value: f32,
}

impl Clipping {
    /// Global-norm clipping only.
    pub fn norm(max_norm: f32) -> Self {
        Clipping { norm: max_norm, value: 0.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_by_value_clamps_each_gradient() {
        let mut g = [0.5f32, -3.0, 2.0, -0.1, f32::NAN, 1.0];
        clip_grad_value(&mut g, 1.0);
        assert_eq!(&g[..4], &[0.5, -1.0, 1.0, -0.1]);
        assert!(g[4].is_nan());
        assert_eq!(g[5], 1.0);
    }

    #[test]
    fn clip_by_norm_matches_pytorch_formula() {
        let mut g = [3.0f32, 4.0];
        let norm = clip_grad_norm(&mut g, 1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        let coef = 1.0 / (5.0 + 1e-6);
        assert!((g[0] - 3.0 * coef).abs() < 1e-7 && (g[1] - 4.0 * coef).abs() < 1e-7);
    }
}
