//! The output layer on top of the last stack, and the loss:
//!
//! ```text
//! LM:          h (B,T,C) ─ lm_head (V,C) ─ logits (B,T,V) ─ cross-entropy with targets (B,T)
//! classifier:  h (B,T,C) ─ pool over the real tokens (B,C) ─ classifier (K,C) + b
//!              ─ logits (B,K) ─ cross-entropy with labels (B)
//! span (QA):   h (B,T,C) ─ qa_outputs (2,C) + b ─ (B,T,2) ─ start/end rows (B,2,T), positions
//!              outside the context masked ─ cross-entropy with (start, end) (B,2), i.e.
//!              (CE(start) + CE(end)) / 2
//! ```

use super::config::{EncoderHead, ModelConfig, Pooling};
use super::layers::Ctx;
use super::stack::Stack;
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
    name.starts_with("classifier.") || name.starts_with("qa_outputs.")
}

impl Head {
    /// The LM head over `decoder` (its token embedding when tied), or the classifier of an
    /// encoder; its parameters go last in the layout.
    pub(super) fn new(l: &mut ParamLayout, cfg: &ModelConfig, decoder: Option<&Stack>) -> Head {
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
            },
        }
    }

    /// Activations for up to `max_batch` sequences of `block_size` tokens; no gradient buffers
    /// for inference.
    pub(super) fn acts(&self, al: &mut ActLayout, cfg: &ModelConfig, max_batch: usize, inference: bool) -> HeadActs {
        let (n, c) = (max_batch * cfg.block_size, cfg.n_embd);
        let out_width = match self {
            Head::Lm { .. } => n * cfg.vocab_size,
            Head::Classifier { .. } => max_batch * cfg.num_classes,
            Head::Span { .. } => 2 * n,
        };
        let span = if matches!(self, Head::Span { .. }) { 2 * n } else { 0 };
        let grad = |len: usize| if inference { 0 } else { len };
        HeadActs {
            logits: al.alloc(out_width),
            losses: al.alloc(n),
            d_logits: al.alloc(grad(out_width)),
            pooled: al.alloc(max_batch * c),
            d_pooled: al.alloc(grad(max_batch * c)),
            span_raw: al.alloc(span),
            d_span_raw: al.alloc(grad(span)),
        }
    }

    /// Number of logits of a pass over (B, T): B·T·V for the LM, B·K for the classifier.
    pub(super) fn logits_len(&self, cfg: &ModelConfig, b: usize, t: usize) -> usize {
        match self {
            Head::Lm { .. } => b * t * cfg.vocab_size,
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
