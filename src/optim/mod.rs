//! Optimizers, learning-rate schedules and gradient clipping over flat buffers.
pub mod adagrad;
pub mod adam;
pub mod adamw;
pub mod clip;
pub mod rmsprop;
pub mod schedule;
pub mod sgd;

pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig};
pub use adamw::{AdamW, AdamWConfig};
pub use clip::{clip_factor, clip_grad_norm, clip_grad_value, grad_norm, Clipping};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use schedule::{LrSchedule, ScheduleKind};
pub use sgd::{Sgd, SgdConfig};

use crate::model::{ParamKind, ParamLayout};
use rayon::iter::Either;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Elements per parallel work item. Fixed, so results never depend on the thread count.
pub(crate) const CHUNK: usize = 8192;

/// Per-tensor (range, weight decay) pairs in layout order. `Buffer` tensors are left out, so the
/// optimizers never touch them; decay goes to matrices, and to embeddings if `decay_embeddings`.
pub(crate) fn decay_groups(
    layout: &ParamLayout,
    weight_decay: f32,
    decay_embeddings: bool,
) -> Vec<(Range<usize>, f32)> {
    layout
        .tensors
        .iter()
        .filter(|t| t.kind != ParamKind::Buffer)
        .map(|t| {
            let decay = match t.kind {
                ParamKind::Matrix => true,
                ParamKind::Embedding => decay_embeddings,
                ParamKind::Bias | ParamKind::Norm | ParamKind::Buffer => false,
            };
            (t.range(), if decay { weight_decay } else { 0.0 })
        })
        .collect()
}

/// The groups overlapping the chunk `lo..lo + len`, as (chunk-local range, weight decay): a chunk
/// that spans two tensors applies each one's decay to its own part.
pub(crate) fn groups_in_chunk(
    groups: &[(Range<usize>, f32)],
    lo: usize,
    len: usize,
) -> impl Iterator<Item = (Range<usize>, f32)> + '_ {
    let hi = lo + len;
    let first = groups.partition_point(|(r, _)| r.end <= lo);
    groups[first..]
        .iter()
        .take_while(move |(r, _)| r.start < hi)
        .map(move |(r, wd)| (r.start.max(lo) - lo..r.end.min(hi) - lo, *wd))
}

/// `CHUNK`-sized mutable chunks of an optional state buffer: an empty buffer (state the config
/// does not need, e.g. SGD's momentum at momentum 0) yields `n_chunks` empty slices instead, so
/// it can be zipped with the others.
pub(crate) fn state_chunks(v: &mut [f32], n_chunks: usize) -> impl IndexedParallelIterator<Item = &mut [f32]> {
    if v.is_empty() {
        Either::Left((0..n_chunks).into_par_iter().map(|_| <&mut [f32]>::default()))
    } else {
        Either::Right(v.par_chunks_mut(CHUNK))
    }
}

/// Zeroed state of `n` elements, or nothing when the configuration does not use it.
pub(crate) fn state_vec(needed: bool, n: usize) -> Vec<f32> {
    if needed {
        vec![0.0; n]
    } else {
        Vec::new()
    }
}

/// Which optimizer to build, with its hyperparameters (the `name` tag selects the variant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum OptimizerConfig {
    AdamW(AdamWConfig),
    Adam(AdamConfig),
    Sgd(SgdConfig),
    RmsProp(RmsPropConfig),
    Adagrad(AdagradConfig),
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::AdamW(AdamWConfig::default())
    }
}

/// Any of the optimizers, behind one `step_scaled`.
pub enum Optimizer {
    AdamW(AdamW),
    Adam(Adam),
    Sgd(Sgd),
    RmsProp(RmsProp),
    Adagrad(Adagrad),
}

impl Optimizer {
    pub fn new(config: &OptimizerConfig, layout: &ParamLayout) -> Self {
        match config {
            OptimizerConfig::AdamW(c) => Optimizer::AdamW(AdamW::new(c.clone(), layout)),
            OptimizerConfig::Adam(c) => Optimizer::Adam(Adam::new(c.clone(), layout)),
            OptimizerConfig::Sgd(c) => Optimizer::Sgd(Sgd::new(c.clone(), layout)),
            OptimizerConfig::RmsProp(c) => Optimizer::RmsProp(RmsProp::new(c.clone(), layout)),
            OptimizerConfig::Adagrad(c) => Optimizer::Adagrad(Adagrad::new(c.clone(), layout)),
        }
    }

    /// Short name, as in [`OptimizerConfig`]'s `name` tag.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::AdamW(_) => "adamw",
            Optimizer::Adam(_) => "adam",
            Optimizer::Sgd(_) => "sgd",
            Optimizer::RmsProp(_) => "rmsprop",
            Optimizer::Adagrad(_) => "adagrad",
        }
    }

    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        self.step_scaled(params, grads, lr, 1.0);
    }

    /// One update with the gradients multiplied by `grad_scale` as they are read.
    pub fn step_scaled(&mut self, params: &mut [f32], grads: &[f32], lr: f32, grad_scale: f32) {
        match self {
            Optimizer::AdamW(o) => o.step_scaled(params, grads, lr, grad_scale),
            Optimizer::Adam(o) => o.step_scaled(params, grads, lr, grad_scale),
            Optimizer::Sgd(o) => o.step_scaled(params, grads, lr, grad_scale),
            Optimizer::RmsProp(o) => o.step_scaled(params, grads, lr, grad_scale),
            Optimizer::Adagrad(o) => o.step_scaled(params, grads, lr, grad_scale),
        }
    }

    /// Number of updates taken so far.
    pub fn steps(&self) -> u64 {
        match self {
            Optimizer::AdamW(o) => o.t,
            Optimizer::Adam(o) => o.t,
            Optimizer::Sgd(o) => o.t,
            Optimizer::RmsProp(o) => o.t,
            Optimizer::Adagrad(o) => o.t,
        }
    }

    /// Restores the update count (when loading a checkpoint).
    pub fn set_steps(&mut self, t: u64) {
        match self {
            Optimizer::AdamW(o) => o.t = t,
            Optimizer::Adam(o) => o.t = t,
            Optimizer::Sgd(o) => o.t = t,
            Optimizer::RmsProp(o) => o.t = t,
            Optimizer::Adagrad(o) => o.t = t,
        }
    }

    /// The state buffers (each in the parameters' flat layout) by name, for checkpoints. Buffers
    /// the configuration does not use are not listed.
    pub fn state_tensors(&self) -> Vec<(&'static str, &[f32])> {
        let all: Vec<(&'static str, &[f32])> = match self {
            Optimizer::AdamW(o) => vec![("m", &o.m), ("v", &o.v)],
            Optimizer::Adam(o) => vec![("m", &o.m), ("v", &o.v), ("v_max", &o.v_max)],
            Optimizer::Sgd(o) => vec![("momentum", &o.momentum_buf)],
            Optimizer::RmsProp(o) => {
                vec![("square_avg", &o.square_avg), ("grad_avg", &o.grad_avg), ("momentum", &o.momentum_buf)]
            }
            Optimizer::Adagrad(o) => vec![("sum", &o.sum)],
        };
        all.into_iter().filter(|(_, v)| !v.is_empty()).collect()
    }

    /// Mutable views of the same buffers as [`Optimizer::state_tensors`], in the same order.
    pub fn state_tensors_mut(&mut self) -> Vec<(&'static str, &mut [f32])> {
        let all: Vec<(&'static str, &mut [f32])> = match self {
            Optimizer::AdamW(o) => vec![("m", &mut o.m), ("v", &mut o.v)],
            Optimizer::Adam(o) => vec![("m", &mut o.m), ("v", &mut o.v), ("v_max", &mut o.v_max)],
            Optimizer::Sgd(o) => vec![("momentum", &mut o.momentum_buf)],
            Optimizer::RmsProp(o) => vec![
                ("square_avg", &mut o.square_avg),
                ("grad_avg", &mut o.grad_avg),
                ("momentum", &mut o.momentum_buf),
            ],
            Optimizer::Adagrad(o) => vec![("sum", &mut o.sum)],
        };
        all.into_iter().filter(|(_, v)| !v.is_empty()).collect()
    }
}
