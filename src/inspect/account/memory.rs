//! Memory of training and generation, in bytes, from the buffers lmlab's model and optimizer
//! actually allocate (`Transformer::buffer_sizes`, the optimizer's state buffers).
//!
//! Every buffer is f32. Mixed precision (bf16/f16) keeps f32 master weights, f32 gradients and
//! f32 optimizer state, and adds the rounded working copy of the weights (stored as f32 values
//! that are exactly representable in bf16/f16) plus the rounding scratch; a GPU framework would
//! store that copy in 2 bytes per weight. Nothing here counts the process itself (code,
//! thread stacks, the allocator's slack) or the data set, which the measured peak RSS includes.

use crate::kernels::precision::Precision;
use crate::model::transformer::{AttentionKind, BufferSizes, ModelConfig, Transformer};
use crate::model::ParamLayout;
use crate::optim::{Optimizer, OptimizerConfig};
use anyhow::Result;
use serde::Serialize;

const F32: u64 = 4;

/// What is being sized: `batch` sequences of `context` tokens (the model's `block_size` is set to
/// `context`, since lmlab sizes every buffer by it).
#[derive(Clone, Debug)]
pub struct MemoryQuery {
    pub batch: usize,
    pub context: usize,
    pub precision: Precision,
    pub optimizer: OptimizerConfig,
}

/// Bytes of a training run and of generation.
#[derive(Clone, Debug, Serialize)]
pub struct Memory {
    pub batch: usize,
    pub context: usize,
    pub precision: String,
    pub optimizer: String,
    /// f32 optimizer-state elements per parameter element (AdamW 2: m and v).
    pub optimizer_slots: usize,
    /// f32 master weights (with BatchNorm statistics and fixed tables).
    pub weights: u64,
    /// bf16/f16: the rounded working copy of the weights (f32 storage) and its scratch.
    pub low_precision_copy: u64,
    pub gradients: u64,
    pub optimizer_state: u64,
    /// Training activations, their gradients and scratch for (batch, context), dense attention.
    pub activations: u64,
    /// The same with flash attention, where the model allows it (plain causal decoders).
    pub activations_flash: Option<u64>,
    /// weights + copy + gradients + optimizer state + activations of the model's own kernel.
    pub training_total: u64,
    /// Writing a checkpoint (`io::checkpoint::encode`): each safetensors file is built from a
    /// byte copy of its tensors, so the model file (P) stays while the optimizer file is
    /// serialized from its copy (2 · slots · P): (1 + 2·slots)·P·4 bytes on top of training.
    pub checkpoint_write: u64,
    /// The peak of a training run that writes checkpoints: `training_total + checkpoint_write`.
    pub training_peak: u64,
    /// Keys and values of one token in every layer: 2·L·NKV·hs·4 bytes.
    pub kv_cache_per_token: u64,
    /// lmlab's KV cache for `batch` rows of `context` tokens (keys, values, a query chunk's
    /// probabilities, attention scratch, the reorder buffer of beam search); 0 for encoders.
    pub kv_cache: u64,
    /// Activations of the inference-only model (blocks share their buffers) for `batch` rows.
    pub inference_activations: u64,
    /// Generation (`lmlab sample`): the weights, plus the larger of the checkpoint's bytes
    /// (read whole while loading, freed after) and activations + KV cache. The buffers are
    /// zero-initialised, so their pages become resident when generation first writes them,
    /// after loading: the two never peak together.
    pub generation_peak: u64,
}

impl Memory {
    /// Training activations with the attention kernel `kind` (dense where flash is impossible).
    pub fn activations_for(&self, kind: AttentionKind) -> u64 {
        match kind {
            AttentionKind::Flash => self.activations_flash.unwrap_or(self.activations),
            AttentionKind::Dense => self.activations,
        }
    }
}

fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::Fp32 => "fp32",
        Precision::Bf16 => "bf16",
        Precision::F16 => "f16",
    }
}

/// f32 state elements the optimizer keeps per parameter element: the state buffers of the
/// optimizer lmlab builds, over a one-element layout.
pub fn optimizer_slots(config: &OptimizerConfig) -> usize {
    let mut one = ParamLayout::default();
    one.push("w", &[1], crate::model::ParamKind::Matrix);
    Optimizer::new(config, &one).state_tensors().iter().map(|(_, s)| s.len()).sum()
}

fn bytes(elements: usize) -> u64 {
    elements as u64 * F32
}

fn sizes(model: &ModelConfig, q: &MemoryQuery, inference: bool) -> Result<BufferSizes> {
    let cfg = ModelConfig { block_size: q.context, ..model.clone() };
    Transformer::buffer_sizes(&cfg, q.batch, inference)
}

/// The memory of `model` for the query `q`.
pub fn memory(model: &ModelConfig, q: &MemoryQuery) -> Result<Memory> {
    let train = sizes(model, q, false)?;
    let dense = sizes(&ModelConfig { attention: AttentionKind::Dense, ..model.clone() }, q, false)?;
    let flash_cfg = ModelConfig { attention: AttentionKind::Flash, attn_dropout: Some(0.0), ..model.clone() };
    let flash = flash_cfg.validate().is_ok().then(|| sizes(&flash_cfg, q, false)).transpose()?;
    let infer = sizes(model, q, true)?;
    let slots = optimizer_slots(&q.optimizer);
    let weights = bytes(train.params + train.consts);
    let low_precision_copy = if q.precision.is_reduced() { bytes(train.low_precision) } else { 0 };
    let gradients = bytes(train.grads);
    let optimizer_state = bytes(slots * train.params);
    let activations = bytes(train.acts);
    let training_total = weights + low_precision_copy + gradients + optimizer_state + activations;
    let checkpoint_write = bytes((1 + 2 * slots) * train.params);
    let kv_cache = infer.kv_cache.map_or(0, |k| bytes(k.total()));
    let kv_per_token = infer.kv_cache.map_or(0, |k| bytes(2 * k.layers * k.kv));
    Ok(Memory {
        batch: q.batch,
        context: q.context,
        precision: precision_name(q.precision).into(),
        optimizer: Optimizer::new(&q.optimizer, &ParamLayout::default()).name().into(),
        optimizer_slots: slots,
        weights,
        low_precision_copy,
        gradients,
        optimizer_state,
        activations: bytes(dense.acts),
        activations_flash: flash.map(|f| bytes(f.acts)),
        training_total,
        checkpoint_write,
        training_peak: training_total + checkpoint_write,
        kv_cache_per_token: kv_per_token,
        kv_cache,
        inference_activations: bytes(infer.acts),
        generation_peak: bytes(infer.params + infer.consts) + bytes(infer.params).max(bytes(infer.acts) + kv_cache),
    })
}
