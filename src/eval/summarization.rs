//! Scoring summaries against several references (`lmlab summarize`): ROUGE-1/2/L/Lsum as
//! rouge-score computes them ([`super::rouge`]), under two multi-reference conventions.
//!
//! - `max`: rouge-score's `score_multi`: per summary and per variant, the reference with the
//!   highest F1; then the mean over summaries.
//! - `mean`: each reference on its own (the mean over summaries against reference k), then the
//!   mean over the k references.
//!
//! With one reference both are the same number.

use super::rouge::{corpus_rouge, Rouge};
use anyhow::{ensure, Result};
use serde::Serialize;

/// Corpus ROUGE of a set of summaries.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SummaryScores {
    pub summaries: usize,
    /// References per summary.
    pub references: usize,
    pub use_stemmer: bool,
    /// Best reference per summary (rouge-score `score_multi`), averaged over summaries.
    pub max: Rouge,
    /// Averaged over summaries against each reference, then over references.
    pub mean: Rouge,
}

/// Scores `hyps` against `refs`, where `refs[i]` are the references of `hyps[i]` (the same
/// number for every summary).
pub fn score_summaries(hyps: &[String], refs: &[Vec<String>], use_stemmer: bool) -> Result<SummaryScores> {
    ensure!(hyps.len() == refs.len(), "{} summaries but {} sets of references", hyps.len(), refs.len());
    let k = refs.first().map_or(0, Vec::len);
    ensure!(k > 0, "ROUGE needs at least one reference per summary");
    ensure!(refs.iter().all(|r| r.len() == k), "every summary needs the same number of references ({k})");
    let h: Vec<&str> = hyps.iter().map(String::as_str).collect();
    // Reference streams: streams[r][i] is the r-th reference of summary i.
    let streams: Vec<Vec<&str>> = (0..k).map(|r| refs.iter().map(|x| x[r].as_str()).collect()).collect();
    let max = corpus_rouge(&h, &streams, use_stemmer)?.mean;
    let mut mean = Rouge::default();
    for stream in &streams {
        let one = corpus_rouge(&h, std::slice::from_ref(stream), use_stemmer)?.mean;
        for (m, s) in mean.variants_mut().into_iter().zip(one.variants()) {
            m.precision += s.precision / k as f64;
            m.recall += s.recall / k as f64;
            m.fmeasure += s.fmeasure / k as f64;
        }
    }
    Ok(SummaryScores { summaries: hyps.len(), references: k, use_stemmer, max, mean })
}

impl std::fmt::Display for SummaryScores {
    /// F1 × 100 of each variant, one row per convention.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "ROUGE F1 x 100 (rouge-score{}) of {} summaries, {} reference{} each",
            if self.use_stemmer { ", Porter stemmer" } else { "" },
            self.summaries,
            self.references,
            if self.references == 1 { "" } else { "s" }
        )?;
        writeln!(f, "{:<22} {:>7} {:>7} {:>7} {:>7}", "", "R-1", "R-2", "R-L", "R-Lsum")?;
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, r: &Rouge| {
            let v = r.variants().map(|s| s.fmeasure * 100.0);
            writeln!(f, "{name:<22} {:>7.2} {:>7.2} {:>7.2} {:>7.2}", v[0], v[1], v[2], v[3])
        };
        row(f, "best reference (max)", &self.max)?;
        if self.references > 1 {
            row(f, "mean over references", &self.mean)?;
        }
        Ok(())
    }
}
