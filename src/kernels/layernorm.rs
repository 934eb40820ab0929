//! LayerNorm over the last dimension: `out = (x - mean) / sqrt(var + eps) · w + b`.

use super::isa::multiversion;
use super::math;
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
        .for_each(|((o, (m, r)), x)| (*m, *r) = layernorm_row(o, x, weight, bias, eps));
}

multiversion! {
    /// One row: out = x̂ · w + b; returns (mean, 1/std).
    fn layernorm_row(o: &mut [f32], x: &[f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) -> (f32, f32) {
        let c = x.len();
        let mu = math::sum(x) / c as f32;
        let var = math::sum_sq_dev(x, mu) / c as f32;
        let s = 1.0 / (var + eps).sqrt();
        let (o, weight) = (&mut o[..c], &weight[..c]);
        match bias {
            Some(b) => {
                let b = &b[..c];
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
        (mu, s)
    }
}

multiversion! {
    /// One row of the input gradient: di += rstd · (dx̂ - mean(dx̂) - x̂ · mean(dx̂ · x̂)).
    fn layernorm_row_backward(di: &mut [f32], d: &[f32], x: &[f32], weight: &[f32], mu: f32, s: f32) {
        let c = x.len();
        let (di, d, weight) = (&mut di[..c], &d[..c], &weight[..c]);
        let mut acc_dn = [0.0f32; 8];
        let mut acc_dnx = [0.0f32; 8];
        let full = c / 8 * 8;
        for i0 in (0..full).step_by(8) {
            for l in 0..8 {
                let i = i0 + l;
                let dn = d[i] * weight[i];
                acc_dn[l] += dn;
                acc_dnx[l] += dn * ((x[i] - mu) * s);
            }
        }
        let (mut dnorm_mean, mut dnorm_norm_mean) = (math::fold8(acc_dn), math::fold8(acc_dnx));
        for i in full..c {
            let dn = d[i] * weight[i];
            dnorm_mean += dn;
            dnorm_norm_mean += dn * ((x[i] - mu) * s);
        }
        dnorm_mean /= c as f32;
        dnorm_norm_mean /= c as f32;
        for i in 0..c {
            let xhat = (x[i] - mu) * s;
            let dn = d[i] * weight[i];
            di[i] += (dn - dnorm_mean - xhat * dnorm_norm_mean) * s;
        }
    }
}

multiversion! {
    /// dw[i] += d[i]·x̂[i] and db[i] += d[i] over one row's slice of columns.
    fn layernorm_columns(dw: &mut [f32], db: Option<&mut [f32]>, d: &[f32], x: &[f32], mu: f32, s: f32) {
        let n = dw.len();
        let (d, x) = (&d[..n], &x[..n]);
        for i in 0..n {
            dw[i] += d[i] * (x[i] - mu) * s;
        }
        if let Some(db) = db {
            for i in 0..n {
                db[i] += d[i];
            }
        }
    }
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
        .for_each(|((di, (d, x)), (&mu, &s))| layernorm_row_backward(di, d, x, weight, mu, s));
    // Parameter gradients, column-parallel so the sum over rows has a fixed order.
    let column_pass = |dw: &mut [f32], mut db: Option<&mut [f32]>, c0: usize| {
        for row in 0..n {
            let (mu, s) = (mean[row], rstd[row]);
            let d = &dout[row * c + c0..row * c + c0 + dw.len()];
            let x = &inp[row * c + c0..row * c + c0 + dw.len()];
            layernorm_columns(dw, db.as_deref_mut(), d, x, mu, s);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::{avx512_or_skip, test_values, Level};

    #[test]
    fn avx512_copies_are_bit_identical() {
        if !avx512_or_skip("layernorm") {
            return;
        }
        for c in [7, 64, 384, 769] {
            let x = test_values(c, 1, 3.0);
            let (w, b, d) = (test_values(c, 2, 1.0), test_values(c, 3, 1.0), test_values(c, 4, 1.0));
            let (mut o1, mut o2) = (vec![0.0; c], vec![0.0; c]);
            let r1 = layernorm_row::on(Level::Avx2, &mut o1, &x, &w, Some(&b), 1e-5);
            let r2 = layernorm_row::on(Level::Avx512, &mut o2, &x, &w, Some(&b), 1e-5);
            assert_eq!((o1, r1), (o2, r2));
            let (mut g1, mut g2) = (vec![0.5; c], vec![0.5; c]);
            layernorm_row_backward::on(Level::Avx2, &mut g1, &d, &x, &w, r1.0, r1.1);
            layernorm_row_backward::on(Level::Avx512, &mut g2, &d, &x, &w, r1.0, r1.1);
            assert_eq!(g1, g2);
            let (mut w1, mut b1, mut w2, mut b2) = (vec![0.1; c], vec![0.2; c], vec![0.1; c], vec![0.2; c]);
            layernorm_columns::on(Level::Avx2, &mut w1, Some(&mut b1), &d, &x, r1.0, r1.1);
            layernorm_columns::on(Level::Avx512, &mut w2, Some(&mut b2), &d, &x, r1.0, r1.1);
            assert_eq!((w1, b1), (w2, b2));
        }
    }
}
