//! Causal dilated 1-D convolution (WaveNet / TCN style): PyTorch's `nn.Conv1d` with a left
//! padding of (K − 1)·d, so that output t sees inputs t, t − d, …, t − (K − 1)·d and never the
//! future. Sequences are kept batch first and channels last, (B, T, C), like every other
//! activation of the engine; the weight is PyTorch's (OC, C, K).
//!
//! `out[b, t, o] = bias[o] + Σ_k Σ_c w[o, c, k] · x[b, t − (K − 1 − k)·d, c]` (x is 0 before t = 0).
//!
//! Each tap k is one GEMM of the shifted rows with the tap's (OC, C) weight slice, which
//! `scratch` holds contiguously (K, OC, C) ([`conv1d_scratch_len`]).

use super::gemm::{sgemm, Threads};

/// Floats of scratch the forward and backward passes need: the weight repacked by tap, and
/// (backward) the taps' gradients.
pub fn conv1d_scratch_len(oc: usize, c: usize, k: usize) -> usize {
    2 * k * oc * c
}

/// Dimensions: batch, time, input channels, output channels, taps, dilation.
#[derive(Clone, Copy, Debug)]
pub struct ConvDims {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub oc: usize,
    pub k: usize,
    pub dilation: usize,
}

impl ConvDims {
    /// How far tap `j` reaches back.
    fn shift(&self, j: usize) -> usize {
        (self.k - 1 - j) * self.dilation
    }
}

/// w (OC, C, K) → taps (K, OC, C).
fn repack(taps: &mut [f32], w: &[f32], d: &ConvDims) {
    for o in 0..d.oc {
        for ci in 0..d.c {
            for j in 0..d.k {
                taps[(j * d.oc + o) * d.c + ci] = w[(o * d.c + ci) * d.k + j];
            }
        }
    }
}

/// out (B, T, OC) from x (B, T, C), w (OC, C, K), bias (OC).
pub fn conv1d_causal_forward(
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    scratch: &mut [f32],
    d: ConvDims,
) {
    let (t, c, oc) = (d.t, d.c, d.oc);
    let taps = &mut scratch[..d.k * oc * c];
    repack(taps, w, &d);
    for row in out[..d.b * t * oc].chunks_exact_mut(oc) {
        match bias {
            Some(b) => row.copy_from_slice(b),
            None => row.fill(0.0),
        }
    }
    for bi in 0..d.b {
        let (xb, ob) = (&x[bi * t * c..(bi + 1) * t * c], &mut out[bi * t * oc..(bi + 1) * t * oc]);
        for j in 0..d.k {
            let s = d.shift(j);
            if s >= t {
                continue;
            }
            // out[s..] += x[..T−s] · W_jᵀ
            let wj = &taps[j * oc * c..(j + 1) * oc * c];
            sgemm(false, true, t - s, oc, c, 1.0, xb, c, wj, c, 1.0, &mut ob[s * oc..], oc, Threads::Pool);
        }
    }
}

/// Backward from dout (B, T, OC): dx (B, T, C) overwritten; dw (OC, C, K) and dbias
/// accumulated.
#[allow(clippy::too_many_arguments)]
pub fn conv1d_causal_backward(
    dx: &mut [f32],
    dw: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    x: &[f32],
    w: &[f32],
    scratch: &mut [f32],
    d: ConvDims,
) {
    let (t, c, oc) = (d.t, d.c, d.oc);
    let (taps, dtaps) = scratch[..2 * d.k * oc * c].split_at_mut(d.k * oc * c);
    repack(taps, w, &d);
    dtaps.fill(0.0);
    dx[..d.b * t * c].fill(0.0);
    for bi in 0..d.b {
        let (xb, gb) = (&x[bi * t * c..(bi + 1) * t * c], &dout[bi * t * oc..(bi + 1) * t * oc]);
        let dxb = &mut dx[bi * t * c..(bi + 1) * t * c];
        for j in 0..d.k {
            let s = d.shift(j);
            if s >= t {
                continue;
            }
            let wj = &taps[j * oc * c..(j + 1) * oc * c];
            // dx[..T−s] += dout[s..] · W_j ; dW_j += dout[s..]ᵀ · x[..T−s]
            sgemm(false, false, t - s, c, oc, 1.0, &gb[s * oc..], oc, wj, c, 1.0, dxb, c, Threads::Pool);
            let dwj = &mut dtaps[j * oc * c..(j + 1) * oc * c];
            sgemm(true, false, oc, c, t - s, 1.0, &gb[s * oc..], oc, xb, c, 1.0, dwj, c, Threads::Pool);
        }
    }
    for o in 0..oc {
        for ci in 0..c {
            for j in 0..d.k {
                dw[(o * c + ci) * d.k + j] += dtaps[(j * oc + o) * c + ci];
            }
        }
    }
    if let Some(db) = dbias {
        for row in dout[..d.b * t * oc].chunks_exact(oc) {
            db.iter_mut().zip(row).for_each(|(a, g)| *a += g);
        }
    }
}
