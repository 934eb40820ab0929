//! The AVX-512 VNNI kernels: `_mm512_dpbusd_epi32` / `_mm256_dpbusd_epi32`, row kernels,
//! register tiles (two blocks per 512-bit step for one x row) and the int8 4 × 4 tile (see
//! the parent module).

use super::x86::*;
use super::*;
use std::arch::x86_64::*;

/// Σ w·x over 32 int8 pairs in one `vpdpbusd` (256-bit, AVX512VL).
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot32_vnni(w: *const i8, x: *const i8) -> i32 {
    let wv = _mm256_loadu_si256(w as *const __m256i);
    let xv = _mm256_loadu_si256(x as *const __m256i);
    let acc = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(xv, xv), _mm256_sign_epi8(wv, xv));
    hsum256(acc)
}

/// Σ w·x over `len` int8 pairs, 64 per step; the tail through masked loads (masked-off bytes
/// are not read and count as zero).
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_i8_vnni(w: *const i8, x: *const i8, len: usize) -> i32 {
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn step(acc: __m512i, wv: __m512i, xv: __m512i) -> __m512i {
        let neg = _mm512_movepi8_mask(xv);
        let sw = _mm512_mask_sub_epi8(wv, neg, _mm512_setzero_si512(), wv);
        _mm512_dpbusd_epi32(acc, _mm512_abs_epi8(xv), sw)
    }
    let mut acc = _mm512_setzero_si512();
    let mut i = 0;
    while i + 64 <= len {
        let wv = _mm512_loadu_si512(w.add(i) as *const __m512i);
        let xv = _mm512_loadu_si512(x.add(i) as *const __m512i);
        acc = step(acc, wv, xv);
        i += 64;
    }
    if i < len {
        let m: __mmask64 = (1u64 << (len - i)) - 1;
        let wv = _mm512_maskz_loadu_epi8(m, w.add(i));
        let xv = _mm512_maskz_loadu_epi8(m, x.add(i));
        acc = step(acc, wv, xv);
    }
    _mm512_reduce_add_epi32(acc)
}

/// Σ q·x over `nsub` GGML-packed sub-blocks of 32, two per 512-bit step.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_q4_vnni(p: *const u8, x: *const i8, nsub: usize) -> i32 {
    let m = _mm256_set1_epi8(0x0F);
    let mut acc = _mm512_setzero_si512();
    let mut s = 0;
    while s + 2 <= nsub {
        let b = _mm256_loadu_si256(p.add(s * QK / 2) as *const __m256i);
        let lo = _mm256_and_si256(b, m);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(b), m);
        // [lo0, lo1, hi0, hi1] (128-bit lanes) → [lo0, hi0, lo1, hi1] = codes of 64 values.
        let q = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        let q = _mm512_shuffle_i64x2::<0b11_01_10_00>(q, q);
        let xv = _mm512_loadu_si512(x.add(s * QK) as *const __m512i);
        acc = _mm512_dpbusd_epi32(acc, q, xv);
        s += 2;
    }
    let mut sum = _mm512_reduce_add_epi32(acc);
    if s < nsub {
        let q = unpack32(p.add(s * QK / 2));
        let xv = _mm256_loadu_si256(x.add(s * QK) as *const __m256i);
        sum += hsum256(_mm256_dpbusd_epi32(_mm256_setzero_si256(), q, xv));
    }
    sum
}

// SAFETY (all row kernels below): the `*_row!` macros assert every slice length before the
// loops, so every pointer read stays inside its slice; `kernels` hands these functions out
// only when `Isa::available` found their CPU features.

#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn q8_0_vnni(w: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    q8_0_row!(w, xq, xd, dot32_vnni)
}

#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn q4_0_vnni(w: &[u8], xq: &[i8], xd: &[f32], xs: &[i32]) -> f32 {
    q4_0_row!(w, xq, xd, xs, dot_q4_vnni)
}

#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn int8_vnni(w: &[i8], x: &[i8]) -> i32 {
    assert_eq!(w.len(), x.len(), "int8 row: lengths");
    dot_i8_vnni(w.as_ptr(), x.as_ptr(), w.len())
}

#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn int4_vnni(
    w: &[u8],
    ws: &[f32],
    wz: &[u8],
    xq: &[i8],
    xd: &[f32],
    xs: &[i32],
    group: usize,
) -> f32 {
    int4_row!(w, ws, wz, xq, xd, xs, group, dot_q4_vnni)
}

#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot8_vnni(w: __m256i, x: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(x, x), _mm256_sign_epi8(w, x))
}

#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot4_vnni(acc: __m256i, q: __m256i, x: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, q, x)
}

tile_kernel!(tile_vnni, "avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni", dot8_vnni, dot4_vnni);

/// [`reduce8`] of two blocks at once: v[k] holds block b in its low 256 bits and block b+1
/// in its high 256 bits; lane 8·j + k of the result = the sum of v[k]'s half j.
#[inline]
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn reduce8x2(v: &[__m512i; 8]) -> __m512i {
    // Per 128-bit lane, as `_mm256_hadd_epi32`.
    #[inline]
    #[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn hadd(a: __m512i, b: __m512i) -> __m512i {
        let (a, b) = (_mm512_castsi512_ps(a), _mm512_castsi512_ps(b));
        let e = _mm512_castps_si512(_mm512_shuffle_ps::<0x88>(a, b));
        let o = _mm512_castps_si512(_mm512_shuffle_ps::<0xDD>(a, b));
        _mm512_add_epi32(e, o)
    }
    let t0 = hadd(hadd(v[0], v[1]), hadd(v[2], v[3]));
    let t1 = hadd(hadd(v[4], v[5]), hadd(v[6], v[7]));
    // Lane L of t0: v0..v3 summed over 128-bit lane L (L = 0, 1 block b; 2, 3 block b+1).
    let a = _mm512_shuffle_i64x2::<0x88>(t0, t1);
    let b = _mm512_shuffle_i64x2::<0xDD>(t0, t1);
    let s = _mm512_add_epi32(a, b);
    _mm512_shuffle_i64x2::<0xD8>(s, s)
}

/// The VNNI tile: for one x row (N = 1), Q8_0 and Q4_0 two blocks per step in 512-bit
/// registers (each lane's operations unchanged: block b's product is added before block
/// b+1's), then any last block, two x rows and Int4 through `tile_vnni` (with two x rows
/// the 512-bit step measured slower).
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_vnni_all<const K: usize, const NX: usize>(a: &TileArgs, out: &mut [f32; 8]) {
    let rw = 8 / NX;
    let bytes = if K == TILE_Q8_0 { Q8_0_BYTES } else { Q4_0_BYTES };
    let zero = _mm512_setzero_si512();
    let mut acc = _mm256_setzero_ps();
    let mut b = 0;
    while K != TILE_INT4 && NX == 1 && b + 2 <= a.nb {
        let mut xv = [zero; 2];
        let mut xa = [zero; 2];
        let mut xn: [__mmask64; 2] = [0; 2];
        for i in 0..NX {
            xv[i] = _mm512_loadu_si512(a.x.add(i * a.xq_step + b * QK) as *const __m512i);
            xa[i] = _mm512_abs_epi8(xv[i]);
            xn[i] = _mm512_movepi8_mask(xv[i]);
        }
        let mut d = [zero; 8];
        let mut hl = [0u16; 16];
        let mut dxl = [0f32; 16];
        let mut sxl = [0i32; 16];
        for r in 0..rw {
            let p = a.w[r].add(b * bytes);
            let (h0, h1) =
                ((p as *const u16).read_unaligned().to_le(), (p.add(bytes) as *const u16).read_unaligned().to_le());
            let wv = if K == TILE_Q8_0 {
                let lo = _mm256_loadu_si256(p.add(2) as *const __m256i);
                _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(lo),
                    _mm256_loadu_si256(p.add(bytes + 2) as *const __m256i),
                )
            } else {
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(unpack32(p.add(2))), unpack32(p.add(bytes + 2)))
            };
            for i in 0..NX {
                let k = r * NX + i;
                hl[k] = h0;
                hl[8 + k] = h1;
                d[k] = if K == TILE_Q8_0 {
                    _mm512_dpbusd_epi32(zero, xa[i], _mm512_mask_sub_epi8(wv, xn[i], zero, wv))
                } else {
                    _mm512_dpbusd_epi32(zero, wv, xv[i])
                };
            }
        }
        for k in 0..8 {
            let xo = (k % NX) * a.xb_step + b;
            dxl[k] = *a.xd.add(xo);
            dxl[8 + k] = *a.xd.add(xo + 1);
            if K == TILE_Q4_0 {
                sxl[k] = *a.xs.add(xo);
                sxl[8 + k] = *a.xs.add(xo + 1);
            }
        }
        let mut isum = reduce8x2(&d);
        if K == TILE_Q4_0 {
            isum = _mm512_sub_epi32(isum, _mm512_slli_epi32::<3>(_mm512_loadu_si512(sxl.as_ptr() as *const __m512i)));
        }
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(hl.as_ptr() as *const __m256i));
        let sc = _mm512_mul_ps(dw, _mm512_loadu_ps(dxl.as_ptr()));
        let t = _mm512_mul_ps(_mm512_cvtepi32_ps(isum), sc);
        acc = _mm256_add_ps(acc, _mm512_castps512_ps256(t));
        acc = _mm256_add_ps(acc, _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(t))));
        b += 2;
    }
    _mm256_storeu_ps(out.as_mut_ptr(), tile_vnni::<K, NX>(a, b, acc));
}

pub(super) const TILES_VNNI: [[TileFn; 2]; 3] = [
    [tile_vnni_all::<TILE_Q8_0, 1>, tile_vnni_all::<TILE_Q8_0, 2>],
    [tile_vnni_all::<TILE_Q4_0, 1>, tile_vnni_all::<TILE_Q4_0, 2>],
    [tile_vnni_all::<TILE_INT4, 1>, tile_vnni_all::<TILE_INT4, 2>],
];

/// [`I8Tile`] with `vpdpbusd`: u = x + 128 (x ^ 0x80, unsigned), so Σ u·w = Σ x·w + 128·Σ w,
/// and Σ w comes from `vpdpbusd(1, w)`; one instruction per pair and 64 values. The tail
/// goes through masked loads (zeros: w = 0 adds nothing to either sum).
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn int8_tile_vnni(w: &[*const i8; 4], x: &[*const i8; 4], len: usize, out: &mut [i32; 16]) {
    let (ones, flip) = (_mm512_set1_epi8(1), _mm512_set1_epi8(-128));
    let mut acc = [_mm512_setzero_si512(); 16];
    let mut sw = [_mm512_setzero_si512(); 4];
    let mut i = 0;
    while i < len {
        let m: __mmask64 = if len - i >= 64 { !0 } else { (1u64 << (len - i)) - 1 };
        let mut u = [_mm512_setzero_si512(); 4];
        for (u, x) in u.iter_mut().zip(x) {
            *u = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, x.add(i)), flip);
        }
        for r in 0..4 {
            let wv = _mm512_maskz_loadu_epi8(m, w[r].add(i));
            sw[r] = _mm512_dpbusd_epi32(sw[r], ones, wv);
            for c in 0..4 {
                acc[4 * r + c] = _mm512_dpbusd_epi32(acc[4 * r + c], u[c], wv);
            }
        }
        i += 64;
    }
    for r in 0..4 {
        let s = _mm512_reduce_add_epi32(sw[r]).wrapping_mul(128);
        for c in 0..4 {
            out[4 * r + c] = _mm512_reduce_add_epi32(acc[4 * r + c]).wrapping_sub(s);
        }
    }
}
