//! The recurrent kernels (src/kernels/lstm.rs, gru.rs) against torch.nn.LSTM and torch.nn.GRU
//! in float64 (scripts/make_rnn_fixtures.py): output and every gradient; and against finite
//! differences of the input and the recurrent weights.

mod common;
use common::assert_close;
use lmlab::kernels::gru::{gru_backward, gru_forward, gru_scratch_len};
use lmlab::kernels::lstm::{lstm_backward, lstm_forward, lstm_scratch_len};
use serde_json::Value;

#[derive(Clone, Copy, PartialEq)]
enum Cell {
    Lstm,
    Gru,
}

struct Layer {
    cell: Cell,
    dims: (usize, usize, usize, usize),
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    b_ih: Vec<f32>,
    b_hh: Vec<f32>,
}

/// The forward pass's output (B, T, H) and cache (gates; cells or hn; hidden).
fn forward(m: &Layer, x: &[f32]) -> (Vec<f32>, [Vec<f32>; 3]) {
    let (b, t, _, h) = m.dims;
    let g = if m.cell == Cell::Lstm { 4 } else { 3 };
    let mut out = vec![0f32; b * t * h];
    let mut cache = [vec![0f32; t * b * g * h], vec![0f32; t * b * h], vec![0f32; t * b * h]];
    let [gates, mid, hidden] = &mut cache;
    let (wi, wh, bi, bh) = (&m.w_ih, &m.w_hh, &m.b_ih, &m.b_hh);
    match m.cell {
        Cell::Lstm => {
            let mut s = vec![f32::NAN; lstm_scratch_len(b, t, h)];
            lstm_forward(&mut out, gates, mid, hidden, &mut s, x, wi, wh, bi, bh, m.dims)
        }
        Cell::Gru => {
            let mut s = vec![f32::NAN; gru_scratch_len(b, t, h)];
            gru_forward(&mut out, gates, mid, hidden, &mut s, x, wi, wh, bi, bh, m.dims)
        }
    }
    (out, cache)
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn check_cell(cell: Cell, file: &str) {
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(common::fixture(file)).unwrap()).unwrap();
    let u = |k: &str| fx[k].as_u64().unwrap() as usize;
    let (b, t, i, h) = (u("B"), u("T"), u("I"), u("H"));
    let mut m = Layer {
        cell,
        dims: (b, t, i, h),
        w_ih: f32s(&fx["w_ih"]),
        w_hh: f32s(&fx["w_hh"]),
        b_ih: f32s(&fx["b_ih"]),
        b_hh: f32s(&fx["b_hh"]),
    };
    let (x, r) = (f32s(&fx["x"]), f32s(&fx["r"]));
    let (out, [gates, mid, hidden]) = forward(&m, &x);
    assert_close(&format!("{file} out"), &out, &f64s(&fx["out"]), 1e-5);
    let mut dx = vec![f32::NAN; b * t * i];
    let (mut dw_ih, mut dw_hh) = (vec![0f32; m.w_ih.len()], vec![0f32; m.w_hh.len()]);
    let (mut db_ih, mut db_hh) = (vec![0f32; m.b_ih.len()], vec![0f32; m.b_hh.len()]);
    let (wi, wh) = (&m.w_ih, &m.w_hh);
    match cell {
        Cell::Lstm => {
            let mut s = vec![f32::NAN; lstm_scratch_len(b, t, h)];
            let (dwi, dwh, dbi, dbh) = (&mut dw_ih, &mut dw_hh, &mut db_ih, &mut db_hh);
            lstm_backward(&mut dx, dwi, dwh, dbi, dbh, &mut s, &r, &x, &gates, &mid, &hidden, wi, wh, m.dims)
        }
        Cell::Gru => {
            let mut s = vec![f32::NAN; gru_scratch_len(b, t, h)];
            let (dwi, dwh, dbi, dbh) = (&mut dw_ih, &mut dw_hh, &mut db_ih, &mut db_hh);
            gru_backward(&mut dx, dwi, dwh, dbi, dbh, &mut s, &r, &x, &gates, &mid, &hidden, wi, wh, m.dims)
        }
    }
    for (name, got) in [("dx", &dx), ("dw_ih", &dw_ih), ("dw_hh", &dw_hh), ("db_ih", &db_ih), ("db_hh", &db_hh)] {
        assert_close(&format!("{file} {name}"), got, &f64s(&fx[name]), 1e-5);
    }
    let loss = |m: &Layer, x: &[f32]| forward(m, x).0.iter().zip(&r).map(|(o, r)| (*o * *r) as f64).sum::<f64>();
    common::check(&format!("{file} dx"), &x, &dx, |xp| loss(&m, xp));
    let w0 = m.w_hh.clone();
    common::check(&format!("{file} dw_hh"), &w0, &dw_hh, |wp| {
        m.w_hh = wp.to_vec();
        loss(&m, &x)
    });
}

#[test]
fn lstm_equals_pytorch_and_finite_differences() {
    check_cell(Cell::Lstm, "rnn/lstm.json");
}

#[test]
fn gru_equals_pytorch_and_finite_differences() {
    check_cell(Cell::Gru, "rnn/gru.json");
}
