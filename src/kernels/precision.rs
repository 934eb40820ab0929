//! Reduced-precision numerics for mixed-precision training: rounding `f32` values to the
//! nearest bfloat16 or IEEE half (round to nearest, ties to even) while keeping them in `f32`
//! storage, and the linear layer as autocast computes it.
//!
//! This is emulation. On a CPU without bf16/f16 arithmetic (AVX2 + FMA only) the products still
//! run on the f32 GEMM; what changes is every number that enters or leaves it, which is exactly
//! what autocast does on a GPU: both operands are rounded to the low-precision format, products
//! are accumulated in f32, and the result is rounded once. A rounded value is exactly
//! representable in the format, so an f32 GEMM over rounded inputs computes the same exact
//! products a bf16/f16 tensor core does (only the order of the f32 additions may differ).
//!
//! The rounding loops are branch-free integer/float selects that LLVM vectorises 8-wide with
//! AVX2; `tests/mixed_precision.rs` checks them bit for bit against the `half` crate.

use super::gemm::{bf16_gemm_in_use, sgemm, sgemm_bf16, Threads};
use super::COLUMN_CHUNK;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Elements per parallel task of the element-wise loops.
const CHUNK: usize = 8192;

/// The number format of matrix products during training (`train.precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    Fp32,
    /// bfloat16: 8 exponent bits (f32's range), 8 significant bits.
    Bf16,
    /// IEEE half: 5 exponent bits (largest finite 65504), 11 significant bits.
    F16,
}

impl Precision {
    /// Whether matrix products run on rounded operands.
    pub fn is_reduced(self) -> bool {
        self != Precision::Fp32
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// `x` rounded to this format (returned as f32); fp32 returns `x`.
    #[inline(always)]
    pub fn round(self, x: f32) -> f32 {
        match self {
            Precision::Fp32 => x,
            Precision::Bf16 => round_bf16(x),
            Precision::F16 => round_f16(x),
        }
    }
}

/// Quiet NaN returned for any NaN input (the sign is kept).
const QNAN: u32 = 0x7FC0_0000;
const EXP_INF: u32 = 0x7F80_0000;
/// 2^-14, the smallest normal half.
const F16_MIN_NORMAL: u32 = 0x3880_0000;
/// 65504, the largest finite half.
const F16_MAX: u32 = 0x477F_E000;

/// The bfloat16 nearest to `x` (ties to even), as f32: the low 16 bits are rounded away.
/// Infinities stay infinite, values past bf16's largest finite number become infinite, NaN
/// stays NaN, and subnormals round like any other value (bf16 has f32's exponent range).
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    let bits = x.to_bits();
    let abs = bits & 0x7FFF_FFFF;
    // Adding 0x7FFF (+1 when the kept part is odd) carries into bit 16 exactly when the
    // dropped half is above one half, or equal to it with an odd kept part.
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) & 0xFFFF_0000;
    let out = if abs > EXP_INF { QNAN | (bits & 0x8000_0000) } else { rounded };
    f32::from_bits(out)
}

/// The IEEE half nearest to `x` (ties to even), as f32. Values from 65520 up become infinite
/// (65504 is the largest half; 65520 is the midpoint to the next power of two, which rounds to
/// even, that is up); below 2^-14 the spacing is the fixed subnormal step 2^-24.
#[inline(always)]
pub fn round_f16(x: f32) -> f32 {
    let bits = x.to_bits();
    let sign = bits & 0x8000_0000;
    let abs = bits & 0x7FFF_FFFF;
    // Normal range: keep 10 of f32's 23 fraction bits, as round_bf16 keeps 7.
    let normal = (abs + 0x0FFF + ((abs >> 13) & 1)) & 0xFFFF_E000;
    let normal = if normal > F16_MAX { EXP_INF } else { normal };
    // Subnormal range: adding 0.5 puts |x| < 2^-14 in [0.5, 1), where f32's spacing is 2^-24,
    // so the f32 addition itself rounds to the subnormal grid (ties to even); subtracting 0.5
    // is then exact.
    let sub = ((f32::from_bits(abs) + 0.5) - 0.5).to_bits();
    let r = if abs < F16_MIN_NORMAL { sub } else { normal };
    let r = if abs > EXP_INF { QNAN } else { r };
    f32::from_bits(r | sign)
}

/// xs (len) ← round(xs) in `p` (nothing for fp32).
pub fn round_inplace(xs: &mut [f32], p: Precision) {
    let _s = crate::profile::scope(crate::profile::Op::Round);
    match p {
        Precision::Fp32 => {}
        Precision::Bf16 => xs.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|x| *x = round_bf16(*x))),
        Precision::F16 => xs.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|x| *x = round_f16(*x))),
    }
}

/// dst (len) = round(src (len)) in `p` (a copy for fp32).
pub fn round_into(dst: &mut [f32], src: &[f32], p: Precision) {
    let _s = crate::profile::scope(crate::profile::Op::Round);
    let dst = &mut dst[..src.len()];
    let chunks = dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK));
    match p {
        Precision::Fp32 => chunks.for_each(|(d, s)| d.copy_from_slice(s)),
        Precision::Bf16 => chunks.for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &s)| *d = round_bf16(s))),
        Precision::F16 => chunks.for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &s)| *d = round_f16(s))),
    }
}

/// dst (len) += round(src (len)) in `p`: a low-precision gradient contribution accumulated into
/// an f32 gradient.
fn add_rounded(dst: &mut [f32], src: &[f32], p: Precision) {
    let _s = crate::profile::scope(crate::profile::Op::Round);
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &s)| *d += p.round(s)));
}

/// Loss-scaler support: grads (len) ← grads · `inv_scale`. Returns true when every gradient
/// was finite before scaling (GradScaler's `found_inf` is the negation). With a power-of-two
/// scale the multiplication is exact.
pub fn unscale_and_check(grads: &mut [f32], inv_scale: f32) -> bool {
    let _s = crate::profile::scope(crate::profile::Op::ClipGrad);
    grads
        .par_chunks_mut(CHUNK)
        .map(|c| {
            let mut finite = true;
            for g in c.iter_mut() {
                finite &= g.is_finite();
                *g *= inv_scale;
            }
            finite
        })
        .reduce(|| true, |a, b| a && b)
}

/// Length of the scratch [`matmul_backward_lowp`] needs: round(inp) (N, C), the weight
/// gradient's contribution (OC, C) and the bias gradient's (OC).
pub fn matmul_lowp_scratch_len(n: usize, c: usize, oc: usize) -> usize {
    n * c + oc * c + oc
}

/// Autocast's linear layer: out (N, OC) = round(round(inp) · weightᵀ + bias), with `weight`
/// (OC, C) and `bias` (OC) already rounded by the caller (the model keeps a rounded copy of its
/// weights) and `inp` (N, C) rounded into `inp_low` (≥ N·C). Products accumulate in f32; the
/// output is rounded once, so in f16 an output beyond 65504 becomes infinite.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_lowp(
    out: &mut [f32],
    inp_low: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    c: usize,
    oc: usize,
    p: Precision,
) {
    let inp_low = &mut inp_low[..n * c];
    round_into(inp_low, &inp[..n * c], p);
    if p == Precision::Bf16 && bf16_gemm_in_use() {
        let _p = crate::profile::scope(crate::profile::Op::MatmulFwd);
        let beta = match bias {
            Some(b) => {
                out[..n * oc].par_chunks_mut(oc).for_each(|row| row.copy_from_slice(b));
                1.0
            }
            None => 0.0,
        };
        sgemm_bf16(false, true, n, oc, c, 1.0, inp_low, c, weight, c, beta, out, oc, Threads::Pool);
    } else {
        super::matmul::matmul_forward(out, inp_low, weight, bias, n, c, oc);
    }
    round_inplace(&mut out[..n * oc], p);
}

/// Backward of [`matmul_forward_lowp`], given dout (N, OC) already rounded by the caller (it is
/// the gradient of a low-precision tensor):
/// dinp (N, C) = round(dout · weight) (overwritten);
/// dweight (OC, C) += round(doutᵀ · round(inp));
/// dbias (OC) += round(Σ_n dout).
/// Each contribution is rounded before it joins the f32 gradient, as autocast's cast back to the
/// f32 master weight does. `scratch` has [`matmul_lowp_scratch_len`] elements.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_lowp(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    n: usize,
    c: usize,
    oc: usize,
    p: Precision,
    scratch: &mut [f32],
) {
    let (inp_low, rest) = scratch.split_at_mut(n * c);
    let (dw, rest) = rest.split_at_mut(oc * c);
    let db = &mut rest[..oc];
    round_into(inp_low, &inp[..n * c], p);
    {
        let _p = crate::profile::scope(crate::profile::Op::MatmulBwd);
        let gemm = if p == Precision::Bf16 && bf16_gemm_in_use() { sgemm_bf16 } else { sgemm };
        gemm(false, false, n, c, oc, 1.0, dout, oc, weight, c, 0.0, dinp, c, Threads::Pool);
        gemm(true, false, oc, c, n, 1.0, dout, oc, inp_low, c, 0.0, dw, c, Threads::Pool);
    }
    round_inplace(&mut dinp[..n * c], p);
    add_rounded(dweight, dw, p);
    if let Some(dbias) = dbias {
        // Column-parallel sum over rows in a fixed order, as matmul_backward does.
        db.par_chunks_mut(COLUMN_CHUNK).enumerate().for_each(|(j, db)| {
            let c0 = j * COLUMN_CHUNK;
            db.fill(0.0);
            for row in 0..n {
                let d = &dout[row * oc + c0..row * oc + c0 + db.len()];
                db.iter_mut().zip(d).for_each(|(b, d)| *b += d);
            }
        });
        add_rounded(dbias, db, p);
    }
}
