//! Resuming continues a run exactly: N steps + checkpoint + resume + N steps gives bit-identical
//! weights and optimizer state to 2N uninterrupted steps (with dropout on, so the dropout masks
//! and the batch RNG must both be restored), in fp32 and in f16, where the loss scaler's state
//! must be restored too.

use lmlab::io::checkpoint;
use lmlab::train::{config::RunConfig, train, TrainOptions};
use std::path::Path;

fn config(data: &Path, out: &Path, max_iters: u64) -> RunConfig {
    config_with(data, out, max_iters, "")
}

/// The test config with extra `[train]` lines.
fn config_with(data: &Path, out: &Path, max_iters: u64, train_extra: &str) -> RunConfig {
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
{train_extra}
[optim]
warmup_iters = 2
lr_decay_iters = 8
"#,
        data.display(),
        out.display()
    );
    RunConfig::from_toml_str(&text, &[]).unwrap()
}

#[test]
fn n_plus_resume_plus_n_equals_2n_bit_for_bit() {
    resume_matches_straight_run("");
}

/// f16 with a loss scale that overflows at first (steps skipped, scale halved) and grows every
/// two clean steps: the scale and the count of clean steps must survive the checkpoint.
#[test]
fn f16_resume_restores_the_loss_scaler_bit_for_bit() {
    let (state, log) =
        resume_matches_straight_run("precision = \"f16\"\nloss_scale_init = 16777216\nloss_scale_growth_interval = 2");
    let s = state.expect("an f16 checkpoint holds the loss scaler");
    let skipped = log.lines().filter(|l| l.contains("\"skipped\":true")).count();
    assert!(skipped > 0 && skipped < 8, "{skipped} of 8 steps skipped:\n{log}");
    assert!(s.scale < 16777216.0, "the scale backed off: {s:?}");
}

/// Trains 8 steps straight and 4 + resume + 4; asserts identical weights, optimizer and
/// loss-scaler state; returns the scaler state and the straight run's metrics log.
fn resume_matches_straight_run(train_extra: &str) -> (Option<lmlab::train::precision::ScalerState>, String) {
    let config = |data: &Path, out: &Path, max_iters| config_with(data, out, max_iters, train_extra);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(
        &data,
        "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n".repeat(30),
    )
    .unwrap();
    let quiet = TrainOptions { quiet: true };

    let straight = dir.path().join("straight");
    train(config(&data, &straight, 8), None, &quiet).unwrap();

    let split = dir.path().join("split");
    train(config(&data, &split, 4), None, &quiet).unwrap();
    let first_half = checkpoint::load(&split.join("ckpt"), 4, true).unwrap();
    assert_eq!(first_half.state.step, 4);
    train(config(&data, &split, 8), Some(&split.join("ckpt")), &quiet).unwrap();

    let a = checkpoint::load(&straight.join("ckpt"), 4, true).unwrap();
    let b = checkpoint::load(&split.join("ckpt"), 4, true).unwrap();
    assert_eq!(a.state.step, 8);
    assert_eq!(b.state.step, 8);
    assert!(a.model.params != first_half.model.params, "the second half changed the weights");
    assert!(a.model.params == b.model.params, "weights differ after resume");
    let (am, av, at) = a.optimizer.unwrap();
    let (bm, bv, bt) = b.optimizer.unwrap();
    assert!(am == bm && av == bv && at == bt, "optimizer state differs after resume");
    assert_eq!(a.state.loss_scaler, b.state.loss_scaler, "loss scaler differs after resume");
    // The metrics log of the resumed run continues where the first half stopped.
    let log = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    assert!(log.lines().any(|l| l.contains("\"iter\":8")));
    (a.state.loss_scaler, std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap())
}

#[test]
fn same_seed_same_run_and_checkpoint_overwrite_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(&data, "All the world's a stage, and all the men and women merely players.\n".repeat(30)).unwrap();
    let quiet = TrainOptions { quiet: true };
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
