//! `lmlab inspect` (src/inspect/interpret/): attributions equal to Captum's, the logit lens and
//! head / feed-forward ablation equal to a PyTorch computation (scripts/make_inspect_fixtures.py,
//! float64, on the tiny GPT fixtures), the input gradient against finite differences, attention
//! maps and rollout, and the command line with its errors.

mod common;
use common::gpt_fixture::{gpt_from_fixture, GptFixture};
use lmlab::data::{CharTokenizer, Tokenizer};
use lmlab::inspect::interpret::ablation::ablate_all;
use lmlab::inspect::interpret::attention::{attention_maps, rollout};
use lmlab::inspect::interpret::attribution::{attribute, gauss_legendre, to_html, Method, Target};
use lmlab::inspect::interpret::lens::logit_lens;
use lmlab::inspect::interpret::pca::pca;
use lmlab::io::checkpoint;
use lmlab::model::transformer::{AblationMode, Arch, AttentionKind, ModelConfig, Transformer};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(common::fixture("inspect/reference.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn model_of(case: &Value, attention: AttentionKind) -> (Transformer, Vec<u32>) {
    let fx = GptFixture::load(&format!("{}.safetensors", case["name"].as_str().unwrap()));
    let m = gpt_from_fixture(&fx.file(), attention);
    let ids = case["tokens"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    (m, ids)
}

/// A small randomly initialised model of `arch` (2 layers, 2 heads, 16 wide, no dropout).
fn tiny(arch: Arch, vocab_size: usize, block_size: usize, num_classes: usize, seed: u64) -> Transformer {
    let cfg = ModelConfig {
        arch,
        vocab_size,
        block_size,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        num_classes,
        dropout: 0.0,
        ..ModelConfig::default()
    };
    let mut m = Transformer::new(cfg, 1).unwrap();
    m.init(seed);
    m
}

/// |got − want| ≤ rtol · max|want| over a vector.
fn close(what: &str, got: &[f64], want: &[f64], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-12f64, |m, x| m.max(x.abs()));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= rtol * scale, "{what}[{i}]: {a} vs {b} (scale {scale:.3e})");
    }
}

#[test]
fn attributions_equal_captums() {
    for case in reference()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (mut m, ids) = model_of(case, AttentionKind::Dense);
        let target = Target::Token {
            pos: case["pos"].as_u64().unwrap() as usize,
            token: case["target"].as_u64().unwrap() as u32,
        };
        for (method, steps) in [(Method::GaussLegendre, 50), (Method::RiemannTrapezoid, 20)] {
            let a = attribute(&mut m, &ids, target, method, steps).unwrap();
            let key = format!("ig_{}_{steps}", method.name());
            assert!((a.f_input - case["f_input"].as_f64().unwrap()).abs() < 1e-4, "{name}: f(x) {}", a.f_input);
            assert!((a.f_baseline - case["f_baseline"].as_f64().unwrap()).abs() < 1e-4, "{name}: f(0)");
            close(&format!("{name} grad×input"), &a.grad_x_input, &floats(&case["grad_x_input"]), 1e-4);
            close(&format!("{name} {key}"), &a.integrated_gradients, &floats(&case[&key]["per_token"]), 1e-4);
            // Completeness: Captum's delta is ~1e-9 in float64; ours carries f32 rounding.
            let want_delta = case[&key]["delta"].as_f64().unwrap();
            assert!((a.delta - want_delta).abs() < 1e-4, "{name} {key}: delta {} vs {want_delta}", a.delta);
        }
        // The model's gradient buffers and input scale are back to normal afterwards.
        let plain = m.forward_lm(&ids, None, 1, ids.len(), false, 0).unwrap();
        assert!(plain.is_none());
    }
}

#[test]
fn logit_lens_equals_pytorch() {
    for case in reference()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (mut m, ids) = model_of(case, AttentionKind::Dense);
        let v = m.config.vocab_size;
        let lens = logit_lens(&mut m, &ids, v).unwrap();
        let want = case["lens_logprobs"].as_array().unwrap();
        assert_eq!(lens.len(), want.len(), "{name}: embeddings + one readout per block");
        for (l, (got, want)) in lens.iter().zip(want).enumerate() {
            for (i, (top, row)) in got.top.iter().zip(want.as_array().unwrap()).enumerate() {
                let row = floats(row);
                assert_eq!(top.len(), v);
                for (id, p) in top {
                    let w = row[*id as usize].exp();
                    assert!((*p as f64 - w).abs() < 1e-5, "{name} layer {l} pos {i} token {id}: {p} vs {w}");
                }
                // Best first, and the target's rank is its place in that order.
                assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
                if let (Some(r), Some(&next)) = (got.target_rank[i], ids.get(i + 1)) {
                    assert_eq!(top[r].0, next);
                }
            }
        }
        // The last readout is the model's own output distribution.
        m.forward_lm(&ids, None, 1, ids.len(), false, 0).unwrap();
        let logits = m.logits().to_vec();
        let last = lens.last().unwrap();
        let row0: Vec<f32> = logits[..v].to_vec();
        let mx = row0.iter().fold(f32::MIN, |a, &b| a.max(b));
        let z: f64 = row0.iter().map(|&x| ((x - mx) as f64).exp()).sum();
        for (id, p) in &last.top[0] {
            let want = ((row0[*id as usize] - mx) as f64).exp() / z;
            assert!((*p as f64 - want).abs() < 1e-6, "{name}: last layer token {id}");
        }
    }
}

#[test]
fn ablation_equals_pytorch() {
    for case in reference()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (mut m, ids) = model_of(case, AttentionKind::Dense);
        let base = case["base_loss"].as_f64().unwrap();
        for (mode, key) in [(AblationMode::Zero, "ablation_zero"), (AblationMode::Mean, "ablation_mean")] {
            let t = ablate_all(&mut m, std::slice::from_ref(&ids), mode).unwrap();
            assert!((t.base_loss - base).abs() < 1e-4 * base, "{name}: base loss {} vs {base}", t.base_loss);
            let want = &case[key];
            for (l, row) in t.heads.iter().enumerate() {
                let w = floats(&want["heads"][l]);
                for (h, d) in row.iter().enumerate() {
                    assert!((d + base - w[h]).abs() < 1e-4 * w[h].abs(), "{name} {key} layer {l} head {h}");
                }
                let wm = want["mlps"][l].as_f64().unwrap();
                assert!((t.mlps[l] + base - wm).abs() < 1e-4 * wm.abs(), "{name} {key} mlp {l}");
            }
            // Some ablation changes the loss (the test can fail).
            assert!(t.heads.iter().flatten().any(|d| d.abs() > 1e-3), "{name} {key}: no head matters");
        }
        // Cleared afterwards: the loss is the base loss again.
        let t = ids.len() - 1;
        let tg: Vec<i32> = ids[1..].iter().map(|&x| x as i32).collect();
        let loss = m.forward_lm(&ids[..t], Some(&tg), 1, t, false, 0).unwrap().unwrap() as f64;
        assert!((loss - base).abs() < 1e-4 * base);
        // Bad names are errors.
        let e = m.set_ablation("transformer.h.9.attn", Some(0), AblationMode::Zero).unwrap_err().to_string();
        assert!(e.contains("no layer"), "{e}");
        let e = m.set_ablation("transformer.h.0.attn", Some(99), AblationMode::Zero).unwrap_err().to_string();
        assert!(e.contains("head 99 does not exist"), "{e}");
        let e = m.set_ablation("transformer.h.0.mlp", Some(0), AblationMode::Zero).unwrap_err().to_string();
        assert!(e.contains("not an attention layer"), "{e}");
    }
}

#[test]
fn attention_maps_are_distributions_and_flash_equals_dense() {
    let case = &reference()["cases"][0];
    let (mut dense, ids) = model_of(case, AttentionKind::Dense);
    let (mut flash, _) = model_of(case, AttentionKind::Flash);
    let a = attention_maps(&mut dense, &ids, None).unwrap();
    let b = attention_maps(&mut flash, &ids, None).unwrap();
    let t = ids.len();
    assert_eq!(a.len(), dense.config.n_layer);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.tq, x.tk, x.n_head), (t, t, dense.config.n_head));
        for (i, row) in x.probs.chunks_exact(t).enumerate() {
            let q = i % t;
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "row sums to 1");
            assert!(row[q + 1..].iter().all(|&p| p == 0.0), "causal: no weight on later keys");
        }
        let d = x.probs.iter().zip(&y.probs).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(d < 1e-5, "layer {}: flash recomputed probabilities differ by {d}", x.layer);
    }
    // Rollout: rows are distributions; one layer gives ½A + ½I (rows renormalised, already 1).
    let one = rollout(&[&a[0]]).unwrap();
    let mean = a[0].mean();
    for i in 0..t {
        for j in 0..t {
            let want = 0.5 * mean[i * t + j] as f64 + if i == j { 0.5 } else { 0.0 };
            assert!((one[i * t + j] - want).abs() < 1e-6);
        }
    }
    let all: Vec<_> = a.iter().collect();
    let r = rollout(&all).unwrap();
    for row in r.chunks_exact(t) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }
    // Two layers: the product of the two single-layer matrices, second times first.
    let (r0, r1) = (rollout(&[&a[0]]).unwrap(), rollout(&[&a[1]]).unwrap());
    let two = rollout(&[&a[0], &a[1]]).unwrap();
    for i in 0..t {
        for j in 0..t {
            let want: f64 = (0..t).map(|k| r1[i * t + k] * r0[k * t + j]).sum();
            assert!((two[i * t + j] - want).abs() < 1e-9);
        }
    }
}

#[test]
fn gauss_legendre_integrates_polynomials_exactly() {
    for (n, want) in [(2, vec![(-1.0 / 3f64.sqrt(), 1.0), (1.0 / 3f64.sqrt(), 1.0)])] {
        let got = gauss_legendre(n);
        for ((x, w), (xw, ww)) in got.iter().zip(&want) {
            assert!((x - xw).abs() < 1e-14 && (w - ww).abs() < 1e-14);
        }
    }
    for n in [2, 3, 7, 50] {
        let pts = Method::GaussLegendre.points(n).unwrap();
        for k in 0..2 * n {
            let integral: f64 = pts.iter().map(|(a, w)| w * a.powi(k as i32)).sum();
            assert!((integral - 1.0 / (k + 1) as f64).abs() < 1e-12, "n {n}, x^{k}: {integral}");
        }
    }
    let trap = Method::RiemannTrapezoid.points(5).unwrap();
    assert_eq!(trap.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    // Captum's weights: 1/n, halved at the ends.
    assert_eq!(trap.iter().map(|p| p.1).collect::<Vec<_>>(), vec![0.1, 0.2, 0.2, 0.2, 0.1]);
    assert!(Method::parse("simpson").is_err());
    assert!(Method::RiemannTrapezoid.points(1).is_err());
}

/// An encoder classifier: the input gradient against central differences of log p(class),
/// through a token embedding row used once (the model has no tied head).
#[test]
fn classifier_input_gradient_matches_finite_differences() {
    let mut m = tiny(Arch::Encoder, 12, 8, 3, 7);
    let ids = [1u32, 4, 7, 2, 9];
    let target = Target::Class(2);
    let a = attribute(&mut m, &ids, target, Method::GaussLegendre, 64).unwrap();
    let gap = a.f_input - a.f_baseline;
    assert!(a.delta.abs() < 1e-3 * gap.abs().max(1e-3), "completeness: delta {} for f(x) − f(0) = {gap}", a.delta);
    // ∂f/∂x for token 3 (id 2), dimension 5, by differences of the table row.
    let f = |m: &mut Transformer| -> f64 {
        -(m.forward_classify(&ids, None, Some(&[2]), 1, ids.len(), false, 0).unwrap().unwrap() as f64)
    };
    m.set_capture_input_grad(true).unwrap();
    m.forward_classify(&ids, None, Some(&[2]), 1, ids.len(), false, 0).unwrap();
    m.zero_grad();
    m.backward().unwrap();
    let g: Vec<f32> = m.input_grad().unwrap().to_vec();
    let row = m.layout.get("transformer.wte.weight").unwrap().range().start + 2 * 16;
    for d in [0usize, 5, 11] {
        let h = 1e-2f32;
        m.params[row + d] += h;
        let up = f(&mut m);
        m.params[row + d] -= 2.0 * h;
        let down = f(&mut m);
        m.params[row + d] += h;
        let numeric = (up - down) / (2.0 * h as f64);
        let analytic = -(g[3 * 16 + d] as f64);
        // Relative to the largest input-gradient entry, as `common::check` does (f32 losses).
        let scale = g.iter().fold(1e-3f64, |m, x| m.max(x.abs() as f64));
        assert!((numeric - analytic).abs() < 2e-3 * scale, "dim {d}: {numeric} vs {analytic} (scale {scale})");
    }
    // Wrong targets are errors naming the problem.
    let e = attribute(&mut m, &ids, Target::Class(3), Method::GaussLegendre, 8).unwrap_err().to_string();
    assert!(e.contains("class 3 does not exist"), "{e}");
    let e = attribute(&mut m, &ids, Target::Token { pos: 0, token: 1 }, Method::GaussLegendre, 8).unwrap_err();
    assert!(e.to_string().contains("decoder-only"), "{e}");
}

#[test]
fn pca_finds_the_direction_of_largest_variance() {
    // Points spread along (1, 1, 0) with a little noise along (1, −1, 0).
    let mut x = Vec::new();
    for i in 0..20 {
        let (a, b) = (i as f32 - 9.5, if i % 2 == 0 { 0.1 } else { -0.1 });
        x.extend([a + b, a - b, 0.0]);
    }
    let p = pca(&x, 20, 3, 2).unwrap();
    assert!(p.explained_ratio[0] > 0.99 && p.explained_ratio[1] > 0.0);
    // The first coordinate is the position along the line (up to sign): |a|·√2.
    for (i, c) in p.coords.iter().enumerate() {
        let a = (i as f64 - 9.5) * 2f64.sqrt();
        assert!((c[0].abs() - a.abs()).abs() < 1e-3 * a.abs().max(1.0), "{i}: {} vs {a}", c[0]);
    }
    assert!(pca(&x, 20, 3, 4).is_err());
}

#[test]
fn cli_inspect_writes_pictures_and_json_and_rejects_bad_input() {
    let text = "to be or not to be, that is the question";
    let tok = CharTokenizer::from_corpus(text).unwrap();
    let m = tiny(Arch::Decoder, tok.vocab_size(), 32, 2, 3);
    let dir = tempfile::tempdir().unwrap();
    let (ck, out) = (dir.path().join("ck"), dir.path().join("out"));
    checkpoint::save_new(&ck, &m, &Tokenizer::Char(tok)).unwrap();
    let data = dir.path().join("text.txt");
    std::fs::write(&data, text.repeat(4)).unwrap();
    let (c, o, d) = (ck.to_str().unwrap(), out.to_str().unwrap(), data.to_str().unwrap());
    let run = |args: &[&str]| common::lmlab_text(args);
    let (ok, so, se) = run(&["inspect", "attention", "--checkpoint", c, "--text", "to be or", "--out", o]);
    assert!(ok, "{so}{se}");
    for f in ["attention-transformer-self.png", "rollout-transformer.png", "attention.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let j: Value = serde_json::from_str(&std::fs::read_to_string(out.join("attention.json")).unwrap()).unwrap();
    assert_eq!(j["layers"].as_array().unwrap().len(), 2);
    let (ok, so, se) = run(&["inspect", "lens", "--checkpoint", c, "--text", "to be", "--out", o, "--json"]);
    assert!(ok, "{se}");
    let j: Value = serde_json::from_str(&so).unwrap();
    assert_eq!(j["layers"].as_array().unwrap().len(), 3, "embeddings + 2 blocks");
    let (ok, so, se) = run(&[
        "inspect",
        "attribute",
        "--checkpoint",
        c,
        "--text",
        "to be",
        "--target",
        "o",
        "--out",
        o,
        "--steps",
        "20",
    ]);
    assert!(ok, "{so}{se}");
    assert!(so.contains("convergence delta"), "{so}");
    let html = std::fs::read_to_string(out.join("attribution.html")).unwrap();
    assert!(html.contains("<span") && html.contains("Integrated gradients"));
    let (ok, so, se) = run(&["inspect", "ablate", "--checkpoint", c, "--data", d, "--windows", "2", "--out", o]);
    assert!(ok, "{so}{se}");
    assert!(out.join("ablation.png").exists() && so.contains("head 1"), "{so}");
    let (ok, so, se) = run(&["inspect", "stats", "--checkpoint", c, "--text", "to be or not", "--json"]);
    assert!(ok, "{se}");
    let j: Value = serde_json::from_str(&so).unwrap();
    assert_eq!(j["layers"].as_array().unwrap().len(), 2);
    assert!(j["layers"][1]["rms"].as_f64().unwrap() > 0.0);
    let tsv = dir.path().join("labelled.tsv");
    std::fs::write(&tsv, "a\tto be\nb\tor not\na\tto be or\nb\tthe question\n").unwrap();
    let tv = tsv.to_str().unwrap();
    let (ok, so, se) = run(&["inspect", "pca", "--input", tv, "--checkpoint", c, "--out", o, "--json"]);
    assert!(ok, "{so}{se}");
    let j: Value = serde_json::from_str(&so).unwrap();
    assert_eq!(j["points"].as_array().unwrap().len(), 4);
    assert!(out.join("pca.png").exists());
    let (ok, _, se) = run(&["inspect", "pca", "--input", tv, "--checkpoint", c, "--layer", "5"]);
    assert!(!ok && se.contains("layer 5 does not exist"), "{se}");
    // Errors name the problem.
    let (ok, _, se) =
        run(&["inspect", "attribute", "--checkpoint", c, "--text", "to", "--position", "9", "--target", "o"]);
    assert!(!ok && se.contains("position 9 is outside the text"), "{se}");
    let (ok, _, se) = run(&["inspect", "attribute", "--checkpoint", c, "--text", "to", "--target", "be"]);
    assert!(!ok && se.contains("give exactly one token"), "{se}");
    let (ok, _, se) = run(&["inspect", "attribute", "--checkpoint", c, "--text", "to", "--method", "simpson"]);
    assert!(!ok && se.contains("unknown integration method"), "{se}");
    let (ok, _, se) = run(&["inspect", "lens", "--checkpoint", c, "--text", ""]);
    assert!(!ok && se.contains("empty"), "{se}");
    let long = "to be ".repeat(10);
    let (ok, _, se) = run(&["inspect", "attention", "--checkpoint", c, "--text", &long]);
    assert!(!ok && se.contains("block_size"), "{se}");
    let (ok, _, se) = run(&["inspect", "ablate", "--checkpoint", c, "--data", d, "--mode", "half"]);
    assert!(!ok && se.contains("unknown ablation mode"), "{se}");
    let (ok, _, se) = run(&["inspect", "lens", "--checkpoint", "/nonexistent", "--text", "to"]);
    assert!(!ok && !se.contains("panicked"), "{se}");
    // The HTML escapes token text.
    let a = lmlab::inspect::interpret::attribution::Attribution {
        f_input: 0.0,
        f_baseline: 0.0,
        grad_x_input: vec![1.0],
        integrated_gradients: vec![-1.0],
        delta: 0.0,
        method: "gausslegendre".into(),
        steps: 1,
    };
    let h = to_html(&["<b>".to_string()], &a, "x");
    assert!(h.contains("&lt;b&gt;") && !h.contains("<b>"));
}

/// An encoder-decoder: the encoder's self-attention (source × source), the decoder's
/// self-attention (target × target) and its cross-attention (target × source).
#[test]
fn encoder_decoder_gives_self_and_cross_attention() {
    let mut m = tiny(Arch::EncoderDecoder, 10, 8, 2, 5);
    let (src, tgt) = ([1u32, 2, 3, 4, 5], [0u32, 6, 7]);
    let layers = attention_maps(&mut m, &tgt, Some(&src)).unwrap();
    let got: Vec<_> = layers.iter().map(|l| (l.stack.as_str(), l.kind.as_str(), l.tq, l.tk)).collect();
    assert!(got.contains(&("encoder", "self", 5, 5)), "{got:?}");
    assert!(got.contains(&("decoder", "self", 3, 3)), "{got:?}");
    assert!(got.contains(&("decoder", "cross", 3, 5)), "{got:?}");
    for l in &layers {
        for row in l.probs.chunks_exact(l.tk) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
    // The lens and a source for a decoder-only model are errors.
    let e = logit_lens(&mut m, &tgt, 3).unwrap_err().to_string();
    assert!(e.contains("decoder-only"), "{e}");
    assert!(attention_maps(&mut m, &tgt, None).unwrap_err().to_string().contains("source"));
}
