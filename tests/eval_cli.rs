//! `lmlab eval classify | bleu` on files: numbers equal to the library's (which the fixture tests
//! tie to scikit-learn and sacrebleu), several runs summarised, bad input named.

mod common;
use common::lmlab_text as lmlab;

#[test]
fn classify_and_bleu_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    std::fs::write(p("gold.txt"), "a\nb\nb\nc\n").unwrap();
    std::fs::write(p("pred1.txt"), "a\nb\nc\nc\n").unwrap();
    std::fs::write(
        p("pred2.jsonl"),
        "{\"label\": \"a\"}\n{\"label\": \"b\"}\n{\"label\": \"b\"}\n{\"label\": \"c\"}\n",
    )
    .unwrap();
    let (ok, out, err) = lmlab(&["eval", "classify", "--gold", &p("gold.txt"), "--pred", &p("pred1.txt")]);
    assert!(ok, "{err}");
    assert!(out.contains("    accuracy                           0.75         4"), "{out}");
    let (ok, out, err) = lmlab(&[
        "eval",
        "classify",
        "--gold",
        &p("gold.txt"),
        "--pred",
        &p("pred1.txt"),
        "--pred",
        &p("pred2.jsonl"),
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["runs"][1]["metrics"]["accuracy"].as_f64().unwrap(), 1.0);
    assert_eq!(v["summary"]["accuracy"]["mean"].as_f64().unwrap(), 0.875);
    assert_eq!(v["details"][0]["confusion"], serde_json::json!([[1, 0, 0], [0, 1, 1], [0, 0, 1]]));

    std::fs::write(p("short.txt"), "a\nb\n").unwrap();
    let (ok, _, err) = lmlab(&["eval", "classify", "--gold", &p("gold.txt"), "--pred", &p("short.txt")]);
    assert!(!ok && err.contains("4 gold labels but 2 predictions"), "{err}");
    std::fs::write(p("bad.txt"), b"a\n\xfe\nb\nc\n").unwrap();
    let (ok, _, err) = lmlab(&["eval", "classify", "--gold", &p("gold.txt"), "--pred", &p("bad.txt")]);
    assert!(!ok && err.contains("not valid UTF-8 (line 2"), "{err}");
    std::fs::write(p("labels.txt"), "a\nb\n").unwrap();
    let (ok, _, err) =
        lmlab(&["eval", "classify", "--gold", &p("gold.txt"), "--pred", &p("pred1.txt"), "--labels", &p("labels.txt")]);
    assert!(!ok && err.contains("label \"c\" is not among the labels"), "{err}");
    std::fs::write(p("empty.txt"), "").unwrap();
    let (ok, _, err) = lmlab(&["eval", "classify", "--gold", &p("empty.txt"), "--pred", &p("pred1.txt")]);
    assert!(!ok && err.contains("is empty"), "{err}");

    std::fs::write(p("hyp.txt"), "the cat sat on the mat\na dog barked\n").unwrap();
    std::fs::write(p("ref.txt"), "the cat sat on the mat\nthe dog barked loudly\n").unwrap();
    let (ok, out, err) = lmlab(&["eval", "bleu", "--hyp", &p("hyp.txt"), "--ref", &p("ref.txt"), "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let want = lmlab::eval::bleu::corpus_bleu(
        &["the cat sat on the mat", "a dog barked"],
        &[vec!["the cat sat on the mat", "the dog barked loudly"]],
    )
    .unwrap();
    assert_eq!(v["runs"][0]["metrics"]["bleu"].as_f64().unwrap(), want.score);
    let (ok, _, err) = lmlab(&["eval", "bleu", "--hyp", &p("hyp.txt"), "--ref", &p("gold.txt")]);
    assert!(!ok && err.contains("has 2 lines but the references have 4"), "{err}");
}

#[test]
fn chrf_rouge_diversity_from_files_equal_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let hyps = ["the cat sat on the mat", "a dog barked at night", "the cat sat on the mat"];
    let refs = ["the cat was sitting on the mat", "the dog barked loudly at night", "a cat on a mat"];
    std::fs::write(p("hyp.txt"), hyps.join("\n") + "\n").unwrap();
    std::fs::write(p("ref.txt"), refs.join("\n") + "\n").unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let (ok, out, err) = lmlab(args);
        assert!(ok, "{args:?}: {err}");
        serde_json::from_str(&out).unwrap()
    };
    let r: Vec<Vec<&str>> = vec![refs.to_vec()];
    let v = json(&["eval", "chrf", "--hyp", &p("hyp.txt"), "--ref", &p("ref.txt"), "--plusplus", "--json"]);
    let want = lmlab::eval::chrf::corpus_chrf_pp(&hyps, &r).unwrap();
    assert_eq!(v["runs"][0]["metrics"]["chrF2++"].as_f64().unwrap(), want.score);
    let v = json(&["eval", "rouge", "--hyp", &p("hyp.txt"), "--ref", &p("ref.txt"), "--stem", "--json"]);
    let want = lmlab::eval::rouge::corpus_rouge(&hyps, &r, true).unwrap().mean;
    assert_eq!(v["runs"][0]["metrics"]["rougeL_f"].as_f64().unwrap(), want.rouge_l.fmeasure);
    assert_eq!(v["runs"][0]["metrics"]["rouge2_r"].as_f64().unwrap(), want.rouge2.recall);
    // Two "seeds": the same file twice gives zero spread.
    let v = json(&["eval", "diversity", "--hyp", &p("hyp.txt"), "--hyp", &p("hyp.txt"), "--json"]);
    let d = lmlab::eval::diversity::distinct_n(&hyps, 2).unwrap().ratio;
    assert_eq!(v["runs"][0]["metrics"]["distinct-2"].as_f64().unwrap(), d);
    assert_eq!(v["summary"]["distinct-2"]["std"].as_f64().unwrap(), 0.0);
    let sb = lmlab::eval::diversity::self_bleu(&hyps).unwrap().score;
    assert_eq!(v["runs"][1]["metrics"]["self-bleu"].as_f64().unwrap(), sb);
    std::fs::write(p("short.txt"), "one line\n").unwrap();
    let (ok, _, err) = lmlab(&["eval", "rouge", "--hyp", &p("short.txt"), "--ref", &p("ref.txt")]);
    assert!(!ok && err.contains("has 1 lines but the references have 3"), "{err}");
}
