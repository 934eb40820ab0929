//! The extractive-QA span head: start/end logits of every position (`qa_outputs`, C → 2),
//! question and padding positions masked, loss (CE(start) + CE(end)) / 2. Checked against
//! PyTorch (tests/fixtures/qa/span_head.json from scripts/make_qa_fixtures.py), inside a
//! Transformer against the same formula over its hidden states, and by finite differences.

mod common;

use common::{assert_close, fixture};
use lmlab::kernels::crossentropy::{crossentropy_backward, crossentropy_forward};
use lmlab::kernels::matmul::{matmul_backward, matmul_forward};
use lmlab::kernels::span::{span_logits_backward, span_logits_forward, MASKED_LOGIT};
use lmlab::model::transformer::{Arch, EncoderHead, ModelConfig, NormPosition, Transformer};
use serde_json::Value;

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}
fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// The head's formula: logits (B, 2, T) and the mean loss, as `Head::Span` computes them.
fn head_forward(h: &[f32], w: &[f32], bias: &[f32], mask: &[bool], pos: &[i32], b: usize, t: usize) -> (Vec<f32>, f64) {
    let c = h.len() / (b * t);
    let mut raw = vec![0.0; b * t * 2];
    matmul_forward(&mut raw, h, w, Some(bias), b * t, c, 2);
    let mut logits = vec![0.0; b * 2 * t];
    span_logits_forward(&mut logits, &raw, Some(mask), b, t);
    let mut losses = vec![0.0; 2 * b];
    let (sum, count) = crossentropy_forward(&mut losses, &logits, pos, t, 0.0);
    (logits, sum / count as f64)
}

#[test]
fn span_head_equals_pytorch() {
    let f: Value = serde_json::from_str(&std::fs::read_to_string(fixture("qa/span_head.json")).unwrap()).unwrap();
    let (b, t, c) =
        (f["b"].as_u64().unwrap() as usize, f["t"].as_u64().unwrap() as usize, f["c"].as_u64().unwrap() as usize);
    let (h, w, bias) = (f32s(&f["h"]), f32s(&f["weight"]), f32s(&f["bias"]));
    let mask: Vec<bool> = f["span_mask"].as_array().unwrap().iter().map(|x| x.as_bool().unwrap()).collect();
    let pos: Vec<i32> = f["positions"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap() as i32).collect();
    let (logits, loss) = head_forward(&h, &w, &bias, &mask, &pos, b, t);
    assert_close("logits", &logits, &f64s(&f["logits"]), 1e-5);
    let want = f["loss"].as_f64().unwrap();
    assert!((loss - want).abs() < 1e-5 * want.abs(), "loss {loss} vs {want}");
    // Masked positions carry exactly the mask value, and take no probability.
    for (i, &m) in mask.iter().enumerate() {
        let (w_, p) = (i / t, i % t);
        assert_eq!(logits[w_ * 2 * t + p] == MASKED_LOGIT, !m);
        assert_eq!(logits[w_ * 2 * t + t + p] == MASKED_LOGIT, !m);
    }

    // Backward: the gradient of the mean over the 2·B start and end rows.
    let mut d_logits = vec![0.0; b * 2 * t];
    crossentropy_backward(&mut d_logits, &logits, &pos, t, 1.0 / (2 * b) as f32, 0.0);
    let mut d_raw = vec![0.0; b * t * 2];
    span_logits_backward(&mut d_raw, &d_logits, Some(&mask), b, t);
    let (mut dh, mut dw, mut db) = (vec![0.0; b * t * c], vec![0.0; 2 * c], vec![0.0; 2]);
    matmul_backward(&mut dh, &mut dw, Some(&mut db), &d_raw, &h, &w, b * t, c, 2);
    assert_close("d_h", &dh, &f64s(&f["d_h"]), 1e-4);
    assert_close("d_weight", &dw, &f64s(&f["d_weight"]), 1e-4);
    // The bias shifts every position's start (end) logit alike, which a softmax over the
    // positions ignores: its gradient is 0 in exact arithmetic (PyTorch: ~1e-17).
    for (g, want) in db.iter().zip(f64s(&f["d_bias"])) {
        assert!(want.abs() < 1e-12 && g.abs() < 1e-6, "d_bias {g} vs {want}");
    }
    // Masked positions get no gradient.
    for (i, &m) in mask.iter().enumerate() {
        if !m {
            assert!(dh[i * c..(i + 1) * c].iter().all(|&g| g == 0.0), "position {i} is masked");
        }
    }
}

/// A tiny BERT-shaped encoder with the span head.
fn tiny_qa_model(max_batch: usize) -> Transformer {
    let cfg = ModelConfig {
        arch: Arch::Encoder,
        encoder_head: EncoderHead::Span,
        vocab_size: 11,
        block_size: 8,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        norm_position: NormPosition::Post,
        final_norm: false,
        embedding_norm: true,
        ..ModelConfig::default()
    };
    let mut m = Transformer::new(cfg, max_batch).unwrap();
    m.init_with(lmlab::model::InitScheme::Normal, 0.3, 7);
    m
}

/// Two windows: [CLS] q q [SEP] c c c [SEP] and a shorter padded one without its answer.
fn batch() -> (Vec<u32>, Vec<bool>, Vec<bool>, Vec<i32>) {
    let idx = vec![2, 5, 6, 3, 7, 8, 9, 3, 2, 5, 3, 10, 4, 3, 0, 0];
    let mask = [[true; 8], [true, true, true, true, true, true, false, false]].concat();
    let span =
        [[true, false, false, false, true, true, true, false], [true, false, false, true, true, false, false, false]]
            .concat();
    (idx, mask, span, vec![4, 6, 0, 0])
}

#[test]
fn transformer_span_head_is_the_formula_over_its_hidden_states() {
    let mut m = tiny_qa_model(2);
    let (idx, mask, span, pos) = batch();
    let loss = m.forward_span(&idx, Some(&mask), Some(&span), Some(&pos), 2, 8, false, 0).unwrap().unwrap();
    let w = m.params[m.layout.get("qa_outputs.weight").unwrap().range()].to_vec();
    let b = m.params[m.layout.get("qa_outputs.bias").unwrap().range()].to_vec();
    let (logits, want) = head_forward(m.hidden(), &w, &b, &span, &pos, 2, 8);
    assert_eq!(m.logits(), &logits[..]);
    assert!((loss as f64 - want).abs() < 1e-6, "{loss} vs {want}");
    // The head's tensors are a task head: a fine-tuning run from another task starts them fresh.
    assert!(lmlab::model::transformer::is_task_head("qa_outputs.weight"));
    // Without targets, logits only.
    assert!(m.forward_span(&idx, Some(&mask), Some(&span), None, 2, 8, false, 0).unwrap().is_none());
    assert_eq!(m.logits(), &logits[..]);
}

#[test]
fn span_head_gradients_match_finite_differences() {
    let mut m = tiny_qa_model(2);
    let (idx, mask, span, pos) = batch();
    m.zero_grad();
    m.forward_span(&idx, Some(&mask), Some(&span), Some(&pos), 2, 8, false, 0).unwrap();
    m.backward().unwrap();
    for name in ["qa_outputs.weight", "qa_outputs.bias", "transformer.h.1.mlp.c_fc.weight", "transformer.wte.weight"] {
        let r = m.layout.get(name).unwrap_or_else(|| panic!("{name}")).range();
        // At most 24 entries of each tensor, spread over it.
        let stride = (r.len() / 24).max(1);
        let mut worst = 0.0f64;
        let scale = m.grads[r.clone()].iter().fold(1e-3f64, |a, g| a.max(g.abs() as f64));
        for i in (r.start..r.end).step_by(stride) {
            let x = m.params[i];
            let eval = |m: &mut Transformer, v: f32| {
                m.params[i] = v;
                m.forward_span(&idx, Some(&mask), Some(&span), Some(&pos), 2, 8, false, 0).unwrap().unwrap() as f64
            };
            let hstep = 1e-2f32;
            let num = (eval(&mut m, x + hstep) - eval(&mut m, x - hstep)) / (2.0 * hstep as f64);
            m.params[i] = x;
            worst = worst.max((num - m.grads[i] as f64).abs() / scale);
        }
        assert!(worst < 5e-3, "{name}: finite differences differ by {worst:.2e} (relative to max |grad| {scale:.3})");
    }
}

#[test]
fn forward_span_refuses_other_models_and_bad_positions() {
    let mut classifier = Transformer::new(
        ModelConfig {
            arch: Arch::Encoder,
            vocab_size: 11,
            block_size: 8,
            n_embd: 8,
            n_head: 2,
            n_layer: 1,
            ..ModelConfig::default()
        },
        1,
    )
    .unwrap();
    let (idx, mask, span, _) = batch();
    let e = classifier.forward_span(&idx[..8], Some(&mask[..8]), Some(&span[..8]), None, 1, 8, false, 0).unwrap_err();
    assert!(e.to_string().contains("span head"), "{e}");
    let mut m = tiny_qa_model(2);
    let e = m.forward_span(&idx, Some(&mask), Some(&span), Some(&[4, 8, 0, 0]), 2, 8, false, 0).unwrap_err();
    assert!(e.to_string().contains("target 8"), "{e}");
    let e = m.forward_span(&idx, Some(&mask), Some(&span[..8]), None, 2, 8, false, 0).unwrap_err();
    assert!(e.to_string().contains("span mask"), "{e}");
}
