//! GPT-2's tokenizer from OpenAI's original files, stored and reloaded as lmlab checkpoints
//! store it, reproduces llama.cpp's GPT-2 test vectors (`ggml-vocab-gpt-2.gguf.inp` / `.out`,
//! the ids of OpenAI's / HF's tokenizer), and every test string decodes back exactly. Skipped, with a message, when the shared data is absent.

mod common;
use lmlab::data::gpt2::{Gpt2Tokenizer, END_OF_TEXT};
use lmlab::data::Tokenizer;
use std::path::{Path, PathBuf};

/// `gpt2-tokenizer/` under `$LMLAB_DATA` or `../shared/data` (relative to the crate).
fn data_dir() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env = std::env::var_os("LMLAB_DATA").filter(|v| !v.is_empty()).map(PathBuf::from);
    env.into_iter()
        .chain([PathBuf::from("../shared/data"), manifest.join("../shared/data"), manifest.join("../../shared/data")])
        .map(|d| d.join("gpt2-tokenizer"))
        .find(|d| d.join("encoder.json").is_file() && d.join("vocab.bpe").is_file())
}

/// llama.cpp's format (tests/test-tokenizer-0): the `.inp` holds the test strings, each followed
/// by a line `__ggml_vocab_test__`; the `.out` holds one line per string, the expected ids
/// separated by spaces (an empty line for the empty string).
fn vectors(dir: &Path) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(dir.join("ggml-vocab-gpt-2.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(dir.join("ggml-vocab-gpt-2.gguf.out")).unwrap();
    let mut strings: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    assert_eq!(strings.pop(), Some(""), "the .inp file ends with a separator line");
    let ids: Vec<Vec<u32>> = out.lines().map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect()).collect();
    assert_eq!(strings.len(), ids.len(), "as many test strings as expected id lines");
    strings.into_iter().map(str::to_owned).zip(ids).collect()
}

#[test]
fn llama_cpp_gpt2_vectors_and_round_trip() {
    let Some(dir) = data_dir() else {
        return common::skip("gpt2-tokenizer/ not found (set LMLAB_DATA to the shared data directory)");
    };
    let openai = Gpt2Tokenizer::from_dir(&dir).unwrap();
    // As lmlab checkpoints store it: a tokenizers document in tokenizer.json, read back as the
    // GPT-2 kind. The vectors below run on the tokenizer that went through it.
    let stored = Tokenizer::Gpt2(Box::new(openai)).to_json().unwrap();
    let tok = match Tokenizer::from_json(&stored).unwrap() {
        Tokenizer::Gpt2(t) => t,
        other => panic!("tokenizer.json came back as the {} kind", other.kind()),
    };
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(tok.end_of_text(), Some(END_OF_TEXT));
    assert_eq!(tok.id_to_token(END_OF_TEXT).as_deref(), Some("<|endoftext|>"));
    let cases = vectors(&dir);
    assert_eq!(cases.len(), 46);
    let mut failures = Vec::new();
    for (i, (text, want)) in cases.iter().enumerate() {
        let got = tok.encode(text).unwrap();
        if &got != want {
            failures.push(format!("case {i} {text:?}: got {got:?}, want {want:?}"));
        }
        let back = tok.decode(&got).unwrap();
        if &back != text {
            failures.push(format!("case {i} {text:?}: decodes back to {back:?}"));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    println!("{} llama.cpp GPT-2 vectors pass and round-trip", cases.len());

    // Known ids (also in the shared data README), and a literal special token stays text.
    assert_eq!(tok.encode("Hello world").unwrap(), [15496, 995]);
    assert_eq!(tok.encode("Once upon a time").unwrap(), [7454, 2402, 257, 640]);
    let lit = tok.encode("<|endoftext|>").unwrap();
    assert!(!lit.contains(&END_OF_TEXT) && lit.len() > 1, "{lit:?}");
    assert_eq!(tok.decode(&[15496, END_OF_TEXT]).unwrap(), "Hello<|endoftext|>");
    let err = tok.decode(&[1, 50257]).unwrap_err().to_string();
    assert!(err.contains("position 1"), "{err}");
}

#[test]
fn gpt2_missing_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = Gpt2Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("encoder.json") && err.contains("not found"), "{err}");
}
