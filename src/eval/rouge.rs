//! ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum exactly as Google's `rouge-score` package (0.1.2)
//! computes them with its default tokenizer: `RougeScorer(["rouge1", "rouge2", "rougeL",
//! "rougeLsum"], use_stemmer)`.
//!
//! - Tokens: the text is lowercased (Unicode, as Python's `str.lower`), every run of characters
//!   other than `a-z0-9` becomes a separator (so accented letters, CJK and emoji separate words
//!   and are dropped), and with the stemmer on, tokens longer than 3 characters go through NLTK's
//!   Porter stemmer ([`super::porter`]).
//! - ROUGE-N: clipped n-gram overlap; precision over the hypothesis' n-grams, recall over the
//!   reference's (each denominator at least 1).
//! - ROUGE-L: longest common subsequence of the two token sequences.
//! - ROUGE-Lsum: summary-level LCS (Lin 2004, §3.2) over sentences, which are the non-empty
//!   lines of the text (split on `\n`; rouge-score's `split_summaries=False`): for each
//!   reference sentence the union of its LCS with every hypothesis sentence, each token counted
//!   at most as often as it occurs in both texts.
//! - F is `2PR / (P + R)` (0 when both are 0).
//!
//! Argument order: the functions here take the hypothesis first and the reference second, like
//! the BLEU and chrF functions; rouge-score's `score(target, prediction)` takes them the other
//! way round. Checked against rouge-score's own numbers in tests/metrics_generation.rs (fixtures
//! from scripts/make_metric_fixtures.py).

use super::porter;
use anyhow::{ensure, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// Precision, recall and F1 of one ROUGE variant, each in [0, 1].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct RougeScore {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

impl RougeScore {
    /// rouge-score's `scoring.fmeasure`, operation for operation.
    fn new(precision: f64, recall: f64) -> Self {
        let fmeasure = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        RougeScore { precision, recall, fmeasure }
    }
}

/// The four ROUGE variants of one hypothesis; serialised under rouge-score's names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rouge {
    pub rouge1: RougeScore,
    pub rouge2: RougeScore,
    #[serde(rename = "rougeL")]
    pub rouge_l: RougeScore,
    #[serde(rename = "rougeLsum")]
    pub rouge_lsum: RougeScore,
}

impl Rouge {
    /// rouge-score's names of the variants, in the order of [`Rouge::variants`].
    pub const NAMES: [&'static str; 4] = ["rouge1", "rouge2", "rougeL", "rougeLsum"];

    /// ROUGE-1, ROUGE-2, ROUGE-L, ROUGE-Lsum.
    pub fn variants(&self) -> [RougeScore; 4] {
        [self.rouge1, self.rouge2, self.rouge_l, self.rouge_lsum]
    }

    pub(crate) fn variants_mut(&mut self) -> [&mut RougeScore; 4] {
        [&mut self.rouge1, &mut self.rouge2, &mut self.rouge_l, &mut self.rouge_lsum]
    }
}

/// Per-pair scores of a corpus and their plain mean.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CorpusRouge {
    /// The arithmetic mean over pairs of each precision, recall and F. This is NOT rouge-score's
    /// `BootstrapAggregator`, whose "mid" is the median of bootstrap-resampled means (random,
    /// and close to, but not equal to, this mean).
    pub mean: Rouge,
    /// One entry per hypothesis, in order.
    pub pairs: Vec<Rouge>,
}

/// rouge-score's default tokenizer (`tokenize.tokenize(text, stemmer)`).
pub fn rouge_tokenize(text: &str, use_stemmer: bool) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        // Stemming only tokens longer than 3 characters, as rouge-score does.
        .map(|t| if use_stemmer && t.len() > 3 { porter::stem(t) } else { t.to_owned() })
        // rouge-score's final check keeps tokens matching ^[a-z0-9]+$.
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        .collect()
}

/// rouge-score's sentences for ROUGE-Lsum: the non-empty `\n`-separated lines, tokenised. A line
/// of only punctuation stays as a sentence with no tokens, as in rouge-score.
pub fn rouge_sentences(text: &str, use_stemmer: bool) -> Vec<Vec<String>> {
    text.split('\n').filter(|s| !s.is_empty()).map(|s| rouge_tokenize(s, use_stemmer)).collect()
}

fn ngram_counts<T: Eq + Hash>(tokens: &[T], n: usize) -> HashMap<&[T], u64> {
    let mut m = HashMap::new();
    for g in tokens.windows(n) {
        *m.entry(g).or_insert(0) += 1;
    }
    m
}

/// ROUGE-N of token sequences (rouge-score `_score_ngrams`). Panics if `n` is 0.
pub fn rouge_n<T: Eq + Hash>(hyp: &[T], reference: &[T], n: usize) -> RougeScore {
    assert!(n > 0, "ROUGE-N needs n > 0");
    let (h, r) = (ngram_counts(hyp, n), ngram_counts(reference, n));
    let overlap: u64 = r.iter().map(|(g, &rc)| rc.min(h.get(g).copied().unwrap_or(0))).sum();
    let (h_total, r_total) = (h.values().sum::<u64>(), r.values().sum::<u64>());
    RougeScore::new(overlap as f64 / h_total.max(1) as f64, overlap as f64 / r_total.max(1) as f64)
}

/// Length of the longest common subsequence, in two rows of the DP table.
fn lcs_len<T: Eq>(a: &[T], b: &[T]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { prev[j + 1].max(cur[j]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L of token sequences (rouge-score `_score_lcs`): 0 if either is empty.
pub fn rouge_l<T: Eq>(hyp: &[T], reference: &[T]) -> RougeScore {
    if hyp.is_empty() || reference.is_empty() {
        return RougeScore::default();
    }
    let lcs = lcs_len(reference, hyp) as f64;
    RougeScore::new(lcs / hyp.len() as f64, lcs / reference.len() as f64)
}

/// Indices into `reference` of one LCS with `hyp`: rouge-score's `lcs_ind`, whose backtracking
/// decides which of several equally long subsequences is taken (it matters for the union).
fn lcs_indices<T: Eq>(reference: &[T], hyp: &[T], out: &mut BTreeSet<usize>) {
    let cols = hyp.len() + 1;
    let mut t = vec![0u32; (reference.len() + 1) * cols];
    for i in 1..=reference.len() {
        for j in 1..=hyp.len() {
            t[i * cols + j] = if reference[i - 1] == hyp[j - 1] {
                t[(i - 1) * cols + j - 1] + 1
            } else {
                t[(i - 1) * cols + j].max(t[i * cols + j - 1])
            };
        }
    }
    let (mut i, mut j) = (reference.len(), hyp.len());
    while i > 0 && j > 0 {
        if reference[i - 1] == hyp[j - 1] {
            out.insert(i - 1);
            i -= 1;
            j -= 1;
        } else if t[i * cols + j - 1] > t[(i - 1) * cols + j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
}

/// ROUGE-Lsum of sentence-split token sequences (rouge-score `_summary_level_lcs`).
pub fn rouge_lsum<T: Eq + Hash>(hyp_sents: &[Vec<T>], ref_sents: &[Vec<T>]) -> RougeScore {
    let m: usize = ref_sents.iter().map(Vec::len).sum();
    let n: usize = hyp_sents.iter().map(Vec::len).sum();
    if m == 0 || n == 0 {
        return RougeScore::default();
    }
    let mut ref_counts: HashMap<&T, u64> = HashMap::new();
    let mut hyp_counts: HashMap<&T, u64> = HashMap::new();
    for t in ref_sents.iter().flatten() {
        *ref_counts.entry(t).or_insert(0) += 1;
    }
    for t in hyp_sents.iter().flatten() {
        *hyp_counts.entry(t).or_insert(0) += 1;
    }
    let mut hits = 0u64;
    let mut union = BTreeSet::new();
    for r in ref_sents {
        union.clear();
        for h in hyp_sents {
            lcs_indices(r, h, &mut union);
        }
        // A token is a hit only while both texts have unused occurrences of it left.
        for &i in &union {
            let t = &r[i];
            if let (Some(hc), Some(rc)) = (hyp_counts.get_mut(t), ref_counts.get_mut(t)) {
                if *hc > 0 && *rc > 0 {
                    hits += 1;
                    *hc -= 1;
                    *rc -= 1;
                }
            }
        }
    }
    RougeScore::new(hits as f64 / n as f64, hits as f64 / m as f64)
}

/// A text's tokens, whole and split into ROUGE-Lsum sentences.
struct Tokenized {
    tokens: Vec<String>,
    sentences: Vec<Vec<String>>,
}

impl Tokenized {
    fn new(text: &str, use_stemmer: bool) -> Self {
        Tokenized { tokens: rouge_tokenize(text, use_stemmer), sentences: rouge_sentences(text, use_stemmer) }
    }

    fn score(&self, reference: &Tokenized) -> Rouge {
        let (h, r) = (&self.tokens, &reference.tokens);
        Rouge {
            rouge1: rouge_n(h, r, 1),
            rouge2: rouge_n(h, r, 2),
            rouge_l: rouge_l(h, r),
            rouge_lsum: rouge_lsum(&self.sentences, &reference.sentences),
        }
    }
}

/// All four ROUGE variants of `hyp` against one reference: rouge-score's
/// `RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer).score(reference, hyp)`.
pub fn rouge(hyp: &str, reference: &str, use_stemmer: bool) -> Rouge {
    Tokenized::new(hyp, use_stemmer).score(&Tokenized::new(reference, use_stemmer))
}

/// rouge-score's `score_multi(references, hyp)`: for each variant separately, the score against
/// the reference with the highest F (the first one on a tie).
pub fn rouge_multi(hyp: &str, references: &[&str], use_stemmer: bool) -> Result<Rouge> {
    ensure!(!references.is_empty(), "ROUGE needs at least one reference");
    let hyp = Tokenized::new(hyp, use_stemmer);
    let mut best = hyp.score(&Tokenized::new(references[0], use_stemmer));
    for r in &references[1..] {
        let s = hyp.score(&Tokenized::new(r, use_stemmer));
        for (b, s) in best.variants_mut().into_iter().zip(s.variants()) {
            if s.fmeasure > b.fmeasure {
                *b = s;
            }
        }
    }
    Ok(best)
}

/// ROUGE of every hypothesis against its references (with several, [`rouge_multi`]) and the
/// plain mean over pairs. `refs[r][i]` is the r-th reference of hypothesis `i`; every reference
/// stream must have one line per hypothesis.
pub fn corpus_rouge(hyps: &[&str], refs: &[Vec<&str>], use_stemmer: bool) -> Result<CorpusRouge> {
    ensure!(!hyps.is_empty(), "ROUGE of an empty corpus: there are no hypotheses");
    super::check_reference_streams("ROUGE", hyps.len(), refs)?;
    // Pairs are independent; the mean below adds them in order, so threads do not change it.
    let pairs = (0..hyps.len())
        .into_par_iter()
        .map(|i| {
            let seg_refs: Vec<&str> = refs.iter().map(|stream| stream[i]).collect();
            rouge_multi(hyps[i], &seg_refs, use_stemmer)
        })
        .collect::<Result<Vec<Rouge>>>()?;
    let mut mean = Rouge::default();
    for p in &pairs {
        for (m, s) in mean.variants_mut().into_iter().zip(p.variants()) {
            m.precision += s.precision;
            m.recall += s.recall;
            m.fmeasure += s.fmeasure;
        }
    }
    let count = pairs.len() as f64;
    for m in mean.variants_mut() {
        m.precision /= count;
        m.recall /= count;
        m.fmeasure /= count;
    }
    Ok(CorpusRouge { mean, pairs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rouge_tokenizer_rules() {
        assert_eq!(
            rouge_tokenize("The CAT's 3rd naïve-café, 東京!", false),
            ["the", "cat", "s", "3rd", "na", "ve", "caf"]
        );
        assert_eq!(rouge_tokenize("Running cats ran", true), ["run", "cat", "ran"]);
        // U+0130 lowercases to "i" + a combining dot; the Kelvin sign to "k".
        assert_eq!(rouge_tokenize("\u{130}t \u{212a}m", false), ["i", "t", "km"]);
    }

    #[test]
    fn rouge_hand_computed() {
        let s = rouge("the cat sat on the mat", "the cat was on the mat", false);
        // Unigrams: 5 of 6 shared; bigrams: "the cat", "on the", "the mat" of 5; LCS 5.
        assert_eq!(s.rouge1, RougeScore::new(5.0 / 6.0, 5.0 / 6.0));
        assert_eq!(s.rouge2, RougeScore::new(3.0 / 5.0, 3.0 / 5.0));
        assert_eq!(s.rouge_l, RougeScore::new(5.0 / 6.0, 5.0 / 6.0));
        assert_eq!(s.rouge_lsum, s.rouge_l);
        assert_eq!(rouge("", "a b", false), Rouge::default());
        assert_eq!(rouge("x y", "a b", false).rouge1.fmeasure, 0.0);
    }

    #[test]
    fn rouge_lsum_union_lcs() {
        // Lin (2004) §3.2: reference w1 w2 w3 w4 w5, candidates "w1 w2 w6 w7 w8" and
        // "w1 w3 w8 w9 w5": union LCS w1 w2 w3 w5, so recall 4/5 and precision 4/10.
        let r = vec![vec!["w1", "w2", "w3", "w4", "w5"]];
        let c = vec![vec!["w1", "w2", "w6", "w7", "w8"], vec!["w1", "w3", "w8", "w9", "w5"]];
        assert_eq!(rouge_lsum(&c, &r), RougeScore::new(4.0 / 10.0, 4.0 / 5.0));
    }
}
