//! Principal components of a set of vectors (rows), for 2-D pictures of representations:
//! the top components of the centred data's covariance by power iteration with deflation, in
//! f64. Signs are fixed so that each component's largest-magnitude loading is positive
//! (scikit-learn's `svd_flip` convention fixes them by the projections instead; the picture is
//! the same up to a mirror).

use anyhow::{ensure, Result};

/// The projection of each row onto the top `k` components, and each component's share of the
/// total variance.
#[derive(Clone, Debug)]
pub struct Pca {
    /// (rows, k)
    pub coords: Vec<Vec<f64>>,
    pub explained_ratio: Vec<f64>,
}

/// PCA of `x` (rows × dim, row-major) onto `k` components.
pub fn pca(x: &[f32], rows: usize, dim: usize, k: usize) -> Result<Pca> {
    ensure!(rows >= 2 && dim >= 1 && x.len() == rows * dim, "PCA needs at least two vectors of equal length");
    ensure!(k >= 1 && k <= dim, "PCA: {k} components of {dim}-dimensional vectors");
    let mut mean = vec![0f64; dim];
    for r in x.chunks_exact(dim) {
        mean.iter_mut().zip(r).for_each(|(m, v)| *m += *v as f64 / rows as f64);
    }
    let centred: Vec<f64> = x.chunks_exact(dim).flat_map(|r| r.iter().zip(&mean).map(|(v, m)| *v as f64 - m)).collect();
    // Covariance (dim, dim) / (rows − 1).
    let mut cov = vec![0f64; dim * dim];
    for r in centred.chunks_exact(dim) {
        for i in 0..dim {
            let ri = r[i];
            for j in i..dim {
                cov[i * dim + j] += ri * r[j];
            }
        }
    }
    for i in 0..dim {
        for j in i..dim {
            let v = cov[i * dim + j] / (rows - 1) as f64;
            cov[i * dim + j] = v;
            cov[j * dim + i] = v;
        }
    }
    let total: f64 = (0..dim).map(|i| cov[i * dim + i]).sum();
    let mut comps: Vec<Vec<f64>> = Vec::with_capacity(k);
    let mut ratios = Vec::with_capacity(k);
    for c in 0..k {
        let mut v: Vec<f64> = (0..dim).map(|i| 1.0 + ((i * 7919 + c * 104729) % 1000) as f64 / 1000.0).collect();
        let mut lambda = 0.0;
        for _ in 0..1000 {
            let mut w: Vec<f64> = (0..dim).map(|i| (0..dim).map(|j| cov[i * dim + j] * v[j]).sum()).collect();
            for u in &comps {
                let d: f64 = w.iter().zip(u).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(u).for_each(|(a, b)| *a -= d * b);
            }
            let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            w.iter_mut().for_each(|a| *a /= norm);
            let change: f64 = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
            v = w;
            lambda = norm;
            if change < 1e-12 {
                break;
            }
        }
        let big = v.iter().copied().fold(0f64, |m, a| if a.abs() > m.abs() { a } else { m });
        if big < 0.0 {
            v.iter_mut().for_each(|a| *a = -*a);
        }
        ratios.push(if total > 0.0 { lambda / total } else { 0.0 });
        comps.push(v);
    }
    let coords = centred
        .chunks_exact(dim)
        .map(|r| comps.iter().map(|u| r.iter().zip(u).map(|(a, b)| a * b).sum()).collect())
        .collect();
    Ok(Pca { coords, explained_ratio: ratios })
}
