//! The Transformer family: decoder-only LM, encoder classifier and encoder-decoder, assembled
//! from one set of parts (see [`config::ModelConfig`] for every choice).
//!
//! ```text
//! decoder:          idx ─ Stack(causal) ─ lm_head ─ logits (B,T,V) ─ cross-entropy
//! encoder:          idx, mask ─ Stack(bidirectional) ─ pool (`[CLS]` or mean) ─ classifier ─ logits (B,K)
//!                   or ─ qa_outputs ─ start/end logits (B,2,T) (extractive QA's span head)
//! encoder_decoder:  src, src_mask ─ Stack(encoder) ─┐
//!                   tgt_in ─ Stack(causal + cross) ─┴─ lm_head ─ logits (B,T,V) ─ cross-entropy
//! ```
//!
//! The default config is nanoGPT's GPT-2 decoder (`examples/gpt_step.rs` walks one training
//! step of it). As in llm.c, parameters, gradients and activations are flat buffers with named
//! ranges; parameter names follow nanoGPT for the decoder (`transformer.h.0.attn.c_attn.weight`)
//! and are listed in `docs/ARCHITECTURE.md` for the rest.
//!
//! This file holds the model and its passes; `build.rs` constructs it, `head.rs` is the output
//! layer and loss, `seq2seq.rs` the encoder-decoder's entry points, `precision.rs` mixed
//! precision, `stack.rs` the stacks of blocks, `cache.rs` KV-cached inference.

mod ablation;
mod build;
mod cache;
pub mod config;
mod distill;
mod freeze;
mod head;
mod input_grad;
mod layers;
mod lora;
mod precision;
mod probe;
mod quant;
mod seq2seq;
mod sparse;
mod stack;

pub use ablation::AblationMode;
pub use build::BufferSizes;
pub use cache::{KvCache, KvCacheSizes, LogitRows};
pub use config::{
    ActivationKind, Arch, AttentionKind, EncoderHead, ModelConfig, NormKind, NormPosition, Pooling, Position, ScoreKind,
};
pub use head::is_task_head;
pub use lora::{is_lora_tensor, LoraConfig};
pub use probe::{ActKind, ActTensor, AttnProbs, BlockProbe};
use quant::linear_hooks;
pub use quant::{LinearObserver, QuantLinears};
pub use sparse::SparsityMask;

use crate::kernels::distill::DistillLoss;
use crate::model::layout::{ParamLayout, Regions};
use anyhow::{bail, ensure, Result};
use distill::soft_targets;
use head::{Head, HeadActs};
use layers::{Ctx, LinearHooks, Lowp, Scratch};
use precision::{low_regions, lowp, LowState};
use stack::{Stack, StackActs};
use std::sync::Arc;

/// Inputs of the last forward pass, kept for backward.
#[derive(Clone, Debug, Default)]
struct Last {
    b: usize,
    t: usize,
    t_enc: usize,
    train: bool,
    dropout_seed: u64,
    /// [`Transformer::set_first_sequence`] when the pass began.
    first_sequence: usize,
    /// Decoder (or encoder-only) tokens (B, T).
    idx: Vec<u32>,
    /// Encoder tokens (B, T_enc) of an encoder-decoder.
    src: Vec<u32>,
    /// Padding masks: encoder-only (B, T), encoder-decoder source (B, T_enc).
    mask: Vec<bool>,
    has_mask: bool,
    /// Span head: the positions that may start or end an answer (B, T).
    span_mask: Vec<bool>,
    has_span_mask: bool,
    /// Targets (B, T) (LM, -1 = ignore), labels (B) (classifier) or answer (start, end)
    /// positions (B, 2) (span head).
    targets: Vec<i32>,
    has_targets: bool,
    loss_count: usize,
    /// Whether the encoder activations hold the output of [`Transformer::encode`] for the
    /// current `b`, `t_enc`, `src` and `mask` (cleared by every full forward pass).
    encoded: bool,
    /// Gather buffers of [`Transformer::reorder_encoded`] (B, T_enc).
    gather_src: Vec<u32>,
    gather_mask: Vec<bool>,
    /// [`Transformer::set_input_scale`] when the pass began (None: 1).
    input_alpha: Option<f32>,
}

/// A model of the family with its parameter, gradient and activation buffers, sized for up to
/// `max_batch` sequences of `block_size` tokens.
pub struct Transformer {
    pub config: ModelConfig,
    pub layout: ParamLayout,
    /// All parameters (and BatchNorm running statistics), laid out by `layout`.
    pub params: Vec<f32>,
    /// Gradients, same layout as `params`.
    pub grads: Vec<f32>,
    /// Fixed tables: sinusoidal positions, ALiBi slopes.
    consts: Vec<f32>,
    /// The encoder (encoder and encoder_decoder archs).
    encoder: Option<Stack>,
    /// The decoder (decoder and encoder_decoder archs).
    decoder: Option<Stack>,
    head: Head,
    acts: Vec<f32>,
    enc_acts: Option<StackActs>,
    dec_acts: Option<StackActs>,
    head_acts: HeadActs,
    scratch: Scratch,
    max_batch: usize,
    last: Last,
    /// Label smoothing ε of the training loss (forward passes with `train = true`); evaluation
    /// always reports the plain cross-entropy.
    pub label_smoothing: f32,
    /// Reduced-precision numerics (None in fp32); see [`Transformer::set_precision`].
    low: Option<LowState>,
    /// Widest input and output of any linear layer below the head, for the low-precision scratch.
    widths: (usize, usize),
    /// Built by [`Transformer::new_inference`]: no gradients, activations shared by the blocks.
    inference: bool,
    /// Quantized linear weights (see `quant.rs`); None for a float model.
    quant: Option<QuantLinears>,
    /// Sees the input of every linear layer (see [`Transformer::set_linear_observer`]).
    observer: Option<Arc<LinearObserver>>,
    /// A teacher's logits for the next training pass's distillation loss (see
    /// [`Transformer::set_teacher_logits`]).
    teacher: Option<TeacherLogits>,
    /// Weights a pruned model keeps at zero while training (see `sparse.rs`).
    sparsity: Option<SparsityMask>,
    /// Tensors that do not train (see `freeze.rs`).
    frozen: Vec<std::ops::Range<usize>>,
    /// Index of the next batches' first sequence in a data-parallel step's global batch (see
    /// [`Transformer::set_first_sequence`]).
    first_sequence: usize,
    /// Tensor parallelism: starts of the weights whose outputs are all-reduced (see
    /// [`Transformer::set_tensor_parallel`]).
    tp_reduce: Option<Vec<usize>>,
    /// Head or feed-forward ablation for interpretability ([`Transformer::set_ablation`]).
    ablation: Option<ablation::Ablation>,
    /// Factor on the token embeddings (integrated gradients' path), and the buffer that
    /// receives ∂L/∂(token embeddings) in backward (`input_grad.rs`).
    input_alpha: Option<f32>,
    input_grad: Option<Vec<f32>>,
    /// LoRA adapters on some linear layers (see `lora.rs`).
    lora: Option<lora::Lora>,
}

/// The teacher's logits of the current batch, in a buffer sized once for the largest batch.
struct TeacherLogits {
    loss: DistillLoss,
    logits: Vec<f32>,
    /// Valid values at the front of `logits` (the student's logits of the next pass must have
    /// this many).
    len: usize,
}

impl Transformer {
    /// Decoder-only LM: forward over `idx` (B, T); with `targets` (B, T) returns the mean
    /// cross-entropy over targets that are not -1.
    pub fn forward_lm(
        &mut self,
        idx: &[u32],
        targets: Option<&[i32]>,
        b: usize,
        t: usize,
        train: bool,
        dropout_seed: u64,
    ) -> Result<Option<f32>> {
        ensure!(
            self.config.arch == Arch::Decoder,
            "a causal language model's forward pass needs model.arch = \"decoder\", got {:?}{}",
            self.config.arch,
            if self.is_masked_lm() { " (a masked LM: it predicts masked tokens, not the next one)" } else { "" }
        );
        self.check_train(train)?;
        self.check_shape(b, t, "sequence")?;
        ensure!(idx.len() == b * t, "idx has {} tokens, expected B·T = {}", idx.len(), b * t);
        self.check_tokens("idx", idx)?;
        self.set_targets(targets, b * t, self.config.vocab_size)?;
        self.begin(b, t, t, train, dropout_seed);
        self.last.idx[..b * t].copy_from_slice(idx);
        self.last.has_mask = false;
        self.run_forward()
    }

    /// Whether this is a masked LM: an encoder with the MLM head.
    pub fn is_masked_lm(&self) -> bool {
        self.config.arch == Arch::Encoder && self.config.encoder_head == EncoderHead::Mlm
    }

    /// Masked LM: forward over `idx` (B, T) (some positions holding `[MASK]`) with the padding
    /// `mask` (B, T) (None = no padding); logits (B, T, V) at every position, and with `targets`
    /// (B, T) (the original token at the positions to predict, -1 elsewhere) the mean
    /// cross-entropy over them.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_mlm(
        &mut self,
        idx: &[u32],
        mask: Option<&[bool]>,
        targets: Option<&[i32]>,
        b: usize,
        t: usize,
        train: bool,
        dropout_seed: u64,
    ) -> Result<Option<f32>> {
        ensure!(
            self.is_masked_lm(),
            "forward_mlm needs an encoder with the masked-LM head (data.task = \"mlm\", or a BERT imported with it)"
        );
        self.begin_encoder(idx, mask, targets, b * t, self.config.vocab_size, b, t, train, dropout_seed)?;
        self.run_forward()
    }

    /// Encoder classifier: forward over `idx` (B, T) with `mask` (B, T) (true = real token;
    /// None = no padding); with `labels` (B) returns the mean cross-entropy. Without labels,
    /// any encoder (its head's logits are computed, its hidden states kept).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_classify(
        &mut self,
        idx: &[u32],
        mask: Option<&[bool]>,
        labels: Option<&[i32]>,
        b: usize,
        t: usize,
        train: bool,
        dropout_seed: u64,
    ) -> Result<Option<f32>> {
        ensure!(self.config.arch == Arch::Encoder, "forward_classify needs arch = \"encoder\"");
        // Without labels any encoder runs (the hidden states are what embedders read).
        ensure!(
            labels.is_none() || self.config.encoder_head == EncoderHead::Classifier,
            "class labels need the classifier head; this encoder has the {:?} head",
            self.config.encoder_head
        );
        self.begin_encoder(idx, mask, labels, b, self.config.num_classes, b, t, train, dropout_seed)?;
        self.run_forward()
    }

    /// Extractive QA with the span head: forward over `idx` (B, T) with the padding `mask`
    /// (B, T); `span_mask` (B, T) marks the positions an answer may start or end at (the
    /// context's tokens, and `[CLS]` for "no answer in this window"), the others get no
    /// probability. With `positions` (B, 2) (each window's answer start and end token, -1 =
    /// ignore) returns (CE(start) + CE(end)) / 2, averaged over the windows. Logits (B, 2, T).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_span(
        &mut self,
        idx: &[u32],
        mask: Option<&[bool]>,
        span_mask: Option<&[bool]>,
        positions: Option<&[i32]>,
        b: usize,
        t: usize,
        train: bool,
        dropout_seed: u64,
    ) -> Result<Option<f32>> {
        ensure!(
            self.config.arch == Arch::Encoder && self.config.encoder_head == EncoderHead::Span,
            "forward_span needs an encoder with the span head (model.encoder_head = \"span\", a QA model)"
        );
        ensure!(
            !(train && self.label_smoothing != 0.0),
            "label smoothing is not defined for the span head (its masked positions have no probability)"
        );
        self.begin_encoder(idx, mask, positions, 2 * b, t, b, t, train, dropout_seed)?;
        self.last.has_span_mask = span_mask.is_some();
        if let Some(m) = span_mask {
            ensure!(m.len() == b * t, "span mask has {} entries, expected {}", m.len(), b * t);
            self.last.span_mask[..b * t].copy_from_slice(m);
        }
        self.run_forward()
    }

    /// The start of every encoder pass: checks and stores the inputs `idx` (B, T), the targets
    /// (`n_targets` of them, each below `classes` or -1) and the padding `mask` (B, T).
    #[allow(clippy::too_many_arguments)]
    fn begin_encoder(
        &mut self,
        idx: &[u32],
        mask: Option<&[bool]>,
        targets: Option<&[i32]>,
        n_targets: usize,
        classes: usize,
        b: usize,
        t: usize,
        train: bool,
        dropout_seed: u64,
    ) -> Result<()> {
        self.last.has_span_mask = false;
        self.check_train(train)?;
        self.check_shape(b, t, "sequence")?;
        ensure!(idx.len() == b * t, "idx has {} tokens, expected B·T = {}", idx.len(), b * t);
        self.check_tokens("idx", idx)?;
        self.set_targets(targets, n_targets, classes)?;
        self.begin(b, t, t, train, dropout_seed);
        self.last.idx[..b * t].copy_from_slice(idx);
        self.set_mask(mask, b, t)
    }

    /// Runs the forward pass on the inputs stored in `self.last`.
    fn run_forward(&mut self) -> Result<Option<f32>> {
        self.run_forward_from(true)
    }

    /// The forward pass; with `run_encoder` false, an encoder-decoder reuses the encoder
    /// output already in the activations ([`Transformer::decode`]).
    fn run_forward_from(&mut self, run_encoder: bool) -> Result<Option<f32>> {
        if let Some(l) = &mut self.low {
            l.refresh(&self.params);
        }
        let last = &self.last;
        let (b, t, te) = (last.b, last.t, last.t_enc);
        let w = Regions::new(&mut self.params);
        let g = Regions::new(&mut self.grads);
        let r = Regions::new(&mut self.acts);
        let low_views = self.low.as_mut().map(low_regions);
        let low = lowp(&low_views);
        let lora_views = lora::lora_regions(&mut self.lora);
        let hooks =
            linear_hooks(&self.quant, &self.observer, &self.tp_reduce, &self.ablation, &lora_views, &self.frozen);
        let mask = last.has_mask.then(|| &last.mask[..b * te]);
        let cx = |t, self_mask, enc_mask| {
            ctx(&w, &g, &r, &self.consts, &self.scratch, last, t, self_mask, enc_mask, low, hooks)
        };
        let eps = if last.train { self.label_smoothing } else { 0.0 };
        // The stack whose output feeds the head.
        let (top_cx, top, top_acts) = match (&self.encoder, &self.decoder) {
            (Some(enc), None) => {
                let ea = self.enc_acts.as_ref().unwrap();
                let cxe = cx(t, mask, None);
                enc.forward(&cxe, ea, &last.idx[..b * t], None);
                (cxe, enc, ea)
            }
            (None, Some(dec)) => {
                let da = self.dec_acts.as_ref().unwrap();
                let cxd = cx(t, None, None);
                dec.forward(&cxd, da, &last.idx[..b * t], None);
                (cxd, dec, da)
            }
            (Some(enc), Some(dec)) => {
                let (ea, da) = (self.enc_acts.as_ref().unwrap(), self.dec_acts.as_ref().unwrap());
                let cxe = cx(te, mask, None);
                if run_encoder {
                    enc.forward(&cxe, ea, &last.src[..b * te], None);
                }
                let enc_out = enc.output(&cxe, ea);
                let cxd = cx(t, None, mask);
                dec.forward(&cxd, da, &last.idx[..b * t], Some(enc_out));
                (cxd, dec, da)
            }
            (None, None) => unreachable!("a model has at least one stack"),
        };
        let h = top.output(&top_cx, top_acts);
        let targets = last.has_targets.then_some(&last.targets[..]);
        let soft = soft_targets(&self.teacher, last.train, self.head.logits_len(&self.config, b, t))?;
        let span_mask = last.has_span_mask.then(|| &last.span_mask[..b * t]);
        let Some((sum, count)) =
            self.head.forward(&top_cx, &self.head_acts, &self.config, h, targets, eps, soft, span_mask)
        else {
            return Ok(None);
        };
        self.last.loss_count = count;
        Ok(Some(if count == 0 { 0.0 } else { (sum / count as f64) as f32 }))
    }

    /// Output of the top stack of the last forward pass (B, T, C), before the head: the
    /// decoder's for LMs, the encoder's for the classifier (token embeddings for `embed`).
    pub fn hidden(&self) -> &[f32] {
        let (top, acts) = top_stack(&self.encoder, &self.decoder, &self.enc_acts, &self.dec_acts);
        let len = self.last.b * self.last.t * self.config.n_embd;
        let start = top.output_range(acts).start;
        &self.acts[start..start + len]
    }

    /// Logits of the last forward pass: (B, T, V) for LMs and masked LMs, (B, K) for the
    /// classifier.
    pub fn logits(&self) -> &[f32] {
        let start = self.head_acts.logits.start;
        &self.acts[start..start + self.head.logits_len(&self.config, self.last.b, self.last.t)]
    }

    /// Backward pass of the last forward pass (which must have had targets): accumulates the
    /// gradient of the mean loss into `self.grads`. Call [`Transformer::zero_grad`] first.
    pub fn backward(&mut self) -> Result<()> {
        self.backward_impl(false, 1.0)
    }

    /// Number of targets the loss of the last forward pass averaged over (non-ignored tokens
    /// or examples).
    pub fn loss_count(&self) -> usize {
        self.last.loss_count
    }

    /// [`Transformer::backward`] for the loss multiplied by `loss_scale`: the gradient of the
    /// logits is scaled before anything is rounded, so that small gradients survive f16
    /// (dynamic loss scaling; the caller divides the parameter gradients by `loss_scale`).
    pub fn backward_scaled(&mut self, loss_scale: f32) -> Result<()> {
        self.backward_impl(false, loss_scale)
    }

    /// Backward of `loss_scale` times the last loss's *sum* over its targets (not its mean),
    /// for gradient accumulation: micro-batches backpropagated this way, then divided by their
    /// total target count, give the gradient of the mean over all of them.
    pub fn backward_sum(&mut self, loss_scale: f32) -> Result<()> {
        self.backward_impl(true, loss_scale)
    }

    fn backward_impl(&mut self, sum: bool, loss_scale: f32) -> Result<()> {
        ensure!(
            !self.inference,
            "this model was built for inference (Transformer::new_inference): it has no gradients"
        );
        ensure!(self.last.has_targets && self.last.b > 0, "backward() needs a forward pass with targets first");
        let last = &self.last;
        let (b, t, te) = (last.b, last.t, last.t_enc);
        let c = self.config.n_embd;
        let w = Regions::new(&mut self.params);
        let g = Regions::new(&mut self.grads);
        let r = Regions::new(&mut self.acts);
        let low_views = self.low.as_mut().map(low_regions);
        let low = lowp(&low_views);
        let lora_views = lora::lora_regions(&mut self.lora);
        let hooks =
            linear_hooks(&self.quant, &self.observer, &self.tp_reduce, &self.ablation, &lora_views, &self.frozen);
        let mask = last.has_mask.then(|| &last.mask[..b * te]);
        let cx = |t, self_mask, enc_mask| {
            ctx(&w, &g, &r, &self.consts, &self.scratch, last, t, self_mask, enc_mask, low, hooks)
        };
        let eps = if last.train { self.label_smoothing } else { 0.0 };
        let scale = match last.loss_count {
            0 => 0.0,
            _ if sum => loss_scale,
            n => loss_scale / n as f32,
        };
        // Head: d_logits → ∂L/∂(top stack output), written into that stack's d_out.
        let (top, top_acts) = top_stack(&self.encoder, &self.decoder, &self.enc_acts, &self.dec_acts);
        // The source mask is the encoder's self-attention mask, or the decoder's cross mask.
        let top_cx = if self.decoder.is_some() { cx(t, None, mask) } else { cx(t, mask, None) };
        let h = top.output(&top_cx, top_acts);
        let d_h = r.mut_(&top_acts.d_out, b * t * c);
        let soft = soft_targets(&self.teacher, last.train, self.head.logits_len(&self.config, b, t))?;
        let span_mask = last.has_span_mask.then(|| &last.span_mask[..b * t]);
        self.head.backward(&top_cx, &self.head_acts, &self.config, d_h, h, &last.targets, scale, eps, soft, span_mask);
        let d_input = self.input_grad.as_deref_mut().map(|d| &mut d[..b * t * c]);
        match (&self.encoder, &self.decoder) {
            (Some(enc), None) => enc.backward(&top_cx, top_acts, &last.idx[..b * t], None, d_input),
            (None, Some(dec)) => dec.backward(&top_cx, top_acts, &last.idx[..b * t], None, d_input),
            (Some(enc), Some(dec)) => {
                let ea = self.enc_acts.as_ref().unwrap();
                let cxe = cx(te, mask, None);
                let enc_out = enc.output(&cxe, ea);
                let d_enc = r.mut_(&ea.d_out, b * te * c);
                d_enc.fill(0.0);
                dec.backward(&top_cx, top_acts, &last.idx[..b * t], Some((enc_out, d_enc)), None);
                enc.backward(&cxe, ea, &last.src[..b * te], None, None);
            }
            (None, None) => unreachable!(),
        }
        Ok(())
    }

    /// Names and values of the parameters (and buffers), in layout order.
    pub fn named_params(&self) -> impl Iterator<Item = (&str, &[f32])> {
        self.layout.tensors.iter().map(|t| (t.name.as_str(), &self.params[t.range()]))
    }

    /// The first parameter that is NaN or infinite, as (its tensor's name, the value).
    pub fn first_nonfinite_param(&self) -> Option<(&str, f32)> {
        self.named_params().find_map(|(name, p)| p.iter().find(|x| !x.is_finite()).map(|&x| (name, x)))
    }

    fn check_train(&self, train: bool) -> Result<()> {
        ensure!(
            !(train && self.inference),
            "this model was built for inference (Transformer::new_inference): it cannot run a training pass"
        );
        ensure!(!(train && self.quant.is_some()), "a model with quantized weights runs inference only");
        Ok(())
    }

    fn check_shape(&self, b: usize, t: usize, what: &str) -> Result<()> {
        ensure!(b >= 1 && b <= self.max_batch, "batch {b} outside 1..={}", self.max_batch);
        ensure!(
            t >= 1 && t <= self.config.block_size,
            "{what} length {t} outside 1..={} (block_size)",
            self.config.block_size
        );
        Ok(())
    }

    fn check_tokens(&self, what: &str, ids: &[u32]) -> Result<()> {
        let v = self.config.vocab_size;
        if let Some(bad) = ids.iter().find(|&&x| x as usize >= v) {
            bail!("{what}: token id {bad} is out of range for vocab_size {v}");
        }
        Ok(())
    }

    fn set_targets(&mut self, targets: Option<&[i32]>, len: usize, classes: usize) -> Result<()> {
        self.last.has_targets = targets.is_some();
        if let Some(tg) = targets {
            ensure!(tg.len() == len, "targets have {} entries, expected {len}", tg.len());
            if let Some(bad) = tg.iter().find(|&&x| x >= classes as i32 || x < -1) {
                bail!("target {bad} is out of range for {classes} classes (use -1 to ignore)");
            }
            self.last.targets[..len].copy_from_slice(tg);
        }
        Ok(())
    }

    fn set_mask(&mut self, mask: Option<&[bool]>, b: usize, t: usize) -> Result<()> {
        self.last.has_mask = mask.is_some();
        if let Some(m) = mask {
            ensure!(m.len() == b * t, "mask has {} entries, expected {}", m.len(), b * t);
            self.last.mask[..b * t].copy_from_slice(m);
        }
        Ok(())
    }

    fn begin(&mut self, b: usize, t: usize, t_enc: usize, train: bool, seed: u64) {
        let l = &mut self.last;
        (l.b, l.t, l.t_enc, l.train, l.dropout_seed) = (b, t, t_enc, train, seed);
        l.first_sequence = self.first_sequence;
        l.input_alpha = self.input_alpha;
        l.encoded = false;
    }
}

/// The stack whose output feeds the head (the decoder when there is one) and its activations.
fn top_stack<'a>(
    encoder: &'a Option<Stack>,
    decoder: &'a Option<Stack>,
    enc_acts: &'a Option<StackActs>,
    dec_acts: &'a Option<StackActs>,
) -> (&'a Stack, &'a StackActs) {
    match (encoder, decoder, enc_acts, dec_acts) {
        (_, Some(d), _, Some(a)) => (d, a),
        (Some(e), None, Some(a), _) => (e, a),
        _ => unreachable!("a model has at least one stack, with its activations"),
    }
}

/// The context of one stack's pass over the last forward's batch.
#[allow(clippy::too_many_arguments)]
fn ctx<'a>(
    w: &'a Regions<'a>,
    g: &'a Regions<'a>,
    r: &'a Regions<'a>,
    consts: &'a [f32],
    scratch: &'a Scratch,
    last: &Last,
    t: usize,
    self_mask: Option<&'a [bool]>,
    enc_mask: Option<&'a [bool]>,
    low: Option<Lowp<'a>>,
    linear: LinearHooks<'a>,
) -> Ctx<'a> {
    Ctx {
        w,
        g,
        r,
        consts,
        scratch,
        b: last.b,
        t,
        t_enc: last.t_enc,
        train: last.train,
        dropout_seed: last.dropout_seed,
        first_sequence: last.first_sequence,
        self_mask,
        enc_mask,
        low,
        linear,
        cache: None,
        input_alpha: last.input_alpha.unwrap_or(1.0),
    }
}
