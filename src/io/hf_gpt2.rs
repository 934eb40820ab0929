//! Hugging Face GPT-2 directories in and out: `config.json`, `model.safetensors` and the
//! tokenizer files, laid out as `transformers.GPT2LMHeadModel.save_pretrained` writes them, so
//! that `GPT2LMHeadModel.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)` load an
//! exported lmlab model unchanged (checked with transformers by `scripts/check_hf_gpt2.py`).
//!
//! ```text
//! dir/
//!   config.json            model_type gpt2, GPT2LMHeadModel, sizes, activation, epsilon, dropout,
//!                          tie_word_embeddings, bos/eos ids of the tokenizer, dtype float32
//!   model.safetensors      f32 tensors under GPT2LMHeadModel's names (metadata format = pt)
//!   tokenizer.json         the tokenizers document (all tokenizer kinds)
//!   tokenizer_config.json  the transformers class and special tokens
//!   vocab.json, merges.txt GPT-2 tokenizers only (the BPE vocabulary and merges)
//! ```
//!
//! Tensor names are lmlab's own (nanoGPT kept GPT-2's): `transformer.wte.weight`,
//! `transformer.wpe.weight`, `transformer.h.{i}.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc,
//! mlp.c_proj}.{weight, bias}`, `transformer.ln_f.{weight, bias}`, and `lm_head.weight` only when
//! the embeddings are untied. GPT-2's `Conv1D` stores its weight as (in, out), so the four
//! projection matrices are transposed relative to lmlab's (out, in); `c_attn`'s output columns
//! are `[q | k | v]` with the heads contiguous in both. Import also accepts the names without
//! the `transformer.` prefix (the original OpenAI conversion on the Hub) and skips the causal
//! mask buffers `h.{i}.attn.bias` / `attn.masked_bias` that older transformers saved.
//!
//! Export refuses, naming the setting, every lmlab choice GPT-2 cannot express: another arch,
//! norm, norm position, position scheme, score function, key/value head count, SwiGLU, a leaky
//! ReLU slope other than PyTorch's 0.01, scaled embeddings, no final norm. `bias = false` is
//! written as zero biases (GPT-2 always has biases), so importing such a file gives `bias = true`
//! with zero biases: the same function. `ffn_hidden` is `n_inner`, the `unscaled` score is
//! `scale_attn_weights = false`.
//!
//! Lossless: `export(import(dir))` writes the same tensors bit for bit, and
//! `import(export(model))` has the same logits and every parameter the two have in common.

use super::atomic::{check_replaceable, write_dir_atomic};
use super::tensors::{to_safetensors, TensorFile};
use crate::data::bpe::BpeTokenizer;
use crate::data::gpt2::{Gpt2Tokenizer, END_OF_TEXT_STR};
use crate::data::tokenizer::is_lmlab_bpe;
use crate::data::{CharTokenizer, Tokenizer};
use crate::model::transformer::{
    ActivationKind, Arch, ModelConfig, NormKind, NormPosition, Position, ScoreKind, Transformer,
};
use anyhow::{anyhow, bail, ensure, Context, Result};
use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// The files an export writes (GPT-2 tokenizers add vocab.json and merges.txt).
pub const FILES: [&str; 6] =
    ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"];

/// Files transformers itself puts in such a directory; an export may replace a directory
/// that holds only these and [`FILES`].
const HF_SIDE_FILES: [&str; 3] = ["generation_config.json", "special_tokens_map.json", "added_tokens.json"];

/// Most values one activation buffer of an imported model may hold (16 GiB of f32).
const MAX_ACTIVATION_ROWS: usize = 1 << 32;

/// PyTorch's default negative slope, the only one transformers' `"leaky_relu"` has.
const TORCH_LEAKY_SLOPE: f32 = 0.01;

/// One tensor of a GPT-2 file.
#[derive(Clone, Debug, PartialEq)]
pub struct HfTensor {
    /// Name in GPT2LMHeadModel's state dict (with the `transformer.` prefix); also the lmlab
    /// parameter it holds.
    pub name: String,
    /// Shape in the file: Conv1D weights are (in, out).
    pub shape: Vec<usize>,
    /// A Conv1D weight: the file holds the transpose of lmlab's (out, in) matrix.
    pub transposed: bool,
    /// A bias (zero in the file when the lmlab model has none).
    pub bias: bool,
}

/// The tensors a GPT-2 model of `cfg` has, in a fixed order (None when a size overflows).
pub fn hf_tensors(cfg: &ModelConfig) -> Option<Vec<HfTensor>> {
    let (v, c, f, t) = (cfg.vocab_size, cfg.n_embd, cfg.ffn(), cfg.block_size);
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, transposed: bool| {
        let bias = name.ends_with(".bias");
        out.push(HfTensor { name, shape, transposed, bias });
    };
    push("transformer.wte.weight".into(), vec![v, c], false);
    push("transformer.wpe.weight".into(), vec![t, c], false);
    let c3 = c.checked_mul(3)?;
    for i in 0..cfg.n_layer {
        let p = format!("transformer.h.{i}");
        push(format!("{p}.ln_1.weight"), vec![c], false);
        push(format!("{p}.ln_1.bias"), vec![c], false);
        push(format!("{p}.attn.c_attn.weight"), vec![c, c3], true);
        push(format!("{p}.attn.c_attn.bias"), vec![c3], false);
        push(format!("{p}.attn.c_proj.weight"), vec![c, c], true);
        push(format!("{p}.attn.c_proj.bias"), vec![c], false);
        push(format!("{p}.ln_2.weight"), vec![c], false);
        push(format!("{p}.ln_2.bias"), vec![c], false);
        push(format!("{p}.mlp.c_fc.weight"), vec![c, f], true);
        push(format!("{p}.mlp.c_fc.bias"), vec![f], false);
        push(format!("{p}.mlp.c_proj.weight"), vec![f, c], true);
        push(format!("{p}.mlp.c_proj.bias"), vec![c], false);
    }
    push("transformer.ln_f.weight".into(), vec![c], false);
    push("transformer.ln_f.bias".into(), vec![c], false);
    if !cfg.tie_embeddings {
        push("lm_head.weight".into(), vec![v, c], false);
    }
    // Sizes must be representable (the file's sizes bound them on import).
    for t in &out {
        t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// config.json

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

fn config_json(cfg: &ModelConfig, tok: &Tokenizer) -> Result<Vec<u8>> {
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
        Tokenizer::Char(_) => (None, None, None),
        Tokenizer::Bpe(_) => (Some(BOS), Some(EOS), Some(PAD)),
        Tokenizer::Gpt2(t) => (t.end_of_text(), t.end_of_text(), None),
    }
}

/// lmlab's model configuration of a GPT-2 `config.json`.
fn parse_config(text: &str) -> Result<ModelConfig> {
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

// ---------------------------------------------------------------------------------------------
// Export

/// The files of the HF directory for `model` and `tokenizer`, in memory (name, bytes).
pub fn export_files(model: &Transformer, tokenizer: &Tokenizer) -> Result<Vec<(String, Vec<u8>)>> {
    let cfg = &model.config;
    check_exportable(cfg)?;
    ensure!(
        tokenizer.vocab_size() == cfg.vocab_size,
        "the tokenizer has {} tokens but the model's vocab_size is {}",
        tokenizer.vocab_size(),
        cfg.vocab_size
    );
    if let Some(i) = model.params.iter().position(|x| !x.is_finite()) {
        let t = model.layout.tensors.iter().find(|t| t.range().contains(&i)).map_or("?", |t| t.name.as_str());
        bail!("weight {t} holds NaN or infinity");
    }
    let tensors = hf_tensors(cfg).context("the model's sizes overflow")?;
    let mut used = BTreeSet::new();
    let mut data: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::with_capacity(tensors.len());
    for t in &tensors {
        let values = match model.layout.get(&t.name) {
            Some(p) => {
                used.insert(p.name.as_str());
                let src = &model.params[p.range()];
                if t.transposed {
                    // lmlab (out, in) → Conv1D (in, out).
                    transpose(src, p.shape[0], p.shape[1])
                } else {
                    src.to_vec()
                }
            }
            // bias = false: GPT-2 always has biases; zeros compute the same function.
            None if t.bias && !cfg.bias => vec![0.0; t.shape.iter().product()],
            None => bail!("the model has no parameter {} (unexpected layout)", t.name),
        };
        data.push((t.name.clone(), t.shape.clone(), values));
    }
    // A parameter GPT-2 has no place for (a choice added to lmlab later) must not be dropped.
    if let Some(extra) = model.layout.tensors.iter().find(|p| !used.contains(p.name.as_str())) {
        bail!("GPT-2 cannot express the model: its parameter {} has no GPT-2 counterpart", extra.name);
    }
    let views: Vec<(String, Vec<usize>, &[f32])> =
        data.iter().map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice())).collect();
    // One metadata key, so the bytes are deterministic; transformers checks format = pt.
    let st = to_safetensors(&views, HashMap::from([("format".to_string(), "pt".to_string())]))?;
    let mut files = vec![("config.json".to_string(), config_json(cfg, tokenizer)?), ("model.safetensors".into(), st)];
    files.extend(tokenizer_files(tokenizer, cfg.block_size)?);
    Ok(files)
}

/// Writes the HF directory `dir` atomically (see [`super::atomic`]). An existing `dir` is
/// replaced only if it holds nothing but files such an export (or transformers) writes.
pub fn export(model: &Transformer, tokenizer: &Tokenizer, dir: &Path) -> Result<()> {
    let files = export_files(model, tokenizer)?;
    let allowed: Vec<&str> = FILES.iter().chain(HF_SIDE_FILES.iter()).copied().collect();
    check_replaceable(dir, &allowed)?;
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    write_dir_atomic(dir, &refs).with_context(|| format!("cannot write {}", dir.display()))
}

/// m (rows, cols) row-major → (cols, rows).
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = m[r * cols + c];
        }
    }
    out
}

/// The tokenizer files for transformers' `AutoTokenizer`. Every kind writes its tokenizers
/// document as `tokenizer.json`; `tokenizer_config.json` names the class and special tokens and
/// sets `split_special_tokens` (lmlab encodes a literal special token as text) and no clean-up
/// of spaces (lmlab's decode returns the text exactly).
fn tokenizer_files(tok: &Tokenizer, max_len: usize) -> Result<Vec<(String, Vec<u8>)>> {
    use serde_json::json;
    let mut files = Vec::new();
    let config = match tok {
        Tokenizer::Char(t) => {
            files.push(("tokenizer.json".to_string(), char_tokenizer_json(t)?.into_bytes()));
            json!({
                "tokenizer_class": "PreTrainedTokenizerFast",
                "clean_up_tokenization_spaces": false,
                "model_max_length": max_len,
            })
        }
        Tokenizer::Bpe(t) => {
            use crate::data::bpe::SPECIAL_TOKENS as S;
            files.push(("tokenizer.json".to_string(), t.to_json()?.into_bytes()));
            json!({
                "tokenizer_class": "PreTrainedTokenizerFast",
                "pad_token": S[0], "bos_token": S[1], "eos_token": S[2], "unk_token": S[3],
                "split_special_tokens": true,
                "clean_up_tokenization_spaces": false,
                "model_max_length": max_len,
            })
        }
        Tokenizer::Gpt2(t) => {
            let doc = t.to_json()?;
            let (vocab, merges) = vocab_and_merges(&doc)?;
            files.push(("tokenizer.json".to_string(), doc.into_bytes()));
            files.push(("vocab.json".to_string(), vocab.into_bytes()));
            files.push(("merges.txt".to_string(), merges.into_bytes()));
            let eot = t.end_of_text().map(|_| END_OF_TEXT_STR);
            json!({
                "tokenizer_class": "GPT2Tokenizer",
                "bos_token": eot, "eos_token": eot, "unk_token": eot,
                "add_prefix_space": false,
                "split_special_tokens": true,
                "clean_up_tokenization_spaces": false,
                "errors": "replace",
                "model_max_length": max_len,
            })
        }
    };
    files.push(("tokenizer_config.json".to_string(), serde_json::to_vec_pretty(&config)?));
    Ok(files)
}

/// HF's `vocab.json` (token → id, by id) and `merges.txt` of a BPE tokenizers document.
fn vocab_and_merges(doc: &str) -> Result<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(doc)?;
    let vocab = v["model"]["vocab"].as_object().context("the tokenizer document has no BPE vocabulary")?;
    let mut pairs: Vec<(&str, u64)> = Vec::with_capacity(vocab.len());
    for (tok, id) in vocab {
        pairs.push((tok, id.as_u64().with_context(|| format!("vocabulary entry {tok:?} has no integer id"))?));
    }
    pairs.sort_by_key(|&(_, id)| id);
    let entries: Vec<String> =
        pairs.iter().map(|(t, id)| Ok(format!("{}: {id}", serde_json::to_string(t)?))).collect::<Result<_>>()?;
    let vocab_json = format!("{{{}}}", entries.join(", "));
    let mut merges = String::from("#version: 0.2\n");
    for m in v["model"]["merges"].as_array().context("the tokenizer document has no BPE merges")? {
        // tokenizers ≥ 0.20 writes [a, b]; older versions "a b".
        let (a, b) = match m {
            serde_json::Value::String(s) => s.split_once(' ').context("a merge has no space")?,
            serde_json::Value::Array(p) if p.len() == 2 => (
                p[0].as_str().context("a merge part is not a string")?,
                p[1].as_str().context("a merge part is not a string")?,
            ),
            other => bail!("unexpected merge {other}"),
        };
        ensure!(!a.contains(' ') && !b.contains(' '), "merge ({a:?}, {b:?}) has a space, which merges.txt cannot hold");
        merges.push_str(a);
        merges.push(' ');
        merges.push_str(b);
        merges.push('\n');
    }
    Ok((vocab_json, merges))
}

/// A tokenizers document equivalent to a character tokenizer: a BPE model over the single
/// characters with no merges, no normalizer and no pre-tokenizer (so every character of the
/// input is one symbol and maps to its id), and the Fuse decoder (tokens concatenated).
pub fn char_tokenizer_json(tok: &CharTokenizer) -> Result<String> {
    use tokenizers::decoders::fuse::Fuse;
    use tokenizers::models::bpe::{Vocab, BPE};
    let vocab: Vocab = tok.chars().iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
    let model = BPE::builder().vocab_and_merges(vocab, vec![]).build().map_err(|e| anyhow!("{e}"))?;
    let mut t = tokenizers::Tokenizer::new(model);
    t.with_decoder(Some(Fuse::new()));
    t.to_string(true).map_err(|e| anyhow!("cannot serialize the character tokenizer: {e}"))
}

/// The characters of a document that [`char_tokenizer_json`] could have written (ordered by id),
/// or None.
fn char_vocab(doc: &serde_json::Value) -> Option<Vec<char>> {
    let null = |k: &str| doc.get(k).is_none_or(|v| v.is_null());
    let model = doc.get("model")?;
    let no_merges = model.get("merges").and_then(|m| m.as_array()).is_some_and(|m| m.is_empty());
    let no_added = doc.get("added_tokens").is_none_or(|a| a.as_array().is_some_and(|a| a.is_empty()));
    if model.get("type")?.as_str()? != "BPE"
        || !no_merges
        || !no_added
        || !null("normalizer")
        || !null("pre_tokenizer")
        || doc.get("decoder")?.get("type")?.as_str()? != "Fuse"
    {
        return None;
    }
    let vocab = model.get("vocab")?.as_object()?;
    let mut chars = vec![None; vocab.len()];
    for (tok, id) in vocab {
        let mut it = tok.chars();
        let (c, None) = (it.next()?, it.next()) else { return None };
        let slot = chars.get_mut(usize::try_from(id.as_u64()?).ok()?)?;
        if slot.replace(c).is_some() {
            return None;
        }
    }
    chars.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// Import

/// Reads an HF GPT-2 directory: `config.json`, `model.safetensors` and the tokenizer
/// (`tokenizer.json`, or `vocab.json` + `merges.txt`). `max_batch` sizes the model's
/// activation buffers. Errors name the file and the key or tensor at fault.
pub fn import(dir: &Path, max_batch: usize) -> Result<(Transformer, Tokenizer)> {
    ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("cannot read {}", cfg_path.display()))?;
    let cfg = parse_config(&text).with_context(|| format!("in {}", cfg_path.display()))?;

    let st_path = dir.join("model.safetensors");
    let bytes = std::fs::read(&st_path).with_context(|| format!("cannot read {}", st_path.display()))?;
    let tf = TensorFile::parse(&bytes, "model.safetensors")?;
    let found = match_tensors(&cfg, &tf).with_context(|| format!("in {}", st_path.display()))?;

    let tokenizer = import_tokenizer(dir)?;
    ensure!(
        tokenizer.vocab_size() == cfg.vocab_size,
        "the tokenizer has {} tokens but config.json has vocab_size {}",
        tokenizer.vocab_size(),
        cfg.vocab_size
    );

    // Every tensor is present with its shape, so the file's size bounds the parameters; the
    // activation buffers (max_batch · n_positions · the widest row: logits, MLP, qkv) are not
    // bounded by it.
    let widest = cfg.vocab_size.max(cfg.ffn()).max(cfg.n_embd.saturating_mul(3));
    let acts = max_batch.checked_mul(cfg.block_size).and_then(|n| n.checked_mul(widest));
    ensure!(
        acts.is_some_and(|n| n <= MAX_ACTIVATION_ROWS),
        "config.json: n_positions {} × {widest} (the widest of vocab_size, n_inner, 3·n_embd) × batch {max_batch} \
         is too large for lmlab's preallocated activations",
        cfg.block_size
    );
    let mut model = Transformer::new(cfg, max_batch)?;
    for (t, file_name) in &found {
        let p = model.layout.get(&t.name).with_context(|| format!("the model has no parameter {}", t.name))?.clone();
        let view = tf.st.tensor(file_name).map_err(|e| anyhow!("tensor {file_name}: {e}"))?;
        let values: Vec<f32> =
            view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let dst = &mut model.params[p.range()];
        if t.transposed {
            // Conv1D (in, out) → lmlab (out, in).
            dst.copy_from_slice(&transpose(&values, t.shape[0], t.shape[1]));
        } else {
            dst.copy_from_slice(&values);
        }
        if let Some(x) = dst.iter().find(|x| !x.is_finite()) {
            bail!("{}: tensor {file_name} holds {x}", st_path.display());
        }
    }
    Ok((model, tokenizer))
}

/// Finds every tensor of `cfg` in the file (with or without the `transformer.` prefix), checking
/// dtype and shape, and refuses tensors GPT2LMHeadModel does not have. Returns each expected
/// tensor with its name in the file.
fn match_tensors(cfg: &ModelConfig, tf: &TensorFile) -> Result<Vec<(HfTensor, String)>> {
    let names: BTreeSet<&str> = tf.st.names().into_iter().map(String::as_str).collect();
    // Each layer has 12 tensors; a far larger n_layer would only build a huge list of missing ones.
    ensure!(
        cfg.n_layer <= names.len(),
        "config.json has n_layer {} but the file holds only {} tensors",
        cfg.n_layer,
        names.len()
    );
    let tensors = hf_tensors(cfg).context("config.json: the model's sizes overflow")?;
    let mut out = Vec::with_capacity(tensors.len());
    let mut claimed = BTreeSet::new();
    for t in tensors {
        let short = t.name.strip_prefix("transformer.").unwrap_or(&t.name);
        let candidates: Vec<&str> = [t.name.as_str(), short].into_iter().filter(|n| names.contains(n)).collect();
        let file_name = match candidates.as_slice() {
            [] => bail!("tensor {} is missing", t.name),
            [one] => one.to_string(),
            [a, b, ..] if a == b => a.to_string(),
            [a, b, ..] => bail!("the file has both {a} and {b}"),
        };
        let view = tf.st.tensor(&file_name).map_err(|e| anyhow!("tensor {file_name}: {e}"))?;
        ensure!(view.dtype() == Dtype::F32, "tensor {file_name} has dtype {:?}; only F32 is supported", view.dtype());
        ensure!(
            view.shape() == t.shape.as_slice(),
            "tensor {file_name} has shape {:?}, expected {:?} (from config.json)",
            view.shape(),
            t.shape
        );
        claimed.insert(file_name.clone());
        out.push((t, file_name));
    }
    for n in &names {
        if claimed.contains(*n) {
            continue;
        }
        let short = n.strip_prefix("transformer.").unwrap_or(n);
        // The causal-mask buffers older transformers saved; transformers itself ignores them.
        if short.starts_with("h.") && (short.ends_with(".attn.bias") || short.ends_with(".attn.masked_bias")) {
            continue;
        }
        if *n == "lm_head.weight" && cfg.tie_embeddings {
            // A tied head saved anyway must be the embedding, or the file means another model.
            let wte = out.iter().find(|(t, _)| t.name == "transformer.wte.weight").map(|(_, f)| f.as_str());
            let same = wte.is_some_and(|w| {
                let (a, b) = (tf.st.tensor(n), tf.st.tensor(w));
                matches!((a, b), (Ok(a), Ok(b)) if a.shape() == b.shape() && a.data() == b.data())
            });
            ensure!(same, "lm_head.weight differs from wte.weight, but config.json ties them (tie_word_embeddings)");
            continue;
        }
        bail!("the file has a tensor {n} that GPT2LMHeadModel does not have");
    }
    Ok(out)
}

/// The tokenizer of an HF directory: `tokenizer.json` (a character tokenizer as
/// [`char_tokenizer_json`] writes it, lmlab's BPE tokenizer, or a GPT-2 byte-level BPE), else
/// `vocab.json` + `merges.txt` (GPT-2).
pub fn import_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if path.is_file() {
        let what = path.display().to_string();
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {what}"))?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{what} is not valid JSON"))?;
        if let Some(chars) = char_vocab(&doc) {
            return Ok(Tokenizer::Char(CharTokenizer::new(chars)?));
        }
        if doc.get("model").is_none() {
            bail!("{what} is not a tokenizers document (no \"model\")");
        }
        if is_lmlab_bpe(&doc) {
            return Ok(Tokenizer::Bpe(Box::new(BpeTokenizer::from_json(&text, &what)?)));
        }
        return Ok(Tokenizer::Gpt2(Box::new(Gpt2Tokenizer::from_json(&text, &what).context(
            "supported: a character tokenizer (as lmlab exports it), lmlab's BPE tokenizer, or GPT-2's byte-level BPE",
        )?)));
    }
    let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if vocab.is_file() || merges.is_file() {
        return Ok(Tokenizer::Gpt2(Box::new(Gpt2Tokenizer::from_files(&vocab, &merges)?)));
    }
    bail!("{} has no tokenizer: expected tokenizer.json, or vocab.json and merges.txt", dir.display())
}
