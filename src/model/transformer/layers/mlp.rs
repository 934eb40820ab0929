//! The feed-forward network: c_proj(act(c_fc(x))), or SwiGLU's gated form.

use super::Ctx;
use crate::kernels::activation::{
    activation_backward, activation_forward, swiglu_backward, swiglu_forward, Activation,
};
use crate::model::layout::{ActLayout, ParamKind, ParamLayout};
use crate::model::transformer::config::ModelConfig;
use crate::model::transformer::probe::{ActKind, ActTensor, View};
use std::ops::Range;

#[derive(Clone, Debug)]
pub(crate) struct Mlp {
    /// Model width C.
    pub c: usize,
    f: usize,
    /// None: SwiGLU.
    act: Option<Activation>,
    c_fc_w: Range<usize>, // (F_in, C), F_in = F or 2F for SwiGLU
    c_fc_b: Option<Range<usize>>,
    c_proj_w: Range<usize>, // (C, F)
    c_proj_b: Option<Range<usize>>,
}

#[derive(Clone, Debug)]
pub(crate) struct MlpActs {
    fc: Range<usize>,      // (N, F_in)
    fc_act: Range<usize>,  // (N, F)
    pub out: Range<usize>, // (N, C)
}

impl Mlp {
    pub fn new(l: &mut ParamLayout, name: &str, cfg: &ModelConfig) -> Self {
        let (c, f) = (cfg.n_embd, cfg.ffn());
        let act = cfg.elementwise_activation();
        let f_in = if act.is_none() { 2 * f } else { f };
        let c_fc_w = l.push(format!("{name}.c_fc.weight"), &[f_in, c], ParamKind::Matrix);
        let c_fc_b = cfg.bias.then(|| l.push(format!("{name}.c_fc.bias"), &[f_in], ParamKind::Bias));
        let c_proj_w = l.push(format!("{name}.c_proj.weight"), &[c, f], ParamKind::Matrix);
        let c_proj_b = cfg.bias.then(|| l.push(format!("{name}.c_proj.bias"), &[c], ParamKind::Bias));
        Mlp { c, f, act, c_fc_w, c_fc_b, c_proj_w, c_proj_b }
    }

    pub fn f_in(&self) -> usize {
        if self.act.is_none() {
            2 * self.f
        } else {
            self.f
        }
    }

    pub fn acts(&self, l: &mut ActLayout, n: usize) -> MlpActs {
        MlpActs { fc: l.alloc(n * self.f_in()), fc_act: l.alloc(n * self.f), out: l.alloc(n * self.c) }
    }

    pub fn forward(&self, cx: &Ctx, a: &MlpActs, x: &[f32]) {
        let (n, c, f, fi) = (cx.n(), self.c, self.f, self.f_in());
        let fc = cx.r.mut_(&a.fc, n * fi);
        cx.linear_forward(fc, x, &self.c_fc_w, &self.c_fc_b, n, c, fi);
        let fc_act = cx.r.mut_(&a.fc_act, n * f);
        match self.act {
            Some(act) => activation_forward(act, fc_act, fc),
            None => swiglu_forward(fc_act, fc, f),
        }
        cx.ablate(&self.c_proj_w, fc_act, n, f);
        let out = cx.r.mut_(&a.out, n * c);
        cx.linear_forward(out, fc_act, &self.c_proj_w, &self.c_proj_b, n, f, c);
    }

    pub fn backward(&self, cx: &Ctx, a: &MlpActs, dx: &mut [f32], dout: &[f32], x: &[f32]) {
        let (n, c, f, fi, s) = (cx.n(), self.c, self.f, self.f_in(), cx.scratch);
        let d_act = cx.r.mut_(&s.d_wide2, n * f);
        cx.linear_backward(d_act, &self.c_proj_w, &self.c_proj_b, dout, cx.r.get(&a.fc_act, n * f), n, f, c);
        let d_fc = cx.r.mut_(&s.d_wide, n * fi);
        let fc = cx.r.get(&a.fc, n * fi);
        match self.act {
            Some(act) => activation_backward(act, d_fc, fc, d_act),
            None => swiglu_backward(d_fc, fc, d_act, f),
        }
        cx.linear_backward_owned(dx, &self.c_fc_w, &self.c_fc_b, d_fc, x, n, c, fi);
    }
}

/// Read-only views for diagnostics (see `probe.rs`).
impl Mlp {
    /// The layer's activation tensors in forward order, named `{prefix}.{fc|act|out}`.
    pub fn activations<'a>(&self, v: &View<'a>, a: &MlpActs, prefix: &str, layer: usize, out: &mut Vec<ActTensor<'a>>) {
        let (n, l) = (v.n(), Some(layer));
        v.push(out, format!("{prefix}.fc"), l, ActKind::FfnPre, &a.fc, n * self.f_in());
        v.push(out, format!("{prefix}.act"), l, ActKind::FfnAct, &a.fc_act, n * self.f);
        v.push(out, format!("{prefix}.out"), l, ActKind::BranchOut, &a.out, n * self.c);
    }

    /// The pre-activation (N, F_in), F_in and the hidden width F.
    pub fn pre_activation<'a>(&self, v: &View<'a>, a: &MlpActs) -> (&'a [f32], usize, usize) {
        (v.get(&a.fc, v.n() * self.f_in()), self.f_in(), self.f)
    }
}
