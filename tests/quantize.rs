//! `lmlab quantize` on whole models: every linear layer of a decoder runs on quantized weights,
//! the logits stay close to the float model's, a quantized checkpoint reloads to the same
//! logits bit for bit and is smaller on disk, training a quantized model is refused, and a
//! corrupt `quant.safetensors` is a clear error. The kernels themselves are checked in
//! tests/quant_kernels.rs.

mod common;
use common::lmlab_text as lmlab;
use lmlab::compress::gptq::rtn;
use lmlab::compress::quantize::{
    calibration_windows, linear_weights, quantize_model, quantize_model_gptq, KeepFloat, Scheme,
};
use lmlab::config::RunConfig;
use lmlab::data::{CharTokenizer, Tokenizer};
use lmlab::io::checkpoint;
use lmlab::kernels::quant::{QuantMatrix, QuantType};
use lmlab::model::transformer::{ModelConfig, Transformer};
use std::path::Path;

const TEXT: &str = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll: Speak, speak.\n";

fn config(vocab: usize, tie: bool) -> ModelConfig {
    ModelConfig {
        vocab_size: vocab,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 64,
        tie_embeddings: tie,
        ..ModelConfig::default()
    }
}

fn model(tie: bool) -> (Transformer, Tokenizer) {
    let tok = CharTokenizer::from_corpus(TEXT).unwrap();
    let mut m = Transformer::new_inference(config(tok.vocab_size(), tie), 2).unwrap();
    m.init(7);
    (m, Tokenizer::Char(tok))
}

fn logits(m: &mut Transformer, tok: &Tokenizer) -> Vec<f32> {
    let ids = tok.encode(&TEXT[..16]).unwrap();
    m.forward_lm(&ids, None, 1, 16, false, 0).unwrap();
    m.logits().to_vec()
}

/// max |a − b| / max |b|
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn every_scheme_quantizes_every_linear_layer_and_stays_close() {
    for (scheme, tol) in
        [("bf16", 0.01), ("int8", 0.02), ("w8a8", 0.02), ("q8_0", 0.02), ("q4_0", 0.25), ("int4-g32", 0.25)]
    {
        for tie in [true, false] {
            let (mut m, tok) = model(tie);
            let want = logits(&mut m, &tok);
            let names = quantize_model(&mut m, Scheme::parse(scheme).unwrap(), KeepFloat::default()).unwrap();
            // 2 layers × (c_attn, attn.c_proj, c_fc, mlp.c_proj), plus lm_head when untied.
            assert_eq!(names.len(), 8 + usize::from(!tie), "{scheme} tie={tie}: {names:?}");
            assert_eq!(m.quantized().unwrap().len(), names.len());
            let got = logits(&mut m, &tok);
            let err = rel_err(&got, &want);
            assert!(err > 0.0 && err < tol, "{scheme} tie={tie}: relative logit error {err}");
        }
    }
}

#[test]
fn keep_output_leaves_the_head_in_f32() {
    let (m, _) = model(false);
    let all = linear_weights(&m, KeepFloat::default());
    let kept = linear_weights(&m, KeepFloat { output: true });
    assert!(all.contains(&"lm_head.weight".to_string()));
    assert_eq!(kept.len() + 1, all.len());
    assert!(!kept.contains(&"lm_head.weight".to_string()));
}

#[test]
fn quantized_checkpoint_reloads_bit_identical_and_is_smaller() {
    let dir = tempfile::tempdir().unwrap();
    let (float_dir, q_dir) = (dir.path().join("f32"), dir.path().join("q"));
    let (m0, tok) = model(false);
    checkpoint::save_new(&float_dir, &m0, &tok).unwrap();
    let run = RunConfig { model: m0.config.clone(), ..RunConfig::default() };
    let schemes =
        [("bf16", QuantType::Bf16), ("int8", QuantType::Int8), ("w8a8", QuantType::W8A8), ("q8_0", QuantType::Q8_0)];
    for (scheme, ty) in schemes {
        let (mut m, _) = model(false);
        quantize_model(&mut m, Scheme::parse(scheme).unwrap(), KeepFloat::default()).unwrap();
        let want = logits(&mut m, &tok);
        checkpoint::save_quantized(&q_dir, &m, &run, &tok, scheme).unwrap();
        let mut back = checkpoint::load_inference(&q_dir, 2).unwrap();
        let q = back.model.quantized().unwrap();
        assert_eq!(q.len(), 9, "{scheme}");
        assert!(q.iter().all(|(_, m)| m.ty == ty), "{scheme}: every weight comes back as {ty:?}");
        let got = logits(&mut back.model, &back.tokenizer);
        assert_eq!(
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "{scheme}"
        );
    }
    // The float checkpoint also holds the optimizer's two moments; compare the weights only.
    let size = |d: &Path, f: &str| std::fs::metadata(d.join(f)).unwrap().len();
    let q_bytes = size(&q_dir, "model.safetensors") + size(&q_dir, "quant.safetensors");
    assert!(q_bytes * 2 < size(&float_dir, "model.safetensors"), "{q_bytes} bytes");
    // No optimizer state: training is refused, naming why.
    let err = checkpoint::load(&q_dir, 2, true).err().unwrap().to_string();
    assert!(err.contains("quantized checkpoint"), "{err}");
    let mut trainable = checkpoint::load(&q_dir, 2, false).unwrap();
    let ids = tok.encode(&TEXT[..16]).unwrap();
    let err = trainable.model.forward_lm(&ids, None, 1, 16, true, 0).err().unwrap().to_string();
    assert!(err.contains("inference only"), "{err}");
}

#[test]
fn corrupt_quant_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut m, tok) = model(true);
    let run = RunConfig { model: m.config.clone(), ..RunConfig::default() };
    quantize_model(&mut m, Scheme::Int8, KeepFloat::default()).unwrap();
    checkpoint::save_quantized(dir.path(), &m, &run, &tok, "int8").unwrap();
    let f = dir.path().join("quant.safetensors");
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&f, &bytes).unwrap();
    let err = format!("{:#}", checkpoint::load_inference(dir.path(), 1).err().unwrap());
    assert!(err.contains("quant.safetensors") && err.contains("corrupted"), "{err}");
}

#[test]
fn bad_schemes_and_shapes_are_errors() {
    assert!(Scheme::parse("int5").is_err());
    assert!(Scheme::parse("int4-g0").is_err());
    assert_eq!(Scheme::parse("int4-g64").unwrap(), Scheme::Int4 { group: 64 });
    // n_embd 48 is not a multiple of Q8_0's block of 32: only the feed-forward outputs (192
    // inputs) are quantized, the other weights stay f32.
    let tok = CharTokenizer::from_corpus(TEXT).unwrap();
    let cfg = ModelConfig { n_embd: 48, ..config(tok.vocab_size(), true) };
    let mut m = Transformer::new_inference(cfg.clone(), 1).unwrap();
    let names = quantize_model(&mut m, Scheme::Q8_0, KeepFloat::default()).unwrap();
    assert!(!names.is_empty() && names.iter().all(|n| n.ends_with("mlp.c_proj.weight")), "{names:?}");
    assert_eq!(m.quantized().unwrap().len(), names.len());
    // Groups of 128 fit no weight: an error naming them.
    let mut m = Transformer::new_inference(cfg, 1).unwrap();
    let err = format!("{:#}", quantize_model(&mut m, Scheme::Int4 { group: 128 }, KeepFloat::default()).unwrap_err());
    assert!(err.contains("no linear weight") && err.contains("transformer.h.0.attn.c_attn.weight"), "{err}");
}

#[test]
fn cli_quantize_info_sample_and_eval() {
    let dir = tempfile::tempdir().unwrap();
    let (float_dir, q_dir) = (dir.path().join("f32"), dir.path().join("q"));
    let (m, tok) = model(false);
    checkpoint::save_new(&float_dir, &m, &tok).unwrap();
    let (f, q) = (float_dir.to_str().unwrap(), q_dir.to_str().unwrap());
    // `info` names each weight's type as the scheme does; q4_0 (last) is sampled and evaluated.
    for scheme in ["bf16", "int8", "w8a8", "q4_0"] {
        let (ok, out, err) = lmlab(&["quantize", "--checkpoint", f, "--scheme", scheme, "--out", q]);
        assert!(ok, "{out}{err}");
        assert!(out.contains(&format!("9 linear weights as {scheme}")), "{out}");
        let (ok, out, err) = lmlab(&["info", q, "--json"]);
        assert!(ok, "{err}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        let types: Vec<&str> = j["tensors"].as_array().unwrap().iter().map(|t| t["type"].as_str().unwrap()).collect();
        assert_eq!(types.iter().filter(|t| **t == scheme).count(), 9, "{types:?}");
    }
    let (ok, out, err) =
        lmlab(&["sample", "--checkpoint", q, "--prompt", "First", "--max-new-tokens", "20", "--seed", "1"]);
    assert!(ok && out.starts_with("First"), "{out}{err}");
    let corpus = dir.path().join("text.txt");
    std::fs::write(&corpus, TEXT.repeat(3)).unwrap();
    let (ok, out, err) = lmlab(&["eval", "lm", "--checkpoint", q, "--data", corpus.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = lmlab(&["quantize", "--checkpoint", f, "--scheme", "int9", "--out", q]);
    assert!(!ok && err.contains("unknown quantization scheme"), "{err}");
}

#[test]
fn kernel_int4_and_gptq_quantizer_round_to_nearest_agree() {
    // Two implementations of 4-bit asymmetric round-to-nearest, the kernels' Int4 (f32) and
    // GPTQ's quantizer (f64), on every linear weight: the same codes and zero points, scales
    // equal to f32 rounding.
    let (m, _) = model(false);
    for name in linear_weights(&m, KeepFloat::default()) {
        let t = m.layout.get(&name).unwrap();
        let (rows, cols, w) = (t.shape[0], t.shape[1], &m.params[t.range()]);
        let kernel = QuantMatrix::quantize(w, rows, cols, QuantType::Int4 { group: 32 }).unwrap();
        let q = rtn(w, rows, cols, 4, 32).unwrap();
        let zeros: Vec<u8> = q.zero.iter().map(|&z| z as u8).collect();
        let via_gptq = QuantMatrix::from_int4_codes(rows, cols, 32, &q.codes, q.scale.clone(), zeros).unwrap();
        assert_eq!(kernel.data, via_gptq.data, "{name}: codes");
        assert_eq!(kernel.zeros, via_gptq.zeros, "{name}: zero points");
        assert!(rel_err(&kernel.scales, &via_gptq.scales) < 1e-6, "{name}: scales");
    }
}

#[test]
fn gptq_on_the_model_beats_round_to_nearest() {
    let (float, tok) = model(false);
    let text = TEXT.repeat(8);
    let tokens = tok.encode(&text).unwrap();
    let windows = calibration_windows(&tokens, 16, 16);
    assert_eq!(windows.len(), 16);
    let mut f = float;
    let want: Vec<Vec<f32>> = windows
        .iter()
        .map(|w| {
            f.forward_lm(w, None, 1, 16, false, 0).unwrap();
            f.logits().to_vec()
        })
        .collect();
    let err = |m: &mut Transformer| -> f64 {
        windows
            .iter()
            .zip(&want)
            .map(|(w, y)| {
                m.forward_lm(w, None, 1, 16, false, 0).unwrap();
                m.logits().iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>()
            })
            .sum()
    };
    for bits in [3, 4] {
        let (mut rtn, _) = model(false);
        let (mut gptq, _) = model(false);
        let keep = KeepFloat::default();
        quantize_model(&mut rtn, Scheme::parse(&format!("rtn{bits}-g32")).unwrap(), keep).unwrap();
        let names =
            quantize_model_gptq(&mut gptq, Scheme::parse(&format!("gptq{bits}-g32")).unwrap(), keep, &windows).unwrap();
        assert_eq!(names.len(), 9);
        let (e_rtn, e_gptq) = (err(&mut rtn), err(&mut gptq));
        assert!(e_gptq < e_rtn, "{bits} bits: GPTQ squared logit error {e_gptq} ≥ RTN's {e_rtn}");
        let (mut act, _) = model(false);
        quantize_model_gptq(&mut act, Scheme::parse(&format!("gptq{bits}-g32-act")).unwrap(), keep, &windows).unwrap();
        let q = act.quantized().unwrap();
        assert!(q.iter().all(|(_, m)| m.perm.is_some()), "{bits} bits: act-order keeps every column order");
        let e_act = err(&mut act);
        assert!(e_act < e_rtn, "{bits} bits: GPTQ act-order squared logit error {e_act} ≥ RTN's {e_rtn}");
    }
    // GPTQ without calibration text is an error, not a silent RTN.
    let (mut m, _) = model(false);
    let err = quantize_model(&mut m, Scheme::parse("gptq4-g32").unwrap(), KeepFloat::default()).err().unwrap();
    assert!(err.to_string().contains("calibration"), "{err}");
}

/// GPTQ on an encoder (as `lmlab embed --quantize gptq4-gG --calib` runs it): calibration
/// passes through `forward_classify`, every block's weights quantized, and the hidden states
/// closer to the float model's than round to nearest's.
#[test]
fn gptq_calibrates_an_encoder() {
    use lmlab::compress::quantize::quantize_model_gptq_with;
    use lmlab::model::transformer::Arch;
    let cfg = ModelConfig { arch: Arch::Encoder, num_classes: 3, ..config(40, true) };
    let seqs: Vec<Vec<u32>> = (0..24u32).map(|s| (0..16).map(|i| (i * 7 + s * 3) % 40).collect()).collect();
    let hidden = |m: &mut Transformer| -> Vec<Vec<f32>> {
        seqs.iter()
            .map(|s| {
                m.forward_classify(s, None, None, 1, s.len(), false, 0).unwrap();
                m.hidden().to_vec()
            })
            .collect()
    };
    let model = || {
        let mut m = Transformer::new_inference(cfg.clone(), 1).unwrap();
        m.init(8);
        m
    };
    let want = hidden(&mut model());
    let err = |m: &mut Transformer| -> f64 {
        hidden(m).iter().flatten().zip(want.iter().flatten()).map(|(a, b)| ((a - b) as f64).powi(2)).sum()
    };
    let mut rtn = model();
    quantize_model(&mut rtn, Scheme::parse("rtn4-g32").unwrap(), KeepFloat::default()).unwrap();
    let mut gptq = model();
    let names = quantize_model_gptq_with(&mut gptq, Scheme::parse("gptq4-g32").unwrap(), KeepFloat::default(), |m| {
        seqs.iter().try_for_each(|s| m.forward_classify(s, None, None, 1, s.len(), false, 0).map(|_| ()))
    })
    .unwrap();
    assert_eq!(names.len(), 8, "{names:?}");
    let (e_rtn, e_gptq) = (err(&mut rtn), err(&mut gptq));
    assert!(e_gptq < e_rtn, "GPTQ squared hidden-state error {e_gptq} ≥ RTN's {e_rtn}");
    // Calibration passes that reach no layer are an error, not a GPTQ on an empty Hessian.
    let err =
        quantize_model_gptq_with(&mut model(), Scheme::parse("gptq4-g32").unwrap(), KeepFloat::default(), |_| Ok(()))
            .err()
            .unwrap();
    assert!(err.to_string().contains("calibration"), "{err}");
}

#[test]
fn encoder_decoder_and_encoder_classifier_run_quantized() {
    use lmlab::model::transformer::Arch;
    // Encoder-decoder: self-attention, cross-attention (c_q, c_kv) and MLPs of both stacks.
    let cfg = ModelConfig { arch: Arch::EncoderDecoder, ..config(40, true) };
    let mut m = Transformer::new_inference(cfg, 1).unwrap();
    m.init(5);
    let (src, tgt): (Vec<u32>, Vec<u32>) = ((0..12).map(|i| i % 40).collect(), (3..13).collect());
    let run = |m: &mut Transformer| {
        m.forward_seq2seq(&src, None, &tgt, None, 1, 12, 10, false, 0).unwrap();
        m.logits().to_vec()
    };
    let want = run(&mut m);
    let names = quantize_model(&mut m, Scheme::Q8_0, KeepFloat::default()).unwrap();
    assert!(names.iter().any(|n| n.ends_with("cross_attn.c_kv.weight")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("encoder.")) && names.iter().any(|n| n.starts_with("decoder.")));
    let err = rel_err(&run(&mut m), &want);
    assert!(err > 0.0 && err < 0.02, "encoder-decoder q8_0: relative logit error {err}");
    // Encoder classifier: its blocks quantized, the classifier head kept in f32.
    let cfg = ModelConfig { arch: Arch::Encoder, num_classes: 3, ..config(40, true) };
    let mut m = Transformer::new_inference(cfg, 1).unwrap();
    m.init(6);
    let run = |m: &mut Transformer| {
        m.forward_classify(&src, None, None, 1, 12, false, 0).unwrap();
        m.logits().to_vec()
    };
    let want = run(&mut m);
    let names = quantize_model(&mut m, Scheme::Int8, KeepFloat::default()).unwrap();
    assert_eq!(names.len(), 8, "{names:?}");
    let err = rel_err(&run(&mut m), &want);
    assert!(err > 0.0 && err < 0.05, "encoder int8: relative logit error {err}");
}

#[test]
fn stored_parts_are_checked_against_type_and_shape() {
    let w: Vec<f32> = (0..4 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 100.0).collect();
    let types = [
        QuantType::Q8_0,
        QuantType::Q4_0,
        QuantType::Bf16,
        QuantType::Int8,
        QuantType::W8A8,
        QuantType::Int4 { group: 32 },
    ];
    for ty in types {
        let m = QuantMatrix::quantize(&w, 4, 64, ty).unwrap();
        // What a checkpoint stores (row-major codes, also for Int8's in-memory panels).
        let data = m.stored_data().into_owned();
        let back = QuantMatrix::from_parts(ty, 4, 64, data.clone(), m.scales.clone(), m.zeros.clone()).unwrap();
        assert_eq!((back.data, back.scales, back.zeros), (m.data.clone(), m.scales.clone(), m.zeros.clone()));
        let short = data[..data.len() - 1].to_vec();
        let err = QuantMatrix::from_parts(ty, 4, 64, short, m.scales.clone(), m.zeros.clone()).err().unwrap();
        assert!(err.to_string().contains("bytes of data"), "{ty:?}: {err}");
        let err = QuantMatrix::from_parts(ty, 5, 64, data, m.scales.clone(), m.zeros.clone()).err();
        assert!(err.is_some(), "{ty:?}: a wrong row count is an error");
    }
    let m = QuantMatrix::quantize(&w, 4, 64, QuantType::Int4 { group: 32 }).unwrap();
    let mut zeros = m.zeros.clone();
    zeros[0] = 16;
    let err = QuantMatrix::from_parts(m.ty, 4, 64, m.data.clone(), m.scales.clone(), zeros).err().unwrap();
    assert!(err.to_string().contains("zero point"), "{err}");
    let mut scales = m.scales.clone();
    scales[1] = f32::NAN;
    let err = QuantMatrix::from_parts(m.ty, 4, 64, m.data, scales, m.zeros).err().unwrap();
    assert!(err.to_string().contains("NaN"), "{err}");
}

/// `quant.safetensors` written before int8 weight-only existed (format 1: no `format` key)
/// named W8A8 weights `int8`; they still load as W8A8. A newer format is a clear error.
#[test]
fn format_1_int8_loads_as_w8a8() {
    use lmlab::io::quant_checkpoint::{decode, encode};
    let w: Vec<f32> = (0..4 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 100.0).collect();
    let m = QuantMatrix::quantize(&w, 4, 64, QuantType::W8A8).unwrap();
    let bytes = encode("w8a8", [("w", &m)].into_iter()).unwrap();
    // Rewrite the header as format 1 did, padded with spaces to its old length (the tensor
    // offsets are relative to the header's end).
    let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + hlen]).unwrap();
    let patch = |from: &str, to: &str| {
        assert!(header.contains(from), "{header}");
        let h = header.replace(from, to);
        let mut out = bytes[..8].to_vec();
        out.extend_from_slice(format!("{h:<hlen$}").as_bytes());
        out.extend_from_slice(&bytes[8 + hlen..]);
        out
    };
    let old = patch(r#"\"format\":2,"#, "");
    // Scheme and type: `"scheme":"int8"` and `"type":"int8"`, as `lmlab quantize --scheme int8`
    // wrote them.
    let old = {
        let h = std::str::from_utf8(&old[8..8 + hlen]).unwrap().replace(r#"\"w8a8\""#, r#"\"int8\""#);
        [&old[..8], h.as_bytes(), &old[8 + hlen..]].concat()
    };
    let (scheme, mats) = decode(&old).unwrap();
    assert_eq!(scheme, "int8");
    assert_eq!(mats[0].1.ty, QuantType::W8A8);
    assert_eq!((&mats[0].1.data, &mats[0].1.scales), (&m.data, &m.scales));
    // The same name in format 2 is int8 weight-only.
    let new = patch(r#"\"type\":\"w8a8\""#, r#"\"type\":\"int8\""#);
    assert_eq!(decode(&new).unwrap().1[0].1.ty, QuantType::Int8);
    let err = decode(&patch(r#"\"format\":2"#, r#"\"format\":4"#)).err().unwrap();
    assert!(err.to_string().contains("format 4"), "{err}");
}

/// GPTQ with act-order on a whole model: the permuted 4-bit weights run what their dequantized
/// values say (the float model holding those values gives nearly the same logits; a wrong
/// column order would not), and the checkpoint keeps the order: format 3, the same logits bit
/// for bit after reloading. An order that is not a permutation is refused on load.
#[test]
fn gptq_act_order_runs_and_reloads_its_column_order() {
    let (mut m, tok) = model(false);
    let tokens = tok.encode(&TEXT.repeat(8)).unwrap();
    let windows = calibration_windows(&tokens, 16, 16);
    let scheme = "gptq4-g32-act";
    quantize_model_gptq(&mut m, Scheme::parse(scheme).unwrap(), KeepFloat::default(), &windows).unwrap();
    let (nonidentity, total) = m
        .quantized()
        .unwrap()
        .iter()
        .map(|(_, q)| q.perm.as_ref().unwrap().iter().enumerate().filter(|(k, &c)| *k != c as usize).count())
        .fold((0, 0), |(a, t), n| (a + n, t + 1));
    assert!(nonidentity > 0 && total == 9, "the column orders are not all the identity");
    let want = logits(&mut m, &tok);
    // The same values in f32: the quantized run differs only by its int8 activations.
    let mut float = Transformer::new_inference(m.config.clone(), 2).unwrap();
    float.params.copy_from_slice(&m.params);
    let err = rel_err(&want, &logits(&mut float, &tok));
    assert!(err < 0.02, "act-order model vs its dequantized values: relative logit error {err}");

    let dir = tempfile::tempdir().unwrap();
    let run = RunConfig { model: m.config.clone(), ..RunConfig::default() };
    checkpoint::save_quantized(dir.path(), &m, &run, &tok, scheme).unwrap();
    let mut back = checkpoint::load_inference(dir.path(), 2).unwrap();
    assert!(back.model.quantized().unwrap().iter().all(|(_, q)| q.perm.is_some()));
    let got = logits(&mut back.model, &back.tokenizer);
    assert_eq!(
        got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    let bytes = std::fs::read(dir.path().join("quant.safetensors")).unwrap();
    let (_, mats) = lmlab::io::quant_checkpoint::decode(&bytes).unwrap();
    assert_eq!(mats.len(), 9);
    let text = String::from_utf8_lossy(&bytes[..2000.min(bytes.len())]).to_string();
    assert!(text.contains(r#"\"format\":3"#), "format 3 in the index: {text}");

    // A column order with a repeated entry is refused, naming the tensor.
    let mut mats = mats;
    let (name, q) = &mut mats[0];
    q.perm.as_mut().unwrap()[1] = q.perm.as_ref().unwrap()[0];
    let name = name.clone();
    let bad = lmlab::io::quant_checkpoint::encode(scheme, mats.iter().map(|(n, q)| (n.as_str(), q))).unwrap();
    let err = format!("{:#}", lmlab::io::quant_checkpoint::decode(&bad).err().unwrap());
    assert!(err.contains(&name) && err.contains("not a permutation"), "{err}");
    assert!(Scheme::parse("rtn4-g32-act").is_err());
}
