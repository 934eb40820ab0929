//! Softmax + cross-entropy over the vocabulary, fused, with an ignore index.
//!
//! Rows whose target is negative (the ignore index, -1, as in nanoGPT) contribute neither loss
//! nor gradient; the mean is over the rows that count.
//!
//! Label smoothing ε (Szegedy et al.; PyTorch's `label_smoothing`) mixes the one-hot target with
//! the uniform distribution: loss = (1-ε)·(-log p_t) + (ε/V)·Σ_j -log p_j.

use super::math;
use super::MIN_ROWS_PER_TASK;
use rayon::prelude::*;

/// Target value that marks a position to skip.
pub const IGNORE_INDEX: i32 = -1;

/// losses (N) = `-log softmax(logits (N, V))[target]` (with label smoothing `eps`: the mix above);
/// 0 for ignored rows. Returns (Σ losses, number of counted rows).
pub fn crossentropy_forward(losses: &mut [f32], logits: &[f32], targets: &[i32], v: usize, eps: f32) -> (f64, usize) {
    let _p = crate::profile::scope(crate::profile::Op::CrossEntropyFwd);
    losses.par_iter_mut().zip(logits.par_chunks(v).zip(targets.par_iter())).with_min_len(MIN_ROWS_PER_TASK).for_each(
        |(l, (row, &tgt))| {
            *l = if tgt < 0 {
                0.0
            } else {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row.iter().map(|&x| math::exp(x - max)).sum();
                let lse = sum.ln() + max;
                let nll = lse - row[tgt as usize];
                if eps == 0.0 {
                    nll
                } else {
                    // Σ_j -log p_j = V·lse - Σ_j x_j
                    let mean_nll = lse - row.iter().sum::<f32>() / v as f32;
                    (1.0 - eps) * nll + eps * mean_nll
                }
            };
        },
    );
    // Sequential f64 sum: fixed order, so the loss is identical for any thread count.
    let total = losses.iter().map(|&l| l as f64).sum::<f64>();
    let count = targets.iter().filter(|&&t| t >= 0).count();
    (total, count)
}

/// dlogits (N, V) = scale · (softmax(logits) - (1-ε)·onehot(target) - ε/V) for counted rows, 0
/// for ignored ones (ε = 0: softmax - onehot). With `scale = 1 / count` this is the gradient of
/// the mean loss.
pub fn crossentropy_backward(dlogits: &mut [f32], logits: &[f32], targets: &[i32], v: usize, scale: f32, eps: f32) {
    let _p = crate::profile::scope(crate::profile::Op::CrossEntropyBwd);
    dlogits
        .par_chunks_mut(v)
        .zip(logits.par_chunks(v).zip(targets.par_iter()))
        .with_min_len(MIN_ROWS_PER_TASK)
        .for_each(|(d, (row, &tgt))| {
            if tgt < 0 {
                d.fill(0.0);
                return;
            }
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|&x| math::exp(x - max)).sum();
            let inv = 1.0 / sum;
            let (on, off) = (1.0 - eps + eps / v as f32, eps / v as f32);
            for (i, (d, &x)) in d.iter_mut().zip(row).enumerate() {
                let p = math::exp(x - max) * inv;
                let y = if i == tgt as usize { on } else { off };
                *d = scale * (p - y);
            }
        });
}
