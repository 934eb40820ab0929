//! Single entry point for f32 matrix products, and the GEMM behind it.
//!
//! Every matmul in lmlab goes through [`sgemm`] (safe, slice-checked) or [`sgemm_raw`] (for
//! strided views into shared buffers, e.g. one attention head inside a `(B, T, 3C)` qkv
//! tensor). Row-major, BLAS semantics: `C = alpha · op(A) · op(B) + beta · C`, where `op(X)` is
//! `X` or `Xᵀ`, `op(A)` is (m, k), `op(B)` is (k, n) and `C` is (m, n) with leading dimension
//! `ldc`.
//!
//! Why our own GEMM rather than the `gemm` crate or OpenBLAS (numbers in docs/BENCHMARKS.md):
//! the `gemm` crate allocates its packing buffers on every call (≈1,600 heap allocations per
//! training step of a 2-layer model), which breaks the engine's no-allocation rule, and
//! OpenBLAS brings a system dependency and its own thread pool that fights rayon. This is the
//! classic BLIS design: B is packed into `KC×NR` column panels, A into `MR×KC` row panels, and a
//! 6×16 AVX2/FMA micro-kernel accumulates in 12 vector registers. Packing buffers are
//! per-thread and allocated once, so steady-state calls allocate nothing. Work is split across
//! threads by output rows or columns only, never along `k`, so every output element is summed
//! in the same order whatever the thread count: results are bit-identical for any pool size.

use super::SendPtr;
use rayon::prelude::*;
use std::cell::RefCell;

/// Whether a product may use the rayon pool. Products issued from inside a parallel loop
/// (attention, one per head) run single-threaded; the big projections use every thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    Single,
    Pool,
}

/// Micro-tile rows (broadcast A values) and columns (two 8-wide vectors of B).
const MR: usize = 6;
const NR: usize = 16;
/// Depth of one packed block: KC·(MR+NR)·4 bytes of panels stay in L1/L2.
const KC: usize = 256;
/// Rows of A packed at once (fits L2 with room for B panels).
const MC: usize = 120;
/// Columns of B packed at once.
const NC: usize = 2048;
/// Below this many multiply-adds a product runs on one thread (splitting costs more).
const PARALLEL_MIN_FLOPS: usize = 1 << 18;

thread_local! {
    /// (packed A block, packed B block), allocated at full size once per thread.
    static PACK: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn allocate_packing(pa: &mut Vec<f32>, pb: &mut Vec<f32>) {
    pa.resize(MC.div_ceil(MR) * MR * KC, 0.0);
    pb.resize(NC.div_ceil(NR) * NR * KC, 0.0);
}

/// Allocates this thread's packing buffers now rather than on its first product. Thread pools
/// call it when each worker starts (see `train::thread_pool`), so no product ever allocates,
/// whichever worker happens to run it first.
pub fn prepare_thread() {
    PACK.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (edge, pb) = &mut *bufs;
        if pb.is_empty() {
            allocate_packing(edge, pb);
        }
    });
}

/// Safe wrapper: checks that every operand slice is long enough for its shape and stride.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    threads: Threads,
) {
    if m == 0 || n == 0 {
        return;
    }
    let (a_rows, a_cols) = if trans_a { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if trans_b { (n, k) } else { (k, n) };
    assert!(lda >= a_cols && ldb >= b_cols && ldc >= n, "sgemm: leading dimension too small");
    assert!(a_rows == 0 || a.len() >= (a_rows - 1) * lda + a_cols, "sgemm: A too short");
    assert!(b_rows == 0 || b.len() >= (b_rows - 1) * ldb + b_cols, "sgemm: B too short");
    assert!(c.len() >= (m - 1) * ldc + n, "sgemm: C too short");
    // SAFETY: the asserts above guarantee every element addressed by the shapes and strides
    // lies inside the slices, and `c` is borrowed mutably so it cannot alias `a` or `b`.
    unsafe {
        sgemm_raw(
            trans_a,
            trans_b,
            m,
            n,
            k,
            alpha,
            a.as_ptr(),
            lda,
            b.as_ptr(),
            ldb,
            beta,
            c.as_mut_ptr(),
            ldc,
            threads,
        )
    }
}

/// Raw-pointer form of [`sgemm`].
///
/// # Safety
/// Every element addressed by the shapes and leading dimensions must be valid, and the region
/// of `c` that is written must not overlap `a`, `b` or any region another thread writes.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_raw(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    threads: Threads,
) {
    if m == 0 || n == 0 {
        return;
    }
    // Element (i, p) of op(A) is a[i·a_rs + p·a_cs]; element (p, j) of op(B) is b[p·b_rs + j·b_cs].
    let (a_rs, a_cs) = if trans_a { (1, lda) } else { (lda, 1) };
    let (b_rs, b_cs) = if trans_b { (1, ldb) } else { (ldb, 1) };
    if m == 1 && k > 0 {
        // One output row (token-by-token decoding): a matrix-vector product streams B once;
        // packing it first would read it twice.
        gemv_row(n, k, alpha, a, a_cs, b, b_rs, b_cs, beta, c, threads);
        return;
    }
    let p = Problem { m, n, k, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c, ldc };
    let parts = match threads {
        Threads::Pool if m * n * k >= PARALLEL_MIN_FLOPS => rayon::current_num_threads().max(1),
        _ => 1,
    };
    if parts == 1 {
        gemm_serial(&p);
        return;
    }
    // Split in whole micro-tiles so that no thread repeats another's packing where avoidable.
    // Splitting columns gives each thread its own share of B to pack; splitting rows makes
    // every thread pack all of B (k·n) but only its rows of A. Row-major A is read in place, so
    // columns win unless there are too few of them; transposed A is packed too, so the smaller
    // operand is the one duplicated.
    let (row_tiles, col_tiles) = (m.div_ceil(MR), n.div_ceil(NR));
    let split_rows = if a_cs == 1 { col_tiles < 2 * parts && row_tiles > col_tiles } else { n <= m };
    let (tiles, tile) = if split_rows { (m.div_ceil(MR), MR) } else { (n.div_ceil(NR), NR) };
    let parts = parts.min(tiles);
    let per = tiles.div_ceil(parts) * tile;
    let pp = SendProblem(p);
    (0..parts).into_par_iter().for_each(|i| {
        let p = pp.get();
        let mut sub = Problem { ..*p };
        if split_rows {
            let lo = (i * per).min(m);
            sub.m = (lo + per).min(m) - lo;
            sub.a = p.a.add(lo * p.a_rs);
            sub.c = p.c.add(lo * p.ldc);
        } else {
            let lo = (i * per).min(n);
            sub.n = (lo + per).min(n) - lo;
            sub.b = p.b.add(lo * p.b_cs);
            sub.c = p.c.add(lo);
        }
        if sub.m > 0 && sub.n > 0 {
            gemm_serial(&sub);
        }
    });
}

/// c (n) = alpha · a (k) · B (k, n) + beta · c, for one row `a` with stride `a_cs`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemv_row(
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
    use super::math::{axpy, dot};
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

#[derive(Clone, Copy)]
struct Problem {
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    b_rs: usize,
    b_cs: usize,
    beta: f32,
    c: *mut f32,
    ldc: usize,
}

struct SendProblem(Problem);
// SAFETY: parallel parts write disjoint rows or columns of C and only read A and B.
unsafe impl Sync for SendProblem {}

impl SendProblem {
    // A method, so closures capture the whole wrapper rather than its raw-pointer fields.
    fn get(&self) -> &Problem {
        &self.0
    }
}

/// The BLIS loop nest on one thread.
unsafe fn gemm_serial(p: &Problem) {
    if p.k == 0 {
        for i in 0..p.m {
            for j in 0..p.n {
                let cij = p.c.add(i * p.ldc + j);
                *cij = if p.beta == 0.0 { 0.0 } else { p.beta * *cij };
            }
        }
        return;
    }
    PACK.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (pa, pb) = &mut *bufs;
        if pb.is_empty() {
            allocate_packing(pa, pb);
        }
        let kernel = micro_kernel_fn();
        for jc in (0..p.n).step_by(NC) {
            let nc = NC.min(p.n - jc);
            for pc in (0..p.k).step_by(KC) {
                let kc = KC.min(p.k - pc);
                // Only the first k-block applies the caller's beta; later blocks accumulate.
                let beta = if pc == 0 { p.beta } else { 1.0 };
                pack_b(pb, p.b.add(pc * p.b_rs + jc * p.b_cs), p.b_rs, p.b_cs, kc, nc);
                // Row-major A (a_cs = 1) is read in place: a micro-tile's six rows are six
                // contiguous streams, and they stay in L1/L2 across the B panels. Transposed A
                // (columns contiguous) would touch a new cache line per k step, so it is packed,
                // as is a last panel of fewer than MR rows (zero-padded, so the micro-kernel never
                // reads past the matrix).
                let direct = p.a_cs == 1;
                for ic in (0..p.m).step_by(MC) {
                    let mc = MC.min(p.m - ic);
                    let full = if direct { mc / MR * MR } else { 0 };
                    if full < mc {
                        pack_a(pa, p.a.add((ic + full) * p.a_rs + pc * p.a_cs), p.a_rs, p.a_cs, mc - full, kc);
                    }
                    for jr in (0..nc).step_by(NR) {
                        let nr = NR.min(nc - jr);
                        let bp = pb.as_ptr().add(jr * kc);
                        for ir in (0..mc).step_by(MR) {
                            let row = ic + ir;
                            let mr = MR.min(mc - ir);
                            let cp = p.c.add(row * p.ldc + jc + jr);
                            if ir < full {
                                let ap = p.a.add(row * p.a_rs + pc * p.a_cs);
                                kernel(kc, ap, p.a_rs, p.a_cs, bp, cp, p.ldc, p.alpha, beta, mr, nr);
                            } else {
                                let ap = pa.as_ptr().add((ir - full) * kc);
                                kernel(kc, ap, 1, MR, bp, cp, p.ldc, p.alpha, beta, mr, nr);
                            }
                        }
                    }
                }
            }
        }
    });
}

/// Packs the (mc, kc) block of A into MR-row panels: panel r holds, for each p, MR values
/// `A[r·MR + 0..MR, p]`, zero-padded past `mc`.
unsafe fn pack_a(dst: &mut [f32], a: *const f32, rs: usize, cs: usize, mc: usize, kc: usize) {
    for (panel, r0) in (0..mc).step_by(MR).enumerate() {
        let out = &mut dst[panel * MR * kc..(panel + 1) * MR * kc];
        let rows = MR.min(mc - r0);
        if cs == 1 {
            // Rows of A are contiguous: read each row once, scatter with stride MR.
            for i in 0..MR {
                if i < rows {
                    let src = a.add((r0 + i) * rs);
                    for q in 0..kc {
                        out[q * MR + i] = *src.add(q);
                    }
                } else {
                    for q in 0..kc {
                        out[q * MR + i] = 0.0;
                    }
                }
            }
        } else {
            for q in 0..kc {
                let src = a.add(q * cs + r0 * rs);
                for i in 0..MR {
                    out[q * MR + i] = if i < rows { *src.add(i * rs) } else { 0.0 };
                }
            }
        }
    }
}

/// Packs the (kc, nc) block of B into NR-column panels: panel j holds, for each p, NR values
/// `B[p, j·NR + 0..NR]`, zero-padded past `nc`.
unsafe fn pack_b(dst: &mut [f32], b: *const f32, rs: usize, cs: usize, kc: usize, nc: usize) {
    for (panel, c0) in (0..nc).step_by(NR).enumerate() {
        let out = &mut dst[panel * NR * kc..(panel + 1) * NR * kc];
        let cols = NR.min(nc - c0);
        if cs == 1 {
            for q in 0..kc {
                let src = b.add(q * rs + c0);
                let o = &mut out[q * NR..(q + 1) * NR];
                for j in 0..NR {
                    o[j] = if j < cols { *src.add(j) } else { 0.0 };
                }
            }
        } else {
            // Columns of B are contiguous (B = Wᵀ): read each column once, scatter with stride NR.
            for j in 0..NR {
                if j < cols {
                    let src = b.add((c0 + j) * cs);
                    for q in 0..kc {
                        out[q * NR + j] = *src.add(q * rs);
                    }
                } else {
                    for q in 0..kc {
                        out[q * NR + j] = 0.0;
                    }
                }
            }
        }
    }
}

/// (kc, a, a_rs, a_cs, packed b, c, ldc, alpha, beta, mr, nr): A element (i, q) is
/// `a[i·a_rs + q·a_cs]` for i < MR (all MR rows must be readable), B is one packed NR panel.
type MicroKernel = unsafe fn(usize, *const f32, usize, usize, *const f32, *mut f32, usize, f32, f32, usize, usize);

fn micro_kernel_fn() -> MicroKernel {
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

    fn naive(ta: bool, tb: bool, m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let x = if ta { a[p * m + i] } else { a[i * k + p] };
                    let y = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += x as f64 * y as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    fn check(m: usize, n: usize, k: usize, threads: Threads) {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 17 % 13) as f32 - 6.0) / 4.0).collect();
        for ta in [false, true] {
            for tb in [false, true] {
                let lda = if ta { m } else { k };
                let ldb = if tb { k } else { n };
                let want = naive(ta, tb, m, n, k, &a, &b);
                let tol = 1e-4 * (k as f32).max(1.0);
                // beta = 0 overwrites whatever is in C (even NaN); beta = 1 accumulates.
                let mut c = vec![f32::NAN; m * n];
                sgemm(ta, tb, m, n, k, 1.0, &a, lda, &b, ldb, 0.0, &mut c, n, threads);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - y).abs() < tol, "{m}x{n}x{k} ta={ta} tb={tb}: {x} vs {y}");
                }
                sgemm(ta, tb, m, n, k, 0.5, &a, lda, &b, ldb, 1.0, &mut c, n, threads);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - 1.5 * y).abs() < tol, "accumulate {m}x{n}x{k} ta={ta} tb={tb}");
                }
            }
        }
    }

    #[test]
    fn matches_naive_on_edge_and_blocked_shapes() {
        // Shapes below, at and above the micro-tile, the k block (256) and the row block (120).
        for &(m, n, k) in
            &[(1, 1, 1), (7, 5, 9), (6, 16, 3), (13, 33, 300), (130, 17, 70), (64, 64, 32), (0, 3, 4), (3, 4, 0)]
        {
            check(m, n, k, Threads::Single);
            check(m, n, k, Threads::Pool);
        }
    }

    #[test]
    fn parallel_split_is_bit_identical_to_serial() {
        let (m, n, k) = (257, 190, 300);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut c1 = vec![0.0; m * n];
        let mut c2 = vec![0.0; m * n];
        sgemm(false, true, m, n, k, 1.0, &a, k, &b, k, 0.0, &mut c1, n, Threads::Single);
        rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(|| {
            sgemm(false, true, m, n, k, 1.0, &a, k, &b, k, 0.0, &mut c2, n, Threads::Pool);
        });
        assert_eq!(c1, c2);
    }

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
