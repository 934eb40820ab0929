//! BERTScore (Zhang et al., 2020) as the bert-score package (0.3.13, `bert_score.score`)
//! computes it from contextual token embeddings (`infer::token_embed`).
//!
//! For a hypothesis x̂ and a reference x, with unit-normalised token embeddings and token
//! weights w (idf, or 1):
//!
//! ```text
//! P = Σ_{i∈x̂} w(x̂ᵢ) · max_{j∈x} x̂ᵢ·xⱼ / Σ_{i∈x̂} w(x̂ᵢ)      (each hypothesis token's best match)
//! R = Σ_{j∈x} w(xⱼ) · max_{i∈x̂} x̂ᵢ·xⱼ / Σ_{j∈x} w(xⱼ)       (each reference token's best match)
//! F1 = 2PR / (P + R)
//! ```
//!
//! bert-score's details, all reproduced here:
//! - Both sides include `[CLS]` and `[SEP]`: they are matched against (a hypothesis token's best
//!   match may be the reference's `[SEP]`) but weigh 0, so they are out of the sums' weights.
//! - Weights: without idf 1 for every token but `[CLS]` and `[SEP]`; with idf, computed from the
//!   references (all of them, every reference of every item, one document each):
//!   idf(t) = ln((N + 1) / (n_t + 1)) with n_t the references containing token t (after
//!   tokenisation, special tokens included, so `[CLS]` and `[SEP]` get ln 1 = 0), and ln(N + 1) for a
//!   token no reference has.
//! - An empty text (nothing but `[CLS]` `[SEP]` after tokenisation: "", whitespace, control
//!   characters) on either side gives P = R = F1 = 0. A hypothesis whose weights all are 0 (with
//!   idf: every token of it is in every reference; or a text "`[SEP]`", which the tokenizer reads
//!   as the special token) gives P = NaN (0/0) and F1 = 0, as bert-score.
//! - Padding: bert-score scores pairs in batches of 64 and pads the embeddings of each batch to
//!   its longest hypothesis and longest reference; padded positions have similarity 0 and still
//!   take part in the maxima. So when a text is shorter than the longest of its side in its batch
//!   of 64 pairs, its counterpart's best match is at least 0. [`BATCH`] reproduces this; it only
//!   matters where every similarity of a token is negative.
//! - Several references: every (hypothesis, reference) pair is scored, and P, R and F1 each take
//!   their maximum over the item's references separately (so they may come from different
//!   references). A NaN among them gives NaN (torch's max).
//! - Baseline rescaling (`rescale_with_baseline` with `baseline_path`): s ↦ (s − b) / (1 − b) per
//!   P, R and F1 with b from row `layer` of a baseline CSV (`LAYER,P,R,F`), after the maximum over
//!   references.

use anyhow::{bail, ensure, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Pairs per batch in bert-score's matching (its `batch_size` default); see the module docs.
pub const BATCH: usize = 64;

/// A text as BERTScore sees it: its token ids (`[CLS]` … `[SEP]`) and their embeddings,
/// unit-normalised, (T, C) row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub vecs: Vec<f32>,
}

impl Tokens {
    /// Normalises each row of `states` (T rows of `dim`) to unit length (x / ‖x‖, as bert-score).
    pub fn new(ids: Vec<u32>, mut states: Vec<f32>, dim: usize) -> Result<Self> {
        ensure!(
            dim > 0 && states.len() == ids.len() * dim,
            "{} floats for {} tokens of {dim}",
            states.len(),
            ids.len()
        );
        for row in states.chunks_exact_mut(dim) {
            let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            row.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
        }
        Ok(Tokens { ids, vecs: states })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Token weights: a weight per token id, and one for ids not listed.
#[derive(Clone, Debug, PartialEq)]
pub struct Idf {
    weights: HashMap<u32, f64>,
    unseen: f64,
}

impl Idf {
    /// No idf: every token weighs 1 but `[CLS]` and `[SEP]` (`special`), which weigh 0.
    pub fn uniform(special: [u32; 2]) -> Self {
        Idf { weights: special.iter().map(|&s| (s, 0.0)).collect(), unseen: 1.0 }
    }

    /// idf from the token ids of the references, one document each (see the module docs).
    pub fn from_references<'a>(refs: impl IntoIterator<Item = &'a [u32]>) -> Self {
        let mut counts: HashMap<u32, usize> = HashMap::new();
        let mut docs = 0usize;
        for ids in refs {
            docs += 1;
            for id in ids.iter().copied().collect::<HashSet<u32>>() {
                *counts.entry(id).or_default() += 1;
            }
        }
        let n = docs as f64;
        let weights = counts.into_iter().map(|(id, c)| (id, ((n + 1.0) / (c as f64 + 1.0)).ln())).collect();
        Idf { weights, unseen: (n + 1.0).ln() }
    }

    pub fn weight(&self, id: u32) -> f64 {
        self.weights.get(&id).copied().unwrap_or(self.unseen)
    }
}

/// Whether a text is empty for BERTScore: its ids are `[CLS]` `[SEP]` alone, bert-score's test
/// (exactly 2 tokens; a text "`[SEP]`" is 3 tokens, all of weight 0, so not empty: its P is NaN).
pub fn is_empty_text(ids: &[u32]) -> bool {
    ids.len() == 2
}

/// Precision, recall and F1 of one hypothesis.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Prf {
    /// The three values as an array, in the order P, R, F1.
    pub fn values(&self) -> [f64; 3] {
        [self.precision, self.recall, self.f1]
    }

    fn from_values(v: [f64; 3]) -> Self {
        Prf { precision: v[0], recall: v[1], f1: v[2] }
    }
}

/// P, R and F1 of one pair, with its batch's padding (`hyp_padded`: the hypothesis is shorter
/// than the longest hypothesis of its batch, so every reference token's best match is at least
/// 0; `ref_padded` likewise).
pub fn greedy_match(
    hyp: &Tokens,
    reference: &Tokens,
    dim: usize,
    idf: &Idf,
    hyp_padded: bool,
    ref_padded: bool,
) -> Prf {
    let (th, tr) = (hyp.len(), reference.len());
    // Best match of each hypothesis token (over the reference) and of each reference token.
    let floor = |padded: bool| if padded { 0.0 } else { f64::NEG_INFINITY };
    let mut best_h = vec![floor(ref_padded); th];
    let mut best_r = vec![floor(hyp_padded); tr];
    for (i, h) in hyp.vecs.chunks_exact(dim).enumerate() {
        for (j, r) in reference.vecs.chunks_exact(dim).enumerate() {
            let s = h.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
            best_h[i] = best_h[i].max(s);
            best_r[j] = best_r[j].max(s);
        }
    }
    let weighted = |ids: &[u32], best: &[f64]| {
        let w: Vec<f64> = ids.iter().map(|&id| idf.weight(id)).collect();
        let total: f64 = w.iter().sum();
        // 0/0 = NaN when every weight is 0, as in bert-score.
        w.iter().zip(best).map(|(w, b)| w / total * b).sum::<f64>()
    };
    let (mut p, mut r) = (weighted(&hyp.ids, &best_h), weighted(&reference.ids, &best_r));
    let f = 2.0 * p * r / (p + r);
    if is_empty_text(&hyp.ids) || is_empty_text(&reference.ids) {
        (p, r) = (0.0, 0.0);
    }
    Prf { precision: p, recall: r, f1: if f.is_nan() { 0.0 } else { f } }
}

/// BERTScore of every hypothesis against its references: `refs[i]` are the references of
/// `hyps[i]` (at least one each). Pairs are scored in bert-score's order (each hypothesis with
/// each of its references, item after item) and batches of [`BATCH`] pairs; the result is the
/// best P, R and F1 per item (see the module docs).
pub fn bertscore(hyps: &[&Tokens], refs: &[Vec<&Tokens>], dim: usize, idf: &Idf) -> Result<Vec<Prf>> {
    ensure!(hyps.len() == refs.len(), "{} hypotheses but {} reference lists", hyps.len(), refs.len());
    let mut pairs = Vec::new();
    for (i, group) in refs.iter().enumerate() {
        ensure!(!group.is_empty(), "hypothesis {} has no reference", i + 1);
        pairs.extend(group.iter().map(|r| (i, *r)));
    }
    // The longest hypothesis and reference of each batch of pairs.
    let longest: Vec<(usize, usize)> = pairs
        .chunks(BATCH)
        .map(|b| {
            let h = b.iter().map(|&(i, _)| hyps[i].len()).max().unwrap_or(0);
            (h, b.iter().map(|(_, r)| r.len()).max().unwrap_or(0))
        })
        .collect();
    let scores: Vec<Prf> = pairs
        .par_iter()
        .enumerate()
        .map(|(k, &(i, r))| {
            let (lh, lr) = longest[k / BATCH];
            greedy_match(hyps[i], r, dim, idf, hyps[i].len() < lh, r.len() < lr)
        })
        .collect();
    let mut out = Vec::with_capacity(hyps.len());
    let mut k = 0;
    for group in refs {
        let mut best = [f64::NEG_INFINITY; 3];
        for s in &scores[k..k + group.len()] {
            for (b, v) in best.iter_mut().zip(s.values()) {
                *b = if b.is_nan() || v.is_nan() { f64::NAN } else { b.max(v) };
            }
        }
        k += group.len();
        out.push(Prf::from_values(best));
    }
    Ok(out)
}

/// A baseline for rescaling: the P, R and F1 of unrelated sentence pairs at one layer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Baseline {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Baseline {
    /// Row `layer` (counting data rows from 0, as pandas' `iloc`) of a bert-score baseline
    /// file: CSV with the header `LAYER,P,R,F` (the package ships them as `.tsv`).
    pub fn read(path: &Path, layer: usize) -> Result<Self> {
        let table = super::files::CsvTable::read(path)?;
        ensure!(
            table.header.len() == 4 && table.header[1..] == ["P", "R", "F"],
            "{}: expected the columns LAYER,P,R,F of a bert-score baseline file, found {}",
            path.display(),
            table.header.join(",")
        );
        let Some(row) = table.rows.get(layer) else {
            bail!("{} has {} layers' rows (0..={}), none for layer {layer}", path.display(), table.rows.len(), {
                table.rows.len() as i64 - 1
            })
        };
        let num = |k: usize| -> Result<f64> {
            row[k].trim().parse::<f64>().with_context(|| {
                format!(
                    "{}: row {} column {}: {:?} is not a number",
                    path.display(),
                    layer + 1,
                    table.header[k],
                    row[k]
                )
            })
        };
        Ok(Baseline { precision: num(1)?, recall: num(2)?, f1: num(3)? })
    }

    /// (s − b) / (1 − b) for each of P, R and F1, in f32 as bert-score computes it.
    pub fn rescale(&self, s: &Prf) -> Prf {
        let r = |v: f64, b: f64| {
            let (v, b) = (v as f32, b as f32);
            ((v - b) / (1.0 - b)) as f64
        };
        Prf { precision: r(s.precision, self.precision), recall: r(s.recall, self.recall), f1: r(s.f1, self.f1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLS: u32 = 1;
    const SEP: u32 = 2;

    fn toks(ids: &[u32], rows: &[[f32; 2]]) -> Tokens {
        Tokens::new(ids.to_vec(), rows.iter().flatten().copied().collect(), 2).unwrap()
    }

    #[test]
    fn greedy_matching_by_hand() {
        let idf = Idf::uniform([CLS, SEP]);
        // Every hypothesis token points along x; reference tokens 6 along x, 7 along y.
        let h = toks(&[CLS, 5, SEP], &[[1.0, 0.0], [2.0, 0.0], [1.0, 0.0]]);
        let r = toks(&[CLS, 6, 7, SEP], &[[-1.0, 0.0], [1.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]);
        let s = greedy_match(&h, &r, 2, &idf, false, false);
        // P: token 5 matches 6 exactly. R: 6 → 1, 7 → 0 (orthogonal to every hypothesis token).
        assert_eq!((s.precision, s.recall), (1.0, 0.5));
        assert!((s.f1 - 2.0 / 3.0).abs() < 1e-12);
        // Reference token 7 only sees negative similarities unless the hypothesis is padded.
        let r2 = toks(&[CLS, 6, 7, SEP], &[[-1.0, 0.0], [1.0, 0.0], [-1.0, -1.0], [-1.0, 0.0]]);
        let s = greedy_match(&h, &r2, 2, &idf, false, false);
        assert!((s.recall - (1.0 - 0.5f64.sqrt()) / 2.0).abs() < 1e-7, "{s:?}");
        assert_eq!(greedy_match(&h, &r2, 2, &idf, true, false).recall, 0.5);
        // Empty on either side: all zero.
        let e = toks(&[CLS, SEP], &[[1.0, 0.0], [1.0, 0.0]]);
        let zero = Prf { precision: 0.0, recall: 0.0, f1: 0.0 };
        assert_eq!(greedy_match(&e, &r, 2, &idf, false, false), zero);
        assert_eq!(greedy_match(&h, &e, 2, &idf, false, false), zero);
    }

    #[test]
    fn idf_from_references_and_the_nan_case() {
        let refs: [&[u32]; 2] = [&[CLS, 5, 5, SEP], &[CLS, 5, 6, SEP]];
        let idf = Idf::from_references(refs);
        assert_eq!(idf.weight(CLS), 0.0);
        assert_eq!(idf.weight(5), 0.0);
        assert!((idf.weight(6) - (3.0f64 / 2.0).ln()).abs() < 1e-15);
        assert!((idf.weight(99) - 3.0f64.ln()).abs() < 1e-15);
        // A hypothesis of tokens every reference has: P = 0/0, F1 = 0.
        let h = toks(&[CLS, 5, SEP], &[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]);
        let r = toks(&[CLS, 5, 6, SEP], &[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]);
        let s = greedy_match(&h, &r, 2, &idf, false, false);
        assert!(s.precision.is_nan() && s.f1 == 0.0 && s.recall == 0.0, "{s:?}");
    }

    #[test]
    fn several_references_take_each_best_and_batches_pad() {
        let idf = Idf::uniform([CLS, SEP]);
        let h = toks(&[CLS, 5, SEP], &[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]);
        let good = toks(&[CLS, 6, SEP], &[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]);
        let half = toks(&[CLS, 6, 7, SEP], &[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]);
        let out = bertscore(&[&h, &h], &[vec![&half, &good], vec![&half]], 2, &idf).unwrap();
        assert_eq!(out[0], Prf { precision: 1.0, recall: 1.0, f1: 1.0 });
        assert_eq!((out[1].precision, out[1].recall), (1.0, 0.5));
        assert!(bertscore(&[&h], &[vec![]], 2, &idf).is_err());
        assert!(bertscore(&[&h], &[], 2, &idf).is_err());
    }

    #[test]
    fn baseline_file_rows_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.tsv");
        std::fs::write(&p, "LAYER,P,R,F\n0,0.5,0.25,0.4\n1,0.8,0.8,0.8\n").unwrap();
        let b = Baseline::read(&p, 0).unwrap();
        assert_eq!((b.precision, b.recall, b.f1), (0.5, 0.25, 0.4));
        let s = b.rescale(&Prf { precision: 0.75, recall: 0.25, f1: 0.7 });
        assert_eq!((s.precision, s.recall), (0.5, 0.0));
        let e = format!("{:#}", Baseline::read(&p, 2).unwrap_err());
        assert!(e.contains("none for layer 2"), "{e}");
        std::fs::write(&p, "LAYER,P,R\n0,1,2\n").unwrap();
        assert!(format!("{:#}", Baseline::read(&p, 0).unwrap_err()).contains("LAYER,P,R,F"));
    }
}
