//! Ablation: the input of one output projection (an attention layer's `c_proj`, whose columns
//! are the heads' outputs, or a feed-forward layer's `c_proj`, whose columns are its hidden
//! units) replaced by zeros or by its mean over the pass's rows, in every forward pass until
//! cleared. This is TransformerLens's zero- and mean-ablation of a head's result (`hook_z`) or
//! of the MLP activations (`hook_post`): the projection's bias still applies.

use super::Transformer;
use anyhow::{ensure, Context, Result};
use std::ops::Range;

/// What replaces the ablated columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AblationMode {
    Zero,
    /// The column's mean over the rows of the pass (every token of every sequence).
    Mean,
}

/// One ablated output-projection input: columns `cols` of the input of the linear layer whose
/// weight starts at `weight` in `params`.
#[derive(Clone, Debug)]
pub struct Ablation {
    pub(crate) weight: usize,
    pub(crate) cols: Range<usize>,
    pub(crate) mode: AblationMode,
}

impl Ablation {
    /// x (N, width): the ablated columns replaced, if `w` is the ablated weight.
    pub(crate) fn apply(&self, w: &Range<usize>, x: &mut [f32], n: usize, width: usize) {
        if w.start != self.weight || n == 0 {
            return;
        }
        let x = &mut x[..n * width];
        match self.mode {
            AblationMode::Zero => x.chunks_exact_mut(width).for_each(|r| r[self.cols.clone()].fill(0.0)),
            AblationMode::Mean => {
                let mut mean = vec![0f64; self.cols.len()];
                for r in x.chunks_exact(width) {
                    mean.iter_mut().zip(&r[self.cols.clone()]).for_each(|(m, v)| *m += *v as f64);
                }
                let mean: Vec<f32> = mean.iter().map(|m| (m / n as f64) as f32).collect();
                x.chunks_exact_mut(width).for_each(|r| r[self.cols.clone()].copy_from_slice(&mean));
            }
        }
    }
}

impl Transformer {
    /// Ablates head `head` of the attention layer `layer` (e.g. `transformer.h.3.attn`, or a
    /// decoder's `decoder.h.0.cross_attn`), or with `head` None the whole feed-forward layer
    /// `layer` (e.g. `transformer.h.3.mlp`), in every forward pass until
    /// [`Transformer::clear_ablation`]. Errors name a layer or head the model does not have.
    pub fn set_ablation(&mut self, layer: &str, head: Option<usize>, mode: AblationMode) -> Result<()> {
        let name = format!("{layer}.c_proj.weight");
        let t = self.layout.get(&name).with_context(|| {
            format!("the model has no layer {layer:?} (expected e.g. transformer.h.0.attn or transformer.h.0.mlp)")
        })?;
        let width = t.shape[1];
        let cols = match head {
            Some(h) => {
                ensure!(layer.ends_with("attn"), "{layer} is not an attention layer: only attention layers have heads");
                let nh = self.config.n_head;
                ensure!(h < nh, "head {h} does not exist: the model has {nh} heads per layer (0..{})", nh - 1);
                let hs = width / nh;
                h * hs..(h + 1) * hs
            }
            None => 0..width,
        };
        self.ablation = Some(Ablation { weight: t.offset, cols, mode });
        Ok(())
    }

    /// Ends [`Transformer::set_ablation`].
    pub fn clear_ablation(&mut self) {
        self.ablation = None;
    }
}
