//! Step 2 of the kernel (and a term of step 5): relative-position information, forward and
//! backward side by side.
//!
//! - ALiBi: s_ij −= slope[h]·|pos_i − pos_j| (fixed slopes, no gradient).
//! - T5: s_ij += table[bucket(pos_j − pos_i), h] (learned table).
//! - Shaw et al.: s_ij += scale·q_i·keys[idx(pos_j − pos_i)] on the scores, and
//!   out_i += Σ_j p_ij·values[idx(pos_j − pos_i)] on the output (learned keys and values).
//!
//! The parameter-free index math (`t5_bucket`, `shaw_index`, `alibi_slopes`) is in
//! [`crate::kernels::positional`]; which scheme a model uses, and where its tables live, is
//! decided in `model::transformer::layers::position`.

use super::{AttnDims, AttnMask, HeadMut, PositionBias, ScoreFn};
use crate::kernels::gemm::{sgemm, sgemm_raw, Threads};
use crate::kernels::positional::{shaw_index, t5_bucket};

/// m (Tq, Tk) += table[i, shaw_index(pos_j − pos_i)] for table (Tq, 2k+1), on the keys that
/// causality leaves visible.
fn shaw_gather_add(m: &mut [f32], table: &[f32], k: usize, d: &AttnDims, mask: &AttnMask) {
    let (tq, tk, r) = (d.tq, d.tk, 2 * k + 1);
    for i in 0..tq {
        for j in 0..mask.key_end(i, tk) {
            m[i * tk + j] += table[i * r + shaw_index(mask.rel(i, j), k)];
        }
    }
}

/// buckets (Tq, 2k+1) = Σ_j m[i, j] into column shaw_index(pos_j − pos_i), over the keys that
/// causality leaves visible (the transpose of [`shaw_gather_add`]).
fn shaw_scatter(buckets: &mut [f32], m: &[f32], k: usize, d: &AttnDims, mask: &AttnMask) {
    let (tq, tk, r) = (d.tq, d.tk, 2 * k + 1);
    buckets.fill(0.0);
    for i in 0..tq {
        for j in 0..mask.key_end(i, tk) {
            buckets[i * r + shaw_index(mask.rel(i, j), k)] += m[i * tk + j];
        }
    }
}

/// T5 bucket of relative-position index `r = j − i + Tq − 1`.
fn t5_bucket_of(r: usize, d: &AttnDims, mask: &AttnMask, num_buckets: usize, max_distance: usize, bidi: bool) -> usize {
    let rel = r as i64 - (d.tq - 1 + mask.q_offset) as i64;
    t5_bucket(rel, bidi, num_buckets, max_distance)
}

/// a (Tq, Tk) += the position bias of query head h (q, stride ldq) on the keys causality
/// leaves visible. `rel` (Tq+Tk−1) and `shaw` (Tq, 2k+1) are scratch for T5 and Shaw.
#[allow(clippy::too_many_arguments)]
pub(super) fn position_bias_forward(
    a: &mut [f32],
    rel: &mut [f32],
    shaw: &mut [f32],
    q: &[f32],
    ldq: usize,
    h: usize,
    d: &AttnDims,
    score: &ScoreFn,
    pos: &PositionBias,
    mask: &AttnMask,
) {
    let (tq, tk, hs, nh) = (d.tq, d.tk, d.head_size, d.n_head);
    match *pos {
        PositionBias::None => {}
        PositionBias::Alibi { slopes } => {
            let m = slopes[h];
            for i in 0..tq {
                let pi = mask.q_offset + i;
                for j in 0..mask.key_end(i, tk) {
                    a[i * tk + j] -= m * pi.abs_diff(j) as f32;
                }
            }
        }
        PositionBias::T5 { table, num_buckets, max_distance, bidirectional } => {
            // One table lookup (and one logarithm) per relative position, not per (i, j).
            for (r, bias) in rel.iter_mut().enumerate() {
                *bias = table[t5_bucket_of(r, d, mask, num_buckets, max_distance, bidirectional) * nh + h];
            }
            for i in 0..tq {
                for j in 0..mask.key_end(i, tk) {
                    a[i * tk + j] += rel[j + tq - 1 - i];
                }
            }
        }
        PositionBias::Shaw { k, keys, .. } => {
            // Q·keysᵀ (Tq, 2k+1) once, then every score picks its relative-position column.
            let r = 2 * k + 1;
            sgemm(false, true, tq, r, hs, score.dot_scale(hs), q, ldq, keys, hs, 0.0, shaw, r, Threads::Single);
            shaw_gather_add(a, shaw, k, d, mask);
        }
    }
}

/// One task's backward scratch for the position bias (empty parts for biases that do not use
/// them).
pub(super) struct BiasScratch<'s> {
    /// T5: dS summed per relative position (Tq+Tk−1); partial table gradient (buckets, group).
    pub rel: &'s mut [f32],
    pub t5: &'s mut [f32],
    /// Shaw: a (Tq, 2k+1) bucket matrix; partial key and value gradients (2k+1, hs).
    pub shaw: &'s mut [f32],
    pub keys: &'s mut [f32],
    pub vals: &'s mut [f32],
}

/// Backward of [`position_bias_forward`] for query head `hl` of the task's group, given ds
/// (Tq, Tk) = ∂L/∂scores: T5 adds to the partial table gradient; Shaw adds its q term to dq
/// (after [`super::scores::scores_backward`] has written dq) and to the partial key gradient.
#[allow(clippy::too_many_arguments)]
pub(super) fn position_bias_backward(
    dq: HeadMut,
    scratch: &mut BiasScratch,
    ds: &[f32],
    q: &[f32],
    ldq: usize,
    hl: usize,
    d: &AttnDims,
    score: &ScoreFn,
    pos: &PositionBias,
    mask: &AttnMask,
) {
    let (tq, tk, hs, g) = (d.tq, d.tk, d.head_size, d.group());
    let BiasScratch { rel, t5, shaw, keys, .. } = scratch;
    match *pos {
        PositionBias::None | PositionBias::Alibi { .. } => {}
        PositionBias::T5 { num_buckets, max_distance, bidirectional, .. } => {
            // Sum dS per relative position, then per bucket.
            rel.fill(0.0);
            for i in 0..tq {
                for j in 0..mask.key_end(i, tk) {
                    rel[j + tq - 1 - i] += ds[i * tk + j];
                }
            }
            for (r, &s) in rel.iter().enumerate() {
                t5[t5_bucket_of(r, d, mask, num_buckets, max_distance, bidirectional) * g + hl] += s;
            }
        }
        PositionBias::Shaw { k: sk, keys: shaw_keys, .. } => {
            // s_ij += scale·q_i·keys[idx_ij]: dQ += scale·bucket(dS)·keys and
            // d keys += scale·bucket(dS)ᵀ·Q.
            let (r, dot_scale) = (2 * sk + 1, score.dot_scale(hs));
            shaw_scatter(shaw, ds, sk, d, mask);
            // SAFETY: dq is rows the task owns (see `HeadMut::new`).
            unsafe {
                let (bk, kp) = (shaw.as_ptr(), shaw_keys.as_ptr());
                sgemm_raw(false, false, tq, hs, r, dot_scale, bk, r, kp, hs, 1.0, dq.ptr, dq.ld, Threads::Single);
            }
            sgemm(true, false, r, hs, tq, dot_scale, shaw, r, q, ldq, 1.0, keys, hs, Threads::Single);
        }
    }
}

/// Shaw's value term, after the weighted sum: out (Tq rows, stride ldo) += bucket(P)·values,
/// the probabilities `used` (Tq, Tk) summed per relative position first (into `shaw`
/// (Tq, 2k+1)). Nothing without Shaw values.
pub(super) fn shaw_values_forward(
    out: HeadMut,
    shaw: &mut [f32],
    used: &[f32],
    d: &AttnDims,
    pos: &PositionBias,
    mask: &AttnMask,
) {
    if let PositionBias::Shaw { k: sk, values: Some(vals), .. } = *pos {
        let (tq, hs, r) = (d.tq, d.head_size, 2 * sk + 1);
        shaw_scatter(shaw, used, sk, d, mask);
        let (bp, vp) = (shaw.as_ptr(), vals.as_ptr());
        // SAFETY: out is rows the task owns (see `HeadMut::new`).
        unsafe { sgemm_raw(false, false, tq, hs, r, 1.0, bp, r, vp, hs, 1.0, out.ptr, out.ld, Threads::Single) };
    }
}

/// Backward of [`shaw_values_forward`] given dy (Tq rows, stride ldy) = ∂L/∂out: out_i +=
/// Σ_j p_ij·values[idx_ij] gives dP_ij += dY_i·values[idx_ij] (into dp (Tq, Tk)) and
/// d values += bucket(P)ᵀ·dY (into the partial value gradient).
#[allow(clippy::too_many_arguments)]
pub(super) fn shaw_values_backward(
    dp: &mut [f32],
    scratch: &mut BiasScratch,
    used: &[f32],
    dy: &[f32],
    ldy: usize,
    d: &AttnDims,
    pos: &PositionBias,
    mask: &AttnMask,
) {
    if let PositionBias::Shaw { k: sk, values: Some(values), .. } = *pos {
        let (tq, hs, r) = (d.tq, d.head_size, 2 * sk + 1);
        let BiasScratch { shaw, vals, .. } = scratch;
        sgemm(false, true, tq, r, hs, 1.0, dy, ldy, values, hs, 0.0, shaw, r, Threads::Single);
        shaw_gather_add(dp, shaw, sk, d, mask);
        shaw_scatter(shaw, used, sk, d, mask);
        sgemm(true, false, r, hs, tq, 1.0, shaw, r, dy, ldy, 1.0, vals, hs, Threads::Single);
    }
}
