//! Attention layers: self-attention (packed q/k/v projection, RoPE, position biases) and
//! cross-attention (queries from the decoder, keys and values from the encoder output).

use super::{Ctx, SelfPosition};
use crate::kernels::{
    attention::{attention_backward, attention_forward},
    flash_attention::{flash_attention_backward, flash_attention_forward, scratch_per_head},
    general_attention::{
        general_attention_backward, general_attention_forward, general_attention_fwd_scratch_len,
        general_attention_scratch_len, AttnDims, AttnInputs, AttnMask, AttnParamGrads, PositionBias, QkvGrads, ScoreFn,
    },
    residual::residual_add_inplace,
};
use crate::model::layout::{ActLayout, ParamKind, ParamLayout};
use crate::model::transformer::config::{AttentionKind, ModelConfig, ScoreKind};
use crate::model::transformer::probe::{ActKind, ActTensor, AttnProbs, View};
use std::ops::Range;

/// Shapes shared by the attention layers of a model.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Heads {
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
    /// Width of the heads' concatenated outputs: `c` unless heads were pruned
    /// (`ModelConfig::head_size`).
    pub fn inner(&self) -> usize {
        self.nh * self.hs
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Attention {
    pub heads: Heads,
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
    /// RoPE or a score bias (see `position.rs`); None for cross-attention.
    position: SelfPosition,
    causal: bool,
    /// Use the dedicated causal MHA kernels (dense or flash).
    fast: Option<AttentionKind>,
    attn_drop: f32,
    /// Block index in the stack: the layer's slot in a KV cache.
    layer: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct AttentionActs {
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
        let position = position.for_layer(l, name, cfg);
        let log_tau =
            (cfg.score == ScoreKind::Cosine).then(|| l.push(format!("{name}.log_tau"), &[h.nh], ParamKind::Norm));
        let score_v = (cfg.score == ScoreKind::Additive)
            .then(|| l.push(format!("{name}.score_v"), &[h.nh, h.hs], ParamKind::Matrix));
        let fast_ok = !cross && causal && cfg.plain_attention() && position.is_bias_free();
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
            layer: 0,
        }
    }

    /// The same layer as block `layer` of its stack (its KV-cache slot).
    pub fn at_layer(mut self, layer: usize) -> Self {
        self.layer = layer;
        self
    }

    /// Cosine temperatures start at τ = 10, so that scores span about ±10 like scaled dot
    /// products of unit-variance vectors.
    pub fn init(&self, params: &mut [f32]) {
        if let Some(r) = &self.log_tau {
            params[r.clone()].fill(10f32.ln());
        }
    }

    pub fn acts(&self, l: &mut ActLayout, max_b: usize, t: usize, t_enc: usize, inference: bool) -> AttentionActs {
        let h = &self.heads;
        let n = max_b * t;
        let tk = if self.c_kv.is_some() { t_enc } else { t };
        let flash = self.fast == Some(AttentionKind::Flash);
        AttentionActs {
            q: l.alloc(n * if self.c_kv.is_some() { h.nh * h.hs } else { h.qkv() }),
            kv: self.c_kv.as_ref().map(|_| l.alloc(max_b * t_enc * 2 * h.kv())),
            probs: l.alloc(if flash { max_b * h.nh * t } else { max_b * h.nh * t * tk }),
            probs_drop: l.alloc_if(self.attn_drop > 0.0 && !inference, max_b * h.nh * t * tk),
            y: l.alloc(n * h.inner()),
            out: l.alloc(n * h.c),
        }
    }

    /// Length of the attention kernel's scratch (forward and backward share it; the forward
    /// pass's alone when `forward_only`).
    pub fn scratch_needs(&self, max_b: usize, t: usize, t_enc: usize, forward_only: bool) -> usize {
        let h = &self.heads;
        let tk = if self.c_kv.is_some() { t_enc } else { t };
        match self.fast {
            Some(AttentionKind::Flash) => max_b * h.nh * scratch_per_head(t),
            Some(AttentionKind::Dense) if forward_only => 0,
            Some(AttentionKind::Dense) => max_b * h.nh * t * t,
            None => {
                let (dims, (score, pos)) = (self.dims(max_b, t, tk), self.kernel_shape());
                let fwd = general_attention_fwd_scratch_len(&dims, &score, &pos);
                if forward_only {
                    fwd
                } else {
                    general_attention_scratch_len(&dims, &score, &pos).max(fwd)
                }
            }
        }
    }

    /// Kernel sizes of a call on b rows of tq queries and tk keys.
    pub fn dims(&self, b: usize, tq: usize, tk: usize) -> AttnDims {
        let h = &self.heads;
        AttnDims { b, tq, tk, n_head: h.nh, n_kv_head: h.nkv, head_size: h.hs }
    }

    /// Whether the keys and values come from an encoder's output.
    pub fn is_cross(&self) -> bool {
        self.c_kv.is_some()
    }

    /// The layer's slot in a KV cache.
    pub fn layer(&self) -> usize {
        self.layer
    }

    /// The score function and position bias the general kernel computes, with this layer's
    /// parameters in `cx`.
    pub fn kernel_fns<'a>(&self, cx: &Ctx<'a>) -> (ScoreFn<'a>, PositionBias<'a>) {
        let lt = self.log_tau.as_ref().map_or(&[][..], |r| cx.w.get(r, r.len()));
        let sv = self.score_v.as_ref().map_or(&[][..], |r| cx.w.get(r, r.len()));
        (self.score_fn(lt, sv), self.position.bias(cx))
    }

    /// [`Attention::kernel_fns`] with empty tables: only kinds and sizes, for scratch sizing.
    pub fn kernel_shape(&self) -> (ScoreFn<'static>, PositionBias<'static>) {
        (self.score_fn(&[], &[]), self.position.bias_shape())
    }

    fn score_fn<'a>(&self, log_tau: &'a [f32], score_v: &'a [f32]) -> ScoreFn<'a> {
        match self.score {
            ScoreKind::Scaled => ScoreFn::Scaled,
            ScoreKind::Unscaled => ScoreFn::Unscaled,
            ScoreKind::Cosine => ScoreFn::Cosine { log_tau },
            ScoreKind::Additive => ScoreFn::Additive { v: score_v },
        }
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
                    kv_head_stride: h.hs,
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
                    kv_head_stride: h.hs,
                }
            }
        }
    }

    fn mask<'a>(&self, cx: &Ctx<'a>) -> AttnMask<'a> {
        let key_mask = if self.c_kv.is_some() { cx.enc_mask } else { cx.self_mask };
        AttnMask { causal: self.causal, q_offset: 0, key_mask }
    }

    /// out (N, C) = attention of `x` (N, C) (over itself, or over `enc` (N_enc, C) for
    /// cross-attention). In a cached pass ([`Ctx::cache`]) the queries attend to the cache.
    pub fn forward(&self, cx: &Ctx, a: &AttentionActs, x: &[f32], enc: Option<&[f32]>, site: u64) {
        let h = &self.heads;
        let (b, n) = (cx.b, cx.n());
        let q = cx.r.mut_(&a.q, n * if a.kv.is_some() { h.nh * h.hs } else { h.qkv() });
        match &self.c_kv {
            None => cx.linear_forward(q, x, &self.c_q_w, &self.c_q_b, n, h.c, h.qkv()),
            Some((kvw, kvb)) => {
                cx.linear_forward(q, x, &self.c_q_w, &self.c_q_b, n, h.c, h.nh * h.hs);
                let enc = enc.expect("cross-attention needs the encoder output");
                let ne = b * cx.t_enc;
                // A cached pass projects the encoder output once, into the cache.
                let kv = match cx.cache {
                    None => Some(cx.r.mut_(a.kv.as_ref().unwrap(), ne * 2 * h.kv())),
                    Some(kc) => kc.cross_to_fill(self.layer, b, cx.t_enc),
                };
                if let Some(kv) = kv {
                    cx.linear_forward(kv, enc, kvw, kvb, ne, h.c, 2 * h.kv());
                }
            }
        }
        self.position.rope_forward(cx, q, h);
        let y = cx.r.mut_(&a.y, n * h.inner());
        if let Some(kc) = cx.cache {
            kc.attend(self, cx, y, q);
        } else {
            self.attend(cx, a, y, q, site);
        }
        cx.ablate(&self.c_proj_w, y, n, h.nh * h.hs);
        let out = cx.r.mut_(&a.out, n * h.c);
        cx.linear_forward(out, y, &self.c_proj_w, &self.c_proj_b, n, h.nh * h.hs, h.c);
    }

    /// y (N, C) = the heads' outputs of a full pass, with q the projected queries (and keys
    /// and values).
    fn attend(&self, cx: &Ctx, a: &AttentionActs, y: &mut [f32], q: &[f32], site: u64) {
        let h = &self.heads;
        let (b, t) = (cx.b, cx.t);
        let tk = if a.kv.is_some() { cx.t_enc } else { t };
        let p_drop = cx.drop_p(self.attn_drop);
        let probs_len = b * h.nh * t * tk;
        let first = cx.first_sequence * h.nh * t * tk;
        let dropped = a
            .probs_drop
            .as_ref()
            .filter(|_| p_drop > 0.0)
            .map(|r| (cx.r.mut_(r, probs_len), p_drop, cx.seed(site), first));
        match self.fast {
            Some(AttentionKind::Flash) => {
                // The backward scratch doubles as the forward's tile buffer: it is free until
                // the backward pass, which recomputes the tiles anyway.
                let scratch = cx.r.mut_(&cx.scratch.d_att, b * h.nh * scratch_per_head(t));
                flash_attention_forward(y, cx.r.mut_(&a.probs, b * h.nh * t), scratch, q, b, t, h.inner(), h.nh);
            }
            Some(AttentionKind::Dense) => {
                attention_forward(y, cx.r.mut_(&a.probs, probs_len), dropped, q, b, t, h.inner(), h.nh)
            }
            None => {
                let (dims, (score, pos)) = (self.dims(b, t, tk), self.kernel_fns(cx));
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
        let d_y = cx.r.mut_(&s.d_y, n * h.inner());
        cx.linear_backward(d_y, &self.c_proj_w, &self.c_proj_b, dout, cx.r.get(&a.y, n * h.inner()), n, h.inner(), h.c);
        let p_drop = cx.drop_p(self.attn_drop);
        let probs_len = b * h.nh * t * tk;
        let first = cx.first_sequence * h.nh * t * tk;
        let dropped = a
            .probs_drop
            .as_ref()
            .filter(|_| p_drop > 0.0)
            .map(|r| (cx.r.get(r, probs_len), p_drop, cx.seed(site), first));
        let qw = if a.kv.is_some() { h.nh * h.hs } else { h.qkv() };
        let d_q = cx.r.mut_(&s.d_wide, n * qw);
        match self.fast {
            Some(AttentionKind::Flash) => {
                let scratch = cx.r.mut_(&s.d_att, b * h.nh * scratch_per_head(t));
                let (qkv, y, lse) =
                    (cx.r.get(&a.q, n * qw), cx.r.get(&a.y, n * h.inner()), cx.r.get(&a.probs, b * h.nh * t));
                flash_attention_backward(d_q, scratch, d_y, qkv, y, lse, b, t, h.inner(), h.nh);
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
                h.inner(),
                h.nh,
            ),
            None => {
                let (dims, (score, pos)) = (self.dims(b, t, tk), self.kernel_fns(cx));
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
                let pgrads = AttnParamGrads {
                    log_tau: cx.gopt(&self.log_tau),
                    additive_v: cx.gopt(&self.score_v),
                    ..self.position.param_grads(cx)
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
        self.position.rope_backward(cx, d_q, h);
        cx.linear_backward_owned(dx, &self.c_q_w, &self.c_q_b, d_q, x, n, h.c, qw);
        if let (Some((kvw, kvb)), Some((enc, d_enc))) = (&self.c_kv, enc) {
            let ne = b * cx.t_enc;
            let part = cx.r.mut_(&s.d_enc_part, ne * h.c);
            let d_kv = cx.r.mut_(&s.d_wide2, ne * 2 * h.kv());
            cx.linear_backward_owned(part, kvw, kvb, d_kv, enc, ne, h.c, 2 * h.kv());
            residual_add_inplace(d_enc, part);
        }
    }
}

/// Read-only views for diagnostics (see `probe.rs`).
impl Attention {
    /// The layer's activation tensors in forward order, named `{prefix}.{what}`.
    pub fn activations<'a>(
        &self,
        v: &View<'a>,
        a: &AttentionActs,
        prefix: &str,
        layer: usize,
        out: &mut Vec<ActTensor<'a>>,
    ) {
        let h = &self.heads;
        let (b, t, n, l) = (v.b, v.t, v.n(), Some(layer));
        match &a.kv {
            None => v.push(out, format!("{prefix}.qkv"), l, ActKind::Query, &a.q, n * h.qkv()),
            Some(kv) => {
                v.push(out, format!("{prefix}.q"), l, ActKind::Query, &a.q, n * h.nh * h.hs);
                v.push(out, format!("{prefix}.kv"), l, ActKind::KeyValue, kv, b * v.t_enc * 2 * h.kv());
            }
        }
        let tk = if a.kv.is_some() { v.t_enc } else { t };
        match self.fast {
            Some(AttentionKind::Flash) => {
                v.push(out, format!("{prefix}.lse"), l, ActKind::LogSumExp, &a.probs, b * h.nh * t)
            }
            _ => v.push(out, format!("{prefix}.probs"), l, ActKind::Probs, &a.probs, b * h.nh * t * tk),
        }
        if let (Some(r), true) = (&a.probs_drop, v.train && self.attn_drop > 0.0) {
            v.push(out, format!("{prefix}.probs_drop"), l, ActKind::Dropout, r, b * h.nh * t * tk);
        }
        v.push(out, format!("{prefix}.y"), l, ActKind::Heads, &a.y, n * h.inner());
        v.push(out, format!("{prefix}.out"), l, ActKind::BranchOut, &a.out, n * h.c);
    }

    /// The attention probabilities of the last forward pass (before attention dropout).
    pub fn probs<'a>(&self, v: &View<'a>, a: &AttentionActs) -> AttnProbs<'a> {
        let h = &self.heads;
        let (b, t) = (v.b, v.t);
        match self.fast {
            Some(AttentionKind::Flash) => AttnProbs::Flash {
                lse: v.get(&a.probs, b * h.nh * t),
                qkv: v.get(&a.q, b * t * h.qkv()),
                b,
                t,
                c: h.inner(),
                nh: h.nh,
            },
            _ => {
                let cross = a.kv.is_some();
                let tk = if cross { v.t_enc } else { t };
                AttnProbs::Stored {
                    probs: v.get(&a.probs, b * h.nh * t * tk),
                    b,
                    nh: h.nh,
                    tq: t,
                    tk,
                    // Padded queries of an encoder still attend; their rows are left out.
                    query_mask: if cross { None } else { v.self_mask },
                }
            }
        }
    }
}
