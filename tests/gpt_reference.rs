//! The GPT (the default decoder Transformer) matches a PyTorch reference
//! (scripts/make_fixtures.py, computed in float64) on logits, loss, every parameter gradient,
//! and the parameters after three AdamW steps with warm-up, cosine decay and global-norm
//! clipping.

mod common;
use common::assert_close;
use common::gpt_fixture::{check_forward_backward, config_of, gpt_from_fixture, tokens, GptFixture, RTOL};
use lmlab::model::transformer::AttentionKind;
use lmlab::optim::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule};

fn check_adamw_steps(name: &str) {
    let fx = GptFixture::load(name);
    let tf = fx.file();
    let cfg = config_of(&tf);
    let mut m = gpt_from_fixture(&tf, AttentionKind::Dense);
    let f = |k: &str| cfg[k].as_f64().unwrap() as f32;
    let schedule = LrSchedule::cosine(
        f("lr"),
        f("min_lr"),
        cfg["warmup_iters"].as_u64().unwrap(),
        cfg["lr_decay_iters"].as_u64().unwrap(),
    );
    let mut opt = AdamW::new(
        AdamWConfig {
            beta1: f("beta1"),
            beta2: f("beta2"),
            eps: f("eps"),
            weight_decay: f("weight_decay"),
            decay_embeddings: false,
        },
        &m.layout,
    );
    for k in 0..3u64 {
        let (idx, tg, b, t) = tokens(&tf, &format!("train.{k}."));
        m.zero_grad();
        let loss = m.forward_lm(&idx, Some(&tg), b, t, true, 0).unwrap().unwrap();
        m.backward().unwrap();
        // The key bias has a mathematically zero gradient (softmax ignores a constant added to
        // a whole row of scores). Its computed gradient is rounding noise, f32 here and f64 in
        // the reference, which Adam's g/√v normalisation blows up to a full-size step in either
        // direction. So those elements are checked to be ~0 and pinned to the reference.
        let key_bias = m
            .layout
            .tensors
            .iter()
            .filter(|t| t.name.ends_with("attn.c_attn.bias"))
            .map(|t| t.offset + t.shape[0] / 3..t.offset + 2 * t.shape[0] / 3)
            .collect::<Vec<_>>();
        for r in &key_bias {
            for g in &mut m.grads[r.clone()] {
                assert!(g.abs() < 1e-6, "key-bias gradient should vanish, got {g}");
                *g = 0.0;
            }
        }
        let norm = clip_grad_norm(&mut m.grads, f("grad_clip"));
        let lr = schedule.lr(k);
        opt.step(&mut m.params, &m.grads, lr);
        let (_, want) = tf.read_any(&format!("train.{k}.loss")).unwrap();
        assert_close(&format!("step {k} loss"), &[loss], &want, RTOL);
        let (_, want) = tf.read_any(&format!("train.{k}.grad_norm")).unwrap();
        assert_close(&format!("step {k} grad norm"), &[norm], &want, RTOL);
        let (_, want) = tf.read_any(&format!("train.{k}.lr")).unwrap();
        assert_close(&format!("step {k} lr"), &[lr], &want, 1e-6);
        for tv in m.layout.tensors.clone() {
            let (_, want) = tf.read_any(&format!("train.{k}.param.{}", tv.name)).unwrap();
            let mut got = m.params[tv.range()].to_vec();
            for r in key_bias.iter().filter(|r| tv.range().contains(&r.start)) {
                for i in r.clone() {
                    got[i - tv.offset] = want[i - tv.offset] as f32;
                }
            }
            assert_close(&format!("step {k} param {}", tv.name), &got, &want, RTOL);
            // Only the pinned key-bias elements continue from the reference's values.
            for r in key_bias.iter().filter(|r| tv.range().contains(&r.start)) {
                for i in r.clone() {
                    m.params[i] = want[i - tv.offset] as f32;
                }
            }
        }
    }
}

#[test]
fn forward_backward_bias_tied() {
    check_forward_backward("gpt_tiny_bias_tied.safetensors", AttentionKind::Dense, true);
}

#[test]
fn forward_backward_nobias_untied() {
    check_forward_backward("gpt_tiny_nobias_untied.safetensors", AttentionKind::Dense, true);
}

#[test]
fn three_adamw_steps_bias_tied() {
    check_adamw_steps("gpt_tiny_bias_tied.safetensors");
}

#[test]
fn three_adamw_steps_nobias_untied() {
    check_adamw_steps("gpt_tiny_nobias_untied.safetensors");
}

#[test]
fn forward_backward_with_flash_attention() {
    check_forward_backward("gpt_tiny_bias_tied.safetensors", AttentionKind::Flash, true);
    check_forward_backward("gpt_tiny_nobias_untied.safetensors", AttentionKind::Flash, true);
}
