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

/// Length extrapolation (`lmlab eval lm --context` past the trained context, `lmlab explain
/// run positions`): a checkpoint trained at `block_size` tokens and rebuilt for 4× as many
/// computes exactly what it computed before on inputs of the trained length (no scheme but a
/// learned table depends on the block size), and reads the longer inputs; a learned table
/// cannot, and the error says why.
#[test]
fn a_checkpoint_rebuilt_for_a_longer_context_computes_the_same_and_reads_more() {
    use lmlab::data::{CharTokenizer, Tokenizer};
    use lmlab::io::checkpoint;
    let text = "the quick brown fox jumps over the lazy dog";
    let tok = Tokenizer::Char(CharTokenizer::from_corpus(text).unwrap());
    let ids = tok.encode(text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for position in
        [Position::None, Position::Sinusoidal, Position::Shaw, Position::T5, Position::Rope, Position::Alibi]
    {
        let cfg = ModelConfig {
            vocab_size: tok.vocab_size(),
            block_size: 8,
            n_layer: 2,
            n_head: 2,
            n_embd: 16,
            position,
            ..Default::default()
        };
        let mut model = Transformer::new(cfg, 1).unwrap();
        model.init(5);
        let ck = dir.path().join(format!("{position:?}"));
        checkpoint::save_new(&ck, &model, &tok).unwrap();
        let mut long = checkpoint::load_inference_at_context(&ck, 1, 32).unwrap().model;
        assert_eq!(long.config.block_size, 32);
        model.forward_lm(&ids[..8], None, 1, 8, false, 0).unwrap();
        long.forward_lm(&ids[..8], None, 1, 8, false, 0).unwrap();
        let (a, b) = (model.logits(), &long.logits()[..model.logits().len()]);
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 1e-5, "{position:?}: rebuilt model differs by {diff} at the trained length");
        // It reads 32 tokens, and the first 8 positions' logits are still the same (causal).
        long.forward_lm(&ids[..32], None, 1, 32, false, 0).unwrap();
        let diff = a.iter().zip(long.logits()).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 1e-5, "{position:?}: the causal prefix changed by {diff}");
        let r = sliding_window_eval(&mut long, &ids, 33, 32).unwrap();
        assert!(r.loss.is_finite() && r.tokens == ids.len() - 1);
    }
    let cfg = ModelConfig {
        vocab_size: tok.vocab_size(),
        block_size: 8,
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
        ..Default::default()
    };
    assert_eq!(cfg.position, Position::Learned);
    let mut model = Transformer::new(cfg, 1).unwrap();
    model.init(5);
    let ck = dir.path().join("learned");
    checkpoint::save_new(&ck, &model, &tok).unwrap();
    let err = checkpoint::load_inference_at_context(&ck, 1, 16).err().unwrap().to_string();
    assert!(err.contains("learned positions") && err.contains("cannot read 16 tokens"), "{err}");
    // A shorter context keeps the table.
    assert_eq!(checkpoint::load_inference_at_context(&ck, 1, 4).unwrap().model.config.block_size, 8);
}
