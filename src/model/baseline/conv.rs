//! One residual block of the causal CNN ([`super::BaselineLm`] with `arch = "cnn"`), pre-norm
//! like the Transformer's blocks, with a dilated causal convolution where attention would be:
//!
//! ```text
//! x ─┬─ LN ─ conv (C → C, K taps, dilation d, causal) ─ act ─ c_proj (C → C) ─ dropout ─(+)─ x'
//!    └────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Output t of layer i sees inputs t, t − dᵢ, …, t − (K − 1)·dᵢ; stacked with dilations
//! 1, 2, 4, … the receptive field doubles per layer (WaveNet, TCN).

use crate::kernels::activation::{activation_backward, activation_forward, Activation};
use crate::kernels::conv1d::{conv1d_causal_backward, conv1d_causal_forward, conv1d_scratch_len, ConvDims};
use crate::kernels::dropout::{dropout_backward, dropout_forward};
use crate::kernels::layernorm::{layernorm_backward, layernorm_forward};
use crate::kernels::matmul::{matmul_backward, matmul_forward};
use crate::kernels::residual::residual_forward;
use crate::model::layout::{ActLayout, ParamKind, ParamLayout, Regions};
use std::ops::Range;

pub(super) struct ConvBlock {
    c: usize,
    taps: usize,
    dilation: usize,
    act: Activation,
    eps: f32,
    ln_w: Range<usize>,   // (C)
    ln_b: Range<usize>,   // (C)
    conv_w: Range<usize>, // (C, C, K), PyTorch's Conv1d layout
    conv_b: Range<usize>, // (C)
    proj_w: Range<usize>, // (C, C)
    proj_b: Range<usize>, // (C)
    /// The block's output x' (B, T, C).
    pub out: Range<usize>,
    u: Range<usize>,    // LN(x) (B, T, C)
    mean: Range<usize>, // (B·T)
    rstd: Range<usize>, // (B·T)
    v: Range<usize>,    // conv(u) (B, T, C)
    a: Range<usize>,    // act(v) (B, T, C)
    q: Range<usize>,    // dropout(c_proj(a)) (B, T, C)
}

impl ConvBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        l: &mut ParamLayout,
        al: &mut ActLayout,
        i: usize,
        (c, taps, dilation): (usize, usize, usize),
        act: Activation,
        eps: f32,
        n: usize,
    ) -> Self {
        let p = format!("blocks.{i}");
        ConvBlock {
            c,
            taps,
            dilation,
            act,
            eps,
            ln_w: l.push(format!("{p}.ln.weight"), &[c], ParamKind::Norm),
            ln_b: l.push(format!("{p}.ln.bias"), &[c], ParamKind::Bias),
            conv_w: l.push(format!("{p}.conv.weight"), &[c, c, taps], ParamKind::Matrix),
            conv_b: l.push(format!("{p}.conv.bias"), &[c], ParamKind::Bias),
            // `c_proj`: GPT-2's initialisation scales residual output projections by 1/√(2L).
            proj_w: l.push(format!("{p}.c_proj.weight"), &[c, c], ParamKind::Matrix),
            proj_b: l.push(format!("{p}.c_proj.bias"), &[c], ParamKind::Bias),
            out: al.alloc(n * c),
            u: al.alloc(n * c),
            mean: al.alloc(n),
            rstd: al.alloc(n),
            v: al.alloc(n * c),
            a: al.alloc(n * c),
            q: al.alloc(n * c),
        }
    }

    pub fn scratch_len(&self) -> usize {
        conv1d_scratch_len(self.c, self.c, self.taps)
    }

    fn dims(&self, b: usize, t: usize) -> ConvDims {
        ConvDims { b, t, c: self.c, oc: self.c, k: self.taps, dilation: self.dilation }
    }

    /// x (B, T, C) → `out` (B, T, C).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        w: &[f32],
        r: &Regions,
        scratch: &mut [f32],
        x: &[f32],
        (b, t): (usize, usize),
        p: f32,
        seed: u64,
    ) {
        let (n, c) = (b * t, self.c);
        let (u, mean, rstd) = (r.mut_(&self.u, n * c), r.mut_(&self.mean, n), r.mut_(&self.rstd, n));
        layernorm_forward(u, mean, rstd, x, &w[self.ln_w.clone()], Some(&w[self.ln_b.clone()]), c, self.eps);
        let v = r.mut_(&self.v, n * c);
        conv1d_causal_forward(v, u, &w[self.conv_w.clone()], Some(&w[self.conv_b.clone()]), scratch, self.dims(b, t));
        let a = r.mut_(&self.a, n * c);
        activation_forward(self.act, a, v);
        // c_proj's output goes through `out` on its way to dropout.
        let out = r.mut_(&self.out, n * c);
        matmul_forward(out, a, &w[self.proj_w.clone()], Some(&w[self.proj_b.clone()]), n, c, c);
        let q = r.mut_(&self.q, n * c);
        dropout_forward(q, out, p, seed);
        residual_forward(out, x, q);
    }

    /// `dx` (B, T, C) holds ∂L/∂x' and leaves with ∂L/∂x (the residual path plus the block's);
    /// the parameter gradients accumulate; `t1`, `t2` (B, T, C) are work buffers.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        w: &[f32],
        g: &Regions,
        r: &Regions,
        scratch: &mut [f32],
        (dx, t1, t2): (&mut [f32], &mut [f32], &mut [f32]),
        x: &[f32],
        (b, t): (usize, usize),
        p: f32,
        seed: u64,
    ) {
        let (n, c) = (b * t, self.c);
        let grad = |range: &Range<usize>| g.mut_(range, range.len());
        dropout_backward(t1, dx, p, seed); // ∂L/∂c_proj output
        let a = r.get(&self.a, n * c);
        matmul_backward(t2, grad(&self.proj_w), Some(grad(&self.proj_b)), t1, a, &w[self.proj_w.clone()], n, c, c);
        let v = r.get(&self.v, n * c);
        activation_backward(self.act, t1, v, t2); // ∂L/∂v
        let u = r.get(&self.u, n * c);
        let (conv_w, conv_b) = (&w[self.conv_w.clone()], Some(grad(&self.conv_b)));
        conv1d_causal_backward(t2, grad(&self.conv_w), conv_b, t1, u, conv_w, scratch, self.dims(b, t)); // ∂L/∂u
        let (mean, rstd) = (r.get(&self.mean, n), r.get(&self.rstd, n));
        let ln_w = &w[self.ln_w.clone()];
        layernorm_backward(dx, grad(&self.ln_w), Some(grad(&self.ln_b)), t2, x, ln_w, mean, rstd, c);
    }
}
