//! Optimizers, learning-rate schedules and gradient clipping over flat buffers.
use std::ops::Range;

pub mod adagrad;
pub mod adam;
pub mod adamw;
pub mod clip;
pub mod groups;
pub mod loss_scale;
pub mod rmsprop;
pub mod schedule;
pub mod sgd;

pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig};
pub use adamw::{AdamW, AdamWConfig};
pub use clip::{clip_factor, clip_grad_norm, clip_grad_value, grad_norm, Clipping};
pub use groups::{default_groups, resolve_groups, GroupRule, TensorGroup};
pub use loss_scale::{LossScaler, ScaleOutcome, ScalerState};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use schedule::{LrSchedule, ScheduleKind};
pub use sgd::{Sgd, SgdConfig};

use crate::model::ParamLayout;
use rayon::iter::Either;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Elements per parallel work item. Fixed, so results never depend on the thread count.
pub(crate) const CHUNK: usize = 8192;

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

impl OptimizerConfig {
    pub fn weight_decay(&self) -> f32 {
        match self {
            OptimizerConfig::AdamW(c) => c.weight_decay,
            OptimizerConfig::Adam(c) => c.weight_decay,
            OptimizerConfig::Sgd(c) => c.weight_decay,
            OptimizerConfig::RmsProp(c) => c.weight_decay,
            OptimizerConfig::Adagrad(c) => c.weight_decay,
        }
    }
    pub fn decay_embeddings(&self) -> bool {
        match self {
            OptimizerConfig::AdamW(c) => c.decay_embeddings,
            OptimizerConfig::Adam(c) => c.decay_embeddings,
            OptimizerConfig::Sgd(c) => c.decay_embeddings,
            OptimizerConfig::RmsProp(c) => c.decay_embeddings,
            OptimizerConfig::Adagrad(c) => c.decay_embeddings,
        }
    }
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

    /// An optimizer whose per-tensor weight decay and learning-rate multipliers follow `rules`
    /// (see [`groups`]); errors when a rule matches no tensor.
    pub fn with_groups(config: &OptimizerConfig, layout: &ParamLayout, rules: &[GroupRule]) -> anyhow::Result<Self> {
        let mut opt = Optimizer::new(config, layout);
        let groups = resolve_groups(layout, config.weight_decay(), config.decay_embeddings(), rules)?;
        match &mut opt {
            Optimizer::AdamW(o) => o.set_groups(groups),
            Optimizer::Adam(o) => o.set_groups(groups),
            Optimizer::Sgd(o) => o.set_groups(groups),
            Optimizer::RmsProp(o) => o.set_groups(groups),
            Optimizer::Adagrad(o) => o.set_groups(groups),
        }
        Ok(opt)
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

    /// ZeRO stage 1: from now on this optimizer holds the state of the parameters `range` only
    /// (the rest belongs to other ranks) and [`Optimizer::step_scaled`] takes `params[range]`
    /// and `grads[range]`. The per-tensor settings are cut to the range, so every element
    /// updates exactly as it would in the whole buffer. Idempotent for the same range.
    pub fn shard(&mut self, range: Range<usize>) {
        let cut = |v: &mut Vec<f32>| {
            if !v.is_empty() {
                *v = v[range.clone()].to_vec();
            }
        };
        let (bufs, groups, shard): (Vec<&mut Vec<f32>>, _, _) = match self {
            Optimizer::AdamW(o) => (vec![&mut o.m, &mut o.v], &mut o.groups, &mut o.shard),
            Optimizer::Adam(o) => (vec![&mut o.m, &mut o.v, &mut o.v_max], &mut o.groups, &mut o.shard),
            Optimizer::Sgd(o) => (vec![&mut o.momentum_buf], &mut o.groups, &mut o.shard),
            Optimizer::RmsProp(o) => {
                (vec![&mut o.square_avg, &mut o.grad_avg, &mut o.momentum_buf], &mut o.groups, &mut o.shard)
            }
            Optimizer::Adagrad(o) => (vec![&mut o.sum], &mut o.groups, &mut o.shard),
        };
        if shard.as_ref() == Some(&range) {
            return;
        }
        assert!(shard.is_none(), "Optimizer::shard: already sharded to {shard:?}");
        bufs.into_iter().for_each(cut);
        *groups = groups::cut_groups(groups, &range);
        *shard = Some(range);
    }

    /// The parameters whose state this optimizer holds, after [`Optimizer::shard`].
    pub fn shard_range(&self) -> Option<Range<usize>> {
        match self {
            Optimizer::AdamW(o) => o.shard.clone(),
            Optimizer::Adam(o) => o.shard.clone(),
            Optimizer::Sgd(o) => o.shard.clone(),
            Optimizer::RmsProp(o) => o.shard.clone(),
            Optimizer::Adagrad(o) => o.shard.clone(),
        }
    }

    /// Bytes of optimizer state held (this rank's share under ZeRO-1).
    pub fn state_bytes(&self) -> usize {
        self.state_tensors().iter().map(|(_, v)| 4 * v.len()).sum()
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

    /// The state buffers (each in the parameters' flat layout) by torch.optim's state names
    /// (`exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`, `momentum_buffer`, `square_avg`, `grad_avg`,
    /// `sum`), for checkpoints. Buffers the configuration does not use are not listed.
    pub fn state_tensors(&self) -> Vec<(&'static str, &[f32])> {
        let all: Vec<(&'static str, &[f32])> = match self {
            Optimizer::AdamW(o) => vec![("exp_avg", &o.m), ("exp_avg_sq", &o.v)],
            Optimizer::Adam(o) => vec![("exp_avg", &o.m), ("exp_avg_sq", &o.v), ("max_exp_avg_sq", &o.v_max)],
            Optimizer::Sgd(o) => vec![("momentum_buffer", &o.momentum_buf)],
            Optimizer::RmsProp(o) => {
                vec![("square_avg", &o.square_avg), ("grad_avg", &o.grad_avg), ("momentum_buffer", &o.momentum_buf)]
            }
            Optimizer::Adagrad(o) => vec![("sum", &o.sum)],
        };
        all.into_iter().filter(|(_, v)| !v.is_empty()).collect()
    }

    /// Mutable views of the same buffers as [`Optimizer::state_tensors`], in the same order.
    pub fn state_tensors_mut(&mut self) -> Vec<(&'static str, &mut [f32])> {
        let all: Vec<(&'static str, &mut [f32])> = match self {
            Optimizer::AdamW(o) => vec![("exp_avg", &mut o.m), ("exp_avg_sq", &mut o.v)],
            Optimizer::Adam(o) => {
                vec![("exp_avg", &mut o.m), ("exp_avg_sq", &mut o.v), ("max_exp_avg_sq", &mut o.v_max)]
            }
            Optimizer::Sgd(o) => vec![("momentum_buffer", &mut o.momentum_buf)],
            Optimizer::RmsProp(o) => vec![
                ("square_avg", &mut o.square_avg),
                ("grad_avg", &mut o.grad_avg),
                ("momentum_buffer", &mut o.momentum_buf),
            ],
            Optimizer::Adagrad(o) => vec![("sum", &mut o.sum)],
        };
        all.into_iter().filter(|(_, v)| !v.is_empty()).collect()
    }

    /// Calls `f` on every state buffer (unused ones are empty), without allocating: the
    /// training step of a pruned model zeroes the pruned entries of each through it.
    pub fn for_each_state_mut(&mut self, mut f: impl FnMut(&mut [f32])) {
        match self {
            Optimizer::AdamW(o) => [&mut o.m, &mut o.v].into_iter().for_each(|b| f(b)),
            Optimizer::Adam(o) => [&mut o.m, &mut o.v, &mut o.v_max].into_iter().for_each(|b| f(b)),
            Optimizer::Sgd(o) => f(&mut o.momentum_buf),
            Optimizer::RmsProp(o) => {
                [&mut o.square_avg, &mut o.grad_avg, &mut o.momentum_buf].into_iter().for_each(|b| f(b))
            }
            Optimizer::Adagrad(o) => f(&mut o.sum),
        }
    }

    /// Restores state saved from an optimizer of the same kind and configuration: the name, the
    /// update count and every state buffer must match, so a resumed run continues exactly.
    pub fn restore(&mut self, saved: &OptimizerState) -> anyhow::Result<()> {
        anyhow::ensure!(
            saved.name == self.name(),
            "the checkpoint holds {} optimizer state but the config selects optim.name = \"{}\"",
            saved.name,
            self.name()
        );
        let name = self.name();
        for (state, buf) in self.state_tensors_mut() {
            let Some((_, v)) = saved.buffers.iter().find(|(n, _)| n == state) else {
                anyhow::bail!(
                    "the checkpoint's {name} state has no `{state}` buffer (was the optimizer configured differently?)"
                );
            };
            anyhow::ensure!(
                v.len() == buf.len(),
                "optimizer buffer `{state}` has {} values, expected {}",
                v.len(),
                buf.len()
            );
            buf.copy_from_slice(v);
        }
        let ours: Vec<&str> = self.state_tensors().iter().map(|(n, _)| *n).collect();
        if let Some((extra, _)) = saved.buffers.iter().find(|(n, _)| !ours.contains(&n.as_str())) {
            anyhow::bail!("the checkpoint's {name} state has a `{extra}` buffer this configuration does not use");
        }
        self.set_steps(saved.steps);
        Ok(())
    }
}

/// An optimizer's state as saved in a checkpoint: its name, update count and named buffers
/// (each in the parameters' flat layout).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    pub name: String,
    pub steps: u64,
    pub buffers: Vec<(String, Vec<f32>)>,
}
