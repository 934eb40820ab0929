//! `lmlab explain`: every experiment file resolves to valid run configs, the list names all the
//! questions, and question 2's walkthrough (the quickest experiment, a few seconds) runs end to
//! end through the binary: its step-by-step numbers equal the model's own forward pass, and its
//! result.json holds what the report needs.

use std::path::Path;
use std::process::Command;

fn lmlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lmlab"))
}

#[test]
fn every_experiment_resolves_to_valid_configs() {
    let n = lmlab::explain::check_experiments().unwrap();
    assert!(n >= 40, "only {n} arm configs resolved");
}

#[test]
fn list_names_every_question_and_marks_pending_ones() {
    let out = lmlab().args(["explain", "list", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 14);
    for (i, q) in lines.iter().enumerate() {
        assert_eq!(q["number"], i + 1);
        let ready = q["status"] == "ready";
        assert_eq!(ready, q["pending"].is_null(), "{q}");
    }
    let bad = lmlab().args(["explain", "run", "no-such-question"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("the ids are"));
    // A pending question (while any is) refuses to run and says why.
    if let Some(q) = lines.iter().find(|q| q["status"] != "ready") {
        let pending = lmlab().args(["explain", "run", q["id"].as_str().unwrap()]).output().unwrap();
        assert!(!pending.status.success());
        assert!(String::from_utf8_lossy(&pending.stderr).contains("has no experiment yet"));
    }
}

/// Question 6 end to end at the quick budget: the generated corpus, every arm trained on it,
/// and held-out accuracy per distance bin (the quick budget is too short for the models to
/// learn the recall; the numbers are checked for what they must be whatever was learned).
#[test]
fn long_range_recall_runs_on_generated_data_and_bins_every_query() {
    let out_dir = std::env::temp_dir().join(format!("lmlab-explain-recall-{}", std::process::id()));
    let out = lmlab()
        .args(["explain", "run", "long-range", "--threads", "2", "--json", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["question"], 6);
    // The training corpus: "k3....:k3" lines with gaps of at most 8 dots.
    let corpus = std::fs::read_to_string(out_dir.join("long-range/recall.txt")).unwrap();
    for line in corpus.lines().take(1000) {
        let b = line.as_bytes();
        let gap = line.find(':').unwrap() - 2;
        assert!(gap <= 8 && b[..2] == b[gap + 3..] && b[2..gap + 2].iter().all(|&c| c == b'.'), "{line}");
    }
    let runs = r["data"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for run in runs {
        let bins = run["recall_bins"].as_array().unwrap();
        // 600 held-out lines, one query each, distances 3 ..= 59 in bins of 8.
        let total: u64 = bins.iter().map(|b| b[2].as_u64().unwrap()).sum();
        assert_eq!(total, 600, "{run}");
        assert_eq!(bins.first().unwrap()[0], 0);
        assert_eq!(bins.last().unwrap()[0], 56);
        assert!(bins.iter().all(|b| (0.0..=1.0).contains(&b[1].as_f64().unwrap())));
    }
    assert!(r["charts"].as_array().unwrap().iter().any(|c| c["png"] == "recall_accuracy.png"));
    assert!(out_dir.join("long-range/recall_accuracy.svg").exists());
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn attention_walkthrough_matches_the_forward_pass() {
    let data = Path::new("../shared/data/tinyshakespeare.txt");
    if !data.exists() {
        assert!(
            std::env::var("LMLAB_REQUIRE_DATA").is_err(),
            "LMLAB_REQUIRE_DATA is set but {} is missing",
            data.display()
        );
        eprintln!("SKIPPED attention_walkthrough_matches_the_forward_pass: {} not found", data.display());
        return;
    }
    let out_dir = std::env::temp_dir().join(format!("lmlab-explain-test-{}", std::process::id()));
    let out = lmlab()
        .args(["explain", "run", "attention", "--threads", "2", "--json", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["question"], 2);
    assert_eq!(r["command"], "lmlab explain run attention --budget quick");
    let d = &r["data"];
    assert!(d["max_abs_diff_probs"].as_f64().unwrap() < 1e-5, "{}", d["max_abs_diff_probs"]);
    assert!(d["max_abs_diff_output"].as_f64().unwrap() < 1e-5, "{}", d["max_abs_diff_output"]);
    // Each probability row is a distribution over the visible keys only.
    let t = d["tokens"].as_array().unwrap().len();
    let p: Vec<f64> = d["probs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    for i in 0..t {
        let row = &p[i * t..(i + 1) * t];
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5);
        assert!(row[i + 1..].iter().all(|&x| x == 0.0), "row {i} sees the future");
    }
    for c in r["charts"].as_array().unwrap() {
        for k in ["png", "svg"] {
            let f = out_dir.join("attention").join(c[k].as_str().unwrap());
            assert!(f.metadata().unwrap().len() > 1000, "{} is empty", f.display());
        }
    }
    let saved = lmlab::explain::ExplainResult::read(&out_dir.join("attention/result.json")).unwrap();
    assert_eq!(saved.findings.len(), r["findings"].as_array().unwrap().len());
    let html = out_dir.join("report.html");
    let rep = lmlab().args(["report", "--dir"]).arg(&out_dir).arg("--out").arg(&html).output().unwrap();
    assert!(rep.status.success(), "{}", String::from_utf8_lossy(&rep.stderr));
    assert!(std::fs::read_to_string(&html).unwrap().contains("How does attention compute its output?"));
    let _ = std::fs::remove_dir_all(&out_dir);
}
