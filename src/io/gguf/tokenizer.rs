//! The tokenizer of a GGUF file (`tokenizer.ggml.*`), both ways.
//!
//! GPT-2 and lmlab's byte-level BPE are model `gpt2` (tokens,
//! token_type, merges, pre `gpt-2`, special ids) plus the whole tokenizers document as
//! `tokenizer.huggingface.json` (import prefers it, so lmlab's BPE comes back as itself); a file
//! without that key (llama.cpp's) is built from tokens and merges. The character tokenizer has
//! no llama.cpp counterpart: it is model `none` (llama.cpp's "no vocabulary") with the characters
//! as `tokenizer.ggml.tokens`, so llama.cpp can load the weights but not tokenize text.
//! llama2.c's SentencePiece vocabularies are model `llama`, llama.cpp's SentencePiece tokenizer
//! (tokens, scores, token_type; BOS 1, EOS 2, unknown 0): llama2.c stores SentencePiece's
//! word-boundary mark `▁` as a space and BOS/EOS as `"\n<s>\n"`/`"\n</s>\n"`, so those are
//! mapped back to SentencePiece's spellings on export and again on import.

use super::model::key;
use super::value::{Array, Value};
use super::Gguf;
use crate::data::gpt2::Gpt2Tokenizer;
use crate::data::llama2c_tokenizer::Llama2cTokenizer;
use crate::data::{CharTokenizer, Tokenizer};
use anyhow::{anyhow, bail, ensure, Context, Result};

/// llama.cpp's token types.
const TOKEN_NORMAL: i32 = 1;
const TOKEN_UNKNOWN: i32 = 2;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_BYTE: i32 = 6;
/// SentencePiece's word-boundary mark, which llama2.c's `tokenizer.bin` writes as a space.
const SPM_SPACE: &str = "\u{2581}";

fn strings(v: Vec<String>) -> Value {
    Value::Array(Array::String(v))
}

pub(super) fn tokenizer_metadata(tok: &Tokenizer) -> Result<Vec<(&'static str, Value)>> {
    let mut m = Vec::new();
    match tok {
        Tokenizer::Char(t) => {
            m.push(("tokenizer.ggml.model", Value::String("none".into())));
            m.push(("tokenizer.ggml.tokens", strings(t.chars().iter().map(|c| c.to_string()).collect())));
            m.push(("tokenizer.ggml.token_type", Value::Array(Array::I32(vec![TOKEN_NORMAL; t.vocab_size()]))));
        }
        Tokenizer::Bpe(_) | Tokenizer::Gpt2(_) => {
            let doc = tok.to_json()?;
            let (tokens, types, merges) = bpe_vocab(&doc, tok.vocab_size())?;
            m.push(("tokenizer.ggml.model", Value::String("gpt2".into())));
            m.push(("tokenizer.ggml.pre", Value::String("gpt-2".into())));
            m.push(("tokenizer.ggml.tokens", strings(tokens)));
            m.push(("tokenizer.ggml.token_type", Value::Array(Array::I32(types))));
            m.push(("tokenizer.ggml.merges", strings(merges)));
            if let Tokenizer::Bpe(_) = tok {
                use crate::data::bpe::{BOS, EOS, PAD, UNK};
                m.push(("tokenizer.ggml.bos_token_id", Value::U32(BOS)));
                m.push(("tokenizer.ggml.eos_token_id", Value::U32(EOS)));
                m.push(("tokenizer.ggml.unknown_token_id", Value::U32(UNK)));
                m.push(("tokenizer.ggml.padding_token_id", Value::U32(PAD)));
            } else if let Some(eot) = tok.end_of_text() {
                m.push(("tokenizer.ggml.bos_token_id", Value::U32(eot)));
                m.push(("tokenizer.ggml.eos_token_id", Value::U32(eot)));
            }
            m.push(("tokenizer.huggingface.json", Value::String(doc)));
        }
        Tokenizer::Hf(_) => {
            bail!("the checkpoint has a Hugging Face WordPiece (BERT) tokenizer, which lmlab does not write to GGUF")
        }
        Tokenizer::Llama2c(t) => {
            use crate::data::llama2c_tokenizer::{BOS, EOS};
            let (tokens, scores, types) = spm_vocab(t)?;
            m.push(("tokenizer.ggml.model", Value::String("llama".into())));
            m.push(("tokenizer.ggml.tokens", strings(tokens)));
            m.push(("tokenizer.ggml.scores", Value::Array(Array::F32(scores))));
            m.push(("tokenizer.ggml.token_type", Value::Array(Array::I32(types))));
            m.push(("tokenizer.ggml.bos_token_id", Value::U32(BOS)));
            m.push(("tokenizer.ggml.eos_token_id", Value::U32(EOS)));
            m.push(("tokenizer.ggml.unknown_token_id", Value::U32(0)));
            m.push(("tokenizer.ggml.add_bos_token", Value::Bool(true)));
            m.push(("tokenizer.ggml.add_eos_token", Value::Bool(false)));
        }
    }
    Ok(m)
}

/// SentencePiece spellings, scores and llama.cpp token types of a llama2.c vocabulary.
fn spm_vocab(t: &Llama2cTokenizer) -> Result<(Vec<String>, Vec<f32>, Vec<i32>)> {
    use crate::data::llama2c_tokenizer::{BOS, EOS};
    let n = t.vocab_size();
    let (mut tokens, mut scores, mut types) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for id in 0..n as u32 {
        let bytes = t.token(id).expect("id < vocab_size");
        let text = std::str::from_utf8(bytes)
            .map_err(|_| anyhow!("token {id} ({bytes:?}) is not UTF-8; GGUF stores tokens as strings"))?;
        let (s, ty) = match id {
            BOS => ("<s>".to_string(), TOKEN_CONTROL),
            EOS => ("</s>".to_string(), TOKEN_CONTROL),
            0 if text == "<unk>" => (text.to_string(), TOKEN_UNKNOWN),
            _ if is_byte_token(text) => (text.to_string(), TOKEN_BYTE),
            _ => (text.replace(' ', SPM_SPACE), TOKEN_NORMAL),
        };
        tokens.push(s);
        scores.push(t.score(id).expect("id < vocab_size"));
        types.push(ty);
    }
    Ok((tokens, scores, types))
}

/// `<0xHH>`, SentencePiece's byte-fallback tokens.
fn is_byte_token(s: &str) -> bool {
    s.len() == 6 && s.starts_with("<0x") && s.ends_with('>') && u8::from_str_radix(&s[3..5], 16).is_ok()
}

/// A llama2.c vocabulary from a `llama` (SentencePiece) GGUF vocabulary: `▁` becomes a space,
/// BOS and EOS llama2.c's `"\n<s>\n"` and `"\n</s>\n"`.
fn llama2c_from_spm(g: &Gguf, tokens: &[String]) -> Result<Llama2cTokenizer> {
    use crate::data::llama2c_tokenizer::{BOS, EOS};
    for (k, want) in [("tokenizer.ggml.bos_token_id", BOS), ("tokenizer.ggml.eos_token_id", EOS)] {
        if let Some(v) = g.get(k) {
            ensure!(
                v.as_u64() == Some(want as u64),
                "{k} is {v:?}; lmlab's SentencePiece (llama2.c) tokenizer has it at id {want}"
            );
        }
    }
    let scores = match g.get("tokenizer.ggml.scores") {
        Some(Value::Array(Array::F32(s))) => s.clone(),
        Some(v) => bail!("tokenizer.ggml.scores is a {:?}, expected an array of f32", v.value_type()),
        None => bail!("metadata key tokenizer.ggml.scores is missing (SentencePiece merges need the scores)"),
    };
    ensure!(
        scores.len() == tokens.len(),
        "tokenizer.ggml.scores has {} entries for {} tokens",
        scores.len(),
        tokens.len()
    );
    ensure!(tokens.len() > EOS as usize, "a SentencePiece vocabulary of {} tokens has no BOS and EOS", tokens.len());
    let vocab: Vec<Vec<u8>> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| match i as u32 {
            BOS => b"\n<s>\n".to_vec(),
            EOS => b"\n</s>\n".to_vec(),
            _ => t.replace(SPM_SPACE, " ").into_bytes(),
        })
        .collect();
    let max_len = vocab.iter().map(Vec::len).max().unwrap_or(1).max(1);
    ensure!(max_len <= i32::MAX as usize, "a token is {max_len} bytes long");
    Llama2cTokenizer::new(vocab, scores, max_len as u32).context("the GGUF SentencePiece vocabulary")
}

/// Tokens by id, their llama.cpp types (special added tokens are control tokens) and the merges
/// ("a b") of a BPE tokenizers document.
fn bpe_vocab(doc: &str, n: usize) -> Result<(Vec<String>, Vec<i32>, Vec<String>)> {
    let v: serde_json::Value = serde_json::from_str(doc)?;
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut types = vec![TOKEN_NORMAL; n];
    let vocab = v["model"]["vocab"].as_object().context("the tokenizer document has no BPE vocabulary")?;
    let added = v["added_tokens"].as_array().cloned().unwrap_or_default();
    let entries = vocab.iter().map(|(t, id)| (t.as_str(), id, false));
    let added_entries =
        added.iter().filter_map(|a| Some((a["content"].as_str()?, &a["id"], a["special"].as_bool().unwrap_or(false))));
    for (t, id, special) in entries.chain(added_entries) {
        let id = id.as_u64().and_then(|i| usize::try_from(i).ok()).filter(|&i| i < n);
        let id = id.with_context(|| format!("token {t:?} has an id outside the vocabulary of {n}"))?;
        tokens[id] = Some(t.to_string());
        if special {
            types[id] = TOKEN_CONTROL;
        }
    }
    let tokens = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.with_context(|| format!("the tokenizer has no token with id {i}")))
        .collect::<Result<Vec<_>>>()?;
    let mut merges = Vec::new();
    for m in v["model"]["merges"].as_array().context("the tokenizer document has no BPE merges")? {
        // tokenizers ≥ 0.20 writes [a, b]; older versions "a b".
        let s = match m {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(p) if p.len() == 2 => {
                let part =
                    |x: &serde_json::Value| x.as_str().map(str::to_string).context("a merge part is not a string");
                let (a, b) = (part(&p[0])?, part(&p[1])?);
                ensure!(
                    !a.contains(' ') && !b.contains(' '),
                    "merge ({a:?}, {b:?}) has a space, which GGUF cannot hold"
                );
                format!("{a} {b}")
            }
            other => bail!("unexpected merge {other}"),
        };
        merges.push(s);
    }
    Ok((tokens, types, merges))
}

// ---------------------------------------------------------------------------------------------
// Import

/// The tokenizer of a GGUF file (see the module documentation for the kinds).
pub fn tokenizer_from_gguf(g: &Gguf) -> Result<Tokenizer> {
    let model = key(g, "tokenizer.ggml.model")?;
    let tokens = match g.get("tokenizer.ggml.tokens") {
        Some(Value::Array(Array::String(t))) => t,
        Some(v) => bail!("tokenizer.ggml.tokens is a {:?}, expected an array of strings", v.value_type()),
        None => bail!("metadata key tokenizer.ggml.tokens is missing"),
    };
    match model.as_str() {
        Some("none") => {
            let chars = tokens
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let mut it = t.chars();
                    match (it.next(), it.next()) {
                        (Some(c), None) => Ok(c),
                        _ => bail!(
                            "tokenizer.ggml.model \"none\": token {i} is {t:?}; lmlab reads this as its character \
                             tokenizer, one character per token"
                        ),
                    }
                })
                .collect::<Result<Vec<char>>>()?;
            Ok(Tokenizer::Char(CharTokenizer::new(chars).context("tokenizer.ggml.tokens")?))
        }
        Some("gpt2") => {
            if let Some(pre) = g.get("tokenizer.ggml.pre") {
                ensure!(
                    matches!(pre.as_str(), Some("gpt-2" | "default")),
                    "tokenizer.ggml.pre is {pre:?}; lmlab's byte-level BPE has GPT-2's pre-tokenizer (\"gpt-2\")"
                );
            }
            let tok = match g.get("tokenizer.huggingface.json") {
                Some(Value::String(doc)) => Tokenizer::from_json(doc).context("tokenizer.huggingface.json")?,
                Some(v) => bail!("tokenizer.huggingface.json is a {:?}, expected a string", v.value_type()),
                None => Tokenizer::Gpt2(Box::new(gpt2_from_tokens(g, tokens)?)),
            };
            ensure!(
                tok.vocab_size() == tokens.len(),
                "tokenizer.huggingface.json has {} tokens but tokenizer.ggml.tokens has {}",
                tok.vocab_size(),
                tokens.len()
            );
            Ok(tok)
        }
        Some("llama") => Ok(Tokenizer::Llama2c(Box::new(llama2c_from_spm(g, tokens)?))),
        _ => bail!("tokenizer.ggml.model is {model:?}; lmlab imports \"gpt2\", \"llama\" and \"none\""),
    }
}

/// A GPT-2 tokenizer from `tokenizer.ggml.tokens`, `.merges` and `.token_type` (control tokens
/// become special tokens).
fn gpt2_from_tokens(g: &Gguf, tokens: &[String]) -> Result<Gpt2Tokenizer> {
    use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::AddedToken;
    let merges = match g.get("tokenizer.ggml.merges") {
        Some(Value::Array(Array::String(m))) => m,
        Some(v) => bail!("tokenizer.ggml.merges is a {:?}, expected an array of strings", v.value_type()),
        None => bail!("metadata key tokenizer.ggml.merges is missing"),
    };
    let types = match g.get("tokenizer.ggml.token_type") {
        Some(Value::Array(a)) => a.to_i64s().context("tokenizer.ggml.token_type is not an integer array")?,
        Some(v) => bail!("tokenizer.ggml.token_type is a {:?}, expected an array", v.value_type()),
        None => vec![TOKEN_NORMAL as i64; tokens.len()],
    };
    ensure!(
        types.len() == tokens.len(),
        "tokenizer.ggml.token_type has {} entries for {} tokens",
        types.len(),
        tokens.len()
    );
    let mut vocab = tokenizers::models::bpe::Vocab::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        ensure!(vocab.insert(t.clone(), i as u32).is_none(), "tokenizer.ggml.tokens has {t:?} twice");
    }
    let pairs = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (a, b) = m.split_once(' ').with_context(|| format!("tokenizer.ggml.merges[{i}] {m:?} has no space"))?;
            Ok((a.to_string(), b.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe =
        BPE::builder().vocab_and_merges(vocab, pairs).build().map_err(|e| anyhow!("cannot build the BPE: {e}"))?;
    let mut t = tokenizers::Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    t.with_decoder(Some(ByteLevelDecoder::default()));
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &ty)| ty == TOKEN_CONTROL as i64)
        .map(|(s, _)| AddedToken::from(s.clone(), true))
        .collect();
    t.add_special_tokens(&specials);
    let doc = t.to_string(false).map_err(|e| anyhow!("cannot serialize the tokenizer: {e}"))?;
    Gpt2Tokenizer::from_json(&doc, "the GGUF vocabulary")
}
