//! Gradient health: per-layer statistics of one training step, and where a NaN or an infinity
//! first appeared.
//!
//! The statistics read the buffers a step leaves behind: the activations of its forward pass,
//! the gradients of its backward pass (after clipping by value, before the norm clipping that
//! the optimizer folds into its update) and the parameters after the update. The update/weight
//! ratio also needs the parameters before the update: [`HealthMonitor`] keeps one copy of them,
//! allocated once, and fills it only before the steps it logs, so the other steps stay as they
//! are (no copy, no allocation).

use crate::model::transformer::{ActivationKind, AttnProbs, Transformer};
use crate::model::ParamKind;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Statistics of one block (layer) of a stack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerHealth {
    /// Parameter prefix of the stack: `transformer`, `encoder` or `decoder`.
    pub stack: String,
    pub layer: usize,
    /// L2 norm of the gradients of all the block's parameters (`{stack}.h.{layer}.*`).
    pub grad_norm: f64,
    /// ‖Δw‖ / ‖w‖ over all the block's parameters: the size of the step's update relative to
    /// the weights before it. None without the weights before the update.
    pub update_ratio: Option<f64>,
    /// Mean and standard deviation of the block's output (the residual stream), over all
    /// B·T·C elements.
    pub act_mean: f64,
    pub act_std: f64,
    /// Share of the feed-forward hidden units whose pre-activation is ≤ 0 for every token of
    /// the batch (SwiGLU: the gate's pre-activation). For ReLU these units are dead: output and
    /// gradient zero. For LeakyReLU, GELU and SiLU they sit in the flat negative part, where
    /// output and gradient are small but not zero.
    pub dead_share: f64,
    /// Mean over (batch, head, query) of the self-attention entropy −Σ_j p_ij ln p_ij in nats
    /// (ln of the number of visible keys for uniform attention, 0 for attention on one key).
    /// Padded queries and rows with no visible key are left out.
    pub attn_entropy: f64,
    /// The same for cross-attention (encoder-decoder models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_attn_entropy: Option<f64>,
}

/// Gradient norm and update ratio of one parameter tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorHealth {
    /// The parameter's name, e.g. `transformer.h.0.attn.c_attn.weight`.
    pub name: String,
    pub grad_norm: f64,
    /// ‖Δw‖ / ‖w‖; None without the weights before the update, or when ‖w‖ was 0.
    pub update_ratio: Option<f64>,
}

/// Everything logged on one health step: `{"iter": N, "health": HealthStats}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthStats {
    /// Blocks in forward order (encoder first).
    pub layers: Vec<LayerHealth>,
    /// Trained parameter tensors in layout order (BatchNorm buffers left out).
    pub tensors: Vec<TensorHealth>,
}

/// The stack prefix and block index of a parameter named `{stack}.h.{i}.…`.
pub fn layer_of(name: &str) -> Option<(&str, usize)> {
    let at = name.find(".h.")?;
    let rest = &name[at + 3..];
    let digits = rest.find('.').map_or(rest, |e| &rest[..e]);
    Some((&name[..at], digits.parse().ok()?))
}

fn sum_sq(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64 * v as f64).sum()
}

fn diff_sq(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum()
}

/// Mean and population standard deviation of `x`.
fn mean_std(x: &[f32]) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Share of the first `hidden` columns of `pre` (rows of `width`) that are ≤ 0 in every row.
fn dead_share(pre: &[f32], width: usize, hidden: usize) -> f64 {
    let mut alive = vec![false; hidden];
    for row in pre.chunks_exact(width) {
        for (a, &x) in alive.iter_mut().zip(&row[..hidden]) {
            *a |= x > 0.0;
        }
    }
    alive.iter().filter(|&&a| !a).count() as f64 / hidden.max(1) as f64
}

/// −Σ p ln p of one probability row.
fn row_entropy(p: &[f32]) -> f64 {
    p.iter().filter(|&&x| x > 0.0).map(|&x| -(x as f64) * (x as f64).ln()).sum()
}

/// Mean attention entropy (nats) over (batch, head, query); NaN when no row counts.
pub fn attention_entropy(probs: &AttnProbs) -> f64 {
    // Per (batch, head) (entropy sum, rows), summed in a fixed order: the result does not
    // depend on the thread count.
    let parts: Vec<(f64, usize)> = match *probs {
        AttnProbs::Stored { probs, b, nh, tq, tk, query_mask } => (0..b * nh)
            .into_par_iter()
            .map(|bh| {
                let bi = bh / nh;
                let (mut sum, mut rows) = (0.0, 0);
                for i in 0..tq {
                    if query_mask.is_some_and(|m| !m[bi * tq + i]) {
                        continue;
                    }
                    let row = &probs[(bh * tq + i) * tk..(bh * tq + i + 1) * tk];
                    if row.iter().any(|&x| x > 0.0) {
                        sum += row_entropy(row);
                        rows += 1;
                    }
                }
                (sum, rows)
            })
            .collect(),
        // The kernel keeps lse_i = ln Σ_j exp(s_ij) only, so the scores are recomputed:
        // H_i = −Σ p_ij (s_ij − lse_i) = lse_i − Σ_j p_ij s_ij with p_ij = exp(s_ij − lse_i).
        AttnProbs::Flash { lse, qkv, b, t, c, nh } => (0..b * nh)
            .into_par_iter()
            .map(|bh| {
                let (bi, h) = (bh / nh, bh % nh);
                let hs = c / nh;
                let scale = 1.0 / (hs as f64).sqrt();
                let row = |i: usize, off: usize| &qkv[(bi * t + i) * 3 * c + off + h * hs..][..hs];
                let mut sum = 0.0;
                for i in 0..t {
                    let (q, l) = (row(i, 0), lse[bh * t + i] as f64);
                    let mut ps = 0.0;
                    for j in 0..=i {
                        let s = scale * q.iter().zip(row(j, c)).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
                        ps += (s - l).exp() * s;
                    }
                    sum += l - ps;
                }
                (sum, t)
            })
            .collect(),
    };
    let (sum, rows) = parts.iter().fold((0.0, 0), |(s, r), &(ps, pr)| (s + ps, r + pr));
    if rows == 0 {
        f64::NAN
    } else {
        sum / rows as f64
    }
}

/// The health statistics of the step whose forward pass, backward pass and update just ran
/// on `model`. `before`: the parameters before the update (same layout), for the update
/// ratios; without it they are None.
pub fn health_stats(model: &Transformer, before: Option<&[f32]>) -> HealthStats {
    let gated = model.config.activation == ActivationKind::Swiglu;
    let mut layers: Vec<LayerHealth> = model
        .blocks()
        .into_iter()
        .map(|bp| {
            let (act_mean, act_std) = mean_std(bp.output);
            // SwiGLU's gate is the first F columns of [gate | up].
            let hidden = if gated { bp.ffn_hidden } else { bp.ffn_in };
            LayerHealth {
                stack: bp.stack.to_string(),
                layer: bp.layer,
                grad_norm: 0.0,
                update_ratio: None,
                act_mean,
                act_std,
                dead_share: dead_share(bp.ffn_pre, bp.ffn_in, hidden),
                attn_entropy: attention_entropy(&bp.self_attn),
                cross_attn_entropy: bp.cross_attn.as_ref().map(attention_entropy),
            }
        })
        .collect();
    let trained: Vec<_> = model.layout.tensors.iter().filter(|t| t.kind != ParamKind::Buffer).collect();
    // Per tensor: (‖g‖², ‖w_before‖², ‖Δw‖²).
    let sums: Vec<(f64, f64, f64)> = trained
        .par_iter()
        .map(|t| {
            let r = t.range();
            let g = sum_sq(&model.grads[r.clone()]);
            match before {
                Some(b) => (g, sum_sq(&b[r.clone()]), diff_sq(&model.params[r.clone()], &b[r])),
                None => (g, 0.0, 0.0),
            }
        })
        .collect();
    let ratio = |w: f64, d: f64| (before.is_some() && w > 0.0).then(|| (d / w).sqrt());
    // Per layer: the same sums over its tensors.
    let mut layer_sums = vec![(0.0, 0.0, 0.0); layers.len()];
    let mut tensors = Vec::with_capacity(trained.len());
    for (t, &(g, w, d)) in trained.iter().zip(&sums) {
        tensors.push(TensorHealth { name: t.name.clone(), grad_norm: g.sqrt(), update_ratio: ratio(w, d) });
        if let Some((stack, i)) = layer_of(&t.name) {
            if let Some(k) = layers.iter().position(|l| l.stack == stack && l.layer == i) {
                let s = &mut layer_sums[k];
                (s.0, s.1, s.2) = (s.0 + g, s.1 + w, s.2 + d);
            }
        }
    }
    for (l, &(g, w, d)) in layers.iter_mut().zip(&layer_sums) {
        l.grad_norm = g.sqrt();
        l.update_ratio = ratio(w, d);
    }
    HealthStats { layers, tensors }
}

/// Health logging in a training loop (`train.health_interval`): a copy of the parameters,
/// allocated once when the loop starts and filled only before the steps it logs. With the
/// interval 0 it holds nothing and does nothing.
///
/// ```text
/// let due = health.before_step(step + 1, &model);   // snapshot if step + 1 is logged
/// ... forward, update ...
/// if due { log.health(step + 1, &health.stats(&model))? }
/// ```
pub struct HealthMonitor {
    /// Log every this many steps; 0 = never.
    pub interval: u64,
    before: Vec<f32>,
}

impl HealthMonitor {
    pub fn new(interval: u64, model: &Transformer) -> Self {
        let len = if interval > 0 { model.params.len() } else { 0 };
        HealthMonitor { interval, before: vec![0.0; len] }
    }

    /// Whether the step that makes `done` steps finished is logged.
    pub fn due(&self, done: u64) -> bool {
        self.interval > 0 && done.is_multiple_of(self.interval)
    }

    /// Call before the step that makes `done` steps finished: when that step is logged, keeps
    /// the parameters before its update and returns true.
    pub fn before_step(&mut self, done: u64, model: &Transformer) -> bool {
        let due = self.due(done);
        if due {
            self.before.copy_from_slice(&model.params);
        }
        due
    }

    /// The statistics of the step just run (after [`HealthMonitor::before_step`] returned
    /// true for it).
    pub fn stats(&self, model: &Transformer) -> HealthStats {
        health_stats(model, (self.before.len() == model.params.len()).then_some(&self.before[..]))
    }
}

fn describe(x: f32) -> &'static str {
    if x.is_nan() {
        "NaN"
    } else if x > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

/// Where the first NaN or infinity is, as a sentence: the forward activations of the last
/// pass in the order they were computed (per stack: embedding, each sublayer's tensors, final
/// norm; then the head), then the parameter gradients in the order backward computes them
/// (the layout reversed), e.g. "NaN in activation `transformer.h.3.attn.qkv` (layer 3)" or
/// "inf in gradient of `transformer.h.2.mlp.c_fc.weight` (layer 2)". A non-finite parameter
/// is named too (it is usually the cause). None when everything is finite.
pub fn first_nonfinite(model: &Transformer) -> Option<String> {
    let bad = |x: &[f32]| x.iter().copied().find(|v| !v.is_finite());
    let layer = |l: Option<usize>| l.map_or(String::new(), |l| format!(" (layer {l})"));
    let param = model.layout.tensors.iter().find_map(|t| bad(&model.params[t.range()]).map(|x| (t, x)));
    let param_note = param.map_or(String::new(), |(t, x)| format!("; parameter `{}` holds {}", t.name, describe(x)));
    for a in model.activations() {
        if let Some(x) = bad(a.data) {
            return Some(format!("{} in activation `{}`{}{param_note}", describe(x), a.name, layer(a.layer)));
        }
    }
    for t in model.layout.tensors.iter().rev() {
        if let Some(x) = bad(&model.grads[t.range()]) {
            let l = layer(layer_of(&t.name).map(|(_, i)| i));
            return Some(format!("{} in gradient of `{}`{l}{param_note}", describe(x), t.name));
        }
    }
    param.map(|(t, x)| format!("{} in parameter `{}`", describe(x), t.name))
}
