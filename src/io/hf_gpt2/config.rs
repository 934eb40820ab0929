//! `config.json` of a GPT-2 directory: the GPT2Config keys an export writes, the keys an import
//! reads (with GPT2Config's defaults) and their mapping to and from lmlab's [`ModelConfig`], and
//! [`check_exportable`], which refuses, naming the setting, what GPT-2 cannot express.

use crate::data::Tokenizer;
use crate::model::transformer::{ActivationKind, Arch, ModelConfig, NormKind, NormPosition, Position, ScoreKind};
use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// PyTorch's default negative slope, the only one transformers' `"leaky_relu"` has.
const TORCH_LEAKY_SLOPE: f32 = 0.01;

/// The `config.json` an export writes (transformers' GPT2Config keys).
#[derive(Serialize)]
struct ConfigOut {
    architectures: [&'static str; 1],
    model_type: &'static str,
    vocab_size: usize,
    n_positions: usize,
    /// Older transformers sized the causal mask buffer with it.
    n_ctx: usize,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
    n_inner: Option<usize>,
    activation_function: &'static str,
    layer_norm_epsilon: f32,
    resid_pdrop: f32,
    embd_pdrop: f32,
    attn_pdrop: f32,
    scale_attn_weights: bool,
    scale_attn_by_inverse_layer_idx: bool,
    reorder_and_upcast_attn: bool,
    add_cross_attention: bool,
    tie_word_embeddings: bool,
    bos_token_id: Option<u32>,
    eos_token_id: Option<u32>,
    pad_token_id: Option<u32>,
    initializer_range: f32,
    use_cache: bool,
    /// transformers ≥ 4.56 reads `dtype`, older versions `torch_dtype`.
    dtype: &'static str,
    torch_dtype: &'static str,
}

fn default_vocab() -> usize {
    50257
}
fn default_positions() -> usize {
    1024
}
fn default_embd() -> usize {
    768
}
fn default_twelve() -> usize {
    12
}
fn default_activation() -> String {
    "gelu_new".into()
}
fn default_pdrop() -> f64 {
    0.1
}
fn default_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

/// The keys of a GPT-2 `config.json` that decide the model, with GPT2Config's defaults; other
/// keys (summary_*, initializer_range, use_cache, token ids, ...) do not change the forward pass
/// and are ignored.
#[derive(Deserialize)]
struct ConfigIn {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default = "default_vocab")]
    vocab_size: usize,
    #[serde(default = "default_positions", alias = "max_position_embeddings")]
    n_positions: usize,
    #[serde(default = "default_embd", alias = "hidden_size")]
    n_embd: usize,
    #[serde(default = "default_twelve", alias = "num_hidden_layers")]
    n_layer: usize,
    #[serde(default = "default_twelve", alias = "num_attention_heads")]
    n_head: usize,
    #[serde(default)]
    n_inner: Option<usize>,
    #[serde(default = "default_activation")]
    activation_function: String,
    #[serde(default = "default_pdrop")]
    resid_pdrop: f64,
    #[serde(default = "default_pdrop")]
    embd_pdrop: f64,
    #[serde(default = "default_pdrop")]
    attn_pdrop: f64,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "yes")]
    scale_attn_weights: bool,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    add_cross_attention: bool,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
}

/// A config enum's name as written in TOML.
fn name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// transformers' name (`ACT2FN`) of an lmlab activation, or an error naming it.
fn activation_name(cfg: &ModelConfig) -> Result<&'static str> {
    Ok(match cfg.activation {
        ActivationKind::GeluTanh => "gelu_new",
        ActivationKind::Gelu => "gelu",
        ActivationKind::Relu => "relu",
        ActivationKind::Silu => "silu",
        ActivationKind::LeakyRelu if cfg.leaky_slope == TORCH_LEAKY_SLOPE => "leaky_relu",
        ActivationKind::LeakyRelu => bail!(
            "model.leaky_slope = {} cannot be expressed: transformers' \"leaky_relu\" has PyTorch's slope \
             {TORCH_LEAKY_SLOPE}",
            cfg.leaky_slope
        ),
        ActivationKind::Swiglu => {
            bail!("model.activation = \"swiglu\" cannot be expressed: GPT-2's MLP is c_proj(act(c_fc(x)))")
        }
    })
}

/// lmlab's activation for a transformers `activation_function`.
fn activation_from_name(s: &str) -> Result<ActivationKind> {
    Ok(match s {
        // gelu_new, gelu_pytorch_tanh and gelu_fast are the same tanh approximation.
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => ActivationKind::GeluTanh,
        "gelu" | "gelu_python" => ActivationKind::Gelu,
        "relu" => ActivationKind::Relu,
        "silu" | "swish" => ActivationKind::Silu,
        "leaky_relu" => ActivationKind::LeakyRelu,
        other => bail!(
            "config.json: activation_function {other:?} is not supported (lmlab has gelu_new, gelu_pytorch_tanh, \
             gelu_fast, gelu, relu, silu, swish, leaky_relu)"
        ),
    })
}

/// Checks that GPT-2 can express `cfg`; the error names the first setting it cannot.
pub fn check_exportable(cfg: &ModelConfig) -> Result<()> {
    let no = |what: String| -> Result<()> { bail!("GPT-2 cannot express {what}") };
    if cfg.arch != Arch::Decoder {
        no(format!("model.arch = {:?} (GPT-2 is a decoder)", name(&cfg.arch)))?;
    }
    if cfg.norm != NormKind::Layernorm {
        no(format!("model.norm = {:?} (GPT-2 uses layernorm)", name(&cfg.norm)))?;
    }
    if !cfg.heads_tile_embedding() {
        no(format!("{} heads of {} in a {}-wide model (pruned heads)", cfg.n_head, cfg.head_size(), cfg.n_embd))?;
    }
    if cfg.norm_position != NormPosition::Pre {
        no(format!("model.norm_position = {:?} (GPT-2 is pre-norm)", name(&cfg.norm_position)))?;
    }
    if !cfg.final_norm {
        no("model.final_norm = false (GPT-2 has ln_f)".into())?;
    }
    if cfg.position != Position::Learned {
        no(format!("model.position = {:?} (GPT-2 has learned positions)", name(&cfg.position)))?;
    }
    if cfg.scale_embeddings {
        no("model.scale_embeddings = true (GPT-2 adds the embeddings unscaled)".into())?;
    }
    if !matches!(cfg.score, ScoreKind::Scaled | ScoreKind::Unscaled) {
        no(format!("model.score = {:?} (GPT-2 has dot-product scores, scaled or not)", name(&cfg.score)))?;
    }
    if cfg.kv_heads() != cfg.n_head {
        no(format!(
            "model.n_kv_head = {} with n_head = {} (grouped/multi-query attention; GPT-2 has a key and value \
             per head)",
            cfg.kv_heads(),
            cfg.n_head
        ))?;
    }
    activation_name(cfg).map_err(|e| anyhow!("GPT-2 cannot express {e}"))?;
    Ok(())
}

pub(super) fn config_json(cfg: &ModelConfig, tok: &Tokenizer) -> Result<Vec<u8>> {
    let (bos, eos, pad) = special_ids(tok);
    let out = ConfigOut {
        architectures: ["GPT2LMHeadModel"],
        model_type: "gpt2",
        vocab_size: cfg.vocab_size,
        n_positions: cfg.block_size,
        n_ctx: cfg.block_size,
        n_embd: cfg.n_embd,
        n_layer: cfg.n_layer,
        n_head: cfg.n_head,
        n_inner: cfg.ffn_hidden,
        activation_function: activation_name(cfg)?,
        layer_norm_epsilon: cfg.norm_eps,
        resid_pdrop: cfg.dropout,
        embd_pdrop: cfg.dropout,
        attn_pdrop: cfg.attn_drop(),
        scale_attn_weights: cfg.score == ScoreKind::Scaled,
        scale_attn_by_inverse_layer_idx: false,
        reorder_and_upcast_attn: false,
        add_cross_attention: false,
        tie_word_embeddings: cfg.tie_embeddings,
        bos_token_id: bos,
        eos_token_id: eos,
        pad_token_id: pad,
        initializer_range: 0.02,
        use_cache: true,
        dtype: "float32",
        torch_dtype: "float32",
    };
    Ok(serde_json::to_vec_pretty(&out)?)
}

/// (BOS, EOS, PAD) ids of a tokenizer, as config.json states them.
fn special_ids(tok: &Tokenizer) -> (Option<u32>, Option<u32>, Option<u32>) {
    use crate::data::bpe::{BOS, EOS, PAD};
    match tok {
        Tokenizer::Char(_) | Tokenizer::Hf(_) => (None, None, None),
        Tokenizer::Bpe(_) => (Some(BOS), Some(EOS), Some(PAD)),
        Tokenizer::Gpt2(t) => (t.end_of_text(), t.end_of_text(), None),
        Tokenizer::Llama2c(_) => {
            use crate::data::llama2c_tokenizer as l;
            (Some(l::BOS), Some(l::EOS), None)
        }
    }
}

/// lmlab's model configuration of a GPT-2 `config.json`.
pub(super) fn parse_config(text: &str) -> Result<ModelConfig> {
    let c: ConfigIn = serde_json::from_str(text).context("config.json is not a valid GPT-2 config")?;
    match c.model_type.as_deref() {
        Some("gpt2") => {}
        other => bail!("config.json: model_type is {other:?}, expected \"gpt2\""),
    }
    if let Some(a) = &c.architectures {
        ensure!(
            a.iter().any(|a| a == "GPT2LMHeadModel" || a == "GPT2Model"),
            "config.json: architectures {a:?} are not supported (expected GPT2LMHeadModel or GPT2Model)"
        );
    }
    ensure!(
        !c.add_cross_attention,
        "config.json: add_cross_attention = true is not supported (lmlab's GPT-2 has no cross-attention)"
    );
    ensure!(
        !c.scale_attn_by_inverse_layer_idx,
        "config.json: scale_attn_by_inverse_layer_idx = true is not supported (lmlab scales every layer's scores alike)"
    );
    ensure!(
        c.resid_pdrop == c.embd_pdrop,
        "config.json: resid_pdrop ({}) and embd_pdrop ({}) differ; lmlab has one dropout for both",
        c.resid_pdrop,
        c.embd_pdrop
    );
    ensure!(
        c.layer_norm_epsilon.is_finite() && c.layer_norm_epsilon > 0.0,
        "config.json: layer_norm_epsilon must be positive, got {}",
        c.layer_norm_epsilon
    );
    let activation = activation_from_name(&c.activation_function)?;
    let cfg = ModelConfig {
        arch: Arch::Decoder,
        vocab_size: c.vocab_size,
        block_size: c.n_positions,
        n_layer: c.n_layer,
        n_head: c.n_head,
        n_embd: c.n_embd,
        ffn_hidden: c.n_inner,
        activation,
        leaky_slope: TORCH_LEAKY_SLOPE,
        norm: NormKind::Layernorm,
        norm_eps: c.layer_norm_epsilon as f32,
        norm_position: NormPosition::Pre,
        final_norm: true,
        position: Position::Learned,
        score: if c.scale_attn_weights { ScoreKind::Scaled } else { ScoreKind::Unscaled },
        dropout: c.resid_pdrop as f32,
        attn_dropout: Some(c.attn_pdrop as f32),
        bias: true,
        tie_embeddings: c.tie_word_embeddings,
        ..ModelConfig::default()
    };
    cfg.validate().context("config.json")?;
    Ok(cfg)
}
