//! Step 5 of the kernel: each query's output is the probability-weighted sum of the values,
//! forward and backward side by side. (Shaw's value term is in `position_bias`.)

use super::{AttnDims, HeadMut};
use crate::kernels::gemm::{sgemm, sgemm_raw, Threads};

/// out (Tq rows of one head) = P·V for the probabilities `used` (Tq, Tk) (after dropout) and v
/// (Tk rows, stride ldv), written in full.
pub(super) fn weighted_sum_forward(out: HeadMut, used: &[f32], v: &[f32], ldv: usize, d: &AttnDims) {
    let (tq, tk, hs) = (d.tq, d.tk, d.head_size);
    let (p, v) = (used.as_ptr(), v.as_ptr());
    // SAFETY: out is rows the task owns (see `HeadMut::new`).
    unsafe { sgemm_raw(false, false, tq, hs, tk, 1.0, p, tk, v, ldv, 0.0, out.ptr, out.ld, Threads::Single) };
}

/// Backward of [`weighted_sum_forward`] given dy (Tq rows, stride ldy) = ∂L/∂out:
/// dp (Tq, Tk) = dY·Vᵀ, the gradient of the probabilities actually used (OVERWRITTEN), and
/// dv = Pᵀ·dY, overwritten (beta = 0) or added to (beta = 1).
#[allow(clippy::too_many_arguments)]
pub(super) fn weighted_sum_backward(
    dp: &mut [f32],
    dv: HeadMut,
    beta: f32,
    used: &[f32],
    dy: &[f32],
    ldy: usize,
    v: &[f32],
    ldv: usize,
    d: &AttnDims,
) {
    let (tq, tk, hs) = (d.tq, d.tk, d.head_size);
    sgemm(false, true, tq, tk, hs, 1.0, dy, ldy, v, ldv, 0.0, dp, tk, Threads::Single);
    let (p, dy) = (used.as_ptr(), dy.as_ptr());
    // SAFETY: dv is rows the task owns (see `HeadMut::new`).
    unsafe { sgemm_raw(true, false, tk, hs, tq, 1.0, p, tk, dy, ldy, beta, dv.ptr, dv.ld, Threads::Single) };
}
