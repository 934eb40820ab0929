//! Micro-kernels: each computes one MR×NR tile of C from MR rows of A and one packed NR-column
//! panel of B. There is one per instruction-set level ([`micro_kernel`]), each with its own tile
//! and blocking; a kernel for a new instruction set goes here, with its own `#[target_feature]`
//! function and an entry in [`micro_kernel`], and must keep the [`KernelFn`] contract.
//!
//! | level | tile | registers | per k step |
//! |---|---|---|---|
//! | scalar | 6×16 | (plain Rust, the reference) | |
//! | AVX2 + FMA | 6×16 | 12 ymm accumulators | 2 B loads, 6 broadcasts, 12 FMAs |
//! | AVX-512 | 14×32 | 28 zmm accumulators | 2 B loads, 14 broadcasts, 28 FMAs |
//!
//! Edges: a tile with fewer than MR valid rows reads a zero-padded packed A panel; fewer than
//! NR valid columns are never read or written (AVX-512 uses masked loads and stores, the others
//! a scalar write-back of the valid part).

use crate::kernels::isa::Level;

/// (kc, a, a_rs, a_cs, packed b, c, ldc, alpha, beta, mr, nr): A element (i, q) is
/// `a[i·a_rs + q·a_cs]` for i < MR (all MR rows must be readable), B is one packed NR panel
/// (`b[q·NR + j]`). Writes `C = alpha·A·B + beta·C` on the valid (mr, nr) part of the tile.
pub(super) type KernelFn =
    unsafe fn(usize, *const f32, usize, usize, *const f32, *mut f32, usize, f32, f32, usize, usize);

/// One micro-kernel and the blocking around it.
pub(super) struct MicroKernel {
    /// Tile rows (broadcast A values) and columns (B vector lanes).
    pub mr: usize,
    pub nr: usize,
    /// Depth of one packed block: a KC×NR B panel stays in L1, the MC×KC A block in L2.
    pub kc: usize,
    /// Rows of A packed at once (a multiple of `mr`).
    pub mc: usize,
    /// Whether row-major A is read in place (its MR rows as MR streams) rather than packed.
    pub direct_a: bool,
    pub f: KernelFn,
}

/// Largest tile and blocks over all kernels: the per-thread packing buffers are this big.
pub(super) const MAX_MR: usize = 14;
pub(super) const MAX_NR: usize = 32;
pub(super) const MAX_KC: usize = 384;
pub(super) const MAX_MC: usize = 168;
/// Columns of B packed at once (every kernel).
pub(super) const NC: usize = 2048;

const SCALAR: MicroKernel =
    MicroKernel { mr: 6, nr: 16, kc: 256, mc: 120, direct_a: true, f: micro_kernel_generic::<6, 16> };
#[cfg(target_arch = "x86_64")]
const AVX2: MicroKernel = MicroKernel { mr: 6, nr: 16, kc: 256, mc: 120, direct_a: true, f: micro_kernel_avx2 };
#[cfg(target_arch = "x86_64")]
const AVX512: MicroKernel = MicroKernel { mr: 14, nr: 32, kc: 256, mc: 112, direct_a: true, f: micro_kernel_avx512 };

/// The micro-kernel of one level. Callers pass a level the CPU has (see `isa::Isa`).
pub(super) fn micro_kernel(level: Level) -> &'static MicroKernel {
    match level {
        Level::Scalar => &SCALAR,
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => &AVX2,
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => &AVX512,
        #[cfg(not(target_arch = "x86_64"))]
        _ => &SCALAR,
    }
}

/// Writes an accumulator tile to C: `C = alpha·acc + beta·C` on the valid (mr, nr) part.
#[inline(always)]
unsafe fn store_tile<const MR: usize, const NR: usize>(
    acc: &[[f32; NR]; MR],
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
    mr: usize,
    nr: usize,
) {
    for i in 0..mr {
        let row = c.add(i * ldc);
        for j in 0..nr {
            let v = alpha * acc[i][j];
            *row.add(j) = if beta == 0.0 { v } else { v + beta * *row.add(j) };
        }
    }
}

/// Portable micro-kernel (any CPU): the reference the SIMD kernels are tested against.
#[allow(clippy::too_many_arguments)]
unsafe fn micro_kernel_generic<const MR: usize, const NR: usize>(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
    mr: usize,
    nr: usize,
) {
    let mut acc = [[0.0f32; NR]; MR];
    for q in 0..kc {
        let bq = std::slice::from_raw_parts(b.add(q * NR), NR);
        for i in 0..MR {
            let ai = *a.add(i * a_rs + q * a_cs);
            for j in 0..NR {
                acc[i][j] = ai.mul_add(bq[j], acc[i][j]);
            }
        }
    }
    store_tile(&acc, c, ldc, alpha, beta, mr, nr);
}

/// 14×32 AVX-512 micro-kernel: 28 zmm accumulators, two B loads and fourteen broadcasts per k
/// step. A is either packed (14 consecutive values per k, one pointer walks it) or row-major in
/// place (14 row streams; measured 8% faster on the 256-row M-forward products, where packing A
/// was 11% of the time).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_kernel_avx512(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
    mr: usize,
    nr: usize,
) {
    use std::arch::x86_64::*;
    const MR: usize = 14;
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let mut bp = b;
    if a_rs == 1 {
        // Packed A: the MR values of step q are a[q·a_cs ..][..MR].
        let mut ap = a;
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*ap.add(i));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
            ap = ap.add(a_cs);
            bp = bp.add(32);
        }
    } else {
        let mut off = 0usize;
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i * a_rs + off));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
            off += a_cs;
            bp = bp.add(32);
        }
    }
    store_tile_avx512(&acc, c, ldc, alpha, beta, mr, nr);
}

/// Writes a 14×32 accumulator tile (two zmm per row) to C: `C = alpha·acc + beta·C` on the valid
/// (mr, nr) part, with masked loads and stores so lanes past `nr` are neither read nor written.
/// Shared by the f32 and the bf16 micro-kernels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store_tile_avx512(
    acc: &[[std::arch::x86_64::__m512; 2]; 14],
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
    mr: usize,
    nr: usize,
) {
    use std::arch::x86_64::*;
    let m0: __mmask16 = if nr >= 16 { 0xFFFF } else { (1u32 << nr) as u16 - 1 };
    let m1: __mmask16 = if nr >= 32 {
        0xFFFF
    } else if nr > 16 {
        (1u32 << (nr - 16)) as u16 - 1
    } else {
        0
    };
    let va = _mm512_set1_ps(alpha);
    let vb = _mm512_set1_ps(beta);
    for (i, row) in acc.iter().enumerate().take(mr) {
        let cr = c.add(i * ldc);
        let mut lo = _mm512_mul_ps(row[0], va);
        let mut hi = _mm512_mul_ps(row[1], va);
        if beta != 0.0 {
            lo = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cr), lo);
            hi = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cr.add(16)), hi);
        }
        _mm512_mask_storeu_ps(cr, m0, lo);
        _mm512_mask_storeu_ps(cr.add(16), m1, hi);
    }
}
/// 6×16 AVX2/FMA micro-kernel: 12 accumulator registers, two B loads and six broadcasts per k.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_kernel_avx2(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
    mr: usize,
    nr: usize,
) {
    use std::arch::x86_64::*;
    let mut c00 = _mm256_setzero_ps();
    let mut c01 = _mm256_setzero_ps();
    let mut c10 = _mm256_setzero_ps();
    let mut c11 = _mm256_setzero_ps();
    let mut c20 = _mm256_setzero_ps();
    let mut c21 = _mm256_setzero_ps();
    let mut c30 = _mm256_setzero_ps();
    let mut c31 = _mm256_setzero_ps();
    let mut c40 = _mm256_setzero_ps();
    let mut c41 = _mm256_setzero_ps();
    let mut c50 = _mm256_setzero_ps();
    let mut c51 = _mm256_setzero_ps();
    // Six row pointers and one shared offset: every broadcast address is base + offset, with no
    // chain of dependent pointer updates between them.
    let (a0p, a1p, a2p) = (a, a.add(a_rs), a.add(2 * a_rs));
    let (a3p, a4p, a5p) = (a.add(3 * a_rs), a.add(4 * a_rs), a.add(5 * a_rs));
    let mut bp = b;
    let mut off = 0usize;
    for _ in 0..kc {
        let b0 = _mm256_loadu_ps(bp);
        let b1 = _mm256_loadu_ps(bp.add(8));
        let a0 = _mm256_broadcast_ss(&*a0p.add(off));
        c00 = _mm256_fmadd_ps(a0, b0, c00);
        c01 = _mm256_fmadd_ps(a0, b1, c01);
        let a1 = _mm256_broadcast_ss(&*a1p.add(off));
        c10 = _mm256_fmadd_ps(a1, b0, c10);
        c11 = _mm256_fmadd_ps(a1, b1, c11);
        let a2 = _mm256_broadcast_ss(&*a2p.add(off));
        c20 = _mm256_fmadd_ps(a2, b0, c20);
        c21 = _mm256_fmadd_ps(a2, b1, c21);
        let a3 = _mm256_broadcast_ss(&*a3p.add(off));
        c30 = _mm256_fmadd_ps(a3, b0, c30);
        c31 = _mm256_fmadd_ps(a3, b1, c31);
        let a4 = _mm256_broadcast_ss(&*a4p.add(off));
        c40 = _mm256_fmadd_ps(a4, b0, c40);
        c41 = _mm256_fmadd_ps(a4, b1, c41);
        let a5 = _mm256_broadcast_ss(&*a5p.add(off));
        c50 = _mm256_fmadd_ps(a5, b0, c50);
        c51 = _mm256_fmadd_ps(a5, b1, c51);
        off += a_cs;
        bp = bp.add(16);
    }
    let rows = [[c00, c01], [c10, c11], [c20, c21], [c30, c31], [c40, c41], [c50, c51]];
    if mr == 6 && nr == 16 {
        let va = _mm256_set1_ps(alpha);
        let vb = _mm256_set1_ps(beta);
        for (i, [lo, hi]) in rows.iter().enumerate() {
            let row = c.add(i * ldc);
            let (mut lo, mut hi) = (_mm256_mul_ps(*lo, va), _mm256_mul_ps(*hi, va));
            if beta != 0.0 {
                lo = _mm256_fmadd_ps(vb, _mm256_loadu_ps(row), lo);
                hi = _mm256_fmadd_ps(vb, _mm256_loadu_ps(row.add(8)), hi);
            }
            _mm256_storeu_ps(row, lo);
            _mm256_storeu_ps(row.add(8), hi);
        }
    } else {
        let mut acc = [[0.0f32; 16]; 6];
        for (i, [lo, hi]) in rows.iter().enumerate() {
            _mm256_storeu_ps(acc[i].as_mut_ptr(), *lo);
            _mm256_storeu_ps(acc[i].as_mut_ptr().add(8), *hi);
        }
        store_tile(&acc, c, ldc, alpha, beta, mr, nr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::Isa;

    /// Every SIMD kernel against the generic one at its own tile size, full and edge tiles,
    /// packed and in-place A, beta 0 and 1.
    #[test]
    fn simd_kernels_match_generic() {
        for isa in Isa::all_available() {
            let k = micro_kernel(isa.level);
            let (mr, nr, kc) = (k.mr, k.nr, 37);
            let a: Vec<f32> = (0..kc * mr).map(|i| (i as f32 * 0.3).sin()).collect();
            let b: Vec<f32> = (0..kc * nr).map(|i| (i as f32 * 0.7).cos()).collect();
            for (vr, vc) in [(mr, nr), (mr - 1, nr), (1, nr - 1), (mr, 3), (2, nr / 2 + 1)] {
                for (a_rs, a_cs) in [(1, mr), (kc, 1)] {
                    for beta in [0.0, 2.0] {
                        let mut want = vec![1.0f32; mr * nr];
                        let mut got = want.clone();
                        unsafe {
                            let g: KernelFn = match (mr, nr) {
                                (6, 16) => micro_kernel_generic::<6, 16>,
                                (14, 32) => micro_kernel_generic::<14, 32>,
                                other => panic!("no generic kernel for tile {other:?}"),
                            };
                            g(kc, a.as_ptr(), a_rs, a_cs, b.as_ptr(), want.as_mut_ptr(), nr, 0.5, beta, vr, vc);
                            (k.f)(kc, a.as_ptr(), a_rs, a_cs, b.as_ptr(), got.as_mut_ptr(), nr, 0.5, beta, vr, vc);
                        }
                        for (i, (x, y)) in want.iter().zip(&got).enumerate() {
                            let (r, c) = (i / nr, i % nr);
                            if r >= vr || c >= vc {
                                assert_eq!(*y, 1.0, "{}: wrote outside the valid tile at ({r}, {c})", isa.name());
                            } else {
                                assert!((x - y).abs() < 1e-4, "{}: ({r}, {c}) {x} vs {y}", isa.name());
                            }
                        }
                    }
                }
            }
        }
    }
}
