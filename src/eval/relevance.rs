//! Relevance of generated text: whether each hypothesis says what its reference (or source)
//! says, by two embedding-based measures on one encoder directory (all-MiniLM-L6-v2 by default):
//!
//! - **BERTScore** ([`super::bertscore`]) against the references: greedy matching of contextual
//!   token embeddings (`infer::token_embed`, layer `--layer`), as the bert-score package.
//! - **Embedding similarity**: the cosine of the sentence embeddings (`infer::embed`, mean
//!   pooling and normalisation as sentence-transformers) of each hypothesis and its reference
//!   (the best over several references) and/or its source, as `util.cos_sim`.
//!
//! The references (and sources) are encoded once by [`RelevanceScorer::new`]; each hypothesis
//! file is then scored by [`RelevanceScorer::score`], per item, and summarised by
//! [`summary_metrics`] (means, and the standard deviation over items as the spread).

use super::bertscore::{bertscore, Baseline, Idf, Prf, Tokens};
use super::checkpoints::Metrics;
use super::stability::summarize;
use crate::infer::embed::{cosine, Embedder};
use crate::infer::embed_driver::model_dir;
use crate::infer::token_embed::TokenEmbedder;
use anyhow::{ensure, Context, Result};
use serde::Serialize;
use std::path::PathBuf;

/// What to compute, with which model.
#[derive(Clone, Debug, PartialEq)]
pub struct RelevanceOptions {
    /// The encoder directory (default: all-MiniLM-L6-v2's, `infer::embed::default_model_dir`).
    pub model: Option<PathBuf>,
    /// BERTScore's layer, 1..=num_hidden_layers (default: the last).
    pub layer: Option<usize>,
    /// BERTScore with idf weights from the references.
    pub idf: bool,
    /// A bert-score baseline file to rescale BERTScore with (row `layer`).
    pub baseline: Option<PathBuf>,
    /// Embedding similarity to the references.
    pub cos_reference: bool,
    /// Embedding similarity to the sources.
    pub cos_source: bool,
    /// Texts per forward pass.
    pub batch: usize,
}

/// The relevance of one hypothesis; `None` for what was not computed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ItemRelevance {
    pub bertscore: Option<Prf>,
    /// Cosine similarity to the reference (the best over several).
    pub cos_ref: Option<f64>,
    pub cos_src: Option<f64>,
}

struct BertScoreRefs {
    embedder: TokenEmbedder,
    /// `refs[r][i]`: reference stream r, item i.
    refs: Vec<Vec<Tokens>>,
    idf: Idf,
    baseline: Option<Baseline>,
}

struct SentenceRefs {
    embedder: Embedder,
    refs: Option<Vec<Vec<Vec<f32>>>>,
    src: Option<Vec<Vec<f32>>>,
}

/// References and sources encoded once, to score hypothesis files against.
pub struct RelevanceScorer {
    bert: Option<BertScoreRefs>,
    sentences: Option<SentenceRefs>,
    items: usize,
}

impl RelevanceScorer {
    /// Encodes `refs` (reference streams, `refs[r][i]`; may be empty when only the source is
    /// compared with) and `src` (one per item). BERTScore is computed when there are references;
    /// the embedding similarities as `opts` says. Mismatched counts, a missing model file, a
    /// layer the model does not have, or asking for a comparison without its texts are errors.
    pub fn new(opts: &RelevanceOptions, refs: &[Vec<String>], src: Option<&[String]>) -> Result<Self> {
        ensure!(opts.batch > 0, "the batch size must be positive");
        ensure!(!refs.is_empty() || src.is_some(), "relevance needs references or sources to compare with");
        ensure!(!opts.cos_reference || !refs.is_empty(), "similarity to the reference needs references");
        ensure!(!opts.cos_source || src.is_some(), "similarity to the source needs sources");
        ensure!(opts.baseline.is_none() || !refs.is_empty(), "rescaling BERTScore with a baseline needs references");
        let items = refs.first().map_or_else(|| src.map_or(0, |s| s.len()), |r| r.len());
        for (r, stream) in refs.iter().enumerate() {
            ensure!(
                stream.len() == items,
                "reference stream {} has {} items but the first has {items}",
                r + 1,
                stream.len()
            );
        }
        if let Some(s) = src {
            ensure!(s.len() == items, "the sources have {} items but the references have {items}", s.len());
        }
        ensure!(items > 0, "there are no items to score");
        let dir = model_dir(opts.model.clone())?;
        let bert = if refs.is_empty() {
            None
        } else {
            let mut embedder = TokenEmbedder::load(&dir, opts.layer, opts.batch)?;
            let mut encoded = Vec::with_capacity(refs.len());
            for stream in refs {
                encoded.push(encode_tokens(&mut embedder, stream)?);
            }
            let special = embedder.special_ids();
            let idf = if opts.idf {
                Idf::from_references(encoded.iter().flatten().map(|t| t.ids.as_slice()))
            } else {
                Idf::uniform(special)
            };
            let baseline = opts.baseline.as_deref().map(|p| Baseline::read(p, embedder.layer())).transpose()?;
            Some(BertScoreRefs { embedder, refs: encoded, idf, baseline })
        };
        let sentences = if opts.cos_reference || opts.cos_source {
            let mut embedder = Embedder::load(&dir, opts.batch)?;
            let refs = if opts.cos_reference {
                Some(refs.iter().map(|s| embedder.embed(s)).collect::<Result<Vec<_>>>()?)
            } else {
                None
            };
            let src = if opts.cos_source { Some(embedder.embed(src.expect("checked above"))?) } else { None };
            Some(SentenceRefs { embedder, refs, src })
        } else {
            None
        };
        Ok(RelevanceScorer { bert, sentences, items })
    }

    /// Items each hypothesis file must have.
    pub fn items(&self) -> usize {
        self.items
    }

    /// BERTScore's layer (None when BERTScore is not computed).
    pub fn bertscore_layer(&self) -> Option<usize> {
        self.bert.as_ref().map(|b| b.embedder.layer())
    }

    /// The relevance of each hypothesis (as many as the items).
    pub fn score<S: AsRef<str>>(&mut self, hyps: &[S]) -> Result<Vec<ItemRelevance>> {
        ensure!(hyps.len() == self.items, "{} hypotheses for {} items", hyps.len(), self.items);
        let mut out = vec![ItemRelevance { bertscore: None, cos_ref: None, cos_src: None }; hyps.len()];
        if let Some(b) = &mut self.bert {
            let h = encode_tokens(&mut b.embedder, hyps)?;
            let hs: Vec<&Tokens> = h.iter().collect();
            let groups: Vec<Vec<&Tokens>> = (0..hyps.len()).map(|i| b.refs.iter().map(|s| &s[i]).collect()).collect();
            let scores = bertscore(&hs, &groups, b.embedder.dim(), &b.idf)?;
            for (o, s) in out.iter_mut().zip(scores) {
                o.bertscore = Some(b.baseline.map_or(s, |base| base.rescale(&s)));
            }
        }
        if let Some(s) = &mut self.sentences {
            let h = s.embedder.embed(hyps)?;
            for (i, (o, v)) in out.iter_mut().zip(&h).enumerate() {
                o.cos_ref = s
                    .refs
                    .as_ref()
                    .map(|streams| streams.iter().map(|r| cosine(v, &r[i]) as f64).fold(f64::NEG_INFINITY, f64::max));
                o.cos_src = s.src.as_ref().map(|src| cosine(v, &src[i]) as f64);
            }
        }
        Ok(out)
    }
}

fn encode_tokens<S: AsRef<str>>(e: &mut TokenEmbedder, texts: &[S]) -> Result<Vec<Tokens>> {
    let dim = e.dim();
    e.embed(texts)?.into_iter().map(|t| Tokens::new(t.ids, t.states, dim)).collect()
}

/// Per file: BERTScore's mean P, R and F1 and the standard deviation of F1 over the items,
/// and each embedding similarity's mean and standard deviation (sample, n − 1; 0 for one item).
/// Means leave out NaN values (a BERTScore precision of 0/0, see `eval::bertscore`).
pub fn summary_metrics(items: &[ItemRelevance]) -> Metrics {
    let mut m = Vec::new();
    let stats = |pick: &dyn Fn(&ItemRelevance) -> Option<f64>| {
        let v: Vec<f64> = items.iter().filter_map(pick).filter(|x| !x.is_nan()).collect();
        summarize(&v)
    };
    if items.first().is_some_and(|i| i.bertscore.is_some()) {
        m.push(("bertscore_p".into(), stats(&|i| i.bertscore.map(|s| s.precision)).mean));
        m.push(("bertscore_r".into(), stats(&|i| i.bertscore.map(|s| s.recall)).mean));
        let f = stats(&|i| i.bertscore.map(|s| s.f1));
        m.push(("bertscore_f1".into(), f.mean));
        m.push(("bertscore_f1_std".into(), f.std));
    }
    for (name, pick) in
        [("cos_ref", (|i: &ItemRelevance| i.cos_ref) as fn(&ItemRelevance) -> Option<f64>), ("cos_src", |i| i.cos_src)]
    {
        if items.first().is_some_and(|i| pick(i).is_some()) {
            let s = stats(&pick);
            m.push((name.to_string(), s.mean));
            m.push((format!("{name}_std"), s.std));
        }
    }
    m
}

/// Items whose BERTScore precision is NaN (0/0: every token of the hypothesis weighs 0).
pub fn undefined_precisions(items: &[ItemRelevance]) -> usize {
    items.iter().filter(|i| i.bertscore.is_some_and(|s| s.precision.is_nan())).count()
}

/// One JSON object per item, one per line: `{"hyp": run, "item": n (from 1), "bertscore_p",
/// "bertscore_r", "bertscore_f1", "cos_ref", "cos_src"}` with what was computed (NaN as null).
pub fn items_jsonl(run: &str, items: &[ItemRelevance]) -> Result<String> {
    let mut out = String::new();
    for (i, it) in items.iter().enumerate() {
        let mut o = serde_json::Map::new();
        o.insert("hyp".into(), run.into());
        o.insert("item".into(), (i + 1).into());
        if let Some(s) = it.bertscore {
            o.insert("bertscore_p".into(), s.precision.into());
            o.insert("bertscore_r".into(), s.recall.into());
            o.insert("bertscore_f1".into(), s.f1.into());
        }
        if let Some(c) = it.cos_ref {
            o.insert("cos_ref".into(), c.into());
        }
        if let Some(c) = it.cos_src {
            o.insert("cos_src".into(), c.into());
        }
        out += &serde_json::to_string(&o).context("writing an item as JSON")?;
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_skip_nan_and_missing() {
        let prf = |p: f64, f: f64| Some(Prf { precision: p, recall: 0.5, f1: f });
        let items = [
            ItemRelevance { bertscore: prf(0.8, 0.6), cos_ref: Some(0.5), cos_src: None },
            ItemRelevance { bertscore: prf(f64::NAN, 0.0), cos_ref: Some(0.7), cos_src: None },
        ];
        let m = summary_metrics(&items);
        let names: Vec<&str> = m.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["bertscore_p", "bertscore_r", "bertscore_f1", "bertscore_f1_std", "cos_ref", "cos_ref_std"]);
        assert_eq!(m[0].1, 0.8);
        assert!((m[2].1 - 0.3).abs() < 1e-12 && (m[4].1 - 0.6).abs() < 1e-12);
        assert_eq!(undefined_precisions(&items), 1);
        let j = items_jsonl("h.txt", &items).unwrap();
        let second: serde_json::Value = serde_json::from_str(j.lines().nth(1).unwrap()).unwrap();
        assert_eq!(second["item"], 2);
        assert!(second["bertscore_p"].is_null() && second.get("cos_src").is_none());
    }
}
