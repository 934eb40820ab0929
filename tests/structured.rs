//! Structured pruning: models whose heads do not tile the embedding (`model.head_size`) train
//! and generate correctly, and a shrunk model computes what the original computes with the
//! removed heads and neurons silenced.

mod common;
use lmlab::compress::structured::{
    calibration_gradient, choose, importance, pruned_config, shrink, Importance, StructuredPlan,
};
use lmlab::model::transformer::{
    ActivationKind, AttentionKind, LogitRows, ModelConfig, NormKind, Position, Transformer,
};

fn cfg(position: Position, activation: ActivationKind, attention: AttentionKind) -> ModelConfig {
    ModelConfig {
        vocab_size: 19,
        block_size: 12,
        n_layer: 2,
        n_head: 4,
        n_embd: 32,
        ffn_hidden: Some(48),
        position,
        activation,
        attention,
        bias: true,
        dropout: 0.0,
        ..ModelConfig::default()
    }
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7 + 3) % 19) as u32).collect()
}

fn logits(m: &mut Transformer, idx: &[u32]) -> Vec<f32> {
    m.forward_lm(idx, None, 1, idx.len(), false, 0).unwrap();
    m.logits().to_vec()
}

#[test]
fn narrower_heads_train_and_generate() {
    for attention in [AttentionKind::Dense, AttentionKind::Flash] {
        // 3 heads of 8 in a 32-wide model: the attention's inner width is 24.
        let c = ModelConfig { n_head: 3, head_size: Some(8), ..cfg(Position::Rope, ActivationKind::Swiglu, attention) };
        let mut m = Transformer::new(c.clone(), 1).unwrap();
        m.init(3);
        assert_eq!(m.layout.get("transformer.h.0.attn.c_proj.weight").unwrap().shape, vec![32, 24]);
        // Whole-model gradient against finite differences in one direction.
        let idx = tokens(12);
        let targets: Vec<i32> = tokens(13)[1..].iter().map(|&t| t as i32).collect();
        m.forward_lm(&idx, Some(&targets), 1, 12, true, 0).unwrap();
        m.zero_grad();
        m.backward().unwrap();
        let dir: Vec<f32> = (0..m.params.len()).map(|i| ((i * 13 % 7) as f32 - 3.0) / 3.0).collect();
        let analytic: f64 = m.grads.iter().zip(&dir).map(|(g, d)| *g as f64 * *d as f64).sum();
        let base = m.params.clone();
        let h = 1e-3f32;
        let mut at = |s: f32| {
            m.params.iter_mut().zip(&base).zip(&dir).for_each(|((p, b), d)| *p = b + s * h * d);
            m.forward_lm(&idx, Some(&targets), 1, 12, true, 0).unwrap().unwrap() as f64
        };
        let numeric = (at(1.0) - at(-1.0)) / (2.0 * h as f64);
        m.params.copy_from_slice(&base);
        assert!((numeric - analytic).abs() < 2e-2 * analytic.abs().max(1e-2), "{attention:?}: {numeric} vs {analytic}");
        // The KV cache gives the full pass's last logits.
        let full = logits(&mut m, &idx);
        let mut inf = Transformer::new_inference(c, 1).unwrap();
        inf.params.copy_from_slice(&m.params);
        let mut cache = inf.kv_cache(1).unwrap();
        inf.forward_cached(&idx[..5], &[5], 5, &mut cache, LogitRows::Last).unwrap();
        let mut last = Vec::new();
        for &tok in &idx[5..] {
            last = inf.forward_cached(&[tok], &[1], 1, &mut cache, LogitRows::Last).unwrap().to_vec();
        }
        let v = 19;
        let want = &full[11 * v..12 * v];
        let err = last.iter().zip(want).fold(0.0f32, |e, (a, b)| e.max((a - b).abs()));
        assert!(err < 1e-4, "{attention:?}: cached logits differ by {err}");
    }
    // Exports refuse such a model.
    let c = ModelConfig {
        n_head: 3,
        head_size: Some(8),
        bias: false,
        norm: NormKind::Rmsnorm,
        ..cfg(Position::Rope, ActivationKind::Swiglu, AttentionKind::Dense)
    };
    let m = Transformer::new(c, 1).unwrap();
    let err = format!("{:#}", lmlab::io::llama2c::to_bytes(&m, None).unwrap_err());
    assert!(err.contains("pruned heads"), "{err}");
}

/// `m` with the heads and neurons `keep` leaves out silenced: their output-projection columns
/// zeroed, which removes exactly their contribution.
fn silenced(m: &Transformer, keep: &[lmlab::compress::structured::LayerKeep]) -> Transformer {
    let mut z = Transformer::new(m.config.clone(), 1).unwrap();
    z.params.copy_from_slice(&m.params);
    let hs = m.config.head_size();
    for (l, k) in keep.iter().enumerate() {
        let p = z.layout.get(&format!("transformer.h.{l}.attn.c_proj.weight")).unwrap().clone();
        let w = p.shape[1];
        for h in (0..m.config.n_head).filter(|h| !k.heads.contains(h)) {
            for r in 0..p.shape[0] {
                z.params[p.offset + r * w + h * hs..p.offset + r * w + (h + 1) * hs].fill(0.0);
            }
        }
        let p = z.layout.get(&format!("transformer.h.{l}.mlp.c_proj.weight")).unwrap().clone();
        let w = p.shape[1];
        for j in (0..m.config.ffn()).filter(|j| !k.neurons.contains(j)) {
            for r in 0..p.shape[0] {
                z.params[p.offset + r * w + j] = 0.0;
            }
        }
    }
    z
}

#[test]
fn a_shrunk_model_computes_what_the_silenced_original_does() {
    for (position, activation) in [
        (Position::Learned, ActivationKind::GeluTanh),
        (Position::Rope, ActivationKind::Swiglu),
        (Position::Sinusoidal, ActivationKind::Relu),
    ] {
        let c = cfg(position, activation, AttentionKind::Dense);
        let mut m = Transformer::new(c.clone(), 2).unwrap();
        m.init(7);
        let windows: Vec<Vec<u32>> = (0..3).map(|i| tokens(13 + i)[i..].to_vec()).collect();
        calibration_gradient(&mut m, &windows).unwrap();
        for how in [Importance::L2, Importance::Taylor] {
            let plan = StructuredPlan { heads: 1, neurons: 12 };
            let scores = importance(&m, how).unwrap();
            assert!(scores.heads.iter().flatten().all(|s| s.is_finite() && *s >= 0.0));
            let keep = choose(&scores, plan);
            // Each layer keeps its most important heads.
            for (k, s) in keep.iter().zip(&scores.heads) {
                let dropped = (0..4).find(|h| !k.heads.contains(h)).unwrap();
                assert!(k.heads.iter().all(|&h| s[h] >= s[dropped]), "{s:?} {k:?}");
            }
            let mut small = shrink(&m, &keep, 1).unwrap();
            assert_eq!((small.config.n_head, small.config.head_size(), small.config.ffn()), (3, 8, 36));
            assert!(small.num_params() < m.num_params());
            let mut z = silenced(&m, &keep);
            let idx = tokens(12);
            let (a, b) = (logits(&mut small, &idx), logits(&mut z, &idx));
            let err = a.iter().zip(&b).fold(0.0f32, |e, (x, y)| e.max((x - y).abs()));
            assert!(err < 1e-4, "{position:?}/{activation:?}/{how:?}: {err}");
        }
    }
}

#[test]
fn plans_that_cannot_apply_are_errors() {
    let c = cfg(Position::Rope, ActivationKind::Swiglu, AttentionKind::Dense);
    let e = |c: &ModelConfig, p| format!("{:#}", pruned_config(c, p).unwrap_err());
    assert!(e(&c, StructuredPlan { heads: 4, neurons: 0 }).contains("4 of 4 heads"));
    assert!(e(&c, StructuredPlan { heads: 0, neurons: 48 }).contains("48 of 48"));
    let gqa = ModelConfig { n_kv_head: Some(2), ..c.clone() };
    assert!(e(&gqa, StructuredPlan { heads: 1, neurons: 0 }).contains("multi-head"));
    let alibi = ModelConfig { position: Position::Alibi, ..c.clone() };
    assert!(e(&alibi, StructuredPlan { heads: 1, neurons: 0 }).contains("ALiBi"));
    let t5 = ModelConfig { position: Position::T5, ..c.clone() };
    assert!(e(&t5, StructuredPlan { heads: 1, neurons: 0 }).contains("T5"));
    // Neurons alone are fine with grouped-query attention, which stays as it is.
    let small = pruned_config(&gqa, StructuredPlan { heads: 0, neurons: 8 }).unwrap();
    assert_eq!((small.n_head, small.kv_heads(), small.ffn()), (4, 2, 40));
    let mut m = Transformer::new(gqa.clone(), 1).unwrap();
    m.init(5);
    let keep = choose(&importance(&m, Importance::L2).unwrap(), StructuredPlan { heads: 0, neurons: 8 });
    // An inference-only model (no gradients) scores by L2 the same.
    let mut inf = Transformer::new_inference(gqa, 1).unwrap();
    inf.params.copy_from_slice(&m.params);
    assert_eq!(importance(&inf, Importance::L2).unwrap().neurons, importance(&m, Importance::L2).unwrap().neurons);
    let mut s = shrink(&m, &keep, 1).unwrap();
    let mut z = silenced(&m, &keep);
    let (a, b) = (logits(&mut s, &tokens(12)), logits(&mut z, &tokens(12)));
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-4));
}

#[test]
fn cli_structured_prune_eval_and_recover() {
    use common::{lmlab, ok, text};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(&data, "the quick brown fox jumps over the lazy dog. ".repeat(80)).unwrap();
    let cfg = dir.path().join("c.toml");
    let run = dir.path().join("run");
    std::fs::write(
        &cfg,
        format!(
            "[model]\nblock_size = 16\nn_layer = 2\nn_head = 4\nn_embd = 32\ndropout = 0.0\n[data]\npath = {:?}\n\
             [train]\nout_dir = {:?}\nbatch_size = 4\nmax_iters = 20\neval_interval = 20\neval_iters = 2\n",
            data.display().to_string(),
            run.display().to_string()
        ),
    )
    .unwrap();
    ok(lmlab(&["train", "--config", cfg.to_str().unwrap(), "--quiet"]));
    let (ck, out) = (run.join("ckpt"), dir.path().join("pruned"));
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let j: serde_json::Value = serde_json::from_str(&ok(lmlab(&[
        "prune",
        "--checkpoint",
        &s(&ck),
        "--method",
        "structured",
        "--heads",
        "1",
        "--neurons",
        "32",
        "--calib",
        &s(&data),
        "--calib-samples",
        "4",
        "--out",
        &s(&out),
        "--json",
    ])))
    .unwrap();
    assert_eq!((j["n_head"].as_u64(), j["head_size"].as_u64(), j["ffn_hidden"].as_u64()), (Some(3), Some(8), Some(96)));
    assert!(j["parameters_after"].as_u64() < j["parameters_before"].as_u64());
    let info = ok(lmlab(&["info", &s(&out)]));
    assert!(info.contains("3 heads"), "{info}");
    // It evaluates, samples and resumes training like any checkpoint.
    ok(lmlab(&["eval", "lm", "--checkpoint", &s(&out)]));
    ok(lmlab(&["sample", "--checkpoint", &s(&out), "--prompt", "the", "--max-new-tokens", "5"]));
    let rec = dir.path().join("rec");
    ok(lmlab(&[
        "train",
        "--resume",
        &s(&out),
        "--set",
        "train.max_iters=25",
        "--set",
        &format!("train.out_dir={:?}", s(&rec)),
        "--quiet",
    ]));
    // Errors name the problem.
    let o = lmlab(&[
        "prune",
        "--checkpoint",
        &s(&ck),
        "--method",
        "structured",
        "--heads",
        "1",
        "--out",
        &s(&dir.path().join("x")),
    ]);
    assert!(text(&o).1.contains("--calib"), "{:?}", text(&o));
    let o = lmlab(&[
        "prune",
        "--checkpoint",
        &s(&ck),
        "--method",
        "structured",
        "--heads",
        "1",
        "--sparsity",
        "0.5",
        "--out",
        "x",
    ]);
    assert!(!o.status.success());
    let o = lmlab(&[
        "prune",
        "--checkpoint",
        &s(&ck),
        "--method",
        "magnitude",
        "--sparsity",
        "0.5",
        "--heads",
        "1",
        "--out",
        "x",
    ]);
    assert!(text(&o).1.contains("--method structured"), "{:?}", text(&o));
}
