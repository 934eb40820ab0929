//! Killing `lmlab train` with SIGKILL at any moment leaves a loadable last checkpoint, and
//! resuming from it gives exactly the run that was never killed. The three moments of a
//! checkpoint save that matter are hit deterministically through the test hook of
//! `io/atomic.rs` (`LMLAB_SAVE_PAUSE_MS`, `LMLAB_SAVE_PAUSE_MARKER`); kills during the steps
//! come from watching the metrics log.

use lmlab::io::checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MAX_ITERS: u64 = 80;
const EVAL_INTERVAL: u64 = 20;

/// A small language-model run config (dropout on, so the resumed run must also reproduce the
/// dropout masks) whose run directory is given with `--set train.out_dir=...`.
fn write_config(dir: &Path) -> PathBuf {
    let data = dir.join("corpus.txt");
    let text = "ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n";
    std::fs::write(&data, text.repeat(40)).unwrap();
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\nblock_size = 32\nn_layer = 2\nn_head = 2\nn_embd = 32\ndropout = 0.1\n[data]\npath = {:?}\n\
             [train]\nbatch_size = 4\nmax_iters = {MAX_ITERS}\neval_interval = {EVAL_INTERVAL}\neval_iters = 2\n\
             log_interval = 1\nthreads = 1\n[optim]\nwarmup_iters = 5\nlr_decay_iters = {MAX_ITERS}\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    cfg
}

fn lmlab(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lmlab"));
    c.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn train_args<'a>(cfg: &'a str, out_set: &'a str) -> Vec<&'a str> {
    vec!["train", "--config", cfg, "--quiet", "--set", out_set]
}

/// Runs to completion; fails the test on an error.
fn run(mut c: Command) {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The weights and optimizer state of a run that was never interrupted.
fn straight(dir: &Path, cfg: &Path) -> checkpoint::Checkpoint {
    let out = dir.join("straight");
    let out_set = format!("train.out_dir={}", out.display());
    run(lmlab(&train_args(cfg.to_str().unwrap(), &out_set)));
    checkpoint::load(&out.join("ckpt"), 4, true).unwrap()
}

/// Waits until `ready()` holds, then kills the child with SIGKILL. Panics if the child ends
/// first: the test would then prove nothing.
fn kill_when(child: &mut Child, what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("lmlab train ended ({status}) before the kill {what}");
        }
        assert!(started.elapsed() < Duration::from_secs(120), "timed out waiting to kill {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(status.code().is_none(), "killed by a signal {what}, not exited: {status}");
}

/// The `iter` of every line of the metrics log that has `key` (torn last lines skipped).
fn logged(out: &Path, key: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get(key).is_some() && v.get("event").is_none())
        .map(|v| v["iter"].as_u64().unwrap())
        .collect()
}

/// Temporary directories (`.NAME.tmp-PID`) in the run directory.
fn temporaries(out: &Path) -> Vec<String> {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

/// After a kill: the checkpoint loads, resuming it finishes the run (removing the dead process's
/// temporary directories), and the result is bit-identical to the run that was not killed,
/// with every step logged once. Returns the step the killed run's checkpoint held.
fn resume_and_compare(out: &Path, want: &checkpoint::Checkpoint) -> u64 {
    let ck = checkpoint::load(&out.join("ckpt"), 4, true).expect("the checkpoint left by the killed run loads");
    let step = ck.state.step;
    assert!(step.is_multiple_of(EVAL_INTERVAL) && step < MAX_ITERS, "step {step}");
    run(lmlab(&["train", "--resume", out.join("ckpt").to_str().unwrap(), "--quiet"]));
    assert!(temporaries(out).is_empty(), "left behind: {:?}", temporaries(out));
    let done = checkpoint::load(&out.join("ckpt"), 4, true).unwrap();
    assert_eq!(done.state.step, MAX_ITERS);
    assert!(done.model.params == want.model.params, "weights differ from the uninterrupted run");
    assert!(done.optimizer == want.optimizer, "optimizer state differs from the uninterrupted run");
    assert_eq!(logged(out, "loss"), (1..=MAX_ITERS).collect::<Vec<_>>(), "each step logged once");
    step
}

#[test]
fn sigkill_during_a_checkpoint_save_leaves_the_previous_or_the_new_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let want = straight(dir.path(), &cfg);
    // The saves are numbered: 1 ckpt_best and 2 ckpt at step 0, then ckpt_best (if the val loss
    // improved) and ckpt at step 20. The kill hits the save of ckpt at step 20.
    for point in ["files", "exchange", "cleanup"] {
        let out = dir.path().join(point);
        let marker = dir.path().join(format!("{point}.marker"));
        let out_set = format!("train.out_dir={}", out.display());
        let mut child = lmlab(&train_args(cfg.to_str().unwrap(), &out_set))
            .env("LMLAB_SAVE_PAUSE_MS", "400")
            .env("LMLAB_SAVE_PAUSE_MARKER", &marker)
            .spawn()
            .unwrap();
        kill_when(&mut child, &format!("at {point}"), || {
            let m = std::fs::read_to_string(&marker).unwrap_or_default();
            let f: Vec<&str> = m.split_whitespace().collect();
            f.len() == 3 && f[0].parse::<u64>().unwrap() >= 3 && f[1] == "ckpt" && f[2] == point
        });
        // The dead process's temporary directory is still there: the kill hit the save.
        assert_eq!(temporaries(&out).len(), 1, "{point}: {:?}", temporaries(&out));
        assert_eq!(logged(&out, "val_loss"), [0, EVAL_INTERVAL], "{point}");
        // Before the exchange, ckpt is the previous checkpoint; after it, the new one.
        let want_step = if point == "cleanup" { EVAL_INTERVAL } else { 0 };
        assert_eq!(resume_and_compare(&out, &want), want_step, "{point}");
    }
}

#[test]
fn sigkill_during_the_steps_leaves_a_resumable_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let want = straight(dir.path(), &cfg);
    for target in [7, 26, 47] {
        let out = dir.path().join(format!("kill-{target}"));
        let out_set = format!("train.out_dir={}", out.display());
        let mut child = lmlab(&train_args(cfg.to_str().unwrap(), &out_set)).spawn().unwrap();
        kill_when(&mut child, &format!("after step {target}"), || {
            logged(&out, "loss").last().is_some_and(|&i| i >= target)
        });
        resume_and_compare(&out, &want);
    }
}
