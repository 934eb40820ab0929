//! Scoring translations against reference files (`lmlab translate --reference`): corpus BLEU
//! with sacrebleu's defaults. Translating itself is [`crate::infer::translate::Translator`].

use super::bleu::{corpus_bleu, Bleu};
use crate::util::read_lines;
use anyhow::{ensure, Result};
use std::path::PathBuf;

/// Reads the reference files, each of which must hold one line per input line (`lines`).
pub fn read_references(paths: &[PathBuf], lines: usize) -> Result<Vec<Vec<String>>> {
    let refs = paths.iter().map(|p| read_lines(p)).collect::<Result<Vec<_>>>()?;
    for (p, r) in paths.iter().zip(&refs) {
        ensure!(r.len() == lines, "reference {} has {} lines but the input has {}", p.display(), r.len(), lines);
    }
    Ok(refs)
}

/// Corpus BLEU of `hyps` against the aligned reference sets.
pub fn score_translations(hyps: &[String], refs: &[Vec<String>]) -> Result<Bleu> {
    let h: Vec<&str> = hyps.iter().map(|s| s.as_str()).collect();
    let r: Vec<Vec<&str>> = refs.iter().map(|r| r.iter().map(|s| s.as_str()).collect()).collect();
    corpus_bleu(&h, &r)
}
