//! Data-parallel training on MPI (`--features mpi`, `mpirun` from Open MPI): N ranks with
//! per-rank batch B/N follow one process with batch B (losses and weights, every optimizer,
//! fp32/bf16/f16, dropout on), a run resumes with a different number of ranks, and a failing or
//! killed rank stops the whole job with an error that names it, leaving a loadable checkpoint.
//!
//! Without the feature, or without `mpirun`, every test says SKIPPED (and fails under
//! `LMLAB_REQUIRE_DATA=1`, as `.ci/run` sets, which installs Open MPI and builds the feature).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `mpirun`, or None after saying why the test cannot run.
fn mpirun() -> Option<PathBuf> {
    if !cfg!(feature = "mpi") {
        common::skip("lmlab was built without MPI (cargo test --release --features mpi)");
        return None;
    }
    let found = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("mpirun")).find(|f| f.is_file()));
    if found.is_none() {
        common::skip("mpirun not found (Debian: apt install openmpi-bin libopenmpi-dev)");
    }
    found
}

const BIN: &str = env!("CARGO_BIN_EXE_lmlab");

/// `mpirun -np N lmlab ARGS` (as root in CI containers, more ranks than cores allowed).
fn mpi_cmd(mpirun: &Path, n: usize, args: &[&str]) -> Command {
    let mut c = Command::new(mpirun);
    c.args(["--allow-run-as-root", "--oversubscribe", "-np", &n.to_string(), BIN]).args(args);
    // One thread per rank, so N ranks never oversubscribe the CI machine's cores.
    c.env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    c
}

fn run_ok(mut c: Command, what: &str) -> String {
    let o = c.output().expect("start mpirun");
    let (out, err) = common::text(&o);
    assert!(o.status.success(), "{what} failed:\nstdout: {out}\nstderr: {err}");
    out
}

/// A small character corpus, written into `dir`.
fn corpus(dir: &Path) -> PathBuf {
    let text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n\
                First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n"
        .repeat(20);
    let p = dir.join("corpus.txt");
    std::fs::write(&p, text).unwrap();
    p
}

/// A config of a tiny GPT with dropout (no biases: the key bias's gradient is zero in exact
/// arithmetic, so in floats it is rounding noise, which adaptive optimizers scale up to full
/// steps; see docs/DISTRIBUTED.md), 20 steps, evaluating and checkpointing every 10.
fn config(dir: &Path, data: &Path) -> PathBuf {
    let toml = format!(
        "[model]\nblock_size = 16\nn_layer = 2\nn_head = 2\nn_embd = 32\ndropout = 0.1\nbias = false\n\n\
         [data]\npath = \"{}\"\nval_fraction = 0.1\n\n\
         [train]\nmax_iters = 20\neval_interval = 10\neval_iters = 2\nlog_interval = 1\nthreads = 1\nseed = 5\n\n\
         [optim]\nlearning_rate = 3e-3\nwarmup_iters = 2\nlr_decay_iters = 20\n",
        data.display()
    );
    let p = dir.join("config.toml");
    std::fs::write(&p, toml).unwrap();
    p
}

/// (training losses per step, evaluation losses) of a run directory's metrics.jsonl.
fn losses(run: &Path) -> (Vec<f64>, Vec<f64>) {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let (mut steps, mut evals) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(l) = v.get("loss").and_then(|l| l.as_f64()) {
            steps.push(l);
        }
        if let Some(l) = v.get("val_loss").and_then(|l| l.as_f64()) {
            evals.push(l);
        }
    }
    (steps, evals)
}

fn params(ckpt: &Path) -> Vec<f32> {
    lmlab::io::checkpoint::load(ckpt, 1, true).unwrap().model.params
}

/// ‖a − b‖₂ / ‖b‖₂
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (d / n).sqrt()
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "as many losses");
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1e-12)).fold(0.0, f64::max)
}

/// Trains with the `--set` overrides `sets` once in one process with batch `ranks·b` and once on
/// `ranks` ranks with batch `b`; returns (max relative loss difference, relative L2 weight
/// difference).
fn one_vs_ranks(mpirun: &Path, ranks: usize, b: usize, sets: &[&str]) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &corpus(dir.path()));
    let cfg = cfg.to_str().unwrap();
    let (one, many) = (dir.path().join("one"), dir.path().join("many"));
    let mut single = Command::new(BIN);
    single.args(["train", "--config", cfg, "--quiet", "--set", &format!("train.batch_size={}", b * ranks)]);
    single.args(["--set", &format!("train.out_dir={}", one.display())]);
    for k in sets {
        single.args(["--set", k]);
    }
    run_ok(single, "one process");
    let mut c = mpi_cmd(mpirun, ranks, &["train", "--config", cfg, "--quiet"]);
    c.args(["--set", &format!("train.batch_size={b}"), "--set", &format!("train.out_dir={}", many.display())]);
    for k in sets {
        c.args(["--set", k]);
    }
    run_ok(c, &format!("{ranks} ranks"));
    let ((s1, e1), (sn, en)) = (losses(&one), losses(&many));
    assert_eq!(s1.len(), 20);
    let loss = max_rel(&sn, &s1).max(max_rel(&en, &e1));
    (loss, rel_l2(&params(&many.join("ckpt")), &params(&one.join("ckpt"))))
}

/// Every optimizer on 2 ranks (and AdamW on 3): losses and weights within 1e-5 relative of one
/// process after 20 steps; bf16 and f16 autocast within their own precision.
#[test]
fn two_and_three_ranks_train_like_one_process() {
    let Some(mpirun) = mpirun() else { return };
    let cases: [(usize, &[&str]); 8] = [
        (2, &["optim.name=sgd", "optim.momentum=0.9"]),
        (2, &["optim.name=adamw"]),
        (2, &["optim.name=adam"]),
        (2, &["optim.name=rmsprop", "optim.learning_rate=3e-4"]),
        (2, &["optim.name=adagrad"]),
        (2, &["train.precision=bf16"]),
        (2, &["train.precision=f16"]),
        (3, &["optim.name=adamw"]),
    ];
    for (ranks, sets) in cases {
        let (loss, w) = one_vs_ranks(&mpirun, ranks, 2, sets);
        eprintln!("{sets:?}: {ranks} ranks vs 1 process: losses {loss:.2e}, weights {w:.2e}");
        // Autocast rounds weights and activations to 8 (bf16) or 11 (f16) significant bits:
        // the 1e-7 summation differences flip a rounding here and there, each worth 2⁻⁸ or
        // 2⁻¹¹ of a value, so the reduced-precision runs agree to their own precision.
        let tol = match sets[0] {
            "train.precision=bf16" => 2e-3,
            "train.precision=f16" => 2e-4,
            _ => 1e-5,
        };
        assert!(loss < tol && w < tol, "{sets:?} on {ranks} ranks: losses {loss:.2e}, weights {w:.2e} (relative)");
    }
}

/// A run checkpointed by 2 ranks continues on 1 process, and one checkpointed by 1 process
/// continues on 2 ranks (same global batch): both end where an uninterrupted one-process run
/// ends.
#[test]
fn a_run_resumes_with_a_different_number_of_ranks() {
    let Some(mpirun) = mpirun() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &corpus(dir.path()));
    let cfg = cfg.to_str().unwrap();
    let out = |name: &str| format!("train.out_dir={}", dir.path().join(name).display());
    let mut straight = Command::new(BIN);
    straight.args(["train", "--config", cfg, "--quiet", "--set", "train.batch_size=4", "--set", &out("straight")]);
    run_ok(straight, "one process, 20 steps");
    let want = params(&dir.path().join("straight/ckpt"));
    for (first, second) in [(2, 1), (1, 2)] {
        let name = format!("{first}-then-{second}");
        let half = |n: usize| {
            let b = format!("train.batch_size={}", 4 / n);
            let mut c = mpi_cmd(&mpirun, n, &["train", "--config", cfg, "--quiet", "--set", &b]);
            c.args(["--set", "train.max_iters=10", "--set", &out(&name)]);
            c
        };
        run_ok(half(first), &format!("{name}: first 10 steps"));
        let ckpt = dir.path().join(&name).join("ckpt");
        let b = format!("train.batch_size={}", 4 / second);
        let ckpt_s = ckpt.to_str().unwrap();
        let mut c = mpi_cmd(&mpirun, second, &["train", "--resume", ckpt_s, "--quiet", "--set", &b]);
        c.args(["--set", "train.max_iters=20"]);
        run_ok(c, &format!("{name}: resumed"));
        let w = rel_l2(&params(&ckpt), &want);
        eprintln!("{name}: weights after 20 steps vs one process {w:.2e}");
        assert!(w < 1e-5, "{name}: relative weight difference {w:.2e}");
        let (steps, _) = losses(&dir.path().join(&name));
        assert_eq!(steps.len(), 20, "{name}: the metrics log continues");
    }
}

/// `mpirun` with one command line per rank (MPMD: `A : B`), so that one rank can be given a
/// fault the others do not have.
fn mpi_mpmd(mpirun: &Path, per_rank: &[Vec<String>]) -> Command {
    let mut c = Command::new(mpirun);
    c.args(["--allow-run-as-root", "--oversubscribe"]);
    for (i, args) in per_rank.iter().enumerate() {
        if i > 0 {
            c.arg(":");
        }
        c.args(["-np", "1", BIN]).args(args);
    }
    c
}

/// Runs `c` and returns its output and how long it took; panics if it runs past 60 s.
fn run_bounded(mut c: Command) -> (Output, Duration) {
    let t = Instant::now();
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start mpirun");
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the job did not stop within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child.wait_with_output().unwrap(), t.elapsed())
}

/// A rank that cannot read its data, and a rank whose training diverges to NaN, each stop the
/// whole job promptly with an error naming the rank and the cause.
#[test]
fn a_failing_rank_stops_the_job_with_its_error() {
    let Some(mpirun) = mpirun() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &corpus(dir.path()));
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["train", "--config", cfg.to_str().unwrap(), "--quiet", "--set", "train.batch_size=2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push("--set".into());
        v.push(format!("train.out_dir={}", dir.path().join("run").display()));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let missing = base(&["--set", "data.path=/nonexistent/corpus.txt"]);
    let (o, took) = run_bounded(mpi_mpmd(&mpirun, &[base(&[]), missing]));
    let (_, err) = common::text(&o);
    assert!(!o.status.success(), "the job must fail");
    assert!(err.contains("error on rank 1 of 2") && err.contains("/nonexistent/corpus.txt"), "{err}");
    eprintln!("missing data on rank 1: stopped after {took:?}");

    // A learning rate of 1e30 on rank 1 only: its weights blow up after the first step.
    let (o, took) = run_bounded(mpi_mpmd(&mpirun, &[base(&[]), base(&["--set", "optim.learning_rate=1e30"])]));
    let (_, err) = common::text(&o);
    assert!(!o.status.success(), "the job must fail");
    assert!(err.contains("error on rank") && err.contains("diverged"), "{err}");
    eprintln!("divergence on rank 1: stopped after {took:?}");
}

/// The PID of rank `rank` of the job whose command line mentions `tag`.
fn rank_pid(tag: &str, rank: usize) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let has = |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
        if has(&cmdline, tag) && has(&cmdline, "lmlab") && has(&environ, &format!("OMPI_COMM_WORLD_RANK={rank}\0")) {
            return Some(pid);
        }
    }
    None
}

/// Killing a rank mid-run ends the job within a bounded time; the last checkpoint loads and
/// `--resume` continues from it.
#[test]
fn a_killed_rank_ends_the_job_and_the_checkpoint_resumes() {
    let Some(mpirun) = mpirun() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &corpus(dir.path()));
    let run = dir.path().join("killed-run");
    let out = format!("train.out_dir={}", run.display());
    let mut c = mpi_cmd(&mpirun, 2, &["train", "--config", cfg.to_str().unwrap(), "--quiet"]);
    c.args(["--set", "train.batch_size=2", "--set", "train.max_iters=1000000", "--set", "train.eval_interval=5"]);
    c.args(["--set", &out]);
    let t = Instant::now();
    let mut job = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start mpirun");
    // Wait for a checkpoint past the first, then kill rank 1.
    let state = run.join("ckpt/state.json");
    let step = || -> u64 {
        std::fs::read_to_string(&state)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["state"]["step"].as_u64().or(v["step"].as_u64()))
            .unwrap_or(0)
    };
    while step() < 10 {
        assert!(t.elapsed() < Duration::from_secs(60), "no checkpoint after 60 s");
        if job.try_wait().unwrap().is_some() {
            let o = job.wait_with_output().unwrap();
            let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            panic!("the job ended on its own ({}) at step {}:\n{out}\n{err}", o.status, step());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rank_pid(&out, 1).expect("rank 1's process");
    let killed = Instant::now();
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    loop {
        if job.try_wait().unwrap().is_some() {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "the job still runs 60 s after rank 1 was killed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = job.wait_with_output().unwrap();
    assert!(!o.status.success(), "a job with a killed rank must fail");
    eprintln!("killed rank 1: the job ended {:?} later", killed.elapsed());
    let ckpt = run.join("ckpt");
    let at = lmlab::io::checkpoint::load(&ckpt, 1, true).expect("the last checkpoint loads").state.step;
    assert!(at >= 10);
    let mut resume = Command::new(BIN);
    resume.args(["train", "--resume", ckpt.to_str().unwrap(), "--quiet", "--set", "train.batch_size=4"]);
    resume.args(["--set", &format!("train.max_iters={}", at + 5)]);
    let text = run_ok(resume, "resume after the kill");
    assert!(text.contains(&format!("done: {} steps", at + 5)), "{text}");
}

/// Writes a tiny TREC-format question set (two coarse classes) and a tiny parallel corpus.
fn task_data(dir: &Path) {
    let (mut trec, mut test, mut src, mut tgt) = (String::new(), String::new(), String::new(), String::new());
    let nums = ["one", "two", "three", "four", "five", "six", "seven"];
    for i in 0..60 {
        let n = nums[i % nums.len()];
        let m = nums[(i * 3 + 1) % nums.len()];
        let line = if i % 2 == 0 {
            format!("NUM:count How many {n} birds and {m} cats are there ?\n")
        } else {
            format!("LOC:city Where is the {n} river near the {m} town ?\n")
        };
        if i % 5 == 0 {
            test.push_str(&line);
        } else {
            trec.push_str(&line);
        }
        src.push_str(&format!("ein {n} hund und {} katzen{}\n", m, " sehr".repeat(i % 4)));
        tgt.push_str(&format!("a {n} dog and {} cats{}\n", m, " very".repeat(i % 3)));
    }
    for (name, text) in
        [("train.label", trec), ("test.label", test), ("train.de", src.clone()), ("train.en", tgt.clone())]
    {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let val = |t: &str| t.lines().take(12).collect::<Vec<_>>().join("\n") + "\n";
    std::fs::write(dir.join("val.de"), val(&src)).unwrap();
    std::fs::write(dir.join("val.en"), val(&tgt)).unwrap();
}

/// Classification and translation: 2 ranks with batch 4 follow one process with batch 8
/// (losses, validation loss and accuracy, weights), dropout on.
#[test]
fn classification_and_translation_train_like_one_process() {
    let Some(mpirun) = mpirun() else { return };
    let dir = tempfile::tempdir().unwrap();
    task_data(dir.path());
    let d = dir.path().display();
    let common = "max_iters = 12\neval_interval = 6\nlog_interval = 1\nthreads = 1\nseed = 3\n\n\
                  [optim]\nlearning_rate = 3e-3\nwarmup_iters = 2\nlr_decay_iters = 12\n";
    let classify = format!(
        "[model]\narch = \"encoder\"\nblock_size = 24\nn_layer = 1\nn_head = 2\nn_embd = 32\npooling = \"mean\"\n\
         dropout = 0.1\nbias = false\n\n[data]\ntask = \"classify\"\nformat = \"trec\"\ntrain = \"{d}/train.label\"\n\
         test = \"{d}/test.label\"\nval_fraction = 0.2\nvocab_size = 300\nmax_len = 20\n\n[train]\n{common}"
    );
    let translate = format!(
        "[model]\narch = \"encoder_decoder\"\nblock_size = 24\nn_layer = 1\nn_dec_layer = 1\nn_head = 2\n\
         n_embd = 32\ndropout = 0.1\nbias = false\nshare_embeddings = true\ntie_embeddings = true\n\n\
         [data]\ntask = \"translate\"\nsrc_train = \"{d}/train.de\"\ntgt_train = \"{d}/train.en\"\n\
         src_val = \"{d}/val.de\"\ntgt_val = \"{d}/val.en\"\nvocab_size = 300\nmax_len = 20\n\n[train]\n{common}"
    );
    for (task, toml) in [("classify", classify), ("translate", translate)] {
        let cfg = dir.path().join(format!("{task}.toml"));
        std::fs::write(&cfg, toml).unwrap();
        let cfg = cfg.to_str().unwrap();
        let (one, many) = (dir.path().join(format!("{task}-one")), dir.path().join(format!("{task}-two")));
        let mut single = Command::new(BIN);
        single.args(["train", "--config", cfg, "--quiet", "--set", "train.batch_size=8"]);
        single.args(["--set", &format!("train.out_dir={}", one.display())]);
        run_ok(single, &format!("{task}: one process"));
        let mut c = mpi_cmd(&mpirun, 2, &["train", "--config", cfg, "--quiet", "--set", "train.batch_size=4"]);
        c.args(["--set", &format!("train.out_dir={}", many.display())]);
        run_ok(c, &format!("{task}: 2 ranks"));
        let ((s1, e1), (s2, e2)) = (losses(&one), losses(&many));
        assert_eq!((s1.len(), e1.len()), (12, 2), "{task}: 12 steps, 2 evaluations");
        let loss = max_rel(&s2, &s1).max(max_rel(&e2, &e1));
        let w = rel_l2(&params(&many.join("ckpt")), &params(&one.join("ckpt")));
        eprintln!("{task}: 2 ranks vs 1 process: losses {loss:.2e}, weights {w:.2e}");
        assert!(loss < 1e-5 && w < 1e-5, "{task}: losses {loss:.2e}, weights {w:.2e} (relative)");
        if task == "classify" {
            let acc = |run: &Path| -> f64 {
                let r: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
                r["test_accuracy"].as_f64().unwrap()
            };
            assert_eq!(acc(&one), acc(&many), "classify: test accuracy");
        }
    }
}

/// The `communication` event of a run's metrics.jsonl.
fn communication(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let line = text.lines().find(|l| l.contains("\"communication\"")).expect("a communication event");
    serde_json::from_str(line).unwrap()
}

/// ZeRO-1 (`train.zero = 1`): every rank holds its 1/N of the optimizer state, the run follows
/// one process as plain data parallelism does, and its checkpoints are the ordinary complete
/// ones: a ZeRO run of 2 ranks resumes on 3 ranks (ZeRO) and on 1 process, ending where an
/// uninterrupted one-process run ends.
#[test]
fn zero_1_shards_the_optimizer_state_and_trains_like_one_process() {
    let Some(mpirun) = mpirun() else { return };
    let cases: [(usize, &[&str]); 3] = [
        (2, &["train.zero=1"]),
        (3, &["train.zero=1", "optim.name=adam"]),
        (2, &["train.zero=1", "optim.name=sgd", "optim.momentum=0.9"]),
    ];
    for (ranks, sets) in cases {
        let (loss, w) = one_vs_ranks(&mpirun, ranks, 2, sets);
        eprintln!("{sets:?}: {ranks} ranks vs 1 process: losses {loss:.2e}, weights {w:.2e}");
        assert!(loss < 1e-5 && w < 1e-5, "{sets:?} on {ranks} ranks: losses {loss:.2e}, weights {w:.2e}");
    }

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &corpus(dir.path()));
    let cfg = cfg.to_str().unwrap();
    let out = |name: &str| format!("train.out_dir={}", dir.path().join(name).display());
    let mut straight = Command::new(BIN);
    straight.args(["train", "--config", cfg, "--quiet", "--set", "train.batch_size=6", "--set", &out("straight")]);
    run_ok(straight, "one process");
    let want = params(&dir.path().join("straight/ckpt"));
    // The state per rank: half of AdamW's two moments with ZeRO-1, all of them without.
    let n_params = want.len() as u64;
    for zero in [0, 1] {
        let name = format!("zero{zero}");
        let mut c = mpi_cmd(&mpirun, 2, &["train", "--config", cfg, "--quiet", "--set", "train.batch_size=3"]);
        c.args(["--set", &format!("train.zero={zero}"), "--set", "train.max_iters=10", "--set", &out(&name)]);
        run_ok(c, &format!("2 ranks, zero {zero}"));
        let per_rank: Vec<u64> = communication(&dir.path().join(&name))["optimizer_state_bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap())
            .collect();
        let full = 8 * n_params;
        if zero == 0 {
            assert_eq!(per_rank, [full, full]);
        } else {
            assert_eq!(per_rank.iter().sum::<u64>(), full, "the parts add up to the whole");
            assert!(per_rank.iter().all(|&b| b.abs_diff(full / 2) <= 8), "{per_rank:?} of {full}");
        }
    }
    // The ZeRO checkpoint holds the whole state: resume it on 3 ranks (ZeRO) and on 1 process.
    let ckpt = dir.path().join("zero1/ckpt");
    let saved = lmlab::io::checkpoint::load(&ckpt, 1, true).unwrap();
    assert_eq!(saved.optimizer.as_ref().unwrap().buffers.iter().map(|(_, v)| v.len()).sum::<usize>(), 2 * want.len());
    for (ranks, b) in [(3usize, 2usize), (1, 6)] {
        let name = format!("resumed-{ranks}");
        let copy = dir.path().join(&name);
        copy_dir(&ckpt, &copy.join("ckpt"));
        let resumed = copy.join("ckpt");
        let mut c = mpi_cmd(&mpirun, ranks, &["train", "--resume", resumed.to_str().unwrap(), "--quiet"]);
        c.args(["--set", &format!("train.batch_size={b}"), "--set", "train.max_iters=20", "--set", &out(&name)]);
        run_ok(c, &format!("resume on {ranks}"));
        let w = rel_l2(&params(&copy.join("ckpt")), &want);
        eprintln!("ZeRO-1 on 2 ranks, resumed on {ranks}: weights vs one process {w:.2e}");
        assert!(w < 1e-5, "resumed on {ranks}: relative weight difference {w:.2e}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Trains a small model for the tensor-parallel tests (`extra`: model overrides) and returns
/// its checkpoint.
fn trained(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let cfg = config(dir, &corpus(dir));
    let out = dir.join(name);
    let mut c = Command::new(BIN);
    c.args(["train", "--config", cfg.to_str().unwrap(), "--quiet", "--set", "train.max_iters=300"]);
    c.args(["--set", "train.eval_interval=300", "--set", "model.n_head=4", "--set", "model.dropout=0"]);
    c.args(["--set", "model.block_size=32"]);
    c.args(["--set", &format!("train.out_dir={}", out.display())]);
    for e in extra {
        c.args(["--set", e]);
    }
    run_ok(c, &format!("training {name}"));
    out.join("ckpt")
}

/// `lmlab ARGS` on `ranks` ranks (1: one process, no mpirun), its standard output.
fn on_ranks(mpirun: &Path, ranks: usize, args: &[&str]) -> String {
    if ranks == 1 {
        let mut c = Command::new(BIN);
        c.args(args);
        return run_ok(c, "one process");
    }
    run_ok(mpi_cmd(mpirun, ranks, args), &format!("{ranks} ranks"))
}

/// Tensor-parallel inference: on 2 ranks and on 3 (an uneven split of 4 heads and of the
/// feed-forward neurons), a GPT with biases and a Llama-style model, and on 2 ranks a model
/// with grouped-query attention, give the logits of one process (1e-5 relative), the same greedy
/// text and the same sliding-window loss; rank 0 alone prints. Splits that cannot be made are
/// clear errors.
#[test]
fn tensor_parallel_inference_equals_one_process() {
    let Some(mpirun) = mpirun() else { return };
    let dir = tempfile::tempdir().unwrap();
    let gpt = trained(dir.path(), "gpt", &["model.bias=true"]);
    let llama = trained(
        dir.path(),
        "llama",
        &["model.norm=rmsnorm", "model.activation=swiglu", "model.position=rope", "model.tie_embeddings=false"],
    );
    let logits = |v: &str| -> Vec<f64> {
        let j: serde_json::Value = serde_json::from_str(v).unwrap();
        j["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect()
    };
    // Grouped-query attention: 4 query heads sharing 2 key/value heads split by whole groups.
    let gqa = trained(dir.path(), "gqa", &["model.n_kv_head=2", "model.norm=rmsnorm", "model.position=rope"]);
    for (ckpt, rank_counts) in [(&gpt, &[2, 3][..]), (&llama, &[2, 3][..]), (&gqa, &[2][..])] {
        let c = ckpt.to_str().unwrap();
        let text = ["eval", "logits", "--checkpoint", c, "--text", "First Citizen:\nBe"];
        let sample = ["sample", "--checkpoint", c, "--prompt", "All:", "--temperature", "0", "--max-new-tokens", "80"];
        let lm = ["eval", "lm", "--checkpoint", c, "--json"];
        let (want_logits, want_text, want_lm) =
            (logits(&on_ranks(&mpirun, 1, &text)), on_ranks(&mpirun, 1, &sample), on_ranks(&mpirun, 1, &lm));
        let loss = |s: &str| -> f64 {
            let j: serde_json::Value = serde_json::from_str(s).unwrap();
            j["runs"][0]["metrics"]["loss"].as_f64().unwrap()
        };
        for &ranks in rank_counts {
            let got = logits(&on_ranks(&mpirun, ranks, &text));
            let scale = want_logits.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            let err = got.iter().zip(&want_logits).fold(0.0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
            let text_got = on_ranks(&mpirun, ranks, &sample);
            let lm_got = on_ranks(&mpirun, ranks, &lm);
            let lm_err = (loss(&lm_got) - loss(&want_lm)).abs() / loss(&want_lm);
            eprintln!(
                "{c} on {ranks} ranks: logits {err:.2e}, loss {lm_err:.2e}, text equal: {}",
                text_got == want_text
            );
            assert_eq!(got.len(), want_logits.len());
            assert!(err < 1e-5, "{c} on {ranks} ranks: relative logit difference {err:.2e}");
            assert_eq!(text_got, want_text, "{c} on {ranks} ranks: greedy text");
            assert!(lm_err < 1e-5, "{c} on {ranks} ranks: loss difference {lm_err:.2e}");
        }
    }
    // 4 heads do not split over 5 ranks.
    let g = gpt.to_str().unwrap();
    let o = mpi_cmd(&mpirun, 5, &["eval", "logits", "--checkpoint", g, "--text", "All:"]).output().unwrap();
    let (_, err) = common::text(&o);
    assert!(!o.status.success() && err.contains("needs at least one attention head"), "{err}");
    // 2 key/value heads do not split over 3 ranks by whole groups.
    let o = mpi_cmd(&mpirun, 3, &["eval", "logits", "--checkpoint", gqa.to_str().unwrap(), "--text", "All:"])
        .output()
        .unwrap();
    let (_, err) = common::text(&o);
    assert!(!o.status.success() && err.contains("key/value"), "{err}");
    // Commands without a distributed mode refuse to run as several ranks.
    let o = mpi_cmd(&mpirun, 2, &["info", g]).output().unwrap();
    let (_, err) = common::text(&o);
    assert!(!o.status.success() && err.contains("run this command as one process"), "{err}");
}
