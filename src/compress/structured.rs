//! Structured pruning: whole attention heads and whole feed-forward neurons are removed, and
//! the model is rebuilt smaller (fewer heads, each of the same width — `ModelConfig::head_size`
//! — and a narrower feed-forward layer), so it runs faster in proportion.
//!
//! Importance of a group of weights (one head: its q, k, v rows and its columns of the output
//! projection, biases included; one neuron: its row(s) of `c_fc` — both halves for SwiGLU — and
//! its column of the feed-forward output):
//! - `l2`: the L2 norm of the group's weights;
//! - `taylor`: the first-order Taylor estimate of the loss change when the group is zeroed,
//!   (Σ_{w ∈ group} w · ∂L/∂w)², with ∂L/∂w the gradient of the mean loss over calibration text
//!   (Molchanov et al., 2019, "Importance Estimation for Neural Network Pruning").
//!
//! A model config holds one head count and one feed-forward width for all layers, so the same
//! number of heads (and of neurons) goes in every layer: the least important ones of that layer.
//! Head pruning needs multi-head attention (grouped-query heads share keys and values) and
//! neither ALiBi (its slopes depend on the head count) nor T5 biases (one table for all layers'
//! heads); neuron pruning works for every decoder and encoder.

use crate::model::transformer::{Arch, ModelConfig, Position, Transformer};
use anyhow::{bail, ensure, Context, Result};

/// How a group's importance is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Importance {
    L2,
    /// Needs the gradient of the calibration loss in `model.grads`.
    Taylor,
}

/// What to remove in every layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct StructuredPlan {
    pub heads: usize,
    pub neurons: usize,
}

/// Kept head and neuron indices of one layer, ascending.
#[derive(Clone, Debug)]
pub struct LayerKeep {
    pub heads: Vec<usize>,
    pub neurons: Vec<usize>,
}

/// Checks that `cfg` can lose `plan`'s heads and neurons; returns the smaller config.
pub fn pruned_config(cfg: &ModelConfig, plan: StructuredPlan) -> Result<ModelConfig> {
    ensure!(
        matches!(cfg.arch, Arch::Decoder | Arch::Encoder),
        "structured pruning handles decoder and encoder models, not {:?}",
        cfg.arch
    );
    // Grouped-query attention: `group` query heads share one key/value head.
    let group = cfg.n_head / cfg.kv_heads().max(1);
    if plan.heads > 0 {
        ensure!(
            plan.heads.is_multiple_of(group),
            "head pruning of grouped-query attention must remove whole groups of {group} heads that share keys \
             and values (model.n_kv_head = {}); multi-head attention has no such constraint",
            cfg.kv_heads()
        );
        ensure!(
            cfg.position != Position::Alibi,
            "head pruning cannot keep ALiBi's slopes, which depend on the head count"
        );
        ensure!(
            cfg.position != Position::T5,
            "head pruning cannot shrink T5's relative bias table, which every layer's heads share"
        );
        ensure!(plan.heads < cfg.n_head, "cannot remove {} of {} heads per layer", plan.heads, cfg.n_head);
    }
    ensure!(plan.neurons < cfg.ffn(), "cannot remove {} of {} feed-forward neurons per layer", plan.neurons, cfg.ffn());
    let mut out = cfg.clone();
    out.head_size = Some(cfg.head_size());
    out.n_head = cfg.n_head - plan.heads;
    if plan.heads > 0 {
        // Whole groups (checked above): one key/value head per `group` query heads kept.
        out.n_kv_head = cfg.n_kv_head.map(|_| out.n_head / group);
    }
    out.ffn_hidden = Some(cfg.ffn() - plan.neurons);
    if out.heads_tile_embedding() {
        out.head_size = cfg.head_size.filter(|&h| h * out.n_head != out.n_embd);
    }
    out.validate()?;
    Ok(out)
}

/// Weight ranges of one layer's heads and neurons, as (parameter name, row or column, span).
struct Groups {
    prefix: String,
    hs: usize,
    nh: usize,
    f: usize,
    swiglu: bool,
}

impl Groups {
    fn of(cfg: &ModelConfig, l: usize) -> Self {
        let prefix = match cfg.arch {
            Arch::Encoder => format!("encoder.h.{l}"),
            _ => format!("transformer.h.{l}"),
        };
        let swiglu = cfg.elementwise_activation().is_none();
        Groups { prefix, hs: cfg.head_size(), nh: cfg.n_head, f: cfg.ffn(), swiglu }
    }

    /// Σ over the group of `f(w, g)` for head `h` (rows of q, k, v; columns of c_proj).
    fn head_sum(&self, m: &Transformer, h: usize, f: Term) -> Result<f64> {
        let (hs, nh) = (self.hs, self.nh);
        let mut s = 0.0;
        for part in 0..3 {
            let r0 = part * nh * hs + h * hs;
            s += rows(m, &format!("{}.attn.c_attn.weight", self.prefix), r0..r0 + hs, f)?;
            s += rows(m, &format!("{}.attn.c_attn.bias", self.prefix), r0..r0 + hs, f).unwrap_or(0.0);
        }
        s += cols(m, &format!("{}.attn.c_proj.weight", self.prefix), h * hs..(h + 1) * hs, f)?;
        Ok(s)
    }

    /// Σ over the group of `f(w, g)` for feed-forward neuron `j`.
    fn neuron_sum(&self, m: &Transformer, j: usize, f: Term) -> Result<f64> {
        let fc = format!("{}.mlp.c_fc", self.prefix);
        let mut s = rows(m, &format!("{fc}.weight"), j..j + 1, f)?;
        s += rows(m, &format!("{fc}.bias"), j..j + 1, f).unwrap_or(0.0);
        if self.swiglu {
            s += rows(m, &format!("{fc}.weight"), self.f + j..self.f + j + 1, f)?;
            s += rows(m, &format!("{fc}.bias"), self.f + j..self.f + j + 1, f).unwrap_or(0.0);
        }
        s += cols(m, &format!("{}.mlp.c_proj.weight", self.prefix), j..j + 1, f)?;
        Ok(s)
    }
}

/// Σ f(w, g) over rows `r` of tensor `name` (a vector counts as one column).
fn rows(m: &Transformer, name: &str, r: std::ops::Range<usize>, f: Term) -> Result<f64> {
    let t = m.layout.get(name).with_context(|| format!("the model has no {name}"))?;
    let w = t.shape.get(1).copied().unwrap_or(1);
    Ok(span_sum(m, t.offset + r.start * w..t.offset + r.end * w, f))
}

/// Σ f(w, g) over columns `c` of matrix `name`.
fn cols(m: &Transformer, name: &str, c: std::ops::Range<usize>, f: Term) -> Result<f64> {
    let t = m.layout.get(name).with_context(|| format!("the model has no {name}"))?;
    let (rows_n, w) = (t.shape[0], t.shape[1]);
    Ok((0..rows_n).map(|r| t.offset + r * w).map(|o| span_sum(m, o + c.start..o + c.end, f)).sum())
}

/// Σ f(w, g) over `params[range]`; g = 0 for a model without gradients (inference-only: the
/// L2 score needs none).
fn span_sum(m: &Transformer, range: std::ops::Range<usize>, f: Term) -> f64 {
    let w = &m.params[range.clone()];
    match m.grads.get(range) {
        Some(g) => w.iter().zip(g).map(|(&a, &b)| f(a, b)).sum(),
        None => w.iter().map(|&a| f(a, 0.0)).sum(),
    }
}

/// Importance of every head and every neuron, layer by layer.
#[derive(Clone, Debug)]
pub struct Scores {
    /// (L, NH)
    pub heads: Vec<Vec<f64>>,
    /// (L, F)
    pub neurons: Vec<Vec<f64>>,
}

/// One weight's term of a group sum: f(weight, gradient).
type Term<'a> = &'a dyn Fn(f32, f32) -> f64;

/// A group's importance from its sums.
fn score(how: Importance, sum: impl Fn(Term) -> Result<f64>) -> Result<f64> {
    Ok(match how {
        Importance::L2 => sum(&|w, _| (w as f64) * (w as f64))?.sqrt(),
        Importance::Taylor => sum(&|w, g| w as f64 * g as f64)?.powi(2),
    })
}

/// The importance of every head and neuron of every layer (Taylor: from `m.grads`).
pub fn importance(m: &Transformer, how: Importance) -> Result<Scores> {
    ensure!(how == Importance::L2 || !m.grads.is_empty(), "taylor importance needs the calibration gradient");
    let cfg = &m.config;
    let (mut heads, mut neurons) = (Vec::new(), Vec::new());
    for l in 0..cfg.n_layer {
        let g = Groups::of(cfg, l);
        heads.push((0..cfg.n_head).map(|h| score(how, |f| g.head_sum(m, h, f))).collect::<Result<Vec<_>>>()?);
        neurons.push((0..cfg.ffn()).map(|j| score(how, |f| g.neuron_sum(m, j, f))).collect::<Result<Vec<_>>>()?);
    }
    Ok(Scores { heads, neurons })
}

/// The `keep` most important indices of `scores`, ascending (ties: the lower index stays).
fn keep_top(scores: &[f64], keep: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept = idx[..keep].to_vec();
    kept.sort_unstable();
    kept
}

/// Which heads and neurons each layer keeps under `plan`.
pub fn choose(scores: &Scores, plan: StructuredPlan) -> Vec<LayerKeep> {
    scores
        .heads
        .iter()
        .zip(&scores.neurons)
        .map(|(h, n)| LayerKeep {
            heads: keep_top(h, h.len() - plan.heads),
            neurons: keep_top(n, n.len() - plan.neurons),
        })
        .collect()
}

/// The smaller model: `m` without the heads and neurons `keep` leaves out, for up to
/// `max_batch` sequences.
pub fn shrink(m: &Transformer, keep: &[LayerKeep], max_batch: usize) -> Result<Transformer> {
    let cfg = &m.config;
    ensure!(keep.len() == cfg.n_layer, "{} layer plans for {} layers", keep.len(), cfg.n_layer);
    let plan = StructuredPlan { heads: cfg.n_head - keep[0].heads.len(), neurons: cfg.ffn() - keep[0].neurons.len() };
    ensure!(
        keep.iter().all(|k| k.heads.len() == keep[0].heads.len() && k.neurons.len() == keep[0].neurons.len()),
        "every layer must keep as many heads and neurons as the others"
    );
    let small_cfg = pruned_config(cfg, plan)?;
    let mut small = if m.is_inference() {
        Transformer::new_inference(small_cfg, max_batch)?
    } else {
        Transformer::new(small_cfg, max_batch)?
    };
    let hs = cfg.head_size();
    let (nh, nkv, f) = (cfg.n_head, cfg.kv_heads(), cfg.ffn());
    let group = nh / nkv.max(1);
    // Grouped-query attention: the kept query heads must be whole groups; their key/value heads
    // are kept with them.
    let kv_keep: Vec<Vec<usize>> = keep
        .iter()
        .enumerate()
        .map(|(l, k)| {
            let mut kv: Vec<usize> = k.heads.iter().map(|h| h / group).collect();
            kv.dedup();
            ensure!(
                kv.len() * group == k.heads.len(),
                "layer {l}: the kept heads {:?} are not whole groups of {group} heads sharing keys and values",
                k.heads
            );
            Ok(kv)
        })
        .collect::<Result<_>>()?;
    for t in small.layout.tensors.clone() {
        let src = m.layout.get(&t.name).with_context(|| format!("the model has no {}", t.name))?;
        let old = &m.params[src.range()];
        let dst = &mut small.params[t.range()];
        if src.shape == t.shape {
            dst.copy_from_slice(old);
            continue;
        }
        let layer = layer_of(&t.name).with_context(|| format!("{} changed shape but is in no layer", t.name))?;
        let k = &keep[layer];
        let kv = &kv_keep[layer];
        let w = src.shape.get(1).copied().unwrap_or(1);
        // Row indices of the kept heads in q (nh·hs rows), then of their key/value heads in k
        // and v (nkv·hs rows each).
        let qkv_rows = || {
            let q = k.heads.iter().flat_map(move |&h| (0..hs).map(move |i| h * hs + i));
            let kv_rows = move |base: usize| kv.iter().flat_map(move |&h| (0..hs).map(move |i| base + h * hs + i));
            q.chain(kv_rows(nh * hs)).chain(kv_rows(nh * hs + nkv * hs))
        };
        let fc_rows = || {
            let halves = if src.shape[0] == 2 * f { 2 } else { 1 };
            (0..halves).flat_map(|p| k.neurons.iter().map(move |&j| p * f + j))
        };
        let head_cols = || k.heads.iter().flat_map(|&h| (0..hs).map(move |i| h * hs + i));
        let picked: Vec<f32> = if t.name.ends_with("attn.c_attn.weight") || t.name.ends_with("attn.c_attn.bias") {
            qkv_rows().flat_map(|r| old[r * w..(r + 1) * w].iter().copied()).collect()
        } else if t.name.ends_with("attn.c_proj.weight") {
            let cols: Vec<usize> = head_cols().collect();
            (0..src.shape[0]).flat_map(|r| cols.iter().map(move |&c| old[r * w + c])).collect()
        } else if t.name.ends_with("mlp.c_fc.weight") || t.name.ends_with("mlp.c_fc.bias") {
            fc_rows().flat_map(|r| old[r * w..(r + 1) * w].iter().copied()).collect()
        } else if t.name.ends_with("mlp.c_proj.weight") {
            (0..src.shape[0]).flat_map(|r| k.neurons.iter().map(move |&c| old[r * w + c])).collect()
        } else if t.name.ends_with("log_tau") {
            k.heads.iter().map(|&h| old[h]).collect()
        } else if t.name.ends_with("score_v") {
            k.heads.iter().flat_map(|&h| old[h * hs..(h + 1) * hs].iter().copied()).collect()
        } else {
            bail!("structured pruning does not know how to shrink {} {:?}", t.name, src.shape);
        };
        ensure!(picked.len() == dst.len(), "{}: {} values for {}", t.name, picked.len(), dst.len());
        dst.copy_from_slice(&picked);
    }
    Ok(small)
}

/// The layer index in `prefix.h.{l}.…`.
fn layer_of(name: &str) -> Option<usize> {
    let rest = &name[name.find(".h.")? + 3..];
    rest[..rest.find('.')?].parse().ok()
}

/// Accumulates into `m.grads` the gradient of the mean next-token loss over `windows` (token
/// ids, each at least 2 long and at most block_size + 1), for [`Importance::Taylor`].
pub fn calibration_gradient(m: &mut Transformer, windows: &[Vec<u32>]) -> Result<()> {
    ensure!(m.config.arch == Arch::Decoder, "taylor importance is computed on decoder language models");
    ensure!(!windows.is_empty(), "no calibration text");
    m.zero_grad();
    let total: usize = windows.iter().map(|w| w.len().saturating_sub(1)).sum();
    ensure!(total > 0, "calibration windows need at least 2 tokens");
    for w in windows {
        let t = w.len() - 1;
        let targets: Vec<i32> = w[1..].iter().map(|&x| x as i32).collect();
        m.forward_lm(&w[..t], Some(&targets), 1, t, false, 0)?;
        m.backward_sum(1.0 / total as f32)?;
    }
    Ok(())
}
