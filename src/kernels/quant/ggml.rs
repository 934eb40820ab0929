//! The GGML block formats Q8_0 and Q4_0, bit-exact to llama.cpp's `ggml-quants.c`
//! (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`, `dequantize_row_q8_0`,
//! `dequantize_row_q4_0`) and to gguf-py's `gguf.quants` (checked against its output by
//! `tests/quant_kernels.rs` on fixtures written by `scripts/make_quant_fixtures.py`).
//!
//! Both formats cut a row into blocks of [`QK`] = 32 values; a block starts with its scale `d` as
//! an IEEE half float (2 bytes, little-endian), then the quantized values:
//!
//! - Q8_0, [`Q8_0_BYTES`] = 34 bytes: `d = amax / 127`, `q = roundf(x / d)` (round half away from
//!   zero, computed as `x · (1/d)` in f32) as 32 × i8; value `j` is `q[j] · d`.
//! - Q4_0, [`Q4_0_BYTES`] = 18 bytes: `d = max / -8`, where `max` is the value of largest magnitude
//!   with its sign (the first one on a tie), `q = min(15, trunc(x · (1/d) + 8.5))` in 0..=15;
//!   16 bytes follow, byte `j` holding value `j` in its low nibble and value `j + 16` in its high
//!   nibble; value `j` is `(q[j] − 8) · d`.
//!
//! In both, `1/d` is taken from the f32 `d` before it is rounded to f16 (as ggml does), and an
//! all-zero block has `d = 0` and all-zero (Q8_0) or all-8 (Q4_0) codes.

use half::f16;

/// Values per block in Q8_0 and Q4_0.
pub const QK: usize = 32;
/// Bytes per Q8_0 block: f16 scale + 32 × i8.
pub const Q8_0_BYTES: usize = 2 + QK;
/// Bytes per Q4_0 block: f16 scale + 16 bytes of nibbles.
pub const Q4_0_BYTES: usize = 2 + QK / 2;

/// The f16 scale at the start of a block, as f32.
#[inline(always)]
pub(crate) fn block_scale(block: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32()
}

/// The f16 bytes of `d` (round to nearest even, as `GGML_FP32_TO_FP16`).
#[inline(always)]
fn scale_bytes(d: f32) -> [u8; 2] {
    f16::from_f32(d).to_bits().to_le_bytes()
}

/// Q8_0 codes of one block and its f32 scale `d` (before f16 rounding): `q = roundf(x · (1/d))`.
#[inline(always)]
pub(crate) fn q8_block(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, v) in q.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    d
}

/// y (k/32 · 34 bytes) = Q8_0 blocks of x (k), k a multiple of 32.
pub fn quantize_row_q8_0(x: &[f32], y: &mut [u8]) {
    assert!(x.len().is_multiple_of(QK), "quantize_row_q8_0: length {} is not a multiple of {QK}", x.len());
    assert_eq!(y.len(), x.len() / QK * Q8_0_BYTES, "quantize_row_q8_0: output length");
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(Q8_0_BYTES)) {
        let mut q = [0i8; QK];
        let d = q8_block(xb, &mut q);
        yb[..2].copy_from_slice(&scale_bytes(d));
        for (o, q) in yb[2..].iter_mut().zip(q) {
            *o = q as u8;
        }
    }
}

/// y (k) = values of the Q8_0 blocks x (k/32 · 34 bytes).
pub fn dequantize_row_q8_0(x: &[u8], y: &mut [f32]) {
    assert!(y.len().is_multiple_of(QK) && x.len() == y.len() / QK * Q8_0_BYTES, "dequantize_row_q8_0: lengths");
    for (xb, yb) in x.chunks_exact(Q8_0_BYTES).zip(y.chunks_exact_mut(QK)) {
        let d = block_scale(xb);
        for (o, q) in yb.iter_mut().zip(&xb[2..]) {
            *o = (*q as i8) as f32 * d;
        }
    }
}

/// y (k/32 · 18 bytes) = Q4_0 blocks of x (k), k a multiple of 32.
pub fn quantize_row_q4_0(x: &[f32], y: &mut [u8]) {
    assert!(x.len().is_multiple_of(QK), "quantize_row_q4_0: length {} is not a multiple of {QK}", x.len());
    assert_eq!(y.len(), x.len() / QK * Q4_0_BYTES, "quantize_row_q4_0: output length");
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(Q4_0_BYTES)) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb[..2].copy_from_slice(&scale_bytes(d));
        let code = |v: f32| ((v * id + 8.5).trunc() as i32).clamp(0, 15) as u8;
        for j in 0..QK / 2 {
            yb[2 + j] = code(xb[j]) | (code(xb[j + QK / 2]) << 4);
        }
    }
}

/// y (k) = values of the Q4_0 blocks x (k/32 · 18 bytes).
pub fn dequantize_row_q4_0(x: &[u8], y: &mut [f32]) {
    assert!(y.len().is_multiple_of(QK) && x.len() == y.len() / QK * Q4_0_BYTES, "dequantize_row_q4_0: lengths");
    for (xb, yb) in x.chunks_exact(Q4_0_BYTES).zip(y.chunks_exact_mut(QK)) {
        let d = block_scale(xb);
        for j in 0..QK / 2 {
            yb[j] = ((xb[2 + j] & 0x0F) as i32 - 8) as f32 * d;
            yb[j + QK / 2] = ((xb[2 + j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}
