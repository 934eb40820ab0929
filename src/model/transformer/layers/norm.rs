//! Normalisation layers: LayerNorm, RMSNorm, BatchNorm (running statistics kept as buffers),
//! and `none`, the identity (no parameters), to measure what normalisation does.

use super::Ctx;
use crate::kernels::{
    batchnorm::{batchnorm_backward, batchnorm_forward_eval, batchnorm_forward_train},
    layernorm::{layernorm_backward, layernorm_forward},
    rmsnorm::{rmsnorm_backward, rmsnorm_forward},
};
use crate::model::layout::{ActLayout, ParamKind, ParamLayout};
use crate::model::transformer::config::{ModelConfig, NormKind};
use std::ops::Range;

#[derive(Clone, Debug)]
pub(crate) struct Norm {
    kind: NormKind,
    eps: f32,
    w: Range<usize>,         // (C)
    b: Option<Range<usize>>, // (C)
    /// BatchNorm running mean and variance (C) each.
    running: Option<(Range<usize>, Range<usize>)>,
}

#[derive(Clone, Debug)]
pub(crate) struct NormActs {
    pub out: Range<usize>, // (N, C)
    mean: Range<usize>,    // (N) per row, or (C) per channel for BatchNorm
    rstd: Range<usize>,    // (N) or (C)
}

impl Norm {
    pub fn new(l: &mut ParamLayout, name: &str, cfg: &ModelConfig) -> Self {
        let c = cfg.n_embd;
        if cfg.norm == NormKind::None {
            return Norm { kind: NormKind::None, eps: cfg.norm_eps, w: 0..0, b: None, running: None };
        }
        let w = l.push(format!("{name}.weight"), &[c], ParamKind::Norm);
        let b =
            (cfg.bias && cfg.norm != NormKind::Rmsnorm).then(|| l.push(format!("{name}.bias"), &[c], ParamKind::Bias));
        let running = (cfg.norm == NormKind::Batchnorm).then(|| {
            (
                l.push(format!("{name}.running_mean"), &[c], ParamKind::Buffer),
                l.push(format!("{name}.running_var"), &[c], ParamKind::Buffer),
            )
        });
        Norm { kind: cfg.norm, eps: cfg.norm_eps, w, b, running }
    }

    /// BatchNorm running variance starts at one (the mean at zero, like every buffer).
    pub fn init(&self, params: &mut [f32]) {
        if let Some((_, var)) = &self.running {
            params[var.clone()].fill(1.0);
        }
    }

    pub fn acts(l: &mut ActLayout, n: usize, c: usize) -> NormActs {
        NormActs { out: l.alloc(n * c), mean: l.alloc(n.max(c)), rstd: l.alloc(n.max(c)) }
    }

    /// Returns the output rows (N, C).
    pub fn forward<'a>(&self, cx: &Ctx<'a>, a: &NormActs, x: &[f32], c: usize) -> &'a mut [f32] {
        let n = cx.n();
        let out = cx.r.mut_(&a.out, n * c);
        match self.kind {
            NormKind::Layernorm => layernorm_forward(
                out,
                cx.r.mut_(&a.mean, n),
                cx.r.mut_(&a.rstd, n),
                x,
                cx.p(&self.w),
                cx.popt(&self.b),
                c,
                self.eps,
            ),
            NormKind::Rmsnorm => rmsnorm_forward(out, cx.r.mut_(&a.rstd, n), x, cx.p(&self.w), c, self.eps),
            // The identity, copied so the output has its usual home for the layers after it.
            NormKind::None => out.copy_from_slice(&x[..n * c]),
            NormKind::Batchnorm => {
                let (rm, rv) = self.running.as_ref().expect("BatchNorm has running statistics");
                if cx.train {
                    batchnorm_forward_train(
                        out,
                        cx.r.mut_(&a.mean, c),
                        cx.r.mut_(&a.rstd, c),
                        cx.w.mut_(rm, c),
                        cx.w.mut_(rv, c),
                        x,
                        cx.p(&self.w),
                        cx.popt(&self.b),
                        c,
                        self.eps,
                        0.1,
                    )
                } else {
                    batchnorm_forward_eval(out, x, cx.p(rm), cx.p(rv), cx.p(&self.w), cx.popt(&self.b), c, self.eps)
                }
            }
        }
        out
    }

    /// dx (N, C) += ∂L/∂x through the norm, given dout (N, C) and the norm's input x.
    pub fn backward(&self, cx: &Ctx, a: &NormActs, dx: &mut [f32], dout: &[f32], x: &[f32], c: usize) {
        let n = cx.n();
        match self.kind {
            NormKind::Layernorm => layernorm_backward(
                dx,
                cx.gw(&self.w),
                cx.gopt(&self.b),
                dout,
                x,
                cx.p(&self.w),
                cx.r.get(&a.mean, n),
                cx.r.get(&a.rstd, n),
                c,
            ),
            NormKind::Rmsnorm => rmsnorm_backward(dx, cx.gw(&self.w), dout, x, cx.p(&self.w), cx.r.get(&a.rstd, n), c),
            NormKind::None => dx[..n * c].iter_mut().zip(&dout[..n * c]).for_each(|(d, g)| *d += g),
            NormKind::Batchnorm => batchnorm_backward(
                dx,
                cx.gw(&self.w),
                cx.gopt(&self.b),
                dout,
                x,
                cx.p(&self.w),
                cx.r.get(&a.mean, c),
                cx.r.get(&a.rstd, c),
                c,
            ),
        }
    }
}
