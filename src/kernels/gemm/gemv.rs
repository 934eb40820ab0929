//! The few-row paths: one output row (token-by-token decoding) as a matrix-vector product, and
//! a handful of rows (a decode step of a small batch) as that many dot products per column of
//! B, each column read from memory once.

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
    for_column_chunks(n, threads == Threads::Pool && n * k >= PARALLEL_MIN_FLOPS / 4, chunk);
}

/// Runs `chunk(j0)` for each run of [`COLS`] of the n output columns; in `parallel`, one
/// contiguous share of runs per thread, so each thread streams its part of the weights in
/// order (fine-grained tasks measured the same: 564-580 against 568-582 tokens/s).
fn for_column_chunks(n: usize, parallel: bool, chunk: impl Fn(usize) + Sync) {
    let chunks = n.div_ceil(COLS);
    if parallel {
        let parts = rayon::current_num_threads().clamp(1, chunks);
        let per = chunks.div_ceil(parts);
        (0..parts).into_par_iter().for_each(|p| {
            for i in p * per..((p + 1) * per).min(chunks) {
                chunk(i * COLS);
            }
        });
    } else {
        for i in 0..chunks {
            chunk(i * COLS);
        }
    }
}

/// Partial sums per dot product in [`dot_wide`] and [`dot_tile`].
const WIDE: usize = 64;

/// Σ a·b with 64 independent partial sums (four AVX-512 or eight AVX2 accumulators), combined
/// in a fixed order: a decoding step streams each weight row once from L3 or memory, and more
/// loads in flight per row stream it faster (measured against 32 sums: see
/// docs/BENCHMARKS.md, "Run-time instruction sets").
#[inline(always)]
fn dot_wide(a: &[f32], b: &[f32]) -> f32 {
    dot_tile::<1, 1>([a], [b])[0][0]
}

/// The R × C dot products of R rows `a` and C columns `b` (all of one length k), each summed
/// exactly as [`dot_wide`] sums it alone (64 partial sums over k, the same final fold, the
/// tail in order), so a row's outputs do not depend on the rows batched with it. Each loaded
/// chunk of a row serves C products and each chunk of a column R: with R = C = 2 the 16
/// accumulator registers (AVX-512) take one load per FMA instead of two.
#[inline(always)]
fn dot_tile<const R: usize, const C: usize>(a: [&[f32]; R], b: [&[f32]; C]) -> [[f32; C]; R] {
    let k = a[0].len();
    let chunks = k / WIDE;
    let mut acc = [[[0.0f32; WIDE]; C]; R];
    for q in 0..chunks {
        let at = q * WIDE;
        for r in 0..R {
            let x = &a[r][at..at + WIDE];
            for c in 0..C {
                let y = &b[c][at..at + WIDE];
                let acc = &mut acc[r][c];
                for i in 0..WIDE {
                    acc[i] = x[i].mul_add(y[i], acc[i]);
                }
            }
        }
    }
    let mut out = [[0.0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            out[r][c] = finish_wide(&mut acc[r][c], &a[r][chunks * WIDE..], &b[c][chunks * WIDE..]);
        }
    }
    out
}

/// A [`dot_wide`] sum from its 64 partial sums: fold them in a fixed order, then add the tail
/// (`a`, `b`: the elements past the last whole chunk) in order.
#[inline(always)]
fn finish_wide(acc: &mut [f32; WIDE], a: &[f32], b: &[f32]) -> f32 {
    let mut width = WIDE / 2;
    while width >= 8 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    let mut s = crate::kernels::math::fold8(acc[..8].try_into().unwrap());
    for (x, y) in a.iter().zip(b) {
        s = x.mul_add(*y, s);
    }
    s
}

/// [`dot_tile`] for 2 rows × 2 columns with AVX-512 intrinsics: the same partial sums (lane
/// `i` of accumulator `v` is partial sum 16·v + i), kept in 16 registers, where the generic
/// code spills its 256 partial sums to the stack on every chunk.
///
/// `prefetch`: the next two columns, fetched into the cache line by line alongside (the first
/// pair of rows of a column pair streams it from memory; the others find it in L1).
///
/// # Safety
/// The CPU must have AVX-512F; all four slices must have the same length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_tile_2x2_avx512(a: [&[f32]; 2], b: [&[f32]; 2], prefetch: Option<[*const f32; 2]>) -> [[f32; 2]; 2] {
    use std::arch::x86_64::*;
    let k = a[0].len();
    let chunks = k / WIDE;
    let (a0, a1, b0, b1) = (a[0].as_ptr(), a[1].as_ptr(), b[0].as_ptr(), b[1].as_ptr());
    let z = _mm512_setzero_ps();
    let (mut s00, mut s01, mut s10, mut s11) = ([z; 4], [z; 4], [z; 4], [z; 4]);
    for q in 0..chunks {
        if let Some([n0, n1]) = prefetch {
            for v in 0..4 {
                // A hint: prefetching past the end of the slice is harmless.
                _mm_prefetch::<_MM_HINT_T0>(n0.wrapping_add(q * WIDE + 16 * v) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(n1.wrapping_add(q * WIDE + 16 * v) as *const i8);
            }
        }
        for v in 0..4 {
            let at = q * WIDE + 16 * v;
            let (x0, x1) = (_mm512_loadu_ps(a0.add(at)), _mm512_loadu_ps(a1.add(at)));
            let (y0, y1) = (_mm512_loadu_ps(b0.add(at)), _mm512_loadu_ps(b1.add(at)));
            s00[v] = _mm512_fmadd_ps(x0, y0, s00[v]);
            s01[v] = _mm512_fmadd_ps(x0, y1, s01[v]);
            s10[v] = _mm512_fmadd_ps(x1, y0, s10[v]);
            s11[v] = _mm512_fmadd_ps(x1, y1, s11[v]);
        }
    }
    let tail = chunks * WIDE;
    let finish = |s: [__m512; 4], r: usize, c: usize| {
        let mut sum = fold_wide_avx512(s);
        for (x, y) in a[r][tail..].iter().zip(&b[c][tail..]) {
            sum = x.mul_add(*y, sum);
        }
        sum
    };
    [[finish(s00, 0, 0), finish(s01, 0, 1)], [finish(s10, 1, 0), finish(s11, 1, 1)]]
}

/// [`finish_wide`]'s fold of 64 partial sums (lane `i` of `s[v]` is partial sum 16·v + i) in
/// registers, the same additions in the same order: halves of 32, of 16, of 8, then `fold8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn fold_wide_avx512(s: [std::arch::x86_64::__m512; 4]) -> f32 {
    use std::arch::x86_64::*;
    let s16 = _mm512_add_ps(_mm512_add_ps(s[0], s[2]), _mm512_add_ps(s[1], s[3]));
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s16)));
    let s8 = _mm256_add_ps(_mm512_castps512_ps256(s16), hi);
    // fold8: ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7)).
    let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
    let s2 = _mm_add_ps(s4, _mm_movehdup_ps(s4));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehl_ps(s2, s2)))
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
    fn few_rows_equal_each_row_alone_bit_for_bit_and_f64() {
        // k with a tail past the 64-wide chunks; odd m and odd column counts take the edge paths.
        let (k, cols) = (389, 37);
        let w = test_values(k * cols, 2, 1.0);
        let mut levels = vec![Level::Avx2];
        if avx512_or_skip("gemv few rows") {
            levels.push(Level::Avx512);
        }
        for level in levels {
            for m in [1, 2, 3, 5, 16, 31, 32] {
                let a = test_values(m * (k + 3), 3, 1.0); // row stride k + 3
                let mut c = vec![0.0f32; m * cols];
                let rows = FewRows { m, k, a: a.as_ptr(), a_rs: k + 3, c: c.as_mut_ptr(), ldc: cols };
                gemv_columns_rows::on(level, rows, cols, w.as_ptr(), k, 0.5, 0.0);
                for i in 0..m {
                    let row = &a[i * (k + 3)..i * (k + 3) + k];
                    let mut alone = vec![0.0f32; cols];
                    gemv_columns::on(level, &mut alone, row, w.as_ptr(), 1, k, 0.5, 0.0);
                    assert_eq!(&c[i * cols..(i + 1) * cols], &alone[..], "{level:?} m {m} row {i}");
                    for j in 0..cols {
                        let want: f64 = (0..k).map(|p| row[p] as f64 * w[j * k + p] as f64).sum::<f64>() * 0.5;
                        assert!((c[i * cols + j] as f64 - want).abs() < 1e-4, "{} vs {want}", c[i * cols + j]);
                    }
                }
            }
        }
    }

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

/// The most rows [`gemv_rows`] takes: up to here a product is bound by streaming B, and
/// packing B (the blocked GEMM) would read it twice.
pub(super) const GEMV_ROWS: usize = 32;

/// C (m, n) = alpha · A (m, k) · B (k, n) + beta · C for m ≤ [`GEMV_ROWS`] contiguous rows of A
/// (row stride `a_rs`) and contiguous columns of B (column stride `b_cs`, B = Wᵀ of a linear
/// layer): each column of B is read once and dotted with every row, as [`gemv_row`] does for
/// one row (row i gets exactly the sums `gemv_row` gives it alone).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemv_rows(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    a_rs: usize,
    b: *const f32,
    b_cs: usize,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    threads: Threads,
) {
    debug_assert!(m <= GEMV_ROWS);
    let (ap, bp, cp) = (SendPtr(a as *mut f32), SendPtr(b as *mut f32), SendPtr(c));
    let chunk = move |j0: usize| {
        let (a, b, c) = (ap.get() as *const f32, bp.get() as *const f32, cp.get());
        let cols = COLS.min(n - j0);
        let rows = FewRows { m, k, a, a_rs, c: c.add(j0), ldc };
        gemv_columns_rows(rows, cols, b.add(j0 * b_cs), b_cs, alpha, beta);
    };
    for_column_chunks(n, threads == Threads::Pool && m * n * k >= PARALLEL_MIN_FLOPS / 4, chunk);
}

/// The rows of A (m, k) and C (m, ·) of a [`gemv_rows`] product.
#[derive(Clone, Copy)]
struct FewRows {
    m: usize,
    k: usize,
    a: *const f32,
    a_rs: usize,
    c: *mut f32,
    ldc: usize,
}

multiversion! {
    /// C[i, jj] = alpha · A[i, :] · B[:, jj] + beta · C[i, jj] for `cols` columns of B starting
    /// at `b` (each contiguous) and the rows of `rows`.
    fn gemv_columns_rows(rows: FewRows, cols: usize, b: *const f32, b_cs: usize, alpha: f32, beta: f32) {
        let FewRows { m, k, a, a_rs, c, ldc } = rows;
        // 2 × 2 tiles with AVX-512 intrinsics where AVX-512 is active, else the generic code:
        // the same sums either way.
        #[cfg(target_arch = "x86_64")]
        let avx512 = crate::kernels::isa::Isa::active().level >= crate::kernels::isa::Level::Avx512;
        let tile_2x2 = |a: [&[f32]; 2], b: [&[f32]; 2], next: Option<[*const f32; 2]>| -> [[f32; 2]; 2] {
            #[cfg(target_arch = "x86_64")]
            if avx512 {
                // SAFETY: AVX-512 is active (so detected); the slices have length k.
                return unsafe { dot_tile_2x2_avx512(a, b, next) };
            }
            let _ = next;
            dot_tile::<2, 2>(a, b)
        };
        // SAFETY: the caller (gemv_rows) passes A (m, k), B's `cols` columns of k and C (m, cols)
        // in bounds.
        unsafe {
            let row = |i: usize| std::slice::from_raw_parts(a.add(i * a_rs), k);
            let col = |j: usize| std::slice::from_raw_parts(b.add(j * b_cs), k);
            let put = |i: usize, j: usize, dot: f32| {
                let o = &mut *c.add(i * ldc + j);
                let v = alpha * dot;
                *o = if beta == 0.0 { v } else { v + beta * *o };
            };
            // Two columns of B at a time (read from memory once, then from L1 for every pair of
            // rows), two rows of A at a time.
            let mut j = 0;
            while j + 2 <= cols {
                let bj = [col(j), col(j + 1)];
                // The first pair of rows fetches the next pair of columns as it goes.
                let next = (j + 4 <= cols).then(|| [b.add((j + 2) * b_cs), b.add((j + 3) * b_cs)]);
                let mut i = 0;
                while i + 2 <= m {
                    let t = tile_2x2([row(i), row(i + 1)], bj, if i == 0 { next } else { None });
                    for (r, tr) in t.iter().enumerate() {
                        put(i + r, j, tr[0]);
                        put(i + r, j + 1, tr[1]);
                    }
                    i += 2;
                }
                if i < m {
                    let t = dot_tile::<1, 2>([row(i)], bj);
                    put(i, j, t[0][0]);
                    put(i, j + 1, t[0][1]);
                }
                j += 2;
            }
            if j < cols {
                for i in 0..m {
                    put(i, j, dot_wide(row(i), col(j)));
                }
            }
        }
    }
}
