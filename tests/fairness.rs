//! `lmlab eval fairness`: group metrics equal fairlearn's (tests/fixtures/fairness/groups.json,
//! scripts/make_fairness_fixtures.py groups); CrowS-Pairs log-likelihoods equal transformers'
//! on an exported GPT-2-layout model (crows_pairs.json); WEAT/SEAT effect sizes and exact
//! p-values equal a NumPy computation on the same all-MiniLM-L6-v2 embeddings (weat.json); bad
//! input is a clear error.

mod common;
use common::{fixture, lmlab_text};
use lmlab::eval::fairness::groups::{group_metrics, GroupScores};
use serde_json::Value;

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
