//! Sliding-window perplexity against a direct computation: every scored token's negative
//! log-likelihood recomputed alone, from exactly the context its window gives it.

use lmlab::eval::perplexity::{sliding_window_eval, sliding_windows};
use lmlab::model::transformer::{ModelConfig, Position, Transformer};
use rand::{Rng, SeedableRng};

/// −log p(tokens[k] | tokens[begin..k]) by one forward pass over the prefix.
fn nll_alone(model: &mut Transformer, tokens: &[u32], begin: usize, k: usize) -> f64 {
    let ctx = &tokens[begin..k];
    model.forward_lm(ctx, None, 1, ctx.len(), false, 0).unwrap();
    let v = model.config.vocab_size;
    let row = &model.logits()[(ctx.len() - 1) * v..ctx.len() * v];
    let max = row.iter().fold(f32::MIN, |m, &x| m.max(x)) as f64;
    let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    lse - row[tokens[k] as usize] as f64
}

#[test]
fn sliding_window_equals_per_token_scoring() {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(9);
    let tokens: Vec<u32> = (0..45).map(|_| rng.gen_range(0..17)).collect();
    for position in [Position::Learned, Position::Rope] {
        let cfg = ModelConfig {
            vocab_size: 17,
            block_size: 8,
            n_layer: 2,
            n_head: 2,
            n_embd: 16,
            position,
            ..Default::default()
        };
        let mut model = Transformer::new(cfg.clone(), 3).unwrap();
        model.init(4);
        let mut alone = Transformer::new(cfg, 1).unwrap();
        alone.params.copy_from_slice(&model.params);
        for (context, stride) in [(9, 3), (9, 9), (6, 1), (4, 2)] {
            let got = sliding_window_eval(&mut model, &tokens, context, stride).unwrap();
            let (mut sum, mut n) = (0.0, 0);
            for w in sliding_windows(tokens.len(), context, stride) {
                for k in w.first_scored..w.end {
                    sum += nll_alone(&mut alone, &tokens, w.begin, k);
                    n += 1;
                }
            }
            let want = sum / n as f64;
            assert_eq!(got.tokens, n, "{position:?} context {context} stride {stride}");
            assert!(
                (got.loss - want).abs() < 1e-5 * want,
                "{position:?} context {context} stride {stride}: {} vs {want}",
                got.loss
            );
            assert!((got.perplexity - want.exp()).abs() < 1e-4 * want.exp());
        }
        // More context never hurts a trained model, but on random weights the losses of different
        // strides must at least differ (the windows really change the context).
        let a = sliding_window_eval(&mut model, &tokens, 9, 1).unwrap().loss;
        let b = sliding_window_eval(&mut model, &tokens, 9, 9).unwrap().loss;
        assert!((a - b).abs() > 1e-6);
    }
}

#[test]
fn bad_window_settings_are_errors() {
    let cfg = ModelConfig { vocab_size: 5, block_size: 8, n_layer: 1, n_head: 1, n_embd: 8, ..Default::default() };
    let mut model = Transformer::new(cfg, 1).unwrap();
    let toks = [1u32, 2, 3, 4];
    let msg = |r: anyhow::Result<_>| format!("{:#}", r.unwrap_err());
    assert!(msg(sliding_window_eval(&mut model, &toks, 10, 2)).contains("block_size"));
    assert!(msg(sliding_window_eval(&mut model, &toks, 8, 9)).contains("stride"));
    assert!(msg(sliding_window_eval(&mut model, &toks, 8, 0)).contains("stride"));
    assert!(msg(sliding_window_eval(&mut model, &toks[..1], 8, 4)).contains("at least 2 tokens"));
}
