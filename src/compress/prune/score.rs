//! Importance scores of the weights of one linear layer W (rows = outputs, cols = inputs), in
//! f64: magnitude |W_ij|, and Wanda's |W_ij| · ‖X_j‖₂ (Sun et al., 2023), where ‖X_j‖₂ is the
//! L2 norm of input feature j over every calibration token.

use anyhow::{ensure, Result};

/// |W_ij|.
pub fn magnitude(w: &[f32]) -> Vec<f64> {
    w.iter().map(|x| x.abs() as f64).collect()
}

/// Wanda's score |W_ij| · ‖X_j‖₂ for W (rows, cols) and the inputs' squared column norms
/// `norms.sum_sq` (cols).
pub fn wanda(w: &[f32], cols: usize, norms: &ColumnNorms) -> Vec<f64> {
    debug_assert_eq!(norms.sum_sq.len(), cols);
    let scale: Vec<f64> = norms.sum_sq.iter().map(|s| s.sqrt()).collect();
    w.chunks(cols).flat_map(|row| row.iter().zip(&scale).map(|(x, s)| x.abs() as f64 * s)).collect()
}

/// The squared L2 norm of every input feature of one linear layer over the calibration tokens
/// seen so far: Σ_t X_tj² (f64). The reference keeps this divided by the number of calibration
/// samples (`scaler_row`); a factor common to all columns changes no comparison, so the plain
/// sum is kept.
#[derive(Clone, Debug)]
pub struct ColumnNorms {
    /// Σ_t X_tj², one per input column.
    pub sum_sq: Vec<f64>,
    /// Tokens seen.
    pub tokens: usize,
}

impl ColumnNorms {
    pub fn new(cols: usize) -> Self {
        ColumnNorms { sum_sq: vec![0.0; cols], tokens: 0 }
    }

    /// Adds the inputs `x` (n, cols) of one forward pass.
    pub fn add_batch(&mut self, x: &[f32], n: usize) -> Result<()> {
        let cols = self.sum_sq.len();
        ensure!(x.len() == n * cols, "calibration input has {} values, expected {n}×{cols}", x.len());
        for row in x.chunks(cols) {
            for (s, v) in self.sum_sq.iter_mut().zip(row) {
                *s += (*v as f64) * (*v as f64);
            }
        }
        self.tokens += n;
        Ok(())
    }
}
