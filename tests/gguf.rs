//! GGUF: the container round-trips every value type and tensor type; lmlab models (Llama and
//! GPT-2 architectures) export and import with bit-identical logits; llama.cpp's vocab-only
//! GPT-2 file reads and its vocabulary tokenizes like lmlab's GPT-2 tokenizer; malformed files
//! are clear errors; and a fuzz test feeds thousands of mutated files to the reader, which must
//! answer Ok or Err without panicking or allocating more than a few times the file's size.

mod common;
use common::{lmlab, ok};
use lmlab::data::gpt2::Gpt2Tokenizer;
use lmlab::data::{CharTokenizer, Tokenizer};
use lmlab::io::gguf::{self, Array, ExportType, GgmlType, Gguf, Tensor, TensorData, Value};
use lmlab::model::transformer::{ActivationKind, ModelConfig, NormKind, Position, Transformer};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

// ---------------------------------------------------------------------------------------------
// The largest single allocation made by a thread while it tracks (the fuzz test).

struct Tracking;
static LARGEST: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
}

fn note(size: usize) {
    if TRACK.with(|t| t.get()) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note(n);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

// ---------------------------------------------------------------------------------------------
// Helpers

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

const TEXT: &str = "First Citizen:\nBefore we proceed any further, hear me speak.\nü😀";

fn char_tok() -> Tokenizer {
    Tokenizer::Char(CharTokenizer::from_corpus(TEXT).unwrap())
}

fn llama_cfg(vocab: usize, tied: bool) -> ModelConfig {
    ModelConfig {
        vocab_size: vocab,
        block_size: 24,
        n_layer: 2,
        n_head: 4,
        n_kv_head: Some(2),
        n_embd: 16,
        ffn_hidden: Some(24),
        activation: ActivationKind::Swiglu,
        norm: NormKind::Rmsnorm,
        position: Position::Rope,
        rope_theta: 500.0,
        norm_eps: 1e-6,
        bias: false,
        tie_embeddings: tied,
        ..ModelConfig::default()
    }
}

fn gpt2_cfg(vocab: usize, tied: bool, bias: bool) -> ModelConfig {
    ModelConfig {
        vocab_size: vocab,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        ffn_hidden: Some(40),
        bias,
        tie_embeddings: tied,
        ..ModelConfig::default()
    }
}

fn logits(m: &mut Transformer, ids: &[u32]) -> Vec<f32> {
    m.forward_lm(ids, None, 1, ids.len(), false, 0).unwrap();
    m.logits().to_vec()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A file with every value type, nested arrays, and F32, F16, Q8_0 and Q4_0 tensors.
fn every_type() -> Gguf {
    let mut g = Gguf::new();
    let vals = [
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(60000)),
        ("t.i16", Value::I16(-30000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.f32", Value::F32(1.5e-7)),
        ("t.bool", Value::Bool(true)),
        ("t.string", Value::String("héllo wörld 😀".into())),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("t.empty", Value::Array(Array::F64(vec![]))),
        ("t.a.u8", Value::Array(Array::U8(vec![1, 2, 255]))),
        ("t.a.i8", Value::Array(Array::I8(vec![-1, 2]))),
        ("t.a.u16", Value::Array(Array::U16(vec![1, 65535]))),
        ("t.a.i16", Value::Array(Array::I16(vec![-1, 3]))),
        ("t.a.u32", Value::Array(Array::U32(vec![7]))),
        ("t.a.i32", Value::Array(Array::I32(vec![-7, 8, 9]))),
        ("t.a.f32", Value::Array(Array::F32(vec![0.25, -1e30]))),
        ("t.a.bool", Value::Array(Array::Bool(vec![true, false]))),
        ("t.a.string", Value::Array(Array::String(vec!["a".into(), "".into(), "Ġthe".into()]))),
        ("t.a.u64", Value::Array(Array::U64(vec![1 << 40]))),
        ("t.a.i64", Value::Array(Array::I64(vec![-(1 << 40)]))),
        ("t.a.f64", Value::Array(Array::F64(vec![1e300]))),
        (
            "t.a.nested",
            Value::Array(Array::Array(vec![
                Array::String(vec!["x".into()]),
                Array::Array(vec![Array::I32(vec![1, 2]), Array::Bool(vec![])]),
            ])),
        ),
        ("general.alignment", Value::U32(64)),
    ];
    for (k, v) in vals {
        g.set(k, v);
    }
    let q8: Vec<u8> = (0..2 * 34).map(|i| i as u8).collect();
    let q4: Vec<u8> = (0..3 * 18).map(|i| (i * 7) as u8).collect();
    g.tensors = vec![
        Tensor {
            name: "a".into(),
            dims: vec![3, 2],
            ty: GgmlType::F32,
            data: TensorData::F32(vec![1.0, -2.0, 3.5, 0.0, -0.0, 7.25]),
        },
        // Values a half holds exactly: normals, a subnormal, the largest, infinity.
        Tensor {
            name: "b".into(),
            dims: vec![5],
            ty: GgmlType::F16,
            data: TensorData::F32(vec![0.5, -65504.0, 5.960_464_5e-8, f32::INFINITY, 1.0009766]),
        },
        Tensor { name: "q8".into(), dims: vec![64], ty: GgmlType::Q8_0, data: TensorData::Raw(q8) },
        Tensor { name: "q4".into(), dims: vec![32, 3], ty: GgmlType::Q4_0, data: TensorData::Raw(q4) },
    ];
    g
}

// ---------------------------------------------------------------------------------------------
// The container

#[test]
fn every_value_and_tensor_type_round_trips() {
    let g = every_type();
    let bytes = gguf::to_bytes(&g).unwrap();
    let back = gguf::parse(&bytes).unwrap();
    assert_eq!(back, g);
    assert_eq!(gguf::to_bytes(&back).unwrap(), bytes, "writing a read file gives the same bytes");
    // Every tensor starts at a multiple of the alignment (64 here).
    assert_eq!(bytes.len() % 64, 0);
    // Version 2 has the same layout.
    let mut v2 = bytes.clone();
    v2[4] = 2;
    assert_eq!(gguf::parse(&v2).unwrap().version, 2);
    // F16 conversions are exact both ways for halves, and round to nearest even otherwise.
    for h in 0..=u16::MAX {
        let x = gguf::f16_to_f32(h);
        if !x.is_nan() {
            assert_eq!(gguf::f32_to_f16(x), h, "half {h:#06x}");
        }
    }
    assert_eq!(gguf::f32_to_f16(1.0 + 2f32.powi(-11)), 0x3C00, "a tie rounds to even");
}

#[test]
fn malformed_files_are_clear_errors() {
    let g = every_type();
    let bytes = gguf::to_bytes(&g).unwrap();
    let err = |b: &[u8]| format!("{:#}", gguf::parse(b).unwrap_err());
    assert!(err(b"GGUG\x03\0\0\0").contains("magic"));
    let mut v = bytes.clone();
    v[4] = 1;
    assert!(err(&v).contains("version 1"), "{}", err(&v));
    // The first key's length (at byte 24) set to 2^60.
    let mut v = bytes.clone();
    v[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let e = err(&v);
    assert!(e.contains("metadata pair 0: key: length at byte 24 is 1152921504606846976"), "{e}");
    // The tensor count set to 2^63.
    let mut v = bytes.clone();
    v[8..16].copy_from_slice(&(1u64 << 63).to_le_bytes());
    assert!(err(&v).contains("tensor count at byte 8 is 9223372036854775808"), "{}", err(&v));
    // Truncated inside the data: the last tensor's data is past the end.
    let e = err(&bytes[..bytes.len() - 64]);
    assert!(e.contains("tensor 3 (\"q4\"): data offset") && e.contains("is past the end of the file"), "{e}");
    // A duplicated key.
    let mut g2 = every_type();
    g2.metadata.push(("t.u8".into(), Value::U8(1)));
    assert!(format!("{:#}", gguf::to_bytes(&g2).unwrap_err()).contains("twice"));
    // Q8_0 rows must be whole blocks.
    let mut g3 = every_type();
    g3.tensors[2].dims = vec![48];
    assert!(format!("{:#}", gguf::to_bytes(&g3).unwrap_err()).contains("not a multiple of the Q8_0 block size 32"));
}

// ---------------------------------------------------------------------------------------------
// Models

#[test]
fn llama_export_import_gives_bit_identical_logits() {
    let tok = char_tok();
    let ids = tok.encode("First Citizen: hear").unwrap();
    for tied in [false, true] {
        let mut m = random_model(llama_cfg(tok.vocab_size(), tied), 7);
        let bytes = gguf::export_bytes(&m, &tok, ExportType::F32).unwrap();
        let g = gguf::parse(&bytes).unwrap();
        assert_eq!(g.get("general.architecture"), Some(&Value::String("llama".into())));
        assert_eq!(g.get("llama.attention.head_count_kv"), Some(&Value::U32(2)));
        assert_eq!(g.get("llama.rope.dimension_count"), Some(&Value::U32(4)));
        assert_eq!(g.get("llama.rope.freq_base"), Some(&Value::F32(500.0)));
        assert_eq!(g.get("llama.attention.layer_norm_rms_epsilon"), Some(&Value::F32(1e-6)));
        assert_eq!(g.get("llama.feed_forward_length"), Some(&Value::U32(24)));
        assert_eq!(g.tensor("output.weight").is_some(), !tied);
        let k = g.tensor("blk.1.attn_k.weight").unwrap();
        assert_eq!(k.dims, vec![16, 8], "[n_embd, n_kv_head · head_size]");
        // attn_k holds rows [C, C+KV) of c_attn, unpermuted.
        let p = m.layout.get("transformer.h.1.attn.c_attn.weight").unwrap().range();
        assert_eq!(k.f32s().unwrap(), &m.params[p.start + 16 * 16..p.start + 24 * 16]);
        let (mut back, tok2) = gguf::import_bytes(&bytes, 2).unwrap();
        // The file has no dropout: the import's is 0.
        let drop = ModelConfig { dropout: 0.0, attn_dropout: Some(0.0), ..m.config.clone() };
        assert_eq!(back.config, drop);
        assert_eq!(bits(&back.params), bits(&m.params));
        assert_eq!(bits(&logits(&mut back, &ids)), bits(&logits(&mut m, &ids)));
        assert_eq!(tok2.encode(TEXT).unwrap(), tok.encode(TEXT).unwrap());
        assert_eq!(tok2.kind(), "char");

        // F16: matrices rounded to half, norms kept f32.
        let g16 = gguf::to_gguf(&m, &tok, ExportType::F16).unwrap();
        let (h, _) = gguf::import_bytes(&gguf::to_bytes(&g16).unwrap(), 1).unwrap();
        let round: Vec<f32> = m.params.iter().map(|&x| lmlab::kernels::precision::round_f16(x)).collect();
        for t in &m.layout.tensors {
            let want = if t.shape.len() == 1 { &m.params[t.range()] } else { &round[t.range()] };
            assert_eq!(bits(&h.params[t.range()]), bits(want), "{}", t.name);
        }
        assert_eq!(g16.get("general.file_type"), Some(&Value::U32(1)));
    }
}

#[test]
fn gpt2_export_import_gives_bit_identical_logits() {
    let tok = char_tok();
    let ids = tok.encode("hear me speak").unwrap();
    for (tied, bias) in [(true, true), (false, true), (true, false)] {
        let mut m = random_model(gpt2_cfg(tok.vocab_size(), tied, bias), 3);
        let bytes = gguf::export_bytes(&m, &tok, ExportType::F32).unwrap();
        let g = gguf::parse(&bytes).unwrap();
        assert_eq!(g.get("general.architecture"), Some(&Value::String("gpt2".into())));
        assert_eq!(g.tensor("blk.0.attn_qkv.weight").unwrap().dims, vec![16, 48]);
        assert_eq!(g.tensor("blk.0.ffn_down.weight").unwrap().dims, vec![40, 16]);
        assert_eq!(g.tensor("position_embd.weight").unwrap().dims, vec![16, 16]);
        let (mut back, _) = gguf::import_bytes(&bytes, 2).unwrap();
        assert!(back.config.bias, "GGUF's gpt2 always has biases");
        for t in &m.layout.tensors {
            let p = back.layout.get(&t.name).unwrap().range();
            assert_eq!(bits(&back.params[p]), bits(&m.params[t.range()]), "{}", t.name);
        }
        assert_eq!(bits(&logits(&mut back, &ids)), bits(&logits(&mut m, &ids)));
    }
}

#[test]
fn export_refuses_what_llama_cpp_cannot_run() {
    let tok = char_tok();
    let v = tok.vocab_size();
    let cases: [(ModelConfig, &str); 4] = [
        (ModelConfig { position: Position::Rope, ..gpt2_cfg(v, true, true) }, "model.position"),
        (ModelConfig { activation: ActivationKind::Relu, ..gpt2_cfg(v, true, true) }, "gelu_tanh"),
        (ModelConfig { bias: true, ..llama_cfg(v, true) }, "model.bias"),
        (ModelConfig { norm: NormKind::Rmsnorm, ..gpt2_cfg(v, true, true) }, "model.position"),
    ];
    for (cfg, want) in cases {
        let m = Transformer::new(cfg, 1).unwrap();
        let e = format!("{:#}", gguf::export_bytes(&m, &tok, ExportType::F32).unwrap_err());
        assert!(e.contains(want), "{want}: {e}");
    }
    // A quantized type lmlab does not import (F32, F16, Q8_0 and Q4_0 only) is refused.
    let m = random_model(llama_cfg(v, true), 1);
    let mut g = gguf::to_gguf(&m, &tok, ExportType::F32).unwrap();
    let t = g.tensors.iter_mut().find(|t| t.name == "blk.0.attn_q.weight").unwrap();
    t.ty = GgmlType::Q4_1;
    t.data = TensorData::Raw(vec![0; 20 * 8]);
    let e = format!("{:#}", gguf::from_gguf(&g, 1).err().unwrap());
    assert!(e.contains("blk.0.attn_q.weight is Q4_1"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// llama.cpp's vocab-only GPT-2 file and GPT-2 tokenizers

fn gpt2_dir() -> Option<PathBuf> {
    common::shared_data("gpt2-tokenizer/ggml-vocab-gpt-2.gguf").map(|p| p.parent().unwrap().to_path_buf())
}

#[test]
fn llama_cpp_vocab_file_tokenizes_like_lmlab() {
    let Some(dir) = gpt2_dir() else { return };
    let g = Gguf::read(&dir.join("ggml-vocab-gpt-2.gguf")).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.get("general.architecture"), Some(&Value::String("gpt2".into())));
    assert_eq!(g.get("tokenizer.ggml.model"), Some(&Value::String("gpt2".into())));
    let tokens = g.get("tokenizer.ggml.tokens").and_then(Value::as_array).unwrap();
    assert_eq!(tokens.len(), 50257);
    let from_gguf = gguf::tokenizer_from_gguf(&g).unwrap();
    let openai = Gpt2Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(from_gguf.end_of_text(), Some(50256));
    // llama.cpp's 46 test vectors, and a few more strings.
    let inp = std::fs::read_to_string(dir.join("ggml-vocab-gpt-2.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(dir.join("ggml-vocab-gpt-2.gguf.out")).unwrap();
    let mut strings: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    assert_eq!(strings.pop(), Some(""), "the .inp file ends with a separator line");
    let want: Vec<Vec<u32>> = out.lines().map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect()).collect();
    assert_eq!(strings.len(), want.len());
    for (s, w) in strings.iter().zip(&want) {
        assert_eq!(&from_gguf.encode(s).unwrap(), w, "{s:?}");
    }
    for s in ["Hello world", " the quick brown fox <|endoftext|> jumps", "Führer 😀 1234567 \n\n  x"] {
        assert_eq!(from_gguf.encode(s).unwrap(), openai.encode(s).unwrap(), "{s:?}");
        assert_eq!(from_gguf.decode(&openai.encode(s).unwrap()).unwrap(), s);
    }
}

#[test]
fn gpt2_tokenizer_round_trips_through_gguf() {
    let Some(dir) = gpt2_dir() else { return };
    let tok = Tokenizer::Gpt2(Box::new(Gpt2Tokenizer::from_dir(&dir).unwrap()));
    let cfg = ModelConfig { n_embd: 8, n_head: 2, n_layer: 1, block_size: 8, ..gpt2_cfg(tok.vocab_size(), true, true) };
    let m = random_model(cfg, 5);
    let g = gguf::to_gguf(&m, &tok, ExportType::F16).unwrap();
    assert_eq!(g.get("tokenizer.ggml.eos_token_id"), Some(&Value::U32(50256)));
    let s = "GGUF files: tokens, merges and ids ✓";
    let (_, back) = gguf::from_gguf(&gguf::parse(&gguf::to_bytes(&g).unwrap()).unwrap(), 1).unwrap();
    assert_eq!(back.encode(s).unwrap(), tok.encode(s).unwrap());
    // Without the tokenizers document, from tokens and merges alone (what llama.cpp reads).
    let mut bare = g.clone();
    bare.metadata.retain(|(k, _)| k != "tokenizer.huggingface.json");
    let t = gguf::tokenizer_from_gguf(&bare).unwrap();
    assert_eq!(t.encode(s).unwrap(), tok.encode(s).unwrap());
    assert_eq!(t.end_of_text(), Some(50256));
}

// ---------------------------------------------------------------------------------------------
// Fuzzing the reader

/// Byte positions and widths of the counts, lengths, types, dims and offsets of a valid file.
fn fields(b: &[u8]) -> Vec<(usize, usize)> {
    let u32_at = |p: usize| u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
    let u64_at = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize;
    let mut f = vec![(4, 4), (8, 8), (16, 8)];
    let mut p = 24;
    fn value(b: &[u8], t: u32, p: &mut usize, f: &mut Vec<(usize, usize)>) {
        let u64_at = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize;
        match t {
            0 | 1 | 7 => *p += 1,
            2 | 3 => *p += 2,
            4..=6 => *p += 4,
            10..=12 => *p += 8,
            8 => {
                f.push((*p, 8));
                *p += 8 + u64_at(*p);
            }
            _ => {
                let et = u32::from_le_bytes(b[*p..*p + 4].try_into().unwrap());
                f.push((*p, 4));
                f.push((*p + 4, 8));
                let n = u64_at(*p + 4);
                *p += 12;
                for _ in 0..n {
                    value(b, et, p, f);
                }
            }
        }
    }
    let (nt, nkv) = (u64_at(8), u64_at(16));
    for _ in 0..nkv {
        f.push((p, 8));
        p += 8 + u64_at(p);
        let t = u32_at(p);
        f.push((p, 4));
        p += 4;
        value(b, t, &mut p, &mut f);
    }
    for _ in 0..nt {
        f.push((p, 8));
        p += 8 + u64_at(p);
        let nd = u32_at(p) as usize;
        f.push((p, 4));
        p += 4;
        for _ in 0..nd {
            f.push((p, 8));
            p += 8;
        }
        f.push((p, 4));
        f.push((p + 4, 8));
        p += 12;
    }
    f
}

fn mutate(orig: &[u8], fields: &[(usize, usize)], rng: &mut Xoshiro256PlusPlus) -> Vec<u8> {
    let mut b = orig.to_vec();
    let len = b.len();
    let absurd = |rng: &mut Xoshiro256PlusPlus, len: usize| -> u64 {
        let choices = [0, 1, 2, 31, 32, 1 << 31, 1 << 32, (1 << 32) - 1, 1 << 60, 1 << 63, u64::MAX, i64::MAX as u64];
        match rng.gen_range(0..4) {
            0 => len as u64 + rng.gen_range(0..64),
            1 => rng.gen(),
            _ => choices[rng.gen_range(0..choices.len())],
        }
    };
    match rng.gen_range(0..6) {
        0 => {
            for _ in 0..rng.gen_range(1..5) {
                let i = rng.gen_range(0..len);
                b[i] ^= 1 << rng.gen_range(0..8);
            }
        }
        1 => b.truncate(rng.gen_range(0..len)),
        2 => {
            let at = rng.gen_range(0..=len);
            let extra: Vec<u8> = (0..rng.gen_range(1..17)).map(|_| rng.gen()).collect();
            b.splice(at..at, extra);
        }
        3 | 4 => {
            let (p, w) = fields[rng.gen_range(0..fields.len())];
            let v = absurd(rng, len).to_le_bytes();
            b[p..p + w].copy_from_slice(&v[..w]);
        }
        _ => {
            let at = rng.gen_range(0..len.saturating_sub(8));
            let v = absurd(rng, len).to_le_bytes();
            b[at..at + 8].copy_from_slice(&v);
        }
    }
    b
}

#[test]
fn fuzzed_files_never_panic_nor_overallocate() {
    let tok = char_tok();
    let m = random_model(llama_cfg(tok.vocab_size(), false), 11);
    let mut files: Vec<(String, Vec<u8>, usize)> = vec![
        ("lmlab llama".into(), gguf::export_bytes(&m, &tok, ExportType::F16).unwrap(), 5500),
        ("every type".into(), gguf::to_bytes(&every_type()).unwrap(), 4500),
    ];
    // A SentencePiece ("llama") vocabulary: llama2.c's layout of specials and byte tokens.
    let spm = {
        use lmlab::data::llama2c_tokenizer::Llama2cTokenizer;
        let mut vocab: Vec<Vec<u8>> = vec![b"<unk>".to_vec(), b"\n<s>\n".to_vec(), b"\n</s>\n".to_vec()];
        vocab.extend((0..=255u8).map(|b| format!("<0x{b:02X}>").into_bytes()));
        vocab.extend([" ", "a", "b", " a", "ab"].map(|t| t.as_bytes().to_vec()));
        let scores = (0..vocab.len()).map(|i| -(i as f32)).collect();
        Tokenizer::Llama2c(Box::new(Llama2cTokenizer::new(vocab, scores, 6).unwrap()))
    };
    let spm_model = random_model(llama_cfg(spm.vocab_size(), true), 12);
    files.push(("lmlab llama spm".into(), gguf::export_bytes(&spm_model, &spm, ExportType::F32).unwrap(), 1500));
    if let Some(dir) = gpt2_dir() {
        files.push(("llama.cpp vocab".into(), std::fs::read(dir.join("ggml-vocab-gpt-2.gguf")).unwrap(), 1000));
    }
    let (mut total, mut oks, mut errs, mut imported, mut worst_ratio) = (0usize, 0usize, 0usize, 0usize, 0.0f64);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2024);
    for (what, orig, n) in &files {
        let f = fields(orig);
        for i in 0..*n {
            let b = mutate(orig, &f, &mut rng);
            LARGEST.store(0, Ordering::Relaxed);
            TRACK.with(|t| t.set(true));
            let r = std::panic::catch_unwind(|| gguf::parse(&b).map(|g| g.tensors.len()));
            TRACK.with(|t| t.set(false));
            let largest = LARGEST.load(Ordering::Relaxed);
            match r {
                Err(_) => panic!("{what}, mutation {i}: the reader panicked"),
                Ok(Ok(_)) => oks += 1,
                Ok(Err(_)) => errs += 1,
            }
            // A file that reads is imported too (any answer but a panic; the model's own
            // buffers are not bounded by the file, so no allocation limit here).
            if what.starts_with("lmlab llama") {
                if let Ok(g) = gguf::parse(&b) {
                    let r = std::panic::catch_unwind(|| gguf::from_gguf(&g, 1).map(|_| ()));
                    match r {
                        Err(_) => panic!("{what}, mutation {i}: import panicked"),
                        Ok(Ok(())) => imported += 1,
                        Ok(Err(_)) => {}
                    }
                }
            }
            // Against at least 4 KiB: tiny truncated files still format an error message.
            let ratio = largest as f64 / b.len().max(4096) as f64;
            assert!(
                largest <= 4 * b.len() + 4096,
                "{what}, mutation {i}: allocated {largest} bytes for {} bytes",
                b.len()
            );
            worst_ratio = worst_ratio.max(ratio);
            total += 1;
        }
    }
    assert!(total >= 10_000);
    eprintln!("fuzz: {total} mutations, {oks} Ok ({imported} of the lmlab file's also import), {errs} Err, largest single allocation {worst_ratio:.2}× the file size (or 4 KiB)");
}

// ---------------------------------------------------------------------------------------------
// CLI

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cli_export_import() {
    let dir = tempfile::tempdir().unwrap();
    let tok = char_tok();
    let mut m = random_model(llama_cfg(tok.vocab_size(), false), 9);
    let ck = dir.path().join("ck");
    lmlab::io::checkpoint::save_new(&ck, &m, &tok).unwrap();
    let file = dir.path().join("m.gguf");
    ok(lmlab(&["export", "--gguf", s(&file), "--checkpoint", s(&ck)]));
    let ck2 = dir.path().join("ck2");
    let out = ok(lmlab(&["import", "--gguf", s(&file), "--out", s(&ck2)]));
    assert!(out.contains("char tokenizer"), "{out}");
    let mut back = lmlab::io::checkpoint::load(&ck2, 1, false).unwrap().model;
    let ids = tok.encode("hear me").unwrap();
    assert_eq!(bits(&logits(&mut back, &ids)), bits(&logits(&mut m, &ids)));
    ok(lmlab(&["export", "--gguf", s(&dir.path().join("h.gguf")), "--type", "f16", "--checkpoint", s(&ck)]));
    let g = Gguf::read(&dir.path().join("h.gguf")).unwrap();
    assert_eq!(g.tensor("blk.0.ffn_up.weight").unwrap().ty, GgmlType::F16);
}

#[test]
fn q8_0_and_q4_0_export_ggml_blocks_and_import_their_values() {
    use lmlab::kernels::quant::{QuantMatrix, QuantType};
    let tok = char_tok();
    let ids = tok.encode("First Citizen: hear").unwrap();
    let cfg = ModelConfig {
        n_embd: 64,
        n_head: 4,
        n_kv_head: Some(2),
        ffn_hidden: Some(96),
        ..llama_cfg(tok.vocab_size(), false)
    };
    let mut m = random_model(cfg, 11);
    let mut errs = vec![];
    for (ty, qt, ggml, file_type) in
        [(ExportType::Q8_0, QuantType::Q8_0, GgmlType::Q8_0, 7), (ExportType::Q4_0, QuantType::Q4_0, GgmlType::Q4_0, 2)]
    {
        let g = gguf::to_gguf(&m, &tok, ty).unwrap();
        assert_eq!(g.get("general.file_type"), Some(&Value::U32(file_type)));
        // attn_k: rows [C, C + KV) of c_attn, as the kernels' GGML-exact blocks.
        let k = g.tensor("blk.0.attn_k.weight").unwrap();
        assert_eq!(k.ty, ggml);
        let p = m.layout.get("transformer.h.0.attn.c_attn.weight").unwrap().range();
        let rows = &m.params[p.start + 64 * 64..p.start + (64 + 32) * 64];
        let want = QuantMatrix::quantize(rows, 32, 64, qt).unwrap();
        assert_eq!(k.data, TensorData::Raw(want.data.clone()));
        assert_eq!(g.tensor("blk.0.attn_norm.weight").unwrap().ty, GgmlType::F32, "norms stay f32");
        // Import: every matrix's params hold its dequantized values, and the linear weights
        // run on the file's blocks: the model is the one lmlab's own quantization makes (with
        // the token table the file quantized).
        let (mut back, _) = gguf::import_bytes(&gguf::to_bytes(&g).unwrap(), 1).unwrap();
        let mut deq = vec![0.0; rows.len()];
        want.dequantize(&mut deq);
        assert_eq!(bits(&back.params[p.start + 64 * 64..p.start + (64 + 32) * 64]), bits(&deq));
        let mut same = random_model(m.config.clone(), 11);
        let wte = m.layout.get("transformer.wte.weight").unwrap().range();
        same.params[wte.clone()].copy_from_slice(&back.params[wte]);
        let linear: Vec<String> = back.quantized().unwrap().iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(linear.len(), 4 * m.config.n_layer + 1, "{linear:?}");
        for (n, q) in back.quantized().unwrap().iter() {
            let t = m.layout.get(n).unwrap();
            let mine = QuantMatrix::quantize(&m.params[t.range()], t.shape[0], t.shape[1], qt).unwrap();
            assert_eq!((q.ty, &q.data), (qt, &mine.data), "{n}");
            same.set_quantized(n, mine).unwrap();
        }
        assert_eq!(bits(&logits(&mut back, &ids)), bits(&logits(&mut same, &ids)));
        let float = logits(&mut m, &ids);
        let scale = float.iter().fold(0.0f32, |s, x| s.max(x.abs()));
        let err = logits(&mut back, &ids).iter().zip(&float).fold(0.0f32, |e, (a, b)| e.max((a - b).abs())) / scale;
        errs.push(err);
    }
    // Largest logit difference over the largest logit (this test's weights are large):
    // Q8_0 stays close, Q4_0 is further off.
    assert!(errs[0] > 0.0 && errs[0] < 0.1 && errs[1] > errs[0], "{errs:?}");
    // A width that is not a multiple of 32 cannot be Q8_0: such matrices stay f32.
    let small = random_model(llama_cfg(tok.vocab_size(), false), 7);
    let g = gguf::to_gguf(&small, &tok, ExportType::Q8_0).unwrap();
    for t in g.tensors.iter().filter(|t| t.dims.len() == 2) {
        let want = if t.dims[0] % 32 == 0 { GgmlType::Q8_0 } else { GgmlType::F32 };
        assert_eq!(t.ty, want, "{}", t.name);
    }
}

#[test]
fn a_quantized_model_exports_its_own_blocks() {
    use lmlab::kernels::quant::{QuantMatrix, QuantType};
    let tok = char_tok();
    let mut cfg = llama_cfg(tok.vocab_size(), false);
    cfg.n_embd = 64;
    cfg.ffn_hidden = Some(96);
    let mut m = random_model(cfg, 5);
    let names: Vec<String> =
        m.layout.tensors.iter().filter(|t| t.name.ends_with("c_fc.weight")).map(|t| t.name.clone()).collect();
    for n in &names {
        let t = m.layout.get(n).unwrap().clone();
        let q = QuantMatrix::quantize(&m.params[t.range()], t.shape[0], t.shape[1], QuantType::Q4_0).unwrap();
        m.set_quantized(n, q).unwrap();
    }
    let g = gguf::to_gguf(&m, &tok, ExportType::Stored).unwrap();
    assert_eq!(g.get("general.file_type").and_then(Value::as_u64), Some(2));
    let find = |n: &str| g.tensors.iter().find(|t| t.name == n).unwrap();
    // The gate and up halves of c_fc are its Q4_0 rows, byte for byte; the rest stays f32.
    let q = m.quantized().unwrap().iter().next().unwrap().1.clone();
    let rb = q.row_bytes();
    assert_eq!(find("blk.0.ffn_gate.weight").data, TensorData::Raw(q.data[..96 * rb].to_vec()));
    assert_eq!(find("blk.0.ffn_up.weight").data, TensorData::Raw(q.data[96 * rb..].to_vec()));
    for n in ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight", "output.weight"] {
        assert_eq!(find(n).ty, GgmlType::F32, "{n}");
    }
    // It imports to the model that ran.
    let (mut back, _) = gguf::from_gguf(&gguf::parse(&gguf::to_bytes(&g).unwrap()).unwrap(), 1).unwrap();
    assert_eq!(bits(&back.params), bits(&m.params));
    let ids = [1u32, 2, 3];
    assert_eq!(bits(&logits(&mut back, &ids)), bits(&logits(&mut m, &ids)));
    // int8 has no GGUF type.
    let t = m.layout.get("transformer.h.0.attn.c_proj.weight").unwrap().clone();
    let q = QuantMatrix::quantize(&m.params[t.range()], t.shape[0], t.shape[1], QuantType::Int8).unwrap();
    m.set_quantized("transformer.h.0.attn.c_proj.weight", q).unwrap();
    let err = format!("{:#}", gguf::to_gguf(&m, &tok, ExportType::Stored).err().unwrap());
    assert!(err.contains("attn.c_proj.weight") && err.contains("--type"), "{err}");
}
