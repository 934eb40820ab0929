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
    /// State that is saved with the model but not trained (BatchNorm's running statistics):
    /// the optimizer leaves it alone and its gradient stays zero.
    Buffer,
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

/// Disjoint mutable views into one flat buffer by range.
///
/// The model's layouts hand out non-overlapping ranges, and every kernel call below takes each
/// range at most once, so the views never alias. This is llm.c's pointer arithmetic, confined
/// to the model files.
pub(crate) struct Regions<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: std::marker::PhantomData<&'a mut [f32]>,
}

impl<'a> Regions<'a> {
    pub(crate) fn new(buf: &'a mut [f32]) -> Self {
        Regions { ptr: buf.as_mut_ptr(), len: buf.len(), _borrow: std::marker::PhantomData }
    }
    /// The first `len` elements of `r`.
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn mut_(&self, r: &Range<usize>, len: usize) -> &'a mut [f32] {
        assert!(len <= r.len() && r.end <= self.len);
        // SAFETY: in bounds (asserted); disjointness of simultaneously live views is the
        // invariant documented on the type.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), len) }
    }
    pub(crate) fn get(&self, r: &Range<usize>, len: usize) -> &'a [f32] {
        self.mut_(r, len)
    }
    /// The first `len` elements of the whole buffer.
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn prefix(&self, len: usize) -> &'a mut [f32] {
        self.mut_(&(0..self.len), len)
    }
}
