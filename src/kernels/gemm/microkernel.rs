//! Micro-kernels: each computes one MR×NR tile of C from MR rows of A and one packed NR-column
//! panel of B, and [`micro_kernel_fn`] picks one at run time from the CPU's features. A kernel
//! for a new instruction set goes here, with its own `#[target_feature]` function and a branch
//! in [`micro_kernel_fn`]; it must keep the [`MicroKernel`] signature and contract.

use super::{MR, NR};

/// (kc, a, a_rs, a_cs, packed b, c, ldc, alpha, beta, mr, nr): A element (i, q) is
/// `a[i·a_rs + q·a_cs]` for i < MR (all MR rows must be readable), B is one packed NR panel.
pub(super) type MicroKernel =
    unsafe fn(usize, *const f32, usize, usize, *const f32, *mut f32, usize, f32, f32, usize, usize);

pub(super) fn micro_kernel_fn() -> MicroKernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return micro_kernel_avx2;
        }
    }
    micro_kernel_generic
}

/// Writes the MR×NR accumulator tile to C: `C = alpha·acc + beta·C` on the valid (mr, nr) part.
#[inline(always)]
unsafe fn store_tile(acc: &[[f32; NR]; MR], c: *mut f32, ldc: usize, alpha: f32, beta: f32, mr: usize, nr: usize) {
    for i in 0..mr {
        let row = c.add(i * ldc);
        for j in 0..nr {
            let v = alpha * acc[i][j];
            *row.add(j) = if beta == 0.0 { v } else { v + beta * *row.add(j) };
        }
    }
}

/// Portable micro-kernel (any CPU); the compiler vectorises the inner loop.
#[allow(clippy::too_many_arguments)]
unsafe fn micro_kernel_generic(
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
                acc[i][j] += ai * bq[j];
            }
        }
    }
    store_tile(&acc, c, ldc, alpha, beta, mr, nr);
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
        bp = bp.add(NR);
    }
    let rows = [[c00, c01], [c10, c11], [c20, c21], [c30, c31], [c40, c41], [c50, c51]];
    if mr == MR && nr == NR {
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
        let mut acc = [[0.0f32; NR]; MR];
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

    #[test]
    fn generic_kernel_matches_avx2_kernel() {
        let kc = 37;
        let a: Vec<f32> = (0..kc * MR).map(|i| (i as f32 * 0.3).sin()).collect();
        let b: Vec<f32> = (0..kc * NR).map(|i| (i as f32 * 0.7).cos()).collect();
        let mut c1 = vec![1.0f32; MR * NR];
        let mut c2 = c1.clone();
        unsafe {
            micro_kernel_generic(kc, a.as_ptr(), 1, MR, b.as_ptr(), c1.as_mut_ptr(), NR, 0.5, 2.0, MR, NR);
            micro_kernel_fn()(kc, a.as_ptr(), 1, MR, b.as_ptr(), c2.as_mut_ptr(), NR, 0.5, 2.0, MR, NR);
        }
        for (x, y) in c1.iter().zip(&c2) {
            assert!((x - y).abs() < 1e-4);
        }
    }
}
