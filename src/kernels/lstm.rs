//! LSTM layer (PyTorch's `nn.LSTM`, one layer, batch first, zero initial state), forward and
//! backward through time over flat buffers.
//!
//! Gates in PyTorch's order i, f, g, o: pre = x·W_ihᵀ + b_ih + h_{t−1}·W_hhᵀ + b_hh (4H wide),
//! i = σ, f = σ, g = tanh, o = σ of their quarters; c_t = f⊙c_{t−1} + i⊙g; h_t = o⊙tanh(c_t).
//!
//! Buffers (B batch, T steps, I inputs, H hidden):
//! - x (B, T, I), out (B, T, H) — batch first, like the rest of the engine;
//! - the cache the backward pass reads, time-major so that a step is one contiguous block:
//!   `gates` (T, B, 4H) activated gates, `cells` (T, B, H) c_t, `hidden` (T, B, H) h_t;
//! - `scratch` ([`lstm_scratch_len`] floats), cut inside; nothing is allocated.

use super::activation::sigmoid;
use super::matmul::{matmul_backward, matmul_forward};

/// Floats of scratch [`lstm_forward`] and [`lstm_backward`] need.
pub fn lstm_scratch_len(b: usize, t: usize, h: usize) -> usize {
    // forward: x·W_ihᵀ (B·T, 4H), the recurrent product (B, 4H), a zero state (B, H);
    // backward: dpre (B·T, 4H), h_{t−1} (B·T, H), dh and dc carried (2·B·H), a discarded
    // dh (B·T, H).
    let (n, g4) = (b * t, 4 * h);
    (n * g4 + b * g4 + b * h).max(n * g4 + 2 * n * h + 2 * b * h)
}

/// The forward pass; see the module doc for the buffers.
#[allow(clippy::too_many_arguments)]
pub fn lstm_forward(
    out: &mut [f32],
    gates: &mut [f32],
    cells: &mut [f32],
    hidden: &mut [f32],
    scratch: &mut [f32],
    x: &[f32],
    w_ih: &[f32],
    w_hh: &[f32],
    b_ih: &[f32],
    b_hh: &[f32],
    (b, t, i, h): (usize, usize, usize, usize),
) {
    let g4 = 4 * h;
    let (xw, rest) = scratch.split_at_mut(b * t * g4);
    let (rec, rest) = rest.split_at_mut(b * g4);
    let zeros = &mut rest[..b * h];
    zeros.fill(0.0);
    // Input projections of every step at once: rows b·T + s.
    matmul_forward(xw, x, w_ih, Some(b_ih), b * t, i, g4);
    for s in 0..t {
        let (done_h, now_h) = hidden.split_at_mut(s * b * h);
        let (done_c, now_c) = cells.split_at_mut(s * b * h);
        let now_c = &mut now_c[..b * h];
        let h_prev: &[f32] = if s == 0 { zeros } else { &done_h[(s - 1) * b * h..] };
        // The cell updates c in place: start from c_{t−1}.
        match s {
            0 => now_c.fill(0.0),
            _ => now_c.copy_from_slice(&done_c[(s - 1) * b * h..s * b * h]),
        }
        matmul_forward(rec, h_prev, w_hh, Some(b_hh), b, h, g4);
        for bi in 0..b {
            let pre_x = &xw[(bi * t + s) * g4..(bi * t + s + 1) * g4];
            let gt = &mut gates[(s * b + bi) * g4..(s * b + bi + 1) * g4];
            let hv = &mut now_h[bi * h..(bi + 1) * h];
            lstm_cell(gt, &mut now_c[bi * h..(bi + 1) * h], hv, pre_x, &rec[bi * g4..(bi + 1) * g4]);
            out[(bi * t + s) * h..(bi * t + s + 1) * h].copy_from_slice(hv);
        }
    }
}

/// One step of one sequence: the activated gates `gt` (4H), the cell state `c` (H; c_{t−1} in,
/// c_t out) and `hv` = h_t (H), from the input and recurrent pre-activations (4H each).
#[inline]
fn lstm_cell(gt: &mut [f32], c: &mut [f32], hv: &mut [f32], pre_x: &[f32], pre_h: &[f32]) {
    let h = c.len();
    for k in 0..h {
        let p = |q: usize| pre_x[q * h + k] + pre_h[q * h + k];
        gt[k] = sigmoid(p(0));
        gt[h + k] = sigmoid(p(1));
        gt[2 * h + k] = p(2).tanh();
        gt[3 * h + k] = sigmoid(p(3));
        c[k] = gt[h + k] * c[k] + gt[k] * gt[2 * h + k];
        hv[k] = gt[3 * h + k] * c[k].tanh();
    }
}

/// Floats of scratch [`lstm_step`] needs.
pub fn lstm_step_scratch_len(b: usize, h: usize) -> usize {
    // x·W_ihᵀ and h·W_hhᵀ (B, 4H each), one row's gates (4H)
    2 * b * 4 * h + 4 * h
}

/// One recurrent layer's weights (PyTorch's `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`,
/// `bias_hh_l0`), for the single-step kernels.
#[derive(Clone, Copy)]
pub struct RnnWeights<'a> {
    pub w_ih: &'a [f32],
    pub w_hh: &'a [f32],
    pub b_ih: &'a [f32],
    pub b_hh: &'a [f32],
}

/// The two products of one step from a carried state h (B, H), for the LSTM and the GRU:
/// x·W_ihᵀ + b_ih and h·W_hhᵀ + b_hh (B, G·H each, G·H = `gh`), at the front of `scratch`;
/// returns them and the rest of `scratch`.
pub(crate) fn step_products<'s>(
    scratch: &'s mut [f32],
    x: &[f32],
    h_state: &[f32],
    w: RnnWeights,
    (b, i, h, gh): (usize, usize, usize, usize),
) -> (&'s [f32], &'s [f32], &'s mut [f32]) {
    let (xw, rest) = scratch.split_at_mut(b * gh);
    let (rec, rest) = rest.split_at_mut(b * gh);
    matmul_forward(xw, x, w.w_ih, Some(w.b_ih), b, i, gh);
    matmul_forward(rec, h_state, w.w_hh, Some(w.b_hh), b, h, gh);
    (xw, rec, rest)
}

/// One time step from a carried state, for generation (the state is what makes it O(1) per
/// token): `h_state` and `c_state` (B, H) go from step t − 1 to step t given x (B, I). The same
/// arithmetic as one step of [`lstm_forward`].
pub fn lstm_step(
    h_state: &mut [f32],
    c_state: &mut [f32],
    scratch: &mut [f32],
    x: &[f32],
    w: RnnWeights,
    (b, i, h): (usize, usize, usize),
) {
    let g4 = 4 * h;
    let (xw, rec, rest) = step_products(scratch, x, h_state, w, (b, i, h, g4));
    for bi in 0..b {
        let (c, hv) = (&mut c_state[bi * h..(bi + 1) * h], &mut h_state[bi * h..(bi + 1) * h]);
        lstm_cell(&mut rest[..g4], c, hv, &xw[bi * g4..(bi + 1) * g4], &rec[bi * g4..(bi + 1) * g4]);
    }
}

/// The backward pass from dout (B, T, H): dx (B, T, I) overwritten; the weight and bias
/// gradients accumulated.
#[allow(clippy::too_many_arguments)]
pub fn lstm_backward(
    dx: &mut [f32],
    dw_ih: &mut [f32],
    dw_hh: &mut [f32],
    db_ih: &mut [f32],
    db_hh: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    x: &[f32],
    gates: &[f32],
    cells: &[f32],
    hidden: &[f32],
    w_ih: &[f32],
    w_hh: &[f32],
    (b, t, i, h): (usize, usize, usize, usize),
) {
    let (g4, n) = (4 * h, b * t);
    let (dpre, rest) = scratch.split_at_mut(n * g4);
    let (hprev, rest) = rest.split_at_mut(n * h);
    let (dh_next, rest) = rest.split_at_mut(b * h);
    let (dc_next, rest) = rest.split_at_mut(b * h);
    dh_next.fill(0.0);
    dc_next.fill(0.0);
    for s in (0..t).rev() {
        for bi in 0..b {
            let gt = &gates[(s * b + bi) * g4..(s * b + bi + 1) * g4];
            for k in 0..h {
                let (ig, fg, gg, og) = (gt[k], gt[h + k], gt[2 * h + k], gt[3 * h + k]);
                let c = cells[(s * b + bi) * h + k];
                let c_prev = if s == 0 { 0.0 } else { cells[((s - 1) * b + bi) * h + k] };
                let tc = c.tanh();
                let dh = dout[(bi * t + s) * h + k] + dh_next[bi * h + k];
                let dc = dh * og * (1.0 - tc * tc) + dc_next[bi * h + k];
                let d = &mut dpre[(bi * t + s) * g4..(bi * t + s + 1) * g4];
                d[k] = dc * gg * ig * (1.0 - ig);
                d[h + k] = dc * c_prev * fg * (1.0 - fg);
                d[2 * h + k] = dc * ig * (1.0 - gg * gg);
                d[3 * h + k] = dh * tc * og * (1.0 - og);
                dc_next[bi * h + k] = dc * fg;
            }
            let hp = &mut hprev[(bi * t + s) * h..(bi * t + s + 1) * h];
            if s == 0 {
                hp.fill(0.0);
            } else {
                hp.copy_from_slice(&hidden[((s - 1) * b + bi) * h..((s - 1) * b + bi + 1) * h]);
            }
        }
        // dh_{t−1} = dpre_t · W_hh (B, H)
        for bi in 0..b {
            let out = &mut dh_next[bi * h..(bi + 1) * h];
            out.fill(0.0);
            add_times_rows(out, &dpre[(bi * t + s) * g4..(bi * t + s + 1) * g4], w_hh);
        }
    }
    matmul_backward(dx, dw_ih, Some(db_ih), dpre, x, w_ih, n, i, g4);
    // The recurrent weights see h_{t−1} at every step: one product over all rows (its input
    // gradient is not needed again; `rest` takes it).
    matmul_backward(&mut rest[..n * h], dw_hh, Some(db_hh), dpre, hprev, w_hh, n, h, g4);
}

/// out (H) += d (G) · w (G, H): one row's gradient through a recurrent weight, to the previous
/// hidden state (shared by the LSTM and the GRU).
pub(crate) fn add_times_rows(out: &mut [f32], d: &[f32], w: &[f32]) {
    let h = out.len();
    for (q, &dq) in d.iter().enumerate() {
        if dq != 0.0 {
            out.iter_mut().zip(&w[q * h..(q + 1) * h]).for_each(|(o, w)| *o += dq * w);
        }
    }
}
