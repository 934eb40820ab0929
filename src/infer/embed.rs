//! Sentence embeddings from a sentence-transformers model directory (all-MiniLM-L6-v2 and other
//! BERT-based ones), computed as sentence-transformers computes them:
//!
//! ```text
//! text ─ tokenizer.json (truncated at max_seq_length) ─ BERT (io::hf_bert) ─ last hidden state (B,T,C)
//!      ─ pooling over the real tokens (1_Pooling/config.json: mean for MiniLM) ─ L2 normalisation
//!        (when modules.json lists Normalize) ─ one vector of C floats per sentence
//! ```
//!
//! Sentences are batched by token count (longest first, as sentence-transformers sorts them)
//! and padded on the right to the longest of their batch; padded positions are masked out of
//! attention as keys (BERT's `attention_mask`) and left out of the pooling, so a sentence's
//! embedding does not depend on its batch (up to float rounding).

use crate::data::hf_tokenizer::HfTokenizer;
use crate::io::hf_bert::{self, BertConfig};
use crate::kernels::pool::Pool;
use crate::model::transformer::Transformer;
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// How token vectors become one sentence vector: the pooling kernel's modes.
pub use crate::kernels::pool::PoolingMode;

/// The sentence-transformers pipeline around the BERT.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbedConfig {
    pub pooling: PoolingMode,
    /// L2-normalise the pooled vector (a `Normalize` module).
    pub normalize: bool,
    /// Longest input in tokens, `[CLS]` and `[SEP]` included (`sentence_bert_config.json`).
    pub max_seq_length: usize,
    /// Lower-case the text before tokenizing (`sentence_bert_config.json`; BERT's uncased
    /// tokenizers lower-case anyway).
    pub do_lower_case: bool,
}

impl EmbedConfig {
    /// Reads `modules.json`, the pooling module's `config.json` and `sentence_bert_config.json`
    /// from a sentence-transformers directory. Without `modules.json` (a plain BERT directory)
    /// the result is mean pooling + normalisation over up to `max_position_embeddings` tokens.
    pub fn from_dir(dir: &Path, bert: &BertConfig) -> Result<Self> {
        let mut cfg = EmbedConfig {
            pooling: PoolingMode::Mean,
            normalize: true,
            max_seq_length: bert.max_position_embeddings,
            do_lower_case: false,
        };
        let modules = dir.join("modules.json");
        if modules.exists() {
            let list: Value = read_json(&modules)?;
            let list = list.as_array().with_context(|| format!("{}: not a JSON array", modules.display()))?;
            let kinds: Vec<(String, String)> = list
                .iter()
                .map(|m| {
                    let kind = m["type"].as_str().unwrap_or_default();
                    // "sentence_transformers.models.Pooling" → "Pooling".
                    (kind.rsplit('.').next().unwrap_or_default().to_string(), m["path"].as_str().unwrap_or("").into())
                })
                .collect();
            let names: Vec<&str> = kinds.iter().map(|(k, _)| k.as_str()).collect();
            ensure!(
                matches!(names.as_slice(), ["Transformer", "Pooling"] | ["Transformer", "Pooling", "Normalize"]),
                "{}: modules {names:?} are not supported (Transformer, Pooling and optionally Normalize)",
                modules.display()
            );
            cfg.pooling = read_pooling(&dir.join(&kinds[1].1).join("config.json"), bert.hidden_size)?;
            cfg.normalize = names.len() == 3;
        }
        let sbert = dir.join("sentence_bert_config.json");
        if sbert.exists() {
            let v = read_json(&sbert)?;
            if let Some(n) = v.get("max_seq_length").filter(|n| !n.is_null()) {
                cfg.max_seq_length =
                    n.as_u64().with_context(|| format!("{}: max_seq_length {n}", sbert.display()))? as usize;
            }
            cfg.do_lower_case = v.get("do_lower_case").and_then(Value::as_bool).unwrap_or(false);
        }
        ensure!(
            cfg.max_seq_length >= 2 && cfg.max_seq_length <= bert.max_position_embeddings,
            "max_seq_length {} outside 2..={} (max_position_embeddings)",
            cfg.max_seq_length,
            bert.max_position_embeddings
        );
        Ok(cfg)
    }
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// The one pooling mode a `1_Pooling/config.json` switches on.
fn read_pooling(path: &Path, hidden: usize) -> Result<PoolingMode> {
    let v = read_json(path)?;
    if let Some(dim) = v.get("word_embedding_dimension").and_then(Value::as_u64) {
        ensure!(
            dim as usize == hidden,
            "{}: word_embedding_dimension {dim} differs from the model's hidden_size {hidden}",
            path.display()
        );
    }
    // Newer sentence-transformers may name the mode directly.
    if let Some(mode) = v.get("pooling_mode").and_then(Value::as_str) {
        return Ok(match mode {
            "cls" => PoolingMode::Cls,
            "mean" => PoolingMode::Mean,
            "max" => PoolingMode::Max,
            "mean_sqrt_len_tokens" => PoolingMode::MeanSqrtLen,
            other => bail!(
                "{}: pooling_mode {other:?} is not supported (cls, mean, max, mean_sqrt_len_tokens)",
                path.display()
            ),
        });
    }
    let on: Vec<&str> = v
        .as_object()
        .with_context(|| format!("{}: not a JSON object", path.display()))?
        .iter()
        .filter(|(k, x)| k.starts_with("pooling_mode_") && x.as_bool() == Some(true))
        .map(|(k, _)| k.as_str())
        .collect();
    Ok(match on.as_slice() {
        ["pooling_mode_cls_token"] => PoolingMode::Cls,
        ["pooling_mode_mean_tokens"] => PoolingMode::Mean,
        ["pooling_mode_max_tokens"] => PoolingMode::Max,
        ["pooling_mode_mean_sqrt_len_tokens"] => PoolingMode::MeanSqrtLen,
        _ => bail!(
            "{}: pooling modes {on:?} are not supported: exactly one of cls_token, mean_tokens, max_tokens, \
             mean_sqrt_len_tokens must be on",
            path.display()
        ),
    })
}

/// Where `lmlab embed` and the tests look for all-MiniLM-L6-v2 when no directory is given:
/// `$LMLAB_MINILM_DIR`, else `${LMLAB_CACHE:-$HOME/.cache/lmlab}/minilm/model`, which is where
/// `scripts/fetch_minilm.sh` unpacks it.
pub fn default_model_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = var("LMLAB_MINILM_DIR") {
        return d;
    }
    let cache = var("LMLAB_CACHE")
        .unwrap_or_else(|| var("HOME").unwrap_or_else(|| PathBuf::from(".")).join(".cache").join("lmlab"));
    cache.join("minilm").join("model")
}

/// A sentence-embedding model: BERT, tokenizer, pooling and normalisation.
pub struct Embedder {
    model: Transformer,
    tokenizer: HfTokenizer,
    config: EmbedConfig,
}

impl Embedder {
    /// Loads a sentence-transformers directory (`config.json`, `model.safetensors`,
    /// `tokenizer.json`, and `modules.json`, `1_Pooling/config.json`,
    /// `sentence_bert_config.json` when present). `max_batch` sentences run per forward pass.
    pub fn load(dir: &Path, max_batch: usize) -> Result<Self> {
        ensure!(
            dir.join("config.json").is_file(),
            "{} has no config.json (a sentence-transformers / BERT model directory is needed)",
            dir.display()
        );
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("cannot read {}", cfg_path.display()))?;
        let bert = BertConfig::from_json(&text).with_context(|| format!("{}", cfg_path.display()))?;
        let config = EmbedConfig::from_dir(dir, &bert)?;
        let tokenizer = HfTokenizer::from_file(&dir.join("tokenizer.json"), config.max_seq_length)?;
        // The context is max_seq_length: longer inputs are truncated, so the position rows past
        // it are never read, and the activation buffers shrink with it.
        let model = hf_bert::load(dir, max_batch, Some(config.max_seq_length))?.model;
        Self::new(model, tokenizer, config)
    }

    /// An embedder from its parts; the tokenizer's ids must fit the model's vocabulary and its
    /// limit the model's context.
    pub fn new(model: Transformer, tokenizer: HfTokenizer, config: EmbedConfig) -> Result<Self> {
        let mc = &model.config;
        ensure!(
            mc.arch == crate::model::transformer::Arch::Encoder,
            "sentence embeddings need an encoder (model.arch = \"encoder\")"
        );
        ensure!(
            tokenizer.vocab_size() <= mc.vocab_size,
            "the tokenizer has {} tokens but the model's vocab_size is {}",
            tokenizer.vocab_size(),
            mc.vocab_size
        );
        ensure!(
            tokenizer.max_len() <= mc.block_size,
            "the tokenizer's limit of {} tokens exceeds the model's context of {}",
            tokenizer.max_len(),
            mc.block_size
        );
        Ok(Embedder { model, tokenizer, config })
    }

    /// Width of the embeddings (the model's hidden size).
    pub fn dim(&self) -> usize {
        self.model.config.n_embd
    }

    pub fn config(&self) -> &EmbedConfig {
        &self.config
    }

    pub fn tokenizer(&self) -> &HfTokenizer {
        &self.tokenizer
    }

    pub fn model(&self) -> &Transformer {
        &self.model
    }

    /// Quantizes the encoder's linear layers with `scheme` (round to nearest; see
    /// `compress::quantize`). Returns how many weights were quantized.
    pub fn quantize(&mut self, scheme: crate::compress::quantize::Scheme) -> Result<usize> {
        let names = crate::compress::quantize::quantize_model(&mut self.model, scheme, Default::default())?;
        Ok(names.len())
    }

    /// [`Embedder::quantize`] with GPTQ schemes calibrated on `sentences`: each runs through
    /// the encoder alone (no padding, so every row the layers see is a real token). Other
    /// schemes ignore the sentences.
    pub fn quantize_calibrated<S: AsRef<str>>(
        &mut self,
        scheme: crate::compress::quantize::Scheme,
        sentences: &[S],
    ) -> Result<usize> {
        let ids = sentences.iter().map(|s| self.tokenize(s.as_ref())).collect::<Result<Vec<_>>>()?;
        ensure!(ids.iter().any(|s| !s.is_empty()), "no calibration sentences");
        let names =
            crate::compress::quantize::quantize_model_gptq_with(&mut self.model, scheme, Default::default(), |m| {
                let mut real = ids.iter().filter(|s| !s.is_empty());
                real.try_for_each(|s| m.forward_classify(s, None, None, 1, s.len(), false, 0).map(|_| ()))
            })?;
        Ok(names.len())
    }

    /// Sentences per forward pass.
    pub fn max_batch(&self) -> usize {
        self.model.max_batch()
    }

    /// The ids the model reads for `text`: `[CLS]` … `[SEP]`, at most `max_seq_length`.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        if self.config.do_lower_case {
            self.tokenizer.encode(&text.to_lowercase())
        } else {
            self.tokenizer.encode(text)
        }
    }

    /// One embedding of [`Embedder::dim`] floats per sentence, in order.
    pub fn embed<S: AsRef<str>>(&mut self, sentences: &[S]) -> Result<Vec<Vec<f32>>> {
        let ids = sentences.iter().map(|s| self.tokenize(s.as_ref())).collect::<Result<Vec<_>>>()?;
        self.embed_ids(&ids)
    }

    /// [`Embedder::embed`] on token ids (each non-empty, at most the model's context).
    pub fn embed_ids(&mut self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let c = self.dim();
        let (mode, normalize_out) = (self.config.pooling, self.config.normalize);
        let mut out = vec![Vec::new(); ids.len()];
        let mut pooled = Vec::new();
        encode_batches(&mut self.model, self.tokenizer.pad_id(), ids, |batch, t, mask, hidden| {
            let b = batch.len();
            // (B, C), summed in f64.
            pooled.resize(b * c, 0.0);
            let pool = Pool { mode, mask: Some(mask), b, t, c };
            pool.forward::<f64>(&mut pooled, hidden);
            for (row, &i) in batch.iter().enumerate() {
                let mut v = pooled[row * c..(row + 1) * c].to_vec();
                if normalize_out {
                    normalize(&mut v);
                }
                out[i] = v;
            }
        })?;
        Ok(out)
    }

    /// The `top_k` sentences of `corpus` most similar to `query` (cosine similarity of their
    /// embeddings), best first: (index into `corpus`, score).
    pub fn search<S: AsRef<str>>(&mut self, query: &str, corpus: &[S], top_k: usize) -> Result<Vec<(usize, f32)>> {
        let q = self.embed(&[query])?.pop().expect("one query, one embedding");
        let docs = self.embed(corpus)?;
        Ok(rank(&q, &docs, top_k))
    }
}

/// Runs the token-id sequences `ids` (each non-empty, at most the model's context) through the
/// encoder `model` in batches of up to [`Transformer::max_batch`]: longest first (a stable sort,
/// as sentence-transformers orders them, so each batch pads little), padded on the right with
/// `pad` to the longest of the batch, padded positions masked out of attention as keys (BERT's
/// `attention_mask`). For each batch, `visit(batch, t, mask, hidden)` gets the indices into `ids`
/// of its rows, its padded length T, its mask (B·T, true = real token) and the encoder output
/// (B, T, C). A sequence's outputs do not depend on its batch (up to float rounding).
pub fn encode_batches(
    model: &mut Transformer,
    pad: u32,
    ids: &[Vec<u32>],
    mut visit: impl FnMut(&[usize], usize, &[bool], &[f32]),
) -> Result<()> {
    let block = model.config.block_size;
    for (i, s) in ids.iter().enumerate() {
        ensure!(!s.is_empty() && s.len() <= block, "sequence {i} has {} tokens, outside 1..={block}", s.len());
    }
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
    let (mut idx, mut mask) = (Vec::new(), Vec::new());
    for batch in order.chunks(model.max_batch()) {
        let (b, t) = (batch.len(), ids[batch[0]].len());
        idx.clear();
        mask.clear();
        for &i in batch {
            let s = &ids[i];
            idx.extend(s.iter().copied().chain(std::iter::repeat_n(pad, t - s.len())));
            mask.extend((0..t).map(|j| j < s.len()));
        }
        model.forward_classify(&idx, Some(&mask), None, b, t, false, 0)?;
        visit(batch, t, &mask, model.hidden());
    }
    Ok(())
}

/// v / max(‖v‖, 1e-12) (torch.nn.functional.normalize).
fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
}

/// Cosine similarity a·b / (max(‖a‖, 1e-12)·max(‖b‖, 1e-12)), in f64 (sentence-transformers'
/// `util.cos_sim`). Panics if the lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "cosine of vectors of different lengths");
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    (ab / (aa.sqrt().max(1e-12) * bb.sqrt().max(1e-12))) as f32
}

/// The `top_k` rows of `corpus` by cosine similarity to `query`, best first (ties: lower index
/// first): (index, score).
pub fn rank(query: &[f32], corpus: &[Vec<f32>], top_k: usize) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = corpus.iter().enumerate().map(|(i, d)| (i, cosine(query, d))).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(top_k);
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_by_hand() {
        let mut v = vec![3.0f32, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0f32; 3];
        normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
    }

    #[test]
    fn cosine_and_rank() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
        assert_eq!(cosine(&[2.0, 0.0], &[-3.0, 0.0]), -1.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        let corpus = vec![vec![0.0, 1.0], vec![1.0, 0.1], vec![1.0, 0.0], vec![-1.0, 0.0], vec![1.0, 0.0]];
        let r = rank(&[1.0, 0.0], &corpus, 3);
        assert_eq!(r.iter().map(|h| h.0).collect::<Vec<_>>(), vec![2, 4, 1], "ties by index");
        assert_eq!(rank(&[1.0, 0.0], &corpus, 99).len(), 5);
        assert!(rank(&[1.0, 0.0], &[], 3).is_empty());
    }
}
