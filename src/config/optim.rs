//! `[optim]`: the optimizer, its learning-rate schedule, clipping and parameter groups.

use crate::optim::{
    AdagradConfig, AdamConfig, AdamWConfig, GroupRule, LrSchedule, OptimizerConfig, RmsPropConfig, ScheduleKind,
    SgdConfig,
};
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    /// The optimizer: "adamw" (default), "adam", "sgd", "rmsprop" or "adagrad", each with
    /// torch.optim's update rule.
    pub name: OptimizerName,
    /// "cosine" (warm-up + cosine, default), "linear", "step", "exponential", "inverse_sqrt",
    /// "constant".
    pub schedule: ScheduleKind,
    pub learning_rate: f32,
    pub min_lr: f32,
    pub warmup_iters: u64,
    pub lr_decay_iters: u64,
    pub decay_lr: bool,
    /// Adam/AdamW moment decay rates.
    pub beta1: f32,
    pub beta2: f32,
    /// Denominator term; default 1e-8 (1e-10 for adagrad, as torch.optim).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eps: Option<f32>,
    /// Weight decay of the decayed tensors: decoupled for adamw, an L2 term in the gradient for
    /// the others. Default 0.1 for adamw (nanoGPT), 0 for the others (torch.optim).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f32>,
    /// Apply weight decay to the embedding tables too (nanoGPT does; off by default).
    pub decay_embeddings: bool,
    /// Per-tensor overrides of weight decay and learning rate, first match wins (see
    /// `optim::groups`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupRule>,
    /// SGD and RMSprop: momentum factor.
    pub momentum: f32,
    /// SGD: dampening of the momentum.
    pub dampening: f32,
    /// SGD: Nesterov momentum (needs momentum > 0 and dampening 0).
    pub nesterov: bool,
    /// RMSprop: smoothing constant of the squared-gradient average.
    pub alpha: f32,
    /// RMSprop: normalise by the estimated variance of the gradient.
    pub centered: bool,
    /// Adam: use the running maximum of the second moment (AMSGrad).
    pub amsgrad: bool,
    /// Adagrad: learning-rate decay per update.
    pub lr_decay: f32,
    /// Adagrad: starting value of the squared-gradient sum.
    pub initial_accumulator_value: f32,
    /// Clip the global gradient norm to this value; 0 disables clipping.
    pub grad_clip: f32,
    /// Clamp every gradient to [-clip_value, clip_value] before the norm clipping; 0 disables it.
    pub clip_value: f32,
    /// Step schedule: iterations between decays.
    pub step_size: u64,
    /// Step and exponential schedules: the decay factor.
    pub gamma: f32,
}

/// The `optim.name` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerName {
    #[default]
    AdamW,
    Adam,
    Sgd,
    RmsProp,
    Adagrad,
}

impl Default for OptimSection {
    fn default() -> Self {
        OptimSection {
            name: OptimizerName::AdamW,
            schedule: ScheduleKind::Cosine,
            learning_rate: 1e-3,
            min_lr: 1e-4,
            warmup_iters: 100,
            lr_decay_iters: 2000,
            decay_lr: true,
            beta1: 0.9,
            beta2: 0.99,
            eps: None,
            weight_decay: None,
            decay_embeddings: false,
            groups: Vec::new(),
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            alpha: 0.99,
            centered: false,
            amsgrad: false,
            lr_decay: 0.0,
            initial_accumulator_value: 0.0,
            grad_clip: 1.0,
            clip_value: 0.0,
            step_size: 1000,
            gamma: 0.1,
        }
    }
}

impl OptimSection {
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            kind: self.schedule,
            learning_rate: self.learning_rate,
            min_lr: self.min_lr,
            warmup_iters: self.warmup_iters,
            lr_decay_iters: self.lr_decay_iters,
            decay_lr: self.decay_lr,
            step_size: self.step_size,
            gamma: self.gamma,
        }
    }
    pub fn clipping(&self) -> crate::optim::Clipping {
        crate::optim::Clipping { norm: self.grad_clip, value: self.clip_value }
    }
    /// Weight decay after defaults: 0.1 for adamw, 0 for the others.
    pub fn weight_decay(&self) -> f32 {
        self.weight_decay.unwrap_or(if self.name == OptimizerName::AdamW { 0.1 } else { 0.0 })
    }

    pub fn eps(&self) -> f32 {
        self.eps.unwrap_or(if self.name == OptimizerName::Adagrad { 1e-10 } else { 1e-8 })
    }

    /// The selected optimizer with its hyperparameters.
    pub fn optimizer(&self) -> OptimizerConfig {
        let (eps, weight_decay, decay_embeddings) = (self.eps(), self.weight_decay(), self.decay_embeddings);
        let (beta1, beta2) = (self.beta1, self.beta2);
        match self.name {
            OptimizerName::AdamW => {
                OptimizerConfig::AdamW(AdamWConfig { beta1, beta2, eps, weight_decay, decay_embeddings })
            }
            OptimizerName::Adam => OptimizerConfig::Adam(AdamConfig {
                beta1,
                beta2,
                eps,
                weight_decay,
                amsgrad: self.amsgrad,
                decay_embeddings,
            }),
            OptimizerName::Sgd => OptimizerConfig::Sgd(SgdConfig {
                momentum: self.momentum,
                dampening: self.dampening,
                nesterov: self.nesterov,
                weight_decay,
                decay_embeddings,
            }),
            OptimizerName::RmsProp => OptimizerConfig::RmsProp(RmsPropConfig {
                alpha: self.alpha,
                eps,
                momentum: self.momentum,
                centered: self.centered,
                weight_decay,
                decay_embeddings,
            }),
            OptimizerName::Adagrad => OptimizerConfig::Adagrad(AdagradConfig {
                lr_decay: self.lr_decay,
                weight_decay,
                initial_accumulator_value: self.initial_accumulator_value,
                eps,
                decay_embeddings,
            }),
        }
    }

    /// The optimizer for a model with `layout`, per-tensor groups applied.
    pub fn build(&self, layout: &crate::model::ParamLayout) -> Result<crate::optim::Optimizer> {
        crate::optim::Optimizer::with_groups(&self.optimizer(), layout, &self.groups)
    }

    /// Keys set away from their defaults that the selected optimizer would ignore: a config
    /// that sets `momentum` with adamw is a mistake, not a no-op.
    pub(super) fn check_applicable(&self) -> Result<()> {
        use OptimizerName::*;
        let d = OptimSection::default();
        let keys: [(&str, bool, &[OptimizerName]); 8] = [
            ("momentum", self.momentum != d.momentum, &[Sgd, RmsProp]),
            ("dampening", self.dampening != d.dampening, &[Sgd]),
            ("nesterov", self.nesterov != d.nesterov, &[Sgd]),
            ("alpha", self.alpha != d.alpha, &[RmsProp]),
            ("centered", self.centered != d.centered, &[RmsProp]),
            ("amsgrad", self.amsgrad != d.amsgrad, &[Adam]),
            ("lr_decay", self.lr_decay != d.lr_decay, &[Adagrad]),
            ("initial_accumulator_value", self.initial_accumulator_value != d.initial_accumulator_value, &[Adagrad]),
        ];
        for (key, set, users) in keys {
            if set && !users.contains(&self.name) {
                let names: Vec<String> = users.iter().map(|u| format!("{u:?}").to_lowercase()).collect();
                bail!(
                    "optim.{key} applies to {} only, but optim.name = \"{}\"",
                    names.join(" and "),
                    format!("{:?}", self.name).to_lowercase()
                );
            }
        }
        if self.nesterov {
            ensure!(self.momentum > 0.0 && self.dampening == 0.0, "optim.nesterov needs momentum > 0 and dampening 0");
        }
        ensure!(
            self.momentum >= 0.0 && self.dampening >= 0.0,
            "optim.momentum and optim.dampening must be non-negative"
        );
        ensure!((0.0..1.0).contains(&self.alpha), "optim.alpha must be in [0, 1)");
        ensure!(self.eps() > 0.0, "optim.eps must be positive");
        for rule in &self.groups {
            rule.validate()?;
        }
        Ok(())
    }
}
