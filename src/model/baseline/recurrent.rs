//! One LSTM or GRU layer of a [`super::BaselineLm`]: its parameters (PyTorch's `nn.LSTM` /
//! `nn.GRU` names for layer l), the cache the kernels keep for backpropagation through time,
//! and the dropout on its output.

use crate::kernels::dropout::{dropout_backward, dropout_forward};
use crate::kernels::gru::{gru_backward, gru_forward, gru_scratch_len, gru_step, gru_step_scratch_len};
use crate::kernels::lstm::{
    lstm_backward, lstm_forward, lstm_scratch_len, lstm_step, lstm_step_scratch_len, RnnWeights,
};
use crate::model::layout::{ActLayout, ParamKind, ParamLayout, Regions};
use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cell {
    Lstm,
    Gru,
}

impl Cell {
    /// Gates per hidden unit: i, f, g, o or r, z, n.
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
}

/// A layer reading I features and keeping H hidden units.
pub(super) struct Recurrent {
    pub cell: Cell,
    pub input: usize,
    pub hidden: usize,
    w_ih: Range<usize>, // (G·H, I)
    w_hh: Range<usize>, // (G·H, H)
    b_ih: Range<usize>, // (G·H)
    b_hh: Range<usize>, // (G·H)
    /// The kernel's output h_t (B, T, H).
    out: Range<usize>,
    /// The cache, time-major: activated gates (T, B, G·H); cells c_t (LSTM) or n's recurrent
    /// part (GRU) (T, B, H); h_t (T, B, H).
    gates: Range<usize>,
    mid: Range<usize>,
    states: Range<usize>,
    /// dropout(out) (B, T, H): what the next layer (or the head) reads.
    pub dropped: Range<usize>,
}

impl Recurrent {
    pub fn new(
        l: &mut ParamLayout,
        al: &mut ActLayout,
        cell: Cell,
        layer: usize,
        input: usize,
        hidden: usize,
        n: usize,
    ) -> Self {
        let g = cell.gates() * hidden;
        Recurrent {
            cell,
            input,
            hidden,
            w_ih: l.push(format!("rnn.weight_ih_l{layer}"), &[g, input], ParamKind::Matrix),
            w_hh: l.push(format!("rnn.weight_hh_l{layer}"), &[g, hidden], ParamKind::Matrix),
            b_ih: l.push(format!("rnn.bias_ih_l{layer}"), &[g], ParamKind::Bias),
            b_hh: l.push(format!("rnn.bias_hh_l{layer}"), &[g], ParamKind::Bias),
            out: al.alloc(n * hidden),
            gates: al.alloc(n * g),
            mid: al.alloc(n * hidden),
            states: al.alloc(n * hidden),
            dropped: al.alloc(n * hidden),
        }
    }

    /// The parameter ranges PyTorch initialises with U(−1/√H, 1/√H).
    pub fn param_ranges(&self) -> [Range<usize>; 4] {
        [self.w_ih.clone(), self.w_hh.clone(), self.b_ih.clone(), self.b_hh.clone()]
    }

    /// Scratch floats of a training pass over (B, T).
    pub fn scratch_len(&self, b: usize, t: usize) -> usize {
        match self.cell {
            Cell::Lstm => lstm_scratch_len(b, t, self.hidden),
            Cell::Gru => gru_scratch_len(b, t, self.hidden),
        }
    }

    /// Scratch floats of one generation step of `b` rows.
    pub fn step_scratch_len(&self, b: usize) -> usize {
        match self.cell {
            Cell::Lstm => lstm_step_scratch_len(b, self.hidden),
            Cell::Gru => gru_step_scratch_len(b, self.hidden),
        }
    }

    /// x (B, T, I) → `dropped` (B, T, H).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        w: &[f32],
        r: &Regions,
        scratch: &mut [f32],
        x: &[f32],
        (b, t): (usize, usize),
        p: f32,
        seed: u64,
    ) {
        let (n, h, g) = (b * t, self.hidden, self.cell.gates() * self.hidden);
        let out = r.mut_(&self.out, n * h);
        let (gates, mid, states) = (r.mut_(&self.gates, n * g), r.mut_(&self.mid, n * h), r.mut_(&self.states, n * h));
        let (wi, wh, bi, bh) =
            (&w[self.w_ih.clone()], &w[self.w_hh.clone()], &w[self.b_ih.clone()], &w[self.b_hh.clone()]);
        let dims = (b, t, self.input, h);
        match self.cell {
            Cell::Lstm => lstm_forward(out, gates, mid, states, scratch, x, wi, wh, bi, bh, dims),
            Cell::Gru => gru_forward(out, gates, mid, states, scratch, x, wi, wh, bi, bh, dims),
        }
        dropout_forward(r.mut_(&self.dropped, n * h), out, p, seed);
    }

    /// From d_dropped (B, T, H): dx (B, T, I) overwritten, the parameter gradients accumulated;
    /// `d_out` (B, T, H) is a work buffer.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        w: &[f32],
        g: &Regions,
        r: &Regions,
        scratch: &mut [f32],
        (dx, d_out, d_dropped): (&mut [f32], &mut [f32], &[f32]),
        x: &[f32],
        (b, t): (usize, usize),
        p: f32,
        seed: u64,
    ) {
        let (n, h, gw) = (b * t, self.hidden, self.cell.gates() * self.hidden);
        dropout_backward(d_out, d_dropped, p, seed);
        let (gates, mid, states) = (r.get(&self.gates, n * gw), r.get(&self.mid, n * h), r.get(&self.states, n * h));
        let (dwi, dwh) = (g.mut_(&self.w_ih, self.w_ih.len()), g.mut_(&self.w_hh, self.w_hh.len()));
        let (dbi, dbh) = (g.mut_(&self.b_ih, gw), g.mut_(&self.b_hh, gw));
        let (wi, wh) = (&w[self.w_ih.clone()], &w[self.w_hh.clone()]);
        let dims = (b, t, self.input, h);
        match self.cell {
            Cell::Lstm => lstm_backward(dx, dwi, dwh, dbi, dbh, scratch, d_out, x, gates, mid, states, wi, wh, dims),
            Cell::Gru => gru_backward(dx, dwi, dwh, dbi, dbh, scratch, d_out, x, gates, mid, states, wi, wh, dims),
        }
    }

    /// One generation step of `b` rows: the state (`h` (B, H) and, for the LSTM, `c` (B, H))
    /// advances by the input x (B, I); the new h is the layer's output.
    pub fn step(&self, w: &[f32], h: &mut [f32], c: &mut [f32], scratch: &mut [f32], x: &[f32], b: usize) {
        let weights = RnnWeights {
            w_ih: &w[self.w_ih.clone()],
            w_hh: &w[self.w_hh.clone()],
            b_ih: &w[self.b_ih.clone()],
            b_hh: &w[self.b_hh.clone()],
        };
        let dims = (b, self.input, self.hidden);
        match self.cell {
            Cell::Lstm => lstm_step(h, c, scratch, x, weights, dims),
            Cell::Gru => gru_step(h, scratch, x, weights, dims),
        }
    }
}
