//! BLEU exactly as sacrebleu (2.x) computes it with its defaults: mteval-v13a tokenisation,
//! n-grams up to 4, clipped counts against the per-n-gram maximum over the references,
//! brevity penalty against the closest reference length (ties go to the shorter), and 'exp'
//! smoothing. [`corpus_bleu`] matches `sacrebleu.corpus_bleu`, [`sentence_bleu`] matches
//! `sacrebleu.sentence_bleu` (which also uses effective order). Checked against sacrebleu 2.6.0's
//! own numbers in tests/bleu.rs (fixtures from scripts/make_bleu_fixtures.py).
//!
//! Hypotheses and references are plain detokenised text; the 13a tokeniser is applied here.

use anyhow::{ensure, Result};
use std::collections::HashMap;
use std::fmt;

pub const MAX_NGRAM_ORDER: usize = 4;

/// sacrebleu's smoothing methods (Chen & Cherry 2014).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Smoothing {
    /// No smoothing: a zero precision makes the score 0.
    None,
    /// A zero precision counts `value` matches instead (sacrebleu 'floor', default 0.1).
    Floor(f64),
    /// `value` is added to matches and totals of orders 2 and up (sacrebleu 'add-k', default 1).
    /// [`Bleu::counts`] / [`Bleu::totals`] stay the raw integers (sacrebleu reports the sums).
    AddK(f64),
    /// The k-th order with zero matches gets precision `1 / (2^k · total)` (sacrebleu 'exp', mteval's).
    Exp,
}

/// Statistics and score, with sacrebleu's field meanings. Precisions and score are percentages.
#[derive(Clone, Debug, PartialEq)]
pub struct Bleu {
    pub score: f64,
    /// Clipped n-gram matches, n = 1..=4.
    pub counts: [u64; MAX_NGRAM_ORDER],
    /// Hypothesis n-grams, n = 1..=4.
    pub totals: [u64; MAX_NGRAM_ORDER],
    pub precisions: [f64; MAX_NGRAM_ORDER],
    /// Brevity penalty.
    pub bp: f64,
    /// Hypothesis tokens.
    pub sys_len: u64,
    /// Effective reference tokens.
    pub ref_len: u64,
}

impl Bleu {
    /// `sys_len / ref_len`, 0 when there is no reference token (as sacrebleu).
    pub fn ratio(&self) -> f64 {
        if self.ref_len == 0 {
            0.0
        } else {
            self.sys_len as f64 / self.ref_len as f64
        }
    }
}

/// sacrebleu's score line: `BLEU = 35.12 66.2/41.7/28.3/19.4 (BP = 1.000 ratio = 1.012 hyp_len = 9 ref_len = 9)`.
impl fmt::Display for Bleu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.precisions;
        write!(
            f,
            "BLEU = {:.2} {:.1}/{:.1}/{:.1}/{:.1} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.score,
            p[0],
            p[1],
            p[2],
            p[3],
            self.bp,
            self.ratio(),
            self.sys_len,
            self.ref_len
        )
    }
}

/// Python's `str.isspace()`, which `str.split()` and `str.rstrip()` use: Unicode White_Space
/// plus the ASCII separators U+001C..U+001F.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Applies a two-character pattern the way `re.sub` does: scanning left to right, a match at
/// position i replaces chars i and i+1 and scanning resumes at i+2; otherwise char i is kept.
fn sub_pairs(
    s: &[char],
    out: &mut Vec<char>,
    matches: impl Fn(char, char) -> bool,
    repl: impl Fn(char, char) -> [char; 4],
) {
    out.clear();
    let mut i = 0;
    while i < s.len() {
        if i + 1 < s.len() && matches(s[i], s[i + 1]) {
            out.extend(repl(s[i], s[i + 1]).iter().filter(|&&c| c != '\0'));
            i += 2;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
}

/// sacrebleu's `Tokenizer13a` (mteval-v13a): the tokens of `line`, joined by single spaces.
/// Includes the `rstrip()` sacrebleu applies to every segment before tokenising.
pub fn tokenize_13a(line: &str) -> String {
    let line = line.trim_end_matches(is_py_space);
    let mut line = line.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        // Sequential, as in sacrebleu: "&amp;lt;" becomes "<", "&amp;quot;" only "&quot;".
        line = line.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    }
    // Isolate ASCII symbols: { | } ~ [ \ ] ^ _ ` space ! " # $ % & ( ) * + : ; < = > ? @ /
    // (not ' , - . which the next rules handle, nor digits or letters).
    let is_symbol = |c: char| matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/');
    let mut a: Vec<char> = Vec::with_capacity(line.len() * 2 + 2);
    a.push(' ');
    for c in line.chars() {
        if is_symbol(c) {
            a.extend([' ', c, ' ']);
        } else {
            a.push(c);
        }
    }
    a.push(' ');
    let is_digit = |c: char| c.is_ascii_digit();
    let is_period_comma = |c: char| c == '.' || c == ',';
    let mut b = Vec::with_capacity(a.len() * 2);
    // Period and comma, unless preceded by a digit.
    sub_pairs(&a, &mut b, |x, y| !is_digit(x) && is_period_comma(y), |x, y| [x, ' ', y, ' ']);
    // Period and comma, unless followed by a digit.
    sub_pairs(&b, &mut a, |x, y| is_period_comma(x) && !is_digit(y), |x, y| [' ', x, ' ', y]);
    // A dash preceded by a digit.
    sub_pairs(&a, &mut b, |x, y| is_digit(x) && y == '-', |x, y| [x, ' ', y, ' ']);
    let s: String = b.into_iter().collect();
    s.split(is_py_space).filter(|t| !t.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Sufficient statistics of one segment: `[hyp_len, ref_len, matches(4), totals(4)]`.
type Stats = [u64; 2 + 2 * MAX_NGRAM_ORDER];

fn ngram_counts<'a, 'b>(tokens: &'b [&'a str]) -> HashMap<&'b [&'a str], u64> {
    let mut m = HashMap::new();
    for n in 1..=MAX_NGRAM_ORDER {
        for w in tokens.windows(n) {
            *m.entry(w).or_insert(0) += 1;
        }
    }
    m
}

fn segment_stats(hyp: &str, refs: &[&str]) -> Stats {
    let ref_toks: Vec<String> = refs.iter().map(|r| tokenize_13a(r)).collect();
    let ref_toks: Vec<Vec<&str>> = ref_toks.iter().map(|r| r.split(' ').filter(|t| !t.is_empty()).collect()).collect();
    // Each n-gram's count is its maximum over the references.
    let mut ref_ngrams: HashMap<&[&str], u64> = HashMap::new();
    for toks in &ref_toks {
        for (g, c) in ngram_counts(toks) {
            let e = ref_ngrams.entry(g).or_insert(0);
            *e = (*e).max(c);
        }
    }
    let hyp_tok = tokenize_13a(hyp);
    let hyp_toks: Vec<&str> = hyp_tok.split(' ').filter(|t| !t.is_empty()).collect();
    let hyp_len = hyp_toks.len() as u64;
    // Closest reference length; on a tie the shorter one.
    let mut ref_len: Option<u64> = None;
    for r in &ref_toks {
        let len = r.len() as u64;
        ref_len = Some(match ref_len {
            None => len,
            Some(best) => {
                let (d, db) = (len.abs_diff(hyp_len), best.abs_diff(hyp_len));
                if d < db || (d == db && len < best) {
                    len
                } else {
                    best
                }
            }
        });
    }
    let mut stats: Stats = [0; 2 + 2 * MAX_NGRAM_ORDER];
    stats[0] = hyp_len;
    stats[1] = ref_len.unwrap_or(0);
    for (g, c) in ngram_counts(&hyp_toks) {
        let n = g.len() - 1;
        stats[2 + MAX_NGRAM_ORDER + n] += c;
        if let Some(&rc) = ref_ngrams.get(g) {
            stats[2 + n] += c.min(rc);
        }
    }
    stats
}

/// sacrebleu's `my_log`: log, with log(0) floored at -9999999999.
fn floored_log(x: f64) -> f64 {
    if x == 0.0 {
        -9999999999.0
    } else {
        x.ln()
    }
}

/// sacrebleu's `BLEU.compute_bleu`, operation for operation (so scores agree to the last bits).
fn compute_bleu(stats: &Stats, smoothing: Smoothing, effective_order: bool) -> Bleu {
    let (sys_len, ref_len) = (stats[0], stats[1]);
    let mut counts = [0u64; MAX_NGRAM_ORDER];
    let mut totals = [0u64; MAX_NGRAM_ORDER];
    counts.copy_from_slice(&stats[2..2 + MAX_NGRAM_ORDER]);
    totals.copy_from_slice(&stats[2 + MAX_NGRAM_ORDER..]);
    let mut bp = 1.0;
    if sys_len < ref_len {
        bp = if sys_len > 0 { (1.0 - ref_len as f64 / sys_len as f64).exp() } else { 0.0 };
    }
    let mut precisions = [0.0f64; MAX_NGRAM_ORDER];
    let mut bleu = Bleu { score: 0.0, counts, totals, precisions, bp, sys_len, ref_len };
    if counts.iter().all(|&c| c == 0) {
        return bleu;
    }
    let mut smooth_mteval = 1.0f64;
    let mut eff_order = MAX_NGRAM_ORDER;
    for n in 0..MAX_NGRAM_ORDER {
        let (mut correct, mut total) = (counts[n] as f64, totals[n] as f64);
        if let Smoothing::AddK(k) = smoothing {
            if n > 0 {
                correct += k;
                total += k;
            }
        }
        if total == 0.0 {
            break;
        }
        if effective_order {
            eff_order = n + 1;
        }
        if correct == 0.0 {
            match smoothing {
                Smoothing::Exp => {
                    smooth_mteval *= 2.0;
                    precisions[n] = 100.0 / (smooth_mteval * total);
                }
                Smoothing::Floor(v) => precisions[n] = 100.0 * v / total,
                Smoothing::None | Smoothing::AddK(_) => {}
            }
        } else {
            precisions[n] = 100.0 * correct / total;
        }
    }
    // Python's sum() starts from 0 and adds left to right.
    let sum_log = precisions[..eff_order].iter().fold(0.0, |acc, &p| acc + floored_log(p));
    bleu.score = bp * (sum_log / eff_order as f64).exp();
    bleu.precisions = precisions;
    bleu
}

/// Corpus BLEU with explicit smoothing and effective-order choice (`sacrebleu.corpus_bleu(...,
/// smooth_method, smooth_value, use_effective_order)`). `refs[r][i]` is the r-th reference of
/// sentence `i`; every reference stream must have one line per hypothesis.
pub fn corpus_bleu_with(
    hyps: &[&str],
    refs: &[Vec<&str>],
    smoothing: Smoothing,
    effective_order: bool,
) -> Result<Bleu> {
    super::check_reference_streams("BLEU", hyps.len(), refs)?;
    let mut total: Stats = [0; 2 + 2 * MAX_NGRAM_ORDER];
    let mut seg_refs = Vec::with_capacity(refs.len());
    for (i, hyp) in hyps.iter().enumerate() {
        seg_refs.clear();
        seg_refs.extend(refs.iter().map(|stream| stream[i]));
        for (t, s) in total.iter_mut().zip(segment_stats(hyp, &seg_refs)) {
            *t += s;
        }
    }
    Ok(compute_bleu(&total, smoothing, effective_order))
}

/// `sacrebleu.corpus_bleu(hyps, refs)`: 'exp' smoothing, no effective order.
pub fn corpus_bleu(hyps: &[&str], refs: &[Vec<&str>]) -> Result<Bleu> {
    corpus_bleu_with(hyps, refs, Smoothing::Exp, false)
}

/// `sacrebleu.sentence_bleu(hyp, refs, smooth_method, smooth_value, use_effective_order)`.
pub fn sentence_bleu_with(hyp: &str, refs: &[&str], smoothing: Smoothing, effective_order: bool) -> Result<Bleu> {
    ensure!(!refs.is_empty(), "BLEU needs at least one reference");
    Ok(compute_bleu(&segment_stats(hyp, refs), smoothing, effective_order))
}

/// `sacrebleu.sentence_bleu(hyp, refs)`: 'exp' smoothing with effective order (orders the
/// hypothesis is too short to have are left out of the geometric mean).
pub fn sentence_bleu(hyp: &str, refs: &[&str]) -> Result<Bleu> {
    sentence_bleu_with(hyp, refs, Smoothing::Exp, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bleu_13a_rules() {
        assert_eq!(tokenize_13a("Hello, world!"), "Hello , world !");
        assert_eq!(tokenize_13a("3.14 and 1,000 but end."), "3.14 and 1,000 but end .");
        assert_eq!(tokenize_13a("1990-2000 well-known"), "1990 - 2000 well-known");
        assert_eq!(tokenize_13a("a &amp;lt; b &quot;c&quot;"), "a < b \" c \"");
        assert_eq!(tokenize_13a("  \u{a0}\t "), "");
    }

    #[test]
    fn bleu_python_whitespace() {
        // Python 3's str.isspace() code points (all of Unicode scanned).
        let py: Vec<u32> = [0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680]
            .into_iter()
            .chain(0x2000..=0x200a)
            .chain([0x2028, 0x2029, 0x202f, 0x205f, 0x3000])
            .collect();
        let ours: Vec<u32> =
            (0..=0x10ffffu32).filter_map(char::from_u32).filter(|&c| is_py_space(c)).map(u32::from).collect();
        assert_eq!(ours, py);
    }

    #[test]
    fn bleu_perfect_and_disjoint() {
        let b = corpus_bleu(&["the cat sat on the mat"], &[vec!["the cat sat on the mat"]]).unwrap();
        assert!((b.score - 100.0).abs() < 1e-9, "{b}");
        assert_eq!(b.counts, [6, 5, 4, 3]);
        let b = corpus_bleu(&["x y z"], &[vec!["a b c"]]).unwrap();
        assert_eq!(b.score, 0.0);
        let err = corpus_bleu(&["a", "b"], &[vec!["a", "b"], vec!["a"]]).unwrap_err().to_string();
        assert!(err.contains("stream 1") && err.contains("1 lines") && err.contains("2 hypotheses"), "{err}");
    }
}
