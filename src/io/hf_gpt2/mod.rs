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
//!
//! The code: this file has the entry points ([`export`], [`export_files`], [`import`]);
//! `config` maps `config.json` to and from lmlab's model configuration and holds the export
//! refusals, `weights` the tensor names, shapes and Conv1D transposes, and `tokenizer` the
//! tokenizer files of each tokenizer kind.

mod config;
mod tokenizer;
mod weights;

pub use config::check_exportable;
pub use tokenizer::{char_tokenizer_json, import_tokenizer};
pub use weights::{hf_tensors, HfTensor};

use super::atomic::{check_replaceable, write_dir_atomic};
use super::tensors::{to_safetensors, TensorFile};
use crate::data::Tokenizer;
use crate::model::transformer::Transformer;
use anyhow::{anyhow, bail, ensure, Context, Result};
use config::{config_json, parse_config};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use tokenizer::tokenizer_files;
use weights::{match_tensors, transpose};

/// The files an export writes (GPT-2 tokenizers add vocab.json and merges.txt).
pub const FILES: [&str; 6] =
    ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"];

/// Files transformers itself puts in such a directory; an export may replace a directory
/// that holds only these and [`FILES`].
const HF_SIDE_FILES: [&str; 3] = ["generation_config.json", "special_tokens_map.json", "added_tokens.json"];

/// Most values one activation buffer of an imported model may hold (16 GiB of f32).
const MAX_ACTIVATION_ROWS: usize = 1 << 32;

// ---------------------------------------------------------------------------------------------
// Export

/// The files of the HF directory for `model` and `tokenizer`, in memory (name, bytes).
pub fn export_files(model: &Transformer, tokenizer: &Tokenizer) -> Result<Vec<(String, Vec<u8>)>> {
    let cfg = &model.config;
    check_exportable(cfg)?;
    crate::io::check_export(model, tokenizer)?;
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
