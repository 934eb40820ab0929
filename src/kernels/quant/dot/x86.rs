//! Helpers shared by the AVX2 and AVX-512 VNNI paths: horizontal sums, 4-bit unpacking, the
//! eight-way block-sum reduction of the register tiles and the `tile_kernel!` macro that both
//! paths instantiate.

use std::arch::x86_64::*;

/// Sum of the eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn hsum256(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// 32 codes unpacked from 16 GGML-packed bytes: low nibbles (values 0..16) in the low
/// 128 bits, high nibbles (values 16..32) in the high 128 bits.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn unpack32(p: *const u8) -> __m256i {
    let b = _mm_loadu_si128(p as *const __m128i);
    let m = _mm_set1_epi8(0x0F);
    _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16::<4>(b), m), _mm_and_si128(b, m))
}

// ---- register tiles (8 outputs per step, see `TileArgs`) ----

/// Lane k = the sum of the eight i32 lanes of v[k].
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn reduce8(v: &[__m256i; 8]) -> __m256i {
    let s01 = _mm256_hadd_epi32(v[0], v[1]);
    let s23 = _mm256_hadd_epi32(v[2], v[3]);
    let s45 = _mm256_hadd_epi32(v[4], v[5]);
    let s67 = _mm256_hadd_epi32(v[6], v[7]);
    // t0 = [Σlo v0..v3 | Σhi v0..v3], t1 the same for v4..v7.
    let t0 = _mm256_hadd_epi32(s01, s23);
    let t1 = _mm256_hadd_epi32(s45, s67);
    _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(t0, t1), _mm256_permute2x128_si256::<0x31>(t0, t1))
}

/// The tile kernel for one ISA: `$dot8(w, x)` (int8 × int8 → 8 i32 lanes) and
/// `$dot4(codes, x)` (u4 × int8 → 8 i32 lanes, accumulated onto `$acc`).
macro_rules! tile_kernel {
    ($name:ident, $feat:literal, $dot8:ident, $dot4:ident) => {
        #[target_feature(enable = $feat)]
        #[inline]
        unsafe fn $name<const K: usize, const NX: usize>(a: &TileArgs, b0: usize, mut acc: __m256) -> __m256 {
            let rw = 8 / NX;
            for b in b0..a.nb {
                let mut d = [_mm256_setzero_si256(); 8];
                let mut h = [0u16; 8];
                let mut dws = [0f32; 8];
                let (mut dx, mut sx) = ([0f32; 2], [0i32; 2]);
                for i in 0..NX {
                    dx[i] = *a.xd.add(i * a.xb_step + b);
                    sx[i] = *a.xs.add(i * a.xb_step + b);
                }
                if K == TILE_INT4 {
                    for s in 0..a.nsub {
                        let mut xv = [_mm256_setzero_si256(); 2];
                        for (i, xv) in xv.iter_mut().enumerate().take(NX) {
                            *xv = _mm256_loadu_si256(a.x.add(i * a.xq_step + (b * a.nsub + s) * QK) as *const __m256i);
                        }
                        for r in 0..rw {
                            let q = unpack32(a.w[r].add((b * a.nsub + s) * QK / 2));
                            for i in 0..NX {
                                d[r * NX + i] = $dot4(d[r * NX + i], q, xv[i]);
                            }
                        }
                    }
                } else {
                    let mut xv = [_mm256_setzero_si256(); 2];
                    for (i, xv) in xv.iter_mut().enumerate().take(NX) {
                        *xv = _mm256_loadu_si256(a.x.add(i * a.xq_step + b * QK) as *const __m256i);
                    }
                    for r in 0..rw {
                        let p = a.w[r].add(b * if K == TILE_Q8_0 { Q8_0_BYTES } else { Q4_0_BYTES });
                        h[r] = (p as *const u16).read_unaligned().to_le();
                        if K == TILE_Q8_0 {
                            let wv = _mm256_loadu_si256(p.add(2) as *const __m256i);
                            for i in 0..NX {
                                d[r * NX + i] = $dot8(wv, xv[i]);
                            }
                        } else {
                            let q = unpack32(p.add(2));
                            for i in 0..NX {
                                d[r * NX + i] = $dot4(_mm256_setzero_si256(), q, xv[i]);
                            }
                        }
                    }
                }
                let mut isum = reduce8(&d);
                let mut sxl = [0i32; 8];
                let mut dxl = [0f32; 8];
                let mut hl = [0u16; 8];
                let mut zl = [0i32; 8];
                for k in 0..8 {
                    sxl[k] = sx[k % NX];
                    dxl[k] = dx[k % NX];
                    hl[k] = h[k / NX];
                    if K == TILE_INT4 {
                        dws[k] = *a.ws[k / NX].add(b);
                        zl[k] = *a.wz[k / NX].add(b) as i32;
                    }
                }
                let sxv = _mm256_loadu_si256(sxl.as_ptr() as *const __m256i);
                let dw = if K == TILE_INT4 {
                    isum = _mm256_sub_epi32(
                        isum,
                        _mm256_mullo_epi32(_mm256_loadu_si256(zl.as_ptr() as *const __m256i), sxv),
                    );
                    _mm256_loadu_ps(dws.as_ptr())
                } else {
                    if K == TILE_Q4_0 {
                        isum = _mm256_sub_epi32(isum, _mm256_slli_epi32::<3>(sxv));
                    }
                    _mm256_cvtph_ps(_mm_loadu_si128(hl.as_ptr() as *const __m128i))
                };
                let sc = _mm256_mul_ps(dw, _mm256_loadu_ps(dxl.as_ptr()));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(isum), sc));
            }
            acc
        }
    };
}
