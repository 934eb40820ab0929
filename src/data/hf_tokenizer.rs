//! A model's own Hugging Face `tokenizer.json` (BERT's WordPiece, or any model the `tokenizers`
//! crate reads), with its normalizer, pre-tokenizer and post-processor, so the ids are the ones
//! the model was trained on: for BERT, lower-cased and accent-stripped WordPiece pieces between
//! `[CLS]` and `[SEP]`.
//!
//! Truncation is set here, not taken from the file: a sentence-transformers model truncates at
//! its `max_seq_length` (256 for all-MiniLM-L6-v2), while its `tokenizer.json` may say otherwise
//! (128, with fixed padding to 128, in the MiniLM package). The limit counts the special tokens,
//! as in `transformers` (`max_length=256` gives at most 254 text pieces + `[CLS]` + `[SEP]`).
//! The file's padding is switched off; batches are padded by their user
//! (`infer::embed::Embedder`) with [`HfTokenizer::pad_id`].

use anyhow::{anyhow, bail, ensure, Context, Result};
use std::path::Path;
use tokenizers::{PostProcessor, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// The pieces of a text and the character range `(start, end)` of each in the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pieces {
    pub ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
}

/// A `tokenizer.json` tokenizer with the post-processor's special tokens and truncation.
#[derive(Clone, Debug)]
pub struct HfTokenizer {
    inner: Tokenizer,
    /// The same pipeline without truncation or special tokens' limit, for
    /// [`HfTokenizer::pieces_with_offsets`] (a QA context is cut into windows by its user).
    untruncated: Tokenizer,
    max_len: usize,
    pad_id: u32,
}

impl HfTokenizer {
    /// Loads `path` (a `tokenizer.json`); encodings are truncated to `max_len` tokens, special
    /// tokens included.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read tokenizer {}", path.display()))?;
        Self::from_bytes(&bytes, max_len).with_context(|| format!("tokenizer {}", path.display()))
    }

    /// [`HfTokenizer::from_file`] on the file's bytes.
    pub fn from_bytes(json: &[u8], max_len: usize) -> Result<Self> {
        let mut inner = Tokenizer::from_bytes(json).map_err(|e| anyhow!("not a tokenizers JSON document: {e}"))?;
        let added = inner.get_post_processor().map_or(0, |p| p.added_tokens(false));
        ensure!(
            max_len > added,
            "max length {max_len} leaves no room for text next to the {added} special tokens the post-processor adds"
        );
        // The pad id the file names (BERT: [PAD] = 0), else a [PAD] token, else 0. Padded
        // positions are masked, so the id only has to be in the vocabulary.
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| inner.token_to_id("[PAD]"))
            .or_else(|| inner.token_to_id("<pad>"))
            .unwrap_or(0);
        ensure!(
            (pad_id as usize) < inner.get_vocab_size(true),
            "pad id {pad_id} is outside the vocabulary of {} tokens",
            inner.get_vocab_size(true)
        );
        inner.with_padding(None);
        let mut untruncated = inner.clone();
        untruncated.with_truncation(None).map_err(|e| anyhow!("cannot switch truncation off: {e}"))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| anyhow!("cannot truncate at {max_len}: {e}"))?;
        Ok(HfTokenizer { inner, untruncated, max_len, pad_id })
    }

    /// Ids of `text` with the post-processor's special tokens, at most `max_len` of them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| anyhow!("cannot encode {text:?}: {e}"))?;
        let ids = enc.get_ids();
        if ids.len() > self.max_len {
            bail!("the tokenizer returned {} ids for a limit of {}", ids.len(), self.max_len);
        }
        Ok(ids.to_vec())
    }

    /// Each non-empty line of `text` encoded with the post-processor's special tokens and no
    /// truncation, the lines' ids concatenated: the stream a masked LM is trained on (BERT's
    /// `[CLS] line [SEP] [CLS] line [SEP] ...`). Lines are encoded in parallel.
    pub fn encode_lines(&self, text: &str) -> Result<Vec<u32>> {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        ensure!(!lines.is_empty(), "the text has no non-empty line to encode");
        let encodings =
            self.untruncated.encode_batch(lines, true).map_err(|e| anyhow!("cannot encode the text's lines: {e}"))?;
        Ok(encodings.iter().flat_map(|e| e.get_ids().iter().copied()).collect())
    }

    /// The ids a masked LM never predicts, as `special_tokens_mask` marks them in `run_mlm.py`:
    /// the tokens the post-processor adds around a line (`[CLS]`, `[SEP]`) and `[PAD]`. An `[UNK]` that
    /// WordPiece produces for an unknown word, or a `[MASK]` written in the text, is an ordinary
    /// position there too.
    pub fn special_ids(&self) -> Result<Vec<u32>> {
        let added = self.untruncated.encode("", true).map_err(|e| anyhow!("cannot encode an empty line: {e}"))?;
        let mut ids: Vec<u32> = added.get_ids().to_vec();
        ids.push(self.pad_id);
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// The pieces of `text` without special tokens or truncation, each with its character range
    /// `(start, end)` in `text`, counted in Unicode code points as SQuAD's `answer_start` is
    /// (the `tokenizers` crate reports byte offsets into the original text, before
    /// normalisation: "Zürich" keeps its 6 characters though BERT strips the accent).
    pub fn pieces_with_offsets(&self, text: &str) -> Result<Pieces> {
        let enc = self.untruncated.encode(text, false).map_err(|e| anyhow!("cannot encode {text:?}: {e}"))?;
        // char_at[byte] = the number of characters before that byte (for every char boundary
        // and the end of the text).
        let mut char_at = vec![0usize; text.len() + 1];
        let mut chars = 0;
        for (byte, ch) in text.char_indices() {
            char_at[byte] = chars;
            chars += 1;
            // Bytes inside a character map to it (offsets always fall on boundaries; this only
            // keeps a stray offset from reading a wrong 0).
            for k in 1..ch.len_utf8() {
                char_at[byte + k] = chars - 1;
            }
        }
        char_at[text.len()] = chars;
        let offsets = enc
            .get_offsets()
            .iter()
            .map(|&(s, e)| {
                ensure!(
                    s <= e && e <= text.len(),
                    "the tokenizer gave offsets {s}..{e} outside the text of {} bytes",
                    text.len()
                );
                Ok((char_at[s], char_at[e]))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Pieces { ids: enc.get_ids().to_vec(), offsets })
    }

    /// Text of `ids` (special tokens dropped when `skip_special`); an id outside the vocabulary
    /// is an error naming it.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        super::bpe::decode_ids(&self.inner, ids, skip_special)
    }

    /// The token string of `id` (e.g. `##ing`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Most ids [`HfTokenizer::encode`] returns.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The id to pad batches with.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The id of a token string (`[CLS]`, `[SEP]`, `[MASK]`, ...), if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The whole pipeline as a tokenizers JSON document, its truncation set to
    /// [`HfTokenizer::max_len`]: what a checkpoint's `tokenizer.json` holds.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(|e| anyhow!("cannot serialise the tokenizer: {e}"))
    }

    /// Reads a document [`HfTokenizer::to_json`] wrote: the limit is the document's truncation
    /// length, else `default_max_len`.
    pub fn from_json(json: &str, default_max_len: usize) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(json).context("tokenizer.json is not valid JSON")?;
        let max_len =
            v.pointer("/truncation/max_length").and_then(|m| m.as_u64()).map_or(default_max_len, |m| m as usize);
        Self::from_bytes(json.as_bytes(), max_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BERT-style tokenizer.json: WordPiece over 12 pieces, BERT normalizer and
    /// pre-tokenizer, `[CLS] $A [SEP]` template, and a file padding/truncation that must not apply.
    pub(crate) fn tiny_bert_json() -> String {
        let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "##s", "on", "mat", ".", "a"];
        let v: Vec<String> = vocab.iter().enumerate().map(|(i, t)| format!("\"{t}\": {i}")).collect();
        let special = |id: usize, t: &str| {
            format!(
                "{{\"id\": {id}, \"content\": \"{t}\", \"single_word\": false, \"lstrip\": false, \
                 \"rstrip\": false, \"normalized\": false, \"special\": true}}"
            )
        };
        format!(
            r###"{{
  "version": "1.0",
  "truncation": {{"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0}},
  "padding": {{"strategy": {{"Fixed": 16}}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}},
  "added_tokens": [{}, {}, {}, {}],
  "normalizer": {{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}},
  "pre_tokenizer": {{"type": "BertPreTokenizer"}},
  "post_processor": {{"type": "TemplateProcessing",
    "single": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}],
    "pair": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}, {{"Sequence": {{"id": "B", "type_id": 1}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 1}}}}],
    "special_tokens": {{"[CLS]": {{"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}}, "[SEP]": {{"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}}}}},
  "decoder": {{"type": "WordPiece", "prefix": "##", "cleanup": true}},
  "model": {{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": {{{}}}}}
}}"###,
            special(0, "[PAD]"),
            special(1, "[UNK]"),
            special(2, "[CLS]"),
            special(3, "[SEP]"),
            v.join(", ")
        )
    }

    #[test]
    fn wordpiece_with_template_lowercase_and_truncation() {
        let t = HfTokenizer::from_bytes(tiny_bert_json().as_bytes(), 16).unwrap();
        // Lower-cased and accent-stripped (BERT's normalizer with lowercase), "cats" → cat ##s,
        // an unknown word → [UNK]; no padding to the file's 16, no truncation at the file's 4.
        let full = vec![2, 4, 5, 7, 6, 8, 11, 1, 10, 3];
        assert_eq!(t.encode("The CATS sát on a dog.").unwrap(), full);
        // Truncated to 8 ids, [SEP] kept: 6 text pieces.
        let short = HfTokenizer::from_bytes(tiny_bert_json().as_bytes(), 8).unwrap();
        assert_eq!(short.encode("The CATS sát on a dog.").unwrap(), vec![2, 4, 5, 7, 6, 8, 11, 3]);
        assert_eq!(short.max_len(), 8);
        assert_eq!(t.encode("").unwrap(), vec![2, 3]);
        assert_eq!(t.encode("  \t ").unwrap(), vec![2, 3]);
        assert_eq!(t.encode("the mat.").unwrap(), vec![2, 4, 9, 10, 3]);
        assert_eq!(t.pad_id(), 0);
        assert_eq!(t.decode(&[2, 4, 5, 7, 3], true).unwrap(), "the cats");
        assert!(t.decode(&[99], false).unwrap_err().to_string().contains("99"));
    }

    #[test]
    fn offsets_are_characters_of_the_original_text() {
        let t = HfTokenizer::from_bytes(tiny_bert_json().as_bytes(), 8).unwrap();
        // Not truncated at 8, no [CLS]/[SEP]; "sát" is 4 bytes but 3 characters, and the
        // accent-stripped piece still points at the original characters.
        let text = "Sát: the CATS sat on a mat.";
        let super::Pieces { ids, offsets } = t.pieces_with_offsets(text).unwrap();
        assert_eq!(ids, vec![6, 1, 4, 5, 7, 6, 8, 11, 9, 10]);
        let chars: Vec<char> = text.chars().collect();
        let pieces: Vec<String> = offsets.iter().map(|&(s, e)| chars[s..e].iter().collect()).collect();
        assert_eq!(pieces, ["Sát", ":", "the", "CAT", "S", "sat", "on", "a", "mat", "."]);
        assert_eq!(offsets[0], (0, 3));
        assert_eq!(offsets[2], (5, 8));
        assert_eq!(t.pieces_with_offsets("").unwrap().ids, Vec::<u32>::new());
    }

    #[test]
    fn json_round_trip_keeps_the_limit() {
        let t = HfTokenizer::from_bytes(tiny_bert_json().as_bytes(), 8).unwrap();
        let back = HfTokenizer::from_json(&t.to_json().unwrap(), 512).unwrap();
        assert_eq!(back.max_len(), 8);
        assert_eq!(back.encode("The CATS sát on a dog.").unwrap(), vec![2, 4, 5, 7, 6, 8, 11, 3]);
        assert_eq!(back.token_to_id("[SEP]"), Some(3));
    }

    #[test]
    fn limits_that_leave_no_room_are_errors() {
        let e = HfTokenizer::from_bytes(tiny_bert_json().as_bytes(), 2).unwrap_err().to_string();
        assert!(e.contains("no room"), "{e}");
        assert!(HfTokenizer::from_bytes(b"{not json", 8).is_err());
    }
}
