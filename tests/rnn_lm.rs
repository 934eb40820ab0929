//! The LSTM, GRU and causal-CNN language models (src/model/baseline/, issue 19):
//! - logits, loss and every parameter gradient equal those of the same models built from torch.nn
//!   modules in float64 (scripts/make_rnn_lm_fixtures.py);
//! - the whole model's gradient equals finite differences, dropout on;
//! - generation with a carried state (recurrent) or a receptive-field window (CNN) gives the
//!   logits of a full forward pass over the sequence;
//! - a run resumed from its checkpoint continues bit for bit, and the checkpoint samples;
//! - bad configurations are errors that name the problem.

mod common;
use common::assert_close;
use lmlab::config::RunConfig;
use lmlab::io::checkpoint;
use lmlab::model::baseline::BaselineLm;
use lmlab::model::transformer::ModelConfig;
use lmlab::model::{InitScheme, LanguageModel};
use lmlab::train::{train, TrainOptions};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::Value;
use std::path::Path;

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn load_fixture(name: &str) -> Value {
    let path = common::fixture(&format!("rnn_lm/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn whole_models_equal_pytorch() {
    for name in ["lstm", "gru", "cnn", "cnn_k3"] {
        let fx = load_fixture(name);
        let cfg: ModelConfig = serde_json::from_value(fx["config"].clone()).unwrap();
        let (b, t) = (fx["B"].as_u64().unwrap() as usize, fx["T"].as_u64().unwrap() as usize);
        let mut m = BaselineLm::new(cfg, b, false).unwrap();
        let params = fx["params"].as_object().unwrap();
        assert_eq!(params.len(), m.layout.tensors.len(), "{name}: the same tensors as torch");
        for tv in m.layout.tensors.clone() {
            let want = params.get(&tv.name).unwrap_or_else(|| panic!("{name}: torch has no {}", tv.name));
            let vals: Vec<f32> = f64s(want).iter().map(|&x| x as f32).collect();
            assert_eq!(vals.len(), tv.numel(), "{name}: {} size", tv.name);
            m.params[tv.range()].copy_from_slice(&vals);
        }
        let idx: Vec<u32> = f64s(&fx["idx"]).iter().map(|&x| x as u32).collect();
        let targets: Vec<i32> = f64s(&fx["targets"]).iter().map(|&x| x as i32).collect();
        let loss = m.forward_lm(&idx, Some(&targets), b, t, true, 7).unwrap().unwrap();
        assert_close(&format!("{name} logits"), m.logits(), &f64s(&fx["logits"]), 1e-4);
        let want_loss = fx["loss"].as_f64().unwrap();
        assert!((loss as f64 - want_loss).abs() < 1e-4 * want_loss, "{name}: loss {loss} vs torch {want_loss}");
        m.zero_grad();
        m.backward_scaled(1.0).unwrap();
        let grads = fx["grads"].as_object().unwrap();
        for tv in &m.layout.tensors {
            assert_close(&format!("{name} grad {}", tv.name), &m.grads[tv.range()], &f64s(&grads[&tv.name]), 1e-4);
        }
    }
}

/// A small model of `arch` with dropout, random weights of order 0.5.
fn small(toml_model: &str, dropout: f32, max_batch: usize) -> BaselineLm {
    let text = format!("[model]\n{toml_model}\nvocab_size = 13\nblock_size = 20\ndropout = {dropout}\n");
    let cfg = RunConfig::from_toml_str(&text, &[]).unwrap();
    let mut m = BaselineLm::new(cfg.model, max_batch, false).unwrap();
    m.init_with(InitScheme::Gpt2, 0.02, 3);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    m.params.iter_mut().for_each(|p| *p = rng.gen_range(-0.5..0.5));
    m
}

const MODELS: [&str; 4] = [
    "arch = \"lstm\"\nn_layer = 2\nn_embd = 6",
    "arch = \"gru\"\nn_layer = 2\nn_embd = 5\nrnn_hidden = 7\ntie_embeddings = false",
    "arch = \"cnn\"\nn_layer = 3\nn_embd = 6",
    "arch = \"cnn\"\nn_layer = 2\nn_embd = 5\nkernel_size = 3\ndilations = [1, 3]\nactivation = \"silu\"\nfinal_norm = false",
];

#[test]
fn gradients_equal_finite_differences_with_dropout() {
    let (b, t) = (2, 7);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let idx: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..13)).collect();
    let mut targets: Vec<i32> = (0..b * t).map(|_| rng.gen_range(0..13)).collect();
    targets[3] = -1;
    for model in MODELS {
        let mut m = small(model, 0.2, b);
        m.zero_grad();
        m.forward_lm(&idx, Some(&targets), b, t, true, 99).unwrap();
        m.backward_scaled(1.0).unwrap();
        let (x, analytic) = (m.params.clone(), m.grads.clone());
        common::check(model, &x, &analytic, |p| {
            m.params.copy_from_slice(p);
            m.forward_lm(&idx, Some(&targets), b, t, true, 99).unwrap().unwrap() as f64
        });
    }
}

#[test]
fn generation_with_state_equals_the_full_forward_pass() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(8);
    for model in MODELS {
        let mut m = small(model, 0.0, 1);
        let (block, v) = (m.config.block_size, m.config.vocab_size);
        // The CNN also runs past block_size: its window is its receptive field.
        let len = if model.contains("cnn") { block + 9 } else { block };
        let tokens: Vec<u32> = (0..len).map(|_| rng.gen_range(0..v as u32)).collect();
        let mut state = m.gen_state();
        let mut stepped = Vec::new();
        for &tok in &tokens {
            stepped.push(m.step(&mut state, tok).unwrap().to_vec());
        }
        for (p, got) in stepped.iter().enumerate() {
            let start = (p + 1).saturating_sub(block);
            let window = &tokens[start..=p];
            m.forward_lm(window, None, 1, window.len(), false, 0).unwrap();
            let want: Vec<f64> = m.logits()[(window.len() - 1) * v..].iter().map(|&x| x as f64).collect();
            assert_close(&format!("{model}: position {p}"), got, &want, 1e-5);
        }
    }
}

fn config(arch_lines: &str, data: &Path, out: &Path, max_iters: u64) -> RunConfig {
    let text = format!(
        "[model]\n{arch_lines}\nblock_size = 16\ndropout = 0.1\n[data]\npath = \"{}\"\n[train]\nout_dir = \"{}\"\n\
         batch_size = 4\nmax_iters = {max_iters}\neval_interval = 3\neval_iters = 2\nlog_interval = 1\nthreads = 2\n\
         [optim]\nwarmup_iters = 2\nlr_decay_iters = 8\n",
        data.display(),
        out.display()
    );
    RunConfig::from_toml_str(&text, &[]).unwrap()
}

#[test]
fn resume_continues_bit_for_bit_and_the_checkpoint_samples() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(&data, "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind\n".repeat(30))
        .unwrap();
    let quiet = TrainOptions { quiet: true, ..Default::default() };
    for arch in ["arch = \"lstm\"\nn_layer = 2\nn_embd = 24", "arch = \"cnn\"\nn_layer = 3\nn_embd = 16"] {
        let straight = dir.path().join("straight");
        train(config(arch, &data, &straight, 8), None, &quiet).unwrap();
        let split = dir.path().join("split");
        train(config(arch, &data, &split, 4), None, &quiet).unwrap();
        let half: checkpoint::Checkpoint<BaselineLm> =
            checkpoint::load_lm(&split.join("ckpt"), 4, true, false).unwrap();
        assert_eq!(half.state.step, 4);
        train(config(arch, &data, &split, 8), Some(&split.join("ckpt")), &quiet).unwrap();
        let a: checkpoint::Checkpoint<BaselineLm> =
            checkpoint::load_lm(&straight.join("ckpt"), 4, true, false).unwrap();
        let b: checkpoint::Checkpoint<BaselineLm> = checkpoint::load_lm(&split.join("ckpt"), 4, true, false).unwrap();
        assert_eq!((a.state.step, b.state.step), (8, 8));
        assert!(a.model.params != half.model.params, "{arch}: the second half changed the weights");
        assert!(a.model.params == b.model.params, "{arch}: weights differ after resume");
        assert!(a.optimizer.unwrap() == b.optimizer.unwrap(), "{arch}: optimizer state differs after resume");

        // The checkpoint says what it holds: a Transformer loader refuses it by name.
        let ckpt = straight.join("ckpt");
        let err = format!("{:#}", checkpoint::load(&ckpt, 1, false).err().unwrap());
        assert!(err.contains("model.arch = \"") && err.contains("not a Transformer"), "{err}");
        // lmlab sample: greedy generation is deterministic; beam search is refused.
        let path = ckpt.to_str().unwrap();
        let args = ["sample", "--checkpoint", path, "--temperature", "0", "--max-new-tokens", "40", "--prompt", "To"];
        let first = common::ok(common::lmlab(&args));
        assert_eq!(first, common::ok(common::lmlab(&args)), "{arch}: greedy sampling is deterministic");
        assert!(first.starts_with("To") && first.trim_end().chars().count() >= 10, "{arch}: {first:?}");
        let (ok, _, err) = common::lmlab_text(&["sample", "--checkpoint", path, "--beam", "2"]);
        assert!(!ok && err.contains("beam search runs on a Transformer"), "{err}");
        std::fs::remove_dir_all(&straight).unwrap();
        std::fs::remove_dir_all(&split).unwrap();
    }
}

fn config_error(text: &str, sets: &[&str]) -> String {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    format!("{:#}", RunConfig::from_toml_str(text, &sets).unwrap_err())
}

#[test]
fn bad_configs_name_the_problem() {
    let lstm = "[model]\narch = \"lstm\"\n";
    for (text, sets, want) in [
        (lstm, &["model.rnn_hiden=32"][..], "rnn_hiden"),
        ("[model]\narch = \"rnn\"\n", &[][..], "unknown variant `rnn`"),
        (lstm, &["model.rnn_hidden=64"], "tie_embeddings = true needs model.rnn_hidden = model.n_embd"),
        (lstm, &["model.kernel_size=3"], "model.kernel_size does not apply to model.arch = \"lstm\""),
        (lstm, &["model.n_head=8"], "model.n_head does not apply"),
        (lstm, &["model.position=\"rope\""], "model.position does not apply"),
        (lstm, &["model.bias=false"], "always has biases"),
        (lstm, &["train.precision=\"bf16\""], "trains in fp32 only"),
        (lstm, &["train.health_interval=10"], "health_interval"),
        ("[model]\narch = \"cnn\"\nn_layer = 3\ndilations = [1, 2]\n", &[], "model.dilations has 2 entries"),
        ("[model]\narch = \"cnn\"\n", &["model.kernel_size=1"], "kernel_size must be at least 2"),
        ("[model]\narch = \"cnn\"\n", &["model.activation=\"swiglu\""], "swiglu"),
        ("[model]\narch = \"cnn\"\n", &["model.rnn_hidden=8"], "model.rnn_hidden does not apply"),
        ("[model]\nn_layer = 2\n", &["model.rnn_hidden=8"], "applies to the baselines without attention"),
        (
            "[model]\narch = \"gru\"\n[data]\ntask = \"classify\"\ntrain = \"a\"\ntest = \"b\"\nformat = \"sst2\"\n",
            &[],
            "needs model.arch = \"encoder\"",
        ),
    ] {
        let err = config_error(text, sets);
        assert!(err.contains(want), "{text} {sets:?}: {err}");
    }
    // The defaults of each baseline are valid.
    for arch in ["lstm", "gru", "cnn"] {
        RunConfig::from_toml_str(&format!("[model]\narch = \"{arch}\"\n"), &[]).unwrap();
    }
}
