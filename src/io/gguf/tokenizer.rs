//! The tokenizer of a GGUF file (`tokenizer.ggml.*`), both ways.
//!
//! GPT-2 and lmlab's byte-level BPE are model `gpt2` (tokens,
//! token_type, merges, pre `gpt-2`, special ids) plus the whole tokenizers document as
//! `tokenizer.huggingface.json` (import prefers it, so lmlab's BPE comes back as itself); a file
//! without that key (llama.cpp's) is built from tokens and merges. The character tokenizer has
//! no llama.cpp counterpart: it is model `none` (llama.cpp's "no vocabulary") with the characters
//! as `tokenizer.ggml.tokens`, so llama.cpp can load the weights but not tokenize text.
//! SentencePiece (`llama`) vocabularies are not a tokenizer kind lmlab checkpoints hold: import
//! refuses them.

use super::model::key;
use super::value::{Array, Value};
use super::Gguf;
use crate::data::gpt2::Gpt2Tokenizer;
use crate::data::{CharTokenizer, Tokenizer};
use anyhow::{anyhow, bail, ensure, Context, Result};

/// llama.cpp's token types.
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;

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
    }
    Ok(m)
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
        Some("llama") => bail!(
            "tokenizer.ggml.model is \"llama\" (SentencePiece); lmlab checkpoints hold character, BPE and GPT-2 \
             tokenizers only"
        ),
        _ => bail!("tokenizer.ggml.model is {model:?}; lmlab imports \"gpt2\" and \"none\""),
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
