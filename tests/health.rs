//! Gradient health: the per-layer statistics against direct computations on constructed
//! models, NaN/Inf localisation, and `lmlab plot` / `lmlab schedule --plot` end to end.

use lmlab::inspect::{first_nonfinite, health_stats, HealthMonitor, HealthStats};
use lmlab::model::transformer::{ActivationKind, Arch, AttentionKind, ModelConfig, NormPosition, Transformer};
use lmlab::model::ParamKind;
use std::path::Path;
use std::process::{Command, Output};

fn tiny(arch: Arch) -> ModelConfig {
    ModelConfig { arch, vocab_size: 11, block_size: 8, n_layer: 2, n_head: 2, n_embd: 8, ..ModelConfig::default() }
}

fn model(cfg: ModelConfig, seed: u64) -> Transformer {
    let mut m = Transformer::new(cfg, 3).unwrap();
    m.init(seed);
    m
}

const B: usize = 3;
const T: usize = 8;

fn tokens() -> (Vec<u32>, Vec<i32>) {
    let idx: Vec<u32> = (0..B * T).map(|i| ((i * 7 + i / 5) % 11) as u32).collect();
    let tg: Vec<i32> = (0..B * T).map(|i| ((i * 3 + 1) % 11) as i32).collect();
    (idx, tg)
}

/// Forward (training mode, dropout seed fixed) and backward of a decoder on the fixed batch.
fn lm_step(m: &mut Transformer) -> f32 {
    let (idx, tg) = tokens();
    m.zero_grad();
    let loss = m.forward_lm(&idx, Some(&tg), B, T, true, 5).unwrap().unwrap();
    m.backward().unwrap();
    loss
}

fn set(m: &mut Transformer, name: &str, f: impl Fn(usize, &mut f32)) {
    let r = m.layout.get(name).unwrap_or_else(|| panic!("no tensor {name}")).range();
    m.params[r].iter_mut().enumerate().for_each(|(i, x)| f(i, x));
}

fn norm64(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt()
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    assert!((got - want).abs() <= tol * want.abs().max(1.0), "{what}: got {got}, want {want}");
}

#[test]
fn gradient_norms_are_the_norms_of_the_gradient_slices() {
    let mut m = model(tiny(Arch::Decoder), 1);
    lm_step(&mut m);
    let s = health_stats(&m, None);
    let trained: Vec<_> = m.layout.tensors.iter().filter(|t| t.kind != ParamKind::Buffer).collect();
    assert_eq!(s.tensors.len(), trained.len());
    for (h, t) in s.tensors.iter().zip(&trained) {
        assert_eq!(h.name, t.name);
        close(&t.name, h.grad_norm, norm64(&m.grads[t.range()]), 1e-9);
        assert_eq!(h.update_ratio, None, "no weights from before the update");
    }
    assert_eq!(s.layers.len(), 2);
    for (i, l) in s.layers.iter().enumerate() {
        assert_eq!((l.stack.as_str(), l.layer), ("transformer", i));
        let prefix = format!("transformer.h.{i}.");
        let sq: f64 =
            trained.iter().filter(|t| t.name.starts_with(&prefix)).map(|t| norm64(&m.grads[t.range()]).powi(2)).sum();
        assert!(sq > 0.0);
        close(&format!("layer {i} grad norm"), l.grad_norm, sq.sqrt(), 1e-9);
        assert!(l.update_ratio.is_none());
    }
}

#[test]
fn update_ratio_is_the_relative_size_of_the_step() {
    let mut m = model(tiny(Arch::Decoder), 2);
    lm_step(&mut m);
    let mut mon = HealthMonitor::new(4, &m);
    assert!(!mon.before_step(3, &m), "step 3 is not a multiple of 4");
    assert!(mon.before_step(8, &m));
    // The "update": layer 1's c_fc weight grows by 25 %, nothing else moves.
    set(&mut m, "transformer.h.1.mlp.c_fc.weight", |_, x| *x *= 1.25);
    let s = mon.stats(&m);
    for t in &s.tensors {
        let w = norm64(&m.params[m.layout.get(&t.name).unwrap().range()]);
        match t.name.as_str() {
            "transformer.h.1.mlp.c_fc.weight" => close(&t.name, t.update_ratio.unwrap(), 0.25, 1e-6),
            _ if w == 0.0 => assert_eq!(t.update_ratio, None, "{}: zero weights have no ratio", t.name),
            _ => assert_eq!(t.update_ratio, Some(0.0), "{}", t.name),
        }
    }
    assert_eq!(s.layers[0].update_ratio, Some(0.0));
    // Layer 1: ‖Δw‖ = 0.25·‖W_fc‖ (before), over the norm of all its weights before the update.
    let layer1: f64 = m
        .layout
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("transformer.h.1."))
        .map(|t| {
            let w = norm64(&m.params[t.range()]);
            if t.name.ends_with("c_fc.weight") {
                (w / 1.25).powi(2)
            } else {
                w * w
            }
        })
        .sum();
    let fc = norm64(&m.params[m.layout.get("transformer.h.1.mlp.c_fc.weight").unwrap().range()]) / 1.25;
    close("layer 1 ratio", s.layers[1].update_ratio.unwrap(), 0.25 * fc / layer1.sqrt(), 1e-6);
    // Interval 0: never due, holds nothing.
    let mut off = HealthMonitor::new(0, &m);
    assert!(!off.before_step(0, &m) && !off.before_step(5, &m));
    assert!(off.stats(&m).layers[0].update_ratio.is_none());
}

fn mean_std(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    (mean, (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt())
}

#[test]
fn activation_statistics_describe_the_residual_stream_after_the_block() {
    // Without a final norm, hidden() is the last block's output: pre-norm x + mlp(...),
    // post-norm LayerNorm(x + mlp(x)).
    for position in [NormPosition::Pre, NormPosition::Post] {
        let mut m = model(ModelConfig { final_norm: false, norm_position: position, ..tiny(Arch::Decoder) }, 3);
        // Larger embeddings so that the stream's statistics are far from a norm's (0, 1).
        set(&mut m, "transformer.wte.weight", |i, x| *x = *x * 40.0 + (i % 3) as f32 * 0.5);
        lm_step(&mut m);
        let s = health_stats(&m, None);
        let (mean, std) = mean_std(m.hidden());
        let last = s.layers.last().unwrap();
        close(&format!("{position:?} mean"), last.act_mean, mean, 1e-6);
        close(&format!("{position:?} std"), last.act_std, std, 1e-6);
        assert!(std > 0.1, "{position:?}: a non-trivial stream");
        // Layer 0's output is its last sublayer's: the residual sum (pre) or the norm after it (post).
        let name =
            if position == NormPosition::Pre { "transformer.h.0.mlp.residual" } else { "transformer.h.0.ln_2.out" };
        let acts = m.activations();
        let out0 = acts.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("no activation {name}"));
        assert_eq!(out0.layer, Some(0));
        let (mean0, std0) = mean_std(out0.data);
        close("layer 0 mean", s.layers[0].act_mean, mean0, 1e-6);
        close("layer 0 std", s.layers[0].act_std, std0, 1e-6);
        assert_ne!(out0.data, m.hidden(), "layer 0 is not the last layer");
    }
}

/// A model whose feed-forward units are forced dead (bias −100 on a zero weight row: the
/// pre-activation is −100 for every token) or alive (bias +100).
fn with_dead_units(activation: ActivationKind, dead: &[&[usize]]) -> HealthStats {
    let cfg = ModelConfig { activation, ffn_hidden: Some(16), ..tiny(Arch::Decoder) };
    let gated = activation == ActivationKind::Swiglu;
    let mut m = model(cfg, 4);
    for (layer, units) in dead.iter().enumerate() {
        let (w, b) = (format!("transformer.h.{layer}.mlp.c_fc.weight"), format!("transformer.h.{layer}.mlp.c_fc.bias"));
        // c_fc weight (F_in, C): row j makes unit j.
        set(&mut m, &w, |i, x| {
            if units.contains(&(i / 8)) {
                *x = 0.0
            }
        });
        set(&mut m, &b, |j, x| {
            *x = match (j < 16, units.contains(&(j % 16))) {
                // Gate (or the plain pre-activation).
                (true, true) => -100.0,
                (true, false) => 100.0,
                // SwiGLU's up projection: negative everywhere, which must not count.
                (false, _) => -100.0,
            }
        });
    }
    assert_eq!(gated, m.layout.get("transformer.h.0.mlp.c_fc.bias").unwrap().numel() == 32);
    lm_step(&mut m);
    health_stats(&m, None)
}

#[test]
fn dead_share_counts_units_that_no_token_activates() {
    for act in [ActivationKind::Relu, ActivationKind::GeluTanh, ActivationKind::Swiglu] {
        let s = with_dead_units(act, &[&[0, 3, 5], &[15]]);
        assert_eq!(s.layers[0].dead_share, 3.0 / 16.0, "{act:?}");
        assert_eq!(s.layers[1].dead_share, 1.0 / 16.0, "{act:?}");
    }
    // A freshly initialised ReLU network has no unit that is negative for all 24 tokens.
    let mut m = model(ModelConfig { activation: ActivationKind::Relu, ..tiny(Arch::Decoder) }, 5);
    lm_step(&mut m);
    assert_eq!(health_stats(&m, None).layers[0].dead_share, 0.0);
}

/// Zero query/key projections: every score is 0 and attention is uniform over the visible keys.
fn uniform_attention(m: &mut Transformer) {
    let names: Vec<String> = m.layout.tensors.iter().map(|t| t.name.clone()).collect();
    for n in names.iter().filter(|n| n.contains("attn.c_attn") || n.contains("attn.c_q") || n.contains("attn.c_kv")) {
        set(m, n, |_, x| *x = 0.0);
    }
}

/// Mean of ln(i + 1) over query rows i < t: causal attention, uniform.
fn causal_uniform(t: usize) -> f64 {
    (1..=t).map(|k| (k as f64).ln()).sum::<f64>() / t as f64
}

#[test]
fn uniform_attention_has_the_entropy_of_its_visible_keys() {
    let base = tiny(Arch::Decoder);
    let variants = [
        ("dense", ModelConfig { attention: AttentionKind::Dense, ..base.clone() }),
        ("flash", ModelConfig { attention: AttentionKind::Flash, ..base.clone() }),
        ("general (multi-query)", ModelConfig { n_kv_head: Some(1), ..base.clone() }),
    ];
    for (what, cfg) in variants {
        let mut m = model(cfg, 6);
        uniform_attention(&mut m);
        lm_step(&mut m);
        for l in health_stats(&m, None).layers {
            close(&format!("{what} layer {}", l.layer), l.attn_entropy, causal_uniform(T), 1e-5);
            assert_eq!(l.cross_attn_entropy, None);
        }
    }
    // An encoder with padding: padded queries are left out, and a real query sees the real keys.
    let mut m = model(ModelConfig { num_classes: 3, ..tiny(Arch::Encoder) }, 7);
    uniform_attention(&mut m);
    let (idx, _) = tokens();
    let real = [5usize, 8, 2];
    let mask: Vec<bool> = (0..B * T).map(|i| i % T < real[i / T]).collect();
    m.forward_classify(&idx, Some(&mask), Some(&[0, 1, 2]), B, T, false, 0).unwrap();
    let want = real.iter().map(|&r| r as f64 * (r as f64).ln()).sum::<f64>() / real.iter().sum::<usize>() as f64;
    for l in health_stats(&m, None).layers {
        close(&format!("encoder layer {}", l.layer), l.attn_entropy, want, 1e-5);
    }
    // Encoder-decoder: the decoder's cross-attention sees each sentence's real source tokens.
    let mut m = model(tiny(Arch::EncoderDecoder), 8);
    uniform_attention(&mut m);
    let (tgt, tg) = tokens();
    let s = 6;
    let src: Vec<u32> = (0..B * s).map(|i| (i % 11) as u32).collect();
    let src_real = [6usize, 3, 1];
    let src_mask: Vec<bool> = (0..B * s).map(|i| i % s < src_real[i / s]).collect();
    m.forward_seq2seq(&src, Some(&src_mask), &tgt, Some(&tg), B, s, T, false, 0).unwrap();
    let stats = health_stats(&m, None);
    let stacks: Vec<(&str, usize)> = stats.layers.iter().map(|l| (l.stack.as_str(), l.layer)).collect();
    assert_eq!(stacks, [("encoder", 0), ("encoder", 1), ("decoder", 0), ("decoder", 1)]);
    let enc_want = src_real.iter().map(|&r| r as f64 * (r as f64).ln()).sum::<f64>() / 10.0;
    let cross_want = src_real.iter().map(|&r| (r as f64).ln()).sum::<f64>() / B as f64;
    for l in &stats.layers {
        if l.stack == "encoder" {
            close("encoder self", l.attn_entropy, enc_want, 1e-5);
            assert_eq!(l.cross_attn_entropy, None);
        } else {
            close("decoder self", l.attn_entropy, causal_uniform(T), 1e-5);
            close("decoder cross", l.cross_attn_entropy.unwrap(), cross_want, 1e-5);
        }
    }
}

#[test]
fn flash_entropy_recomputed_from_scores_matches_the_stored_probabilities() {
    let dense = ModelConfig { attention: AttentionKind::Dense, ..tiny(Arch::Decoder) };
    let mut a = model(dense.clone(), 9);
    // Sharper attention than at initialisation, so that the entropy is far from uniform.
    let names: Vec<String> =
        a.layout.tensors.iter().filter(|t| t.name.contains("c_attn")).map(|t| t.name.clone()).collect();
    for n in &names {
        set(&mut a, n, |_, x| *x *= 60.0);
    }
    let mut f = model(ModelConfig { attention: AttentionKind::Flash, ..dense }, 9);
    f.params.copy_from_slice(&a.params);
    lm_step(&mut a);
    lm_step(&mut f);
    let (sa, sf) = (health_stats(&a, None), health_stats(&f, None));
    for (la, lf) in sa.layers.iter().zip(&sf.layers) {
        close(&format!("layer {}", la.layer), lf.attn_entropy, la.attn_entropy, 1e-4);
        assert!(causal_uniform(T) - la.attn_entropy > 0.1, "not uniform: {}", la.attn_entropy);
        assert!(la.attn_entropy > 0.0);
    }
}

#[test]
fn a_nan_weight_is_found_in_the_first_activation_it_reaches() {
    let mut m = model(tiny(Arch::Decoder), 10);
    assert_eq!(first_nonfinite(&m), None, "nothing has run yet");
    lm_step(&mut m);
    assert_eq!(first_nonfinite(&m), None, "a healthy step");
    set(&mut m, "transformer.h.1.mlp.c_fc.weight", |i, x| {
        if i == 13 {
            *x = f32::NAN
        }
    });
    let (idx, tg) = tokens();
    let loss = m.forward_lm(&idx, Some(&tg), B, T, false, 0).unwrap().unwrap();
    assert!(loss.is_nan());
    let msg = first_nonfinite(&m).unwrap();
    assert!(msg.starts_with("NaN in activation `transformer.h.1.mlp.fc` (layer 1)"), "{msg}");
    assert!(msg.contains("parameter `transformer.h.1.mlp.c_fc.weight` holds NaN"), "{msg}");
    // An infinity in layer 0's attention projection: its qkv is the first to hold a non-finite
    // value (inf·x or inf − inf).
    let mut m = model(tiny(Arch::Decoder), 10);
    set(&mut m, "transformer.h.0.attn.c_attn.weight", |i, x| {
        if i == 2 {
            *x = f32::INFINITY
        }
    });
    m.forward_lm(&idx, Some(&tg), B, T, false, 0).unwrap();
    let msg = first_nonfinite(&m).unwrap();
    assert!(msg.contains("in activation `transformer.h.0.attn.qkv` (layer 0)"), "{msg}");
    // The token embedding: the embedding output is the first activation.
    let mut m = model(tiny(Arch::Decoder), 10);
    let row = idx[4] as usize;
    set(&mut m, "transformer.wte.weight", |i, x| {
        if i == row * 8 + 1 {
            *x = f32::NAN
        }
    });
    m.forward_lm(&idx, Some(&tg), B, T, false, 0).unwrap();
    let msg = first_nonfinite(&m).unwrap();
    assert!(msg.starts_with("NaN in activation `transformer.emb`;"), "{msg}");
}

#[test]
fn a_training_step_stops_with_the_place_of_the_nan() {
    use lmlab::config::RunConfig;
    use lmlab::data::Batch;
    use lmlab::optim::Clipping;
    use lmlab::optim::LossScaler;
    use lmlab::train::{optimizer_step, GradAccum, Trainer};
    use rand::SeedableRng;
    let cfg = RunConfig { model: tiny(Arch::Decoder), ..RunConfig::default() };
    let mut m = model(cfg.model.clone(), 11);
    set(&mut m, "transformer.h.1.attn.c_proj.weight", |i, x| {
        if i == 0 {
            *x = f32::NAN
        }
    });
    let opt = cfg.optim.build(&m.layout).unwrap();
    let mut tr = Trainer {
        accum: 1,
        scaler: LossScaler::disabled(),
        model: m,
        opt,
        schedule: cfg.optim.schedule(),
        clip: Clipping::norm(1.0),
        batch: Batch::new(B, T),
        rng: rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(0),
        step: 0,
        seed: 0,
        teacher: None,
        masking: None,
    };
    let data: Vec<u32> = (0..200).map(|i| (i * 5 % 11) as u32).collect();
    let e = format!("{:#}", tr.step(&data).unwrap_err());
    assert!(e.contains("loss is NaN at step 0"), "{e}");
    assert!(e.contains("NaN in activation `transformer.h.1.attn.out` (layer 1)"), "{e}");
    assert!(e.contains("diverged"), "{e}");

    // A finite loss with a NaN gradient: the gradient norm check names the gradient.
    let mut m = model(cfg.model.clone(), 11);
    let mut opt = cfg.optim.build(&m.layout).unwrap();
    let (idx, tg) = tokens();
    m.zero_grad();
    let g = m.layout.get("transformer.h.0.mlp.c_proj.bias").unwrap().offset;
    m.grads[g + 1] = f32::NAN;
    let loss = m.forward_lm(&idx, Some(&tg), B, T, true, 1).unwrap().unwrap();
    let mut acc = GradAccum::new(1, 1.0);
    acc.backward(&mut m, loss, 7).unwrap();
    let loss = acc.finish(&mut m);
    let mut scaler = LossScaler::disabled();
    let e =
        format!("{:#}", optimizer_step(&mut m, &mut opt, Clipping::norm(1.0), 7, loss, 1e-3, &mut scaler).unwrap_err());
    assert!(e.contains("gradient norm is NaN at step 7"), "{e}");
    assert!(e.contains("NaN in gradient of `transformer.h.0.mlp.c_proj.bias` (layer 0)"), "{e}");
}

#[test]
fn gradients_are_scanned_in_backward_order() {
    let mut m = model(tiny(Arch::Decoder), 12);
    lm_step(&mut m);
    let off = |m: &Transformer, n: &str| m.layout.get(n).unwrap().offset;
    let (early, late) = (off(&m, "transformer.h.0.mlp.c_proj.bias"), off(&m, "transformer.h.1.attn.c_attn.weight"));
    m.grads[early + 1] = f32::INFINITY;
    m.grads[late + 3] = f32::NAN;
    // Backward reaches layer 1 before layer 0.
    assert_eq!(
        first_nonfinite(&m).as_deref(),
        Some("NaN in gradient of `transformer.h.1.attn.c_attn.weight` (layer 1)")
    );
    m.grads[late + 3] = 0.0;
    assert_eq!(first_nonfinite(&m).as_deref(), Some("inf in gradient of `transformer.h.0.mlp.c_proj.bias` (layer 0)"));
    m.grads[early + 1] = f32::NEG_INFINITY;
    assert_eq!(first_nonfinite(&m).as_deref(), Some("-inf in gradient of `transformer.h.0.mlp.c_proj.bias` (layer 0)"));
    m.grads[early + 1] = 0.0;
    assert_eq!(first_nonfinite(&m), None);
}

// ---- the command line ----

fn lmlab(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lmlab"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run lmlab")
}

fn ok(o: &Output) -> String {
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    err.into_owned()
}

fn fails(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

const CORPUS: &str =
    "ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n";

fn config(dir: &Path, extra: &str) -> String {
    let data = dir.join("corpus.txt");
    std::fs::write(&data, CORPUS.repeat(20)).unwrap();
    let cfg = dir.join("run.toml");
    let text = format!(
        "[model]\nblock_size = 16\nn_layer = 3\nn_head = 2\nn_embd = 16\nactivation = \"relu\"\n[data]\npath = {:?}\n\
         [train]\nout_dir = {:?}\nbatch_size = 2\nmax_iters = 12\neval_interval = 4\neval_iters = 1\nlog_interval = 2\n\
         threads = 1\n{extra}",
        data.display().to_string(),
        dir.join("run").display().to_string()
    );
    std::fs::write(&cfg, text).unwrap();
    cfg.display().to_string()
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn training_logs_health_and_plot_draws_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "health_interval = 3\n");
    ok(&lmlab(&["train", "--config", &cfg, "--quiet"], &[]));
    let lines = metrics(dir.path());
    let health: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("health").is_some()).collect();
    let iters: Vec<u64> = health.iter().map(|l| l["iter"].as_u64().unwrap()).collect();
    assert_eq!(iters, [3, 6, 9, 12]);
    for h in &health {
        let layers = h["health"]["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        for l in layers {
            for key in ["grad_norm", "update_ratio", "act_mean", "act_std", "dead_share", "attn_entropy"] {
                assert!(l[key].as_f64().is_some_and(f64::is_finite), "{key} in {l}");
            }
            let e = l["attn_entropy"].as_f64().unwrap();
            assert!(e > 0.0 && e <= (16f64).ln(), "entropy {e}");
        }
        assert!(h["health"]["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "transformer.h.2.mlp.c_fc.weight"));
    }

    // PNG into RUN_DIR/plots.
    let run = dir.path().join("run");
    let run = run.to_str().unwrap();
    ok(&lmlab(&["plot", run], &[]));
    let plots = dir.path().join("run/plots");
    for name in [
        "loss",
        "lr",
        "grad_norm",
        "health_grad_norm",
        "health_update_ratio",
        "health_act_std",
        "health_dead_share",
        "health_attn_entropy",
    ] {
        let bytes = std::fs::read(plots.join(format!("{name}.png"))).unwrap_or_else(|e| panic!("{name}.png: {e}"));
        assert!(bytes.len() > 1000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}.png");
    }
    assert!(!plots.join("health_cross_attn_entropy.png").exists(), "a decoder-only model has no cross-attention");
    // SVG elsewhere.
    let out = dir.path().join("svg");
    ok(&lmlab(&["plot", run, "--format", "svg", "--out", out.to_str().unwrap()], &[]));
    for name in ["loss", "health_attn_entropy"] {
        let text = std::fs::read_to_string(out.join(format!("{name}.svg"))).unwrap();
        assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"), "{name}.svg");
        assert!(text.contains("<polyline") || text.contains("<path"), "{name}.svg has lines");
    }
    // Without a font: no text, still charts, and a note.
    let bare = dir.path().join("bare");
    let err = ok(&lmlab(&["plot", run, "--out", bare.to_str().unwrap()], &[("LMLAB_FONT", "none")]));
    assert!(err.contains("no text"), "{err}");
    assert!(std::fs::read(bare.join("loss.png")).unwrap().starts_with(b"\x89PNG"));
    fails(&lmlab(&["plot", run], &[("LMLAB_FONT", "/no/such/font.ttf")]), &["LMLAB_FONT", "font"]);

    // Lines of other kinds are passed over; a corrupt line is named.
    let path = dir.path().join("run/metrics.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"skipped\":true}\n");
    std::fs::write(&path, &text).unwrap();
    ok(&lmlab(&["plot", run], &[]));
    let n = text.lines().count();
    text.push_str("{\"iter\": 14, \"loss\": 2.0\n");
    std::fs::write(&path, &text).unwrap();
    fails(&lmlab(&["plot", run], &[]), &[&format!("metrics.jsonl:{}", n + 1), "not valid JSON"]);
}

#[test]
fn health_is_off_by_default_and_plot_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    ok(&lmlab(&["train", "--config", &cfg, "--quiet"], &[]));
    assert!(metrics(dir.path()).iter().all(|l| l.get("health").is_none()));
    let run = dir.path().join("run");
    ok(&lmlab(&["plot", run.to_str().unwrap()], &[]));
    assert!(run.join("plots/loss.png").exists() && !run.join("plots/health_grad_norm.png").exists());

    fails(&lmlab(&["plot", "/no/such/run"], &[]), &["/no/such/run", "does not exist"]);
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    fails(&lmlab(&["plot", empty.to_str().unwrap()], &[]), &["metrics.jsonl", "not found"]);
    std::fs::write(empty.join("metrics.jsonl"), "").unwrap();
    fails(&lmlab(&["plot", empty.to_str().unwrap()], &[]), &["metrics.jsonl", "empty"]);
    let o = lmlab(&["plot", run.to_str().unwrap(), "--format", "gif"], &[]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("gif"));

    // The schedule as a chart.
    let svg = dir.path().join("lr.svg");
    let o = lmlab(&["schedule", "--config", &cfg, "--plot", svg.to_str().unwrap()], &[]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("iter"), "the table is still printed");
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    let png = dir.path().join("lr.png");
    ok(&lmlab(&["schedule", "--config", &cfg, "--plot", png.to_str().unwrap()], &[]));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    fails(&lmlab(&["schedule", "--config", &cfg, "--plot", "lr.txt"], &[]), &["lr.txt", ".png or .svg"]);
}

#[test]
fn activations_are_listed_in_forward_order() {
    let mut m = model(tiny(Arch::Decoder), 13);
    assert!(m.activations().is_empty() && m.blocks().is_empty(), "before any forward pass");
    lm_step(&mut m);
    let acts = m.activations();
    let names: Vec<&str> = acts.iter().map(|a| a.name.as_str()).collect();
    let block = |i: usize| {
        [
            "ln_1.out",
            "attn.qkv",
            "attn.probs",
            "attn.y",
            "attn.out",
            "attn.residual",
            "ln_2.out",
            "mlp.fc",
            "mlp.act",
            "mlp.out",
            "mlp.residual",
        ]
        .map(|s| format!("transformer.h.{i}.{s}"))
    };
    let mut want = vec!["transformer.emb".to_string()];
    want.extend(block(0));
    want.extend(block(1));
    want.extend(["transformer.ln_f.out", "logits", "losses"].map(String::from));
    assert_eq!(names, want);
    let (n, c) = (B * T, 8);
    let len = |name: &str| acts.iter().find(|a| a.name == name).unwrap().data.len();
    assert_eq!(len("transformer.h.1.attn.qkv"), n * 3 * c);
    assert_eq!(len("transformer.h.1.attn.probs"), B * 2 * T * T);
    assert_eq!(len("transformer.h.1.mlp.fc"), n * 4 * c);
    assert_eq!(len("logits"), n * 11);
    assert_eq!(m.logits(), acts[acts.len() - 2].data);
    // Flash keeps the log-sum-exp instead of the probabilities; dropout adds its outputs.
    let mut m = model(
        ModelConfig { attention: AttentionKind::Flash, dropout: 0.1, attn_dropout: Some(0.0), ..tiny(Arch::Decoder) },
        13,
    );
    lm_step(&mut m);
    let names: Vec<String> = m.activations().into_iter().map(|a| a.name).collect();
    for n in
        ["transformer.emb_drop", "transformer.h.0.attn.lse", "transformer.h.0.attn.drop", "transformer.h.1.mlp.drop"]
    {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }
    assert!(!names.iter().any(|x| x.ends_with("attn.probs")));
}

/// The translation and classification loops log health too; an encoder-decoder's lines carry
/// both stacks and the cross-attention entropy, which `lmlab plot` draws.
#[test]
fn translation_and_classification_log_health() {
    use lmlab::config::RunConfig;
    use lmlab::train::{self, TrainOptions};
    let dir = tempfile::tempdir().unwrap();
    let words = ["der", "hund", "eine", "katze", "sieht", "den", "ball", "rot"];
    let sentence =
        |i: usize, n: usize| (0..n).map(|j| words[(i * 3 + j * 5) % words.len()]).collect::<Vec<_>>().join(" ");
    let write = |name: &str, lines: Vec<String>| {
        let p = dir.path().join(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p.display().to_string()
    };
    let src: Vec<String> = (0..60).map(|i| sentence(i, 2 + i % 3)).collect();
    let tgt: Vec<String> = src.iter().map(|s| s.to_uppercase()).collect();
    let (s, t) = (write("train.src", src), write("train.tgt", tgt));
    let run = dir.path().join("mt");
    let cfg = format!(
        "[model]\narch = \"encoder_decoder\"\nblock_size = 16\nn_layer = 1\nn_head = 2\nn_embd = 16\n\
         [data]\ntask = \"translate\"\nsrc_train = {s:?}\ntgt_train = {t:?}\nsrc_val = {s:?}\ntgt_val = {t:?}\n\
         vocab_size = 300\nmax_len = 12\n[train]\nout_dir = {:?}\nbatch_size = 8\nmax_iters = 4\neval_interval = 4\n\
         log_interval = 2\nhealth_interval = 2\nthreads = 1\n",
        run.display().to_string()
    );
    train::train(
        RunConfig::from_toml_str(&cfg, &[]).unwrap(),
        None,
        &TrainOptions { quiet: true, ..Default::default() },
    )
    .unwrap();
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let health: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("health").is_some())
        .collect();
    assert_eq!(health.iter().map(|h| h["iter"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 4]);
    let layers = health[0]["health"]["layers"].as_array().unwrap();
    let stacks: Vec<&str> = layers.iter().map(|l| l["stack"].as_str().unwrap()).collect();
    assert_eq!(stacks, ["encoder", "decoder"]);
    assert!(layers[0].get("cross_attn_entropy").is_none());
    assert!(layers[1]["cross_attn_entropy"].as_f64().unwrap() > 0.0);
    ok(&lmlab(&["plot", run.to_str().unwrap(), "--format", "svg"], &[]));
    let svg = std::fs::read_to_string(run.join("plots/health_cross_attn_entropy.svg")).unwrap();
    assert!(svg.contains("decoder 0") && !svg.contains("encoder 0"), "only the decoder has cross-attention");
    let svg = std::fs::read_to_string(run.join("plots/health_grad_norm.svg")).unwrap();
    assert!(svg.contains("encoder 0") && svg.contains("decoder 0"), "the legend names the stacks");

    let rows: Vec<String> = std::iter::once("sentence\tlabel".to_string())
        .chain((0..40).map(|i| format!("{} {}\t{}", sentence(i, 3), ["good", "bad"][i % 2], i % 2)))
        .collect();
    let data = write("train.tsv", rows);
    let run = dir.path().join("cls");
    let cfg = format!(
        "[model]\narch = \"encoder\"\nblock_size = 12\nn_layer = 2\nn_head = 2\nn_embd = 16\n\
         [data]\ntask = \"classify\"\nformat = \"sst2\"\ntrain = {data:?}\ntest = {data:?}\nvocab_size = 300\nmax_len = 10\n\
         [train]\nout_dir = {:?}\nbatch_size = 8\nmax_iters = 3\neval_interval = 3\nlog_interval = 1\nhealth_interval = 1\n\
         threads = 1\n",
        run.display().to_string()
    );
    train::train(
        RunConfig::from_toml_str(&cfg, &[]).unwrap(),
        None,
        &TrainOptions { quiet: true, ..Default::default() },
    )
    .unwrap();
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let n = text.lines().filter(|l| l.contains("\"health\"")).count();
    assert_eq!(n, 3, "{text}");
}
