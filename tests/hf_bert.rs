//! The Hugging Face BERT importer (`io::hf_bert`) and the sentence-embedding pipeline
//! (`infer::embed`) without any downloaded model: a tiny random BERT is written as
//! `config.json` + `model.safetensors` (+ tokenizer.json and sentence-transformers' files) in a
//! temporary directory, loaded, and checked tensor by tensor and against a float64 BERT forward
//! pass written here from the BERT paper / `transformers`' BertModel (token + position +
//! token-type embeddings, LayerNorm, post-norm blocks, exact GELU, attention_mask as a key mask).
//! Bad configs, missing and misshaped tensors must give errors that name them.

mod common;

use lmlab::infer::embed::{Embedder, PoolingMode};
use lmlab::io::hf_bert;
use lmlab::io::tensors::{to_safetensors_raw, RawTensor};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

const C: usize = 8;
const HEADS: usize = 2;
const LAYERS: usize = 2;
const FFN: usize = 12;
const VOCAB: usize = 12;
const MAX_POS: usize = 10;
const EPS: f64 = 1e-12;

fn config() -> Value {
    json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": VOCAB,
        "hidden_size": C,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": FFN,
        "hidden_act": "gelu",
        "max_position_embeddings": MAX_POS,
        "type_vocab_size": 2,
        "layer_norm_eps": EPS,
        "position_embedding_type": "absolute",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "pad_token_id": 0
    })
}

/// BERT's tensors (names without prefix), random: weights U(-0.6, 0.6), LayerNorm gains
/// 1 ± 0.2, biases U(-0.2, 0.2). Token-type row 0 is non-zero so that folding it matters.
fn tensors(seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, center: f32, scale: f32| {
        let n = shape.iter().product();
        let v = (0..n).map(|_| center + scale * rng.gen_range(-1.0..1.0f32)).collect();
        out.push((name, shape, v));
    };
    add("embeddings.word_embeddings.weight".into(), vec![VOCAB, C], 0.0, 0.6);
    add("embeddings.position_embeddings.weight".into(), vec![MAX_POS, C], 0.0, 0.6);
    add("embeddings.token_type_embeddings.weight".into(), vec![2, C], 0.0, 0.6);
    add("embeddings.LayerNorm.weight".into(), vec![C], 1.0, 0.2);
    add("embeddings.LayerNorm.bias".into(), vec![C], 0.0, 0.2);
    for i in 0..LAYERS {
        let p = format!("encoder.layer.{i}");
        for part in ["query", "key", "value"] {
            add(format!("{p}.attention.self.{part}.weight"), vec![C, C], 0.0, 0.6);
            add(format!("{p}.attention.self.{part}.bias"), vec![C], 0.0, 0.2);
        }
        add(format!("{p}.attention.output.dense.weight"), vec![C, C], 0.0, 0.6);
        add(format!("{p}.attention.output.dense.bias"), vec![C], 0.0, 0.2);
        add(format!("{p}.attention.output.LayerNorm.weight"), vec![C], 1.0, 0.2);
        add(format!("{p}.attention.output.LayerNorm.bias"), vec![C], 0.0, 0.2);
        add(format!("{p}.intermediate.dense.weight"), vec![FFN, C], 0.0, 0.6);
        add(format!("{p}.intermediate.dense.bias"), vec![FFN], 0.0, 0.2);
        add(format!("{p}.output.dense.weight"), vec![C, FFN], 0.0, 0.6);
        add(format!("{p}.output.dense.bias"), vec![C], 0.0, 0.2);
        add(format!("{p}.output.LayerNorm.weight"), vec![C], 1.0, 0.2);
        add(format!("{p}.output.LayerNorm.bias"), vec![C], 0.0, 0.2);
    }
    // Present in real checkpoints, unused for embeddings.
    add("pooler.dense.weight".into(), vec![C, C], 0.0, 0.6);
    add("pooler.dense.bias".into(), vec![C], 0.0, 0.2);
    out
}

/// safetensors bytes of `t` under `prefix`, as `dtype` (F32, F16 or BF16), plus an int64
/// `embeddings.position_ids` like transformers writes.
fn safetensors_bytes(t: &[(String, Vec<usize>, Vec<f32>)], prefix: &str, dtype: Dtype) -> Vec<u8> {
    let mut raw: Vec<RawTensor> = t
        .iter()
        .map(|(n, shape, v)| {
            let bytes: Vec<u8> = match dtype {
                Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::F16 => v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
                Dtype::BF16 => v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
                d => panic!("{d:?}"),
            };
            (format!("{prefix}{n}"), dtype, shape.clone(), bytes)
        })
        .collect();
    let ids: Vec<u8> = (0..MAX_POS as i64).flat_map(|i| i.to_le_bytes()).collect();
    raw.push((format!("{prefix}embeddings.position_ids"), Dtype::I64, vec![1, MAX_POS], ids));
    to_safetensors_raw(&raw, HashMap::from([("format".to_string(), "pt".to_string())])).unwrap()
}

fn write_bert(dir: &Path, cfg: &Value, t: &[(String, Vec<usize>, Vec<f32>)], prefix: &str) {
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(cfg).unwrap()).unwrap();
    std::fs::write(dir.join("model.safetensors"), safetensors_bytes(t, prefix, Dtype::F32)).unwrap();
}

fn get<'a>(t: &'a [(String, Vec<usize>, Vec<f32>)], name: &str) -> &'a [f32] {
    &t.iter().find(|x| x.0 == name).unwrap_or_else(|| panic!("{name}")).2
}

fn param<'a>(m: &'a lmlab::model::transformer::Transformer, name: &str) -> &'a [f32] {
    &m.params[m.layout.get(name).unwrap_or_else(|| panic!("lmlab has no {name}")).range()]
}

#[test]
fn importer_maps_every_tensor_with_or_without_the_bert_prefix() {
    let t = tensors(1);
    for prefix in ["", "bert."] {
        let dir = tempfile::tempdir().unwrap();
        write_bert(dir.path(), &config(), &t, prefix);
        let b = hf_bert::load(dir.path(), 2, None).unwrap();
        let m = &b.model;
        let cfg = &m.config;
        assert_eq!((cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.ffn(), cfg.block_size), (LAYERS, HEADS, C, FFN, MAX_POS));
        assert!(cfg.embedding_norm && !cfg.final_norm && cfg.norm_eps == 1e-12);
        assert_eq!(param(m, "transformer.wte.weight"), get(&t, "embeddings.word_embeddings.weight"));
        let (pos, tte) =
            (get(&t, "embeddings.position_embeddings.weight"), get(&t, "embeddings.token_type_embeddings.weight"));
        let folded: Vec<f32> = pos.iter().enumerate().map(|(i, &p)| p + tte[i % C]).collect();
        assert_eq!(param(m, "transformer.wpe.weight"), &folded[..]);
        assert_eq!(param(m, "transformer.ln_emb.weight"), get(&t, "embeddings.LayerNorm.weight"));
        assert_eq!(param(m, "transformer.ln_emb.bias"), get(&t, "embeddings.LayerNorm.bias"));
        for i in 0..LAYERS {
            let (p, h) = (format!("encoder.layer.{i}"), format!("transformer.h.{i}"));
            let qkv = param(m, &format!("{h}.attn.c_attn.weight"));
            let qkv_b = param(m, &format!("{h}.attn.c_attn.bias"));
            for (k, part) in ["query", "key", "value"].iter().enumerate() {
                assert_eq!(&qkv[k * C * C..(k + 1) * C * C], get(&t, &format!("{p}.attention.self.{part}.weight")));
                assert_eq!(&qkv_b[k * C..(k + 1) * C], get(&t, &format!("{p}.attention.self.{part}.bias")));
            }
            for (bert, ours) in [
                ("attention.output.dense", "attn.c_proj"),
                ("attention.output.LayerNorm", "ln_1"),
                ("intermediate.dense", "mlp.c_fc"),
                ("output.dense", "mlp.c_proj"),
                ("output.LayerNorm", "ln_2"),
            ] {
                for leaf in ["weight", "bias"] {
                    assert_eq!(param(m, &format!("{h}.{ours}.{leaf}")), get(&t, &format!("{p}.{bert}.{leaf}")));
                }
            }
        }
        // Every lmlab tensor but the (zero, unused) classifier came from the file.
        assert_eq!(m.layout.tensors.len(), 4 + 12 * LAYERS + 2, "wte, wpe, ln_emb, 12 per layer, classifier");
        assert!(param(m, "classifier.weight").iter().all(|&x| x == 0.0));
    }
    // A shorter context keeps the first position rows.
    let dir = tempfile::tempdir().unwrap();
    write_bert(dir.path(), &config(), &t, "");
    let short = hf_bert::load(dir.path(), 1, Some(4)).unwrap();
    assert_eq!(short.model.config.block_size, 4);
    assert_eq!(param(&short.model, "transformer.wpe.weight").len(), 4 * C);
    let e = hf_bert::load(dir.path(), 1, Some(MAX_POS + 1)).err().unwrap();
    assert!(format!("{e:#}").contains("max_position_embeddings"), "{e:#}");
}

// ---- a float64 BERT, written from transformers' BertModel ------------------------------------

/// erf by its Taylor series / continued fraction (as in tests/gradcheck_norms_act.rs).
fn erf(x: f64) -> f64 {
    let u = x.abs();
    let e = if u < 2.5 {
        let (mut term, mut sum) = (u, u);
        for n in 1..500 {
            term *= 2.0 * u * u / (2 * n + 1) as f64;
            sum += term;
            if term < 1e-17 * sum {
                break;
            }
        }
        2.0 / std::f64::consts::PI.sqrt() * (-u * u).exp() * sum
    } else {
        let mut k = u;
        for j in (1..=200).rev() {
            k = u + (j as f64 / 2.0) / k;
        }
        1.0 - (-u * u).exp() / std::f64::consts::PI.sqrt() / k
    };
    e.copysign(x)
}

struct Ref<'a>(&'a [(String, Vec<usize>, Vec<f32>)]);

impl Ref<'_> {
    fn w(&self, name: &str) -> Vec<f64> {
        get(self.0, name).iter().map(|&x| x as f64).collect()
    }
    /// x (n, in) · Wᵀ + b.
    fn linear(&self, x: &[f64], name: &str, inp: usize) -> Vec<f64> {
        let (w, b) = (self.w(&format!("{name}.weight")), self.w(&format!("{name}.bias")));
        let out = b.len();
        x.chunks(inp)
            .flat_map(|row| {
                (0..out).map(|o| b[o] + (0..inp).map(|i| row[i] * w[o * inp + i]).sum::<f64>()).collect::<Vec<_>>()
            })
            .collect()
    }
    fn layer_norm(&self, x: &mut [f64], name: &str) {
        let (w, b) = (self.w(&format!("{name}.weight")), self.w(&format!("{name}.bias")));
        for row in x.chunks_mut(C) {
            let mean = row.iter().sum::<f64>() / C as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / C as f64;
            for (i, v) in row.iter_mut().enumerate() {
                *v = (*v - mean) / (var + EPS).sqrt() * w[i] + b[i];
            }
        }
    }

    /// The last hidden state (B, T, C) for ids (B, T) with attention_mask (B, T), token types 0.
    fn forward(&self, ids: &[u32], mask: &[bool], b: usize, t: usize) -> Vec<f64> {
        self.forward_layers(ids, mask, b, t, LAYERS)
    }

    /// The hidden state after the first `layers` layers.
    fn forward_layers(&self, ids: &[u32], mask: &[bool], b: usize, t: usize, layers: usize) -> Vec<f64> {
        let (wte, wpe, tte) = (
            self.w("embeddings.word_embeddings.weight"),
            self.w("embeddings.position_embeddings.weight"),
            self.w("embeddings.token_type_embeddings.weight"),
        );
        let (wte, wpe, tte) = (&wte, &wpe, &tte);
        let mut x: Vec<f64> = (0..b * t)
            .flat_map(|n| {
                let (id, pos) = (ids[n] as usize, n % t);
                (0..C).map(move |j| wte[id * C + j] + tte[j] + wpe[pos * C + j])
            })
            .collect();
        self.layer_norm(&mut x, "embeddings.LayerNorm");
        let hs = C / HEADS;
        for l in 0..layers {
            let p = format!("encoder.layer.{l}");
            let q = self.linear(&x, &format!("{p}.attention.self.query"), C);
            let k = self.linear(&x, &format!("{p}.attention.self.key"), C);
            let v = self.linear(&x, &format!("{p}.attention.self.value"), C);
            let mut ctx = vec![0.0; b * t * C];
            for bi in 0..b {
                for h in 0..HEADS {
                    for i in 0..t {
                        let at = |m: &[f64], r: usize, d: usize| m[(bi * t + r) * C + h * hs + d];
                        let scores: Vec<f64> = (0..t)
                            .map(|j| {
                                let s = (0..hs).map(|d| at(&q, i, d) * at(&k, j, d)).sum::<f64>() / (hs as f64).sqrt();
                                if mask[bi * t + j] {
                                    s
                                } else {
                                    f64::NEG_INFINITY
                                }
                            })
                            .collect();
                        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                        let z: f64 = e.iter().sum();
                        for d in 0..hs {
                            ctx[(bi * t + i) * C + h * hs + d] = (0..t).map(|j| e[j] / z * at(&v, j, d)).sum();
                        }
                    }
                }
            }
            let attn = self.linear(&ctx, &format!("{p}.attention.output.dense"), C);
            x.iter_mut().zip(&attn).for_each(|(a, b)| *a += b);
            self.layer_norm(&mut x, &format!("{p}.attention.output.LayerNorm"));
            let mut inter = self.linear(&x, &format!("{p}.intermediate.dense"), C);
            inter.iter_mut().for_each(|a| *a = 0.5 * *a * (1.0 + erf(*a / std::f64::consts::SQRT_2)));
            let out = self.linear(&inter, &format!("{p}.output.dense"), FFN);
            x.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
            self.layer_norm(&mut x, &format!("{p}.output.LayerNorm"));
        }
        x
    }
}

fn max_abs(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((*x as f64 - y).abs()))
}

#[test]
fn hidden_states_equal_a_float64_bert_with_padding() {
    let t = tensors(2);
    let dir = tempfile::tempdir().unwrap();
    write_bert(dir.path(), &config(), &t, "bert.");
    let mut m = hf_bert::load(dir.path(), 2, None).unwrap().model;
    let (b, tl) = (2, 7);
    let ids: Vec<u32> = (0..b * tl).map(|i| ((i * 5 + 2) % VOCAB) as u32).collect();
    let mask: Vec<bool> = (0..b * tl).map(|i| i < tl || i % tl < 4).collect(); // second: 4 tokens
    m.forward_classify(&ids, Some(&mask), None, b, tl, false, 0).unwrap();
    let want = Ref(&t).forward(&ids, &mask, b, tl);
    let err = max_abs(m.hidden(), &want);
    assert!(err < 2e-5, "hidden states differ from the float64 BERT by {err:e}");
    // The mask matters: without it the padded sequence's real rows change.
    let unmasked = Ref(&t).forward(&ids, &[true; 14], b, tl);
    let row = |h: &[f64]| h[tl * C..(tl + 4) * C].to_vec();
    assert!(row(&unmasked).iter().zip(row(&want)).any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn a_bert_cut_after_a_layer_gives_that_layers_hidden_state() {
    let t = tensors(3);
    let dir = tempfile::tempdir().unwrap();
    write_bert(dir.path(), &config(), &t, "");
    let (b, tl) = (2, 5);
    let ids: Vec<u32> = (0..b * tl).map(|i| ((i * 3 + 1) % VOCAB) as u32).collect();
    let mask: Vec<bool> = (0..b * tl).map(|i| i < tl || i % tl < 3).collect();
    for layers in 1..=LAYERS {
        let cut = hf_bert::load_layers(dir.path(), 2, None, Some(layers)).unwrap();
        assert_eq!((cut.model.config.n_layer, cut.config.num_hidden_layers), (layers, layers));
        let mut m = cut.model;
        m.forward_classify(&ids, Some(&mask), None, b, tl, false, 0).unwrap();
        let err = max_abs(m.hidden(), &Ref(&t).forward_layers(&ids, &mask, b, tl, layers));
        assert!(err < 2e-5, "after layer {layers}: {err:e}");
    }
    for bad in [0, LAYERS + 1] {
        let e = format!("{:#}", hf_bert::load_layers(dir.path(), 1, None, Some(bad)).err().unwrap());
        assert!(e.contains(&format!("layer {bad} does not exist")), "{e}");
    }
}

// ---- the sentence-embedding pipeline on the tiny model ----------------------------------------

/// A WordPiece tokenizer.json over the tiny vocabulary (ids 0..12), BERT-style.
fn tokenizer_json() -> String {
    let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "##s", "on", "mat", ".", "a"];
    let special = |id: usize| {
        json!({"id": id, "content": vocab[id], "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let tok = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
    json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0,
                    "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [special(0), special(1), special(2), special(3)],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [tok("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, tok("[SEP]")],
            "pair": [tok("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, tok("[SEP]"),
                     {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                               "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100,
                  "vocab": vocab.iter().enumerate().map(|(i, t)| (t.to_string(), json!(i))).collect::<serde_json::Map<_, _>>()}
    })
    .to_string()
}

/// A sentence-transformers directory around the tiny BERT.
fn write_sentence_model(
    dir: &Path,
    t: &[(String, Vec<usize>, Vec<f32>)],
    pooling: &str,
    normalize: bool,
    max_len: usize,
) {
    write_bert(dir, &config(), t, "");
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
    let mut modules = vec![
        json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if normalize {
        modules.push(
            json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}),
        );
    }
    std::fs::write(dir.join("modules.json"), Value::Array(modules).to_string()).unwrap();
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    let mut pool = json!({"word_embedding_dimension": C, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": false,
                          "pooling_mode_max_tokens": false, "pooling_mode_mean_sqrt_len_tokens": false});
    pool[format!("pooling_mode_{pooling}")] = json!(true);
    std::fs::write(dir.join("1_Pooling/config.json"), pool.to_string()).unwrap();
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        json!({"max_seq_length": max_len, "do_lower_case": false}).to_string(),
    )
    .unwrap();
}

#[test]
fn embedder_pools_normalises_truncates_and_batches_like_the_reference() {
    let t = tensors(3);
    let dir = tempfile::tempdir().unwrap();
    write_sentence_model(dir.path(), &t, "mean_tokens", true, 8);
    let mut e = Embedder::load(dir.path(), 2).unwrap();
    assert_eq!((e.config().pooling, e.config().normalize, e.config().max_seq_length), (PoolingMode::Mean, true, 8));
    let sentences = ["The cat sat.", "a cat sat on the mat . the cats sat on a mat", "", "CATS!"];
    let ids: Vec<Vec<u32>> = sentences.iter().map(|s| e.tokenize(s).unwrap()).collect();
    assert_eq!(ids[0], vec![2, 4, 5, 6, 10, 3]);
    assert_eq!(ids[1], vec![2, 11, 5, 6, 8, 4, 9, 3], "truncated at max_seq_length 8, [SEP] kept");
    assert_eq!(ids[2], vec![2, 3]);
    assert_eq!(ids[3], vec![2, 5, 7, 1, 3], "cat ##s, '!' unknown");
    let got = e.embed(&sentences).unwrap();
    for (s, (g, id)) in sentences.iter().zip(got.iter().zip(&ids)) {
        let h = Ref(&t).forward(id, &vec![true; id.len()], 1, id.len());
        let mut mean: Vec<f64> =
            (0..C).map(|j| (0..id.len()).map(|i| h[i * C + j]).sum::<f64>() / id.len() as f64).collect();
        let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
        mean.iter_mut().for_each(|x| *x /= norm);
        let err = max_abs(g, &mean);
        assert!(err < 2e-5, "{s:?}: embedding differs from the float64 reference by {err:e}");
    }
    // A sentence's embedding does not depend on its batch.
    let alone = e.embed(&[sentences[0]]).unwrap();
    assert!(alone[0].iter().zip(&got[0]).all(|(a, b)| (a - b).abs() < 1e-6));
    assert!(e.embed::<&str>(&[]).unwrap().is_empty());
    let hits = e.search("the cat sat.", &sentences, 2).unwrap();
    assert_eq!(hits[0].0, 0, "a sentence is its own best match: {hits:?}");
    assert!((hits[0].1 - 1.0).abs() < 1e-6);

    // The other pooling modes, and no normalisation.
    for (mode, want) in [
        ("cls_token", PoolingMode::Cls),
        ("max_tokens", PoolingMode::Max),
        ("mean_sqrt_len_tokens", PoolingMode::MeanSqrtLen),
    ] {
        let d = tempfile::tempdir().unwrap();
        write_sentence_model(d.path(), &t, mode, false, 8);
        let mut e = Embedder::load(d.path(), 2).unwrap();
        assert_eq!((e.config().pooling, e.config().normalize), (want, false));
        let id = &ids[0];
        let h = Ref(&t).forward(id, &vec![true; id.len()], 1, id.len());
        let n = id.len();
        let h = &h;
        let col = |j: usize| (0..n).map(move |i| h[i * C + j]);
        let reference: Vec<f64> = (0..C)
            .map(|j| match want {
                PoolingMode::Cls => h[j],
                PoolingMode::Max => col(j).fold(f64::NEG_INFINITY, f64::max),
                _ => col(j).sum::<f64>() / (n as f64).sqrt(),
            })
            .collect();
        let g = e.embed(&[sentences[0]]).unwrap();
        assert!(max_abs(&g[0], &reference) < 2e-5, "{mode}");
    }
}

// ---- errors ----------------------------------------------------------------------------------

fn load_err(cfg: &Value, t: &[(String, Vec<usize>, Vec<f32>)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    write_bert(dir.path(), cfg, t, "");
    match hf_bert::load(dir.path(), 1, None) {
        Ok(_) => panic!("loading succeeded: {cfg}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn unsupported_config_values_are_errors_naming_the_field() {
    let t = tensors(4);
    for (field, value, needle) in [
        ("model_type", json!("roberta"), "model_type \"roberta\""),
        ("hidden_act", json!("gelu_fast"), "hidden_act \"gelu_fast\""),
        ("position_embedding_type", json!("relative_key"), "position_embedding_type \"relative_key\""),
        ("is_decoder", json!(true), "is_decoder"),
        ("add_cross_attention", json!(true), "add_cross_attention"),
        ("num_attention_heads", json!(3), "num_attention_heads = 3 does not divide hidden_size = 8"),
        ("num_hidden_layers", json!(0), "num_hidden_layers = 0"),
        ("layer_norm_eps", json!(-1.0), "layer_norm_eps"),
        ("layer_norm_eps", json!(1e-300), "layer_norm_eps"),
        ("hidden_size", json!("wide"), "hidden_size"),
    ] {
        let mut cfg = config();
        cfg[field] = value;
        let e = load_err(&cfg, &t);
        assert!(e.contains(needle), "{field}: {e}");
    }
    let mut cfg = config();
    cfg.as_object_mut().unwrap().remove("intermediate_size");
    assert!(load_err(&cfg, &t).contains("intermediate_size"));
    // Other activations map to lmlab's.
    for act in ["gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish"] {
        let mut cfg = config();
        cfg["hidden_act"] = json!(act);
        let dir = tempfile::tempdir().unwrap();
        write_bert(dir.path(), &cfg, &t, "");
        hf_bert::load(dir.path(), 1, None).unwrap_or_else(|e| panic!("{act}: {e:#}"));
    }
}

#[test]
fn missing_misshaped_and_bad_tensors_are_errors_naming_them() {
    let t = tensors(5);
    let name = "encoder.layer.1.output.dense.bias";
    let without: Vec<_> = t.iter().filter(|x| x.0 != name).cloned().collect();
    let e = load_err(&config(), &without);
    assert!(e.contains(&format!("tensor {name} is missing")), "{e}");

    let mut misshaped = t.clone();
    let q = misshaped.iter_mut().find(|x| x.0 == "encoder.layer.0.attention.self.key.weight").unwrap();
    q.1 = vec![C, C - 1];
    q.2.truncate(C * (C - 1));
    let e = load_err(&config(), &misshaped);
    assert!(e.contains("encoder.layer.0.attention.self.key.weight has shape [8, 7], expected [8, 8]"), "{e}");

    let mut nan = t.clone();
    nan.iter_mut().find(|x| x.0 == "encoder.layer.1.intermediate.dense.weight").unwrap().2[3] = f32::NAN;
    let e = load_err(&config(), &nan);
    assert!(e.contains("transformer.h.1.mlp.c_fc.weight holds NaN"), "{e}");

    // No BERT tensors at all; not a safetensors file; no files.
    let other: Vec<_> = t.iter().map(|(n, s, v)| (format!("model.{n}"), s.clone(), v.clone())).collect();
    assert!(load_err(&config(), &other).contains("not a BERT checkpoint"));
    let dir = tempfile::tempdir().unwrap();
    write_bert(dir.path(), &config(), &t, "");
    std::fs::write(dir.path().join("model.safetensors"), b"garbage").unwrap();
    let e = format!("{:#}", hf_bert::load(dir.path(), 1, None).err().unwrap());
    assert!(e.contains("not a valid safetensors file"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = format!("{:#}", hf_bert::load(empty.path(), 1, None).err().unwrap());
    assert!(e.contains("config.json"), "{e}");
    let e = Embedder::load(empty.path(), 1).err().unwrap().to_string();
    assert!(e.contains("no config.json"), "{e}");

    // An integer weight.
    let mut raw = safetensors_bytes(&t, "", Dtype::F32);
    let tf = lmlab::io::tensors::TensorFile::parse(&raw, "x").unwrap();
    let mut tensors: Vec<RawTensor> = tf
        .st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let dtype = if n == "embeddings.LayerNorm.bias" { Dtype::I32 } else { v.dtype() };
            (n, dtype, v.shape().to_vec(), v.data().to_vec())
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    raw = to_safetensors_raw(&tensors, HashMap::new()).unwrap();
    let e = format!("{:#}", hf_bert::from_parts(&config().to_string(), &raw, 1, None, None, false).err().unwrap());
    assert!(e.contains("embeddings.LayerNorm.bias has dtype I32"), "{e}");
}

#[test]
fn half_precision_checkpoints_load_exactly() {
    let t = tensors(6);
    for dtype in [Dtype::F16, Dtype::BF16] {
        let b = hf_bert::from_parts(&config().to_string(), &safetensors_bytes(&t, "", dtype), 1, None, None, false)
            .unwrap();
        let round = |x: f32| match dtype {
            Dtype::F16 => half::f16::from_f32(x).to_f32(),
            _ => half::bf16::from_f32(x).to_f32(),
        };
        let want: Vec<f32> = get(&t, "encoder.layer.1.intermediate.dense.weight").iter().map(|&x| round(x)).collect();
        assert_eq!(param(&b.model, "transformer.h.1.mlp.c_fc.weight"), &want[..], "{dtype:?}");
    }
}

#[test]
fn unsupported_sentence_transformers_configs_are_errors() {
    let t = tensors(7);
    let dir = tempfile::tempdir().unwrap();
    write_sentence_model(dir.path(), &t, "mean_tokens", true, 8);
    let p = dir.path();
    let err = |p: &Path| Embedder::load(p, 1).err().map(|e| format!("{e:#}")).unwrap_or_default();

    let pool = p.join("1_Pooling/config.json");
    let good = std::fs::read_to_string(&pool).unwrap();
    let mut two: Value = serde_json::from_str(&good).unwrap();
    two["pooling_mode_max_tokens"] = json!(true);
    std::fs::write(&pool, two.to_string()).unwrap();
    assert!(err(p).contains("pooling modes [\"pooling_mode_max_tokens\", \"pooling_mode_mean_tokens\"]"), "{}", err(p));
    let mut wide: Value = serde_json::from_str(&good).unwrap();
    wide["word_embedding_dimension"] = json!(16);
    std::fs::write(&pool, wide.to_string()).unwrap();
    assert!(err(p).contains("word_embedding_dimension 16"), "{}", err(p));
    std::fs::write(&pool, good).unwrap();

    let modules = p.join("modules.json");
    let good = std::fs::read_to_string(&modules).unwrap();
    let mut dense: Value = serde_json::from_str(&good).unwrap();
    dense
        .as_array_mut()
        .unwrap()
        .insert(2, json!({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}));
    std::fs::write(&modules, dense.to_string()).unwrap();
    assert!(err(p).contains("\"Dense\""), "{}", err(p));
    std::fs::write(&modules, good).unwrap();

    std::fs::write(p.join("sentence_bert_config.json"), json!({"max_seq_length": MAX_POS + 1}).to_string()).unwrap();
    assert!(err(p).contains("max_seq_length 11 outside 2..=10"), "{}", err(p));
    std::fs::write(p.join("sentence_bert_config.json"), json!({"max_seq_length": 8}).to_string()).unwrap();
    Embedder::load(p, 1).unwrap();

    // A plain BERT directory (no sentence-transformers files): mean pooling, normalised.
    for f in ["modules.json", "sentence_bert_config.json"] {
        std::fs::remove_file(p.join(f)).unwrap();
    }
    let e = Embedder::load(p, 1).unwrap();
    assert_eq!(
        (e.config().pooling, e.config().normalize, e.config().max_seq_length),
        (PoolingMode::Mean, true, MAX_POS)
    );
}

// ---- fine-tuning an imported BERT (train.init_from, train.freeze) -----------------------------

#[test]
fn imported_bert_fine_tunes_as_a_classifier_with_frozen_embeddings() {
    use lmlab::config::RunConfig;
    use lmlab::io::checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    let t = tensors(3);
    write_bert(&hf, &config(), &t, "bert.");
    std::fs::write(hf.join("tokenizer.json"), tokenizer_json()).unwrap();
    assert!(lmlab::io::hf_bert::is_bert_dir(&hf));

    // `lmlab import --hf`: a checkpoint of task "pretrained" with the WordPiece tokenizer.
    let (model, tok) = lmlab::io::hf_bert::import(&hf, 1).unwrap();
    let pre = dir.path().join("pre");
    checkpoint::save_new(&pre, &model, &tok).unwrap();
    let ck = checkpoint::load(&pre, 1, false).unwrap();
    assert_eq!(ck.tokenizer.kind(), "hf");
    assert_eq!(ck.tokenizer.encode("The CATS sat.").unwrap(), vec![2, 4, 5, 7, 6, 10, 3]);
    assert_eq!(ck.model.params, model.params);
    assert_eq!(ck.run_config.data.task, lmlab::config::Task::Pretrained);

    // A two-class task the tiny vocabulary can state: "cat" sentences against "mat" ones.
    let rows = |n: usize, seed: usize| -> String {
        let mut s = String::from("sentence\tlabel\n");
        for i in 0..n {
            let label = (i * 7 + seed) % 2;
            let key = if label == 1 { "cat" } else { "mat" };
            let filler = ["the", "a", "sat", "on"];
            s += &format!("{} {key} {} .\t{label}\n", filler[(i + seed) % 4], filler[(i * 3 + seed) % 4]);
        }
        s
    };
    std::fs::write(dir.path().join("train.tsv"), rows(120, 0)).unwrap();
    std::fs::write(dir.path().join("test.tsv"), rows(40, 1)).unwrap();
    let run = dir.path().join("run");
    let text = format!(
        r#"
[model]
dropout = 0.0
block_size = 8
pooling = "cls"
[data]
task = "classify"
format = "sst2"
train = "{d}/train.tsv"
test = "{d}/test.tsv"
max_len = 7
[train]
init_from = "{pre}"
freeze = ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.*"]
out_dir = "{run}"
batch_size = 16
max_iters = 60
eval_interval = 60
log_interval = 20
[optim]
learning_rate = 3e-3
warmup_iters = 5
lr_decay_iters = 60
"#,
        d = dir.path().display(),
        pre = pre.display(),
        run = run.display()
    );
    // [model] may change dropout, context and pooling but not the architecture.
    let cfg = RunConfig::from_user_toml_str(&text, &[]).unwrap();
    assert_eq!((cfg.model.n_layer, cfg.model.n_embd, cfg.model.block_size), (LAYERS, C, 8));
    let e = format!("{:#}", RunConfig::from_user_toml_str(&text, &["model.n_layer=3".into()]).unwrap_err());
    assert!(e.contains("model.n_layer = 3") && e.contains("init_from"), "{e}");
    let typo = RunConfig::from_user_toml_str(&text, &["train.freeze=[\"transformer.wte.weights\"]".into()]).unwrap();
    let opts = lmlab::train::TrainOptions { quiet: true, ..Default::default() };
    let e = format!("{:#}", lmlab::train::train(typo, None, &opts).unwrap_err());
    assert!(e.contains("transformer.wte.weights") && e.contains("matches no parameter"), "{e}");

    lmlab::train::train(cfg, None, &opts).unwrap();
    let tuned = checkpoint::load(&run.join("ckpt"), 1, false).unwrap();
    assert_eq!(tuned.tokenizer.kind(), "hf");
    let (a, b) = (&model, &tuned.model);
    let same = |name: &str| param(a, name) == param(b, name);
    // Frozen: bit for bit the imported weights (the position table cut to the first 8 rows).
    assert!(same("transformer.wte.weight") && same("transformer.h.0.attn.c_attn.weight"));
    assert_eq!(param(b, "transformer.wpe.weight"), &param(a, "transformer.wpe.weight")[..8 * C]);
    // Trained: the second block and the new two-class head.
    assert!(!same("transformer.h.1.attn.c_attn.weight") && !same("transformer.h.1.ln_2.weight"));
    assert_eq!(b.layout.get("classifier.weight").unwrap().shape, vec![2, C]);
    let results: Value = serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
    let acc = results["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.9, "test accuracy {acc} on a task decided by one word");
}

// ---- LoRA on an imported BERT ([lora]); predictions (lmlab classify); merge-lora -------------

#[test]
fn imported_bert_trains_lora_adapters_resumes_predicts_and_merges() {
    use lmlab::config::RunConfig;
    use lmlab::io::checkpoint;
    use lmlab::model::transformer::is_lora_tensor;
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    write_bert(&hf, &config(), &tensors(5), "bert.");
    std::fs::write(hf.join("tokenizer.json"), tokenizer_json()).unwrap();
    let (model, tok) = lmlab::io::hf_bert::import(&hf, 1).unwrap();
    let pre = dir.path().join("pre");
    checkpoint::save_new(&pre, &model, &tok).unwrap();
    // TREC-style labels, so that predictions print names: "cat" questions are ANIMAL, "mat" OBJ.
    let rows = |n: usize, seed: usize| -> String {
        // Every pair of filler words occurs with both labels, so only the key word decides.
        (seed..seed + n)
            .map(|i| {
                let (label, key) = if i % 2 == 1 { ("ANIMAL", "cat") } else { ("OBJ", "mat") };
                let filler = ["the", "a", "sat", "on"];
                format!("{label}:x {} {key} {} .\n", filler[(i / 2) % 4], filler[(i / 8) % 4])
            })
            .collect()
    };
    std::fs::write(dir.path().join("train.label"), rows(120, 0)).unwrap();
    std::fs::write(dir.path().join("test.label"), rows(40, 1001)).unwrap();
    let run = dir.path().join("run");
    let text = |iters: usize| {
        format!(
            r#"
[model]
block_size = 8
pooling = "cls"
[data]
task = "classify"
format = "trec"
train = "{d}/train.label"
test = "{d}/test.label"
max_len = 7
[train]
init_from = "{pre}"
out_dir = "{run}"
batch_size = 16
max_iters = {iters}
eval_interval = 30
log_interval = 10
[optim]
learning_rate = 3e-2
warmup_iters = 5
lr_decay_iters = 60
[lora]
rank = 4
alpha = 8
targets = ["c_attn", "c_proj", "transformer.h.*.mlp.c_fc"]
dropout = 0.1
"#,
            d = dir.path().display(),
            pre = pre.display(),
            run = run.display()
        )
    };
    let opts = lmlab::train::TrainOptions { quiet: true, ..Default::default() };
    let bad = RunConfig::from_user_toml_str(&text(30), &["lora.targets=[\"q_proj\"]".into()]).unwrap();
    let e = format!("{:#}", lmlab::train::train(bad, None, &opts).unwrap_err());
    assert!(e.contains("q_proj") && e.contains("matches no linear layer"), "{e}");
    let e = format!("{:#}", RunConfig::from_user_toml_str(&text(30), &["lora.rank=0".into()]).unwrap_err());
    assert!(e.contains("lora.rank"), "{e}");

    // 30 steps, then resumed to 60.
    lmlab::train::train(RunConfig::from_user_toml_str(&text(30), &[]).unwrap(), None, &opts).unwrap();
    let half = checkpoint::load(&run.join("ckpt"), 1, true).unwrap();
    assert_eq!(half.state.step, 30);
    let cfg60 = RunConfig::for_run(None, Some(&run.join("ckpt")), &["train.max_iters=60".into()]).unwrap();
    lmlab::train::train(cfg60, Some(&run.join("ckpt")), &opts).unwrap();
    let tuned = checkpoint::load(&run.join("ckpt"), 1, true).unwrap();
    assert_eq!(tuned.state.step, 60);
    let (a, b) = (&model, &tuned.model);
    // The base is frozen bit for bit; the adapters and the new head trained.
    for t in &a.layout.tensors {
        if t.name.starts_with("transformer.") {
            // (The position table is cut to block_size rows.)
            let tuned = param(b, &t.name);
            assert!(param(a, &t.name)[..tuned.len()] == tuned[..], "{} moved", t.name);
        }
    }
    assert!(param(b, "transformer.h.1.mlp.c_fc.lora_B.weight").iter().any(|&x| x != 0.0));
    assert!(b.layout.get("transformer.h.0.attn.c_proj.lora_A.weight").is_some(), "c_proj names both projections");
    // The checkpoint: adapters in lora.safetensors, the optimizer state for head + adapters only.
    let ck = run.join("ckpt");
    assert!(ck.join("lora.safetensors").is_file());
    let opt = tuned.optimizer.as_ref().unwrap();
    let trainable: usize = b
        .layout
        .tensors
        .iter()
        .filter(|t| is_lora_tensor(&t.name) || t.name.starts_with("classifier."))
        .map(|t| t.numel())
        .sum();
    assert!(opt.buffers.iter().all(|(_, v)| v.len() == trainable), "optimizer state beyond head and adapters");
    let results: Value = serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
    let acc = results["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.9, "test accuracy {acc} with LoRA on a task decided by one word; {results}");

    // Predictions print the label names the checkpoint saved; labels it does not know are refused.
    let test = dir.path().join("test.label");
    let p = lmlab::train::classify::predict_file(&ck, &test, None, 8).unwrap();
    assert_eq!(p.label_names, vec!["ANIMAL", "OBJ"]);
    assert!(p.accuracy().unwrap() >= 0.9 && p.predicted.len() == 40);
    std::fs::write(dir.path().join("odd.label"), "FISH:x the cat .\n").unwrap();
    let e = format!(
        "{:#}",
        lmlab::train::classify::predict_file(&ck, &dir.path().join("odd.label"), None, 8).err().unwrap()
    );
    assert!(e.contains("FISH"), "{e}");

    // merge-lora: a plain checkpoint with the same predictions and logits.
    let merged_dir = dir.path().join("merged");
    assert_eq!(checkpoint::save_merged_lora(&ck, &merged_dir).unwrap(), (4, 8));
    assert!(!merged_dir.join("lora.safetensors").exists());
    let merged = checkpoint::load(&merged_dir, 1, false).unwrap();
    assert!(merged.run_config.lora.is_none() && merged.model.lora().is_none());
    let base_tensors = b.layout.tensors.iter().filter(|t| !is_lora_tensor(&t.name)).count();
    assert_eq!(merged.model.layout.tensors.len(), base_tensors);
    let q = lmlab::train::classify::predict_file(&merged_dir, &test, None, 8).unwrap();
    assert_eq!(q.predicted, p.predicted);
    let logits = |dir: &Path| {
        let mut ck = checkpoint::load(dir, 1, false).unwrap();
        let ids = ck.tokenizer.encode("the cat sat").unwrap();
        ck.model.forward_classify(&ids, None, None, 1, ids.len(), false, 0).unwrap();
        ck.model.logits().to_vec()
    };
    let (l1, l2) = (logits(&ck), logits(&merged_dir));
    assert!(l1.iter().zip(&l2).all(|(x, y)| (x - y).abs() <= 1e-5 * x.abs().max(1.0)), "{l1:?} vs {l2:?}");
    let e = format!("{:#}", checkpoint::save_merged_lora(&merged_dir, &dir.path().join("m2")).unwrap_err());
    assert!(e.contains("not a LoRA checkpoint"), "{e}");

    // The commands: classify → eval classify, and merge-lora.
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (pred, gold) = (s(&dir.path().join("p.txt")), s(&dir.path().join("g.txt")));
    let out = common::ok(common::lmlab(&[
        "classify",
        "--checkpoint",
        &s(&ck),
        "--input",
        &s(&test),
        "--output",
        &pred,
        "--gold-output",
        &gold,
        "--json",
    ]));
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["examples"], 40);
    let lines = std::fs::read_to_string(&pred).unwrap();
    assert_eq!(lines.lines().collect::<Vec<_>>(), p.predicted.iter().map(String::as_str).collect::<Vec<_>>());
    let eval: Value = serde_json::from_str(&common::ok(common::lmlab(&[
        "eval", "classify", "--gold", &gold, "--pred", &pred, "--json",
    ])))
    .unwrap();
    let acc = eval["runs"][0]["metrics"]["accuracy"].as_f64().unwrap();
    assert!((acc - p.accuracy().unwrap()).abs() < 1e-12, "{eval}");
    let merged2 = s(&dir.path().join("merged2"));
    let said = common::ok(common::lmlab(&["merge-lora", "--checkpoint", &s(&ck), "--out", &merged2]));
    assert!(said.contains("rank-4 adapters of 8 linear layers"), "{said}");
}
