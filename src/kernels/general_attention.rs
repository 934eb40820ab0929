//! Attention with every score function, positional bias, mask, MQA/GQA and dropout.
//!
//! [`super::attention`] stays the fast path for plain causal multi-head self-attention; this
//! kernel covers the rest: scaled / unscaled dot products, cosine similarity with a learned
//! temperature, additive (Bahdanau) scores, ALiBi, T5 and Shaw relative positions, causal and
//! key-padding masks, cross-attention (Tq ≠ Tk, with a query position offset), and shared
//! key/value heads (multi- and grouped-query attention).
//!
//! Layout. q (B·Tq rows, stride `q_stride`) holds query head `h` in columns `h·hs ..`; k and v
//! (B·Tk rows) hold kv head `g` in columns `g·hs ..`. Query head `h` reads kv head
//! `h / (NH / NKV)`. Heads are read and written in place through strided GEMMs.
//!
//! Work is parallel over the B·NKV (batch element, kv head) pairs. One task handles all query
//! heads that share a kv head, so the kv head's dK and dV are summed inside one task (no races,
//! a fixed order). Parameter-gradient partial sums go to the task's own part of `scratch` and
//! are reduced in task order at the end, so every result is independent of the thread count.
//!
//! Positions: query row `i` has position `q_offset + i`, key `j` has position `j`. A key is
//! visible to a query when the causal rule (if any) and the key mask (if any) both allow it;
//! hidden keys get probability exactly 0, and a query without any visible key gets zero
//! probabilities, zero output and zero gradients.

use super::dropout::dropout_inplace;
use super::gemm::{sgemm, sgemm_raw, Threads};
use super::math;
use super::positional::{shaw_index, t5_bucket};
use super::SendPtr;
use rayon::prelude::*;

/// `max(|x|, NORM_EPS)` divides x in the cosine score, as `torch.nn.functional.normalize`.
const NORM_EPS: f32 = 1e-12;

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    /// Batch size B.
    pub b: usize,
    /// Query rows per batch element.
    pub tq: usize,
    /// Key/value rows per batch element.
    pub tk: usize,
    /// Query heads NH.
    pub n_head: usize,
    /// Key/value heads NKV: NH for MHA, 1 for MQA, a divisor of NH for GQA.
    pub n_kv_head: usize,
    /// Head size hs.
    pub head_size: usize,
}

impl AttnDims {
    /// Query heads per kv head.
    fn group(&self) -> usize {
        self.n_head / self.n_kv_head
    }

    /// Parallel tasks: one per (batch element, kv head).
    fn tasks(&self) -> usize {
        self.b * self.n_kv_head
    }

    /// Relative positions `pos_j − pos_i` that occur: index `j − i + Tq − 1`.
    fn n_rel(&self) -> usize {
        self.tq + self.tk - 1
    }
}

/// q (B·Tq rows, row stride q_stride): head h at columns h·hs..; k and v (B·Tk rows): kv-head g
/// at columns g·hs.. Query head h uses kv head h / (n_head / n_kv_head) (MHA: n_kv_head =
/// n_head; MQA: 1; GQA: divides n_head).
#[derive(Clone, Copy, Debug)]
pub struct AttnInputs<'a> {
    pub q: &'a [f32],
    pub q_stride: usize,
    pub k: &'a [f32],
    pub k_stride: usize,
    pub v: &'a [f32],
    pub v_stride: usize,
}

/// How a query row and a key row give a score.
#[derive(Clone, Copy, Debug)]
pub enum ScoreFn<'a> {
    /// s = q·k / √hs
    Scaled,
    /// s = q·k
    Unscaled,
    /// s = exp(log_tau[h]) · (q·k) / (max(|q|, 1e-12)·max(|k|, 1e-12)); log_tau (NH) learned.
    Cosine { log_tau: &'a [f32] },
    /// s = Σ_d v[h, d]·tanh(q_d + k_d) (Bahdanau; W_q, W_k are the Q/K projections);
    /// v (NH, hs) learned.
    Additive { v: &'a [f32] },
}

impl ScoreFn<'_> {
    /// The factor on q·k of the dot-product scores (and on Shaw's q·key term).
    fn dot_scale(&self, hs: usize) -> f32 {
        match self {
            ScoreFn::Scaled => 1.0 / (hs as f32).sqrt(),
            _ => 1.0,
        }
    }
}

/// A bias on the scores from the query and key positions.
#[derive(Clone, Copy, Debug)]
pub enum PositionBias<'a> {
    None,
    /// s_ij += −slope[h]·|pos_i − pos_j|; slopes (NH) fixed (see `positional::alibi_slopes`).
    Alibi {
        slopes: &'a [f32],
    },
    /// s_ij += table[t5_bucket(pos_j − pos_i) · NH + h]; table (num_buckets, NH) learned.
    T5 {
        table: &'a [f32],
        num_buckets: usize,
        max_distance: usize,
        bidirectional: bool,
    },
    /// Shaw et al. (2018); keys and values (2k+1, hs), shared by all heads, learned:
    /// s_ij += score_scale · q_i·keys[shaw_index(pos_j − pos_i)] (score_scale = 1/√hs for
    /// Scaled, 1 for Unscaled; only valid with those two), and
    /// out_i += Σ_j p_ij · values[shaw_index(pos_j − pos_i)] (p after dropout).
    Shaw {
        k: usize,
        keys: &'a [f32],
        values: Option<&'a [f32]>,
    },
}

/// Which keys each query may attend to.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttnMask<'a> {
    /// Key j is visible to query row i only if j ≤ q_offset + i.
    pub causal: bool,
    /// Position of query row 0 (keys start at position 0).
    pub q_offset: usize,
    /// key_mask (B, Tk): true = may attend.
    pub key_mask: Option<&'a [bool]>,
}

impl AttnMask<'_> {
    /// Keys `0 .. key_end(i)` are not hidden by causality from query row i.
    #[inline]
    fn key_end(&self, i: usize, tk: usize) -> usize {
        if self.causal {
            (self.q_offset + i + 1).min(tk)
        } else {
            tk
        }
    }

    /// `pos_j − pos_i` for query row i and key j.
    #[inline]
    fn rel(&self, i: usize, j: usize) -> i64 {
        j as i64 - (self.q_offset + i) as i64
    }
}

/// Parameter gradients, each ACCUMULATED (+=); `None` skips it. A gradient whose parameter the
/// score function or position bias does not use is ignored.
#[derive(Debug, Default)]
pub struct AttnParamGrads<'a> {
    /// (NH), for `ScoreFn::Cosine`.
    pub log_tau: Option<&'a mut [f32]>,
    /// (NH, hs), for `ScoreFn::Additive`.
    pub additive_v: Option<&'a mut [f32]>,
    /// (num_buckets, NH), for `PositionBias::T5`.
    pub t5_table: Option<&'a mut [f32]>,
    /// (2k+1, hs), for `PositionBias::Shaw`.
    pub shaw_keys: Option<&'a mut [f32]>,
    /// (2k+1, hs), for `PositionBias::Shaw` with values.
    pub shaw_values: Option<&'a mut [f32]>,
}

/// Input-gradient destinations (OVERWRITTEN, full rows of the head columns, same strides as
/// the inputs). Other columns are not touched.
#[derive(Debug)]
pub enum QkvGrads<'a> {
    /// Self-attention with a packed (rows, stride) buffer: dq at column q_off, dk at k_off, dv
    /// at v_off.
    Packed { dqkv: &'a mut [f32], stride: usize, q_off: usize, k_off: usize, v_off: usize },
    /// Cross-attention: dq (B·Tq, q_stride) at column 0; dkv (B·Tk, kv_stride) with dk at
    /// k_off, dv at v_off.
    Split { dq: &'a mut [f32], q_stride: usize, dkv: &'a mut [f32], kv_stride: usize, k_off: usize, v_off: usize },
}

/// Cuts the next `n` elements off the front of `s`.
fn carve<'s>(s: &mut &'s mut [f32], n: usize) -> &'s mut [f32] {
    let (head, tail) = std::mem::take(s).split_at_mut(n);
    *s = tail;
    head
}

/// Per-task forward scratch, in this order: normalised keys (Tk, hs) and queries (Tq, hs) for
/// the cosine score; the bias of every relative position (Tq+Tk−1) for T5; the (Tq, 2k+1)
/// products of the queries with Shaw's keys, reused for the bucketed probabilities.
#[derive(Clone, Copy)]
struct FwdScratch {
    kn: usize,
    qn: usize,
    rel: usize,
    shaw: usize,
}

impl FwdScratch {
    fn new(d: &AttnDims, score: &ScoreFn, pos: &PositionBias) -> Self {
        let cosine = matches!(score, ScoreFn::Cosine { .. });
        FwdScratch {
            kn: if cosine { d.tk * d.head_size } else { 0 },
            qn: if cosine { d.tq * d.head_size } else { 0 },
            rel: if matches!(pos, PositionBias::T5 { .. }) { d.n_rel() } else { 0 },
            shaw: match pos {
                PositionBias::Shaw { k, .. } => d.tq * (2 * k + 1),
                _ => 0,
            },
        }
    }

    fn per_task(&self) -> usize {
        self.kn + self.qn + self.rel + self.shaw
    }
}

/// Per-task backward scratch (see [`BwdParts`] for what each part holds).
#[derive(Clone, Copy)]
struct BwdScratch {
    dp: usize,
    kn: usize,
    knorm: usize,
    qn: usize,
    qnorm: usize,
    tau: usize,
    add: usize,
    rel: usize,
    t5: usize,
    shaw: usize,
    keys: usize,
    vals: usize,
}

/// One task's backward scratch, carved into its parts.
struct BwdParts<'s> {
    /// (Tq, Tk): dP, then dS, of the current head.
    dp: &'s mut [f32],
    /// Cosine: normalised keys (Tk, hs), their norms (Tk), normalised queries of the current
    /// head (Tq, hs), their norms (Tq).
    kn: &'s mut [f32],
    knorm: &'s mut [f32],
    qn: &'s mut [f32],
    qnorm: &'s mut [f32],
    /// Partial ∂L/∂log_tau of the task's heads (group).
    tau: &'s mut [f32],
    /// Partial ∂L/∂v of the additive score for the task's heads (group, hs).
    add: &'s mut [f32],
    /// T5: dS summed per relative position (Tq+Tk−1); partial table gradient (buckets, group).
    rel: &'s mut [f32],
    t5: &'s mut [f32],
    /// Shaw: a (Tq, 2k+1) bucket matrix; partial key and value gradients (2k+1, hs).
    shaw: &'s mut [f32],
    keys: &'s mut [f32],
    vals: &'s mut [f32],
}

impl BwdScratch {
    fn new(d: &AttnDims, score: &ScoreFn, pos: &PositionBias) -> Self {
        let (tq, tk, hs, g) = (d.tq, d.tk, d.head_size, d.group());
        let cosine = matches!(score, ScoreFn::Cosine { .. });
        let additive = matches!(score, ScoreFn::Additive { .. });
        let (rel, t5) = match pos {
            PositionBias::T5 { num_buckets, .. } => (d.n_rel(), num_buckets * g),
            _ => (0, 0),
        };
        let (shaw, keys, vals) = match pos {
            PositionBias::Shaw { k, values, .. } => {
                let r = 2 * k + 1;
                (tq * r, r * hs, if values.is_some() { r * hs } else { 0 })
            }
            _ => (0, 0, 0),
        };
        let c = |on: bool, n: usize| if on { n } else { 0 };
        BwdScratch {
            dp: tq * tk,
            kn: c(cosine, tk * hs),
            knorm: c(cosine, tk),
            qn: c(cosine, tq * hs),
            qnorm: c(cosine, tq),
            tau: c(cosine, g),
            add: c(additive, g * hs),
            rel,
            t5,
            shaw,
            keys,
            vals,
        }
    }

    fn per_task(&self) -> usize {
        let l = self;
        l.dp + l.kn + l.knorm + l.qn + l.qnorm + l.tau + l.add + l.rel + l.t5 + l.shaw + l.keys + l.vals
    }

    fn split<'s>(&self, mut s: &'s mut [f32]) -> BwdParts<'s> {
        let s = &mut s;
        BwdParts {
            dp: carve(s, self.dp),
            kn: carve(s, self.kn),
            knorm: carve(s, self.knorm),
            qn: carve(s, self.qn),
            qnorm: carve(s, self.qnorm),
            tau: carve(s, self.tau),
            add: carve(s, self.add),
            rel: carve(s, self.rel),
            t5: carve(s, self.t5),
            shaw: carve(s, self.shaw),
            keys: carve(s, self.keys),
            vals: carve(s, self.vals),
        }
    }
}

/// Length of the `scratch` that [`general_attention_forward`] needs: per (batch element, kv
/// head) task, normalised q/k for `Cosine`, a relative-position bias row for `T5`, and a
/// (Tq, 2k+1) matrix for `Shaw`. Zero for dot-product or additive scores with ALiBi or no bias.
pub fn general_attention_fwd_scratch_len(dims: &AttnDims, score: &ScoreFn, pos: &PositionBias) -> usize {
    dims.tasks() * FwdScratch::new(dims, score, pos).per_task()
}

/// Length of the `scratch` that [`general_attention_backward`] needs: per task a (Tq, Tk) block
/// for dP, plus the score- and bias-specific buffers and parameter-gradient partial sums.
pub fn general_attention_scratch_len(dims: &AttnDims, score: &ScoreFn, pos: &PositionBias) -> usize {
    dims.tasks() * BwdScratch::new(dims, score, pos).per_task()
}

/// Checks shapes and parameter lengths once, so the tasks may index freely.
fn validate(x: &AttnInputs, d: &AttnDims, score: &ScoreFn, pos: &PositionBias, mask: &AttnMask) {
    let AttnDims { b, tq, tk, n_head: nh, n_kv_head: nkv, head_size: hs } = *d;
    assert!(b > 0 && tq > 0 && tk > 0 && hs > 0, "attention: empty dimension in {d:?}");
    assert!(nkv > 0 && nh % nkv == 0, "attention: n_kv_head {nkv} must divide n_head {nh}");
    assert!(x.q_stride >= nh * hs && x.k_stride >= nkv * hs && x.v_stride >= nkv * hs, "attention: stride too small");
    assert!(x.q.len() >= (b * tq - 1) * x.q_stride + nh * hs, "attention: q too short");
    assert!(x.k.len() >= (b * tk - 1) * x.k_stride + nkv * hs, "attention: k too short");
    assert!(x.v.len() >= (b * tk - 1) * x.v_stride + nkv * hs, "attention: v too short");
    match score {
        ScoreFn::Cosine { log_tau } => assert!(log_tau.len() >= nh, "attention: log_tau too short"),
        ScoreFn::Additive { v } => assert!(v.len() >= nh * hs, "attention: additive v too short"),
        _ => {}
    }
    match pos {
        PositionBias::None => {}
        PositionBias::Alibi { slopes } => assert!(slopes.len() >= nh, "attention: ALiBi slopes too short"),
        PositionBias::T5 { table, num_buckets, .. } => {
            assert!(table.len() >= num_buckets * nh, "attention: T5 table too short")
        }
        PositionBias::Shaw { k, keys, values } => {
            assert!(
                matches!(score, ScoreFn::Scaled | ScoreFn::Unscaled),
                "attention: Shaw relative positions need a dot-product score"
            );
            assert!(keys.len() >= (2 * k + 1) * hs, "attention: Shaw keys too short");
            assert!(values.is_none_or(|v| v.len() >= (2 * k + 1) * hs), "attention: Shaw values too short");
        }
    }
    if let Some(km) = mask.key_mask {
        assert!(km.len() >= b * tk, "attention: key_mask too short");
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

/// a (Tq, Tk) = scores of query head h (q, stride ldq) against its kv head (k, stride ldk),
/// before position bias and mask. Cosine reads the normalised keys `kn` and normalises the
/// queries into `qn`; additive scores are computed only where causality leaves keys visible.
#[allow(clippy::too_many_arguments)]
fn raw_scores(
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

/// a (Tq, Tk) += the position bias of query head h on the keys causality leaves visible.
/// `rel` (Tq+Tk−1) and `shaw` (Tq, 2k+1) are scratch for T5 and Shaw.
#[allow(clippy::too_many_arguments)]
fn add_position_bias(
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

/// Softmax of every row of a (Tq, Tk) over its visible keys (batch element's `key_mask` row
/// `km`, if any); hidden keys get probability 0 and a row with no visible key is all zero.
fn masked_softmax(a: &mut [f32], km: Option<&[bool]>, d: &AttnDims, mask: &AttnMask) {
    let tk = d.tk;
    for i in 0..d.tq {
        let row = &mut a[i * tk..(i + 1) * tk];
        let (live, hidden) = row.split_at_mut(mask.key_end(i, tk));
        hidden.fill(0.0);
        let Some(km) = km else {
            math::softmax_inplace(live);
            continue;
        };
        let km = &km[..live.len()];
        let mut max = f32::NEG_INFINITY;
        let mut any = false;
        for (&s, &ok) in live.iter().zip(km) {
            if ok {
                max = max.max(s);
                any = true;
            }
        }
        if !any {
            live.fill(0.0);
            continue;
        }
        let mut sum = 0.0;
        for (s, &ok) in live.iter_mut().zip(km) {
            *s = if ok { math::exp(*s - max) } else { 0.0 };
            sum += *s;
        }
        let inv = 1.0 / sum;
        live.iter_mut().for_each(|s| *s *= inv);
    }
}

/// In place on dp (Tq, Tk): dS = P ⊙ (dP − Σ_j P·dP) per row; hidden keys get 0.
fn softmax_backward(dp: &mut [f32], p: &[f32], d: &AttnDims, mask: &AttnMask) {
    let tk = d.tk;
    for i in 0..d.tq {
        let end = mask.key_end(i, tk);
        let pr = &p[i * tk..i * tk + end];
        let row = &mut dp[i * tk..(i + 1) * tk];
        let dot = math::dot(pr, &row[..end]);
        for j in 0..end {
            row[j] = pr[j] * (row[j] - dot);
        }
        row[end..].fill(0.0);
    }
}

/// out (B·Tq, NH·hs) = softmax(mask(score(Q, K) + bias)) · V (+ Shaw values) per query head,
/// written in full; probs (B, NH, Tq, Tk) keeps the softmax probabilities for the backward
/// pass. dropout: Some((dropped (B, NH, Tq, Tk), p, seed)) → dropped = dropout_inplace(copy of
/// probs, p, seed, offset = (b·NH + h)·Tq·Tk), which is then used in the weighted sum.
///
/// Unlike [`super::attention::attention_forward`] this takes a `scratch` of
/// [`general_attention_fwd_scratch_len`] elements (normalised q/k for `Cosine`, T5 and Shaw
/// bias rows); it may be empty when that length is zero.
#[allow(clippy::too_many_arguments)]
pub fn general_attention_forward(
    out: &mut [f32],
    probs: &mut [f32],
    dropout: Option<(&mut [f32], f32, u64)>,
    scratch: &mut [f32],
    x: &AttnInputs,
    dims: &AttnDims,
    score: &ScoreFn,
    pos: &PositionBias,
    mask: &AttnMask,
) {
    let _p = crate::profile::scope(crate::profile::Op::AttentionFwd);
    validate(x, dims, score, pos, mask);
    let AttnDims { b, tq, tk, n_head: nh, n_kv_head: nkv, head_size: hs } = *dims;
    let (g, blk, c) = (dims.group(), tq * tk, nh * hs);
    let lens = FwdScratch::new(dims, score, pos);
    let per = lens.per_task();
    assert!(out.len() >= b * tq * c, "attention: out too short");
    assert!(probs.len() >= b * nh * blk, "attention: probs too short");
    assert!(scratch.len() >= dims.tasks() * per, "attention: forward scratch too short");
    let (out_ptr, probs_ptr, scratch_ptr) =
        (SendPtr(out.as_mut_ptr()), SendPtr(probs.as_mut_ptr()), SendPtr(scratch.as_mut_ptr()));
    let (drop_ptr, p_drop, seed) = match dropout {
        Some((d, p, seed)) => {
            assert!(d.len() >= b * nh * blk, "attention: dropout buffer too short");
            (Some(SendPtr(d.as_mut_ptr())), p, seed)
        }
        None => (None, 0.0, 0),
    };
    (0..dims.tasks()).into_par_iter().for_each(|task| {
        let (bi, kvh) = (task / nkv, task % nkv);
        // SAFETY: task `task` owns scratch[task·per ..][..per], the probability (and dropout)
        // blocks of heads kvh·g .. (kvh+1)·g of batch element bi, and those heads' columns of
        // out's rows bi·Tq ..; no other task touches them. Lengths were asserted above.
        let mut sc = unsafe { std::slice::from_raw_parts_mut(scratch_ptr.get().add(task * per), per) };
        let (kn, qn, rel, shaw) =
            (carve(&mut sc, lens.kn), carve(&mut sc, lens.qn), carve(&mut sc, lens.rel), carve(&mut sc, lens.shaw));
        let k = &x.k[bi * tk * x.k_stride + kvh * hs..];
        let v = &x.v[bi * tk * x.v_stride + kvh * hs..];
        let km = mask.key_mask.map(|m| &m[bi * tk..(bi + 1) * tk]);
        if matches!(score, ScoreFn::Cosine { .. }) {
            normalize_rows(kn, None, k, x.k_stride, tk, hs);
        }
        for h in kvh * g..(kvh + 1) * g {
            let bh = bi * nh + h;
            let q = &x.q[bi * tq * x.q_stride + h * hs..];
            let a = unsafe { std::slice::from_raw_parts_mut(probs_ptr.get().add(bh * blk), blk) };
            raw_scores(a, qn, kn, q, x.q_stride, k, x.k_stride, h, dims, score, mask);
            add_position_bias(a, rel, shaw, q, x.q_stride, h, dims, score, pos, mask);
            masked_softmax(a, km, dims, mask);
            let used: &[f32] = match drop_ptr {
                Some(dp) => {
                    let dropped = unsafe { std::slice::from_raw_parts_mut(dp.get().add(bh * blk), blk) };
                    dropped.copy_from_slice(a);
                    dropout_inplace(dropped, p_drop, seed, bh * blk);
                    dropped
                }
                None => a,
            };
            unsafe {
                let o = out_ptr.get().add(bi * tq * c + h * hs);
                sgemm_raw(
                    false,
                    false,
                    tq,
                    hs,
                    tk,
                    1.0,
                    used.as_ptr(),
                    tk,
                    v.as_ptr(),
                    x.v_stride,
                    0.0,
                    o,
                    c,
                    Threads::Single,
                );
                if let PositionBias::Shaw { k: sk, values: Some(vals), .. } = *pos {
                    // out += bucket(P) · values: probabilities summed per relative position first.
                    let r = 2 * sk + 1;
                    shaw_scatter(shaw, used, sk, dims, mask);
                    sgemm_raw(
                        false,
                        false,
                        tq,
                        hs,
                        r,
                        1.0,
                        shaw.as_ptr(),
                        r,
                        vals.as_ptr(),
                        hs,
                        1.0,
                        o,
                        c,
                        Threads::Single,
                    );
                }
            }
        }
    });
}

/// Backward of [`general_attention_forward`].
///
/// grads: dq, dk, dv, OVERWRITTEN (see [`QkvGrads`]); pgrads: parameter gradients, ACCUMULATED;
/// scratch: [`general_attention_scratch_len`] elements; dout (B·Tq, NH·hs); x, probs, dims,
/// score, pos, mask: as in the forward call; dropout: (dropped probabilities, p, seed) of the
/// forward call, if any. For `QkvGrads::Packed`, `x` views the packed forward buffer with the
/// same column offsets (Tq must equal Tk).
#[allow(clippy::too_many_arguments)]
pub fn general_attention_backward(
    grads: QkvGrads,
    pgrads: AttnParamGrads,
    scratch: &mut [f32],
    dout: &[f32],
    x: &AttnInputs,
    probs: &[f32],
    dropout: Option<(&[f32], f32, u64)>,
    dims: &AttnDims,
    score: &ScoreFn,
    pos: &PositionBias,
    mask: &AttnMask,
) {
    let _p = crate::profile::scope(crate::profile::Op::AttentionBwd);
    validate(x, dims, score, pos, mask);
    let AttnDims { b, tq, tk, n_head: nh, n_kv_head: nkv, head_size: hs } = *dims;
    let (g, blk, c) = (dims.group(), tq * tk, nh * hs);
    let (qw, kvw) = (nh * hs, nkv * hs);
    assert!(dout.len() >= b * tq * c, "attention: dout too short");
    assert!(probs.len() >= b * nh * blk, "attention: probs too short");
    if let Some((d, _, _)) = dropout {
        assert!(d.len() >= b * nh * blk, "attention: dropout buffer too short");
    }
    let disjoint = |a: usize, wa: usize, b: usize, wb: usize| a + wa <= b || b + wb <= a;
    // (dq, its stride, dk, its stride, dv, its stride)
    let (dq, ldgq, dk, ldgk, dv, ldgv) = match grads {
        QkvGrads::Packed { dqkv, stride, q_off, k_off, v_off } => {
            assert!(tq == tk, "attention: packed gradients need self-attention (Tq = Tk)");
            assert!(
                disjoint(q_off, qw, k_off, kvw) && disjoint(q_off, qw, v_off, kvw) && disjoint(k_off, kvw, v_off, kvw),
                "attention: packed q/k/v columns overlap"
            );
            let width = (q_off + qw).max(k_off + kvw).max(v_off + kvw);
            assert!(stride >= width && dqkv.len() >= (b * tq - 1) * stride + width, "attention: dqkv too short");
            let p = dqkv.as_mut_ptr();
            // SAFETY: the offsets are inside the first row (asserted above).
            unsafe { (p.add(q_off), stride, p.add(k_off), stride, p.add(v_off), stride) }
        }
        QkvGrads::Split { dq, q_stride, dkv, kv_stride, k_off, v_off } => {
            assert!(disjoint(k_off, kvw, v_off, kvw), "attention: dk and dv columns overlap");
            let width = (k_off + kvw).max(v_off + kvw);
            assert!(q_stride >= qw && dq.len() >= (b * tq - 1) * q_stride + qw, "attention: dq too short");
            assert!(kv_stride >= width && dkv.len() >= (b * tk - 1) * kv_stride + width, "attention: dkv too short");
            let p = dkv.as_mut_ptr();
            // SAFETY: the offsets are inside the first row (asserted above).
            unsafe { (dq.as_mut_ptr(), q_stride, p.add(k_off), kv_stride, p.add(v_off), kv_stride) }
        }
    };
    let (dq, dk, dv) = (SendPtr(dq), SendPtr(dk), SendPtr(dv));
    let lens = BwdScratch::new(dims, score, pos);
    let per = lens.per_task();
    assert!(scratch.len() >= dims.tasks() * per, "attention: backward scratch too short");
    let scratch_ptr = SendPtr(scratch.as_mut_ptr());
    let dot_scale = score.dot_scale(hs);

    (0..dims.tasks()).into_par_iter().for_each(|task| {
        let (bi, kvh) = (task / nkv, task % nkv);
        // SAFETY: task `task` owns scratch[task·per ..][..per]; it writes dq only in rows
        // bi·Tq .. of its query heads' columns, and dk, dv only in rows bi·Tk .. of its kv
        // head's columns, which no other task writes (and the q/k/v column ranges of a
        // packed buffer were asserted disjoint). Lengths were asserted above.
        let sc = unsafe { std::slice::from_raw_parts_mut(scratch_ptr.get().add(task * per), per) };
        let BwdParts { dp, kn, knorm, qn, qnorm, tau, add, rel, t5, shaw, keys, vals } = lens.split(sc);
        for part in [&mut *tau, &mut *add, &mut *t5, &mut *keys, &mut *vals] {
            part.fill(0.0);
        }
        let k = &x.k[bi * tk * x.k_stride + kvh * hs..];
        let v = &x.v[bi * tk * x.v_stride + kvh * hs..];
        let (dk, dv) = unsafe { (dk.get().add(bi * tk * ldgk + kvh * hs), dv.get().add(bi * tk * ldgv + kvh * hs)) };
        let dk_row = |j: usize| unsafe { std::slice::from_raw_parts_mut(dk.add(j * ldgk), hs) };
        match score {
            ScoreFn::Cosine { .. } => normalize_rows(kn, Some(knorm), k, x.k_stride, tk, hs),
            ScoreFn::Additive { .. } => (0..tk).for_each(|j| dk_row(j).fill(0.0)),
            _ => {}
        }
        for (hl, h) in (kvh * g..(kvh + 1) * g).enumerate() {
            let bh = bi * nh + h;
            // The first head of the group overwrites dK and dV, the others add to them.
            let beta = if hl == 0 { 0.0 } else { 1.0 };
            let q = &x.q[bi * tq * x.q_stride + h * hs..];
            let dy = &dout[bi * tq * c + h * hs..];
            let a = &probs[bh * blk..(bh + 1) * blk];
            let used = match dropout {
                Some((d, _, _)) => &d[bh * blk..(bh + 1) * blk],
                None => a,
            };
            let dq = unsafe { dq.get().add(bi * tq * ldgq + h * hs) };
            let dq_row = |i: usize| unsafe { std::slice::from_raw_parts_mut(dq.add(i * ldgq), hs) };
            // dP = dY·Vᵀ (gradient of the probabilities actually used), dV (+)= Pᵀ·dY.
            sgemm(false, true, tq, tk, hs, 1.0, dy, c, v, x.v_stride, 0.0, dp, tk, Threads::Single);
            unsafe {
                sgemm_raw(
                    true,
                    false,
                    tk,
                    hs,
                    tq,
                    1.0,
                    used.as_ptr(),
                    tk,
                    dy.as_ptr(),
                    c,
                    beta,
                    dv,
                    ldgv,
                    Threads::Single,
                );
            }
            if let PositionBias::Shaw { k: sk, values: Some(values), .. } = *pos {
                // out_i += Σ_j p_ij·values[idx_ij]: dP_ij += dY_i·values[idx_ij], and
                // d values = bucket(P)ᵀ·dY.
                let r = 2 * sk + 1;
                sgemm(false, true, tq, r, hs, 1.0, dy, c, values, hs, 0.0, shaw, r, Threads::Single);
                shaw_gather_add(dp, shaw, sk, dims, mask);
                shaw_scatter(shaw, used, sk, dims, mask);
                sgemm(true, false, r, hs, tq, 1.0, shaw, r, dy, c, 1.0, vals, hs, Threads::Single);
            }
            if let Some((_, p, seed)) = dropout {
                dropout_inplace(dp, p, seed, bh * blk);
            }
            softmax_backward(dp, a, dims, mask);
            let ds = &*dp;
            if let PositionBias::T5 { num_buckets, max_distance, bidirectional, .. } = *pos {
                // Sum dS per relative position, then per bucket.
                rel.fill(0.0);
                for i in 0..tq {
                    for j in 0..mask.key_end(i, tk) {
                        rel[j + tq - 1 - i] += ds[i * tk + j];
                    }
                }
                for (r, &s) in rel.iter().enumerate() {
                    t5[t5_bucket_of(r, dims, mask, num_buckets, max_distance, bidirectional) * g + hl] += s;
                }
            }
            match *score {
                ScoreFn::Scaled | ScoreFn::Unscaled => unsafe {
                    // dQ = scale·dS·K, dK (+)= scale·dSᵀ·Q.
                    let (ds, k, q) = (ds.as_ptr(), k.as_ptr(), q.as_ptr());
                    sgemm_raw(
                        false,
                        false,
                        tq,
                        hs,
                        tk,
                        dot_scale,
                        ds,
                        tk,
                        k,
                        x.k_stride,
                        0.0,
                        dq,
                        ldgq,
                        Threads::Single,
                    );
                    sgemm_raw(
                        true,
                        false,
                        tk,
                        hs,
                        tq,
                        dot_scale,
                        ds,
                        tk,
                        q,
                        x.q_stride,
                        beta,
                        dk,
                        ldgk,
                        Threads::Single,
                    );
                },
                ScoreFn::Cosine { log_tau } => {
                    // s = τ·q̂·k̂: dq̂ = τ·dS·K̂ (in dq for now), dk̂ (+)= τ·dSᵀ·Q̂ (in dk until
                    // every head has added to it), ∂L/∂log τ = Σ dS·s = Σ_i q̂_i·dq̂_i.
                    let t = log_tau[h].exp();
                    normalize_rows(qn, Some(qnorm), q, x.q_stride, tq, hs);
                    unsafe {
                        let (ds, kn, qn) = (ds.as_ptr(), kn.as_ptr(), qn.as_ptr());
                        sgemm_raw(false, false, tq, hs, tk, t, ds, tk, kn, hs, 0.0, dq, ldgq, Threads::Single);
                        sgemm_raw(true, false, tk, hs, tq, t, ds, tk, qn, hs, beta, dk, ldgk, Threads::Single);
                    }
                    for i in 0..tq {
                        let (row, qni) = (dq_row(i), &qn[i * hs..(i + 1) * hs]);
                        tau[hl] += math::dot(qni, row);
                        normalize_backward(row, qni, qnorm[i]);
                    }
                }
                ScoreFn::Additive { v: av } => {
                    // s_ij = Σ_e v_e·tanh(q_ie + k_je): the tanh is recomputed, not stored.
                    let vh = &av[h * hs..(h + 1) * hs];
                    let dv_h = &mut add[hl * hs..(hl + 1) * hs];
                    for i in 0..tq {
                        let (qi, dqi) = (&q[i * x.q_stride..i * x.q_stride + hs], dq_row(i));
                        dqi.fill(0.0);
                        for j in 0..mask.key_end(i, tk) {
                            let s = ds[i * tk + j];
                            if s == 0.0 {
                                continue; // hidden key or fully masked row
                            }
                            let (kj, dkj) = (&k[j * x.k_stride..j * x.k_stride + hs], dk_row(j));
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
            if let PositionBias::Shaw { k: sk, keys: shaw_keys, .. } = *pos {
                // s_ij += scale·q_i·keys[idx_ij]: dQ += scale·bucket(dS)·keys and
                // d keys += scale·bucket(dS)ᵀ·Q.
                let r = 2 * sk + 1;
                shaw_scatter(shaw, ds, sk, dims, mask);
                unsafe {
                    let (bk, kp) = (shaw.as_ptr(), shaw_keys.as_ptr());
                    sgemm_raw(false, false, tq, hs, r, dot_scale, bk, r, kp, hs, 1.0, dq, ldgq, Threads::Single);
                }
                sgemm(true, false, r, hs, tq, dot_scale, shaw, r, q, x.q_stride, 1.0, keys, hs, Threads::Single);
            }
        }
        if matches!(score, ScoreFn::Cosine { .. }) {
            for j in 0..tk {
                normalize_backward(dk_row(j), &kn[j * hs..(j + 1) * hs], knorm[j]);
            }
        }
    });

    // Parameter gradients: partial sums added in task order (batch-major), whatever the
    // thread count.
    let AttnParamGrads { mut log_tau, mut additive_v, mut t5_table, mut shaw_keys, mut shaw_values } = pgrads;
    let cosine = matches!(score, ScoreFn::Cosine { .. });
    let additive = matches!(score, ScoreFn::Additive { .. });
    let long_enough = |d: &Option<&mut [f32]>, n: usize| d.as_ref().is_none_or(|d| d.len() >= n);
    assert!(!cosine || long_enough(&log_tau, nh), "attention: log_tau gradient too short");
    assert!(!additive || long_enough(&additive_v, nh * hs), "attention: additive v gradient too short");
    if let PositionBias::T5 { num_buckets, .. } = pos {
        assert!(long_enough(&t5_table, num_buckets * nh), "attention: T5 table gradient too short");
    }
    if let PositionBias::Shaw { k, .. } = pos {
        let n = (2 * k + 1) * hs;
        assert!(long_enough(&shaw_keys, n) && long_enough(&shaw_values, n), "attention: Shaw gradient too short");
    }
    for task in 0..dims.tasks() {
        let kvh = task % nkv;
        let parts = lens.split(&mut scratch[task * per..(task + 1) * per]);
        let h0 = kvh * g;
        if let (true, Some(d)) = (cosine, log_tau.as_deref_mut()) {
            for (hl, &p) in parts.tau.iter().enumerate() {
                d[h0 + hl] += p;
            }
        }
        if let (true, Some(d)) = (additive, additive_v.as_deref_mut()) {
            for (dd, &p) in d[h0 * hs..(h0 + g) * hs].iter_mut().zip(parts.add.iter()) {
                *dd += p;
            }
        }
        if let (PositionBias::T5 { num_buckets, .. }, Some(d)) = (pos, t5_table.as_deref_mut()) {
            for bk in 0..*num_buckets {
                for hl in 0..g {
                    d[bk * nh + h0 + hl] += parts.t5[bk * g + hl];
                }
            }
        }
        if let PositionBias::Shaw { values, .. } = pos {
            if let Some(d) = shaw_keys.as_deref_mut() {
                d.iter_mut().zip(parts.keys.iter()).for_each(|(d, &p)| *d += p);
            }
            if let (Some(_), Some(d)) = (values, shaw_values.as_deref_mut()) {
                d.iter_mut().zip(parts.vals.iter()).for_each(|(d, &p)| *d += p);
            }
        }
    }
}
