//! The LSTM kernel (src/kernels/lstm.rs) against torch.nn.LSTM in float64
//! (scripts/make_rnn_fixtures.py): output and every gradient; and against finite differences.

mod common;
use common::assert_close;
use lmlab::kernels::lstm::{lstm_backward, lstm_forward, lstm_scratch_len};
use serde_json::Value;

struct Lstm {
    dims: (usize, usize, usize, usize),
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    b_ih: Vec<f32>,
    b_hh: Vec<f32>,
}

/// out (B, T, H) and the cache.
fn forward(m: &Lstm, x: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (b, t, _, h) = m.dims;
    let mut out = vec![0f32; b * t * h];
    let (mut gates, mut cells, mut hidden) = (vec![0f32; t * b * 4 * h], vec![0f32; t * b * h], vec![0f32; t * b * h]);
    let mut scratch = vec![f32::NAN; lstm_scratch_len(b, t, h)];
    lstm_forward(
        &mut out,
        &mut gates,
        &mut cells,
        &mut hidden,
        &mut scratch,
        x,
        &m.w_ih,
        &m.w_hh,
        &m.b_ih,
        &m.b_hh,
        m.dims,
    );
    (out, gates, cells, hidden)
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn lstm_equals_pytorch_and_finite_differences() {
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(common::fixture("rnn/lstm.json")).unwrap()).unwrap();
    let u = |k: &str| fx[k].as_u64().unwrap() as usize;
    let (b, t, i, h) = (u("B"), u("T"), u("I"), u("H"));
    let mut m = Lstm {
        dims: (b, t, i, h),
        w_ih: f32s(&fx["w_ih"]),
        w_hh: f32s(&fx["w_hh"]),
        b_ih: f32s(&fx["b_ih"]),
        b_hh: f32s(&fx["b_hh"]),
    };
    let (x, r) = (f32s(&fx["x"]), f32s(&fx["r"]));
    let (out, gates, cells, hidden) = forward(&m, &x);
    assert_close("out", &out, &f64s(&fx["out"]), 1e-5);
    let mut dx = vec![f32::NAN; b * t * i];
    let (mut dw_ih, mut dw_hh) = (vec![0f32; m.w_ih.len()], vec![0f32; m.w_hh.len()]);
    let (mut db_ih, mut db_hh) = (vec![0f32; 4 * h], vec![0f32; 4 * h]);
    let mut scratch = vec![f32::NAN; lstm_scratch_len(b, t, h)];
    lstm_backward(
        &mut dx,
        &mut dw_ih,
        &mut dw_hh,
        &mut db_ih,
        &mut db_hh,
        &mut scratch,
        &r,
        &x,
        &gates,
        &cells,
        &hidden,
        &m.w_ih,
        &m.w_hh,
        m.dims,
    );
    assert_close("dx", &dx, &f64s(&fx["dx"]), 1e-5);
    assert_close("dw_ih", &dw_ih, &f64s(&fx["dw_ih"]), 1e-5);
    assert_close("dw_hh", &dw_hh, &f64s(&fx["dw_hh"]), 1e-5);
    assert_close("db_ih", &db_ih, &f64s(&fx["db_ih"]), 1e-5);
    assert_close("db_hh", &db_hh, &f64s(&fx["db_hh"]), 1e-5);
    // Finite differences of Σ out ⊙ R in the input and the recurrent weights.
    let loss = |m: &Lstm, x: &[f32]| forward(m, x).0.iter().zip(&r).map(|(o, r)| (*o * *r) as f64).sum::<f64>();
    common::check("lstm dx", &x, &dx, |xp| loss(&m, xp));
    let w0 = m.w_hh.clone();
    common::check("lstm dw_hh", &w0, &dw_hh, |wp| {
        m.w_hh = wp.to_vec();
        loss(&m, &x)
    });
}
