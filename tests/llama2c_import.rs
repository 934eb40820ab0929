//! `lmlab import --llama2c`: a llama2.c model with its tokenizer becomes an ordinary checkpoint
//! that samples exactly as llama2.c's `run` prints, quantizes, and goes through GGUF (as
//! llama.cpp's SentencePiece "llama" vocabulary) and back unchanged.
//!
//! The real stories260K files live in the shared data directory; tests that need them say so
//! (and fail under `LMLAB_REQUIRE_DATA=1`).

mod common;
use common::{lmlab, ok, text};
use lmlab::data::llama2c_tokenizer::{Llama2cTokenizer, BOS, EOS};
use lmlab::data::Tokenizer;
use lmlab::io::gguf::{self, Array, GgmlType, Value};
use std::path::{Path, PathBuf};

fn stories() -> Option<(PathBuf, PathBuf)> {
    Some((common::shared_data("llama2c/stories260K.bin")?, common::shared_data("llama2c/tok512.bin")?))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Imports stories260K into `dir/ckpt`.
fn import(dir: &Path, model: &Path, tok: &Path) -> PathBuf {
    let ck = dir.join("ckpt");
    let out = ok(lmlab(&["import", "--llama2c", s(model), "--tokenizer", s(tok), "--out", s(&ck)]));
    assert!(out.contains("llama2c tokenizer of 512 tokens"), "{out}");
    ck
}

fn greedy(ck: &Path, prompt: &str, n: usize) -> String {
    ok(lmlab(&[
        "sample",
        "--checkpoint",
        s(ck),
        "--prompt",
        prompt,
        "--temperature",
        "0",
        "--max-new-tokens",
        &n.to_string(),
    ]))
}

#[test]
fn imported_checkpoint_samples_what_llama2c_prints() {
    let Some((model, tok)) = stories() else { return };
    let (Some(want256), Some(want64)) = (
        common::shared_data("llama2c/stories260K.greedy-256.txt"),
        common::shared_data("llama2c/stories260K.greedy-64-once-upon-a-time.txt"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ck = import(dir.path(), &model, &tok);
    // `run -t 0` with no prompt: BOS, then 256 tokens; the first loses its space after BOS.
    assert_eq!(greedy(&ck, "", 256), std::fs::read_to_string(want256).unwrap());
    // `run -n 64 -i "Once upon a time"`: 4 prompt tokens after BOS, then 60.
    assert_eq!(greedy(&ck, "Once upon a time", 60), std::fs::read_to_string(want64).unwrap());
    // The prompt is encoded as llama2.c encodes it (BOS first).
    let logits: serde_json::Value =
        serde_json::from_str(&ok(lmlab(&["eval", "logits", "--checkpoint", s(&ck), "--text", "Once upon a time"])))
            .unwrap();
    assert_eq!(logits["ids"], serde_json::json!([BOS, 403, 407, 261, 378]));
    let info = ok(lmlab(&["info", s(&ck)]));
    assert!(info.contains("tokenizer: llama2c (512 tokens)") && info.contains("4 kv"), "{info}");
    // The checkpoint's tokenizer.json gives back tokenizer.bin's bytes.
    let json = std::fs::read_to_string(ck.join("tokenizer.json")).unwrap();
    let Tokenizer::Llama2c(t) = Tokenizer::from_json(&json).unwrap() else { panic!("not a llama2c tokenizer") };
    assert_eq!(t.to_bytes(), std::fs::read(&tok).unwrap());
}

#[test]
fn import_errors_name_the_problem() {
    let Some((model, tok)) = stories() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The tokenizer is required, and only with --llama2c.
    let o = lmlab(&["import", "--llama2c", s(&model), "--out", s(&dir.path().join("a"))]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    // A vocabulary of another size.
    let t = Llama2cTokenizer::read(&tok).unwrap();
    let small = Llama2cTokenizer::new(
        (0..300).map(|i| t.token(i).unwrap().to_vec()).collect(),
        (0..300).map(|i| t.score(i).unwrap()).collect(),
        t.max_token_length() as u32,
    )
    .unwrap();
    let small_path = dir.path().join("small.bin");
    std::fs::write(&small_path, small.to_bytes()).unwrap();
    let out = dir.path().join("b");
    let o = lmlab(&["import", "--llama2c", s(&model), "--tokenizer", s(&small_path), "--out", s(&out)]);
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("300 tokens") && err.contains("vocab_size 512"), "{err}");
    assert!(!out.exists(), "no checkpoint is written on error");
    // The model file is not a llama2.c model.
    let o = lmlab(&["import", "--llama2c", s(&tok), "--tokenizer", s(&tok), "--out", s(&out)]);
    assert!(text(&o).1.contains("tok512.bin"), "{:?}", text(&o));
}

#[test]
fn gguf_holds_the_sentencepiece_vocabulary_and_brings_it_back() {
    let Some((model, tok)) = stories() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ck = import(dir.path(), &model, &tok);
    let (g32, g8) = (dir.path().join("m.f32.gguf"), dir.path().join("m.q8_0.gguf"));
    ok(lmlab(&["export", "--gguf", s(&g32), "--checkpoint", s(&ck)]));
    let o = lmlab(&["export", "--gguf", s(&g8), "--type", "q8_0", "--checkpoint", s(&ck)]);
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    // stories260K's feed-forward is 172 wide: its down projections cannot be Q8_0 blocks.
    assert!(err.contains("5 matrices") && err.contains("blk.0.ffn_down.weight"), "{err}");

    let g = gguf::parse(&std::fs::read(&g8).unwrap()).unwrap();
    let ty = |n: &str| g.tensors.iter().find(|t| t.name == n).unwrap().ty;
    assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::F32);
    assert_eq!(ty("blk.0.ffn_up.weight"), GgmlType::Q8_0);
    assert_eq!(g.get("tokenizer.ggml.model").and_then(Value::as_str), Some("llama"));
    let Some(Value::Array(Array::String(tokens))) = g.get("tokenizer.ggml.tokens") else { panic!("no tokens") };
    let Some(Value::Array(Array::I32(types))) = g.get("tokenizer.ggml.token_type") else { panic!("no types") };
    // SentencePiece's spellings, as llama.cpp's converter writes a Llama vocabulary.
    assert_eq!(&tokens[..3], ["<unk>", "<s>", "</s>"]);
    assert_eq!((&tokens[3][..], &tokens[259][..], &tokens[403][..]), ("<0x00>", "\u{2581}t", "\u{2581}Once"));
    assert_eq!((types[0], types[BOS as usize], types[EOS as usize], types[3], types[403]), (2, 3, 3, 6, 1));

    // Back: the same tokenizer.json, the same weights, the same text.
    let back = dir.path().join("back");
    ok(lmlab(&["import", "--gguf", s(&g32), "--out", s(&back)]));
    assert_eq!(std::fs::read(back.join("tokenizer.json")).unwrap(), std::fs::read(ck.join("tokenizer.json")).unwrap());
    let (a, b) =
        (lmlab::io::checkpoint::load(&ck, 1, false).unwrap(), lmlab::io::checkpoint::load(&back, 1, false).unwrap());
    assert_eq!(a.model.params, b.model.params);
    assert_eq!(greedy(&back, "Once upon a time", 40), greedy(&ck, "Once upon a time", 40));
}

#[test]
fn quantized_stories_keep_unblockable_weights_in_f32() {
    let Some((model, tok)) = stories() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ck = import(dir.path(), &model, &tok);
    let q = dir.path().join("q8");
    let o = lmlab(&["quantize", "--checkpoint", s(&ck), "--scheme", "q8_0", "--out", s(&q), "--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    // 5 layers × (attention in, attention out, up+gate) as Q8_0; the 172-wide down projections stay f32.
    assert_eq!(j["tensors"].as_array().unwrap().len(), 15, "{j}");
    let kept = j["kept_f32"].as_array().unwrap();
    assert_eq!(kept.len(), 5, "{j}");
    assert!(kept.iter().all(|n| n.as_str().unwrap().ends_with("mlp.c_proj.weight")), "{j}");
    // It runs, and Q8_0 keeps the first sentence of the f32 model's greedy story.
    let (f, q8) = (greedy(&ck, "Once upon a time", 30), greedy(&q, "Once upon a time", 30));
    let first = |t: &str| t.split('.').next().unwrap().to_string();
    assert_eq!(first(&q8), first(&f), "{q8}\n{f}");
    // Exported as stored, its GGUF runs the same blocks: the linear weights are the Q8_0 blocks
    // of a `--type q8_0` export; the token table and the 172-wide weights stay f32.
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    ok(lmlab(&["export", "--gguf", s(&a), "--type", "q8_0", "--checkpoint", s(&ck)]));
    ok(lmlab(&["export", "--gguf", s(&b), "--checkpoint", s(&q)]));
    let (ga, gb) =
        (gguf::parse(&std::fs::read(&a).unwrap()).unwrap(), gguf::parse(&std::fs::read(&b).unwrap()).unwrap());
    assert_eq!(gb.get("general.file_type").and_then(Value::as_u64), Some(7));
    for (x, y) in ga.tensors.iter().zip(&gb.tensors) {
        assert_eq!(x.name, y.name);
        match x.name.as_str() {
            "token_embd.weight" => assert_eq!((x.ty, y.ty), (GgmlType::Q8_0, GgmlType::F32)),
            _ => assert_eq!((x.ty, &x.data), (y.ty, &y.data), "{}", x.name),
        }
    }
    // Imported, that file is a quantized checkpoint again, generating the same text; with
    // --dequantize a float one.
    let (back, float) = (dir.path().join("back"), dir.path().join("float"));
    let out = ok(lmlab(&["import", "--gguf", s(&b), "--out", s(&back)]));
    assert!(out.contains("15 quantized weights"), "{out}");
    assert_eq!(greedy(&back, "Once upon a time", 30), q8);
    let info = ok(lmlab(&["info", s(&back)]));
    assert!(info.contains("q8_0"), "{info}");
    ok(lmlab(&["import", "--gguf", s(&b), "--dequantize", "--out", s(&float)]));
    let info = ok(lmlab(&["info", s(&float)]));
    assert!(info.contains("weights: f32"), "{info}");
}
