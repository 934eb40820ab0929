//! LoRA adapters (`[lora]`, `Transformer::add_lora`) against a PyTorch reference
//! (scripts/make_lora_fixtures.py: a tiny nanoGPT with the explicit LoRA formula in float64):
//! logits, loss, the adapters' gradients and the input gradient; the frozen base's weight
//! gradients skipped; merging; and the errors of a bad configuration.

mod common;
use common::assert_close;
use common::gpt_fixture::{config_of, gpt_from_fixture, tokens, GptFixture, RTOL};
use lmlab::kernels::quant::{QuantMatrix, QuantType};
use lmlab::model::transformer::{is_lora_tensor, AttentionKind, LoraConfig, Transformer};

const FIXTURE: &str = "lora_gpt_tiny.safetensors";

fn lora_config(tf: &lmlab::io::tensors::TensorFile) -> LoraConfig {
    let cfg = config_of(tf);
    LoraConfig {
        rank: cfg["rank"].as_u64().unwrap() as usize,
        alpha: cfg["alpha"].as_f64().unwrap() as f32,
        targets: cfg["targets"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect(),
        dropout: 0.0,
    }
}

/// The fixture's base model with its adapters (A and B as the reference drew them).
fn adapted(tf: &lmlab::io::tensors::TensorFile) -> Transformer {
    let mut m = gpt_from_fixture(tf, AttentionKind::Dense);
    m.add_lora(&lora_config(tf), 0).unwrap();
    let adapters: Vec<_> = m.layout.tensors.iter().filter(|t| is_lora_tensor(&t.name)).cloned().collect();
    // "c_attn" in both blocks, and the one named feed-forward projection: 3 layers.
    assert_eq!(adapters.len(), 6);
    for t in adapters {
        let (shape, vals) = tf.read_any(&format!("lora.{}", t.name)).unwrap();
        assert_eq!(shape, t.shape, "{}", t.name);
        m.params[t.range()].iter_mut().zip(vals).for_each(|(d, v)| *d = v as f32);
    }
    m
}

fn logits(m: &mut Transformer, idx: &[u32], b: usize, t: usize) -> Vec<f32> {
    m.forward_lm(idx, None, b, t, false, 0).unwrap();
    m.logits().to_vec()
}

#[test]
fn lora_matches_the_pytorch_reference_in_logits_loss_and_gradients() {
    let fx = GptFixture::load(FIXTURE);
    let tf = fx.file();
    let mut m = adapted(&tf);
    m.set_capture_input_grad(true).unwrap();
    let (idx, tg, b, t) = tokens(&tf, "");
    m.zero_grad();
    let loss = m.forward_lm(&idx, Some(&tg), b, t, true, 0).unwrap().unwrap();
    assert_close("logits", m.logits(), &tf.read_any("logits").unwrap().1, RTOL);
    assert_close("loss", &[loss], &tf.read_any("loss").unwrap().1, RTOL);
    m.backward().unwrap();
    for tv in m.layout.tensors.clone().iter().filter(|t| is_lora_tensor(&t.name)) {
        let (_, want) = tf.read_any(&format!("grad.{}", tv.name)).unwrap();
        assert_close(&format!("grad.{}", tv.name), &m.grads[tv.range()], &want, RTOL);
    }
    assert_close("input gradient", m.input_grad().unwrap(), &tf.read_any("input_grad").unwrap().1, RTOL);
    // The frozen base's weight-gradient GEMMs are skipped: those gradients stay exactly zero.
    for name in
        ["transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_fc.weight", "transformer.h.0.attn.c_proj.bias"]
    {
        let r = m.layout.get(name).unwrap().range();
        assert!(m.grads[r].iter().all(|&g| g == 0.0), "{name} is frozen but got a gradient");
    }
    // Only the adapters train (a decoder has no classifier head to save): 6 tensors.
    let window = m.lora_window().unwrap();
    let trainable: usize = m.layout.tensors.iter().filter(|t| is_lora_tensor(&t.name)).map(|t| t.numel()).sum();
    assert_eq!((window.len(), m.trainable_params()), (trainable, trainable));
}

#[test]
fn fresh_adapters_leave_the_model_unchanged_and_merging_keeps_its_outputs() {
    let fx = GptFixture::load(FIXTURE);
    let tf = fx.file();
    let (idx, _, b, t) = tokens(&tf, "");
    let mut base = gpt_from_fixture(&tf, AttentionKind::Dense);
    let want = logits(&mut base, &idx, b, t);
    // B starts at zero: the adapted model computes the base model's function, bit for bit.
    let mut fresh = gpt_from_fixture(&tf, AttentionKind::Dense);
    fresh.add_lora(&lora_config(&tf), 7).unwrap();
    let a = fresh.layout.get("transformer.h.0.attn.c_attn.lora_A.weight").unwrap().clone();
    let bound = 1.0 / (a.shape[1] as f32).sqrt();
    let av = &fresh.params[a.range()];
    assert!(av.iter().all(|x| x.abs() <= bound) && av.iter().any(|x| x.abs() > bound / 2.0), "A ~ U(±1/√in)");
    assert_eq!(logits(&mut fresh, &idx, b, t), want);

    // W' = W + (alpha/r)·B·A gives the adapted model's logits without adapters.
    let mut m = adapted(&tf);
    let adapted_logits = logits(&mut m, &idx, b, t);
    let n_base = base.layout.tensors.len();
    m.merge_lora().unwrap();
    assert!(m.lora().is_none() && m.frozen().is_empty());
    assert_eq!((m.layout.tensors.len(), m.params.len()), (n_base, base.params.len()));
    let merged = logits(&mut m, &idx, b, t);
    let want64: Vec<f64> = adapted_logits.iter().map(|&x| x as f64).collect();
    assert_close("merged logits", &merged, &want64, 1e-5);
    assert!(merged != want, "the adapters changed the model");
}

#[test]
fn bad_lora_configs_are_clear_errors() {
    let fx = GptFixture::load(FIXTURE);
    let tf = fx.file();
    let good = lora_config(&tf);
    let err = |cfg: LoraConfig, m: &mut Transformer| format!("{:#}", m.add_lora(&cfg, 0).unwrap_err());
    let mut m = gpt_from_fixture(&tf, AttentionKind::Dense);
    let e = err(LoraConfig { rank: 0, ..good.clone() }, &mut m);
    assert!(e.contains("lora.rank"), "{e}");
    let e = err(LoraConfig { targets: vec!["c_attn".into(), "q_proj".into()], ..good.clone() }, &mut m);
    assert!(e.contains("\"q_proj\"") && e.contains("matches no linear layer"), "{e}");
    let e = err(LoraConfig { targets: vec!["transformer.h.9.*".into()], ..good.clone() }, &mut m);
    assert!(e.contains("transformer.h.9.*"), "{e}");
    let e = err(LoraConfig { dropout: 1.0, ..good.clone() }, &mut m);
    assert!(e.contains("lora.dropout"), "{e}");
    assert!(m.lora().is_none(), "a refused config leaves the model alone");
    // A quantized model: refused, and a LoRA model cannot be quantized before merging.
    let name = "transformer.h.0.mlp.c_fc.weight";
    let t = m.layout.get(name).unwrap().clone();
    let q = QuantMatrix::quantize(&m.params[t.range()], t.shape[0], t.shape[1], QuantType::Int8).unwrap();
    let mut lora = gpt_from_fixture(&tf, AttentionKind::Dense);
    lora.add_lora(&good, 0).unwrap();
    let e = format!("{:#}", lora.set_quantized(name, q.clone()).unwrap_err());
    assert!(e.contains("merge"), "{e}");
    m.set_quantized(name, q).unwrap();
    let e = err(good, &mut m);
    assert!(e.contains("quantized"), "{e}");
}

/// The adapters' gradients of the whole model against central differences of its loss.
#[test]
fn adapter_gradients_match_finite_differences_through_the_model() {
    let fx = GptFixture::load(FIXTURE);
    let tf = fx.file();
    let mut m = adapted(&tf);
    let (idx, tg, b, t) = tokens(&tf, "");
    m.zero_grad();
    m.forward_lm(&idx, Some(&tg), b, t, true, 0).unwrap();
    m.backward().unwrap();
    for name in ["transformer.h.0.attn.c_attn.lora_A.weight", "transformer.h.1.mlp.c_proj.lora_B.weight"] {
        let r = m.layout.get(name).unwrap().range();
        let (x, g) = (m.params[r.clone()].to_vec(), m.grads[r.clone()].to_vec());
        let mut probe = adapted(&tf);
        common::check(name, &x, &g, |xp| {
            probe.params[r.clone()].copy_from_slice(xp);
            probe.forward_lm(&idx, Some(&tg), b, t, false, 0).unwrap().unwrap() as f64
        });
    }
}
