//! GPT-2's byte-level BPE tokenizer, on Hugging Face `tokenizers` with GPT-2's settings: a BPE
//! model from a vocabulary and merges, the ByteLevel pre-tokenizer (GPT-2's regex, no prefix
//! space) and the ByteLevel decoder.
//!
//! It loads from OpenAI's original files (`encoder.json` + `vocab.bpe`: 50257 tokens, 50000
//! merges, `<|endoftext|>` = 50256), from Hugging Face's (`vocab.json` + `merges.txt`, the same
//! bytes under other names), or from a tokenizers JSON document with that pipeline (HF's
//! `tokenizer.json`; this is also how lmlab checkpoints store it). Any vocabulary with that
//! pipeline is accepted (a tiny one trained for a test, say); `<|endoftext|>`, when the
//! vocabulary has it, is a special token at whatever id it has.
//!
//! Like tiktoken's default, [`Gpt2Tokenizer::encode`] treats a literal special token in the text
//! as ordinary text, so input cannot inject control tokens (HF's `split_special_tokens=True`);
//! [`Gpt2Tokenizer::decode`] keeps every id (the end-of-text token decodes to `<|endoftext|>`),
//! as HF's `decode` does by default.

use anyhow::{anyhow, bail, ensure, Context, Result};
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// The id of `<|endoftext|>` in OpenAI's vocabulary.
pub const END_OF_TEXT: u32 = 50256;
pub const END_OF_TEXT_STR: &str = "<|endoftext|>";

/// A byte-level BPE tokenizer with GPT-2's pipeline.
#[derive(Clone, Debug)]
pub struct Gpt2Tokenizer {
    inner: Tokenizer,
}

impl Gpt2Tokenizer {
    /// Loads OpenAI's `dir/encoder.json` (token → id, the same mapping as HF's `vocab.json`) and
    /// `dir/vocab.bpe` (the merges, byte-identical to HF's `merges.txt`); `<|endoftext|>` must
    /// be id 50256, as in OpenAI's vocabulary.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let vocab = dir.join("encoder.json");
        let tok = Self::from_files(&vocab, &dir.join("vocab.bpe"))?;
        match tok.end_of_text() {
            Some(END_OF_TEXT) => Ok(tok),
            got => bail!(
                "{}: {END_OF_TEXT_STR} has id {got:?}, expected {END_OF_TEXT} (not GPT-2's vocabulary?)",
                vocab.display()
            ),
        }
    }

    /// Loads a vocabulary (`encoder.json` / `vocab.json`) and merges (`vocab.bpe` / `merges.txt`)
    /// with GPT-2's pipeline.
    pub fn from_files(vocab: &Path, merges: &Path) -> Result<Self> {
        for f in [vocab, merges] {
            ensure!(f.is_file(), "GPT-2 tokenizer file {} not found", f.display());
        }
        let (v, m) = (vocab.to_string_lossy(), merges.to_string_lossy());
        let model =
            BPE::from_file(&v, &m).build().map_err(|e| anyhow!("cannot load GPT-2 BPE from {v} and {m}: {e}"))?;
        let mut inner = Tokenizer::new(model);
        // GPT-2: no prefix space, offsets trimmed, the GPT-2 regex splits the words.
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        if inner.token_to_id(END_OF_TEXT_STR).is_some() {
            inner.add_special_tokens(&[AddedToken::from(END_OF_TEXT_STR, true)]);
        }
        Ok(Self::finish(inner))
    }

    /// Parses a tokenizers JSON document (HF's `tokenizer.json`, or what [`Gpt2Tokenizer::to_json`]
    /// wrote); `what` names it in errors. The document must have GPT-2's pipeline: a BPE model,
    /// no normalizer, the ByteLevel pre-tokenizer with GPT-2's regex and no prefix space, the
    /// ByteLevel decoder (see [`Gpt2Tokenizer::check_pipeline`]).
    pub fn from_json(json: &str, what: &str) -> Result<Self> {
        let doc: serde_json::Value = serde_json::from_str(json).with_context(|| format!("{what} is not valid JSON"))?;
        Self::check_pipeline(&doc).with_context(|| format!("{what} is not a GPT-2 tokenizer"))?;
        let inner = Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| anyhow!("{what} is not a valid tokenizers JSON file: {e}"))?;
        Ok(Self::finish(inner))
    }

    /// Checks that a tokenizers JSON document has GPT-2's pipeline; the error names the part
    /// that differs.
    pub fn check_pipeline(doc: &serde_json::Value) -> Result<()> {
        let kind = |part: &str| doc.get(part).and_then(|p| p.get("type")).and_then(|t| t.as_str());
        ensure!(kind("model") == Some("BPE"), "the model is {:?}, expected BPE", kind("model"));
        ensure!(
            doc.get("normalizer").is_none_or(|n| n.is_null()),
            "it has a normalizer ({:?}); GPT-2 has none",
            kind("normalizer").unwrap_or("?")
        );
        ensure!(
            kind("pre_tokenizer") == Some("ByteLevel"),
            "the pre-tokenizer is {:?}, expected ByteLevel",
            kind("pre_tokenizer")
        );
        let pre = &doc["pre_tokenizer"];
        ensure!(
            pre.get("add_prefix_space").and_then(|v| v.as_bool()) == Some(false),
            "the ByteLevel pre-tokenizer adds a prefix space; GPT-2's does not"
        );
        ensure!(
            pre.get("use_regex").and_then(|v| v.as_bool()).unwrap_or(true),
            "the ByteLevel pre-tokenizer does not use GPT-2's regex"
        );
        ensure!(kind("decoder") == Some("ByteLevel"), "the decoder is {:?}, expected ByteLevel", kind("decoder"));
        Ok(())
    }

    /// Literal special tokens in the input are text (see the module documentation).
    fn finish(mut inner: Tokenizer) -> Self {
        inner.set_encode_special_tokens(true);
        Gpt2Tokenizer { inner }
    }

    /// The tokenizers JSON document (HF's `tokenizer.json`; what lmlab checkpoints store).
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(|e| anyhow!("cannot serialize the GPT-2 tokenizer: {e}"))
    }

    /// 50257 for GPT-2 (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `<|endoftext|>`, if the vocabulary has it (GPT-2's BOS and EOS).
    pub fn end_of_text(&self) -> Option<u32> {
        self.inner.token_to_id(END_OF_TEXT_STR)
    }

    /// Token ids of `text` (no BOS/EOS added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        super::bpe::encode_ids(&self.inner, text)
    }

    /// Text of `ids`; an id outside the vocabulary is an error. A sequence that ends inside a
    /// multi-byte character decodes that character's bytes to U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        super::bpe::decode_ids(&self.inner, ids, false)
    }

    /// The token string of `id` (byte-level symbols, e.g. `Ġthe` for " the").
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}
