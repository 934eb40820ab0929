//! Byte-level BPE subword tokenizer, on Hugging Face `tokenizers`.
//!
//! Byte-level (GPT-2 style): text is split by the GPT-2 regex into words, each word's UTF-8 bytes
//! are mapped to 256 printable characters, and BPE merges are learned over those. All 256 byte
//! symbols are always in the vocabulary, so no text is ever unknown and `decode(encode(s)) == s`
//! for every string (leading, trailing and repeated whitespace, tabs, rare characters included).
//! No normalizer runs, for the same reason.
//!
//! The special tokens have fixed ids: [`PAD`] `<pad>` = 0, [`BOS`] `<s>` = 1, [`EOS`] `</s>` = 2,
//! [`UNK`] `<unk>` = 3. They are never produced by [`BpeTokenizer::encode`]: a literal `"<s>"` in
//! the text is encoded as ordinary text, so input text cannot inject control tokens.

use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

pub const PAD: u32 = 0;
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;
pub const UNK: u32 = 3;
/// The special tokens, indexed by their ids.
pub const SPECIAL_TOKENS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];

/// Byte-level BPE tokenizer with the special tokens above.
#[derive(Clone, Debug)]
pub struct BpeTokenizer {
    inner: Tokenizer,
}

/// The pre-tokenizer, also used as decoder: no prefix space is added (so a string's first word
/// decodes back without one), and the GPT-2 regex splits words from punctuation and whitespace.
fn byte_level() -> ByteLevel {
    ByteLevel::new(false, false, true)
}

fn check_vocab_size(vocab_size: usize) -> Result<()> {
    let min_vocab = SPECIAL_TOKENS.len() + 256;
    ensure!(
        vocab_size > min_vocab,
        "BPE vocab_size {vocab_size} is too small: the 4 special tokens and 256 byte symbols alone take {min_vocab}"
    );
    Ok(())
}

impl BpeTokenizer {
    /// Trains a BPE vocabulary of `vocab_size` tokens (specials and the 256 byte symbols included)
    /// on the lines of `files`, read as UTF-8 text. Pass the German and the English files together
    /// for one joint vocabulary. Line endings are not part of the training text.
    pub fn train(files: &[PathBuf], vocab_size: usize) -> Result<Self> {
        check_vocab_size(vocab_size)?;
        ensure!(!files.is_empty(), "no training files given for the BPE tokenizer");
        let mut lines = Vec::new();
        for path in files {
            let text =
                std::fs::read(path).with_context(|| format!("cannot read BPE training file {}", path.display()))?;
            let text = String::from_utf8(text).map_err(|e| {
                let line = e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
                anyhow!("BPE training file {} is not valid UTF-8 (line {line})", path.display())
            })?;
            lines.extend(text.lines().map(str::to_owned));
        }
        Self::train_on_texts(&lines, vocab_size)
    }

    /// Trains a BPE vocabulary of `vocab_size` tokens on `texts` (each one training sequence;
    /// a text may hold newlines, which are ordinary bytes to the byte-level tokenizer).
    pub fn train_on_texts<S: AsRef<str> + Send + Sync>(texts: &[S], vocab_size: usize) -> Result<Self> {
        check_vocab_size(vocab_size)?;
        let model =
            BPE::builder().unk_token(SPECIAL_TOKENS[UNK as usize].to_owned()).build().map_err(|e| anyhow!(e))?;
        let mut inner = Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(byte_level()));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let specials: Vec<AddedToken> = SPECIAL_TOKENS.iter().map(|s| AddedToken::from(*s, true)).collect();
        let trainer = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect::<HashSet<char>>())
            .build();
        let mut trainer = TrainerWrapper::from(trainer);
        inner.train(&mut trainer, texts.iter().map(|t| t.as_ref())).map_err(|e| anyhow!("BPE training failed: {e}"))?;
        Self::from_inner(inner, "the trained tokenizer")
    }

    /// Checks the special tokens and sets the encoding options that the JSON does not store.
    fn from_inner(mut inner: Tokenizer, what: &str) -> Result<Self> {
        let added = inner.get_added_tokens_decoder();
        for (id, name) in SPECIAL_TOKENS.iter().enumerate() {
            match inner.token_to_id(name) {
                Some(got) if got == id as u32 => {}
                Some(got) => bail!("{what}: special token {name} has id {got}, expected {id}"),
                None => bail!("{what}: special token {name} (id {id}) is missing"),
            }
            ensure!(
                added.get(&(id as u32)).is_some_and(|t| t.special && t.content == *name),
                "{what}: {name} (id {id}) is not registered as a special token"
            );
        }
        // Literal "<s>" etc. in the input are text, not control tokens.
        inner.set_encode_special_tokens(true);
        Ok(BpeTokenizer { inner })
    }

    /// Writes `tokenizer.json` atomically: a temporary file in the same directory, renamed over `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.to_json()?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?;
        let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(json.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow!("cannot write tokenizer to {}: {e}", path.display())
        })
    }

    /// The tokenizers JSON document (what [`BpeTokenizer::save`] writes).
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(|e| anyhow!("cannot serialize the tokenizer: {e}"))
    }

    /// Parses a tokenizers JSON document; `what` names it in errors.
    pub fn from_json(json: &str, what: &str) -> Result<Self> {
        let inner = Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| anyhow!("{what} is not a valid tokenizers JSON file: {e}"))?;
        Self::from_inner(inner, what)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read tokenizer file {}", path.display()))?;
        let inner = Tokenizer::from_bytes(&bytes)
            .map_err(|e| anyhow!("{} is not a valid tokenizers JSON file: {e}", path.display()))?;
        Self::from_inner(inner, &path.display().to_string())
    }

    /// Number of token ids (specials included); every id is below this.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`, without BOS/EOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        encode_ids(&self.inner, text)
    }

    /// Text of `ids`, special tokens skipped; an id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        decode_ids(&self.inner, ids, true)
    }

    /// The token string of `id` (byte-level symbols, e.g. `Ġthe` for " the"), for inspection.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

/// Token ids of `text` under a Hugging Face tokenizer, without added BOS/EOS.
pub(crate) fn encode_ids(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let enc = tok.encode_fast(text, false).map_err(|e| anyhow!("cannot encode {text:?}: {e}"))?;
    Ok(enc.get_ids().to_vec())
}

/// Text of `ids` (special tokens dropped when `skip_special`); an id outside the vocabulary is
/// an error naming it, not a panic inside `tokenizers`.
pub(crate) fn decode_ids(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> Result<String> {
    let n = tok.get_vocab_size(true);
    if let Some((pos, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= n) {
        bail!("token id {id} at position {pos} is outside the vocabulary of {n} tokens");
    }
    tok.decode(ids, skip_special).map_err(|e| anyhow!("cannot decode: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.\n\
        Two young, White males are outside near many bushes.\n\
        Ein kleines Mädchen klettert in ein Spielhaus aus Holz.\n\
        A little girl climbing into a wooden playhouse.\n";

    fn small_tokenizer(dir: &Path) -> BpeTokenizer {
        let f = dir.join("sample.txt");
        std::fs::write(&f, SAMPLE.repeat(5)).unwrap();
        BpeTokenizer::train(&[f], 600).unwrap()
    }

    #[test]
    fn bpe_specials_round_trip_save_load() {
        let dir = tempfile::tempdir().unwrap();
        let tok = small_tokenizer(dir.path());
        for (id, name) in SPECIAL_TOKENS.iter().enumerate() {
            assert_eq!(tok.id_to_token(id as u32).as_deref(), Some(*name));
        }
        assert!(tok.vocab_size() > 300 && tok.vocab_size() <= 600, "{}", tok.vocab_size());
        // Text the tokenizer never saw, odd whitespace and literal special-token strings included.
        for s in ["Männer", "  two\tspaces  ", "日本語 😀 ça", "<s> </s> <pad><unk>", "", "\n", "a\r\nb"] {
            let ids = tok.encode(s).unwrap();
            assert!(ids.iter().all(|&i| i > UNK), "{s:?} encoded to a special token: {ids:?}");
            assert_eq!(tok.decode(&ids).unwrap(), s);
        }
        // Frequent words became single tokens.
        assert_eq!(tok.encode(" Männer").unwrap().len(), 1);
        // Specials are skipped when decoding; ids past the vocabulary are an error.
        let mut ids = vec![BOS];
        ids.extend(tok.encode("Holz.").unwrap());
        ids.extend([EOS, PAD, PAD]);
        assert_eq!(tok.decode(&ids).unwrap(), "Holz.");
        let err = tok.decode(&[5, tok.vocab_size() as u32]).unwrap_err().to_string();
        assert!(err.contains("position 1"), "{err}");

        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        let back = BpeTokenizer::load(&path).unwrap();
        assert_eq!(back.vocab_size(), tok.vocab_size());
        for s in SAMPLE.lines().chain(["<s>x"]) {
            assert_eq!(back.encode(s).unwrap(), tok.encode(s).unwrap());
        }
        // The temporary file is gone.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");

        // Training is deterministic.
        let again = small_tokenizer(dir.path());
        assert_eq!(again.inner.to_string(false).unwrap(), tok.inner.to_string(false).unwrap());
    }

    #[test]
    fn bpe_load_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let err = format!("{:#}", BpeTokenizer::load(&missing).err().unwrap());
        assert!(err.contains("nope.json") && err.contains("cannot read"), "{err}");

        let corrupt = dir.path().join("corrupt.json");
        std::fs::write(&corrupt, "{\"version\": \"1.0\", \"model\": ").unwrap();
        let err = format!("{:#}", BpeTokenizer::load(&corrupt).err().unwrap());
        assert!(err.contains("corrupt.json") && err.contains("not a valid"), "{err}");

        // A valid tokenizer file without our special tokens.
        let tok = small_tokenizer(dir.path());
        let json = tok.inner.to_string(false).unwrap().replace("<unk>", "<oov>");
        let odd = dir.path().join("odd.json");
        std::fs::write(&odd, json).unwrap();
        let err = format!("{:#}", BpeTokenizer::load(&odd).err().unwrap());
        assert!(err.contains("<unk>") && err.contains("missing"), "{err}");

        assert!(BpeTokenizer::train(&[missing], 1000).is_err());
        let err = BpeTokenizer::train(&[], 200).err().unwrap().to_string();
        assert!(err.contains("too small"), "{err}");
    }
}
