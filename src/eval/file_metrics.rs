//! Metrics of prediction and hypothesis files, as `lmlab eval` computes them: each file is read
//! with [`read_items`] (one item per line, or a JSONL field), scored, and reported as metrics by
//! name, one [`Run`] per file.

use super::bleu::{self, Bleu};
use super::checkpoints::{run_name, Metrics};
use super::classification::{classification_report, ClassificationReport, ZeroDivision};
use super::diversity;
use super::files::{read_aligned, read_items};
use super::rouge;
use super::stability::Run;
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};

/// The classification report of the predictions in `pred` against the gold labels
/// `gold_items` (read from `gold`), over `labels` when given.
pub fn classify_file(
    gold: &Path,
    gold_items: &[String],
    pred: &Path,
    labels: Option<&[String]>,
    zero_division: ZeroDivision,
    field: &str,
) -> Result<ClassificationReport> {
    let g: Vec<&str> = gold_items.iter().map(|s| s.as_str()).collect();
    let items = read_items(pred, field)?;
    let pr: Vec<&str> = items.iter().map(|s| s.as_str()).collect();
    let ls: Option<Vec<&str>> = labels.map(|l| l.iter().map(|s| s.as_str()).collect());
    classification_report(&g, &pr, ls.as_deref(), zero_division)
        .with_context(|| format!("{} against {}", pred.display(), gold.display()))
}

/// Accuracy and macro / weighted averages of a classification report.
pub fn classification_metrics(r: &ClassificationReport) -> Metrics {
    vec![
        ("accuracy".to_string(), r.accuracy),
        ("macro_f1".into(), r.macro_avg.f1),
        ("weighted_f1".into(), r.weighted_avg.f1),
        ("macro_precision".into(), r.macro_avg.precision),
        ("macro_recall".into(), r.macro_avg.recall),
    ]
}

/// The whole report of `pred` as JSON: scikit-learn's dict, labels, confusion matrix, warnings.
pub fn classification_details(pred: &Path, r: &ClassificationReport) -> serde_json::Value {
    serde_json::json!({"file": run_name(pred), "report": r.to_sklearn_json(),
        "labels": r.labels, "confusion": r.confusion, "warnings": r.warnings})
}

/// The items of hypothesis file `hyp`, which must be as many as the references' (`expected`).
pub fn read_hypotheses(hyp: &Path, field: &str, expected: usize) -> Result<Vec<String>> {
    let hyps = read_items(hyp, field)?;
    ensure!(hyps.len() == expected, "{} has {} lines but the references have {}", hyp.display(), hyps.len(), expected);
    Ok(hyps)
}

/// Corpus BLEU of one hypothesis file, and with `sentences` the sentence BLEU of every line.
pub struct BleuFile {
    pub bleu: Bleu,
    pub sentences: Vec<f64>,
}

/// The reference files, read and aligned (`refs[r][i]` = reference r of line i).
pub fn read_references(refs: &[PathBuf], field: &str) -> Result<Vec<Vec<String>>> {
    let ref_paths: Vec<&Path> = refs.iter().map(|p| p.as_path()).collect();
    read_aligned(&ref_paths, field)
}

/// [`BleuFile`] of `hyp` against the reference sets `ref_sets` ([`read_references`]).
pub fn bleu_file(hyp: &Path, ref_sets: &[Vec<String>], field: &str, sentences: bool) -> Result<BleuFile> {
    let hyps = read_hypotheses(hyp, field, ref_sets[0].len())?;
    let hs: Vec<&str> = hyps.iter().map(|s| s.as_str()).collect();
    let rs: Vec<Vec<&str>> = ref_sets.iter().map(|r| r.iter().map(|s| s.as_str()).collect()).collect();
    let bleu = bleu::corpus_bleu(&hs, &rs)?;
    let mut scores = Vec::new();
    if sentences {
        for (i, h) in hs.iter().enumerate() {
            let r: Vec<&str> = rs.iter().map(|r| r[i]).collect();
            scores.push(bleu::sentence_bleu(h, &r)?.score);
        }
    }
    Ok(BleuFile { bleu, sentences: scores })
}

/// BLEU, brevity penalty and length ratio.
pub fn bleu_metrics(b: &Bleu) -> Metrics {
    vec![("bleu".to_string(), b.score), ("bp".into(), b.bp), ("ratio".into(), b.ratio())]
}

/// Runs `score` on each hypothesis file against the aligned reference files.
pub fn score_with_references(
    hyp: &[PathBuf],
    refs: &[PathBuf],
    field: &str,
    mut score: impl FnMut(&[&str], &[Vec<&str>]) -> Result<Metrics>,
) -> Result<Vec<Run>> {
    let ref_sets = read_references(refs, field)?;
    let rs: Vec<Vec<&str>> = ref_sets.iter().map(|r| r.iter().map(|s| s.as_str()).collect()).collect();
    let mut runs = Vec::new();
    for h in hyp {
        let hyps = read_hypotheses(h, field, rs[0].len())?;
        let hs: Vec<&str> = hyps.iter().map(|s| s.as_str()).collect();
        runs.push((run_name(h), score(&hs, &rs).with_context(|| format!("scoring {}", h.display()))?));
    }
    Ok(runs)
}

/// F-measure, precision and recall of ROUGE-1/2/L/Lsum (means over the pairs).
pub fn rouge_metrics(hyps: &[&str], refs: &[Vec<&str>], stem: bool) -> Result<Metrics> {
    let m = rouge::corpus_rouge(hyps, refs, stem)?.mean;
    let mut out = Vec::new();
    for (name, v) in rouge::Rouge::NAMES.iter().zip(m.variants()) {
        out.push((format!("{name}_f"), v.fmeasure));
        out.push((format!("{name}_p"), v.precision));
        out.push((format!("{name}_r"), v.recall));
    }
    Ok(out)
}

/// distinct-n, rep-n and ent-n for n = 1..=max_n of the items of `hyp`, then self-BLEU (when
/// asked and there are several items).
pub fn diversity_file(hyp: &Path, field: &str, max_n: usize, self_bleu: bool) -> Result<Metrics> {
    let items = read_items(hyp, field)?;
    let texts: Vec<&str> = items.iter().map(|s| s.as_str()).collect();
    let mut m = Vec::new();
    for n in 1..=max_n {
        m.push((format!("distinct-{n}"), diversity::distinct_n(&texts, n)?.ratio));
    }
    for n in 1..=max_n {
        m.push((format!("rep-{n}"), diversity::corpus_repetition(&texts, n)?.rate));
    }
    for n in 1..=max_n {
        m.push((format!("ent-{n}"), diversity::ngram_entropy(&texts, n)?.bits));
    }
    if self_bleu && texts.len() > 1 {
        m.push(("self-bleu".into(), diversity::self_bleu(&texts)?.score));
    }
    Ok(m)
}
