//! What the language-model training loop, checkpoints and sampling need of a causal language
//! model, whatever its architecture: the Transformer decoder ([`Transformer`]) or a baseline
//! without self-attention ([`crate::model::baseline::BaselineLm`]: LSTM, GRU, causal CNN).
//!
//! Generic code is monomorphised per model, so the Transformer's training step runs exactly
//! the code it ran before the trait existed.

use crate::kernels::precision::Precision;
use crate::model::layout::{ParamKind, ParamLayout};
use crate::model::transformer::{ModelConfig, Transformer};
use crate::model::InitScheme;
use anyhow::Result;

/// A causal language model over flat parameter and gradient buffers (one [`ParamLayout`]).
pub trait LanguageModel: Sized {
    /// A model of `config` with zeroed parameters and buffers for up to `max_batch` sequences
    /// of `block_size` tokens; `inference`: no gradients (where the model saves memory so).
    fn build(config: ModelConfig, max_batch: usize, inference: bool) -> Result<Self>;
    /// Initialises every parameter (`crate::model::init`'s scheme, normal draws with `std`).
    fn init_with(&mut self, scheme: InitScheme, std: f32, seed: u64);
    fn config(&self) -> &ModelConfig;
    fn layout(&self) -> &ParamLayout;
    fn params(&self) -> &[f32];
    fn params_mut(&mut self) -> &mut [f32];
    fn grads(&self) -> &[f32];
    fn grads_mut(&mut self) -> &mut [f32];
    /// The parameters to update and their gradients, at once (an optimizer step).
    fn params_and_grads(&mut self) -> (&mut [f32], &[f32]);
    /// Forward over `idx` (B, T); with `targets` (B, T) returns the mean cross-entropy over the
    /// targets that are not -1.
    fn forward_lm(
        &mut self,
        idx: &[u32],
        targets: Option<&[i32]>,
        b: usize,
        t: usize,
        train: bool,
        dropout_seed: u64,
    ) -> Result<Option<f32>>;
    /// Masked LM: forward over `idx` (B, T) (some positions holding `[MASK]`); with `targets`
    /// (B, T) (the original tokens of the positions to predict, -1 elsewhere) returns their mean
    /// cross-entropy. Only a Transformer encoder with the masked-LM head has one.
    fn forward_mlm(
        &mut self,
        _idx: &[u32],
        _targets: Option<&[i32]>,
        _b: usize,
        _t: usize,
        _train: bool,
        _dropout_seed: u64,
    ) -> Result<Option<f32>> {
        anyhow::bail!("masked-LM training needs a Transformer encoder with the masked-LM head")
    }
    /// Logits of the last forward pass (B, T, V).
    fn logits(&self) -> &[f32];
    /// Targets the last loss averaged over.
    fn loss_count(&self) -> usize;
    /// Backward of the last mean loss times `loss_scale`, accumulated into the gradients.
    fn backward_scaled(&mut self, loss_scale: f32) -> Result<()>;
    /// Backward of `loss_scale` times the last loss's sum over its targets (accumulation).
    fn backward_sum(&mut self, loss_scale: f32) -> Result<()>;
    fn zero_grad(&mut self);
    /// Label smoothing ε of training passes.
    fn set_label_smoothing(&mut self, eps: f32);
    /// The number format of the products (the baselines refuse anything but fp32).
    fn set_precision(&mut self, p: Precision) -> Result<()>;
    /// Data-parallel training: the index of this rank's first sequence in the global batch.
    fn set_first_sequence(&mut self, first: usize);
    /// The Transformer, for what only it has (pruning masks, distillation, health probes).
    fn as_transformer(&self) -> Option<&Transformer>;
    fn as_transformer_mut(&mut self) -> Option<&mut Transformer>;

    /// Trained parameters (buffers such as BatchNorm statistics excluded).
    fn num_params(&self) -> usize {
        self.layout().tensors.iter().filter(|t| t.kind != ParamKind::Buffer).map(|t| t.numel()).sum()
    }

    /// The first parameter that is NaN or infinite, as (its tensor's name, the value).
    fn first_nonfinite_param(&self) -> Option<(&str, f32)> {
        let params = self.params();
        self.layout()
            .tensors
            .iter()
            .find_map(|t| params[t.range()].iter().find(|x| !x.is_finite()).map(|&x| (t.name.as_str(), x)))
    }
}

impl LanguageModel for Transformer {
    fn build(config: ModelConfig, max_batch: usize, inference: bool) -> Result<Self> {
        if inference {
            Transformer::new_inference(config, max_batch)
        } else {
            Transformer::new(config, max_batch)
        }
    }
    fn init_with(&mut self, scheme: InitScheme, std: f32, seed: u64) {
        Transformer::init_with(self, scheme, std, seed)
    }
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn layout(&self) -> &ParamLayout {
        &self.layout
    }
    fn params(&self) -> &[f32] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }
    fn grads(&self) -> &[f32] {
        &self.grads
    }
    fn grads_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }
    fn params_and_grads(&mut self) -> (&mut [f32], &[f32]) {
        (&mut self.params, &self.grads)
    }
    fn forward_lm(
        &mut self,
        idx: &[u32],
        targets: Option<&[i32]>,
        b: usize,
        t: usize,
        train: bool,
        dropout_seed: u64,
    ) -> Result<Option<f32>> {
        Transformer::forward_lm(self, idx, targets, b, t, train, dropout_seed)
    }
    fn forward_mlm(
        &mut self,
        idx: &[u32],
        targets: Option<&[i32]>,
        b: usize,
        t: usize,
        train: bool,
        dropout_seed: u64,
    ) -> Result<Option<f32>> {
        Transformer::forward_mlm(self, idx, None, targets, b, t, train, dropout_seed)
    }
    fn logits(&self) -> &[f32] {
        Transformer::logits(self)
    }
    fn loss_count(&self) -> usize {
        Transformer::loss_count(self)
    }
    fn backward_scaled(&mut self, loss_scale: f32) -> Result<()> {
        Transformer::backward_scaled(self, loss_scale)
    }
    fn backward_sum(&mut self, loss_scale: f32) -> Result<()> {
        Transformer::backward_sum(self, loss_scale)
    }
    fn zero_grad(&mut self) {
        Transformer::zero_grad(self)
    }
    fn set_label_smoothing(&mut self, eps: f32) {
        self.label_smoothing = eps;
    }
    fn set_precision(&mut self, p: Precision) -> Result<()> {
        Transformer::set_precision(self, p);
        Ok(())
    }
    fn set_first_sequence(&mut self, first: usize) {
        Transformer::set_first_sequence(self, first)
    }
    fn as_transformer(&self) -> Option<&Transformer> {
        Some(self)
    }
    fn as_transformer_mut(&mut self) -> Option<&mut Transformer> {
        Some(self)
    }
    fn num_params(&self) -> usize {
        Transformer::num_params(self)
    }
}
