//! Element-wise activations and SwiGLU, with PyTorch's conventions:
//! `relu(x) = max(x, 0)` (gradient 0 at 0); `leaky_relu(x) = x` for `x > 0`, `slope·x` otherwise;
//! `gelu_tanh` is GPT-2's tanh approximation (the [`super::gelu`] kernel);
//! `gelu_erf(x) = x·Φ(x) = 0.5·x·(1 + erf(x/√2))` (exact GELU, `torch.nn.GELU()`), with
//! derivative `Φ(x) + x·φ(x)`; `silu(x) = x·σ(x)`, derivative `σ(x)·(1 + x·(1 - σ(x)))`.
//! SwiGLU (llama's FFN) splits each input row `(2H)` into `[gate | up]` and gives
//! `out = silu(gate) ⊙ up`, so `dgate = dout·up·silu'(gate)` and `dup = dout·silu(gate)`.
//! `erf` here is branch-free (both polynomial pieces are evaluated and one selected) so loops
//! over it vectorise; its accuracy is measured in tests/gradcheck_norms_act.rs.

use super::{gelu, math};
use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    /// Negative slope, applied for x ≤ 0 (PyTorch's default is 0.01).
    LeakyRelu(f32),
    /// GPT-2's tanh approximation, `nn.GELU(approximate='tanh')`.
    GeluTanh,
    /// Exact GELU through erf, `nn.GELU()`.
    GeluErf,
    Silu,
}

/// Below this |u| erf(u) is the odd polynomial `u·P(u²)`; from it on `1 - erfc(u)` with erfc
/// from the tail fit, which keeps erfc (and so Φ in the left tail) accurate relatively.
const ERF_SPLIT: f32 = 0.75;
/// erf(u)/u as a polynomial in u² on [0, 0.75²]: a weighted least-squares (Lawson) minimax fit
/// with coefficients rounded to f32 one at a time; max relative error 5.4e-8 before f32
/// evaluation. The constant term is one ulp below 2/√π (bits 0x3f906ebb): the fit's choice.
const ERF_SMALL: [f32; 6] =
    [f32::from_bits(0x3f90_6eba), -0.376_121_2, 0.112_764_16, -0.026_492_545, 0.004_425_632_3, -1.885_543e-4];
/// erfc(u)·e^(u²) = t·Q(t) with t = 1/(1 + u/2), Q a polynomial fitted the same way on
/// u ∈ [0.75, ∞); max relative error 7.7e-8 before f32 evaluation. Q(0) = 1/(2√π) gives the
/// asymptote erfc(u)·e^(u²) → 1/(u√π).
const ERFC_T_SCALE: f32 = 0.5;
const ERFC_TAIL: [f32; 9] = [
    0.282_094_78,
    0.282_099_43,
    0.246_647_27,
    0.179_042_62,
    0.064_329_98,
    0.069_147_18,
    -0.204_738_21,
    0.077_426_44,
    0.004_443_223,
];
const INV_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn poly<const K: usize>(coef: &[f32; K], x: f32) -> f32 {
    let mut p = coef[K - 1];
    for i in (0..K - 1).rev() {
        p = p.mul_add(x, coef[i]);
    }
    p
}

/// erf(u) for |u| < ERF_SPLIT.
#[inline(always)]
fn erf_small(u: f32) -> f32 {
    u * poly(&ERF_SMALL, u * u)
}

/// erfc(u) for u ≥ ERF_SPLIT, given `e = e^(-u²)`.
#[inline(always)]
fn erfc_tail(u: f32, e: f32) -> f32 {
    let t = 1.0 / ERFC_T_SCALE.mul_add(u, 1.0);
    t * poly(&ERFC_TAIL, t) * e
}

/// e^(-(hi + lo)) for the exact split `hi + lo` of a square: exp(-hi)·(1 - lo). Rounding x² to
/// f32 alone would cost a relative error of x²·2⁻²⁴ in the result, 3e-6 at x² = 50.
#[inline(always)]
fn exp_neg_split(hi: f32, lo: f32) -> f32 {
    math::exp(-hi) * (1.0 - lo)
}

/// erf(x) in f32, branch-free. Measured on a dense grid over [-6, 6] against an f64 reference
/// (tests/gradcheck_norms_act.rs): max absolute error 1.2e-7 (just past the split, where
/// erfc ≈ 0.25 carries math::exp's relative error), max relative error 1.6e-7 for |x| < 0.75.
/// `erf(±∞) = ±1`, NaN stays NaN.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    // erfc(4) = 1.5e-8 is below half an ulp of 1: clamping keeps ±∞ finite inside. A comparison,
    // not `min`, so NaN stays NaN.
    let a = x.abs();
    let a = if a > 4.0 { 4.0 } else { a };
    let sq = a * a;
    let sq_lo = a.mul_add(a, -sq);
    let small = erf_small(x);
    let large = (1.0 - erfc_tail(a, exp_neg_split(sq, sq_lo))).copysign(x);
    if a < ERF_SPLIT {
        small
    } else {
        large
    }
}

/// Beyond this |x|, e^(-x²/2) < 2e-37 is near the end of f32's normal range (where math::exp
/// saturates) and is taken as 0: Φ(x) = 0 or 1 and φ(x) = 0.
const NORMAL_TAIL_ZERO: f32 = 13.0;

/// (Φ(x), φ(x)): the standard normal CDF and density. Φ keeps its relative accuracy in the left
/// tail (computed as erfc/2, not 1 - something), so x·Φ(x) does too: the exact GELU's measured
/// relative error is below 5e-7 over [-13, 10].
#[inline(always)]
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    let u = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = u.abs();
    // Clamped by comparison (NaN stays NaN) so ±∞ does not reach the arithmetic below.
    let outside = x.abs() > NORMAL_TAIL_ZERO;
    let xc = if outside { NORMAL_TAIL_ZERO } else { x };
    // u² = x²/2 = (sq + sq_lo)/2 exactly, independent of the rounding of x/√2.
    let sq = xc * xc;
    let sq_lo = xc.mul_add(xc, -sq);
    let e = exp_neg_split(0.5 * sq, 0.5 * sq_lo);
    let e = if outside { 0.0 } else { e };
    let half_erfc = 0.5 * erfc_tail(a, e);
    let central = 0.5f32.mul_add(erf_small(u), 0.5);
    let tail = if x < 0.0 { half_erfc } else { 1.0 - half_erfc };
    let cdf = if a < ERF_SPLIT { central } else { tail };
    (cdf, e * INV_SQRT_2PI)
}

#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + math::exp(-x))
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

#[inline(always)]
fn silu_grad(x: f32) -> f32 {
    let s = sigmoid(x);
    s * x.mul_add(1.0 - s, 1.0)
}

#[inline(always)]
fn map_chunks(out: &mut [f32], inp: &[f32], f: impl Fn(f32) -> f32 + Sync) {
    out.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK)).for_each(|(o, x)| {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = f(x);
        }
    });
}

#[inline(always)]
fn map_grad_chunks(dinp: &mut [f32], inp: &[f32], dout: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    dinp.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK).zip(dout.par_chunks(CHUNK))).for_each(|(di, (x, d))| {
        for ((di, &x), &d) in di.iter_mut().zip(x).zip(d) {
            *di = f(x, d);
        }
    });
}

/// out (len) = act(inp (len))
pub fn activation_forward(act: Activation, out: &mut [f32], inp: &[f32]) {
    assert_eq!(out.len(), inp.len(), "activation_forward: length mismatch");
    match act {
        // `x < 0` rather than `max`: NaN propagates as in PyTorch.
        Activation::Relu => map_chunks(out, inp, |x| if x < 0.0 { 0.0 } else { x }),
        Activation::LeakyRelu(slope) => map_chunks(out, inp, |x| if x > 0.0 { x } else { x * slope }),
        Activation::GeluTanh => gelu::gelu_forward(out, inp),
        Activation::GeluErf => map_chunks(out, inp, |x| x * normal_cdf_pdf(x).0),
        Activation::Silu => map_chunks(out, inp, silu),
    }
}

/// dinp (len) = act'(inp (len)) · dout (len), overwritten.
pub fn activation_backward(act: Activation, dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    assert!(dinp.len() == inp.len() && dout.len() == inp.len(), "activation_backward: length mismatch");
    match act {
        // PyTorch's threshold_backward: zero where x <= 0, so the gradient at 0 is 0.
        Activation::Relu => map_grad_chunks(dinp, inp, dout, |x, d| if x <= 0.0 { 0.0 } else { d }),
        Activation::LeakyRelu(slope) => map_grad_chunks(dinp, inp, dout, |x, d| if x > 0.0 { d } else { d * slope }),
        Activation::GeluTanh => gelu::gelu_backward(dinp, inp, dout),
        Activation::GeluErf => map_grad_chunks(dinp, inp, dout, |x, d| {
            let (cdf, pdf) = normal_cdf_pdf(x);
            x.mul_add(pdf, cdf) * d
        }),
        Activation::Silu => map_grad_chunks(dinp, inp, dout, |x, d| silu_grad(x) * d),
    }
}

/// Rows per parallel task for SwiGLU, about CHUNK output elements.
fn swiglu_rows_per_task(h: usize) -> usize {
    (CHUNK / h.max(1)).max(1)
}

/// out (N, H) = silu(gate) ⊙ up, where inp (N, 2H) holds [gate | up] in each row.
pub fn swiglu_forward(out: &mut [f32], inp: &[f32], h: usize) {
    assert!(h > 0 && out.len().is_multiple_of(h) && inp.len() == 2 * out.len(), "swiglu_forward: shape mismatch");
    let rows = swiglu_rows_per_task(h);
    out.par_chunks_mut(rows * h).zip(inp.par_chunks(rows * 2 * h)).for_each(|(o, x)| {
        for (o, x) in o.chunks_exact_mut(h).zip(x.chunks_exact(2 * h)) {
            let (gate, up) = x.split_at(h);
            for i in 0..h {
                o[i] = silu(gate[i]) * up[i];
            }
        }
    });
}

/// dinp (N, 2H) = [dgate | dup], overwritten, from inp (N, 2H) = [gate | up] and dout (N, H).
pub fn swiglu_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32], h: usize) {
    assert!(
        h > 0 && dout.len().is_multiple_of(h) && inp.len() == 2 * dout.len() && dinp.len() == inp.len(),
        "swiglu_backward: shape mismatch"
    );
    let rows = swiglu_rows_per_task(h);
    dinp.par_chunks_mut(rows * 2 * h).zip(inp.par_chunks(rows * 2 * h).zip(dout.par_chunks(rows * h))).for_each(
        |(di, (x, d))| {
            for (di, (x, d)) in di.chunks_exact_mut(2 * h).zip(x.chunks_exact(2 * h).zip(d.chunks_exact(h))) {
                let (gate, up) = x.split_at(h);
                let (dgate, dup) = di.split_at_mut(h);
                for i in 0..h {
                    let s = sigmoid(gate[i]);
                    dgate[i] = d[i] * up[i] * s * gate[i].mul_add(1.0 - s, 1.0);
                    dup[i] = d[i] * gate[i] * s;
                }
            }
        },
    );
}
