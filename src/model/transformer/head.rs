//! The output layer on top of the last stack, and the loss:
//!
//! ```text
//! LM:          h (B,T,C) ─ lm_head (V,C) ─ logits (B,T,V) ─ cross-entropy with targets (B,T)
//! classifier:  h (B,T,C) ─ pool over the real tokens (B,C) ─ classifier (K,C) + b
//!              ─ logits (B,K) ─ cross-entropy with labels (B)
//! span (QA):   h (B,T,C) ─ qa_outputs (2,C) + b ─ (B,T,2) ─ start/end rows (B,2,T), positions
//!              outside the context masked ─ cross-entropy with (start, end) (B,2), i.e.
//!              (CE(start) + CE(end)) / 2
//! masked LM:   h (B,T,C) ─ dense (C,C) + b ─ act ─ norm ─ (B,T,C) ─ · wteᵀ (V,C) + bias (V)
//!              ─ logits (B,T,V) ─ cross-entropy with the masked positions' tokens (B,T),
//!              -1 elsewhere (BERT's `cls.predictions`, its decoder tied to the embedding)
//! ```

use super::config::{EncoderHead, ModelConfig, Pooling};
use super::layers::{Ctx, Norm, NormActs};
use super::stack::Stack;
use crate::kernels::activation::{activation_backward, activation_forward, Activation};
use crate::kernels::crossentropy::{crossentropy_backward, crossentropy_forward};
use crate::kernels::distill::{distill_backward, distill_forward, DistillLoss};
use crate::kernels::pool::{Pool, PoolingMode};
use crate::kernels::span::{span_logits_backward, span_logits_forward};
use crate::model::layout::{ActLayout, ParamKind, ParamLayout};
use std::ops::Range;

/// The output layer.
#[derive(Clone, Debug)]
pub(super) enum Head {
    /// logits = h·Wᵀ, W (V, C); possibly the token embedding.
    Lm { w: Range<usize> },
    /// logits = pool(h)·Wᵀ + b, W (K, C).
    Classifier { w: Range<usize>, b: Range<usize>, pooling: Pooling },
    /// Start and end logits of every position: h·Wᵀ + b, W (2, C) (BERT's `qa_outputs`).
    Span { w: Range<usize>, b: Range<usize> },
    /// BERT's masked-LM head: logits = norm(act(h·Dᵀ + d))·wteᵀ + bias, D (C, C); the
    /// decoder is the encoder's token embedding, as in BERT, and the bias (V) is always there.
    Mlm {
        dense_w: Range<usize>,
        dense_b: Option<Range<usize>>,
        act: Activation,
        norm: Norm,
        wte: Range<usize>,
        bias: Range<usize>,
    },
}

/// Model-level activations: logits, losses and the pooled encoder output.
#[derive(Clone, Debug)]
pub(super) struct HeadActs {
    pub logits: Range<usize>,   // (N, V), (B, K) or (B, 2, T)
    pub losses: Range<usize>,   // (N), (B) or (B, 2)
    pub d_logits: Range<usize>, // like logits
    pub pooled: Range<usize>,   // (B, C)
    pub d_pooled: Range<usize>, // (B, C)
    pub span_raw: Range<usize>, // span head: the linear layer's output (N, 2)
    pub d_span_raw: Range<usize>,
    pub mlm: Option<MlmActs>,
}

/// The masked-LM head's transform, (N, C) each; the gradients only when training.
#[derive(Clone, Debug)]
pub(super) struct MlmActs {
    dense: Range<usize>,
    act: Range<usize>,
    norm: NormActs, // its output feeds the decoder
    d_norm: Range<usize>,
    d_act: Range<usize>,
    d_dense: Range<usize>,
}

impl From<Pooling> for PoolingMode {
    fn from(p: Pooling) -> Self {
        match p {
            Pooling::Cls => PoolingMode::Cls,
            Pooling::Mean => PoolingMode::Mean,
        }
    }
}

/// Whether the parameter `name` belongs to a task's own head (a classifier's), which a model
/// fine-tuned from a checkpoint of another task gets fresh (`train.init_from`).
pub fn is_task_head(name: &str) -> bool {
    name.starts_with("classifier.") || name.starts_with("qa_outputs.") || name.starts_with("mlm.")
}

impl Head {
    /// The LM head over `decoder` (its token embedding when tied), or the head of `encoder`
    /// its config names; its parameters go last in the layout.
    pub(super) fn new(
        l: &mut ParamLayout,
        cfg: &ModelConfig,
        encoder: Option<&Stack>,
        decoder: Option<&Stack>,
    ) -> Head {
        let c = cfg.n_embd;
        match decoder {
            Some(d) => Head::Lm {
                w: if cfg.tie_embeddings {
                    d.wte.clone()
                } else {
                    l.push("lm_head.weight", &[cfg.vocab_size, c], ParamKind::Matrix)
                },
            },
            None => match cfg.encoder_head {
                EncoderHead::Classifier => Head::Classifier {
                    w: l.push("classifier.weight", &[cfg.num_classes, c], ParamKind::Matrix),
                    b: l.push("classifier.bias", &[cfg.num_classes], ParamKind::Bias),
                    pooling: cfg.pooling,
                },
                EncoderHead::Span => Head::Span {
                    w: l.push("qa_outputs.weight", &[2, c], ParamKind::Matrix),
                    b: l.push("qa_outputs.bias", &[2], ParamKind::Bias),
                },
                EncoderHead::Mlm => Head::Mlm {
                    dense_w: l.push("mlm.dense.weight", &[c, c], ParamKind::Matrix),
                    dense_b: cfg.bias.then(|| l.push("mlm.dense.bias", &[c], ParamKind::Bias)),
                    // SwiGLU has no elementwise activation; its transform uses GELU.
                    act: cfg.elementwise_activation().unwrap_or(Activation::GeluErf),
                    norm: Norm::new(l, "mlm.norm", cfg),
                    wte: encoder.expect("an encoder head has an encoder").wte.clone(),
                    bias: l.push("mlm.bias", &[cfg.vocab_size], ParamKind::Bias),
                },
            },
        }
    }

    /// Activations for up to `max_batch` sequences of `block_size` tokens; no gradient buffers
    /// for inference.
    pub(super) fn acts(&self, al: &mut ActLayout, cfg: &ModelConfig, max_batch: usize, inference: bool) -> HeadActs {
        let (n, c) = (max_batch * cfg.block_size, cfg.n_embd);
        let out_width = match self {
            Head::Lm { .. } | Head::Mlm { .. } => n * cfg.vocab_size,
            Head::Classifier { .. } => max_batch * cfg.num_classes,
            Head::Span { .. } => 2 * n,
        };
        let span = if matches!(self, Head::Span { .. }) { 2 * n } else { 0 };
        let grad = |len: usize| if inference { 0 } else { len };
        let mlm = matches!(self, Head::Mlm { .. }).then(|| MlmActs {
            dense: al.alloc(n * c),
            act: al.alloc(n * c),
            norm: Norm::acts(al, n, c),
            d_norm: al.alloc(grad(n * c)),
            d_act: al.alloc(grad(n * c)),
            d_dense: al.alloc(grad(n * c)),
        });
        HeadActs {
            logits: al.alloc(out_width),
            losses: al.alloc(n),
            d_logits: al.alloc(grad(out_width)),
            pooled: al.alloc(max_batch * c),
            d_pooled: al.alloc(grad(max_batch * c)),
            span_raw: al.alloc(span),
            d_span_raw: al.alloc(grad(span)),
            mlm,
        }
    }

    /// Number of logits of a pass over (B, T): B·T·V for the LM, B·K for the classifier.
    pub(super) fn logits_len(&self, cfg: &ModelConfig, b: usize, t: usize) -> usize {
        match self {
            Head::Lm { .. } | Head::Mlm { .. } => b * t * cfg.vocab_size,
            Head::Classifier { .. } => b * cfg.num_classes,
            Head::Span { .. } => b * 2 * t,
        }
    }

    /// Logits from the top stack's output `h` (B, T, C) of the pass `cx` (whose self-attention
    /// mask is the classifier's padding mask) and, with `targets` ((B, T) token ids, (B) labels
    /// or (B, 2) answer start and end positions; -1 = ignore), the loss with label smoothing
    /// `eps`: (sum, number of targets); with `soft` (the teacher's logits, same shape as the
    /// student's) the distillation loss. `span_mask` (B, T): the positions a span head may
    /// choose (None: all).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &self,
        cx: &Ctx,
        a: &HeadActs,
        cfg: &ModelConfig,
        h: &[f32],
        targets: Option<&[i32]>,
        eps: f32,
        soft: Option<(&[f32], DistillLoss)>,
        span_mask: Option<&[bool]>,
    ) -> Option<(f64, usize)> {
        let (b, t, c, r) = (cx.b, cx.t, cfg.n_embd, cx.r);
        match self {
            Head::Lm { w } => {
                let (n, v) = (b * t, cfg.vocab_size);
                let logits = r.mut_(&a.logits, n * v);
                cx.linear_forward(logits, h, w, &None, n, c, v);
                let targets = targets?;
                Some(loss_forward(r.mut_(&a.losses, n), logits, &targets[..n], v, eps, soft))
            }
            Head::Classifier { w, b: bias, pooling } => {
                let k = cfg.num_classes;
                let pooled = r.mut_(&a.pooled, b * c);
                Pool { mode: (*pooling).into(), mask: cx.self_mask, b, t, c }.forward::<f32>(pooled, h);
                let logits = r.mut_(&a.logits, b * k);
                cx.linear_forward(logits, pooled, w, &Some(bias.clone()), b, c, k);
                let targets = targets?;
                Some(loss_forward(r.mut_(&a.losses, b), logits, &targets[..b], k, eps, soft))
            }
            Head::Span { w, b: bias } => {
                let n = b * t;
                let raw = r.mut_(&a.span_raw, 2 * n);
                cx.linear_forward(raw, h, w, &Some(bias.clone()), n, c, 2);
                let logits = r.mut_(&a.logits, 2 * n);
                span_logits_forward(logits, raw, span_mask, b, t);
                let targets = targets?;
                Some(loss_forward(r.mut_(&a.losses, 2 * b), logits, &targets[..2 * b], t, eps, soft))
            }
            Head::Mlm { dense_w, dense_b, act, norm, wte, bias } => {
                let (n, v) = (b * t, cfg.vocab_size);
                let m = a.mlm.as_ref().expect("the masked-LM head has its activations");
                let dense = r.mut_(&m.dense, n * c);
                cx.linear_forward(dense, h, dense_w, dense_b, n, c, c);
                let acted = r.mut_(&m.act, n * c);
                activation_forward(*act, acted, dense);
                let normed = norm.forward(cx, &m.norm, acted, c);
                let logits = r.mut_(&a.logits, n * v);
                cx.linear_forward(logits, normed, wte, &Some(bias.clone()), n, c, v);
                let targets = targets?;
                Some(loss_forward(r.mut_(&a.losses, n), logits, &targets[..n], v, eps, soft))
            }
        }
    }

    /// Backward of [`Head::forward`] for `scale` times the loss sum: accumulates the head's
    /// parameter gradients and overwrites `d_h` (B, T, C) with ∂L/∂h.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &self,
        cx: &Ctx,
        a: &HeadActs,
        cfg: &ModelConfig,
        d_h: &mut [f32],
        h: &[f32],
        targets: &[i32],
        scale: f32,
        eps: f32,
        soft: Option<(&[f32], DistillLoss)>,
        span_mask: Option<&[bool]>,
    ) {
        let (b, t, c, r) = (cx.b, cx.t, cfg.n_embd, cx.r);
        match self {
            Head::Lm { w } => {
                let (n, v) = (b * t, cfg.vocab_size);
                let d_logits = r.mut_(&a.d_logits, n * v);
                loss_backward(d_logits, r.get(&a.logits, n * v), &targets[..n], v, scale, eps, soft);
                cx.linear_backward_owned(d_h, w, &None, d_logits, h, n, c, v);
            }
            Head::Classifier { w, b: bias, pooling } => {
                let k = cfg.num_classes;
                let d_logits = r.mut_(&a.d_logits, b * k);
                loss_backward(d_logits, r.get(&a.logits, b * k), &targets[..b], k, scale, eps, soft);
                let d_pooled = r.mut_(&a.d_pooled, b * c);
                let pooled = r.get(&a.pooled, b * c);
                cx.linear_backward_owned(d_pooled, w, &Some(bias.clone()), d_logits, pooled, b, c, k);
                Pool { mode: (*pooling).into(), mask: cx.self_mask, b, t, c }.backward(d_h, d_pooled, h);
            }
            Head::Span { w, b: bias } => {
                let n = b * t;
                let d_logits = r.mut_(&a.d_logits, 2 * n);
                loss_backward(d_logits, r.get(&a.logits, 2 * n), &targets[..2 * b], t, scale, eps, soft);
                let d_raw = r.mut_(&a.d_span_raw, 2 * n);
                span_logits_backward(d_raw, d_logits, span_mask, b, t);
                cx.linear_backward_owned(d_h, w, &Some(bias.clone()), d_raw, h, n, c, 2);
            }
            Head::Mlm { dense_w, dense_b, act, norm, wte, bias } => {
                let (n, v) = (b * t, cfg.vocab_size);
                let m = a.mlm.as_ref().expect("the masked-LM head has its activations");
                let d_logits = r.mut_(&a.d_logits, n * v);
                loss_backward(d_logits, r.get(&a.logits, n * v), &targets[..n], v, scale, eps, soft);
                let d_norm = r.mut_(&m.d_norm, n * c);
                let normed = r.get(&m.norm.out, n * c);
                cx.linear_backward_owned(d_norm, wte, &Some(bias.clone()), d_logits, normed, n, c, v);
                let d_act = r.mut_(&m.d_act, n * c);
                d_act.fill(0.0); // the norm's backward accumulates
                let acted = r.get(&m.act, n * c);
                norm.backward(cx, &m.norm, d_act, d_norm, acted, c);
                let d_dense = r.mut_(&m.d_dense, n * c);
                activation_backward(*act, d_dense, r.get(&m.dense, n * c), d_act);
                cx.linear_backward_owned(d_h, dense_w, dense_b, d_dense, h, n, c, c);
            }
        }
    }
}

/// The cross-entropy, or with the teacher's logits the distillation loss (`kernels::distill`).
fn loss_forward(
    losses: &mut [f32],
    logits: &[f32],
    targets: &[i32],
    v: usize,
    eps: f32,
    soft: Option<(&[f32], DistillLoss)>,
) -> (f64, usize) {
    match soft {
        Some((teacher, d)) => distill_forward(losses, logits, &teacher[..logits.len()], targets, v, d, eps),
        None => crossentropy_forward(losses, logits, targets, v, eps),
    }
}

/// The gradient of [`loss_forward`]'s loss sum times `scale`.
fn loss_backward(
    d_logits: &mut [f32],
    logits: &[f32],
    targets: &[i32],
    v: usize,
    scale: f32,
    eps: f32,
    soft: Option<(&[f32], DistillLoss)>,
) {
    match soft {
        Some((teacher, d)) => distill_backward(d_logits, logits, &teacher[..logits.len()], targets, v, d, scale, eps),
        None => crossentropy_backward(d_logits, logits, targets, v, scale, eps),
    }
}
