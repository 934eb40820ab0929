//! The KV-cache path gives the same logits as the full forward pass at every step, for prompt
//! processing and token-by-token decoding, and generation across the block_size boundary
//! matches the uncached definition (re-run the last block_size tokens).

use lmlab::infer::sample::{generate, generate_cached, SampleOptions};
use lmlab::model::{Gpt, GptConfig, KvCache};
use rand::SeedableRng;

fn model(bias: bool) -> Gpt {
    let cfg = GptConfig {
        vocab_size: 13,
        block_size: 12,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        dropout: 0.0,
        bias,
        tie_embeddings: !bias,
        attention: Default::default(),
    };
    let mut m = Gpt::new(cfg, 1).unwrap();
    m.init_gpt2(5);
    // Bigger weights than GPT-2's init so attention is far from uniform.
    m.params.iter_mut().for_each(|p| *p *= 20.0);
    m
}

#[test]
fn cached_logits_equal_full_forward_at_every_step() {
    for bias in [true, false] {
        let mut m = model(bias);
        let seq: Vec<u32> = vec![3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8];
        let v = m.config.vocab_size;
        let mut cache = KvCache::new(&m.config);
        // Prefill 5 tokens, then one at a time.
        let mut got = vec![m.forward_cached(&seq[..5], &mut cache).unwrap().to_vec()];
        for &tok in &seq[5..] {
            got.push(m.forward_cached(&[tok], &mut cache).unwrap().to_vec());
        }
        assert!(cache.is_full());
        assert!(m.forward_cached(&[1], &mut cache).is_err(), "a full cache refuses more tokens");
        for (step, logits) in got.iter().enumerate() {
            let t = 5 + step;
            m.forward(&seq[..t], None, 1, t, false, 0).unwrap();
            let want = &m.logits()[(t - 1) * v..t * v];
            let scale = want.iter().fold(0.0f32, |a, x| a.max(x.abs()));
            for (a, b) in logits.iter().zip(want) {
                assert!((a - b).abs() <= 1e-5 * scale.max(1.0), "bias {bias} step {step}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn greedy_generation_past_block_size_matches_uncached_definition() {
    let mut m = model(true);
    let prompt = [2u32, 7, 1];
    let opts = SampleOptions { max_new_tokens: 25, temperature: 0.0, top_k: None, ..SampleOptions::default() };
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(0);
    let got = generate_cached(&mut m, &prompt, &opts, &mut rng, |_| {}).unwrap();
    // Reference: full forward over the last block_size tokens, argmax of the last position.
    let (v, block) = (m.config.vocab_size, m.config.block_size);
    let mut ctx = prompt.to_vec();
    for _ in 0..25 {
        let w = ctx[ctx.len().saturating_sub(block)..].to_vec();
        m.forward(&w, None, 1, w.len(), false, 0).unwrap();
        let last = &m.logits()[(w.len() - 1) * v..w.len() * v];
        let next = (0..v).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap() as u32;
        ctx.push(next);
    }
    assert_eq!(got, ctx[3..].to_vec());
}

/// `generate` on the general model: a plain GPT goes through the KV cache, any other decoder
/// re-runs its window; both give the tokens of the uncached definition (greedy).
#[test]
fn generate_on_any_decoder_matches_uncached_definition() {
    use lmlab::model::transformer::{ModelConfig, Position, Transformer};
    for position in [Position::Learned, Position::Rope, Position::Alibi] {
        let cfg = ModelConfig {
            vocab_size: 11,
            block_size: 8,
            n_layer: 2,
            n_head: 2,
            n_embd: 16,
            position,
            ..ModelConfig::default()
        };
        let mut m = Transformer::new(cfg, 1).unwrap();
        m.init(4);
        m.params.iter_mut().for_each(|p| *p *= 10.0); // sharper logits: fewer near-ties
        let prompt = [2u32, 7, 1];
        let opts = SampleOptions { max_new_tokens: 12, temperature: 0.0, top_k: None, ..SampleOptions::default() };
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(0);
        let got = generate(&mut m, &prompt, &opts, &mut rng, |_| {}).unwrap();
        let (v, block) = (11, 8);
        let mut ctx = prompt.to_vec();
        for _ in 0..12 {
            let w = ctx[ctx.len().saturating_sub(block)..].to_vec();
            m.forward_lm(&w, None, 1, w.len(), false, 0).unwrap();
            let last = &m.logits()[(w.len() - 1) * v..w.len() * v];
            ctx.push((0..v).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap() as u32);
        }
        assert_eq!(got, ctx[3..].to_vec(), "{position:?}");
    }
}
