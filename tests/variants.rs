//! Properties of the Transformer family that the PyTorch fixtures do not cover: the original
//! GPT fixtures through the general model, finite-difference gradients with dropout on,
//! permutation equivariance without positions, and sequences longer than block_size.

mod common;
use common::assert_close;
use common::gpt_fixture::check_forward_backward;
use lmlab::model::transformer::{
    Arch, AttentionKind, ModelConfig, NormKind, NormPosition, Pooling, Position, ScoreKind, Transformer,
};
use lmlab::model::ParamKind;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn tiny(arch: Arch) -> ModelConfig {
    ModelConfig { arch, vocab_size: 9, block_size: 8, n_layer: 2, n_head: 2, n_embd: 8, ..ModelConfig::default() }
}

/// The decoder with default choices is nanoGPT's GPT: in evaluation mode too it reproduces
/// the GPT fixtures (logits, loss, every gradient; tests/gpt_reference.rs checks training mode
/// and AdamW steps).
#[test]
fn default_decoder_matches_the_gpt_fixtures() {
    for name in ["gpt_tiny_bias_tied.safetensors", "gpt_tiny_nobias_untied.safetensors"] {
        check_forward_backward(name, AttentionKind::Dense, false);
    }
}

/// Runs the model's forward pass on a fixed small batch of its arch; returns the loss.
fn loss_of(m: &mut Transformer, train: bool, seed: u64) -> f32 {
    let (b, t) = (2, 6);
    let idx: Vec<u32> = (0..b * t).map(|i| (i * 5 % 9) as u32).collect();
    let mask: Vec<bool> = (0..b * t).map(|i| i < t || i % t < 4).collect(); // second sequence: 4 tokens
    match m.config.arch {
        Arch::Decoder => {
            let tg: Vec<i32> = (0..b * t).map(|i| if i == 3 { -1 } else { ((i * 7 + 1) % 9) as i32 }).collect();
            m.forward_lm(&idx, Some(&tg), b, t, train, seed).unwrap().unwrap()
        }
        Arch::Encoder => m.forward_classify(&idx, Some(&mask), Some(&[1, 0]), b, t, train, seed).unwrap().unwrap(),
        Arch::EncoderDecoder => {
            let tin: Vec<u32> = (0..b * 5).map(|i| (i * 3 % 9) as u32).collect();
            let tout: Vec<i32> = (0..b * 5).map(|i| if i >= 8 { -1 } else { ((i * 2 + 1) % 9) as i32 }).collect();
            m.forward_seq2seq(&idx, Some(&mask), &tin, Some(&tout), b, t, 5, train, seed).unwrap().unwrap()
        }
        Arch::Lstm | Arch::Gru | Arch::Cnn => unreachable!("not a Transformer"),
    }
}

/// Central differences of the whole model's loss against its backward pass, on a sample of
/// every trained tensor, with residual and attention dropout active (the same seed gives the
/// same masks).
fn check_model_gradients(cfg: ModelConfig) {
    check_model_gradients_with_step(cfg, 3e-3)
}

/// [`check_model_gradients`] with central differences of step `h`.
fn check_model_gradients_with_step(cfg: ModelConfig, h: f32) {
    let what = format!("{cfg:?}");
    let mut m = Transformer::new(cfg, 2).unwrap();
    m.init(3);
    // Larger weights than the GPT-2 init so gradients are well above rounding noise.
    let layout = m.layout.clone();
    for t in layout.tensors.iter().filter(|t| matches!(t.kind, ParamKind::Matrix | ParamKind::Embedding)) {
        m.params[t.range()].iter_mut().for_each(|p| *p *= 5.0);
    }
    let params = m.params.clone();
    m.zero_grad();
    loss_of(&mut m, true, 77);
    m.backward().unwrap();
    let grads = m.grads.clone();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(8);
    let picks: Vec<usize> = layout
        .tensors
        .iter()
        .filter(|t| t.kind != ParamKind::Buffer)
        .flat_map(|t| (0..3).map(|_| t.offset + rng.gen_range(0..t.numel())).collect::<Vec<_>>())
        .collect();
    let scale = grads.iter().fold(0.0f32, |a, g| a.max(g.abs())) as f64;
    let mut worst = (0.0f64, 0);
    for &i in &picks {
        let mut loss_at = |x: f32| {
            m.params.copy_from_slice(&params);
            m.params[i] = x;
            loss_of(&mut m, true, 77) as f64
        };
        let numeric = (loss_at(params[i] + h) - loss_at(params[i] - h)) / (2.0 * h as f64);
        let err = (numeric - grads[i] as f64).abs() / scale;
        if err > worst.0 {
            worst = (err, i);
        }
    }
    let name = layout.tensors.iter().find(|t| t.range().contains(&worst.1)).unwrap().name.clone();
    assert!(worst.0 < 5e-3, "finite-difference mismatch {:.2e} at {name} for {what}", worst.0);
}

#[test]
fn decoder_gradients_with_dropout() {
    for (position, score) in [
        (Position::Learned, ScoreKind::Scaled),
        (Position::Rope, ScoreKind::Scaled),
        (Position::Shaw, ScoreKind::Unscaled),
        (Position::T5, ScoreKind::Cosine),
        (Position::Alibi, ScoreKind::Additive),
    ] {
        check_model_gradients(ModelConfig {
            position,
            score,
            shaw_k: 2,
            t5_buckets: 6,
            t5_max_distance: 10,
            n_kv_head: Some(1),
            dropout: 0.2,
            attn_dropout: Some(0.1),
            ..tiny(Arch::Decoder)
        });
    }
}

#[test]
fn encoder_and_seq2seq_gradients_with_dropout() {
    check_model_gradients(ModelConfig {
        norm: NormKind::Rmsnorm,
        pooling: Pooling::Mean,
        position: Position::Sinusoidal,
        dropout: 0.2,
        ..tiny(Arch::Encoder)
    });
    check_model_gradients(ModelConfig {
        norm: NormKind::Batchnorm,
        norm_position: NormPosition::Post,
        final_norm: false,
        dropout: 0.1,
        ..tiny(Arch::Encoder)
    });
    check_model_gradients(ModelConfig {
        activation: lmlab::model::transformer::ActivationKind::Swiglu,
        position: Position::Rope,
        dropout: 0.2,
        share_embeddings: false,
        ..tiny(Arch::EncoderDecoder)
    });
}

/// The ablations of `lmlab explain`: no residual connections (pre- and post-norm, encoder and
/// decoder) and no normalisation at all (`norm = "none"`, also as the final and embedding
/// norms), with dropout: finite-difference gradients of the whole model.
#[test]
fn no_residual_and_no_norm_gradients() {
    check_model_gradients(ModelConfig { residual: false, dropout: 0.1, ..tiny(Arch::Decoder) });
    // norm(f(x)) without the skip normalises the attention output alone, whose rows vary
    // little: the loss bends sharply there, and the central difference's truncation error
    // (measured: 1.1, 3.0e-2, 2.9e-3, 2.4e-4 of the largest gradient at h = 1e-2, 3e-3, 1e-3,
    // 3e-4, falling as h²) needs a smaller step than the other variants.
    check_model_gradients_with_step(
        ModelConfig { residual: false, norm_position: NormPosition::Post, final_norm: false, ..tiny(Arch::Encoder) },
        3e-4,
    );
    check_model_gradients(ModelConfig {
        norm: NormKind::None,
        embedding_norm: true,
        dropout: 0.1,
        ..tiny(Arch::Decoder)
    });
    check_model_gradients(ModelConfig { norm: NormKind::None, residual: false, ..tiny(Arch::EncoderDecoder) });
}

/// `norm = "none"` removes exactly the norms' parameters, and `residual = false` changes the
/// function the same weights compute.
#[test]
fn no_norm_has_no_norm_parameters_and_no_residual_changes_the_function() {
    let with = Transformer::new(tiny(Arch::Decoder), 1).unwrap();
    let without = Transformer::new(ModelConfig { norm: NormKind::None, ..tiny(Arch::Decoder) }, 1).unwrap();
    assert!(with.layout.tensors.iter().any(|t| t.name.contains(".ln_")));
    assert!(!without.layout.tensors.iter().any(|t| t.name.contains(".ln_")));
    let norm_params: usize = with.layout.tensors.iter().filter(|t| t.name.contains(".ln_")).map(|t| t.numel()).sum();
    assert_eq!(with.num_params() - without.num_params(), norm_params);
    let ids = [1u32, 4, 2, 7, 3];
    let run = |cfg: ModelConfig| {
        let mut m = Transformer::new(cfg, 1).unwrap();
        m.init(11);
        m.forward_lm(&ids, None, 1, ids.len(), false, 0).unwrap();
        m.logits().to_vec()
    };
    let (a, b) = (run(tiny(Arch::Decoder)), run(ModelConfig { residual: false, ..tiny(Arch::Decoder) }));
    assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-4));
}

/// `embedding_norm`: the norm on the embedding sum (BERT's `embeddings.LayerNorm`), backward
/// included, before embedding dropout; in a BERT-shaped encoder (post-norm, no final norm,
/// exact GELU, mean pooling, BERT's eps) and in decoders with the other norm kinds.
#[test]
fn embedding_norm_gradients_with_dropout() {
    check_model_gradients(ModelConfig {
        embedding_norm: true,
        norm_position: NormPosition::Post,
        final_norm: false,
        activation: lmlab::model::transformer::ActivationKind::Gelu,
        pooling: Pooling::Mean,
        norm_eps: 1e-12,
        dropout: 0.2,
        ..tiny(Arch::Encoder)
    });
    for norm in [NormKind::Rmsnorm, NormKind::Batchnorm] {
        check_model_gradients(ModelConfig { embedding_norm: true, norm, dropout: 0.1, ..tiny(Arch::Decoder) });
    }
    check_model_gradients(ModelConfig { embedding_norm: true, dropout: 0.1, ..tiny(Arch::EncoderDecoder) });
}

/// The embedding norm is a real layer: its parameters exist under `{stack}.ln_emb` and change the
/// output (the same weights without it give other hidden states).
#[test]
fn embedding_norm_parameters_and_effect() {
    let cfg = ModelConfig { embedding_norm: true, ..tiny(Arch::EncoderDecoder) };
    let m = Transformer::new(cfg, 1).unwrap();
    for name in ["encoder.ln_emb.weight", "encoder.ln_emb.bias", "decoder.ln_emb.weight", "decoder.ln_emb.bias"] {
        let t = m.layout.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(t.shape, vec![8], "{name}");
    }
    let mut with = Transformer::new(ModelConfig { embedding_norm: true, ..tiny(Arch::Encoder) }, 1).unwrap();
    with.init(4);
    let mut without = Transformer::new(tiny(Arch::Encoder), 1).unwrap();
    for t in without.layout.tensors.clone() {
        let src = with.layout.get(&t.name).unwrap().range();
        without.params[t.range()].copy_from_slice(&with.params[src]);
    }
    assert_eq!(with.layout.tensors.len(), without.layout.tensors.len() + 2, "ln_emb adds a weight and a bias");
    let hidden = |m: &mut Transformer| {
        m.forward_classify(&[1, 2, 3, 4], None, None, 1, 4, false, 0).unwrap();
        m.hidden().to_vec()
    };
    let (h_with, h_without) = (hidden(&mut with), hidden(&mut without));
    assert!(h_with.iter().zip(&h_without).any(|(a, b)| (a - b).abs() > 1e-3), "ln_emb changes nothing");
    assert!(Transformer::new(tiny(Arch::Decoder), 1).unwrap().layout.get("transformer.ln_emb.weight").is_none());
}

/// Without positional information an encoder is permutation-equivariant: permuting the input
/// tokens permutes the output rows the same way.
#[test]
fn no_position_encoder_is_permutation_equivariant() {
    let cfg = ModelConfig { position: Position::None, ..tiny(Arch::Encoder) };
    let mut m = Transformer::new(cfg, 1).unwrap();
    m.init(5);
    let idx = [3u32, 1, 4, 1, 5, 8, 2, 6];
    let perm = [5usize, 2, 7, 0, 3, 6, 1, 4];
    let permuted: Vec<u32> = perm.iter().map(|&p| idx[p]).collect();
    m.forward_classify(&idx, None, None, 1, 8, false, 0).unwrap();
    let h = m.hidden().to_vec();
    m.forward_classify(&permuted, None, None, 1, 8, false, 0).unwrap();
    let hp = m.hidden().to_vec();
    let c = 8;
    for (i, &p) in perm.iter().enumerate() {
        for j in 0..c {
            assert!((hp[i * c + j] - h[p * c + j]).abs() < 1e-5, "row {i} is not row {p} of the unpermuted output");
        }
    }
    // With learned positions the same check fails: the test can tell the difference.
    let mut learned = Transformer::new(tiny(Arch::Encoder), 1).unwrap();
    learned.init(5);
    learned.forward_classify(&idx, None, None, 1, 8, false, 0).unwrap();
    let h = learned.hidden().to_vec();
    learned.forward_classify(&permuted, None, None, 1, 8, false, 0).unwrap();
    let hp = learned.hidden().to_vec();
    let moved = perm.iter().enumerate().any(|(i, &p)| (0..c).any(|j| (hp[i * c + j] - h[p * c + j]).abs() > 1e-3));
    assert!(moved, "learned positions must break equivariance");
}

/// Schemes without a position table run on sequences longer than block_size: a model built
/// with a longer block_size and the same weights gives the same logits on the first
/// block_size positions (causal attention: later tokens cannot change them) and finite
/// logits beyond.
#[test]
fn longer_sequences_than_trained() {
    for position in
        [Position::None, Position::Sinusoidal, Position::Rope, Position::Alibi, Position::T5, Position::Shaw]
    {
        let cfg = ModelConfig { position, shaw_k: 3, ..tiny(Arch::Decoder) };
        let mut short = Transformer::new(cfg.clone(), 1).unwrap();
        short.init(11);
        let mut long = Transformer::new(ModelConfig { block_size: 24, ..cfg }, 1).unwrap();
        assert_eq!(long.layout.total, short.layout.total, "{position:?}: the weights do not depend on block_size");
        long.params.copy_from_slice(&short.params);
        let idx: Vec<u32> = (0..24).map(|i| (i * 7 % 9) as u32).collect();
        short.forward_lm(&idx[..8], None, 1, 8, false, 0).unwrap();
        long.forward_lm(&idx, None, 1, 24, false, 0).unwrap();
        let v = 9;
        let want: Vec<f64> = short.logits().iter().map(|&x| x as f64).collect();
        assert_close(&format!("{position:?} prefix logits"), &long.logits()[..8 * v], &want, 1e-5);
        assert!(long.logits().iter().all(|x| x.is_finite()));
    }
    // A learned table has block_size rows: a longer model has a different layout.
    let short = Transformer::new(tiny(Arch::Decoder), 1).unwrap();
    let long = Transformer::new(ModelConfig { block_size: 24, ..tiny(Arch::Decoder) }, 1).unwrap();
    assert_ne!(short.layout.total, long.layout.total);
}

#[test]
fn bad_shapes_and_inputs_are_errors() {
    let bad = |cfg: ModelConfig| Transformer::new(cfg, 1).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(bad(ModelConfig { n_kv_head: Some(3), n_head: 4, ..tiny(Arch::Decoder) }).contains("n_kv_head"));
    assert!(
        bad(ModelConfig { position: Position::Shaw, score: ScoreKind::Cosine, ..tiny(Arch::Decoder) }).contains("shaw")
    );
    assert!(bad(ModelConfig { n_embd: 6, n_head: 2, position: Position::Rope, ..tiny(Arch::Decoder) })
        .contains("even head size"));
    assert!(bad(ModelConfig { num_classes: 1, ..tiny(Arch::Encoder) }).contains("num_classes"));
    let mut m = Transformer::new(tiny(Arch::Encoder), 2).unwrap();
    let e = m.forward_lm(&[1, 2], None, 1, 2, false, 0).unwrap_err().to_string();
    assert!(e.contains("decoder"), "{e}");
    let e = m.forward_classify(&[1, 2], None, Some(&[5]), 1, 2, false, 0).unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
    let e = m.forward_classify(&[1, 2], Some(&[true]), None, 1, 2, false, 0).unwrap_err().to_string();
    assert!(e.contains("mask"), "{e}");
    let e = m.forward_classify(&[1; 9], None, None, 1, 9, false, 0).unwrap_err().to_string();
    assert!(e.contains("block_size"), "{e}");
}
