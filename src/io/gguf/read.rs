//! Parsing GGUF bytes. Every count, length and offset read from the file is checked against the
//! bytes that remain before anything is allocated or indexed, so a corrupt or hostile file is an
//! error naming the field and its byte position, never a panic or a huge allocation: an array
//! of n elements is allocated only once n · (the least bytes an element takes) fits in what is
//! left of the file, tensor data only once offset + size fits in the file.

use super::value::{Array, Value, ValueType};
use super::{f16_to_f32, GgmlType, Gguf, Tensor, TensorData, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS};
use anyhow::{bail, ensure, Context, Result};
use std::collections::HashSet;

/// Deepest nesting of arrays of arrays accepted (gguf-py writes at most 2).
const MAX_ARRAY_DEPTH: usize = 8;

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        ensure!(
            n <= self.remaining(),
            "{what} at byte {}: needs {n} bytes but the file ends after {} more ({} bytes in all)",
            self.pos,
            self.remaining(),
            self.b.len()
        );
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items of at least `min_each` bytes each, checked against the rest of the file.
    fn count(&mut self, min_each: usize, what: &str) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let fits = usize::try_from(n).ok().and_then(|n| n.checked_mul(min_each)).is_some_and(|b| b <= self.remaining());
        ensure!(
            fits,
            "{what} at byte {at} is {n}, but {n} × at least {min_each} bytes cannot fit in the {} bytes left of the \
             file",
            self.remaining()
        );
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let n = self.u64(what)?;
        ensure!(
            n <= self.remaining() as u64,
            "{what}: length at byte {at} is {n}, but only {} bytes are left in the file",
            self.remaining()
        );
        let bytes = self.take(n as usize, what)?;
        String::from_utf8(bytes.to_vec()).with_context(|| format!("{what} at byte {at} is not valid UTF-8"))
    }

    fn value(&mut self, t: ValueType, what: &str, depth: usize) -> Result<Value> {
        Ok(match t {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(self.u32(what)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::Bool => Value::Bool(self.bool(what)?),
            ValueType::String => Value::String(self.string(what)?),
            ValueType::Array => Value::Array(self.array_value(what, depth)?),
            ValueType::U64 => Value::U64(self.u64(what)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
        })
    }

    fn bool(&mut self, what: &str) -> Result<bool> {
        let at = self.pos;
        match self.array::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => bail!("{what} at byte {at}: bool byte is {b}, expected 0 or 1"),
        }
    }

    fn array_value(&mut self, what: &str, depth: usize) -> Result<Array> {
        let at = self.pos;
        ensure!(depth < MAX_ARRAY_DEPTH, "{what} at byte {at}: arrays nested more than {MAX_ARRAY_DEPTH} deep");
        let id = self.u32(&format!("{what}: element type"))?;
        let t = ValueType::from_id(id).with_context(|| format!("{what} at byte {at}: element type"))?;
        let n = self.count(t.min_size(), &format!("{what}: element count"))?;
        macro_rules! fixed {
            ($variant:ident, $ty:ty) => {{
                let bytes = self.take(n * std::mem::size_of::<$ty>(), what)?;
                Array::$variant(
                    bytes
                        .chunks_exact(std::mem::size_of::<$ty>())
                        .map(|c| <$ty>::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                )
            }};
        }
        Ok(match t {
            ValueType::U8 => Array::U8(self.take(n, what)?.to_vec()),
            ValueType::I8 => fixed!(I8, i8),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.bool(what).with_context(|| format!("element {i}"))?);
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.string(what).with_context(|| format!("element {i}"))?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.array_value(what, depth + 1).with_context(|| format!("element {i}"))?);
                }
                Array::Array(v)
            }
        })
    }
}

/// A tensor info before its data is read.
struct Info {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    offset: u64,
    bytes: usize,
}

/// Parses a whole GGUF file (version 2 or 3).
pub fn parse(bytes: &[u8]) -> Result<Gguf> {
    let mut c = Cursor { b: bytes, pos: 0 };
    let magic = c.take(4, "magic").context("not a GGUF file")?;
    ensure!(magic == MAGIC, "not a GGUF file: the magic is {:?}, expected \"GGUF\"", String::from_utf8_lossy(magic));
    let version = c.u32("version")?;
    ensure!(
        version == 2 || version == 3,
        "GGUF version {version} is not supported (lmlab reads versions 2 and 3; version 1 had 32-bit counts)"
    );
    // A tensor info takes at least 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8
    // (offset) bytes, a key/value pair 8 (key length) + 4 (type) + 1.
    let n_tensors = c.count(32, "tensor count")?;
    let n_kv = c.count(13, "metadata key/value count")?;

    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(n_kv);
    let mut keys = HashSet::new();
    for i in 0..n_kv {
        let at = c.pos;
        let key = c.string(&format!("metadata pair {i}: key"))?;
        let what = format!("metadata pair {i} ({key:?})");
        let id = c.u32(&format!("{what}: value type"))?;
        let t = ValueType::from_id(id).with_context(|| format!("{what}: value type"))?;
        let v = c.value(t, &what, 0)?;
        ensure!(keys.insert(key.clone()), "{what} at byte {at}: the key appears twice");
        metadata.push((key, v));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) if a.is_power_of_two() => *a as usize,
        Some((_, v)) => bail!("{ALIGNMENT_KEY} is {v:?}; it must be a u32 power of two"),
    };

    let mut infos: Vec<Info> = Vec::with_capacity(n_tensors);
    let mut names = HashSet::new();
    for i in 0..n_tensors {
        let at = c.pos;
        let name = c.string(&format!("tensor {i}: name"))?;
        let what = format!("tensor {i} ({name:?})");
        let n_dims = c.u32(&format!("{what}: n_dims"))?;
        ensure!(
            (1..=MAX_DIMS as u32).contains(&n_dims),
            "{what} at byte {at}: n_dims is {n_dims}, expected 1 to {MAX_DIMS}"
        );
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            let v = c.u64(&format!("{what}: dimension {d}"))?;
            ensure!(v <= i64::MAX as u64, "{what}: dimension {d} is {v}, more than ggml's int64 holds");
            dims.push(v);
        }
        let id = c.u32(&format!("{what}: type"))?;
        let ty = GgmlType::from_id(id).with_context(|| format!("{what}: ggml type"))?;
        let offset = c.u64(&format!("{what}: data offset"))?;
        let bytes = ty.bytes_for(&dims).with_context(|| format!("{what}: dims {dims:?} of type {}", ty.name()))?;
        ensure!(names.insert(name.clone()), "{what} at byte {at}: the name appears twice");
        infos.push(Info { name, dims, ty, offset, bytes });
    }

    let data_start = if n_tensors == 0 { c.pos.min(bytes.len()) } else { c.pos.next_multiple_of(alignment) };
    ensure!(
        data_start <= bytes.len(),
        "the tensor data starts at byte {data_start} (after the tensor infos, aligned to {alignment}), past the end of \
         the file ({} bytes)",
        bytes.len()
    );
    let data_len = bytes.len() - data_start;
    for (i, t) in infos.iter().enumerate() {
        let what = format!("tensor {i} ({:?})", t.name);
        ensure!(
            t.offset.is_multiple_of(alignment as u64),
            "{what}: data offset {} is not a multiple of the alignment {alignment}",
            t.offset
        );
        let end = t.offset.checked_add(t.bytes as u64);
        ensure!(
            end.is_some_and(|e| e <= data_len as u64),
            "{what}: data offset {} + size {} is past the end of the file ({} bytes; the data section starts at byte \
             {data_start})",
            t.offset,
            t.bytes,
            bytes.len()
        );
    }
    // No two tensors may share bytes.
    let mut order: Vec<usize> = (0..infos.len()).collect();
    order.sort_by_key(|&i| infos[i].offset);
    for w in order.windows(2) {
        let (a, b) = (&infos[w[0]], &infos[w[1]]);
        ensure!(
            a.offset + a.bytes as u64 <= b.offset || a.bytes == 0,
            "tensor {} ({:?}) at data offset {} overlaps tensor {} ({:?}), which starts at {} before its {} bytes end",
            w[1],
            b.name,
            b.offset,
            w[0],
            a.name,
            b.offset,
            a.bytes
        );
    }

    let mut tensors = Vec::with_capacity(infos.len());
    for t in infos {
        let start = data_start + t.offset as usize;
        let raw = &bytes[start..start + t.bytes];
        let data = match t.ty {
            GgmlType::F32 => {
                TensorData::F32(raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())
            }
            GgmlType::F16 => {
                TensorData::F32(raw.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect())
            }
            _ => TensorData::Raw(raw.to_vec()),
        };
        tensors.push(Tensor { name: t.name, dims: t.dims, ty: t.ty, data });
    }
    Ok(Gguf { version, metadata, tensors })
}
