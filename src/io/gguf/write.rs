//! Writing GGUF version 3: header, metadata, tensor infos, zero padding to the alignment, the
//! tensor data (each tensor's offset a multiple of the alignment).

use super::value::{Array, Value};
use super::{f32_to_f16, GgmlType, Gguf, TensorData, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS};
use anyhow::{bail, ensure, Result};

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            $v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each!(v),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::Bool(v) => v.iter().for_each(|&b| out.push(b as u8)),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::Array(v) => v.iter().for_each(|a| put_array(out, a)),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F64(v) => each!(v),
    }
}

/// The GGUF version-3 bytes of `g` (its `version` is ignored). The alignment is
/// `general.alignment` when the metadata has it (a u32 power of two), else 32. F32 data of a
/// tensor typed F16 is rounded to half precision (ties to even); raw data must have exactly the
/// size its type and dims imply.
pub fn to_bytes(g: &Gguf) -> Result<Vec<u8>> {
    let alignment = match g.get(ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if a.is_power_of_two() => *a as usize,
        Some(v) => bail!("{ALIGNMENT_KEY} is {v:?}; it must be a u32 power of two"),
    };
    let mut keys = std::collections::HashSet::new();
    for (k, _) in &g.metadata {
        ensure!(keys.insert(k.as_str()), "metadata key {k:?} appears twice");
    }
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(g.tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(g.metadata.len() as u64).to_le_bytes());
    for (k, v) in &g.metadata {
        put_str(&mut out, k);
        out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
        put_value(&mut out, v);
    }
    // Infos with offsets; then each tensor's bytes.
    let mut offset = 0usize;
    let mut blobs: Vec<Vec<u8>> = Vec::with_capacity(g.tensors.len());
    let mut names = std::collections::HashSet::new();
    for t in &g.tensors {
        ensure!(names.insert(t.name.as_str()), "tensor name {:?} appears twice", t.name);
        ensure!(
            (1..=MAX_DIMS).contains(&t.dims.len()),
            "tensor {:?} has {} dims, expected 1 to {MAX_DIMS}",
            t.name,
            t.dims.len()
        );
        let size = t.ty.bytes_for(&t.dims).map_err(|e| anyhow::anyhow!("tensor {:?}: {e}", t.name))?;
        let blob = match (&t.data, t.ty) {
            (TensorData::F32(v), GgmlType::F32) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (TensorData::F32(v), GgmlType::F16) => v.iter().flat_map(|&x| f32_to_f16(x).to_le_bytes()).collect(),
            (TensorData::Raw(b), ty) if ty != GgmlType::F32 && ty != GgmlType::F16 => b.clone(),
            (_, ty) => bail!("tensor {:?}: {} data cannot be written as {}", t.name, t.data.kind(), ty.name()),
        };
        ensure!(
            blob.len() == size,
            "tensor {:?}: {} bytes of data, but dims {:?} of {} take {size}",
            t.name,
            blob.len(),
            t.dims,
            t.ty.name()
        );
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        t.dims.iter().for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
        out.extend_from_slice(&(t.ty as u32).to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offset = (offset + size).next_multiple_of(alignment);
        blobs.push(blob);
    }
    out.resize(out.len().next_multiple_of(alignment), 0);
    for b in blobs {
        out.extend_from_slice(&b);
        out.resize(out.len().next_multiple_of(alignment), 0);
    }
    Ok(out)
}
