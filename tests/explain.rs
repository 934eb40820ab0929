//! `lmlab explain`: every experiment file resolves to valid run configs, the list names all the
//! questions, and question 2's walkthrough (the quickest experiment, a few seconds) runs end to
//! end through the binary: its step-by-step numbers equal the model's own forward pass, and its
//! result.json holds what the report needs.

mod common;

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
/// and held-out accuracy per distance bin. The quick CNN (300 steps) and the Transformer with
/// learned positions learn nothing, so their numbers are checked for what they must be whatever
/// was learned. The RoPE Transformer and the LSTM (1,200 steps each) learn the short distances
/// with the experiment's seed; with another seed either may not (measured: seed 2 taught the
/// RoPE model only the key), so a change of summation order in a kernel could fail this test
/// without a bug. The AVX2 and AVX-512 paths were measured to train them to the same losses.
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
    // The arms of experiments/long-range.toml, one seed each.
    let names: Vec<&str> = runs.iter().map(|run| run["arm"].as_str().unwrap()).collect();
    assert_eq!(names, ["Transformer (learned positions)", "Transformer (RoPE)", "LSTM", "causal CNN"]);
    for run in runs {
        let bins = run["recall_bins"].as_array().unwrap();
        // 600 held-out lines, one query each, distances 3 ..= 59 in bins of 8.
        let total: u64 = bins.iter().map(|b| b[2].as_u64().unwrap()).sum();
        assert_eq!(total, 600, "{run}");
        assert_eq!(bins.first().unwrap()[0], 0);
        assert_eq!(bins.last().unwrap()[0], 56);
        assert!(bins.iter().all(|b| (0.0..=1.0).contains(&b[1].as_f64().unwrap())));
        if run["arm"] == "LSTM" || run["arm"] == "Transformer (RoPE)" {
            // Measured: both recall 100% of the queries at distances 0-7 (chance is 10%).
            assert!(bins[0][1].as_f64().unwrap() >= 0.8, "{} did not learn the recall: {run}", run["arm"]);
        }
    }
    assert!(r["charts"].as_array().unwrap().iter().any(|c| c["png"] == "recall_accuracy.png"));
    assert!(out_dir.join("long-range/recall_accuracy.svg").exists());
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn attention_walkthrough_matches_the_forward_pass() {
    if !data_present(&["tinyshakespeare.txt"]) {
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

/// Whether the shared data files an experiment reads are all there (read relative to the
/// repository, as its configs do); if not, [`common::skip`] says which is missing.
fn data_present(files: &[&str]) -> bool {
    match files.iter().map(|f| Path::new("../shared/data").join(f)).find(|p| !p.exists()) {
        Some(missing) => {
            common::skip(&format!("{} not found", missing.display()));
            false
        }
        None => true,
    }
}

/// Runs `explain run ID` at the quick budget into a fresh directory; its result and directory.
fn run_experiment(id: &str) -> (serde_json::Value, std::path::PathBuf) {
    let out_dir = std::env::temp_dir().join(format!("lmlab-explain-{id}-{}", std::process::id()));
    let out = lmlab().args(["explain", "run", id, "--threads", "2", "--json", "--out"]).arg(&out_dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["command"], format!("lmlab explain run {id} --budget quick"));
    // Every chart exists (an empty SVG name means PNG only), and the report takes the result.
    for c in r["charts"].as_array().unwrap() {
        for k in ["png", "svg"] {
            let name = c[k].as_str().unwrap();
            if k == "svg" && name.is_empty() {
                continue;
            }
            let f = out_dir.join(id).join(name);
            assert!(f.metadata().unwrap().len() > 1000, "{} is empty", f.display());
        }
    }
    let html = out_dir.join("report.html");
    let rep = lmlab().args(["report", "--dir"]).arg(&out_dir).arg("--out").arg(&html).output().unwrap();
    assert!(rep.status.success(), "{}", String::from_utf8_lossy(&rep.stderr));
    (r, out_dir)
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

#[test]
fn evaluation_metrics_score_outputs_and_perturbations() {
    let files = [
        "tinyshakespeare.txt",
        "multi30k/test_2016_flickr.en",
        "trec/train_5500.label",
        "trec/TREC_10.label",
        "squad/dev-v1.1.json",
    ];
    if !data_present(&files) {
        return;
    }
    let _ = common::minilm_dir(); // fetched when missing; part 4's reader needs it
    let (r, out_dir) = run_experiment("evaluation");
    assert_eq!(r["question"], 12);
    let d = &r["data"];
    // Perplexity is exp(loss) and close to the training run's own validation estimate.
    let p = &d["perplexity"];
    assert!((f(&p["perplexity"]) - f(&p["loss"]).exp()).abs() < 1e-9 * f(&p["perplexity"]));
    assert!(f(&p["perplexity"]) < 65.0, "{p}");
    assert!((f(&p["loss"]) - f(&d["model"]["val_loss"])).abs() < 0.2, "{p} {}", d["model"]);
    let scores = |part: &str, name: &str| -> serde_json::Value {
        d[part]["systems"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()["scores"].clone()
    };
    let minilm = d["minilm"]["used"] == true;
    // The ceilings: a text against itself.
    for s in [scores("generation", "true continuation"), scores("perturbations", "reference")] {
        assert!((f(&s["bleu"]) - 100.0).abs() < 1e-9 && (f(&s["chrf"]) - 100.0).abs() < 1e-9, "{s}");
        for k in ["rouge1", "rouge2", "rouge_l"] {
            assert!((f(&s[k]) - 1.0).abs() < 1e-12, "{k}: {s}");
        }
        if minilm {
            assert!(f(&s["bertscore_f1"]) > 0.9999 && f(&s["cosine"]) > 0.9999, "{s}");
        }
    }
    // Another passage is the same set of texts, rotated: the reference-free numbers agree.
    let (truth, other) = (scores("generation", "true continuation"), scores("generation", "another passage"));
    assert_eq!(truth["distinct_2"], other["distinct_2"]);
    assert!(f(&other["bleu"]) < 100.0);
    assert_eq!(d["generation"]["sampled"].as_array().unwrap().len(), 3);
    // Shuffling keeps every unigram (ROUGE-1 exactly 1) and breaks the n-grams.
    let (reference, shuffled) = (scores("perturbations", "reference"), scores("perturbations", "words shuffled"));
    assert!((f(&shuffled["rouge1"]) - 1.0).abs() < 1e-12, "{shuffled}");
    assert!(f(&shuffled["bleu"]) < f(&reference["bleu"]) && f(&shuffled["rouge2"]) < 1.0);
    // Repeating the caption: ROUGE-1 precision 1/2, recall 1, so F = 2/3; repetition appears.
    let repeated = scores("perturbations", "repeated twice");
    assert!((f(&repeated["rouge1"]) - 2.0 / 3.0).abs() < 1e-9, "{repeated}");
    assert!(f(&repeated["seq_rep_4"]) > f(&reference["seq_rep_4"]) + 0.3, "{repeated}");
    // The empty output: nothing to match, no fluency.
    let empty = scores("perturbations", "empty");
    for k in ["bleu", "chrf", "rouge1", "rouge_l", "distinct_2"] {
        assert_eq!(f(&empty[k]), 0.0, "{k}: {empty}");
    }
    assert!(empty["fluency_ppl"].is_null());
    if minilm {
        assert_eq!(f(&empty["bertscore_f1"]), 0.0);
    }
    // Another caption scores below the reference on every reference metric.
    let another = scores("perturbations", "another caption");
    for k in ["bleu", "chrf", "chrf_pp", "rouge1", "rouge2", "rouge_l"] {
        assert!(f(&another[k]) < f(&reference[k]), "{k}");
    }
    assert_eq!(r["table"]["rows"].as_array().unwrap().len(), 4 + 9);
    let findings: Vec<&str> = r["findings"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert!(findings.iter().any(|x| x.starts_with("Shuffling the words keeps ROUGE-1 at 1.000")), "{findings:?}");

    // Part 3: the classifier's predictions scored as the trainer scored them; the controls.
    let c = &d["classification"];
    let rows = c["systems"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let (model, majority, rare, big) = (&rows[0], &rows[1], &rows[2], &rows[3]);
    assert!((f(&model["accuracy"]) - f(&c["model"]["trainer_test_accuracy"])).abs() < 1e-9, "{c}");
    for row in rows {
        assert!((f(&row["micro_f1"]) - f(&row["accuracy"])).abs() < 1e-12, "micro-F1 is accuracy: {row}");
    }
    let counts: Vec<f64> = c["test_counts"].as_array().unwrap().iter().map(f).collect();
    let n: f64 = counts.iter().sum();
    let labels: Vec<&str> = c["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    let maj = labels.iter().position(|l| *l == c["majority_class"]).unwrap();
    assert!((f(&majority["accuracy"]) - counts[maj] / n).abs() < 1e-12, "{majority}");
    let n_rare = counts.iter().copied().filter(|&x| x > 0.0).fold(f64::MAX, f64::min);
    for row in [rare, big] {
        assert!((f(&row["accuracy"]) - (1.0 - n_rare / n)).abs() < 1e-12, "{row}");
    }
    assert_eq!(f(&rare["rarest_f1"]), 0.0);
    assert!(f(&rare["macro_f1"]) < f(&big["macro_f1"]) - 0.1, "{rare} {big}");
    // Part 4: the ceiling, what normalisation forgives, what F1 ignores, nothing.
    let s = &d["squad"];
    let answer = |shows: &str| s["answers"].as_array().unwrap().iter().find(|a| a["shows"] == shows).unwrap().clone();
    let gold = answer("the ceiling");
    assert_eq!((f(&gold["exact_match"]), f(&gold["f1"]), f(&gold["contains"])), (100.0, 100.0, 100.0), "{gold}");
    // Upper case changes a few words for good ("Fußach" → "FUSSACH"), the rest is forgiven.
    let recased = answer("surface form");
    assert!(f(&recased["exact_match"]) > 99.9 && f(&recased["exact_match"]) < 100.0, "{recased}");
    assert_eq!(f(&answer("word order")["f1"]), 100.0);
    let nothing = answer("no answer");
    // Three gold answers normalise to nothing (e.g. "the"): the empty answer matches them exactly.
    assert!(f(&nothing["exact_match"]) < 0.05 && f(&nothing["f1"]) == 0.0, "{nothing}");
    assert!(f(&answer("a longer span")["exact_match"]) < 20.0 && f(&answer("a longer span")["f1"]) > 40.0);
    assert!(f(&answer("a wrong number")["questions"]) < f(&s["scored"]));
    assert!(f(&s["scored"]) > 10000.0, "{}", s["scored"]);
    let more = r["more_tables"].as_array().unwrap();
    assert_eq!(more[0][1]["rows"].as_array().unwrap().len(), 4);
    assert_eq!(more[1][1]["rows"].as_array().unwrap().len(), 10);
    // Part 4's reader: its answers, sorted into kinds, add up to its exact match and F1.
    let reader = &d["reader"];
    if reader["skipped"].is_null() {
        assert_eq!(more.len(), 3);
        let kinds = reader["kinds"].as_array().unwrap();
        assert_eq!(kinds.len(), 5);
        let n = f(&reader["questions"]);
        assert!(n >= 100.0, "{reader}");
        assert_eq!(kinds.iter().map(|k| f(&k["questions"])).sum::<f64>(), n);
        let (em, f1) = (f(&reader["model"]["exact_match"]), f(&reader["model"]["f1"]));
        assert!((f(&kinds[0]["share"]) - em).abs() < 1e-9, "exact answers are the EM: {reader}");
        let weighted: f64 = kinds.iter().map(|k| f(&k["share"]) * f(&k["f1"]) / 100.0).sum();
        assert!((weighted - f1).abs() < 1e-6, "the kinds' F1 add up to the F1: {weighted} vs {f1}");
        assert!(f1 > em && f(&kinds[4]["f1"]) == 0.0, "{reader}");
        assert_eq!(more[2][1]["rows"].as_array().unwrap().len(), 6);
    } else {
        common::skip(&format!("question 12's reader was not trained: {}", reader["skipped"]));
        assert_eq!(more.len(), 2);
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn explaining_checks_hold_on_the_repos_models() {
    let files = [
        "tinyshakespeare.txt",
        "multi30k/test_2016_flickr.en",
        "llama2c/stories260K.bin",
        "llama2c/tok512.bin",
        "crows-pairs/crows_pairs_anonymized.csv",
        "trec/train_5500.label",
        "trec/TREC_10.label",
    ];
    if !data_present(&files) {
        return;
    }
    let (r, out_dir) = run_experiment("explaining");
    assert_eq!(r["question"], 13);
    let d = &r["data"];
    for e in d["explained"].as_array().unwrap() {
        let t = e["tokens"].as_array().unwrap().len();
        // Every attention row is a distribution over the keys up to its query.
        for l in e["attention"].as_array().unwrap() {
            assert_eq!((l["tq"].as_u64(), l["tk"].as_u64()), (Some(t as u64), Some(t as u64)));
            let p: Vec<f64> = l["probs"].as_array().unwrap().iter().map(f).collect();
            for (k, row) in p.chunks(t).enumerate() {
                let i = k % t;
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{} layer {} row {i}", e["model"], l["layer"]);
                assert!(row[i + 1..].iter().all(|&x| x == 0.0), "row {i} sees the future");
            }
        }
        // The logit lens' last layer is the model's own output: the prediction is its top token.
        let lens = e["lens"].as_array().unwrap();
        let out = lens.last().unwrap();
        assert_eq!(out["rank"], 0, "{e}");
        assert!((f(&out["prob"]) - f(&e["probability"])).abs() < 1e-5);
        assert!(f(&e["lens_output_diff"]) < 1e-5);
        assert_eq!(out["top"], e["prediction"]);
        // One attribution per input token; a row of head ablations per layer.
        let a = &e["attribution"];
        assert_eq!(a["integrated_gradients"].as_array().unwrap().len(), t);
        assert_eq!(a["grad_x_input"].as_array().unwrap().len(), t);
        let heads = e["ablation"]["heads"].as_array().unwrap();
        assert_eq!(heads.len(), e["attention"].as_array().unwrap().len());
        assert_eq!(heads[0].as_array().unwrap().len() as u64, e["attention"][0]["n_head"].as_u64().unwrap());
    }
    // stories260K's weights are fixed: it copies the boy's name, " T" at position 14.
    let stories = &d["explained"][0];
    assert_eq!((stories["model"].as_str(), stories["prediction"].as_str()), (Some("stories260K"), Some("\" T\"")));
    assert_eq!(stories["earlier_positions"], serde_json::json!([14]));
    // The character model has learned positions: integrated gradients add up (completeness).
    let a = &d["explained"][1]["attribution"];
    assert!(f(&a["delta"]).abs() < 0.1 * (f(&a["f_input"]) - f(&a["f_baseline"])).abs(), "{a}");
    // CrowS-Pairs: every pair is scored or counted as skipped, and the groups add up.
    for c in d["crows_pairs"].as_array().unwrap() {
        assert_eq!(c["read"], 1508);
        assert_eq!(c["scored"].as_u64().unwrap() + c["skipped"].as_u64().unwrap(), 1508);
        assert_eq!(c["skipped_too_long"].as_u64().unwrap() + c["skipped_unencodable"].as_u64().unwrap(), c["skipped"]);
        let rep = &c["report"];
        assert_eq!(rep["overall"]["pairs"], c["scored"]);
        for k in ["by_bias_type", "by_direction"] {
            let sum: u64 = rep[k].as_array().unwrap().iter().map(|g| g[1]["pairs"].as_u64().unwrap()).sum();
            assert_eq!(sum, c["scored"].as_u64().unwrap(), "{k}");
        }
        assert_eq!(c["unequal"].as_u64().unwrap() + c["equal"].as_u64().unwrap(), c["scored"].as_u64().unwrap());
        assert!((0.0..=1.0).contains(&f(&rep["overall"]["pct_stereotype"])));
    }
    assert_eq!(d["crows_pairs"][0]["scored"], 1508, "stories260K reads every pair");
    // The masked LM is scored over the tokens its sentences share (as many in each), so the
    // shorter sentence no longer wins by being shorter: well under the causal character model's
    // share, which its whole-sentence log-likelihood inflates.
    let mlm = &d["crows_pairs"][2];
    assert_eq!(mlm["model"], "char-mlm");
    assert!(mlm["score"].as_str().unwrap().starts_with("pseudo-log-likelihood"));
    let shorter = |c: &serde_json::Value| f(&c["shorter_wins"]) / f(&c["unequal"]);
    assert!(
        shorter(mlm) < 0.65 && shorter(&d["crows_pairs"][1]) > 0.75,
        "{} {}",
        shorter(mlm),
        shorter(&d["crows_pairs"][1])
    );
    // Group metrics: the groups partition the 500 test questions; overall accuracy is the run's.
    let g = &d["groups"]["report"];
    let n: u64 = g["groups"].as_array().unwrap().iter().map(|s| s["count"].as_u64().unwrap()).sum();
    assert_eq!((n, g["overall"]["count"].as_u64()), (500, Some(500)));
    assert!((f(&g["overall"]["accuracy"]) - f(&d["groups"]["test_accuracy"])).abs() < 1e-9, "{}", d["groups"]);
    // WEAT/SEAT when MiniLM is here: 14 tests, exact p-values where the partitions fit.
    if let Some(w) = d["weat"].as_array() {
        assert_eq!(w.len(), 14);
        for t in w {
            assert!((0.0..=1.0).contains(&f(&t["result"]["p_value"])));
        }
        let exact = w.iter().filter(|t| t["result"]["exact"] == true).count();
        assert!(exact >= 5, "{exact} exact tests");
    } else {
        eprintln!("WEAT/SEAT skipped: {}", d["weat"]["skipped"]);
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}
