//! Named f32 tensors to and from safetensors bytes.

use anyhow::{bail, Context, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashMap;

/// Serializes `(name, shape, data)` f32 triples with string metadata.
pub fn to_safetensors(tensors: &[(String, Vec<usize>, &[f32])], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let raw: Vec<RawTensor> = tensors
        .iter()
        .map(|(name, shape, d)| {
            (name.clone(), Dtype::F32, shape.clone(), d.iter().flat_map(|x| x.to_le_bytes()).collect())
        })
        .collect();
    to_safetensors_raw(&raw, metadata)
}

/// A tensor already in little-endian bytes: (name, dtype, shape, bytes).
pub type RawTensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// Serializes tensors of any dtype with string metadata. Note: with more than one metadata
/// key the header's key order (and so the file's bytes) varies between runs.
pub fn to_safetensors_raw(tensors: &[RawTensor], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, b)| Ok((name.clone(), TensorView::new(*dtype, shape.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(safetensors::serialize(views, &Some(metadata))?)
}

/// A parsed safetensors file.
pub struct TensorFile<'a> {
    pub st: SafeTensors<'a>,
    pub metadata: HashMap<String, String>,
}

impl<'a> TensorFile<'a> {
    pub fn parse(bytes: &'a [u8], what: &str) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| anyhow::anyhow!("{what} is not a valid safetensors file: {e}"))?;
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        Ok(TensorFile { st, metadata: meta.metadata().clone().unwrap_or_default() })
    }

    /// Copies tensor `name` into `dst`, checking dtype (f32) and shape.
    pub fn read_f32_into(&self, name: &str, shape: &[usize], dst: &mut [f32]) -> Result<()> {
        let t = self.st.tensor(name).with_context(|| format!("tensor {name} is missing"))?;
        if t.dtype() != Dtype::F32 {
            bail!("tensor {name} has dtype {:?}, expected F32", t.dtype());
        }
        if t.shape() != shape {
            bail!("tensor {name} has shape {:?}, expected {:?}", t.shape(), shape);
        }
        for (x, b) in dst.iter_mut().zip(t.data().chunks_exact(4)) {
            *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }

    /// Tensor `name` as f32 values (f32 or i64 storage) with its shape.
    pub fn read_any(&self, name: &str) -> Result<(Vec<usize>, Vec<f64>)> {
        let t = self.st.tensor(name).with_context(|| format!("tensor {name} is missing"))?;
        let vals = match t.dtype() {
            Dtype::F32 => {
                t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64).collect()
            }
            Dtype::F64 => t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
            Dtype::I64 => t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
            d => bail!("tensor {name} has unsupported dtype {d:?}"),
        };
        Ok((t.shape().to_vec(), vals))
    }
}
