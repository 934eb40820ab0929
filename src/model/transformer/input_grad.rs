//! Gradients with respect to the input: what attribution methods (gradient × input,
//! integrated gradients) need. The "input" of a token is its embedding row `wte[idx]`, the
//! output of the embedding table (Captum's `LayerIntegratedGradients` on the embedding layer);
//! positions are added after it and are not attributed.

use super::Transformer;
use anyhow::{ensure, Result};

impl Transformer {
    /// Multiplies every token embedding by `alpha` in the forward (and backward) passes from
    /// now on: the point α·x on integrated gradients' straight path from the zero baseline to
    /// the input x. None: back to 1. Models with one stack only (decoder or encoder).
    pub fn set_input_scale(&mut self, alpha: Option<f32>) -> Result<()> {
        ensure!(
            self.encoder.is_none() || self.decoder.is_none(),
            "input attribution needs a decoder-only or encoder-only model (this one has both stacks)"
        );
        ensure!(alpha.is_none_or(|a| a.is_finite()), "the input scale must be finite");
        self.input_alpha = alpha;
        Ok(())
    }

    /// From now on (`on`), every backward pass also writes ∂L/∂(token embeddings) (B·T, C),
    /// read with [`Transformer::input_grad`]. Off frees the buffer.
    pub fn set_capture_input_grad(&mut self, on: bool) -> Result<()> {
        ensure!(!self.inference, "this model was built for inference: it has no backward pass");
        self.input_grad = on.then(|| vec![0.0; self.max_batch() * self.config.block_size * self.config.n_embd]);
        Ok(())
    }

    /// ∂L/∂(token embeddings) (B·T, C) of the last backward pass, with the loss of
    /// [`Transformer::backward`] (the mean over its targets). None unless captured.
    pub fn input_grad(&self) -> Option<&[f32]> {
        let n = self.last.b * self.last.t * self.config.n_embd;
        self.input_grad.as_deref().map(|g| &g[..n])
    }
}
