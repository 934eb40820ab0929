//! Analytic FLOPs against PyTorch's FlopCounterMode on the reference model of every variant
//! (tests/fixtures/variants/flops.json from scripts/make_flops_fixtures.py): equal exactly.

mod common;
use lmlab::eval::efficiency::{flops_per_token, forward_flops};
use lmlab::model::transformer::ModelConfig;
use serde_json::Value;

#[test]
fn forward_flops_equal_torch_flop_counter_for_every_variant() {
    let text = std::fs::read_to_string(common::fixture("variants/flops.json")).unwrap();
    let fx: Value = serde_json::from_str(&text).unwrap();
    let variants = fx["variants"].as_object().unwrap();
    assert!(variants.len() >= 30);
    for (name, v) in variants {
        let cfg: ModelConfig = serde_json::from_value(v["config"].clone()).unwrap();
        for row in v["shapes"].as_array().unwrap() {
            let (b, t, s) = (row["b"].as_u64().unwrap(), row["t"].as_u64().unwrap(), row["s"].as_u64().unwrap());
            let want = row["flops"].as_f64().unwrap();
            let got = forward_flops(&cfg, b as usize, t as usize, s as usize);
            assert_eq!(got, want, "{name} at b {b} t {t} s {s}");
        }
    }
}

#[test]
fn gpt2_small_per_token_count_by_hand() {
    // GPT-2 small: 12 layers, 768 wide, 1024 context, vocab 50257. Per token and layer: QKV 6C²,
    // output projection 2C², MLP 16C² (all ×1 multiply-add = 2 FLOPs already included), scores
    // and weighted sum 2·T·C each; then the output layer 2·C·V.
    let cfg =
        ModelConfig { vocab_size: 50257, block_size: 1024, n_layer: 12, n_head: 12, n_embd: 768, ..Default::default() };
    let (l, c, t, v) = (12.0, 768.0, 1024.0, 50257.0);
    let by_hand = l * (24.0 * c * c + 4.0 * t * c) + 2.0 * c * v;
    assert_eq!(flops_per_token(&cfg, 1024), by_hand);
    assert!((by_hand / 1e6 - 284.81).abs() < 0.01, "{}", by_hand / 1e6);
}
