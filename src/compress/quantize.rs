//! Post-training quantization of a model's linear layers (`lmlab quantize`).
//!
//! Every linear weight (`c_attn`, `c_q`, `c_kv`, `c_proj`, `c_fc`, and an untied `lm_head`)
//! is quantized row by row (rows = output channels) with one of the schemes below and
//! installed with [`Transformer::set_quantized`]; embeddings, norms and biases stay f32. A
//! head tied to the token embedding stays f32 too: its weight is also the embedding table.

use crate::kernels::quant::{QuantMatrix, QuantType};
use crate::model::transformer::Transformer;
use anyhow::{bail, Result};

/// What `lmlab quantize --scheme` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// int8 per output channel, symmetric; activations quantized per token at run time (W8A8).
    Int8,
    /// GGML's Q8_0: blocks of 32 weights with an f16 scale.
    Q8_0,
    /// GGML's Q4_0: blocks of 32 4-bit weights with an f16 scale.
    Q4_0,
    /// 4-bit round-to-nearest, asymmetric, one scale and zero point per `group` columns.
    Int4 { group: usize },
}

impl Scheme {
    /// Parses `int8`, `w8a8`, `q8_0`, `q4_0`, `int4` (group 32) or `int4-gG`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "int8" | "w8a8" => Scheme::Int8,
            "q8_0" => Scheme::Q8_0,
            "q4_0" => Scheme::Q4_0,
            "int4" => Scheme::Int4 { group: 32 },
            _ => match s.strip_prefix("int4-g").map(str::parse::<usize>) {
                Some(Ok(g)) if g > 0 => Scheme::Int4 { group: g },
                _ => bail!("unknown quantization scheme {s:?}: expected int8 (= w8a8), q8_0, q4_0, int4 or int4-gG"),
            },
        })
    }

    pub fn quant_type(self) -> QuantType {
        match self {
            Scheme::Int8 => QuantType::Int8,
            Scheme::Q8_0 => QuantType::Q8_0,
            Scheme::Q4_0 => QuantType::Q4_0,
            Scheme::Int4 { group } => QuantType::Int4 { group },
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

/// Quantizes every linear weight of `model` with `scheme` (round to nearest). Returns the
/// names of the quantized tensors.
pub fn quantize_model(model: &mut Transformer, scheme: Scheme, keep: KeepFloat) -> Result<Vec<String>> {
    let names = linear_weights(model, keep);
    for name in &names {
        let t = model.layout.get(name).expect("a tensor of the layout").clone();
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let m = QuantMatrix::quantize(&model.params[t.range()], rows, cols, scheme.quant_type())
            .map_err(|e| anyhow::anyhow!("{name} ({rows}×{cols}): {e:#}"))?;
        model.set_quantized(name, m)?;
    }
    Ok(names)
}
