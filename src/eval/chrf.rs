//! chrF (Popović 2015) and chrF++ (Popović 2017) exactly as sacrebleu (2.x) computes them with
//! its `CHRF` defaults: character n-grams up to 6 over the text with all whitespace removed, word
//! n-grams up to 0 (chrF) or 2 (chrF++) over whitespace-split words with one leading or trailing
//! punctuation character split off, β = 2, and "effective order" averaging (orders that the
//! hypothesis or the reference is too short to have are left out of the precision and recall
//! averages) instead of ε smoothing. With several references, each segment takes the statistics
//! of the reference that gives it the best sentence-level F score (the first one on a tie).
//! Corpus scores add the per-segment statistics before computing one F score.
//!
//! Checked against sacrebleu 2.6.0's own numbers in tests/metrics_generation.rs (fixtures from
//! scripts/make_metric_fixtures.py). Text is taken as is: no tokenisation, no Unicode
//! normalisation; n-grams are over Unicode scalar values (Python's `str` indexing).

use super::bleu::is_py_space;
use anyhow::{ensure, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;

/// sacrebleu's `CHRF(...)` arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ChrfConfig {
    /// Largest character n-gram order (sacrebleu `char_order`, default 6).
    pub char_order: usize,
    /// Largest word n-gram order (`word_order`): 0 for chrF, 2 for chrF++.
    pub word_order: usize,
    /// Recall is weighted β times as much as precision (`beta`, default 2).
    pub beta: u32,
    /// Lowercase hypotheses and references first (`lowercase`, default false). Uses Rust's Unicode
    /// tables, which can differ from the Python build's for characters added to Unicode since.
    pub lowercase: bool,
    /// Keep whitespace inside character n-grams (`whitespace`, default false: removed).
    pub whitespace: bool,
    /// chrF++.py / Moses / NLTK style: average the per-order F scores, with ε for empty orders
    /// (`eps_smoothing`, default false: effective-order averaging of precision and recall).
    pub eps_smoothing: bool,
}

impl ChrfConfig {
    /// sacrebleu's `CHRF()`: chrF2.
    pub const CHRF: ChrfConfig =
        ChrfConfig { char_order: 6, word_order: 0, beta: 2, lowercase: false, whitespace: false, eps_smoothing: false };
    /// sacrebleu's `CHRF(word_order=2)`: chrF2++.
    pub const CHRF_PLUS_PLUS: ChrfConfig = ChrfConfig { word_order: 2, ..ChrfConfig::CHRF };

    fn orders(&self) -> usize {
        self.char_order + self.word_order
    }
}

impl Default for ChrfConfig {
    fn default() -> Self {
        ChrfConfig::CHRF
    }
}

/// Counts for one n-gram order, summed over the segments scored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NgramCounts {
    /// Hypothesis n-grams (0 for a segment whose reference has none of this order, as sacrebleu).
    pub hyp: u64,
    /// Reference n-grams.
    #[serde(rename = "ref")]
    pub reference: u64,
    /// Hypothesis n-grams matched in the reference, clipped to the reference's count.
    pub matches: u64,
}

/// A chrF / chrF++ score and the statistics it came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Chrf {
    /// sacrebleu's name: `chrF2`, `chrF2++` (one `+` per word order).
    pub name: String,
    /// The score in [0, 100].
    pub score: f64,
    pub char_order: usize,
    pub word_order: usize,
    pub beta: u32,
    /// Character orders 1..=char_order, then word orders 1..=word_order (sacrebleu's flat
    /// `[hyp, ref, match] * order` statistics, grouped).
    pub stats: Vec<NgramCounts>,
}

/// sacrebleu's score line: `chrF2++ = 45.67`.
impl fmt::Display for Chrf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {:.2}", self.name, self.score)
    }
}

const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// chrF++'s word tokenisation (sacrebleu `CHRF._remove_punctuation`): split on whitespace as
/// Python's `str.split()` does; a word of two or more characters that ends with an ASCII
/// punctuation character is split before it, else one that starts with one is split after it.
/// Only one character is split off: `(hi)` gives `(hi` and `)`, `wow!!` gives `wow!` and `!`.
pub fn chrf_words(sent: &str) -> Vec<&str> {
    let mut words = Vec::new();
    for w in sent.split(is_py_space).filter(|w| !w.is_empty()) {
        let mut chars = w.chars();
        let (first, last) = (chars.next().unwrap(), chars.next_back());
        match last {
            // One character (Python's len(w) == 1).
            None => words.push(w),
            Some(last) if PUNCTUATION.contains(last) => {
                let cut = w.len() - last.len_utf8();
                words.extend([&w[..cut], &w[cut..]]);
            }
            Some(_) if PUNCTUATION.contains(first) => {
                let cut = first.len_utf8();
                words.extend([&w[..cut], &w[cut..]]);
            }
            Some(_) => words.push(w),
        }
    }
    words
}

/// The n-gram counters of one segment: orders 1..=char_order of characters, then word orders.
/// Keys are slices into the segment's character or word vectors.
struct SegmentNgrams {
    chars: Vec<char>,
    words: Vec<String>,
}

type Counter<'a, T> = HashMap<&'a [T], u64>;

fn count_ngrams<T: std::hash::Hash + Eq>(items: &[T], n: usize) -> Counter<'_, T> {
    let mut m = HashMap::new();
    for g in items.windows(n) {
        *m.entry(g).or_insert(0) += 1;
    }
    m
}

impl SegmentNgrams {
    fn new(text: &str, cfg: &ChrfConfig) -> Self {
        let text = if cfg.lowercase { text.to_lowercase() } else { text.to_owned() };
        let chars =
            if cfg.whitespace { text.chars().collect() } else { text.chars().filter(|&c| !is_py_space(c)).collect() };
        let words =
            if cfg.word_order > 0 { chrf_words(&text).into_iter().map(str::to_owned).collect() } else { vec![] };
        SegmentNgrams { chars, words }
    }

    fn counters(&self, cfg: &ChrfConfig) -> (Vec<Counter<'_, char>>, Vec<Counter<'_, String>>) {
        let c = (1..=cfg.char_order).map(|n| count_ngrams(&self.chars, n)).collect();
        let w = (1..=cfg.word_order).map(|n| count_ngrams(&self.words, n)).collect();
        (c, w)
    }
}

/// sacrebleu `CHRF._get_match_statistics`.
fn match_stats<T: std::hash::Hash + Eq>(hyp: &Counter<'_, T>, reference: &Counter<'_, T>) -> NgramCounts {
    let (mut hyp_count, mut matches) = (0, 0);
    for (g, &c) in hyp {
        hyp_count += c;
        if let Some(&rc) = reference.get(g) {
            matches += c.min(rc);
        }
    }
    NgramCounts {
        // Hypothesis n-grams do not count where the reference has none of that order.
        hyp: if reference.is_empty() { 0 } else { hyp_count },
        reference: reference.values().sum(),
        matches,
    }
}

/// sacrebleu `CHRF._compute_f_score`, operation for operation.
fn f_score(stats: &[NgramCounts], cfg: &ChrfConfig) -> f64 {
    const EPS: f64 = 1e-16;
    let factor = (cfg.beta * cfg.beta) as f64;
    let (mut score, mut avg_prec, mut avg_rec) = (0.0f64, 0.0f64, 0.0f64);
    let mut effective_order = 0usize;
    for s in stats {
        let prec = if s.hyp > 0 { s.matches as f64 / s.hyp as f64 } else { EPS };
        let rec = if s.reference > 0 { s.matches as f64 / s.reference as f64 } else { EPS };
        let denom = factor * prec + rec;
        score += if denom > 0.0 { (1.0 + factor) * prec * rec / denom } else { EPS };
        if s.hyp > 0 && s.reference > 0 {
            avg_prec += prec;
            avg_rec += rec;
            effective_order += 1;
        }
    }
    if cfg.eps_smoothing {
        return 100.0 * score / cfg.orders() as f64;
    }
    if effective_order == 0 {
        avg_prec = 0.0;
        avg_rec = 0.0;
    } else {
        avg_prec /= effective_order as f64;
        avg_rec /= effective_order as f64;
    }
    if avg_prec + avg_rec != 0.0 {
        let score = (1.0 + factor) * avg_prec * avg_rec;
        100.0 * (score / (factor * avg_prec + avg_rec))
    } else {
        0.0
    }
}

/// Statistics of one segment against the best of its references (sacrebleu
/// `CHRF._compute_segment_statistics`): the first reference with the highest F score.
fn segment_stats(hyp: &str, refs: &[&str], cfg: &ChrfConfig) -> Vec<NgramCounts> {
    let hyp = SegmentNgrams::new(hyp, cfg);
    let (hyp_chars, hyp_words) = hyp.counters(cfg);
    let mut best: Option<(f64, Vec<NgramCounts>)> = None;
    for r in refs {
        let r = SegmentNgrams::new(r, cfg);
        let (ref_chars, ref_words) = r.counters(cfg);
        let stats: Vec<NgramCounts> = hyp_chars
            .iter()
            .zip(&ref_chars)
            .map(|(h, r)| match_stats(h, r))
            .chain(hyp_words.iter().zip(&ref_words).map(|(h, r)| match_stats(h, r)))
            .collect();
        let f = f_score(&stats, cfg);
        if best.as_ref().is_none_or(|(bf, _)| f > *bf) {
            best = Some((f, stats));
        }
    }
    best.map(|(_, s)| s).unwrap_or_else(|| vec![NgramCounts::default(); cfg.orders()])
}

fn score_from_stats(stats: Vec<NgramCounts>, cfg: &ChrfConfig) -> Chrf {
    Chrf {
        name: format!("chrF{}{}", cfg.beta, "+".repeat(cfg.word_order)),
        score: f_score(&stats, cfg),
        char_order: cfg.char_order,
        word_order: cfg.word_order,
        beta: cfg.beta,
        stats,
    }
}

fn check_config(cfg: &ChrfConfig) -> Result<()> {
    ensure!(cfg.orders() > 0, "chrF needs a character or word n-gram order above 0");
    Ok(())
}

/// Corpus chrF with any configuration (`CHRF(**cfg).corpus_score(hyps, refs)`). `refs[r][i]` is
/// the r-th reference of segment `i`; every reference stream must have one line per hypothesis
/// (sacrebleu would silently stop at the shorter one; this is an error here).
pub fn corpus_chrf_with(hyps: &[&str], refs: &[Vec<&str>], cfg: &ChrfConfig) -> Result<Chrf> {
    check_config(cfg)?;
    ensure!(!hyps.is_empty(), "chrF of an empty corpus: there are no hypotheses");
    super::check_reference_streams("chrF", hyps.len(), refs)?;
    // Segments are independent and their counts are integers, so threads do not change the sums.
    let segments: Vec<Vec<NgramCounts>> = (0..hyps.len())
        .into_par_iter()
        .map(|i| {
            let seg_refs: Vec<&str> = refs.iter().map(|stream| stream[i]).collect();
            segment_stats(hyps[i], &seg_refs, cfg)
        })
        .collect();
    let mut total = vec![NgramCounts::default(); cfg.orders()];
    for seg in segments {
        for (t, s) in total.iter_mut().zip(seg) {
            t.hyp += s.hyp;
            t.reference += s.reference;
            t.matches += s.matches;
        }
    }
    Ok(score_from_stats(total, cfg))
}

/// `sacrebleu.corpus_chrf(hyps, refs)`: chrF2.
pub fn corpus_chrf(hyps: &[&str], refs: &[Vec<&str>]) -> Result<Chrf> {
    corpus_chrf_with(hyps, refs, &ChrfConfig::CHRF)
}

/// `sacrebleu.corpus_chrf(hyps, refs, word_order=2)`: chrF2++.
pub fn corpus_chrf_pp(hyps: &[&str], refs: &[Vec<&str>]) -> Result<Chrf> {
    corpus_chrf_with(hyps, refs, &ChrfConfig::CHRF_PLUS_PLUS)
}

/// Sentence chrF with any configuration (`CHRF(**cfg).sentence_score(hyp, refs)`).
pub fn sentence_chrf_with(hyp: &str, refs: &[&str], cfg: &ChrfConfig) -> Result<Chrf> {
    check_config(cfg)?;
    ensure!(!refs.is_empty(), "chrF needs at least one reference");
    Ok(score_from_stats(segment_stats(hyp, refs, cfg), cfg))
}

/// `sacrebleu.sentence_chrf(hyp, refs)`: chrF2.
pub fn sentence_chrf(hyp: &str, refs: &[&str]) -> Result<Chrf> {
    sentence_chrf_with(hyp, refs, &ChrfConfig::CHRF)
}

/// `sacrebleu.sentence_chrf(hyp, refs, word_order=2)`: chrF2++.
pub fn sentence_chrf_pp(hyp: &str, refs: &[&str]) -> Result<Chrf> {
    sentence_chrf_with(hyp, refs, &ChrfConfig::CHRF_PLUS_PLUS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chrf_word_splitting() {
        assert_eq!(
            chrf_words("(hi) wow!! \"quoted\" a . x,y é!"),
            ["(hi", ")", "wow!", "!", "\"quoted", "\"", "a", ".", "x,y", "é", "!"]
        );
        assert_eq!(chrf_words("  \u{3000} "), Vec::<&str>::new());
    }

    #[test]
    fn chrf_hand_computed() {
        // Identical: every order matches fully.
        let c = sentence_chrf("ab cd", &["abcd"]).unwrap();
        assert_eq!(c.score, 100.0);
        assert_eq!(c.stats[0], NgramCounts { hyp: 4, reference: 4, matches: 4 });
        assert_eq!(c.stats[4], NgramCounts { hyp: 0, reference: 0, matches: 0 });
        assert_eq!(c.to_string(), "chrF2 = 100.00");
        // "ab" vs "abc": unigram P=1 R=2/3, bigram P=1 R=1/2, trigram only in the reference.
        let c = sentence_chrf("ab", &["abc"]).unwrap();
        let (p, r) = ((1.0 + 1.0) / 2.0, (2.0 / 3.0 + 0.5) / 2.0);
        assert!((c.score - 100.0 * 5.0 * p * r / (4.0 * p + r)).abs() < 1e-12, "{c}");
        // Nothing shared, and an empty hypothesis.
        assert_eq!(sentence_chrf("xyz", &["abc"]).unwrap().score, 0.0);
        assert_eq!(sentence_chrf("", &["abc"]).unwrap().score, 0.0);
        assert_eq!(sentence_chrf_pp("a", &["b", "a"]).unwrap().name, "chrF2++");
    }
}
