//! LoRA's low-rank update of a linear layer (Hu et al., 2021), as peft's `lora.Linear` computes
//! it: out (N, OC) += s · (x · Aᵀ) · Bᵀ with A (R, C), B (OC, R) and s = alpha / rank. The rank-R
//! product u = x · Aᵀ is kept for backward, so the update costs two thin GEMMs instead of
//! forming the (OC, C) matrix B·A.

use super::gemm::{sgemm, Threads};

/// u (N, R) = x (N, C) · Aᵀ (overwritten); out (N, OC) += scale · u · Bᵀ.
#[allow(clippy::too_many_arguments)]
pub fn lora_forward(
    out: &mut [f32],
    u: &mut [f32],
    x: &[f32],
    a: &[f32],
    b: &[f32],
    scale: f32,
    n: usize,
    c: usize,
    r: usize,
    oc: usize,
) {
    let _p = crate::profile::scope(crate::profile::Op::MatmulFwd);
    sgemm(false, true, n, r, c, 1.0, x, c, a, c, 0.0, u, r, Threads::Pool);
    sgemm(false, true, n, oc, r, scale, u, r, b, r, 1.0, out, oc, Threads::Pool);
}

/// Backward of [`lora_forward`] from dout (N, OC), with u (N, R) from the forward pass:
/// du (N, R) = scale · dout · B (scratch, overwritten);
/// dB (OC, R) += scale · doutᵀ · u;
/// dA (R, C) += duᵀ · x;
/// dx (N, C) += du · A (accumulated: the base layer's input gradient is already there).
#[allow(clippy::too_many_arguments)]
pub fn lora_backward(
    dx: &mut [f32],
    da: &mut [f32],
    db: &mut [f32],
    du: &mut [f32],
    dout: &[f32],
    x: &[f32],
    u: &[f32],
    a: &[f32],
    b: &[f32],
    scale: f32,
    n: usize,
    c: usize,
    r: usize,
    oc: usize,
) {
    let _p = crate::profile::scope(crate::profile::Op::MatmulBwd);
    sgemm(false, false, n, r, oc, scale, dout, oc, b, r, 0.0, du, r, Threads::Pool);
    sgemm(true, false, oc, r, n, scale, dout, oc, u, r, 1.0, db, r, Threads::Pool);
    sgemm(true, false, r, c, n, 1.0, du, r, x, c, 1.0, da, c, Threads::Pool);
    sgemm(false, false, n, c, r, 1.0, du, r, a, c, 1.0, dx, c, Threads::Pool);
}

/// W (OC, C) += scale · B (OC, R) · A (R, C): the adapter folded into the weight (merging).
pub fn lora_merge(w: &mut [f32], a: &[f32], b: &[f32], scale: f32, c: usize, r: usize, oc: usize) {
    sgemm(false, false, oc, c, r, scale, b, r, a, c, 1.0, w, c, Threads::Pool);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = crate::kernels::dropout::mix64(s.wrapping_add(0x9e37_79b9_7f4a_7c15));
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// The loss L = Σ g ⊙ out of the update alone (out starts at zero), in f64.
    fn loss(x: &[f32], a: &[f32], b: &[f32], g: &[f32], s: f32, (n, c, r, oc): (usize, usize, usize, usize)) -> f64 {
        let mut total = 0.0f64;
        for i in 0..n {
            let u: Vec<f64> = (0..r).map(|k| (0..c).map(|j| x[i * c + j] as f64 * a[k * c + j] as f64).sum()).collect();
            for o in 0..oc {
                let y: f64 = (0..r).map(|k| u[k] * b[o * r + k] as f64).sum::<f64>() * s as f64;
                total += y * g[i * oc + o] as f64;
            }
        }
        total
    }

    #[test]
    fn forward_is_the_low_rank_product_and_backward_matches_finite_differences() {
        let dims @ (n, c, r, oc) = (5, 7, 3, 6);
        let s = 2.5f32;
        let (x, a, b, g) = (rand(n * c, 1), rand(r * c, 2), rand(oc * r, 3), rand(n * oc, 4));
        let base = rand(n * oc, 5);
        let mut out = base.clone();
        let mut u = vec![0.0; n * r];
        lora_forward(&mut out, &mut u, &x, &a, &b, s, n, c, r, oc);
        // The update added to what was there: out - base = s·x·(B·A)ᵀ.
        let mut merged = vec![0.0; oc * c];
        lora_merge(&mut merged, &a, &b, s, c, r, oc);
        for i in 0..n {
            for o in 0..oc {
                let want: f32 = (0..c).map(|j| x[i * c + j] * merged[o * c + j]).sum();
                let got = out[i * oc + o] - base[i * oc + o];
                assert!((got - want).abs() < 1e-5, "({i},{o}): {got} vs {want}");
            }
        }
        let dx0 = rand(n * c, 6);
        let (mut dx, mut da, mut db, mut du) = (dx0.clone(), vec![0.0; r * c], vec![0.0; oc * r], vec![0.0; n * r]);
        lora_backward(&mut dx, &mut da, &mut db, &mut du, &g, &x, &u, &a, &b, s, n, c, r, oc);
        // Central differences of the loss in one element of one input, against its gradient.
        let h = 1e-3f32;
        let check = |what: &str, grad: &[f32], bump: &dyn Fn(usize, f32) -> f64| {
            for (k, g) in grad.iter().enumerate() {
                let fd = (bump(k, h) - bump(k, -h)) / (2.0 * h as f64);
                assert!((fd - *g as f64).abs() < 2e-3, "{what}[{k}]: fd {fd} vs {g}");
            }
        };
        let with = |v: &[f32], k: usize, e: f32| {
            let mut v = v.to_vec();
            v[k] += e;
            v
        };
        check("dA", &da, &|k, e| loss(&x, &with(&a, k, e), &b, &g, s, dims));
        check("dB", &db, &|k, e| loss(&x, &a, &with(&b, k, e), &g, s, dims));
        let dx_update: Vec<f32> = dx.iter().zip(&dx0).map(|(d, d0)| d - d0).collect();
        check("dx", &dx_update, &|k, e| loss(&with(&x, k, e), &a, &b, &g, s, dims));
    }
}
