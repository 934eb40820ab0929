//! Post-training quantization of a model's linear layers (`lmlab quantize`).
//!
//! Every linear weight (`c_attn`, `c_q`, `c_kv`, `c_proj`, `c_fc`, and an untied `lm_head`)
//! is quantized row by row (rows = output channels) with one of the schemes below and
//! installed with [`Transformer::set_quantized`]; embeddings, norms and biases stay f32. A
//! head tied to the token embedding stays f32 too: its weight is also the embedding table.

use super::gptq::{gptq, rtn as gptq_rtn, GptqConfig, HessianAccumulator};
use crate::kernels::quant::{QuantMatrix, QuantType};
use crate::model::transformer::{Arch, Transformer};
use anyhow::{bail, ensure, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What `lmlab quantize --scheme` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// bf16 weights (round to nearest even), activations f32: half the bytes, nearly lossless.
    Bf16,
    /// int8 per output channel, symmetric; activations stay f32 (weight-only).
    Int8,
    /// The same int8 weights; activations quantized to int8 per token at run time (W8A8).
    W8A8,
    /// GGML's Q8_0: blocks of 32 weights with an f16 scale.
    Q8_0,
    /// GGML's Q4_0: blocks of 32 4-bit weights with an f16 scale.
    Q4_0,
    /// 4-bit round-to-nearest, asymmetric, one scale and zero point per `group` columns.
    Int4 { group: usize },
    /// GPTQ (or, with `rtn`, plain round-to-nearest through the same quantizer) at `bits`
    /// (3 or 4; stored as 4-bit codes) with groups of `group` columns; GPTQ needs calibration
    /// text ([`quantize_model_gptq`]). `act_order`: GPTQ processes the columns by decreasing
    /// Hessian diagonal and groups them in that order; the matrix keeps the column order
    /// ([`QuantMatrix::with_perm`]).
    Gptq { bits: u32, group: usize, rtn: bool, act_order: bool },
}

impl Scheme {
    /// Parses `bf16`, `int8` (weight-only), `w8a8`, `q8_0`, `q4_0`, `int4` (group 32), `int4-gG`, `gptqB-gG`,
    /// `gptqB-gG-act` (act-order) or `rtnB-gG` (B = 3 or 4).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            anyhow::anyhow!(
                "unknown quantization scheme {s:?}: expected bf16, int8, w8a8, q8_0, q4_0, int4, int4-gG, \
                 gptq4-gG, gptq3-gG (either with -act for act-order), rtn4-gG or rtn3-gG \
                 (G: a multiple of 32 dividing the layer widths)"
            )
        };
        let group = |g: &str| g.parse::<usize>().ok().filter(|g| *g > 0).ok_or_else(bad);
        Ok(match s {
            "bf16" => Scheme::Bf16,
            "int8" => Scheme::Int8,
            "w8a8" => Scheme::W8A8,
            "q8_0" => Scheme::Q8_0,
            "q4_0" => Scheme::Q4_0,
            "int4" => Scheme::Int4 { group: 32 },
            _ => {
                if let Some(g) = s.strip_prefix("int4-g") {
                    return Ok(Scheme::Int4 { group: group(g)? });
                }
                let (rtn, rest) = match (s.strip_prefix("gptq"), s.strip_prefix("rtn")) {
                    (Some(r), _) => (false, r),
                    (_, Some(r)) => (true, r),
                    _ => return Err(bad()),
                };
                let (rest, act_order) = match rest.strip_suffix("-act") {
                    Some(r) if !rtn => (r, true),
                    _ => (rest, false),
                };
                let (bits, g) = rest.split_once("-g").ok_or_else(bad)?;
                let bits = match bits {
                    "3" => 3,
                    "4" => 4,
                    _ => return Err(bad()),
                };
                Scheme::Gptq { bits, group: group(g)?, rtn, act_order }
            }
        })
    }

    /// The storage type of the quantized weights.
    pub fn quant_type(self) -> QuantType {
        match self {
            Scheme::Bf16 => QuantType::Bf16,
            Scheme::Int8 => QuantType::Int8,
            Scheme::W8A8 => QuantType::W8A8,
            Scheme::Q8_0 => QuantType::Q8_0,
            Scheme::Q4_0 => QuantType::Q4_0,
            Scheme::Int4 { group } | Scheme::Gptq { group, .. } => QuantType::Int4 { group },
        }
    }
}

/// Which weights [`quantize_model`] leaves in f32.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeepFloat {
    /// The output layer (an untied `lm_head`; a tied one is always kept).
    pub output: bool,
}

/// The linear weights of `model` that quantization applies to, in layout order.
pub fn linear_weights(model: &Transformer, keep: KeepFloat) -> Vec<String> {
    const LINEAR: [&str; 5] = [".c_attn.weight", ".c_q.weight", ".c_kv.weight", ".c_proj.weight", ".c_fc.weight"];
    model
        .layout
        .tensors
        .iter()
        .filter(|t| LINEAR.iter().any(|s| t.name.ends_with(s)) || (t.name == "lm_head.weight" && !keep.output))
        .map(|t| t.name.clone())
        .collect()
}

/// The linear weights `scheme` can store (their rows split into its blocks or groups), and the
/// others, which stay f32 (e.g. stories260K's 172-wide feed-forward output under Q8_0, as
/// llama.cpp's converter also leaves such tensors unquantized).
pub fn quantizable(model: &Transformer, scheme: Scheme, keep: KeepFloat) -> (Vec<String>, Vec<String>) {
    linear_weights(model, keep)
        .into_iter()
        .partition(|n| model.layout.get(n).is_some_and(|t| scheme.quant_type().fits(t.shape[1])))
}

/// [`quantizable`]'s first list, or an error when no weight fits the scheme at all.
fn weights_to_quantize(model: &Transformer, scheme: Scheme, keep: KeepFloat) -> Result<Vec<String>> {
    let (names, kept) = quantizable(model, scheme, keep);
    ensure!(
        !names.is_empty(),
        "no linear weight can be stored as {:?}: the input widths of {} do not split into its blocks or groups",
        scheme.quant_type(),
        kept.join(", ")
    );
    Ok(names)
}

/// Quantizes every linear weight of `model` that `scheme` can store ([`quantizable`]), round to
/// nearest (GPTQ schemes: [`quantize_model_gptq`]). Returns the names of the quantized tensors.
pub fn quantize_model(model: &mut Transformer, scheme: Scheme, keep: KeepFloat) -> Result<Vec<String>> {
    if let Scheme::Gptq { rtn: false, .. } = scheme {
        bail!("GPTQ needs calibration text (lmlab quantize --calib FILE)");
    }
    let names = weights_to_quantize(model, scheme, keep)?;
    for name in &names {
        quantize_weight(model, name, scheme, None)?;
    }
    Ok(names)
}

/// Quantizes the weight `name` with `scheme`; GPTQ schemes take the Hessian of its inputs.
fn quantize_weight(model: &mut Transformer, name: &str, scheme: Scheme, h: Option<&[f64]>) -> Result<()> {
    let t = model.layout.get(name).expect("a tensor of the layout").clone();
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let w = &model.params[t.range()];
    let m = match scheme {
        Scheme::Gptq { bits, group, rtn, act_order } => {
            let q = match h {
                Some(h) if !rtn => gptq(w, rows, cols, h, &GptqConfig { act_order, ..GptqConfig::new(bits, group) }),
                _ => gptq_rtn(w, rows, cols, bits, group),
            }
            .map_err(|e| anyhow::anyhow!("{name} ({rows}×{cols}): {e:#}"))?;
            // Zero points are integers in 0..2^bits. Groups are runs of processing order, so
            // with act-order the codes are stored in that order, with the order beside them.
            let zeros = q.zero.iter().map(|&z| z as u8).collect();
            match q.perm {
                None => QuantMatrix::from_int4_codes(rows, cols, group, &q.codes, q.scale, zeros),
                Some(perm) => {
                    let codes: Vec<u8> =
                        q.codes.chunks_exact(cols).flat_map(|row| perm.iter().map(move |&c| row[c])).collect();
                    let perm = perm.iter().map(|&c| c as u32).collect();
                    QuantMatrix::from_int4_codes(rows, cols, group, &codes, q.scale, zeros)
                        .and_then(|m| m.with_perm(perm))
                }
            }
        }
        _ => QuantMatrix::quantize(w, rows, cols, scheme.quant_type()),
    }
    .map_err(|e| anyhow::anyhow!("{name} ({rows}×{cols}): {e:#}"))?;
    model.set_quantized(name, m)
}

/// GPTQ on a whole decoder, block by block as the paper does, and within a block layer by
/// layer (`sequential_stages`): the inputs of each stage's linear layers are collected on
/// `windows` (token ids, each at most `block_size` long) with everything before it already
/// quantized, their Hessians H = 2·XᵀX/n feed GPTQ, and the stage is quantized; the output
/// layer comes last. Returns the names of the quantized tensors.
pub fn quantize_model_gptq(
    model: &mut Transformer,
    scheme: Scheme,
    keep: KeepFloat,
    windows: &[Vec<u32>],
) -> Result<Vec<String>> {
    let Scheme::Gptq { .. } = scheme else { return quantize_model(model, scheme, keep) };
    ensure!(model.config.arch == Arch::Decoder, "GPTQ calibration runs decoder language models only");
    ensure!(!windows.is_empty() && windows.iter().all(|w| !w.is_empty()), "no calibration text");
    quantize_model_gptq_with(model, scheme, keep, |m| {
        windows.iter().try_for_each(|w| m.forward_lm(w, None, 1, w.len(), false, 0).map(|_| ()))
    })
}

/// [`quantize_model_gptq`] on a decoder or an encoder whose calibration forward passes are run
/// by `calibrate` (called once per stage; e.g. sentences through an encoder). The stages are
/// those of each block `transformer.h.{l}` in order (`sequential_stages`), then the
/// remaining weights (the output layer).
pub fn quantize_model_gptq_with(
    model: &mut Transformer,
    scheme: Scheme,
    keep: KeepFloat,
    mut calibrate: impl FnMut(&mut Transformer) -> Result<()>,
) -> Result<Vec<String>> {
    let Scheme::Gptq { .. } = scheme else { return quantize_model(model, scheme, keep) };
    ensure!(
        matches!(model.config.arch, Arch::Decoder | Arch::Encoder),
        "GPTQ calibration runs decoders and encoders only, not {:?}",
        model.config.arch
    );
    let names = weights_to_quantize(model, scheme, keep)?;
    let mut stages: Vec<Vec<String>> = Vec::new();
    for l in 0..model.config.n_layer {
        let block: Vec<&String> = names.iter().filter(|n| n.starts_with(&format!("transformer.h.{l}."))).collect();
        stages.extend(sequential_stages(&block));
    }
    stages.push(names.iter().filter(|n| !n.starts_with("transformer.h.")).cloned().collect());
    for stage in stages.iter().filter(|s| !s.is_empty()) {
        // The inputs of this stage's weights, keyed by the start of their parameter range.
        let targets: HashMap<usize, usize> = stage
            .iter()
            .map(|n| model.layout.get(n).map(|t| (t.offset, t.shape[1])).expect("a tensor of the layout"))
            .collect();
        let acc: Arc<Mutex<HashMap<usize, HessianAccumulator>>> = Arc::new(Mutex::new(
            targets.iter().map(|(&start, &cols)| (start, HessianAccumulator::new(cols))).collect(),
        ));
        let sink = Arc::clone(&acc);
        model.set_linear_observer(Some(Arc::new(move |start: usize, x: &[f32], n: usize| {
            if let Some(h) = sink.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&start) {
                // Shapes are the model's own, so add_batch cannot fail here.
                h.add_batch(x, n).expect("calibration input of the layer's width");
            }
        })));
        let run = calibrate(model);
        model.set_linear_observer(None);
        run?;
        let empty = acc.lock().unwrap_or_else(|e| e.into_inner()).values().any(|h| h.nsamples() == 0);
        ensure!(!empty, "the calibration passes reached no input of a layer to quantize");
        let mut acc = acc.lock().unwrap_or_else(|e| e.into_inner());
        for name in stage {
            let start = model.layout.get(name).expect("a tensor of the layout").offset;
            let h = acc.remove(&start).expect("an accumulator per target");
            quantize_weight(model, name, scheme, Some(h.hessian()))?;
        }
    }
    Ok(names)
}

/// A block's weights in the order GPTQ quantizes them, grouped by the input they share: the
/// query/key/value projections (one input), then each later linear layer on its own. Each
/// stage's inputs are collected with the stages before it already quantized (the reference's
/// `--true-sequential`), so every layer compensates the error of the ones that feed it.
fn sequential_stages(block: &[&String]) -> Vec<Vec<String>> {
    let input_of = |n: &str| {
        let qkv = [".c_attn.weight", ".c_q.weight", ".c_kv.weight"].iter().any(|s| n.ends_with(s));
        if qkv {
            "qkv".to_string()
        } else {
            n.to_string()
        }
    };
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for n in block {
        let key = input_of(n);
        match stages.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(n.to_string()),
            None => stages.push((key, vec![n.to_string()])),
        }
    }
    stages.into_iter().map(|(_, v)| v).collect()
}

/// Calibration windows: up to `count` consecutive windows of `len` tokens from `tokens`.
pub fn calibration_windows(tokens: &[u32], len: usize, count: usize) -> Vec<Vec<u32>> {
    tokens.chunks(len.max(1)).filter(|c| c.len() == len).take(count).map(<[u32]>::to_vec).collect()
}
