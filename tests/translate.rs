//! Greedy decoding and beam search (`infer::translate`) against independent computations with
//! the full `forward_seq2seq` pass: a hand-rolled greedy loop, teacher-forced log-probabilities
//! of the outputs, and exhaustive search over every possible output on a tiny vocabulary.

use lmlab::data::bpe::{BOS, EOS, PAD};
use lmlab::infer::translate::{
    length_normaliser, max_target_len, penalised_score, translate_batch, translate_batch_hyps, DecodeOptions,
    LengthNorm,
};
use lmlab::model::transformer::{ActivationKind, Arch, ModelConfig, NormPosition, Position, Transformer};
use lmlab::model::ParamKind;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn config(v: usize, block: usize) -> ModelConfig {
    ModelConfig {
        arch: Arch::EncoderDecoder,
        vocab_size: v,
        block_size: block,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        ..ModelConfig::default()
    }
}

/// The original Transformer's choices, to run the search over a second kind of model.
fn vaswani(v: usize, block: usize) -> ModelConfig {
    ModelConfig {
        norm_position: NormPosition::Post,
        final_norm: false,
        position: Position::Sinusoidal,
        scale_embeddings: true,
        activation: ActivationKind::Relu,
        dropout: 0.1,
        ..config(v, block)
    }
}

/// A random model whose matrices are scaled up by `scale`, so next-token distributions are
/// peaked enough for greedy and beam search to disagree.
fn model(cfg: ModelConfig, max_batch: usize, seed: u64, scale: f32) -> Transformer {
    let mut m = Transformer::new(cfg, max_batch).unwrap();
    m.init(seed);
    let layout = m.layout.clone();
    for t in layout.tensors.iter().filter(|t| matches!(t.kind, ParamKind::Matrix | ParamKind::Embedding)) {
        m.params[t.range()].iter_mut().for_each(|p| *p *= scale);
    }
    m
}

fn sentences(rng: &mut impl Rng, v: usize, lens: &[usize]) -> Vec<Vec<u32>> {
    lens.iter().map(|&n| (0..n).map(|_| rng.gen_range(3..v as u32)).collect()).collect()
}

/// Source batch of one sentence, as the training pipeline builds it.
fn one_source(src: &[u32]) -> (Vec<u32>, Vec<bool>, usize) {
    let s = src.len().max(1);
    let mut x = vec![PAD; s];
    x[..src.len()].copy_from_slice(src);
    (x, (0..s).map(|j| j < src.len()).collect(), s)
}

fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let lse = max + logits.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    logits.iter().map(|&x| x as f64 - lse).collect()
}

/// log p(hyp, EOS | src) of each hypothesis, by teacher forcing all of them in one batch.
fn log_probs(m: &mut Transformer, src: &[u32], hyps: &[Vec<u32>]) -> Vec<f64> {
    let v = m.config.vocab_size;
    let (x, mask, s) = one_source(src);
    let b = hyps.len();
    let t = hyps.iter().map(Vec::len).max().unwrap() + 1;
    let src_b: Vec<u32> = (0..b).flat_map(|_| x.clone()).collect();
    let mask_b: Vec<bool> = (0..b).flat_map(|_| mask.clone()).collect();
    let mut tgt_in = vec![PAD; b * t];
    for (r, h) in hyps.iter().enumerate() {
        tgt_in[r * t] = BOS;
        tgt_in[r * t + 1..r * t + 1 + h.len()].copy_from_slice(h);
    }
    m.forward_seq2seq(&src_b, Some(&mask_b), &tgt_in, None, b, s, t, false, 0).unwrap();
    let logits = m.logits().to_vec();
    hyps.iter()
        .enumerate()
        .map(|(r, h)| {
            let next = h.iter().copied().chain([EOS]);
            next.enumerate()
                .map(|(j, tok)| log_softmax(&logits[(r * t + j) * v..(r * t + j + 1) * v])[tok as usize])
                .sum()
        })
        .collect()
}

/// Greedy decoding written out with full forward passes: the most likely token other than PAD
/// and BOS (the first on ties), until EOS or `max_len` tokens.
fn hand_greedy(m: &mut Transformer, src: &[u32], max_len: usize) -> Vec<u32> {
    let v = m.config.vocab_size;
    let (x, mask, s) = one_source(src);
    let mut out = Vec::new();
    while out.len() < max_len {
        let tgt_in: Vec<u32> = [BOS].into_iter().chain(out.iter().copied()).collect();
        let t = tgt_in.len();
        m.forward_seq2seq(&x, Some(&mask), &tgt_in, None, 1, s, t, false, 0).unwrap();
        let last = &m.logits()[(t - 1) * v..t * v];
        let mut best = None;
        for (tok, &l) in last.iter().enumerate() {
            if tok as u32 == PAD || tok as u32 == BOS {
                continue;
            }
            if best.is_none_or(|(_, bl)| l > bl) {
                best = Some((tok as u32, l));
            }
        }
        let tok = best.unwrap().0;
        if tok == EOS {
            break;
        }
        out.push(tok);
    }
    out
}

fn opts(beam: usize, max_len: usize, length_penalty: f32) -> DecodeOptions {
    DecodeOptions { beam, max_len, length_penalty, ..Default::default() }
}

#[test]
fn greedy_equals_a_hand_rolled_loop() {
    let (v, block) = (13, 16);
    let (mut stopped_by_eos, mut hit_max_len) = (0, 0);
    for (k, cfg) in [config(v, block), vaswani(v, block)].into_iter().enumerate() {
        for seed in 0..4u64 {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let srcs = sentences(&mut rng, v, &[5, 0, 9, 1, 16, 3, 7]);
            let mut m = model(cfg.clone(), 8, 100 * k as u64 + seed, 6.0);
            let each: Vec<Vec<u32>> = srcs
                .iter()
                .map(|x| translate_batch(&mut m, std::slice::from_ref(x), &opts(1, 0, 0.0)).unwrap()[0].clone())
                .collect();
            for (x, got) in srcs.iter().zip(&each) {
                let max_len = max_target_len(&opts(1, 0, 0.0), x.len(), block);
                let want = hand_greedy(&mut m, x, max_len);
                assert_eq!(got, &want, "variant {k} seed {seed} source {x:?}");
                if got.len() < max_len {
                    stopped_by_eos += 1;
                } else {
                    hit_max_len += 1;
                }
            }
            // Batched (with padding, rows dropped as sentences finish) and split into groups
            // by a small batch capacity: the same translations.
            let batched = translate_batch(&mut m, &srcs, &opts(1, 0, 0.0)).unwrap();
            assert_eq!(batched, each, "variant {k} seed {seed}: batched greedy differs");
            let mut small = model(cfg.clone(), 3, 100 * k as u64 + seed, 6.0);
            assert_eq!(translate_batch(&mut small, &srcs, &opts(1, 0, 0.0)).unwrap(), each, "groups of 3");
            // The length penalty does not change greedy decoding.
            assert_eq!(translate_batch(&mut m, &srcs, &opts(1, 0, 1.0)).unwrap(), each, "greedy with a penalty");
        }
    }
    // Both ways of stopping were exercised.
    assert!(stopped_by_eos > 0 && hit_max_len > 0, "eos {stopped_by_eos}, max_len {hit_max_len}");
}

#[test]
fn beam_search_scores_at_least_greedy() {
    let (v, block) = (13, 12);
    let mut better = 0;
    for (k, cfg) in [config(v, block), vaswani(v, block)].into_iter().enumerate() {
        for seed in 0..5u64 {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(50 + seed);
            let srcs = sentences(&mut rng, v, &[4, 0, 7, 2, 11]);
            let mut m = model(cfg.clone(), 16, 200 + 10 * k as u64 + seed, 4.0);
            let greedy = translate_batch_hyps(&mut m, &srcs, &opts(1, 0, 0.0)).unwrap();
            for beam in [2, 4] {
                let hyps = translate_batch_hyps(&mut m, &srcs, &opts(beam, 0, 0.0)).unwrap();
                for ((x, g), h) in srcs.iter().zip(&greedy).zip(&hyps) {
                    let max_len = max_target_len(&opts(beam, 0, 0.0), x.len(), block);
                    assert!(h.tokens.len() <= max_len && !h.tokens.contains(&EOS));
                    assert!(!h.tokens.iter().any(|&t| t == PAD || t == BOS), "PAD/BOS emitted: {:?}", h.tokens);
                    let lp = log_probs(&mut m, x, &[g.tokens.clone(), h.tokens.clone()]);
                    // Reported log-probabilities are the teacher-forced ones.
                    assert!((lp[0] - g.log_prob).abs() < 1e-4, "greedy log_prob {} vs {}", g.log_prob, lp[0]);
                    assert!((lp[1] - h.log_prob).abs() < 1e-4, "beam log_prob {} vs {}", h.log_prob, lp[1]);
                    assert_eq!(h.score, h.log_prob, "no length penalty");
                    assert!(
                        lp[1] >= lp[0] - 1e-6,
                        "variant {k} seed {seed} beam {beam}: beam {:?} ({}) below greedy {:?} ({})",
                        h.tokens,
                        lp[1],
                        g.tokens,
                        lp[0]
                    );
                    if lp[1] > lp[0] + 1e-3 {
                        better += 1;
                    }
                }
            }
        }
    }
    // Beam search does find better translations than greedy on some of these.
    assert!(better > 0, "beam search never beat greedy");
}

/// Every output of at most `max_len` tokens over the non-special tokens 3..V.
fn all_outputs(v: u32, max_len: usize) -> Vec<Vec<u32>> {
    let mut all = vec![vec![]];
    let mut frontier = vec![vec![]];
    for _ in 0..max_len {
        frontier = frontier.iter().flat_map(|p: &Vec<u32>| (3..v).map(move |t| [&p[..], &[t]].concat())).collect();
        all.extend(frontier.iter().cloned());
    }
    all
}

/// With a beam wider than the number of hypotheses at any step, beam search is exhaustive:
/// it must return the best of all outputs under each length penalty.
#[test]
fn wide_beam_equals_exhaustive_search_and_the_penalty_changes_the_winner() {
    let (v, max_len) = (8usize, 3usize); // 5 ordinary tokens: 1 + 5 + 25 + 125 = 156 outputs
    let outputs = all_outputs(v as u32, max_len);
    assert_eq!(outputs.len(), 156);
    let beam = 160; // ≥ 25 live · 6 candidates at the widest step, so nothing is ever pruned
    let mut changed = 0;
    for (k, cfg) in [config(v, 8), vaswani(v, 8)].into_iter().enumerate() {
        for seed in 0..3u64 {
            let mut m = model(cfg.clone(), beam, 300 + 10 * k as u64 + seed, 3.0);
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let srcs = sentences(&mut rng, v, &[3, 6, 1]);
            let mut winners = Vec::new();
            for alpha in [0.0f32, 1.0, 3.0] {
                let hyps = translate_batch_hyps(&mut m, &srcs, &opts(beam, max_len, alpha)).unwrap();
                let mut per_sentence = Vec::new();
                for (x, h) in srcs.iter().zip(&hyps) {
                    let lp = log_probs(&mut m, x, &outputs);
                    let scored: Vec<f64> =
                        outputs.iter().zip(&lp).map(|(o, &l)| penalised_score(l, o.len() + 1, alpha)).collect();
                    let best = (0..outputs.len()).fold(0, |b, i| if scored[i] > scored[b] { i } else { b });
                    assert_eq!(
                        h.tokens, outputs[best],
                        "variant {k} seed {seed} alpha {alpha} source {x:?}: beam {:?} ({}) vs exhaustive ({})",
                        h.tokens, h.score, scored[best]
                    );
                    assert!((h.score - scored[best]).abs() < 1e-4);
                    per_sentence.push(h.tokens.clone());
                }
                winners.push(per_sentence);
            }
            changed += (0..srcs.len()).filter(|&i| winners[0][i] != winners[2][i]).count();
            // A stronger penalty never makes the winner shorter.
            // (Minimising log(-log p) - α·log((5 + len) / 6) over fixed hypotheses: as α grows the
            // minimiser moves to longer ones.)
            for ((a, b), c) in winners[0].iter().zip(&winners[1]).zip(&winners[2]) {
                assert!(a.len() <= b.len() && b.len() <= c.len(), "{a:?} {b:?} {c:?}");
            }
        }
    }
    assert!(changed > 0, "the length penalty never changed the winner");
}

#[test]
fn length_normaliser_is_gnmt() {
    assert_eq!(length_normaliser(7, 0.0), 1.0);
    assert_eq!(length_normaliser(1, 0.6), 1.0);
    assert!((length_normaliser(7, 1.0) - 2.0).abs() < 1e-12);
    assert!((length_normaliser(13, 0.5) - 3f64.sqrt()).abs() < 1e-12);
    assert!((penalised_score(-4.0, 7, 1.0) + 2.0).abs() < 1e-12);
    // Longer hypotheses are divided by more: with α > 0 a longer one can win.
    assert!(penalised_score(-6.0, 11, 1.0) > penalised_score(-4.0, 1, 1.0));
    assert!(penalised_score(-6.0, 11, 0.0) < penalised_score(-4.0, 1, 0.0));
    // Automatic and explicit maximum lengths, capped by the block size.
    let auto = DecodeOptions::default();
    assert_eq!(max_target_len(&auto, 0, 64), 10);
    assert_eq!(max_target_len(&auto, 7, 64), 20);
    assert_eq!(max_target_len(&auto, 40, 64), 63);
    assert_eq!(max_target_len(&opts(1, 5, 0.0), 40, 64), 5);
    assert_eq!(max_target_len(&opts(1, 100, 0.0), 4, 64), 63);
}

/// A model whose next-token logits are the same `logits` at every position, whatever the input:
/// the decoder's final LayerNorm outputs its bias e₀ and the (untied) output layer's column 0
/// holds the logits.
fn constant_model(logits: &[f32], block: usize, max_batch: usize) -> Transformer {
    let cfg = ModelConfig { tie_embeddings: false, ..config(logits.len(), block) };
    let mut m = model(cfg, max_batch, 1, 1.0);
    let c = m.config.n_embd;
    let find = |m: &Transformer, name: &str| m.layout.tensors.iter().find(|t| t.name == name).unwrap().range();
    let (w, b, head) = (find(&m, "decoder.ln_f.weight"), find(&m, "decoder.ln_f.bias"), find(&m, "lm_head.weight"));
    m.params[w].fill(0.0);
    let b0 = b.start;
    m.params[b].fill(0.0);
    m.params[b0] = 1.0;
    let h0 = head.start;
    m.params[head].fill(0.0);
    for (tok, &l) in logits.iter().enumerate() {
        m.params[h0 + tok * c] = l;
    }
    m
}

#[test]
fn max_len_eos_and_excluded_tokens() {
    let block = 16;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
    let srcs = sentences(&mut rng, 8, &[1, 2, 5, 0, 16]);
    // PAD and BOS are the most likely tokens but never emitted; then token 5, then EOS.
    let mut m = constant_model(&[3.0, 3.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0], block, 8);
    let greedy = translate_batch_hyps(&mut m, &srcs, &opts(1, 0, 0.0)).unwrap();
    for (x, h) in srcs.iter().zip(&greedy) {
        // max_len = ⌊1.5·len⌋ + 10 capped at block_size - 1 = 15: 11, 13, 15 (17 capped), 10, 15.
        let want = (x.len() * 3 / 2 + 10).min(block - 1);
        assert_eq!(h.tokens, vec![5; want], "source of {} tokens", x.len());
        // The hypothesis ends with a forced EOS, which its log-probability includes.
        let lp = log_softmax(&[3.0, 3.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0]);
        assert!((h.log_prob - (want as f64 * lp[5] + lp[2])).abs() < 1e-9);
    }
    let explicit = translate_batch(&mut m, &srcs, &opts(1, 3, 0.0)).unwrap();
    assert!(explicit.iter().all(|t| t == &[5, 5, 5]));
    // Beam search: every token costs log-probability, so the empty output (EOS first, the
    // second-best candidate) beats any run of 5s when there is no length penalty ...
    let beam = translate_batch_hyps(&mut m, &srcs, &opts(2, 0, 0.0)).unwrap();
    assert!(beam.iter().all(|h| h.tokens.is_empty()), "{:?}", beam);
    // ... and with a strong one, longer outputs win. Here token 5 has almost all the mass and
    // EOS is a distant second: log p ≈ -5.02 for the empty output, against (-5.02 - 0.02·L) /
    // ((6 + L) / 6)² for L fives. Beam 4 finishes [5]^L EOS for L = 0..3, so [5, 5, 5] wins.
    let mut m = constant_model(&[0.0, 0.0, 0.0, -5.0, -5.0, 5.0, -5.0, -5.0], block, 8);
    let plain = translate_batch(&mut m, &srcs, &opts(4, 6, 0.0)).unwrap();
    assert!(plain.iter().all(|t| t.is_empty()), "{plain:?}");
    let long = translate_batch(&mut m, &srcs, &opts(4, 6, 2.0)).unwrap();
    assert!(long.iter().all(|t| t == &[5, 5, 5]), "{long:?}");

    // EOS most likely: every translation is empty, greedy and beam alike.
    let mut m = constant_model(&[0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0], block, 8);
    for beam in [1, 3] {
        let out = translate_batch(&mut m, &srcs, &opts(beam, 0, 0.0)).unwrap();
        assert_eq!(out, vec![Vec::<u32>::new(); srcs.len()]);
    }
}

#[test]
fn translate_errors() {
    let mut m = model(config(10, 8), 4, 1, 1.0);
    let ok = vec![vec![3u32, 4]];
    let err = |m: &mut Transformer, srcs: &[Vec<u32>], o: DecodeOptions| {
        translate_batch(m, srcs, &o).unwrap_err().to_string()
    };
    assert!(err(&mut m, &ok, opts(0, 0, 0.0)).contains("at least 1"));
    assert!(err(&mut m, &ok, opts(5, 0, 0.0)).contains("batch capacity"));
    assert!(err(&mut m, &ok, opts(2, 0, -1.0)).contains("length_penalty"));
    assert!(err(&mut m, &ok, opts(2, 0, f32::NAN)).contains("length_penalty"));
    assert!(err(&mut m, &[vec![3; 9]], opts(1, 0, 0.0)).contains("block_size"));
    assert!(err(&mut m, &[vec![3], vec![10]], opts(1, 0, 0.0)).contains("source 1: token id 10"));
    assert!(translate_batch(&mut m, &[], &opts(2, 0, 0.0)).unwrap().is_empty());
    let mut lm = Transformer::new(ModelConfig { arch: Arch::Decoder, ..config(10, 8) }, 1).unwrap();
    assert!(err(&mut lm, &ok, opts(1, 0, 0.0)).contains("encoder_decoder"));
}

/// Whether `o` repeats an n-gram (`n` tokens); never for n = 0.
fn repeats_ngram(o: &[u32], n: usize) -> bool {
    n > 0 && o.windows(n).enumerate().any(|(i, g)| o.windows(n).skip(i + 1).any(|h| h == g))
}

/// Hugging Face's length penalty (log p / len^α, len counting EOS) with a minimum length and
/// no repeated n-grams: a wide beam must return the best of all outputs that keep the
/// constraints (beam search is exhaustive there, as above).
#[test]
fn hf_penalty_min_length_and_no_repeat_equal_exhaustive_search() {
    let (v, max_len) = (8usize, 3usize);
    let outputs = all_outputs(v as u32, max_len);
    let beam = 160;
    let mut m = model(config(v, 8), beam, 77, 3.0);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let srcs = sentences(&mut rng, v, &[2, 5, 4]);
    let lps: Vec<Vec<f64>> = srcs.iter().map(|x| log_probs(&mut m, x, &outputs)).collect();
    let mut constrained = 0;
    for (alpha, min_len, ngram) in [(0.0f32, 0, 0), (1.0, 0, 0), (2.0, 0, 0), (0.0, 2, 0), (1.0, 0, 1), (0.5, 1, 2)] {
        let o = DecodeOptions {
            length_norm: LengthNorm::Hf,
            min_len,
            no_repeat_ngram_size: ngram,
            ..opts(beam, max_len, alpha)
        };
        let hyps = translate_batch_hyps(&mut m, &srcs, &o).unwrap();
        for ((x, h), lp) in srcs.iter().zip(&hyps).zip(&lps) {
            let allowed = |o: &Vec<u32>| o.len() >= min_len && !repeats_ngram(o, ngram);
            let score = |i: usize| lp[i] / ((outputs[i].len() + 1) as f64).powf(alpha as f64);
            let best = (0..outputs.len()).filter(|&i| allowed(&outputs[i])).fold(None, |b: Option<usize>, i| match b {
                Some(b) if score(i) <= score(b) => Some(b),
                _ => Some(i),
            });
            let best = best.unwrap();
            assert_eq!(h.tokens, outputs[best], "alpha {alpha} min_len {min_len} ngram {ngram} source {x:?}");
            assert!((h.score - score(best)).abs() < 1e-4, "{} vs {}", h.score, score(best));
            let unconstrained = (0..outputs.len()).fold(0, |b, i| if score(i) > score(b) { i } else { b });
            constrained += usize::from(best != unconstrained);
        }
    }
    assert!(constrained > 0, "the constraints never changed the winner");
}

/// Known outcomes on a model whose next-token distribution never changes: token 5, then 4, then
/// the rest, with EOS above them all (so unconstrained decoding stops at once).
#[test]
fn min_length_and_no_repeat_on_a_constant_model() {
    let block = 16;
    let mut m = constant_model(&[0.0, 0.0, 3.0, 0.0, 1.0, 2.0, 0.0, 0.0], block, 8);
    let srcs = vec![vec![4u32, 5], vec![6]];
    let run = |m: &mut Transformer, beam: usize, min_len: usize, ngram: usize| {
        let o = DecodeOptions { min_len, no_repeat_ngram_size: ngram, ..opts(beam, 10, 0.0) };
        translate_batch(m, &srcs, &o).unwrap()
    };
    for beam in [1, 3] {
        assert!(run(&mut m, beam, 0, 0).iter().all(|t| t.is_empty()));
        // EOS is banned for 3 steps, then wins.
        assert!(run(&mut m, beam, 3, 0).iter().all(|t| t == &[5, 5, 5]));
        // Every token at most once: 5, 4, then the lowest id of the equal rest (UNK = 3).
        assert!(run(&mut m, beam, 3, 1).iter().all(|t| t == &[5, 4, 3]));
    }
    // Bigrams: 5 5, then 5 after 5 is banned, so 4; 5 after 4 is new; then 5 and 4 after 5 are
    // both banned, and EOS (allowed from 4 tokens) is next best.
    assert!(run(&mut m, 1, 4, 2).iter().all(|t| t == &[5, 5, 4, 5]), "{:?}", run(&mut m, 1, 4, 2));
    // The HF length penalty: token 5 has almost all the mass and EOS ≈ -5.02; beam 4 finishes
    // [5]^L EOS for L = 0..3, scored (-5.02 - 0.02·L) / (L + 1)^α: α = 1 picks L = 3, α = 0 L = 0.
    let mut m = constant_model(&[0.0, 0.0, 0.0, -5.0, -5.0, 5.0, -5.0, -5.0], block, 8);
    let hf = |alpha| DecodeOptions { length_norm: LengthNorm::Hf, ..opts(4, 6, alpha) };
    assert!(translate_batch(&mut m, &srcs, &hf(0.0)).unwrap().iter().all(|t| t.is_empty()));
    assert!(translate_batch(&mut m, &srcs, &hf(1.0)).unwrap().iter().all(|t| t == &[5, 5, 5]));
    // With a minimum of 2 tokens the finished ones are L = 2..5, and α = 1 takes the longest.
    let o = DecodeOptions { min_len: 2, ..hf(1.0) };
    assert!(translate_batch(&mut m, &srcs, &o).unwrap().iter().all(|t| t == &[5; 5]));
}
