//! The Transformer's KV cache ([`Transformer::forward_cached`]) gives the logits of the full
//! forward pass at every step, for every decoder variant (positions, scores, GQA/MQA, norms,
//! activations, precision), for prompts processed at once or token by token, for a batch of
//! prompts of different lengths (padding), after reordering rows (beam search), and for the
//! decoder of an encoder-decoder.

use lmlab::kernels::precision::Precision;
use lmlab::model::transformer::{
    ActivationKind, Arch, AttentionKind, LogitRows, ModelConfig, NormKind, NormPosition, Position, ScoreKind,
    Transformer,
};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const V: usize = 11;
const BLOCK: usize = 14;

fn base() -> ModelConfig {
    ModelConfig {
        vocab_size: V,
        block_size: BLOCK,
        n_layer: 2,
        n_head: 4,
        n_embd: 16,
        shaw_k: 3,
        t5_buckets: 6,
        t5_max_distance: 10,
        ..ModelConfig::default()
    }
}

/// Every decoder variant the model supports, named.
fn variants() -> Vec<(&'static str, ModelConfig)> {
    let b = base;
    let mut out = vec![("default", b())];
    for (name, position) in [
        ("none", Position::None),
        ("sinusoidal", Position::Sinusoidal),
        ("shaw", Position::Shaw),
        ("t5", Position::T5),
        ("rope", Position::Rope),
        ("alibi", Position::Alibi),
    ] {
        out.push((name, ModelConfig { position, ..b() }));
    }
    out.extend([
        ("gqa", ModelConfig { n_kv_head: Some(2), ..b() }),
        ("mqa+rope", ModelConfig { n_kv_head: Some(1), position: Position::Rope, ..b() }),
        ("gqa+alibi", ModelConfig { n_kv_head: Some(2), position: Position::Alibi, ..b() }),
        ("unscaled", ModelConfig { score: ScoreKind::Unscaled, ..b() }),
        ("cosine", ModelConfig { score: ScoreKind::Cosine, ..b() }),
        ("additive", ModelConfig { score: ScoreKind::Additive, ..b() }),
        ("flash", ModelConfig { attention: AttentionKind::Flash, ..b() }),
        (
            "llama",
            ModelConfig {
                position: Position::Rope,
                norm: NormKind::Rmsnorm,
                activation: ActivationKind::Swiglu,
                n_kv_head: Some(2),
                bias: false,
                tie_embeddings: false,
                ..b()
            },
        ),
        ("post-norm", ModelConfig { norm_position: NormPosition::Post, final_norm: false, ..b() }),
        ("batchnorm", ModelConfig { norm: NormKind::Batchnorm, ..b() }),
        ("no-norm", ModelConfig { norm: NormKind::None, ..b() }),
        ("no-residual", ModelConfig { residual: false, ..b() }),
        ("embedding-norm", ModelConfig { embedding_norm: true, norm_eps: 1e-12, ..b() }),
        ("relu+scaled-emb", ModelConfig { activation: ActivationKind::Relu, scale_embeddings: true, ..b() }),
    ]);
    out
}

fn model(cfg: ModelConfig, batch: usize, seed: u64) -> Transformer {
    let mut m = Transformer::new(cfg, batch).unwrap();
    m.init(seed);
    // Larger weights than GPT-2's init, so attention is far from uniform and positions matter.
    let layout = m.layout.clone();
    for t in &layout.tensors {
        if t.name.contains("weight") && !t.name.contains("ln") && !t.name.contains("running") {
            m.params[t.range()].iter_mut().for_each(|p| *p *= 8.0);
        }
    }
    m
}

fn seq(len: usize, seed: u64) -> Vec<u32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..len).map(|_| rng.gen_range(0..V as u32)).collect()
}

/// Full forward logits (T, V) of one sequence.
fn full_logits(m: &mut Transformer, s: &[u32]) -> Vec<f32> {
    m.forward_lm(s, None, 1, s.len(), false, 0).unwrap();
    m.logits().to_vec()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1.0f32, |a, x| a.max(x.abs()));
    let err = got.iter().zip(want).fold(0.0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(err <= tol * scale, "{what}: max |Δ| {err} > {tol} × {scale}");
}

#[test]
fn cached_logits_equal_full_forward_for_every_variant() {
    for (name, cfg) in variants() {
        let mut m = model(cfg, 1, 3);
        let s = seq(BLOCK, 7);
        let want = full_logits(&mut m, &s);
        // The logits must depend on the context, or the comparison proves little.
        assert!(want[..V].iter().zip(&want[(BLOCK - 1) * V..]).any(|(a, b)| (a - b).abs() > 1e-2), "{name}");
        let mut cache = m.kv_cache(1).unwrap();
        // Prompt of 5 at once (every position's logits), then one token at a time.
        let got = m.forward_cached(&s[..5], &[5], 5, &mut cache, LogitRows::All).unwrap().to_vec();
        assert_close(&got, &want[..5 * V], 1e-5, &format!("{name}: prefill"));
        for t in 5..BLOCK {
            let got = m.forward_cached(&s[t..t + 1], &[1], 1, &mut cache, LogitRows::Last).unwrap().to_vec();
            assert_close(&got, &want[t * V..(t + 1) * V], 1e-5, &format!("{name}: step {t}"));
        }
        assert_eq!(cache.lens(), &[BLOCK]);
        let err = m.forward_cached(&[1], &[1], 1, &mut cache, LogitRows::Last).unwrap_err().to_string();
        assert!(err.contains("exceed block_size"), "{name}: {err}");
    }
}

#[test]
fn cached_decoding_in_reduced_precision_matches_full_forward() {
    for p in [Precision::Bf16, Precision::F16] {
        let mut m = model(ModelConfig { position: Position::Rope, n_kv_head: Some(2), ..base() }, 1, 4);
        m.set_precision(p);
        let s = seq(9, 8);
        let want = full_logits(&mut m, &s);
        let mut cache = m.kv_cache(1).unwrap();
        let mut got = m.forward_cached(&s[..1], &[1], 1, &mut cache, LogitRows::Last).unwrap().to_vec();
        for t in 1..s.len() {
            got.extend_from_slice(m.forward_cached(&s[t..t + 1], &[1], 1, &mut cache, LogitRows::Last).unwrap());
        }
        // Rounding points are the same, but a product over 1 row may round differently from
        // one over T rows only through the f32 accumulation order.
        assert_close(&got, &want, 1e-3, &format!("{p:?}"));
    }
}

#[test]
fn padded_batch_of_different_prompts_equals_each_prompt_alone() {
    for (name, cfg) in variants() {
        let mut m = model(cfg, 3, 5);
        let rows: Vec<Vec<u32>> = (0..3).map(|r| seq(BLOCK - r, 10 + r as u64)).collect();
        let prompt_lens = [2usize, 6, 4];
        let wants: Vec<Vec<f32>> = rows.iter().map(|s| full_logits(&mut m, s)).collect();
        let mut cache = m.kv_cache(3).unwrap();
        // Prefill: right-padded (3, 6) batch, padding id 0.
        let t = *prompt_lens.iter().max().unwrap();
        let mut batch = vec![0u32; 3 * t];
        for (r, s) in rows.iter().enumerate() {
            batch[r * t..r * t + prompt_lens[r]].copy_from_slice(&s[..prompt_lens[r]]);
        }
        let all = m.forward_cached(&batch, &prompt_lens, t, &mut cache, LogitRows::All).unwrap().to_vec();
        for r in 0..3 {
            let n = prompt_lens[r];
            assert_close(
                &all[r * t * V..(r * t + n) * V],
                &wants[r][..n * V],
                1e-5,
                &format!("{name} row {r} prefill"),
            );
        }
        // Then one token per row while it has tokens left; a finished row waits (count 0).
        let mut pos = prompt_lens;
        loop {
            let counts: Vec<usize> = (0..3).map(|r| usize::from(pos[r] < rows[r].len())).collect();
            if counts.iter().all(|&c| c == 0) {
                break;
            }
            let step: Vec<u32> = (0..3).map(|r| if counts[r] == 1 { rows[r][pos[r]] } else { 0 }).collect();
            let got = m.forward_cached(&step, &counts, 1, &mut cache, LogitRows::Last).unwrap().to_vec();
            for r in (0..3).filter(|&r| counts[r] == 1) {
                let p = pos[r];
                assert_close(
                    &got[r * V..(r + 1) * V],
                    &wants[r][p * V..(p + 1) * V],
                    1e-5,
                    &format!("{name} row {r} pos {p}"),
                );
                pos[r] += 1;
            }
        }
        assert_eq!(cache.lens(), &[BLOCK, BLOCK - 1, BLOCK - 2], "{name}");
    }
}

#[test]
fn reordered_rows_continue_their_parents() {
    let cfg = ModelConfig { position: Position::Alibi, n_kv_head: Some(2), ..base() };
    let mut m = model(cfg, 4, 6);
    let a = seq(10, 20);
    let b = seq(10, 21);
    let mut cache = m.kv_cache(4).unwrap();
    cache.reset(2).unwrap();
    let mut batch = a[..4].to_vec();
    batch.extend_from_slice(&b[..4]);
    m.forward_cached(&batch, &[4, 4], 4, &mut cache, LogitRows::Last).unwrap();
    // New rows: b, a, b (one repeated, order swapped), then each continues differently.
    cache.reorder(&[1, 0, 1]).unwrap();
    assert_eq!(cache.rows(), 3);
    let next = [b[4], a[4], 3];
    let got = m.forward_cached(&next, &[1, 1, 1], 1, &mut cache, LogitRows::Last).unwrap().to_vec();
    let mut b3 = b[..4].to_vec();
    b3.push(3);
    for (r, s) in [&b[..5], &a[..5], &b3[..]].into_iter().enumerate() {
        let want = full_logits(&mut m, s);
        assert_close(&got[r * V..(r + 1) * V], &want[4 * V..5 * V], 1e-5, &format!("row {r}"));
    }
    assert!(cache.reorder(&[3]).is_err(), "row 3 does not exist");
    assert!(cache.reorder(&[0; 5]).is_err(), "more rows than the capacity");
}

#[test]
fn cached_seq2seq_decoding_equals_full_decode() {
    for position in [Position::Learned, Position::Rope, Position::T5, Position::Alibi] {
        let cfg = ModelConfig { arch: Arch::EncoderDecoder, position, n_kv_head: Some(2), ..base() };
        let mut m = model(cfg, 2, 9);
        let (src_a, src_b) = (seq(7, 30), seq(5, 31));
        let mut src = vec![0u32; 14];
        src[..7].copy_from_slice(&src_a);
        src[7..12].copy_from_slice(&src_b);
        let mask: Vec<bool> = (0..14).map(|i| i < 7 || (7..12).contains(&i)).collect();
        let tgt = [seq(6, 40), seq(6, 41)];
        m.encode(&src, Some(&mask), 2, 7).unwrap();
        let mut full = Vec::new();
        let mut both = tgt[0].clone();
        both.extend_from_slice(&tgt[1]);
        full.extend_from_slice(m.decode(&both, 2, 6).unwrap());
        let mut cache = m.kv_cache(2).unwrap();
        cache.reset(2).unwrap();
        for t in 0..6 {
            let step = [tgt[0][t], tgt[1][t]];
            let got = m.decode_cached(&step, &[1, 1], 1, &mut cache, LogitRows::Last).unwrap().to_vec();
            for r in 0..2 {
                let want = &full[(r * 6 + t) * V..(r * 6 + t + 1) * V];
                assert_close(&got[r * V..(r + 1) * V], want, 1e-5, &format!("{position:?} row {r} step {t}"));
            }
        }
        // A new encoding needs a reset cache.
        m.encode(&src[..7], None, 1, 7).unwrap();
        let err = m.decode_cached(&[1], &[1], 1, &mut cache, LogitRows::Last).unwrap_err().to_string();
        assert!(err.contains("rows"), "{err}");
    }
}

#[test]
fn bad_cached_calls_are_errors() {
    let mut m = model(base(), 2, 1);
    let mut cache = m.kv_cache(2).unwrap();
    let e = |r: anyhow::Result<&[f32]>| r.map(|_| ()).unwrap_err().to_string();
    assert!(e(m.forward_cached(&[1, 2], &[1], 2, &mut cache, LogitRows::Last)).contains("rows"));
    assert!(e(m.forward_cached(&[1, 2, 3, 4], &[3, 1], 2, &mut cache, LogitRows::Last)).contains("new tokens"));
    assert!(e(m.forward_cached(&[1, 99], &[1, 1], 1, &mut cache, LogitRows::Last)).contains("out of range"));
    assert!(m.kv_cache(3).is_err(), "more rows than the model's batch capacity");
    let mut other = model(ModelConfig { n_layer: 3, ..base() }, 2, 1).kv_cache(2).unwrap();
    assert!(e(m.forward_cached(&[1, 2], &[1, 1], 1, &mut other, LogitRows::Last)).contains("another model"));
    let enc = Transformer::new(ModelConfig { arch: Arch::Encoder, ..base() }, 1).unwrap();
    assert!(enc.kv_cache(1).is_err());
}

#[test]
fn batch_generation_equals_one_prompt_at_a_time() {
    use lmlab::infer::sample::{generate, generate_batch, SampleOptions};
    for (name, cfg) in
        [("rope+gqa", ModelConfig { position: Position::Rope, n_kv_head: Some(2), ..base() }), ("learned", base())]
    {
        // Capacity 2 for 5 prompts: three groups, prompts of different lengths, and generation
        // runs past block_size (the window restarts).
        let mut m = model(cfg, 2, 12);
        let prompts: Vec<Vec<u32>> =
            [3usize, 1, 7, 14, 5].iter().enumerate().map(|(i, &n)| seq(n, 50 + i as u64)).collect();
        for temperature in [0.0f32, 1.0] {
            let opts = SampleOptions { max_new_tokens: 20, temperature, top_k: Some(6), ..SampleOptions::default() };
            let mut rngs: Vec<Xoshiro256PlusPlus> = (0..5).map(Xoshiro256PlusPlus::seed_from_u64).collect();
            let mut streamed = vec![Vec::new(); 5];
            let got = generate_batch(&mut m, &prompts, &opts, &mut rngs, |r, id| streamed[r].push(id)).unwrap();
            assert_eq!(got, streamed, "{name}: streamed tokens");
            for (i, p) in prompts.iter().enumerate() {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(i as u64);
                let want = generate(&mut m, p, &opts, &mut rng, |_| {}).unwrap();
                assert_eq!(got[i], want, "{name} T={temperature}: prompt {i}");
            }
        }
        // A row that stops early leaves the others running.
        let opts = SampleOptions { max_new_tokens: 6, temperature: 0.0, ..SampleOptions::default() };
        let mut rngs: Vec<Xoshiro256PlusPlus> = (0..2).map(Xoshiro256PlusPlus::seed_from_u64).collect();
        let got = generate_batch(&mut m, &prompts[..2], &opts, &mut rngs, |r, _| {
            if r == 0 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!((got[0].len(), got[1].len()), (1, 6), "{name}");
    }
}

#[test]
fn inference_models_equal_training_models_with_less_memory() {
    let seq2seq = ModelConfig { arch: Arch::EncoderDecoder, position: Position::Rope, ..base() };
    let encoder =
        ModelConfig { arch: Arch::Encoder, norm_position: NormPosition::Post, embedding_norm: true, ..base() };
    let mut configs: Vec<(&str, ModelConfig)> = variants();
    configs.push(("seq2seq", seq2seq));
    configs.push(("encoder", encoder));
    configs.push(("dropout", ModelConfig { dropout: 0.1, ..base() }));
    for (name, cfg) in configs {
        let mut train = model(cfg.clone(), 2, 21);
        let mut inf = Transformer::new_inference(cfg.clone(), 2).unwrap();
        inf.params.copy_from_slice(&train.params);
        assert!(inf.is_inference() && !train.is_inference());
        assert!(
            inf.buffer_bytes() < train.buffer_bytes(),
            "{name}: {} vs {}",
            inf.buffer_bytes(),
            train.buffer_bytes()
        );
        let s: Vec<u32> = [seq(BLOCK, 60), seq(BLOCK, 61)].concat();
        let mask: Vec<bool> = (0..2 * BLOCK).map(|i| i < BLOCK + 9).collect();
        let (a, b) = match cfg.arch {
            Arch::Decoder => {
                train.forward_lm(&s, None, 2, BLOCK, false, 0).unwrap();
                inf.forward_lm(&s, None, 2, BLOCK, false, 0).unwrap();
                assert!(inf.forward_lm(&s, None, 2, BLOCK, true, 0).unwrap_err().to_string().contains("inference"));
                (train.logits().to_vec(), inf.logits().to_vec())
            }
            Arch::Encoder => {
                train.forward_classify(&s, Some(&mask), None, 2, BLOCK, false, 0).unwrap();
                inf.forward_classify(&s, Some(&mask), None, 2, BLOCK, false, 0).unwrap();
                (train.hidden().to_vec(), inf.hidden().to_vec())
            }
            Arch::EncoderDecoder => {
                let tgt = seq(2 * 6, 62);
                train.encode(&s, Some(&mask), 2, BLOCK).unwrap();
                inf.encode(&s, Some(&mask), 2, BLOCK).unwrap();
                (train.decode(&tgt, 2, 6).unwrap().to_vec(), inf.decode(&tgt, 2, 6).unwrap().to_vec())
            }
            Arch::Lstm | Arch::Gru | Arch::Cnn => unreachable!("not a Transformer"),
        };
        assert_eq!(a, b, "{name}: the same kernels on the same inputs give the same bits");
        assert!(inf.activations().is_empty() && inf.blocks().is_empty(), "{name}: no per-layer probes");
        assert!(inf.backward().is_err(), "{name}: no backward pass");
        if cfg.arch == Arch::Decoder {
            let mut cache = inf.kv_cache(1).unwrap();
            let got = inf.forward_cached(&s[..BLOCK], &[BLOCK], BLOCK, &mut cache, LogitRows::All).unwrap().to_vec();
            assert_close(&got, &a[..BLOCK * V], 1e-5, &format!("{name}: cached on an inference model"));
        }
    }
}

/// `generate` (on the KV cache) gives the tokens of the uncached definition, greedy: a full
/// forward pass over the last block_size tokens for every new token, past block_size too.
#[test]
fn generate_on_any_decoder_matches_uncached_definition() {
    use lmlab::infer::sample::{generate, SampleOptions};
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
