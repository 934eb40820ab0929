//! The `lmlab` binary end to end, and its answers to bad input: each is a clear error (exit code
//! 1, a message naming the problem), never a panic (exit code 101).

mod common;
use common::{lmlab, text};
use std::path::{Path, PathBuf};
use std::process::Output;

/// Asserts a clean failure whose message contains every one of `needles`.
fn assert_error(o: &Output, needles: &[&str]) {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(1), "expected exit code 1\nstdout: {out}\nstderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

const CORPUS: &str =
    "ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n";

fn write_config(dir: &Path, data: &Path, extra: &str) -> PathBuf {
    let cfg = dir.join("run.toml");
    let text = format!(
        "[model]\nblock_size = 16\nn_layer = 1\nn_head = 2\nn_embd = 16\n[data]\npath = {:?}\n[train]\nout_dir = {:?}\nbatch_size = 2\nmax_iters = 6\neval_interval = 3\neval_iters = 1\nthreads = 1\n{extra}",
        data.display().to_string(),
        dir.join("run").display().to_string()
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// A trained checkpoint in a temporary directory.
fn trained(dir: &Path) -> PathBuf {
    let data = dir.join("corpus.txt");
    std::fs::write(&data, CORPUS.repeat(20)).unwrap();
    let cfg = write_config(dir, &data, "[optim]\nwarmup_iters = 0\nlearning_rate = 1e-2\n");
    let o = lmlab(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--quiet",
        "--set",
        "train.max_iters=60",
        "--set",
        "train.eval_interval=30",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    dir.join("run/ckpt")
}

#[test]
fn train_sample_eval_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let ck = trained(dir.path());
    let ck = ck.to_str().unwrap();
    let o = lmlab(&["sample", "--checkpoint", ck, "--prompt", "ROMEO:", "--max-new-tokens", "20", "--seed", "3"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(out.starts_with("ROMEO:") && out.trim_end().chars().count() >= 20, "{out}");
    // Same seed, same text; greedy decoding is deterministic too.
    let again = lmlab(&["sample", "--checkpoint", ck, "--prompt", "ROMEO:", "--max-new-tokens", "20", "--seed", "3"]);
    assert_eq!(o.stdout, again.stdout);
    // Every sampling option together; the stop string ends the text and is not printed.
    let o = lmlab(&[
        "sample",
        "--checkpoint",
        ck,
        "--prompt",
        "ROMEO:",
        "--max-new-tokens",
        "200",
        "--top-p",
        "0.9",
        "--min-p",
        "0.05",
        "--repetition-penalty",
        "1.2",
        "--stop",
        "\n",
        "--seed",
        "5",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let generated = out.strip_prefix("ROMEO:").unwrap();
    assert!(!generated.trim_end_matches('\n').contains('\n'), "stopped at the first newline: {out:?}");
    let o = lmlab(&["sample", "--checkpoint", ck, "--top-p", "1.5"]);
    assert!(!o.status.success() && text(&o).1.contains("top"), "{:?}", text(&o));
    // A batch of samples: sample i equals a single run with seed + i.
    let args = ["sample", "--checkpoint", ck, "--prompt", "ROMEO:", "--max-new-tokens", "20"];
    let o = lmlab(&[&args[..], &["--num-samples", "3", "--seed", "3"]].concat());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let samples: Vec<&str> = out.trim_end_matches('\n').split("\n---\n").collect();
    assert_eq!(samples.len(), 3, "{out}");
    for (i, s) in samples.iter().enumerate() {
        let single = lmlab(&[&args[..], &["--seed", &(3 + i).to_string()]].concat());
        assert_eq!(*s, text(&single).0.trim_end_matches('\n'), "sample {i}");
    }
    // Beam search: deterministic, and a beam of 1 is greedy decoding (within block_size:
    // beam search does not slide the window).
    let args = ["sample", "--checkpoint", ck, "--prompt", "ROMEO:", "--max-new-tokens", "8"];
    let beam = |k: &str| lmlab(&[&args[..], &["--beam", k, "--length-penalty", "0.6"]].concat());
    let (b1, b4) = (beam("1"), beam("4"));
    assert!(b1.status.success() && b4.status.success(), "{:?}", text(&b4));
    assert!(text(&b4).1.contains("beam 4: log p ="), "{:?}", text(&b4));
    let greedy = lmlab(&[&args[..], &["--temperature", "0"]].concat());
    assert_eq!(b1.stdout, greedy.stdout);
    assert_eq!(beam("4").stdout, b4.stdout);
    let o = lmlab(&["eval", "lm", "--checkpoint", ck, "--json"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let all: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    let v = &all["runs"][0]["metrics"];
    let loss = v["loss"].as_f64().unwrap();
    assert!((v["perplexity"].as_f64().unwrap() - loss.exp()).abs() < 1e-9 * loss.exp());
    assert!((v["bits_per_token"].as_f64().unwrap() - loss / std::f64::consts::LN_2).abs() < 1e-9);
    // A smaller stride gives every token more context: a trained model scores better.
    let o = lmlab(&["eval", "lm", "--checkpoint", ck, "--stride", "4", "--json"]);
    let strided: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    let strided_loss = strided["runs"][0]["metrics"]["loss"].as_f64().unwrap();
    assert!(strided_loss < loss, "stride 4 {strided_loss} vs disjoint {loss}");
    // bf16 / f16 matrix products (autocast's numerics): close to fp32, not equal; a typo is
    // refused by the argument parser.
    for p in ["bf16", "f16"] {
        let o = lmlab(&["eval", "lm", "--checkpoint", ck, "--precision", p, "--json"]);
        let low: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
        let low_loss = low["runs"][0]["metrics"]["loss"].as_f64().unwrap();
        assert!(low_loss != loss && (low_loss - loss).abs() < 0.02, "{p}: {low_loss} vs fp32 {loss}");
    }
    let o = lmlab(&["eval", "lm", "--checkpoint", ck, "--precision", "bf17"]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    let o =
        lmlab(&["eval", "efficiency", "--checkpoint", ck, "--iters", "2", "--gen-tokens", "4", "--precision", "bf16"]);
    assert!(o.status.success(), "{:?}", text(&o));
    // Two checkpoints (the same one twice): a summary with zero spread.
    let o = lmlab(&["eval", "lm", "--checkpoint", ck, "--checkpoint", ck, "--json"]);
    let two: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    assert_eq!(two["summary"]["loss"]["std"].as_f64().unwrap(), 0.0);
    assert_eq!(two["summary"]["loss"]["runs"].as_u64().unwrap(), 2);
    let o = lmlab(&["eval", "efficiency", "--checkpoint", ck, "--iters", "3", "--gen-tokens", "8", "--json"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let e: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    let d = &e["details"][0];
    assert!(d["parameters"].as_u64().unwrap() > 1000 && d["tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(d["weights_bytes_on_disk"].as_u64().unwrap() >= 4 * d["parameters"].as_u64().unwrap());
    assert!(d["generate_tokens_per_second"].as_f64().unwrap() > 0.0);
    // 32 distinct characters: uniform guessing scores ln 32 = 3.47; 60 steps learn far better.
    assert!(loss > 0.0 && loss < 2.5, "a trained model beats uniform: {loss}");
}

#[test]
fn missing_or_empty_or_tiny_data() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.txt");
    let cfg = write_config(dir.path(), &missing, "");
    assert_error(&lmlab(&["train", "--config", cfg.to_str().unwrap()]), &["cannot read data file", "nope.txt"]);
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let cfg = write_config(dir.path(), &empty, "");
    assert_error(&lmlab(&["train", "--config", cfg.to_str().unwrap()]), &["empty.txt", "is empty"]);
    let tiny = dir.path().join("tiny.txt");
    std::fs::write(&tiny, "hello world, a short file").unwrap();
    let cfg = write_config(dir.path(), &tiny, "");
    assert_error(&lmlab(&["train", "--config", cfg.to_str().unwrap()]), &["fewer than block_size + 1"]);
    let binary = dir.path().join("bin.txt");
    std::fs::write(&binary, [0x66u8, 0x6f, 0xff, 0xfe]).unwrap();
    let cfg = write_config(dir.path(), &binary, "");
    assert_error(&lmlab(&["train", "--config", cfg.to_str().unwrap()]), &["not valid UTF-8"]);
}

#[test]
fn bad_configs_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(&data, CORPUS.repeat(20)).unwrap();
    let cfg = write_config(dir.path(), &data, "[optim]\nlearning_rat = 0.1\n");
    assert_error(&lmlab(&["train", "--config", cfg.to_str().unwrap()]), &["learning_rat", "unknown field"]);
    let cfg = write_config(dir.path(), &data, "[optim]\nlearning_rate = \"fast\"\n");
    assert_error(&lmlab(&["train", "--config", cfg.to_str().unwrap()]), &["learning_rate", "invalid type"]);
    let cfg = write_config(dir.path(), &data, "");
    assert_error(
        &lmlab(&["train", "--config", cfg.to_str().unwrap(), "--set", "model.n_head=3"]),
        &["n_embd (16)", "n_head (3)"],
    );
    assert_error(&lmlab(&["train", "--config", cfg.to_str().unwrap(), "--set", "train.batch_sise=3"]), &["batch_sise"]);
    assert_error(&lmlab(&["train", "--config", "/no/such/config.toml"]), &["cannot read config file"]);
    std::fs::write(dir.path().join("broken.toml"), "[model\nn_layer = 2").unwrap();
    assert_error(&lmlab(&["train", "--config", dir.path().join("broken.toml").to_str().unwrap()]), &["not valid TOML"]);
}

#[test]
fn divergence_is_an_error_not_a_nan_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(&data, CORPUS.repeat(20)).unwrap();
    let cfg = write_config(dir.path(), &data, "[optim]\nlearning_rate = 1e30\nwarmup_iters = 0\ngrad_clip = 0.0\n");
    assert_error(&lmlab(&["train", "--config", cfg.to_str().unwrap(), "--quiet"]), &["diverged"]);
    // The only checkpoint written is the one from before the first step, and it loads.
    assert!(lmlab(&["eval", "lm", "--checkpoint", dir.path().join("run/ckpt").to_str().unwrap()]).status.success());
}

#[test]
fn bad_checkpoints_and_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let ck = trained(dir.path());
    let cks = ck.to_str().unwrap();
    // Unknown characters in the prompt.
    assert_error(&lmlab(&["sample", "--checkpoint", cks, "--prompt", "Zebra ☃"]), &["'Z'", "position 0", "vocabulary"]);
    // A language model is not a translation model.
    let input = dir.path().join("src.txt");
    std::fs::write(&input, "ein hund\n").unwrap();
    assert_error(
        &lmlab(&["translate", "--checkpoint", cks, "--input", input.to_str().unwrap()]),
        &["lmlab translate", "\"encoder_decoder\"", "\"decoder\""],
    );
    // A prompt longer than block_size (16) is cropped to its last 16 characters, with a note.
    let long = "It is the east, and Juliet is the sun. But, soft!";
    let o = lmlab(&["sample", "--checkpoint", cks, "--prompt", long, "--max-new-tokens", "5"]);
    assert!(o.status.success());
    assert!(text(&o).1.contains("only the last 16"), "{:?}", text(&o));
    // Missing directory.
    assert_error(&lmlab(&["sample", "--checkpoint", "/no/such/ckpt"]), &["does not exist"]);
    // Truncated weights.
    let model = ck.join("model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    assert_error(&lmlab(&["eval", "lm", "--checkpoint", cks]), &["model.safetensors", "corrupted or truncated"]);
    // One flipped bit inside the tensor data.
    let mut flipped = bytes.clone();
    let at = flipped.len() - 10;
    flipped[at] ^= 0x10;
    std::fs::write(&model, &flipped).unwrap();
    assert_error(&lmlab(&["sample", "--checkpoint", cks]), &["model.safetensors", "corrupted"]);
    std::fs::write(&model, &bytes).unwrap();
    assert!(lmlab(&["eval", "lm", "--checkpoint", cks]).status.success(), "restored checkpoint loads again");
    // Garbage state file.
    std::fs::write(ck.join("state.json"), "{not json").unwrap();
    assert_error(&lmlab(&["eval", "lm", "--checkpoint", cks]), &["state.json", "corrupted"]);
    // Missing state file.
    std::fs::remove_file(ck.join("state.json")).unwrap();
    assert_error(&lmlab(&["eval", "lm", "--checkpoint", cks]), &["state.json"]);
}

#[test]
fn eval_file_with_unknown_characters() {
    let dir = tempfile::tempdir().unwrap();
    let ck = trained(dir.path());
    let other = dir.path().join("other.txt");
    std::fs::write(&other, "ROMEO: Zounds!").unwrap();
    assert_error(
        &lmlab(&["eval", "lm", "--checkpoint", ck.to_str().unwrap(), "--data", other.to_str().unwrap()]),
        &["other.txt", "'Z'"],
    );
}

#[test]
fn train_json_prints_only_json_lines_ending_with_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(&data, CORPUS.repeat(20)).unwrap();
    let cfg =
        write_config(dir.path(), &data, "log_interval = 2\nearly_stop_patience = 1\nearly_stop_min_delta = 100.0\n");
    let o = lmlab(&["train", "--config", cfg.to_str().unwrap(), "--json", "--set", "train.max_iters=20"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.is_empty(), "no progress bar or log lines: {err}");
    let lines: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"))).collect();
    let events: Vec<&str> = lines.iter().map(|v| v["event"].as_str().unwrap()).collect();
    // Evaluations at 0 and 3; the second does not beat the first by 100 nats: early stop.
    assert_eq!(events, ["eval", "step", "eval", "early_stop", "summary"], "{out}");
    assert_eq!((lines[1]["iter"].as_u64(), lines[1]["loss"].as_f64().is_some()), (Some(2), true));
    let s = lines.last().unwrap();
    assert_eq!(s["steps"], 3);
    assert_eq!(s["early_stop"], true);
    assert_eq!(s["val_loss"], lines[2]["val_loss"]);
    let best = lines[0]["val_loss"].as_f64().unwrap().min(lines[2]["val_loss"].as_f64().unwrap());
    assert_eq!(s["best_val_loss"].as_f64(), Some(best));
    for key in ["train_loss", "seconds", "ms_per_iter"] {
        assert!(s[key].as_f64().is_some(), "summary lacks {key}: {s}");
    }
    let ckpt = s["checkpoint"].as_str().unwrap();
    assert!(ckpt.ends_with("ckpt") && Path::new(ckpt).join("state.json").is_file(), "{s}");
    assert!(s["best_checkpoint"].as_str().unwrap().ends_with("ckpt_best"), "{s}");
    // The metrics log holds the same lines, without the summary.
    let log = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count(), lines.len() - 1);
}
