//! Several runs of one evaluation (over seeds or checkpoints), summarised per metric: mean,
//! sample standard deviation (n − 1 denominator; 0 for a single run) and range.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub runs: usize,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

/// Summary of `values` (NaN if there are none).
pub fn summarize(values: &[f64]) -> Summary {
    let n = values.len();
    if n == 0 {
        return Summary { runs: 0, mean: f64::NAN, std: f64::NAN, min: f64::NAN, max: f64::NAN };
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let var = if n > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Summary { runs: n, mean, std: var.sqrt(), min, max }
}

/// One run: its name (a file or checkpoint) and its metrics by name.
pub type Run = (String, Vec<(String, f64)>);

/// Per-metric summaries over `runs`, in the metric order of the first run.
pub fn aggregate(runs: &[Run]) -> Vec<(String, Summary)> {
    let Some((_, first)) = runs.first() else { return Vec::new() };
    first
        .iter()
        .map(|(name, _)| {
            let values: Vec<f64> =
                runs.iter().filter_map(|(_, m)| m.iter().find(|(n, _)| n == name).map(|(_, v)| *v)).collect();
            (name.clone(), summarize(&values))
        })
        .collect()
}

/// A text table: one row per run, then mean / std / min / max rows when there are several.
pub fn render(runs: &[Run]) -> String {
    let Some((_, first)) = runs.first() else { return String::new() };
    let names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
    let label_w = runs.iter().map(|(r, _)| r.chars().count()).max().unwrap_or(0).max(4);
    let col_w: Vec<usize> = names.iter().map(|n| n.chars().count().max(10)).collect();
    let mut out = format!("{:<label_w$}", "");
    for (n, w) in names.iter().zip(&col_w) {
        out += &format!("  {n:>w$}");
    }
    out.push('\n');
    let row = |label: &str, vals: &mut dyn Iterator<Item = f64>| {
        let mut s = format!("{label:<label_w$}");
        for (v, w) in vals.zip(&col_w) {
            s += &format!("  {:>w$}", format_value(v));
        }
        s + "\n"
    };
    for (label, m) in runs {
        out += &row(label, &mut m.iter().map(|(_, v)| *v));
    }
    if runs.len() > 1 {
        let agg = aggregate(runs);
        for (label, pick) in [
            ("mean", (|s: &Summary| s.mean) as fn(&Summary) -> f64),
            ("std", |s| s.std),
            ("min", |s| s.min),
            ("max", |s| s.max),
        ] {
            out += &row(label, &mut agg.iter().map(|(_, s)| pick(s)));
        }
    }
    out
}

/// `{"runs": [{name, metrics}], "summary": {metric: Summary}}` (the summary only for several
/// runs), with `details` under "details" when given.
pub fn to_json(runs: &[Run], details: Option<serde_json::Value>) -> serde_json::Value {
    let runs_json: Vec<serde_json::Value> = runs
        .iter()
        .map(|(name, m)| {
            let obj: serde_json::Map<String, serde_json::Value> =
                m.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect();
            serde_json::json!({"name": name, "metrics": obj})
        })
        .collect();
    let mut out = serde_json::json!({"runs": runs_json});
    if runs.len() > 1 {
        let summary: serde_json::Map<String, serde_json::Value> =
            aggregate(runs).into_iter().map(|(k, s)| (k, serde_json::to_value(s).unwrap())).collect();
        out["summary"] = serde_json::Value::Object(summary);
    }
    if let Some(e) = details {
        out["details"] = e;
    }
    out
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 1e6 || v.abs() < 1e-3 {
        format!("{v:.4e}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_the_sample_std() {
        let s = summarize(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!((s.runs, s.mean, s.min, s.max), (8, 5.0, 2.0, 9.0));
        assert!((s.std - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(summarize(&[3.0]).std, 0.0);
        let runs: Vec<Run> = vec![
            ("a".into(), vec![("bleu".into(), 30.0), ("len".into(), 10.0)]),
            ("b".into(), vec![("bleu".into(), 32.0), ("len".into(), 12.0)]),
        ];
        let agg = aggregate(&runs);
        assert_eq!(agg[0].0, "bleu");
        assert_eq!(agg[0].1.mean, 31.0);
        assert!((agg[1].1.std - 2f64.sqrt()).abs() < 1e-12);
        let t = render(&runs);
        assert!(t.contains("mean") && t.contains("31") && t.lines().count() == 7, "{t}");
    }
}
