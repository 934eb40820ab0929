//! chrF / chrF++ against sacrebleu, ROUGE against rouge-score (and NLTK's Porter stemmer), and the
//! diversity metrics against plain Python implementations: tests/fixtures/metrics/expected.json and
//! porter_words.tsv were written by scripts/make_metric_fixtures.py from the committed corpus.jsonl.

mod common;

use lmlab::eval::chrf::{
    chrf_words, corpus_chrf, corpus_chrf_pp, corpus_chrf_with, sentence_chrf, sentence_chrf_pp, sentence_chrf_with,
    Chrf, ChrfConfig,
};
use lmlab::eval::diversity::{
    corpus_repetition, distinct_n, diversity, ngram_entropy, repetition_rate, self_bleu, whitespace_tokens,
};
use lmlab::eval::porter;
use lmlab::eval::rouge::{corpus_rouge, rouge, rouge_multi, rouge_tokenize, Rouge, RougeScore};
use serde_json::Value;

/// The Rust code does the reference implementations' float operations in the same order, so the
/// numbers agree far below this (the task asks 1e-6 for ROUGE F and 0.01 for chrF).
const TOL: f64 = 1e-9;

struct Corpus {
    hyp: Vec<String>,
    ref1: Vec<String>,
    ref2: Vec<String>,
}

impl Corpus {
    fn load() -> Corpus {
        let text = std::fs::read_to_string(common::fixture("metrics/corpus.jsonl")).unwrap();
        // Split on '\n' only, as the fixture script does (U+2028 and U+0085 stay inside lines).
        let body = text.strip_suffix('\n').expect("corpus.jsonl ends with a newline");
        let mut c = Corpus { hyp: vec![], ref1: vec![], ref2: vec![] };
        for line in body.split('\n') {
            let v: Value = serde_json::from_str(line).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_owned();
            c.hyp.push(s("hyp"));
            c.ref1.push(s("ref1"));
            c.ref2.push(s("ref2"));
        }
        c
    }

    fn texts(&self, name: &str) -> Vec<&str> {
        let v = match name {
            "hyp" => &self.hyp,
            "ref1" => &self.ref1,
            "ref2" => &self.ref2,
            _ => panic!("{name}"),
        };
        v.iter().map(String::as_str).collect()
    }
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(common::fixture("metrics/expected.json")).unwrap()).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(what: &str, got: f64, want: f64) -> f64 {
    let d = (got - want).abs();
    assert!(d <= TOL, "{what}: got {got}, reference {want} (diff {d:e})");
    d
}

// ------------------------------------------------------------------ chrF

fn chrf_config(v: &Value) -> ChrfConfig {
    let mut c = ChrfConfig::CHRF;
    for (k, x) in v.as_object().unwrap() {
        match k.as_str() {
            "char_order" => c.char_order = x.as_u64().unwrap() as usize,
            "word_order" => c.word_order = x.as_u64().unwrap() as usize,
            "beta" => c.beta = x.as_u64().unwrap() as u32,
            "lowercase" => c.lowercase = x.as_bool().unwrap(),
            "whitespace" => c.whitespace = x.as_bool().unwrap(),
            "eps_smoothing" => c.eps_smoothing = x.as_bool().unwrap(),
            _ => panic!("unknown CHRF argument {k}"),
        }
    }
    c
}

/// Statistics exactly, score to TOL, score line exactly; returns the score difference.
fn check_chrf(what: &str, got: &Chrf, want: &Value) -> f64 {
    let flat: Vec<u64> = got.stats.iter().flat_map(|s| [s.hyp, s.reference, s.matches]).collect();
    let want_stats: Vec<u64> = want["stats"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(flat, want_stats, "{what}: statistics");
    let d = close(&format!("{what}: score"), got.score, f(&want["score"]));
    assert_eq!(got.to_string(), want["formatted"].as_str().unwrap(), "{what}: score line");
    d
}

#[test]
fn chrf_word_split_matches_sacrebleu() {
    let (c, want) = (Corpus::load(), expected());
    let mut split = 0;
    for name in ["hyp", "ref1", "ref2"] {
        for (i, (text, w)) in c.texts(name).iter().zip(want["chrf"]["words"][name].as_array().unwrap()).enumerate() {
            let w: Vec<&str> = w.as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
            let got = chrf_words(text);
            assert_eq!(got, w, "{name} line {}: {text:?}", i + 1);
            split += (got.len() > whitespace_tokens(text).len()) as usize;
        }
    }
    assert!(split >= 20, "the corpus should exercise punctuation splitting: {split} texts");
}

#[test]
fn chrf_matches_sacrebleu() {
    let (c, want) = (Corpus::load(), expected());
    let (hyp, ref1, ref2) = (c.texts("hyp"), c.texts("ref1"), c.texts("ref2"));
    let mut worst = 0.0f64;
    let mut configs = 0;
    for (name, w) in want["chrf"].as_object().unwrap() {
        if name == "words" {
            continue;
        }
        configs += 1;
        let cfg = chrf_config(&w["config"]);
        let one = corpus_chrf_with(&hyp, std::slice::from_ref(&ref1), &cfg).unwrap();
        let two = corpus_chrf_with(&hyp, &[ref1.clone(), ref2.clone()], &cfg).unwrap();
        worst = worst.max(check_chrf(&format!("{name} corpus 1 ref"), &one, &w["corpus_1ref"]));
        worst = worst.max(check_chrf(&format!("{name} corpus 2 refs"), &two, &w["corpus_2ref"]));
        println!("{name}: {one} / {two}");
        let (s1, s2) = (w["sentence_1ref"].as_array().unwrap(), w["sentence_2ref"].as_array().unwrap());
        assert_eq!(s1.len(), hyp.len());
        for i in 0..hyp.len() {
            let got = sentence_chrf_with(hyp[i], &[ref1[i]], &cfg).unwrap();
            worst = worst.max(check_chrf(&format!("{name} line {} 1 ref", i + 1), &got, &s1[i]));
            let got = sentence_chrf_with(hyp[i], &[ref1[i], ref2[i]], &cfg).unwrap();
            worst = worst.max(check_chrf(&format!("{name} line {} 2 refs", i + 1), &got, &s2[i]));
        }
    }
    assert_eq!(configs, 7);
    println!("largest chrF difference from sacrebleu: {worst:e}");
}

#[test]
fn chrf_defaults_and_corpus_extremes() {
    let (c, want) = (Corpus::load(), expected());
    let (hyp, ref1, ref2) = (c.texts("hyp"), c.texts("ref1"), c.texts("ref2"));
    let refs = [ref1.clone(), ref2.clone()];
    // The short names are sacrebleu's defaults and chrF++.
    check_chrf("corpus_chrf", &corpus_chrf(&hyp, &refs).unwrap(), &want["chrf"]["chrf"]["corpus_2ref"]);
    check_chrf("corpus_chrf_pp", &corpus_chrf_pp(&hyp, &refs).unwrap(), &want["chrf"]["chrf++"]["corpus_2ref"]);
    let (mut zero, mut perfect, mut second_ref_better) = (0, 0, 0);
    for i in 0..hyp.len() {
        let one = sentence_chrf(hyp[i], &[ref1[i]]).unwrap();
        let two = sentence_chrf(hyp[i], &[ref1[i], ref2[i]]).unwrap();
        check_chrf("sentence_chrf", &two, &want["chrf"]["chrf"]["sentence_2ref"][i]);
        let pp = sentence_chrf_pp(hyp[i], &[ref1[i], ref2[i]]).unwrap();
        check_chrf("sentence_chrf_pp", &pp, &want["chrf"]["chrf++"]["sentence_2ref"][i]);
        zero += (one.score == 0.0) as usize;
        perfect += (one.score == 100.0) as usize;
        second_ref_better += (two.score > one.score) as usize;
        // The best reference is kept: a second one never lowers a sentence score.
        assert!(two.score >= one.score, "line {}", i + 1);
    }
    println!("{zero} lines score 0, {perfect} score 100, {second_ref_better} improved by ref2");
    assert!(zero >= 5 && perfect >= 3 && second_ref_better >= 10, "{zero} {perfect} {second_ref_better}");
}

// ------------------------------------------------------------------ ROUGE

#[test]
fn rouge_tokens_match_rouge_score() {
    let (c, want) = (Corpus::load(), expected());
    for (key, stem) in [("nostem", false), ("stem", true)] {
        for name in ["hyp", "ref1", "ref2"] {
            let w = want["rouge"]["tokens"][key][name].as_array().unwrap();
            for (i, (text, w)) in c.texts(name).iter().zip(w).enumerate() {
                let w: Vec<&str> = w.as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
                assert_eq!(rouge_tokenize(text, stem), w, "{key} {name} line {}: {text:?}", i + 1);
            }
        }
    }
    // Stemming changes the tokens of many lines.
    let changed = c.hyp.iter().filter(|t| rouge_tokenize(t, true) != rouge_tokenize(t, false)).count();
    assert!(changed >= 15, "{changed}");
}

#[test]
fn rouge_ascii_sources_match_python_lower() {
    // Every code point whose lowercase holds a-z or 0-9, with that lowercase: the only characters
    // that can reach a ROUGE token, so Rust's and Python's lowercasing must agree on exactly these.
    let want: Vec<(u32, String)> = expected()["rouge"]["ascii_lowercase_sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_str().unwrap().to_owned()))
        .collect();
    let got: Vec<(u32, String)> = (0..=0x10ffffu32)
        .filter_map(char::from_u32)
        .map(|c| (c as u32, c.to_lowercase().collect::<String>()))
        .filter(|(_, l)| l.bytes().any(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        .collect();
    assert_eq!(got, want);
}

fn check_rouge(what: &str, got: &Rouge, want: &Value) -> f64 {
    let mut worst = 0.0f64;
    for (name, s) in
        [("rouge1", got.rouge1), ("rouge2", got.rouge2), ("rougeL", got.rouge_l), ("rougeLsum", got.rouge_lsum)]
    {
        let w = &want[name];
        worst = worst.max(close(&format!("{what} {name} precision"), s.precision, f(&w["precision"])));
        worst = worst.max(close(&format!("{what} {name} recall"), s.recall, f(&w["recall"])));
        worst = worst.max(close(&format!("{what} {name} fmeasure"), s.fmeasure, f(&w["fmeasure"])));
    }
    worst
}

#[test]
fn rouge_matches_rouge_score() {
    let (c, want) = (Corpus::load(), expected());
    let (hyp, ref1, ref2) = (c.texts("hyp"), c.texts("ref1"), c.texts("ref2"));
    let mut worst = 0.0f64;
    let (mut lsum_differs, mut multi_mixed, mut multi_from_ref2) = (0, 0, 0);
    for (key, stem) in [("nostem", false), ("stem", true)] {
        let w = &want["rouge"]["variants"][key];
        for i in 0..hyp.len() {
            let one = rouge(hyp[i], ref1[i], stem);
            worst = worst.max(check_rouge(&format!("{key} line {} 1 ref", i + 1), &one, &w["single"][i]));
            let two = rouge_multi(hyp[i], &[ref1[i], ref2[i]], stem).unwrap();
            worst = worst.max(check_rouge(&format!("{key} line {} 2 refs", i + 1), &two, &w["multi"][i]));
            lsum_differs += (one.rouge_lsum != one.rouge_l) as usize;
            // score_multi picks the reference per variant, so one result can mix both references.
            let other = rouge(hyp[i], ref2[i], stem);
            let (a, b) = (two.variants(), one.variants());
            let from_ref2 = a.iter().zip(b).zip(other.variants()).filter(|((t, o), r)| t != &o && *t == r).count();
            multi_from_ref2 += (from_ref2 > 0) as usize;
            multi_mixed += (from_ref2 > 0 && from_ref2 < 4) as usize;
        }
        let single = corpus_rouge(&hyp, std::slice::from_ref(&ref1), stem).unwrap();
        worst = worst.max(check_rouge(&format!("{key} mean 1 ref"), &single.mean, &w["mean_single"]));
        let multi = corpus_rouge(&hyp, &[ref1.clone(), ref2.clone()], stem).unwrap();
        worst = worst.max(check_rouge(&format!("{key} mean 2 refs"), &multi.mean, &w["mean_multi"]));
        assert_eq!(multi.pairs.len(), hyp.len());
        for (i, p) in multi.pairs.iter().enumerate() {
            check_rouge(&format!("{key} corpus pair {}", i + 1), p, &w["multi"][i]);
        }
        println!(
            "{key}: mean F (2 refs) {:.4} {:.4} {:.4} {:.4}",
            multi.mean.rouge1.fmeasure,
            multi.mean.rouge2.fmeasure,
            multi.mean.rouge_l.fmeasure,
            multi.mean.rouge_lsum.fmeasure
        );
    }
    println!(
        "largest ROUGE difference from rouge-score: {worst:e}; Lsum != L on {lsum_differs} lines, \
         ref2 chosen on {multi_from_ref2}, both refs in one result on {multi_mixed}"
    );
    assert!(
        lsum_differs >= 6 && multi_from_ref2 >= 10 && multi_mixed >= 1,
        "{lsum_differs} {multi_from_ref2} {multi_mixed}"
    );
}

#[test]
fn rouge_hand_computed_stemming() {
    // "running" and "runs" both stem to "run", "cats" to "cat"; "ran" (3 chars) is never stemmed.
    let s = rouge("cats running", "cat runs ran", true);
    assert_eq!(s.rouge1, RougeScore { precision: 1.0, recall: 2.0 / 3.0, fmeasure: 0.8 });
    assert_eq!(rouge("cats running", "cat runs ran", false).rouge1.fmeasure, 0.0);
}

#[test]
fn porter_matches_nltk() {
    let text = std::fs::read_to_string(common::fixture("metrics/porter_words.tsv")).unwrap();
    let (mut n, mut changed) = (0, 0);
    let mut wrong = vec![];
    for line in text.lines() {
        let (word, want) = line.split_once('\t').unwrap();
        let got = porter::stem(word);
        if got != want {
            wrong.push(format!("{word}: got {got}, NLTK {want}"));
        }
        n += 1;
        changed += (want != word) as usize;
    }
    assert!(wrong.is_empty(), "{} of {n} words differ from NLTK:\n{}", wrong.len(), wrong.join("\n"));
    println!("{n} words, {changed} changed by stemming, all as NLTK");
    assert!(n > 11_000 && changed > 6_000, "{n} {changed}");
}

// ------------------------------------------------------------------ diversity

fn check_diversity(what: &str, texts: &[&str], want: &Value) {
    let all = diversity(texts, 4).unwrap();
    for n in 1..=4 {
        let (wd, wr, we) = (&want["distinct"][n - 1], &want["repetition"][n - 1], &want["entropy"][n - 1]);
        let d = distinct_n(texts, n).unwrap();
        assert_eq!((d.unique, d.total), (wd["unique"].as_u64().unwrap(), wd["total"].as_u64().unwrap()), "{what}");
        close(&format!("{what} distinct-{n}"), d.ratio, f(&wd["ratio"]));
        let r = corpus_repetition(texts, n).unwrap();
        assert_eq!(
            (r.texts as u64, r.repeated, r.total),
            (wr["texts"].as_u64().unwrap(), wr["repeated"].as_u64().unwrap(), wr["total"].as_u64().unwrap()),
            "{what} rep-{n}"
        );
        close(&format!("{what} rep-{n}"), r.rate, f(&wr["rate"]));
        for (i, (t, w)) in texts.iter().zip(wr["per_text"].as_array().unwrap()).enumerate() {
            match (repetition_rate(t, n), w.as_f64()) {
                (Some(g), Some(w)) => {
                    close(&format!("{what} line {} rep-{n}", i + 1), g, w);
                }
                (None, None) => {}
                (g, _) => panic!("{what} line {} rep-{n}: got {g:?}, Python {w}", i + 1),
            }
        }
        let e = ngram_entropy(texts, n).unwrap();
        assert_eq!((e.unique, e.total), (we["unique"].as_u64().unwrap(), we["total"].as_u64().unwrap()), "{what}");
        close(&format!("{what} entropy-{n}"), e.bits, f(&we["bits"]));
        assert!(e.bits <= (e.unique as f64).log2() + 1e-12);
        assert_eq!((all.distinct[n - 1], all.repetition[n - 1], all.entropy[n - 1]), (d, r, e));
    }
    let sb = self_bleu(texts).unwrap();
    let want_sb = &want["self_bleu"];
    for (i, (g, w)) in sb.scores.iter().zip(want_sb["scores"].as_array().unwrap()).enumerate() {
        close(&format!("{what} self-BLEU line {}", i + 1), *g, f(w));
    }
    close(&format!("{what} self-BLEU"), sb.score, f(&want_sb["score"]));
    assert_eq!(all.self_bleu.as_ref(), Some(&sb));
    println!(
        "{what}: distinct-1..4 {:.3} {:.3} {:.3} {:.3}, rep-4 {:.3}, ent-4 {:.3} bits, self-BLEU {:.2}",
        all.distinct[0].ratio,
        all.distinct[1].ratio,
        all.distinct[2].ratio,
        all.distinct[3].ratio,
        all.repetition[3].rate,
        all.entropy[3].bits,
        sb.score
    );
}

#[test]
fn diversity_matches_python() {
    let (c, want) = (Corpus::load(), expected());
    check_diversity("hyp", &c.texts("hyp"), &want["diversity"]["hyp"]);
    check_diversity("ref1", &c.texts("ref1"), &want["diversity"]["ref1"]);
}

// ------------------------------------------------------------------ real data

/// DialogSum's test set: summary1 scored against summary2 and summary3 (skipped without the data).
#[test]
fn dialogsum_matches_reference_packages() {
    let want = expected();
    let Some(w) = want.get("dialogsum_test") else {
        return common::skip("the metrics fixture has no DialogSum entry");
    };
    let Some(path) = common::shared_data("dialogsum/dialogsum.test.jsonl") else { return };
    let rows: Vec<Value> =
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len() as u64, w["lines"].as_u64().unwrap());
    let col = |k: &str| -> Vec<&str> { rows.iter().map(|r| r[k].as_str().unwrap()).collect() };
    let (hyp, r2, r3) = (col("summary1"), col("summary2"), col("summary3"));
    let refs = [r2, r3];
    let chrf = corpus_chrf(&hyp, &refs).unwrap();
    check_chrf("dialogsum chrF", &chrf, &w["chrf"]);
    let chrf_pp = corpus_chrf_pp(&hyp, &refs).unwrap();
    check_chrf("dialogsum chrF++", &chrf_pp, &w["chrf++"]);
    for (key, stem) in [("rouge_nostem", false), ("rouge_stem", true)] {
        check_rouge(&format!("dialogsum {key}"), &corpus_rouge(&hyp, &refs, stem).unwrap().mean, &w[key]);
    }
    let d = &w["diversity"];
    for n in 1..=4 {
        close("dialogsum distinct", distinct_n(&hyp, n).unwrap().ratio, f(&d["distinct"][n - 1]["ratio"]));
        close("dialogsum rep", corpus_repetition(&hyp, n).unwrap().rate, f(&d["repetition"][n - 1]["rate"]));
        close("dialogsum entropy", ngram_entropy(&hyp, n).unwrap().bits, f(&d["entropy"][n - 1]["bits"]));
    }
    close("dialogsum self-BLEU", self_bleu(&hyp[..100]).unwrap().score, f(&d["self_bleu"]["score"]));
    println!("dialogsum: {chrf}, {chrf_pp}");
}

// ------------------------------------------------------------------ bad input

#[test]
fn metrics_reject_bad_input() {
    let err = |r: anyhow::Result<()>| r.unwrap_err().to_string();
    let (h, r) = (["a b", "c"], ["a b"]);
    let refs = vec![r.to_vec()];
    for e in [
        err(corpus_chrf(&h, &refs).map(drop)),
        err(corpus_chrf_pp(&h, &[vec!["a b", "c"], vec!["a"]]).map(drop)),
        err(corpus_rouge(&h, &refs, false).map(drop)),
    ] {
        assert!(e.contains("has 1 lines but there are 2 hypotheses"), "{e}");
    }
    for e in [
        err(corpus_chrf(&[], &[vec![]]).map(drop)),
        err(corpus_rouge(&[], &[vec![]], true).map(drop)),
        err(distinct_n(&[], 1).map(drop)),
        err(corpus_repetition(&[], 2).map(drop)),
        err(ngram_entropy(&[], 3).map(drop)),
        err(diversity(&[], 4).map(drop)),
    ] {
        assert!(e.contains("empty corpus"), "{e}");
    }
    assert!(err(corpus_chrf(&h, &[]).map(drop)).contains("at least one reference"));
    assert!(err(sentence_chrf("a", &[]).map(drop)).contains("at least one reference"));
    assert!(err(rouge_multi("a", &[], false).map(drop)).contains("at least one reference"));
    assert!(err(corpus_rouge(&h, &[], false).map(drop)).contains("at least one reference"));
    assert!(err(self_bleu(&["just one"]).map(drop)).contains("at least two texts"));
    assert!(err(distinct_n(&["a"], 0).map(drop)).contains("at least 1"));
    let no_orders = ChrfConfig { char_order: 0, word_order: 0, ..ChrfConfig::CHRF };
    assert!(sentence_chrf_with("a", &["a"], &no_orders).is_err());
}

#[test]
fn results_serialize_with_reference_names() {
    let s = serde_json::to_value(rouge("a b", "a c", false)).unwrap();
    assert_eq!(s["rougeL"]["fmeasure"], 0.5);
    assert!(s.get("rougeLsum").is_some());
    let c = serde_json::to_value(sentence_chrf_pp("ab cd", &["ab cd"]).unwrap()).unwrap();
    assert_eq!((c["name"].as_str(), c["score"].as_f64()), (Some("chrF2++"), Some(100.0)));
    assert_eq!(c["stats"].as_array().unwrap().len(), 8);
    assert_eq!(c["stats"][0]["ref"], 4);
    let d = serde_json::to_value(diversity(&["a b a", "b c"], 2).unwrap()).unwrap();
    assert_eq!(d["distinct"][0]["unique"], 3);
    assert!(d["self_bleu"]["scores"].as_array().is_some());
}
