//! The parts of a block: a norm, self-attention, cross-attention and the feed-forward network,
//! each wrapped in a residual [`Sublayer`] (pre- or post-norm).
//!
//! Every part owns the ranges of its parameters (in the flat parameter buffer) and of its
//! activations (in the flat activation buffer), and has a `forward` and a `backward` that call
//! kernels on those ranges. A stack is a list of sublayers run in order.

mod attention;
mod mlp;
mod norm;
mod position;

pub(crate) use attention::{Attention, AttentionActs, Heads};
pub(crate) use mlp::{Mlp, MlpActs};
pub(crate) use norm::{Norm, NormActs};
pub(crate) use position::{AbsolutePosition, SelfPosition};

use super::ablation::Ablation;
use super::cache::CacheView;
use super::config::NormPosition;
use super::lora::{Adapter, LoraPass};
use super::probe::{ActKind, ActTensor, AttnProbs, View};
use super::quant::{LinearObserver, QuantLinears};
use crate::kernels::{
    dropout::{dropout_backward_at, dropout_forward_at, dropout_inplace, site_seed},
    lora::{lora_backward, lora_forward},
    matmul::{matmul_backward, matmul_backward_frozen, matmul_forward},
    precision::{matmul_backward_lowp, matmul_forward_lowp, round_inplace, round_into, Precision},
    residual::residual_forward,
};
use crate::model::layout::{ActLayout, Regions};
use std::ops::Range;

/// Everything a sublayer needs to run: parameter, gradient and activation buffers, the shape
/// of the current batch, and the dropout settings.
pub(crate) struct Ctx<'a> {
    /// Parameters (read; BatchNorm also updates its running statistics in training).
    pub w: &'a Regions<'a>,
    pub g: &'a Regions<'a>,
    pub r: &'a Regions<'a>,
    /// Fixed tables (ALiBi slopes).
    pub consts: &'a [f32],
    /// Ranges of the shared backward scratch (in `r`).
    pub scratch: &'a Scratch,
    pub b: usize,
    /// Sequence length of this stack.
    pub t: usize,
    /// Sequence length of the encoder output that cross-attention reads.
    pub t_enc: usize,
    pub train: bool,
    pub dropout_seed: u64,
    /// Index of this batch's first sequence in the global batch of a data-parallel step
    /// (0 in one process): dropout masks are drawn by position in the global batch.
    pub first_sequence: usize,
    /// Keys each query may see in self-attention: (B, T) true = real token (encoder padding).
    pub self_mask: Option<&'a [bool]>,
    /// Source tokens cross-attention may see: (B, T_enc).
    pub enc_mask: Option<&'a [bool]>,
    /// Mixed precision (bf16/f16): how the linear layers round; None in fp32.
    pub low: Option<Lowp<'a>>,
    /// Quantized weights and the input observer of the linear layers (`transformer/quant.rs`).
    pub linear: LinearHooks<'a>,
    /// An incremental pass over a KV cache (inference only, see `transformer/cache.rs`); None
    /// for full passes.
    pub cache: Option<&'a CacheView<'a>>,
    /// Factor on the token embeddings: 1, or α on integrated gradients' path (see
    /// `transformer/input_grad.rs`).
    pub input_alpha: f32,
}

/// What the linear layers see besides their weights: quantized weights that replace them, and
/// an observer of their inputs (calibration).
#[derive(Clone, Copy, Default)]
pub(crate) struct LinearHooks<'a> {
    pub quant: Option<&'a QuantLinears>,
    pub observe: Option<&'a LinearObserver>,
    /// Tensor parallelism: the weights (by range start, sorted) whose outputs are partial sums,
    /// added up over the ranks after the product (see [`Transformer::set_tensor_parallel`]).
    pub reduce: Option<&'a [usize]>,
    /// An output projection whose input columns are zeroed or averaged first (head and
    /// feed-forward ablation, `transformer/ablation.rs`); applied by the attention and
    /// feed-forward layers through [`Ctx::ablate`].
    pub ablate: Option<&'a Ablation>,
    /// LoRA adapters added to some layers' outputs (`transformer/lora.rs`).
    pub lora: Option<LoraPass<'a>>,
    /// Frozen tensors, sorted by start: a frozen weight gets no weight-gradient GEMM.
    pub frozen: &'a [Range<usize>],
}

/// What the linear layers of a reduced-precision pass read: the rounded copy of the weights and
/// their scratch (see `kernels::precision`).
#[derive(Clone, Copy)]
pub(crate) struct Lowp<'a> {
    pub p: Precision,
    /// The parameters rounded to `p`, in the parameters' layout.
    pub w: &'a Regions<'a>,
    /// The scratch buffer, cut by `ranges`.
    pub s: &'a Regions<'a>,
    pub ranges: &'a LowScratch,
}

/// Ranges of the mixed-precision scratch buffer; one linear layer runs at a time, so all share it.
#[derive(Clone, Debug, Default)]
pub(crate) struct LowScratch {
    /// (N, widest input) the rounded input of a forward product.
    pub x: Range<usize>,
    /// (N, widest output) the rounded copy of an output gradient the caller still reads.
    pub dout: Range<usize>,
    /// `matmul_lowp_scratch_len` of the largest product.
    pub bwd: Range<usize>,
}

impl Ctx<'_> {
    pub fn n(&self) -> usize {
        self.b * self.t
    }
    pub fn p(&self, r: &Range<usize>) -> &[f32] {
        self.w.get(r, r.len())
    }
    pub fn popt(&self, r: &Option<Range<usize>>) -> Option<&[f32]> {
        r.as_ref().map(|r| self.p(r))
    }
    #[allow(clippy::mut_from_ref)]
    pub fn gw(&self, r: &Range<usize>) -> &mut [f32] {
        self.g.mut_(r, r.len())
    }
    pub fn gopt(&self, r: &Option<Range<usize>>) -> Option<&mut [f32]> {
        r.as_ref().map(|r| self.gw(r))
    }
    pub fn drop_p(&self, p: f32) -> f32 {
        if self.train {
            p
        } else {
            0.0
        }
    }
    pub fn seed(&self, site: u64) -> u64 {
        site_seed(self.dropout_seed, 0, site)
    }

    /// The element of the global batch's (B, T, width) buffer where this batch's starts.
    pub fn dropout_first(&self, width: usize) -> usize {
        self.first_sequence * self.t * width
    }

    /// A linear layer's forward pass, out (N, OC) = x (N, C) · Wᵀ + b with the weight (OC, C) and
    /// bias (OC) at `w` and `b`, in the pass's precision.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_forward(
        &self,
        out: &mut [f32],
        x: &[f32],
        w: &Range<usize>,
        b: &Option<Range<usize>>,
        n: usize,
        c: usize,
        oc: usize,
    ) {
        if let Some(observe) = self.linear.observe {
            observe(w.start, &x[..n * c], n);
        }
        self.linear_product(out, x, w, b, n, c, oc);
        self.lora_forward(out, x, w, n);
        if self.linear.reduce.is_some_and(|r| r.binary_search(&w.start).is_ok()) {
            crate::dist::world().all_reduce_sum(&mut out[..n * oc]);
        }
    }

    /// x (N, width), the input of the output projection `w`: ablated columns replaced (see
    /// `transformer/ablation.rs`); nothing when no ablation is set.
    pub fn ablate(&self, w: &Range<usize>, x: &mut [f32], n: usize, width: usize) {
        if let Some(a) = self.linear.ablate {
            a.apply(w, x, n, width);
        }
    }

    /// The product of [`Ctx::linear_forward`]: quantized, reduced-precision or f32.
    #[allow(clippy::too_many_arguments)]
    fn linear_product(
        &self,
        out: &mut [f32],
        x: &[f32],
        w: &Range<usize>,
        b: &Option<Range<usize>>,
        n: usize,
        c: usize,
        oc: usize,
    ) {
        if self.linear.quant.is_some_and(|q| q.forward(out, x, w, self.popt(b), n)) {
            return;
        }
        match &self.low {
            None => matmul_forward(out, x, self.p(w), self.popt(b), n, c, oc),
            Some(l) => {
                let bias = b.as_ref().map(|b| l.w.get(b, b.len()));
                let x_low = l.s.mut_(&l.ranges.x, n * c);
                matmul_forward_lowp(out, x_low, x, l.w.get(w, w.len()), bias, n, c, oc, l.p);
            }
        }
    }

    /// A linear layer's backward pass: dx (N, C) overwritten, the gradients of `w` and `b`
    /// accumulated, from dout (N, OC), which is left unchanged.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_backward(
        &self,
        dx: &mut [f32],
        w: &Range<usize>,
        b: &Option<Range<usize>>,
        dout: &[f32],
        x: &[f32],
        n: usize,
        c: usize,
        oc: usize,
    ) {
        match &self.low {
            None => self.linear_backward_f32(dx, w, b, dout, x, n, c, oc),
            Some(l) => {
                let d = l.s.mut_(&l.ranges.dout, n * oc);
                round_into(d, &dout[..n * oc], l.p);
                self.linear_backward_low(l, dx, w, b, d, x, n, c, oc);
            }
        }
        self.lora_backward(dx, w, dout, x, n);
    }

    /// [`Ctx::linear_backward`] for an output gradient the caller no longer needs: in reduced
    /// precision it is rounded in place instead of into a copy.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_backward_owned(
        &self,
        dx: &mut [f32],
        w: &Range<usize>,
        b: &Option<Range<usize>>,
        dout: &mut [f32],
        x: &[f32],
        n: usize,
        c: usize,
        oc: usize,
    ) {
        match &self.low {
            None => self.linear_backward_f32(dx, w, b, dout, x, n, c, oc),
            Some(l) => {
                round_inplace(&mut dout[..n * oc], l.p);
                self.linear_backward_low(l, dx, w, b, dout, x, n, c, oc);
            }
        }
        self.lora_backward(dx, w, dout, x, n);
    }

    /// The f32 backward of a linear layer; a frozen weight's gradient is not computed.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward_f32(
        &self,
        dx: &mut [f32],
        w: &Range<usize>,
        b: &Option<Range<usize>>,
        dout: &[f32],
        x: &[f32],
        n: usize,
        c: usize,
        oc: usize,
    ) {
        if !self.is_frozen(w) {
            return matmul_backward(dx, self.gw(w), self.gopt(b), dout, x, self.p(w), n, c, oc);
        }
        let db = b.as_ref().filter(|b| !self.is_frozen(b)).map(|b| self.gw(b));
        matmul_backward_frozen(dx, db, dout, self.p(w), n, c, oc);
    }

    fn is_frozen(&self, r: &Range<usize>) -> bool {
        self.linear.frozen.binary_search_by_key(&r.start, |f| f.start).is_ok()
    }

    /// The adapter of the weight at `w`, with the pass's view of the adapters (None when `w`
    /// has none).
    fn adapter(&self, w: &Range<usize>) -> Option<(LoraPass<'_>, &Adapter)> {
        let l = self.linear.lora?;
        l.table.get(w).map(|a| (l, a))
    }

    /// out (N, OC) += (alpha/rank)·(dropout(x)·Aᵀ)·Bᵀ when the layer at `w` has an adapter.
    fn lora_forward(&self, out: &mut [f32], x: &[f32], w: &Range<usize>, n: usize) {
        let Some((l, ad)) = self.adapter(w) else { return };
        let cfg = &l.table.config;
        let (c, r, oc) = (ad.c, cfg.rank, ad.oc);
        let p = self.drop_p(cfg.dropout);
        let x_in: &[f32] = match (&ad.xd, p > 0.0) {
            (Some(xd), true) => {
                let d = l.r.mut_(xd, n * c);
                dropout_forward_at(d, &x[..n * c], p, self.seed(ad.site), self.dropout_first(c));
                d
            }
            _ => &x[..n * c],
        };
        let u = l.r.mut_(&ad.u, n * r);
        lora_forward(&mut out[..n * oc], u, x_in, self.p(&ad.a), self.p(&ad.b), cfg.scale(), n, c, r, oc);
    }

    /// The adapter's part of a linear layer's backward: dA and dB accumulated, dx (N, C) added to.
    fn lora_backward(&self, dx: &mut [f32], w: &Range<usize>, dout: &[f32], x: &[f32], n: usize) {
        let Some((l, ad)) = self.adapter(w) else { return };
        let cfg = &l.table.config;
        let (c, r, oc, s) = (ad.c, cfg.rank, ad.oc, cfg.scale());
        let (a, b, ga, gb) = (self.p(&ad.a), self.p(&ad.b), self.gw(&ad.a), self.gw(&ad.b));
        let u = l.r.get(&ad.u, n * r);
        let du = l.r.mut_(&l.table.du, n * r);
        let (dout, dx) = (&dout[..n * oc], &mut dx[..n * c]);
        let p = self.drop_p(cfg.dropout);
        match (&ad.xd, p > 0.0) {
            (Some(xd), true) => {
                // The gradient of the dropped-out input, then through the same mask into dx.
                let dxd = l.r.mut_(&l.table.dxd, n * c);
                dxd.fill(0.0);
                lora_backward(dxd, ga, gb, du, dout, l.r.get(xd, n * c), u, a, b, s, n, c, r, oc);
                dropout_inplace(dxd, p, self.seed(ad.site), self.dropout_first(c));
                dx.iter_mut().zip(dxd.iter()).for_each(|(d, e)| *d += e);
            }
            _ => lora_backward(dx, ga, gb, du, dout, &x[..n * c], u, a, b, s, n, c, r, oc),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn linear_backward_low(
        &self,
        l: &Lowp,
        dx: &mut [f32],
        w: &Range<usize>,
        b: &Option<Range<usize>>,
        dout: &[f32],
        x: &[f32],
        n: usize,
        c: usize,
        oc: usize,
    ) {
        let scratch = l.s.mut_(&l.ranges.bwd, crate::kernels::precision::matmul_lowp_scratch_len(n, c, oc));
        let weight = l.w.get(w, w.len());
        matmul_backward_lowp(dx, self.gw(w), self.gopt(b), dout, x, weight, n, c, oc, l.p, scratch);
    }
}

/// Backward scratch shared by all sublayers of all stacks (gradients flow through one sublayer
/// at a time), sized for the largest of them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scratch {
    /// (N, C) gradient reaching a sublayer's function input.
    pub d_fin: Range<usize>,
    /// (N, C) post-norm: gradient of the residual sum; pre-norm: the norm output's gradient.
    pub d_sum: Range<usize>,
    /// (N, C) branch gradient after dropout backward.
    pub d_branch: Range<usize>,
    /// (N, W) widest projection output gradient (qkv, fc).
    pub d_wide: Range<usize>,
    /// (N, W) second wide buffer (the activation's output gradient).
    pub d_wide2: Range<usize>,
    /// (N, C) attention output gradient before c_proj.
    pub d_y: Range<usize>,
    /// Attention kernel scratch (probability gradients or tiles).
    pub d_att: Range<usize>,
    /// (N_enc, C) one cross-attention's gradient for the encoder output.
    pub d_enc_part: Range<usize>,
}

#[derive(Clone, Debug)]
pub(crate) enum Function {
    Attention(Attention),
    Mlp(Mlp),
}

#[derive(Clone, Debug)]
pub(crate) enum FunctionActs {
    Attention(AttentionActs),
    Mlp(MlpActs),
}

/// x → x + f(norm(x)) (pre-norm) or x → norm(x + f(x)) (post-norm), with dropout on f's output.
#[derive(Clone, Debug)]
pub(crate) struct Sublayer {
    pub norm: Norm,
    pub position: NormPosition,
    pub f: Function,
    /// Dropout site of the residual branch; the attention probabilities use `site + 1`.
    pub site: u64,
    pub dropout: f32,
    /// x + f(...) (true) or f(...) alone (`model.residual = false`).
    pub residual: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct SublayerActs {
    norm: NormActs,
    f: FunctionActs,
    branch_drop: Option<Range<usize>>, // (N, C)
    /// Pre-norm: the output x + f(...). Post-norm: the sum x + f(x) that the norm reads.
    sum: Range<usize>, // (N, C)
}

impl Sublayer {
    /// Activation ranges; `inference`: no dropout buffers.
    pub fn acts(&self, l: &mut ActLayout, max_b: usize, t: usize, t_enc: usize, inference: bool) -> SublayerActs {
        let n = max_b * t;
        let c = self.norm_width();
        SublayerActs {
            norm: Norm::acts(l, n, c),
            f: match &self.f {
                Function::Attention(at) => FunctionActs::Attention(at.acts(l, max_b, t, t_enc, inference)),
                Function::Mlp(m) => FunctionActs::Mlp(m.acts(l, n)),
            },
            branch_drop: l.alloc_if(self.dropout > 0.0 && !inference, n * c),
            sum: l.alloc(n * c),
        }
    }

    fn norm_width(&self) -> usize {
        match &self.f {
            Function::Attention(a) => a.heads.c,
            Function::Mlp(m) => m.c,
        }
    }

    /// Where the sublayer's output lives in the activation buffer.
    pub fn output_range(&self, a: &SublayerActs) -> Range<usize> {
        match self.position {
            NormPosition::Pre => a.sum.clone(),
            NormPosition::Post => a.norm.out.clone(),
        }
    }

    /// The sublayer's output (N, C).
    pub fn output<'a>(&self, cx: &Ctx<'a>, a: &SublayerActs) -> &'a [f32] {
        let len = cx.n() * self.norm_width();
        match self.position {
            NormPosition::Pre => cx.r.get(&a.sum, len),
            NormPosition::Post => cx.r.get(&a.norm.out, len),
        }
    }

    fn run_f(&self, cx: &Ctx, a: &SublayerActs, u: &[f32], enc: Option<&[f32]>) -> Range<usize> {
        match (&self.f, &a.f) {
            (Function::Attention(at), FunctionActs::Attention(aa)) => {
                at.forward(cx, aa, u, enc, self.site + 1);
                aa.out.clone()
            }
            (Function::Mlp(m), FunctionActs::Mlp(ma)) => {
                m.forward(cx, ma, u);
                ma.out.clone()
            }
            _ => unreachable!("activation layout matches the function"),
        }
    }

    pub fn forward(&self, cx: &Ctx, a: &SublayerActs, x: &[f32], enc: Option<&[f32]>) {
        let c = self.norm_width();
        let n = cx.n();
        let p = cx.drop_p(self.dropout);
        let u: &[f32] = match self.position {
            NormPosition::Pre => self.norm.forward(cx, &a.norm, x, c),
            NormPosition::Post => x,
        };
        let out = self.run_f(cx, a, u, enc);
        let mut branch = cx.r.get(&out, n * c);
        if p > 0.0 {
            let d = cx.r.mut_(a.branch_drop.as_ref().unwrap(), n * c);
            dropout_forward_at(d, branch, p, cx.seed(self.site), cx.dropout_first(c));
            branch = d;
        }
        let sum = cx.r.mut_(&a.sum, n * c);
        if self.residual {
            residual_forward(sum, x, branch);
        } else {
            sum.copy_from_slice(branch);
        }
        if self.position == NormPosition::Post {
            self.norm.forward(cx, &a.norm, sum, c);
        }
    }

    /// d_res (N, C): on entry ∂L/∂output, on exit ∂L/∂x. For cross-attention `enc` carries the
    /// encoder output and the buffer its gradient accumulates into.
    pub fn backward(
        &self,
        cx: &Ctx,
        a: &SublayerActs,
        d_res: &mut [f32],
        x: &[f32],
        enc: Option<(&[f32], &mut [f32])>,
    ) {
        let (c, n, s) = (self.norm_width(), cx.n(), cx.scratch);
        let d_fin = cx.r.mut_(&s.d_fin, n * c);
        match self.position {
            NormPosition::Pre => {
                let d_branch = self.dropout_backward(cx, d_res);
                self.f_backward(cx, a, d_fin, d_branch, cx.r.get(&a.norm.out, n * c), enc);
                // ∂L/∂x = ∂L/∂output (the identity path, already in d_res) + the norm path.
                if !self.residual {
                    // No identity path: only the norm path (d_branch, read above, is done).
                    d_res.fill(0.0);
                }
                self.norm.backward(cx, &a.norm, d_res, d_fin, x, c);
            }
            NormPosition::Post => {
                let d_sum = cx.r.mut_(&s.d_sum, n * c);
                d_sum.fill(0.0);
                self.norm.backward(cx, &a.norm, d_sum, d_res, cx.r.get(&a.sum, n * c), c);
                let d_branch = self.dropout_backward(cx, d_sum);
                self.f_backward(cx, a, d_fin, d_branch, x, enc);
                // ∂L/∂x = ∂L/∂sum (identity path) + f's input gradient.
                if self.residual {
                    residual_forward(d_res, d_sum, d_fin);
                } else {
                    d_res.copy_from_slice(&d_fin[..n * c]);
                }
            }
        }
    }

    /// The branch gradient: `d` through the branch's dropout (or `d` itself without dropout).
    fn dropout_backward<'a>(&self, cx: &Ctx<'a>, d: &'a [f32]) -> &'a [f32] {
        let p = cx.drop_p(self.dropout);
        if p == 0.0 {
            return d;
        }
        let out = cx.r.mut_(&cx.scratch.d_branch, d.len());
        let width = d.len() / cx.n().max(1);
        dropout_backward_at(out, d, p, cx.seed(self.site), cx.dropout_first(width));
        out
    }

    fn f_backward(
        &self,
        cx: &Ctx,
        a: &SublayerActs,
        d_fin: &mut [f32],
        d_branch: &[f32],
        u: &[f32],
        enc: Option<(&[f32], &mut [f32])>,
    ) {
        match (&self.f, &a.f) {
            (Function::Attention(at), FunctionActs::Attention(aa)) => {
                at.backward(cx, aa, d_fin, d_branch, u, enc, self.site + 1)
            }
            (Function::Mlp(m), FunctionActs::Mlp(ma)) => m.backward(cx, ma, d_fin, d_branch, u),
            _ => unreachable!("activation layout matches the function"),
        }
    }
}

/// Read-only views for diagnostics (see `probe.rs`).
impl Sublayer {
    /// The sublayer's activation tensors in forward order, named `{block}.{norm|f}.{what}`.
    pub fn activations<'a>(
        &self,
        v: &View<'a>,
        a: &SublayerActs,
        block: &str,
        layer: usize,
        (norm, f): (&str, &str),
        out: &mut Vec<ActTensor<'a>>,
    ) {
        let len = v.n() * self.norm_width();
        let l = Some(layer);
        let push_norm = |out: &mut Vec<ActTensor<'a>>| {
            v.push(out, format!("{block}.{norm}.out"), l, ActKind::NormOut, &a.norm.out, len)
        };
        if self.position == NormPosition::Pre {
            push_norm(out);
        }
        let prefix = format!("{block}.{f}");
        match (&self.f, &a.f) {
            (Function::Attention(at), FunctionActs::Attention(aa)) => at.activations(v, aa, &prefix, layer, out),
            (Function::Mlp(m), FunctionActs::Mlp(ma)) => m.activations(v, ma, &prefix, layer, out),
            _ => unreachable!("activation layout matches the function"),
        }
        if let (Some(r), true) = (&a.branch_drop, v.train && self.dropout > 0.0) {
            v.push(out, format!("{prefix}.drop"), l, ActKind::Dropout, r, len);
        }
        v.push(out, format!("{prefix}.residual"), l, ActKind::Residual, &a.sum, len);
        if self.position == NormPosition::Post {
            push_norm(out);
        }
    }

    /// A feed-forward sublayer's pre-activation, its width and the hidden width F.
    pub fn ffn_pre<'a>(&self, v: &View<'a>, a: &SublayerActs) -> Option<(&'a [f32], usize, usize)> {
        match (&self.f, &a.f) {
            (Function::Mlp(m), FunctionActs::Mlp(ma)) => Some(m.pre_activation(v, ma)),
            _ => None,
        }
    }

    /// An attention sublayer's probabilities.
    pub fn attention_probs<'a>(&self, v: &View<'a>, a: &SublayerActs) -> Option<AttnProbs<'a>> {
        match (&self.f, &a.f) {
            (Function::Attention(at), FunctionActs::Attention(aa)) => Some(at.probs(v, aa)),
            _ => None,
        }
    }
}
