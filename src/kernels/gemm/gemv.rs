//! The single-row path: one output row (token-by-token decoding) as a matrix-vector product.

use super::{Threads, PARALLEL_MIN_FLOPS};
use crate::kernels::SendPtr;
use rayon::prelude::*;

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
    use crate::kernels::math::{axpy, dot};
    const COLS: usize = 64;
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
        if b_rs == 1 {
            // Column j of B is contiguous (B = Wᵀ): one dot product per output.
            for (jj, o) in out.iter_mut().enumerate() {
                let col = std::slice::from_raw_parts(b.add((j0 + jj) * b_cs), k);
                let v = alpha * dot(row, col);
                *o = if beta == 0.0 { v } else { v + beta * *o };
            }
        } else {
            // Rows of B are contiguous: accumulate alpha·a[p]·B[p, j0..] into a local tile.
            let mut acc = [0.0f32; COLS];
            for p in 0..k {
                let brow = std::slice::from_raw_parts(b.add(p * b_rs + j0 * b_cs), cols);
                axpy(&mut acc[..cols], row[p], brow);
            }
            for (o, v) in out.iter_mut().zip(&acc) {
                *o = if beta == 0.0 { alpha * v } else { alpha * v + beta * *o };
            }
        }
    };
    if threads == Threads::Pool && n * k >= PARALLEL_MIN_FLOPS / 4 {
        (0..n.div_ceil(COLS)).into_par_iter().for_each(|i| chunk(i * COLS));
    } else {
        for i in 0..n.div_ceil(COLS) {
            chunk(i * COLS);
        }
    }
}
