//! Matrix-multiplication FLOPs of a forward pass, from the model's configuration.
//!
//! FLOPs count matrix multiplications only (2 per multiply-add), the convention of Kaplan et
//! al. and of `torch.utils.flop_counter`: norms, softmax, activations and embedding lookups are
//! left out. Attention scores and weighted sums are counted densely, for every (query, key)
//! pair, as dense kernels (and PyTorch's reference models) compute them even under a causal
//! mask. `tests/eval_efficiency.rs` checks [`forward_flops`] against PyTorch's FlopCounterMode on
//! the reference model of every variant fixture, `tests/account.rs` against Hugging Face models.

use crate::model::transformer::{Arch, EncoderHead, ModelConfig, Position};

/// A forward pass's FLOPs by where they are spent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlopSplit {
    /// Every linear layer of the blocks: Q/K/V (and cross-attention's) projections, the
    /// attention output projection, the feed-forward products.
    pub linear: f64,
    /// Attention's (query, key) products: the scores and the weighted sum of values (Shaw's
    /// relative terms too), which grow with the context.
    pub attention: f64,
    /// The output layer: LM head (B·T·C·V) or classifier (B·C·K).
    pub head: f64,
}

impl FlopSplit {
    pub fn total(&self) -> f64 {
        self.linear + self.attention + self.head
    }
    fn add(self, o: FlopSplit) -> FlopSplit {
        FlopSplit { linear: self.linear + o.linear, attention: self.attention + o.attention, head: self.head + o.head }
    }
    fn times(self, k: f64) -> FlopSplit {
        FlopSplit { linear: k * self.linear, attention: k * self.attention, head: k * self.head }
    }
}

/// FLOPs of one attention layer: `b` sequences of `tq` queries over `tk` keys each; `cross`
/// projects keys and values from the other stack's `b·tk` tokens (`c_q`, `c_kv`), self-attention
/// from the queries' tokens (fused `c_attn`).
fn attention_flops(cfg: &ModelConfig, b: usize, tq: usize, tk: usize, cross: bool) -> FlopSplit {
    let (c, nh, kv, hs) = (cfg.n_embd as f64, cfg.n_head as f64, cfg.kv_heads() as f64, cfg.head_size() as f64);
    let (nq, nk) = ((b * tq) as f64, (b * tk) as f64);
    let projections =
        if cross { 2.0 * nq * c * nh * hs + 2.0 * nk * c * 2.0 * kv * hs } else { 2.0 * nq * c * (nh + 2.0 * kv) * hs };
    let pairs = b as f64 * nh * tq as f64 * tk as f64;
    // Scores (any score function: q·k, or the additive score's v·tanh(q + k)), then weights · V.
    let mut matmuls = 2.0 * pairs * hs * 2.0;
    if !cross && cfg.position == Position::Shaw {
        matmuls += 2.0 * pairs * hs * if cfg.shaw_values { 2.0 } else { 1.0 };
    }
    FlopSplit { linear: projections + 2.0 * nq * nh * hs * c, attention: matmuls, head: 0.0 }
}

fn mlp_flops(cfg: &ModelConfig, n: usize) -> FlopSplit {
    let (c, f) = (cfg.n_embd as f64, cfg.ffn() as f64);
    let f_in = if cfg.elementwise_activation().is_none() { 2.0 * f } else { f };
    FlopSplit { linear: 2.0 * n as f64 * c * f_in + 2.0 * n as f64 * f * c, ..FlopSplit::default() }
}

/// [`forward_flops`] split into linear layers, attention's (query, key) products and the head.
pub fn forward_flop_split(cfg: &ModelConfig, b: usize, t: usize, s: usize) -> FlopSplit {
    let stack = |layers: usize, t: usize, cross_s: Option<usize>| {
        let cross = cross_s.map_or(FlopSplit::default(), |s| attention_flops(cfg, b, t, s, true));
        attention_flops(cfg, b, t, t, false).add(cross).add(mlp_flops(cfg, b * t)).times(layers as f64)
    };
    let (c, v) = (cfg.n_embd as f64, cfg.vocab_size as f64);
    let lm_head = FlopSplit { head: 2.0 * (b * t) as f64 * c * v, ..FlopSplit::default() };
    match cfg.arch {
        Arch::Decoder => stack(cfg.n_layer, t, None).add(lm_head),
        Arch::Encoder => stack(cfg.n_layer, t, None).add(FlopSplit {
            head: match cfg.encoder_head {
                EncoderHead::Classifier => 2.0 * b as f64 * c * cfg.num_classes as f64,
                EncoderHead::Span => 2.0 * (b * t) as f64 * c * 2.0,
                // The transform (d, d), then the tied decoder (V, d), at every position.
                EncoderHead::Mlm => 2.0 * (b * t) as f64 * c * (c + v),
            },
            ..FlopSplit::default()
        }),
        Arch::EncoderDecoder => stack(cfg.n_layer, s, None).add(stack(cfg.dec_layers(), t, Some(s))).add(lm_head),
        // Accounting covers the Transformer family (`Transformer::buffer_sizes` refuses the rest).
        Arch::Lstm | Arch::Gru | Arch::Cnn => FlopSplit::default(),
    }
}

/// Matmul FLOPs of one forward pass over `b` sequences of `t` tokens (decoder input for
/// encoder-decoders, whose sources have `s` tokens; `s` is ignored otherwise), head included.
pub fn forward_flops(cfg: &ModelConfig, b: usize, t: usize, s: usize) -> f64 {
    forward_flop_split(cfg, b, t, s).total()
}

/// Forward FLOPs per token of a sequence of `t` tokens (for encoder-decoders, per target token
/// with a source of the same length). Training costs about three times this (backward = 2×).
pub fn flops_per_token(cfg: &ModelConfig, t: usize) -> f64 {
    forward_flops(cfg, 1, t, t) / t as f64
}
