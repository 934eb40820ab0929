//! Hugging Face GPT-2 directories (`io::hf_gpt2`): a directory written by transformers itself
//! (tests/fixtures/hf_gpt2/, from scripts/check_hf_gpt2.py) imports with transformers' logits
//! and tokenizer ids; export(import(dir)) writes the same tensors bit for bit;
//! import(export(model)) gives bit-identical logits and parameters for several configurations
//! and every tokenizer kind; every choice GPT-2 cannot express, and every malformed file, is a
//! clear error that writes nothing; `lmlab export --hf` / `import --hf` / `sample` end to end.
//!
//! The check against transformers in the other direction (lmlab's exports loaded by
//! `GPT2LMHeadModel.from_pretrained` and `AutoTokenizer.from_pretrained`) is the script's.

mod common;
use common::{lmlab, ok};

use common::{assert_close, fixture};
use lmlab::data::bpe::BpeTokenizer;
use lmlab::data::gpt2::Gpt2Tokenizer;
use lmlab::data::{CharTokenizer, Tokenizer};
use lmlab::io::hf_gpt2::{self, char_tokenizer_json, export, export_files, import};
use lmlab::io::tensors::{to_safetensors_raw, RawTensor, TensorFile};
use lmlab::model::transformer::{
    ActivationKind, Arch, ModelConfig, NormKind, NormPosition, Position, ScoreKind, Transformer,
};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

const SAMPLE: &str = "First Citizen:\nBefore we proceed any further, hear me speak.\n";

fn fixture_dir(name: &str) -> PathBuf {
    fixture("hf_gpt2").join(name)
}

/// (input_ids (B, T), transformers' logits (B, T, V)) of a fixture.
fn expected(dir: &Path) -> (Vec<u32>, usize, usize, Vec<f64>) {
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let tf = TensorFile::parse(&bytes, "expected.safetensors").unwrap();
    let (shape, ids) = tf.read_any("input_ids").unwrap();
    let (_, logits) = tf.read_any("logits").unwrap();
    (ids.iter().map(|&x| x as u32).collect(), shape[0], shape[1], logits)
}

fn expected_text(dir: &Path) -> (String, Vec<u32>) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let ids = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    (v["text"].as_str().unwrap().to_string(), ids)
}

fn logits(m: &mut Transformer, ids: &[u32], b: usize, t: usize) -> Vec<f32> {
    m.forward_lm(ids, None, b, t, false, 0).unwrap();
    m.logits().to_vec()
}

#[test]
fn fixture_imports_with_transformers_logits_and_ids() {
    for name in ["tied", "untied"] {
        let dir = fixture_dir(name);
        let (mut m, tok) = import(&dir, 2).unwrap();
        assert!(matches!(tok, Tokenizer::Gpt2(_)), "{name}: the GPT-2 tokenizer kind");
        let c = &m.config;
        assert_eq!((c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_embd), (280, 40, 2, 2, 8));
        if name == "untied" {
            assert!(!c.tie_embeddings && c.ffn_hidden == Some(40));
            assert_eq!((c.activation, c.score), (ActivationKind::Gelu, ScoreKind::Unscaled));
        } else {
            assert!(c.tie_embeddings && c.ffn_hidden.is_none());
            assert_eq!((c.activation, c.score), (ActivationKind::GeluTanh, ScoreKind::Scaled));
        }
        let (ids, b, t, want) = expected(&dir);
        let got = logits(&mut m, &ids, b, t);
        let rel = assert_close(&format!("{name} logits"), &got, &want, 1e-4);
        println!("{name}: logits within {rel:.2e} of transformers'");
        let (text, want_ids) = expected_text(&dir);
        assert_eq!(tok.encode(&text).unwrap(), want_ids, "{name}: AutoTokenizer's ids");
        assert_eq!(tok.decode(&want_ids).unwrap(), text);
    }
}

/// Tensors of a safetensors file by name without the `transformer.` prefix: (dtype, shape, bytes).
fn tensors_of(bytes: &[u8]) -> HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let tf = TensorFile::parse(bytes, "model.safetensors").unwrap();
    tf.st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n.strip_prefix("transformer.").unwrap_or(&n).to_string(),
                (v.dtype(), v.shape().to_vec(), v.data().to_vec()),
            )
        })
        .collect()
}

fn file<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &files.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} not exported")).1
}

#[test]
fn export_of_import_writes_the_same_tensors() {
    for name in ["tied", "untied"] {
        let dir = fixture_dir(name);
        let (m, tok) = import(&dir, 1).unwrap();
        let files = export_files(&m, &tok).unwrap();
        let want = tensors_of(&std::fs::read(dir.join("model.safetensors")).unwrap());
        let got = tensors_of(file(&files, "model.safetensors"));
        let mut names: Vec<_> = want.keys().collect();
        names.sort();
        let mut got_names: Vec<_> = got.keys().collect();
        got_names.sort();
        assert_eq!(names, got_names, "{name}: tensor names");
        for n in names {
            assert!(want[n] == got[n], "{name}: tensor {n} differs");
        }
        // The exported file uses GPT2LMHeadModel's own (prefixed) names.
        let tf_bytes = file(&files, "model.safetensors").to_vec();
        let tf = TensorFile::parse(&tf_bytes, "x").unwrap();
        assert!(tf.st.names().iter().all(|n| n.starts_with("transformer.") || *n == "lm_head.weight"));
        assert_eq!(tf.metadata.get("format").map(String::as_str), Some("pt"));
        assert_eq!(tf.st.names().contains(&&"lm_head.weight".to_string()), name == "untied");

        // The tokenizer files give the same ids: tokenizer.json, and vocab.json + merges.txt.
        let (text, want_ids) = expected_text(&dir);
        let out = tempfile::tempdir().unwrap();
        for (n, b) in &files {
            std::fs::write(out.path().join(n), b).unwrap();
        }
        let from_json = hf_gpt2::import_tokenizer(out.path()).unwrap();
        assert_eq!(from_json.encode(&text).unwrap(), want_ids);
        let from_files =
            Gpt2Tokenizer::from_files(&out.path().join("vocab.json"), &out.path().join("merges.txt")).unwrap();
        assert_eq!(from_files.encode(&text).unwrap(), want_ids);
        assert_eq!(from_files.vocab_size(), 280);
        assert_eq!(from_files.end_of_text(), Some(0));
        let config: serde_json::Value = serde_json::from_slice(file(&files, "config.json")).unwrap();
        assert_eq!((config["bos_token_id"].as_u64(), config["eos_token_id"].as_u64()), (Some(0), Some(0)));
        let tc: serde_json::Value = serde_json::from_slice(file(&files, "tokenizer_config.json")).unwrap();
        assert_eq!(tc["tokenizer_class"], "GPT2Tokenizer");
    }
}

/// A model of `cfg` with every parameter drawn at random (norm gains near 1), so that biases,
/// norms and positions all matter.
fn random_model(cfg: ModelConfig, seed: u64) -> Transformer {
    let mut m = Transformer::new(cfg, 2).unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    for t in m.layout.tensors.clone() {
        let norm_gain = t.name.contains(".ln_") && t.name.ends_with(".weight");
        for x in &mut m.params[t.range()] {
            let u = rng.gen_range(-1.0..1.0f32);
            *x = if norm_gain { 1.0 + 0.2 * u } else { 0.5 * u };
        }
    }
    m
}

/// A change to a model configuration.
type Edit = fn(&mut ModelConfig);

fn small(vocab: usize) -> ModelConfig {
    ModelConfig { vocab_size: vocab, block_size: 12, n_layer: 2, n_head: 2, n_embd: 16, ..ModelConfig::default() }
}

fn char_tokenizer() -> CharTokenizer {
    CharTokenizer::from_corpus(&(SAMPLE.to_string() + "\tü😀")).unwrap()
}

fn bpe_tokenizer(dir: &Path) -> BpeTokenizer {
    let f = dir.join("bpe.txt");
    std::fs::write(&f, SAMPLE.repeat(20)).unwrap();
    BpeTokenizer::train(&[f], 300).unwrap()
}

/// Exports `m` with `tok` into a temporary directory and imports it back.
fn round_trip(m: &Transformer, tok: &Tokenizer) -> (Transformer, Tokenizer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hf");
    export(m, tok, &out).unwrap();
    let (back, tok_back) = import(&out, 2).unwrap();
    (back, tok_back, dir)
}

fn assert_same_model(what: &str, a: &mut Transformer, b: &mut Transformer, ids: &[u32], t: usize) {
    for pa in &a.layout.tensors {
        let pb = b.layout.get(&pa.name).unwrap_or_else(|| panic!("{what}: {} lost", pa.name));
        assert_eq!(pa.shape, pb.shape, "{what}: {}", pa.name);
        let (x, y) = (&a.params[pa.range()], &b.params[pb.range()]);
        assert!(x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits()), "{what}: {} differs", pa.name);
    }
    let (la, lb) = (logits(a, ids, 2, t), logits(b, ids, 2, t));
    let same = la.iter().zip(&lb).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(
        same,
        "{what}: logits differ (max |Δ| {})",
        la.iter().zip(&lb).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    );
}

#[test]
fn import_of_export_gives_identical_models() {
    let tmp = tempfile::tempdir().unwrap();
    let ch = char_tokenizer();
    let tokenizers = [Tokenizer::Char(ch.clone()), Tokenizer::Bpe(Box::new(bpe_tokenizer(tmp.path())))];
    let variants: Vec<(&str, Edit)> = vec![
        ("default", |_| {}),
        ("untied_relu_ffn24", |c| {
            c.tie_embeddings = false;
            c.activation = ActivationKind::Relu;
            c.ffn_hidden = Some(24);
        }),
        ("no_bias", |c| c.bias = false),
        ("gelu_unscaled", |c| {
            c.activation = ActivationKind::Gelu;
            c.score = ScoreKind::Unscaled;
        }),
        ("silu_eps", |c| {
            c.activation = ActivationKind::Silu;
            c.norm_eps = 1e-6;
        }),
        ("leaky_relu_dropout", |c| {
            c.activation = ActivationKind::LeakyRelu;
            c.dropout = 0.1;
            c.attn_dropout = Some(0.05);
        }),
        ("ffn_4c_explicit", |c| c.ffn_hidden = Some(64)),
    ];
    for (ti, tok) in tokenizers.iter().enumerate() {
        let text = if ti == 0 { SAMPLE } else { "Before we proceed, hear me." };
        let ids: Vec<u32> = tok.encode(text).unwrap();
        let t = 12;
        let ids2: Vec<u32> = ids.iter().cycle().take(2 * t).copied().collect();
        for (vi, (name, edit)) in variants.iter().enumerate() {
            let what = format!("{}/{name}", tok.kind());
            let mut cfg = small(tok.vocab_size());
            edit(&mut cfg);
            let mut m = random_model(cfg.clone(), 10 * ti as u64 + vi as u64);
            let (mut back, tok_back, _dir) = round_trip(&m, tok);
            assert_eq!(tok_back.kind(), tok.kind(), "{what}: tokenizer kind");
            assert_eq!(tok_back.encode(text).unwrap(), ids, "{what}: ids");
            assert_eq!(tok_back.decode(&ids).unwrap(), text);
            let c = &back.config;
            assert!(c.bias, "{what}: GPT-2 files always have biases");
            let want = ModelConfig { bias: true, attn_dropout: Some(cfg.attn_drop()), ..cfg.clone() };
            assert_eq!(c, &want, "{what}: config");
            assert_same_model(&what, &mut m, &mut back, &ids2, t);
            if !cfg.bias {
                for p in back.layout.tensors.iter().filter(|p| p.name.ends_with(".bias")) {
                    assert!(back.params[p.range()].iter().all(|&x| x == 0.0), "{what}: {} is zero", p.name);
                }
            }
        }
    }
    // The character tokenizer comes back as the same character list.
    let (_, tok_back, _d) = round_trip(&random_model(small(ch.vocab_size()), 1), &Tokenizer::Char(ch.clone()));
    assert_eq!(tok_back.as_char().unwrap(), &ch);
}

#[test]
fn gpt2_tokenizer_round_trip_with_openai_vocabulary() {
    let Some(enc) = common::shared_data("gpt2-tokenizer/encoder.json") else { return };
    let gpt2 = Gpt2Tokenizer::from_dir(enc.parent().unwrap()).unwrap();
    let tok = Tokenizer::Gpt2(Box::new(gpt2));
    let cfg = ModelConfig { n_embd: 8, n_layer: 1, ..small(50257) };
    let mut m = random_model(cfg, 3);
    let (mut back, tok_back, dir) = round_trip(&m, &tok);
    let ids = tok.encode("Hello world, once upon a time").unwrap();
    assert_eq!(ids[..2], [15496, 995]);
    assert_eq!(tok_back.encode("Hello world, once upon a time").unwrap(), ids);
    let ids2: Vec<u32> = ids.iter().cycle().take(24).copied().collect();
    assert_same_model("gpt2", &mut m, &mut back, &ids2, 12);
    // vocab.json and merges.txt are OpenAI's files under HF's names (same mapping, same merges).
    let hf = dir.path().join("hf");
    let vocab: HashMap<String, u32> = serde_json::from_slice(&std::fs::read(hf.join("vocab.json")).unwrap()).unwrap();
    let openai: HashMap<String, u32> = serde_json::from_slice(&std::fs::read(&enc).unwrap()).unwrap();
    assert_eq!(vocab, openai);
    let merges = std::fs::read_to_string(hf.join("merges.txt")).unwrap();
    let bpe = std::fs::read_to_string(enc.parent().unwrap().join("vocab.bpe")).unwrap();
    let body = |s: &str| s.lines().filter(|l| !l.starts_with("#version")).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(body(&merges), body(&bpe));
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["eos_token_id"], 50256);
    // `lmlab sample` on the imported checkpoint, with the GPT-2 tokenizer.
    let ck = dir.path().join("ck");
    let out = ok(lmlab(&["import", "--hf", s(&hf), "--out", s(&ck)]));
    assert!(out.contains("gpt2 tokenizer of 50257 tokens"), "{out}");
    let text = ok(lmlab(&["sample", "--checkpoint", s(&ck), "--prompt", "Hello world", "--max-new-tokens", "5"]));
    assert!(text.starts_with("Hello world") && text.len() > "Hello world\n".len(), "{text:?}");
}

#[test]
fn char_tokenizer_document_gives_the_same_ids_in_tokenizers() {
    let ch = char_tokenizer();
    let json = char_tokenizer_json(&ch).unwrap();
    let hf = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
    assert_eq!(hf.get_vocab_size(true), ch.vocab_size());
    for text in [SAMPLE, "ü😀\t\n", "  ", "", "First"] {
        let want = ch.encode(text).unwrap();
        let got = hf.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(hf.decode(&want, false).unwrap(), text, "{text:?}");
    }
}

/// Every lmlab choice GPT-2 cannot express: (the edit, words the error must contain).
#[test]
fn unsupported_choices_are_errors_that_write_nothing() {
    let cases: Vec<(Edit, &[&str])> = vec![
        (|c| c.arch = Arch::Encoder, &["model.arch", "encoder"]),
        (|c| c.arch = Arch::EncoderDecoder, &["model.arch", "encoder_decoder"]),
        (|c| c.norm = NormKind::Rmsnorm, &["model.norm", "rmsnorm"]),
        (|c| c.norm = NormKind::Batchnorm, &["model.norm", "batchnorm"]),
        (|c| c.norm_position = NormPosition::Post, &["model.norm_position", "post"]),
        (|c| c.final_norm = false, &["model.final_norm"]),
        (|c| c.position = Position::Rope, &["model.position", "rope"]),
        (|c| c.position = Position::Alibi, &["model.position", "alibi"]),
        (|c| c.position = Position::None, &["model.position", "none"]),
        (|c| c.position = Position::Sinusoidal, &["model.position", "sinusoidal"]),
        (|c| c.position = Position::Shaw, &["model.position", "shaw"]),
        (|c| c.position = Position::T5, &["model.position", "t5"]),
        (|c| c.scale_embeddings = true, &["model.scale_embeddings"]),
        (|c| c.score = ScoreKind::Cosine, &["model.score", "cosine"]),
        (|c| c.score = ScoreKind::Additive, &["model.score", "additive"]),
        (|c| c.n_kv_head = Some(1), &["model.n_kv_head", "1"]),
        (|c| c.activation = ActivationKind::Swiglu, &["swiglu"]),
        (
            |c| {
                c.activation = ActivationKind::LeakyRelu;
                c.leaky_slope = 0.2;
            },
            &["model.leaky_slope", "0.2"],
        ),
    ];
    let tok = Tokenizer::Char(char_tokenizer());
    let dir = tempfile::tempdir().unwrap();
    for (i, (edit, words)) in cases.iter().enumerate() {
        let mut cfg = small(tok.vocab_size());
        edit(&mut cfg);
        let m = Transformer::new(cfg, 1).unwrap();
        let out = dir.path().join(format!("out{i}"));
        let err = format!("{:#}", export(&m, &tok, &out).unwrap_err());
        assert!(err.contains("GPT-2 cannot express"), "{err}");
        for w in *words {
            assert!(err.contains(w), "case {i}: {err:?} should name {w:?}");
        }
        assert!(!out.exists(), "nothing is written for a refused model");
    }
    // A tokenizer that does not fit the model.
    let m = Transformer::new(small(tok.vocab_size() + 1), 1).unwrap();
    let err = export(&m, &tok, &dir.path().join("x")).unwrap_err().to_string();
    assert!(err.contains("tokens") && err.contains("vocab_size"), "{err}");
    // A non-finite weight.
    let mut m = Transformer::new(small(tok.vocab_size()), 1).unwrap();
    let at = m.layout.get("transformer.h.1.mlp.c_fc.weight").unwrap().offset + 2;
    m.params[at] = f32::INFINITY;
    let err = export(&m, &tok, &dir.path().join("x")).unwrap_err().to_string();
    assert!(err.contains("transformer.h.1.mlp.c_fc.weight") && err.contains("NaN or infinity"), "{err}");
    assert!(!dir.path().join("x").exists());
}

#[test]
fn export_refuses_to_replace_foreign_directories() {
    let tok = Tokenizer::Char(char_tokenizer());
    let m = random_model(small(tok.vocab_size()), 4);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hf");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let err = export(&m, &tok, &out).unwrap_err().to_string();
    assert!(err.contains("notes.txt") && err.contains("delete"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
    // A previous export (plus transformers' side files) is replaced.
    std::fs::remove_file(out.join("notes.txt")).unwrap();
    export(&m, &tok, &out).unwrap();
    std::fs::write(out.join("generation_config.json"), "{}").unwrap();
    let m2 = random_model(small(tok.vocab_size()), 5);
    export(&m2, &tok, &out).unwrap();
    let (back, _) = import(&out, 1).unwrap();
    assert_eq!(back.params, m2.params);
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["hf"], "no temporary directory is left behind");
    // A file where the directory should go.
    let f = dir.path().join("file");
    std::fs::write(&f, "x").unwrap();
    assert!(export(&m, &tok, &f).unwrap_err().to_string().contains("not a directory"));
}

// ------------------------------------------------------------------------------------------
// Malformed directories

/// A copy of the `tied` fixture in a temporary directory.
fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(fixture_dir("tied")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    (tmp, dir)
}

fn import_err(dir: &Path) -> String {
    match import(dir, 1) {
        Ok(_) => panic!("importing {} should fail", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(p, serde_json::to_string(&v).unwrap()).unwrap();
}

/// Rewrites model.safetensors through `f` over its tensors (name, dtype, shape, bytes).
fn edit_tensors(dir: &Path, f: impl FnOnce(&mut Vec<RawTensor>)) {
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let tf = TensorFile::parse(&bytes, "x").unwrap();
    let mut raw: Vec<RawTensor> =
        tf.st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    raw.sort_by(|a, b| a.0.cmp(&b.0));
    f(&mut raw);
    let out = to_safetensors_raw(&raw, HashMap::from([("format".to_string(), "pt".to_string())])).unwrap();
    std::fs::write(p, out).unwrap();
}

fn expect(dir: &Path, words: &[&str]) {
    let err = import_err(dir);
    for w in words {
        assert!(err.contains(w), "{err:?} should contain {w:?}");
    }
}

#[test]
fn malformed_config_is_a_clear_error() {
    type ConfigEdit = fn(&mut serde_json::Value);
    let cases: Vec<(ConfigEdit, &[&str])> = vec![
        (|v| v["model_type"] = "bert".into(), &["model_type", "bert"]),
        (|v| v["activation_function"] = "gelu_10".into(), &["activation_function", "gelu_10"]),
        (|v| v["add_cross_attention"] = true.into(), &["add_cross_attention"]),
        (|v| v["scale_attn_by_inverse_layer_idx"] = true.into(), &["scale_attn_by_inverse_layer_idx"]),
        (|v| v["embd_pdrop"] = 0.3.into(), &["resid_pdrop", "embd_pdrop"]),
        (|v| v["n_head"] = 3.into(), &["n_embd", "n_head"]),
        (|v| v["n_embd"] = "eight".into(), &["config.json"]),
        (|v| v["layer_norm_epsilon"] = (-1.0).into(), &["layer_norm_epsilon"]),
        (|v| v["architectures"] = serde_json::json!(["GPT2ForSequenceClassification"]), &["architectures"]),
        (|v| v["vocab_size"] = 281.into(), &["transformer.wte.weight", "[280, 8]", "[281, 8]"]),
        (|v| v["n_inner"] = 33.into(), &["transformer.h.0.mlp.c_fc.weight", "shape"]),
        (|v| v["tie_word_embeddings"] = false.into(), &["lm_head.weight", "missing"]),
        (|v| v["n_layer"] = 3.into(), &["transformer.h.2.ln_1.weight", "missing"]),
        (|v| v["n_layer"] = 1.into(), &["transformer.h.1", "GPT2LMHeadModel does not have"]),
        (|v| v["n_positions"] = (1u64 << 40).into(), &["transformer.wpe.weight", "[1099511627776, 8]"]),
        (|v| v["n_layer"] = (1u64 << 50).into(), &["n_layer 1125899906842624", "only 28 tensors"]),
    ];
    for (f, words) in cases {
        let (_t, dir) = fixture_copy();
        edit_config(&dir, f);
        expect(&dir, words);
    }
    let (_t, dir) = fixture_copy();
    std::fs::write(dir.join("config.json"), "{\"model_type\": \"gpt2\", ").unwrap();
    expect(&dir, &["config.json"]);
    std::fs::remove_file(dir.join("config.json")).unwrap();
    expect(&dir, &["cannot read", "config.json"]);
    expect(&dir.join("nope"), &["not a directory"]);
}

#[test]
fn malformed_weights_are_clear_errors() {
    type TensorEdit = fn(&mut Vec<RawTensor>);
    let cases: Vec<(TensorEdit, &[&str])> = vec![
        (|r| r.retain(|t| t.0 != "transformer.h.0.mlp.c_fc.bias"), &["transformer.h.0.mlp.c_fc.bias", "missing"]),
        (
            |r| {
                let t = r.iter_mut().find(|t| t.0 == "transformer.h.1.attn.c_attn.weight").unwrap();
                t.2.reverse();
            },
            &["transformer.h.1.attn.c_attn.weight", "[24, 8]", "[8, 24]"],
        ),
        (
            |r| {
                let t = r.iter_mut().find(|t| t.0 == "transformer.ln_f.bias").unwrap();
                t.1 = Dtype::F16;
                t.3.truncate(t.3.len() / 2);
            },
            &["transformer.ln_f.bias", "F16"],
        ),
        (
            |r| r.push(("transformer.h.0.attn.q_attn.weight".into(), Dtype::F32, vec![1], vec![0; 4])),
            &["q_attn", "does not have"],
        ),
        (
            |r| {
                let t = r.iter().find(|t| t.0 == "transformer.wpe.weight").unwrap().clone();
                r.push(("wpe.weight".into(), t.1, t.2, t.3));
            },
            &["both", "wpe.weight"],
        ),
        (
            |r| {
                let t = r.iter_mut().find(|t| t.0 == "transformer.h.0.ln_2.weight").unwrap();
                t.3[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
            },
            &["transformer.h.0.ln_2.weight", "NaN"],
        ),
        (
            |r| {
                let mut t = r.iter().find(|t| t.0 == "transformer.wte.weight").unwrap().clone();
                t.0 = "lm_head.weight".into();
                t.3[0] ^= 1;
                r.push(t);
            },
            &["lm_head.weight", "differs", "tie_word_embeddings"],
        ),
    ];
    for (f, words) in cases {
        let (_t, dir) = fixture_copy();
        edit_tensors(&dir, f);
        expect(&dir, words);
    }
    let (_t, dir) = fixture_copy();
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    expect(&dir, &["model.safetensors", "not a valid safetensors"]);
    std::fs::remove_file(&p).unwrap();
    expect(&dir, &["cannot read", "model.safetensors"]);
}

#[test]
fn hub_style_names_and_mask_buffers_are_accepted() {
    // The original conversion on the Hub: no "transformer." prefix, causal-mask buffers saved,
    // and a tied lm_head.weight stored anyway (equal to wte).
    let (want_m, _) = import(&fixture_dir("tied"), 2).unwrap();
    let (_t, dir) = fixture_copy();
    edit_tensors(&dir, |r| {
        for t in r.iter_mut() {
            t.0 = t.0.strip_prefix("transformer.").unwrap().to_string();
        }
        let wte = r.iter().find(|t| t.0 == "wte.weight").unwrap().clone();
        r.push(("lm_head.weight".into(), wte.1, wte.2, wte.3));
        for i in 0..2 {
            r.push((format!("h.{i}.attn.bias"), Dtype::F32, vec![1, 1, 40, 40], vec![0; 4 * 1600]));
            r.push((format!("h.{i}.attn.masked_bias"), Dtype::F32, vec![], vec![0; 4]));
        }
    });
    let (mut m, _) = import(&dir, 2).unwrap();
    assert_eq!(m.params, want_m.params);
    let (ids, b, t, want) = expected(&fixture_dir("tied"));
    assert_close("hub-style logits", &logits(&mut m, &ids, b, t), &want, 1e-4);
}

#[test]
fn malformed_tokenizers_are_clear_errors() {
    let (_t, dir) = fixture_copy();
    std::fs::write(dir.join("tokenizer.json"), "{\"model\": ").unwrap();
    expect(&dir, &["tokenizer.json", "not valid JSON"]);
    // A WordPiece tokenizer (BERT's) is not one of lmlab's kinds.
    let wp = r###"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
        "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
        "model":{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##",
        "max_input_chars_per_word":100,"vocab":{"[UNK]":0,"a":1}}}"###;
    std::fs::write(dir.join("tokenizer.json"), wp).unwrap();
    expect(&dir, &["not a GPT-2 tokenizer", "WordPiece"]);
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    expect(&dir, &["no tokenizer", "vocab.json"]);
    // vocab.json + merges.txt alone suffice; a missing one is named.
    let (m, tok) = import(&fixture_dir("tied"), 1).unwrap();
    let files = export_files(&m, &tok).unwrap();
    std::fs::write(dir.join("vocab.json"), file(&files, "vocab.json")).unwrap();
    expect(&dir, &["merges.txt", "not found"]);
    std::fs::write(dir.join("merges.txt"), file(&files, "merges.txt")).unwrap();
    let (_, t2) = import(&dir, 1).unwrap();
    let (text, ids) = expected_text(&fixture_dir("tied"));
    assert_eq!(t2.encode(&text).unwrap(), ids);
    // A tokenizer of another size than the model.
    let (_t, dir) = fixture_copy();
    let ch = char_tokenizer();
    std::fs::write(dir.join("tokenizer.json"), char_tokenizer_json(&ch).unwrap()).unwrap();
    expect(&dir, &["tokenizer has", "vocab_size 280"]);
}

#[test]
fn checkpoint_tokenizer_json_keeps_the_kind() {
    let (_, tok) = import(&fixture_dir("tied"), 1).unwrap();
    let back = Tokenizer::from_json(&tok.to_json().unwrap()).unwrap();
    assert_eq!(back.kind(), "gpt2");
    let (text, ids) = expected_text(&fixture_dir("tied"));
    assert_eq!(back.encode(&text).unwrap(), ids);
    // A literal special token stays text, as lmlab's other tokenizers do.
    let lit = back.encode("<|endoftext|>").unwrap();
    assert!(lit.len() > 1 && !lit.contains(&0), "{lit:?}");
    let tmp = tempfile::tempdir().unwrap();
    let bpe = Tokenizer::Bpe(Box::new(bpe_tokenizer(tmp.path())));
    assert_eq!(Tokenizer::from_json(&bpe.to_json().unwrap()).unwrap().kind(), "bpe");
    let ch = Tokenizer::Char(char_tokenizer());
    let json = ch.to_json().unwrap();
    assert!(json.contains("\"type\": \"char\""), "the char format is unchanged: {json}");
    assert_eq!(Tokenizer::from_json(&json).unwrap().kind(), "char");
}

// ------------------------------------------------------------------------------------------
// CLI

fn fails(o: Output) -> String {
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cli_export_import_sample() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(&data, SAMPLE.repeat(40)).unwrap();
    let train = |name: &str, model: &str| -> PathBuf {
        let cfg = dir.path().join(format!("{name}.toml"));
        let out = dir.path().join(name);
        let toml = format!(
            "[model]\nblock_size = 16\nn_layer = 1\nn_head = 2\nn_embd = 16\n{model}\n[data]\npath = {:?}\n\
             [train]\nout_dir = {:?}\nbatch_size = 2\nmax_iters = 20\neval_interval = 20\neval_iters = 1\n\
             threads = 1\n",
            s(&data),
            s(&out)
        );
        std::fs::write(&cfg, toml).unwrap();
        ok(lmlab(&["train", "--config", s(&cfg), "--quiet"]));
        out.join("ckpt")
    };
    let ck = train("gpt", "tie_embeddings = false");
    let hf = dir.path().join("hf");
    let out = ok(lmlab(&["export", "--hf", s(&hf), "--checkpoint", s(&ck)]));
    assert!(out.contains("char tokenizer"), "{out}");
    let ck2 = dir.path().join("imported");
    let out = ok(lmlab(&["import", "--hf", s(&hf), "--out", s(&ck2)]));
    assert!(out.contains("char tokenizer"), "{out}");
    let sample = |ck: &Path| {
        ok(lmlab(&[
            "sample",
            "--checkpoint",
            s(ck),
            "--prompt",
            "First",
            "--temperature",
            "0",
            "--max-new-tokens",
            "30",
        ]))
    };
    let (a, b) = (sample(&ck), sample(&ck2));
    assert!(a.starts_with("First") && a.len() > 30, "{a:?}");
    assert_eq!(a, b, "the imported checkpoint samples the same text");
    // The imported checkpoint is a normal one: it loads, and fine-tunes with --resume.
    let loaded = lmlab::io::checkpoint::load(&ck2, 1, true).unwrap();
    assert_eq!(loaded.state.step, 0);
    let set = format!("data.path={:?}", s(&data));
    let run = dir.path().join("finetune");
    let out_dir = format!("train.out_dir={:?}", s(&run));
    ok(lmlab(&[
        "train",
        "--resume",
        s(&ck2),
        "--set",
        &set,
        "--set",
        &out_dir,
        "--set",
        "train.max_iters=2",
        "--set",
        "train.eval_interval=2",
        "--set",
        "train.eval_iters=1",
        "--set",
        "train.batch_size=2",
        "--quiet",
    ]));
    assert_eq!(lmlab::io::checkpoint::load(&run.join("ckpt"), 1, false).unwrap().state.step, 2);

    // transformers' own directory imports and samples with its GPT-2 tokenizer.
    let ck3 = dir.path().join("from_fixture");
    let out = ok(lmlab(&["import", "--hf", s(&fixture_dir("untied")), "--out", s(&ck3)]));
    assert!(out.contains("gpt2 tokenizer of 280 tokens"), "{out}");
    let text = ok(lmlab(&["sample", "--checkpoint", s(&ck3), "--prompt", "Once upon", "--max-new-tokens", "10"]));
    assert!(text.starts_with("Once upon"), "{text:?}");
    let logits = ok(lmlab(&["eval", "logits", "--checkpoint", s(&ck3), "--text", "Once upon a time"]));
    let v: serde_json::Value = serde_json::from_str(&logits).unwrap();
    let (_, ids) = expected_text(&fixture_dir("untied"));
    let got_ids: Vec<u64> = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(got_ids, ids[..got_ids.len()].iter().map(|&x| x as u64).collect::<Vec<_>>());
    assert_eq!(v["logits"].as_array().unwrap().len(), got_ids.len());
    assert_eq!(v["logits"][0].as_array().unwrap().len(), 280);

    // Refusals: a model GPT-2 cannot express, a foreign output directory, no format given.
    let llama = train("llama", "norm = \"rmsnorm\"\nposition = \"rope\"\nactivation = \"swiglu\"\nbias = false");
    let bad = dir.path().join("bad");
    let err = fails(lmlab(&["export", "--hf", s(&bad), "--checkpoint", s(&llama)]));
    assert!(err.contains("GPT-2 cannot express") && err.contains("rmsnorm"), "{err}");
    assert!(!bad.exists());
    let err = fails(lmlab(&["import", "--hf", s(&hf), "--out", s(dir.path())]));
    assert!(err.contains("which writing there would delete"), "{err}");
    assert!(data.exists(), "nothing was deleted");
    let err = fails(lmlab(&["import", "--hf", s(&dir.path().join("missing")), "--out", s(&bad)]));
    assert!(err.contains("not a directory"), "{err}");
    assert!(!bad.exists());
    let o = lmlab(&["export", "--checkpoint", s(&ck)]);
    assert!(!o.status.success());
}
