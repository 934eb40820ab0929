//! Encode-once / decode-many inference of the encoder-decoder model: `encode` + `decode` give
//! exactly the logits of a full `forward_seq2seq`, and `reorder_encoded` moves encoded rows.

use lmlab::model::transformer::{
    ActivationKind, Arch, ModelConfig, NormKind, NormPosition, Position, ScoreKind, Transformer,
};
use lmlab::model::ParamKind;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const V: usize = 11;

fn base() -> ModelConfig {
    ModelConfig {
        arch: Arch::EncoderDecoder,
        vocab_size: V,
        block_size: 20,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        ..ModelConfig::default()
    }
}

/// A spread of encoder-decoder variants: GPT-2 choices, the original Transformer (post-norm,
/// sinusoidal, scaled embeddings, ReLU, dropout that eval must switch off, untied, separate
/// embeddings), and a modern one (RMSNorm, T5 biases, grouped-query attention, SwiGLU).
fn variants() -> Vec<ModelConfig> {
    vec![
        base(),
        ModelConfig {
            norm_position: NormPosition::Post,
            final_norm: false,
            position: Position::Sinusoidal,
            scale_embeddings: true,
            activation: ActivationKind::Relu,
            dropout: 0.1,
            tie_embeddings: false,
            share_embeddings: false,
            n_dec_layer: Some(3),
            ..base()
        },
        ModelConfig {
            norm: NormKind::Rmsnorm,
            position: Position::T5,
            n_kv_head: Some(1),
            activation: ActivationKind::Swiglu,
            bias: false,
            score: ScoreKind::Cosine,
            ..base()
        },
        ModelConfig { position: Position::Rope, norm: NormKind::Batchnorm, ..base() },
    ]
}

/// A randomly initialised model with weights large enough that rows differ clearly.
fn model(cfg: ModelConfig, max_batch: usize, seed: u64) -> Transformer {
    let mut m = Transformer::new(cfg, max_batch).unwrap();
    m.init(seed);
    let layout = m.layout.clone();
    for t in layout.tensors.iter().filter(|t| matches!(t.kind, ParamKind::Matrix | ParamKind::Embedding)) {
        m.params[t.range()].iter_mut().for_each(|p| *p *= 5.0);
    }
    m
}

/// (src (B, S), mask (B, S)) with source lengths `lens` (PAD = 0 after each).
fn padded_source(rng: &mut impl Rng, lens: &[usize], s: usize) -> (Vec<u32>, Vec<bool>) {
    let mut src = vec![0u32; lens.len() * s];
    let mut mask = vec![false; lens.len() * s];
    for (r, &len) in lens.iter().enumerate() {
        for j in 0..len {
            src[r * s + j] = rng.gen_range(3..V as u32);
            mask[r * s + j] = true;
        }
    }
    (src, mask)
}

fn tokens(rng: &mut impl Rng, n: usize) -> Vec<u32> {
    (0..n).map(|_| rng.gen_range(0..V as u32)).collect()
}

/// The logits of a full evaluation-mode forward pass.
#[allow(clippy::too_many_arguments)]
fn full_logits(m: &mut Transformer, src: &[u32], mask: &[bool], tgt: &[u32], b: usize, s: usize, t: usize) -> Vec<f32> {
    m.forward_seq2seq(src, Some(mask), tgt, None, b, s, t, false, 0).unwrap();
    m.logits().to_vec()
}

#[test]
fn encode_then_decode_equals_forward_seq2seq_exactly() {
    for (k, cfg) in variants().into_iter().enumerate() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(k as u64);
        let mut m = model(cfg.clone(), 4, 10 + k as u64);
        let (b, s) = (3, 7);
        let (src, mask) = padded_source(&mut rng, &[7, 4, 1], s);
        // Several decoder inputs of different lengths against one encoding.
        let tgts: Vec<(Vec<u32>, usize)> = [1, 5, 10, 3].iter().map(|&t| (tokens(&mut rng, b * t), t)).collect();
        let want: Vec<Vec<f32>> = tgts.iter().map(|(tg, t)| full_logits(&mut m, &src, &mask, tg, b, s, *t)).collect();
        m.encode(&src, Some(&mask), b, s).unwrap();
        assert!(m.logits().is_empty(), "variant {k}: logits before the first decode must be empty");
        for ((tg, t), want) in tgts.iter().zip(&want) {
            let got = m.decode(tg, b, *t).unwrap().to_vec();
            assert_eq!(got.len(), b * t * V, "variant {k}: logits shape");
            assert!(got.iter().all(|x| x.is_finite()), "variant {k}: non-finite logits");
            assert_eq!(&got, want, "variant {k} T={t}: decode logits differ from forward_seq2seq");
            assert_eq!(m.logits(), &want[..], "variant {k}: logits() after decode");
        }
        // The padding really is masked: changing a padded source token changes nothing, changing
        // a real one changes the logits (so the comparison above can fail).
        let (tg, t) = &tgts[1];
        let mut src2 = src.clone();
        src2[s + 5] = 9; // row 1 has 4 real tokens
        m.encode(&src2, Some(&mask), b, s).unwrap();
        assert_eq!(m.decode(tg, b, *t).unwrap(), &want[1][..], "variant {k}: padding leaked into the output");
        src2[s] = if src2[s] == 5 { 6 } else { 5 };
        m.encode(&src2, Some(&mask), b, s).unwrap();
        let changed = m.decode(tg, b, *t).unwrap().to_vec();
        let row = t * V;
        assert_ne!(changed[row..2 * row], want[1][row..2 * row], "variant {k}: the source does not reach the decoder");
        assert_eq!(changed[..row], want[1][..row], "variant {k}: rows are not independent");
    }
}

#[test]
fn encode_without_mask_equals_forward_without_mask() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let mut m = model(base(), 2, 1);
    let (b, s, t) = (2, 6, 4);
    let src = tokens(&mut rng, b * s);
    let tgt = tokens(&mut rng, b * t);
    m.forward_seq2seq(&src, None, &tgt, None, b, s, t, false, 0).unwrap();
    let want = m.logits().to_vec();
    m.encode(&src, None, b, s).unwrap();
    assert_eq!(m.decode(&tgt, b, t).unwrap(), &want[..]);
}

#[test]
fn reorder_encoded_repeats_and_drops_rows() {
    for (k, cfg) in variants().into_iter().enumerate() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(100 + k as u64);
        let mut m = model(cfg, 6, 20 + k as u64);
        // 17 positions per sentence: the encoder batches compared bit for bit below (2, 3 and
        // 6 sentences) all exceed 32 positions, so all take the packed GEMM (up to 32 rows take
        // the few-row product, which sums in another order).
        let s = 17;
        let (src, mask) = padded_source(&mut rng, &[9, 2, 4], s);
        let rows = [2usize, 0, 0, 1, 2, 2];
        let gathered = |x: &[u32]| rows.iter().flat_map(|&r| x[r * s..(r + 1) * s].to_vec()).collect::<Vec<_>>();
        let g_src = gathered(&src);
        let g_mask: Vec<bool> = rows.iter().flat_map(|&r| mask[r * s..(r + 1) * s].to_vec()).collect();
        let t = 5;
        let tgt = tokens(&mut rng, rows.len() * t);
        let want = full_logits(&mut m, &g_src, &g_mask, &tgt, rows.len(), s, t);
        m.encode(&src, Some(&mask), 3, s).unwrap();
        m.reorder_encoded(&rows).unwrap();
        assert_eq!(m.decode(&tgt, rows.len(), t).unwrap(), &want[..], "variant {k}: gathered rows");
        // A second reorder composes with the first: keep rows 3 and 1 (sentences 1 and 0).
        m.reorder_encoded(&[3, 1]).unwrap();
        let got = m.decode(&tgt[..2 * t], 2, t).unwrap().to_vec();
        let pick = |x: &[u32]| [&x[s..2 * s], &x[..s]].concat();
        let mask2 = [&mask[s..2 * s], &mask[..s]].concat();
        let want2 = full_logits(&mut m, &pick(&src), &mask2, &tgt[..2 * t], 2, s, t);
        assert_eq!(got, want2, "variant {k}: composed reorder");
    }
}

#[test]
fn decode_misuse_is_an_error() {
    let mut m = model(base(), 3, 2);
    let (src, mask) = padded_source(&mut Xoshiro256PlusPlus::seed_from_u64(1), &[3, 2], 3);
    let err = m.decode(&[1, 1], 2, 1).unwrap_err().to_string();
    assert!(err.contains("encode() first"), "{err}");
    m.encode(&src, Some(&mask), 2, 3).unwrap();
    let err = m.decode(&[1, 1, 1], 3, 1).unwrap_err().to_string();
    assert!(err.contains("2 rows are encoded"), "{err}");
    let err = m.decode(&[1, 1], 2, 21).unwrap_err().to_string();
    assert!(err.contains("block_size"), "{err}");
    let err = m.decode(&[1, 99], 2, 1).unwrap_err().to_string();
    assert!(err.contains("out of range"), "{err}");
    let err = m.reorder_encoded(&[0, 2]).unwrap_err().to_string();
    assert!(err.contains("row 2 out of range"), "{err}");
    assert!(m.reorder_encoded(&[]).is_err());
    assert!(m.reorder_encoded(&[0, 0, 0, 0]).is_err(), "more rows than max_batch");
    // A failed encode leaves nothing to decode.
    assert!(m.encode(&src, Some(&mask[..5]), 2, 3).is_err());
    assert!(m.decode(&[1, 1], 2, 1).is_err());
    m.encode(&src, Some(&mask), 2, 3).unwrap();
    // A full forward pass replaces the encoder output: decode must not silently reuse it.
    m.forward_seq2seq(&src, Some(&mask), &[1, 1], None, 2, 3, 1, false, 0).unwrap();
    assert!(m.decode(&[1, 1], 2, 1).is_err());
    assert!(m.backward().is_err(), "no targets: nothing to differentiate");
    let mut lm = Transformer::new(ModelConfig { arch: Arch::Decoder, ..base() }, 1).unwrap();
    assert!(lm.encode(&[1], None, 1, 1).unwrap_err().to_string().contains("encoder_decoder"));
}
