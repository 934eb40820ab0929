//! Memory-efficient causal attention: FlashAttention-2's algorithm on the CPU.
//!
//! The T×T score matrix is never stored. For each block of `BR` queries the kernel walks the
//! key blocks up to the diagonal, computes a `BR×BC` tile of scores with a GEMM, and folds it
//! into the output with an online softmax (running row maximum `m` and sum `l`). Only the
//! log-sum-exp of each row (`lse`, B·NH·T floats) is kept for the backward pass, which
//! recomputes each probability tile from it. Memory is O(T) per head instead of O(T²).
//! Tiles are 128×128: measured at T = 4096 (batch 1, 6 heads of 64) 655 ms against 810 ms with
//! 64×64 tiles, forward plus backward.
//!
//! Layout is the dense kernel's ([`super::attention`]): `qkv` (B, T, 3C) with head `h` in
//! columns `h·hs ..` of each third; `out` (B, T, C). Work is parallel over (batch, head).

use super::gemm::{sgemm_raw, Threads};
use super::{math, SendPtr};
use rayon::prelude::*;

/// Query rows per tile.
pub const BR: usize = 128;
/// Keys per tile. Equal to BR: then every key block a query block visits starts at or before the
/// query block, so each row sees at least one key, and the diagonal block is the first to
/// touch a key block's dK/dV (which lets it overwrite rather than accumulate).
pub const BC: usize = 128;
const _: () = assert!(BR == BC);

/// Scratch floats one (batch, head) task needs for sequence length `t`.
pub fn scratch_per_head(t: usize) -> usize {
    2 * BR * BC + t
}

/// S (br, bc; leading dimension BC) = scale · Q[i0..i0+br] · K[j0..j0+bc]ᵀ for one head, whose
/// queries and keys are the strided views `q`, `k` (rows of 3C). Shared by the forward pass and
/// the backward pass's recomputation, which must produce the same scores.
#[allow(clippy::too_many_arguments)]
fn score_tile(
    s: &mut [f32],
    q: &[f32],
    k: &[f32],
    i0: usize,
    br: usize,
    j0: usize,
    bc: usize,
    hs: usize,
    c: usize,
    scale: f32,
) {
    assert!(s.len() >= (br - 1) * BC + bc);
    assert!(q.len() >= (i0 + br - 1) * 3 * c + hs && k.len() >= (j0 + bc - 1) * 3 * c + hs);
    // SAFETY: the asserts bound every element the product reads and writes.
    unsafe {
        let (qp, kp) = (q.as_ptr().add(i0 * 3 * c), k.as_ptr().add(j0 * 3 * c));
        sgemm_raw(false, true, br, bc, hs, scale, qp, 3 * c, kp, 3 * c, 0.0, s.as_mut_ptr(), BC, Threads::Single);
    }
}

/// out (B, T, C) = softmax(mask(Q·Kᵀ/√hs))·V; lse (B, NH, T) = log Σ_j exp(score) per query row.
/// `scratch` holds `B·NH·scratch_per_head(T)` floats.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_forward(
    out: &mut [f32],
    lse: &mut [f32],
    scratch: &mut [f32],
    qkv: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let _p = crate::profile::scope(crate::profile::Op::AttentionFwd);
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let per = scratch_per_head(t);
    assert!(
        out.len() >= b * t * c
            && qkv.len() >= b * t * 3 * c
            && lse.len() >= b * nh * t
            && scratch.len() >= b * nh * per
    );
    let out_ptr = SendPtr(out.as_mut_ptr());
    lse[..b * nh * t].par_chunks_mut(t).zip(scratch[..b * nh * per].par_chunks_mut(per)).enumerate().for_each(
        |(bh, (lse, scr))| {
            let (bi, h) = (bh / nh, bh % nh);
            let base = bi * t * 3 * c + h * hs;
            let (q, k, v) = (&qkv[base..], &qkv[base + c..], &qkv[base + 2 * c..]);
            let (s, rest) = scr.split_at_mut(BR * BC);
            let l = &mut rest[BR * BC..BR * BC + BR.min(t)];
            // lse doubles as the running row maximum m until the block is finished.
            for i0 in (0..t).step_by(BR) {
                let i1 = (i0 + BR).min(t);
                let br = i1 - i0;
                let m = &mut lse[i0..i1];
                m.fill(f32::NEG_INFINITY);
                l[..br].fill(0.0);
                // SAFETY: this task writes only head h's columns of out, rows i0..i1.
                let o = unsafe { out_ptr.get().add((bi * t + i0) * c + h * hs) };
                for j0 in (0..i1).step_by(BC) {
                    let j1 = (j0 + BC).min(i1);
                    let bc = j1 - j0;
                    score_tile(s, q, k, i0, br, j0, bc, hs, c, scale);
                    for r in 0..br {
                        let row = &mut s[r * BC..r * BC + bc];
                        // Causal mask: query i0+r sees keys up to itself.
                        let live = (i0 + r + 1).saturating_sub(j0).min(bc);
                        let m_new = row[..live].iter().copied().fold(m[r], f32::max);
                        let alpha = math::exp(m[r] - m_new);
                        let mut sum = 0.0;
                        for x in row[..live].iter_mut() {
                            *x = math::exp(*x - m_new);
                            sum += *x;
                        }
                        row[live..].fill(0.0);
                        l[r] = alpha * l[r] + sum;
                        m[r] = m_new;
                        if j0 > 0 && alpha != 1.0 {
                            // SAFETY: row r of this head's output block.
                            let orow = unsafe { std::slice::from_raw_parts_mut(o.add(r * c), hs) };
                            orow.iter_mut().for_each(|x| *x *= alpha);
                        }
                    }
                    // O (br, hs) = alpha·O + P (br, bc) · V[j0..j1]; the first tile overwrites.
                    let beta = if j0 == 0 { 0.0 } else { 1.0 };
                    unsafe {
                        let vp = v.as_ptr().add(j0 * 3 * c);
                        sgemm_raw(
                            false,
                            false,
                            br,
                            hs,
                            bc,
                            1.0,
                            s.as_ptr(),
                            BC,
                            vp,
                            3 * c,
                            beta,
                            o,
                            c,
                            Threads::Single,
                        );
                    }
                }
                for r in 0..br {
                    let orow = unsafe { std::slice::from_raw_parts_mut(o.add(r * c), hs) };
                    let inv = 1.0 / l[r];
                    orow.iter_mut().for_each(|x| *x *= inv);
                    m[r] += l[r].ln();
                }
            }
        },
    );
}

/// dqkv (B, T, 3C) = ∂L/∂qkv (overwritten) from dout (B, T, C), the forward's out and lse.
/// `scratch` holds `B·NH·scratch_per_head(T)` floats.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_backward(
    dqkv: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let _p = crate::profile::scope(crate::profile::Op::AttentionBwd);
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let per = scratch_per_head(t);
    assert!(dqkv.len() >= b * t * 3 * c && dout.len() >= b * t * c && out.len() >= b * t * c);
    assert!(lse.len() >= b * nh * t && scratch.len() >= b * nh * per);
    let dqkv_ptr = SendPtr(dqkv.as_mut_ptr());
    scratch[..b * nh * per].par_chunks_mut(per).enumerate().for_each(|(bh, scr)| {
        let (bi, h) = (bh / nh, bh % nh);
        let base = bi * t * 3 * c + h * hs;
        let (q, k, v) = (&qkv[base..], &qkv[base + c..], &qkv[base + 2 * c..]);
        let lse = &lse[bh * t..(bh + 1) * t];
        let (p, rest) = scr.split_at_mut(BR * BC);
        let (dp, rest) = rest.split_at_mut(BR * BC);
        let d = &mut rest[..t];
        // D_i = dO_i · O_i: the softmax backward's row term, computed once.
        for i in 0..t {
            let row = (bi * t + i) * c + h * hs;
            d[i] = math::dot(&dout[row..row + hs], &out[row..row + hs]);
        }
        let dy = &dout[bi * t * c + h * hs..];
        // SAFETY: this task writes only head h's columns of dq, dk, dv.
        let (dq, dk, dv) =
            unsafe { (dqkv_ptr.get().add(base), dqkv_ptr.get().add(base + c), dqkv_ptr.get().add(base + 2 * c)) };
        for i0 in (0..t).step_by(BR) {
            let i1 = (i0 + BR).min(t);
            let br = i1 - i0;
            for j0 in (0..i1).step_by(BC) {
                let j1 = (j0 + BC).min(i1);
                let bc = j1 - j0;
                score_tile(p, q, k, i0, br, j0, bc, hs, c, scale);
                for r in 0..br {
                    let live = (i0 + r + 1).saturating_sub(j0).min(bc);
                    let row = &mut p[r * BC..r * BC + bc];
                    for x in row[..live].iter_mut() {
                        *x = math::exp(*x - lse[i0 + r]);
                    }
                    row[live..].fill(0.0);
                }
                // Key block j0 is first reached from the diagonal query block: that one overwrites.
                let first = if i0 == j0 { 0.0 } else { 1.0 };
                unsafe {
                    let dyi = dy.as_ptr().add(i0 * c);
                    // dV_j += Pᵀ · dO_i
                    sgemm_raw(
                        true,
                        false,
                        bc,
                        hs,
                        br,
                        1.0,
                        p.as_ptr(),
                        BC,
                        dyi,
                        c,
                        first,
                        dv.add(j0 * 3 * c),
                        3 * c,
                        Threads::Single,
                    );
                    // dP = dO_i · V_jᵀ
                    let vp = v.as_ptr().add(j0 * 3 * c);
                    sgemm_raw(
                        false,
                        true,
                        br,
                        bc,
                        hs,
                        1.0,
                        dyi,
                        c,
                        vp,
                        3 * c,
                        0.0,
                        dp.as_mut_ptr(),
                        BC,
                        Threads::Single,
                    );
                }
                // dS = P ⊙ (dP − D_i), in place in dp.
                for r in 0..br {
                    let di = d[i0 + r];
                    for cc in 0..bc {
                        dp[r * BC + cc] = p[r * BC + cc] * (dp[r * BC + cc] - di);
                    }
                }
                unsafe {
                    // dQ_i += scale · dS · K_j (the first key block overwrites)
                    let qbeta = if j0 == 0 { 0.0 } else { 1.0 };
                    let kp = k.as_ptr().add(j0 * 3 * c);
                    sgemm_raw(
                        false,
                        false,
                        br,
                        hs,
                        bc,
                        scale,
                        dp.as_ptr(),
                        BC,
                        kp,
                        3 * c,
                        qbeta,
                        dq.add(i0 * 3 * c),
                        3 * c,
                        Threads::Single,
                    );
                    // dK_j += scale · dSᵀ · Q_i
                    let qp = q.as_ptr().add(i0 * 3 * c);
                    sgemm_raw(
                        true,
                        false,
                        bc,
                        hs,
                        br,
                        scale,
                        dp.as_ptr(),
                        BC,
                        qp,
                        3 * c,
                        first,
                        dk.add(j0 * 3 * c),
                        3 * c,
                        Threads::Single,
                    );
                }
            }
        }
    });
}
