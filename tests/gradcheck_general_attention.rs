//! Tests of `kernels::general_attention` and `kernels::positional`: the forward pass against a
//! naive f64 implementation written here, every backward gradient against central differences
//! of the forward pass (loss L = Σ r ⊙ out with fixed random r), the plain case against the fast
//! `kernels::attention`, and the positional helpers against hand-derived values.

use lmlab::kernels::general_attention::{
    general_attention_backward, general_attention_forward, general_attention_fwd_scratch_len,
    general_attention_scratch_len, ragged_decode_forward, ragged_decode_scratch_len, AttnDims, AttnInputs, AttnMask,
    AttnParamGrads, PositionBias, QkvGrads, RaggedDecode, ScoreFn,
};
use lmlab::kernels::positional::{alibi_slopes, rope_backward, rope_forward, shaw_index, sinusoidal_table, t5_bucket};
use lmlab::kernels::{attention, dropout};
mod common;
use common::{check, dot, rand_vec};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

// ---------------------------------------------------------------------------------------------
// Test cases
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Score {
    Scaled,
    Unscaled,
    Cosine,
    Additive,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Pos {
    None,
    Alibi,
    T5 { bidirectional: bool },
    Shaw { values: bool },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Masking {
    /// Self-attention, causal.
    Causal,
    /// Self-attention, bidirectional, some keys masked out.
    KeyMask,
    /// Self-attention, causal and a key mask that hides every key of one query row.
    CausalKeyMask,
    /// Cross-attention Tq < Tk, causal with a query offset (a decoder continuing a prefix).
    Cross,
    /// Cross-attention, bidirectional, query offset and key mask.
    CrossKeyMask,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    Packed,
    Split,
}

const T5_BUCKETS: usize = 8;
const T5_MAX_DISTANCE: usize = 10;
const SHAW_K: usize = 2;
const DROP_SEED: u64 = 77;
/// Parameter gradients start here, to check that backward accumulates.
const PARAM_GRAD_INIT: f32 = 0.25;
/// Input gradients start here, to check that backward overwrites the head columns and leaves
/// the others alone.
const SENTINEL: f32 = 123.0;

#[derive(Clone, Debug)]
struct Case {
    dims: AttnDims,
    score: Score,
    pos: Pos,
    masking: Masking,
    causal: bool,
    q_offset: usize,
    key_mask: Option<Vec<bool>>,
    p_drop: f32,
}

fn case(heads: (usize, usize), score: Score, pos: Pos, masking: Masking, p_drop: f32) -> Case {
    let b = 2;
    let (tq, tk, causal, q_offset, masked) = match masking {
        Masking::Causal => (6, 6, true, 0, false),
        Masking::KeyMask => (6, 6, false, 0, true),
        Masking::CausalKeyMask => (5, 5, true, 0, true),
        Masking::Cross => (4, 7, true, 3, false),
        Masking::CrossKeyMask => (3, 6, false, 2, true),
    };
    let key_mask = masked.then(|| {
        let mut m = vec![true; b * tk];
        m[2] = false;
        m[tk - 1] = false;
        m[tk] = false; // batch 1, key 0: with a causal mask, query row 0 of batch 1 sees nothing
        m[tk + 3] = false;
        m
    });
    let dims = AttnDims { b, tq, tk, n_head: heads.0, n_kv_head: heads.1, head_size: 4 };
    Case { dims, score, pos, masking, causal, q_offset, key_mask, p_drop }
}

/// Learned (and fixed) parameters of the score functions and position biases.
#[derive(Clone)]
struct Params {
    log_tau: Vec<f32>,
    add_v: Vec<f32>,
    t5_table: Vec<f32>,
    shaw_keys: Vec<f32>,
    shaw_values: Vec<f32>,
    slopes: Vec<f32>,
}

impl Params {
    fn new(rng: &mut Xoshiro256PlusPlus, nh: usize, hs: usize) -> Self {
        let mut slopes = vec![0.0; nh];
        alibi_slopes(&mut slopes);
        let r = 2 * SHAW_K + 1;
        Params {
            log_tau: rand_vec(rng, nh, 0.5).iter().map(|x| x + 0.7).collect(),
            add_v: rand_vec(rng, nh * hs, 1.0),
            t5_table: rand_vec(rng, T5_BUCKETS * nh, 1.0),
            shaw_keys: rand_vec(rng, r * hs, 1.0),
            shaw_values: rand_vec(rng, r * hs, 1.0),
            slopes,
        }
    }
}

impl Case {
    fn score<'a>(&self, p: &'a Params) -> ScoreFn<'a> {
        match self.score {
            Score::Scaled => ScoreFn::Scaled,
            Score::Unscaled => ScoreFn::Unscaled,
            Score::Cosine => ScoreFn::Cosine { log_tau: &p.log_tau },
            Score::Additive => ScoreFn::Additive { v: &p.add_v },
        }
    }

    fn pos<'a>(&self, p: &'a Params) -> PositionBias<'a> {
        match self.pos {
            Pos::None => PositionBias::None,
            Pos::Alibi => PositionBias::Alibi { slopes: &p.slopes },
            Pos::T5 { bidirectional } => PositionBias::T5 {
                table: &p.t5_table,
                num_buckets: T5_BUCKETS,
                max_distance: T5_MAX_DISTANCE,
                bidirectional,
            },
            Pos::Shaw { values } => {
                PositionBias::Shaw { k: SHAW_K, keys: &p.shaw_keys, values: values.then_some(&p.shaw_values[..]) }
            }
        }
    }

    fn mask(&self) -> AttnMask<'_> {
        AttnMask { causal: self.causal, q_offset: self.q_offset, key_mask: self.key_mask.as_deref() }
    }

    fn n_probs(&self) -> usize {
        let d = self.dims;
        d.b * d.n_head * d.tq * d.tk
    }

    fn n_out(&self) -> usize {
        let d = self.dims;
        d.b * d.tq * d.n_head * d.head_size
    }
}

/// Where q, k and v live: one packed buffer `a` (self-attention), or q in `a` and k, v in `b`.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    layout: Layout,
    stride_a: usize,
    stride_b: usize,
    q_off: usize,
    k_off: usize,
    v_off: usize,
    len_a: usize,
    len_b: usize,
    hs: usize,
}

fn geometry(c: &Case, layout: Layout) -> Geometry {
    let d = c.dims;
    let (qw, kvw) = (d.n_head * d.head_size, d.n_kv_head * d.head_size);
    match layout {
        Layout::Packed => {
            assert_eq!(d.tq, d.tk);
            // A leading and two trailing columns that are not q, k or v.
            let (q_off, k_off, v_off) = (1, 1 + qw, 1 + qw + kvw);
            let stride = v_off + kvw + 2;
            Geometry {
                layout,
                stride_a: stride,
                stride_b: 0,
                q_off,
                k_off,
                v_off,
                len_a: d.b * d.tq * stride,
                len_b: 0,
                hs: d.head_size,
            }
        }
        Layout::Split => {
            let (stride_a, stride_b) = (qw + 2, 2 * kvw + 3);
            let (k_off, v_off) = (1, 2 + kvw);
            Geometry {
                layout,
                stride_a,
                stride_b,
                q_off: 0,
                k_off,
                v_off,
                len_a: d.b * d.tq * stride_a,
                len_b: d.b * d.tk * stride_b,
                hs: d.head_size,
            }
        }
    }
}

fn inputs<'a>(g: &Geometry, a: &'a [f32], b: &'a [f32]) -> AttnInputs<'a> {
    match g.layout {
        Layout::Packed => AttnInputs {
            q: &a[g.q_off..],
            q_stride: g.stride_a,
            k: &a[g.k_off..],
            k_stride: g.stride_a,
            v: &a[g.v_off..],
            v_stride: g.stride_a,
            kv_head_stride: g.hs,
        },
        Layout::Split => AttnInputs {
            q: a,
            q_stride: g.stride_a,
            k: &b[g.k_off..],
            k_stride: g.stride_b,
            v: &b[g.v_off..],
            v_stride: g.stride_b,
            kv_head_stride: g.hs,
        },
    }
}

/// Which columns of `a` and `b` hold q, k or v.
fn head_columns(c: &Case, g: &Geometry) -> (Vec<bool>, Vec<bool>) {
    let d = c.dims;
    let (qw, kvw) = (d.n_head * d.head_size, d.n_kv_head * d.head_size);
    let in_range = |col: usize, off: usize, w: usize| col >= off && col < off + w;
    let a = (0..g.stride_a)
        .map(|col| match g.layout {
            Layout::Packed => in_range(col, g.q_off, qw) || in_range(col, g.k_off, kvw) || in_range(col, g.v_off, kvw),
            Layout::Split => in_range(col, 0, qw),
        })
        .collect();
    let b = (0..g.stride_b).map(|col| in_range(col, g.k_off, kvw) || in_range(col, g.v_off, kvw)).collect();
    (a, b)
}

struct Fwd {
    out: Vec<f32>,
    probs: Vec<f32>,
    dropped: Vec<f32>,
}

fn forward(c: &Case, p: &Params, g: &Geometry, a: &[f32], b: &[f32]) -> Fwd {
    let n = c.n_probs();
    let (mut out, mut probs, mut dropped) = (vec![f32::NAN; c.n_out()], vec![f32::NAN; n], vec![f32::NAN; n]);
    let (score, pos) = (c.score(p), c.pos(p));
    let mut scratch = vec![f32::NAN; general_attention_fwd_scratch_len(&c.dims, &score, &pos)];
    let drop = (c.p_drop > 0.0).then_some((&mut dropped[..], c.p_drop, DROP_SEED, 0));
    general_attention_forward(
        &mut out,
        &mut probs,
        drop,
        &mut scratch,
        &inputs(g, a, b),
        &c.dims,
        &score,
        &pos,
        &c.mask(),
    );
    Fwd { out, probs, dropped }
}

fn loss(c: &Case, p: &Params, g: &Geometry, a: &[f32], b: &[f32], r: &[f32]) -> f64 {
    dot(&forward(c, p, g, a, b).out, r)
}

/// Gradients from the backward pass, with the accumulation offset removed and the sentinel of
/// the non-head columns checked and cleared.
#[derive(Clone, Debug, PartialEq)]
struct Grads {
    da: Vec<f32>,
    db: Vec<f32>,
    log_tau: Vec<f32>,
    add_v: Vec<f32>,
    t5_table: Vec<f32>,
    shaw_keys: Vec<f32>,
    shaw_values: Vec<f32>,
}

fn backward(c: &Case, p: &Params, g: &Geometry, a: &[f32], b: &[f32], f: &Fwd, dout: &[f32]) -> Grads {
    let (score, pos) = (c.score(p), c.pos(p));
    let mut scratch = vec![f32::NAN; general_attention_scratch_len(&c.dims, &score, &pos)];
    let (mut da, mut db) = (vec![SENTINEL; g.len_a], vec![SENTINEL; g.len_b]);
    let init = |v: &Vec<f32>| vec![PARAM_GRAD_INIT; v.len()];
    let mut gr = Grads {
        da: vec![],
        db: vec![],
        log_tau: init(&p.log_tau),
        add_v: init(&p.add_v),
        t5_table: init(&p.t5_table),
        shaw_keys: init(&p.shaw_keys),
        shaw_values: init(&p.shaw_values),
    };
    let grads = match g.layout {
        Layout::Packed => {
            QkvGrads::Packed { dqkv: &mut da, stride: g.stride_a, q_off: g.q_off, k_off: g.k_off, v_off: g.v_off }
        }
        Layout::Split => QkvGrads::Split {
            dq: &mut da,
            q_stride: g.stride_a,
            dkv: &mut db,
            kv_stride: g.stride_b,
            k_off: g.k_off,
            v_off: g.v_off,
        },
    };
    let pgrads = AttnParamGrads {
        log_tau: Some(&mut gr.log_tau),
        additive_v: Some(&mut gr.add_v),
        t5_table: Some(&mut gr.t5_table),
        shaw_keys: Some(&mut gr.shaw_keys),
        shaw_values: Some(&mut gr.shaw_values),
    };
    let drop = (c.p_drop > 0.0).then_some((&f.dropped[..], c.p_drop, DROP_SEED, 0));
    general_attention_backward(
        grads,
        pgrads,
        &mut scratch,
        dout,
        &inputs(g, a, b),
        &f.probs,
        drop,
        &c.dims,
        &score,
        &pos,
        &c.mask(),
    );
    let (cols_a, cols_b) = head_columns(c, g);
    for (buf, cols, stride) in [(&mut da, &cols_a, g.stride_a), (&mut db, &cols_b, g.stride_b)] {
        for (i, x) in buf.iter_mut().enumerate() {
            if !cols[i % stride] {
                assert_eq!(*x, SENTINEL, "{c:?}: backward wrote outside the q/k/v columns");
                *x = 0.0;
            }
        }
    }
    for v in [&mut gr.log_tau, &mut gr.add_v, &mut gr.t5_table, &mut gr.shaw_keys, &mut gr.shaw_values] {
        v.iter_mut().for_each(|x| *x -= PARAM_GRAD_INIT);
    }
    gr.da = da;
    gr.db = db;
    gr
}

// ---------------------------------------------------------------------------------------------
// Naive f64 reference
// ---------------------------------------------------------------------------------------------

/// (out (B·Tq, NH·hs), probs (B, NH, Tq, Tk)) by direct loops in f64. `drop_scale` (B, NH, Tq,
/// Tk) multiplies the probabilities used in the weighted sums (dropout), if given.
fn reference(c: &Case, p: &Params, x: &AttnInputs, drop_scale: Option<&[f64]>) -> (Vec<f64>, Vec<f64>) {
    let AttnDims { b, tq, tk, n_head: nh, n_kv_head: nkv, head_size: hs } = c.dims;
    let mut out = vec![0.0f64; c.n_out()];
    let mut probs = vec![0.0f64; c.n_probs()];
    let row = |buf: &[f32], r: usize, stride: usize, col: usize| -> Vec<f64> {
        (0..hs).map(|e| buf[r * stride + col + e] as f64).collect()
    };
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    let dotf = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let scale = if c.score == Score::Scaled { 1.0 / (hs as f64).sqrt() } else { 1.0 };
    for bi in 0..b {
        for h in 0..nh {
            let g = h / (nh / nkv);
            for i in 0..tq {
                let qi = row(x.q, bi * tq + i, x.q_stride, h * hs);
                let pi = (c.q_offset + i) as i64;
                let mut s: Vec<Option<f64>> = vec![None; tk];
                for j in 0..tk {
                    let visible = (!c.causal || j as i64 <= pi) && c.key_mask.as_ref().is_none_or(|m| m[bi * tk + j]);
                    if !visible {
                        continue;
                    }
                    let kj = row(x.k, bi * tk + j, x.k_stride, g * hs);
                    let mut sij = match c.score {
                        Score::Scaled | Score::Unscaled => scale * dotf(&qi, &kj),
                        Score::Cosine => (p.log_tau[h] as f64).exp() * dotf(&qi, &kj) / (norm(&qi) * norm(&kj)),
                        Score::Additive => {
                            (0..hs).map(|e| p.add_v[h * hs + e] as f64 * (qi[e] + kj[e]).tanh()).sum::<f64>()
                        }
                    };
                    let rel = j as i64 - pi;
                    match c.pos {
                        Pos::None => {}
                        Pos::Alibi => sij -= p.slopes[h] as f64 * rel.abs() as f64,
                        Pos::T5 { bidirectional } => {
                            sij +=
                                p.t5_table[t5_bucket(rel, bidirectional, T5_BUCKETS, T5_MAX_DISTANCE) * nh + h] as f64
                        }
                        Pos::Shaw { .. } => {
                            let key = &p.shaw_keys[shaw_index(rel, SHAW_K) * hs..][..hs];
                            sij += scale * qi.iter().zip(key).map(|(q, k)| q * *k as f64).sum::<f64>();
                        }
                    }
                    s[j] = Some(sij);
                }
                let max = s.iter().flatten().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
                let sum: f64 = s.iter().flatten().map(|x| (x - max).exp()).sum();
                let base = ((bi * nh + h) * tq + i) * tk;
                for j in 0..tk {
                    let Some(sij) = s[j] else { continue };
                    let pij = (sij - max).exp() / sum;
                    probs[base + j] = pij;
                    let used = pij * drop_scale.map_or(1.0, |d| d[base + j]);
                    let vj = row(x.v, bi * tk + j, x.v_stride, g * hs);
                    let o = &mut out[(bi * tq + i) * nh * hs + h * hs..][..hs];
                    for e in 0..hs {
                        o[e] += used * vj[e];
                    }
                    if let Pos::Shaw { values: true } = c.pos {
                        let val = &p.shaw_values[shaw_index(j as i64 - pi, SHAW_K) * hs..][..hs];
                        for e in 0..hs {
                            o[e] += used * val[e] as f64;
                        }
                    }
                }
            }
        }
    }
    (out, probs)
}

fn random_inputs(c: &Case, g: &Geometry, seed: u64) -> (Params, Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let p = Params::new(&mut rng, c.dims.n_head, c.dims.head_size);
    let a = rand_vec(&mut rng, g.len_a, 1.0);
    let b = rand_vec(&mut rng, g.len_b, 1.0);
    let r = rand_vec(&mut rng, c.n_out(), 1.0);
    (p, a, b, r)
}

const SCORES: [Score; 4] = [Score::Scaled, Score::Unscaled, Score::Cosine, Score::Additive];
const POSITIONS: [Pos; 6] = [
    Pos::None,
    Pos::Alibi,
    Pos::T5 { bidirectional: true },
    Pos::T5 { bidirectional: false },
    Pos::Shaw { values: true },
    Pos::Shaw { values: false },
];
const MASKINGS: [Masking; 5] =
    [Masking::Causal, Masking::KeyMask, Masking::CausalKeyMask, Masking::Cross, Masking::CrossKeyMask];
/// (n_head, n_kv_head): MHA, MQA, GQA.
const HEADS: [(usize, usize); 3] = [(2, 2), (3, 1), (4, 2)];

fn shaw_allowed(score: Score, pos: Pos) -> bool {
    !matches!(pos, Pos::Shaw { .. }) || matches!(score, Score::Scaled | Score::Unscaled)
}

#[test]
fn forward_matches_naive_reference() {
    let mut runs = 0;
    let mut fully_masked_rows = 0;
    for (si, &score) in SCORES.iter().enumerate() {
        for (pi, &pos) in POSITIONS.iter().enumerate() {
            if !shaw_allowed(score, pos) {
                continue;
            }
            for (mi, &masking) in MASKINGS.iter().enumerate() {
                for (hi, &heads) in HEADS.iter().enumerate() {
                    for p_drop in [0.0, 0.25] {
                        let c = case(heads, score, pos, masking, p_drop);
                        for layout in [Layout::Packed, Layout::Split] {
                            if layout == Layout::Packed && c.dims.tq != c.dims.tk {
                                continue;
                            }
                            let g = geometry(&c, layout);
                            let seed = (((si * 10 + pi) * 10 + mi) * 10 + hi) as u64;
                            let (p, a, b, _) = random_inputs(&c, &g, seed);
                            let f = forward(&c, &p, &g, &a, &b);
                            // The dropout multipliers: element index (b·NH + h)·Tq·Tk + i·Tk + j.
                            let scale: Option<Vec<f64>> = (p_drop > 0.0).then(|| {
                                let mut ones = vec![1.0f32; c.n_probs()];
                                dropout::dropout_inplace(&mut ones, p_drop, DROP_SEED, 0);
                                ones.iter().map(|&x| x as f64).collect()
                            });
                            let (want_out, want_probs) = reference(&c, &p, &inputs(&g, &a, &b), scale.as_deref());
                            let tag = format!("{c:?} {layout:?}");
                            for (name, got, want) in [("out", &f.out, &want_out), ("probs", &f.probs, &want_probs)] {
                                let worst = got.iter().zip(want).fold(0.0f64, |m, (x, y)| m.max((*x as f64 - y).abs()));
                                assert!(worst < 2e-5, "{tag}: {name} differs from the reference by {worst:.2e}");
                            }
                            if let Some(s) = &scale {
                                for ((d, pr), s) in f.dropped.iter().zip(&f.probs).zip(s) {
                                    assert_eq!(*d, pr * *s as f32, "{tag}: dropped probabilities");
                                }
                            }
                            // A query row with no visible key: zero probabilities and zero output.
                            if c.masking == Masking::CausalKeyMask {
                                let d = c.dims;
                                let (bi, i) = (1, 0);
                                for h in 0..d.n_head {
                                    let base = ((bi * d.n_head + h) * d.tq + i) * d.tk;
                                    assert!(f.probs[base..base + d.tk].iter().all(|&x| x == 0.0), "{tag}");
                                }
                                let w = d.n_head * d.head_size;
                                assert!(f.out[(bi * d.tq + i) * w..][..w].iter().all(|&x| x == 0.0), "{tag}");
                                fully_masked_rows += 1;
                            }
                            runs += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(runs > 500 && fully_masked_rows > 0, "{runs} runs");
}

/// Backward against central differences for every input and every learned parameter the case
/// uses.
fn gradient_check(c: &Case, layout: Layout, seed: u64) {
    let g = geometry(c, layout);
    let (p, a, b, r) = random_inputs(c, &g, seed);
    let f = forward(c, &p, &g, &a, &b);
    let gr = backward(c, &p, &g, &a, &b, &f, &r);
    let tag = format!("{c:?} {layout:?}");
    match layout {
        Layout::Packed => check(&format!("{tag}: dqkv"), &a, &gr.da, |x| loss(c, &p, &g, x, &b, &r)),
        Layout::Split => {
            check(&format!("{tag}: dq"), &a, &gr.da, |x| loss(c, &p, &g, x, &b, &r));
            check(&format!("{tag}: dkv"), &b, &gr.db, |x| loss(c, &p, &g, &a, x, &r));
        }
    }
    let with = |edit: &dyn Fn(&mut Params)| {
        let mut q = p.clone();
        edit(&mut q);
        q
    };
    let unused =
        |v: &[f32], what: &str| assert!(v.iter().all(|&x| x == 0.0), "{tag}: {what} gradient of an unused parameter");
    match c.score {
        Score::Cosine => check(&format!("{tag}: dlog_tau"), &p.log_tau, &gr.log_tau, |x| {
            loss(c, &with(&|q| q.log_tau = x.to_vec()), &g, &a, &b, &r)
        }),
        _ => unused(&gr.log_tau, "log_tau"),
    }
    match c.score {
        Score::Additive => check(&format!("{tag}: dadditive_v"), &p.add_v, &gr.add_v, |x| {
            loss(c, &with(&|q| q.add_v = x.to_vec()), &g, &a, &b, &r)
        }),
        _ => unused(&gr.add_v, "additive v"),
    }
    match c.pos {
        Pos::T5 { .. } => check(&format!("{tag}: dt5_table"), &p.t5_table, &gr.t5_table, |x| {
            loss(c, &with(&|q| q.t5_table = x.to_vec()), &g, &a, &b, &r)
        }),
        _ => unused(&gr.t5_table, "T5 table"),
    }
    match c.pos {
        Pos::Shaw { values } => {
            check(&format!("{tag}: dshaw_keys"), &p.shaw_keys, &gr.shaw_keys, |x| {
                loss(c, &with(&|q| q.shaw_keys = x.to_vec()), &g, &a, &b, &r)
            });
            if values {
                check(&format!("{tag}: dshaw_values"), &p.shaw_values, &gr.shaw_values, |x| {
                    loss(c, &with(&|q| q.shaw_values = x.to_vec()), &g, &a, &b, &r)
                });
            } else {
                unused(&gr.shaw_values, "Shaw values");
            }
        }
        _ => {
            unused(&gr.shaw_keys, "Shaw keys");
            unused(&gr.shaw_values, "Shaw values");
        }
    }
    // Not a vacuous check: the gradients are not all zero.
    assert!(gr.da.iter().any(|&x| x.abs() > 1e-3), "{tag}: dq is all zero");
}

#[test]
fn gradients_dot_product_scores() {
    let cases = [
        (case((2, 2), Score::Scaled, Pos::None, Masking::Causal, 0.0), Layout::Packed),
        (case((4, 2), Score::Unscaled, Pos::Alibi, Masking::KeyMask, 0.0), Layout::Packed),
        (case((3, 1), Score::Scaled, Pos::Shaw { values: true }, Masking::CrossKeyMask, 0.0), Layout::Split),
        (case((4, 2), Score::Unscaled, Pos::Shaw { values: false }, Masking::Causal, 0.0), Layout::Packed),
        (case((2, 2), Score::Scaled, Pos::T5 { bidirectional: true }, Masking::Causal, 0.0), Layout::Split),
        (case((3, 1), Score::Scaled, Pos::Alibi, Masking::Cross, 0.0), Layout::Split),
        (case((2, 2), Score::Unscaled, Pos::T5 { bidirectional: false }, Masking::CausalKeyMask, 0.0), Layout::Packed),
    ];
    for (i, (c, layout)) in cases.iter().enumerate() {
        gradient_check(c, *layout, 100 + i as u64);
    }
}

#[test]
fn gradients_cosine_and_additive_scores() {
    let cases = [
        (case((3, 1), Score::Cosine, Pos::T5 { bidirectional: false }, Masking::CausalKeyMask, 0.0), Layout::Packed),
        (case((2, 2), Score::Cosine, Pos::Alibi, Masking::KeyMask, 0.0), Layout::Split),
        (case((4, 2), Score::Cosine, Pos::None, Masking::CrossKeyMask, 0.0), Layout::Split),
        (case((4, 2), Score::Additive, Pos::T5 { bidirectional: true }, Masking::Cross, 0.0), Layout::Split),
        (case((3, 1), Score::Additive, Pos::None, Masking::KeyMask, 0.0), Layout::Packed),
        (case((2, 2), Score::Additive, Pos::Alibi, Masking::Causal, 0.0), Layout::Packed),
    ];
    for (i, (c, layout)) in cases.iter().enumerate() {
        gradient_check(c, *layout, 200 + i as u64);
    }
}

#[test]
fn gradients_with_dropout() {
    let cases = [
        (case((4, 2), Score::Scaled, Pos::Shaw { values: true }, Masking::Causal, 0.3), Layout::Packed),
        (case((3, 1), Score::Cosine, Pos::T5 { bidirectional: true }, Masking::Cross, 0.25), Layout::Split),
        (case((2, 2), Score::Additive, Pos::Alibi, Masking::CausalKeyMask, 0.3), Layout::Packed),
        (case((4, 2), Score::Unscaled, Pos::Shaw { values: true }, Masking::KeyMask, 0.2), Layout::Split),
    ];
    for (i, (c, layout)) in cases.iter().enumerate() {
        gradient_check(c, *layout, 300 + i as u64);
    }
}

#[test]
#[should_panic(expected = "Shaw")]
fn shaw_needs_a_dot_product_score() {
    let c = case((2, 2), Score::Cosine, Pos::Shaw { values: false }, Masking::Causal, 0.0);
    let g = geometry(&c, Layout::Packed);
    let (p, a, b, _) = random_inputs(&c, &g, 1);
    forward(&c, &p, &g, &a, &b);
}

/// Plain causal MHA with scaled scores is the fast kernel's job; both must agree.
#[test]
fn plain_case_matches_fast_attention() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let (c, nh) = (8, 2);
    for (b, t) in [(2, 5), (1, 37)] {
        let qkv = rand_vec(&mut rng, b * t * 3 * c, 1.0);
        let r = rand_vec(&mut rng, b * t * c, 1.0);
        for p_drop in [0.0f32, 0.3] {
            let n = b * nh * t * t;
            let (mut out1, mut att1, mut drop1) = (vec![0.0; b * t * c], vec![0.0; n], vec![0.0; n]);
            let d1 = (p_drop > 0.0).then_some((&mut drop1[..], p_drop, 9, 0));
            attention::attention_forward(&mut out1, &mut att1, d1, &qkv, b, t, c, nh);
            let (mut dqkv1, mut datt) = (vec![0.0; b * t * 3 * c], vec![0.0; n]);
            let d1 = (p_drop > 0.0).then_some((&drop1[..], p_drop, 9, 0));
            attention::attention_backward(&mut dqkv1, &mut datt, &r, &qkv, &att1, d1, b, t, c, nh);

            let dims = AttnDims { b, tq: t, tk: t, n_head: nh, n_kv_head: nh, head_size: c / nh };
            let x = AttnInputs {
                q: &qkv,
                q_stride: 3 * c,
                k: &qkv[c..],
                k_stride: 3 * c,
                v: &qkv[2 * c..],
                v_stride: 3 * c,
                kv_head_stride: c / nh,
            };
            let mask = AttnMask { causal: true, q_offset: 0, key_mask: None };
            let (score, pos) = (ScoreFn::Scaled, PositionBias::None);
            assert_eq!(general_attention_fwd_scratch_len(&dims, &score, &pos), 0);
            let (mut out2, mut att2, mut drop2) = (vec![0.0; b * t * c], vec![0.0; n], vec![0.0; n]);
            let d2 = (p_drop > 0.0).then_some((&mut drop2[..], p_drop, 9, 0));
            general_attention_forward(&mut out2, &mut att2, d2, &mut [], &x, &dims, &score, &pos, &mask);
            let mut scratch = vec![0.0; general_attention_scratch_len(&dims, &score, &pos)];
            let mut dqkv2 = vec![0.0; b * t * 3 * c];
            let grads = QkvGrads::Packed { dqkv: &mut dqkv2, stride: 3 * c, q_off: 0, k_off: c, v_off: 2 * c };
            let d2 = (p_drop > 0.0).then_some((&drop2[..], p_drop, 9, 0));
            general_attention_backward(
                grads,
                AttnParamGrads::default(),
                &mut scratch,
                &r,
                &x,
                &att2,
                d2,
                &dims,
                &score,
                &pos,
                &mask,
            );
            let tag = format!("b {b}, t {t}, dropout {p_drop}");
            assert!(max_abs_diff(&out1, &out2) < 1e-5, "{tag}: out");
            assert!(max_abs_diff(&att1, &att2) < 1e-5, "{tag}: probs");
            assert!(max_abs_diff(&drop1, &drop2) < 1e-5, "{tag}: dropped probs");
            assert!(max_abs_diff(&dqkv1, &dqkv2) < 1e-5, "{tag}: dqkv");
        }
    }
}

/// Per-task partial sums reduced in a fixed order: bit-identical results on 1 and 3 threads.
#[test]
fn results_do_not_depend_on_thread_count() {
    let cases = [
        (case((4, 2), Score::Cosine, Pos::T5 { bidirectional: true }, Masking::KeyMask, 0.2), Layout::Packed),
        (case((3, 1), Score::Scaled, Pos::Shaw { values: true }, Masking::Cross, 0.0), Layout::Split),
        (case((4, 2), Score::Additive, Pos::Alibi, Masking::CrossKeyMask, 0.1), Layout::Split),
    ];
    for (c, layout) in cases {
        let g = geometry(&c, layout);
        let (p, a, b, r) = random_inputs(&c, &g, 9);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let f = forward(&c, &p, &g, &a, &b);
                let gr = backward(&c, &p, &g, &a, &b, &f, &r);
                (f.out, f.probs, gr)
            })
        };
        assert!(run(1) == run(3), "{c:?}: results depend on the thread count");
    }
}

// ---------------------------------------------------------------------------------------------
// Positional helpers
// ---------------------------------------------------------------------------------------------

#[test]
fn ragged_decode_equals_each_row_alone_bit_for_bit() {
    // A decode step of a continuous batch: rows of 5, 1, 0 (waiting) and 9 cached keys, each
    // head's keys together (a KV cache's (NKV, block, hs) rows), against the ordinary kernel on
    // each row alone with keys side by side in rows (NKV·hs).
    let (block, hs) = (9, 4);
    let key_lens = [5usize, 1, 0, 9];
    let scores = [Score::Scaled, Score::Unscaled, Score::Cosine, Score::Additive];
    let positions = [Pos::None, Pos::Alibi, Pos::T5 { bidirectional: false }, Pos::Shaw { values: true }];
    for heads in [(4, 4), (4, 2), (4, 1)] {
        for (score, pos) in scores.iter().flat_map(|&s| positions.iter().map(move |&p| (s, p))) {
            if !shaw_allowed(score, pos) {
                continue;
            }
            let c = case(heads, score, pos, Masking::Causal, 0.0);
            let (nh, nkv) = heads;
            let (qw, kv, rows) = (nh * hs, nkv * hs, key_lens.len());
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
            let p = Params::new(&mut rng, nh, hs);
            let (sf, pb) = (c.score(&p), c.pos(&p));
            let q = rand_vec(&mut rng, rows * qw, 1.0);
            let k = rand_vec(&mut rng, rows * block * kv, 1.0);
            let v = rand_vec(&mut rng, rows * block * kv, 1.0);
            let x = RaggedDecode {
                q: &q,
                q_rs: qw,
                k: &k,
                v: &v,
                kv_rs: block * kv,
                kv_stride: hs,
                kv_head_stride: block * hs,
                key_lens: &key_lens,
                max_keys: block,
                n_head: nh,
                n_kv_head: nkv,
                head_size: hs,
            };
            let mut out = vec![7.0f32; rows * qw];
            let mut probs = vec![0.0f32; rows * nh * block];
            let mut scratch = vec![0.0f32; ragged_decode_scratch_len(rows, block, (nh, nkv, hs), &sf, &pb)];
            ragged_decode_forward(&mut out, qw, &mut probs, &mut scratch, &x, &sf, &pb);
            for (r, &tk) in key_lens.iter().enumerate() {
                let got = &out[r * qw..(r + 1) * qw];
                if tk == 0 {
                    assert!(got.iter().all(|&o| o == 7.0), "a waiting row's output is not touched");
                    continue;
                }
                // The row alone, keys side by side: position j's row holds every head.
                let side = |buf: &[f32]| -> Vec<f32> {
                    (0..tk)
                        .flat_map(|j| (0..nkv).flat_map(move |g| (0..hs).map(move |e| (j, g, e))))
                        .map(|(j, g, e)| buf[r * block * kv + (g * block + j) * hs + e])
                        .collect()
                };
                let (ks, vs) = (side(&k), side(&v));
                let alone = AttnInputs {
                    q: &q[r * qw..],
                    q_stride: qw,
                    k: &ks,
                    k_stride: kv,
                    v: &vs,
                    v_stride: kv,
                    kv_head_stride: hs,
                };
                let dims = AttnDims { b: 1, tq: 1, tk, n_head: nh, n_kv_head: nkv, head_size: hs };
                let mask = AttnMask { causal: true, q_offset: tk - 1, key_mask: None };
                let mut want = vec![0.0f32; qw];
                let mut want_p = vec![0.0f32; nh * tk];
                let mut sc = vec![0.0f32; general_attention_fwd_scratch_len(&dims, &sf, &pb)];
                general_attention_forward(&mut want, &mut want_p, None, &mut sc, &alone, &dims, &sf, &pb, &mask);
                assert_eq!(got, &want[..], "{heads:?} {score:?} {pos:?} row {r}");
                assert_eq!(&probs[r * nh * block..][..nh * tk], &want_p[..], "{heads:?} {score:?} {pos:?} row {r}");
            }
        }
    }
}

#[test]
fn sinusoidal_table_values() {
    let (t, c) = (50, 16);
    let mut pe = vec![0.0f32; t * c];
    sinusoidal_table(&mut pe, t, c);
    for pos in 0..t {
        for i in 0..c / 2 {
            let angle = pos as f64 / 10000f64.powf(2.0 * i as f64 / c as f64);
            assert!((pe[pos * c + 2 * i] as f64 - angle.sin()).abs() < 1e-6);
            assert!((pe[pos * c + 2 * i + 1] as f64 - angle.cos()).abs() < 1e-6);
        }
    }
    // By hand: C = 4, position 1 → (sin 1, cos 1, sin 0.01, cos 0.01); position 2, pair 1 →
    // angle 2/10000^(2/4) = 0.02.
    let mut pe = vec![0.0f32; 3 * 4];
    sinusoidal_table(&mut pe, 3, 4);
    let want = [0.0, 1.0, 0.0, 1.0, 0.841_470_98, 0.540_302_3, 0.009_999_833, 0.999_95, 0.909_297_4, -0.416_146_84];
    for (i, w) in want.iter().enumerate() {
        assert!((pe[i] - w).abs() < 1e-6, "element {i}: {} vs {w}", pe[i]);
    }
    assert!((pe[10] - 0.019_998_667).abs() < 1e-6 && (pe[11] - 0.999_8).abs() < 1e-6);
}

#[test]
fn alibi_slopes_follow_the_reference_algorithm() {
    let mut s8 = [0.0f32; 8];
    alibi_slopes(&mut s8);
    assert_eq!(s8, [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625]);
    // n = 6: slopes(4) = 2^-2, 2^-4, 2^-6, 2^-8, then slopes(8)[0::2][:2] = 2^-1, 2^-3.
    let mut s6 = [0.0f32; 6];
    alibi_slopes(&mut s6);
    assert_eq!(s6, [0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125]);
    // n = 3: slopes(2) = 2^-4, 2^-8, then slopes(4)[0] = 2^-2. n = 1: 2^-8.
    let mut s3 = [0.0f32; 3];
    alibi_slopes(&mut s3);
    assert_eq!(s3, [0.0625, 0.00390625, 0.25]);
    let mut s1 = [0.0f32; 1];
    alibi_slopes(&mut s1);
    assert_eq!(s1, [0.00390625]);
    // n = 12: slopes(8) = 2^-1 .. 2^-8, then slopes(16)[0::2][:4] = 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
    let mut s12 = [0.0f32; 12];
    alibi_slopes(&mut s12);
    assert_eq!(s12[..8], s8);
    let want = [0.707_106_77, 0.353_553_38, 0.176_776_69, 0.088_388_35];
    for (got, w) in s12[8..].iter().zip(want) {
        assert!((got - w).abs() < 1e-7, "{got} vs {w}");
    }
}

#[test]
fn t5_buckets_match_hugging_face() {
    // Derived by hand from `_relative_position_bucket` with 32 buckets, max_distance 128.
    // Bidirectional: 16 buckets a side (keys after the query add 16), max_exact 8, and
    // n ≥ 8 → 8 + trunc(ln(n/8) / ln(16) · 8), at most 15. E.g. n = 11: 0.919 → 8;
    // n = 45: 4.984 → 12; n = 46: 5.047 → 13; n = 90: 6.984 → 14; n = 91: 7.016 → 15.
    let bidirectional = [
        (0, 0),
        (-1, 1),
        (1, 17),
        (7, 23),
        (-7, 7),
        (8, 24),
        (-8, 8),
        (-11, 8),
        (11, 24),
        (-12, 9),
        (12, 25),
        (-16, 10),
        (-20, 10),
        (-23, 11),
        (-32, 12),
        (-45, 12),
        (-46, 13),
        (50, 29),
        (-64, 14),
        (-90, 14),
        (-91, 15),
        (-128, 15),
        (-1000, 15),
        (1000, 31),
    ];
    for (rel, want) in bidirectional {
        assert_eq!(t5_bucket(rel, true, 32, 128), want, "bidirectional, relative position {rel}");
    }
    // Unidirectional: only keys before the query count (n = max(−rel, 0)), max_exact 16, and
    // n ≥ 16 → 16 + trunc(ln(n/16) / ln(8) · 16), at most 31. E.g. n = 20: 1.717 → 17;
    // n = 100: 14.10 → 30; n = 127: 15.94 → 31.
    let unidirectional = [
        (5, 0),
        (0, 0),
        (-3, 3),
        (-15, 15),
        (-16, 16),
        (-20, 17),
        (-32, 21),
        (-64, 26),
        (-100, 30),
        (-127, 31),
        (-128, 31),
        (-5000, 31),
    ];
    for (rel, want) in unidirectional {
        assert_eq!(t5_bucket(rel, false, 32, 128), want, "unidirectional, relative position {rel}");
    }
    // The small configuration of the attention tests: 8 buckets, max_distance 10.
    let small_bidi: Vec<usize> = (-6..=6).map(|rel| t5_bucket(rel, true, 8, 10)).collect();
    assert_eq!(small_bidi, [3, 3, 2, 2, 2, 1, 0, 5, 6, 6, 6, 7, 7]);
    let small_uni: Vec<usize> = (-9..=1).map(|rel| t5_bucket(rel, false, 8, 10)).collect();
    assert_eq!(small_uni, [7, 7, 6, 5, 4, 4, 3, 2, 1, 0, 0]);
}

#[test]
fn shaw_index_clips() {
    let got: Vec<usize> = (-5..=5).map(|rel| shaw_index(rel, 2)).collect();
    assert_eq!(got, [0, 0, 0, 0, 1, 2, 3, 4, 4, 4, 4]);
    assert_eq!(shaw_index(0, 0), 0);
    assert_eq!(shaw_index(-7, 0), 0);
}

#[test]
fn rope_hand_computed_case() {
    // Rows at positions 1 and 2 (offset 1), one head of size 4 and a fifth column left alone.
    // Pair 0 has frequency 1, pair 1 frequency 10000^(-2/4) = 0.01.
    let mut x = vec![1.0, 0.0, 0.0, 1.0, 9.0, 0.5, -2.0, 3.0, 1.0, 9.0];
    rope_forward(&mut x, 2, 5, 1, 4, 8, 1, 10000.0);
    let want = [
        0.540_302_3,    // cos 1
        0.841_470_98,   // sin 1
        -0.009_999_833, // −sin 0.01
        0.999_95,       // cos 0.01
        9.0,
        1.610_521_4, // 0.5·cos 2 + 2·sin 2
        1.286_942_4, // 0.5·sin 2 − 2·cos 2
        2.979_401_4, // 3·cos 0.02 − sin 0.02
        1.059_796,   // 3·sin 0.02 + cos 0.02
        9.0,
    ];
    for (i, w) in want.iter().enumerate() {
        assert!((x[i] - w).abs() < 1e-6, "element {i}: {} vs {w}", x[i]);
    }
}

#[test]
fn rope_properties() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    let (rows, seq, n_heads, hs, stride, col0) = (12, 6, 3, 8, 3 * 8 * 3 + 1, 5);
    let theta = 10000.0f32;
    for pos_offset in [0usize, 8000] {
        let x0 = rand_vec(&mut rng, rows * stride, 1.0);
        let mut x = x0.clone();
        rope_forward(&mut x[col0..], rows, stride, n_heads, hs, seq, pos_offset, theta);
        for r in 0..rows {
            let pos = pos_offset + r % seq;
            for col in 0..stride {
                let (a, b) = (x0[r * stride + col], x[r * stride + col]);
                if col < col0 || col >= col0 + n_heads * hs || pos == 0 {
                    // Outside the heads, and at position 0, rotary embedding is the identity.
                    assert_eq!(a, b, "row {r} col {col}");
                }
            }
            for h in 0..n_heads {
                for i in 0..hs / 2 {
                    let j = r * stride + col0 + h * hs + 2 * i;
                    // A rotation keeps each pair's norm and turns it by pos·θ^(−2i/hs).
                    let n0 = (x0[j] as f64).hypot(x0[j + 1] as f64);
                    let n1 = (x[j] as f64).hypot(x[j + 1] as f64);
                    assert!((n0 - n1).abs() < 1e-6, "norm of pair {i} at position {pos}");
                    let angle = pos as f64 * (theta as f64).powf(-2.0 * i as f64 / hs as f64);
                    let (s, c) = angle.sin_cos();
                    let want0 = x0[j] as f64 * c - x0[j + 1] as f64 * s;
                    let want1 = x0[j] as f64 * s + x0[j + 1] as f64 * c;
                    assert!((x[j] as f64 - want0).abs() < 1e-6 && (x[j + 1] as f64 - want1).abs() < 1e-6);
                }
            }
        }
        // Backward is the inverse rotation (a rotation's transpose): forward then backward
        // gives the input back.
        rope_backward(&mut x[col0..], rows, stride, n_heads, hs, seq, pos_offset, theta);
        assert!(max_abs_diff(&x, &x0) < 1e-6, "offset {pos_offset}");
    }
}

#[test]
fn rope_gradient() {
    // L = Σ r ⊙ rope(x): ∂L/∂x = rope_backward(r).
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(12);
    let (rows, seq, n_heads, hs) = (6, 3, 2, 4);
    let stride = n_heads * hs;
    let x = rand_vec(&mut rng, rows * stride, 1.0);
    let r = rand_vec(&mut rng, rows * stride, 1.0);
    let mut dx = r.clone();
    rope_backward(&mut dx, rows, stride, n_heads, hs, seq, 5, 100.0);
    check("rope dx", &x, &dx, |x| {
        let mut y = x.to_vec();
        rope_forward(&mut y, rows, stride, n_heads, hs, seq, 5, 100.0);
        dot(&y, &r)
    });
}
