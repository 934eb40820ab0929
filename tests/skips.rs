//! A test whose input is missing says that it was skipped, and `LMLAB_REQUIRE_DATA=1` (set by
//! `.ci/run`) turns that skip into a failure. Checked on a child process of this test binary
//! that runs the ignored probe below, with and without the variable.

mod common;
use std::process::Command;

#[test]
#[ignore = "a probe: run by skip_reports_and_require_data_fails as a child process"]
fn probe_missing_shared_file() {
    assert!(common::shared_data("no-such-dir/no-such-file.txt").is_none());
}

fn run_probe(require: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "probe_missing_shared_file", "--ignored", "--test-threads=1"]);
    cmd.env_remove("LMLAB_REQUIRE_DATA");
    if let Some(v) = require {
        cmd.env("LMLAB_REQUIRE_DATA", v);
    }
    let out = cmd.output().expect("run this test binary");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn skip_reports_and_require_data_fails() {
    let (ok, text) = run_probe(None);
    assert!(ok, "without LMLAB_REQUIRE_DATA a missing input skips:\n{text}");
    assert!(
        text.contains("SKIPPED probe_missing_shared_file: no-such-dir/no-such-file.txt not found"),
        "the skip is reported with the test's name and the reason:\n{text}"
    );
    let (ok, _) = run_probe(Some("0"));
    assert!(ok, "LMLAB_REQUIRE_DATA=0 means not required");
    let (ok, text) = run_probe(Some("1"));
    assert!(!ok, "with LMLAB_REQUIRE_DATA=1 a missing input fails:\n{text}");
    assert!(text.contains("LMLAB_REQUIRE_DATA is set"), "{text}");
}
