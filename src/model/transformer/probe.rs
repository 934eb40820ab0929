//! Read-only views of the last forward pass's activations, for diagnostics: every activation
//! tensor by name in forward order ([`Transformer::activations`], used to find where a NaN
//! appeared) and, per block, the tensors the health statistics read ([`Transformer::blocks`]).
//!
//! Nothing here runs during a normal training step; the views allocate (names, vectors) and
//! are meant for the steps where statistics are logged, or for an error path.

use super::{Head, Transformer};
use std::ops::Range;

/// What an activation tensor holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActKind {
    /// Token (and position) embedding (N, C).
    Embedding,
    /// A dropout's output: the embedding's, a residual branch's (N, C) or the attention
    /// probabilities' (B, NH, Tq, Tk).
    Dropout,
    /// A norm layer's output (N, C).
    NormOut,
    /// Self-attention: packed [q | k | v] (N, (NH + 2·NKV)·hs) after RoPE; cross-attention: the
    /// queries (N, NH·hs).
    Query,
    /// Cross-attention keys and values of the encoder output (B·T_enc, 2·NKV·hs).
    KeyValue,
    /// Attention probabilities (B, NH, Tq, Tk).
    Probs,
    /// Flash attention's per-row log-sum-exp of the scores (B, NH, T).
    LogSumExp,
    /// Attention heads concatenated, before the output projection (N, C).
    Heads,
    /// A sublayer function's output, before dropout and the residual sum (N, C).
    BranchOut,
    /// Feed-forward pre-activation `c_fc(x)` (N, F), or SwiGLU's [gate | up] (N, 2F).
    FfnPre,
    /// Feed-forward activation output (N, F).
    FfnAct,
    /// The residual sum x + f(...) (N, C): a pre-norm sublayer's output.
    Residual,
    /// Classifier head: the pooled encoder output (B, C).
    Pooled,
    /// Logits (N, V) or (B, K).
    Logits,
    /// Per-row losses (N) or (B).
    Losses,
}

/// One activation tensor of the last forward pass (only the part the batch used).
#[derive(Clone, Debug)]
pub struct ActTensor<'a> {
    /// `{stack}.emb`, `{stack}.h.{i}.{ln_1|attn|ln_cross|cross_attn|ln_2|mlp}.{what}`,
    /// `{stack}.ln_f.out`, `head.pooled`, `logits`, `losses`; `{stack}` is the parameter prefix
    /// (`transformer`, `encoder`, `decoder`).
    pub name: String,
    /// Block index within its stack; None outside the blocks.
    pub layer: Option<usize>,
    pub kind: ActKind,
    pub data: &'a [f32],
}

/// Attention probabilities of one attention layer.
#[derive(Clone, Copy, Debug)]
pub enum AttnProbs<'a> {
    /// Stored probabilities (B, NH, Tq, Tk); masked keys hold 0 and a query row with no visible
    /// key is all zeros. `query_mask` (B, Tq): the real (unpadded) queries, None = all.
    Stored { probs: &'a [f32], b: usize, nh: usize, tq: usize, tk: usize, query_mask: Option<&'a [bool]> },
    /// Flash attention keeps only each row's log-sum-exp `lse` (B, NH, T) of the scaled scores;
    /// the probabilities are exp(q_i·k_j/√hs − lse_i) for j ≤ i, with q and k read from `qkv`
    /// (B, T, 3C).
    Flash { lse: &'a [f32], qkv: &'a [f32], b: usize, t: usize, c: usize, nh: usize },
}

/// The tensors of one block that the health statistics read.
#[derive(Clone, Debug)]
pub struct BlockProbe<'a> {
    /// Parameter prefix of the stack: `transformer`, `encoder` or `decoder`.
    pub stack: &'a str,
    pub layer: usize,
    /// The residual stream after the block (N, C).
    pub output: &'a [f32],
    /// Feed-forward pre-activation (N, `ffn_in`): `c_fc(x)`, or SwiGLU's [gate | up].
    pub ffn_pre: &'a [f32],
    pub ffn_in: usize,
    /// Hidden units F (`ffn_in` = 2F for SwiGLU, whose gate is the first F columns).
    pub ffn_hidden: usize,
    pub self_attn: AttnProbs<'a>,
    pub cross_attn: Option<AttnProbs<'a>>,
}

/// The activation buffer and the shape of the last forward pass as one stack saw it.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub acts: &'a [f32],
    pub b: usize,
    /// This stack's sequence length.
    pub t: usize,
    /// Length of the encoder output that cross-attention reads.
    pub t_enc: usize,
    /// Whether dropout ran (a training forward pass).
    pub train: bool,
    /// Self-attention padding mask (B, T) of an encoder stack.
    pub self_mask: Option<&'a [bool]>,
}

impl<'a> View<'a> {
    pub fn n(&self) -> usize {
        self.b * self.t
    }
    /// The first `len` elements of region `r`.
    pub fn get(&self, r: &Range<usize>, len: usize) -> &'a [f32] {
        &self.acts[r.start..r.start + len]
    }
    /// Appends a tensor to `out`.
    pub fn push(
        &self,
        out: &mut Vec<ActTensor<'a>>,
        name: String,
        layer: Option<usize>,
        kind: ActKind,
        r: &Range<usize>,
        len: usize,
    ) {
        out.push(ActTensor { name, layer, kind, data: self.get(r, len) });
    }
}

impl Transformer {
    /// The views of each stack of the last forward pass, in forward order: (stack, its acts,
    /// view).
    fn stack_views(&self) -> Vec<(&super::Stack, &super::StackActs, View<'_>)> {
        let last = &self.last;
        let mask = last.has_mask.then(|| &last.mask[..last.b * last.t_enc]);
        let view =
            |t, self_mask| View { acts: &self.acts, b: last.b, t, t_enc: last.t_enc, train: last.train, self_mask };
        let mut out = Vec::with_capacity(2);
        match (&self.encoder, &self.decoder) {
            (Some(e), None) => out.push((e, self.enc_acts.as_ref().unwrap(), view(last.t, mask))),
            (None, Some(d)) => out.push((d, self.dec_acts.as_ref().unwrap(), view(last.t, None))),
            (Some(e), Some(d)) => {
                out.push((e, self.enc_acts.as_ref().unwrap(), view(last.t_enc, mask)));
                out.push((d, self.dec_acts.as_ref().unwrap(), view(last.t, None)));
            }
            (None, None) => unreachable!("a model has at least one stack"),
        }
        out
    }

    /// Every activation tensor of the last forward pass, in the order the forward pass wrote
    /// them: per stack (encoder first) the embedding, each sublayer's tensors, the final norm;
    /// then the head. Empty before the first forward pass, and for an inference model (whose
    /// blocks share their buffers).
    pub fn activations(&self) -> Vec<ActTensor<'_>> {
        let mut out = Vec::new();
        if self.last.b == 0 || self.last.t == 0 || self.inference {
            return out;
        }
        for (stack, acts, view) in self.stack_views() {
            stack.activations(&view, acts, &mut out);
        }
        let (b, n, ha) = (self.last.b, self.last.b * self.last.t, &self.head_acts);
        let view = View { acts: &self.acts, b, t: self.last.t, t_enc: 0, train: false, self_mask: None };
        let rows = match self.head {
            Head::Lm { .. } | Head::Mlm { .. } => {
                view.push(&mut out, "logits".into(), None, ActKind::Logits, &ha.logits, n * self.config.vocab_size);
                n
            }
            Head::Classifier { .. } => {
                let c = self.config.n_embd;
                view.push(&mut out, "head.pooled".into(), None, ActKind::Pooled, &ha.pooled, b * c);
                view.push(&mut out, "logits".into(), None, ActKind::Logits, &ha.logits, b * self.config.num_classes);
                b
            }
            Head::Span { .. } => {
                view.push(&mut out, "logits".into(), None, ActKind::Logits, &ha.logits, 2 * n);
                2 * b
            }
        };
        if self.last.has_targets {
            view.push(&mut out, "losses".into(), None, ActKind::Losses, &ha.losses, rows);
        }
        out
    }

    /// Per block of every stack (encoder first), the tensors of the last forward pass that
    /// the health statistics read. Empty before the first forward pass, and for an inference
    /// model (whose blocks share their buffers).
    pub fn blocks(&self) -> Vec<BlockProbe<'_>> {
        let mut out = Vec::new();
        if self.last.b == 0 || self.last.t == 0 || self.inference {
            return out;
        }
        for (stack, acts, view) in self.stack_views() {
            stack.blocks(&view, acts, &mut out);
        }
        out
    }
}
