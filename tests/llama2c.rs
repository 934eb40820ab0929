//! llama2.c checkpoints and tokenizer.bin: greedy generation with the real stories260K model
//! reproduces llama2.c's published outputs token for token; reading and writing a file gives
//! the same bytes; malformed files are clear errors; `lmlab export --llama2c` and
//! `lmlab sample --llama2c` end to end.
//!
//! The real files live in the shared data directory (`LMLAB_DATA` or `../shared/data`); tests
//! that need them say so and pass when they are absent.

mod common;
use common::{lmlab, text};
use lmlab::data::llama2c_tokenizer::{Llama2cTokenizer, BOS, EOS};
use lmlab::infer::llama2c::generate_steps;
use lmlab::io::llama2c::{self, Llama2cConfig};
use lmlab::model::transformer::{ActivationKind, ModelConfig, NormKind, Position, Transformer};
use rand::SeedableRng;
use std::path::{Path, PathBuf};

fn data(rel: &str) -> Option<PathBuf> {
    common::shared_data(rel)
}

fn model_and_tokenizer() -> Option<(PathBuf, PathBuf)> {
    Some((data("llama2c/stories260K.bin")?, data("llama2c/tok512.bin")?))
}

/// llama2.c's `run MODEL -z TOK -t 0 -n steps -i prompt`: the printed text (with the final
/// newline run.c prints).
fn greedy(model: &Path, tok: &Path, prompt: &str, steps: usize) -> (Vec<u32>, String) {
    let mut m = llama2c::read(model, 1).unwrap();
    let t = Llama2cTokenizer::read(tok).unwrap();
    let ids = t.encode(prompt, true, false).unwrap();
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(0);
    let out = generate_steps(&mut m.model, &ids, steps, 0.0, None, &mut rng, |_, _| {}).unwrap();
    (out.tokens.clone(), t.decode(&out.tokens).unwrap() + "\n")
}

#[test]
fn greedy_256_steps_reproduce_llama2c() {
    let (Some((model, tok)), Some(want)) = (model_and_tokenizer(), data("llama2c/stories260K.greedy-256.txt")) else {
        return;
    };
    let (tokens, text) = greedy(&model, &tok, "", 256);
    assert_eq!(tokens.len(), 257, "BOS + 256 generated tokens");
    assert_eq!(text, std::fs::read_to_string(want).unwrap());
}

#[test]
fn greedy_64_steps_once_upon_a_time_reproduce_llama2c() {
    let (Some((model, tok)), Some(want)) =
        (model_and_tokenizer(), data("llama2c/stories260K.greedy-64-once-upon-a-time.txt"))
    else {
        return;
    };
    let (tokens, text) = greedy(&model, &tok, "Once upon a time", 64);
    // llama2.c's ids for the prompt: BOS, " Once", " upon", " a", " time".
    assert_eq!(tokens[..5], [BOS, 403, 407, 261, 378]);
    assert_eq!(tokens.len(), 65);
    assert_eq!(text, std::fs::read_to_string(want).unwrap());
}

#[test]
fn stories260k_reads_and_writes_back_byte_identical() {
    let Some((model, _)) = model_and_tokenizer() else { return };
    let bytes = std::fs::read(&model).unwrap();
    let m = llama2c::from_bytes(&bytes, 1).unwrap();
    let c = m.config;
    assert_eq!(
        (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len, c.shared_classifier),
        (64, 172, 5, 8, 4, 512, 512, true)
    );
    assert!(m.model.config.tie_embeddings && m.model.config.kv_heads() == 4);
    assert_eq!(llama2c::to_bytes(&m.model, Some(&m.rope_tables)).unwrap(), bytes);
    // Through a file, written atomically.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.bin");
    llama2c::write(&out, &m.model, Some(&m.rope_tables)).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    // The RoPE tables lmlab computes for files it exports agree with export.py's.
    let computed = llama2c::rope_table(c.seq_len, c.head_size(), 10000.0);
    let worst = computed.iter().zip(&m.rope_tables).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "RoPE tables differ by {worst}");
}

#[test]
fn truncated_or_padded_file_names_expected_and_actual_size() {
    let Some((model, _)) = model_and_tokenizer() else { return };
    let bytes = std::fs::read(&model).unwrap();
    let err = llama2c::from_bytes(&bytes[..bytes.len() - 100], 1).err().unwrap().to_string();
    assert!(err.contains(&(bytes.len() - 100).to_string()) && err.contains(&bytes.len().to_string()), "{err}");
    assert!(err.contains("truncated"), "{err}");
    let mut long = bytes.clone();
    long.extend_from_slice(&[0; 4]);
    let err = llama2c::from_bytes(&long, 1).err().unwrap().to_string();
    assert!(err.contains("trailing") && err.contains(&bytes.len().to_string()), "{err}");
    let err = llama2c::from_bytes(&bytes[..20], 1).err().unwrap().to_string();
    assert!(err.contains("too short"), "{err}");
    // Through the file reader, the path is named too.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.bin");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", llama2c::read(&p, 1).err().unwrap());
    assert!(err.contains("cut.bin") && err.contains("truncated"), "{err}");
}

fn header(h: [i32; 7]) -> Vec<u8> {
    h.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn bad_headers_name_the_problem() {
    let cases: [([i32; 7], &str); 8] = [
        ([0, 172, 5, 8, 4, 512, 512], "dim = 0"),
        ([64, -1, 5, 8, 4, 512, 512], "hidden_dim = -1"),
        ([64, 172, 0, 8, 4, 512, 512], "n_layers = 0"),
        ([64, 172, 5, 0, 4, 512, 512], "n_heads = 0"),
        ([64, 172, 5, 8, 4, 0, 512], "vocab_size = 0"),
        ([64, 172, 5, 8, 4, 512, -3], "seq_len = -3"),
        ([64, 172, 5, 6, 3, 512, 512], "n_heads = 6 does not divide dim = 64"),
        ([64, 172, 5, 8, 3, 512, 512], "n_kv_heads = 3 does not divide n_heads = 8"),
    ];
    for (h, want) in cases {
        let mut bytes = header(h);
        bytes.extend_from_slice(&[0; 64]);
        let err = llama2c::from_bytes(&bytes, 1).err().unwrap().to_string();
        assert!(err.contains(want), "{h:?}: {err}");
    }
    let err = Llama2cConfig::from_header(&header([0x616b_3432, 1, 1, 1, 1, 1, 1])).unwrap_err().to_string();
    assert!(err.contains("version"), "{err}");
    // Huge dimensions whose size overflows are an error, not a panic or an allocation.
    let err = llama2c::from_bytes(&header([1 << 30, i32::MAX, i32::MAX, 2, 1, i32::MAX, i32::MAX]), 1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("overflow") || err.contains("size"), "{err}");
}

/// A small Llama model with random weights, `tied` or with its own classifier.
fn llama(tied: bool) -> Transformer {
    let cfg = ModelConfig {
        vocab_size: 11,
        block_size: 8,
        n_layer: 2,
        n_head: 4,
        n_kv_head: Some(2),
        n_embd: 16,
        ffn_hidden: Some(24),
        activation: ActivationKind::Swiglu,
        norm: NormKind::Rmsnorm,
        position: Position::Rope,
        bias: false,
        tie_embeddings: tied,
        ..ModelConfig::default()
    };
    let mut m = Transformer::new(cfg, 1).unwrap();
    m.init(7);
    // Norm weights start at 1: make them distinct so a mix-up would show.
    for (i, x) in m.params.iter_mut().enumerate() {
        *x += (i as f32 * 0.37).sin() * 0.01;
    }
    m
}

#[test]
fn lmlab_llama_models_round_trip_and_compute_the_same_logits() {
    for tied in [true, false] {
        let mut m = llama(tied);
        let bytes = llama2c::to_bytes(&m, None).unwrap();
        let cfg = Llama2cConfig::from_header(&bytes).unwrap();
        assert_eq!(cfg.shared_classifier, tied);
        assert_eq!(bytes.len(), cfg.file_bytes().unwrap());
        let mut back = llama2c::from_bytes(&bytes, 1).unwrap();
        assert_eq!(back.model.params, m.params, "tied = {tied}");
        assert_eq!(llama2c::to_bytes(&back.model, Some(&back.rope_tables)).unwrap(), bytes);
        let idx = [1u32, 5, 9, 2, 3];
        m.forward_lm(&idx, None, 1, 5, false, 0).unwrap();
        back.model.forward_lm(&idx, None, 1, 5, false, 0).unwrap();
        assert_eq!(m.logits()[..5 * 11], back.model.logits()[..5 * 11]);
    }
}

#[test]
fn the_file_layout_is_llama2c_order() {
    // wq of layer 0 starts right after token_embedding (V·C) and rms_att (L·C); wk follows all
    // n_layers wq matrices. Check a few values against lmlab's packed parameters.
    let m = llama(true);
    let bytes = llama2c::to_bytes(&m, None).unwrap();
    let f = |i: usize| f32::from_le_bytes(bytes[28 + 4 * i..32 + 4 * i].try_into().unwrap());
    let (v, c, l, kv, h) = (11, 16, 2, 8, 24);
    let p = |name: &str| m.layout.get(name).unwrap().range();
    let wq0 = v * c + l * c;
    let wk0 = wq0 + l * c * c;
    let wv0 = wk0 + l * kv * c;
    let wo0 = wv0 + l * kv * c;
    let rms_ffn0 = wo0 + l * c * c;
    let w10 = rms_ffn0 + l * c;
    let w20 = w10 + l * h * c;
    let w30 = w20 + l * c * h;
    let attn1 = p("transformer.h.1.attn.c_attn.weight");
    let fc1 = p("transformer.h.1.mlp.c_fc.weight");
    assert_eq!(f(wq0 + c * c + 3), m.params[attn1.start + 3], "wq of layer 1");
    assert_eq!(f(wk0 + kv * c + 5), m.params[attn1.start + c * c + 5], "wk of layer 1");
    assert_eq!(f(wv0 + 7), m.params[p("transformer.h.0.attn.c_attn.weight").start + (c + kv) * c + 7], "wv layer 0");
    assert_eq!(f(w10 + h * c + 2), m.params[fc1.start + 2], "w1 (gate) of layer 1");
    assert_eq!(f(w30 + h * c + 2), m.params[fc1.start + h * c + 2], "w3 (up) of layer 1");
    assert_eq!(f(w20 + 1), m.params[p("transformer.h.0.mlp.c_proj.weight").start + 1], "w2 of layer 0");
    assert_eq!(f(rms_ffn0 + c), m.params[p("transformer.h.1.ln_2.weight").start], "rms_ffn of layer 1");
}

#[test]
fn non_llama_models_are_refused() {
    let gpt = Transformer::new(ModelConfig { vocab_size: 11, ..ModelConfig::default() }, 1).unwrap();
    let err = llama2c::to_bytes(&gpt, None).unwrap_err().to_string();
    assert!(err.contains("Llama") && err.contains("model.norm is layernorm"), "{err}");
    let mut cfg = llama(true).config;
    cfg.bias = true;
    let err = llama2c::to_bytes(&Transformer::new(cfg.clone(), 1).unwrap(), None).unwrap_err().to_string();
    assert!(err.contains("model.bias"), "{err}");
    cfg.bias = false;
    cfg.rope_theta = 500000.0;
    let err = llama2c::to_bytes(&Transformer::new(cfg, 1).unwrap(), None).unwrap_err().to_string();
    assert!(err.contains("rope_theta"), "{err}");
}

#[test]
fn tokenizer_encodes_and_decodes_like_llama2c() {
    let Some(tok) = data("llama2c/tok512.bin") else { return };
    let bytes = std::fs::read(&tok).unwrap();
    let t = Llama2cTokenizer::from_bytes(&bytes).unwrap();
    assert_eq!((t.vocab_size(), t.max_token_length()), (512, 7));
    assert_eq!(t.to_bytes(), bytes);
    assert_eq!(t.token(BOS), Some(&b"\n<s>\n"[..]));
    let cases: [(&str, &[u32]); 4] = [
        ("Once upon a time", &[BOS, 403, 407, 261, 378]),
        ("Hello world", &[BOS, 346, 306, 414, 263, 304, 341]),
        // 'é' is a token; the emoji is not, so its four UTF-8 bytes are byte tokens (byte + 3).
        ("héllo 😀", &[BOS, 270, 485, 306, 414, 410, 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3]),
        ("", &[BOS]),
    ];
    for (text, ids) in cases {
        assert_eq!(t.encode(text, true, false).unwrap(), ids, "{text:?}");
        assert_eq!(t.decode(ids).unwrap(), text);
    }
    assert_eq!(t.encode("a", false, true).unwrap().last(), Some(&EOS));
    // Pieces: the space after BOS is dropped, byte tokens become their byte.
    assert_eq!(t.piece(BOS, 403).unwrap(), b"Once");
    assert_eq!(t.piece(378, 403).unwrap(), b" Once");
    assert_eq!(t.piece(378, 13).unwrap(), b"\n");
    assert!(t.piece(1, 512).is_err());
}

#[test]
fn truncated_tokenizer_is_an_error() {
    let Some(tok) = data("llama2c/tok512.bin") else { return };
    let bytes = std::fs::read(&tok).unwrap();
    for cut in [bytes.len() - 1, bytes.len() - 5, 6, 2] {
        let err = Llama2cTokenizer::from_bytes(&bytes[..cut]).err().unwrap().to_string();
        assert!(err.contains("truncated") || err.contains("too short"), "cut at {cut}: {err}");
    }
    let mut neg = bytes[..4].to_vec();
    neg.extend_from_slice(&0f32.to_le_bytes());
    neg.extend_from_slice(&(-2i32).to_le_bytes());
    let err = Llama2cTokenizer::from_bytes(&neg).err().unwrap().to_string();
    assert!(err.contains("negative length"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tok.bin");
    std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
    let err = format!("{:#}", Llama2cTokenizer::read(&p).err().unwrap());
    assert!(err.contains("tok.bin") && err.contains("truncated"), "{err}");
}

#[test]
fn cli_sample_reproduces_llama2c_and_reports_speed() {
    let (Some((model, tok)), Some(want)) =
        (model_and_tokenizer(), data("llama2c/stories260K.greedy-64-once-upon-a-time.txt"))
    else {
        return;
    };
    let (m, t) = (model.to_str().unwrap(), tok.to_str().unwrap());
    let o = lmlab(&[
        "sample",
        "--llama2c",
        m,
        "--tokenizer",
        t,
        "--prompt",
        "Once upon a time",
        "--steps",
        "64",
        "--temperature",
        "0",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(out, std::fs::read_to_string(want).unwrap());
    assert!(err.contains("tokens/s"), "{err}");
    // --max-new-tokens counts only new tokens: 64 steps = 4 prompt tokens after BOS + 60.
    let o = lmlab(&[
        "sample",
        "--llama2c",
        m,
        "--tokenizer",
        t,
        "--prompt",
        "Once upon a time",
        "--max-new-tokens",
        "60",
        "--temperature",
        "0",
    ]);
    assert_eq!(text(&o).0, out);
    // Exactly one model source; a llama2.c model needs its tokenizer.
    let o = lmlab(&["sample", "--llama2c", m, "--checkpoint", "x", "--tokenizer", t]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    let o = lmlab(&["sample", "--llama2c", m]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    // A tokenizer of the wrong size.
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.bin");
    let tb = std::fs::read(&tok).unwrap();
    let t10 = Llama2cTokenizer::from_bytes(&tb).unwrap();
    let mut cut = tb[..4].to_vec();
    for id in 0..10 {
        let s = t10.token(id).unwrap();
        cut.extend_from_slice(&t10.score(id).unwrap().to_le_bytes());
        cut.extend_from_slice(&(s.len() as i32).to_le_bytes());
        cut.extend_from_slice(s);
    }
    std::fs::write(&small, cut).unwrap();
    let o = lmlab(&["sample", "--llama2c", m, "--tokenizer", small.to_str().unwrap()]);
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("10 tokens") && err.contains("vocab_size 512"), "{err}");
}

#[test]
fn cli_export_writes_llama_checkpoints_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(&data, "Once upon a time there was a tiny model.\n".repeat(30)).unwrap();
    let train = |name: &str, model: &str| -> PathBuf {
        let cfg = dir.path().join(format!("{name}.toml"));
        let out = dir.path().join(name);
        let toml = format!(
            "[model]\nblock_size = 16\nn_layer = 1\nn_head = 2\nn_embd = 16\n{model}\n[data]\npath = {:?}\n\
             [train]\nout_dir = {:?}\nbatch_size = 2\nmax_iters = 2\neval_interval = 2\neval_iters = 1\nthreads = 1\n",
            data.display().to_string(),
            out.display().to_string()
        );
        std::fs::write(&cfg, toml).unwrap();
        let o = lmlab(&["train", "--config", cfg.to_str().unwrap(), "--quiet"]);
        assert!(o.status.success(), "{:?}", text(&o));
        out.join("ckpt")
    };
    let ck = train(
        "llama",
        "norm = \"rmsnorm\"\nposition = \"rope\"\nactivation = \"swiglu\"\nbias = false\nn_kv_head = 1\nffn_hidden = 24",
    );
    let out = dir.path().join("llama.bin");
    let o = lmlab(&["export", "--llama2c", out.to_str().unwrap(), "--checkpoint", ck.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let loaded = lmlab::io::checkpoint::load(&ck, 1, false).unwrap();
    let back = llama2c::read(&out, 1).unwrap();
    assert_eq!(back.model.params, loaded.model.params);
    assert_eq!((back.config.n_kv_heads, back.config.hidden_dim), (1, 24));

    let gpt = train("gpt", "");
    let bad = dir.path().join("gpt.bin");
    let o = lmlab(&["export", "--llama2c", bad.to_str().unwrap(), "--checkpoint", gpt.to_str().unwrap()]);
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("Llama-architecture") && err.contains("layernorm"), "{err}");
    assert!(!bad.exists(), "nothing is written for a refused model");
}
