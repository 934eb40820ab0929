//! The single-row path: one output row (token-by-token decoding) as a matrix-vector product.

use super::{Threads, PARALLEL_MIN_FLOPS};
use crate::kernels::isa::multiversion;
use crate::kernels::SendPtr;
use rayon::prelude::*;

/// Output columns per task.
const COLS: usize = 64;

/// c (n) = alpha · a (k) · B (k, n) + beta · c, for one row `a` with stride `a_cs`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemv_row(
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    a_cs: usize,
    b: *const f32,
    b_rs: usize,
    b_cs: usize,
    beta: f32,
    c: *mut f32,
    threads: Threads,
) {
    // The row of A, contiguous (k is at most a few thousand here; the stack holds it).
    let mut row = [0.0f32; 8192];
    let row: &[f32] = if a_cs == 1 {
        std::slice::from_raw_parts(a, k)
    } else {
        assert!(k <= row.len(), "gemv: k too large for a strided row");
        for p in 0..k {
            row[p] = *a.add(p * a_cs);
        }
        &row[..k]
    };
    let bp = SendPtr(b as *mut f32);
    let cp = SendPtr(c);
    let chunk = move |j0: usize| {
        let (b, c) = (bp.get() as *const f32, cp.get());
        let cols = COLS.min(n - j0);
        let out = std::slice::from_raw_parts_mut(c.add(j0), cols);
        gemv_columns(out, row, b.add(j0 * b_cs), b_rs, b_cs, alpha, beta);
    };
    if threads == Threads::Pool && n * k >= PARALLEL_MIN_FLOPS / 4 {
        // One contiguous run of columns per thread: each streams its share of the weights in
        // order (as fine-grained tasks measured the same: 564-580 against 568-582 tokens/s).
        let chunks = n.div_ceil(COLS);
        let parts = rayon::current_num_threads().clamp(1, chunks);
        let per = chunks.div_ceil(parts);
        (0..parts).into_par_iter().for_each(|p| {
            for i in p * per..((p + 1) * per).min(chunks) {
                chunk(i * COLS);
            }
        });
    } else {
        for i in 0..n.div_ceil(COLS) {
            chunk(i * COLS);
        }
    }
}

/// Σ a·b with 64 independent partial sums (four AVX-512 or eight AVX2 accumulators), combined
/// in a fixed order: a decoding step streams each weight row once from L3 or memory, and more
/// loads in flight per row stream it faster (measured against 32 sums: see
/// docs/BENCHMARKS.md, "Run-time instruction sets").
#[inline(always)]
fn dot_wide(a: &[f32], b: &[f32]) -> f32 {
    const W: usize = 64;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; W];
    let (ac, bc) = (a.chunks_exact(W), b.chunks_exact(W));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..W {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut width = W / 2;
    while width >= 8 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    let mut s = crate::kernels::math::fold8(acc[..8].try_into().unwrap());
    for (x, y) in ar.iter().zip(br) {
        s = x.mul_add(*y, s);
    }
    s
}

multiversion! {
    /// out (cols) = alpha · row (k) · B[:, cols] + beta · out, for B's columns starting at `b`.
    fn gemv_columns(out: &mut [f32], row: &[f32], b: *const f32, b_rs: usize, b_cs: usize, alpha: f32, beta: f32) {
        let k = row.len();
        // SAFETY: the caller (gemv_row) passes a B with k rows and out.len() columns in bounds.
        unsafe {
            if b_rs == 1 {
                // Column j of B is contiguous (B = Wᵀ): one dot product per output.
                for (jj, o) in out.iter_mut().enumerate() {
                    let col = std::slice::from_raw_parts(b.add(jj * b_cs), k);
                    let v = alpha * dot_wide(row, col);
                    *o = if beta == 0.0 { v } else { v + beta * *o };
                }
            } else {
                // Rows of B are contiguous: accumulate alpha·a[p]·B[p, j0..] into a local tile.
                let cols = out.len();
                let mut acc = [0.0f32; COLS];
                for (p, &a) in row.iter().enumerate() {
                    let brow = std::slice::from_raw_parts(b.add(p * b_rs), cols);
                    crate::kernels::math::axpy(&mut acc[..cols], a, brow);
                }
                for (o, v) in out.iter_mut().zip(&acc) {
                    *o = if beta == 0.0 { alpha * v } else { alpha * v + beta * *o };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::{avx512_or_skip, test_values, Level};

    #[test]
    fn avx512_copy_is_bit_identical_and_matches_f64() {
        let (k, cols) = (389, 37);
        let row = test_values(k, 1, 1.0);
        let w = test_values(k * cols, 2, 1.0);
        for (b_rs, b_cs) in [(1, k), (cols, 1)] {
            let want: Vec<f64> = (0..cols)
                .map(|j| (0..k).map(|p| row[p] as f64 * w[p * b_rs + j * b_cs] as f64).sum::<f64>() * 0.5)
                .collect();
            let mut base = vec![0.0f32; cols];
            gemv_columns::on(Level::Avx2, &mut base, &row, w.as_ptr(), b_rs, b_cs, 0.5, 0.0);
            for (g, w) in base.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-4, "{g} vs {w}");
            }
            if avx512_or_skip("gemv") {
                let mut wide = vec![0.0f32; cols];
                gemv_columns::on(Level::Avx512, &mut wide, &row, w.as_ptr(), b_rs, b_cs, 0.5, 0.0);
                assert_eq!(base, wide);
            }
        }
    }
}
