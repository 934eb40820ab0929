//! GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative
//! Pre-trained Transformers") and round-to-nearest (RTN) quantization of one linear layer's
//! weight, as pure math on flat slices.
//!
//! The weight is `rows × cols` row-major f32 in nn.Linear layout (a row per output channel, a
//! column per input feature). Both methods quantize with the asymmetric min/max quantizer of
//! the reference implementation (IST-DASLab/gptq, quant.py `Quantizer` with `perchannel=True,
//! sym=False`): per row and per group of `group` columns, `scale = (max − min) / (2^bits − 1)`
//! over the group's values and 0, `zero = round(−min / scale)`,
//! `code = clamp(round(w / scale) + zero, 0, 2^bits − 1)`, `ŵ = scale · (code − zero)`; rounding
//! is half to even, as `torch.round`. `group == cols` is the reference's per-channel `groupsize=-1`: the single
//! group's parameters are found from W before dead columns are zeroed.
//!
//! GPTQ follows gptq.py `fasterquant` step by step, in f64: dead columns (H_ii = 0) get
//! H_ii = 1 and W[:, i] = 0; with `act_order`, columns are processed by decreasing H diagonal
//! (a stable sort: ties keep column order; torch's argsort leaves them unspecified);
//! `percdamp` × mean(diag H) is added to the diagonal; U is the upper Cholesky factor of H⁻¹;
//! columns are quantized one at a time in blocks of `block`, each column's error
//! (w − ŵ)/U_ii spread over the block's later columns at once and over the columns after the
//! block when the block ends. Groups are the reference's `static_groups=False` variant: a group
//! is a run of `group` consecutive columns in processing (permuted) order, and its scale and
//! zero are found when its first column is reached, from the columns of W as updated up to the
//! start of the current block (the reference reads `W`, not the block's running copy `W1`).
//!
//! Every row's computation is independent of the others (the quantizer is per row), so rows run
//! in parallel with rayon; the f64 products and sums per element are the reference's.

use super::linalg::upper_cholesky_of_inverse;
use anyhow::{bail, ensure, Result};
use rayon::prelude::*;

/// The default block width of GPTQ's lazy batch updates (the reference's `blocksize`).
pub const DEFAULT_BLOCK: usize = 128;

/// Settings of [`gptq`].
#[derive(Clone, Debug, PartialEq)]
pub struct GptqConfig {
    /// Bits per weight: 2, 3, 4 or 8.
    pub bits: u32,
    /// Columns per quantization group; must divide `cols`. `cols` means per channel.
    pub group: usize,
    /// Dampening: this fraction of the mean of H's diagonal is added to the diagonal.
    pub percdamp: f64,
    /// Process columns by decreasing H diagonal (the reference's `actorder`).
    pub act_order: bool,
    /// Columns per lazy-update block.
    pub block: usize,
}

impl GptqConfig {
    /// `bits` and `group` with the reference's defaults: `percdamp` 0.01, no act-order, blocks
    /// of 128.
    pub fn new(bits: u32, group: usize) -> Self {
        GptqConfig { bits, group, percdamp: 0.01, act_order: false, block: DEFAULT_BLOCK }
    }
}

/// A quantized weight.
#[derive(Clone, Debug)]
pub struct Quantized {
    /// Output channels of the weight.
    pub rows: usize,
    /// Input features of the weight.
    pub cols: usize,
    /// Bits per code.
    pub bits: u32,
    /// Columns per group (`cols`: per channel).
    pub group: usize,
    /// `rows × cols`, original column order: codes in 0..2^bits.
    pub codes: Vec<u8>,
    /// `rows × (cols / group)`: each group's scale, groups in processing order (see `g_idx`).
    pub scale: Vec<f32>,
    /// `rows × (cols / group)`: each group's zero point (an integer, stored as f32).
    pub zero: Vec<f32>,
    /// With act-order, `perm[k]` is the original column processed k-th; None otherwise.
    pub perm: Option<Vec<usize>>,
    /// Per original column, its group: index into a row of `scale` and `zero`.
    pub g_idx: Vec<u32>,
    /// `rows × cols`, original column order: `scale · (code − zero)`.
    pub dequant: Vec<f32>,
    /// GPTQ's own estimate of its error, Σ (w − ŵ)² / (2·U_ii²) (the reference's `Losses`
    /// summed); None for RTN.
    pub loss: Option<f64>,
}

fn check_shape(w: &[f32], rows: usize, cols: usize, bits: u32, group: usize) -> Result<()> {
    ensure!(matches!(bits, 2 | 3 | 4 | 8), "quantization bits must be 2, 3, 4 or 8, got {bits}");
    ensure!(rows > 0 && cols > 0, "weight must not be empty (got {rows}×{cols})");
    ensure!(w.len() == rows * cols, "weight has {} values, expected {rows}×{cols} = {}", w.len(), rows * cols);
    ensure!(group > 0 && cols.is_multiple_of(group), "group size {group} does not divide the {cols} columns");
    Ok(())
}

/// Scale and zero of the reference quantizer over `x` (one row's group).
fn find_params(x: &[f64], maxq: f64) -> (f64, f64) {
    let mut xmin = x.iter().copied().fold(f64::INFINITY, f64::min).min(0.0);
    let mut xmax = x.iter().copied().fold(f64::NEG_INFINITY, f64::max).max(0.0);
    if xmin == 0.0 && xmax == 0.0 {
        xmin = -1.0;
        xmax = 1.0;
    }
    let scale = (xmax - xmin) / maxq;
    (scale, (-xmin / scale).round_ties_even())
}

/// The code of `x` and its dequantized value.
#[inline]
fn quantize(x: f64, scale: f64, zero: f64, maxq: f64) -> (f64, f64) {
    let q = ((x / scale).round_ties_even() + zero).clamp(0.0, maxq);
    (q, scale * (q - zero))
}

/// Round-to-nearest: each row's groups of `group` columns quantized with their own min/max
/// scale and zero, no error compensation.
pub fn rtn(w: &[f32], rows: usize, cols: usize, bits: u32, group: usize) -> Result<Quantized> {
    check_shape(w, rows, cols, bits, group)?;
    let maxq = ((1u32 << bits) - 1) as f64;
    let groups = cols / group;
    let mut out = Quantized::empty(rows, cols, bits, group, None);
    out.codes
        .par_chunks_mut(cols)
        .zip(out.dequant.par_chunks_mut(cols))
        .zip(out.scale.par_chunks_mut(groups).zip(out.zero.par_chunks_mut(groups)))
        .enumerate()
        .for_each(|(r, ((codes, deq), (scales, zeros)))| {
            let row: Vec<f64> = w[r * cols..(r + 1) * cols].iter().map(|&x| x as f64).collect();
            for g in 0..groups {
                let cs = g * group..(g + 1) * group;
                let (s, z) = find_params(&row[cs.clone()], maxq);
                scales[g] = s as f32;
                zeros[g] = z as f32;
                for c in cs {
                    let (q, d) = quantize(row[c], s, z, maxq);
                    codes[c] = q as u8;
                    deq[c] = d as f32;
                }
            }
        });
    Ok(out)
}

impl Quantized {
    fn empty(rows: usize, cols: usize, bits: u32, group: usize, perm: Option<Vec<usize>>) -> Self {
        let groups = cols / group;
        let mut g_idx = vec![0u32; cols];
        for k in 0..cols {
            let c = perm.as_ref().map_or(k, |p| p[k]);
            g_idx[c] = (k / group) as u32;
        }
        Quantized {
            rows,
            cols,
            bits,
            group,
            codes: vec![0; rows * cols],
            scale: vec![0.0; rows * groups],
            zero: vec![0.0; rows * groups],
            perm,
            g_idx,
            dequant: vec![0.0; rows * cols],
            loss: None,
        }
    }
}

/// GPTQ of weight `w` (`rows × cols`) against Hessian `h` (`cols × cols`, H = 2·XᵀX/n, as
/// [`HessianAccumulator`] gives it). Fails on bad settings or shapes, and when H + damping is
/// not positive definite.
pub fn gptq(w: &[f32], rows: usize, cols: usize, h: &[f64], cfg: &GptqConfig) -> Result<Quantized> {
    check_shape(w, rows, cols, cfg.bits, cfg.group)?;
    ensure!(h.len() == cols * cols, "Hessian has {} values, expected {cols}×{cols} = {}", h.len(), cols * cols);
    ensure!(cfg.block > 0, "GPTQ block size must be positive");
    ensure!(cfg.percdamp.is_finite() && cfg.percdamp >= 0.0, "percdamp must be finite and ≥ 0, got {}", cfg.percdamp);
    if let Some(i) = h.iter().position(|x| !x.is_finite()) {
        bail!("Hessian entry ({}, {}) is not finite", i / cols, i % cols);
    }
    let (bits, group, block) = (cfg.bits, cfg.group, cfg.block);
    let maxq = ((1u32 << bits) - 1) as f64;
    let per_channel = group == cols;
    let groups = cols / group;

    let mut h = h.to_vec();
    let dead: Vec<bool> = (0..cols).map(|i| h[i * cols + i] == 0.0).collect();
    for i in (0..cols).filter(|&i| dead[i]) {
        h[i * cols + i] = 1.0;
    }
    let perm: Option<Vec<usize>> = cfg.act_order.then(|| {
        let mut p: Vec<usize> = (0..cols).collect();
        p.sort_by(|&a, &b| h[b * cols + b].total_cmp(&h[a * cols + a]));
        p
    });
    let order: Vec<usize> = perm.clone().unwrap_or_else(|| (0..cols).collect());
    let mut hp: Vec<f64> = (0..cols * cols).map(|i| h[order[i / cols] * cols + order[i % cols]]).collect();
    let damp = cfg.percdamp * (0..cols).map(|i| hp[i * cols + i]).sum::<f64>() / cols as f64;
    for i in 0..cols {
        hp[i * cols + i] += damp;
    }
    let u = upper_cholesky_of_inverse(&hp, cols).map_err(|e| {
        anyhow::anyhow!("GPTQ: H + {damp:e}·I (percdamp {}) is not positive definite: {e}", cfg.percdamp)
    })?;

    let mut out = Quantized::empty(rows, cols, bits, group, perm);
    let losses: Vec<f64> = out
        .codes
        .par_chunks_mut(cols)
        .zip(out.dequant.par_chunks_mut(cols))
        .zip(out.scale.par_chunks_mut(groups).zip(out.zero.par_chunks_mut(groups)))
        .enumerate()
        .map(|(r, ((codes, deq), (scales, zeros)))| {
            let orig = &w[r * cols..(r + 1) * cols];
            // W in processing order, dead columns zeroed; updated at the end of each block.
            let mut wo: Vec<f64> = order.iter().map(|&c| if dead[c] { 0.0 } else { orig[c] as f64 }).collect();
            let (mut s, mut z) = (0.0, 0.0);
            if per_channel {
                let w64: Vec<f64> = orig.iter().map(|&x| x as f64).collect();
                (s, z) = find_params(&w64, maxq);
                scales[0] = s as f32;
                zeros[0] = z as f32;
            }
            let mut loss = 0.0;
            let mut w1 = vec![0.0f64; block];
            let mut err = vec![0.0f64; block];
            let mut tail = vec![0.0f64; cols];
            for i1 in (0..cols).step_by(block) {
                let i2 = (i1 + block).min(cols);
                let count = i2 - i1;
                w1[..count].copy_from_slice(&wo[i1..i2]);
                for i in 0..count {
                    let col = i1 + i;
                    if !per_channel && col.is_multiple_of(group) {
                        (s, z) = find_params(&wo[col..col + group], maxq);
                        scales[col / group] = s as f32;
                        zeros[col / group] = z as f32;
                    }
                    let x = w1[i];
                    let (q, dq) = quantize(x, s, z, maxq);
                    let c = order[col];
                    codes[c] = q as u8;
                    deq[c] = dq as f32;
                    let d = u[col * cols + col];
                    loss += (x - dq) * (x - dq) / (d * d) / 2.0;
                    let e = (x - dq) / d;
                    err[i] = e;
                    let urow = &u[col * cols + i1..col * cols + i2];
                    for j in i..count {
                        w1[j] -= e * urow[j];
                    }
                }
                // W[:, i2:] -= Err1 · U[i1:i2, i2:], the product summed before the subtraction.
                let t = &mut tail[i2..];
                t.fill(0.0);
                for i in 0..count {
                    let e = err[i];
                    let urow = &u[(i1 + i) * cols + i2..(i1 + i + 1) * cols];
                    for (tj, uj) in t.iter_mut().zip(urow) {
                        *tj += e * uj;
                    }
                }
                for (wj, tj) in wo[i2..].iter_mut().zip(t.iter()) {
                    *wj -= tj;
                }
            }
            loss
        })
        .collect();
    out.loss = Some(losses.iter().sum());
    Ok(out)
}

/// Accumulates the GPTQ Hessian H = 2·XᵀX / nsamples over batches of a layer's inputs, in f64,
/// as the reference's `add_batch`: before each batch H is scaled by nsamples / (nsamples + b),
/// then nsamples grows by b and the batch, scaled by √(2 / nsamples), adds its XᵀX.
#[derive(Clone, Debug)]
pub struct HessianAccumulator {
    cols: usize,
    h: Vec<f64>,
    nsamples: usize,
}

impl HessianAccumulator {
    pub fn new(cols: usize) -> Self {
        HessianAccumulator { cols, h: vec![0.0; cols * cols], nsamples: 0 }
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Samples seen so far (the reference's `nsamples`).
    pub fn nsamples(&self) -> usize {
        self.nsamples
    }

    /// Adds a batch `x` of `N × cols` input rows that counts as `samples` samples. The
    /// reference counts a (B, T, cols) batch as B samples and a 2-D (N, cols) batch as 1; pass
    /// `samples = N` to make every row a sample, so that H = 2·XᵀX / (rows so far).
    pub fn add_batch(&mut self, x: &[f32], samples: usize) -> Result<()> {
        let cols = self.cols;
        ensure!(cols > 0, "Hessian accumulator has no columns");
        ensure!(
            x.len().is_multiple_of(cols),
            "input batch of {} values is not a whole number of {cols}-wide rows",
            x.len()
        );
        ensure!(samples > 0, "a batch must count as at least one sample");
        let n = x.len() / cols;
        let ratio = self.nsamples as f64 / (self.nsamples + samples) as f64;
        self.h.iter_mut().for_each(|v| *v *= ratio);
        self.nsamples += samples;
        let c = (2.0 / self.nsamples as f64).sqrt();
        // Xᵀ scaled, one contiguous row per feature, so each H entry is one dot product.
        let mut xt = vec![0.0f64; cols * n];
        for (r, row) in x.chunks_exact(cols).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                xt[j * n + r] = c * v as f64;
            }
        }
        // Upper triangle in parallel (rows of H), then mirrored: H stays exactly symmetric.
        self.h.par_chunks_mut(cols).enumerate().for_each(|(i, hrow)| {
            let a = &xt[i * n..(i + 1) * n];
            for j in i..cols {
                hrow[j] += dot(a, &xt[j * n..(j + 1) * n]);
            }
        });
        for i in 0..cols {
            for j in 0..i {
                self.h[i * cols + j] = self.h[j * cols + i];
            }
        }
        Ok(())
    }

    /// H (`cols × cols`, row-major).
    pub fn hessian(&self) -> &[f64] {
        &self.h
    }

    pub fn hessian_f32(&self) -> Vec<f32> {
        self.h.iter().map(|&v| v as f32).collect()
    }

    pub fn into_hessian(self) -> Vec<f64> {
        self.h
    }
}

/// Dot product with four partial sums (vectorizes; the order differs from a plain loop only at
/// rounding level).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

/// ‖X·(W − Ŵ)ᵀ‖²: the squared error the quantized weight adds to the layer's outputs on inputs
/// `x` (`n × cols`), summed in f64.
pub fn output_error(w: &[f32], w_hat: &[f32], rows: usize, cols: usize, x: &[f32]) -> f64 {
    assert_eq!(w.len(), rows * cols);
    assert_eq!(w_hat.len(), rows * cols);
    assert_eq!(x.len() % cols, 0);
    let delta: Vec<f64> = w.iter().zip(w_hat).map(|(a, b)| *a as f64 - *b as f64).collect();
    x.par_chunks(cols)
        .map(|xr| {
            let xr: Vec<f64> = xr.iter().map(|&v| v as f64).collect();
            delta.chunks_exact(cols).map(|d| dot(d, &xr).powi(2)).sum::<f64>()
        })
        .sum()
}
