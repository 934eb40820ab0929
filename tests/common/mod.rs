//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod gpt_fixture;

use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::path::PathBuf;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Asserts `max|got - want| <= rtol * max|want|` (plus a tiny absolute floor) and returns the
/// relative error, so failures say how far off a tensor is.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], rtol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-12);
    let err = got.iter().zip(want).fold(0.0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
    let rel = err / scale;
    assert!(rel <= rtol, "{what}: relative error {rel:.3e} > {rtol:.0e} (max abs diff {err:.3e}, scale {scale:.3e})");
    rel
}

/// Uniform values in (-scale, scale).
pub fn rand_vec(rng: &mut Xoshiro256PlusPlus, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0f32) * scale).collect()
}

pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Compares `analytic` with central differences of `loss` at `x`, element by element.
pub fn check(name: &str, x: &[f32], analytic: &[f32], mut loss: impl FnMut(&[f32]) -> f64) {
    let h = 1e-2f32;
    let mut xp = x.to_vec();
    let mut worst = 0.0f64;
    let scale = analytic.iter().fold(0.0f64, |m, g| m.max(g.abs() as f64)).max(1e-3);
    for i in 0..x.len() {
        xp[i] = x[i] + h;
        let up = loss(&xp);
        xp[i] = x[i] - h;
        let down = loss(&xp);
        xp[i] = x[i];
        let numeric = (up - down) / (2.0 * h as f64);
        worst = worst.max((numeric - analytic[i] as f64).abs() / scale);
    }
    assert!(worst < 2e-3, "{name}: finite-difference mismatch {worst:.2e} (relative to max |grad| {scale:.3})");
}

/// Whether a missing optional input (the shared data directory, the downloaded
/// all-MiniLM-L6-v2) must fail the test instead of skipping it: `LMLAB_REQUIRE_DATA=1`, which
/// `.ci/run` sets, so CI cannot go green on tests that did not run.
pub fn data_required() -> bool {
    std::env::var("LMLAB_REQUIRE_DATA").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Ends a test that cannot run here: says so and why, or panics under `LMLAB_REQUIRE_DATA=1`.
/// The line goes to the process's stderr directly, past the test harness's output capture, so
/// a plain `cargo test` shows it next to the test's `ok`.
pub fn skip(why: &str) {
    let test = std::thread::current().name().unwrap_or("test").to_owned();
    assert!(!data_required(), "{test}: {why} (LMLAB_REQUIRE_DATA is set, so a missing input is a failure)");
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Reports that one instruction-set path of a test did not run because this CPU lacks it. Not
/// a failure even under LMLAB_REQUIRE_DATA: the paths the CPU has were tested, and no machine
/// has them all.
pub fn skip_cpu(why: &str) {
    let test = std::thread::current().name().unwrap_or("test").to_owned();
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test} (this path only): {why}");
}

/// A file of the shared data directory (`$LMLAB_DATA` or `../shared/data`), or None after
/// [`skip`] said why the test does not run.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let p = lmlab::data::parallel::shared_data_file(rel);
    if p.is_none() {
        skip(&format!("{rel} not found (set LMLAB_DATA to the shared data directory)"));
    }
    p
}

/// Runs this build's `lmlab` binary with `args`.
pub fn lmlab(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lmlab")).args(args).output().expect("run lmlab")
}

/// A run's standard output and standard error as text.
pub fn text(o: &std::process::Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// The standard output of a run that must succeed (its stderr goes into the failure message).
pub fn ok(o: std::process::Output) -> String {
    let (out, err) = text(&o);
    assert!(o.status.success(), "lmlab failed: {err}\n{out}");
    out
}

/// [`lmlab`] as (succeeded, stdout, stderr).
pub fn lmlab_text(args: &[&str]) -> (bool, String, String) {
    let o = lmlab(args);
    let (out, err) = text(&o);
    (o.status.success(), out, err)
}

/// all-MiniLM-L6-v2's directory: `$LMLAB_MINILM_DIR`, else scripts/fetch_minilm.sh's cache
/// (`${LMLAB_CACHE:-~/.cache/lmlab}/minilm/model`), running the fetch script once per test
/// process when it is missing; None, after [`skip`] said why, when it cannot be had.
pub fn minilm_dir() -> Option<PathBuf> {
    static DIR: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = lmlab::infer::embed::default_model_dir();
        if dir.join("model.safetensors").is_file() {
            return Ok(dir);
        }
        if std::env::var_os("LMLAB_MINILM_DIR").is_some_and(|v| !v.is_empty()) {
            return Err(format!("LMLAB_MINILM_DIR={} has no model.safetensors", dir.display()));
        }
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch_minilm.sh");
        eprintln!("{} is missing: running {}", dir.display(), script.display());
        match std::process::Command::new("bash").arg(&script).output() {
            Ok(out) if out.status.success() => {
                let got = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                if got.join("model.safetensors").is_file() {
                    return Ok(got);
                }
                Err(format!("the fetch script printed {}, which has no model.safetensors", got.display()))
            }
            Ok(out) => Err(format!(
                "all-MiniLM-L6-v2 is not available ({} failed: {})",
                script.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run {}: {e}", script.display())),
        }
    });
    match dir {
        Ok(d) => Some(d.clone()),
        Err(why) => {
            skip(why);
            None
        }
    }
}
