//! A switchable per-operation timer for the training step.
//!
//! When enabled ([`enable`]), every kernel call in the model and optimizer adds its wall time
//! to a fixed slot; [`report`] lists the slots. When disabled, a scope costs one relaxed atomic
//! load. Nothing is allocated either way, so profiling does not disturb the no-allocation rule.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

macro_rules! ops {
    ($($name:ident => $label:expr),* $(,)?) => {
        /// The operations timed separately.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Op { $($name),* }
        const LABELS: &[&str] = &[$($label),*];
    };
}

ops! {
    EmbeddingFwd => "embedding fwd",
    LayerNormFwd => "layernorm fwd",
    MatmulFwd => "matmul fwd",
    AttentionFwd => "attention fwd (scores, softmax, ·V)",
    GeluFwd => "gelu fwd",
    ResidualFwd => "residual fwd",
    DropoutFwd => "dropout fwd",
    CrossEntropyFwd => "cross-entropy fwd",
    CrossEntropyBwd => "cross-entropy bwd",
    LayerNormBwd => "layernorm bwd",
    MatmulBwd => "matmul bwd",
    AttentionBwd => "attention bwd",
    GeluBwd => "gelu bwd",
    DropoutBwd => "dropout bwd",
    EmbeddingBwd => "embedding bwd",
    ZeroFill => "zeroing buffers",
    ClipGrad => "grad norm + clip",
    AdamW => "AdamW update",
    Batch => "batch sampling",
    Round => "precision rounding (bf16/f16)",
}

const N_OPS: usize = LABELS.len();
static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; N_OPS] = [const { AtomicU64::new(0) }; N_OPS];
static CALLS: [AtomicU64; N_OPS] = [const { AtomicU64::new(0) }; N_OPS];

pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn reset() {
    for i in 0..N_OPS {
        NANOS[i].store(0, Ordering::Relaxed);
        CALLS[i].store(0, Ordering::Relaxed);
    }
}

/// Times the rest of the enclosing block under `op` (when profiling is on).
pub struct Scope {
    op: Op,
    start: Option<Instant>,
}

#[inline]
pub fn scope(op: Op) -> Scope {
    let start = ENABLED.load(Ordering::Relaxed).then(Instant::now);
    Scope { op, start }
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        if let Some(t) = self.start {
            NANOS[self.op as usize].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            CALLS[self.op as usize].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One line of a profile: (operation, total seconds, calls).
pub type ProfileRow = (&'static str, f64, u64);

/// A row for every operation that ran, slowest first.
pub fn report() -> Vec<ProfileRow> {
    let mut rows: Vec<_> = (0..N_OPS)
        .map(|i| (LABELS[i], NANOS[i].load(Ordering::Relaxed) as f64 * 1e-9, CALLS[i].load(Ordering::Relaxed)))
        .filter(|r| r.2 > 0)
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows
}
