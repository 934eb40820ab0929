//! The model configuration: plain data, one field per architectural choice.
//!
//! Every field has a default, and the defaults are GPT-2/nanoGPT's, so a config written for
//! the original GPT (`vocab_size`, `block_size`, `n_layer`, `n_head`, `n_embd`, `dropout`,
//! `bias`, `tie_embeddings`, `attention`) means the same model here.
//! The exact semantics of every choice are written down in `docs/ARCHITECTURE.md`.

use crate::kernels::activation::Activation;
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

/// Which model the blocks are assembled into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Causal language model (GPT).
    #[default]
    Decoder,
    /// Bidirectional encoder with a sequence-classification head (BERT-style).
    Encoder,
    /// Encoder plus a causal decoder with cross-attention (the original Transformer).
    EncoderDecoder,
    /// A language model without self-attention: stacked LSTM layers (`crate::model::baseline`).
    Lstm,
    /// Stacked GRU layers (`crate::model::baseline`).
    Gru,
    /// Causal dilated convolutions, WaveNet/TCN-style (`crate::model::baseline`).
    Cnn,
}

impl Arch {
    /// The baselines without self-attention (issue 19), built by `crate::model::baseline`.
    pub fn is_baseline(self) -> bool {
        matches!(self, Arch::Lstm | Arch::Gru | Arch::Cnn)
    }

    /// The language models `data.task = "lm"` trains: the decoder and the baselines.
    pub fn is_causal_lm(self) -> bool {
        self == Arch::Decoder || self.is_baseline()
    }

    /// The name the config file uses ("decoder", "lstm", ...).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Decoder => "decoder",
            Arch::Encoder => "encoder",
            Arch::EncoderDecoder => "encoder_decoder",
            Arch::Lstm => "lstm",
            Arch::Gru => "gru",
            Arch::Cnn => "cnn",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationKind {
    #[default]
    GeluTanh,
    /// Exact GELU, x·Φ(x) with the error function.
    Gelu,
    Relu,
    LeakyRelu,
    Silu,
    /// silu(x·W_gate) ⊙ (x·W_up): the feed-forward input projection is twice as wide.
    Swiglu,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    #[default]
    Layernorm,
    Rmsnorm,
    /// Statistics over all B·T rows of a channel; running statistics in evaluation.
    Batchnorm,
    /// No normalisation: every norm position passes its input through unchanged (no
    /// parameters). For measuring what the norms are for (`lmlab explain run norms`).
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormPosition {
    /// x + f(norm(x)) (GPT-2 and later).
    #[default]
    Pre,
    /// norm(x + f(x)) (the original Transformer and BERT).
    Post,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// No positional information: the model is permutation-equivariant.
    None,
    /// A trained (block_size, C) table added to the token embeddings.
    #[default]
    Learned,
    /// Vaswani et al.'s fixed sin/cos table added to the token embeddings.
    Sinusoidal,
    /// Shaw et al. (2018): trained relative representations on keys (and values), clipped at k.
    Shaw,
    /// T5: a trained bias per (bucketed relative distance, head), shared by the layers of a stack.
    T5,
    /// Rotary embeddings on queries and keys (Su et al.).
    Rope,
    /// ALiBi (Press et al.): a fixed per-head linear distance penalty on the scores.
    Alibi,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreKind {
    /// q·k/√hs.
    #[default]
    Scaled,
    /// q·k.
    Unscaled,
    /// τ·cos(q, k) with a trained temperature per head.
    Cosine,
    /// vᵀ·tanh(q + k) (Bahdanau).
    Additive,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The first position's output (a `[CLS]` token the data pipeline puts first).
    #[default]
    Cls,
    /// The mean over the non-padding positions.
    Mean,
}

/// What an encoder's head predicts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderHead {
    /// A class per sequence: pool, then `classifier` (K, C).
    #[default]
    Classifier,
    /// Extractive QA: a start and an end logit per position, `qa_outputs` (2, C).
    Span,
    /// A masked LM: BERT's prediction head (dense, activation, norm, then the token embedding
    /// transposed plus a bias) gives every position a distribution over the vocabulary.
    Mlm,
}

impl EncoderHead {
    fn is_classifier(&self) -> bool {
        *self == EncoderHead::Classifier
    }
}

/// The attention kernel used in training and full forward passes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKind {
    /// Scores and probabilities stored as (B, NH, T, T): fastest at short contexts.
    #[default]
    Dense,
    /// Tiled online softmax ([`crate::kernels::flash_attention`]): O(T) memory per head.
    /// Only for plain causal scaled-dot-product multi-head attention.
    Flash,
}

/// Model hyperparameters. Sizes use nanoGPT's names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Set from the tokenizer when training (0 in a run config means "not yet known").
    pub vocab_size: usize,
    /// Maximum context length (rows of a learned position table; longest sequence trained).
    pub block_size: usize,
    /// Layers of the (encoder) stack.
    pub n_layer: usize,
    /// Decoder layers of an encoder-decoder model (default: `n_layer`).
    pub n_dec_layer: Option<usize>,
    pub n_head: usize,
    /// Key/value heads: `n_head` (multi-head), 1 (multi-query) or a divisor (grouped-query).
    pub n_kv_head: Option<usize>,
    pub n_embd: usize,
    /// Width of each attention head (default n_embd / n_head). Structured pruning removes whole
    /// heads and keeps their width, so n_head · head_size may be below n_embd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_size: Option<usize>,
    /// Feed-forward width F (default 4·n_embd).
    pub ffn_hidden: Option<usize>,
    pub activation: ActivationKind,
    pub leaky_slope: f32,
    pub norm: NormKind,
    pub norm_eps: f32,
    pub norm_position: NormPosition,
    /// A norm after the last block of each stack.
    pub final_norm: bool,
    /// Residual connections around every sublayer (x + f(...)). `false` gives a plain stack,
    /// each sublayer's output only f(...) (post-norm: norm(f(x))), to measure what the skip
    /// connections do for gradients (`lmlab explain run gradients`).
    pub residual: bool,
    pub position: Position,
    /// Multiply token embeddings by √n_embd (Vaswani et al.).
    pub scale_embeddings: bool,
    /// A norm (`{stack}.ln_emb`) on the embedding sum, before embedding dropout (BERT's
    /// `embeddings.LayerNorm`).
    pub embedding_norm: bool,
    /// Shaw et al.'s clipping distance k.
    pub shaw_k: usize,
    /// Relative representations on values as well as keys.
    pub shaw_values: bool,
    pub t5_buckets: usize,
    pub t5_max_distance: usize,
    pub rope_theta: f32,
    pub score: ScoreKind,
    /// Dropout on embeddings and residual branches.
    pub dropout: f32,
    /// Dropout on attention probabilities (default: `dropout`).
    pub attn_dropout: Option<f32>,
    /// Biases in linear layers and in LayerNorm/BatchNorm.
    pub bias: bool,
    /// The output layer is the (decoder's) token embedding.
    pub tie_embeddings: bool,
    /// Encoder-decoder: one token embedding for both stacks (a joint vocabulary).
    pub share_embeddings: bool,
    /// Encoder: number of classes of the classification head.
    pub num_classes: usize,
    pub pooling: Pooling,
    pub attention: AttentionKind,
    /// Encoder: the classifier (default) or extractive QA's span head (`data.task = "qa"` sets
    /// it). Left out of configs that keep the default, so they read as before.
    #[serde(skip_serializing_if = "EncoderHead::is_classifier")]
    pub encoder_head: EncoderHead,
    /// LSTM / GRU: width H of the recurrent layers (default `n_embd`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rnn_hidden: Option<usize>,
    /// CNN: taps K of each causal convolution (default 2, WaveNet's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_size: Option<usize>,
    /// CNN: the dilation of each of the `n_layer` layers (default 1, 2, 4, …, 2^(n_layer−1)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dilations: Option<Vec<usize>>,
}

impl Default for ModelConfig {
    /// nanoGPT's small CPU model (4 layers, 4 heads, 128 wide, 64 tokens) with GPT-2's choices.
    fn default() -> Self {
        ModelConfig {
            arch: Arch::Decoder,
            vocab_size: 0,
            block_size: 64,
            n_layer: 4,
            n_dec_layer: None,
            n_head: 4,
            n_kv_head: None,
            n_embd: 128,
            head_size: None,
            ffn_hidden: None,
            activation: ActivationKind::GeluTanh,
            leaky_slope: 0.01,
            norm: NormKind::Layernorm,
            norm_eps: 1e-5,
            norm_position: NormPosition::Pre,
            final_norm: true,
            residual: true,
            position: Position::Learned,
            scale_embeddings: false,
            embedding_norm: false,
            shaw_k: 8,
            shaw_values: true,
            t5_buckets: 32,
            t5_max_distance: 128,
            rope_theta: 10000.0,
            score: ScoreKind::Scaled,
            dropout: 0.0,
            attn_dropout: None,
            bias: true,
            tie_embeddings: true,
            share_embeddings: true,
            num_classes: 2,
            pooling: Pooling::Cls,
            attention: AttentionKind::Dense,
            encoder_head: EncoderHead::Classifier,
            rnn_hidden: None,
            kernel_size: None,
            dilations: None,
        }
    }
}

impl ModelConfig {
    pub fn head_size(&self) -> usize {
        self.head_size.unwrap_or(self.n_embd / self.n_head)
    }
    /// Whether the heads tile the embedding exactly (n_head · head_size = n_embd), as the
    /// export formats (llama2.c, GGUF, Hugging Face GPT-2) require.
    pub fn heads_tile_embedding(&self) -> bool {
        self.n_head * self.head_size() == self.n_embd
    }
    pub fn kv_heads(&self) -> usize {
        self.n_kv_head.unwrap_or(self.n_head)
    }
    pub fn ffn(&self) -> usize {
        self.ffn_hidden.unwrap_or(4 * self.n_embd)
    }
    pub fn dec_layers(&self) -> usize {
        self.n_dec_layer.unwrap_or(self.n_layer)
    }
    pub fn attn_drop(&self) -> f32 {
        self.attn_dropout.unwrap_or(self.dropout)
    }

    /// The element-wise activation (None for SwiGLU, which is gated).
    pub fn elementwise_activation(&self) -> Option<Activation> {
        Some(match self.activation {
            ActivationKind::GeluTanh => Activation::GeluTanh,
            ActivationKind::Gelu => Activation::GeluErf,
            ActivationKind::Relu => Activation::Relu,
            ActivationKind::LeakyRelu => Activation::LeakyRelu(self.leaky_slope),
            ActivationKind::Silu => Activation::Silu,
            ActivationKind::Swiglu => return None,
        })
    }

    /// True when self-attention is GPT-2's plain causal scaled-dot-product multi-head
    /// attention, which has dedicated fast kernels.
    pub fn plain_attention(&self) -> bool {
        self.score == ScoreKind::Scaled
            && self.kv_heads() == self.n_head
            && matches!(self.position, Position::None | Position::Learned | Position::Sinusoidal | Position::Rope)
    }

    /// LSTM / GRU: the recurrent width H.
    pub fn hidden(&self) -> usize {
        self.rnn_hidden.unwrap_or(self.n_embd)
    }

    /// CNN: taps per convolution.
    pub fn taps(&self) -> usize {
        self.kernel_size.unwrap_or(2)
    }

    /// CNN: the dilation of layer `i`.
    pub fn dilation(&self, i: usize) -> usize {
        self.dilations.as_ref().map_or(1 << i.min(30), |d| d[i])
    }

    /// CNN: how many tokens the last position's output depends on, 1 + Σ (K − 1)·dᵢ.
    pub fn receptive_field(&self) -> usize {
        1 + (0..self.n_layer).map(|i| (self.taps() - 1) * self.dilation(i)).sum::<usize>()
    }

    pub fn validate(&self) -> Result<()> {
        if self.arch.is_baseline() {
            return self.validate_baseline();
        }
        for (key, set) in [
            ("rnn_hidden", self.rnn_hidden.is_some()),
            ("kernel_size", self.kernel_size.is_some()),
            ("dilations", self.dilations.is_some()),
        ] {
            ensure!(
                !set,
                "model.{key} applies to the baselines without attention (model.arch = \"lstm\", \"gru\" or \"cnn\"), \
                 not to model.arch = \"{}\"",
                self.arch.name()
            );
        }
        ensure!(self.vocab_size > 0, "model.vocab_size must be positive");
        ensure!(self.block_size > 0, "model.block_size must be positive");
        ensure!(self.n_layer > 0, "model.n_layer must be positive");
        ensure!(self.dec_layers() > 0, "model.n_dec_layer must be positive");
        ensure!(self.n_head > 0, "model.n_head must be positive");
        match self.head_size {
            None => ensure!(
                self.n_embd > 0 && self.n_embd.is_multiple_of(self.n_head),
                "model.n_embd ({}) must be a positive multiple of model.n_head ({})",
                self.n_embd,
                self.n_head
            ),
            Some(hs) => ensure!(self.n_embd > 0 && hs > 0, "model.head_size and model.n_embd must be positive"),
        }
        let kv = self.kv_heads();
        ensure!(
            kv > 0 && self.n_head.is_multiple_of(kv),
            "model.n_kv_head ({kv}) must divide model.n_head ({})",
            self.n_head
        );
        ensure!(self.ffn() > 0, "model.ffn_hidden must be positive");
        ensure!((0.0..1.0).contains(&self.dropout), "model.dropout must be in [0, 1), got {}", self.dropout);
        ensure!(
            (0.0..1.0).contains(&self.attn_drop()),
            "model.attn_dropout must be in [0, 1), got {}",
            self.attn_drop()
        );
        ensure!(self.norm_eps > 0.0, "model.norm_eps must be positive");
        if self.position == Position::Rope {
            ensure!(self.head_size().is_multiple_of(2), "position = \"rope\" needs an even head size");
            ensure!(self.rope_theta > 1.0, "model.rope_theta must be > 1");
        }
        if self.position == Position::Sinusoidal {
            ensure!(self.n_embd.is_multiple_of(2), "position = \"sinusoidal\" needs an even n_embd");
        }
        if self.position == Position::Shaw {
            ensure!(
                matches!(self.score, ScoreKind::Scaled | ScoreKind::Unscaled),
                "position = \"shaw\" adds q·a_ij to dot-product scores: use score = \"scaled\" or \"unscaled\""
            );
            ensure!(self.shaw_k > 0, "model.shaw_k must be positive");
        }
        if self.position == Position::T5 {
            ensure!(self.t5_buckets >= 2, "model.t5_buckets must be at least 2");
            ensure!(self.t5_max_distance >= 1, "model.t5_max_distance must be positive");
        }
        if self.arch == Arch::Encoder && self.encoder_head == EncoderHead::Classifier {
            ensure!(self.num_classes >= 2, "model.num_classes must be at least 2");
        }
        if self.attention == AttentionKind::Flash {
            ensure!(
                self.arch == Arch::Decoder && self.plain_attention(),
                "model.attention = \"flash\" supports only plain causal scaled-dot-product multi-head attention \
                 (decoder; position none, learned, sinusoidal or rope)"
            );
            ensure!(
                self.attn_drop() == 0.0,
                "model.attention = \"flash\" does not support attention dropout: set it to 0"
            );
        }
        Ok(())
    }

    /// The checks of an LSTM, GRU or CNN language model: its own keys, and every Transformer-only
    /// key left at its default (a set one would be silently ignored otherwise).
    fn validate_baseline(&self) -> Result<()> {
        let arch = self.arch.name();
        ensure!(self.vocab_size > 0, "model.vocab_size must be positive");
        ensure!(self.block_size > 0, "model.block_size must be positive");
        ensure!(self.n_layer > 0, "model.n_layer must be positive");
        ensure!(self.n_embd > 0, "model.n_embd must be positive");
        ensure!((0.0..1.0).contains(&self.dropout), "model.dropout must be in [0, 1), got {}", self.dropout);
        ensure!(self.norm_eps > 0.0, "model.norm_eps must be positive");
        let recurrent = matches!(self.arch, Arch::Lstm | Arch::Gru);
        if recurrent {
            ensure!(self.hidden() > 0, "model.rnn_hidden must be positive");
            ensure!(
                !self.tie_embeddings || self.hidden() == self.n_embd,
                "model.tie_embeddings = true needs model.rnn_hidden = model.n_embd ({}), got {}: the output layer \
                 would read the {}-wide hidden state with the {}-wide embedding table; set tie_embeddings = false \
                 or rnn_hidden = n_embd",
                self.n_embd,
                self.hidden(),
                self.hidden(),
                self.n_embd
            );
        } else {
            ensure!(self.taps() >= 2, "model.kernel_size must be at least 2, got {}", self.taps());
            if let Some(d) = &self.dilations {
                ensure!(
                    d.len() == self.n_layer,
                    "model.dilations has {} entries but model.n_layer = {}: give one dilation per layer",
                    d.len(),
                    self.n_layer
                );
                ensure!(d.iter().all(|&x| x >= 1), "model.dilations must all be at least 1, got {d:?}");
            }
            ensure!(
                self.activation != ActivationKind::Swiglu,
                "model.activation = \"swiglu\" is a gated feed-forward; model.arch = \"cnn\" takes an element-wise \
                 activation (gelu_tanh, gelu, relu, leaky_relu, silu)"
            );
        }
        let d = ModelConfig::default();
        let only = |key: &str, set: bool| -> Result<()> {
            ensure!(!set, "model.{key} does not apply to model.arch = \"{arch}\"; remove it");
            Ok(())
        };
        only("rnn_hidden", !recurrent && self.rnn_hidden.is_some())?;
        only("kernel_size", recurrent && self.kernel_size.is_some())?;
        only("dilations", recurrent && self.dilations.is_some())?;
        only("activation", recurrent && self.activation != d.activation)?;
        only("leaky_slope", recurrent && self.leaky_slope != d.leaky_slope)?;
        // Transformer-only choices.
        only("n_head", self.n_head != d.n_head)?;
        only("n_kv_head", self.n_kv_head.is_some())?;
        only("head_size", self.head_size.is_some())?;
        only("n_dec_layer", self.n_dec_layer.is_some())?;
        only("ffn_hidden", self.ffn_hidden.is_some())?;
        only("norm_position", self.norm_position != d.norm_position)?;
        only("residual", !self.residual)?;
        only("position", self.position != d.position)?;
        only("scale_embeddings", self.scale_embeddings)?;
        only("embedding_norm", self.embedding_norm)?;
        only("shaw_k", self.shaw_k != d.shaw_k)?;
        only("shaw_values", self.shaw_values != d.shaw_values)?;
        only("t5_buckets", self.t5_buckets != d.t5_buckets)?;
        only("t5_max_distance", self.t5_max_distance != d.t5_max_distance)?;
        only("rope_theta", self.rope_theta != d.rope_theta)?;
        only("score", self.score != d.score)?;
        only("attn_dropout", self.attn_dropout.is_some())?;
        only("share_embeddings", self.share_embeddings != d.share_embeddings)?;
        only("num_classes", self.num_classes != d.num_classes)?;
        only("pooling", self.pooling != d.pooling)?;
        only("attention", self.attention != d.attention)?;
        ensure!(
            self.norm == NormKind::Layernorm,
            "model.arch = \"{arch}\" normalises with LayerNorm only; remove model.norm"
        );
        ensure!(
            self.bias,
            "model.arch = \"{arch}\" always has biases (as torch.nn.LSTM/GRU/Conv1d); remove model.bias = false"
        );
        Ok(())
    }
}
