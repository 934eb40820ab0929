//! The Kneser-Ney n-gram baseline (`model::ngram`) against NLTK's `KneserNeyInterpolated`
//! (fixture: scripts/make_ngram_fixture.py): every probability of the fixture's queries and the
//! held-out cross-entropy, for orders 2–5 and two discounts.

use lmlab::model::ngram::KneserNey;

fn ids(s: &str) -> Vec<u32> {
    s.chars().map(|c| c as u32).collect()
}

#[test]
fn kneser_ney_equals_nltk() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ngram/kneser_ney.json");
    let fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let train = ids(fx["train"].as_str().unwrap());
    let held_out = ids(fx["held_out"].as_str().unwrap());
    let mut checked = 0;
    for m in fx["models"].as_array().unwrap() {
        let (order, d) = (m["order"].as_u64().unwrap() as usize, m["discount"].as_f64().unwrap());
        let model = KneserNey::fit(&train, order, d).unwrap();
        for q in m["queries"].as_array().unwrap() {
            let (ctx, w) = (ids(q["context"].as_str().unwrap()), ids(q["word"].as_str().unwrap())[0]);
            let want = q["prob"].as_f64().unwrap();
            let got = model.prob(w, &ctx);
            assert!((got - want).abs() <= 1e-12 + 1e-9 * want, "order {order}, d {d}, {q}: {got}");
            checked += 1;
        }
        let want = m["cross_entropy"].as_f64().unwrap();
        let got = model.cross_entropy(&held_out).unwrap();
        assert!((got - want).abs() < 1e-9, "order {order}, d {d}: cross-entropy {got} vs {want}");
    }
    assert!(checked > 900, "only {checked} queries");
}
