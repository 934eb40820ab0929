//! The AVX2 kernels: `_mm256_maddubs_epi16` and `_mm256_madd_epi16`, row kernels and register
//! tiles (see the parent module).

use super::x86::*;
use super::*;
use std::arch::x86_64::*;

/// i32 lanes of Σ w·x over 32 int8 pairs (|x| · sign(w, x); values in −127..=127).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn madd_i8_avx2(w: __m256i, x: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(w, x));
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_avx2(w: *const i8, x: *const i8, len: usize) -> i32 {
    let mut acc = _mm256_setzero_si256();
    let mut i = 0;
    while i + 32 <= len {
        let wv = _mm256_loadu_si256(w.add(i) as *const __m256i);
        let xv = _mm256_loadu_si256(x.add(i) as *const __m256i);
        acc = _mm256_add_epi32(acc, madd_i8_avx2(wv, xv));
        i += 32;
    }
    hsum256(acc) + dot_i8_scalar(w.add(i), x.add(i), len - i)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot32_avx2(w: *const i8, x: *const i8) -> i32 {
    let wv = _mm256_loadu_si256(w as *const __m256i);
    let xv = _mm256_loadu_si256(x as *const __m256i);
    hsum256(madd_i8_avx2(wv, xv))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_q4_avx2(p: *const u8, x: *const i8, nsub: usize) -> i32 {
    let mut acc = _mm256_setzero_si256();
    for s in 0..nsub {
        let q = unpack32(p.add(s * QK / 2));
        let xv = _mm256_loadu_si256(x.add(s * QK) as *const __m256i);
        // codes 0..=15 · |x| ≤ 127: pair sums ≤ 3810, no i16 saturation.
        let pr = _mm256_maddubs_epi16(q, xv);
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pr, _mm256_set1_epi16(1)));
    }
    hsum256(acc)
}

// SAFETY (all row kernels below): the `*_row!` macros assert every slice length before the
// loops, so every pointer read stays inside its slice; `kernels` hands these functions out
// only when `Isa::available` found their CPU features.

#[target_feature(enable = "avx2")]
pub(super) unsafe fn q8_0_avx2(w: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    q8_0_row!(w, xq, xd, dot32_avx2)
}

#[target_feature(enable = "avx2")]
pub(super) unsafe fn q4_0_avx2(w: &[u8], xq: &[i8], xd: &[f32], xs: &[i32]) -> f32 {
    q4_0_row!(w, xq, xd, xs, dot_q4_avx2)
}

#[target_feature(enable = "avx2")]
pub(super) unsafe fn int8_avx2(w: &[i8], x: &[i8]) -> i32 {
    assert_eq!(w.len(), x.len(), "int8 row: lengths");
    dot_i8_avx2(w.as_ptr(), x.as_ptr(), w.len())
}

#[target_feature(enable = "avx2")]
pub(super) unsafe fn int4_avx2(
    w: &[u8],
    ws: &[f32],
    wz: &[u8],
    xq: &[i8],
    xd: &[f32],
    xs: &[i32],
    group: usize,
) -> f32 {
    int4_row!(w, ws, wz, xq, xd, xs, group, dot_q4_avx2)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot8_avx2(w: __m256i, x: __m256i) -> __m256i {
    madd_i8_avx2(w, x)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot4_avx2(acc: __m256i, q: __m256i, x: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(1)))
}

tile_kernel!(tile_avx2, "avx2,f16c", dot8_avx2, dot4_avx2);

#[target_feature(enable = "avx2,f16c")]
unsafe fn tile_avx2_all<const K: usize, const NX: usize>(a: &TileArgs, out: &mut [f32; 8]) {
    _mm256_storeu_ps(out.as_mut_ptr(), tile_avx2::<K, NX>(a, 0, _mm256_setzero_ps()));
}

pub(super) const TILES_AVX2: [[TileFn; 2]; 3] = [
    [tile_avx2_all::<TILE_Q8_0, 1>, tile_avx2_all::<TILE_Q8_0, 2>],
    [tile_avx2_all::<TILE_Q4_0, 1>, tile_avx2_all::<TILE_Q4_0, 2>],
    [tile_avx2_all::<TILE_INT4, 1>, tile_avx2_all::<TILE_INT4, 2>],
];
