//! A stack: token (and position) embedding, the blocks as a list of residual sublayers, and
//! an optional final norm. A decoder-only LM and an encoder classifier are one stack each; an
//! encoder-decoder is two, the decoder's blocks having a cross-attention sublayer.
//!
//! ```text
//! idx (B,T) ─ scale·wte[idx] (+ pos) ─ (norm_emb) ─ dropout ─ [attn ─ (cross) ─ mlp] × n_layer ─ (norm_f) ─ (B,T,C)
//! ```

use super::config::ModelConfig;
use super::layers::{
    AbsolutePosition, Attention, Ctx, Function, Mlp, Norm, NormActs, SelfPosition, Sublayer, SublayerActs,
};
use super::probe::{ActKind, ActTensor, BlockProbe, View};
use crate::kernels::dropout::{dropout_backward_at, dropout_forward_at};
use crate::model::layout::{ActLayout, ParamKind, ParamLayout};
use std::ops::Range;

/// Which stack of the model this is; it decides masks and position-bias directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StackKind {
    /// Causal self-attention only (decoder-only LM).
    Decoder,
    /// Bidirectional self-attention with a key padding mask.
    Encoder,
    /// Causal self-attention plus cross-attention to an encoder's output.
    CrossDecoder,
}

#[derive(Clone, Debug)]
pub(super) struct Stack {
    /// Parameter-name prefix: "transformer", "encoder" or "decoder".
    prefix: String,
    c: usize,
    pub wte: Range<usize>, // (V, C), possibly shared with the other stack
    /// Learned or sinusoidal positions added to the token embeddings (RoPE and the relative
    /// schemes live in the attention layers; see `layers/position.rs`).
    position: AbsolutePosition,
    emb_scale: f32,
    /// Norm of the embedding sum (`embedding_norm`, BERT's `embeddings.LayerNorm`).
    ln_emb: Option<Norm>,
    dropout: f32,
    site: u64,
    pub sublayers: Vec<Sublayer>,
    ln_f: Option<Norm>,
    /// Sublayers per block (2, or 3 with cross-attention).
    per_block: usize,
}

#[derive(Clone, Debug)]
pub(super) struct StackActs {
    emb: Range<usize>,              // (N, C)
    ln_emb: Option<NormActs>,       // (N, C) output and its statistics
    emb_drop: Option<Range<usize>>, // (N, C)
    subs: Vec<SublayerActs>,
    ln_f: Option<NormActs>,
    /// (N, C) gradient of the stack's output, written by whatever reads the output.
    pub d_out: Range<usize>,
    /// (N, C) gradient of the residual stream during backward.
    d_res: Range<usize>,
}

impl Stack {
    /// Lays out the stack's parameters under `prefix` ("transformer", "encoder", "decoder") and
    /// its fixed tables in `consts`.
    pub fn new(
        l: &mut ParamLayout,
        consts: &mut Vec<f32>,
        cfg: &ModelConfig,
        prefix: &str,
        kind: StackKind,
        shared_wte: Option<Range<usize>>,
        stack_index: u64,
    ) -> Self {
        let c = cfg.n_embd;
        let wte = shared_wte
            .unwrap_or_else(|| l.push(format!("{prefix}.wte.weight"), &[cfg.vocab_size, c], ParamKind::Embedding));
        // Parameter order: wte, wpe, ln_emb, rel_bias, then the blocks.
        let abs_position = AbsolutePosition::new(l, consts, cfg, prefix);
        let ln_emb = cfg.embedding_norm.then(|| Norm::new(l, &format!("{prefix}.ln_emb"), cfg));
        let position = SelfPosition::new(l, consts, cfg, prefix, kind == StackKind::Encoder);
        let n_layer = if kind == StackKind::CrossDecoder { cfg.dec_layers() } else { cfg.n_layer };
        let causal = kind != StackKind::Encoder;
        let per_block = if kind == StackKind::CrossDecoder { 3 } else { 2 };
        let site = 1000 * stack_index;
        let mut sublayers = Vec::with_capacity(per_block * n_layer);
        let push = |sublayers: &mut Vec<Sublayer>, norm: Norm, f: Function| {
            let k = sublayers.len() as u64;
            sublayers.push(Sublayer {
                norm,
                position: cfg.norm_position,
                f,
                site: site + 1 + 2 * k,
                dropout: cfg.dropout,
                residual: cfg.residual,
            });
        };
        for i in 0..n_layer {
            let p = format!("{prefix}.h.{i}");
            // Parameters are laid out in data-flow order: ln_1, attn, (ln_cross, cross_attn),
            // ln_2, mlp (arguments are evaluated left to right).
            let attn = |l: &mut ParamLayout| {
                Attention::new(l, &format!("{p}.attn"), cfg, false, causal, position.clone()).at_layer(i)
            };
            push(&mut sublayers, Norm::new(l, &format!("{p}.ln_1"), cfg), Function::Attention(attn(l)));
            if kind == StackKind::CrossDecoder {
                let cross = |l: &mut ParamLayout| {
                    Attention::new(l, &format!("{p}.cross_attn"), cfg, true, false, SelfPosition::None).at_layer(i)
                };
                push(&mut sublayers, Norm::new(l, &format!("{p}.ln_cross"), cfg), Function::Attention(cross(l)));
            }
            push(
                &mut sublayers,
                Norm::new(l, &format!("{p}.ln_2"), cfg),
                Function::Mlp(Mlp::new(l, &format!("{p}.mlp"), cfg)),
            );
        }
        let ln_f = cfg.final_norm.then(|| Norm::new(l, &format!("{prefix}.ln_f"), cfg));
        Stack {
            prefix: prefix.to_string(),
            c,
            wte,
            position: abs_position,
            emb_scale: if cfg.scale_embeddings { (c as f32).sqrt() } else { 1.0 },
            ln_emb,
            dropout: cfg.dropout,
            site,
            sublayers,
            ln_f,
            per_block,
        }
    }

    pub fn n_blocks(&self) -> usize {
        self.sublayers.len() / self.per_block
    }

    pub fn init_fixed(&self, params: &mut [f32]) {
        if let Some(n) = &self.ln_emb {
            n.init(params);
        }
        for s in &self.sublayers {
            s.norm.init(params);
            if let Function::Attention(a) = &s.f {
                a.init(params);
            }
        }
        if let Some(n) = &self.ln_f {
            n.init(params);
        }
    }

    /// The stack's activation ranges. For `inference`, the blocks share one set (block k's
    /// sublayer reads block k−1's output of another kind, so it never overwrites its input),
    /// and there are no dropout or gradient buffers.
    pub fn acts(&self, l: &mut ActLayout, max_b: usize, t: usize, t_enc: usize, inference: bool) -> StackActs {
        let n = max_b * t;
        let grad = |len: usize| if inference { 0 } else { len };
        let subs: Vec<SublayerActs> = if inference {
            let shared: Vec<SublayerActs> =
                self.sublayers.iter().take(self.per_block).map(|s| s.acts(l, max_b, t, t_enc, true)).collect();
            (0..self.sublayers.len()).map(|i| shared[i % self.per_block].clone()).collect()
        } else {
            self.sublayers.iter().map(|s| s.acts(l, max_b, t, t_enc, false)).collect()
        };
        StackActs {
            emb: l.alloc(n * self.c),
            ln_emb: self.ln_emb.as_ref().map(|_| Norm::acts(l, n, self.c)),
            emb_drop: l.alloc_if(self.dropout > 0.0 && !inference, n * self.c),
            subs,
            ln_f: self.ln_f.as_ref().map(|_| Norm::acts(l, n, self.c)),
            d_out: l.alloc(grad(n * self.c)),
            d_res: l.alloc(grad(n * self.c)),
        }
    }

    /// The attention layers (self and cross), in order.
    pub fn attention_layers(&self) -> impl Iterator<Item = &Attention> {
        self.sublayers.iter().filter_map(|s| match &s.f {
            Function::Attention(a) => Some(a),
            Function::Mlp(_) => None,
        })
    }

    /// Largest attention-kernel scratch of any sublayer (forward only for `inference`).
    pub fn attention_scratch(&self, max_b: usize, t: usize, t_enc: usize, inference: bool) -> usize {
        self.attention_layers().map(|a| a.scratch_needs(max_b, t, t_enc, inference)).max().unwrap_or(0)
    }

    /// Widest projection output of any sublayer (for the shared gradient buffers).
    pub fn widest(&self, cfg: &ModelConfig) -> usize {
        let h = super::layers::Heads::of(cfg);
        let mlp = self
            .sublayers
            .iter()
            .filter_map(|s| match &s.f {
                Function::Mlp(m) => Some(m.f_in()),
                Function::Attention(_) => None,
            })
            .max()
            .unwrap_or(0);
        mlp.max(h.qkv())
    }

    /// The input of sublayer `i`: the embedding output or the previous sublayer's output.
    fn input<'a>(&self, cx: &Ctx<'a>, a: &StackActs, i: usize) -> &'a [f32] {
        let len = cx.n() * self.c;
        match i {
            0 => match &a.emb_drop {
                Some(r) if cx.train && self.dropout > 0.0 => cx.r.get(r, len),
                _ => cx.r.get(&self.emb_norm_range(a), len),
            },
            i => self.sublayers[i - 1].output(cx, &a.subs[i - 1]),
        }
    }

    /// The embedding before dropout: the embedding norm's output, or the sum itself.
    fn emb_norm_range(&self, a: &StackActs) -> Range<usize> {
        match &a.ln_emb {
            Some(na) => na.out.clone(),
            None => a.emb.clone(),
        }
    }

    /// Where the stack's output lives in the activation buffer.
    pub fn output_range(&self, a: &StackActs) -> Range<usize> {
        match (&self.ln_f, &a.ln_f) {
            (Some(_), Some(na)) => na.out.clone(),
            _ => match self.sublayers.last().zip(a.subs.last()) {
                Some((s, sa)) => s.output_range(sa),
                None => self.emb_norm_range(a),
            },
        }
    }

    /// The stack's output (N, C).
    pub fn output<'a>(&self, cx: &Ctx<'a>, a: &StackActs) -> &'a [f32] {
        match (&self.ln_f, &a.ln_f) {
            (Some(_), Some(na)) => cx.r.get(&na.out, cx.n() * self.c),
            _ => self.input(cx, a, self.sublayers.len()),
        }
    }

    pub fn forward(&self, cx: &Ctx, a: &StackActs, idx: &[u32], enc: Option<&[f32]>) {
        let (n, c) = (cx.n(), self.c);
        let emb = cx.r.mut_(&a.emb, n * c);
        self.position.embed_forward(cx, emb, idx, cx.p(&self.wte), self.emb_scale * cx.input_alpha, c);
        let emb: &[f32] = match (&self.ln_emb, &a.ln_emb) {
            (Some(norm), Some(na)) => norm.forward(cx, na, emb, c),
            _ => emb,
        };
        if let (Some(r), true) = (&a.emb_drop, cx.train && self.dropout > 0.0) {
            dropout_forward_at(cx.r.mut_(r, n * c), emb, self.dropout, cx.seed(self.site), cx.dropout_first(c));
        }
        for (i, (s, sa)) in self.sublayers.iter().zip(&a.subs).enumerate() {
            let x = self.input(cx, a, i);
            s.forward(cx, sa, x, enc);
        }
        if let (Some(norm), Some(na)) = (&self.ln_f, &a.ln_f) {
            let x = self.input(cx, a, self.sublayers.len());
            norm.forward(cx, na, x, c);
        }
    }

    /// Backward from `a.d_out` (∂L/∂output, filled by the caller) to the embeddings. With
    /// cross-attention, `enc` is the encoder output and the buffer where ∂L/∂enc accumulates.
    /// `d_input` (N, C), when given, receives ∂L/∂(the token embeddings `wte[idx]`) (attribution).
    pub fn backward(
        &self,
        cx: &Ctx,
        a: &StackActs,
        idx: &[u32],
        mut enc: Option<(&[f32], &mut [f32])>,
        d_input: Option<&mut [f32]>,
    ) {
        let (n, c) = (cx.n(), self.c);
        let d_out = cx.r.get(&a.d_out, n * c);
        let d_res = cx.r.mut_(&a.d_res, n * c);
        match (&self.ln_f, &a.ln_f) {
            (Some(norm), Some(na)) => {
                d_res.fill(0.0);
                norm.backward(cx, na, d_res, d_out, self.input(cx, a, self.sublayers.len()), c);
            }
            _ => d_res.copy_from_slice(d_out),
        }
        for (i, (s, sa)) in self.sublayers.iter().zip(&a.subs).enumerate().rev() {
            let x = self.input(cx, a, i);
            let e = enc.as_mut().map(|(e, d)| (*e, &mut **d));
            s.backward(cx, sa, d_res, x, e);
        }
        let mut d_emb: &[f32] = if cx.train && self.dropout > 0.0 {
            let d = cx.r.mut_(&cx.scratch.d_branch, n * c);
            dropout_backward_at(d, d_res, self.dropout, cx.seed(self.site), cx.dropout_first(c));
            d
        } else {
            d_res
        };
        if let (Some(norm), Some(na)) = (&self.ln_emb, &a.ln_emb) {
            // The sublayers are done with the scratch: d_sum takes ∂L/∂(embedding sum), which
            // the norm's backward adds into.
            let d_sum = cx.r.mut_(&cx.scratch.d_sum, n * c);
            d_sum.fill(0.0);
            norm.backward(cx, na, d_sum, d_emb, cx.r.get(&a.emb, n * c), c);
            d_emb = d_sum;
        }
        if let Some(d) = d_input {
            // emb = scale·α·wte[idx] + positions: at the point α·wte[idx] the derivative is
            // scale·∂L/∂emb.
            d.iter_mut().zip(d_emb).for_each(|(d, g)| *d = self.emb_scale * g);
        }
        self.position.embed_backward(cx, cx.gw(&self.wte), d_emb, idx, self.emb_scale * cx.input_alpha, c);
    }
}

/// Read-only views for diagnostics (see `probe.rs`).
impl Stack {
    /// Names of sublayer `k`: (block index, norm name, function name).
    fn sublayer_names(&self, k: usize) -> (usize, &'static str, &'static str) {
        let names = match (k % self.per_block, self.per_block) {
            (0, _) => ("ln_1", "attn"),
            (1, 3) => ("ln_cross", "cross_attn"),
            _ => ("ln_2", "mlp"),
        };
        (k / self.per_block, names.0, names.1)
    }

    /// The stack's activation tensors of the last forward pass, in forward order.
    pub fn activations<'a>(&self, v: &View<'a>, a: &StackActs, out: &mut Vec<ActTensor<'a>>) {
        let (n, c, p) = (v.n(), self.c, &self.prefix);
        v.push(out, format!("{p}.emb"), None, ActKind::Embedding, &a.emb, n * c);
        if let Some(na) = &a.ln_emb {
            v.push(out, format!("{p}.ln_emb.out"), None, ActKind::NormOut, &na.out, n * c);
        }
        if let (Some(r), true) = (&a.emb_drop, v.train && self.dropout > 0.0) {
            v.push(out, format!("{p}.emb_drop"), None, ActKind::Dropout, r, n * c);
        }
        for (k, (s, sa)) in self.sublayers.iter().zip(&a.subs).enumerate() {
            let (i, norm, f) = self.sublayer_names(k);
            s.activations(v, sa, &format!("{p}.h.{i}"), i, (norm, f), out);
        }
        if let Some(na) = &a.ln_f {
            v.push(out, format!("{p}.ln_f.out"), None, ActKind::NormOut, &na.out, n * c);
        }
    }

    /// Per block: the output, the feed-forward pre-activation and the attention probabilities.
    pub fn blocks<'a>(&'a self, v: &View<'a>, a: &StackActs, out: &mut Vec<BlockProbe<'a>>) {
        let n = v.n();
        for (i, (subs, sacts)) in self.sublayers.chunks(self.per_block).zip(a.subs.chunks(self.per_block)).enumerate() {
            let (last, last_acts) = (&subs[self.per_block - 1], &sacts[self.per_block - 1]);
            let output = v.get(&last.output_range(last_acts), n * self.c);
            let (ffn_pre, ffn_in, ffn_hidden) = last.ffn_pre(v, last_acts).expect("a block ends with its MLP");
            let attn = |k: usize| subs[k].attention_probs(v, &sacts[k]).expect("attention sublayer");
            out.push(BlockProbe {
                stack: &self.prefix,
                layer: i,
                output,
                ffn_pre,
                ffn_in,
                ffn_hidden,
                self_attn: attn(0),
                cross_attn: (self.per_block == 3).then(|| attn(1)),
            });
        }
    }
}
