//! Resuming continues a run exactly: N steps + checkpoint + resume + N steps gives bit-identical
//! weights and optimizer state to 2N uninterrupted steps (with dropout on, so the dropout masks
//! and the batch RNG must both be restored), for every optimizer, with gradient accumulation, in
//! f16 (where the loss scaler's state must be restored too), for the language model, translation
//! and classification.

use lmlab::config::RunConfig;
use lmlab::io::checkpoint;
use lmlab::train::{train, TrainOptions};
use std::path::Path;

fn config(data: &Path, out: &Path, max_iters: u64) -> RunConfig {
    config_with(data, out, max_iters, "")
}

/// The test config with `section.key=value` overrides, separated by spaces.
fn config_with(data: &Path, out: &Path, max_iters: u64, extra: &str) -> RunConfig {
    let text = format!(
        r#"
[model]
block_size = 16
n_layer = 2
n_head = 2
n_embd = 32
dropout = 0.1
[data]
path = "{}"
[train]
out_dir = "{}"
batch_size = 4
max_iters = {max_iters}
eval_interval = 3
eval_iters = 2
log_interval = 1
threads = 2
[optim]
warmup_iters = 2
lr_decay_iters = 8
"#,
        data.display(),
        out.display()
    );
    let sets: Vec<String> = extra.split_whitespace().map(String::from).collect();
    RunConfig::from_toml_str(&text, &sets).unwrap()
}

/// Runs 8 steps straight and 4 + resume + 4 with the overrides `extra` and asserts
/// bit-identical weights, optimizer and loss-scaler state; returns the scaler state and the
/// straight run's metrics log.
fn check_resume(extra: &str) -> (Option<lmlab::optim::ScalerState>, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(
        &data,
        "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n".repeat(30),
    )
    .unwrap();
    let quiet = TrainOptions { quiet: true, ..Default::default() };

    let straight = dir.path().join("straight");
    train(config_with(&data, &straight, 8, extra), None, &quiet).unwrap();

    let split = dir.path().join("split");
    train(config_with(&data, &split, 4, extra), None, &quiet).unwrap();
    let first_half = checkpoint::load(&split.join("ckpt"), 4, true).unwrap();
    assert_eq!(first_half.state.step, 4);
    train(config_with(&data, &split, 8, extra), Some(&split.join("ckpt")), &quiet).unwrap();

    let a = checkpoint::load(&straight.join("ckpt"), 4, true).unwrap();
    let b = checkpoint::load(&split.join("ckpt"), 4, true).unwrap();
    assert_eq!(a.state.step, 8);
    assert_eq!(b.state.step, 8);
    assert!(a.model.params != first_half.model.params, "{extra}: the second half changed the weights");
    assert!(a.model.params == b.model.params, "{extra}: weights differ after resume");
    let (sa, sb) = (a.optimizer.unwrap(), b.optimizer.unwrap());
    // Every step updates the optimizer, except f16 steps skipped for overflowing gradients.
    assert!(sa.steps == 8 || (extra.contains("f16") && (1..8).contains(&sa.steps)), "{extra}: {} updates", sa.steps);
    assert!(!sa.buffers.is_empty() || extra.contains("optim.name=sgd"), "{extra}: no optimizer state saved");
    assert!(sa == sb, "{extra}: optimizer state differs after resume");
    assert_eq!(a.state.loss_scaler, b.state.loss_scaler, "{extra}: loss scaler differs after resume");
    // The metrics log of the resumed run continues where the first half stopped.
    let log = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    assert!(log.lines().any(|l| l.contains("\"iter\":8")));
    (a.state.loss_scaler, std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap())
}

#[test]
fn n_plus_resume_plus_n_equals_2n_bit_for_bit() {
    check_resume("");
}

#[test]
fn resume_is_exact_for_every_optimizer_and_with_accumulation() {
    for extra in [
        "optim.name=sgd optim.momentum=0.9 optim.nesterov=true optim.weight_decay=0.01",
        "optim.name=sgd",
        "optim.name=adam optim.amsgrad=true",
        "optim.name=rmsprop optim.momentum=0.5 optim.centered=true",
        "optim.name=adagrad optim.lr_decay=0.01",
        "train.grad_accum_steps=3",
        "train.precision=bf16 optim.name=sgd optim.momentum=0.9",
    ] {
        check_resume(extra);
    }
}

/// f16 with a loss scale that overflows at first (steps skipped, scale halved) and grows every
/// two clean steps: the scale and the count of clean steps must survive the checkpoint.
#[test]
fn f16_resume_restores_the_loss_scaler_bit_for_bit() {
    for extra in [
        "train.precision=f16 train.loss_scale_init=16777216 train.loss_scale_growth_interval=2",
        "train.precision=f16 train.loss_scale_init=1048576 train.loss_scale_growth_interval=2 train.grad_accum_steps=2",
    ] {
        let (state, log) = check_resume(extra);
        let s = state.expect("an f16 checkpoint holds the loss scaler");
        let skipped = log.lines().filter(|l| l.contains("\"skipped\":true")).count();
        assert!(skipped > 0 && skipped < 8, "{extra}: {skipped} of 8 steps skipped:\n{log}");
        let init: f32 = extra.split("loss_scale_init=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!(s.scale < init, "{extra}: the scale backed off: {s:?}");
    }
}

#[test]
fn resume_refuses_a_different_optimizer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(&data, "Now is the winter of our discontent\n".repeat(40)).unwrap();
    let quiet = TrainOptions { quiet: true, ..Default::default() };
    let out = dir.path().join("run");
    train(config(&data, &out, 3), None, &quiet).unwrap();
    let e = train(config_with(&data, &out, 6, "optim.name=sgd optim.momentum=0.9"), Some(&out.join("ckpt")), &quiet)
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("adamw") && msg.contains("sgd"), "{msg}");
}

#[test]
fn same_seed_same_run_and_checkpoint_overwrite_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(&data, "All the world's a stage, and all the men and women merely players.\n".repeat(30)).unwrap();
    let quiet = TrainOptions { quiet: true, ..Default::default() };
    let (o1, o2) = (dir.path().join("a"), dir.path().join("b"));
    let s1 = train(config(&data, &o1, 5), None, &quiet).unwrap();
    let s2 = train(config(&data, &o2, 5), None, &quiet).unwrap();
    assert_eq!(s1.val_loss.to_bits(), s2.val_loss.to_bits());
    let m1 = std::fs::read(o1.join("ckpt/model.safetensors")).unwrap();
    let m2 = std::fs::read(o2.join("ckpt/model.safetensors")).unwrap();
    assert!(m1 == m2, "same seed, same bytes");
    // Checkpoints were overwritten at steps 3 and 5: no temporary directories are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&o1)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p.to_string_lossy().into_owned()
}

/// A toy language pair: the target is the source's words in reverse order, upper-cased.
fn toy_pairs(n: usize, seed: usize) -> (Vec<String>, Vec<String>) {
    let words = ["der", "hund", "eine", "katze", "sieht", "den", "ball", "rot", "blau", "laeuft"];
    let (mut src, mut tgt) = (Vec::new(), Vec::new());
    for i in 0..n {
        let len = 2 + (i * 7 + seed) % 4;
        let s: Vec<&str> = (0..len).map(|j| words[(i * 3 + j * 5 + seed) % words.len()]).collect();
        src.push(s.join(" "));
        tgt.push(s.iter().rev().map(|w| w.to_uppercase()).collect::<Vec<_>>().join(" "));
    }
    (src, tgt)
}

/// SST-2-style rows whose label is decided by one keyword.
fn toy_sentiment(n: usize, seed: usize) -> Vec<String> {
    let (pos, neg) = (["good", "great", "fine", "lovely", "superb"], ["bad", "awful", "poor", "dull", "weak"]);
    let filler = ["the", "movie", "was", "really", "a", "plot", "and", "acting"];
    let mut v = vec!["sentence\tlabel".to_string()];
    for i in 0..n {
        let label = (i * 7 + seed) % 2;
        let key = if label == 1 { pos[(i + seed) % 5] } else { neg[(i * 3 + seed) % 5] };
        let mut words: Vec<&str> = (0..4).map(|j| filler[(i * 5 + j * 3 + seed) % filler.len()]).collect();
        words.insert((i + seed) % 5, key);
        v.push(format!("{} \t{label}", words.join(" ")));
    }
    v
}

/// The `[data]` section and model architecture of a tiny translation or classification run.
fn task_sections(dir: &Path, task: &str) -> String {
    let w = |n: &str, l: &[String]| write_lines(dir, n, l);
    match task {
        "translate" => {
            let ((src, tgt), (vs, vt)) = (toy_pairs(60, 0), toy_pairs(10, 1));
            format!(
                "arch = \"encoder_decoder\"\n[data]\ntask = \"translate\"\nsrc_train = {:?}\ntgt_train = {:?}\n\
                 src_val = {:?}\ntgt_val = {:?}\nvocab_size = 300\nmax_len = 12\n",
                w("train.src", &src),
                w("train.tgt", &tgt),
                w("val.src", &vs),
                w("val.tgt", &vt)
            )
        }
        _ => format!(
            "arch = \"encoder\"\npooling = \"mean\"\n[data]\ntask = \"classify\"\nformat = \"sst2\"\ntrain = {:?}\n\
             test = {:?}\nvocab_size = 300\nmax_len = 10\nval_fraction = 0.2\n",
            w("train.tsv", &toy_sentiment(50, 0)),
            w("test.tsv", &toy_sentiment(20, 1))
        ),
    }
}

/// A tiny translation or classification run into `out` with dropout on and `extra` overrides.
fn task_config(sections: &str, out: &Path, max_iters: u64, extra: &str) -> RunConfig {
    let text = format!(
        "[model]\nblock_size = 16\nn_layer = 1\nn_head = 2\nn_embd = 16\ndropout = 0.1\n{sections}\
         [train]\nout_dir = {:?}\nbatch_size = 8\nmax_iters = {max_iters}\neval_interval = 3\nlog_interval = 1\n\
         threads = 2\nlabel_smoothing = 0.1\n[optim]\nlearning_rate = 3e-3\nwarmup_iters = 2\nlr_decay_iters = 12\n",
        out.display().to_string()
    );
    let sets: Vec<String> = extra.split_whitespace().map(String::from).collect();
    RunConfig::from_toml_str(&text, &sets).unwrap()
}

/// 12 steps straight against 6 + resume + 6: bit-identical weights and optimizer state. The
/// batch order crosses epoch boundaries after the resume (60 pairs / 40 training examples in
/// batches of 8), so the batcher state must be restored, not restarted.
fn check_task_resume(task: &str, extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    let sections = task_sections(dir.path(), task);
    let quiet = TrainOptions { quiet: true, ..Default::default() };
    let straight = dir.path().join("straight");
    let s = train(task_config(&sections, &straight, 12, extra), None, &quiet).unwrap();
    let split = dir.path().join("split");
    train(task_config(&sections, &split, 6, extra), None, &quiet).unwrap();
    let half = checkpoint::load(&split.join("ckpt"), 8, true).unwrap();
    assert_eq!(half.state.step, 6);
    // data.vocab_size changes on resume: a run that trained its BPE tokenizer again would get a
    // different vocabulary; the resumed run must keep the checkpoint's.
    let resumed_extra = format!("{extra} data.vocab_size=280");
    let r = train(task_config(&sections, &split, 12, &resumed_extra), Some(&split.join("ckpt")), &quiet).unwrap();

    let a = checkpoint::load(&straight.join("ckpt"), 8, true).unwrap();
    let b = checkpoint::load(&split.join("ckpt"), 8, true).unwrap();
    assert_eq!((a.state.step, b.state.step), (12, 12), "{task} {extra}");
    assert!(a.model.params != half.model.params, "{task} {extra}: the second half changed the weights");
    assert!(a.model.params == b.model.params, "{task} {extra}: weights differ after resume");
    assert!(a.optimizer.unwrap() == b.optimizer.unwrap(), "{task} {extra}: optimizer state differs after resume");
    assert_eq!(a.tokenizer.to_json().unwrap(), b.tokenizer.to_json().unwrap(), "{task}: the tokenizer was kept");
    assert_eq!(s.val_loss.to_bits(), r.val_loss.to_bits(), "{task} {extra}");
    // The metrics log goes on from step 6: one line per step, none twice.
    let log = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| v["iter"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=12).collect::<Vec<_>>(), "{task}");
}

#[test]
fn translation_resume_is_exact() {
    check_task_resume("translate", "");
    check_task_resume("translate", "train.grad_accum_steps=2 optim.name=sgd optim.momentum=0.9");
}

#[test]
fn classification_resume_is_exact() {
    check_task_resume("classify", "");
    check_task_resume("classify", "train.grad_accum_steps=3 optim.name=rmsprop");
}

#[test]
fn resume_refuses_another_task_or_changed_data() {
    let dir = tempfile::tempdir().unwrap();
    let sections = task_sections(dir.path(), "classify");
    let quiet = TrainOptions { quiet: true, ..Default::default() };
    let out = dir.path().join("run");
    train(task_config(&sections, &out, 3, ""), None, &quiet).unwrap();
    // Fewer training examples: the saved example order no longer applies.
    let fewer = dir.path().join("fewer.tsv");
    std::fs::write(&fewer, toy_sentiment(45, 0).join("\n") + "\n").unwrap();
    let extra = format!("data.train={}", fewer.display());
    let e = train(task_config(&sections, &out, 6, &extra), Some(&out.join("ckpt")), &quiet).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("cannot resume the example order") && msg.contains("differ"), "{msg}");
    // A classifier checkpoint does not resume a language model.
    let data = dir.path().join("corpus.txt");
    std::fs::write(&data, "Now is the winter of our discontent\n".repeat(40)).unwrap();
    let e = train(config(&data, &dir.path().join("lm"), 6), Some(&out.join("ckpt")), &quiet).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("data.task = \"classify\", not \"lm\""), "{msg}");
}
