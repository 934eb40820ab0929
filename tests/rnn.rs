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

fn check_conv(file: &str) {
    use lmlab::kernels::conv1d::{conv1d_causal_backward, conv1d_causal_forward, conv1d_scratch_len, ConvDims};
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(common::fixture(file)).unwrap()).unwrap();
    let u = |k: &str| fx[k].as_u64().unwrap() as usize;
    let d = ConvDims { b: u("B"), t: u("T"), c: u("C"), oc: u("OC"), k: u("K"), dilation: u("dilation") };
    let (x, r, b) = (f32s(&fx["x"]), f32s(&fx["r"]), f32s(&fx["b"]));
    let mut w = f32s(&fx["w"]);
    let mut scratch = vec![f32::NAN; conv1d_scratch_len(d.oc, d.c, d.k)];
    let fwd = |w: &[f32], x: &[f32], scratch: &mut [f32]| {
        let mut out = vec![f32::NAN; d.b * d.t * d.oc];
        conv1d_causal_forward(&mut out, x, w, Some(&b), scratch, d);
        out
    };
    let out = fwd(&w, &x, &mut scratch);
    assert_close(&format!("{file} out"), &out, &f64s(&fx["out"]), 1e-5);
    let (mut dx, mut dw, mut db) = (vec![f32::NAN; x.len()], vec![0f32; w.len()], vec![0f32; b.len()]);
    conv1d_causal_backward(&mut dx, &mut dw, Some(&mut db), &r, &x, &w, &mut scratch, d);
    assert_close(&format!("{file} dx"), &dx, &f64s(&fx["dx"]), 1e-5);
    assert_close(&format!("{file} dw"), &dw, &f64s(&fx["dw"]), 1e-5);
    assert_close(&format!("{file} db"), &db, &f64s(&fx["db"]), 1e-5);
    let loss =
        |w: &[f32], x: &[f32], s: &mut [f32]| fwd(w, x, s).iter().zip(&r).map(|(o, r)| (*o * *r) as f64).sum::<f64>();
    let mut s2 = scratch.clone();
    common::check(&format!("{file} dx"), &x, &dx, |xp| loss(&w, xp, &mut s2));
    let w0 = w.clone();
    common::check(&format!("{file} dw"), &w0, &dw, |wp| {
        w.copy_from_slice(wp);
        loss(&w, &x, &mut scratch)
    });
    // Causality: changing the last input step changes no earlier output.
    let mut x2 = x.clone();
    let last = (d.t - 1) * d.c;
    x2[last] += 1.0;
    let out2 = fwd(&w0, &x2, &mut vec![0.0; conv1d_scratch_len(d.oc, d.c, d.k)]);
    assert!(out2[..(d.t - 1) * d.oc].iter().zip(&out).all(|(a, b)| a == b), "{file}: the future leaked");
}

#[test]
fn causal_conv1d_equals_pytorch_and_finite_differences() {
    check_conv("rnn/conv1d_causal_d1.json");
    check_conv("rnn/conv1d_causal_d4.json");
}
