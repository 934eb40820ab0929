//! The library's modules form layers, and a module uses only modules of lower layers, so no
//! two modules depend on each other and each layer can be read (and tested) without the ones
//! above it. Bottom to top:
//!
//! ```text
//! profile                  per-operation timers the kernels report to
//! kernels                  forward/backward kernels
//! util | dist              thread pool (with the kernels' per-thread buffers), reading text files;
//!                          the communicator between the processes of an MPI job
//! model                    the Transformer
//! optim | compress         optimizers, schedules, clipping, f16 loss scaling; GPTQ, RTN
//! data                     tokenizers, datasets, batches
//! config                   the run configuration ([model], [data], [train], [optim])
//! io                       checkpoints and model formats
//! inspect                  gradient health, charts
//! train | infer | eval     training; sampling, translation, embeddings; metrics
//! bench | demo | explain   benchmark cases, the demo's data, the explain experiments and report
//! serve                    the OpenAI-compatible HTTP server (continuous batching)
//! ```
//!
//! The command line (`src/main.rs`, `src/cli/`) is the binary crate on top of all of them.
//! Modules of one layer do not use each other, except `eval` → `infer` (fluency and efficiency
//! evaluate by generating) and `train` → `infer`, `eval` (the QA loop answers its validation
//! questions with the span decoding and scores them with SQuAD's EM/F1). This test reads the `crate::` paths of every library file (comments
//! excluded) and fails on any other use of a module that is not below.

use std::path::Path;

const LAYERS: &[&[&str]] = &[
    &["profile"],
    &["kernels"],
    &["util", "dist"],
    &["model"],
    &["optim", "compress"],
    &["data"],
    &["config"],
    &["io"],
    &["inspect"],
    &["train", "infer", "eval"],
    &["bench", "demo", "explain"],
    &["serve"],
];

/// Uses within one layer that are allowed: (user, used).
const SIDEWAYS: &[(&str, &str)] = &[("eval", "infer"), ("train", "infer"), ("train", "eval")];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level modules a file's code names as `crate::module` (grouped `crate::{a, b}` too).
fn used_modules(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                // Only the first name of each comma-separated item of a one-line group.
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(|item| item.trim().split("::").next().unwrap_or(""))
                    .collect(),
                None => vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("")],
            };
            out.extend(names.into_iter().filter(|n| !n.is_empty()).map(String::from));
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_library_module_has_a_layer() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(name) = line.trim().strip_prefix("pub mod ").and_then(|r| r.strip_suffix(';')) {
            assert!(layer_of(name).is_some(), "src/lib.rs declares `{name}`, which tests/layers.rs puts in no layer");
        }
    }
}

#[test]
fn modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy();
        let module = top.strip_suffix(".rs").unwrap_or(&top).to_string();
        // The binary crate (main.rs and its cli/ modules) sits on top of the library.
        if module == "main" || module == "cli" || module == "lib" {
            continue;
        }
        let layer = layer_of(&module).unwrap_or_else(|| panic!("{} is in no layer", rel.display()));
        let code = std::fs::read_to_string(&file).unwrap();
        for used in used_modules(&code) {
            if used == module || SIDEWAYS.contains(&(module.as_str(), used.as_str())) {
                continue;
            }
            match layer_of(&used) {
                Some(l) if l < layer => {}
                Some(_) => violations.push(format!("src/{} uses crate::{used}", rel.display())),
                None => {}
            }
        }
    }
    assert!(
        violations.is_empty(),
        "a module uses one of its own layer or above (see the order in tests/layers.rs):\n{}",
        violations.join("\n")
    );
}

#[test]
fn finds_plain_and_grouped_paths_outside_comments() {
    let code = "use crate::io::checkpoint;\n// crate::train in a comment\nuse crate::{model::Gpt, optim};\n\
                let x = crate::util::thread_pool(0);";
    assert_eq!(used_modules(code), ["io", "model", "optim", "util"]);
}
