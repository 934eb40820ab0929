//! Weight quantization and the quantized linear layer `out = x · Wᵀ + b` (inference only).
//!
//! A weight matrix W (rows, cols), stored like `nn.Linear`'s weight (out, in), is quantized once
//! into a [`QuantMatrix`] of one of six [`QuantType`]s:
//!
//! | type | weights | activations (quantized per call, into `scratch`) |
//! |---|---|---|
//! | `Bf16` | bf16 per element (round to nearest even; 2 bytes, exact widening) | f32, not quantized (weight-only, [`weight_only`]) |
//! | `Int8` | i8 per element, one f32 scale per row (`amax/127`, symmetric) | f32, not quantized (weight-only, [`weight_only`]) |
//! | `W8A8` | as `Int8` | int8 per row (per token), f32 scale `amax/127` |
//! | `Q8_0` | GGML Q8_0 blocks of 32 (f16 scale, 32 × i8), see [`ggml`] | Q8_0 blocks of 32 |
//! | `Q4_0` | GGML Q4_0 blocks of 32 (f16 scale, 16 bytes of nibbles) | Q8_0 blocks of 32 |
//! | `Int4 { group }` | 4-bit codes, per row and group of `group` columns an f32 scale and a u8 zero point | int8 per group, f32 scale `amax/127` |
//!
//! `Bf16` and `Int8` convert each weight to f32 inside the product ([`weight_only`]: panels of
//! 16 rows, f32 FMAs); bf16 halves the bytes streamed per weight with no loss beyond bf16's own
//! rounding (the format PyTorch and llama.cpp use for "half-size, nearly lossless" weights). `W8A8` quantizes the activations per token too (SmoothQuant-style dynamic per-token
//! activations; no smoothing here). Q8_0/Q4_0 follow llama.cpp's `vec_dot_q8_0_q8_0`
//! and `vec_dot_q4_0_q8_0`: activations go to Q8_0 blocks with the reference rounding
//! (`quantize_row_q8_0_ref`; the block scale rounded to f16).
//!
//! Int4 is asymmetric round-to-nearest with GPTQ's quantizer: per group, the range
//! `[min(x_min, 0), max(x_max, 0)]` (an all-zero group uses `[−1, 1]`), `scale = range / 15`,
//! `zero = round(−min/scale)`, `q = clamp(round(x/scale) + zero, 0, 15)` (ties to even, as
//! `torch.round`), value `scale · (q − zero)`. `group` must be a multiple of 32 and divide
//! `cols`. Layout: `data` holds rows × cols/2 bytes, row-major; each run of 32 columns is 16
//! bytes, column j in the low nibble of byte j and column j+16 in the high nibble (the Q4_0
//! nibble order, so the dot product unpacks 32 codes with one AND and one shift); `scales`
//! (f32) and `zeros` (u8) are (rows, cols/group). GPTQ's output (codes, scale and zero per
//! group; int3 codes fit too) goes in through [`QuantMatrix::from_int4_codes`].
//!
//! GPTQ with act-order quantizes the columns in a permuted order and forms its groups in that
//! order, so a group is not a run of consecutive input features. Such an Int4 matrix keeps its
//! columns in processing order with `perm` (stored column k is input feature `perm[k]`), and the
//! product gathers each activation row into that order as it quantizes it:
//! x · Wᵀ = x[:, perm] · W[:, perm]ᵀ. The kernels are the same; only the activation pass reads
//! through the permutation (as exllama's and AutoGPTQ's act-order kernels do).
//!
//! The integer dot products and their run-time instruction-set choice are in [`dot`]
//! (`LMLAB_ISA=scalar`, `avx2` or `avx512,no-vnni` force a path; it covers [`weight_only`] too). All paths
//! give bit-identical outputs,
//! and the work split (fixed tiles of output rows × W rows) does not change any element's
//! arithmetic, so results do not depend on the thread count either.

pub mod dot;
pub mod ggml;
pub mod weight_only;

use super::SendPtr;
use anyhow::{bail, ensure, Result};
use dot::kernels;
pub use dot::Isa;
use ggml::{q8_block, Q4_0_BYTES, Q8_0_BYTES, QK};
use rayon::prelude::*;
use weight_only::Elem;

/// How a [`QuantMatrix`] stores its weights (table in the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantType {
    Q8_0,
    Q4_0,
    /// bf16 weights, f32 activations (weight-only).
    Bf16,
    /// int8 weights, f32 activations (weight-only).
    Int8,
    /// int8 weights, activations quantized to int8 per token at run time.
    W8A8,
    Int4 {
        group: usize,
    },
}

/// A quantized weight matrix W (rows, cols): `rows` outputs, `cols` inputs.
#[derive(Clone, Debug)]
pub struct QuantMatrix {
    pub ty: QuantType,
    pub rows: usize,
    pub cols: usize,
    /// The codes in the layout the kernels read. Q8_0/Q4_0: the GGML blocks, row after row
    /// (rows × cols/32 blocks of 34 or 18 bytes); W8A8: rows × cols i8; Int8: the same i8 in
    /// panels of 16 rows ([`weight_only`]; [`QuantMatrix::stored_data`] gives them row-major);
    /// Bf16: little-endian bf16 in the same panels; Int4: rows × cols/2 bytes of packed codes.
    pub data: Vec<u8>,
    /// Int8/W8A8: one per row; Int4: (rows, cols/group); empty for Q8_0/Q4_0 (scales are in
    /// blocks) and Bf16.
    pub scales: Vec<f32>,
    /// Int4: zero points (rows, cols/group), 0..=15; empty otherwise.
    pub zeros: Vec<u8>,
    /// Int4 from GPTQ with act-order: stored column k is input feature `perm[k]` (a
    /// permutation of 0..cols); None: columns in input order.
    pub perm: Option<Vec<u32>>,
}

impl QuantMatrix {
    /// Quantizes w (rows, cols), row-major. Errors on a length mismatch, a non-finite weight,
    /// or `cols` not a multiple of the type's block (32 for Q8_0/Q4_0; `group` for Int4, which
    /// must itself be a positive multiple of 32).
    pub fn quantize(w: &[f32], rows: usize, cols: usize, ty: QuantType) -> Result<Self> {
        ensure!(w.len() == rows * cols, "quantize: w has {} values, expected rows {rows} × cols {cols}", w.len());
        check_cols(ty, cols)?;
        if let Some(i) = w.iter().position(|v| !v.is_finite()) {
            bail!("quantize: weight {i} (row {}, col {}) is {}", i / cols.max(1), i % cols.max(1), w[i]);
        }
        let mut m = QuantMatrix { ty, rows, cols, data: Vec::new(), scales: Vec::new(), zeros: Vec::new(), perm: None };
        match ty {
            QuantType::Q8_0 | QuantType::Q4_0 => {
                let rb = m.row_bytes();
                m.data = vec![0u8; rows * rb];
                m.data.par_chunks_mut(rb.max(1)).zip(w.par_chunks(cols.max(1))).for_each(|(d, x)| {
                    if ty == QuantType::Q8_0 {
                        ggml::quantize_row_q8_0(x, d)
                    } else {
                        ggml::quantize_row_q4_0(x, d)
                    }
                });
            }
            QuantType::Bf16 => {
                // The same rounding as bf16 mixed precision (ties to even; PyTorch's).
                let bf16 = |v: f32| ((super::precision::round_bf16(v).to_bits() >> 16) as u16).to_le_bytes();
                let bytes: Vec<u8> = w.iter().flat_map(|v| bf16(*v)).collect();
                m.data = weight_only::pack(&bytes, rows, cols, Elem::Bf16);
            }
            QuantType::Int8 | QuantType::W8A8 => {
                m.data = vec![0u8; rows * cols];
                m.scales = vec![0.0; rows];
                for ((d, s), x) in m.data.chunks_mut(cols.max(1)).zip(&mut m.scales).zip(w.chunks(cols.max(1))) {
                    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    *s = amax / 127.0;
                    let id = if *s != 0.0 { 1.0 / *s } else { 0.0 };
                    for (d, v) in d.iter_mut().zip(x) {
                        *d = ((v * id).round().clamp(-127.0, 127.0) as i8) as u8;
                    }
                }
                if ty == QuantType::Int8 {
                    m.data = weight_only::pack(&m.data, rows, cols, Elem::I8);
                }
            }
            QuantType::Int4 { group } => {
                let ng = cols / group;
                let mut codes = vec![0u8; rows * cols];
                m.scales = vec![0.0; rows * ng];
                m.zeros = vec![0; rows * ng];
                let groups = codes.chunks_mut(group).zip(w.chunks(group));
                for (((c, x), s), z) in groups.zip(&mut m.scales).zip(&mut m.zeros) {
                    let lo = x.iter().fold(0.0f32, |m, v| m.min(*v));
                    let hi = x.iter().fold(0.0f32, |m, v| m.max(*v));
                    let (lo, hi) = if lo == 0.0 && hi == 0.0 { (-1.0, 1.0) } else { (lo, hi) };
                    *s = (hi - lo) / 15.0;
                    *z = (-lo / *s).round_ties_even().clamp(0.0, 15.0) as u8;
                    for (c, v) in c.iter_mut().zip(x) {
                        *c = ((v / *s).round_ties_even() + *z as f32).clamp(0.0, 15.0) as u8;
                    }
                }
                m.data = pack_int4(&codes);
            }
        }
        Ok(m)
    }

    /// An Int4 matrix from GPTQ-style parts: `codes` (rows, cols) in 0..=15 (int3 codes 0..=7
    /// fit), `scales` and `zeros` (rows, cols/group); value = scale · (code − zero).
    pub fn from_int4_codes(
        rows: usize,
        cols: usize,
        group: usize,
        codes: &[u8],
        scales: Vec<f32>,
        zeros: Vec<u8>,
    ) -> Result<Self> {
        let ty = QuantType::Int4 { group };
        check_cols(ty, cols)?;
        let ng = rows * (cols / group);
        ensure!(codes.len() == rows * cols, "from_int4_codes: {} codes, expected {rows} × {cols}", codes.len());
        ensure!(scales.len() == ng && zeros.len() == ng, "from_int4_codes: scales/zeros need {ng} values each");
        ensure!(codes.iter().chain(&zeros).all(|c| *c < 16), "from_int4_codes: codes and zeros must be < 16");
        Ok(QuantMatrix { ty, rows, cols, data: pack_int4(codes), scales, zeros, perm: None })
    }

    /// The same matrix with its stored columns in the order `perm` (stored column k is input
    /// feature `perm[k]`; see the module doc). Int4 only; `perm` must be a permutation of
    /// 0..cols. The codes, scales and zeros are taken as already in that order.
    pub fn with_perm(mut self, perm: Vec<u32>) -> Result<Self> {
        ensure!(matches!(self.ty, QuantType::Int4 { .. }), "{:?}: only Int4 matrices take a column order", self.ty);
        ensure!(perm.len() == self.cols, "column order has {} entries, expected {}", perm.len(), self.cols);
        let mut seen = vec![false; self.cols];
        for &c in &perm {
            let c = c as usize;
            ensure!(c < self.cols && !seen[c], "column order is not a permutation of 0..{}", self.cols);
            seen[c] = true;
        }
        self.perm = Some(perm);
        Ok(self)
    }

    /// A matrix from its stored parts (as a quantized checkpoint keeps them: `data` as
    /// [`QuantMatrix::stored_data`] gives it), checked against what `ty` and the shape imply:
    /// the lengths of `data`, `scales` and `zeros`, finite scales, Int4 zero points below 16.
    /// Q8_0/Q4_0 block scales are checked when dequantized.
    pub fn from_parts(
        ty: QuantType,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
        scales: Vec<f32>,
        zeros: Vec<u8>,
    ) -> Result<Self> {
        check_cols(ty, cols)?;
        let mut m = QuantMatrix { ty, rows, cols, data, scales, zeros, perm: None };
        let (n_scales, n_zeros) = match ty {
            QuantType::Q8_0 | QuantType::Q4_0 | QuantType::Bf16 => (0, 0),
            QuantType::Int8 | QuantType::W8A8 => (rows, 0),
            QuantType::Int4 { group } => (rows * (cols / group), rows * (cols / group)),
        };
        let n_data = rows.checked_mul(m.row_bytes());
        ensure!(
            n_data == Some(m.data.len()),
            "{ty:?} {rows}×{cols}: {} bytes of data, expected {n_data:?}",
            m.data.len()
        );
        ensure!(m.scales.len() == n_scales, "{ty:?} {rows}×{cols}: {} scales, expected {n_scales}", m.scales.len());
        ensure!(m.zeros.len() == n_zeros, "{ty:?} {rows}×{cols}: {} zero points, expected {n_zeros}", m.zeros.len());
        ensure!(m.scales.iter().all(|s| s.is_finite()), "{ty:?}: a scale is NaN or infinite");
        ensure!(m.zeros.iter().all(|z| *z < 16), "{ty:?}: a zero point is above 15");
        if let Some(elem) = m.panel_elem() {
            m.data = weight_only::pack(&m.data, rows, cols, elem);
        }
        Ok(m)
    }

    /// The codes as checkpoints store them: `data`, except that Int8's and Bf16's panels are
    /// returned row-major (rows × cols i8, as W8A8 keeps them, or little-endian bf16).
    pub fn stored_data(&self) -> std::borrow::Cow<'_, [u8]> {
        match self.panel_elem() {
            Some(elem) => std::borrow::Cow::Owned(weight_only::unpack(&self.data, self.rows, self.cols, elem)),
            None => std::borrow::Cow::Borrowed(&self.data),
        }
    }

    /// The element type of the weight-only types, which `data` keeps in panels.
    fn panel_elem(&self) -> Option<Elem> {
        match self.ty {
            QuantType::Int8 => Some(Elem::I8),
            QuantType::Bf16 => Some(Elem::Bf16),
            _ => None,
        }
    }

    /// Bytes of one row of the stored codes ([`QuantMatrix::stored_data`]; of `data` too,
    /// except for Int8's and Bf16's panels).
    pub fn row_bytes(&self) -> usize {
        match self.ty {
            QuantType::Q8_0 => self.cols / QK * Q8_0_BYTES,
            QuantType::Q4_0 => self.cols / QK * Q4_0_BYTES,
            QuantType::Int8 | QuantType::W8A8 => self.cols,
            QuantType::Bf16 => 2 * self.cols,
            QuantType::Int4 { .. } => self.cols / 2,
        }
    }

    /// out (rows, cols) = the values W stands for.
    pub fn dequantize(&self, out: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        assert_eq!(out.len(), rows * cols, "dequantize: out length");
        let rb = self.row_bytes();
        let codes = self.stored_data();
        for (r, o) in out.chunks_exact_mut(cols.max(1)).take(rows).enumerate() {
            let d = &codes[r * rb..(r + 1) * rb];
            match self.ty {
                QuantType::Q8_0 => ggml::dequantize_row_q8_0(d, o),
                QuantType::Q4_0 => ggml::dequantize_row_q4_0(d, o),
                QuantType::Bf16 => o
                    .iter_mut()
                    .zip(d.chunks_exact(2))
                    .for_each(|(o, b)| *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
                QuantType::Int8 | QuantType::W8A8 => {
                    o.iter_mut().zip(d).for_each(|(o, q)| *o = (*q as i8) as f32 * self.scales[r])
                }
                QuantType::Int4 { group } => {
                    let ng = cols / group;
                    for c in 0..cols {
                        let g = r * ng + c / group;
                        let v = self.scales[g] * (int4_code(d, c) as i32 - self.zeros[g] as i32) as f32;
                        o[self.perm.as_ref().map_or(c, |p| p[c] as usize)] = v;
                    }
                }
            }
        }
    }

    /// Size of the quantized weights as stored: codes, scales, zero points and the column
    /// order (Int8's and Bf16's panel padding in memory, at most 15 rows, not counted).
    pub fn bytes(&self) -> usize {
        let perm = self.perm.as_ref().map_or(0, |p| 4 * p.len());
        self.rows * self.row_bytes() + 4 * self.scales.len() + self.zeros.len() + perm
    }

    /// Columns per activation block: 32 (Q8_0/Q4_0), the row (W8A8) or the group (Int4); Int8
    /// and Bf16 quantize no activations.
    fn act_block(&self) -> usize {
        match self.ty {
            QuantType::Q8_0 | QuantType::Q4_0 => QK,
            QuantType::Int8 | QuantType::W8A8 | QuantType::Bf16 => self.cols.max(1),
            QuantType::Int4 { group } => group,
        }
    }
}

impl QuantType {
    /// Whether rows of `cols` columns split into this type's blocks or groups.
    pub fn fits(self, cols: usize) -> bool {
        check_cols(self, cols).is_ok()
    }
}

fn check_cols(ty: QuantType, cols: usize) -> Result<()> {
    match ty {
        QuantType::Q8_0 | QuantType::Q4_0 => {
            ensure!(cols.is_multiple_of(QK), "{ty:?}: cols {cols} is not a multiple of the block size {QK}")
        }
        QuantType::Int8 | QuantType::W8A8 | QuantType::Bf16 => {}
        QuantType::Int4 { group } => {
            ensure!(group > 0 && group.is_multiple_of(QK), "Int4: group {group} must be a positive multiple of {QK}");
            ensure!(cols.is_multiple_of(group), "Int4: cols {cols} is not a multiple of the group size {group}");
        }
    }
    Ok(())
}

/// [`q8_block`] of the values `x[idx[j]]`: an activation block gathered into a permuted
/// matrix's column order (the same arithmetic, so a gathered block quantizes exactly as the
/// gathered copy would).
fn q8_block_gathered(x: &[f32], idx: &[u32], q: &mut [i8]) -> f32 {
    let amax = idx.iter().fold(0.0f32, |m, &c| m.max(x[c as usize].abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &c) in q.iter_mut().zip(idx) {
        *q = (x[c as usize] * id).round() as i8;
    }
    d
}

/// Code of column `c` in a packed Int4 row.
#[inline]
fn int4_code(row: &[u8], c: usize) -> u8 {
    let (blk, j) = (c / QK, c % QK);
    let b = row[blk * QK / 2 + j % (QK / 2)];
    if j < QK / 2 {
        b & 0x0F
    } else {
        b >> 4
    }
}

/// Packs codes (0..=15; length a multiple of 32) in the Q4_0 nibble order, 32 per 16 bytes.
fn pack_int4(codes: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; codes.len() / 2];
    for (o, c) in out.chunks_exact_mut(QK / 2).zip(codes.chunks_exact(QK)) {
        for j in 0..QK / 2 {
            o[j] = c[j] | (c[j + QK / 2] << 4);
        }
    }
    out
}

/// Bytes of `scratch` that [`quant_matmul_forward`] needs for n activation rows (none for
/// Int8 and Bf16, whose activations stay f32).
pub fn quant_matmul_scratch_len(w: &QuantMatrix, n: usize) -> usize {
    if w.panel_elem().is_some() {
        return 0;
    }
    let nb = w.cols / w.act_block();
    3 + n * nb * 8 + n * w.cols
}

/// The scratch split into activation codes (n, cols), scales (n, nb) and Σ codes (n, nb).
fn split_scratch(scratch: &mut [u8], n: usize, cols: usize, nb: usize) -> (&mut [i8], &mut [f32], &mut [i32]) {
    let off = scratch.as_ptr().align_offset(4);
    assert!(off < 4, "scratch: cannot align");
    let (_, rest) = scratch.split_at_mut(off);
    let (fl, rest) = rest.split_at_mut(n * nb * 4);
    let (su, rest) = rest.split_at_mut(n * nb * 4);
    let codes = &mut rest[..n * cols];
    // SAFETY: each region is in bounds (split_at_mut checked), `fl` and `su` start 4-aligned
    // (`off`, and n·nb·4 bytes later), every bit pattern is a valid i8/f32/i32, and the
    // three regions are disjoint, as the borrows they replace were.
    unsafe {
        (
            std::slice::from_raw_parts_mut(codes.as_mut_ptr() as *mut i8, n * cols),
            std::slice::from_raw_parts_mut(fl.as_mut_ptr() as *mut f32, n * nb),
            std::slice::from_raw_parts_mut(su.as_mut_ptr() as *mut i32, n * nb),
        )
    }
}

/// Output rows (activation rows) per task when N > 1.
const N_TILE: usize = 16;
/// W rows per task.
const R_TILE: usize = 32;

/// out (N, rows) = x (N, cols) · Wᵀ (+ bias (rows)), W quantized. `scratch` (at least
/// [`quant_matmul_scratch_len`] bytes) receives the activations quantized per row (see the
/// module doc; unused by Int8). No allocation. Uses the instruction set of [`Isa::selected`].
pub fn quant_matmul_forward(
    out: &mut [f32],
    x: &[f32],
    w: &QuantMatrix,
    bias: Option<&[f32]>,
    n: usize,
    scratch: &mut [u8],
) {
    quant_matmul_forward_isa(out, x, w, bias, n, scratch, Isa::selected())
}

/// [`quant_matmul_forward`] on a given instruction set (panics if the CPU lacks it).
pub fn quant_matmul_forward_isa(
    out: &mut [f32],
    x: &[f32],
    w: &QuantMatrix,
    bias: Option<&[f32]>,
    n: usize,
    scratch: &mut [u8],
    isa: Isa,
) {
    let (rows, cols) = (w.rows, w.cols);
    assert!(out.len() >= n * rows && x.len() >= n * cols, "quant_matmul_forward: out/x too short");
    assert!(bias.is_none_or(|b| b.len() == rows), "quant_matmul_forward: bias length");
    assert!(scratch.len() >= quant_matmul_scratch_len(w, n), "quant_matmul_forward: scratch too short");
    if n == 0 || rows == 0 {
        return;
    }
    if let Some(elem) = w.panel_elem() {
        return weight_only::matmul(out, x, &w.data, elem, &w.scales, rows, cols, bias, n, isa);
    }
    let k = kernels(isa);
    let ab = w.act_block();
    let nb = cols / ab;
    let (xq, xd, xs) = split_scratch(scratch, n, cols, nb);
    let f16_scales = matches!(w.ty, QuantType::Q8_0 | QuantType::Q4_0);
    if cols > 0 {
        let rows_q = xq.par_chunks_mut(cols).zip(xd.par_chunks_mut(nb)).zip(xs.par_chunks_mut(nb));
        let perm = w.perm.as_deref();
        rows_q.zip(x[..n * cols].par_chunks(cols)).for_each(|(((q, d), s), x)| {
            for (b, xb) in x.chunks_exact(ab).enumerate() {
                let qb = &mut q[b * ab..(b + 1) * ab];
                let db = match perm {
                    None => q8_block(xb, qb),
                    Some(p) => q8_block_gathered(x, &p[b * ab..(b + 1) * ab], qb),
                };
                d[b] = if f16_scales { half::f16::from_f32(db).to_f32() } else { db };
                s[b] = qb.iter().map(|v| *v as i32).sum();
            }
        });
    }
    let (xq, xd, xs) = (&*xq, &*xd, &*xs);
    let rb = w.row_bytes();
    let ng = nb; // Int4: one activation block per weight group
    let n_tile = if n == 1 { 1 } else { N_TILE };
    let (nt, rt) = (n.div_ceil(n_tile), rows.div_ceil(R_TILE));
    let outp = SendPtr(out.as_mut_ptr());
    if let (QuantType::W8A8, Some(f), true) = (w.ty, k.int8_tile, n > 1) {
        // 4 W rows × 4 x rows per call; a tile past the task's last row repeats it, and the
        // extra outputs are dropped.
        (0..nt * rt).into_par_iter().for_each(|t| {
            let (n0, r0) = ((t / rt) * n_tile, (t % rt) * R_TILE);
            let (n1, r1) = ((n0 + n_tile).min(n), (r0 + R_TILE).min(rows));
            let mut acc = [0i32; 16];
            for rs in (r0..r1).step_by(4) {
                let wp: [*const i8; 4] = std::array::from_fn(|j| {
                    let r = (rs + j).min(r1 - 1);
                    w.data[r * rb..(r + 1) * rb].as_ptr() as *const i8
                });
                for is in (n0..n1).step_by(4) {
                    let xp: [*const i8; 4] = std::array::from_fn(|j| {
                        let i = (is + j).min(n1 - 1);
                        xq[i * cols..(i + 1) * cols].as_ptr()
                    });
                    // SAFETY: `kernels` checked the CPU features; each pointer covers `cols`
                    // values (rb = cols for Int8).
                    unsafe { f(&wp, &xp, cols, &mut acc) };
                    for (kk, v) in acc.iter().enumerate() {
                        let (r, i) = (rs + kk / 4, is + kk % 4);
                        if r < r1 && i < n1 {
                            let d = xd[i * nb..(i + 1) * nb].first().copied().unwrap_or(0.0);
                            let b = bias.map_or(0.0, |b| b[r]);
                            // SAFETY: i < n, r < rows: inside `out`; tiles are disjoint.
                            unsafe { *outp.get().add(i * rows + r) = *v as f32 * (w.scales[r] * d) + b };
                        }
                    }
                }
            }
        });
        return;
    }
    let tile = match w.ty {
        QuantType::Q8_0 => Some(dot::TILE_Q8_0),
        QuantType::Q4_0 => Some(dot::TILE_Q4_0),
        QuantType::Int4 { .. } => Some(dot::TILE_INT4),
        QuantType::Int8 | QuantType::W8A8 | QuantType::Bf16 => None,
    };
    if let (Some(tiles), Some(kind)) = (k.tiles, tile) {
        // Register tiles of 8 outputs: 8 W rows × 1 x row (n = 1) or 4 × 2. A tile past the
        // last W row / x row of its task repeats that row, and the extra outputs are dropped.
        let nx = if n == 1 { 1 } else { 2 };
        let (f, rw) = (tiles[kind][nx - 1], 8 / nx);
        let nsub = w.act_block() / QK;
        (0..nt * rt).into_par_iter().for_each(|t| {
            let (n0, r0) = ((t / rt) * n_tile, (t % rt) * R_TILE);
            let (n1, r1) = ((n0 + n_tile).min(n), (r0 + R_TILE).min(rows));
            let mut a = dot::TileArgs {
                w: [std::ptr::null(); 8],
                ws: [std::ptr::null(); 8],
                wz: [std::ptr::null(); 8],
                x: std::ptr::null(),
                xd: std::ptr::null(),
                xs: std::ptr::null(),
                xq_step: 0,
                xb_step: 0,
                nb,
                nsub,
            };
            let mut acc = [0f32; 8];
            for rs in (r0..r1).step_by(rw) {
                for j in 0..rw {
                    let r = (rs + j).min(r1 - 1);
                    a.w[j] = w.data[r * rb..(r + 1) * rb].as_ptr();
                    if kind == dot::TILE_INT4 {
                        a.ws[j] = w.scales[r * ng..(r + 1) * ng].as_ptr();
                        a.wz[j] = w.zeros[r * ng..(r + 1) * ng].as_ptr();
                    }
                }
                for is in (n0..n1).step_by(nx) {
                    let two = nx == 2 && is + 1 < n1;
                    a.x = xq[is * cols..(is + 1) * cols].as_ptr();
                    a.xd = xd[is * nb..(is + 1) * nb].as_ptr();
                    a.xs = xs[is * nb..(is + 1) * nb].as_ptr();
                    (a.xq_step, a.xb_step) = if two { (cols, nb) } else { (0, 0) };
                    // SAFETY: `kernels` checked the CPU features; every W row pointer covers
                    // `rb` bytes (and `ng` scales and zeros), every x row `cols` codes and `nb`
                    // scales and sums (the second row exists when its step is non-zero).
                    unsafe { f(&a, &mut acc) };
                    for (kk, v) in acc.iter().enumerate() {
                        let (r, i) = (rs + kk / nx, is + kk % nx);
                        if r < r1 && i < n1 {
                            let b = bias.map_or(0.0, |b| b[r]);
                            // SAFETY: i < n, r < rows: inside `out`; tiles are disjoint.
                            unsafe { *outp.get().add(i * rows + r) = v + b };
                        }
                    }
                }
            }
        });
        return;
    }
    (0..nt * rt).into_par_iter().for_each(|t| {
        let (n0, r0) = ((t / rt) * n_tile, (t % rt) * R_TILE);
        for r in r0..(r0 + R_TILE).min(rows) {
            let wr = &w.data[r * rb..(r + 1) * rb];
            let b = bias.map_or(0.0, |b| b[r]);
            for i in n0..(n0 + n_tile).min(n) {
                let (q, d, s) = (&xq[i * cols..(i + 1) * cols], &xd[i * nb..(i + 1) * nb], &xs[i * nb..(i + 1) * nb]);
                // SAFETY: `kernels` checked the CPU features; the row kernels check lengths.
                let v = unsafe {
                    match w.ty {
                        QuantType::Q8_0 => (k.q8_0)(wr, q, d),
                        QuantType::Q4_0 => (k.q4_0)(wr, q, d, s),
                        QuantType::W8A8 => {
                            let wi = std::slice::from_raw_parts(wr.as_ptr() as *const i8, rb);
                            (k.int8)(wi, q) as f32 * (w.scales[r] * d.first().copied().unwrap_or(0.0))
                        }
                        QuantType::Int4 { group } => {
                            let (ws, wz) = (&w.scales[r * ng..(r + 1) * ng], &w.zeros[r * ng..(r + 1) * ng]);
                            (k.int4)(wr, ws, wz, q, d, s, group)
                        }
                        QuantType::Int8 | QuantType::Bf16 => unreachable!("runs in weight_only::matmul"),
                    }
                };
                // SAFETY: i < n, r < rows, so the index is inside `out` (checked above); tiles
                // are disjoint, so no two tasks write one element.
                unsafe { *outp.get().add(i * rows + r) = v + b };
            }
        }
    });
}
