//! Pruning (`lmlab::compress::prune`): the masks of magnitude and Wanda, unstructured and N:M,
//! against a transcription of the reference code (scripts/make_prune_fixtures.py →
//! tests/fixtures/prune_*.json), and on whole models: which tensors are pruned, exact counts,
//! Wanda's block-by-block calibration, and the errors. Training with the zeros held and the
//! CLI: tests/prune_train.rs.

mod common;
use lmlab::compress::prune::score::{self, ColumnNorms};
use lmlab::compress::prune::{prunable_weights, prune_model, select, Method, Pattern, PruneSpec};
use lmlab::compress::quantize::{quantize_model, KeepFloat, Scheme};
use lmlab::model::transformer::{ModelConfig, Transformer};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = common::fixture(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// The sorted flat indices a mask prunes.
fn pruned_indices(mask: &[bool]) -> Vec<u64> {
    mask.iter().enumerate().filter(|(_, p)| **p).map(|(i, _)| i as u64).collect()
}

fn want(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

#[test]
fn wanda_masks_match_the_reference_code() {
    let f = fixture("prune_wanda.json");
    let mut checked = 0;
    for case in f["cases"].as_array().unwrap() {
        let (rows, cols) = (case["rows"].as_u64().unwrap() as usize, case["cols"].as_u64().unwrap() as usize);
        let (w, x) = (floats(&case["w"]), floats(&case["x"]));
        assert_eq!(w.len(), rows * cols);
        // The tokens arrive in two uneven batches: the norms must not depend on how.
        let mut norms = ColumnNorms::new(cols);
        let split = (x.len() / cols / 3) * cols;
        norms.add_batch(&x[..split], split / cols).unwrap();
        norms.add_batch(&x[split..], (x.len() - split) / cols).unwrap();
        assert_eq!(norms.tokens, x.len() / cols);
        let scores = score::wanda(&w, cols, &norms);
        for u in case["unstructured"].as_array().unwrap() {
            let s = u["sparsity"].as_f64().unwrap();
            let got = select::per_row(&scores, cols, s);
            assert_eq!(pruned_indices(&got), want(&u["pruned"]), "{} at sparsity {s}", case["name"]);
            checked += 1;
        }
        for nm in case["nm"].as_array().unwrap() {
            let (n, m) = (nm["n"].as_u64().unwrap() as usize, nm["m"].as_u64().unwrap() as usize);
            let got = select::n_of_m(&scores, cols, n, m);
            assert_eq!(pruned_indices(&got), want(&nm["pruned"]), "{} at {n}:{m}", case["name"]);
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * (6 + 2));
}

#[test]
fn magnitude_masks_match_the_reference_code() {
    let f = fixture("prune_magnitude.json");
    let mut all = Vec::new();
    for case in f["layers"].as_array().unwrap() {
        let cols = case["cols"].as_u64().unwrap() as usize;
        let w = floats(&case["w"]);
        let scores = score::magnitude(&w);
        all.extend_from_slice(&scores);
        for u in case["unstructured"].as_array().unwrap() {
            let s = u["sparsity"].as_f64().unwrap();
            let got = pruned_indices(&select::per_set(&scores, s));
            assert_eq!(got, want(&u["pruned"]), "{} at sparsity {s}", case["name"]);
            // The reference's `|W| <= sort(|W|)[k]` prunes one weight more: the (k+1)-th lowest.
            let reference = want(&u["reference_pruned"]);
            assert_eq!(reference.len(), got.len() + 1);
            assert!(got.iter().all(|i| reference.contains(i)));
        }
        for nm in case["nm"].as_array().unwrap() {
            let (n, m) = (nm["n"].as_u64().unwrap() as usize, nm["m"].as_u64().unwrap() as usize);
            assert_eq!(pruned_indices(&select::n_of_m(&scores, cols, n, m)), want(&nm["pruned"]));
        }
    }
    for g in f["global"].as_array().unwrap() {
        let s = g["sparsity"].as_f64().unwrap();
        assert_eq!(pruned_indices(&select::per_set(&all, s)), want(&g["pruned"]), "global at {s}");
    }
}

fn config(tie: bool) -> ModelConfig {
    ModelConfig {
        vocab_size: 13,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 32,
        tie_embeddings: tie,
        ..ModelConfig::default()
    }
}

fn model(tie: bool) -> Transformer {
    let mut m = Transformer::new(config(tie), 4).unwrap();
    m.init(3);
    m
}

fn spec(method: Method, pattern: Pattern) -> PruneSpec {
    PruneSpec { method, pattern, include_head: false }
}

fn zeros(m: &Transformer, name: &str) -> usize {
    m.params[m.layout.get(name).unwrap().range()].iter().filter(|w| **w == 0.0).count()
}

fn windows() -> Vec<Vec<u32>> {
    (0..6).map(|k| (0..16).map(|i| ((i * 5 + k * 3 + i / 3) % 13) as u32).collect()).collect()
}

#[test]
fn the_linear_weights_of_the_blocks_are_pruned_and_nothing_else() {
    for tie in [true, false] {
        let dense = model(tie);
        let mut m = model(tie);
        let half = Pattern::unstructured(0.5).unwrap();
        let report = prune_model(&mut m, &spec(Method::MagnitudeLayer, half), &[], &mut |_, _| {}).unwrap();
        // 2 layers × (c_attn, attn.c_proj, c_fc, mlp.c_proj); the head stays dense by default.
        assert_eq!(report.len(), 8);
        for t in m.layout.tensors.iter() {
            let pruned = report.iter().any(|r| r.name == t.name);
            let changed = m.params[t.range()] != dense.params[t.range()];
            assert_eq!(pruned, changed, "{}", t.name);
            if pruned {
                assert_eq!(zeros(&m, &t.name), t.numel() / 2, "{}", t.name);
            }
        }
        let names = prunable_weights(&m, true);
        assert_eq!(names.len(), if tie { 8 } else { 9 }, "an untied head joins with include_head");
    }
    let mut m = model(false);
    let s = PruneSpec { include_head: true, ..spec(Method::Magnitude, Pattern::unstructured(0.3).unwrap()) };
    let report = prune_model(&mut m, &s, &[], &mut |_, _| {}).unwrap();
    assert_eq!(report.last().unwrap().name, "lm_head.weight");
    assert!(zeros(&m, "lm_head.weight") > 0);
}

#[test]
fn global_magnitude_uses_one_threshold_over_all_layers() {
    let mut m = model(true);
    let names = prunable_weights(&m, false);
    let mut all: Vec<(f32, usize)> = Vec::new();
    for n in &names {
        let r = m.layout.get(n).unwrap().range();
        all.extend(m.params[r.clone()].iter().zip(r).map(|(w, i)| (w.abs(), i)));
    }
    let total = all.len();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let k = (total as f64 * 0.6) as usize;
    let report =
        prune_model(&mut m, &spec(Method::Magnitude, Pattern::unstructured(0.6).unwrap()), &[], &mut |_, _| {})
            .unwrap();
    assert_eq!(report.iter().map(|r| r.pruned).sum::<usize>(), k);
    assert!(all[..k].iter().all(|(_, i)| m.params[*i] == 0.0));
    assert!(all[k..].iter().all(|(_, i)| m.params[*i] != 0.0));
    // Layers are not pruned equally: the threshold is global.
    let shares: Vec<f64> = report.iter().map(|r| r.pruned as f64 / r.numel as f64).collect();
    assert!(shares.iter().any(|s| (s - 0.6).abs() > 0.01), "{shares:?}");
}

#[test]
fn wanda_prunes_each_row_and_calibrates_block_by_block() {
    let w = windows();
    let mut m = model(true);
    let mut calls = 0;
    let half = spec(Method::Wanda, Pattern::unstructured(0.5).unwrap());
    prune_model(&mut m, &half, &w, &mut |done, total| {
        calls += 1;
        assert_eq!(total, 2 * 2, "2 blocks × 2 batches of at most 4 windows");
        assert!(done <= total);
    })
    .unwrap();
    assert_eq!(calls, 4);
    for n in prunable_weights(&m, false) {
        let t = m.layout.get(&n).unwrap();
        for row in m.params[t.range()].chunks(t.shape[1]) {
            assert_eq!(row.iter().filter(|x| **x == 0.0).count(), t.shape[1] / 2, "{n}");
        }
    }
    // Block 1 is scored on inputs computed with block 0 already pruned: redo that by hand.
    let mut r = model(true);
    let block0: Vec<String> = prunable_weights(&r, false).into_iter().filter(|n| n.contains(".h.0.")).collect();
    for n in &block0 {
        let range = r.layout.get(n).unwrap().range();
        let src = m.params[range.clone()].to_vec();
        r.params[range].copy_from_slice(&src);
    }
    let name = "transformer.h.1.mlp.c_fc.weight";
    let t = r.layout.get(name).unwrap().clone();
    let norms = std::sync::Arc::new(std::sync::Mutex::new(ColumnNorms::new(t.shape[1])));
    let sink = norms.clone();
    r.set_linear_observer(Some(std::sync::Arc::new(move |start: usize, x: &[f32], n: usize| {
        if start == t.offset {
            sink.lock().unwrap().add_batch(x, n).unwrap();
        }
    })));
    for win in &w {
        r.forward_lm(win, None, 1, win.len(), false, 0).unwrap();
    }
    let t = r.layout.get(name).unwrap();
    let scores = score::wanda(&r.params[t.range()], t.shape[1], &norms.lock().unwrap());
    let by_hand = select::per_row(&scores, t.shape[1], 0.5);
    let got: Vec<bool> = m.params[t.range()].iter().map(|x| *x == 0.0).collect();
    assert_eq!(got, by_hand);
}

#[test]
fn n_of_m_keeps_n_in_every_group_with_both_scores() {
    for method in [Method::Magnitude, Method::MagnitudeLayer, Method::Wanda] {
        for (n, mm) in [(2, 4), (4, 8)] {
            let mut m = model(true);
            let p = Pattern::parse_nm(&format!("{n}:{mm}")).unwrap();
            assert_eq!(p.sparsity(), 0.5);
            prune_model(&mut m, &spec(method, p), &windows(), &mut |_, _| {}).unwrap();
            for name in prunable_weights(&m, false) {
                let t = m.layout.get(&name).unwrap();
                for row in m.params[t.range()].chunks(t.shape[1]) {
                    for g in row.chunks(mm) {
                        assert_eq!(g.iter().filter(|x| **x != 0.0).count(), n, "{method:?} {n}:{mm} {name}");
                    }
                }
            }
        }
    }
}

#[test]
fn wanda_differs_from_magnitude_and_sparsity_zero_changes_nothing() {
    let dense = model(true);
    let mut none = model(true);
    let zero = Pattern::unstructured(0.0).unwrap();
    for method in [Method::Magnitude, Method::MagnitudeLayer, Method::Wanda] {
        prune_model(&mut none, &spec(method, zero), &windows(), &mut |_, _| {}).unwrap();
    }
    assert_eq!(none.params, dense.params);
    let (mut a, mut b) = (model(true), model(true));
    let half = Pattern::unstructured(0.5).unwrap();
    prune_model(&mut a, &spec(Method::Wanda, half), &windows(), &mut |_, _| {}).unwrap();
    prune_model(&mut b, &spec(Method::MagnitudeLayer, half), &[], &mut |_, _| {}).unwrap();
    assert_ne!(a.params, b.params, "activation norms change which weights go");
}

#[test]
fn bad_specs_are_clear_errors() {
    for s in [-0.1, 1.0, 1.5, f64::NAN] {
        let e = Pattern::unstructured(s).unwrap_err().to_string();
        assert!(e.contains("sparsity must be in [0, 1)"), "{e}");
    }
    for nm in ["2:2", "4:2", "0:4", "2-4", "a:b", "2:"] {
        let e = Pattern::parse_nm(nm).unwrap_err().to_string();
        assert!(e.contains("bad N:M pattern"), "{nm}: {e}");
    }
    assert!(Method::parse("sparsegpt").unwrap_err().to_string().contains("unknown pruning method"));
    let mut m = model(true);
    let e = prune_model(&mut m, &spec(Method::Wanda, Pattern::unstructured(0.5).unwrap()), &[], &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("calibration"), "{e}");
    // 32 inputs are no whole number of groups of 12.
    let e = prune_model(&mut m, &spec(Method::Magnitude, Pattern::parse_nm("3:12").unwrap()), &[], &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a multiple of M = 12"), "{e}");
    let mut q = Transformer::new_inference(config(true), 1).unwrap();
    q.init(1);
    quantize_model(&mut q, Scheme::parse("q8_0").unwrap(), KeepFloat::default()).unwrap();
    let e = prune_model(&mut q, &spec(Method::Magnitude, Pattern::unstructured(0.5).unwrap()), &[], &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot prune a quantized model"), "{e}");
}

#[test]
fn encoder_decoder_models_prune_by_magnitude_but_not_by_wanda() {
    use lmlab::model::transformer::Arch;
    let cfg = ModelConfig { arch: Arch::EncoderDecoder, ..config(true) };
    let mut m = Transformer::new(cfg, 1).unwrap();
    m.init(2);
    let half = Pattern::unstructured(0.5).unwrap();
    let report = prune_model(&mut m, &spec(Method::MagnitudeLayer, half), &[], &mut |_, _| {}).unwrap();
    let names: Vec<&str> = report.iter().map(|r| r.name.as_str()).collect();
    assert!(names.iter().any(|n| n.ends_with("cross_attn.c_q.weight")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("cross_attn.c_kv.weight")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("encoder.")) && names.iter().any(|n| n.starts_with("decoder.")));
    assert!(report.iter().all(|r| r.pruned == r.numel / 2));
    let e = prune_model(&mut m, &spec(Method::Wanda, half), &windows(), &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("decoder language models only"), "{e}");
}
