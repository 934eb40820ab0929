//! Quantized checkpoints: `quant.safetensors` beside the usual files.
//!
//! A quantized checkpoint is an ordinary checkpoint directory (`config.toml`, `tokenizer.json`,
//! `state.json` with the CRC32 of every file) whose `model.safetensors` holds the f32 tensors
//! only, and whose `quant.safetensors` holds each quantized linear weight as its raw parts:
//! `{name}.qdata` (U8: GGML blocks, row-major int8 values, row-major little-endian bf16 values
//! or packed int4 codes),
//! `{name}.qscales` (F32, int8/w8a8/int4 only), `{name}.qzeros` (U8, int4 only) and
//! `{name}.qperm` (U32, int4 from GPTQ with act-order only: the stored column order). One
//! metadata key, `lmlab_quant`, is a JSON object `{"format": 2, "scheme": S, "tensors": {name:
//! {"type", "group", "rows", "cols"}}}` (one key, because safetensors writes its metadata map in
//! hash order and the bytes must not vary). It has no optimizer state: it samples and
//! evaluates, it does not train.
//!
//! Types: `q8_0`, `q4_0`, `bf16` (weight-only), `int8` (weight-only), `w8a8`, `int4`. Format 1 (no `format` key, files
//! written before int8 weight-only existed) used `int8` for what is now `w8a8`: such files
//! still load, as W8A8, and run as they did. Format 3 is format 2 with a `qperm` part on some
//! tensor; it is written only then, so that an lmlab that would ignore the column order refuses
//! the file instead of running it wrong.

use super::tensors::{to_safetensors_raw, RawTensor, TensorFile};
use crate::kernels::quant::{QuantMatrix, QuantType};
use anyhow::{bail, ensure, Context, Result};
use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The newest [`QuantIndex::format`]: 3 when a tensor has a column order (`qperm`), else 2.
pub const FORMAT: u32 = 3;

/// The file's metadata.
#[derive(Serialize, Deserialize)]
pub struct QuantIndex {
    /// 1 (absent): type `int8` is W8A8; 2: `int8` is weight-only, `w8a8` is W8A8; 3: as 2, and
    /// some tensor has a `qperm` part.
    #[serde(default = "format_1")]
    pub format: u32,
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

fn format_1() -> u32 {
    1
}

/// The name `info` and the index (format 2) use for a quantization type.
pub fn type_name(ty: QuantType) -> &'static str {
    match ty {
        QuantType::Q8_0 => "q8_0",
        QuantType::Q4_0 => "q4_0",
        QuantType::Bf16 => "bf16",
        QuantType::Int8 => "int8",
        QuantType::W8A8 => "w8a8",
        QuantType::Int4 { .. } => "int4",
    }
}

fn parse_type(e: &QuantEntry, name: &str, format: u32) -> Result<QuantType> {
    Ok(match e.ty.as_str() {
        "q8_0" => QuantType::Q8_0,
        "q4_0" => QuantType::Q4_0,
        "bf16" => QuantType::Bf16,
        "int8" if format < 2 => QuantType::W8A8,
        "int8" => QuantType::Int8,
        "w8a8" => QuantType::W8A8,
        "int4" => QuantType::Int4 { group: e.group },
        t => bail!("quant.safetensors: tensor {name} has unknown type {t:?}"),
    })
}

/// `quant.safetensors` for `mats` (name, matrix).
pub fn encode<'a>(scheme: &str, mats: impl Iterator<Item = (&'a str, &'a QuantMatrix)>) -> Result<Vec<u8>> {
    let mut raw: Vec<RawTensor> = Vec::new();
    let mut tensors = BTreeMap::new();
    let mut format = 2;
    for (name, m) in mats {
        let group = if let QuantType::Int4 { group } = m.ty { group } else { 0 };
        let entry = QuantEntry { ty: type_name(m.ty).into(), group, rows: m.rows, cols: m.cols };
        tensors.insert(name.to_string(), entry);
        let data = m.stored_data().into_owned();
        raw.push((format!("{name}.qdata"), Dtype::U8, vec![data.len()], data));
        if !m.scales.is_empty() {
            let bytes = m.scales.iter().flat_map(|x| x.to_le_bytes()).collect();
            raw.push((format!("{name}.qscales"), Dtype::F32, vec![m.scales.len()], bytes));
        }
        if !m.zeros.is_empty() {
            raw.push((format!("{name}.qzeros"), Dtype::U8, vec![m.zeros.len()], m.zeros.clone()));
        }
        if let Some(p) = &m.perm {
            let bytes = p.iter().flat_map(|x| x.to_le_bytes()).collect();
            raw.push((format!("{name}.qperm"), Dtype::U32, vec![p.len()], bytes));
            format = FORMAT;
        }
    }
    let index = serde_json::to_string(&QuantIndex { format, scheme: scheme.into(), tensors })?;
    to_safetensors_raw(&raw, HashMap::from([("lmlab_quant".to_string(), index)]))
}

/// The quantized weights of `quant.safetensors`, each checked against the sizes its type and
/// shape imply ([`QuantMatrix::from_parts`]).
pub fn decode(bytes: &[u8]) -> Result<(String, Vec<(String, QuantMatrix)>)> {
    let tf = TensorFile::parse(bytes, "quant.safetensors")?;
    let index = tf.metadata.get("lmlab_quant").context("quant.safetensors has no lmlab_quant metadata")?;
    let index: QuantIndex = serde_json::from_str(index).context("quant.safetensors: bad lmlab_quant metadata")?;
    ensure!(
        (1..=FORMAT).contains(&index.format),
        "quant.safetensors: format {} (this lmlab reads 1 to {FORMAT}; a newer lmlab wrote it?)",
        index.format
    );
    let mut out = Vec::new();
    for (name, e) in &index.tensors {
        let ty = parse_type(e, name, index.format)?;
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
        let perm: Vec<u32> =
            part("qperm", Dtype::U32)?.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        ensure!(
            perm.is_empty() || index.format >= 3,
            "quant.safetensors: tensor {name} has a column order (qperm) in a format {} file",
            index.format
        );
        let mut m = QuantMatrix::from_parts(ty, e.rows, e.cols, data, scales, zeros)
            .with_context(|| format!("quant.safetensors: tensor {name}"))?;
        if !perm.is_empty() {
            m = m.with_perm(perm).with_context(|| format!("quant.safetensors: tensor {name}"))?;
        }
        out.push((name.clone(), m));
    }
    Ok((index.scheme, out))
}
