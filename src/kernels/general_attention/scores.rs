//! Step 1 of the kernel: the raw score of every (query, key) pair, before any position bias or
//! mask. Scaled and unscaled dot products, cosine similarity with a learned temperature, and
//! additive (Bahdanau) scores; forward and backward side by side.

use super::{AttnDims, AttnMask, HeadMut, ScoreFn};
use crate::kernels::gemm::{sgemm, sgemm_raw, Threads};
use crate::kernels::math;

/// `max(|x|, NORM_EPS)` divides x in the cosine score, as `torch.nn.functional.normalize`.
const NORM_EPS: f32 = 1e-12;

impl ScoreFn<'_> {
    /// The factor on q·k of the dot-product scores (and on Shaw's q·key term).
    pub(super) fn dot_scale(&self, hs: usize) -> f32 {
        match self {
            ScoreFn::Scaled => 1.0 / (hs as f32).sqrt(),
            _ => 1.0,
        }
    }
}

/// dst (rows, hs) = every row of src (stride ld) divided by max(|row|, ε); norms (rows) = |row|.
fn normalize_rows(dst: &mut [f32], mut norms: Option<&mut [f32]>, src: &[f32], ld: usize, rows: usize, hs: usize) {
    for r in 0..rows {
        let x = &src[r * ld..r * ld + hs];
        let norm = math::dot(x, x).sqrt();
        let inv = 1.0 / norm.max(NORM_EPS);
        for (y, &x) in dst[r * hs..(r + 1) * hs].iter_mut().zip(x) {
            *y = x * inv;
        }
        if let Some(n) = norms.as_deref_mut() {
            n[r] = norm;
        }
    }
}

/// In place on g (hs): ∂L/∂x from ∂L/∂x̂ for x̂ = x / max(|x|, ε), given x̂ and |x|:
/// (g − x̂(x̂·g)) / |x| when |x| > ε, g / ε otherwise (the clamp is then constant).
fn normalize_backward(g: &mut [f32], xn: &[f32], norm: f32) {
    if norm > NORM_EPS {
        let dot = math::dot(xn, g);
        let inv = 1.0 / norm;
        for (g, &x) in g.iter_mut().zip(xn) {
            *g = (*g - x * dot) * inv;
        }
    } else {
        g.iter_mut().for_each(|g| *g /= NORM_EPS);
    }
}

/// Once per kv head, before its query heads: the cosine score's normalised keys kn (Tk, hs)
/// from k (Tk rows, stride ldk). Nothing for the other scores.
pub(super) fn keys_forward(kn: &mut [f32], k: &[f32], ldk: usize, d: &AttnDims, score: &ScoreFn) {
    if matches!(score, ScoreFn::Cosine { .. }) {
        normalize_rows(kn, None, k, ldk, d.tk, d.head_size);
    }
}

/// a (Tq, Tk) = scores of query head h (q, stride ldq) against its kv head (k, stride ldk),
/// before position bias and mask. Cosine reads the normalised keys `kn` and normalises the
/// queries into `qn`; additive scores are computed only where causality leaves keys visible.
#[allow(clippy::too_many_arguments)]
pub(super) fn scores_forward(
    a: &mut [f32],
    qn: &mut [f32],
    kn: &[f32],
    q: &[f32],
    ldq: usize,
    k: &[f32],
    ldk: usize,
    h: usize,
    d: &AttnDims,
    score: &ScoreFn,
    mask: &AttnMask,
) {
    let (tq, tk, hs) = (d.tq, d.tk, d.head_size);
    match *score {
        ScoreFn::Scaled | ScoreFn::Unscaled => {
            sgemm(false, true, tq, tk, hs, score.dot_scale(hs), q, ldq, k, ldk, 0.0, a, tk, Threads::Single)
        }
        ScoreFn::Cosine { log_tau } => {
            normalize_rows(qn, None, q, ldq, tq, hs);
            sgemm(false, true, tq, tk, hs, log_tau[h].exp(), qn, hs, kn, hs, 0.0, a, tk, Threads::Single);
        }
        ScoreFn::Additive { v } => {
            let vh = &v[h * hs..(h + 1) * hs];
            for i in 0..tq {
                let qi = &q[i * ldq..i * ldq + hs];
                for j in 0..mask.key_end(i, tk) {
                    let kj = &k[j * ldk..j * ldk + hs];
                    let mut s = 0.0;
                    for e in 0..hs {
                        s += vh[e] * math::tanh(qi[e] + kj[e]);
                    }
                    a[i * tk + j] = s;
                }
            }
        }
    }
}

/// One task's backward scratch for the scores (empty parts for scores that do not use them).
pub(super) struct ScoreScratch<'s> {
    /// Cosine: normalised keys (Tk, hs) and their norms (Tk); normalised queries of the
    /// current head (Tq, hs) and their norms (Tq).
    pub kn: &'s mut [f32],
    pub knorm: &'s mut [f32],
    pub qn: &'s mut [f32],
    pub qnorm: &'s mut [f32],
    /// Partial ∂L/∂log_tau of the task's heads (group).
    pub tau: &'s mut [f32],
    /// Partial ∂L/∂v of the additive score for the task's heads (group, hs).
    pub add: &'s mut [f32],
}

/// Once per kv head, before its query heads, backward: cosine normalises the keys (keeping
/// their norms for [`keys_backward`]); additive zeroes dK, which its heads add into element by
/// element.
pub(super) fn keys_backward_begin(
    scratch: &mut ScoreScratch,
    dk: HeadMut,
    k: &[f32],
    ldk: usize,
    d: &AttnDims,
    score: &ScoreFn,
) {
    match score {
        ScoreFn::Cosine { .. } => normalize_rows(scratch.kn, Some(scratch.knorm), k, ldk, d.tk, d.head_size),
        ScoreFn::Additive { .. } => (0..d.tk).for_each(|j| dk.row(j).fill(0.0)),
        _ => {}
    }
}

/// Backward of [`scores_forward`] for query head h (`hl`-th of its group) given ds (Tq, Tk) =
/// ∂L/∂scores: dq OVERWRITTEN, dk overwritten (beta = 0) or added to (beta = 1), and the
/// head's partial parameter gradients added to `scratch`. Cosine leaves ∂L/∂k̂ in dk for
/// [`keys_backward`].
#[allow(clippy::too_many_arguments)]
pub(super) fn scores_backward(
    dq: HeadMut,
    dk: HeadMut,
    beta: f32,
    scratch: &mut ScoreScratch,
    ds: &[f32],
    q: &[f32],
    ldq: usize,
    k: &[f32],
    ldk: usize,
    h: usize,
    hl: usize,
    d: &AttnDims,
    score: &ScoreFn,
    mask: &AttnMask,
) {
    let (tq, tk, hs) = (d.tq, d.tk, d.head_size);
    match *score {
        ScoreFn::Scaled | ScoreFn::Unscaled => unsafe {
            // dQ = scale·dS·K, dK (+)= scale·dSᵀ·Q.
            // SAFETY (here and below): dq and dk are rows the task owns (see `HeadMut::new`).
            let scale = score.dot_scale(hs);
            let (ds, k, q) = (ds.as_ptr(), k.as_ptr(), q.as_ptr());
            sgemm_raw(false, false, tq, hs, tk, scale, ds, tk, k, ldk, 0.0, dq.ptr, dq.ld, Threads::Single);
            sgemm_raw(true, false, tk, hs, tq, scale, ds, tk, q, ldq, beta, dk.ptr, dk.ld, Threads::Single);
        },
        ScoreFn::Cosine { log_tau } => {
            // s = τ·q̂·k̂: dq̂ = τ·dS·K̂ (in dq for now), dk̂ (+)= τ·dSᵀ·Q̂ (in dk until
            // every head has added to it), ∂L/∂log τ = Σ dS·s = Σ_i q̂_i·dq̂_i.
            let t = log_tau[h].exp();
            let ScoreScratch { kn, qn, qnorm, tau, .. } = scratch;
            normalize_rows(qn, Some(qnorm), q, ldq, tq, hs);
            unsafe {
                let (ds, kn, qn) = (ds.as_ptr(), kn.as_ptr(), qn.as_ptr());
                sgemm_raw(false, false, tq, hs, tk, t, ds, tk, kn, hs, 0.0, dq.ptr, dq.ld, Threads::Single);
                sgemm_raw(true, false, tk, hs, tq, t, ds, tk, qn, hs, beta, dk.ptr, dk.ld, Threads::Single);
            }
            for i in 0..tq {
                let (row, qni) = (dq.row(i), &qn[i * hs..(i + 1) * hs]);
                tau[hl] += math::dot(qni, row);
                normalize_backward(row, qni, qnorm[i]);
            }
        }
        ScoreFn::Additive { v: av } => {
            // s_ij = Σ_e v_e·tanh(q_ie + k_je): the tanh is recomputed, not stored.
            let vh = &av[h * hs..(h + 1) * hs];
            let dv_h = &mut scratch.add[hl * hs..(hl + 1) * hs];
            for i in 0..tq {
                let (qi, dqi) = (&q[i * ldq..i * ldq + hs], dq.row(i));
                dqi.fill(0.0);
                for j in 0..mask.key_end(i, tk) {
                    let s = ds[i * tk + j];
                    if s == 0.0 {
                        continue; // hidden key or fully masked row
                    }
                    let (kj, dkj) = (&k[j * ldk..j * ldk + hs], dk.row(j));
                    for e in 0..hs {
                        let th = math::tanh(qi[e] + kj[e]);
                        dv_h[e] += s * th;
                        let gsum = s * vh[e] * (1.0 - th * th);
                        dqi[e] += gsum;
                        dkj[e] += gsum;
                    }
                }
            }
        }
    }
}

/// Once per kv head, after all its query heads: cosine turns the summed ∂L/∂k̂ in dk into
/// ∂L/∂k. Nothing for the other scores.
pub(super) fn keys_backward(dk: HeadMut, scratch: &ScoreScratch, d: &AttnDims, score: &ScoreFn) {
    if matches!(score, ScoreFn::Cosine { .. }) {
        let hs = d.head_size;
        for j in 0..d.tk {
            normalize_backward(dk.row(j), &scratch.kn[j * hs..(j + 1) * hs], scratch.knorm[j]);
        }
    }
}
