//! Recovery fine-tuning of a pruned model: with every optimizer (momentum, weight decay,
//! AMSGrad, centered RMSprop, Adagrad's starting sum) the pruned weights stay exactly 0.0 and
//! their optimizer state 0 through training steps, while the others train; and end to end,
//! `lmlab prune` → `info` → `train --resume` (twice, and with --config) keeps the zeros, with
//! clear errors for bad arguments and quantized input.

mod common;
use common::lmlab_text as lmlab;
use lmlab::compress::prune::{prunable_weights, prune_model, Method, Pattern, PruneSpec};
use lmlab::config::{OptimSection, OptimizerName};
use lmlab::model::transformer::{ModelConfig, SparsityMask, Transformer};
use lmlab::optim::{Clipping, LossScaler, Optimizer};
use lmlab::train::optimizer_step;
use std::path::Path;

const B: usize = 4;
const T: usize = 16;

fn model() -> Transformer {
    let cfg = ModelConfig { vocab_size: 13, block_size: T, n_layer: 2, n_head: 2, n_embd: 32, ..Default::default() };
    let mut m = Transformer::new(cfg, B).unwrap();
    m.init(5);
    m
}

/// One training step on a fixed batch (dropout off in this model).
fn step(m: &mut Transformer, opt: &mut Optimizer, k: u64) {
    let idx: Vec<u32> = (0..B * T).map(|i| ((i * 7 + i / 5 + k as usize) % 13) as u32).collect();
    let tg: Vec<i32> = (0..B * T).map(|i| ((i * 3 + 1 + k as usize) % 13) as i32).collect();
    m.zero_grad();
    let loss = m.forward_lm(&idx, Some(&tg), B, T, true, k).unwrap().unwrap();
    m.backward().unwrap();
    optimizer_step(m, opt, Clipping::norm(1.0), k, loss, 3e-2, &mut LossScaler::disabled()).unwrap();
}

fn optimizers() -> Vec<(&'static str, OptimSection)> {
    let d = OptimSection::default;
    let wd = Some(0.1);
    vec![
        ("sgd momentum", OptimSection { name: OptimizerName::Sgd, momentum: 0.9, weight_decay: wd, ..d() }),
        (
            "sgd nesterov",
            OptimSection { name: OptimizerName::Sgd, momentum: 0.9, nesterov: true, weight_decay: wd, ..d() },
        ),
        ("adam", OptimSection { name: OptimizerName::Adam, weight_decay: wd, ..d() }),
        ("adam amsgrad", OptimSection { name: OptimizerName::Adam, amsgrad: true, weight_decay: wd, ..d() }),
        ("adamw", OptimSection { name: OptimizerName::AdamW, weight_decay: wd, ..d() }),
        (
            "rmsprop",
            OptimSection { name: OptimizerName::RmsProp, momentum: 0.9, centered: true, weight_decay: wd, ..d() },
        ),
        (
            "adagrad",
            OptimSection { name: OptimizerName::Adagrad, initial_accumulator_value: 0.1, weight_decay: wd, ..d() },
        ),
    ]
}

#[test]
fn pruned_weights_stay_exactly_zero_with_every_optimizer() {
    let spec = PruneSpec { method: Method::MagnitudeLayer, pattern: Pattern::NofM { n: 2, m: 4 }, include_head: false };
    for (what, section) in optimizers() {
        for masked in [true, false] {
            let mut m = model();
            let mut opt = section.build(&m.layout).unwrap();
            // Dense steps first, so momentum and moments are nonzero for every weight.
            for k in 0..3 {
                step(&mut m, &mut opt, k);
            }
            prune_model(&mut m, &spec, &[], &mut |_, _| {}).unwrap();
            let names = prunable_weights(&m, false);
            let mask = SparsityMask::from_zeros(&m.layout, &m.params, &names).unwrap();
            let held: Vec<usize> =
                names.iter().flat_map(|n| m.layout.get(n).unwrap().range()).filter(|&i| m.params[i] == 0.0).collect();
            assert_eq!(held.len(), mask.held());
            let before = m.params.clone();
            if masked {
                // The optimizer's stale state is left as it is: the step itself must cope.
                m.set_sparsity_mask(Some(mask));
            }
            for k in 3..8 {
                step(&mut m, &mut opt, k);
            }
            let moved = held.iter().filter(|&&i| m.params[i] != 0.0).count();
            if !masked {
                assert!(moved > held.len() / 2, "{what}: without the mask pruned weights move ({moved})");
                continue;
            }
            assert!(held.iter().all(|&i| m.params[i].to_bits() == 0), "{what}: a pruned weight is not +0.0");
            assert!(held.iter().all(|&i| m.grads[i] == 0.0), "{what}: a pruned weight has a gradient");
            for (state, buf) in opt.state_tensors() {
                assert!(held.iter().all(|&i| buf[i] == 0.0), "{what}: {state} of a pruned weight is not 0");
            }
            let kept_moved = (0..m.params.len()).filter(|i| m.params[*i] != before[*i]).count();
            assert!(kept_moved > m.params.len() / 2, "{what}: the other weights train ({kept_moved})");
        }
    }
}

const TEXT: &str = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n";

fn write_config(dir: &Path, data: &Path) -> std::path::PathBuf {
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\nblock_size = 16\nn_layer = 2\nn_head = 2\nn_embd = 32\n[data]\npath = \"{}\"\n\
             [train]\nout_dir = \"{}\"\nbatch_size = 4\nmax_iters = 6\neval_interval = 3\neval_iters = 2\n\
             threads = 2\n[optim]\nname = \"sgd\"\nmomentum = 0.9\nweight_decay = 0.1\nwarmup_iters = 0\n",
            data.display(),
            dir.join("dense").display()
        ),
    )
    .unwrap();
    cfg
}

fn zeros_of(ckpt: &Path) -> (Vec<(String, usize)>, serde_json::Value) {
    let (ok, out, err) = lmlab(&["info", ckpt.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let z = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t["zeros"].as_u64().unwrap() as usize))
        .collect();
    (z, j)
}

#[test]
fn cli_prune_info_and_recovery_training_keep_the_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(&data, TEXT.repeat(30)).unwrap();
    let cfg = write_config(dir.path(), &data);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (ok, _, err) = lmlab(&["train", "--config", &s(&cfg), "--quiet"]);
    assert!(ok, "{err}");
    let dense = dir.path().join("dense/ckpt");
    let pruned = dir.path().join("pruned");
    let (ok, out, err) = lmlab(&[
        "prune",
        "--checkpoint",
        &s(&dense),
        "--method",
        "wanda",
        "--sparsity",
        "0.6",
        "--calib",
        &s(&data),
        "--calib-samples",
        "8",
        "--out",
        &s(&pruned),
        "--json",
    ]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["tensors"].as_array().unwrap().len(), 8);
    assert_eq!(j["calib_tokens"], 8 * 16);
    let (z, info) = zeros_of(&pruned);
    assert_eq!(info["prune"]["method"], "wanda");
    let c_fc = z.iter().find(|(n, _)| n == "transformer.h.0.mlp.c_fc.weight").unwrap().1;
    assert_eq!(c_fc, 128 * (32 * 6 / 10), "60% of each row of 32 inputs: 19 per row");
    let (ok, text, _) = lmlab(&["info", &s(&pruned)]);
    assert!(ok && text.contains("pruned: wanda (60.0% unstructured), 8 tensors"), "{text}");

    // Recovery: resume for 4 steps, then again with --config (which has no [prune] section).
    let rec = dir.path().join("rec");
    let (ok, _, err) = lmlab(&[
        "train",
        "--resume",
        &s(&pruned),
        "--quiet",
        "--set",
        "train.max_iters=10",
        "--set",
        &format!("train.out_dir={}", s(&rec)),
    ]);
    assert!(ok, "{err}");
    let (z1, j1) = zeros_of(&rec.join("ckpt"));
    assert_eq!(j1["step"], 10);
    assert_eq!(z1, z, "the zeros are exactly the pruned ones");
    assert_eq!(j1["prune"], info["prune"], "the [prune] record travels with the checkpoints");
    let rec2 = dir.path().join("rec2");
    let (ok, _, err) = lmlab(&[
        "train",
        "--config",
        &s(&cfg),
        "--resume",
        &s(&rec.join("ckpt")),
        "--quiet",
        "--set",
        "train.max_iters=13",
        "--set",
        &format!("train.out_dir={}", s(&rec2)),
    ]);
    assert!(ok, "{err}");
    let (z2, j2) = zeros_of(&rec2.join("ckpt"));
    assert_eq!(z2, z);
    assert_eq!(j2["prune"], info["prune"]);
    // The weights did train.
    let a = std::fs::read(pruned.join("model.safetensors")).unwrap();
    let b = std::fs::read(rec2.join("ckpt/model.safetensors")).unwrap();
    assert_ne!(a, b);

    // A fresh run with a [prune] section has nothing to hold.
    let (ok, _, err) = lmlab(&["train", "--config", &s(&rec2.join("ckpt/config.toml")), "--quiet"]);
    assert!(!ok && err.contains("continue that checkpoint with --resume"), "{err}");
}

#[test]
fn cli_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(&data, TEXT.repeat(30)).unwrap();
    let mut m = model();
    m.init(1);
    let tok = lmlab::data::Tokenizer::Char(lmlab::data::CharTokenizer::from_corpus("abcdefghijklm").unwrap());
    let ck = dir.path().join("ck");
    lmlab::io::checkpoint::save_new(&ck, &m, &tok).unwrap();
    let (c, out) = (ck.to_str().unwrap(), dir.path().join("out"));
    let o = out.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["prune", "--checkpoint", c, "--out", o];
        args.extend_from_slice(extra);
        lmlab(&args)
    };
    for (args, msg) in [
        (vec!["--method", "magnitude", "--sparsity", "-0.1"], "sparsity must be in [0, 1)"),
        (vec!["--method", "magnitude", "--sparsity", "1"], "sparsity must be in [0, 1)"),
        (vec!["--method", "magnitude", "--nm", "4:2"], "bad N:M pattern"),
        (vec!["--method", "magnitude", "--nm", "2:4", "--sparsity", "0.5"], "cannot be used with"),
        (vec!["--method", "magnitude"], "--sparsity"),
        (vec!["--method", "wanda", "--sparsity", "0.5"], "needs calibration text: --calib FILE"),
        (vec!["--method", "obd", "--sparsity", "0.5"], "unknown pruning method"),
    ] {
        let (ok, _, err) = run(&args);
        assert!(!ok && err.contains(msg), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?}: nothing is written on an error");
    }
    let q = dir.path().join("q");
    let (ok, _, err) = lmlab(&["quantize", "--checkpoint", c, "--scheme", "q8_0", "--out", q.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, _, err) = lmlab(&[
        "prune",
        "--checkpoint",
        q.to_str().unwrap(),
        "--method",
        "magnitude",
        "--sparsity",
        "0.5",
        "--out",
        o,
    ]);
    assert!(!ok && err.contains("is a quantized checkpoint: prune the float checkpoint"), "{err}");
    // The right order: prune, then quantize; a zero weight stays zero in Q8_0.
    let (ok, _, err) = run(&["--method", "magnitude", "--sparsity", "0.5"]);
    assert!(ok, "{err}");
    let q = dir.path().join("q2");
    let (ok, _, err) = lmlab(&["quantize", "--checkpoint", o, "--scheme", "q8_0", "--out", q.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (before, _) = zeros_of(&out);
    let (after, _) = zeros_of(&q);
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        assert!(a >= b, "{name}: {a} zeros after quantizing, {b} before");
    }
}

/// The charts of scripts/prune_table.py: `lmlab plot --xy` draws any lines from JSON.
#[test]
fn plot_xy_draws_any_lines_from_json() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("chart.json");
    std::fs::write(
        &spec,
        r#"{"title": "val loss", "x": "sparsity (%)", "y": "loss",
            "series": [{"name": "a", "points": [[0, 1.9], [50, 2.0], [90, 3.1]]}, {"name": "b", "points": [[50, 1.95]]}]}"#,
    )
    .unwrap();
    let (s, png, svg) = (spec.to_str().unwrap(), dir.path().join("c.png"), dir.path().join("c.svg"));
    let fails = |args: &[&str], needle: &str| {
        let (ok, _, err) = lmlab(args);
        assert!(!ok && err.contains(needle) && !err.contains("panicked"), "{args:?}: {err}");
    };
    let (ok, _, err) = lmlab(&["plot", "--xy", s, "--out", png.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let (ok, _, err) = lmlab(&["plot", "--xy", s, "--out", svg.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    fails(&["plot", "--xy", s], "--out");
    fails(&["plot", "--xy", s, "--out", "c.gif"], ".png or .svg");
    fails(&["plot"], "RUN_DIR");
    std::fs::write(&spec, r#"{"title": "t", "x": "x", "y": "y", "series": []}"#).unwrap();
    fails(&["plot", "--xy", s, "--out", png.to_str().unwrap()], "no finite points");
}
