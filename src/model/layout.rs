//! Named views into one flat `f32` buffer.
//!
//! A model's parameters (and, with the same layout, its gradients and optimizer moments) live
//! in a single `Vec<f32>`; a [`ParamLayout`] maps each tensor name to its offset and shape. One
//! buffer means a whole model can be saved, all-reduced or quantized in one pass.

use std::ops::Range;

/// One named tensor inside the flat buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorView {
    pub name: String,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
}

/// What a tensor is; the optimizer decides from it which tensors get weight decay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// The weight matrix of a linear layer.
    Matrix,
    /// A token or position embedding table.
    Embedding,
    Bias,
    /// The gain of a normalisation layer.
    Norm,
}

impl TensorView {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.numel()
    }
}

#[derive(Clone, Debug, Default)]
pub struct ParamLayout {
    pub tensors: Vec<TensorView>,
    pub total: usize,
}

impl ParamLayout {
    /// Appends a tensor and returns its range in the flat buffer.
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize], kind: ParamKind) -> Range<usize> {
        let view = TensorView { name: name.into(), offset: self.total, shape: shape.to_vec(), kind };
        self.total += view.numel();
        let r = view.range();
        self.tensors.push(view);
        r
    }

    pub fn get(&self, name: &str) -> Option<&TensorView> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Sizes of activation buffers, laid out like parameters but without names: each call to
/// [`ActLayout::alloc`] reserves a region and returns its range.
#[derive(Clone, Debug, Default)]
pub struct ActLayout {
    pub total: usize,
}

impl ActLayout {
    pub fn alloc(&mut self, len: usize) -> Range<usize> {
        let r = self.total..self.total + len;
        self.total += len;
        r
    }
    pub fn alloc_if(&mut self, cond: bool, len: usize) -> Option<Range<usize>> {
        cond.then(|| self.alloc(len))
    }
}
