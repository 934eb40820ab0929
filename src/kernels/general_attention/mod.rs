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
//!
//! The kernel runs the steps of attention in order, one file each, every step's forward and
//! backward side by side:
//!
//! ```text
//! scores.rs         s = score(q, k)                 scaled/unscaled dot, cosine, additive
//! position_bias.rs  s += bias(pos_i, pos_j)         ALiBi, T5, Shaw (and Shaw's value term)
//! mask_softmax.rs   p = softmax(mask(s))            causal rule, key padding
//! (dropout)         p' = dropout(p)                 kernels::dropout
//! weighted_sum.rs   out = p'·v                      (Shaw's value term: position_bias.rs)
//! ```
//!
//! [`general_attention_forward`] and [`general_attention_backward`] below only carve the
//! scratch, split the work into tasks and call those steps (the backward in reverse);
//! `scratch.rs` lays out each task's scratch. The parameter-free position math (T5 buckets,
//! Shaw indices, ALiBi slopes, RoPE) is in [`super::positional`]; which scheme a model uses is
//! decided in `model::transformer::layers::position`.

mod mask_softmax;
mod position_bias;
mod scores;
mod scratch;
mod weighted_sum;

use super::dropout::dropout_inplace;
use super::SendPtr;
use rayon::prelude::*;
use scratch::{BwdParts, BwdScratch, FwdParts, FwdScratch};

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
/// at columns g·kv_head_stride.. (hs: heads side by side in a row; a KV cache keeps each head's
/// positions together instead, with rows hs apart and heads block·hs apart). Query head h uses
/// kv head h / (n_head / n_kv_head) (MHA: n_kv_head = n_head; MQA: 1; GQA: divides n_head).
#[derive(Clone, Copy, Debug)]
pub struct AttnInputs<'a> {
    pub q: &'a [f32],
    pub q_stride: usize,
    pub k: &'a [f32],
    pub k_stride: usize,
    pub v: &'a [f32],
    pub v_stride: usize,
    pub kv_head_stride: usize,
}

/// How a query row and a key row give a score.
#[derive(Clone, Copy, Debug)]
pub enum ScoreFn<'a> {
    /// s = q·k / √hs
    Scaled,
    /// s = q·k
    Unscaled,
    /// `s = exp(log_tau[h]) · (q·k) / (max(|q|, 1e-12)·max(|k|, 1e-12))`; log_tau (NH) learned.
    Cosine { log_tau: &'a [f32] },
    /// s = Σ_d v[h, d]·tanh(q_d + k_d) (Bahdanau; W_q, W_k are the Q/K projections);
    /// v (NH, hs) learned.
    Additive { v: &'a [f32] },
}

/// A bias on the scores from the query and key positions.
#[derive(Clone, Copy, Debug)]
pub enum PositionBias<'a> {
    None,
    /// `s_ij += −slope[h]·|pos_i − pos_j|`; slopes (NH) fixed (see `positional::alibi_slopes`).
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

/// One head's `hs` columns of a buffer that parallel tasks share: rows `ld` apart from `ptr`.
/// The output and the q/k/v gradients are written through these.
#[derive(Clone, Copy)]
struct HeadMut {
    ptr: *mut f32,
    ld: usize,
    hs: usize,
}

impl HeadMut {
    /// # Safety
    /// Every row the holder touches (`ptr + i·ld .. + hs`) is inside the buffer, and no other
    /// task reads or writes it while the holder lives.
    unsafe fn new(ptr: *mut f32, ld: usize, hs: usize) -> Self {
        HeadMut { ptr, ld, hs }
    }

    /// Row i (hs elements); a caller holds one row of a head at a time.
    fn row<'r>(self, i: usize) -> &'r mut [f32] {
        // SAFETY: the row belongs to this task (see `HeadMut::new`).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.ld), self.hs) }
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
    assert!(x.q_stride >= nh * hs && x.k_stride >= hs && x.v_stride >= hs, "attention: stride too small");
    assert!(x.q.len() >= (b * tq - 1) * x.q_stride + nh * hs, "attention: q too short");
    assert!(x.kv_head_stride >= hs, "attention: kv heads overlap");
    let kv_heads = (nkv - 1) * x.kv_head_stride + hs;
    assert!(x.k.len() >= (b * tk - 1) * x.k_stride + kv_heads, "attention: k too short");
    assert!(x.v.len() >= (b * tk - 1) * x.v_stride + kv_heads, "attention: v too short");
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

/// out (B·Tq, NH·hs) = softmax(mask(score(Q, K) + bias)) · V (+ Shaw values) per query head,
/// written in full; probs (B, NH, Tq, Tk) keeps the softmax probabilities for the backward
/// pass. dropout: Some((dropped (B, NH, Tq, Tk), p, seed, first)) → dropped = dropout_inplace(copy
/// of probs, p, seed, offset = first + (b·NH + h)·Tq·Tk), which is then used in the weighted sum
/// (`first`: where this batch starts in a data-parallel step's global batch; 0 in one process).
///
/// Unlike [`super::attention::attention_forward`] this takes a `scratch` of
/// [`general_attention_fwd_scratch_len`] elements (normalised q/k for `Cosine`, T5 and Shaw
/// bias rows); it may be empty when that length is zero.
#[allow(clippy::too_many_arguments)]
pub fn general_attention_forward(
    out: &mut [f32],
    probs: &mut [f32],
    dropout: Option<(&mut [f32], f32, u64, usize)>,
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
    let (blk, c) = (tq * tk, nh * hs);
    let lens = FwdScratch::new(dims, score, pos);
    let per = lens.per_task();
    assert!(out.len() >= b * tq * c, "attention: out too short");
    assert!(probs.len() >= b * nh * blk, "attention: probs too short");
    assert!(scratch.len() >= dims.tasks() * per, "attention: forward scratch too short");
    let (out_ptr, probs_ptr, scratch_ptr) =
        (SendPtr(out.as_mut_ptr()), SendPtr(probs.as_mut_ptr()), SendPtr(scratch.as_mut_ptr()));
    let drop = dropout.map(|(d, p, seed, first)| {
        assert!(d.len() >= b * nh * blk, "attention: dropout buffer too short");
        (SendPtr(d.as_mut_ptr()), p, seed, first)
    });
    (0..dims.tasks()).into_par_iter().for_each(|task| {
        // SAFETY: task `task` owns scratch[task·per ..][..per], the probability (and dropout)
        // blocks of heads kvh·g .. (kvh+1)·g of batch element bi, and those heads' columns of
        // out's rows bi·Tq ..; no other task touches them. Lengths were asserted above.
        unsafe {
            let sc = std::slice::from_raw_parts_mut(scratch_ptr.get().add(task * per), per);
            let at = TaskOut { out: out_ptr, probs: probs_ptr, dropped: drop };
            forward_task(task / nkv, task % nkv, lens.split(sc), at, x, dims, score, pos, mask);
        }
    });
}

/// Where one forward task writes: `out` (B·Tq, NH·hs), `probs` (B, NH, Tq, Tk) and the dropped
/// probabilities with the dropout settings (p, seed, first), if any.
#[derive(Clone, Copy)]
struct TaskOut {
    out: SendPtr<f32>,
    probs: SendPtr<f32>,
    dropped: Option<(SendPtr<f32>, f32, u64, usize)>,
}

/// The forward pass of one (batch element `bi`, kv head `kvh`) task: the query heads that share
/// kv head `kvh`, each through scores, position bias, masked softmax, dropout and weighted sum.
///
/// # Safety
/// The task owns its heads' probability (and dropout) blocks of element `bi` and those heads'
/// columns of `out`'s rows `bi·Tq ..`; `validate` accepted the inputs and the buffers hold
/// B·NH·Tq·Tk probabilities and B·Tq output rows.
#[allow(clippy::too_many_arguments)]
unsafe fn forward_task(
    bi: usize,
    kvh: usize,
    parts: FwdParts,
    at: TaskOut,
    x: &AttnInputs,
    dims: &AttnDims,
    score: &ScoreFn,
    pos: &PositionBias,
    mask: &AttnMask,
) {
    let AttnDims { tq, tk, n_head: nh, head_size: hs, .. } = *dims;
    let (g, blk, c) = (dims.group(), tq * tk, nh * hs);
    let FwdParts { kn, qn, rel, shaw } = parts;
    let k = &x.k[bi * tk * x.k_stride + kvh * x.kv_head_stride..];
    let v = &x.v[bi * tk * x.v_stride + kvh * x.kv_head_stride..];
    let km = mask.key_mask.map(|m| &m[bi * tk..(bi + 1) * tk]);
    scores::keys_forward(kn, k, x.k_stride, dims, score);
    for h in kvh * g..(kvh + 1) * g {
        let bh = bi * nh + h;
        let q = &x.q[bi * tq * x.q_stride + h * hs..];
        let a = std::slice::from_raw_parts_mut(at.probs.get().add(bh * blk), blk);
        scores::scores_forward(a, qn, kn, q, x.q_stride, k, x.k_stride, h, dims, score, mask);
        position_bias::position_bias_forward(a, rel, shaw, q, x.q_stride, h, dims, score, pos, mask);
        mask_softmax::masked_softmax_forward(a, km, dims, mask);
        let used: &[f32] = match at.dropped {
            Some((dp, p_drop, seed, first)) => {
                let dropped = std::slice::from_raw_parts_mut(dp.get().add(bh * blk), blk);
                dropped.copy_from_slice(a);
                dropout_inplace(dropped, p_drop, seed, first + bh * blk);
                dropped
            }
            None => a,
        };
        let o = HeadMut::new(at.out.get().add(bi * tq * c + h * hs), c, hs);
        weighted_sum::weighted_sum_forward(o, used, v, x.v_stride, dims);
        position_bias::shaw_values_forward(o, shaw, used, dims, pos, mask);
    }
}

/// A decode step of rows that hold different numbers of cached positions (a server's continuous
/// batch): row r has one query, at position `key_lens[r] − 1`, against its own `key_lens[r]`
/// keys and values. Rows with `key_lens[r] = 0` are skipped (their output is not touched).
#[derive(Clone, Copy, Debug)]
pub struct RaggedDecode<'a> {
    /// Row r's query at `q[r·q_rs ..]` (NH·hs, head h at columns h·hs ..).
    pub q: &'a [f32],
    pub q_rs: usize,
    /// Row r's keys and values at `k[r·kv_rs ..]`, `v[r·kv_rs ..]`: position p of kv head g at
    /// `g·kv_head_stride + p·kv_stride`.
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub kv_rs: usize,
    pub kv_stride: usize,
    pub kv_head_stride: usize,
    pub key_lens: &'a [usize],
    /// The most keys any row may hold (sizes the probability and scratch blocks).
    pub max_keys: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_size: usize,
}

impl RaggedDecode<'_> {
    /// Row r alone as one [`general_attention_forward`] call: inputs, sizes and causal mask.
    fn row(&self, r: usize) -> (AttnInputs<'_>, AttnDims, AttnMask<'static>) {
        let tk = self.key_lens[r];
        let x = AttnInputs {
            q: &self.q[r * self.q_rs..],
            q_stride: self.n_head * self.head_size,
            k: &self.k[r * self.kv_rs..],
            k_stride: self.kv_stride,
            v: &self.v[r * self.kv_rs..],
            v_stride: self.kv_stride,
            kv_head_stride: self.kv_head_stride,
        };
        let dims =
            AttnDims { b: 1, tq: 1, tk, n_head: self.n_head, n_kv_head: self.n_kv_head, head_size: self.head_size };
        (x, dims, AttnMask { causal: true, q_offset: tk - 1, key_mask: None })
    }

    fn widest(&self) -> AttnDims {
        let (nh, nkv, hs) = (self.n_head, self.n_kv_head, self.head_size);
        AttnDims { b: 1, tq: 1, tk: self.max_keys, n_head: nh, n_kv_head: nkv, head_size: hs }
    }
}

/// Length of the `scratch` that [`ragged_decode_forward`] needs for `rows` rows.
pub fn ragged_decode_scratch_len(
    rows: usize,
    max_keys: usize,
    heads: (usize, usize, usize),
    score: &ScoreFn,
    pos: &PositionBias,
) -> usize {
    let (nh, nkv, hs) = heads;
    let dims = AttnDims { b: 1, tq: 1, tk: max_keys, n_head: nh, n_kv_head: nkv, head_size: hs };
    rows * nkv * FwdScratch::new(&dims, score, pos).per_task()
}

/// out row r (at `out[r·out_rs ..]`, NH·hs) = row r's attention (see [`RaggedDecode`]); probs
/// (rows, NH·max_keys): row r's block holds its (NH, `key_lens[r]`) probabilities as the
/// single-row call lays them out. Each row equals [`general_attention_forward`] on that row alone
/// (B = 1, Tq = 1, Tk = `key_lens[r]`, causal) bit for bit, but all rows' (row, kv head) tasks run
/// in one parallel pass instead of one pass per row.
pub fn ragged_decode_forward(
    out: &mut [f32],
    out_rs: usize,
    probs: &mut [f32],
    scratch: &mut [f32],
    x: &RaggedDecode,
    score: &ScoreFn,
    pos: &PositionBias,
) {
    let _p = crate::profile::scope(crate::profile::Op::AttentionFwd);
    let (rows, nh, nkv, hs) = (x.key_lens.len(), x.n_head, x.n_kv_head, x.head_size);
    let widest = FwdScratch::new(&x.widest(), score, pos).per_task();
    assert!(scratch.len() >= rows * nkv * widest, "ragged attention: scratch too short");
    assert!(probs.len() >= rows * nh * x.max_keys, "ragged attention: probs too short");
    for r in 0..rows {
        let tk = x.key_lens[r];
        if tk > 0 {
            assert!(tk <= x.max_keys, "ragged attention: row {r} has {tk} keys, more than {}", x.max_keys);
            assert!(out.len() >= r * out_rs + nh * hs, "ragged attention: out too short");
            let (row, dims, mask) = x.row(r);
            validate(&row, &dims, score, pos, &mask);
        }
    }
    let (out_ptr, probs_ptr, scratch_ptr) =
        (SendPtr(out.as_mut_ptr()), SendPtr(probs.as_mut_ptr()), SendPtr(scratch.as_mut_ptr()));
    (0..rows * nkv).into_par_iter().for_each(|task| {
        let (r, kvh) = (task / nkv, task % nkv);
        if x.key_lens[r] == 0 {
            return;
        }
        let (row, dims, mask) = x.row(r);
        let lens = FwdScratch::new(&dims, score, pos);
        // SAFETY: task (r, kvh) owns scratch[task·widest ..][..per] (per ≤ widest), row r's
        // probability block (NH·max_keys ≥ NH·Tk) and kv head kvh's heads' columns of out row r;
        // each row was validated above and its output row lies inside `out`.
        unsafe {
            let sc = std::slice::from_raw_parts_mut(scratch_ptr.get().add(task * widest), lens.per_task());
            let at = TaskOut {
                out: SendPtr(out_ptr.get().add(r * out_rs)),
                probs: SendPtr(probs_ptr.get().add(r * nh * x.max_keys)),
                dropped: None,
            };
            forward_task(0, kvh, lens.split(sc), at, &row, &dims, score, pos, &mask);
        }
    });
}

/// Backward of [`general_attention_forward`].
///
/// grads: dq, dk, dv, OVERWRITTEN (see [`QkvGrads`]); pgrads: parameter gradients, ACCUMULATED;
/// scratch: [`general_attention_scratch_len`] elements; dout (B·Tq, NH·hs); x, probs, dims,
/// score, pos, mask: as in the forward call; dropout: (dropped probabilities, p, seed, first) of the
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
    dropout: Option<(&[f32], f32, u64, usize)>,
    dims: &AttnDims,
    score: &ScoreFn,
    pos: &PositionBias,
    mask: &AttnMask,
) {
    let _p = crate::profile::scope(crate::profile::Op::AttentionBwd);
    validate(x, dims, score, pos, mask);
    let AttnDims { b, tq, tk, n_head: nh, n_kv_head: nkv, head_size: hs } = *dims;
    let (g, blk, c) = (dims.group(), tq * tk, nh * hs);
    assert!(dout.len() >= b * tq * c, "attention: dout too short");
    assert!(probs.len() >= b * nh * blk, "attention: probs too short");
    if let Some((d, _, _, _)) = dropout {
        assert!(d.len() >= b * nh * blk, "attention: dropout buffer too short");
    }
    let [(dq, ldgq), (dk, ldgk), (dv, ldgv)] = grad_columns(grads, dims);
    let lens = BwdScratch::new(dims, score, pos);
    let per = lens.per_task();
    assert!(scratch.len() >= dims.tasks() * per, "attention: backward scratch too short");
    let scratch_ptr = SendPtr(scratch.as_mut_ptr());

    (0..dims.tasks()).into_par_iter().for_each(|task| {
        let (bi, kvh) = (task / nkv, task % nkv);
        // SAFETY: task `task` owns scratch[task·per ..][..per]; it writes dq only in rows
        // bi·Tq .. of its query heads' columns, and dk, dv only in rows bi·Tk .. of its kv
        // head's columns, which no other task writes (and the q/k/v column ranges of a
        // packed buffer were asserted disjoint). Lengths were asserted above.
        let sc = unsafe { std::slice::from_raw_parts_mut(scratch_ptr.get().add(task * per), per) };
        let BwdParts { dp, score: mut ss, bias: mut bs } = lens.split(sc);
        // The task's partial parameter gradients start at zero.
        for part in [&mut *ss.tau, &mut *ss.add, &mut *bs.t5, &mut *bs.keys, &mut *bs.vals] {
            part.fill(0.0);
        }
        let k = &x.k[bi * tk * x.k_stride + kvh * x.kv_head_stride..];
        let v = &x.v[bi * tk * x.v_stride + kvh * x.kv_head_stride..];
        let (dk, dv) = unsafe {
            (
                HeadMut::new(dk.get().add(bi * tk * ldgk + kvh * hs), ldgk, hs),
                HeadMut::new(dv.get().add(bi * tk * ldgv + kvh * hs), ldgv, hs),
            )
        };
        scores::keys_backward_begin(&mut ss, dk, k, x.k_stride, dims, score);
        for (hl, h) in (kvh * g..(kvh + 1) * g).enumerate() {
            let bh = bi * nh + h;
            // The first head of the group overwrites dK and dV, the others add to them.
            let beta = if hl == 0 { 0.0 } else { 1.0 };
            let q = &x.q[bi * tq * x.q_stride + h * hs..];
            let dy = &dout[bi * tq * c + h * hs..];
            let a = &probs[bh * blk..(bh + 1) * blk];
            let used = match dropout {
                Some((d, _, _, _)) => &d[bh * blk..(bh + 1) * blk],
                None => a,
            };
            let dq = unsafe { HeadMut::new(dq.get().add(bi * tq * ldgq + h * hs), ldgq, hs) };
            // The forward steps in reverse: dp is ∂L/∂(probabilities used), then ∂L/∂scores.
            weighted_sum::weighted_sum_backward(dp, dv, beta, used, dy, c, v, x.v_stride, dims);
            position_bias::shaw_values_backward(dp, &mut bs, used, dy, c, dims, pos, mask);
            if let Some((_, p, seed, first)) = dropout {
                dropout_inplace(dp, p, seed, first + bh * blk);
            }
            mask_softmax::masked_softmax_backward(dp, a, dims, mask);
            let ds = &*dp;
            scores::scores_backward(dq, dk, beta, &mut ss, ds, q, x.q_stride, k, x.k_stride, h, hl, dims, score, mask);
            position_bias::position_bias_backward(dq, &mut bs, ds, q, x.q_stride, hl, dims, score, pos, mask);
        }
        scores::keys_backward(dk, &ss, dims, score);
    });
    reduce_param_grads(pgrads, scratch, &lens, dims, score, pos);
}

/// Checks the gradient destinations of [`general_attention_backward`] and returns where dq, dk
/// and dv start (column offset applied) with their row strides.
fn grad_columns(grads: QkvGrads, dims: &AttnDims) -> [(SendPtr<f32>, usize); 3] {
    let AttnDims { b, tq, tk, n_head: nh, n_kv_head: nkv, head_size: hs } = *dims;
    let (qw, kvw) = (nh * hs, nkv * hs);
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
    [(SendPtr(dq), ldgq), (SendPtr(dk), ldgk), (SendPtr(dv), ldgv)]
}

/// Adds the tasks' partial parameter gradients (left in `scratch` by the backward tasks) to
/// `pgrads`, in task order (batch-major), whatever the thread count.
fn reduce_param_grads(
    pgrads: AttnParamGrads,
    scratch: &mut [f32],
    lens: &BwdScratch,
    dims: &AttnDims,
    score: &ScoreFn,
    pos: &PositionBias,
) {
    let AttnDims { n_head: nh, n_kv_head: nkv, head_size: hs, .. } = *dims;
    let (g, per) = (dims.group(), lens.per_task());
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
        let BwdParts { score: ss, bias: bs, .. } = lens.split(&mut scratch[task * per..(task + 1) * per]);
        let h0 = kvh * g;
        if let (true, Some(d)) = (cosine, log_tau.as_deref_mut()) {
            for (hl, &p) in ss.tau.iter().enumerate() {
                d[h0 + hl] += p;
            }
        }
        if let (true, Some(d)) = (additive, additive_v.as_deref_mut()) {
            for (dd, &p) in d[h0 * hs..(h0 + g) * hs].iter_mut().zip(ss.add.iter()) {
                *dd += p;
            }
        }
        if let (PositionBias::T5 { num_buckets, .. }, Some(d)) = (pos, t5_table.as_deref_mut()) {
            for bk in 0..*num_buckets {
                for hl in 0..g {
                    d[bk * nh + h0 + hl] += bs.t5[bk * g + hl];
                }
            }
        }
        if let PositionBias::Shaw { values, .. } = pos {
            if let Some(d) = shaw_keys.as_deref_mut() {
                d.iter_mut().zip(bs.keys.iter()).for_each(|(d, &p)| *d += p);
            }
            if let (Some(_), Some(d)) = (values, shaw_values.as_deref_mut()) {
                d.iter_mut().zip(bs.vals.iter()).for_each(|(d, &p)| *d += p);
            }
        }
    }
}
