//! A run's metrics.jsonl read into lines: the step, eval and health lines of the log, with
//! repeated steps (a resumed or restarted run) replacing the earlier points.

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::path::Path;

/// Points (x, y) of one line. Pushing an x at or before the last one drops the points from
/// that x on first: a resumed run repeats the steps after its checkpoint, and a new run in
/// the same directory starts again from 0, and the later points replace the earlier ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Line {
    pub points: Vec<(f64, f64)>,
}

impl Line {
    pub fn push(&mut self, x: f64, y: f64) {
        while self.points.last().is_some_and(|&(lx, _)| lx >= x) {
            self.points.pop();
        }
        self.points.push((x, y));
    }
}

/// A per-layer statistic: one line per (stack, layer), in the order first seen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerLines {
    pub keys: Vec<(String, usize)>,
    pub lines: Vec<Line>,
}

impl LayerLines {
    fn push(&mut self, stack: &str, layer: usize, x: f64, y: f64) {
        let k = match self.keys.iter().position(|(s, l)| s == stack && *l == layer) {
            Some(k) => k,
            None => {
                self.keys.push((stack.to_string(), layer));
                self.lines.push(Line::default());
                self.keys.len() - 1
            }
        };
        self.lines[k].push(x, y);
    }
}

/// The per-layer statistics of the health lines, by their key in the log.
pub const HEALTH_KEYS: [(&str, &str); 7] = [
    ("grad_norm", "gradient norm per layer"),
    ("update_ratio", "update / weight ratio per layer"),
    ("act_mean", "activation mean (block output)"),
    ("act_std", "activation std (block output)"),
    ("dead_share", "share of dead FFN units"),
    ("attn_entropy", "self-attention entropy (nats)"),
    ("cross_attn_entropy", "cross-attention entropy (nats)"),
];

/// What a run's metrics.jsonl holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunMetrics {
    /// From the step lines: training loss, learning rate, global gradient norm.
    pub loss: Line,
    pub lr: Line,
    pub grad_norm: Line,
    /// From the eval lines.
    pub eval_train: Line,
    pub eval_val: Line,
    /// From the health lines, in the order of [`HEALTH_KEYS`].
    pub health: Vec<LayerLines>,
}

/// A number, or None for JSON null (how a NaN is written) and other non-numbers.
fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// Reads a metrics.jsonl: step lines `{"iter", "loss", "lr", "grad_norm", ...}`, eval lines
/// `{"iter", "train_loss", "val_loss"}`, health lines `{"iter", "health": {"layers": [...]}}`.
/// Unknown keys, and lines without an iteration (like `{"skipped": true}`), are passed over;
/// a missing or empty file, a blank line and a line that is not a JSON object are errors that
/// name the file and the line.
pub fn read_metrics(path: &Path) -> Result<RunMetrics> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(!text.trim().is_empty(), "{} is empty: the run has logged nothing yet", path.display());
    let mut m = RunMetrics { health: vec![LayerLines::default(); HEALTH_KEYS.len()], ..Default::default() };
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        ensure!(!line.trim().is_empty(), "{}: empty line", at());
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}: not valid JSON", at()))?;
        ensure!(v.is_object(), "{}: not a JSON object", at());
        // The LM, translation and classification loops write "iter"; "step" is accepted too.
        let Some(x) = num(&v, "iter").or_else(|| num(&v, "step")) else { continue };
        if let Some(y) = num(&v, "loss") {
            m.loss.push(x, y);
        }
        if let Some(y) = num(&v, "lr") {
            m.lr.push(x, y);
        }
        if let Some(y) = num(&v, "grad_norm") {
            m.grad_norm.push(x, y);
        }
        if let Some(y) = num(&v, "train_loss") {
            m.eval_train.push(x, y);
        }
        if let Some(y) = num(&v, "val_loss") {
            m.eval_val.push(x, y);
        }
        if let Some(h) = v.get("health") {
            let layers = h.get("layers").and_then(Value::as_array);
            let layers = layers.with_context(|| format!("{}: \"health\" has no \"layers\" list", at()))?;
            for l in layers {
                let stack = l.get("stack").and_then(Value::as_str).unwrap_or("");
                let layer = l.get("layer").and_then(Value::as_u64);
                let layer = layer.with_context(|| format!("{}: a health layer has no \"layer\" index", at()))?;
                for (k, (key, _)) in HEALTH_KEYS.iter().enumerate() {
                    if let Some(y) = num(l, key) {
                        m.health[k].push(stack, layer as usize, x, y);
                    }
                }
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_replace_repeated_steps() {
        let mut l = Line::default();
        for (x, y) in [(10.0, 1.0), (20.0, 2.0), (30.0, 3.0), (20.0, 9.0), (30.0, 8.0)] {
            l.push(x, y);
        }
        assert_eq!(l.points, vec![(10.0, 1.0), (20.0, 9.0), (30.0, 8.0)]);
        // A new run from 0 replaces everything.
        l.push(0.0, 5.0);
        assert_eq!(l.points, vec![(0.0, 5.0)]);
    }

    #[test]
    fn reads_every_line_kind_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let lines = [
            r#"{"iter":0,"train_loss":4.2,"val_loss":4.3}"#,
            r#"{"iter":10,"loss":3.0,"lr":0.001,"grad_norm":1.5,"ms_per_iter":3.0,"tokens_per_s":9.0}"#,
            r#"{"skipped":true}"#,
            r#"{"iter":10,"health":{"layers":[{"stack":"transformer","layer":0,"grad_norm":0.5,"update_ratio":null,"act_mean":0.0,"act_std":1.0,"dead_share":0.0,"attn_entropy":2.0,"new_key":1}],"tensors":[]}}"#,
            r#"{"iter":20,"loss":null,"lr":0.002,"extra":"x"}"#,
        ];
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        let m = read_metrics(&p).unwrap();
        assert_eq!(m.loss.points, vec![(10.0, 3.0)], "a null loss (NaN) is left out");
        assert_eq!(m.lr.points, vec![(10.0, 0.001), (20.0, 0.002)]);
        assert_eq!(m.eval_val.points, vec![(0.0, 4.3)]);
        assert_eq!(m.health[0].keys, vec![("transformer".to_string(), 0)]);
        assert_eq!(m.health[0].lines[0].points, vec![(10.0, 0.5)]);
        assert!(m.health[1].lines.is_empty(), "update_ratio was null");
        assert_eq!(m.health[5].lines[0].points, vec![(10.0, 2.0)]);

        std::fs::write(&p, format!("{}\n{{\"iter\": 3, \"loss\"\n", lines[0])).unwrap();
        let e = format!("{:#}", read_metrics(&p).unwrap_err());
        assert!(e.contains("metrics.jsonl:2") && e.contains("not valid JSON"), "{e}");
        std::fs::write(&p, format!("{}\n\n{}\n", lines[0], lines[1])).unwrap();
        let e = format!("{:#}", read_metrics(&p).unwrap_err());
        assert!(e.contains("metrics.jsonl:2: empty line"), "{e}");
        std::fs::write(&p, "[1, 2]\n").unwrap();
        let e = format!("{:#}", read_metrics(&p).unwrap_err());
        assert!(e.contains("metrics.jsonl:1: not a JSON object"), "{e}");
        std::fs::write(&p, "").unwrap();
        let e = format!("{:#}", read_metrics(&p).unwrap_err());
        assert!(e.contains("is empty"), "{e}");
    }
}
