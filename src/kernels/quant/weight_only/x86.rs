//! The AVX-512 and AVX2 tile kernels of the weight-only matmul (see the parent module): per
//! input column, one panel column widened to f32 — int8 codes sign-extended and converted
//! (`vpmovsxbd`, `vcvtdq2ps`), bf16 values zero-extended and shifted into the high half
//! (`vpmovzxwd`, `vpslld 16`, exact) — then one FMA per activation row with that row's value
//! broadcast. Lane j of a panel's register (AVX2: of its pair of registers) is output row j, so
//! each lane runs the scalar reference's `fma` chain in column order.

use super::{Tile, TileFn, PANEL, TILE_OUT};
use std::arch::x86_64::*;

/// 16 weights of one panel column (`src` its first byte) as f32.
#[inline(always)]
unsafe fn widen16_avx512<const BF16: bool>(src: *const u8) -> __m512 {
    if BF16 {
        let v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(src as *const __m256i));
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v))
    } else {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(src as *const __m128i)))
    }
}

/// 8 weights of one panel column (`src` the first byte of the eight) as f32.
#[inline(always)]
unsafe fn widen8_avx2<const BF16: bool>(src: *const u8) -> __m256 {
    if BF16 {
        let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(src as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v))
    } else {
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(src as *const __m128i)))
    }
}

/// AVX-512: P panels (one zmm each) × NX activation rows.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw")]
unsafe fn tile_avx512<const BF16: bool, const P: usize, const NX: usize>(t: &Tile, out: &mut [f32; TILE_OUT]) {
    let eb = if BF16 { 2 } else { 1 };
    let mut acc = [[_mm512_setzero_ps(); P]; NX];
    for k in 0..t.cols {
        let mut w = [_mm512_setzero_ps(); P];
        for (p, w) in w.iter_mut().enumerate() {
            *w = widen16_avx512::<BF16>(t.w[p].add(k * PANEL * eb));
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            let xb = _mm512_set1_ps(*t.x[i].add(k));
            for (a, w) in acc.iter_mut().zip(&w) {
                *a = _mm512_fmadd_ps(*w, xb, *a);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        for (p, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add((i * P + p) * PANEL), *a);
        }
    }
}

/// AVX2: P panels (two ymm each: rows 0..8 and 8..16) × NX activation rows.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const BF16: bool, const P: usize, const NX: usize>(t: &Tile, out: &mut [f32; TILE_OUT]) {
    let eb = if BF16 { 2 } else { 1 };
    let mut acc = [[[_mm256_setzero_ps(); 2]; P]; NX];
    for k in 0..t.cols {
        let mut w = [[_mm256_setzero_ps(); 2]; P];
        for (p, w) in w.iter_mut().enumerate() {
            let src = t.w[p].add(k * PANEL * eb);
            for (h, w) in w.iter_mut().enumerate() {
                *w = widen8_avx2::<BF16>(src.add(8 * h * eb));
            }
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            let xb = _mm256_set1_ps(*t.x[i].add(k));
            for (a, w) in acc.iter_mut().zip(&w) {
                a[0] = _mm256_fmadd_ps(w[0], xb, a[0]);
                a[1] = _mm256_fmadd_ps(w[1], xb, a[1]);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        for (p, a) in acc.iter().enumerate() {
            let o = out.as_mut_ptr().add((i * P + p) * PANEL);
            _mm256_storeu_ps(o, a[0]);
            _mm256_storeu_ps(o.add(8), a[1]);
        }
    }
}

/// The GEMM tables: entry nx − 1 runs nx activation rows.
macro_rules! gemm_table {
    ($tile:ident, $bf16:literal, $p:literal, [$($nx:literal),*]) => {
        [$($tile::<$bf16, $p, $nx> as TileFn),*]
    };
}

pub(super) const GEMV_AVX512_I8: TileFn = tile_avx512::<false, 4, 1>;
pub(super) const GEMV_AVX512_BF16: TileFn = tile_avx512::<true, 4, 1>;
pub(super) static GEMM_AVX512_I8: [TileFn; 12] =
    gemm_table!(tile_avx512, false, 2, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
pub(super) static GEMM_AVX512_BF16: [TileFn; 12] =
    gemm_table!(tile_avx512, true, 2, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);

pub(super) const GEMV_AVX2_I8: TileFn = tile_avx2::<false, 4, 1>;
pub(super) const GEMV_AVX2_BF16: TileFn = tile_avx2::<true, 4, 1>;
pub(super) static GEMM_AVX2_I8: [TileFn; 6] = gemm_table!(tile_avx2, false, 1, [1, 2, 3, 4, 5, 6]);
pub(super) static GEMM_AVX2_BF16: [TileFn; 6] = gemm_table!(tile_avx2, true, 1, [1, 2, 3, 4, 5, 6]);
