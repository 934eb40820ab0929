//! The tokenizer files of a GPT-2 directory for each tokenizer kind (character, lmlab's BPE,
//! GPT-2's byte-level BPE): `tokenizer.json` and `tokenizer_config.json`, plus `vocab.json` and
//! `merges.txt` for GPT-2, written on export and recognized on import.

use crate::data::bpe::BpeTokenizer;
use crate::data::gpt2::{Gpt2Tokenizer, END_OF_TEXT_STR};
use crate::data::tokenizer::is_lmlab_bpe;
use crate::data::{CharTokenizer, Tokenizer};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::path::Path;

/// The tokenizer files for transformers' `AutoTokenizer`. Every kind writes its tokenizers
/// document as `tokenizer.json`; `tokenizer_config.json` names the class and special tokens and
/// sets `split_special_tokens` (lmlab encodes a literal special token as text) and no clean-up
/// of spaces (lmlab's decode returns the text exactly).
pub(super) fn tokenizer_files(tok: &Tokenizer, max_len: usize) -> Result<Vec<(String, Vec<u8>)>> {
    use serde_json::json;
    let mut files = Vec::new();
    let config = match tok {
        Tokenizer::Char(t) => {
            files.push(("tokenizer.json".to_string(), char_tokenizer_json(t)?.into_bytes()));
            json!({
                "tokenizer_class": "PreTrainedTokenizerFast",
                "clean_up_tokenization_spaces": false,
                "model_max_length": max_len,
            })
        }
        Tokenizer::Bpe(t) => {
            use crate::data::bpe::SPECIAL_TOKENS as S;
            files.push(("tokenizer.json".to_string(), t.to_json()?.into_bytes()));
            json!({
                "tokenizer_class": "PreTrainedTokenizerFast",
                "pad_token": S[0], "bos_token": S[1], "eos_token": S[2], "unk_token": S[3],
                "split_special_tokens": true,
                "clean_up_tokenization_spaces": false,
                "model_max_length": max_len,
            })
        }
        Tokenizer::Gpt2(t) => {
            let doc = t.to_json()?;
            let (vocab, merges) = vocab_and_merges(&doc)?;
            files.push(("tokenizer.json".to_string(), doc.into_bytes()));
            files.push(("vocab.json".to_string(), vocab.into_bytes()));
            files.push(("merges.txt".to_string(), merges.into_bytes()));
            let eot = t.end_of_text().map(|_| END_OF_TEXT_STR);
            json!({
                "tokenizer_class": "GPT2Tokenizer",
                "bos_token": eot, "eos_token": eot, "unk_token": eot,
                "add_prefix_space": false,
                "split_special_tokens": true,
                "clean_up_tokenization_spaces": false,
                "errors": "replace",
                "model_max_length": max_len,
            })
        }
        Tokenizer::Llama2c(_) => bail!(
            "the checkpoint has a llama2.c (SentencePiece) tokenizer, which a GPT-2 directory cannot hold; \
             export it with --gguf or --llama2c"
        ),
        Tokenizer::Hf(_) => {
            bail!("the checkpoint has a BERT (WordPiece) tokenizer, which a GPT-2 directory cannot hold")
        }
    };
    files.push(("tokenizer_config.json".to_string(), serde_json::to_vec_pretty(&config)?));
    Ok(files)
}

/// HF's `vocab.json` (token → id, by id) and `merges.txt` of a BPE tokenizers document.
fn vocab_and_merges(doc: &str) -> Result<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(doc)?;
    let vocab = v["model"]["vocab"].as_object().context("the tokenizer document has no BPE vocabulary")?;
    let mut pairs: Vec<(&str, u64)> = Vec::with_capacity(vocab.len());
    for (tok, id) in vocab {
        pairs.push((tok, id.as_u64().with_context(|| format!("vocabulary entry {tok:?} has no integer id"))?));
    }
    pairs.sort_by_key(|&(_, id)| id);
    let entries: Vec<String> =
        pairs.iter().map(|(t, id)| Ok(format!("{}: {id}", serde_json::to_string(t)?))).collect::<Result<_>>()?;
    let vocab_json = format!("{{{}}}", entries.join(", "));
    let mut merges = String::from("#version: 0.2\n");
    for m in v["model"]["merges"].as_array().context("the tokenizer document has no BPE merges")? {
        // tokenizers ≥ 0.20 writes [a, b]; older versions "a b".
        let (a, b) = match m {
            serde_json::Value::String(s) => s.split_once(' ').context("a merge has no space")?,
            serde_json::Value::Array(p) if p.len() == 2 => (
                p[0].as_str().context("a merge part is not a string")?,
                p[1].as_str().context("a merge part is not a string")?,
            ),
            other => bail!("unexpected merge {other}"),
        };
        ensure!(!a.contains(' ') && !b.contains(' '), "merge ({a:?}, {b:?}) has a space, which merges.txt cannot hold");
        merges.push_str(a);
        merges.push(' ');
        merges.push_str(b);
        merges.push('\n');
    }
    Ok((vocab_json, merges))
}

/// A tokenizers document equivalent to a character tokenizer: a BPE model over the single
/// characters with no merges, no normalizer and no pre-tokenizer (so every character of the
/// input is one symbol and maps to its id), and the Fuse decoder (tokens concatenated).
pub fn char_tokenizer_json(tok: &CharTokenizer) -> Result<String> {
    use tokenizers::decoders::fuse::Fuse;
    use tokenizers::models::bpe::{Vocab, BPE};
    let vocab: Vocab = tok.chars().iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
    let model = BPE::builder().vocab_and_merges(vocab, vec![]).build().map_err(|e| anyhow!("{e}"))?;
    let mut t = tokenizers::Tokenizer::new(model);
    t.with_decoder(Some(Fuse::new()));
    t.to_string(true).map_err(|e| anyhow!("cannot serialize the character tokenizer: {e}"))
}

/// The characters of a document that [`char_tokenizer_json`] could have written (ordered by id),
/// or None.
fn char_vocab(doc: &serde_json::Value) -> Option<Vec<char>> {
    let null = |k: &str| doc.get(k).is_none_or(|v| v.is_null());
    let model = doc.get("model")?;
    let no_merges = model.get("merges").and_then(|m| m.as_array()).is_some_and(|m| m.is_empty());
    let no_added = doc.get("added_tokens").is_none_or(|a| a.as_array().is_some_and(|a| a.is_empty()));
    if model.get("type")?.as_str()? != "BPE"
        || !no_merges
        || !no_added
        || !null("normalizer")
        || !null("pre_tokenizer")
        || doc.get("decoder")?.get("type")?.as_str()? != "Fuse"
    {
        return None;
    }
    let vocab = model.get("vocab")?.as_object()?;
    let mut chars = vec![None; vocab.len()];
    for (tok, id) in vocab {
        let mut it = tok.chars();
        let (c, None) = (it.next()?, it.next()) else { return None };
        let slot = chars.get_mut(usize::try_from(id.as_u64()?).ok()?)?;
        if slot.replace(c).is_some() {
            return None;
        }
    }
    chars.into_iter().collect()
}

/// The tokenizer of an HF directory: `tokenizer.json` (a character tokenizer as
/// [`char_tokenizer_json`] writes it, lmlab's BPE tokenizer, or a GPT-2 byte-level BPE), else
/// `vocab.json` + `merges.txt` (GPT-2).
pub fn import_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if path.is_file() {
        let what = path.display().to_string();
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {what}"))?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{what} is not valid JSON"))?;
        if let Some(chars) = char_vocab(&doc) {
            return Ok(Tokenizer::Char(CharTokenizer::new(chars)?));
        }
        if doc.get("model").is_none() {
            bail!("{what} is not a tokenizers document (no \"model\")");
        }
        if is_lmlab_bpe(&doc) {
            return Ok(Tokenizer::Bpe(Box::new(BpeTokenizer::from_json(&text, &what)?)));
        }
        return Ok(Tokenizer::Gpt2(Box::new(Gpt2Tokenizer::from_json(&text, &what).context(
            "supported: a character tokenizer (as lmlab exports it), lmlab's BPE tokenizer, or GPT-2's byte-level BPE",
        )?)));
    }
    let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if vocab.is_file() || merges.is_file() {
        return Ok(Tokenizer::Gpt2(Box::new(Gpt2Tokenizer::from_files(&vocab, &merges)?)));
    }
    bail!("{} has no tokenizer: expected tokenizer.json, or vocab.json and merges.txt", dir.display())
}
