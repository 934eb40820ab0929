//! BatchNorm over the `N = B·T` rows of each channel, as `torch.nn.BatchNorm1d(C)` applies to a
//! `(B, C, T)` tensor (here laid out `(N, C)`): `out = (x - μ_c) / sqrt(σ²_c + eps) · w_c + b_c`.
//! In training mode `μ_c` and `σ²_c` are the batch mean and biased variance of channel `c`, and
//! the running statistics move towards them as in PyTorch:
//! `running_mean = (1 - m)·running_mean + m·μ`, `running_var = (1 - m)·running_var + m·σ²·N/(N-1)`
//! (the unbiased variance). In eval mode `μ` and `σ²` are the running statistics. The training
//! backward pass goes through the batch statistics: with `s = rstd`, `x̂ = (x - μ)·s` and
//! `g = dout·w`, `dx = s · (g - mean_N(g) - x̂ · mean_N(g·x̂))`, `dw = Σ_N dout·x̂`, `db = Σ_N dout`.
//! The sums over rows run in f64, column-parallel with a fixed chunking (deterministic).

use super::{SendPtr, COLUMN_CHUNK, MIN_ROWS_PER_TASK};
use rayon::prelude::*;

/// PyTorch's defaults for `BatchNorm1d`.
pub const BN_EPS: f32 = 1e-5;
pub const BN_MOMENTUM: f32 = 0.1;

/// Training mode. out (N, C); mean (C), rstd (C) = batch mean and 1/sqrt(biased var + eps),
/// saved for the backward pass; running_mean (C), running_var (C) updated in place with
/// `momentum`; from inp (N, C), weight (C), bias (C) optional. Needs N > 1 (as PyTorch).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    c: usize,
    eps: f32,
    momentum: f32,
) {
    let n = inp.len() / c;
    assert!(
        out.len() == n * c
            && inp.len() == n * c
            && [mean.len(), rstd.len(), running_mean.len(), running_var.len(), weight.len()].iter().all(|&l| l == c)
            && bias.is_none_or(|b| b.len() == c),
        "batchnorm_forward_train: shape mismatch"
    );
    assert!(n > 1, "batchnorm_forward_train: training needs more than one row per channel");
    let (nf, m) = (n as f64, momentum as f64);
    // Statistics, column-parallel: two passes (mean, then squared deviations) for accuracy.
    mean.par_chunks_mut(COLUMN_CHUNK)
        .zip(rstd.par_chunks_mut(COLUMN_CHUNK))
        .zip(running_mean.par_chunks_mut(COLUMN_CHUNK).zip(running_var.par_chunks_mut(COLUMN_CHUNK)))
        .enumerate()
        .for_each(|(j, ((mu, rs), (rm, rv)))| {
            let (c0, w) = (j * COLUMN_CHUNK, mu.len());
            let mut sum = [0.0f64; COLUMN_CHUNK];
            for row in 0..n {
                let x = &inp[row * c + c0..][..w];
                for i in 0..w {
                    sum[i] += x[i] as f64;
                }
            }
            let mut mu64 = [0.0f64; COLUMN_CHUNK];
            for i in 0..w {
                mu64[i] = sum[i] / nf;
            }
            let mut sq = [0.0f64; COLUMN_CHUNK];
            for row in 0..n {
                let x = &inp[row * c + c0..][..w];
                for i in 0..w {
                    let d = x[i] as f64 - mu64[i];
                    sq[i] += d * d;
                }
            }
            for i in 0..w {
                let var = sq[i] / nf;
                mu[i] = mu64[i] as f32;
                rs[i] = (1.0 / (var + eps as f64).sqrt()) as f32;
                rm[i] = ((1.0 - m) * rm[i] as f64 + m * mu64[i]) as f32;
                rv[i] = ((1.0 - m) * rv[i] as f64 + m * sq[i] / (nf - 1.0)) as f32;
            }
        });
    normalize_rows(out, inp, mean, rstd, weight, bias, c);
}

/// Eval mode. out (N, C) from inp (N, C) with running_mean (C), running_var (C), weight (C),
/// bias (C) optional.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_eval(
    out: &mut [f32],
    inp: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    c: usize,
    eps: f32,
) {
    assert!(
        out.len() == inp.len()
            && inp.len().is_multiple_of(c)
            && running_mean.len() == c
            && running_var.len() == c
            && weight.len() == c
            && bias.is_none_or(|b| b.len() == c),
        "batchnorm_forward_eval: shape mismatch"
    );
    out.par_chunks_mut(c).zip(inp.par_chunks(c)).with_min_len(MIN_ROWS_PER_TASK).for_each(|(o, x)| {
        for i in 0..c {
            let s = 1.0 / (running_var[i] + eps).sqrt();
            o[i] = (x[i] - running_mean[i]) * s * weight[i] + bias.map_or(0.0, |b| b[i]);
        }
    });
}

/// out = (x - mean)·rstd·w + b, row-parallel, with per-channel mean and rstd.
fn normalize_rows(
    out: &mut [f32],
    inp: &[f32],
    mean: &[f32],
    rstd: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    c: usize,
) {
    out.par_chunks_mut(c).zip(inp.par_chunks(c)).with_min_len(MIN_ROWS_PER_TASK).for_each(|(o, x)| match bias {
        Some(b) => {
            for i in 0..c {
                o[i] = (x[i] - mean[i]) * rstd[i] * weight[i] + b[i];
            }
        }
        None => {
            for i in 0..c {
                o[i] = (x[i] - mean[i]) * rstd[i] * weight[i];
            }
        }
    });
}

/// Training-mode backward (through the batch statistics). dinp (N, C) += ∂L/∂inp;
/// dweight (C) += Σ_n dout·x̂; dbias (C) += Σ_n dout; from dout (N, C), inp (N, C), weight (C)
/// and the forward pass's mean (C), rstd (C).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
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
    let n = inp.len() / c;
    assert!(
        dinp.len() == n * c
            && dout.len() == n * c
            && inp.len() == n * c
            && [dweight.len(), weight.len(), mean.len(), rstd.len()].iter().all(|&l| l == c)
            && dbias.as_ref().is_none_or(|b| b.len() == c),
        "batchnorm_backward: shape mismatch"
    );
    let nf = n as f64;
    // Every task owns columns [c0, c0 + w) of every row of dinp: its input gradient needs the
    // column sums it has just computed, so it writes those strided columns itself.
    let dinp_ptr = SendPtr(dinp.as_mut_ptr());
    let column_pass = |dw: &mut [f32], db: Option<&mut [f32]>, c0: usize| {
        let w = dw.len();
        let (mu, rs, wt) = (&mean[c0..c0 + w], &rstd[c0..c0 + w], &weight[c0..c0 + w]);
        let mut sum_d = [0.0f64; COLUMN_CHUNK];
        let mut sum_dxhat = [0.0f64; COLUMN_CHUNK];
        for row in 0..n {
            let d = &dout[row * c + c0..][..w];
            let x = &inp[row * c + c0..][..w];
            for i in 0..w {
                sum_d[i] += d[i] as f64;
                sum_dxhat[i] += (d[i] * (x[i] - mu[i]) * rs[i]) as f64;
            }
        }
        for i in 0..w {
            dw[i] += sum_dxhat[i] as f32;
        }
        if let Some(db) = db {
            for i in 0..w {
                db[i] += sum_d[i] as f32;
            }
        }
        // dx = s·w·(dout - mean(dout) - x̂·mean(dout·x̂)): g = dout·w with w constant over rows.
        let mut mean_d = [0.0f32; COLUMN_CHUNK];
        let mut mean_dxhat = [0.0f32; COLUMN_CHUNK];
        let mut scale = [0.0f32; COLUMN_CHUNK];
        for i in 0..w {
            mean_d[i] = (sum_d[i] / nf) as f32;
            mean_dxhat[i] = (sum_dxhat[i] / nf) as f32;
            scale[i] = rs[i] * wt[i];
        }
        for row in 0..n {
            let d = &dout[row * c + c0..][..w];
            let x = &inp[row * c + c0..][..w];
            // SAFETY: row * c + c0 + w <= n * c = dinp.len(), and no other task touches these
            // columns (tasks own disjoint column ranges).
            let di = unsafe { std::slice::from_raw_parts_mut(dinp_ptr.get().add(row * c + c0), w) };
            for i in 0..w {
                let xhat = (x[i] - mu[i]) * rs[i];
                di[i] += scale[i] * (d[i] - mean_d[i] - xhat * mean_dxhat[i]);
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
