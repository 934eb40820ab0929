//! Labelled text for sequence classification: GLUE SST-2 (sentiment) and TREC (question type).
//!
//! Formats, as described in the shared data README:
//! - SST-2 `train.tsv` / `dev.tsv`: header `sentence\tlabel`, then one `sentence \tlabel` per line
//!   (a space before the single tab, which is not part of the sentence), label `0` (negative) or
//!   `1` (positive). No quoting.
//! - TREC `train_5500.label` / `TREC_10.label`: `COARSE:fine question text` per line; the label
//!   is everything before the first space, and its coarse class the part before `:`.
//!
//! Labels are indices into `label_names`, which is sorted. A test set must be read with the
//! training set's names ([`LabelledText::with_labels`]) so that index `i` means the same class.

use crate::util::read_lines;
use anyhow::{bail, ensure, Result};
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct LabelledText {
    pub texts: Vec<String>,
    /// Index into `label_names` of each text's class.
    pub labels: Vec<usize>,
    /// Class names, sorted.
    pub label_names: Vec<String>,
}

/// Texts with their class names, before names become indices; `lines[i]` is the file line of
/// example `i` (for error messages).
struct Raw {
    texts: Vec<String>,
    names: Vec<String>,
    lines: Vec<usize>,
}

/// SST-2's classes: label `i` is class `i`, whatever a particular file contains.
const SST2_LABELS: [&str; 2] = ["0", "1"];

impl LabelledText {
    /// GLUE SST-2 (`sst2/train.tsv`, `sst2/dev.tsv`). Labels are `0` = negative and
    /// `1` = positive, with `label_names` `["0", "1"]` for every file, so train and dev agree.
    pub fn load_sst2(path: &Path) -> Result<Self> {
        let lines = read_lines(path)?;
        let mut it = lines.iter();
        match it.next() {
            Some(h) if h == "sentence\tlabel" => {}
            Some(h) => bail!("{}: line 1: expected the header \"sentence\\tlabel\", found {h:?}", path.display()),
            None => bail!("{}: empty file, expected the header \"sentence\\tlabel\"", path.display()),
        }
        let mut raw = Raw { texts: Vec::new(), names: Vec::new(), lines: Vec::new() };
        for (i, line) in it.enumerate() {
            let no = i + 2;
            let Some((sentence, label)) = line.split_once('\t') else {
                bail!("{}: line {no}: no tab between sentence and label: {line:?}", path.display());
            };
            ensure!(!label.contains('\t'), "{}: line {no}: more than one tab: {line:?}", path.display());
            ensure!(SST2_LABELS.contains(&label), "{}: line {no}: label {label:?} is not 0 or 1", path.display());
            raw.texts.push(sentence.strip_suffix(' ').unwrap_or(sentence).to_owned());
            raw.names.push(label.to_owned());
            raw.lines.push(no);
        }
        ensure!(!raw.texts.is_empty(), "{}: no examples after the header", path.display());
        let names: Vec<String> = SST2_LABELS.iter().map(|s| s.to_string()).collect();
        raw.into_labelled(path, names)
    }

    /// TREC question classification (`trec/train_5500.label`, `trec/TREC_10.label`) with the
    /// fine labels (`NUM:dist`, 50 in train) or, with `coarse`, their coarse classes (`NUM`, 6).
    /// The label set is the file's own (sorted); read a test file with
    /// [`LabelledText::load_trec_with_labels`] to use the training set's.
    pub fn load_trec(path: &Path, coarse: bool) -> Result<Self> {
        let raw = read_trec(path, coarse)?;
        let mut names = raw.names.clone();
        names.sort();
        names.dedup();
        raw.into_labelled(path, names)
    }

    /// TREC with a given label set (the training set's `label_names`): a label outside it is an
    /// error naming the line.
    pub fn load_trec_with_labels(path: &Path, coarse: bool, label_names: &[String]) -> Result<Self> {
        read_trec(path, coarse)?.into_labelled(path, label_names.to_vec())
    }

    /// The same examples with labels re-indexed into `label_names` (e.g. the training set's);
    /// an error if one of this set's classes is not among them.
    pub fn with_labels(self, label_names: &[String]) -> Result<Self> {
        check_sorted(label_names)?;
        let map = self
            .label_names
            .iter()
            .map(|n| match label_names.binary_search(n) {
                Ok(j) => Ok(j),
                Err(_) => bail!("label {n:?} is not among the {} given labels {label_names:?}", label_names.len()),
            })
            .collect::<Result<Vec<usize>>>()?;
        let labels = self.labels.iter().map(|&l| map[l]).collect();
        Ok(LabelledText { texts: self.texts, labels, label_names: label_names.to_vec() })
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    pub fn num_classes(&self) -> usize {
        self.label_names.len()
    }

    /// Examples per class, indexed like `label_names`.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.label_names.len()];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }
}

fn check_sorted(names: &[String]) -> Result<()> {
    ensure!(!names.is_empty(), "the label set is empty");
    ensure!(names.windows(2).all(|w| w[0] < w[1]), "label names must be sorted and distinct: {names:?}");
    Ok(())
}

fn read_trec(path: &Path, coarse: bool) -> Result<Raw> {
    let mut raw = Raw { texts: Vec::new(), names: Vec::new(), lines: Vec::new() };
    for (i, line) in read_lines(path)?.into_iter().enumerate() {
        let no = i + 1;
        let Some((label, text)) = line.split_once(' ') else {
            bail!("{}: line {no}: expected \"COARSE:fine question\", found no space: {line:?}", path.display());
        };
        let Some((c, fine)) = label.split_once(':') else {
            bail!("{}: line {no}: label {label:?} is not of the form COARSE:fine", path.display());
        };
        ensure!(
            !c.is_empty() && !fine.is_empty() && !fine.contains(':'),
            "{}: line {no}: label {label:?} is not of the form COARSE:fine",
            path.display()
        );
        ensure!(!text.trim().is_empty(), "{}: line {no}: no question text after the label", path.display());
        raw.names.push(if coarse { c } else { label }.to_owned());
        raw.texts.push(text.to_owned());
        raw.lines.push(no);
    }
    ensure!(!raw.texts.is_empty(), "{}: no examples", path.display());
    Ok(raw)
}

impl Raw {
    /// Turns class names into indices into `names` (sorted); unknown names are errors.
    fn into_labelled(self, path: &Path, names: Vec<String>) -> Result<LabelledText> {
        check_sorted(&names)?;
        let labels = self
            .names
            .iter()
            .zip(&self.lines)
            .map(|(n, &no)| match names.binary_search(n) {
                Ok(j) => Ok(j),
                Err(_) => bail!("{}: line {no}: label {n:?} is not among the labels {names:?}", path.display()),
            })
            .collect::<Result<Vec<usize>>>()?;
        Ok(LabelledText { texts: self.texts, labels, label_names: names })
    }
}
