//! Gradient accumulation gives the large batch's gradient and update: k micro-batches through
//! `GradAccum` against one forward/backward over all their rows at once. For the LM every
//! micro-batch has the same number of targets; for translation the micro-batches have different
//! numbers of real target tokens (padding is ignored), which a mean of micro-batch means would
//! get wrong.

mod common;
use common::assert_close;
use lmlab::model::transformer::{Arch, ModelConfig, Transformer};
use lmlab::optim::LossScaler;
use lmlab::optim::{Clipping, OptimizerConfig, SgdConfig};
use lmlab::train::{optimizer_step, GradAccum};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn model(cfg: ModelConfig, max_batch: usize) -> Transformer {
    let mut m = Transformer::new(cfg, max_batch).unwrap();
    m.init(7);
    m
}

#[test]
fn lm_micro_batches_equal_the_large_batch() {
    let (b, t, k, v) = (2, 8, 3, 20);
    let cfg = ModelConfig { vocab_size: v, block_size: t, n_layer: 2, n_head: 2, n_embd: 16, ..Default::default() };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let idx: Vec<u32> = (0..k * b * t).map(|_| rng.gen_range(0..v as u32)).collect();
    let tgt: Vec<i32> = (0..k * b * t).map(|_| rng.gen_range(0..v as i32)).collect();

    let mut big = model(cfg.clone(), k * b);
    big.zero_grad();
    let big_loss = big.forward_lm(&idx, Some(&tgt), k * b, t, true, 0).unwrap().unwrap();
    big.backward().unwrap();

    let mut small = model(cfg, b);
    small.zero_grad();
    let mut acc = GradAccum::new(k, 1.0);
    for m in 0..k {
        let rows = m * b * t..(m + 1) * b * t;
        let loss = small.forward_lm(&idx[rows.clone()], Some(&tgt[rows]), b, t, true, 0).unwrap().unwrap();
        acc.backward(&mut small, loss, 0).unwrap();
    }
    let loss = acc.finish(&mut small);
    assert!((loss - big_loss).abs() < 1e-6, "loss {loss} vs {big_loss}");
    assert_close("accumulated gradient", &small.grads, &to_f64(&big.grads), 1e-5);
    // A single micro-batch's gradient is far from the large batch's (the test can fail).
    let mut one = model(small.config.clone(), b);
    one.zero_grad();
    one.forward_lm(&idx[..b * t], Some(&tgt[..b * t]), b, t, true, 0).unwrap();
    one.backward().unwrap();
    let diff = one.grads.iter().zip(&big.grads).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff > 1e-3, "one micro-batch alone already matches ({diff})");

    // The same update follows, with clipping and momentum.
    let oc = OptimizerConfig::Sgd(SgdConfig { momentum: 0.9, weight_decay: 0.1, ..Default::default() });
    let mut opt_big = lmlab::optim::Optimizer::new(&oc, &big.layout);
    let mut opt_small = lmlab::optim::Optimizer::new(&oc, &small.layout);
    let clip = Clipping { norm: 0.5, value: 0.0 };
    let a = optimizer_step(&mut big, &mut opt_big, clip, 0, big_loss, 0.1, &mut LossScaler::disabled()).unwrap();
    let s = optimizer_step(&mut small, &mut opt_small, clip, 0, loss, 0.1, &mut LossScaler::disabled()).unwrap();
    assert!((a.grad_norm - s.grad_norm).abs() <= 1e-5 * a.grad_norm, "{} vs {}", a.grad_norm, s.grad_norm);
    assert_close("parameters after the update", &small.params, &to_f64(&big.params), 1e-6);
}

#[test]
fn seq2seq_micro_batches_weight_by_target_tokens() {
    let (b, s, t, k, v) = (2, 6, 7, 2, 24);
    let cfg = ModelConfig {
        arch: Arch::EncoderDecoder,
        vocab_size: v,
        block_size: 8,
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
        ..Default::default()
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let n = k * b;
    let src: Vec<u32> = (0..n * s).map(|_| rng.gen_range(4..v as u32)).collect();
    let mask: Vec<bool> = (0..n * s).map(|i| i % s < s - (i / s) % 3).collect();
    let tin: Vec<u32> = (0..n * t).map(|_| rng.gen_range(4..v as u32)).collect();
    // Micro-batch 0 keeps 2 of 7 targets per row, micro-batch 1 all 7: counts 4 vs 14.
    let tout: Vec<i32> =
        (0..n * t).map(|i| if i / (b * t) == 0 && i % t >= 2 { -1 } else { rng.gen_range(0..v as i32) }).collect();

    let mut big = model(cfg.clone(), n);
    big.zero_grad();
    let big_loss = big.forward_seq2seq(&src, Some(&mask), &tin, Some(&tout), n, s, t, true, 0).unwrap().unwrap();
    big.backward().unwrap();

    let mut small = model(cfg, b);
    small.zero_grad();
    let mut acc = GradAccum::new(k, 1.0);
    let mut mean_of_means = 0.0;
    for m in 0..k {
        let (rs, rt) = (m * b * s..(m + 1) * b * s, m * b * t..(m + 1) * b * t);
        let loss = small
            .forward_seq2seq(&src[rs.clone()], Some(&mask[rs]), &tin[rt.clone()], Some(&tout[rt]), b, s, t, true, 0)
            .unwrap()
            .unwrap();
        mean_of_means += loss / k as f32;
        acc.backward(&mut small, loss, 0).unwrap();
    }
    let loss = acc.finish(&mut small);
    assert!((loss - big_loss).abs() < 1e-5, "loss {loss} vs {big_loss}");
    assert!((mean_of_means - big_loss).abs() > 1e-3, "the micro-batches should differ in weight");
    assert_close("accumulated gradient", &small.grads, &to_f64(&big.grads), 1e-5);
}
