//! Quantized checkpoints: `quant.safetensors` beside the usual files.
//!
//! A quantized checkpoint is an ordinary checkpoint directory (`config.toml`, `tokenizer.json`,
//! `state.json` with the CRC32 of every file) whose `model.safetensors` holds the f32 tensors
//! only, and whose `quant.safetensors` holds each quantized linear weight as its raw parts:
//! `{name}.qdata` (U8: GGML blocks, int8 values or packed int4 codes), `{name}.qscales` (F32,
//! Int8/Int4 only) and `{name}.qzeros` (U8, Int4 only). One metadata key, `lmlab_quant`, is a
//! JSON object `{"scheme": S, "tensors": {name: {"type", "group", "rows", "cols"}}}` (one key,
//! because safetensors writes its metadata map in hash order and the bytes must not vary). It
//! has no optimizer state: it samples and evaluates, it does not train.

use super::tensors::{to_safetensors_raw, RawTensor, TensorFile};
use crate::kernels::quant::{QuantMatrix, QuantType};
use anyhow::{bail, ensure, Context, Result};
use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The file's metadata.
#[derive(Serialize, Deserialize)]
pub struct QuantIndex {
    /// What `lmlab quantize --scheme` was given.
    pub scheme: String,
    pub tensors: BTreeMap<String, QuantEntry>,
}

#[derive(Serialize, Deserialize)]
pub struct QuantEntry {
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub group: usize,
    pub rows: usize,
    pub cols: usize,
}

/// The name `info` and the index use for a quantization type.
pub fn type_name(ty: QuantType) -> &'static str {
    match ty {
        QuantType::Q8_0 => "q8_0",
        QuantType::Q4_0 => "q4_0",
        QuantType::Int8 => "int8",
        QuantType::Int4 { .. } => "int4",
    }
}

fn parse_type(e: &QuantEntry, name: &str) -> Result<QuantType> {
    Ok(match e.ty.as_str() {
        "q8_0" => QuantType::Q8_0,
        "q4_0" => QuantType::Q4_0,
        "int8" => QuantType::Int8,
        "int4" => QuantType::Int4 { group: e.group },
        t => bail!("quant.safetensors: tensor {name} has unknown type {t:?}"),
    })
}

/// `quant.safetensors` for `mats` (name, matrix).
pub fn encode<'a>(scheme: &str, mats: impl Iterator<Item = (&'a str, &'a QuantMatrix)>) -> Result<Vec<u8>> {
    let mut raw: Vec<RawTensor> = Vec::new();
    let mut tensors = BTreeMap::new();
    for (name, m) in mats {
        let group = if let QuantType::Int4 { group } = m.ty { group } else { 0 };
        let entry = QuantEntry { ty: type_name(m.ty).into(), group, rows: m.rows, cols: m.cols };
        tensors.insert(name.to_string(), entry);
        raw.push((format!("{name}.qdata"), Dtype::U8, vec![m.data.len()], m.data.clone()));
        if !m.scales.is_empty() {
            let bytes = m.scales.iter().flat_map(|x| x.to_le_bytes()).collect();
            raw.push((format!("{name}.qscales"), Dtype::F32, vec![m.scales.len()], bytes));
        }
        if !m.zeros.is_empty() {
            raw.push((format!("{name}.qzeros"), Dtype::U8, vec![m.zeros.len()], m.zeros.clone()));
        }
    }
    let index = serde_json::to_string(&QuantIndex { scheme: scheme.into(), tensors })?;
    to_safetensors_raw(&raw, HashMap::from([("lmlab_quant".to_string(), index)]))
}

/// The quantized weights of `quant.safetensors`, each checked against the sizes its type and
/// shape imply ([`QuantMatrix::from_parts`]).
pub fn decode(bytes: &[u8]) -> Result<(String, Vec<(String, QuantMatrix)>)> {
    let tf = TensorFile::parse(bytes, "quant.safetensors")?;
    let index = tf.metadata.get("lmlab_quant").context("quant.safetensors has no lmlab_quant metadata")?;
    let index: QuantIndex = serde_json::from_str(index).context("quant.safetensors: bad lmlab_quant metadata")?;
    let mut out = Vec::new();
    for (name, e) in &index.tensors {
        let ty = parse_type(e, name)?;
        let part = |suffix: &str, dtype: Dtype| -> Result<Vec<u8>> {
            let key = format!("{name}.{suffix}");
            match tf.st.tensor(&key) {
                // Absent parts are empty (Q8_0/Q4_0 have no separate scales, only Int4 zeros).
                Err(_) => Ok(Vec::new()),
                Ok(t) => {
                    ensure!(
                        t.dtype() == dtype,
                        "quant.safetensors: {key} has dtype {:?}, expected {dtype:?}",
                        t.dtype()
                    );
                    Ok(t.data().to_vec())
                }
            }
        };
        let data = part("qdata", Dtype::U8)?;
        let scales = part("qscales", Dtype::F32)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let zeros = part("qzeros", Dtype::U8)?;
        let m = QuantMatrix::from_parts(ty, e.rows, e.cols, data, scales, zeros)
            .with_context(|| format!("quant.safetensors: tensor {name}"))?;
        out.push((name.clone(), m));
    }
    Ok((index.scheme, out))
}
