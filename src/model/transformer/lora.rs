//! LoRA (Hu et al., 2021, "Low-Rank Adaptation of Large Language Models"): a trained low-rank
//! update on chosen linear layers of a frozen model, as Hugging Face peft's `LoraConfig`.
//!
//! ```text
//! y = x·Wᵀ + b  +  (alpha/rank) · (dropout(x)·Aᵀ)·Bᵀ      A (rank, in), B (out, rank)
//! ```
//!
//! A starts kaiming-uniform (a = √5, peft's default), B at zero, so the adapted model starts
//! equal to the base one. [`Transformer::add_lora`] appends the adapters to the parameter
//! layout as `{layer}.lora_A.weight` and `{layer}.lora_B.weight` (peft's names under the layer),
//! after everything else, and freezes every base tensor but a classifier's head (peft's
//! `modules_to_save`): the trainable parameters are then one contiguous tail of the buffer
//! ([`Transformer::lora_window`]), the only part the optimizer keeps state for. The product runs
//! in [`super::layers::Ctx::linear_forward`] / `linear_backward` (`kernels::lora`), which also
//! skip the weight-gradient GEMM of frozen layers. [`Transformer::merge_lora`] folds the
//! adapters into the weights, W' = W + (alpha/rank)·B·A.

use super::head::is_task_head;
use super::Transformer;
use crate::kernels::lora::lora_merge;
use crate::model::layout::{ActLayout, ParamKind, Regions};
use anyhow::{bail, ensure, Result};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// `[lora]` of a run config (peft's `LoraConfig`: `r`, `lora_alpha`, `target_modules`,
/// `lora_dropout`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank r of the update.
    pub rank: usize,
    /// The update is scaled by alpha / rank.
    pub alpha: f32,
    /// Linear layers to adapt: a layer's last name part (`c_attn`, `c_proj`, `c_fc`, `c_q`,
    /// `c_kv`: every layer of that name) or a full layer name with `*` wildcards
    /// (`transformer.h.*.attn.c_attn`).
    pub targets: Vec<String>,
    /// Dropout on the adapter's input while training (peft's `lora_dropout`).
    #[serde(default)]
    pub dropout: f32,
}

impl LoraConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.rank >= 1, "lora.rank must be at least 1 (got {})", self.rank);
        ensure!(self.alpha.is_finite() && self.alpha > 0.0, "lora.alpha must be positive (got {})", self.alpha);
        ensure!((0.0..1.0).contains(&self.dropout), "lora.dropout must be in [0, 1) (got {})", self.dropout);
        ensure!(!self.targets.is_empty(), "lora.targets is empty: name the linear layers to adapt, e.g. [\"c_attn\"]");
        Ok(())
    }

    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }
}

/// The last name part of the linear layers that run through `Ctx::linear_forward` in a block.
const LINEAR_LAYERS: [&str; 5] = ["c_attn", "c_q", "c_kv", "c_proj", "c_fc"];

/// Whether the parameter `name` is a LoRA adapter matrix.
pub fn is_lora_tensor(name: &str) -> bool {
    name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight")
}

/// One adapted linear layer: where its weight and adapters are in the parameters, and its
/// activations in the adapters' own buffer.
#[derive(Clone, Debug)]
pub(crate) struct Adapter {
    /// The base weight (OC, C).
    pub weight: Range<usize>,
    pub a: Range<usize>, // (R, C)
    pub b: Range<usize>, // (OC, R)
    pub c: usize,
    pub oc: usize,
    /// (N, R) x·Aᵀ of the last forward pass.
    pub u: Range<usize>,
    /// (N, C) the dropped-out input; training with `lora.dropout > 0` only.
    pub xd: Option<Range<usize>>,
    /// Dropout site of the adapter's input.
    pub site: u64,
}

/// The adapters of a model and the ranges of their activation buffer.
#[derive(Clone, Debug)]
pub(crate) struct LoraTable {
    pub config: LoraConfig,
    /// Sorted by the base weight's start.
    pub adapters: Vec<Adapter>,
    /// (N, R) backward scratch: the gradient of u.
    pub du: Range<usize>,
    /// (N, widest C) backward scratch: the gradient of the dropped-out input.
    pub dxd: Range<usize>,
    /// Where the adapters start in the parameters (they are the layout's last tensors).
    pub first: usize,
}

impl LoraTable {
    /// The adapter of the linear layer whose weight sits at `w`, if it has one.
    pub fn get(&self, w: &Range<usize>) -> Option<&Adapter> {
        self.adapters.binary_search_by_key(&w.start, |a| a.weight.start).ok().map(|i| &self.adapters[i])
    }
}

/// The adapters with their activation buffer.
#[derive(Debug)]
pub(crate) struct Lora {
    pub table: LoraTable,
    acts: Vec<f32>,
}

/// What a pass's linear layers read of the adapters.
#[derive(Clone, Copy)]
pub(crate) struct LoraPass<'a> {
    pub table: &'a LoraTable,
    pub r: &'a Regions<'a>,
}

/// The adapters' table and a view of their activations for one pass (None without LoRA).
pub(crate) fn lora_regions(lora: &mut Option<Lora>) -> Option<(&LoraTable, Regions<'_>)> {
    lora.as_mut().map(|l| (&l.table, Regions::new(&mut l.acts)))
}

/// The [`LoraPass`] of [`lora_regions`]'s result.
pub(crate) fn lora_pass<'a>(v: &'a Option<(&'a LoraTable, Regions<'a>)>) -> Option<LoraPass<'a>> {
    v.as_ref().map(|(table, r)| LoraPass { table, r })
}

/// Whether the linear layer `layer` (a weight's name without `.weight`) is one that `target`
/// names.
fn targets(target: &str, layer: &str) -> bool {
    if target.contains('*') || target.contains('.') {
        crate::util::glob_match(target, layer)
    } else {
        layer.rsplit('.').next() == Some(target)
    }
}

impl Transformer {
    /// Adds LoRA adapters to the linear layers `cfg.targets` names and freezes the rest of the
    /// model but a classifier's head; A is drawn from `seed`. Errors name a target that matches
    /// no linear layer, and refuse a quantized model or one that already has adapters.
    pub fn add_lora(&mut self, cfg: &LoraConfig, seed: u64) -> Result<()> {
        cfg.validate()?;
        ensure!(
            self.quant.is_none(),
            "LoRA needs a float model: this one has quantized weights (adapt the float checkpoint, then quantize \
             the merged model from `lmlab merge-lora`)"
        );
        ensure!(self.lora.is_none(), "the model already has LoRA adapters");
        ensure!(self.sparsity.is_none(), "LoRA on a pruned model is not supported (B·A would fill its zeros)");
        let linear: Vec<(String, Range<usize>, usize, usize)> = self
            .layout
            .tensors
            .iter()
            .filter(|t| t.kind == ParamKind::Matrix)
            .filter_map(|t| {
                let layer = t.name.strip_suffix(".weight")?;
                LINEAR_LAYERS
                    .contains(&layer.rsplit('.').next()?)
                    .then(|| (layer.to_string(), t.range(), t.shape[0], t.shape[1]))
            })
            .collect();
        for target in &cfg.targets {
            if !linear.iter().any(|(layer, ..)| targets(target, layer)) {
                let example = linear.first().map_or("none".to_string(), |(l, ..)| l.clone());
                bail!(
                    "lora.targets entry {target:?} matches no linear layer of the model (a layer's last name part: \
                     {}; or a full name with `*`, e.g. {example:?})",
                    LINEAR_LAYERS.join(", ")
                );
            }
        }
        let chosen: Vec<_> = linear.into_iter().filter(|(l, ..)| cfg.targets.iter().any(|t| targets(t, l))).collect();
        let r = cfg.rank;
        let n = self.max_batch * self.config.block_size;
        let first = self.layout.total;
        let mut acts = ActLayout::default();
        let train_dropout = cfg.dropout > 0.0 && !self.inference;
        let mut adapters = Vec::with_capacity(chosen.len());
        for (i, (layer, weight, oc, c)) in chosen.into_iter().enumerate() {
            let a = self.layout.push(format!("{layer}.lora_A.weight"), &[r, c], ParamKind::Matrix);
            let b = self.layout.push(format!("{layer}.lora_B.weight"), &[oc, r], ParamKind::Matrix);
            let u = acts.alloc(n * r);
            let xd = train_dropout.then(|| acts.alloc(n * c));
            adapters.push(Adapter { weight, a, b, c, oc, u, xd, site: LORA_SITE + i as u64 });
        }
        let widest = adapters.iter().map(|a| a.c).max().unwrap_or(0);
        let (du, dxd) = if self.inference {
            (0..0, 0..0)
        } else {
            (acts.alloc(n * r), acts.alloc(if train_dropout { n * widest } else { 0 }))
        };
        self.params.resize(self.layout.total, 0.0);
        if !self.inference {
            self.grads.resize(self.layout.total, 0.0);
        }
        // peft: A ~ kaiming_uniform(a=√5) = U(-1/√in, 1/√in); B = 0.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x4c6f_5241);
        for ad in &adapters {
            let bound = 1.0 / (ad.c as f32).sqrt();
            self.params[ad.a.clone()].iter_mut().for_each(|x| *x = rng.gen_range(-bound..bound));
        }
        adapters.sort_by_key(|a| a.weight.start);
        let table = LoraTable { config: cfg.clone(), adapters, du, dxd, first };
        self.lora = Some(Lora { table, acts: vec![0.0; acts.total] });
        let mut frozen = self.frozen.clone();
        frozen.extend(self.lora_frozen());
        frozen.sort_by_key(|r| r.start);
        frozen.dedup();
        self.frozen = frozen;
        Ok(())
    }

    /// The LoRA settings, if the model has adapters.
    pub fn lora(&self) -> Option<&LoraConfig> {
        self.lora.as_ref().map(|l| &l.table.config)
    }

    /// With LoRA: the range of `params` that trains, a classifier's head and the adapters (the
    /// head is the last base tensor, the adapters follow it). The optimizer holds state for it
    /// only.
    pub fn lora_window(&self) -> Option<Range<usize>> {
        let l = self.lora.as_ref()?;
        let head = self.layout.tensors.iter().filter(|t| is_task_head(&t.name)).map(|t| t.offset).min();
        Some(head.unwrap_or(l.table.first).min(l.table.first)..self.layout.total)
    }

    /// With LoRA: the base tensors that do not train (all before [`Transformer::lora_window`]).
    pub fn lora_frozen(&self) -> Vec<Range<usize>> {
        let Some(w) = self.lora_window() else { return Vec::new() };
        self.layout
            .tensors
            .iter()
            .filter(|t| t.kind != ParamKind::Buffer && t.offset < w.start)
            .map(|t| t.range())
            .collect()
    }

    /// Folds every adapter into its weight, W += (alpha/rank)·B·A, and removes the adapters
    /// and the freezing they brought: a plain model whose outputs equal the adapted one's.
    pub fn merge_lora(&mut self) -> Result<()> {
        let Some(lora) = self.lora.take() else { bail!("the model has no LoRA adapters to merge") };
        let t = &lora.table;
        let (scale, r) = (t.config.scale(), t.config.rank);
        for ad in &t.adapters {
            let (base, adapters) = self.params.split_at_mut(t.first);
            let (a, b) = (
                &adapters[ad.a.start - t.first..ad.a.end - t.first],
                &adapters[ad.b.start - t.first..ad.b.end - t.first],
            );
            lora_merge(&mut base[ad.weight.clone()], a, b, scale, ad.c, r, ad.oc);
        }
        self.layout.tensors.retain(|x| x.offset < t.first);
        self.layout.total = t.first;
        self.params.truncate(t.first);
        if !self.inference {
            self.grads.truncate(t.first);
        }
        self.frozen.clear();
        if let Some((name, _)) = self.first_nonfinite_param() {
            bail!("merging the adapters made {name} NaN or infinite");
        }
        Ok(())
    }
}

/// Dropout sites of the adapters' inputs: far above the blocks' (a few per sublayer).
const LORA_SITE: u64 = 1 << 32;
