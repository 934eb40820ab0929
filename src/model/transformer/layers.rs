//! The parts of a block: a norm, self-attention, cross-attention and the feed-forward network,
//! each wrapped in a residual [`Sublayer`] (pre- or post-norm).
//!
//! Every part owns the ranges of its parameters (in the flat parameter buffer) and of its
//! activations (in the flat activation buffer), and has a `forward` and a `backward` that call
//! kernels on those ranges. A stack is a list of sublayers run in order.

use super::config::{AttentionKind, ModelConfig, NormKind, NormPosition, ScoreKind};
use crate::kernels::{
    activation::{activation_backward, activation_forward, swiglu_backward, swiglu_forward, Activation},
    attention::{attention_backward, attention_forward},
    batchnorm::{batchnorm_backward, batchnorm_forward_eval, batchnorm_forward_train},
    dropout::{dropout_backward, dropout_forward, site_seed},
    flash_attention::{flash_attention_backward, flash_attention_forward, scratch_per_head},
    general_attention::{
        general_attention_backward, general_attention_forward, general_attention_fwd_scratch_len,
        general_attention_scratch_len, AttnDims, AttnInputs, AttnMask, AttnParamGrads, PositionBias, QkvGrads, ScoreFn,
    },
    layernorm::{layernorm_backward, layernorm_forward},
    matmul::{matmul_backward, matmul_forward},
    positional::{rope_backward, rope_forward},
    residual::{residual_add_inplace, residual_forward},
    rmsnorm::{rmsnorm_backward, rmsnorm_forward},
};
use crate::model::layout::{ActLayout, ParamKind, ParamLayout, Regions};
use std::ops::Range;

/// Everything a sublayer needs to run: parameter, gradient and activation buffers, the shape
/// of the current batch, and the dropout settings.
pub(super) struct Ctx<'a> {
    /// Parameters (read; BatchNorm also updates its running statistics in training).
    pub w: &'a Regions<'a>,
    pub g: &'a Regions<'a>,
    pub r: &'a Regions<'a>,
    /// Fixed tables (ALiBi slopes).
    pub consts: &'a [f32],
    /// Ranges of the shared backward scratch (in `r`).
    pub scratch: &'a Scratch,
    pub b: usize,
    /// Sequence length of this stack.
    pub t: usize,
    /// Sequence length of the encoder output that cross-attention reads.
    pub t_enc: usize,
    pub train: bool,
    pub dropout_seed: u64,
    /// Keys each query may see in self-attention: (B, T) true = real token (encoder padding).
    pub self_mask: Option<&'a [bool]>,
    /// Source tokens cross-attention may see: (B, T_enc).
    pub enc_mask: Option<&'a [bool]>,
}

impl Ctx<'_> {
    pub fn n(&self) -> usize {
        self.b * self.t
    }
    pub fn p(&self, r: &Range<usize>) -> &[f32] {
        self.w.get(r, r.len())
    }
    pub fn popt(&self, r: &Option<Range<usize>>) -> Option<&[f32]> {
        r.as_ref().map(|r| self.p(r))
    }
    #[allow(clippy::mut_from_ref)]
    pub fn gw(&self, r: &Range<usize>) -> &mut [f32] {
        self.g.mut_(r, r.len())
    }
    pub fn gopt(&self, r: &Option<Range<usize>>) -> Option<&mut [f32]> {
        r.as_ref().map(|r| self.gw(r))
    }
    pub fn drop_p(&self, p: f32) -> f32 {
        if self.train {
            p
        } else {
            0.0
        }
    }
    pub fn seed(&self, site: u64) -> u64 {
        site_seed(self.dropout_seed, 0, site)
    }
}

/// Backward scratch shared by all sublayers of all stacks (gradients flow through one sublayer
/// at a time), sized for the largest of them.
#[derive(Clone, Debug, Default)]
pub(super) struct Scratch {
    /// (N, C) gradient reaching a sublayer's function input.
    pub d_fin: Range<usize>,
    /// (N, C) post-norm: gradient of the residual sum; pre-norm: the norm output's gradient.
    pub d_sum: Range<usize>,
    /// (N, C) branch gradient after dropout backward.
    pub d_branch: Range<usize>,
    /// (N, W) widest projection output gradient (qkv, fc).
    pub d_wide: Range<usize>,
    /// (N, W) second wide buffer (the activation's output gradient).
    pub d_wide2: Range<usize>,
    /// (N, C) attention output gradient before c_proj.
    pub d_y: Range<usize>,
    /// Attention kernel scratch (probability gradients or tiles).
    pub d_att: Range<usize>,
    /// (N_enc, C) one cross-attention's gradient for the encoder output.
    pub d_enc_part: Range<usize>,
}

// ---------------------------------------------------------------------------------------------
// Norm

#[derive(Clone, Debug)]
pub(super) struct Norm {
    kind: NormKind,
    eps: f32,
    w: Range<usize>,         // (C)
    b: Option<Range<usize>>, // (C)
    /// BatchNorm running mean and variance (C) each.
    running: Option<(Range<usize>, Range<usize>)>,
}

#[derive(Clone, Debug)]
pub(super) struct NormActs {
    pub out: Range<usize>, // (N, C)
    mean: Range<usize>,    // (N) per row, or (C) per channel for BatchNorm
    rstd: Range<usize>,    // (N) or (C)
}

impl Norm {
    pub fn new(l: &mut ParamLayout, name: &str, cfg: &ModelConfig) -> Self {
        let c = cfg.n_embd;
        let w = l.push(format!("{name}.weight"), &[c], ParamKind::Norm);
        let b =
            (cfg.bias && cfg.norm != NormKind::Rmsnorm).then(|| l.push(format!("{name}.bias"), &[c], ParamKind::Bias));
        let running = (cfg.norm == NormKind::Batchnorm).then(|| {
            (
                l.push(format!("{name}.running_mean"), &[c], ParamKind::Buffer),
                l.push(format!("{name}.running_var"), &[c], ParamKind::Buffer),
            )
        });
        Norm { kind: cfg.norm, eps: cfg.norm_eps, w, b, running }
    }

    /// BatchNorm running variance starts at one (the mean at zero, like every buffer).
    pub fn init(&self, params: &mut [f32]) {
        if let Some((_, var)) = &self.running {
            params[var.clone()].fill(1.0);
        }
    }

    pub fn acts(l: &mut ActLayout, n: usize, c: usize) -> NormActs {
        NormActs { out: l.alloc(n * c), mean: l.alloc(n.max(c)), rstd: l.alloc(n.max(c)) }
    }

    /// Returns the output rows (N, C).
    pub fn forward<'a>(&self, cx: &Ctx<'a>, a: &NormActs, x: &[f32], c: usize) -> &'a mut [f32] {
        let n = cx.n();
        let out = cx.r.mut_(&a.out, n * c);
        match self.kind {
            NormKind::Layernorm => layernorm_forward(
                out,
                cx.r.mut_(&a.mean, n),
                cx.r.mut_(&a.rstd, n),
                x,
                cx.p(&self.w),
                cx.popt(&self.b),
                c,
            ),
            NormKind::Rmsnorm => rmsnorm_forward(out, cx.r.mut_(&a.rstd, n), x, cx.p(&self.w), c, self.eps),
            NormKind::Batchnorm => {
                let (rm, rv) = self.running.as_ref().expect("BatchNorm has running statistics");
                if cx.train {
                    batchnorm_forward_train(
                        out,
                        cx.r.mut_(&a.mean, c),
                        cx.r.mut_(&a.rstd, c),
                        cx.w.mut_(rm, c),
                        cx.w.mut_(rv, c),
                        x,
                        cx.p(&self.w),
                        cx.popt(&self.b),
                        c,
                        self.eps,
                        0.1,
                    )
                } else {
                    batchnorm_forward_eval(out, x, cx.p(rm), cx.p(rv), cx.p(&self.w), cx.popt(&self.b), c, self.eps)
                }
            }
        }
        out
    }

    /// dx (N, C) += ∂L/∂x through the norm, given dout (N, C) and the norm's input x.
    pub fn backward(&self, cx: &Ctx, a: &NormActs, dx: &mut [f32], dout: &[f32], x: &[f32], c: usize) {
        let n = cx.n();
        match self.kind {
            NormKind::Layernorm => layernorm_backward(
                dx,
                cx.gw(&self.w),
                cx.gopt(&self.b),
                dout,
                x,
                cx.p(&self.w),
                cx.r.get(&a.mean, n),
                cx.r.get(&a.rstd, n),
                c,
            ),
            NormKind::Rmsnorm => rmsnorm_backward(dx, cx.gw(&self.w), dout, x, cx.p(&self.w), cx.r.get(&a.rstd, n), c),
            NormKind::Batchnorm => batchnorm_backward(
                dx,
                cx.gw(&self.w),
                cx.gopt(&self.b),
                dout,
                x,
                cx.p(&self.w),
                cx.r.get(&a.mean, c),
                cx.r.get(&a.rstd, c),
                c,
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attention (self and cross)

/// Shapes shared by the attention layers of a model.
#[derive(Clone, Copy, Debug)]
pub(super) struct Heads {
    pub c: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hs: usize,
}

impl Heads {
    pub fn of(cfg: &ModelConfig) -> Self {
        Heads { c: cfg.n_embd, nh: cfg.n_head, nkv: cfg.kv_heads(), hs: cfg.head_size() }
    }
    /// Width of the packed [q | k | v] projection.
    pub fn qkv(&self) -> usize {
        (self.nh + 2 * self.nkv) * self.hs
    }
    pub fn kv(&self) -> usize {
        self.nkv * self.hs
    }
}

/// How a self-attention layer handles positions.
#[derive(Clone, Debug)]
pub(super) enum SelfPosition {
    None,
    Rope {
        theta: f32,
    },
    /// Offset of the (NH) slopes in the constants buffer; `bidirectional` for encoders.
    Alibi {
        slopes: Range<usize>,
    },
    T5 {
        table: Range<usize>,
        buckets: usize,
        max_distance: usize,
        bidirectional: bool,
    },
    Shaw {
        k: usize,
        keys: Range<usize>,
        values: Option<Range<usize>>,
    },
}

#[derive(Clone, Debug)]
pub(super) struct Attention {
    heads: Heads,
    /// Self-attention: fused (NH + 2·NKV)·hs projection. Cross-attention: the query projection.
    c_q_w: Range<usize>,
    c_q_b: Option<Range<usize>>,
    /// Cross-attention only: [k | v] projection of the encoder output.
    c_kv: Option<(Range<usize>, Option<Range<usize>>)>,
    c_proj_w: Range<usize>, // (C, NH·hs)
    c_proj_b: Option<Range<usize>>,
    score: ScoreKind,
    log_tau: Option<Range<usize>>, // (NH)
    score_v: Option<Range<usize>>, // (NH, hs)
    position: SelfPosition,
    causal: bool,
    /// Use the dedicated causal MHA kernels (dense or flash).
    fast: Option<AttentionKind>,
    attn_drop: f32,
}

#[derive(Clone, Debug)]
pub(super) struct AttentionActs {
    /// Self: (N, QKV) packed. Cross: (N, C) queries.
    q: Range<usize>,
    /// Cross: (N_enc, 2·KV) keys and values of the encoder output.
    kv: Option<Range<usize>>,
    /// (B, NH, T, Tk) probabilities; flash: (B, NH, T) log-sum-exp.
    probs: Range<usize>,
    probs_drop: Option<Range<usize>>,
    y: Range<usize>,       // (N, C) heads concatenated
    pub out: Range<usize>, // (N, C) after c_proj
}

impl Attention {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        l: &mut ParamLayout,
        name: &str,
        cfg: &ModelConfig,
        cross: bool,
        causal: bool,
        position: SelfPosition,
    ) -> Self {
        let h = Heads::of(cfg);
        let bias = |l: &mut ParamLayout, n: &str, len: usize| {
            cfg.bias.then(|| l.push(format!("{name}.{n}.bias"), &[len], ParamKind::Bias))
        };
        let (c_q_w, c_q_b, c_kv) = if cross {
            let qw = l.push(format!("{name}.c_q.weight"), &[h.nh * h.hs, h.c], ParamKind::Matrix);
            let qb = bias(l, "c_q", h.nh * h.hs);
            let kvw = l.push(format!("{name}.c_kv.weight"), &[2 * h.kv(), h.c], ParamKind::Matrix);
            let kvb = bias(l, "c_kv", 2 * h.kv());
            (qw, qb, Some((kvw, kvb)))
        } else {
            let w = l.push(format!("{name}.c_attn.weight"), &[h.qkv(), h.c], ParamKind::Matrix);
            (w, bias(l, "c_attn", h.qkv()), None)
        };
        let c_proj_w = l.push(format!("{name}.c_proj.weight"), &[h.c, h.nh * h.hs], ParamKind::Matrix);
        let c_proj_b = bias(l, "c_proj", h.c);
        // Position parameters come after the projections (names as in docs/ARCHITECTURE.md).
        let position = match position {
            SelfPosition::Shaw { k, .. } => {
                let keys = l.push(format!("{name}.rel_k"), &[2 * k + 1, h.hs], ParamKind::Embedding);
                let values =
                    cfg.shaw_values.then(|| l.push(format!("{name}.rel_v"), &[2 * k + 1, h.hs], ParamKind::Embedding));
                SelfPosition::Shaw { k, keys, values }
            }
            p => p,
        };
        let log_tau =
            (cfg.score == ScoreKind::Cosine).then(|| l.push(format!("{name}.log_tau"), &[h.nh], ParamKind::Norm));
        let score_v = (cfg.score == ScoreKind::Additive)
            .then(|| l.push(format!("{name}.score_v"), &[h.nh, h.hs], ParamKind::Matrix));
        let fast_ok = !cross
            && causal
            && cfg.plain_attention()
            && matches!(position, SelfPosition::None | SelfPosition::Rope { .. });
        Attention {
            heads: h,
            c_q_w,
            c_q_b,
            c_kv,
            c_proj_w,
            c_proj_b,
            score: cfg.score,
            log_tau,
            score_v,
            position,
            causal,
            fast: fast_ok.then_some(cfg.attention),
            attn_drop: cfg.attn_drop(),
        }
    }

    /// Cosine temperatures start at τ = 10, so that scores span about ±10 like scaled dot
    /// products of unit-variance vectors.
    pub fn init(&self, params: &mut [f32]) {
        if let Some(r) = &self.log_tau {
            params[r.clone()].fill(10f32.ln());
        }
    }

    pub fn acts(&self, l: &mut ActLayout, max_b: usize, t: usize, t_enc: usize) -> AttentionActs {
        let h = &self.heads;
        let n = max_b * t;
        let tk = if self.c_kv.is_some() { t_enc } else { t };
        let flash = self.fast == Some(AttentionKind::Flash);
        AttentionActs {
            q: l.alloc(n * if self.c_kv.is_some() { h.nh * h.hs } else { h.qkv() }),
            kv: self.c_kv.as_ref().map(|_| l.alloc(max_b * t_enc * 2 * h.kv())),
            probs: l.alloc(if flash { max_b * h.nh * t } else { max_b * h.nh * t * tk }),
            probs_drop: l.alloc_if(self.attn_drop > 0.0, max_b * h.nh * t * tk),
            y: l.alloc(n * h.c),
            out: l.alloc(n * h.c),
        }
    }

    /// Length of the attention kernel's scratch (forward and backward share it).
    pub fn scratch_needs(&self, max_b: usize, t: usize, t_enc: usize) -> usize {
        let h = &self.heads;
        let tk = if self.c_kv.is_some() { t_enc } else { t };
        match self.fast {
            Some(AttentionKind::Flash) => max_b * h.nh * scratch_per_head(t),
            Some(AttentionKind::Dense) => max_b * h.nh * t * t,
            None => {
                let (dims, score, pos) = (self.dims(max_b, t, tk), self.score_fn(&[], &[]), self.position_bias_shape());
                general_attention_scratch_len(&dims, &score, &pos)
                    .max(general_attention_fwd_scratch_len(&dims, &score, &pos))
            }
        }
    }

    fn dims(&self, b: usize, tq: usize, tk: usize) -> AttnDims {
        let h = &self.heads;
        AttnDims { b, tq, tk, n_head: h.nh, n_kv_head: h.nkv, head_size: h.hs }
    }

    fn score_fn<'a>(&self, log_tau: &'a [f32], score_v: &'a [f32]) -> ScoreFn<'a> {
        match self.score {
            ScoreKind::Scaled => ScoreFn::Scaled,
            ScoreKind::Unscaled => ScoreFn::Unscaled,
            ScoreKind::Cosine => ScoreFn::Cosine { log_tau },
            ScoreKind::Additive => ScoreFn::Additive { v: score_v },
        }
    }

    /// A position bias with empty tables: only its kind and sizes matter for scratch sizing.
    fn position_bias_shape(&self) -> PositionBias<'static> {
        match &self.position {
            SelfPosition::Shaw { k, values, .. } => {
                PositionBias::Shaw { k: *k, keys: &[], values: values.as_ref().map(|_| &[][..]) }
            }
            SelfPosition::T5 { buckets, max_distance, bidirectional, .. } => PositionBias::T5 {
                table: &[],
                num_buckets: *buckets,
                max_distance: *max_distance,
                bidirectional: *bidirectional,
            },
            SelfPosition::Alibi { .. } => PositionBias::Alibi { slopes: &[] },
            _ => PositionBias::None,
        }
    }

    fn position_bias<'a>(&self, cx: &Ctx<'a>) -> PositionBias<'a> {
        match &self.position {
            SelfPosition::Alibi { slopes } => PositionBias::Alibi { slopes: &cx.consts[slopes.clone()] },
            SelfPosition::T5 { table, buckets, max_distance, bidirectional } => PositionBias::T5 {
                table: cx.w.get(table, table.len()),
                num_buckets: *buckets,
                max_distance: *max_distance,
                bidirectional: *bidirectional,
            },
            SelfPosition::Shaw { k, keys, values } => PositionBias::Shaw {
                k: *k,
                keys: cx.w.get(keys, keys.len()),
                values: values.as_ref().map(|v| cx.w.get(v, v.len())),
            },
            SelfPosition::None | SelfPosition::Rope { .. } => PositionBias::None,
        }
    }

    fn tensors<'a>(&self, cx: &Ctx<'a>) -> (&'a [f32], &'a [f32]) {
        let lt = self.log_tau.as_ref().map_or(&[][..], |r| cx.w.get(r, r.len()));
        let sv = self.score_v.as_ref().map_or(&[][..], |r| cx.w.get(r, r.len()));
        (lt, sv)
    }

    fn inputs<'a>(&self, cx: &Ctx<'a>, a: &AttentionActs) -> AttnInputs<'a> {
        let h = &self.heads;
        match &a.kv {
            None => {
                let (n, w) = (cx.n(), h.qkv());
                let qkv = cx.r.get(&a.q, n * w);
                AttnInputs {
                    q: qkv,
                    q_stride: w,
                    k: &qkv[h.nh * h.hs..],
                    k_stride: w,
                    v: &qkv[(h.nh + h.nkv) * h.hs..],
                    v_stride: w,
                }
            }
            Some(kv) => {
                let kv = cx.r.get(kv, cx.b * cx.t_enc * 2 * h.kv());
                AttnInputs {
                    q: cx.r.get(&a.q, cx.n() * h.nh * h.hs),
                    q_stride: h.nh * h.hs,
                    k: kv,
                    k_stride: 2 * h.kv(),
                    v: &kv[h.kv()..],
                    v_stride: 2 * h.kv(),
                }
            }
        }
    }

    fn mask<'a>(&self, cx: &Ctx<'a>) -> AttnMask<'a> {
        let key_mask = if self.c_kv.is_some() { cx.enc_mask } else { cx.self_mask };
        AttnMask { causal: self.causal, q_offset: 0, key_mask }
    }

    /// out (N, C) = attention of `x` (N, C) (over itself, or over `enc` (N_enc, C) for
    /// cross-attention).
    pub fn forward(&self, cx: &Ctx, a: &AttentionActs, x: &[f32], enc: Option<&[f32]>, site: u64) {
        let h = &self.heads;
        let (b, t, n) = (cx.b, cx.t, cx.n());
        let q = cx.r.mut_(&a.q, n * if a.kv.is_some() { h.nh * h.hs } else { h.qkv() });
        match &self.c_kv {
            None => matmul_forward(q, x, cx.p(&self.c_q_w), cx.popt(&self.c_q_b), n, h.c, h.qkv()),
            Some((kvw, kvb)) => {
                matmul_forward(q, x, cx.p(&self.c_q_w), cx.popt(&self.c_q_b), n, h.c, h.nh * h.hs);
                let enc = enc.expect("cross-attention needs the encoder output");
                let ne = b * cx.t_enc;
                let kv = cx.r.mut_(a.kv.as_ref().unwrap(), ne * 2 * h.kv());
                matmul_forward(kv, enc, cx.p(kvw), cx.popt(kvb), ne, h.c, 2 * h.kv());
            }
        }
        if let SelfPosition::Rope { theta } = self.position {
            let w = h.qkv();
            rope_forward(q, n, w, h.nh, h.hs, t, 0, theta);
            rope_forward(&mut q[h.nh * h.hs..], n, w, h.nkv, h.hs, t, 0, theta);
        }
        let tk = if a.kv.is_some() { cx.t_enc } else { t };
        let p_drop = cx.drop_p(self.attn_drop);
        let y = cx.r.mut_(&a.y, n * h.c);
        let probs_len = b * h.nh * t * tk;
        let dropped =
            a.probs_drop.as_ref().filter(|_| p_drop > 0.0).map(|r| (cx.r.mut_(r, probs_len), p_drop, cx.seed(site)));
        match self.fast {
            Some(AttentionKind::Flash) => {
                // The backward scratch doubles as the forward's tile buffer: it is free until
                // the backward pass, which recomputes the tiles anyway.
                let scratch = cx.r.mut_(&cx.scratch.d_att, b * h.nh * scratch_per_head(t));
                flash_attention_forward(y, cx.r.mut_(&a.probs, b * h.nh * t), scratch, q, b, t, h.c, h.nh);
            }
            Some(AttentionKind::Dense) => {
                attention_forward(y, cx.r.mut_(&a.probs, probs_len), dropped, q, b, t, h.c, h.nh)
            }
            None => {
                let (lt, sv) = self.tensors(cx);
                let (dims, score, pos) = (self.dims(b, t, tk), self.score_fn(lt, sv), self.position_bias(cx));
                // The backward scratch is free during the forward pass.
                let scratch = cx.r.mut_(&cx.scratch.d_att, general_attention_fwd_scratch_len(&dims, &score, &pos));
                general_attention_forward(
                    y,
                    cx.r.mut_(&a.probs, probs_len),
                    dropped,
                    scratch,
                    &self.inputs(cx, a),
                    &dims,
                    &score,
                    &pos,
                    &self.mask(cx),
                );
            }
        }
        let out = cx.r.mut_(&a.out, n * h.c);
        matmul_forward(out, y, cx.p(&self.c_proj_w), cx.popt(&self.c_proj_b), n, h.nh * h.hs, h.c);
    }

    /// dx (N, C) = ∂L/∂x given dout (N, C); for cross-attention also d_enc (N_enc, C) += ∂L/∂enc.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        cx: &Ctx,
        a: &AttentionActs,
        dx: &mut [f32],
        dout: &[f32],
        x: &[f32],
        enc: Option<(&[f32], &mut [f32])>,
        site: u64,
    ) {
        let (h, s) = (&self.heads, cx.scratch);
        let (b, t, n) = (cx.b, cx.t, cx.n());
        let tk = if a.kv.is_some() { cx.t_enc } else { t };
        let d_y = cx.r.mut_(&s.d_y, n * h.c);
        matmul_backward(
            d_y,
            cx.gw(&self.c_proj_w),
            cx.gopt(&self.c_proj_b),
            dout,
            cx.r.get(&a.y, n * h.c),
            cx.p(&self.c_proj_w),
            n,
            h.nh * h.hs,
            h.c,
        );
        let p_drop = cx.drop_p(self.attn_drop);
        let probs_len = b * h.nh * t * tk;
        let dropped =
            a.probs_drop.as_ref().filter(|_| p_drop > 0.0).map(|r| (cx.r.get(r, probs_len), p_drop, cx.seed(site)));
        let qw = if a.kv.is_some() { h.nh * h.hs } else { h.qkv() };
        let d_q = cx.r.mut_(&s.d_wide, n * qw);
        match self.fast {
            Some(AttentionKind::Flash) => {
                let scratch = cx.r.mut_(&s.d_att, b * h.nh * scratch_per_head(t));
                let (qkv, y, lse) = (cx.r.get(&a.q, n * qw), cx.r.get(&a.y, n * h.c), cx.r.get(&a.probs, b * h.nh * t));
                flash_attention_backward(d_q, scratch, d_y, qkv, y, lse, b, t, h.c, h.nh);
            }
            Some(AttentionKind::Dense) => attention_backward(
                d_q,
                cx.r.mut_(&s.d_att, b * h.nh * t * t),
                d_y,
                cx.r.get(&a.q, n * qw),
                cx.r.get(&a.probs, probs_len),
                dropped,
                b,
                t,
                h.c,
                h.nh,
            ),
            None => {
                let (lt, sv) = self.tensors(cx);
                let dims = self.dims(b, t, tk);
                let score = self.score_fn(lt, sv);
                let pos = self.position_bias(cx);
                let scratch_len = general_attention_scratch_len(&dims, &score, &pos);
                let d_kv_len = b * cx.t_enc * 2 * h.kv();
                let grads = match &a.kv {
                    None => QkvGrads::Packed {
                        dqkv: d_q,
                        stride: qw,
                        q_off: 0,
                        k_off: h.nh * h.hs,
                        v_off: (h.nh + h.nkv) * h.hs,
                    },
                    Some(_) => QkvGrads::Split {
                        dq: d_q,
                        q_stride: qw,
                        dkv: cx.r.mut_(&s.d_wide2, d_kv_len),
                        kv_stride: 2 * h.kv(),
                        k_off: 0,
                        v_off: h.kv(),
                    },
                };
                let (keys, values, table) = match &self.position {
                    SelfPosition::Shaw { keys, values, .. } => (Some(keys), values.as_ref(), None),
                    SelfPosition::T5 { table, .. } => (None, None, Some(table)),
                    _ => (None, None, None),
                };
                let pgrads = AttnParamGrads {
                    log_tau: cx.gopt(&self.log_tau),
                    additive_v: cx.gopt(&self.score_v),
                    t5_table: table.map(|r| cx.gw(r)),
                    shaw_keys: keys.map(|r| cx.gw(r)),
                    shaw_values: values.map(|r| cx.gw(r)),
                };
                general_attention_backward(
                    grads,
                    pgrads,
                    cx.r.mut_(&s.d_att, scratch_len),
                    d_y,
                    &self.inputs(cx, a),
                    cx.r.get(&a.probs, probs_len),
                    dropped,
                    &dims,
                    &score,
                    &pos,
                    &self.mask(cx),
                );
            }
        }
        if let SelfPosition::Rope { theta } = self.position {
            let w = h.qkv();
            rope_backward(d_q, n, w, h.nh, h.hs, t, 0, theta);
            rope_backward(&mut d_q[h.nh * h.hs..], n, w, h.nkv, h.hs, t, 0, theta);
        }
        matmul_backward(dx, cx.gw(&self.c_q_w), cx.gopt(&self.c_q_b), d_q, x, cx.p(&self.c_q_w), n, h.c, qw);
        if let (Some((kvw, kvb)), Some((enc, d_enc))) = (&self.c_kv, enc) {
            let ne = b * cx.t_enc;
            let part = cx.r.mut_(&s.d_enc_part, ne * h.c);
            let d_kv = cx.r.get(&s.d_wide2, ne * 2 * h.kv());
            matmul_backward(part, cx.gw(kvw), cx.gopt(kvb), d_kv, enc, cx.p(kvw), ne, h.c, 2 * h.kv());
            residual_add_inplace(d_enc, part);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Feed-forward

#[derive(Clone, Debug)]
pub(super) struct Mlp {
    c: usize,
    f: usize,
    /// None: SwiGLU.
    act: Option<Activation>,
    c_fc_w: Range<usize>, // (F_in, C), F_in = F or 2F for SwiGLU
    c_fc_b: Option<Range<usize>>,
    c_proj_w: Range<usize>, // (C, F)
    c_proj_b: Option<Range<usize>>,
}

#[derive(Clone, Debug)]
pub(super) struct MlpActs {
    fc: Range<usize>,      // (N, F_in)
    fc_act: Range<usize>,  // (N, F)
    pub out: Range<usize>, // (N, C)
}

impl Mlp {
    pub fn new(l: &mut ParamLayout, name: &str, cfg: &ModelConfig) -> Self {
        let (c, f) = (cfg.n_embd, cfg.ffn());
        let act = cfg.elementwise_activation();
        let f_in = if act.is_none() { 2 * f } else { f };
        let c_fc_w = l.push(format!("{name}.c_fc.weight"), &[f_in, c], ParamKind::Matrix);
        let c_fc_b = cfg.bias.then(|| l.push(format!("{name}.c_fc.bias"), &[f_in], ParamKind::Bias));
        let c_proj_w = l.push(format!("{name}.c_proj.weight"), &[c, f], ParamKind::Matrix);
        let c_proj_b = cfg.bias.then(|| l.push(format!("{name}.c_proj.bias"), &[c], ParamKind::Bias));
        Mlp { c, f, act, c_fc_w, c_fc_b, c_proj_w, c_proj_b }
    }

    pub fn f_in(&self) -> usize {
        if self.act.is_none() {
            2 * self.f
        } else {
            self.f
        }
    }

    pub fn acts(&self, l: &mut ActLayout, n: usize) -> MlpActs {
        MlpActs { fc: l.alloc(n * self.f_in()), fc_act: l.alloc(n * self.f), out: l.alloc(n * self.c) }
    }

    pub fn forward(&self, cx: &Ctx, a: &MlpActs, x: &[f32]) {
        let (n, c, f, fi) = (cx.n(), self.c, self.f, self.f_in());
        let fc = cx.r.mut_(&a.fc, n * fi);
        matmul_forward(fc, x, cx.p(&self.c_fc_w), cx.popt(&self.c_fc_b), n, c, fi);
        let fc_act = cx.r.mut_(&a.fc_act, n * f);
        match self.act {
            Some(act) => activation_forward(act, fc_act, fc),
            None => swiglu_forward(fc_act, fc, f),
        }
        let out = cx.r.mut_(&a.out, n * c);
        matmul_forward(out, fc_act, cx.p(&self.c_proj_w), cx.popt(&self.c_proj_b), n, f, c);
    }

    pub fn backward(&self, cx: &Ctx, a: &MlpActs, dx: &mut [f32], dout: &[f32], x: &[f32]) {
        let (n, c, f, fi, s) = (cx.n(), self.c, self.f, self.f_in(), cx.scratch);
        let d_act = cx.r.mut_(&s.d_wide2, n * f);
        matmul_backward(
            d_act,
            cx.gw(&self.c_proj_w),
            cx.gopt(&self.c_proj_b),
            dout,
            cx.r.get(&a.fc_act, n * f),
            cx.p(&self.c_proj_w),
            n,
            f,
            c,
        );
        let d_fc = cx.r.mut_(&s.d_wide, n * fi);
        let fc = cx.r.get(&a.fc, n * fi);
        match self.act {
            Some(act) => activation_backward(act, d_fc, fc, d_act),
            None => swiglu_backward(d_fc, fc, d_act, f),
        }
        matmul_backward(dx, cx.gw(&self.c_fc_w), cx.gopt(&self.c_fc_b), d_fc, x, cx.p(&self.c_fc_w), n, c, fi);
    }
}

// ---------------------------------------------------------------------------------------------
// Residual sublayer

#[derive(Clone, Debug)]
pub(super) enum Function {
    Attention(Attention),
    Mlp(Mlp),
}

#[derive(Clone, Debug)]
pub(super) enum FunctionActs {
    Attention(AttentionActs),
    Mlp(MlpActs),
}

/// x → x + f(norm(x)) (pre-norm) or x → norm(x + f(x)) (post-norm), with dropout on f's output.
#[derive(Clone, Debug)]
pub(super) struct Sublayer {
    pub norm: Norm,
    pub position: NormPosition,
    pub f: Function,
    /// Dropout site of the residual branch; the attention probabilities use `site + 1`.
    pub site: u64,
    pub dropout: f32,
}

#[derive(Clone, Debug)]
pub(super) struct SublayerActs {
    norm: NormActs,
    f: FunctionActs,
    branch_drop: Option<Range<usize>>, // (N, C)
    /// Pre-norm: the output x + f(...). Post-norm: the sum x + f(x) that the norm reads.
    sum: Range<usize>, // (N, C)
}

impl Sublayer {
    pub fn acts(&self, l: &mut ActLayout, max_b: usize, t: usize, t_enc: usize) -> SublayerActs {
        let n = max_b * t;
        let c = self.norm_width();
        SublayerActs {
            norm: Norm::acts(l, n, c),
            f: match &self.f {
                Function::Attention(at) => FunctionActs::Attention(at.acts(l, max_b, t, t_enc)),
                Function::Mlp(m) => FunctionActs::Mlp(m.acts(l, n)),
            },
            branch_drop: l.alloc_if(self.dropout > 0.0, n * c),
            sum: l.alloc(n * c),
        }
    }

    fn norm_width(&self) -> usize {
        match &self.f {
            Function::Attention(a) => a.heads.c,
            Function::Mlp(m) => m.c,
        }
    }

    /// Where the sublayer's output lives in the activation buffer.
    pub fn output_range(&self, a: &SublayerActs) -> Range<usize> {
        match self.position {
            NormPosition::Pre => a.sum.clone(),
            NormPosition::Post => a.norm.out.clone(),
        }
    }

    /// The sublayer's output (N, C).
    pub fn output<'a>(&self, cx: &Ctx<'a>, a: &SublayerActs) -> &'a [f32] {
        let len = cx.n() * self.norm_width();
        match self.position {
            NormPosition::Pre => cx.r.get(&a.sum, len),
            NormPosition::Post => cx.r.get(&a.norm.out, len),
        }
    }

    fn run_f(&self, cx: &Ctx, a: &SublayerActs, u: &[f32], enc: Option<&[f32]>) -> Range<usize> {
        match (&self.f, &a.f) {
            (Function::Attention(at), FunctionActs::Attention(aa)) => {
                at.forward(cx, aa, u, enc, self.site + 1);
                aa.out.clone()
            }
            (Function::Mlp(m), FunctionActs::Mlp(ma)) => {
                m.forward(cx, ma, u);
                ma.out.clone()
            }
            _ => unreachable!("activation layout matches the function"),
        }
    }

    pub fn forward(&self, cx: &Ctx, a: &SublayerActs, x: &[f32], enc: Option<&[f32]>) {
        let c = self.norm_width();
        let n = cx.n();
        let p = cx.drop_p(self.dropout);
        let u: &[f32] = match self.position {
            NormPosition::Pre => self.norm.forward(cx, &a.norm, x, c),
            NormPosition::Post => x,
        };
        let out = self.run_f(cx, a, u, enc);
        let mut branch = cx.r.get(&out, n * c);
        if p > 0.0 {
            let d = cx.r.mut_(a.branch_drop.as_ref().unwrap(), n * c);
            dropout_forward(d, branch, p, cx.seed(self.site));
            branch = d;
        }
        let sum = cx.r.mut_(&a.sum, n * c);
        residual_forward(sum, x, branch);
        if self.position == NormPosition::Post {
            self.norm.forward(cx, &a.norm, sum, c);
        }
    }

    /// d_res (N, C): on entry ∂L/∂output, on exit ∂L/∂x. For cross-attention `enc` carries the
    /// encoder output and the buffer its gradient accumulates into.
    pub fn backward(
        &self,
        cx: &Ctx,
        a: &SublayerActs,
        d_res: &mut [f32],
        x: &[f32],
        enc: Option<(&[f32], &mut [f32])>,
    ) {
        let (c, n, s) = (self.norm_width(), cx.n(), cx.scratch);
        let d_fin = cx.r.mut_(&s.d_fin, n * c);
        match self.position {
            NormPosition::Pre => {
                let d_branch = self.dropout_backward(cx, d_res);
                self.f_backward(cx, a, d_fin, d_branch, cx.r.get(&a.norm.out, n * c), enc);
                // ∂L/∂x = ∂L/∂output (the identity path, already in d_res) + the norm path.
                self.norm.backward(cx, &a.norm, d_res, d_fin, x, c);
            }
            NormPosition::Post => {
                let d_sum = cx.r.mut_(&s.d_sum, n * c);
                d_sum.fill(0.0);
                self.norm.backward(cx, &a.norm, d_sum, d_res, cx.r.get(&a.sum, n * c), c);
                let d_branch = self.dropout_backward(cx, d_sum);
                self.f_backward(cx, a, d_fin, d_branch, x, enc);
                // ∂L/∂x = ∂L/∂sum (identity path) + f's input gradient.
                residual_forward(d_res, d_sum, d_fin);
            }
        }
    }

    /// The branch gradient: `d` through the branch's dropout (or `d` itself without dropout).
    fn dropout_backward<'a>(&self, cx: &Ctx<'a>, d: &'a [f32]) -> &'a [f32] {
        let p = cx.drop_p(self.dropout);
        if p == 0.0 {
            return d;
        }
        let out = cx.r.mut_(&cx.scratch.d_branch, d.len());
        dropout_backward(out, d, p, cx.seed(self.site));
        out
    }

    fn f_backward(
        &self,
        cx: &Ctx,
        a: &SublayerActs,
        d_fin: &mut [f32],
        d_branch: &[f32],
        u: &[f32],
        enc: Option<(&[f32], &mut [f32])>,
    ) {
        match (&self.f, &a.f) {
            (Function::Attention(at), FunctionActs::Attention(aa)) => {
                at.backward(cx, aa, d_fin, d_branch, u, enc, self.site + 1)
            }
            (Function::Mlp(m), FunctionActs::Mlp(ma)) => m.backward(cx, ma, d_fin, d_branch, u),
            _ => unreachable!("activation layout matches the function"),
        }
    }
}
