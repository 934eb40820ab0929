//! Linear layer: `out = inp · Wᵀ + b`, with `W` stored (OC, C) as PyTorch's `nn.Linear` does.

use super::gemm::{sgemm, Threads};
use super::COLUMN_CHUNK;
use rayon::prelude::*;

/// out (N, OC) = inp (N, C) · weight (OC, C)ᵀ + bias (OC)
pub fn matmul_forward(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    c: usize,
    oc: usize,
) {
    let _p = crate::profile::scope(crate::profile::Op::MatmulFwd);
    let out = &mut out[..n * oc];
    let beta = match bias {
        Some(b) => {
            // Start from the broadcast bias and let the GEMM accumulate onto it.
            out.par_chunks_mut(oc).for_each(|row| row.copy_from_slice(b));
            1.0
        }
        None => 0.0,
    };
    sgemm(false, true, n, oc, c, 1.0, inp, c, weight, c, beta, out, oc, Threads::Pool);
}

/// dinp (N, C) = dout (N, OC) · weight (OC, C) (overwritten);
/// dweight (OC, C) += doutᵀ · inp (N, C);
/// dbias (OC) += Σ_n dout.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    n: usize,
    c: usize,
    oc: usize,
) {
    let _p = crate::profile::scope(crate::profile::Op::MatmulBwd);
    sgemm(false, false, n, c, oc, 1.0, dout, oc, weight, c, 0.0, dinp, c, Threads::Pool);
    sgemm(true, false, oc, c, n, 1.0, dout, oc, inp, c, 1.0, dweight, c, Threads::Pool);
    if let Some(db) = dbias {
        bias_backward(db, dout, n, oc);
    }
}

/// [`matmul_backward`] of a layer whose weight is frozen (LoRA's base weights, `train.freeze`):
/// dinp (N, C) = dout · weight (overwritten) and dbias (OC) += Σ_n dout when the bias trains;
/// the weight-gradient GEMM (as many flops as the input-gradient one) is skipped.
pub fn matmul_backward_frozen(
    dinp: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    weight: &[f32],
    n: usize,
    c: usize,
    oc: usize,
) {
    let _p = crate::profile::scope(crate::profile::Op::MatmulBwd);
    sgemm(false, false, n, c, oc, 1.0, dout, oc, weight, c, 0.0, dinp, c, Threads::Pool);
    if let Some(db) = dbias {
        bias_backward(db, dout, n, oc);
    }
}

/// dbias (OC) += Σ_n dout (N, OC), in parallel over column chunks.
fn bias_backward(db: &mut [f32], dout: &[f32], n: usize, oc: usize) {
    db.par_chunks_mut(COLUMN_CHUNK).enumerate().for_each(|(j, db)| {
        let c0 = j * COLUMN_CHUNK;
        for row in 0..n {
            let d = &dout[row * oc + c0..row * oc + c0 + db.len()];
            db.iter_mut().zip(d).for_each(|(b, d)| *b += d);
        }
    });
}
