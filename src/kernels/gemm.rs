//! Single entry point for f32 matrix products.
//!
//! Every matmul in lmlab goes through [`sgemm`] (safe, slice-checked) or [`sgemm_raw`] (for
//! strided views into shared buffers, e.g. one attention head inside a `(B, T, 3C)` qkv
//! tensor). Keeping one entry point means the GEMM backend can be swapped and measured in one
//! place (see docs/BENCHMARKS.md for the backend comparison).
//!
//! Row-major, BLAS semantics: `C = alpha * op(A) * op(B) + beta * C`, where `op(X)` is `X` or
//! `Xᵀ`, `op(A)` is (m, k), `op(B)` is (k, n) and `C` is (m, n) with leading dimension `ldc`.

use gemm::Parallelism;

/// Whether a product may use the rayon pool. Products issued from inside a parallel loop
/// (attention, one per head) run single-threaded; the big projections use every thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    Single,
    Pool,
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
    assert!(
        lda >= a_cols && ldb >= b_cols && ldc >= n,
        "sgemm: leading dimension too small"
    );
    assert!(
        a_rows == 0 || a.len() >= (a_rows - 1) * lda + a_cols,
        "sgemm: A too short"
    );
    assert!(
        b_rows == 0 || b.len() >= (b_rows - 1) * ldb + b_cols,
        "sgemm: B too short"
    );
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
    if k == 0 {
        // op(A)·op(B) is the zero matrix: C = beta * C.
        for i in 0..m {
            for j in 0..n {
                let p = c.add(i * ldc + j);
                *p = if beta == 0.0 { 0.0 } else { beta * *p };
            }
        }
        return;
    }
    // Row-major X with leading dimension ld: row stride ld, column stride 1; a transpose swaps them.
    let (a_rs, a_cs) = if trans_a {
        (1, lda as isize)
    } else {
        (lda as isize, 1)
    };
    let (b_rs, b_cs) = if trans_b {
        (1, ldb as isize)
    } else {
        (ldb as isize, 1)
    };
    let parallelism = match threads {
        Threads::Single => Parallelism::None,
        Threads::Pool => match rayon::current_num_threads() {
            0 | 1 => Parallelism::None,
            t => Parallelism::Rayon(t),
        },
    };
    // The gemm crate computes dst := alpha_g * dst + beta_g * lhs * rhs (names swapped w.r.t. BLAS).
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        ldc as isize,
        beta != 0.0,
        a,
        a_cs,
        a_rs,
        b,
        b_cs,
        b_rs,
        beta,
        alpha,
        false,
        false,
        false,
        parallelism,
    );
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

    #[test]
    fn all_transpose_combinations_match_naive() {
        let (m, n, k) = (7, 5, 9);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 17 % 13) as f32 - 6.0) / 4.0)
            .collect();
        for ta in [false, true] {
            for tb in [false, true] {
                let lda = if ta { m } else { k };
                let ldb = if tb { k } else { n };
                let want = naive(ta, tb, m, n, k, &a, &b);
                // beta = 0 overwrites whatever is in C; beta = 1 accumulates.
                let mut c = vec![123.0; m * n];
                sgemm(
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    1.0,
                    &a,
                    lda,
                    &b,
                    ldb,
                    0.0,
                    &mut c,
                    n,
                    Threads::Pool,
                );
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - y).abs() < 1e-4, "ta={ta} tb={tb}: {x} vs {y}");
                }
                sgemm(
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    0.5,
                    &a,
                    lda,
                    &b,
                    ldb,
                    1.0,
                    &mut c,
                    n,
                    Threads::Single,
                );
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - 1.5 * y).abs() < 1e-4, "accumulate ta={ta} tb={tb}");
                }
            }
        }
    }
}
