//! llama2.c's `tokenizer.bin`: a SentencePiece vocabulary exported as plain records, with
//! llama2.c's own encoder (score-greedy merges) and decoder.
//!
//! ```text
//! i32 max_token_length
//! per token: f32 score, i32 len, len bytes (UTF-8; SentencePiece's '▁' already replaced by ' ',
//!            BOS/EOS written as "\n<s>\n" / "\n</s>\n", byte tokens as "<0xHH>")
//! ```
//! Little-endian throughout. The file does not store the token count: it is read to the end
//! (llama2.c reads the model's `vocab_size` records; callers check that the two agree).
//!
//! Encoding follows llama2.c's `encode()` step for step, so the ids are the ones `run.c` feeds
//! its model: optional BOS (id 1), a dummy-prefix `" "` token when the text is not empty, one
//! token per UTF-8 code point (or, when the code point is not in the vocabulary, one byte token
//! per byte: id = byte + 3), then repeatedly the adjacent pair whose concatenation is in the
//! vocabulary with the highest score is merged (the leftmost such pair on ties), until no pair
//! merges. Decoding strips the leading space of the token after BOS and turns `<0xHH>` into the
//! byte HH.
//!
//! In a checkpoint the vocabulary is `tokenizer.json` in the form [`Llama2cTokenizer::to_json`]
//! writes (`{"type": "llama2c", "max_token_length", "tokens", "scores"}`), so the checkpoint is
//! self-contained like every other; `tokenizer.bin` bytes come back from it unchanged.

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Id of the beginning-of-sequence token (SentencePiece's and llama2.c's convention).
pub const BOS: u32 = 1;
/// Id of the end-of-sequence token.
pub const EOS: u32 = 2;

/// A stored token string: text when it is valid UTF-8 (SentencePiece pieces always are),
/// else its bytes.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Piece {
    Text(String),
    Bytes(Vec<u8>),
}

/// `tokenizer.json` of a llama2.c vocabulary.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Llama2cTokenizerFile {
    #[serde(rename = "type")]
    kind: String,
    max_token_length: u32,
    tokens: Vec<Piece>,
    scores: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct Llama2cTokenizer {
    /// Token strings as stored (bytes, not necessarily valid UTF-8 on their own).
    vocab: Vec<Vec<u8>>,
    scores: Vec<f32>,
    max_token_length: u32,
    /// Token string → id (the first id when a string repeats).
    lookup: HashMap<Vec<u8>, u32>,
}

impl Llama2cTokenizer {
    /// Reads a `tokenizer.bin` file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read tokenizer {}", path.display()))?;
        Self::from_bytes(&bytes)
            .with_context(|| format!("tokenizer {} is not a valid llama2.c tokenizer.bin", path.display()))
    }

    /// Parses `tokenizer.bin` bytes; a truncated record is an error naming the token and offset.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        ensure!(bytes.len() >= 4, "the file has {} bytes, too short for the max_token_length header", bytes.len());
        let max_len = i32::from_le_bytes(bytes[0..4].try_into().unwrap());
        ensure!(max_len > 0, "max_token_length is {max_len}, it must be positive");
        let (mut vocab, mut scores) = (Vec::new(), Vec::new());
        let mut off = 4usize;
        while off < bytes.len() {
            let id = vocab.len();
            ensure!(
                bytes.len() - off >= 8,
                "truncated: token {id} at byte {off} needs 8 header bytes (score, length), only {} left",
                bytes.len() - off
            );
            let score = f32::from_le_bytes(bytes[off..off + 4].try_into().unwrap());
            let len = i32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap());
            off += 8;
            ensure!(len >= 0, "token {id} at byte {} has a negative length {len}", off - 8);
            let len = len as usize;
            ensure!(
                bytes.len() - off >= len,
                "truncated: token {id} has length {len} but only {} bytes are left",
                bytes.len() - off
            );
            vocab.push(bytes[off..off + len].to_vec());
            scores.push(score);
            off += len;
        }
        Self::new(vocab, scores, max_len as u32)
    }

    /// A vocabulary from its token strings and scores (by id).
    pub fn new(vocab: Vec<Vec<u8>>, scores: Vec<f32>, max_token_length: u32) -> Result<Self> {
        ensure!(!vocab.is_empty(), "the vocabulary holds no tokens");
        ensure!(vocab.len() <= u32::MAX as usize, "too many tokens");
        ensure!(vocab.len() == scores.len(), "{} tokens but {} scores", vocab.len(), scores.len());
        ensure!(max_token_length > 0, "max_token_length is 0, it must be positive");
        if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
            bail!("token {i} has a non-finite score {}", scores[i]);
        }
        let mut lookup = HashMap::with_capacity(vocab.len());
        for (i, t) in vocab.iter().enumerate() {
            lookup.entry(t.clone()).or_insert(i as u32);
        }
        Ok(Llama2cTokenizer { vocab, scores, max_token_length, lookup })
    }

    /// The checkpoint form (see the module documentation).
    pub fn to_json(&self) -> String {
        let tokens = self
            .vocab
            .iter()
            .map(|t| match std::str::from_utf8(t) {
                Ok(s) => Piece::Text(s.to_string()),
                Err(_) => Piece::Bytes(t.clone()),
            })
            .collect();
        let file = Llama2cTokenizerFile {
            kind: "llama2c".into(),
            max_token_length: self.max_token_length,
            tokens,
            scores: self.scores.clone(),
        };
        serde_json::to_string(&file).expect("a vocabulary always serializes")
    }

    /// Reads [`Self::to_json`]'s form.
    pub fn from_json(s: &str) -> Result<Self> {
        let f: Llama2cTokenizerFile =
            serde_json::from_str(s).context("tokenizer.json is not a valid llama2c tokenizer")?;
        ensure!(f.kind == "llama2c", "tokenizer type {:?} is not \"llama2c\"", f.kind);
        let vocab = f
            .tokens
            .into_iter()
            .map(|p| match p {
                Piece::Text(s) => s.into_bytes(),
                Piece::Bytes(b) => b,
            })
            .collect();
        Self::new(vocab, f.scores, f.max_token_length).context("tokenizer.json")
    }

    /// Serializes back to `tokenizer.bin` bytes (the input bytes exactly, for a parsed file).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.vocab.iter().map(|t| 8 + t.len()).sum::<usize>());
        out.extend_from_slice(&(self.max_token_length as i32).to_le_bytes());
        for (t, s) in self.vocab.iter().zip(&self.scores) {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&(t.len() as i32).to_le_bytes());
            out.extend_from_slice(t);
        }
        out
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    pub fn max_token_length(&self) -> usize {
        self.max_token_length as usize
    }

    /// The stored string of token `id`.
    pub fn token(&self, id: u32) -> Option<&[u8]> {
        self.vocab.get(id as usize).map(|v| v.as_slice())
    }

    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// The id of the token whose string is exactly `s`.
    pub fn id_of(&self, s: &[u8]) -> Option<u32> {
        self.lookup.get(s).copied()
    }

    /// Token ids of `text`, exactly as llama2.c's `encode(text, bos, eos)`.
    pub fn encode(&self, text: &str, bos: bool, eos: bool) -> Result<Vec<u32>> {
        let mut tokens = Vec::with_capacity(text.len() + 3);
        if bos {
            tokens.push(BOS);
        }
        // SentencePiece's add_dummy_prefix: the text is treated as if it started with a space.
        if !text.is_empty() {
            let space = self.id_of(b" ").context("the vocabulary has no \" \" token for the dummy prefix")?;
            tokens.push(space);
        }
        // One token per code point, or its bytes when the code point is not in the vocabulary.
        let b = text.as_bytes();
        let mut cp: Vec<u8> = Vec::with_capacity(4);
        for i in 0..b.len() {
            if b[i] & 0xC0 != 0x80 {
                cp.clear();
            }
            cp.push(b[i]);
            let continues = i + 1 < b.len() && b[i + 1] & 0xC0 == 0x80;
            if continues && cp.len() < 4 {
                continue;
            }
            match self.id_of(&cp) {
                Some(id) => tokens.push(id),
                None => {
                    for &byte in &cp {
                        // The first three ids are <unk>, <s>, </s>; then the 256 byte tokens.
                        let id = byte as u32 + 3;
                        ensure!(
                            self.token(id) == Some(format!("<0x{byte:02X}>").as_bytes()),
                            "byte {byte:#04x} of {:?} has no byte-fallback token <0x{byte:02X}> at id {id}",
                            String::from_utf8_lossy(&cp)
                        );
                        tokens.push(id);
                    }
                }
            }
            cp.clear();
        }
        // Merge the best-scoring adjacent pair until none is in the vocabulary.
        let mut pair: Vec<u8> = Vec::with_capacity(2 * self.max_token_length as usize + 2);
        loop {
            let mut best: Option<(f32, u32, usize)> = None;
            for i in 0..tokens.len().saturating_sub(1) {
                pair.clear();
                pair.extend_from_slice(&self.vocab[tokens[i] as usize]);
                pair.extend_from_slice(&self.vocab[tokens[i + 1] as usize]);
                if let Some(id) = self.id_of(&pair) {
                    let score = self.scores[id as usize];
                    // llama2.c starts from -1e10 and keeps the first strictly better pair.
                    if score > best.map_or(-1e10, |b| b.0) {
                        best = Some((score, id, i));
                    }
                }
            }
            let Some((_, id, i)) = best else { break };
            tokens[i] = id;
            tokens.remove(i + 1);
        }
        if eos {
            tokens.push(EOS);
        }
        Ok(tokens)
    }

    /// The bytes token `id` stands for after token `prev` (llama2.c's `decode`): without its
    /// leading space right after BOS, and a byte token `<0xHH>` as the single byte HH.
    pub fn piece(&self, prev: u32, id: u32) -> Result<Vec<u8>> {
        let Some(mut s) = self.token(id) else {
            bail!("token id {id} is outside the vocabulary of {} tokens", self.vocab.len())
        };
        if prev == BOS && s.first() == Some(&b' ') {
            s = &s[1..];
        }
        if let Some(byte) = parse_byte_token(s) {
            return Ok(vec![byte]);
        }
        Ok(s.to_vec())
    }

    /// The text of `ids` as llama2.c prints it: each token's [`Self::piece`] after the one before
    /// it (the first id is the context, normally BOS, and is not printed), skipping pieces that are
    /// a single ASCII control byte other than whitespace, as llama2.c's `safe_printf` does.
    /// Unlike `safe_printf`, single bytes ≥ 0x80 are kept, so byte-fallback UTF-8 survives.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for w in ids.windows(2) {
            let p = self.piece(w[0], w[1])?;
            if printable(&p) {
                out.extend_from_slice(&p);
            }
        }
        Ok(out)
    }

    /// [`Self::decode_bytes`] as a string (invalid UTF-8 replaced by U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    /// The text of every id in `ids` (none is taken as context), as a checkpoint tokenizer
    /// decodes: BOS and EOS print nothing, the token right after BOS loses its leading space.
    /// So `decode_all(encode(text, true, false))` is `text` for text the vocabulary covers, and
    /// a continuation decoded alone keeps the space it starts with.
    pub fn decode_all(&self, ids: &[u32]) -> Result<String> {
        self.decode_after(u32::MAX, ids)
    }

    /// [`Self::decode_all`] of ids that follow the token `prev` (not printed).
    pub fn decode_after(&self, mut prev: u32, ids: &[u32]) -> Result<String> {
        let mut out = Vec::new();
        for &id in ids {
            if id != BOS && id != EOS {
                let p = self.piece(prev, id)?;
                if printable(&p) {
                    out.extend_from_slice(&p);
                }
            }
            prev = id;
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Whether a decoded piece is printed: everything but a lone non-whitespace control byte.
pub fn printable(piece: &[u8]) -> bool {
    match piece {
        [] => false,
        [b] => !(b.is_ascii_control() && !b.is_ascii_whitespace() && *b != 0x0B),
        _ => true,
    }
}

/// `<0xHH>` (two hex digits) → the byte.
fn parse_byte_token(s: &[u8]) -> Option<u8> {
    if s.len() == 6 && s.starts_with(b"<0x") && s[5] == b'>' {
        u8::from_str_radix(std::str::from_utf8(&s[3..5]).ok()?, 16).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny vocabulary in llama2.c's layout: 3 specials, 256 byte tokens, then pieces.
    fn toy() -> Llama2cTokenizer {
        let mut b = Vec::new();
        b.extend_from_slice(&8i32.to_le_bytes());
        let mut push = |s: &[u8], score: f32| {
            b.extend_from_slice(&score.to_le_bytes());
            b.extend_from_slice(&(s.len() as i32).to_le_bytes());
            b.extend_from_slice(s);
        };
        push(b"<unk>", 0.0);
        push(b"\n<s>\n", 0.0);
        push(b"\n</s>\n", 0.0);
        for byte in 0..=255u8 {
            push(format!("<0x{byte:02X}>").as_bytes(), 0.0);
        }
        for (s, score) in [(" ", -1.0), ("a", -2.0), ("b", -3.0), (" a", -4.0), ("ab", -5.0), (" ab", -6.0)] {
            push(s.as_bytes(), score);
        }
        Llama2cTokenizer::from_bytes(&b).unwrap()
    }

    #[test]
    fn encode_merges_by_score_and_falls_back_to_bytes() {
        let t = toy();
        // " ab" → [" ", "a", "b"] → " a" (-4) beats "ab" (-5) → [" a", "b"] → " ab".
        assert_eq!(t.encode("ab", true, false).unwrap(), vec![BOS, 264]);
        // 'é' is not in the vocabulary: its two UTF-8 bytes become byte tokens (byte + 3).
        assert_eq!(t.encode("é", false, true).unwrap(), vec![259, 0xC3 + 3, 0xA9 + 3, EOS]);
        assert_eq!(t.encode("", true, false).unwrap(), vec![BOS]);
        assert_eq!(t.decode(&[BOS, 264, 260, 0xC3 + 3, 0xA9 + 3]).unwrap(), "aba\u{e9}");
        assert_eq!(t.to_bytes(), Llama2cTokenizer::from_bytes(&t.to_bytes()).unwrap().to_bytes());
        assert_eq!(t.decode_all(&t.encode("ab é", true, false).unwrap()).unwrap(), "ab é");
        assert_eq!(t.decode_all(&[262, 261]).unwrap(), " ab");
    }

    #[test]
    fn json_round_trip_keeps_the_bytes() {
        let t = toy();
        let back = Llama2cTokenizer::from_json(&t.to_json()).unwrap();
        assert_eq!(back.to_bytes(), t.to_bytes());
        // A token that is not UTF-8 on its own survives as bytes.
        let odd = Llama2cTokenizer::new(vec![b"a".to_vec(), vec![0xE2, 0x96]], vec![0.0, -1.0], 2).unwrap();
        let back = Llama2cTokenizer::from_json(&odd.to_json()).unwrap();
        assert_eq!(back.to_bytes(), odd.to_bytes());
        let bad = t.to_json().replace("\"scores\":[", "\"scores\":[1,");
        let err = format!("{:#}", Llama2cTokenizer::from_json(&bad).unwrap_err());
        assert!(err.contains("tokens but") && err.contains("scores"), "{err}");
    }
}
