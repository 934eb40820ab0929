//! Contextual token embeddings: every token's hidden state after a chosen layer of a BERT
//! directory, the input of BERTScore (`eval::bertscore`), computed as the bert-score package
//! computes them:
//!
//! ```text
//! text ─ tokenizer.json: `[CLS]` … `[SEP]`, truncated at tokenizer_config.json's model_max_length
//!      ─ BERT (io::hf_bert) cut after layer L (bert-score's num_layers) ─ (T, C) per text
//! ```
//!
//! Unlike sentence embeddings (`infer::embed`), the limit is the tokenizer's `model_max_length`
//! (512 for all-MiniLM-L6-v2), not sentence-transformers' `max_seq_length` (256): bert-score
//! encodes with `tokenizer.encode(..., max_length=tokenizer.model_max_length, truncation=True)`.
//! Batching is [`encode_batches`]'s: padded positions are masked, so a text's states do not
//! depend on its batch (up to float rounding).

use super::embed::{encode_batches, read_json};
use crate::data::hf_tokenizer::HfTokenizer;
use crate::io::hf_bert::{self, BertConfig};
use crate::model::transformer::Transformer;
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::path::Path;

/// The files a model directory needs for token embeddings.
pub const NEEDED_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// The token ids of one text and the hidden state of each, (T, C) row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenStates {
    pub ids: Vec<u32>,
    pub states: Vec<f32>,
}

/// A BERT cut after one layer, with its tokenizer.
pub struct TokenEmbedder {
    model: Transformer,
    tokenizer: HfTokenizer,
    layer: usize,
    num_layers: usize,
    cls: u32,
    sep: u32,
}

impl TokenEmbedder {
    /// Loads `dir` (`config.json`, `model.safetensors`, `tokenizer.json`, and
    /// `tokenizer_config.json` for the length limit when present) keeping layers 1..=`layer`
    /// (default: all of them, i.e. the last hidden state). `max_batch` texts run per forward
    /// pass. A missing file, or a layer the model does not have, is an error that says so.
    pub fn load(dir: &Path, layer: Option<usize>, max_batch: usize) -> Result<Self> {
        ensure!(max_batch > 0, "the batch size must be positive");
        for f in NEEDED_FILES {
            ensure!(
                dir.join(f).is_file(),
                "{} has no {f} (token embeddings need {})",
                dir.display(),
                NEEDED_FILES.join(", ")
            );
        }
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("cannot read {}", cfg_path.display()))?;
        let bert = BertConfig::from_json(&text).with_context(|| format!("{}", cfg_path.display()))?;
        let num_layers = bert.num_hidden_layers;
        let layer = layer.unwrap_or(num_layers);
        ensure!(
            (1..=num_layers).contains(&layer),
            "layer {layer} does not exist: {} has layers 1..={num_layers} (layer 0, the embedding output, is not \
             supported)",
            dir.display()
        );
        let max_len = model_max_length(dir, &bert)?;
        let tokenizer = HfTokenizer::from_file(&dir.join("tokenizer.json"), max_len)?;
        ensure!(
            tokenizer.vocab_size() <= bert.vocab_size,
            "{} has {} tokens but config.json says vocab_size {}",
            dir.join("tokenizer.json").display(),
            tokenizer.vocab_size(),
            bert.vocab_size
        );
        let special = |t: &str| {
            tokenizer.token_to_id(t).with_context(|| format!("{}: the tokenizer has no {t} token", dir.display()))
        };
        let (cls, sep) = (special("[CLS]")?, special("[SEP]")?);
        let model = hf_bert::load_layers(dir, max_batch, Some(max_len), Some(layer))?.model;
        Ok(TokenEmbedder { model, tokenizer, layer, num_layers, cls, sep })
    }

    /// Width of the token embeddings (the model's hidden size).
    pub fn dim(&self) -> usize {
        self.model.config.n_embd
    }

    /// The layer whose output the embeddings are (1 = the first block's).
    pub fn layer(&self) -> usize {
        self.layer
    }

    /// Layers of the whole model (`num_hidden_layers`).
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }

    /// Most tokens of a text, `[CLS]` and `[SEP]` included.
    pub fn max_len(&self) -> usize {
        self.tokenizer.max_len()
    }

    /// The ids of `[CLS]` and `[SEP]`.
    pub fn special_ids(&self) -> [u32; 2] {
        [self.cls, self.sep]
    }

    /// The ids the model reads for `text`: `[CLS]` … `[SEP]`, at most [`TokenEmbedder::max_len`].
    /// A text with no token ("", whitespace, control characters) is `[CLS]` `[SEP]`.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    /// The token embeddings of each text, in order.
    pub fn embed<S: AsRef<str>>(&mut self, texts: &[S]) -> Result<Vec<TokenStates>> {
        let ids = texts.iter().map(|s| self.tokenize(s.as_ref())).collect::<Result<Vec<_>>>()?;
        let c = self.dim();
        let mut out: Vec<Option<TokenStates>> = vec![None; ids.len()];
        encode_batches(&mut self.model, self.tokenizer.pad_id(), &ids, |batch, t, _mask, hidden| {
            for (row, &i) in batch.iter().enumerate() {
                let n = ids[i].len();
                let states = hidden[row * t * c..(row * t + n) * c].to_vec();
                out[i] = Some(TokenStates { ids: ids[i].clone(), states });
            }
        })?;
        Ok(out.into_iter().map(|s| s.expect("every text is in one batch")).collect())
    }
}

/// bert-score's length limit: `tokenizer_config.json`'s `model_max_length`, capped at the
/// model's `max_position_embeddings` (when the file is missing or has no limit, that is the
/// limit; bert-score would fail on longer texts there).
fn model_max_length(dir: &Path, bert: &BertConfig) -> Result<usize> {
    let path = dir.join("tokenizer_config.json");
    let limit = bert.max_position_embeddings;
    if !path.is_file() {
        return Ok(limit);
    }
    let v = read_json(&path)?;
    Ok(match v.get("model_max_length") {
        None | Some(Value::Null) => limit,
        Some(n) => match n.as_f64() {
            Some(x) if x >= 3.0 => (x.min(limit as f64)) as usize,
            _ => bail!("{}: model_max_length {n} is not a length of at least 3", path.display()),
        },
    })
}
