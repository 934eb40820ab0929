//! SQuAD v1.1 scoring (src/eval/squad.rs) against torchmetrics' transcription of the official
//! evaluate-v1.1.py (scripts/make_squad_fixtures.py): normalisation, exact match and F1 on
//! hand-made pairs, and totals on the dev set's first 400 questions with predictions made by a
//! fixed recipe; v1.1's F1 of 0 where both answers normalise to nothing; malformed files.

mod common;
use lmlab::eval::squad::{evaluate, exact_match, f1_score, normalize_answer, read_squad};
use serde_json::Value;
use std::collections::HashMap;

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(common::fixture("squad/reference.json")).unwrap()).unwrap()
}

#[test]
fn normalisation_and_pair_scores_equal_the_reference() {
    let fx = reference();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut both_empty = 0;
    for c in cases {
        let pred = c["prediction"].as_str().unwrap();
        let refs: Vec<&str> = c["references"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        assert_eq!(normalize_answer(pred), c["normalized_prediction"].as_str().unwrap(), "{pred:?}");
        for (r, n) in refs.iter().zip(c["normalized_references"].as_array().unwrap()) {
            assert_eq!(normalize_answer(r), n.as_str().unwrap(), "{r:?}");
        }
        let em = refs.iter().map(|r| exact_match(pred, r)).fold(0.0, f64::max);
        let f1 = refs.iter().map(|r| f1_score(pred, r)).fold(0.0, f64::max);
        assert_eq!(em, c["exact_match"].as_f64().unwrap(), "EM {pred:?}");
        if c["both_empty"].as_bool().unwrap() {
            // torchmetrics (as SQuAD 2.0) gives 1 here; v1.1's script has no special case: 0.
            assert_eq!(f1, 0.0, "{pred:?}");
            both_empty += 1;
        } else {
            assert!((f1 - c["f1"].as_f64().unwrap()).abs() < 1e-6, "F1 {pred:?}: {f1} vs {}", c["f1"]);
        }
    }
    assert!(both_empty >= 1, "the fixture covers the empty-answer difference");
}

/// The same recipe as scripts/make_squad_fixtures.py.
fn recipe(i: usize, q: &lmlab::eval::squad::Question) -> String {
    let first = &q.answers[0].0;
    match i % 6 {
        0 => first.clone(),
        1 => format!("{}.", first.to_uppercase()),
        2 => format!("the {}", q.answers.last().unwrap().0),
        3 => first.split_whitespace().next().unwrap_or("").to_string(),
        4 => q.question.clone(),
        _ => format!("{first} {first}"),
    }
}

#[test]
fn dev_set_scores_equal_the_reference() {
    let Some(path) = common::shared_data("squad/dev-v1.1.json") else {
        return common::skip("../shared/data/squad/dev-v1.1.json is missing");
    };
    let fx = reference();
    let all = read_squad(&std::fs::read_to_string(&path).unwrap(), "dev-v1.1.json").unwrap();
    assert_eq!(all.len(), 10570, "SQuAD v1.1 dev has 10,570 questions");
    let n = fx["dev"]["questions"].as_u64().unwrap() as usize;
    let qs = &all[..n];
    let preds: HashMap<String, String> = qs.iter().enumerate().map(|(i, q)| (q.id.clone(), recipe(i, q))).collect();
    let per = &fx["dev"]["per_question"];
    for q in qs {
        let refs: Vec<&str> = q.answers.iter().map(|a| a.0.as_str()).collect();
        let p = &preds[&q.id];
        let f1 = refs.iter().map(|r| f1_score(p, r)).fold(0.0, f64::max);
        assert!((f1 - per[&q.id]["f1"].as_f64().unwrap()).abs() < 1e-6, "{}: {p:?}", q.id);
    }
    let s = evaluate(qs, &preds);
    // torchmetrics sums in float32; the official script in float64 (as here).
    assert!((s.exact_match - fx["dev"]["exact_match"].as_f64().unwrap()).abs() < 1e-4, "{s:?}");
    assert!((s.f1 - fx["dev"]["f1"].as_f64().unwrap()).abs() < 1e-3, "{s:?}");
    assert_eq!((s.total, s.unanswered, s.unknown_ids), (n, 0, 0));
    // Unanswered questions score 0 and are counted; unknown ids are ignored and counted.
    let mut partial = preds.clone();
    partial.remove(&qs[0].id);
    partial.insert("not-a-question".into(), "x".into());
    let s2 = evaluate(qs, &partial);
    assert_eq!((s2.unanswered, s2.unknown_ids), (1, 1));
    assert!(s2.exact_match < s.exact_match);
}

#[test]
fn hand_made_cases_of_the_official_script() {
    // Published behaviour of evaluate-v1.1.py.
    assert_eq!(normalize_answer("The  Quick, brown fox!"), "quick brown fox");
    assert_eq!(normalize_answer("theater"), "theater");
    assert_eq!(f1_score("the cat sat", "a cat sat down"), 2.0 * (1.0 * 1.0) / (1.0 + 2.0 / 3.0) * (2.0 / 3.0));
    assert_eq!(f1_score("", ""), 0.0);
    assert_eq!(exact_match("", ""), 1.0);
    let text =
        r#"{"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [{"id": "q1", "question": "?"}]}]}]}"#;
    let e = read_squad(text, "bad.json").unwrap_err().to_string();
    assert!(e.contains("question 0 (q1) has no \"answers\""), "{e}");
    let e = read_squad("{\"version\": \"1.1\"}", "x.json").unwrap_err().to_string();
    assert!(e.contains("no \"data\""), "{e}");
    assert!(read_squad("not json", "y.json").is_err());
}

#[test]
fn cli_eval_squad() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.json");
    std::fs::write(
        &data,
        r#"{"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": "The cat sat on the mat.",
        "qas": [{"id": "a", "question": "Who sat?", "answers": [{"text": "The cat", "answer_start": 0}]},
                {"id": "b", "question": "Where?", "answers": [{"text": "on the mat", "answer_start": 8},
                                                              {"text": "the mat", "answer_start": 12}]}]}]}]}"#,
    )
    .unwrap();
    let preds = dir.path().join("p.json");
    std::fs::write(&preds, r#"{"a": "cat", "b": "mat"}"#).unwrap();
    let (ok, out, err) = common::lmlab_text(&[
        "eval",
        "squad",
        "--data",
        data.to_str().unwrap(),
        "--predictions",
        preds.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // a: "cat" = "the cat" normalised (EM 1, F1 1); b: "mat" vs "mat" (EM 1).
    assert_eq!(v["exact_match"].as_f64().unwrap(), 100.0);
    std::fs::write(&preds, r#"["not", "an object"]"#).unwrap();
    let (ok, _, err) = common::lmlab_text(&[
        "eval",
        "squad",
        "--data",
        data.to_str().unwrap(),
        "--predictions",
        preds.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("not a JSON object"), "{err}");
}
