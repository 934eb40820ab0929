//! The small dense linear algebra GPTQ needs, in f64 on row-major n×n matrices: Cholesky,
//! the inverse of a triangular factor, and the upper Cholesky factor of a matrix's inverse.

use anyhow::{bail, Result};

/// The lower Cholesky factor L of a symmetric positive definite matrix `a` (a = L·Lᵀ). Reads
/// only the lower triangle of `a`. Fails, naming the pivot, when `a` is not positive definite.
pub fn cholesky_lower(a: &[f64], n: usize) -> Result<Vec<f64>> {
    assert_eq!(a.len(), n * n, "cholesky_lower: matrix is not {n}×{n}");
    let mut l = vec![0.0f64; n * n];
    for j in 0..n {
        let s = a[j * n + j] - l[j * n..j * n + j].iter().map(|x| x * x).sum::<f64>();
        if !(s > 0.0 && s.is_finite()) {
            bail!("matrix is not positive definite: Cholesky pivot {j} of {n} is {s:e}");
        }
        let d = s.sqrt();
        l[j * n + j] = d;
        for i in j + 1..n {
            let (upper, lower) = l.split_at_mut(i * n);
            let dot: f64 = lower[..j].iter().zip(&upper[j * n..j * n + j]).map(|(x, y)| x * y).sum();
            lower[j] = (a[i * n + j] - dot) / d;
        }
    }
    Ok(l)
}

/// The inverse of a lower triangular matrix with a positive diagonal (lower triangular too).
pub fn inverse_lower(l: &[f64], n: usize) -> Vec<f64> {
    assert_eq!(l.len(), n * n, "inverse_lower: matrix is not {n}×{n}");
    let mut inv = vec![0.0f64; n * n];
    for i in 0..n {
        let d = l[i * n + i];
        // Row i of L·inv = row i of the identity: inv[i][j] = -(Σ_{k=j}^{i-1} L[i][k]·inv[k][j]) / L[i][i].
        for j in 0..i {
            let mut s = 0.0;
            for k in j..i {
                s += l[i * n + k] * inv[k * n + j];
            }
            inv[i * n + j] = -s / d;
        }
        inv[i * n + i] = 1.0 / d;
    }
    inv
}

/// The upper Cholesky factor U of a⁻¹ (a⁻¹ = Uᵀ·U), as the reference computes it with
/// `cholesky_inverse(cholesky(a))` then `cholesky(·, upper=True)`. Fails when `a` is not
/// positive definite.
pub fn upper_cholesky_of_inverse(a: &[f64], n: usize) -> Result<Vec<f64>> {
    let linv = inverse_lower(&cholesky_lower(a, n)?, n);
    // a⁻¹ = L⁻ᵀ·L⁻¹: entry (p, q) = Σ_k L⁻¹[k][p]·L⁻¹[k][q]; only the lower triangle (q ≤ p).
    let mut ainv = vec![0.0f64; n * n];
    for k in 0..n {
        let row = &linv[k * n..k * n + k + 1];
        for p in 0..=k {
            let rp = row[p];
            let out = &mut ainv[p * n..p * n + p + 1];
            for (o, rq) in out.iter_mut().zip(row) {
                *o += rp * rq;
            }
        }
    }
    let lo = cholesky_lower(&ainv, n)?;
    let mut u = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            u[j * n + i] = lo[i * n + j];
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_reconstruct_the_matrix_and_its_inverse() {
        let n = 5;
        // a = B·Bᵀ + n·I: symmetric positive definite.
        let b: Vec<f64> = (0..n * n).map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] =
                    (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum::<f64>() + if i == j { n as f64 } else { 0.0 };
            }
        }
        let l = cholesky_lower(&a, n).unwrap();
        let u = upper_cholesky_of_inverse(&a, n).unwrap();
        for i in 0..n {
            for j in 0..n {
                let llt: f64 = (0..n).map(|k| l[i * n + k] * l[j * n + k]).sum();
                assert!((llt - a[i * n + j]).abs() < 1e-12);
                // a · (Uᵀ·U) = I.
                let ainv_col = |r: usize| -> f64 { (0..n).map(|k| u[k * n + r] * u[k * n + j]).sum() };
                let prod: f64 = (0..n).map(|r| a[i * n + r] * ainv_col(r)).sum();
                assert!((prod - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
                if j < i {
                    assert_eq!(u[i * n + j], 0.0);
                }
            }
        }
    }

    #[test]
    fn indefinite_matrix_is_an_error() {
        let a = [1.0, 2.0, 2.0, 1.0];
        let e = cholesky_lower(&a, 2).unwrap_err().to_string();
        assert!(e.contains("not positive definite") && e.contains("pivot 1"), "{e}");
    }
}
