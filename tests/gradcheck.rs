//! Finite-difference gradient checks: every kernel's backward pass against central differences
//! of its forward pass, for the scalar loss L = Σ r ⊙ out with fixed random weights r (so the
//! incoming gradient is dout = r).

use lmlab::kernels::{attention, crossentropy, dropout, embedding, gelu, layernorm, matmul, residual};
mod common;
use common::{check, dot, rand_vec};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

#[test]
fn matmul_gradients() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let (n, c, oc) = (5, 6, 7);
    let inp = rand_vec(&mut rng, n * c, 1.0);
    let w = rand_vec(&mut rng, oc * c, 1.0);
    let b = rand_vec(&mut rng, oc, 1.0);
    let r = rand_vec(&mut rng, n * oc, 1.0);
    let f = |inp: &[f32], w: &[f32], b: &[f32]| {
        let mut out = vec![0.0; n * oc];
        matmul::matmul_forward(&mut out, inp, w, Some(b), n, c, oc);
        dot(&out, &r)
    };
    let (mut di, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; oc * c], vec![0.0; oc]);
    matmul::matmul_backward(&mut di, &mut dw, Some(&mut db), &r, &inp, &w, n, c, oc);
    check("matmul dinp", &inp, &di, |x| f(x, &w, &b));
    check("matmul dweight", &w, &dw, |x| f(&inp, x, &b));
    check("matmul dbias", &b, &db, |x| f(&inp, &w, x));
}

#[test]
fn layernorm_gradients() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
    let (n, c) = (4, 40); // c > COLUMN_CHUNK exercises the column split
    let inp = rand_vec(&mut rng, n * c, 2.0);
    let w = rand_vec(&mut rng, c, 1.0);
    let b = rand_vec(&mut rng, c, 1.0);
    let r = rand_vec(&mut rng, n * c, 1.0);
    let f = |inp: &[f32], w: &[f32], b: &[f32]| {
        let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        layernorm::layernorm_forward(&mut out, &mut mean, &mut rstd, inp, w, Some(b), c, 1e-5);
        dot(&out, &r)
    };
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    layernorm::layernorm_forward(&mut out, &mut mean, &mut rstd, &inp, &w, Some(&b), c, 1e-5);
    let (mut di, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
    layernorm::layernorm_backward(&mut di, &mut dw, Some(&mut db), &r, &inp, &w, &mean, &rstd, c);
    check("layernorm dinp", &inp, &di, |x| f(x, &w, &b));
    check("layernorm dweight", &w, &dw, |x| f(&inp, x, &b));
    check("layernorm dbias", &b, &db, |x| f(&inp, &w, x));
}

#[test]
fn attention_gradients() {
    // t = 5 fits one causal row block; t = 37 spans two (blocks of 32), exercising the
    // block-skipping products and the block-by-block accumulation of dK and dV.
    attention_gradients_at(2, 5);
    attention_gradients_at(1, 37);
}

fn attention_gradients_at(b: usize, t: usize) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let (c, nh) = (8, 2);
    let qkv = rand_vec(&mut rng, b * t * 3 * c, 1.0);
    let r = rand_vec(&mut rng, b * t * c, 1.0);
    for p_drop in [0.0f32, 0.3] {
        let seed = 99;
        let f = |qkv: &[f32]| {
            let (mut out, mut att, mut drop) =
                (vec![0.0; b * t * c], vec![0.0; b * nh * t * t], vec![0.0; b * nh * t * t]);
            let d = (p_drop > 0.0).then_some((&mut drop[..], p_drop, seed, 5));
            attention::attention_forward(&mut out, &mut att, d, qkv, b, t, c, nh);
            dot(&out, &r)
        };
        let (mut out, mut att, mut drop) = (vec![0.0; b * t * c], vec![0.0; b * nh * t * t], vec![0.0; b * nh * t * t]);
        let d = (p_drop > 0.0).then_some((&mut drop[..], p_drop, seed, 5));
        attention::attention_forward(&mut out, &mut att, d, &qkv, b, t, c, nh);
        // Causality: row i of every probability block is zero right of the diagonal and sums to one.
        for blk in att.chunks(t * t) {
            for i in 0..t {
                assert!(blk[i * t + i + 1..(i + 1) * t].iter().all(|&p| p == 0.0));
                assert!((blk[i * t..i * t + i + 1].iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
        let (mut dqkv, mut datt) = (vec![0.0; b * t * 3 * c], vec![0.0; b * nh * t * t]);
        let d = (p_drop > 0.0).then_some((&drop[..], p_drop, seed, 5));
        attention::attention_backward(&mut dqkv, &mut datt, &r, &qkv, &att, d, b, t, c, nh);
        check(&format!("attention dqkv (t {t}, dropout {p_drop})"), &qkv, &dqkv, f);
        if p_drop == 0.0 {
            // The output against a direct evaluation of softmax(mask(QKᵀ/√hs))·V.
            let hs = c / nh;
            for bi in 0..b {
                for h in 0..nh {
                    for i in 0..t {
                        let q = |r: usize, off: usize| &qkv[(bi * t + r) * 3 * c + off + h * hs..][..hs];
                        let s: Vec<f64> = (0..=i)
                            .map(|j| {
                                q(i, 0).iter().zip(q(j, c)).map(|(x, y)| (*x * *y) as f64).sum::<f64>()
                                    / (hs as f64).sqrt()
                            })
                            .collect();
                        let m = s.iter().cloned().fold(f64::MIN, f64::max);
                        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                        for d in 0..hs {
                            let want: f64 = (0..=i).map(|j| (s[j] - m).exp() / z * q(j, 2 * c)[d] as f64).sum();
                            let got = out[(bi * t + i) * c + h * hs + d] as f64;
                            assert!((got - want).abs() < 1e-5, "attention output ({bi},{h},{i},{d}): {got} vs {want}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn gelu_residual_dropout_gradients() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
    let n = 50;
    let x = rand_vec(&mut rng, n, 3.0);
    let y = rand_vec(&mut rng, n, 3.0);
    let r = rand_vec(&mut rng, n, 1.0);
    let mut dx = vec![0.0; n];
    gelu::gelu_backward(&mut dx, &x, &r);
    check("gelu", &x, &dx, |x| {
        let mut out = vec![0.0; n];
        gelu::gelu_forward(&mut out, x);
        dot(&out, &r)
    });
    // A known value: gelu_tanh(1) = 0.841192 (PyTorch, approximate='tanh').
    let mut one = [0.0f32];
    gelu::gelu_forward(&mut one, &[1.0]);
    assert!((one[0] - 0.841_192).abs() < 1e-5, "{}", one[0]);

    let (mut da, mut db) = (vec![0.0; n], vec![0.0; n]);
    residual::residual_backward(&mut da, &mut db, &r);
    let res = |a: &[f32], b: &[f32]| {
        let mut out = vec![0.0; n];
        residual::residual_forward(&mut out, a, b);
        dot(&out, &r)
    };
    check("residual da", &x, &da, |a| res(a, &y));
    check("residual db", &y, &db, |b| res(&x, b));

    let mut dd = vec![0.0; n];
    dropout::dropout_backward(&mut dd, &r, 0.25, 5);
    check("dropout", &x, &dd, |x| {
        let mut out = vec![0.0; n];
        dropout::dropout_forward(&mut out, x, 0.25, 5);
        dot(&out, &r)
    });
}

#[test]
fn embedding_gradients() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let (v, block, b, t, c) = (7, 6, 2, 4, 40);
    let wte = rand_vec(&mut rng, v * c, 1.0);
    let wpe = rand_vec(&mut rng, block * c, 1.0);
    let idx: Vec<u32> = vec![1, 3, 3, 6, 0, 1, 1, 1]; // repeated tokens accumulate
    let r = rand_vec(&mut rng, b * t * c, 1.0);
    let f = |wte: &[f32], wpe: &[f32]| {
        let mut out = vec![0.0; b * t * c];
        embedding::token_embedding_forward(&mut out, &idx, wte, 1.0, Some(wpe), t, c);
        dot(&out, &r)
    };
    let (mut dwte, mut dwpe) = (vec![0.0; v * c], vec![0.0; block * c]);
    embedding::token_embedding_backward(&mut dwte, Some(&mut dwpe), &r, &idx, 1.0, t, c);
    check("embedding dwte", &wte, &dwte, |x| f(x, &wpe));
    check("embedding dwpe", &wpe, &dwpe, |x| f(&wte, x));
}

/// Label smoothing: PyTorch's value for a fixed case
/// (`F.cross_entropy(x, t, ignore_index=-1, label_smoothing=0.1)` in float64 = 0.7284099578839937),
/// and finite differences of the smoothed loss.
#[test]
fn label_smoothed_crossentropy() {
    let v = 5;
    let x = [0.5f32, -1.0, 2.0, 0.1, 0.0, 1.5, 0.2, -0.3, 0.9, -2.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let targets = [2, 0, -1];
    let mut losses = vec![0.0; 3];
    let (sum, count) = crossentropy::crossentropy_forward(&mut losses, &x, &targets, v, 0.1);
    assert_eq!(count, 2);
    assert!((sum / 2.0 - 0.7284099578839937).abs() < 1e-6, "smoothed loss {}", sum / 2.0);

    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    let (n, v) = (4, 7);
    let logits = rand_vec(&mut rng, n * v, 3.0);
    let targets = [3, -1, 0, 6];
    let f = |l: &[f32]| {
        let mut losses = vec![0.0; n];
        let (sum, count) = crossentropy::crossentropy_forward(&mut losses, l, &targets, v, 0.2);
        sum / count as f64
    };
    let mut d = vec![0.0; n * v];
    crossentropy::crossentropy_backward(&mut d, &logits, &targets, v, 1.0 / 3.0, 0.2);
    check("smoothed crossentropy", &logits, &d, f);
}

#[test]
fn crossentropy_gradients_and_ignore_index() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(6);
    let (n, v) = (5, 9);
    let logits = rand_vec(&mut rng, n * v, 3.0);
    let targets = [3, -1, 0, 8, 4];
    let f = |l: &[f32]| {
        let mut losses = vec![0.0; n];
        let (sum, count) = crossentropy::crossentropy_forward(&mut losses, l, &targets, v, 0.0);
        assert_eq!(count, 4);
        sum / count as f64
    };
    let mut d = vec![0.0; n * v];
    crossentropy::crossentropy_backward(&mut d, &logits, &targets, v, 0.25, 0.0);
    assert!(d[v..2 * v].iter().all(|&g| g == 0.0), "ignored row has no gradient");
    check("crossentropy", &logits, &d, f);
    // Uniform logits give loss ln(V).
    let mut losses = vec![0.0; 1];
    let (s, _) = crossentropy::crossentropy_forward(&mut losses, &vec![0.5; v], &[2], v, 0.0);
    assert!((s - (v as f64).ln()).abs() < 1e-6);
}

#[test]
fn pooling_gradients() {
    use lmlab::kernels::pool::{Pool, PoolingMode};
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
    let (b, t, c) = (2, 5, 4);
    let h = rand_vec(&mut rng, b * t * c, 2.0);
    let r = rand_vec(&mut rng, b * c, 1.0);
    let mask: Vec<bool> = (0..b * t).map(|i| i < t || i % t < 3).collect(); // second row: 3 tokens
    for mode in [PoolingMode::Cls, PoolingMode::Mean, PoolingMode::Max, PoolingMode::MeanSqrtLen] {
        let pool = Pool { mode, mask: Some(&mask), b, t, c };
        let f = |h: &[f32]| {
            let mut pooled = vec![0.0; b * c];
            pool.forward::<f32>(&mut pooled, h);
            dot(&pooled, &r)
        };
        let mut dh = vec![f32::NAN; b * t * c];
        pool.backward(&mut dh, &r, &h);
        assert!(dh[(t + 3) * c..].iter().all(|&g| g == 0.0), "{mode:?}: padding gets no gradient");
        check(&format!("pooling {mode:?}"), &h, &dh, f);
    }
}

/// The worst difference between the backward pass's gradient and central differences of
/// `loss` (one forward pass returning the mean loss), relative to the largest gradient, over 4
/// parameters drawn (seeded by `seed`) from every tensor of `m`.
fn sampled_gradient_error(
    m: &mut lmlab::model::transformer::Transformer,
    seed: u64,
    mut loss: impl FnMut(&mut lmlab::model::transformer::Transformer) -> f32,
) -> f64 {
    m.zero_grad();
    loss(m);
    m.backward().unwrap();
    let (grads, params) = (m.grads.clone(), m.params.clone());
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let picks: Vec<usize> = m
        .layout
        .tensors
        .iter()
        .flat_map(|t| (0..4).map(|_| t.offset + rng.gen_range(0..t.numel())).collect::<Vec<_>>())
        .collect();
    let h = 3e-3f32;
    let scale = grads.iter().fold(0.0f32, |a, g| a.max(g.abs())) as f64;
    let mut worst = 0.0f64;
    for &i in &picks {
        let mut at = |x: f32| {
            m.params.copy_from_slice(&params);
            m.params[i] = x;
            loss(m) as f64
        };
        let numeric = (at(params[i] + h) - at(params[i] - h)) / (2.0 * h as f64);
        worst = worst.max((numeric - grads[i] as f64).abs() / scale);
    }
    worst
}

#[test]
fn whole_model_gradients_with_and_without_dropout() {
    use lmlab::model::transformer::{ModelConfig, Transformer};
    for dropout in [0.0, 0.2] {
        // The default decoder: nanoGPT's GPT.
        let cfg = ModelConfig {
            vocab_size: 9,
            block_size: 6,
            n_layer: 2,
            n_head: 2,
            n_embd: 8,
            dropout,
            bias: true,
            tie_embeddings: true,
            ..ModelConfig::default()
        };
        let mut m = Transformer::new(cfg, 2).unwrap();
        m.init(3);
        // Larger weights than GPT-2's init so gradients are well above rounding noise.
        m.params.iter_mut().for_each(|p| *p *= 5.0);
        let idx = [1u32, 2, 3, 4, 5, 6, 7, 8, 0, 1];
        let tg = [2i32, 3, 4, -1, 6, 7, 8, 0, 1, 2];
        // Same dropout seed every pass: the same masks as the analytic pass.
        let worst =
            sampled_gradient_error(&mut m, 8, |m| m.forward_lm(&idx, Some(&tg), 2, 5, true, 77).unwrap().unwrap());
        assert!(worst < 5e-3, "dropout {dropout}: model finite-difference mismatch {worst:.2e}");
    }
}

/// The masked-LM head (dense, activation, norm, the tied embedding transposed plus a bias) on
/// an encoder, through the whole model: every tensor's gradient against central differences,
/// with a padding mask and targets at a few positions only, for LayerNorm and RMSNorm.
#[test]
fn masked_lm_gradients() {
    use lmlab::model::transformer::{Arch, EncoderHead, ModelConfig, NormKind, Transformer};
    for norm in [NormKind::Layernorm, NormKind::Rmsnorm] {
        let cfg = ModelConfig {
            arch: Arch::Encoder,
            encoder_head: EncoderHead::Mlm,
            vocab_size: 9,
            block_size: 6,
            n_layer: 2,
            n_head: 2,
            n_embd: 8,
            norm,
            dropout: 0.0,
            bias: true,
            ..ModelConfig::default()
        };
        let mut m = Transformer::new(cfg, 2).unwrap();
        m.init(5);
        m.params.iter_mut().for_each(|p| *p *= 5.0);
        let idx = [8u32, 2, 8, 4, 5, 6, 7, 8, 0, 1];
        let tg = [3i32, -1, 1, -1, -1, -1, 2, 5, -1, -1];
        let mask = [true, true, true, true, true, true, true, true, true, false];
        assert!(m.layout.get("mlm.dense.weight").is_some() && m.layout.get("mlm.bias").is_some());
        let worst = sampled_gradient_error(&mut m, 9, |m| {
            m.forward_mlm(&idx, Some(&mask), Some(&tg), 2, 5, true, 0).unwrap().unwrap()
        });
        assert!(worst < 5e-3, "{norm:?}: masked-LM finite-difference mismatch {worst:.2e}");
    }
}

#[test]
fn flash_attention_matches_dense_and_finite_differences() {
    use lmlab::kernels::flash_attention::{flash_attention_backward, flash_attention_forward, scratch_per_head};
    // t = 130 spans three query and key tiles of 64 with a ragged last one.
    for &(b, t, c, nh) in &[(2usize, 5usize, 16usize, 2usize), (1, 64, 16, 2), (1, 130, 8, 2)] {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(t as u64);
        let qkv = rand_vec(&mut rng, b * t * 3 * c, 1.5);
        let r = rand_vec(&mut rng, b * t * c, 1.0);
        let (mut out_d, mut att) = (vec![0.0; b * t * c], vec![0.0; b * nh * t * t]);
        attention::attention_forward(&mut out_d, &mut att, None, &qkv, b, t, c, nh);
        let (mut out_f, mut lse, mut scr) =
            (vec![0.0; b * t * c], vec![0.0; b * nh * t], vec![0.0; b * nh * scratch_per_head(t)]);
        flash_attention_forward(&mut out_f, &mut lse, &mut scr, &qkv, b, t, c, nh);
        for (x, y) in out_f.iter().zip(&out_d) {
            assert!((x - y).abs() < 1e-5, "t {t}: flash output {x} vs dense {y}");
        }
        let (mut dq_d, mut datt) = (vec![0.0; b * t * 3 * c], vec![0.0; b * nh * t * t]);
        attention::attention_backward(&mut dq_d, &mut datt, &r, &qkv, &att, None, b, t, c, nh);
        let mut dq_f = vec![f32::NAN; b * t * 3 * c];
        flash_attention_backward(&mut dq_f, &mut scr, &r, &qkv, &out_f, &lse, b, t, c, nh);
        for (x, y) in dq_f.iter().zip(&dq_d) {
            assert!((x - y).abs() < 1e-4, "t {t}: flash dqkv {x} vs dense {y}");
        }
        if t <= 64 {
            check(&format!("flash attention dqkv (t {t})"), &qkv, &dq_f, |qkv| {
                let (mut out, mut lse, mut scr) =
                    (vec![0.0; b * t * c], vec![0.0; b * nh * t], vec![0.0; b * nh * scratch_per_head(t)]);
                flash_attention_forward(&mut out, &mut lse, &mut scr, qkv, b, t, c, nh);
                dot(&out, &r)
            });
        }
    }
}
