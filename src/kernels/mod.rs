//! Pure math on flat `f32` slices: one forward and one backward function per operation,
//! side by side, no I/O and no allocation.
//!
//! Conventions (as in llm.c): `B` batch, `T` time, `C` channels, `N = B·T` rows, `V` vocab,
//! `NH` heads. Tensors are row-major; the shape of every argument is written in its doc.
//! Backward functions *accumulate* (`+=`) into parameter gradients, which the caller zeroes once
//! per step. Input gradients are *overwritten* (no zero-fill pass over activation-sized
//! buffers), except LayerNorm's: it adds into the residual stream's gradient, where the
//! gradients of the two branches of every block meet.
//! All parallel reductions split work by a fixed chunking that does not depend on the thread
//! count, so results are bit-identical for a given seed whatever the pool size.

pub mod activation;
pub mod attention;
pub mod batchnorm;
pub mod conv1d;
pub mod crossentropy;
pub mod distill;
pub mod dropout;
pub mod embedding;
pub mod flash_attention;
pub mod gelu;
pub mod gemm;
pub mod general_attention;
pub mod gru;
pub mod isa;
pub mod layernorm;
pub mod lora;
pub mod lstm;
pub mod math;
pub mod matmul;
pub mod pool;
pub mod positional;
pub mod precision;
pub mod quant;
pub mod residual;
pub mod rmsnorm;
pub mod span;

/// A raw pointer that may cross threads. Used where parallel tasks write provably disjoint
/// parts of one buffer (e.g. one attention head each) that no safe slice split can express.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: users guarantee that concurrent tasks touch disjoint elements.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer. A method call makes closures capture the whole `SendPtr` (which is `Sync`)
    /// rather than its raw-pointer field.
    #[inline(always)]
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// Columns handled by one task in column-parallel reductions (bias and norm-weight gradients).
pub(crate) const COLUMN_CHUNK: usize = 32;
/// Minimum rows per task in row-parallel loops; keeps rayon overhead small on short rows.
pub(crate) const MIN_ROWS_PER_TASK: usize = 16;
