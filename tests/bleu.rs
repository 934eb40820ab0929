//! BLEU against sacrebleu: tests/fixtures/bleu/expected.json was written by
//! scripts/make_bleu_fixtures.py (sacrebleu's own numbers) from the committed hyp/ref files.

mod common;

use lmlab::eval::bleu::{
    corpus_bleu, corpus_bleu_with, sentence_bleu, sentence_bleu_with, tokenize_13a, Bleu, Smoothing,
};
use serde_json::Value;

/// Scores and precisions are percentages; sacrebleu and this crate do the same float operations,
/// so they agree far below this.
const TOL: f64 = 1e-9;

fn lines(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(common::fixture("bleu").join(name)).unwrap();
    // Split on '\n' only, as the fixture script does (U+2028 etc. stay inside lines).
    let body = text.strip_suffix('\n').expect("fixture files end with a newline");
    body.split('\n').map(str::to_owned).collect()
}

fn expected() -> Value {
    let path = common::fixture("bleu/expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn close(what: &str, got: f64, want: f64) -> f64 {
    let d = (got - want).abs();
    assert!(d <= TOL, "{what}: got {got}, sacrebleu {want} (diff {d:e})");
    d
}

/// Compares every field of `got` with sacrebleu's; returns the largest float difference.
fn check(what: &str, got: &Bleu, want: &Value) -> f64 {
    let ints = |k: &str| -> Vec<u64> { want[k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect() };
    assert_eq!(got.counts.to_vec(), ints("counts"), "{what}: counts");
    assert_eq!(got.totals.to_vec(), ints("totals"), "{what}: totals");
    assert_eq!(got.sys_len, want["sys_len"].as_u64().unwrap(), "{what}: sys_len");
    assert_eq!(got.ref_len, want["ref_len"].as_u64().unwrap(), "{what}: ref_len");
    let mut worst = close(&format!("{what}: score"), got.score, f(&want["score"]));
    worst = worst.max(close(&format!("{what}: bp"), got.bp, f(&want["bp"])));
    for (n, p) in want["precisions"].as_array().unwrap().iter().enumerate() {
        worst = worst.max(close(&format!("{what}: precision {}", n + 1), got.precisions[n], f(p)));
    }
    assert_eq!(got.to_string(), want["formatted"].as_str().unwrap(), "{what}: score line");
    worst
}

#[test]
fn tokenize_13a_matches_sacrebleu() {
    let want = expected();
    let mut n = 0;
    for name in ["hyp", "ref1", "ref2"] {
        let tokenized = want["tokenized"][name].as_array().unwrap();
        let raw = lines(&format!("{name}.txt"));
        assert_eq!(raw.len(), tokenized.len());
        for (i, (line, tok)) in raw.iter().zip(tokenized).enumerate() {
            assert_eq!(tokenize_13a(line), tok.as_str().unwrap(), "{name}.txt line {}: {line:?}", i + 1);
            n += 1;
        }
    }
    assert!(n >= 180, "{n}");
}

#[test]
fn corpus_bleu_matches_sacrebleu() {
    let want = expected();
    let (hyp, r1, r2) = (lines("hyp.txt"), lines("ref1.txt"), lines("ref2.txt"));
    let hyps: Vec<&str> = hyp.iter().map(String::as_str).collect();
    let ref1: Vec<&str> = r1.iter().map(String::as_str).collect();
    let ref2: Vec<&str> = r2.iter().map(String::as_str).collect();
    let one = corpus_bleu(&hyps, std::slice::from_ref(&ref1)).unwrap();
    let two = corpus_bleu(&hyps, &[ref1, ref2]).unwrap();
    let worst =
        check("corpus, 1 ref", &one, &want["corpus_1ref"]).max(check("corpus, 2 refs", &two, &want["corpus_2ref"]));
    println!("{one}\n{two}\nlargest difference from sacrebleu: {worst:e}");
    // A second reference can only add matches.
    assert!(two.counts.iter().zip(&one.counts).all(|(a, b)| a >= b));
}

#[test]
fn sentence_bleu_matches_sacrebleu() {
    let want = expected();
    let (hyp, r1, r2) = (lines("hyp.txt"), lines("ref1.txt"), lines("ref2.txt"));
    let (s1, s2) = (want["sentence_1ref"].as_array().unwrap(), want["sentence_2ref"].as_array().unwrap());
    assert_eq!(s1.len(), hyp.len());
    let mut worst = 0.0f64;
    let (mut zero, mut perfect) = (0, 0);
    for i in 0..hyp.len() {
        let b = sentence_bleu(&hyp[i], &[&r1[i]]).unwrap();
        worst = worst.max(check(&format!("line {}, 1 ref", i + 1), &b, &s1[i]));
        zero += (b.score == 0.0) as usize;
        perfect += (b.score > 99.999) as usize;
        let b = sentence_bleu(&hyp[i], &[&r1[i], &r2[i]]).unwrap();
        worst = worst.max(check(&format!("line {}, 2 refs", i + 1), &b, &s2[i]));
    }
    println!("{} lines: {zero} score 0, {perfect} score 100; largest difference from sacrebleu: {worst:e}", hyp.len());
    // The corpus exercises both extremes and the range between.
    assert!(zero >= 3 && perfect >= 5 && zero + perfect < hyp.len() - 20, "{zero} {perfect}");
}

#[test]
fn smoothing_variants_match_sacrebleu() {
    let want = expected();
    let (hyp, r1, r2) = (lines("hyp.txt"), lines("ref1.txt"), lines("ref2.txt"));
    let hyps: Vec<&str> = hyp.iter().map(String::as_str).collect();
    let ref1: Vec<&str> = r1.iter().map(String::as_str).collect();
    let ref2: Vec<&str> = r2.iter().map(String::as_str).collect();
    let variants = want["smoothing_variants"].as_array().unwrap();
    let mut worst = 0.0f64;
    let mut distinct = std::collections::BTreeSet::new();
    for v in variants {
        let value = v["smooth_value"].as_f64();
        let smoothing = match v["smooth_method"].as_str().unwrap() {
            "none" => Smoothing::None,
            "floor" => Smoothing::Floor(value.unwrap_or(0.1)),
            "add-k" => Smoothing::AddK(value.unwrap_or(1.0)),
            "exp" => Smoothing::Exp,
            m => panic!("unknown smoothing {m}"),
        };
        let eff = v["effective_order"].as_bool().unwrap();
        let got = if let Some(line) = v["line"].as_u64() {
            let i = line as usize;
            sentence_bleu_with(&hyp[i], &[&r1[i]], smoothing, eff).unwrap()
        } else {
            let refs =
                if v["refs"].as_u64() == Some(1) { vec![ref1.clone()] } else { vec![ref1.clone(), ref2.clone()] };
            corpus_bleu_with(&hyps, &refs, smoothing, eff).unwrap()
        };
        let what = format!("{v}");
        worst = worst.max(close(&what, got.score, f(&v["score"])));
        for (n, p) in v["precisions"].as_array().unwrap().iter().enumerate() {
            worst = worst.max(close(&what, got.precisions[n], f(p)));
        }
        distinct.insert(format!("{:.6}", got.score));
    }
    println!(
        "{} variants, {} distinct scores; largest difference from sacrebleu: {worst:e}",
        variants.len(),
        distinct.len()
    );
    assert!(distinct.len() > 20, "the variants should not all agree: {distinct:?}");
}

/// A larger check on real data: the Multi30k test references against a deterministic
/// perturbation of themselves (see multi30k_hyps in the fixture script).
#[test]
fn multi30k_corpus_bleu_matches_sacrebleu() {
    let want = expected();
    let Some(w) = want.get("multi30k_test_2016_flickr_en") else {
        return common::skip("tests/fixtures/bleu/expected.json has no Multi30k entry");
    };
    let Some(path) = common::shared_data("multi30k/test_2016_flickr.en") else { return };
    let refs = lmlab::util::read_lines(&path).unwrap();
    let hyps: Vec<String> = (0..refs.len())
        .map(|i| {
            if i % 2 == 0 {
                let words: Vec<&str> = refs[i].split(' ').collect();
                words[..(words.len() * 2 / 3).max(1)].join(" ")
            } else {
                refs[(i + 1) % refs.len()].clone()
            }
        })
        .collect();
    let hyps: Vec<&str> = hyps.iter().map(String::as_str).collect();
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let b = corpus_bleu(&hyps, &[refs]).unwrap();
    let worst = check("multi30k", &b, w);
    println!("{b}; largest difference from sacrebleu: {worst:e}");
}

#[test]
fn bleu_errors_on_mismatched_streams() {
    let err = corpus_bleu(&["a b", "c"], &[vec!["a b", "c"], vec!["a b"]]).unwrap_err().to_string();
    assert!(err.contains("reference stream 1 has 1 lines") && err.contains("2 hypotheses"), "{err}");
    let err = corpus_bleu(&["a b"], &[vec!["a b", "c"]]).unwrap_err().to_string();
    assert!(err.contains("stream 0 has 2 lines"), "{err}");
    assert!(corpus_bleu(&["a"], &[]).is_err());
    assert!(sentence_bleu("a", &[]).is_err());
    // No hypotheses at all: score 0 (sacrebleu raises on an empty list).
    let b = corpus_bleu(&[], &[vec![]]).unwrap();
    assert_eq!((b.score, b.sys_len, b.ref_len), (0.0, 0, 0));
}
