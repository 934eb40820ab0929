//! OpenAI's GPT-2 tokenizer from its original files (`encoder.json` + `vocab.bpe`), on Hugging
//! Face `tokenizers` with GPT-2's settings: a byte-level BPE model from the vocabulary and the
//! merges, the ByteLevel pre-tokenizer (GPT-2's regex, no prefix space) and the ByteLevel decoder.
//!
//! 50257 tokens, 50000 merges; `<|endoftext|>` = 50256 is the only special token. Like
//! tiktoken's default, [`Gpt2Tokenizer::encode`] treats a literal `<|endoftext|>` in the text as
//! ordinary text, so input cannot inject the control token; [`Gpt2Tokenizer::decode`] keeps
//! every id (the end-of-text token decodes to `<|endoftext|>`), as HF's `decode` does by default.

use anyhow::{anyhow, bail, ensure, Result};
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// The id of `<|endoftext|>`.
pub const END_OF_TEXT: u32 = 50256;
const END_OF_TEXT_STR: &str = "<|endoftext|>";

/// GPT-2's byte-level BPE tokenizer.
#[derive(Clone, Debug)]
pub struct Gpt2Tokenizer {
    inner: Tokenizer,
}

impl Gpt2Tokenizer {
    /// Loads `dir/encoder.json` (token → id, the same mapping as HF's `vocab.json`) and
    /// `dir/vocab.bpe` (the merges, byte-identical to HF's `merges.txt`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_files(&dir.join("encoder.json"), &dir.join("vocab.bpe"))
    }

    /// Loads a vocabulary (`encoder.json` / `vocab.json`) and merges (`vocab.bpe` / `merges.txt`).
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
        inner.add_special_tokens(&[AddedToken::from(END_OF_TEXT_STR, true)]);
        match inner.token_to_id(END_OF_TEXT_STR) {
            Some(END_OF_TEXT) => {}
            got => bail!("{v}: {END_OF_TEXT_STR} has id {got:?}, expected {END_OF_TEXT} (not GPT-2's vocabulary?)"),
        }
        inner.set_encode_special_tokens(true);
        Ok(Gpt2Tokenizer { inner })
    }

    /// 50257 for GPT-2.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
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
