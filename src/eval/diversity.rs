//! Diversity of generated text, with no reference: distinct-n, repetition rate, n-gram entropy
//! and self-BLEU.
//!
//! Tokens are the whitespace-separated words of each text (Python's `str.split()`: any Unicode
//! whitespace, no other tokenisation, case kept), except self-BLEU, which is BLEU and so uses
//! its 13a tokenisation. N-grams never cross from one text into the next. There is no reference
//! package for these numbers; tests/metrics_generation.rs checks them against hand-computed cases
//! and against the plain Python implementations in scripts/make_metric_fixtures.py.

use super::bleu::{is_py_space, sentence_bleu};
use anyhow::{ensure, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;

/// The whitespace-separated tokens of `text` (Python's `text.split()`).
pub fn whitespace_tokens(text: &str) -> Vec<&str> {
    text.split(is_py_space).filter(|t| !t.is_empty()).collect()
}

/// Counts of every distinct n-gram of the corpus, in order of first occurrence (so that sums over
/// them are deterministic).
fn corpus_ngram_counts<'a>(tokens: &'a [Vec<&'a str>], n: usize) -> Vec<u64> {
    let mut index: HashMap<&[&str], usize> = HashMap::new();
    let mut counts = Vec::new();
    for toks in tokens {
        for g in toks.windows(n) {
            let i = *index.entry(g).or_insert_with(|| {
                counts.push(0);
                counts.len() - 1
            });
            counts[i] += 1;
        }
    }
    counts
}

fn tokenize_all<'a>(texts: &[&'a str], n: usize) -> Result<Vec<Vec<&'a str>>> {
    ensure!(!texts.is_empty(), "diversity of an empty corpus: there are no texts");
    ensure!(n > 0, "n-gram order must be at least 1");
    Ok(texts.iter().map(|t| whitespace_tokens(t)).collect())
}

/// distinct-n (Li et al. 2016): distinct n-grams over all n-grams of the corpus.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Distinct {
    pub n: usize,
    /// Distinct n-grams of the corpus.
    pub unique: u64,
    /// All n-grams of the corpus (each text contributes `max(0, tokens - n + 1)`).
    pub total: u64,
    /// `unique / total`, in [0, 1]; 0 when the corpus has no n-gram.
    pub ratio: f64,
}

/// distinct-n over the corpus `texts`.
pub fn distinct_n(texts: &[&str], n: usize) -> Result<Distinct> {
    let tokens = tokenize_all(texts, n)?;
    let counts = corpus_ngram_counts(&tokens, n);
    let (unique, total) = (counts.len() as u64, counts.iter().sum::<u64>());
    Ok(Distinct { n, unique, total, ratio: if total == 0 { 0.0 } else { unique as f64 / total as f64 } })
}

/// Repetition within texts: seq-rep-n of Welleck et al. (2019).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Repetition {
    pub n: usize,
    /// Mean over the texts that have at least one n-gram of each text's rate (see
    /// [`repetition_rate`]); 0 when no text has one.
    pub rate: f64,
    /// Texts with at least one n-gram (the ones averaged).
    pub texts: usize,
    /// N-gram occurrences that repeat an earlier n-gram of the same text, summed over texts.
    pub repeated: u64,
    /// N-grams, summed over texts.
    pub total: u64,
}

/// `(repeated, total)` n-grams of one token sequence: an occurrence is repeated when the same
/// n-gram occurred earlier in the sequence, so repeated = total - distinct.
fn repeats(tokens: &[&str], n: usize) -> (u64, u64) {
    let mut seen = std::collections::HashSet::new();
    let mut repeated = 0;
    for g in tokens.windows(n) {
        repeated += !seen.insert(g) as u64;
    }
    (repeated, tokens.windows(n).len() as u64)
}

/// seq-rep-n of one text: the share of its n-grams that repeat an earlier n-gram of the same
/// text, `1 - distinct n-grams / n-grams`, in [0, 1). `None` when the text has fewer than `n`
/// tokens. Panics if `n` is 0.
pub fn repetition_rate(text: &str, n: usize) -> Option<f64> {
    assert!(n > 0, "n-gram order must be at least 1");
    let (repeated, total) = repeats(&whitespace_tokens(text), n);
    (total > 0).then(|| repeated as f64 / total as f64)
}

/// seq-rep-n averaged over the texts of a corpus (those with at least one n-gram).
pub fn corpus_repetition(texts: &[&str], n: usize) -> Result<Repetition> {
    let tokens = tokenize_all(texts, n)?;
    let mut r = Repetition { n, rate: 0.0, texts: 0, repeated: 0, total: 0 };
    let mut sum = 0.0;
    for toks in &tokens {
        let (repeated, total) = repeats(toks, n);
        if total > 0 {
            sum += repeated as f64 / total as f64;
            r.texts += 1;
            r.repeated += repeated;
            r.total += total;
        }
    }
    if r.texts > 0 {
        r.rate = sum / r.texts as f64;
    }
    Ok(r)
}

/// Entropy of the corpus' n-gram distribution: Ent-n of Zhang et al. (2018), in bits.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Entropy {
    pub n: usize,
    /// `-Σ p(g) log2 p(g)` over distinct n-grams g, `p(g) = count(g) / total`; 0 when the corpus
    /// has no n-gram. At most `log2(unique)`.
    pub bits: f64,
    pub unique: u64,
    pub total: u64,
}

/// Ent-n of the corpus `texts`.
pub fn ngram_entropy(texts: &[&str], n: usize) -> Result<Entropy> {
    let tokens = tokenize_all(texts, n)?;
    let counts = corpus_ngram_counts(&tokens, n);
    let total = counts.iter().sum::<u64>();
    let mut sum = 0.0f64;
    for &c in &counts {
        let p = c as f64 / total as f64;
        sum += p * p.log2();
    }
    Ok(Entropy { n, bits: if total == 0 { 0.0 } else { -sum }, unique: counts.len() as u64, total })
}

/// Self-BLEU (Zhu et al. 2018, Texygen): how much each text resembles the others.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SelfBleu {
    /// Mean of `scores`, in [0, 100]; higher means less diverse.
    pub score: f64,
    /// Per text: sacrebleu sentence BLEU ([`sentence_bleu`]) of the text against all the other
    /// texts as its references.
    pub scores: Vec<f64>,
}

/// Self-BLEU of `texts` (at least two). Costs one sentence BLEU against `texts.len() - 1`
/// references per text, so quadratic in the number of texts; the texts are scored in parallel.
pub fn self_bleu(texts: &[&str]) -> Result<SelfBleu> {
    ensure!(texts.len() >= 2, "self-BLEU needs at least two texts, got {}", texts.len());
    let scores = (0..texts.len())
        .into_par_iter()
        .map(|i| {
            let others: Vec<&str> = texts.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, t)| *t).collect();
            sentence_bleu(texts[i], &others).map(|b| b.score)
        })
        .collect::<Result<Vec<f64>>>()?;
    let score = scores.iter().sum::<f64>() / scores.len() as f64;
    Ok(SelfBleu { score, scores })
}

/// Every diversity number of a corpus, for n = 1..=max_n.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diversity {
    /// Texts in the corpus.
    pub texts: usize,
    pub distinct: Vec<Distinct>,
    pub repetition: Vec<Repetition>,
    pub entropy: Vec<Entropy>,
    /// `None` for a corpus of a single text.
    pub self_bleu: Option<SelfBleu>,
}

/// distinct-n, seq-rep-n and Ent-n for n = 1..=max_n, and self-BLEU, of `texts`.
pub fn diversity(texts: &[&str], max_n: usize) -> Result<Diversity> {
    ensure!(max_n > 0, "n-gram order must be at least 1");
    Ok(Diversity {
        texts: texts.len(),
        distinct: (1..=max_n).map(|n| distinct_n(texts, n)).collect::<Result<_>>()?,
        repetition: (1..=max_n).map(|n| corpus_repetition(texts, n)).collect::<Result<_>>()?,
        entropy: (1..=max_n).map(|n| ngram_entropy(texts, n)).collect::<Result<_>>()?,
        self_bleu: if texts.len() >= 2 { Some(self_bleu(texts)?) } else { None },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diversity_hand_computed() {
        let texts = ["a b a b", "a c"];
        // Unigrams a b a b a c: 3 distinct of 6; bigrams ab ba ab ac: 3 of 4.
        assert_eq!(distinct_n(&texts, 1).unwrap(), Distinct { n: 1, unique: 3, total: 6, ratio: 0.5 });
        assert_eq!(distinct_n(&texts, 2).unwrap().ratio, 0.75);
        // The bigram "b a" spans no text boundary: text 2 has one bigram only.
        assert_eq!(distinct_n(&texts, 3).unwrap().total, 2);
        // Text 1 repeats 2 of its 4 unigrams and 1 of its 3 bigrams; text 2 nothing.
        assert_eq!(repetition_rate("a b a b", 1), Some(0.5));
        assert_eq!(repetition_rate("a c", 3), None);
        let r = corpus_repetition(&texts, 2).unwrap();
        assert_eq!((r.rate, r.texts, r.repeated, r.total), ((1.0 / 3.0 + 0.0) / 2.0, 2, 1, 4));
        // p(a) = 1/2, p(b) = 1/3, p(c) = 1/6.
        let h = ngram_entropy(&texts, 1).unwrap().bits;
        let want =
            -(0.5f64 * 0.5f64.log2() + (1.0 / 3.0) * (1.0f64 / 3.0).log2() + (1.0 / 6.0) * (1.0f64 / 6.0).log2());
        assert!((h - want).abs() < 1e-12, "{h} {want}");
        // Four equally frequent bigrams: exactly 2 bits.
        assert_eq!(ngram_entropy(&["w x y z v"], 2).unwrap().bits, 2.0);
        assert_eq!(ngram_entropy(&["", "  "], 1).unwrap().bits, 0.0);
    }

    #[test]
    fn self_bleu_extremes() {
        let same = self_bleu(&["the cat sat on the mat"; 3]).unwrap();
        assert!((same.score - 100.0).abs() < 1e-9, "{same:?}");
        let apart = self_bleu(&["a b c d", "e f g h", "i j k l"]).unwrap();
        assert_eq!(apart.score, 0.0);
        assert!(self_bleu(&["only one"]).is_err());
        assert!(diversity(&["only one"], 4).unwrap().self_bleu.is_none());
        assert!(diversity(&[], 4).is_err());
    }
}
