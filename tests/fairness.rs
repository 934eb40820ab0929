//! `lmlab eval fairness`: group metrics equal fairlearn's (tests/fixtures/fairness/groups.json,
//! scripts/make_fairness_fixtures.py groups); CrowS-Pairs log-likelihoods equal transformers'
//! on an exported GPT-2-layout model (crows_pairs.json); WEAT/SEAT effect sizes and exact
//! p-values equal a NumPy computation on the same all-MiniLM-L6-v2 embeddings (weat.json); bad
//! input is a clear error.

mod common;
use common::{fixture, lmlab_text};
use lmlab::config::{RunConfig, Task};
use lmlab::data::{CharTokenizer, Tokenizer};
use lmlab::eval::fairness::groups::{group_metrics, GroupScores};
use lmlab::eval::fairness::{crows_pairs, weat};
use lmlab::infer::embed::Embedder;
use lmlab::io::checkpoint;
use lmlab::model::transformer::{Arch, ModelConfig, Transformer};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::Value;
use std::path::Path;

fn load(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("fairness").join(name)).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `got` equals the fixture's number (null = NaN) within 1e-12.
fn same(what: &str, got: f64, want: &Value) {
    match want.as_f64() {
        None => assert!(got.is_nan(), "{what}: got {got}, fairlearn gives NaN"),
        Some(w) => assert!((got - w).abs() <= 1e-12, "{what}: got {got}, fairlearn gives {w}"),
    }
}

fn same_scores(case: &str, got: &GroupScores, want: &Value) {
    let fields = [
        ("accuracy", got.accuracy),
        ("precision", got.precision),
        ("recall", got.recall),
        ("f1", got.f1),
        ("macro_precision", got.macro_precision),
        ("macro_recall", got.macro_recall),
        ("macro_f1", got.macro_f1),
        ("selection_rate", got.selection_rate),
        ("tpr", got.tpr),
        ("fpr", got.fpr),
    ];
    for (name, v) in fields {
        same(&format!("{case} group {} {name}", got.group), v, &want[name]);
    }
}

#[test]
fn group_metrics_equal_fairlearn() {
    let fx = load("groups.json");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let (gold, pred, groups) = (strings(&c["gold"]), strings(&c["pred"]), strings(&c["groups"]));
        let r = group_metrics(&refs(&gold), &refs(&pred), &refs(&groups), c["positive"].as_str().unwrap()).unwrap();
        let want = &c["expected"];
        let want_groups = want["groups"].as_object().unwrap();
        assert_eq!(r.groups.len(), want_groups.len(), "{name}: number of groups");
        for g in &r.groups {
            same_scores(name, g, &want_groups[&g.group]);
            assert_eq!(g.count, groups.iter().filter(|x| **x == g.group).count());
        }
        same_scores(name, &r.overall, &want["overall"]);
        for (field, v) in [
            ("demographic_parity_difference", r.demographic_parity_difference),
            ("demographic_parity_ratio", r.demographic_parity_ratio),
            ("equalized_odds_difference", r.equalized_odds_difference),
        ] {
            same(&format!("{name} {field}"), v, &want[field]);
        }
    }
}

/// Writes `lines` (one item each) to `dir/name`.
fn write_lines(dir: &std::path::Path, name: &str, lines: &[String]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p.display().to_string()
}

#[test]
fn groups_command_json_and_errors() {
    let fx = load("groups.json");
    let c = &fx["cases"][1]; // multiclass, positive HUM, three groups
    let dir = tempfile::tempdir().unwrap();
    let gold = write_lines(dir.path(), "gold.txt", &strings(&c["gold"]));
    let pred = write_lines(dir.path(), "pred.txt", &strings(&c["pred"]));
    // The groups as a CSV column, with another column beside it.
    let groups = strings(&c["groups"]);
    let csv: Vec<String> = std::iter::once("id,length".to_string())
        .chain(groups.iter().enumerate().map(|(i, g)| format!("{i},\"{g}\"")))
        .collect();
    let csv = write_lines(dir.path(), "groups.csv", &csv);
    let args = ["eval", "fairness", "groups", "--gold", &gold, "--pred", &pred, "--groups", &csv];
    let (ok, out, err) =
        lmlab_text(&[&args[..], &["--group-column", "length", "--positive", "HUM", "--json"]].concat());
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    same(
        "cli dp difference",
        v["demographic_parity_difference"].as_f64().unwrap(),
        &c["expected"]["demographic_parity_difference"],
    );
    same(
        "cli eo difference",
        v["equalized_odds_difference"].as_f64().unwrap(),
        &c["expected"]["equalized_odds_difference"],
    );
    assert_eq!(v["groups"].as_array().unwrap().len(), 3);
    // A column the CSV does not have.
    let (ok, _, err) = lmlab_text(&[&args[..], &["--group-column", "sex", "--positive", "HUM"]].concat());
    assert!(!ok && err.contains("no column \"sex\"") && err.contains("its columns: id, length"), "{err}");
    // A class that does not occur.
    let (ok, _, err) = lmlab_text(&[&args[..], &["--group-column", "length", "--positive", "PERSON"]].concat());
    assert!(!ok && err.contains("\"PERSON\" occurs in neither"), "{err}");
    // Files that do not align.
    let short = write_lines(dir.path(), "short.txt", &strings(&c["pred"])[..10]);
    let (ok, _, err) = lmlab_text(&[
        "eval",
        "fairness",
        "groups",
        "--gold",
        &gold,
        "--pred",
        &short,
        "--groups",
        &csv,
        "--group-column",
        "length",
        "--positive",
        "HUM",
    ]);
    assert!(!ok && err.contains("10 predictions") && err.contains("aligned"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// CrowS-Pairs

/// A random decoder (or encoder) with `vocab` tokens, seeded.
fn random_model(arch: Arch, vocab: usize, block: usize, seed: u64) -> Transformer {
    let cfg = ModelConfig {
        arch,
        vocab_size: vocab,
        block_size: block,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        ..ModelConfig::default()
    };
    let mut m = Transformer::new(cfg, 2).unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let values = common::rand_vec(&mut rng, m.params.len(), 0.5);
    m.params.copy_from_slice(&values);
    // Norm gains around 1 (uniform in 1 ± 0.4).
    let gains = m.layout.tensors.iter().filter(|t| t.name.contains(".ln_") && t.name.ends_with(".weight"));
    for r in gains.map(|t| t.range()).collect::<Vec<_>>() {
        m.params[r].iter_mut().for_each(|x| *x = 1.0 + 0.8 * *x);
    }
    m
}

fn char_checkpoint(dir: &Path, arch: Arch) -> (Transformer, Tokenizer) {
    let tok = CharTokenizer::from_corpus("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,'").unwrap();
    let m = random_model(arch, tok.vocab_size(), 96, 7);
    let tok = Tokenizer::Char(tok);
    // An encoder checkpoint is a classification run's.
    let mut run = RunConfig { model: m.config.clone(), ..RunConfig::default() };
    if arch == Arch::Encoder {
        run.data.task = Task::Classify;
        (run.data.train, run.data.test, run.data.format) = ("train.tsv".into(), "test.tsv".into(), "trec".into());
        run.data.max_len = 64;
    }
    let opt = run.optim.build(&m.layout).unwrap();
    checkpoint::save(dir, &m, &opt, &run, &tok, &checkpoint::TrainState::fresh(&run)).unwrap();
    (m, tok)
}

fn write_csv(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// `lmlab eval fairness crows-pairs --json` on `ckpt` against the fixture `fx` of the reference
/// (`name`): the same pairs, token counts and scores within 1e-5 relative, the same
/// pct_stereotype and likelihood_diff. Returns the command's JSON.
fn crows_command_equals_fixture(fx: &Value, ckpt: &Path, data: &Path, name: &str) -> Value {
    let limit = fx["limit"].as_u64().unwrap().to_string();
    let (ok, out, err) = lmlab_text(&[
        "eval",
        "fairness",
        "crows-pairs",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--limit",
        &limit,
        "--json",
    ]);
    assert!(ok, "{err}");
    let got: Value = serde_json::from_str(&out).unwrap();
    let (got_pairs, want_pairs) = (got["pairs"].as_array().unwrap(), fx["pairs"].as_array().unwrap());
    assert_eq!(got_pairs.len(), want_pairs.len());
    let mut worst = 0.0f64;
    for (g, w) in got_pairs.iter().zip(want_pairs) {
        assert_eq!(g["id"], w["id"]);
        assert_eq!((&g["tokens_more"], &g["tokens_less"]), (&w["tokens_more"], &w["tokens_less"]), "pair {}", w["id"]);
        for k in ["ll_more", "ll_less"] {
            let (a, b) = (g[k].as_f64().unwrap(), w[k].as_f64().unwrap());
            let rel = (a - b).abs() / b.abs();
            assert!(rel < 1e-5, "pair {} {k}: lmlab {a}, {name} {b} (relative {rel:.2e})", w["id"]);
            worst = worst.max(rel);
        }
    }
    eprintln!("CrowS-Pairs scores: max relative difference to {name} {worst:.2e}");
    assert_eq!(got["overall"]["pct_stereotype"].as_f64().unwrap(), fx["pct_stereotype"].as_f64().unwrap());
    let diff = got["overall"]["likelihood_diff"].as_f64().unwrap();
    assert!((diff - fx["likelihood_diff"].as_f64().unwrap()).abs() < 1e-4, "{diff}");
    got
}

#[test]
fn crows_pairs_equal_transformers_on_an_exported_gpt2() {
    let Some(data) = common::shared_data("crows-pairs/crows_pairs_anonymized.csv") else { return };
    let fx = load("crows_pairs.json");
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let src = fixture("fairness").join(fx["model"].as_str().unwrap());
    let (ok, _, err) = lmlab_text(&["import", "--hf", src.to_str().unwrap(), "--out", ckpt.to_str().unwrap()]);
    assert!(ok, "{err}");
    let got = crows_command_equals_fixture(&fx, &ckpt, &data, "transformers");
    // The per-bias-type summaries partition the pairs.
    let by_type: u64 = got["by_bias_type"].as_array().unwrap().iter().map(|e| e[1]["pairs"].as_u64().unwrap()).sum();
    assert_eq!(by_type, fx["pairs"].as_array().unwrap().len() as u64);
}

#[test]
fn without_bos_the_first_token_is_context() {
    let dir = tempfile::tempdir().unwrap();
    let (mut m, tok) = char_checkpoint(dir.path(), Arch::Decoder);
    let text = "The nurse said she was tired.";
    let ids = crows_pairs::scoring_ids(&tok, text).unwrap();
    assert_eq!(ids, tok.encode(text).unwrap(), "a char vocabulary has no BOS/EOS to prepend");
    let (ll, n) = crows_pairs::log_likelihood(&mut m, &ids).unwrap();
    assert_eq!(n, ids.len() - 1);
    // The same sum from the model's own cross-entropy: −mean loss × scored tokens.
    let targets: Vec<i32> = ids[1..].iter().map(|&i| i as i32).collect();
    let loss = m.forward_lm(&ids[..n], Some(&targets), 1, n, false, 0).unwrap().unwrap();
    assert!((ll + loss as f64 * n as f64).abs() < 1e-4 * ll.abs(), "{ll} vs {}", -(loss as f64) * n as f64);
    // Ids outside the vocabulary and sequences past the context are errors, not panics.
    let e = format!("{:#}", crows_pairs::log_likelihood(&mut m, &[0, 500]).unwrap_err());
    assert!(e.contains("token id 500 is outside the model's vocabulary"), "{e}");
    let long = vec![1u32; 200];
    let e = format!("{:#}", crows_pairs::log_likelihood(&mut m, &long).unwrap_err());
    assert!(e.contains("at most 96"), "{e}");
}

#[test]
fn crows_pairs_bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    char_checkpoint(&ck, Arch::Decoder);
    let ck = ck.to_str().unwrap();
    let good = write_csv(
        dir.path(),
        "good.csv",
        ",sent_more,sent_less,stereo_antistereo,bias_type\n0,\"The old man, slow.\",The young man slow.,stereo,age\n\
         1,Women can't drive.,Men can't drive.,stereo,gender\n2,He paid 10 dollars.,She paid ten dollars.,stereo,gender\n",
    );
    let run = |csv: &str, extra: &[&str]| {
        lmlab_text(&[&["eval", "fairness", "crows-pairs", "--checkpoint", ck, "--data", csv][..], extra].concat())
    };
    // A digit the character vocabulary lacks: an error naming the pair, or skipped on request.
    let (ok, _, err) = run(&good, &[]);
    assert!(!ok && err.contains("pair 2 (sent_more)") && err.contains("'1'"), "{err}");
    let (ok, out, err) = run(&good, &["--skip-unscorable", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["overall"]["pairs"], 2);
    assert_eq!(v["skipped"].as_array().unwrap().len(), 1);
    assert_eq!(v["by_bias_type"][0][0], "age");
    // A CSV without one of the columns.
    let bad = write_csv(dir.path(), "bad.csv", "sent_more,stereo_antistereo,bias_type\na,stereo,age\n");
    let (ok, _, err) = run(&bad, &[]);
    assert!(!ok && err.contains("no column \"sent_less\""), "{err}");
    // An encoder classifier: neither likelihood nor pseudo-log-likelihood to score with.
    let enc = dir.path().join("enc");
    char_checkpoint(&enc, Arch::Encoder);
    let (ok, _, err) =
        lmlab_text(&["eval", "fairness", "crows-pairs", "--checkpoint", enc.to_str().unwrap(), "--data", &good]);
    assert!(!ok && err.contains("neither a causal language model nor a masked LM"), "{err}");
}

/// `lmlab import --hf` of the small random BertForMaskedLM of crows_pairs_mlm.json.
fn imported_bert_mlm(dir: &Path) -> (Value, std::path::PathBuf) {
    let fx = load("crows_pairs_mlm.json");
    let ckpt = dir.join("ckpt");
    let src = fixture("fairness").join(fx["model"].as_str().unwrap());
    let (ok, out, err) = lmlab_text(&["import", "--hf", src.to_str().unwrap(), "--out", ckpt.to_str().unwrap()]);
    assert!(ok && out.contains("with its masked-LM head"), "{out}{err}");
    let (ok, out, err) = lmlab_text(&["info", ckpt.to_str().unwrap()]);
    assert!(ok && out.contains("model: Encoder (Mlm head)"), "{out}{err}");
    (fx, ckpt)
}

/// A masked LM's CrowS-Pairs scores (pseudo-log-likelihood of the shared tokens, each masked in
/// turn) equal Nangia et al.'s metric.py run on transformers, pair by pair.
#[test]
fn crows_pairs_of_a_masked_lm_equal_metric_py() {
    let Some(data) = common::shared_data("crows-pairs/crows_pairs_anonymized.csv") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (fx, ckpt) = imported_bert_mlm(dir.path());
    crows_command_equals_fixture(&fx, &ckpt, &data, "metric.py");
}

/// The masked-LM head's loss and its gradients (the head, the tied embedding it shares with the
/// input, a query projection below it) equal transformers' BertForMaskedLM with labels.
#[test]
fn masked_lm_loss_and_gradients_equal_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let (fx, ckpt) = imported_bert_mlm(dir.path());
    let case = &fx["mlm_loss"];
    let rows = |k: &str| -> Vec<Vec<i64>> {
        case[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect())
            .collect()
    };
    let (inputs, labels) = (rows("inputs"), rows("labels"));
    let (b, t) = (inputs.len(), inputs[0].len());
    let idx: Vec<u32> = inputs.concat().iter().map(|&x| x as u32).collect();
    let targets: Vec<i32> = labels.concat().iter().map(|&x| if x < 0 { -1 } else { x as i32 }).collect();
    let mut m = checkpoint::load(&ckpt, b, false).unwrap().model;
    assert!(m.is_masked_lm());
    m.zero_grad();
    let loss = m.forward_mlm(&idx, None, Some(&targets), b, t, true, 0).unwrap().unwrap();
    let want = case["loss"].as_f64().unwrap();
    assert!(((loss as f64 - want) / want).abs() < 1e-5, "loss: lmlab {loss}, transformers {want}");
    m.backward().unwrap();
    let c = m.config.n_embd;
    for (bert, ours, rows_of_ours) in [
        ("cls.predictions.transform.dense.weight", "mlm.dense.weight", None),
        ("cls.predictions.transform.LayerNorm.weight", "mlm.norm.weight", None),
        ("cls.predictions.bias", "mlm.bias", None),
        ("bert.embeddings.word_embeddings.weight", "transformer.wte.weight", None),
        // The query projection is the first C rows of lmlab's fused c_attn.
        ("bert.encoder.layer.0.attention.self.query.weight", "transformer.h.0.attn.c_attn.weight", Some(c * c)),
    ] {
        let want: Vec<f64> = case["grads"][bert].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let r = m.layout.get(ours).unwrap().range();
        let got = &m.grads[r.start..r.start + rows_of_ours.unwrap_or(r.len())];
        assert_eq!(got.len(), want.len(), "{ours}");
        let scale = want.iter().fold(0.0f64, |a, x| a.max(x.abs()));
        let worst = got.iter().zip(&want).fold(0.0f64, |a, (&g, &w)| a.max((g as f64 - w).abs()));
        assert!(worst <= 1e-4 * scale, "{ours}: max difference {worst:.3e} against max |grad| {scale:.3e}");
    }
}

// ---------------------------------------------------------------------------------------------
// WEAT / SEAT

/// all-MiniLM-L6-v2's directory (fetched once if missing), or None after a SKIPPED line.
fn minilm() -> Option<std::path::PathBuf> {
    common::minilm_dir()
}

#[test]
fn weat_and_seat_equal_numpy() {
    let Some(model) = minilm() else { return };
    let fx = load("weat.json");
    let (ok, out, err) =
        lmlab_text(&["eval", "fairness", "weat", "--test", "all", "--model", model.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let got: Value = serde_json::from_str(&out).unwrap();
    let (got, want) = (got["tests"].as_array().unwrap(), fx["results"].as_array().unwrap());
    assert_eq!(got.len(), want.len(), "one result per test and unit");
    let mut exact = 0;
    for w in want {
        let name = w["test"].as_str().unwrap();
        let g = &got.iter().find(|g| g["test"] == name).unwrap_or_else(|| panic!("no result for {name}"))["result"];
        for k in ["effect_size", "statistic"] {
            let (a, b) = (g[k].as_f64().unwrap(), w[k].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{name} {k}: lmlab {a}, NumPy {b}");
        }
        let sizes: Vec<u64> = g["sizes"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        let want_sizes: Vec<u64> = w["sizes"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert_eq!(sizes, want_sizes, "{name}");
        match w["p_value"].as_f64() {
            Some(p) => {
                assert_eq!(g["exact"], true, "{name}");
                assert_eq!(g["partitions"], w["partitions"], "{name}");
                assert_eq!(g["p_value"].as_f64().unwrap(), p, "{name}: exact p-value");
                exact += 1;
            }
            None => {
                assert_eq!(g["exact"], false, "{name}: too many partitions to count");
                assert_eq!(g["partitions"], 100_000, "{name}");
            }
        }
    }
    assert_eq!(exact, 5, "WEAT 6-10 have exact p-values");
}

#[test]
fn permutation_estimate_agrees_with_the_exact_p_value() {
    let Some(model) = minilm() else { return };
    let fx = load("weat.json");
    let mut embedder = Embedder::load(&model, 8).unwrap();
    for name in ["weat7", "weat8"] {
        let (t, unit) = weat::find_test(name).unwrap();
        let mut embed = |texts: &[String]| embedder.embed(texts);
        let want = fx["results"].as_array().unwrap().iter().find(|r| r["test"] == name).unwrap();
        let p = want["p_value"].as_f64().unwrap();
        let n = 4000u64;
        let r = weat::run_test(&t, unit, &mut embed, n, 11).unwrap();
        assert!(!r.exact && r.partitions == n);
        // Binomial standard error of an estimate from n draws.
        let se = (p * (1.0 - p) / n as f64).sqrt();
        assert!((r.p_value - p).abs() < 5.0 * se + 1.0 / n as f64, "{name}: estimate {} vs exact {p}", r.p_value);
        // The same seed gives the same estimate.
        assert_eq!(weat::run_test(&t, unit, &mut embed, n, 11).unwrap().p_value, r.p_value);
    }
}

#[test]
fn unknown_weat_test_lists_the_tests() {
    let (ok, _, err) = lmlab_text(&["eval", "fairness", "weat", "--test", "weat3"]);
    assert!(!ok && err.contains("unknown test \"weat3\"") && err.contains("weat1, weat2, weat6"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The classifier predictions examples/trec_groups.rs feeds to `groups`

#[test]
fn predict_pads_batches_like_one_text_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("q.txt");
    let questions =
        ["What is the capital of France ?", "Who wrote Hamlet ?", "How far is the moon ?", "When did it end ?"];
    std::fs::write(&corpus, questions.join("\n").repeat(20)).unwrap();
    let tok = lmlab::data::bpe::BpeTokenizer::train(&[corpus], 300).unwrap();
    // Two classes (the default); batches of at most 2 texts, so the five are padded in three.
    let mut m = random_model(Arch::Encoder, tok.vocab_size(), 16, 3);
    let texts: Vec<String> = questions.iter().map(|s| s.to_string()).chain(["x".to_string()]).collect();
    let wrapped = lmlab::data::Tokenizer::Bpe(Box::new(tok.clone()));
    let got = lmlab::train::classify::predict(&mut m, &wrapped, &texts, 12).unwrap();
    // Each text alone: [CLS] + at most 11 tokens, no padding, argmax of the two logits.
    for (text, &p) in texts.iter().zip(&got) {
        let mut ids = vec![lmlab::data::bpe::BOS];
        ids.extend(tok.encode(text).unwrap().into_iter().take(11));
        let mask = vec![true; ids.len()];
        m.forward_classify(&ids, Some(&mask), None, 1, ids.len(), false, 0).unwrap();
        let l = m.logits();
        assert_eq!(p, usize::from(l[1] > l[0]), "{text:?}: logits {l:?}");
    }
}
