//! GGUF files (llama.cpp's format) in and out: a reader and writer of the container
//! (`read`, `write`, `value`), and lmlab models as GGUF (`model`: Llama and GPT-2 architectures
//! with llama.cpp's key and tensor names; `tokenizer`: the tokenizer).
//!
//! ```text
//! "GGUF"  u32 version (3; 2 is read too)  u64 tensor count  u64 key/value count
//! per pair:   string key, u32 value type, value
//!             (string = u64 length + UTF-8 bytes; array = u32 element type, u64 count, elements;
//!              arrays of arrays allowed; bool = one byte 0/1; all little-endian)
//! per tensor: string name, u32 n_dims (1..=4), n_dims × u64 dims (ggml order: dims[0] = ne[0]
//!             varies fastest, so a row-major (rows, cols) matrix is [cols, rows]),
//!             u32 ggml type, u64 offset (from the start of the data section)
//! zero padding to `general.alignment` (a u32, default 32), then the data section; every
//! tensor's offset is a multiple of the alignment.
//! ```
//!
//! F32 and F16 tensors are read as f32 values ([`TensorData::F32`]); quantized types keep their
//! raw blocks ([`TensorData::Raw`]) with their [`GgmlType`], for the quantized kernels.

mod model;
mod read;
mod tokenizer;
mod value;
mod write;

pub use model::{export, export_bytes, from_gguf, import, import_bytes, to_gguf, ExportType};
pub use read::parse;
pub use tokenizer::tokenizer_from_gguf;
pub use value::{Array, Value, ValueType};
pub use write::to_bytes;

use anyhow::{bail, ensure, Context, Result};
use std::path::Path;

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const ALIGNMENT_KEY: &str = "general.alignment";
pub const DEFAULT_ALIGNMENT: usize = 32;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: usize = 4;

/// A ggml tensor type (ids as in ggml's `ggml_type` and gguf-py's `GGMLQuantizationType`).
/// Ids that ggml retired (4, 5, 31..=33, 36..=38) and the i-quants are not listed: reading them
/// is an error naming the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2K = 10,
    Q3K = 11,
    Q4K = 12,
    Q5K = 13,
    Q6K = 14,
    Q8K = 15,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    Bf16 = 30,
}

impl GgmlType {
    pub const ALL: [GgmlType; 20] = {
        use GgmlType::*;
        [F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2K, Q3K, Q4K, Q5K, Q6K, Q8K, I8, I16, I32, I64, F64, Bf16]
    };

    pub fn from_id(id: u32) -> Result<Self> {
        match Self::ALL.iter().find(|t| **t as u32 == id) {
            Some(t) => Ok(*t),
            None => bail!("ggml type {id} is not supported (lmlab knows {})", Self::ALL.map(|t| t.name()).join(", ")),
        }
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        use GgmlType::*;
        match self {
            F32 | I32 => (1, 4),
            F16 | Bf16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            // f16 scale + 32 nibbles; Q4_1 adds an f16 min; Q5 adds 32 high bits.
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            // f16 scale + 32 i8; Q8_1 adds an f16 sum.
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2K => (256, 84),
            Q3K => (256, 110),
            Q4K => (256, 144),
            Q5K => (256, 176),
            Q6K => (256, 210),
            Q8K => (256, 292),
        }
    }

    /// gguf-py's name of the type.
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            Bf16 => "BF16",
        }
    }

    /// Bytes of a tensor of this type with ggml dims `dims`: an error when `dims[0]` is not a
    /// whole number of blocks or the size overflows.
    pub fn bytes_for(self, dims: &[u64]) -> Result<usize> {
        let (be, bb) = self.block();
        let first = *dims.first().context("a tensor needs at least one dimension")?;
        ensure!(
            first.is_multiple_of(be as u64),
            "dims[0] = {first} is not a multiple of the {} block size {be}",
            self.name()
        );
        let mut n: u64 = 1;
        for &d in dims {
            n = n.checked_mul(d).context("the element count overflows")?;
        }
        let bytes = (n / be as u64).checked_mul(bb as u64).context("the byte size overflows")?;
        usize::try_from(bytes).context("the byte size overflows")
    }
}

/// A tensor's data: f32 values (F32 and F16 tensors), or the raw bytes of any other type.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    Raw(Vec<u8>),
}

impl TensorData {
    fn kind(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "f32",
            TensorData::Raw(_) => "raw",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    /// ggml order: `dims[0]` varies fastest (a row-major (rows, cols) matrix is `[cols, rows]`).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub data: TensorData,
}

impl Tensor {
    /// The f32 values (F32 and F16 tensors), or None for a quantized type.
    pub fn f32s(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::Raw(_) => None,
        }
    }
}

/// A GGUF file in memory: the metadata pairs and tensors in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct Gguf {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<Tensor>,
}

impl Gguf {
    pub fn new() -> Self {
        Gguf { version: 3, metadata: Vec::new(), tensors: Vec::new() }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key` (replacing its value when present).
    pub fn set(&mut self, key: &str, v: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = v,
            None => self.metadata.push((key.to_string(), v)),
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Reads and parses a file (the whole file is read into memory).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        parse(&bytes).with_context(|| format!("GGUF file {}", path.display()))
    }
}

impl Default for Gguf {
    fn default() -> Self {
        Self::new()
    }
}

/// An IEEE half's bits as f32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1F) as u32;
    let man = (h & 0x3FF) as u32;
    let bits = match exp {
        0 if man == 0 => sign,
        // Subnormal: man · 2^-24.
        0 => {
            let v = man as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        0x1F => sign | 0x7F80_0000 | (man << 13),
        e => sign | ((e + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// The IEEE half nearest to `x` (ties to even), as bits.
pub fn f32_to_f16(x: f32) -> u16 {
    let r = crate::kernels::precision::round_f16(x);
    let bits = r.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let abs = bits & 0x7FFF_FFFF;
    if abs > 0x7F80_0000 {
        return sign | 0x7E00;
    }
    if abs == 0x7F80_0000 {
        return sign | 0x7C00;
    }
    let exp = abs >> 23;
    if exp >= 113 {
        // Normal half: rebias the exponent, keep the top 10 fraction bits (the rest are zero).
        sign | (((exp - 112) << 10) as u16) | ((abs >> 13) & 0x3FF) as u16
    } else {
        // Subnormal (or zero): an exact multiple of 2^-24.
        sign | (f32::from_bits(abs) / f32::from_bits(0x3380_0000)) as u16
    }
}
