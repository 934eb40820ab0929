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
//! micro-kernel chosen at run time (`kernels::isa`: 14×32 on AVX-512, 6×16 on AVX2/FMA, a
//! portable 6×16 reference) accumulates one tile in vector registers. Packing buffers are
//! per-thread and allocated once, so steady-state calls allocate nothing. Work is split across
//! threads by output rows or columns only, never along `k`, so every output element is summed
//! in the same order whatever the thread count: results are bit-identical for any pool size.
//!
//! Layout: this file holds the public API, the blocking constants, the thread split and the
//! loop nest; `pack.rs` the per-thread packing buffers and the routines that fill them;
//! `microkernel.rs` the micro-kernels and the run-time choice between them (new ISA kernels go
//! there); `gemv.rs` the single-row (matrix-vector) path.

mod bf16;
mod gemv;
mod microkernel;
mod pack;

use crate::kernels::isa::{Isa, Level};
use gemv::{gemv_row, gemv_rows, GEMV_ROWS};
use microkernel::{micro_kernel, MicroKernel, NC};
use pack::{allocate_packing, pack_a, pack_b, PACK};
use rayon::prelude::*;

/// Whether a product may use the rayon pool. Products issued from inside a parallel loop
/// (attention, one per head) run single-threaded; the big projections use every thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    Single,
    Pool,
}

/// Below this many multiply-adds a product runs on one thread (splitting costs more).
const PARALLEL_MIN_FLOPS: usize = 1 << 18;

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
    if Isa::active().bf16 {
        bf16::prepare_thread();
    }
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
    sgemm_on(Isa::active().level, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads)
}

/// Panics unless every element the shapes and leading dimensions address lies inside the slices.
#[allow(clippy::too_many_arguments)]
fn check_shapes(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    a_len: usize,
    lda: usize,
    b_len: usize,
    ldb: usize,
    c_len: usize,
    ldc: usize,
) {
    let (a_rows, a_cols) = if trans_a { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if trans_b { (n, k) } else { (k, n) };
    assert!(lda >= a_cols && ldb >= b_cols && ldc >= n, "sgemm: leading dimension too small");
    assert!(a_rows == 0 || a_len >= (a_rows - 1) * lda + a_cols, "sgemm: A too short");
    assert!(b_rows == 0 || b_len >= (b_rows - 1) * ldb + b_cols, "sgemm: B too short");
    assert!(c_len >= (m - 1) * ldc + n, "sgemm: C too short");
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
    gemm_raw(Path::F32(Isa::active().level), trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads)
}

/// [`sgemm`] on the micro-kernel of one instruction-set level (the tests compare every level
/// the CPU has with the scalar one).
///
/// # Panics
/// If this CPU lacks `level`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_on(
    level: Level,
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
    assert!(level <= Isa::detected().level, "sgemm_on: this CPU lacks {level:?}");
    gemm_checked(Path::F32(level), trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads)
}

/// [`sgemm`] with both operands rounded to bfloat16 (round to nearest even, as
/// `precision::round_bf16`) and multiplied with AVX-512 BF16's `vdpbf16ps`: exact products
/// of bf16 pairs, accumulated in f32. On operands that are already bf16 values (autocast's
/// linear layer rounds them first) it computes the same exact products as [`sgemm`], in a
/// different order of f32 additions.
///
/// # Panics
/// If this CPU lacks AVX-512 BF16 ([`Isa::detected`]).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_bf16(
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
    let cpu = Isa::detected();
    assert!(cpu.level >= Level::Avx512 && cpu.bf16, "sgemm_bf16: this CPU ({}) lacks AVX-512 BF16", cpu.name());
    gemm_checked(Path::Bf16, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads)
}

/// Whether the mixed-precision linear layer multiplies bf16 operands with [`sgemm_bf16`]: the
/// active path has AVX-512 BF16 (`LMLAB_ISA=avx512,no-bf16` turns it off) and `vdpbf16ps`
/// measured faster than f32 FMAs on this CPU (`bf16.rs`). Otherwise the f32 GEMM multiplies
/// the rounded operands: the same exact products, so the numerics contract is the same.
/// `LMLAB_BF16_GEMM=vdpbf16ps` skips the measurement (for tests and benchmarks of the kernel).
pub fn bf16_gemm_in_use() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let isa = Isa::active();
    let forced = *FORCED.get_or_init(|| std::env::var("LMLAB_BF16_GEMM").is_ok_and(|v| v == "vdpbf16ps"));
    isa.level >= Level::Avx512 && isa.bf16 && (forced || bf16::bf16_pays_off())
}

pub use bf16::probe_ratio as bf16_probe_ratio;

/// Which loop nest and micro-kernel run a product.
#[derive(Clone, Copy)]
enum Path {
    /// f32 operands on the micro-kernel of one level.
    F32(Level),
    /// Operands packed as bf16 pairs, `vdpbf16ps` (see `bf16.rs`).
    Bf16,
}

#[allow(clippy::too_many_arguments)]
fn gemm_checked(
    path: Path,
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
    check_shapes(trans_a, trans_b, m, n, k, a.len(), lda, b.len(), ldb, c.len(), ldc);
    // SAFETY: check_shapes guarantees every element addressed by the shapes and strides lies
    // inside the slices, and `c` is borrowed mutably so it cannot alias `a` or `b`.
    unsafe {
        gemm_raw(
            path,
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

#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    path: Path,
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
    let (mr, nr, direct_a) = match path {
        Path::F32(level) => {
            let k = micro_kernel(level);
            (k.mr, k.nr, k.direct_a)
        }
        Path::Bf16 => (bf16::MR, bf16::NR, false),
    };
    let serial = |p: &Problem| match path {
        Path::F32(level) => gemm_serial(micro_kernel(level), p),
        Path::Bf16 => bf16::gemm_serial_bf16(p),
    };
    // Element (i, p) of op(A) is a[i·a_rs + p·a_cs]; element (p, j) of op(B) is b[p·b_rs + j·b_cs].
    let (a_rs, a_cs) = if trans_a { (1, lda) } else { (lda, 1) };
    let (b_rs, b_cs) = if trans_b { (1, ldb) } else { (ldb, 1) };
    if m == 1 && k > 0 {
        // One output row (token-by-token decoding): a matrix-vector product streams B once;
        // packing it first would read it twice.
        gemv_row(n, k, alpha, a, a_cs, b, b_rs, b_cs, beta, c, threads);
        return;
    }
    if m <= GEMV_ROWS && k > 0 && a_cs == 1 && b_rs == 1 && matches!(path, Path::F32(_)) {
        // A few rows (a decode step of a small batch) times a linear layer's weights: stream
        // each weight row once for all of them (the packed product packs B per call and, for
        // m ≤ 16, spends most of its time packing: docs/SERVING.md "Load test").
        gemv_rows(m, n, k, alpha, a, a_rs, b, b_cs, beta, c, ldc, threads);
        return;
    }
    let p = Problem { m, n, k, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c, ldc };
    let parts = match threads {
        Threads::Pool if m * n * k >= PARALLEL_MIN_FLOPS => rayon::current_num_threads().max(1),
        _ => 1,
    };
    if parts == 1 {
        serial(&p);
        return;
    }
    // Split in whole micro-tiles so that no thread repeats another's packing where avoidable.
    // Splitting columns gives each thread its own share of B to pack; splitting rows makes
    // every thread pack all of B (k·n) but only its rows of A. Row-major A is read in place, so
    // columns win unless there are too few of them; transposed A is packed too, so the smaller
    // operand is the one duplicated.
    let (row_tiles, col_tiles) = (m.div_ceil(mr), n.div_ceil(nr));
    let split_rows = if a_cs == 1 && direct_a { col_tiles < 2 * parts && row_tiles > col_tiles } else { n <= m };
    let (tiles, tile) = if split_rows { (row_tiles, mr) } else { (col_tiles, nr) };
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
            serial(&sub);
        }
    });
}

/// One product C = alpha·op(A)·op(B) + beta·C over raw pointers and strides.
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

/// C = beta·C (a product with k = 0; beta = 0 overwrites, NaN included).
unsafe fn scale_c(p: &Problem) {
    for i in 0..p.m {
        for j in 0..p.n {
            let cij = p.c.add(i * p.ldc + j);
            *cij = if p.beta == 0.0 { 0.0 } else { p.beta * *cij };
        }
    }
}

/// The BLIS loop nest on one thread.
unsafe fn gemm_serial(kernel: &MicroKernel, p: &Problem) {
    if p.k == 0 {
        scale_c(p);
        return;
    }
    PACK.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (pa, pb) = &mut *bufs;
        if pb.is_empty() {
            allocate_packing(pa, pb);
        }
        let (mr, nr, kc_max, mc_max) = (kernel.mr, kernel.nr, kernel.kc, kernel.mc);
        for jc in (0..p.n).step_by(NC) {
            let nc = NC.min(p.n - jc);
            for pc in (0..p.k).step_by(kc_max) {
                let kc = kc_max.min(p.k - pc);
                // Only the first k-block applies the caller's beta; later blocks accumulate.
                let beta = if pc == 0 { p.beta } else { 1.0 };
                pack_b(pb, p.b.add(pc * p.b_rs + jc * p.b_cs), p.b_rs, p.b_cs, kc, nc, nr);
                // Row-major A (a_cs = 1) is read in place by kernels that take it so (`direct_a`):
                // a micro-tile's rows are contiguous streams that stay in L1/L2 across the B
                // panels. Transposed A (columns contiguous) would touch a new cache line per k
                // step, so it is packed, as is a last panel of fewer than MR rows (zero-padded,
                // so the micro-kernel never reads past the matrix).
                let direct = p.a_cs == 1 && kernel.direct_a;
                for ic in (0..p.m).step_by(mc_max) {
                    let mc = mc_max.min(p.m - ic);
                    let full = if direct { mc / mr * mr } else { 0 };
                    if full < mc {
                        pack_a(pa, p.a.add((ic + full) * p.a_rs + pc * p.a_cs), p.a_rs, p.a_cs, mc - full, kc, mr);
                    }
                    for jr in (0..nc).step_by(nr) {
                        let nrv = nr.min(nc - jr);
                        let bp = pb.as_ptr().add(jr * kc);
                        for ir in (0..mc).step_by(mr) {
                            let row = ic + ir;
                            let mrv = mr.min(mc - ir);
                            let cp = p.c.add(row * p.ldc + jc + jr);
                            if ir < full {
                                let ap = p.a.add(row * p.a_rs + pc * p.a_cs);
                                (kernel.f)(kc, ap, p.a_rs, p.a_cs, bp, cp, p.ldc, p.alpha, beta, mrv, nrv);
                            } else {
                                let ap = pa.as_ptr().add((ir - full) * kc);
                                (kernel.f)(kc, ap, 1, mr, bp, cp, p.ldc, p.alpha, beta, mrv, nrv);
                            }
                        }
                    }
                }
            }
        }
    });
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

    fn check(level: Level, m: usize, n: usize, k: usize, threads: Threads) {
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
                sgemm_on(level, ta, tb, m, n, k, 1.0, &a, lda, &b, ldb, 0.0, &mut c, n, threads);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - y).abs() < tol, "{level:?} {m}x{n}x{k} ta={ta} tb={tb}: {x} vs {y}");
                }
                sgemm_on(level, ta, tb, m, n, k, 0.5, &a, lda, &b, ldb, 1.0, &mut c, n, threads);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - 1.5 * y).abs() < tol, "{level:?} accumulate {m}x{n}x{k} ta={ta} tb={tb}");
                }
            }
        }
    }

    /// Every level this CPU has (the scalar one included) on the same shapes; levels it lacks
    /// are reported as skipped.
    fn levels() -> Vec<Level> {
        let cpu = Isa::detected().level;
        for l in [Level::Avx2, Level::Avx512] {
            if l > cpu {
                eprintln!("SKIPPED gemm {l:?}: this CPU ({}) lacks it", Isa::detected().name());
            }
        }
        [Level::Scalar, Level::Avx2, Level::Avx512].into_iter().filter(|l| *l <= cpu).collect()
    }

    #[test]
    fn matches_naive_on_edge_and_blocked_shapes() {
        // Shapes below, at and above each micro-tile (6×16, 14×32), the k block (256) and the
        // row blocks (112, 120).
        let shapes = [
            (1, 1, 1),
            (7, 5, 9),
            (6, 16, 3),
            (14, 32, 5),
            (13, 33, 300),
            (130, 17, 70),
            (64, 64, 32),
            (29, 95, 513),
            (16, 200, 700),
            (0, 3, 4),
            (3, 4, 0),
        ];
        for level in levels() {
            for &(m, n, k) in &shapes {
                check(level, m, n, k, Threads::Single);
                check(level, m, n, k, Threads::Pool);
            }
        }
    }

    #[test]
    fn parallel_split_is_bit_identical_to_serial() {
        let (m, n, k) = (257, 190, 300);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        for level in levels() {
            let mut c1 = vec![0.0; m * n];
            let mut c2 = vec![0.0; m * n];
            sgemm_on(level, false, true, m, n, k, 1.0, &a, k, &b, k, 0.0, &mut c1, n, Threads::Single);
            rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(|| {
                sgemm_on(level, false, true, m, n, k, 1.0, &a, k, &b, k, 0.0, &mut c2, n, Threads::Pool);
            });
            assert_eq!(c1, c2, "{level:?}");
        }
    }

    /// The bf16 path against the naive product of the bf16-rounded operands (every transpose,
    /// edge tiles, odd k, several k blocks, beta 0 and 1).
    #[test]
    fn bf16_matches_naive_on_rounded_operands() {
        let cpu = Isa::detected();
        if !(cpu.level >= Level::Avx512 && cpu.bf16) {
            eprintln!("SKIPPED gemm bf16: this CPU ({}) lacks AVX-512 BF16", cpu.name());
            return;
        }
        use crate::kernels::precision::round_bf16;
        for &(m, n, k) in &[(1, 1, 1), (7, 5, 9), (14, 32, 6), (29, 95, 513), (130, 47, 1100), (3, 4, 0)] {
            let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
            let (ar, br): (Vec<f32>, Vec<f32>) =
                (a.iter().map(|&x| round_bf16(x)).collect(), b.iter().map(|&x| round_bf16(x)).collect());
            for ta in [false, true] {
                for tb in [false, true] {
                    let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
                    let want = naive(ta, tb, m, n, k, &ar, &br);
                    let tol = 1e-5 * (k as f32).max(1.0);
                    for threads in [Threads::Single, Threads::Pool] {
                        let mut c = vec![f32::NAN; m * n];
                        sgemm_bf16(ta, tb, m, n, k, 1.0, &a, lda, &b, ldb, 0.0, &mut c, n, threads);
                        for (x, y) in c.iter().zip(&want) {
                            assert!((x - y).abs() < tol, "bf16 {m}x{n}x{k} ta={ta} tb={tb}: {x} vs {y}");
                        }
                        sgemm_bf16(ta, tb, m, n, k, 0.5, &a, lda, &b, ldb, 1.0, &mut c, n, threads);
                        for (x, y) in c.iter().zip(&want) {
                            assert!((x - 1.5 * y).abs() < tol, "bf16 accumulate {m}x{n}x{k} ta={ta} tb={tb}");
                        }
                    }
                }
            }
        }
    }
}
