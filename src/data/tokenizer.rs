//! Tokenizers: character-level (the vocabulary is the sorted set of characters in the corpus),
//! subword BPE ([`crate::data::bpe`]), GPT-2's byte-level BPE ([`crate::data::gpt2`]) and
//! llama2.c's SentencePiece vocabularies ([`crate::data::llama2c_tokenizer`]), behind one
//! [`Tokenizer`] type that checkpoints store.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub struct CharTokenizer {
    chars: Vec<char>,
    index: HashMap<char, u32>,
}

/// On-disk form (`tokenizer.json`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CharTokenizerFile {
    #[serde(rename = "type")]
    kind: String,
    chars: Vec<char>,
}

/// The `[MASK]` of a character-level masked LM: U+E000, the first code point of Unicode's
/// Private Use Area, which no text in the corpora uses.
pub const MASK_CHAR: char = '\u{E000}';

impl CharTokenizer {
    /// Builds the vocabulary from every distinct character of `text`, sorted by code point
    /// (so the ids are nanoGPT's `sorted(list(set(data)))`).
    pub fn from_corpus(text: &str) -> Result<Self> {
        let mut chars: Vec<char> = text.chars().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        chars.dedup();
        if chars.is_empty() {
            bail!("cannot build a tokenizer from empty text");
        }
        Ok(Self::from_chars(chars))
    }

    fn from_chars(chars: Vec<char>) -> Self {
        let index = chars.iter().enumerate().map(|(i, &c)| (c, i as u32)).collect();
        CharTokenizer { chars, index }
    }

    /// [`CharTokenizer::from_corpus`] plus [`MASK_CHAR`] as the last id, for a masked LM.
    pub fn from_corpus_with_mask(text: &str) -> Result<Self> {
        let mut chars = Self::from_corpus(text)?.chars;
        if chars.contains(&MASK_CHAR) {
            bail!("the text holds U+E000, the character a masked LM reserves for [MASK]");
        }
        chars.push(MASK_CHAR);
        Ok(Self::from_chars(chars))
    }

    /// A tokenizer whose id `i` is `chars[i]` (any order); the list must be non-empty and
    /// without repeats.
    pub fn new(chars: Vec<char>) -> Result<Self> {
        if chars.is_empty() {
            bail!("a character tokenizer needs at least one character");
        }
        let tok = Self::from_chars(chars);
        if tok.index.len() != tok.chars.len() {
            bail!("the character list has a character twice");
        }
        Ok(tok)
    }

    /// The vocabulary: the character of each id.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    pub fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    /// Token ids of `text`; an unknown character is an error naming it and its position.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .enumerate()
            .map(|(pos, ch)| match self.index.get(&ch) {
                Some(&id) => Ok(id),
                None => bail!(
                    "character {ch:?} (U+{:04X}) at position {pos} is not in the tokenizer's vocabulary of {} characters",
                    ch as u32,
                    self.chars.len()
                ),
            })
            .collect()
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter().map(|&i| self.chars.get(i as usize).copied().unwrap_or('\u{FFFD}')).collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&CharTokenizerFile { kind: "char".into(), chars: self.chars.clone() }).unwrap()
    }

    pub fn from_json(s: &str) -> Result<Self> {
        let f: CharTokenizerFile = serde_json::from_str(s).context("tokenizer.json is not a valid char tokenizer")?;
        if f.kind != "char" {
            bail!("tokenizer type {:?} is not supported (expected \"char\")", f.kind);
        }
        if f.chars.is_empty() {
            bail!("tokenizer.json has an empty vocabulary");
        }
        let tok = Self::from_chars(f.chars);
        if tok.index.len() != tok.chars.len() {
            bail!("tokenizer.json lists a character twice");
        }
        Ok(tok)
    }
}

/// The tokenizer a model was trained with.
#[derive(Clone, Debug)]
pub enum Tokenizer {
    Char(CharTokenizer),
    /// Boxed: a tokenizers pipeline is large.
    Bpe(Box<crate::data::bpe::BpeTokenizer>),
    /// GPT-2's byte-level BPE (OpenAI's vocabulary, or any with GPT-2's pipeline), e.g. of a
    /// model imported from Hugging Face.
    Gpt2(Box<crate::data::gpt2::Gpt2Tokenizer>),
    /// A SentencePiece vocabulary with llama2.c's encoder (`tokenizer.bin`), e.g. of a model
    /// imported with `lmlab import --llama2c`. Text is encoded with BOS first, as llama2.c's
    /// `run` and SentencePiece's Llama defaults do.
    Llama2c(Box<crate::data::llama2c_tokenizer::Llama2cTokenizer>),
    /// A model's own Hugging Face pipeline that is none of the above, e.g. BERT's WordPiece
    /// of a model imported with `lmlab import --hf` (all-MiniLM-L6-v2). `encode` adds the
    /// post-processor's special tokens (`[CLS] … [SEP]`) and truncates at the saved limit.
    Hf(Box<crate::data::hf_tokenizer::HfTokenizer>),
}

impl Tokenizer {
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Char(t) => t.vocab_size(),
            Tokenizer::Bpe(t) => t.vocab_size(),
            Tokenizer::Gpt2(t) => t.vocab_size(),
            Tokenizer::Llama2c(t) => t.vocab_size(),
            Tokenizer::Hf(t) => t.vocab_size(),
        }
    }
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Char(t) => t.encode(text),
            Tokenizer::Bpe(t) => t.encode(text),
            Tokenizer::Gpt2(t) => t.encode(text),
            Tokenizer::Llama2c(t) => t.encode(text, true, false),
            Tokenizer::Hf(t) => t.encode(text),
        }
    }
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::Char(t) => Ok(t.decode(ids)),
            Tokenizer::Bpe(t) => t.decode(ids),
            Tokenizer::Gpt2(t) => t.decode(ids),
            Tokenizer::Llama2c(t) => t.decode_all(ids),
            Tokenizer::Hf(t) => t.decode(ids, true),
        }
    }
    /// The text of `ids` generated after the token `prev` (the prompt's last): as [`Self::decode`],
    /// except that a SentencePiece (llama2c) piece right after BOS drops its leading space, as
    /// llama2.c prints it. Decoding a continuation on its own would keep that space.
    pub fn decode_after(&self, prev: Option<u32>, ids: &[u32]) -> Result<String> {
        match (self, prev) {
            (Tokenizer::Llama2c(t), Some(p)) => t.decode_after(p, ids),
            _ => self.decode(ids),
        }
    }
    /// The id of the end-of-text token, if the vocabulary has one (GPT-2's `<|endoftext|>`;
    /// llama2.c's BOS, which its models emit between stories and `run` stops at).
    pub fn end_of_text(&self) -> Option<u32> {
        match self {
            Tokenizer::Gpt2(t) => t.end_of_text(),
            Tokenizer::Llama2c(_) => Some(crate::data::llama2c_tokenizer::BOS),
            Tokenizer::Char(_) | Tokenizer::Bpe(_) | Tokenizer::Hf(_) => None,
        }
    }
    /// The id of the masked LM's `[MASK]`: a WordPiece vocabulary's `[MASK]`, or a character
    /// vocabulary's [`MASK_CHAR`] (which an MLM run adds); None when the vocabulary has neither.
    pub fn mask_token(&self) -> Option<u32> {
        match self {
            Tokenizer::Char(t) => t.index.get(&MASK_CHAR).copied(),
            Tokenizer::Hf(t) => t.token_to_id("[MASK]"),
            Tokenizer::Bpe(_) | Tokenizer::Gpt2(_) | Tokenizer::Llama2c(_) => None,
        }
    }
    /// The token stream of a training corpus (`data.path`): a Hugging Face pipeline (BERT's
    /// WordPiece) encodes each non-empty line with its special tokens, untruncated, and the
    /// lines follow one another (the `group_texts` stream of `run_mlm.py`, blank lines left
    /// out); every other tokenizer encodes the text as one stream.
    pub fn encode_corpus(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Hf(t) => t.encode_lines(text),
            _ => self.encode(text),
        }
    }
    /// The ids a masked LM never predicts: a WordPiece vocabulary's special tokens
    /// ([`HfTokenizer::special_ids`](crate::data::hf_tokenizer::HfTokenizer::special_ids)); none
    /// for characters.
    pub fn mlm_special_ids(&self) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Hf(t) => t.special_ids(),
            _ => Ok(Vec::new()),
        }
    }
    /// The kind's name, as error messages and `lmlab import` print it.
    pub fn kind(&self) -> &'static str {
        match self {
            Tokenizer::Char(_) => "char",
            Tokenizer::Bpe(_) => "bpe",
            Tokenizer::Gpt2(_) => "gpt2",
            Tokenizer::Llama2c(_) => "llama2c",
            Tokenizer::Hf(_) => "hf",
        }
    }
    /// `tokenizer.json`: lmlab's char format, or a Hugging Face tokenizers document (BPE, GPT-2).
    pub fn to_json(&self) -> Result<String> {
        match self {
            Tokenizer::Char(t) => Ok(t.to_json()),
            Tokenizer::Bpe(t) => t.to_json(),
            Tokenizer::Gpt2(t) => t.to_json(),
            Tokenizer::Llama2c(t) => Ok(t.to_json()),
            Tokenizer::Hf(t) => t.to_json(),
        }
    }
    /// Reads any of the formats. A tokenizers document (it has a "model" key) is lmlab's BPE
    /// tokenizer when it has lmlab's special tokens (`<pad>` = 0, ...), otherwise a GPT-2
    /// tokenizer when it has GPT-2's pipeline, otherwise (WordPiece, ...) the document's own
    /// pipeline ([`Tokenizer::Hf`]); lmlab's char format has no "model" key.
    pub fn from_json(s: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(s).context("tokenizer.json is not valid JSON")?;
        if v.get("type").and_then(|t| t.as_str()) == Some("llama2c") {
            let t = crate::data::llama2c_tokenizer::Llama2cTokenizer::from_json(s)?;
            return Ok(Tokenizer::Llama2c(Box::new(t)));
        }
        if v.get("model").is_none() {
            return Ok(Tokenizer::Char(CharTokenizer::from_json(s)?));
        }
        if !is_lmlab_bpe(&v) && crate::data::gpt2::Gpt2Tokenizer::check_pipeline(&v).is_ok() {
            return Ok(Tokenizer::Gpt2(Box::new(crate::data::gpt2::Gpt2Tokenizer::from_json(s, "tokenizer.json")?)));
        }
        if !is_lmlab_bpe(&v) {
            let t = crate::data::hf_tokenizer::HfTokenizer::from_json(s, HF_DEFAULT_MAX_LEN)?;
            return Ok(Tokenizer::Hf(Box::new(t)));
        }
        Ok(Tokenizer::Bpe(Box::new(crate::data::bpe::BpeTokenizer::from_json(s, "tokenizer.json")?)))
    }
    pub fn as_char(&self) -> Option<&CharTokenizer> {
        match self {
            Tokenizer::Char(t) => Some(t),
            _ => None,
        }
    }
}

/// The encoding limit of a Hugging Face tokenizer document that sets no truncation: BERT's
/// 512 positions.
pub const HF_DEFAULT_MAX_LEN: usize = 512;

/// Whether a tokenizers document registers lmlab's BPE special tokens (`<pad>` at id 0 first).
pub(crate) fn is_lmlab_bpe(doc: &serde_json::Value) -> bool {
    let pad = crate::data::bpe::SPECIAL_TOKENS[crate::data::bpe::PAD as usize];
    doc.get("added_tokens").and_then(|a| a.as_array()).is_some_and(|a| {
        a.iter().any(|t| {
            t.get("id").and_then(|i| i.as_u64()) == Some(crate::data::bpe::PAD as u64)
                && t.get("content").and_then(|c| c.as_str()) == Some(pad)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_character() {
        let t = CharTokenizer::from_corpus("hello, wörld\n").unwrap();
        assert_eq!(t.vocab_size(), 11);
        let ids = t.encode("wölle").unwrap();
        assert_eq!(t.decode(&ids), "wölle");
        // Ids follow code-point order: '\n' < ' ' < ',' < 'd' ...
        assert_eq!(t.encode("\n ,").unwrap(), vec![0, 1, 2]);
        let err = t.encode("hallo").unwrap_err().to_string();
        assert!(err.contains("'a'") && err.contains("position 1"), "{err}");
        let back = CharTokenizer::from_json(&t.to_json()).unwrap();
        assert_eq!(back, t);
    }
}
