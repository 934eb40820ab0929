//! GRU layer (PyTorch's `nn.GRU`, one layer, batch first, zero initial state), forward and
//! backward through time over flat buffers.
//!
//! Gates in PyTorch's order r, z, n (3H wide): r = σ(x·W_irᵀ + b_ir + h·W_hrᵀ + b_hr),
//! z = σ(… the same with z …), n = tanh(x·W_inᵀ + b_in + r ⊙ (h·W_hnᵀ + b_hn)),
//! h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}.
//!
//! Buffers (B batch, T steps, I inputs, H hidden): x (B, T, I), out (B, T, H); the cache,
//! time-major: `gates` (T, B, 3H) the activated r, z, n; `hn` (T, B, H) h_{t−1}·W_hnᵀ + b_hn
//! (n's recurrent part, which r scales); `hidden` (T, B, H) h_t; `scratch` ([`gru_scratch_len`]).

use super::activation::sigmoid;
use super::lstm::{add_times_rows, step_products, RnnWeights};
use super::matmul::{matmul_backward, matmul_forward};

/// Floats of scratch [`gru_forward`] and [`gru_backward`] need.
pub fn gru_scratch_len(b: usize, t: usize, h: usize) -> usize {
    // forward: x·W_ihᵀ (B·T, 3H), the recurrent product (B, 3H), a zero state (B, H);
    // backward: the input and recurrent pre-activation gradients (2·B·T·3H), h_{t−1} (B·T, H),
    // dh carried (B, H), a discarded dh (B·T, H).
    let (n, g3) = (b * t, 3 * h);
    (n * g3 + b * g3 + b * h).max(2 * n * g3 + 2 * n * h + b * h)
}

/// The forward pass; see the module doc for the buffers.
#[allow(clippy::too_many_arguments)]
pub fn gru_forward(
    out: &mut [f32],
    gates: &mut [f32],
    hn: &mut [f32],
    hidden: &mut [f32],
    scratch: &mut [f32],
    x: &[f32],
    w_ih: &[f32],
    w_hh: &[f32],
    b_ih: &[f32],
    b_hh: &[f32],
    (b, t, i, h): (usize, usize, usize, usize),
) {
    let g3 = 3 * h;
    let (xw, rest) = scratch.split_at_mut(b * t * g3);
    let (rec, rest) = rest.split_at_mut(b * g3);
    let zeros = &mut rest[..b * h];
    zeros.fill(0.0);
    matmul_forward(xw, x, w_ih, Some(b_ih), b * t, i, g3);
    for s in 0..t {
        let (done, now) = hidden.split_at_mut(s * b * h);
        let h_prev: &[f32] = if s == 0 { zeros } else { &done[(s - 1) * b * h..] };
        matmul_forward(rec, h_prev, w_hh, Some(b_hh), b, h, g3);
        // The cell updates h in place: start from h_{t−1}.
        now[..b * h].copy_from_slice(&h_prev[..b * h]);
        for bi in 0..b {
            let px = &xw[(bi * t + s) * g3..(bi * t + s + 1) * g3];
            let gt = &mut gates[(s * b + bi) * g3..(s * b + bi + 1) * g3];
            let hn_row = &mut hn[(s * b + bi) * h..(s * b + bi + 1) * h];
            let hv = &mut now[bi * h..(bi + 1) * h];
            gru_cell(gt, hn_row, hv, px, &rec[bi * g3..(bi + 1) * g3]);
            out[(bi * t + s) * h..(bi * t + s + 1) * h].copy_from_slice(hv);
        }
    }
}

/// One step of one sequence: the activated gates `gt` (3H), n's recurrent part `hn` (H) and the
/// state `hv` (H; h_{t−1} in, h_t out), from the input and recurrent pre-activations (3H each).
#[inline]
fn gru_cell(gt: &mut [f32], hn: &mut [f32], hv: &mut [f32], px: &[f32], ph: &[f32]) {
    let h = hv.len();
    for k in 0..h {
        let r = sigmoid(px[k] + ph[k]);
        let z = sigmoid(px[h + k] + ph[h + k]);
        hn[k] = ph[2 * h + k];
        let n = (px[2 * h + k] + r * hn[k]).tanh();
        (gt[k], gt[h + k], gt[2 * h + k]) = (r, z, n);
        hv[k] = (1.0 - z) * n + z * hv[k];
    }
}

/// Floats of scratch [`gru_step`] needs.
pub fn gru_step_scratch_len(b: usize, h: usize) -> usize {
    // x·W_ihᵀ and h·W_hhᵀ (B, 3H each), one row's gates (3H) and hn (H)
    2 * b * 3 * h + 4 * h
}

/// One time step from a carried state, for generation: `h_state` (B, H) goes from step t − 1
/// to step t given x (B, I). The same arithmetic as one step of [`gru_forward`].
pub fn gru_step(h_state: &mut [f32], scratch: &mut [f32], x: &[f32], w: RnnWeights, (b, i, h): (usize, usize, usize)) {
    let g3 = 3 * h;
    let (xw, rec, rest) = step_products(scratch, x, h_state, w, (b, i, h, g3));
    let (gt, hn) = rest.split_at_mut(g3);
    for bi in 0..b {
        let hv = &mut h_state[bi * h..(bi + 1) * h];
        gru_cell(gt, &mut hn[..h], hv, &xw[bi * g3..(bi + 1) * g3], &rec[bi * g3..(bi + 1) * g3]);
    }
}

/// The backward pass from dout (B, T, H): dx (B, T, I) overwritten; the weight and bias
/// gradients accumulated.
#[allow(clippy::too_many_arguments)]
pub fn gru_backward(
    dx: &mut [f32],
    dw_ih: &mut [f32],
    dw_hh: &mut [f32],
    db_ih: &mut [f32],
    db_hh: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    x: &[f32],
    gates: &[f32],
    hn: &[f32],
    hidden: &[f32],
    w_ih: &[f32],
    w_hh: &[f32],
    (b, t, i, h): (usize, usize, usize, usize),
) {
    let (g3, n) = (3 * h, b * t);
    let (dxpre, rest) = scratch.split_at_mut(n * g3);
    let (dhpre, rest) = rest.split_at_mut(n * g3);
    let (hprev, rest) = rest.split_at_mut(n * h);
    let (dh_next, rest) = rest.split_at_mut(b * h);
    dh_next.fill(0.0);
    for s in (0..t).rev() {
        for bi in 0..b {
            let gt = &gates[(s * b + bi) * g3..(s * b + bi + 1) * g3];
            let row = (bi * t + s) * g3;
            for k in 0..h {
                let (r, z, nv) = (gt[k], gt[h + k], gt[2 * h + k]);
                let hp = if s == 0 { 0.0 } else { hidden[((s - 1) * b + bi) * h + k] };
                let dh = dout[(bi * t + s) * h + k] + dh_next[bi * h + k];
                let dn_pre = dh * (1.0 - z) * (1.0 - nv * nv);
                let dz_pre = dh * (hp - nv) * z * (1.0 - z);
                let dr_pre = dn_pre * hn[(s * b + bi) * h + k] * r * (1.0 - r);
                (dxpre[row + k], dxpre[row + h + k], dxpre[row + 2 * h + k]) = (dr_pre, dz_pre, dn_pre);
                (dhpre[row + k], dhpre[row + h + k], dhpre[row + 2 * h + k]) = (dr_pre, dz_pre, dn_pre * r);
                // The direct path h_{t−1} → h_t; the path through the gates is added below.
                dh_next[bi * h + k] = dh * z;
                hprev[(bi * t + s) * h + k] = hp;
            }
            // dh_{t−1} += dhpre_t · W_hh
            add_times_rows(&mut dh_next[bi * h..(bi + 1) * h], &dhpre[row..row + g3], w_hh);
        }
    }
    matmul_backward(dx, dw_ih, Some(db_ih), dxpre, x, w_ih, n, i, g3);
    // The recurrent weights see h_{t−1} at every step (the input gradient is not needed again).
    matmul_backward(&mut rest[..n * h], dw_hh, Some(db_hh), dhpre, hprev, w_hh, n, h, g3);
}
