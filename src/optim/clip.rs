//! Global-norm gradient clipping (as `torch.nn.utils.clip_grad_norm_`).

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
