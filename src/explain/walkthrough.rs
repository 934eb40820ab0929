//! Question 2: how attention computes its output, step by step, on one head of a trained model.
//!
//! A small character-level model is trained (the experiment's base config and budget), then
//! runs a short sentence. From layer 0's packed projection (after any position rotation) the
//! walkthrough takes head 0's Q, K and V and recomputes every step with lmlab's kernels —
//! scores Q·Kᵀ (`sgemm`), the 1/√d scaling, the causal mask (−∞ above the diagonal), the softmax
//! of each row over its visible keys (`softmax_inplace`) and the weighted sum P·V (`sgemm`) — and checks the result against the
//! probabilities and head output the model's own forward pass computed.

use super::sweep::{drop_weights, write_chart_pair};
use super::{base_config, new_result, Budget, ChartFiles, ExplainResult, Question, Spec, Table};
use crate::config::RunConfig;
use crate::inspect::plot::{plot_heatmaps, Heatmap, Scale};
use crate::kernels::gemm::{sgemm, Threads};
use crate::kernels::math::softmax_inplace;
use crate::model::transformer::ActKind;
use crate::train::{train, TrainOptions};
use anyhow::{ensure, Context, Result};
use std::path::Path;

/// The sentence the head reads.
const SENTENCE: &str = "To be, or not";

pub(super) fn run(q: &Question, spec: &Spec, budget: Budget, dir: &Path) -> Result<ExplainResult> {
    let base = base_config(spec.base.as_deref().context("the walkthrough needs `base`")?)?;
    let b = spec.budget(budget);
    let seed = b.seeds.first().copied().unwrap_or(1);
    let run_dir = dir.join("run");
    let mut set = b.set.clone();
    set.push(format!("train.seed={seed}"));
    set.push(format!("train.out_dir={:?}", run_dir.display().to_string()));
    let cfg = RunConfig::from_toml_str(base, &set).with_context(|| format!("experiments/{}.toml", q.id))?;
    let mut result = new_result(q, spec, budget, vec![seed]);
    result.configs.push(("model".into(), cfg.to_toml()));
    let summary = train(cfg, None, &TrainOptions { quiet: true, json: false })?;

    let mut ck = crate::io::checkpoint::load(&summary.checkpoint, 1, false)?;
    let ids = ck.tokenizer.encode(SENTENCE)?;
    let t = ids.len();
    let model = &mut ck.model;
    model.forward_lm(&ids, None, 1, t, false, 0)?;
    let (nh, nkv, hs) = (model.config.n_head, model.config.kv_heads(), model.config.head_size());
    let width = (nh + 2 * nkv) * hs;
    let acts = model.activations();
    let find = |kind: ActKind| {
        acts.iter().find(|a| a.layer == Some(0) && a.kind == kind).map(|a| a.data).context("layer 0's attention")
    };
    let (qkv, model_probs, model_heads) = (find(ActKind::Query)?, find(ActKind::Probs)?, find(ActKind::Heads)?);
    ensure!(qkv.len() == t * width, "layer 0's packed q/k/v has an unexpected size");
    // Head 0 and the kv head it reads (0): (T, hs) each.
    let column = |off: usize| -> Vec<f32> { (0..t).flat_map(|i| qkv[i * width + off..][..hs].to_vec()).collect() };
    let (qh, kh, vh) = (column(0), column(nh * hs), column((nh + nkv) * hs));

    // Step by step, with the kernels.
    let mut scores = vec![0.0f32; t * t];
    sgemm(false, true, t, t, hs, 1.0, &qh, hs, &kh, hs, 0.0, &mut scores, t, Threads::Single);
    let scale = 1.0 / (hs as f32).sqrt();
    let scaled: Vec<f32> = scores.iter().map(|s| s * scale).collect();
    let mut masked = scaled.clone();
    for i in 0..t {
        for j in i + 1..t {
            masked[i * t + j] = f32::NEG_INFINITY;
        }
    }
    // The softmax of each row over its visible keys; a masked key gets probability exactly 0.
    let mut probs = vec![0.0f32; t * t];
    for i in 0..t {
        let row = &mut probs[i * t..i * t + i + 1];
        row.copy_from_slice(&masked[i * t..i * t + i + 1]);
        softmax_inplace(row);
    }
    let mut out = vec![0.0f32; t * hs];
    sgemm(false, false, t, hs, t, 1.0, &probs, t, &vh, hs, 0.0, &mut out, hs, Threads::Single);

    // Against the model's own forward pass (its kernel may sum in another order).
    let head0_probs = &model_probs[..t * t];
    let c = nh * hs;
    let head0_out: Vec<f32> = (0..t).flat_map(|i| model_heads[i * c..][..hs].to_vec()).collect();
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let (dp, dout) = (diff(&probs, head0_probs), diff(&out, &head0_out));

    let labels: Vec<String> =
        ids.iter().map(|&i| format!("{:?}", ck.tokenizer.decode(&[i]).unwrap_or_default())).collect();
    let heat = |title: &str, v: &[f32]| Heatmap {
        title: title.into(),
        row_labels: labels.clone(),
        col_labels: labels.clone(),
        values: v.iter().map(|&x| if x.is_finite() { x as f64 } else { f64::NAN }).collect(),
    };
    let steps = [heat("scores Q·Kᵀ", &scores), heat("scaled by 1/√d", &scaled), heat("causal mask", &masked)];
    result.charts.push(heatmap_pair(
        &steps,
        "scores before the softmax (rows: queries, columns: keys)",
        Scale::of(&steps, true),
        "scores",
        dir,
    )?);
    let p = [heat("softmax probabilities", &probs)];
    result.charts.push(heatmap_pair(
        &p,
        "attention probabilities of head 0, layer 0",
        Scale { lo: 0.0, hi: 1.0, diverging: false },
        "probs",
        dir,
    )?);

    let fmt =
        |v: &[f32]| v.iter().map(|x| if x.is_finite() { format!("{x:.3}") } else { "−∞".into() }).collect::<Vec<_>>();
    let mut columns = vec!["query".to_string()];
    columns.extend(labels.iter().map(|l| format!("p(key {l})")));
    result.table = Table {
        columns,
        rows: (0..t)
            .map(|i| std::iter::once(labels[i].clone()).chain(fmt(&probs[i * t..(i + 1) * t])).collect())
            .collect(),
    };
    let top = |i: usize| (0..=i).max_by(|&a, &b| probs[i * t + a].total_cmp(&probs[i * t + b])).unwrap();
    let last = t - 1;
    result.findings = vec![
        format!(
            "The sentence {SENTENCE:?} is {t} tokens; head 0 of layer 0 has d = {hs} dimensions, so the scores are divided by √{hs} = {:.3}.",
            1.0 / scale
        ),
        format!(
            "Query {} (the last token) gives its largest weight, {:.3}, to key {}; its scores before the softmax range from {:.3} to {:.3}.",
            labels[last],
            probs[last * t + top(last)],
            labels[top(last)],
            scaled[last * t..].iter().copied().fold(f32::INFINITY, f32::min),
            scaled[last * t..].iter().copied().fold(f32::NEG_INFINITY, f32::max)
        ),
        format!("The first query can only see itself: its probability row is 1 on key {} and 0 elsewhere.", labels[0]),
        format!(
            "Recomputed with the kernels step by step, the probabilities differ from the model's forward pass by at most {dp:.2e} and the head's output by at most {dout:.2e}."
        ),
        format!("Trained {} steps to val loss {:.3} first (a model that has learned something has structured attention).", summary.steps, summary.val_loss),
    ];
    result.data = serde_json::json!({
        "sentence": SENTENCE, "tokens": labels, "head_size": hs, "scale": scale,
        "q": qh, "k": kh, "v": vh, "scores": scores, "scaled": scaled,
        "masked": masked.iter().map(|x| if x.is_finite() { Some(*x) } else { None }).collect::<Vec<_>>(),
        "probs": probs, "output": out, "max_abs_diff_probs": dp, "max_abs_diff_output": dout,
    });
    drop_weights(&run_dir);
    Ok(result)
}

fn heatmap_pair(maps: &[Heatmap], title: &str, scale: Scale, name: &str, dir: &Path) -> Result<ChartFiles> {
    write_chart_pair(title, name, dir, |path| plot_heatmaps(maps, maps.len(), title, scale, path).map(|_| ()))
}
