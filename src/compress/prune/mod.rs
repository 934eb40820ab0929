//! Pruning a model's linear weights to exact zeros (`lmlab prune`).
//!
//! - Which weights: the linear weights of the blocks (`c_attn`, `c_q`, `c_kv`, both `c_proj`,
//!   `c_fc`: the set quantization uses), plus an untied `lm_head` with `include_head`.
//!   Embeddings, norms and biases stay dense; a head tied to the token embedding always does.
//! - Scores ([`score`]): magnitude |W_ij|, or Wanda's |W_ij| · ‖X_j‖₂ over calibration tokens.
//! - Selection ([`select`]): `magnitude` compares every prunable weight of the model at once
//!   (one global threshold), `magnitude-layer` each matrix on its own, `wanda` each output row
//!   on its own (as the paper does); with an N:M pattern every method keeps the N highest
//!   scores of each group of M consecutive input weights of a row.
//! - Wanda runs block by block, as the reference does: the inputs of block l's layers are
//!   collected with blocks 0..l−1 already pruned (and block l still dense), through
//!   [`Transformer::set_linear_observer`]; an included head comes last.
//!
//! The result is a model whose pruned weights are exactly 0.0. Structured pruning (whole heads
//! and feed-forward neurons, physically removed) is a different transformation, meant to live
//! beside this one as `structured.rs`.

pub mod score;
pub mod select;

use super::quantize::{linear_weights, KeepFloat};
use crate::model::transformer::{Arch, Transformer};
use anyhow::{bail, ensure, Result};
use score::ColumnNorms;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What `lmlab prune --method` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// |W|, one threshold over all prunable weights of the model (global).
    Magnitude,
    /// |W|, each weight matrix on its own.
    MagnitudeLayer,
    /// |W| · ‖X_j‖₂ from calibration text, each output row on its own.
    Wanda,
}

impl Method {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "magnitude" => Method::Magnitude,
            "magnitude-layer" => Method::MagnitudeLayer,
            "wanda" => Method::Wanda,
            _ => bail!("unknown pruning method {s:?}: expected magnitude, magnitude-layer or wanda"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Magnitude => "magnitude",
            Method::MagnitudeLayer => "magnitude-layer",
            Method::Wanda => "wanda",
        }
    }

    pub fn needs_calibration(self) -> bool {
        self == Method::Wanda
    }
}

/// Which weights of a matrix may be pruned together.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pattern {
    /// Any weights: a share `sparsity` (in [0, 1)) of each comparison group.
    Unstructured { sparsity: f64 },
    /// Semi-structured: `n` nonzero weights kept in every group of `m` consecutive input
    /// weights of a row (2:4 and 4:8 are 50% sparse).
    NofM { n: usize, m: usize },
}

impl Pattern {
    /// Unstructured sparsity `s`, which must be in [0, 1).
    pub fn unstructured(s: f64) -> Result<Self> {
        ensure!(s.is_finite() && (0.0..1.0).contains(&s), "sparsity must be in [0, 1), got {s}");
        Ok(Pattern::Unstructured { sparsity: s })
    }

    /// `N:M` with 0 < N < M (e.g. 2:4, 4:8).
    pub fn parse_nm(s: &str) -> Result<Self> {
        let bad = || anyhow::anyhow!("bad N:M pattern {s:?}: expected N:M with 0 < N < M, e.g. 2:4 or 4:8");
        let (n, m) = s.split_once(':').ok_or_else(bad)?;
        let (n, m): (usize, usize) = (n.trim().parse().map_err(|_| bad())?, m.trim().parse().map_err(|_| bad())?);
        ensure!(n > 0 && n < m, bad());
        Ok(Pattern::NofM { n, m })
    }

    /// The share of pruned weights this pattern aims at.
    pub fn sparsity(self) -> f64 {
        match self {
            Pattern::Unstructured { sparsity } => sparsity,
            Pattern::NofM { n, m } => (m - n) as f64 / m as f64,
        }
    }

    /// "2:4", or "" for unstructured.
    pub fn nm_name(self) -> String {
        match self {
            Pattern::Unstructured { .. } => String::new(),
            Pattern::NofM { n, m } => format!("{n}:{m}"),
        }
    }
}

/// One pruning of a model.
#[derive(Clone, Copy, Debug)]
pub struct PruneSpec {
    pub method: Method,
    pub pattern: Pattern,
    /// Prune an untied `lm_head` too (it stays dense by default).
    pub include_head: bool,
}

/// What `lmlab prune` did, kept as the `[prune]` section of the pruned checkpoint's
/// config.toml (and so of every checkpoint a run resumed from it writes). Training resumed from
/// such a checkpoint holds the zeros of `tensors` at zero (`model::transformer::SparsityMask`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneRecord {
    /// magnitude, magnitude-layer or wanda.
    pub method: String,
    /// The share of the pruned tensors' weights that the pattern aims to remove.
    pub sparsity: f64,
    /// "N:M" for a semi-structured pattern, absent for unstructured.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nm: String,
    /// The pruned tensors, whose zeros training keeps.
    pub tensors: Vec<String>,
}

impl PruneRecord {
    /// The record of pruning `tensors` as `spec` says.
    pub fn new(spec: &PruneSpec, tensors: Vec<String>) -> Self {
        PruneRecord {
            method: spec.method.name().into(),
            sparsity: spec.pattern.sparsity(),
            nm: spec.pattern.nm_name(),
            tensors,
        }
    }
}

/// How many weights of one tensor were pruned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorPruned {
    pub name: String,
    pub numel: usize,
    pub pruned: usize,
}

/// The weights [`prune_model`] prunes, in layout order.
pub fn prunable_weights(model: &Transformer, include_head: bool) -> Vec<String> {
    linear_weights(model, KeepFloat { output: !include_head })
}

/// Prunes `model`'s linear weights to exact zeros as `spec` says. Wanda needs calibration
/// `windows` (token ids; each at most `block_size` long); `progress(done, total)` is called
/// after each calibration forward pass. Returns, per pruned tensor, how many weights it lost.
pub fn prune_model(
    model: &mut Transformer,
    spec: &PruneSpec,
    windows: &[Vec<u32>],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<TensorPruned>> {
    ensure!(
        model.quantized().is_none(),
        "cannot prune a quantized model: prune the float checkpoint, then quantize the pruned one"
    );
    if let Pattern::Unstructured { sparsity } = spec.pattern {
        Pattern::unstructured(sparsity)?;
    }
    let names = prunable_weights(model, spec.include_head);
    ensure!(!names.is_empty(), "the model has no prunable linear weights");
    if let Pattern::NofM { m, .. } = spec.pattern {
        for name in &names {
            let cols = shape(model, name).1;
            ensure!(
                cols.is_multiple_of(m),
                "{name} has {cols} inputs, not a multiple of M = {m}: N:M needs whole groups"
            );
        }
    }
    let mut report = Vec::with_capacity(names.len());
    match (spec.method, spec.pattern) {
        (Method::Magnitude, Pattern::Unstructured { sparsity }) => {
            // One global threshold: the scores of every prunable weight, in layout order.
            let mut scores = Vec::new();
            for name in &names {
                scores.extend(score::magnitude(&model.params[range(model, name)]));
            }
            let pruned = select::per_set(&scores, sparsity);
            let mut at = 0;
            for name in &names {
                let len = shape(model, name).0 * shape(model, name).1;
                report.push(apply(model, name, &pruned[at..at + len]));
                at += len;
            }
        }
        (Method::Magnitude | Method::MagnitudeLayer, pattern) => {
            for name in &names {
                let scores = score::magnitude(&model.params[range(model, name)]);
                let pruned = choose(&scores, shape(model, name).1, pattern, Group::Matrix);
                report.push(apply(model, name, &pruned));
            }
        }
        (Method::Wanda, pattern) => report = wanda(model, &names, pattern, windows, progress)?,
    }
    Ok(report)
}

/// What an unstructured sparsity is a share of.
#[derive(Clone, Copy)]
enum Group {
    /// The whole matrix.
    Matrix,
    /// Each output row.
    Row,
}

/// The mask of one matrix's `scores` (cols wide) under `pattern`.
fn choose(scores: &[f64], cols: usize, pattern: Pattern, group: Group) -> Vec<bool> {
    match (pattern, group) {
        (Pattern::Unstructured { sparsity }, Group::Matrix) => select::per_set(scores, sparsity),
        (Pattern::Unstructured { sparsity }, Group::Row) => select::per_row(scores, cols, sparsity),
        (Pattern::NofM { n, m }, _) => select::n_of_m(scores, cols, n, m),
    }
}

fn range(model: &Transformer, name: &str) -> std::ops::Range<usize> {
    model.layout.get(name).expect("a tensor of the layout").range()
}

/// (rows, cols) of the linear weight `name`.
fn shape(model: &Transformer, name: &str) -> (usize, usize) {
    let t = model.layout.get(name).expect("a tensor of the layout");
    (t.shape[0], t.shape[1])
}

/// Sets the weights of `name` that `pruned` marks to exactly 0.0.
fn apply(model: &mut Transformer, name: &str, pruned: &[bool]) -> TensorPruned {
    let r = range(model, name);
    debug_assert_eq!(r.len(), pruned.len());
    for (w, &p) in model.params[r.clone()].iter_mut().zip(pruned) {
        if p {
            *w = 0.0;
        }
    }
    TensorPruned { name: name.to_string(), numel: r.len(), pruned: pruned.iter().filter(|p| **p).count() }
}

/// Wanda, block by block (see the module docs).
fn wanda(
    model: &mut Transformer,
    names: &[String],
    pattern: Pattern,
    windows: &[Vec<u32>],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<TensorPruned>> {
    ensure!(model.config.arch == Arch::Decoder, "Wanda calibration runs decoder language models only");
    ensure!(!windows.is_empty() && windows.iter().all(|w| !w.is_empty()), "Wanda needs calibration text (--calib)");
    let block = model.config.block_size;
    ensure!(windows.iter().all(|w| w.len() <= block), "a calibration window is longer than block_size {block}");
    let mut stages: Vec<Vec<String>> = (0..model.config.n_layer)
        .map(|l| names.iter().filter(|n| n.starts_with(&format!("transformer.h.{l}."))).cloned().collect())
        .collect();
    stages.push(names.iter().filter(|n| !n.starts_with("transformer.h.")).cloned().collect());
    stages.retain(|s| !s.is_empty());
    // Windows of one length go through the model together, up to its batch size.
    let mut batches: Vec<(usize, Vec<u32>)> = Vec::new();
    for group in windows.chunk_by(|a, b| a.len() == b.len()) {
        for chunk in group.chunks(model.max_batch().max(1)) {
            batches.push((chunk.len(), chunk.concat()));
        }
    }
    let total = stages.len() * batches.len();
    let mut done = 0;
    let mut report = Vec::new();
    for stage in &stages {
        // The input norms of this stage's weights, keyed by the start of their parameter range.
        let acc: Arc<Mutex<HashMap<usize, ColumnNorms>>> = Arc::new(Mutex::new(
            stage
                .iter()
                .map(|n| model.layout.get(n).map(|t| (t.offset, ColumnNorms::new(t.shape[1]))).expect("a tensor"))
                .collect(),
        ));
        let sink = Arc::clone(&acc);
        model.set_linear_observer(Some(Arc::new(move |start: usize, x: &[f32], n: usize| {
            if let Some(c) = sink.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&start) {
                // Shapes are the model's own, so add_batch cannot fail here.
                c.add_batch(x, n).expect("calibration input of the layer's width");
            }
        })));
        let mut run = Ok(());
        for (b, ids) in &batches {
            run = model.forward_lm(ids, None, *b, ids.len() / b, false, 0).map(|_| ());
            if run.is_err() {
                break;
            }
            done += 1;
            progress(done, total);
        }
        model.set_linear_observer(None);
        run?;
        let mut acc = acc.lock().unwrap_or_else(|e| e.into_inner());
        for name in stage {
            let start = model.layout.get(name).expect("a tensor of the layout").offset;
            let norms = acc.remove(&start).expect("norms per target");
            ensure!(norms.tokens > 0, "{name} saw no calibration input");
            let cols = shape(model, name).1;
            let scores = score::wanda(&model.params[range(model, name)], cols, &norms);
            let pruned = choose(&scores, cols, pattern, Group::Row);
            report.push(apply(model, name, &pruned));
        }
    }
    Ok(report)
}
