//! The AVX-512 and AVX2 tile kernels of the int8 weight-only matmul (see the parent module):
//! per input column, one 16-byte panel column sign-extended to i32 and converted to f32
//! (`vpmovsxbd`, `vcvtdq2ps`), then one FMA per activation row with that row's value broadcast.
//! Lane j of a panel's register (AVX2: of its pair of registers) is output row j, so each lane
//! runs the scalar reference's `fma` chain in column order.

use super::{Tile, TileFn, PANEL, TILE_OUT};
use std::arch::x86_64::*;

/// AVX-512: P panels (one zmm each) × NX activation rows.
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn tile_avx512<const P: usize, const NX: usize>(t: &Tile, out: &mut [f32; TILE_OUT]) {
    let mut acc = [[_mm512_setzero_ps(); P]; NX];
    for k in 0..t.cols {
        let mut w = [_mm512_setzero_ps(); P];
        for (p, w) in w.iter_mut().enumerate() {
            let codes = _mm_loadu_si128(t.w[p].add(k * PANEL) as *const __m128i);
            *w = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(codes));
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
unsafe fn tile_avx2<const P: usize, const NX: usize>(t: &Tile, out: &mut [f32; TILE_OUT]) {
    let mut acc = [[[_mm256_setzero_ps(); 2]; P]; NX];
    for k in 0..t.cols {
        let mut w = [[_mm256_setzero_ps(); 2]; P];
        for (p, w) in w.iter_mut().enumerate() {
            let src = t.w[p].add(k * PANEL);
            for (h, w) in w.iter_mut().enumerate() {
                let codes = _mm_loadl_epi64(src.add(8 * h) as *const __m128i);
                *w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes));
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

pub(super) const GEMV_AVX512: TileFn = tile_avx512::<4, 1>;
pub(super) static GEMM_AVX512: [TileFn; 12] = [
    tile_avx512::<2, 1>,
    tile_avx512::<2, 2>,
    tile_avx512::<2, 3>,
    tile_avx512::<2, 4>,
    tile_avx512::<2, 5>,
    tile_avx512::<2, 6>,
    tile_avx512::<2, 7>,
    tile_avx512::<2, 8>,
    tile_avx512::<2, 9>,
    tile_avx512::<2, 10>,
    tile_avx512::<2, 11>,
    tile_avx512::<2, 12>,
];

pub(super) const GEMV_AVX2: TileFn = tile_avx2::<4, 1>;
pub(super) static GEMM_AVX2: [TileFn; 6] =
    [tile_avx2::<1, 1>, tile_avx2::<1, 2>, tile_avx2::<1, 3>, tile_avx2::<1, 4>, tile_avx2::<1, 5>, tile_avx2::<1, 6>];
