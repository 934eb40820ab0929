//! Causal multi-head self-attention core: scores, mask, softmax, weighted sum of values.
//!
//! The Q/K/V and output projections are ordinary [`super::matmul`] layers around this kernel.
//! `qkv` is the (B, T, 3C) output of the fused projection: columns [0, C) hold the queries,
//! [C, 2C) the keys, [2C, 3C) the values, and head `h` owns columns `h·hs .. (h+1)·hs` of each.
//! Heads are read and written in place through strided GEMMs, so no permute/copy is needed.
//! Work is parallel over the B·NH (batch, head) pairs; each pair runs single-threaded GEMMs.

use super::dropout::dropout_inplace;
use super::gemm::{sgemm_raw, Threads};
use super::isa::multiversion;
use super::math;
use super::SendPtr;
use rayon::prelude::*;

/// Query rows per block when skipping the masked half: block r computes scores for rows
/// r·rb..(r+1)·rb against keys 0..(r+1)·rb only, about (1 + 1/blocks)/2 of the full product.
/// Smaller blocks skip more but repack keys and values more often; measured with
/// `lmlab profile`: T = 64 is fastest with 32 (6.6 ms of attention per S step against 8.1 ms
/// unblocked), T = 256 with 64 (305 ms per M step against 340 ms with 32 and 365 unblocked).
fn causal_block(t: usize) -> usize {
    if t >= 128 {
        64
    } else {
        32
    }
}

multiversion! {
    /// Causal softmax of one (T, T) score block in place: row `i` is normalised over columns
    /// `0..=i` and the masked columns `i+1..T` are set to zero.
    fn causal_softmax_rows(s: &mut [f32], t: usize) {
        for i in 0..t {
            let row = &mut s[i * t..(i + 1) * t];
            let (live, masked) = row.split_at_mut(i + 1);
            math::softmax_inplace(live);
            masked.fill(0.0);
        }
    }
}

multiversion! {
    /// Softmax backward on the causal rows of one (T, T) block, in place: dS = P ⊙ (dP - Σ_j P·dP).
    fn causal_softmax_backward_rows(dp: &mut [f32], p: &[f32], t: usize) {
        for i in 0..t {
            let pr = &p[i * t..i * t + i + 1];
            let row = &mut dp[i * t..(i + 1) * t];
            let dot = math::dot(pr, &row[..=i]);
            for j in 0..=i {
                row[j] = pr[j] * (row[j] - dot);
            }
            row[i + 1..].fill(0.0);
        }
    }
}

/// out (B, T, C) = softmax(mask(Q·Kᵀ / √hs)) · V per head; att (B, NH, T, T) keeps the
/// probabilities for the backward pass. With `dropout`, the dropped probabilities are written
/// to `dropout.probs` and used for the weighted sum. `dropout` is (dropped probabilities, p,
/// seed, first): the masks are those of elements `first..` of the dropout's index space
/// (a data-parallel rank's batch inside the global batch; 0 in one process).
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    out: &mut [f32],
    att: &mut [f32],
    dropout: Option<(&mut [f32], f32, u64, usize)>,
    qkv: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let _p = crate::profile::scope(crate::profile::Op::AttentionFwd);
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    assert!(out.len() >= b * t * c && qkv.len() >= b * t * 3 * c && att.len() >= b * nh * t * t);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let att = &mut att[..b * nh * t * t];
    let mut drop_probs: Option<(&mut [f32], f32, u64, usize)> =
        dropout.map(|(buf, p, seed, first)| (&mut buf[..b * nh * t * t], p, seed, first));
    let (drop_buf, p, seed, first) = match drop_probs.as_mut() {
        Some((buf, p, seed, first)) => (Some(&mut **buf), *p, *seed, *first),
        None => (None, 0.0, 0, 0),
    };
    let task = |bh: usize, a: &mut [f32], dropped: Option<&mut [f32]>| {
        let (bi, h) = (bh / nh, bh % nh);
        let q = &qkv[bi * t * 3 * c + h * hs..];
        let k = &qkv[bi * t * 3 * c + c + h * hs..];
        let v = &qkv[bi * t * 3 * c + 2 * c + h * hs..];
        let rb = causal_block(t);
        // SAFETY: q, k, v are in-bounds strided views (rows of 3C); each task writes only its
        // own (T, T) block `a` and its own head columns of `out`.
        // Scores only where the mask lets them through: query rows r0..r1 see keys 0..r1.
        for r0 in (0..t).step_by(rb) {
            let r1 = (r0 + rb).min(t);
            unsafe {
                let (qr, ar) = (q.as_ptr().add(r0 * 3 * c), a.as_mut_ptr().add(r0 * t));
                sgemm_raw(
                    false,
                    true,
                    r1 - r0,
                    r1,
                    hs,
                    scale,
                    qr,
                    3 * c,
                    k.as_ptr(),
                    3 * c,
                    0.0,
                    ar,
                    t,
                    Threads::Single,
                );
            }
        }
        causal_softmax_rows(a, t);
        let used: &[f32] = match dropped {
            Some(d) => {
                d.copy_from_slice(a);
                dropout_inplace(d, p, seed, first + bh * t * t);
                d
            }
            None => a,
        };
        for r0 in (0..t).step_by(rb) {
            let r1 = (r0 + rb).min(t);
            unsafe {
                let (pr, o) = (used.as_ptr().add(r0 * t), out_ptr.get().add((bi * t + r0) * c + h * hs));
                sgemm_raw(false, false, r1 - r0, hs, r1, 1.0, pr, t, v.as_ptr(), 3 * c, 0.0, o, c, Threads::Single);
            }
        }
    };
    match drop_buf {
        Some(d) => att
            .par_chunks_mut(t * t)
            .zip(d.par_chunks_mut(t * t))
            .enumerate()
            .for_each(|(bh, (a, d))| task(bh, a, Some(d))),
        None => att.par_chunks_mut(t * t).enumerate().for_each(|(bh, a)| task(bh, a, None)),
    }
}

/// dqkv (B, T, 3C) = ∂L/∂qkv given dout (B, T, C) (overwritten). `datt` (B, NH, T, T) is scratch.
/// `dropout` is the (dropped probabilities, p, seed, first) of the forward pass, if any.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dqkv: &mut [f32],
    datt: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    att: &[f32],
    dropout: Option<(&[f32], f32, u64, usize)>,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let _p = crate::profile::scope(crate::profile::Op::AttentionBwd);
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    assert!(dqkv.len() >= b * t * 3 * c && dout.len() >= b * t * c && datt.len() >= b * nh * t * t);
    let dqkv_ptr = SendPtr(dqkv.as_mut_ptr());
    datt[..b * nh * t * t].par_chunks_mut(t * t).enumerate().for_each(|(bh, dp)| {
        let (bi, h) = (bh / nh, bh % nh);
        let base = bi * t * 3 * c + h * hs;
        let (q, k, v) = (&qkv[base..], &qkv[base + c..], &qkv[base + 2 * c..]);
        let dy = &dout[bi * t * c + h * hs..];
        let a = &att[bh * t * t..(bh + 1) * t * t];
        let used = match dropout {
            Some((d, _, _, _)) => &d[bh * t * t..(bh + 1) * t * t],
            None => a,
        };
        let rb = causal_block(t);
        let blocks = || (0..t).step_by(rb).map(move |r0| (r0, (r0 + rb).min(t)));
        // SAFETY: reads are in-bounds strided views; writes go to this head's columns of dqkv
        // (disjoint between tasks) and to this task's own (T, T) scratch block. As in the
        // forward pass only the causal part is computed: row block r0..r1 meets keys 0..r1.
        unsafe {
            let (dq, dk, dv) =
                (dqkv_ptr.get().add(base), dqkv_ptr.get().add(base + c), dqkv_ptr.get().add(base + 2 * c));
            let (dy, dp) = (dy.as_ptr(), dp.as_mut_ptr());
            for (r0, r1) in blocks() {
                // dP = dY · Vᵀ
                let (dyr, dpr) = (dy.add(r0 * c), dp.add(r0 * t));
                sgemm_raw(false, true, r1 - r0, r1, hs, 1.0, dyr, c, v.as_ptr(), 3 * c, 0.0, dpr, t, Threads::Single);
            }
            // dV = Pᵀ · dY, one block of P's rows at a time: the last block covers every key and
            // overwrites dV, earlier blocks add to the keys they reach.
            for (r0, r1) in blocks().rev() {
                let beta = if r1 == t { 0.0 } else { 1.0 };
                let (pr, dyr) = (used.as_ptr().add(r0 * t), dy.add(r0 * c));
                sgemm_raw(true, false, r1, hs, r1 - r0, 1.0, pr, t, dyr, c, beta, dv, 3 * c, Threads::Single);
            }
            let dp = std::slice::from_raw_parts_mut(dp, t * t);
            if let Some((_, p, seed, first)) = dropout {
                dropout_inplace(dp, p, seed, first + bh * t * t);
            }
            causal_softmax_backward_rows(dp, a, t);
            let dp = dp.as_ptr();
            for (r0, r1) in blocks() {
                // dQ = scale · dS · K
                let (dsr, dqr) = (dp.add(r0 * t), dq.add(r0 * 3 * c));
                sgemm_raw(
                    false,
                    false,
                    r1 - r0,
                    hs,
                    r1,
                    scale,
                    dsr,
                    t,
                    k.as_ptr(),
                    3 * c,
                    0.0,
                    dqr,
                    3 * c,
                    Threads::Single,
                );
            }
            for (r0, r1) in blocks().rev() {
                // dK = scale · dSᵀ · Q, accumulated over row blocks like dV.
                let beta = if r1 == t { 0.0 } else { 1.0 };
                let (dsr, qr) = (dp.add(r0 * t), q.as_ptr().add(r0 * 3 * c));
                sgemm_raw(true, false, r1, hs, r1 - r0, scale, dsr, t, qr, 3 * c, beta, dk, 3 * c, Threads::Single);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::{avx512_or_skip, test_values, Level};

    #[test]
    fn avx512_softmax_copies_are_bit_identical() {
        if !avx512_or_skip("causal softmax") {
            return;
        }
        for t in [5, 64, 77] {
            let mut s1 = test_values(t * t, 1, 4.0);
            let mut s2 = s1.clone();
            causal_softmax_rows::on(Level::Avx2, &mut s1, t);
            causal_softmax_rows::on(Level::Avx512, &mut s2, t);
            assert_eq!(s1, s2);
            let mut d1 = test_values(t * t, 2, 1.0);
            let mut d2 = d1.clone();
            causal_softmax_backward_rows::on(Level::Avx2, &mut d1, &s1, t);
            causal_softmax_backward_rows::on(Level::Avx512, &mut d2, &s1, t);
            assert_eq!(d1, d2);
        }
    }
}
