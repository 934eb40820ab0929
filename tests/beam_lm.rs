//! Beam search for decoder-only LMs (`infer::beam::beam_search`, on the KV cache) against
//! independent computations with the full forward pass: greedy decoding, teacher-forced
//! log-probabilities, and exhaustive search over every output on a tiny vocabulary.

use lmlab::infer::beam::{beam_search, penalised_score, BeamOptions};
use lmlab::infer::sample::{generate, SampleOptions};
use lmlab::model::transformer::{ModelConfig, Position, Transformer};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

const V: usize = 4;

fn model(position: Position, max_batch: usize, seed: u64) -> Transformer {
    let cfg = ModelConfig {
        vocab_size: V,
        block_size: 10,
        n_layer: 2,
        n_head: 2,
        n_kv_head: Some(1),
        n_embd: 8,
        position,
        ..ModelConfig::default()
    };
    let mut m = Transformer::new(cfg, max_batch).unwrap();
    m.init(seed);
    // Peaked distributions, so that greedy and beam search disagree.
    m.params.iter_mut().for_each(|p| *p *= 4.0);
    m
}

/// log p(out | prompt) token by token from the full forward pass (and, with `end`, of `end`
/// after `out`).
fn log_prob(m: &mut Transformer, prompt: &[u32], out: &[u32], end: Option<u32>) -> f64 {
    let mut s = prompt.to_vec();
    s.extend_from_slice(out);
    let targets: Vec<u32> = out.iter().copied().chain(end).collect();
    if end.is_some() {
        s.push(0); // the input after the end token is never scored
    }
    let t = s.len() - 1;
    m.forward_lm(&s[..t], None, 1, t, false, 0).unwrap();
    let logits = m.logits();
    let mut total = 0.0;
    for (i, &tok) in targets.iter().enumerate() {
        let row = &logits[(prompt.len() - 1 + i) * V..(prompt.len() + i) * V];
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x)) as f64;
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        total += row[tok as usize] as f64 - lse;
    }
    total
}

/// Every sequence of `len` tokens over `0..V` (excluding `banned`).
fn all_sequences(len: usize, banned: Option<u32>) -> Vec<Vec<u32>> {
    let mut out = vec![vec![]];
    for _ in 0..len {
        out = out
            .into_iter()
            .flat_map(|s| (0..V as u32).filter(|&t| Some(t) != banned).map(move |t| [s.clone(), vec![t]].concat()))
            .collect();
    }
    out
}

#[test]
fn beam_of_one_is_greedy_decoding() {
    for position in [Position::Learned, Position::Rope, Position::Alibi] {
        let mut m = model(position, 1, 3);
        let prompt = [1u32, 3, 0];
        let opts = BeamOptions { beam: 1, max_new_tokens: 6, length_penalty: 0.0, end: None };
        let hyps = beam_search(&mut m, &prompt, &opts).unwrap();
        let greedy = SampleOptions { max_new_tokens: 6, temperature: 0.0, ..SampleOptions::default() };
        let want = generate(&mut m, &prompt, &greedy, &mut Xoshiro256PlusPlus::seed_from_u64(0), |_| {}).unwrap();
        assert_eq!(hyps[0].tokens, want, "{position:?}");
        let lp = log_prob(&mut m, &prompt, &want, None);
        assert!((hyps[0].log_prob - lp).abs() < 1e-4, "{} vs {lp}", hyps[0].log_prob);
    }
}

#[test]
fn wide_beam_equals_exhaustive_search() {
    let max_len = 3;
    let mut beam_beat_greedy = 0;
    for (seed, position) in [(1, Position::Learned), (2, Position::Rope), (3, Position::T5), (4, Position::Alibi)] {
        for end in [None, Some(2u32)] {
            for alpha in [0.0f32, 1.0] {
                let beam = 64; // ≥ V^max_len: nothing is ever pruned
                let mut m = model(position, beam, seed);
                let prompt = [3u32, 1];
                let opts = BeamOptions { beam, max_new_tokens: max_len, length_penalty: alpha, end };
                let hyps = beam_search(&mut m, &prompt, &opts).unwrap();
                // Every candidate output: shorter ones end with `end`, full-length ones are
                // forced to end (with an end token) or stop as they are.
                let mut best = (f64::NEG_INFINITY, Vec::new());
                let lens: Vec<usize> = if end.is_some() { (0..=max_len).collect() } else { vec![max_len] };
                for len in lens {
                    for out in all_sequences(len, end) {
                        let lp = log_prob(&mut m, &prompt, &out, end);
                        let score = penalised_score(lp, len + usize::from(end.is_some()), alpha);
                        if score > best.0 + 1e-9 {
                            best = (score, out);
                        }
                    }
                }
                let what = format!("{position:?} end {end:?} alpha {alpha}");
                assert!(
                    (hyps[0].score - best.0).abs() < 1e-6 * (1.0 + best.0.abs()),
                    "{what}: beam {:?} {} vs exhaustive {:?} {}",
                    hyps[0].tokens,
                    hyps[0].score,
                    best.1,
                    best.0
                );
                assert!(hyps.windows(2).all(|w| w[0].score >= w[1].score), "{what}: ranked best first");
                // Every hypothesis's log-probability is what teacher forcing gives it.
                for h in &hyps {
                    let lp = log_prob(&mut m, &prompt, &h.tokens, end);
                    assert!(
                        (h.log_prob - lp).abs() < 1e-6 * (1.0 + lp.abs()),
                        "{what}: {:?} {} vs {lp}",
                        h.tokens,
                        h.log_prob
                    );
                }
                // The same search with a narrow beam never scores above the exhaustive best, and
                // a beam of 2 scores at least what greedy does.
                let narrow = |m: &mut Transformer, beam| {
                    beam_search(m, &prompt, &BeamOptions { beam, ..opts.clone() }).unwrap()[0].score
                };
                let (greedy, two) = (narrow(&mut m, 1), narrow(&mut m, 2));
                let tol = 1e-6 * (1.0 + best.0.abs());
                assert!(
                    two >= greedy - tol && two <= best.0 + tol,
                    "{what}: greedy {greedy} beam2 {two} best {}",
                    best.0
                );
                if best.0 > greedy + 1e-6 {
                    beam_beat_greedy += 1;
                }
            }
        }
    }
    assert!(beam_beat_greedy > 0, "the models never made greedy decoding suboptimal: the test proves little");
}

#[test]
fn beam_search_errors() {
    let mut m = model(Position::Learned, 2, 1);
    let opts = BeamOptions { beam: 3, max_new_tokens: 4, length_penalty: 0.0, end: None };
    let err = |m: &mut Transformer, p: &[u32], o: &BeamOptions| beam_search(m, p, o).unwrap_err().to_string();
    assert!(err(&mut m, &[1], &opts).contains("batch capacity"));
    let opts = BeamOptions { beam: 2, ..opts };
    assert!(err(&mut m, &[], &opts).contains("prompt"));
    assert!(err(&mut m, &[1], &BeamOptions { end: Some(9), ..opts.clone() }).contains("end token"));
    assert!(err(&mut m, &[1], &BeamOptions { length_penalty: -1.0, ..opts.clone() }).contains("length_penalty"));
    assert!(err(&mut m, &[7], &opts).contains("out of range"));
    // A prompt longer than the context is cropped to leave room for the new tokens.
    let long: Vec<u32> = (0..30).map(|i| i % V as u32).collect();
    let hyps = beam_search(&mut m, &long, &BeamOptions { max_new_tokens: 4, ..opts }).unwrap();
    assert_eq!(hyps[0].tokens.len(), 4);
}
