//! Hugging Face BERT encoders (`config.json` + `model.safetensors`, e.g. sentence-transformers'
//! all-MiniLM-L6-v2) as lmlab [`Transformer`]s.
//!
//! A BERT is lmlab's encoder with these choices: post-norm blocks, no final norm, LayerNorm
//! with `layer_norm_eps` (1e-12), a norm on the embedding sum (`embedding_norm`), learned
//! positions, biases everywhere, `hidden_act` as the activation (exact GELU for "gelu"), and
//! scaled dot-product attention with a key padding mask (BERT's `attention_mask`). Weight
//! mapping (BERT names with or without the `bert.` prefix; lmlab's under `transformer.`):
//!
//! | BERT | lmlab |
//! |---|---|
//! | embeddings.word_embeddings.weight (V, C) | `wte.weight` |
//! | embeddings.position_embeddings.weight (P, C) + token_type_embeddings.weight\[0\] | `wpe.weight` (first block_size rows) |
//! | embeddings.LayerNorm.{weight,bias} | `ln_emb.{weight,bias}` |
//! | encoder.layer.{i}.attention.self.{query,key,value}.{weight,bias} | `h.{i}.attn.c_attn` rows `[0,C)`, `[C,2C)`, `[2C,3C)` |
//! | encoder.layer.{i}.attention.output.dense | `h.{i}.attn.c_proj` |
//! | encoder.layer.{i}.attention.output.LayerNorm | `h.{i}.ln_1` |
//! | encoder.layer.{i}.intermediate.dense | `h.{i}.mlp.c_fc` |
//! | encoder.layer.{i}.output.dense | `h.{i}.mlp.c_proj` |
//! | encoder.layer.{i}.output.LayerNorm | `h.{i}.ln_2` |
//!
//! With its masked-LM head (`BertForMaskedLM`, kept by [`import`] when the file has it):
//!
//! | BERT | lmlab |
//! |---|---|
//! | cls.predictions.transform.dense | `mlm.dense` |
//! | cls.predictions.transform.LayerNorm | `mlm.norm` |
//! | cls.predictions.bias (or decoder.bias) | `mlm.bias` |
//! | cls.predictions.decoder.weight | tied to `wte.weight` (an untied copy must equal it) |
//!
//! Token types: lmlab has no segment embedding. Every input here is one segment (token type 0),
//! so row 0 of the token-type table is added to every position row once, at load time (BERT adds
//! the three embeddings per token; the f32 sum differs only in rounding order). Not used: the
//! pooler (`pooler.dense`, for BERT's next-sentence head) and `embeddings.position_ids`. Without
//! the masked-LM head lmlab's encoder has a classifier head; it is left at zero and is not part
//! of the embeddings.

use super::tensors::TensorFile;
use crate::model::transformer::{
    ActivationKind, Arch, EncoderHead, ModelConfig, NormKind, NormPosition, Pooling, Position, ScoreKind, Transformer,
};
use anyhow::{bail, ensure, Context, Result};
use safetensors::Dtype;
use serde_json::Value;
use std::path::Path;

/// The fields of a BERT `config.json` that decide the computation. Missing optional fields take
/// `transformers`' `BertConfig` defaults; other fields (dropout rates, initializer_range,
/// pad_token_id, ...) do not affect inference and are ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    /// Must be "bert".
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// "gelu" (exact, the default), "gelu_new" / "gelu_pytorch_tanh" (tanh approximation),
    /// "relu", "silu" / "swish".
    pub hidden_act: String,
    /// Default 512.
    pub max_position_embeddings: usize,
    /// Default 2.
    pub type_vocab_size: usize,
    /// Default 1e-12.
    pub layer_norm_eps: f64,
    /// Only "absolute" (learned positions, the default).
    pub position_embedding_type: String,
    pub is_decoder: bool,
    pub add_cross_attention: bool,
}

impl BertConfig {
    /// Parses and checks a `config.json`; a missing, mistyped or unsupported value is an error
    /// naming the field.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).context("config.json is not valid JSON")?;
        let obj = v.as_object().context("config.json is not a JSON object")?;
        let field = |k: &str| obj.get(k).filter(|x| !x.is_null());
        let size = |k: &str, default: Option<usize>| -> Result<usize> {
            match (field(k), default) {
                (Some(x), _) => match x.as_u64() {
                    Some(n) => Ok(n as usize),
                    None => bail!("config.json: {k} is {x}, expected a non-negative integer"),
                },
                (None, Some(d)) => Ok(d),
                (None, None) => bail!("config.json: {k} is missing"),
            }
        };
        let string = |k: &str, default: Option<&str>| -> Result<String> {
            match (field(k), default) {
                (Some(x), _) => match x.as_str() {
                    Some(s) => Ok(s.to_string()),
                    None => bail!("config.json: {k} is {x}, expected a string"),
                },
                (None, Some(d)) => Ok(d.to_string()),
                (None, None) => bail!("config.json: {k} is missing"),
            }
        };
        let flag = |k: &str| -> Result<bool> {
            match field(k) {
                Some(x) => x.as_bool().with_context(|| format!("config.json: {k} is {x}, expected true or false")),
                None => Ok(false),
            }
        };
        let layer_norm_eps = match field("layer_norm_eps") {
            Some(x) => x.as_f64().with_context(|| format!("config.json: layer_norm_eps is {x}, expected a number"))?,
            None => 1e-12,
        };
        let cfg = BertConfig {
            model_type: string("model_type", None)?,
            vocab_size: size("vocab_size", None)?,
            hidden_size: size("hidden_size", None)?,
            num_hidden_layers: size("num_hidden_layers", None)?,
            num_attention_heads: size("num_attention_heads", None)?,
            intermediate_size: size("intermediate_size", None)?,
            hidden_act: string("hidden_act", Some("gelu"))?,
            max_position_embeddings: size("max_position_embeddings", Some(512))?,
            type_vocab_size: size("type_vocab_size", Some(2))?,
            layer_norm_eps,
            position_embedding_type: string("position_embedding_type", Some("absolute"))?,
            is_decoder: flag("is_decoder")?,
            add_cross_attention: flag("add_cross_attention")?,
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<()> {
        ensure!(
            self.model_type == "bert",
            "config.json: model_type {:?} is not supported (only \"bert\")",
            self.model_type
        );
        self.activation()?;
        ensure!(
            self.position_embedding_type == "absolute",
            "config.json: position_embedding_type {:?} is not supported (only \"absolute\")",
            self.position_embedding_type
        );
        ensure!(!self.is_decoder, "config.json: is_decoder = true is not supported (a BERT encoder is bidirectional)");
        ensure!(!self.add_cross_attention, "config.json: add_cross_attention = true is not supported");
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            ensure!(v > 0, "config.json: {name} = {v}, it must be positive");
        }
        ensure!(
            self.hidden_size.is_multiple_of(self.num_attention_heads),
            "config.json: num_attention_heads = {} does not divide hidden_size = {}",
            self.num_attention_heads,
            self.hidden_size
        );
        ensure!(
            self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0 && (self.layer_norm_eps as f32) > 0.0,
            "config.json: layer_norm_eps = {:e}, it must be a positive f32",
            self.layer_norm_eps
        );
        Ok(())
    }

    fn activation(&self) -> Result<ActivationKind> {
        Ok(match self.hidden_act.as_str() {
            "gelu" => ActivationKind::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => ActivationKind::GeluTanh,
            "relu" => ActivationKind::Relu,
            "silu" | "swish" => ActivationKind::Silu,
            other => bail!(
                "config.json: hidden_act {other:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu, silu, swish)"
            ),
        })
    }

    /// lmlab's configuration of this BERT with a context of `block_size` positions (at most
    /// `max_position_embeddings`; a shorter context keeps the first rows of the position table
    /// and makes the activation buffers smaller).
    pub fn model_config(&self, block_size: usize) -> Result<ModelConfig> {
        ensure!(
            block_size >= 1 && block_size <= self.max_position_embeddings,
            "context {block_size} outside 1..={} (max_position_embeddings)",
            self.max_position_embeddings
        );
        Ok(ModelConfig {
            arch: Arch::Encoder,
            vocab_size: self.vocab_size,
            block_size,
            n_layer: self.num_hidden_layers,
            n_head: self.num_attention_heads,
            n_embd: self.hidden_size,
            ffn_hidden: Some(self.intermediate_size),
            activation: self.activation()?,
            norm: NormKind::Layernorm,
            norm_eps: self.layer_norm_eps as f32,
            norm_position: NormPosition::Post,
            final_norm: false,
            position: Position::Learned,
            embedding_norm: true,
            score: ScoreKind::Scaled,
            dropout: 0.0,
            attn_dropout: Some(0.0),
            bias: true,
            pooling: Pooling::Mean,
            ..ModelConfig::default()
        })
    }
}

/// A loaded BERT.
pub struct HfBert {
    pub config: BertConfig,
    pub model: Transformer,
}

/// Loads `dir/config.json` and `dir/model.safetensors`. `max_batch` sizes the activation
/// buffers; `context` (default `max_position_embeddings`) is the longest sequence the model
/// will be run on.
pub fn load(dir: &Path, max_batch: usize, context: Option<usize>) -> Result<HfBert> {
    load_layers(dir, max_batch, context, None)
}

/// [`load`], keeping only the first `layers` encoder layers when given (see [`from_parts`]).
pub fn load_layers(dir: &Path, max_batch: usize, context: Option<usize>, layers: Option<usize>) -> Result<HfBert> {
    let cfg_path = dir.join("config.json");
    let weights_path = dir.join("model.safetensors");
    let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("cannot read {}", cfg_path.display()))?;
    let bytes = std::fs::read(&weights_path).with_context(|| format!("cannot read {}", weights_path.display()))?;
    from_parts(&text, &bytes, max_batch, context, layers, false)
        .with_context(|| format!("BERT model {}", dir.display()))
}

/// [`load`] from the contents of `config.json` and `model.safetensors`. With `layers`, only the
/// first `layers` encoder layers are kept (1..=num_hidden_layers; the config then says so): the
/// model's output is the hidden state after that layer, as bert-score's `num_layers` cuts
/// `model.encoder.layer`. The later layers' weights are not read. With `mlm_head`, a checkpoint
/// that has BERT's masked-LM head (`cls.predictions.*`) keeps it (`EncoderHead::Mlm`); otherwise
/// the head is not read (its logits would be (B, T, V) buffers an embedder never uses).
pub fn from_parts(
    config_json: &str,
    safetensors: &[u8],
    max_batch: usize,
    context: Option<usize>,
    layers: Option<usize>,
    mlm_head: bool,
) -> Result<HfBert> {
    let mut config = BertConfig::from_json(config_json)?;
    if let Some(l) = layers {
        let n = config.num_hidden_layers;
        ensure!(
            (1..=n).contains(&l),
            "layer {l} does not exist: this BERT has layers 1..={n} (layer 0, the embedding output, is not supported)"
        );
        config.num_hidden_layers = l;
    }
    let mut mc = config.model_config(context.unwrap_or(config.max_position_embeddings))?;
    let tf = TensorFile::parse(safetensors, "model.safetensors")?;
    let w = Weights::new(&tf)?;
    let head = Weights { tf: &tf, prefix: "" };
    let with_head = mlm_head && head.has("cls.predictions.transform.dense.weight");
    if with_head {
        mc.encoder_head = EncoderHead::Mlm;
    }
    let mut model = Transformer::new_inference(mc, max_batch)?;
    let (c, v, t) = (config.hidden_size, config.vocab_size, model.config.block_size);

    put(&mut model, "transformer.wte.weight", &w.get("embeddings.word_embeddings.weight", &[v, c])?)?;
    let mut wpe = w.get("embeddings.position_embeddings.weight", &[config.max_position_embeddings, c])?;
    let tte = w.get("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, c])?;
    wpe.truncate(t * c);
    for row in wpe.chunks_exact_mut(c) {
        row.iter_mut().zip(&tte[..c]).for_each(|(p, &s)| *p += s);
    }
    put(&mut model, "transformer.wpe.weight", &wpe)?;
    w.norm(&mut model, "embeddings.LayerNorm", "transformer.ln_emb", c)?;
    for i in 0..config.num_hidden_layers {
        let (b, h) = (format!("encoder.layer.{i}"), format!("transformer.h.{i}"));
        let mut qkv_w = Vec::with_capacity(3 * c * c);
        let mut qkv_b = Vec::with_capacity(3 * c);
        for part in ["query", "key", "value"] {
            qkv_w.extend(w.get(&format!("{b}.attention.self.{part}.weight"), &[c, c])?);
            qkv_b.extend(w.get(&format!("{b}.attention.self.{part}.bias"), &[c])?);
        }
        put(&mut model, &format!("{h}.attn.c_attn.weight"), &qkv_w)?;
        put(&mut model, &format!("{h}.attn.c_attn.bias"), &qkv_b)?;
        let f = config.intermediate_size;
        w.linear(&mut model, &format!("{b}.attention.output.dense"), &format!("{h}.attn.c_proj"), c, c)?;
        w.norm(&mut model, &format!("{b}.attention.output.LayerNorm"), &format!("{h}.ln_1"), c)?;
        w.linear(&mut model, &format!("{b}.intermediate.dense"), &format!("{h}.mlp.c_fc"), f, c)?;
        w.linear(&mut model, &format!("{b}.output.dense"), &format!("{h}.mlp.c_proj"), c, f)?;
        w.norm(&mut model, &format!("{b}.output.LayerNorm"), &format!("{h}.ln_2"), c)?;
    }
    if with_head {
        mlm_head_weights(&head, &mut model, &config)?;
    }
    if let Some((t, _)) = model.first_nonfinite_param() {
        bail!("weight {t} holds NaN or infinity");
    }
    Ok(HfBert { config, model })
}

/// BERT's `cls.predictions` into lmlab's `mlm.*`; the decoder is the word embedding.
fn mlm_head_weights(head: &Weights, model: &mut Transformer, config: &BertConfig) -> Result<()> {
    let (c, v) = (config.hidden_size, config.vocab_size);
    head.linear(model, "cls.predictions.transform.dense", "mlm.dense", c, c)?;
    head.norm(model, "cls.predictions.transform.LayerNorm", "mlm.norm", c)?;
    let bias_name =
        if head.has("cls.predictions.bias") { "cls.predictions.bias" } else { "cls.predictions.decoder.bias" };
    put(model, "mlm.bias", &head.get(bias_name, &[v])?)?;
    if head.has("cls.predictions.decoder.weight") {
        let decoder = head.get("cls.predictions.decoder.weight", &[v, c])?;
        let wte = model.layout.get("transformer.wte.weight").context("lmlab's BERT has no wte")?.range();
        ensure!(
            decoder == model.params[wte],
            "cls.predictions.decoder.weight differs from the word embeddings: lmlab's masked-LM head ties them, \
             as BERT does"
        );
    }
    Ok(())
}

/// A BERT directory (`config.json`, `model.safetensors`, `tokenizer.json`) as a model and its
/// tokenizer, for `lmlab import --hf`: the whole context (`max_position_embeddings`), the
/// tokenizer truncating at that length. A `BertForMaskedLM` keeps its masked-LM head; otherwise
/// the classifier head stays at zero. A fine-tuning run (`train.init_from`) gives the model a
/// new head for its task.
pub fn import(dir: &Path, max_batch: usize) -> Result<(Transformer, crate::data::Tokenizer)> {
    let cfg_path = dir.join("config.json");
    let weights_path = dir.join("model.safetensors");
    let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("cannot read {}", cfg_path.display()))?;
    let bytes = std::fs::read(&weights_path).with_context(|| format!("cannot read {}", weights_path.display()))?;
    let bert = from_parts(&text, &bytes, max_batch, None, None, true)
        .with_context(|| format!("BERT model {}", dir.display()))?;
    let tok_path = dir.join("tokenizer.json");
    let tok = crate::data::hf_tokenizer::HfTokenizer::from_file(&tok_path, bert.config.max_position_embeddings)?;
    ensure!(
        tok.vocab_size() == bert.config.vocab_size,
        "{} has {} tokens but config.json says vocab_size {}",
        tok_path.display(),
        tok.vocab_size(),
        bert.config.vocab_size
    );
    Ok((bert.model, crate::data::Tokenizer::Hf(Box::new(tok))))
}

/// Whether `dir/config.json` describes a BERT (`"model_type": "bert"`); false when it cannot be
/// read or names another type.
pub fn is_bert_dir(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|v| v.get("model_type").and_then(|m| m.as_str()) == Some("bert"))
}

/// Copies `src` into the lmlab tensor `name` (sizes are guaranteed by the shapes read).
fn put(model: &mut Transformer, name: &str, src: &[f32]) -> Result<()> {
    let r = model.layout.get(name).with_context(|| format!("lmlab's BERT has no tensor {name}"))?.range();
    ensure!(r.len() == src.len(), "{name}: {} values for a tensor of {}", src.len(), r.len());
    model.params[r].copy_from_slice(src);
    Ok(())
}

/// The tensors of a BERT `model.safetensors`, under `bert.` or no prefix.
struct Weights<'a> {
    tf: &'a TensorFile<'a>,
    prefix: &'static str,
}

impl<'a> Weights<'a> {
    fn new(tf: &'a TensorFile<'a>) -> Result<Self> {
        let has = |n: &str| tf.st.tensor(n).is_ok();
        let probe = "embeddings.word_embeddings.weight";
        let prefix = if has(probe) {
            ""
        } else if has(&format!("bert.{probe}")) {
            "bert."
        } else {
            bail!("model.safetensors has no {probe} (nor bert.{probe}): not a BERT checkpoint")
        };
        Ok(Weights { tf, prefix })
    }

    fn has(&self, name: &str) -> bool {
        self.tf.st.tensor(&format!("{}{name}", self.prefix)).is_ok()
    }

    /// Tensor `name` (without the prefix) as f32, stored as f32, f16 or bf16, of exactly `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let t =
            self.tf.st.tensor(&full).map_err(|_| anyhow::anyhow!("tensor {full} is missing from model.safetensors"))?;
        ensure!(t.shape() == shape, "tensor {full} has shape {:?}, expected {shape:?}", t.shape());
        let d = t.data();
        Ok(match t.dtype() {
            Dtype::F32 => d.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::BF16 => {
                d.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect()
            }
            Dtype::F16 => d.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
            other => bail!("tensor {full} has dtype {other:?}; only F32, F16 and BF16 are supported"),
        })
    }

    /// A linear layer: `{bert}.weight` (out, in) and `{bert}.bias` (out).
    fn linear(&self, model: &mut Transformer, bert: &str, ours: &str, out: usize, inp: usize) -> Result<()> {
        put(model, &format!("{ours}.weight"), &self.get(&format!("{bert}.weight"), &[out, inp])?)?;
        put(model, &format!("{ours}.bias"), &self.get(&format!("{bert}.bias"), &[out])?)
    }

    /// A LayerNorm: `weight`/`bias`, or the TensorFlow-era `gamma`/`beta`.
    fn norm(&self, model: &mut Transformer, bert: &str, ours: &str, c: usize) -> Result<()> {
        let (w, b) = if !self.has(&format!("{bert}.weight")) && self.has(&format!("{bert}.gamma")) {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        put(model, &format!("{ours}.weight"), &self.get(&format!("{bert}.{w}"), &[c])?)?;
        put(model, &format!("{ours}.bias"), &self.get(&format!("{bert}.{b}"), &[c])?)
    }
}

/// IEEE 754 half precision to f32 (exact: every f16 is an f32).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        // Subnormal: man · 2^-24, exact in f32.
        (0, m) => {
            let v = m as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_values() {
        for (h, want) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x7bff, 65504.0),
            (0x0001, 5.960_464_5e-8),
            (0x8001, -5.960_464_5e-8),
            (0x03ff, 6.097_555e-5),
            (0x0400, 6.103_515_6e-5),
            (0x0000, 0.0),
        ] {
            assert_eq!(f16_to_f32(h), want, "{h:#06x}");
        }
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}
