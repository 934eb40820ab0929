//! Classification metrics with scikit-learn's exact definitions (`classification_report`,
//! `precision_recall_fscore_support`, `confusion_matrix`, sklearn 1.9):
//!
//! ```text
//! per class c:  precision = tp / (tp + fp)    recall = tp / (tp + fn)
//!               F1 = 2·tp / (2·tp + fp + fn)  support = tp + fn   (gold count)
//! micro:        the same formulas over the summed tp, fp, fn (= accuracy for single-label data)
//! macro:        unweighted mean over classes;  weighted: mean weighted by support
//! ```
//!
//! A ratio whose denominator is 0 takes the `zero_division` value (sklearn's default "warn"
//! gives 0 and a warning; NaN entries are left out of the averages, as `_nanaverage` does).
//! Labels are the sorted union of gold and predicted labels — numerically when every label is
//! a number, otherwise by code point (Python's `sorted` on strings) — unless given explicitly.

use anyhow::{bail, ensure, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write;

/// What a 0/0 ratio becomes (sklearn's `zero_division`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ZeroDivision {
    /// 0, with a warning (sklearn's default "warn").
    Warn,
    Zero,
    One,
    Nan,
}

impl ZeroDivision {
    fn value(self) -> f64 {
        match self {
            ZeroDivision::Warn | ZeroDivision::Zero => 0.0,
            ZeroDivision::One => 1.0,
            ZeroDivision::Nan => f64::NAN,
        }
    }
}

impl std::str::FromStr for ZeroDivision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "warn" => ZeroDivision::Warn,
            "0" => ZeroDivision::Zero,
            "1" => ZeroDivision::One,
            "nan" => ZeroDivision::Nan,
            _ => bail!("zero_division must be warn, 0, 1 or nan, got {s:?}"),
        })
    }
}

/// Precision, recall, F1 and support of one class or one average.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scores {
    pub precision: f64,
    pub recall: f64,
    #[serde(rename = "f1-score")]
    pub f1: f64,
    pub support: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassificationReport {
    /// Class labels in report order.
    pub labels: Vec<String>,
    /// One entry per label.
    pub classes: Vec<Scores>,
    /// Correct / total over all items (only labels in `labels` count as predictions of them).
    pub accuracy: f64,
    pub micro: Scores,
    pub macro_avg: Scores,
    pub weighted_avg: Scores,
    /// True when the micro average equals accuracy (every gold and predicted label is in
    /// `labels`); sklearn then prints an "accuracy" row instead of "micro avg".
    pub micro_is_accuracy: bool,
    /// Counts: row = gold label, column = predicted label, in `labels` order.
    pub confusion: Vec<Vec<u64>>,
    /// sklearn's UndefinedMetricWarning cases, in words.
    pub warnings: Vec<String>,
}

/// Sorted unique labels: numerically if all parse as numbers, else by code point.
pub fn sorted_labels<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut set: Vec<&str> = items.into_iter().collect();
    set.sort_unstable();
    set.dedup();
    let numeric: Option<Vec<f64>> = set.iter().map(|s| s.trim().parse::<f64>().ok()).collect();
    if let Some(nums) = numeric {
        let mut pairs: Vec<(f64, &str)> = nums.into_iter().zip(set.iter().copied()).collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        return pairs.into_iter().map(|(_, s)| s.to_string()).collect();
    }
    set.into_iter().map(String::from).collect()
}

fn divide(num: f64, den: f64, zd: ZeroDivision) -> f64 {
    if den == 0.0 {
        zd.value()
    } else {
        num / den
    }
}

/// Mean of `values` weighted by `weights` (None = equal), skipping NaN entries; NaN when no
/// value is left, unweighted when the remaining weights sum to zero (sklearn's `_nanaverage`).
fn nan_average(values: &[f64], weights: Option<&[f64]>) -> f64 {
    let kept: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .map(|(i, &v)| (v, weights.map_or(1.0, |w| w[i])))
        .collect();
    if kept.is_empty() {
        return f64::NAN;
    }
    let wsum: f64 = kept.iter().map(|(_, w)| w).sum();
    if wsum == 0.0 {
        return kept.iter().map(|(v, _)| v).sum::<f64>() / kept.len() as f64;
    }
    kept.iter().map(|(v, w)| v * w).sum::<f64>() / wsum
}

/// sklearn's `classification_report(y_true, y_pred, labels, zero_division)` with the confusion
/// matrix. `labels = None` uses every label that occurs; with explicit labels, an item whose
/// gold or predicted label is not among them is an error (a typo in a label file should not
/// silently drop items).
pub fn classification_report(
    y_true: &[&str],
    y_pred: &[&str],
    labels: Option<&[&str]>,
    zero_division: ZeroDivision,
) -> Result<ClassificationReport> {
    ensure!(
        y_true.len() == y_pred.len(),
        "{} gold labels but {} predictions: the files must have one label per item, aligned",
        y_true.len(),
        y_pred.len()
    );
    ensure!(!y_true.is_empty(), "no items to score");
    let labels: Vec<String> = match labels {
        Some(l) => {
            ensure!(!l.is_empty(), "the label list is empty");
            let mut seen = std::collections::HashSet::new();
            for x in l {
                ensure!(seen.insert(*x), "label {x:?} is listed twice");
            }
            l.iter().map(|s| s.to_string()).collect()
        }
        None => sorted_labels(y_true.iter().chain(y_pred).copied()),
    };
    let index: HashMap<&str, usize> = labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    let k = labels.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for (i, (t, p)) in y_true.iter().zip(y_pred).enumerate() {
        let Some(&ti) = index.get(t) else { bail!("item {}: gold label {t:?} is not among the labels", i + 1) };
        let Some(&pi) = index.get(p) else { bail!("item {}: predicted label {p:?} is not among the labels", i + 1) };
        confusion[ti][pi] += 1;
    }
    let tp: Vec<f64> = (0..k).map(|c| confusion[c][c] as f64).collect();
    let true_sum: Vec<f64> = (0..k).map(|c| confusion[c].iter().sum::<u64>() as f64).collect();
    let pred_sum: Vec<f64> = (0..k).map(|c| confusion.iter().map(|row| row[c]).sum::<u64>() as f64).collect();

    let mut warnings = Vec::new();
    let mut prf = |tp: &[f64], pred: &[f64], truth: &[f64], what: &str| -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let p: Vec<f64> = tp.iter().zip(pred).map(|(t, d)| divide(*t, *d, zero_division)).collect();
        let r: Vec<f64> = tp.iter().zip(truth).map(|(t, d)| divide(*t, *d, zero_division)).collect();
        let f: Vec<f64> = (0..tp.len()).map(|i| divide(2.0 * tp[i], truth[i] + pred[i], zero_division)).collect();
        if zero_division == ZeroDivision::Warn {
            if pred.contains(&0.0) {
                warnings.push(format!(
                    "{what}precision is ill-defined and set to 0.0 for labels with no predicted samples"
                ));
            }
            if truth.contains(&0.0) {
                warnings.push(format!("{what}recall is ill-defined and set to 0.0 for labels with no true samples"));
            }
        }
        (p, r, f)
    };
    let (p, r, f) = prf(&tp, &pred_sum, &true_sum, "");
    let classes: Vec<Scores> =
        (0..k).map(|c| Scores { precision: p[c], recall: r[c], f1: f[c], support: true_sum[c] as u64 }).collect();
    let total_support = true_sum.iter().sum::<f64>() as u64;
    let avg = |w: Option<&[f64]>| Scores {
        precision: nan_average(&p, w),
        recall: nan_average(&r, w),
        f1: nan_average(&f, w),
        support: total_support,
    };
    let (macro_avg, weighted_avg) = (avg(None), avg(Some(&true_sum)));
    let sum = |v: &[f64]| [v.iter().sum::<f64>()];
    let (mp, mr, mf) = prf(&sum(&tp), &sum(&pred_sum), &sum(&true_sum), "micro-averaged ");
    let micro = Scores { precision: mp[0], recall: mr[0], f1: mf[0], support: total_support };
    let micro_is_accuracy = true; // every gold and predicted label is in `labels` (checked above)
    let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
    warnings.dedup();
    Ok(ClassificationReport {
        labels,
        classes,
        accuracy: correct as f64 / y_true.len() as f64,
        micro,
        macro_avg,
        weighted_avg,
        micro_is_accuracy,
        confusion,
        warnings,
    })
}

/// Python's `format(x, ".{digits}f")`, including "nan".
fn fmt_f(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "nan".into()
    } else {
        format!("{x:.digits$}")
    }
}

impl ClassificationReport {
    /// The report as sklearn prints it (`classification_report(..., digits)`).
    pub fn to_text(&self, digits: usize) -> String {
        let width =
            self.labels.iter().map(|l| l.chars().count()).max().unwrap_or(0).max("weighted avg".len()).max(digits);
        let mut s = format!("{:>width$} ", "");
        for h in ["precision", "recall", "f1-score", "support"] {
            let _ = write!(s, " {h:>9}");
        }
        s.push_str("\n\n");
        // sklearn quirk, reproduced: with no true positive at all its counts become float zeros
        // plus integers, so supports print as "3.0".
        let float_support = self.confusion.iter().enumerate().all(|(i, row)| row[i] == 0);
        let support = |n: u64| if float_support { format!("{n}.0") } else { n.to_string() };
        let row = |s: &mut String, name: &str, sc: &Scores| {
            let pad = width.saturating_sub(name.chars().count());
            let _ = write!(s, "{}{name} ", " ".repeat(pad));
            for v in [sc.precision, sc.recall, sc.f1] {
                let _ = write!(s, " {:>9}", fmt_f(v, digits));
            }
            let _ = writeln!(s, " {:>9}", support(sc.support));
        };
        for (l, sc) in self.labels.iter().zip(&self.classes) {
            row(&mut s, l, sc);
        }
        s.push('\n');
        if self.micro_is_accuracy {
            let _ = writeln!(
                s,
                "{:>width$}  {:>9} {:>9} {:>9} {:>9}",
                "accuracy",
                "",
                "",
                fmt_f(self.micro.f1, digits),
                support(self.micro.support)
            );
        } else {
            row(&mut s, "micro avg", &self.micro);
        }
        row(&mut s, "macro avg", &self.macro_avg);
        row(&mut s, "weighted avg", &self.weighted_avg);
        s
    }

    /// sklearn's `output_dict=True` layout: one object per label, then "accuracy" (a number) or
    /// "micro avg", "macro avg", "weighted avg".
    pub fn to_sklearn_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let num = |x: f64| if x.is_nan() { serde_json::Value::Null } else { serde_json::json!(x) };
        let obj = |sc: &Scores| {
            serde_json::json!({"precision": num(sc.precision), "recall": num(sc.recall), "f1-score": num(sc.f1),
                               "support": sc.support as f64})
        };
        for (l, sc) in self.labels.iter().zip(&self.classes) {
            m.insert(l.clone(), obj(sc));
        }
        if self.micro_is_accuracy {
            m.insert("accuracy".into(), num(self.micro.f1));
        } else {
            m.insert("micro avg".into(), obj(&self.micro));
        }
        m.insert("macro avg".into(), obj(&self.macro_avg));
        m.insert("weighted avg".into(), obj(&self.weighted_avg));
        serde_json::Value::Object(m)
    }
}
