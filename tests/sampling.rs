//! Sampling options against their definitions: repetition penalty, temperature, top-k, top-p,
//! min-p (each on hand-computed cases, and all together against an f64 reference written from
//! Hugging Face's definitions, in HF's order), empirical frequencies of seeded draws, greedy
//! decoding, seeding, and stop strings.

use lmlab::data::{CharTokenizer, Tokenizer};
use lmlab::infer::sample::{generate, generate_text, SampleOptions, Sampler, StopStrings};
use lmlab::model::transformer::{ModelConfig, Transformer};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus as Rng256;

fn opts(temperature: f32) -> SampleOptions {
    SampleOptions { temperature, ..SampleOptions::default() }
}

fn probs_of(o: &SampleOptions, logits: &[f32], seen: &[u32]) -> Vec<f32> {
    let mut s = Sampler::new(o, logits.len()).unwrap();
    s.reset(seen);
    s.probabilities(logits).to_vec()
}

/// softmax of `logits` restricted to `keep` (f64), as the expected renormalised distribution.
fn softmax_on(logits: &[f64], keep: &[usize]) -> Vec<f64> {
    let max = keep.iter().map(|&i| logits[i]).fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = keep.iter().map(|&i| (logits[i] - max).exp()).sum();
    (0..logits.len()).map(|i| if keep.contains(&i) { (logits[i] - max).exp() / z } else { 0.0 }).collect()
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= tol, "{what}: token {i}: got {g}, want {w} (all: {got:?} vs {want:?})");
        assert_eq!(g == 0.0, w == 0.0, "{what}: token {i} kept differently: got {g}, want {w}");
    }
}

#[test]
fn top_k_keeps_the_k_largest_with_ties() {
    let logits = [1.0f32, 3.0, 2.0, 0.5, 2.0];
    let l64: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
    // k = 2: the 2nd largest is 2.0, held by tokens 2 and 4; HF keeps every logit >= it.
    for (k, keep) in
        [(1, vec![1]), (2, vec![1, 2, 4]), (3, vec![1, 2, 4]), (4, vec![0, 1, 2, 4]), (5, vec![0, 1, 2, 3, 4])]
    {
        let o = SampleOptions { top_k: Some(k), ..opts(1.0) };
        assert_close(&probs_of(&o, &logits, &[]), &softmax_on(&l64, &keep), 1e-6, &format!("top_k {k}"));
    }
    // With temperature 0.5 on top: the same set, sharper probabilities.
    let o = SampleOptions { top_k: Some(2), ..opts(0.5) };
    let sharp: Vec<f64> = l64.iter().map(|x| x / 0.5).collect();
    assert_close(&probs_of(&o, &logits, &[]), &softmax_on(&sharp, &[1, 2, 4]), 1e-6, "top_k 2, T 0.5");
}

#[test]
fn top_p_keeps_the_token_that_crosses_p() {
    // Probabilities 0.05, 0.4, 0.3, 0.15, 0.1 (as log-probabilities, so softmax gives them back).
    let p = [0.05f64, 0.4, 0.3, 0.15, 0.1];
    let logits: Vec<f32> = p.iter().map(|x| x.ln() as f32).collect();
    let l64: Vec<f64> = p.iter().map(|x| x.ln()).collect();
    // Sorted: 0.4 (1), 0.3 (2), 0.15 (3), 0.1 (4), 0.05 (0).
    let cases = [
        (0.3, vec![1]),          // 0.4 alone reaches 0.3
        (0.5, vec![1, 2]),       // 0.4 < 0.5: 0.3 crosses it and is kept
        (0.75, vec![1, 2, 3]),   // 0.7 < 0.75: 0.15 crosses
        (0.9, vec![1, 2, 3, 4]), // 0.85 < 0.9: 0.1 crosses
        (0.99, vec![0, 1, 2, 3, 4]),
        (1.0, vec![0, 1, 2, 3, 4]),
    ];
    for (top_p, keep) in cases {
        let o = SampleOptions { top_p: Some(top_p), ..opts(1.0) };
        assert_close(&probs_of(&o, &logits, &[]), &softmax_on(&l64, &keep), 1e-6, &format!("top_p {top_p}"));
    }
    // Hand-computed: top_p 0.75 renormalises 0.4, 0.3, 0.15 by their total 0.85.
    let o = SampleOptions { top_p: Some(0.75), ..opts(1.0) };
    assert_close(&probs_of(&o, &logits, &[]), &[0.0, 0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85, 0.0], 1e-6, "hand");
}

#[test]
fn min_p_threshold_is_relative_to_the_top_probability() {
    let p = [0.5f64, 0.2, 0.1, 0.15, 0.05];
    let logits: Vec<f32> = p.iter().map(|x| x.ln() as f32).collect();
    // min_p 0.25: threshold 0.125 keeps 0.5, 0.2, 0.15 (total 0.85).
    let o = SampleOptions { min_p: Some(0.25), ..opts(1.0) };
    assert_close(&probs_of(&o, &logits, &[]), &[0.5 / 0.85, 0.2 / 0.85, 0.0, 0.15 / 0.85, 0.0], 1e-6, "min_p 0.25");
    // min_p 1: only the top token; min_p 0: everything.
    let o = SampleOptions { min_p: Some(1.0), ..opts(1.0) };
    assert_close(&probs_of(&o, &logits, &[]), &[1.0, 0.0, 0.0, 0.0, 0.0], 1e-6, "min_p 1");
    let o = SampleOptions { min_p: Some(0.0), ..opts(1.0) };
    assert_close(&probs_of(&o, &logits, &[]), &p, 1e-6, "min_p 0");
    // After top-p 0.6 (keeps 0.5, 0.2), min-p 0.5 (threshold 0.25 of the top) drops 0.2.
    let o = SampleOptions { top_p: Some(0.6), min_p: Some(0.5), ..opts(1.0) };
    assert_close(&probs_of(&o, &logits, &[]), &[1.0, 0.0, 0.0, 0.0, 0.0], 1e-6, "top_p then min_p");
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
    let logits = [2.0f32, -1.0, 0.5, -3.0, 0.0];
    let seen = [0u32, 1, 4, 1];
    let o = SampleOptions { repetition_penalty: 2.0, ..opts(1.0) };
    let mut s = Sampler::new(&o, 5).unwrap();
    s.reset(&seen);
    assert_eq!(s.penalised(&logits), &[1.0, -2.0, 0.5, -3.0, 0.0]);
    // A penalty below 1 rewards repetition: the same rule with 0.5.
    let o = SampleOptions { repetition_penalty: 0.5, ..opts(1.0) };
    let mut s = Sampler::new(&o, 5).unwrap();
    s.reset(&seen);
    assert_eq!(s.penalised(&logits), &[4.0, -0.5, 0.5, -3.0, 0.0]);
    // observe() adds a token; reset() forgets.
    s.observe(2);
    assert_eq!(s.penalised(&logits), &[4.0, -0.5, 1.0, -3.0, 0.0]);
    s.reset(&[]);
    assert_eq!(s.penalised(&logits), &logits);
    // The distribution uses the penalised logits, before temperature.
    let o = SampleOptions { repetition_penalty: 2.0, ..opts(0.5) };
    let want = softmax_on(&[2.0, -4.0, 1.0, -6.0, 0.0], &[0, 1, 2, 3, 4]);
    assert_close(&probs_of(&o, &logits, &seen), &want, 1e-6, "penalty then temperature");
    // Greedy decoding is the argmax of the penalised logits.
    let o = SampleOptions { repetition_penalty: 2.0, ..opts(0.0) };
    let mut s = Sampler::new(&o, 5).unwrap();
    let mut rng = Rng256::seed_from_u64(0);
    assert_eq!(s.pick(&[2.0, 1.5, 0.0, 0.0, 0.0], &mut rng), 0);
    s.reset(&[0]);
    assert_eq!(s.pick(&[2.0, 1.5, 0.0, 0.0, 0.0], &mut rng), 1);
}

#[test]
fn temperature_zero_is_argmax() {
    let logits = [0.3f32, 2.5, -1.0, 2.5, 1.0];
    // top-k/top-p/min-p do not change the greedy choice; ties go to the lowest id.
    let o = SampleOptions { top_k: Some(3), top_p: Some(0.2), min_p: Some(0.9), ..opts(0.0) };
    let mut s = Sampler::new(&o, 5).unwrap();
    let mut rng = Rng256::seed_from_u64(1);
    for _ in 0..10 {
        assert_eq!(s.pick(&logits, &mut rng), 1);
    }
    assert_eq!(s.probabilities(&logits), &[0.0, 1.0, 0.0, 0.0, 0.0]);
    // No random number is drawn at temperature 0.
    let mut fresh = Rng256::seed_from_u64(1);
    assert_eq!(rng.gen::<u64>(), fresh.gen::<u64>());
}

/// HF's definitions in f64: RepetitionPenalty, Temperature, TopK, TopP (ascending cumulative sum,
/// remove while <= 1 - p, keep the top token), MinP. Returns None when a quantity sits within
/// 1e-4 of a threshold, where f32 and f64 rounding could legitimately disagree.
fn reference(logits: &[f32], seen: &[u32], o: &SampleOptions) -> Option<Vec<f64>> {
    let v = logits.len();
    let mut s: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
    let r = o.repetition_penalty as f64;
    for (i, x) in s.iter_mut().enumerate() {
        if seen.contains(&(i as u32)) {
            *x = if *x < 0.0 { *x * r } else { *x / r };
        }
    }
    s.iter_mut().for_each(|x| *x /= o.temperature as f64);
    if let Some(k) = o.top_k.filter(|&k| k < v) {
        let mut sorted = s.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        s.iter_mut().filter(|x| **x < sorted[k - 1]).for_each(|x| *x = f64::NEG_INFINITY);
    }
    let keep: Vec<usize> = (0..v).filter(|&i| s[i].is_finite()).collect();
    let mut p = softmax_on(&s, &keep);
    if let Some(top_p) = o.top_p.filter(|&x| x < 1.0) {
        let mut asc: Vec<usize> = (0..v).collect();
        asc.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
        let mut cum = 0.0;
        let limit = 1.0 - top_p as f64;
        let mut remove = vec![];
        for (j, &i) in asc.iter().enumerate() {
            cum += p[i];
            if (cum - limit).abs() < 1e-4 {
                return None;
            }
            if cum <= limit && j + 1 < v {
                remove.push(i);
            }
        }
        remove.into_iter().for_each(|i| p[i] = 0.0);
        let z: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= z);
    }
    if let Some(min_p) = o.min_p {
        let thr = min_p as f64 * p.iter().copied().fold(0.0, f64::max);
        if p.iter().any(|&x| x > 0.0 && (x - thr).abs() < 1e-4 * thr.max(1e-3)) {
            return None;
        }
        p.iter_mut().filter(|x| **x < thr).for_each(|x| *x = 0.0);
        let z: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= z);
    }
    Some(p)
}

#[test]
fn every_option_together_matches_hf_definitions_in_hf_order() {
    let mut rng = Rng256::seed_from_u64(42);
    let mut checked = 0;
    for case in 0..400 {
        let v = rng.gen_range(2..40);
        let logits: Vec<f32> = (0..v).map(|_| rng.gen_range(-4.0f32..4.0)).collect();
        let seen: Vec<u32> = (0..rng.gen_range(0..6)).map(|_| rng.gen_range(0..v as u32)).collect();
        let o = SampleOptions {
            temperature: [0.3, 0.7, 1.0, 1.8][case % 4],
            top_k: [None, Some(1), Some(3), Some(10)][(case / 4) % 4],
            top_p: [None, Some(0.5), Some(0.9)][(case / 16) % 3],
            min_p: [None, Some(0.05), Some(0.3)][(case / 48) % 3],
            repetition_penalty: [1.0, 1.3, 0.8][case % 3],
            ..SampleOptions::default()
        };
        let Some(want) = reference(&logits, &seen, &o) else { continue };
        assert_close(&probs_of(&o, &logits, &seen), &want, 2e-6, &format!("case {case} {o:?}"));
        checked += 1;
    }
    assert!(checked > 350, "only {checked} cases away from thresholds");
}

/// Draws from the sampler follow its distribution: each token's frequency over N seeded draws is
/// within 5 standard deviations, 5·sqrt(p(1-p)/N), of its exact probability (a false failure has
/// probability below 1e-5 for these few tokens), and removed tokens are never drawn.
#[test]
fn empirical_frequencies_match_exact_probabilities() {
    let logits = [1.0f32, 0.2, -0.5, 2.0, 1.5, -2.0, 0.0, 1.2];
    let settings = [
        opts(1.0),
        opts(0.7),
        SampleOptions { top_k: Some(4), ..opts(1.3) },
        SampleOptions { top_p: Some(0.8), ..opts(1.0) },
        SampleOptions { min_p: Some(0.2), ..opts(1.0) },
        SampleOptions { repetition_penalty: 1.5, top_k: Some(6), top_p: Some(0.9), min_p: Some(0.05), ..opts(0.9) },
    ];
    const N: usize = 200_000;
    for (n, o) in settings.iter().enumerate() {
        let seen = [3u32, 5];
        let exact: Vec<f64> = reference(&logits, &seen, o).unwrap();
        let mut s = Sampler::new(o, logits.len()).unwrap();
        s.reset(&seen);
        let mut rng = Rng256::seed_from_u64(n as u64);
        let mut counts = [0usize; 8];
        for _ in 0..N {
            counts[s.pick(&logits, &mut rng) as usize] += 1;
        }
        for (i, (&c, &p)) in counts.iter().zip(&exact).enumerate() {
            let freq = c as f64 / N as f64;
            if p == 0.0 {
                assert_eq!(c, 0, "setting {n}: removed token {i} drawn {c} times");
            } else {
                let bound = 5.0 * (p * (1.0 - p) / N as f64).sqrt();
                assert!((freq - p).abs() <= bound, "setting {n} token {i}: frequency {freq}, probability {p}");
            }
        }
    }
}

#[test]
fn invalid_options_are_errors() {
    let bad = [
        SampleOptions { top_p: Some(0.0), ..opts(1.0) },
        SampleOptions { top_p: Some(1.5), ..opts(1.0) },
        SampleOptions { min_p: Some(-0.1), ..opts(1.0) },
        SampleOptions { repetition_penalty: 0.0, ..opts(1.0) },
        SampleOptions { top_k: Some(0), ..opts(1.0) },
        SampleOptions { stop: vec![String::new()], ..opts(1.0) },
        opts(-1.0),
        opts(f32::NAN),
    ];
    for o in bad {
        assert!(o.validate().is_err() && Sampler::new(&o, 4).is_err(), "{o:?} accepted");
    }
}

fn tiny_model() -> (Transformer, Tokenizer) {
    let tok = CharTokenizer::from_corpus("abcdefghijk").unwrap();
    let cfg =
        ModelConfig { vocab_size: 11, block_size: 8, n_layer: 2, n_head: 2, n_embd: 16, ..ModelConfig::default() };
    let mut m = Transformer::new(cfg, 1).unwrap();
    m.init(4);
    m.params.iter_mut().for_each(|p| *p *= 3.0);
    (m, Tokenizer::Char(tok))
}

#[test]
fn same_seed_same_output() {
    let (mut m, _) = tiny_model();
    let o = SampleOptions {
        max_new_tokens: 30,
        top_k: Some(8),
        top_p: Some(0.9),
        min_p: Some(0.02),
        repetition_penalty: 1.2,
        ..opts(1.1)
    };
    let run = |m: &mut Transformer, seed| generate(m, &[1, 2], &o, &mut Rng256::seed_from_u64(seed), |_| {}).unwrap();
    let a = run(&mut m, 7);
    assert_eq!(a.len(), 30);
    assert_eq!(run(&mut m, 7), a);
    assert_ne!(run(&mut m, 8), a, "another seed gives another sequence");
}

#[test]
fn stop_string_matching_and_holding_back() {
    let s = StopStrings::new(&["\n\n".into(), "END".into()]).unwrap();
    assert_eq!(s.find("abc\n\nx", 0), Some((3, 0)));
    assert_eq!(s.find("aENDb\n\n", 0), Some((1, 1)));
    assert_eq!(s.find("aENDb\n\n", 2), Some((5, 0)));
    assert_eq!(s.find("a\nb", 0), None);
    // A suffix that could begin a stop string is held back.
    assert_eq!(s.safe_len("hello\n"), 5);
    assert_eq!(s.safe_len("hello E"), 6);
    assert_eq!(s.safe_len("hello EN"), 6);
    assert_eq!(s.safe_len("hello"), 5);
    assert_eq!(s.safe_len(""), 0);
    assert!(StopStrings::new(&[String::new()]).is_err());
}

#[test]
fn stop_strings_end_generation_at_the_right_place() {
    let (mut m, tok) = tiny_model();
    let base = SampleOptions { max_new_tokens: 40, ..opts(1.0) };
    let gen = |m: &mut Transformer, o: &SampleOptions| {
        let mut streamed = String::new();
        let g = generate_text(m, &tok, &[0, 3], o, &mut Rng256::seed_from_u64(5), |p| streamed.push_str(p)).unwrap();
        assert_eq!(streamed, g.text, "the streamed pieces make the returned text");
        g
    };
    let full = gen(&mut m, &base);
    assert_eq!(full.tokens.len(), 40);
    assert_eq!(full.text, tok.decode(&full.tokens).unwrap());
    assert_eq!(full.stopped_by, None);
    let t = full.text.clone();
    // One stop string: cut where its first occurrence starts, the last token completes it.
    for (from, len) in [(20, 3), (30, 2), (0, 1), (37, 3)] {
        let stop = t[from..from + len].to_string();
        let at = t.find(&stop).unwrap();
        let g = gen(&mut m, &SampleOptions { stop: vec![stop.clone()], ..base.clone() });
        assert_eq!(g.text, t[..at], "stop {stop:?}");
        assert_eq!(g.tokens, full.tokens[..at + len], "stop {stop:?}: one token per character");
        assert_eq!(g.stopped_by, Some(0));
    }
    // Two stop strings: the one completed first ends generation.
    let (late, early) = (t[25..28].to_string(), t[10..12].to_string());
    let (end_late, end_early) = (t.find(&late).unwrap() + 3, t.find(&early).unwrap() + 2);
    let g = gen(&mut m, &SampleOptions { stop: vec![late.clone(), early.clone()], ..base.clone() });
    let (which, end, len) = if end_early < end_late { (1, end_early, 2) } else { (0, end_late, 3) };
    assert_eq!(g.stopped_by, Some(which));
    assert_eq!(g.text, t[..end - len]);
    // A stop string that never completes (its prefixes do occur): everything is printed in the end.
    let g = gen(&mut m, &SampleOptions { stop: vec![format!("{}z", &t[10..13])], ..base.clone() });
    assert_eq!((g.text.as_str(), g.stopped_by, g.tokens.len()), (t.as_str(), None, 40));
}
