//! RMSNorm over the last dimension (llama; `torch.nn.RMSNorm(C, eps)`):
//! `out = x / sqrt(mean(x²) + eps) · w`, with `mean` over the `C` channels of one row. Unlike
//! LayerNorm there is no mean subtraction and no bias. The backward pass, with `s = rstd`,
//! `x̂ = x·s` and `g = dout·w`, is `dx = s · (g - x̂ · mean(g·x̂))` and `dw = Σ_rows dout·x̂`.

use super::isa::multiversion;
use super::{math, COLUMN_CHUNK, MIN_ROWS_PER_TASK};
use rayon::prelude::*;

/// out (N, C), rstd (N) = 1/sqrt(mean(x²) + eps) from inp (N, C), weight (C).
pub fn rmsnorm_forward(out: &mut [f32], rstd: &mut [f32], inp: &[f32], weight: &[f32], c: usize, eps: f32) {
    let n = rstd.len();
    assert!(out.len() == n * c && inp.len() == n * c && weight.len() == c, "rmsnorm_forward: shape mismatch");
    out.par_chunks_mut(c)
        .zip(rstd.par_iter_mut())
        .zip(inp.par_chunks(c))
        .with_min_len(MIN_ROWS_PER_TASK)
        .for_each(|((o, r), x)| *r = rmsnorm_row(o, x, weight, eps));
}

multiversion! {
    /// One row: o = x · rstd · w; returns rstd.
    fn rmsnorm_row(o: &mut [f32], x: &[f32], weight: &[f32], eps: f32) -> f32 {
        let c = x.len();
        let (o, weight) = (&mut o[..c], &weight[..c]);
        let s = 1.0 / (math::dot(x, x) / c as f32 + eps).sqrt();
        for i in 0..c {
            o[i] = x[i] * s * weight[i];
        }
        s
    }
}

multiversion! {
    /// One row of the input gradient: di += s · (dout·w − x̂ · mean(dout·w·x̂)).
    fn rmsnorm_row_backward(di: &mut [f32], d: &[f32], x: &[f32], weight: &[f32], s: f32) {
        let c = x.len();
        let (di, d, weight) = (&mut di[..c], &d[..c], &weight[..c]);
        // mean(g·x̂) = s · mean(dout·w·x)
        let mut gx = 0.0f32;
        for i in 0..c {
            gx += d[i] * weight[i] * x[i];
        }
        let gxhat_mean = gx * s / c as f32;
        for i in 0..c {
            let xhat = x[i] * s;
            di[i] += (d[i] * weight[i] - xhat * gxhat_mean) * s;
        }
    }
}

/// dinp (N, C) += ∂L/∂inp (it is the residual stream's gradient); dweight (C) += Σ_n dout·x̂,
/// from dout (N, C), inp (N, C), weight (C) and the forward pass's rstd (N).
pub fn rmsnorm_backward(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    rstd: &[f32],
    c: usize,
) {
    let n = rstd.len();
    assert!(
        dinp.len() == n * c && dout.len() == n * c && inp.len() == n * c && weight.len() == c && dweight.len() == c,
        "rmsnorm_backward: shape mismatch"
    );
    // Input gradient, row-parallel.
    dinp.par_chunks_mut(c)
        .zip(dout.par_chunks(c).zip(inp.par_chunks(c)))
        .zip(rstd.par_iter())
        .with_min_len(MIN_ROWS_PER_TASK)
        .for_each(|((di, (d, x)), &s)| rmsnorm_row_backward(di, d, x, weight, s));
    // Weight gradient, column-parallel so the sum over rows has a fixed order.
    dweight.par_chunks_mut(COLUMN_CHUNK).enumerate().for_each(|(j, dw)| {
        let c0 = j * COLUMN_CHUNK;
        for row in 0..n {
            let s = rstd[row];
            let d = &dout[row * c + c0..][..dw.len()];
            let x = &inp[row * c + c0..][..dw.len()];
            for i in 0..dw.len() {
                dw[i] += d[i] * x[i] * s;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::{avx512_or_skip, test_values, Level};

    #[test]
    fn avx512_copies_are_bit_identical() {
        if !avx512_or_skip("rmsnorm") {
            return;
        }
        for c in [7, 64, 385] {
            let (x, w, d) = (test_values(c, 1, 3.0), test_values(c, 2, 1.0), test_values(c, 3, 1.0));
            let (mut o1, mut o2) = (vec![0.0; c], vec![0.0; c]);
            let s1 = rmsnorm_row::on(Level::Avx2, &mut o1, &x, &w, 1e-5);
            let s2 = rmsnorm_row::on(Level::Avx512, &mut o2, &x, &w, 1e-5);
            assert_eq!((o1, s1), (o2, s2));
            let (mut g1, mut g2) = (vec![0.5; c], vec![0.5; c]);
            rmsnorm_row_backward::on(Level::Avx2, &mut g1, &d, &x, &w, s1);
            rmsnorm_row_backward::on(Level::Avx512, &mut g2, &d, &x, &w, s1);
            assert_eq!(g1, g2);
        }
    }
}
