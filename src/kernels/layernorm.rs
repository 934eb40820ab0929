//! LayerNorm over the last dimension: `out = (x - mean) / sqrt(var + eps) · w + b`.

use super::{COLUMN_CHUNK, MIN_ROWS_PER_TASK};
use rayon::prelude::*;

/// out (N, C), mean (N), rstd (N) from inp (N, C), weight (C), bias (C) optional. `eps` is
/// PyTorch's `nn.LayerNorm` default 1e-5 for GPT-2, 1e-12 for BERT. The backward pass needs no
/// eps: it reads the `rstd` stored here.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    c: usize,
    eps: f32,
) {
    let _p = crate::profile::scope(crate::profile::Op::LayerNormFwd);
    out.par_chunks_mut(c)
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .zip(inp.par_chunks(c))
        .with_min_len(MIN_ROWS_PER_TASK)
        .for_each(|((o, (m, r)), x)| {
            let mu = x.iter().sum::<f32>() / c as f32;
            let var = x.iter().map(|&v| (v - mu) * (v - mu)).sum::<f32>() / c as f32;
            let s = 1.0 / (var + eps).sqrt();
            match bias {
                Some(b) => {
                    for i in 0..c {
                        o[i] = (x[i] - mu) * s * weight[i] + b[i];
                    }
                }
                None => {
                    for i in 0..c {
                        o[i] = (x[i] - mu) * s * weight[i];
                    }
                }
            }
            *m = mu;
            *r = s;
        });
}

/// dinp (N, C) += ∂L/∂inp; dweight (C) += Σ_n dout·x̂; dbias (C) += Σ_n dout.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    c: usize,
) {
    let _p = crate::profile::scope(crate::profile::Op::LayerNormBwd);
    let n = mean.len();
    // Input gradient, row-parallel:
    // dx = rstd · (dx̂ - mean(dx̂) - x̂ · mean(dx̂ · x̂)), with dx̂ = dout · w.
    dinp.par_chunks_mut(c)
        .zip(dout.par_chunks(c).zip(inp.par_chunks(c)))
        .zip(mean.par_iter().zip(rstd.par_iter()))
        .with_min_len(MIN_ROWS_PER_TASK)
        .for_each(|((di, (d, x)), (&mu, &s))| {
            let mut dnorm_mean = 0.0f32;
            let mut dnorm_norm_mean = 0.0f32;
            for i in 0..c {
                let xhat = (x[i] - mu) * s;
                let dn = d[i] * weight[i];
                dnorm_mean += dn;
                dnorm_norm_mean += dn * xhat;
            }
            dnorm_mean /= c as f32;
            dnorm_norm_mean /= c as f32;
            for i in 0..c {
                let xhat = (x[i] - mu) * s;
                let dn = d[i] * weight[i];
                di[i] += (dn - dnorm_mean - xhat * dnorm_norm_mean) * s;
            }
        });
    // Parameter gradients, column-parallel so the sum over rows has a fixed order.
    let column_pass = |dw: &mut [f32], mut db: Option<&mut [f32]>, c0: usize| {
        for row in 0..n {
            let (mu, s) = (mean[row], rstd[row]);
            let d = &dout[row * c + c0..row * c + c0 + dw.len()];
            let x = &inp[row * c + c0..row * c + c0 + dw.len()];
            for i in 0..dw.len() {
                dw[i] += d[i] * (x[i] - mu) * s;
            }
            if let Some(db) = db.as_deref_mut() {
                for i in 0..db.len() {
                    db[i] += d[i];
                }
            }
        }
    };
    match dbias {
        Some(db) => dweight
            .par_chunks_mut(COLUMN_CHUNK)
            .zip(db.par_chunks_mut(COLUMN_CHUNK))
            .enumerate()
            .for_each(|(j, (dw, db))| column_pass(dw, Some(db), j * COLUMN_CHUNK)),
        None => {
            dweight.par_chunks_mut(COLUMN_CHUNK).enumerate().for_each(|(j, dw)| column_pass(dw, None, j * COLUMN_CHUNK))
        }
    }
}
