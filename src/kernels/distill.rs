//! Knowledge distillation's loss (Hinton et al., 2015), fused with the cross-entropy, per row:
//!
//! ```text
//! loss = α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1−α)·CE_ε(s, target)
//! ∂loss/∂s = α·T·(softmax(s/T) − softmax(t/T)) + (1−α)·(softmax(s) − y_ε)
//! ```
//!
//! s are the student's logits, t the teacher's, T the temperature, α the weight of the soft
//! term, CE_ε the cross-entropy with label smoothing ε and y_ε its smoothed one-hot target
//! (`kernels::crossentropy`). The T² keeps the soft term's gradient on the scale of the hard
//! one's as T grows. PyTorch's `T² · F.kl_div(log_softmax(s/T), log_softmax(t/T),
//! log_target=True, reduction="batchmean")` is the soft term's mean over rows. Rows whose target
//! is negative (ignored) contribute nothing, as in the cross-entropy.

use super::math;
use super::MIN_ROWS_PER_TASK;
use rayon::prelude::*;

/// The distillation settings of a training run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DistillLoss {
    pub temperature: f32,
    pub alpha: f32,
}

/// (max, log Σ exp(x/T − max)) of a row scaled by 1/T: log-softmax(x/T)_j = x_j/T − max − lse.
fn lse_scaled(row: &[f32], inv_t: f32) -> (f32, f32) {
    let max = row.iter().map(|&x| x * inv_t).fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| math::exp(x * inv_t - max)).sum();
    (max, sum.ln())
}

/// losses (N) of the fused loss above for logits `s` (N, V) and teacher logits `t` (N, V);
/// 0 for ignored rows. Returns (Σ losses, number of counted rows).
pub fn distill_forward(
    losses: &mut [f32],
    s: &[f32],
    t: &[f32],
    targets: &[i32],
    v: usize,
    d: DistillLoss,
    eps: f32,
) -> (f64, usize) {
    let inv_t = 1.0 / d.temperature;
    let t2 = d.temperature * d.temperature;
    losses
        .par_iter_mut()
        .zip(s.par_chunks(v).zip(t.par_chunks(v)).zip(targets.par_iter()))
        .with_min_len(MIN_ROWS_PER_TASK)
        .for_each(|(l, ((srow, trow), &tgt))| {
            if tgt < 0 {
                *l = 0.0;
                return;
            }
            // Hard term: the cross-entropy at temperature 1 (with label smoothing).
            let (m1, l1) = lse_scaled(srow, 1.0);
            let lse = m1 + l1;
            let nll = lse - srow[tgt as usize];
            let hard =
                if eps == 0.0 { nll } else { (1.0 - eps) * nll + eps * (lse - srow.iter().sum::<f32>() / v as f32) };
            // Soft term: Σ p_t (log p_t − log p_s) at temperature T.
            let (ms, ls) = lse_scaled(srow, inv_t);
            let (mt, lt) = lse_scaled(trow, inv_t);
            let mut kl = 0.0f32;
            for (&x, &y) in srow.iter().zip(trow) {
                let log_pt = y * inv_t - mt - lt;
                let log_ps = x * inv_t - ms - ls;
                kl += math::exp(log_pt) * (log_pt - log_ps);
            }
            *l = d.alpha * t2 * kl + (1.0 - d.alpha) * hard;
        });
    let total = losses.iter().map(|&l| l as f64).sum::<f64>();
    (total, targets.iter().filter(|&&t| t >= 0).count())
}

/// dlogits (N, V) = scale · ∂loss/∂s (above) for counted rows, 0 for ignored ones; with
/// `scale = 1 / count` the gradient of the mean loss.
#[allow(clippy::too_many_arguments)]
pub fn distill_backward(
    dlogits: &mut [f32],
    s: &[f32],
    t: &[f32],
    targets: &[i32],
    v: usize,
    d: DistillLoss,
    scale: f32,
    eps: f32,
) {
    let inv_t = 1.0 / d.temperature;
    let (soft, hard) = (scale * d.alpha * d.temperature, scale * (1.0 - d.alpha));
    let (on, off) = (1.0 - eps + eps / v as f32, eps / v as f32);
    dlogits
        .par_chunks_mut(v)
        .zip(s.par_chunks(v).zip(t.par_chunks(v)).zip(targets.par_iter()))
        .with_min_len(MIN_ROWS_PER_TASK)
        .for_each(|(dr, ((srow, trow), &tgt))| {
            if tgt < 0 {
                dr.fill(0.0);
                return;
            }
            let (m1, l1) = lse_scaled(srow, 1.0);
            let (ms, ls) = lse_scaled(srow, inv_t);
            let (mt, lt) = lse_scaled(trow, inv_t);
            for (i, (dx, (&x, &y))) in dr.iter_mut().zip(srow.iter().zip(trow)).enumerate() {
                let p = math::exp(x - m1 - l1);
                let ps = math::exp(x * inv_t - ms - ls);
                let pt = math::exp(y * inv_t - mt - lt);
                let target = if i == tgt as usize { on } else { off };
                *dx = soft * (ps - pt) + hard * (p - target);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_zero_is_the_cross_entropy_and_equal_logits_have_no_soft_loss() {
        use crate::kernels::crossentropy::{crossentropy_backward, crossentropy_forward};
        let (n, v) = (3, 5);
        let s: Vec<f32> = (0..n * v).map(|i| ((i * 7) % 11) as f32 * 0.3 - 1.0).collect();
        let t: Vec<f32> = (0..n * v).map(|i| ((i * 5) % 13) as f32 * 0.2).collect();
        let targets = [1, -1, 4];
        let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
        let hard = DistillLoss { temperature: 2.0, alpha: 0.0 };
        let (sa, ca) = distill_forward(&mut a, &s, &t, &targets, v, hard, 0.1);
        let (sb, cb) = crossentropy_forward(&mut b, &s, &targets, v, 0.1);
        assert_eq!(ca, cb);
        assert!((sa - sb).abs() < 1e-5, "{sa} {sb}");
        let (mut da, mut db) = (vec![0.0; n * v], vec![0.0; n * v]);
        distill_backward(&mut da, &s, &t, &targets, v, hard, 0.5, 0.1);
        crossentropy_backward(&mut db, &s, &targets, v, 0.5, 0.1);
        for (x, y) in da.iter().zip(&db) {
            assert!((x - y).abs() < 1e-6);
        }
        // Student = teacher, α = 1: no loss and no gradient.
        let soft = DistillLoss { temperature: 3.0, alpha: 1.0 };
        let (sum, _) = distill_forward(&mut a, &s, &s, &targets, v, soft, 0.0);
        assert!(sum.abs() < 1e-5, "{sum}");
        distill_backward(&mut da, &s, &s, &targets, v, soft, 1.0, 0.0);
        assert!(da.iter().all(|g| g.abs() < 1e-6));
    }
}
