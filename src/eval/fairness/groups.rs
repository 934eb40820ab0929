//! Group fairness of a classifier's predictions, with fairlearn's definitions (fairlearn 0.15,
//! `fairlearn.metrics`): the items are split by a group column (a sensitive feature) and each
//! group gets the ordinary metrics; the disparity measures compare the groups.
//!
//! ```text
//! positive class p (--positive):  selected = (pred == p),  actual = (gold == p)
//! selection rate   = #selected / n                              (fairlearn selection_rate)
//! TPR              = #(selected ∧ actual) / #actual             (true_positive_rate; 0 if no actual)
//! FPR              = #(selected ∧ ¬actual) / #¬actual           (false_positive_rate; 0 if none)
//! demographic parity difference = max_g sel(g) − min_g sel(g)   (method="between_groups")
//! demographic parity ratio      = min_g sel(g) / max_g sel(g)   (0/0 = NaN, as pandas gives)
//! equalized odds difference     = max(TPR diff, FPR diff), each max_g − min_g (agg="worst_case")
//! ```
//!
//! Accuracy, precision, recall and F1 per group are scikit-learn's ([`classification_report`]
//! on the group's items, with zero_division = 0): for the positive class (one-vs-rest when there
//! are more than two labels) and macro-averaged over every label of the whole data, so a label
//! absent from a group still counts (as 0) in that group's macro average. Groups are reported in
//! sorted order (fairlearn's too).

use crate::eval::classification::{classification_report, sorted_labels, ZeroDivision};
use anyhow::{ensure, Result};
use serde::Serialize;
use std::fmt::Write;

/// The metrics of one group (or of all items).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupScores {
    pub group: String,
    pub count: usize,
    pub selection_rate: f64,
    pub accuracy: f64,
    /// Precision, recall and F1 of the positive class.
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// True positive rate (= recall of the positive class) and false positive rate.
    pub tpr: f64,
    pub fpr: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
}

/// Per-group metrics and the disparities between groups.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupReport {
    pub positive: String,
    /// Every label of gold and predictions, sorted.
    pub labels: Vec<String>,
    pub overall: GroupScores,
    pub groups: Vec<GroupScores>,
    pub demographic_parity_difference: f64,
    /// NaN when no group has any positive prediction.
    pub demographic_parity_ratio: f64,
    pub equalized_odds_difference: f64,
    pub tpr_difference: f64,
    pub fpr_difference: f64,
    /// max − min of per-group accuracy.
    pub accuracy_difference: f64,
}

fn rate(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn scores(name: &str, gold: &[&str], pred: &[&str], labels: &[&str], positive: &str) -> Result<GroupScores> {
    let r = classification_report(gold, pred, Some(labels), ZeroDivision::Zero)?;
    let c = labels.iter().position(|l| *l == positive).expect("the positive label is among the labels");
    let n = gold.len();
    let selected = pred.iter().filter(|p| **p == positive).count();
    let actual = gold.iter().filter(|g| **g == positive).count();
    let tp = r.confusion[c][c] as usize;
    let pos = &r.classes[c];
    Ok(GroupScores {
        group: name.to_string(),
        count: n,
        selection_rate: rate(selected, n),
        accuracy: r.accuracy,
        precision: pos.precision,
        recall: pos.recall,
        f1: pos.f1,
        tpr: rate(tp, actual),
        fpr: rate(selected - tp, n - actual),
        macro_precision: r.macro_avg.precision,
        macro_recall: r.macro_avg.recall,
        macro_f1: r.macro_avg.f1,
    })
}

fn spread(groups: &[GroupScores], f: impl Fn(&GroupScores) -> f64) -> (f64, f64) {
    let vals: Vec<f64> = groups.iter().map(f).collect();
    let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// Group metrics of predictions `pred` against `gold`, items split by `groups` (all aligned),
/// with `positive` as the positive class. Errors: lengths that differ, no items, a positive
/// label that occurs in neither gold nor predictions.
pub fn group_metrics(gold: &[&str], pred: &[&str], groups: &[&str], positive: &str) -> Result<GroupReport> {
    ensure!(
        gold.len() == pred.len() && gold.len() == groups.len(),
        "{} gold labels, {} predictions and {} group values: they must be aligned, one per item",
        gold.len(),
        pred.len(),
        groups.len()
    );
    ensure!(!gold.is_empty(), "no items to score");
    let labels = sorted_labels(gold.iter().chain(pred).copied());
    ensure!(
        labels.iter().any(|l| l == positive),
        "the positive label {positive:?} occurs in neither the gold labels nor the predictions (labels: {})",
        labels.join(", ")
    );
    let label_refs: Vec<&str> = labels.iter().map(String::as_str).collect();
    let overall = scores("(all)", gold, pred, &label_refs, positive)?;
    let mut per_group = Vec::new();
    for g in sorted_labels(groups.iter().copied()) {
        let idx: Vec<usize> = (0..gold.len()).filter(|&i| groups[i] == g).collect();
        let (g_gold, g_pred): (Vec<&str>, Vec<&str>) = idx.iter().map(|&i| (gold[i], pred[i])).unzip();
        per_group.push(scores(&g, &g_gold, &g_pred, &label_refs, positive)?);
    }
    let (sel_min, sel_max) = spread(&per_group, |s| s.selection_rate);
    let (tpr_min, tpr_max) = spread(&per_group, |s| s.tpr);
    let (fpr_min, fpr_max) = spread(&per_group, |s| s.fpr);
    let (acc_min, acc_max) = spread(&per_group, |s| s.accuracy);
    let (tpr_difference, fpr_difference) = (tpr_max - tpr_min, fpr_max - fpr_min);
    Ok(GroupReport {
        positive: positive.to_string(),
        labels,
        overall,
        groups: per_group,
        demographic_parity_difference: sel_max - sel_min,
        demographic_parity_ratio: if sel_max == 0.0 { f64::NAN } else { sel_min / sel_max },
        equalized_odds_difference: tpr_difference.max(fpr_difference),
        tpr_difference,
        fpr_difference,
        accuracy_difference: acc_max - acc_min,
    })
}

impl GroupReport {
    /// A table: one row per group, then the disparities.
    pub fn to_text(&self) -> String {
        let width = self.groups.iter().map(|g| g.group.chars().count()).max().unwrap_or(0).max(7);
        let mut s = format!("positive class: {}\n", self.positive);
        let _ = writeln!(
            s,
            "{:<width$} {:>6} {:>9} {:>8} {:>9} {:>7} {:>7} {:>7} {:>7}",
            "group", "n", "selection", "accuracy", "precision", "recall", "f1", "fpr", "macroF1"
        );
        for g in self.groups.iter().chain(std::iter::once(&self.overall)) {
            let _ = writeln!(
                s,
                "{:<width$} {:>6} {:>9.4} {:>8.4} {:>9.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4}",
                g.group, g.count, g.selection_rate, g.accuracy, g.precision, g.recall, g.f1, g.fpr, g.macro_f1
            );
        }
        let _ = writeln!(s, "demographic parity difference {:.4}", self.demographic_parity_difference);
        let _ = writeln!(s, "demographic parity ratio      {:.4}", self.demographic_parity_ratio);
        let _ = writeln!(
            s,
            "equalized odds difference     {:.4} (TPR difference {:.4}, FPR difference {:.4})",
            self.equalized_odds_difference, self.tpr_difference, self.fpr_difference
        );
        let _ = writeln!(s, "accuracy difference           {:.4}", self.accuracy_difference);
        s
    }

    /// JSON; NaN (a ratio of 0/0) is null.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if self.demographic_parity_ratio.is_nan() {
            v["demographic_parity_ratio"] = serde_json::Value::Null;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_case() {
        // Group a: gold 1 1 0 0, pred 1 0 1 0; group b: gold 1 0, pred 1 1.
        let gold = ["1", "1", "0", "0", "1", "0"];
        let pred = ["1", "0", "1", "0", "1", "1"];
        let groups = ["a", "a", "a", "a", "b", "b"];
        let r = group_metrics(&gold, &pred, &groups, "1").unwrap();
        let (a, b) = (&r.groups[0], &r.groups[1]);
        assert_eq!((a.selection_rate, a.tpr, a.fpr, a.accuracy), (0.5, 0.5, 0.5, 0.5));
        assert_eq!((b.selection_rate, b.tpr, b.fpr, b.accuracy), (1.0, 1.0, 1.0, 0.5));
        assert_eq!(r.demographic_parity_difference, 0.5);
        assert_eq!(r.demographic_parity_ratio, 0.5);
        assert_eq!(r.equalized_odds_difference, 0.5);
        assert_eq!(r.overall.count, 6);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let e = format!("{:#}", group_metrics(&["1"], &["1", "0"], &["a"], "1").unwrap_err());
        assert!(e.contains("aligned"), "{e}");
        let e = format!("{:#}", group_metrics(&["1", "0"], &["1", "0"], &["a", "b"], "yes").unwrap_err());
        assert!(e.contains("\"yes\" occurs in neither") && e.contains("labels: 0, 1"), "{e}");
        assert!(group_metrics(&[], &[], &[], "1").is_err());
    }
}
