//! Classification metrics against scikit-learn's `classification_report` and `confusion_matrix`
//! (fixtures from scripts/make_classification_fixtures.py): every number to 1e-12, the text
//! report character for character.

mod common;
use lmlab::eval::classification::{classification_report, ZeroDivision};
use serde_json::Value;

fn close(what: &str, got: f64, want: &Value) {
    match want.as_f64() {
        Some(w) => assert!((got - w).abs() <= 1e-12, "{what}: {got} vs sklearn {w}"),
        None => assert!(got.is_nan(), "{what}: {got} vs sklearn nan"),
    }
}

#[test]
fn matches_sklearn_on_every_case() {
    let text = std::fs::read_to_string(common::fixture("metrics/classification.json")).unwrap();
    let fx: Value = serde_json::from_str(&text).unwrap();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let strs =
            |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect::<Vec<_>>();
        let (yt, yp) = (strs(&c["y_true"]), strs(&c["y_pred"]));
        let yt: Vec<&str> = yt.iter().map(|s| s.as_str()).collect();
        let yp: Vec<&str> = yp.iter().map(|s| s.as_str()).collect();
        let labels = (!c["labels"].is_null()).then(|| strs(&c["labels"]));
        let labels: Option<Vec<&str>> = labels.as_ref().map(|l| l.iter().map(|s| s.as_str()).collect());
        let zd: ZeroDivision = c["zero_division"].as_str().unwrap().parse().unwrap();
        let r = classification_report(&yt, &yp, labels.as_deref(), zd).unwrap();

        let want = &c["report"];
        for (label, sc) in r.labels.iter().zip(&r.classes) {
            let w = &want[label];
            assert!(w.is_object(), "{name}: sklearn has no row {label:?}");
            close(&format!("{name} {label} precision"), sc.precision, &w["precision"]);
            close(&format!("{name} {label} recall"), sc.recall, &w["recall"]);
            close(&format!("{name} {label} f1"), sc.f1, &w["f1-score"]);
            assert_eq!(sc.support as f64, w["support"].as_f64().unwrap(), "{name} {label} support");
        }
        let got = r.to_sklearn_json();
        assert_eq!(
            got.as_object().unwrap().keys().collect::<Vec<_>>(),
            want.as_object().unwrap().keys().collect::<Vec<_>>(),
            "{name}: rows and their order"
        );
        close(&format!("{name} accuracy"), r.micro.f1, &want["accuracy"]);
        for (key, sc) in [("macro avg", &r.macro_avg), ("weighted avg", &r.weighted_avg)] {
            close(&format!("{name} {key} precision"), sc.precision, &want[key]["precision"]);
            close(&format!("{name} {key} recall"), sc.recall, &want[key]["recall"]);
            close(&format!("{name} {key} f1"), sc.f1, &want[key]["f1-score"]);
        }
        let cm: Vec<Vec<u64>> = serde_json::from_value(c["confusion"].clone()).unwrap();
        assert_eq!(r.confusion, cm, "{name}: confusion matrix");
        assert_eq!(r.to_text(2), c["text2"].as_str().unwrap(), "{name}: text report (digits 2)");
        assert_eq!(r.to_text(4), c["text4"].as_str().unwrap(), "{name}: text report (digits 4)");
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let msg = |r: anyhow::Result<_>| format!("{:#}", r.unwrap_err());
    let e = msg(classification_report(&["a", "b"], &["a"], None, ZeroDivision::Warn));
    assert!(e.contains("2 gold labels but 1 predictions"), "{e}");
    let e = msg(classification_report(&[], &[], None, ZeroDivision::Warn));
    assert!(e.contains("no items"), "{e}");
    let e = msg(classification_report(&["a", "b"], &["a", "c"], Some(&["a", "b"]), ZeroDivision::Warn));
    assert!(e.contains("item 2") && e.contains("\"c\""), "{e}");
    let e = msg(classification_report(&["a"], &["a"], Some(&["a", "a"]), ZeroDivision::Warn));
    assert!(e.contains("twice"), "{e}");
    assert!("maybe".parse::<ZeroDivision>().is_err());
}
