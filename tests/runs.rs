//! The run directory of every task: config.toml, the best checkpoint next to the latest, early
//! stopping on the val loss, and a diverged run that leaves the last good checkpoints intact.

use lmlab::config::RunConfig;
use lmlab::io::checkpoint::{self, EvalRecord, TrainState};
use lmlab::train::run::{Eval, RunTracker};
use lmlab::train::{train, TrainOptions};
use rand::SeedableRng;
use std::path::Path;

fn quiet() -> TrainOptions {
    TrainOptions { quiet: true, ..Default::default() }
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p.to_string_lossy().into_owned()
}

/// The `[model]` arch and `[data]` section of a tiny run of `task` on generated data in `dir`.
fn sections(dir: &Path, task: &str) -> String {
    match task {
        "lm" => {
            let data = dir.join("corpus.txt");
            let text = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n";
            std::fs::write(&data, text.repeat(30)).unwrap();
            format!("[data]\npath = {:?}\n", data.display().to_string())
        }
        "translate" => {
            let words = ["der", "hund", "eine", "katze", "sieht", "den", "ball", "rot"];
            let src: Vec<String> = (0..40)
                .map(|i| (0..2 + i % 3).map(|j| words[(i * 3 + j * 5) % 8]).collect::<Vec<_>>().join(" "))
                .collect();
            let tgt: Vec<String> = src.iter().map(|s| s.to_uppercase()).collect();
            format!(
                "arch = \"encoder_decoder\"\n[data]\ntask = \"translate\"\nsrc_train = {:?}\ntgt_train = {:?}\n\
                 src_val = {:?}\ntgt_val = {:?}\nvocab_size = 300\nmax_len = 12\n",
                write_lines(dir, "s", &src),
                write_lines(dir, "t", &tgt),
                write_lines(dir, "vs", &src[..8]),
                write_lines(dir, "vt", &tgt[..8])
            )
        }
        _ => {
            let rows: Vec<String> = std::iter::once("sentence\tlabel".to_string())
                .chain((0..40).map(|i| format!("{} film {}\t{}", ["good", "bad"][i % 2], i % 7, 1 - i % 2)))
                .collect();
            format!(
                "arch = \"encoder\"\n[data]\ntask = \"classify\"\nformat = \"sst2\"\ntrain = {:?}\ntest = {:?}\n\
                 vocab_size = 300\nmax_len = 10\nval_fraction = 0.25\n",
                write_lines(dir, "train.tsv", &rows),
                write_lines(dir, "test.tsv", &rows[..15])
            )
        }
    }
}

fn config(sections: &str, out: &Path, extra: &str) -> RunConfig {
    let text = format!(
        "[model]\nblock_size = 16\nn_layer = 1\nn_head = 2\nn_embd = 16\n{sections}[train]\nout_dir = {:?}\n\
         batch_size = 4\nmax_iters = 40\neval_interval = 4\neval_iters = 2\nlog_interval = 2\nthreads = 1\n\
         [optim]\nlearning_rate = 3e-3\nwarmup_iters = 2\n",
        out.display().to_string()
    );
    let sets: Vec<String> = extra.split_whitespace().map(String::from).collect();
    RunConfig::from_toml_str(&text, &sets).unwrap()
}

fn log_lines(out: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// (step, val loss) of every evaluation in the metrics log.
fn evals(out: &Path) -> Vec<(u64, f32)> {
    log_lines(out)
        .iter()
        .filter(|v| v.get("val_loss").is_some() && v.get("event").is_none())
        .map(|v| (v["iter"].as_u64().unwrap(), v["val_loss"].as_f64().unwrap() as f32))
        .collect()
}

#[test]
fn early_stopping_ends_every_task_and_says_why() {
    for task in ["lm", "translate", "classify"] {
        let dir = tempfile::tempdir().unwrap();
        let s = sections(dir.path(), task);
        let out = dir.path().join("run");
        // No evaluation can beat the first by 100 nats: the run stops at the third one.
        let cfg = config(&s, &out, "train.early_stop_patience=2 train.early_stop_min_delta=100");
        let sum = train(cfg, None, &quiet()).unwrap();
        let first = if task == "lm" { 0 } else { 4 };
        let stop = first + 8;
        assert_eq!(sum.steps, stop, "{task}");
        let reason = sum.early_stop.as_deref().unwrap_or_else(|| panic!("{task}: no early stop"));
        assert!(reason.contains("did not improve") && reason.contains("2 evaluations"), "{task}: {reason}");
        let lines = log_lines(&out);
        let last = lines.last().unwrap();
        assert_eq!(last["event"], "early_stop", "{task}: {last}");
        assert_eq!(last["iter"], stop, "{task}");
        assert_eq!(evals(&out).iter().map(|e| e.0).collect::<Vec<_>>(), [first, first + 4, stop], "{task}");
        let ck = checkpoint::load(&out.join("ckpt"), 4, false).unwrap();
        assert_eq!(ck.state.step, stop, "{task}: ckpt holds the step the run stopped at");
        assert_eq!(ck.state.record.evals_without_improvement, 2, "{task}");

        // Without early stopping the same run goes to max_iters.
        let out2 = dir.path().join("full");
        let sum = train(config(&s, &out2, "train.max_iters=14"), None, &quiet()).unwrap();
        assert_eq!((sum.steps, sum.early_stop.as_deref()), (14, None), "{task}");
    }
}

#[test]
fn best_checkpoint_holds_the_lowest_val_loss_and_config_is_written() {
    for task in ["lm", "translate", "classify"] {
        let dir = tempfile::tempdir().unwrap();
        let s = sections(dir.path(), task);
        let out = dir.path().join("run");
        train(config(&s, &out, "train.max_iters=20"), None, &quiet()).unwrap();
        // Resumed with a far too high learning rate, the val loss gets worse: ckpt moves on,
        // ckpt_best stays.
        let extra = "train.max_iters=28 optim.learning_rate=1.0 optim.decay_lr=false optim.grad_clip=0";
        let sum = train(config(&s, &out, extra), Some(&out.join("ckpt")), &quiet()).unwrap();
        let evals = evals(&out);
        let (best_step, best) = evals.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
        assert!(best_step <= 20, "{task}: the val loss should have got worse: {evals:?}");
        let best_ck = checkpoint::load(&out.join("ckpt_best"), 4, false).unwrap();
        let last_ck = checkpoint::load(&out.join("ckpt"), 4, false).unwrap();
        assert_eq!(best_ck.state.step, best_step, "{task}: {evals:?}");
        assert_eq!(best_ck.state.record.best_val_loss, Some(best), "{task}");
        assert_eq!((sum.best_step, sum.best_val_loss), (Some(best_step), Some(best)), "{task}");
        assert_eq!(sum.best_checkpoint, Some(out.join("ckpt_best")), "{task}");
        assert_eq!(last_ck.state.step, 28, "{task}: ckpt is the latest");
        assert_eq!(last_ck.state.record.best_step, Some(best_step), "{task}");
        assert!(best_ck.model.params != last_ck.model.params, "{task}");
        // The run directory holds the full resolved config of the latest start: every key.
        let written = std::fs::read_to_string(out.join("config.toml")).unwrap();
        assert!(written.contains("early_stop_patience = 0") && written.contains("learning_rate = 1.0"), "{task}");
        assert_eq!(RunConfig::from_toml_str(&written, &[]).unwrap(), config(&s, &out, extra), "{task}");
        if task == "classify" {
            let r: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
            assert_eq!((&r["checkpoint"], &r["step"]), (&"ckpt_best".into(), &best_step.into()), "{r}");
            assert_eq!(r["last"]["step"], 28);
            let (acc, last_acc) = (r["test_accuracy"].as_f64().unwrap(), r["last"]["test_accuracy"].as_f64().unwrap());
            assert_eq!(sum.test_accuracy, Some(acc));
            assert!(acc >= last_acc, "the best checkpoint classifies the (easy) test set at least as well: {r}");
        }
    }
}

/// Every file of a checkpoint directory, by name.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn divergence_keeps_the_last_good_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let s = sections(dir.path(), "lm");
    let out = dir.path().join("run");
    train(config(&s, &out, "train.max_iters=8"), None, &quiet()).unwrap();
    let (ckpt, best) = (snapshot(&out.join("ckpt")), snapshot(&out.join("ckpt_best")));
    // An absurd learning rate without clipping: step 8 sends the weights to ~1e30, and the
    // model's outputs to NaN. Ending right after it, the final evaluation meets a NaN val loss;
    // going on, the next step's loss is NaN.
    let absurd = "optim.learning_rate=1e30 optim.grad_clip=0 optim.warmup_iters=0 optim.decay_lr=false";
    for (max_iters, needle) in [(9, "val loss is NaN at step 9"), (12, "diverged")] {
        let cfg = config(&s, &out, &format!("{absurd} train.max_iters={max_iters}"));
        let err = train(cfg, Some(&out.join("ckpt")), &quiet()).unwrap_err();
        // Typed, so that a sweep records the run as diverged instead of failing.
        let step = err.downcast_ref::<lmlab::train::Diverged>().map(|d| d.step);
        assert!(step.is_some_and(|s| (9..=12).contains(&s)), "{step:?}: {err:#}");
        let e = format!("{err:#}");
        assert!(e.contains("diverged") && e.contains(needle), "{e}");
        assert!(snapshot(&out.join("ckpt")) == ckpt, "ckpt was overwritten: {e}");
        assert!(snapshot(&out.join("ckpt_best")) == best, "ckpt_best was overwritten: {e}");
        assert_eq!(checkpoint::load(&out.join("ckpt"), 4, true).unwrap().state.step, 8);
    }
    // The good checkpoint resumes with a sane learning rate.
    train(config(&s, &out, "train.max_iters=12"), Some(&out.join("ckpt")), &quiet()).unwrap();
    assert_eq!(checkpoint::load(&out.join("ckpt"), 4, false).unwrap().state.step, 12);
}

#[test]
fn nan_is_never_written_whatever_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let s = sections(dir.path(), "lm");
    let out = dir.path().join("run");
    let cfg = config(&s, &out, "train.max_iters=4");
    train(cfg.clone(), None, &quiet()).unwrap();
    let ck = checkpoint::load(&out.join("ckpt"), 4, true).unwrap();
    let before = snapshot(&out.join("ckpt"));
    let opt = cfg.optim.build(&ck.model.layout).unwrap();
    let state = TrainState {
        step: 5,
        rng: rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1),
        record: EvalRecord::default(),
        task: None,
        loss_scaler: None,
    };

    // A NaN weight: the checkpoint writer refuses and names the tensor.
    let mut model = ck.model;
    let t = &model.layout.tensors[1];
    let (name, at) = (t.name.clone(), t.range().start + 3);
    model.params[at] = f32::NAN;
    let e =
        format!("{:#}", checkpoint::save(&out.join("ckpt"), &model, &opt, &cfg, &ck.tokenizer, &state).unwrap_err());
    assert!(e.contains("refusing") && e.contains(&name) && e.contains("NaN"), "{e}");
    assert!(snapshot(&out.join("ckpt")) == before);

    // A NaN val loss: the tracker writes nothing, whatever the weights.
    model.params[at] = 0.0;
    let mut tracker = RunTracker::start(&cfg, &quiet(), None).unwrap();
    let mut encoded = false;
    let eval = Eval { step: 5, train_loss: 1.0, val_loss: f32::NAN, val_accuracy: None };
    let e = tracker
        .evaluated(eval, |_| {
            encoded = true;
            checkpoint::encode(&model, &opt, &cfg, &ck.tokenizer, &state)
        })
        .unwrap_err();
    assert!(format!("{e:#}").contains("val loss is NaN at step 5"), "{e:#}");
    assert!(!encoded && snapshot(&out.join("ckpt")) == before);
}

/// Rewrites `dir/state.json` as checkpoints wrote it before the evaluation record and the task
/// state existed (state.json is not under a checksum of its own).
fn make_old_format(dir: &Path) {
    let path = dir.join("state.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let state = v["state"].as_object_mut().unwrap();
    for key in ["best_step", "val_loss", "train_loss", "early_stop_ref", "evals_without_improvement", "task"] {
        state.remove(key);
    }
    assert!(state.contains_key("best_val_loss"));
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn checkpoints_from_before_the_record_still_load() {
    let dir = tempfile::tempdir().unwrap();
    for task in ["lm", "classify"] {
        let s = sections(dir.path(), task);
        let out = dir.path().join(task);
        train(config(&s, &out, "train.max_iters=8"), None, &quiet()).unwrap();
        make_old_format(&out.join("ckpt"));
        let ck = checkpoint::load(&out.join("ckpt"), 4, true).unwrap();
        assert_eq!((ck.state.step, ck.state.record.best_step, ck.state.task.is_none()), (8, None, true));
        assert!(ck.state.record.best_val_loss.is_some());
        let resumed = train(config(&s, &out, "train.max_iters=12"), Some(&out.join("ckpt")), &quiet());
        if task == "lm" {
            assert_eq!(resumed.unwrap().steps, 12, "the language model resumes: its RNG was always saved");
        } else {
            let e = format!("{:#}", resumed.unwrap_err());
            assert!(e.contains("holds no data-order state"), "{e}");
        }
    }
}
